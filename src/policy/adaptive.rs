//! Stage 5½: what static limits miss.
//!
//! Three signals, each judged against the operator's own traffic:
//!
//! - **unconfirmed**: per prefix (several lengths), region, client address
//!   and user, forwarded sends that were never confirmed (a Verify check
//!   answered `approved`, Messaging Feedback `confirmed`, or the admin API)
//!   against `max(floor, ratio × confirmed baseline)`, per hour and per day.
//!   The baseline is the key's own confirmations (the most it saw in a day
//!   recently, or in this window), or, for a key too new to have one, its
//!   parent's share (a prefix one digit longer gets a tenth of its
//!   parent's). It acts only where confirmations are known to flow for the
//!   send's account and product, so an app that never confirms is never
//!   punished for it;
//! - **surge**: new numbers per prefix or region in a short window against
//!   the key's own average per window over the last day;
//! - **distinct**: distinct numbers (and regions) per client address, user
//!   or account, with an allowance that grows with confirmed sends.
//!
//! A tripped signal blocks the key it fired on through the blocks stage's
//! escalating blocks, and names itself (`adaptive:unconfirmed:prefix:7`).
//! Only forwarded sends are counted ([`Adaptive::forwarded`]): a send the
//! guard stopped can never be confirmed, and counting it would feed a loop
//! that blocks more and more.

use std::fmt::Write as _;
use std::hash::BuildHasher as _;
use std::sync::Arc;

use super::blocks::Escalation;
use super::broadcast::Broadcasts;
use super::{Attempt, Policy, Reason, Stage, Step, Verdict};
use crate::base::clock::{ms, Millis};
use crate::config::{self, Action, Config, Rate, Short};
use crate::phone::{Classification, Destination};
use crate::store::{Conversion, Origin, Pending, Store};
use crate::twilio::routes::Product;

const HOUR: Millis = 3_600_000;
const DAY: Millis = 86_400_000;
/// The windows every adaptive figure is kept for.
const PERIODS: [Millis; 2] = [HOUR, DAY];
/// The rule of a new number stopped because its product's sends to the
/// region are pumped without locality.
pub const DISPERSED_RULE: &str = "adaptive:dispersed:region";
/// A number not sent to within this long is new.
const FRESH_AFTER: Millis = DAY;
/// A product's region is pumped without locality while at most this share
/// of its new numbers this hour went to a block that had another: a pump
/// over a whole country sends one per block (0-3 % replayed), a sprayer
/// several (16-59 %), real users in a dense city up to half, but their
/// region converts.
const DISPERSED_LOCAL_SHARE: f64 = 0.1;
/// Sends past their grace (yesterday's, today's before this hour, or for
/// a guard just started the day's) before an app's own unanswered share is
/// known.
const NORM_SAMPLE: u64 = 50;
/// The most an app's own unanswered share scales the ratios: an app whose
/// real users answer fewer than a third of their codes is judged as one
/// that answers a third. (Capped at half, an app whose people answer a
/// little fewer than half saw a country under alert all night and a
/// city's area code blocked on its people's own unanswered codes.)
const NORM_MAX_SCALE: f64 = 8.0;

/// How this app's real users answer their codes, against what the
/// conversion ratios are set for (`unconfirmed.usual`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Norm {
    /// Multiplies every ratio of unanswered to confirmed sends.
    scale: f64,
    /// Unanswered sends with no confirmation that are evidence against a
    /// range (as unlikely from its real users as two where `usual` holds).
    runs: u64,
    /// Enough of the app's sends were seen to know it: until then a broad
    /// key's conversion is not judged (nothing says what is low for it).
    known: bool,
}

impl Norm {
    const USUAL: Norm = Norm {
        scale: 1.0,
        runs: 2,
        known: true,
    };
    const UNKNOWN: Norm = Norm {
        known: false,
        ..Norm::USUAL
    };
}

/// Message contents remembered per generation to recognise broadcasts
/// (about 100 bytes each, two generations).
const BROADCAST_CONTENTS: usize = 16_384;

/// Which kind of key a figure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `prefix:N`; `width` is how many digits shorter than the number's
    /// block it is (0 for the block itself or longer).
    Prefix {
        n: u8,
        width: u8,
    },
    Region,
    ClientIp,
    User,
    Account,
}

impl Scope {
    fn kind(&self) -> String {
        match self {
            Scope::Prefix { n, .. } => format!("prefix:{n}"),
            Scope::Region => "region".into(),
            Scope::ClientIp => "client_ip".into(),
            Scope::User => "user".into(),
            Scope::Account => "account".into(),
        }
    }
}

/// The keys of one send, `kind=value` texts in one buffer: the
/// destination's region and prefixes (broadest first), then its senders.
pub(crate) struct Keys {
    buf: String,
    items: Vec<(Scope, usize, usize)>,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            buf: String::with_capacity(160),
            items: Vec::with_capacity(10),
        }
    }

    fn push(&mut self, scope: Scope, kind: &str, value: impl std::fmt::Display) {
        let start = self.buf.len();
        self.buf.push_str(kind);
        self.buf.push('=');
        let _ = write!(self.buf, "{value}");
        self.items.push((scope, start, self.buf.len()));
    }

    /// The `i`th key's text.
    fn get(&self, i: usize) -> &str {
        let (_, a, b) = self.items[i];
        &self.buf[a..b]
    }

    fn iter(&self) -> impl Iterator<Item = (Scope, &str)> {
        self.items
            .iter()
            .map(|(scope, a, b)| (*scope, &self.buf[*a..*b]))
    }
}

/// What judging a send learned that counting it, once forwarded, needs.
pub(crate) struct Seen {
    keys: Keys,
    /// No send to the number was forwarded within a day.
    fresh: bool,
    /// Per key (bit i): the sender had not reached this number, or this
    /// region, within a day.
    new_number: u32,
    new_region: u32,
    /// The number is vouched for: adaptive signals passed it.
    pub(crate) vouched: bool,
    /// Until when it is vouched for (0: never was).
    vouched_until: Millis,
    /// A broadcast: nothing here counted or judged it.
    pub(crate) broadcast: bool,
    /// Confirmations flow for the send's account and product: it counts
    /// toward its keys' conversion. One that nobody can confirm (Messaging
    /// of an app that reports no Feedback, beside its Verify) would count
    /// as unanswered under the same ranges and senders as sends that can.
    flows: bool,
}

/// Floors per window (hour, day); `None` when the window is not judged.
#[derive(Debug, Clone, Copy, Default)]
struct Floors([Option<u64>; 2]);

impl Floors {
    fn from_rates(rates: &[Rate]) -> Floors {
        let mut f = Floors::default();
        for r in rates {
            if let Some(i) = PERIODS.iter().position(|p| *p == ms(r.period)) {
                f.0[i] = Some(r.count);
            }
        }
        f
    }

    fn doubled(self, times: u8) -> Floors {
        let m = 1u64 << times.min(20);
        Floors(self.0.map(|f| f.map(|f| f.saturating_mul(m))))
    }
}

pub(crate) struct Adaptive {
    cfg: config::Adaptive,
    /// Account sids, shared by the origins of one account.
    accounts: std::sync::Mutex<std::collections::HashSet<Arc<str>>>,
    /// Users and accounts, shared by the numbers awaiting confirmation.
    origins: std::sync::Mutex<Origins>,
    action: Action,
    grace: Millis,
    learn: Millis,
    baseline: Millis,
    surge_window: Millis,
    block: Escalation,
    /// Blocks of ranges found carrying an alerted key's excess.
    alert_block: Escalation,
    alert: Millis,
    vouch: Millis,
    min_confirm_delay: Millis,
    unconfirmed_prefix: Floors,
    unconfirmed_region: Floors,
    unconfirmed_client_ip: Floors,
    unconfirmed_user: Floors,
    distinct_client_ip: Floors,
    distinct_user: Floors,
    distinct_account: Floors,
    /// Contents sent recently, to recognise broadcasts.
    broadcasts: Broadcasts,
}

/// Interned origins, found by the hash of their user and account.
#[derive(Default)]
struct Origins {
    table: hashbrown::HashTable<Arc<Origin>>,
    hasher: std::hash::RandomState,
}

/// A signal that tripped on one key, with the figures it compared.
struct Trip {
    signal: &'static str,
    key: String,
    /// Blocked for `alert_block`, not `block`: a client address whose
    /// distinct numbers are all the evidence (no conversion can weigh
    /// them), as a carrier NAT's busy hour shows as many.
    brief: bool,
    /// Tripped on the day's figures alone (a broad key's day carries an
    /// attack that ended hours ago), not this hour's or a surge's.
    day_only: bool,
    kind: String,
    figures: String,
}

/// A destination key of the send being judged: what narrowing an alert
/// reads.
struct Dest {
    /// Index in the send's keys.
    index: usize,
    broad: bool,
}

/// What one judgement of a send reads everywhere.
struct Judging<'a> {
    a: &'a Attempt<'a>,
    store: &'a dyn Store,
    now: Millis,
    /// Confirmations flow for the account and product: conversion is judged.
    flows: bool,
    /// How the app's real users answer, against `unconfirmed.usual`.
    norm: Norm,
    trace: bool,
    region: &'a str,
    /// Digits of the calling code.
    cc: u8,
    /// The last destination key's digits and baselines, lent to the next.
    parent: Option<(u8, [u64; 2])>,
    /// The broadest prefix's digits and new numbers in the surge window,
    /// shared out over the prefixes under it.
    top_surge: Option<(u8, u64)>,
    pair_key: String,
}

/// What reading a send's keys found: the signals that tripped, the
/// figures (for `explain`), its destination keys, and the first sender
/// that proves receipt (a new number it asks for is not judged by an
/// alert).
#[derive(Default)]
struct Reading {
    trips: Vec<Trip>,
    notes: Vec<String>,
    dests: Vec<Dest>,
    proven_sender: Option<usize>,
}

/// A range under an alerted key: its index in the send's keys, its state.
type Child = (usize, Conversion);

