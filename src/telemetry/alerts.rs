//! Alerts: a JSON event with a Slack-compatible `text` POSTed to a webhook
//! when a limit trips a block, when a region's sends jump above a multiple
//! of its recent rate, when spend crosses a threshold, or when
//! reconciliation finds sends that went around the guard.
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
use crate::base::clock::{ms, Millis};
use crate::config::{self, Money};
use crate::net::upstream::Upstream;

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Slack (and compatible) webhooks display this.
    pub text: String,
    /// `block`, `spike`, `spend`, `reload`, `store` or `reconcile`.
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
            self.fire("block", format!("block:{key}"), block_text(key, e), now);
        }
    }

    /// A reload refused because it would have weakened the running policy.
    pub fn reload_refused(&self, why: &str, now: Millis) {
        self.fire(
            "reload",
            format!("reload:{why}"),
            format!(":warning: smsguard refused a policy reload: {why}"),
            now,
        );
    }

    /// Redis, holding the state shared by the replicas, stopped answering
    /// (sends are judged by `store.on_error` meanwhile) or answers again.
    pub fn store_health(
        &self,
        h: &crate::store::redis::Health,
        on_error: config::StoreOnError,
        now: Millis,
    ) {
        match h {
            crate::store::redis::Health::Degraded { last_error, .. } => self.fire(
                "store",
                "store:degraded".into(),
                format!(
                    ":rotating_light: smsguard lost its shared state (redis: {last_error}); sends are judged with store.on_error = {} until it answers again",
                    on_error.as_str()
                ),
                now,
            ),
            crate::store::redis::Health::Up => self.fire(
                "store",
                "store:up".into(),
                ":white_check_mark: smsguard reaches its shared state (redis) again".into(),
                now,
            ),
        }
    }

    /// Sends Twilio lists that no replica forwarded (`cause` names the
    /// look, so each look's finding alerts once).
    pub fn reconcile(&self, cause: String, text: String, now: Millis) {
        self.fire("reconcile", cause, text, now);
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

/// What a person reads in a block alert. A limit's names its rule and
/// figures; an adaptive signal's says in words what tripped
/// (`adaptive:surge:prefix:7` → "a surge of new numbers"), then its figures
/// and the rule to look up. A block set in monitor mode says that sends
/// still go through.
fn block_text(key: &str, e: &DecisionEvent) -> String {
    let rule = e.rule.as_deref().unwrap_or("");
    let detail = e.detail.as_deref().unwrap_or("");
    let verb = if e.action == "monitor" {
        "would block (monitor mode: sends still go through)"
    } else {
        "blocked"
    };
    let Some(signal) = rule.strip_prefix("adaptive:") else {
        return format!(":rotating_light: smsguard {verb} `{key}` ({rule}): {detail}");
    };
    let (signal, kind) = signal.split_once(':').unwrap_or((signal, ""));
    let what = match (signal, kind) {
        ("unconfirmed", "region") => "unconfirmed sends to the region".to_string(),
        ("unconfirmed", k) if k.starts_with("prefix") => "unconfirmed sends to the prefix".into(),
        ("unconfirmed", "client_ip") => "unconfirmed sends from one client address".into(),
        ("unconfirmed", "user") => "unconfirmed sends from one user".into(),
        ("surge", "region") => "a surge of new numbers in the region".into(),
        ("surge", _) => "a surge of new numbers in one block".into(),
        ("distinct", "client_ip") => "too many distinct numbers from one client address".into(),
        ("distinct", "user") => "too many distinct numbers from one user".into(),
        ("distinct", "account") => "too many distinct numbers from one account".into(),
        ("regions", "client_ip") => "too many regions from one client address".into(),
        ("regions", "user") => "too many regions from one user".into(),
        (s, k) => format!("{s} ({k})"),
    };
    // The stage's detail starts with the key it fired on, already named.
    let figures = detail
        .strip_prefix(key)
        .and_then(|d| d.strip_prefix(": "))
        .unwrap_or(detail);
    let figures = if figures.is_empty() {
        String::new()
    } else {
        format!(" ({figures})")
    };
    format!(":rotating_light: smsguard {verb} `{key}` — adaptive: {what}{figures} · rule `{rule}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tripped(action: &'static str, rule: &str, key: &str, detail: &str) -> DecisionEvent {
        DecisionEvent {
            action,
            stage: Some("adaptive"),
            rule: Some(rule.into()),
            detail: Some(detail.into()),
            blocked: vec![key.into()],
            ..Default::default()
        }
    }

    #[test]
    fn adaptive_block_alerts_say_in_words_what_tripped() {
        let e = tripped(
            "shadow",
            "adaptive:unconfirmed:prefix:7",
            "prefix:7=+4479111",
            "prefix:7=+4479111: 12 of 14 sends unconfirmed in 1h > max(floor 4, 1 x baseline 0); blocked for 12h (offence 1)",
        );
        assert_eq!(
            block_text("prefix:7=+4479111", &e),
            ":rotating_light: smsguard blocked `prefix:7=+4479111` — adaptive: unconfirmed sends to the prefix (12 of 14 sends unconfirmed in 1h > max(floor 4, 1 x baseline 0); blocked for 12h (offence 1)) · rule `adaptive:unconfirmed:prefix:7`"
        );
        let e = tripped(
            "shadow",
            "adaptive:distinct:client_ip",
            "client_ip=203.0.113.9",
            "client_ip=203.0.113.9: 9 distinct numbers in 1h > floor 8 + 2 x 0 confirmed",
        );
        let t = block_text("client_ip=203.0.113.9", &e);
        assert!(
            t.contains("adaptive: too many distinct numbers from one client address (9 distinct"),
            "{t}"
        );
        let e = tripped(
            "monitor",
            "adaptive:surge:prefix:7",
            "prefix:7=+1646555",
            "",
        );
        let t = block_text("prefix:7=+1646555", &e);
        assert_eq!(
            t,
            ":rotating_light: smsguard would block (monitor mode: sends still go through) `prefix:7=+1646555` — adaptive: a surge of new numbers in one block · rule `adaptive:surge:prefix:7`"
        );
    }

    #[test]
    fn limit_block_alerts_keep_their_rule_and_detail() {
        let mut e = tripped("shadow", "prefix", "prefix:8=+44740012", "4 > 3/10m");
        e.stage = Some("limits");
        assert_eq!(
            block_text("prefix:8=+44740012", &e),
            ":rotating_light: smsguard blocked `prefix:8=+44740012` (prefix): 4 > 3/10m"
        );
    }
}
