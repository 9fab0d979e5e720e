//! Request classification: decides from the method and the request-target
//! path alone whether a request to the Twilio REST API makes Twilio spend
//! money (a "send": message create, call create, conference participant
//! create, which dials `To`, outgoing caller id create, which places a
//! validation call to `PhoneNumber`, and verification create on Verify v2
//! or v1), is
//! one of the few other endpoints smsguard answers itself (fetches of
//! messages, calls, participants and verifications, verification checks), or
//! is anything else, which the proxy forwards unjudged.
//!
//! This module must never classify as [`Endpoint::Other`] a `POST` whose path
//! some plausible server could read as a send shape. Servers disagree on how
//! to read odd paths (how many times they percent-decode, whether `%2F` splits
//! segments, whether `;` starts path parameters, whether `\` is a separator,
//! whether and when `.`/`..` are resolved, how they fold case), and we do not
//! know exactly what Twilio's front end does. So a `POST` is a send if *any*
//! reading in the set below matches a send shape; only the absence of a match
//! under every reading lets a `POST` through as `Other`. Over-matching only
//! costs a judgement; under-matching would let a send through unjudged.
//!
//! The readings (combined freely, see [`route`]):
//! - percent-decoding applied 0..=[`MAX_DECODE_ROUNDS`] times to the whole
//!   path before its structure is read (so decoded `/`, `\`, `;`, `?`, `#`
//!   act as structure), then further rounds applied to each segment (so they
//!   are literal content);
//! - `\` as a separator or as a literal;
//! - `;` literal, cutting each segment (path parameters), or cutting the path;
//! - a decoded `?` or `#` cutting the path, or literal;
//! - `.`/`..` left alone, resolved after per-segment decoding, or resolved
//!   before it; empty segments dropped before resolution or kept through it;
//! - literals compared ASCII case-insensitively, also folding the four
//!   non-ASCII characters whose Unicode case mapping lands on an ASCII letter
//!   (U+017F long s, U+212A Kelvin sign, U+0131 dotless i, U+0130 dotted
//!   capital I), after trimming ASCII whitespace, and accepting a segment cut
//!   at a NUL byte (C-string readings).
//!
//! Send shapes are also a little wider than the documented ones, for the
//! same reason: any format extension (`Messages.csv`), the legacy
//! `.../SMS/Messages` resource, and the retired `2008-08-01` version. Nothing
//! legitimate that is not a send lives at those paths.
//!
//! This module never rejects anything itself (it has no error to give: a
//! doubtful `POST` comes out as a send, to be judged) and never allocates on
//! the common path beyond the sid strings it returns.

use std::borrow::Cow;
use std::fmt::Write as _;

use http::Method;

/// How many percent-decoding rounds are tried at most. Each round that
/// changes the path is one more reading; a path that still holds valid
/// escapes after this many rounds is "unsettled" and its undecoded segments
/// are treated as wildcards when looking for a send (fail closed: we cannot
/// tell what they would become).
pub const MAX_DECODE_ROUNDS: usize = 4;

/// The kind of paid traffic a send creates.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Product {
    Messaging,
    Voice,
    Verify,
}

impl Product {
    /// Stable lowercase label for logs, metrics and configuration.
    pub fn as_str(&self) -> &'static str {
        match self {
            Product::Messaging => "messaging",
            Product::Voice => "voice",
            Product::Verify => "verify",
        }
    }
}

/// Which Twilio host serves the path.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Upstream {
    /// `api.twilio.com` (the 2010-04-01 REST API).
    Api,
    /// `verify.twilio.com` (Verify v2).
    Verify,
}

/// What a request is, as far as smsguard cares.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Endpoint {
    /// POST .../Accounts/{AccountSid}/Messages(.ext)? (also the legacy
    /// .../Accounts/{AccountSid}/SMS/Messages(.ext)?).
    MessageCreate { account_sid: String },
    /// POST .../Accounts/{AccountSid}/Calls(.ext)?
    CallCreate { account_sid: String },
    /// POST .../Accounts/{AccountSid}/Conferences/{ConferenceSid}/Participants(.ext)?:
    /// Twilio dials `To` (an outbound call) and puts it in the conference.
    /// `conference_sid` is a `CF` sid or the conference's friendly name.
    ParticipantCreate {
        account_sid: String,
        conference_sid: String,
    },
    /// POST .../Accounts/{AccountSid}/OutgoingCallerIds(.ext)?: Twilio
    /// places a validation call to `PhoneNumber` (paid, like any call).
    CallerIdCreate { account_sid: String },
    /// POST /v2/Services/{ServiceSid}/Verifications, and the same on the
    /// older Verify v1 (a send only for some channels: decided later from
    /// the body). `POST .../Verifications/{Sid}` (a status update) is not.
    VerificationCreate { service_sid: String },
    /// GET .../Accounts/{AccountSid}/Messages/{Sid}(.ext)?
    MessageFetch { account_sid: String, sid: String },
    /// GET .../Accounts/{AccountSid}/Calls/{Sid}(.ext)?
    CallFetch { account_sid: String, sid: String },
    /// GET .../Accounts/{AccountSid}/Conferences/{ConferenceSid}/Participants/{CallSid}(.ext)?
    /// (`sid` is the participant's call sid or its label).
    ParticipantFetch {
        account_sid: String,
        conference_sid: String,
        sid: String,
    },
    /// GET /v2/Services/{ServiceSid}/Verifications/{Sid} (also v1)
    VerificationFetch { service_sid: String, sid: String },
    /// POST /v2/Services/{ServiceSid}/VerificationCheck (also v1)
    VerificationCheck { service_sid: String },
    /// POST .../Accounts/{AccountSid}/Messages/{Sid}/Feedback(.json)?: the
    /// app telling Twilio the recipient acted on the message.
    MessageFeedback { account_sid: String, sid: String },
    /// Anything else: forwarded unjudged.
    Other,
}

impl Endpoint {
    /// The product a send spends money on; `None` for everything that is not
    /// a create.
    pub fn send_product(&self) -> Option<Product> {
        match self {
            Endpoint::MessageCreate { .. } => Some(Product::Messaging),
            Endpoint::CallCreate { .. }
            | Endpoint::ParticipantCreate { .. }
            | Endpoint::CallerIdCreate { .. } => Some(Product::Voice),
            Endpoint::VerificationCreate { .. } => Some(Product::Verify),
            _ => None,
        }
    }

