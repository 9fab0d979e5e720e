//! The replay engine: drives records through the real guard (the same
//! [`Guard::start`] as `serve`) in front of the built-in fake Twilio, on a
//! manual clock moved to each event's time, and tallies what happened.
//!
//! Events are the sends, in time order (stable), and the confirmations of
//! the sends the guard forwarded, replayed at `confirmed_at` as the real
//! calls an application makes (Messaging Feedback, a Verify check, the
//! admin API's confirm for calls). One request at a time on one kept-alive
//! HTTP/1.1 connection: state (counters, blocks, spend) then evolves
//! exactly as the records' order says, and the run is reproducible.
//!
//! It must never judge a send itself: every decision comes from the guard,
//! read back through its decision sink.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::input::Loaded;
use super::report::{Outcome, Report, Span, StoppedConfirmed, Under, Upstream};
use super::Record;
use crate::base::clock::{ManualClock, Millis};
use crate::config::{Admin, Config, Prices};
use crate::guard::Guard;
use crate::net::server::ConnInfo;
use crate::phone::{self, Region};
use crate::pipeline::App;
use crate::policy::Policy;
use crate::telemetry::audit::mask_number;
use crate::telemetry::DecisionEvent;
use crate::twilio::fake::FakeTwilio;
use crate::twilio::routes::Product;

/// Account used when a record names none.
pub const DEFAULT_ACCOUNT: &str = "AC5ef8732a3c49700934481addd5ce1659";
/// The Verify service replayed verifications go to.
pub const SERVICE: &str = "VA3e1f2b5c7d9a0b4c6e8f1a3b5c7d9e0f";
/// Sender for records without `from`.
const DEFAULT_FROM: &str = "+15017122661";
/// The code a replayed Verify check submits (the fake approves any).
const CODE: &str = "123456";

/// A replay's figures and each record's outcome.
#[derive(Debug)]
pub struct Replayed {
    pub report: Report,
    /// One per [`Loaded::entries`], same order.
    pub outcomes: Vec<Outcome>,
    /// When the last event replayed (a send or a confirmation) happened on
    /// the simulated clock; `None` when there was none.
    pub last_event: Option<Millis>,
}

/// What the replay changes in the operator's policy, and why: printed in
/// the report's header.
pub fn prepare(config: &mut Config, upstream: &str) -> Vec<String> {
    let mut notes = Vec::new();
    config.listen.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.listen.tls = false;
    config.listen.proxy = false;
    // Only the fake Twilio is ever reached.
    config.upstream.api = upstream.to_string();
    config.upstream.verify = upstream.to_string();
    config.upstream.resolve.clear();
    config.upstream.extra_ca = None;
    // The day is simulated: pacing fakes like real answers would only make
    // the replay slower in real time.
    config.shadow.timing = false;
    if let Some(b) = config.backoff.as_mut() {
        if b.hold_up_to.take().is_some() {
            notes.push(
                "backoff.hold_up_to is off: a held send would wait in real time; such sends count as stopped by backoff"
                    .to_string(),
            );
        }
    }
    // The admin listener takes voice confirmations; on loopback, port 0.
    config.admin = Some(Admin {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        token_env: config.admin.as_ref().map_or_else(
            || "SMSGUARD_ADMIN_TOKEN".to_string(),
            |a| a.token_env.clone(),
        ),
        hosts: Vec::new(),
    });
    if config.audit.take().is_some() {
        notes.push("[audit] is off: a replay must not write to the live audit log".into());
    }
    if config.alerts.take().is_some() {
        notes.push("[alerts] is off: a replay sends no webhooks".into());
    }
    if config.reconcile.take().is_some() {
        notes.push("[reconcile] is off: a replay never lists the live account's sends".into());
    }
    if config.store.shared() {
        config.store.redis = None;
        config.store.redis_cluster = None;
        notes.push(
            "[store] redis is off: a replay judges on its own memory and never touches the live shared state"
                .into(),
        );
    }
    notes
}

/// How the replayed application reaches the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// An in-memory pipe into the guard's request handler (the one its
    /// listener serves): no sockets, about twice as fast.
    #[default]
    Pipe,
    /// TCP to the guard's listener on 127.0.0.1, exactly as an application.
    Tcp,
}

/// Replays `loaded` in front of a fresh fake Twilio.
pub async fn replay(config: Config, loaded: &Loaded) -> Result<Replayed, String> {
    replay_then(config, loaded, None, |_, _| ())
        .await
        .map(|(replayed, ())| replayed)
}

