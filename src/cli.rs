//! The command line: `serve`, `check`, `explain`, `ca init`, `demo`,
//! `replay`.
//!
//! Output for people goes to stdout; errors to stderr with a non-zero exit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::base::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::guard::Guard;
use crate::phone::Classifier;
use crate::policy::{Attempt, Policy};
use crate::store::MemoryStore;
use crate::twilio::routes::Product;

#[derive(Parser, Debug)]
#[command(
    name = "smsguard",
    version,
    about = "A guard in front of the Twilio API that stops SMS traffic pumping"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the guard until SIGINT or SIGTERM.
    Serve {
        #[arg(long, default_value = "smsguard.toml")]
        config: PathBuf,
    },
    /// Validate a policy file and summarize it.
    Check {
        #[arg(long, default_value = "smsguard.toml")]
        config: PathBuf,
    },
    /// Judge one hypothetical send and show every stage: with empty state,
    /// or with the state a replay of past traffic left (--after).
    Explain {
        #[arg(long, default_value = "smsguard.toml")]
        config: PathBuf,
        /// Destination number, e.g. +998993941234
        #[arg(long)]
        to: String,
        /// The end user's address (X-SMSGuard-Client-IP).
        #[arg(long, default_value = "192.0.2.1")]
        ip: std::net::IpAddr,
        /// The app's user id (X-SMSGuard-User).
        #[arg(long)]
        user: Option<String>,
        /// The account sid [default: AC00000000000000000000000000000000;
        /// with --after, the account of the traffic's last send, or the
        /// replay's own for records without one]
        #[arg(long)]
        account: Option<String>,
        /// messaging, voice or verify
        #[arg(long, default_value = "messaging")]
        product: String,
        /// Judge after this traffic: first replayed as `smsguard replay`
        /// does (simulated clock, fake Twilio, confirmations replayed), so
        /// vouched numbers, blocks and alerts it left show. Files as
        /// `smsguard replay` reads them (.jsonl, .jsonl.gz, .gz, .csv).
        #[arg(long, num_args = 1.., value_name = "TRAFFIC")]
        after: Vec<PathBuf>,
        /// With --after: judge at this moment (RFC 3339, not before the
        /// last send) instead of just after the last event replayed;
        /// confirmations due later are not replayed.
        #[arg(long, value_name = "TIME", requires = "after")]
        at: Option<String>,
        /// Ask the running guard instead, through its admin API (e.g.
        /// http://127.0.0.1:9090): the send is judged on the guard's live
        /// state (blocks, counters, backoff, spend, adaptive figures,
        /// vouching), which the question does not change. The token is
        /// read from the variable the config's admin.token_env names
        /// (SMSGUARD_ADMIN_TOKEN without a readable config).
        #[arg(long, value_name = "URL", conflicts_with = "after")]
        admin: Option<String>,
    },
    /// Manage the local CA used to intercept TLS (egress-proxy and DNS modes).
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Run the built-in fake Twilio on 127.0.0.1:PORT, to try `serve`
    /// without a Twilio account: point upstream.api and upstream.verify at
    /// it. It answers sends like Twilio and prints each request it gets
    /// (method, path, To); it never reaches the network.
    FakeTwilio {
        #[arg(long, default_value_t = 9080)]
        port: u16,
    },
    /// Replay a generated day of legitimate traffic and pumping attacks
    /// through the guard in front of a built-in fake Twilio, offline.
    Demo {
        /// Policy to use (the built-in example policy by default).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Generate another day: other numbers, times and client addresses.
        #[arg(long)]
        seed: Option<u64>,
        /// A day whose attacks differ from the demo's (ranges, rates, mixes).
        #[arg(long)]
        held_out: bool,
        /// Two days: the held-out day, then a day of returning users and
        /// attacks of other shapes (dispersed Verify, prefix sprayer,
        /// poisoned conversions). Implies --held-out.
        #[arg(long)]
        dispersed: bool,
        /// Also write the day as JSON lines, for `smsguard replay`.
        #[arg(long, value_name = "FILE.jsonl")]
        save: Option<PathBuf>,
    },
    /// Backtest a policy on past sends (Twilio Bulk Export JSON lines, also
    /// .gz, or Console CSV) through the guard on a simulated clock, offline.
    Replay {
        #[arg(long, default_value = "smsguard.toml")]
        config: PathBuf,
        /// Write one decision per input record, in input order (JSON lines).
        #[arg(long, value_name = "DECISIONS.jsonl")]
        out: Option<PathBuf>,
        /// Files of past sends: .jsonl, .jsonl.gz, .gz or .csv.
        #[arg(required = true, value_name = "TRAFFIC")]
        traffic: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create ca.pem and ca.key (mode 0600); never overwrites.
    Init {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The proxy address to show in the trust instructions.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        proxy: String,
    },
}

