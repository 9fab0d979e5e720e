//! One request's way through the guard, from its dispatch ([`handle`]):
//! a send goes to `send`, which reads, classifies, judges, acts and
//! records in phases; a verification check and message feedback are
//! confirmations (`verification_check`, `feedback`); a GET (or DELETE)
//! of a resource the guard faked is answered here (`fake_answer`); the
//! rest is streamed to Twilio untouched (`forward_stream`). Beside it:
//! the CONNECT and plain-HTTP dispatch that hands a request here
//! ([`egress`]), the shadow fakes and their pacing ([`shadow`]), the
//! account balance poller ([`balance`]) and the conversion evidence
//! ([`conversion`]).
//!
//! Non-sends are streamed through untouched. A send is read whole (bounded),
//! parsed strictly, judged, and then forwarded with its body bytes exactly as
//! received (bar `RiskCheck=disable`), or answered here. A send that cannot
//! be read with certainty is answered with a Twilio-shaped error and never
//! reaches Twilio. A decision becomes an HTTP response only in `send::act`.

pub mod balance;
pub mod callbacks;
pub mod conversion;
pub mod egress;
pub mod reconcile;
mod send;
pub mod shadow;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Limited};
use hyper::body::Incoming;

use crate::base::clock::Clock;
use crate::config::Config;
use crate::net::upstream::{self, Body, Target, Upstream, UpstreamError};
use crate::phone::Classifier;
use crate::pipeline::balance::Balances;
use crate::pipeline::shadow::{FakeStore, LatencyModel};
use crate::policy::BalanceView;
use crate::policy::{Attempt, Policy};
use crate::store::fleet::{Event, Fleet, Lead, Turn};
use crate::store::Store;
use crate::telemetry::activity::Activity;
use crate::telemetry::alerts::Alerts;
use crate::telemetry::audit::Audit;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::{self, DecisionEvent, Watch};
use crate::twilio::form;
use crate::twilio::responses::{self, TwilioError};
use crate::twilio::routes::{self, Endpoint, Route};
use conversion::SentSids;

/// The Twilio host a request was addressed to when the guard intercepted it
/// (CONNECT or TLS SNI); absent in base-URL mode. Carried in the request's
/// extensions.
#[derive(Clone, Debug)]
pub struct Intercepted(pub Arc<str>);

/// Where to forward: an intercepted main host goes to its configured
/// upstream (tests and DNS mode may point those elsewhere); any other
/// intercepted host (regional, or configured) to that same host.
fn target<'a>(route: &Route, intercepted: Option<&'a Intercepted>) -> Target<'a> {
    match intercepted.map(|i| i.0.as_ref()) {
        Some("api.twilio.com") => Target::Configured(routes::Upstream::Api),
        Some("verify.twilio.com") => Target::Configured(routes::Upstream::Verify),
        Some(host) => Target::Host(host),
        None => Target::Configured(route.upstream),
    }
}

pub use crate::base::context::{CLIENT_IP_HEADER, USER_HEADER};

/// Longest request path the guard reads.
const MAX_PATH: usize = 8 * 1024;

/// Headers some servers read as "use this method instead": never forwarded,
/// so a send cannot travel as a GET that becomes a POST upstream.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Everything a request needs, shared by all connections.
/// Receives every decision event (the demo's tally, the admin's recent list).
pub type DecisionSink = Arc<dyn Fn(&DecisionEvent) + Send + Sync>;

pub struct App {
    policy: RwLock<Arc<Policy>>,
    sink: std::sync::OnceLock<DecisionSink>,
    pub classifier: Classifier,
    pub fakes: FakeStore,
    pub latency: LatencyModel,
    pub balances: Option<Balances>,
    /// Sids of forwarded sends, for confirmations that name only a sid.
    pub sids: SentSids,
    pub watch: Watch,
    /// The policy file, for reloads (none when started from text).
    config_path: RwLock<Option<std::path::PathBuf>>,
    /// Domains named in answers made here (`X-API-Domain`).
    api_domain: String,
    verify_domain: String,
    pub upstream: Upstream,
    pub clock: Arc<dyn Clock>,
    /// Connections the listener closed or refused (for metrics).
    pub listener: Arc<crate::net::server::ListenerStats>,
    /// State shared with other replicas through Redis, when configured.
    pub shared: Option<Arc<crate::store::shared::SharedStore>>,
    /// What this replica tells the others (and learns from them).
    pub fleet: Option<Arc<Fleet>>,
    /// The fleet's safe-list edits applied here: (prefix?, value, add?).
    fleet_safe: Mutex<Vec<(bool, String, bool)>>,
    /// `[reconcile]`: the sids forwarded and the looks at Twilio's lists.
    pub reconcile: Option<Arc<reconcile::Reconciler>>,
}

