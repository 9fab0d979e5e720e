//! A bounded, sharded LRU table of small states keyed by a 64-bit hash of
//! the key text.
//!
//! Each shard is a slab of slots linked in recency order plus an index from
//! key hash to slot, behind one mutex. A lookup that finds its key moves it
//! to the front; a new key takes a free slot or, when the shard is full, the
//! least recently used one. So a new key is always admitted (never refused,
//! which for a limit would mean failing open), hot keys stay, and memory is
//! bounded by the capacity whatever an attacker sprays: an entry is the hash,
//! two links and the state, with no allocation of its own.
//!
//! Keys are stored as a keyed SipHash of their text, not the text. Two
//! distinct keys that share a 64-bit hash would share one state: counted
//! together, which can only make a limit stricter, never looser. With a
//! million keys the chance of any such pair is about 3 in 100 million, and
//! the hash key is random per process, so an attacker cannot aim for one.

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;

use hashbrown::HashTable;

const NIL: u32 = u32::MAX;

struct Slot<V> {
    key: u64,
    prev: u32,
    next: u32,
    value: V,
}

struct Shard<V> {
    /// Slot numbers, found by their slot's key hash: 4 bytes a bucket.
    index: HashTable<u32>,
    slots: Vec<Slot<V>>,
    /// Most recently used.
    head: u32,
    /// Least recently used: the next to go.
    tail: u32,
    capacity: usize,
}

impl<V> Shard<V> {
    fn find(&self, hash: u64) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| slots[i as usize].key == hash)
            .copied()
    }

    /// Indexes slot `i`, whose key is already set.
    fn index_slot(&mut self, i: u32) {
        let Shard { index, slots, .. } = self;
        let hash = slots[i as usize].key;
        index.insert_unique(hash, i, |&j| slots[j as usize].key);
    }

    fn unindex_slot(&mut self, i: u32) {
        let hash = self.slots[i as usize].key;
        if let Ok(e) = self.index.find_entry(hash, |&j| j == i) {
            e.remove();
        }
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let head = self.head;
        {
            let s = &mut self.slots[i as usize];
            s.prev = NIL;
            s.next = head;
        }
        match head {
            NIL => self.tail = i,
            h => self.slots[h as usize].prev = i,
        }
        self.head = i;
    }

    fn touch(&mut self, i: u32) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }
}

/// What happened to the state a new key pushed out.
pub struct Evicted<'a, V> {
    pub value: &'a V,
}

pub struct Lru<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    hasher: RandomState,
    shift: u32,
}

impl<V> Lru<V> {
    /// A table of at most `capacity` keys (at least one per shard). Small
    /// tables get one shard, so they are exact LRU; large ones are split in
    /// up to 64 shards of equal size, chosen by the key's hash.
    pub fn new(capacity: u64) -> Self {
        let capacity = capacity.clamp(1, u64::from(u32::MAX - 1)) as usize;
        let shards = (capacity / 4096).clamp(1, 64).next_power_of_two().min(64);
        let per_shard = capacity / shards;
        Lru {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        index: HashTable::new(),
                        slots: Vec::new(),
                        head: NIL,
                        tail: NIL,
                        capacity: per_shard.max(1),
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            shift: 64 - shards.trailing_zeros(),
        }
    }

