//! Strict reading of a send's `application/x-www-form-urlencoded` body: the
//! header checks that come before the body is read, the parse itself, the
//! extraction of the single `To` value that gets judged, and the byte-exact
//! removal of a parameter (e.g. `RiskCheck=disable`) before forwarding.
//!
//! This module must never hand back a `To` that Twilio might not be the one
//! to use: any body (or query) where a lenient or differently written server
//! could read a different or a second `To` is an error, never a best guess.
//! It never decodes lossily, never keeps only one of several duplicates (no
//! maps: every pair is kept in order), and never re-encodes what it forwards.
//!
//! Besides the standard reading (`&` separates pairs, first `=` splits key
//! from value, `+` is a space, `%XX` a byte, UTF-8 strictly), each pair is
//! also read the ways a lenient server might, and any key that appears in
//! such an alternative reading is "ambiguous": [`Form::one`] refuses it and
//! [`parse_send`] refuses an ambiguous `To`. The alternative readings are:
//! `;` as a pair separator (old HTML advice, older Python `parse_qs`), a
//! decoded `;` inside a key likewise, another form-decoding round of the key
//! (double decoding), and a `[...]` suffix dropped (PHP/Rails arrays).

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::HeaderMap;

/// Why a send's body (or headers, or query) cannot be read with certainty.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum FormError {
    /// Content-Type missing, several of them, not
    /// application/x-www-form-urlencoded, or with a parameter other than
    /// `charset=utf-8`.
    NotForm,
    /// Content-Encoding other than identity, or Transfer-Encoding other than
    /// chunked: the bytes we would read are not the form.
    Compressed,
    /// Content-Length (or the body) over the limit.
    TooLarge { limit: usize },
    /// Content-Length that is not one plain decimal number (or several that
    /// disagree): the framing itself is in doubt.
    InvalidContentLength,
    /// A decoded key or value is not valid UTF-8.
    InvalidUtf8,
    /// A '%' not followed by two hex digits.
    BadEscape,
    /// More than one To-like key in the body.
    DuplicateTo,
    /// A To-like key only under a lenient reading (`;` separators, double
    /// decoding, `To[]`), or a To whose value such a reading changes.
    AmbiguousTo,
    /// A To-like key in the query string of a send.
    ToInQuery,
    /// No To-like key at all.
    MissingTo,
    /// The body could not be read to its end (the client went away or sent
    /// a broken framing).
    Unreadable,
    /// A send with a query string: Twilio's SDKs never send one, and
    /// parameters there would go unjudged.
    QueryOnSend,
    /// A decoded key contains a control character (NUL included) or an
    /// invisible formatting character.
    ControlCharacter,
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormError::NotForm => f.write_str(
                "the request body must be application/x-www-form-urlencoded \
                 (one Content-Type header, charset utf-8 or none)",
            ),
            FormError::Compressed => f.write_str(
                "the request body must not be compressed or transfer-encoded \
                 (Content-Encoding identity, Transfer-Encoding chunked only)",
            ),
            FormError::TooLarge { limit } => {
                write!(f, "the request body is larger than {limit} bytes")
            }
            FormError::InvalidContentLength => {
                f.write_str("the Content-Length header is not a single valid number")
            }
            FormError::InvalidUtf8 => {
                f.write_str("a form parameter does not decode to valid UTF-8")
            }
            FormError::BadEscape => f.write_str(
                "a form parameter has a malformed percent escape \
                 ('%' must be followed by two hex digits)",
            ),
            FormError::DuplicateTo => {
                f.write_str("the To parameter appears more than once (in any letter case)")
            }
            FormError::AmbiguousTo => f.write_str(
                "the To parameter can be read in more than one way \
                 (a ';' next to it, an encoded key, or a To[] array key)",
            ),
            FormError::ToInQuery => {
                f.write_str("the To parameter must be in the request body, not the query string")
            }
            FormError::MissingTo => f.write_str("the To parameter is missing"),
            FormError::Unreadable => f.write_str("the request body could not be read"),
            FormError::QueryOnSend => {
                f.write_str("a send must carry its parameters in the body, not the query string")
            }
            FormError::ControlCharacter => {
                f.write_str("a form parameter name contains a control or invisible character")
            }
        }
    }
}

impl std::error::Error for FormError {}

/// Check a send's headers before reading its body.
///
/// The caller must still cap the bytes it actually reads at `limit` (a
/// chunked body has no Content-Length) and answer `TooLarge` past it.
pub fn check_headers(headers: &HeaderMap, limit: usize) -> Result<(), FormError> {
    check_content_type(headers)?;
    check_encodings(headers)?;
    check_content_length(headers, limit)
}

