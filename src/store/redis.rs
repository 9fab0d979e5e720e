//! The link to Redis that a shared store talks through: one node (through a
//! [`ConnectionManager`]) or a Redis Cluster, a password from the
//! environment, a short timeout on every call, and a health state that the
//! guard reads to decide whether state is shared or judged locally.
//!
//! Redis faults are expected: a call that fails or outlasts `store.timeout`
//! turns the link [`Health::Degraded`]. While degraded, calls fail at once
//! without touching the network (a send is then judged on local state and
//! never waits on a dead Redis), and a background probe opens a fresh
//! connection and PINGs it, every 250 ms at first and backing off to 5 s,
//! until one answers in time: the link is then [`Health::Up`] again by
//! itself. While up, an idle link is PINGed every second so the state is
//! right without traffic. Each transition logs one line and calls the
//! callback given at construction.
//!
//! Nothing here logs or returns the password or a URL's userinfo.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    Client, Cmd, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError, Script,
    ServerErrorKind, ToRedisArgs, Value,
};
use tokio::sync::Notify;

use crate::config;

/// First wait between probes while degraded.
pub const PROBE_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between probes while degraded.
pub const PROBE_MAX: Duration = Duration::from_secs(5);
/// Longest wait for a call off the request path (see
/// [`RedisLink::background`]).
pub const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(2);
/// An up link that made no successful call for this long is PINGed.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Whether Redis answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Up,
    Degraded {
        since: SystemTime,
        /// The last failure, without credentials.
        last_error: String,
    },
}

/// Why a call did not return Redis's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// A setting is unusable (found at start): the password variable is
    /// missing or empty, a URL is refused.
    Config(String),
    /// Redis refused the credentials.
    Auth(String),
    /// No answer within `store.timeout`.
    Timeout(Duration),
    /// The link is degraded: the call was not sent.
    Down(String),
    /// The connection failed (refused, reset, cluster down...).
    Unavailable(String),
    /// Redis answered with an error (a script error, a cross-slot call):
    /// the link itself is fine.
    Server(String),
}

impl LinkError {
    /// Whether the error says Redis cannot be used right now (everything
    /// but an error answer).
    pub fn is_fault(&self) -> bool {
        !matches!(self, LinkError::Server(_))
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Config(m) => write!(f, "redis configuration: {m}"),
            LinkError::Auth(m) => write!(f, "redis authentication failed: {m}"),
            LinkError::Timeout(t) => write!(f, "redis did not answer within {t:?}"),
            LinkError::Down(m) => write!(f, "redis link degraded: {m}"),
            LinkError::Unavailable(m) => write!(f, "redis unavailable: {m}"),
            LinkError::Server(m) => write!(f, "redis error: {m}"),
        }
    }
}

impl std::error::Error for LinkError {}

/// Counters of what the link did, read without locks.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Calls of `eval` and `ping`.
    pub calls: AtomicU64,
    /// Calls that failed, for any reason (timeouts and fast failures too).
    pub errors: AtomicU64,
    /// Calls cut at `store.timeout`.
    pub timeouts: AtomicU64,
    /// Calls failed at once because the link was degraded.
    pub fast_failures: AtomicU64,
    /// Commands sent to Redis by calls (an EVALSHA answered NOSCRIPT costs
    /// three: EVALSHA, SCRIPT LOAD, EVALSHA).
    pub round_trips: AtomicU64,
    /// Scripts loaded after NOSCRIPT.
    pub script_loads: AtomicU64,
    /// Background PINGs (heartbeat and probes).
    pub probes: AtomicU64,
    /// Transitions from up to degraded.
    pub degradations: AtomicU64,
}

/// One script call of [`RedisLink::eval_many`].
pub struct Call<'a> {
    pub script: &'a Script,
    pub keys: Vec<String>,
    pub args: Vec<String>,
}

impl Call<'_> {
    fn cmd(&self) -> Cmd {
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(self.keys.len());
        for k in &self.keys {
            cmd.arg(k);
        }
        for a in &self.args {
            cmd.arg(a);
        }
        cmd
    }
}

