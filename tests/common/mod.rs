//! Test harness: the real guard on port 0 in front of an in-process fake
//! Twilio that records what reached it, on a manual clock.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use smsguard::base::clock::ManualClock;
use smsguard::config::Config;
use smsguard::guard::Guard;
use smsguard::twilio::fake::FakeTwilio;

/// A fresh scratch directory for one test: unique within the test
/// process (its id and a counter), emptied if a former run left it.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "smsguard-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
/// Basic base64("AC0123456789abcdef0123456789abcdef:planted-auth-token-7f3a")
pub const AUTH: &str =
    "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjpwbGFudGVkLWF1dGgtdG9rZW4tN2YzYQ==";
pub const MESSAGES: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

pub struct Env {
    pub fake: FakeTwilio,
    pub guard: Guard,
    pub clock: ManualClock,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Starts a fake Twilio and a guard with `policy` (TOML; listen and upstream
/// are filled in).
pub async fn start(policy: &str) -> Env {
    let fake = FakeTwilio::start().await.expect("fake twilio starts");
    start_with(fake, policy).await
}

pub async fn start_with(fake: FakeTwilio, policy: &str) -> Env {
    let upstream = section(policy, "upstream");
    let mut text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{}\n[upstream]\n",
        section(policy, "listen")
    );
    for key in ["api", "verify"] {
        if !upstream.lines().any(|l| l.trim_start().starts_with(key)) {
            text.push_str(&format!("{key} = \"{}\"\n", fake.url()));
        }
    }
    text.push_str(&upstream);
    // Fake answers are paced like Twilio's unless a test is about that.
    let shadow = section(policy, "shadow");
    let default_timing = if shadow.contains("timing") {
        ""
    } else {
        "timing = false\n"
    };
    text.push_str(&format!("[shadow]\n{default_timing}{shadow}\n"));
    text.push_str(&without(policy, &["listen", "upstream", "shadow"]));
    let config = Config::parse(Path::new("test.toml"), &text)
        .unwrap_or_else(|e| panic!("test policy: {e}\n{text}"));
    let clock = ManualClock::starting_now();
    let guard = Guard::start(config, Arc::new(clock.clone()))
        .await
        .expect("guard starts");
    let client = Client::builder(TokioExecutor::new()).build_http();
    Env {
        fake,
        guard,
        clock,
        client,
    }
}

/// A guard in egress-proxy mode (`listen.proxy`) with its own CA in `dir`,
/// in front of a TLS fake Twilio answering for api.twilio.com and
/// verify.twilio.com (reached through `upstream.resolve` and trusted
/// through `upstream.extra_ca`). `policy` is added (its `[listen]` lines
/// join the proxy's). Returns the guard and its CA certificate.
pub async fn start_proxy(dir: &Path, policy: &str) -> (Env, std::path::PathBuf) {
    use smsguard::net::tls::{self, Minter};
    use smsguard::twilio::hosts::HostPolicy;
    let guard_ca = tls::init_ca(&dir.join("guard")).unwrap();
    let up_ca = tls::init_ca(&dir.join("upstream")).unwrap();
    let up = Minter::load(&up_ca.cert, &up_ca.key, HostPolicy::new(vec![])).unwrap();
    let fake = FakeTwilio::start_tls(tls::server_config(Arc::new(up)).unwrap())
        .await
        .unwrap();
    let addr = fake.addr();
    let policy = format!(
        "{policy}\n[listen]\nproxy = true\n[ca]\ncert = \"{}\"\nkey = \"{}\"\n[upstream]\napi = \"https://api.twilio.com\"\nverify = \"https://verify.twilio.com\"\nextra_ca = \"{}\"\nresolve = {{ \"api.twilio.com\" = \"{addr}\", \"verify.twilio.com\" = \"{addr}\" }}\n",
        guard_ca.cert.display(),
        guard_ca.key.display(),
        up_ca.cert.display(),
    );
    (start_with(fake, &policy).await, guard_ca.cert)
}

/// Body lines of `[name]` in `policy` (so tests may add keys to listen/upstream).
fn section(policy: &str, name: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in policy.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = t == format!("[{name}]");
            continue;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn without(policy: &str, names: &[&str]) -> String {
    let mut out = String::new();
    let mut skip = false;
    for line in policy.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            skip = names.iter().any(|n| t == format!("[{n}]"));
        }
        if !skip {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

impl Env {
    pub async fn request(&self, req: Request<Full<Bytes>>) -> Answer {
        let resp = self.client.request(req).await.expect("guard answers");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.guard.url(), path)
    }

    /// A form POST to `path` with the test credentials.
    pub async fn post_form(&self, path: &str, form: &str) -> Answer {
        self.post_with(path, form, &[]).await
    }

    pub async fn post_with(&self, path: &str, form: &str, headers: &[(&str, &str)]) -> Answer {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", AUTH);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.request(b.body(Full::new(Bytes::from(form.to_string()))).unwrap())
            .await
    }

    /// A Messages create to `to` with a one-time code of its own (the
    /// same text to many numbers would be a broadcast, which the adaptive
    /// stage does not judge).
    pub async fn send(&self, to: &str) -> Answer {
        let form = format!(
            "To={}&From=%2B15017122661&Body=Your+code+is+{}",
            to.replace('+', "%2B"),
            next_code()
        );
        self.post_form(MESSAGES, &form).await
    }

    pub async fn send_from_ip(&self, to: &str, ip: &str) -> Answer {
        let form = format!(
            "To={}&From=%2B15017122661&Body=Your+code+is+{}",
            to.replace('+', "%2B"),
            next_code()
        );
        self.post_with(MESSAGES, &form, &[("x-smsguard-client-ip", ip)])
            .await
    }

    pub fn upstream_count(&self) -> usize {
        self.fake.count()
    }
}

/// A six-digit code, different for each send of a test process.
pub fn next_code() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    100_000 + NEXT.fetch_add(7_919, std::sync::atomic::Ordering::Relaxed) % 900_000
}

/// The JSON schema properties of a component in the contract.
pub fn schema_properties(file: &str, component: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/twilio-contract")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["components"]["schemas"][component]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no schema {component}"))
        .keys()
        .cloned()
        .collect()
}

pub mod receiver;
pub mod redis;
