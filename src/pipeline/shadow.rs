//! What keeps a shadow ban invisible after the first answer: fakes are
//! remembered so a later GET of a fake sid (or a check of a fake
//! verification) is answered consistently, and fake answers take about as
//! long as Twilio's real answers have lately.
//!
//! Nothing about a fake ever reaches Twilio. Memory is bounded: fakes are
//! kept for a retention period, up to a capacity.
//!
//! Several replicas behind one Redis share their fakes once the store is
//! [attached](FakeStore::attach) to a [`RedisLink`]: every fake is also
//! written to Redis (in the background, never on the request path), and a
//! lookup that misses here asks Redis, so a fake made by one replica is
//! answered by any other. Redis down only means each replica answers the
//! fakes it made itself, as when nothing is shared.
//!
//! Its log events keep the target `smsguard::shadow` (operators filter logs
//! by it with `SMSGUARD_LOG`), wherever the module sits.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use rand::Rng;

use crate::base::Lru;
use crate::config;
use crate::store::redis::{LinkError, RedisLink};
use crate::store::redis_fakes::{self, table};
use crate::twilio::responses::{self, FinalStatus, MessageRequest};

/// Most writes to Redis under way at once; more are dropped (and counted
/// as failed): a flood of shadowed sends while Redis is slow must not pile
/// up tasks without bound.
const MAX_SHARED_WRITES: usize = 4096;

/// A fake Message kept as what it was made from, in one allocation: the
/// JSON is made again on a read, byte for byte the same. A fake costs
/// about a fifth of its JSON this way, and a flood of shadowed sends is
/// what fills this store.
struct KeptMessage {
    /// sid, account, to, from, messaging service, body, back to back.
    text: Box<str>,
    ends: [u32; 6],
    /// Bit 0: from given, 1: messaging service given, 2: body given.
    given: u8,
    num_media: u32,
    created: SystemTime,
}

impl KeptMessage {
    fn new(sid: &str, req: &MessageRequest, created: SystemTime) -> Self {
        let fields = [
            Some(sid),
            Some(req.account_sid),
            Some(req.to),
            req.from,
            req.messaging_service_sid,
            req.body,
        ];
        let mut text = String::with_capacity(fields.iter().flatten().map(|f| f.len()).sum());
        let mut ends = [0u32; 6];
        let mut given = 0u8;
        for (i, f) in fields.iter().enumerate() {
            if let Some(f) = f {
                text.push_str(f);
                if i >= 3 {
                    given |= 1 << (i - 3);
                }
            }
            ends[i] = text.len() as u32;
        }
        KeptMessage {
            text: text.into_boxed_str(),
            ends,
            given,
            num_media: req.num_media as u32,
            created,
        }
    }

    fn field(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    fn optional(&self, i: usize) -> Option<&str> {
        (self.given & (1 << (i - 3)) != 0).then(|| self.field(i))
    }

    fn request(&self) -> MessageRequest<'_> {
        MessageRequest {
            account_sid: self.field(1),
            to: self.field(2),
            from: self.optional(3),
            messaging_service_sid: self.optional(4),
            body: self.optional(5),
            num_media: self.num_media as usize,
        }
    }

    /// Its JSON as read at `now`: its status has moved on since it was
    /// made, as a real message's does, towards `last`.
    fn json(&self, now: SystemTime, last: FinalStatus) -> Bytes {
        responses::message_json_at(&self.request(), self.field(0), self.created, now, last)
    }

    /// As shared in Redis (the sid is the key): what it was made from, so
    /// another replica makes the same JSON again, byte for byte. The JSON
    /// depends on nothing else but the time it is read and the policy's
    /// final status, the same on every replica.
    ///
    /// `<secs>:<nanos>:<given>:<num_media>:<len>,<len>,<len>,<len>,<len>:`
    /// then account, to, from, messaging service and body back to back.
    fn encode(&self) -> Option<String> {
        let t = self.created.duration_since(UNIX_EPOCH).ok()?;
        let rest = &self.text[self.ends[0] as usize..];
        let mut out = format!(
            "{}:{}:{}:{}:",
            t.as_secs(),
            t.subsec_nanos(),
            self.given,
            self.num_media
        );
        out.reserve(rest.len() + 1);
        for i in 1..6 {
            if i > 1 {
                out.push(',');
            }
            out.push_str(&self.field(i).len().to_string());
        }
        out.push(':');
        out.push_str(rest);
        Some(out)
    }

