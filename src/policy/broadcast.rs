//! Broadcasts: one message, word for word, sent to many numbers (a
//! notification, a campaign, a reminder). Nobody is expected to confirm
//! such a message, so the adaptive stage, which reads the absence of a
//! confirmation as a sign of pumping, must not count or judge it.
//!
//! A message is known by a fingerprint of its content that the pipeline
//! computes ([`fingerprint`]) with a key drawn at start-up: the table never
//! holds a body, and its fingerprints cannot be matched against guessed
//! bodies (an OTP's code) outside the process. It lives in each replica's
//! memory: a broadcast split over replicas is recognised by each once it
//! has seen its share.
//!
//! Only an app that marks its end users' sends (`X-SMSGuard-Client-IP`)
//! can say by leaving the header out that a send is its own; for one that
//! never sends it, nothing is a broadcast.
//!
//! Bounded: two generations of `capacity` contents each; a content not
//! seen for a whole generation is forgotten. A broadcast is seen again and
//! again, so it stays; one-off messages (every OTP, whose code differs)
//! pass through and are dropped.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::base::clock::Millis;

/// Most numbers remembered per content: the largest `adaptive.bulk`.
pub(crate) const MAX_NUMBERS: usize = crate::config::BULK_MAX as usize;

/// A fingerprint of a message's content: each (name, value) given, in
/// order. Keyed with a secret drawn once per process.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    static KEY: OnceLock<std::hash::RandomState> = OnceLock::new();
    let mut h = KEY.get_or_init(std::hash::RandomState::new).build_hasher();
    for (name, value) in parts {
        name.hash(&mut h);
        value.hash(&mut h);
    }
    h.finish()
}

#[derive(Clone, Copy)]
struct Entry {
    /// Last time the content was sent, to any number.
    last: Millis,
    /// Distinct numbers it went to (up to [`MAX_NUMBERS`]).
    count: u8,
    numbers: [u32; MAX_NUMBERS],
}

struct Generations {
    current: HashMap<u64, Entry>,
    previous: HashMap<u64, Entry>,
}

pub(crate) struct Broadcasts {
    table: Mutex<Generations>,
    capacity: usize,
    window: Millis,
    /// When a send last carried an end user's address (to the second).
    end_user_seen: AtomicU64,
}

impl Broadcasts {
    pub(crate) fn new(capacity: usize, window: Millis) -> Broadcasts {
        Broadcasts {
            table: Mutex::new(Generations {
                current: HashMap::new(),
                previous: HashMap::new(),
            }),
            capacity: capacity.max(1),
            window,
            end_user_seen: AtomicU64::new(0),
        }
    }

    /// A send carried an end user's address: the app marks them.
    pub(crate) fn saw_end_user(&self, now: Millis) {
        // Written at most once a second: every send with the header
        // passes here.
        if self.end_user_seen.load(Ordering::Relaxed) + 1_000 <= now {
            self.end_user_seen.store(now, Ordering::Relaxed);
        }
    }

    /// Whether a send with an end user's address was seen within `within`.
    pub(crate) fn end_users_marked(&self, now: Millis, within: Millis) -> bool {
        let seen = self.end_user_seen.load(Ordering::Relaxed);
        seen > 0 && now.saturating_sub(seen) < within
    }

    /// Records that `content` goes to `number` now and returns to how many
    /// distinct numbers it went within the window, this one included (at
    /// most [`MAX_NUMBERS`]). Asking twice for one send counts it once.
    pub(crate) fn observe(&self, content: u64, number: &str, now: Millis) -> usize {
        let n = number_hash(number);
        let mut g = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let found = match g.current.get(&content) {
            Some(e) => Some(*e),
            None => g.previous.remove(&content),
        };
        let mut e = match found {
            Some(e) if now.saturating_sub(e.last) < self.window => e,
            _ => Entry {
                last: now,
                count: 0,
                numbers: [0; MAX_NUMBERS],
            },
        };
        e.last = e.last.max(now);
        let known = &e.numbers[..usize::from(e.count)];
        if !known.contains(&n) && usize::from(e.count) < MAX_NUMBERS {
            e.numbers[usize::from(e.count)] = n;
            e.count += 1;
        }
        if !g.current.contains_key(&content) && g.current.len() >= self.capacity {
            let full = std::mem::take(&mut g.current);
            g.previous = full;
        }
        g.current.insert(content, e);
        usize::from(e.count)
    }
}

/// A number as 32 bits: two numbers colliding only make a broadcast need
/// one more send to be recognised.
fn number_hash(number: &str) -> u32 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    number.hash(&mut h);
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Millis = 3_600_000;

    #[test]
    fn counts_distinct_numbers_within_the_window() {
        let b = Broadcasts::new(100, HOUR);
        let c = fingerprint([("Body", "Sale ends Sunday")]);
        assert_eq!(b.observe(c, "+14155550101", 0), 1);
        // The same send asked about twice counts once.
        assert_eq!(b.observe(c, "+14155550101", 1), 1);
        assert_eq!(b.observe(c, "+14155550102", 2), 2);
        assert_eq!(b.observe(c, "+14155550103", 3), 3);
        // Another content is counted on its own.
        let other = fingerprint([("Body", "Your code is 123456")]);
        assert_eq!(b.observe(other, "+14155550104", 4), 1);
        // A window after its last send, a content starts again.
        assert_eq!(b.observe(c, "+14155550105", 3 + HOUR), 1);
    }

    #[test]
    fn a_content_sent_again_and_again_outlives_one_off_messages() {
        let b = Broadcasts::new(8, HOUR);
        let blast = fingerprint([("Body", "Reminder: your appointment is tomorrow")]);
        for i in 0..200u32 {
            // A one-off message, then the next send of the broadcast.
            let code = fingerprint([("Body", format!("Your code is {i:06}").as_str())]);
            b.observe(code, &format!("+1415555{i:04}"), u64::from(i));
            if i % 3 == 0 {
                b.observe(blast, &format!("+1303555{i:04}"), u64::from(i));
            }
        }
        assert_eq!(
            b.observe(blast, "+13035559999", 300),
            MAX_NUMBERS,
            "the broadcast was forgotten among one-off messages"
        );
        // The table stays within two generations.
        let g = b.table.lock().unwrap();
        assert!(g.current.len() <= 8 && g.previous.len() <= 8);
    }

    #[test]
    fn fingerprints_tell_contents_and_fields_apart() {
        assert_ne!(fingerprint([("Body", "a")]), fingerprint([("Body", "b")]));
        assert_ne!(
            fingerprint([("Body", "a")]),
            fingerprint([("MediaUrl", "a")])
        );
        assert_eq!(
            fingerprint([("Body", "a"), ("MediaUrl", "m")]),
            fingerprint([("Body", "a"), ("MediaUrl", "m")])
        );
    }
}