/// What an alert on a broad key finds about the send's own ranges.
enum Range {
    /// The narrowest range with history has confirmations and no recent
    /// excess: the send goes.
    Proven(usize),
    /// The narrowest range with history carries unconfirmed sends and no
    /// confirmations to match: it takes the block.
    Carrying(usize),
    /// No range under the alerted key has any history: its broadest
    /// child takes the block.
    Unknown(usize),
    /// The narrowest range with history never confirmed, and its
    /// unanswered sends are all older than the hour: the send is stopped,
    /// the range is not blocked, so its next new number is judged again
    /// (by then people around it may be confirming: a campaign's start).
    Old(usize),
}

impl Adaptive {
    pub(crate) fn new(cfg: &config::Adaptive, config: &Config) -> Adaptive {
        Adaptive {
            action: Policy::stage_action(config, cfg.action),
            grace: ms(cfg.grace),
            learn: ms(cfg.learn),
            baseline: ms(cfg.baseline),
            surge_window: ms(cfg.surge.window).max(1),
            block: Escalation {
                base: ms(cfg.block),
                escalate: cfg.escalate,
                max: ms(cfg.block_max),
                forgive_after: ms(cfg.forgive_after),
            },
            alert_block: Escalation {
                base: ms(cfg.alert_block),
                escalate: cfg.escalate,
                max: ms(cfg.block_max),
                forgive_after: ms(cfg.forgive_after),
            },
            alert: ms(cfg.alert),
            vouch: ms(cfg.vouch),
            min_confirm_delay: ms(cfg.min_confirm_delay),
            unconfirmed_prefix: Floors::from_rates(&cfg.unconfirmed.prefix),
            unconfirmed_region: Floors::from_rates(&cfg.unconfirmed.region),
            unconfirmed_client_ip: Floors::from_rates(&cfg.unconfirmed.client_ip),
            unconfirmed_user: Floors::from_rates(&cfg.unconfirmed.user),
            distinct_client_ip: Floors::from_rates(&cfg.distinct.client_ip),
            distinct_user: Floors::from_rates(&cfg.distinct.user),
            distinct_account: Floors::from_rates(&cfg.distinct.account),
            broadcasts: Broadcasts::new(BROADCAST_CONTENTS, ms(cfg.bulk_window)),
            cfg: cfg.clone(),
            accounts: Default::default(),
            origins: Default::default(),
        }
    }

    /// The account sid as one shared text (a fresh one past 10,000
    /// accounts, which only costs memory).
    fn account(&self, sid: &str) -> Arc<str> {
        let mut set = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = set.get(sid) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(sid);
        if set.len() < 10_000 {
            set.insert(a.clone());
        }
        a
    }

    /// The user and account as one shared origin (a fresh one past 10,000
    /// origins, which only costs memory).
    fn origin(&self, user: Option<&str>, account: &str) -> Arc<Origin> {
        let mut o = self.origins.lock().unwrap_or_else(|p| p.into_inner());
        let hash = o.hasher.hash_one((user, account));
        let same = |x: &Arc<Origin>| x.user.as_deref() == user && *x.account == *account;
        if let Some(x) = o.table.find(hash, same) {
            return x.clone();
        }
        let x = Arc::new(Origin {
            user: user.map(Box::from),
            account: self.account(account),
        });
        if o.table.len() < 10_000 {
            let Origins { table, hasher } = &mut *o;
            table.insert_unique(hash, x.clone(), |y| {
                hasher.hash_one((y.user.as_deref(), &*y.account))
            });
        }
        x
    }

    /// Whether a sender of this scope is judged on the numbers (or regions)
    /// it reaches: only then are its sender-number pairs remembered.
    fn tracks_numbers(&self, scope: Scope) -> bool {
        self.sender_floors(scope).1 .0.iter().any(Option::is_some)
    }

    /// A sender's floors: for unconfirmed sends (none for an account) and
    /// for distinct numbers.
    fn sender_floors(&self, scope: Scope) -> (Floors, Floors) {
        match scope {
            Scope::ClientIp => (self.unconfirmed_client_ip, self.distinct_client_ip),
            Scope::User => (self.unconfirmed_user, self.distinct_user),
            _ => (Floors::default(), self.distinct_account),
        }
    }

    /// The destination keys of a number, broadest first: its region, then
    /// its prefixes from the shortest to the longest.
    fn destination_keys(&self, to: &Destination, class: &Classification, keys: &mut Keys) {
        let digits = to.e164.len().saturating_sub(1);
        let cc = cc_digits(class.calling_code);
        let block = match self.cfg.block_digits {
            0 => None,
            b => digits
                .checked_sub(b as usize)
                .filter(|n| *n > cc)
                .map(|n| n as u8),
        };
        let mut lengths = [0u8; 16];
        let mut count = 0;
        for n in self
            .cfg
            .prefixes
            .iter()
            .map(|k| (cc + *k as usize) as u8)
            .filter(|n| (*n as usize) < digits)
            .chain(block)
        {
            if count < lengths.len() && !lengths[..count].contains(&n) {
                lengths[count] = n;
                count += 1;
            }
        }
        let lengths = &mut lengths[..count];
        lengths.sort_unstable();
        let narrowest = block.unwrap_or(lengths.last().copied().unwrap_or(0));
        let region = class.region.as_ref().map_or("none", |r| r.as_str());
        keys.push(Scope::Region, "region", region);
        for &mut n in lengths {
            keys.buf.push_str("prefix:");
            let kind_start = keys.buf.len() - "prefix:".len();
            let _ = write!(keys.buf, "{n}={}", to.prefix(n as usize));
            keys.items.push((
                Scope::Prefix {
                    n,
                    width: narrowest.saturating_sub(n),
                },
                kind_start,
                keys.buf.len(),
            ));
        }
    }

    /// The sender keys of a send: client address, user, account.
    /// An account is a key only when it is judged (`distinct.account`):
    /// no other signal reads it, so it is not kept for nothing.
    fn sender_keys(
        &self,
        client_ip: Option<std::net::IpAddr>,
        user: Option<&str>,
        account: &str,
        keys: &mut Keys,
    ) {
        if let Some(ip) = client_ip {
            keys.push(Scope::ClientIp, "client_ip", ip);
        }
        if let Some(u) = user {
            keys.push(Scope::User, "user", u);
        }
        if !account.is_empty() && self.tracks_numbers(Scope::Account) {
            keys.push(Scope::Account, "account", account);
        }
    }

    /// Whether confirmations flow for this account and product: one was
    /// seen within `learn`.
    fn flows(&self, store: &dyn Store, account: &str, product: Product, now: Millis) -> bool {
        store
            .confirmations_seen(&flow_key(account, product), now, false)
            .is_some_and(|t| now.saturating_sub(t) <= self.learn)
    }

    /// How the app's sends of `product` were answered, against
    /// `unconfirmed.usual`: [`Norm::UNKNOWN`] until `NORM_SAMPLE` are past
    /// their grace, [`Norm::USUAL`] where they leave no more unanswered
    /// than that. Once a guard has run an hour, this hour is left out, so a
    /// pump going on now does not loosen its own judging; sends the guard
    /// stopped are never counted, and a confirmation too doubtful to
    /// believe credits nothing.
    fn norm(&self, store: &dyn Store, account: &str, product: Product, now: Millis) -> Norm {
        let c = read(store, &app_key(account, product));
        // A guard just started has no day before this hour: the day so
        // far, this hour included.
        let so_far = (
            self.aged_unconfirmed(&c, 1, now) + c.confirmed[1].count(DAY, now),
            c.confirmed[1].count(DAY, now),
        );
        let Some(q) = usual_share(&c, now).or_else(|| share(so_far)) else {
            return Norm::UNKNOWN;
        };
        let usual = self.cfg.unconfirmed.usual;
        if q <= usual {
            return Norm::USUAL;
        }
        let odds = |q: f64| q / (1.0 - q);
        let scale = if q >= 1.0 {
            NORM_MAX_SCALE
        } else {
            (odds(q) / odds(usual)).min(NORM_MAX_SCALE)
        };
        // The share the scale stands for, and how many unanswered sends in
        // a row are then as unlikely as two at `usual`.
        let capped = odds(usual) * scale;
        let q = capped / (1.0 + capped);
        let runs = (2.0 * usual.ln() / q.ln()).ceil();
        Norm {
            scale,
            runs: if runs.is_finite() {
                (runs as u64).max(2)
            } else {
                2
            },
            known: true,
        }
    }

    /// Whether `e164` proved receipt recently (a plausible confirmation
    /// within `vouch`): until when.
    pub(crate) fn vouched(&self, store: &dyn Store, e164: &str, now: Millis) -> Option<Millis> {
        if self.vouch == 0 {
            return None;
        }
        let mut until = 0;
        store.pending(e164, false, &mut |p| until = p.vouched_until);
        (until > now).then_some(until)
    }

    /// Why a block the adaptive stage set does not apply to this send, if
    /// it does not: the number is vouched for, or the block is an alert's
    /// and the number is not new (someone asking again for a code that was
    /// sent). Blocks set by hand or by limits always apply.
    pub(crate) fn exempts(
        &self,
        rule: &str,
        key: &str,
        a: &Attempt,
        store: &dyn Store,
        now: Millis,
    ) -> Option<String> {
        if !rule.starts_with("adaptive:") {
            return None;
        }
        if let Some(until) = self.vouched(store, &a.to.e164, now) {
            return Some(format!("the number is vouched for until {}", at(until)));
        }
        if rule.starts_with("adaptive:surge:") && self.awaited(store, &a.to.e164, now) {
            return Some(
                "asked again while its code, sent before the block, is awaited".to_string(),
            );
        }
        if !rule.starts_with("adaptive:alert:") {
            return None;
        }
        if let Some(n) = self.broadcast(a, now) {
            return Some(format!(
                "a broadcast (the same message to {n} numbers): an alert's block applies to new numbers asked for by end users"
            ));
        }
        if !is_fresh(store, &a.to.e164, now) {
            return Some("an alert's block applies to new numbers only".to_string());
        }
        if let Some(why) = self.retry_probe(&a.to.e164, key, store, now) {
            return Some(why);
        }
        let mut keys = Keys::new();
        self.sender_keys(a.end_user_ip.then_some(a.client_ip), a.user, "", &mut keys);
        let norm = self.norm(store, a.account, a.product, now);
        let proven = keys
            .iter()
            .find(|(scope, key)| self.proves_receipt(*scope, &read(store, key), norm, now))
            .map(|(_, key)| format!("{key} proves receipt: an alert does not judge it"));
        proven
    }

