//! Stage 7: the account balance. Below `balance.min` sends are blocked;
//! when Twilio could not be asked, `on_error` decides (fail open or closed).
//!
//! The balance itself is fetched before judging (it needs the network);
//! this stage only reads what the attempt carries.

use super::{Attempt, Policy, Reason, Stage, Step, Verdict};
use crate::balance::BalanceView;
use crate::config::{self, Action, Config, Money, OnError};

pub(crate) struct BalanceRule {
    min: Money,
    on_error: OnError,
    action: Action,
}

impl BalanceRule {
    pub(crate) fn new(b: &config::Balance, config: &Config) -> Self {
        BalanceRule {
            min: b.min,
            on_error: b.on_error,
            action: Policy::stage_action(config, config.actions.balance),
        }
    }

    pub(crate) fn check(&self, a: &Attempt, trace: bool) -> Step {
        let block = |rule: &str, detail: String| {
            Step::Block(Verdict {
                stage: Stage::Balance,
                rule: rule.into(),
                detail: Some(detail),
                reason: Reason::Balance,
                action: self.action,
                blocked: None,
            })
        };
        match a.balance {
            BalanceView::Known(b) if b < self.min => {
                block("balance:min", format!("balance {b} is below {}", self.min))
            }
            BalanceView::Known(b) => pass!(trace, "balance {b}"),
            BalanceView::Unavailable if self.on_error == OnError::Block => block(
                "balance:unavailable",
                "the balance could not be read (on_error = block)".into(),
            ),
            BalanceView::Unavailable => {
                pass!(trace, "the balance could not be read (on_error = allow)")
            }
            BalanceView::NotAsked => pass!(trace, "not asked (explain uses no network)"),
        }
    }
}
