//! Egress-proxy and TLS modes: the guard in front of an application that
//! changed only its environment.
//!
//! `CONNECT host:443` to a Twilio host (or one configured in
//! `egress.intercept`) is answered 200, TLS is terminated with a certificate
//! minted from the local CA for that host, and every request inside goes
//! through the same pipeline as base-URL mode. CONNECT anywhere else is
//! refused with 403 unless `egress.tunnel` lists the target, which then gets
//! a blind tunnel. Absolute-form requests for other hosts are refused. The
//! guard is never an open proxy.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::pipeline::{self, App, Intercepted};
use crate::server::ConnInfo;
use crate::tls::{self, HostPolicy, Minter};
use crate::upstream::{self, Body};

/// What the proxy and TLS listeners need: the minting TLS config, which
/// hosts are intercepted, which targets may be tunnelled.
pub struct Interceptor {
    pub tls: Arc<rustls::ServerConfig>,
    pub minter: Arc<Minter>,
    hosts: HostPolicy,
    tunnels: Vec<String>,
    proxy: bool,
}

impl Interceptor {
    /// Loads the CA when the config asks for TLS or CONNECT; None otherwise.
    pub fn from_config(config: &Config) -> Result<Option<Arc<Interceptor>>, String> {
        if !config.listen.tls && !config.listen.proxy {
            return Ok(None);
        }
        let ca = config
            .ca
            .as_ref()
            .ok_or("listen.tls and listen.proxy need a [ca] section")?;
        let hosts = HostPolicy::try_new(config.egress.intercept.clone())?;
        let minter = Arc::new(Minter::load(&ca.cert, &ca.key, hosts.clone())?);
        Ok(Some(Arc::new(Interceptor {
            tls: tls::server_config(minter.clone())?,
            minter,
            hosts,
            tunnels: config
                .egress
                .tunnel
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            proxy: config.listen.proxy,
        })))
    }
}

fn normalize_host(h: &str) -> String {
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// The guard's handler for every listener mode.
pub async fn handle(
    app: Arc<App>,
    icpt: Option<Arc<Interceptor>>,
    mut req: Request<Incoming>,
    conn: ConnInfo,
) -> Response<Body> {
    // TLS listener (DNS mode): the SNI names the Twilio host asked for.
    if let Some(sni) = &conn.sni {
        req.extensions_mut().insert(Intercepted(sni.clone()));
        return pipeline::handle(app, req, conn.peer).await;
    }
    let Some(icpt) = icpt.filter(|i| i.proxy) else {
        if req.method() == Method::CONNECT {
            // Not a proxy: a CONNECT is never forwarded as a request.
            return refuse_status(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT needs listen.proxy = true",
            );
        }
        return pipeline::handle(app, req, conn.peer).await;
    };
    if req.method() == Method::CONNECT {
        return connect(app, icpt, req, conn.peer);
    }
    // Absolute-form (`GET http://host/...`): a plain-HTTP proxy request.
    if let Some(host) = req.uri().host() {
        let host = normalize_host(host);
        if icpt.hosts.allows(&host) {
            req.extensions_mut().insert(Intercepted(Arc::from(host)));
            return pipeline::handle(app, req, conn.peer).await;
        }
        return refuse(&format!("proxying to {host} is not allowed"));
    }
    pipeline::handle(app, req, conn.peer).await
}

fn refuse(why: &str) -> Response<Body> {
    refuse_status(StatusCode::FORBIDDEN, why)
}

fn refuse_status(status: StatusCode, why: &str) -> Response<Body> {
    tracing::warn!(reason = why, "proxy request refused");
    let mut resp = Response::new(upstream::full(format!(
        "{why}: smsguard intercepts Twilio hosts only and is not an open proxy\n"
    )));
    *resp.status_mut() = status;
    resp
}

fn connect(
    app: Arc<App>,
    icpt: Arc<Interceptor>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return refuse("CONNECT without host:port");
    };
    let host = normalize_host(authority.host());
    let port = authority.port_u16().unwrap_or(443);
    if port == 443 && icpt.hosts.allows(&host) {
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => intercept(app, icpt, TokioIo::new(upgraded), host, peer).await,
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        });
        return Response::new(upstream::full(""));
    }
    let target = format!("{host}:{port}");
    if icpt.tunnels.contains(&target) {
        tokio::spawn(async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => return tracing::debug!(error = %e, "CONNECT upgrade failed"),
            };
            match tokio::net::TcpStream::connect(&target).await {
                Ok(mut out) => {
                    let mut client = TokioIo::new(upgraded);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut out).await;
                }
                Err(e) => tracing::warn!(%target, error = %e, "tunnel target unreachable"),
            }
        });
        return Response::new(upstream::full(""));
    }
    refuse(&format!("CONNECT to {target} is not allowed"))
}

/// Terminates TLS inside a CONNECT tunnel and serves the requests in it.
async fn intercept<IO>(
    app: Arc<App>,
    icpt: Arc<Interceptor>,
    io: IO,
    host: String,
    peer: SocketAddr,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let tls = match TlsAcceptor::from(icpt.tls.clone()).accept(io).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(%host, error = %e, "TLS handshake in CONNECT tunnel failed (does the client trust the local CA?)");
            return;
        }
    };
    // The certificate was chosen by SNI: it must be the host CONNECT named,
    // or a client could reach one host through another's tunnel.
    let sni = tls.get_ref().1.server_name().map(normalize_host);
    if sni.as_deref().is_some_and(|s| s != host) {
        tracing::warn!(%host, sni = ?sni, "SNI differs from the CONNECT host; closing");
        return;
    }
    let host: Arc<str> = Arc::from(host);
    let svc = service_fn(move |mut req: Request<Incoming>| {
        let app = app.clone();
        req.extensions_mut().insert(Intercepted(host.clone()));
        async move { Ok::<_, std::convert::Infallible>(pipeline::handle(app, req, peer).await) }
    });
    if let Err(e) = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), svc)
        .await
    {
        tracing::debug!(error = %e, "intercepted connection ended with an error");
    }
}