impl App {
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<App, String> {
        let upstream = Upstream::new(&config.upstream)?;
        let audit = match &config.audit {
            Some(a) => Some(Audit::open(&a.file, a.max_size as u64, a.keep)?),
            None => None,
        };
        let watch = Watch {
            metrics: Metrics::default(),
            activity: Activity::default(),
            audit,
            alerts: config
                .alerts
                .as_ref()
                .map(|a| Alerts::start(a, upstream.clone())),
            mask_numbers: config.log.mask_numbers,
        };
        let reconcile = match &config.reconcile {
            Some(r) => Some(Arc::new(reconcile::Reconciler::new(
                r,
                config.log.prefix_digits,
                None,
            )?)),
            None => None,
        };
        Ok(App {
            reconcile,
            watch,
            config_path: RwLock::new(None),
            classifier: Classifier::new(config.numbers.cache),
            fakes: {
                let f = FakeStore::new(config.shadow.capacity, config.shadow.retention);
                f.set_final_status(config.shadow.final_status);
                f
            },
            latency: LatencyModel::new(&config.shadow),
            balances: config.balance.as_ref().map(|b| Balances::new(b.refresh)),
            sids: SentSids::new(config.adaptive.as_ref().map_or(1, |a| a.capacity)),
            api_domain: twilio_domain(&config.upstream.api, "api.twilio.com"),
            verify_domain: twilio_domain(&config.upstream.verify, "verify.twilio.com"),
            policy: RwLock::new(Arc::new(Policy::new(config, store))),
            sink: std::sync::OnceLock::new(),
            upstream,
            clock,
            listener: Arc::default(),
            shared: None,
            fleet: None,
            fleet_safe: Mutex::default(),
        })
    }

