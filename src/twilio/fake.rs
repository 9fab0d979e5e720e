//! An in-process fake Twilio for the integration tests, `smsguard demo` and
//! `smsguard fake-twilio` (to try `serve` without a Twilio account).
//!
//! It listens on `127.0.0.1:0` (HTTP/1.1 and HTTP/2 prior knowledge),
//! records every request that reached it — method, path and query, headers,
//! body bytes and Host — before answering, and answers like Twilio: a fake
//! Message, Call, conference Participant or Verification (v2 or v1) built
//! by [`crate::twilio::responses`], a
//! Verification Check, a Balance, the Messages and Calls it created as
//! Twilio lists them (`GET .../Messages.json`, `.../Calls.json`: sent,
//! priced, newest first, paged with `PageSize` and `next_page_uri`, with
//! the `DateSent` and `StartTime` day filters), or for anything else an
//! echo that lets a forwarding test see what passed through. Tests can slow it down
//! ([`FakeTwilio::set_delay`]) or make it fail ([`FakeTwilio::set_failure`]).
//!
//! It is test infrastructure: it must never listen on anything but loopback,
//! never reach the network itself, never log (recorded requests carry auth
//! headers and message bodies; they stay in memory for the test to inspect),
//! and never validate strictly — being lenient is what lets tests show that
//! the guard, not Twilio, rejected a bad request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::twilio::responses::{
    self, CallRequest, MessageRequest, ParticipantRequest, TwilioError, VerificationCheckRequest,
    VerificationRequest,
};

/// The account reported by Verify answers when the request's Basic auth user
/// is not an account sid (an API key, or no auth at all).
const FALLBACK_ACCOUNT: &str = "AC00000000000000000000000000000000";

/// A request as it reached the fake.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// Path and query as received (for HTTP/2 the scheme and authority are
    /// left out; they are in `host`).
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The `Host` header, or the HTTP/2 `:authority` when there is none.
    pub host: Option<String>,
}

/// A running fake Twilio. Clones share one server; it stops on
/// [`FakeTwilio::shutdown`] or when the last clone is dropped.
#[derive(Clone)]
pub struct FakeTwilio {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for FakeTwilio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the records: they hold credentials and message bodies.
        f.debug_struct("FakeTwilio")
            .field("addr", &self.handle.addr)
            .finish_non_exhaustive()
    }
}

/// Owned by the test's handles only (the server tasks hold `Shared` and a
/// receiver), so dropping the last handle is what stops the server.
struct Handle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    https: bool,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    requests: Vec<Recorded>,
    /// Requests per method and last path segment, always counted.
    tally: std::collections::BTreeMap<(Method, String), u64>,
    /// Whether whole requests are kept (`requests`); a long replay only
    /// needs the tally.
    recording: bool,
    delay: Duration,
    /// Extra wait before answering a Balance request only.
    balance_delay: Duration,
    failure: Option<StatusCode>,
    balance: String,
    /// Messages and calls created here, oldest first, for the lists.
    created: Vec<Created>,
}

/// A message or call the fake created, as its list shows it.
struct Created {
    /// `Messages.json` or `Calls.json`.
    list: &'static str,
    account: String,
    at: SystemTime,
    /// The resource as listed: sent (or completed) and priced.
    json: serde_json::Value,
}

fn copy_uri(uri: &Uri) -> Uri {
    Uri::from_maybe_shared(Bytes::copy_from_slice(uri.to_string().as_bytes()))
        .unwrap_or_else(|_| uri.clone())
}

fn copy_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let mut v = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        v.set_sensitive(value.is_sensitive());
        out.append(name.clone(), v);
    }
    out
}

impl Shared {
    /// The state, even if a panicking test thread poisoned the lock: the
    /// records are plain data and stay usable.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `YYYY-MM-DD` (GMT) of `t`, as the lists' date filters compare it.
fn day_of(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).date().to_string()
}