/// Replays `loaded` in front of `fake` (tests inspect what reached it).
pub async fn replay_with(
    config: Config,
    loaded: &Loaded,
    fake: &FakeTwilio,
    transport: Transport,
) -> Result<Replayed, String> {
    drive(config, loaded, fake, transport, None, |_, _| ())
        .await
        .map(|(replayed, ())| replayed)
}

/// Replays `loaded` in front of a fresh fake Twilio, then calls `then`
/// with the guard's policy, in the state the replay left, and the moment
/// on the simulated clock to judge at: `until`, else just after the last
/// event replayed (`smsguard explain --after`). Confirmations due after
/// `until` are not replayed (the report's notes say how many); a send
/// after it is an error.
pub async fn replay_then<T>(
    config: Config,
    loaded: &Loaded,
    until: Option<Millis>,
    then: impl FnOnce(&Policy, Millis) -> T,
) -> Result<(Replayed, T), String> {
    let fake = FakeTwilio::start()
        .await
        .map_err(|e| format!("cannot start the fake Twilio: {e}"))?;
    // Only counted: a month of sends recorded whole would not fit in memory.
    fake.set_recording(false);
    let result = drive(config, loaded, &fake, Transport::default(), until, then).await;
    fake.shutdown();
    result
}

/// The one replay loop: the sends in time order and the confirmations of
/// those forwarded, then `then` on the state they left (see
/// [`replay_then`]).
async fn drive<T>(
    mut config: Config,
    loaded: &Loaded,
    fake: &FakeTwilio,
    transport: Transport,
    until: Option<Millis>,
    then: impl FnOnce(&Policy, Millis) -> T,
) -> Result<(Replayed, T), String> {
    let notes = prepare(&mut config, &fake.url());
    let prices = PriceTables::new(&config);
    let currency = config
        .budget
        .as_ref()
        .map_or_else(|| "USD".to_string(), |b| b.currency.clone());
    let mask = config.log.mask_numbers;
    let default_region = config.numbers.default_region;
    let token_env = config.admin.as_ref().map(|a| a.token_env.clone());

    // Sends in time order; the sort is stable, so equal times keep their
    // input order.
    let mut order: Vec<usize> = (0..loaded.entries.len())
        .filter(|&i| matches!(&loaded.entries[i].record, Ok(r) if r.judged()))
        .collect();
    order.sort_by_key(|&i| loaded.entries[i].record.as_ref().map_or(0, |r| r.at));
    let start = order
        .first()
        .and_then(|&i| loaded.entries[i].record.as_ref().ok())
        .map_or_else(
            || crate::base::clock::Clock::now(&crate::base::clock::SystemClock),
            |r| r.at,
        );
    let last_send = order
        .last()
        .and_then(|&i| loaded.entries[i].record.as_ref().ok())
        .map(|r| r.at);
    if let (Some(until), Some(last)) = (until, last_send) {
        if last > until {
            return Err(format!(
                "{} is before the last send, at {}",
                super::input::format_time(until),
                super::input::format_time(last)
            ));
        }
    }
    let clock = ManualClock::new(start);

    let guard = Guard::start(config, Arc::new(clock.clone())).await?;
    let decisions: Arc<Mutex<Option<Decided>>> = Arc::default();
    let sink = decisions.clone();
    let sink_set = guard
        .app()
        .set_decision_sink(Arc::new(move |e: &DecisionEvent| {
            if let Ok(mut slot) = sink.lock() {
                *slot = Some(Decided::from(e));
            }
        }));
    if !sink_set {
        guard.stop().await;
        return Err("the guard's decision sink is already taken".into());
    }

    let mut run = Run {
        loaded,
        outcomes: vec![Outcome::default(); loaded.entries.len()],
        report: Report::new(currency, notes, loaded.files.len()),
        prices,
        mask,
        calls: Calls::new(
            match transport {
                Transport::Pipe => Target::Pipe(guard.app().clone(), guard.addr()),
                Transport::Tcp => Target::Tcp(guard.addr()),
            },
            guard.admin_addr(),
            token_env,
        ),
        rules: HashMap::new(),
        keys: HashMap::new(),
        app: guard.app().clone(),
        default_region,
    };
    run.classify_unjudged();

    let started = Instant::now();
    // Confirmations due, earliest first: (time, sequence, entry); the
    // message sids they confirm, by entry.
    let mut due: BinaryHeap<Reverse<(Millis, usize, usize)>> = BinaryHeap::new();
    let mut sids: HashMap<usize, String> = HashMap::new();
    let mut seq = 0;
    let mut last_event = None;
    for &i in &order {
        let Ok(record) = &loaded.entries[i].record else {
            continue;
        };
        while let Some(Reverse((at, _, j))) = due.peek().copied() {
            if at > record.at {
                break;
            }
            due.pop();
            clock.set(at);
            run.confirm(j, sids.remove(&j)).await;
        }
        clock.set(record.at);
        last_event = Some(record.at);
        if let Ok(mut slot) = decisions.lock() {
            *slot = None;
        }
        let answer = run.calls.send(record).await;
        let decided = decisions.lock().ok().and_then(|mut s| s.take());
        if let Some(sid) = run.tally(i, record, answer, decided) {
            let at = record.confirmed_at.unwrap_or(record.at).max(record.at);
            due.push(Reverse((at, seq, i)));
            seq += 1;
            if !sid.is_empty() {
                sids.insert(i, sid);
            }
        }
    }
    while let Some(Reverse((at, _, j))) = due.pop() {
        if until.is_some_and(|u| at > u) {
            // Not happened yet at the moment asked for.
            let later = due.len() + 1;
            run.report.notes.push(format!(
                "{later} confirmation{} due after {} not replayed",
                if later == 1 { "" } else { "s" },
                super::input::format_time(until.unwrap_or(at))
            ));
            break;
        }
        clock.set(at);
        last_event = Some(at);
        run.confirm(j, sids.remove(&j)).await;
    }
    run.report.seconds = started.elapsed().as_secs_f64();

    // The moment after the replay, on the same clock and state.
    let after = until.unwrap_or_else(|| last_event.unwrap_or(start).saturating_add(1));
    clock.set(after);
    let value = then(&guard.app().policy(), after);

    run.calls.close();
    guard.stop().await;
    run.report.upstream = Upstream::count(&fake.tally());
    Ok((
        Replayed {
            report: run.report,
            outcomes: run.outcomes,
            last_event,
        },
        value,
    ))
}

