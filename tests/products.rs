//! Every paid path (Messages, Calls, Verify), the fakes staying consistent
//! afterwards, shadow timing, and the money stages (budget, balance).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use smsguard::twilio::fake::FakeTwilio;

const GEO: &str = "[geo]\nallow = [\"US\", \"CA\", \"GB\", \"IE\"]\n";
const CALLS: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json";
const SERVICE: &str = "VA0123456789abcdef0123456789abcdef";

fn verifications() -> String {
    format!("/v2/Services/{SERVICE}/Verifications")
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    sorted(v.as_object().unwrap().keys().cloned().collect())
}

async fn get(env: &Env, path: &str) -> Answer {
    env.request(
        Request::builder()
            .method(Method::GET)
            .uri(env.url(path))
            .header("authorization", AUTH)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

// ---------------------------------------------------------------- Verify

#[tokio::test]
async fn a_verify_sms_to_a_blocked_region_gets_a_fake_verification_shaped_like_twilios() {
    let env = start(GEO).await;
    let r = env
        .post_form(&verifications(), "To=%2B998993941234&Channel=sms")
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(env.upstream_count(), 0);
    let v = r.json();
    assert_eq!(
        keys(&v),
        sorted(schema_properties(
            "verify_v2.json",
            "verify.v2.service.verification"
        ))
    );
    let sid = v["sid"].as_str().unwrap();
    assert!(regex::Regex::new("^VE[0-9a-f]{32}$").unwrap().is_match(sid));
    assert_eq!(v["status"], "pending");
    assert_eq!(v["service_sid"], SERVICE);
    assert_eq!(v["account_sid"], ACCOUNT, "the Basic-auth account");
    assert!(regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
        .unwrap()
        .is_match(v["date_created"].as_str().unwrap()));
    assert_eq!(v["send_code_attempts"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["url"],
        format!("https://verify.twilio.com/v2/Services/{SERVICE}/Verifications/{sid}")
    );
    assert_eq!(r.headers["x-api-domain"], "verify.twilio.com");
}

#[tokio::test]
async fn verify_channels_that_cost_per_number_are_judged_and_email_passes_unjudged() {
    let api = FakeTwilio::start().await.unwrap();
    let verify = FakeTwilio::start().await.unwrap();
    let env = start_with(
        api,
        &format!("{GEO}[upstream]\nverify = \"{}\"\n", verify.url()),
    )
    .await;
    for ch in ["sms", "call", "whatsapp", "auto", "SMS"] {
        env.post_form(
            &verifications(),
            &format!("To=%2B998993941234&Channel={ch}"),
        )
        .await;
    }
    assert_eq!(verify.count(), 0, "all judged and shadowed");
    let r = env
        .post_form(&verifications(), "To=someone%40example.com&Channel=email")
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = env
        .post_form(&verifications(), "To=%2B14155550123&Channel=sms")
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        verify.count(),
        2,
        "email and the allowed sms went to upstream.verify"
    );
    assert_eq!(
        env.fake.count(),
        0,
        "nothing under /v2/ went to upstream.api"
    );
    assert_eq!(
        verify.requests()[0].body,
        "To=someone%40example.com&Channel=email".as_bytes()
    );
    // A duplicated Channel cannot be read with certainty.
    let r = env
        .post_form(
            &verifications(),
            "To=%2B998993941234&Channel=email&Channel=sms",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(verify.count(), 2);
}

#[tokio::test]
async fn verify_rejections_use_verify_codes() {
    let env = start(&format!(
        "{GEO}[actions]\ndefault = \"reject\"\n[[limit]]\nname = \"n\"\nkey = \"to\"\nrates = [\"1/1h\"]\n[[limit]]\nname = \"p\"\nkey = \"prefix:6\"\nrates = [\"3/1h\"]\nblock = \"1h\"\n"
    ))
    .await;
    let code = |r: &Answer| (r.status, r.json()["code"].as_u64().unwrap());
    let r = env
        .post_form(&verifications(), "To=%2B998993941234&Channel=sms")
        .await;
    assert_eq!(code(&r), (StatusCode::FORBIDDEN, 60605));
    env.post_form(&verifications(), "To=%2B14155550123&Channel=sms")
        .await;
    let r = env
        .post_form(&verifications(), "To=%2B14155550123&Channel=sms")
        .await;
    assert_eq!(code(&r), (StatusCode::TOO_MANY_REQUESTS, 60203));
    for i in 0..3 {
        env.post_form(
            &verifications(),
            &format!("To=%2B1415555018{i}&Channel=sms"),
        )
        .await;
    }
    let r = env
        .post_form(&verifications(), "To=%2B14155550190&Channel=sms")
        .await;
    assert_eq!(code(&r), (StatusCode::FORBIDDEN, 60410), "{}", r.text());
}

// ---------------------------------------------------------------- Voice

#[tokio::test]
async fn a_call_is_judged_on_to_and_a_blocked_one_gets_a_fake_call() {
    let env = start(GEO).await;
    let r = env
        .post_form(
            CALLS,
            "To=%2B998993941234&From=%2B15017122661&Url=https%3A%2F%2Fexample.com%2Ftwiml",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(env.upstream_count(), 0);
    let v = r.json();
    assert_eq!(
        keys(&v),
        sorted(schema_properties(
            "api_v2010.json",
            "api.v2010.account.call"
        ))
    );
    assert!(regex::Regex::new("^CA[0-9a-f]{32}$")
        .unwrap()
        .is_match(v["sid"].as_str().unwrap()));
    assert_eq!(v["status"], "queued");
    let r = env
        .post_form(
            "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls",
            "To=%2B14155550123&From=%2B15017122661&Url=x",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(env.upstream_count(), 1);
}

// ---------------------------------------------------------------- consistency

#[tokio::test]
async fn a_later_get_of_a_fake_sid_is_answered_by_the_guard_with_the_same_resource() {
    let env = start(GEO).await;
    let m = env.send("+998993941234").await.json();
    let c = env
        .post_form(CALLS, "To=%2B998993941234&From=%2B15017122661&Url=x")
        .await
        .json();
    let v = env
        .post_form(&verifications(), "To=%2B998993941234&Channel=sms")
        .await
        .json();
    let m_sid = m["sid"].as_str().unwrap();
    let r = get(
        &env,
        &format!("/2010-04-01/Accounts/{ACCOUNT}/Messages/{m_sid}.json"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), m);
    let r = get(
        &env,
        &format!(
            "/2010-04-01/Accounts/{ACCOUNT}/Calls/{}.json",
            c["sid"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(r.json(), c);
    let r = get(
        &env,
        &format!(
            "/v2/Services/{SERVICE}/Verifications/{}",
            v["sid"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(r.json(), v);
    assert_eq!(
        env.upstream_count(),
        0,
        "nothing about a fake reaches Twilio"
    );
    // A sid the guard did not make is Twilio's business.
    get(
        &env,
        &format!("/2010-04-01/Accounts/{ACCOUNT}/Messages/SM00000000000000000000000000000000.json"),
    )
    .await;
    assert_eq!(env.upstream_count(), 1);
}

#[tokio::test]
async fn checking_a_shadowed_verification_answers_like_twilio_with_nothing_pending() {
    let env = start(GEO).await;
    let v = env
        .post_form(&verifications(), "To=%2B998993941234&Channel=sms")
        .await
        .json();
    let check = format!("/v2/Services/{SERVICE}/VerificationCheck");
    let r = env
        .post_form(&check, "To=%2B998993941234&Code=123456")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    assert_eq!(r.json()["code"], 20404);
    let r = env
        .post_form(
            &check,
            &format!("VerificationSid={}&Code=123456", v["sid"].as_str().unwrap()),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(env.upstream_count(), 0);
    // A check for a number the guard never shadowed goes to Twilio as is.
    let r = env.post_form(&check, "To=%2B14155550123&Code=123456").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        env.fake.requests()[0].body,
        "To=%2B14155550123&Code=123456".as_bytes()
    );
}

// ---------------------------------------------------------------- timing

#[tokio::test]
async fn fake_answers_take_as_long_as_twilios_recent_answers() {
    let env = start(&format!(
        "{GEO}[shadow]\ntiming = true\ndefault_latency = \"300ms\"\n"
    ))
    .await;
    let t = Instant::now();
    env.send("+998993941234").await;
    assert!(
        t.elapsed() >= Duration::from_millis(290),
        "default before any real answer: {:?}",
        t.elapsed()
    );
    // Twilio now answers in ~600 ms; the next fake follows it.
    env.fake.set_delay(Duration::from_millis(600));
    env.send("+14155550123").await;
    env.fake.set_delay(Duration::ZERO);
    let t = Instant::now();
    env.send("+998993941235").await;
    assert!(
        t.elapsed() >= Duration::from_millis(580),
        "paced like the real one: {:?}",
        t.elapsed()
    );
}

// ---------------------------------------------------------------- budget

#[tokio::test]
async fn the_budget_cap_holds_exactly_under_concurrent_sends() {
    let env =
        Arc::new(start("[budget]\nhourly = \"0.25\"\nprices = { default = \"0.01\" }\n").await);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let env = env.clone();
        tasks.push(tokio::spawn(async move {
            env.send(&format!("+1415555{i:04}")).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    assert_eq!(env.upstream_count(), 25, "0.25 / 0.01 sends, not one more");
    // The next UTC hour has its own budget.
    env.clock.advance(Duration::from_secs(3600));
    env.send("+14155559999").await;
    assert_eq!(env.upstream_count(), 26);
}

#[tokio::test]
async fn segments_media_and_products_are_priced_apart() {
    let env = start(
        "[budget]\nhourly = \"0.10\"\nprices = { default = \"0.01\" }\nmms_prices = { default = \"0.04\" }\nvoice_prices = { default = \"0.05\" }\n",
    )
    .await;
    // 200 GSM characters = 2 segments = 0.02; an MMS = 0.04; a call = 0.05: 0.11 > 0.10.
    let long = "a".repeat(200);
    env.post_form(MESSAGES, &format!("To=%2B14155550001&Body={long}"))
        .await;
    env.post_form(
        MESSAGES,
        "To=%2B14155550002&MediaUrl=https%3A%2F%2Fx%2Fa.png",
    )
    .await;
    assert_eq!(env.upstream_count(), 2);
    env.post_form(CALLS, "To=%2B14155550003&From=%2B15017122661&Url=x")
        .await;
    assert_eq!(env.upstream_count(), 2, "the call would pass the cap");
    env.post_form(MESSAGES, "To=%2B14155550004&Body=short")
        .await;
    assert_eq!(env.upstream_count(), 3, "0.07 + 0.01 fits");
}

// ---------------------------------------------------------------- balance

#[tokio::test]
async fn a_burst_of_sends_makes_one_balance_request() {
    let env = Arc::new(start("[balance]\nmin = \"1.00\"\nrefresh = \"60s\"\n").await);
    env.fake.set_delay(Duration::from_millis(300));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let env = env.clone();
        tasks.push(tokio::spawn(async move {
            env.send(&format!("+1415555{i:04}")).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    let balance: Vec<_> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.uri.path().ends_with("/Balance.json"))
        .collect();
    assert_eq!(balance.len(), 1, "single flight");
    assert_eq!(
        balance[0].headers["authorization"], AUTH,
        "the send's own credentials"
    );
    assert_eq!(
        balance[0].uri.path(),
        format!("/2010-04-01/Accounts/{ACCOUNT}/Balance.json")
    );
    assert_eq!(env.upstream_count(), 51);
}

#[tokio::test]
async fn below_the_minimum_balance_sends_are_blocked_and_refresh_sees_a_top_up() {
    let env = start("[balance]\nmin = \"1.00\"\nrefresh = \"60s\"\n").await;
    env.fake.set_balance("0.50");
    env.send("+14155550001").await;
    let sends = |env: &Env| {
        env.fake
            .requests()
            .iter()
            .filter(|r| r.uri.path().ends_with("Messages.json"))
            .count()
    };
    assert_eq!(sends(&env), 0, "balance 0.50 < 1.00");
    env.fake.set_balance("25.00");
    env.send("+14155550002").await;
    assert_eq!(sends(&env), 0, "cached for the refresh interval");
    env.clock.advance(Duration::from_secs(61));
    // The stale value answers while one refresh runs behind it.
    env.send("+14155550003").await;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if env
            .fake
            .requests()
            .iter()
            .filter(|r| r.uri.path().ends_with("Balance.json"))
            .count()
            == 2
        {
            break;
        }
    }
    env.send("+14155550004").await;
    assert_eq!(sends(&env), 1, "the top-up is seen after the refresh");
}

#[tokio::test]
async fn when_twilio_cannot_be_asked_on_error_decides() {
    let closed = start("[balance]\nmin = \"1.00\"\non_error = \"block\"\n").await;
    closed
        .fake
        .set_failure(Some(StatusCode::SERVICE_UNAVAILABLE));
    let r = closed.send("+14155550001").await;
    assert_eq!(r.status, StatusCode::CREATED, "shadowed");
    assert!(closed
        .fake
        .requests()
        .iter()
        .all(|r| r.uri.path().ends_with("Balance.json")));
    let open = start("[balance]\nmin = \"1.00\"\non_error = \"allow\"\n").await;
    open.fake.set_failure(Some(StatusCode::SERVICE_UNAVAILABLE));
    open.send("+14155550001").await;
    assert!(open
        .fake
        .requests()
        .iter()
        .any(|r| r.uri.path().ends_with("Messages.json")));
}

/// Balance requests that reached the fake.
fn balance_requests(env: &Env) -> usize {
    env.fake
        .requests()
        .iter()
        .filter(|r| r.uri.path().ends_with("/Balance.json"))
        .count()
}

#[tokio::test]
async fn a_send_blocked_before_the_balance_stage_does_not_wait_for_the_balance() {
    let env = start(&format!(
        "{GEO}[balance]\nmin = \"1.00\"\nrefresh = \"60s\"\n[[limit]]\nname = \"n\"\nkey = \"to\"\nrates = [\"1/1h\"]\n"
    ))
    .await;
    // Twilio hangs on the balance (longer than the test's patience).
    env.fake.set_balance_delay(Duration::from_secs(60));
    let patience = Duration::from_secs(3);
    let r = tokio::time::timeout(patience, env.send("+998993941234"))
        .await
        .expect("a geo-blocked send is answered without waiting for the balance");
    assert_eq!(r.status, StatusCode::CREATED, "shadowed: {}", r.text());
    assert!(r.json()["sid"].as_str().unwrap().starts_with("SM"));
    let r = tokio::time::timeout(
        patience,
        env.post_form(CALLS, "To=%2B998993941234&From=%2B15017122661&Url=x"),
    )
    .await
    .expect("a geo-blocked call too");
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(balance_requests(&env), 0, "the balance was never asked for");
    assert_eq!(env.upstream_count(), 0);

    // A send that passes every other stage is judged on the balance.
    env.fake.set_balance_delay(Duration::ZERO);
    env.fake.set_balance("0.50");
    let r = tokio::time::timeout(patience, env.send("+14155550123"))
        .await
        .expect("answered");
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(balance_requests(&env), 1, "asked once");
    assert_eq!(
        env.upstream_count(),
        1,
        "only the balance request: 0.50 < 1.00 shadows the send"
    );
    // The same number again is blocked by its limit (counted once above,
    // not twice): no forward, and the cached balance is not asked again.
    env.clock.advance(Duration::from_secs(61));
    env.fake.set_balance_delay(Duration::from_secs(60));
    let r = tokio::time::timeout(patience, env.send("+14155550123"))
        .await
        .expect("a limited send does not wait for a stale balance either");
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(balance_requests(&env), 1);
}

#[tokio::test]
async fn a_send_that_passes_every_stage_is_forwarded_once_the_balance_allows_it() {
    let env = start(&format!(
        "{GEO}[balance]\nmin = \"1.00\"\nrefresh = \"60s\"\n[[limit]]\nname = \"n\"\nkey = \"to\"\nrates = [\"2/1h\"]\n"
    ))
    .await;
    env.fake.set_balance_delay(Duration::from_millis(200));
    let r = env.send("+14155550123").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = env.send("+14155550123").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let sends = env
        .fake
        .requests()
        .iter()
        .filter(|r| r.uri.path().ends_with("Messages.json"))
        .count();
    assert_eq!(sends, 2, "two sends fit a 2/1h limit: each counted once");
    assert_eq!(balance_requests(&env), 1);
    let r = env.send("+14155550123").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(env.upstream_count(), 3, "the third is limited");
}

// ---------------------------------------------------------------- conference participants

fn participants(conference: &str) -> String {
    format!("/2010-04-01/Accounts/{ACCOUNT}/Conferences/{conference}/Participants.json")
}

/// The keys of Twilio's Participant resource (not in the contract's
/// pruned OpenAPI file).
const PARTICIPANT_KEYS: [&str; 15] = [
    "account_sid",
    "call_sid",
    "label",
    "call_sid_to_coach",
    "coaching",
    "conference_sid",
    "date_created",
    "date_updated",
    "end_conference_on_exit",
    "muted",
    "hold",
    "start_conference_on_enter",
    "status",
    "queue_time",
    "uri",
];

const CF: &str = "CF0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn an_allowed_conference_participant_is_forwarded_byte_for_byte() {
    let env = start(&format!(
        "{GEO}[[limit]]\nname = \"n\"\nkey = \"to\"\nrates = [\"1/1h\"]\n"
    ))
    .await;
    let form = "From=%2B15017122661&To=%2B14155550123&Label=customer&Beep=onEnter";
    let r = env.post_form(&participants(CF), form).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let seen = env.fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri.path(), participants(CF));
    assert_eq!(seen[0].body, form.as_bytes());
    // Twilio's answer, as Twilio gave it.
    let p = r.json();
    assert_eq!(p["conference_sid"], CF);
    assert_eq!(p["label"], "customer");
    assert!(p["call_sid"].as_str().unwrap().starts_with("CA"));
    // Its call is Twilio's, not a fake: a GET goes to Twilio.
    get(
        &env,
        &format!(
            "/2010-04-01/Accounts/{ACCOUNT}/Calls/{}.json",
            p["call_sid"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(env.upstream_count(), 2);
    // It was judged, not waved through: it counted against the number's
    // limit, so a second call to the same number, as a participant or a
    // call, is shadowed.
    let r = env.post_form(&participants(CF), form).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = env
        .post_form(CALLS, "From=%2B15017122661&To=%2B14155550123&Url=x")
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(env.upstream_count(), 2, "both limited");
}

#[tokio::test]
async fn a_participant_to_a_blocked_destination_gets_a_fake_participant_and_twilio_sees_nothing() {
    let env = start(GEO).await;
    let r = env
        .post_form(
            &participants(CF),
            "From=%2B15017122661&To=%2B998993941234&Label=agent&Muted=True&EndConferenceOnExit=true",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(env.upstream_count(), 0);
    assert_eq!(r.headers["x-api-domain"], "api.twilio.com");
    assert!(r.headers["twilio-request-id"]
        .to_str()
        .unwrap()
        .starts_with("RQ"));
    let p = r.json();
    assert_eq!(
        keys(&p),
        sorted(PARTICIPANT_KEYS.map(String::from).to_vec())
    );
    let call_sid = p["call_sid"].as_str().unwrap().to_string();
    assert!(regex::Regex::new("^CA[0-9a-f]{32}$")
        .unwrap()
        .is_match(&call_sid));
    assert_eq!(p["account_sid"], ACCOUNT);
    assert_eq!(p["conference_sid"], CF);
    assert_eq!(p["status"], "queued");
    assert_eq!(p["label"], "agent");
    assert_eq!(p["muted"], true);
    assert_eq!(p["hold"], false);
    assert_eq!(p["end_conference_on_exit"], true);
    assert_eq!(p["start_conference_on_enter"], true);
    assert_eq!(p["coaching"], false);
    assert_eq!(p["call_sid_to_coach"], serde_json::Value::Null);
    assert!(p["queue_time"].is_string());
    let rfc2822 = regex::Regex::new(
        r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000$",
    )
    .unwrap();
    assert!(rfc2822.is_match(p["date_created"].as_str().unwrap()));
    assert!(rfc2822.is_match(p["date_updated"].as_str().unwrap()));
    assert_eq!(
        p["uri"],
        format!("/2010-04-01/Accounts/{ACCOUNT}/Conferences/{CF}/Participants/{call_sid}.json")
    );

    // The fake call and the fake participant are answered by the guard.
    let c = get(
        &env,
        &format!("/2010-04-01/Accounts/{ACCOUNT}/Calls/{call_sid}.json"),
    )
    .await;
    assert_eq!(c.status, StatusCode::OK);
    let c = c.json();
    assert_eq!(c["sid"], call_sid.as_str());
    assert_eq!(c["to"], "+998993941234");
    assert_eq!(c["status"], "queued");
    assert_eq!(
        keys(&c),
        sorted(schema_properties(
            "api_v2010.json",
            "api.v2010.account.call"
        ))
    );
    for id in [call_sid.as_str(), "agent"] {
        let again = get(
            &env,
            &format!("/2010-04-01/Accounts/{ACCOUNT}/Conferences/{CF}/Participants/{id}.json"),
        )
        .await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.json(), p, "{id}");
    }
    assert_eq!(
        env.upstream_count(),
        0,
        "nothing about a fake reaches Twilio"
    );
}

#[tokio::test]
async fn a_participant_in_a_conference_named_by_friendly_name_reports_one_cf_sid() {
    let env = start(GEO).await;
    let path = participants("Support%20Room");
    let a = env
        .post_form(&path, "From=%2B15017122661&To=%2B998993941234")
        .await
        .json();
    let b = env
        .post_form(&path, "From=%2B15017122661&To=%2B998993941235")
        .await
        .json();
    let cf = a["conference_sid"].as_str().unwrap();
    assert!(regex::Regex::new("^CF[0-9a-f]{32}$").unwrap().is_match(cf));
    assert_eq!(b["conference_sid"], cf, "one conference, one sid");
    assert_ne!(a["call_sid"], b["call_sid"]);
    assert_eq!(env.upstream_count(), 0);
}

#[tokio::test]
async fn participant_path_spellings_are_judged_too() {
    let env = start(GEO).await;
    for path in [
        format!("/2010-04-01/accounts/{ACCOUNT}/conferences/{CF}/participants.json"),
        format!("/2010-04-01/Accounts/{ACCOUNT}/Conferences/{CF}/%50articipants.json"),
        format!("/2010-04-01/Accounts/{ACCOUNT}/Conferences/{CF}/Participants"),
        format!("/2010-04-01/Accounts/{ACCOUNT}/Conferences/{CF}/Participants.json/"),
        format!("/2010-04-01/Accounts/{ACCOUNT}/Conferences/{CF}/Participants/"),
        format!("/2010-04-01/Accounts/{ACCOUNT}/%43onferences/{CF}/PARTICIPANTS"),
    ] {
        let r = env
            .post_form(&path, "From=%2B15017122661&To=%2B998993941234")
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{path}: {}", r.text());
        assert_eq!(r.json()["status"], "queued", "{path}");
        assert_eq!(env.upstream_count(), 0, "{path} reached Twilio");
    }
    // A writing method other than POST on the send path is refused.
    let r = env
        .request(
            Request::builder()
                .method(Method::PUT)
                .uri(env.url(&participants(CF)))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", AUTH)
                .body(Full::new(Bytes::from("To=%2B998993941234")))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    // Updating a participant (mute, hold) dials nobody: forwarded as is.
    let update = format!("/2010-04-01/Accounts/{ACCOUNT}/Conferences/{CF}/Participants/CA1.json");
    let r = env.post_form(&update, "Muted=true").await;
    assert_eq!(r.status, StatusCode::OK, "the fake's echo: {}", r.text());
    assert_eq!(env.upstream_count(), 1);
}

#[tokio::test]
async fn a_call_or_participant_to_a_client_identity_passes_and_to_sip_is_refused() {
    // A Twilio Client identity rings an app, never a phone network: calls
    // and participants to it are forwarded unjudged. A SIP address can
    // reach paid numbers through a trunk: refused like an invalid number,
    // the same for a call and a participant.
    let env = start(GEO).await;
    let form = "From=%2B15017122661&To=client%3Aalice&Url=x";
    let call = env.post_form(CALLS, form).await;
    assert_eq!(call.status, StatusCode::CREATED, "{}", call.text());
    let part = env.post_form(&participants(CF), form).await;
    assert_eq!(part.status, StatusCode::CREATED, "{}", part.text());
    assert_eq!(env.upstream_count(), 2, "both reached Twilio");
    let forwarded: Vec<String> = env
        .fake
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(forwarded.iter().all(|b| b == form), "{forwarded:?}");
    // Only the exact prefix: `Client:` is read as a number, and refused.
    for to in ["sip%3Aalice%40example.com", "Client%3Aalice", "client%3A"] {
        let form = format!("From=%2B15017122661&To={to}&Url=x");
        let call = env.post_form(CALLS, &form).await;
        let part = env.post_form(&participants(CF), &form).await;
        assert_eq!(
            call.status,
            StatusCode::BAD_REQUEST,
            "{to}: {}",
            call.text()
        );
        assert_eq!(call.status, part.status, "{to}");
        assert_eq!(call.json()["code"], part.json()["code"], "{to}");
    }
    assert_eq!(env.upstream_count(), 2);
}

// ---------------------------------------------------------------- Verify v1

#[tokio::test]
async fn verify_v1_is_judged_and_shadowed_like_v2() {
    let api = FakeTwilio::start().await.unwrap();
    let verify = FakeTwilio::start().await.unwrap();
    let env = start_with(
        api,
        &format!("{GEO}[upstream]\nverify = \"{}\"\n", verify.url()),
    )
    .await;
    let v1 = format!("/v1/Services/{SERVICE}/Verifications");
    let r = env.post_form(&v1, "To=%2B998993941234&Channel=sms").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(verify.count() + env.fake.count(), 0, "shadowed");
    let v = r.json();
    assert_eq!(
        keys(&v),
        sorted(schema_properties(
            "verify_v2.json",
            "verify.v2.service.verification"
        ))
    );
    let sid = v["sid"].as_str().unwrap();
    assert_eq!(v["status"], "pending");
    assert_eq!(
        v["url"],
        format!("https://verify.twilio.com/v1/Services/{SERVICE}/Verifications/{sid}")
    );
    assert_eq!(r.headers["x-api-domain"], "verify.twilio.com");
    // Spellings of v1 too.
    for path in [
        format!("/V1/services/{SERVICE}/verifications"),
        format!("/v1/Services/{SERVICE}/Verifications/"),
        format!("/v1/Services/{SERVICE}/%56erifications"),
    ] {
        let r = env
            .post_form(&path, "To=%2B998993941234&Channel=call")
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{path}");
    }
    assert_eq!(verify.count() + env.fake.count(), 0);
    // A check of the shadowed verification is answered here, as on v2.
    let r = env
        .post_form(
            &format!("/v1/Services/{SERVICE}/VerificationCheck"),
            "To=%2B998993941234&Code=123456",
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get(&env, &format!("/v1/Services/{SERVICE}/Verifications/{sid}")).await;
    assert_eq!(r.json(), v);
    assert_eq!(verify.count() + env.fake.count(), 0);
    // An allowed one goes to upstream.verify, unchanged.
    let r = env.post_form(&v1, "To=%2B14155550123&Channel=sms").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(verify.count(), 1);
    assert_eq!(verify.requests()[0].uri.path(), v1);
    assert_eq!(env.fake.count(), 0);
}

#[tokio::test]
async fn a_verification_status_update_is_not_mistaken_for_a_send() {
    let api = FakeTwilio::start().await.unwrap();
    let verify = FakeTwilio::start().await.unwrap();
    let env = start_with(
        api,
        &format!("{GEO}[upstream]\nverify = \"{}\"\n", verify.url()),
    )
    .await;
    for version in ["v2", "v1"] {
        let path = format!(
            "/{version}/Services/{SERVICE}/Verifications/VE0123456789abcdef0123456789abcdef"
        );
        let r = env.post_form(&path, "Status=canceled").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert_eq!(verify.count(), 2, "both forwarded unjudged");
    assert_eq!(verify.requests()[1].body, "Status=canceled".as_bytes());
}
