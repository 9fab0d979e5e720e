//! The guard's edges: `[listen]`, `[upstream]`, `[admin]`, `[ca]` and
//! `[egress]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::defaults::default_token_env;
use super::deserialize::de_bytes;

/// Egress-proxy mode: what CONNECT may reach besides the Twilio hosts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Egress {
    /// `host:port` targets passed through as blind tunnels (not inspected).
    pub tunnel: Vec<String>,
    /// Extra host names intercepted like Twilio's (exact names).
    pub intercept: Vec<String>,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ca {
    pub cert: PathBuf,
    pub key: PathBuf,
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
    // The app's Twilio credentials travel to the upstream: in clear only
    // to this machine (a local test Twilio, `smsguard fake-twilio`).
    let host = uri
        .host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if uri.scheme_str() == Some("http") && !loopback {
        return Err(de::Error::custom(format!(
            "upstream {s:?} would carry the app's Twilio credentials in clear: use https://, or http:// on loopback only (a local test Twilio)"
        )));
    }
    Ok(s.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use crate::config::load::tests::parse;

    #[test]
    fn upstream_must_be_a_bare_base_url() {
        assert!(parse("[upstream]\napi = \"ftp://x\"\n").is_err());
        assert!(parse("[upstream]\napi = \"https://x/2010-04-01\"\n").is_err());
        let c = parse("[upstream]\napi = \"http://127.0.0.1:9/\"\n").unwrap();
        assert_eq!(c.upstream.api, "http://127.0.0.1:9");
    }
}