/// What the engine keeps of a decision event.
#[derive(Debug)]
struct Decided {
    action: &'static str,
    stage: Option<&'static str>,
    rule: Option<String>,
    to: Option<String>,
    region: Option<String>,
    detail: Option<String>,
    /// Keys the decision blocked (its own verdict's first).
    blocked: Vec<String>,
    /// Rules in monitor mode that fired.
    monitored: usize,
}

impl From<&DecisionEvent> for Decided {
    fn from(e: &DecisionEvent) -> Self {
        Decided {
            action: e.action,
            stage: e.stage,
            rule: e.rule.clone(),
            to: e.to.clone(),
            region: e.region.clone(),
            detail: e.detail.clone(),
            blocked: e.blocked.clone(),
            monitored: e.would_block.len(),
        }
    }
}

impl Decided {
    /// The key a stopped send was stopped under, and whether its own
    /// rule just blocked it: the block the blocks stage met (its detail
    /// is the key), or the key the deciding limit or adaptive signal
    /// blocked as it tripped (its detail starts with that key; without
    /// monitored rules, every blocked key is the deciding verdict's).
    fn under(&self) -> Option<(&str, bool)> {
        let detail = self.detail.as_deref();
        match self.stage? {
            "blocks" => detail.map(|key| (key, false)),
            "limits" | "adaptive" => {
                let own = self.blocked.iter().find(|key| {
                    detail.is_some_and(|d| {
                        d.strip_prefix(key.as_str())
                            .is_some_and(|rest| rest.starts_with(':'))
                    })
                });
                let own = own.or(match (&self.blocked[..], self.monitored) {
                    ([only], 0) => Some(only),
                    _ => None,
                });
                own.map(|key| (key.as_str(), true))
            }
            _ => None,
        }
    }
}

/// The block a tripping verdict's detail tells of (`...; blocked for 12h
/// (offence 1)`), set at `at`.
fn tripped_span(detail: &str, at: Millis) -> Option<Span> {
    let (_, rest) = detail.rsplit_once("blocked for ")?;
    let (length, rest) = rest.split_once(" (offence ")?;
    let offence = rest.strip_suffix(')')?.parse().ok()?;
    let length = humantime::parse_duration(length).ok()?;
    Some(Span {
        since: at,
        until: at.saturating_add(length.as_millis() as Millis),
        offence,
    })
}

