//! The guard end to end: real HTTP in front of a fake Twilio that records
//! what reached it. One scenario per stage, action and fail-closed case.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::Full;

const GEO: &str = "[geo]\nallow = [\"US\", \"CA\", \"GB\", \"IE\"]\n";

fn req(method: Method, url: String) -> http::request::Builder {
    Request::builder().method(method).uri(url)
}

// ---------------------------------------------------------------- forwarding

#[tokio::test]
async fn a_non_send_is_forwarded_unchanged_with_query_auth_and_host() {
    let env = start("").await;
    let r = env
        .request(
            req(
                Method::GET,
                env.url("/2010-04-01/Accounts/AC1/Messages.json?PageSize=20&To=%2B1555"),
            )
            .header("authorization", AUTH)
            .header("x-custom", "kept")
            .header("connection", "keep-alive, x-drop-me")
            .header("x-drop-me", "1")
            .header("x-smsguard-client-ip", "203.0.113.1")
            .header("x-smsguard-user", "u1")
            .body(Full::new(Bytes::new()))
            .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = env.fake.requests();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, Method::GET);
    // A GET of the list with To in the query is not a send: passed as is.
    assert_eq!(
        s.uri.to_string(),
        "/2010-04-01/Accounts/AC1/Messages.json?PageSize=20&To=%2B1555"
    );
    assert_eq!(s.headers["authorization"], AUTH);
    assert_eq!(s.headers["x-custom"], "kept");
    assert!(
        s.headers.get("x-drop-me").is_none(),
        "named in Connection: hop-by-hop"
    );
    assert!(s.headers.get("x-smsguard-client-ip").is_none());
    assert!(s.headers.get("x-smsguard-user").is_none());
    assert_eq!(
        s.host.as_deref(),
        Some(env.fake.addr().to_string().as_str())
    );
    // The upstream's own headers come back.
    assert!(r.headers.get("x-fake-received-host").is_some());
    assert!(r.headers.get("twilio-request-id").is_some());
}

#[tokio::test]
async fn a_non_send_body_and_an_upstream_stream_pass_through_whole() {
    let env = start("").await;
    let body = "x".repeat(300_000); // far over the send limit: not a send, so streamed
    let r = env
        .request(
            req(
                Method::POST,
                env.url("/2010-04-01/Accounts/AC1/Messages/SM1/Feedback.json"),
            )
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap(),
        )
        .await;
    // The fake answers Feedback as Twilio does (201); the body went whole.
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(env.fake.requests()[0].body, body.as_bytes());
    let r = env
        .request(
            req(Method::GET, env.url("/stream-test?chunks=4&gap_ms=10"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.len() >= 4, "{:?}", r.text());
}

#[tokio::test]
async fn an_allowed_send_reaches_twilio_with_its_bytes_exactly_and_twilios_answer_comes_back() {
    let env = start(GEO).await;
    // Odd but valid encodings must arrive byte for byte.
    let form =
        "To=%2B14155550123&From=%2b15017122661&Body=Hi+there%21%20%E2%9C%93&MediaUrl=a&MediaUrl=b";
    let r = env.post_form(MESSAGES, form).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let seen = env.fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, form.as_bytes());
    assert_eq!(seen[0].headers["authorization"], AUTH);
    // The answer is the fake upstream's, not one made by the guard.
    assert_eq!(
        r.headers
            .get("x-fake-received-host")
            .map(|v| v.to_str().unwrap()),
        Some(env.fake.addr().to_string().as_str())
    );
    assert_eq!(r.json()["to"], "+14155550123");
}

#[tokio::test]
async fn risk_check_disable_is_stripped_and_the_rest_kept() {
    let env = start("").await;
    let r = env
        .post_form(MESSAGES, "To=%2B14155550123&RiskCheck=disable&Body=a%20b")
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        env.fake.requests()[0].body,
        "To=%2B14155550123&Body=a%20b".as_bytes()
    );
    let env = start("[upstream]\nstrip_risk_check = false\n").await;
    env.post_form(MESSAGES, "To=%2B14155550123&RiskCheck=disable")
        .await;
    assert_eq!(
        env.fake.requests()[0].body,
        "To=%2B14155550123&RiskCheck=disable".as_bytes()
    );
}

