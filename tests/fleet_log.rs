//! The fleet's log read before judging (src/store/fleet.rs, `Fleet::fresh`),
//! against a real `redis-server`: one read serves every send that asked
//! before it left, yet a send never returns without the events Redis held
//! when it asked, and a reader that is dropped hands the read on.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use smsguard::base::clock::SystemClock;
use smsguard::config::Config;
use smsguard::store::fleet::{Event, Fleet, Turn};
use smsguard::store::redis::RedisLink;
use smsguard::twilio::routes::Product;

async fn connect(redis: &RedisServer) -> RedisLink {
    let toml = format!("[store]\nredis = \"{}\"\ntimeout = \"2s\"\n", redis.url());
    let cfg = Config::parse(std::path::Path::new("t.toml"), &toml)
        .unwrap()
        .store;
    let link = RedisLink::connect(&cfg, |_| {}).await.unwrap();
    assert!(link.is_up());
    link
}

fn forwarded(n: u64) -> Event {
    Event::Forwarded {
        at: 1_700_000_000_000 + n,
        product: Product::Verify,
        account: "AC00000000000000000000000000000001".into(),
        to: format!("+1415555{:04}", n % 10_000),
        client_ip: None,
        user: None,
    }
}

/// Calls of `name` Redis ran so far (`INFO commandstats`).
fn calls(redis: &RedisServer, name: &str) -> u64 {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|v| v.split(',').next()?.trim().parse().ok())
        .unwrap_or(0)
}

/// Publishes `n` events on `fleet` and waits until Redis holds them all.
async fn publish(fleet: &Fleet, from: u64, n: u64) {
    let acks: Vec<_> = (from..from + n)
        .map(|i| fleet.publish_acked(forwarded(i)))
        .collect();
    for a in acks {
        a.await.expect("the event is written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_in_flight_share_a_read_of_the_log_and_miss_nothing_written_before_them() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let link = connect(&redis).await;
    let clock = Arc::new(SystemClock);
    let a = Fleet::start(link.clone(), clock.clone());
    let b = Fleet::start(link.clone(), clock);
    let learned = Arc::new(AtomicU64::new(0));

    // 40 events of replica b, then 64 sends on replica a at once: each
    // returns knowing all 40, and they shared a handful of reads.
    publish(&b, 0, 40).await;
    let before = calls(&redis, "xrange");
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (a, learned, link) = (a.clone(), learned.clone(), link.clone());
        tasks.push(tokio::spawn(async move {
            let count = |mine: bool, _| {
                assert!(!mine, "a's own events are not read back");
                learned.fetch_add(1, Ordering::SeqCst);
            };
            if i % 2 == 0 {
                // As a send with a script of its own: it carries the read
                // when no read is in flight, else waits for one.
                match a.turn() {
                    Turn::Carry(lead, c) => {
                        let answer = link.eval(c.script, &c.keys, &c.args).await;
                        lead.finish(Some(answer), count)
                    }
                    Turn::Wait(ticket) => a.wait(ticket, count).await,
                }
            } else {
                a.fresh(count).await
            }
            .expect("the log is read");
            learned.load(Ordering::SeqCst)
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            40,
            "a send returned before the log was applied"
        );
    }
    let reads = calls(&redis, "xrange") - before;
    assert!(
        (1..=8).contains(&reads),
        "64 sends in flight took {reads} reads of the log"
    );

    // While sends keep reading (a read is nearly always in flight), each
    // event b writes is known once the next send a judges after it
    // returns, whichever send's read applied it, and applied once.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Event>::new()));
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut hammer = Vec::new();
    for _ in 0..4 {
        let (a, busy, seen) = (a.clone(), busy.clone(), seen.clone());
        hammer.push(tokio::spawn(async move {
            while busy.load(Ordering::Relaxed) {
                let _ = a.fresh(|_, e| seen.lock().unwrap().push(e)).await;
                tokio::task::yield_now().await;
            }
        }));
    }
    for i in 0..30u64 {
        publish(&b, 100 + i, 1).await;
        a.fresh(|_, e| seen.lock().unwrap().push(e))
            .await
            .expect("the log is read");
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.iter().filter(|e| **e == forwarded(100 + i)).count(),
            1,
            "event {i} not applied once before the next send returned: {seen:?}"
        );
    }
    busy.store(false, Ordering::Relaxed);
    for h in hammer {
        h.await.unwrap();
    }
    assert_eq!(seen.lock().unwrap().len(), 30);

    // A send that leaves while it reads for the others hands the read on:
    // the next one still returns, with what was written.
    publish(&b, 200, 3).await;
    for _ in 0..20 {
        let a2 = a.clone();
        let t = tokio::spawn(async move { a2.fresh(|_, _| {}).await });
        tokio::task::yield_now().await;
        t.abort();
    }
    let n = AtomicU64::new(0);
    tokio::time::timeout(
        Duration::from_secs(5),
        a.fresh(|_, _| {
            n.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .await
    .expect("a dropped reader does not hold the others")
    .expect("the log is read");
    // The three were applied, by an aborted send's read or by this one.
    assert!(n.load(Ordering::SeqCst) <= 3);
    let mut m = 0;
    a.fresh(|_, _| m += 1).await.expect("the log is read");
    assert_eq!(m, 0, "nothing is left to apply");
}