    /// What [`encode`](Self::encode) wrote, for `sid`; None when it is not
    /// that.
    fn decode(sid: &str, s: &str) -> Option<Self> {
        let mut parts = s.splitn(6, ':');
        let secs: u64 = parts.next()?.parse().ok()?;
        let nanos: u32 = parts.next()?.parse().ok()?;
        let given: u8 = parts.next()?.parse().ok()?;
        let num_media: u32 = parts.next()?.parse().ok()?;
        let lens = parts.next()?;
        let rest = parts.next()?;
        if nanos >= 1_000_000_000 || given > 7 {
            return None;
        }
        let mut fields = [""; 5];
        let mut at = 0usize;
        let mut n = 0;
        for len in lens.split(',') {
            let end = at.checked_add(len.parse::<usize>().ok()?)?;
            *fields.get_mut(n)? = rest.get(at..end)?;
            at = end;
            n += 1;
        }
        if n != 5 || at != rest.len() {
            return None;
        }
        let created = UNIX_EPOCH.checked_add(Duration::new(secs, nanos))?;
        let has = |bit: u8| given & (1 << bit) != 0;
        let req = MessageRequest {
            account_sid: fields[0],
            to: fields[1],
            from: has(0).then_some(fields[2]),
            messaging_service_sid: has(1).then_some(fields[3]),
            body: has(2).then_some(fields[4]),
            num_media: num_media as usize,
        };
        Some(KeptMessage::new(sid, &req, created))
    }
}

enum Kept {
    Message(KeptMessage),
    /// Calls and verifications, kept as answered.
    Json {
        sid: Box<str>,
        body: Bytes,
    },
}

impl Kept {
    fn json(&self, now: SystemTime, last: FinalStatus) -> Bytes {
        match self {
            Kept::Message(m) => m.json(now, last),
            Kept::Json { body, .. } => body.clone(),
        }
    }

    /// As shared in Redis: `m` and a message's inputs, or `j` and the JSON.
    fn encode(&self) -> Option<Vec<u8>> {
        match self {
            Kept::Message(m) => {
                let mut out = vec![b'm'];
                out.extend_from_slice(m.encode()?.as_bytes());
                Some(out)
            }
            Kept::Json { body, .. } => {
                let mut out = Vec::with_capacity(body.len() + 1);
                out.push(b'j');
                out.extend_from_slice(body);
                Some(out)
            }
        }
    }

    fn decode(sid: &str, v: &[u8]) -> Option<Self> {
        match v.split_first()? {
            (b'm', rest) => Some(Kept::Message(KeptMessage::decode(
                sid,
                std::str::from_utf8(rest).ok()?,
            )?)),
            (b'j', rest) => Some(Kept::Json {
                sid: sid.into(),
                body: Bytes::copy_from_slice(rest),
            }),
            _ => None,
        }
    }
}

struct Entry {
    kept: Kept,
    /// Answers until then.
    until: SystemTime,
}

impl Entry {
    fn sid(&self) -> &str {
        match &self.kept {
            Kept::Message(m) => m.field(0),
            Kept::Json { sid, .. } => sid,
        }
    }
}

/// A shadowed verification as kept here, or (when shared) its forgetting.
#[derive(Clone)]
struct KeptVerification {
    /// The fake verification's sid; None once forgotten.
    sid: Option<String>,
    /// When it was made (microseconds since the epoch, as shared): of two
    /// answers, here and in Redis, the newer counts.
    stamp: u64,
    until: SystemTime,
}

