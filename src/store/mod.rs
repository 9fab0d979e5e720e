//! Where the policy keeps what it remembers: rate counters, backoff levels,
//! blocks and repeat offences.
//!
//! The policy talks to a [`Store`] only, so the in-memory tables can later be
//! swapped for a shared one. A store must be bounded in memory whatever the
//! number of distinct keys an attacker sprays, and it must never silently
//! forget state that still matters: the memory store evicts least-recently
//! used keys (so a new key is always admitted and hot keys stay) and counts
//! every eviction of state that was still live.

mod dry_run;
pub mod fleet;
mod memory;
pub mod reconcile;
pub mod redis;
pub mod redis_batch;
pub mod redis_fakes;
pub mod redis_ops;
pub mod shared;

pub use dry_run::DryRun;
pub use memory::{MemoryStore, MANUAL_BLOCKS};

use std::sync::Arc;

use crate::base::clock::Millis;
use crate::config::Action;

/// An active block on a key such as `prefix:8=+99899394`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEntry {
    pub since: Millis,
    pub until: Millis,
    /// What set it: `limit:prefix`, or `manual`.
    pub rule: Arc<str>,
    /// What a send that meets the block gets.
    pub action: Action,
    /// 1 for a first offence; escalated blocks count up.
    pub offence: u32,
}

impl BlockEntry {
    /// This active block tripped again at `now` ([`Store::trip`]): the
    /// same offence, lasting at least that offence's duration from now;
    /// a block that stops nothing (monitored) takes the rule and action
    /// of a trip that does.
    pub fn renewed(self, now: Millis, esc: &Escalation, rule: Arc<str>, action: Action) -> Self {
        let until = self
            .until
            .max(now.saturating_add(esc.duration(self.offence)));
        let (rule, action) = if action.blocks() && !self.action.blocks() {
            (rule, action)
        } else {
            (self.rule, self.action)
        };
        BlockEntry {
            until,
            rule,
            action,
            ..self
        }
    }
}

/// How blocks set by a limit grow with repeat offences.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    pub base: Millis,
    pub escalate: f64,
    pub max: Millis,
    pub forgive_after: Millis,
}

impl Escalation {
    /// How long the `offence`th block lasts.
    pub fn duration(&self, offence: u32) -> Millis {
        let factor = self
            .escalate
            .powi(offence.saturating_sub(1).min(1_000) as i32);
        (self.base as f64 * factor).min(self.max as f64) as Millis
    }

    /// The block entry of the `offence`th block, set at `now`.
    pub fn entry(&self, now: Millis, offence: u32, rule: Arc<str>, action: Action) -> BlockEntry {
        BlockEntry {
            since: now,
            until: now.saturating_add(self.duration(offence)),
            rule,
            action,
            offence,
        }
    }
}

/// Backoff state of one destination number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackoffState {
    /// Sends forwarded in the current streak.
    pub sends: u32,
    /// When the last forwarded send left (or will leave, when held).
    pub last_sent: Millis,
    /// When any attempt was last seen: the streak resets after a quiet spell.
    pub last_attempt: Millis,
}

/// A sliding-window counter: two fixed windows, the previous one weighted by
/// how much of it still overlaps the sliding window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    start: Millis,
    current: u32,
    previous: u32,
}

