//! Stage 3: active blocks on a number, prefix, region, client IP, user or
//! any key a limit blocks when it trips.
//!
//! A block is stored under `SPEC=VALUE` (`prefix:8=+99899394`), so a block
//! set by hand and one set by a limit on the same key are the same block.

use std::fmt::Write as _;
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
                    (Step::Block(v), Some(ad)) => ad.exempts(&v.rule, &key, a, store, now),
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
        if req.value.trim().is_empty() {
            return Err("a block needs a value".into());
        }
        let single_prefix = matches!(req.key.parts[..], [KeyPart::Prefix(_)]);
        if !single_prefix && !self.has(&req.key) {
            return Err(format!(
                "no rule looks at key {}: block one of to, prefix:N, region, client_ip, user, account or a limit's key",
                req.key
            ));
        }
        let value = self.canonical(req)?;
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

impl Blocks {
    /// The value of a block as a send's key carries it, so the block
    /// matches what it names: a number in E.164, a region's ISO code in
    /// capitals, an IPv6 address as its network, an odd user id as its
    /// digest; a value no send could carry is refused, never stored.
    /// A key of several parts takes their values joined by `|`.
    fn canonical(&self, req: &BlockRequest) -> Result<String, String> {
        let parts = &req.key.parts;
        let values: Vec<&str> = if parts.len() == 1 {
            vec![req.value.as_str()]
        } else {
            req.value.split('|').collect()
        };
        if values.len() != parts.len() {
            return Err(format!(
                "key {} needs {} values joined by '|', got {:?}",
                req.key,
                parts.len(),
                req.value
            ));
        }
        let mut out = String::with_capacity(req.value.len() + 8);
        for (i, (part, raw)) in parts.iter().zip(values).enumerate() {
            if i > 0 {
                out.push('|');
            }
            let v = raw.trim();
            match part {
                KeyPart::To => match crate::phone::normalize(v, None) {
                    Ok(d) => out.push_str(&d.e164),
                    Err(e) => {
                        return Err(format!(
                            "to {raw:?} is not a phone number ({e}); write it in E.164, e.g. +447911123456"
                        ))
                    }
                },
                KeyPart::Prefix(n) => {
                    let digits = v.strip_prefix('+').unwrap_or("");
                    if digits.len() != usize::from(*n) || !digits.bytes().all(|b| b.is_ascii_digit())
                    {
                        return Err(format!(
                            "a prefix:{n} block needs '+' and exactly {n} digits, got {raw:?}"
                        ));
                    }
                    out.push_str(v);
                }
                KeyPart::Region if v.eq_ignore_ascii_case("none") => out.push_str("none"),
                KeyPart::Region => {
                    let r: crate::phone::Region = v.to_ascii_uppercase().parse()?;
                    out.push_str(r.as_str());
                }
                KeyPart::Account => {
                    let ok = v.len() == 34
                        && v.starts_with("AC")
                        && v[2..].bytes().all(|b| b.is_ascii_hexdigit());
                    if !ok {
                        return Err(format!(
                            "account {raw:?} is not an account sid (AC and 32 hex digits)"
                        ));
                    }
                    out.push_str(v);
                }
                KeyPart::ClientIp => match v.parse() {
                    Ok(ip) => {
                        let ip = crate::base::context::key_ip(ip, self.ipv6_prefix);
                        let _ = write!(out, "{ip}");
                    }
                    Err(_) => return Err(format!("{raw:?} is not an IP address")),
                },
                KeyPart::User => out.push_str(&crate::base::context::user_key(raw.as_bytes())),
                KeyPart::Global if v == "*" => out.push('*'),
                KeyPart::Global => return Err(format!("the global key's value is \"*\", got {raw:?}")),
            }
        }
        Ok(out)
    }
}

fn rule_of(step: &Step) -> &str {
    match step {
        Step::Block(v) => &v.rule,
        Step::Pass(_) => "",
    }
}
