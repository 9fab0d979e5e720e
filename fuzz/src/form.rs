//! Reference reading of an `application/x-www-form-urlencoded` body.
//!
//! The standard reading: split on `&`, skip empty pieces, split each piece
//! on its first `=`, `+` is a space, `%XX` a byte (malformed escapes kept
//! literally). A key "is" a name when, trimmed of Unicode white space and
//! case-folded ([`crate::fold`]), it equals the name.
//!
//! Lenient readings (what some server might do instead), combined freely:
//! `;` as a second pair separator; the key decoded 1..=3 more times; a
//! `[...]` suffix dropped from the key (PHP/Rails arrays); control and
//! invisible formatting characters dropped from the key.

use crate::{fold, pct_decode};

/// One form-decoding round: `+` is a space, then `%XX`.
pub fn form_decode(raw: &[u8]) -> Vec<u8> {
    let plus: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    pct_decode(&plus)
}

/// A decoded key compares as `name`?
pub fn key_is(key: &[u8], name: &str) -> bool {
    let text = String::from_utf8_lossy(key);
    fold(text.trim().as_bytes()) == name.as_bytes()
}

/// (key, value) pairs of the standard reading.
pub fn standard_pairs(body: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    pairs(body, false)
}

fn pairs(body: &[u8], semicolon: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    body.split(|&b| b == b'&' || (semicolon && b == b';'))
        .filter(|p| !p.is_empty())
        .map(|piece| {
            let (k, v) = match piece.iter().position(|&b| b == b'=') {
                Some(i) => (&piece[..i], &piece[i + 1..]),
                None => (piece, &piece[piece.len()..]),
            };
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn is_invisible(c: char) -> bool {
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

/// Every key a lenient reading could make of a decoded key.
fn key_variants(key: &[u8], invisible: bool) -> Vec<Vec<u8>> {
    let mut out = vec![key.to_vec()];
    let mut cur = key.to_vec();
    for _ in 0..3 {
        let next = form_decode(&cur);
        if next == cur {
            break;
        }
        out.push(next.clone());
        cur = next;
    }
    let mut more = Vec::new();
    for k in &out {
        if let Some(i) = k.iter().position(|&b| b == b'[') {
            more.push(k[..i].to_vec());
        }
        for part in k.split(|&b| b == b';') {
            more.push(part.to_vec());
        }
        if !invisible {
            continue;
        }
        if let Ok(s) = std::str::from_utf8(k) {
            let visible: String = s.chars().filter(|c| !is_invisible(*c)).collect();
            if visible.len() != s.len() {
                more.push(visible.into_bytes());
            }
        }
    }
    out.extend(more);
    out
}

/// Values of `name` under the standard reading.
pub fn standard_values(body: &[u8], name: &str) -> Vec<Vec<u8>> {
    standard_pairs(body)
        .into_iter()
        .filter(|(k, _)| key_is(k, name))
        .map(|(_, v)| v)
        .collect()
}

/// For each lenient reading, the values it gives `name`. The standard
/// reading is not included.
pub fn lenient_values(body: &[u8], name: &str) -> Vec<Vec<Vec<u8>>> {
    let mut readings = Vec::new();
    for semicolon in [false, true] {
        let ps = pairs(body, semicolon);
        // Reading "key variants": a pair counts if any variant of its key is
        // the name (a server reads each key one way; taking any is the
        // fail-closed union).
        let vals: Vec<Vec<u8>> = ps
            .iter()
            // Known bug `form-control-key-under-semicolon`: smsguard refuses
            // control characters in keys of the standard reading only, so
            // `x=;To%00=...` gives a second To to a server that splits on
            // `;` and reads keys as C strings. Tolerated, `;`-readings keep
            // such keys as they are.
            .filter(|(k, _)| {
                let invisible =
                    !(semicolon && crate::tolerated("form-control-key-under-semicolon"));
                key_variants(k, invisible).iter().any(|v| key_is(v, name))
            })
            .map(|(_, v)| v.clone())
            .collect();
        readings.push(vals);
        if semicolon {
            let plain: Vec<Vec<u8>> = ps
                .iter()
                .filter(|(k, _)| key_is(k, name))
                .map(|(_, v)| v.clone())
                .collect();
            readings.push(plain);
        }
    }
    readings
}

/// Does any reading (standard or lenient, values decoded up to 4 times)
/// hold the pair `name` = `value` (value trimmed, ASCII case-insensitive)?
pub fn any_reading_has(body: &[u8], name: &str, value: &str) -> bool {
    for semicolon in [false, true] {
        for (k, v) in pairs(body, semicolon) {
            // Invisible characters are not dropped here: smsguard refuses them
            // in the keys of a send, and this is only used after that.
            if !key_variants(&k, false).iter().any(|kv| key_is(kv, name)) {
                continue;
            }
            let mut cur = v;
            for _ in 0..4 {
                if String::from_utf8_lossy(&cur)
                    .trim()
                    .eq_ignore_ascii_case(value)
                {
                    return true;
                }
                let next = form_decode(&cur);
                if next == cur {
                    break;
                }
                cur = next;
            }
        }
    }
    false
}
