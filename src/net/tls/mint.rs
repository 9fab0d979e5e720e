//! [`Minter`]: a loaded local CA that mints short-lived leaf certificates for
//! the hosts the [`HostPolicy`] allows, cached by host.

use std::fmt;
use std::fs;
use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use moka::sync::Cache;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyIdMethod, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use time::{Duration, OffsetDateTime};

use super::ca::CaInfo;
use super::provider;
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
/// The host a freshly loaded CA is test-signed for (see [`Minter::load`]).
const PROBE_HOST: &str = "api.twilio.com";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::test_support::*;
    use crate::net::tls::{CaFiles, MintingResolver};
    use rcgen::DnValue;

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
