//! A dry run on the live state: `explain` asked of the running guard (the
//! admin API's `/api/explain`, `smsguard explain --admin`) judges a send
//! against everything the guard remembers (blocks, counters, backoff,
//! spend, the adaptive figures and vouching) and changes none of it.
//!
//! Every read goes to the live store, without creating or touching an
//! entry; every write goes to a scratch copy that dies with the dry run,
//! and later reads of the same key see the copy. Limit counters and
//! offences are read as what counting this send would make them
//! ([`Store::peek_hit`], [`Store::peek_offend`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{BackoffState, BlockEntry, Conversion, Pending, Store, StoreStats};
use crate::base::clock::Millis;

pub struct DryRun {
    live: Arc<dyn Store>,
    scratch: Mutex<Scratch>,
}

#[derive(Default)]
struct Scratch {
    blocks: HashMap<String, BlockEntry>,
    offences: HashMap<String, u32>,
    backoff: HashMap<String, BackoffState>,
    /// Spend added (or, below zero, refunded) by the dry run.
    spend: HashMap<String, i128>,
    conversions: HashMap<String, Conversion>,
    pending: HashMap<String, Pending>,
    pairs: HashMap<String, Millis>,
    flows: HashMap<String, Millis>,
}

impl DryRun {
    pub fn new(live: Arc<dyn Store>) -> DryRun {
        DryRun {
            live,
            scratch: Mutex::new(Scratch::default()),
        }
    }

    fn scratch(&self) -> MutexGuard<'_, Scratch> {
        self.scratch.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spend_delta(&self, key: &str) -> i128 {
        self.scratch().spend.get(key).copied().unwrap_or(0)
    }
}

/// When a pair or flow was last seen: the dry run's own record first.
fn seen(
    mine: &mut HashMap<String, Millis>,
    key: &str,
    now: Millis,
    record: bool,
    live: impl FnOnce() -> Option<Millis>,
) -> Option<Millis> {
    let last = mine.get(key).copied().or_else(live);
    if record {
        mine.insert(key.to_string(), now);
    }
    last
}

impl Store for DryRun {
    fn block(&self, key: &str, now: Millis) -> Option<BlockEntry> {
        if let Some(b) = self.scratch().blocks.get(key) {
            if b.until > now {
                return Some(b.clone());
            }
        }
        self.live.block(key, now)
    }

    fn set_block(&self, key: &str, entry: BlockEntry) {
        self.scratch().blocks.insert(key.to_string(), entry);
    }

    fn may_block(&self, kind: &str) -> bool {
        self.live.may_block(kind) || !self.scratch().blocks.is_empty()
    }

    fn remove_block(&self, key: &str) -> bool {
        self.scratch().blocks.remove(key).is_some()
    }

    fn blocks(&self, now: Millis) -> Vec<(String, BlockEntry)> {
        self.live.blocks(now)
    }

    fn offend(&self, key: &str, now: Millis, forgive_after: Millis) -> u32 {
        let mut s = self.scratch();
        let n = s
            .offences
            .entry(key.to_string())
            .and_modify(|n| *n = n.saturating_add(1))
            .or_insert_with(|| self.live.peek_offend(key, now, forgive_after));
        *n
    }

    /// What `offend` would return: one past this dry run's own offences,
    /// or the live store's answer.
    fn peek_offend(&self, key: &str, now: Millis, forgive_after: Millis) -> u32 {
        match self.scratch().offences.get(key) {
            Some(n) => n.saturating_add(1),
            None => self.live.peek_offend(key, now, forgive_after),
        }
    }

    fn hit(&self, key: &str, periods: &[Millis], now: Millis, counts: &mut [u64]) {
        self.live.peek_hit(key, periods, now, counts);
    }

    fn backoff(&self, key: &str, _now: Millis, update: &mut dyn FnMut(&mut BackoffState)) {
        let mut s = self.scratch();
        let state = s
            .backoff
            .entry(key.to_string())
            .or_insert_with(|| self.live.peek_backoff(key).unwrap_or_default());
        update(state);
    }

    fn spend(&self, key: &str, amount: u64, cap: u64) -> Result<u64, u64> {
        let total = (i128::from(self.live.spent(key)) + self.spend_delta(key)).max(0);
        let cur = u64::try_from(total).unwrap_or(u64::MAX);
        let new = cur.saturating_add(amount);
        if new > cap {
            return Err(cur);
        }
        *self.scratch().spend.entry(key.to_string()).or_default() += i128::from(amount);
        Ok(new)
    }

    fn refund(&self, key: &str, amount: u64) {
        *self.scratch().spend.entry(key.to_string()).or_default() -= i128::from(amount);
    }

    fn spent(&self, key: &str) -> u64 {
        let total = (i128::from(self.live.spent(key)) + self.spend_delta(key)).max(0);
        u64::try_from(total).unwrap_or(u64::MAX)
    }

    fn conversion(&self, key: &str, create: bool, f: &mut dyn FnMut(&mut Conversion)) -> bool {
        let mut s = self.scratch();
        if let Some(c) = s.conversions.get_mut(key) {
            f(c);
            return true;
        }
        let mut copy = None;
        self.live.conversion(key, false, &mut |c| copy = Some(*c));
        let Some(mut c) = copy.or_else(|| create.then(Conversion::default)) else {
            return false;
        };
        f(&mut c);
        s.conversions.insert(key.to_string(), c);
        true
    }