    /// Judges with `shared` (which must also be the policy's store).
    pub fn with_shared(
        mut self,
        shared: Arc<crate::store::shared::SharedStore>,
        fleet: Arc<Fleet>,
    ) -> App {
        // Fakes made here are answered by every replica.
        self.fakes.attach(shared.link().clone());
        // The forwarded sids too: any replica may be the one that lists.
        if let Some(r) = &self.policy().config().reconcile {
            let prefix_digits = self.policy().config().log.prefix_digits;
            match reconcile::Reconciler::new(r, prefix_digits, Some(shared.link().clone())) {
                Ok(rec) => self.reconcile = Some(Arc::new(rec)),
                // Read from the same environment a moment ago in `new`.
                Err(e) => tracing::error!(error = %e, "reconcile: not shared"),
            }
        }
        self.shared = Some(shared);
        self.fleet = Some(fleet);
        self
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn domain(&self, route: &Route) -> &str {
        match route.upstream {
            routes::Upstream::Api => &self.api_domain,
            routes::Upstream::Verify => &self.verify_domain,
        }
    }

    /// Sends every later decision event to `sink` too (set once).
    pub fn set_decision_sink(&self, sink: DecisionSink) -> bool {
        self.sink.set(sink).is_ok()
    }

    fn record(&self, event: &DecisionEvent) {
        let masked;
        let event = if self.watch.mask_numbers {
            let mut e = event.clone();
            e.mask();
            masked = e;
            &masked
        } else {
            event
        };
        telemetry::record(event);
        self.watch.record(event, self.clock.now());
        if let Some(s) = self.sink.get() {
            s(event);
        }
    }

    pub fn set_config_path(&self, path: std::path::PathBuf) {
        *self.config_path.write().unwrap_or_else(|p| p.into_inner()) = Some(path);
    }

    /// Reads the policy file again and swaps the policy in atomically; a
    /// bad file keeps the running policy and its error is returned
    /// (`FILE:LINE:COL: message`). Listener, upstream and shadow settings
    /// keep their values until a restart.
    ///
    /// A reload never silently weakens the running policy: a file that
    /// judges nothing (empty, comments only) or has lost protections the
    /// running one has (a section, a limit, the geo list) is refused, with
    /// an alert, unless `accept_weaker` says the weakening is meant. Editors
    /// and config tools write files in steps; a half-written policy must
    /// never become the running one.
    pub fn reload(&self, accept_weaker: bool) -> Result<(), String> {
        let path = self
            .config_path
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or("the guard was not started from a file")?;
        let config = Config::load(&path).map_err(|e| e.to_string())?;
        if !accept_weaker {
            let why = if config.protections().is_empty() {
                Some(format!(
                    "{}: the policy judges nothing (empty or comments only?)",
                    path.display()
                ))
            } else {
                let lost = config.lost_from(self.policy().config());
                (!lost.is_empty()).then(|| {
                    format!(
                        "{}: the policy would lose {} that the running one has",
                        path.display(),
                        lost.join(", ")
                    )
                })
            };
            if let Some(why) = why {
                let why = format!("{why}; refused, the running policy stays (reload with accept_weaker to weaken it on purpose)");
                if let Some(a) = &self.watch.alerts {
                    a.reload_refused(&why, self.clock.now());
                }
                return Err(why);
            }
        }
        self.replace_policy(Arc::new(config));
        // With a shared store, the fleet's safe-list edits outlive reloads.
        let edits = self
            .fleet_safe
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (prefix, value, add) in edits {
            let _ = self.edit_safe_only(prefix, &value, add);
        }
        tracing::info!(file = %path.display(), "policy reloaded");
        Ok(())
    }

    /// A confirmation that the recipient of the last send to `to` got it;
    /// `via` names where it was seen (`verify`, `feedback`, `api`).
    /// `Ok(false)` when no forwarded send awaited one: it then counts
    /// nowhere; an error when `to` is not a number.
    pub fn confirm(&self, to: &str, via: &'static str) -> Result<bool, crate::phone::NumberError> {
        let policy = self.policy();
        let dest = crate::phone::normalize(to, policy.config().numbers.default_region)?;
        let class = self.classifier.classify(&dest.e164);
        let now = self.clock.now();
        let matched = policy.confirm(&dest, &class, now);
        if let (Some(f), true) = (&self.fleet, policy.config().adaptive.is_some()) {
            // Every replica credits it (the send may have gone out through
            // another one).
            f.publish(Event::Confirmed {
                at: now,
                to: dest.e164.clone(),
                applied: matched,
            });
        }
        let region = class.region;
        self.watch.confirmed(
            via,
            region.as_ref().map(|r| r.as_str()),
            dest.prefix(policy.config().log.prefix_digits as usize),
            matched,
            now,
        );
        Ok(matched)
    }

    /// Adds a number or prefix to the safe list of the running policy, or
    /// takes it off; whether that changed it. With a shared store the edit
    /// is the fleet's: it is kept and applied again after every reload.
    pub fn edit_safe(&self, prefix: bool, value: &str, add: bool) -> Result<bool, String> {
        let changed = self.edit_safe_only(prefix, value, add)?;
        if self.fleet.is_some() {
            let mut edits = self.fleet_safe.lock().unwrap_or_else(|p| p.into_inner());
            edits.retain(|(p, v, _)| !(*p == prefix && v == value));
            edits.push((prefix, value.to_string(), add));
        }
        Ok(changed)
    }

    fn edit_safe_only(&self, prefix: bool, value: &str, add: bool) -> Result<bool, String> {
        let mut config = (**self.policy().config()).clone();
        let before = (
            config.numbers.safe.clone(),
            config.numbers.safe_prefixes.clone(),
        );
        if prefix {
            let digits = value.strip_prefix('+').unwrap_or("");
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("prefix {value:?} must be '+' and digits"));
            }
            config.numbers.safe_prefixes.retain(|x| x != value);
            if add {
                config.numbers.safe_prefixes.push(value.to_string());
            }
        } else {
            let Ok(d) = crate::phone::normalize(value, None) else {
                return Err(format!("{value:?} is not an E.164 number"));
            };
            let list = &mut config.numbers.safe;
            list.retain(|x| crate::phone::normalize(x, None).map(|x| x.e164) != Ok(d.e164.clone()));
            if add {
                list.push(d.e164);
            }
        }
        let changed = {
            let (n, p) = &before;
            let mut a = n.clone();
            let mut b = config.numbers.safe.clone();
            a.sort();
            b.sort();
            a != b || {
                let mut a = p.clone();
                let mut b = config.numbers.safe_prefixes.clone();
                a.sort();
                b.sort();
                a != b
            }
        };
        if changed {
            self.replace_policy(Arc::new(config));
        }
        Ok(changed)
    }

    /// Takes in what another replica learned (see [`crate::store::fleet`]);
    /// `mine` when this replica wrote it.
    pub fn apply(&self, mine: bool, e: Event) {
        let policy = self.policy();
        match e {
            Event::Forwarded { .. } if mine => {}
            Event::Forwarded {
                at,
                product,
                account,
                to,
                client_ip,
                user,
            } => {
                let dest = crate::phone::Destination {
                    channel: crate::phone::Channel::Sms,
                    e164: to,
                };
                let a = Attempt {
                    product,
                    account: &account,
                    to: &dest,
                    class: self.classifier.classify(&dest.e164),
                    client_ip: client_ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
                    end_user_ip: client_ip.is_some(),
                    user: user.as_deref(),
                    segments: 1,
                    media: 0,
                    content: None,
                    balance: BalanceView::NotAsked,
                };
                policy.learn_forwarded(&a, at);
            }
            Event::Confirmed { applied: true, .. } if mine => {}
            Event::Confirmed { at, to, .. } => {
                let dest = crate::phone::Destination {
                    channel: crate::phone::Channel::Sms,
                    e164: to,
                };
                let class = self.classifier.classify(&dest.e164);
                policy.confirm(&dest, &class, at);
            }
            Event::Dispersed { .. } if mine => {}
            Event::Dispersed {
                at,
                product,
                region,
                to,
            } => {
                let to = to.map(|e164| crate::phone::Destination {
                    channel: crate::phone::Channel::Sms,
                    e164,
                });
                let class = to.as_ref().map(|d| self.classifier.classify(&d.e164));
                let ranges = to.as_ref().zip(class.as_ref());
                policy.learn_dispersed(product, &region, ranges, at);
            }
            Event::Safe { .. } if mine => {}
            Event::Safe { prefix, value, add } => {
                if let Err(e) = self.edit_safe(prefix, &value, add) {
                    tracing::warn!(error = %e, "a safe-list edit from another replica was not applied");
                }
            }
        }
    }

    /// Applies every event of the fleet's log not applied here yet (at
    /// start, then every `store.near_cache`, so an idle replica keeps up;
    /// a judged send reads its own share first, in its pipeline).
    /// Returns how many events of other replicas were applied.
    pub async fn catch_up(&self) -> u64 {
        let Some(fleet) = &self.fleet else {
            return 0;
        };
        let started = std::time::Instant::now();
        let mut applied = 0u64;
        loop {
            match fleet.read_new().await {
                Ok(tail) => {
                    let more = tail.full;
                    applied += fleet.apply(tail, |mine, e| self.apply(mine, e));
                    if !more {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "fleet events not read");
                    break;
                }
            }
        }
        if started.elapsed() > std::time::Duration::from_secs(1) {
            tracing::info!(events = applied, took = ?started.elapsed(), "fleet events applied");
        }
        applied
    }

    /// Before a send the adaptive stage judges, its turn at the fleet's
    /// log ([`Fleet::turn`]): `None` without a fleet or an adaptive stage.
    pub(crate) fn fleet_turn(&self, policy: &Policy) -> Option<Turn<'_>> {
        match &self.fleet {
            Some(f) if policy.config().adaptive.is_some() => Some(f.turn()),
            _ => None,
        }
    }

    /// Learns what the send's own script read of the fleet's log
    /// (`answer`, for the sends waiting too), before it is judged: its
    /// judgement counts every send another replica forwarded before it
    /// arrived. A failed read changes nothing (the timer reads it later).
    pub(crate) fn learn_carried(
        &self,
        lead: Lead<'_>,
        answer: Option<Result<::redis::Value, crate::store::redis::LinkError>>,
    ) {
        if let Err(e) = lead.finish(answer, |mine, e| self.apply(mine, e)) {
            tracing::debug!(error = %e, "fleet events not read before judging");
        }
    }

    /// [`App::learn_carried`] for a send that waits for a read that left
    /// after it arrived ([`Fleet::wait`]).
    pub(crate) async fn learn_waited(&self, ticket: u64) {
        let Some(fleet) = &self.fleet else {
            return;
        };
        if let Err(e) = fleet.wait(ticket, |mine, e| self.apply(mine, e)).await {
            tracing::debug!(error = %e, "fleet events not read before judging");
        }
    }

    /// Swaps the policy atomically; requests in flight finish on the old one.
    pub fn replace_policy(&self, config: Arc<Config>) {
        self.fakes.set_final_status(config.shadow.final_status);
        let store = self.policy().store().clone();
        let next = Arc::new(Policy::new(config, store));
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = next;
    }
}