    /// A send to the number went out within the grace and awaits its
    /// confirmation.
    fn awaited(&self, store: &dyn Store, e164: &str, now: Millis) -> bool {
        let mut awaited = false;
        store.pending(e164, false, &mut |p| awaited = p.awaits(now, self.grace));
        awaited
    }

    /// A number this stage's conversion judgement stopped (an alert's
    /// range, its block, or a region pumped without locality) is
    /// remembered for the grace: a person whose code did not come asks
    /// again within it (see [`Adaptive::retry_probe`]).
    pub(crate) fn stopped(&self, rule: &str, e164: &str, store: &dyn Store, now: Millis) {
        if rule.starts_with("adaptive:alert:") || rule == DISPERSED_RULE {
            let mut key = String::with_capacity(40);
            pair(&mut key, "again", e164);
            store.pair_seen(&key, now, true);
        }
    }

    /// A number stopped within the grace is asked for again: a person who
    /// did not get the code (a pump's number has nobody waiting for it).
    /// It goes out as a probe, one per `scope` (the range or region that
    /// stopped it) per `alert`: a real user gets the code a minute late,
    /// and a pump that asks twice for every number gains one send per
    /// range per half hour, which counts against the range if unanswered.
    /// Why it goes, when it does.
    fn retry_probe(
        &self,
        e164: &str,
        scope: &str,
        store: &dyn Store,
        now: Millis,
    ) -> Option<String> {
        let mut key = String::with_capacity(64);
        pair(&mut key, "again", e164);
        let stopped = store.pair_seen(&key, now, false)?;
        if now.saturating_sub(stopped) >= self.grace {
            return None;
        }
        // The number that opened the door goes through it again within
        // its grace (its block, then its range, judge it in one send).
        let mut probing = String::with_capacity(40);
        pair(&mut probing, "probing", e164);
        if !within(store.pair_seen(&probing, now, false), now, self.grace) {
            pair(&mut key, "probe", scope);
            if within(store.pair_seen(&key, now, false), now, self.alert) {
                return None;
            }
            store.pair_seen(&key, now, true);
            store.pair_seen(&probing, now, true);
        }
        Some(format!(
            "asked again {} after it was stopped: forwarded as {scope}'s probe (one per {})",
            Short(std::time::Duration::from_secs(
                now.saturating_sub(stopped) / 1000
            )),
            Short(std::time::Duration::from_millis(self.alert))
        ))
    }

    /// To how many numbers this send's message went within `bulk_window`,
    /// when that makes it a broadcast: the same content to at least `bulk`
    /// numbers, sent by the app itself (no end user's address, from an app
    /// that gives one on its end users' sends, seen within `learn`). A
    /// send made for an end user never is: a pumper asking the app to text
    /// its numbers a fixed message (an app link) is judged as ever.
    fn broadcast(&self, a: &Attempt, now: Millis) -> Option<usize> {
        if self.cfg.bulk == 0 {
            return None;
        }
        if a.end_user_ip {
            return None;
        }
        // Only an app that marks its end users' sends (with their
        // address) says by leaving it out that a send is its own; one that
        // never does cannot tell us, and a fixed text from its forms must
        // stay judged.
        if !self.broadcasts.end_users_marked(now, self.learn) {
            return None;
        }
        let n = self.broadcasts.observe(a.content?, &a.to.e164, now);
        (n >= self.cfg.bulk as usize).then_some(n)
    }

    /// Whether a client address or user proves receipt today: at least
    /// two confirmations, and no more unanswered sends than confirmed
    /// (people behind a carrier's NAT or an office, who enter their
    /// codes). Only plausible confirmations are counted here, so a pumper
    /// entering its own codes at once proves nothing.
    fn proves_receipt(&self, scope: Scope, c: &Conversion, norm: Norm, now: Millis) -> bool {
        if !matches!(scope, Scope::ClientIp | Scope::User) {
            return false;
        }
        let confirmed = c.confirmed[1].count(DAY, now);
        confirmed >= 2 && self.aged_unconfirmed(c, 1, now) as f64 <= norm.scale * confirmed as f64
    }

    /// Whether a destination key is broad: a region, or a prefix at least
    /// `broad_digits` shorter than the number's block.
    fn broad(&self, scope: Scope) -> bool {
        match scope {
            Scope::Region => true,
            Scope::Prefix { width, .. } => width >= self.cfg.broad_digits.max(1),
            _ => false,
        }
    }

    /// One sender key of the send (client address, user or account): its
    /// signals, whether it reaches a new number or region, whether it
    /// proves receipt.
    #[allow(clippy::too_many_arguments)]
    fn read_sender(
        &self,
        (i, scope, key): (usize, Scope, &str),
        state: &Conversion,
        own: [u64; 2],
        j: &mut Judging<'_>,
        // Bit `i` of the send's new-number and new-region masks.
        (new_numbers, new_regions): (&mut u32, &mut u32),
        r: &mut Reading,
    ) {
        let (a, store, now, flows, trace) = (j.a, j.store, j.now, j.flows, j.trace);
        let region = j.region;
        // A sender: client address, user or account.
        let (unconfirmed, distinct) = self.sender_floors(scope);
        if flows {
            let against = (own, self.cfg.unconfirmed.ratio * j.norm.scale);
            r.trips
                .extend(self.unconfirmed(scope, key, state, unconfirmed, against, now));
        }
        let (new_number, new_region) =
            self.reaches_new(scope, store, &mut j.pair_key, key, a, region, now);
        if new_number {
            *new_numbers |= 1 << i;
            r.trips
                .extend(self.distinct(scope, key, state, distinct, flows, now));
        }
        if flows && r.proven_sender.is_none() && self.proves_receipt(scope, state, j.norm, now) {
            r.proven_sender = Some(i);
        }
        if new_region {
            *new_regions |= 1 << i;
            let count = state.regions.count(DAY, now) + 1;
            // People behind one office or hotel address who prove
            // receipt are not a sprayer.
            let vouched = flows && state.confirmed[1].count(DAY, now) > 0;
            if count > u64::from(self.cfg.distinct.regions) && !vouched {
                r.trips.push(Trip {
                    signal: "regions",
                    brief: scope == Scope::ClientIp && !flows,
                    day_only: false,
                    kind: scope.kind(),
                    key: key.to_string(),
                    figures: format!(
                        "{count} regions in 1d > {} allowed",
                        self.cfg.distinct.regions
                    ),
                });
            }
        }
        if trace {
            let mut note = self.figures(key, state, unconfirmed, own, now);
            if let Some(floor) = distinct.0[1].or(distinct.0[0]) {
                let _ = write!(
                    note,
                    ", {} distinct numbers in 1d (floor {floor} + {} per confirmed)",
                    state.fresh[1].count(DAY, now),
                    self.cfg.distinct.ratio
                );
            }
            r.notes.push(note);
        }
    }

    /// One destination key of the send (its region or a prefix, broadest
    /// first, each lending its baseline to the next): its signals.
    #[allow(clippy::too_many_arguments)]
    fn read_destination(
        &self,
        (i, scope, key): (usize, Scope, &str),
        state: &Conversion,
        own: [u64; 2],
        j: &mut Judging<'_>,
        fresh: bool,
        r: &mut Reading,
    ) {
        let (now, flows, trace, cc) = (j.now, j.flows, j.trace, j.cc);
        let n = match scope {
            Scope::Prefix { n, .. } => n,
            _ => cc,
        };
        let borrowed = j.parent.map_or([0, 0], |(pn, b)| {
            let share = 10u64.saturating_pow(u32::from(n.saturating_sub(pn)));
            b.map(|v| v / share.max(1))
        });
        let base = [own[0].max(borrowed[0]), own[1].max(borrowed[1])];
        j.parent = Some((n, base));
        let broad = self.broad(scope);
        // What chance puts in this prefix when the broadest prefix's new
        // numbers this window fall evenly over the ranges under it.
        let share = match (scope, j.top_surge) {
            (Scope::Prefix { .. }, None) => {
                j.top_surge = Some((n, state.surge.count(self.surge_window, now)));
                0.0
            }
            (Scope::Prefix { .. }, Some((top, count))) => {
                count as f64 / 10f64.powi(i32::from(n.saturating_sub(top)))
            }
            _ => 0.0,
        };
        let (floors, surge_floor) = match scope {
            Scope::Prefix { width, .. } => (
                self.unconfirmed_prefix.doubled(width),
                (f64::from(self.cfg.surge.floor)
                    * self.cfg.surge.per_digit.powi(i32::from(width.min(12))))
                    as u64,
            ),
            _ => (self.unconfirmed_region, u64::from(self.cfg.surge.region)),
        };
        if flows && (j.norm.known || !broad) {
            // A broad key is judged on this window's own conversion
            // (its alert costs nobody by itself); a narrow one
            // against its baseline too.
            let (base, ratio) = if broad {
                let own = [0, 1].map(|w| state.confirmed[w].count(PERIODS[w], now));
                (own, self.cfg.unconfirmed.alert_ratio)
            } else {
                (base, self.cfg.unconfirmed.ratio)
            };
            let ratio = ratio * j.norm.scale;
            r.trips
                .extend(self.unconfirmed(scope, key, state, floors, (base, ratio), now));
        }
        if fresh && surge_floor > 0 {
            r.trips
                .extend(self.surge(scope, key, state, (surge_floor, share), flows, now));
        }
        if trace {
            let mut note = self.figures(key, state, floors, base, now);
            if surge_floor > 0 {
                let _ = write!(
                    note,
                    ", {} new numbers in {} (surge floor {surge_floor})",
                    state.surge.count(self.surge_window, now),
                    humantime::format_duration(std::time::Duration::from_millis(self.surge_window))
                );
            }
            r.notes.push(note);
        }
        r.dests.push(Dest { index: i, broad });
    }

