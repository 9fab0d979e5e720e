//! What replicas tell each other that is not a counter: the adaptive
//! stage's learning (each forwarded send, each confirmation) as a log in
//! Redis, and the safe-list edits made through the admin API.
//!
//! The adaptive stage's figures are statistics over a day (sends,
//! confirmations, new numbers per prefix, region, address and user), read
//! on every send. Asking Redis for a dozen of them per send would cost
//! more than the rest of the guard; instead each replica keeps them in its
//! own memory and every replica learns every forwarded send and every
//! confirmation from a shared log, a Redis stream `P{fleet}:log`, trimmed
//! to the last day (the longest window the stage reads).
//!
//! The counts that trip the stage (new numbers per prefix in the surge
//! window, distinct numbers per address or user, unconfirmed sends per
//! key) are made one count across replicas this way:
//!
//! - before a send the adaptive stage judges, the replica reads the log
//!   since it last read it ([`Fleet::turn`]: read-only; this replica's own
//!   forwarded sends are left out in Redis) and learns it before the send
//!   is judged ([`Fleet::apply`]: in the log's order, each event once,
//!   whether a send or the timer read it). One read at a time, carried in
//!   the script of a send that leaves while none is in flight (on a single
//!   Redis part of its one script: [`super::redis_batch`]), serves every
//!   send that arrived before it left; a send that arrives while one is in
//!   flight waits for the next ([`Fleet::wait`]), and reads alone if no
//!   send leaves to carry it within a millisecond. So a replica reads each
//!   event once per round trip, not once per send in flight, and a send
//!   costs one script;
//! - a forwarded send's event is written at once, while Twilio is asked,
//!   and the guard answers only once Redis holds it ([`Fleet::publish_acked`];
//!   a send still waits for Redis at most `store.timeout` in all).
//!
//! So a send is judged knowing every send forwarded through any replica
//! whose event Redis held when the send arrived: at least every send whose
//! answer left before it arrived. That is exact for any sequence of
//! sends, however they are spread. It is not for sends judged at the same
//! moment on different replicas: when each one's read runs before the
//! other's event is written (about a Redis round trip), neither sees the
//! other, so a floor lets through up to the sends in flight on the other
//! replicas at that moment more than one replica would (nine sends fired
//! at once over three replicas all pass a floor of three). On one replica
//! sends never miss each other (a send is judged and counted without
//! waiting in between, unless the balance stage is asked).
//!
//! The timer still reads the log every `store.near_cache`, so an idle
//! replica keeps up, and one that starts (or restarts) reads the whole day
//! first, so its figures and baselines are the fleet's, not a blank.
//! Confirmations are written at once but not waited for: one not yet read
//! makes a judgement stricter, never looser. Redis memory: about 150 bytes
//! per forwarded send or confirmation of the last day.
//!
//! Safe-list edits are kept in the hash `P{fleet}:safe` (no expiry: an
//! edit stands until edited again) and read with the blocks.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use ::redis::{Cmd, Script, Value};
use tokio::sync::{mpsc, oneshot, Notify};

use super::redis::{Call, LinkError, RedisLink};
use crate::base::clock::Millis;
use crate::twilio::routes::Product;

/// How long events are kept: the adaptive stage's longest window, and an
/// hour of slack.
const KEEP: Millis = 25 * 3_600_000;
/// Most events read per call (each call is bounded by `store.timeout`).
const READ_BATCH: usize = 1_000;
/// How long a send waiting for a read of the log leaves it to a send about
/// to leave, to carry in its own script, before reading alone.
const CARRY_GRACE: std::time::Duration = std::time::Duration::from_millis(1);
/// Most events written per pipeline.
const WRITE_BATCH: usize = 256;
/// Events waiting to be written; past this they are dropped (counted).
const QUEUE: usize = 65_536;

