//! A shadowed message lives like a real one: its status moves on from
//! `queued` to `sent` to its final status (a GET follows it), and the app's
//! `StatusCallback` is posted at each change, in Twilio's order, with
//! Twilio's fields, signed as Twilio signs (checked with twilio-python's own
//! `RequestValidator`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::receiver::Receiver;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;

/// The auth token inside `common::AUTH`.
const TOKEN: &str = "planted-auth-token-7f3a";
/// GB is not allowed: a send there is shadowed.
const POLICY: &str = "[geo]\nallow = [\"US\"]\n";

/// A status callback as the app got it.
#[derive(Debug, Clone)]
struct Posted {
    uri: String,
    signature: Option<String>,
    params: Vec<(String, String)>,
}

impl Posted {
    fn get(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// The callbacks the app's endpoint got once it has `n`, or after 20 s.
async fn wait_for(app: &Receiver, n: usize) -> Vec<Posted> {
    app.wait_for(n, Duration::from_secs(20))
        .await
        .iter()
        .map(|r| Posted {
            uri: r.uri.clone(),
            signature: r
                .headers
                .get("x-twilio-signature")
                .map(|v| v.to_str().unwrap().to_string()),
            params: r.form(),
        })
        .collect()
}

fn python() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "twilio-python is missing at {}: .ci/run installs it",
        path.display()
    );
    eprintln!("skipping the RequestValidator check: no {}", path.display());
    None
}

