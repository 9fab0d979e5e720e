//! Reference reading of a request path: is it a send endpoint (Messages,
//! Calls, OutgoingCallerIds, Verifications create) under some plausible server's reading?
//!
//! The readings, combined freely:
//! - the whole path percent-decoded 0..=3 times before its structure is
//!   read, then each segment decoded further (at most 4 rounds in all, the
//!   depth smsguard documents);
//! - `\` as a separator or not;
//! - `;` literal, cutting each segment (path parameters) or the whole path;
//! - a (decoded) `?`/`#` cutting the path or not;
//! - `.`/`..` literal, resolved before the per-segment decoding, or after;
//! - empty segments dropped (`//` collapsed), a trailing `/` ignored;
//! - each segment trimmed of surrounding ASCII white space, or (Java's
//!   `String.trim`) of every byte up to and including space, cut at a NUL
//!   (C strings), and case-folded ([`crate::fold`]); a format extension
//!   (anything after the first `.`) on the last segment.

use crate::{fold, has_escape, pct_decode};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Messages,
    Calls,
    Verifications,
    /// A conference participant: Twilio dials its `To`.
    Participants,
    /// An outgoing caller id: Twilio places a validation call to its
    /// `PhoneNumber`.
    CallerIds,
}

/// Largest total number of percent-decoding rounds tried.
const ROUNDS: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Semi {
    Literal,
    Params,
    Cut,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dots {
    Literal,
    Before,
    After,
}

/// Whitespace trimming applied to each segment before comparing it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Trim {
    /// Space, tab, CR, LF, FF (what `str::trim_ascii` removes).
    Ascii,
    /// Every byte <= 0x20 (Java's `String.trim`).
    Control,
}

/// The send kind some reading of `raw` (the path, no query) gives, if any.
pub fn send_kind(raw: &[u8], trim: Trim) -> Option<Kind> {
    let mut rounds: Vec<Vec<u8>> = vec![raw.to_vec()];
    while rounds.len() <= ROUNDS - 1 {
        let last = rounds.last().unwrap();
        if !has_escape(last) {
            break;
        }
        let next = pct_decode(last);
        rounds.push(next);
    }
    for (k, text) in rounds.iter().enumerate() {
        for backslash in [false, true] {
            for semi in [Semi::Literal, Semi::Params, Semi::Cut] {
                for cut_query in [false, true] {
                    let pieces = structure(text, backslash, semi, cut_query);
                    for m in 0..=(ROUNDS - k) {
                        for dots in [Dots::Literal, Dots::Before, Dots::After] {
                            let segs = segments(&pieces, m, dots);
                            if let Some(kind) = shape(&segs, trim) {
                                return Some(kind);
                            }
                        }
                        // Further rounds change nothing once no escape is left.
                        if !pieces.iter().any(|p| has_escape(p)) {
                            break;
                        }
                    }
                }
            }
        }
    }
    None
}

fn structure(text: &[u8], backslash: bool, semi: Semi, cut_query: bool) -> Vec<Vec<u8>> {
    let mut t: &[u8] = text;
    if cut_query {
        if let Some(i) = t.iter().position(|&b| b == b'?' || b == b'#') {
            t = &t[..i];
        }
    }
    if semi == Semi::Cut {
        if let Some(i) = t.iter().position(|&b| b == b';') {
            t = &t[..i];
        }
    }
    t.split(|&b| b == b'/' || (backslash && b == b'\\'))
        .map(|s| {
            if semi == Semi::Params {
                s.split(|&b| b == b';').next().unwrap_or_default().to_vec()
            } else {
                s.to_vec()
            }
        })
        .collect()
}

fn decode_n(seg: &[u8], n: usize) -> Vec<u8> {
    let mut cur = seg.to_vec();
    for _ in 0..n {
        if !has_escape(&cur) {
            break;
        }
        cur = pct_decode(&cur);
    }
    cur
}

fn resolve(segs: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for s in segs {
        if s.is_empty() || s == b"." {
            continue;
        }
        if s == b".." {
            out.pop();
            continue;
        }
        out.push(s);
    }
    out
}

fn segments(pieces: &[Vec<u8>], m: usize, dots: Dots) -> Vec<Vec<u8>> {
    let segs = match dots {
        Dots::Literal => pieces.iter().map(|p| decode_n(p, m)).collect::<Vec<_>>(),
        Dots::Before => resolve(pieces.to_vec())
            .iter()
            .map(|p| decode_n(p, m))
            .collect(),
        Dots::After => resolve(pieces.iter().map(|p| decode_n(p, m)).collect()),
    };
    segs.into_iter().filter(|s| !s.is_empty()).collect()
}