    /// The form parameter naming the number a send reaches.
    pub fn destination_field(&self) -> &'static str {
        match self {
            Endpoint::CallerIdCreate { .. } => "PhoneNumber",
            _ => "To",
        }
    }

    /// Stable label for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::MessageCreate { .. } => "messages.create",
            Endpoint::CallCreate { .. } => "calls.create",
            Endpoint::ParticipantCreate { .. } => "participants.create",
            Endpoint::CallerIdCreate { .. } => "outgoing_caller_ids.create",
            Endpoint::VerificationCreate { .. } => "verifications.create",
            Endpoint::MessageFetch { .. } => "messages.fetch",
            Endpoint::CallFetch { .. } => "calls.fetch",
            Endpoint::ParticipantFetch { .. } => "participants.fetch",
            Endpoint::VerificationFetch { .. } => "verifications.fetch",
            Endpoint::VerificationCheck { .. } => "verification_checks.create",
            Endpoint::MessageFeedback { .. } => "feedback.create",
            Endpoint::Other => "other",
        }
    }
}

/// The classification of one request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Route {
    pub upstream: Upstream,
    pub endpoint: Endpoint,
}

/// Classify a request. `raw_path` is the request-target path as received (no
/// query), e.g. "/2010-04-01/Accounts/AC.../Messages.json".
///
/// For a recognized endpoint the upstream follows the endpoint (so a path
/// judged as a message send is always sent to the API host, whatever another
/// reading says); for `Other` it follows the normalized path.
///
/// Cost: a plain path (no `%`, `\`, `;`, `?`, `#`, dot segments) is one pass.
/// An odd path is tried under every reading that its characters make
/// relevant: a few microseconds for a typical odd path, but up to about
/// 200 ns per byte for a path built to exercise every reading, so the server
/// should refuse long request-targets (e.g. 414 above 8 KiB) before this.
pub fn route(method: &Method, raw_path: &str) -> Route {
    let raw = raw_path.as_bytes();
    let endpoint = if is_plain(raw) {
        // Every reading of a plain path is the same segment list: one match.
        let mut buf: [&[u8]; MAX_SEGMENTS] = [&[]; MAX_SEGMENTS];
        match plain_segments(raw, &mut buf) {
            Some(segs) => classify(method, segs),
            None => Endpoint::Other,
        }
    } else {
        match classify_odd(method, raw) {
            // Fail closed: the canonical reading (decoded, `?` cut, `;`
            // stripped, in that order) is one more reading a server could
            // make; if it is an endpoint, so is the path.
            Endpoint::Other => classify_odd(method, normalize_path(raw_path).as_bytes()),
            e => e,
        }
    };
    let upstream = match &endpoint {
        Endpoint::MessageCreate { .. }
        | Endpoint::CallCreate { .. }
        | Endpoint::ParticipantCreate { .. }
        | Endpoint::CallerIdCreate { .. }
        | Endpoint::MessageFetch { .. }
        | Endpoint::MessageFeedback { .. }
        | Endpoint::CallFetch { .. }
        | Endpoint::ParticipantFetch { .. } => Upstream::Api,
        Endpoint::VerificationCreate { .. }
        | Endpoint::VerificationFetch { .. }
        | Endpoint::VerificationCheck { .. } => Upstream::Verify,
        Endpoint::Other => upstream_of_path(raw),
    };
    Route { upstream, endpoint }
}

/// The normalized path used for matching (exposed for tests and logs): fully
/// percent-decoded (until stable, at most [`MAX_DECODE_ROUNDS`] rounds), `\`
/// as `/`, `;` parameters stripped from each segment, `.`/`..` resolved (never
/// above the root), empty segments and the trailing `/` dropped, ASCII
/// lowercased. Decoded bytes that are not UTF-8 are shown as `%XX` so that the
/// result is a string and still says exactly which bytes were there.
pub fn normalize_path(raw_path: &str) -> String {
    let (rounds, _) = decode_rounds(raw_path.as_bytes());
    let segs = canonical_segments(&rounds);
    let mut out = String::with_capacity(raw_path.len() + 1);
    if segs.is_empty() {
        out.push('/');
    }
    for seg in &segs {
        out.push('/');
        push_escaped(&mut out, seg);
    }
    out.make_ascii_lowercase();
    out
}

/// The Verify API version a path names (`"v1"` or `"v2"`), as its
/// canonical reading shows it; `"v2"` when it shows neither. Answers made
/// for a Verify send name the version they were asked on.
pub fn verify_api_version(raw_path: &str) -> &'static str {
    let (rounds, _) = decode_rounds(raw_path.as_bytes());
    match canonical_segments(&rounds).first() {
        Some(seg) if lit_match(seg, "v1", false, false) => "v1",
        _ => "v2",
    }
}

/// Longest segment list any endpoint has (a participant fetch: 7), plus one
/// so that "too long" is still visible to the matcher as a length mismatch.
const MAX_SEGMENTS: usize = 8;

/// A plain path has nothing that readings could disagree on: no escapes, no
/// backslash, no `;`, `?`, `#`, and no dot segments. Empty segments are then
/// harmless because they only matter next to dot segments.
fn is_plain(raw: &[u8]) -> bool {
    !raw.iter()
        .any(|b| matches!(b, b'%' | b'\\' | b';' | b'?' | b'#'))
        && !raw.split(|&b| b == b'/').any(is_dot_segment)
}

