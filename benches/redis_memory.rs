//! Redis memory and work per tracked number with the shared store
//! (`[store] redis`): judges distinct numbers the way the guard does with
//! a shared store (plan, one pipeline, judge, write-backs), against its
//! own `redis-server`, then reports Redis's memory and keys per number,
//! the commands and round trips per judged send, and Redis's CPU per
//! judged send: the server process's (from /proc, with its network work)
//! and its scripts' own (`INFO commandstats`; per command on stderr). The
//! load runs in this process beside Redis, so on a machine with few cores
//! the figures include some contention: compare runs, not machines.
//!
//!     cargo bench --bench redis_memory                 # 100k numbers
//!     cargo bench --bench redis_memory -- 300000       # another count
//!
//! Policy: `bench/smsguard.toml` (as `bench/memory`). Send `n` goes to the
//! n-th number of benches/common at simulated time T0 + n ms, 64 sends in
//! flight. Under `cargo test` (no `--bench` argument) a smoke run of 2,000
//! numbers. Needs `redis-server` on the PATH (started on 127.0.0.1 on a
//! free port, never persisting, stopped by PID at the end). Prints one JSON
//! object; exits 1 when a send fell back to local state.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smsguard::config::Config;
use smsguard::phone::{normalize, Classifier};
use smsguard::policy::{BalanceView, Policy};
use smsguard::store::fleet::{Event, Fleet};
use smsguard::store::redis::RedisLink;
use smsguard::store::shared::SharedStore;
use smsguard::store::MemoryStore;
use smsguard::twilio::routes::Product;

const T0: u64 = 1_795_305_600_000;
const IN_FLIGHT: u64 = 64;

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn info_field(port: u16, section: &str, field: &str) -> u64 {
    redis_cli(port, &["INFO", section])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
}

/// The Redis server, stopped by PID however the bench ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Redis's CPU so far (user + system, from /proc), in microseconds; 0
/// where /proc is not there.
fn redis_cpu_us(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command's closing parenthesis: utime and stime are
    // the 12th and 13th, in clock ticks (100 per second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (tick(11) + tick(12)) * 10_000
}

/// Per command name (`INFO commandstats`): calls and microseconds so far.
/// A script's time includes the commands it calls, which are listed too.
fn command_usec(port: u16) -> Vec<(String, u64, u64)> {
    let mut per = Vec::new();
    for line in redis_cli(port, &["INFO", "commandstats"]).lines() {
        let Some((name, rest)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let field = |f: &str| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(f))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        per.push((name.to_string(), field("calls="), field("usec=")));
    }
    per
}