/// Told of every health transition (the guard raises an alert and sets a
/// metric). It runs on the task that noticed the change and must not block.
pub type OnHealth = Box<dyn Fn(&Health) + Send + Sync>;

#[derive(Clone)]
enum Backend {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Backend {
    async fn query(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        match self {
            Backend::Single(c) => cmd.query_async(&mut c.clone()).await,
            Backend::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }

    async fn load(&self, script: &Script) -> Result<String, RedisError> {
        match self {
            Backend::Single(c) => script.load_async(&mut c.clone()).await,
            Backend::Cluster(c) => script.load_async(&mut c.clone()).await,
        }
    }
}

/// How to open a connection: kept to open fresh ones while degraded.
enum Connector {
    Single(Box<Client>),
    Cluster(Box<ClusterClient>),
}

struct Inner {
    connector: Connector,
    backend: Mutex<Option<Backend>>,
    timeout: Duration,
    connect_timeout: Duration,
    up: AtomicBool,
    health: Mutex<Health>,
    /// Held across a state change and its callback, so callbacks arrive
    /// in the order of the changes.
    transition: Mutex<()>,
    on_change: OnHealth,
    stats: LinkStats,
    /// Where the link goes (`host:port`, comma separated), for logs.
    target: String,
    /// The password, only to scrub it from error texts.
    password: Option<String>,
    /// Wakes the monitor when a call degrades the link.
    wake: Arc<Notify>,
    born: Instant,
    /// Milliseconds since `born` of the last call that succeeded.
    last_ok: AtomicU64,
    /// What every key starts with (`store.prefix`).
    prefix: String,
    /// Calls waiting to go out together (see [`RedisLink::eval_batched`]).
    batch: std::sync::OnceLock<tokio::sync::mpsc::Sender<Batched>>,
}

/// A call waiting for its batch, and where its answer goes.
type Batched = (
    Call<'static>,
    tokio::sync::oneshot::Sender<Result<Value, LinkError>>,
);

/// Most calls sent in one batched pipeline.
const BATCH: usize = 256;

/// A connection to Redis with a health state. Cheap to clone.
#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<Inner>,
    /// Calls off the request path (mirroring every block, reading the
    /// fleet's log) may take longer than `store.timeout`: a big listing
    /// must not mark a healthy Redis degraded.
    background: bool,
}

impl fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLink")
            .field("target", &self.inner.target)
            .field("up", &self.is_up())
            .finish()
    }
}

