//! What a replay found, for a person: per label what was sent, forwarded
//! and stopped (and by which rule, in words), what it cost with and without
//! the guard, the confirmed sends the guard would have stopped, the records
//! it could not read; and `--out`, one decision per input record.
//!
//! Figures only: never a message body or a credential. Numbers in the
//! printed report are masked.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write;

use super::engine::Outcome;
use super::input::Loaded;

/// How many bad records and stopped confirmed sends are listed by name.
const LISTED: usize = 20;

/// Label of records that carry none.
pub const NO_LABEL: &str = "(no label)";

/// Per-label figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub sends: u64,
    pub forwarded: u64,
    pub stopped: u64,
    /// Readable stage and rule (see [`phrase`]) → stopped sends.
    pub stopped_by: BTreeMap<String, u64>,
    /// Forwarded in monitor mode, by the rule that would have stopped them.
    pub would_stop: BTreeMap<String, u64>,
    /// Millionths of the currency if every send had gone out, and of those
    /// that did.
    pub cost_without: u64,
    pub cost_with: u64,
    /// Sends the recipient confirmed, and of those the guard stopped.
    pub confirmed: u64,
    pub confirmed_stopped: u64,
}

/// A confirmed send the guard would have stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct StoppedConfirmed {
    pub file: String,
    pub line: usize,
    pub label: Option<String>,
    /// Always masked.
    pub to: String,
    pub stage: &'static str,
    pub rule: String,
}

/// Failures of one kind: a count and the first few messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Failures {
    pub count: u64,
    pub first: Vec<String>,
}

impl Failures {
    pub fn add(&mut self, why: String) {
        self.count += 1;
        if self.first.len() < 3 {
            self.first.push(why);
        }
    }
}

/// What reached the fake Twilio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upstream {
    /// Messages, calls and verifications.
    pub sends: u64,
    pub balance_checks: u64,
    /// Messaging Feedback and Verify checks.
    pub confirmations: u64,
    pub other: u64,
}

impl Upstream {
    /// From the fake's tally: (method, last path segment, count).
    pub fn count(tally: &[(http::Method, String, u64)]) -> Upstream {
        let mut u = Upstream::default();
        for (method, last, n) in tally {
            let post = *method == http::Method::POST;
            match last.as_str() {
                "Balance.json" => u.balance_checks += n,
                "Feedback.json" | "VerificationCheck" if post => u.confirmations += n,
                "Messages.json" | "Messages" | "Messages.xml" | "Calls.json" | "Calls"
                | "Calls.xml" | "Verifications"
                    if post =>
                {
                    u.sends += n
                }
                _ => u.other += n,
            }
        }
        u
    }
}

/// One judged send, as the engine tells it.
pub(crate) struct Send<'a> {
    pub label: Option<&'a str>,
    pub forwarded: bool,
    pub monitor: bool,
    pub stage: Option<&'static str>,
    pub rule: Option<&'a str>,
    pub cost: u64,
    pub cost_from_record: bool,
    pub confirmed: bool,
}

#[derive(Debug, Clone)]
pub struct Report {
    /// Labels in order of first appearance (printed legitimate first,
    /// then attack, then the rest).
    pub labels: Vec<(String, Tally)>,
    index: HashMap<String, usize>,
    /// Phrases already built, by (stage, rule).
    phrases: HashMap<(&'static str, String), String>,
    pub files: usize,
    /// Records not judged (not `outbound-api`), by direction.
    pub skipped: BTreeMap<String, u64>,
    pub bad_count: u64,
    /// The first bad records: file, line, why.
    pub bad: Vec<(String, usize, String)>,
    pub confirmed_stopped_count: u64,
    pub confirmed_stopped: Vec<StoppedConfirmed>,
    /// Confirmation calls made, and those that failed or got no 2xx.
    pub confirmations: u64,
    pub confirmation_failures: Failures,
    /// Sends whose request failed, or that were forwarded and got no 2xx.
    pub send_failures: Failures,
    pub priced_by_record: u64,
    pub priced_by_policy: u64,
    /// Sends without `client_ip`: the guard sees them all from 127.0.0.1.
    pub without_client_ip: u64,
    pub upstream: Upstream,
    pub currency: String,
    /// What the replay changed in the policy, and why.
    pub notes: Vec<String>,
    /// Real seconds the replay took (sends and confirmations).
    pub seconds: f64,
    /// Real seconds reading (or generating) the records took, when known.
    pub read_seconds: Option<f64>,
}

impl Report {
    pub fn new(currency: String, notes: Vec<String>, files: usize) -> Report {
        Report {
            labels: Vec::new(),
            index: HashMap::new(),
            phrases: HashMap::new(),
            files,
            skipped: BTreeMap::new(),
            bad_count: 0,
            bad: Vec::new(),
            confirmed_stopped_count: 0,
            confirmed_stopped: Vec::new(),
            confirmations: 0,
            confirmation_failures: Failures::default(),
            send_failures: Failures::default(),
            priced_by_record: 0,
            priced_by_policy: 0,
            without_client_ip: 0,
            upstream: Upstream::default(),
            currency,
            notes,
            seconds: 0.0,
            read_seconds: None,
        }
    }

