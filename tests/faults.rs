//! A battery of hostile cases kept as regression tests, through the real
//! listener: request smuggling spellings, method and path spellings on the
//! send paths, a reload racing a thousand sends, and files the guard cannot
//! read at start; and (in `faults/listener.rs`) every wait bounded. Raw TCP where a client library would normalize the bytes.
//!
//! The invariant throughout: a send to a number the policy stops never
//! reaches Twilio (the fake upstream records everything it receives), and
//! the client always learns what happened (a clear 4xx, or the send judged
//! and shadowed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use smsguard::telemetry::DecisionEvent;

/// Shadowed by `POLICY` (geo): a send to it must never reach Twilio.
const BLOCKED: &str = "+998993941234";
const BLOCKED_FORM: &str = "To=%2B998993941234&From=%2B15017122661&Body=x&Channel=sms";
const POLICY: &str = "[geo]\nallow = [\"US\"]\n";
const CALLS: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json";
const VERIFICATIONS: &str = "/v2/Services/VA0123456789abcdef0123456789abcdef/Verifications";

/// Every decision the guard records, in order.
type Events = Arc<Mutex<Vec<DecisionEvent>>>;

fn record_decisions(env: &Env) -> Events {
    let events: Events = Arc::default();
    let sink = events.clone();
    assert!(env
        .guard
        .app()
        .set_decision_sink(Arc::new(move |e: &DecisionEvent| {
            sink.lock().unwrap().push(e.clone())
        })));
    events
}

// ---------------------------------------------------------------- raw HTTP

/// One response as read off the wire.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Splits what the guard wrote into responses (Content-Length, chunked, or
/// up to the end of the connection).
fn parse_responses(mut buf: &[u8]) -> Vec<RawResponse> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            panic!(
                "a partial response head: {:?}",
                String::from_utf8_lossy(buf)
            );
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf = &buf[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let body = if let Some(len) = get("content-length") {
            let len: usize = len.parse().unwrap();
            let len = len.min(buf.len());
            let b = buf[..len].to_vec();
            buf = &buf[len..];
            b
        } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            let mut b = Vec::new();
            loop {
                let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                    buf = &[];
                    break;
                };
                let size_text = String::from_utf8_lossy(&buf[..eol]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                    .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
                buf = &buf[eol + 2..];
                if size == 0 {
                    // Trailers, then the empty line.
                    let end = buf
                        .windows(2)
                        .position(|w| w == b"\r\n")
                        .map_or(buf.len(), |p| p + 2);
                    buf = &buf[end..];
                    break;
                }
                let n = size.min(buf.len());
                b.extend_from_slice(&buf[..n]);
                buf = &buf[(n + 2).min(buf.len())..];
            }
            b
        } else if status < 200 || status == 204 || status == 304 {
            Vec::new()
        } else {
            std::mem::take(&mut buf).to_vec()
        };
        out.push(RawResponse {
            status,
            headers,
            body,
        });
    }
    out
}

/// Writes `bytes` on a new connection and reads until the guard closes it
/// or has said nothing more for a moment.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<RawResponse> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let wait = if got.is_empty() {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(400)
        };
        let wait = wait.min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    parse_responses(&got)
}

/// A request head for a form POST; `extra` header lines end in CRLF.
fn head(method: &str, path: &str, extra: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: guard\r\nAuthorization: {AUTH}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n{extra}\r\n"
    )
}

/// A complete, well-formed send to the blocked number that closes the
/// connection after it: the "hidden" request of smuggling attempts.
fn hidden(path: &str) -> String {
    format!(
        "{}{BLOCKED_FORM}",
        head(
            "POST",
            path,
            &format!(
                "Content-Length: {}\r\nConnection: close\r\n",
                BLOCKED_FORM.len()
            )
        )
    )
}

fn chunked(body: &str) -> String {
    format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
}

// ---------------------------------------------------------------- smuggling

