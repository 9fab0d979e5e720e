//! The admin listener: health, Prometheus metrics, a JSON API to see and
//! steer the guard (recent decisions, blocks, safe list, reload) and the
//! live dashboard.
//!
//! Every route but `/healthz` needs the bearer token named by
//! `admin.token_env` (compared in constant time); the dashboard page may
//! also be opened as `/?token=...`, which sets an HttpOnly cookie for its own
//! calls. The guard refuses to start with an admin address off loopback and
//! no token; without one, a request that did not come straight from a
//! local client (forwarded by a proxy, addressed to another host name, or
//! sent by a web page of another origin) is refused too. Token or not, a
//! request that changes state (any method but GET, HEAD and OPTIONS) must
//! be addressed to the listener (its address, `localhost` on loopback or a
//! name in `admin.hosts`), must not come from a page of another origin,
//! and a request with a body or a type must be `application/json`: no web
//! page can make a browser send one without the API's consent.
//! Nothing here shows a credential or a message body.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::config::{Action, Admin};
use crate::net::upstream::{self, Body};
use crate::pipeline::App;
use crate::policy::BlockRequest;
use crate::telemetry::activity::Filter;

const DASHBOARD: &str = include_str!("dashboard.html");
const COOKIE: &str = "smsguard_admin";

/// Who may use the admin routes.
#[derive(Clone)]
pub struct Auth {
    token: Option<Arc<str>>,
    /// The listener's address (its port is the one clients name).
    addr: std::net::SocketAddr,
    /// `admin.hosts`, lowercase.
    hosts: Arc<[String]>,
}

