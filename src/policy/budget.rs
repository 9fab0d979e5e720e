//! Stage 6: money. Each send costs price(region) × segments; caps per hour
//! and per day, globally and per region, over UTC calendar windows.
//!
//! Spending is check-and-add in one atomic step per cap, so concurrent sends
//! can never push a window past its cap; only forwarded sends spend (a
//! reservation is refunded when a later stage blocks the send).

use super::{Attempt, Policy, Reason, Stage, Step, Verdict};
use crate::base::clock::Millis;
use crate::config::{self, Action, Config, Money, Prices};
use crate::phone::Region;
use crate::store::Store;
use crate::twilio::routes::Product;

const HOUR: Millis = 3_600_000;
const DAY: Millis = 24 * HOUR;

struct Cap {
    /// `hour:*`, `day:UZ`, ...
    name: String,
    region: Option<Region>,
    window: Millis,
    cap: Money,
}

pub(crate) struct Budget {
    prices: Prices,
    mms: Prices,
    voice: Prices,
    verify: Prices,
    caps: Vec<Cap>,
    action: Action,
}

/// What `check` spent, so it can be refunded.
#[derive(Debug, Clone)]
pub(crate) struct Spend {
    /// The caps it was added to (indices into `Budget::caps`), at `at`.
    caps: Vec<u32>,
    at: Millis,
    amount: u64,
}

impl Budget {
    pub(crate) fn new(b: &config::Budget, config: &Config) -> Self {
        let mut caps = Vec::new();
        let mut push = |name: String, region, window, cap: Option<Money>| {
            if let Some(cap) = cap {
                caps.push(Cap {
                    name,
                    region,
                    window,
                    cap,
                });
            }
        };
        // The global windows are always counted (for metrics and spend
        // alerts); without a configured cap they never block.
        push(
            "hour:*".into(),
            None,
            HOUR,
            Some(b.hourly.unwrap_or(Money(u64::MAX))),
        );
        push(
            "day:*".into(),
            None,
            DAY,
            Some(b.daily.unwrap_or(Money(u64::MAX))),
        );
        for (r, c) in &b.regions {
            // Validated at load.
            let region: Option<Region> = r.parse().ok();
            push(format!("hour:{r}"), region, HOUR, c.hourly);
            push(format!("day:{r}"), region, DAY, c.daily);
        }
        Budget {
            prices: b.prices.clone(),
            mms: b.mms_prices.clone().unwrap_or_else(|| b.prices.clone()),
            voice: b.voice_prices.clone().unwrap_or_else(|| b.prices.clone()),
            verify: b.verify_prices.clone().unwrap_or_else(|| b.prices.clone()),
            caps,
            action: Policy::stage_action(config, config.actions.budget),
        }
    }

    /// An SMS costs a price per segment; an MMS, a call (its first minute)
    /// and a verification cost one price each.
    pub(crate) fn cost(&self, a: &Attempt) -> u64 {
        let r = a.class.region;
        match a.product {
            Product::Messaging if a.media > 0 => self.mms.for_region(r).0,
            Product::Messaging => self.prices.for_region(r).0 * u64::from(a.segments.max(1)),
            Product::Voice => self.voice.for_region(r).0,
            Product::Verify => self.verify.for_region(r).0,
        }
    }

    fn applies(&self, cap: &Cap, a: &Attempt) -> bool {
        cap.region.is_none() || cap.region == a.class.region
    }

    fn key(cap: &Cap, now: Millis) -> String {
        let mut key = String::new();
        Self::write_key(cap, now, &mut key);
        key
    }

    /// `hour:*@<window start>`, into a reused buffer.
    fn write_key(cap: &Cap, now: Millis, out: &mut String) {
        use std::fmt::Write;
        out.clear();
        out.push_str(&cap.name);
        let _ = write!(out, "@{}", now - now % cap.window);
    }

    fn verdict(&self, cap: &Cap, spent: u64, cost: u64) -> Step {
        Step::Block(Verdict {
            stage: Stage::Budget,
            rule: format!("budget:{}", cap.name),
            detail: Some(format!(
                "spent {} of {} this window; this send costs {}",
                Money(spent),
                cap.cap,
                Money(cost)
            )),
            reason: Reason::Budget,
            action: self.action,
            blocked: None,
        })
    }

    /// Spends the attempt's cost on every cap that applies, or none of them.
    /// Every window `a` would spend in at `now`, with its cap.
    pub(crate) fn planned(&self, a: &Attempt, now: Millis) -> Vec<super::PlannedSpend> {
        let cost = self.cost(a);
        self.caps
            .iter()
            .filter(|c| self.applies(c, a))
            .map(|c| super::PlannedSpend {
                key: Self::key(c, now),
                amount: cost,
                cap: c.cap.0,
                expire_at: (now - now % c.window).saturating_add(c.window),
            })
            .collect()
    }

    pub(crate) fn check(
        &self,
        a: &Attempt,
        store: &dyn Store,
        now: Millis,
        trace: bool,
    ) -> (Step, Option<Spend>) {
        let cost = self.cost(a);
        let mut spend = Spend {
            caps: Vec::with_capacity(4),
            at: now,
            amount: cost,
        };
        let mut key = String::with_capacity(32);
        for (i, cap) in self.caps.iter().enumerate() {
            if !self.applies(cap, a) {
                continue;
            }
            Self::write_key(cap, now, &mut key);
            match store.spend(&key, cost, cap.cap.0) {
                Ok(_) => spend.caps.push(i as u32),
                Err(spent) => {
                    let step = self.verdict(cap, spent, cost);
                    if self.action.blocks() {
                        self.refund(store, spend);
                        return (step, None);
                    }
                    store.spend(&key, cost, u64::MAX).ok();
                    spend.caps.push(i as u32);
                    return (step, Some(spend));
                }
            }
        }
        (pass!(trace, "costs {}", Money(cost)), Some(spend))
    }

    pub(crate) fn peek(&self, a: &Attempt, store: &dyn Store, now: Millis) -> Step {
        let cost = self.cost(a);
        for cap in self.caps.iter().filter(|c| self.applies(c, a)) {
            let spent = store.spent(&Self::key(cap, now));
            if spent.saturating_add(cost) > cap.cap.0 {
                return self.verdict(cap, spent, cost);
            }
        }
        Step::Pass(format!("costs {}", Money(cost)))
    }

    /// Spend in the current window of every cap: (name, spent, cap).
    pub(crate) fn status(
        &self,
        store: &dyn Store,
        now: Millis,
    ) -> Vec<(String, Money, Option<Money>)> {
        self.caps
            .iter()
            .map(|c| {
                let cap = (c.cap.0 != u64::MAX).then_some(c.cap);
                (c.name.clone(), Money(store.spent(&Self::key(c, now))), cap)
            })
            .collect()
    }

    pub(crate) fn refund(&self, store: &dyn Store, spend: Spend) {
        let mut key = String::with_capacity(32);
        for &i in &spend.caps {
            if let Some(cap) = self.caps.get(i as usize) {
                Self::write_key(cap, spend.at, &mut key);
                store.refund(&key, spend.amount);
            }
        }
    }
}