/// The guard's answer to a send.
type Answer = Result<(StatusCode, Bytes), String>;

/// The replay in progress.
struct Run<'a> {
    loaded: &'a Loaded,
    outcomes: Vec<Outcome>,
    report: Report,
    prices: PriceTables,
    mask: bool,
    calls: Calls,
    /// Rule names shared between outcomes instead of one string each.
    rules: HashMap<String, Arc<str>>,
    /// Blocked keys (the blocks stage's details), shared the same way.
    keys: HashMap<String, Arc<str>>,
    /// The guard, whose store holds the blocks the replay meets.
    app: Arc<App>,
    /// How the guard reads a number without `+` (to find a masked key).
    default_region: Option<Region>,
}

impl Run<'_> {
    /// Bad and skipped records: outcomes and counts, before any send.
    fn classify_unjudged(&mut self) {
        for (i, e) in self.loaded.entries.iter().enumerate() {
            match &e.record {
                Err(why) => {
                    self.outcomes[i].action = "bad";
                    let file = self.loaded.files[e.file].display().to_string();
                    self.report.bad(file, e.line, why);
                }
                Ok(r) if !r.judged() => {
                    self.outcomes[i] = Outcome {
                        action: "skipped",
                        to: Some(self.masked(&r.to)),
                        ..Outcome::default()
                    };
                    let direction = r.direction.as_deref().unwrap_or("-").to_ascii_lowercase();
                    *self.report.skipped.entry(direction).or_default() += 1;
                }
                Ok(_) => {}
            }
        }
    }

    fn masked(&self, to: &str) -> String {
        if self.mask {
            mask_number(to)
        } else {
            to.to_string()
        }
    }

    /// Counts one send; returns the message sid (empty for other products)
    /// when its confirmation is to be replayed.
    fn tally(
        &mut self,
        i: usize,
        r: &Record,
        answer: Answer,
        decided: Option<Decided>,
    ) -> Option<String> {
        let region = decided
            .as_ref()
            .and_then(|d| d.region.as_deref())
            .and_then(|r| r.parse::<Region>().ok());
        let (cost, from_record) = self.prices.cost(r, region);
        if r.client_ip.is_none() {
            self.report.without_client_ip += 1;
        }
        if r.zoneless {
            self.report.without_zone += 1;
        }
        let outcome = &mut self.outcomes[i];
        outcome.to = decided.as_ref().and_then(|d| d.to.clone());
        if outcome.to.is_none() {
            outcome.to = Some(if self.mask {
                mask_number(&r.to)
            } else {
                r.to.clone()
            });
        }
        let (status, body) = match answer {
            Ok(a) => a,
            Err(e) => {
                outcome.action = "error";
                self.report
                    .send_failures
                    .add(format!("line {}: {e}", r.line));
                return None;
            }
        };
        let (action, stage, rule) = match &decided {
            Some(d) => (d.action, d.stage, d.rule.as_deref()),
            // A send the guard passes unjudged (Verify email, sna).
            None => ("unjudged", None, None),
        };
        outcome.action = action;
        outcome.stage = stage;
        outcome.rule = rule.map(|rule| {
            self.rules
                .entry(rule.to_string())
                .or_insert_with(|| Arc::from(rule))
                .clone()
        });
        let forwarded = matches!(action, "allow" | "monitor" | "unjudged");
        outcome.forwarded = forwarded;
        outcome.detail = decided
            .as_ref()
            .and_then(|d| d.detail.as_deref())
            .map(|detail| {
                if stage != Some("blocks") {
                    return Arc::from(detail);
                }
                if let Some(key) = self.keys.get(detail) {
                    return key.clone();
                }
                let key: Arc<str> = Arc::from(detail);
                self.keys.insert(detail.to_string(), key.clone());
                key
            });
        let under = match &decided {
            Some(d) if !forwarded => d.under().map(|(key, tripped)| {
                let span = self
                    .report
                    .span_wanted(key, r.at, tripped)
                    .then(|| self.span(key, r, d, tripped))
                    .flatten();
                Under {
                    key,
                    rule: rule.unwrap_or("-"),
                    span,
                    number_len: d.to.as_deref().map_or(0, str::len),
                }
            }),
            _ => None,
        };
        self.report.record_send(super::report::Send {
            label: r.label.as_deref(),
            at: r.at,
            forwarded,
            monitor: action == "monitor",
            stage,
            rule,
            cost,
            cost_from_record: from_record,
            confirmed: r.confirmed_at.is_some(),
            under,
        });
        if forwarded && !status.is_success() {
            self.report
                .send_failures
                .add(format!("line {}: a forwarded send got {status}", r.line));
        }
        // Only a send its recipient confirmed has a confirmation to replay.
        r.confirmed_at?;
        if !forwarded {
            // The user never got the code: a false positive to look at.
            let file = self.loaded.files[self.loaded.entries[i].file]
                .display()
                .to_string();
            self.report.confirmed_stopped(StoppedConfirmed {
                file,
                line: r.line,
                label: r.label.clone(),
                to: mask_number(&r.to),
                stage: stage.unwrap_or("-"),
                rule: rule.unwrap_or("-").to_string(),
            });
            return None;
        }
        match r.product {
            Product::Messaging => match message_sid(&body) {
                Some(sid) => Some(sid),
                None => {
                    self.report.confirmation_failures.add(format!(
                        "line {}: the answer to the send carries no message sid",
                        r.line
                    ));
                    None
                }
            },
            _ => Some(String::new()),
        }
    }

    /// The block on `key` as the guard's store has it now (the record's
    /// time); for a block its rule just set and the store no longer has,
    /// as the rule's detail tells it.
    fn span(&self, key: &str, r: &Record, d: &Decided, tripped: bool) -> Option<Span> {
        // With masked numbers, a key on the number (`to=+4477009****`) is
        // looked up by the number the guard read.
        let masked =
            d.to.as_deref()
                .filter(|to| self.mask && to.contains('*') && key.contains(*to));
        let unmasked = masked.and_then(|to| {
            let e164 = phone::normalize(&r.to, self.default_region).ok()?.e164;
            Some(key.replace(to, &e164))
        });
        let entry = self
            .app
            .policy()
            .store()
            .block(unmasked.as_deref().unwrap_or(key), r.at);
        match entry {
            Some(b) => Some(Span {
                since: b.since,
                until: b.until,
                offence: b.offence,
            }),
            None if tripped => d.detail.as_deref().and_then(|t| tripped_span(t, r.at)),
            None => None,
        }
    }

    /// Replays the confirmation of entry `i`'s send.
    async fn confirm(&mut self, i: usize, sid: Option<String>) {
        let Ok(r) = &self.loaded.entries[i].record else {
            return;
        };
        self.report.confirmations += 1;
        match self.calls.confirm(r, sid.as_deref()).await {
            Ok(status) if status.is_success() => self.outcomes[i].confirmed = true,
            // The admin API takes confirmations only for [adaptive], their
            // one user: without it there is nothing to tell.
            Ok(StatusCode::CONFLICT) if r.product == Product::Voice => {
                self.report.confirmations -= 1;
                const NOTE: &str = "voice confirmations are not replayed: the policy has no [adaptive], which alone uses them";
                if !self.report.notes.iter().any(|n| n == NOTE) {
                    self.report.notes.push(NOTE.to_string());
                }
            }
            Ok(status) => self.report.confirmation_failures.add(format!(
                "line {}: {} confirmation answered {status}",
                r.line,
                r.product.as_str()
            )),
            Err(e) => self
                .report
                .confirmation_failures
                .add(format!("line {}: {e}", r.line)),
        }
    }
}