    /// Judges a send; what it learned is returned for [`Adaptive::forwarded`].
    pub(crate) fn check(
        &self,
        a: &Attempt,
        store: &dyn Store,
        now: Millis,
        trace: bool,
    ) -> (Step, Seen) {
        if let Some(n) = self.broadcast(a, now) {
            return self.pass_broadcast(n, trace);
        }
        let (mut seen, senders) = self.keys_of(a, store, now);
        let flows = seen.flows;
        let norm = if flows {
            self.norm(store, a.account, a.product, now)
        } else {
            Norm::USUAL
        };
        let mut j = Judging {
            a,
            store,
            now,
            flows,
            norm,
            trace,
            region: a.class.region.as_ref().map_or("none", |r| r.as_str()),
            cc: cc_digits(a.class.calling_code) as u8,
            parent: None,
            top_surge: None,
            pair_key: String::with_capacity(80),
        };
        let mut r = Reading {
            dests: Vec::with_capacity(senders),
            ..Reading::default()
        };
        for (i, (scope, key)) in seen.keys.iter().enumerate() {
            let state = read(store, key);
            let own = self.baselines(&state, now);
            if i >= senders {
                let bits = (&mut seen.new_number, &mut seen.new_region);
                self.read_sender((i, scope, key), &state, own, &mut j, bits, &mut r);
            } else {
                self.read_destination((i, scope, key), &state, own, &mut j, seen.fresh, &mut r);
            }
        }
        let Reading {
            trips,
            mut notes,
            dests,
            proven_sender,
        } = r;
        if trace && flows && norm != Norm::USUAL {
            notes.push(if norm.known {
                format!(
                    "the app's {} sends leave more than {} unanswered: ratios x{:.2}, {} unanswered sends against a range",
                    a.product.as_str(),
                    self.cfg.unconfirmed.usual,
                    norm.scale,
                    norm.runs
                )
            } else {
                format!(
                    "fewer than {NORM_SAMPLE} of the app's {} sends seen past their grace: no broad key's conversion judged yet",
                    a.product.as_str()
                )
            });
        }

        if seen.vouched {
            // Counted as any forwarded send, judged by nothing here.
            let step = pass!(
                trace,
                "vouched for until {}: the number proved receipt; {}",
                at(seen.vouched_until),
                notes.join("; ")
            );
            return (step, seen);
        }
        let keys = &seen.keys;

        // A broad key's excess puts it under alert; it is never blocked.
        let (broad, narrow): (Vec<Trip>, Vec<Trip>) = trips.into_iter().partition(|t| {
            dests
                .iter()
                .any(|d| d.broad && keys.get(d.index) == t.key.as_str())
        });
        for t in &broad {
            let marker = if t.signal == "surge" {
                surge_alert_key(&t.key)
            } else {
                alert_key(&t.key)
            };
            store.pair_seen(&marker, now, true);
        }
        if !narrow.is_empty() {
            let step = self.block_narrow(&narrow, &dests, keys, store, now);
            return (step, seen);
        }

        let mut step = self.judge_under_alert(
            &a.to.e164,
            &seen,
            &dests,
            &broad,
            proven_sender,
            &notes,
            (flows, norm),
            store,
            now,
            trace,
        );
        if let Step::Pass(why) = &mut step {
            match self.dispersed(a, &seen, proven_sender, (flows, norm), store, now) {
                Ok(stop) => return (stop, seen),
                Err(Some(note)) if trace => {
                    why.push_str("; ");
                    why.push_str(&note);
                }
                Err(_) => {}
            }
        }
        (step, seen)
    }

    /// A product's sends to the region are pumped without prefix
    /// locality: this hour its unconfirmed sends there outnumber its
    /// confirmed ones `dispersed_ratio` times, past the region's hourly
    /// floor. No range carries such an excess (each sees one send), so
    /// the product's new, unvouched numbers asked for by an end user in
    /// the region are stopped while it lasts: nothing is blocked, and it
    /// lifts as the hour's unanswered sends age out. A send the app makes
    /// itself (no end user's address or user) is never judged here.
    ///
    /// The send's stop, or (`Err`) why it passes, when it was judged.
    fn dispersed(
        &self,
        a: &Attempt,
        seen: &Seen,
        proven_sender: Option<usize>,
        (flows, norm): (bool, Norm),
        store: &dyn Store,
        now: Millis,
    ) -> Result<Step, Option<String>> {
        let ratio = self.cfg.unconfirmed.dispersed_ratio * norm.scale;
        if ratio <= 0.0 || !flows || !seen.fresh || proven_sender.is_some() {
            return Err(None);
        }
        if !a.end_user_ip && a.user.is_none() {
            return Err(None);
        }
        let Some(region) = a.class.region.as_ref() else {
            return Err(None);
        };
        let key = product_region_key(a.product, region.as_str());
        let c = read(store, &key);
        let unconfirmed = self.aged_unconfirmed(&c, 0, now);
        let confirmed = c.confirmed[0].count(HOUR, now);
        let floor = self.unconfirmed_region.0[0]
            .unwrap_or(u64::from(self.cfg.unconfirmed.min_sample))
            .max(1);
        // Now: new numbers asked for by end users in the last surge window
        // against the confirmations that came in it. A pump shows there
        // within minutes, where the hour's unanswered sends take most of an
        // hour to pass `ratio` times a busy hour's confirmations. It must
        // surge too, past `surge.factor` times the region's usual new
        // numbers (once known), so that most of the numbers a stop meets
        // are the pump's, few its people's.
        let w = self.surge_window;
        let (new_now, confirmed_now) = (c.surge.count(w, now), c.surge_confirmed.count(w, now));
        // The usual: the day's average per window, or the hour before the
        // window where that is lower (the people's pace at this time of
        // day: the day's average runs high at night).
        let usual_now = usual_fresh_per_hour(&c, now).map(|u| {
            let day = u * w as f64 / HOUR as f64;
            let before = c.fresh[0].count(HOUR, now).saturating_sub(new_now) as f64 * w as f64
                / HOUR.saturating_sub(w).max(1) as f64;
            day.min(before)
        });
        let factor = self.cfg.surge.factor;
        let hour = unconfirmed as f64 > ratio * confirmed as f64;
        let recent = usual_now.is_some_and(|usual| {
            new_now >= floor
                && new_now as f64 > ratio * confirmed_now as f64
                && new_now as f64 > factor * usual
        });
        let window = Short(self.cfg.surge.window);
        let figures = format!(
            "{unconfirmed} unconfirmed and {confirmed} confirmed sends in 1h, {new_now} new numbers and {confirmed_now} confirmations in {window} ({} usual)",
            usual_now.map_or_else(|| "not yet known as".to_string(), |u| format!("{u:.1}"))
        );
        if unconfirmed < floor || !(hour || recent) {
            return Err(Some(format!(
                "{key}: {figures}; stopped past floor {floor} and {} to 1 in either, in {window} also past {factor} x usual",
                Ratio(ratio)
            )));
        }
        // An excess with locality (a sprayer that sends several numbers
        // to each block) is the ranges' to judge: they block it at no cost
        // to the region's other people.
        let fresh = c.fresh[0].count(HOUR, now);
        let local = read(store, &local_key(&key)).sent[0].count(HOUR, now);
        let sample = u64::from(self.cfg.unconfirmed.min_sample.max(1));
        if local >= sample && local as f64 > DISPERSED_LOCAL_SHARE * fresh as f64 {
            return Err(Some(format!(
                "{key}: {local} of {fresh} new numbers this hour went to a block that had another: the ranges judge it"
            )));
        }
        if let Some(probe) = self.retry_probe(&a.to.e164, &key, store, now) {
            return Err(Some(format!("{key}: {figures}; {probe}")));
        }
        // A send stopped here can never confirm: it counts as one more
        // unanswered, so the stop lasts while new numbers keep coming
        // faster than `dispersed_ratio` times the confirmations, and lifts
        // once they come at a real user's pace.
        if self.action != Action::Monitor {
            self.count_dispersed(
                a.product,
                region.as_str(),
                Some((a.to, &a.class)),
                store,
                now,
            );
        }
        let detail = format!(
            "{key}: {figures} (> {} to 1, floor {floor}), {local} of {fresh} new numbers forwarded to a block that had another; new numbers are stopped while it lasts",
            Ratio(ratio)
        );
        Ok(self.stop(DISPERSED_RULE.to_string(), detail, None))
    }

    /// A new number stopped as dispersed pumping of `product` in `region`
    /// (here or by another replica): it can never confirm, so it counts as
    /// one more unanswered send there, and in its ranges (`to`, when
    /// known). There, a sprayer that comes back to its ranges is blocked
    /// by them: its sends stop reaching the region's judgement, and the
    /// region's other new numbers flow again, where a pump with no
    /// locality leaves no range any evidence and the region's stop holds.
    pub(crate) fn count_dispersed(
        &self,
        product: Product,
        region: &str,
        to: Option<(&Destination, &Classification)>,
        store: &dyn Store,
        now: Millis,
    ) {
        if self.cfg.unconfirmed.dispersed_ratio <= 0.0 {
            return;
        }
        let (grace, w) = (self.grace, self.surge_window);
        let key = product_region_key(product, region);
        store.conversion(&key, true, &mut |c| {
            count_sent(c, grace, now);
            c.surge.add(w, now, 1);
        });
        let Some((to, class)) = to else {
            return;
        };
        // Asked for again and forwarded as a probe, it is not counted
        // twice (see [`Adaptive::forwarded`]).
        let mut counted = String::with_capacity(40);
        pair(&mut counted, "counted", &to.e164);
        store.pair_seen(&counted, now, true);
        let mut keys = Keys::new();
        self.destination_keys(to, class, &mut keys);
        for (scope, key) in keys.iter() {
            if matches!(scope, Scope::Prefix { .. }) {
                store.conversion(key, true, &mut |c| {
                    count_sent(c, grace, now);
                    count_fresh(c, now);
                    c.surge.add(w, now, 1);
                });
            }
        }
    }

    /// A broadcast passes: neither counted nor judged here.
    fn pass_broadcast(&self, n: usize, trace: bool) -> (Step, Seen) {
        let step = pass!(
            trace,
            "a broadcast: the same message went to {n} numbers within {}, sent by the app itself (no end user's address); nobody is expected to confirm it, so it is neither counted nor judged here",
            Short(self.cfg.bulk_window)
        );
        let seen = Seen {
            keys: Keys::new(),
            fresh: false,
            new_number: 0,
            new_region: 0,
            vouched: false,
            vouched_until: 0,
            broadcast: true,
            flows: false,
        };
        (step, seen)
    }

