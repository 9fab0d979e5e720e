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
pub mod sink;

use std::net::IpAddr;

use crate::base::clock::Millis;
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
    /// The number was vouched for (it proved receipt recently).
    pub vouched: bool,
    /// A broadcast (one message to many numbers, sent by the app itself):
    /// the adaptive stage neither counted nor judged it.
    pub broadcast: bool,
    /// What the send costs at the policy's prices, in millionths (not
    /// logged: the dashboard sums it).
    pub price: Option<u64>,
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

    /// A destination that is not a number, as the app sent it: printable
    /// ASCII kept, anything else escaped (`\u{200b}`), at most 40
    /// characters, so the operator sees what was sent and the log stays
    /// one clean line.
    pub fn unreadable_to(&mut self, raw: &str) {
        const MAX: usize = 40;
        let mut shown = String::with_capacity(raw.len().min(MAX) + 3);
        for (i, c) in raw.chars().enumerate() {
            if i == MAX {
                shown.push('…');
                break;
            }
            if c.is_ascii_graphic() || c == ' ' {
                shown.push(c);
            } else {
                shown.extend(c.escape_unicode());
            }
        }
        self.to = Some(shown);
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
        self.vouched = d.vouched;
        self.broadcast = d.broadcast;
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
            // A limit on `to` blocks `to=NUMBER`: the key is masked too.
            for k in &mut self.blocked {
                if k.contains(&to) {
                    *k = k.replace(&to, &masked);
                }
            }
            self.to = Some(masked);
        }
    }
}

pub fn record(e: &DecisionEvent) {
    if !tracing::enabled!(target: "smsguard::decision", tracing::Level::INFO) {
        return;
    }
    match (LINES.get(), SINK.get()) {
        (Some(lines), Some(sink)) => lines.write(e, sink),
        _ => emit(e),
    }
}

/// The decision event through tracing (a subscriber installed by a test or
/// an embedding program, or a terminal).
fn emit(e: &DecisionEvent) {
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

/// The log's queue, once [`init`] installed it.
static SINK: std::sync::OnceLock<&'static sink::Sink> = std::sync::OnceLock::new();

/// Log lines (decisions and the rest) dropped so far because stderr could
/// not keep up.
pub fn log_lines_dropped() -> u64 {
    SINK.get().map_or(0, |s| s.dropped())
}

/// Keeps the log writer running; dropping it writes out what is queued.
pub struct LogGuard {
    _writer: Option<sink::Writer>,
}

/// Installs the global subscriber: human text or JSON lines on stderr,
/// queued in memory and written by a thread of its own every
/// [`sink::FLUSH_EVERY`] (see [`sink`]): a send never waits for stderr,
/// makes no system call for its line and wakes no thread. Decision lines,
/// one per send, are formatted by [`record`] itself (the same text as
/// tracing's formatter, at a fraction of the cost) unless stderr is a
/// terminal, which gets tracing's coloured lines. Keep the guard until the
/// process ends.
pub fn init(format: crate::config::LogFormat, level: &str) -> LogGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SMSGUARD_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let queue: &'static sink::Sink = Box::leak(Box::new(sink::Sink::new(sink::MAX_QUEUED)));
    // The writer first: nothing is queued that no thread will write.
    let mut writer = match sink::Sink::start(queue, Box::new(std::io::stderr())) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("cannot start the log writer, logging nothing: {e}");
            return LogGuard { _writer: None };
        }
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(queue);
    let json = matches!(format, crate::config::LogFormat::Json);
    let installed = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if installed.is_err() {
        writer.stop();
        return LogGuard { _writer: None };
    }
    let _ = SINK.set(queue);
    if !ansi {
        let _ = LINES.set(Lines { json });
    }
    LogGuard {
        _writer: Some(writer),
    }
}

/// Decision lines written by [`record`] itself once [`init`] installed the
/// log: the line tracing's formatter would print for the same event (human
/// text or flattened JSON), built into one buffer without visiting fields
/// through `dyn` calls, and queued for the writer thread.
static LINES: std::sync::OnceLock<Lines> = std::sync::OnceLock::new();

struct Lines {
    json: bool,
}

impl Lines {
    fn write(&self, e: &DecisionEvent, sink: &sink::Sink) {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with(|b| {
            let mut b = b.borrow_mut();
            b.clear();
            let now = std::time::SystemTime::now();
            if self.json {
                decision_json(&mut b, now, e);
            } else {
                decision_text(&mut b, now, e);
            }
            // A full queue drops the line and counts it.
            sink.push(&b);
        });
    }
}

/// `2026-11-29T08:21:32.880610Z`, as tracing's default timer prints it.
fn timestamp(b: &mut Vec<u8>, t: std::time::SystemTime) {
    use std::io::Write;
    let _ = write!(b, "{}", humantime::format_rfc3339_micros(t));
}

/// The decision's fields in order: name, value, and whether tracing
/// records the value with `Display` (unquoted in text) rather than as a str.
fn decision_fields(e: &DecisionEvent, f: &mut dyn FnMut(&str, &str, bool)) {
    f("endpoint", e.endpoint, false);
    f("product", e.product, false);
    f("account", e.account.as_deref().unwrap_or(""), false);
    f("to", e.to.as_deref().unwrap_or(""), false);
    f("region", e.region.as_deref().unwrap_or(""), false);
    f("prefix", e.prefix.as_deref().unwrap_or(""), false);
    f("client_ip", &e.client_ip, true);
    f("user", e.user.as_deref().unwrap_or(""), false);
    f("stage", e.stage.unwrap_or(""), false);
    f("rule", e.rule.as_deref().unwrap_or(""), false);
    f("action", e.action, false);
    f("detail", e.detail.as_deref().unwrap_or(""), false);
    let would_block = e.would_block.join(",");
    f("would_block", &would_block, true);
}

