//! Stage 3: active blocks on a number, prefix, region, client IP, user or
//! any key a limit blocks when it trips.
//!
//! A block is stored under `SPEC=VALUE` (`prefix:8=+99899394`), so a block
//! set by hand and one set by a limit on the same key are the same block.

use std::sync::Arc;
use std::time::Duration;

use super::adaptive::Adaptive;
use super::{Attempt, Reason, Stage, Step, Verdict};
use crate::base::clock::{ms, Millis};
use crate::config::{Action, Config, KeyPart, KeySpec};
use crate::store::{BlockEntry, Store};

/// A block set by hand.
#[derive(Debug, Clone)]
pub struct BlockRequest {
    /// `to`, `prefix:N`, `region`, `client_ip`, `user`, `account`, or a
    /// `+`-joined key of a limit.
    pub key: KeySpec,
    /// The value: `+99899394`, `UZ`, `203.0.113.7`; parts joined with `|`.
    pub value: String,
    pub duration: Duration,
    pub action: Option<Action>,
}

/// How a rule that trips blocks its key: for `base`, multiplied by
/// `escalate` for each remembered repeat offence, at most `max`.
pub(crate) use crate::store::Escalation;

pub(crate) struct Blocks {
    /// Single-part keys always checked, then the keys limits block, each
    /// with its kind as block keys spell it (`prefix:8`).
    specs: Vec<(KeySpec, String)>,
    /// Every other prefix length: blocks on them are set by hand or by the
    /// adaptive stage, and the store says cheaply whether any kind has one,
    /// so they are checked without a lookup while none does (and still
    /// after a reload).
    prefixes: Vec<(KeySpec, String)>,
    /// `numbers.client_ipv6_prefix`: a client address blocked by hand is
    /// keyed as a send's is.
    ipv6_prefix: u8,
}

impl Blocks {
    pub(crate) fn new(config: &Config, limit_specs: Vec<KeySpec>) -> Self {
        let mut specs: Vec<KeySpec> = [
            KeyPart::To,
            KeyPart::Region,
            KeyPart::ClientIp,
            KeyPart::User,
            KeyPart::Account,
        ]
        .into_iter()
        .map(KeySpec::single)
        .collect();
        for s in limit_specs {
            if !specs.contains(&s) {
                specs.push(s);
            }
        }
        let prefixes = (1..=15u8)
            .map(|n| KeySpec::single(KeyPart::Prefix(n)))
            .filter(|s| !specs.contains(s))
            .map(|s| {
                let kind = s.to_string();
                (s, kind)
            })
            .collect();
        Blocks {
            specs: specs
                .into_iter()
                .map(|s| {
                    let kind = s.to_string();
                    (s, kind)
                })
                .collect(),
            prefixes,
            ipv6_prefix: config.numbers.client_ipv6_prefix,
        }
    }

    fn has(&self, spec: &KeySpec) -> bool {
        self.specs.iter().any(|(s, _)| s == spec)
    }

    /// The first active block on one of the attempt's keys. A block the
    /// adaptive stage set is passed over where that stage says it does not
    /// apply (a vouched number; an alert's block and a number already
    /// sent to).
    pub(crate) fn check(
        &self,
        a: &Attempt,
        store: &dyn Store,
        now: Millis,
        adaptive: Option<&Adaptive>,
        trace: bool,
    ) -> Step {
        let mut key = String::with_capacity(64);
        let mut passed: Vec<String> = Vec::new();
        for (spec, kind) in self.specs.iter().chain(&self.prefixes) {
            if let Some(step) = Self::probe(a, store, now, spec, kind, &mut key) {
                let exempt = match (&step, adaptive) {
                    (Step::Block(v), Some(ad)) => ad.exempts(&v.rule, a, store, now),
                    _ => None,
                };
                match exempt {
                    Some(why) => passed.push(format!("{key} ({}): {why}", rule_of(&step))),
                    None => return step,
                }
            }
        }
        if passed.is_empty() {
            pass!(trace, "no active block")
        } else {
            pass!(trace, "blocks passed over: {}", passed.join("; "))
        }
    }

    /// The block on this attempt's key of one kind, if any.
    fn probe(
        a: &Attempt,
        store: &dyn Store,
        now: Millis,
        spec: &KeySpec,
        kind: &str,
        key: &mut String,
    ) -> Option<Step> {
        // Most kinds have no block at all: no key to build or look up.
        if !store.may_block(kind) {
            return None;
        }
        key.clear();
        key.push_str(kind);
        key.push('=');
        if !a.write_key(spec, key) {
            return None;
        }
        let b = store.block(key, now)?;
        Some(Step::Block(Verdict {
            stage: Stage::Blocks,
            rule: b.rule.to_string(),
            detail: Some(key.clone()),
            reason: Reason::Blocked,
            action: b.action,
            blocked: None,
        }))
    }

    pub(crate) fn add(
        &self,
        req: &BlockRequest,
        store: &dyn Store,
        now: Millis,
        default_action: Action,
    ) -> Result<String, String> {
        if req.value.is_empty() {
            return Err("a block needs a value".into());
        }
        if let [KeyPart::Prefix(n)] = req.key.parts[..] {
            let digits = req.value.strip_prefix('+').unwrap_or("");
            if digits.len() != n as usize || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "a prefix:{n} block needs '+' and exactly {n} digits, got {:?}",
                    req.value
                ));
            }
        } else if !self.has(&req.key) {
            return Err(format!(
                "no rule looks at key {}: block one of to, prefix:N, region, client_ip, user, account or a limit's key",
                req.key
            ));
        }
        // Keyed as a send's context is: an IPv6 address as its network, an
        // IPv4-mapped one as IPv4, an odd user id as its digest.
        let value = match req.key.parts[..] {
            [KeyPart::ClientIp] => match req.value.trim().parse() {
                Ok(ip) => crate::base::context::key_ip(ip, self.ipv6_prefix).to_string(),
                Err(_) => return Err(format!("{:?} is not an IP address", req.value)),
            },
            [KeyPart::User] => crate::base::context::user_key(req.value.as_bytes()),
            _ => req.value.clone(),
        };
        let key = format!("{}={}", req.key, value);
        store.set_manual_block(
            &key,
            BlockEntry {
                since: now,
                until: now.saturating_add(ms(req.duration)),
                rule: Arc::from("manual"),
                action: req.action.unwrap_or(default_action),
                offence: 1,
            },
        )?;
        Ok(key)
    }
}

fn rule_of(step: &Step) -> &str {
    match step {
        Step::Block(v) => &v.rule,
        Step::Pass(_) => "",
    }
}
