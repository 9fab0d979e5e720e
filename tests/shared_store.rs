//! The policy judging on the shared store (one pipeline per send, then a
//! view of its answers, then write-backs: src/store/shared.rs) decides
//! every send exactly as the policy on the memory store does, step by
//! step on seeded random sequences, against a real `redis-server` and a
//! three-master Cluster. And concurrent judges on one Redis, as replicas
//! would be, never let more through than one judge would.

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use common::redis::{RedisCluster, RedisServer};
use smsguard::base::clock::Millis;
use smsguard::config::Config;
use smsguard::phone::{Channel, Classification, Destination, NumberType, Region};
use smsguard::policy::{Attempt, BalanceView, Decision, Policy};
use smsguard::store::redis::RedisLink;
use smsguard::store::shared::SharedStore;
use smsguard::store::MemoryStore;
use smsguard::twilio::routes::Product;

const T0: Millis = 1_700_000_000_000;

/// xorshift64*: seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn config(toml: &str) -> Config {
    Config::parse(Path::new("t.toml"), toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

async fn connect(store: &str) -> RedisLink {
    let cfg = config(&format!("[store]\n{store}\ntimeout = \"2s\"\n")).store;
    let l = RedisLink::connect(&cfg, |_| {}).await.unwrap();
    assert!(l.is_up());
    l
}

fn attempt(to: &Destination) -> Attempt<'_> {
    Attempt {
        product: Product::Messaging,
        account: "AC00000000000000000000000000000001",
        to,
        class: Classification {
            calling_code: 1,
            region: Some("US".parse::<Region>().unwrap()),
            kind: NumberType::Mobile,
            valid: true,
        },
        client_ip: "198.51.100.1".parse::<IpAddr>().unwrap(),
        end_user_ip: true,
        user: None,
        segments: 1,
        media: 0,
        content: None,
        balance: BalanceView::NotAsked,
    }
}

/// Judges `a` as the guard does with a shared store, and waits for its
/// write-backs.
async fn judge_shared(
    p: &Policy,
    shared: &Arc<SharedStore>,
    a: &Attempt<'_>,
    now: Millis,
) -> Decision {
    let view = shared.prepare(p.plan(a, now, &**shared.local()), now).await;
    assert!(!view.fell_back(), "redis answered");
    let d = p.judge_with(a, now, &view).finish(BalanceView::NotAsked);
    view.settle().await;
    d
}

/// What must agree: the action, the deciding verdict (rule and detail,
/// which carries the counts and waits), the monitored ones, the hold.
fn summary(d: &Decision) -> String {
    let v = |v: &smsguard::policy::Verdict| {
        format!("{}[{}]", v.rule, v.detail.clone().unwrap_or_default())
    };
    format!(
        "{:?} {:?} {:?} {:?}",
        d.action,
        d.verdict.as_ref().map(v),
        d.would_block.iter().map(v).collect::<Vec<_>>(),
        d.hold
    )
}

const VARIANTS: [&str; 3] = [
    // Everything blocking.
    r#"
[backoff]
free = 2
base = "10s"
factor = 2
max = "2m"
reset_after = "10m"
[[limit]]
name = "number"
key = "to"
rates = ["4/5m", "6/1h"]
[[limit]]
name = "range"
key = "prefix:9"
rates = ["10/10m"]
block = "5m"
escalate = 2
forgive_after = "1h"
[budget]
hourly = "0.30"
daily = "1.00"
prices = { default = "0.01" }
regions = { US = { hourly = "0.25" } }
"#,
    // Monitored budget and limit, backoff holding short waits.
    r#"
[backoff]
free = 1
base = "5s"
factor = 3
max = "1m"
reset_after = "5m"
hold_up_to = "6s"
[[limit]]
name = "number"
key = "to"
rates = ["3/2m"]
action = "monitor"
[[limit]]
name = "range"
key = "prefix:9"
rates = ["8/10m"]
block = "2m"
[budget]
hourly = "0.20"
prices = { default = "0.01" }
[actions]
budget = "monitor"
"#,
    // Monitored backoff; limits and budget only.
    r#"
[backoff]
free = 0
base = "3s"
factor = 2
max = "30s"
reset_after = "2m"
[actions]
backoff = "monitor"
[[limit]]
name = "range"
key = "prefix:8"
rates = ["12/5m"]
block = "1m"
[budget]
hourly = "0.40"
prices = { default = "0.02" }
"#,
];