impl RedisLink {
    /// Opens the link `store` describes (`store.redis` or
    /// `store.redis_cluster`), with the password from the environment
    /// variable `store.redis_password_env`.
    ///
    /// Fails only on what no retry can mend: no Redis configured, the
    /// password variable missing or empty, credentials Redis refuses. A
    /// Redis that cannot be reached yet gives a link that starts degraded
    /// (the callback is told) and comes up by itself.
    pub async fn connect(
        store: &config::Store,
        on_change: impl Fn(&Health) + Send + Sync + 'static,
    ) -> Result<RedisLink, LinkError> {
        let password = match &store.redis_password_env {
            None => None,
            Some(name) => {
                let name = name.get_ref();
                match std::env::var(name) {
                    Ok(p) if !p.is_empty() => Some(p),
                    Ok(_) => {
                        return Err(LinkError::Config(format!(
                            "the environment variable {name} (store.redis_password_env) is empty"
                        )))
                    }
                    Err(std::env::VarError::NotPresent) => {
                        return Err(LinkError::Config(format!(
                            "the environment variable {name} (store.redis_password_env) is not set"
                        )))
                    }
                    Err(std::env::VarError::NotUnicode(_)) => {
                        return Err(LinkError::Config(format!(
                            "the environment variable {name} (store.redis_password_env) is not UTF-8"
                        )))
                    }
                }
            }
        };
        let timeout = store.timeout;
        // Opening a connection (TCP, TLS, AUTH) may take longer than one
        // call; it is still bounded.
        let connect_timeout = timeout.max(Duration::from_secs(1));
        let scrub = |e: RedisError| scrub(&e.to_string(), password.as_deref());
        let (connector, target) = if let Some(url) = &store.redis {
            let info = open_info(url.get_ref(), password.as_deref())
                .map_err(|e| LinkError::Config(format!("store.redis: {}", scrub(e))))?;
            let target = info.addr().to_string();
            let client = Client::open(info)
                .map_err(|e| LinkError::Config(format!("store.redis: {}", scrub(e))))?;
            (Connector::Single(Box::new(client)), target)
        } else if let Some(seeds) = &store.redis_cluster {
            let mut infos = Vec::new();
            for url in seeds.get_ref() {
                infos.push(open_info(url.get_ref(), None).map_err(|e| {
                    LinkError::Config(format!("store.redis_cluster: {}", scrub(e)))
                })?);
            }
            let target = infos
                .iter()
                .map(|i| i.addr().to_string())
                .collect::<Vec<_>>()
                .join(",");
            let mut b = ClusterClientBuilder::new(infos)
                .connection_timeout(connect_timeout)
                .response_timeout(timeout.max(BACKGROUND_TIMEOUT))
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(100);
            if let Some(p) = &password {
                b = b.password(p);
            }
            let client = b
                .build()
                .map_err(|e| LinkError::Config(format!("store.redis_cluster: {}", scrub(e))))?;
            (Connector::Cluster(Box::new(client)), target)
        } else {
            return Err(LinkError::Config(
                "neither store.redis nor store.redis_cluster is set".into(),
            ));
        };
        let inner = Arc::new(Inner {
            connector,
            backend: Mutex::new(None),
            timeout,
            connect_timeout,
            up: AtomicBool::new(false),
            health: Mutex::new(Health::Up),
            transition: Mutex::new(()),
            on_change: Box::new(on_change),
            stats: LinkStats::default(),
            target,
            password,
            wake: Arc::new(Notify::new()),
            born: Instant::now(),
            last_ok: AtomicU64::new(0),
            prefix: store.prefix.clone(),
            batch: std::sync::OnceLock::new(),
        });
        match inner.open().await {
            Ok(backend) => {
                *lock(&inner.backend) = Some(backend);
                inner.up.store(true, Ordering::Release);
                inner.touch();
                tracing::info!(redis = %inner.target, "redis store connected");
            }
            Err(LinkError::Auth(why)) => {
                return Err(LinkError::Auth(match &store.redis_password_env {
                    Some(var) => format!(
                        "{} refused the password in the environment variable {} ({why})",
                        inner.target,
                        var.get_ref()
                    ),
                    None => format!(
                        "{} requires a password: name the environment variable holding it in store.redis_password_env ({why})",
                        inner.target
                    ),
                }))
            }
            Err(e) => {
                // Starts degraded: the monitor below brings it up.
                *lock(&inner.health) = Health::Degraded {
                    since: SystemTime::now(),
                    last_error: e.to_string(),
                };
                inner.stats.degradations.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(redis = %inner.target, error = %e, "redis store unreachable at start: judging with local state until it answers");
                let _t = lock(&inner.transition);
                (inner.on_change)(&inner.health());
            }
        }
        tokio::spawn(monitor(Arc::downgrade(&inner)));
        Ok(RedisLink {
            inner,
            background: false,
        })
    }

    /// The same link for calls off the request path: bounded by
    /// [`BACKGROUND_TIMEOUT`] rather than `store.timeout`.
    pub fn background(&self) -> RedisLink {
        RedisLink {
            inner: self.inner.clone(),
            background: true,
        }
    }

