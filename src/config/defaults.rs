//! The default values the policy's fields name in `#[serde(default = ...)]`
//! (a section's `Default` sits beside the section).

use std::time::Duration;

pub(super) fn ten_mib() -> usize {
    10 * 1024 * 1024
}

pub(super) fn five() -> usize {
    5
}

pub(super) fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}

pub(super) fn spike_factor() -> f64 {
    5.0
}

pub(super) fn spike_min() -> u32 {
    50
}

pub(super) fn spike_window() -> usize {
    30
}

pub(super) fn three() -> u32 {
    3
}

pub(super) fn default_token_env() -> String {
    "SMSGUARD_ADMIN_TOKEN".into()
}

pub(super) fn one() -> u32 {
    1
}

pub(super) fn two() -> f64 {
    2.0
}

pub(super) fn default_block_max() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

pub(super) fn default_forgive() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

pub(super) fn adaptive_prefixes() -> Vec<u8> {
    vec![3, 4, 5, 6]
}

pub(super) fn four_u8() -> u8 {
    4
}

pub(super) fn two_u8() -> u8 {
    2
}

pub(super) fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

pub(super) fn fifteen_minutes() -> Duration {
    Duration::from_secs(900)
}

pub(super) fn thirty_minutes() -> Duration {
    Duration::from_secs(1800)
}

pub(super) fn thirty_days() -> Duration {
    Duration::from_secs(30 * 86_400)
}

pub(super) fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

pub(super) fn one_day() -> Duration {
    Duration::from_secs(24 * 3600)
}

pub(super) fn seven_days() -> Duration {
    Duration::from_secs(7 * 86_400)
}

pub(super) fn fourteen_days() -> Duration {
    Duration::from_secs(14 * 86_400)
}

pub(super) fn twelve_hours() -> Duration {
    Duration::from_secs(12 * 3600)
}

pub(super) fn million() -> u64 {
    1_000_000
}

pub(super) fn usd() -> String {
    "USD".into()
}

pub(super) fn sixty() -> Duration {
    Duration::from_secs(60)
}