impl Window {
    /// Counts one attempt at `now` and returns the attempts in the sliding
    /// window ending at `now`, this one included.
    pub fn hit(&mut self, period: Millis, now: Millis) -> u64 {
        let period = period.max(1);
        let start = now - now % period;
        if start != self.start {
            self.previous = if start == self.start + period {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.start = start;
        }
        // Saturates rather than wraps: four billion attempts in one window
        // stay over any rate.
        self.current = self.current.saturating_add(1);
        self.estimate(period, now)
    }

    /// Adds `n` at `now` without reading the count.
    pub fn add(&mut self, period: Millis, now: Millis, n: u32) {
        self.roll(period, now);
        self.current = self.current.saturating_add(n);
    }

    /// The count in the sliding window ending at `now`, without counting.
    pub fn count(&self, period: Millis, now: Millis) -> u64 {
        let mut w = *self;
        w.roll(period, now);
        w.estimate(period.max(1), now)
    }

    /// The whole count of the fixed window before the one holding `now`
    /// (yesterday's, for a day).
    pub fn previous(&self, period: Millis, now: Millis) -> u64 {
        let mut w = *self;
        w.roll(period, now);
        u64::from(w.previous)
    }

    /// Moves the fixed windows on to the one holding `now`.
    fn roll(&mut self, period: Millis, now: Millis) {
        let period = period.max(1);
        let start = now - now % period;
        if start > self.start {
            self.previous = if start == self.start + period {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.start = start;
        }
    }

    fn estimate(&self, period: Millis, now: Millis) -> u64 {
        let elapsed = now.saturating_sub(self.start).min(period);
        // Round the previous window's share up: a limit must never undercount.
        let carried = (u64::from(self.previous) * (period - elapsed)).div_ceil(period);
        carried + u64::from(self.current)
    }

    /// Whether the window still holds attempts that count at `now`.
    pub fn live(&self, period: Millis, now: Millis) -> bool {
        now < self.live_until(period)
    }

    /// Until when attempts counted here still count (0 when there are none).
    pub fn live_until(&self, period: Millis) -> Millis {
        if self.current > 0 || self.previous > 0 {
            self.start + 2 * period.max(1)
        } else {
            0
        }
    }
}

/// A rate counter that never undercounts, for limits: the period in six
/// slots plus the one filling now. Every attempt within the last `period`
/// is counted (an attempt counts for between one period and seven sixths of
/// one), so a limit of N per period never lets more than N through in any
/// stretch of that length, whatever the interleaving. (A two-window
/// estimate, which assumes the previous window's attempts were spread
/// evenly, lets nearly 2N through when they came at its end.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slots {
    /// The newest slot's index, in slot widths since the epoch.
    newest: u64,
    counts: [u32; 7],
    /// The slot width these indexes are in (ms; 0 before the first hit). A
    /// reload that changes the period changes it.
    width: u32,
}

impl Slots {
    fn width(period: Millis) -> Millis {
        period.div_ceil(6).max(1)
    }

    /// Counts one attempt at `now` and returns the attempts within the last
    /// `period`, this one included.
    pub fn hit(&mut self, period: Millis, now: Millis) -> u64 {
        let w = Self::width(period);
        let idx = now / w;
        if u64::from(self.width) != w.min(u64::from(u32::MAX)) {
            // A new period (a reload): what still counted under the old one
            // counts on, as of now, and ages out under the new period.
            let total = match u64::from(self.width) {
                0 => 0,
                old => {
                    let age = (now / old).saturating_sub(self.newest) as usize;
                    self.counts
                        .iter()
                        .take(self.counts.len().saturating_sub(age))
                        .fold(0u32, |a, c| a.saturating_add(*c))
                }
            };
            self.counts = [0; 7];
            self.counts[0] = total;
            self.newest = idx;
            self.width = w.min(u64::from(u32::MAX)) as u32;
        }
        if idx > self.newest {
            let shift = idx - self.newest;
            if shift >= self.counts.len() as u64 {
                self.counts = [0; 7];
            } else {
                self.counts.rotate_right(shift as usize);
                self.counts[..shift as usize].fill(0);
            }
            self.newest = idx;
        }
        // A clock that stepped back counts into the newest slot.
        self.counts[0] = self.counts[0].saturating_add(1);
        self.count(period, now)
    }

    /// Attempts within the last `period` (rounded out to whole slots).
    pub fn count(&self, period: Millis, now: Millis) -> u64 {
        let idx = now / Self::width(period);
        let age = idx.saturating_sub(self.newest) as usize;
        self.counts
            .iter()
            .take(self.counts.len().saturating_sub(age))
            .map(|c| u64::from(*c))
            .sum()
    }

    /// Until when attempts counted here still count (0 when there are none).
    pub fn live_until(&self, period: Millis) -> Millis {
        // The newest slot with attempts counts until seven slots after its
        // start.
        match self.counts.iter().position(|c| *c > 0) {
            Some(j) => (self.newest - j as u64 + 7) * Self::width(period),
            None => 0,
        }
    }
}

impl Slots {
    /// The slot width as kept in `width`.
    fn kept_width(period: Millis) -> u32 {
        Self::width(period).min(u64::from(u32::MAX)) as u32
    }

    /// Until when attempts counted here still count, from the slot width
    /// kept (0 when there are none).
    fn live_until_kept(&self) -> Millis {
        match self.counts.iter().position(|c| *c > 0) {
            Some(j) => (self.newest - j as u64 + 7) * u64::from(self.width),
            None => 0,
        }
    }
}

/// How many rates a narrow key holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(u8)]
enum Inline {
    #[default]
    Zero,
    One,
    Two,
}

/// The [`Slots`] of up to two rates whose counts all fit in 8 bits: the
/// usual limit key (a number, a prefix, an address) in 32 bytes. A key
/// whose rate would count past 255 within its slots widens first.
///
/// The rates share the instant of the key's latest attempt (`last`): each
/// rate's newest slot is the one holding it, as `Slots::newest` is, so no
/// rate keeps a slot index of its own. The one case where they part (a
/// reload that changes a period while the clock is behind the latest
/// attempt: `Slots` then starts the new period as of now) widens first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Narrow {
    /// The latest attempt counted (ms; 0 before the first).
    last: Millis,
    /// Slot width per rate (ms; 0 before the first hit), as `Slots::width`.
    width: [u32; 2],
    counts: [[u8; 7]; 2],
    rates: Inline,
}