/// The guard's request handler: a send goes to `send::handle_send`;
/// anything else is a confirmation, a fake the guard answers for, or
/// streamed to Twilio untouched.
pub async fn handle(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    // Matching a path tries every way a server could read it; a huge,
    // crafted path would make that costly. No Twilio path comes near this.
    if req.uri().path().len() > MAX_PATH {
        return path_too_long();
    }
    let route = routes::route(req.method(), req.uri().path());
    if let Some(resp) = refuse_send_not_posted(&app, &req, &route, peer, started) {
        return resp;
    }
    if route.endpoint.send_product().is_some() {
        return send::handle_send(&app, req, route, peer, started).await;
    }
    if req.method() == http::Method::DELETE {
        if let Some(resp) = delete_fake(&app, req.headers(), req.uri().path(), started).await {
            return resp;
        }
    }
    match &route.endpoint {
        Endpoint::MessageFetch { sid, .. }
        | Endpoint::CallFetch { sid, .. }
        | Endpoint::VerificationFetch { sid, .. }
            if req.method() == http::Method::GET =>
        {
            if let Some(fake) = app.fakes.get_shared(sid).await {
                return fake_answer(&app, &route, req.headers(), req.uri().path(), fake, started);
            }
            forward_stream(&app, req, route).await
        }
        Endpoint::ParticipantFetch {
            conference_sid,
            sid,
            ..
        } if req.method() == http::Method::GET => {
            if let Some(fake) = app.fakes.participant_shared(conference_sid, sid).await {
                return fake_answer(&app, &route, req.headers(), req.uri().path(), fake, started);
            }
            forward_stream(&app, req, route).await
        }
        Endpoint::VerificationCheck { .. } => verification_check(&app, req, route, started).await,
        Endpoint::MessageFeedback { .. } if req.method() == http::Method::POST => {
            feedback(&app, req, route, started).await
        }
        _ => forward_stream(&app, req, route).await,
    }
}

