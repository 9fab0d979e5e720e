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
//! * mint a certificate for a host the [`HostPolicy`] does not allow. The CA
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

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use moka::sync::Cache;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::{Duration, OffsetDateTime};

use crate::twilio::hosts::{normalize_host, HostPolicy};

/// How many distinct hosts keep a minted certificate. Twilio's regional forms
/// make the allowed set open-ended (any edge/region label), so the cache must
/// be bounded; 1,000 is far above what one deployment talks to.
const CACHE_CAPACITY: u64 = 1_000;
/// Leaf lifetime. Short, because a leaf cannot be revoked: nobody checks CRLs
/// for a private CA.
const LEAF_LIFETIME: Duration = Duration::days(7);
/// Leaves start an hour in the past so that a client whose clock is slightly
/// behind ours still accepts them.
const LEAF_BACKDATE: Duration = Duration::hours(1);
/// A cached leaf is replaced after this long, well before it expires.
const CACHE_TTL: StdDuration = StdDuration::from_secs(6 * 24 * 60 * 60);
/// Never serve a cached leaf that has less than this left to live (matters
/// only when the CA itself expires within the week and the leaf was clamped).
const MIN_REMAINING: Duration = Duration::hours(1);
/// CA lifetime and backdating used by [`init_ca`].
const CA_LIFETIME: Duration = Duration::days(3650);
const CA_BACKDATE: Duration = Duration::days(1);
/// The host a freshly loaded CA is test-signed for (see [`Minter::load`]).
const PROBE_HOST: &str = "api.twilio.com";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------------------
// `ca init`
// ---------------------------------------------------------------------------

/// Result of `ca init`: where the CA certificate and key were written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFiles {
    /// `ca.pem`: the certificate, to be trusted by the application.
    pub cert: PathBuf,
    /// `ca.key`: the PKCS#8 private key, mode 0600, for smsguard only.
    pub key: PathBuf,
}

/// Creates a new local CA in `dir` (creating `dir` if needed): `ca.pem` (the
/// certificate) and `ca.key` (PKCS#8 PEM, created with mode 0600).
///
/// Refuses, writing nothing, if either file already exists. The CA is
/// ECDSA P-256, CN "smsguard local CA <random hex>", CA with pathlen 0, key
/// usages keyCertSign + cRLSign, valid from a day ago for 10 years.
pub fn init_ca(dir: &Path) -> Result<CaFiles, String> {
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    for p in [&cert_path, &key_path] {
        // symlink_metadata: a dangling symlink also counts as "exists".
        if fs::symlink_metadata(p).is_ok() {
            return Err(format!(
                "{} already exists; refusing to overwrite an existing CA \
                 (move it away first if you really want a new one: every client \
                 trusting the old ca.pem must then be updated)",
                p.display()
            ));
        }
    }
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;

    // Build everything in memory first so that a failure writes nothing.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("generating the CA key: {e}"))?;
    // The random suffix tells apart CAs created on different machines (or
    // re-created), which matters when someone has to find which one to trust.
    let mut suffix = [0u8; 4];
    provider()
        .secure_random
        .fill(&mut suffix)
        .map_err(|_| "no randomness for the CA name".to_string())?;
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("smsguard local CA {}", hex(&suffix)),
    );
    dn.push(DnType::OrganizationName, "smsguard");
    params.distinguished_name = dn;
    // pathlen 0: this CA signs leaves only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - CA_BACKDATE;
    params.not_after = now + CA_LIFETIME;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("signing the CA certificate: {e}"))?;
    let cert_pem = cert.pem();
    let key_pem = key.serialize_pem();

    // The key first, with O_EXCL and 0600 from creation: it is never readable
    // by others, not even for a moment, and a file or symlink planted in the
    // meantime makes this fail instead of being written through.
    write_new(&key_path, key_pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&cert_path, cert_pem.as_bytes(), 0o644) {
        // Leave nothing half-made: the key we just created is useless alone.
        let _ = fs::remove_file(&key_path);
        return Err(e);
    }
    Ok(CaFiles {
        cert: cert_path,
        key: key_path,
    })
}

/// Creates `path` exclusively with `mode` and writes `data` to disk.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    let written = f.write_all(data).and_then(|()| f.sync_all());
    if let Err(e) = written {
        drop(f);
        let _ = fs::remove_file(path);
        return Err(format!("writing {}: {e}", path.display()));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// Trust instructions
// ---------------------------------------------------------------------------

/// Quotes `s` for a POSIX shell if it needs it.
fn sh(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/._-+:=@%,".contains(&c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Host and port of a proxy URL such as `http://127.0.0.1:8080`, for Java's
/// separate host/port properties.
fn proxy_host_port(url: &str) -> Option<(String, String)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = authority.rsplit_once(':')?;
    if host.is_empty() || port.is_empty() || !port.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.to_string()))
}

