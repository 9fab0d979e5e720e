//! The sids of the sends the guard forwarded, for reconciliation (see
//! `pipeline::reconcile`): a send that Twilio lists but whose sid no
//! replica recorded went around the guard.
//!
//! In memory: a bounded, time-ordered set (oldest out first, evictions
//! counted), kept for `keep` (two intervals, the settle time twice, and a
//! minute). With Redis, the set is shared by the replicas:
//!
//! | key                     | type   | holds                                             |
//! |-------------------------|--------|---------------------------------------------------|
//! | `P{reconcile}:sids`     | zset   | member a sid, score the time it was recorded (ms) |
//! | `P{reconcile}:lock`     | string | the id of the replica that lists (PX 3 intervals) |
//! | `P{reconcile}:state`    | string | the last look (JSON): where the next one starts, what it found |
//!
//! A sid is written by a background task, batched (a ZADD per batch, then
//! the set trimmed by time and by `capacity`): a send never waits for it.
//! A batch Redis refuses is kept and written again once it answers (at
//! most `capacity` sids wait; more are dropped and counted), so a short
//! outage does not turn forwarded sends into false reports. Each replica
//! also keeps its own sids in memory, and a look asks both.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::{Cmd, Script, Value};
use tokio::sync::mpsc;

use super::redis::{LinkError, RedisLink};
use crate::base::clock::Millis;

/// Sids per ZMSCORE call.
const ASK_BATCH: usize = 1_000;
/// Sids per ZADD.
const WRITE_BATCH: usize = 512;

#[derive(Debug, Default)]
pub struct SidStats {
    /// Sids recorded here.
    pub recorded: AtomicU64,
    /// Sids pushed out of the memory set for space while within `keep`.
    pub evicted: AtomicU64,
    /// Sids never written to Redis (the waiting queue was full).
    pub dropped: AtomicU64,
    /// Sids waiting for Redis to answer again.
    pub waiting: AtomicU64,
    /// Sids removed from the shared set for space (`capacity`).
    pub trimmed: AtomicU64,
}

struct Mem {
    order: VecDeque<(Millis, Box<str>)>,
    set: HashMap<Box<str>, Millis>,
    /// When the newest sid evicted for space was recorded.
    newest_evicted: Option<Millis>,
}

/// The forwarded sids: this replica's in memory, and the fleet's in Redis.
pub struct ForwardedSids {
    mem: Mutex<Mem>,
    capacity: u64,
    keep: Millis,
    link: Option<RedisLink>,
    tx: Option<mpsc::UnboundedSender<(Box<str>, Millis)>>,
    pub stats: Arc<SidStats>,
}

fn key(link: &RedisLink, what: &str) -> String {
    format!("{}{{reconcile}}:{what}", link.prefix())
}

/// Takes the lock when it is free or already ours (then renews it), and
/// returns whether we hold it and the last look's state (`""`: none).
const TURN_LUA: &str = r#"
local holder = redis.call('GET', KEYS[1])
local mine = 0
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  mine = 1
end
return {mine, redis.call('GET', KEYS[2]) or ''}
"#;

static TURN: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(TURN_LUA));

impl ForwardedSids {
    /// A set keeping each sid `keep` ms, at most `capacity` of them; with
    /// `link`, shared through Redis (starts the writer: call inside a
    /// Tokio runtime).
    pub fn new(capacity: u64, keep: Millis, link: Option<RedisLink>) -> ForwardedSids {
        let stats = Arc::new(SidStats::default());
        let link = link.map(|l| l.background());
        let tx = link.as_ref().map(|link| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(writer(link.clone(), rx, capacity, keep, stats.clone()));
            tx
        });
        ForwardedSids {
            mem: Mutex::new(Mem {
                order: VecDeque::new(),
                set: HashMap::new(),
                newest_evicted: None,
            }),
            capacity: capacity.max(1),
            keep,
            link,
            tx,
            stats,
        }
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the set is shared through Redis.
    pub fn shared(&self) -> bool {
        self.link.is_some()
    }