/// The answer to a path longer than [`MAX_PATH`]: 414, never routed.
fn path_too_long() -> Response<Body> {
    let e = TwilioError::new(
        StatusCode::URI_TOO_LONG,
        20414,
        format!("The request path is longer than {MAX_PATH} bytes"),
    );
    let mut resp = Response::new(upstream::full(e.body()));
    *resp.status_mut() = e.status;
    resp
}

/// A method other than POST on a path that is a send under POST (`post`,
/// `PUT`, `PATCH`, ...): whether Twilio would take it as a send is not ours
/// to bet on. Fail closed: recorded as malformed and refused with 405.
/// `None` for any other request.
fn refuse_send_not_posted(
    app: &App,
    req: &Request<Incoming>,
    route: &Route,
    peer: SocketAddr,
    started: Instant,
) -> Option<Response<Body>> {
    if route.endpoint.send_product().is_some() || !might_send(req.method()) {
        return None;
    }
    let as_post = routes::route(&http::Method::POST, req.uri().path());
    // Not a send under POST either: nothing to refuse.
    as_post.endpoint.send_product()?;
    let peer_ip = peer.ip();
    let mut event = DecisionEvent::new(as_post.endpoint.name(), &peer_ip, None);
    event.malformed(&format!("method {} on a send path", req.method()));
    app.record(&event);
    let e = TwilioError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        20004,
        format!("Method not allowed: a send is a POST, not {}", req.method()),
    );
    Some(error_response(app, &as_post, &e, started.elapsed()))
}