impl Shared {
    /// Keeps a message or call created here for its list, as Twilio lists
    /// it once sent: `date_sent` (calls: `start_time`) set, priced.
    fn created(&self, list: &'static str, account: &str, at: SystemTime, answer: &[u8]) {
        let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(answer) else {
            return;
        };
        let date = json["date_created"].clone();
        let (status, price) = if list == "Messages.json" {
            json["date_sent"] = date;
            ("sent", "-0.00790")
        } else {
            json["start_time"] = date;
            ("completed", "-0.01400")
        };
        json["status"] = status.into();
        json["price"] = price.into();
        json["price_unit"] = "USD".into();
        json["direction"] = "outbound-api".into();
        self.state().created.push(Created {
            list,
            account: account.to_string(),
            at,
            json,
        });
    }

    /// A page of a list, newest first, as Twilio pages it: `PageSize`
    /// (default 50, at most 1000), `Page`, and the date filters
    /// `DateSent` (messages) or `StartTime` (calls) with `>` (on or after
    /// the day), `<` (on or before) or none (that day).
    fn list(&self, account: &str, list: &str, uri: &Uri) -> Bytes {
        let filter = if list == "Messages.json" {
            "DateSent"
        } else {
            "StartTime"
        };
        let mut page_size = 50usize;
        let mut page = 0usize;
        let mut kept: Vec<(String, String)> = Vec::new();
        let (mut after, mut before, mut on) = (None, None, None);
        for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "PageSize" => page_size = v.parse().unwrap_or(50).clamp(1, 1000),
                "Page" => page = v.parse().unwrap_or(0),
                "PageToken" => {}
                _ => {
                    if let Some(op) = k.strip_prefix(filter) {
                        // `DateSent>=2024-01-01` reads as key `DateSent>`
                        // and value `2024-01-01`; `DateSent=>...` too.
                        let v = v.trim_start_matches('=').to_string();
                        match op {
                            ">" => after = Some(v.clone()),
                            "<" => before = Some(v.clone()),
                            "" => on = Some(v.clone()),
                            _ => {}
                        }
                    }
                    kept.push((k.into_owned(), v.into_owned()));
                }
            }
        }
        let state = self.state();
        let mut matching: Vec<&Created> = state
            .created
            .iter()
            .filter(|c| c.list == list && c.account == account)
            .filter(|c| {
                let d = day_of(c.at);
                after.as_ref().is_none_or(|a| d >= *a)
                    && before.as_ref().is_none_or(|b| d <= *b)
                    && on.as_ref().is_none_or(|o| d == *o)
            })
            .collect();
        matching.reverse();
        let start = page.saturating_mul(page_size);
        let items: Vec<serde_json::Value> = matching
            .iter()
            .skip(start)
            .take(page_size)
            .map(|c| c.json.clone())
            .collect();
        let path = format!("/2010-04-01/Accounts/{account}/{list}");
        let query = |p: usize, token: Option<&str>| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &kept {
                q.append_pair(k, v);
            }
            q.append_pair("PageSize", &page_size.to_string());
            q.append_pair("Page", &p.to_string());
            if let Some(t) = token {
                q.append_pair("PageToken", t);
            }
            format!("{path}?{}", q.finish())
        };
        let more = matching.len() > start + items.len();
        let last_sid = items
            .last()
            .and_then(|v| v["sid"].as_str())
            .unwrap_or("")
            .to_string();
        let next = more.then(|| query(page + 1, Some(&format!("PA{last_sid}"))));
        let previous = (page > 0).then(|| query(page - 1, None));
        let key = if list == "Messages.json" {
            "messages"
        } else {
            "calls"
        };
        let body = serde_json::json!({
            "end": (start + items.len()).saturating_sub(1),
            "first_page_uri": query(0, None),
            key: items,
            "next_page_uri": next,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": previous,
            "start": start,
            "uri": query(page, None),
        });
        Bytes::from(body.to_string())
    }
}

impl FakeTwilio {
    /// Binds `127.0.0.1:0` and serves HTTP/1.1 and HTTP/2 (prior knowledge)
    /// on it; returns once the socket is listening. Must be called inside a
    /// Tokio runtime, which runs the server's tasks.
    pub async fn start() -> std::io::Result<FakeTwilio> {
        Self::serve(None, 0).await
    }

    /// Like `start`, on `127.0.0.1:port` (`smsguard fake-twilio`).
    pub async fn start_on(port: u16) -> std::io::Result<FakeTwilio> {
        Self::serve(None, port).await
    }