/// A segment as compared: trimmed, cut at NUL, folded.
fn norm(seg: &[u8], trim: Trim) -> Vec<u8> {
    // Known bug `route-space-before-nul`: smsguard trims a segment and then
    // accepts a NUL right after the name, so `Messages%20%00` (C string
    // "Messages ", trimmed) escapes it. Tolerated, trim first as it does.
    let seg = if crate::tolerated("route-space-before-nul") {
        match trim {
            Trim::Ascii => seg.trim_ascii(),
            Trim::Control => seg,
        }
    } else {
        seg
    };
    let seg = match seg.iter().position(|&b| b == 0) {
        Some(i) => &seg[..i],
        None => seg,
    };
    let seg = match trim {
        Trim::Ascii => seg.trim_ascii(),
        Trim::Control => {
            let start = seg.iter().position(|&b| b > b' ').unwrap_or(seg.len());
            let end = seg.iter().rposition(|&b| b > b' ').map_or(start, |e| e + 1);
            &seg[start..end.max(start)]
        }
    };
    fold(seg)
}

fn is(seg: &[u8], lit: &str, trim: Trim) -> bool {
    norm(seg, trim) == lit.as_bytes()
}

/// `lit` with an optional `.anything` format extension.
fn is_res(seg: &[u8], lit: &str, trim: Trim) -> bool {
    let n = norm(seg, trim);
    let base = n.split(|&b| b == b'.').next().unwrap_or_default();
    base == lit.as_bytes()
}

fn shape(segs: &[Vec<u8>], trim: Trim) -> Option<Kind> {
    let version = |s: &[u8]| is(s, "2010-04-01", trim) || is(s, "2008-08-01", trim);
    match segs {
        [v, a, _sid, last] => {
            if version(v) && is(a, "accounts", trim) {
                if is_res(last, "messages", trim) {
                    return Some(Kind::Messages);
                }
                if is_res(last, "calls", trim) {
                    return Some(Kind::Calls);
                }
                if is_res(last, "outgoingcallerids", trim) {
                    return Some(Kind::CallerIds);
                }
            }
            if (is(v, "v2", trim) || is(v, "v1", trim))
                && is(a, "services", trim)
                && is_res(last, "verifications", trim)
            {
                return Some(Kind::Verifications);
            }
            None
        }
        [v, a, _sid, sms, last]
            if version(v)
                && is(a, "accounts", trim)
                && is(sms, "sms", trim)
                && is_res(last, "messages", trim) =>
        {
            Some(Kind::Messages)
        }
        [v, a, _sid, conf, _conference, last]
            if version(v)
                && is(a, "accounts", trim)
                && is(conf, "conferences", trim)
                && is_res(last, "participants", trim) =>
        {
            Some(Kind::Participants)
        }
        _ => None,
    }
}

/// Methods that never create anything: everything else on a send path is
/// a possible send.
pub fn writing_method(method: &[u8]) -> bool {
    !["GET", "HEAD", "OPTIONS", "DELETE"]
        .iter()
        .any(|m| method.eq_ignore_ascii_case(m.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";

    #[test]
    fn reads_the_documented_spellings() {
        for p in [
            format!("/2010-04-01/Accounts/{AC}/Messages.json"),
            format!("/2010-04-01/accounts/{AC}/MESSAGES"),
            format!("//2010-04-01//Accounts/{AC}/Messages.json/"),
            format!("/2010-04-01/x/../Accounts/{AC}/Messages.json"),
            format!("/2010-04-01/Accounts%2F{AC}%2FMessages.json"),
            format!("/2010-04-01/Accounts/{AC}/%254Dessages.json"),
            format!("/2010-04-01/Accounts/{AC}/Messages.json;x=1"),
            format!("\\2010-04-01\\Accounts\\{AC}\\Messages.json"),
            format!("/2010-04-01/Accounts/{AC}/me\u{17F}\u{17F}ages"),
        ] {
            assert_eq!(
                send_kind(p.as_bytes(), Trim::Ascii),
                Some(Kind::Messages),
                "{p}"
            );
        }
        assert_eq!(
            send_kind(b"/v2/Services/VA1/Verifications", Trim::Ascii),
            Some(Kind::Verifications)
        );
        assert_eq!(
            send_kind(b"/v2/Services/VA1/VerificationCheck", Trim::Ascii),
            None
        );
        assert_eq!(
            send_kind(b"/2010-04-01/Accounts/AC1/Messages/SM1.json", Trim::Ascii),
            None
        );
    }
}
