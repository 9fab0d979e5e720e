//! `route`: method + path -> `smsguard::twilio::routes::route`.
//!
//! Input: byte 0 picks the mode.
//! - even: raw mode. Byte 1 picks the method, the rest is the path (UTF-8).
//!   Invariants:
//!   1. if the reference reading (`smsguard_fuzz::path`, independent and
//!      simple) sees a send shape, `route(POST, path)` is a send: that is
//!      what the guard judges a POST by, and what it refuses any other
//!      writing method (`PUT`, `PATCH`, `post`, ...) on;
//!   2. only POST is ever classified as a send, and a send's upstream is
//!      the product's host (Api for Messages/Calls, Verify for Verify);
//!   3. `normalize_path` is one of the readings: if `route(POST,
//!      normalize_path(p))` is a send, so is `route(POST, p)`; for GET the
//!      endpoint kind is the same (when nothing is left undecoded); and
//!      `normalize_path` is idempotent.
//! - odd: generator mode. The rest of the input drives a generator that
//!   builds a send path (Messages, Calls, legacy SMS/Messages, Verifications)
//!   and disguises it with the spellings smsguard documents: case changes,
//!   Unicode case folds, percent-encoding up to 3 levels, `;` parameters,
//!   `//`, `/./`, `x/../`, `\`, `%2F`, surrounding white space, a NUL cut, a
//!   format extension, a trailing `/` or dot. `route(POST, p)` must be that
//!   send, and the reference reading must agree (checks the reference).
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use smsguard::twilio::routes::{normalize_path, route, Product, Upstream};
use smsguard_fuzz::path::{send_kind, writing_method, Kind, Trim};

const METHODS: [&str; 10] = [
    "POST", "GET", "PUT", "PATCH", "post", "DELETE", "HEAD", "OPTIONS", "Post", "MERGE",
];

fn product_of(kind: Kind) -> Product {
    match kind {
        Kind::Messages => Product::Messaging,
        Kind::Calls | Kind::Participants | Kind::CallerIds => Product::Voice,
        Kind::Verifications => Product::Verify,
    }
}

fn check_upstream(method: &Method, path: &str) {
    let r = route(method, path);
    match r.endpoint.send_product() {
        Some(p) => {
            assert!(
                *method == Method::POST,
                "{method} {path:?} classified as a send"
            );
            let want = match p {
                Product::Messaging | Product::Voice => Upstream::Api,
                Product::Verify => Upstream::Verify,
            };
            assert_eq!(
                r.upstream, want,
                "{path:?}: send of {p:?} routed to {:?}",
                r.upstream
            );
        }
        None => {}
    }
}

fn raw_mode(sel: u8, path: &str) {
    let name = METHODS[sel as usize % METHODS.len()];
    let method = Method::from_bytes(name.as_bytes()).expect("valid method token");
    check_upstream(&method, path);
    check_upstream(&Method::POST, path);

    // 1. Reference reading vs the guard's readings.
    if writing_method(name.as_bytes()) {
        if let Some(kind) = send_kind(path.as_bytes(), Trim::Ascii) {
            let r = route(&Method::POST, path);
            assert!(
                r.endpoint.send_product().is_some(),
                "UNJUDGED SEND PATH: reference reads {path:?} as {kind:?} create, \
                 route(POST) says {:?} (a {name} here would be forwarded unjudged)",
                r.endpoint
            );
        }
    }

    // 3. normalize_path is one of the readings.
    let n = normalize_path(path);
    if route(&Method::POST, &n).endpoint.send_product().is_some() {
        assert!(
            route(&Method::POST, path).endpoint.send_product().is_some(),
            "normalize_path({path:?}) = {n:?} is a send path, the raw path is not"
        );
    }
    if !n.contains('%') {
        let a = route(&Method::GET, path).endpoint;
        let b = route(&Method::GET, &n).endpoint;
        assert_eq!(
            a.name(),
            b.name(),
            "GET {path:?} is {a:?} but its normalized {n:?} is {b:?}"
        );
        assert_eq!(
            normalize_path(&n),
            n,
            "normalize_path not idempotent on {path:?}"
        );
    }
}

/// A tiny deterministic reader over the fuzz input.
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
        from[self.next() as usize % from.len()]
    }
}

/// Percent-encode every byte of `c`, `depth` times (`%` re-encoded as `%25`).
fn encode(c: char, depth: u8, out: &mut String) {
    let mut buf = [0u8; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        let mut s = format!("%{b:02X}");
        for _ in 1..depth {
            s = s.replacen('%', "%25", 1);
        }
        out.push_str(&s);
    }
}