/// The `sid` of a Message JSON answer.
fn message_sid(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Sid {
        sid: String,
    }
    serde_json::from_slice::<Sid>(body).ok().map(|s| s.sid)
}

/// Prices when a record carries none: the policy's `[budget]` tables.
struct PriceTables {
    sms: Prices,
    mms: Prices,
    voice: Prices,
    verify: Prices,
}

impl PriceTables {
    fn new(config: &Config) -> PriceTables {
        let b = config.budget.as_ref();
        let sms = b.map(|b| b.prices.clone()).unwrap_or_default();
        let or = |p: Option<&Prices>| p.cloned().unwrap_or_else(|| sms.clone());
        PriceTables {
            mms: or(b.and_then(|b| b.mms_prices.as_ref())),
            voice: or(b.and_then(|b| b.voice_prices.as_ref())),
            verify: or(b.and_then(|b| b.verify_prices.as_ref())),
            sms,
        }
    }

    /// In millionths, and whether it is the record's own price.
    fn cost(&self, r: &Record, region: Option<Region>) -> (u64, bool) {
        if let Some(p) = r.price {
            return (p, true);
        }
        let cost = match r.product {
            Product::Messaging if r.num_media.unwrap_or(0) > 0 => self.mms.for_region(region).0,
            Product::Messaging => self
                .sms
                .for_region(region)
                .0
                .saturating_mul(u64::from(r.segments())),
            Product::Voice => self.voice.for_region(region).0,
            Product::Verify => self.verify.for_region(region).0,
        };
        (cost, false)
    }
}

