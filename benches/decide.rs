//! Micro-benchmarks of the per-send work (issue 6): the policy decision for
//! a number already seen and for a number never seen, classification, form
//! parsing plus normalization, and the fake answer of a shadowed send.
//!
//!     cargo bench --bench decide
//!
//! The policy is `bench/smsguard.toml`: config.example.toml with the global
//! limit and the budget caps raised so that every stage runs and none trips.
//! Time is simulated (a `Millis` passed to `decide`), so the sliding windows
//! and backoff see a realistic spread, not a million sends in one instant.

mod common;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use smsguard::config::{Action, Config};
use smsguard::phone::{normalize, Classifier, Destination};
use smsguard::policy::{Attempt, Policy};
use smsguard::store::MemoryStore;
use smsguard::twilio::form::parse_send;

/// 2026-11-22T00:00:00Z: any fixed wall-clock start will do.
const T0: u64 = 1_795_305_600_000;
const DAY: u64 = 86_400_000;

fn config() -> Arc<Config> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/smsguard.toml");
    let text = std::fs::read_to_string(&path).expect("bench/smsguard.toml");
    Arc::new(Config::parse(&path, &text).expect("bench/smsguard.toml parses"))
}

/// A policy over a fresh memory store, built the way `Guard::start` does.
fn policy(config: &Arc<Config>) -> Policy {
    let store = MemoryStore::new(config.store.capacity, config.store.block_capacity);
    if let Some(b) = &config.backoff {
        store.set_backoff_lifetime(b.reset_after.as_millis() as u64);
    }
    Policy::new(config.clone(), Arc::new(store))
}

fn destination(n: u64) -> Destination {
    let mut s = String::with_capacity(16);
    common::us_number(n, &mut s);
    normalize(&s, None).expect("valid number")
}

fn attempt<'a>(dest: &'a Destination, classifier: &Classifier, n: u64) -> Attempt<'a> {
    common::attempt(dest, classifier.classify(&dest.e164), n)
}

fn decide(c: &mut Criterion) {
    let config = config();
    let classifier = Classifier::new(config.numbers.cache);
    let mut g = c.benchmark_group("decide");

    // A number already seen: a pool of 1,000 numbers, each sent to once
    // before measuring, then judged again round-robin while the simulated
    // clock moves one day per pass over the pool. Every stage runs on state
    // that already exists (counters, backoff, spend): no insertions, and the
    // send is allowed (asserted), so nothing stops early.
    {
        const POOL: u64 = 1_000;
        let p = policy(&config);
        let dests: Vec<Destination> = (0..POOL).map(destination).collect();
        let attempts: Vec<Attempt> = dests
            .iter()
            .enumerate()
            .map(|(i, d)| attempt(d, &classifier, i as u64))
            .collect();
        let step = DAY / POOL;
        let mut i = 0u64;
        for a in &attempts {
            assert_eq!(p.decide(a, T0 + i * step).action, Action::Allow);
            i += 1;
        }
        g.bench_function("seen_number_allowed", |b| {
            b.iter(|| {
                let a = &attempts[(i % POOL) as usize];
                let d = p.decide(black_box(a), T0 + i * step);
                i += 1;
                black_box(d)
            })
        });
        let d = p.decide(&attempts[(i % POOL) as usize], T0 + i * step);
        assert_eq!(d.action, Action::Allow, "{d:?}");
    }

    // A number already seen, sent to again within its backoff wait: the
    // common repeat (and attack) case, stopped at the backoff stage.
    {
        let p = policy(&config);
        let dest = destination(7);
        let a = attempt(&dest, &classifier, 7);
        assert_eq!(p.decide(&a, T0).action, Action::Allow);
        let mut now = T0 + 1;
        g.bench_function("seen_number_backoff_shadow", |b| {
            b.iter(|| {
                now += 1;
                black_box(p.decide(black_box(&a), now))
            })
        });
        assert_eq!(p.decide(&a, now + 1).action, Action::Shadow);
    }

    // A number never seen: a different number each iteration (and a new
    // client IP every 8), one simulated millisecond apart. Classification is
    // done outside the timed part here; see "new_number_classify_decide".
    // Each iteration inserts into the store, which fills to store.capacity
    // and then evicts, as under a flood.
    {
        let p = policy(&config);
        let mut n = 0u64;
        g.bench_function("new_number", |b| {
            b.iter_batched(
                || {
                    n += 1;
                    let d = destination(n);
                    let class = classifier.classify(&d.e164);
                    (n, d, class)
                },
                |(n, d, class)| {
                    let a = common::attempt(&d, class, n);
                    black_box(p.decide(&a, T0 + n))
                },
                BatchSize::SmallInput,
            )
        });
    }

    // The whole judgement of a never-seen number as the guard does it per
    // send: normalize, classify (a classification cache miss), decide.
    {
        let p = policy(&config);
        // A classifier of its own, and numbers no earlier benchmark used.
        let classifier = Classifier::new(config.numbers.cache);
        let mut n = 100_000_000u64;
        let mut raw = String::with_capacity(16);
        g.bench_function("new_number_classify_decide", |b| {
            b.iter(|| {
                n += 1;
                raw.clear();
                common::us_number(n, &mut raw);
                let d = normalize(black_box(&raw), None).expect("valid");
                let a = attempt(&d, &classifier, n);
                black_box(p.decide(&a, T0 + n).action)
            })
        });
    }
    g.finish();
}

fn classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    let classifier = Classifier::new(100_000);
    let seen = "+12125550123";
    classifier.classify(seen);
    g.bench_function("cached", |b| {
        b.iter(|| classifier.classify(black_box(seen)))
    });
    let mut n = 0u64;
    let mut raw = String::with_capacity(16);
    g.bench_function("uncached", |b| {
        b.iter(|| {
            n += 1;
            raw.clear();
            common::us_number(n, &mut raw);
            classifier.classify(black_box(&raw))
        })
    });
    g.finish();
}

fn form(c: &mut Criterion) {
    let mut g = c.benchmark_group("form");
    let mut body = String::new();
    common::send_body("+12125550123", &mut body);
    let body = body.into_bytes();
    g.bench_function("parse_send_and_normalize", |b| {
        b.iter(|| {
            let (form, to) = parse_send(None, black_box(&body)).expect("parses");
            let d = normalize(&to, None).expect("valid");
            black_box((form, d))
        })
    });
    g.finish();
}

fn fake(c: &mut Criterion) {
    use smsguard::twilio::responses::{fake_message, twilio_headers, MessageRequest};
    let mut g = c.benchmark_group("fake");
    let req = MessageRequest {
        account_sid: "AC00000000000000000000000000000000",
        to: "+998993941234",
        from: Some("+15017122661"),
        messaging_service_sid: None,
        body: Some("Your verification code is 123456"),
        num_media: 0,
    };
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_millis(T0);
    // What a shadowed send's answer costs to write: the Message and
    // Twilio's headers.
    g.bench_function("message_and_headers", |b| {
        b.iter(|| {
            let (sid, body) = fake_message(black_box(&req), now);
            let headers = twilio_headers("api.twilio.com", std::time::Duration::from_millis(93));
            black_box((sid, body, headers))
        })
    });
    g.finish();
}

criterion_group!(benches, decide, classify, form, fake);
criterion_main!(benches);
