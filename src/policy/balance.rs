//! Stage 7: the account balance. Below `balance.min` sends are blocked;
//! when Twilio could not be asked, `on_error` decides (fail open or closed).
//!
//! The balance itself is fetched by the caller (it needs the network), and
//! only once every earlier stage has let the send through
//! ([`super::Judgement::needs_balance`]); this stage only reads the value
//! it is given.

use super::{Policy, Reason, Stage, Step, Verdict};
use crate::config::{self, Action, Config, Money, OnError};

/// What the balance stage knows about an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceView {
    /// No `[balance]` section, or the send has no account to ask about.
    NotAsked,
    Known(Money),
    /// Twilio could not be asked or gave no usable answer.
    Unavailable,
}

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

    pub(crate) fn check(&self, balance: BalanceView, trace: bool) -> Step {
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
        match balance {
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