/// Deleting a message the guard shadowed: Twilio deletes one that exists
/// and answers 204; forwarded, its 404 would expose the fake. `None` when
/// the path names no fake message.
async fn delete_fake(
    app: &App,
    headers: &HeaderMap,
    path: &str,
    started: Instant,
) -> Option<Response<Body>> {
    let as_get = routes::route(&http::Method::GET, path);
    let Endpoint::MessageFetch { account_sid, sid } = &as_get.endpoint else {
        return None;
    };
    let fake = app.fakes.get_shared(sid).await?;
    if let Some(e) = fake_refusal(headers, Some(account_sid), &fake, path) {
        return Some(error_response(app, &as_get, &e, started.elapsed()));
    }
    let mut resp = Response::new(upstream::full(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    *resp.headers_mut() = responses::twilio_headers(app.domain(&as_get), started.elapsed());
    resp.headers_mut().remove(header::CONTENT_TYPE);
    Some(resp)
}

/// A fake fetched by GET, answered as Twilio answers its own resources:
/// the resource to a request with credentials under its account, 401 or
/// 404 otherwise ([`fake_refusal`]).
fn fake_answer(
    app: &App,
    route: &Route,
    headers: &HeaderMap,
    path: &str,
    fake: Bytes,
    started: Instant,
) -> Response<Body> {
    let account = match &route.endpoint {
        Endpoint::MessageFetch { account_sid, .. }
        | Endpoint::CallFetch { account_sid, .. }
        | Endpoint::ParticipantFetch { account_sid, .. } => Some(account_sid.as_str()),
        _ => None,
    };
    if let Some(e) = fake_refusal(headers, account, &fake, path) {
        return error_response(app, route, &e, started.elapsed());
    }
    let mut resp = Response::new(upstream::full(fake));
    *resp.headers_mut() = responses::twilio_headers(app.domain(route), started.elapsed());
    resp
}

/// Why Twilio would not show the fake `fake` to this request, if it would
/// not: no Basic credentials, or a user that is neither an account sid nor
/// an API key (401, 20003); a path under another account than the fake's
/// (404, 20404). The secret is Twilio's to check: the guard never keeps one.
fn fake_refusal(
    headers: &HeaderMap,
    path_account: Option<&str>,
    fake: &[u8],
    path: &str,
) -> Option<TwilioError> {
    let user = basic_user(headers);
    let sid_like = |u: &str| {
        u.len() == 34
            && (u.starts_with("AC") || u.starts_with("SK"))
            && u[2..].bytes().all(|b| b.is_ascii_hexdigit())
    };
    match user {
        None => {
            return Some(TwilioError::new(
                StatusCode::UNAUTHORIZED,
                20003,
                "Authentication Error - No credentials provided",
            ))
        }
        Some(u) if !sid_like(&u) => {
            return Some(TwilioError::new(
                StatusCode::UNAUTHORIZED,
                20003,
                "Authentication Error - invalid username",
            ))
        }
        Some(_) => {}
    }
    let owner = serde_json::from_slice::<serde_json::Value>(fake)
        .ok()
        .and_then(|v| v.get("account_sid")?.as_str().map(str::to_string));
    match (path_account, owner) {
        (Some(p), Some(o)) if p != o => Some(TwilioError::not_found(path)),
        _ => None,
    }
}

/// Methods that read or remove and never create: anything else on a send
/// path could be taken as a send somewhere.
fn might_send(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::DELETE
    )
}

/// A check of a verification the guard shadowed is answered as Twilio
/// answers a check with no pending verification; any other check goes to
/// Twilio unchanged.
async fn verification_check(
    app: &App,
    req: Request<Incoming>,
    route: Route,
    started: Instant,
) -> Response<Body> {
    let Endpoint::VerificationCheck { service_sid } = &route.endpoint else {
        return forward_stream(app, req, route).await;
    };
    let service_sid = service_sid.clone();
    let limit = app.policy().config().listen.max_body;
    let (parts, body) = req.into_parts();
    let bytes = match read_whole(app, &route, body, limit, started).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if let Ok(form) = form::Form::parse(&bytes) {
        let by_sid = match form.one("VerificationSid").ok().flatten() {
            Some(sid) => app.fakes.get_shared(sid).await.is_some(),
            None => false,
        };
        let to = form.one("To").ok().flatten().and_then(|to| {
            crate::phone::normalize(to, app.policy().config().numbers.default_region).ok()
        });
        let by_number = match to {
            Some(d) => app
                .fakes
                .shadowed_verification_shared(&service_sid, &d.e164)
                .await
                .is_some(),
            None => false,
        };
        if by_sid || by_number {
            pace(app, route.endpoint.name(), started).await;
            let e = TwilioError::not_found(&format!("/Services/{service_sid}/VerificationCheck"));
            return error_response(app, &route, &e, started.elapsed());
        }
    }
    let config = app.policy().config().clone();
    let resp = forward_send(app, &config, &route, parts, bytes).await;
    if config.adaptive.is_none() || !resp.status().is_success() {
        return resp;
    }
    // Twilio's answer says whether the code was right, and for which number.
    observe(app, &route, resp, |app, answer| {
        let Some(r) = conversion::resource(answer) else {
            return;
        };
        if r.status.as_deref() != Some("approved") {
            return;
        }
        let to =
            r.to.filter(|t| !t.is_empty())
                .or_else(|| r.sid.as_deref().and_then(|sid| app.sids.number(sid)));
        if let Some(to) = to {
            // Twilio's own `to` always reads; nothing else to do if not.
            let _ = app.confirm(&to, "verify");
        }
    })
    .await
}

/// Messaging Feedback: forwarded unchanged, and an `Outcome=confirmed`
/// that Twilio accepts confirms the message's send. Feedback on a message
/// the guard shadowed is answered here as Twilio would: forwarding it would
/// get a 404 and expose the fake.
async fn feedback(
    app: &App,
    req: Request<Incoming>,
    route: Route,
    started: Instant,
) -> Response<Body> {
    let Endpoint::MessageFeedback { account_sid, sid } = &route.endpoint else {
        return forward_stream(app, req, route).await;
    };
    let (account_sid, sid) = (account_sid.clone(), sid.clone());
    let config = app.policy().config().clone();
    let fake = app.fakes.get_shared(&sid).await.is_some();
    if !fake && config.adaptive.is_none() {
        // Nothing to answer here and nothing to learn: streamed as any
        // other request.
        return forward_stream(app, req, route).await;
    }
    // Feedback is a few bytes; read it whole, generously bounded.
    const MAX_FEEDBACK: usize = 1 << 20;
    let (parts, body) = req.into_parts();
    let limit = config.listen.max_body.max(MAX_FEEDBACK);
    let bytes = match read_whole(app, &route, body, limit, started).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let outcome = form::Form::parse(&bytes)
        .ok()
        .and_then(|f| f.one("Outcome").ok().flatten().map(str::to_string));
    if fake {
        pace(app, route.endpoint.name(), started).await;
        let body = responses::message_feedback(
            &account_sid,
            &sid,
            outcome.as_deref().unwrap_or("unconfirmed"),
            app.clock.system_time(),
        );
        let mut resp = Response::new(upstream::full(body));
        *resp.status_mut() = StatusCode::CREATED;
        *resp.headers_mut() = responses::twilio_headers(app.domain(&route), started.elapsed());
        return resp;
    }
    let resp = forward_send(app, &config, &route, parts, bytes).await;
    let confirmed = outcome.is_some_and(|o| o.eq_ignore_ascii_case("confirmed"));
    if confirmed && resp.status().is_success() && config.adaptive.is_some() {
        match app.sids.number(&sid) {
            Some(to) => {
                let _ = app.confirm(&to, "feedback");
            }
            None => app
                .watch
                .confirmed("feedback", None, "", false, app.clock.now()),
        }
    }
    resp
}

/// Reads a (small) answer from Twilio whole, lets `see` look at it, and
/// passes it on unchanged. An answer that cannot be read whole becomes a
/// 502, as any upstream failure does.
async fn observe(
    app: &App,
    route: &Route,
    resp: Response<Body>,
    see: impl FnOnce(&App, &[u8]),
) -> Response<Body> {
    const MAX_ANSWER: usize = 1 << 20;
    let (parts, body) = resp.into_parts();
    match Limited::new(body, MAX_ANSWER).collect().await {
        Ok(c) => {
            let bytes = c.to_bytes();
            see(app, &bytes);
            Response::from_parts(parts, upstream::full(bytes))
        }
        Err(e) => {
            tracing::warn!(endpoint = route.endpoint.name(), error = %e, "reading Twilio's answer failed");
            upstream_error(app, route, &UpstreamError::Unreachable(e.to_string()))
        }
    }
}

/// Reads a (non-send) request body whole, up to `limit`; past it, or when
/// it cannot be read, the answer to give instead.
async fn read_whole(
    app: &App,
    route: &Route,
    body: Incoming,
    limit: usize,
    started: Instant,
) -> Result<Bytes, Response<Body>> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => {
            let e = TwilioError::malformed(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body could not be read",
            );
            Err(error_response(app, route, &e, started.elapsed()))
        }
    }
}

