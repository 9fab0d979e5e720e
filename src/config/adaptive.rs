//! `[adaptive]` and its tables: unconfirmed sends, surges of new numbers,
//! distinct numbers per sender.

use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::defaults::{
    adaptive_prefixes, default_block_max, default_forgive, fifteen_minutes, five_minutes,
    five_seconds, four_u8, fourteen_days, million, one_day, seven_days, thirty_days,
    thirty_minutes, three, twelve_hours, two, two_u8,
};
use super::deserialize::{de_opt_from_str, de_seq_from_str};
use super::{Action, Rate};

/// The largest `adaptive.bulk`: numbers remembered per broadcast content.
pub const BULK_MAX: u32 = 16;

/// Stage 5½: what static limits miss. Every knob is explained, with the
/// reasoning behind its default, in README "Catching what limits miss".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adaptive {
    /// `monitor` records "would block" and lets the send go.
    #[serde(default, deserialize_with = "de_opt_from_str")]
    pub action: Option<Action>,
    /// Prefix lengths judged, in digits after the country code.
    #[serde(default = "adaptive_prefixes", deserialize_with = "de_prefixes")]
    pub prefixes: Vec<u8>,
    /// Also judge each number's block: the number minus its last N digits
    /// (0 turns it off).
    #[serde(default = "four_u8")]
    pub block_digits: u8,
    /// A send is awaited this long before it counts as unconfirmed.
    #[serde(default = "five_minutes", with = "humantime_serde")]
    pub grace: Duration,
    /// Conversion signals act for an account and product only while a
    /// confirmation for it was seen within this long.
    #[serde(default = "seven_days", with = "humantime_serde")]
    pub learn: Duration,
    /// How long the peak of a key's daily confirmations is remembered.
    #[serde(default = "fourteen_days", with = "humantime_serde")]
    pub baseline: Duration,
    /// Block a key whose signal trips for this long; repeat offences
    /// multiply it by `escalate`, up to `block_max`.
    #[serde(default = "twelve_hours", with = "humantime_serde")]
    pub block: Duration,
    #[serde(default = "two", deserialize_with = "de_at_least_one")]
    pub escalate: f64,
    #[serde(default = "default_block_max", with = "humantime_serde")]
    pub block_max: Duration,
    #[serde(default = "default_forgive", with = "humantime_serde")]
    pub forgive_after: Duration,
    /// Numbers remembered while awaiting their confirmation (bounded).
    #[serde(default = "million")]
    pub capacity: u64,
    /// A number that proved receipt (a plausible confirmation) within this
    /// long passes adaptive blocks and signals: a returning user is never
    /// collateral. `0s` turns vouching off.
    #[serde(default = "thirty_days", with = "humantime_serde")]
    pub vouch: Duration,
    /// A confirmation sooner than this after its send is not believed
    /// (a bot reading its own SIM): it credits no key and vouches for
    /// nothing.
    #[serde(default = "five_seconds", with = "humantime_serde")]
    pub min_confirm_delay: Duration,
    /// A prefix this many digits (or more) shorter than the number's block,
    /// and a region, is broad: an excess there never blocks it; it puts
    /// the key under alert, and the narrower ranges that carry the excess
    /// are blocked instead.
    #[serde(default = "two_u8")]
    pub broad_digits: u8,
    /// How long a broad key stays under alert after its last excess.
    #[serde(default = "thirty_minutes", with = "humantime_serde")]
    pub alert: Duration,
    /// How long a range found carrying an alerted key's excess is blocked
    /// (for new, unvouched numbers only); repeat offences double it, up
    /// to `block_max`.
    #[serde(default = "fifteen_minutes", with = "humantime_serde")]
    pub alert_block: Duration,
    /// A message whose exact content went to this many numbers within
    /// `bulk_window`, sent by the app itself (no end user's address), is a
    /// broadcast: nobody is expected to confirm it, so this stage neither
    /// counts nor judges it. 0 turns it off; at most 16.
    #[serde(default = "three", deserialize_with = "de_bulk")]
    pub bulk: u32,
    #[serde(default = "one_day", with = "humantime_serde")]
    pub bulk_window: Duration,
    #[serde(default)]
    pub unconfirmed: Unconfirmed,
    #[serde(default)]
    pub surge: Surge,
    #[serde(default)]
    pub distinct: Distinct,
}

/// Unconfirmed sends against confirmed ones: a key trips when its
/// unconfirmed sends in a window exceed `max(floor, ratio × baseline)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Unconfirmed {
    /// Unconfirmed sends tolerated per confirmed one.
    #[serde(deserialize_with = "de_ratio")]
    pub ratio: f64,
    /// A broad key (a region, a short prefix) is put under alert when its
    /// unconfirmed sends in a window exceed `max(floor, alert_ratio ×
    /// its confirmations in that window)`: a collapse of its conversion.
    #[serde(deserialize_with = "de_ratio")]
    pub alert_ratio: f64,
    /// A product's sends to one region are dispersed pumping when, this
    /// hour, its unconfirmed sends outnumber its confirmed ones this many
    /// times (and pass the region's hourly floor): the product's new,
    /// unvouched numbers asked for by end users in that region are then
    /// stopped while it lasts. 0 turns it off.
    #[serde(deserialize_with = "de_ratio")]
    pub dispersed_ratio: f64,
    /// Sends past their grace before a key's conversion is judged at all.
    pub min_sample: u32,
    /// The share of real users' codes left unanswered that the ratios
    /// above are set for. Where the app's own sends for a product leave
    /// more unanswered (over the day before this hour), every ratio is
    /// scaled by the odds, up to eight times, and more unanswered sends in
    /// a row are needed against a range: an app whose users answer two
    /// codes in three is not judged as one whose users answer nine in ten.
    #[serde(deserialize_with = "de_share")]
    pub usual: f64,
    /// Floors for a number's block; each digit shorter doubles them.
    #[serde(deserialize_with = "de_windows")]
    pub prefix: Vec<Rate>,
    #[serde(deserialize_with = "de_windows")]
    pub region: Vec<Rate>,
    #[serde(deserialize_with = "de_windows")]
    pub client_ip: Vec<Rate>,
    #[serde(deserialize_with = "de_windows")]
    pub user: Vec<Rate>,
}