/// The host a request names: its `Host`, or the authority of an
/// absolute-form target.
fn addressed_host(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// Whether a browser sent the request for a page of another origin than
/// `host` (an `Origin` that is not `http://` + that host).
fn foreign_origin(headers: &http::HeaderMap, host: Option<&str>) -> bool {
    headers.get(header::ORIGIN).is_some_and(|origin| {
        !origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://"))
            .zip(host)
            .is_some_and(|(o, h)| o.eq_ignore_ascii_case(h))
    })
}

impl Auth {
    /// Reads the token from the environment; refuses an exposed address
    /// without one.
    pub fn from_config(admin: &Admin) -> Result<Auth, String> {
        let token = std::env::var(&admin.token_env)
            .ok()
            .filter(|t| !t.is_empty())
            .map(Arc::from);
        if token.is_none() {
            if !admin.addr.ip().is_loopback() {
                return Err(format!(
                    "admin.addr {} is not loopback and ${} is not set: refusing to expose the admin API without a token",
                    admin.addr, admin.token_env
                ));
            }
            tracing::warn!(
                "${} is not set: the admin API on {} is open to local users",
                admin.token_env,
                admin.addr
            );
        }
        Ok(Auth {
            token,
            addr: admin.addr,
            hosts: admin.hosts.clone().into(),
        })
    }

    /// The address the listener is bound to (its port when `admin.addr`
    /// asked for any).
    pub fn bound_to(mut self, addr: std::net::SocketAddr) -> Auth {
        self.addr = addr;
        self
    }

    /// Whether `authority` (a `Host`) names this listener: its own
    /// address (any IP address with its port when it listens on all of
    /// them: a name can be rebound, an address cannot), `localhost` when
    /// it listens on loopback, or a name in `admin.hosts`; a port, when
    /// given, is the listener's.
    fn names_listener(&self, authority: &str) -> bool {
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((h, rest)) => (h, rest.strip_prefix(':')),
                None => return false,
            },
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        if port.is_some_and(|p| p.parse::<u16>().ok() != Some(self.addr.port())) {
            return false;
        }
        let ip = self.addr.ip();
        match host.parse::<IpAddr>() {
            Ok(h) => h == ip || ip.is_unspecified() || (ip.is_loopback() && h.is_loopback()),
            Err(_) => {
                let name = host.to_ascii_lowercase();
                (name == "localhost" && (ip.is_loopback() || ip.is_unspecified()))
                    || self.hosts.contains(&name)
            }
        }
    }

    /// Token or not, why a request that changes state is refused, if it
    /// is: addressed to another host, sent by a page of another origin,
    /// or carrying a body that is not JSON.
    fn refuses_change(&self, req: &Request<Incoming>) -> Option<(StatusCode, &'static str)> {
        if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
            return None;
        }
        let headers = req.headers();
        let host = addressed_host(req);
        if !host.is_some_and(|h| self.names_listener(h)) {
            return Some((StatusCode::FORBIDDEN, "not addressed to this listener (its address, localhost, or a name in admin.hosts): refused"));
        }
        if foreign_origin(headers, host) {
            return Some((
                StatusCode::FORBIDDEN,
                "sent from a page of another origin: refused",
            ));
        }
        let json = |v: &HeaderValue| {
            v.to_str().ok().is_some_and(|ct| {
                ct.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            })
        };
        let mut types = headers.get_all(header::CONTENT_TYPE).iter();
        let typed = match (types.next(), types.next()) {
            (Some(v), None) => json(v),
            (None, _) => false,
            (Some(_), Some(_)) => false,
        };
        let has_body = headers.contains_key(header::TRANSFER_ENCODING)
            || headers
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0");
        // Without a body nor a type (`curl -X POST .../api/reload`) there is
        // nothing to mistake; a browser sends a type with every form.
        let needs_json = has_body || headers.contains_key(header::CONTENT_TYPE);
        if needs_json && !typed {
            return Some((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a request that changes state must be Content-Type: application/json",
            ));
        }
        None
    }

    /// Without a token the listener is on loopback (see
    /// [`Auth::from_config`]): open to local users, and to nobody else. A
    /// request that reached it from elsewhere all the same is refused, with
    /// why: one forwarded by a proxy on this machine; one addressed to a
    /// host name other than loopback's (a web page whose name resolves to
    /// 127.0.0.1, DNS rebinding); one a browser sends for a page of another
    /// origin (a form or `fetch` from any site the local browser shows,
    /// which needs no preflight for a `text/plain` POST to `/api/confirm`,
    /// `/api/safe` or `/api/reload`).
    fn refuses(&self, req: &Request<Incoming>) -> Option<&'static str> {
        if self.token.is_some() {
            return None;
        }
        let headers = req.headers();
        if headers.contains_key(header::FORWARDED) || headers.contains_key("x-forwarded-for") {
            return Some(
                "forwarded by a proxy: set the admin token to reach the admin API from elsewhere",
            );
        }
        let host = addressed_host(req);
        if host.is_some_and(|h| !loopback_authority(h)) {
            return Some("not addressed to a loopback host: set the admin token to reach the admin API from elsewhere");
        }
        if foreign_origin(headers, host) {
            return Some("sent from a page of another origin: refused without an admin token");
        }
        None
    }

    fn allows(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                // The scheme is case-insensitive (RFC 9110).
                let (scheme, token) = v.trim_start().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
            .map(str::trim);
        let cookie = cookie_value(req, COOKIE);
        let query = (req.uri().path() == "/")
            .then(|| query_param(req.uri().query(), "token"))
            .flatten();
        [bearer.map(str::to_string), cookie, query]
            .iter()
            .flatten()
            .any(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
    }
}

/// Whether a `Host` (`127.0.0.1:9090`, `[::1]:9090`, `localhost`) names
/// this machine's loopback.
fn loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        },
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Compares without an early exit, so timing does not reveal how much of a
/// guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

