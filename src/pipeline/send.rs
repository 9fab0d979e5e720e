//! A send's way through the guard, in five phases, each its own function
//! ([`handle_send`] runs them): read and parse → classify the destination
//! → judge (local or shared store) → act (forward, shadow, reject) →
//! record. A new stage or a new product touches one phase.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use super::shadow::Written;
use super::{
    basic_credentials, basic_user, callbacks, conversion, error_response, forward_send, observe,
    pace, App,
};
use crate::base::clock::Millis;
use crate::config::{Action, Config};
use crate::net::upstream::{self, Body};
use crate::phone::{Classification, Destination};
use crate::policy::{Attempt, BalanceView, Decision, Policy, Reason, Verdict, DISPERSED_RULE};
use crate::store::fleet::{Event, Turn};
use crate::store::shared::SendView;
use crate::telemetry::DecisionEvent;
use crate::twilio::form::{self, FormError};
use crate::twilio::responses::{self, TwilioError};
use crate::twilio::routes::{self, Endpoint, Product, Route};

/// Who is behind a request, from the context headers or the TCP peer.
struct Context {
    client_ip: IpAddr,
    /// The address came from `X-SMSGuard-Client-IP`: an end user's. The TCP
    /// peer is the app's own server (only servers hold Twilio credentials),
    /// so without the header `client_ip` keys do not apply.
    end_user_ip: bool,
    user: Option<String>,
}

/// The send's context ([`crate::base::context::read`]); without
/// `X-SMSGuard-Client-IP` the address is the TCP peer's, for logs only.
fn context(
    headers: &HeaderMap,
    peer: SocketAddr,
    ipv6_prefix: u8,
) -> Result<Context, crate::base::context::ContextError> {
    let c = crate::base::context::read(headers, ipv6_prefix)?;
    Ok(Context {
        client_ip: c.client_ip.unwrap_or_else(|| peer.ip()),
        end_user_ip: c.client_ip.is_some(),
        user: c.user,
    })
}

fn form_error(e: &FormError) -> TwilioError {
    let status = match e {
        FormError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        FormError::NotForm | FormError::Compressed => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::BAD_REQUEST,
    };
    match e {
        FormError::MissingTo => TwilioError::missing_to(),
        _ => TwilioError::malformed(status, &e.to_string()),
    }
}

/// What is known of a send once its form is read.
struct SendForm<'a> {
    route: &'a Route,
    product: Product,
    account: String,
    form: form::Form,
    body: Bytes,
    /// `v1` or `v2` for a Verify send (its fake names the version asked).
    verify_version: &'static str,
}

/// A send's way through the guard, in five phases, each its own function:
///
/// 1. [`read_send`]: the app's context headers, the body (bounded) and the
///    strict form; what cannot be read is refused here.
/// 2. [`unjudged`] and [`classify`]: sends that cost nothing per number
///    pass unjudged; the rest get a normalised, classified destination.
/// 3. [`judge`]: every policy stage, against the local store or a view of
///    the shared one, then the balance; a forwarded send is published to
///    the fleet.
/// 4. [`act`]: forward, shadow or reject.
/// 5. [`record`] before acting, and after it [`await_fleet_write`].
pub(super) async fn handle_send(
    app: &App,
    req: Request<Incoming>,
    route: Route,
    peer: SocketAddr,
    started: Instant,
) -> Response<Body> {
    let policy = app.policy();
    let config = policy.config().clone();
    let read = match read_send(app, &config, &route, req, peer, started).await {
        Ok(read) => read,
        Err(resp) => return resp,
    };
    let ReadSend {
        parts,
        ctx,
        mut event,
        body,
        form,
        raw_to,
    } = read;
    match unjudged(&route, &raw_to, &form) {
        Ok(false) => {}
        Ok(true) => return pass_unjudged(app, &config, &route, parts, body).await,
        Err(e) => {
            event.malformed("duplicate Channel");
            app.record(&event);
            return error_response(app, &route, &e, started.elapsed());
        }
    }

    let product = route.endpoint.send_product().unwrap_or(Product::Messaging);
    let account = event.account.clone().unwrap_or_default();
    let send = SendForm {
        route: &route,
        product,
        account,
        form,
        body,
        verify_version: routes::verify_api_version(parts.uri.path()),
    };
    let (dest, class) = match classify(app, &config, &raw_to, &mut event) {
        Ok(x) => x,
        Err(detail) => {
            let decision = invalid_number(&config, detail);
            record(app, &mut event, &decision);
            return act(
                app, &config, &send, parts, &raw_to, None, &decision, started,
            )
            .await;
        }
    };
    let judged = judge(app, &policy, &send, &ctx, dest, class, &parts.headers).await;
    event.price = judged.price;
    record(app, &mut event, &judged.decision);
    let resp = act(
        app,
        &config,
        &send,
        parts,
        &raw_to,
        Some(&judged.dest),
        &judged.decision,
        started,
    )
    .await;
    await_fleet_write(&config, judged.written, judged.waited).await;
    resp
}