/// Checks one hostile exchange: every answer is a 4xx or a shadow the
/// guard made for the blocked number (recorded as such), and Twilio saw
/// nothing.
async fn assert_never_forwarded(env: &Env, events: &Events, name: &str, bytes: &[u8]) {
    let before = events.lock().unwrap().len();
    let answers = exchange(env.guard.addr(), bytes).await;
    // The resource a shadow fakes: a Message, a Call or a Verification.
    let sid = if name.contains("/Calls") {
        "CA"
    } else if name.contains("/Verifications") {
        "VE"
    } else {
        "SM"
    };
    eprintln!(
        "{name}: {:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert!(
        !answers.is_empty(),
        "{name}: the client got no answer at all"
    );
    let mut shadows = 0;
    for a in &answers {
        match a.status {
            400..=499 => {}
            201 => {
                assert!(
                    a.header("x-fake-received-host").is_none(),
                    "{name}: a send was forwarded: {a:?}"
                );
                let v = a.json();
                assert_eq!(v["to"], BLOCKED, "{name}: judged another number: {v}");
                assert!(
                    v["sid"].as_str().is_some_and(|s| s.starts_with(sid)),
                    "{name}: {v}"
                );
                shadows += 1;
            }
            other => panic!(
                "{name}: neither a 4xx nor a shadow: {other} {:?}",
                String::from_utf8_lossy(&a.body)
            ),
        }
    }
    assert_eq!(
        env.upstream_count(),
        0,
        "{name}: reached Twilio: {:?}",
        env.fake.requests()
    );
    let recorded = events.lock().unwrap()[before..]
        .iter()
        .filter(|e| e.action == "shadow" && e.to.as_deref() == Some(BLOCKED))
        .count();
    assert_eq!(
        recorded, shadows,
        "{name}: every shadow answered is a recorded decision"
    );
}