/// Text printed after `ca init`: how to make each runtime trust `ca_pem` and
/// send its Twilio traffic through the proxy at `proxy_url`.
///
/// Paths are shown as given: pass an absolute `ca_pem` so that the php.ini
/// and JVM lines work from any working directory. Bundles are placed next to
/// `ca_pem` (`bundle.pem`, `system-bundle.pem`, `truststore.jks`).
pub fn trust_instructions(ca_pem: &Path, proxy_url: &str) -> String {
    let dir = ca_pem.parent().unwrap_or_else(|| Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let ca = sh(&ca_pem.display().to_string());
    let bundle = sh(&dir.join("bundle.pem").display().to_string());
    let sys_bundle = sh(&dir.join("system-bundle.pem").display().to_string());
    let truststore = sh(&dir.join("truststore.jks").display().to_string());
    let proxy = sh(proxy_url);
    let (jhost, jport) =
        proxy_host_port(proxy_url).unwrap_or_else(|| ("PROXY_HOST".into(), "PROXY_PORT".into()));
    format!(
        r#"Local CA certificate: {ca}
Trust it ONLY in the application that talks to Twilio, and keep ca.key
secret: anyone holding it can impersonate any site to a client that trusts
ca.pem. smsguard only mints certificates for Twilio's hosts and names
you configured explicitly.

Every client: send HTTPS through the proxy
  export HTTPS_PROXY={proxy}

Python (twilio-python / requests)
  REQUESTS_CA_BUNDLE REPLACES certifi's public roots, so point it at a bundle
  of certifi's roots plus this CA (rebuild it when certifi is upgraded):
  cat "$(python -m certifi)" {ca} > {bundle}
  export REQUESTS_CA_BUNDLE={bundle}

Node.js (twilio-node)
  NODE_EXTRA_CA_CERTS ADDS to Node's roots (read once, at process start):
  export NODE_EXTRA_CA_CERTS={ca}
  twilio-node reads HTTP_PROXY, not HTTPS_PROXY, even for HTTPS requests:
  export HTTP_PROXY={proxy}

Go (twilio-go; net/http honours HTTPS_PROXY)
  SSL_CERT_FILE REPLACES the system roots, so use a bundle:
  cat /etc/ssl/certs/ca-certificates.crt {ca} > {sys_bundle}
  export SSL_CERT_FILE={sys_bundle}
  or add the CA to the system store (see C# below).

Java (twilio-java; the JVM ignores HTTPS_PROXY)
  Import the CA into a COPY of the JDK truststore:
  cp "$JAVA_HOME/lib/security/cacerts" {truststore}
  keytool -importcert -noprompt -alias smsguard -file {ca} \
    -keystore {truststore} -storepass changeit
  java -Djavax.net.ssl.trustStore={truststore} \
    -Djavax.net.ssl.trustStorePassword=changeit \
    -Dhttps.proxyHost={jhost} -Dhttps.proxyPort={jport} ...
  (If your HTTP client is built without system properties, set the proxy on
  it explicitly.)

Ruby (twilio-ruby; honours HTTPS_PROXY)
  SSL_CERT_FILE replaces OpenSSL's default roots, so use the system bundle:
  cat /etc/ssl/certs/ca-certificates.crt {ca} > {sys_bundle}
  export SSL_CERT_FILE={sys_bundle}

PHP (twilio-php / curl; honours HTTPS_PROXY)
  In php.ini: curl.cainfo = {sys_bundle}   (the bundle built above)
  or per handle: curl_setopt($ch, CURLOPT_CAINFO, '{sys_bundle_raw}');
  PHP-FPM's clear_env (on by default) drops HTTPS_PROXY: set it in the pool
  config: env[HTTPS_PROXY] = {proxy_raw}

C# / .NET on Linux (HttpClient honours HTTPS_PROXY)
  Add the CA to the system store:
  sudo cp {ca} /usr/local/share/ca-certificates/smsguard.crt
  sudo update-ca-certificates

Check (should print an HTTP status from Twilio, not a certificate error):
  curl -sS -o /dev/null -w '%{{http_code}}\n' --proxy {proxy} --cacert {ca} \
    https://api.twilio.com/2010-04-01.json
"#,
        sys_bundle_raw = dir.join("system-bundle.pem").display(),
        proxy_raw = proxy_url,
    )
}

// ---------------------------------------------------------------------------
// Minting
// ---------------------------------------------------------------------------

/// A cached leaf and when it must be replaced at the latest.
#[derive(Clone)]
struct Cached {
    key: Arc<CertifiedKey>,
    /// Past this instant the leaf has less than [`MIN_REMAINING`] to live.
    stale_at: Instant,
}

/// A loaded CA that mints leaf certificates, cached by host.
pub struct Minter {
    ca_key: KeyPair,
    /// rcgen's view of the CA, used only as the issuer of leaves: its subject
    /// is the CA's subject, re-encoded; `load` proves it matches byte for byte.
    issuer: rcgen::Certificate,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    ca_not_after: OffsetDateTime,
    /// Whether the CA has a subjectKeyIdentifier for leaves to point at.
    ca_has_ski: bool,
    hosts: HostPolicy,
    provider: Arc<CryptoProvider>,
    cache: Cache<String, Cached>,
    minted: AtomicU64,
}

impl fmt::Debug for Minter {
    // Hand-written so that no key material can ever end up in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minter")
            .field("ca_not_after", &self.ca_not_after)
            .field("hosts", &self.hosts)
            .field("cached", &self.cache.entry_count())
            .field("minted", &self.minted())
            .finish_non_exhaustive()
    }
}

impl Minter {
    /// Loads `cert` (PEM, exactly one certificate) and `key` (PKCS#8 PEM).
    ///
    /// Every problem is an error naming the file: missing or unreadable, not
    /// PEM, not a CA, expired, a key that does not belong to the certificate.
    /// Before returning, a test leaf is minted and verified against the CA the
    /// way a client would, so a CA that loads is one whose leaves are accepted.
    pub fn load(cert: &Path, key: &Path, hosts: HostPolicy) -> Result<Minter, String> {
        let cd = cert.display();
        let kd = key.display();

        // --- the certificate
        let cert_bytes = fs::read(cert).map_err(|e| format!("reading CA certificate {cd}: {e}"))?;
        let mut ca_ders = Vec::new();
        let mut reader: &[u8] = &cert_bytes;
        loop {
            match pem::from_buf(&mut reader as &mut dyn BufRead) {
                Ok(Some((SectionKind::Certificate, der))) => ca_ders.push(der),
                Ok(Some((
                    SectionKind::PrivateKey
                    | SectionKind::RsaPrivateKey
                    | SectionKind::EcPrivateKey,
                    _,
                ))) => {
                    // ca_pem() is meant to be handed to clients: refuse a file
                    // that would hand them the key too.
                    return Err(format!(
                        "CA certificate {cd} contains a private key; it must hold only \
                         the certificate (the key belongs in its own 0600 file)"
                    ));
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Err(format!("CA certificate {cd} is not valid PEM: {e}")),
            }
        }
        let ca_der = match ca_ders.len() {
            1 => ca_ders.remove(0),
            0 => {
                return Err(format!(
                    "CA certificate {cd} holds no PEM certificate \
                     (expected -----BEGIN CERTIFICATE-----)"
                ))
            }
            n => {
                return Err(format!(
                    "CA certificate {cd} holds {n} certificates; expected exactly one, \
                     the CA that signs the leaves"
                ))
            }
        };
        let ca_pem = String::from_utf8(cert_bytes)
            .map_err(|_| format!("CA certificate {cd} is not valid PEM: not UTF-8 text"))?;
        let ca = CaInfo::parse(&ca_der).map_err(|e| format!("CA certificate {cd}: {e}"))?;

        // --- the key
        let key_bytes = fs::read(key).map_err(|e| format!("reading CA key {kd}: {e}"))?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| match e {
            pem::Error::NoItemsFound => format!(
                "CA key {kd} holds no PEM private key (expected -----BEGIN PRIVATE KEY-----)"
            ),
            other => format!("CA key {kd} is not valid PEM: {other}"),
        })?;
        if !matches!(key_der, PrivateKeyDer::Pkcs8(_)) {
            return Err(format!(
                "CA key {kd} is not PKCS#8; convert it with \
                 `openssl pkcs8 -topk8 -nocrypt -in OLD -out NEW`"
            ));
        }
        let ca_key =
            KeyPair::try_from(&key_der).map_err(|e| format!("CA key {kd} cannot be used: {e}"))?;
        drop(key_der);
        if ca_key.public_key_der() != ca.spki {
            return Err(format!(
                "CA key {kd} does not match CA certificate {cd} (different public keys)"
            ));
        }

        // --- the issuer as rcgen sees it
        let mut params = CertificateParams::default();
        params.distinguished_name = ca.subject;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_identifier_method = match &ca.ski {
            Some(ski) => KeyIdMethod::PreSpecified(ski.clone()),
            None => KeyIdMethod::Sha256,
        };
        let issuer = params
            .self_signed(&ca_key)
            .map_err(|e| format!("CA key {kd} cannot sign: {e}"))?;

        let minter = Minter {
            ca_key,
            issuer,
            ca_der: CertificateDer::from(ca_der),
            ca_pem,
            ca_not_after: ca.not_after,
            ca_has_ski: ca.ski.is_some(),
            hosts,
            provider: provider(),
            cache: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(CACHE_TTL)
                .build(),
            minted: AtomicU64::new(0),
        };
        minter
            .probe()
            .map_err(|e| format!("CA {cd} + {kd} cannot issue usable certificates: {e}"))?;
        Ok(minter)
    }

    /// Mints a leaf for [`PROBE_HOST`] and verifies it with rustls' own
    /// WebPKI verifier against a root store holding only this CA: catches an
    /// issuer name that did not survive re-encoding, a CA whose key usage
    /// forbids signing, and anything else a client would reject.
    fn probe(&self) -> Result<(), String> {
        let leaf = self.mint(PROBE_HOST)?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .map_err(|e| format!("not usable as a trust anchor: {e}"))?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| e.to_string())?;
        let (end_entity, intermediates) = match leaf.cert.split_first() {
            Some(split) => split,
            None => return Err("empty chain".into()),
        };
        let name = ServerName::try_from(PROBE_HOST).map_err(|e| e.to_string())?;
        verifier
            .verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| format!("a test leaf does not verify: {e}"))
    }

    /// Mints a new leaf for the (already normalized and allowed) `host`.
    fn mint(&self, host: &str) -> Result<Arc<CertifiedKey>, String> {
        let now = OffsetDateTime::now_utc();
        let not_after = std::cmp::min(now + LEAF_LIFETIME, self.ca_not_after);
        if not_after <= now + MIN_REMAINING {
            return Err("the CA has expired or is about to".into());
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        let san = rcgen::Ia5String::try_from(host).map_err(|e| e.to_string())?;
        params.subject_alt_names = vec![SanType::DnsName(san)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - LEAF_BACKDATE;
        params.not_after = not_after;
        params.use_authority_key_identifier_extension = self.ca_has_ski;
        let cert = params
            .signed_by(&key, &self.issuer, &self.ca_key)
            .map_err(|e| e.to_string())?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let chain = vec![cert.der().clone(), self.ca_der.clone()];
        let certified =
            CertifiedKey::from_der(chain, key_der, &self.provider).map_err(|e| e.to_string())?;
        Ok(Arc::new(certified))
    }

    /// A certificate for `host` (lowercased, trailing dot removed): ECDSA
    /// P-256, SAN and CN = host, EKU serverAuth, valid from an hour ago for 7
    /// days (never past the CA), chain = [leaf, CA]. Served from a bounded
    /// cache whose entries are replaced after 6 days. `None` if the policy
    /// does not allow `host`, or minting failed (e.g. the CA has expired).
    pub fn certified_key(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        if !self.hosts.allows(host) {
            return None;
        }
        let host = normalize_host(host)?;
        if let Some(hit) = self.cache.get(&host) {
            if Instant::now() < hit.stale_at {
                return Some(hit.key);
            }
            self.cache.invalidate(&host);
        }
        // optionally_get_with runs one mint per host even when many handshakes
        // for the same new host arrive together; the others wait for it.
        self.cache
            .optionally_get_with(host.clone(), || {
                let key = self.mint(&host).ok()?;
                self.minted.fetch_add(1, Ordering::Relaxed);
                // When the leaf was clamped to the CA's expiry, stop serving it
                // shortly before it dies; otherwise the cache TTL acts first.
                let left = self.ca_not_after - OffsetDateTime::now_utc() - MIN_REMAINING;
                let left = StdDuration::try_from(left).unwrap_or(StdDuration::ZERO);
                let stale_at = Instant::now()
                    .checked_add(left.min(CACHE_TTL))
                    .unwrap_or_else(Instant::now);
                Some(Cached { key, stale_at })
            })
            .map(|c| c.key)
    }

    /// The CA certificate as read from `ca.pem` (checked to hold exactly one
    /// certificate and no key), e.g. to offer it for download.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// How many leaves were minted (not served from the cache). The load-time
    /// test leaf is not counted.
    pub fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }
}

