//! Several real guard processes (`smsguard serve`) sharing one Redis (a
//! real `redis-server`, or a three-master Redis Cluster), in front of one
//! in-process fake Twilio that records what reaches it.
//!
//! Each test starts its own Redis and guards on random ports and stops
//! them (guards by SIGTERM, Redis by PID).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use common::redis::{free_port, RedisCluster, RedisServer};
use common::{ACCOUNT, AUTH, MESSAGES};
use smsguard::twilio::fake::FakeTwilio;

const TOKEN: &str = "replica-admin-token";
/// The documented staleness bound of a block set on another replica is
/// `store.near_cache`; the tests use 200 ms and allow scheduling slack.
const NEAR_CACHE: &str = "200ms";
const STALE: Duration = Duration::from_millis(200 + 400);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "smsguard-replicas-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One `smsguard serve` process.
struct Replica {
    name: String,
    child: Option<Child>,
    addr: SocketAddr,
    admin: SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl Replica {
    /// Writes `policy` (with listen, admin and upstream filled in) and
    /// starts a guard on it; returns once its admin listener answers.
    async fn start(dir: &Path, name: &str, fake: &FakeTwilio, policy: &str) -> Replica {
        let (port, admin_port) = (free_port(), free_port());
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:{port}\"\n[admin]\naddr = \"127.0.0.1:{admin_port}\"\ntoken_env = \"SMSGUARD_ADMIN_TOKEN\"\n[upstream]\napi = \"{url}\"\nverify = \"{url}\"\n[shadow]\ntiming = false\n{policy}",
            url = fake.url()
        );
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let mut r = Replica {
            name: name.into(),
            child: None,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            admin: format!("127.0.0.1:{admin_port}").parse().unwrap(),
            log: dir.join(format!("{name}.log")),
            config,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_smsguard"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("SMSGUARD_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("smsguard starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((StatusCode::OK, _)) = self.admin_get("/healthz").await {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("{} exited with {status}:\n{}", self.name, self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not come up:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the process to end.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("{} did not stop on SIGTERM", self.name);
    }

    async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    async fn request(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        body: &str,
        admin: bool,
    ) -> Option<(StatusCode, String)> {
        self.request_with(addr, method, path, body, admin, &[])
            .await
    }

    async fn request_with(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        body: &str,
        admin: bool,
        headers: &[(&str, &str)],
    ) -> Option<(StatusCode, String)> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if admin {
            req = req.header("authorization", format!("Bearer {TOKEN}"));
            if !body.is_empty() {
                req = req.header("content-type", "application/json");
            }
        } else {
            req = req
                .header("authorization", AUTH)
                .header("content-type", "application/x-www-form-urlencoded");
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let res = tokio::time::timeout(Duration::from_secs(10), client().request(req))
            .await
            .ok()?
            .ok()?;
        let status = res.status();
        let body = res.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn admin_get(&self, path: &str) -> Option<(StatusCode, String)> {
        self.request(self.admin, Method::GET, path, "", true).await
    }

    async fn admin(&self, method: Method, path: &str, body: &str) -> (StatusCode, String) {
        self.request(self.admin, method, path, body, true)
            .await
            .unwrap_or_else(|| panic!("{}: admin {path} answered", self.name))
    }

    /// Blocks the `prefix:8` range `value` for an hour through the admin API.
    async fn block_range(&self, value: &str) {
        let body = format!(r#"{{"key": "prefix:8", "value": "{value}", "duration": "1h"}}"#);
        let (s, text) = self.admin(Method::POST, "/api/blocks", &body).await;
        assert!(s.is_success(), "{}: block {value}: {s} {text}", self.name);
    }

    /// The active block on `key` as the admin API lists it, if any.
    async fn listed_block(&self, key: &str) -> Option<serde_json::Value> {
        let (s, body) = self.admin(Method::GET, "/api/blocks", "").await;
        assert_eq!(s, StatusCode::OK, "{}: {body}", self.name);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["key"] == key)
            .cloned()
    }

    /// A message send to `to`: the status and the JSON answer.
    async fn send(&self, to: &str) -> (StatusCode, serde_json::Value) {
        self.send_from(to, None).await
    }

    /// A send on behalf of an end user at `ip` (`X-SMSGuard-Client-IP`).
    async fn send_from(&self, to: &str, ip: Option<&str>) -> (StatusCode, serde_json::Value) {
        let headers: Vec<(&str, &str)> = ip
            .map(|ip| ("x-smsguard-client-ip", ip))
            .into_iter()
            .collect();
        self.send_with(to, &headers).await
    }

    /// A send with the context headers `headers` (`X-SMSGuard-User`, ...).
    async fn send_with(
        &self,
        to: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, serde_json::Value) {
        // A code of its own: the same text to many numbers without a
        // client address would be a broadcast, which no adaptive rule
        // judges.
        static CODE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(100_000);
        let form = format!(
            "To={}&From=%2B15005550006&Body=Your+code+is+{}",
            to.replace('+', "%2B"),
            CODE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let (status, body) = self
            .request_with(self.addr, Method::POST, MESSAGES, &form, false, headers)
            .await
            .unwrap_or_else(|| panic!("{}: no answer to a send to {to}", self.name));
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {body}", self.name));
        (status, json)
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        self.request(self.addr, Method::GET, path, "", false)
            .await
            .unwrap_or_else(|| panic!("{}: no answer to GET {path}", self.name))
    }

    async fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.admin(Method::GET, "/metrics", "").await;
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{}: no metric {name} in\n{text}", self.name))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends that reached the fake Twilio.
fn sends(fake: &FakeTwilio) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.method == Method::POST && r.uri.path().ends_with("/Messages.json"))
        .count()
}

/// A shared store; calls may take up to a second before the link counts
/// as degraded (tests run on busy machines: a degraded link judges
/// locally, and these tests count exactly).
/// The `[store]` of a guard on this one Redis.
fn on(redis: &RedisServer) -> String {
    store(&format!("redis = \"{}\"", redis.url()))
}

fn store(redis: &str) -> String {
    format!("[store]\n{redis}\nnear_cache = \"{NEAR_CACHE}\"\ntimeout = \"1s\"\n")
}

/// The `redis_cluster` line of a guard on this Cluster.
fn cluster_seeds(cluster: &RedisCluster) -> String {
    let seeds: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    format!("redis_cluster = [{}]", seeds.join(", "))
}

const POLICY: &str = r#"
[geo]
allow = ["US"]
[[limit]]
name = "range"
key = "prefix:8"
rates = ["20/1h"]
block = "1h"
[budget]
daily = "0.54"
prices = { default = "0.01" }
"#;

/// The three-replica checks of one shared store (`redis` is its
/// `[store]` line).
async fn three_replicas(redis: &str, tag: &str) {
    let fake = FakeTwilio::start().await.unwrap();
    let dir = temp_dir(tag);
    let policy = format!("{}{POLICY}", store(redis));
    let mut fleet = Vec::new();
    for name in ["a", "b", "c"] {
        fleet.push(Replica::start(&dir, name, &fake, &policy).await);
    }

    // A range limit of 20 lets exactly 20 through in total, sends spread
    // round-robin (60 numbers of one range).
    for i in 0..60 {
        let r = &fleet[i % 3];
        let (status, _) = r.send(&format!("+1415555{i:04}")).await;
        assert_eq!(status, StatusCode::CREATED, "{}", r.name);
    }
    assert_eq!(sends(&fake), 20, "the limit of 20 is one across replicas");
    // The 21st tripped the range's block on one replica; all three list it
    // within the staleness bound.
    tokio::time::sleep(STALE).await;
    for r in &fleet {
        let (_, listed) = r.admin(Method::GET, "/api/blocks", "").await;
        assert!(
            listed.contains("prefix:8=+14155550") && listed.contains("limit:range"),
            "{}: {listed}",
            r.name
        );
    }

    // A block set through one replica is enforced by the other two within
    // the staleness bound, and lifted the same way.
    let before = sends(&fake);
    let (s, _) = fleet[2].send("+16175550100").await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(sends(&fake), before + 1, "not blocked yet");
    fleet[0].block_range("+16175550").await;
    tokio::time::sleep(STALE).await;
    for r in &fleet[1..] {
        let (s, _) = r.send("+16175550101").await;
        assert_eq!(s, StatusCode::CREATED);
    }
    assert_eq!(sends(&fake), before + 1, "the block reached b and c");
    let (_, listed) = fleet[1].admin(Method::GET, "/api/blocks", "").await;
    assert!(listed.contains("prefix:8=+16175550"), "{listed}");
    let (s, body) = fleet[0]
        .admin(Method::DELETE, "/api/blocks?key=prefix:8%3D%2B16175550", "")
        .await;
    assert!(s.is_success(), "{s} {body}");
    tokio::time::sleep(STALE).await;
    let (s, _) = fleet[1].send("+16175550102").await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(sends(&fake), before + 2, "the removal reached b");

    // A fake made by one replica is answered by another; Twilio sees no
    // GET.
    let (s, fake_msg) = fleet[0].send("+998993941234").await;
    assert_eq!(s, StatusCode::CREATED);
    let sid = fake_msg["sid"].as_str().unwrap().to_string();
    let path = format!("/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json");
    let mut answered = None;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let (s, body) = fleet[1].get(&path).await;
        if s == StatusCode::OK {
            answered = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = answered.expect("replica b answers the fake made by a");
    let got: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(got["sid"], fake_msg["sid"]);
    assert_eq!(got["to"], fake_msg["to"]);
    assert!(
        !fake.requests().iter().any(|r| r.method == Method::GET),
        "no GET reached Twilio"
    );

    // A daily cap is spent exactly once across replicas under 64
    // concurrent sends: 0.54 at 0.01 a send, 22 already spent.
    let before = sends(&fake);
    assert_eq!(before, 22);
    let mut tasks = Vec::new();
    for i in 0..64usize {
        let (addr, name) = (fleet[i % 3].addr, fleet[i % 3].name.clone());
        tasks.push(tokio::spawn(async move {
            // Each number in its own range, so only the budget can stop it.
            let to = format!("%2B1212{:03}0{i:03}", 200 + i);
            let form = format!("To={to}&From=%2B15005550006&Body=hi");
            let req = Request::post(format!("http://{addr}{MESSAGES}"))
                .header("authorization", AUTH)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(form)))
                .unwrap();
            let res = client().request(req).await.expect(&name);
            res.status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    assert_eq!(
        sends(&fake) - before,
        32,
        "exactly the cap's 32 sends went out"
    );
    for r in &fleet {
        let fallback = r
            .metric("smsguard_store_sends_total{judged=\"fallback\"}")
            .await;
        assert_eq!(fallback, 0.0, "{} judged sends locally", r.name);
    }

    // Any replica's /api/summary adds up the fleet's activity: 129
    // decisions (60 + 4 + 1 + 64), 54 of them forwarded.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let (s, body) = fleet[1].admin(Method::GET, "/api/summary", "").await;
        assert_eq!(s, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let total: u64 = v["totals"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        if v["replicas"] == 3 && total == 129 {
            assert_eq!(v["totals"]["allow"], 54, "{body}");
            let charted: u64 = v["by_action"]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|s| s.as_array().unwrap().iter().map(|n| n.as_u64().unwrap()))
                .sum();
            assert_eq!(charted, 129);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "summary never added up the fleet: {} replicas, {total} decisions",
            v["replicas"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for r in &mut fleet {
        r.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_one_redis_enforce_one_policy() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    three_replicas(&format!("redis = \"{}\"", redis.url()), "single").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_a_redis_cluster_enforce_one_policy() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    three_replicas(&cluster_seeds(&cluster), "cluster").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_guard_keeps_blocks_backoff_counters_and_spend() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let fake = FakeTwilio::start().await.unwrap();
    let dir = temp_dir("restart");
    let policy = format!(
        "{}{}",
        on(&redis),
        r#"
[geo]
allow = ["US"]
[backoff]
free = 1
base = "1h"
factor = 2
max = "2h"
reset_after = "6h"
[[limit]]
name = "range"
key = "prefix:8"
rates = ["3/1h"]
[budget]
daily = "0.05"
prices = { default = "0.01" }
"#
    );
    let mut g = Replica::start(&dir, "g", &fake, &policy).await;
    let forwarded = |n: usize| assert_eq!(sends(&fake), n);
    g.send("+14155550001").await;
    forwarded(1);
    // The second send to one number waits an hour: stopped.
    g.send("+14155550001").await;
    forwarded(1);
    g.send("+14155550002").await;
    forwarded(2);
    g.block_range("+16175550").await;
    // Give the block's write a moment to reach Redis, then restart.
    tokio::time::sleep(STALE).await;
    g.restart().await;

    // Backoff level kept: the number still waits.
    g.send("+14155550001").await;
    forwarded(2);
    // Block kept, enforced from the first send.
    g.send("+16175550123").await;
    forwarded(2);
    // Counter kept: two of the range's three were used before the restart.
    g.send("+14155550003").await;
    forwarded(3);
    g.send("+14155550004").await;
    forwarded(3);
    // Spend kept: 0.03 of the 0.05 was spent; two more fit.
    for i in 0..4 {
        g.send(&format!("+1212{}550001", 2 + i)).await;
    }
    forwarded(5);
    g.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_degrades_to_local_judging_and_recovers() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let fake = FakeTwilio::start().await.unwrap();
    let dir = temp_dir("kill");
    let policy = format!(
        "{}[alerts]\nwebhook = \"{}/alerts\"\ninterval = \"1s\"\n{}",
        on(&redis),
        fake.url(),
        r#"
[geo]
allow = ["US"]
[[limit]]
name = "range"
key = "prefix:8"
rates = ["3/1h"]
"#
    );
    let a = Replica::start(&dir, "a", &fake, &policy).await;
    let b = Replica::start(&dir, "b", &fake, &policy).await;
    assert_eq!(a.admin(Method::GET, "/readyz", "").await.1, "ready\n");

    // Four senders, round-robin over both replicas, until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for t in 0..4u32 {
        let (stop, addrs) = (stop.clone(), [a.addr, b.addr]);
        load.push(tokio::spawn(async move {
            let http = client();
            let mut answers = Vec::new();
            let mut k = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let to = format!("%2B1646{:03}{:04}", 200 + (k * 4 + t) % 700, k % 10_000);
                let form = format!("To={to}&From=%2B15005550006&Body=hi");
                let req = Request::post(format!("http://{}{MESSAGES}", addrs[k as usize % 2]))
                    .header("authorization", AUTH)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(form)))
                    .unwrap();
                let answer = match http.request(req).await {
                    Ok(res) => {
                        let status = res.status();
                        let body = res.into_body().collect().await.map(|b| b.to_bytes());
                        match body {
                            Ok(b) if serde_json::from_slice::<serde_json::Value>(&b).is_ok() => {
                                Ok(status)
                            }
                            Ok(b) => Err(format!("{status}: not JSON {b:?}")),
                            Err(e) => Err(format!("{status}: body cut: {e}")),
                        }
                    }
                    Err(e) => Err(format!("transport error: {e}")),
                };
                answers.push(answer);
                k += 1;
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();

    // Both say they are degraded, in /readyz and the metric.
    for r in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (s, text) = r.admin(Method::GET, "/readyz", "").await;
            assert_eq!(s, StatusCode::OK);
            if text.contains("degraded") {
                assert!(text.contains("store.on_error = local"), "{text}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: never degraded: {text}",
                r.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(r.metric("smsguard_store_degraded").await, 1.0);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart();
    for r in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, text) = r.admin(Method::GET, "/readyz", "").await;
            if text == "ready\n" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: never recovered: {text}",
                r.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(r.metric("smsguard_store_degraded").await, 0.0);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for t in load {
        for answer in t.await.unwrap() {
            assert_eq!(answer, Ok(StatusCode::CREATED));
            total += 1;
        }
    }
    assert!(total > 50, "the load ran ({total} sends)");
    // Sends were judged locally while Redis was away, and shared after.
    let fallback = a
        .metric("smsguard_store_sends_total{judged=\"fallback\"}")
        .await
        + b.metric("smsguard_store_sends_total{judged=\"fallback\"}")
            .await;
    assert!(fallback > 0.0, "judged locally while redis was down");

    // An alert said so.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alerts: Vec<String> = fake
            .requests()
            .iter()
            .filter(|r| r.uri.path() == "/alerts")
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        if alerts.iter().any(|a| a.contains("store:degraded")) {
            break;
        }
        assert!(Instant::now() < deadline, "no store alert: {alerts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Shared again: one range limit of 3 across both replicas.
    let before = sends(&fake);
    for i in 0..6 {
        let r = if i % 2 == 0 { &a } else { &b };
        r.send(&format!("+1929555{i:04}")).await;
    }
    assert_eq!(sends(&fake) - before, 3);
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adaptive_stage_and_safe_list_edits_are_the_fleets() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let fake = FakeTwilio::start().await.unwrap();
    let dir = temp_dir("fleet");
    let policy = format!(
        "{}{}",
        on(&redis),
        r#"
[geo]
allow = ["US"]
[adaptive]
[adaptive.distinct]
client_ip = ["5/1h"]
"#
    );
    let a = Replica::start(&dir, "a", &fake, &policy).await;
    let mut b = Replica::start(&dir, "b", &fake, &policy).await;

    // A safe-list edit on one replica holds on the other, and across its
    // restart: the number passes a block on its range.
    a.block_range("+16465550").await;
    let (s, body) = a
        .admin(Method::POST, "/api/safe", r#"{"number": "+16465550000"}"#)
        .await;
    assert!(s.is_success(), "{s} {body}");
    tokio::time::sleep(STALE).await;
    let before = sends(&fake);
    b.send("+16465550000").await;
    b.send("+16465550001").await;
    assert_eq!(sends(&fake), before + 1, "safe on b, its range blocked");
    b.restart().await;
    b.send("+16465550000").await;
    b.send("+16465550002").await;
    assert_eq!(sends(&fake), before + 2, "still safe after b's restart");
    let (s, body) = b.admin(Method::POST, "/api/reload", "").await;
    assert!(s.is_success(), "{s} {body}");
    b.send("+16465550000").await;
    assert_eq!(sends(&fake), before + 3, "and after a reload of b's file");

    // Distinct numbers per end-user address: 5 an hour across the fleet.
    // Each replica sees only half the sends itself.
    let before = sends(&fake);
    let areas = ["201", "312", "415", "503", "617", "702", "808"];
    for (i, area) in areas.iter().enumerate().take(5) {
        let r = if i % 2 == 0 { &a } else { &b };
        r.send_from(&format!("+1{area}5550100"), Some("203.0.113.9"))
            .await;
        tokio::time::sleep(STALE).await;
    }
    assert_eq!(sends(&fake), before + 5);
    b.send_from("+17025550100", Some("203.0.113.9")).await;
    assert_eq!(
        sends(&fake),
        before + 5,
        "the sixth distinct number is stopped"
    );
    // Another address is not.
    a.send_from("+18085550100", Some("203.0.113.10")).await;
    assert_eq!(sends(&fake), before + 6);

    // A confirmation seen by one replica matches a send forwarded by the
    // other.
    tokio::time::sleep(STALE).await;
    let (s, body) = b
        .admin(Method::POST, "/api/confirm", r#"{"to": "+18085550100"}"#)
        .await;
    assert!(s.is_success(), "{s} {body}");
    assert!(body.contains("\"confirmed\":true"), "{body}");
    // And b restarted learns the fleet's last day: a's send is known there.
    b.restart().await;
    let (_, body) = b
        .admin(Method::POST, "/api/confirm", r#"{"to": "+12015550100"}"#)
        .await;
    assert!(body.contains("\"confirmed\":true"), "{body}");
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A new number one replica stops because its product's region is pumped
/// without locality counts as unanswered on every replica, so the stop
/// lasts as long whichever replica the pump reaches.
#[tokio::test]
async fn a_dispersed_stop_on_one_replica_counts_on_every_replica() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let fake = FakeTwilio::start().await.unwrap();
    let dir = temp_dir("dispersed");
    // Only the product's region is judged, on one unanswered send per
    // confirmed one past a floor of three, with a grace of a second.
    let policy = format!(
        "{}{}",
        on(&redis),
        r#"
[geo]
allow = ["US"]
[adaptive]
grace = "1s"
min_confirm_delay = "0s"
[adaptive.surge]
floor = 100000
region = 0
[adaptive.distinct]
client_ip = []
user = []
regions = 0
[adaptive.unconfirmed]
alert_ratio = 1000
client_ip = []
user = []
region = ["3/1h"]
dispersed_ratio = 1
"#
    );
    let a = Replica::start(&dir, "a", &fake, &policy).await;
    let b = Replica::start(&dir, "b", &fake, &policy).await;
    // Confirmations flow: one person entered a code.
    a.send_from("+12025550000", Some("192.0.2.1")).await;
    tokio::time::sleep(STALE).await;
    let (s, body) = a
        .admin(Method::POST, "/api/confirm", r#"{"to": "+12025550000"}"#)
        .await;
    assert!(body.contains("\"confirmed\":true"), "{s} {body}");
    // Three new numbers, one per area code, through both replicas, from
    // three addresses, never confirmed.
    let before = sends(&fake);
    for (i, area) in ["212", "312", "415"].iter().enumerate() {
        let r = if i % 2 == 0 { &a } else { &b };
        let ip = format!("198.51.100.{i}");
        r.send_from(&format!("+1{area}5550100"), Some(&ip)).await;
        tokio::time::sleep(STALE).await;
    }
    assert_eq!(sends(&fake), before + 3);
    // Past their grace (a second, counted in whole windows).
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Three unanswered against one confirmed: a stops the fourth.
    a.send_from("+15035550100", Some("198.51.100.9")).await;
    assert_eq!(sends(&fake), before + 3, "the fourth is stopped");
    tokio::time::sleep(STALE + Duration::from_secs(3)).await;
    // Both replicas count the stopped one: four unanswered.
    for r in [&a, &b] {
        let (s, body) = r
            .admin(
                Method::GET,
                "/api/explain?to=%2B16175550100&ip=198.51.100.10",
                "",
            )
            .await;
        assert!(s.is_success(), "{}: {s} {body}", r.name);
        assert!(
            body.contains("adaptive:dispersed:region")
                && body.contains("product_region=messaging:US: 4 unconfirmed and 1 confirmed"),
            "{}: {body}",
            r.name
        );
    }
    // ...and in the stopped number's own ranges, so a sprayer that comes
    // back to its block trips it on whichever replica it reaches. Asked
    // for Verify, which the region's stop of messaging does not judge, to
    // read the block's figures.
    for r in [&a, &b] {
        let (s, body) = r
            .admin(
                Method::GET,
                "/api/explain?to=%2B15035550101&product=verify&ip=198.51.100.11",
                "",
            )
            .await;
        assert!(s.is_success(), "{}: {s} {body}", r.name);
        assert!(
            body.contains("prefix:7=+1503555: sent/confirmed 1/0 in 1h"),
            "{}: {body}",
            r.name
        );
    }
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The adaptive floors of the burst test: a user may reach three numbers
/// an hour, a number block may see three new numbers in ten minutes; a
/// tripped signal blocks its key for an hour (doubled per repeat offence).
const BURST_POLICY: &str = r#"
[geo]
allow = ["US"]
[adaptive]
block = "1h"
[adaptive.surge]
floor = 3
[adaptive.distinct]
user = ["3/1h"]
"#;

const HOUR_MS: u64 = 3_600_000;

/// Two bursts of nine sends, each spread round-robin over `fleet`: one
/// user reaching nine numbers in nine area codes, then nine new numbers
/// of one block (`prefix:7=+1212555`) from nobody in particular. How many
/// of each reached Twilio.
async fn bursts(fleet: &[&Replica], fake: &FakeTwilio) -> [usize; 2] {
    let areas = [
        "201", "305", "312", "415", "503", "617", "702", "808", "907",
    ];
    let before = sends(fake);
    for (i, area) in areas.iter().enumerate() {
        let r = fleet[i % fleet.len()];
        let to = format!("+1{area}5550100");
        let (s, _) = r.send_with(&to, &[("x-smsguard-user", "mallory")]).await;
        assert_eq!(s, StatusCode::CREATED, "{}", r.name);
    }
    let user = sends(fake) - before;
    let before = sends(fake);
    for i in 0..9 {
        let r = fleet[i % fleet.len()];
        let (s, _) = r.send(&format!("+1212555{:04}", 100 + i)).await;
        assert_eq!(s, StatusCode::CREATED, "{}", r.name);
    }
    [user, sends(fake) - before]
}

/// The burst checks on one shared store (`redis` is its `[store]` line).
async fn burst_over_three_replicas(redis: &str, tag: &str) {
    let fake = FakeTwilio::start().await.unwrap();
    let dir = temp_dir(tag);
    // One replica alone, on state of its own (another key prefix).
    let alone = store(&format!("{redis}\nprefix = \"alone:\""));
    let solo = Replica::start(&dir, "solo", &fake, &format!("{alone}{BURST_POLICY}")).await;
    let one = bursts(&[&solo], &fake).await;
    assert_eq!(one, [3, 3], "one replica lets each floor's three through");

    let policy = format!("{}{BURST_POLICY}", store(redis));
    let mut fleet = Vec::new();
    for name in ["a", "b", "c"] {
        fleet.push(Replica::start(&dir, name, &fake, &policy).await);
    }
    let three: Vec<&Replica> = fleet.iter().collect();
    let spread = bursts(&three, &fake).await;
    assert!(
        spread[0] <= one[0] && spread[1] <= one[1],
        "three replicas let {spread:?} through where one lets {one:?}"
    );
    assert_eq!(spread, one);

    // Each trip is one offence, however many replicas tripped it before
    // the block reached them: every replica lists a first offence's block
    // of the base length (renewed by later trips: until = max(until, now
    // + 1h), so up to the burst's length longer).
    tokio::time::sleep(STALE).await;
    let signals = [
        ("user=mallory", "adaptive:distinct:user"),
        ("prefix:7=+1212555", "adaptive:surge:prefix:7"),
    ];
    for r in three.iter().copied().chain([&solo]) {
        for (key, rule) in signals {
            let b = r
                .listed_block(key)
                .await
                .unwrap_or_else(|| panic!("{}: no block on {key}", r.name));
            assert_eq!(b["rule"], rule, "{}: {b}", r.name);
            assert_eq!(b["offence"], 1, "{}: {b}", r.name);
            let length = b["until"].as_u64().unwrap() - b["since"].as_u64().unwrap();
            assert!(
                (HOUR_MS..HOUR_MS + 10_000).contains(&length),
                "{}: a block of {length} ms: {b}",
                r.name
            );
        }
    }
    drop((fleet, solo));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_spread_over_three_replicas_passes_no_more_than_through_one() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    burst_over_three_replicas(&format!("redis = \"{}\"", redis.url()), "burst").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_spread_over_three_replicas_on_a_cluster_passes_no_more_than_through_one() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    burst_over_three_replicas(&cluster_seeds(&cluster), "burst-cluster").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_started_while_redis_is_down_judges_locally_and_joins_when_it_answers() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    redis.kill();
    let fake = FakeTwilio::start().await.unwrap();
    let dir = temp_dir("late");
    let policy = format!("{}[geo]\nallow = [\"US\"]\n", on(&redis));
    let g = Replica::start(&dir, "g", &fake, &policy).await;
    let (_, text) = g.admin(Method::GET, "/readyz", "").await;
    assert!(text.contains("degraded"), "{text}");
    let (s, _) = g.send("+12125550100").await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(sends(&fake), 1, "judged locally, forwarded");
    // A block set while Redis is away is enforced here at once...
    g.block_range("+17185550").await;
    g.send("+17185550100").await;
    assert_eq!(sends(&fake), 1);

    // ...and written to Redis once it answers; a safe-list edit saved by
    // another replica meanwhile is read then.
    redis.restart();
    redis.cli(&["HSET", "smsguard:{fleet}:safe", "n:+16465550000", "add"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, text) = g.admin(Method::GET, "/readyz", "").await;
        let written = !redis
            .cli(&["HGET", "smsguard:{blocks}:entries", "prefix:8=+17185550"])
            .is_empty();
        if text == "ready\n" && written {
            break;
        }
        assert!(Instant::now() < deadline, "never joined: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    g.block_range("+16465550").await;
    tokio::time::sleep(STALE).await;
    g.send("+16465550000").await;
    g.send("+16465550001").await;
    assert_eq!(sends(&fake), 2, "the saved safe edit holds, the block too");
    drop(g);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_persistence_gets_the_fleets_blocks_back() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let fake = FakeTwilio::start().await.unwrap();
    let dir = temp_dir("wiped");
    let policy = format!(
        "{}[geo]\nallow = [\"US\"]\n[[limit]]\nname = \"range\"\nkey = \"prefix:8\"\nrates = [\"2/1h\"]\nblock = \"1h\"\n",
        on(&redis)
    );
    let a = Replica::start(&dir, "a", &fake, &policy).await;
    let b = Replica::start(&dir, "b", &fake, &policy).await;
    // One block by hand, one the limit tripped.
    a.block_range("+16175550").await;
    for i in 0..3 {
        b.send(&format!("+1415555{i:04}")).await;
    }
    tokio::time::sleep(STALE).await;
    let keys = ["prefix:8=+16175550", "prefix:8=+14155550"];
    for k in keys {
        assert!(a.listed_block(k).await.is_some(), "{k} before the restart");
    }

    // Redis comes back empty: nothing was saved.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = redis.cli(&["HKEYS", "smsguard:{blocks}:entries"]);
        if keys.iter().all(|k| listed.lines().any(|l| l == *k)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the blocks were not written back to Redis: {listed:?}\n{}\n{}",
            a.log_text(),
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every replica still enforces them, and says what it restored.
    tokio::time::sleep(STALE).await;
    for r in [&a, &b] {
        for k in keys {
            assert!(r.listed_block(k).await.is_some(), "{}: {k} lifted", r.name);
        }
    }
    assert!(
        format!("{}{}", a.log_text(), b.log_text())
            .contains("restored this replica's active blocks"),
        "no log line says what was restored"
    );
    // A replica that starts now, knowing only Redis, enforces them at once.
    let c = Replica::start(&dir, "c", &fake, &policy).await;
    let before = sends(&fake);
    c.send("+16175550123").await;
    c.send("+14155550999").await;
    assert_eq!(
        sends(&fake),
        before,
        "both ranges blocked on a fresh replica"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
