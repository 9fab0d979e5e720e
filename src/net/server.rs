//! Accepting connections: HTTP/1.1 and HTTP/2 (prior knowledge) on a TCP
//! listener, bounds on open connections (in all and per client address),
//! timeouts that start at accept, and a graceful stop that finishes
//! in-flight requests, CONNECT tunnels included, within a drain timeout.
//!
//! It knows nothing about Twilio: every request goes to the handler it was
//! given.
//!
//! Its log events keep the target `smsguard::server` (operators filter logs
//! by it with `SMSGUARD_LOG`), wherever the module sits.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};

use crate::net::upstream::Body;

/// How the listener behaves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub max_connections: usize,
    /// Open connections from one client address at once.
    pub max_per_ip: usize,
    /// From accept (or the end of the TLS handshake) to the first byte, and
    /// for each request's headers.
    pub header_timeout: Duration,
    /// No request in flight and no byte either way for this long: closed.
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    /// Serve TLS with this config (certificates chosen by SNI).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where connections closed by the guard are counted (for metrics).
    pub stats: Arc<ListenerStats>,
}

/// Connections the guard closed or refused, by why.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Nothing sent within `header_timeout` of accept.
    pub silent: AtomicU64,
    /// Nothing in flight and no byte either way for `idle_timeout`.
    pub idle: AtomicU64,
    /// Refused at accept: the address had `max_per_ip` open.
    pub over_per_ip: AtomicU64,
}

impl ListenerStats {
    fn closed(&self, why: Closed) {
        match why {
            Closed::Silent => &self.silent,
            Closed::Idle => &self.idle,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

/// Why the idle watch closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Silent,
    Idle,
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Silent => "no request within listen.header_timeout of accept",
            Closed::Idle => "idle for listen.idle_timeout",
        }
    }
}

/// What the handler learns about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The TLS server name the client asked for, on a TLS listener.
    pub sni: Option<Arc<str>>,
    /// For connections the handler keeps serving after its answer (CONNECT
    /// tunnels): the stop signal and the drain's count.
    pub drain: Drain,
    /// The listener's timeouts, for connections served inside a tunnel.
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub stats: Arc<ListenerStats>,
}

impl ConnInfo {
    /// A connection served outside a listener (an in-memory pipe): no stop
    /// to wait for, the default timeouts.
    pub fn detached(peer: SocketAddr) -> ConnInfo {
        let listen = crate::config::Listen::default();
        ConnInfo {
            peer,
            sni: None,
            drain: Drain::detached(),
            header_timeout: listen.header_timeout,
            idle_timeout: listen.idle_timeout,
            stats: Arc::default(),
        }
    }

    /// Closes by the idle watch are counted here.
    pub fn closed(&self, why: Closed) {
        self.stats.closed(why);
    }
}

/// Lets work that outlives a request (a CONNECT tunnel) take part in the
/// graceful stop: it learns when the stop begins, and the server waits for
/// it (within the drain timeout) before returning.
#[derive(Debug, Clone)]
pub struct Drain {
    /// None: never stops (connections served outside a listener).
    stop: Option<watch::Receiver<bool>>,
    live: Arc<Live>,
}

#[derive(Debug, Default)]
struct Live {
    count: AtomicUsize,
    zero: Notify,
}

/// Counted by the drain while it lives.
pub struct Tracked(Arc<Live>);

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

impl Drain {
    fn new() -> (watch::Sender<bool>, Drain) {
        let (tx, stop) = watch::channel(false);
        (
            tx,
            Drain {
                stop: Some(stop),
                live: Arc::default(),
            },
        )
    }

    /// A drain that never stops (connections served outside a listener).
    pub fn detached() -> Drain {
        Drain {
            stop: None,
            live: Arc::default(),
        }
    }

    /// The server waits for this value to be dropped when it stops.
    pub fn track(&self) -> Tracked {
        self.live.count.fetch_add(1, Ordering::AcqRel);
        Tracked(self.live.clone())
    }

