//! Decision events: one structured `tracing` event per judged send, on the
//! target `smsguard::decision`, printed as human text or JSON lines.
//!
//! An event carries where the send came from and went, and what was decided
//! and why. It never carries the auth token, the message body or any other
//! form field: nothing here is given them.

pub mod activity;
pub mod alerts;
pub mod audit;
pub mod metrics;

use std::net::IpAddr;

use crate::clock::Millis;
use crate::phone::{Classification, Destination};
use crate::policy::Decision;

/// Everything that watches decisions: metrics, the activity shown by the
/// dashboard, the audit file and alerts.
pub struct Watch {
    pub metrics: metrics::Metrics,
    pub activity: activity::Activity,
    pub audit: Option<audit::Audit>,
    pub alerts: Option<alerts::Alerts>,
    pub mask_numbers: bool,
}

impl Watch {
    pub fn record(&self, e: &DecisionEvent, now: Millis) {
        self.metrics.decision(e);
        self.activity.record(e, now);
        if let Some(a) = &self.audit {
            a.record(e, now);
        }
        if let Some(a) = &self.alerts {
            a.decision(e, now);
        }
    }
}

impl Watch {
    /// A confirmation seen `via` the wire (`verify`, `feedback`) or the
    /// admin API (`api`) for a number in `region` under `prefix` (the
    /// decision events' prefix); `matched` when a forwarded send awaited it.
    pub fn confirmed(
        &self,
        via: &'static str,
        region: Option<&str>,
        prefix: &str,
        matched: bool,
        now: Millis,
    ) {
        self.metrics.confirmation(via, matched);
        self.activity.confirmed(region, prefix, matched, now);
    }
}

/// The fields of one decision, filled in as the request goes through.
#[derive(Debug, Clone, Default)]
pub struct DecisionEvent {
    pub endpoint: &'static str,
    /// `messaging`, `voice` or `verify`.
    pub product: &'static str,
    pub account: Option<String>,
    pub to: Option<String>,
    pub region: Option<String>,
    pub prefix: Option<String>,
    pub client_ip: String,
    pub user: Option<String>,
    pub stage: Option<&'static str>,
    pub rule: Option<String>,
    pub action: &'static str,
    pub detail: Option<String>,
    pub would_block: Vec<String>,
    /// Keys this decision blocked (a limit tripped with `block`).
    pub blocked: Vec<String>,
}

impl DecisionEvent {
    pub fn new(endpoint: &'static str, client_ip: &IpAddr, user: Option<&str>) -> Self {
        DecisionEvent {
            endpoint,
            client_ip: client_ip.to_string(),
            user: user.map(str::to_string),
            action: "allow",
            ..Default::default()
        }
    }

    pub fn number(&mut self, to: &Destination, class: &Classification, prefix_digits: u8) {
        self.to = Some(to.e164.clone());
        self.region = Some(class.region.map_or("none".into(), |r| r.to_string()));
        self.prefix = Some(to.prefix(prefix_digits as usize).to_string());
    }

    /// A send that could not be read with certainty.
    pub fn malformed(&mut self, why: &str) {
        self.stage = Some("parse");
        self.rule = Some("malformed".into());
        self.action = "reject";
        self.detail = Some(why.to_string());
    }

    pub fn decided(&mut self, d: &Decision) {
        self.action = d.action.as_str();
        if let Some(v) = d.deciding() {
            self.stage = Some(v.stage.as_str());
            self.rule = Some(v.rule.clone());
            self.detail = v.detail.clone();
        }
        self.would_block = d.would_block.iter().map(|v| v.rule.clone()).collect();
        self.blocked = d
            .verdict
            .iter()
            .chain(&d.would_block)
            .filter_map(|v| v.blocked.clone())
            .collect();
    }

    /// Hides the last four digits of the number wherever it appears.
    pub fn mask(&mut self) {
        if let Some(to) = self.to.take() {
            let masked = audit::mask_number(&to);
            if let Some(d) = self.detail.as_mut() {
                *d = d.replace(&to, &masked);
            }
            self.to = Some(masked);
        }
    }
}

pub fn record(e: &DecisionEvent) {
    if !tracing::enabled!(target: "smsguard::decision", tracing::Level::INFO) {
        return;
    }
    let would_block = e.would_block.join(",");
    tracing::info!(
        target: "smsguard::decision",
        endpoint = e.endpoint,
        product = e.product,
        account = e.account.as_deref().unwrap_or(""),
        to = e.to.as_deref().unwrap_or(""),
        region = e.region.as_deref().unwrap_or(""),
        prefix = e.prefix.as_deref().unwrap_or(""),
        client_ip = %e.client_ip,
        user = e.user.as_deref().unwrap_or(""),
        stage = e.stage.unwrap_or(""),
        rule = e.rule.as_deref().unwrap_or(""),
        action = e.action,
        detail = e.detail.as_deref().unwrap_or(""),
        would_block = %would_block,
        "decision"
    );
}

/// Log lines dropped because the writer fell behind (see [`init`]).
static DROPPED: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// Log lines (decisions and the rest) dropped so far because stderr could
/// not keep up.
pub fn log_lines_dropped() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Keeps the log writer running; dropping it writes out what is queued.
pub struct LogGuard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Lines queued for the writer thread at most; past this a line is
/// dropped (counted) rather than making a send wait for stderr.
const LOG_QUEUE: usize = 65_536;

/// Installs the global subscriber: human text or JSON lines on stderr,
/// written by a thread of its own. Formatting a line stays on the request
/// path; writing it (a system call per line, and a pipe or terminal that
/// may be slow) does not. Keep the guard until the process ends.
pub fn init(format: crate::config::LogFormat, level: &str) -> LogGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SMSGUARD_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE)
        .thread_name("smsguard-log")
        .finish(std::io::stderr());
    let counter = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let installed = match format {
        crate::config::LogFormat::Json => builder.json().flatten_event(true).try_init(),
        crate::config::LogFormat::Human => builder.try_init(),
    };
    if installed.is_err() {
        return LogGuard { _writer: None };
    }
    let _ = DROPPED.set(counter);
    LogGuard {
        _writer: Some(guard),
    }
}