/// Forwards a send that passes unjudged ([`unjudged`]); one Twilio
/// accepts is still noted for reconciliation (a call to a client identity
/// appears in Twilio's list).
async fn pass_unjudged(
    app: &App,
    config: &Config,
    route: &Route,
    parts: Parts,
    body: Bytes,
) -> Response<Body> {
    let resp = forward_send(app, config, route, parts, body).await;
    match &app.reconcile {
        Some(_) if resp.status().is_success() => {
            observe(app, route, resp, |app, answer| {
                if let Some(r) = conversion::resource(answer) {
                    note_forwarded(app, &r);
                }
            })
            .await
        }
        _ => resp,
    }
}

/// A send read whole and parsed (phase 1): what the later phases work from.
struct ReadSend {
    parts: Parts,
    ctx: Context,
    /// The decision log's record of this send, filled in as it goes.
    event: DecisionEvent,
    body: Bytes,
    form: form::Form,
    /// The destination as the app wrote it.
    raw_to: String,
}

/// Phase 1: reads the context headers and the whole body, and parses the
/// form strictly. Whatever cannot be read with certainty is recorded and
/// answered with a Twilio-shaped error (the `Err`), never judged.
async fn read_send(
    app: &App,
    config: &Config,
    route: &Route,
    req: Request<Incoming>,
    peer: SocketAddr,
    started: Instant,
) -> Result<ReadSend, Response<Body>> {
    let (parts, body) = req.into_parts();
    let product_name = route
        .endpoint
        .send_product()
        .map_or("messaging", |p| p.as_str());
    let ctx = match context(&parts.headers, peer, config.numbers.client_ipv6_prefix) {
        Ok(c) => c,
        Err(e) => {
            // Present but unreadable: never judged as absent (the TCP peer
            // is the app's own server), so refused.
            let peer_ip = peer.ip();
            let mut event = DecisionEvent::new(route.endpoint.name(), &peer_ip, None);
            event.product = product_name;
            event.account = Some(account_of(&route.endpoint, &parts.headers));
            event.malformed(&e.to_string());
            app.record(&event);
            app.watch.metrics.context_refused(e.header());
            let e = TwilioError::malformed(StatusCode::BAD_REQUEST, &e.to_string());
            return Err(error_response(app, route, &e, started.elapsed()));
        }
    };
    let mut event = DecisionEvent::new(route.endpoint.name(), &ctx.client_ip, ctx.user.as_deref());
    event.product = product_name;
    // Known from the path (or the Verify service's credentials) before the
    // body is read: a send refused for its form still names its account.
    event.account = Some(account_of(&route.endpoint, &parts.headers));

    match read_form(&parts, body, route, config.listen.max_body).await {
        Ok((body, form, raw_to)) => Ok(ReadSend {
            parts,
            ctx,
            event,
            body,
            form,
            raw_to,
        }),
        Err(e) => {
            event.malformed(&e.to_string());
            app.record(&event);
            let e = match route.endpoint.destination_field() {
                "To" => form_error(&e),
                // The parameter the errors name is this send's.
                field => {
                    let mut t = form_error(&e);
                    t.message = t.message.replace("To", field);
                    t
                }
            };
            Err(error_response(app, route, &e, started.elapsed()))
        }
    }
}

/// The body (at most `limit` bytes), its form and its destination field.
async fn read_form(
    parts: &Parts,
    body: Incoming,
    route: &Route,
    limit: usize,
) -> Result<(Bytes, form::Form, String), FormError> {
    form::check_headers(&parts.headers, limit)?;
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(FormError::TooLarge { limit })
        }
        Err(_) => return Err(FormError::Unreadable),
    };
    let field = route.endpoint.destination_field();
    let (form, to) = form::parse_send_to(parts.uri.query(), &bytes, field)?;
    // To in the query is reported as such above; anything else there
    // (RiskCheck=disable, say) would escape the judge.
    if parts.uri.query().is_some_and(|q| !q.is_empty()) {
        return Err(FormError::QueryOnSend);
    }
    Ok((bytes, form, to))
}