impl Narrow {
    fn new(rates: usize) -> Narrow {
        Narrow {
            rates: match rates {
                0 => Inline::Zero,
                1 => Inline::One,
                _ => Inline::Two,
            },
            ..Narrow::default()
        }
    }

    fn rates(&self) -> usize {
        self.rates as usize
    }

    /// Whether this attempt can be counted here exactly as [`Slots`]
    /// count it: every count stays within 8 bits (none, nor what a reload
    /// carries over, can exceed a rate's total), and no period changes
    /// while the clock is behind the latest attempt.
    fn fits(&self, periods: &[Millis], now: Millis) -> bool {
        let small = self.counts[..self.rates()]
            .iter()
            .all(|c| c.iter().map(|n| u32::from(*n)).sum::<u32>() < u32::from(u8::MAX));
        small
            && (now >= self.last
                || periods
                    .iter()
                    .zip(self.width)
                    .all(|(p, w)| Slots::kept_width(*p) == w))
    }

    /// The same counts as [`Slots`], 32-bit.
    fn widen(&self) -> Vec<Slots> {
        (0..self.rates())
            .map(|i| {
                let width = self.width[i];
                Slots {
                    newest: match width {
                        0 => 0,
                        w => self.last / u64::from(w),
                    },
                    counts: self.counts[i].map(u32::from),
                    width,
                }
            })
            .collect()
    }

    /// [`Slots::hit`] on every rate at once; the caller has checked
    /// [`Narrow::fits`].
    fn hit(&mut self, periods: &[Millis], now: Millis, out: &mut [u64]) {
        let before = self.last;
        let last = before.max(now);
        for (i, (p, out)) in periods.iter().zip(out.iter_mut()).enumerate() {
            let w = Slots::width(*p);
            let kept = Slots::kept_width(*p);
            let counts = &mut self.counts[i];
            if self.width[i] != kept {
                // A new period (a reload): what still counted under the old
                // one counts on, as of the latest attempt, and ages out under
                // the new period.
                let total = match u64::from(self.width[i]) {
                    0 => 0,
                    old => {
                        let age = (now / old).saturating_sub(before / old) as usize;
                        counts
                            .iter()
                            .take(counts.len().saturating_sub(age))
                            .fold(0u8, |a, c| a.saturating_add(*c))
                    }
                };
                *counts = [0; 7];
                counts[0] = total;
                self.width[i] = kept;
            } else {
                let shift = last / w - before / w;
                if shift >= counts.len() as u64 {
                    *counts = [0; 7];
                } else if shift > 0 {
                    counts.rotate_right(shift as usize);
                    counts[..shift as usize].fill(0);
                }
            }
            // A clock that stepped back counts into the newest slot.
            counts[0] = counts[0].saturating_add(1);
            let age = (now / w).saturating_sub(last / w) as usize;
            *out = counts
                .iter()
                .take(counts.len().saturating_sub(age))
                .map(|c| u64::from(*c))
                .sum();
        }
        self.last = last;
    }

    fn live_until(&self) -> Millis {
        (0..self.rates())
            .filter_map(|i| {
                let w = u64::from(self.width[i]);
                let j = self.counts[i].iter().position(|c| *c > 0)?;
                Some((self.last / w - j as u64 + 7) * w)
            })
            .max()
            .unwrap_or(0)
    }
}

/// Counters of one limit key, one per rate, with no allocation of its own
/// for the usual one or two rates of modest counts (a number's, a prefix's).
#[derive(Debug, Clone)]
pub enum Counters {
    Narrow(Narrow),
    /// More rates, or a count past 8 bits (a narrow key widens before one
    /// could saturate, so nothing is lost): a busy key (an address, a
    /// global limit) pays one allocation.
    Wide(Box<[Slots]>),
}

impl Counters {
    pub fn new(rates: usize) -> Self {
        if rates <= 2 {
            Counters::Narrow(Narrow::new(rates))
        } else {
            Counters::Wide(vec![Slots::default(); rates].into_boxed_slice())
        }
    }

    pub fn rates(&self) -> usize {
        match self {
            Counters::Narrow(n) => n.rates(),
            Counters::Wide(w) => w.len(),
        }
    }

