//! Accepting connections: HTTP/1.1 and HTTP/2 (prior knowledge) on a TCP
//! listener, a bound on open connections, header read timeouts, and a
//! graceful stop that finishes in-flight requests within a drain timeout.
//!
//! It knows nothing about Twilio: every request goes to the handler it was
//! given.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::upstream::Body;

/// How the listener behaves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub drain_timeout: Duration,
    /// Serve TLS with this config (certificates chosen by SNI).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// What the handler learns about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The TLS server name the client asked for, on a TLS listener.
    pub sni: Option<Arc<str>>,
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and
/// waits (at most `drain_timeout`) for open connections to finish.
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
    let permits = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        // Wait for capacity before accepting, so excess connections queue in
        // the kernel's backlog instead of exhausting memory here.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let h = handler.clone();
        match &opts.tls {
            None => {
                let info = ConnInfo { peer, sni: None };
                let svc = service_fn(move |req| {
                    let (h, info) = (h.clone(), info.clone());
                    async move { Ok::<_, Infallible>(h(req, info).await) }
                });
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Some(tls) => {
                let (acceptor, builder, watcher) = (
                    tokio_rustls::TlsAcceptor::from(tls.clone()),
                    builder.clone(),
                    graceful.watcher(),
                );
                let handshake_timeout = opts.header_timeout;
                tokio::spawn(async move {
                    let accepted =
                        tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await;
                    let stream = match accepted {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            return tracing::debug!(error = %e, %peer, "TLS handshake failed")
                        }
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    let sni =
                        stream.get_ref().1.server_name().map(|s| {
                            Arc::<str>::from(s.trim_end_matches('.').to_ascii_lowercase())
                        });
                    let info = ConnInfo { peer, sni };
                    let svc = service_fn(move |req| {
                        let (h, info) = (h.clone(), info.clone());
                        async move { Ok::<_, Infallible>(h(req, info).await) }
                    });
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(opts.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
}
