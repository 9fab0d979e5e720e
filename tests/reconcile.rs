//! Reconciliation: real guard processes (`smsguard serve`) in front of an
//! in-process fake Twilio, with `[reconcile]` listing the fake's Messages
//! and Calls every couple of seconds. Sends made through the guard are
//! never reported; sends made straight to the fake (around the guard) are,
//! through `/api/reconcile`, the metrics and the alert webhook (a small
//! HTTP server here). With Redis, two replicas share the forwarded sids
//! and only one lists.
//!
//! Every server listens on 127.0.0.1 and is stopped by the test (guards by
//! SIGTERM, Redis by PID). Waits are bounded and say what they waited for.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use common::receiver::Receiver;
use common::redis::{free_port, RedisServer};
use common::{ACCOUNT, AUTH, MESSAGES};
use smsguard::twilio::fake::FakeTwilio;

const ADMIN_TOKEN: &str = "reconcile-admin-token";
/// The credential the guard lists with (never the app's).
const TOKEN_ENV: &str = "SMSGUARD_TEST_RECONCILE_TOKEN";
const TOKEN: &str = "reconcile-token-4b1d";
const CALLS: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json";
/// How long a test waits for what a few looks should show.
const BOUND: Duration = Duration::from_secs(45);

async fn http(
    addr: SocketAddr,
    method: Method,
    path: &str,
    auth: &str,
    body: &str,
) -> Option<(StatusCode, String)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", auth)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .ok()?
        .ok()?;
    let status = res.status();
    let body = res.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One `smsguard serve` process.
struct Guard {
    name: String,
    child: Option<Child>,
    addr: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
}

/// The policy file of a guard: listen, admin and upstream filled in.
fn policy_file(dir: &Path, name: &str, fake: &FakeTwilio, extra: &str) -> (PathBuf, u16, u16) {
    let (port, admin_port) = (free_port(), free_port());
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:{port}\"\n[admin]\naddr = \"127.0.0.1:{admin_port}\"\n[upstream]\napi = \"{url}\"\nverify = \"{url}\"\n[shadow]\ntiming = false\n{extra}",
        url = fake.url()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    (path, port, admin_port)
}