    /// Like `start`, but speaks TLS with `tls` (a certificate the guard
    /// trusts through `upstream.extra_ca`), as the real Twilio does.
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> std::io::Result<FakeTwilio> {
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(tls)), 0).await
    }

    async fn serve(
        tls: Option<tokio_rustls::TlsAcceptor>,
        port: u16,
    ) -> std::io::Result<FakeTwilio> {
        let https = tls.is_some();
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                requests: Vec::new(),
                tally: Default::default(),
                recording: true,
                delay: Duration::ZERO,
                balance_delay: Duration::ZERO,
                failure: None,
                balance: "100.00".to_string(),
                created: Vec::new(),
            }),
        });
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(accept_loop(listener, shared.clone(), stop_rx, tls));
        Ok(FakeTwilio {
            handle: Arc::new(Handle {
                addr,
                shared,
                stop,
                https,
            }),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.addr
    }

    /// `http://127.0.0.1:PORT` (or `https://`), to use as the guard's upstream.
    pub fn url(&self) -> String {
        let scheme = if self.handle.https { "https" } else { "http" };
        format!("{scheme}://{}", self.handle.addr)
    }

    /// Everything that reached the fake, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.handle.shared.state().requests.clone()
    }

    /// Requests received (recorded or only counted).
    pub fn count(&self) -> usize {
        self.handle.shared.state().tally.values().sum::<u64>() as usize
    }

    /// Requests received per method and last path segment
    /// (`(POST, "Messages.json")`), whether recorded or not.
    pub fn tally(&self) -> Vec<(Method, String, u64)> {
        self.handle
            .shared
            .state()
            .tally
            .iter()
            .map(|((m, last), n)| (m.clone(), last.clone(), *n))
            .collect()
    }

    /// Keep whole requests for [`FakeTwilio::requests`] (the default), or
    /// only count them: a replay of millions of sends needs no more.
    pub fn set_recording(&self, on: bool) {
        self.handle.shared.state().recording = on;
    }

    /// Wait this long before answering each request (zero: answer at once).
    pub fn set_delay(&self, delay: Duration) {
        self.handle.shared.state().delay = delay;
    }

    /// Wait this long (on top of [`FakeTwilio::set_delay`]) before
    /// answering `GET .../Balance.json` only: a Twilio that is slow to tell
    /// the balance while sends are answered at once.
    pub fn set_balance_delay(&self, delay: Duration) {
        self.handle.shared.state().balance_delay = delay;
    }

    /// Answer every request with this status and a Twilio error body
    /// (code 20000 + status, as Twilio numbers its generic errors); `None`
    /// goes back to normal answers. Requests are still recorded.
    pub fn set_failure(&self, status: Option<StatusCode>) {
        self.handle.shared.state().failure = status;
    }

    /// The balance reported by `GET .../Balance.json` (default `"100.00"`).
    pub fn set_balance(&self, balance: &str) {
        self.handle.shared.state().balance = balance.to_string();
    }

    /// Stop accepting and close every open connection (in-flight requests
    /// are dropped). Also happens when the last handle is dropped.
    pub fn shutdown(&self) {
        let _ = self.handle.stop.send(true);
    }
}

/// Resolves once shutdown is asked for or every handle is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let stream = tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(_) => {
                    // Out of file descriptors and the like: back off instead
                    // of spinning, and keep serving.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Latency tests measure the fake's delay, not Nagle's.
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let mut stop = stop.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(shared.clone(), req));
            let builder = auto::Builder::new(TokioExecutor::new());
            match tls {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        // Dropping the connection closes the socket.
                        _ = stopped(&mut stop) => {}
                    }
                }
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        _ = stopped(&mut stop) => {}
                    }
                }
            }
        });
    }
}

