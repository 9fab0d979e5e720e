//! The in-memory store: bounded LRU tables.
//!
//! The per-number tables (rate counters; numbers, each with its backoff
//! and its pending confirmation in one entry), which grow with every
//! distinct number an attack sprays, are compact sharded LRU slabs
//! ([`Lru`]): a few dozen bytes per key and no allocation per key. Blocks,
//! offences and spend, which stay small, are moka caches with LRU eviction
//! (moka's default TinyLFU admission may refuse a new key when full, which
//! for a limit would mean failing open). Either way a new key is always
//! admitted and the keys an attack keeps hitting stay resident. Evicting a
//! state that still mattered is counted (`evicted_live`) and logged, never
//! silent.
//!
//! Blocks set by hand (rule `manual`) are pinned: they live in a table of
//! their own, bounded by what operators can type ([`MANUAL_BLOCKS`]), that
//! traffic never writes to, so no flood of automatic blocks can push one
//! out. An automatic block on a key that holds a manual one renews the
//! pinned entry. Automatic blocks evicted while still active are counted
//! apart (`blocks_evicted_live`) and logged at most every ten seconds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use super::{
    key_kind, BackoffState, BlockEntry, Conversion, Counters, Origin, Pending, Store, StoreStats,
};
use crate::base::clock::Millis;
use crate::base::Lru;

type Shared<T> = Arc<Mutex<T>>;

/// Most manual blocks held at once: far more than operators set by hand.
pub const MANUAL_BLOCKS: usize = 10_000;

/// The rule of a block set by hand.
const MANUAL: &str = "manual";

/// At most one log line about evicted automatic blocks per this long.
const EVICTION_LOG_EVERY: Millis = 10_000;

/// One number's backoff and pending confirmation, in one entry: a number
/// both stages track pays one slot and one index entry, not two. The two
/// parts are kept apart (`parts`): a part not yet created reads as absent,
/// as it would in a table of its own.
#[derive(Debug, Default)]
struct Number {
    // BackoffState
    last_sent: Millis,
    last_attempt: Millis,
    sends: u32,
    // Pending
    sent_at: Millis,
    /// Seconds, not milliseconds: both only need the second they fall
    /// in, and four bytes each keep the entry in 64.
    confirmed_at: u32,
    vouched_until: u32,
    origin: Option<Arc<Origin>>,
    client_ip: Option<IpAddr>,
    product: u8,
    counted: bool,
    /// Which parts exist: `BACKOFF`, `PENDING`.
    parts: u8,
}

fn seconds(t: Millis) -> u32 {
    u32::try_from(t / 1000).unwrap_or(u32::MAX)
}

fn millis(s: u32) -> Millis {
    Millis::from(s) * 1000
}

const BACKOFF: u8 = 1;
const PENDING: u8 = 2;
const DAY: Millis = 86_400_000;