fn cookie_value(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(upstream::full(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    respond(status, "application/json", v.to_string())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_response(status, json!({ "error": message.into() }))
}

/// The admin request handler.
pub async fn handle(app: Arc<App>, auth: Auth, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return respond(StatusCode::OK, "text/plain", "ok\n");
    }
    if let Some(why) = auth.refuses(&req) {
        return error(StatusCode::FORBIDDEN, why);
    }
    if let Some((status, why)) = auth.refuses_change(&req) {
        return error(status, why);
    }
    if !auth.allows(&req) {
        return if path == "/" {
            respond(
                StatusCode::UNAUTHORIZED,
                "text/html; charset=utf-8",
                "<!doctype html><title>smsguard</title><p>not authorized: open the dashboard as /?token=...</p>",
            )
        } else {
            error(
                StatusCode::UNAUTHORIZED,
                "not authorized: a bearer token is required",
            )
        };
    }
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/") => dashboard(&auth, &req),
        (Method::GET, "/readyz") => readyz(&app),
        (Method::GET, "/metrics") => metrics(&app),
        (Method::GET, "/api/summary") => summary(&app).await,
        (Method::GET, "/api/decisions") => decisions(&app, &req),
        (Method::GET, "/api/blocks") => blocks(&app),
        (Method::GET, "/api/explain") => explain(&app, &req),
        (Method::GET, "/api/reconcile") => reconcile(&app),
        (Method::POST, "/api/blocks") => add_block(&app, req).await,
        (Method::DELETE, "/api/blocks") => remove_block(&app, &req),
        (Method::POST, "/api/confirm") => confirm(&app, req).await,
        (Method::POST, "/api/safe") => safe(&app, req, true).await,
        (Method::DELETE, "/api/safe") => safe(&app, req, false).await,
        (Method::POST, "/api/reload") => match app
            .reload(query_param(req.uri().query(), "accept_weaker").as_deref() == Some("true"))
        {
            Ok(()) => json_response(StatusCode::OK, json!({ "reloaded": true })),
            Err(e) => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "reloaded": false, "error": e }),
            ),
        },
        _ => error(StatusCode::NOT_FOUND, format!("no route {path}")),
    }
}

/// Reconciliation: the last look at Twilio's lists and what it found.
/// Never the credential (only the variables' names are in the file).
fn reconcile(app: &App) -> Response<Body> {
    let config = app.policy().config().clone();
    let (Some(r), Some(cfg)) = (&app.reconcile, &config.reconcile) else {
        return json_response(
            StatusCode::OK,
            json!({ "enabled": false, "why": "no [reconcile] section in the policy" }),
        );
    };
    let st = r.status();
    let sids = &r.sids.stats;
    json_response(
        StatusCode::OK,
        json!({
            "enabled": true,
            "account": r.account,
            "interval": crate::config::Short(cfg.interval).to_string(),
            "settle": crate::config::Short(cfg.settle).to_string(),
            "credential": cfg.credential_source(),
            "replica": r.id,
            "shared": r.sids.shared(),
            "last_result": st.last_result,
            "last_attempt": st.last_attempt,
            "last_error": st.last_error,
            "last_look": st.last_look,
            "unseen_reported_here": {
                "message": st.unseen_messages,
                "call": st.unseen_calls,
            },
            "sids": {
                "held": r.sids.len(),
                "recorded": sids.recorded.load(Ordering::Relaxed),
                "evicted": sids.evicted.load(Ordering::Relaxed),
                "waiting_for_redis": sids.waiting.load(Ordering::Relaxed),
                "dropped": sids.dropped.load(Ordering::Relaxed),
            },
        }),
    )
}

fn dashboard(auth: &Auth, req: &Request<Incoming>) -> Response<Body> {
    let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD);
    // The page's own API calls authenticate with this cookie, so the token
    // never has to live in the page.
    if let (Some(token), Some(_)) = (&auth.token, query_param(req.uri().query(), "token")) {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
        )) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:"),
    );
    r
}

