//! Pure judgement: `decide(&Attempt, now) -> Decision`.
//!
//! Stages run in the order of the spec (safe list, number, blocks, backoff,
//! limits, budget); the first stage whose verdict blocks decides, and a stage
//! in `monitor` mode records "would block" and lets evaluation go on. The
//! clock and the store are injected, so every rule can be tested without a
//! network or a real clock. This module never does I/O and never sees a
//! message body.

/// A stage's "pass" explanation, written only when `explain` asks for one:
/// a send that is simply allowed builds no text.
macro_rules! pass {
    ($trace:expr, $($arg:tt)*) => {
        Step::Pass(if $trace { format!($($arg)*) } else { String::new() })
    };
}

mod adaptive;
mod backoff;
mod balance;
mod blocks;
mod budget;
mod limits;
mod number;
mod safe;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Millis;
use crate::config::{Action, Config, KeyPart, KeySpec};
use crate::phone::{Classification, Destination};
use crate::store::Store;
use crate::twilio::routes::Product;

pub use crate::balance::BalanceView;

pub use blocks::BlockRequest;

/// One send as the policy sees it.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    pub product: Product,
    /// Account sid of the request path (or the Verify service's account).
    pub account: &'a str,
    pub to: &'a Destination,
    pub class: Classification,
    /// The end user's address (`X-SMSGuard-Client-IP`), else the TCP peer.
    pub client_ip: IpAddr,
    /// Whether `client_ip` is an end user's: only then do `client_ip` keys
    /// apply (the TCP peer is the app's own server, shared by all its users).
    pub end_user_ip: bool,
    pub user: Option<&'a str>,
    /// Segments Twilio would bill (1 for calls and verifications).
    pub segments: u32,
    /// `MediaUrl` parameters: a message with media is an MMS.
    pub media: usize,
    /// The account's balance, as the balance stage should see it.
    pub balance: BalanceView,
}

impl Attempt<'_> {
    /// The value of a limit or block key for this attempt; `None` when a part
    /// is unknown (no `user` given, say), in which case the key does not apply.
    pub fn key_value(&self, spec: &KeySpec) -> Option<String> {
        let mut out = String::new();
        self.write_key(spec, &mut out).then_some(out)
    }

    /// Appends the key's value to `out`; `false` (and `out` partly
    /// written) when a part is unknown.
    pub fn write_key(&self, spec: &KeySpec, out: &mut String) -> bool {
        for (i, part) in spec.parts.iter().enumerate() {
            if i > 0 {
                out.push('|');
            }
            match part {
                KeyPart::To => out.push_str(&self.to.e164),
                KeyPart::Prefix(n) => out.push_str(self.to.prefix(*n as usize)),
                KeyPart::Region => match self.class.region {
                    Some(r) => out.push_str(r.as_str()),
                    None => out.push_str("none"),
                },
                KeyPart::Account => out.push_str(self.account),
                KeyPart::ClientIp if !self.end_user_ip => return false,
                KeyPart::ClientIp => {
                    use std::fmt::Write;
                    let _ = write!(out, "{}", self.client_ip);
                }
                KeyPart::User => match self.user {
                    Some(u) => out.push_str(u),
                    None => return false,
                },
                KeyPart::Global => out.push('*'),
            }
        }
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Safe,
    Number,
    Blocks,
    Backoff,
    Limits,
    Adaptive,
    Budget,
    Balance,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::Safe,
        Stage::Number,
        Stage::Blocks,
        Stage::Backoff,
        Stage::Limits,
        Stage::Adaptive,
        Stage::Budget,
        Stage::Balance,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Stage::Safe => "safe",
            Stage::Number => "number",
            Stage::Blocks => "blocks",
            Stage::Backoff => "backoff",
            Stage::Limits => "limits",
            Stage::Adaptive => "adaptive",
            Stage::Budget => "budget",
            Stage::Balance => "balance",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a stage blocks; decides which Twilio error a `reject` answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Invalid,
    Geo,
    NumberType,
    Blocked,
    Backoff,
    RateLimited,
    Budget,
    Balance,
}