/// Non-empty segments of a plain path, into `buf`; `None` if there are more
/// than fit (then the path cannot be any endpoint).
fn plain_segments<'a, 'b>(raw: &'a [u8], buf: &'b mut [&'a [u8]]) -> Option<&'b [&'a [u8]]> {
    let mut n = 0;
    for seg in raw.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        *buf.get_mut(n)? = seg;
        n += 1;
    }
    buf.get(..n)
}

/// `/v2/...` is Verify's; so is `/v1/Services/{sid}/Verification...` (the
/// older Verify API: a status update of a v1 verification, say). Every
/// other path is the 2010 API's.
fn upstream_of_path(raw: &[u8]) -> Upstream {
    let is_verify = |segs: &[&[u8]]| match segs {
        [first, ..] if first.eq_ignore_ascii_case(b"v2") => true,
        [first, services, _, kind, ..] => {
            first.eq_ignore_ascii_case(b"v1")
                && services.eq_ignore_ascii_case(b"services")
                && fold_strip_prefix(kind, "verification").is_some()
        }
        _ => false,
    };
    let verify = if is_plain(raw) {
        let mut buf: [&[u8]; MAX_SEGMENTS] = [&[]; MAX_SEGMENTS];
        match plain_segments(raw, &mut buf) {
            Some(segs) => is_verify(segs),
            None => raw
                .split(|&b| b == b'/')
                .find(|s| !s.is_empty())
                .is_some_and(|s| s.eq_ignore_ascii_case(b"v2")),
        }
    } else {
        let (rounds, _) = decode_rounds(raw);
        is_verify(&canonical_segments(&rounds))
    };
    if verify {
        Upstream::Verify
    } else {
        Upstream::Api
    }
}

/// Classification of a path with a single reading.
fn classify<S: AsRef<[u8]>>(method: &Method, segs: &[S]) -> Endpoint {
    if *method == Method::POST {
        if let Some(send) = match_send(segs, false) {
            return send;
        }
    }
    match_non_send(method, segs)
}

/// Classification of a path whose readings may differ: a `POST` is a send if
/// any reading is; everything else uses the canonical reading only, because
/// fetches and checks are not where money is spent.
fn classify_odd(method: &Method, raw: &[u8]) -> Endpoint {
    let (rounds, settled) = decode_rounds(raw);
    if *method == Method::POST {
        if let Some(send) = find_send_in_any_reading(&rounds, settled) {
            return send;
        }
    }
    match_non_send(method, &canonical_segments(&rounds))
}

// ---------------------------------------------------------------------------
// Shapes

/// Does this segment read as the literal `lit` (lowercase ASCII)? With
/// `allow_ext`, anything after a `.` is accepted too: Twilio answers in
/// several formats, and a create is a create whatever format is asked for.
/// `wild` makes a segment that still holds a valid escape match anything (an
/// unsettled path: we cannot know what it decodes to).
fn lit_match(seg: &[u8], lit: &str, allow_ext: bool, wild: bool) -> bool {
    if wild && has_escape(seg) {
        return true;
    }
    // A server may cut the segment at a NUL (C strings) and then trim it:
    // `Messages%20%00` reads as `Messages`. Cut first, then trim.
    let seg = seg.split(|b| *b == 0).next().unwrap_or(seg).trim_ascii();
    match fold_strip_prefix(seg, lit) {
        Some(rest) => match rest.first() {
            None => true,
            Some(b'.') => allow_ext,
            Some(_) => false,
        },
        None => false,
    }
}

/// Non-ASCII characters whose Unicode simple case mapping is an ASCII letter:
/// a server comparing with full Unicode case-insensitivity (e.g. Java's
/// `equalsIgnoreCase`) would read `meſſages` as `messages`.
const UNICODE_FOLDS: [(&str, u8); 4] = [
    ("\u{017F}", b's'), // LATIN SMALL LETTER LONG S
    ("\u{212A}", b'k'), // KELVIN SIGN
    ("\u{0131}", b'i'), // LATIN SMALL LETTER DOTLESS I
    ("\u{0130}", b'i'), // LATIN CAPITAL LETTER I WITH DOT ABOVE
];

/// If `seg` starts with `lit` (case-folded), the rest of `seg`.
fn fold_strip_prefix<'a>(seg: &'a [u8], lit: &str) -> Option<&'a [u8]> {
    let mut rest = seg;
    for &want in lit.as_bytes() {
        match rest.split_first() {
            Some((&b, tail)) if b.to_ascii_lowercase() == want => rest = tail,
            _ => {
                let (seq, _) = UNICODE_FOLDS
                    .iter()
                    .find(|(seq, to)| *to == want && rest.starts_with(seq.as_bytes()))?;
                rest = rest.get(seq.len()..)?;
            }
        }
    }
    Some(rest)
}

/// The Verify API versions: v2, and v1, which Twilio retired but which
/// takes the same sends (if it still answers, it still costs).
fn is_verify_version(seg: &[u8], wild: bool) -> bool {
    lit_match(seg, "v2", false, wild) || lit_match(seg, "v1", false, wild)
}

fn is_version(seg: &[u8], wild: bool) -> bool {
    // 2008-08-01 is the retired predecessor; if Twilio still routes any of
    // it, it is a send, and nothing legitimate posts there through us.
    lit_match(seg, "2010-04-01", false, wild) || lit_match(seg, "2008-08-01", false, wild)
}

/// The send shapes. `wild` is passed only for the most-decoded reading of an
/// unsettled path.
fn match_send<S: AsRef<[u8]>>(segs: &[S], wild: bool) -> Option<Endpoint> {
    let lit = |s: &S, l: &str| lit_match(s.as_ref(), l, false, wild);
    let res = |s: &S, l: &str| lit_match(s.as_ref(), l, true, wild);
    match segs {
        [ver, acc, sid, last] => {
            if is_version(ver.as_ref(), wild) && lit(acc, "accounts") {
                if res(last, "messages") {
                    return Some(Endpoint::MessageCreate {
                        account_sid: sid_string(sid.as_ref()),
                    });
                }
                if res(last, "calls") {
                    return Some(Endpoint::CallCreate {
                        account_sid: sid_string(sid.as_ref()),
                    });
                }
                if res(last, "outgoingcallerids") {
                    return Some(Endpoint::CallerIdCreate {
                        account_sid: sid_string(sid.as_ref()),
                    });
                }
            }
            if is_verify_version(ver.as_ref(), wild)
                && lit(acc, "services")
                && res(last, "verifications")
            {
                return Some(Endpoint::VerificationCreate {
                    service_sid: sid_string(sid.as_ref()),
                });
            }
            None
        }
        // The legacy SMS resource: deprecated, but if it still sends, it is a
        // send, and no legitimate non-send lives at this path.
        [ver, acc, sid, sms, last]
            if is_version(ver.as_ref(), wild)
                && lit(acc, "accounts")
                && lit(sms, "sms")
                && res(last, "messages") =>
        {
            Some(Endpoint::MessageCreate {
                account_sid: sid_string(sid.as_ref()),
            })
        }
        // A conference participant: Twilio places a call to `To`.
        [ver, acc, sid, conf, conf_sid, last]
            if is_version(ver.as_ref(), wild)
                && lit(acc, "accounts")
                && lit(conf, "conferences")
                && res(last, "participants") =>
        {
            Some(Endpoint::ParticipantCreate {
                account_sid: sid_string(sid.as_ref()),
                conference_sid: sid_string(conf_sid.as_ref()),
            })
        }
        _ => None,
    }
}

/// Fetches (GET) and the verification check (POST), on one reading.
fn match_non_send<S: AsRef<[u8]>>(method: &Method, segs: &[S]) -> Endpoint {
    let lit = |s: &S, l: &str| lit_match(s.as_ref(), l, false, false);
    if *method == Method::GET {
        if let [ver, acc, sid, kind, id] = segs {
            if lit(ver, "2010-04-01") && lit(acc, "accounts") {
                if let Some(id) = resource_id(id.as_ref()) {
                    let account_sid = sid_string(sid.as_ref());
                    if lit(kind, "messages") {
                        return Endpoint::MessageFetch {
                            account_sid,
                            sid: id,
                        };
                    }
                    if lit(kind, "calls") {
                        return Endpoint::CallFetch {
                            account_sid,
                            sid: id,
                        };
                    }
                }
            }
            if is_verify_version(ver.as_ref(), false)
                && lit(acc, "services")
                && lit(kind, "verifications")
            {
                if let Some(id) = resource_id(id.as_ref()) {
                    return Endpoint::VerificationFetch {
                        service_sid: sid_string(sid.as_ref()),
                        sid: id,
                    };
                }
            }
        }
        if let [ver, acc, account, conf, conf_sid, kind, id] = segs {
            if lit(ver, "2010-04-01")
                && lit(acc, "accounts")
                && lit(conf, "conferences")
                && lit(kind, "participants")
            {
                if let Some(id) = resource_id(id.as_ref()) {
                    return Endpoint::ParticipantFetch {
                        account_sid: sid_string(account.as_ref()),
                        conference_sid: sid_string(conf_sid.as_ref()),
                        sid: id,
                    };
                }
            }
        }
    } else if *method == Method::POST {
        if let [ver, acc, account, kind, id, last] = segs {
            if lit(ver, "2010-04-01")
                && lit(acc, "accounts")
                && lit(kind, "messages")
                && lit_match(last.as_ref(), "feedback", true, false)
            {
                if let Some(sid) = resource_id(id.as_ref()) {
                    return Endpoint::MessageFeedback {
                        account_sid: sid_string(account.as_ref()),
                        sid,
                    };
                }
            }
        }
        if let [ver, svc, sid, last] = segs {
            if is_verify_version(ver.as_ref(), false)
                && lit(svc, "services")
                && lit_match(last.as_ref(), "verificationcheck", true, false)
            {
                return Endpoint::VerificationCheck {
                    service_sid: sid_string(sid.as_ref()),
                };
            }
        }
    }
    Endpoint::Other
}