    fn pending(&self, number: &str, create: bool, f: &mut dyn FnMut(&mut Pending)) -> bool {
        let mut s = self.scratch();
        if let Some(p) = s.pending.get_mut(number) {
            f(p);
            return true;
        }
        let mut copy = None;
        self.live
            .pending(number, false, &mut |p| copy = Some(p.clone()));
        let Some(mut p) = copy.or_else(|| create.then(Pending::default)) else {
            return false;
        };
        f(&mut p);
        s.pending.insert(number.to_string(), p);
        true
    }

    fn pair_seen(&self, pair: &str, now: Millis, record: bool) -> Option<Millis> {
        let mut s = self.scratch();
        seen(&mut s.pairs, pair, now, record, || {
            self.live.pair_seen(pair, now, false)
        })
    }

    fn confirmations_seen(&self, key: &str, now: Millis, record: bool) -> Option<Millis> {
        let mut s = self.scratch();
        seen(&mut s.flows, key, now, record, || {
            self.live.confirmations_seen(key, now, false)
        })
    }

    fn stats(&self) -> StoreStats {
        self.live.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Action;
    use crate::store::{Escalation, MemoryStore};

    const T0: Millis = 1_700_000_000_000;
    const HOUR: Millis = 3_600_000;

    #[test]
    fn a_dry_run_reads_the_live_state_and_changes_none_of_it() {
        let live: Arc<dyn Store> = Arc::new(MemoryStore::new(1_000, 1_000));
        let mut counts = [0u64; 1];
        live.hit("to=+14155550100", &[HOUR], T0, &mut counts);
        live.hit("to=+14155550100", &[HOUR], T0, &mut counts);
        live.backoff("+14155550100", T0, &mut |b| {
            b.sends = 2;
            b.last_sent = T0;
        });
        assert_eq!(live.spend("day:*", 500, 10_000), Ok(500));
        let esc = Escalation {
            base: HOUR,
            escalate: 2.0,
            max: 100 * HOUR,
            forgive_after: 100 * HOUR,
        };
        live.trip(
            "prefix:8=+99899394",
            T0,
            &esc,
            Arc::from("limit:p"),
            Action::Shadow,
        );
        let before = live.stats();

        let dry = DryRun::new(live.clone());
        // Counters read as counting this send would make them.
        dry.hit("to=+14155550100", &[HOUR], T0 + 1, &mut counts);
        assert_eq!(counts, [3]);
        dry.hit("to=+14155559999", &[HOUR], T0 + 1, &mut counts);
        assert_eq!(counts, [1]);
        // Backoff, spend and offences go on from the live values.
        let mut seen = BackoffState::default();
        dry.backoff("+14155550100", T0 + 1, &mut |b| {
            seen = *b;
            b.sends += 1;
        });
        assert_eq!(seen.sends, 2);
        assert_eq!(dry.spend("day:*", 9_000, 10_000), Ok(9_500));
        assert_eq!(dry.spend("day:*", 1_000, 10_000), Err(9_500));
        assert_eq!(dry.spent("day:*"), 9_500);
        assert!(dry.block("prefix:8=+99899394", T0 + 1).is_some());
        // A key blocked before reads as offended, live and in the dry run.
        assert_eq!(dry.peek_offend("prefix:8=+99899394", T0 + 1, 100 * HOUR), 2);
        assert_eq!(dry.peek_offend("prefix:8=+99899300", T0 + 1, 100 * HOUR), 1);
        assert_eq!(dry.offend("prefix:8=+99899394", T0 + 1, 100 * HOUR), 2);
        assert_eq!(dry.peek_offend("prefix:8=+99899394", T0 + 1, 100 * HOUR), 3);
        dry.set_block(
            "to=+14155550100",
            esc.entry(T0, 1, Arc::from("limit:n"), Action::Shadow),
        );
        assert!(dry.block("to=+14155550100", T0 + 1).is_some());
        assert!(dry.conversion("region=US", true, &mut |c| c.peak = 7));
        assert!(dry.pending("+14155550100", true, &mut |p| p.sent_at = T0));
        assert_eq!(dry.pair_seen("ip|+1", T0, true), None);
        assert_eq!(dry.pair_seen("ip|+1", T0 + 1, false), Some(T0));

        // The live store is as it was.
        live.hit("to=+14155550100", &[HOUR], T0 + 2, &mut counts);
        assert_eq!(counts, [3], "the dry run counted");
        assert_eq!(live.peek_backoff("+14155550100").map(|b| b.sends), Some(2));
        assert_eq!(live.spent("day:*"), 500);
        assert!(live.block("to=+14155550100", T0 + 1).is_none());
        assert!(!live.conversion("region=US", false, &mut |_| {}));
        assert!(!live.pending("+14155550100", false, &mut |_| {}));
        assert_eq!(live.pair_seen("ip|+1", T0 + 1, false), None);
        assert_eq!(live.offend("prefix:8=+99899394", T0 + 1, 100 * HOUR), 2);
        let after = live.stats();
        assert_eq!(
            (after.blocks, after.conversions, after.pending, after.pairs),
            (
                before.blocks,
                before.conversions,
                before.pending,
                before.pairs
            )
        );
    }
}