/// What `load` needs from the CA certificate.
struct CaInfo {
    subject: DistinguishedName,
    spki: Vec<u8>,
    ski: Option<Vec<u8>>,
    not_after: OffsetDateTime,
}

impl CaInfo {
    fn parse(der: &[u8]) -> Result<CaInfo, String> {
        use x509_parser::extensions::ParsedExtension;
        let (rest, x) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
        if !rest.is_empty() {
            return Err("trailing data after the certificate".into());
        }
        match x.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            Ok(_) => return Err("not a CA certificate (basicConstraints CA is not true)".into()),
            Err(e) => return Err(format!("bad basicConstraints: {e}")),
        }
        match x.key_usage() {
            Ok(Some(ku)) if !ku.value.key_cert_sign() => {
                return Err("its key usage does not include keyCertSign".into())
            }
            Ok(_) => {}
            Err(e) => return Err(format!("bad keyUsage: {e}")),
        }
        let now = OffsetDateTime::now_utc();
        let validity = x.validity();
        let not_before = validity.not_before.to_datetime();
        let not_after = validity.not_after.to_datetime();
        if now < not_before {
            return Err(format!("not valid yet (starts {not_before})"));
        }
        if now >= not_after {
            return Err(format!("expired on {not_after}"));
        }
        let ski = x
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            });
        Ok(CaInfo {
            subject: subject_to_rcgen(x.subject())?,
            spki: x.public_key().raw.to_vec(),
            ski,
            not_after,
        })
    }
}