fn decision_text(b: &mut Vec<u8>, t: std::time::SystemTime, e: &DecisionEvent) {
    use std::fmt::Write as _;
    timestamp(b, t);
    b.extend_from_slice(b"  INFO smsguard::decision: decision");
    let mut quoted = String::new();
    decision_fields(e, &mut |name, value, display| {
        b.push(b' ');
        b.extend_from_slice(name.as_bytes());
        b.push(b'=');
        if display {
            b.extend_from_slice(value.as_bytes());
        } else if value
            .bytes()
            .all(|c| (b' '..=b'~').contains(&c) && c != b'"' && c != b'\\')
        {
            b.push(b'"');
            b.extend_from_slice(value.as_bytes());
            b.push(b'"');
        } else {
            // What `{:?}` prints: escapes for quotes, control and
            // non-printable characters.
            quoted.clear();
            let _ = write!(quoted, "{value:?}");
            b.extend_from_slice(quoted.as_bytes());
        }
    });
    b.push(b'\n');
}

fn decision_json(b: &mut Vec<u8>, t: std::time::SystemTime, e: &DecisionEvent) {
    b.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(b, t);
    b.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"decision\"");
    decision_fields(e, &mut |name, value, _| {
        b.extend_from_slice(b",\"");
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(b"\":");
        let _ = serde_json::to_writer(&mut *b, value);
    });
    b.extend_from_slice(b",\"target\":\"smsguard::decision\"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn awkward() -> DecisionEvent {
        let mut e = DecisionEvent::new(
            "messages.create",
            &"2001:db8::1".parse().unwrap(),
            Some("user \"quoted\" \\ back\tslash\u{7f} é ü\u{200b}"),
        );
        e.product = "messaging";
        e.account = Some("AC0123".into());
        e.to = Some("+998993941234".into());
        e.region = None;
        e.prefix = Some("+9989939".into());
        e.stage = Some("limits");
        e.rule = Some("limit:prefix".into());
        e.action = "shadow";
        e.detail = Some("line\nbreak \u{1b}[31m".into());
        e.would_block = vec!["geo:UZ".into(), "limit:ip".into()];
        e
    }

    #[test]
    fn an_unreadable_destination_is_shown_as_sent_escaped_and_short() {
        let mut e = DecisionEvent::default();
        e.unreadable_to("07700 900123");
        assert_eq!(e.to.as_deref(), Some("07700 900123"));
        e.unreadable_to("+4477\u{200b}00\n9");
        assert_eq!(e.to.as_deref(), Some("+4477\\u{200b}00\\u{a}9"));
        e.unreadable_to(&"9".repeat(100));
        assert_eq!(
            e.to.as_deref(),
            Some(format!("{}…", "9".repeat(40)).as_str())
        );
    }

    #[test]
    fn masking_hides_the_number_in_the_detail_and_the_blocked_keys() {
        let mut e = awkward();
        e.detail = Some("to=+998993941234: 6 attempts, rate 5/1h".into());
        e.blocked = vec!["to=+998993941234".into(), "prefix:8=+99899394".into()];
        e.mask();
        assert_eq!(e.to.as_deref(), Some("+99899394****"));
        assert_eq!(
            e.detail.as_deref(),
            Some("to=+99899394****: 6 attempts, rate 5/1h")
        );
        assert_eq!(e.blocked, ["to=+99899394****", "prefix:8=+99899394"]);
    }

    /// What tracing's own formatter prints for `e`.
    fn by_tracing(e: &DecisionEvent, json: bool) -> String {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let w = buf.clone();
        let b = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Capture(w.clone()));
        if json {
            let sub = b.json().flatten_event(true).finish();
            tracing::subscriber::with_default(sub, || emit(e));
        } else {
            let sub = b.finish();
            tracing::subscriber::with_default(sub, || emit(e));
        }
        let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        out
    }

    #[test]
    fn decision_lines_match_tracing_s_formatter_byte_for_byte() {
        let now =
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(1_795_305_600_123_456_000);
        for e in [awkward(), DecisionEvent::default()] {
            let mut text = Vec::new();
            decision_text(&mut text, now, &e);
            let text = String::from_utf8(text).unwrap();
            assert!(
                text.starts_with("2026-11-22T00:00:00.123456Z  INFO"),
                "{text}"
            );
            let theirs = by_tracing(&e, false);
            assert_eq!(text[27..], theirs[27..], "\nours:   {text}theirs: {theirs}");

            let mut json = Vec::new();
            decision_json(&mut json, now, &e);
            let json = String::from_utf8(json).unwrap();
            let ours: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(ours["timestamp"], "2026-11-22T00:00:00.123456Z");
            // Byte for byte, keys in the same order, but the timestamp.
            let theirs = by_tracing(&e, true);
            let strip = |l: &str| -> String {
                let at = l.find("\"level\"").unwrap();
                l[at..].to_string()
            };
            assert_eq!(
                strip(&json),
                strip(&theirs),
                "\nours:   {json}theirs: {theirs}"
            );
            assert!(theirs.starts_with("{\"timestamp\":\""), "{theirs}");
        }
    }
}
