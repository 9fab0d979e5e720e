//! Stage 5: named limits, each on a key with several rates.
//!
//! Every attempt that reaches this stage is counted in every limit, allowed
//! or not, so hammering keeps a key over its rate. A limit with `block`
//! blocks its key when it trips, for longer on each repeat offence.

use std::sync::Arc;

use super::blocks::Escalation;
use super::{Attempt, Policy, Reason, Stage, Step, Verdict};
use crate::base::clock::{ms, Millis};
use crate::config::{Action, Config, KeyPart, KeySpec, Rate};
use crate::store::Store;

/// Most rates one limit may have (`config` refuses more).
pub(crate) const MAX_RATES: usize = 8;

/// A limit's counter key and its periods, for a send's plan.
pub(crate) type CounterKey = (String, Vec<Millis>);

struct Limit {
    name: String,
    /// `name=`: what counter keys start with.
    counter: String,
    /// `key=`: what block keys start with.
    block_kind: String,
    rule: Arc<str>,
    key: KeySpec,
    rates: Vec<Rate>,
    periods: Vec<Millis>,
    block: Option<Millis>,
    escalate: f64,
    block_max: Millis,
    forgive_after: Millis,
    action: Action,
}

pub(crate) struct Limits {
    limits: Vec<Limit>,
}

impl Limits {
    pub(crate) fn new(config: &Config) -> Self {
        let limits = config
            .limits
            .iter()
            .map(|l| Limit {
                name: l.name.get_ref().clone(),
                counter: format!("{}=", l.name.get_ref()),
                block_kind: format!("{}=", l.key),
                rule: Arc::from(format!("limit:{}", l.name.get_ref())),
                key: l.key.clone(),
                rates: l.rates.clone(),
                periods: l.rates.iter().map(|r| ms(r.period)).collect(),
                block: l.block.map(ms),
                escalate: l.escalate,
                block_max: ms(l.block_max),
                forgive_after: ms(l.forgive_after),
                action: l
                    .action
                    .unwrap_or_else(|| Policy::stage_action(config, config.actions.limits)),
            })
            .collect();
        Limits { limits }
    }

    /// Keys that limits block when they trip: the blocks stage checks them.
    pub(crate) fn block_specs(&self) -> Vec<KeySpec> {
        self.limits
            .iter()
            .filter(|l| l.block.is_some())
            .map(|l| l.key.clone())
            .collect()
    }

    /// The counter key and periods of every limit that applies to `a`, and
    /// the first limit counted on the number alone (`key = "to"`): its
    /// place among them and what its keys start with (`name=`).
    pub(crate) fn keys(&self, a: &Attempt) -> (Vec<CounterKey>, Option<(usize, String)>) {
        let mut out = Vec::with_capacity(self.limits.len());
        let mut by_number = None;
        for l in &self.limits {
            let mut key = l.counter.clone();
            if a.write_key(&l.key, &mut key) {
                if by_number.is_none() && l.key.parts == [KeyPart::To] {
                    by_number = Some((out.len(), l.counter.clone()));
                }
                let n = l.periods.len().min(MAX_RATES);
                out.push((key, l.periods[..n].to_vec()));
            }
        }
        (out, by_number)
    }

    pub(crate) fn check(
        &self,
        a: &Attempt,
        store: &dyn Store,
        now: Millis,
        monitored: &mut Vec<Verdict>,
        trace: bool,
    ) -> Step {
        let mut first: Option<Verdict> = None;
        let mut counts = [0u64; MAX_RATES];
        let mut summary = Vec::new();
        let mut key = String::with_capacity(64);
        for l in &self.limits {
            key.clear();
            key.push_str(&l.counter);
            if !a.write_key(&l.key, &mut key) {
                continue;
            }
            let value = &key[l.counter.len()..];
            let n = l.periods.len().min(counts.len());
            store.hit(&key, &l.periods[..n], now, &mut counts[..n]);
            let over = l.rates[..n]
                .iter()
                .zip(&counts[..n])
                .find(|(r, c)| **c > r.count);
            let Some((rate, count)) = over else {
                if trace {
                    summary.push(format!("{} {}/{}", l.name, counts[0], l.rates[0]));
                }
                continue;
            };
            let mut detail = format!("{}{value}: {count} attempts, rate {rate}", l.block_kind);
            let mut blocked = None;
            if let Some(base) = l.block {
                let key = format!("{}{value}", l.block_kind);
                blocked = Some(key.clone());
                let escalation = Escalation {
                    base,
                    escalate: l.escalate,
                    max: l.block_max,
                    forgive_after: l.forgive_after,
                };
                let (dur, offence) = store.trip(&key, now, &escalation, l.rule.clone(), l.action);
                detail.push_str(&format!(
                    "; blocked for {} (offence {offence})",
                    humantime::format_duration(std::time::Duration::from_secs(dur / 1000))
                ));
            }
            let v = Verdict {
                stage: Stage::Limits,
                rule: l.rule.to_string(),
                detail: Some(detail),
                reason: Reason::RateLimited,
                action: l.action,
                blocked,
            };
            match l.action {
                Action::Monitor => monitored.push(v),
                Action::Allow => {}
                _ if first.is_none() => first = Some(v),
                _ => {}
            }
        }
        match first {
            Some(v) => Step::Block(v),
            None if self.limits.is_empty() => pass!(trace, "no limits configured"),
            None => pass!(trace, "{}", summary.join(", ")),
        }
    }
}