/// Hostile framings of a send to the blocked number on `path`, each
/// followed by a hidden send to it where that makes sense: (name, bytes).
fn smuggling_cases(path: &str) -> Vec<(&'static str, String)> {
    let b = BLOCKED_FORM;
    let len = b.len();
    let h = hidden(path);
    let close = "Connection: close\r\n";
    vec![
        // CL.TE: a front end reading Content-Length sees a short body; one
        // reading chunked sees an empty body and then the hidden request.
        (
            "CL.TE",
            format!(
                "{}0\r\n\r\n{h}",
                head(
                    "POST",
                    path,
                    &format!("Content-Length: {}\r\nTransfer-Encoding: chunked\r\n", 5 + h.len())
                )
            ),
        ),
        (
            "CL.TE with the body in the chunk",
            format!(
                "{}{}{h}",
                head(
                    "POST",
                    path,
                    "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n"
                ),
                chunked(b)
            ),
        ),
        // TE.CL: chunked first, a Content-Length that ends inside the chunk.
        (
            "TE.CL",
            format!(
                "{}{}{h}",
                head(
                    "POST",
                    path,
                    "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"
                ),
                chunked(b)
            ),
        ),
        (
            "two Content-Length headers",
            format!(
                "{}{b}{h}",
                head(
                    "POST",
                    path,
                    &format!("Content-Length: {len}\r\nContent-Length: {}\r\n", len + h.len())
                )
            ),
        ),
        (
            "one Content-Length header with two values",
            format!(
                "{}{b}{h}",
                head(
                    "POST",
                    path,
                    &format!("Content-Length: {len}, {}\r\n", len + h.len())
                )
            ),
        ),
        (
            "two equal Content-Length headers",
            format!(
                "{}{b}",
                head(
                    "POST",
                    path,
                    &format!("Content-Length: {len}\r\nContent-Length: {len}\r\n{close}")
                )
            ),
        ),
        (
            "Content-Length with a plus sign",
            format!(
                "{}{b}{h}",
                head("POST", path, &format!("Content-Length: +{len}\r\n"))
            ),
        ),
        (
            "Content-Length negative",
            format!(
                "{}{b}{h}",
                head("POST", path, "Content-Length: -1\r\n")
            ),
        ),
        (
            "Content-Length with a space inside",
            format!(
                "{}{b}{h}",
                head(
                    "POST",
                    path,
                    &format!("Content-Length: {} {}\r\n", len / 10, len % 10)
                )
            ),
        ),
        (
            "Content-Length padded with spaces and a tab",
            format!(
                "{}{b}",
                head(
                    "POST",
                    path,
                    &format!("Content-Length:   {len} \t\r\n{close}")
                )
            ),
        ),
        (
            "Content-Length in hex",
            format!(
                "{}{b}{h}",
                head("POST", path, &format!("Content-Length: 0x{len:x}\r\n"))
            ),
        ),
        (
            "a space before the colon",
            format!(
                "{}{b}{h}",
                head("POST", path, &format!("Content-Length : {len}\r\n"))
            ),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            format!(
                "{}{}{h}",
                head(
                    "POST",
                    path,
                    &format!("Transfer-Encoding: chunked, identity\r\nContent-Length: {len}\r\n")
                ),
                chunked(b)
            ),
        ),
        (
            "Transfer-Encoding split over two headers, identity last",
            format!(
                "{}{}{h}",
                head(
                    "POST",
                    path,
                    "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"
                ),
                chunked(b)
            ),
        ),
        (
            "Transfer-Encoding: xchunked",
            format!(
                "{}{}{h}",
                head(
                    "POST",
                    path,
                    &format!("Transfer-Encoding: xchunked\r\nContent-Length: {len}\r\n")
                ),
                chunked(b)
            ),
        ),
        (
            "Transfer-Encoding: identity",
            format!(
                "{}{b}{h}",
                head("POST", path, "Transfer-Encoding: identity\r\n")
            ),
        ),
        (
            "Transfer-Encoding upper case",
            format!(
                "{}{}",
                head(
                    "POST",
                    path,
                    &format!("Transfer-Encoding: CHUNKED\r\n{close}")
                ),
                chunked(b)
            ),
        ),
        (
            "Transfer-Encoding with obs-fold",
            format!(
                "{}{}{h}",
                head(
                    "POST",
                    path,
                    &format!("Transfer-Encoding:\r\n chunked\r\nContent-Length: {len}\r\n")
                ),
                chunked(b)
            ),
        ),
        (
            "Transfer-Encoding hidden by obs-fold of another header",
            format!(
                "{}{}{h}",
                head(
                    "POST",
                    path,
                    &format!("X-Note: a\r\n Transfer-Encoding: chunked\r\nContent-Length: {len}\r\n")
                ),
                chunked(b)
            ),
        ),
        (
            "Transfer-Encoding with a tab before the value",
            format!(
                "{}{}",
                head(
                    "POST",
                    path,
                    &format!("Transfer-Encoding:\tchunked\r\n{close}")
                ),
                chunked(b)
            ),
        ),
        (
            "chunk extensions",
            format!(
                "{}{:x};name=value;q=\"a;b\"\r\n{b}\r\n0;last\r\n\r\n",
                head(
                    "POST",
                    path,
                    &format!("Transfer-Encoding: chunked\r\n{close}")
                ),
                len
            ),
        ),
        (
            "a chunk extension hiding a line break",
            format!(
                "{}{:x};x=\"\n{h}\"\r\n{b}\r\n0\r\n\r\n",
                head("POST", path, "Transfer-Encoding: chunked\r\n"),
                len
            ),
        ),
        (
            "a chunk size with a sign",
            format!(
                "{}+{:x}\r\n{b}\r\n0\r\n\r\n{h}",
                head("POST", path, "Transfer-Encoding: chunked\r\n"),
                len
            ),
        ),
        (
            "a chunk size that overflows",
            format!(
                "{}1000000000000000{:x}\r\n{b}\r\n0\r\n\r\n{h}",
                head("POST", path, "Transfer-Encoding: chunked\r\n"),
                len
            ),
        ),
        (
            "chunks split inside the number, trailers after",
            {
                let (x, y) = b.split_at(12);
                format!(
                    "{}{:x}\r\n{x}\r\n{:x}\r\n{y}\r\n0\r\nX-Trailer: To=%2B14155550123\r\n\r\n",
                    head(
                        "POST",
                        path,
                        &format!("Transfer-Encoding: chunked\r\n{close}")
                    ),
                    x.len(),
                    y.len()
                )
            },
        ),
        // A Content-Length shorter than the body: the rest is a second,
        // pipelined request, which must be judged in its own right.
        (
            "pipelined request after a short Content-Length",
            format!(
                "{}{b}{h}",
                head("POST", path, &format!("Content-Length: {len}\r\n"))
            ),
        ),
        (
            "a request hidden in the body",
            {
                let body = format!("{b}&Note={}", h.replace("\r\n", "%0D%0A"));
                format!(
                    "{}{body}",
                    head(
                        "POST",
                        path,
                        &format!("Content-Length: {}\r\n{close}", body.len())
                    )
                )
            },
        ),
        (
            "a raw request hidden in the body",
            {
                let body = format!("{b}\r\n\r\n{h}");
                format!(
                    "{}{body}",
                    head(
                        "POST",
                        path,
                        &format!("Content-Length: {}\r\n", body.len())
                    )
                )
            },
        ),
        (
            "HTTP/1.0 with chunked",
            format!(
                "POST {path} HTTP/1.0\r\nHost: guard\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{}{h}",
                chunked(b)
            ),
        ),
        (
            "a bare LF between headers",
            format!(
                "{}{b}{h}",
                head(
                    "POST",
                    path,
                    &format!("X-A: 1\nContent-Length: {len}\r\n")
                )
            ),
        ),
    ]
}