    /// Narrow keys tripped: each is blocked (escalating), its broad
    /// ancestor counts the trip, and the send is stopped under the first.
    ///
    /// A `brief` trip (a client address whose distinct numbers no
    /// conversion can weigh) is blocked for `alert_block`, not `block`: a
    /// carrier NAT's busy hour shows as many. The block escalates on each
    /// repeat, and a sender still over its floor when it lifts trips again
    /// on its next send, so a bot gains little from the shorter start.
    fn block_narrow(
        &self,
        narrow: &[Trip],
        dests: &[Dest],
        keys: &Keys,
        store: &dyn Store,
        now: Millis,
    ) -> Step {
        let first = &narrow[0];
        let rule = format!("adaptive:{}:{}", first.signal, first.kind);
        let mut detail = format!("{}: {}", first.key, first.figures);
        for (i, t) in narrow.iter().enumerate() {
            let rule = Arc::from(format!("adaptive:{}:{}", t.signal, t.kind));
            let escalation = if t.brief {
                &self.alert_block
            } else {
                &self.block
            };
            let (dur, offence) = store.trip(&t.key, now, escalation, rule, self.action);
            self.sibling_tripped(dests, keys, &t.key, store, now);
            if i == 0 {
                let _ = write!(detail, "; {}", blocked_for(dur, offence));
            }
        }
        self.stop(rule, detail, Some(first.key.clone()))
    }

