//! Zero code change on the runtimes under the other official SDKs: an
//! unchanged program posts two sends to `https://api.twilio.com` through the
//! HTTP stack its SDK uses, with only that runtime's own proxy and trust
//! settings pointing at the guard in egress mode (CONNECT + a certificate
//! minted from the guard's CA). Go's `net/http` (twilio-go), Apache
//! HttpClient 4 with system properties (twilio-java), Ruby's `Net::HTTP`
//! and PHP's curl (twilio-php). The SDKs themselves are not installable
//! here; their HTTP layers are, from Debian. `.ci/run` installs them; a
//! missing one fails the test under `CI=true`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use common::*;

const GEO: &str = "[geo]\nallow = [\"US\", \"CA\", \"GB\", \"IE\"]\n";
const ALLOWED: &str = "+14155550123";
const BLOCKED: &str = "+998993941234";

fn dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/runtimes"))
}

/// The runtime's program, or `None` (skipped) when it is not installed and
/// this is not CI.
fn runtime(program: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{program} is missing: .ci/run installs it"
        );
        eprintln!("skipping: {program} is missing");
    }
    found
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        Scratch(temp_dir(&format!("runtime-{tag}")))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd` with a clean proxy environment plus `env`, and reads its
/// `name status base64(body)` lines.
async fn run(mut cmd: Command, env: Vec<(&str, String)>) -> Vec<(String, u16, serde_json::Value)> {
    for k in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "JAVA_TOOL_OPTIONS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("ALLOWED_TO", ALLOWED).env("BLOCKED_TO", BLOCKED);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the program failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let name = parts.next().unwrap().to_string();
            let status = parts.next().unwrap().parse().unwrap();
            let body = base64::engine::general_purpose::STANDARD
                .decode(parts.next().unwrap_or(""))
                .unwrap();
            let json = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
            (name, status, json)
        })
        .collect()
}

/// The allowed send reached Twilio (the fake) as sent, under the host the
/// program asked for; the blocked one got the guard's fake and reached
/// nothing.
fn assert_outcome(env: &Env, sends: &[(String, u16, serde_json::Value)]) {
    assert_eq!(sends.len(), 2, "{sends:?}");
    let (allowed, blocked) = (&sends[0], &sends[1]);
    assert_eq!(
        (allowed.0.as_str(), allowed.1),
        ("allowed", 201),
        "{allowed:?}"
    );
    assert_eq!(
        (blocked.0.as_str(), blocked.1),
        ("blocked", 201),
        "{blocked:?}"
    );
    assert_eq!(blocked.2["to"], BLOCKED, "{blocked:?}");
    assert_eq!(blocked.2["status"], "queued", "{blocked:?}");
    let seen = env.fake.requests();
    assert_eq!(
        seen.len(),
        1,
        "only the allowed send reached Twilio: {seen:?}"
    );
    assert_eq!(seen[0].host.as_deref(), Some("api.twilio.com"));
    assert!(String::from_utf8_lossy(&seen[0].body).contains("To=%2B14155550123"));
    assert_eq!(seen[0].headers["authorization"], AUTH);
    assert_eq!(allowed.2["to"], ALLOWED, "{allowed:?}");
    assert_ne!(allowed.2["sid"], blocked.2["sid"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_net_http_with_only_https_proxy_and_ssl_cert_file() {
    let Some(go) = runtime("go") else { return };
    let s = Scratch::new("go");
    let (env, ca) = start_proxy(&s.0, GEO).await;
    let mut cmd = Command::new(go);
    cmd.arg("run").arg(dir().join("send.go"));
    let sends = run(
        cmd,
        vec![
            ("HTTPS_PROXY", env.guard.url()),
            ("SSL_CERT_FILE", ca.display().to_string()),
            ("GOCACHE", s.0.join("gocache").display().to_string()),
            ("GOPATH", s.0.join("gopath").display().to_string()),
            ("GO111MODULE", "off".into()),
        ],
    )
    .await;
    assert_outcome(&env, &sends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_httpclient4_with_only_system_properties_and_a_keytool_trust_store() {
    let Some(java) = runtime("java") else { return };
    let Some(keytool) = runtime("keytool") else {
        return;
    };
    let jars = ["httpclient", "httpcore", "commons-logging", "commons-codec"]
        .map(|j| PathBuf::from(format!("/usr/share/java/{j}.jar")));
    if let Some(missing) = jars.iter().find(|j| !j.is_file()) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{} is missing: .ci/run installs libhttpclient-java",
            missing.display()
        );
        eprintln!("skipping: {} is missing", missing.display());
        return;
    }
    let s = Scratch::new("java");
    let (env, ca) = start_proxy(&s.0, GEO).await;
    let store = s.0.join("truststore.jks");
    let made = Command::new(keytool)
        .args([
            "-importcert",
            "-noprompt",
            "-alias",
            "smsguard",
            "-storepass",
            "changeit",
        ])
        .arg("-file")
        .arg(&ca)
        .arg("-keystore")
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = env.guard.addr().port();
    let classpath = jars
        .iter()
        .map(|j| j.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mut cmd = Command::new(java);
    // The single-file source launcher: the program as written, unchanged.
    cmd.arg("-cp").arg(classpath).arg(dir().join("Send.java"));
    let sends = run(
        cmd,
        vec![(
            "JAVA_TOOL_OPTIONS",
            format!(
                "-Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort={port} -Djavax.net.ssl.trustStore={} -Djavax.net.ssl.trustStorePassword=changeit",
                store.display()
            ),
        )],
    )
    .await;
    assert_outcome(&env, &sends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ruby_net_http_with_only_lower_case_http_proxy_and_ssl_cert_file() {
    let Some(ruby) = runtime("ruby") else { return };
    let s = Scratch::new("ruby");
    let (env, ca) = start_proxy(&s.0, GEO).await;
    let mut cmd = Command::new(ruby);
    cmd.arg(dir().join("send.rb"));
    let sends = run(
        cmd,
        vec![
            // Net::HTTP asks for the proxy as for an http:// URL: it never
            // reads HTTPS_PROXY (with only that, it goes to Twilio directly).
            ("http_proxy", env.guard.url()),
            ("SSL_CERT_FILE", ca.display().to_string()),
        ],
    )
    .await;
    assert_outcome(&env, &sends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_curl_with_only_https_proxy_and_curl_cainfo() {
    let Some(php) = runtime("php") else { return };
    let s = Scratch::new("php");
    let (env, ca) = start_proxy(&s.0, GEO).await;
    let mut cmd = Command::new(php);
    cmd.arg("-d")
        .arg(format!("curl.cainfo={}", ca.display()))
        .arg(dir().join("send.php"));
    let sends = run(cmd, vec![("HTTPS_PROXY", env.guard.url())]).await;
    assert_outcome(&env, &sends);
}