/// What one stage found.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub stage: Stage,
    /// Stable name of the rule: `geo`, `type:premium_rate`, `limit:prefix`, ...
    pub rule: String,
    /// The key or value that matched (`prefix:8=+99899394`), when useful.
    pub detail: Option<String>,
    pub reason: Reason,
    pub action: Action,
    /// The key this verdict blocked (a limit that trips with `block`).
    pub blocked: Option<String>,
}

/// The outcome of judging one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// `Allow` or `Monitor` forward the send; `Shadow` and `Reject` do not.
    pub action: Action,
    /// The verdict that blocked the send, if one did.
    pub verdict: Option<Verdict>,
    /// Verdicts of stages or limits in monitor mode.
    pub would_block: Vec<Verdict>,
    /// Wait this long before forwarding (backoff `hold_up_to`).
    pub hold: Option<Duration>,
    /// Every stage's outcome, in order (filled by `explain` only).
    pub trace: Vec<(Stage, StageOutcome)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StageOutcome {
    Pass(String),
    Block(Verdict),
    Skipped,
}

impl Decision {
    pub fn forwarded(&self) -> bool {
        !self.action.blocks()
    }

    /// The stage and rule to report: the blocking verdict, else the first
    /// monitor finding.
    pub fn deciding(&self) -> Option<&Verdict> {
        self.verdict.as_ref().or(self.would_block.first())
    }
}

/// What one stage returns.
pub(crate) enum Step {
    Pass(String),
    Block(Verdict),
}

/// A compiled policy over a store. Cheap to share; reload builds a new one.
pub struct Policy {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    safe: safe::SafeList,
    number: number::NumberRules,
    blocks: blocks::Blocks,
    backoff: Option<backoff::Backoff>,
    limits: limits::Limits,
    adaptive: Option<adaptive::Adaptive>,
    budget: Option<budget::Budget>,
    balance: Option<balance::BalanceRule>,
}

