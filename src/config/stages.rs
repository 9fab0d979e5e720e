//! The judging stages' sections: `[actions]` (and `[shadow]`, how a shadow
//! answer looks), `[geo]`, `[numbers]`, `[backoff]` and `[[limit]]`.

use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use crate::phone::{NumberType, Region};
use crate::twilio::responses::FinalStatus;

use super::defaults::{default_block_max, default_forgive, one, two};
use super::deserialize::{de_from_str, de_opt_from_str, de_seq_from_str};
use super::{Action, KeySpec, Rate};

/// How shadow answers stay indistinguishable from real ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shadow {
    /// Delay fake answers like Twilio's recent real answers.
    pub timing: bool,
    /// Delay before any real answer was observed.
    #[serde(with = "humantime_serde")]
    pub default_latency: Duration,
    /// Real latencies remembered per endpoint.
    pub window: usize,
    /// How long a fake sid keeps answering GETs.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Most fakes remembered.
    pub capacity: u64,
    /// Where a shadowed message's status ends: `delivered` (the default:
    /// the app sees what a real send shows), `undelivered` (error 30003) or
    /// `sent`. It moves there from `queued` as a real one does.
    pub final_status: FinalStatus,
    /// Post the app's `StatusCallback` for a shadowed message, as Twilio
    /// does for each change of status (signed when the request's Basic
    /// auth carries the account's auth token).
    pub callbacks: bool,
}

impl Default for Shadow {
    fn default() -> Self {
        Shadow {
            timing: true,
            default_latency: Duration::from_millis(150),
            window: 200,
            retention: Duration::from_secs(24 * 3600),
            capacity: 100_000,
            final_status: FinalStatus::Delivered,
            callbacks: true,
        }
    }
}

/// Per-stage actions. Fraud signals default to `default` (shadow), invalid
/// input to `reject`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Actions {
    #[serde(deserialize_with = "de_from_str")]
    pub default: Action,
    #[serde(deserialize_with = "de_from_str")]
    pub invalid: Action,
    #[serde(deserialize_with = "de_opt_from_str")]
    pub number: Option<Action>,
    #[serde(deserialize_with = "de_opt_from_str")]
    pub blocks: Option<Action>,
    #[serde(deserialize_with = "de_opt_from_str")]
    pub backoff: Option<Action>,
    #[serde(deserialize_with = "de_opt_from_str")]
    pub limits: Option<Action>,
    #[serde(deserialize_with = "de_opt_from_str")]
    pub budget: Option<Action>,
    #[serde(deserialize_with = "de_opt_from_str")]
    pub balance: Option<Action>,
}

impl Default for Actions {
    fn default() -> Self {
        Actions {
            default: Action::Shadow,
            invalid: Action::Reject,
            number: None,
            blocks: None,
            backoff: None,
            limits: None,
            budget: None,
            balance: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Geo {
    /// Regions sends may go to; empty means every region not denied.
    #[serde(deserialize_with = "de_seq_from_str")]
    pub allow: Vec<Region>,
    #[serde(deserialize_with = "de_seq_from_str")]
    pub deny: Vec<Region>,
    /// Numbers without a region (+882, +883, ...) are blocked unless this is set.
    pub allow_no_region: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Numbers {
    #[serde(deserialize_with = "de_opt_from_str")]
    pub default_region: Option<Region>,
    #[serde(deserialize_with = "de_seq_from_str")]
    pub block_types: Vec<NumberType>,
    /// Numbers libphonenumber calls invalid are blocked (action `invalid`).
    pub require_valid: bool,
    /// Exact numbers that are never limited (E.164).
    pub safe: Vec<String>,
    /// Number prefixes (E.164, with `+`) that are never limited.
    pub safe_prefixes: Vec<String>,
    /// Client networks that are never limited.
    #[serde(deserialize_with = "de_seq_from_str")]
    pub safe_clients: Vec<IpNet>,
    /// IPv6 clients are keyed by their network of this many bits (one host
    /// owns a whole /64); IPv4-mapped addresses as IPv4.
    #[serde(deserialize_with = "de_ipv6_prefix")]
    pub client_ipv6_prefix: u8,
    /// Capacity of the classification cache.
    pub cache: u64,
}

impl Default for Numbers {
    fn default() -> Self {
        Numbers {
            default_region: None,
            block_types: Vec::new(),
            require_valid: true,
            safe: Vec::new(),
            safe_prefixes: Vec::new(),
            safe_clients: Vec::new(),
            client_ipv6_prefix: crate::base::context::DEFAULT_IPV6_PREFIX,
            cache: 100_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "one")]
    pub free: u32,
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    #[serde(default = "two")]
    pub factor: f64,
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    #[serde(with = "humantime_serde")]
    pub reset_after: Duration,
    #[serde(default, with = "humantime_serde")]
    pub hold_up_to: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub name: Spanned<String>,
    #[serde(deserialize_with = "de_from_str")]
    pub key: KeySpec,
    #[serde(deserialize_with = "de_seq_from_str")]
    pub rates: Vec<Rate>,
    /// When the limit trips, block the key for this long.
    #[serde(default, with = "humantime_serde")]
    pub block: Option<Duration>,
    /// Each repeat offence multiplies the block by this.
    #[serde(default = "two")]
    pub escalate: f64,
    /// The longest an escalated block may last.
    #[serde(default = "default_block_max", with = "humantime_serde")]
    pub block_max: Duration,
    /// Offences older than this are forgotten.
    #[serde(default = "default_forgive", with = "humantime_serde")]
    pub forgive_after: Duration,
    #[serde(default, deserialize_with = "de_opt_from_str")]
    pub action: Option<Action>,
}

fn de_ipv6_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = i64::deserialize(d)?;
    match u8::try_from(n) {
        Ok(n) if (16..=128).contains(&n) => Ok(n),
        _ => Err(de::Error::custom(format!(
            "numbers.client_ipv6_prefix {n} must be a prefix length from 16 to 128 (64: one client per /64)"
        ))),
    }
}