/// Waits until a fake answer has taken about as long as Twilio's real ones.
async fn pace(app: &App, endpoint: &'static str, started: Instant) {
    let target = app.latency.target(endpoint);
    if let Some(left) = target.checked_sub(started.elapsed()) {
        tokio::time::sleep(left).await;
    }
}

/// Request headers as they go upstream: no hop-by-hop, no context headers.
fn upstream_headers(mut headers: HeaderMap) -> HeaderMap {
    upstream::strip_hop_by_hop(&mut headers);
    headers.remove(&CLIENT_IP_HEADER);
    headers.remove(&USER_HEADER);
    for h in METHOD_OVERRIDES {
        headers.remove(h);
    }
    headers
}

/// The Twilio domain an answer made here claims to come from: the
/// configured upstream's when it is a Twilio host (a regional one such as
/// `api.sydney.au1.twilio.com`), else the main one.
fn twilio_domain(base_url: &str, main: &str) -> String {
    let host = base_url
        .split_once("://")
        .map_or(base_url, |(_, rest)| rest)
        .split([':', '/'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if host.ends_with(".twilio.com") {
        host
    } else {
        main.to_string()
    }
}

async fn forward_stream(app: &App, req: Request<Incoming>, route: Route) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let intercepted = parts.extensions.remove::<Intercepted>();
    let headers = upstream_headers(parts.headers);
    let sent = Instant::now();
    let result = app
        .upstream
        .send(
            target(&route, intercepted.as_ref()),
            parts.method,
            parts.uri.path_and_query(),
            headers,
            app.upstream.stream(body),
        )
        .await;
    match result {
        Ok(resp) => {
            app.watch.metrics.upstream(
                route.endpoint.name(),
                resp.status().as_u16(),
                sent.elapsed(),
            );
            resp.map(Either::Left)
        }
        Err(e) => {
            tracing::warn!(endpoint = route.endpoint.name(), error = %e, "forwarding failed");
            upstream_error(app, &route, &e)
        }
    }
}

fn upstream_error(app: &App, route: &Route, e: &UpstreamError) -> Response<Body> {
    let status = match e {
        UpstreamError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        UpstreamError::Unreachable(_) => StatusCode::BAD_GATEWAY,
    };
    error_response(
        app,
        route,
        &TwilioError::upstream_unavailable(status),
        Duration::ZERO,
    )
}

fn error_response(app: &App, route: &Route, e: &TwilioError, took: Duration) -> Response<Body> {
    let mut resp = Response::new(upstream::full(e.body()));
    *resp.status_mut() = e.status;
    *resp.headers_mut() = responses::twilio_headers(app.domain(route), took);
    resp
}

fn basic_user(headers: &HeaderMap) -> Option<String> {
    basic_credentials(headers).map(|(user, _)| user)
}

/// The user and secret of HTTP Basic auth (an account sid and its auth
/// token, or an API key and its secret).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(b64.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, secret) = text.split_once(':')?;
    Some((user.to_string(), secret.to_string()))
}

