//! The official Twilio SDKs (twilio-python 9.x, twilio-node 6.x) against the
//! real guard. `.ci/run` installs them into `.venv` and
//! `tests/sdk/node_modules`; with `CI=true` a missing SDK fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use regex::Regex;
use serde_json::Value;

const ALLOWED: &str = "+14155550123";
const BLOCKED: &str = "+998993941234";
const SERVICE: &str = "VA0123456789abcdef0123456789abcdef";
const GEO: &str = "[geo]\nallow = [\"US\", \"CA\", \"GB\", \"IE\"]\n";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The tool, or None when it is missing outside CI (inside CI: a failure).
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
    eprintln!(
        "skipping: {what} is missing at {} (run .ci/run to install it)",
        path.display()
    );
    None
}

fn python() -> Option<PathBuf> {
    required(
        root().join(".venv/bin/python"),
        "twilio-python (virtualenv)",
    )
}

fn node_sdk() -> Option<PathBuf> {
    required(
        root().join("tests/sdk/node_modules/twilio/package.json"),
        "twilio-node",
    )
}

/// Runs an SDK driver with `env`; returns its JSON output.
async fn drive(program: PathBuf, script: &str, env: Vec<(&'static str, String)>) -> Value {
    let out = tokio::task::spawn_blocking({
        let script = root().join("tests/sdk").join(script);
        move || {
            let mut c = Command::new(program);
            c.arg(script).current_dir(root().join("tests/sdk"));
            for k in [
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "http_proxy",
                "https_proxy",
                "NO_PROXY",
                "no_proxy",
            ] {
                c.env_remove(k);
            }
            c.env("ALLOWED_TO", ALLOWED)
                .env("BLOCKED_TO", BLOCKED)
                .env("VERIFY_SERVICE", SERVICE);
            for (k, v) in env {
                c.env(k, v);
            }
            c.output().expect("the SDK driver runs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stderr}\n{stdout}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

/// What every SDK mode must show: the allowed message is Twilio's own
/// resource, the blocked one a fake the SDK cannot tell apart, and Verify
/// shadowed too; the upstream saw only the allowed send.
fn assert_outcome(env: &Env, out: &Value, message_class: &str, verification_class: &str) {
    let seen = env.fake.requests();
    assert_eq!(
        seen.len(),
        1,
        "only the allowed send reached Twilio: {seen:?}"
    );
    let body = String::from_utf8_lossy(&seen[0].body).into_owned();
    assert!(body.contains("To=%2B14155550123"), "{body}");
    assert_eq!(
        seen[0].headers["authorization"], AUTH,
        "credentials passed through"
    );

    let sid = Regex::new("^SM[0-9a-f]{32}$").unwrap();
    let allowed = &out["allowed"];
    assert!(sid.is_match(allowed["sid"].as_str().unwrap()), "{out}");
    assert_eq!(allowed["to"], ALLOWED);
    assert!(
        env.guard
            .app()
            .fakes
            .get(allowed["sid"].as_str().unwrap())
            .is_none(),
        "the allowed answer came from upstream"
    );

    let blocked = &out["blocked"];
    assert_eq!(blocked["type"], message_class);
    assert!(sid.is_match(blocked["sid"].as_str().unwrap()), "{out}");
    assert_eq!(blocked["status"], "queued");
    assert_eq!(blocked["to"], BLOCKED);
    assert!(
        env.guard
            .app()
            .fakes
            .get(blocked["sid"].as_str().unwrap())
            .is_some(),
        "the guard made it"
    );

    let v = &out["verify"];
    assert_eq!(v["type"], verification_class);
    assert!(
        Regex::new("^VE[0-9a-f]{32}$")
            .unwrap()
            .is_match(v["sid"].as_str().unwrap()),
        "{out}"
    );
    assert_eq!(v["status"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_python_in_base_url_mode() {
    let Some(py) = python() else { return };
    let env = start(GEO).await;
    let out = drive(py, "send.py", vec![("SMSGUARD_URL", env.guard.url())]).await;
    assert_outcome(&env, &out, "MessageInstance", "VerificationInstance");
}

/// Every decision was judged under the end user the SDK named, and the
/// context headers never reached Twilio.
fn assert_end_user(env: &Env) {
    let recent = env
        .guard
        .app()
        .watch
        .activity
        .recent(&smsguard::telemetry::activity::Filter {
            limit: 10,
            ..Default::default()
        });
    assert_eq!(recent.len(), 3, "{recent:?}");
    for d in &recent {
        assert_eq!(
            (d.client_ip.as_str(), d.user.as_str()),
            ("203.0.113.77", "alice"),
            "{d:?}"
        );
    }
    for r in env.fake.requests() {
        assert!(
            !r.headers.contains_key("x-smsguard-client-ip")
                && !r.headers.contains_key("x-smsguard-user"),
            "context headers reached Twilio: {:?}",
            r.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdks_name_the_end_user_with_a_custom_http_client() {
    let end_user = |url: String| {
        vec![
            ("SMSGUARD_URL", url),
            ("END_USER_IP", "203.0.113.77".to_string()),
            ("END_USER", "alice".to_string()),
        ]
    };
    if let Some(py) = python() {
        let env = start(GEO).await;
        let out = drive(py, "send.py", end_user(env.guard.url())).await;
        assert_outcome(&env, &out, "MessageInstance", "VerificationInstance");
        assert_end_user(&env);
    }
    if node_sdk().is_some() {
        let env = start(GEO).await;
        let out = drive("node".into(), "send.js", end_user(env.guard.url())).await;
        assert_outcome(&env, &out, "MessageInstance", "VerificationInstance");
        assert_end_user(&env);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_node_in_base_url_mode() {
    if node_sdk().is_none() {
        return;
    }
    let env = start(GEO).await;
    let out = drive(
        "node".into(),
        "send.js",
        vec![("SMSGUARD_URL", env.guard.url())],
    )
    .await;
    assert_outcome(&env, &out, "MessageInstance", "VerificationInstance");
}