/// Runs a command; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Explain {
            config,
            to,
            ip,
            user,
            account,
            product,
            after,
            at,
            admin,
        } => {
            let h = Hypothetical {
                to: &to,
                ip,
                user: user.as_deref(),
                account: account.as_deref(),
                product: &product,
            };
            match admin {
                Some(url) => explain_live(&config, &url, &h),
                None => explain(&config, &h, &after, at.as_deref()),
            }
        }
        Command::Serve { config } => serve(&config),
        Command::FakeTwilio { port } => fake_twilio(port),
        Command::Demo {
            config,
            seed,
            held_out,
            dispersed,
            save,
        } => crate::replay::demo::main(
            config.as_deref(),
            seed,
            held_out,
            dispersed,
            save.as_deref(),
        ),
        Command::Replay {
            config,
            out,
            traffic,
        } => crate::replay::command(&config, out.as_deref(), &traffic),
        Command::Ca {
            command: CaCommand::Init { dir, proxy },
        } => ca_init(&dir, &proxy),
    }
}

fn ca_init(dir: &Path, proxy: &str) -> i32 {
    match crate::net::tls::init_ca(dir) {
        Ok(files) => {
            let cert = std::fs::canonicalize(&files.cert).unwrap_or(files.cert.clone());
            println!(
                "created {} and {} (mode 0600)\n",
                files.cert.display(),
                files.key.display()
            );
            println!(
                "[ca]\ncert = \"{}\"\nkey = \"{}\"\n",
                files.cert.display(),
                files.key.display()
            );
            print!("{}", crate::net::tls::trust_instructions(&cert, proxy));
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn load(path: &Path) -> Result<Config, i32> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        1
    })
}

pub fn check(path: &Path) -> i32 {
    let c = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // What `serve` refuses at start, `check` refuses too.
    if let Some(admin) = &c.admin {
        if let Err(e) = crate::admin::Auth::from_config(admin) {
            eprintln!("{}: {e} (serve would not start)", path.display());
            return 1;
        }
    }
    if let Some(r) = &c.reconcile {
        if let Err(e) = r.credential() {
            eprintln!("{}: {e} (serve would not start)", path.display());
            return 1;
        }
    }
    println!("{}: ok", path.display());
    if c.protections().is_empty() {
        println!(
            "warning: this policy judges nothing: no geo list, number types, backoff, limits, adaptive stage, budget or balance; every send is forwarded"
        );
    }
    print!("{}", c.summary());
    0
}

/// The send `explain` judges, as given on the command line.
pub struct Hypothetical<'a> {
    pub to: &'a str,
    pub ip: std::net::IpAddr,
    pub user: Option<&'a str>,
    /// `None`: the default (see `explain --help`).
    pub account: Option<&'a str>,
    /// `messaging`, `voice` or `verify`.
    pub product: &'a str,
}