    /// Resolves when the graceful stop begins.
    pub async fn stopping(&self) {
        match self.stop.clone() {
            Some(mut rx) => {
                if rx.wait_for(|s| *s).await.is_err() {
                    // The server is gone without a stop: nothing to drain for.
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }

    async fn all_done(&self) {
        loop {
            let zero = self.live.zero.notified();
            tokio::pin!(zero);
            zero.as_mut().enable();
            if self.live.count.load(Ordering::Acquire) == 0 {
                return;
            }
            zero.await;
        }
    }
}

/// What one connection did: bytes read, bytes written, requests in flight.
#[derive(Debug, Default)]
pub struct Activity {
    reads: AtomicU64,
    writes: AtomicU64,
    in_flight: AtomicUsize,
}

/// Marks a request in flight while it lives.
pub struct Busy(Arc<Activity>);

impl Busy {
    pub fn new(act: &Arc<Activity>) -> Busy {
        act.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(act.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An IO that counts its reads and writes for the idle watch.
pub struct Watched<T> {
    inner: T,
    act: Arc<Activity>,
}

impl<T> Watched<T> {
    pub fn new(inner: T) -> (Watched<T>, Arc<Activity>) {
        let act = Arc::new(Activity::default());
        (
            Watched {
                inner,
                act: act.clone(),
            },
            act,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.act.reads.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.act.writes.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.act.writes.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Resolves (with the reason) when the connection should be closed: no
/// byte within `first` of accept, or nothing in flight and no byte either
/// way for `idle`. Checked four times per the shorter of the two, so a
/// connection is closed at most a quarter of that late.
pub async fn idle_watch(act: &Activity, first: Duration, idle: Duration) -> Closed {
    let tick = (first.min(idle) / 4).max(Duration::from_millis(1));
    let ops = |a: &Activity| a.reads.load(Ordering::Relaxed) + a.writes.load(Ordering::Relaxed);
    let (mut waited, mut quiet) = (Duration::ZERO, Duration::ZERO);
    let mut last = ops(act);
    loop {
        tokio::time::sleep(tick).await;
        waited += tick;
        if act.reads.load(Ordering::Relaxed) == 0 {
            if waited >= first {
                return Closed::Silent;
            }
            continue;
        }
        let now = ops(act);
        if now != last || act.in_flight.load(Ordering::Relaxed) > 0 {
            last = now;
            quiet = Duration::ZERO;
            continue;
        }
        quiet += tick;
        if quiet >= idle {
            return Closed::Idle;
        }
    }
}

/// Open connections per client address.
struct PerIp {
    cap: usize,
    stats: Arc<ListenerStats>,
    open: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
    last_warned: Mutex<Option<Instant>>,
}

struct IpSlot(Arc<PerIp>, IpAddr);

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.cap {
            drop(open);
            let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            self.stats.over_per_ip.fetch_add(1, Ordering::Relaxed);
            let mut last = self.last_warned.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                *last = Some(Instant::now());
                tracing::warn!(target: "smsguard::server",
                    %ip,
                    cap = self.cap,
                    refused_so_far = refused,
                    "connection refused: listen.max_connections_per_ip reached for this address"
                );
            }
            return None;
        }
        *n += 1;
        Some(IpSlot(self.clone(), ip))
    }
}

impl PerIp {
    fn new(opts: &ServerOptions) -> PerIp {
        PerIp {
            cap: opts.max_per_ip.max(1),
            stats: opts.stats.clone(),
            open: Mutex::default(),
            refused: AtomicU64::new(0),
            last_warned: Mutex::default(),
        }
    }
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and
/// waits (at most `drain_timeout`) for open connections and tunnels to
/// finish.
pub async fn run<H, F>(
    listener: TcpListener,
    opts: ServerOptions,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let (stop_tx, drain) = Drain::new();
    let permits = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let per_ip = Arc::new(PerIp::new(&opts));
    let builder = connection_builder(opts.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer, held) =
            match admit(&listener, &permits, &per_ip, shutdown.as_mut()).await {
                Admit::Open(stream, peer, held) => (stream, peer, held),
                Admit::Refused => continue,
                Admit::Stop => break,
            };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            stream,
            held,
            h: handler.clone(),
            info: ConnInfo {
                peer,
                sni: None,
                drain: drain.clone(),
                header_timeout: opts.header_timeout,
                idle_timeout: opts.idle_timeout,
                stats: opts.stats.clone(),
            },
        };
        match &opts.tls {
            None => conn.serve_plain(&builder, &graceful, &opts),
            Some(tls) => conn.serve_tls(tls, &builder, &graceful, &opts),
        }
    }
    stop(listener, stop_tx, graceful, drain, opts.drain_timeout).await;
}

/// What the listener's caps hold for one open connection: a place under
/// `listen.max_connections` and one under its address's cap, given back
/// (in that order) when the connection ends.
type Held = (tokio::sync::OwnedSemaphorePermit, IpSlot);

/// What the accept loop does next.
enum Admit {
    /// A connection accepted, within both caps.
    Open(TcpStream, SocketAddr, Held),
    /// Accepting failed, or the address is at its cap: try again.
    Refused,
    /// Stopping, or the caps are closed.
    Stop,
}

/// Waits for a place under the connection cap, then for a connection, and
/// takes a place under its address's cap; a connection over that cap is
/// closed at once.
async fn admit(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    per_ip: &Arc<PerIp>,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Admit {
    // Wait for capacity before accepting, so excess connections queue in
    // the kernel's backlog instead of exhausting memory here.
    let permit = tokio::select! {
        p = permits.clone().acquire_owned() => match p {
            Ok(p) => p,
            Err(_) => return Admit::Stop,
        },
        _ = &mut shutdown => return Admit::Stop,
    };
    let (stream, peer) = tokio::select! {
        r = listener.accept() => match r {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(target: "smsguard::server", error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Admit::Refused;
            }
        },
        _ = &mut shutdown => return Admit::Stop,
    };
    let Some(slot) = per_ip.take(peer.ip()) else {
        drop(stream);
        return Admit::Refused;
    };
    Admit::Open(stream, peer, (permit, slot))
}

/// One accepted connection, before it is served.
struct Conn<H> {
    stream: TcpStream,
    held: Held,
    h: H,
    info: ConnInfo,
}

impl<H, F> Conn<H>
where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    /// Serves one plain-HTTP connection in a task of its own until it ends,
    /// idles out or the drain closes it.
    fn serve_plain(
        self,
        builder: &auto::Builder<TokioExecutor>,
        graceful: &GracefulShutdown,
        opts: &ServerOptions,
    ) {
        let (peer, first, idle) = (self.info.peer, opts.header_timeout, opts.idle_timeout);
        let (io, act) = Watched::new(self.stream);
        let stats = opts.stats.clone();
        let svc = service(self.h, self.info, act.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            until_closed(conn, &act, peer, first, idle, &stats).await;
            drop(self.held);
        });
    }

    /// Serves one TLS connection in a task of its own: the handshake within the
    /// header timeout (its SNI kept in the connection's info), then as
    /// `serve_plain`.
    fn serve_tls(
        self,
        tls: &Arc<rustls::ServerConfig>,
        builder: &auto::Builder<TokioExecutor>,
        graceful: &GracefulShutdown,
        opts: &ServerOptions,
    ) {
        let (peer, first, idle) = (self.info.peer, opts.header_timeout, opts.idle_timeout);
        let (acceptor, builder, watcher) = (
            tokio_rustls::TlsAcceptor::from(tls.clone()),
            builder.clone(),
            graceful.watcher(),
        );
        let stats = opts.stats.clone();
        tokio::spawn(async move {
            let accepted = tokio::time::timeout(first, acceptor.accept(self.stream)).await;
            let stream = match accepted {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return tracing::debug!(target: "smsguard::server", error = %e, %peer, "TLS handshake failed")
                }
                Err(_) => {
                    return tracing::debug!(target: "smsguard::server", %peer, "TLS handshake timed out")
                }
            };
            let sni = stream
                .get_ref()
                .1
                .server_name()
                .map(|s| Arc::<str>::from(s.trim_end_matches('.').to_ascii_lowercase()));
            let info = ConnInfo { sni, ..self.info };
            let (io, act) = Watched::new(stream);
            let svc = service(self.h, info, act.clone());
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(io), svc)
                .into_owned();
            until_closed(watcher.watch(conn), &act, peer, first, idle, &stats).await;
            drop(self.held);
        });
    }
}

/// Waits for a served connection to end, or closes it when it idles out
/// (counted in `stats`).
async fn until_closed<E: std::fmt::Display>(
    conn: impl Future<Output = Result<(), E>>,
    act: &Activity,
    peer: SocketAddr,
    first: Duration,
    idle: Duration,
    stats: &ListenerStats,
) {
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!(target: "smsguard::server", error = %e, %peer, "connection ended with an error");
        },
        why = idle_watch(act, first, idle) => {
            stats.closed(why);
            tracing::debug!(target: "smsguard::server", %peer, reason = why.as_str(), "connection closed");
        }
    }
}

