//! Reconciliation: the sends that did not pass the guard.
//!
//! A leaked auth token, or one service of the app that still talks to
//! api.twilio.com directly, lets pumping go around the guard without a
//! trace in it. Every `reconcile.interval` the guard lists the account's
//! Messages and Calls created since its last look (Twilio's date filters
//! are whole days, so the creation time is filtered here), keeps the
//! outbound ones made through the API (`direction` = `outbound-api`) and
//! compares their sids with the sids of the sends it forwarded
//! ([`ForwardedSids`]). What it never saw is reported: a metric, an alert,
//! a log line, `GET /api/reconcile` and a dashboard panel.
//!
//! A look covers `[from, to)`: `to` is `settle` before now, so a send in
//! flight through the guard (created at Twilio, its sid not yet recorded)
//! is never judged; `from` is where the last look ended, less `settle`
//! again for sends the lists show late. A sid reported once is recorded
//! as known, so the overlap never reports it twice. The first look starts
//! when the guard started: the account's history is not reported.
//!
//! With Redis one replica lists at a time (a lock it renews while it
//! lives) and the last look's end is shared, so the next holder goes on
//! from there. While Redis does not answer (or this replica's sids have
//! not all reached it), the look is skipped rather than report sends that
//! other replicas forwarded. Verify verifications are not reconciled:
//! nothing in Twilio's contract lists them with the account's Messages.
//!
//! The credential comes from the environment only (`reconcile.token_env`,
//! or an API key's `key_env` and `secret_env`) and travels only to
//! `upstream.api`; it never reaches a log, a metric or the admin API.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::Method;
use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::base::clock::{ms, Clock, Millis, SystemClock};
use crate::config::{self, Money, ReconcileCredential};
use crate::net::upstream::{self, Target, Upstream};
use crate::store::reconcile::ForwardedSids;
use crate::store::redis::RedisLink;
use crate::telemetry::Watch;
use crate::twilio::routes;

use super::App;

/// Largest list page read.
const MAX_PAGE_BYTES: usize = 32 << 20;
/// Most pages read per list and look.
const MAX_PAGES: usize = 10_000;
/// Prefixes named in a report.
const TOP_PREFIXES: usize = 5;
/// Unseen sids named in a report (all are counted).
const EXAMPLES: usize = 20;

/// Wall-clock milliseconds: Twilio's dates are wall-clock, whatever clock
/// judges the sends.
fn wall_ms() -> Millis {
    SystemClock.now()
}

fn rfc3339(t: Millis) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(t)).to_string()
}

/// `YYYY-MM-DD` (GMT) of `t`, as Twilio's date filters take it.
fn day(t: Millis) -> String {
    let secs = i64::try_from(t / 1000).unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map(|d| d.date().to_string())
        .unwrap_or_else(|_| "1970-01-01".into())
}

/// Milliseconds of an RFC 2822 date (`Thu, 24 Aug 2023 05:01:45 +0000`).
fn parse_rfc2822(s: &str) -> Option<Millis> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc2822).ok()?;
    u64::try_from(t.unix_timestamp()).ok().map(|s| s * 1000)
}

/// What one list's entries hold that a look reads.
#[derive(Debug, Deserialize)]
struct Listed {
    sid: Option<String>,
    to: Option<String>,
    direction: Option<String>,
    date_created: Option<String>,
    price: Option<String>,
    price_unit: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    messages: Option<Vec<Listed>>,
    #[serde(default)]
    calls: Option<Vec<Listed>>,
    next_page_uri: Option<String>,
}

/// A send Twilio lists that the look judges.
#[derive(Debug, Clone)]
struct Candidate {
    sid: String,
    kind: Kind,
    to: String,
    price: Option<(Money, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Call,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Call => "call",
        }
    }
    fn list(self) -> &'static str {
        match self {
            Kind::Message => "Messages.json",
            Kind::Call => "Calls.json",
        }
    }
    fn filter(self) -> &'static str {
        // `DateSent>=` and `StartTime>=`, encoded.
        match self {
            Kind::Message => "DateSent%3E",
            Kind::Call => "StartTime%3E",
        }
    }
}