    pub(crate) fn bad(&mut self, file: String, line: usize, why: &str) {
        self.bad_count += 1;
        if self.bad.len() < LISTED {
            self.bad.push((file, line, why.to_string()));
        }
    }

    pub(crate) fn confirmed_stopped(&mut self, s: StoppedConfirmed) {
        self.confirmed_stopped_count += 1;
        if self.confirmed_stopped.len() < LISTED {
            self.confirmed_stopped.push(s);
        }
    }

    pub(crate) fn record_send(&mut self, s: Send<'_>) {
        let label = s.label.unwrap_or(NO_LABEL);
        let i = match self.index.get(label) {
            Some(&i) => i,
            None => {
                self.labels.push((label.to_string(), Tally::default()));
                self.index.insert(label.to_string(), self.labels.len() - 1);
                self.labels.len() - 1
            }
        };
        let why = if s.forwarded && !s.monitor {
            None
        } else {
            let stage = s.stage.unwrap_or("-");
            let rule = s.rule.unwrap_or("-");
            let key = (stage, rule.to_string());
            Some(
                self.phrases
                    .entry(key)
                    .or_insert_with(|| phrase(stage, rule))
                    .clone(),
            )
        };
        if s.cost_from_record {
            self.priced_by_record += 1;
        } else {
            self.priced_by_policy += 1;
        }
        let t = &mut self.labels[i].1;
        t.sends += 1;
        t.cost_without += s.cost;
        if s.confirmed {
            t.confirmed += 1;
        }
        if s.forwarded {
            t.forwarded += 1;
            t.cost_with += s.cost;
            if let Some(why) = why {
                *t.would_stop.entry(why).or_default() += 1;
            }
        } else {
            t.stopped += 1;
            if s.confirmed {
                t.confirmed_stopped += 1;
            }
            if let Some(why) = why {
                *t.stopped_by.entry(why).or_default() += 1;
            }
        }
    }

    pub fn tally(&self, label: &str) -> Option<&Tally> {
        self.index.get(label).map(|&i| &self.labels[i].1)
    }

    fn group(&self, prefix: &str) -> Option<(u64, u64, u64)> {
        let mut found = None;
        for (label, t) in &self.labels {
            if label.to_ascii_lowercase().starts_with(prefix) {
                let (s, f, x) = found.get_or_insert((0, 0, 0));
                *s += t.sends;
                *f += t.forwarded;
                *x += t.stopped;
            }
        }
        found
    }

    /// Stopped share of the sends labelled `attack…` (None without any).
    pub fn attack_stopped_ratio(&self) -> Option<f64> {
        self.group("attack")
            .map(|(sends, _, stopped)| stopped as f64 / sends.max(1) as f64)
    }

    /// Forwarded share of the sends labelled `legitimate…`.
    pub fn legit_delivered_ratio(&self) -> Option<f64> {
        self.group("legitimate")
            .map(|(sends, forwarded, _)| forwarded as f64 / sends.max(1) as f64)
    }

    /// Stopped share of the sends labelled `legitimate…` (0 without any).
    pub fn legit_blocked_ratio(&self) -> f64 {
        self.group("legitimate").map_or(0.0, |(sends, _, stopped)| {
            stopped as f64 / sends.max(1) as f64
        })
    }

    pub fn sends(&self) -> u64 {
        self.labels.iter().map(|(_, t)| t.sends).sum()
    }

    pub fn forwarded(&self) -> u64 {
        self.labels.iter().map(|(_, t)| t.forwarded).sum()
    }

    pub fn skipped_count(&self) -> u64 {
        self.skipped.values().sum()
    }

    pub fn confirmed_sends(&self) -> u64 {
        self.labels.iter().map(|(_, t)| t.confirmed).sum()
    }

    /// Input records: sends, skipped and bad.
    pub fn records(&self) -> u64 {
        self.sends() + self.skipped_count() + self.bad_count
    }

