//! A fixed-rate (open-loop) HTTP/1.1 load generator for bench/run, because
//! Debian has `wrk` but not `wrk2`.
//!
//!     loadgen --addr 127.0.0.1:18083 --workload allowed --rate 5000 \
//!             --duration 4 --connections 32 --offset 0
//!
//! Request `i` is due at `start + i / rate`. Each connection (one OS thread
//! with a blocking keep-alive socket) takes the next due request, sleeps
//! until it is due, sends it and reads the whole answer: wrk2's model, where
//! a request waits when every connection is busy. Per request it records
//! the service time (written -> answer read) and the corrected latency
//! (due -> answer read, which also counts waiting for a free connection and
//! the sleep's wake-up slack, ~50-60 us on Linux). Prints one JSON object.
//! Workloads (benches/common): `allowed` sends to distinct US numbers,
//! `shadowed` sends to the +99899394 block, `get` fetches a Message.
//! Answers carrying `X-Bench-Mock` came from the mock upstream; the rest
//! were made by the proxy itself.
//!
//! Run by `cargo test` without arguments, it does nothing.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    Allowed,
    Shadowed,
    Get,
}

struct Opts {
    addr: String,
    workload: Workload,
    rate: f64,
    duration: f64,
    connections: usize,
    offset: u64,
}

#[derive(Default)]
struct Tally {
    service_ns: Vec<u64>,
    corrected_ns: Vec<u64>,
    late: u64,
    ok: u64,
    other_status: u64,
    from_mock: u64,
    errors: u64,
    reconnects: u64,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        addr: String::new(),
        workload: Workload::Allowed,
        rate: 0.0,
        duration: 4.0,
        connections: 32,
        offset: 0,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut v = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--addr" => o.addr = v()?,
            "--workload" => {
                o.workload = match v()?.as_str() {
                    "allowed" => Workload::Allowed,
                    "shadowed" => Workload::Shadowed,
                    "get" => Workload::Get,
                    w => return Err(format!("unknown workload {w}")),
                }
            }
            "--rate" => o.rate = v()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--duration" => o.duration = v()?.parse().map_err(|e| format!("--duration: {e}"))?,
            "--connections" => {
                o.connections = v()?.parse().map_err(|e| format!("--connections: {e}"))?
            }
            "--offset" => o.offset = v()?.parse().map_err(|e| format!("--offset: {e}"))?,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.addr.is_empty() || o.rate <= 0.0 || o.connections == 0 {
        return Err("need --addr HOST:PORT and --rate N".into());
    }
    Ok(o)
}

fn request(w: Workload, host: &str, n: u64, out: &mut Vec<u8>) {
    out.clear();
    if w == Workload::Get {
        let _ = write!(
            out,
            "GET {} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {}\r\nAccept: application/json\r\n\r\n",
            common::FETCH_PATH,
            common::AUTHORIZATION
        );
        return;
    }
    let mut to = String::with_capacity(16);
    match w {
        Workload::Allowed => common::us_number(n, &mut to),
        _ => common::uz_number(n, &mut to),
    }
    let mut body = String::with_capacity(96);
    common::send_body(&to, &mut body);
    let _ = write!(
        out,
        "POST {} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nX-SMSGuard-Client-IP: {}\r\nContent-Length: {}\r\n\r\n{body}",
        common::SEND_PATH,
        common::AUTHORIZATION,
        common::client_ip(n),
        body.len()
    );
}

/// Reads one answer; returns (status, came from the mock, keep the connection).
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, bool, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let (mut length, mut chunked, mut mock, mut keep) = (0usize, false, false, true);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = v.parse().map_err(std::io::Error::other)?;
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.eq_ignore_ascii_case("chunked");
        } else if k.eq_ignore_ascii_case("x-bench-mock") {
            mock = true;
        } else if k.eq_ignore_ascii_case("connection") {
            keep = !v.eq_ignore_ascii_case("close");
        }
    }
    let mut sink = vec![0u8; 4096];
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(std::io::Error::other)?;
            let mut left = size + 2; // the chunk and its CRLF
            while left > 0 {
                let k = left.min(sink.len());
                r.read_exact(&mut sink[..k])?;
                left -= k;
            }
            if size == 0 {
                break;
            }
        }
    } else {
        let mut left = length;
        while left > 0 {
            let k = left.min(sink.len());
            r.read_exact(&mut sink[..k])?;
            left -= k;
        }
    }
    Ok((status, mock, keep))
}