    /// Records `sid` (forwarded, or already reported) at `at`; never
    /// waits for Redis.
    pub fn record(&self, sid: &str, at: Millis) {
        {
            let mut m = self.mem();
            if m.set.contains_key(sid) {
                return;
            }
            let sid: Box<str> = Box::from(sid);
            m.set.insert(sid.clone(), at);
            m.order.push_back((at, sid));
            let cutoff = at.saturating_sub(self.keep);
            while let Some((t, _)) = m.order.front() {
                let old = *t < cutoff;
                if !old && m.order.len() as u64 <= self.capacity {
                    break;
                }
                let Some((t, s)) = m.order.pop_front() else {
                    break;
                };
                m.set.remove(&s);
                if !old {
                    self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                    m.newest_evicted = Some(m.newest_evicted.map_or(t, |n| n.max(t)));
                }
            }
        }
        self.stats.recorded.fetch_add(1, Ordering::Relaxed);
        if let Some(tx) = &self.tx {
            let _ = tx.send((Box::from(sid), at));
        }
    }

    /// When the newest sid evicted from memory for space was recorded: a
    /// look over sends created after it cannot trust the memory alone.
    pub fn newest_evicted(&self) -> Option<Millis> {
        self.mem().newest_evicted
    }

    /// Sids held in memory here.
    pub fn len(&self) -> usize {
        self.mem().set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every sid recorded here has reached Redis (always true
    /// without Redis).
    pub fn flushed(&self) -> bool {
        self.stats.waiting.load(Ordering::Relaxed) == 0
    }

    /// Which of `sids` are known: recorded here, or (with Redis) by any
    /// replica.
    pub async fn known(&self, sids: &[String]) -> Result<HashSet<String>, LinkError> {
        let mut out: HashSet<String> = {
            let m = self.mem();
            sids.iter()
                .filter(|s| m.set.contains_key(s.as_str()))
                .cloned()
                .collect()
        };
        let Some(link) = &self.link else {
            return Ok(out);
        };
        let ask: Vec<&String> = sids.iter().filter(|s| !out.contains(*s)).collect();
        for chunk in ask.chunks(ASK_BATCH) {
            let mut cmd = ::redis::cmd("ZMSCORE");
            cmd.arg(key(link, "sids"));
            for s in chunk {
                cmd.arg(s.as_str());
            }
            let answer = link.query_all(&[cmd]).await?;
            let Some(Value::Array(scores)) = answer.into_iter().next() else {
                return Err(LinkError::Server("unexpected answer to ZMSCORE".into()));
            };
            if scores.len() != chunk.len() {
                return Err(LinkError::Server(
                    "ZMSCORE answered a different count".into(),
                ));
            }
            for (s, score) in chunk.iter().zip(scores) {
                if !matches!(score, Value::Nil) {
                    out.insert((*s).clone());
                }
            }
        }
        Ok(out)
    }

    /// Whether this replica lists now, and the last look's state (JSON)
    /// when there is one. Without Redis: always, with no shared state.
    /// With Redis, the lock (held `hold` ms, renewed by its holder on each
    /// turn) makes one replica list at a time.
    pub async fn take_turn(
        &self,
        id: &str,
        hold: Millis,
    ) -> Result<(bool, Option<String>), LinkError> {
        let Some(link) = &self.link else {
            return Ok((true, None));
        };
        let v = link
            .eval(
                &TURN,
                &[key(link, "lock"), key(link, "state")],
                &[id.to_string(), hold.max(1).to_string()],
            )
            .await?;
        let Value::Array(parts) = v else {
            return Err(LinkError::Server(
                "unexpected answer to the reconcile lock".into(),
            ));
        };
        let mine = matches!(parts.first(), Some(Value::Int(1)));
        let state = match parts.get(1) {
            Some(Value::BulkString(b)) if !b.is_empty() => String::from_utf8(b.clone()).ok(),
            _ => None,
        };
        Ok((mine, state))
    }

    /// Saves the last look's state for the replica that lists next (kept
    /// for `ttl`). Without Redis: nothing to do.
    pub async fn save_state(&self, json: &str, ttl: Duration) -> Result<(), LinkError> {
        let Some(link) = &self.link else {
            return Ok(());
        };
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(key(link, "state"))
            .arg(json)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        link.query_all(&[cmd]).await.map(|_| ())
    }

    /// Lets the lock go (at shutdown), if this replica holds it.
    pub async fn release(&self, id: &str) {
        let Some(link) = &self.link else { return };
        const RELEASE: &str =
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
        let script = Script::new(RELEASE);
        let _ = link.eval(&script, &[key(link, "lock")], &[id]).await;
    }
}

/// Writes recorded sids to Redis in batches; a refused batch waits (up to
/// `capacity` sids) and is written again once Redis answers.
async fn writer(
    link: RedisLink,
    mut rx: mpsc::UnboundedReceiver<(Box<str>, Millis)>,
    capacity: u64,
    keep: Millis,
    stats: Arc<SidStats>,
) {
    let sids = key(&link, "sids");
    let mut waiting: VecDeque<(Box<str>, Millis)> = VecDeque::new();
    let mut closed = false;
    loop {
        if waiting.is_empty() {
            if closed {
                return;
            }
            match rx.recv().await {
                Some(e) => waiting.push_back(e),
                None => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(e) => waiting.push_back(e),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        while waiting.len() as u64 > capacity {
            waiting.pop_front();
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let n = waiting.len().min(WRITE_BATCH);
        let newest = waiting.iter().take(n).map(|(_, t)| *t).max().unwrap_or(0);
        let mut add = ::redis::cmd("ZADD");
        add.arg(&sids);
        for (sid, at) in waiting.iter().take(n) {
            add.arg(*at).arg(sid.as_ref());
        }
        let mut by_time = ::redis::cmd("ZREMRANGEBYSCORE");
        by_time
            .arg(&sids)
            .arg("-inf")
            .arg(format!("({}", newest.saturating_sub(keep)));
        let mut by_count = ::redis::cmd("ZREMRANGEBYRANK");
        by_count
            .arg(&sids)
            .arg(0)
            .arg(-(i64::try_from(capacity).unwrap_or(i64::MAX - 1)) - 1);
        let mut expire = ::redis::cmd("PEXPIRE");
        expire.arg(&sids).arg(keep.max(1));
        let cmds: Vec<Cmd> = vec![add, by_time, by_count, expire];
        match link.query_all(&cmds).await {
            Ok(answers) => {
                waiting.drain(..n);
                if let Some(Value::Int(t)) = answers.get(2) {
                    stats
                        .trimmed
                        .fetch_add(u64::try_from(*t).unwrap_or(0), Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, sids = waiting.len(), "forwarded sids not written yet");
                stats.waiting.store(waiting.len() as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        stats
            .waiting
            .store((waiting.len() + rx.len()) as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_set_is_bounded_by_time_and_by_count() {
        let s = ForwardedSids::new(3, 1_000, None);
        s.record("SM1", 10);
        s.record("SM2", 20);
        s.record("SM1", 30); // already known: kept once
        assert_eq!(s.len(), 2);
        s.record("SM3", 40);
        s.record("SM4", 50);
        // Over capacity: the oldest goes, counted, while still within keep.
        assert_eq!(s.len(), 3);
        assert_eq!(s.stats.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(s.newest_evicted(), Some(10));
        let known = s
            .known(&["SM1".into(), "SM2".into(), "SM9".into()])
            .await
            .unwrap();
        assert_eq!(known, HashSet::from(["SM2".to_string()]));
        // Older than keep: dropped without counting as an eviction.
        s.record("SM5", 2_000);
        assert_eq!(s.len(), 1);
        assert_eq!(s.stats.evicted.load(Ordering::Relaxed), 1);
        // Without Redis the single process always lists.
        assert_eq!(s.take_turn("me", 1_000).await.unwrap(), (true, None));
    }
}