async fn answer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<FakeBody>, Infallible> {
    let started = Instant::now();
    let (parts, incoming) = req.into_parts();
    let (body, body_ok) = match incoming.collect().await {
        Ok(collected) => (collected.to_bytes(), true),
        Err(_) => (Bytes::new(), false),
    };
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()));
    let uri = parts
        .uri
        .path_and_query()
        .map(|pq| Uri::from(pq.clone()))
        .unwrap_or_else(|| parts.uri.clone());

    // Record first: a test must see the request even if the answer is slow,
    // fails, or the client gives up waiting.
    let (delay, failure, balance) = {
        let mut state = shared.state();
        let last = uri.path().rsplit('/').next().unwrap_or("").to_string();
        *state.tally.entry((parts.method.clone(), last)).or_default() += 1;
        if state.recording {
            // Copies, not views: a view of hyper's read buffer would keep
            // the whole buffer alive for as long as the record.
            state.requests.push(Recorded {
                method: parts.method.clone(),
                uri: copy_uri(&uri),
                headers: copy_headers(&parts.headers),
                body: Bytes::copy_from_slice(&body),
                host: host.clone(),
            });
        }
        let delay = if uri.path().ends_with("/Balance.json") {
            state.delay + state.balance_delay
        } else {
            state.delay
        };
        (delay, state.failure, state.balance.clone())
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let path = parts.uri.path();
    let domain = if path.starts_with("/v2/") || path.starts_with("/v1/") {
        "verify.twilio.com"
    } else {
        "api.twilio.com"
    };
    let mut response = if let Some(status) = failure {
        let code = 20_000 + u32::from(status.as_u16());
        let message = status.canonical_reason().unwrap_or("Error");
        error(&TwilioError::new(status, code, message))
    } else if !body_ok {
        error(&TwilioError::malformed(
            StatusCode::BAD_REQUEST,
            "the request body could not be read",
        ))
    } else {
        route(
            &shared,
            &parts.method,
            &parts.uri,
            &parts.headers,
            &body,
            &balance,
        )
    };
    // Every JSON answer carries Twilio's headers (route leaves their
    // Content-Type unset); the streamed test body keeps its own.
    if !response.headers().contains_key(CONTENT_TYPE) {
        let twilio = responses::twilio_headers(domain, started.elapsed());
        response.headers_mut().extend(twilio);
    }
    if let Some(value) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
        response.headers_mut().insert("x-fake-received-host", value);
    }
    Ok(response)
}

/// What Twilio would answer to this request, leniently.
fn route(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    balance: &str,
) -> Response<FakeBody> {
    let now = SystemTime::now();
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let form = Form::parse(body);
    match (method, segments.as_slice()) {
        (&Method::POST, ["2010-04-01", "Accounts", account, "Messages" | "Messages.json"]) => {
            let Some(to) = form.first("To") else {
                return error(&TwilioError::missing_to());
            };
            let (_, json) = responses::fake_message(
                &MessageRequest {
                    account_sid: account,
                    to,
                    from: form.first("From"),
                    messaging_service_sid: form.first("MessagingServiceSid"),
                    body: form.first("Body"),
                    num_media: form.count("MediaUrl"),
                },
                now,
            );
            shared.created("Messages.json", account, now, &json);
            json_response(StatusCode::CREATED, json)
        }
        (&Method::POST, ["2010-04-01", "Accounts", account, "Messages", sid, "Feedback.json"]) => {
            let json = responses::message_feedback(
                account,
                sid,
                form.first("Outcome").unwrap_or("unconfirmed"),
                now,
            );
            json_response(StatusCode::CREATED, json)
        }
        (&Method::POST, ["2010-04-01", "Accounts", account, "Calls" | "Calls.json"]) => {
            let (_, json) = responses::fake_call(
                &CallRequest {
                    account_sid: account,
                    to: form.first("To").unwrap_or(""),
                    from: form.first("From"),
                },
                now,
            );
            shared.created("Calls.json", account, now, &json);
            json_response(StatusCode::CREATED, json)
        }
        (
            &Method::GET,
            ["2010-04-01", "Accounts", account, list @ ("Messages.json" | "Calls.json")],
        ) => json_response(StatusCode::OK, shared.list(account, list, uri)),
        (
            &Method::POST,
            ["2010-04-01", "Accounts", account, "Conferences", conference, "Participants" | "Participants.json"],
        ) => {
            let p = responses::fake_participant(
                &ParticipantRequest {
                    account_sid: account,
                    conference,
                    to: form.first("To").unwrap_or(""),
                    from: form.first("From"),
                    label: form.first("Label"),
                    call_sid_to_coach: form.first("CallSidToCoach"),
                    coaching: form.first("Coaching"),
                    muted: form.first("Muted"),
                    start_conference_on_enter: form.first("StartConferenceOnEnter"),
                    end_conference_on_exit: form.first("EndConferenceOnExit"),
                },
                now,
            );
            json_response(StatusCode::CREATED, p.body)
        }
        (&Method::GET, ["2010-04-01", "Accounts", account, "Balance.json"]) => {
            json_response(StatusCode::OK, responses::balance(account, balance, "USD"))
        }
        (&Method::POST, [version @ ("v1" | "v2"), "Services", service, "Verifications"]) => {
            let account = account_from_auth(headers);
            let (_, json) = responses::fake_verification_on(
                &VerificationRequest {
                    account_sid: &account,
                    service_sid: service,
                    to: form.first("To").unwrap_or(""),
                    channel: form.first("Channel").unwrap_or("sms"),
                },
                version,
                now,
            );
            json_response(StatusCode::CREATED, json)
        }
        (&Method::POST, ["v1" | "v2", "Services", service, "VerificationCheck"]) => {
            let account = account_from_auth(headers);
            let json = responses::verification_check(
                &VerificationCheckRequest {
                    account_sid: &account,
                    service_sid: service,
                    verification_sid: form.first("VerificationSid"),
                    to: form.first("To").unwrap_or(""),
                    channel: "sms",
                    approved: true,
                },
                now,
            );
            json_response(StatusCode::OK, json)
        }
        (&Method::GET, ["stream-test"]) => stream_test(uri.query().unwrap_or("")),
        _ => {
            let json = format!(
                r#"{{"echo": true, "method": {}, "path": {}}}"#,
                json_string(method.as_str()),
                json_string(uri.path())
            );
            json_response(StatusCode::OK, Bytes::from(json))
        }
    }
}