    /// Counts one attempt in every rate's window and writes each count
    /// (this attempt included) into `out`, as [`Slots::hit`] per rate.
    pub fn hit(&mut self, periods: &[Millis], now: Millis, out: &mut [u64]) {
        if self.rates() != periods.len() {
            // The policy was reloaded with other rates for this key.
            *self = Counters::new(periods.len());
        }
        if let Counters::Narrow(n) = self {
            if !n.fits(periods, now) {
                *self = Counters::Wide(n.widen().into_boxed_slice());
            }
        }
        match self {
            Counters::Narrow(n) => n.hit(periods, now, out),
            Counters::Wide(w) => {
                for ((s, p), c) in w.iter_mut().zip(periods).zip(out.iter_mut()) {
                    *c = s.hit(*p, now);
                }
            }
        }
    }

    /// After this instant no window here counts anything: evicting the key
    /// then forgets nothing.
    pub fn live_until(&self) -> Millis {
        match self {
            Counters::Narrow(n) => n.live_until(),
            Counters::Wide(w) => w.iter().map(Slots::live_until_kept).max().unwrap_or(0),
        }
    }
}

/// Counts of the last few minutes in eight buckets, so "sends within the
/// last N minutes" is never undercounted (a sliding estimate would spread a
/// burst over the whole window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recent {
    /// Start of the newest bucket, in bucket widths since the epoch.
    newest: u32,
    buckets: [u16; 8],
}

impl Recent {
    /// Bucket width for a span: a sixth of it (at least a second), so the
    /// span plus the two partial buckets at its ends fit in eight.
    fn width(span: Millis) -> Millis {
        span.div_ceil(6).max(1_000)
    }

    pub fn add(&mut self, span: Millis, now: Millis) {
        let w = Self::width(span);
        let idx = (now / w) as u32;
        if idx > self.newest {
            let shift = (idx - self.newest) as usize;
            if shift >= self.buckets.len() {
                self.buckets = [0; 8];
            } else {
                self.buckets.rotate_right(shift);
                self.buckets[..shift].fill(0);
            }
            self.newest = idx;
        }
        let age = self.newest.saturating_sub(idx) as usize;
        if let Some(b) = self.buckets.get_mut(age) {
            *b = b.saturating_add(1);
        }
    }

    /// Takes back one send made at `at` (one answered within the span):
    /// nothing when its bucket has passed.
    pub fn remove(&mut self, span: Millis, at: Millis) {
        let idx = (at / Self::width(span)) as u32;
        if idx > self.newest {
            return;
        }
        if let Some(b) = self.buckets.get_mut((self.newest - idx) as usize) {
            *b = b.saturating_sub(1);
        }
    }

    /// Sends within the last `span` (rounded out to whole buckets: never
    /// fewer than happened).
    pub fn count(&self, span: Millis, now: Millis) -> u64 {
        let w = Self::width(span);
        let idx = (now / w) as u32;
        let age = idx.saturating_sub(self.newest) as usize;
        // Buckets needed to cover the span, plus the partial ones at its ends.
        let keep = (span.div_ceil(w) as usize + 2).min(self.buckets.len());
        self.buckets
            .iter()
            .take(keep.saturating_sub(age))
            .map(|b| u64::from(*b))
            .sum()
    }
}

/// What the adaptive stage remembers of one key (`prefix:7=+4479111`,
/// `region=GB`, `client_ip=203.0.113.7`, ...): forwarded sends, their
/// confirmations and how many numbers were new, per hour and per day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conversion {
    /// Forwarded sends: hour, day.
    pub sent: [Window; 2],
    /// Forwarded sends still inside their grace period.
    pub recent: Recent,
    /// Confirmations: hour, day.
    pub confirmed: [Window; 2],
    /// New numbers (for a prefix or region: not sent to within a day; for
    /// a sender: not sent to by this sender within the window): hour, day.
    pub fresh: [Window; 2],
    /// New numbers, and confirmations, in the surge window.
    pub surge: Window,
    pub surge_confirmed: Window,
    /// Distinct regions a sender reached today.
    pub regions: Window,
    /// The most confirmations seen in one day, and when: the baseline.
    pub peak: u32,
    pub peak_at: Millis,
}

/// Who asked for a send: a user (when named) and an account, shared by
/// every number they send to.
#[derive(Debug, PartialEq, Eq)]
pub struct Origin {
    pub user: Option<Box<str>>,
    /// Shared by every origin of the account (accounts are few).
    pub account: Arc<str>,
}