    /// Whether the link goes to a Redis Cluster (keys of different hash
    /// slots cannot meet in one script there).
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.connector, Connector::Cluster(_))
    }

    /// Whether Redis is answering (one atomic load).
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    pub fn health(&self) -> Health {
        self.inner.health()
    }

    pub fn stats(&self) -> &LinkStats {
        &self.inner.stats
    }

    /// What every key of the shared state starts with (`store.prefix`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The per-call timeout (`store.timeout`).
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Runs `script` with `keys` (each one key) and `args` by EVALSHA,
    /// loading the script when Redis answers NOSCRIPT (after a restart or
    /// SCRIPT FLUSH) and trying once more, all within `store.timeout`. In a
    /// cluster the call goes to the node of the first key: keys of one call
    /// must share a hash slot (a `{tag}`).
    pub async fn eval<K, A>(
        &self,
        script: &Script,
        keys: &[K],
        args: &[A],
    ) -> Result<Value, LinkError>
    where
        K: AsRef<[u8]>,
        A: ToRedisArgs,
    {
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(script.get_hash()).arg(keys.len());
        for k in keys {
            cmd.arg(k.as_ref());
        }
        for a in args {
            cmd.arg(a);
        }
        let inner = &self.inner;
        self.call(async move |backend: Backend| {
            inner.stats.round_trips.fetch_add(1, Ordering::Relaxed);
            match backend.query(&cmd).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    inner.stats.round_trips.fetch_add(2, Ordering::Relaxed);
                    inner.stats.script_loads.fetch_add(1, Ordering::Relaxed);
                    backend.load(script).await?;
                    backend.query(&cmd).await
                }
                r => r,
            }
        })
        .await
    }

    /// Runs several scripts in one round trip (a pipeline of EVALSHAs) and
    /// returns each one's answer, in order; scripts Redis no longer holds
    /// (NOSCRIPT) are loaded and those calls alone run again. Each call's
    /// keys must share a hash slot. On a cluster the calls go to their
    /// nodes concurrently (one round trip of wall time, one per call
    /// counted). The whole batch is bounded by `store.timeout`; an error
    /// answer fails only its own call.
    pub async fn eval_many(
        &self,
        calls: &[Call<'_>],
    ) -> Result<Vec<Result<Value, LinkError>>, LinkError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let cmds: Vec<Cmd> = calls.iter().map(Call::cmd).collect();
        let inner = &self.inner;
        let answers = self
            .call(async move |backend: Backend| {
                let answers: Vec<Result<Value, RedisError>> = match &backend {
                    Backend::Single(c) => {
                        inner.stats.round_trips.fetch_add(1, Ordering::Relaxed);
                        let mut pipe = ::redis::pipe();
                        for cmd in &cmds {
                            pipe.add_command(cmd.clone());
                        }
                        pipe.ignore_errors();
                        let values: Vec<Value> = pipe.query_async(&mut c.clone()).await?;
                        values
                            .into_iter()
                            .map(|v| match v {
                                Value::ServerError(e) => Err(RedisError::from(e)),
                                v => Ok(v),
                            })
                            .collect()
                    }
                    Backend::Cluster(_) => {
                        inner
                            .stats
                            .round_trips
                            .fetch_add(cmds.len() as u64, Ordering::Relaxed);
                        futures_util::future::join_all(cmds.iter().map(|c| backend.query(c))).await
                    }
                };
                if answers.len() != cmds.len() {
                    return Err(RedisError::from((
                        ErrorKind::Parse,
                        "pipeline answered a different number of replies",
                    )));
                }
                let mut out = Vec::with_capacity(answers.len());
                for (i, a) in answers.into_iter().enumerate() {
                    out.push(match a {
                        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                            inner.stats.round_trips.fetch_add(2, Ordering::Relaxed);
                            inner.stats.script_loads.fetch_add(1, Ordering::Relaxed);
                            backend.load(calls[i].script).await?;
                            backend.query(&cmds[i]).await
                        }
                        Err(e)
                            if e.is_unrecoverable_error() || e.is_io_error() || e.is_timeout() =>
                        {
                            return Err(e)
                        }
                        a => a,
                    });
                }
                Ok(out)
            })
            .await?;
        Ok(answers
            .into_iter()
            .map(|a| a.map_err(|e| inner.classify(e)))
            .collect())
    }

    /// Runs `call` together with the other calls made meanwhile: one
    /// pipeline for up to 256 calls, so a flood of small independent writes
    /// (fakes of shadowed sends) costs a round trip per batch, not per call.
    /// Each call still gets its own answer, within `store.timeout` of its
    /// batch leaving.
    pub async fn eval_batched(&self, call: Call<'static>) -> Result<Value, LinkError> {
        let tx = self.inner.batch.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Batched>(BATCH * 64);
            let weak = Arc::downgrade(&self.inner);
            tokio::spawn(async move {
                let mut calls = Vec::with_capacity(BATCH);
                let mut answers = Vec::with_capacity(BATCH);
                while let Some((c, a)) = rx.recv().await {
                    calls.push(c);
                    answers.push(a);
                    while calls.len() < BATCH {
                        match rx.try_recv() {
                            Ok((c, a)) => {
                                calls.push(c);
                                answers.push(a);
                            }
                            Err(_) => break,
                        }
                    }
                    let Some(inner) = weak.upgrade() else { return };
                    let link = RedisLink {
                        inner,
                        background: false,
                    };
                    match link.eval_many(&calls).await {
                        Ok(results) => {
                            for (a, r) in answers.drain(..).zip(results) {
                                let _ = a.send(r);
                            }
                        }
                        Err(e) => {
                            for a in answers.drain(..) {
                                let _ = a.send(Err(e.clone()));
                            }
                        }
                    }
                    answers.clear();
                    calls.clear();
                }
            });
            tx
        });
        let (answer, rx) = tokio::sync::oneshot::channel();
        if tx.try_send((call, answer)).is_err() {
            return Err(LinkError::Unavailable(
                "too many batched calls waiting".into(),
            ));
        }
        rx.await
            .unwrap_or_else(|_| Err(LinkError::Unavailable("batch dropped".into())))
    }

    /// Sends `cmds` in one pipeline (on a cluster their keys must share a
    /// hash slot) and returns the answers, within `store.timeout`.
    pub async fn query_all(&self, cmds: &[Cmd]) -> Result<Vec<Value>, LinkError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let mut pipe = ::redis::pipe();
        for c in cmds {
            pipe.add_command(c.clone());
        }
        self.call(async move |backend: Backend| {
            inner.stats.round_trips.fetch_add(1, Ordering::Relaxed);
            match &backend {
                Backend::Single(c) => pipe.query_async(&mut c.clone()).await,
                Backend::Cluster(c) => pipe.query_async(&mut c.clone()).await,
            }
        })
        .await
    }

    /// PINGs Redis within `store.timeout`.
    pub async fn ping(&self) -> Result<(), LinkError> {
        let inner = &self.inner;
        self.call(async move |backend: Backend| {
            inner.stats.round_trips.fetch_add(1, Ordering::Relaxed);
            backend.query(&::redis::cmd("PING")).await
        })
        .await
        .map(|_| ())
    }

    /// One call: fails at once while degraded, else runs `f` on the
    /// connection within the timeout and turns faults into a degraded link.
    async fn call<T, F>(&self, f: F) -> Result<T, LinkError>
    where
        F: AsyncFnOnce(Backend) -> Result<T, RedisError>,
    {
        let inner = &self.inner;
        inner.stats.calls.fetch_add(1, Ordering::Relaxed);
        let backend = if self.is_up() {
            lock(&inner.backend).clone()
        } else {
            None
        };
        let Some(backend) = backend else {
            inner.stats.errors.fetch_add(1, Ordering::Relaxed);
            inner.stats.fast_failures.fetch_add(1, Ordering::Relaxed);
            let why = match inner.health() {
                Health::Degraded { last_error, .. } => last_error,
                Health::Up => "not connected".into(),
            };
            return Err(LinkError::Down(why));
        };
        // The client's own response timeout (the same) may fire first.
        let limit = if self.background {
            BACKGROUND_TIMEOUT.max(inner.timeout)
        } else {
            inner.timeout
        };
        let result = match tokio::time::timeout(limit, f(backend)).await {
            Err(_) => Err(LinkError::Timeout(limit)),
            Ok(r) => r.map_err(|e| inner.classify(e)),
        };
        match &result {
            Ok(_) => inner.touch(),
            Err(e) => {
                inner.stats.errors.fetch_add(1, Ordering::Relaxed);
                if matches!(e, LinkError::Timeout(_)) {
                    inner.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                }
                if e.is_fault() {
                    inner.degrade(e);
                }
            }
        }
        result
    }
}