/// Writes of fakes to Redis under way: a shadowed send's answer waits for
/// them (bounded by `store.timeout`), so another replica asked for the
/// fake the moment the client has its sid already knows it.
#[derive(Debug, Default)]
pub struct Written(Vec<tokio::task::JoinHandle<()>>);

impl Written {
    pub async fn wait(self) {
        for h in self.0 {
            let _ = h.await;
        }
    }

    pub fn and(mut self, other: Written) -> Written {
        self.0.extend(other.0);
        self
    }
}

/// Fakes by sid, and shadowed verifications by service and number.
pub struct FakeStore {
    /// Bounded by count (least recently made go first) and by age.
    by_sid: Lru<Option<Entry>>,
    retention: Duration,
    /// `VA...|+15551234567` → the fake verification.
    verifications: Cache<String, KeptVerification>,
    /// Where fakes are shared, once attached.
    link: OnceLock<RedisLink>,
    /// Writes to Redis that failed, timed out, or were not tried (Redis
    /// down, too many under way).
    pub shared_write_errors: Arc<AtomicU64>,
    /// Writes to Redis under way.
    shared_writes: Arc<AtomicUsize>,
    /// The last verification stamp given here.
    last_stamp: AtomicU64,
    /// Where a fake message's status ends (`shadow.final_status`): 0
    /// delivered, 1 undelivered, 2 sent.
    last_status: AtomicU8,
}

impl FakeStore {
    pub fn new(capacity: u64, retention: Duration) -> Self {
        FakeStore {
            by_sid: Lru::new(capacity),
            retention,
            verifications: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(retention)
                .eviction_policy(EvictionPolicy::lru())
                .build(),
            link: OnceLock::new(),
            shared_write_errors: Arc::default(),
            shared_writes: Arc::default(),
            last_stamp: AtomicU64::new(0),
            last_status: AtomicU8::new(0),
        }
    }

    /// Where fake messages' statuses end from now on.
    pub fn set_final_status(&self, last: FinalStatus) {
        let code = match last {
            FinalStatus::Delivered => 0,
            FinalStatus::Undelivered => 1,
            FinalStatus::Sent => 2,
        };
        self.last_status.store(code, Ordering::Relaxed);
    }

    pub fn final_status(&self) -> FinalStatus {
        match self.last_status.load(Ordering::Relaxed) {
            1 => FinalStatus::Undelivered,
            2 => FinalStatus::Sent,
            _ => FinalStatus::Delivered,
        }
    }

    /// Shares fakes through `link` from now on: each one remembered is also
    /// written to Redis, and lookups that miss here ask Redis. Only the
    /// first link attached counts.
    pub fn attach(&self, link: RedisLink) {
        if self.link.set(link).is_err() {
            tracing::debug!(target: "smsguard::shadow", "the fake store is already shared: a second link is ignored");
        }
    }

    /// The link, when attached and up.
    fn live_link(&self) -> Option<&RedisLink> {
        self.link.get().filter(|l| l.is_up())
    }

    /// Runs `write` on the link in the background, when attached. Never
    /// waits; a failure is counted and logged at debug (`what` only: keys
    /// and values may hold numbers and message bodies).
    fn share<F>(&self, what: &'static str, write: impl FnOnce(RedisLink) -> F) -> Written
    where
        F: Future<Output = Result<(), LinkError>> + Send + 'static,
    {
        let Some(link) = self.link.get() else {
            return Written::default();
        };
        let errors = &self.shared_write_errors;
        if !link.is_up() {
            // The call would fail at once: spare the task.
            errors.fetch_add(1, Ordering::Relaxed);
            return Written::default();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            errors.fetch_add(1, Ordering::Relaxed);
            return Written::default();
        };
        if self.shared_writes.fetch_add(1, Ordering::AcqRel) >= MAX_SHARED_WRITES {
            self.shared_writes.fetch_sub(1, Ordering::AcqRel);
            errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "smsguard::shadow",
                what,
                "too many fake writes to redis under way: kept locally only"
            );
            return Written::default();
        }
        let (errors, writes) = (errors.clone(), self.shared_writes.clone());
        let write = write(link.clone());
        Written(vec![runtime.spawn(async move {
            if let Err(e) = write.await {
                errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(target: "smsguard::shadow", what, error = %e, "sharing a fake through redis failed: kept locally only");
            }
            writes.fetch_sub(1, Ordering::AcqRel);
        })])
    }