/// `GET /stream-test?chunks=N&gap_ms=M`: a body sent in `N` chunks
/// (`"chunk 0\n"`, `"chunk 1\n"`, ...) `M` ms apart, without a length, so
/// tests can check that the guard streams instead of buffering.
fn stream_test(query: &str) -> Response<FakeBody> {
    let mut chunks = 5u64;
    let mut gap_ms = 50u64;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "chunks" => chunks = value.parse().unwrap_or(chunks).min(10_000),
            "gap_ms" => gap_ms = value.parse().unwrap_or(gap_ms).min(10_000),
            _ => {}
        }
    }
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for i in 0..chunks {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(gap_ms)).await;
            }
            if tx.send(Bytes::from(format!("chunk {i}\n"))).await.is_err() {
                return; // the client went away
            }
        }
    });
    let mut response = Response::new(FakeBody::Chunks(rx));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn json_response(status: StatusCode, json: Bytes) -> Response<FakeBody> {
    let mut response = Response::new(FakeBody::Full(Some(json)));
    *response.status_mut() = status;
    response
}

fn error(err: &TwilioError) -> Response<FakeBody> {
    json_response(err.status, err.body())
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// The account sid a Verify request acts for: the Basic auth user when it is
/// one, like Twilio reports it.
fn account_from_auth(headers: &HeaderMap) -> String {
    basic_auth_user(headers)
        .filter(|user| user.len() == 34 && user.starts_with("AC"))
        .unwrap_or_else(|| FALLBACK_ACCOUNT.to_string())
}

fn basic_auth_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
    Some(decoded.split(':').next().unwrap_or("").to_string())
}