/// Phase 2a: whether this send costs nothing per destination number and
/// so passes unjudged (`Ok(true)`); an error when it cannot tell.
fn unjudged(route: &Route, raw_to: &str, form: &form::Form) -> Result<bool, TwilioError> {
    // A Twilio Client identity (`client:alice`) is not a phone number: the
    // call rings an app, never a phone network, so nobody is paid for it.
    // Only the exact lowercase prefix: anything else is read as a number
    // (and `sip:`, which a trunk can carry to paid numbers, stays refused).
    if matches!(
        route.endpoint,
        Endpoint::CallCreate { .. } | Endpoint::ParticipantCreate { .. }
    ) && raw_to
        .strip_prefix("client:")
        .is_some_and(|id| !id.is_empty())
    {
        return Ok(true);
    }
    if let Endpoint::VerificationCreate { .. } = route.endpoint {
        match form.one("Channel") {
            Err(_) => {
                return Err(TwilioError::malformed(
                    StatusCode::BAD_REQUEST,
                    "Channel is given more than once",
                ))
            }
            // Email and silent network auth cost nothing per destination
            // number: they pass unjudged.
            Ok(Some(c)) if c.eq_ignore_ascii_case("email") || c.eq_ignore_ascii_case("sna") => {
                return Ok(true)
            }
            Ok(_) => {}
        }
    }
    Ok(false)
}

/// Phase 2b: the destination normalised and classified, and noted in the
/// event; the `Err` says why it is not a number ([`invalid_number`]).
fn classify(
    app: &App,
    config: &Config,
    raw_to: &str,
    event: &mut DecisionEvent,
) -> Result<(Destination, Classification), String> {
    let dest = match crate::phone::normalize(raw_to, config.numbers.default_region) {
        Ok(d) => d,
        Err(e) => {
            event.unreadable_to(raw_to);
            return Err(e.to_string());
        }
    };
    let class = app.classifier.classify(&dest.e164);
    event.number(&dest, &class, config.log.prefix_digits);
    Ok((dest, class))
}

/// The decision for a destination that is not a number: `actions.invalid`
/// when that stops the send, else a rejection.
fn invalid_number(config: &Config, detail: String) -> Decision {
    let verdict = Verdict {
        stage: crate::policy::Stage::Number,
        rule: "invalid".into(),
        detail: Some(detail),
        reason: Reason::Invalid,
        action: config.actions.invalid,
        blocked: None,
    };
    Decision {
        action: if config.actions.invalid.blocks() {
            config.actions.invalid
        } else {
            Action::Reject
        },
        verdict: Some(verdict),
        would_block: Vec::new(),
        hold: None,
        trace: Vec::new(),
        vouched: false,
        broadcast: false,
    }
}

/// A message's content as a fingerprint, for recognising broadcasts (the
/// policy never sees the content itself); `None` for calls, verifications
/// and a message with none of the fields.
fn content(send: &SendForm<'_>) -> Option<u64> {
    const FIELDS: [&str; 4] = ["Body", "MediaUrl", "ContentSid", "ContentVariables"];
    if send.product != Product::Messaging {
        return None;
    }
    // A text with a one-time code in it is never a broadcast, even sent
    // word for word to many numbers (a form that always sends one code).
    let coded = send.form.pairs().iter().any(|(k, v)| {
        ["Body", "ContentVariables"]
            .iter()
            .any(|f| k.trim().eq_ignore_ascii_case(f))
            && has_code(v)
    });
    if coded {
        return None;
    }
    let mut any = false;
    let parts = send
        .form
        .pairs()
        .iter()
        .filter(|(k, _)| FIELDS.iter().any(|f| k.trim().eq_ignore_ascii_case(f)))
        .inspect(|_| any = true)
        .map(|(k, v)| (k.trim(), v.as_str()));
    let fingerprint = crate::policy::content_fingerprint(parts);
    any.then_some(fingerprint)
}

