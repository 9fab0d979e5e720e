//! Pure judgement: `decide(&Attempt, now) -> Decision`.
//!
//! Stages run in the order of the spec (safe list, number, blocks, backoff,
//! limits, adaptive, budget, balance); the first stage whose verdict blocks decides, and a stage
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
mod broadcast;
mod budget;
mod limits;
mod number;
mod safe;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::base::clock::Millis;
use crate::config::{Action, Config, KeyPart, KeySpec};
use crate::phone::{Classification, Destination};
use crate::store::Store;
use crate::twilio::routes::Product;

pub use adaptive::DISPERSED_RULE;
pub use balance::BalanceView;

pub use blocks::BlockRequest;

pub use broadcast::fingerprint as content_fingerprint;

pub use crate::store::shared::{Plan, PlannedSpend};

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
    /// A message's content as a keyed fingerprint ([`content_fingerprint`]
    /// of its Body, MediaUrl, ContentSid and ContentVariables); `None` for
    /// calls and verifications. Never the content itself.
    pub content: Option<u64>,
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
    /// The number proved receipt recently: adaptive blocks and signals
    /// passed it.
    pub vouched: bool,
    /// A broadcast (the same message to many numbers, sent by the app
    /// itself): the adaptive stage did not count or judge it.
    pub broadcast: bool,
}

