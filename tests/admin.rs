//! Seeing and steering an attack: the admin listener (auth, metrics, JSON
//! API, reload), the audit file, and webhook alerts.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::receiver::Receiver;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioExecutor;

const GEO: &str = "[geo]\nallow = [\"US\", \"CA\", \"GB\", \"IE\"]\n";
const TOKEN_ENV: &str = "SMSGUARD_TEST_ADMIN_TOKEN";
const TOKEN: &str = "admin-token-for-tests-3b9d";

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(
        format!(
            "smsguard-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        )
        .replace([' ', '{', '}', ':', ','], ""),
    );
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn admin_env(extra: &str) -> Env {
    std::env::set_var(TOKEN_ENV, TOKEN);
    start(&format!(
        "{GEO}[admin]\naddr = \"127.0.0.1:0\"\ntoken_env = \"{TOKEN_ENV}\"\n{extra}"
    ))
    .await
}

async fn admin(env: &Env, method: Method, path: &str, token: Option<&str>, body: &str) -> Answer {
    let url = format!("http://{}{}", env.guard.admin_addr().unwrap(), path);
    let mut b = Request::builder().method(method).uri(url);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if !body.is_empty() {
        b = b.header("content-type", "application/json");
    }
    env.request(b.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
}

#[tokio::test]
async fn every_admin_route_but_healthz_needs_the_token() {
    let env = admin_env("").await;
    assert_eq!(
        admin(&env, Method::GET, "/healthz", None, "").await.status,
        StatusCode::OK
    );
    for path in [
        "/metrics",
        "/readyz",
        "/api/summary",
        "/api/blocks",
        "/api/decisions",
        "/",
    ] {
        assert_eq!(
            admin(&env, Method::GET, path, None, "").await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            admin(&env, Method::GET, path, Some("wrong"), "")
                .await
                .status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            admin(&env, Method::GET, path, Some(TOKEN), "").await.status,
            StatusCode::OK,
            "{path}"
        );
    }
    // The dashboard opened as /?token= sets an HttpOnly cookie for its calls.
    let r = admin(&env, Method::GET, &format!("/?token={TOKEN}"), None, "").await;
    assert_eq!(r.status, StatusCode::OK);
    let cookie = r.headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
}

#[tokio::test]
async fn the_guard_refuses_an_exposed_admin_address_without_a_token() {
    let text = "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"0.0.0.0:0\"\ntoken_env = \"SMSGUARD_TEST_UNSET_TOKEN_VAR\"\n";
    let config = smsguard::config::Config::parse(std::path::Path::new("t.toml"), text).unwrap();
    let err = smsguard::guard::Guard::start(config, Arc::new(smsguard::base::clock::SystemClock))
        .await
        .err()
        .expect("refused");
    assert!(err.contains("not loopback"), "{err}");
}

#[tokio::test]
async fn metrics_count_sends_by_action_rule_and_region_and_pass_promtool() {
    let env = admin_env("[budget]\nprices = { default = \"0.01\" }\n").await;
    env.send("+998993941234").await;
    env.send("+14155550123").await;
    let r = admin(&env, Method::GET, "/metrics", Some(TOKEN), "").await;
    let text = r.text();
    assert!(text.contains(r#"smsguard_sends_total{product="messaging",action="shadow",stage="number",rule="geo:UZ",region="UZ"} 1"#), "{text}");
    assert!(text.contains(r#"action="allow""#), "{text}");
    assert!(
        text.contains(
            r#"smsguard_upstream_requests_total{endpoint="messages.create",status="201"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains("smsguard_upstream_latency_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains(r#"smsguard_budget_spent{window="day",region="*"} 0.01"#),
        "{text}"
    );
    assert!(
        text.contains(r#"smsguard_cache_entries{table="classifications"}"#),
        "{text}"
    );
    for line in [
        r#"smsguard_connections_closed_total{reason="per_ip"} 0"#,
        r#"smsguard_streams_cut_total{reason="deadline"} 0"#,
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert!(!text.contains("+998993941234"), "no numbers in metrics");

    let promtool = std::path::Path::new("/usr/bin/promtool");
    if !promtool.exists() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "promtool is missing: .ci/run installs the prometheus package"
        );
        eprintln!("skipping the promtool check: promtool is missing");
        return;
    }
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn recent_decisions_can_be_filtered() {
    let env = admin_env("").await;
    env.send("+998993941234").await;
    env.send("+14155550123").await;
    env.send("+447400123456").await;
    let all = admin(&env, Method::GET, "/api/decisions", Some(TOKEN), "")
        .await
        .json();
    assert_eq!(all["decisions"].as_array().unwrap().len(), 3);
    assert_eq!(all["decisions"][0]["to"], "+447400123456", "newest first");
    let shadow = admin(
        &env,
        Method::GET,
        "/api/decisions?action=shadow",
        Some(TOKEN),
        "",
    )
    .await
    .json();
    assert_eq!(shadow["decisions"].as_array().unwrap().len(), 1);
    assert_eq!(shadow["decisions"][0]["rule"], "geo:UZ");
    // The rule's figures, as the decision log has them.
    assert_eq!(shadow["decisions"][0]["detail"], "+998993941234");
    assert_eq!(
        all["decisions"][0]["detail"], "",
        "an allowed send has none"
    );
    let gb = admin(
        &env,
        Method::GET,
        "/api/decisions?region=GB",
        Some(TOKEN),
        "",
    )
    .await
    .json();
    assert_eq!(gb["decisions"][0]["to"], "+447400123456");
    let p = admin(
        &env,
        Method::GET,
        "/api/decisions?prefix=%2B1415",
        Some(TOKEN),
        "",
    )
    .await
    .json();
    assert_eq!(p["decisions"].as_array().unwrap().len(), 1);
    let s = admin(&env, Method::GET, "/api/summary", Some(TOKEN), "")
        .await
        .json();
    assert_eq!(s["totals"]["shadow"], 1);
    assert_eq!(s["totals"]["allow"], 2);
    assert_eq!(s["top_blocked_prefixes"][0]["prefix"], "+99899394");
}

#[tokio::test]
async fn blocks_can_be_added_listed_and_removed() {
    let env = admin_env("").await;
    let r = admin(
        &env,
        Method::POST,
        "/api/blocks",
        Some(TOKEN),
        r#"{"key": "prefix:6", "value": "+141555", "duration": "1h"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["key"], "prefix:6=+141555");
    env.send("+14155550123").await;
    assert_eq!(env.upstream_count(), 0, "blocked by hand");
    let d = admin(&env, Method::GET, "/api/decisions", Some(TOKEN), "")
        .await
        .json();
    assert_eq!(
        (&d["decisions"][0]["stage"], &d["decisions"][0]["detail"]),
        (&"blocks".into(), &"prefix:6=+141555".into()),
        "the block's key: {d}"
    );
    let list = admin(&env, Method::GET, "/api/blocks", Some(TOKEN), "")
        .await
        .json();
    assert_eq!(list["blocks"][0]["key"], "prefix:6=+141555");
    assert_eq!(list["blocks"][0]["rule"], "manual");
    let r = admin(
        &env,
        Method::DELETE,
        "/api/blocks?key=prefix%3A6%3D%2B141555",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    env.send("+14155550123").await;
    assert_eq!(env.upstream_count(), 1);
    let r = admin(
        &env,
        Method::DELETE,
        "/api/blocks?key=prefix%3A6%3D%2B141555",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = admin(
        &env,
        Method::POST,
        "/api/blocks",
        Some(TOKEN),
        r#"{"key": "phone", "value": "x", "duration": "1h"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    for (key, value) in [
        ("region", "UZ"),
        ("client_ip", "203.0.113.9"),
        ("to", "+14155550999"),
    ] {
        let body = format!(r#"{{"key": "{key}", "value": "{value}", "duration": "10m"}}"#);
        assert_eq!(
            admin(&env, Method::POST, "/api/blocks", Some(TOKEN), &body)
                .await
                .status,
            StatusCode::CREATED,
            "{key}"
        );
    }
}

#[tokio::test]
async fn the_safe_list_can_be_edited_at_runtime() {
    let env = admin_env("").await;
    env.send("+998993941234").await;
    assert_eq!(env.upstream_count(), 0);
    let r = admin(
        &env,
        Method::POST,
        "/api/safe",
        Some(TOKEN),
        r#"{"number": "+998993941234"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    env.send("+998993941234").await;
    assert_eq!(env.upstream_count(), 1, "safe now");
    admin(
        &env,
        Method::DELETE,
        "/api/safe",
        Some(TOKEN),
        r#"{"number": "+998993941234"}"#,
    )
    .await;
    env.send("+998993941234").await;
    assert_eq!(env.upstream_count(), 1, "no longer safe");
}

#[tokio::test]
async fn reload_swaps_the_policy_and_a_bad_file_keeps_the_running_one() {
    let dir = temp_dir("reload");
    let file = dir.join("policy.toml");
    std::fs::write(&file, "[geo]\nallow = [\"US\"]\n").unwrap();
    let env = admin_env("").await;
    env.guard.app().set_config_path(file.clone());
    let r = admin(&env, Method::POST, "/api/reload", Some(TOKEN), "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    env.send("+447400123456").await;
    assert_eq!(env.upstream_count(), 0, "GB is no longer allowed");
    std::fs::write(&file, "[geo]\nallow = [\"US\", \"GB\"]\nbogus = 1\n").unwrap();
    let r = admin(&env, Method::POST, "/api/reload", Some(TOKEN), "").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let e = r.json()["error"].as_str().unwrap().to_string();
    assert!(e.contains("policy.toml:3:1:"), "{e}");
    env.send("+447400123457").await;
    assert_eq!(env.upstream_count(), 0, "still the running policy");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_reload_that_would_weaken_the_policy_is_refused_unless_asked_for() {
    let (url, got) = receiver(0).await;
    let dir = temp_dir("weaker");
    let file = dir.join("policy.toml");
    let full =
        "[geo]\nallow = [\"US\"]\n[[limit]]\nname = \"number\"\nkey = \"to\"\nrates = [\"5/1h\"]\n";
    std::fs::write(&file, full).unwrap();
    let env = admin_env(&format!("[alerts]\nwebhook = \"{url}\"\n")).await;
    env.guard.app().set_config_path(file.clone());
    let r = admin(&env, Method::POST, "/api/reload", Some(TOKEN), "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // What an editor or a config tool may leave behind for a moment: an
    // empty file, comments only, a file cut off before its limit.
    for (text, says) in [
        ("", "judges nothing"),
        ("# being rewritten\n\n", "judges nothing"),
        ("[geo]\nallow = [\"US\"]\n", "[[limit]] number"),
        (
            "[[limit]]\nname = \"number\"\nkey = \"to\"\nrates = [\"5/1h\"]\n",
            "geo.allow",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let r = admin(&env, Method::POST, "/api/reload", Some(TOKEN), "").await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{text:?}");
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(says) && e.contains("refused"), "{text:?}: {e}");
        env.send("+447400123456").await;
        assert_eq!(env.upstream_count(), 0, "{text:?}: GB still not allowed");
    }
    wait_for(&got, 1).await;
    let alerts = got.json();
    assert!(alerts.iter().any(|a| a["kind"] == "reload"), "{alerts:?}");
    // A weakening on purpose goes through the explicit switch.
    std::fs::write(&file, "[geo]\nallow = [\"US\", \"GB\"]\n").unwrap();
    let r = admin(
        &env,
        Method::POST,
        "/api/reload?accept_weaker=true",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    env.send("+447400123458").await;
    assert_eq!(env.upstream_count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A local webhook receiver: records bodies; answers 500 to the first
/// `fail_first` requests.
async fn receiver(fail_first: usize) -> (String, Receiver) {
    let r = Receiver::start(fail_first).await;
    (r.url("/hook"), r)
}

async fn wait_for(got: &Receiver, n: usize) {
    got.wait_for(n, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_tripped_block_alerts_once_per_interval_with_retries() {
    let (url, got) = receiver(1).await;
    let env = start(&format!(
        "[[limit]]\nname = \"prefix\"\nkey = \"prefix:8\"\nrates = [\"3/10m\"]\nblock = \"1h\"\n[alerts]\nwebhook = \"{url}\"\ninterval = \"3h\"\n"
    ))
    .await;
    for i in 0..4 {
        env.send(&format!("+4474001234{i:02}")).await;
    }
    wait_for(&got, 1).await;
    let first = got.json()[0].clone();
    assert_eq!(first["kind"], "block");
    assert_eq!(first["cause"], "block:prefix:8=+44740012");
    assert!(
        first["text"]
            .as_str()
            .unwrap()
            .contains("prefix:8=+44740012"),
        "{first}"
    );
    // After the block expires (guard time), the same prefix trips again
    // within the 3h interval: no second alert. Another prefix alerts.
    env.clock.advance(Duration::from_secs(3601));
    for i in 0..4 {
        env.send(&format!("+4474001235{i:02}")).await;
    }
    for i in 0..4 {
        env.send(&format!("+4475001234{i:02}")).await;
    }
    wait_for(&got, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = got.json();
    let causes: Vec<&str> = all.iter().map(|a| a["cause"].as_str().unwrap()).collect();
    assert_eq!(
        causes,
        vec!["block:prefix:8=+44740012", "block:prefix:8=+44750012"],
        "{all:?}"
    );
}

#[tokio::test]
async fn a_region_spike_and_spend_over_the_threshold_alert() {
    let (url, got) = receiver(0).await;
    let env = start(&format!(
        "[budget]\nprices = {{ default = \"0.01\" }}\n[alerts]\nwebhook = \"{url}\"\nspike_factor = 3\nspike_min = 10\nspend_threshold = \"0.05\"\n"
    ))
    .await;
    for i in 0..12 {
        env.send(&format!("+4474001{i:05}")).await;
    }
    wait_for(&got, 2).await;
    let all = got.json();
    let kinds: Vec<&str> = all.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"spike"), "{all:?}");
    assert!(kinds.contains(&"spend"), "{all:?}");
    let spike = all.iter().find(|a| a["kind"] == "spike").unwrap();
    assert!(spike["text"].as_str().unwrap().contains("GB"), "{spike}");
}

/// `[adaptive]` on (so confirmations count) with every signal that could
/// trip on a handful of sends turned off.
const ADAPTIVE_QUIET: &str = "[adaptive]\n[adaptive.surge]\nfloor = 100000\nregion = 0\n[adaptive.distinct]\nclient_ip = []\nuser = []\nregions = 0\n";

async fn confirm(env: &Env, to: &str) -> bool {
    let r = admin(
        env,
        Method::POST,
        "/api/confirm",
        Some(TOKEN),
        &format!(r#"{{"to": "{to}"}}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["confirmed"].as_bool().unwrap()
}

#[tokio::test]
async fn the_summary_shows_conversion_by_region_and_prefix() {
    let env = admin_env(ADAPTIVE_QUIET).await;
    let us: Vec<String> = (0..5).map(|i| format!("+1415555010{i}")).collect();
    let gb: Vec<String> = (0..3).map(|i| format!("+4474001234{i:02}")).collect();
    for to in us.iter().chain(&gb) {
        env.send(to).await;
    }
    env.send("+998993941234").await;
    assert_eq!(
        env.upstream_count(),
        8,
        "nothing tripped but the UZ geo rule"
    );
    // Before any confirmation: forwarded counted, rates 0.
    let s = admin(&env, Method::GET, "/api/summary", Some(TOKEN), "")
        .await
        .json();
    let c = &s["conversion"];
    assert_eq!(c["adaptive"], true);
    assert_eq!(
        (c["forwarded"].as_u64(), c["confirmed"].as_u64()),
        (Some(8), Some(0))
    );
    assert_eq!(c["by_region"][0]["rate"], 0.0);

    for to in &us[..4] {
        assert!(confirm(&env, to).await, "{to}");
    }
    assert!(confirm(&env, &gb[0]).await);
    assert!(!confirm(&env, &us[0]).await, "already confirmed");
    assert!(!confirm(&env, "+14155550999").await, "never sent to");

    let s = admin(&env, Method::GET, "/api/summary", Some(TOKEN), "")
        .await
        .json();
    let c = &s["conversion"];
    assert_eq!(
        (
            c["forwarded"].as_u64(),
            c["confirmed"].as_u64(),
            c["unmatched"].as_u64(),
            c["rate"].as_f64()
        ),
        (Some(8), Some(5), Some(2), Some(0.625)),
        "{c}"
    );
    assert_eq!(
        c["by_region"],
        serde_json::json!([
            {"region": "US", "forwarded": 5, "confirmed": 4, "rate": 0.8},
            {"region": "GB", "forwarded": 3, "confirmed": 1, "rate": 0.3333},
        ]),
        "{c}"
    );
    assert_eq!(
        c["top_prefixes"],
        serde_json::json!([
            {"prefix": "+44740012", "forwarded": 3, "confirmed": 1, "rate": 0.3333},
            {"prefix": "+14155550", "forwarded": 5, "confirmed": 4, "rate": 0.8},
        ]),
        "the most unconfirmed first: {c}"
    );
    assert_eq!(c["adaptive_blocks"], serde_json::json!([]));
    let since = c["since"].as_u64().unwrap();
    let now = s["now"].as_u64().unwrap();
    assert!(
        since <= now && now - since <= 24 * 3_600_000,
        "{since} {now}"
    );

    // A day later the window holds none of it.
    env.clock.advance(Duration::from_secs(24 * 3600));
    let s = admin(&env, Method::GET, "/api/summary", Some(TOKEN), "")
        .await
        .json();
    let c = &s["conversion"];
    assert_eq!(c["forwarded"], 0);
    assert_eq!(c["rate"], serde_json::Value::Null);
    assert_eq!(c["by_region"], serde_json::json!([]));
}

/// Forwarded sends the summary counts as confirmed (matched or not).
async fn credited(env: &Env, token: Option<&str>) -> (u64, u64) {
    let s = admin(env, Method::GET, "/api/summary", token, "")
        .await
        .json();
    let c = &s["conversion"];
    (
        c["confirmed"].as_u64().unwrap(),
        c["unmatched"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn confirming_needs_the_token_and_without_it_credits_nothing() {
    let env = admin_env(ADAPTIVE_QUIET).await;
    env.send("+14155550100").await;
    assert_eq!(env.upstream_count(), 1);
    let body = r#"{"to": "+14155550100"}"#;
    for (path, token) in [
        ("/api/confirm", None),
        ("/api/confirm", Some("wrong")),
        ("/api/confirm", Some("")),
        // The query token opens the dashboard page only.
        (&format!("/api/confirm?token={TOKEN}") as &str, None),
    ] {
        let r = admin(&env, Method::POST, path, token, body).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path} {token:?}");
        assert!(!r.text().contains("confirmed"), "{}", r.text());
    }
    assert_eq!(
        credited(&env, Some(TOKEN)).await,
        (0, 0),
        "nothing credited"
    );
    // With the token it is taken, and the send still awaited it.
    assert!(confirm(&env, "+14155550100").await);
    assert_eq!(credited(&env, Some(TOKEN)).await, (1, 0));
}

/// The admin API with custom headers.
async fn admin_from(env: &Env, path: &str, headers: &[(&str, String)], body: &str) -> Answer {
    let url = format!("http://{}{}", env.guard.admin_addr().unwrap(), path);
    let mut b = Request::builder().method(Method::POST).uri(url);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    env.request(b.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
}

#[tokio::test]
async fn without_a_token_only_local_clients_reach_the_admin_api() {
    // Loopback without a token starts (and warns): open to local users.
    let env = start(&format!(
        "{GEO}[admin]\naddr = \"127.0.0.1:0\"\ntoken_env = \"SMSGUARD_TEST_UNSET_TOKEN_VAR\"\n{ADAPTIVE_QUIET}"
    ))
    .await;
    env.send("+14155550100").await;
    let local = env.guard.admin_addr().unwrap().to_string();
    let body = r#"{"to": "+14155550100"}"#;
    let from_elsewhere = [
        // A proxy on this machine forwarded it.
        vec![("x-forwarded-for", "203.0.113.9".to_string())],
        vec![("forwarded", "for=203.0.113.9".to_string())],
        // A web page whose name resolves to 127.0.0.1 (DNS rebinding).
        vec![(
            "host",
            format!("evil.example:{}", env.guard.admin_addr().unwrap().port()),
        )],
        // A page of another origin in a local browser (no preflight for a
        // text/plain POST).
        vec![
            ("origin", "https://evil.example".to_string()),
            ("content-type", "text/plain".to_string()),
        ],
        vec![("origin", "null".to_string())],
        vec![("origin", "http://127.0.0.1:1".to_string())],
    ];
    for headers in &from_elsewhere {
        let r = admin_from(&env, "/api/confirm", headers, body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{headers:?}: {}", r.text());
        assert!(r.json()["error"].as_str().unwrap().len() > 10, "says why");
    }
    assert_eq!(credited(&env, None).await, (0, 0), "nothing credited");
    // /healthz stays open; a local client, also a page of the listener's
    // own origin, gets through.
    let r = admin_from(&env, "/healthz", &from_elsewhere[0], "").await;
    assert_eq!(r.status, StatusCode::OK);
    let own = [
        ("origin", format!("http://{local}")),
        ("content-type", "application/json".to_string()),
    ];
    let r = admin_from(&env, "/api/confirm", &own, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["confirmed"], true);
    assert_eq!(credited(&env, None).await, (1, 0));
}

#[tokio::test]
async fn without_adaptive_the_summary_says_confirmations_are_not_taken() {
    let env = admin_env("").await;
    env.send("+14155550100").await;
    let s = admin(&env, Method::GET, "/api/summary", Some(TOKEN), "")
        .await
        .json();
    assert_eq!(s["conversion"]["adaptive"], false);
    assert_eq!(s["conversion"]["forwarded"], 1);
    let r = admin(
        &env,
        Method::POST,
        "/api/confirm",
        Some(TOKEN),
        r#"{"to": "+14155550100"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn an_adaptive_surge_alerts_in_words_and_is_counted_by_rule() {
    let (url, got) = receiver(0).await;
    let env = admin_env(&format!(
        "[adaptive]\n[adaptive.surge]\nfloor = 2\n[alerts]\nwebhook = \"{url}\"\n"
    ))
    .await;
    // New numbers in one block, quickly: the third trips the surge on
    // the block (+1646555, prefix:7) and its block stops the rest.
    for i in 0..6 {
        env.send(&format!("+1646555000{i}")).await;
    }
    assert_eq!(env.upstream_count(), 2);
    wait_for(&got, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all = got.json();
    assert_eq!(all.len(), 1, "one alert for one block: {all:?}");
    let a = &all[0];
    assert_eq!(a["kind"], "block");
    assert_eq!(a["cause"], "block:prefix:7=+1646555");
    let text = a["text"].as_str().unwrap();
    for want in [
        "smsguard blocked `prefix:7=+1646555`",
        "adaptive: a surge of new numbers in one block",
        "3 new numbers unconfirmed in 10m",
        "rule `adaptive:surge:prefix:7`",
    ] {
        assert!(text.contains(want), "{want:?} not in {text:?}");
    }
    assert!(!text.contains("+16465550002"), "no full number: {text}");
    // The summary counts the trip and the sends its block stopped.
    let s = admin(&env, Method::GET, "/api/summary", Some(TOKEN), "")
        .await
        .json();
    assert_eq!(
        s["conversion"]["adaptive_blocks"],
        serde_json::json!([
            {"rule": "adaptive:surge:prefix:7", "trips": 1, "stopped": 4, "monitored": 0}
        ])
    );
    assert_eq!(s["conversion"]["forwarded"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_logs_and_audits_without_the_token_or_body_and_masks_numbers() {
    let dir = temp_dir("audit");
    let fake = smsguard::twilio::fake::FakeTwilio::start().await.unwrap();
    let audit = dir.join("audit.log");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.join("smsguard.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\naddr = \"127.0.0.1:{port}\"\n[upstream]\napi = \"{}\"\n[log]\nformat = \"json\"\nmask_numbers = true\n[audit]\nfile = \"{}\"\n{GEO}[shadow]\ntiming = false\n",
            fake.url(),
            audit.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_smsguard"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let mut ready = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the guard did not start");
    for to in ["%2B998993941234", "%2B14155550123"] {
        let req = Request::post(format!("http://127.0.0.1:{port}{MESSAGES}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", AUTH)
            .body(Full::new(Bytes::from(format!(
                "To={to}&Body=planted-secret-body-77e1"
            ))))
            .unwrap();
        assert!(client.request(req).await.unwrap().status().is_success());
    }
    // SIGTERM: the guard drains and exits, flushing the audit file.
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    for text in [&log, &audit_text] {
        assert!(
            !text.contains("planted-secret-body"),
            "body leaked:\n{text}"
        );
        assert!(
            !text.contains("planted-auth-token"),
            "token leaked:\n{text}"
        );
        assert!(!text.contains(&AUTH[6..]), "credentials leaked:\n{text}");
        assert!(
            !text.contains("+998993941234"),
            "number not masked:\n{text}"
        );
    }
    let lines: Vec<serde_json::Value> = audit_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{audit_text}");
    assert_eq!(lines[0]["to"], "+99899394****");
    assert_eq!(lines[0]["rule"], "geo:UZ");
    assert_eq!(lines[0]["action"], "shadow");
    assert_eq!(lines[1]["action"], "allow");
    assert!(log.contains("\"rule\":\"geo:UZ\""), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_block_is_stored_as_the_sends_it_names_carry_or_refused() {
    // A limit that blocks on a combined key: that key can be blocked by
    // hand too.
    let env = admin_env("[[limit]]\nname = \"pair\"\nkey = \"client_ip+region\"\nrates = [\"1000/1h\"]\nblock = \"1h\"\n").await;
    let post = |key: &'static str, value: &'static str| {
        let body = format!(r#"{{"key": "{key}", "value": "{value}", "duration": "10m"}}"#);
        let env = &env;
        async move { admin(env, Method::POST, "/api/blocks", Some(TOKEN), &body).await }
    };
    // Valid values, written as an operator would: stored as a send's key.
    for (key, value, stored) in [
        ("to", "+1 (303) 555-0199", "to=+13035550199"),
        ("to", "00447911123456", "to=+447911123456"),
        ("region", "ie", "region=IE"),
        ("prefix:4", "+1212", "prefix:4=+1212"),
        ("client_ip", " ::ffff:203.0.113.9 ", "client_ip=203.0.113.9"),
        ("client_ip", "2001:db8::1", "client_ip=2001:db8::"),
        ("user", "alice", "user=alice"),
        (
            "account",
            "ACffffffffffffffffffffffffffffff01",
            "account=ACffffffffffffffffffffffffffffff01",
        ),
        (
            "client_ip+region",
            "198.51.100.7|gb",
            "client_ip+region=198.51.100.7|GB",
        ),
    ] {
        let r = post(key, value).await;
        assert_eq!(r.status, StatusCode::CREATED, "{key}={value}: {}", r.text());
        assert_eq!(r.json()["key"], stored, "{key}={value}");
    }
    // What the guard would never match is refused, and says why.
    for (key, value, why) in [
        ("to", "hello", "not a phone number"),
        ("to", "07700 900123", "not a phone number"),
        ("region", "XX", "unknown region"),
        ("prefix:4", "+12", "exactly 4 digits"),
        ("client_ip", "203.0.113.9:443", "not an IP address"),
        ("account", "AC123", "not an account sid"),
        ("client_ip+region", "198.51.100.7", "2 values joined by '|'"),
    ] {
        let r = post(key, value).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{key}={value}: {}",
            r.text()
        );
        assert!(r.text().contains(why), "{key}={value}: {}", r.text());
    }
    // The blocks hold: a number written with spaces, an Irish number.
    env.send("+13035550199").await;
    env.send("+353851234567").await;
    assert_eq!(env.upstream_count(), 0, "both blocked");
    env.send("+13035550198").await;
    assert_eq!(env.upstream_count(), 1, "a neighbour is not");
}

#[tokio::test]
async fn decisions_show_what_the_app_sent_with_times_an_operator_reads() {
    let env = admin_env(ADAPTIVE_QUIET).await;
    // A number that is not one, and a send without To: both refused, both
    // listed with what was sent and the account in the path.
    let r = env.post_form(MESSAGES, "To=07700+900123&Body=x").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let r = env.post_form(MESSAGES, "Body=x").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    env.send("+447400123456").await;
    let d = admin(&env, Method::GET, "/api/decisions", Some(TOKEN), "")
        .await
        .json();
    let d = d["decisions"].as_array().unwrap().clone();
    assert_eq!(d.len(), 3, "{d:?}");
    assert_eq!(d[2]["to"], "07700 900123", "{:?}", d[2]);
    assert_eq!(d[2]["account"], ACCOUNT, "{:?}", d[2]);
    assert_eq!(d[1]["rule"], "malformed", "{:?}", d[1]);
    assert_eq!(d[1]["account"], ACCOUNT, "{:?}", d[1]);
    // Times as RFC 3339 beside the epoch milliseconds.
    let at = d[0]["at"].as_str().unwrap();
    assert!(
        at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "{at}"
    );
    assert_eq!(d[0]["vouched"], false);
    // A prefix filter with its '+' not percent-encoded (a space on arrival)
    // is the number it obviously is.
    let p = admin(
        &env,
        Method::GET,
        "/api/decisions?prefix=+4474",
        Some(TOKEN),
        "",
    )
    .await
    .json();
    assert_eq!(p["decisions"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(p["decisions"][0]["to"], "+447400123456");
    // A confirmation that matches nothing says why.
    let r = admin(
        &env,
        Method::POST,
        "/api/confirm",
        Some(TOKEN),
        r#"{"to": "+14155550999"}"#,
    )
    .await
    .json();
    assert_eq!(r["confirmed"], false);
    assert!(
        r["reason"].as_str().unwrap().contains("no forwarded send"),
        "{r}"
    );
}

async fn explain_live(env: &Env, q: &str) -> Answer {
    admin(
        env,
        Method::GET,
        &format!("/api/explain?{q}"),
        Some(TOKEN),
        "",
    )
    .await
}

/// `GET /api/explain` and `smsguard explain --admin`: why the running guard
/// stops a number right now, from its live state, without changing it.
#[tokio::test]
async fn explain_on_the_live_guard_shows_what_stops_a_number_and_changes_nothing() {
    let env = admin_env(&format!(
        "[[limit]]\nname = \"number\"\nkey = \"to\"\nrates = [\"2/1h\"]\n{ADAPTIVE_QUIET}"
    ))
    .await;
    // Two sends use the number's limit; a third would be stopped.
    let a = "+14155550100";
    env.send(a).await;
    env.send(a).await;
    assert_eq!(env.upstream_count(), 2);
    let r = explain_live(&env, "to=%2B14155550100").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["action"], "shadow", "{v}");
    assert_eq!(v["rule"], "limit:number", "{v}");
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("limits   shadow limit:number"), "{text}");
    assert!(
        text.contains("3 attempts, rate 2/1h"),
        "the live count: {text}"
    );
    // The same for a number never sent to: allowed. Asking again and again
    // counts nothing: the next two real sends to it still go.
    let b = "+14155550101";
    for _ in 0..5 {
        // An unencoded '+' arrives as a space: still the number.
        let v = explain_live(&env, "to=+14155550101").await.json();
        assert_eq!(v["action"], "allow", "{v}");
        assert_eq!(v["to"], b, "{v}");
    }
    env.send(b).await;
    env.send(b).await;
    assert_eq!(env.upstream_count(), 4, "explain counted sends");
    // The adaptive figures and vouching: a number that proved receipt.
    let c = "+14155550102";
    env.send(c).await;
    env.clock.advance(Duration::from_secs(30));
    assert!(confirm(&env, c).await);
    let v = explain_live(&env, "to=%2B14155550102").await.json();
    assert_eq!(v["vouched"], true, "{v}");
    assert!(
        v["text"].as_str().unwrap().contains("vouched for until"),
        "{v}"
    );
    // A block set by hand shows with its rule.
    let r = admin(
        &env,
        Method::POST,
        "/api/blocks",
        Some(TOKEN),
        r#"{"key": "prefix:8", "value": "+14155550", "duration": "1h"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let v = explain_live(&env, "to=%2B14155550199&ip=203.0.113.7&user=u1")
        .await
        .json();
    assert_eq!(
        (v["stage"].as_str(), v["rule"].as_str()),
        (Some("blocks"), Some("manual")),
        "{v}"
    );
    // Bad questions get clear answers.
    for (q, says) in [
        ("", "give the number"),
        ("to=07700", "invalid"),
        ("to=%2B14155550100&ip=nope", "not an IP address"),
        ("to=%2B14155550100&product=fax", "expected messaging"),
    ] {
        let r = explain_live(&env, q).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(r.text().contains(says), "{q}: {}", r.text());
    }
    assert_eq!(
        admin(
            &env,
            Method::GET,
            "/api/explain?to=%2B14155550100",
            None,
            ""
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );

    // The command line asks the same endpoint.
    let dir = temp_dir("explain-live");
    let config = dir.join("smsguard.toml");
    std::fs::write(
        &config,
        format!("[admin]\naddr = \"127.0.0.1:9\"\ntoken_env = \"{TOKEN_ENV}\"\n"),
    )
    .unwrap();
    let url = format!("http://{}", env.guard.admin_addr().unwrap());
    let run = move |token: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_smsguard"));
        cmd.args(["explain", "--config"]).arg(&config).args([
            "--admin",
            &url,
            "--to",
            "+14155550100",
        ]);
        match token {
            Some(t) => cmd.env(TOKEN_ENV, t),
            None => cmd.env_remove(TOKEN_ENV),
        };
        cmd.output().unwrap()
    };
    let out = tokio::task::spawn_blocking(move || (run(Some(TOKEN)), run(None)))
        .await
        .unwrap();
    let (with, without) = out;
    let stdout = String::from_utf8_lossy(&with.stdout);
    assert!(
        with.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(
        stdout.contains("live     judged on the state of the guard"),
        "{stdout}"
    );
    // The block set by hand above now covers it (empty state would allow).
    assert!(
        stdout.contains("blocks   shadow manual (prefix:8=+14155550)")
            && stdout.contains("action   shadow by blocks manual"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(!without.status.success());
    assert!(
        stderr.contains("HTTP 401") && stderr.contains(TOKEN_ENV),
        "{stderr}"
    );
    assert_eq!(env.upstream_count(), 5, "explain sent nothing");
    let _ = std::fs::remove_dir_all(dir);
}