/// Stops accepting, tells open connections and tunnels to finish, and waits
/// for them at most `drain_timeout`.
async fn stop(
    listener: TcpListener,
    stop_tx: watch::Sender<bool>,
    graceful: GracefulShutdown,
    drain: Drain,
    drain_timeout: Duration,
) {
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = async {
        graceful.shutdown().await;
        drain.all_done().await;
    };
    if tokio::time::timeout(drain_timeout, drained).await.is_err() {
        tracing::warn!(target: "smsguard::server", "drain timeout reached; closing remaining connections");
    }
}

/// HTTP/1.1 and HTTP/2 for one connection, with the header timeout (the
/// listener's and the connections inside CONNECT tunnels alike).
pub(crate) fn connection_builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// The handler as a hyper service that marks each request in flight.
pub(crate) fn service<H, F>(
    h: H,
    info: ConnInfo,
    act: Arc<Activity>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    service_fn(move |req| {
        let busy = Busy::new(&act);
        // Boxed: the handler's future holds every stage of a send (some
        // kilobytes), and hyper moves the service's future into its
        // dispatcher on every request; a box makes that move a pointer's.
        let fut = Box::pin(h(req, info.clone()));
        async move {
            let resp = fut.await;
            drop(busy);
            Ok::<_, Infallible>(resp)
        }
    })
}