async fn differential(store: &str, seed: u64) -> u64 {
    let mut round_trips = 0;
    let numbers: Vec<String> = (0..12)
        .map(|i| format!("+1415555{}{:03}", i % 3, i))
        .collect();
    for (vi, v) in VARIANTS.iter().enumerate() {
        let cfg = Arc::new(config(&format!("[geo]\nallow = [\"US\"]\n{v}")));
        let reference = Policy::new(cfg.clone(), Arc::new(MemoryStore::new(10_000, 1_000)));
        let local = Arc::new(MemoryStore::new(10_000, 1_000));
        // Each run in its own key space.
        let store = format!("{store}\nprefix = \"d{seed}v{vi}:\"");
        let link = connect(&store).await;
        let shared = SharedStore::new(
            local,
            link.clone(),
            &config(&format!("[store]\n{store}")).store,
        );
        let policy = Policy::new(cfg, shared.clone());
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) + vi as u64 + 1);
        // Logical time runs far ahead of real time: Redis expires keys on
        // its own clock after `until - now`, so it never drops one early.
        let start = Instant::now();
        let mut jumped = T0 + vi as u64 * 1_000_000_000;
        let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
        for step in 0..300 {
            jumped += match rng.below(10) {
                0 => rng.below(15 * 60_000),
                1..=4 => rng.below(20_000),
                _ => rng.below(1_500),
            };
            let now = jumped + start.elapsed().as_millis() as Millis;
            let to = Destination {
                channel: Channel::Sms,
                e164: numbers[rng.below(numbers.len() as u64) as usize].clone(),
            };
            let a = attempt(&to);
            let want = reference.decide(&a, now);
            let got = judge_shared(&policy, &shared, &a, now).await;
            assert_eq!(
                summary(&got),
                summary(&want),
                "variant {vi} step {step} at {now}: {}",
                to.e164
            );
            let key = want
                .deciding()
                .map_or("allowed".to_string(), |v| v.rule.clone());
            *outcomes.entry(key).or_default() += 1;
        }
        // The sequences reach every stage, or the comparison says little.
        for stage in ["allowed", "backoff", "limit:range"] {
            assert!(
                outcomes.contains_key(stage),
                "variant {vi} never reached {stage}: {outcomes:?}"
            );
        }
        assert!(
            outcomes.keys().any(|k| k.starts_with("budget:")),
            "variant {vi} never reached the budget: {outcomes:?}"
        );
        assert_eq!(
            shared
                .stats
                .unplanned
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        assert_eq!(
            shared
                .stats
                .write_errors
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        round_trips += link
            .stats()
            .round_trips
            .load(std::sync::atomic::Ordering::Relaxed);
    }
    round_trips
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_store_decides_as_the_memory_store() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = format!("redis = \"{}\"", server.url());
    for seed in 1..=3 {
        // One pipeline per send that reaches a stateful stage, a write-back
        // for some, block writes when a limit trips: under two per send,
        // where a round trip per key would be five or more.
        let rt = differential(&store, seed).await;
        assert!(rt < 2 * 3 * 300, "{rt} round trips for 900 sends");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_store_decides_as_the_memory_store_on_a_cluster() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let seeds: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    differential(&format!("redis_cluster = [{}]", seeds.join(", ")), 7).await;
}

/// Three judges on one Redis, as three replicas, `n` concurrent sends
/// over two ranges; returns how many went out per range.
async fn concurrent(link: &RedisLink, policy: &str, n: u64) -> [usize; 2] {
    let cfg = Arc::new(config(&format!("[geo]\nallow = [\"US\"]\n{policy}")));
    let store_cfg = config("[store]\n").store;
    let mut judges = Vec::new();
    for _ in 0..3 {
        let shared = SharedStore::new(
            Arc::new(MemoryStore::new(1_000, 100)),
            link.clone(),
            &store_cfg,
        );
        judges.push((Policy::new(cfg.clone(), shared.clone()), shared));
    }
    let judges = Arc::new(judges);
    let mut tasks = Vec::new();
    for i in 0..n {
        let judges = judges.clone();
        tasks.push(tokio::spawn(async move {
            let (p, s) = &judges[(i % 3) as usize];
            let to = Destination {
                channel: Channel::Sms,
                e164: format!("+1415555{}{:03}", i % 2, i),
            };
            let a = attempt(&to);
            (
                (i % 2) as usize,
                judge_shared(p, s, &a, T0 + i).await.forwarded(),
            )
        }));
    }
    let mut out = [0; 2];
    for t in tasks {
        let (range, forwarded) = t.await.unwrap();
        out[range] += usize::from(forwarded);
    }
    out
}

/// Judges on one Redis, as replicas are, let exactly what one judge would
/// through a limit and a budget, each under concurrent sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_judges_count_limits_and_budgets_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let limit = "[[limit]]\nname = \"range\"\nkey = \"prefix:8\"\nrates = [\"10/1h\"]\n";
    let budget = "[budget]\nhourly = \"0.25\"\nprices = { default = \"0.01\" }\n";
    let link = connect(&format!("redis = \"{url}\"\nprefix = \"l:\"")).await;
    assert_eq!(concurrent(&link, limit, 48).await, [10, 10]);
    let link = connect(&format!("redis = \"{url}\"\nprefix = \"b:\"")).await;
    let [x, y] = concurrent(&link, budget, 48).await;
    assert_eq!(x + y, 25);
    // Both: a send the limit stops held its budget charge for one round
    // trip (charged in the same pipeline, refunded after), so a concurrent
    // send may find the budget briefly fuller than it ends: fewer may go
    // out than one judge would let, never more.
    let link = connect(&format!("redis = \"{url}\"\nprefix = \"lb:\"")).await;
    let [x, y] = concurrent(&link, &format!("{limit}{budget}"), 48).await;
    assert!(x <= 10 && y <= 10, "{x} {y}");
    assert!(x + y >= 10, "{x} {y}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let spent = ops_spent(&link, &format!("hour:*@{}", T0 - T0 % 3_600_000)).await;
    assert_eq!(
        spent,
        (x + y) as u64 * 10_000,
        "refunds settled: the total is what went out"
    );
}

async fn ops_spent(link: &RedisLink, key: &str) -> u64 {
    smsguard::store::redis_ops::spent(link, key).await.unwrap()
}

/// Mirroring many blocks (a long attack leaves tens of thousands) takes
/// longer than a send may wait on Redis; it is off the request path and
/// must not mark a healthy Redis degraded, and every block is mirrored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring_many_blocks_does_not_degrade_the_link() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let until = T0 * 2;
    // 50,000 `to` blocks in the shared index, written by Redis itself.
    let script = format!(
        "for i = 1, 50000 do local m = 'to=+1415' .. string.format('%07d', i) \
         redis.call('ZADD', KEYS[1], {until}, m) \
         redis.call('HSET', KEYS[2], m, '{T0}|{until}|1|shadow|limit:number') end \
         redis.call('HSET', KEYS[3], 'to', 50000) return 1"
    );
    let out = server.cli(&[
        "EVAL",
        &script,
        "3",
        "smsguard:{blocks}:until",
        "smsguard:{blocks}:entries",
        "smsguard:{blocks}:kinds",
    ]);
    assert_eq!(out, "1");
    let store = format!("redis = \"{}\"", server.url());
    let cfg = config(&format!("[store]\n{store}\ntimeout = \"5ms\"\n")).store;
    let link = RedisLink::connect(&cfg, |_| {}).await.unwrap();
    let local = Arc::new(MemoryStore::new(10_000, 100_000));
    let shared = SharedStore::new(local.clone(), link.clone(), &cfg);
    let mirrored = shared.sync(T0).await.expect("the mirror is read");
    assert_eq!(mirrored, 50_000);
    assert!(link.is_up(), "a long listing does not degrade the link");
    assert_eq!(smsguard::store::Store::blocks(&*local, T0).len(), 50_000);
}