impl Inner {
    fn health(&self) -> Health {
        lock(&self.health).clone()
    }

    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ok.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let now = self.born.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ok.load(Ordering::Relaxed)))
    }

    /// A RedisError as a LinkError, without the password.
    fn classify(&self, e: RedisError) -> LinkError {
        let text = scrub(&e.to_string(), self.password.as_deref());
        let auth = e.kind() == ErrorKind::AuthenticationFailed
            || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"));
        if auth {
            return LinkError::Auth(text);
        }
        let answered = matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::ResponseError
                    | ServerErrorKind::ExecAbort
                    | ServerErrorKind::NoScript
                    | ServerErrorKind::CrossSlot
                    | ServerErrorKind::NotBusy
                    | ServerErrorKind::NoSub
            ) | ErrorKind::UnexpectedReturnType
                | ErrorKind::Parse
        );
        if answered {
            LinkError::Server(text)
        } else if e.is_timeout() {
            LinkError::Timeout(self.timeout)
        } else {
            LinkError::Unavailable(text)
        }
    }

    /// Opens a fresh connection and PINGs it within the timeouts.
    async fn open(&self) -> Result<Backend, LinkError> {
        let opened = tokio::time::timeout(self.connect_timeout, async {
            match &self.connector {
                Connector::Single(client) => {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.connect_timeout))
                        .set_response_timeout(Some(self.timeout.max(BACKGROUND_TIMEOUT)))
                        .set_number_of_retries(1)
                        .set_min_delay(Duration::from_millis(50))
                        .set_max_delay(Duration::from_secs(1));
                    ConnectionManager::new_with_config(Client::clone(client), config)
                        .await
                        .map(Backend::Single)
                }
                Connector::Cluster(client) => {
                    client.get_async_connection().await.map(Backend::Cluster)
                }
            }
        })
        .await;
        let backend = match opened {
            Err(_) => return Err(LinkError::Timeout(self.connect_timeout)),
            Ok(Err(e)) => return Err(self.classify(e)),
            Ok(Ok(b)) => b,
        };
        self.stats.probes.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.timeout, backend.query(&::redis::cmd("PING"))).await {
            Err(_) => Err(LinkError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(self.classify(e)),
            Ok(Ok(_)) => Ok(backend),
        }
    }

    /// Up to degraded (once per outage): logs, tells the callback, wakes
    /// the monitor to start probing.
    fn degrade(&self, e: &LinkError) {
        let _t = lock(&self.transition);
        {
            let mut h = lock(&self.health);
            match &mut *h {
                Health::Degraded { last_error, .. } => {
                    *last_error = e.to_string();
                    return;
                }
                Health::Up => {
                    *h = Health::Degraded {
                        since: SystemTime::now(),
                        last_error: e.to_string(),
                    };
                }
            }
            self.up.store(false, Ordering::Release);
        }
        self.stats.degradations.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(redis = %self.target, error = %e, "redis store degraded: judging with local state until it answers");
        (self.on_change)(&self.health());
        self.wake.notify_one();
    }

    /// Degraded to up, with the connection a probe just proved.
    fn recover(&self, backend: Backend) {
        let _t = lock(&self.transition);
        let since = {
            let mut h = lock(&self.health);
            let since = match &*h {
                Health::Degraded { since, .. } => *since,
                Health::Up => return,
            };
            *lock(&self.backend) = Some(backend);
            *h = Health::Up;
            self.touch();
            self.up.store(true, Ordering::Release);
            since
        };
        let down = SystemTime::now().duration_since(since).unwrap_or_default();
        tracing::info!(redis = %self.target, down_for = ?down, "redis store answers again: state is shared");
        (self.on_change)(&Health::Up);
    }
}

