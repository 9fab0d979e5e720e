//! What keeps a shadow ban invisible after the first answer: fakes are
//! remembered so a later GET of a fake sid (or a check of a fake
//! verification) is answered consistently, and fake answers take about as
//! long as Twilio's real answers have lately.
//!
//! Nothing about a fake ever reaches Twilio. Memory is bounded: fakes are
//! kept for a retention period, up to a capacity.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use rand::Rng;

use crate::config;

/// A fake resource as first answered.
#[derive(Debug, Clone)]
pub struct Fake {
    pub body: Bytes,
}

/// Fakes by sid, and shadowed verifications by service and number.
pub struct FakeStore {
    by_sid: Cache<String, Arc<Fake>>,
    /// `VA...|+15551234567` → the fake verification's sid.
    verifications: Cache<String, String>,
}

impl FakeStore {
    pub fn new(capacity: u64, retention: Duration) -> Self {
        FakeStore {
            by_sid: bounded(capacity, retention),
            verifications: bounded(capacity, retention),
        }
    }

    pub fn remember(&self, sid: &str, body: Bytes) {
        self.by_sid.insert(sid.to_string(), Arc::new(Fake { body }));
    }

    pub fn get(&self, sid: &str) -> Option<Arc<Fake>> {
        self.by_sid.get(sid)
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

fn bounded<V: Clone + Send + Sync + 'static>(
    capacity: u64,
    retention: Duration,
) -> Cache<String, V> {
    Cache::builder()
        .max_capacity(capacity)
        .time_to_live(retention)
        .eviction_policy(EvictionPolicy::lru())
        .build()
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
        f.remember("SM1", Bytes::from_static(b"{}"));
        assert_eq!(f.get("SM1").unwrap().body, Bytes::from_static(b"{}"));
        assert!(f.get("SM2").is_none());
        f.remember_verification("VA1", "+15551234567", "VE1");
        assert_eq!(
            f.shadowed_verification("VA1", "+15551234567").as_deref(),
            Some("VE1")
        );
        f.forget_verification("VA1", "+15551234567");
        assert!(f.shadowed_verification("VA1", "+15551234567").is_none());
    }
}