/// Whether a text holds what reads as a one-time code: a run of 4 to 8
/// digits on its own (not part of a phone number, a date, a price, a
/// decimal or a percentage: a digit and `-`, or `/`, `.`, `,`, `$`, `+`
/// and `%` next to it say so; `#` an order number).
fn has_code(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let before = start.checked_sub(1).map(|j| b[j]);
        let after = b.get(i).copied();
        let decimal = after == Some(b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit);
        // `555-0199` is a phone number, `G-482913` a code.
        let dashed =
            before == Some(b'-') && start.checked_sub(2).is_some_and(|j| b[j].is_ascii_digit());
        if (4..=8).contains(&(i - start))
            && !dashed
            && !before.is_some_and(|c| b"/.,$+#".contains(&c))
            && !after.is_some_and(|c| b"-/,%".contains(&c))
            && !decimal
        {
            return true;
        }
    }
    false
}

/// What phase 3 hands on: the decision, and the fleet write to wait for.
struct Judged {
    dest: Destination,
    decision: Decision,
    /// The fleet's record of this send, when it is forwarded and learned.
    written: Option<oneshot::Receiver<()>>,
    /// How long this send has waited for Redis so far.
    waited: Duration,
    /// What it costs at the policy's prices: spent if forwarded, saved if
    /// stopped (the dashboard's money figures).
    price: Option<u64>,
}

/// Phase 3: judges the send by every stage, against the shared store's view
/// when there is one (prepared in one Redis round trip), then asks the
/// balance only if it still matters, and publishes a forwarded send to the
/// fleet so every replica's adaptive stage counts it.
async fn judge(
    app: &App,
    policy: &Policy,
    send: &SendForm<'_>,
    ctx: &Context,
    dest: Destination,
    class: Classification,
    headers: &HeaderMap,
) -> Judged {
    let config = policy.config();
    let segments = match send.form.one("Body") {
        Ok(Some(b)) => responses::segments(b).1,
        _ => 1,
    };
    let attempt = Attempt {
        product: send.product,
        account: &send.account,
        to: &dest,
        class,
        client_ip: ctx.client_ip,
        end_user_ip: ctx.end_user_ip,
        user: ctx.user.as_deref(),
        segments,
        media: send.form.count("MediaUrl"),
        // Only a send of the app's own (no end user's address) can be a
        // broadcast: the others' content is not looked at.
        content: if ctx.end_user_ip { None } else { content(send) },
        // Given to the last stage below, once it is known to matter.
        balance: BalanceView::NotAsked,
    };
    let price = policy.price(&attempt);
    // Every stage but the balance first: a send that an earlier stage
    // blocks is answered without asking Twilio anything (a slow Balance
    // endpoint must not hold up a shadow ban, nor show in its timing).
    let now = app.clock.now();
    let asked = Instant::now();
    let view = prepare_shared(app, policy, &attempt, now).await;
    // How long this send has waited for Redis so far.
    let waited = asked.elapsed();
    if view.as_ref().is_some_and(|v| v.refused()) {
        // Redis is unavailable and the operator chose to stop sends then.
        let decision = store_unavailable(config);
        drop(view);
        return Judged {
            dest,
            decision,
            written: None,
            waited,
            price,
        };
    }
    let judgement = match &view {
        Some(v) => policy.judge_with(&attempt, now, v),
        None => policy.judge(&attempt, now),
    };
    let balance = if judgement.needs_balance() {
        ask_balance(app, &send.account, headers).await
    } else {
        BalanceView::NotAsked
    };
    let learns = judgement.learns();
    let decision = judgement.finish(balance);
    // Gives back in Redis what the judgement gave back, off the request path.
    drop(view);
    let written = (learns && decision.forwarded())
        .then(|| publish_forwarded(app, send, ctx, &dest, now))
        .flatten();
    if !decision.forwarded() {
        publish_dispersed(app, &decision, send.product, (&dest, &class), now);
    }
    Judged {
        dest,
        decision,
        written,
        waited,
        price,
    }
}

/// Every replica's adaptive stage counts a forwarded send: written now,
/// while Twilio is asked, and in Redis before the answer leaves, so a send
/// that follows it through any replica is judged knowing it.
fn publish_forwarded(
    app: &App,
    send: &SendForm<'_>,
    ctx: &Context,
    dest: &Destination,
    now: Millis,
) -> Option<oneshot::Receiver<()>> {
    let fleet = app.fleet.as_ref()?;
    Some(fleet.publish_acked(Event::Forwarded {
        at: now,
        product: send.product,
        account: send.account.clone(),
        to: dest.e164.clone(),
        client_ip: ctx.end_user_ip.then_some(ctx.client_ip),
        user: ctx.user.clone(),
    }))
}