#[tokio::test]
async fn twilio_unreachable_or_slow_gives_a_twilio_error_never_a_fake_success() {
    let env = start("[upstream]\ntimeout = \"300ms\"\n").await;
    env.fake.set_delay(Duration::from_secs(2));
    let r = env.send("+14155550123").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.json()["status"], 504);
    assert!(r.json()["code"].is_u64());

    let fake = smsguard::twilio::fake::FakeTwilio::start().await.unwrap();
    let dead = fake.url();
    fake.shutdown();
    drop(fake);
    let env = start(&format!("[upstream]\napi = \"{dead}\"\n")).await;
    let r = env.send("+14155550123").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.json()["status"], 502);
}

// ---------------------------------------------------------------- actions and the fake

#[tokio::test]
async fn a_shadowed_send_gets_a_fake_message_shaped_like_twilios_and_twilio_sees_nothing() {
    let env = start(GEO).await;
    let r = env.send("+998993941234").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(env.upstream_count(), 0);
    let text = r.text();
    let v = r.json();
    let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    let mut schema = schema_properties("api_v2010.json", "api.v2010.account.message");
    let mut sorted = keys.clone();
    sorted.sort();
    schema.sort();
    assert_eq!(sorted, schema, "every field of the OpenAPI schema, no more");
    assert!(text.starts_with("{\"sid\": \"SM"), "{text}");
    assert_eq!(v["status"], "queued");
    assert_eq!(v["to"], "+998993941234");
    assert_eq!(v["account_sid"], ACCOUNT);
    assert_eq!(v["date_sent"], serde_json::Value::Null);
    assert!(regex::Regex::new(r"^SM[0-9a-f]{32}$")
        .unwrap()
        .is_match(v["sid"].as_str().unwrap()));
    assert!(regex::Regex::new(
        r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000$"
    )
    .unwrap()
    .is_match(v["date_created"].as_str().unwrap()));
    assert!(regex::Regex::new(r"^RQ[0-9a-f]{32}$")
        .unwrap()
        .is_match(r.headers["twilio-request-id"].to_str().unwrap()));
    assert_eq!(r.headers["content-type"], "application/json");
}

#[tokio::test]
async fn a_shadowed_send_with_only_a_messaging_service_is_accepted() {
    let env = start(GEO).await;
    let r = env
        .post_form(
            MESSAGES,
            "To=%2B998993941234&MessagingServiceSid=MG0123456789abcdef0123456789abcdef&Body=x",
        )
        .await;
    let v = r.json();
    assert_eq!(v["status"], "accepted");
    assert_eq!(v["from"], serde_json::Value::Null);
    assert_eq!(v["num_segments"], "0");
    assert_eq!(
        v["messaging_service_sid"],
        "MG0123456789abcdef0123456789abcdef"
    );
}

#[tokio::test]
async fn reject_answers_with_twilios_own_codes() {
    let env = start(&format!("{GEO}[actions]\ndefault = \"reject\"\n[[limit]]\nname = \"global\"\nkey = \"global\"\nrates = [\"2/1m\"]\n")).await;
    let r = env.send("+998993941234").await;
    assert_eq!(
        (r.status, r.json()["code"].as_u64()),
        (StatusCode::BAD_REQUEST, Some(21408))
    );
    let r = env.send("+1415").await;
    assert_eq!(
        (r.status, r.json()["code"].as_u64()),
        (StatusCode::BAD_REQUEST, Some(21211))
    );
    assert_eq!(
        r.json()["more_info"],
        "https://www.twilio.com/docs/errors/21211"
    );
    env.send("+14155550123").await;
    env.send("+14155550124").await;
    let r = env.send("+14155550125").await;
    assert_eq!(
        (r.status, r.json()["code"].as_u64()),
        (StatusCode::TOO_MANY_REQUESTS, Some(20429))
    );
    assert_eq!(env.upstream_count(), 2);
}

#[tokio::test]
async fn monitor_forwards_what_it_would_have_blocked() {
    let env = start(&format!("{GEO}[actions]\nnumber = \"monitor\"\n")).await;
    let r = env.send("+998993941234").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(env.upstream_count(), 1);
}

// ---------------------------------------------------------------- stages over HTTP