    /// The first of the send's broad keys under alert, for a new number
    /// only: a number sent to today is not looked up; and whether a surge
    /// raised it.
    ///
    /// An alert a surge raised holds only while the key's new numbers do
    /// not convert: once half of the window's have confirmed, the surge
    /// was people (a city's campaign, whose codes arrive a minute after
    /// its sign-ups), and the alert no longer judges its ranges. An alert
    /// raised by unanswered sends holds its full length.
    fn alerted<'d>(
        &self,
        seen: &Seen,
        dests: &'d [Dest],
        norm: Norm,
        store: &dyn Store,
        now: Millis,
    ) -> Option<(&'d Dest, bool)> {
        let mut pair_key = String::with_capacity(80);
        let recent = |raised: Option<Millis>| within(raised, now, self.alert);
        for d in dests.iter().filter(|d| d.broad && seen.fresh) {
            let key = seen.keys.get(d.index);
            pair(&mut pair_key, "alert", key);
            if recent(store.pair_seen(&pair_key, now, false)) {
                return Some((d, false));
            }
            pair(&mut pair_key, "alert-surge", key);
            if recent(store.pair_seen(&pair_key, now, false))
                && !self.surge_converts(&read(store, key), norm, now)
            {
                return Some((d, true));
            }
        }
        None
    }

    /// Half the new numbers of the surge window proved receipt (two at
    /// least), or as many as the app's real users answer: no more left
    /// unanswered than `norm.scale` per confirmed.
    fn surge_converts(&self, c: &Conversion, norm: Norm, now: Millis) -> bool {
        let w = self.surge_window;
        let confirmed = c.surge_confirmed.count(w, now);
        confirmed >= 2 && (1.0 + norm.scale) * confirmed as f64 >= c.surge.count(w, now) as f64
    }

    /// Under an alert on one of its broad keys, a new number is judged by
    /// its own ranges, from the narrowest up: a range that converts lets
    /// it go, one that carries unconfirmed sends (or, with no history
    /// under the key, its broadest child) is blocked for new numbers for
    /// `alert_block`. A number sent to today, or asked for by a sender that
    /// proves receipt, is not judged here; without confirmations flowing
    /// for the account and product, nothing is (see [`Adaptive::range`]).
    #[allow(clippy::too_many_arguments)]
    fn judge_under_alert(
        &self,
        e164: &str,
        seen: &Seen,
        dests: &[Dest],
        broad: &[Trip],
        proven_sender: Option<usize>,
        notes: &[String],
        (flows, norm): (bool, Norm),
        store: &dyn Store,
        now: Millis,
        trace: bool,
    ) -> Step {
        let keys = &seen.keys;
        let Some((alerted, by_surge)) = self.alerted(seen, dests, norm, store, now) else {
            let step = pass!(
                trace,
                "{}{}",
                if flows {
                    "confirmations flow; "
                } else {
                    "no confirmations seen for this account and product: conversion not judged; "
                },
                notes.join("; ")
            );
            return step;
        };
        if let Some(i) = proven_sender {
            let step = pass!(
                trace,
                "{} under alert; {} proves receipt: {}",
                keys.get(alerted.index),
                keys.get(i),
                notes.join("; ")
            );
            return step;
        }
        let trip = broad.iter().find(|t| t.key == keys.get(alerted.index));
        let why = match trip {
            Some(t) => format!("{} under alert: {}", t.key, t.figures),
            None => format!("{} under alert", keys.get(alerted.index)),
        };
        // Read again here only: an alert is rare, a copy per key is not.
        let children: Vec<Child> = dests
            .iter()
            .filter(|d| d.index > alerted.index)
            .map(|d| (d.index, read(store, keys.get(d.index))))
            .collect();
        let figures_of = |i: usize| {
            let c = &children.iter().find(|(j, _)| *j == i).expect("a child").1;
            self.range_figures(c, now)
        };
        // The range that answers for the send, what it shows, and whether
        // it is blocked or the send alone stopped.
        let tripped =
            |i: usize| store.peek_offend(keys.get(i), now, self.alert_block.forgive_after) > 1;
        let (key_index, figures, block) = match self.range(&children, tripped, (flows, norm), now) {
            Some(Range::Proven(i)) => {
                let step = pass!(
                    trace,
                    "{why}; {} is a proven range: {}",
                    keys.get(i),
                    notes.join("; ")
                );
                return step;
            }
            None if !flows => {
                let step = pass!(
                    trace,
                    "{why}; no confirmations seen for this account and product: an alert blocks nothing without them; {}",
                    notes.join("; ")
                );
                return step;
            }
            None => return pass!(trace, "{why}; {}", notes.join("; ")),
            Some(Range::Carrying(i)) => (i, figures_of(i), true),
            Some(Range::Unknown(i)) => (i, "no confirmed send under it recently".to_string(), true),
            // Old evidence under an excess only the day's figures still
            // show: the attack that left both may be hours over.
            Some(Range::Old(i)) if trip.is_some_and(|t| t.day_only) => {
                let step = pass!(
                    trace,
                    "{why}; {}: {}, none this hour: old evidence under the day's excess only; {}",
                    keys.get(i),
                    figures_of(i),
                    notes.join("; ")
                );
                return step;
            }
            Some(Range::Old(i)) => (i, format!("{}, none this hour", figures_of(i)), false),
        };
        let key = keys.get(key_index).to_string();
        if let Some(probe) = self.retry_probe(e164, &key, store, now) {
            return pass!(trace, "{why}; {key}: {figures}; {probe}");
        }
        let kind = kind_of(seen, key_index);
        // Stopping sends under it is the excess persisting: the alert
        // lasts while they come, and lifts `alert` after the last.
        let marker = if by_surge {
            surge_alert_key(keys.get(alerted.index))
        } else {
            alert_key(keys.get(alerted.index))
        };
        store.pair_seen(&marker, now, true);
        let rule = format!("adaptive:alert:{kind}");
        if !block {
            let detail =
                format!("{key}: {figures}; {why}; this send stopped, the range not blocked");
            return self.stop(rule, detail, None);
        }
        let (dur, offence) = store.trip(
            &key,
            now,
            &self.alert_block,
            Arc::from(rule.as_str()),
            self.action,
        );
        let detail = format!("{key}: {figures}; {why}; {}", blocked_for(dur, offence));
        self.stop(rule, detail, Some(key))
    }

    /// What a range found carrying an alert's excess shows.
    fn range_figures(&self, c: &Conversion, now: Millis) -> String {
        format!(
            "{} unconfirmed and {} confirmed sends in 1h, {} and {} in 1d",
            self.aged_unconfirmed(c, 0, now),
            c.confirmed[0].count(HOUR, now),
            self.aged_unconfirmed(c, 1, now),
            c.confirmed[1].count(DAY, now)
        )
    }

    /// The verdict of a send this stage stops, and the key it blocked for
    /// it (none: the send alone is stopped).
    fn stop(&self, rule: String, detail: String, blocked: Option<String>) -> Step {
        Step::Block(Verdict {
            stage: Stage::Adaptive,
            rule,
            detail: Some(detail),
            reason: Reason::Blocked,
            action: self.action,
            blocked,
        })
    }

    /// Forwarded sends past their grace and not confirmed, in window `i`.
    fn aged_unconfirmed(&self, c: &Conversion, i: usize, now: Millis) -> u64 {
        let recent = c.recent.count(self.grace, now);
        c.sent[i]
            .count(PERIODS[i], now)
            .saturating_sub(recent)
            .saturating_sub(c.confirmed[i].count(PERIODS[i], now))
    }

    /// What the send's ranges under an alerted key show, narrowest first:
    /// the first with evidence decides. Without confirmations flowing
    /// nothing can be proven, and nothing is blocked (`None`): a surge of
    /// new numbers over a broad key is all an alert has seen then, and a
    /// city's campaign is such a surge. The narrow rules (a block's surge,
    /// a sender's distinct numbers), limits and budgets still judge.
    ///
    /// A range is blocked only on evidence that outweighs what real users
    /// show under it:
    /// - one that never confirmed, on two unanswered sends, one of them
    ///   this hour, or on one this hour while nobody around it confirms
    ///   now; when all are older, the send is stopped but the range is not
    ///   blocked (`Old`), and not even that while the nearest busy range
    ///   above converts this hour (a city's campaign in a range a sprayer
    ///   passed through earlier);
    /// - one that converts, only when this hour's unanswered sends
    ///   outnumber every confirmation it saw (the day's and its baseline),
    ///   and beside this hour's confirmations are as unlikely from the
    ///   app's people as `runs` unanswered in a row ([`Adaptive::improbable`]:
    ///   three unanswered and two answered is a campaign's bad luck): its
    ///   confirmed history is weighed before it is blocked;
    /// - one `tripped` earlier (an offence on record, so blocked within
    ///   `forgive_after`) whose unanswered sends today still outnumber its
    ///   confirmations: its block lifted, the excess did not, so its next
    ///   new number renews the block (escalated) at once.
    fn range(
        &self,
        children: &[Child],
        tripped: impl Fn(usize) -> bool,
        (flows, norm): (bool, Norm),
        now: Millis,
    ) -> Option<Range> {
        let broadest = children.first()?.0;
        if !flows {
            return None;
        }
        let runs = norm.runs;
        for (at, &(index, ref c)) in children.iter().enumerate().rev() {
            // Every confirmation it saw: the day's, or its baseline's.
            let confirmed = self.baselines(c, now)[1];
            if c.sent[1].count(DAY, now) == 0 && confirmed == 0 {
                continue;
            }
            // Blocked earlier and still unanswered more than confirmed
            // today: the excess outlived its block.
            let day = self.aged_unconfirmed(c, 1, now);
            if day as f64 > norm.scale * confirmed as f64 && tripped(index) {
                return Some(Range::Carrying(index));
            }
            if confirmed == 0 {
                // One unanswered code is anyone's bad luck where people
                // around confirm now; two carry the excess, unless they
                // are old news where real users are confirming now. Sends
                // still in their grace are not known yet: the range above
                // decides. (Two, or `runs`: as many as are as unlikely
                // from the app's real users.)
                let hour = self.aged_unconfirmed(c, 0, now);
                let above = &children[..at];
                if day + 1 == runs && hour == day && !self.converts_now(above, norm, now) {
                    return Some(Range::Carrying(index));
                }
                if day >= runs {
                    if hour > 0 {
                        return Some(Range::Carrying(index));
                    }
                    if !self.converts_now(above, norm, now) {
                        return Some(Range::Old(index));
                    }
                }
                continue;
            }
            let unconfirmed = self.aged_unconfirmed(c, 0, now);
            return Some(
                if unconfirmed < runs
                    || unconfirmed as f64 <= norm.scale * confirmed as f64
                    || !self.improbable(unconfirmed, c.confirmed[0].count(HOUR, now), norm)
                {
                    Range::Proven(index)
                } else {
                    Range::Carrying(index)
                },
            );
        }
        Some(Range::Unknown(broadest))
    }

    /// Whether `unconfirmed` unanswered sends beside `confirmed` answered
    /// ones are as unlikely from the app's real users as `norm.runs`
    /// unanswered in a row: the chance of at least that many unanswered
    /// among them, each left unanswered at the app's own share, is at most
    /// `usual` squared. (Three unanswered beside two answered is a
    /// campaign's bad luck one time in seventeen where people leave one
    /// in five unanswered; six beside two, one in eight hundred.)
    fn improbable(&self, unconfirmed: u64, confirmed: u64, norm: Norm) -> bool {
        let usual = self.cfg.unconfirmed.usual;
        if !(usual > 0.0 && usual < 1.0) {
            return true;
        }
        let odds = usual / (1.0 - usual) * norm.scale;
        let q = odds / (1.0 + odds);
        binomial_tail(unconfirmed + confirmed, unconfirmed, q) <= usual * usual
    }

    /// Whether the nearest of `above` with `min_sample` sends past their
    /// grace this hour converts: its unanswered sends within `alert_ratio`
    /// of its confirmations.
    fn converts_now(&self, above: &[Child], norm: Norm, now: Millis) -> bool {
        let min = u64::from(self.cfg.unconfirmed.min_sample);
        for (_, c) in above.iter().rev() {
            let confirmed = c.confirmed[0].count(HOUR, now);
            let unconfirmed = self.aged_unconfirmed(c, 0, now);
            if unconfirmed + confirmed >= min {
                let ratio = self.cfg.unconfirmed.alert_ratio * norm.scale;
                return unconfirmed as f64 <= ratio * confirmed as f64;
            }
        }
        false
    }

    /// A narrow key tripped: its nearest broad ancestor counts it, and a
    /// second such trip within `alert` puts the ancestor under alert, so
    /// its other ranges are judged by their own conversion.
    fn sibling_tripped(
        &self,
        dests: &[Dest],
        keys: &Keys,
        key: &str,
        store: &dyn Store,
        now: Millis,
    ) {
        let Some(at) = dests.iter().position(|d| keys.get(d.index) == key) else {
            return;
        };
        let Some(parent) = dests[..at].iter().rev().find(|d| d.broad) else {
            return;
        };
        let pk = keys.get(parent.index);
        if store.offend(&format!("children>{pk}"), now, self.alert) >= 2 {
            store.pair_seen(&alert_key(pk), now, true);
        }
    }

    /// The key's own confirmation baselines per window: the most
    /// confirmations it saw in one day recently (an hour gets a sixth of a
    /// day's, as a busy hour can carry), or in this very window.
    fn baselines(&self, c: &Conversion, now: Millis) -> [u64; 2] {
        let peak = if now.saturating_sub(c.peak_at) <= self.baseline {
            u64::from(c.peak)
        } else {
            0
        };
        let hour = c.confirmed[0].count(HOUR, now).max(peak / 6);
        let day = c.confirmed[1].count(DAY, now).max(peak);
        [hour, day]
    }

    fn unconfirmed(
        &self,
        scope: Scope,
        key: &str,
        c: &Conversion,
        floors: Floors,
        (base, ratio): ([u64; 2], f64),
        now: Millis,
    ) -> Option<Trip> {
        let recent = c.recent.count(self.grace, now);
        for (i, period) in PERIODS.iter().enumerate() {
            let Some(floor) = floors.0[i] else { continue };
            let aged = c.sent[i].count(*period, now).saturating_sub(recent);
            if aged < u64::from(self.cfg.unconfirmed.min_sample) {
                continue;
            }
            let confirmed = c.confirmed[i].count(*period, now);
            let unconfirmed = aged.saturating_sub(confirmed);
            let allowed = floor.max((ratio * base[i] as f64) as u64);
            if unconfirmed > allowed {
                return Some(Trip {
                    signal: "unconfirmed",
                    brief: false,
                    day_only: i > 0,
                    kind: scope.kind(),
                    key: key.to_string(),
                    figures: format!(
                        "{unconfirmed} of {aged} sends unconfirmed in {} > max(floor {floor}, {} x baseline {})",
                        window_name(i),
                        Ratio(ratio),
                        base[i]
                    ),
                });
            }
        }
        None
    }

    fn surge(
        &self,
        scope: Scope,
        key: &str,
        c: &Conversion,
        (floor, share): (u64, f64),
        flows: bool,
        now: Millis,
    ) -> Option<Trip> {
        let w = self.surge_window;
        let recent = c.surge.count(w, now) + 1;
        let confirmed = if flows {
            c.surge_confirmed.count(w, now)
        } else {
            0
        };
        let unconfirmed = recent.saturating_sub(confirmed);
        // The key's average per window over the last day, this window left out.
        let day = c.fresh[1].count(DAY, now).saturating_sub(recent - 1);
        let average = day as f64 * w as f64 / DAY as f64;
        // A broad surge (a city's campaign) puts a few new numbers in many
        // of its ranges by chance: a range is judged past what chance puts
        // in it, its even share of the broadest prefix's new numbers
        // (a Poisson mean) and four standard deviations more: people's
        // numbers fill only some of the ranges, so the share is low.
        let chance = if share > 0.0 {
            share + 4.0 * share.sqrt() + 1.0
        } else {
            0.0
        };
        let allowed = floor
            .max((self.cfg.surge.factor * average) as u64)
            .max(chance as u64);
        (unconfirmed > allowed).then(|| Trip {
            signal: "surge",
            brief: false,
            day_only: false,
            kind: scope.kind(),
            key: key.to_string(),
            figures: format!(
                "{unconfirmed} new numbers unconfirmed in {} > max(floor {floor}, {} x average {average:.1}, chance {chance:.1})",
                humantime::format_duration(std::time::Duration::from_millis(w)),
                self.cfg.surge.factor
            ),
        })
    }

    /// A sender reaching one more number than it had.
    /// The day's floor is judged only where confirmations flow: over a
    /// day, dozens of people behind one carrier NAT look like a slow
    /// sprayer, and only their confirmations tell them apart. The hour's
    /// floor, which catches a fast sprayer, is always judged.
    fn distinct(
        &self,
        scope: Scope,
        key: &str,
        c: &Conversion,
        floors: Floors,
        flows: bool,
        now: Millis,
    ) -> Option<Trip> {
        // Conversion weighs the sender's numbers in a window only where
        // every one of them came from a send that can be confirmed: its
        // sends counted toward conversion (only those whose account and
        // product see confirmations do) are at least its new numbers.
        let judged = |i: usize| {
            flows && c.sent[i].count(PERIODS[i], now) >= c.fresh[i].count(PERIODS[i], now)
        };
        for (i, period) in PERIODS.iter().enumerate() {
            let Some(floor) = floors.0[i] else { continue };
            if *period == DAY && !judged(i) {
                continue;
            }
            let numbers = c.fresh[i].count(*period, now) + 1;
            let confirmed = c.confirmed[i].count(*period, now);
            let allowed = floor + (self.cfg.distinct.ratio * confirmed as f64) as u64;
            if numbers > allowed {
                return Some(Trip {
                    signal: "distinct",
                    brief: scope == Scope::ClientIp && !judged(i),
                    day_only: false,
                    kind: scope.kind(),
                    key: key.to_string(),
                    figures: format!(
                        "{numbers} distinct numbers in {} > floor {floor} + {} x {confirmed} confirmed",
                        window_name(i),
                        self.cfg.distinct.ratio
                    ),
                });
            }
        }
        None
    }

    /// One key's figures, for `explain`.
    fn figures(
        &self,
        key: &str,
        c: &Conversion,
        floors: Floors,
        base: [u64; 2],
        now: Millis,
    ) -> String {
        let mut s = format!("{key}: sent/confirmed");
        for (i, period) in PERIODS.iter().enumerate() {
            let _ = write!(
                s,
                " {}/{} in {}",
                c.sent[i].count(*period, now),
                c.confirmed[i].count(*period, now),
                window_name(i)
            );
            if let Some(floor) = floors.0[i] {
                let allowed = floor.max((self.cfg.unconfirmed.ratio * base[i] as f64) as u64);
                let _ = write!(s, " (unconfirmed allowed {allowed})");
            }
            s.push(',');
        }
        s.pop();
        s
    }

    /// Counts a send another replica forwarded, as [`Adaptive::check`] then
    /// [`Adaptive::forwarded`] would have here, without judging it.
    pub(crate) fn learn(&self, a: &Attempt, store: &dyn Store, now: Millis) {
        let (mut seen, senders) = self.keys_of(a, store, now);
        let region = a.class.region.as_ref().map_or("none", |r| r.as_str());
        let mut pair_key = String::with_capacity(80);
        for (i, (scope, key)) in seen.keys.iter().enumerate().skip(senders) {
            let (new_number, new_region) =
                self.reaches_new(scope, store, &mut pair_key, key, a, region, now);
            seen.new_number |= u32::from(new_number) << i;
            seen.new_region |= u32::from(new_region) << i;
        }
        self.forwarded(a, store, now, &seen);
    }

    /// The keys of a send (its destination's, then its senders') and
    /// whether its number is fresh; the second value is where the senders
    /// start.
    fn keys_of(&self, a: &Attempt, store: &dyn Store, now: Millis) -> (Seen, usize) {
        // One read of the number's entry: when it was last sent to, and
        // until when it is vouched for.
        let (mut last, mut until) = (0, 0);
        store.pending(&a.to.e164, false, &mut |p| {
            last = p.sent_at;
            until = p.vouched_until;
        });
        let mut seen = Seen {
            keys: Keys::new(),
            fresh: last == 0 || now.saturating_sub(last) >= FRESH_AFTER,
            new_number: 0,
            new_region: 0,
            vouched: self.vouch > 0 && until > now,
            vouched_until: until,
            broadcast: false,
            flows: self.flows(store, a.account, a.product, now),
        };
        self.destination_keys(a.to, &a.class, &mut seen.keys);
        let senders = seen.keys.items.len();
        let ip = a.end_user_ip.then_some(a.client_ip);
        self.sender_keys(ip, a.user, a.account, &mut seen.keys);
        (seen, senders)
    }

    /// Whether the sender `key` reaches a number, and a region, it has not
    /// within a day; each asked only where it is judged.
    #[allow(clippy::too_many_arguments)]
    fn reaches_new(
        &self,
        scope: Scope,
        store: &dyn Store,
        pair_key: &mut String,
        key: &str,
        a: &Attempt,
        region: &str,
        now: Millis,
    ) -> (bool, bool) {
        let (_, distinct) = self.sender_floors(scope);
        let number = distinct.0.iter().any(Option::is_some)
            && first_in_a_day(store, pair_key, key, &a.to.e164, now);
        let region = self.cfg.distinct.regions > 0
            && scope != Scope::Account
            && first_in_a_day(store, pair_key, key, region, now);
        (number, region)
    }

    /// Counts a send the guard forwarded: it now awaits its confirmation.
    pub(crate) fn forwarded(&self, a: &Attempt, store: &dyn Store, now: Millis, seen: &Seen) {
        if a.end_user_ip && self.cfg.bulk > 0 {
            // The app gives its end users' address (learned from sends that
            // went out, never from `explain`).
            self.broadcasts.saw_end_user(now);
        }
        let grace = self.grace;
        // A second code asked for while the first still awaits its
        // confirmation is the same attempt to reach that person (as Twilio
        // Verify counts one verification however often it resends): it is
        // awaited once, not twice.
        let mut again = false;
        store.pending(&a.to.e164, true, &mut |p| {
            again = p.awaits(now, grace);
            p.sent_at = now;
            p.confirmed_at = 0;
            p.client_ip = a.end_user_ip.then_some(a.client_ip);
            if p.user() != a.user || p.account() != a.account {
                p.origin = Some(self.origin(a.user, a.account));
            }
            p.product = product_code(a.product);
            p.counted = seen.flows;
        });
        if again {
            return;
        }
        if seen.flows {
            let key = app_key(a.account, a.product);
            store.conversion(&key, true, &mut |c| count_sent(c, grace, now));
        }
        let w = self.surge_window;
        let mut pair_key = String::with_capacity(80);
        let region = a.class.region.as_ref().map_or("none", |r| r.as_str());
        // Stopped as dispersed pumping within the grace and asked for
        // again (a probe): its ranges and region counted it then, as a new
        // number sent; it is the same attempt to reach one person. (Only a
        // new number is ever stopped so: others are not looked up.)
        let counted = seen.fresh && {
            pair(&mut pair_key, "counted", &a.to.e164);
            within(store.pair_seen(&pair_key, now, false), now, grace)
        };
        // The number's block had another new number forwarded this hour.
        let mut local = false;
        for (i, (scope, key)) in seen.keys.iter().enumerate() {
            let sender = matches!(scope, Scope::ClientIp | Scope::User | Scope::Account);
            let new_number = sender && seen.new_number & (1 << i) != 0;
            let new_region = sender && seen.new_region & (1 << i) != 0;
            if new_number {
                pair(&mut pair_key, key, &a.to.e164);
                store.pair_seen(&pair_key, now, true);
            }
            if new_region {
                pair(&mut pair_key, key, region);
                store.pair_seen(&pair_key, now, true);
            }
            let fresh = if sender { new_number } else { seen.fresh };
            let narrowest = matches!(scope, Scope::Prefix { .. });
            let again = counted && narrowest;
            store.conversion(key, true, &mut |c| {
                if narrowest {
                    // Prefixes come broadest first: the last is the block.
                    local = c.fresh[0].count(HOUR, now) > u64::from(again);
                }
                if again {
                    return;
                }
                if seen.flows {
                    count_sent(c, grace, now);
                }
                if fresh {
                    count_fresh(c, now);
                    if !sender {
                        c.surge.add(w, now, 1);
                    }
                }
                if new_region {
                    c.regions.add(DAY, now, 1);
                }
            });
        }
        if self.cfg.unconfirmed.dispersed_ratio > 0.0 && !counted {
            let fresh = seen.fresh;
            let key = product_region_key(a.product, region);
            // Only new numbers an end user asked for are what the region's
            // recent view weighs: the app's own sends are never judged here.
            let asked = a.end_user_ip || a.user.is_some();
            store.conversion(&key, true, &mut |c| {
                if seen.flows {
                    count_sent(c, grace, now);
                }
                if fresh {
                    count_fresh(c, now);
                    if asked {
                        c.surge.add(w, now, 1);
                    }
                }
            });
            if fresh && local && seen.flows {
                store.conversion(&local_key(&key), true, &mut |c| count_sent(c, grace, now));
            }
        }
    }

    /// Credits a confirmation of the last send to `to`: to the number's
    /// prefixes and region and to whoever asked for the send. Returns
    /// false when no forwarded send awaits one (never sent through the
    /// guard, stopped by it, forgotten, or already confirmed).
    pub(crate) fn confirm(
        &self,
        to: &Destination,
        class: &Classification,
        store: &dyn Store,
        now: Millis,
    ) -> bool {
        let mut sender: Option<Pending> = None;
        store.pending(&to.e164, false, &mut |p| {
            if p.sent_at > 0 && p.confirmed_at == 0 {
                p.confirmed_at = now;
                sender = Some(p.clone());
            }
        });
        let Some(p) = sender else {
            return false;
        };
        let product = product_of(p.product);
        store.confirmations_seen(&flow_key(p.account(), product), now, true);
        let baseline = self.baseline;
        let w = self.surge_window;
        let mut keys = Keys::new();
        self.destination_keys(to, class, &mut keys);
        self.sender_keys(p.client_ip, p.user(), p.account(), &mut keys);
        let norm = self.norm(store, p.account(), product, now);
        // Beside the send's own keys, it counted for its app and (when the
        // dispersed rule is on) its product's region.
        let app = app_key(p.account(), product);
        let region = (self.cfg.unconfirmed.dispersed_ratio > 0.0).then(|| {
            product_region_key(
                product,
                class.region.as_ref().map_or("none", |r| r.as_str()),
            )
        });
        let believed = self.plausible(&p, &keys, norm, store, now);
        // Answered, so not awaited any more: a send counted when it was
        // forwarded leaves the sends still in their grace, whether its
        // answer is believed (it counts confirmed) or not (it counts
        // unconfirmed from now, not when its grace ends).
        if p.counted {
            let grace = self.grace.max(1);
            let keys = keys
                .iter()
                .map(|(_, k)| k)
                .chain(Some(app.as_str()))
                .chain(region.as_deref());
            for key in keys {
                store.conversion(key, false, &mut |c| c.recent.remove(grace, p.sent_at));
            }
        }
        if !believed {
            return true;
        }
        if self.vouch > 0 {
            store.pending(&to.e164, false, &mut |p| {
                p.vouched_until = now.saturating_add(self.vouch);
            });
        }
        // A send not counted when it was forwarded is counted now.
        let credit = |c: &mut Conversion| {
            if !p.counted {
                count_late(c, now);
            }
            count_confirmed(c, now);
        };
        for (scope, key) in keys.iter() {
            let mut converts = false;
            store.conversion(key, true, &mut |c| {
                credit(c);
                c.surge_confirmed.add(w, now, 1);
                let today = c.confirmed[1].count(DAY, now).min(u64::from(u32::MAX)) as u32;
                if today >= c.peak || now.saturating_sub(c.peak_at) > baseline {
                    c.peak = today;
                    c.peak_at = now;
                }
                converts = self.surge_converts(c, norm, now);
            });
            if converts && matches!(scope, Scope::Prefix { .. }) {
                self.lift_surge_block(key, store, now);
            }
        }
        store.conversion(&app, true, &mut |c| credit(c));
        if let Some(region) = &region {
            store.conversion(region, true, &mut |c| {
                credit(c);
                c.surge_confirmed.add(w, now, 1);
            });
        }
        true
    }

    /// A surge block is set on new numbers before any of them could
    /// confirm; when they do, it was a city's campaign, not a pump, and
    /// it is lifted at once instead of stopping its people for hours.
    fn lift_surge_block(&self, key: &str, store: &dyn Store, now: Millis) {
        if !store.may_block(crate::store::key_kind(key)) {
            return;
        }
        let surge = store
            .block(key, now)
            .is_some_and(|b| b.rule.starts_with("adaptive:surge:"));
        if surge && store.remove_block(key) {
            tracing::info!(key, "adaptive surge block lifted: its new numbers confirm");
        }
    }
}

