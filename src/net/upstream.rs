//! Forwarding to Twilio: pooled HTTP/1.1 and HTTP/2 connections over rustls.
//!
//! A forwarded request keeps its method, path, query, body and headers
//! (`Authorization` untouched) except hop-by-hop headers and the guard's own
//! context headers; `Host` names the upstream. This module never decides
//! anything and never logs a header value or a body.
//!
//! Its log events keep the target `smsguard::upstream` (operators filter logs
//! by it with `SMSGUARD_LOG`), wherever the module sits.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config;
use crate::twilio::routes;

/// A body that is either streamed through (under the body timeouts) or
/// was read whole.
pub type Body = Either<Timed<Incoming>, Full<Bytes>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body that ends with an error when it stalls: no frame for
/// `idle`, or not finished by `deadline`. A client whose answer stalls gets
/// its connection ended (HTTP/1.1) or its stream reset (HTTP/2) instead of
/// waiting forever; an upstream whose request body stalls gets the same.
pub struct Timed<B> {
    inner: B,
    cuts: Option<Arc<Cuts>>,
    idle: Duration,
    deadline: tokio::time::Instant,
    /// Armed at the first wait; re-armed after progress.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    progressed: bool,
    what: &'static str,
}

/// Streamed bodies cut, by why (for metrics).
#[derive(Debug, Default)]
pub struct Cuts {
    /// No data for `upstream.body_timeout`.
    pub idle: std::sync::atomic::AtomicU64,
    /// `upstream.deadline` reached.
    pub deadline: std::sync::atomic::AtomicU64,
}

/// Why a streamed body was cut.
#[derive(Debug)]
pub struct Stalled {
    pub what: &'static str,
    pub why: &'static str,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} cut: {}", self.what, self.why)
    }
}

impl std::error::Error for Stalled {}

impl<B> Timed<B> {
    pub fn new(
        inner: B,
        idle: Duration,
        deadline: tokio::time::Instant,
        what: &'static str,
    ) -> Self {
        Timed {
            inner,
            cuts: None,
            idle,
            deadline,
            timer: None,
            progressed: false,
            what,
        }
    }

    fn next_alarm(&self) -> tokio::time::Instant {
        (tokio::time::Instant::now() + self.idle).min(self.deadline)
    }
}

impl<B> hyper::body::Body for Timed<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.progressed = true;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let alarm = this.next_alarm();
                let timer = match &mut this.timer {
                    Some(t) => {
                        if std::mem::take(&mut this.progressed) {
                            t.as_mut().reset(alarm);
                        }
                        t
                    }
                    None => this.timer.insert(Box::pin(tokio::time::sleep_until(alarm))),
                };
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let at_deadline = tokio::time::Instant::now() >= this.deadline;
                let why = if at_deadline {
                    "upstream.deadline reached"
                } else {
                    "no data for upstream.body_timeout"
                };
                if let Some(c) = &this.cuts {
                    let n = if at_deadline { &c.deadline } else { &c.idle };
                    n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                tracing::warn!(target: "smsguard::upstream", body = this.what, reason = why, "streamed body stalled; cut");
                Poll::Ready(Some(Err(Box::new(Stalled {
                    what: this.what,
                    why,
                }))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Right(Full::new(bytes.into()))
}

/// Why a request could not be forwarded.
#[derive(Debug)]
pub enum UpstreamError {
    /// No answer within `upstream.timeout`.
    Timeout,
    /// Connection refused, reset, TLS failure, ...
    Unreachable(String),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Timeout => f.write_str("upstream timed out"),
            UpstreamError::Unreachable(e) => write!(f, "upstream unreachable: {e}"),
        }
    }
}

#[derive(Clone)]
struct Base {
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
}

impl Base {
    fn parse(url: &str) -> Result<Base, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("{url}: no scheme"))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{url}: no host"))?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        Ok(Base {
            scheme,
            authority,
            host,
        })
    }
}

/// Resolves configured host names to fixed addresses, the rest through the
/// system resolver.
#[derive(Clone)]
pub struct Resolver {
    fixed: Arc<BTreeMap<String, SocketAddr>>,
    system: GaiResolver,
}

type Resolved = std::vec::IntoIter<SocketAddr>;