    fn keep(&self, sid: &str, kept: Kept) -> Written {
        let mut written = Written::default();
        if self.link.get().is_some() {
            match kept.encode() {
                Some(value) => {
                    let (sid, ttl) = (sid.to_string(), self.retention);
                    written = self.share("fake", move |link| async move {
                        redis_fakes::put(&link, table::FAKES, &sid, &value, ttl).await
                    });
                }
                None => {
                    self.shared_write_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.keep_until(sid, kept, SystemTime::now() + self.retention);
        written
    }

    fn keep_until(&self, sid: &str, kept: Kept, until: SystemTime) {
        self.by_sid
            .with(sid, || None, |_| {}, |e| *e = Some(Entry { kept, until }));
    }

    /// Keeps a fake Message made by [`responses::fake_message`] from `req`
    /// at `created`.
    pub fn remember_message(
        &self,
        sid: &str,
        req: &MessageRequest,
        created: SystemTime,
    ) -> Written {
        self.keep(sid, Kept::Message(KeptMessage::new(sid, req, created)))
    }

    /// Keeps any other fake as its JSON.
    pub fn remember(&self, sid: &str, body: Bytes) -> Written {
        let sid: Box<str> = sid.into();
        self.keep(&sid.clone(), Kept::Json { sid, body })
    }

    /// The JSON of the fake `sid`, as first answered, if kept here.
    pub fn get(&self, sid: &str) -> Option<Bytes> {
        let now = SystemTime::now();
        self.by_sid
            .update(sid, |e| {
                let e = e.as_ref().filter(|e| e.sid() == sid && now < e.until)?;
                Some(e.kept.json(now, self.final_status()))
            })
            .flatten()
    }

    /// The JSON of the fake `sid`, kept here or, when attached, made by
    /// another replica: on a miss here, one call to Redis (if up), bounded
    /// by its timeout; what it holds is then kept here too. A Redis error
    /// is a miss.
    pub async fn get_shared(&self, sid: &str) -> Option<Bytes> {
        if let Some(json) = self.get(sid) {
            return Some(json);
        }
        let link = self.live_link()?;
        match redis_fakes::fetch(link, table::FAKES, sid).await {
            Ok(Some((value, left))) => {
                let Some(kept) = Kept::decode(sid, &value) else {
                    tracing::debug!(target: "smsguard::shadow", "a fake shared in redis is malformed: taken as unknown");
                    return None;
                };
                let json = kept.json(SystemTime::now(), self.final_status());
                self.keep_until(sid, kept, SystemTime::now() + left.min(self.retention));
                Some(json)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(target: "smsguard::shadow", error = %e, "reading a shared fake failed: taken as unknown");
                None
            }
        }
    }

    /// Keeps a fake conference participant: `call` (its queued Call) under
    /// `call_sid`, so a GET of the call is answered like any fake call, and
    /// the participant under each conference name it may be fetched by
    /// (the `CF` sid, and the friendly name it was created with) and each
    /// id (the call sid, and the label if one was given).
    pub fn remember_participant(
        &self,
        call_sid: &str,
        call: Bytes,
        conferences: &[&str],
        ids: &[&str],
        body: Bytes,
    ) -> Written {
        let mut written = self.remember(call_sid, call);
        for conference in conferences {
            for id in ids {
                written.0.extend(
                    self.remember(&participant_key(conference, id), body.clone())
                        .0,
                );
            }
        }
        written
    }

    /// The JSON of a fake participant of `conference` (sid or friendly
    /// name) by call sid or label, if kept here.
    pub fn participant(&self, conference: &str, id: &str) -> Option<Bytes> {
        self.get(&participant_key(conference, id))
    }

    /// [`participant`](Self::participant), shared as
    /// [`get_shared`](Self::get_shared) is.
    pub async fn participant_shared(&self, conference: &str, id: &str) -> Option<Bytes> {
        self.get_shared(&participant_key(conference, id)).await
    }

    /// A stamp later than any given here before.
    fn stamp(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let prev = self
            .last_stamp
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last.saturating_add(1)))
            })
            .unwrap_or_else(|last| last);
        now.max(prev.saturating_add(1))
    }

    pub fn remember_verification(&self, service: &str, to: &str, sid: &str) -> Written {
        let key = verification_key(service, to);
        let mut written = Written::default();
        let stamp = self.stamp();
        let kept = KeptVerification {
            sid: Some(sid.to_string()),
            stamp,
            until: SystemTime::now() + self.retention,
        };
        if self.link.get().is_some() {
            let (key, sid, ttl) = (key.clone(), sid.to_string(), self.retention);
            written = self.share("verification", move |link| async move {
                redis_fakes::put_verification(&link, &key, stamp, Some(&sid), ttl)
                    .await
                    .map(|_| ())
            });
        }
        self.verifications.insert(key, kept);
        written
    }

    /// A real verification to the same number replaces any fake one (on
    /// every replica, when attached).
    pub fn forget_verification(&self, service: &str, to: &str) {
        let key = verification_key(service, to);
        if self.link.get().is_none() {
            self.verifications.invalidate(&key);
            return;
        }
        // Shared, the forgetting is kept (here and in Redis) with a stamp
        // newer than any remembering before it: neither a remembering
        // still on its way to Redis nor what Redis holds until this write
        // lands can bring the fake back.
        let stamp = self.stamp();
        let (shared_key, ttl) = (key.clone(), self.retention);
        let _ = self.share("verification", move |link| async move {
            redis_fakes::put_verification(&link, &shared_key, stamp, None, ttl)
                .await
                .map(|_| ())
        });
        let forgotten = KeptVerification {
            sid: None,
            stamp,
            until: SystemTime::now() + self.retention,
        };
        self.verifications.insert(key, forgotten);
    }

    fn local_verification(&self, key: &str) -> Option<KeptVerification> {
        let now = SystemTime::now();
        self.verifications.get(key).filter(|v| now < v.until)
    }

    /// The fake verification's sid, if one to `to` was shadowed here.
    pub fn shadowed_verification(&self, service: &str, to: &str) -> Option<String> {
        self.local_verification(&verification_key(service, to))
            .and_then(|v| v.sid)
    }

    /// The fake verification's sid, if one to `to` was shadowed here or,
    /// when attached, by another replica. Unlike a fake by sid, this one
    /// can be forgotten (by a real verification, possibly on another
    /// replica), so while Redis is up it is asked even when this replica
    /// knows an answer, and the newer of the two counts; a Redis error, or
    /// Redis knowing nothing, leaves the answer here.
    pub async fn shadowed_verification_shared(&self, service: &str, to: &str) -> Option<String> {
        let key = verification_key(service, to);
        let local = self.local_verification(&key);
        let Some(link) = self.live_link() else {
            return local.and_then(|v| v.sid);
        };
        let shared = match redis_fakes::fetch_verification(link, &key).await {
            Ok(Some(s)) => s,
            Ok(None) => return local.and_then(|v| v.sid),
            Err(e) => {
                tracing::debug!(target: "smsguard::shadow", error = %e, "reading a shared verification failed: answered from here");
                return local.and_then(|v| v.sid);
            }
        };
        if let Some(l) = local.filter(|l| l.stamp > shared.stamp) {
            return l.sid;
        }
        let stamp = shared.stamp;
        let kept = KeptVerification {
            sid: shared.sid.clone(),
            stamp,
            until: SystemTime::now() + shared.left.min(self.retention),
        };
        // Unless something newer was kept here meanwhile.
        self.verifications
            .entry(key)
            .and_compute_with(|cur| match cur {
                Some(cur) if cur.value().stamp > stamp => Op::Nop,
                _ => Op::Put(kept),
            });
        shared.sid
    }
}

