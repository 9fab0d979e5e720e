//! The in-memory store: bounded LRU tables (moka) of small mutex-guarded
//! states.
//!
//! moka's default TinyLFU admission may refuse a new key when the cache is
//! full, which for a rate limit means the key is never counted: fail open.
//! Every table here uses LRU eviction instead, so a new key is always
//! admitted and the keys an attack keeps hitting stay resident. Evicting a
//! state that still mattered is counted (`evicted_live`) and logged, never
//! silent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use super::{BackoffState, BlockEntry, Store, StoreStats, Window, Windows};
use crate::clock::Millis;

type Shared<T> = Arc<Mutex<T>>;

#[derive(Debug, Clone, Copy, Default)]
struct Offences {
    count: u32,
    last: Millis,
}

pub struct MemoryStore {
    counters: Cache<String, Shared<Windows>>,
    backoffs: Cache<String, Shared<BackoffState>>,
    blocks: Cache<String, BlockEntry>,
    offences: Cache<String, Shared<Offences>>,
    spend: Cache<String, Shared<u64>>,
    shared: Arc<Watch>,
}

/// What eviction listeners need to tell live state from dead.
#[derive(Default)]
struct Watch {
    now: AtomicU64,
    evicted_live: AtomicU64,
    /// Backoff states are live until this long after their last attempt.
    backoff_live_for: AtomicU64,
}

impl Watch {
    fn evicted(&self, what: &str, key: &str) {
        let n = self.evicted_live.fetch_add(1, Ordering::Relaxed) + 1;
        // One line per power of two keeps a flood from flooding the log too.
        if n.is_power_of_two() {
            tracing::warn!(
                table = what,
                key_kind = key.split('=').next().unwrap_or(""),
                evicted_live = n,
                "state evicted while still live: raise store.capacity"
            );
        }
    }
}

impl MemoryStore {
    /// `capacity` bounds each counter/backoff table, `block_capacity` the
    /// blocks and offences.
    pub fn new(capacity: u64, block_capacity: u64) -> Self {
        let shared = Arc::new(Watch::default());
        let w = shared.clone();
        let counters = Cache::builder()
            .max_capacity(capacity)
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |k: Arc<String>, v: Shared<Windows>, cause| {
                if cause == RemovalCause::Size {
                    let now = w.now.load(Ordering::Relaxed);
                    let live = v
                        .lock()
                        .map(|s| s.windows.iter().any(|win| win.live(s.longest, now)))
                        .unwrap_or(true);
                    if live {
                        w.evicted("counters", &k);
                    }
                }
            })
            .build();
        let w = shared.clone();
        let backoffs = Cache::builder()
            .max_capacity(capacity)
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |k: Arc<String>, v: Shared<BackoffState>, cause| {
                if cause == RemovalCause::Size {
                    let now = w.now.load(Ordering::Relaxed);
                    let window = w.backoff_live_for.load(Ordering::Relaxed);
                    let live = v
                        .lock()
                        .map(|s| s.sends > 0 && now < s.last_attempt.saturating_add(window))
                        .unwrap_or(true);
                    if live {
                        w.evicted("backoff", &k);
                    }
                }
            })
            .build();
        let w = shared.clone();
        let blocks = Cache::builder()
            .max_capacity(block_capacity)
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |k: Arc<String>, v: BlockEntry, cause| {
                if cause == RemovalCause::Size && v.until > w.now.load(Ordering::Relaxed) {
                    w.evicted("blocks", &k);
                }
            })
            .build();
        let offences = Cache::builder()
            .max_capacity(block_capacity)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        // Spend keys are one per cap and window: few, and old windows age out.
        let spend = Cache::builder()
            .max_capacity(10_000)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        MemoryStore {
            spend,
            counters,
            backoffs,
            blocks,
            offences,
            shared,
        }
    }

    /// Tells the store how long a backoff state matters after its last
    /// attempt, so evicting one can be judged live or dead.
    pub fn set_backoff_lifetime(&self, ms: Millis) {
        self.shared.backoff_live_for.store(ms, Ordering::Relaxed);
    }

    fn saw(&self, now: Millis) {
        self.shared.now.fetch_max(now, Ordering::Relaxed);
    }

    /// Runs moka's pending maintenance so sizes and evictions are current.
    pub fn sync(&self) {
        self.counters.run_pending_tasks();
        self.backoffs.run_pending_tasks();
        self.blocks.run_pending_tasks();
        self.offences.run_pending_tasks();
        self.spend.run_pending_tasks();
    }
}

impl Store for MemoryStore {
    fn block(&self, key: &str, now: Millis) -> Option<BlockEntry> {
        self.saw(now);
        self.blocks.get(key).filter(|b| b.until > now)
    }

    fn set_block(&self, key: &str, entry: BlockEntry) {
        self.blocks.insert(key.to_string(), entry);
    }