/// A number the guard forwarded a send to and awaits a confirmation for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// The last forwarded send (0: none).
    pub sent_at: Millis,
    /// A confirmation after `sent_at` (0: none yet).
    pub confirmed_at: Millis,
    /// Until when the number is vouched for (0: never was): set by a
    /// plausible confirmation (the number proved receipt); unlike
    /// `confirmed_at`, a new send does not clear it.
    pub vouched_until: Millis,
    /// Who asked for it, to credit them when it is confirmed.
    pub client_ip: Option<std::net::IpAddr>,
    pub product: u8,
    /// The send counted toward its keys' conversion: its product's
    /// confirmations flowed when it was sent. One that did not is counted
    /// with its confirmation, if one comes (the first of its product).
    pub counted: bool,
    /// The user and account (none: neither known), one pointer rather than
    /// a text of each per number.
    pub origin: Option<Arc<Origin>>,
}

impl Pending {
    /// A send went out less than `grace` ago and awaits its confirmation.
    pub fn awaits(&self, now: Millis, grace: Millis) -> bool {
        self.sent_at > 0 && self.confirmed_at == 0 && now.saturating_sub(self.sent_at) < grace
    }

    pub fn user(&self) -> Option<&str> {
        self.origin.as_ref().and_then(|o| o.user.as_deref())
    }

    /// The account ("" when not known).
    pub fn account(&self) -> &str {
        self.origin.as_ref().map_or("", |o| &o.account)
    }
}

/// Sizes and evictions, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub counters: u64,
    pub backoffs: u64,
    pub blocks: u64,
    pub offences: u64,
    /// Adaptive stage: keys, numbers awaiting confirmation, sender pairs.
    pub conversions: u64,
    pub pending: u64,
    pub pairs: u64,
    /// Entries evicted for space while they still held state that mattered.
    pub evicted_live: u64,
    /// Of those, automatic blocks still active (manual ones never are).
    pub blocks_evicted_live: u64,
}

/// The kind of a store key (`prefix:6` of `prefix:6=+141640`), as
/// [`Store::may_block`] and the eviction counts name it.
pub fn key_kind(key: &str) -> &str {
    key.split_once('=').map_or(key, |(kind, _)| kind)
}

