//! The TOML policy file: its shape, its defaults, and its errors.
//!
//! Every value is checked while it is read, so a mistake is reported as
//! `FILE:LINE:COL: message` pointing at the value itself. Nothing here is
//! ever read through a map that could hide a duplicate, and a key the guard
//! does not know is an error, never silently ignored: a typo in a policy
//! file must not switch a protection off.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use crate::phone::{NumberType, Region};

/// A configuration error with the place it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error has no place in the file (it could not
    /// be read at all).
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.file.display(), self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub upstream: Upstream,
    pub admin: Option<Admin>,
    pub ca: Option<Ca>,
    #[serde(default)]
    pub actions: Actions,
    #[serde(default)]
    pub geo: Geo,
    #[serde(default)]
    pub numbers: Numbers,
    pub backoff: Option<Backoff>,
    #[serde(default, rename = "limit")]
    pub limits: Vec<Limit>,
    pub adaptive: Option<Adaptive>,
    pub budget: Option<Budget>,
    pub balance: Option<Balance>,
    #[serde(default)]
    pub store: Store,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub shadow: Shadow,
    #[serde(default)]
    pub egress: Egress,
    pub audit: Option<Audit>,
    pub alerts: Option<Alerts>,
}

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

fn ten_mib() -> usize {
    10 * 1024 * 1024
}
fn five() -> usize {
    5
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

fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}
fn spike_factor() -> f64 {
    5.0
}
fn spike_min() -> u32 {
    50
}
fn spike_window() -> usize {
    30
}
fn three() -> u32 {
    3
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

/// Egress-proxy mode: what CONNECT may reach besides the Twilio hosts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Egress {
    /// `host:port` targets passed through as blind tunnels (not inspected).
    pub tunnel: Vec<String>,
    /// Extra host names intercepted like Twilio's (exact names).
    pub intercept: Vec<String>,
}

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
}

impl Default for Shadow {
    fn default() -> Self {
        Shadow {
            timing: true,
            default_latency: Duration::from_millis(150),
            window: 200,
            retention: Duration::from_secs(24 * 3600),
            capacity: 100_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    pub addr: SocketAddr,
    pub tls: bool,
    pub proxy: bool,
    /// Largest send body the guard reads; a larger one is rejected, not forwarded.
    #[serde(deserialize_with = "de_bytes")]
    pub max_body: usize,
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// From accept to the first byte, and for each request's headers.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A connection with no request in flight and no byte either way for
    /// this long is closed (keep-alive, HTTP/2, CONNECT tunnels).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Open connections from one client address; more are closed at accept.
    pub max_connections_per_ip: usize,
    /// Runtime worker threads for `serve`; 0 = one per CPU.
    pub workers: usize,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: false,
            proxy: false,
            max_body: 64 * 1024,
            drain_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            workers: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    #[serde(deserialize_with = "de_base_url")]
    pub api: String,
    #[serde(deserialize_with = "de_base_url")]
    pub verify: String,
    /// The wait for the upstream's answer headers.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The longest silence inside a body streamed either way.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// The whole exchange, from forwarding to the answer's last byte.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Remove `RiskCheck=disable` from forwarded sends so Twilio's own
    /// protection stays on.
    pub strip_risk_check: bool,
    /// Fixed addresses for upstream host names (tests, private networks, and
    /// DNS mode, where the public name resolves to the guard itself).
    pub resolve: BTreeMap<String, SocketAddr>,
    /// An extra CA (PEM) trusted for upstream connections, besides the
    /// public roots.
    pub extra_ca: Option<PathBuf>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            api: "https://api.twilio.com".into(),
            verify: "https://verify.twilio.com".into(),
            timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            deadline: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            strip_risk_check: true,
            resolve: BTreeMap::new(),
            extra_ca: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub addr: SocketAddr,
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// Host names the admin API is reached by besides its address (and
    /// `localhost` on loopback): a state-changing request addressed to any
    /// other name is refused (DNS rebinding).
    #[serde(default, deserialize_with = "de_admin_hosts")]
    pub hosts: Vec<String>,
}

fn de_admin_hosts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let hosts = Vec::<String>::deserialize(d)?;
    for h in &hosts {
        let ok = !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return Err(de::Error::custom(format!(
                "admin.hosts: {h:?} must be a host name (letters, digits, '-' and '.', no port)"
            )));
        }
    }
    Ok(hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect())
}

