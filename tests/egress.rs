//! Zero code change: the guard as an egress proxy (CONNECT + TLS minted from
//! a local CA), in front of a TLS fake Twilio reached through
//! `upstream.resolve` and `upstream.extra_ca`, driven by raw sockets and by
//! the official SDKs with only their environment changed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::*;
use rustls::pki_types::ServerName;

use smsguard::net::tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GEO: &str = "[geo]\nallow = [\"US\", \"CA\", \"GB\", \"IE\"]\n";

struct Egress {
    env: Env,
    dir: PathBuf,
    guard_ca: PathBuf,
}

impl Drop for Egress {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "smsguard-{tag}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

/// A guard in proxy mode with its own CA, forwarding to a TLS fake Twilio
/// that answers for api.twilio.com and verify.twilio.com.
async fn egress(extra: &str) -> Egress {
    let dir = temp_dir("egress");
    let (env, guard_ca) = start_proxy(&dir, &format!("{GEO}{extra}")).await;
    Egress { env, dir, guard_ca }
}

/// Sends a request head on a fresh connection and returns the status line.
async fn status_line(addr: std::net::SocketAddr, head: &str) -> (String, TcpStream) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    (text.lines().next().unwrap_or("").to_string(), s)
}

#[tokio::test]
async fn connect_to_anything_but_twilio_is_refused() {
    let e = egress("").await;
    let addr = e.env.guard.addr();
    for target in [
        "example.com:443",
        "api.twilio.com:80",
        "api.twilio.com.evil.com:443",
        "127.0.0.1:22",
    ] {
        let (line, _) = status_line(
            addr,
            &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
        )
        .await;
        assert!(line.contains(" 403 "), "CONNECT {target}: {line}");
    }
    // The refusal says how to let the app's other HTTPS calls by.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "the head ends");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("a body length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    let body = String::from_utf8(body).unwrap();
    assert!(body.contains("NO_PROXY=example.com"), "{body}");
    assert!(
        body.contains(r#"egress.tunnel = ["example.com:443"]"#),
        "{body}"
    );
    let (line, _) = status_line(
        addr,
        "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
    )
    .await;
    assert!(
        line.contains(" 403 "),
        "absolute-form to another host: {line}"
    );
    assert_eq!(e.env.upstream_count(), 0);
}

#[tokio::test]
async fn a_listed_tunnel_target_gets_a_blind_tunnel() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
    });
    let e = egress(&format!("[egress]\ntunnel = [\"{echo_addr}\"]\n")).await;
    let (line, mut s) = status_line(
        e.env.guard.addr(),
        &format!("CONNECT {echo_addr} HTTP/1.1\r\nHost: {echo_addr}\r\n\r\n"),
    )
    .await;
    assert!(line.contains(" 200 "), "{line}");
    s.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
}

#[tokio::test]
async fn a_connect_to_twilio_is_intercepted_with_a_minted_certificate_that_chains_to_the_ca() {
    let e = egress("").await;
    let (line, tcp) = status_line(
        e.env.guard.addr(),
        "CONNECT api.twilio.com:443 HTTP/1.1\r\nHost: api.twilio.com:443\r\n\r\n",
    )
    .await;
    assert!(line.contains(" 200 "), "{line}");
    // Trust only the guard's CA.
    let roots = tls::root_store_with(&std::fs::read(&e.guard_ca).unwrap()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let mut tls = connector
        .connect(ServerName::try_from("api.twilio.com").unwrap(), tcp)
        .await
        .expect("the minted certificate is trusted through the local CA");
    let chain = tls.get_ref().1.peer_certificates().unwrap().to_vec();
    let (_, leaf) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
    let ca_pem = std::fs::read(&e.guard_ca).unwrap();
    let (_, ca_der) = x509_parser::pem::parse_x509_pem(&ca_pem).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der.contents).unwrap();
    leaf.verify_signature(Some(ca.public_key()))
        .expect("signed by the local CA");
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(format!("{:?}", san.value.general_names).contains("api.twilio.com"));

    // A blocked send inside the tunnel is shadowed; Twilio sees nothing.
    let body = "To=%2B998993941234&Body=x";
    let req = format!(
        "POST {MESSAGES} HTTP/1.1\r\nHost: api.twilio.com\r\nAuthorization: {AUTH}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    tls.read_to_string(&mut resp).await.unwrap_or_default();
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    assert!(resp.contains("\"sid\": \"SM"), "{resp}");
    assert_eq!(e.env.upstream_count(), 0);
}

// ---------------------------------------------------------------- the official SDKs

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn required(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{what} is missing at {}: .ci/run installs it",
            path.display()
        );
    }
    eprintln!("skipping: {what} is missing at {}", path.display());
    None
}

