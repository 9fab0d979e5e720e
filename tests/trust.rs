//! Trust boundaries, through the real listener: the app's context headers
//! (end-user data an attacker shapes), the safe list and the TCP peer,
//! IPv6 clients, the block table under a flood, the admin API from a
//! browser, the outgoing caller id validation call, shadowed resources
//! fetched or deleted, and `replay --out`.
//!
//! The invariant throughout: a send the policy stops never reaches Twilio
//! (the fake upstream records everything it receives).

mod common;

use bytes::Bytes;
use common::*;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;

/// Shadowed by geo: a send to it must never reach Twilio.
const BLOCKED: &str = "+998993941234";
const GEO: &str = "[geo]\nallow = [\"US\"]\n";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const CALLER_IDS: &str =
    "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/OutgoingCallerIds.json";
const TOKEN_ENV: &str = "SMSGUARD_TEST_TRUST_TOKEN";
const TOKEN: &str = "trust-admin-token-51c0";

fn form_to(to: &str) -> String {
    format!("To={}&From=%2B15017122661&Body=x", to.replace('+', "%2B"))
}

/// A Messages send to `to` with raw context headers (values as bytes).
async fn send_ctx(env: &Env, to: &str, headers: &[(&str, &[u8])]) -> Answer {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(env.url(MESSAGES))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", AUTH);
    for (k, v) in headers {
        b = b.header(*k, HeaderValue::from_bytes(v).unwrap());
    }
    env.request(b.body(Full::new(Bytes::from(form_to(to)))).unwrap())
        .await
}

async fn admin_env(policy: &str) -> Env {
    std::env::set_var(TOKEN_ENV, TOKEN);
    start(&format!(
        "{policy}[admin]\naddr = \"127.0.0.1:0\"\ntoken_env = \"{TOKEN_ENV}\"\n"
    ))
    .await
}