/// The log after ARGV[1] (`-`, or `(` and the last id read), at most
/// ARGV[3] entries, without this replica's own forwarded sends (ARGV[2]
/// is its id: it counted them when it judged them, so they need not
/// travel back): {last id read (`""`: none), entries read, entry, ...},
/// each entry as XRANGE gives it. Read-only.
pub(super) const TAIL_LUA: &str = r#"
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[3])
local out = {'', #entries}
for _, e in ipairs(entries) do
  out[1] = e[1]
  local f = e[2]
  if not (f[1] == 'r' and f[2] == ARGV[2] and f[3] == 't' and f[4] == 'f') then
    out[#out + 1] = e
  end
end
return out
"#;

pub(super) static TAIL: LazyLock<Script> = LazyLock::new(|| Script::new(TAIL_LUA));

/// A stream id (`1700000000000-0`): milliseconds and a sequence number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId(u64, u64);

impl StreamId {
    fn parse(s: &str) -> Option<StreamId> {
        let (ms, seq) = s.split_once('-')?;
        Some(StreamId(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// A read of the log: the events after what this replica had applied.
#[derive(Debug, Default)]
pub struct Tail {
    /// The last id read (this replica's own forwarded sends included).
    last: Option<StreamId>,
    /// Each event read with its id (`None` when unreadable, logged) and
    /// whether this replica wrote it.
    events: Vec<(StreamId, Option<(bool, Event)>)>,
    /// A whole batch was read: more may follow.
    pub full: bool,
}

/// An event waiting for the writer, and who waits for it to be written.
type Queued = (Event, Option<oneshot::Sender<()>>);

/// One thing a replica learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A send the replica forwarded (the adaptive stage counts it).
    Forwarded {
        at: Millis,
        product: Product,
        account: String,
        to: String,
        /// The end user's address, when the app gave one.
        client_ip: Option<IpAddr>,
        user: Option<String>,
    },
    /// A confirmation that `to` received its last send; `applied` when
    /// the replica that saw it already credited it.
    Confirmed {
        at: Millis,
        to: String,
        applied: bool,
    },
    /// A new number the replica stopped because its product's sends to
    /// the region are pumped without locality (`adaptive:dispersed:region`):
    /// every replica counts it unanswered there, so the stop lasts as long
    /// on each, whichever replica the pump reaches.
    Dispersed {
        at: Millis,
        product: Product,
        region: String,
        /// The number, for its ranges (absent from an older replica's).
        to: Option<String>,
    },
    /// A safe-list edit: `number` or `prefix`, added or removed.
    Safe {
        prefix: bool,
        value: String,
        add: bool,
    },
}

#[derive(Debug, Default)]
pub struct FleetStats {
    pub published: AtomicU64,
    /// Events dropped because the queue was full or Redis refused them.
    pub dropped: AtomicU64,
    /// Events of other replicas applied here.
    pub applied: AtomicU64,
}

/// This replica's end of the log.
pub struct Fleet {
    /// Off the request path (the writer, the timer's reads, summaries).
    link: RedisLink,
    /// On the request path: the reads sends wait for ([`Fleet::fresh`]).
    front: RedisLink,
    /// Tells this replica's events from the others' (random per process).
    pub id: String,
    tx: mpsc::Sender<Queued>,
    pub stats: Arc<FleetStats>,
    /// The newest event applied here. Events are applied in the log's
    /// order, each once, under this lock, whether a send's pipeline or
    /// the timer read them.
    applied: Mutex<StreamId>,
    /// The reads sends wait for, one at a time ([`Fleet::fresh`]).
    reads: Mutex<Reads>,
    /// Wakes the sends waiting when a read ends.
    read_done: Notify,
}

/// Tickets of the sends waiting for a read of the log: how many asked, the
/// newest ticket a read answered, and the newest a failed read left
/// unanswered. A read serves every ticket taken before it left.
#[derive(Debug, Default)]
struct Reads {
    asked: u64,
    served: u64,
    failed: u64,
    reading: bool,
}

fn log_key(link: &RedisLink) -> String {
    format!("{}{{fleet}}:log", link.prefix())
}

fn safe_key(link: &RedisLink) -> String {
    format!("{}{{fleet}}:safe", link.prefix())
}

fn product_str(p: Product) -> &'static str {
    p.as_str()
}

fn product_of(s: &str) -> Option<Product> {
    [Product::Messaging, Product::Voice, Product::Verify]
        .into_iter()
        .find(|p| p.as_str() == s)
}

impl Fleet {
    /// Starts the writer; must be called inside a Tokio runtime.
    pub fn start(link: RedisLink, clock: Arc<dyn crate::base::clock::Clock>) -> Arc<Fleet> {
        let (tx, mut rx) = mpsc::channel::<Queued>(QUEUE);
        let id = format!("{:016x}", rand::random::<u64>());
        let stats = Arc::new(FleetStats::default());
        let front = link.clone();
        let fleet = Arc::new(Fleet {
            front,
            link: link.background(),
            id: id.clone(),
            tx,
            stats: stats.clone(),
            applied: Mutex::default(),
            reads: Mutex::default(),
            read_done: Notify::new(),
        });
        // Off the request path: the log may take longer than a send may wait.
        let link = fleet.link.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(WRITE_BATCH);
            while let Some(e) = rx.recv().await {
                batch.push(e);
                while batch.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                let now = clock.now();
                let cmds: Vec<Cmd> = batch
                    .iter()
                    .map(|(e, _)| xadd(&link, &id, e, now))
                    .collect();
                match link.query_all(&cmds).await {
                    Ok(_) => {
                        stats
                            .published
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        for (_, written) in batch.drain(..) {
                            if let Some(w) = written {
                                let _ = w.send(());
                            }
                        }
                    }
                    Err(e) => {
                        stats
                            .dropped
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        tracing::debug!(error = %e, events = batch.len(), "fleet events not written");
                    }
                }
                batch.clear();
            }
        });
        fleet
    }

    /// Queues `e` for the log; never waits. The writer sends it at once,
    /// with whatever else is queued.
    pub fn publish(&self, e: Event) {
        if self.tx.try_send((e, None)).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// [`Fleet::publish`], and what answers once Redis holds `e` (dropped
    /// unanswered when it could not be written).
    pub fn publish_acked(&self, e: Event) -> oneshot::Receiver<()> {
        let (written, rx) = oneshot::channel();
        if self.tx.try_send((e, Some(written))).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        rx
    }

    /// The call that reads the log after the newest event applied here,
    /// at most a batch; read its answer with [`Fleet::read_tail`].
    fn tail_call(&self) -> Call<'static> {
        let applied = *lock(&self.applied);
        let from = if applied == StreamId::default() {
            "-".to_string()
        } else {
            format!("({applied}")
        };
        Call {
            script: &TAIL,
            keys: vec![log_key(&self.link)],
            args: vec![from, self.id.clone(), READ_BATCH.to_string()],
        }
    }

    /// Reads the log after the newest event applied here (off the request
    /// path: the timer, a start).
    pub async fn read_new(&self) -> Result<Tail, LinkError> {
        let c = self.tail_call();
        let v = self.link.eval(c.script, &c.keys, &c.args).await?;
        self.read_tail(v)
    }

    /// A send's turn at the log before it is judged: to carry the read
    /// (no read is in flight: the send puts [`Turn::Carry`]'s call in its
    /// own script and hands the answer to [`Lead::finish`]), or to wait for
    /// one that leaves after it ([`Fleet::wait`]). Either way the send is
    /// judged knowing every event Redis held when it took its turn, and
    /// each event crosses once per round trip however many sends are in
    /// flight, inside a send's script where one is leaving.
    pub fn turn(&self) -> Turn<'_> {
        let mut r = lock(&self.reads);
        r.asked += 1;
        if r.reading || !self.front.is_up() {
            return Turn::Wait(r.asked);
        }
        r.reading = true;
        let target = r.asked;
        drop(r);
        Turn::Carry(
            Lead {
                fleet: self,
                target,
                outcome: None,
            },
            self.tail_call(),
        )
    }

    /// [`Fleet::turn`] for a send that has no script of its own to carry
    /// the read in: applies (with `apply`, as [`Fleet::apply`]) every event
    /// Redis held when this was called, at most a batch past what was
    /// applied here, and returns once they are applied.
    pub async fn fresh(&self, apply: impl FnMut(bool, Event)) -> Result<u64, LinkError> {
        match self.turn() {
            Turn::Carry(lead, _) => self.read_alone(lead, apply).await,
            Turn::Wait(ticket) => self.wait(ticket, apply).await,
        }
    }

    /// Reads the log for `lead` on its own (not in a send's script) and
    /// finishes it.
    async fn read_alone(
        &self,
        lead: Lead<'_>,
        apply: impl FnMut(bool, Event),
    ) -> Result<u64, LinkError> {
        let c = self.tail_call();
        let answer = if self.front.is_up() {
            self.front.eval(c.script, &c.keys, &c.args).await
        } else {
            Err(LinkError::Unavailable("redis is down".into()))
        };
        lead.finish(Some(answer), apply)
    }

    /// Waits for a read that left after `ticket` was taken, and returns
    /// once its events are applied. While a read is in flight, the next
    /// one is left to a send about to leave (it carries it in its own
    /// script) for up to `CARRY_GRACE` (a millisecond); past that, with
    /// none in flight, this send reads alone for every send waiting. An
    /// error when the read that served it failed, or when Redis is down
    /// and none is in flight: it is judged on what was applied (the timer
    /// reads the log later).
    pub async fn wait(
        &self,
        ticket: u64,
        apply: impl FnMut(bool, Event),
    ) -> Result<u64, LinkError> {
        /// What a waiting send does next.
        enum Next {
            /// A read is in flight: wait for it to end.
            Wait,
            /// None is: leave the next to a send about to leave, a while.
            Grace,
            /// Read alone, for every ticket taken so far.
            Read(u64),
        }
        let mut graced = false;
        loop {
            let done = self.read_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            let next = {
                let mut r = lock(&self.reads);
                if r.served >= ticket {
                    return Ok(0);
                }
                // With Redis down and no read in flight, no read will
                // serve it: judged at once on what was applied.
                if r.failed >= ticket || (!r.reading && !self.front.is_up()) {
                    return Err(LinkError::Unavailable(
                        "the fleet's log was not read".into(),
                    ));
                }
                if r.reading {
                    Next::Wait
                } else if !graced {
                    Next::Grace
                } else {
                    r.reading = true;
                    Next::Read(r.asked)
                }
            };
            match next {
                Next::Wait => done.await,
                Next::Grace => {
                    graced = true;
                    let _ = tokio::time::timeout(CARRY_GRACE, done).await;
                }
                Next::Read(target) => {
                    // Dropped before the read ends (the client left), it
                    // hands the read on.
                    let lead = Lead {
                        fleet: self,
                        target,
                        outcome: None,
                    };
                    return self.read_alone(lead, apply).await;
                }
            }
        }
    }

    /// The answer to a [`Fleet::tail_call`].
    fn read_tail(&self, v: Value) -> Result<Tail, LinkError> {
        let unexpected = || LinkError::Server("unexpected answer to the fleet log's tail".into());
        let Value::Array(parts) = v else {
            return Err(unexpected());
        };
        let mut parts = parts.into_iter();
        let last = parts
            .next()
            .as_ref()
            .and_then(text)
            .ok_or_else(unexpected)?;
        let read = match parts.next() {
            Some(Value::Int(n)) => usize::try_from(n).unwrap_or(0),
            _ => return Err(unexpected()),
        };
        let mut tail = Tail {
            last: StreamId::parse(&last),
            events: Vec::with_capacity(parts.len()),
            full: read >= READ_BATCH,
        };
        for entry in parts {
            let Value::Array(parts) = entry else { continue };
            let [id, Value::Array(fields)] = &parts[..] else {
                continue;
            };
            let Some(id) = text(id).as_deref().and_then(StreamId::parse) else {
                continue;
            };
            let mut f = std::collections::HashMap::with_capacity(8);
            for pair in fields.chunks(2) {
                if let [k, v] = pair {
                    if let (Some(k), Some(v)) = (text(k), text(v)) {
                        f.insert(k, v);
                    }
                }
            }
            let mine = f.get("r").is_some_and(|r| *r == self.id);
            let event = decode(&f);
            if event.is_none() {
                tracing::warn!(id = %id, "unreadable fleet event skipped");
            }
            tail.events.push((id, event.map(|e| (mine, e))));
        }
        Ok(tail)
    }

    /// Applies the events of `tail` not applied yet, in the log's order,
    /// with `apply(mine, event)`, holding the lock: once this returns,
    /// every event up to the tail's end has been applied here (a read
    /// that raced another sees its events applied by whichever came
    /// first, never twice). Returns how many events of other replicas
    /// were applied.
    pub fn apply(&self, tail: Tail, mut apply: impl FnMut(bool, Event)) -> u64 {
        let mut applied = lock(&self.applied);
        let mut others = 0u64;
        for (id, event) in tail.events {
            if id <= *applied {
                continue;
            }
            *applied = id;
            if let Some((mine, e)) = event {
                others += u64::from(!mine);
                apply(mine, e);
            }
        }
        if let Some(last) = tail.last {
            *applied = (*applied).max(last);
        }
        drop(applied);
        self.stats.applied.fetch_add(others, Ordering::Relaxed);
        others
    }

    /// Records a safe-list edit for every replica (and for restarts).
    pub async fn save_safe(&self, prefix: bool, value: &str, add: bool) -> Result<(), LinkError> {
        let mut cmd = ::redis::cmd("HSET");
        cmd.arg(safe_key(&self.link))
            .arg(format!("{}:{value}", if prefix { "p" } else { "n" }))
            .arg(if add { "add" } else { "remove" });
        self.link.query_all(&[cmd]).await.map(|_| ())
    }

    /// Every safe-list edit made through the admin API, in no order:
    /// (prefix?, value, add?).
    pub async fn safe_edits(&self) -> Result<Vec<(bool, String, bool)>, LinkError> {
        let mut cmd = ::redis::cmd("HGETALL");
        cmd.arg(safe_key(&self.link));
        let v = self.link.query_all(&[cmd]).await?;
        let mut out = Vec::new();
        if let Some(Value::Array(a)) = v.into_iter().next() {
            for pair in a.chunks(2) {
                let (Some(k), Some(v)) = (pair.first().and_then(text), pair.get(1).and_then(text))
                else {
                    continue;
                };
                let (kind, value) = k.split_once(':').unwrap_or(("", ""));
                if value.is_empty() || !matches!(kind, "p" | "n") {
                    continue;
                }
                out.push((kind == "p", value.to_string(), v == "add"));
            }
        }
        Ok(out)
    }
}

/// A send's turn at the log ([`Fleet::turn`]).
pub enum Turn<'a> {
    /// Put the call in the send's script; give its answer to the lead.
    Carry(Lead<'a>, Call<'static>),
    /// Wait with this ticket ([`Fleet::wait`]).
    Wait(u64),
}