/// `smsguard explain`: judges one hypothetical send with empty state, or,
/// with `after`, with the state a replay of that traffic left (at `at`,
/// else just after its last event), and prints every stage's verdict.
/// Nothing is forwarded, and nothing the send changes is printed.
pub fn explain(path: &Path, h: &Hypothetical, after: &[PathBuf], at: Option<&str>) -> i32 {
    let c = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let product = match h.product {
        "messaging" => Product::Messaging,
        "voice" => Product::Voice,
        "verify" => Product::Verify,
        other => {
            eprintln!("unknown product {other:?}: expected messaging, voice or verify");
            return 2;
        }
    };
    let at = match at.map(crate::replay::input::parse_time).transpose() {
        Ok(at) => at,
        Err(e) => {
            eprintln!("--at: {e}");
            return 2;
        }
    };
    let dest = match crate::phone::normalize(h.to, c.numbers.default_region) {
        Ok(d) => d,
        Err(e) => {
            println!("number   {:?}: {e}", h.to);
            println!(
                "action   {} (invalid number, Twilio error 21211)",
                c.actions.invalid.as_str()
            );
            return 0;
        }
    };
    let loaded = if after.is_empty() {
        None
    } else {
        match crate::replay::input::load(after) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
        }
    };
    // With traffic, the account its sends were judged under.
    let account = match (h.account, &loaded) {
        (Some(a), _) => a.to_string(),
        (None, None) => "AC00000000000000000000000000000000".to_string(),
        (None, Some(l)) => l
            .entries
            .iter()
            .filter_map(|e| e.record.as_ref().ok())
            .filter(|r| r.judged())
            .max_by_key(|r| r.at)
            .and_then(|r| r.account.clone())
            .unwrap_or_else(|| crate::replay::engine::DEFAULT_ACCOUNT.to_string()),
    };
    let class = Classifier::new(16).classify(&dest.e164);
    // Keyed as a send's context headers are.
    let client_ip = crate::base::context::key_ip(h.ip, c.numbers.client_ipv6_prefix);
    let user = h.user.map(|u| crate::base::context::user_key(u.as_bytes()));
    let attempt = Attempt {
        product,
        account: &account,
        to: &dest,
        class,
        client_ip,
        end_user_ip: true,
        user: user.as_deref(),
        segments: 1,
        media: 0,
        content: None,
        // explain never uses the network: the balance is not asked.
        balance: crate::policy::BalanceView::NotAsked,
    };
    let d = match &loaded {
        None => {
            let store = MemoryStore::new(1_000, 1_000);
            let policy = Policy::new(Arc::new(c), Arc::new(store));
            policy.explain(&attempt, SystemClock.now())
        }
        Some(loaded) => match explain_after(c, loaded, at, &attempt) {
            Ok((line, d)) => {
                print!("{line}");
                d
            }
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
        },
    };
    println!(
        "number   {} region={} type={} valid={}",
        dest.e164,
        class.region.map_or("none".to_string(), |r| r.to_string()),
        class.kind.as_str(),
        class.valid
    );
    print!("{}", d.explained());
    0
}

/// `smsguard explain --admin URL`: asks the running guard's admin API
/// (`GET /api/explain`) and prints its answer, judged on the live state.
pub fn explain_live(path: &Path, url: &str, h: &Hypothetical) -> i32 {
    let token_env = Config::load(path)
        .ok()
        .and_then(|c| c.admin.map(|a| a.token_env))
        .unwrap_or_else(|| "SMSGUARD_ADMIN_TOKEN".to_string());
    let token = std::env::var(&token_env).ok().filter(|t| !t.is_empty());
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("to", h.to);
    query.append_pair("ip", &h.ip.to_string());
    query.append_pair("product", h.product);
    if let Some(u) = h.user {
        query.append_pair("user", u);
    }
    if let Some(a) = h.account {
        query.append_pair("account", a);
    }
    let path_and_query = format!("/api/explain?{}", query.finish());
    match admin_get(url, &path_and_query, token.as_deref()) {
        Ok((200, body)) => match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) => {
                println!("live     judged on the state of the guard at {url}");
                print!("{}", v["text"].as_str().unwrap_or_default());
                0
            }
            Err(e) => {
                eprintln!("{url}: the answer is not JSON: {e}");
                1
            }
        },
        Ok((status, body)) => {
            let text = String::from_utf8_lossy(&body);
            let why = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| text.trim().to_string());
            eprintln!("{url}: HTTP {status}: {why}");
            if status == 401 && token.is_none() {
                eprintln!("(no token: set {token_env})");
            }
            1
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            1
        }
    }
}