/// Every replica's adaptive stage counts a new number stopped as dispersed
/// pumping: the stop is held by the fleet's figures, not by this replica's
/// share of them.
fn publish_dispersed(
    app: &App,
    decision: &Decision,
    product: Product,
    (to, class): (&Destination, &Classification),
    now: Millis,
) {
    let (Some(fleet), Some(v), Some(region)) = (&app.fleet, &decision.verdict, &class.region)
    else {
        return;
    };
    if v.rule == DISPERSED_RULE {
        fleet.publish(Event::Dispersed {
            at: now,
            product,
            region: region.as_str().to_string(),
            to: Some(to.e164.clone()),
        });
    }
}

/// The shared store's view for this send, read in one round trip; `None`
/// without a shared store.
async fn prepare_shared(
    app: &App,
    policy: &Policy,
    attempt: &Attempt<'_>,
    now: Millis,
) -> Option<SendView> {
    let shared = app.shared.as_ref()?;
    let plan = policy.plan(attempt, now, &**shared.local());
    // What other replicas forwarded is read (in this send's script, or in
    // the script of a send that left after it arrived) and learned before
    // judging: the adaptive stage's counts are the fleet's, not this
    // replica's share of them.
    let turn = plan.as_ref().and_then(|_| app.fleet_turn(policy));
    match turn {
        Some(Turn::Carry(lead, call)) => {
            let mut view = shared.prepare_with(plan, now, Some(call)).await;
            app.learn_carried(lead, view.take_extra());
            Some(view)
        }
        Some(Turn::Wait(ticket)) => {
            let (view, ()) = tokio::join!(shared.prepare(plan, now), app.learn_waited(ticket));
            Some(view)
        }
        None => Some(shared.prepare(plan, now).await),
    }
}

/// The account's balance, asked of Twilio (or its cache) with the send's
/// own credentials.
async fn ask_balance(app: &App, account: &str, headers: &HeaderMap) -> BalanceView {
    match &app.balances {
        Some(b) if account.starts_with("AC") => {
            b.view(
                account,
                headers.get(header::AUTHORIZATION),
                &app.upstream,
                &app.clock,
            )
            .await
        }
        Some(_) => BalanceView::Unavailable,
        None => BalanceView::NotAsked,
    }
}

/// Phase 5: the decision goes into the event, and the event to the log,
/// the metrics and the activity.
fn record(app: &App, event: &mut DecisionEvent, decision: &Decision) {
    event.decided(decision);
    app.record(event);
}

/// After acting: waits for the fleet to hold this send.
async fn await_fleet_write(
    config: &Config,
    written: Option<oneshot::Receiver<()>>,
    waited: Duration,
) {
    if let Some(written) = written {
        // A send waits for Redis at most `store.timeout` in all (its
        // pipeline and this): a slow Redis delays the answer only when it
        // is slower than Twilio, and a degraded one not at all (the write
        // fails at once).
        let left = config.store.timeout.saturating_sub(waited);
        let _ = tokio::time::timeout(left, written).await;
    }
}

/// The decision for a send while Redis is unavailable and
/// `store.on_error = "block"`: stopped with the default action (shadow
/// unless that lets sends through).
fn store_unavailable(config: &Config) -> Decision {
    let action = match config.actions.default {
        a if a.blocks() => a,
        _ => Action::Shadow,
    };
    Decision {
        action,
        verdict: Some(crate::policy::Verdict {
            stage: crate::policy::Stage::Limits,
            rule: "store:unavailable".into(),
            detail: Some("shared state (redis) unavailable; store.on_error = block".into()),
            reason: crate::policy::Reason::RateLimited,
            action,
            blocked: None,
        }),
        would_block: Vec::new(),
        hold: None,
        trace: Vec::new(),
        vouched: false,
        broadcast: false,
    }
}

/// The account a send is billed to: the path's for the 2010 API; for Verify
/// the Basic-auth user when it is an account sid (never the secret).
fn account_of(endpoint: &Endpoint, headers: &HeaderMap) -> String {
    match endpoint {
        Endpoint::MessageCreate { account_sid }
        | Endpoint::CallCreate { account_sid }
        | Endpoint::CallerIdCreate { account_sid }
        | Endpoint::ParticipantCreate { account_sid, .. } => account_sid.clone(),
        Endpoint::VerificationCreate { service_sid } => basic_user(headers)
            .filter(|u| u.starts_with("AC"))
            .unwrap_or_else(|| service_sid.clone()),
        _ => String::new(),
    }
}