async fn drive(
    program: PathBuf,
    script: &str,
    env: Vec<(&'static str, String)>,
) -> serde_json::Value {
    let script = root().join("tests/sdk").join(script);
    let out = tokio::task::spawn_blocking(move || {
        let mut c = Command::new(program);
        c.arg(&script).current_dir(root().join("tests/sdk"));
        for k in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "NO_PROXY",
            "no_proxy",
            "SMSGUARD_URL",
        ] {
            c.env_remove(k);
        }
        c.env("ALLOWED_TO", "+14155550123")
            .env("BLOCKED_TO", "+998993941234")
            .env("VERIFY_SERVICE", "VA0123456789abcdef0123456789abcdef");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "SDK driver failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

fn assert_sdk_outcome(e: &Egress, out: &serde_json::Value) {
    let seen = e.env.fake.requests();
    assert_eq!(
        seen.len(),
        1,
        "only the allowed send reached Twilio: {seen:?}"
    );
    assert_eq!(
        seen[0].host.as_deref(),
        Some("api.twilio.com"),
        "forwarded to the host the SDK asked for"
    );
    assert!(String::from_utf8_lossy(&seen[0].body).contains("To=%2B14155550123"));
    assert_eq!(seen[0].headers["authorization"], AUTH);
    let app = e.env.guard.app();
    assert!(
        app.fakes
            .get(out["allowed"]["sid"].as_str().unwrap())
            .is_none(),
        "{out}"
    );
    assert_eq!(out["blocked"]["type"], "MessageInstance");
    assert_eq!(out["blocked"]["status"], "queued");
    assert!(
        app.fakes
            .get(out["blocked"]["sid"].as_str().unwrap())
            .is_some(),
        "{out}"
    );
    assert_eq!(out["verify"]["status"], "pending");
    assert!(
        out["verify"]["sid"].as_str().unwrap().starts_with("VE"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_python_with_only_https_proxy_and_requests_ca_bundle() {
    let Some(py) = required(
        root().join(".venv/bin/python"),
        "twilio-python (virtualenv)",
    ) else {
        return;
    };
    let e = egress("").await;
    // REQUESTS_CA_BUNDLE replaces certifi's roots: give it both, as the
    // README tells operators to.
    let certifi = Command::new(&py).args(["-m", "certifi"]).output().unwrap();
    let certifi = String::from_utf8(certifi.stdout).unwrap();
    let mut bundle = std::fs::read(certifi.trim()).unwrap();
    bundle.extend(std::fs::read(&e.guard_ca).unwrap());
    let bundle_path = e.dir.join("bundle.pem");
    std::fs::write(&bundle_path, bundle).unwrap();
    let out = drive(
        py,
        "send.py",
        vec![
            ("HTTPS_PROXY", e.env.guard.url()),
            ("REQUESTS_CA_BUNDLE", bundle_path.display().to_string()),
        ],
    )
    .await;
    assert_sdk_outcome(&e, &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_node_with_only_http_proxy_and_node_extra_ca_certs() {
    if required(
        root().join("tests/sdk/node_modules/twilio/package.json"),
        "twilio-node",
    )
    .is_none()
    {
        return;
    }
    let e = egress("").await;
    let out = drive(
        "node".into(),
        "send.js",
        vec![
            // twilio-node reads HTTP_PROXY, not HTTPS_PROXY, even for HTTPS.
            ("HTTP_PROXY", e.env.guard.url()),
            ("NODE_EXTRA_CA_CERTS", e.guard_ca.display().to_string()),
        ],
    )
    .await;
    assert_sdk_outcome(&e, &out);
}

#[tokio::test]
async fn the_tls_listener_serves_minted_certificates_by_sni_with_h2_and_http1() {
    let dir = temp_dir("tlslisten");
    let ca = tls::init_ca(&dir).unwrap();
    let env = start(&format!(
        "{GEO}[listen]\ntls = true\n[ca]\ncert = \"{}\"\nkey = \"{}\"\n",
        ca.cert.display(),
        ca.key.display()
    ))
    .await;
    let roots = tls::root_store_with(&std::fs::read(&ca.cert).unwrap()).unwrap();
    let connect = |alpn: Vec<Vec<u8>>, host: &'static str| {
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        client.alpn_protocols = alpn;
        let addr = env.guard.addr();
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(client))
                .connect(ServerName::try_from(host).unwrap(), tcp)
                .await
        }
    };
    let h2 = connect(vec![b"h2".to_vec(), b"http/1.1".to_vec()], "api.twilio.com")
        .await
        .unwrap();
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h1 = connect(vec![b"http/1.1".to_vec()], "api.twilio.com")
        .await
        .unwrap();
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(
        connect(vec![], "example.com").await.is_err(),
        "no certificate for other hosts"
    );
    let body = "To=%2B998993941234&Body=x";
    let req = format!(
        "POST {MESSAGES} HTTP/1.1\r\nHost: api.twilio.com\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    h1.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    h1.read_to_string(&mut resp).await.unwrap_or_default();
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    assert_eq!(env.upstream_count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