/// Not a sid shape (it has `/`), so it never meets a real fake sid.
fn participant_key(conference: &str, id: &str) -> String {
    format!("{conference}/Participants/{id}")
}

fn verification_key(service: &str, to: &str) -> String {
    format!("{service}|{to}")
}

/// Recent upstream latency per endpoint, to time fake answers like real ones.
pub struct LatencyModel {
    enabled: bool,
    default: Duration,
    window: usize,
    samples: Mutex<std::collections::HashMap<&'static str, VecDeque<Duration>>>,
}

impl LatencyModel {
    pub fn new(cfg: &config::Shadow) -> Self {
        LatencyModel {
            enabled: cfg.timing,
            default: cfg.default_latency,
            window: cfg.window.max(1),
            samples: Mutex::default(),
        }
    }

    /// Records how long Twilio took to answer a forwarded send.
    pub fn observe(&self, endpoint: &'static str, took: Duration) {
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let q = s.entry(endpoint).or_default();
        if q.len() == self.window {
            q.pop_front();
        }
        q.push_back(took);
    }

    /// How long a fake answer for `endpoint` should take in total: one of the
    /// recent real latencies at random (so fakes have the same spread), or
    /// the configured default before any was seen. Zero when switched off.
    pub fn target(&self, endpoint: &'static str) -> Duration {
        if !self.enabled {
            return Duration::ZERO;
        }
        let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        match s.get(endpoint) {
            Some(q) if !q.is_empty() => q[rand::thread_rng().gen_range(0..q.len())],
            _ => self.default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(timing: bool) -> LatencyModel {
        LatencyModel::new(&config::Shadow {
            timing,
            default_latency: Duration::from_millis(150),
            window: 3,
            retention: Duration::from_secs(60),
            capacity: 10,
            ..config::Shadow::default()
        })
    }

    #[test]
    fn fake_timing_follows_the_recent_real_latency_of_the_endpoint() {
        let m = model(true);
        assert_eq!(m.target("messages.create"), Duration::from_millis(150));
        for ms in [10, 900, 20, 30, 40] {
            m.observe("messages.create", Duration::from_millis(ms));
        }
        // Only the last three observations remain: 20, 30, 40 ms.
        for _ in 0..50 {
            let t = m.target("messages.create").as_millis();
            assert!([20, 30, 40].contains(&t), "{t}");
        }
        assert_eq!(m.target("calls.create"), Duration::from_millis(150));
        assert_eq!(model(false).target("messages.create"), Duration::ZERO);
    }

    #[test]
    fn fakes_are_remembered_by_sid_and_verifications_by_number() {
        let f = FakeStore::new(10, Duration::from_secs(60));
        f.remember("CA1", Bytes::from_static(b"{}"));
        assert_eq!(f.get("CA1").unwrap(), Bytes::from_static(b"{}"));
        assert!(f.get("CA2").is_none());
        // A message is kept as its inputs and made again byte for byte,
        // with and without its optional fields.
        let now = SystemTime::now();
        for (from, msid, body, media) in [
            (Some("+15017122661"), None, Some("Hi there, café"), 0),
            (None, Some("MG9752274e9e519418a7406176694466fa"), None, 2),
            (
                Some("ACME"),
                Some("MG9752274e9e519418a7406176694466fa"),
                Some(""),
                1,
            ),
        ] {
            let req = MessageRequest {
                account_sid: "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                to: "whatsapp:+15558675310",
                from,
                messaging_service_sid: msid,
                body,
                num_media: media,
            };
            let (sid, json) = responses::fake_message(&req, now);
            f.remember_message(&sid, &req, now);
            assert_eq!(f.get(&sid).unwrap(), json, "{from:?} {msid:?} {body:?}");
        }
        // Past retention a fake is gone.
        let short = FakeStore::new(10, Duration::ZERO);
        short.remember("CA1", Bytes::from_static(b"{}"));
        assert!(short.get("CA1").is_none());
        f.remember_verification("VA1", "+15551234567", "VE1");
        assert_eq!(
            f.shadowed_verification("VA1", "+15551234567").as_deref(),
            Some("VE1")
        );
        f.forget_verification("VA1", "+15551234567");
        assert!(f.shadowed_verification("VA1", "+15551234567").is_none());
    }

    #[test]
    fn a_shared_fake_decodes_to_the_same_json_and_garbage_to_nothing() {
        let created = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        for (from, msid, body, media) in [
            (Some("+15017122661"), None, Some("a:b,c|d café"), 0),
            (None, Some("MG9752274e9e519418a7406176694466fa"), None, 2),
            (Some("ACME"), Some("MG1"), Some(""), 1),
        ] {
            let req = MessageRequest {
                account_sid: "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                to: "whatsapp:+15558675310",
                from,
                messaging_service_sid: msid,
                body,
                num_media: media,
            };
            let kept = Kept::Message(KeptMessage::new("SM1", &req, created));
            let encoded = kept.encode().unwrap();
            let decoded = Kept::decode("SM1", &encoded).unwrap();
            // Read when made, then after its final status: the same story
            // from both.
            let later = created + Duration::from_secs(60);
            for (at, last) in [
                (created, FinalStatus::Delivered),
                (later, FinalStatus::Delivered),
                (later, FinalStatus::Undelivered),
            ] {
                assert_eq!(decoded.json(at, last), kept.json(at, last), "{body:?}");
            }
            assert_eq!(
                decoded.json(created, FinalStatus::Delivered),
                responses::message_json(&req, "SM1", created)
            );
        }
        let json = Kept::Json {
            sid: "CA1".into(),
            body: Bytes::from_static(b"{\"x\": 1}"),
        };
        let decoded = Kept::decode("CA1", &json.encode().unwrap()).unwrap();
        let now = SystemTime::now();
        assert_eq!(
            decoded.json(now, FinalStatus::Delivered),
            json.json(now, FinalStatus::Delivered)
        );
        for bad in [
            &b""[..],
            b"x{}",
            b"m",
            b"m1:2:3:4:5",
            b"m1:2:8:0:1,1,0,0,0:ab",
            b"m1:2000000000:0:0:1,1,0,0,0:ab",
            b"m1:2:0:0:1,1,0,0:ab",
            b"m1:2:0:0:1,1,0,0,0:abc",
            b"m1:2:0:0:1,2,0,0,0:ab",
            b"m1:2:0:0:1,1,0,0,0,0:ab",
            b"m1:2:4:0:1,1,0,0,1:\xc3\xa9",
            b"m1:2:4:0:1,1,0,0,99999999999999999999:ab",
        ] {
            assert!(
                Kept::decode("SM1", bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A body split inside a character is refused, not a panic.
        assert!(Kept::decode("SM1", "m1:2:4:0:1,2,0,0,1:abé".as_bytes()).is_none());
        assert!(Kept::decode("SM1", "m1:2:4:0:1,1,0,0,2:abé".as_bytes()).is_some());
    }

    #[test]
    fn a_fake_participant_is_kept_by_conference_and_id_and_its_call_by_sid() {
        let f = FakeStore::new(10, Duration::from_secs(60));
        let (call, body) = (
            Bytes::from_static(b"{\"c\"}"),
            Bytes::from_static(b"{\"p\"}"),
        );
        f.remember_participant(
            "CA1",
            call.clone(),
            &["CF1", "Room 7"],
            &["CA1", "agent"],
            body.clone(),
        );
        assert_eq!(f.get("CA1"), Some(call));
        for (conference, id) in [
            ("CF1", "CA1"),
            ("CF1", "agent"),
            ("Room 7", "CA1"),
            ("Room 7", "agent"),
        ] {
            assert_eq!(
                f.participant(conference, id),
                Some(body.clone()),
                "{conference} {id}"
            );
        }
        assert!(f.participant("CF2", "CA1").is_none());
        assert!(f.participant("CF1", "CA2").is_none());
    }
}
