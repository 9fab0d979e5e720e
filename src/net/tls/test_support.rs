//! Helpers the TLS unit tests share: a temporary directory, a fresh CA, a
//! minter on it, and certificate parsing.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use x509_parser::prelude::{GeneralName, X509Certificate};

use super::{init_ca, CaFiles, Minter};
use crate::twilio::hosts::HostPolicy;

/// A directory under the system temp dir, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "smsguard-tls-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub(super) fn new_ca() -> (TempDir, CaFiles) {
    let dir = TempDir::new();
    let files = init_ca(&dir.0.join("certs")).unwrap();
    (dir, files)
}

pub(super) fn minter_with(extra: &[&str]) -> (TempDir, Minter) {
    let (dir, files) = new_ca();
    let hosts = HostPolicy::new(extra.iter().map(|s| s.to_string()).collect());
    let m = Minter::load(&files.cert, &files.key, hosts).unwrap();
    (dir, m)
}

pub(super) fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, c) = x509_parser::parse_x509_certificate(der).unwrap();
    assert!(rest.is_empty());
    c
}

pub(super) fn dns_names(c: &X509Certificate<'_>) -> Vec<String> {
    let san = c.subject_alternative_name().unwrap().expect("a SAN");
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            other => format!("not a dNSName: {other:?}"),
        })
        .collect()
}
