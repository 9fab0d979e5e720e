//! The Redis link against real `redis-server` processes (tests/common/redis.rs):
//! scripts by EVALSHA reloaded after NOSCRIPT, the password from the
//! environment, the timeout, a killed and restarted server, a server down
//! at start, and a three-master Cluster.

mod common;

use std::future::Future;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::{raw_command, RedisCluster, RedisServer};
use redis::{Script, Value};
use smsguard::config::{Config, Store};
use smsguard::store::redis::{Health, LinkError, RedisLink, PROBE_FIRST};

fn store(toml: &str) -> Store {
    Config::parse(Path::new("t.toml"), &format!("[store]\n{toml}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .store
}

fn single(url: &str) -> Store {
    store(&format!("redis = \"{url}\"\n"))
}

type Seen = Arc<Mutex<Vec<Health>>>;

/// A callback that records every transition.
fn recorder() -> (Seen, impl Fn(&Health) + Send + Sync + 'static) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    (seen, move |h: &Health| s.lock().unwrap().push(h.clone()))
}

fn kinds(seen: &Seen) -> Vec<&'static str> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|h| match h {
            Health::Up => "up",
            Health::Degraded { .. } => "degraded",
        })
        .collect()
}

/// Polls `f` every 10 ms until it holds; false after `bound`.
async fn until<F: Future<Output = bool>>(bound: Duration, mut f: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn counter() -> Script {
    Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])")
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => panic!("not an integer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_runs_by_evalsha_and_is_loaded_again_after_script_flush() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (seen, cb) = recorder();
    let link = RedisLink::connect(&single(&server.url()), cb)
        .await
        .unwrap();
    assert!(link.is_up());
    link.ping().await.unwrap();
    let script = counter();
    let key = ["smsguard:{+99899394}:n"];

    // First call: EVALSHA answered NOSCRIPT, SCRIPT LOAD, EVALSHA.
    assert_eq!(int(&link.eval(&script, &key, &[5]).await.unwrap()), 5);
    let s = link.stats();
    assert_eq!(s.script_loads.load(Ordering::Relaxed), 1);
    assert_eq!(s.round_trips.load(Ordering::Relaxed), 1 + 3);
    // Loaded: one round trip.
    assert_eq!(int(&link.eval(&script, &key, &[2]).await.unwrap()), 7);
    assert_eq!(s.script_loads.load(Ordering::Relaxed), 1);
    assert_eq!(s.round_trips.load(Ordering::Relaxed), 1 + 3 + 1);

    // The server forgets its scripts (as after a restart): loaded again.
    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
    assert_eq!(server.cli(&["SCRIPT", "EXISTS", script.get_hash()]), "0");
    assert_eq!(int(&link.eval(&script, &key, &[1]).await.unwrap()), 8);
    assert_eq!(s.script_loads.load(Ordering::Relaxed), 2);
    assert_eq!(server.cli(&["SCRIPT", "EXISTS", script.get_hash()]), "1");
    assert_eq!(server.cli(&["GET", key[0]]), "8");

    // An error answer is the caller's problem, not the link's.
    let bad = Script::new("return redis.call('NOSUCHCOMMAND')");
    let e = link.eval(&bad, &key, &[0]).await.unwrap_err();
    assert!(matches!(e, LinkError::Server(_)), "{e:?}");
    assert!(link.is_up());
    assert_eq!(s.calls.load(Ordering::Relaxed), 5);
    assert_eq!(s.errors.load(Ordering::Relaxed), 1);
    assert_eq!(s.timeouts.load(Ordering::Relaxed), 0);
    assert!(kinds(&seen).is_empty(), "{:?}", kinds(&seen));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_comes_from_the_named_environment_variable() {
    let password = "pw-3c9e1d7a-not-in-any-file";
    let Some(server) = RedisServer::with_password(password) else {
        return;
    };
    let with_env = |var: &str| {
        store(&format!(
            "redis = \"{}\"\nredis_password_env = \"{var}\"\n",
            server.url()
        ))
    };
    // Each variable is set once, before any link reads it, and names
    // unique to this test.
    std::env::set_var("SMSGUARD_TEST_REDIS_PW_RIGHT", password);
    std::env::set_var("SMSGUARD_TEST_REDIS_PW_WRONG", "wrong-5b1f");
    std::env::set_var("SMSGUARD_TEST_REDIS_PW_EMPTY", "");

    let link = RedisLink::connect(&with_env("SMSGUARD_TEST_REDIS_PW_RIGHT"), |_| {})
        .await
        .unwrap();
    link.ping().await.unwrap();
    assert_eq!(int(&link.eval(&counter(), &["k"], &[3]).await.unwrap()), 3);
    assert!(!format!("{link:?}").contains(password));

    let e = RedisLink::connect(&with_env("SMSGUARD_TEST_REDIS_PW_WRONG"), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&e, LinkError::Auth(m) if m.contains("refused the password in the environment variable SMSGUARD_TEST_REDIS_PW_WRONG")),
        "{e:?}"
    );
    assert!(!e.to_string().contains("wrong-5b1f"), "{e}");

    for (var, why) in [
        ("SMSGUARD_TEST_REDIS_PW_MISSING", "not set"),
        ("SMSGUARD_TEST_REDIS_PW_EMPTY", "empty"),
    ] {
        let e = RedisLink::connect(&with_env(var), |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(&e, LinkError::Config(m) if m.contains(var) && m.contains(why)),
            "{e:?}"
        );
    }

    // No password configured for a server that requires one.
    let e = RedisLink::connect(&single(&server.url()), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&e, LinkError::Auth(m) if m.contains("requires a password") && m.contains("store.redis_password_env")),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_times_out_the_call_and_the_link_recovers_after() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (seen, cb) = recorder();
    let cfg = store(&format!(
        "redis = \"{}\"\ntimeout = \"50ms\"\n",
        server.url()
    ));
    let link = RedisLink::connect(&cfg, cb).await.unwrap();
    let script = counter();
    link.eval(&script, &["k"], &[1]).await.unwrap();

    // Every client's commands wait for 800 ms.
    assert_eq!(
        raw_command(
            server.port,
            &["CLIENT", "PAUSE", "800", "ALL"],
            Duration::from_secs(1)
        )
        .as_deref(),
        Some("+OK")
    );
    let t = Instant::now();
    let e = link.eval(&script, &["k"], &[1]).await.unwrap_err();
    let took = t.elapsed();
    assert_eq!(e, LinkError::Timeout(Duration::from_millis(50)));
    assert!(took >= Duration::from_millis(45), "{took:?}");
    // Well before the pause ends (800 ms): the call gave up at its
    // timeout rather than waiting for Redis. The margin absorbs a loaded
    // machine's scheduling.
    assert!(took < Duration::from_millis(700), "{took:?}");
    assert!(!link.is_up());
    assert!(
        matches!(link.health(), Health::Degraded { ref last_error, .. } if last_error.contains("50ms")),
        "{:?}",
        link.health()
    );
    assert_eq!(kinds(&seen), ["degraded"]);
    assert_eq!(link.stats().timeouts.load(Ordering::Relaxed), 1);

    // Degraded: calls fail at once, without waiting on Redis. Redis is
    // still paused, so a call sent to it would have ended in a timeout;
    // `Down` and the fast-failure count show it was never sent.
    let e = link.eval(&script, &["k"], &[1]).await.unwrap_err();
    assert!(matches!(e, LinkError::Down(_)), "{e:?}");
    assert_eq!(link.stats().fast_failures.load(Ordering::Relaxed), 1);

    // The pause ends; the probe brings the link back by itself.
    assert!(
        until(Duration::from_secs(4), || async { link.is_up() }).await,
        "{:?}",
        link.health()
    );
    assert_eq!(kinds(&seen), ["degraded", "up"]);
    // The call that timed out may or may not have run: 2 or 3.
    let n = int(&link.eval(&script, &["k"], &[0]).await.unwrap());
    assert!((2..=3).contains(&n), "{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_degrades_the_link_once_and_a_restart_brings_it_back() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let (seen, cb) = recorder();
    let link = RedisLink::connect(&single(&server.url()), cb)
        .await
        .unwrap();
    let script = counter();
    assert_eq!(int(&link.eval(&script, &["k"], &[1]).await.unwrap()), 1);

    server.kill();
    // Sixteen sends at once meet the dead server: every one fails fast
    // or within the timeout, and the link degrades once.
    let t = Instant::now();
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (link, script) = (link.clone(), script.clone());
            tokio::spawn(async move { link.eval(&script, &["k"], &[1]).await })
        })
        .collect();
    for c in calls {
        let e = c.await.unwrap().unwrap_err();
        assert!(e.is_fault(), "{e:?}");
    }
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert!(!link.is_up());
    assert_eq!(kinds(&seen), ["degraded"]);
    assert_eq!(link.stats().degradations.load(Ordering::Relaxed), 1);

    // Probes back off while it stays down (no second callback) ...
    tokio::time::sleep(PROBE_FIRST * 3).await;
    assert_eq!(kinds(&seen), ["degraded"]);
    // ... and find it again once it is back.
    server.restart();
    let t = Instant::now();
    assert!(
        until(Duration::from_secs(6), || async { link.is_up() }).await,
        "{:?}",
        link.health()
    );
    eprintln!("up again {:?} after the restart", t.elapsed());
    assert_eq!(kinds(&seen), ["degraded", "up"]);
    // The restarted server is empty and has no scripts: loaded again.
    let loads = link.stats().script_loads.load(Ordering::Relaxed);
    assert_eq!(int(&link.eval(&script, &["k"], &[1]).await.unwrap()), 1);
    assert_eq!(link.stats().script_loads.load(Ordering::Relaxed), loads + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_link_notices_a_dead_server_by_itself() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let (seen, cb) = recorder();
    let link = RedisLink::connect(&single(&server.url()), cb)
        .await
        .unwrap();
    server.kill();
    // No call is made: the heartbeat finds out.
    assert!(until(Duration::from_secs(3), || async { !link.is_up() }).await);
    assert_eq!(kinds(&seen), ["degraded"]);
    server.restart();
    assert!(until(Duration::from_secs(6), || async { link.is_up() }).await);
    assert_eq!(kinds(&seen), ["degraded", "up"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_start_gives_a_degraded_link_that_comes_up() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    server.kill();
    let (seen, cb) = recorder();
    let t = Instant::now();
    let link = RedisLink::connect(&single(&server.url()), cb)
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(!link.is_up());
    assert_eq!(kinds(&seen), ["degraded"]);
    let e = link.ping().await.unwrap_err();
    assert!(matches!(e, LinkError::Down(_)), "{e:?}");
    server.restart();
    assert!(until(Duration::from_secs(6), || async { link.is_up() }).await);
    assert_eq!(kinds(&seen), ["degraded", "up"]);
    // The link's timeout is 50 ms: on a busy machine one ping may miss it.
    assert!(
        until(Duration::from_secs(2), || async {
            link.ping().await.is_ok()
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_runs_a_script_whose_keys_share_a_hash_tag() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let seeds = cluster
        .urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let (seen, cb) = recorder();
    let cfg = store(&format!("redis_cluster = [{seeds}]\ntimeout = \"200ms\"\n"));
    let link = RedisLink::connect(&cfg, cb).await.unwrap();
    assert!(link.is_up());
    // Two keys of one send in one slot: a counter and a running total.
    let script = Script::new(
        "local n = redis.call('INCRBY', KEYS[1], 1)
         redis.call('PEXPIRE', KEYS[1], 60000)
         local total = redis.call('INCRBY', KEYS[2], ARGV[1])
         return {n, total}",
    );
    let tags: Vec<String> = (0..24).map(|i| format!("+9989939{i:04}")).collect();
    for round in 1..=2 {
        for tag in &tags {
            let keys = [
                format!("smsguard:{{{tag}}}:count"),
                format!("smsguard:{{{tag}}}:spend"),
            ];
            let v = link.eval(&script, &keys, &[10]).await.unwrap();
            assert_eq!(
                v,
                Value::Array(vec![Value::Int(round), Value::Int(10 * round)]),
                "{tag}"
            );
        }
        if round == 1 {
            // Every master forgets the script: it is loaded again.
            for n in &cluster.nodes {
                assert_eq!(n.cli(&["SCRIPT", "FLUSH"]), "OK");
            }
        }
    }
    // The tags spread over more than one master.
    let holding = cluster
        .nodes
        .iter()
        .filter(|n| n.cli(&["DBSIZE"]) != "0")
        .count();
    assert!(holding >= 2, "keys on {holding} master(s)");
    assert!(link.stats().script_loads.load(Ordering::Relaxed) >= 2);

    // Keys in different slots are refused by Redis; the link stays up.
    let e = link
        .eval(&script, &["smsguard:{a}:count", "smsguard:{b}:spend"], &[1])
        .await
        .unwrap_err();
    assert!(matches!(e, LinkError::Server(_)), "{e:?}");
    assert!(link.is_up());
    assert!(kinds(&seen).is_empty(), "{:?}", kinds(&seen));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_verifies_the_certificate_and_never_trusts_a_self_signed_one() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let Some(server) = RedisServer::start_tls(&cert.cert.pem(), &cert.key_pair.serialize_pem())
    else {
        return;
    };
    let (seen, cb) = recorder();
    let link = RedisLink::connect(&single(&server.url()), cb)
        .await
        .unwrap();
    // The handshake ran (rustls with ring) and refused the unknown
    // issuer: never connected, degraded, saying why.
    assert!(!link.is_up());
    assert_eq!(kinds(&seen), ["degraded"]);
    match link.health() {
        Health::Degraded { last_error, .. } => {
            assert!(last_error.contains("certificate"), "{last_error}")
        }
        h => panic!("{h:?}"),
    }
}
