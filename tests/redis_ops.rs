//! The shared store's scripts (src/store/redis_ops.rs) against real
//! `redis-server` processes: step by step identical to the memory store on
//! seeded random sequences, exact under concurrency, gone from Redis when
//! they stop mattering, and the same on a three-master Cluster.
//!
//! Differential runs use a logical clock that runs at twice real time plus
//! random jumps (and reads a little in the past now and then): Redis
//! expires keys on its own clock after `until - now` real ms, so logical
//! time must never run slower than real time for the two stores to agree.

mod common;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::redis::{link, store_config, RedisCluster, RedisServer, Target};
use smsguard::base::clock::Millis;
use smsguard::config::{Action, Config};
use smsguard::phone::{Channel, Classification, Destination, NumberType, Region};
use smsguard::policy::{Attempt, BalanceView, Policy};
use smsguard::store::redis::RedisLink;
use smsguard::store::redis_batch;
use smsguard::store::redis_ops::{self as ops, BackoffDecision, BackoffParams};
use smsguard::store::{BackoffState, BlockEntry, MemoryStore, Store};
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
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// Logical time: twice real time since the start, plus every jump.
struct LogicalClock {
    start: Instant,
    base: Millis,
    jumped: Millis,
}

impl LogicalClock {
    fn new(base: Millis) -> Self {
        LogicalClock {
            start: Instant::now(),
            base,
            jumped: 0,
        }
    }
    fn now(&self) -> Millis {
        self.base + 2 * self.start.elapsed().as_millis() as Millis + self.jumped
    }
    fn jump(&mut self, ms: Millis) {
        self.jumped += ms;
    }
    /// Now, or (one step in eight) a little in the past: a clock that
    /// stepped back, or a replica slightly behind.
    fn read(&self, rng: &mut Rng) -> Millis {
        let now = self.now();
        if rng.below(8) == 0 {
            now.saturating_sub(rng.below(3_000))
        } else {
            now
        }
    }
}

fn real_now() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as Millis
}

// ====================================================================
// Differential: rate counters.
// ====================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_count_exactly_as_the_memory_store_does() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let link = link(Target::Server(&server), "2s").await;
    // Each key has its own rates, as a limit does; periods from 1 ms (one
    // slot of 1 ms) to an hour, and one not divisible by six.
    // Now and then a key's periods change, as after a reload: what still
    // counted carries over to the new period in both stores.
    type Rates = &'static [Millis];
    let keys: &[(&str, Rates, Rates)] = &[
        ("prefix=+99899394", &[600, 6_000], &[1_200, 6_000]),
        ("to=+14155550123", &[1_000], &[300]),
        (
            "ip=203.0.113.7",
            &[7, 60_000, 3_600_000],
            &[7, 6_000, 3_600_000],
        ),
        ("user=a{b}c", &[1, 25], &[2, 25]),
        ("global=", &[10_001], &[10_001]),
    ];
    for seed in 1..=4u64 {
        let mem = MemoryStore::new(10_000, 1_000);
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut clock = LogicalClock::new(T0 + seed * 1_000_003);
        let prefix = format!("seed{seed}:");
        for step in 0..600 {
            match rng.below(10) {
                0 => clock.jump(rng.below(20_000)),
                1..=3 => clock.jump(rng.below(200)),
                _ => {}
            }
            let (k, main, reloaded) = rng.pick(keys);
            let periods = if rng.below(12) == 0 { reloaded } else { main };
            let key = format!("{prefix}{k}");
            // A read in the past keeps counting what the memory store
            // holds, while Redis may already have expired the key on its
            // own clock (its lifetime was set from the later reading):
            // they agree only while real time since the last hit stays
            // under the key's lifetime, so only keys whose periods are a
            // second or more (lifetimes of seconds, hits milliseconds
            // apart even on a loaded machine) are read in the past. With
            // 1 ms slots this failed under load.
            let now = if periods.iter().all(|p| *p >= 1_000) {
                clock.read(&mut rng)
            } else {
                clock.now()
            };
            let mut want = vec![0; periods.len()];
            mem.hit(&key, periods, now, &mut want);
            let got = ops::hit(&link, &key, periods, now).await.unwrap();
            assert_eq!(
                got, want,
                "seed {seed} step {step}: hit {key} {periods:?} at {now}"
            );
        }
    }
    // Every counter key expires.
    for k in server.cli(&["KEYS", "smsguard:c:*"]).lines() {
        let ttl: i64 = server.cli(&["PTTL", k]).parse().unwrap();
        // -2: expired since KEYS listed it.
        assert!(ttl != -1, "{k} has no expiry");
    }
}