fn metrics(app: &App) -> Response<Body> {
    let m = &app.watch.metrics;
    let policy = app.policy();
    let now = app.clock.now();
    m.blocks.clear();
    for (key, _) in policy.store().blocks(now) {
        let kind = key.split('=').next().unwrap_or("").to_string();
        m.blocks.get_or_create(&vec![("kind", kind)]).inc();
    }
    m.spent.clear();
    for (name, spent, _) in policy.budget_status(now) {
        let (window, region) = name.split_once(':').unwrap_or((&name, "*"));
        m.spent
            .get_or_create(&vec![
                ("window", window.to_string()),
                ("region", region.to_string()),
            ])
            .set(spent.0 as f64 / 1e6);
    }
    if let Some(b) = &app.balances {
        m.balance.clear();
        for (account, money) in b.known() {
            m.balance
                .get_or_create(&vec![("account", account)])
                .set(money.0 as f64 / 1e6);
        }
    }
    let st = policy.store().stats();
    for (table, n) in [
        ("counters", st.counters),
        ("backoffs", st.backoffs),
        ("blocks", st.blocks),
        ("offences", st.offences),
        ("classifications", app.classifier.cached()),
    ] {
        m.cache_entries
            .get_or_create(&vec![("table", table.to_string())])
            .set(n as i64);
    }
    m.evicted_live.set(st.evicted_live as i64);
    m.blocks_evicted_live.set(st.blocks_evicted_live as i64);
    type Counters = prometheus_client::metrics::family::Family<
        Vec<(&'static str, String)>,
        prometheus_client::metrics::counter::Counter,
    >;
    let set = |f: &Counters, key: &'static str, value: &str, n: &AtomicU64| {
        f.get_or_create(&vec![(key, value.to_string())])
            .inner()
            .store(n.load(Ordering::Relaxed), Ordering::Relaxed);
    };
    for (result, n) in crate::pipeline::callbacks::counters() {
        set(&m.status_callbacks, "result", result, n);
    }
    let l = &app.listener;
    set(&m.connections_closed, "reason", "silent", &l.silent);
    set(&m.connections_closed, "reason", "idle", &l.idle);
    set(&m.connections_closed, "reason", "per_ip", &l.over_per_ip);
    let c = &app.upstream.cuts;
    set(&m.streams_cut, "reason", "body_timeout", &c.idle);
    set(&m.streams_cut, "reason", "deadline", &c.deadline);
    m.log_dropped
        .inner()
        .store(crate::telemetry::log_lines_dropped(), Ordering::Relaxed);
    if let Some(r) = &app.reconcile {
        m.reconcile_sids.set(r.sids.len() as i64);
        m.reconcile_evicted.inner().store(
            r.sids.stats.evicted.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }
    if let Some(shared) = &app.shared {
        let link = shared.link();
        m.store_degraded.set(i64::from(!link.is_up()));
        m.store_unsynced.set(shared.unsynced() as i64);
        let st = &shared.stats;
        set(&m.store_sends, "judged", "shared", &st.shared);
        set(&m.store_sends, "judged", "fallback", &st.fallback);
        let l = link.stats();
        for (what, n) in [
            ("calls", &l.calls),
            ("round_trips", &l.round_trips),
            ("errors", &l.errors),
            ("timeouts", &l.timeouts),
            ("fast_failures", &l.fast_failures),
            ("script_loads", &l.script_loads),
            ("probes", &l.probes),
            ("degradations", &l.degradations),
            ("write_errors", &st.write_errors),
            ("sync_errors", &st.sync_errors),
        ] {
            set(&m.redis, "what", what, n);
        }
    }
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        m.encode(),
    )
}