fn check_content_type(headers: &HeaderMap) -> Result<(), FormError> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let value = values.next().ok_or(FormError::NotForm)?;
    // Two Content-Type headers: servers disagree on which one counts.
    if values.next().is_some() {
        return Err(FormError::NotForm);
    }
    let value = value.to_str().map_err(|_| FormError::NotForm)?;
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(FormError::NotForm);
    }
    let mut seen_charset = false;
    for param in parts {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let (name, val) = param.split_once('=').ok_or(FormError::NotForm)?;
        // Only charset is meaningful here; any other parameter, or a second
        // charset, is something we do not know how the upstream reads.
        if seen_charset || !name.trim().eq_ignore_ascii_case("charset") {
            return Err(FormError::NotForm);
        }
        seen_charset = true;
        let val = val.trim();
        let val = val
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(val);
        if !val.eq_ignore_ascii_case("utf-8") {
            return Err(FormError::NotForm);
        }
    }
    Ok(())
}

fn check_encodings(headers: &HeaderMap) -> Result<(), FormError> {
    // Every listed coding must be one that leaves the bytes as they are once
    // the server has de-chunked them; anything else means the bytes we parse
    // are not the form the upstream will decode.
    let only = |name, allowed: &[&str]| -> Result<(), FormError> {
        for value in headers.get_all(name) {
            let value = value.to_str().map_err(|_| FormError::Compressed)?;
            for coding in value.split(',') {
                let coding = coding.trim();
                if !allowed.iter().any(|a| coding.eq_ignore_ascii_case(a)) {
                    return Err(FormError::Compressed);
                }
            }
        }
        Ok(())
    };
    only(CONTENT_ENCODING, &["identity"])?;
    only(TRANSFER_ENCODING, &["chunked"])
}

fn check_content_length(headers: &HeaderMap, limit: usize) -> Result<(), FormError> {
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    let mut seen: Option<u64> = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let text = value
            .to_str()
            .map_err(|_| FormError::InvalidContentLength)?
            .trim();
        // u64::from_str would accept a leading '+'; a length is digits only.
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FormError::InvalidContentLength);
        }
        // All digits but too big for u64: certainly over any limit.
        let n: u64 = text.parse().map_err(|_| FormError::TooLarge { limit })?;
        if seen.is_some_and(|prev| prev != n) {
            return Err(FormError::InvalidContentLength);
        }
        seen = Some(n);
        if n > limit_u64 {
            return Err(FormError::TooLarge { limit });
        }
    }
    Ok(())
}

/// The error of [`Form::one`]: the key is there more than once, or some
/// lenient reading of the body gives it (another) value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NotSingle;

impl fmt::Display for NotSingle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the parameter appears more than once or can be read in more than one way")
    }
}

impl std::error::Error for NotSingle {}

/// A strictly parsed form. Keeps every pair in order (no map anywhere: a map
/// keeps only one of several duplicates, and which one differs by server).
#[derive(Clone, Debug)]
pub struct Form {
    pairs: Vec<(String, String)>,
    /// Trimmed keys that some lenient reading of the body produces (or whose
    /// value it changes). Empty for ordinary bodies, so it costs nothing.
    ambiguous: Vec<String>,
}

