//! Reference readings the fuzz targets hold smsguard to.
//!
//! Everything here is written independently of `smsguard::twilio` and
//! deliberately simple: a handful of ways a plausible HTTP server (Twilio's
//! front end included) could read a request path or a form body. The
//! targets check that whenever one of these readings sees a paid send (or a
//! `To`), smsguard sees it too (or refuses the request). A reading here that
//! smsguard does not cover is either a bug in smsguard or a reading smsguard
//! documents as out of scope; the latter are listed where they are excluded.

pub mod form;
pub mod path;

/// One lenient percent-decoding round: `%XX` with two hex digits becomes the
/// byte, anything else (a lone `%`, `%zz`) stays as it is.
pub fn pct_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Does `input` still hold a valid `%XX` escape?
pub fn has_escape(input: &[u8]) -> bool {
    input
        .windows(3)
        .any(|w| w[0] == b'%' && hex(w[1]).is_some() && hex(w[2]).is_some())
}

/// Case folding as a server comparing names case-insensitively might do it:
/// ASCII lowercase, plus any character whose single-character upper- or
/// lowercase mapping (first character of it) is an ASCII letter (Java's
/// `equalsIgnoreCase` and friends compare that way). Invalid UTF-8 bytes are
/// kept as they are.
pub fn fold(seg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(seg.len());
    for chunk in seg.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_ascii() {
                out.push(c.to_ascii_lowercase() as u8);
                continue;
            }
            let lower = c.to_lowercase().next().filter(|l| l.is_ascii_alphabetic());
            let upper = c.to_uppercase().next().filter(|u| u.is_ascii_alphabetic());
            match lower.or(upper) {
                Some(a) => out.push(a.to_ascii_lowercase() as u8),
                None => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        out.extend_from_slice(chunk.invalid());
    }
    out
}

/// Render bytes for a failure message: printable ASCII as is, the rest
/// escaped, so a reproducer can be read in the report.
pub fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Reference judgement of a request that reached the upstream: would it
/// make Twilio spend money? A writing method on a send path, except a
/// Verify create whose one `Channel` (under every reading) is `email` or
/// `sna` (free channels the guard forwards unjudged by design).
pub fn paid_send(method: &[u8], path: &[u8], body: &[u8], trim: path::Trim) -> Option<path::Kind> {
    if !path::writing_method(method) {
        return None;
    }
    let kind = path::send_kind(path, trim)?;
    if kind == path::Kind::Verifications {
        let std = form::standard_values(body, "channel");
        let free = |v: &[u8]| {
            let t = String::from_utf8_lossy(v);
            t.eq_ignore_ascii_case("email") || t.eq_ignore_ascii_case("sna")
        };
        if let [only] = std.as_slice() {
            if free(only)
                && form::lenient_values(body, "channel")
                    .iter()
                    .all(|r| r.iter().all(|v| v == only))
            {
                return None;
            }
        }
    }
    if matches!(kind, path::Kind::Calls | path::Kind::Participants) {
        // A call to a Twilio Client identity (`client:alice`, exact prefix)
        // rings an app, never a phone network: forwarded unjudged.
        let std = form::standard_values(body, "to");
        let client = |v: &[u8]| v.len() > 7 && v.starts_with(b"client:");
        if let [only] = std.as_slice() {
            if client(only)
                && form::lenient_values(body, "to")
                    .iter()
                    .all(|r| r.iter().all(|v| v == only))
            {
                return None;
            }
        }
    }
    Some(kind)
}

/// Known, reported smsguard bugs a fuzzing session may step over so that it
/// can look for others: `SMSGUARD_FUZZ_TOLERATE` is a comma-separated list
/// of their names (see fuzz/README.md). Empty by default: every known bug
/// fails the run until it is fixed.
pub fn tolerated(name: &str) -> bool {
    static LIST: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        std::env::var("SMSGUARD_FUZZ_TOLERATE")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .iter()
    .any(|n| n == name)
}