/// Standard base64 with optional padding; `None` on any other character.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Form parameters, kept in order with duplicates (the fake is lenient:
/// the first value wins, as many servers do).
struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    fn parse(body: &[u8]) -> Form {
        Form {
            pairs: form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    fn first(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn count(&self, name: &str) -> usize {
        self.pairs.iter().filter(|(k, _)| k == name).count()
    }
}

/// A response body: whole, or streamed chunk by chunk from a task.
enum FakeBody {
    Full(Option<Bytes>),
    Chunks(mpsc::Receiver<Bytes>),
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            FakeBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            FakeBody::Chunks(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, FakeBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FakeBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            FakeBody::Full(None) => SizeHint::with_exact(0),
            FakeBody::Chunks(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::client::legacy::Client;
    use regex::Regex;
    use serde_json::Value;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const VA: &str = "VA0123456789abcdef0123456789abcdef";

    fn client() -> Client<HttpConnector, Full<Bytes>> {
        Client::builder(TokioExecutor::new()).build_http()
    }

    fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
        Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http()
    }

    fn post_form(url: String, form: &'static str) -> Request<Full<Bytes>> {
        Request::post(url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            // "AC0123...:token"
            .header(
                AUTHORIZATION,
                format!("Basic {}", encode_basic(AC, "token")),
            )
            .body(Full::new(Bytes::from_static(form.as_bytes())))
            .unwrap()
    }

    fn get(url: String) -> Request<Full<Bytes>> {
        Request::get(url).body(Full::new(Bytes::new())).unwrap()
    }

    async fn send(
        client: &Client<HttpConnector, Full<Bytes>>,
        req: Request<Full<Bytes>>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let resp = client.request(req).await.expect("request");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (parts.status, parts.headers, body)
    }

    fn json(body: &Bytes) -> Value {
        serde_json::from_slice(body).expect("JSON body")
    }

    /// Test-side base64, independent of the decoder under test.
    fn encode_basic(user: &str, pass: &str) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let input = format!("{user}:{pass}").into_bytes();
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let n = chunk.len();
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= n {
                    out.push(ALPHABET[(v >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    const MESSAGE_FORM: &str =
        "To=%2B15558675310&From=%2B15017122661&Body=Hello+there%21&MediaUrl=https%3A%2F%2Fexample.com%2Fa.png";

    #[tokio::test]
    async fn a_message_create_gets_201_and_is_recorded_byte_for_byte() {
        let fake = FakeTwilio::start().await.unwrap();
        let url = format!("{}/2010-04-01/Accounts/{AC}/Messages.json", fake.url());
        let (status, headers, body) = send(&client(), post_form(url, MESSAGE_FORM)).await;

        assert_eq!(status, StatusCode::CREATED);
        let m = json(&body);
        assert!(Regex::new("^MM[0-9a-f]{32}$")
            .unwrap()
            .is_match(m["sid"].as_str().unwrap()));
        assert_eq!(m["to"], "+15558675310");
        assert_eq!(m["from"], "+15017122661");
        assert_eq!(m["body"], "Hello there!");
        assert_eq!(m["num_media"], "1");
        assert_eq!(m["status"], "queued");
        assert_eq!(m["account_sid"], AC);
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        assert!(headers["twilio-request-id"]
            .to_str()
            .unwrap()
            .starts_with("RQ"));
        assert_eq!(headers["x-api-domain"], "api.twilio.com");
        let host = fake.addr().to_string();
        assert_eq!(headers["x-fake-received-host"], host.as_str());

        assert_eq!(fake.count(), 1);
        let seen = &fake.requests()[0];
        assert_eq!(seen.method, Method::POST);
        assert_eq!(
            seen.uri.to_string(),
            format!("/2010-04-01/Accounts/{AC}/Messages.json")
        );
        assert_eq!(seen.body, Bytes::from_static(MESSAGE_FORM.as_bytes()));
        assert_eq!(
            seen.headers[CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(seen.host.as_deref(), Some(host.as_str()));
    }

    #[tokio::test]
    async fn a_message_without_to_is_refused_like_twilio_does() {
        let fake = FakeTwilio::start().await.unwrap();
        let url = format!("{}/2010-04-01/Accounts/{AC}/Messages", fake.url());
        let (status, _, body) = send(&client(), post_form(url, "Body=hi")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json(&body)["code"], 21604);
        assert_eq!(fake.count(), 1);
    }

    #[tokio::test]
    async fn delay_slows_every_answer() {
        let fake = FakeTwilio::start().await.unwrap();
        fake.set_delay(Duration::from_millis(300));
        let started = Instant::now();
        let url = format!("{}/2010-04-01/Accounts/{AC}/Balance.json", fake.url());
        let (status, _, _) = send(&client(), get(url.clone())).await;
        assert_eq!(status, StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_millis(300));

        fake.set_delay(Duration::ZERO);
        let started = Instant::now();
        send(&client(), get(url)).await;
        assert!(started.elapsed() < Duration::from_millis(300));
        assert_eq!(fake.count(), 2);
    }

    #[tokio::test]
    async fn failure_mode_answers_a_twilio_error_and_still_records() {
        let fake = FakeTwilio::start().await.unwrap();
        fake.set_failure(Some(StatusCode::SERVICE_UNAVAILABLE));
        let url = format!("{}/2010-04-01/Accounts/{AC}/Messages.json", fake.url());
        let (status, headers, body) = send(&client(), post_form(url.clone(), MESSAGE_FORM)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let e = json(&body);
        assert_eq!(e["code"], 20503);
        assert_eq!(e["status"], 503);
        assert_eq!(e["more_info"], "https://www.twilio.com/docs/errors/20503");
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        assert_eq!(fake.count(), 1);

        fake.set_failure(None);
        let (status, _, _) = send(&client(), post_form(url, MESSAGE_FORM)).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(fake.count(), 2);
    }

    #[tokio::test]
    async fn balance_calls_and_verify_answer_like_twilio() {
        let fake = FakeTwilio::start().await.unwrap();
        let c = client();
        fake.set_balance("0.05");
        let (status, _, body) = send(
            &c,
            get(format!(
                "{}/2010-04-01/Accounts/{AC}/Balance.json",
                fake.url()
            )),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            Bytes::from(format!(
                r#"{{"account_sid": "{AC}", "balance": "0.05", "currency": "USD"}}"#
            ))
        );

        let (status, _, body) = send(
            &c,
            post_form(
                format!("{}/2010-04-01/Accounts/{AC}/Calls.json", fake.url()),
                "To=%2B15558675310&From=%2B15017122661&Url=https%3A%2F%2Fexample.com%2Ft.xml",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let call = json(&body);
        assert!(call["sid"].as_str().unwrap().starts_with("CA"));
        assert_eq!(call["status"], "queued");

        let (status, headers, body) = send(
            &c,
            post_form(
                format!("{}/v2/Services/{VA}/Verifications", fake.url()),
                "To=%2B15558675310&Channel=sms",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(headers["x-api-domain"], "verify.twilio.com");
        let v = json(&body);
        assert!(v["sid"].as_str().unwrap().starts_with("VE"));
        assert_eq!(v["account_sid"], AC);
        assert_eq!(v["service_sid"], VA);
        assert_eq!(v["status"], "pending");

        let (status, _, body) = send(
            &c,
            post_form(
                format!("{}/v2/Services/{VA}/VerificationCheck", fake.url()),
                "To=%2B15558675310&Code=123456",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let check = json(&body);
        assert_eq!(check["status"], "approved");
        assert_eq!(check["valid"], true);
        assert_eq!(fake.count(), 4);
    }

    #[tokio::test]
    async fn participants_and_verify_v1_answer_like_twilio() {
        let fake = FakeTwilio::start().await.unwrap();
        let c = client();
        let cf = "CF0123456789abcdef0123456789abcdef";
        let (status, _, body) = send(
            &c,
            post_form(
                format!(
                    "{}/2010-04-01/Accounts/{AC}/Conferences/{cf}/Participants.json",
                    fake.url()
                ),
                "To=%2B15558675310&From=%2B15017122661&Label=agent",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let p = json(&body);
        assert!(p["call_sid"].as_str().unwrap().starts_with("CA"));
        assert_eq!(p["conference_sid"], cf);
        assert_eq!(p["label"], "agent");
        assert_eq!(p["status"], "queued");

        let (status, headers, body) = send(
            &c,
            post_form(
                format!("{}/v1/Services/{VA}/Verifications", fake.url()),
                "To=%2B15558675310&Channel=sms",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(headers["x-api-domain"], "verify.twilio.com");
        let v = json(&body);
        assert!(v["url"]
            .as_str()
            .unwrap()
            .starts_with("https://verify.twilio.com/v1/"));
        let (status, _, _) = send(
            &c,
            post_form(
                format!("{}/v1/Services/{VA}/VerificationCheck", fake.url()),
                "To=%2B15558675310&Code=123456",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn balance_delay_slows_only_the_balance() {
        let fake = FakeTwilio::start().await.unwrap();
        fake.set_balance_delay(Duration::from_secs(30));
        let url = format!("{}/2010-04-01/Accounts/{AC}/Messages.json", fake.url());
        let started = Instant::now();
        send(&client(), post_form(url, MESSAGE_FORM)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        let balance = format!("{}/2010-04-01/Accounts/{AC}/Balance.json", fake.url());
        let slow =
            tokio::time::timeout(Duration::from_millis(200), send(&client(), get(balance))).await;
        assert!(slow.is_err(), "the balance hangs");
        assert_eq!(fake.count(), 2, "and was recorded before the wait");
    }

    #[tokio::test]
    async fn other_requests_are_echoed_with_their_query_recorded() {
        let fake = FakeTwilio::start().await.unwrap();
        let url = format!(
            "{}/2010-04-01/Accounts/{AC}/Messages/SM0123.json?PageSize=2",
            fake.url()
        );
        let req = Request::get(url)
            .header(HOST, "api.twilio.com")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, headers, body) = send(&client(), req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            json(&body),
            serde_json::json!({"echo": true, "method": "GET", "path": format!("/2010-04-01/Accounts/{AC}/Messages/SM0123.json")})
        );
        assert_eq!(headers["x-fake-received-host"], "api.twilio.com");
        let seen = &fake.requests()[0];
        assert_eq!(
            seen.uri.to_string(),
            format!("/2010-04-01/Accounts/{AC}/Messages/SM0123.json?PageSize=2")
        );
        assert_eq!(seen.host.as_deref(), Some("api.twilio.com"));
    }

    #[tokio::test]
    async fn http2_prior_knowledge_is_served_and_recorded() {
        let fake = FakeTwilio::start().await.unwrap();
        let url = format!("{}/2010-04-01/Accounts/{AC}/Messages.json", fake.url());
        let resp = h2_client()
            .request(post_form(url, MESSAGE_FORM))
            .await
            .unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), StatusCode::CREATED);
        let seen = &fake.requests()[0];
        assert_eq!(
            seen.uri.to_string(),
            format!("/2010-04-01/Accounts/{AC}/Messages.json")
        );
        assert_eq!(seen.body, Bytes::from_static(MESSAGE_FORM.as_bytes()));
        assert_eq!(seen.host.as_deref(), Some(fake.addr().to_string().as_str()));
    }

    #[tokio::test]
    async fn stream_test_sends_chunks_over_time() {
        let fake = FakeTwilio::start().await.unwrap();
        let resp = client()
            .request(get(format!(
                "{}/stream-test?chunks=3&gap_ms=40",
                fake.url()
            )))
            .await
            .unwrap();
        let head_at = Instant::now();
        assert_eq!(resp.headers()["transfer-encoding"], "chunked");
        assert_eq!(resp.headers()[CONTENT_TYPE], "text/plain");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, Bytes::from_static(b"chunk 0\nchunk 1\nchunk 2\n"));
        // The head came before the later chunks were produced (two 40 ms gaps).
        assert!(head_at.elapsed() >= Duration::from_millis(60));
    }

    async fn refuses_connections(addr: SocketAddr) -> bool {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn shutdown_stops_listening() {
        let fake = FakeTwilio::start().await.unwrap();
        let clone = fake.clone();
        clone.shutdown();
        assert!(refuses_connections(fake.addr()).await);
    }

    #[tokio::test]
    async fn dropping_the_last_handle_stops_listening() {
        let fake = FakeTwilio::start().await.unwrap();
        let addr = fake.addr();
        let clone = fake.clone();
        drop(fake);
        // One handle left: still serving.
        assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
        drop(clone);
        assert!(refuses_connections(addr).await);
    }

    #[test]
    fn basic_auth_user_is_decoded() {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", encode_basic(AC, "secret"));
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
        assert_eq!(account_from_auth(&headers), AC);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(account_from_auth(&headers), FALLBACK_ACCOUNT);
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {}", encode_basic("SKkey", "s"))).unwrap(),
        );
        assert_eq!(account_from_auth(&headers), FALLBACK_ACCOUNT);
    }
}