impl Form {
    /// Generic strict parse: `&` separates pairs (empty pieces ignored), the
    /// first `=` separates key from value (none: empty value), `+` is a
    /// space, `%XX` a byte, and the decoded bytes must be UTF-8.
    pub fn parse(body: &[u8]) -> Result<Form, FormError> {
        // A guess instead of a counting pass: sends have a handful of pairs.
        let mut pairs = Vec::with_capacity(8);
        let mut ambiguous = Vec::new();
        for piece in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (raw_key, raw_value) = split_pair(piece);
            let key = decode_strict(raw_key)?;
            let value = decode_strict(raw_value)?;
            let hidden = if key.is_ascii() {
                key.bytes().any(|b| b.is_ascii_control())
            } else {
                key.chars().any(is_hidden)
            };
            if hidden {
                return Err(FormError::ControlCharacter);
            }
            if piece.contains(&b';') || key.bytes().any(|b| matches!(b, b'%' | b'+' | b';' | b'['))
            {
                note_lenient_readings(piece, &key, &mut ambiguous);
            }
            pairs.push((key.into_owned(), value.into_owned()));
        }
        Ok(Form { pairs, ambiguous })
    }

    /// Every pair, in order, as decoded.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Values of a key, matched by ASCII case-insensitive comparison of the
    /// whitespace-trimmed key.
    pub fn all<'s, 'k>(&'s self, key: &'k str) -> impl Iterator<Item = &'s str> + use<'s, 'k> {
        self.pairs
            .iter()
            .filter(move |(k, _)| key_eq(k, key))
            .map(|(_, v)| v.as_str())
    }

    /// The single value of a key; `Err` if it is present more than once (in
    /// any case) or a lenient reading of the body gives it a value;
    /// `Ok(None)` if absent.
    pub fn one(&self, key: &str) -> Result<Option<&str>, NotSingle> {
        if self.is_ambiguous(key) {
            return Err(NotSingle);
        }
        let mut values = self.all(key);
        let first = values.next();
        match values.next() {
            Some(_) => Err(NotSingle),
            None => Ok(first),
        }
    }

    /// How many times a key is present (standard reading).
    pub fn count(&self, key: &str) -> usize {
        self.all(key).count()
    }

    /// Whether a lenient reading of the body (see the module docs) gives this
    /// key a value, or a value different from the standard one.
    pub fn is_ambiguous(&self, key: &str) -> bool {
        self.ambiguous.iter().any(|k| key_eq(k, key))
    }
}

/// Parse a send: the query string must hold no To-like key (and must itself
/// be readable), the body strictly, with exactly one To-like key that no
/// lenient reading disputes. Returns the form and that key's decoded value,
/// untrimmed (a leading space is usually a '+' sent unencoded).
///
/// Only `To` is checked in the query: other query parameters are neither
/// read nor removed here.
pub fn parse_send(query: Option<&str>, body: &[u8]) -> Result<(Form, String), FormError> {
    parse_send_to(query, body, "To")
}

/// [`parse_send`] for a send whose destination is the parameter `field`
/// (`PhoneNumber` for an outgoing caller id); errors name `To`.
pub fn parse_send_to(
    query: Option<&str>,
    body: &[u8],
    field: &str,
) -> Result<(Form, String), FormError> {
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        let query = Form::parse(query.as_bytes())?;
        if query.count(field) > 0 || query.is_ambiguous(field) {
            return Err(FormError::ToInQuery);
        }
    }
    let form = Form::parse(body)?;
    let to = {
        let mut values = form.all(field);
        let first = values.next();
        if values.next().is_some() {
            return Err(FormError::DuplicateTo);
        }
        if form.is_ambiguous(field) {
            return Err(FormError::AmbiguousTo);
        }
        first.ok_or(FormError::MissingTo)?.to_owned()
    };
    Ok((form, to))
}

/// Remove every pair whose key reads as `key` (case-insensitive, trimmed)
/// and whose value reads as `value` (case-insensitive, trimmed), returning
/// the new body; every other byte is kept exactly as received (same
/// encoding, order and separators). `None` if nothing was removed.
///
/// Fail closed: a pair is removed if *any* reading of it matches: further
/// decoding rounds of key or value, a `[...]` key suffix, a decoded `;` in
/// the key, and `;`-separated sub-pairs (which are cut out with their `;`,
/// leaving the rest of the piece).
pub fn remove_pair(body: &[u8], key: &str, value: &str) -> Option<Bytes> {
    // First pass without allocating: most bodies have nothing to remove.
    if !body
        .split(|&b| b == b'&')
        .any(|piece| piece_matches(piece, key, value))
    {
        return None;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut first = true;
    for piece in body.split(|&b| b == b'&') {
        if piece_matches(piece, key, value) {
            continue;
        }
        // Re-joining the kept pieces with '&' reproduces the original
        // separators exactly, empty pieces included, minus one '&' per
        // removed piece.
        if !first {
            out.push(b'&');
        }
        first = false;
        out.extend_from_slice(piece);
    }
    Some(Bytes::from(out))
}

/// Whether the `&`-piece is the pair, or holds it as a `;`-separated
/// sub-pair. Such a piece goes whole: cutting the sub-pair out would turn
/// bytes of one pair's value into another pair's key, and Twilio would read
/// a form other than the one judged.
fn piece_matches(piece: &[u8], key: &str, value: &str) -> bool {
    if piece.is_empty() {
        return false;
    }
    pair_matches(piece, key, value)
        || (piece.contains(&b';')
            && piece
                .split(|&b| b == b';')
                .any(|s| pair_matches(s, key, value)))
}

fn pair_matches(piece: &[u8], key: &str, value: &str) -> bool {
    if piece.is_empty() {
        return false;
    }
    let (raw_key, raw_value) = split_pair(piece);
    let key_hit = any_reading(raw_key, |k| {
        if !k.bytes().any(|b| b == b';' || b == b'[') {
            return key_eq(k, key);
        }
        k.split(';')
            .any(|part| key_eq(part, key) || part.split('[').next().is_some_and(|b| key_eq(b, key)))
    });
    key_hit && any_reading(raw_value, |v| v.trim().eq_ignore_ascii_case(value.trim()))
}

/// Whether `pred` holds for any text a lenient server could decode `raw` to:
/// one form-decoding round, then further rounds while they change something.
/// A reading that is not UTF-8 is seen lossily (invalid bytes become U+FFFD):
/// it cannot equal an ASCII name, but a `;` in it still splits it into parts
/// that can. Allocates only when there is something to decode.
fn any_reading(raw: &[u8], mut pred: impl FnMut(&str) -> bool) -> bool {
    let mut cur: Cow<'_, [u8]> = match decode_lenient(raw) {
        Some(decoded) => Cow::Owned(decoded),
        None => Cow::Borrowed(raw),
    };
    for _ in 0..LENIENT_ROUNDS {
        if pred(&String::from_utf8_lossy(&cur)) {
            return true;
        }
        match decode_lenient(&cur) {
            Some(next) => cur = Cow::Owned(next),
            None => return false,
        }
    }
    false
}

