//! Real `redis-server` processes for tests: each on 127.0.0.1 on a free
//! port, in its own temporary directory, never persisting, stopped by PID
//! when dropped. Never a system Redis.
//!
//! Without `redis-server` on the PATH a test skips (a line on stderr), but
//! under `CI=true` it fails: CI must install it (Debian: `redis-server`
//! and `redis-tools`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer PING after it is started.
const START_BOUND: Duration = Duration::from_secs(10);

/// Whether `redis-server` can run here; panics under `CI=true` when it
/// cannot, else says the test is skipped.
pub fn available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "redis-server is not installed but CI=true: install the Debian packages redis-server and redis-tools"
        );
    }
    eprintln!("skipped: redis-server is not installed (apt-get install redis-server redis-tools)");
    false
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn temp_dir(tag: &str) -> PathBuf {
    super::temp_dir(&format!("redis-{tag}"))
}

/// Sends one command in RESP (no password) and returns the first line of
/// the answer, or None when nothing answers within `wait`.
pub fn raw_command(port: u16, args: &[&str], wait: Duration) -> Option<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, wait).ok()?;
    s.set_read_timeout(Some(wait)).ok()?;
    s.set_write_timeout(Some(wait)).ok()?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).ok()?;
    if n == 0 {
        return None;
    }
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    Some(text.lines().next().unwrap_or("").to_string())
}

/// Whether something on `port` answers PING as Redis does (a password
/// required counts: the server is up).
fn answers(port: u16) -> bool {
    raw_command(port, &["PING"], Duration::from_millis(200))
        .is_some_and(|l| l == "+PONG" || l.starts_with("-NOAUTH"))
}

/// One `redis-server`.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    password: Option<String>,
    extra: Vec<String>,
    /// Serves TLS only (on `port`), with `tls.pem` and `tls.key` in `dir`.
    tls: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// A server without a password; None (the test skips) when
    /// `redis-server` is not installed outside CI.
    pub fn start() -> Option<RedisServer> {
        Self::start_with(None, &[])
    }

    /// A server that requires `password` (`--requirepass`).
    pub fn with_password(password: &str) -> Option<RedisServer> {
        Self::start_with(Some(password), &[])
    }

    /// A server with extra `redis-server` arguments.
    pub fn start_with(password: Option<&str>, extra: &[&str]) -> Option<RedisServer> {
        Self::start_inner(password, extra, None)
    }

    /// A server speaking TLS only, with this certificate and key (PEM).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Option<RedisServer> {
        Self::start_inner(None, &[], Some((cert_pem, key_pem)))
    }

    fn start_inner(
        password: Option<&str>,
        extra: &[&str],
        tls: Option<(&str, &str)>,
    ) -> Option<RedisServer> {
        if !available() {
            return None;
        }
        // A port found free may be taken before the server binds it: try
        // a few.
        let mut last = String::new();
        for _ in 0..5 {
            let mut s = RedisServer {
                port: free_port(),
                dir: temp_dir("single"),
                password: password.map(str::to_string),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                tls: tls.is_some(),
                child: None,
            };
            if let Some((cert, key)) = tls {
                std::fs::write(s.dir.join("tls.pem"), cert).expect("write cert");
                std::fs::write(s.dir.join("tls.key"), key).expect("write key");
            }
            match s.spawn() {
                Ok(()) => return Some(s),
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// `redis://127.0.0.1:PORT` (`rediss://localhost:PORT` for TLS).
    pub fn url(&self) -> String {
        if self.tls {
            format!("rediss://localhost:{}", self.port)
        } else {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = if self.tls {
            vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                self.port.to_string(),
                "--tls-cert-file".into(),
                self.dir.join("tls.pem").display().to_string(),
                "--tls-key-file".into(),
                self.dir.join("tls.key").display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ]
        } else {
            vec!["--port".into(), self.port.to_string()]
        };
        a.extend([
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--daemonize".into(),
            "no".into(),
            "--dir".into(),
            self.dir.display().to_string(),
            "--logfile".into(),
            self.dir.join("redis.log").display().to_string(),
        ]);
        if let Some(p) = &self.password {
            a.push("--requirepass".into());
            a.push(p.clone());
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_BOUND;
        loop {
            // A TLS port cannot be PINGed in clear: accepting is enough.
            let ready = if self.tls {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                answers(self.port)
            };
            if ready {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "redis-server on port {} exited ({status}): {}",
                    self.port,
                    self.log()
                ));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "redis-server on port {} did not answer within {START_BOUND:?}: {}",
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// SIGKILL by PID, and reaped: the port stops answering at once.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // std's Child::kill is SIGKILL to this child's PID.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing was saved).
    pub fn restart(&mut self) {
        self.kill();
        // The port was just ours; Redis binds with SO_REUSEADDR, but
        // another process could take it in between: then fail loudly.
        self.spawn()
            .unwrap_or_else(|e| panic!("redis-server restart failed: {e}"));
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(p) = &self.password {
            cmd.env("REDISCLI_AUTH", p);
        }
        let out = cmd.args(args).output().expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of masters only, each a [`RedisServer`] with its own
/// cluster bus port.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// `masters` masters (at least 3) covering all slots, ready
    /// (`cluster_state:ok` on every node); None when `redis-server` is not
    /// installed outside CI.
    pub fn start(masters: usize) -> Option<RedisCluster> {
        if !available() {
            return None;
        }
        let mut nodes = Vec::new();
        for _ in 0..masters {
            let bus = free_port().to_string();
            let node = RedisServer::start_with(
                None,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    &bus,
                ],
            )?;
            nodes.push(node);
        }
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for n in &nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = cmd
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + START_BOUND;
        for n in &nodes {
            loop {
                let info = n.cli(&["cluster", "info"]);
                if info.lines().any(|l| l.trim() == "cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster not ok within {START_BOUND:?} on port {}: {info}",
                    n.port
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Some(RedisCluster { nodes })
    }

    /// The seed URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

/// The `[store]` of a guard on `server` (`redis = ...`) or on `cluster`
/// (`redis_cluster = [...]`), with `timeout` and the rest of `extra`.
pub fn store_config(target: Target<'_>, timeout: &str, extra: &str) -> smsguard::config::Store {
    let at = match target {
        Target::Server(s) => format!("redis = \"{}\"", s.url()),
        Target::Cluster(c) => format!(
            "redis_cluster = [{}]",
            c.urls()
                .iter()
                .map(|u| format!("\"{u}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let toml = format!("[store]\n{at}\ntimeout = \"{timeout}\"\n{extra}");
    smsguard::config::Config::parse(std::path::Path::new("t.toml"), &toml)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"))
        .store
}

/// Where a link goes.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    Server(&'a RedisServer),
    Cluster(&'a RedisCluster),
}

/// A link to `target` with store.timeout `timeout`, checked to be up.
pub async fn link(target: Target<'_>, timeout: &str) -> smsguard::store::redis::RedisLink {
    let l = smsguard::store::redis::RedisLink::connect(&store_config(target, timeout, ""), |_| {})
        .await
        .unwrap_or_else(|e| panic!("connecting: {e}"));
    assert!(l.is_up());
    l
}