/// The activity of this replica, or with a shared store of the whole
/// fleet (the replicas' published summaries added up; `replicas` says how
/// many, `fleet_error` why only this one's when Redis cannot be read).
async fn summary(app: &App) -> Response<Body> {
    let now = app.clock.now();
    let mut s = app.watch.activity.summary(now);
    let mut fleet_error = None;
    if let Some(fleet) = &app.fleet {
        match fleet.summaries().await {
            Ok(others) => {
                let mut parts = vec![s];
                for (id, json) in others {
                    match serde_json::from_str::<crate::telemetry::activity::Summary>(&json) {
                        Ok(p)
                            if now.saturating_sub(p.now) <= crate::store::fleet::SUMMARY_STALE =>
                        {
                            parts.push(p)
                        }
                        _ => {
                            let _ = fleet.drop_summary(&id).await;
                        }
                    }
                }
                s = crate::telemetry::activity::merge(parts);
            }
            Err(e) => fleet_error = Some(e.to_string()),
        }
    }
    let policy = app.policy();
    s.conversion.adaptive = policy.config().adaptive.is_some();
    s.money.priced = policy.config().budget.is_some();
    let mut v = serde_json::to_value(s).unwrap_or_default();
    // The budget's windows as they stand (the fleet's spend with a shared
    // store), and the currency every money figure is in.
    if let Some(b) = &policy.config().budget {
        let windows: Vec<serde_json::Value> = policy
            .budget_status(now)
            .into_iter()
            .map(|(window, spent, cap)| {
                json!({ "window": window, "spent": spent.0, "cap": cap.map(|c| c.0) })
            })
            .collect();
        v["budget"] = json!({ "currency": b.currency, "windows": windows });
    }
    if let (Some(e), Some(o)) = (fleet_error, v.as_object_mut()) {
        o.insert("fleet_error".into(), e.into());
    }
    json_response(StatusCode::OK, v)
}

/// Ready while the guard judges sends: always, since a guard whose Redis
/// is down still judges (by `store.on_error`); the text says so, for
/// probes and people that look.
fn readyz(app: &App) -> Response<Body> {
    let text = match &app.shared {
        Some(shared) => match shared.link().health() {
            crate::store::redis::Health::Up => "ready\n".to_string(),
            crate::store::redis::Health::Degraded { last_error, .. } => format!(
                "ready, degraded: shared state unavailable (redis: {last_error}); judging with store.on_error = {}\n",
                shared.on_error().as_str()
            ),
        },
        None => "ready\n".to_string(),
    };
    respond(StatusCode::OK, "text/plain", text)
}