/// Decoding rounds tried for lenient readings.
const LENIENT_ROUNDS: usize = 4;

/// Record the keys that lenient readings of one `&`-piece produce. Called
/// only for pieces that have a `;`, or whose decoded key still looks
/// encoded or bracketed.
fn note_lenient_readings(piece: &[u8], key: &str, out: &mut Vec<String>) {
    // `;` as a separator: each sub-piece is a pair of its own. The first
    // one carries the standard key when the `;` is in the value, whose
    // value is then cut short: that key is ambiguous too.
    if piece.contains(&b';') {
        for sub in piece.split(|&b| b == b';') {
            let (raw_key, _) = split_pair(sub);
            any_reading(raw_key, |k| {
                note_key_variants(k, out);
                false
            });
        }
    }
    // A decoded `;` or a `[...]` suffix in the key itself.
    if key.contains([';', '[']) {
        note_key_variants(key, out);
    }
    // Double (or deeper) decoding of the key.
    if key.contains(['%', '+']) {
        let mut cur: Cow<'_, [u8]> = Cow::Borrowed(key.as_bytes());
        let mut noted = false;
        for _ in 1..LENIENT_ROUNDS {
            let Some(next) = decode_lenient(&cur) else {
                break;
            };
            cur = Cow::Owned(next);
            // Lossily: a server that decodes to bytes and splits on `;`
            // finds `To` in `x%bb%3BTo` although the whole is not UTF-8.
            note_key_variants(&String::from_utf8_lossy(&cur), out);
            noted = true;
        }
        if noted {
            note_key(key, out);
        }
    }
}

/// A key, its `;`-separated parts and their `[...]`-less bases.
fn note_key_variants(key: &str, out: &mut Vec<String>) {
    for part in key.split(';') {
        note_key(part, out);
        if let Some(base) = part.split('[').next() {
            note_key(base, out);
        }
    }
}

fn note_key(key: &str, out: &mut Vec<String>) {
    let mut push = |k: &str| {
        let k = k.trim();
        if !k.is_empty() && !out.iter().any(|o| o == k) {
            out.push(k.to_owned());
        }
    };
    push(key);
    if key.chars().any(is_hidden) {
        // A reader that stops at a control character (a C string: `To\0`
        // is `To`), or one that drops invisible characters.
        push(key.split(|c: char| c.is_control()).next().unwrap_or(key));
        push(&key.chars().filter(|c| !is_hidden(*c)).collect::<String>());
    }
}

/// Keys compare trimmed of (Unicode) whitespace and ASCII case-insensitively:
/// Twilio's names are case sensitive, but we cannot be sure how it treats
/// `to`, `TO` or ` To`, so they all count as `To`.
fn key_eq(a: &str, b: &str) -> bool {
    // Trimming decodes chars at both ends; skip it when both ends of both
    // keys are ASCII alphanumerics, as in every ordinary key.
    let plain_ends = |s: &str| {
        let bytes = s.as_bytes();
        bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
    };
    if plain_ends(a) && plain_ends(b) {
        return a.eq_ignore_ascii_case(b);
    }
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Control characters (C0, DEL, C1, so NUL too) and the invisible formatting
/// characters a server might silently drop (a leading BOM, zero-width
/// characters, bidi controls), which could turn a key into `To` for it
/// but not for us.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{FEFF}'
        )
}