fn default_token_env() -> String {
    "SMSGUARD_ADMIN_TOKEN".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ca {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a blocking verdict does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Forward as if nothing had been found.
    Allow,
    /// Answer with a fake success; Twilio is not contacted.
    Shadow,
    /// Answer with Twilio's own error for the reason.
    Reject,
    /// Forward, but record that the send would have been blocked.
    Monitor,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Shadow => "shadow",
            Action::Reject => "reject",
            Action::Monitor => "monitor",
        }
    }

    /// Whether this action stops the send from reaching Twilio.
    pub fn blocks(&self) -> bool {
        matches!(self, Action::Shadow | Action::Reject)
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(Action::Allow),
            "shadow" => Ok(Action::Shadow),
            "reject" => Ok(Action::Reject),
            "monitor" => Ok(Action::Monitor),
            _ => Err(format!(
                "unknown action {s:?}: expected \"allow\", \"shadow\", \"reject\" or \"monitor\""
            )),
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

fn one() -> u32 {
    1
}
fn two() -> f64 {
    2.0
}

/// `N/PERIOD`, e.g. `5/1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub period: Duration,
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (n, p) = s
            .split_once('/')
            .ok_or_else(|| format!("rate {s:?} must look like \"5/1h\" (count/period)"))?;
        let count: u64 = n
            .trim()
            .parse()
            .map_err(|_| format!("rate {s:?}: {n:?} is not a whole number"))?;
        if count == 0 {
            return Err(format!("rate {s:?}: the count must be at least 1"));
        }
        let period = humantime::parse_duration(p.trim())
            .map_err(|e| format!("rate {s:?}: period {p:?}: {e}"))?;
        if period < Duration::from_secs(1) {
            return Err(format!("rate {s:?}: the period must be at least 1s"));
        }
        Ok(Rate { count, period })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, Short(self.period))
    }
}

/// A duration as a policy would write it: `1d`, `12h`, `2h30m`, `150ms`
/// (what `check` and rule figures print; the config reads it back).
pub struct Short(pub Duration);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let mut left = ms;
        for (unit, len) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            if left >= len {
                write!(f, "{}{unit}", left / len)?;
                left %= len;
            }
        }
        Ok(())
    }
}

/// One part of a limit key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPart {
    To,
    Prefix(u8),
    Region,
    Account,
    ClientIp,
    User,
    Global,
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPart::To => f.write_str("to"),
            KeyPart::Prefix(n) => write!(f, "prefix:{n}"),
            KeyPart::Region => f.write_str("region"),
            KeyPart::Account => f.write_str("account"),
            KeyPart::ClientIp => f.write_str("client_ip"),
            KeyPart::User => f.write_str("user"),
            KeyPart::Global => f.write_str("global"),
        }
    }
}

impl FromStr for KeyPart {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "to" => KeyPart::To,
            "region" => KeyPart::Region,
            "account" => KeyPart::Account,
            "client_ip" => KeyPart::ClientIp,
            "user" => KeyPart::User,
            "global" => KeyPart::Global,
            _ => {
                if let Some(n) = s.strip_prefix("prefix:") {
                    let n: u8 = n
                        .parse()
                        .map_err(|_| format!("key part {s:?}: prefix length must be 1..=15"))?;
                    if !(1..=15).contains(&n) {
                        return Err(format!("key part {s:?}: prefix length must be 1..=15"));
                    }
                    KeyPart::Prefix(n)
                } else {
                    return Err(format!(
                        "unknown key part {s:?}: expected to, prefix:N, region, account, client_ip, user or global (joined with '+')"
                    ));
                }
            }
        })
    }
}

/// A limit key: one part or several joined with `+` (`client_ip+region`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeySpec {
    pub parts: Vec<KeyPart>,
    text: String,
}