async fn get_message(env: &Env, sid: &str) -> serde_json::Value {
    let path = format!("/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json");
    let req = Request::get(env.url(&path))
        .header("authorization", AUTH)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = env.request(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

#[tokio::test]
async fn a_shadowed_message_moves_on_and_posts_signed_callbacks_in_twilios_order() {
    let env = start(&format!("{POLICY}[admin]\naddr = \"127.0.0.1:0\"\n")).await;
    let app = Receiver::start(0).await;
    let callback = app.url("/twilio/status?tenant=7");
    let form = format!(
        "To=%2B447421370001&From=%2B15017122661&Body=Your+code+is+482913&StatusCallback={}",
        callback
            .replace(':', "%3A")
            .replace('/', "%2F")
            .replace('?', "%3F")
            .replace('=', "%3D")
    );
    let r = env.post_form(MESSAGES, &form).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(env.upstream_count(), 0, "shadowed: Twilio saw nothing");
    let created = r.json();
    let sid = created["sid"].as_str().unwrap().to_string();
    assert_eq!(created["status"], "queued");

    // A GET right away: still queued, nothing sent yet.
    let now = get_message(&env, &sid).await;
    assert_eq!(now["status"], "queued", "{now}");
    assert!(now["date_sent"].is_null());

    let posted = wait_for(&app, 3).await;
    let statuses: Vec<_> = posted.iter().map(|p| p.get("MessageStatus")).collect();
    assert_eq!(
        statuses,
        [Some("queued"), Some("sent"), Some("delivered")],
        "{posted:?}"
    );
    for p in &posted {
        assert_eq!(p.uri, "/twilio/status?tenant=7");
        assert_eq!(p.get("MessageSid"), Some(sid.as_str()));
        assert_eq!(p.get("SmsSid"), Some(sid.as_str()));
        assert_eq!(p.get("SmsStatus"), p.get("MessageStatus"));
        assert_eq!(p.get("AccountSid"), Some(ACCOUNT));
        assert_eq!(p.get("To"), Some("+447421370001"));
        assert_eq!(p.get("From"), Some("+15017122661"));
        assert_eq!(p.get("ApiVersion"), Some("2010-04-01"));
        assert!(p.get("Body").is_none(), "a callback carries no body");
        assert!(
            p.signature.is_some(),
            "signed: the request carried the auth token"
        );
    }

    // Counted for the operator.
    let metrics = {
        let url = format!("http://{}/metrics", env.guard.admin_addr().unwrap());
        let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
        env.request(req).await.text()
    };
    let posted_count: u64 = metrics
        .lines()
        .find(|l| l.starts_with("smsguard_shadow_status_callbacks_total{result=\"posted\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(posted_count >= 3, "{posted_count}");

    // After its final status, a GET tells the same story.
    let done = get_message(&env, &sid).await;
    assert_eq!(done["status"], "delivered", "{done}");
    assert!(done["date_sent"].is_string(), "{done}");
    assert_ne!(done["date_updated"], done["date_created"]);
    assert!(done["error_code"].is_null());

    // twilio-python's RequestValidator accepts each signature, and
    // refuses it with another token.
    if let Some(py) = python() {
        let checks: Vec<serde_json::Value> = posted
            .iter()
            .map(|p| {
                serde_json::json!({
                    "url": callback,
                    "params": p.params.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                    "signature": p.signature,
                })
            })
            .collect();
        let script = format!(
            "import json, sys\nfrom twilio.request_validator import RequestValidator\nchecks = json.loads(sys.argv[1])\nprint(json.dumps([[RequestValidator(t).validate(c['url'], c['params'], c['signature']) for t in ['{TOKEN}', 'another-token']] for c in checks]))\n"
        );
        let arg = serde_json::to_string(&checks).unwrap();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(py)
                .args(["-c", &script, &arg])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let verdicts: Vec<[bool; 2]> = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(verdicts, vec![[true, false]; 3], "{stdout}");
    }
}

#[tokio::test]
async fn the_final_status_is_the_policys_and_an_api_key_gets_unsigned_callbacks() {
    let env = start(&format!(
        "{POLICY}[shadow]\nfinal_status = \"undelivered\"\n"
    ))
    .await;
    let app = Receiver::start(0).await;
    let form = format!(
        "To=%2B447421370002&MessagingServiceSid=MG0123456789abcdef0123456789abcdef&Body=Hi&StatusCallback={}",
        app.url("/s").replace(':', "%3A").replace('/', "%2F")
    );
    // An API key (SK...) and its secret: no auth token to sign with.
    let req = Request::post(env.url(MESSAGES))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "authorization",
            // Basic base64("SK0123456789abcdef0123456789abcdef:key-secret")
            "Basic U0swMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjprZXktc2VjcmV0",
        )
        .body(Full::new(Bytes::from(form)))
        .unwrap();
    let r = env.request(req).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let sid = r.json()["sid"].as_str().unwrap().to_string();
    let posted = wait_for(&app, 3).await;
    let statuses: Vec<_> = posted.iter().map(|p| p.get("MessageStatus")).collect();
    // Twilio picks the sender of a messaging service: `accepted` first.
    assert_eq!(
        statuses,
        [Some("accepted"), Some("sent"), Some("undelivered")],
        "{posted:?}"
    );
    assert!(posted.iter().all(|p| p.signature.is_none()), "{posted:?}");
    assert_eq!(posted[2].get("ErrorCode"), Some("30003"));
    assert_eq!(
        posted[0].get("MessagingServiceSid"),
        Some("MG0123456789abcdef0123456789abcdef")
    );
    let done = get_message(&env, &sid).await;
    assert_eq!(done["status"], "undelivered", "{done}");
    assert_eq!(done["error_code"], 30003, "{done}");
    assert_eq!(done["error_message"], "Unreachable destination handset");

    // `callbacks = false`: none posted, the status still moves on.
    let env = start(&format!("{POLICY}[shadow]\ncallbacks = false\n")).await;
    let app = Receiver::start(0).await;
    let form = format!(
        "To=%2B447421370003&From=%2B15017122661&Body=Hi&StatusCallback={}",
        app.url("/s").replace(':', "%3A").replace('/', "%2F")
    );
    let r = env.post_form(MESSAGES, &form).await;
    let sid = r.json()["sid"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(app.received().is_empty());
    assert_eq!(get_message(&env, &sid).await["status"], "delivered");
}
