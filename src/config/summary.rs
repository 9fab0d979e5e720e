//! What `smsguard check` prints of a policy: each section's effective
//! settings, durations and sizes as a policy writes them.

use super::{Config, OnError, Rate, Short};

impl Config {
    /// A short description of the effective policy.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        let _ = writeln!(
            s,
            "  listen      {}{}{} max_body={}",
            self.listen.addr,
            if self.listen.tls { " tls" } else { "" },
            if self.listen.proxy { " proxy" } else { "" },
            bytes(self.listen.max_body)
        );
        let _ = writeln!(
            s,
            "  upstream    api={} verify={} timeout={}",
            self.upstream.api,
            self.upstream.verify,
            Short(self.upstream.timeout)
        );
        let store = if let Some(url) = &self.store.redis {
            // The URL never holds a password (refused when loading).
            format!("redis {}", url.get_ref())
        } else if let Some(seeds) = &self.store.redis_cluster {
            format!("redis cluster ({} seeds)", seeds.get_ref().len())
        } else {
            "memory (this process only)".to_string()
        };
        let _ = writeln!(
            s,
            "  store       {store}{}",
            if self.store.shared() {
                format!(
                    " on_error={} timeout={} near_cache={}",
                    self.store.on_error.as_str(),
                    Short(self.store.timeout),
                    Short(self.store.near_cache)
                )
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "  actions     default={} invalid={}",
            self.actions.default.as_str(),
            self.actions.invalid.as_str()
        );
        let _ = writeln!(
            s,
            "  geo         allow={} deny={} no_region={}",
            list(self.geo.allow.iter().map(|r| r.to_string()).collect()),
            list(self.geo.deny.iter().map(|r| r.to_string()).collect()),
            if self.geo.allow_no_region {
                "allowed"
            } else {
                "blocked"
            }
        );
        let _ = writeln!(
            s,
            "  numbers     block_types={} safe={} safe_prefixes={} safe_clients={} client_ipv6_prefix=/{}",
            list(
                self.numbers
                    .block_types
                    .iter()
                    .map(|t| t.as_str().to_string())
                    .collect()
            ),
            self.numbers.safe.len(),
            self.numbers.safe_prefixes.len(),
            self.numbers.safe_clients.len(),
            self.numbers.client_ipv6_prefix
        );
        match &self.backoff {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "  backoff     free={} base={} factor={} max={} reset_after={}{}",
                    b.free,
                    Short(b.base),
                    b.factor,
                    Short(b.max),
                    Short(b.reset_after),
                    b.hold_up_to
                        .map(|h| format!(" hold_up_to={}", Short(h)))
                        .unwrap_or_default()
                );
            }
            None => s.push_str("  backoff     off\n"),
        }
        for l in &self.limits {
            let rates: Vec<String> = l.rates.iter().map(|r| r.to_string()).collect();
            let _ = writeln!(
                s,
                "  limit       {} key={} rates={}{}{}",
                l.name.get_ref(),
                l.key,
                rates.join(","),
                l.block
                    .map(|b| format!(" block={} escalate={}", Short(b), l.escalate))
                    .unwrap_or_default(),
                l.action
                    .map(|a| format!(" action={}", a.as_str()))
                    .unwrap_or_default()
            );
        }
        match &self.budget {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "  budget      hourly={} daily={} {} default price={} regions priced={} region caps={}",
                    b.hourly.map_or("-".into(), |m| m.to_string()),
                    b.daily.map_or("-".into(), |m| m.to_string()),
                    b.currency,
                    b.prices.default,
                    b.prices.by_region.len(),
                    b.regions.len()
                );
            }
            None => s.push_str("  budget      off\n"),
        }
        match &self.adaptive {
            Some(a) => {
                let rates = |r: &[Rate]| {
                    r.iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let _ = writeln!(
                    s,
                    "  adaptive    prefixes=cc+{:?} block=number less its last {} digits grace={} unconfirmed ratio={} (set for {} unanswered) floors prefix={} region={} client_ip={} user={}; surge window={} floor={}x{}/digit region={}; distinct client_ip={} user={} regions={}; broad=region and prefixes {}+ digits shorter than the block: alert={} (ratio {}) range block={} dispersed ratio={}; vouch={} min_confirm_delay={} bulk={}{}",
                    a.prefixes,
                    a.block_digits,
                    Short(a.grace),
                    a.unconfirmed.ratio,
                    a.unconfirmed.usual,
                    rates(&a.unconfirmed.prefix),
                    rates(&a.unconfirmed.region),
                    rates(&a.unconfirmed.client_ip),
                    rates(&a.unconfirmed.user),
                    Short(a.surge.window),
                    a.surge.floor,
                    a.surge.per_digit,
                    a.surge.region,
                    rates(&a.distinct.client_ip),
                    rates(&a.distinct.user),
                    a.distinct.regions,
                    a.broad_digits,
                    Short(a.alert),
                    a.unconfirmed.alert_ratio,
                    Short(a.alert_block),
                    a.unconfirmed.dispersed_ratio,
                    Short(a.vouch),
                    Short(a.min_confirm_delay),
                    if a.bulk == 0 {
                        "off".to_string()
                    } else {
                        format!("{} numbers in {}", a.bulk, Short(a.bulk_window))
                    },
                    match a.action {
                        Some(act) => format!(" action={}", act.as_str()),
                        None => String::new(),
                    }
                );
            }
            None => s.push_str("  adaptive    off\n"),
        }
        match &self.balance {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "  balance     min={} refresh={} on_error={}",
                    b.min,
                    Short(b.refresh),
                    match b.on_error {
                        OnError::Allow => "allow",
                        OnError::Block => "block",
                    }
                );
            }
            None => s.push_str("  balance     off\n"),
        }
        match &self.reconcile {
            Some(r) => {
                let _ = writeln!(
                    s,
                    "  reconcile   account={} credential={} interval={} settle={} capacity={} page_size={}",
                    r.account,
                    r.credential_source(),
                    Short(r.interval),
                    Short(r.settle),
                    r.capacity,
                    r.page_size
                );
            }
            None => s.push_str("  reconcile   off\n"),
        }
        let _ = writeln!(
            s,
            "  shadow      timing={} default_latency={} window={} retention={} capacity={}",
            if self.shadow.timing { "on" } else { "off" },
            Short(self.shadow.default_latency),
            self.shadow.window,
            Short(self.shadow.retention),
            self.shadow.capacity
        );
        s
    }
}

/// A byte size as the policy file writes it: `64KiB`, `1MiB`, `100B`.
fn bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{}MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{}KiB", n / KIB)
    } else {
        format!("{n}B")
    }
}