/// The requests an application would make, over kept-alive connections
/// to the guard and its admin listener.
struct Calls {
    guard: Connection,
    admin: Option<Connection>,
    admin_token: Option<String>,
    /// `Basic base64(account:replay)` by account: the guard reads the
    /// account of a Verify send from it. No real credential is ever used.
    auth: HashMap<String, HeaderValue>,
    /// Messages sent so far: a record without a body gets a stand-in of
    /// its own, so that records of an export without bodies do not all
    /// read as one message sent to many numbers (a broadcast).
    sent: u64,
}

impl Calls {
    fn new(guard: Target, admin: Option<SocketAddr>, token_env: Option<String>) -> Calls {
        Calls {
            guard: Connection::new(guard),
            admin: admin.map(|a| Connection::new(Target::Tcp(a))),
            // The admin API wants its token when the operator's
            // environment sets one; it goes only to the loopback listener.
            admin_token: token_env
                .and_then(|name| std::env::var(name).ok())
                .filter(|t| !t.is_empty()),
            auth: HashMap::new(),
            sent: 0,
        }
    }

    fn close(&mut self) {
        self.guard.close();
        if let Some(a) = &mut self.admin {
            a.close();
        }
    }

    fn auth(&mut self, account: &str) -> HeaderValue {
        if let Some(v) = self.auth.get(account) {
            return v.clone();
        }
        let v = HeaderValue::from_str(&format!(
            "Basic {}",
            crate::base::base64(format!("{account}:replay").as_bytes())
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic QUM6cmVwbGF5"));
        self.auth.insert(account.to_string(), v.clone());
        v
    }

    fn form_request(
        &mut self,
        path: &str,
        account: &str,
        form: String,
        r: Option<&Record>,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut req = Request::post(path)
            .header(HOST, self.guard.host.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(AUTHORIZATION, self.auth(account));
        if let Some(r) = r {
            if let Some(ip) = r.client_ip {
                req = req.header(crate::pipeline::CLIENT_IP_HEADER, ip.to_string());
            }
            if let Some(u) = &r.user {
                req = req.header(crate::pipeline::USER_HEADER, u.as_str());
            }
        }
        req.body(Full::new(Bytes::from(form)))
            .map_err(|e| format!("cannot build the request: {e}"))
    }

    /// The send a record describes, as the application made it.
    async fn send(&mut self, r: &Record) -> Answer {
        let account = r.account.as_deref().unwrap_or(DEFAULT_ACCOUNT);
        let mut form = form_urlencoded::Serializer::new(String::with_capacity(128));
        form.append_pair("To", &r.to);
        let path = match r.product {
            Product::Messaging => {
                form.append_pair("From", r.from.as_deref().unwrap_or(DEFAULT_FROM));
                match &r.body {
                    Some(b) => form.append_pair("Body", b),
                    None => {
                        self.sent += 1;
                        form.append_pair("Body", &stand_in_body(r.num_segments, self.sent))
                    }
                };
                for _ in 0..r.num_media.unwrap_or(0).min(10) {
                    form.append_pair("MediaUrl", "https://example.com/replay.png");
                }
                format!("/2010-04-01/Accounts/{account}/Messages.json")
            }
            Product::Voice => {
                form.append_pair("From", r.from.as_deref().unwrap_or(DEFAULT_FROM));
                form.append_pair("Url", "https://example.com/replay.xml");
                format!("/2010-04-01/Accounts/{account}/Calls.json")
            }
            Product::Verify => {
                form.append_pair("Channel", r.channel.as_deref().unwrap_or("sms"));
                format!("/v2/Services/{SERVICE}/Verifications")
            }
        };
        let req = self.form_request(&path, account, form.finish(), Some(r))?;
        self.guard.send(req).await
    }

    /// The call that proves the recipient got the send.
    async fn confirm(&mut self, r: &Record, sid: Option<&str>) -> Result<StatusCode, String> {
        let account = r.account.as_deref().unwrap_or(DEFAULT_ACCOUNT);
        match r.product {
            Product::Messaging => {
                let sid = sid.ok_or("no message sid")?;
                let path = format!("/2010-04-01/Accounts/{account}/Messages/{sid}/Feedback.json");
                let req = self.form_request(&path, account, "Outcome=confirmed".into(), None)?;
                Ok(self.guard.send(req).await?.0)
            }
            Product::Verify => {
                let form = form_urlencoded::Serializer::new(String::new())
                    .append_pair("To", &r.to)
                    .append_pair("Code", CODE)
                    .finish();
                let path = format!("/v2/Services/{SERVICE}/VerificationCheck");
                let req = self.form_request(&path, account, form, None)?;
                Ok(self.guard.send(req).await?.0)
            }
            Product::Voice => {
                let admin = self.admin.as_mut().ok_or("no admin listener")?;
                let body = serde_json::json!({ "to": r.to }).to_string();
                let mut req = Request::post("/api/confirm")
                    .header(HOST, admin.host.clone())
                    .header(CONTENT_TYPE, "application/json");
                if let Some(t) = &self.admin_token {
                    req = req.header(AUTHORIZATION, format!("Bearer {t}"));
                }
                let req = req
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| format!("cannot build the request: {e}"))?;
                Ok(admin.send(req).await?.0)
            }
        }
    }
}

/// A GSM-7 body billed as `segments` parts (153 characters per part once
/// split), for records that give a count but no body. Ten parts at most.
/// A body of `segments` GSM-7 parts (1 when not given), numbered `n`.
fn stand_in_body(segments: Option<u32>, n: u64) -> String {
    // 37 characters at most: shorter than any split body.
    let head = format!("Replayed message {n}");
    match segments.unwrap_or(1).clamp(1, 10) {
        1 => head,
        // Over 160 characters, so it is split, and into exactly k parts.
        k => {
            let len = 153 * (k as usize - 1) + 8;
            let mut body = head;
            let pad = len - body.len();
            body.push_str(&"x".repeat(pad));
            body
        }
    }
}

/// Where a connection goes.
enum Target {
    Tcp(SocketAddr),
    /// The guard's handler, served over an in-memory pipe as if on the
    /// listener at this address.
    Pipe(Arc<App>, SocketAddr),
}

/// One kept-alive HTTP/1.1 connection, opened again after a failure.
struct Connection {
    target: Target,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Connection {
    fn new(target: Target) -> Connection {
        let addr = match &target {
            Target::Tcp(a) | Target::Pipe(_, a) => *a,
        };
        Connection {
            target,
            host: HeaderValue::from_str(&addr.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("127.0.0.1")),
            sender: None,
            tasks: Vec::new(),
        }
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if self.sender.as_ref().is_some_and(|s| s.is_closed()) {
            self.close();
        }
        if self.sender.is_none() {
            let (sender, conn) = match &self.target {
                Target::Tcp(addr) => {
                    let stream = tokio::net::TcpStream::connect(addr)
                        .await
                        .map_err(|e| format!("cannot connect to the guard at {addr}: {e}"))?;
                    let _ = stream.set_nodelay(true);
                    let (sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream))
                            .await
                            .map_err(|e| format!("cannot talk to the guard: {e}"))?;
                    (
                        sender,
                        tokio::spawn(async move {
                            let _ = conn.await;
                        }),
                    )
                }
                Target::Pipe(app, addr) => {
                    let (client, server) = tokio::io::duplex(256 * 1024);
                    // The same handler the guard's listener runs for each
                    // request; the peer is what a loopback client would be.
                    let (app, info) = (
                        app.clone(),
                        ConnInfo::detached(SocketAddr::new(addr.ip(), 0)),
                    );
                    let service = service_fn(move |req| {
                        let (app, info) = (app.clone(), info.clone());
                        async move {
                            Ok::<_, Infallible>(
                                crate::pipeline::egress::handle(app, None, req, info).await,
                            )
                        }
                    });
                    self.tasks.push(tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(server), service)
                            .await;
                    }));
                    let (sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(client))
                            .await
                            .map_err(|e| format!("cannot talk to the guard: {e}"))?;
                    (
                        sender,
                        tokio::spawn(async move {
                            let _ = conn.await;
                        }),
                    )
                }
            };
            self.tasks.push(conn);
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| "no connection".to_string())
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> Answer {
        let sender = self.connect().await?;
        let result = async {
            sender
                .ready()
                .await
                .map_err(|e| format!("the guard closed the connection: {e}"))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("the request to the guard failed: {e}"))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("the guard's answer was cut: {e}"))?
                .to_bytes();
            Ok((status, body))
        }
        .await;
        if result.is_err() {
            self.close();
        }
        result
    }

    fn close(&mut self) {
        self.sender = None;
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_never_touches_the_live_shared_store() {
        let mut c = Config::parse(
            std::path::Path::new("t.toml"),
            "[store]\nredis = \"redis://10.0.0.5:6379/0\"\n",
        )
        .unwrap();
        let notes = prepare(&mut c, "http://127.0.0.1:1");
        assert!(!c.store.shared());
        assert!(
            notes.iter().any(|n| n.contains("[store] redis is off")),
            "{notes:?}"
        );
    }

    #[test]
    fn a_stand_in_body_is_billed_as_the_export_says() {
        for n in 1..=4 {
            for i in [0, 1, 999, 1_000, 123_456_789, u64::MAX] {
                let body = stand_in_body(Some(n), i);
                assert_eq!(crate::twilio::responses::segments(&body).1, n, "{n} {i}");
            }
        }
        // Each record's stand-in differs from the others'.
        assert_ne!(stand_in_body(None, 1), stand_in_body(None, 2));
        assert_ne!(stand_in_body(Some(3), 1), stand_in_body(Some(3), 1_001));
    }

    #[test]
    fn the_sid_is_read_from_a_message_answer() {
        assert_eq!(
            message_sid(br#"{"sid": "SM0123", "status": "queued"}"#).as_deref(),
            Some("SM0123")
        );
        assert_eq!(message_sid(b"{}"), None);
    }

    fn decided(stage: &'static str, detail: &str, blocked: &[&str], monitored: usize) -> Decided {
        Decided {
            action: "shadow",
            stage: Some(stage),
            rule: Some("limit:prefix".into()),
            to: Some("+447400123456".into()),
            region: Some("GB".into()),
            detail: Some(detail.into()),
            blocked: blocked.iter().map(|k| k.to_string()).collect(),
            monitored,
        }
    }

    #[test]
    fn a_stopped_send_is_stopped_under_the_key_its_verdict_names() {
        let met = decided("blocks", "prefix:8=+44740012", &[], 0);
        assert_eq!(met.under(), Some(("prefix:8=+44740012", false)));
        // A tripping limit: its detail starts with the key it blocked, also
        // when a monitored limit blocked another key first.
        let tripped = decided(
            "limits",
            "prefix:8=+44740012: 21 attempts, rate 20/10m; blocked for 12h (offence 1)",
            &["client_ip=203.0.113.7", "prefix:8=+44740012"],
            1,
        );
        assert_eq!(tripped.under(), Some(("prefix:8=+44740012", true)));
        let adaptive = decided("adaptive", "some other wording", &["prefix:7=+4474001"], 0);
        assert_eq!(adaptive.under(), Some(("prefix:7=+4474001", true)));
        // A limit without `block`, a monitored block, another stage: none.
        assert_eq!(
            decided("limits", "to=+447400123456: 6", &[], 0).under(),
            None
        );
        assert_eq!(
            decided("limits", "x", &["client_ip=203.0.113.7"], 1).under(),
            None
        );
        assert_eq!(decided("number", "+998993941234", &[], 0).under(), None);
    }

    #[test]
    fn a_tripped_block_is_read_from_the_rule_s_detail() {
        let at = 1_795_305_600_000;
        assert_eq!(
            tripped_span(
                "prefix:7=+4479111: 12 of 14 sends unconfirmed in 1h > max(floor 4, 1 x baseline 0); blocked for 12h (offence 1)",
                at
            ),
            Some(Span {
                since: at,
                until: at + 12 * 3_600_000,
                offence: 1
            })
        );
        assert_eq!(
            tripped_span(
                "x: 4 attempts, rate 3/10m; blocked for 1day 30m (offence 3)",
                at
            ),
            Some(Span {
                since: at,
                until: at + 24 * 3_600_000 + 30 * 60_000,
                offence: 3
            })
        );
        assert_eq!(
            tripped_span("prefix:8=+44740012: 4 attempts, rate 3/10m", at),
            None
        );
    }
}
