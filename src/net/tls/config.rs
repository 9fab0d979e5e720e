//! The rustls glue: [`MintingResolver`] serves minted leaves by SNI,
//! [`server_config`] builds the interception server's config, and
//! [`root_store_with`] trusts a given CA (e.g. a test upstream's).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{provider, Minter};

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
    use crate::net::tls::test_support::*;
    use rustls::pki_types::ServerName;
    use std::fs;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
}
