//! Alerts: a JSON event with a Slack-compatible `text` POSTed to a webhook
//! when a limit trips a block, when a region's sends jump above a multiple
//! of its recent rate, or when spend crosses a threshold.
//!
//! Each cause alerts at most once per `interval`; delivery is retried a few
//! times off the request path. An alert names rules, regions, prefixes and
//! amounts, never a full number (masked), a body or a credential.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

use super::activity::Activity;
use super::DecisionEvent;
use crate::clock::{ms, Millis};
use crate::config::{self, Money};
use crate::upstream::Upstream;

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Slack (and compatible) webhooks display this.
    pub text: String,
    /// `block`, `spike` or `spend`.
    pub kind: &'static str,
    /// What the once-per-interval rule counts: `block:prefix:8=+99899394`.
    pub cause: String,
    pub time: String,
}

pub struct Alerts {
    interval: Millis,
    spike_factor: f64,
    spike_min: u32,
    spike_window: usize,
    spend_threshold: Option<Money>,
    last: Mutex<HashMap<String, Millis>>,
    tx: mpsc::UnboundedSender<Alert>,
}

impl Alerts {
    /// Starts the delivery task; must be called inside a Tokio runtime.
    pub fn start(cfg: &config::Alerts, upstream: Upstream) -> Alerts {
        let (tx, mut rx) = mpsc::unbounded_channel::<Alert>();
        let url = cfg.webhook.clone();
        let retries = cfg.retries;
        tokio::spawn(async move {
            while let Some(alert) = rx.recv().await {
                let Ok(body) = serde_json::to_vec(&alert) else {
                    continue;
                };
                let body = Bytes::from(body);
                let mut delay = Duration::from_millis(250);
                for attempt in 0..=retries {
                    match upstream.post_json(&url, body.clone()).await {
                        Ok(s) if s.is_success() => break,
                        r => {
                            let why = match r {
                                Ok(s) => format!("status {s}"),
                                Err(e) => e,
                            };
                            tracing::warn!(cause = %alert.cause, attempt, error = %why, "alert delivery failed");
                            if attempt < retries {
                                tokio::time::sleep(delay).await;
                                delay *= 2;
                            }
                        }
                    }
                }
            }
        });
        Alerts {
            interval: ms(cfg.interval),
            spike_factor: cfg.spike_factor,
            spike_min: cfg.spike_min,
            spike_window: cfg.spike_window,
            spend_threshold: cfg.spend_threshold,
            last: Mutex::default(),
            tx,
        }
    }

    /// Queues an alert unless its cause alerted within the interval.
    fn fire(&self, kind: &'static str, cause: String, text: String, now: Millis) {
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if last
                .get(&cause)
                .is_some_and(|t| now.saturating_sub(*t) < self.interval)
            {
                return;
            }
            last.insert(cause.clone(), now);
            if last.len() > 10_000 {
                let interval = self.interval;
                last.retain(|_, t| now.saturating_sub(*t) < interval);
            }
        }
        let time =
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(now))
                .to_string();
        let _ = self.tx.send(Alert {
            text,
            kind,
            cause,
            time,
        });
    }

    /// A decision that set a block raises a block alert.
    pub fn decision(&self, e: &DecisionEvent, now: Millis) {
        for key in &e.blocked {
            self.fire(
                "block",
                format!("block:{key}"),
                format!(
                    ":rotating_light: smsguard blocked `{key}` ({}): {}",
                    e.rule.as_deref().unwrap_or(""),
                    e.detail.as_deref().unwrap_or("")
                ),
                now,
            );
        }
    }

    /// Periodic checks: region spikes and spend.
    pub fn check(&self, activity: &Activity, spent_today: Option<Money>, now: Millis) {
        for (region, current, average) in activity.region_rates(now, self.spike_window) {
            if current >= self.spike_min && f64::from(current) > average * self.spike_factor {
                self.fire(
                    "spike",
                    format!("spike:{region}"),
                    format!(
                        ":chart_with_upwards_trend: smsguard: sends to {region} jumped to {current} this minute (average {average:.1} per minute over the last {} minutes)",
                        self.spike_window
                    ),
                    now,
                );
            }
        }
        if let (Some(limit), Some(spent)) = (self.spend_threshold, spent_today) {
            if spent >= limit {
                self.fire(
                    "spend",
                    "spend:day".into(),
                    format!(":money_with_wings: smsguard: spend today reached {spent} (threshold {limit})"),
                    now,
                );
            }
        }
    }
}