#[tokio::test]
async fn the_safe_list_lets_a_number_through_that_geo_would_block() {
    let env = start(&format!("{GEO}[numbers]\nsafe = [\"+998993941234\"]\n")).await;
    assert_eq!(env.send("+998993941234").await.status, StatusCode::CREATED);
    assert_eq!(env.upstream_count(), 1);
    env.send("+998993941235").await;
    assert_eq!(env.upstream_count(), 1);
}

#[tokio::test]
async fn number_types_and_numbers_without_a_region_are_blocked() {
    let env = start("[numbers]\nblock_types = [\"premium_rate\"]\n").await;
    env.send("+449092345678").await; // UK premium rate
    env.send("+882161234567").await; // no region
    assert_eq!(env.upstream_count(), 0);
    env.send("+447400123456").await;
    assert_eq!(env.upstream_count(), 1);
}

#[tokio::test]
async fn backoff_runs_on_the_injected_clock() {
    let env = start(
        "[backoff]\nfree = 1\nbase = \"30s\"\nfactor = 2\nmax = \"32m\"\nreset_after = \"2h\"\n",
    )
    .await;
    env.send("+14155550123").await;
    env.clock.advance(Duration::from_secs(10));
    env.send("+14155550123").await;
    assert_eq!(env.upstream_count(), 1, "10s < 30s: shadowed");
    env.clock.advance(Duration::from_secs(20));
    env.send("+14155550123").await;
    assert_eq!(env.upstream_count(), 2, "30s after the first");
}

#[tokio::test]
async fn a_tripped_prefix_limit_blocks_the_prefix_and_escalates() {
    let env = start(
        "[[limit]]\nname = \"prefix\"\nkey = \"prefix:8\"\nrates = [\"20/10m\"]\nblock = \"12h\"\n",
    )
    .await;
    for i in 0..25 {
        env.send(&format!("+4474001234{i:02}")).await;
    }
    assert_eq!(env.upstream_count(), 20);
    env.clock.advance(Duration::from_secs(11 * 3600));
    env.send("+447400120000").await;
    assert_eq!(env.upstream_count(), 20, "still blocked after 11h");
    env.clock.advance(Duration::from_secs(3600));
    env.send("+447400120001").await;
    assert_eq!(env.upstream_count(), 21, "free after 12h");
    let blocks = env
        .guard
        .app()
        .policy()
        .store()
        .blocks(env.guard.app().clock.now());
    assert!(blocks.is_empty(), "{blocks:?}");
}

#[tokio::test]
async fn context_headers_feed_the_client_ip_limit() {
    let env = start("[[limit]]\nname = \"ip\"\nkey = \"client_ip\"\nrates = [\"2/1h\"]\n").await;
    for i in 0..3 {
        env.send_from_ip(&format!("+1415555012{i}"), "203.0.113.7")
            .await;
    }
    assert_eq!(env.upstream_count(), 2);
    env.send_from_ip("+14155550199", "203.0.113.8").await;
    assert_eq!(env.upstream_count(), 3);
    assert!(env
        .fake
        .requests()
        .iter()
        .all(|r| r.headers.get("x-smsguard-client-ip").is_none()));
}

#[tokio::test]
async fn without_the_header_the_apps_own_address_is_not_limited_as_one_user() {
    // Only servers hold Twilio credentials: the TCP peer is the app's server,
    // shared by all its users, so client_ip keys do not apply to it.
    let env = start(
        "[[limit]]\nname = \"ip\"\nkey = \"client_ip\"\nrates = [\"2/1h\"]\n[adaptive]\n[adaptive.distinct]\nclient_ip = [\"2/1h\"]\nuser = []\nregions = 0\n",
    )
    .await;
    // Numbers in five area codes: no surge in any one block.
    let areas = [415, 212, 312, 617, 713];
    for area in areas {
        env.send(&format!("+1{area}5550120")).await;
    }
    assert_eq!(env.upstream_count(), 5);
    // With the header, the same limits apply to the end user's address.
    for area in areas {
        env.send_from_ip(&format!("+1{area}5550121"), "203.0.113.7")
            .await;
    }
    assert_eq!(env.upstream_count(), 7);
}

// ---------------------------------------------------------------- fail closed