/// Waits until every trip and block made through `stores` is in Redis.
async fn settled(stores: &[&Arc<SharedStore>]) {
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while stores.iter().any(|s| s.unsynced() > 0) {
        assert!(Instant::now() < deadline, "trips never reached redis");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// One trip is one offence across replicas: two replicas trip one key
/// before the block of either reached the other, and Redis (one script
/// on the key's block and offences) records one first offence, renewed
/// by the second trip; both replicas then hold Redis's block, even the
/// one whose own estimate said otherwise. Once the block is over, a trip
/// is the second offence, its block doubled (`Escalation::duration`,
/// computed in the script as in Rust).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_tripping_one_key_count_one_offence() {
    use smsguard::config::Action;
    use smsguard::store::{redis_ops as ops, Escalation, Store};
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = format!("redis = \"{}\"", server.url());
    let link = connect(&store).await;
    let cfg = config(&format!("[store]\n{store}\n")).store;
    let replica = || SharedStore::new(Arc::new(MemoryStore::new(1_000, 100)), link.clone(), &cfg);
    let (a, b) = (replica(), replica());
    const H: Millis = 3_600_000;
    let esc = Escalation {
        base: H,
        escalate: 2.0,
        max: 8 * H,
        forgive_after: 48 * H,
    };
    let key = "user=mallory";
    let offences = || server.cli(&["HGET", "smsguard:o:{user=mallory}", "count"]);
    let rule = || Arc::<str>::from("adaptive:distinct:user");

    assert_eq!(a.trip(key, T0, &esc, rule(), Action::Shadow), (H, 1));
    settled(&[&a]).await;
    // b has not mirrored a's block, and its own estimate is a repeat
    // offence (an old one it remembers): locally offence 2, in Redis the
    // same first offence, renewed.
    b.local().seed_offences(key, 1, T0 - 10 * H);
    assert_eq!(
        b.trip(key, T0 + 1_000, &esc, rule(), Action::Shadow),
        (2 * H, 2)
    );
    settled(&[&b]).await;
    assert_eq!(offences(), "1");
    let shared = ops::block(&link, key, T0 + 2_000).await.unwrap().unwrap();
    assert_eq!(
        (shared.since, shared.until, shared.offence),
        (T0, T0 + H + 1_000, 1)
    );
    for s in [&a, &b] {
        let mut mirrored = s.local().block(key, T0 + 2_000).unwrap();
        if mirrored.until < shared.until {
            // a learns the renewal from the mirror.
            s.sync(T0 + 2_000).await.unwrap();
            mirrored = s.local().block(key, T0 + 2_000).unwrap();
        }
        assert_eq!(mirrored, shared);
    }
    let (_, listed) = ops::blocks(&link, T0 + 2_000).await.unwrap().remove(0);
    assert_eq!(listed, shared, "the index lists the renewed block");

    // Over: the next trip is the second offence, twice as long.
    let later = T0 + 3 * H;
    assert_eq!(a.trip(key, later, &esc, rule(), Action::Shadow), (2 * H, 2));
    settled(&[&a]).await;
    assert_eq!(offences(), "2");
    let second = ops::block(&link, key, later).await.unwrap().unwrap();
    assert_eq!(
        (second.since, second.until, second.offence),
        (later, later + 2 * H, 2)
    );

    // A monitored block tripped by a rule that stops sends becomes that
    // rule's block, still one offence.
    a.trip(
        "prefix:7=+1212555",
        T0,
        &esc,
        "watch".into(),
        Action::Monitor,
    );
    b.trip(
        "prefix:7=+1212555",
        T0 + 1,
        &esc,
        "stop".into(),
        Action::Shadow,
    );
    settled(&[&a, &b]).await;
    let e = ops::block(&link, "prefix:7=+1212555", T0 + 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&*e.rule, e.action, e.offence), ("stop", Action::Shadow, 1));

    // The script's durations are Escalation::duration's, for an escalation
    // that is not a power of two, up to its cap.
    let esc = Escalation {
        base: 12 * H,
        escalate: 1.7,
        max: 30 * 24 * H,
        forgive_after: 400 * 24 * H,
    };
    let mut at = T0;
    for n in 1..=12u32 {
        let e = ops::trip(&link, "region=UZ", at, at, &esc, "r", Action::Shadow)
            .await
            .unwrap();
        assert_eq!(
            (e.offence, e.until - e.since),
            (n, esc.duration(n)),
            "offence {n}"
        );
        at = e.until + 1;
    }
}