/// The id in `.../{Sid}.json`: everything before the first `.`; none if empty.
fn resource_id(seg: &[u8]) -> Option<String> {
    let id = seg.split(|&b| b == b'.').next().unwrap_or_default();
    (!id.is_empty()).then(|| sid_string(id))
}

/// A sid as received (decoded, original case). Bytes that are not UTF-8 are
/// written as `%XX`, so nothing is lost or replaced.
fn sid_string(seg: &[u8]) -> String {
    let mut out = String::with_capacity(seg.len());
    push_escaped(&mut out, seg);
    out
}

fn push_escaped(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

// ---------------------------------------------------------------------------
// Readings

#[derive(Clone, Copy, PartialEq, Eq)]
enum Semicolon {
    /// `;` starts parameters in each segment (servlet containers).
    StripSegment,
    /// `;` is an ordinary character.
    Literal,
    /// Everything from the first `;` on is dropped.
    TruncatePath,
}

#[derive(Clone, Copy)]
struct Structure {
    cut_query: bool,
    semicolon: Semicolon,
    backslash: bool,
}

#[derive(Clone, Copy)]
enum Dots {
    /// `.`/`..` are ordinary segments.
    Literal,
    /// Resolved after every decoding round.
    AfterDecode,
    /// Resolved on the segments as split, then decoded: encoded dots stay.
    BeforeDecode,
}

/// The path after 0, 1, 2, ... percent-decoding rounds, stopping when a round
/// changes nothing or after [`MAX_DECODE_ROUNDS`]. The flag says whether the
/// last one is settled (holds no valid escape any more).
fn decode_rounds(raw: &[u8]) -> (Vec<Cow<'_, [u8]>>, bool) {
    let mut rounds: Vec<Cow<'_, [u8]>> = Vec::with_capacity(3);
    rounds.push(Cow::Borrowed(raw));
    while rounds.len() <= MAX_DECODE_ROUNDS {
        let next = match rounds.last() {
            Some(last) => decode_once(last),
            None => None,
        };
        match next {
            Some(next) => rounds.push(Cow::Owned(next)),
            None => return (rounds, true),
        }
    }
    let settled = !rounds.last().is_some_and(|last| has_escape(last));
    (rounds, settled)
}

/// One lenient percent-decoding round (malformed escapes stay literal, as
/// most servers do); `None` if it would change nothing.
fn decode_once(input: &[u8]) -> Option<Vec<u8>> {
    if !has_escape(input) {
        return None;
    }
    match Cow::from(percent_encoding::percent_decode(input)) {
        Cow::Owned(v) => Some(v),
        Cow::Borrowed(_) => None,
    }
}

fn decode_n(seg: &[u8], rounds: usize) -> Cow<'_, [u8]> {
    let mut cur = Cow::Borrowed(seg);
    for _ in 0..rounds {
        match decode_once(&cur) {
            Some(next) => cur = Cow::Owned(next),
            None => break,
        }
    }
    cur
}

fn has_escape(s: &[u8]) -> bool {
    s.windows(3)
        .any(|w| matches!(w, [b'%', h, l] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit()))
}

fn is_dot_segment(s: &[u8]) -> bool {
    s == b"." || s == b".."
}

/// Split one decoded form of the path into segments (empty ones included)
/// according to a structure reading. The root's empty segment is dropped.
fn split_structure(text: &[u8], st: Structure) -> Vec<&[u8]> {
    let mut text = text;
    if st.cut_query {
        text = text
            .split(|&b| b == b'?' || b == b'#')
            .next()
            .unwrap_or_default();
    }
    if st.semicolon == Semicolon::TruncatePath {
        text = text.split(|&b| b == b';').next().unwrap_or_default();
    }
    let text = text.strip_prefix(b"/").unwrap_or(text);
    let text = if st.backslash {
        text.strip_prefix(b"\\").unwrap_or(text)
    } else {
        text
    };
    text.split(|&b| b == b'/' || (st.backslash && b == b'\\'))
        .map(|seg| {
            if st.semicolon == Semicolon::StripSegment {
                seg.split(|&b| b == b';').next().unwrap_or_default()
            } else {
                seg
            }
        })
        .collect()
}

/// Resolve `.`/`..` (never above the root). Empty segments are dropped before
/// resolution, or kept through it (so `a//..` pops the empty one) and dropped
/// after.
fn resolve<S: AsRef<[u8]>>(segs: impl IntoIterator<Item = S>, keep_empty: bool) -> Vec<S> {
    let mut out: Vec<S> = Vec::new();
    for seg in segs {
        let s = seg.as_ref();
        if s == b"." || (s.is_empty() && !keep_empty) {
            continue;
        }
        if s == b".." {
            out.pop();
            continue;
        }
        out.push(seg);
    }
    out.retain(|s| !s.as_ref().is_empty());
    out
}