/// Disguise a segment. `literal`: the guard compares it to a name (so case
/// and Unicode folds may change); otherwise it is a sid and keeps its case.
fn disguise(seg: &str, literal: bool, ext: &str, g: &mut Bytes<'_>) -> String {
    let mut out = String::new();
    let flags = g.next();
    for (i, c) in seg.chars().chain(ext.chars()).enumerate() {
        let in_name = i < seg.chars().count();
        let r = g.next();
        let mut c = c;
        if literal && in_name && flags & 1 != 0 {
            if r & 1 != 0 {
                c = c.to_ascii_uppercase();
            }
            if flags & 2 != 0 && r & 0x30 == 0x30 {
                c = match c.to_ascii_lowercase() {
                    's' => '\u{17F}',
                    'k' => '\u{212A}',
                    'i' => '\u{131}',
                    _ => c,
                };
            }
        }
        let depth = if flags & 4 != 0 && r & 0x0C != 0 {
            (r >> 6) % 3 + 1
        } else {
            0
        };
        if depth > 0 {
            encode(c, depth, &mut out);
        } else {
            out.push(c);
        }
    }
    if literal {
        match flags >> 4 {
            1 => out.push_str(";jsessionid=1"),
            2 => out.push_str("%20"),
            3 => out.push(';'),
            4 if ext.is_empty() => out.push_str("%00.png"),
            5 => out.insert_str(0, "%09"),
            _ => {}
        }
    } else if flags >> 4 == 1 {
        out.push_str(";x=1");
    }
    out
}

fn generator_mode(data: &[u8]) {
    let mut g = Bytes { data, pos: 0 };
    let kind = g.next() % 6;
    let sid_len = g.next() % 34 + 1;
    let sid: String = (0..sid_len)
        .map(|_| {
            const ALNUM: &[u8] = b"ABCDEFabcdef0123456789VACSMxyz";
            ALNUM[g.next() as usize % ALNUM.len()] as char
        })
        .collect();
    let ext = g.pick(&["", ".json", ".xml", ".JSON", ".csv", ".", ".json."]);
    let version = g.pick(&["2010-04-01", "2008-08-01"]);
    let (segs, expect): (Vec<(&str, bool)>, Product) = match kind {
        0 => (
            vec![
                (version, true),
                ("Accounts", true),
                (&sid, false),
                ("Messages", true),
            ],
            Product::Messaging,
        ),
        1 => (
            vec![
                (version, true),
                ("Accounts", true),
                (&sid, false),
                ("Calls", true),
            ],
            Product::Voice,
        ),
        2 => (
            vec![
                ("v2", true),
                ("Services", true),
                (&sid, false),
                ("Verifications", true),
            ],
            Product::Verify,
        ),
        3 => (
            vec![
                (version, true),
                ("Accounts", true),
                (&sid, false),
                ("SMS", true),
                ("Messages", true),
            ],
            Product::Messaging,
        ),
        4 => (
            vec![
                (version, true),
                ("Accounts", true),
                (&sid, false),
                ("Conferences", true),
                (&sid, false),
                ("Participants", true),
            ],
            Product::Voice,
        ),
        _ => (
            vec![
                ("v1", true),
                ("Services", true),
                (&sid, false),
                ("Verifications", true),
            ],
            Product::Verify,
        ),
    };
    let mut path = String::new();
    let last = segs.len() - 1;
    for (i, (seg, literal)) in segs.iter().enumerate() {
        let sep = if i == 0 {
            g.pick(&["/", "//", "/./", "\\", "/x/../", "/../"])
        } else {
            g.pick(&[
                "/",
                "//",
                "/./",
                "/x/../",
                "\\",
                "%2F",
                "%5C",
                "/%2E/",
                "/x/%2e%2E/",
                "%2f/",
            ])
        };
        path.push_str(sep);
        let e = if i == last { ext } else { "" };
        path.push_str(&disguise(seg, *literal, e, &mut g));
    }
    path.push_str(g.pick(&["", "/", "/.", "/x/..", "//", "/x/..;/"]));

    let r = route(&Method::POST, &path);
    assert_eq!(
        r.endpoint.send_product(),
        Some(expect),
        "UNJUDGED SEND PATH (generated): POST {path:?} is {:?}, expected a {expect:?} create",
        r.endpoint
    );
    // The reference reading must see it too, or the raw mode is blind.
    let k = send_kind(path.as_bytes(), Trim::Ascii);
    assert_eq!(
        k.map(product_of),
        Some(expect),
        "reference reading misses generated {path:?} (harness bug)"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let Some((&sel, path)) = rest.split_first() else {
            return;
        };
        // The guard refuses paths over 8 KiB before classifying them.
        if path.len() > 8 * 1024 {
            return;
        }
        // Only what can reach `route` as `req.uri().path()`: a literal `?`
        // or `#` (or a byte http::Uri refuses) never does, and a path with
        // them made the normalize_path invariant fail on a reading no
        // request can have (harness false positive, fixed here).
        if let Ok(path) = std::str::from_utf8(path) {
            let real = http::Uri::try_from(path).is_ok_and(|u| u.path() == path);
            if real {
                raw_mode(sel, path);
            }
        }
    } else {
        generator_mode(rest);
    }
});