/// An admin request with the token and `headers`.
async fn admin(
    env: &Env,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Answer {
    let url = format!("http://{}{}", env.guard.admin_addr().unwrap(), path);
    let mut b = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {TOKEN}"));
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    env.request(b.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
}

fn json_type() -> (&'static str, String) {
    ("content-type", "application/json".to_string())
}

async fn block(env: &Env, key: &str, value: &str) {
    let body = format!(r#"{{"key": "{key}", "value": "{value}", "duration": "30d"}}"#);
    let r = admin(env, Method::POST, "/api/blocks", &[json_type()], &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{key}={value}: {}", r.text());
}

async fn metric(env: &Env, name: &str) -> f64 {
    let text = admin(env, Method::GET, "/metrics", &[], "").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test]
async fn the_safe_list_never_matches_the_app_server_and_unreadable_addresses_are_refused() {
    // The app servers' own network is on the safe list (the README's
    // example): only an end user's address may match it.
    let env = admin_env(&format!(
        "{GEO}[numbers]\nsafe_clients = [\"127.0.0.0/8\", \"10.0.0.0/8\"]\n"
    ))
    .await;
    // No header: the TCP peer (127.0.0.1) is the app server, not safe.
    let r = send_ctx(&env, BLOCKED, &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "shadowed: {}", r.text());
    assert_eq!(env.upstream_count(), 0, "the peer matched the safe list");
    // Present but unreadable: refused with a Twilio-shaped 400, never
    // read as absent (nor as the peer).
    let dup: &[(&str, &[u8])] = &[
        ("x-smsguard-client-ip", b"203.0.113.9"),
        ("x-smsguard-client-ip", b"10.0.0.1"),
    ];
    for headers in [
        &[("x-smsguard-client-ip", &b"203.0.113.9, 198.51.100.1"[..])][..],
        &[("x-smsguard-client-ip", &b"10.0.0.1:443"[..])],
        &[("x-smsguard-client-ip", &b"[::1]:443"[..])],
        &[("x-smsguard-client-ip", &b"unknown"[..])],
        &[("x-smsguard-client-ip", &b""[..])],
        dup,
    ] {
        let r = send_ctx(&env, BLOCKED, headers).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{headers:?}: {}",
            r.text()
        );
        let e = r.json();
        assert_eq!(
            (e["code"].as_u64(), e["status"].as_u64()),
            (Some(20001), Some(400))
        );
        assert!(e["message"]
            .as_str()
            .unwrap()
            .contains("X-SMSGuard-Client-IP"));
    }
    assert_eq!(
        env.upstream_count(),
        0,
        "an unreadable address was forwarded"
    );
    // An end user's address in the safe network still is safe.
    let r = send_ctx(&env, BLOCKED, &[("x-smsguard-client-ip", b"10.1.2.3")]).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(env.upstream_count(), 1);
    let m = metric(
        &env,
        "smsguard_context_refused_total{header=\"X-SMSGuard-Client-IP\"}",
    )
    .await;
    assert_eq!(m, 6.0);
}

#[tokio::test]
async fn a_blocked_client_stays_blocked_under_every_spelling() {
    let env = admin_env(GEO).await;
    block(&env, "client_ip", "203.0.113.9").await;
    // An IPv6 client blocked by one address is blocked for its /64.
    block(&env, "client_ip", "2001:db8:7:7::1").await;
    let to = "+14155550100";
    for ip in [
        "203.0.113.9",
        "::ffff:203.0.113.9",
        " 203.0.113.9 ",
        "2001:db8:7:7:ffff::9",
    ] {
        let r = send_ctx(&env, to, &[("x-smsguard-client-ip", ip.as_bytes())]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{ip}");
    }
    assert_eq!(env.upstream_count(), 0, "a blocked client got through");
    // The control: another client is forwarded.
    send_ctx(&env, to, &[("x-smsguard-client-ip", b"198.51.100.1")]).await;
    assert_eq!(env.upstream_count(), 1);
}

#[tokio::test]
async fn users_are_judged_by_their_bytes_never_dropped() {
    let env = start(&format!(
        "{GEO}[[limit]]\nname = \"user\"\nkey = \"user\"\nrates = [\"3/1h\"]\n"
    ))
    .await;
    let long = vec![b'u'; 300];
    let odd = "jos\u{e9}".as_bytes().to_vec();
    let mut forwarded = Vec::new();
    for user in [&long[..], &odd[..], b" "] {
        let before = env.upstream_count();
        for i in 0..6 {
            let r = send_ctx(
                &env,
                &format!("+1415555{:04}", 100 + i),
                &[("x-smsguard-user", user)],
            )
            .await;
            assert_eq!(r.status, StatusCode::CREATED);
        }
        forwarded.push(env.upstream_count() - before);
    }
    assert_eq!(
        forwarded,
        [3, 3, 3],
        "each user is limited under a key of its own"
    );
    // A duplicated user is refused.
    let r = send_ctx(
        &env,
        "+14155550999",
        &[("x-smsguard-user", b"a"), ("x-smsguard-user", b"b")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("X-SMSGuard-User"));
    assert_eq!(env.upstream_count(), 9);
}

#[tokio::test]
async fn an_ipv6_host_is_one_client_per_configured_prefix() {
    let limit = "[[limit]]\nname = \"ip\"\nkey = \"client_ip\"\nrates = [\"3/1h\"]\n";
    for (prefix, want) in [("", 3), ("client_ipv6_prefix = 128\n", 6)] {
        let env = start(&format!("{GEO}[numbers]\n{prefix}{limit}")).await;
        for i in 1..=6 {
            let ip = format!("2001:db8:1:2:{i:x}::{i:x}");
            send_ctx(
                &env,
                "+14155550100",
                &[("x-smsguard-client-ip", ip.as_bytes())],
            )
            .await;
        }
        assert_eq!(env.upstream_count(), want, "prefix {prefix:?}");
    }
    // The key is checked like every other: file, line and column.
    let e = smsguard::config::Config::parse(
        std::path::Path::new("p.toml"),
        "[numbers]\nclient_ipv6_prefix = 8\n",
    )
    .unwrap_err();
    assert_eq!((e.line, e.col), (2, 22), "{e}");
    assert!(e.message.contains("client_ipv6_prefix"), "{e}");
}

#[tokio::test]
async fn a_flood_of_automatic_blocks_never_evicts_a_manual_one() {
    // A small block table, a limit that blocks every number sent to twice.
    let env = admin_env(&format!(
        "{GEO}[numbers]\nrequire_valid = false\n[store]\nblock_capacity = 20\n[shadow]\ntiming = false\n[[limit]]\nname = \"number\"\nkey = \"to\"\nrates = [\"1/1h\"]\nblock = \"1h\"\n"
    ))
    .await;
    block(&env, "to", "+12025550999").await;
    block(&env, "prefix:6", "+120266").await;
    block(&env, "client_ip", "203.0.113.77").await;
    // 150 automatic blocks, over seven times the table.
    for i in 0..150 {
        let to = format!("+1202555{:04}", 1000 + i);
        send_ctx(&env, &to, &[]).await;
        send_ctx(&env, &to, &[]).await;
    }
    let before = env.upstream_count();
    assert_eq!(before, 150, "each number once");
    for (to, ip) in [
        ("+12025550999", None),
        ("+12026612345", None),
        ("+12025550500", Some("203.0.113.77")),
    ] {
        let headers: Vec<(&str, &[u8])> = ip
            .map(|ip| ("x-smsguard-client-ip", ip.as_bytes()))
            .into_iter()
            .collect();
        let r = send_ctx(&env, to, &headers).await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(
            env.upstream_count(),
            before,
            "manual block lost: {to} {ip:?}"
        );
    }
    let listed = admin(&env, Method::GET, "/api/blocks", &[], "")
        .await
        .json();
    let manual = listed["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["rule"] == "manual")
        .count();
    assert_eq!(manual, 3);
    // The flood's own evictions are counted apart.
    assert!(metric(&env, "smsguard_blocks_evicted_live").await > 0.0);
}

#[tokio::test]
async fn the_admin_api_refuses_browser_shaped_changes_token_or_not() {
    let env = admin_env(GEO).await;
    let addr = env.guard.admin_addr().unwrap();
    let safe = r#"{"prefix": "+998"}"#;
    let refused: Vec<(StatusCode, Vec<(&str, String)>)> = vec![
        // A simple (no preflight) cross-site form or fetch.
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            vec![("content-type", "text/plain".into())],
        ),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, vec![]),
        // DNS rebinding: a name that resolves to the listener.
        (
            StatusCode::FORBIDDEN,
            vec![
                json_type(),
                ("host", format!("evil.example:{}", addr.port())),
            ],
        ),
        // A page of another origin.
        (
            StatusCode::FORBIDDEN,
            vec![json_type(), ("origin", "https://evil.example".into())],
        ),
        (
            StatusCode::FORBIDDEN,
            vec![json_type(), ("origin", "null".into())],
        ),
    ];
    for (status, headers) in &refused {
        let r = admin(&env, Method::POST, "/api/safe", headers, safe).await;
        assert_eq!(r.status, *status, "{headers:?}: {}", r.text());
    }
    let r = send_ctx(&env, BLOCKED, &[]).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(env.upstream_count(), 0, "a refused edit made +998 safe");
    // The listener's own origin, in JSON, is obeyed.
    let own = vec![json_type(), ("origin", format!("http://{addr}"))];
    let r = admin(&env, Method::POST, "/api/safe", &own, safe).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // The bearer scheme is case-insensitive.
    let url = format!("http://{addr}/api/blocks");
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let req = Request::get(&url)
            .header("authorization", format!("{scheme} {TOKEN}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(env.request(req).await.status, StatusCode::OK, "{scheme}");
    }
}

#[tokio::test]
async fn an_outgoing_caller_id_validation_call_is_judged_like_a_send() {
    let env = start(GEO).await;
    let post = |form: &'static str| env.post_form(CALLER_IDS, form);
    let r = post("PhoneNumber=%2B998993941234&FriendlyName=Office").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(env.upstream_count(), 0, "the validation call was placed");
    let v = r.json();
    assert_eq!(v["account_sid"], ACCOUNT);
    assert_eq!(v["phone_number"], BLOCKED);
    assert_eq!(v["friendly_name"], "Office");
    let call = v["call_sid"].as_str().unwrap();
    assert!(call.starts_with("CA") && call.len() == 34, "{call}");
    let code = v["validation_code"].as_str().unwrap();
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );
    // Its number read with the same care as a To.
    for bad in [
        "FriendlyName=x",
        "PhoneNumber=%2B14155550100&phonenumber=%2B998993941234",
    ] {
        assert_eq!(post(bad).await.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(env.upstream_count(), 0);
    // An allowed number is forwarded.
    assert!(post("PhoneNumber=%2B14155550100").await.status.is_success());
    assert_eq!(env.upstream_count(), 1);
}

#[tokio::test]
async fn a_shadowed_message_answers_like_twilio_to_reads_and_deletes() {
    let env = start(GEO).await;
    let sid = env.send(BLOCKED).await.json()["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json");
    let other = format!(
        "/2010-04-01/Accounts/AC{}/Messages/{sid}.json",
        "f".repeat(32)
    );
    let req = |method: Method, path: &str, auth: Option<&str>| {
        let mut b = Request::builder().method(method).uri(env.url(path));
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    let r = env.request(req(Method::GET, &path, None)).await;
    assert_eq!(
        (r.status, r.json()["code"].as_u64()),
        (StatusCode::UNAUTHORIZED, Some(20003))
    );
    let r = env
        .request(req(Method::GET, &path, Some("Basic bm9ib2R5OnNlY3JldA==")))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "user nobody");
    let r = env.request(req(Method::GET, &other, Some(AUTH))).await;
    assert_eq!(
        (r.status, r.json()["code"].as_u64()),
        (StatusCode::NOT_FOUND, Some(20404))
    );
    let r = env.request(req(Method::GET, &path, Some(AUTH))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["sid"], sid.as_str());
    let r = env.request(req(Method::DELETE, &path, Some(AUTH))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());
    assert_eq!(
        env.upstream_count(),
        0,
        "a request for the fake reached Twilio"
    );
}

#[test]
fn replay_out_never_overwrites_an_input() {
    let dir = temp_dir("replay-out");
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, GEO).unwrap();
    let traffic = dir.join("traffic.jsonl");
    let line = "{\"to\":\"+14155550100\",\"date_created\":\"2023-11-21T01:02:03Z\"}\n";
    std::fs::write(&traffic, line).unwrap();
    let inputs = [traffic.clone()];
    let same_file = dir.join(".").join("traffic.jsonl");
    for out in [&traffic, &same_file, &policy] {
        assert_eq!(
            smsguard::replay::command(&policy, Some(out), &inputs),
            1,
            "{}",
            out.display()
        );
    }
    assert_eq!(std::fs::read_to_string(&traffic).unwrap(), line);
    assert_eq!(std::fs::read_to_string(&policy).unwrap(), GEO);
    // Another file is written.
    let out = dir.join("decisions.jsonl");
    assert_eq!(smsguard::replay::command(&policy, Some(&out), &inputs), 0);
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("+14155550100"));
}

#[test]
fn check_prints_the_ipv6_prefix() {
    let dir = temp_dir("check");
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!("{GEO}[numbers]\nclient_ipv6_prefix = 56\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smsguard"))
        .args(["check", "--config"])
        .arg(&policy)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("client_ipv6_prefix=/56"), "{text}");
}
