//! Stage 1: numbers, prefixes and client networks that are never limited.
//!
//! A match skips every later stage; nothing is counted for it.

use std::collections::HashSet;

use ipnet::IpNet;

use super::Attempt;
use crate::config::Config;

pub(crate) struct SafeList {
    numbers: HashSet<String>,
    prefixes: Vec<String>,
    clients: Vec<IpNet>,
}

impl SafeList {
    pub(crate) fn new(config: &Config) -> Self {
        let n = &config.numbers;
        SafeList {
            // Entries were validated at load; normalizing them here lets an
            // operator write "+1 415 555 0100".
            numbers: n
                .safe
                .iter()
                .filter_map(|s| crate::phone::normalize(s, None).ok())
                .map(|d| d.e164)
                .collect(),
            prefixes: n.safe_prefixes.clone(),
            clients: n.safe_clients.clone(),
        }
    }

    /// Why the attempt is safe, if it is.
    pub(crate) fn matches(&self, a: &Attempt) -> Option<String> {
        if self.numbers.contains(&a.to.e164) {
            return Some(format!("{} is on the safe list", a.to.e164));
        }
        if let Some(p) = self
            .prefixes
            .iter()
            .find(|p| a.to.e164.starts_with(p.as_str()))
        {
            return Some(format!("prefix {p} is on the safe list"));
        }
        // Only an end user's address: without `X-SMSGuard-Client-IP` the
        // address is the TCP peer, the app's own server, which sends for
        // every user.
        if !a.end_user_ip {
            return None;
        }
        if let Some(net) = self.clients.iter().find(|n| n.contains(&a.client_ip)) {
            return Some(format!("client {} is in safe network {net}", a.client_ip));
        }
        None
    }
}
