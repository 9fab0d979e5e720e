//! What keeps a shadow ban invisible after the first answer: fakes are
//! remembered so a later GET of a fake sid (or a check of a fake
//! verification) is answered consistently, and fake answers take about as
//! long as Twilio's real answers have lately.
//!
//! Nothing about a fake ever reaches Twilio. Memory is bounded: fakes are
//! kept for a retention period, up to a capacity.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use rand::Rng;

use crate::config;
use crate::store::Lru;
use crate::twilio::responses::{self, MessageRequest};

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

    fn json(&self) -> Bytes {
        let req = MessageRequest {
            account_sid: self.field(1),
            to: self.field(2),
            from: self.optional(3),
            messaging_service_sid: self.optional(4),
            body: self.optional(5),
            num_media: self.num_media as usize,
        };
        responses::message_json(&req, self.field(0), self.created)
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

/// Fakes by sid, and shadowed verifications by service and number.
pub struct FakeStore {
    /// Bounded by count (least recently made go first) and by age.
    by_sid: Lru<Option<Entry>>,
    retention: Duration,
    /// `VA...|+15551234567` → the fake verification's sid.
    verifications: Cache<String, String>,
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
        }
    }

    fn keep(&self, sid: &str, kept: Kept) {
        let until = SystemTime::now() + self.retention;
        self.by_sid
            .with(sid, || None, |_| {}, |e| *e = Some(Entry { kept, until }));
    }

    /// Keeps a fake Message made by [`responses::fake_message`] from `req`
    /// at `created`.
    pub fn remember_message(&self, sid: &str, req: &MessageRequest, created: SystemTime) {
        self.keep(sid, Kept::Message(KeptMessage::new(sid, req, created)));
    }

    /// Keeps any other fake as its JSON.
    pub fn remember(&self, sid: &str, body: Bytes) {
        let sid: Box<str> = sid.into();
        self.keep(&sid.clone(), Kept::Json { sid, body });
    }

    /// The JSON of the fake `sid`, as first answered.
    pub fn get(&self, sid: &str) -> Option<Bytes> {
        let now = SystemTime::now();
        self.by_sid
            .update(sid, |e| {
                let e = e.as_ref().filter(|e| e.sid() == sid && now < e.until)?;
                Some(match &e.kept {
                    Kept::Message(m) => m.json(),
                    Kept::Json { body, .. } => body.clone(),
                })
            })
            .flatten()
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
    ) {
        self.remember(call_sid, call);
        for conference in conferences {
            for id in ids {
                self.remember(&participant_key(conference, id), body.clone());
            }
        }
    }

    /// The JSON of a fake participant of `conference` (sid or friendly
    /// name) by call sid or label.
    pub fn participant(&self, conference: &str, id: &str) -> Option<Bytes> {
        self.get(&participant_key(conference, id))
    }

    pub fn remember_verification(&self, service: &str, to: &str, sid: &str) {
        self.verifications
            .insert(verification_key(service, to), sid.to_string());
    }

    /// A real verification to the same number replaces any fake one.
    pub fn forget_verification(&self, service: &str, to: &str) {
        self.verifications
            .invalidate(&verification_key(service, to));
    }

    pub fn shadowed_verification(&self, service: &str, to: &str) -> Option<String> {
        self.verifications.get(&verification_key(service, to))
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