/// Turns a decision into the response: the one place this happens.
#[allow(clippy::too_many_arguments)]
async fn act(
    app: &App,
    config: &Config,
    send: &SendForm<'_>,
    parts: Parts,
    raw_to: &str,
    dest: Option<&Destination>,
    decision: &Decision,
    started: Instant,
) -> Response<Body> {
    match decision.action {
        Action::Allow | Action::Monitor => {
            if let Some(hold) = decision.hold {
                tokio::time::sleep(hold).await;
            }
            if let (Endpoint::VerificationCreate { service_sid }, Some(d)) =
                (&send.route.endpoint, dest)
            {
                app.fakes.forget_verification(service_sid, &d.e164);
            }
            let resp = forward_send(app, config, send.route, parts, send.body.clone()).await;
            let adaptive = config.adaptive.is_some();
            if !resp.status().is_success() || (!adaptive && app.reconcile.is_none()) {
                return resp;
            }
            // Feedback and checks by sid name the send by the sid Twilio
            // gives it: remember which number that is; reconciliation
            // looks for the sid in Twilio's lists.
            observe(app, send.route, resp, |app, answer| {
                let Some(r) = conversion::resource(answer) else {
                    return;
                };
                note_forwarded(app, &r);
                if let (true, Some(sid), Some(d)) = (adaptive, &r.sid, dest) {
                    app.sids.remember(sid, &d.e164);
                }
            })
            .await
        }
        Action::Shadow => shadow(app, config, send, &parts.headers, raw_to, dest, started).await,
        Action::Reject => {
            let reason = decision
                .verdict
                .as_ref()
                .map(|v| v.reason)
                .unwrap_or(Reason::Invalid);
            let shown = dest
                .map(|d| d.display())
                .unwrap_or_else(|| raw_to.to_string());
            let e = rejection(send.product, reason, &shown);
            error_response(app, send.route, &e, started.elapsed())
        }
    }
}

/// Records the sids of a send Twilio accepted (a message's, a call's, or
/// the call a conference participant or caller-id check makes) for
/// reconciliation.
fn note_forwarded(app: &App, r: &conversion::Resource) {
    let Some(rec) = &app.reconcile else { return };
    for sid in [&r.sid, &r.call_sid].into_iter().flatten() {
        if ["SM", "MM", "CA"].iter().any(|p| sid.starts_with(p)) {
            rec.forwarded(sid);
        }
    }
}

/// The error Twilio itself would answer for this reason and product.
fn rejection(product: Product, reason: Reason, to: &str) -> TwilioError {
    match (product, reason) {
        (Product::Verify, Reason::Invalid) => TwilioError::new(
            StatusCode::BAD_REQUEST,
            60200,
            format!("Invalid parameter `To`: {to}"),
        ),
        (Product::Verify, Reason::Geo | Reason::NumberType) => TwilioError::verify_geo(),
        (Product::Verify, Reason::Blocked) => TwilioError::verify_fraud_block(),
        (Product::Verify, _) => TwilioError::verify_max_attempts(),
        (_, Reason::Invalid) => TwilioError::invalid_number(to),
        (Product::Voice, Reason::Geo | Reason::NumberType) => TwilioError::new(
            StatusCode::BAD_REQUEST,
            21215,
            format!("Account not authorized to call {to}. Perhaps you need to enable some international permissions."),
        ),
        (_, Reason::Geo | Reason::NumberType) => TwilioError::region_not_enabled(to),
        _ => TwilioError::too_many_requests(),
    }
}

