//! Reading a policy file: `Config::load` and `Config::parse`, the checks
//! that need several values at once, and every error placed at the
//! `FILE:LINE:COL` of the value it is about.

use std::fmt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::phone::Region;

use super::Config;

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

/// The parser's words for a wrong value, said as a policy's author needs
/// them: what to write instead, with an example.
fn for_people(m: &str) -> String {
    let number = [
        "expected u8",
        "expected u16",
        "expected u32",
        "expected u64",
        "expected usize",
    ];
    if number.iter().any(|n| m.ends_with(n)) {
        return format!("{m}: write a whole number without quotes, e.g. 2");
    }
    if m.ends_with("expected f64") || m.ends_with("expected f32") {
        return format!("{m}: write a number without quotes, e.g. 2.0");
    }
    if m.contains("expected a duration") {
        return format!("{m}: write a duration in quotes, e.g. \"30s\", \"5m\" or \"1h\"");
    }
    if m.contains("invalid socket address syntax") {
        return format!(
            "{m}: write an IP address and a port, e.g. \"127.0.0.1:8080\" (host names are not resolved here)"
        );
    }
    m.to_string()
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
                m => for_people(m),
            };
            at(e.span(), message)
        })?;
        config
            .validate()
            .map_err(|(span, message)| at(span, message))?;
        Ok(config)
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
        if let Some(r) = &self.reconcile {
            r.validate()?;
        }
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
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
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
pub(super) mod tests {
    use super::*;

    /// Parses `text` as the policy file `p.toml`.
    pub(in crate::config) fn parse(text: &str) -> Result<Config, ConfigError> {
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

    /// The unconfirmed floors and ratios an empty `[adaptive]` gets are
    /// the example policy's (and the README's table): an operator who
    /// leaves a key out gets what was measured and documented.
    #[test]
    fn the_adaptive_defaults_are_the_example_policys() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
                .unwrap();
        let example = parse(&text).unwrap().adaptive.unwrap().unconfirmed;
        let empty = parse("[adaptive]\n").unwrap().adaptive.unwrap().unconfirmed;
        assert_eq!(empty.dispersed_ratio, example.dispersed_ratio);
        assert_eq!(empty.alert_ratio, example.alert_ratio);
        assert_eq!(empty.ratio, example.ratio);
        for (a, b) in [
            (&empty.region, &example.region),
            (&empty.prefix, &example.prefix),
            (&empty.client_ip, &example.client_ip),
            (&empty.user, &example.user),
        ] {
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }
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
    fn an_error_always_says_something() {
        // Found by the config fuzzer: the TOML parser's message for a NUL
        // in a comment is empty.
        let e = parse("#\0").unwrap_err();
        assert_eq!((e.line, e.col), (1, 2));
        assert!(!e.message.trim().is_empty());
        assert!(e.to_string().starts_with("p.toml:1:2: invalid TOML"), "{e}");
    }
}