    pub fn hash<K: Hash + ?Sized>(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard<V>> {
        let i = if self.shift == 64 {
            0
        } else {
            (hash >> self.shift) as usize
        };
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the state of `key`, creating it with `init` when absent.
    /// When that pushes out the least recently used key, `evicted` sees its
    /// state first.
    pub fn with<K: Hash + ?Sized, R>(
        &self,
        key: &K,
        init: impl FnOnce() -> V,
        evicted: impl FnOnce(Evicted<'_, V>),
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        let hash = self.hash(key);
        let mut s = self.shard(hash);
        let i = match s.find(hash) {
            Some(i) => {
                s.touch(i);
                i
            }
            None if s.slots.len() < s.capacity => {
                if s.slots.capacity() == 0 {
                    // The whole shard at once, on its first key: a slab that
                    // grew by doubling would hold up to half its length
                    // unused (and copy itself on each step). Pages not yet
                    // written are not resident, so an idle guard does not
                    // pay for the capacity it may never use.
                    let cap = s.capacity;
                    s.slots.reserve_exact(cap);
                }
                let i = s.slots.len() as u32;
                s.slots.push(Slot {
                    key: hash,
                    prev: NIL,
                    next: NIL,
                    value: init(),
                });
                s.index_slot(i);
                s.push_front(i);
                i
            }
            None => {
                let i = s.tail;
                s.unindex_slot(i);
                evicted(Evicted {
                    value: &s.slots[i as usize].value,
                });
                {
                    let slot = &mut s.slots[i as usize];
                    slot.key = hash;
                    slot.value = init();
                }
                s.index_slot(i);
                s.touch(i);
                i
            }
        };
        f(&mut s.slots[i as usize].value)
    }

    /// A copy of the state of `key`, if present; it becomes the most
    /// recently used.
    pub fn get<K: Hash + ?Sized>(&self, key: &K) -> Option<V>
    where
        V: Clone,
    {
        let hash = self.hash(key);
        let mut s = self.shard(hash);
        let i = s.find(hash)?;
        s.touch(i);
        Some(s.slots[i as usize].value.clone())
    }

    /// Runs `f` on the state of `key` if it is present, without creating
    /// it or changing its recency.
    pub fn update<K: Hash + ?Sized, R>(&self, key: &K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let hash = self.hash(key);
        let mut s = self.shard(hash);
        let i = s.find(hash)?;
        Some(f(&mut s.slots[i as usize].value))
    }

    /// Runs `f` on the state of `key` if it is present, without creating it
    /// or changing its recency.
    #[cfg(test)]
    pub fn peek<K: Hash + ?Sized, R>(&self, key: &K, f: impl FnOnce(&V) -> R) -> Option<R> {
        let hash = self.hash(key);
        let s = self.shard(hash);
        s.find(hash).map(|i| f(&s.slots[i as usize].value))
    }

    /// Keys held.
    pub fn entries(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).index.len() as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(t: &Lru<u64>, key: &str, evictions: &mut u64) -> u64 {
        t.with(
            key,
            || 0,
            |_| *evictions += 1,
            |v| {
                *v += 1;
                *v
            },
        )
    }

    #[test]
    fn keeps_the_most_recent_keys_and_admits_every_new_one() {
        let t = Lru::new(3);
        let mut ev = 0;
        for k in ["a", "b", "c"] {
            assert_eq!(count(&t, k, &mut ev), 1);
        }
        assert_eq!(ev, 0);
        // "a" is used again, so "b" is the least recently used.
        assert_eq!(count(&t, "a", &mut ev), 2);
        assert_eq!(count(&t, "d", &mut ev), 1);
        assert_eq!(ev, 1);
        assert_eq!(t.entries(), 3);
        assert_eq!(t.peek("b", |v| *v), None);
        assert_eq!(t.peek("a", |v| *v), Some(2));
        assert_eq!(t.peek("c", |v| *v), Some(1));
        assert_eq!(t.peek("d", |v| *v), Some(1));
        // "c" is now the oldest; "b" comes back as new.
        assert_eq!(count(&t, "b", &mut ev), 1);
        assert_eq!(t.peek("c", |v| *v), None);
    }

    #[test]
    fn a_large_table_stays_within_capacity_under_a_flood() {
        let t = Lru::new(50_000);
        let mut ev = 0;
        for i in 0..200_000u64 {
            count(&t, &format!("+1415{i:07}"), &mut ev);
            // A hot key between every new one is never pushed out.
            assert!(count(&t, "hot", &mut ev) == i + 1, "hot key lost at {i}");
        }
        assert!(t.entries() <= 50_000, "{}", t.entries());
        assert!(t.entries() >= 49_000, "{}", t.entries());
        assert_eq!(ev, 200_001 - t.entries());
    }
}
