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
//!     cargo bench --bench redis_memory -- --cluster 3  # a 3-master Cluster
//!
//! On a Cluster the figures are summed over the masters, and each
//! master's CPU per send is listed: a fleet is capped by its busiest
//! master, so `sends_per_busiest_core_second` (sends judged per second of
//! the busiest node's CPU) is what one Redis core per node can judge,
//! comparable between a single Redis and a Cluster of any size.
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
use smsguard::store::fleet::{Event, Fleet, Turn};
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

/// A Redis server of the bench, stopped by PID however the bench ends.
struct Server {
    child: std::process::Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a `redis-server` on a free port of 127.0.0.1, in `dir` (its own
/// subdirectory), never persisting, with `extra` arguments; waits for PING.
fn start_server(dir: &Path, extra: &[&str]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = dir.join(port.to_string());
    std::fs::create_dir_all(&dir).expect("temp dir");
    let server = Server {
        child: Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts"),
        port,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis_cli(port, &["PING"]).contains("PONG") {
        assert!(Instant::now() < deadline, "redis-server did not answer");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// `masters` masters of a Redis Cluster covering every slot, ready.
fn start_cluster(dir: &Path, masters: usize) -> Vec<Server> {
    let nodes: Vec<Server> = (0..masters)
        .map(|_| {
            let bus = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
                .to_string();
            start_server(
                dir,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    &bus,
                ],
            )
        })
        .collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli --cluster create failed");
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in &nodes {
        while !redis_cli(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
            assert!(Instant::now() < deadline, "the cluster is not ok");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    nodes
}

/// What one node did over the measured run.
#[derive(Default, Clone)]
struct Work {
    memory: u64,
    commands: u64,
    scripts: u64,
    cpu_us: u64,
    usec: Vec<(String, u64, u64)>,
}

fn work(n: &Server) -> Work {
    Work {
        memory: info_field(n.port, "memory", "used_memory"),
        commands: info_field(n.port, "stats", "total_commands_processed"),
        scripts: command_calls(n.port, "evalsha"),
        cpu_us: redis_cpu_us(n.child.id()),
        usec: command_usec(n.port),
    }
}

/// `after - before`, per field and per command.
fn since(before: &Work, after: &Work) -> Work {
    Work {
        memory: after.memory.saturating_sub(before.memory),
        commands: after.commands.saturating_sub(before.commands),
        scripts: after.scripts.saturating_sub(before.scripts),
        cpu_us: after.cpu_us.saturating_sub(before.cpu_us),
        usec: after
            .usec
            .iter()
            .map(|(name, calls, usec)| {
                let (c0, u0) = before
                    .usec
                    .iter()
                    .find(|(b, _, _)| b == name)
                    .map_or((0, 0), |(_, c, u)| (*c, *u));
                (
                    name.clone(),
                    calls.saturating_sub(c0),
                    usec.saturating_sub(u0),
                )
            })
            .collect(),
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
    let masters: usize = args
        .iter()
        .position(|a| a == "--cluster")
        .map(|i| {
            args.get(i + 1)
                .and_then(|m| m.parse().ok())
                .filter(|m| *m >= 3)
                .expect("--cluster takes a number of masters, 3 or more")
        })
        .unwrap_or(0);
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
    let dir = std::env::temp_dir().join(format!("smsguard-redis-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let nodes = if masters > 0 {
        start_cluster(&dir, masters)
    } else {
        vec![start_server(&dir, &[])]
    };

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/smsguard.toml");
    let text = std::fs::read_to_string(&path).expect("bench/smsguard.toml");
    // Its [store] section, sharing through this Redis or Cluster.
    let at = if masters > 0 {
        let seeds: Vec<String> = nodes
            .iter()
            .map(|n| format!("\"redis://127.0.0.1:{}\"", n.port))
            .collect();
        format!("redis_cluster = [{}]", seeds.join(", "))
    } else {
        format!("redis = \"redis://127.0.0.1:{}/0\"", nodes[0].port)
    };
    let text = text.replacen(
        "[store]\n",
        &format!("[store]\n{at}\ntimeout = \"2s\"\n"),
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
        let before: Vec<Work> = nodes.iter().map(work).collect();
        let base_rt = link.stats().round_trips.load(Ordering::Relaxed);
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
                    // As the guard: the fleet's log is read (in this
                    // send's script, or one it waits for: one read shared
                    // by the sends in flight) and learned first (one
                    // replica here: its own sends are left out).
                    let plan = policy.plan(&a, now, &**shared.local());
                    let view = match fleet.turn() {
                        Turn::Carry(lead, call) => {
                            let mut view = shared.prepare_with(plan, now, Some(call)).await;
                            lead.finish(view.take_extra(), |_, _| {})
                                .expect("the log's tail");
                            view
                        }
                        Turn::Wait(ticket) => {
                            let (view, read) = tokio::join!(
                                shared.prepare(plan, now),
                                fleet.wait(ticket, |_, _| {})
                            );
                            read.expect("the log's tail");
                            view
                        }
                    };
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
        let log_bytes: u64 = nodes
            .iter()
            .map(|n| {
                redis_cli(n.port, &["MEMORY", "USAGE", &log_key, "SAMPLES", "0"])
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0)
            })
            .sum();
        let logged = fleet.stats.published.load(Ordering::Relaxed);
        let rt = link.stats().round_trips.load(Ordering::Relaxed) - base_rt;
        let done: Vec<Work> = nodes
            .iter()
            .zip(&before)
            .map(|(n, b)| since(b, &work(n)))
            .collect();
        // Redis counts the commands scripts run too.
        let memory: u64 = done.iter().map(|w| w.memory).sum();
        let commands: u64 = done.iter().map(|w| w.commands).sum();
        let scripts: u64 = done.iter().map(|w| w.scripts).sum();
        let cpu: u64 = done.iter().map(|w| w.cpu_us).sum();
        let busiest = done.iter().map(|w| w.cpu_us).max().unwrap_or(0);
        // Where Redis's time went, per command (scripts include the
        // commands they call), to stderr: calls and microseconds per send,
        // over every node.
        let mut script_usec = 0;
        let mut per: Vec<(String, u64, u64)> = Vec::new();
        for (name, calls, usec) in done.iter().flat_map(|w| w.usec.iter().cloned()) {
            match per.iter_mut().find(|(n, _, _)| *n == name) {
                Some(p) => {
                    p.1 += calls;
                    p.2 += usec;
                }
                None => per.push((name, calls, usec)),
            }
        }
        for (name, calls, usec) in per.into_iter().filter(|p| p.1 > 0) {
            if name == "evalsha" {
                script_usec = usec;
            }
            eprintln!(
                "{name:>16}: {:>6.2} calls, {:>6.2} us per send",
                calls as f64 / numbers as f64,
                usec as f64 / numbers as f64
            );
        }
        let n = numbers as f64;
        let per_node: Vec<String> = done
            .iter()
            .map(|w| format!("{:.1}", w.cpu_us as f64 / n))
            .collect();
        let keys: u64 = nodes
            .iter()
            .map(|node| {
                redis_cli(node.port, &["DBSIZE"])
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0)
            })
            .sum();
        let fallback = shared.stats.fallback.load(Ordering::Relaxed);
        (
            format!(
                "{{\"numbers\":{numbers},\"masters\":{},\"forwarded\":{forwarded},\"redis_used_memory_bytes\":{memory},\"bytes_per_number\":{:.0},\"keys\":{keys},\"keys_per_number\":{:.2},\"scripts_per_send\":{:.2},\"redis_commands_per_send\":{:.2},\"round_trips_per_send\":{:.2},\"redis_cpu_us_per_send\":{:.1},\"redis_cpu_us_per_send_per_node\":[{}],\"sends_per_busiest_core_second\":{:.0},\"script_us_per_send\":{:.1},\"fallback\":{fallback},\"log_events\":{logged},\"log_bytes_per_event\":{:.0},\"sends_per_second\":{:.0}}}",
                nodes.len(),
                memory as f64 / n,
                keys as f64 / n,
                scripts as f64 / n,
                commands as f64 / n,
                rt as f64 / n,
                cpu as f64 / n,
                per_node.join(","),
                n / (busiest.max(1) as f64 / 1e6),
                script_usec as f64 / n,
                log_bytes as f64 / logged.max(1) as f64,
                n / seconds
            ),
            fallback,
        )
    });
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", report.0);
    if report.1 > 0 {
        eprintln!("sends were judged locally: redis did not answer in time");
        std::process::exit(1);
    }
}