fn decisions(app: &App, req: &Request<Incoming>) -> Response<Body> {
    let q = req.uri().query();
    let f = Filter {
        action: query_param(q, "action").filter(|s| !s.is_empty()),
        region: query_param(q, "region").filter(|s| !s.is_empty()),
        // `?prefix=+4478` with its '+' not encoded arrives as " 4478": it
        // is the number it obviously is.
        prefix: query_param(q, "prefix")
            .map(|p| match p.strip_prefix(' ') {
                Some(d) if d.starts_with(|c: char| c.is_ascii_digit()) => format!("+{d}"),
                _ => p,
            })
            .filter(|s| !s.trim().is_empty()),
        limit: query_param(q, "limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(100),
    };
    // Each with its time as RFC 3339 (`at`) beside the epoch milliseconds.
    let list: Vec<serde_json::Value> = app
        .watch
        .activity
        .recent(&f)
        .into_iter()
        .map(|r| {
            let at = crate::base::clock::rfc3339(r.time);
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["at"] = at.into();
            v
        })
        .collect();
    json_response(StatusCode::OK, json!({ "decisions": list }))
}

/// `GET /api/explain?to=NUMBER[&ip=IP][&user=ID][&account=SID][&product=P]`:
/// how the running guard would judge that send now, stage by stage, from
/// what it remembers (blocks, counters, backoff, spend, adaptive figures,
/// vouching); nothing it remembers changes. Without `ip`, rules on the
/// client address do not apply (as for a send without the header); without
/// `account`, the account of the latest decision is used.
fn explain(app: &App, req: &Request<Incoming>) -> Response<Body> {
    use crate::policy::{Attempt, BalanceView, StageOutcome};
    use crate::twilio::routes::Product;
    let q = req.uri().query();
    let Some(to) = query_param(q, "to").filter(|t| !t.trim().is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "give the number as ?to=+E164 (the '+' as %2B or as is)",
        );
    };
    let product = match query_param(q, "product").as_deref().unwrap_or("messaging") {
        "messaging" => Product::Messaging,
        "voice" => Product::Voice,
        "verify" => Product::Verify,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("product {other:?}: expected messaging, voice or verify"),
            )
        }
    };
    let policy = app.policy();
    let config = policy.config();
    let dest = match crate::phone::normalize(&to, config.numbers.default_region) {
        Ok(d) => d,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("to {to:?}: {e}: a send to it is refused as invalid (Twilio error 21211)"),
            )
        }
    };
    let ip = match query_param(q, "ip").filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => match raw.trim().parse::<IpAddr>() {
            Ok(ip) => Some(crate::base::context::key_ip(
                ip,
                config.numbers.client_ipv6_prefix,
            )),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("ip {raw:?}: not an IP address"),
                )
            }
        },
    };
    let user = query_param(q, "user")
        .filter(|u| !u.is_empty())
        .map(|u| crate::base::context::user_key(u.as_bytes()));
    let account = query_param(q, "account")
        .filter(|a| !a.is_empty())
        .or_else(|| {
            let latest = Filter {
                action: None,
                region: None,
                prefix: None,
                limit: 1,
            };
            app.watch
                .activity
                .recent(&latest)
                .into_iter()
                .map(|r| r.account)
                .find(|a| !a.is_empty())
        })
        .unwrap_or_default();
    let class = app.classifier.classify(&dest.e164);
    let attempt = Attempt {
        product,
        account: &account,
        to: &dest,
        class,
        client_ip: ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        end_user_ip: ip.is_some(),
        user: user.as_deref(),
        segments: 1,
        media: 0,
        content: None,
        balance: BalanceView::NotAsked,
    };
    let d = policy.explain_live(&attempt, app.clock.now());
    let region = class.region.map_or("none".to_string(), |r| r.to_string());
    let text = format!(
        "number   {} region={region} type={} valid={}\n{}",
        dest.e164,
        class.kind.as_str(),
        class.valid,
        d.explained()
    );
    let stages: Vec<_> = d
        .trace
        .iter()
        .map(|(stage, outcome)| match outcome {
            StageOutcome::Pass(why) => {
                json!({ "stage": stage.as_str(), "outcome": "pass", "why": why })
            }
            StageOutcome::Skipped => json!({ "stage": stage.as_str(), "outcome": "skip" }),
            StageOutcome::Block(v) => json!({
                "stage": stage.as_str(),
                "outcome": v.action.as_str(),
                "rule": v.rule,
                "detail": v.detail,
            }),
        })
        .collect();
    let deciding = d.deciding();
    json_response(
        StatusCode::OK,
        json!({
            "to": dest.e164,
            "region": region,
            "type": class.kind.as_str(),
            "account": account,
            "action": d.action.as_str(),
            "stage": deciding.map(|v| v.stage.as_str()),
            "rule": deciding.map(|v| v.rule.clone()),
            "detail": deciding.and_then(|v| v.detail.clone()),
            "vouched": d.vouched,
            "stages": stages,
            "text": text,
        }),
    )
}