async fn shadow(
    app: &App,
    config: &Config,
    send: &SendForm<'_>,
    headers: &HeaderMap,
    raw_to: &str,
    dest: Option<&Destination>,
    started: Instant,
) -> Response<Body> {
    let now = app.clock.system_time();
    let to = dest
        .map(|d| d.display())
        .unwrap_or_else(|| raw_to.to_string());
    let one = |k: &str| send.form.one(k).ok().flatten();
    // Twilio echoes a phone-number From in E.164 even when the client forgot
    // to encode its '+'; alphanumeric senders and short codes stay as given.
    let from = one("From").map(|f| match crate::phone::normalize(f, None) {
        Ok(d) => d.display(),
        Err(_) => f.to_string(),
    });
    let (sid, body, written) = fake_send(app, send, &to, from.as_deref(), now);
    if config.shadow.callbacks {
        status_callbacks(app, send, headers, &sid, &to, from.as_deref(), now);
    }

    let written = match (&send.route.endpoint, dest) {
        (Endpoint::VerificationCreate { service_sid }, Some(d)) => {
            written.and(app.fakes.remember_verification(service_sid, &d.e164, &sid))
        }
        _ => written,
    };
    // Paced like Twilio, and not before other replicas can answer for it.
    tokio::join!(
        pace(app, send.route.endpoint.name(), started),
        written.wait()
    );
    let mut resp = Response::new(upstream::full(body));
    *resp.status_mut() = StatusCode::CREATED;
    *resp.headers_mut() = responses::twilio_headers(app.domain(send.route), started.elapsed());
    resp
}

/// Schedules the status callbacks of a shadowed message whose send named a
/// `StatusCallback` (an http or https URL), as Twilio would post them.
fn status_callbacks(
    app: &App,
    send: &SendForm<'_>,
    headers: &HeaderMap,
    sid: &str,
    to: &str,
    from: Option<&str>,
    now: SystemTime,
) {
    let one = |k: &str| send.form.one(k).ok().flatten();
    let message =
        send.product == Product::Messaging && (sid.starts_with("SM") || sid.starts_with("MM"));
    let Some(url) = one("StatusCallback")
        .filter(|u| message && (u.starts_with("https://") || u.starts_with("http://")))
    else {
        return;
    };
    // The auth token signs the callbacks; an API key cannot.
    let token = basic_credentials(headers)
        .filter(|(user, _)| user.starts_with("AC"))
        .map(|(_, secret)| secret);
    callbacks::schedule(
        &app.upstream,
        callbacks::Message {
            url: url.to_string(),
            token,
            sid: sid.to_string(),
            account_sid: send.account.clone(),
            to: to.to_string(),
            from: from.map(str::to_string),
            messaging_service_sid: one("MessagingServiceSid").map(str::to_string),
            created: now,
            last: app.fakes.final_status(),
        },
    );
}

/// The fake resource a shadowed send is answered with (a message, call,
/// participant, caller-id validation or verification), kept so the app's
/// later reads of it find it: its sid, its body and the pending write.
fn fake_send(
    app: &App,
    send: &SendForm<'_>,
    to: &str,
    from: Option<&str>,
    now: SystemTime,
) -> (String, Bytes, Written) {
    let fake = Fake {
        app,
        send,
        to,
        from,
        now,
    };
    match &send.route.endpoint {
        Endpoint::CallCreate { account_sid } => fake.call(account_sid),
        Endpoint::ParticipantCreate {
            account_sid,
            conference_sid,
        } => fake.participant(account_sid, conference_sid),
        Endpoint::CallerIdCreate { account_sid } => fake.caller_id(account_sid),
        Endpoint::VerificationCreate { service_sid } => fake.verification(service_sid),
        _ => fake.message(),
    }
}

/// What the fake of a shadowed send is made from: the send, its
/// destination and sender as Twilio would echo them, and the moment.
struct Fake<'a> {
    app: &'a App,
    send: &'a SendForm<'a>,
    to: &'a str,
    from: Option<&'a str>,
    now: SystemTime,
}