fn connect(addr: &str) -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let r = BufReader::with_capacity(16 * 1024, s.try_clone()?);
    Ok((s, r))
}

fn worker(o: &Opts, next: &AtomicU64, total: u64, start: Instant, ready: &Barrier) -> Tally {
    let mut t = Tally::default();
    let mut conn = connect(&o.addr).ok();
    ready.wait();
    let interval = 1e9 / o.rate;
    let mut buf = Vec::with_capacity(512);
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            break;
        }
        let due = start + Duration::from_nanos((i as f64 * interval) as u64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        request(o.workload, &o.addr, o.offset + i, &mut buf);
        if conn.is_none() {
            t.reconnects += 1;
            conn = connect(&o.addr).ok();
        }
        let sent = Instant::now();
        if sent.saturating_duration_since(due) > Duration::from_millis(1) {
            t.late += 1;
        }
        let result = match conn.as_mut() {
            Some((s, r)) => s.write_all(&buf).and_then(|_| read_response(r)),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        };
        let done = Instant::now();
        match result {
            Ok((status, mock, keep)) => {
                t.service_ns.push((done - sent).as_nanos() as u64);
                t.corrected_ns.push((done - due).as_nanos() as u64);
                if (200..300).contains(&status) {
                    t.ok += 1;
                } else {
                    t.other_status += 1;
                }
                t.from_mock += mock as u64;
                if !keep {
                    conn = None;
                }
            }
            Err(_) => {
                t.errors += 1;
                conn = None;
            }
        }
    }
    t
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx] as f64 / 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().all(|a| a == "--bench") {
        if args.is_empty() {
            return; // `cargo test`: nothing to do
        }
        eprintln!("usage: loadgen --addr HOST:PORT --rate N [--workload allowed|shadowed|get] [--duration S] [--connections C] [--offset N]");
        std::process::exit(2);
    }
    let o = match parse_opts(&args) {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let total = (o.rate * o.duration).round() as u64;
    let next = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(Barrier::new(o.connections + 1));
    // Every connection is open before the clock starts.
    let start = Instant::now() + Duration::from_millis(200);
    let handles: Vec<_> = (0..o.connections)
        .map(|_| {
            let (o, next, ready) = (o.clone(), next.clone(), ready.clone());
            std::thread::spawn(move || worker(&o, &next, total, start, &ready))
        })
        .collect();
    ready.wait();
    let mut all = Tally::default();
    for h in handles {
        let t = h.join().expect("worker");
        all.service_ns.extend(t.service_ns);
        all.corrected_ns.extend(t.corrected_ns);
        all.late += t.late;
        all.ok += t.ok;
        all.other_status += t.other_status;
        all.from_mock += t.from_mock;
        all.errors += t.errors;
        all.reconnects += t.reconnects;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.service_ns.sort_unstable();
    all.corrected_ns.sort_unstable();
    let done = all.service_ns.len() as u64;
    println!(
        "{{\"rate\":{},\"duration\":{},\"connections\":{},\"scheduled\":{total},\"completed\":{done},\"achieved_rate\":{:.1},\"ok\":{},\"other_status\":{},\"errors\":{},\"reconnects\":{},\"from_mock\":{},\"late_over_1ms\":{},\"service_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1}}},\"corrected_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1}}}}}",
        o.rate,
        o.duration,
        o.connections,
        done as f64 / elapsed,
        all.ok,
        all.other_status,
        all.errors,
        all.reconnects,
        all.from_mock,
        all.late,
        pct(&all.service_ns, 50.0),
        pct(&all.service_ns, 90.0),
        pct(&all.service_ns, 99.0),
        pct(&all.service_ns, 99.9),
        pct(&all.service_ns, 100.0),
        pct(&all.corrected_ns, 50.0),
        pct(&all.corrected_ns, 90.0),
        pct(&all.corrected_ns, 99.0),
        pct(&all.corrected_ns, 99.9),
        pct(&all.corrected_ns, 100.0),
    );
}
