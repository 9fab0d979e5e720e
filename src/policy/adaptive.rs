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
use std::sync::Arc;

use super::{Attempt, Policy, Reason, Stage, Step, Verdict};
use crate::clock::{ms, Millis};
use crate::config::{self, Action, Config, Rate};
use crate::phone::{Classification, Destination};
use crate::store::{BlockEntry, Conversion, Pending, Store};
use crate::twilio::routes::Product;

const HOUR: Millis = 3_600_000;
const DAY: Millis = 86_400_000;
/// The windows every adaptive figure is kept for.
const PERIODS: [Millis; 2] = [HOUR, DAY];
/// A number not sent to within this long is new.
const FRESH_AFTER: Millis = DAY;

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

/// One key of one send: its scope and `kind=value` text.
struct Key {
    scope: Scope,
    text: String,
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
    action: Action,
    grace: Millis,
    learn: Millis,
    baseline: Millis,
    surge_window: Millis,
    block: Millis,
    block_max: Millis,
    forgive_after: Millis,
    unconfirmed_prefix: Floors,
    unconfirmed_region: Floors,
    unconfirmed_client_ip: Floors,
    unconfirmed_user: Floors,
    distinct_client_ip: Floors,
    distinct_user: Floors,
    distinct_account: Floors,
}

/// A signal that tripped on one key, with the figures it compared.
struct Trip {
    signal: &'static str,
    key: String,
    kind: String,
    figures: String,
}

impl Adaptive {
    pub(crate) fn new(cfg: &config::Adaptive, config: &Config) -> Adaptive {
        Adaptive {
            action: Policy::stage_action(config, cfg.action),
            grace: ms(cfg.grace),
            learn: ms(cfg.learn),
            baseline: ms(cfg.baseline),
            surge_window: ms(cfg.surge.window).max(1),
            block: ms(cfg.block),
            block_max: ms(cfg.block_max),
            forgive_after: ms(cfg.forgive_after),
            unconfirmed_prefix: Floors::from_rates(&cfg.unconfirmed.prefix),
            unconfirmed_region: Floors::from_rates(&cfg.unconfirmed.region),
            unconfirmed_client_ip: Floors::from_rates(&cfg.unconfirmed.client_ip),
            unconfirmed_user: Floors::from_rates(&cfg.unconfirmed.user),
            distinct_client_ip: Floors::from_rates(&cfg.distinct.client_ip),
            distinct_user: Floors::from_rates(&cfg.distinct.user),
            distinct_account: Floors::from_rates(&cfg.distinct.account),
            cfg: cfg.clone(),
        }
    }

    /// The destination keys of a number, broadest first: its region, then
    /// its prefixes from the shortest to the longest.
    fn destination_keys(&self, to: &Destination, class: &Classification) -> Vec<Key> {
        let digits = to.e164.len().saturating_sub(1);
        let cc = cc_digits(class.calling_code);
        let block = match self.cfg.block_digits {
            0 => None,
            b => digits
                .checked_sub(b as usize)
                .filter(|n| *n > cc)
                .map(|n| n as u8),
        };
        let mut lengths: Vec<u8> = self
            .cfg
            .prefixes
            .iter()
            .map(|k| (cc + *k as usize) as u8)
            .filter(|n| (*n as usize) < digits)
            .chain(block)
            .collect();
        lengths.sort_unstable();
        lengths.dedup();
        let narrowest = block.unwrap_or(lengths.last().copied().unwrap_or(0));
        let mut keys = Vec::with_capacity(lengths.len() + 1);
        let region = class.region.as_ref().map_or("none", |r| r.as_str());
        keys.push(Key {
            scope: Scope::Region,
            text: format!("region={region}"),
        });
        for n in lengths {
            keys.push(Key {
                scope: Scope::Prefix {
                    n,
                    width: narrowest.saturating_sub(n),
                },
                text: format!("prefix:{n}={}", to.prefix(n as usize)),
            });
        }
        keys
    }