impl KeySpec {
    pub fn single(part: KeyPart) -> Self {
        KeySpec {
            parts: vec![part],
            text: part.to_string(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for KeySpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        for p in s.split('+') {
            let part: KeyPart = p.trim().parse()?;
            if parts.contains(&part) {
                return Err(format!("key {s:?} names {part} twice"));
            }
            parts.push(part);
        }
        if parts.contains(&KeyPart::Global) && parts.len() > 1 {
            return Err(format!(
                "key {s:?}: global cannot be combined with other parts"
            ));
        }
        let text = parts
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("+");
        Ok(KeySpec { parts, text })
    }
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

fn default_block_max() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_forgive() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

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
    /// Sends past their grace before a key's conversion is judged at all.
    pub min_sample: u32,
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
            min_sample: 5,
            prefix: r(&["4/1h", "10/1d"]),
            region: r(&["100/1h", "500/1d"]),
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

fn de_ratio<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !v.is_finite() || v < 0.0 {
        return Err(de::Error::custom(format!(
            "ratio {v} must be a number >= 0"
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

fn adaptive_prefixes() -> Vec<u8> {
    vec![3, 4, 5, 6]
}
fn four_u8() -> u8 {
    4
}
fn two_u8() -> u8 {
    2
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn fifteen_minutes() -> Duration {
    Duration::from_secs(900)
}
fn thirty_minutes() -> Duration {
    Duration::from_secs(1800)
}
fn thirty_days() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn seven_days() -> Duration {
    Duration::from_secs(7 * 86_400)
}
fn fourteen_days() -> Duration {
    Duration::from_secs(14 * 86_400)
}
fn twelve_hours() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn million() -> u64 {
    1_000_000
}

/// An amount of money in millionths of the currency unit, so sums are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Money(pub u64);

impl Money {
    pub const SCALE: u64 = 1_000_000;
}

impl FromStr for Money {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
        let ok = !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
            && frac.len() <= 6;
        if !ok {
            return Err(format!(
                "amount {s:?} must be a non-negative decimal with at most 6 decimals, e.g. \"0.0079\""
            ));
        }
        let w: u64 = whole
            .parse()
            .map_err(|_| format!("amount {s:?} is too large"))?;
        let mut f: u64 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| format!("amount {s:?}"))?
        };
        for _ in frac.len()..6 {
            f *= 10;
        }
        w.checked_mul(Money::SCALE)
            .and_then(|v| v.checked_add(f))
            .map(Money)
            .ok_or_else(|| format!("amount {s:?} is too large"))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frac = self.0 % Money::SCALE;
        // Two decimals at least, more only when they carry information.
        let mut s = format!("{:06}", frac);
        while s.len() > 2 && s.ends_with('0') {
            s.pop();
        }
        write!(f, "{}.{}", self.0 / Money::SCALE, s)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Money;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an amount such as \"0.0079\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
                format!("{v}").parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
                format!("{v}").parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

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

fn usd() -> String {
    "USD".into()
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

fn sixty() -> Duration {
    Duration::from_secs(60)
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// Most keys each state table tracks (counters, backoff); memory stays
    /// bounded whatever the number of distinct numbers.
    pub capacity: u64,
    /// Most blocks held at once.
    pub block_capacity: u64,
    /// One Redis node: `redis://host:port/db` or `rediss://` (TLS). Never
    /// with a password: that comes from `redis_password_env`.
    pub redis: Option<Spanned<String>>,
    /// The environment variable holding the Redis password.
    pub redis_password_env: Option<Spanned<String>>,
    /// Seed nodes of a Redis Cluster (instead of `redis`).
    pub redis_cluster: Option<Spanned<Vec<Spanned<String>>>>,
    /// Longest wait for one Redis call.
    #[serde(deserialize_with = "de_nonzero_duration")]
    pub timeout: Duration,
    /// What sends are judged with while Redis is down or slow.
    #[serde(deserialize_with = "de_from_str")]
    pub on_error: StoreOnError,
    /// How often each replica mirrors the shared blocks and reads the
    /// fleet's log: a block set on another replica is enforced here within
    /// this (at least 10 ms).
    #[serde(with = "humantime_serde")]
    pub near_cache: Duration,
    /// Put before every Redis key, so several guards (or other programs)
    /// can share one Redis.
    #[serde(deserialize_with = "de_redis_prefix")]
    pub prefix: String,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            capacity: 1_000_000,
            block_capacity: 100_000,
            redis: None,
            redis_password_env: None,
            redis_cluster: None,
            timeout: Duration::from_millis(50),
            on_error: StoreOnError::Local,
            near_cache: Duration::from_secs(1),
            prefix: "smsguard:".into(),
        }
    }
}

impl Store {
    /// Whether state is shared in Redis (one node or a cluster).
    pub fn shared(&self) -> bool {
        self.redis.is_some() || self.redis_cluster.is_some()
    }

    /// Checks the Redis settings together; errors point at the value.
    fn validate(&self) -> Result<(), (Option<std::ops::Range<usize>>, String)> {
        if let (Some(_), Some(cluster)) = (&self.redis, &self.redis_cluster) {
            return Err((
                Some(cluster.span()),
                "store.redis and store.redis_cluster are mutually exclusive: set one".into(),
            ));
        }
        if let Some(url) = &self.redis {
            check_redis_url("store.redis", url.get_ref(), true)
                .map_err(|m| (Some(url.span()), m))?;
        }
        if let Some(cluster) = &self.redis_cluster {
            if cluster.get_ref().is_empty() {
                return Err((
                    Some(cluster.span()),
                    "store.redis_cluster needs at least one seed node URL".into(),
                ));
            }
            for url in cluster.get_ref() {
                check_redis_url("store.redis_cluster", url.get_ref(), false)
                    .map_err(|m| (Some(url.span()), m))?;
            }
        }
        if let Some(env) = &self.redis_password_env {
            let name = env.get_ref();
            let ok = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err((
                    Some(env.span()),
                    format!(
                        "store.redis_password_env {name:?} must be the name of an environment variable (letters, digits, '_')"
                    ),
                ));
            }
            if !self.shared() {
                return Err((
                    Some(env.span()),
                    "store.redis_password_env is set but neither store.redis nor store.redis_cluster is".into(),
                ));
            }
        }
        Ok(())
    }
}

/// What a send is judged with while the shared store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreOnError {
    /// With this replica's own memory (the default).
    #[default]
    Local,
    /// Every judged send is blocked.
    Block,
    /// The stages that need shared state (backoff, limits, budget) let
    /// sends pass; number rules and known blocks still apply.
    Allow,
}

impl StoreOnError {
    pub fn as_str(&self) -> &'static str {
        match self {
            StoreOnError::Local => "local",
            StoreOnError::Block => "block",
            StoreOnError::Allow => "allow",
        }
    }
}

impl FromStr for StoreOnError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(StoreOnError::Local),
            "block" => Ok(StoreOnError::Block),
            "allow" => Ok(StoreOnError::Allow),
            _ => Err(format!(
                "unknown store.on_error {s:?}: expected \"local\", \"block\" or \"allow\""
            )),
        }
    }
}

