//! Twilio's error bodies: a reject answered as Twilio answers it.

use bytes::Bytes;
use http::StatusCode;

use super::json::JsonObject;

/// A Twilio error answer:
/// `{"code": 21211, "message": "...", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwilioError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
}

impl TwilioError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        TwilioError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The link Twilio puts in `more_info` for this code.
    pub fn more_info(&self) -> String {
        format!("https://www.twilio.com/docs/errors/{}", self.code)
    }

    /// The JSON body, keys in Twilio's order (`code`, `message`, `more_info`,
    /// `status`).
    pub fn body(&self) -> Bytes {
        let mut obj = JsonObject::new();
        obj.raw("code", &self.code.to_string());
        obj.str("message", &self.message);
        obj.str("more_info", &self.more_info());
        obj.raw("status", &self.status.as_u16().to_string());
        obj.into_bytes()
    }

    /// 400 / 21211: `To` is not a phone number Twilio could send to.
    pub fn invalid_number(to: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            21211,
            format!("The 'To' number {to} is not a valid phone number."),
        )
    }

    /// 400 / 21604: a send without a `To`.
    pub fn missing_to() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To' phone number is required.",
        )
    }

    /// 400 / 21408: the destination's region is outside the allowed geography,
    /// answered the way Twilio's own Geo Permissions answer it.
    pub fn region_not_enabled(to: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            21408,
            format!(
                "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}"
            ),
        )
    }

    /// 429 / 20429: Twilio's generic rate-limit answer (same text as the
    /// Verify OpenAPI example).
    pub fn too_many_requests() -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, 20429, "Too many requests")
    }

    /// A request that might be a send but that the guard cannot read with
    /// certainty (duplicated `To`, not form-encoded, compressed, too large,
    /// invalid UTF-8...). The caller picks the status (400, 413, 415).
    ///
    /// Code 20001 is Twilio's generic "request parameters" error in its
    /// REST-API range (200xx): it says "your request's parameters are
    /// wrong" without pretending to be a specific field error that the
    /// client would then try to fix in the wrong place. Twilio has no
    /// dedicated codes for 413/415, so the same code covers them; the status
    /// carries the distinction. `detail` must not contain the message body or
    /// credentials: it goes back to the client verbatim.
    pub fn malformed(status: StatusCode, detail: &str) -> Self {
        let detail = detail.trim();
        let message = if detail.is_empty() {
            "The request could not be processed.".to_string()
        } else {
            format!("The request could not be processed: {detail}")
        };
        Self::new(status, 20001, message)
    }

    /// 502/504 from the guard when Twilio cannot be reached or does not answer
    /// in time. Code 20500 is Twilio's "Internal Server Error"; SDKs treat it
    /// as retryable-with-care, which is the right advice for a failed send.
    pub fn upstream_unavailable(status: StatusCode) -> Self {
        let message = if status == StatusCode::GATEWAY_TIMEOUT {
            "The upstream Twilio API did not answer in time."
        } else {
            "The upstream Twilio API could not be reached."
        };
        Self::new(status, 20500, message)
    }

    /// 429 / 60203: Verify's per-destination send limit.
    pub fn verify_max_attempts() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            60203,
            "Max send attempts reached",
        )
    }

    /// 403 / 60410: Verify Fraud Guard's temporary block of a destination
    /// prefix.
    pub fn verify_fraud_block() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            60410,
            "Verification delivery attempt blocked",
        )
    }

    /// 403 / 60605: Verify Geo Permissions block the destination.
    pub fn verify_geo() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            60605,
            "The destination phone number has been blocked by Verify Geo-Permissions",
        )
    }

    /// 404 / 20404, for a resource the guard knows does not exist.
    pub fn not_found(uri_path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            20404,
            format!("The requested resource {uri_path} was not found"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::responses::test_support::*;

    #[test]
    fn error_body_is_twilios_text_exactly() {
        let err = TwilioError::invalid_number("+1555");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            err.body(),
            Bytes::from_static(
                br#"{"code": 21211, "message": "The 'To' number +1555 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#
            )
        );
        let quoted = TwilioError::not_found("/a\"b").body();
        assert!(std::str::from_utf8(&quoted)
            .unwrap()
            .contains(r#"/a\"b was not found"#));
    }

    #[test]
    fn every_error_constructor_keeps_code_and_status_consistent() {
        let cases = [
            (TwilioError::invalid_number("x"), 400, 21211),
            (TwilioError::missing_to(), 400, 21604),
            (TwilioError::region_not_enabled("+79001234567"), 400, 21408),
            (TwilioError::too_many_requests(), 429, 20429),
            (
                TwilioError::malformed(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
                413,
                20001,
            ),
            (
                TwilioError::upstream_unavailable(StatusCode::BAD_GATEWAY),
                502,
                20500,
            ),
            (
                TwilioError::upstream_unavailable(StatusCode::GATEWAY_TIMEOUT),
                504,
                20500,
            ),
            (TwilioError::verify_max_attempts(), 429, 60203),
            (TwilioError::verify_fraud_block(), 403, 60410),
            (TwilioError::verify_geo(), 403, 60605),
            (TwilioError::not_found("/x"), 404, 20404),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status.as_u16(), status, "{err:?}");
            assert_eq!(err.code, code);
            let m = parse(&err.body());
            assert_eq!(
                top_level_keys(std::str::from_utf8(&err.body()).unwrap()),
                ["code", "message", "more_info", "status"]
            );
            assert_eq!(m["code"], code);
            assert_eq!(m["status"], status);
            assert_eq!(m["message"], err.message.as_str());
            assert_eq!(
                m["more_info"],
                format!("https://www.twilio.com/docs/errors/{code}")
            );
            assert!(!err.message.is_empty());
        }
        assert_eq!(
            TwilioError::malformed(StatusCode::BAD_REQUEST, "  ").message,
            "The request could not be processed."
        );
    }
}