/// Standard base64 without padding requirements; only to read the Basic
/// user name.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Forwards a send whose body was read whole: the same bytes, minus
/// `RiskCheck=disable` when configured.
async fn forward_send(
    app: &App,
    config: &Config,
    route: &Route,
    mut parts: Parts,
    body: Bytes,
) -> Response<Body> {
    let intercepted = parts.extensions.remove::<Intercepted>();
    let mut headers = upstream_headers(parts.headers);
    let body = if config.upstream.strip_risk_check {
        match form::remove_pair(&body, "RiskCheck", "disable") {
            Some(stripped) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(stripped.len()));
                stripped
            }
            None => body,
        }
    } else {
        body
    };
    let sent = Instant::now();
    match app
        .upstream
        .send(
            target(route, intercepted.as_ref()),
            parts.method,
            parts.uri.path_and_query(),
            headers,
            upstream::full(body),
        )
        .await
    {
        Ok(resp) => {
            app.watch.metrics.upstream(
                route.endpoint.name(),
                resp.status().as_u16(),
                sent.elapsed(),
            );
            // Only real successes teach the fakes how long Twilio takes.
            if resp.status().is_success() && route.endpoint.send_product().is_some() {
                app.latency.observe(route.endpoint.name(), sent.elapsed());
            }
            resp.map(Either::Left)
        }
        Err(e) => {
            tracing::warn!(endpoint = route.endpoint.name(), error = %e, "forwarding a send failed");
            upstream_error(app, route, &e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_made_here_name_the_configured_regional_twilio_host() {
        assert_eq!(
            twilio_domain("https://api.sydney.au1.twilio.com", "api.twilio.com"),
            "api.sydney.au1.twilio.com"
        );
        assert_eq!(
            twilio_domain(
                "https://VERIFY.dublin.ie1.twilio.com:443",
                "verify.twilio.com"
            ),
            "verify.dublin.ie1.twilio.com"
        );
        assert_eq!(
            twilio_domain("http://127.0.0.1:9000", "api.twilio.com"),
            "api.twilio.com"
        );
        assert_eq!(
            twilio_domain("https://twilio.com.evil.example", "api.twilio.com"),
            "api.twilio.com"
        );
    }

    #[test]
    fn the_basic_user_is_read_without_the_secret() {
        let mut h = HeaderMap::new();
        // "AC123:secret"
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic QUMxMjM6c2VjcmV0"),
        );
        assert_eq!(basic_user(&h).as_deref(), Some("AC123"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_user(&h), None);
    }
}