impl Number {
    /// Makes `part` exist (reading as created from now on), counted in
    /// `count` the first time.
    fn create(&mut self, part: u8, count: &AtomicU64) {
        if self.parts & part == 0 {
            self.parts |= part;
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn backoff(&self) -> BackoffState {
        BackoffState {
            sends: self.sends,
            last_sent: self.last_sent,
            last_attempt: self.last_attempt,
        }
    }

    fn set_backoff(&mut self, s: BackoffState) {
        self.sends = s.sends;
        self.last_sent = s.last_sent;
        self.last_attempt = s.last_attempt;
    }

    /// The pending part, moved out (the origin is not cloned).
    fn take_pending(&mut self) -> Pending {
        Pending {
            sent_at: self.sent_at,
            confirmed_at: millis(self.confirmed_at),
            vouched_until: millis(self.vouched_until),
            client_ip: self.client_ip,
            product: self.product,
            counted: self.counted,
            origin: self.origin.take(),
        }
    }

    fn put_pending(&mut self, p: Pending) {
        self.sent_at = p.sent_at;
        // A confirmation in the first second still reads as one.
        self.confirmed_at = match p.confirmed_at {
            0 => 0,
            t => seconds(t).max(1),
        };
        self.vouched_until = seconds(p.vouched_until.saturating_add(999));
        self.client_ip = p.client_ip;
        self.product = p.product;
        self.counted = p.counted;
        self.origin = p.origin;
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Offences {
    count: u32,
    last: Millis,
}

pub struct MemoryStore {
    counters: Lru<Counters>,
    /// Per number (E.164 text): its backoff and its pending confirmation.
    numbers: Lru<Number>,
    blocks: Cache<String, BlockEntry>,
    /// Manual blocks, pinned (see the module docs).
    manual: RwLock<HashMap<String, BlockEntry>>,
    offences: Cache<String, Shared<Offences>>,
    spend: Lru<u64>,
    conversions: Lru<Conversion>,
    pairs: Lru<Millis>,
    flows: Lru<Millis>,
    shared: Arc<Watch>,
}

/// What eviction listeners need to tell live state from dead.
#[derive(Default)]
struct Watch {
    now: AtomicU64,
    evicted_live: AtomicU64,
    /// Backoff states are live until this long after their last attempt.
    backoff_live_for: AtomicU64,
    /// Numbers with a backoff part, and with a pending part.
    backoffs: AtomicU64,
    pending: AtomicU64,
    /// Block entries held per key kind (`prefix:8`), expired ones included:
    /// a kind with none needs no lookup.
    block_kinds: RwLock<HashMap<Box<str>, u64>>,
    /// The sum of `block_kinds`: when 0, no lookup at all.
    block_entries: AtomicU64,
    /// Manual blocks held (expired ones included): when 0, their table is
    /// not read.
    manual_entries: AtomicU64,
    /// Automatic blocks evicted while active, and how many of them the
    /// log has not told of yet, and when it last did.
    blocks_evicted_live: AtomicU64,
    blocks_evicted_unlogged: AtomicU64,
    blocks_evicted_logged_at: AtomicU64,
}

impl Watch {
    fn evicted(&self, what: &str, kind: &str) {
        let n = self.evicted_live.fetch_add(1, Ordering::Relaxed) + 1;
        // One line per power of two keeps a flood from flooding the log too.
        if n.is_power_of_two() {
            tracing::warn!(
                table = what,
                key_kind = kind,
                evicted_live = n,
                "state evicted while still live: raise store.capacity"
            );
        }
    }

    /// An automatic block pushed out of a full table while still active:
    /// counted, and logged with how many at most every
    /// [`EVICTION_LOG_EVERY`].
    fn block_evicted(&self, kind: &str) {
        self.evicted("blocks", kind);
        self.blocks_evicted_live.fetch_add(1, Ordering::Relaxed);
        self.blocks_evicted_unlogged.fetch_add(1, Ordering::Relaxed);
        let now = self.now.load(Ordering::Relaxed);
        let last = self.blocks_evicted_logged_at.load(Ordering::Relaxed);
        if (last == 0 || now >= last.saturating_add(EVICTION_LOG_EVERY))
            && self
                .blocks_evicted_logged_at
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let n = self.blocks_evicted_unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(
                evicted = n,
                total = self.blocks_evicted_live.load(Ordering::Relaxed),
                key_kind = kind,
                "active automatic blocks evicted from the full block table: raise store.block_capacity (manual blocks are kept)"
            );
        }
    }

    /// Accounts for a number pushed out of its table: each part it held is
    /// gone, and counted when it still mattered (a backoff streak within
    /// its lifetime as of `now`, a send awaiting its confirmation within a
    /// day).
    fn number_evicted(&self, n: &Number, now: Millis) {
        if n.parts & BACKOFF != 0 {
            self.backoffs.fetch_sub(1, Ordering::Relaxed);
            let window = self.backoff_live_for.load(Ordering::Relaxed);
            if n.sends > 0 && now < n.last_attempt.saturating_add(window) {
                self.evicted("backoff", "to");
            }
        }
        if n.parts & PENDING != 0 {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            let now = self.now.load(Ordering::Relaxed);
            // Awaiting a confirmation, or vouched for (a returning user
            // evicted becomes a stranger again).
            if (n.confirmed_at == 0 && n.sent_at + DAY > now) || millis(n.vouched_until) > now {
                self.evicted("pending", "to");
            }
        }
    }

    fn block_added(&self, key: &str) {
        let kind = key_kind(key);
        let mut kinds = self.block_kinds.write().unwrap_or_else(|p| p.into_inner());
        self.block_entries.fetch_add(1, Ordering::Relaxed);
        match kinds.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                kinds.insert(kind.into(), 1);
            }
        }
    }

    fn block_gone(&self, key: &str) {
        let mut kinds = self.block_kinds.write().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = kinds.get_mut(key_kind(key)) {
            if *n > 0 {
                *n -= 1;
                self.block_entries.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl MemoryStore {
    /// `capacity` bounds each per-key table (counters, numbers, adaptive
    /// keys and pairs), `block_capacity` the blocks and offences.
    pub fn new(capacity: u64, block_capacity: u64) -> Self {
        let shared = Arc::new(Watch::default());
        let w = shared.clone();
        let blocks = Cache::builder()
            .max_capacity(block_capacity)
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |k: Arc<String>, v: BlockEntry, cause| {
                if cause == RemovalCause::Size && v.until > w.now.load(Ordering::Relaxed) {
                    w.block_evicted(key_kind(&k));
                }
                // Every removal, whatever its cause, ends one entry counted
                // by `set_block`.
                w.block_gone(&k);
            })
            .build();
        let offences = Cache::builder()
            .max_capacity(block_capacity)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        MemoryStore {
            // Spend keys are one per cap and window: few, and old windows
            // age out.
            spend: Lru::new(10_000),
            counters: Lru::new(capacity),
            numbers: Lru::new(capacity),
            conversions: Lru::new(capacity),
            pairs: Lru::new(capacity),
            // One key per account and product.
            flows: Lru::new(10_000),
            blocks,
            manual: RwLock::default(),
            offences,
            shared,
        }
    }

    /// The manual block on `key` (expired or not), if it is pinned.
    fn manual(&self, key: &str) -> Option<BlockEntry> {
        if self.shared.manual_entries.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let m = self.manual.read().unwrap_or_else(|p| p.into_inner());
        m.get(key).cloned()
    }

    /// Pins `entry` on `key` in the manual table; when it is full, its
    /// expired entries go first, and if none has, an error.
    fn pin(&self, key: &str, entry: BlockEntry, now: Millis) -> Result<(), String> {
        let mut m = self.manual.write().unwrap_or_else(|p| p.into_inner());
        if !m.contains_key(key) && m.len() >= MANUAL_BLOCKS {
            let w = &self.shared;
            m.retain(|k, b| {
                let keep = b.until > now;
                if !keep {
                    w.block_gone(k);
                    w.manual_entries.fetch_sub(1, Ordering::Relaxed);
                }
                keep
            });
            if m.len() >= MANUAL_BLOCKS {
                return Err(format!(
                    "{MANUAL_BLOCKS} manual blocks are active, the most the guard keeps: lift some (DELETE /api/blocks) or block a wider key (a prefix)"
                ));
            }
        }
        if m.insert(key.to_string(), entry).is_none() {
            self.shared.block_added(key);
            self.shared.manual_entries.fetch_add(1, Ordering::Relaxed);
        }
        drop(m);
        // One entry per key: the automatic table's goes.
        self.blocks.invalidate(key);
        Ok(())
    }

    /// Takes `key` out of the manual table; whether it was there.
    fn unpin(&self, key: &str) -> bool {
        if self.shared.manual_entries.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut m = self.manual.write().unwrap_or_else(|p| p.into_inner());
        let gone = m.remove(key).is_some();
        if gone {
            self.shared.block_gone(key);
            self.shared.manual_entries.fetch_sub(1, Ordering::Relaxed);
        }
        gone
    }

    /// Automatic blocks evicted from the full table while still active.
    pub fn blocks_evicted_live(&self) -> u64 {
        self.shared.blocks_evicted_live.load(Ordering::Relaxed)
    }

    /// Tells the store how long a backoff state matters after its last
    /// attempt, so evicting one can be judged live or dead.
    pub fn set_backoff_lifetime(&self, ms: Millis) {
        self.shared.backoff_live_for.store(ms, Ordering::Relaxed);
    }

    fn saw(&self, now: Millis) {
        // Most calls see the same or a later instant: a plain load first
        // spares the cache line a write.
        if now > self.shared.now.load(Ordering::Relaxed) {
            self.shared.now.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Runs moka's pending maintenance so sizes and evictions are current.
    pub fn sync(&self) {
        self.blocks.run_pending_tasks();
        self.offences.run_pending_tasks();
    }
}

impl MemoryStore {
    /// Remembers at least `count` offences on `key`, the last at `last`
    /// (a shared store's mirror of offences another replica recorded).
    pub fn seed_offences(&self, key: &str, count: u32, last: Millis) {
        let e = self
            .offences
            .get_with_by_ref(key, || Arc::new(Mutex::new(Offences::default())));
        let mut o = e.lock().unwrap_or_else(|p| p.into_inner());
        if o.count < count {
            o.count = count;
            o.last = o.last.max(last);
        }
    }

    /// Records `total` as the spend under `key` (a shared store's mirror
    /// of the fleet's total, for status and alerts).
    pub fn mirror_spent(&self, key: &str, total: u64) {
        self.spend.with(key, || 0, |_| {}, |s| *s = total);
    }
}

impl Store for MemoryStore {
    fn block(&self, key: &str, now: Millis) -> Option<BlockEntry> {
        self.saw(now);
        if let Some(b) = self.manual(key).filter(|b| b.until > now) {
            return Some(b);
        }
        self.blocks.get(key).filter(|b| b.until > now)
    }

    fn set_block(&self, key: &str, entry: BlockEntry) {
        // A manual block, or any block on a key a manual block pins, stays
        // pinned; only when the manual table is full does a manual block
        // (mirrored from another replica) go to the automatic one.
        if entry.rule.as_ref() == MANUAL || self.manual(key).is_some() {
            let now = self.shared.now.load(Ordering::Relaxed);
            match self.pin(key, entry.clone(), now) {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(%key, error = %e, "manual block kept in the automatic table")
                }
            }
        }
        self.shared.block_added(key);
        self.blocks.insert(key.to_string(), entry);
    }

    fn set_manual_block(&self, key: &str, entry: BlockEntry) -> Result<(), String> {
        self.saw(entry.since);
        self.pin(key, entry, self.shared.now.load(Ordering::Relaxed))
    }

    fn may_block(&self, kind: &str) -> bool {
        if self.shared.block_entries.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let kinds = self
            .shared
            .block_kinds
            .read()
            .unwrap_or_else(|p| p.into_inner());
        kinds.get(kind).is_some_and(|n| *n > 0)
    }

    fn remove_block(&self, key: &str) -> bool {
        let pinned = self.unpin(key);
        self.blocks.remove(key).is_some() || pinned
    }

    fn blocks(&self, now: Millis) -> Vec<(String, BlockEntry)> {
        let mut v: Vec<_> = self
            .blocks
            .iter()
            .filter(|(_, b)| b.until > now)
            .map(|(k, b)| (k.to_string(), b))
            .collect();
        if self.shared.manual_entries.load(Ordering::Relaxed) > 0 {
            let m = self.manual.read().unwrap_or_else(|p| p.into_inner());
            v.retain(|(k, _)| !m.contains_key(k));
            v.extend(
                m.iter()
                    .filter(|(_, b)| b.until > now)
                    .map(|(k, b)| (k.clone(), b.clone())),
            );
        }
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

    fn peek_hit(&self, key: &str, periods: &[Millis], now: Millis, counts: &mut [u64]) {
        let found = self.counters.update(key, |c| {
            let mut copy = c.clone();
            copy.hit(periods, now, counts);
        });
        if found.is_none() {
            counts.fill(1);
        }
    }

    fn peek_offend(&self, key: &str, now: Millis, forgive_after: Millis) -> u32 {
        let Some(e) = self.offences.get(key) else {
            return 1;
        };
        let o = e.lock().unwrap_or_else(|p| p.into_inner());
        let kept = if o.count > 0 && now.saturating_sub(o.last) > forgive_after {
            0
        } else {
            o.count
        };
        kept.saturating_add(1)
    }

    fn peek_backoff(&self, key: &str) -> Option<BackoffState> {
        self.numbers
            .update(key, |n| (n.parts & BACKOFF != 0).then(|| n.backoff()))
            .flatten()
    }

    fn hit(&self, key: &str, periods: &[Millis], now: Millis, counts: &mut [u64]) {
        self.saw(now);
        let w = &self.shared;
        self.counters.with(
            key,
            || Counters::new(periods.len()),
            |old| {
                if old.value.live_until() > now {
                    w.evicted("counters", key_kind(key));
                }
            },
            |s| s.hit(periods, now, counts),
        );
    }

    fn backoff(&self, key: &str, now: Millis, update: &mut dyn FnMut(&mut BackoffState)) {
        self.saw(now);
        let w = &self.shared;
        self.numbers.with(
            key,
            Number::default,
            |old| w.number_evicted(old.value, now),
            |n| {
                n.create(BACKOFF, &w.backoffs);
                let mut s = n.backoff();
                update(&mut s);
                n.set_backoff(s);
            },
        );
    }

    fn spend(&self, key: &str, amount: u64, cap: u64) -> Result<u64, u64> {
        self.spend.with(
            key,
            || 0,
            |_| {},
            |s| match s.checked_add(amount) {
                Some(total) if total <= cap => {
                    *s = total;
                    Ok(total)
                }
                _ => Err(*s),
            },
        )
    }

    fn refund(&self, key: &str, amount: u64) {
        self.spend.update(key, |s| *s = s.saturating_sub(amount));
    }

    fn spent(&self, key: &str) -> u64 {
        self.spend.update(key, |s| *s).unwrap_or(0)
    }

    fn conversion(&self, key: &str, create: bool, f: &mut dyn FnMut(&mut Conversion)) -> bool {
        if create {
            // A key's state matters while any of its windows counts; the
            // day window is the longest.
            self.conversions.with(
                key,
                Conversion::default,
                |old| {
                    if old.value.sent[1].live(86_400_000, self.shared.now.load(Ordering::Relaxed)) {
                        self.shared.evicted("conversions", key_kind(key));
                    }
                },
                |c| f(c),
            );
            true
        } else {
            self.conversions.update(key, |c| f(c)).is_some()
        }
    }

    fn pending(&self, number: &str, create: bool, f: &mut dyn FnMut(&mut Pending)) -> bool {
        let w = &self.shared;
        let mut run = |n: &mut Number| {
            let mut p = n.take_pending();
            f(&mut p);
            n.put_pending(p);
        };
        if create {
            let now = w.now.load(Ordering::Relaxed);
            self.numbers.with(
                number,
                Number::default,
                |old| w.number_evicted(old.value, now),
                |n| {
                    n.create(PENDING, &w.pending);
                    run(n)
                },
            );
            true
        } else {
            self.numbers
                .update(number, |n| {
                    let present = n.parts & PENDING != 0;
                    if present {
                        run(n);
                    }
                    present
                })
                .unwrap_or(false)
        }
    }

    fn pair_seen(&self, pair: &str, now: Millis, record: bool) -> Option<Millis> {
        self.saw(now);
        if !record {
            return self.pairs.update(pair, |t| *t);
        }
        // A pair pushed out early is counted again: stricter, never looser.
        self.pairs.with(
            pair,
            || 0,
            |_| {},
            |t| {
                let last = (*t > 0).then_some(*t);
                *t = now;
                last
            },
        )
    }

    fn confirmations_seen(&self, key: &str, now: Millis, record: bool) -> Option<Millis> {
        if !record {
            return self.flows.update(key, |t| *t);
        }
        self.flows.with(
            key,
            || 0,
            |_| {},
            |t| {
                let last = (*t > 0).then_some(*t);
                *t = now;
                last
            },
        )
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            counters: self.counters.entries(),
            backoffs: self.shared.backoffs.load(Ordering::Relaxed),
            blocks: self.blocks.entry_count() + self.shared.manual_entries.load(Ordering::Relaxed),
            offences: self.offences.entry_count(),
            conversions: self.conversions.entries(),
            pending: self.shared.pending.load(Ordering::Relaxed),
            pairs: self.pairs.entries(),
            evicted_live: self.shared.evicted_live.load(Ordering::Relaxed),
            blocks_evicted_live: self.blocks_evicted_live(),
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
    fn manual_blocks_are_pinned_whatever_the_flood() {
        let s = MemoryStore::new(100, 10);
        let entry = |rule: &str, until: Millis| BlockEntry {
            since: 1,
            until,
            rule: Arc::from(rule),
            action: crate::config::Action::Shadow,
            offence: 1,
        };
        // One set by hand here, one mirrored from Redis (the near cache
        // learns it through `set_block`, as every replica does).
        s.set_manual_block("to=+1", entry("manual", 1_000_000))
            .unwrap();
        s.set_block("prefix:4=+998", entry("manual", 1_000_000));
        for i in 0..1_000 {
            s.set_block(&format!("to=+2{i}"), entry("limit:number", 1_000_000));
            s.block(&format!("to=+2{i}"), 10);
        }
        s.sync();
        assert!(s.block("to=+1", 10).is_some());
        assert!(s.block("prefix:4=+998", 10).is_some());
        assert!(s.may_block("prefix:4"));
        // A trip on a pinned key renews it in place.
        s.set_block("to=+1", entry("limit:number", 2_000_000));
        assert_eq!(s.block("to=+1", 10).unwrap().until, 2_000_000);
        let st = s.stats();
        assert!(st.blocks_evicted_live > 900, "{st:?}");
        let listed = s.blocks(10);
        assert!(listed.iter().any(|(k, _)| k == "to=+1"));
        assert!(listed.iter().any(|(k, _)| k == "prefix:4=+998"));
        assert!(s.remove_block("to=+1"));
        assert!(s.block("to=+1", 10).is_none());
        // The manual table is bounded: a full one refuses, with why (one
        // place is the mirrored prefix's).
        for i in 0..MANUAL_BLOCKS - 1 {
            s.set_manual_block(&format!("user=u{i}"), entry("manual", 1_000_000))
                .unwrap();
        }
        let e = s
            .set_manual_block("user=one-more", entry("manual", 1_000_000))
            .unwrap_err();
        assert!(e.contains("manual blocks"), "{e}");
        // Ended ones make room.
        s.set_manual_block("user=u0", entry("manual", 5)).unwrap();
        s.block("x", 100);
        s.set_manual_block("user=one-more", entry("manual", 1_000_000))
            .unwrap();
    }

    #[test]
    fn a_number_keeps_its_backoff_and_pending_apart_in_one_entry() {
        let s = MemoryStore::new(100, 10);
        s.set_backoff_lifetime(7_200_000);
        let n = "+14155550100";
        // A backoff alone: no pending state to read or update.
        s.backoff(n, 1_000, &mut |b| b.sends += 1);
        assert!(!s.pending(n, false, &mut |_| panic!("no pending state yet")));
        let st = s.stats();
        assert_eq!((st.backoffs, st.pending), (1, 0));
        // A pending state alone, on another number, starts from nothing
        // and brings no backoff.
        let m = "+14155550101";
        assert!(s.pending(m, true, &mut |p| {
            assert_eq!(*p, Pending::default());
            p.sent_at = 1_000;
        }));
        s.backoff(m, 1_000, &mut |b| assert_eq!(*b, BackoffState::default()));
        // Each part keeps what was written to it.
        let origin = Arc::new(Origin {
            user: Some("u1".into()),
            account: "AC1".into(),
        });
        assert!(s.pending(n, true, &mut |p| {
            assert_eq!(*p, Pending::default());
            p.sent_at = 2_000;
            p.client_ip = Some("203.0.113.7".parse().unwrap());
            p.origin = Some(origin.clone());
            p.product = 2;
        }));
        s.backoff(n, 2_000, &mut |b| {
            assert_eq!(b.sends, 1);
            b.last_sent = 2_000;
        });
        let mut seen = None;
        assert!(s.pending(n, false, &mut |p| seen = Some(p.clone())));
        let p = seen.unwrap();
        assert_eq!(
            (p.sent_at, p.product, p.user(), p.account()),
            (2_000, 2, Some("u1"), "AC1")
        );
        assert_eq!(p.client_ip, Some("203.0.113.7".parse().unwrap()));
        s.backoff(n, 3_000, &mut |b| {
            assert_eq!((b.sends, b.last_sent), (1, 2_000))
        });
        let st = s.stats();
        assert_eq!((st.backoffs, st.pending), (2, 2));
        // A flood pushes both parts out: each is counted once, and each live
        // part counts as an eviction of live state.
        for i in 0..1_000 {
            s.backoff(&format!("+1212555{i:04}"), 4_000, &mut |b| b.sends = 1);
        }
        let st = s.stats();
        assert_eq!(st.pending, 0, "{st:?}");
        assert!(st.backoffs <= 100, "{st:?}");
        assert!(st.evicted_live >= 1_000 - 100 + 2, "{st:?}");
        assert!(!s.pending(n, false, &mut |_| panic!("evicted")));
        // Both parts in one cache line's worth.
        assert!(std::mem::size_of::<Number>() <= 64);
    }

    #[test]
    fn a_kind_of_block_is_looked_up_only_while_one_exists() {
        let s = MemoryStore::new(10, 10);
        // Automatic blocks (manual ones are pinned, never evicted).
        let b = BlockEntry {
            since: 0,
            until: 100,
            rule: "limit:prefix".into(),
            action: crate::config::Action::Shadow,
            offence: 1,
        };
        assert!(!s.may_block("prefix:8"));
        s.set_block("prefix:8=+99899394", b.clone());
        s.set_block("prefix:8=+99899395", b.clone());
        // Replacing a block keeps its kind known.
        s.set_block("prefix:8=+99899394", b.clone());
        assert!(s.may_block("prefix:8"));
        assert!(!s.may_block("to"));
        assert!(!s.may_block("prefix:6"));
        assert!(s.remove_block("prefix:8=+99899394"));
        s.sync();
        assert!(s.may_block("prefix:8"), "one prefix:8 block is left");
        assert!(s.remove_block("prefix:8=+99899395"));
        s.sync();
        assert!(!s.may_block("prefix:8"));
        // A flood of blocks past the table's capacity: whatever is evicted,
        // the blocks still held keep their kind known.
        for i in 0..100 {
            s.set_block(&format!("to=+1415555{i:04}"), b.clone());
        }
        s.sync();
        assert!(s.stats().blocks <= 10);
        assert!(s.may_block("to"));
        assert!(s.block("to=+14155550099", 1).is_some());
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