    fn remove_block(&self, key: &str) -> bool {
        self.blocks.remove(key).is_some()
    }

    fn blocks(&self, now: Millis) -> Vec<(String, BlockEntry)> {
        let mut v: Vec<_> = self
            .blocks
            .iter()
            .filter(|(_, b)| b.until > now)
            .map(|(k, b)| (k.to_string(), b))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn offend(&self, key: &str, now: Millis, forgive_after: Millis) -> u32 {
        let e = self
            .offences
            .get_with_by_ref(key, || Arc::new(Mutex::new(Offences::default())));
        let mut o = e.lock().unwrap_or_else(|p| p.into_inner());
        if o.count > 0 && now.saturating_sub(o.last) > forgive_after {
            o.count = 0;
        }
        o.count = o.count.saturating_add(1);
        o.last = now;
        o.count
    }

    fn hit(&self, key: &str, periods: &[Millis], now: Millis, counts: &mut [u64]) {
        self.saw(now);
        let e = self.counters.get_with_by_ref(key, || {
            Arc::new(Mutex::new(Windows {
                windows: vec![Window::default(); periods.len()],
                longest: periods.iter().copied().max().unwrap_or(1),
            }))
        });
        let mut s = e.lock().unwrap_or_else(|p| p.into_inner());
        if s.windows.len() != periods.len() {
            // The policy was reloaded with other rates for this key.
            s.windows = vec![Window::default(); periods.len()];
            s.longest = periods.iter().copied().max().unwrap_or(1);
        }
        for ((w, p), c) in s.windows.iter_mut().zip(periods).zip(counts.iter_mut()) {
            *c = w.hit(*p, now);
        }
    }

    fn backoff(&self, key: &str, now: Millis, update: &mut dyn FnMut(&mut BackoffState)) {
        self.saw(now);
        let e = self
            .backoffs
            .get_with_by_ref(key, || Arc::new(Mutex::new(BackoffState::default())));
        let mut s = e.lock().unwrap_or_else(|p| p.into_inner());
        update(&mut s);
    }

    fn spend(&self, key: &str, amount: u64, cap: u64) -> Result<u64, u64> {
        let e = self.spend.get_with_by_ref(key, || Arc::new(Mutex::new(0)));
        let mut s = e.lock().unwrap_or_else(|p| p.into_inner());
        match s.checked_add(amount) {
            Some(total) if total <= cap => {
                *s = total;
                Ok(total)
            }
            _ => Err(*s),
        }
    }

    fn refund(&self, key: &str, amount: u64) {
        if let Some(e) = self.spend.get(key) {
            let mut s = e.lock().unwrap_or_else(|p| p.into_inner());
            *s = s.saturating_sub(amount);
        }
    }

    fn spent(&self, key: &str) -> u64 {
        self.spend
            .get(key)
            .map(|e| *e.lock().unwrap_or_else(|p| p.into_inner()))
            .unwrap_or(0)
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            counters: self.counters.entry_count(),
            backoffs: self.backoffs.entry_count(),
            blocks: self.blocks.entry_count(),
            offences: self.offences.entry_count(),
            evicted_live: self.shared.evicted_live.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_still_admits_new_keys_and_keeps_the_hot_one() {
        let s = MemoryStore::new(100, 100);
        let mut c = [0u64; 1];
        // A hot key hit between every new key must survive a flood of 10x
        // capacity, and the new keys must each be counted (not refused).
        for i in 0..1_000u64 {
            s.hit("hot", &[60_000], 1_000 + i, &mut c);
            assert_eq!(c[0], i + 1, "hot key lost its count at {i}");
            let key = format!("k{i}");
            s.hit(&key, &[60_000], 1_000 + i, &mut c);
            s.hit(&key, &[60_000], 1_000 + i, &mut c);
            assert_eq!(c[0], 2, "new key {key} was not admitted");
        }
        s.sync();
        let st = s.stats();
        assert!(st.counters <= 100, "{st:?}");
        // The flood pushed out keys that were still inside their window: counted.
        assert!(st.evicted_live > 0, "{st:?}");
    }

    #[test]
    fn blocks_expire_and_offences_are_forgiven() {
        let s = MemoryStore::new(10, 10);
        let b = BlockEntry {
            since: 0,
            until: 100,
            rule: "manual".into(),
            action: crate::config::Action::Shadow,
            offence: 1,
        };
        s.set_block("region=UZ", b.clone());
        assert_eq!(s.block("region=UZ", 99), Some(b));
        assert_eq!(s.block("region=UZ", 100), None);
        assert_eq!(s.offend("k", 0, 1_000), 1);
        assert_eq!(s.offend("k", 500, 1_000), 2);
        assert_eq!(s.offend("k", 2_000, 1_000), 1);
    }
}
