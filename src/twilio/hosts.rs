//! Which host names are Twilio's (`api`, `verify` and their regional
//! forms), and which others the operator lets interception mint a
//! certificate for ([`HostPolicy`]). Used by config validation, the egress
//! dispatch and the TLS minter.

use std::net::Ipv4Addr;

/// Twilio host names the guard intercepts, and which upstream each is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TwilioHost {
    /// `api.twilio.com` and its regional forms (the 2010-04-01 REST API).
    Api,
    /// `verify.twilio.com` and its regional forms (Verify v2).
    Verify,
}

/// Lowercases `host`, drops one trailing '.', and checks that it is a plain
/// DNS host name (LDH labels of 1..=63 bytes, 253 bytes in all). Anything
/// else (empty labels, '_', '*', non-ASCII, spaces) gives `None`, so nothing
/// odd can ever reach a certificate's SAN or the cache.
pub(crate) fn normalize_host(host: &str) -> Option<String> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 || !host.is_ascii() {
        return None;
    }
    let host = host.to_ascii_lowercase();
    if host.split('.').all(valid_label) {
        Some(host)
    } else {
        None
    }
}

/// One DNS label: letters, digits and '-', not starting or ending with '-'.
/// Expects lowercase input.
fn valid_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first() != Some(&b'-')
        && b.last() != Some(&b'-')
}

/// Recognizes the Twilio host names smsguard intercepts:
/// `api.twilio.com`, `verify.twilio.com`, and the regional forms
/// `{api,verify}.{region}.twilio.com` and `{api,verify}.{edge}.{region}.twilio.com`
/// (edge and region labels: lowercase letters, digits and '-').
/// ASCII case-insensitive, one trailing '.' allowed; nothing else matches (no
/// lookalikes such as `evil-twilio.com` or `api.twilio.com.evil.com`, no
/// deeper names such as `x.api.twilio.com`, no wildcards).
pub fn twilio_host(host: &str) -> Option<TwilioHost> {
    let host = normalize_host(host)?;
    let labels: Vec<&str> = host.split('.').collect();
    // The service label comes first; between it and "twilio.com" there may be
    // nothing, a region, or an edge and a region. normalize_host has already
    // checked every label's characters.
    let service = match labels.as_slice() {
        [service, "twilio", "com"]
        | [service, _, "twilio", "com"]
        | [service, _, _, "twilio", "com"] => *service,
        _ => return None,
    };
    match service {
        "api" => Some(TwilioHost::Api),
        "verify" => Some(TwilioHost::Verify),
        _ => None,
    }
}

/// Which host names may get a certificate: the Twilio hosts recognized by
/// [`twilio_host`] plus an operator-configured list of exact names (for
/// private deployments and tests, e.g. a staging upstream).
#[derive(Clone, Debug)]
pub struct HostPolicy {
    /// Normalized (lowercase, no trailing dot) valid host names.
    extra: Vec<String>,
}

impl HostPolicy {
    /// Builds a policy. Entries are compared case-insensitively; entries that
    /// are not plain DNS host names (wildcards, IP addresses, '_', empty) are
    /// ignored, because a certificate for them would be wrong or dangerous.
    /// Use [`HostPolicy::try_new`] to reject such a configuration instead.
    pub fn new(extra: Vec<String>) -> Self {
        let extra = extra.iter().filter_map(|h| normalize_extra(h)).collect();
        HostPolicy { extra }
    }

    /// Like [`HostPolicy::new`], but an entry that is not a plain DNS host
    /// name is an error naming it, for configuration loading.
    pub fn try_new(extra: Vec<String>) -> Result<Self, String> {
        let mut names = Vec::with_capacity(extra.len());
        for h in &extra {
            match normalize_extra(h) {
                Some(n) => names.push(n),
                None => {
                    return Err(format!(
                        "extra TLS host {h:?} is not a plain DNS host name \
                         (no wildcards, IP addresses, '_' or empty labels)"
                    ))
                }
            }
        }
        Ok(HostPolicy { extra: names })
    }