/// A counter written in the text layout of earlier versions
/// (`p,t,c0,...,c6` per rate) counts on in the binary one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_in_the_earlier_text_layout_counts_on() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let link = link(Target::Server(&server), "2s").await;
    // 60 s in slots of 10 s: two sends in the newest slot, one a slot
    // before; 10 s in slots of 1667 ms: one send.
    let (w, w2) = (10_000, 1_667);
    let old = format!(
        "60000,{},2,1,0,0,0,0,0|10000,{},1,0,0,0,0,0,0",
        T0 / w,
        T0 / w2
    );
    server.cli(&["SET", "smsguard:c:{to=+1}", &old]);
    let got = ops::hit(&link, "to=+1", &[60_000, 10_000], T0)
        .await
        .unwrap();
    assert_eq!(got, [4, 2]);
    let stored = server.cli(&["STRLEN", "smsguard:c:{to=+1}"]);
    // Version byte, then per rate a form byte, a u32 period, a double
    // slot index and seven u16 counts.
    assert_eq!(
        stored,
        (1 + 2 * 27).to_string(),
        "rewritten in the binary layout"
    );
    let got = ops::hit(&link, "to=+1", &[60_000, 10_000], T0 + 1)
        .await
        .unwrap();
    assert_eq!(got, [5, 3]);

    // Counts past u16 and a period past u32 take the wide forms, and
    // count on from there.
    let old = format!("60000,{},70000,65535,0,0,0,0,0", T0 / w);
    server.cli(&["SET", "smsguard:c:{big}", &old]);
    let got = ops::hit(&link, "big", &[60_000], T0).await.unwrap();
    assert_eq!(got, [135_536]);
    let got = ops::hit(&link, "big", &[60_000], T0 + 1).await.unwrap();
    assert_eq!(got, [135_537]);
    assert_eq!(
        server.cli(&["STRLEN", "smsguard:c:{big}"]),
        (1 + 1 + 4 + 8 + 28).to_string()
    );
    let long: Millis = 5_000_000_000;
    for want in 1..=3 {
        let got = ops::hit(&link, "long", &[long, 60_000], T0 + want)
            .await
            .unwrap();
        assert_eq!(got, [want, want]);
    }
    assert_eq!(
        server.cli(&["STRLEN", "smsguard:c:{long}"]),
        (1 + (1 + 8 + 8 + 14) + 27).to_string()
    );
}

// ====================================================================
// Differential: spend, refund, spent.
// ====================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spends_and_refunds_match_the_memory_store() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let link = link(Target::Server(&server), "2s").await;
    let keys = ["hour:*@1700000000000", "day:*@1699920000000", "hour:UZ@1"];
    let caps = [0, 1, 50, 1_000, 123_456, u64::MAX];
    let amounts = [0, 1, 7, 49, 50, 51, 999, 100_000];
    for seed in 1..=4u64 {
        let mem = MemoryStore::new(10_000, 1_000);
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) + 1);
        let now = T0;
        let prefix = format!("seed{seed}:");
        for step in 0..800 {
            let key = format!("{prefix}{}", rng.pick(&keys));
            let amount = *rng.pick(&amounts);
            match rng.below(10) {
                0..=5 => {
                    let cap = *rng.pick(&caps);
                    let want = mem.spend(&key, amount, cap);
                    let got = ops::spend(&link, &key, amount, cap, now, now + 3_600_000)
                        .await
                        .unwrap();
                    assert_eq!(
                        got, want,
                        "seed {seed} step {step}: spend {key} {amount} cap {cap}"
                    );
                }
                6..=7 => {
                    mem.refund(&key, amount);
                    ops::refund(&link, &key, amount).await.unwrap();
                }
                _ => {}
            }
            assert_eq!(
                ops::spent(&link, &key).await.unwrap(),
                mem.spent(&key),
                "seed {seed} step {step}: spent {key}"
            );
        }
    }
    // A refund of an unknown key creates nothing.
    ops::refund(&link, "never", 5).await.unwrap();
    assert_eq!(server.cli(&["EXISTS", "smsguard:s:{never}"]), "0");
    // A total at the edge of Redis integers is refused, not wrapped.
    assert_eq!(
        ops::spend(&link, "big", i64::MAX as u64, u64::MAX, T0, T0 + 1_000)
            .await
            .unwrap(),
        Ok(i64::MAX as u64)
    );
    assert_eq!(
        ops::spend(&link, "big", 1, u64::MAX, T0, T0 + 1_000)
            .await
            .unwrap(),
        Err(i64::MAX as u64)
    );
    assert_eq!(
        ops::spend(&link, "big2", u64::MAX, u64::MAX, T0, T0 + 1_000)
            .await
            .unwrap(),
        Err(0)
    );
}

// ====================================================================
// Differential: blocks and offences.
// ====================================================================

fn entry(rng: &mut Rng, now: Millis) -> BlockEntry {
    let actions = [
        Action::Shadow,
        Action::Reject,
        Action::Monitor,
        Action::Allow,
    ];
    let rules = ["manual", "limit:prefix", "limit:odd|rule=x"];
    BlockEntry {
        since: now,
        until: now + 1 + rng.below(8_000),
        rule: Arc::from(*rng.pick(&rules)),
        action: *rng.pick(&actions),
        offence: 1 + rng.below(5) as u32,
    }
}

