//! The certificate side of TLS interception.
//!
//! In egress-proxy mode an unchanged application sends
//! `CONNECT api.twilio.com:443` to smsguard, which terminates TLS itself so
//! that it can judge the request before re-encrypting it to Twilio. For the
//! application to accept that, smsguard presents a leaf certificate signed by
//! a local CA that the operator created with `smsguard ca init` and told the
//! application to trust. This module:
//!
//! * creates that local CA ([`init_ca`]) and explains how to trust it in each
//!   runtime ([`trust_instructions`]);
//! * loads it and mints short-lived leaf certificates, cached per host
//!   ([`Minter`]);
//! * serves them from a rustls server by SNI ([`MintingResolver`],
//!   [`server_config`]).
//!
//! What it must never do:
//!
//! * mint a certificate for a host the `HostPolicy` does not allow. The CA
//!   is trusted by the application's whole process, so a leaf for any other
//!   name would let smsguard (or whoever controls it) impersonate that name.
//!   Only Twilio's own host names and names the operator listed explicitly are
//!   allowed; never wildcards, never lookalikes.
//! * write over an existing CA. Replacing `ca.key` silently would break every
//!   client that trusts the old `ca.pem`, and overwriting through a planted
//!   symlink could clobber another file, so [`init_ca`] uses `O_EXCL`.
//! * leave the CA key readable by others: `ca.key` is created with mode 0600
//!   from the start (no window between writing and `chmod`).
//! * log or print key material. Errors name files, never their contents.
//!
//! A file per job, everything re-exported here as `crate::net::tls::X`:
//!
//! * `ca.rs`: the local CA: creating it (`ca init`) and reading a CA
//!   certificate back for [`Minter::load`];
//! * `trust.rs`: how to trust the CA in each runtime;
//! * `mint.rs`: [`Minter`]: loading the CA, minting leaves, the cache;
//! * `config.rs`: the rustls glue: the resolver by SNI, the server config,
//!   a root store for a test upstream.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

mod ca;
mod config;
mod mint;
#[cfg(test)]
mod test_support;
mod trust;

pub use ca::{init_ca, CaFiles};
pub use config::{root_store_with, server_config, MintingResolver};
pub use mint::Minter;
pub use trust::trust_instructions;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
