//! The TOML policy file: its shape, its defaults, and its errors.
//!
//! Every value is checked while it is read, so a mistake is reported as
//! `FILE:LINE:COL: message` pointing at the value itself. Nothing here is
//! ever read through a map that could hide a duplicate, and a key the guard
//! does not know is an error, never silently ignored: a typo in a policy
//! file must not switch a protection off.
//!
//! One file per part: the sections of the file (`network`, `stages`,
//! `adaptive`, `budget`, `store`, `telemetry`, `reconcile`), the values they share
//! (`values`), their defaults and deserialization helpers, reading a file
//! with errors placed where they are (`load`), and the summary
//! `smsguard check` prints (`summary`). Every type is named
//! `config::Type`, wherever in the folder it is defined.

mod adaptive;
mod budget;
mod defaults;
mod deserialize;
mod load;
mod network;
mod reconcile;
mod stages;
mod store;
mod summary;
mod telemetry;
mod values;

use serde::Deserialize;

pub use adaptive::{Adaptive, Distinct, Surge, Unconfirmed, BULK_MAX};
pub use budget::{Balance, Budget, OnError, Prices, RegionCaps};
pub use load::ConfigError;
pub use network::{Admin, Ca, Egress, Listen, Upstream};
pub use reconcile::{Reconcile, ReconcileCredential, RECONCILE_MIN};
pub use stages::{Actions, Backoff, Geo, Limit, Numbers, Shadow};
pub use store::{Store, StoreOnError};
pub use telemetry::{Alerts, Audit, Log, LogFormat};
pub use values::{Action, KeyPart, KeySpec, Money, Rate, Short};

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
    pub reconcile: Option<Reconcile>,
}

impl Config {
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
}