/// `url` without its userinfo, for messages: a password never reaches a log.
fn redacted_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// A Redis URL the guard accepts: `redis://` or `rediss://`, a host, an
/// optional port and (when `db` is allowed) database number, and no
/// password, query or fragment.
fn check_redis_url(what: &str, url: &str, db: bool) -> Result<(), String> {
    let shown = redacted_url(url);
    let Some(u) = redis::parse_redis_url(url).filter(|u| matches!(u.scheme(), "redis" | "rediss"))
    else {
        return Err(format!(
            "{what} {shown:?} must be a URL starting with redis:// or rediss://"
        ));
    };
    if u.password().is_some() {
        return Err(format!(
            "{what} {shown:?} holds a password: remove it from the file and name the environment variable that holds it in store.redis_password_env"
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("{what} {shown:?} has no host"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!(
            "{what} {shown:?} must not have a query or fragment (TLS certificates are always verified)"
        ));
    }
    let path = u.path().trim_start_matches('/');
    if !path.is_empty() {
        if !db {
            return Err(format!(
                "{what} {shown:?}: a cluster has no database number, remove the path"
            ));
        }
        if path.parse::<u32>().is_err() {
            return Err(format!(
                "{what} {shown:?}: the path must be a database number such as /0"
            ));
        }
    }
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(|_| ())
        .map_err(|e| format!("{what} {shown:?}: {e}"))
}

fn de_nonzero_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let t = humantime::parse_duration(&s)
        .map_err(|e| de::Error::custom(format!("duration {s:?}: {e}")))?;
    if t.is_zero() {
        return Err(de::Error::custom(format!(
            "duration {s:?} must be longer than 0"
        )));
    }
    Ok(t)
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

fn de_redis_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(de::Error::custom(format!(
            "store.prefix {s:?} must be 1 to 64 printable ASCII characters without spaces"
        )));
    }
    if s.contains(['{', '}']) {
        return Err(de::Error::custom(format!(
            "store.prefix {s:?} must not hold '{{' or '}}': they choose a Redis Cluster hash slot"
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

// ---- deserialization helpers: parse through FromStr so errors carry the value's span

fn de_from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let s = String::deserialize(d)?;
    s.parse().map_err(de::Error::custom)
}

fn de_opt_from_str<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(de::Error::custom)
}

fn de_seq_from_str<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let v: Vec<String> = Vec::deserialize(d)?;
    v.iter()
        .map(|s| s.parse().map_err(de::Error::custom))
        .collect()
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = usize;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a size such as 65536 or \"64KiB\"")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom("size must not be negative"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
            parse_size(v).map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: usize = n
        .parse()
        .map_err(|_| format!("size {s:?} must be a number with an optional unit (KiB, MiB)"))?;
    let mul = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        _ => return Err(format!("size {s:?}: unknown unit (use B, KiB or MiB)")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

fn de_base_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let uri: http::Uri = s
        .parse()
        .map_err(|e| de::Error::custom(format!("upstream {s:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(de::Error::custom(format!(
                "upstream {s:?} must start with http:// or https://"
            )))
        }
    }
    if uri.authority().is_none() || !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(de::Error::custom(format!(
            "upstream {s:?} must be a scheme and host only, e.g. \"https://api.twilio.com\""
        )));
    }
    Ok(s.trim_end_matches('/').to_string())
}