/// Re-expresses the CA's subject for rcgen, which writes it as each leaf's
/// issuer. rcgen keeps one value per attribute type and one attribute per
/// RDN, so names outside that shape are refused here rather than producing
/// leaves whose issuer does not match (the probe in `load` double-checks).
fn subject_to_rcgen(name: &x509_parser::x509::X509Name<'_>) -> Result<DistinguishedName, String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let unsupported = |why: &str| format!("unsupported subject name: {why}");
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err(unsupported("an RDN without exactly one attribute"));
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| unsupported("an attribute type OID too large"))?
            .collect();
        let ty = DnType::from_oid(&oid);
        if dn.get(&ty).is_some() {
            return Err(unsupported("a repeated attribute type"));
        }
        let value = attr.attr_value();
        let data = value.data;
        let text = || std::str::from_utf8(data).map_err(|_| unsupported("a non-UTF-8 string"));
        let bad = |e: rcgen::Error| unsupported(&e.to_string());
        let v = match value.header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?.to_string()),
            Tag::PrintableString => DnValue::PrintableString(text()?.try_into().map_err(bad)?),
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(bad)?),
            Tag::T61String => DnValue::TeletexString(text()?.try_into().map_err(bad)?),
            Tag::BmpString => {
                DnValue::BmpString(rcgen::BmpString::from_utf16be(data.to_vec()).map_err(bad)?)
            }
            Tag::UniversalString => DnValue::UniversalString(
                rcgen::UniversalString::from_utf32be(data.to_vec()).map_err(bad)?,
            ),
            _ => return Err(unsupported("an attribute value of an unusual string type")),
        };
        dn.push(ty, v);
    }
    Ok(dn)
}

// ---------------------------------------------------------------------------
// rustls glue
// ---------------------------------------------------------------------------

/// rustls certificate resolver: picks the certificate by SNI via the
/// [`Minter`]. No SNI, or a host the policy does not allow, gives `None`, and
/// rustls then fails the handshake.
///
/// `resolve` is synchronous and runs on the connection's task: a mint costs
/// a key generation plus a signature, which is why leaves are cached.
#[derive(Debug, Clone)]
pub struct MintingResolver {
    minter: Arc<Minter>,
}

impl MintingResolver {
    /// A resolver serving certificates from `minter`.
    pub fn new(minter: Arc<Minter>) -> Self {
        MintingResolver { minter }
    }
}

impl ResolvesServerCert for MintingResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.minter.certified_key(client_hello.server_name()?)
    }
}

