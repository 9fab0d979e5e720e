//! What a replay found, for a person: per label what was sent, forwarded
//! and stopped (and by which rule, in words), what it cost with and without
//! the guard; per attack how many sends got out before its first stop and
//! how long that took; which rules stopped legitimate sends; the keys
//! blocked during the replay and whose sends they stopped; the confirmed
//! sends the guard would have stopped, the records it could not read; and
//! `--out`, one decision per input record.
//!
//! Figures only: never a message body or a credential. Numbers in the
//! printed report are masked.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;

use super::input::Loaded;
use crate::base::clock::Millis;
use crate::telemetry::audit::mask_number;

/// What became of one input record, in input order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// `allow`, `shadow`, `reject`, `monitor` (the guard's action);
    /// `skipped` (not an outbound send), `bad` (unreadable), `unjudged`
    /// (a send the guard passes without judging, such as Verify email),
    /// `error` (the request to the guard failed).
    pub action: &'static str,
    pub stage: Option<&'static str>,
    pub rule: Option<Arc<str>>,
    /// The rule's figures as the decision log has them: the blocked key
    /// (`prefix:8=+99899394`), a limit's count and rate, an adaptive
    /// signal's figures (masked when `log.mask_numbers`).
    pub detail: Option<Arc<str>>,
    /// The number as the guard recorded it (masked when `log.mask_numbers`).
    pub to: Option<String>,
    /// The guard let the send go to Twilio.
    pub forwarded: bool,
    /// Its confirmation was replayed.
    pub confirmed: bool,
}

/// How many bad records, stopped confirmed sends and blocked keys are
/// listed by name.
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
    /// Record times of the label's first send and of its first send the
    /// guard stopped (None while none was).
    pub first_send_at: Option<Millis>,
    pub first_stop_at: Option<Millis>,
    /// The label's sends, in time order, that were forwarded before the
    /// first one the guard stopped: all of its sends while none was.
    pub forwarded_before_stop: u64,
}

impl Tally {
    /// From the label's first send to its first stopped send ("time to
    /// detect"), in milliseconds; None when none was stopped.
    pub fn time_to_detect(&self) -> Option<Millis> {
        Some(self.first_stop_at?.saturating_sub(self.first_send_at?))
    }

    /// [`Tally::time_to_detect`] in minutes.
    pub fn minutes_to_detect(&self) -> Option<f64> {
        self.time_to_detect().map(|ms| ms as f64 / 60_000.0)
    }
}

/// What a label says its sends are: `legitimate…` or `attack…` (in any
/// case), or neither (unlabelled sends included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Legitimate,
    Attack,
    Other,
}

impl Kind {
    pub fn of(label: &str) -> Kind {
        let starts = |p: &str| {
            label
                .get(..p.len())
                .is_some_and(|l| l.eq_ignore_ascii_case(p))
        };
        if starts("legitimate") {
            Kind::Legitimate
        } else if starts("attack") {
            Kind::Attack
        } else {
            Kind::Other
        }
    }
}

/// Legitimate sends one rule stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleStops {
    /// The stage and rule as the decision log names them (`blocks`,
    /// `adaptive:surge:prefix:7`).
    pub stage: &'static str,
    pub rule: String,
    /// As the table phrases them: `blocks (adaptive surge prefix:7)`.
    pub phrase: String,
    pub sends: u64,
    /// Of all sends labelled `legitimate…` (0 to 1).
    pub share: f64,
}

/// One block as the guard's store had it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub since: Millis,
    pub until: Millis,
    /// 1 for a first offence; escalated blocks count up.
    pub offence: u32,
}

impl Span {
    /// How long the block was set for, in milliseconds.
    pub fn length(&self) -> Millis {
        self.until.saturating_sub(self.since)
    }
}

/// Sends counted by what their label says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByKind {
    pub legitimate: u64,
    pub attack: u64,
    /// Neither `legitimate…` nor `attack…`, unlabelled sends included.
    pub other: u64,
}

impl ByKind {
    fn add(&mut self, kind: Kind) {
        match kind {
            Kind::Legitimate => self.legitimate += 1,
            Kind::Attack => self.attack += 1,
            Kind::Other => self.other += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.legitimate + self.attack + self.other
    }
}

/// A key blocked during the replay, and the sends stopped under it.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockedKey {
    /// `prefix:8=+44740012`, a number in it masked as the report masks
    /// numbers (see [`mask_key`]).
    pub key: String,
    /// The rule that set its first block: `adaptive:surge:prefix:8`,
    /// `limit:prefix`, `manual`.
    pub rule: String,
    /// The blocks set on it that stopped sends, in order (empty when the
    /// replay could not read one).
    pub spans: Vec<Span>,
    /// Stopped sends (the one whose rule tripped the block and those the
    /// block stopped) by what their label says.
    pub sends: ByKind,
}