#[tokio::test]
async fn smuggling_spellings_never_forward_a_send_to_a_blocked_number() {
    let env = start(POLICY).await;
    let events = record_decisions(&env);
    let mut n = 0;
    for path in [MESSAGES, CALLS, VERIFICATIONS] {
        for (name, bytes) in smuggling_cases(path) {
            let name = format!("{name} on {path}");
            assert_never_forwarded(&env, &events, &name, bytes.as_bytes()).await;
            n += 1;
        }
    }
    assert_eq!(n, 90);
    assert_eq!(env.upstream_count(), 0);
    // The guard still judges a plain send after all that.
    let r = env.post_form(MESSAGES, "To=%2B14155550123&Body=x").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(env.upstream_count(), 1);
}

// ---------------------------------------------------------------- methods

#[tokio::test]
async fn every_method_spelling_on_every_send_path_is_refused_with_20004() {
    let env = start(POLICY).await;
    let events = record_decisions(&env);
    let paths = [
        MESSAGES.to_string(),
        MESSAGES.trim_end_matches(".json").to_string(),
        CALLS.to_string(),
        CALLS.replace(".json", ".xml"),
        VERIFICATIONS.to_string(),
        format!("{VERIFICATIONS}/"),
    ];
    let methods = [
        "post", "Post", "pOST", "PoSt", "posT", "PUT", "put", "Put", "PATCH", "patch", "PaTcH",
    ];
    let mut n = 0;
    for method in methods {
        for path in &paths {
            // An allowed number too: the method alone decides.
            for body in [BLOCKED_FORM, "To=%2B14155550123&Body=x&Channel=sms"] {
                let bytes = format!(
                    "{}{body}",
                    head(
                        method,
                        path,
                        &format!("Content-Length: {}\r\nConnection: close\r\n", body.len())
                    )
                );
                let answers = exchange(env.guard.addr(), bytes.as_bytes()).await;
                assert_eq!(answers.len(), 1, "{method} {path}");
                let a = &answers[0];
                assert_eq!(a.status, 405, "{method} {path}");
                let v = a.json();
                assert_eq!(v["code"], 20004, "{method} {path}: {v}");
                assert_eq!(v["status"], 405, "{method} {path}: {v}");
                assert_eq!(
                    v["more_info"], "https://www.twilio.com/docs/errors/20004",
                    "{method} {path}"
                );
                n += 1;
            }
        }
    }
    assert_eq!(env.upstream_count(), 0, "nothing reached Twilio");
    // Each refusal is a recorded decision.
    let events = events.lock().unwrap();
    assert_eq!(events.len(), n);
    assert!(events
        .iter()
        .all(|e| e.action == "reject" && e.rule.as_deref() == Some("malformed")));
}