/// The reading [`normalize_path`] shows and non-sends are matched on.
fn canonical_segments<'a>(rounds: &'a [Cow<'a, [u8]>]) -> Vec<&'a [u8]> {
    let text: &[u8] = rounds.last().map_or(&[], |t| t);
    let st = Structure {
        cut_query: false,
        semicolon: Semicolon::StripSegment,
        backslash: true,
    };
    resolve(split_structure(text, st), false)
}

/// Try every reading; the first one that is a send wins. The canonical
/// reading is tried first so that its sid is the one reported when it
/// matches.
fn find_send_in_any_reading(rounds: &[Cow<'_, [u8]>], settled: bool) -> Option<Endpoint> {
    let last = rounds.len().saturating_sub(1);
    for (j, text) in rounds.iter().enumerate().rev() {
        let text: &[u8] = text;
        let has_query = text.iter().any(|&b| b == b'?' || b == b'#');
        let has_semi = text.contains(&b';');
        let has_backslash = text.contains(&b'\\');
        for cut_query in [false, true] {
            if cut_query && !has_query {
                continue;
            }
            for semicolon in [
                Semicolon::StripSegment,
                Semicolon::Literal,
                Semicolon::TruncatePath,
            ] {
                if semicolon != Semicolon::StripSegment && !has_semi {
                    continue;
                }
                for backslash in [true, false] {
                    if !backslash && !has_backslash {
                        continue;
                    }
                    let st = Structure {
                        cut_query,
                        semicolon,
                        backslash,
                    };
                    let pieces = split_structure(text, st);
                    let more_rounds = last.saturating_sub(j);
                    if let Some(send) = try_pieces(&pieces, more_rounds, settled) {
                        return Some(send);
                    }
                }
            }
        }
    }
    None
}

/// For one structure reading: decode each segment 0..=`more_rounds` further
/// times and try each dot/empty-segment reading.
fn try_pieces(pieces: &[&[u8]], more_rounds: usize, settled: bool) -> Option<Endpoint> {
    let any_empty = pieces.iter().any(|p| p.is_empty());
    let raw_dots = pieces.iter().any(|p| is_dot_segment(p));
    // Segments without escapes read the same whatever the rounds.
    let max_m = if pieces.iter().any(|p| has_escape(p)) {
        more_rounds
    } else {
        0
    };
    // Most decoded first, so that a matching sid is reported decoded.
    for m in (0..=max_m).rev() {
        // Undecoded escapes are wildcards only in the most-decoded reading
        // (j + m == last round) of a path that never settled.
        let wild = !settled && m == more_rounds;
        let decoded: Vec<Cow<'_, [u8]>> = pieces.iter().map(|p| decode_n(p, m)).collect();
        let decoded_dots = decoded.iter().any(|p| is_dot_segment(p));
        let mut modes: Vec<(Dots, bool)> = Vec::with_capacity(5);
        if decoded_dots {
            modes.push((Dots::AfterDecode, false));
        }
        modes.push((Dots::Literal, false));
        if decoded_dots && any_empty {
            modes.push((Dots::AfterDecode, true));
        }
        if raw_dots && m > 0 {
            modes.push((Dots::BeforeDecode, false));
            if any_empty {
                modes.push((Dots::BeforeDecode, true));
            }
        }
        for (dots, keep_empty) in modes {
            let found = match dots {
                Dots::Literal => match_send(&resolve_none(&decoded), wild),
                Dots::AfterDecode => match_send(&resolve(decoded.iter(), keep_empty), wild),
                Dots::BeforeDecode => {
                    let resolved: Vec<Cow<'_, [u8]>> = resolve(pieces.iter().copied(), keep_empty)
                        .into_iter()
                        .map(|p| decode_n(p, m))
                        .collect();
                    match_send(&resolved, wild)
                }
            };
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

fn resolve_none<'a>(segs: &'a [Cow<'a, [u8]>]) -> Vec<&'a [u8]> {
    segs.iter()
        .map(|s| -> &[u8] { s })
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "AC0123456789abcdef0123456789ABCDEF";

    fn post(path: &str) -> Endpoint {
        route(&Method::POST, path).endpoint
    }

    fn get(path: &str) -> Endpoint {
        route(&Method::GET, path).endpoint
    }

    fn msg() -> Endpoint {
        Endpoint::MessageCreate {
            account_sid: AC.to_owned(),
        }
    }

    fn call() -> Endpoint {
        Endpoint::CallCreate {
            account_sid: AC.to_owned(),
        }
    }

    #[test]
    fn message_create_with_each_extension() {
        for ext in ["", ".json", ".xml"] {
            let path = format!("/2010-04-01/Accounts/{AC}/Messages{ext}");
            let r = route(&Method::POST, &path);
            assert_eq!(r.endpoint, msg(), "{path}");
            assert_eq!(r.upstream, Upstream::Api);
            assert_eq!(r.endpoint.send_product(), Some(Product::Messaging));
            assert_eq!(r.endpoint.name(), "messages.create");
        }
    }

    #[test]
    fn any_format_extension_is_still_a_create() {
        // Twilio has served .csv/.html too; a create in any format costs.
        for ext in [".csv", ".html", ".json.bak"] {
            assert_eq!(
                post(&format!("/2010-04-01/Accounts/{AC}/Messages{ext}")),
                msg()
            );
        }
        // But a different resource that merely starts with the word is not.
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/MessagesX")),
            Endpoint::Other
        );
    }

    #[test]
    fn call_create_with_each_extension() {
        for ext in ["", ".json", ".xml"] {
            let path = format!("/2010-04-01/Accounts/{AC}/Calls{ext}");
            let r = route(&Method::POST, &path);
            assert_eq!(r.endpoint, call(), "{path}");
            assert_eq!(r.upstream, Upstream::Api);
            assert_eq!(r.endpoint.send_product(), Some(Product::Voice));
            assert_eq!(r.endpoint.name(), "calls.create");
        }
    }

    #[test]
    fn verification_create() {
        let r = route(&Method::POST, "/v2/Services/VAabc123/Verifications");
        assert_eq!(
            r.endpoint,
            Endpoint::VerificationCreate {
                service_sid: "VAabc123".into()
            }
        );
        assert_eq!(r.upstream, Upstream::Verify);
        assert_eq!(r.endpoint.send_product(), Some(Product::Verify));
        assert_eq!(r.endpoint.name(), "verifications.create");
    }

    #[test]
    fn legacy_sms_messages_and_old_version_are_sends() {
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/SMS/Messages.json")),
            msg()
        );
        assert_eq!(
            post(&format!("/2008-08-01/Accounts/{AC}/SMS/Messages")),
            msg()
        );
        assert_eq!(post(&format!("/2008-08-01/Accounts/{AC}/Calls")), call());
    }

    #[test]
    fn case_variants_match_and_keep_sid_case() {
        assert_eq!(
            post(&format!("/2010-04-01/accounts/{AC}/MESSAGES.JSON")),
            msg()
        );
        assert_eq!(
            post(&format!("/2010-04-01/ACCOUNTS/{AC}/cAlLs.XmL")),
            call()
        );
        assert_eq!(
            post("/V2/SERVICES/VaMiXeD/verifications"),
            Endpoint::VerificationCreate {
                service_sid: "VaMiXeD".into()
            }
        );
    }

    #[test]
    fn unicode_case_folds_that_land_on_ascii_match() {
        // "meſſages" with LATIN SMALL LETTER LONG S equals "MESSAGES" to a
        // Unicode case-insensitive comparison.
        assert_eq!(
            post(&format!(
                "/2010-04-01/Accounts/{AC}/me\u{17F}\u{17F}ages.json"
            )),
            msg()
        );
        assert_eq!(
            post("/v2/Serv%C4%B1ces/VA1/Verifications"),
            Endpoint::VerificationCreate {
                service_sid: "VA1".into()
            }
        );
    }

    #[test]
    fn trailing_slash_and_double_slashes() {
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/Messages.json/")),
            msg()
        );
        assert_eq!(
            post(&format!("//2010-04-01//Accounts///{AC}//Messages.json")),
            msg()
        );
    }

    #[test]
    fn dot_segments() {
        assert_eq!(
            post(&format!("/2010-04-01/./Accounts/{AC}/./Messages.json")),
            msg()
        );
        assert_eq!(
            post(&format!("/2010-04-01/x/../Accounts/{AC}/Messages.json")),
            msg()
        );
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/Calls.json/x/..")),
            call()
        );
        // Never above the root.
        assert_eq!(
            post(&format!("/../../2010-04-01/Accounts/{AC}/Messages.json")),
            msg()
        );
    }

    #[test]
    fn dot_segment_that_hides_a_send_only_when_not_resolved() {
        // Decoded and resolved, this is /2010-04-01/Messages.json; read
        // literally it has six segments. A server that resolves the raw `..`
        // and only then decodes keeps the encoded one as the sid: a send.
        let e = post("/2010-04-01/Accounts/%2E%2E/x/../%4Dessages.json");
        assert_eq!(
            e,
            Endpoint::MessageCreate {
                account_sid: "..".into()
            }
        );
    }

    #[test]
    fn empty_segment_kept_through_dot_resolution() {
        // Dropping empties first resolves `..` against Messages.json (no
        // send); a server that keeps the empty segment pops it instead.
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/Messages.json//..")),
            msg()
        );
    }

    #[test]
    fn percent_encoded_and_double_encoded() {
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/%4Dessages.json")),
            msg()
        );
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/%254Dessages.json")),
            msg()
        );
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/%25254Dessages.json")),
            msg()
        );
        assert_eq!(
            post(&format!("/2010-04-01/%41ccounts/{AC}/Calls%2Ejson")),
            call()
        );
        assert_eq!(
            normalize_path(&format!("/2010-04-01/Accounts/{AC}/%254Dessages.json")),
            format!(
                "/2010-04-01/accounts/{}/messages.json",
                AC.to_ascii_lowercase()
            )
        );
    }

    #[test]
    fn encoded_sid_is_decoded_and_keeps_case() {
        assert_eq!(
            post("/2010-04-01/Accounts/AC%41bC/Messages.json"),
            Endpoint::MessageCreate {
                account_sid: "ACAbC".into()
            }
        );
    }

    #[test]
    fn unsettled_path_fails_closed() {
        // Five levels of encoding: more than we decode. The undecided segment
        // could be anything, so it is taken as a send.
        let five = "%252525254Dessages.json";
        assert!(matches!(
            post(&format!("/2010-04-01/Accounts/{AC}/{five}")),
            Endpoint::MessageCreate { .. }
        ));
        // A settled path with an unrelated last segment is not a send.
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/%4Eessages.json")),
            Endpoint::Other
        );
        // And an unsettled one under a wrong prefix is not either.
        assert_eq!(
            post(&format!("/2010-04-01/Foo/{AC}/{five}")),
            Endpoint::Other
        );
    }

    #[test]
    fn encoded_slash_as_separator_or_not() {
        // Whole-path decoding makes %2F a separator.
        assert_eq!(
            post(&format!("/2010-04-01/Accounts%2F{AC}%2FMessages.json")),
            msg()
        );
        // Per-segment decoding keeps it inside the segment: `a/b` then `..`
        // only pops one segment.
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/a%2Fb/../Messages.json")),
            msg()
        );
    }

    #[test]
    fn path_parameters() {
        assert_eq!(
            post(&format!(
                "/2010-04-01/Accounts/{AC}/Messages.json;jsessionid=x"
            )),
            msg()
        );
        assert_eq!(
            post(&format!("/2010-04-01/Accounts;x=1/{AC}/Messages;y")),
            msg()
        );
        // The classic `..;` trick: only a parameter-stripping server resolves it.
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/Messages.json/x/..;/")),
            msg()
        );
        // A server that cuts the path at the first `;`.
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/Messages.json;/../../x")),
            msg()
        );
        // Encoded `;` too.
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/Messages%3Bx")),
            msg()
        );
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC};x/Messages.json")),
            Endpoint::MessageCreate {
                account_sid: AC.into()
            }
        );
    }

    #[test]
    fn decoded_query_marker_cuts_the_path() {
        // A server that decodes and then reparses sees a query.
        assert_eq!(
            post(&format!(
                "/2010-04-01/Accounts/{AC}/Messages.json%3F/../../x"
            )),
            msg()
        );
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/Calls%23frag/..")),
            call()
        );
    }

    #[test]
    fn backslash_as_separator() {
        assert_eq!(
            post(&format!("\\2010-04-01\\Accounts\\{AC}\\Messages.json")),
            msg()
        );
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}%5CMessages.json")),
            msg()
        );
        // Read literally, a backslash is part of the sid.
        assert_eq!(
            post("/2010-04-01/Accounts/AC\\x/Messages.json"),
            Endpoint::MessageCreate {
                account_sid: "AC\\x".into()
            }
        );
        assert_eq!(
            normalize_path(&format!("\\2010-04-01\\Accounts\\{AC}\\Messages.json")),
            format!(
                "/2010-04-01/accounts/{}/messages.json",
                AC.to_ascii_lowercase()
            )
        );
    }

    #[test]
    fn a_path_whose_canonical_reading_is_a_send_is_a_send() {
        // Found by the route fuzzer: `;` parameters hide a `%23` that would
        // cut the path before `%3F` does; the canonical reading strips them
        // first and sees Messages.json.
        let p = "/2010-04-01/Accounts/AC;123$8cde%232;x=1789ABCD&EF/Messages.json%3F(../.%25";
        assert!(route(&Method::POST, &normalize_path(p))
            .endpoint
            .send_product()
            .is_some());
        assert_eq!(
            route(&Method::POST, p).endpoint.send_product(),
            Some(Product::Messaging)
        );
    }

    #[test]
    fn whitespace_and_nul_around_literals() {
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/Messages%20")),
            msg()
        );
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/Messages%00.png")),
            msg()
        );
        // Found by the route fuzzer: cut at the NUL, then trimmed, this is
        // `Messages` (it used to be trimmed first, then left as Other).
        for tail in [
            "Messages%20%00",
            "Messages%20%00x",
            "%20Messages%09%00.json",
        ] {
            assert_eq!(
                post(&format!("/2010-04-01/Accounts/{AC}/{tail}")),
                msg(),
                "{tail}"
            );
        }
    }

    #[test]
    fn non_post_to_send_path_is_not_a_send() {
        for m in [
            Method::GET,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
        ] {
            let r = route(&m, &format!("/2010-04-01/Accounts/{AC}/Messages.json"));
            assert_eq!(r.endpoint, Endpoint::Other, "{m}");
            assert_eq!(r.upstream, Upstream::Api);
        }
        assert_eq!(get("/v2/Services/VA1/Verifications"), Endpoint::Other);
        // http::Method is case sensitive: "post" is an extension method.
        let lower = Method::from_bytes(b"post").unwrap_or(Method::OPTIONS);
        assert_eq!(
            route(&lower, &format!("/2010-04-01/Accounts/{AC}/Messages.json")).endpoint,
            Endpoint::Other
        );
    }

    #[test]
    fn message_update_is_not_a_send() {
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/Messages/SM123.json")),
            Endpoint::Other
        );
        assert_eq!(
            post(&format!("/2010-04-01/Accounts/{AC}/Calls/CA123.json")),
            Endpoint::Other
        );
        assert_eq!(post("/v2/Services/VA1/Verifications/VE1"), Endpoint::Other);
    }

    fn participant(conference: &str) -> Endpoint {
        Endpoint::ParticipantCreate {
            account_sid: AC.to_owned(),
            conference_sid: conference.to_owned(),
        }
    }

    #[test]
    fn participant_create_is_a_voice_send_in_every_spelling() {
        for path in [
            format!("/2010-04-01/Accounts/{AC}/Conferences/CF1/Participants.json"),
            format!("/2010-04-01/Accounts/{AC}/Conferences/CF1/Participants"),
            format!("/2010-04-01/Accounts/{AC}/Conferences/CF1/Participants.xml"),
            format!("/2010-04-01/Accounts/{AC}/Conferences/CF1/Participants.json/"),
            format!("/2010-04-01/accounts/{AC}/CONFERENCES/CF1/participants.JSON"),
            format!("/2010-04-01/Accounts/{AC}/Conferences/CF1/%50articipants.json"),
            format!("/2010-04-01/Accounts/{AC}/Conferences/CF1/%2550articipants"),
            format!("/2010-04-01/Accounts/{AC}/%43onferences/CF1/Participants.json"),
            format!("//2010-04-01/Accounts/{AC}/Conferences//CF1/x/../Participants.json"),
            format!("/2010-04-01/Accounts/{AC}/Conferences/CF1/Participants.json;x=1"),
            format!("/2008-08-01/Accounts/{AC}/Conferences/CF1/Participants"),
        ] {
            let r = route(&Method::POST, &path);
            assert_eq!(r.endpoint, participant("CF1"), "{path}");
            assert_eq!(r.upstream, Upstream::Api);
            assert_eq!(r.endpoint.send_product(), Some(Product::Voice));
            assert_eq!(r.endpoint.name(), "participants.create");
        }
        // A friendly name, encoded as a client would, is decoded as the sid.
        assert_eq!(
            post(&format!(
                "/2010-04-01/Accounts/{AC}/Conferences/My%20Room/Participants.json"
            )),
            participant("My Room")
        );
        // Five levels of encoding: undecidable, so a send (fail closed).
        assert!(matches!(
            post(&format!(
                "/2010-04-01/Accounts/{AC}/Conferences/CF1/%252525255Articipants.json"
            )),
            Endpoint::ParticipantCreate { .. }
        ));
    }

    #[test]
    fn participant_update_and_fetch_are_not_sends() {
        let path = format!("/2010-04-01/Accounts/{AC}/Conferences/CF1/Participants/CA9.json");
        // Muting or holding a participant dials nobody.
        assert_eq!(post(&path), Endpoint::Other);
        let fetch = route(&Method::GET, &path);
        assert_eq!(
            fetch.endpoint,
            Endpoint::ParticipantFetch {
                account_sid: AC.into(),
                conference_sid: "CF1".into(),
                sid: "CA9".into()
            }
        );
        assert_eq!(fetch.upstream, Upstream::Api);
        assert_eq!(fetch.endpoint.name(), "participants.fetch");
        assert_eq!(fetch.endpoint.send_product(), None);
        assert_eq!(
            get(&format!(
                "/2010-04-01/accounts/{AC}/conferences/CF1/participants/agent%201/"
            )),
            Endpoint::ParticipantFetch {
                account_sid: AC.into(),
                conference_sid: "CF1".into(),
                sid: "agent 1".into()
            }
        );
        // A GET of the list is not a fetch of one.
        assert_eq!(
            get(&format!(
                "/2010-04-01/Accounts/{AC}/Conferences/CF1/Participants.json"
            )),
            Endpoint::Other
        );
    }

    #[test]
    fn verify_v1_is_routed_like_v2() {
        for path in [
            "/v1/Services/VA1/Verifications",
            "/V1/services/VA1/verifications/",
            "/v1/Services/VA1/%56erifications",
        ] {
            let r = route(&Method::POST, path);
            assert_eq!(
                r.endpoint,
                Endpoint::VerificationCreate {
                    service_sid: "VA1".into()
                },
                "{path}"
            );
            assert_eq!(r.upstream, Upstream::Verify);
            assert_eq!(r.endpoint.send_product(), Some(Product::Verify));
        }
        let r = route(&Method::POST, "/v1/Services/VA1/VerificationCheck");
        assert_eq!(
            r.endpoint,
            Endpoint::VerificationCheck {
                service_sid: "VA1".into()
            }
        );
        assert_eq!(r.upstream, Upstream::Verify);
        assert_eq!(
            get("/v1/Services/VA1/Verifications/VE1"),
            Endpoint::VerificationFetch {
                service_sid: "VA1".into(),
                sid: "VE1".into()
            }
        );
        // Status updates (canceled, approved) send nothing, on either version.
        assert_eq!(post("/v1/Services/VA1/Verifications/VE1"), Endpoint::Other);
        assert_eq!(post("/v2/Services/VA1/Verifications/VE1"), Endpoint::Other);
        assert_eq!(
            post("/v2/Services/VA1/Verifications/%2B15558675310"),
            Endpoint::Other
        );
        assert_eq!(verify_api_version("/v1/Services/VA1/Verifications"), "v1");
        assert_eq!(verify_api_version("/%561/Services/VA1/Verifications"), "v1");
        assert_eq!(verify_api_version("/v2/Services/VA1/Verifications"), "v2");
        assert_eq!(verify_api_version("/x"), "v2");
    }

    #[test]
    fn upstream_selection() {
        assert_eq!(
            route(&Method::GET, "/v2/Services").upstream,
            Upstream::Verify
        );
        assert_eq!(
            route(&Method::GET, "/V2/Services/VA1").upstream,
            Upstream::Verify
        );
        assert_eq!(route(&Method::GET, "/v2").upstream, Upstream::Verify);
        assert_eq!(
            route(&Method::GET, "/%76%32/Services").upstream,
            Upstream::Verify
        );
        assert_eq!(route(&Method::GET, "/v22/Services").upstream, Upstream::Api);
        assert_eq!(
            route(&Method::POST, "/v1/Services/VA1/Verifications/VE1").upstream,
            Upstream::Verify
        );
        assert_eq!(
            route(&Method::GET, "/v1/Services/VA1/VerificationChecks/x").upstream,
            Upstream::Verify
        );
        assert_eq!(
            route(&Method::GET, "/v1/Services/MG1/PhoneNumbers").upstream,
            Upstream::Api
        );
        let deep = format!("/v2{}", "/x".repeat(20));
        assert_eq!(route(&Method::GET, &deep).upstream, Upstream::Verify);
        assert_eq!(
            route(&Method::GET, "/2010-04-01/Accounts.json").upstream,
            Upstream::Api
        );
        assert_eq!(route(&Method::GET, "/").upstream, Upstream::Api);
        // The upstream follows the endpoint that was judged.
        let r = route(
            &Method::POST,
            &format!("/v2/../2010-04-01/Accounts/{AC}/Messages.json"),
        );
        assert_eq!((r.upstream, r.endpoint), (Upstream::Api, msg()));
    }

    #[test]
    fn fetches_are_recognized() {
        assert_eq!(
            get(&format!("/2010-04-01/Accounts/{AC}/Messages/SMabc.json")),
            Endpoint::MessageFetch {
                account_sid: AC.into(),
                sid: "SMabc".into()
            }
        );
        assert_eq!(
            get(&format!("/2010-04-01/Accounts/{AC}/Messages/SMabc")),
            Endpoint::MessageFetch {
                account_sid: AC.into(),
                sid: "SMabc".into()
            }
        );
        assert_eq!(
            get(&format!("/2010-04-01/accounts/{AC}/calls/CAxYz.json/")),
            Endpoint::CallFetch {
                account_sid: AC.into(),
                sid: "CAxYz".into()
            }
        );
        let r = route(&Method::GET, "/v2/Services/VAq/Verifications/VEw");
        assert_eq!(
            r.endpoint,
            Endpoint::VerificationFetch {
                service_sid: "VAq".into(),
                sid: "VEw".into()
            }
        );
        assert_eq!(r.upstream, Upstream::Verify);
        assert_eq!(r.endpoint.name(), "verifications.fetch");
        assert_eq!(r.endpoint.send_product(), None);
        // Odd but decodable fetch paths use the canonical reading.
        assert_eq!(
            get(&format!("/2010-04-01/Accounts/{AC}/%4Dessages/SM%41")),
            Endpoint::MessageFetch {
                account_sid: AC.into(),
                sid: "SMA".into()
            }
        );
        // Deeper resources are not fetches.
        assert_eq!(
            get(&format!(
                "/2010-04-01/Accounts/{AC}/Messages/SM1/Media.json"
            )),
            Endpoint::Other
        );
    }

    #[test]
    fn verification_check_is_recognized() {
        let r = route(&Method::POST, "/v2/Services/VAxy/VerificationCheck");
        assert_eq!(
            r.endpoint,
            Endpoint::VerificationCheck {
                service_sid: "VAxy".into()
            }
        );
        assert_eq!(r.upstream, Upstream::Verify);
        assert_eq!(r.endpoint.send_product(), None);
        assert_eq!(
            post("/v2/services/VAxy/verificationcheck/"),
            Endpoint::VerificationCheck {
                service_sid: "VAxy".into()
            }
        );
        assert_eq!(get("/v2/Services/VAxy/VerificationCheck"), Endpoint::Other);
    }

    #[test]
    fn non_matching_paths_are_other() {
        for p in [
            "/",
            "",
            "/2010-04-01/Accounts.json",
            "/2010-04-01/Accounts/AC1.json",
            "/2010-04-01/Accounts/AC1/IncomingPhoneNumbers.json",
            "/2010-04-01/Accounts/AC1/Messages/SM1/Media.json",
            "/2011-01-01/Accounts/AC1/Messages.json",
            "/2010-04-01/Account/AC1/Messages.json",
            "/2010-04-01/Accounts/Messages.json",
            "/x/2010-04-01/Accounts/AC1/Messages.json",
            "/v2/Services/VA1/Entities",
            "/v3/Services/VA1/Verifications",
            "/v2/Services/VA1/Verifications/VE1/x",
            "/v1/Services/VA1/Verifications/VE1/x",
            "/2010-04-01/Accounts/AC1/Conferences.json",
            "/2010-04-01/Accounts/AC1/Conferences/CF1.json",
            "/2010-04-01/Accounts/AC1/Conferences/CF1/Recordings.json",
            "/2010-04-01/Accounts/AC1/Conferences/Participants.json",
            "/2010-04-01/Accounts/AC1/Conference/CF1/Participants.json",
            "/2010-04-01/Accounts/AC1/Conferences/CF1/Participants/CA1/x",
            "/2010-04-01/Accounts/AC1/%zzessages.json",
        ] {
            assert_eq!(post(p), Endpoint::Other, "{p:?}");
            assert_eq!(get(p), Endpoint::Other, "{p:?}");
        }
    }

    #[test]
    fn non_utf8_sid_is_escaped_not_lost() {
        assert_eq!(
            post("/2010-04-01/Accounts/AC%FF1/Messages.json"),
            Endpoint::MessageCreate {
                account_sid: "AC%FF1".into()
            }
        );
        assert_eq!(normalize_path("/a%FFb/%C3%A9"), "/a%ffb/\u{e9}");
    }

    #[test]
    fn normalize_path_examples() {
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path("/A//B/./c/../D/;x"), "/a/b/d");
        assert_eq!(normalize_path("/../.."), "/");
        assert_eq!(
            normalize_path("/Messages.json;jsessionid=x"),
            "/messages.json"
        );
    }

    #[test]
    fn product_labels() {
        assert_eq!(Product::Messaging.as_str(), "messaging");
        assert_eq!(Product::Voice.as_str(), "voice");
        assert_eq!(Product::Verify.as_str(), "verify");
        assert_eq!(Endpoint::Other.name(), "other");
    }

    #[test]
    fn adversarial_paths_do_not_panic() {
        let long_dots = "/a".repeat(2000) + &"/..".repeat(2000);
        for p in [
            "%",
            "%%",
            "%2",
            ";;;",
            "\\\\",
            "/..;/..;/",
            "/%2e%2e%2f%2e%2e%2f",
            "/%C0%AE%C0%AE/",
            "/\u{212A}/\u{130}",
            long_dots.as_str(),
        ] {
            let _ = route(&Method::POST, p);
            let _ = route(&Method::GET, p);
            let _ = normalize_path(p);
        }
        let hidden = format!("{long_dots}/2010-04-01/Accounts/{AC}/Messages.json");
        assert_eq!(post(&hidden), msg());
    }
}