impl Guard {
    async fn start(dir: &Path, name: &str, fake: &FakeTwilio, extra: &str) -> Guard {
        let (config, port, admin_port) = policy_file(dir, name, fake, extra);
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_smsguard"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("SMSGUARD_ADMIN_TOKEN", ADMIN_TOKEN)
            .env(TOKEN_ENV, TOKEN)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("smsguard starts");
        let mut g = Guard {
            name: name.into(),
            child: Some(child),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            admin: format!("127.0.0.1:{admin_port}").parse().unwrap(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((StatusCode::OK, _)) = g.admin_get("/healthz").await {
                return g;
            }
            if let Some(Ok(Some(status))) = g.child.as_mut().map(|c| c.try_wait()) {
                panic!("{} exited with {status}:\n{}", g.name, g.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not come up:\n{}",
                g.name,
                g.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn admin_get(&self, path: &str) -> Option<(StatusCode, String)> {
        http(
            self.admin,
            Method::GET,
            path,
            &format!("Bearer {ADMIN_TOKEN}"),
            "",
        )
        .await
    }

    async fn reconcile(&self) -> serde_json::Value {
        let (s, body) = self
            .admin_get("/api/reconcile")
            .await
            .unwrap_or_else(|| panic!("{}: /api/reconcile answered", self.name));
        assert_eq!(s, StatusCode::OK, "{}: {body}", self.name);
        serde_json::from_str(&body).unwrap()
    }

    async fn metrics(&self) -> String {
        self.admin_get("/metrics")
            .await
            .unwrap_or_else(|| panic!("{}: /metrics answered", self.name))
            .1
    }

    /// A message through the guard; it must be forwarded.
    async fn send(&self, to: &str) {
        let form = format!("To={}&From=%2B15005550006&Body=hi", to.replace('+', "%2B"));
        let (s, body) = http(self.addr, Method::POST, MESSAGES, AUTH, &form)
            .await
            .unwrap_or_else(|| panic!("{}: a send to {to} answered", self.name));
        assert_eq!(s, StatusCode::CREATED, "{}: {body}", self.name);
    }

    /// A call through the guard; it must be forwarded.
    async fn call(&self, to: &str) {
        let form = format!(
            "To={}&From=%2B15005550006&Url=https%3A%2F%2Fexample.com%2Ftwiml",
            to.replace('+', "%2B")
        );
        let (s, body) = http(self.addr, Method::POST, CALLS, AUTH, &form)
            .await
            .unwrap_or_else(|| panic!("{}: a call to {to} answered", self.name));
        assert_eq!(s, StatusCode::CREATED, "{}: {body}", self.name);
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(status.success(), "{} stopped with {status}", self.name);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("{} did not stop on SIGTERM", self.name);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A message or call straight to the fake Twilio: around the guard.
async fn around(fake: &FakeTwilio, path: &str, to: &str) -> String {
    let form = format!("To={}&From=%2B15005550006&Body=x", to.replace('+', "%2B"));
    let (s, body) = http(fake.addr(), Method::POST, path, AUTH, &form)
        .await
        .expect("the fake answers");
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["sid"].as_str().unwrap().to_string()
}

/// The texts of the reconciliation alerts a webhook got.
fn reconcile_texts(hook: &Receiver) -> Vec<String> {
    hook.json()
        .iter()
        .filter(|b| b["kind"] == "reconcile")
        .map(|b| b["text"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The value of the sample `name` (with its labels) in Prometheus text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn unseen_reported(r: &serde_json::Value) -> (u64, u64) {
    (
        r["unseen_reported_here"]["message"].as_u64().unwrap_or(0),
        r["unseen_reported_here"]["call"].as_u64().unwrap_or(0),
    )
}

/// Looks this guard made (clean or finding sends around it), from its metrics.
async fn looks(g: &Guard) -> f64 {
    let m = g.metrics().await;
    sample(&m, "smsguard_reconcile_looks_total{result=\"clean\"}").unwrap_or(0.0)
        + sample(&m, "smsguard_reconcile_looks_total{result=\"unseen\"}").unwrap_or(0.0)
}

/// Waits until `done` holds, polling; fails with `what` and the logs.
async fn wait_until<F, Fut>(what: &str, guards: &[&Guard], mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + BOUND;
    loop {
        if done().await {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = guards
                .iter()
                .map(|g| format!("--- {}:\n{}", g.name, g.log_text()))
                .collect();
            panic!("waited {BOUND:?} for {what}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn reconcile_section(interval: &str, page_size: u32) -> String {
    format!(
        "[reconcile]\naccount = \"{ACCOUNT}\"\ntoken_env = \"{TOKEN_ENV}\"\ninterval = \"{interval}\"\nsettle = \"1s\"\npage_size = {page_size}\n"
    )
}

/// The first-page list requests the fake received (each look reads one
/// first page of Messages and one of Calls), and every list request.
fn list_requests(fake: &FakeTwilio, list: &str) -> (usize, usize) {
    let all: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::GET && r.uri.path().ends_with(list))
        .collect();
    let first = all
        .iter()
        .filter(|r| !r.uri.query().unwrap_or("").contains("Page="))
        .count();
    (first, all.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_around_the_guard_are_reported_and_sends_through_it_are_not() {
    let dir = common::temp_dir("reconcile");
    let fake = FakeTwilio::start().await.unwrap();
    let hook = Receiver::start(0).await;
    // A page of 2: five sends around the guard and five through it take
    // several pages.
    let extra = format!(
        "{}[alerts]\nwebhook = \"http://{}/hook\"\n",
        reconcile_section("1s", 2),
        hook.addr
    );
    let mut g = Guard::start(&dir, "solo", &fake, &extra).await;

    for i in 0..4 {
        g.send(&format!("+1415555{:04}", 100 + i)).await;
    }
    g.call("+14155550199").await;
    let mut direct = Vec::new();
    for i in 0..5 {
        direct.push(around(&fake, MESSAGES, &format!("+99899394{:04}", 1000 + i)).await);
    }
    direct.push(around(&fake, CALLS, "+998993942000").await);

    wait_until(
        "the 6 sends around the guard to be reported",
        &[&g],
        || async { unseen_reported(&g.reconcile().await) == (5, 1) },
    )
    .await;
    // Two more looks: nothing more is reported (the guard's own sends,
    // and the overlap of windows, never are).
    let seen = looks(&g).await;
    wait_until("two more looks", &[&g], || async {
        looks(&g).await >= seen + 2.0
    })
    .await;
    let r = g.reconcile().await;
    assert_eq!(unseen_reported(&r), (5, 1), "{r:#}");
    assert_eq!(r["enabled"], true);
    assert_eq!(r["account"], ACCOUNT);
    assert_eq!(r["credential"], format!("${TOKEN_ENV} (auth token)"));
    assert!(r["last_look"]["to"].is_string(), "{r:#}");
    assert!(
        r["sids"]["recorded"].as_u64().unwrap() >= 5 + 6,
        "the guard's 5 forwarded sids and the 6 reported: {r:#}"
    );

    let m = g.metrics().await;
    assert_eq!(
        sample(&m, "smsguard_reconcile_unseen_total{kind=\"message\"}"),
        Some(5.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "smsguard_reconcile_unseen_total{kind=\"call\"}"),
        Some(1.0),
        "{m}"
    );
    assert!(
        sample(&m, "smsguard_reconcile_looks_total{result=\"unseen\"}").unwrap_or(0.0) >= 1.0,
        "{m}"
    );

    // The alerts add up to the sends around the guard, to their prefix,
    // at Twilio's price (5 × 0.0079 + 0.014 USD).
    wait_until("the alerts to arrive", &[&g], || async {
        reconcile_texts(&hook)
            .iter()
            .filter_map(|t| {
                t.split(" send")
                    .next()?
                    .rsplit(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum::<u64>()
            == 6
    })
    .await;
    let texts = reconcile_texts(&hook);
    let mut cost = 0.0;
    for t in &texts {
        assert!(t.contains("went around the guard"), "{t}");
        assert!(t.contains(ACCOUNT), "{t}");
        assert!(t.contains("+99899394 ("), "{t}");
        let usd: f64 = t
            .split("Cost: ")
            .nth(1)
            .and_then(|c| c.split(' ').next())
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no cost in {t}"));
        cost += usd;
    }
    assert!((cost - 0.0535).abs() < 1e-9, "{cost} from {texts:?}");

    // Twilio's lists were read with the reconcile credential, by day,
    // page after page.
    let (first, all) = list_requests(&fake, "Messages.json");
    assert!(first >= 2 && all > first, "{first} first pages of {all}");
    let req = fake
        .requests()
        .into_iter()
        .find(|r| r.method == Method::GET && r.uri.path().ends_with("Messages.json"))
        .unwrap();
    let q = req.uri.query().unwrap_or("");
    assert!(
        q.contains("DateSent%3E=") && q.contains("PageSize=2"),
        "{q}"
    );
    let basic = req.headers["authorization"].to_str().unwrap().to_string();
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim_start_matches("Basic "))
        .unwrap();
    assert_eq!(decoded, format!("{ACCOUNT}:{TOKEN}").as_bytes());
    let (calls_first, _) = list_requests(&fake, "Calls.json");
    assert!(calls_first >= 2);
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.uri.query().unwrap_or("").contains("StartTime%3E=")));

    // The secret is nowhere the operator reads.
    g.stop();
    let log = g.log_text();
    assert!(log.contains("sends went around the guard"), "{log}");
    for text in [log, m, serde_json::to_string(&r).unwrap(), texts.join("\n")] {
        assert!(!text.contains(TOKEN), "the token leaked: {text}");
    }
    let reported: Vec<String> = r["last_look"]["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert!(
        reported.iter().all(|s| direct.contains(s)),
        "{reported:?} {direct:?}"
    );
}

#[tokio::test]
async fn serve_and_check_refuse_a_missing_credential_and_name_its_variable() {
    let dir = common::temp_dir("reconcile-env");
    let fake = FakeTwilio::start().await.unwrap();
    let extra = format!(
        "[reconcile]\naccount = \"{ACCOUNT}\"\ntoken_env = \"SMSGUARD_TEST_RECONCILE_UNSET\"\n"
    );
    let (config, _, _) = policy_file(&dir, "unset", &fake, &extra);
    for command in ["check", "serve"] {
        let out = Command::new(env!("CARGO_BIN_EXE_smsguard"))
            .args([command, "--config"])
            .arg(&config)
            .env_remove("SMSGUARD_TEST_RECONCILE_UNSET")
            .env("SMSGUARD_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {err}");
        assert!(
            err.contains("$SMSGUARD_TEST_RECONCILE_UNSET"),
            "{command}: {err}"
        );
    }
    // Set, `check` shows the section without the secret.
    let out = Command::new(env!("CARGO_BIN_EXE_smsguard"))
        .args(["check", "--config"])
        .arg(&config)
        .env("SMSGUARD_TEST_RECONCILE_UNSET", "top-secret-value")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("reconcile   account=AC0123456789abcdef0123456789abcdef credential=$SMSGUARD_TEST_RECONCILE_UNSET (auth token) interval=5m"),
        "{text}"
    );
    assert!(!text.contains("top-secret-value"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_redis_list_once_and_share_forwarded_sids() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let dir = common::temp_dir("reconcile-replicas");
    let fake = FakeTwilio::start().await.unwrap();
    let extra = format!(
        "{}[store]\nredis = \"{}\"\ntimeout = \"500ms\"\nnear_cache = \"200ms\"\n",
        reconcile_section("2s", 1000),
        redis.url()
    );
    let mut a = Guard::start(&dir, "a", &fake, &extra).await;
    let mut b = Guard::start(&dir, "b", &fake, &extra).await;

    // Which replica lists: the one whose looks count.
    wait_until("a first look by either replica", &[&a, &b], || async {
        looks(&a).await + looks(&b).await >= 1.0
    })
    .await;
    let (lister, other) = if looks(&a).await >= 1.0 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    // Sends through the replica that does not list: the lister must know
    // their sids from Redis.
    for i in 0..3 {
        other.send(&format!("+1415555{:04}", 200 + i)).await;
    }
    other.call("+14155550299").await;
    lister.send("+14155550300").await;
    around(&fake, MESSAGES, "+998993941111").await;
    around(&fake, MESSAGES, "+998993941112").await;

    wait_until(
        "the 2 sends around the guard to be reported",
        &[&a, &b],
        || async { unseen_reported(&lister.reconcile().await) == (2, 0) },
    )
    .await;
    let seen = looks(lister).await;
    wait_until("two more looks", &[&a, &b], || async {
        looks(lister).await >= seen + 2.0
    })
    .await;
    let r = lister.reconcile().await;
    assert_eq!(unseen_reported(&r), (2, 0), "{r:#}");
    assert_eq!(r["shared"], true);
    // The other replica shows the lister's last look, and never listed.
    let o = other.reconcile().await;
    assert_eq!(o["last_result"], "other_replica", "{o:#}");
    assert_eq!(o["last_look"]["by"], r["replica"], "{o:#}");
    assert_eq!(unseen_reported(&o), (0, 0), "{o:#}");
    assert_eq!(looks(other).await, 0.0);
    // One look, one first page of each list: nobody else listed.
    let lister_looks = looks(lister).await as usize;
    let (first, _) = list_requests(&fake, "Messages.json");
    assert!(
        first == lister_looks || first == lister_looks + 1,
        "{first} first pages of Messages for {lister_looks} looks (one may be in flight)"
    );

    // Redis gone: no look, no false report of the sends made meanwhile.
    redis.kill();
    other.send("+14155550400").await;
    wait_until("a look skipped for the store", &[&a, &b], || async {
        lister.reconcile().await["last_result"] == "store_down"
    })
    .await;
    let m = lister.metrics().await;
    assert!(
        sample(&m, "smsguard_reconcile_looks_total{result=\"store_down\"}").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    assert_eq!(unseen_reported(&lister.reconcile().await), (2, 0));
    a.stop();
    b.stop();
}
