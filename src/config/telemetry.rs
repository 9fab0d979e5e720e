//! What the guard writes out: `[log]`, `[audit]` and `[alerts]`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::defaults::{five, spike_factor, spike_min, spike_window, ten_mib, ten_minutes, three};
use super::deserialize::{de_bytes, de_from_str};
use super::Money;

/// The audit log file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    pub file: PathBuf,
    /// Rotate past this size.
    #[serde(default = "ten_mib", deserialize_with = "de_bytes")]
    pub max_size: usize,
    /// Rotated files kept (`audit.log.1` ..).
    #[serde(default = "five")]
    pub keep: usize,
}

/// Webhook alerts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// Receives a JSON POST with a Slack-compatible `text` field.
    #[serde(deserialize_with = "de_url")]
    pub webhook: String,
    /// At most one alert per cause per interval.
    #[serde(default = "ten_minutes", with = "humantime_serde")]
    pub interval: Duration,
    /// A region's sends this minute above `spike_factor` × its recent
    /// average per minute (and at least `spike_min`) alert.
    #[serde(default = "spike_factor")]
    pub spike_factor: f64,
    #[serde(default = "spike_min")]
    pub spike_min: u32,
    /// Minutes averaged for the recent rate.
    #[serde(default = "spike_window")]
    pub spike_window: usize,
    /// Alert when today's spend reaches this.
    pub spend_threshold: Option<Money>,
    /// Delivery retries after a failed POST.
    #[serde(default = "three")]
    pub retries: u32,
}

fn de_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let uri: http::Uri = s
        .parse()
        .map_err(|e| de::Error::custom(format!("{s:?} is not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http") | Some("https")) || uri.authority().is_none() {
        return Err(de::Error::custom(format!(
            "{s:?} must be an http:// or https:// URL"
        )));
    }
    Ok(s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "unknown log format {s:?}: expected \"human\" or \"json\""
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    #[serde(deserialize_with = "de_from_str")]
    pub format: LogFormat,
    pub level: String,
    /// Digits of the number shown as `prefix` in decision events.
    pub prefix_digits: u8,
    /// Hide the last four digits of numbers in the log, the audit file and
    /// the admin API (`+99899394****`).
    pub mask_numbers: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Human,
            level: "info".into(),
            prefix_digits: 8,
            mask_numbers: false,
        }
    }
}