impl Default for Unconfirmed {
    fn default() -> Self {
        let r = |s: &[&str]| s.iter().filter_map(|s| s.parse().ok()).collect();
        Unconfirmed {
            ratio: 1.0,
            alert_ratio: 0.5,
            dispersed_ratio: 6.0,
            min_sample: 5,
            usual: 0.2,
            prefix: r(&["4/1h", "10/1d"]),
            region: r(&["20/1h", "100/1d"]),
            client_ip: r(&["6/1h", "15/1d"]),
            user: r(&["3/1h", "6/1d"]),
        }
    }
}

/// New numbers (not sent to within a day) per prefix or region in a short
/// window, against the key's own average per window over the last day.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Surge {
    #[serde(deserialize_with = "de_surge_window")]
    pub window: Duration,
    /// Trips above `factor` × the key's average per window (and the floor).
    #[serde(deserialize_with = "de_at_least_one")]
    pub factor: f64,
    /// Floor for a number's block; each digit shorter multiplies it by
    /// `per_digit`.
    pub floor: u32,
    #[serde(deserialize_with = "de_at_least_one")]
    pub per_digit: f64,
    /// Floor for a whole region (0 turns region surges off).
    pub region: u32,
}

impl Default for Surge {
    fn default() -> Self {
        Surge {
            window: Duration::from_secs(600),
            factor: 10.0,
            floor: 3,
            per_digit: 4.0,
            region: 500,
        }
    }
}

/// Distinct numbers and regions per sender: client address, user, account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Distinct {
    /// Confirmed sends raise a sender's allowance by this many numbers each.
    #[serde(deserialize_with = "de_ratio")]
    pub ratio: f64,
    #[serde(deserialize_with = "de_windows")]
    pub client_ip: Vec<Rate>,
    #[serde(deserialize_with = "de_windows")]
    pub user: Vec<Rate>,
    #[serde(deserialize_with = "de_windows")]
    pub account: Vec<Rate>,
    /// Distinct regions one client address or user may reach per day
    /// (0 turns it off).
    pub regions: u32,
}

impl Default for Distinct {
    fn default() -> Self {
        let r = |s: &[&str]| s.iter().filter_map(|s| s.parse().ok()).collect();
        Distinct {
            ratio: 2.0,
            client_ip: r(&["10/1h", "20/1d"]),
            user: r(&["3/1h", "6/1d"]),
            account: Vec::new(),
            regions: 3,
        }
    }
}

/// Adaptive floors: `N/1h` or `N/1d`, the two windows the stage keeps.
fn de_windows<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Rate>, D::Error> {
    let rates: Vec<Rate> = de_seq_from_str(d)?;
    let (hour, day) = (Duration::from_secs(3600), Duration::from_secs(86_400));
    let mut seen = Vec::new();
    for r in &rates {
        if r.period != hour && r.period != day {
            return Err(de::Error::custom(format!(
                "adaptive floor {r}: the period must be 1h or 1d"
            )));
        }
        if seen.contains(&r.period) {
            return Err(de::Error::custom(format!(
                "adaptive floor {r}: one floor per period"
            )));
        }
        seen.push(r.period);
    }
    Ok(rates)
}

fn de_prefixes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let v: Vec<u8> = Vec::deserialize(d)?;
    if let Some(k) = v.iter().find(|k| !(1..=12).contains(*k)) {
        return Err(de::Error::custom(format!(
            "prefix length {k}: digits after the country code must be 1..=12"
        )));
    }
    Ok(v)
}

fn de_bulk<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v > BULK_MAX {
        return Err(de::Error::custom(format!(
            "bulk {v}: at most {} numbers (0 turns it off)",
            BULK_MAX
        )));
    }
    Ok(v)
}

fn de_ratio<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !v.is_finite() || v < 0.0 {
        return Err(de::Error::custom(format!(
            "ratio {v} must be a number >= 0"
        )));
    }
    Ok(v)
}

fn de_share<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !v.is_finite() || v <= 0.0 || v >= 1.0 {
        return Err(de::Error::custom(format!(
            "share {v} must be a number between 0 and 1 (exclusive)"
        )));
    }
    Ok(v)
}

fn de_at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !v.is_finite() || v < 1.0 {
        return Err(de::Error::custom(format!("{v} must be a number >= 1")));
    }
    Ok(v)
}

fn de_surge_window<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v: Duration = humantime_serde::deserialize(d)?;
    if v < Duration::from_secs(60) || v > Duration::from_secs(6 * 3600) {
        return Err(de::Error::custom(format!(
            "surge window {} must be between 1m and 6h",
            humantime::format_duration(v)
        )));
    }
    Ok(v)
}