async fn refused(env: &Env, path: &str, headers: &[(&str, &str)], body: &str) -> serde_json::Value {
    let before = env.upstream_count();
    let r = env.post_with(path, body, headers).await;
    assert!(
        r.status.is_client_error(),
        "{path} {body:?}: {} {}",
        r.status,
        r.text()
    );
    assert_eq!(
        env.upstream_count(),
        before,
        "{path} {body:?} reached Twilio"
    );
    r.json()
}

#[tokio::test]
async fn a_send_the_guard_cannot_read_with_certainty_never_reaches_twilio() {
    let env = start(GEO).await;
    let uz = "To=%2B998993941234";
    refused(&env, MESSAGES, &[], "To=%2B14155550123&to=%2B998993941234").await;
    refused(&env, MESSAGES, &[], "To=%2B14155550123&TO=%2B998993941234").await;
    refused(&env, MESSAGES, &[], "To=%2B14155550123&To=%2B14155550123").await;
    refused(
        &env,
        &format!("{MESSAGES}?To=%2B998993941234"),
        &[],
        "To=%2B14155550123",
    )
    .await;
    refused(&env, MESSAGES, &[], "From=%2B15017122661&Body=x").await;
    refused(&env, MESSAGES, &[], "To=%2B1415555%FF0123").await;
    refused(&env, MESSAGES, &[], "To=%2B14155550123&Body=%ZZ").await;
    let big = format!("To=%2B14155550123&Body={}", "a".repeat(70_000));
    refused(&env, MESSAGES, &[], &big).await;
    // Headers override the form content type set by the helper.
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(env.url(MESSAGES))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from("{\"To\": \"+998993941234\"}")))
        .unwrap();
    let r = env.request(b).await;
    assert!(r.status.is_client_error());
    b = Request::builder()
        .method(Method::POST)
        .uri(env.url(MESSAGES))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-encoding", "gzip")
        .body(Full::new(Bytes::from(uz)))
        .unwrap();
    assert!(env.request(b).await.status.is_client_error());
    // Invisible or non-ASCII digits in the number.
    refused(&env, MESSAGES, &[], "To=%2B1415555%E2%80%8B0123").await;
    refused(&env, MESSAGES, &[], "To=%2B%D9%A9%D9%A9%D9%A8993941234").await;
    assert_eq!(env.upstream_count(), 0);
}

#[tokio::test]
async fn a_missing_to_gets_twilios_21604() {
    let env = start("").await;
    let v = refused(&env, MESSAGES, &[], "From=%2B15017122661&Body=x").await;
    assert_eq!(v["code"], 21604);
}

#[tokio::test]
async fn path_tricks_are_still_judged_as_sends() {
    let env = start(GEO).await;
    let paths = [
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages",
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.xml",
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/messages.JSON",
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json/",
        "//2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef//Messages.json",
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/./Messages.json",
        "/2010-04-01/Accounts/x/../AC0123456789abcdef0123456789abcdef/Messages.json",
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/%4Dessages.json",
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/%254Dessages.json",
    ];
    for p in paths {
        let r = env.post_form(p, "To=%2B998993941234&Body=x").await;
        assert_eq!(r.status, StatusCode::CREATED, "{p}");
        assert_eq!(env.upstream_count(), 0, "{p} reached Twilio unjudged");
    }
}

#[tokio::test]
async fn stopping_finishes_the_request_in_flight() {
    let env = start("").await;
    env.fake.set_delay(Duration::from_millis(400));
    let client = env.client.clone();
    let url = env.url(MESSAGES);
    let inflight = tokio::spawn(async move {
        let req = Request::post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from("To=%2B14155550123")))
            .unwrap();
        client.request(req).await.map(|r| r.status())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let common::Env { guard, fake, .. } = env;
    guard.stop().await;
    assert_eq!(inflight.await.unwrap().unwrap(), StatusCode::CREATED);
    assert_eq!(fake.count(), 1);
}

#[tokio::test]
async fn the_user_header_feeds_the_user_limit_and_never_reaches_twilio() {
    let env = start("[[limit]]\nname = \"user\"\nkey = \"user\"\nrates = [\"1/1h\"]\n").await;
    let form = "To=%2B14155550123&Body=x";
    env.post_with(MESSAGES, form, &[("x-smsguard-user", "u-1")])
        .await;
    env.post_with(
        MESSAGES,
        "To=%2B14155550124&Body=x",
        &[("x-smsguard-user", "u-1")],
    )
    .await;
    assert_eq!(env.upstream_count(), 1, "second send of u-1 is limited");
    env.post_with(
        MESSAGES,
        "To=%2B14155550125&Body=x",
        &[("x-smsguard-user", "u-2")],
    )
    .await;
    assert_eq!(env.upstream_count(), 2);
    assert!(env
        .fake
        .requests()
        .iter()
        .all(|r| r.headers.get("x-smsguard-user").is_none()));
}

