//! `handler`: raw bytes on one client connection to the real guard handler,
//! in front of the in-process fake Twilio.
//!
//! The guard's handler (`smsguard::pipeline::egress::handle`, what `Guard::start`
//! serves) runs behind the same hyper `auto` builder as `server.rs` (HTTP/1.1
//! and HTTP/2 prior knowledge, upgrades on), over an in-memory duplex pipe;
//! its upstream is a `FakeTwilio` on 127.0.0.1 that records what reached
//! it. The runtime, the fake and the guard are built once per process. The
//! only difference from `server.rs`: HTTP/1 half-close is on, so that the
//! client can end its input with EOF and still get every answer (hyper
//! would otherwise drop in-flight requests when it sees the EOF).
//!
//! The policy shadows every destination (geo allow-list of one country,
//! every number type blocked, invalid numbers rejected, no safe list, no
//! monitor mode). So the invariant is:
//!
//!   whatever the bytes, the upstream never receives a request that the
//!   reference reading (`smsguard_fuzz::paid_send`: a writing method on a
//!   path some plausible server reads as Messages/Calls/Verifications
//!   create) classifies as a paid send; the only exception is a Verify
//!   create whose single Channel is `email` or `sna` (free, forwarded
//!   unjudged by design).
//!
//! A break means a send reached Twilio without being judged: request
//! smuggling, a path or method spelling the router missed, a framing the
//! guard and the upstream read differently.
#![no_main]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use smsguard::base::clock::SystemClock;
use smsguard::config::Config;
use smsguard::twilio::fake::FakeTwilio;
use smsguard::pipeline::App;
use smsguard::net::server::ConnInfo;
use smsguard::store::MemoryStore;
use smsguard_fuzz::path::Trim;
use smsguard_fuzz::{paid_send, show};

/// Rebuild the fake (and the guard in front of it) after this many
/// recorded upstream requests, so memory stays flat.
const RECYCLE_AFTER: usize = 4096;

struct Env {
    fake: FakeTwilio,
    app: Arc<App>,
    seen: usize,
}

struct Harness {
    rt: tokio::runtime::Runtime,
    env: Mutex<Option<Env>>,
}

fn policy(upstream: &str) -> String {
    // Self-test of the harness: with a policy that allows everything, the
    // plain send seed must trip the invariant (see fuzz/README.md).
    if std::env::var_os("SMSGUARD_FUZZ_HANDLER_SELFTEST").is_some() {
        return format!(
            "[upstream]\napi = \"{upstream}\"\nverify = \"{upstream}\"\n\
             [shadow]\ntiming = false\n[actions]\ndefault = \"allow\"\n"
        );
    }
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
max_body = "64KiB"

[upstream]
api = "{upstream}"
verify = "{upstream}"
timeout = "5s"

[shadow]
timing = false

[actions]
default = "shadow"
invalid = "reject"

[geo]
allow = ["US"]

[numbers]
default_region = "US"
require_valid = true
block_types = ["fixed_line", "mobile", "fixed_line_or_mobile", "toll_free", "premium_rate",
  "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail", "unknown"]
"#
    )
}

async fn build() -> Env {
    let fake = FakeTwilio::start().await.expect("fake Twilio starts");
    let text = policy(&fake.url());
    let config = Config::parse(Path::new("fuzz-handler.toml"), &text)
        .unwrap_or_else(|e| panic!("harness policy: {e}"));
    let store = MemoryStore::new(config.store.capacity, config.store.block_capacity);
    let app = App::new(Arc::new(config), Arc::new(store), Arc::new(SystemClock))
        .expect("guard app builds");
    Env {
        fake,
        app: Arc::new(app),
        seen: 0,
    }
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        // libFuzzer's C++ main, unlike a Rust main, leaves SIGPIPE at its
        // default (terminate): a write to a connection the other side closed
        // (the guard's pooled upstream connection to a recycled fake) would
        // kill the fuzzer. A handler, installed through tokio, makes it
        // harmless (the write gets EPIPE, as in `smsguard serve`).
        rt.spawn(async {
            if let Ok(mut pipe) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::pipe())
            {
                while pipe.recv().await.is_some() {}
            }
        });
        let env = rt.block_on(build());
        Harness {
            rt,
            env: Mutex::new(Some(env)),
        }
    })
}

/// Feeds `data` on one connection, half-closes, reads every answer.
async fn exchange(app: Arc<App>, data: &[u8]) -> Result<Vec<u8>, &'static str> {
    let (client, server) = tokio::io::duplex(1 << 20);
    // A connection outside a listener, as the replay engine serves one.
    let info = ConnInfo::detached(SocketAddr::from(([127, 0, 0, 1], 40000)));
    let conn = tokio::spawn(async move {
        let svc = service_fn(move |req| {
            let (app, info) = (app.clone(), info.clone());
            async move { Ok::<_, Infallible>(smsguard::pipeline::egress::handle(app, None, req, info).await) }
        });
        // As server.rs builds it (plus half-close, see the module docs).
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(5))
            .keep_alive(true)
            .half_close(true);
        builder.http2().timer(TokioTimer::new());
        let _ = builder
            .serve_connection_with_upgrades(TokioIo::new(server), svc)
            .await;
    });
    let (mut rd, mut wr) = tokio::io::split(client);
    let write = async {
        let _ = wr.write_all(data).await;
        let _ = wr.shutdown().await;
    };
    let read = async {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        out
    };
    let both = async { tokio::join!(write, read).1 };
    let answer = tokio::time::timeout(Duration::from_secs(10), both)
        .await
        .map_err(|_| "the guard did not finish the connection within 10 s")?;
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .map_err(|_| "the connection task did not end within 10 s")?
        .map_err(|_| "the connection task panicked")?;
    Ok(answer)
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 64 * 1024 {
        return;
    }
    let h = harness();
    let mut guard = h.env.lock().unwrap_or_else(|p| p.into_inner());
    if guard.as_ref().is_some_and(|e| e.seen >= RECYCLE_AFTER) {
        if let Some(old) = guard.take() {
            old.fake.shutdown();
        }
    }
    if guard.is_none() {
        *guard = Some(h.rt.block_on(build()));
    }
    let env = guard.as_mut().expect("built above");
    let app = env.app.clone();
    let result = h.rt.block_on(exchange(app, data));
    let answer = match result {
        Ok(a) => a,
        Err(why) => panic!("HANG: {why}; input {:?}", show(data)),
    };
    if std::env::var_os("SMSGUARD_FUZZ_DEBUG").is_some() {
        eprintln!(
            "answer: {}\nupstream saw {} request(s)",
            show(&answer[..answer.len().min(4096)]),
            env.fake.count() - env.seen
        );
    }
    if env.fake.count() <= env.seen {
        return;
    }
    let recorded = env.fake.requests();
    for rec in recorded.iter().skip(env.seen) {
        let path = rec.uri.path();
        if let Some(kind) = paid_send(
            rec.method.as_str().as_bytes(),
            path.as_bytes(),
            &rec.body,
            Trim::Ascii,
        ) {
            panic!(
                "UNJUDGED SEND REACHED UPSTREAM: {} {} ({kind:?} create)\n  \
                 upstream headers: {:?}\n  upstream body: {:?}\n  \
                 client input: {:?}\n  guard answered: {:?}",
                rec.method,
                rec.uri,
                rec.headers,
                show(&rec.body),
                show(data),
                show(&answer[..answer.len().min(2048)]),
            );
        }
    }
    env.seen = recorded.len();
});