impl Adaptive {
    /// Whether a confirmation is believable. A pumper who owns its numbers
    /// can enter some codes; it gives itself away by entering them faster
    /// than a person reads a text, from an address or as a user behind
    /// many unconfirmed sends, or in a range whose other sends never
    /// confirm. Such a confirmation credits nothing and vouches for nothing.
    /// "Many" grows with what the app's people leave unanswered
    /// (`norm.scale`): where half of them never answer, a carrier NAT's
    /// first ten sends can all go unanswered, and its people's codes after
    /// that are theirs.
    fn plausible(
        &self,
        p: &Pending,
        keys: &Keys,
        norm: Norm,
        store: &dyn Store,
        now: Millis,
    ) -> bool {
        if now.saturating_sub(p.sent_at) < self.min_confirm_delay {
            return false;
        }
        // The number's narrowest range and its senders.
        let narrowest = keys
            .iter()
            .filter(|(s, _)| matches!(s, Scope::Prefix { .. } | Scope::Region))
            .last();
        let senders = keys
            .iter()
            .filter(|(s, _)| matches!(s, Scope::ClientIp | Scope::User));
        for (_, key) in narrowest.into_iter().chain(senders) {
            let c = read(store, key);
            let unconfirmed = self.aged_unconfirmed(&c, 1, now);
            let confirmed = c.confirmed[1].count(DAY, now);
            if unconfirmed as f64 >= f64::from(self.cfg.unconfirmed.min_sample.max(2)) * norm.scale
                && unconfirmed as f64 > 2.0 * norm.scale * confirmed as f64
            {
                return false;
            }
        }
        true
    }
}