    /// Input records per real second of replay.
    pub fn speed(&self) -> f64 {
        self.records() as f64 / self.seconds.max(1e-9)
    }

    /// The whole report as printed.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut notes = self.notes.clone();
        if self.without_client_ip > 0 {
            notes.push(format!(
                "{} sends have no client_ip: as for an app that sends no X-SMSGuard-Client-IP, rules on client_ip did not judge them",
                self.without_client_ip
            ));
        }
        for n in &notes {
            let _ = writeln!(s, "note: {n}");
        }
        if !notes.is_empty() {
            s.push('\n');
        }
        s.push_str(&self.table());
        s.push('\n');
        s.push_str(&self.totals());
        s.push_str(&self.lists());
        s
    }

    /// The per-label table.
    pub fn table(&self) -> String {
        let cur = &self.currency;
        let width = self
            .labels
            .iter()
            .map(|(l, _)| l.chars().count())
            .chain([5])
            .max()
            .unwrap_or(5)
            .min(40);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<width$}  {:>8} {:>9} {:>8}  {:>14} {:>14}  stopped by (sends)",
            "label",
            "sends",
            "forwarded",
            "stopped",
            format!("cost w/o ({cur})"),
            format!("with ({cur})"),
        );
        // Legitimate labels first, then attacks, then the rest; each group
        // in order of first appearance.
        let mut labels: Vec<&(String, Tally)> = self.labels.iter().collect();
        labels.sort_by_key(|(l, _)| {
            let l = l.to_ascii_lowercase();
            if l.starts_with("legitimate") {
                0
            } else if l.starts_with("attack") {
                1
            } else {
                2
            }
        });
        for (label, t) in labels {
            let _ = writeln!(
                s,
                "{:<width$}  {:>8} {:>9} {:>8}  {:>14} {:>14}  {}",
                clip(label, width),
                t.sends,
                t.forwarded,
                t.stopped,
                money(t.cost_without),
                money(t.cost_with),
                counts(&t.stopped_by),
            );
            if !t.would_stop.is_empty() {
                let _ = writeln!(
                    s,
                    "{:<width$}  monitor: forwarded, but would have stopped: {}",
                    "",
                    counts(&t.would_stop)
                );
            }
        }
        if self.labels.is_empty() {
            s.push_str("(no sends replayed)\n");
        }
        s
    }

    /// The verdict lines under the table.
    pub fn totals(&self) -> String {
        let mut s = String::new();
        let cur = &self.currency;
        let mut line = |k: &str, v: String| {
            let _ = writeln!(s, "{:<25}{v}", format!("{k}:"));
        };
        let skipped = if self.skipped.is_empty() {
            "0 skipped".to_string()
        } else {
            format!(
                "{} skipped (not outbound-api: {})",
                self.skipped_count(),
                counts(&self.skipped)
            )
        };
        line(
            "records",
            format!(
                "{} sends replayed, {skipped}, {} bad, from {} file{}",
                self.sends(),
                self.bad_count,
                self.files,
                if self.files == 1 { "" } else { "s" }
            ),
        );
        if let Some((sends, _, stopped)) = self.group("attack") {
            line(
                "attack stopped",
                format!(
                    "{} ({stopped} of {sends} sends labelled attack…)",
                    percent(stopped, sends)
                ),
            );
        }
        if let Some((sends, forwarded, _)) = self.group("legitimate") {
            line(
                "legitimate delivered",
                format!(
                    "{} ({forwarded} of {sends} sends labelled legitimate…)",
                    percent(forwarded, sends)
                ),
            );
        }
        let sum = |f: fn(&Tally) -> u64| self.labels.iter().map(|(_, t)| f(t)).sum::<u64>();
        let (without, with) = (sum(|t| t.cost_without), sum(|t| t.cost_with));
        let priced = match (self.priced_by_record, self.priced_by_policy) {
            (0, _) => "priced by the policy's [budget] prices".to_string(),
            (_, 0) => "priced by the records' own price".to_string(),
            (r, p) => {
                format!("{r} sends priced by their own price, {p} by the policy's [budget] prices")
            }
        };
        line(
            "cost",
            format!(
                "{} {cur} without the guard, {} {cur} with it (saved {} {cur}); {priced}",
                money(without),
                money(with),
                money(without.saturating_sub(with))
            ),
        );
        line(
            "confirmed sends stopped",
            format!(
                "{} of {} confirmed sends (recipients who proved receipt: look at these first)",
                self.confirmed_stopped_count,
                self.confirmed_sends()
            ),
        );
        let failed = &self.confirmation_failures;
        line(
            "confirmations replayed",
            if failed.count == 0 {
                format!("{}, all answered 2xx", self.confirmations)
            } else {
                format!(
                    "{}, {} failed (first: {})",
                    self.confirmations,
                    failed.count,
                    failed.first.join("; ")
                )
            },
        );
        if self.send_failures.count > 0 {
            line(
                "failed sends",
                format!(
                    "{} (first: {})",
                    self.send_failures.count,
                    self.send_failures.first.join("; ")
                ),
            );
        }
        let u = &self.upstream;
        let mismatch = if u.sends == self.forwarded() {
            String::new()
        } else {
            format!(
                " -- MISMATCH: the guard forwarded {} sends",
                self.forwarded()
            )
        };
        line(
            "fake Twilio received",
            format!(
                "{} sends, {} balance checks, {} confirmations{mismatch}",
                u.sends, u.balance_checks, u.confirmations
            ),
        );
        line(
            "replay speed",
            format!(
                "{:.0} records/s ({} records: {} sends and {} confirmations in {:.2} s of real time{})",
                self.speed(),
                self.records(),
                self.sends(),
                self.confirmations,
                self.seconds,
                self.read_seconds
                    .map(|r| format!("; records loaded in {r:.2} s"))
                    .unwrap_or_default()
            ),
        );
        s
    }

    /// Bad records and stopped confirmed sends, by line.
    fn lists(&self) -> String {
        let mut s = String::new();
        if !self.confirmed_stopped.is_empty() {
            let _ = writeln!(
                s,
                "\nconfirmed sends it would have stopped ({}{}):",
                if self.confirmed_stopped_count > LISTED as u64 {
                    format!("first {LISTED} of ")
                } else {
                    String::new()
                },
                self.confirmed_stopped_count
            );
            for c in &self.confirmed_stopped {
                let _ = writeln!(
                    s,
                    "  {}:{}  {}  {}  {}",
                    c.file,
                    c.line,
                    c.label.as_deref().unwrap_or(NO_LABEL),
                    c.to,
                    phrase(c.stage, &c.rule)
                );
            }
        }
        if !self.bad.is_empty() {
            let _ = writeln!(
                s,
                "\nbad records, skipped ({}{}):",
                if self.bad_count > LISTED as u64 {
                    format!("first {LISTED} of ")
                } else {
                    String::new()
                },
                self.bad_count
            );
            for (file, line, why) in &self.bad {
                let _ = writeln!(s, "  {file}:{line}: {why}");
            }
            if self.bad_count > self.bad.len() as u64 {
                let _ = writeln!(
                    s,
                    "  ... and {} more",
                    self.bad_count - self.bad.len() as u64
                );
            }
        }
        s
    }
}