impl Config {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            // A file that cannot be read has no line to point at.
            line: 0,
            col: 0,
            message: format!("cannot read the file: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Parses and checks policy text; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let at = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, col) = line_col(text, span.map(|s| s.start).unwrap_or(0));
            ConfigError {
                file: path.to_path_buf(),
                line,
                col,
                message,
            }
        };
        let config: Config = toml::from_str(text).map_err(|e| {
            let message = match e.message().trim() {
                // The TOML parser says nothing for some characters (a
                // control character in a comment); the position still
                // points at it.
                "" => "invalid TOML here (a control character?)".to_string(),
                m => m.to_string(),
            };
            at(e.span(), message)
        })?;
        config
            .validate()
            .map_err(|(span, message)| at(span, message))?;
        Ok(config)
    }

    /// The protections this policy judges with: empty means every send is
    /// forwarded unjudged.
    pub fn protections(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.geo.allow.is_empty() {
            p.push("geo.allow".to_string());
        }
        if !self.geo.deny.is_empty() {
            p.push("geo.deny".to_string());
        }
        if !self.numbers.block_types.is_empty() {
            p.push("numbers.block_types".to_string());
        }
        for (present, name) in [
            (self.backoff.is_some(), "[backoff]"),
            (self.adaptive.is_some(), "[adaptive]"),
            (self.budget.is_some(), "[budget]"),
            (self.balance.is_some(), "[balance]"),
        ] {
            if present {
                p.push(name.to_string());
            }
        }
        for l in &self.limits {
            p.push(format!("[[limit]] {}", l.name.get_ref()));
        }
        p
    }

    /// What `self` no longer has of the protections `running` judges
    /// with: a reload that loses any is a weakening.
    pub fn lost_from(&self, running: &Config) -> Vec<String> {
        let now = self.protections();
        running
            .protections()
            .into_iter()
            .filter(|p| !now.contains(p))
            .collect()
    }

    /// Checks that need several values at once.
    fn validate(&self) -> Result<(), (Option<std::ops::Range<usize>>, String)> {
        let mut names: Vec<&str> = Vec::new();
        for limit in &self.limits {
            let name = limit.name.get_ref().as_str();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err((
                    Some(limit.name.span()),
                    format!("limit name {name:?} must be letters, digits, '_' or '-'"),
                ));
            }
            if names.contains(&name) {
                return Err((
                    Some(limit.name.span()),
                    format!("limit name {name:?} is used twice"),
                ));
            }
            names.push(name);
            if limit.rates.is_empty() {
                return Err((
                    Some(limit.name.span()),
                    format!("limit {name:?} has no rates"),
                ));
            }
            if limit.rates.len() > 8 {
                return Err((
                    Some(limit.name.span()),
                    format!("limit {name:?} has more than 8 rates"),
                ));
            }
            if limit.escalate < 1.0 || !limit.escalate.is_finite() {
                return Err((
                    Some(limit.name.span()),
                    format!("limit {name:?}: escalate must be at least 1"),
                ));
            }
        }
        if let Some(b) = &self.backoff {
            if b.factor < 1.0 || !b.factor.is_finite() {
                return Err((None, "backoff.factor must be at least 1".into()));
            }
            if b.max < b.base {
                return Err((
                    None,
                    "backoff.max must not be shorter than backoff.base".into(),
                ));
            }
        }
        for (name, d) in [
            ("listen.header_timeout", self.listen.header_timeout),
            ("listen.idle_timeout", self.listen.idle_timeout),
            ("upstream.timeout", self.upstream.timeout),
            ("upstream.body_timeout", self.upstream.body_timeout),
            ("upstream.deadline", self.upstream.deadline),
        ] {
            if d.is_zero() {
                return Err((None, format!("{name} must be longer than 0")));
            }
        }
        if self.listen.max_connections_per_ip == 0 {
            return Err((
                None,
                "listen.max_connections_per_ip must be at least 1".into(),
            ));
        }
        if (self.listen.tls || self.listen.proxy) && self.ca.is_none() {
            return Err((
                None,
                "listen.tls and listen.proxy need a [ca] section (create one with `smsguard ca init`)".into(),
            ));
        }
        for t in &self.egress.tunnel {
            let ok = t
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err((None, format!("egress.tunnel: {t:?} must be host:port")));
            }
        }
        crate::twilio::hosts::HostPolicy::try_new(self.egress.intercept.clone())
            .map_err(|e| (None, format!("egress.intercept: {e}")))?;
        if self.shadow.window == 0 {
            return Err((None, "shadow.window must be at least 1".into()));
        }
        self.store.validate()?;
        if let Some(r) = self.geo.allow.iter().find(|r| self.geo.deny.contains(r)) {
            return Err((None, format!("geo: region {r} is both allowed and denied")));
        }
        if let Some(b) = &self.budget {
            for k in b.regions.keys() {
                k.parse::<Region>()
                    .map_err(|e| (None, format!("budget.regions: {e}")))?;
            }
        }
        for s in &self.numbers.safe {
            if crate::phone::normalize(s, None).is_err() {
                return Err((None, format!("numbers.safe: {s:?} is not an E.164 number")));
            }
        }
        for p in &self.numbers.safe_prefixes {
            let digits = p.strip_prefix('+').unwrap_or("");
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err((
                    None,
                    format!("numbers.safe_prefixes: {p:?} must be '+' and digits"),
                ));
            }
        }
        if let Some(net) = self.numbers.safe_clients.iter().find(|n| {
            matches!(n, IpNet::V6(v6) if v6.prefix_len() > self.numbers.client_ipv6_prefix
                && v6.addr().to_ipv4_mapped().is_none())
        }) {
            return Err((
                None,
                format!(
                    "numbers.safe_clients: {net} is narrower than numbers.client_ipv6_prefix /{}: an IPv6 client is judged by its whole /{} network",
                    self.numbers.client_ipv6_prefix, self.numbers.client_ipv6_prefix
                ),
            ));
        }
        if !(1..=15).contains(&self.log.prefix_digits) {
            return Err((None, "log.prefix_digits must be 1..=15".into()));
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit_once('\n')
        .map_or(before, |(_, rest)| rest)
        .chars()
        .count()
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("p.toml"), text)
    }

    #[test]
    fn the_example_policy_parses() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
                .unwrap();
        let c = parse(&text).unwrap();
        assert!(!c.limits.is_empty());
        assert!(c.backoff.is_some());
    }

    #[test]
    fn a_bad_rate_names_line_and_column_of_the_value() {
        let e =
            parse("[[limit]]\nname = \"n\"\nkey = \"to\"\nrates = [\"5/1h\", \"5 per hour\"]\n")
                .unwrap_err();
        assert_eq!((e.line, e.col), (4, 9), "{e}");
        assert!(e.to_string().starts_with("p.toml:4:9: "), "{e}");
        assert!(e.message.contains("5 per hour"), "{e}");
    }

    #[test]
    fn an_unknown_key_is_an_error_not_ignored() {
        let e = parse("[geo]\nallow = [\"US\"]\nalow_no_region = true\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("alow_no_region"), "{e}");
    }

    #[test]
    fn a_bad_key_part_and_a_duplicate_limit_name_are_reported_where_they_are() {
        let e = parse("[[limit]]\nname = \"a\"\nkey = \"client_ip+phone\"\nrates = [\"1/1m\"]\n")
            .unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = parse(
            "[[limit]]\nname = \"a\"\nkey = \"to\"\nrates = [\"1/1m\"]\n[[limit]]\nname = \"a\"\nkey = \"to\"\nrates = [\"1/1m\"]\n",
        )
        .unwrap_err();
        assert_eq!((e.line, e.col), (6, 8), "{e}");
    }

    #[test]
    fn key_specs_join_parts_and_refuse_nonsense() {
        let k: KeySpec = "client_ip+region".parse().unwrap();
        assert_eq!(k.parts, vec![KeyPart::ClientIp, KeyPart::Region]);
        assert_eq!(
            "prefix:8".parse::<KeySpec>().unwrap().parts,
            vec![KeyPart::Prefix(8)]
        );
        assert!("prefix:0".parse::<KeySpec>().is_err());
        assert!("prefix:16".parse::<KeySpec>().is_err());
        assert!("to+to".parse::<KeySpec>().is_err());
        assert!("global+to".parse::<KeySpec>().is_err());
    }

    #[test]
    fn durations_print_as_a_policy_writes_them() {
        for (d, text) in [
            (Duration::from_secs(86_400), "1d"),
            (Duration::from_secs(30 * 86_400), "30d"),
            (Duration::from_secs(12 * 3_600), "12h"),
            (Duration::from_secs(9_000), "2h30m"),
            (Duration::from_millis(150), "150ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(Short(d).to_string(), text);
            assert_eq!(humantime::parse_duration(text).unwrap(), d, "{text}");
        }
        let r: Rate = "10/1day".parse().unwrap();
        assert_eq!(r.to_string(), "10/1d");
    }

    #[test]
    fn rates_and_money_parse_exactly() {
        assert_eq!(
            "20/10m".parse::<Rate>().unwrap(),
            Rate {
                count: 20,
                period: Duration::from_secs(600)
            }
        );
        assert!("0/1h".parse::<Rate>().is_err());
        assert!("5/0s".parse::<Rate>().is_err());
        assert_eq!("0.0079".parse::<Money>().unwrap(), Money(7_900));
        assert_eq!("50".parse::<Money>().unwrap(), Money(50_000_000));
        assert!("-1".parse::<Money>().is_err());
        assert!("0.0000001".parse::<Money>().is_err());
        assert_eq!(Money(7_900).to_string(), "0.0079");
        assert_eq!(Money(50_000_000).to_string(), "50.00");
        let c = parse("[budget]\nprices = { default = 0.0079, UZ = \"0.30\" }\n").unwrap();
        let p = &c.budget.unwrap().prices;
        assert_eq!(p.default, Money(7_900));
        assert_eq!(p.for_region("UZ".parse().ok()), Money(300_000));
    }

    /// The error of `[store]` followed by `body`, which must name line
    /// `line` and column `col`, and its message.
    fn store_error(body: &str, line: usize, col: usize) -> String {
        let e = parse(&format!("[store]\n{body}")).unwrap_err();
        assert_eq!((e.line, e.col), (line, col), "{e}");
        e.message
    }

    #[test]
    fn store_redis_settings_parse_with_their_defaults() {
        let c = parse("").unwrap();
        assert!(!c.store.shared());
        assert_eq!(c.store.timeout, Duration::from_millis(50));
        assert_eq!(c.store.on_error, StoreOnError::Local);
        assert_eq!(c.store.near_cache, Duration::from_secs(1));
        assert_eq!(c.store.prefix, "smsguard:");
        let c = parse(
            "[store]\nredis = \"rediss://cache.internal:6380/2\"\nredis_password_env = \"REDIS_PASSWORD\"\ntimeout = \"20ms\"\non_error = \"block\"\nnear_cache = \"0s\"\nprefix = \"guard-eu:\"\n",
        )
        .unwrap();
        assert!(c.store.shared());
        assert_eq!(
            c.store.redis.as_ref().unwrap().get_ref(),
            "rediss://cache.internal:6380/2"
        );
        assert_eq!(
            c.store.redis_password_env.as_ref().unwrap().get_ref(),
            "REDIS_PASSWORD"
        );
        assert_eq!(c.store.timeout, Duration::from_millis(20));
        assert_eq!(c.store.on_error, StoreOnError::Block);
        assert!(c.store.near_cache.is_zero());
        assert_eq!(c.store.prefix, "guard-eu:");
        let c =
            parse("[store]\nredis = \"redis://user@10.0.0.5\"\non_error = \"allow\"\n").unwrap();
        assert_eq!(c.store.on_error, StoreOnError::Allow);
        let c = parse(
            "[store]\nredis_cluster = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000/\"]\n",
        )
        .unwrap();
        assert!(c.store.shared());
        assert_eq!(c.store.redis_cluster.as_ref().unwrap().get_ref().len(), 2);
    }

    #[test]
    fn a_password_in_a_redis_url_is_refused_and_never_repeated() {
        let m = store_error("redis = \"redis://:hunter2@10.0.0.5:6379\"\n", 2, 9);
        assert!(
            m.contains("password") && m.contains("redis_password_env"),
            "{m}"
        );
        assert!(!m.contains("hunter2"), "{m}");
        let m = store_error("redis = \"rediss://admin:hunter2@cache/0\"\n", 2, 9);
        assert!(!m.contains("hunter2") && m.contains("***@cache"), "{m}");
        let m = store_error(
            "redis_cluster = [\"redis://a:7000\", \"redis://:hunter2@b:7000\"]\n",
            2,
            36,
        );
        assert!(m.contains("password") && !m.contains("hunter2"), "{m}");
    }

    #[test]
    fn a_redis_url_needs_the_redis_scheme_and_a_host() {
        let m = store_error("redis = \"http://10.0.0.5\"\n", 2, 9);
        assert!(m.contains("redis://") && m.contains("rediss://"), "{m}");
        store_error("redis = \"redis+unix:///tmp/redis.sock\"\n", 2, 9);
        store_error("redis = \"10.0.0.5:6379\"\n", 2, 9);
        let m = store_error("redis = \"redis://\"\n", 2, 9);
        assert!(m.contains("host"), "{m}");
        let m = store_error("\nredis = \"redis://h/db1\"\n", 3, 9);
        assert!(m.contains("database number"), "{m}");
        let m = store_error("redis = \"rediss://h#insecure\"\n", 2, 9);
        assert!(m.contains("fragment"), "{m}");
        store_error("redis = \"redis://h?protocol=resp3\"\n", 2, 9);
        store_error("redis = \"redis://0.0.0.0\"\n", 2, 9);
        let m = store_error("redis_cluster = [\"redis://a:7000/1\"]\n", 2, 18);
        assert!(m.contains("cluster has no database"), "{m}");
    }

    #[test]
    fn one_redis_or_a_cluster_of_seeds_never_both() {
        let m = store_error(
            "redis = \"redis://a\"\nredis_cluster = [\"redis://b:7000\"]\n",
            3,
            17,
        );
        assert!(m.contains("mutually exclusive"), "{m}");
        let m = store_error("redis_cluster = []\n", 2, 17);
        assert!(m.contains("at least one"), "{m}");
    }

    #[test]
    fn the_password_variable_must_be_a_name_and_need_a_redis() {
        let m = store_error(
            "redis = \"redis://a\"\nredis_password_env = \"$REDIS PASS\"\n",
            3,
            22,
        );
        assert!(m.contains("environment variable"), "{m}");
        store_error("redis = \"redis://a\"\nredis_password_env = \"\"\n", 3, 22);
        store_error(
            "redis = \"redis://a\"\nredis_password_env = \"1PASS\"\n",
            3,
            22,
        );
        let m = store_error("redis_password_env = \"REDIS_PASSWORD\"\n", 2, 22);
        assert!(m.contains("neither"), "{m}");
    }

    #[test]
    fn store_timeouts_modes_and_prefix_are_checked_where_they_are() {
        let m = store_error("timeout = \"0ms\"\n", 2, 11);
        assert!(m.contains("longer than 0"), "{m}");
        store_error("timeout = \"soon\"\n", 2, 11);
        let m = store_error("on_error = \"deny\"\n", 2, 12);
        assert!(m.contains("\"local\""), "{m}");
        store_error("near_cache = \"a while\"\n", 2, 14);
        let m = store_error("prefix = \"sms{guard}:\"\n", 2, 10);
        assert!(m.contains("hash slot"), "{m}");
        store_error("prefix = \"\"\n", 2, 10);
        store_error("prefix = \"sms guard\"\n", 2, 10);
        let m = store_error("redis_db = 2\n", 2, 1);
        assert!(m.contains("redis_db"), "{m}");
    }

    #[test]
    fn upstream_must_be_a_bare_base_url() {
        assert!(parse("[upstream]\napi = \"ftp://x\"\n").is_err());
        assert!(parse("[upstream]\napi = \"https://x/2010-04-01\"\n").is_err());
        let c = parse("[upstream]\napi = \"http://127.0.0.1:9/\"\n").unwrap();
        assert_eq!(c.upstream.api, "http://127.0.0.1:9");
    }

    #[test]
    fn an_error_always_says_something() {
        // Found by the config fuzzer: the TOML parser's message for a NUL
        // in a comment is empty.
        let e = parse("#\0").unwrap_err();
        assert_eq!((e.line, e.col), (1, 2));
        assert!(!e.message.trim().is_empty());
        assert!(e.to_string().starts_with("p.toml:1:2: invalid TOML"), "{e}");
    }

    #[test]
    fn sizes_accept_units() {
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("1GB").is_err());
    }
}