impl Decision {
    /// An explained decision (`explain`'s trace) as lines of text: each
    /// stage's verdict, in order, then the action. A send stops at the
    /// first stage whose verdict blocks it: the stages after it are shown
    /// as not reached.
    pub fn explained(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mut decided: Option<&str> = None;
        for (stage, outcome) in &self.trace {
            if let Some(by) = decided {
                let _ = writeln!(
                    out,
                    "{:<8} -      not reached (stopped by {by})",
                    stage.as_str()
                );
                continue;
            }
            if let StageOutcome::Block(v) = outcome {
                if v.action.blocks() {
                    decided = Some(stage.as_str());
                }
            }
            let _ = match outcome {
                StageOutcome::Pass(why) => writeln!(out, "{:<8} pass   {why}", stage.as_str()),
                StageOutcome::Skipped => writeln!(out, "{:<8} skip   (safe list)", stage.as_str()),
                StageOutcome::Block(v) => writeln!(
                    out,
                    "{:<8} {:<6} {}{}",
                    stage.as_str(),
                    v.action.as_str(),
                    v.rule,
                    v.detail
                        .as_ref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ),
            };
        }
        let _ = match self.deciding() {
            Some(v) => writeln!(
                out,
                "action   {} by {} {}",
                self.action.as_str(),
                v.stage,
                v.rule
            ),
            None => writeln!(out, "action   {}", self.action.as_str()),
        };
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum StageOutcome {
    Pass(String),
    Block(Verdict),
    Skipped,
}

impl Decision {
    /// Allowed, nothing recorded: what a judgement starts from.
    fn allowed() -> Decision {
        Decision {
            action: Action::Allow,
            verdict: None,
            would_block: Vec::new(),
            hold: None,
            trace: Vec::new(),
            vouched: false,
            broadcast: false,
        }
    }

    pub fn forwarded(&self) -> bool {
        !self.action.blocks()
    }

    /// Takes one stage's step into account: the first blocking verdict
    /// decides, monitor verdicts are kept as "would block".
    fn apply(&mut self, stage: Stage, step: Step, trace: bool) {
        match step {
            Step::Pass(why) => {
                if trace {
                    self.trace.push((stage, StageOutcome::Pass(why)));
                }
            }
            Step::Block(v) => {
                if trace {
                    self.trace.push((stage, StageOutcome::Block(v.clone())));
                }
                match v.action {
                    Action::Shadow | Action::Reject => {
                        if self.verdict.is_none() {
                            self.action = v.action;
                            self.verdict = Some(v);
                        }
                    }
                    Action::Monitor => self.would_block.push(v),
                    Action::Allow => {}
                }
            }
        }
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

/// A judgement waiting for its last stage, the balance: made by
/// [`Policy::judge`], completed by [`Judgement::finish`]. It holds what the
/// earlier stages reserved (the backoff step, the budget spend, what the
/// adaptive stage learned); dropped unfinished (the request went away while
/// the balance was being asked for), it gives the reservations back, since
/// nothing was sent. Limit counters stay counted: every attempt counts.
#[must_use = "a judgement holds reservations until it is finished"]
pub struct Judgement<'j> {
    policy: &'j Policy,
    /// What this judgement reads and records state in: the policy's own
    /// store, or a view of a shared one prepared for this send.
    store: &'j dyn Store,
    attempt: &'j Attempt<'j>,
    decision: Decision,
    backoff: Option<backoff::Reservation>,
    spend: Option<budget::Spend>,
    seen: Option<adaptive::Seen>,
    now: Millis,
    trace: bool,
    /// On the safe list: nothing else is judged, the balance neither.
    safe: bool,
}

impl Judgement<'_> {
    /// Whether the balance stage could still change the outcome: a balance
    /// rule is configured and no earlier stage blocked the send. When
    /// false, `finish` does not read the balance it is given.
    pub fn needs_balance(&self) -> bool {
        !self.safe && self.policy.balance.is_some() && self.decision.verdict.is_none()
    }

    /// Whether the adaptive stage judged this send, so that, forwarded, it
    /// counts there (other replicas are told: [`Policy::learn_forwarded`]).
    pub fn learns(&self) -> bool {
        self.seen.is_some()
    }

    /// The verdict of an earlier stage that blocks the send, if one did.
    pub fn blocked_by(&self) -> Option<&Verdict> {
        self.decision.verdict.as_ref()
    }

    /// Runs the balance stage on `balance` and settles the reservations:
    /// undone if the send is blocked, the adaptive stage's count taken if it
    /// goes out.
    pub fn finish(mut self, balance: BalanceView) -> Decision {
        let p = self.policy;
        let a = self.attempt;
        let trace = self.trace;
        let mut d = std::mem::replace(&mut self.decision, Decision::allowed());
        if self.safe {
            return d;
        }
        if d.verdict.is_none() || trace {
            let step = match &p.balance {
                None => pass!(trace, "no balance check configured"),
                Some(b) => b.check(balance, trace),
            };
            d.apply(Stage::Balance, step, trace);
        }
        if let Some(v) = &d.verdict {
            d.hold = None;
            self.give_back();
            if let (Some(ad), false) = (&p.adaptive, trace) {
                if !d.forwarded() {
                    ad.stopped(&v.rule, &a.to.e164, self.store, self.now);
                }
            }
        } else {
            // Kept: the send goes out.
            self.backoff = None;
            self.spend = None;
            if !d.would_block.is_empty() {
                d.action = Action::Monitor;
            }
        }
        if let (Some(ad), Some(seen), false) = (&p.adaptive, self.seen.take(), trace) {
            if d.forwarded() {
                ad.forwarded(a, self.store, self.now, &seen);
            }
        }
        d
    }

    /// Undoes the backoff step and refunds the budget, once.
    fn give_back(&mut self) {
        let p = self.policy;
        if let (Some(b), Some(t)) = (&p.backoff, self.backoff.take()) {
            b.undo(self.attempt, self.store, t);
        }
        if let (Some(b), Some(s)) = (&p.budget, self.spend.take()) {
            b.refund(self.store, s);
        }
    }
}

impl<'j> Judgement<'j> {
    /// A judgement not yet begun: allowed, nothing held.
    fn open(
        policy: &'j Policy,
        attempt: &'j Attempt<'j>,
        now: Millis,
        trace: bool,
        store: &'j dyn Store,
    ) -> Judgement<'j> {
        Judgement {
            policy,
            store,
            attempt,
            decision: Decision::allowed(),
            backoff: None,
            spend: None,
            seen: None,
            now,
            trace,
            safe: false,
        }
    }
}

impl Drop for Judgement<'_> {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl fmt::Debug for Judgement<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Judgement")
            .field("decision", &self.decision)
            .field("needs_balance", &self.needs_balance())
            .finish_non_exhaustive()
    }
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
    /// spend) as if the decision is carried out. The balance stage reads
    /// `attempt.balance`.
    pub fn decide(&self, attempt: &Attempt, now: Millis) -> Decision {
        self.run(attempt, now, false)
    }

    /// Like `decide`, but goes through every stage and records each
    /// outcome, for `smsguard explain`.
    pub fn explain(&self, attempt: &Attempt, now: Millis) -> Decision {
        self.run(attempt, now, true)
    }

    /// `explain` on the guard's live state, changing none of it: every
    /// stage reads what the guard remembers (blocks, counters, backoff,
    /// spend, adaptive figures, vouching) and writes into a scratch copy
    /// ([`crate::store::DryRun`]). The balance is not asked.
    pub fn explain_live(&self, attempt: &Attempt, now: Millis) -> Decision {
        let dry = crate::store::DryRun::new(self.store.clone());
        self.begin(attempt, now, true, &dry)
            .finish(BalanceView::NotAsked)
    }

    /// The first phase of `decide`, for a caller that must ask the network
    /// for the balance: every stage but the balance runs now, and its
    /// effects (limit counters, the backoff step, the budget reservation)
    /// are recorded once, here. [`Judgement::needs_balance`] says whether
    /// the balance is worth asking for; [`Judgement::finish`] runs the
    /// balance stage and settles the effects. `decide` is exactly
    /// `judge` then `finish(attempt.balance)`.
    pub fn judge<'j>(&'j self, attempt: &'j Attempt<'j>, now: Millis) -> Judgement<'j> {
        self.begin(attempt, now, false, &*self.store)
    }

    /// `judge` on `store` instead of the policy's own: a shared store's
    /// view prepared for this send ([`crate::store::shared`]).
    pub fn judge_with<'j>(
        &'j self,
        attempt: &'j Attempt<'j>,
        now: Millis,
        store: &'j dyn Store,
    ) -> Judgement<'j> {
        self.begin(attempt, now, false, store)
    }

    fn run(&self, a: &Attempt, now: Millis, trace: bool) -> Decision {
        self.begin(a, now, trace, &*self.store).finish(a.balance)
    }

    /// Every stage but the balance.
    fn begin<'j>(
        &'j self,
        a: &'j Attempt<'j>,
        now: Millis,
        trace: bool,
        store: &'j dyn Store,
    ) -> Judgement<'j> {
        let mut j = Judgement::open(self, a, now, trace, store);
        if self.safe_listed(&mut j) {
            return j;
        }
        for stage in &Stage::ALL[1..] {
            if j.decision.verdict.is_some() && !trace {
                break;
            }
            // `None` at the last stage, run by `Judgement::finish`.
            let Some(step) = self.stage_step(*stage, &mut j) else {
                break;
            };
            j.decision.apply(*stage, step, trace);
        }
        j
    }

    /// The first stage: a number on the safe list is judged no further
    /// (`true`); with `trace`, every other stage is written as skipped.
    fn safe_listed(&self, j: &mut Judgement<'_>) -> bool {
        let trace = j.trace;
        let d = &mut j.decision;
        if let Some(why) = self.safe.matches(j.attempt) {
            if trace {
                d.trace.push((Stage::Safe, StageOutcome::Pass(why)));
                for s in &Stage::ALL[1..] {
                    d.trace.push((*s, StageOutcome::Skipped));
                }
            }
            j.safe = true;
            return true;
        }
        if trace {
            d.trace.push((
                Stage::Safe,
                StageOutcome::Pass("not on the safe list".into()),
            ));
        }
        false
    }

    /// One stage after the safe list, judged on `j`: its step, and what it
    /// holds until the send is settled (the backoff step and hold, the
    /// adaptive reading, the budget's spend) kept in `j`. A stage that would
    /// record something once a verdict is in only peeks. `None` at the
    /// balance, which `Judgement::finish` runs.
    fn stage_step<'j>(&'j self, stage: Stage, j: &mut Judgement<'j>) -> Option<Step> {
        let (a, store, now, trace) = (j.attempt, j.store, j.now, j.trace);
        let d = &mut j.decision;
        Some(match stage {
            Stage::Number => self.number.check(a, trace),
            Stage::Blocks => self
                .blocks
                .check(a, store, now, self.adaptive.as_ref(), trace),
            Stage::Backoff => match &self.backoff {
                None => pass!(trace, "no backoff configured"),
                Some(b) if d.verdict.is_none() => {
                    let (step, hold, token) = b.check(a, store, now, trace);
                    d.hold = hold;
                    j.backoff = token;
                    step
                }
                Some(b) => b.peek(a, store, now),
            },
            Stage::Limits => self.limits.check(a, store, now, &mut d.would_block, trace),
            Stage::Adaptive => match &self.adaptive {
                None => pass!(trace, "no adaptive stage configured"),
                Some(ad) if d.verdict.is_none() => {
                    let (step, s) = ad.check(a, store, now, trace);
                    d.vouched = s.vouched;
                    d.broadcast = s.broadcast;
                    // A broadcast is not counted: nobody will confirm it.
                    j.seen = (!s.broadcast).then_some(s);
                    step
                }
                Some(_) => pass!(trace, "not judged: an earlier stage decided"),
            },
            Stage::Budget => match &self.budget {
                None => pass!(trace, "no budget configured"),
                Some(b) if d.verdict.is_none() => {
                    let (step, spend) = b.check(a, store, now, trace);
                    j.spend = spend;
                    step
                }
                Some(b) => b.peek(a, store, now),
            },
            Stage::Balance => return None,
            Stage::Safe => unreachable!("handled by safe_listed"),
        })
    }

    /// What a shared store must read and update before this policy judges
    /// `a` at `now` (see [`crate::store::shared`]): the backoff state, every
    /// limit counter and every budget it would touch, so that one round trip
    /// fetches them all. `None` when no stateful stage will run: the number
    /// is safe-listed, or the number rules or an active block (read from
    /// `local`, which mirrors the shared blocks) already stop it.
    pub fn plan(&self, a: &Attempt, now: Millis, local: &dyn Store) -> Option<Plan> {
        if self.safe.matches(a).is_some() {
            return None;
        }
        for step in [
            self.number.check(a, false),
            self.blocks
                .check(a, local, now, self.adaptive.as_ref(), false),
        ] {
            if let Step::Block(v) = step {
                if v.action.blocks() {
                    return None;
                }
            }
        }
        let (limits, by_number) = self.limits.keys(a);
        Some(Plan {
            backoff: self
                .backoff
                .as_ref()
                .map(|b| (a.to.e164.clone(), b.params())),
            limits,
            by_number,
            spends: self
                .budget
                .as_ref()
                .map(|b| b.planned(a, now))
                .unwrap_or_default(),
        })
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

    /// Counts in the adaptive stage a send another replica forwarded.
    pub fn learn_forwarded(&self, a: &Attempt, now: Millis) {
        if let Some(ad) = &self.adaptive {
            ad.learn(a, &*self.store, now);
        }
    }

    /// Counts in the adaptive stage a new number another replica stopped
    /// as dispersed pumping of `product` in `region`.
    pub fn learn_dispersed(
        &self,
        product: Product,
        region: &str,
        to: Option<(&Destination, &Classification)>,
        now: Millis,
    ) {
        if let Some(ad) = &self.adaptive {
            ad.count_dispersed(product, region, to, &*self.store, now);
        }
    }

    /// Counts in the adaptive stage, in `store` rather than the policy's
    /// own, a send forwarded (or being forwarded) by another replica: for
    /// judging on a copy of the adaptive tables with sends in flight
    /// elsewhere learned in.
    pub fn learn_forwarded_in(&self, a: &Attempt, now: Millis, store: &dyn Store) {
        if let Some(ad) = &self.adaptive {
            ad.learn(a, store, now);
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

    /// What `a` costs at the policy's prices (`[budget]`), in millionths;
    /// `None` without prices.
    pub fn price(&self, a: &Attempt) -> Option<u64> {
        self.budget.as_ref().map(|b| b.cost(a))
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

/// The two phases of [`Policy::judge`]: what `decide` does, split around
/// the balance, with every effect counted once.
#[cfg(test)]
mod judgement_tests {
    use std::path::Path;

    use super::*;
    use crate::config::Money;
    use crate::phone::{Channel, NumberType, Region};
    use crate::store::MemoryStore;

    const T0: Millis = 1_700_000_000_000;

    fn policy(toml: &str) -> Policy {
        let c = Config::parse(Path::new("t.toml"), toml).expect("test policy parses");
        Policy::new(Arc::new(c), Arc::new(MemoryStore::new(10_000, 1_000)))
    }

    fn dest(e164: &str) -> Destination {
        Destination {
            channel: Channel::Sms,
            e164: e164.into(),
        }
    }

    fn attempt<'a>(to: &'a Destination, region: &str, balance: BalanceView) -> Attempt<'a> {
        Attempt {
            product: crate::twilio::routes::Product::Messaging,
            account: "AC00000000000000000000000000000001",
            to,
            class: Classification {
                calling_code: 1,
                region: Some(region.parse::<Region>().unwrap()),
                kind: NumberType::Mobile,
                valid: true,
            },
            client_ip: "198.51.100.1".parse().unwrap(),
            end_user_ip: true,
            user: None,
            segments: 1,
            media: 0,
            content: None,
            balance,
        }
    }

    const MONEY: &str = "[geo]\nallow = [\"US\"]\n[[limit]]\nname = \"n\"\nkey = \"to\"\nrates = [\"2/1h\"]\n[budget]\nhourly = \"0.02\"\nprices = { default = \"0.01\" }\n[backoff]\nfree = 5\nbase = \"30s\"\nfactor = 2\nmax = \"2m\"\nreset_after = \"2h\"\n[balance]\nmin = \"1.00\"\n";

    #[test]
    fn a_blocked_send_does_not_need_the_balance_and_a_passing_one_does() {
        let p = policy(MONEY);
        let uz = dest("+998993941234");
        let a = attempt(&uz, "UZ", BalanceView::NotAsked);
        let j = p.judge(&a, T0);
        assert!(!j.needs_balance());
        assert_eq!(j.blocked_by().map(|v| v.rule.as_str()), Some("geo:UZ"));
        // Whatever balance it is given, an unneeded one is not read.
        let d = j.finish(BalanceView::Unavailable);
        assert_eq!(
            (d.action, d.deciding().unwrap().stage),
            (Action::Shadow, Stage::Number)
        );

        let us = dest("+14155550123");
        let a = attempt(&us, "US", BalanceView::NotAsked);
        let j = p.judge(&a, T0);
        assert!(j.needs_balance());
        let d = j.finish(BalanceView::Known(Money(0)));
        assert_eq!(d.verdict.unwrap().rule, "balance:min");

        // Safe-listed, or no balance rule: never needed.
        let safe = policy("[numbers]\nsafe = [\"+14155550123\"]\n[balance]\nmin = \"1.00\"\n");
        assert!(!safe.judge(&a, T0).needs_balance());
        assert!(!policy("[geo]\nallow = [\"US\"]\n")
            .judge(&a, T0)
            .needs_balance());
    }

    #[test]
    fn judge_then_finish_counts_limits_budget_and_backoff_once() {
        let p = policy(MONEY);
        let us = dest("+14155550123");
        let a = attempt(&us, "US", BalanceView::NotAsked);
        let rich = BalanceView::Known(Money(50_000_000));
        // Two sends fit the 2/1h limit and the 0.02 budget, each counted once.
        for i in 0..2 {
            let d = p.judge(&a, T0 + i).finish(rich);
            assert_eq!(d.action, Action::Allow, "send {i}");
        }
        let d = p.judge(&a, T0 + 2).finish(rich);
        assert_eq!(d.verdict.unwrap().rule, "limit:n");
        // `decide` on another number agrees with the two phases.
        let other = dest("+14155550124");
        let b = attempt(&other, "US", rich);
        assert_eq!(p.decide(&b, T0 + 3).verdict.unwrap().rule, "budget:hour:*");
    }

    #[test]
    fn a_balance_block_or_an_abandoned_judgement_gives_the_reservations_back() {
        let p = policy(MONEY);
        let (x, y, z) = (
            dest("+14155550001"),
            dest("+14155550002"),
            dest("+14155550003"),
        );
        let (ax, ay, az) = (
            attempt(&x, "US", BalanceView::NotAsked),
            attempt(&y, "US", BalanceView::NotAsked),
            attempt(&z, "US", BalanceView::NotAsked),
        );
        // Blocked on the balance, and dropped while the balance was asked
        // for: neither spends the 0.02 budget.
        assert!(p
            .judge(&ax, T0)
            .finish(BalanceView::Known(Money(0)))
            .verdict
            .is_some());
        drop(p.judge(&ay, T0 + 1));
        let rich = BalanceView::Known(Money(50_000_000));
        assert_eq!(p.judge(&ax, T0 + 2).finish(rich).action, Action::Allow);
        assert_eq!(p.judge(&ay, T0 + 3).finish(rich).action, Action::Allow);
        let d = p.judge(&az, T0 + 4).finish(rich);
        assert_eq!(d.verdict.unwrap().rule, "budget:hour:*");
    }

    #[test]
    fn explain_still_traces_every_stage_including_the_balance() {
        let p = policy(MONEY);
        let uz = dest("+998993941234");
        let d = p.explain(&attempt(&uz, "UZ", BalanceView::NotAsked), T0);
        let stages: Vec<Stage> = d.trace.iter().map(|(s, _)| *s).collect();
        assert_eq!(stages, Stage::ALL.to_vec());
        assert_eq!(d.action, Action::Shadow);
    }
}
