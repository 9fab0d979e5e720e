//! JSON written the way Twilio's writer writes it.

use bytes::Bytes;

/// A JSON object written the way Twilio writes it: keys in insertion order,
/// `", "` between members, `": "` after keys, ASCII-only strings.
pub(super) struct JsonObject {
    buf: String,
    empty: bool,
}

impl JsonObject {
    pub(super) fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An object whose text is expected to take about `bytes`: written
    /// without growing its buffer on the way.
    pub(super) fn with_capacity(bytes: usize) -> Self {
        let mut buf = String::with_capacity(bytes.max(1));
        buf.push('{');
        JsonObject { buf, empty: true }
    }

    /// Keys are this crate's own literals, printable ASCII with nothing to
    /// escape: written as they are.
    fn key(&mut self, key: &str) {
        debug_assert!(key.bytes().all(|b| !ESCAPE[usize::from(b)]), "{key}");
        if !self.empty {
            self.buf.push_str(", ");
        }
        self.empty = false;
        self.buf.push('"');
        self.buf.push_str(key);
        self.buf.push_str("\": ");
    }

    pub(super) fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        push_json_string(&mut self.buf, value);
    }

    /// A string value written from its parts (`parts`, then `last`), as
    /// [`str`](Self::str) would write their concatenation.
    pub(super) fn str_parts(&mut self, key: &str, parts: &[&str], last: &str) {
        self.key(key);
        self.buf.push('"');
        for part in parts.iter().chain([&last]) {
            push_json_chars(&mut self.buf, part);
        }
        self.buf.push('"');
    }

    /// A string value that is a decimal number (`"num_segments": "1"`).
    pub(super) fn str_u64(&mut self, key: &str, n: u64) {
        use std::fmt::Write;
        self.key(key);
        let _ = write!(self.buf, "\"{n}\"");
    }

    pub(super) fn opt_str(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    pub(super) fn null(&mut self, key: &str) {
        self.raw(key, "null");
    }

    /// A value that is already JSON (number, bool, nested object or array).
    pub(super) fn raw(&mut self, key: &str, json: &str) {
        self.key(key);
        self.buf.push_str(json);
    }

    pub(super) fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }

    pub(super) fn into_bytes(self) -> Bytes {
        Bytes::from(self.finish())
    }
}

/// Writes `s` as a JSON string with every character outside printable ASCII
/// escaped as `\uXXXX` (lowercase hex, UTF-16 surrogate pairs beyond the BMP),
/// which is what Twilio's JSON writer does (`"Hello! \ud83d\udc4d"`).
fn push_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    push_json_chars(out, s);
    out.push('"');
}

/// The bytes a JSON string escapes: all but printable ASCII, and `"` and
/// the backslash.
static ESCAPE: [bool; 256] = {
    let mut t = [true; 256];
    let mut b = b' ';
    while b <= b'~' {
        t[b as usize] = b == b'"' || b == b'\\';
        b += 1;
    }
    t
};

/// The inside of [`push_json_string`]: `s` escaped, without the quotes.
fn push_json_chars(out: &mut String, s: &str) {
    let mut rest = s;
    while !rest.is_empty() {
        // Printable ASCII other than '"' and the backslash is copied as it is,
        // a run at a time.
        let plain = rest
            .bytes()
            .position(|b| ESCAPE[usize::from(b)])
            .unwrap_or(rest.len());
        out.push_str(&rest[..plain]);
        rest = &rest[plain..];
        let Some(c) = rest.chars().next() else {
            break;
        };
        rest = &rest[c.len_utf8()..];
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            _ => {
                use std::fmt::Write;
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::twilio::responses::test_support::*;
    use crate::twilio::responses::{
        balance, fake_call, fake_message, fake_verification, CallRequest, MessageRequest,
        TwilioError, VerificationRequest,
    };
    use regex::Regex;

    #[test]
    fn fake_json_uses_twilios_separators() {
        // A comma right after a value, or a colon right after a key, that is
        // not followed by a space (none of the fakes' strings contain `",`).
        let compact = Regex::new(r#"("|null|true|false|\d|\}|\]),\S|":\S"#).unwrap();
        let call = CallRequest {
            account_sid: AC,
            to: "+15558675310",
            from: Some("+15017122661"),
        };
        let verification = VerificationRequest {
            account_sid: AC,
            service_sid: VA,
            to: "+15558675310",
            channel: "sms",
        };
        for body in [
            fake_message(&queued_request(), at(0)).1,
            fake_message(&accepted_request(), at(0)).1,
            fake_call(&call, at(0)).1,
            fake_verification(&verification, at(0)).1,
            balance(AC, "1.00", "USD"),
            TwilioError::too_many_requests().body(),
        ] {
            let text = std::str::from_utf8(&body).unwrap();
            assert!(text.is_ascii(), "{text}");
            assert!(!compact.is_match(text), "{text}");
            assert!(text.contains("\", \"") && text.contains("\": "), "{text}");
        }
        // The check itself notices compact JSON.
        assert!(compact.is_match(r#"{"a": 1,"b": 2}"#));
        assert!(compact.is_match(r#"{"a":1}"#));
    }

    #[test]
    fn odd_input_is_escaped_not_trusted() {
        let req = MessageRequest {
            account_sid: "not\"an\\account",
            to: "+1555\n",
            from: Some("\u{0}\u{7f}é"),
            messaging_service_sid: None,
            body: Some("tab\there \u{2028}"),
            num_media: 0,
        };
        let (_, body) = fake_message(&req, at(0));
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.contains(r#""from": "\u0000\u007f\u00e9""#), "{text}");
        assert!(text.contains(r#""body": "tab\there \u2028""#), "{text}");
        let m = parse(&body);
        assert_eq!(m["account_sid"], "not\"an\\account");
        assert_eq!(m["to"], "+1555\n");
    }
}
