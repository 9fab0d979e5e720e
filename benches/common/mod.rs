//! What the benchmarks send: the same numbering scheme as
//! `bench/wrk/send.lua`, so the micro-benchmarks, the memory bench and the
//! HTTP load generator all judge the same kind of traffic.
//!
//! Request `n` of the allowed-send workload goes to a distinct valid US
//! number. Consecutive `n` walk through 256,000 different `prefix:8` values
//! (32 area codes x 800 exchanges x 10) before a prefix repeats, so the
//! example policy's `prefix` limit (20/10m, 100/1d) never trips in a bench;
//! 256 million `n` give distinct numbers. Every 8 consecutive `n` share one
//! client IP, well inside the `ip` limit (10/1h).
#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

/// NANP area codes libphonenumber calls valid US codes for any exchange
/// 200-999 (checked with `smsguard explain`).
pub const AREA_CODES: [u16; 32] = [
    201, 202, 203, 205, 206, 207, 208, 209, 210, 212, 213, 214, 215, 216, 217, 218, 219, 224, 225,
    228, 229, 231, 234, 239, 240, 248, 251, 252, 253, 254, 256, 260,
];

/// Distinct `prefix:8` values the allowed workload cycles through.
pub const PREFIXES: u64 = AREA_CODES.len() as u64 * 800 * 10;

pub const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
/// Basic base64("AC0123456789abcdef0123456789abcdef:benchtoken")
pub const AUTHORIZATION: &str =
    "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjpiZW5jaHRva2Vu";
pub const SEND_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";
pub const FETCH_PATH: &str =
    "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages/SM0123456789abcdef0123456789abcdef.json";

/// Writes the E.164 US number of request `n` ("+1AAAEEEDSSS") into `out`.
pub fn us_number(n: u64, out: &mut String) {
    let p = n % PREFIXES;
    let s = (n / PREFIXES) % 1000;
    let a = AREA_CODES[(p % AREA_CODES.len() as u64) as usize];
    let rest = p / AREA_CODES.len() as u64;
    let e = 200 + rest % 800;
    let d = rest / 800;
    let _ = write!(out, "+1{a}{e}{d}{s:03}");
}

/// The attack block of the README: `+99899394` and four digits (UZ mobile).
pub fn uz_number(n: u64, out: &mut String) {
    let _ = write!(out, "+99899394{:04}", n % 10_000);
}

/// The end user's IP of request `n`: 8 consecutive requests share one.
pub fn client_ip(n: u64) -> IpAddr {
    let u = (n / 8) as u32 & 0x00ff_ffff;
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | u))
}

/// The form body of a send to `to` (already E.164), as an SDK posts it.
pub fn send_body(to: &str, out: &mut String) {
    let _ = write!(
        out,
        "To=%2B{}&From=%2B15017122661&Body=Your+code+is+123456",
        to.trim_start_matches('+')
    );
}

/// Resident set size of this process in bytes (Linux `/proc/self/status`).
pub fn rss_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Send `n` of the allowed workload as the policy sees it: a Message from
/// the account to `to`, by `client_ip(n)` as the end user's address.
pub fn attempt(
    to: &smsguard::phone::Destination,
    class: smsguard::phone::Classification,
    n: u64,
) -> smsguard::policy::Attempt<'_> {
    smsguard::policy::Attempt {
        product: smsguard::twilio::routes::Product::Messaging,
        account: ACCOUNT,
        to,
        class,
        client_ip: client_ip(n),
        end_user_ip: true,
        user: None,
        segments: 1,
        media: 0,
        content: None,
        balance: smsguard::policy::BalanceView::NotAsked,
    }
}
