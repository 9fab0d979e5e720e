//! What sends may cost: `[budget]` (prices and caps) and `[balance]`.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::phone::Region;

use super::defaults::{sixty, usd};
use super::deserialize::de_from_str;
use super::Money;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[serde(default = "usd")]
    pub currency: String,
    pub hourly: Option<Money>,
    pub daily: Option<Money>,
    /// Price of one SMS segment by region, with `default` for the rest.
    #[serde(default)]
    pub prices: Prices,
    /// Price of one MMS (a message with `MediaUrl`); `prices` if absent.
    pub mms_prices: Option<Prices>,
    /// Price of one call (its first minute); `prices` if absent.
    pub voice_prices: Option<Prices>,
    /// Price of one verification (channel fee included); `prices` if absent.
    pub verify_prices: Option<Prices>,
    /// Per-region caps: `regions = { UZ = { daily = "1.00" } }`.
    #[serde(default)]
    pub regions: BTreeMap<String, RegionCaps>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionCaps {
    pub hourly: Option<Money>,
    pub daily: Option<Money>,
}

/// A price table: `{ default = "0.0079", UZ = "0.30" }`.
#[derive(Debug, Clone, Default)]
pub struct Prices {
    pub default: Money,
    pub by_region: BTreeMap<Region, Money>,
}

impl Prices {
    pub fn for_region(&self, region: Option<Region>) -> Money {
        region
            .and_then(|r| self.by_region.get(&r).copied())
            .unwrap_or(self.default)
    }
}

impl<'de> Deserialize<'de> for Prices {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A BTreeMap from the TOML table is safe here: TOML itself rejects
        // duplicate keys, so nothing can be hidden.
        let raw: BTreeMap<String, Money> = BTreeMap::deserialize(d)?;
        let mut p = Prices::default();
        for (k, v) in raw {
            if k == "default" {
                p.default = v;
            } else {
                let r: Region = k.parse().map_err(de::Error::custom)?;
                p.by_region.insert(r, v);
            }
        }
        Ok(p)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balance {
    pub min: Money,
    #[serde(default = "sixty", with = "humantime_serde")]
    pub refresh: Duration,
    #[serde(default, deserialize_with = "de_from_str")]
    pub on_error: OnError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    #[default]
    Allow,
    Block,
}

impl FromStr for OnError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(OnError::Allow),
            "block" => Ok(OnError::Block),
            _ => Err(format!(
                "unknown on_error {s:?}: expected \"allow\" or \"block\""
            )),
        }
    }
}