// ---------------------------------------------------------------- paths

#[tokio::test]
async fn path_tricks_on_send_paths_are_judged_or_refused_never_forwarded() {
    let env = start(POLICY).await;
    let events = record_decisions(&env);
    let acc = "AC0123456789abcdef0123456789abcdef";
    let va = "VA0123456789abcdef0123456789abcdef";
    let mut paths = Vec::new();
    for (dir, leaf) in [
        (format!("/2010-04-01/Accounts/{acc}"), "Messages.json"),
        (format!("/2010-04-01/Accounts/{acc}"), "Calls.json"),
        (format!("/v2/Services/{va}"), "Verifications"),
    ] {
        let (stem, ext) = leaf.split_once('.').unwrap_or((leaf, ""));
        let dot_ext = if ext.is_empty() {
            String::new()
        } else {
            format!(".{ext}")
        };
        let encoded_dir = dir.replace('/', "%2F");
        paths.extend([
            // Encoded slashes.
            format!("{dir}%2F{leaf}"),
            format!("{dir}%2f{leaf}"),
            format!("/{}%2F{leaf}", &encoded_dir[3..]),
            // Encoded dots.
            format!("{dir}/{stem}%2E{}", ext),
            format!("{dir}/{stem}%2e{}", ext),
            format!("{dir}/%2e/{leaf}"),
            format!("{dir}/x/%2e%2e/{leaf}"),
            format!("{dir}/x/%2E%2E%2F{leaf}"),
            // Doubled and dot segments.
            format!("/{dir}//{leaf}"),
            format!("{dir}/./{leaf}"),
            format!("{dir}/././{leaf}"),
            format!("{dir}/x/../{leaf}"),
            // Trailing dot, slash, case.
            format!("{dir}/{leaf}."),
            format!("{dir}/{leaf}/"),
            format!("{dir}/{leaf}/."),
            format!("{dir}/{}", leaf.to_ascii_uppercase()),
            format!("{dir}/{stem}{}", dot_ext.to_ascii_uppercase()),
            format!("{}/{leaf}", dir.to_ascii_lowercase()),
            // Path parameters.
            format!("{dir}/{leaf};x=1"),
            format!("{dir}/{stem};x=1{dot_ext}"),
            format!("{dir}/{leaf};"),
            format!("{dir};x=1/{leaf}"),
            format!("{dir}/{leaf}%3Bx=1"),
            // Other encodings of the same name.
            format!("{dir}/%{:02X}{}", stem.as_bytes()[0], &leaf[1..]),
            format!("{dir}/{}", leaf.replace('s', "%73")),
            format!("{dir}/{leaf}%20"),
            format!("{dir}/{leaf}%09"),
            format!("{dir}/{leaf}%00"),
            // Found by the fuzzer: cut at the NUL, then trimmed.
            format!("{dir}/{stem}%20%00"),
            format!("{dir}/{leaf}%5C"),
            format!("{dir}\\{leaf}"),
        ]);
    }
    // Some spellings coincide for a path without an extension.
    let mut seen = BTreeSet::new();
    paths.retain(|p| seen.insert(p.clone()));
    let mut judged = 0;
    for path in &paths {
        let before = events.lock().unwrap().len();
        let bytes = format!(
            "{}{BLOCKED_FORM}",
            head(
                "POST",
                path,
                &format!(
                    "Content-Length: {}\r\nConnection: close\r\n",
                    BLOCKED_FORM.len()
                )
            )
        );
        let answers = exchange(env.guard.addr(), bytes.as_bytes()).await;
        assert_eq!(answers.len(), 1, "{path}");
        let a = &answers[0];
        eprintln!("{path}: {}", a.status);
        assert_eq!(
            env.upstream_count(),
            0,
            "{path} reached Twilio: {} {:?}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
        match a.status {
            201 => {
                assert!(a.header("x-fake-received-host").is_none(), "{path}");
                assert_eq!(a.json()["to"], BLOCKED, "{path}");
                let ev = events.lock().unwrap();
                assert!(
                    ev[before..]
                        .iter()
                        .any(|e| e.action == "shadow" && e.rule.as_deref() == Some("geo:UZ")),
                    "{path}: shadowed without a recorded decision"
                );
                judged += 1;
            }
            400..=499 => {}
            other => panic!(
                "{path}: neither judged nor refused: {other} {:?}",
                String::from_utf8_lossy(&a.body)
            ),
        }
    }
    assert!(judged > 0, "the plain spellings are judged as sends");
    assert_eq!(env.upstream_count(), 0);
}

// ---------------------------------------------------------------- reload race

const TOKEN_ENV: &str = "SMSGUARD_FAULTS_ADMIN_TOKEN";
const TOKEN: &str = "faults-admin-token-5e1c";

/// Policy A shadows UZ and lets GB through; policy B rejects GB and lets UZ
/// through. A send judged half by each would get a third answer: UZ
/// rejected, or GB shadowed.
fn race_policy(fake: &str, deny: &str, action: &str) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\
         [upstream]\napi = \"{fake}\"\nverify = \"{fake}\"\n\
         [shadow]\ntiming = false\n\
         [admin]\naddr = \"127.0.0.1:0\"\ntoken_env = \"{TOKEN_ENV}\"\n\
         [actions]\nnumber = \"{action}\"\n\
         [geo]\ndeny = [\"{deny}\"]\n"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// A: UZ shadowed.
    UzShadowed,
    /// B: UZ forwarded.
    UzForwarded,
    /// A: GB forwarded.
    GbForwarded,
    /// B: GB rejected with 21408.
    GbRejected,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_racing_a_thousand_sends_judges_each_by_one_whole_policy() {
    std::env::set_var(TOKEN_ENV, TOKEN);
    let fake = smsguard::twilio::fake::FakeTwilio::start().await.unwrap();
    let dir = temp_dir("reload");
    let file = dir.join("policy.toml");
    let a = race_policy(&fake.url(), "UZ", "shadow");
    let b = race_policy(&fake.url(), "GB", "reject");
    std::fs::write(&file, &a).unwrap();
    let config = smsguard::config::Config::load(&file).unwrap();
    let clock = smsguard::base::clock::ManualClock::starting_now();
    let guard = smsguard::guard::Guard::start(config, Arc::new(clock.clone()))
        .await
        .unwrap();
    guard.app().set_config_path(file.clone());
    let env = Env {
        fake,
        guard,
        clock,
        client: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http(),
    };
    let events = record_decisions(&env);
    let admin = format!("http://{}/api/reload", env.guard.admin_addr().unwrap());

    // The reloader: A -> B -> A ... as fast as the admin API answers, while
    // the sends run, and at least six times.
    let done = Arc::new(AtomicBool::new(false));
    let reloads = Arc::new(AtomicUsize::new(0));
    let reloader = {
        let (done, reloads, client, file) = (
            done.clone(),
            reloads.clone(),
            env.client.clone(),
            file.clone(),
        );
        let (a, b) = (a.clone(), b.clone());
        tokio::spawn(async move {
            let mut next_b = true;
            while !done.load(Ordering::SeqCst) || reloads.load(Ordering::SeqCst) < 6 {
                std::fs::write(&file, if next_b { &b } else { &a }).unwrap();
                let r = client
                    .request(
                        Request::post(&admin)
                            .header("authorization", format!("Bearer {TOKEN}"))
                            .body(Full::new(Bytes::new()))
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK, "reload");
                reloads.fetch_add(1, Ordering::SeqCst);
                next_b = !next_b;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    const SENDS: usize = 1000;
    let permits = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SENDS {
        let (client, url, permits) = (env.client.clone(), env.url(MESSAGES), permits.clone());
        let to = if i % 2 == 0 {
            format!("+99899394{:04}", i / 2)
        } else {
            format!("+447400{:06}", i / 2)
        };
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            let form = format!("To={}&Body=race", to.replace('+', "%2B"));
            let resp = client
                .request(
                    Request::post(url)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .header("authorization", AUTH)
                        .body(Full::new(Bytes::from(form)))
                        .unwrap(),
                )
                .await
                .expect("the guard answers every send");
            let status = resp.status();
            let forwarded = resp.headers().contains_key("x-fake-received-host");
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (to, status, forwarded, v)
        });
    }
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut reloads_during = 0;
    while let Some(r) = tasks.join_next().await {
        let (to, status, forwarded, v) = r.unwrap();
        let uz = to.starts_with("+998");
        let outcome = match (uz, status.as_u16(), forwarded) {
            (true, 201, false) if v["sid"].as_str().is_some_and(|s| s.starts_with("SM")) => {
                Outcome::UzShadowed
            }
            (true, 201, true) => Outcome::UzForwarded,
            (false, 201, true) => Outcome::GbForwarded,
            (false, 400, false) if v["code"] == 21408 => Outcome::GbRejected,
            other => panic!("{to}: an answer neither policy gives: {other:?} {v}"),
        };
        outcomes.insert(to, outcome);
        reloads_during = reloads.load(Ordering::SeqCst);
    }
    done.store(true, Ordering::SeqCst);
    reloader.await.unwrap();

    eprintln!("{SENDS} sends, {reloads_during} reloads while they ran");
    assert_eq!(outcomes.len(), SENDS, "every send answered once");
    assert!(
        reloads_during >= 4,
        "the policy changed under the sends: {reloads_during} reloads"
    );
    let seen: BTreeSet<Outcome> = outcomes.values().copied().collect();
    assert_eq!(
        seen.len(),
        4,
        "both policies judged both regions: {seen:?} (reloads: {reloads_during})"
    );

    // Every send judged once, and its recorded decision is the one answered.
    let events = events.lock().unwrap();
    assert_eq!(events.len(), SENDS, "one decision per send");
    let mut decided: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    for e in events.iter() {
        let to = e.to.clone().expect("a judged send names its number");
        assert!(
            decided
                .insert(to.clone(), (e.action.to_string(), e.rule.clone()))
                .is_none(),
            "{to} judged twice"
        );
    }
    for (to, outcome) in &outcomes {
        let (action, rule) = &decided[to];
        let want: (&str, Option<&str>) = match outcome {
            Outcome::UzShadowed => ("shadow", Some("geo:UZ")),
            Outcome::GbRejected => ("reject", Some("geo:GB")),
            Outcome::UzForwarded | Outcome::GbForwarded => ("allow", None),
        };
        assert_eq!(
            (action.as_str(), rule.as_deref()),
            want,
            "{to}: answered {outcome:?}"
        );
    }
    // Exactly the forwarded sends reached Twilio, each once.
    let mut reached: Vec<String> = env
        .fake
        .requests()
        .iter()
        .map(|r| {
            let form: BTreeMap<String, String> =
                form_urlencoded::parse(&r.body).into_owned().collect();
            form["To"].clone()
        })
        .collect();
    reached.sort();
    let forwarded: Vec<String> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::UzForwarded | Outcome::GbForwarded))
        .map(|(to, _)| to.clone())
        .collect();
    assert_eq!(reached, forwarded);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- unreadable files at start

/// Runs `smsguard serve --config FILE` and waits (bounded) for it to exit;
/// a guard that starts instead is stopped and reported.
fn serve_fails(config: &Path) -> (i32, String, Duration) {
    use std::io::Read;
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_smsguard"))
        .args(["serve", "--config"])
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{}: the guard started instead of failing", config.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().unwrap_or(-1), err, started.elapsed())
}

/// Makes `path` unreadable: mode 000, or (when that does not stop this
/// process, as for root) a directory in its place.
fn make_unreadable(path: &Path, content: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(path).is_ok() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(path).unwrap();
        std::fs::create_dir(path).unwrap();
    }
}

fn assert_fails_naming(config: &Path, named: &Path, what: &str) {
    let (code, err, took) = serve_fails(config);
    assert_ne!(code, 0, "{what}: exit status\n{err}");
    assert!(
        err.contains(&named.display().to_string()),
        "{what}: the error names {}:\n{err}",
        named.display()
    );
    assert!(
        took < Duration::from_secs(5),
        "{what}: took {took:?} to fail"
    );
}

#[test]
fn an_unreadable_policy_file_stops_serve_with_its_name() {
    let dir = temp_dir("policy");
    let good = "[listen]\naddr = \"127.0.0.1:0\"\n[geo]\nallow = [\"US\"]\n";

    let missing = dir.join("missing.toml");
    assert_fails_naming(&missing, &missing, "a missing policy file");

    let locked = dir.join("locked.toml");
    make_unreadable(&locked, good);
    assert_fails_naming(&locked, &locked, "an unreadable policy file");

    let folder = dir.join("folder.toml");
    std::fs::create_dir(&folder).unwrap();
    assert_fails_naming(&folder, &folder, "a directory as the policy file");

    let garbage = dir.join("garbage.toml");
    std::fs::write(&garbage, b"\xff\xfe[listen\x00").unwrap();
    assert_fails_naming(&garbage, &garbage, "a policy file that is not TOML");

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreadable_ca_file_stops_serve_with_its_name() {
    let dir = temp_dir("ca");
    let certs = dir.join("certs");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smsguard"))
        .args(["ca", "init", "--dir"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ca init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (cert, key) = (certs.join("ca.pem"), certs.join("ca.key"));
    assert!(cert.is_file() && key.is_file());
    let config = |cert: &Path, key: &Path| {
        let path = dir.join("policy.toml");
        std::fs::write(
            &path,
            format!(
                "[listen]\naddr = \"127.0.0.1:0\"\nproxy = true\n\
                 [ca]\ncert = \"{}\"\nkey = \"{}\"\n[geo]\nallow = [\"US\"]\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        path
    };

    let missing = dir.join("nope.pem");
    assert_fails_naming(
        &config(&missing, &key),
        &missing,
        "a missing CA certificate",
    );

    let locked = dir.join("locked.pem");
    make_unreadable(&locked, &std::fs::read_to_string(&cert).unwrap());
    assert_fails_naming(
        &config(&locked, &key),
        &locked,
        "an unreadable CA certificate",
    );

    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    assert_fails_naming(
        &config(&garbage, &key),
        &garbage,
        "a CA certificate that is not PEM",
    );

    let locked_key = dir.join("locked.key");
    make_unreadable(&locked_key, &std::fs::read_to_string(&key).unwrap());
    assert_fails_naming(
        &config(&cert, &locked_key),
        &locked_key,
        "an unreadable CA key",
    );

    let missing_key = dir.join("nope.key");
    assert_fails_naming(
        &config(&cert, &missing_key),
        &missing_key,
        "a missing CA key",
    );

    // The same files, readable, start a guard: the failures above are the
    // files' doing.
    let path = config(&cert, &key);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_smsguard"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("SMSGUARD_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    let listening = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains("listening") => break true,
            Ok(l) => lines.push(l),
            Err(_) => break false,
        }
    };
    let exited = child.try_wait().unwrap();
    child.kill().ok();
    child.wait().unwrap();
    assert!(
        listening && exited.is_none(),
        "a readable CA starts the guard: {exited:?}\n{}",
        lines.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// --- timeouts and caps (listener) ---

/// Silent and idle connections, one address holding every slot, stalled
/// and trickling upstreams, a stalled client body, a stop during tunnels.
#[path = "faults/listener.rs"]
mod listener;
