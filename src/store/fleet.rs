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
//! to the last day (the longest window the stage reads). A replica writes
//! its events in batches off the request path and reads the others' every
//! `store.near_cache`; one that starts (or restarts) reads the whole day
//! first, so its figures and baselines are the fleet's, not a blank.
//! Replicas see each other's sends within `near_cache`; figures may differ
//! between replicas by what arrived in that time, which for day-long
//! statistics does not matter. Redis memory: about 150 bytes per forwarded
//! send or confirmation of the last day.
//!
//! Safe-list edits are kept in the hash `P{fleet}:safe` (no expiry: an
//! edit stands until edited again) and read with the blocks.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ::redis::{Cmd, Value};
use tokio::sync::mpsc;

use super::redis::{LinkError, RedisLink};
use crate::clock::Millis;
use crate::twilio::routes::Product;

/// How long events are kept: the adaptive stage's longest window, and an
/// hour of slack.
const KEEP: Millis = 25 * 3_600_000;
/// Most events read per call (each call is bounded by `store.timeout`).
const READ_BATCH: usize = 1_000;
/// Most events written per pipeline.
const WRITE_BATCH: usize = 256;
/// Events waiting to be written; past this they are dropped (counted).
const QUEUE: usize = 65_536;

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
    link: RedisLink,
    /// Tells this replica's events from the others' (random per process).
    pub id: String,
    tx: mpsc::Sender<Event>,
    pub stats: Arc<FleetStats>,
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
    pub fn start(link: RedisLink, clock: Arc<dyn crate::clock::Clock>) -> Arc<Fleet> {
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
        let id = format!("{:016x}", rand::random::<u64>());
        let stats = Arc::new(FleetStats::default());
        // Off the request path: the log may take longer than a send may wait.
        let link = link.background();
        let fleet = Arc::new(Fleet {
            link: link.clone(),
            id: id.clone(),
            tx,
            stats: stats.clone(),
        });
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
                let cmds: Vec<Cmd> = batch.iter().map(|e| xadd(&link, &id, e, now)).collect();
                match link.query_all(&cmds).await {
                    Ok(_) => {
                        stats
                            .published
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
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

    /// Queues `e` for the log; never waits.
    pub fn publish(&self, e: Event) {
        if self.tx.try_send(e).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events after `after` (a stream id; "0" for all), at most a batch:
    /// each id with its event (`None` when unreadable, logged) and whether
    /// this replica wrote it.
    pub async fn read(
        &self,
        after: &str,
    ) -> Result<Vec<(String, Option<(bool, Event)>)>, LinkError> {
        let mut cmd = ::redis::cmd("XRANGE");
        cmd.arg(log_key(&self.link))
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(READ_BATCH);
        if after == "0" {
            // XRANGE's exclusive start needs a valid id.
            cmd = ::redis::cmd("XRANGE");
            cmd.arg(log_key(&self.link))
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(READ_BATCH);
        }
        let v = self.link.query_all(&[cmd]).await?;
        let Some(Value::Array(entries)) = v.into_iter().next() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let [id, Value::Array(fields)] = &parts[..] else {
                continue;
            };
            let Some(id) = text(id) else { continue };
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
            out.push((id, event.map(|e| (mine, e))));
        }
        Ok(out)
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
        "s" => Some(Event::Safe {
            prefix: f.get("k")? == "p",
            value: f.get("v")?.clone(),
            add: f.get("add")? == "1",
        }),
        _ => None,
    }
}
