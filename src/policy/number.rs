//! Stage 2: the number itself: validity, region, number type.
//!
//! Needs no state. Invalid numbers get the `invalid` action (reject with
//! 21211 by default); geo and type findings are fraud signals.

use super::{Attempt, Policy, Reason, Stage, Step, Verdict};
use crate::config::{Action, Config};
use crate::phone::{NumberType, Region};

pub(crate) struct NumberRules {
    require_valid: bool,
    allow: Vec<Region>,
    deny: Vec<Region>,
    allow_no_region: bool,
    block_types: Vec<NumberType>,
    invalid_action: Action,
    action: Action,
}

impl NumberRules {
    pub(crate) fn new(config: &Config) -> Self {
        NumberRules {
            require_valid: config.numbers.require_valid,
            allow: config.geo.allow.clone(),
            deny: config.geo.deny.clone(),
            allow_no_region: config.geo.allow_no_region,
            block_types: config.numbers.block_types.clone(),
            invalid_action: config.actions.invalid,
            action: Policy::stage_action(config, config.actions.number),
        }
    }

    pub(crate) fn check(&self, a: &Attempt, trace: bool) -> Step {
        let verdict = |rule: String, reason, action| {
            Step::Block(Verdict {
                stage: Stage::Number,
                rule,
                detail: Some(a.to.e164.clone()),
                reason,
                action,
                blocked: None,
            })
        };
        let c = &a.class;
        if self.require_valid && !c.valid {
            return verdict("invalid".into(), Reason::Invalid, self.invalid_action);
        }
        match c.region {
            None if !self.allow_no_region => {
                return verdict("no_region".into(), Reason::Geo, self.action);
            }
            Some(r)
                if self.deny.contains(&r)
                    || (!self.allow.is_empty() && !self.allow.contains(&r)) =>
            {
                return verdict(format!("geo:{r}"), Reason::Geo, self.action);
            }
            _ => {}
        }
        if self.block_types.contains(&c.kind) {
            return verdict(
                format!("type:{}", c.kind.as_str()),
                Reason::NumberType,
                self.action,
            );
        }
        pass!(
            trace,
            "{} valid={} region={} type={}",
            a.to.e164,
            c.valid,
            c.region.map_or("none".to_string(), |r| r.to_string()),
            c.kind.as_str()
        )
    }
}