impl BlockedKey {
    pub fn stopped(&self) -> u64 {
        self.sends.total()
    }

    /// How long it was blocked: its blocks' lengths added up.
    pub fn blocked_for(&self) -> Millis {
        self.spans.iter().map(Span::length).sum()
    }
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

/// The key a stopped send was stopped under.
pub(crate) struct Under<'a> {
    /// As the decision event spells it (masked when the log masks).
    pub key: &'a str,
    /// The rule that set the block.
    pub rule: &'a str,
    /// The block as the store had it, when the engine read it (see
    /// [`Report::span_wanted`]).
    pub span: Option<Span>,
    /// Length of the number the send went to (see [`mask_key`]).
    pub number_len: usize,
}

/// One judged send, as the engine tells it, in time order.
pub(crate) struct Send<'a> {
    pub label: Option<&'a str>,
    /// The record's time.
    pub at: Millis,
    pub forwarded: bool,
    pub monitor: bool,
    pub stage: Option<&'static str>,
    pub rule: Option<&'a str>,
    pub cost: u64,
    pub cost_from_record: bool,
    pub confirmed: bool,
    /// A stopped send's blocked key: the block that stopped it, or the one
    /// its rule set as it tripped.
    pub under: Option<Under<'a>>,
}

#[derive(Debug, Clone)]
pub struct Report {
    /// Labels in order of first appearance (printed legitimate first,
    /// then attack, then the rest).
    pub labels: Vec<(String, Tally)>,
    index: HashMap<String, usize>,
    /// What each label says, same order as `labels`.
    kinds: Vec<Kind>,
    /// Sends labelled `legitimate…` the guard stopped, by (stage, rule).
    legit_stopped: HashMap<(&'static str, String), u64>,
    /// Keys blocked during the replay that stopped sends, in order of first
    /// stop (see [`Report::blocked_keys_ranked`] for the printed order).
    pub blocked_keys: Vec<BlockedKey>,
    /// Sends the adaptive stage stopped without blocking a key (old
    /// evidence in a range never confirmed: the send alone is stopped).
    pub stopped_without_block: ByKind,
    /// By the key as the decision events spell it.
    key_index: HashMap<String, usize>,
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
    /// Sends whose record gave a time without a zone (read as UTC).
    pub without_zone: u64,
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
            kinds: Vec::new(),
            legit_stopped: HashMap::new(),
            blocked_keys: Vec::new(),
            stopped_without_block: ByKind::default(),
            key_index: HashMap::new(),
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
            without_zone: 0,
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
                self.kinds.push(Kind::of(label));
                self.index.insert(label.to_string(), self.labels.len() - 1);
                self.labels.len() - 1
            }
        };
        let kind = self.kinds[i];
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
        if t.first_send_at.is_none_or(|first| s.at < first) {
            t.first_send_at = Some(s.at);
        }
        if s.confirmed {
            t.confirmed += 1;
        }
        if s.forwarded {
            t.forwarded += 1;
            t.cost_with += s.cost;
            if t.first_stop_at.is_none() {
                t.forwarded_before_stop += 1;
            }
            if let Some(why) = why {
                *t.would_stop.entry(why).or_default() += 1;
            }
        } else {
            t.stopped += 1;
            if t.first_stop_at.is_none() {
                t.first_stop_at = Some(s.at);
            }
            if s.confirmed {
                t.confirmed_stopped += 1;
            }
            if let Some(why) = why {
                *t.stopped_by.entry(why).or_default() += 1;
            }
            if kind == Kind::Legitimate {
                let key = (s.stage.unwrap_or("-"), s.rule.unwrap_or("-").to_string());
                *self.legit_stopped.entry(key).or_default() += 1;
            }
            match s.under {
                Some(u) => self.stopped_under(u, kind),
                None if s.stage == Some("adaptive") => self.stopped_without_block.add(kind),
                None => {}
            }
        }
    }

    /// Whether the engine should read the block on `key` from the store for
    /// a send stopped under it at `at`: a key not met yet, a block its rule
    /// just set (`tripped`), or one met after its last known block ended.
    pub(crate) fn span_wanted(&self, key: &str, at: Millis, tripped: bool) -> bool {
        match self.key_index.get(key) {
            None => true,
            Some(&i) => {
                tripped
                    || self.blocked_keys[i]
                        .spans
                        .last()
                        .is_none_or(|last| last.until <= at)
            }
        }
    }

    fn stopped_under(&mut self, u: Under<'_>, kind: Kind) {
        let i = match self.key_index.get(u.key) {
            Some(&i) => i,
            None => {
                self.blocked_keys.push(BlockedKey {
                    key: mask_key(u.key, u.number_len),
                    rule: u.rule.to_string(),
                    spans: Vec::new(),
                    sends: ByKind::default(),
                });
                self.key_index
                    .insert(u.key.to_string(), self.blocked_keys.len() - 1);
                self.blocked_keys.len() - 1
            }
        };
        let k = &mut self.blocked_keys[i];
        if let Some(span) = u.span {
            if k.spans.last().is_none_or(|last| last.since != span.since) {
                k.spans.push(span);
            }
        }
        k.sends.add(kind);
    }

    /// The blocked keys as printed: most legitimate sends stopped first,
    /// then most attack sends, then by key.
    pub fn blocked_keys_ranked(&self) -> Vec<&BlockedKey> {
        let mut v: Vec<&BlockedKey> = self.blocked_keys.iter().collect();
        v.sort_by(|a, b| {
            let (x, y) = (a.sends, b.sends);
            y.legitimate
                .cmp(&x.legitimate)
                .then(y.attack.cmp(&x.attack))
                .then(y.other.cmp(&x.other))
                .then(a.key.cmp(&b.key))
        });
        v
    }

    /// Sends labelled `legitimate…`.
    pub fn legit_sends(&self) -> u64 {
        self.group("legitimate").map_or(0, |(sends, _, _)| sends)
    }

    /// The rules that stopped sends labelled `legitimate…`, most first.
    pub fn legit_stopped_by_rule(&self) -> Vec<RuleStops> {
        let all = self.legit_sends();
        let mut v: Vec<RuleStops> = self
            .legit_stopped
            .iter()
            .map(|((stage, rule), &sends)| RuleStops {
                stage,
                rule: rule.clone(),
                phrase: phrase(stage, rule),
                sends,
                share: sends as f64 / all.max(1) as f64,
            })
            .collect();
        v.sort_by(|a, b| b.sends.cmp(&a.sends).then(a.phrase.cmp(&b.phrase)));
        v
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
        if self.without_zone > 0 {
            notes.push(format!(
                "{} sends have a time without a zone (like 2023-11-21 01:02:03): read as UTC; if the export is in local time, every time is off by its offset",
                self.without_zone
            ));
        }
        for n in &notes {
            let _ = writeln!(s, "note: {n}");
        }
        if !notes.is_empty() {
            s.push('\n');
        }
        s.push_str(&self.table());
        s.push_str(&self.first_stops());
        s.push('\n');
        s.push_str(&self.totals());
        s.push_str(&self.legit_stopped_section());
        s.push_str(&self.blocked_keys_section());
        s.push_str(&self.lists());
        s
    }

    /// Label column width: the longest label, at most 40.
    fn label_width(&self) -> usize {
        self.labels
            .iter()
            .map(|(l, _)| l.chars().count())
            .chain([5])
            .max()
            .unwrap_or(5)
            .min(40)
    }

    /// Per attack label: the sends that got out before its first stop, and
    /// the minutes from its first send to that stop.
    pub fn first_stops(&self) -> String {
        let width = self.label_width();
        let mut s = String::new();
        let mut attacks = self
            .labels
            .iter()
            .zip(&self.kinds)
            .filter(|(_, k)| **k == Kind::Attack)
            .peekable();
        if attacks.peek().is_none() {
            return s;
        }
        let _ = writeln!(
            s,
            "\n{:<width$}  {:>27}  {:>17}",
            "attack", "forwarded before first stop", "minutes to detect"
        );
        for ((label, t), _) in attacks {
            let _ = writeln!(
                s,
                "{:<width$}  {:>27}  {:>17}",
                clip(label, width),
                t.forwarded_before_stop,
                t.minutes_to_detect()
                    .map_or_else(|| "-".to_string(), |m| format!("{m:.2}")),
            );
        }
        s
    }

    /// The rules that stopped legitimate sends, with their share.
    fn legit_stopped_section(&self) -> String {
        let mut s = String::new();
        let Some((sends, _, stopped)) = self.group("legitimate") else {
            return s;
        };
        if stopped == 0 {
            // Said in the totals.
            return s;
        }
        let rules = self.legit_stopped_by_rule();
        let width = rules
            .iter()
            .map(|r| r.phrase.chars().count())
            .max()
            .unwrap_or(0)
            .min(60);
        let _ = writeln!(
            s,
            "\nlegitimate sends stopped, by rule ({stopped} of {sends} sends labelled legitimate…, {}):",
            percent(stopped, sends)
        );
        for r in &rules {
            let _ = writeln!(
                s,
                "  {:<width$}  {:>8}  {:>7}",
                clip(&r.phrase, width),
                r.sends,
                percent(r.sends, sends)
            );
        }
        s
    }

    /// The keys blocked during the replay, those that stopped legitimate
    /// sends first; at most [`LISTED`] lines.
    fn blocked_keys_section(&self) -> String {
        let mut s = String::new();
        let alone = &self.stopped_without_block;
        if alone.total() > 0 {
            let _ = writeln!(
                s,
                "\nsends the adaptive stage stopped without blocking a key (old evidence in a range never confirmed, or a product's new numbers in a region it pumps: the send alone): {} legitimate, {} attack, {} other",
                alone.legitimate, alone.attack, alone.other
            );
        }
        if self.blocked_keys.is_empty() {
            return s;
        }
        let ranked = self.blocked_keys_ranked();
        let shown = &ranked[..ranked.len().min(LISTED)];
        let key_width = shown
            .iter()
            .map(|k| k.key.chars().count())
            .chain([3])
            .max()
            .unwrap_or(3)
            .min(40);
        let set_by: Vec<String> = shown.iter().map(|k| set_by(&k.rule)).collect();
        let rule_width = set_by
            .iter()
            .map(|r| r.chars().count())
            .chain([6])
            .max()
            .unwrap_or(6)
            .min(40);
        let _ = writeln!(
            s,
            "\nkeys blocked during the replay ({}; stopped sends: the one that tripped the block and those it stopped):",
            self.blocked_keys.len()
        );
        let lengths: Vec<String> = shown.iter().map(|k| blocked_for(&k.spans)).collect();
        let length_width = lengths
            .iter()
            .map(|l| l.chars().count())
            .chain([11])
            .max()
            .unwrap_or(11);
        let _ = writeln!(
            s,
            "  {:<key_width$}  {:<rule_width$}  {:<length_width$}  {:>10} {:>8} {:>8}",
            "key", "set by", "blocked for", "legitimate", "attack", "other"
        );
        for ((k, by), length) in shown.iter().zip(&set_by).zip(&lengths) {
            let _ = writeln!(
                s,
                "  {:<key_width$}  {:<rule_width$}  {:<length_width$}  {:>10} {:>8} {:>8}",
                clip(&k.key, key_width),
                clip(by, rule_width),
                length,
                k.sends.legitimate,
                k.sends.attack,
                k.sends.other
            );
        }
        if ranked.len() > shown.len() {
            let rest = &ranked[shown.len()..];
            let _ = writeln!(
                s,
                "  ... and {} more keys ({} legitimate, {} attack, {} other sends stopped)",
                rest.len(),
                rest.iter().map(|k| k.sends.legitimate).sum::<u64>(),
                rest.iter().map(|k| k.sends.attack).sum::<u64>(),
                rest.iter().map(|k| k.sends.other).sum::<u64>(),
            );
        }
        s
    }

    /// The per-label table.
    pub fn table(&self) -> String {
        let cur = &self.currency;
        let width = self.label_width();
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
        labels.sort_by_key(|(l, _)| Kind::of(l));
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
        if let Some((sends, forwarded, stopped)) = self.group("legitimate") {
            line(
                "legitimate delivered",
                format!(
                    "{} ({forwarded} of {sends} sends labelled legitimate…)",
                    percent(forwarded, sends)
                ),
            );
            line(
                "legitimate stopped by",
                if stopped == 0 {
                    "no rule".to_string()
                } else {
                    format!(
                        "{} rule{} (below)",
                        self.legit_stopped.len(),
                        if self.legit_stopped.len() == 1 {
                            ""
                        } else {
                            "s"
                        }
                    )
                },
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
        // A pumper that owns its numbers confirms some of its own sends:
        // those stopped are the attack's, not people's.
        let attack: u64 = self
            .labels
            .iter()
            .filter(|(l, _)| Kind::of(l) == Kind::Attack)
            .map(|(_, t)| t.confirmed_stopped)
            .sum();
        line(
            "confirmed sends stopped",
            format!(
                "{} of {} confirmed sends (recipients who proved receipt: look at these first){}",
                self.confirmed_stopped_count,
                self.confirmed_sends(),
                if attack > 0 {
                    format!("; {attack} of them labelled attack")
                } else {
                    String::new()
                }
            ),
        );
        let failed = &self.confirmation_failures;
        line(
            "confirmations replayed",
            if self.confirmations == 0 {
                "none (the records carry no confirmed_at)".to_string()
            } else if failed.count == 0 {
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

/// Who set a block, in the table's words: `adaptive (surge prefix:8)`,
/// `limit prefix`, `set by hand`.
fn set_by(rule: &str) -> String {
    if rule == "manual" {
        "set by hand".into()
    } else if rule.starts_with("limit:") {
        phrase("limits", rule)
    } else if rule.starts_with("adaptive:") {
        phrase("adaptive", rule)
    } else {
        rule.to_string()
    }
}

/// `12h`, `12h + 1day (offence 2)`; `?` when no block was read.
fn blocked_for(spans: &[Span]) -> String {
    let length = |ms: Millis| {
        humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string()
    };
    let Some(last) = spans.last() else {
        return "?".into();
    };
    let mut s = if spans.len() <= 2 {
        spans
            .iter()
            .map(|b| length(b.length()))
            .collect::<Vec<_>>()
            .join(" + ")
    } else {
        format!(
            "{} in {} blocks",
            length(spans.iter().map(Span::length).sum()),
            spans.len()
        )
    };
    if last.offence > 1 {
        let _ = write!(s, " (offence {})", last.offence);
    }
    s
}

/// A block key as the report prints it: a `to` part masked as the report
/// masks numbers (the last four digits hidden), a `prefix:N` part showing
/// no more of it than that masked number would (`number_len`: the length of
/// the number the stopped send went to); any other part as it is.
pub fn mask_key(key: &str, number_len: usize) -> String {
    let Some((kind, value)) = key.split_once('=') else {
        return key.to_string();
    };
    let kinds: Vec<&str> = kind.split('+').collect();
    let parts: Vec<String> = kinds
        .iter()
        .zip(value.splitn(kinds.len(), '|'))
        .map(|(k, v)| {
            if *k == "to" {
                mask_number(v)
            } else if k.starts_with("prefix:") {
                let keep = number_len.saturating_sub(4);
                v.chars()
                    .enumerate()
                    .map(|(i, c)| if i < keep { c } else { '*' })
                    .collect()
            } else {
                v.to_string()
            }
        })
        .collect();
    format!("{kind}={}", parts.join("|"))
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
        /// The rule's figures, as the decision log has them.
        detail: Option<&'a str>,
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
                detail: o.detail.as_deref(),
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
            at: 0,
            forwarded,
            monitor: false,
            stage: (!forwarded).then_some("number"),
            rule: (!forwarded).then_some("geo:UZ"),
            cost: 300_000,
            cost_from_record: false,
            confirmed: false,
            under: None,
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

    const MINUTE: Millis = 60_000;
    /// 2026-11-22T00:00:00Z: record times are wall-clock times.
    const T0: Millis = 1_795_305_600_000;

    /// A send at `T0 + minutes`, forwarded, or stopped by `stage` and `rule`
    /// under `under`.
    fn send<'a>(
        label: Option<&'a str>,
        minutes: f64,
        stopped: Option<(&'static str, &'a str)>,
        under: Option<Under<'a>>,
    ) -> Send<'a> {
        Send {
            label,
            at: T0 + (minutes * MINUTE as f64) as Millis,
            forwarded: stopped.is_none(),
            monitor: false,
            stage: stopped.map(|(stage, _)| stage),
            rule: stopped.map(|(_, rule)| rule),
            cost: 7_900,
            cost_from_record: false,
            confirmed: false,
            under,
        }
    }

    #[test]
    fn confirmed_sends_stopped_say_how_many_were_an_attack_s_own() {
        let mut r = Report::new("USD".into(), vec![], 1);
        let stop = Some(("adaptive", "adaptive:alert:prefix:7"));
        for label in ["legitimate: sign-ins", "attack: poisoned conversions"] {
            r.record_send(Send {
                confirmed: true,
                ..send(Some(label), 1.0, stop, None)
            });
            r.confirmed_stopped(StoppedConfirmed {
                file: "day".into(),
                line: 1,
                label: Some(label.into()),
                to: "+44791100****".into(),
                stage: "adaptive",
                rule: "adaptive:alert:prefix:7".into(),
            });
        }
        r.record_send(Send {
            confirmed: true,
            ..send(Some("legitimate: sign-ins"), 2.0, None, None)
        });
        let text = r.render();
        assert!(
            text.contains("confirmed sends stopped: 2 of 3 confirmed sends (recipients who proved receipt: look at these first); 1 of them labelled attack\n"),
            "{text}"
        );
    }

    #[test]
    fn an_attack_s_first_stop_counts_what_got_out_before_it_and_when() {
        let mut r = Report::new("USD".into(), vec![], 1);
        let geo = Some(("number", "geo:UZ"));
        let surge = Some(("adaptive", "adaptive:surge:prefix:8"));
        // Three forwarded, then the first stop 7.5 minutes after the first
        // send; what comes after the first stop does not count.
        r.record_send(send(Some("attack: UK blocks"), 0.0, None, None));
        r.record_send(send(Some("attack: UK blocks"), 2.0, None, None));
        r.record_send(send(Some("attack: UK blocks"), 4.0, None, None));
        r.record_send(send(Some("attack: UK blocks"), 7.5, surge, None));
        r.record_send(send(Some("attack: UK blocks"), 8.0, None, None));
        r.record_send(send(Some("attack: UK blocks"), 9.0, surge, None));
        // Stopped from its first send.
        r.record_send(send(Some("attack: UZ"), 1.0, geo, None));
        r.record_send(send(Some("attack: UZ"), 3.0, geo, None));
        // Never stopped: all of its sends got out.
        r.record_send(send(Some("Attack: low and slow"), 5.0, None, None));
        r.record_send(send(Some("Attack: low and slow"), 65.0, None, None));
        // Not an attack: figures kept, not printed in the section.
        r.record_send(send(Some("legitimate"), 0.5, None, None));
        r.record_send(send(Some("legitimate"), 1.5, geo, None));

        let uk = r.tally("attack: UK blocks").unwrap();
        assert_eq!((uk.forwarded, uk.stopped), (4, 2));
        assert_eq!(uk.forwarded_before_stop, 3);
        assert_eq!(uk.first_send_at, Some(T0));
        assert_eq!(uk.first_stop_at, Some(T0 + 7 * MINUTE + MINUTE / 2));
        assert_eq!(uk.time_to_detect(), Some(7 * MINUTE + MINUTE / 2));
        assert_eq!(uk.minutes_to_detect(), Some(7.5));
        let uz = r.tally("attack: UZ").unwrap();
        assert_eq!(
            (uz.forwarded_before_stop, uz.minutes_to_detect()),
            (0, Some(0.0))
        );
        let slow = r.tally("Attack: low and slow").unwrap();
        assert_eq!((slow.forwarded_before_stop, slow.sends), (2, 2));
        assert_eq!((slow.first_stop_at, slow.minutes_to_detect()), (None, None));
        let legit = r.tally("legitimate").unwrap();
        assert_eq!(
            (legit.forwarded_before_stop, legit.minutes_to_detect()),
            (1, Some(1.0))
        );

        let text = r.first_stops();
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "attack                forwarded before first stop  minutes to detect",
                "attack: UK blocks                               3               7.50",
                "attack: UZ                                      0               0.00",
                "Attack: low and slow                            2                  -",
            ],
            "{text}"
        );
        assert!(r.render().contains(&text), "{}", r.render());
    }

    #[test]
    fn legitimate_sends_stopped_are_counted_by_rule_with_their_share() {
        let mut r = Report::new("USD".into(), vec![], 1);
        let region_block = Some(("blocks", "adaptive:unconfirmed:region"));
        let prefix_limit = Some(("limits", "limit:prefix"));
        for i in 0..1997 {
            r.record_send(send(Some("legitimate: sign-ins"), i as f64, None, None));
        }
        r.record_send(send(
            Some("legitimate: sign-ins"),
            2000.0,
            region_block,
            None,
        ));
        r.record_send(send(
            Some("Legitimate: campaign"),
            2001.0,
            region_block,
            None,
        ));
        r.record_send(send(
            Some("legitimate: campaign"),
            2002.0,
            prefix_limit,
            None,
        ));
        // Neither an attack's nor an unlabelled send counts here.
        r.record_send(send(Some("attack: UZ"), 1.0, prefix_limit, None));
        r.record_send(send(None, 1.0, prefix_limit, None));

        assert_eq!(r.legit_sends(), 2000);
        let rules = r.legit_stopped_by_rule();
        assert_eq!(
            rules,
            [
                RuleStops {
                    stage: "blocks",
                    rule: "adaptive:unconfirmed:region".into(),
                    phrase: "blocks (adaptive unconfirmed region)".into(),
                    sends: 2,
                    share: 0.001,
                },
                RuleStops {
                    stage: "limits",
                    rule: "limit:prefix".into(),
                    phrase: "limit prefix".into(),
                    sends: 1,
                    share: 0.0005,
                },
            ]
        );
        let stopped: u64 = r
            .labels
            .iter()
            .filter(|(l, _)| Kind::of(l) == Kind::Legitimate)
            .map(|(_, t)| t.stopped)
            .sum();
        assert_eq!(rules.iter().map(|r| r.sends).sum::<u64>(), stopped);
        let text = r.render();
        assert!(
            text.contains("legitimate stopped by:   2 rules (below)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "legitimate sends stopped, by rule (3 of 2000 sends labelled legitimate…, 0.15%):\n  \
                 blocks (adaptive unconfirmed region)         2    0.10%\n  \
                 limit prefix                                 1    0.05%\n"
            ),
            "{text}"
        );

        let mut clean = Report::new("USD".into(), vec![], 1);
        clean.record_send(send(Some("legitimate"), 0.0, None, None));
        assert!(clean.legit_stopped_by_rule().is_empty());
        assert!(
            clean
                .render()
                .contains("legitimate delivered:    100.00% (1 of 1 sends labelled legitimate…)\nlegitimate stopped by:   no rule\n"),
            "{}",
            clean.render()
        );
    }

    #[test]
    fn blocked_keys_count_whose_sends_they_stopped_legitimate_first() {
        let mut r = Report::new("USD".into(), vec![], 1);
        let span = |since: Millis, hours: u64, offence| Span {
            since,
            until: since + hours * 60 * MINUTE,
            offence,
        };
        fn under<'a>(key: &'a str, rule: &'a str, span: Option<Span>) -> Under<'a> {
            Under {
                key,
                rule,
                span,
                number_len: 13,
            }
        }
        let surge = "adaptive:surge:prefix:8";
        // The send that trips the block counts, then those it stops.
        assert!(r.span_wanted("prefix:8=+44740012", T0, true));
        r.record_send(send(
            Some("attack: UK blocks"),
            0.0,
            Some(("adaptive", surge)),
            Some(under("prefix:8=+44740012", surge, Some(span(T0, 12, 1)))),
        ));
        assert!(!r.span_wanted("prefix:8=+44740012", T0 + MINUTE, false));
        for m in 1..=5 {
            r.record_send(send(
                Some("attack: UK blocks"),
                m as f64,
                Some(("blocks", surge)),
                Some(under("prefix:8=+44740012", surge, None)),
            ));
        }
        // Blocked again after the first block ended: escalated.
        let again = T0 + 13 * 60 * MINUTE;
        assert!(r.span_wanted("prefix:8=+44740012", again, false));
        r.record_send(send(
            Some("legitimate"),
            13.0 * 60.0,
            Some(("blocks", surge)),
            Some(under("prefix:8=+44740012", surge, Some(span(again, 24, 2)))),
        ));
        // A number's own block, and a prefix as long as the number: masked.
        let number = "limit:number";
        r.record_send(send(
            None,
            2.0,
            Some(("blocks", number)),
            Some(under("to=+998993941234", number, Some(span(T0, 1, 1)))),
        ));
        r.record_send(send(
            Some("legitimate: NAT"),
            3.0,
            Some(("blocks", "manual")),
            Some(under("prefix:12=+998993941234", "manual", None)),
        ));

        let ranked: Vec<(&str, u64, u64, u64)> = r
            .blocked_keys_ranked()
            .iter()
            .map(|k| {
                (
                    k.key.as_str(),
                    k.sends.legitimate,
                    k.sends.attack,
                    k.sends.other,
                )
            })
            .collect();
        assert_eq!(
            ranked,
            [
                ("prefix:8=+44740012", 1, 6, 0),
                ("prefix:12=+99899394****", 1, 0, 0),
                ("to=+99899394****", 0, 0, 1),
            ]
        );
        let uk = &r.blocked_keys[0];
        assert_eq!(uk.rule, surge);
        assert_eq!(uk.spans, [span(T0, 12, 1), span(again, 24, 2)]);
        assert_eq!(uk.blocked_for(), 36 * 60 * MINUTE);
        assert_eq!(uk.stopped(), 7);

        let text = r.render();
        for line in [
            "keys blocked during the replay (3; stopped sends: the one that tripped the block and those it stopped):",
            "  key                      set by                     blocked for             legitimate   attack    other",
            "  prefix:8=+44740012       adaptive (surge prefix:8)  12h + 1day (offence 2)           1        6        0",
            "  prefix:12=+99899394****  set by hand                ?                                1        0        0",
            "  to=+99899394****         limit number               1h                               0        0        1",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line:?} in\n{text}");
        }
        assert!(!text.contains("+998993941234"), "{text}");

        // At most 20 keys by name, then a count of the rest.
        for i in 0..25 {
            let key = format!("client_ip=203.0.113.{i}");
            r.record_send(send(
                Some("attack: one address"),
                1.0,
                Some(("blocks", "adaptive:distinct:client_ip")),
                Some(under(&key, "adaptive:distinct:client_ip", None)),
            ));
        }
        assert_eq!(r.blocked_keys.len(), 28);
        let text = r.render();
        let listed = text
            .lines()
            .skip_while(|l| !l.starts_with("keys blocked"))
            .skip(2)
            .take_while(|l| l.starts_with("  "))
            .count();
        assert_eq!(listed, 21, "{text}");
        assert!(
            text.contains(
                "  ... and 8 more keys (0 legitimate, 7 attack, 1 other sends stopped)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn sends_stopped_without_a_block_are_counted_apart_from_the_keys() {
        let mut r = Report::new("USD".into(), vec![], 1);
        let alone = ("adaptive", "adaptive:alert:prefix:7");
        r.record_send(send(Some("attack: prefix sprayer"), 1.0, Some(alone), None));
        r.record_send(send(Some("attack: prefix sprayer"), 2.0, Some(alone), None));
        r.record_send(send(Some("legitimate: sign-ups"), 3.0, Some(alone), None));
        // A send the number rules stopped has no key either: not counted.
        r.record_send(send(
            Some("attack: blocked country"),
            4.0,
            Some(("number", "geo")),
            None,
        ));
        assert_eq!(
            r.stopped_without_block,
            ByKind {
                legitimate: 1,
                attack: 2,
                other: 0
            }
        );
        assert!(r.blocked_keys.is_empty());
        let text = r.render();
        let line = "sends the adaptive stage stopped without blocking a key (old evidence in a range never confirmed, or a product's new numbers in a region it pumps: the send alone): 1 legitimate, 2 attack, 0 other\n";
        assert!(text.contains(line), "{line:?} in\n{text}");
    }

    #[test]
    fn keys_show_no_more_of_a_number_than_the_masked_number() {
        assert_eq!(mask_key("prefix:8=+99899394", 13), "prefix:8=+99899394");
        assert_eq!(mask_key("prefix:7=+1212555", 12), "prefix:7=+1212555");
        assert_eq!(
            mask_key("prefix:11=+12125550123", 12),
            "prefix:11=+1212555****"
        );
        assert_eq!(mask_key("to=+12125550123", 12), "to=+1212555****");
        assert_eq!(mask_key("to=+1212555****", 12), "to=+1212555****");
        assert_eq!(
            mask_key("client_ip+to=203.0.113.7|+12125550123", 12),
            "client_ip+to=203.0.113.7|+1212555****"
        );
        assert_eq!(mask_key("region=UZ", 13), "region=UZ");
        assert_eq!(mask_key("user=a|b", 13), "user=a|b");
        assert_eq!(mask_key("no key", 13), "no key");
    }

    #[test]
    fn the_decisions_carry_the_rule_s_detail() {
        let loaded = Loaded::from_records(
            "t",
            vec![super::super::Record::new(
                T0,
                "+447400123456",
                crate::twilio::routes::Product::Messaging,
            )],
        );
        let outcome = Outcome {
            action: "shadow",
            stage: Some("blocks"),
            rule: Some("adaptive:surge:prefix:8".into()),
            detail: Some("prefix:8=+44740012".into()),
            to: Some("+44740012****".into()),
            ..Outcome::default()
        };
        let mut out = Vec::new();
        write_decisions(&mut out, &loaded, &[outcome]).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["detail"], "prefix:8=+44740012");
        assert_eq!(line["rule"], "adaptive:surge:prefix:8");
    }
}