fn split_pair(piece: &[u8]) -> (&[u8], &[u8]) {
    match piece.iter().position(|&b| b == b'=') {
        Some(i) => {
            let (k, v) = piece.split_at(i);
            (k, v.get(1..).unwrap_or_default())
        }
        None => (piece, &[]),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Strict form decoding. Borrows when there is nothing to decode, so a plain
/// key or value costs a scan, a UTF-8 check and no allocation here.
fn decode_strict(raw: &[u8]) -> Result<Cow<'_, str>, FormError> {
    let is_special = |b: &u8| *b == b'%' || *b == b'+';
    if !raw.iter().any(is_special) {
        return std::str::from_utf8(raw)
            .map(Cow::Borrowed)
            .map_err(|_| FormError::InvalidUtf8);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&b, tail)) = rest.split_first() {
        match b {
            b'+' => {
                out.push(b' ');
                rest = tail;
            }
            b'%' => match tail {
                [h, l, more @ ..] => match (hex_value(*h), hex_value(*l)) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi << 4) | lo);
                        rest = more;
                    }
                    _ => return Err(FormError::BadEscape),
                },
                _ => return Err(FormError::BadEscape),
            },
            _ => {
                // Copy the whole run up to the next escape at once.
                let run = rest.iter().position(is_special).unwrap_or(rest.len());
                let (plain, more) = rest.split_at_checked(run).unwrap_or((rest, &[]));
                out.extend_from_slice(plain);
                rest = more;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| FormError::InvalidUtf8)
}