fn kind(key: &str) -> &str {
    key.split_once('=').map_or(key, |(k, _)| k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_and_offences_match_the_memory_store() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let link = link(Target::Server(&server), "2s").await;
    let keys = [
        "prefix:8=+99899394",
        "prefix:8=+99899395",
        "to=+14155550123",
        "region=UZ",
        "client_ip=203.0.113.7",
        "user=a|b=c",
    ];
    for seed in 1..=3u64 {
        // A fresh server state per seed: the block index is global.
        server.cli(&["FLUSHALL"]);
        let mem = MemoryStore::new(10_000, 1_000);
        let mut rng = Rng(seed.wrapping_mul(0x5851_f42d_4c95_7f2d) + 3);
        let mut clock = LogicalClock::new(T0 + seed * 7_777_777);
        for step in 0..500 {
            if rng.below(4) == 0 {
                clock.jump(rng.below(3_000));
            }
            let now = clock.now();
            let ki = rng.below(keys.len() as u64) as usize;
            let key = keys[ki];
            let ctx = format!("seed {seed} step {step} at {now}: {key}");
            match rng.below(12) {
                0..=2 => {
                    let e = entry(&mut rng, now);
                    mem.set_block(key, e.clone());
                    ops::set_block(&link, key, &e, now).await.unwrap();
                }
                3 => {
                    let active = mem.block(key, now).is_some();
                    let m = mem.remove_block(key);
                    let r = ops::remove_block(&link, key).await.unwrap();
                    // An expired block is still held by the memory store
                    // (true) but may be gone from Redis.
                    if active || !m {
                        assert_eq!(r, m, "{ctx}: remove_block");
                    }
                }
                4..=6 => {
                    // One forgive_after per key, as a limit's is: a key's
                    // offences expire with the forgive_after that last
                    // recorded one.
                    let forgive = [0, 1, 500, 2_000, 60_000, 3_000][ki];
                    let want = mem.offend(key, now, forgive);
                    let got = ops::offend(&link, key, now, forgive).await.unwrap();
                    assert_eq!(got, want, "{ctx}: offend forgive {forgive}");
                }
                7 => {
                    let want = mem.blocks(now);
                    let got = ops::blocks(&link, now).await.unwrap();
                    assert_eq!(got, want, "{ctx}: blocks");
                }
                _ => {}
            }
            assert_eq!(
                ops::block(&link, key, now).await.unwrap(),
                mem.block(key, now),
                "{ctx}: block"
            );
            // may_block: true for every kind with an active block; false
            // for a kind never blocked.
            let active: HashSet<String> = mem
                .blocks(now)
                .iter()
                .map(|(k, _)| kind(k).to_string())
                .collect();
            for k in &active {
                assert!(
                    ops::may_block(&link, k).await.unwrap(),
                    "{ctx}: may_block {k}"
                );
            }
            assert!(!ops::may_block(&link, "prefix:6").await.unwrap());
        }
    }
}

// ====================================================================
// Differential: backoff, against the policy's own backoff stage.
// ====================================================================

fn destination(e164: &str) -> Destination {
    Destination {
        channel: Channel::Sms,
        e164: e164.into(),
    }
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

/// The state as it counts at `now` (a quiet spell resets it; Redis has
/// dropped the key by then).
fn effective(s: BackoffState, now: Millis, reset_after: Millis) -> BackoffState {
    if now.saturating_sub(s.last_attempt) >= reset_after {
        BackoffState::default()
    } else {
        s
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_judges_as_the_policys_backoff_stage() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let link = link(Target::Server(&server), "2s").await;
    let variants = [
        "free = 1\nbase = \"1s\"\nfactor = 2\nmax = \"1m\"\nreset_after = \"30s\"\n",
        "free = 0\nbase = \"300ms\"\nfactor = 1.5\nmax = \"20s\"\nreset_after = \"10s\"\nhold_up_to = \"400ms\"\n",
        "free = 3\nbase = \"700ms\"\nfactor = 1.1\nmax = \"2m\"\nreset_after = \"5s\"\nhold_up_to = \"2s\"\n",
        "free = 2\nbase = \"100ms\"\nfactor = 3.7\nmax = \"10s\"\nreset_after = \"20s\"\n[actions]\nbackoff = \"monitor\"\n",
    ];
    let numbers = ["+14155550123", "+14155550124", "+14155550125"];
    for (vi, v) in variants.iter().enumerate() {
        let config = Config::parse(Path::new("t.toml"), &format!("[backoff]\n{v}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let b = config.backoff.clone().expect("backoff configured");
        let monitored = v.contains("monitor");
        let params = BackoffParams::new(
            &b,
            if monitored {
                Action::Monitor
            } else {
                Action::Shadow
            },
        );
        let mem = Arc::new(MemoryStore::new(10_000, 1_000));
        let policy = Policy::new(Arc::new(config), mem.clone());
        let mut rng = Rng((vi as u64).wrapping_mul(0x1234_5678_9abc_def1) + 5);
        let mut clock = LogicalClock::new(T0 + vi as u64 * 100_000_000);
        let mut seen = [0usize; 3];
        for step in 0..400 {
            match rng.below(6) {
                0 => clock.jump(rng.below(params.reset_after + 2_000)),
                1..=3 => clock.jump(rng.below(2 * params.base + 1)),
                _ => {}
            }
            let now = clock.now();
            let number = *rng.pick(&numbers);
            let key = format!("v{vi}:{number}");
            let ctx = format!("variant {vi} step {step} at {now}: {number}");
            let to = destination(&key_number(&key));
            let d = policy.decide(&attempt(&to), now);
            let j = ops::backoff_judge(&link, &key, now, &params).await.unwrap();
            let backoff_verdict = d
                .verdict
                .iter()
                .chain(&d.would_block)
                .any(|v| v.rule == "backoff");
            match j.decision {
                BackoffDecision::Ready => {
                    seen[0] += 1;
                    assert!(!backoff_verdict && d.hold.is_none(), "{ctx}: ready {d:?}");
                }
                BackoffDecision::Hold(h) => {
                    seen[1] += 1;
                    assert_eq!(d.hold, Some(Duration::from_millis(h)), "{ctx}: {d:?}");
                    assert!(!backoff_verdict, "{ctx}");
                }
                BackoffDecision::Wait(w) => {
                    seen[2] += 1;
                    assert!(backoff_verdict, "{ctx}: wait {w}: {d:?}");
                    let secs = Duration::from_secs(w.div_ceil(1000));
                    let text = humantime::format_duration(secs).to_string();
                    let detail = d
                        .verdict
                        .iter()
                        .chain(&d.would_block)
                        .find(|v| v.rule == "backoff")
                        .and_then(|v| v.detail.clone())
                        .unwrap_or_default();
                    assert!(
                        detail.ends_with(&format!("next allowed in {text}")),
                        "{ctx}: {detail} vs {w}"
                    );
                    assert!(
                        detail.contains(&format!(": {} sends,", j.before.sends)),
                        "{ctx}: {detail} vs {:?}",
                        j.before
                    );
                }
            }
            assert_eq!(j.reservation.is_some(), d.forwarded(), "{ctx}: {d:?}");
            // Both stores now hold the same state.
            let mut m = BackoffState::default();
            mem.backoff(&to.e164, now, &mut |s| m = *s);
            let r = ops::backoff_state(&link, &key).await.unwrap();
            assert_eq!(r, m, "{ctx}: state after");
            assert_eq!(
                effective(j.before, now, params.reset_after).sends,
                j.before.sends,
                "{ctx}"
            );
        }
        assert!(
            seen.iter().all(|n| *n > 0) || params.hold_up_to.is_none(),
            "{vi}: {seen:?}"
        );
        assert!(seen[0] > 0 && seen[2] > 0, "variant {vi} outcomes {seen:?}");
    }
}

/// A test key `v0:+1415...` back to its number.
fn key_number(key: &str) -> String {
    key.split_once(':').map_or(key, |(_, n)| n).to_string()
}

/// Backoff after one free send: 30 s, doubling up to `max` seconds,
/// forgotten after `reset` seconds.
fn backoff_after_one(max: u64, reset: u64) -> smsguard::config::Backoff {
    smsguard::config::Backoff {
        free: 1,
        base: Duration::from_secs(30),
        factor: 2.0,
        max: Duration::from_secs(max),
        reset_after: Duration::from_secs(reset),
        hold_up_to: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backoff_reservation_is_given_back_as_in_memory() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let link = link(Target::Server(&server), "2s").await;
    let b = backoff_after_one(120, 7_200);
    let params = BackoffParams::new(&b, Action::Shadow);
    let key = "+14155550123";
    let first = ops::backoff_judge(&link, key, T0, &params).await.unwrap();
    assert_eq!(first.decision, BackoffDecision::Ready);
    let r1 = first.reservation.unwrap();
    let second = ops::backoff_judge(&link, key, T0 + 40_000, &params)
        .await
        .unwrap();
    assert_eq!(second.decision, BackoffDecision::Ready);
    let r2 = second.reservation.unwrap();
    // The first can no longer be given back: another send counted since.
    assert!(!ops::backoff_undo(&link, key, &r1).await.unwrap());
    assert!(ops::backoff_undo(&link, key, &r2).await.unwrap());
    let s = ops::backoff_state(&link, key).await.unwrap();
    assert_eq!((s.sends, s.last_sent, s.last_attempt), (1, T0, T0 + 40_000));
    // Twice: nothing more.
    assert!(!ops::backoff_undo(&link, key, &r2).await.unwrap());
    // An absent key is not created.
    assert!(!ops::backoff_undo(&link, "+19999999999", &r2).await.unwrap());
    assert_eq!(server.cli(&["EXISTS", "smsguard:k:{+19999999999}"]), "0");
    // A blocked wait reserves nothing but records the attempt.
    let third = ops::backoff_judge(&link, key, T0 + 41_000, &params)
        .await
        .unwrap();
    assert_eq!(third.decision, BackoffDecision::Ready);
    let fourth = ops::backoff_judge(&link, key, T0 + 42_000, &params)
        .await
        .unwrap();
    assert_eq!(fourth.decision, BackoffDecision::Wait(60_000 - 1_000));
    assert_eq!(fourth.reservation, None);
    let s = ops::backoff_state(&link, key).await.unwrap();
    assert_eq!(
        (s.sends, s.last_sent, s.last_attempt),
        (2, T0 + 41_000, T0 + 42_000)
    );
}

// ====================================================================
// Concurrency.
// ====================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_spends_never_overshoot_the_cap() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Three replicas, each with its own link.
    let links = [
        link(Target::Server(&server), "2s").await,
        link(Target::Server(&server), "2s").await,
        link(Target::Server(&server), "2s").await,
    ];
    let (amount, cap) = (7u64, 7 * 20 + 3);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let l = links[i % 3].clone();
        tasks.push(tokio::spawn(async move {
            ops::spend(&l, "day:*@0", amount, cap, T0, T0 + 60_000)
                .await
                .unwrap()
        }));
    }
    let mut ok = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(total) => ok.push(total),
            Err(total) => assert!(total + amount > cap, "refused at {total}"),
        }
    }
    ok.sort();
    assert_eq!(ok, (1..=20).map(|n| n * amount).collect::<Vec<_>>());
    assert_eq!(ops::spent(&links[0], "day:*@0").await.unwrap(), 20 * amount);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_hitting_one_key_see_each_count_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let links = [
        link(Target::Server(&server), "2s").await,
        link(Target::Server(&server), "2s").await,
        link(Target::Server(&server), "2s").await,
    ];
    let now = real_now();
    let per = 20;
    let mut tasks = Vec::new();
    for l in &links {
        for _ in 0..per {
            let l = l.clone();
            tasks.push(tokio::spawn(async move {
                ops::hit(&l, "prefix=+99899394", &[600_000, 60_000], now)
                    .await
                    .unwrap()
            }));
        }
    }
    let mut counts = Vec::new();
    for t in tasks {
        let c = t.await.unwrap();
        assert_eq!(c[0], c[1]);
        counts.push(c[0]);
    }
    counts.sort();
    assert_eq!(counts, (1..=3 * per as u64).collect::<Vec<_>>());
}

// ====================================================================
// Expiry: nothing stays in Redis once it stops mattering.
// ====================================================================

fn pttl(server: &RedisServer, key: &str) -> i64 {
    server.cli(&["PTTL", key]).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_when_they_stop_mattering() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let link = link(Target::Server(&server), "2s").await;
    let start = Instant::now();
    let now = real_now();
    // A 600 ms rate: slots of 100 ms, live until 7 slots after the newest.
    ops::hit(&link, "k", &[600], now).await.unwrap();
    let live_until = (now / 100 + 7) * 100;
    let t = pttl(&server, "smsguard:c:{k}");
    assert!(t > 0 && t <= (live_until - now) as i64, "{t}");
    ops::spend(&link, "hour:*@0", 5, 100, now, now + 300)
        .await
        .unwrap()
        .unwrap();
    let t = pttl(&server, "smsguard:s:{hour:*@0}");
    assert!(t > 0 && t <= 300, "{t}");
    let e = BlockEntry {
        since: now,
        until: now + 300,
        rule: Arc::from("manual"),
        action: Action::Shadow,
        offence: 1,
    };
    ops::set_block(&link, "to=+1", &e, now).await.unwrap();
    let t = pttl(&server, "smsguard:b:{to=+1}");
    assert!(t > 0 && t <= 300, "{t}");
    assert_eq!(ops::offend(&link, "to=+1", now, 300).await.unwrap(), 1);
    let t = pttl(&server, "smsguard:o:{to=+1}");
    assert!(t > 0 && t <= 301, "{t}");
    let b = smsguard::config::Backoff {
        free: 1,
        base: Duration::from_secs(1),
        factor: 2.0,
        max: Duration::from_secs(10),
        reset_after: Duration::from_millis(300),
        hold_up_to: None,
    };
    ops::backoff_judge(&link, "+1", now, &BackoffParams::new(&b, Action::Shadow))
        .await
        .unwrap();
    let t = pttl(&server, "smsguard:k:{+1}");
    assert!(t > 0 && t <= 300, "{t}");
    assert_eq!(ops::blocks(&link, now).await.unwrap().len(), 1);

    // Past every bound (Redis expires keys within ms of their time).
    let wait = Duration::from_millis((live_until - now).max(301) + 100);
    tokio::time::sleep(wait.saturating_sub(start.elapsed())).await;
    for k in [
        "smsguard:c:{k}",
        "smsguard:s:{hour:*@0}",
        "smsguard:b:{to=+1}",
        "smsguard:o:{to=+1}",
        "smsguard:k:{+1}",
    ] {
        assert_eq!(server.cli(&["EXISTS", k]), "0", "{k} outlived its time");
    }
    // The index is trimmed on read.
    assert!(ops::blocks(&link, real_now()).await.unwrap().is_empty());
    assert_eq!(server.cli(&["EXISTS", "smsguard:{blocks}:until"]), "0");
    assert_eq!(server.cli(&["EXISTS", "smsguard:{blocks}:entries"]), "0");
    assert_eq!(server.cli(&["EXISTS", "smsguard:{blocks}:kinds"]), "0");
    assert!(!ops::may_block(&link, "to").await.unwrap());
    assert_eq!(server.cli(&["DBSIZE"]), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_prefix_starts_every_key() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let link = RedisLink::connect(
        &store_config(Target::Server(&server), "2s", "prefix = \"fleet-a/\"\n"),
        |_| {},
    )
    .await
    .unwrap();
    ops::hit(&link, "n=1", &[60_000], T0).await.unwrap();
    ops::spend(&link, "s", 1, 10, T0, T0 + 60_000)
        .await
        .unwrap()
        .unwrap();
    let mut keys: Vec<String> = server
        .cli(&["KEYS", "*"])
        .lines()
        .map(str::to_string)
        .collect();
    keys.sort();
    assert_eq!(keys, ["fleet-a/c:{n=1}", "fleet-a/s:{s}"]);
}

// ====================================================================
// Cluster.
// ====================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_op_works_on_a_three_master_cluster() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let link = link(Target::Cluster(&cluster), "2s").await;
    let mem = MemoryStore::new(10_000, 1_000);
    let now = real_now();
    let mut c = [0u64; 2];
    for i in 0..60u64 {
        let key = format!("prefix:8=+998{i:08}");
        for n in 1..=3 {
            mem.hit(&key, &[600_000, 60_000], now, &mut c);
            let got = ops::hit(&link, &key, &[600_000, 60_000], now)
                .await
                .unwrap();
            assert_eq!(got, c, "{key}");
            assert_eq!(got[0], n);
        }
        let spend_key = format!("day:{i}@0");
        assert_eq!(
            ops::spend(&link, &spend_key, 5, 12, now, now + 60_000)
                .await
                .unwrap(),
            Ok(5)
        );
        assert_eq!(
            ops::spend(&link, &spend_key, 5, 12, now, now + 60_000)
                .await
                .unwrap(),
            Ok(10)
        );
        assert_eq!(
            ops::spend(&link, &spend_key, 5, 12, now, now + 60_000)
                .await
                .unwrap(),
            Err(10)
        );
        ops::refund(&link, &spend_key, 3).await.unwrap();
        assert_eq!(ops::spent(&link, &spend_key).await.unwrap(), 7);
        assert_eq!(ops::offend(&link, &key, now, 60_000).await.unwrap(), 1);
        assert_eq!(ops::offend(&link, &key, now + 1, 60_000).await.unwrap(), 2);
        let e = BlockEntry {
            since: now,
            until: now + 60_000 + i,
            rule: Arc::from("limit:prefix"),
            action: Action::Shadow,
            offence: 2,
        };
        ops::set_block(&link, &key, &e, now).await.unwrap();
        assert_eq!(ops::block(&link, &key, now).await.unwrap(), Some(e));
        let b = smsguard::config::Backoff {
            free: 1,
            base: Duration::from_secs(30),
            factor: 2.0,
            max: Duration::from_secs(120),
            reset_after: Duration::from_secs(60),
            hold_up_to: None,
        };
        let p = BackoffParams::new(&b, Action::Shadow);
        let num = format!("+1415555{i:04}");
        let j = ops::backoff_judge(&link, &num, now, &p).await.unwrap();
        assert_eq!(j.decision, BackoffDecision::Ready);
        let j = ops::backoff_judge(&link, &num, now + 1_000, &p)
            .await
            .unwrap();
        assert_eq!(j.decision, BackoffDecision::Wait(29_000));
    }
    let listed = ops::blocks(&link, now).await.unwrap();
    assert_eq!(listed.len(), 60);
    assert!(ops::may_block(&link, "prefix:8").await.unwrap());
    assert!(ops::remove_block(&link, "prefix:8=+99800000007")
        .await
        .unwrap());
    assert_eq!(ops::blocks(&link, now).await.unwrap().len(), 59);
    // The keys are spread over every master.
    for n in &cluster.nodes {
        let size: u64 = n.cli(&["DBSIZE"]).parse().unwrap();
        assert!(size > 20, "node {} holds {size} keys", n.port);
    }
}

// ====================================================================
// Exact boundaries, where random times rarely land.
// ====================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boundaries_match_the_memory_store() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let link = link(Target::Server(&server), "2s").await;
    let mem = MemoryStore::new(10_000, 1_000);

    // Offences: remembered at exactly forgive_after of quiet, forgotten
    // one ms later.
    let f = 60_000;
    for (i, t) in [T0, T0 + f, T0 + 2 * f + 1, T0 + 2 * f + 2]
        .into_iter()
        .enumerate()
    {
        let want = mem.offend("o", t, f);
        assert_eq!(ops::offend(&link, "o", t, f).await.unwrap(), want, "{i}");
    }

    // Blocks: active until `until`, exclusive.
    let e = BlockEntry {
        since: T0,
        until: T0 + 60_000,
        rule: Arc::from("manual"),
        action: Action::Reject,
        offence: 1,
    };
    mem.set_block("to=+1", e.clone());
    ops::set_block(&link, "to=+1", &e, T0).await.unwrap();
    for t in [T0 + 59_999, T0 + 60_000] {
        assert_eq!(
            ops::block(&link, "to=+1", t).await.unwrap(),
            mem.block("to=+1", t)
        );
        assert_eq!(ops::blocks(&link, t).await.unwrap(), mem.blocks(t));
    }

    // Counters: a 6 s period has 1 s slots; the slot of T0 counts until
    // seven slots after its start, exclusive.
    let slot = T0 / 1_000 * 1_000;
    for t in [
        slot,
        slot + 6_999,
        slot + 7_000,
        slot + 13_999,
        slot + 14_000,
    ] {
        let mut want = [0];
        mem.hit("c", &[6_000], t, &mut want);
        assert_eq!(
            ops::hit(&link, "c", &[6_000], t).await.unwrap(),
            want,
            "{t}"
        );
    }

    // Backoff: ready exactly at ready_at, held at exactly hold_up_to,
    // reset at exactly reset_after of quiet.
    let toml = "[backoff]\nfree = 1\nbase = \"10s\"\nfactor = 2\nmax = \"1m\"\nreset_after = \"1h\"\nhold_up_to = \"5s\"\n";
    let config = Config::parse(Path::new("t.toml"), toml).unwrap();
    let params = BackoffParams::new(config.backoff.as_ref().unwrap(), Action::Shadow);
    let mem = Arc::new(MemoryStore::new(10_000, 1_000));
    let policy = Policy::new(Arc::new(config), mem.clone());
    let to = destination("+14155550123");
    let h = 3_600_000;
    // free; 10 s later ready; wait(2) = 20 s: held 5 s at exactly 15 s;
    // blocked at 14.999 s (5.001 s wait); one ms short of an hour of quiet
    // keeps the streak (the next send is ready, the fourth), exactly an
    // hour resets it (free again, then a 10 s wait from there).
    let times = [
        T0,
        T0 + 10_000,
        T0 + 24_999,
        T0 + 25_000,
        T0 + 25_000 + h - 1,
        T0 + 25_000 + 2 * h - 1,
        T0 + 25_000 + 2 * h,
    ];
    for (i, t) in times.into_iter().enumerate() {
        let d = policy.decide(&attempt(&to), t);
        let j = ops::backoff_judge(&link, &to.e164, t, &params)
            .await
            .unwrap();
        let mut m = BackoffState::default();
        mem.backoff(&to.e164, t, &mut |s| m = *s);
        assert_eq!(
            ops::backoff_state(&link, &to.e164).await.unwrap(),
            m,
            "{i}: {d:?} {j:?}"
        );
        let hold = match j.decision {
            BackoffDecision::Hold(h) => Some(Duration::from_millis(h)),
            _ => None,
        };
        assert_eq!(
            (d.forwarded(), d.hold),
            (j.reservation.is_some(), hold),
            "{i}: {d:?} {j:?}"
        );
    }
}

// ====================================================================
// One script per send on a single Redis (src/store/redis_batch.rs).
// ====================================================================

fn evalsha_calls(server: &RedisServer) -> u64 {
    let stats = server.cli(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// What a call answered, comparable across two runs.
fn answers(a: Vec<Result<redis::Value, smsguard::store::redis::LinkError>>) -> Vec<String> {
    a.into_iter().map(|r| format!("{r:?}")).collect()
}

/// A send's calls (backoff, limit counters, a budget window) run as one
/// EVALSHA on a single Redis and answer exactly what the same calls
/// pipelined one script each answer, step after step on the same keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sends_calls_run_as_one_script_and_answer_as_pipelined() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let link = link(Target::Server(&server), "2s").await;
    let b = backoff_after_one(3_600, 86_400);
    let params = BackoffParams::new(&b, Action::Shadow);
    let mut rng = Rng(23);
    let mut now = T0;
    for step in 0..300 {
        now += rng.below(20_000);
        let n = format!("+1415555{:04}", rng.below(12));
        let calls = |p: &str| {
            let mut c = vec![
                ops::backoff_judge_call(&link, &format!("{p}{n}"), now, &params),
                ops::hit_call(&link, &format!("{p}to={n}"), &[60_000, 3_600_000], now),
                ops::hit_call(&link, &format!("{p}ip=203.0.113.7"), &[600_000], now),
            ];
            c.extend(ops::spend_call(
                &link,
                &format!("{p}hour"),
                7_900,
                1_000_000,
                now,
                now + 3_600_000,
            ));
            c
        };
        let piped = link.eval_many(&calls("piped:")).await.unwrap();
        let before = evalsha_calls(&server);
        let batched = redis_batch::eval_many(&link, calls("batched:"))
            .await
            .unwrap();
        // The first time, Redis answers NOSCRIPT and the link loads the
        // batch script and sends it again.
        let scripts = evalsha_calls(&server) - before;
        assert!(
            scripts == 1 || (step == 0 && scripts == 2),
            "step {step}: {scripts} scripts"
        );
        assert_eq!(answers(piped), answers(batched), "step {step}");
    }
    // The budget filled up on the way: refusals were compared too.
    assert!(ops::spent(&link, "batched:hour").await.unwrap() > 1_000_000 - 7_900);
}

/// A number's backoff step and its own limit counter kept in one hash
/// (`backoff_hit`, `hash_unhit`) answer exactly what the backoff hash and a
/// counter key of its own answer, step after step: judged, counted, some
/// attempts taken back and some reservations given back; the hash lives
/// as long as the longer of the two would, and no counter key is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_numbers_backoff_and_own_counter_in_one_hash_answer_as_in_two_keys() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let link = link(Target::Server(&server), "2s").await;
    // Backoff forgets a number after two minutes; its counter keeps an
    // hour: the hash must live as long as the counter.
    let b = backoff_after_one(3_600, 120);
    let params = BackoffParams::new(&b, Action::Shadow);
    let periods = [60_000, 3_600_000];
    let mut rng = Rng(29);
    let mut last = String::new();
    let mut now = T0;
    let mut given_back = 0;
    for step in 0..400 {
        now += rng.below(30_000);
        let n = format!("+1415555{:04}", rng.below(10));
        last.clone_from(&n);
        let two = link
            .eval_many(&[
                ops::backoff_judge_call(&link, &format!("two:{n}"), now, &params),
                ops::hit_call(&link, &format!("two:number={n}"), &periods, now),
            ])
            .await
            .unwrap();
        let one = link
            .eval_many(&[ops::backoff_hit_call(
                &link,
                &format!("one:{n}"),
                now,
                &params,
                "number=",
                &periods,
            )])
            .await
            .unwrap();
        let mut two = two.into_iter();
        let judged = ops::read_backoff_judge(two.next().unwrap().unwrap()).unwrap();
        let counts = ops::read_hit(two.next().unwrap().unwrap(), 2).unwrap();
        let (judged1, counts1) =
            ops::read_backoff_hit(one.into_iter().next().unwrap().unwrap(), 2).unwrap();
        assert_eq!(format!("{judged:?}"), format!("{judged1:?}"), "step {step}");
        assert_eq!(counts, counts1, "step {step}");
        // Now and then the attempt is taken back, or its reservation given
        // back, on both sides.
        if rng.below(3) == 0 {
            let back = link
                .eval_many(&[
                    ops::unhit_call(&link, &format!("two:number={n}"), &periods, now),
                    ops::hash_unhit_call(&link, &format!("one:{n}"), "number=", &periods, now),
                ])
                .await
                .unwrap();
            let back: Vec<String> = back.into_iter().map(|r| format!("{r:?}")).collect();
            assert_eq!(back[0], back[1], "step {step}");
            given_back += 1;
        }
        if let (Some(r), 0) = (judged.reservation, rng.below(4)) {
            let undo = link
                .eval_many(&[
                    ops::backoff_undo_call(&link, &format!("two:{n}"), &r),
                    ops::backoff_undo_call(&link, &format!("one:{n}"), &r),
                ])
                .await
                .unwrap();
            let undo: Vec<String> = undo.into_iter().map(|r| format!("{r:?}")).collect();
            assert_eq!(undo[0], undo[1], "step {step}");
        }
    }
    assert!(given_back > 50);
    // One key per number: no counter key of its own.
    assert_eq!(server.cli(&["KEYS", "smsguard:c:{one:*"]).trim(), "");
    // The hash expires with the longer need, here its counter's.
    let one = pttl(&server, &format!("smsguard:k:{{one:{last}}}"));
    let counter = pttl(&server, &format!("smsguard:c:{{two:number={last}}}"));
    let backoff = pttl(&server, &format!("smsguard:k:{{two:{last}}}"));
    assert!(backoff > 0 && backoff <= 120_000, "{backoff}");
    assert!((one - counter).abs() < 5_000, "{one} vs {counter}");
    assert!(one > backoff, "{one} vs {backoff}");
}

/// A call whose key holds the wrong type fails alone: the batch answers
/// an error for it and the other calls' answers as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_call_in_a_batch_fails_alone() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let link = link(Target::Server(&server), "2s").await;
    server.cli(&["HSET", "smsguard:c:{bad}", "x", "1"]);
    let calls = vec![
        ops::hit_call(&link, "good", &[60_000], T0),
        ops::hit_call(&link, "bad", &[60_000], T0),
        ops::hit_call(&link, "good", &[60_000], T0),
    ];
    let got = redis_batch::eval_many(&link, calls).await.unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(ops::read_hit(got[0].clone().unwrap(), 1).unwrap(), [1]);
    assert!(
        matches!(&got[1], Err(smsguard::store::redis::LinkError::Server(e)) if e.contains("WRONGTYPE")),
        "{:?}",
        got[1]
    );
    assert_eq!(ops::read_hit(got[2].clone().unwrap(), 1).unwrap(), [2]);
}
