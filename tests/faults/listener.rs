//! Timeouts and caps of the listener and the upstream leg: silent
//! connections, one address holding every connection, idle keep-alive,
//! stalled and trickling upstream answers, a stalled client body, and a stop
//! during CONNECT tunnels. Timeouts here are a few hundred milliseconds;
//! every wait is bounded so a regression fails instead of hanging.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::common::*;

use smsguard::net::tls;

const BOUND: Duration = Duration::from_secs(5);

/// Reads until the peer closes (or `BOUND`); returns what was read and
/// whether the peer closed.
async fn read_until_closed(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let done = tokio::time::timeout(BOUND, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (out, done.is_ok())
}

async fn get_status(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::time::timeout(BOUND, TcpStream::connect(addr))
        .await
        .expect("connects in time")
        .unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let (out, closed) = read_until_closed(&mut s).await;
    assert!(closed, "the guard answers and closes within {BOUND:?}");
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

const ACCOUNT_GET: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef.json";

#[tokio::test]
async fn connections_that_never_send_a_byte_are_closed_and_the_guard_keeps_answering() {
    let env = start(
        "[listen]\nheader_timeout = \"300ms\"\nmax_connections = 16\nmax_connections_per_ip = 64\n",
    )
    .await;
    let addr = env.guard.addr();
    // Every connection slot taken by a client that says nothing.
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let started = Instant::now();
    // Without a timeout from accept this waits forever: no slot frees up.
    let line = get_status(addr, ACCOUNT_GET).await;
    assert!(line.contains(" 200 "), "{line}");
    for s in &mut silent {
        let (bytes, closed) = read_until_closed(s).await;
        assert!(closed, "a silent connection is closed");
        assert!(bytes.is_empty(), "nothing is said to a silent client");
    }
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Counted for /metrics (smsguard_connections_closed_total{reason="silent"}).
    assert!(env.guard.app().listener.silent.load(Relaxed) >= 16);
}

async fn connect_from(ip: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((ip, 0))).unwrap();
    s.connect(to).await.unwrap()
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let env = start("[listen]\nmax_connections_per_ip = 3\n").await;
    let addr = env.guard.addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from([127, 0, 0, 1], addr).await);
    }
    // Let the guard accept the three before the fourth arrives.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut fourth = connect_from([127, 0, 0, 1], addr).await;
    let _ = fourth.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (bytes, closed) = read_until_closed(&mut fourth).await;
    assert!(
        closed && bytes.is_empty(),
        "the fourth is closed unanswered"
    );
    assert_eq!(env.guard.app().listener.over_per_ip.load(Relaxed), 1);

    // Another address is served.
    let mut other = connect_from([127, 0, 0, 2], addr).await;
    let head = format!("GET {ACCOUNT_GET} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    other.write_all(head.as_bytes()).await.unwrap();
    let (bytes, _) = read_until_closed(&mut other).await;
    assert!(String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 200"));

    // A slot freed is a slot to take again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut again = connect_from([127, 0, 0, 1], addr).await;
    again.write_all(head.as_bytes()).await.unwrap();
    let (bytes, _) = read_until_closed(&mut again).await;
    assert!(
        String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_slow_request_is_not() {
    let env = start("[listen]\nidle_timeout = \"300ms\"\n").await;
    let addr = env.guard.addr();
    // Twilio slower than the idle timeout: the request is in flight, so the
    // connection is not idle.
    env.fake.set_delay(Duration::from_millis(900));
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {ACCOUNT_GET} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(BOUND, s.read(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Then nothing: the guard closes the kept-alive connection.
    let idle_from = Instant::now();
    let (_, closed) = read_until_closed(&mut s).await;
    assert!(closed, "an idle keep-alive connection is closed");
    assert!(idle_from.elapsed() >= Duration::from_millis(250));
    assert_eq!(env.guard.app().listener.idle.load(Relaxed), 1);
}

/// An upstream that answers headers and then `then` with the stream.
async fn odd_upstream<F, Fut>(then: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let then = Arc::new(then);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let then = then.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                then(s).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_that_stalls_after_its_headers_does_not_hold_the_client() {
    let up = odd_upstream(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"sid\":")
            .await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    let env = start(&format!(
        "[upstream]\napi = \"http://{up}\"\nverify = \"http://{up}\"\nbody_timeout = \"300ms\"\n"
    ))
    .await;
    let started = Instant::now();
    let mut s = TcpStream::connect(env.guard.addr()).await.unwrap();
    let head = format!("GET {ACCOUNT_GET} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let (bytes, closed) = read_until_closed(&mut s).await;
    assert!(closed, "the client's response is ended, not held");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(env.guard.app().upstream.cuts.idle.load(Relaxed), 1);
    // The guard is fine afterwards.
    let line = get_status(env.guard.addr(), "/healthz-not-a-twilio-path").await;
    assert!(line.starts_with("HTTP/1.1"), "{line}");
}

#[tokio::test]
async fn an_upstream_that_trickles_forever_is_cut_at_the_deadline() {
    let up = odd_upstream(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        for _ in 0..600 {
            if s.write_all(b"1\r\n \r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let env = start(&format!(
        "[upstream]\napi = \"http://{up}\"\nverify = \"http://{up}\"\nbody_timeout = \"2s\"\ndeadline = \"600ms\"\n"
    ))
    .await;
    let started = Instant::now();
    let mut s = TcpStream::connect(env.guard.addr()).await.unwrap();
    let head = format!("GET {ACCOUNT_GET} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let (bytes, closed) = read_until_closed(&mut s).await;
    assert!(closed, "cut at the deadline");
    assert!(String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 200"));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert_eq!(env.guard.app().upstream.cuts.deadline.load(Relaxed), 1);
}

#[tokio::test]
async fn a_client_whose_body_stalls_is_answered_and_the_upstream_released() {
    let env = start("[upstream]\nbody_timeout = \"300ms\"\n").await;
    let mut s = TcpStream::connect(env.guard.addr()).await.unwrap();
    // Not a send: its body is streamed to Twilio as it arrives.
    let head = "POST /2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/IncomingPhoneNumbers.json HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nFriendlyName=";
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(BOUND, s.read(&mut buf))
        .await
        .expect("answered while the body is still owed")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 502") || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
}

// ------------------------------------------------------------ stop during tunnels

async fn tunnel(
    addr: SocketAddr,
    ca: &std::path::Path,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"CONNECT api.twilio.com:443 HTTP/1.1\r\nHost: api.twilio.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "CONNECT answered");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"));
    let roots = tls::root_store_with(&std::fs::read(ca).unwrap()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("api.twilio.com").unwrap(), s)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_stop_waits_for_requests_in_flight_inside_connect_tunnels() {
    let dir = std::env::temp_dir().join(format!(
        "smsguard-faults-tunnel-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (env, ca) = start_proxy(&dir, "[listen]\ndrain_timeout = \"5s\"\n").await;
    let mut tls = tunnel(env.guard.addr(), &ca).await;
    env.fake.set_delay(Duration::from_millis(700));
    let head = format!(
        "GET {ACCOUNT_GET} HTTP/1.1\r\nHost: api.twilio.com\r\nAuthorization: {AUTH}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    // The request is in flight inside the tunnel; now the guard is stopped.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let Env { guard, fake, .. } = env;
    let stopping = Instant::now();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 16384];
        let n = tls.read(&mut buf).await.unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    tokio::time::timeout(BOUND, guard.stop())
        .await
        .expect("the stop ends within the drain timeout");
    let stopped = Instant::now();
    let answer = tokio::time::timeout(BOUND, reader).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    // Twilio answers 700 ms after the request, 150 ms of which had passed:
    // a stop that does not wait for tunnels returns at once.
    let waited = stopped - stopping;
    assert!(
        waited >= Duration::from_millis(400),
        "the stop returned after {waited:?}, before the tunnel's request finished"
    );
    drop(fake);
    let _ = std::fs::remove_dir_all(&dir);
}