/// Lenient form decoding as a forgiving server does it: malformed escapes
/// stay literal. `None` if nothing would change.
fn decode_lenient(raw: &[u8]) -> Option<Vec<u8>> {
    if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut changed = false;
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let escaped = match (b, raw.get(i + 1), raw.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex_value(h).zip(hex_value(l)),
            _ => None,
        };
        if let Some((hi, lo)) = escaped {
            out.push((hi << 4) | lo);
            i += 3;
            changed = true;
        } else if b == b'+' {
            out.push(b' ');
            i += 1;
            changed = true;
        } else {
            out.push(b);
            i += 1;
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const LIMIT: usize = 16 * 1024;

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in list {
            let name = http::header::HeaderName::from_bytes(name.as_bytes())
                .unwrap_or(http::header::WARNING);
            map.append(
                name,
                HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("x")),
            );
        }
        map
    }

    const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

    #[test]
    fn headers_plain_form_is_ok() {
        assert_eq!(check_headers(&headers(&[FORM]), LIMIT), Ok(()));
        assert_eq!(
            check_headers(&headers(&[FORM, ("content-length", "120")]), LIMIT),
            Ok(())
        );
    }

    #[test]
    fn headers_content_type_rules() {
        let ct = |v: &str| check_headers(&headers(&[("content-type", v)]), LIMIT);
        assert_eq!(check_headers(&headers(&[]), LIMIT), Err(FormError::NotForm));
        assert_eq!(ct("text/plain"), Err(FormError::NotForm));
        assert_eq!(
            ct("multipart/form-data; boundary=x"),
            Err(FormError::NotForm)
        );
        assert_eq!(ct("application/json"), Err(FormError::NotForm));
        assert_eq!(
            ct("application/x-www-form-urlencoded; charset=latin1"),
            Err(FormError::NotForm)
        );
        assert_eq!(
            ct("application/x-www-form-urlencoded; charset=iso-8859-1"),
            Err(FormError::NotForm)
        );
        assert_eq!(
            ct("application/x-www-form-urlencoded; foo=bar"),
            Err(FormError::NotForm)
        );
        assert_eq!(
            ct("application/x-www-form-urlencoded; charset=utf-8; charset=utf-8"),
            Err(FormError::NotForm)
        );
        assert_eq!(
            ct("application/x-www-form-urlencoded, text/plain"),
            Err(FormError::NotForm)
        );
        assert_eq!(
            ct("application/x-www-form-urlencoded; charset=UTF-8"),
            Ok(())
        );
        assert_eq!(
            ct("Application/X-WWW-Form-URLEncoded;charset=\"utf-8\""),
            Ok(())
        );
        assert_eq!(ct("application/x-www-form-urlencoded;"), Ok(()));
        let two = headers(&[FORM, FORM]);
        assert_eq!(check_headers(&two, LIMIT), Err(FormError::NotForm));
    }

    #[test]
    fn headers_encodings() {
        let with = |name: &str, v: &str| check_headers(&headers(&[FORM, (name, v)]), LIMIT);
        assert_eq!(with("content-encoding", "gzip"), Err(FormError::Compressed));
        assert_eq!(
            with("content-encoding", "identity, gzip"),
            Err(FormError::Compressed)
        );
        assert_eq!(with("content-encoding", ""), Err(FormError::Compressed));
        assert_eq!(with("content-encoding", "identity"), Ok(()));
        assert_eq!(with("content-encoding", "Identity"), Ok(()));
        assert_eq!(with("transfer-encoding", "chunked"), Ok(()));
        assert_eq!(
            with("transfer-encoding", "gzip, chunked"),
            Err(FormError::Compressed)
        );
    }

    #[test]
    fn headers_content_length() {
        let cl = |v: &[&str]| {
            let mut list = vec![FORM];
            list.extend(v.iter().map(|v| ("content-length", *v)));
            check_headers(&headers(&list), 100)
        };
        assert_eq!(cl(&["100"]), Ok(()));
        assert_eq!(cl(&["101"]), Err(FormError::TooLarge { limit: 100 }));
        assert_eq!(
            cl(&["99999999999999999999999"]),
            Err(FormError::TooLarge { limit: 100 })
        );
        assert_eq!(cl(&["+5"]), Err(FormError::InvalidContentLength));
        assert_eq!(cl(&["5, 5"]), Err(FormError::InvalidContentLength));
        assert_eq!(cl(&["5", "6"]), Err(FormError::InvalidContentLength));
        assert_eq!(cl(&["5", "5"]), Ok(()));
    }

    fn send(body: &str) -> Result<(Form, String), FormError> {
        parse_send(None, body.as_bytes())
    }

    #[test]
    fn send_ok_returns_to_and_keeps_everything() {
        let (form, to) = send("From=%2B15550001111&To=%2B15551234567&Body=hi+there")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(to, "+15551234567");
        assert_eq!(form.one("Body"), Ok(Some("hi there")));
        assert_eq!(form.one("body"), Ok(Some("hi there")));
        assert_eq!(form.one("Missing"), Ok(None));
        assert_eq!(form.pairs().len(), 3);
    }

    #[test]
    fn duplicate_to_in_every_case() {
        for body in [
            "To=%2B1&To=%2B2",
            "To=%2B1&To=%2B1",
            "To=a&to=b",
            "TO=a&To=b",
            "tO=a&To=b",
            "To=a&+To=b",
            "To=a&%20To=b",
            "To=a&To+=b",
        ] {
            assert_eq!(
                send(body).map(|r| r.1),
                Err(FormError::DuplicateTo),
                "{body}"
            );
        }
        // A single lowercase or padded To is still the To.
        assert_eq!(send("to=%2B1").map(|r| r.1), Ok("+1".into()));
        assert_eq!(send("+To+=%2B1").map(|r| r.1), Ok("+1".into()));
        assert_eq!(
            send("%C2%A0To=%2B1&To=2").map(|r| r.1),
            Err(FormError::DuplicateTo)
        );
    }

    #[test]
    fn to_in_query() {
        assert_eq!(
            parse_send(Some("To=%2B1"), b"To=%2B2").map(|r| r.1),
            Err(FormError::ToInQuery)
        );
        assert_eq!(
            parse_send(Some("x=1&to=2"), b"To=%2B2").map(|r| r.1),
            Err(FormError::ToInQuery)
        );
        assert_eq!(
            parse_send(Some("x=1;To=2"), b"To=%2B2").map(|r| r.1),
            Err(FormError::ToInQuery)
        );
        assert_eq!(
            parse_send(Some("x=1"), b"To=%2B2").map(|r| r.1),
            Ok("+2".into())
        );
        assert_eq!(
            parse_send(Some(""), b"To=%2B2").map(|r| r.1),
            Ok("+2".into())
        );
        assert_eq!(
            parse_send(Some("x=%G0"), b"To=%2B2").map(|r| r.1),
            Err(FormError::BadEscape)
        );
    }

    #[test]
    fn missing_to() {
        assert_eq!(send("Body=hi").map(|r| r.1), Err(FormError::MissingTo));
        assert_eq!(send("").map(|r| r.1), Err(FormError::MissingTo));
        assert_eq!(
            send("Tox=1&xTo=2&T=o").map(|r| r.1),
            Err(FormError::MissingTo)
        );
        // Only in a value does not count.
        assert_eq!(
            send("Body=To%3D%2B1").map(|r| r.1),
            Err(FormError::MissingTo)
        );
    }

    #[test]
    fn invalid_utf8_and_bad_escapes() {
        assert_eq!(send("To=%FF").map(|r| r.1), Err(FormError::InvalidUtf8));
        assert_eq!(send("To=1&%FF=1").map(|r| r.1), Err(FormError::InvalidUtf8));
        assert_eq!(
            parse_send(None, b"To=1&B=\xff").map(|r| r.1),
            Err(FormError::InvalidUtf8)
        );
        assert_eq!(send("To=%G1").map(|r| r.1), Err(FormError::BadEscape));
        assert_eq!(send("To=1&Body=%").map(|r| r.1), Err(FormError::BadEscape));
        assert_eq!(send("To=1&Body=%4").map(|r| r.1), Err(FormError::BadEscape));
        assert_eq!(send("To=1&%zz=1").map(|r| r.1), Err(FormError::BadEscape));
        // Decoded but valid multibyte UTF-8 is fine.
        let (form, _) = send("To=1&Body=%C3%A9").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(form.one("Body"), Ok(Some("\u{e9}")));
    }

    #[test]
    fn control_and_invisible_characters_in_keys() {
        for body in [
            "To=1&a%00=1",
            "To=1&%00To=2",
            "To=1&a%0Ab=1",
            "%7FTo=1",
            "%EF%BB%BFTo=1&To=2",
            "T%E2%80%8Bo=1",
        ] {
            assert_eq!(
                send(body).map(|r| r.1),
                Err(FormError::ControlCharacter),
                "{body}"
            );
        }
        // In values, control characters are content (a Body with newlines).
        assert_eq!(send("To=1&Body=a%0Ab%00").map(|r| r.1), Ok("1".into()));
        // Found by the form fuzzer: a `;`-reading whose key ends in a NUL
        // is `To` to a server that reads keys as C strings.
        assert_eq!(
            send("To=%2B14155550123&x=;To%00=%2B19005550100").map(|r| r.1),
            Err(FormError::AmbiguousTo)
        );
        assert_eq!(
            send("To=1&x=;T%E2%80%8Bo=2").map(|r| r.1),
            Err(FormError::AmbiguousTo)
        );
    }

    #[test]
    fn plus_is_space_and_leading_space_to_is_kept() {
        let (form, to) = send("To=+15551234567&Body=a+b%2Bc").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(to, " 15551234567");
        assert_eq!(form.one("Body"), Ok(Some("a b+c")));
        assert_eq!(send("To=%20%2B1+").map(|r| r.1), Ok(" +1 ".into()));
    }

    #[test]
    fn order_and_duplicates_of_other_keys_are_kept() {
        let (form, _) = send("MediaUrl=https%3A%2F%2Fa&To=1&MediaUrl=https%3A%2F%2Fb&&Body=x&Flag")
            .unwrap_or_else(|e| panic!("{e}"));
        let keys: Vec<&str> = form.pairs().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["MediaUrl", "To", "MediaUrl", "Body", "Flag"]);
        let media: Vec<&str> = form.all("mediaurl").collect();
        assert_eq!(media, ["https://a", "https://b"]);
        assert_eq!(form.count("MediaUrl"), 2);
        assert_eq!(form.one("MediaUrl"), Err(NotSingle));
        assert_eq!(form.one("Flag"), Ok(Some("")));
    }

    #[test]
    fn semicolon_readings_of_to_fail_closed() {
        for body in [
            // `;` as a separator would give a second To.
            "x=1;To=%2B2&To=%2B1",
            "To=%2B1;To=%2B2",
            // ... or the only To.
            "x=1;To=%2B2",
            // ... or a different To value.
            "To=%2B1;x=2",
            // A decoded `;` in a key.
            "x%3BTo=%2B2&To=%2B1",
            // ... only on a second round, whose bytes are not UTF-8
            // (`%bb` is 0xBB): a server splitting bytes on `;` finds `To`.
            "bbbbb%25bbbb%253BTo=27;bbbb&To=bbbbbb'",
            "x%25bb%253BTo=%2B2",
        ] {
            assert_eq!(
                send(body).map(|r| r.1),
                Err(FormError::AmbiguousTo),
                "{body}"
            );
        }
        // A `;` elsewhere is just content.
        assert_eq!(send("Body=hi;there&To=%2B1").map(|r| r.1), Ok("+1".into()));
    }

    #[test]
    fn other_lenient_readings_of_to_fail_closed() {
        for body in [
            // Double decoding: %2554 -> %54 -> T.
            "%2554o=%2B2&To=%2B1",
            "%2554o=%2B2",
            // %2B -> '+' -> ' ' on a second round: " To".
            "%2BTo=%2B2&To=%2B1",
            // PHP/Rails arrays.
            "To[]=%2B2",
            "To%5B0%5D=%2B2&To=%2B1",
        ] {
            assert_eq!(
                send(body).map(|r| r.1),
                Err(FormError::AmbiguousTo),
                "{body}"
            );
        }
    }

    #[test]
    fn one_refuses_ambiguous_keys() {
        let form = Form::parse(b"Channel=email;Channel=sms&To=1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(form.count("Channel"), 1);
        assert!(form.is_ambiguous("channel"));
        assert_eq!(form.one("Channel"), Err(NotSingle));
        assert_eq!(form.one("To"), Ok(Some("1")));
    }

    #[test]
    fn remove_pair_keeps_other_bytes_exactly() {
        let body = b"To=%2b1555&Body=a%20b+c&RiskCheck=disable&MediaUrl=x&MediaUrl=y";
        let out = remove_pair(body, "RiskCheck", "disable");
        assert_eq!(
            out.as_deref(),
            Some(&b"To=%2b1555&Body=a%20b+c&MediaUrl=x&MediaUrl=y"[..])
        );
    }

    #[test]
    fn remove_pair_variants() {
        let rm = |b: &str| {
            remove_pair(b.as_bytes(), "RiskCheck", "disable")
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        assert_eq!(rm("RiskCheck=disable&To=1"), Some("To=1".into()));
        assert_eq!(rm("To=1&RiskCheck=disable"), Some("To=1".into()));
        assert_eq!(rm("RiskCheck=disable"), Some("".into()));
        assert_eq!(rm("To=1&riskcheck=DISABLE&B=2"), Some("To=1&B=2".into()));
        assert_eq!(
            rm("RiskCheck=disable&To=1&RiskCheck=disable"),
            Some("To=1".into())
        );
        assert_eq!(
            rm("To=1&RiskCheck=disable&RiskCheck=disable"),
            Some("To=1".into())
        );
        assert_eq!(
            rm("To=1&&RiskCheck=disable&&B=2"),
            Some("To=1&&&B=2".into())
        );
        // Other readings of the same pair.
        assert_eq!(rm("To=1&Risk%43heck=dis%61ble"), Some("To=1".into()));
        assert_eq!(rm("To=1&+RiskCheck+=+disable"), Some("To=1".into()));
        assert_eq!(rm("To=1&RiskCheck=%2564isable"), Some("To=1".into()));
        assert_eq!(rm("To=1&RiskCheck[]=disable"), Some("To=1".into()));
        // A `;`-sub-pair takes its whole `&`-piece with it: cutting it out
        // would make value bytes a key (`a;RiskCheck=disable;%01` became
        // the pair `a;%01`), a form other than the one judged.
        assert_eq!(rm("To=1&Body=hi;RiskCheck=disable"), Some("To=1".into()));
        assert_eq!(rm("To=1&a;RiskCheck=disable;%01"), Some("To=1".into()));
        assert_eq!(rm("To=1&x%3BRiskCheck=disable"), Some("To=1".into()));
        // Left alone.
        assert_eq!(rm("To=1&RiskCheck=enable"), None);
        assert_eq!(rm("To=1&RiskChecks=disable"), None);
        assert_eq!(rm("To=1&Body=RiskCheck%3Ddisable"), None);
        assert_eq!(rm(""), None);
    }

    #[test]
    fn errors_display_for_developers() {
        assert_eq!(
            FormError::NotForm.to_string(),
            "the request body must be application/x-www-form-urlencoded (one Content-Type header, charset utf-8 or none)"
        );
        assert!(FormError::TooLarge { limit: 10 }
            .to_string()
            .contains("10 bytes"));
        let e: Box<dyn std::error::Error> = Box::new(FormError::MissingTo);
        assert!(e.to_string().contains("To"));
    }

    #[test]
    fn arbitrary_bytes_do_not_panic() {
        let mut state: u32 = 0x1234_5678;
        let alphabet = b"%+=&;[]Tto 0aF\xff\x00\xc3";
        for _ in 0..2000 {
            let len = (state % 24) as usize;
            let mut body = Vec::with_capacity(len);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                body.push(
                    alphabet
                        .get(state as usize % alphabet.len())
                        .copied()
                        .unwrap_or(b'x'),
                );
            }
            let _ = parse_send(None, &body);
            let _ = remove_pair(&body, "To", "x");
        }
    }
}