/// A stage and rule as a person reads them: `geo (UZ not allowed)`,
/// `blocks (limit prefix)`, `limit ip`, `budget (daily cap)`.
pub fn phrase(stage: &str, rule: &str) -> String {
    let cap = |r: &str| {
        let (window, region) = r.split_once(':').unwrap_or((r, "*"));
        let window = match window {
            "hour" => "hourly cap",
            "day" => "daily cap",
            w => w,
        };
        if region == "*" {
            window.to_string()
        } else {
            format!("{window} {region}")
        }
    };
    // `surge:prefix:4` -> `surge prefix:4`
    let adaptive = |r: &str| match r.split_once(':') {
        Some((signal, key)) => format!("{signal} {key}"),
        None => r.to_string(),
    };
    match (stage, rule) {
        ("number", "invalid") => "invalid number".into(),
        ("number", "no_region") => "geo (no region)".into(),
        ("number", r) if r.starts_with("geo:") => format!("geo ({} not allowed)", &r[4..]),
        ("number", r) if r.starts_with("type:") => format!("number type ({})", &r[5..]),
        ("parse", _) => "unreadable request".into(),
        ("blocks", "manual") => "blocks (set by hand)".into(),
        ("blocks", r) if r.starts_with("adaptive:") => {
            format!("blocks (adaptive {})", adaptive(&r[9..]))
        }
        ("adaptive", r) if r.starts_with("adaptive:") => {
            format!("adaptive ({})", adaptive(&r[9..]))
        }
        ("blocks", r) if r.starts_with("limit:") => format!("blocks (limit {})", &r[6..]),
        ("limits", r) if r.starts_with("limit:") => format!("limit {}", &r[6..]),
        ("backoff", _) => "backoff".into(),
        ("budget", r) if r.starts_with("budget:") => format!("budget ({})", cap(&r[7..])),
        ("balance", "balance:min") => "balance (below min)".into(),
        ("balance", "balance:unavailable") => "balance (unavailable)".into(),
        (stage, "-") => stage.to_string(),
        (stage, rule) => format!("{stage} ({rule})"),
    }
}