#[tokio::test]
async fn a_shadowed_fake_echoes_from_in_e164_like_twilio() {
    let env = start(GEO).await;
    // "+" not percent-encoded: the form decodes it to a space.
    let v = env
        .post_form(MESSAGES, "To=+998993941234&From=+15017122661&Body=x")
        .await
        .json();
    assert_eq!(v["to"], "+998993941234");
    assert_eq!(v["from"], "+15017122661");
    let v = env
        .post_form(
            MESSAGES,
            "To=whatsapp:%2B998993941234&From=whatsapp:%2B15017122661",
        )
        .await
        .json();
    assert_eq!(v["to"], "whatsapp:+998993941234");
    assert_eq!(v["from"], "whatsapp:+15017122661");
    // RCS without fallback is judged as the number it carries (Uzbekistan
    // is not allowed here) and its fake echoes the address as Twilio does.
    let v = env
        .post_form(
            MESSAGES,
            "To=rcs:%2B998993941234&MessagingServiceSid=MG0123456789abcdef0123456789abcdef&Body=x",
        )
        .await
        .json();
    assert_eq!(v["to"], "rcs:+998993941234");
    assert_eq!(env.fake.count(), 0, "nothing reached Twilio");
    // An allowed country's RCS send is forwarded unchanged.
    let r = env
        .post_form(MESSAGES, "To=rcs:%2B14155550123&From=%2B15017122661&Body=x")
        .await;
    assert_eq!(r.status, http::StatusCode::CREATED, "{}", r.text());
    assert_eq!(env.fake.count(), 1);
    assert_eq!(
        env.fake.requests()[0].body,
        "To=rcs:%2B14155550123&From=%2B15017122661&Body=x".as_bytes()
    );
}

#[tokio::test]
async fn a_send_with_a_query_string_or_a_huge_path_is_refused() {
    let env = start("").await;
    let r = env
        .post_form(
            &format!("{MESSAGES}?RiskCheck=disable"),
            "To=%2B14155550123",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let long = format!("/2010-04-01/Accounts/{}/Messages.json", "A".repeat(9_000));
    let r = env.post_form(&long, "To=%2B14155550123").await;
    assert_eq!(r.status, StatusCode::URI_TOO_LONG);
    assert_eq!(env.upstream_count(), 0);
}

// ---------------------------------------------------------------- methods

#[tokio::test]
async fn a_send_path_under_any_other_writing_method_is_refused_never_forwarded() {
    let env = start("[geo]\nallow = [\"US\"]\n").await;
    let paths = [
        MESSAGES.to_string(),
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json".to_string(),
        "/v2/Services/VA0123456789abcdef0123456789abcdef/Verifications".to_string(),
    ];
    for method in ["post", "Post", "pOST", "PUT", "PATCH", "PROPFIND"] {
        for path in &paths {
            let r = env
                .request(
                    req(
                        Method::from_bytes(method.as_bytes()).unwrap(),
                        env.url(path),
                    )
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(
                        "To=%2B998993941234&From=%2B15017122661&Body=x&Channel=sms",
                    )))
                    .unwrap(),
                )
                .await;
            assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(r.json()["code"], 20004, "{method} {path}");
        }
    }
    assert_eq!(env.upstream_count(), 0, "nothing reached Twilio");
    // Reading is not sending: a GET of the message list is forwarded.
    let r = env
        .request(
            req(Method::GET, env.url(MESSAGES))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(env.upstream_count(), 1);
}

#[tokio::test]
async fn connect_without_the_proxy_listener_is_refused_not_forwarded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = start("").await;
    let mut s = tokio::net::TcpStream::connect(env.guard.addr())
        .await
        .unwrap();
    s.write_all(b"CONNECT api.twilio.com:443 HTTP/1.1\r\nHost: api.twilio.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the guard answers")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert_eq!(env.upstream_count(), 0);
}