/// `redis_ops::trip` is `Store::trip` of the memory store, step by step on
/// a seeded random sequence of trips (any action and rule), blocks set by
/// hand and quiet spells long enough for blocks to end and offences to be
/// forgiven.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_in_redis_is_a_trip_in_memory() {
    use smsguard::config::Action;
    use smsguard::store::{redis_ops as ops, BlockEntry, Escalation, Store};
    let Some(server) = RedisServer::start() else {
        return;
    };
    let link = connect(&format!("redis = \"{}\"", server.url())).await;
    let mem = MemoryStore::new(100, 100);
    const H: Millis = 3_600_000;
    let esc = Escalation {
        base: H,
        escalate: 1.5,
        max: 5 * H,
        forgive_after: 6 * H,
    };
    let actions = [
        Action::Shadow,
        Action::Reject,
        Action::Monitor,
        Action::Allow,
    ];
    let mut rng = Rng(0x5eed_0f72_19ab);
    let mut now = T0;
    let (mut renewed, mut repeat) = (0, 0);
    for step in 0..600 {
        now += match rng.below(4) {
            0 => rng.below(1_000),
            1 | 2 => rng.below(H),
            _ => rng.below(8 * H),
        };
        let key = ["to=+1", "user=u", "prefix:7=+1212555"][rng.below(3) as usize];
        let action = actions[rng.below(4) as usize];
        if rng.below(10) == 0 {
            let e = BlockEntry {
                since: now,
                until: now + rng.below(2 * H) + 1,
                rule: Arc::from("manual"),
                action,
                offence: 1,
            };
            mem.set_block(key, e.clone());
            ops::set_block(&link, key, &e, now).await.unwrap();
            continue;
        }
        let rule: Arc<str> = Arc::from(["limit:a", "adaptive:b"][rng.below(2) as usize]);
        let (dur, offence) = mem.trip(key, now, &esc, rule.clone(), action);
        let got = ops::trip(&link, key, now, now, &esc, &rule, action)
            .await
            .unwrap();
        let want = mem.block(key, now).unwrap();
        assert_eq!(got, want, "step {step}");
        assert_eq!(
            (got.until - now, got.offence),
            (dur, offence),
            "step {step}"
        );
        renewed += usize::from(got.since < now);
        repeat += usize::from(got.since == now && got.offence > 1);
    }
    assert!(
        renewed > 50 && repeat > 50,
        "{renewed} renewals, {repeat} repeats"
    );
}