/// Millionths with two decimals, rounded half up.
pub fn money(micros: u64) -> String {
    let cents = micros / 10_000 + u64::from(micros % 10_000 >= 5_000);
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn percent(part: u64, whole: u64) -> String {
    format!("{:.2}%", 100.0 * part as f64 / whole.max(1) as f64)
}

/// `a: 3, b: 1`, largest first; `-` when empty.
fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(width.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

/// `--out`: one JSON object per input record, in input order.
pub fn write_decisions(
    out: &mut impl Write,
    loaded: &Loaded,
    outcomes: &[Outcome],
) -> std::io::Result<()> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        file: &'a str,
        line: usize,
        action: &'a str,
        stage: Option<&'a str>,
        rule: Option<&'a str>,
        label: Option<&'a str>,
        to: Option<&'a str>,
        forwarded: bool,
        confirmed: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
    }
    let files: Vec<String> = loaded
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    for (e, o) in loaded.entries.iter().zip(outcomes) {
        let (label, error) = match &e.record {
            Ok(r) => (r.label.as_deref(), None),
            Err(why) => (None, Some(why.as_str())),
        };
        serde_json::to_writer(
            &mut *out,
            &Line {
                file: files.get(e.file).map_or("", String::as_str),
                line: e.line,
                action: o.action,
                stage: o.stage,
                rule: o.rule.as_deref(),
                label,
                to: o.to.as_deref(),
                forwarded: o.forwarded,
                confirmed: o.confirmed,
                error,
            },
        )?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_as_words() {
        assert_eq!(phrase("number", "geo:UZ"), "geo (UZ not allowed)");
        assert_eq!(phrase("blocks", "limit:prefix"), "blocks (limit prefix)");
        assert_eq!(phrase("limits", "limit:ip"), "limit ip");
        assert_eq!(phrase("budget", "budget:day:*"), "budget (daily cap)");
        assert_eq!(phrase("budget", "budget:hour:UZ"), "budget (hourly cap UZ)");
        assert_eq!(
            phrase("number", "type:premium_rate"),
            "number type (premium_rate)"
        );
        assert_eq!(
            phrase("adaptive", "adaptive:unconfirmed:prefix:7"),
            "adaptive (unconfirmed prefix:7)"
        );
        assert_eq!(
            phrase("blocks", "adaptive:surge:prefix:4"),
            "blocks (adaptive surge prefix:4)"
        );
        assert_eq!(phrase("novel", "rule:x"), "novel (rule:x)");
    }

    #[test]
    fn money_has_two_decimals_rounded() {
        assert_eq!(money(0), "0.00");
        assert_eq!(money(7_900), "0.01");
        assert_eq!(money(4_239_500_000), "4239.50");
        assert_eq!(money(32_232_000), "32.23");
        assert_eq!(money(4_999), "0.00");
    }

    #[test]
    fn ratios_group_labels_by_their_first_word() {
        let mut r = Report::new("USD".into(), vec![], 1);
        let send = |label, forwarded| Send {
            label: Some(label),
            forwarded,
            monitor: false,
            stage: (!forwarded).then_some("number"),
            rule: (!forwarded).then_some("geo:UZ"),
            cost: 300_000,
            cost_from_record: false,
            confirmed: false,
        };
        r.record_send(send("legitimate", true));
        r.record_send(send("attack: UZ", false));
        r.record_send(send("Attack: UK blocks", true));
        assert_eq!(r.attack_stopped_ratio(), Some(0.5));
        assert_eq!(r.legit_delivered_ratio(), Some(1.0));
        assert_eq!(r.legit_blocked_ratio(), 0.0);
        let t = r.tally("attack: UZ").unwrap();
        assert_eq!(t.stopped_by["geo (UZ not allowed)"], 1);
        assert_eq!((t.cost_without, t.cost_with), (300_000, 0));
        let text = r.render();
        assert!(
            text.contains("attack stopped:          50.00% (1 of 2"),
            "{text}"
        );
        assert!(text.contains("fake Twilio received:    0 sends"), "{text}");
        assert!(text.contains("MISMATCH"), "{text}");
    }
}
