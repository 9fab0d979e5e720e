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
//!
//! Its log events keep the target `smsguard::egress` (operators filter logs
//! by it with `SMSGUARD_LOG`), wherever the module sits.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::net::server::{self, idle_watch, ConnInfo, Watched};
use crate::net::tls::{self, Minter};
use crate::net::upstream::{self, Body};
use crate::pipeline::{self, App, Intercepted};
use crate::twilio::hosts::HostPolicy;

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
        return connect(app, icpt, req, conn);
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
    tracing::warn!(target: "smsguard::egress", reason = why, "proxy request refused");
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
    conn: ConnInfo,
) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return refuse("CONNECT without host:port");
    };
    let host = normalize_host(authority.host());
    let port = authority.port_u16().unwrap_or(443);
    // A tunnel outlives the CONNECT request: the drain counts it, so a stop
    // waits for it (requests inside finish, then it closes).
    let tracked = conn.drain.track();
    if port == 443 && icpt.hosts.allows(&host) {
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => intercept(app, icpt, TokioIo::new(upgraded), host, conn).await,
                Err(e) => {
                    tracing::debug!(target: "smsguard::egress", error = %e, "CONNECT upgrade failed")
                }
            }
            drop(tracked);
        });
        return Response::new(upstream::full(""));
    }
    let target = format!("{host}:{port}");
    if icpt.tunnels.contains(&target) {
        tokio::spawn(async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => {
                    return tracing::debug!(target: "smsguard::egress", error = %e, "CONNECT upgrade failed")
                }
            };
            match tokio::net::TcpStream::connect(&target).await {
                Ok(out) => {
                    // A blind tunnel cannot be ended between requests: the
                    // stop waits for it, then the process ends it. Idle ones
                    // are closed like any connection.
                    let (mut client, act) = Watched::new(TokioIo::new(upgraded));
                    let mut out = out;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut out) => {}
                        why = idle_watch(&act, conn.header_timeout, conn.idle_timeout) => {
                            conn.closed(why);
                            tracing::debug!(target: "smsguard::egress", %target, reason = why.as_str(), "tunnel closed");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "smsguard::egress", %target, error = %e, "tunnel target unreachable")
                }
            }
            drop(tracked);
        });
        return Response::new(upstream::full(""));
    }
    let mut resp = refuse(&format!("CONNECT to {target} is not allowed"));
    // The app's other HTTPS calls come here too when HTTPS_PROXY is set:
    // say how to let them by.
    *resp.body_mut() = upstream::full(format!(
        "CONNECT to {target} is not allowed: smsguard intercepts Twilio hosts only and is not an open proxy.\n\
         To reach {host} from this app, exempt it from the proxy (NO_PROXY={host}), or let it through as a blind tunnel (egress.tunnel = [\"{target}\"] in the policy).\n"
    ));
    resp
}

/// Terminates TLS inside a CONNECT tunnel and serves the requests in it.
async fn intercept<IO>(app: Arc<App>, icpt: Arc<Interceptor>, io: IO, host: String, conn: ConnInfo)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let handshake = tokio::time::timeout(
        conn.header_timeout,
        TlsAcceptor::from(icpt.tls.clone()).accept(io),
    );
    let tls = match handshake.await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::warn!(target: "smsguard::egress", %host, error = %e, "TLS handshake in CONNECT tunnel failed (does the client trust the local CA?)");
            return;
        }
        Err(_) => {
            return tracing::debug!(target: "smsguard::egress", %host, %peer, "TLS handshake in CONNECT tunnel timed out")
        }
    };
    // The certificate was chosen by SNI: it must be the host CONNECT named,
    // or a client could reach one host through another's tunnel.
    let sni = tls.get_ref().1.server_name().map(normalize_host);
    if sni.as_deref().is_some_and(|s| s != host) {
        tracing::warn!(target: "smsguard::egress", %host, sni = ?sni, "SNI differs from the CONNECT host; closing");
        return;
    }
    let host: Arc<str> = Arc::from(host);
    let (io, act) = Watched::new(tls);
    let handler = move |mut req: Request<Incoming>, c: ConnInfo| {
        req.extensions_mut().insert(Intercepted(host.clone()));
        pipeline::handle(app.clone(), req, c.peer)
    };
    let svc = server::service(handler, conn.clone(), act.clone());
    let builder = server::connection_builder(conn.header_timeout);
    let served = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(served);
    let ended = tokio::select! {
        r = served.as_mut() => Some(r),
        why = idle_watch(&act, conn.header_timeout, conn.idle_timeout) => {
            conn.closed(why);
            tracing::debug!(target: "smsguard::egress", %peer, reason = why.as_str(), "intercepted connection closed");
            None
        }
        _ = conn.drain.stopping() => {
            // Stop: finish what is in flight, take nothing new.
            served.as_mut().graceful_shutdown();
            Some(served.await)
        }
    };
    if let Some(Err(e)) = ended {
        tracing::debug!(target: "smsguard::egress", error = %e, "intercepted connection ended with an error");
    }
}