/// For the link's life: while up, PINGs an idle link every [`HEARTBEAT`];
/// while degraded, probes with fresh connections, backing off from
/// [`PROBE_FIRST`] to [`PROBE_MAX`], until one answers.
async fn monitor(link: Weak<Inner>) {
    let mut delay = PROBE_FIRST;
    loop {
        let Some(inner) = link.upgrade() else { return };
        if inner.up.load(Ordering::Acquire) {
            delay = PROBE_FIRST;
            let idle = inner.idle();
            if idle >= HEARTBEAT {
                let backend = lock(&inner.backend).clone();
                if let Some(backend) = backend {
                    inner.stats.probes.fetch_add(1, Ordering::Relaxed);
                    let r =
                        tokio::time::timeout(inner.timeout, backend.query(&::redis::cmd("PING")))
                            .await;
                    match r {
                        Ok(Ok(_)) => inner.touch(),
                        Ok(Err(e)) => {
                            let e = inner.classify(e);
                            if e.is_fault() {
                                inner.degrade(&e);
                            }
                        }
                        Err(_) => inner.degrade(&LinkError::Timeout(inner.timeout)),
                    }
                }
                continue;
            }
            let wait = HEARTBEAT - idle;
            let wake = inner.wake.clone();
            // Hold no strong reference while waiting: a dropped link ends
            // this task.
            drop(inner);
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        drop(inner);
        tokio::time::sleep(delay).await;
        let Some(inner) = link.upgrade() else { return };
        if inner.up.load(Ordering::Acquire) {
            continue;
        }
        match inner.open().await {
            Ok(backend) => inner.recover(backend),
            Err(e) => {
                if let Health::Degraded { last_error, .. } = &mut *lock(&inner.health) {
                    *last_error = e.to_string();
                }
                delay = (delay * 2).min(PROBE_MAX);
            }
        }
    }
}

/// Connection settings from a URL the config accepted, with the password.
fn open_info(url: &str, password: Option<&str>) -> Result<ConnectionInfo, RedisError> {
    let info = url.into_connection_info()?;
    Ok(match password {
        Some(p) => {
            let redis = info.redis_settings().clone().set_password(p);
            info.set_redis_settings(redis)
        }
        None => info,
    })
}

/// `text` with every occurrence of the password hidden.
fn scrub(text: &str, password: Option<&str>) -> String {
    match password {
        Some(p) if !p.is_empty() => text.replace(p, "***"),
        _ => text.to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_scrubbed_from_error_texts() {
        assert_eq!(
            scrub("WRONGPASS for s3cret here", Some("s3cret")),
            "WRONGPASS for *** here"
        );
        assert_eq!(scrub("no secret", None), "no secret");
        assert_eq!(scrub("x", Some("")), "x");
    }

    #[test]
    fn only_an_error_answer_leaves_the_link_healthy() {
        assert!(!LinkError::Server("ERR".into()).is_fault());
        for e in [
            LinkError::Timeout(Duration::from_millis(50)),
            LinkError::Down("x".into()),
            LinkError::Unavailable("x".into()),
            LinkError::Auth("x".into()),
            LinkError::Config("x".into()),
        ] {
            assert!(e.is_fault(), "{e}");
        }
    }

    #[tokio::test]
    async fn a_missing_password_variable_fails_at_start() {
        let store = |var: &str| {
            let text = format!(
                "[store]\nredis = \"redis://127.0.0.1:1\"\nredis_password_env = \"{var}\"\n"
            );
            config::Config::parse(std::path::Path::new("t.toml"), &text)
                .unwrap()
                .store
        };
        let e = RedisLink::connect(&store("SMSGUARD_TEST_NO_SUCH_VARIABLE_4F2"), |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(&e, LinkError::Config(m) if m.contains("SMSGUARD_TEST_NO_SUCH_VARIABLE_4F2") && m.contains("not set")),
            "{e}"
        );
    }
}