/// One list's figures in a look.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    /// Resources read from the list (every direction, every date).
    pub listed: u64,
    /// Outbound sends made through the API within the look's window.
    pub judged: u64,
    /// Of those, the ones no replica forwarded.
    pub unseen: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrefixCount {
    pub prefix: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cost {
    pub currency: String,
    pub amount: String,
}

/// One look, as the admin API shows it and Redis keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Look {
    /// When the look was made.
    pub at: String,
    /// The window of creation times it judged: `[from, to)`.
    pub from: String,
    pub to: String,
    pub from_ms: Millis,
    pub to_ms: Millis,
    /// The replica that listed.
    pub by: String,
    pub messages: Counts,
    pub calls: Counts,
    /// Messages and calls no replica forwarded.
    pub unseen: u64,
    /// Their destinations' prefixes, most first.
    pub prefixes: Vec<PrefixCount>,
    /// What Twilio charged for them (its `price`, as a positive amount),
    /// per currency; sends not yet priced are left out.
    pub cost: Vec<Cost>,
    pub unpriced: u64,
    /// A few of their sids.
    pub examples: Vec<String>,
    /// What makes the look less than certain, if anything.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// What is shared in Redis between looks.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Shared {
    /// Where the next look starts.
    next_from: Millis,
    last: Option<Look>,
}

/// The state `GET /api/reconcile` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// The last attempt: `clean`, `unseen`, `error`, `store_down`,
    /// `other_replica` or `waiting` (the first window has not settled).
    pub last_result: Option<&'static str>,
    pub last_attempt: Option<String>,
    pub last_error: Option<String>,
    /// The last look made (by this replica, or with Redis by any).
    pub last_look: Option<Look>,
    /// Unseen sends reported by this replica since it started.
    pub unseen_messages: u64,
    pub unseen_calls: u64,
}

/// Why a look was not made, or did not finish.
enum Skip {
    /// Another replica holds the lock.
    OtherReplica,
    /// Redis does not answer: no look rather than false reports.
    StoreDown(String),
    /// The window has not settled yet.
    Waiting,
    /// Twilio's list could not be read.
    Error(String),
}