fn blocks(app: &App) -> Response<Body> {
    let policy = app.policy();
    let list: Vec<_> = policy
        .store()
        .blocks(app.clock.now())
        .into_iter()
        .map(|(key, b)| {
            json!({
                "key": key,
                "rule": b.rule.as_ref(),
                "action": b.action.as_str(),
                "since": b.since,
                "until": b.until,
                "offence": b.offence,
            })
        })
        .collect();
    json_response(StatusCode::OK, json!({ "blocks": list }))
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    req: Request<Incoming>,
) -> Result<T, Response<Body>> {
    let bytes = Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large or unreadable",
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBlock {
    key: String,
    value: String,
    duration: String,
    action: Option<String>,
}

async fn add_block(app: &App, req: Request<Incoming>) -> Response<Body> {
    let b: NewBlock = match read_json(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed = (|| -> Result<BlockRequest, String> {
        Ok(BlockRequest {
            key: b.key.parse()?,
            value: b.value.clone(),
            duration: humantime::parse_duration(&b.duration)
                .map_err(|e| format!("duration {:?}: {e}", b.duration))?,
            action: b.action.as_deref().map(str::parse::<Action>).transpose()?,
        })
    })();
    let req = match parsed {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if req.duration > Duration::from_secs(366 * 24 * 3600) {
        return error(StatusCode::BAD_REQUEST, "a block lasts at most a year");
    }
    match app.policy().add_block(&req, app.clock.now()) {
        Ok(key) => {
            tracing::info!(%key, "block added by the admin API");
            json_response(StatusCode::CREATED, json!({ "key": key }))
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// `{"to": "+447911123456"}`: the app's own word that the recipient of
/// the last send to this number proved receipt (for apps that check their
/// own codes and send no Feedback to Twilio).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirmation {
    to: String,
}

async fn confirm(app: &App, req: Request<Incoming>) -> Response<Body> {
    let c: Confirmation = match read_json(req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let config = app.policy().config().clone();
    if config.adaptive.is_none() {
        return error(
            StatusCode::CONFLICT,
            "no [adaptive] section in the policy: confirmations are not used",
        );
    }
    match app.confirm(&c.to, "api") {
        Ok(true) => json_response(StatusCode::OK, json!({ "confirmed": true })),
        Ok(false) => json_response(
            StatusCode::OK,
            json!({
                "confirmed": false,
                "reason": "no forwarded send to this number awaits a confirmation: none was sent recently, or it was confirmed already",
            }),
        ),
        Err(e) => error(StatusCode::BAD_REQUEST, format!("to: {e}")),
    }
}

fn remove_block(app: &App, req: &Request<Incoming>) -> Response<Body> {
    let Some(key) = query_param(req.uri().query(), "key") else {
        return error(StatusCode::BAD_REQUEST, "give the block as ?key=KIND=VALUE");
    };
    if app.policy().remove_block(&key) {
        tracing::info!(%key, "block removed by the admin API");
        respond(StatusCode::NO_CONTENT, "application/json", "")
    } else {
        error(StatusCode::NOT_FOUND, format!("no active block {key}"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SafeEdit {
    number: Option<String>,
    prefix: Option<String>,
}

/// Edits the running safe list (until the next reload from the file).
async fn safe(app: &App, req: Request<Incoming>, add: bool) -> Response<Body> {
    let e: SafeEdit = match read_json(req).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let (prefix, value) = match (e.number, e.prefix) {
        (Some(n), None) => (false, n),
        (None, Some(p)) => (true, p),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give exactly one of number or prefix",
            )
        }
    };
    let value = if prefix {
        value
    } else {
        match crate::phone::normalize(&value, None) {
            Ok(d) => d.e164,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{value:?} is not an E.164 number"),
                )
            }
        }
    };
    if let Err(e) = app.edit_safe(prefix, &value, add) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    if let Some(fleet) = &app.fleet {
        // Every replica applies it now, and any replica that starts later.
        fleet.publish(crate::store::fleet::Event::Safe {
            prefix,
            value: value.clone(),
            add,
        });
        if let Err(e) = fleet.save_safe(prefix, &value, add).await {
            tracing::warn!(error = %e, "safe-list edit not saved in redis: other replicas apply it, a restart forgets it");
        }
    }
    let config = app.policy().config().clone();
    let counts = json!({
        "safe": config.numbers.safe.len(),
        "safe_prefixes": config.numbers.safe_prefixes.len(),
    });
    json_response(StatusCode::OK, counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_told_from_others() {
        for host in [
            "127.0.0.1:9090",
            "127.0.0.1",
            "[::1]:9090",
            "localhost:9090",
            "LOCALHOST",
            "127.1.2.3:1",
        ] {
            assert!(loopback_authority(host), "{host}");
        }
        for host in [
            "evil.example:9090",
            "localhost.evil.example",
            "10.0.0.5:9090",
            "[::ffff:10.0.0.5]:9090",
            "0.0.0.0:9090",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert!(!loopback_authority(host), "{host}");
        }
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