    /// The sender keys of a send: client address, user, account.
    fn sender_keys(
        client_ip: Option<std::net::IpAddr>,
        user: Option<&str>,
        account: &str,
    ) -> Vec<Key> {
        let mut keys = Vec::with_capacity(3);
        if let Some(ip) = client_ip {
            keys.push(Key {
                scope: Scope::ClientIp,
                text: format!("client_ip={ip}"),
            });
        }
        if let Some(u) = user {
            keys.push(Key {
                scope: Scope::User,
                text: format!("user={u}"),
            });
        }
        if !account.is_empty() {
            keys.push(Key {
                scope: Scope::Account,
                text: format!("account={account}"),
            });
        }
        keys
    }

    /// Whether confirmations flow for this account and product: one was
    /// seen within `learn`.
    fn flows(&self, store: &dyn Store, account: &str, product: Product, now: Millis) -> bool {
        store
            .confirmations_seen(&flow_key(account, product), now, false)
            .is_some_and(|t| now.saturating_sub(t) <= self.learn)
    }

    pub(crate) fn check(&self, a: &Attempt, store: &dyn Store, now: Millis, trace: bool) -> Step {
        let flows = self.flows(store, a.account, a.product, now);
        let fresh = is_fresh(store, &a.to.e164, now);
        let mut trips: Vec<Trip> = Vec::new();
        let mut notes: Vec<String> = Vec::new();

        // Destination keys, broadest first, so each can lend its baseline
        // to the next.
        let mut parent: Option<(u8, [u64; 2])> = None;
        let cc = cc_digits(a.class.calling_code) as u8;
        for key in self.destination_keys(a.to, &a.class) {
            let state = read(store, &key.text);
            let own = self.baselines(&state, now);
            let n = match key.scope {
                Scope::Prefix { n, .. } => n,
                _ => cc,
            };
            let borrowed = parent.map_or([0, 0], |(pn, b)| {
                let share = 10u64.saturating_pow(u32::from(n.saturating_sub(pn)));
                b.map(|v| v / share.max(1))
            });
            let base = [own[0].max(borrowed[0]), own[1].max(borrowed[1])];
            parent = Some((n, base));
            let floors = match key.scope {
                Scope::Prefix { width, .. } => self.unconfirmed_prefix.doubled(width),
                _ => self.unconfirmed_region,
            };
            if flows {
                if let Some(t) = self.unconfirmed(&key, &state, floors, base, now) {
                    trips.push(t);
                }
            }
            if fresh {
                let floor = match key.scope {
                    Scope::Prefix { width, .. } => {
                        u64::from(self.cfg.surge.floor).saturating_mul(1 << width.min(20))
                    }
                    _ => u64::from(self.cfg.surge.region),
                };
                if floor > 0 {
                    if let Some(t) = self.surge(&key, &state, floor, flows, now) {
                        trips.push(t);
                    }
                }
            }
            if trace {
                notes.push(self.figures(&key, &state, base, now));
            }
        }

        // Sender keys.
        for key in Self::sender_keys(Some(a.client_ip), a.user, a.account) {
            let state = read(store, &key.text);
            let (unconfirmed, distinct) = match key.scope {
                Scope::ClientIp => (self.unconfirmed_client_ip, self.distinct_client_ip),
                Scope::User => (self.unconfirmed_user, self.distinct_user),
                _ => (Floors::default(), self.distinct_account),
            };
            let base = self.baselines(&state, now);
            if flows {
                if let Some(t) = self.unconfirmed(&key, &state, unconfirmed, base, now) {
                    trips.push(t);
                }
            }
            let new_number = store
                .pair_seen(&pair(&key.text, &a.to.e164), now, false)
                .is_none_or(|t| now.saturating_sub(t) >= DAY);
            if let Some(t) = self.distinct(&key, &state, distinct, new_number, now) {
                trips.push(t);
            }
            if self.cfg.distinct.regions > 0 && key.scope != Scope::Account {
                let region = a.class.region.as_ref().map_or("none", |r| r.as_str());
                let new_region = store
                    .pair_seen(&pair(&key.text, region), now, false)
                    .is_none_or(|t| now.saturating_sub(t) >= DAY);
                let count = state.regions.count(DAY, now) + u64::from(new_region);
                if new_region && count > u64::from(self.cfg.distinct.regions) {
                    trips.push(Trip {
                        signal: "regions",
                        kind: key.scope.kind(),
                        figures: format!(
                            "{count} regions in 1d > {} allowed",
                            self.cfg.distinct.regions
                        ),
                        key: key.text,
                    });
                    continue;
                }
            }
            if trace {
                notes.push(self.figures(&key, &state, base, now));
            }
        }

        let Some(first) = trips.first() else {
            return pass!(
                trace,
                "{}{}",
                if flows {
                    "confirmations flow; "
                } else {
                    "no confirmations seen for this account and product: conversion not judged; "
                },
                notes.join("; ")
            );
        };
        let rule = format!("adaptive:{}:{}", first.signal, first.kind);
        let mut detail = format!("{}: {}", first.key, first.figures);
        for t in &trips {
            let offence = store.offend(&t.key, now, self.forgive_after);
            let factor = self
                .cfg
                .escalate
                .powi(offence.saturating_sub(1).min(1_000) as i32);
            let dur = (self.block as f64 * factor).min(self.block_max as f64) as Millis;
            store.set_block(
                &t.key,
                BlockEntry {
                    since: now,
                    until: now.saturating_add(dur),
                    rule: Arc::from(format!("adaptive:{}:{}", t.signal, t.kind)),
                    action: self.action,
                    offence,
                },
            );
            if std::ptr::eq(t, first) {
                let _ = write!(
                    detail,
                    "; blocked for {} (offence {offence})",
                    humantime::format_duration(std::time::Duration::from_secs(dur / 1000))
                );
            }
        }
        Step::Block(Verdict {
            stage: Stage::Adaptive,
            rule,
            detail: Some(detail),
            reason: Reason::Blocked,
            action: self.action,
            blocked: Some(first.key.clone()),
        })
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
        key: &Key,
        c: &Conversion,
        floors: Floors,
        base: [u64; 2],
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
            let allowed = floor.max((self.cfg.unconfirmed.ratio * base[i] as f64) as u64);
            if unconfirmed > allowed {
                return Some(Trip {
                    signal: "unconfirmed",
                    kind: key.scope.kind(),
                    key: key.text.clone(),
                    figures: format!(
                        "{unconfirmed} of {aged} sends unconfirmed in {} > max(floor {floor}, {} x baseline {})",
                        window_name(i),
                        self.cfg.unconfirmed.ratio,
                        base[i]
                    ),
                });
            }
        }
        None
    }

    fn surge(
        &self,
        key: &Key,
        c: &Conversion,
        floor: u64,
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
        let allowed = floor.max((self.cfg.surge.factor * average) as u64);
        (unconfirmed > allowed).then(|| Trip {
            signal: "surge",
            kind: key.scope.kind(),
            key: key.text.clone(),
            figures: format!(
                "{unconfirmed} new numbers unconfirmed in {} > max(floor {floor}, {} x average {average:.1})",
                humantime::format_duration(std::time::Duration::from_millis(w)),
                self.cfg.surge.factor
            ),
        })
    }

    fn distinct(
        &self,
        key: &Key,
        c: &Conversion,
        floors: Floors,
        new_number: bool,
        now: Millis,
    ) -> Option<Trip> {
        if !new_number {
            return None;
        }
        for (i, period) in PERIODS.iter().enumerate() {
            let Some(floor) = floors.0[i] else { continue };
            let numbers = c.fresh[i].count(*period, now) + 1;
            let confirmed = c.confirmed[i].count(*period, now);
            let allowed = floor + (self.cfg.distinct.ratio * confirmed as f64) as u64;
            if numbers > allowed {
                return Some(Trip {
                    signal: "distinct",
                    kind: key.scope.kind(),
                    key: key.text.clone(),
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
    fn figures(&self, key: &Key, c: &Conversion, base: [u64; 2], now: Millis) -> String {
        format!(
            "{}: {} sent / {} confirmed in 1h, {} / {} in 1d, baseline {}/1d",
            key.text,
            c.sent[0].count(HOUR, now),
            c.confirmed[0].count(HOUR, now),
            c.sent[1].count(DAY, now),
            c.confirmed[1].count(DAY, now),
            base[1]
        )
    }

    /// Counts a send the guard forwarded: it now awaits its confirmation.
    pub(crate) fn forwarded(&self, a: &Attempt, store: &dyn Store, now: Millis) {
        let fresh = is_fresh(store, &a.to.e164, now);
        store.pending(&a.to.e164, true, &mut |p| {
            *p = Pending {
                sent_at: now,
                confirmed_at: 0,
                client_ip: Some(a.client_ip),
                user: a.user.map(Box::from),
                account: Box::from(a.account),
                product: product_code(a.product),
            };
        });
        let grace = self.grace;
        let w = self.surge_window;
        for key in self.destination_keys(a.to, &a.class) {
            store.conversion(&key.text, true, &mut |c| {
                count_sent(c, grace, now);
                if fresh {
                    for (win, p) in c.fresh.iter_mut().zip(PERIODS) {
                        win.add(p, now, 1);
                    }
                    c.surge.add(w, now, 1);
                }
            });
        }
        let region = a.class.region.as_ref().map_or("none", |r| r.as_str());
        for key in Self::sender_keys(Some(a.client_ip), a.user, a.account) {
            let new_number = store
                .pair_seen(&pair(&key.text, &a.to.e164), now, true)
                .is_none_or(|t| now.saturating_sub(t) >= DAY);
            let new_region = key.scope != Scope::Account
                && store
                    .pair_seen(&pair(&key.text, region), now, true)
                    .is_none_or(|t| now.saturating_sub(t) >= DAY);
            store.conversion(&key.text, true, &mut |c| {
                count_sent(c, grace, now);
                if new_number {
                    for (win, p) in c.fresh.iter_mut().zip(PERIODS) {
                        win.add(p, now, 1);
                    }
                }
                if new_region {
                    c.regions.add(DAY, now, 1);
                }
            });
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
        store.confirmations_seen(&flow_key(&p.account, product), now, true);
        let baseline = self.baseline;
        let w = self.surge_window;
        let credit = |c: &mut Conversion| {
            for (win, period) in c.confirmed.iter_mut().zip(PERIODS) {
                win.add(period, now, 1);
            }
            c.surge_confirmed.add(w, now, 1);
            let today = c.confirmed[1].count(DAY, now).min(u64::from(u32::MAX)) as u32;
            if today >= c.peak || now.saturating_sub(c.peak_at) > baseline {
                c.peak = today;
                c.peak_at = now;
            }
        };
        for key in self
            .destination_keys(to, class)
            .into_iter()
            .chain(Self::sender_keys(
                p.client_ip,
                p.user.as_deref(),
                &p.account,
            ))
        {
            store.conversion(&key.text, true, &mut |c| credit(c));
        }
        true
    }
}

fn count_sent(c: &mut Conversion, grace: Millis, now: Millis) {
    for (win, p) in c.sent.iter_mut().zip(PERIODS) {
        win.add(p, now, 1);
    }
    c.recent.add(grace.max(1), now, 1);
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

fn pair(sender: &str, what: &str) -> String {
    let mut s = String::with_capacity(sender.len() + what.len() + 1);
    s.push_str(sender);
    s.push('>');
    s.push_str(what);
    s
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