/// One GET to the admin listener (plain HTTP, as it serves): the status
/// and the body.
fn admin_get(url: &str, path: &str, token: Option<&str>) -> Result<(u16, Vec<u8>), String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        "give the admin listener as http://HOST:PORT (it serves plain HTTP)".to_string()
    })?;
    let (host, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let timeout = std::time::Duration::from_secs(10);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {host}"))?;
    let mut conn = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = conn.set_read_timeout(Some(timeout));
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {base}{path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
    conn.write_all(request.as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer is not HTTP")?;
    let head = String::from_utf8_lossy(&answer[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("the answer has no status")?;
    Ok((status, answer[end + 4..].to_vec()))
}

/// Replays `after` through the replay engine, then judges `attempt` on the
/// guard's policy in the state it left; returns the lines that say what
/// it was judged after (and the replay's notes), and the decision.
fn explain_after(
    c: Config,
    loaded: &crate::replay::input::Loaded,
    at: Option<crate::base::clock::Millis>,
    attempt: &Attempt,
) -> Result<(String, crate::policy::Decision), String> {
    use crate::replay::input::format_time;
    use std::fmt::Write;
    let last_send = loaded
        .entries
        .iter()
        .filter_map(|e| e.record.as_ref().ok())
        .filter(|r| r.judged())
        .map(|r| r.at)
        .max();
    if let (Some(at), Some(last)) = (at, last_send) {
        if at < last {
            return Err(format!(
                "--at {} is before the last send of the traffic, at {}",
                format_time(at),
                format_time(last)
            ));
        }
    }
    let rt = crate::replay::runtime()?;
    let (replayed, (d, judged_at)) = rt
        .block_on(crate::replay::engine::replay_then(
            c,
            loaded,
            at,
            |policy, now| (policy.explain(attempt, now), now),
        ))
        .map_err(|e| format!("replay failed: {e}"))?;
    let r = &replayed.report;
    let files: Vec<String> = loaded
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "after    {}: {} sends and {} confirmations replayed ({} skipped, {} bad){}; judged at {}{}",
        files.join(", "),
        r.sends(),
        r.confirmations,
        r.skipped_count(),
        r.bad_count,
        replayed
            .last_event
            .map(|t| format!(", the last event at {}", format_time(t)))
            .unwrap_or_default(),
        format_time(judged_at),
        if at.is_some() { "" } else { ", just after it" }
    );
    for n in &r.notes {
        let _ = writeln!(s, "note     {n}");
    }
    Ok((s, d))
}

/// Runtime worker threads for `listen.workers` (0: one per usable CPU).
fn workers(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

fn serve(path: &Path) -> i32 {
    let c = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _log = crate::telemetry::init(c.log.format, &c.log.level);
    // One worker: a single-threaded runtime, which spares every task switch
    // the synchronisation a work-stealing scheduler needs. `0` means one per
    // CPU this process may run on (its affinity and cgroup quota, so a guard
    // pinned to one core gets the single-threaded runtime too).
    let mut builder = match workers(c.listen.workers) {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let guard = match Guard::start(c, Arc::new(SystemClock)).await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return 1;
            }
        };
        guard.app().set_config_path(path.to_path_buf());
        match guard.admin_addr() {
            Some(admin) => tracing::info!(addr = %guard.addr(), %admin, "smsguard listening"),
            None => tracing::info!(addr = %guard.addr(), admin = "off", "smsguard listening"),
        }
        reload_on_sighup(guard.app().clone());
        wait_for_signal().await;
        tracing::info!("stopping: finishing requests in flight");
        guard.stop().await;
        0
    })
}

/// `smsguard fake-twilio`: the fake until SIGINT or SIGTERM, printing one
/// line per request it received (never a body or a credential).
fn fake_twilio(port: u16) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let fake = match crate::twilio::fake::FakeTwilio::start_on(port).await {
            Ok(f) => f,
            Err(e) => {
                eprintln!("127.0.0.1:{port}: {e}");
                return 1;
            }
        };
        println!(
            "fake Twilio on {url}: set upstream.api and upstream.verify to {url:?}; nothing here reaches the network",
            url = fake.url()
        );
        let mut shown = 0;
        let stop = wait_for_signal();
        tokio::pin!(stop);
        loop {
            // Whatever arrived is printed before stopping too.
            let stopping = tokio::select! {
                _ = &mut stop => true,
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => false,
            };
            let seen = fake.requests();
            for r in seen.iter().skip(shown) {
                let to = form_urlencoded::parse(&r.body)
                    .find(|(k, _)| k == "To")
                    .map(|(_, v)| format!(" To={v}"))
                    .unwrap_or_default();
                println!("{} {}{to}", r.method, r.uri.path());
            }
            shown = seen.len();
            if stopping {
                return 0;
            }
        }
    })
}

/// SIGHUP reads the policy file again; a bad file keeps the running policy.
fn reload_on_sighup(app: std::sync::Arc<crate::pipeline::App>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                // A signal never weakens the policy: that takes the admin
                // API's explicit accept_weaker=true.
                if let Err(e) = app.reload(false) {
                    tracing::error!(error = %e, "reload failed; keeping the running policy");
                }
            }
        });
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