pub trait Store: Send + Sync + 'static {
    /// The active block on `key`, if any.
    fn block(&self, key: &str, now: Millis) -> Option<BlockEntry>;
    fn set_block(&self, key: &str, entry: BlockEntry);
    /// Sets a block by hand: kept until it ends or is lifted, whatever
    /// traffic does (never evicted for space); an error when the table of
    /// manual blocks is full.
    fn set_manual_block(&self, key: &str, entry: BlockEntry) -> Result<(), String> {
        self.set_block(key, entry);
        Ok(())
    }
    /// Whether a block may be active on some key of this kind (`to`,
    /// `prefix:8`: the text before `=`). `false` must mean none is; a store
    /// that cannot tell cheaply answers `true`.
    fn may_block(&self, _kind: &str) -> bool {
        true
    }
    fn remove_block(&self, key: &str) -> bool;
    /// Active blocks, for the admin API.
    fn blocks(&self, now: Millis) -> Vec<(String, BlockEntry)>;
    /// Records one more offence on `key` and returns how many are remembered
    /// (offences older than `forgive_after` are forgotten).
    fn offend(&self, key: &str, now: Millis, forgive_after: Millis) -> u32;
    /// A rule tripped on `key`: records one more offence and blocks the
    /// key for as long as `esc` says that offence earns. A key that
    /// already has an active block is the same offence still going on
    /// (another signal, another replica or a monitored send tripping it
    /// again): no offence is counted, the block is renewed (until
    /// `max(until, now + the duration of its offence)`) and keeps its
    /// offence number, and its rule and action, unless it blocks nothing
    /// (a monitored block) and this trip does. Returns how long the block
    /// lasts from `now` and its offence number.
    fn trip(
        &self,
        key: &str,
        now: Millis,
        esc: &Escalation,
        rule: Arc<str>,
        action: Action,
    ) -> (Millis, u32) {
        let entry = match self.block(key, now) {
            Some(cur) => cur.renewed(now, esc, rule, action),
            None => {
                let offence = self.offend(key, now, esc.forgive_after);
                esc.entry(now, offence, rule, action)
            }
        };
        let (until, offence) = (entry.until, entry.offence);
        self.set_block(key, entry);
        (until.saturating_sub(now), offence)
    }
    /// Counts one attempt on `key` in a window per period; writes each
    /// window's count (this attempt included) into `counts`.
    fn hit(&self, key: &str, periods: &[Millis], now: Millis, counts: &mut [u64]);
    /// Reads and updates the backoff state of a number atomically.
    fn backoff(&self, key: &str, now: Millis, update: &mut dyn FnMut(&mut BackoffState));
    /// Adds `amount` to the spend under `key` unless that would exceed
    /// `cap`; returns the new total, or the unchanged total when refused.
    fn spend(&self, key: &str, amount: u64, cap: u64) -> Result<u64, u64>;
    fn refund(&self, key: &str, amount: u64);
    fn spent(&self, key: &str) -> u64;
    /// Runs `f` on the adaptive state of `key`; when absent it is created
    /// if `create`, else `f` is not run. Returns whether `f` ran.
    fn conversion(&self, key: &str, create: bool, f: &mut dyn FnMut(&mut Conversion)) -> bool;
    /// Runs `f` on the pending state of a number (created empty when
    /// absent if `create`). Returns whether `f` ran.
    fn pending(&self, number: &str, create: bool, f: &mut dyn FnMut(&mut Pending)) -> bool;
    /// When `pair` (a sender and a number or region) was last seen, if it
    /// was; with `record`, it is now.
    fn pair_seen(&self, pair: &str, now: Millis, record: bool) -> Option<Millis>;
    /// When a confirmation for `key` (account and product) was last seen;
    /// with `record`, one is seen now.
    fn confirmations_seen(&self, key: &str, now: Millis, record: bool) -> Option<Millis>;
    fn stats(&self) -> StoreStats;

    // Reads for a dry run ([`DryRun`]: `explain` on the live guard), which
    // must change nothing. A store that cannot tell answers as for a key it
    // never saw.

    /// What [`Store::hit`] would write into `counts`, without counting.
    fn peek_hit(&self, _key: &str, _periods: &[Millis], _now: Millis, counts: &mut [u64]) {
        counts.fill(1);
    }
    /// What [`Store::offend`] would return, without recording an offence.
    fn peek_offend(&self, _key: &str, _now: Millis, _forgive_after: Millis) -> u32 {
        1
    }
    /// A number's backoff state, without creating it.
    fn peek_backoff(&self, _key: &str) -> Option<BackoffState> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trip_on_an_active_block_renews_it_as_the_same_offence() {
        let (m, h) = (60_000, 3_600_000);
        let t = 1_700_000_000_000;
        let s = MemoryStore::new(100, 100);
        let esc = Escalation {
            base: h,
            escalate: 2.0,
            max: 8 * h,
            forgive_after: 48 * h,
        };
        let rule = |r: &str| Arc::<str>::from(r);
        assert_eq!(s.trip("k", t, &esc, rule("a"), Action::Shadow), (h, 1));
        // Tripped again (another signal, another replica) while blocked:
        // the same offence, renewed from now, first rule kept.
        assert_eq!(
            s.trip("k", t + 10 * m, &esc, rule("b"), Action::Reject),
            (h, 1)
        );
        let b = s.block("k", t + 10 * m).unwrap();
        assert_eq!(
            (b.since, b.until, b.offence, &*b.rule, b.action),
            (t, t + 70 * m, 1, "a", Action::Shadow)
        );
        // A renewal never shortens a block.
        s.set_block(
            "k",
            BlockEntry {
                until: t + 5 * h,
                ..b
            },
        );
        assert_eq!(
            s.trip("k", t + 20 * m, &esc, rule("a"), Action::Shadow),
            (5 * h - 20 * m, 1)
        );
        assert_eq!(s.block("k", t).unwrap().until, t + 5 * h);
        // Once the block is over, a trip is a repeat offence: doubled.
        let later = t + 6 * h;
        assert_eq!(
            s.trip("k", later, &esc, rule("a"), Action::Shadow),
            (2 * h, 2)
        );
        assert_eq!(s.block("k", later).unwrap().since, later);

        // A monitored block is renewed by a monitored trip, and turned
        // into the block of a trip that stops sends (not a new offence).
        assert_eq!(s.trip("m", t, &esc, rule("watch"), Action::Monitor), (h, 1));
        assert_eq!(
            s.trip("m", t + m, &esc, rule("watch"), Action::Monitor).1,
            1
        );
        assert_eq!(s.block("m", t).unwrap().action, Action::Monitor);
        assert_eq!(
            s.trip("m", t + 2 * m, &esc, rule("stop"), Action::Shadow),
            (h, 1)
        );
        let b = s.block("m", t + 2 * m).unwrap();
        assert_eq!((&*b.rule, b.action, b.offence), ("stop", Action::Shadow, 1));
        // A manual block tripped is renewed for the trip's first offence.
        s.set_block(
            "x",
            BlockEntry {
                since: t,
                until: t + m,
                rule: rule("manual"),
                action: Action::Reject,
                offence: 1,
            },
        );
        assert_eq!(s.trip("x", t, &esc, rule("a"), Action::Shadow), (h, 1));
        let b = s.block("x", t).unwrap();
        assert_eq!((&*b.rule, b.until), ("manual", t + h));
    }

    #[test]
    fn a_window_counts_every_attempt_and_slides() {
        let mut w = Window::default();
        let h = 3_600_000;
        for i in 1..=5 {
            assert_eq!(w.hit(h, 10 * h + i), i);
        }
        // Half-way into the next window, half of the previous five still count
        // (rounded up), plus this one.
        assert_eq!(w.hit(h, 11 * h + h / 2), 3 + 1);
        // Two windows later nothing from the first remains.
        assert_eq!(w.hit(h, 13 * h + 1), 1);
        assert!(w.live(h, 13 * h + 2));
        assert!(!w.live(h, 16 * h));
    }

    #[test]
    fn slots_count_every_attempt_of_the_last_period_and_age_out() {
        let h = 3_600_000;
        let t = 10 * h;
        let mut s = Slots::default();
        // Five in the last second of an hour still count 48 minutes later:
        // the case a two-window estimate gets wrong.
        for i in 0..5 {
            assert_eq!(s.hit(h, t + h - 1_000 + i), i + 1);
        }
        assert_eq!(s.count(h, t + h + 48 * 60_000), 5);
        assert_eq!(s.hit(h, t + h + 48 * 60_000), 6);
        // Gone once a period and a slot have passed.
        assert!(s.live_until(h) > t + 2 * h);
        assert_eq!(s.count(h, t + 2 * h + 48 * 60_000 + h / 6), 0);
        assert_eq!(
            s.live_until(h),
            (t + h + 48 * 60_000) / (h / 6) * (h / 6) + 7 * (h / 6)
        );
        // Any attempt counts for at least its period, wherever it falls.
        for offset in (0..h).step_by(7_919_000) {
            for age in (0..h).step_by(1_300_100) {
                let mut s = Slots::default();
                s.hit(h, t + offset);
                assert_eq!(s.count(h, t + offset + age), 1, "{offset} {age}");
            }
        }
    }

    #[test]
    fn a_new_period_keeps_what_was_counted_and_ages_it_out_under_the_new_one() {
        let (m10, h) = (600_000, 3_600_000);
        let t = 1_700_000_000_000 - 1_700_000_000_000 % h;
        let mut s = Slots::default();
        for i in 0..5 {
            s.hit(m10, t + i);
        }
        // Reloaded as 5/1h: the five still count, and one more makes six.
        assert_eq!(s.hit(h, t + 1_000), 6);
        assert_eq!(s.count(h, t + 30 * 60_000), 6);
        // An hour and a slot later they are gone (the count grew forever
        // when the slot indexes of the old period were kept).
        assert_eq!(s.hit(h, t + 2 * h), 1);
        // And back to a shorter period.
        assert_eq!(s.hit(m10, t + 2 * h + 1), 2);
        assert_eq!(s.hit(m10, t + 2 * h + 2 * m10), 1);
        // What no longer counted under the old period is not carried.
        assert_eq!(s.hit(h, t + 4 * h), 1);
    }

    /// The counters of a key, one [`Slots`] per rate: what [`Counters`]
    /// must answer exactly.
    fn reference(slots: &mut Vec<Slots>, periods: &[Millis], now: Millis) -> Vec<u64> {
        if slots.len() != periods.len() {
            *slots = vec![Slots::default(); periods.len()];
        }
        slots
            .iter_mut()
            .zip(periods)
            .map(|(s, p)| s.hit(*p, now))
            .collect()
    }

    #[test]
    fn narrow_counters_count_as_slots_do_through_reloads_and_pauses() {
        let (m, h, d) = (60_000, 3_600_000, 86_400_000);
        let plans: [&[Millis]; 6] = [&[h, d], &[10 * m, d], &[h], &[6], &[d, h], &[7, 13]];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut narrow = 0;
        for run in 0..200 {
            let mut c = Counters::new(2);
            let mut slots = Vec::new();
            let mut now = 1_795_305_600_000 + rand(d);
            let mut plan = plans[run % plans.len()];
            for step in 0..250 {
                // Mostly bursts, sometimes a pause of up to two days, and
                // now and then a reload with other periods.
                now += match rand(10) {
                    0..=5 => rand(1_000),
                    6..=8 => rand(h),
                    _ => rand(2 * d),
                };
                // Now and then a clock a little behind.
                let now = if rand(8) == 0 { now - rand(3 * m) } else { now };
                if rand(50) == 0 {
                    plan = plans[rand(plans.len() as u64) as usize];
                }
                let mut out = [0u64; 2];
                c.hit(plan, now, &mut out[..plan.len()]);
                let want = reference(&mut slots, plan, now);
                assert_eq!(&out[..plan.len()], &want[..], "run {run} step {step}");
                let live = slots.iter().map(Slots::live_until_kept).max().unwrap();
                assert_eq!(c.live_until(), live, "run {run} step {step}");
            }
            narrow += usize::from(matches!(c, Counters::Narrow(_)));
        }
        // Most keys stay narrow: only a reload behind the clock widens.
        assert!(narrow > 100, "{narrow}");
    }

    #[test]
    fn a_narrow_key_widens_before_a_count_passes_8_bits() {
        let (m, h) = (60_000, 3_600_000);
        let t = 1_795_305_600_000;
        let mut c = Counters::new(2);
        let mut slots = Vec::new();
        let mut out = [0u64; 2];
        let periods = [m, h];
        // 70,000 attempts in one minute: past u8::MAX in one slot, and
        // past u16::MAX.
        for i in 0..70_000u64 {
            let now = t + i * 50_000 / 70_000;
            if i == 254 {
                assert!(matches!(c, Counters::Narrow(_)));
            }
            c.hit(&periods, now, &mut out);
            let want = reference(&mut slots, &periods, now);
            assert_eq!(&out[..], &want[..], "attempt {i}");
            assert_eq!(out[0], i + 1);
        }
        assert!(matches!(c, Counters::Wide(_)));
        // Wide, it goes on exactly, and ages out.
        for now in [t + m, t + 30 * m, t + h + m, t + 3 * h] {
            c.hit(&periods, now, &mut out);
            assert_eq!(&out[..], &reference(&mut slots, &periods, now)[..]);
        }
        assert_eq!(out, [1, 1]);
        // Three rates are wide from the start; one rate is narrow.
        assert!(matches!(Counters::new(3), Counters::Wide(_)));
        assert!(matches!(Counters::new(1), Counters::Narrow(_)));
        assert!(std::mem::size_of::<Counters>() <= 32);
    }

    #[test]
    fn widening_keeps_every_count_and_its_age() {
        let (m, h) = (600_000, 3_600_000);
        let t = 1_795_305_600_000;
        let mut n = Narrow::new(2);
        let mut slots = Vec::new();
        let mut out = [0u64; 2];
        for i in 0..250 {
            let now = t + i * 7_000;
            n.hit(&[m, h], now, &mut out);
            reference(&mut slots, &[m, h], now);
        }
        assert_eq!(n.widen(), slots);
        // A reload right after widening carries the same counts.
        let mut c = Counters::Wide(n.widen().into_boxed_slice());
        let now = t + 250 * 7_000;
        c.hit(&[h, 2 * h], now, &mut out);
        assert_eq!(&out[..], &reference(&mut slots, &[h, 2 * h], now)[..]);
    }

    #[test]
    fn recent_sends_are_never_undercounted_and_age_out() {
        let span = 5 * 60_000;
        let mut r = Recent::default();
        let t = 1_700_000_000_000;
        for i in 0..30 {
            r.add(span, t + i * 1_000);
        }
        // A burst of 30 in half a minute counts whole for five minutes...
        assert_eq!(r.count(span, t + 30_000), 30);
        assert_eq!(r.count(span, t + span - 1_000), 30);
        // ...and is gone once a span and two buckets have passed.
        assert_eq!(r.count(span, t + span + 2 * span.div_ceil(6) + 30_000), 0);
        r.add(span, t + 10 * span);
        assert_eq!(r.count(span, t + 10 * span), 1);
        // Wherever a send falls in its bucket, it counts for its whole span.
        for offset in (0..span).step_by(7_919) {
            for age in (0..span).step_by(13_001) {
                let mut r = Recent::default();
                r.add(span, t + offset);
                assert_eq!(r.count(span, t + offset + age), 1, "{offset} {age}");
            }
        }
    }

    #[test]
    fn an_answered_send_is_taken_back_from_its_bucket_only() {
        let span = 5 * 60_000;
        let t = 1_700_000_000_000;
        let mut r = Recent::default();
        for i in 0..3 {
            r.add(span, t + i * 60_000);
        }
        // The second, answered a minute later: two still await.
        r.remove(span, t + 60_000);
        assert_eq!(r.count(span, t + 2 * 60_000), 2);
        // Its bucket is empty now: a second take-back there changes nothing.
        r.remove(span, t + 60_000);
        r.remove(span, t + 60_000);
        assert_eq!(r.count(span, t + 2 * 60_000), 2);
        // A send from before every bucket, or after the newest, is no one's.
        r.remove(span, t - 10 * span);
        r.remove(span, t + 10 * span);
        assert_eq!(r.count(span, t + 2 * 60_000), 2);
        // The first ages out as before; the third still counts.
        assert_eq!(r.count(span, t + span + 2 * span.div_ceil(6)), 1);
    }
}
