//! Memory with many numbers tracked (issue 6): drives `Policy::decide` the
//! way the guard does per send (normalize, classify, decide) over distinct
//! numbers, then reports the process RSS and the store's entry counts after
//! one million and after ten million distinct numbers, and checks that every
//! table stayed within its configured bound (`store.capacity`,
//! `store.block_capacity`, `numbers.cache`).
//!
//!     cargo bench --bench memory                       # 1M, then 10M numbers
//!     cargo bench --bench memory -- 200000 2000000     # other checkpoints
//!
//! Policy: `bench/smsguard.toml` (the example's limits and backoff; global
//! limit and budget caps raised so that the sends are allowed and every
//! stage runs). Send `n` goes to the n-th number of benches/common at
//! simulated time T0 + n ms (a flood of 1,000 new numbers a second), so limit
//! windows and backoff states are still live when the tables evict them:
//! `evicted_live` counts that. Two threads share the work (this is a 2-core
//! machine). Under `cargo test` (no `--bench` argument) it runs a small
//! smoke version with small tables. Prints one JSON object per checkpoint;
//! exits 1 if a table grew past its bound.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use smsguard::config::{Action, Config};
use smsguard::phone::{normalize, Classifier};
use smsguard::policy::Policy;
use smsguard::store::{MemoryStore, Store};

const T0: u64 = 1_795_305_600_000;
const THREADS: u64 = 2;

/// Sends judged so far by outcome: allowed, shadowed, rejected.
type Tally = [AtomicU64; 3];

/// Judges send `n` as the guard's pipeline does.
fn judge(
    policy: &Policy,
    classifier: &Classifier,
    config: &Config,
    n: u64,
    raw: &mut String,
) -> usize {
    raw.clear();
    common::us_number(n, raw);
    let dest = normalize(raw, config.numbers.default_region).expect("valid number");
    let a = common::attempt(&dest, classifier.classify(&dest.e164), n);
    match policy.decide(&a, T0 + n).action {
        Action::Allow | Action::Monitor => 0,
        Action::Shadow => 1,
        Action::Reject => 2,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let counts: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let checkpoints = match (bench, counts.is_empty()) {
        (_, false) => counts,
        (true, true) => vec![1_000_000, 10_000_000],
        (false, true) => vec![1_000, 10_000],
    };

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/smsguard.toml");
    let text = std::fs::read_to_string(&path).expect("bench/smsguard.toml");
    let mut config = Config::parse(&path, &text).expect("bench/smsguard.toml parses");
    if !bench {
        // Small tables, so that the smoke run under `cargo test` evicts too.
        config.store.capacity = 2_000;
        config.numbers.cache = 500;
    }
    let config = Arc::new(config);
    let store = Arc::new(MemoryStore::new(
        config.store.capacity,
        config.store.block_capacity,
    ));
    if let Some(b) = &config.backoff {
        store.set_backoff_lifetime(b.reset_after.as_millis() as u64);
    }
    let policy = Policy::new(config.clone(), store.clone());
    let classifier = Classifier::new(config.numbers.cache);
    // libphonenumber loads its metadata on first use: count it in the baseline.
    classifier.classify("+12125550123");
    let baseline = common::rss_bytes("VmRSS:");
    println!(
        "{{\"checkpoint\":\"baseline\",\"rss_bytes\":{baseline},\"store_capacity\":{},\"block_capacity\":{},\"numbers_cache\":{},\"threads\":{THREADS}}}",
        config.store.capacity, config.store.block_capacity, config.numbers.cache
    );

    let tally: Tally = Default::default();
    let mut ok = true;
    let started = Instant::now();
    let mut from = 0u64;
    for &to in &checkpoints {
        // Thread t judges the numbers n in from..to with n % THREADS == t.
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (policy, classifier, config, tally) = (&policy, &classifier, &config, &tally);
                s.spawn(move || {
                    let mut raw = String::with_capacity(16);
                    let mut n = from + (t + THREADS - from % THREADS) % THREADS;
                    while n < to {
                        let k = judge(policy, classifier, config, n, &mut raw);
                        tally[k].fetch_add(1, Ordering::Relaxed);
                        n += THREADS;
                    }
                });
            }
        });
        from = to;
        store.sync();
        let s = store.stats();
        let cached = classifier.cached();
        let rss = common::rss_bytes("VmRSS:");
        let hwm = common::rss_bytes("VmHWM:");
        let within = s.counters <= config.store.capacity
            && s.backoffs <= config.store.capacity
            && s.blocks <= config.store.block_capacity
            && s.offences <= config.store.block_capacity
            && s.conversions <= config.store.capacity
            && s.pending <= config.store.capacity
            && s.pairs <= config.store.capacity
            && cached <= config.numbers.cache;
        ok &= within;
        let count = |k: usize| tally[k].load(Ordering::Relaxed);
        println!(
            "{{\"checkpoint\":{to},\"rss_bytes\":{rss},\"peak_rss_bytes\":{hwm},\"rss_over_baseline\":{},\"counters\":{},\"backoffs\":{},\"blocks\":{},\"offences\":{},\"conversions\":{},\"pending\":{},\"pairs\":{},\"evicted_live\":{},\"classifier_cached\":{cached},\"allowed\":{},\"shadowed\":{},\"rejected\":{},\"seconds\":{:.1},\"within_bounds\":{within}}}",
            rss.saturating_sub(baseline),
            s.counters,
            s.backoffs,
            s.blocks,
            s.offences,
            s.conversions,
            s.pending,
            s.pairs,
            s.evicted_live,
            count(0),
            count(1),
            count(2),
            started.elapsed().as_secs_f64(),
        );
    }
    if !ok {
        eprintln!("a table grew past its configured bound");
        std::process::exit(1);
    }
}