impl Policy {
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>) -> Policy {
        let limits = limits::Limits::new(&config);
        Policy {
            safe: safe::SafeList::new(&config),
            number: number::NumberRules::new(&config),
            blocks: blocks::Blocks::new(&config, limits.block_specs()),
            backoff: config
                .backoff
                .as_ref()
                .map(|b| backoff::Backoff::new(b, &config)),
            adaptive: config
                .adaptive
                .as_ref()
                .map(|a| adaptive::Adaptive::new(a, &config)),
            budget: config
                .budget
                .as_ref()
                .map(|b| budget::Budget::new(b, &config)),
            balance: config
                .balance
                .as_ref()
                .map(|b| balance::BalanceRule::new(b, &config)),
            limits,
            store,
            config,
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Judges one attempt and records its effects (counters, backoff,
    /// spend) as if the decision is carried out.
    pub fn decide(&self, attempt: &Attempt, now: Millis) -> Decision {
        self.run(attempt, now, false)
    }

    /// Like `decide`, but goes through every stage and records each
    /// outcome, for `smsguard explain`.
    pub fn explain(&self, attempt: &Attempt, now: Millis) -> Decision {
        self.run(attempt, now, true)
    }

    fn run(&self, a: &Attempt, now: Millis, trace: bool) -> Decision {
        let mut d = Decision {
            action: Action::Allow,
            verdict: None,
            would_block: Vec::new(),
            hold: None,
            trace: Vec::new(),
        };
        if let Some(why) = self.safe.matches(a) {
            if trace {
                d.trace.push((Stage::Safe, StageOutcome::Pass(why)));
                for s in &Stage::ALL[1..] {
                    d.trace.push((*s, StageOutcome::Skipped));
                }
            }
            return d;
        }
        if trace {
            d.trace.push((
                Stage::Safe,
                StageOutcome::Pass("not on the safe list".into()),
            ));
        }

        // Effects that must be undone if a later stage blocks the send.
        let mut reserved_backoff = None;
        let mut reserved_spend = None;
        // What the adaptive stage learned, to count the send if it goes out.
        let mut seen = None;

        for stage in &Stage::ALL[1..] {
            if d.verdict.is_some() && !trace {
                break;
            }
            let step = match stage {
                Stage::Number => self.number.check(a, trace),
                Stage::Blocks => self.blocks.check(a, &*self.store, now, trace),
                Stage::Backoff => match &self.backoff {
                    None => pass!(trace, "no backoff configured"),
                    Some(b) if d.verdict.is_none() => {
                        let (step, hold, token) = b.check(a, &*self.store, now, trace);
                        d.hold = hold;
                        reserved_backoff = token;
                        step
                    }
                    Some(b) => b.peek(a, &*self.store, now),
                },
                Stage::Limits => self
                    .limits
                    .check(a, &*self.store, now, &mut d.would_block, trace),
                Stage::Adaptive => match &self.adaptive {
                    None => pass!(trace, "no adaptive stage configured"),
                    Some(ad) if d.verdict.is_none() => {
                        let (step, s) = ad.check(a, &*self.store, now, trace);
                        seen = Some(s);
                        step
                    }
                    Some(_) => pass!(trace, "not judged: an earlier stage decided"),
                },
                Stage::Budget => match &self.budget {
                    None => pass!(trace, "no budget configured"),
                    Some(b) if d.verdict.is_none() => {
                        let (step, spend) = b.check(a, &*self.store, now, trace);
                        reserved_spend = spend;
                        step
                    }
                    Some(b) => b.peek(a, &*self.store, now),
                },
                Stage::Balance => match &self.balance {
                    None => pass!(trace, "no balance check configured"),
                    Some(b) => b.check(a, trace),
                },
                Stage::Safe => unreachable!("handled above"),
            };
            match step {
                Step::Pass(why) => {
                    if trace {
                        d.trace.push((*stage, StageOutcome::Pass(why)));
                    }
                }
                Step::Block(v) => {
                    if trace {
                        d.trace.push((*stage, StageOutcome::Block(v.clone())));
                    }
                    match v.action {
                        Action::Shadow | Action::Reject => {
                            if d.verdict.is_none() {
                                d.action = v.action;
                                d.verdict = Some(v);
                            }
                        }
                        Action::Monitor => d.would_block.push(v),
                        Action::Allow => {}
                    }
                }
            }
        }

        if d.verdict.is_some() {
            d.hold = None;
            if let (Some(b), Some(t)) = (&self.backoff, reserved_backoff) {
                b.undo(a, &*self.store, t);
            }
            if let (Some(b), Some(s)) = (&self.budget, reserved_spend) {
                b.refund(&*self.store, s);
            }
        } else if !d.would_block.is_empty() {
            d.action = Action::Monitor;
        }
        if let (Some(ad), Some(seen), false) = (&self.adaptive, &seen, trace) {
            if d.forwarded() {
                ad.forwarded(a, &*self.store, now, seen);
            }
        }
        d
    }

    /// A confirmation that the recipient of the last send to `to` got it
    /// (a Verify check answered `approved`, Messaging Feedback `confirmed`,
    /// or the admin API). False when no forwarded send awaited one.
    pub fn confirm(&self, to: &Destination, class: &Classification, now: Millis) -> bool {
        match &self.adaptive {
            Some(ad) => ad.confirm(to, class, &*self.store, now),
            None => false,
        }
    }

    /// Sets a block by hand (admin API, tests).
    pub fn add_block(&self, req: &BlockRequest, now: Millis) -> Result<String, String> {
        self.blocks.add(
            req,
            &*self.store,
            now,
            self.config
                .actions
                .blocks
                .unwrap_or(self.config.actions.default),
        )
    }

    /// Spend of the current budget windows: (`hour:*`, spent, cap), ...
    pub fn budget_status(
        &self,
        now: Millis,
    ) -> Vec<(String, crate::config::Money, Option<crate::config::Money>)> {
        self.budget
            .as_ref()
            .map(|b| b.status(&*self.store, now))
            .unwrap_or_default()
    }

    pub fn remove_block(&self, key: &str) -> bool {
        self.store.remove_block(key)
    }

    /// The action a stage's verdicts get: its own setting, else the default.
    pub(crate) fn stage_action(config: &Config, own: Option<Action>) -> Action {
        own.unwrap_or(config.actions.default)
    }
}

#[cfg(test)]
mod tests;