/// A rustls `ServerConfig` on the ring provider (TLS 1.2 and 1.3) whose
/// certificates come from `minter` by SNI, offering ALPN `h2` and `http/1.1`.
///
/// Errors only if the ring provider cannot do the default protocol versions,
/// which does not happen with rustls 0.23 as configured here.
pub fn server_config(minter: Arc<Minter>) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS server configuration: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(MintingResolver::new(minter)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A root store holding the PEM certificates in `extra_ca_pem` (and nothing
/// else), e.g. to trust a test upstream's CA. Errors if the text holds no
/// certificate, is not valid PEM, or a certificate is not a usable anchor.
pub fn root_store_with(extra_ca_pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(extra_ca_pem) {
        let cert = cert.map_err(|e| format!("CA bundle is not valid PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA bundle holds an unusable certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("CA bundle holds no PEM certificate".into());
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use x509_parser::prelude::{GeneralName, X509Certificate};

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
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

    fn new_ca() -> (TempDir, CaFiles) {
        let dir = TempDir::new();
        let files = init_ca(&dir.0.join("certs")).unwrap();
        (dir, files)
    }

    fn minter_with(extra: &[&str]) -> (TempDir, Minter) {
        let (dir, files) = new_ca();
        let hosts = HostPolicy::new(extra.iter().map(|s| s.to_string()).collect());
        let m = Minter::load(&files.cert, &files.key, hosts).unwrap();
        (dir, m)
    }

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        let (rest, c) = x509_parser::parse_x509_certificate(der).unwrap();
        assert!(rest.is_empty());
        c
    }

    fn dns_names(c: &X509Certificate<'_>) -> Vec<String> {
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

    // --- ca init

    #[test]
    fn init_ca_writes_a_ca_with_a_private_key() {
        let (_dir, files) = new_ca();
        let mode = fs::metadata(&files.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "ca.key mode {mode:o}");
        let key = fs::read_to_string(&files.key).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));

        let pem = fs::read(&files.cert).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        let ca = parse(&der);
        let bc = ca.basic_constraints().unwrap().expect("basicConstraints");
        assert!(bc.critical);
        assert!(bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = ca.key_usage().unwrap().expect("keyUsage").value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert!(!ku.digital_signature());
        let cn = ca.subject().iter_common_name().next().unwrap();
        let cn = cn.as_str().unwrap();
        assert!(cn.starts_with("smsguard local CA "), "{cn}");
        assert_eq!(cn.len(), "smsguard local CA ".len() + 8);
        // Self-signed, valid now, ~10 years, backdated a day.
        ca.verify_signature(None).unwrap();
        assert!(ca.validity().is_valid());
        let now = OffsetDateTime::now_utc();
        let nb = ca.validity().not_before.to_datetime();
        let na = ca.validity().not_after.to_datetime();
        assert!(nb <= now - Duration::hours(23), "{nb}");
        assert!(na >= now + Duration::days(3649), "{na}");
        // P-256.
        assert_eq!(
            ca.public_key().algorithm.algorithm.to_id_string(),
            "1.2.840.10045.2.1"
        );
    }

    #[test]
    fn init_ca_refuses_to_overwrite() {
        let (dir, files) = new_ca();
        let cert = fs::read(&files.cert).unwrap();
        let key = fs::read(&files.key).unwrap();
        let e = init_ca(&dir.0.join("certs")).unwrap_err();
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(fs::read(&files.cert).unwrap(), cert);
        assert_eq!(fs::read(&files.key).unwrap(), key);

        // Either file alone blocks it too, and nothing else is written.
        let d2 = dir.0.join("only-key");
        fs::create_dir_all(&d2).unwrap();
        fs::write(d2.join("ca.key"), b"mine").unwrap();
        assert!(init_ca(&d2).is_err());
        assert!(!d2.join("ca.pem").exists());
        assert_eq!(fs::read(d2.join("ca.key")).unwrap(), b"mine");

        let d3 = dir.0.join("only-cert");
        fs::create_dir_all(&d3).unwrap();
        fs::write(d3.join("ca.pem"), b"mine").unwrap();
        assert!(init_ca(&d3).is_err());
        assert!(!d3.join("ca.key").exists());
    }

    #[test]
    fn write_new_never_replaces_a_file() {
        // O_EXCL is what closes the race between init_ca's existence check
        // and the write; check it on its own.
        let dir = TempDir::new();
        let p = dir.0.join("ca.key");
        fs::write(&p, b"first").unwrap();
        assert!(write_new(&p, b"second", 0o600).is_err());
        assert_eq!(fs::read(&p).unwrap(), b"first");
    }

    #[test]
    fn init_ca_refuses_a_dangling_symlink() {
        let dir = TempDir::new();
        let target = dir.0.join("elsewhere");
        std::os::unix::fs::symlink(&target, dir.0.join("ca.key")).unwrap();
        assert!(init_ca(&dir.0).is_err());
        assert!(!target.exists());
    }

    #[test]
    fn two_cas_have_different_names_and_keys() {
        let (_a, fa) = new_ca();
        let (_b, fb) = new_ca();
        assert_ne!(fs::read(&fa.key).unwrap(), fs::read(&fb.key).unwrap());
        let ca = fs::read(&fa.cert).unwrap();
        let cb = fs::read(&fb.cert).unwrap();
        let (da, db) = (
            CertificateDer::from_pem_slice(&ca).unwrap(),
            CertificateDer::from_pem_slice(&cb).unwrap(),
        );
        assert_ne!(parse(&da).subject().as_raw(), parse(&db).subject().as_raw());
    }

    // --- minting

    #[test]
    fn minted_leaf_chains_to_the_ca_and_names_the_host() {
        let (_dir, m) = minter_with(&[]);
        let ck = m.certified_key("API.Twilio.com.").expect("allowed");
        assert_eq!(ck.cert.len(), 2, "chain = [leaf, ca]");
        let ca_der = CertificateDer::from_pem_slice(m.ca_pem().as_bytes()).unwrap();
        assert_eq!(ck.cert[1], ca_der);
        let ca = parse(&ca_der);
        let leaf = parse(&ck.cert[0]);

        leaf.verify_signature(Some(ca.public_key())).unwrap();
        assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
        assert_eq!(dns_names(&leaf), vec!["api.twilio.com".to_string()]);
        let cn = leaf.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "api.twilio.com");
        assert!(leaf.validity().is_valid());
        let eku = leaf.extended_key_usage().unwrap().expect("EKU").value;
        assert!(eku.server_auth);
        assert!(!eku.client_auth && !eku.any);
        let bc = leaf.basic_constraints().unwrap().expect("basicConstraints");
        assert!(!bc.value.ca);

        // Validity: from about an hour ago, at most 7 days, inside the CA's.
        let now = OffsetDateTime::now_utc();
        let nb = leaf.validity().not_before.to_datetime();
        let na = leaf.validity().not_after.to_datetime();
        assert!(nb <= now - Duration::minutes(59) && nb >= now - Duration::minutes(61));
        assert!(
            na <= now + Duration::days(7) && na >= now + Duration::days(7) - Duration::minutes(1)
        );
        assert!(na <= ca.validity().not_after.to_datetime());

        // The leaf's own key signs, and is not the CA's.
        assert!(ck.keys_match().is_ok());
        assert_ne!(leaf.public_key().raw, ca.public_key().raw);
    }

    #[test]
    fn second_request_is_served_from_the_cache() {
        let (_dir, m) = minter_with(&[]);
        assert_eq!(m.minted(), 0, "the load-time probe is not counted");
        let a = m.certified_key("api.twilio.com").unwrap();
        assert_eq!(m.minted(), 1);
        // Same host, spelled differently: still one entry.
        let b = m.certified_key("API.twilio.com.").unwrap();
        assert_eq!(m.minted(), 1);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.cert[0], b.cert[0]);
        let c = m.certified_key("verify.twilio.com").unwrap();
        assert_eq!(m.minted(), 2);
        assert_ne!(a.cert[0], c.cert[0]);
    }

    #[test]
    fn concurrent_requests_for_a_new_host_mint_once() {
        let (_dir, m) = minter_with(&[]);
        let m = Arc::new(m);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || m.certified_key("api.ie1.twilio.com").unwrap())
            })
            .collect();
        let keys: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(m.minted(), 1);
        assert!(keys.iter().all(|k| Arc::ptr_eq(k, &keys[0])));
    }

    #[test]
    fn hosts_not_allowed_get_nothing() {
        let (_dir, m) = minter_with(&["upstream.test"]);
        for h in [
            "example.com",
            "api.twilio.com.evil.com",
            "evil-twilio.com",
            "*.twilio.com",
            "",
            "upstream.test.evil",
        ] {
            assert!(m.certified_key(h).is_none(), "{h:?}");
        }
        assert_eq!(m.minted(), 0);
        let ck = m
            .certified_key("Upstream.Test")
            .expect("configured extra host");
        assert_eq!(dns_names(&parse(&ck.cert[0])), vec!["upstream.test"]);
        // The regional form gets its own name, not api.twilio.com's.
        let ck = m.certified_key("api.sydney.au1.twilio.com").unwrap();
        assert_eq!(
            dns_names(&parse(&ck.cert[0])),
            vec!["api.sydney.au1.twilio.com"]
        );
    }

    #[test]
    fn minter_debug_shows_no_key_material() {
        let (_dir, files) = new_ca();
        let m = Minter::load(&files.cert, &files.key, HostPolicy::new(vec![])).unwrap();
        let _ = m.certified_key("api.twilio.com");
        let m = Arc::new(m);
        let text = format!("{m:?} {:?}", MintingResolver::new(m.clone()));
        let key = fs::read_to_string(&files.key).unwrap();
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!text.contains(&body[..20]));
        assert!(!text.to_lowercase().contains("private"));
    }

    // --- load errors

    #[test]
    fn load_reports_a_missing_file_by_name() {
        let (dir, files) = new_ca();
        let missing = dir.0.join("nope.pem");
        let e = Minter::load(&missing, &files.key, HostPolicy::new(vec![])).unwrap_err();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        assert!(e.contains("certificate"), "{e}");
        let missing = dir.0.join("nope.key");
        let e = Minter::load(&files.cert, &missing, HostPolicy::new(vec![])).unwrap_err();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        assert!(e.contains("key"), "{e}");
    }

    #[test]
    fn load_rejects_a_key_from_another_ca() {
        let (_a, fa) = new_ca();
        let (_b, fb) = new_ca();
        let e = Minter::load(&fa.cert, &fb.key, HostPolicy::new(vec![])).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        assert!(e.contains(&fb.key.display().to_string()), "{e}");
        assert!(e.contains(&fa.cert.display().to_string()), "{e}");
    }

    #[test]
    fn load_rejects_files_that_are_not_what_they_should_be() {
        let (dir, files) = new_ca();
        let junk = dir.0.join("junk");
        fs::write(&junk, b"hello, not PEM\n").unwrap();
        let e = Minter::load(&junk, &files.key, HostPolicy::new(vec![])).unwrap_err();
        assert!(
            e.contains(&junk.display().to_string()) && e.contains("no PEM"),
            "{e}"
        );
        let e = Minter::load(&files.cert, &junk, HostPolicy::new(vec![])).unwrap_err();
        assert!(
            e.contains(&junk.display().to_string()) && e.contains("no PEM"),
            "{e}"
        );

        // Swapped arguments.
        let e = Minter::load(&files.key, &files.cert, HostPolicy::new(vec![])).unwrap_err();
        assert!(e.contains(&files.key.display().to_string()), "{e}");

        // A certificate file that also carries the key must not be served.
        let both = dir.0.join("both.pem");
        let mut text = fs::read(&files.cert).unwrap();
        text.extend(fs::read(&files.key).unwrap());
        fs::write(&both, &text).unwrap();
        let e = Minter::load(&both, &files.key, HostPolicy::new(vec![])).unwrap_err();
        assert!(e.contains("contains a private key"), "{e}");

        // Two certificates.
        let two = dir.0.join("two.pem");
        let mut text = fs::read(&files.cert).unwrap();
        text.extend(fs::read(&files.cert).unwrap());
        fs::write(&two, &text).unwrap();
        let e = Minter::load(&two, &files.key, HostPolicy::new(vec![])).unwrap_err();
        assert!(e.contains("2 certificates"), "{e}");

        // Broken base64 inside a PEM block.
        let broken = dir.0.join("broken.pem");
        fs::write(
            &broken,
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = Minter::load(&broken, &files.key, HostPolicy::new(vec![])).unwrap_err();
        assert!(e.contains(&broken.display().to_string()), "{e}");

        // Valid PEM, but not a certificate inside.
        let garbage = dir.0.join("garbage.pem");
        fs::write(
            &garbage,
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = Minter::load(&garbage, &files.key, HostPolicy::new(vec![])).unwrap_err();
        assert!(e.contains("not a valid X.509"), "{e}");
    }

    /// Writes a certificate made by rcgen from `params` and its key.
    fn write_ca(dir: &Path, params: CertificateParams) -> CaFiles {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let files = CaFiles {
            cert: dir.join("other.pem"),
            key: dir.join("other.key"),
        };
        fs::write(&files.cert, cert.pem()).unwrap();
        fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn load_rejects_a_certificate_that_is_not_a_ca() {
        let dir = TempDir::new();
        let params = CertificateParams::new(vec!["api.twilio.com".to_string()]).unwrap();
        let files = write_ca(&dir.0, params);
        let e = Minter::load(&files.cert, &files.key, HostPolicy::new(vec![])).unwrap_err();
        assert!(e.contains("not a CA"), "{e}");
    }

    #[test]
    fn load_rejects_an_expired_ca() {
        let dir = TempDir::new();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = OffsetDateTime::now_utc() - Duration::days(30);
        params.not_after = OffsetDateTime::now_utc() - Duration::days(1);
        let files = write_ca(&dir.0, params);
        let e = Minter::load(&files.cert, &files.key, HostPolicy::new(vec![])).unwrap_err();
        assert!(e.contains("expired"), "{e}");
    }

    #[test]
    fn leaves_never_outlive_the_ca() {
        let dir = TempDir::new();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = OffsetDateTime::now_utc() - Duration::days(30);
        let ca_end = OffsetDateTime::now_utc() + Duration::days(2);
        params.not_after = ca_end;
        let files = write_ca(&dir.0, params);
        let m = Minter::load(&files.cert, &files.key, HostPolicy::new(vec![])).unwrap();
        let ck = m.certified_key("api.twilio.com").unwrap();
        let na = parse(&ck.cert[0]).validity().not_after.to_datetime();
        assert!(
            na <= ca_end && na >= ca_end - Duration::seconds(2),
            "{na} vs {ca_end}"
        );
    }

    #[test]
    fn loads_a_ca_with_a_richer_subject_and_no_key_identifier() {
        let dir = TempDir::new();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CountryName,
            DnValue::PrintableString("NZ".try_into().unwrap()),
        );
        dn.push(DnType::OrganizationName, "Ōtautahi Widgets");
        dn.push(DnType::CommonName, "Ops CA");
        params.distinguished_name = dn;
        let files = write_ca(&dir.0, params);
        let m = Minter::load(&files.cert, &files.key, HostPolicy::new(vec![])).unwrap();
        let ck = m.certified_key("api.twilio.com").unwrap();
        let ca = parse(&ck.cert[1]);
        let leaf = parse(&ck.cert[0]);
        assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
        leaf.verify_signature(Some(ca.public_key())).unwrap();
    }

    #[test]
    fn load_rejects_a_ca_whose_key_usage_forbids_signing_certificates() {
        let dir = TempDir::new();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let files = write_ca(&dir.0, params);
        let e = Minter::load(&files.cert, &files.key, HostPolicy::new(vec![])).unwrap_err();
        assert!(e.contains("keyCertSign"), "{e}");
    }

    /// Interop with a CA made by OpenSSL (the common "bring your own CA"
    /// case), when the openssl binary is present.
    #[test]
    fn loads_an_openssl_made_ca() {
        let dir = TempDir::new();
        let (cert, key) = (dir.0.join("ossl.pem"), dir.0.join("ossl.key"));
        let ok = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes",
                "-days",
                "30",
                "-subj",
                "/C=US/O=Acme Corp/CN=Acme Ops CA",
            ])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("openssl not available; skipping");
            return;
        }
        let m = Minter::load(&cert, &key, HostPolicy::new(vec![])).unwrap();
        let ck = m.certified_key("verify.twilio.com").unwrap();
        let ca = parse(&ck.cert[1]);
        let leaf = parse(&ck.cert[0]);
        assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
        leaf.verify_signature(Some(ca.public_key())).unwrap();
    }

    // --- handshakes

    /// Serves `config` on 127.0.0.1 and returns its address; each accepted
    /// connection that completes the handshake gets "ok" written to it.
    async fn serve(config: Arc<rustls::ServerConfig>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tls.write_all(b"ok").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        addr
    }

    fn client(
        roots: rustls::RootCertStore,
        alpn: &[&[u8]],
        sni: bool,
    ) -> tokio_rustls::TlsConnector {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        cfg.enable_sni = sni;
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }

    #[tokio::test]
    async fn real_handshake_by_sni() {
        let (_dir, m) = minter_with(&[]);
        let m = Arc::new(m);
        let roots = root_store_with(m.ca_pem().as_bytes()).unwrap();
        assert_eq!(roots.len(), 1);
        let addr = serve(server_config(m.clone()).unwrap()).await;

        // Allowed host, h2 offered: the handshake succeeds and picks h2.
        let connector = client(roots.clone(), &[b"h2", b"http/1.1"], true);
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("api.twilio.com").unwrap();
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await.unwrap();
        assert_eq!(buf, b"ok");

        // Only HTTP/1.1 offered: it gets HTTP/1.1.
        let connector = client(roots.clone(), &[b"http/1.1"], true);
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("api.dublin.ie1.twilio.com").unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .expect("regional handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

        // A host that is not allowed: no certificate, the handshake fails.
        let connector = client(roots.clone(), &[b"h2"], true);
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("example.com").unwrap();
        assert!(connector.connect(name, tcp).await.is_err());

        // No SNI at all: fails too.
        let connector = client(roots.clone(), &[b"h2"], false);
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("api.twilio.com").unwrap();
        assert!(connector.connect(name, tcp).await.is_err());

        // A client that trusts a different CA rejects our leaf.
        let (_other, other) = new_ca();
        let other_roots = root_store_with(&fs::read(&other.cert).unwrap()).unwrap();
        let connector = client(other_roots, &[b"h2"], true);
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("api.twilio.com").unwrap();
        assert!(connector.connect(name, tcp).await.is_err());

        // Two successful handshakes for two hosts; failures minted nothing.
        assert_eq!(m.minted(), 2);
    }

    #[test]
    fn root_store_with_rejects_text_without_certificates() {
        assert!(root_store_with(b"").is_err());
        assert!(root_store_with(b"not pem at all").is_err());
        let (_dir, files) = new_ca();
        // A key is not a certificate.
        assert!(root_store_with(&fs::read(&files.key).unwrap()).is_err());
        let mut two = fs::read(&files.cert).unwrap();
        let (_d2, f2) = new_ca();
        two.extend(fs::read(&f2.cert).unwrap());
        assert_eq!(root_store_with(&two).unwrap().len(), 2);
    }

    // --- instructions

    #[test]
    fn trust_instructions_cover_each_runtime() {
        let t = trust_instructions(Path::new("certs/ca.pem"), "http://127.0.0.1:8080");
        for needle in [
            "export HTTPS_PROXY=http://127.0.0.1:8080",
            r#"cat "$(python -m certifi)" certs/ca.pem > certs/bundle.pem"#,
            "REQUESTS_CA_BUNDLE=certs/bundle.pem",
            "NODE_EXTRA_CA_CERTS=certs/ca.pem",
            "export HTTP_PROXY=http://127.0.0.1:8080",
            "SSL_CERT_FILE=certs/system-bundle.pem",
            "keytool -importcert",
            "-Djavax.net.ssl.trustStore=certs/truststore.jks",
            "-Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=8080",
            "curl.cainfo",
            "CURLOPT_CAINFO",
            "clear_env",
            "env[HTTPS_PROXY] = http://127.0.0.1:8080",
            "/usr/local/share/ca-certificates/smsguard.crt",
            "update-ca-certificates",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in:\n{t}");
        }
        // Paths with spaces are quoted for the shell.
        let t = trust_instructions(Path::new("/opt/my certs/ca.pem"), "http://[::1]:3128");
        assert!(
            t.contains("NODE_EXTRA_CA_CERTS='/opt/my certs/ca.pem'"),
            "{t}"
        );
        assert!(
            t.contains("-Dhttps.proxyHost=::1 -Dhttps.proxyPort=3128"),
            "{t}"
        );
        // An address without a port still gives usable text.
        let t = trust_instructions(Path::new("ca.pem"), "proxy");
        assert!(t.contains("-Dhttps.proxyPort=PROXY_PORT"), "{t}");
        assert!(
            t.contains("cat \"$(python -m certifi)\" ca.pem > ./bundle.pem"),
            "{t}"
        );
    }

    // --- timings (cargo test --release -- --ignored --nocapture timings)

    #[test]
    #[ignore]
    fn timings() {
        let (_dir, m) = minter_with(&[]);
        let n = 300;
        let t = Instant::now();
        for i in 0..n {
            m.certified_key(&format!("api.r{i}.twilio.com")).unwrap();
        }
        let mint = t.elapsed() / n;
        assert_eq!(m.minted(), u64::from(n));
        let hits = 100_000;
        let t = Instant::now();
        for i in 0..hits {
            m.certified_key(&format!("api.r{}.twilio.com", i % n))
                .unwrap();
        }
        let hit = t.elapsed() / hits;
        assert_eq!(m.minted(), u64::from(n));
        let t = Instant::now();
        let (_d2, files) = new_ca();
        let init = t.elapsed();
        let t = Instant::now();
        let _m2 = Minter::load(&files.cert, &files.key, HostPolicy::new(vec![])).unwrap();
        let load = t.elapsed();
        println!(
            "mint one leaf: {mint:?}; cached lookup: {hit:?}; init_ca: {init:?}; load (with probe): {load:?}"
        );
    }
}
