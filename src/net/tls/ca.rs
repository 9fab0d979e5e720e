//! The local CA: `ca init` creates it ([`init_ca`], never over an existing
//! one, the key mode 0600 from the start), and [`CaInfo`] reads a CA
//! certificate back for [`Minter::load`](super::Minter::load).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

use super::provider;

/// CA lifetime and backdating used by [`init_ca`].
const CA_LIFETIME: Duration = Duration::days(3650);
const CA_BACKDATE: Duration = Duration::days(1);

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
/// ECDSA P-256, CN `smsguard local CA <random hex>`, CA with pathlen 0, key
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
/// What `load` needs from the CA certificate.
pub(super) struct CaInfo {
    pub(super) subject: DistinguishedName,
    pub(super) spki: Vec<u8>,
    pub(super) ski: Option<Vec<u8>>,
    pub(super) not_after: OffsetDateTime,
}

impl CaInfo {
    pub(super) fn parse(der: &[u8]) -> Result<CaInfo, String> {
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::test_support::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use std::os::unix::fs::PermissionsExt;

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
}
