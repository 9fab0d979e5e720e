//! The values a policy writes as text and the sections share: an action,
//! a rate (`5/1h`), a duration as a policy writes it, a limit key
//! (`client_ip+region`) and an amount of money.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

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
        let period = humantime::parse_duration(p.trim()).map_err(|_| {
            format!(
                "rate {s:?}: the period {p:?} is not a duration: write it like 10s, 5m, 1h or 1d"
            )
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::tests::parse;

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
}