/// Calls of one command so far (`INFO commandstats`).
fn command_calls(port: u16, name: &str) -> u64 {
    redis_cli(port, &["INFO", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let numbers: u64 = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(if bench { 100_000 } else { 2_000 });
    if Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("redis-server is not installed but CI=true");
        }
        eprintln!("skipped: redis-server is not installed");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = std::env::temp_dir().join(format!("smsguard-redis-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let server = Server(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis_cli(port, &["PING"]).contains("PONG") {
        assert!(Instant::now() < deadline, "redis-server did not answer");
        std::thread::sleep(Duration::from_millis(20));
    }

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/smsguard.toml");
    let text = std::fs::read_to_string(&path).expect("bench/smsguard.toml");
    // Its [store] section, sharing through this Redis.
    let text = text.replacen(
        "[store]\n",
        &format!("[store]\nredis = \"redis://127.0.0.1:{port}/0\"\ntimeout = \"2s\"\n"),
        1,
    );
    assert!(
        text.contains("redis://"),
        "bench/smsguard.toml has a [store] section"
    );
    let config = Arc::new(Config::parse(&path, &text).expect("the policy parses"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let report = runtime.block_on(async {
        let link = RedisLink::connect(&config.store, |_| {})
            .await
            .expect("redis link");
        let local = Arc::new(MemoryStore::new(
            config.store.capacity,
            config.store.block_capacity,
        ));
        let shared = SharedStore::new(local, link.clone(), &config.store);
        let policy = Arc::new(Policy::new(config.clone(), shared.clone()));
        // The adaptive stage's log, as the guard writes it.
        let fleet = Fleet::start(link.clone(), Arc::new(smsguard::base::clock::SystemClock));
        let classifier = Arc::new(Classifier::new(config.numbers.cache));
        let base_memory = info_field(port, "memory", "used_memory");
        let base_commands = info_field(port, "stats", "total_commands_processed");
        let base_scripts = command_calls(port, "evalsha");
        let base_rt = link.stats().round_trips.load(Ordering::Relaxed);
        let base_cpu = redis_cpu_us(server.0.id());
        let base_usec = command_usec(port);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..IN_FLIGHT {
            let (policy, shared, classifier, config, fleet) = (
                policy.clone(),
                shared.clone(),
                classifier.clone(),
                config.clone(),
                fleet.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut raw = String::new();
                let mut forwarded = 0u64;
                let mut n = t;
                while n < numbers {
                    raw.clear();
                    common::us_number(n, &mut raw);
                    let dest = normalize(&raw, config.numbers.default_region).expect("valid");
                    let a = common::attempt(&dest, classifier.classify(&dest.e164), n);
                    let now = T0 + n;
                    // As the guard: the fleet's log is read (one read
                    // shared by the sends in flight) while the plan runs,
                    // and learned first (one replica here: its own sends
                    // are left out).
                    let plan = policy.plan(&a, now, &**shared.local());
                    let (view, read) =
                        tokio::join!(shared.prepare(plan, now), fleet.fresh(|_, _| {}));
                    read.expect("the log's tail");
                    let j = policy.judge_with(&a, now, &view);
                    let learns = j.learns();
                    let d = j.finish(BalanceView::NotAsked);
                    view.settle().await;
                    if learns && d.forwarded() {
                        fleet.publish(Event::Forwarded {
                            at: now,
                            product: Product::Messaging,
                            account: common::ACCOUNT.to_string(),
                            to: dest.e164.clone(),
                            client_ip: Some(common::client_ip(n)),
                            user: None,
                        });
                    }
                    forwarded += u64::from(d.forwarded());
                    n += IN_FLIGHT;
                }
                forwarded
            }));
        }
        let mut forwarded = 0;
        for t in tasks {
            forwarded += t.await.expect("task");
        }
        let seconds = started.elapsed().as_secs_f64();
        // The log is written in batches: wait for the last one.
        let deadline = Instant::now() + Duration::from_secs(30);
        while fleet.stats.published.load(Ordering::Relaxed) + fleet.stats.dropped.load(Ordering::Relaxed) < forwarded
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log_key = format!("{}{{fleet}}:log", config.store.prefix);
        let log_bytes: u64 = redis_cli(port, &["MEMORY", "USAGE", &log_key, "SAMPLES", "0"])
            .trim()
            .parse()
            .unwrap_or(0);
        let logged = fleet.stats.published.load(Ordering::Relaxed);
        let memory = info_field(port, "memory", "used_memory").saturating_sub(base_memory);
        // Redis counts the commands scripts run too.
        let commands =
            info_field(port, "stats", "total_commands_processed").saturating_sub(base_commands);
        let scripts = command_calls(port, "evalsha").saturating_sub(base_scripts);
        let rt = link.stats().round_trips.load(Ordering::Relaxed) - base_rt;
        let cpu = redis_cpu_us(server.0.id()).saturating_sub(base_cpu);
        // Where Redis's time went, per command (scripts include the
        // commands they call), to stderr: calls and microseconds per send.
        let mut script_usec = 0;
        for (name, calls, usec) in command_usec(port) {
            let (c0, u0) = base_usec
                .iter()
                .find(|(b, _, _)| *b == name)
                .map_or((0, 0), |(_, c, u)| (*c, *u));
            let (calls, usec) = (calls.saturating_sub(c0), usec.saturating_sub(u0));
            if calls == 0 {
                continue;
            }
            if name == "evalsha" {
                script_usec = usec;
            }
            eprintln!(
                "{name:>16}: {:>6.2} calls, {:>6.2} us per send",
                calls as f64 / numbers as f64,
                usec as f64 / numbers as f64
            );
        }
        let keys: u64 = redis_cli(port, &["DBSIZE"]).trim().parse().unwrap_or(0);
        let fallback = shared.stats.fallback.load(Ordering::Relaxed);
        let n = numbers as f64;
        (
            format!(
                "{{\"numbers\":{numbers},\"forwarded\":{forwarded},\"redis_used_memory_bytes\":{memory},\"bytes_per_number\":{:.0},\"keys\":{keys},\"keys_per_number\":{:.2},\"scripts_per_send\":{:.2},\"redis_commands_per_send\":{:.2},\"round_trips_per_send\":{:.2},\"redis_cpu_us_per_send\":{:.1},\"script_us_per_send\":{:.1},\"fallback\":{fallback},\"log_events\":{logged},\"log_bytes_per_event\":{:.0},\"sends_per_second\":{:.0}}}",
                memory as f64 / n,
                keys as f64 / n,
                scripts as f64 / n,
                commands as f64 / n,
                rt as f64 / n,
                cpu as f64 / n,
                script_usec as f64 / n,
                log_bytes as f64 / logged.max(1) as f64,
                n / seconds
            ),
            fallback,
        )
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", report.0);
    if report.1 > 0 {
        eprintln!("sends were judged locally: redis did not answer in time");
        std::process::exit(1);
    }
}