impl tower_service::Service<Name> for Resolver {
    type Response = Resolved;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Resolved, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        if let Some(addr) = self.fixed.get(&name.as_str().to_ascii_lowercase()) {
            let addr = *addr;
            return Box::pin(async move { Ok(vec![addr].into_iter()) });
        }
        let mut system = self.system.clone();
        Box::pin(async move {
            let addrs = system.call(name).await?;
            Ok(addrs.collect::<Vec<_>>().into_iter())
        })
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// The configured upstream for the path (`upstream.api` or `.verify`).
    Configured(routes::Upstream),
    /// A Twilio host the client asked for by name (CONNECT or SNI), such as
    /// a regional `api.sydney.au1.twilio.com`: forwarded to that same host.
    Host(&'a str),
}

#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector<Resolver>>, Body>,
    api: Base,
    verify: Base,
    timeout: Duration,
    body_timeout: Duration,
    deadline: Duration,
    /// Streamed bodies cut for stalling.
    pub cuts: Arc<Cuts>,
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus the proxy ones; never forwarded in either direction.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names finds out, where
    // removing each of nine names would hash and probe nine times.
    if !headers
        .keys()
        .any(|k| *k == header::UPGRADE || HOP_BY_HOP.contains(k))
    {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(n);
    }
    headers.remove(header::UPGRADE);
}

impl Upstream {
    pub fn new(cfg: &config::Upstream) -> Result<Upstream, String> {
        let resolver = Resolver {
            fixed: Arc::new(
                cfg.resolve
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), *v))
                    .collect(),
            ),
            system: GaiResolver::new(),
        };
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &cfg.extra_ca {
            let pem = std::fs::read(path)
                .map_err(|e| format!("upstream.extra_ca {}: {e}", path.display()))?;
            let extra = crate::net::tls::root_store_with(&pem)
                .map_err(|e| format!("upstream.extra_ca {}: {e}", path.display()))?;
            roots.roots.extend(extra.roots);
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Ok(Upstream {
            client,
            api: Base::parse(&cfg.api)?,
            verify: Base::parse(&cfg.verify)?,
            timeout: cfg.timeout,
            body_timeout: cfg.body_timeout,
            deadline: cfg.deadline,
            cuts: Arc::default(),
        })
    }

    /// Sends a request to the upstream that serves `to`. The caller's
    /// headers have already had hop-by-hop and context headers removed.
    pub async fn send(
        &self,
        to: Target<'_>,
        method: http::Method,
        path_and_query: Option<&PathAndQuery>,
        mut headers: HeaderMap,
        body: Body,
    ) -> Result<Response<Timed<Incoming>>, UpstreamError> {
        let deadline = tokio::time::Instant::now() + self.deadline;
        let named;
        let base = match to {
            Target::Configured(routes::Upstream::Api) => &self.api,
            Target::Configured(routes::Upstream::Verify) => &self.verify,
            Target::Host(host) => {
                named =
                    Base::parse(&format!("https://{host}")).map_err(UpstreamError::Unreachable)?;
                &named
            }
        };
        let uri = Uri::builder()
            .scheme(base.scheme.clone())
            .authority(base.authority.clone())
            .path_and_query(
                path_and_query
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/")),
            )
            .build()
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        headers.insert(header::HOST, base.host.clone());
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        *req.headers_mut() = headers;
        let headers_by = (tokio::time::Instant::now() + self.timeout).min(deadline);
        match tokio::time::timeout_at(headers_by, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Err(e)) => Err(UpstreamError::Unreachable(error_chain(&e))),
            Ok(Ok(mut resp)) => {
                strip_hop_by_hop(resp.headers_mut());
                let (idle, cuts) = (self.body_timeout, self.cuts.clone());
                Ok(resp.map(|b| {
                    let mut t = Timed::new(b, idle, deadline, "upstream answer");
                    t.cuts = Some(cuts);
                    t
                }))
            }
        }
    }

    /// A client's body streamed to the upstream, under the same timeouts.
    pub fn stream(&self, body: Incoming) -> Body {
        let deadline = tokio::time::Instant::now() + self.deadline;
        Either::Left(Timed::new(
            body,
            self.body_timeout,
            deadline,
            "client request body",
        ))
    }
}

impl Upstream {
    /// POSTs a JSON body to any URL over the same pooled client (alert
    /// webhooks).
    pub async fn post_json(&self, url: &str, body: Bytes) -> Result<http::StatusCode, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.post(url, headers, body).await
    }

    /// POSTs `body` with `headers` to any URL over the same pooled client
    /// (alert webhooks, shadowed messages' status callbacks); the answer's
    /// status, within the upstream timeout.
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<http::StatusCode, String> {
        let mut req = Request::post(url)
            .body(full(body))
            .map_err(|e| e.to_string())?;
        *req.headers_mut() = headers;
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err("timed out".into()),
            Ok(Err(e)) => Err(error_chain(&e)),
            Ok(Ok(resp)) => Ok(resp.status()),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic y"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["authorization", "content-type"]);

        // Each alone, and Upgrade, is found by the first pass.
        for name in HOP_BY_HOP.iter().chain([&header::UPGRADE]) {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            h.insert(name.clone(), HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key(name), "{name}");
            assert!(h.contains_key(header::ACCEPT), "{name}");
        }
    }
}