/// The send reading the log for the others: when it ends, however it
/// ends, the read is over and the waiting sends wake, answered (`outcome`:
/// whether the read succeeded, for every ticket up to `target`) or, when
/// it was dropped unanswered, to read again themselves.
pub struct Lead<'a> {
    fleet: &'a Fleet,
    target: u64,
    outcome: Option<bool>,
}

impl Lead<'_> {
    /// Applies the read's answer (`None`: it was not asked, Redis being
    /// unavailable) with `apply`, and wakes the waiting sends: how many
    /// events of other replicas were applied.
    pub fn finish(
        mut self,
        answer: Option<Result<Value, LinkError>>,
        apply: impl FnMut(bool, Event),
    ) -> Result<u64, LinkError> {
        let read = match answer {
            Some(a) => a.and_then(|v| self.fleet.read_tail(v)),
            None => Err(LinkError::Unavailable(
                "the fleet's log was not read".into(),
            )),
        };
        match read {
            Ok(tail) => {
                let others = self.fleet.apply(tail, apply);
                self.outcome = Some(true);
                Ok(others)
            }
            Err(e) => {
                self.outcome = Some(false);
                Err(e)
            }
        }
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut r = lock(&self.fleet.reads);
        r.reading = false;
        match self.outcome {
            Some(true) => r.served = r.served.max(self.target),
            Some(false) => r.failed = r.failed.max(self.target),
            None => {}
        }
        drop(r);
        self.fleet.read_done.notify_waiters();
    }
}