    /// Whether `host` may get a certificate.
    pub fn allows(&self, host: &str) -> bool {
        match normalize_extra(host) {
            Some(h) => twilio_host(&h).is_some() || self.extra.contains(&h),
            None => false,
        }
    }
}

/// A normalized host name that is also not an IPv4 literal or numeric-TLD
/// name: a dNSName SAN holding an IP address is never what a client wants.
fn normalize_extra(host: &str) -> Option<String> {
    let h = normalize_host(host)?;
    let last = h.rsplit('.').next().unwrap_or("");
    if h.parse::<Ipv4Addr>().is_ok() || last.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_host_accepts_main_and_regional_forms() {
        for (h, want) in [
            ("api.twilio.com", TwilioHost::Api),
            ("verify.twilio.com", TwilioHost::Verify),
            ("API.TWILIO.COM.", TwilioHost::Api),
            ("Verify.Twilio.Com", TwilioHost::Verify),
            ("api.sydney.au1.twilio.com", TwilioHost::Api),
            ("api.dublin.ie1.twilio.com", TwilioHost::Api),
            ("api.au1.twilio.com", TwilioHost::Api),
            ("api.sao-paulo.br1.twilio.com", TwilioHost::Api),
            ("verify.ie1.twilio.com", TwilioHost::Verify),
            ("verify.dublin.ie1.twilio.com", TwilioHost::Verify),
        ] {
            assert_eq!(twilio_host(h), Some(want), "{h}");
        }
    }

    #[test]
    fn twilio_host_rejects_lookalikes() {
        for h in [
            "",
            ".",
            "twilio.com",
            "api.twilio.com.evil.com",
            "evil-twilio.com",
            "api.evil-twilio.com",
            "xapi.twilio.com",
            "apix.twilio.com",
            "x.api.twilio.com",
            "a.b.c.d.twilio.com",
            "api.a.b.c.twilio.com",
            "messaging.twilio.com",
            "api..twilio.com",
            ".api.twilio.com",
            "api.twilio.com..",
            "api.us_1.twilio.com",
            "api_.twilio.com",
            "*.twilio.com",
            "api.*.twilio.com",
            "api.twilio.co",
            "api.twilio.com:443",
            "api twilio.com",
            "api.-ie1.twilio.com",
            "api.ie1-.twilio.com",
            "api.twіlio.com",     // Cyrillic 'і'
            "api.ıe1.twilio.com", // dotless i: to_lowercase tricks
        ] {
            assert_eq!(twilio_host(h), None, "{h:?}");
        }
        let long = format!("api.{}.twilio.com", "a".repeat(64));
        assert_eq!(twilio_host(&long), None);
    }

    #[test]
    fn host_policy_allows_twilio_and_exact_extras_only() {
        let p = HostPolicy::new(vec![
            "Upstream.Example.COM.".into(),
            "*.example.org".into(),
            "10.0.0.1".into(),
        ]);
        assert!(p.allows("api.twilio.com"));
        assert!(p.allows("upstream.example.com"));
        assert!(p.allows("UPSTREAM.example.com."));
        assert!(!p.allows("example.com"));
        assert!(!p.allows("x.upstream.example.com"));
        assert!(!p.allows("evil.example.org"));
        assert!(!p.allows("*.example.org"));
        assert!(!p.allows("10.0.0.1"));
        assert!(!HostPolicy::new(vec![]).allows("upstream.example.com"));

        assert!(HostPolicy::try_new(vec!["localhost".into()]).is_ok());
        let e = HostPolicy::try_new(vec!["ok.example".into(), "*.example.org".into()]).unwrap_err();
        assert!(e.contains("*.example.org"), "{e}");
        assert!(HostPolicy::try_new(vec!["127.0.0.1".into()]).is_err());
    }
}