/// The share of a key's sends left unanswered, before anything going on
/// now: yesterday's (a whole day) and today's before this hour, the lower
/// of the two with `NORM_SAMPLE` sends, as a pump only ever adds
/// unanswered sends. `None` without such a sample.
fn usual_share(c: &Conversion, now: Millis) -> Option<f64> {
    let (sent, confirmed) = (&c.sent, &c.confirmed);
    let yesterday = (sent[1].previous(DAY, now), confirmed[1].previous(DAY, now));
    let before = (
        sent[1]
            .count(DAY, now)
            .saturating_sub(sent[0].count(HOUR, now)),
        confirmed[1]
            .count(DAY, now)
            .saturating_sub(confirmed[0].count(HOUR, now)),
    );
    [share(yesterday), share(before)]
        .into_iter()
        .flatten()
        .reduce(f64::min)
}

/// New numbers a key usually gets in an hour: yesterday's, or today's
/// before this hour, the lower (a pump only adds new numbers) of those
/// with `NORM_SAMPLE` new numbers, each over its hours. `None` without
/// such a sample: nothing says yet what is usual for the key.
fn usual_fresh_per_hour(c: &Conversion, now: Millis) -> Option<f64> {
    let yesterday = (c.fresh[1].previous(DAY, now), 24.0);
    let before = (
        c.fresh[1]
            .count(DAY, now)
            .saturating_sub(c.fresh[0].count(HOUR, now)),
        23.0,
    );
    [yesterday, before]
        .into_iter()
        .filter(|(n, _)| *n >= NORM_SAMPLE)
        .map(|(n, hours)| n as f64 / hours)
        .reduce(f64::min)
}

/// Whether `t` (a time a pair was seen, if ever) is less than `span` ago.
fn within(t: Option<Millis>, now: Millis, span: Millis) -> bool {
    t.is_some_and(|t| now.saturating_sub(t) < span)
}

/// The chance of at least `k` of `n` independent trials succeeding, each
/// with chance `q` (in logarithms: no factorial overflows).
fn binomial_tail(n: u64, k: u64, q: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n || q <= 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return 1.0;
    }
    let (lq, lp) = (q.ln(), (1.0 - q).ln());
    // ln C(n, k), then each next term from the last.
    let mut ln_c: f64 = (0..k)
        .map(|i| ((n - i) as f64).ln() - ((i + 1) as f64).ln())
        .sum();
    let mut tail = 0.0;
    for j in k..=n {
        let term = (ln_c + j as f64 * lq + (n - j) as f64 * lp).exp();
        tail += term;
        // Past the most likely count the terms only shrink: a busy range's
        // thousands of sends end here, not at n.
        if j as f64 > n as f64 * q && term <= tail * 1e-12 {
            break;
        }
        ln_c += ((n - j) as f64).ln() - ((j + 1) as f64).ln();
    }
    tail.min(1.0)
}

/// The unanswered share of `(sent, confirmed)`, from `NORM_SAMPLE` sends.
fn share((sent, confirmed): (u64, u64)) -> Option<f64> {
    (sent >= NORM_SAMPLE).then(|| sent.saturating_sub(confirmed) as f64 / sent as f64)
}

fn count_sent(c: &mut Conversion, grace: Millis, now: Millis) {
    count_late(c, now);
    c.recent.add(grace.max(1), now);
}

/// A send not counted when it was forwarded (its product's confirmations
/// did not flow yet), counted with its confirmation: past its grace, so
/// it and its confirmation leave nothing unanswered.
fn count_late(c: &mut Conversion, now: Millis) {
    for (win, p) in c.sent.iter_mut().zip(PERIODS) {
        win.add(p, now, 1);
    }
}

fn count_fresh(c: &mut Conversion, now: Millis) {
    for (win, p) in c.fresh.iter_mut().zip(PERIODS) {
        win.add(p, now, 1);
    }
}

/// A forwarded send was plausibly confirmed.
fn count_confirmed(c: &mut Conversion, now: Millis) {
    for (win, p) in c.confirmed.iter_mut().zip(PERIODS) {
        win.add(p, now, 1);
    }
}

/// A copy of a key's state, or an empty one.
fn read(store: &dyn Store, key: &str) -> Conversion {
    let mut out = Conversion::default();
    store.conversion(key, false, &mut |c| out = *c);
    out
}

/// Whether no send to this number was forwarded within a day.
fn is_fresh(store: &dyn Store, e164: &str, now: Millis) -> bool {
    let mut last = 0;
    store.pending(e164, false, &mut |p| last = p.sent_at);
    last == 0 || now.saturating_sub(last) >= FRESH_AFTER
}

/// `sender>number` or `sender>region`, into `out`.
fn pair(out: &mut String, sender: &str, what: &str) {
    out.clear();
    out.push_str(sender);
    out.push('>');
    out.push_str(what);
}

/// Whether a sender has not reached `what` (a number or a region) within
/// a day.
fn first_in_a_day(
    store: &dyn Store,
    buf: &mut String,
    sender: &str,
    what: &str,
    now: Millis,
) -> bool {
    pair(buf, sender, what);
    store
        .pair_seen(buf, now, false)
        .is_none_or(|t| now.saturating_sub(t) >= DAY)
}

/// A ratio as an operator writes it: at most two decimals, none that are
/// trailing zeros (`6`, `2.45`, not `2.4523809523809526`).
struct Ratio(f64);

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = format!("{:.2}", self.0);
        f.write_str(s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// The marker of an alert on a broad key (as [`pair`] spells it).
fn alert_key(key: &str) -> String {
    format!("alert>{key}")
}

/// The marker of an alert a surge raised on a broad key.
fn surge_alert_key(key: &str) -> String {
    format!("alert-surge>{key}")
}

fn blocked_for(dur: Millis, offence: u32) -> String {
    format!(
        "blocked for {} (offence {offence})",
        humantime::format_duration(std::time::Duration::from_secs(dur / 1000))
    )
}

/// A moment as RFC 3339, to the second.
fn at(t: Millis) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(t))
        .to_string()
}

/// A product's sends to one region: what [`Adaptive::dispersed`] judges.
fn product_region_key(product: Product, region: &str) -> String {
    format!("product_region={}:{region}", product.as_str())
}

/// The new numbers of a product's region forwarded this hour to a block
/// that had another one: what says its excess has locality.
fn local_key(product_region: &str) -> String {
    format!("{product_region}|local")
}

/// An app's sends of one product: what its [`Norm`] is read from.
fn app_key(account: &str, product: Product) -> String {
    format!("app={}:{account}", product.as_str())
}

fn flow_key(account: &str, product: Product) -> String {
    format!("{account}|{}", product.as_str())
}

fn product_code(p: Product) -> u8 {
    match p {
        Product::Messaging => 0,
        Product::Voice => 1,
        Product::Verify => 2,
    }
}

fn product_of(code: u8) -> Product {
    match code {
        1 => Product::Voice,
        2 => Product::Verify,
        _ => Product::Messaging,
    }
}

fn window_name(i: usize) -> &'static str {
    if i == 0 {
        "1h"
    } else {
        "1d"
    }
}

/// Digits of a calling code (1 for +1, 3 for +998).
fn cc_digits(code: u16) -> usize {
    match code {
        0..=9 => 1,
        10..=99 => 2,
        _ => 3,
    }
}

/// The kind of the send's `index`th key (`prefix:6`).
fn kind_of(seen: &Seen, index: usize) -> String {
    seen.keys
        .iter()
        .nth(index)
        .map_or_else(String::new, |(s, _)| s.kind())
}

#[cfg(test)]
mod figure_tests {
    use super::{binomial_tail, Ratio};

    #[test]
    fn a_ratio_reads_as_an_operator_writes_it() {
        let shown = |r: f64| Ratio(r).to_string();
        assert_eq!(shown(6.0), "6");
        assert_eq!(shown(0.5), "0.5");
        assert_eq!(shown(0.5 * 4.904_761_904_761_905), "2.45");
        assert_eq!(shown(38.526_315_789_473_685), "38.53");
        assert_eq!(shown(100.0), "100");
        assert_eq!(shown(0.0), "0");
    }

    #[test]
    fn a_binomial_tail_is_the_chance_of_at_least_so_many() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(binomial_tail(5, 3, 0.2), 0.05792));
        assert!(close(binomial_tail(8, 6, 0.2), 0.00123136));
        assert!(close(binomial_tail(2, 2, 0.2), 0.04));
        assert!(close(binomial_tail(7, 0, 0.3), 1.0));
        assert!(close(binomial_tail(3, 4, 0.3), 0.0));
        // Large samples neither overflow nor lose the sum.
        assert!(close(binomial_tail(10_000, 0, 0.2), 1.0));
        let half = binomial_tail(10_001, 5_001, 0.5);
        assert!((half - 0.5).abs() < 1e-6, "{half}");
        assert!(binomial_tail(1_000_000, 300_000, 0.2) < 1e-300);
    }
}