/// Summaries older than this are a replica that stopped: left out.
pub const SUMMARY_STALE: Millis = 30_000;

impl Fleet {
    /// Publishes this replica's activity summary (JSON) for the fleet's
    /// dashboard.
    pub async fn save_summary(&self, json: &str) -> Result<(), LinkError> {
        let mut cmd = ::redis::cmd("HSET");
        cmd.arg(summary_key(&self.link)).arg(&self.id).arg(json);
        self.link.query_all(&[cmd]).await.map(|_| ())
    }

    /// Every other replica's published summary (JSON); entries of
    /// replicas silent for long are removed.
    pub async fn summaries(&self) -> Result<Vec<(String, String)>, LinkError> {
        let mut cmd = ::redis::cmd("HGETALL");
        cmd.arg(summary_key(&self.link));
        let v = self.link.query_all(&[cmd]).await?;
        let mut out = Vec::new();
        if let Some(Value::Array(a)) = v.into_iter().next() {
            for pair in a.chunks(2) {
                if let (Some(k), Some(v)) =
                    (pair.first().and_then(text), pair.get(1).and_then(text))
                {
                    if k != self.id {
                        out.push((k, v));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Forgets the summary of a replica that stopped.
    pub async fn drop_summary(&self, id: &str) -> Result<(), LinkError> {
        let mut cmd = ::redis::cmd("HDEL");
        cmd.arg(summary_key(&self.link)).arg(id);
        self.link.query_all(&[cmd]).await.map(|_| ())
    }
}

fn summary_key(link: &RedisLink) -> String {
    format!("{}{{fleet}}:summaries", link.prefix())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn xadd(link: &RedisLink, id: &str, e: &Event, now: Millis) -> Cmd {
    let mut cmd = ::redis::cmd("XADD");
    cmd.arg(log_key(link))
        .arg("MINID")
        .arg("~")
        .arg(now.saturating_sub(KEEP))
        .arg("*")
        .arg("r")
        .arg(id);
    match e {
        Event::Forwarded {
            at,
            product,
            account,
            to,
            client_ip,
            user,
        } => {
            cmd.arg("t")
                .arg("f")
                .arg("at")
                .arg(*at)
                .arg("p")
                .arg(product_str(*product))
                .arg("a")
                .arg(account)
                .arg("to")
                .arg(to);
            if let Some(ip) = client_ip {
                cmd.arg("ip").arg(ip.to_string());
            }
            if let Some(u) = user {
                cmd.arg("u").arg(u);
            }
        }
        Event::Confirmed { at, to, applied } => {
            cmd.arg("t")
                .arg("c")
                .arg("at")
                .arg(*at)
                .arg("to")
                .arg(to)
                .arg("ok")
                .arg(if *applied { "1" } else { "0" });
        }
        Event::Dispersed {
            at,
            product,
            region,
            to,
        } => {
            cmd.arg("t")
                .arg("d")
                .arg("at")
                .arg(*at)
                .arg("p")
                .arg(product_str(*product))
                .arg("rg")
                .arg(region);
            if let Some(to) = to {
                cmd.arg("to").arg(to);
            }
        }
        Event::Safe { prefix, value, add } => {
            cmd.arg("t")
                .arg("s")
                .arg("k")
                .arg(if *prefix { "p" } else { "n" })
                .arg("v")
                .arg(value)
                .arg("add")
                .arg(if *add { "1" } else { "0" });
        }
    }
    cmd
}

fn decode(f: &std::collections::HashMap<String, String>) -> Option<Event> {
    let at = || f.get("at")?.parse::<Millis>().ok();
    match f.get("t")?.as_str() {
        "f" => Some(Event::Forwarded {
            at: at()?,
            product: product_of(f.get("p")?)?,
            account: f.get("a")?.clone(),
            to: f.get("to")?.clone(),
            client_ip: match f.get("ip") {
                Some(ip) => Some(ip.parse().ok()?),
                None => None,
            },
            user: f.get("u").cloned(),
        }),
        "c" => Some(Event::Confirmed {
            at: at()?,
            to: f.get("to")?.clone(),
            applied: f.get("ok").is_some_and(|v| v == "1"),
        }),
        "d" => Some(Event::Dispersed {
            at: at()?,
            product: product_of(f.get("p")?)?,
            region: f.get("rg")?.clone(),
            to: f.get("to").cloned(),
        }),
        "s" => Some(Event::Safe {
            prefix: f.get("k")? == "p",
            value: f.get("v")?.clone(),
            add: f.get("add")? == "1",
        }),
        _ => None,
    }
}