pub struct Reconciler {
    pub account: String,
    credential: ReconcileCredential,
    interval: Duration,
    settle: Millis,
    page_size: u32,
    prefix_digits: u8,
    /// Each sid is kept this long: two intervals, twice the settle time
    /// and a minute.
    keep: Millis,
    pub sids: ForwardedSids,
    /// This replica (random per process), the lock's value.
    pub id: String,
    started: Millis,
    /// Where the next look starts, without Redis (or before Redis told);
    /// `None` before the first look, which starts at `started`.
    next_from: Mutex<Option<Millis>>,
    status: Mutex<Status>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("account", &self.account)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    /// Reads the credential from the environment (an error names the
    /// missing variable); with `link`, the sids are shared through Redis.
    /// Call inside a Tokio runtime.
    pub fn new(
        cfg: &config::Reconcile,
        prefix_digits: u8,
        link: Option<RedisLink>,
    ) -> Result<Reconciler, String> {
        let credential = cfg.credential()?;
        let interval = ms(cfg.interval);
        let settle = ms(cfg.settle);
        let keep = 2 * interval + 2 * settle + 60_000;
        Ok(Reconciler {
            account: cfg.account.clone(),
            credential,
            interval: cfg.interval,
            settle,
            page_size: cfg.page_size,
            prefix_digits,
            keep,
            sids: ForwardedSids::new(cfg.capacity, keep, link),
            id: format!("{:016x}", rand::random::<u64>()),
            started: wall_ms(),
            next_from: Mutex::new(None),
            status: Mutex::default(),
        })
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Records the sid of a send the guard forwarded and Twilio accepted.
    pub fn forwarded(&self, sid: &str) {
        self.sids.record(sid, wall_ms());
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Looks every interval until `stop`; lets the lock go when stopped.
    pub async fn run(self: Arc<Self>, app: Arc<App>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: the first look comes an interval
        // after the start.
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            tokio::select! {
                _ = self.look_once(&app.upstream, &app.watch) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        self.sids.release(&self.id).await;
    }

    /// One turn: a look if it is this replica's, with its result counted.
    /// Returns the result's name.
    pub async fn look_once(&self, upstream: &Upstream, watch: &Watch) -> &'static str {
        let now = wall_ms();
        let result = match self.look(upstream, watch, now).await {
            Ok(look) => {
                let result = if look.unseen > 0 { "unseen" } else { "clean" };
                self.set_status(|s| {
                    s.unseen_messages += look.messages.unseen;
                    s.unseen_calls += look.calls.unseen;
                    s.last_error = None;
                    s.last_look = Some(look);
                });
                result
            }
            Err(Skip::OtherReplica) => "other_replica",
            Err(Skip::Waiting) => "waiting",
            Err(Skip::StoreDown(e)) => {
                tracing::warn!(error = %e, "reconcile: look skipped, the shared store does not answer (the sids other replicas forwarded are unknown)");
                self.set_status(|s| s.last_error = Some(e));
                "store_down"
            }
            Err(Skip::Error(e)) => {
                tracing::warn!(account = %self.account, error = %e, "reconcile: Twilio's lists could not be read");
                self.set_status(|s| s.last_error = Some(e));
                "error"
            }
        };
        if result != "waiting" {
            watch.metrics.reconcile_look(result);
        }
        self.set_status(|s| {
            s.last_result = Some(result);
            s.last_attempt = Some(rfc3339(now));
        });
        result
    }

    async fn look(&self, upstream: &Upstream, watch: &Watch, now: Millis) -> Result<Look, Skip> {
        let (mine, shared) = self
            .sids
            .take_turn(&self.id, 3 * ms(self.interval))
            .await
            .map_err(|e| Skip::StoreDown(e.to_string()))?;
        let shared: Option<Shared> = shared.and_then(|s| serde_json::from_str(&s).ok());
        if !mine {
            // The holder's last look, for this replica's admin API.
            if let Some(last) = shared.and_then(|s| s.last) {
                self.set_status(|s| s.last_look = Some(last));
            }
            return Err(Skip::OtherReplica);
        }
        if !self.sids.flushed() {
            return Err(Skip::StoreDown(
                "forwarded sids of this replica still wait for redis".into(),
            ));
        }
        let mut notes = Vec::new();
        let last_end = match &shared {
            Some(s) => Some(s.next_from),
            None => *self.next_from.lock().unwrap_or_else(|p| p.into_inner()),
        };
        // The first look starts at the start; later ones overlap the last.
        let mut from = match last_end {
            Some(end) => end.saturating_sub(self.settle),
            None => self.started,
        };
        // Sids are kept only so long: older sends cannot be judged.
        let earliest = now.saturating_sub(self.keep - 60_000);
        if from < earliest {
            notes.push(format!(
                "sends created from {} to {} were not reconciled: no look was made for longer than the guard keeps forwarded sids",
                rfc3339(from),
                rfc3339(earliest)
            ));
            from = earliest;
        }
        let to = now.saturating_sub(self.settle);
        if to <= from {
            return Err(Skip::Waiting);
        }
        let mut candidates = Vec::new();
        let mut counts = [Counts::default(), Counts::default()];
        for (i, kind) in [Kind::Message, Kind::Call].into_iter().enumerate() {
            self.list(upstream, kind, from, to, &mut counts[i], &mut candidates)
                .await
                .map_err(Skip::Error)?;
        }
        let sids: Vec<String> = candidates.iter().map(|c| c.sid.clone()).collect();
        let known = self
            .sids
            .known(&sids)
            .await
            .map_err(|e| Skip::StoreDown(e.to_string()))?;
        let unseen: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| !known.contains(&c.sid))
            .collect();
        if let Some(t) = self.sids.newest_evicted() {
            if t >= from && !self.sids.shared() {
                notes.push(format!(
                    "the guard's memory of forwarded sids overflowed ({} evicted): some sends reported here may have passed the guard; raise reconcile.capacity",
                    self.sids.stats.evicted.load(std::sync::atomic::Ordering::Relaxed)
                ));
            }
        }
        // Reported once: the overlap with the next look does not repeat it.
        for c in &unseen {
            self.sids.record(&c.sid, now);
        }
        for c in &unseen {
            match c.kind {
                Kind::Message => counts[0].unseen += 1,
                Kind::Call => counts[1].unseen += 1,
            }
        }
        let look = self.report(from, to, counts, now, &unseen, notes);
        watch
            .metrics
            .reconcile_unseen("message", look.messages.unseen);
        watch.metrics.reconcile_unseen("call", look.calls.unseen);
        let shared = Shared {
            next_from: to,
            last: Some(look.clone()),
        };
        if let Ok(json) = serde_json::to_string(&shared) {
            // Kept long enough for the next holder; a failure here only
            // makes the next look start from its own memory.
            let ttl = Duration::from_millis(self.keep.max(86_400_000));
            if let Err(e) = self.sids.save_state(&json, ttl).await {
                tracing::debug!(error = %e, "reconcile: the last look was not saved");
            }
        }
        *self.next_from.lock().unwrap_or_else(|p| p.into_inner()) = Some(to);
        self.tell(&look, watch, now);
        Ok(look)
    }

    /// Reads one list from `from`'s day on, every page, and keeps the
    /// outbound API sends created in `[from, to)`.
    async fn list(
        &self,
        upstream: &Upstream,
        kind: Kind,
        from: Millis,
        to: Millis,
        counts: &mut Counts,
        out: &mut Vec<Candidate>,
    ) -> Result<(), String> {
        let base = format!("/2010-04-01/Accounts/{}/{}", self.account, kind.list());
        let mut next = Some(format!(
            "{base}?{}={}&PageSize={}",
            kind.filter(),
            day(from),
            self.page_size
        ));
        let mut pages = 0;
        while let Some(uri) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(format!("{}: more than {MAX_PAGES} pages", kind.list()));
            }
            let page = self
                .page(upstream, &uri)
                .await
                .map_err(|e| format!("{}: {e}", kind.list()))?;
            let entries = match kind {
                Kind::Message => page.messages,
                Kind::Call => page.calls,
            }
            .ok_or_else(|| format!("{}: the answer has no {} list", kind.list(), kind.as_str()))?;
            let mut older = 0;
            let n = entries.len();
            for e in entries {
                counts.listed += 1;
                let Some(created) = e.date_created.as_deref().and_then(parse_rfc2822) else {
                    continue;
                };
                if created + 3_600_000 < from {
                    older += 1;
                }
                if created < from || created >= to {
                    continue;
                }
                if e.direction.as_deref() != Some("outbound-api") {
                    continue;
                }
                let Some(sid) = e.sid.filter(|s| !s.is_empty()) else {
                    continue;
                };
                counts.judged += 1;
                let price = e.price.as_deref().and_then(|p| {
                    let amount: Money = p.trim().trim_start_matches('-').parse().ok()?;
                    let unit = e
                        .price_unit
                        .as_deref()
                        .unwrap_or("USD")
                        .to_ascii_uppercase();
                    Some((amount, unit))
                });
                out.push(Candidate {
                    sid,
                    kind,
                    to: e.to.unwrap_or_default(),
                    price,
                });
            }
            // Lists are newest first: a page wholly an hour older than the
            // window ends the list.
            if n > 0 && older == n {
                break;
            }
            next = match page.next_page_uri {
                // Only the same list of the same account, on upstream.api.
                Some(u) if u.starts_with(&format!("{base}?")) => Some(u),
                Some(_) => return Err(format!("{}: unexpected next_page_uri", kind.list())),
                None => None,
            };
        }
        Ok(())
    }

    async fn page(&self, upstream: &Upstream, uri: &str) -> Result<Page, String> {
        let pq: PathAndQuery = uri
            .parse()
            .map_err(|_| "a page address is not a path".to_string())?;
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_str(&self.credential.basic())
            .map_err(|_| "the credential is not a header value".to_string())?;
        auth.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, auth);
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static("smsguard-reconcile"),
        );
        let resp = upstream
            .send(
                Target::Configured(routes::Upstream::Api),
                Method::GET,
                Some(&pq),
                headers,
                upstream::full(Bytes::new()),
            )
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_PAGE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the list failed: {e}"))?
            .to_bytes();
        if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
            return Err(format!(
                "Twilio refused the credential (status {status}): check the variables named in [reconcile]"
            ));
        }
        if !status.is_success() {
            return Err(format!("Twilio answered status {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("the list is not Twilio's JSON: {e}"))
    }

    fn report(
        &self,
        from: Millis,
        to: Millis,
        counts: [Counts; 2],
        now: Millis,
        unseen: &[&Candidate],
        notes: Vec<String>,
    ) -> Look {
        let mut prefixes: HashMap<String, u64> = HashMap::new();
        let mut cost: BTreeMap<String, u64> = BTreeMap::new();
        let mut unpriced = 0;
        for c in unseen {
            *prefixes
                .entry(prefix_of(&c.to, self.prefix_digits))
                .or_default() += 1;
            match &c.price {
                Some((m, unit)) => *cost.entry(unit.clone()).or_default() += m.0,
                None => unpriced += 1,
            }
        }
        let mut prefixes: Vec<PrefixCount> = prefixes
            .into_iter()
            .map(|(prefix, count)| PrefixCount { prefix, count })
            .collect();
        prefixes.sort_by(|a, b| b.count.cmp(&a.count).then(a.prefix.cmp(&b.prefix)));
        prefixes.truncate(TOP_PREFIXES);
        let [messages, calls] = counts;
        Look {
            at: rfc3339(now),
            from: rfc3339(from),
            to: rfc3339(to),
            from_ms: from,
            to_ms: to,
            by: self.id.clone(),
            unseen: messages.unseen + calls.unseen,
            messages,
            calls,
            prefixes,
            cost: cost
                .into_iter()
                .map(|(currency, m)| Cost {
                    currency,
                    amount: Money(m).to_string(),
                })
                .collect(),
            unpriced,
            examples: unseen
                .iter()
                .take(EXAMPLES)
                .map(|c| c.sid.clone())
                .collect(),
            notes,
        }
    }

    /// The log line and, when sends went around the guard, the alert.
    fn tell(&self, look: &Look, watch: &Watch, now: Millis) {
        if look.unseen == 0 {
            tracing::info!(
                account = %self.account,
                from = %look.from,
                to = %look.to,
                messages = look.messages.judged,
                calls = look.calls.judged,
                "reconcile: every send Twilio lists passed the guard"
            );
            return;
        }
        let text = alert_text(&self.account, look);
        tracing::warn!(
            account = %self.account,
            from = %look.from,
            to = %look.to,
            messages = look.messages.unseen,
            calls = look.calls.unseen,
            prefixes = %prefix_list(look),
            cost = %cost_list(look),
            "reconcile: sends went around the guard"
        );
        if let Some(alerts) = &watch.alerts {
            alerts.reconcile(
                format!("reconcile:{}:{}", self.account, look.to_ms),
                text,
                now,
            );
        }
    }
}

fn prefix_list(look: &Look) -> String {
    look.prefixes
        .iter()
        .map(|p| format!("{} ({})", p.prefix, p.count))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cost_list(look: &Look) -> String {
    if look.cost.is_empty() {
        return "not priced yet".into();
    }
    look.cost
        .iter()
        .map(|c| format!("{} {}", c.amount, c.currency))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// What a person reads: how many, since when, where to, what it cost.
fn alert_text(account: &str, look: &Look) -> String {
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut what = Vec::new();
    if look.messages.unseen > 0 {
        what.push(plural(look.messages.unseen, "message", "messages"));
    }
    if look.calls.unseen > 0 {
        what.push(plural(look.calls.unseen, "call", "calls"));
    }
    let mut cost = cost_list(look);
    if look.unpriced > 0 && !look.cost.is_empty() {
        cost.push_str(&format!(" so far ({} not priced yet)", look.unpriced));
    }
    let mut text = format!(
        ":rotating_light: smsguard: {} went around the guard on account {account} between {} and {} ({}): Twilio sent them for an API request that no smsguard replica forwarded. To: {}. Cost: {}. Check for a leaked auth token or a service that talks to api.twilio.com directly.",
        plural(look.unseen, "send", "sends"),
        look.from,
        look.to,
        what.join(" and "),
        prefix_list(look),
        cost,
    );
    for n in &look.notes {
        text.push_str(&format!(" Note: {n}."));
    }
    text
}

/// The prefix a destination is counted under: `+` and the first `digits`
/// digits of a number (after a channel such as `whatsapp:`), or the scheme
/// of an address that is not a number (`client:`, `sip:`).
fn prefix_of(to: &str, digits: u8) -> String {
    let t = to.trim();
    let number = match t.split_once(':') {
        Some((scheme, rest)) if rest.trim_start().starts_with('+') => {
            let _ = scheme;
            rest.trim()
        }
        Some((scheme, _)) => return format!("{}:", scheme.to_ascii_lowercase()),
        None => t,
    };
    let d: String = number
        .chars()
        .filter(char::is_ascii_digit)
        .take(usize::from(digits))
        .collect();
    if d.is_empty() {
        return "unknown".into();
    }
    format!("+{d}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_read_and_written_as_twilio_writes_them() {
        let t = parse_rfc2822("Thu, 24 Aug 2023 05:01:45 +0000").unwrap();
        assert_eq!(t, 1_692_853_305_000);
        assert_eq!(day(t), "2023-08-24");
        assert_eq!(parse_rfc2822("yesterday"), None);
    }

    #[test]
    fn prefixes_keep_the_number_and_name_other_addresses() {
        assert_eq!(prefix_of("+998993941234", 8), "+99899394");
        assert_eq!(prefix_of("whatsapp:+998993941234", 4), "+9989");
        assert_eq!(prefix_of("client:alice", 8), "client:");
        assert_eq!(prefix_of("", 8), "unknown");
    }

    #[test]
    fn an_alert_says_how_many_where_to_and_what_it_cost() {
        let look = Look {
            at: "2024-01-01T10:05:00Z".into(),
            from: "2024-01-01T10:00:00Z".into(),
            to: "2024-01-01T10:04:00Z".into(),
            from_ms: 0,
            to_ms: 1,
            by: "r".into(),
            messages: Counts {
                listed: 20,
                judged: 15,
                unseen: 12,
            },
            calls: Counts {
                listed: 1,
                judged: 1,
                unseen: 1,
            },
            unseen: 13,
            prefixes: vec![PrefixCount {
                prefix: "+99899394".into(),
                count: 12,
            }],
            cost: vec![Cost {
                currency: "USD".into(),
                amount: "0.0948".into(),
            }],
            unpriced: 0,
            examples: vec![],
            notes: vec![],
        };
        let t = alert_text("AC1", &look);
        assert!(t.contains("13 sends went around the guard"), "{t}");
        assert!(t.contains("12 messages and 1 call"), "{t}");
        assert!(t.contains("+99899394 (12)"), "{t}");
        assert!(t.contains("0.0948 USD"), "{t}");
        assert!(t.contains("2024-01-01T10:00:00Z"), "{t}");
    }
}