impl Fake<'_> {
    /// A field of the send's form, when it is given once.
    fn one(&self, k: &str) -> Option<&str> {
        self.send.form.one(k).ok().flatten()
    }

    /// A fake kept by its sid.
    fn kept(&self, (sid, body): (String, Bytes)) -> (String, Bytes, Written) {
        let written = self.app.fakes.remember(&sid, body.clone());
        (sid, body, written)
    }

    /// A shadowed call: a queued Call.
    fn call(&self, account_sid: &str) -> (String, Bytes, Written) {
        let req = responses::CallRequest {
            account_sid,
            to: self.to,
            from: self.from,
        };
        self.kept(responses::fake_call(&req, self.now))
    }

    /// A shadowed conference participant: the Participant, kept by the
    /// conference's sid and name and by its call sid and label, and the
    /// queued Call behind it.
    fn participant(&self, account_sid: &str, conference_sid: &str) -> (String, Bytes, Written) {
        let p = responses::fake_participant(
            &responses::ParticipantRequest {
                account_sid,
                conference: conference_sid,
                to: self.to,
                from: self.from,
                label: self.one("Label"),
                call_sid_to_coach: self.one("CallSidToCoach"),
                coaching: self.one("Coaching"),
                muted: self.one("Muted"),
                start_conference_on_enter: self.one("StartConferenceOnEnter"),
                end_conference_on_exit: self.one("EndConferenceOnExit"),
            },
            self.now,
        );
        let mut ids = vec![p.call_sid.as_str()];
        ids.extend(self.one("Label"));
        let written = self.app.fakes.remember_participant(
            &p.call_sid,
            p.call.clone(),
            &[p.conference_sid.as_str(), conference_sid],
            &ids,
            p.body.clone(),
        );
        (p.call_sid, p.body, written)
    }

    /// A shadowed caller-id check: the ValidationRequest, and the
    /// validation call, answerable by sid like any fake call.
    fn caller_id(&self, account_sid: &str) -> (String, Bytes, Written) {
        let req = responses::CallRequest {
            account_sid,
            to: self.to,
            from: None,
        };
        let (call_sid, call) = responses::fake_call(&req, self.now);
        let written = self.app.fakes.remember(&call_sid, call);
        let body = responses::validation_request(
            account_sid,
            &call_sid,
            self.to,
            self.one("FriendlyName"),
        );
        (call_sid, body, written)
    }

    /// A shadowed verification, on the Verify API version the send asked.
    fn verification(&self, service_sid: &str) -> (String, Bytes, Written) {
        let channel = self.one("Channel").unwrap_or("sms").to_ascii_lowercase();
        let req = responses::VerificationRequest {
            account_sid: &self.send.account,
            service_sid,
            to: self.to,
            channel: &channel,
        };
        self.kept(responses::fake_verification_on(
            &req,
            self.send.verify_version,
            self.now,
        ))
    }

    /// A shadowed message, kept as its inputs (its status moves on as it
    /// is read again).
    fn message(&self) -> (String, Bytes, Written) {
        let req = responses::MessageRequest {
            account_sid: &self.send.account,
            to: self.to,
            from: self.from,
            messaging_service_sid: self.one("MessagingServiceSid"),
            body: self.one("Body"),
            num_media: self.send.form.count("MediaUrl"),
        };
        let (sid, body) = responses::fake_message(&req, self.now);
        let written = self.app.fakes.remember_message(&sid, &req, self.now);
        (sid, body, written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{upstream_headers, CLIENT_IP_HEADER, USER_HEADER};
    use http::HeaderValue;

    #[test]
    fn a_code_reads_as_one_and_numbers_of_other_kinds_do_not() {
        for coded in [
            "Your code is 123456",
            "123456 is your verification code",
            "Code: 4821.",
            "G-482913 is your code",
            "{\"1\":\"90210\"}",
        ] {
            assert!(super::has_code(coded), "{coded}");
        }
        for plain in [
            "Winter sale: 20% off until Sunday",
            "Call us on 1-800-555-0199",
            "Your order #123456 has shipped",
            "Total $1299 due 2026/12/08",
            "Rates from 4.2500% APR",
            "Open 9-5, 10,000 items",
            "Hello",
        ] {
            assert!(!super::has_code(plain), "{plain}");
        }
    }

    #[test]
    fn context_headers_feed_ip_and_user_and_fall_back_to_the_peer() {
        let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        let c = context(&h, peer, 64).unwrap();
        assert_eq!(c.client_ip, peer.ip());
        assert!(!c.end_user_ip);
        h.insert(&CLIENT_IP_HEADER, HeaderValue::from_static("203.0.113.5"));
        h.insert(&USER_HEADER, HeaderValue::from_static("user-42"));
        let c = context(&h, peer, 64).unwrap();
        assert_eq!(c.client_ip.to_string(), "203.0.113.5");
        assert!(c.end_user_ip);
        assert_eq!(c.user.as_deref(), Some("user-42"));
        h.insert(&CLIENT_IP_HEADER, HeaderValue::from_static("not-an-ip"));
        assert!(context(&h, peer, 64).is_err());
        let h = upstream_headers(h);
        assert!(h.get(&CLIENT_IP_HEADER).is_none() && h.get(&USER_HEADER).is_none());
    }
}
