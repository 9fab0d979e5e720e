//! The fake Verification (Verify v2, or v1 when asked on it) and the
//! Verification Check answer.

use std::time::SystemTime;

use bytes::Bytes;

use super::dates::iso8601;
use super::json::JsonObject;
use super::sids::random_sid;

/// What a fake Verification needs from the request.
#[derive(Clone, Copy, Debug)]
pub struct VerificationRequest<'a> {
    pub account_sid: &'a str,
    pub service_sid: &'a str,
    pub to: &'a str,
    /// The `Channel` parameter as sent (`sms`, `call`, `whatsapp`, `auto`...).
    pub channel: &'a str,
}

/// The JSON of a freshly created Verification (answered with 201), per
/// `verify.v2.service.verification`, in the key order of the Verify
/// OpenAPI examples (which differs from the schema's property order).
pub fn fake_verification(req: &VerificationRequest, now: SystemTime) -> (String, Bytes) {
    fake_verification_on(req, "v2", now)
}

/// [`fake_verification`] for a send made on the Verify API `version`
/// (`"v1"` or `"v2"`): the same resource, whose `url` names that version.
pub fn fake_verification_on(
    req: &VerificationRequest,
    version: &str,
    now: SystemTime,
) -> (String, Bytes) {
    let version = if version == "v1" { "v1" } else { "v2" };
    let sid = random_sid("VE");
    let date = iso8601(now);
    let channel = verification_channel(req.channel);

    let mut attempt = JsonObject::new();
    attempt.str("time", &date);
    attempt.str("channel", attempt_channel(channel));
    attempt.str("attempt_sid", &random_sid("VL"));

    let mut obj = JsonObject::new();
    obj.str("sid", &sid);
    obj.str("service_sid", req.service_sid);
    obj.str("account_sid", req.account_sid);
    obj.str("to", req.to);
    obj.str("channel", channel);
    obj.str("status", "pending");
    obj.raw("valid", "false");
    obj.str("date_created", &date);
    obj.str("date_updated", &date);
    obj.raw("lookup", "{}");
    obj.null("amount");
    obj.null("payee");
    obj.raw("send_code_attempts", &format!("[{}]", attempt.finish()));
    obj.null("sna");
    obj.str(
        "url",
        &format!(
            "https://verify.twilio.com/{version}/Services/{}/Verifications/{sid}",
            req.service_sid
        ),
    );
    (sid, obj.into_bytes())
}

/// What a Verification Check answer needs.
#[derive(Clone, Copy, Debug)]
pub struct VerificationCheckRequest<'a> {
    pub account_sid: &'a str,
    pub service_sid: &'a str,
    /// The verification being checked; a fresh `VE` sid when `None`.
    pub verification_sid: Option<&'a str>,
    pub to: &'a str,
    pub channel: &'a str,
    /// `approved` (valid code) or `pending` (wrong code).
    pub approved: bool,
}

/// The JSON of a Verification Check answer, per
/// `verify.v2.service.verification_check`, in the order of its example.
pub fn verification_check(req: &VerificationCheckRequest, now: SystemTime) -> Bytes {
    let sid = req
        .verification_sid
        .map(str::to_string)
        .unwrap_or_else(|| random_sid("VE"));
    let date = iso8601(now);
    let mut obj = JsonObject::new();
    obj.str("sid", &sid);
    obj.str("service_sid", req.service_sid);
    obj.str("account_sid", req.account_sid);
    obj.str("to", req.to);
    obj.str("channel", verification_channel(req.channel));
    obj.str("status", if req.approved { "approved" } else { "pending" });
    obj.raw("valid", if req.approved { "true" } else { "false" });
    obj.null("amount");
    obj.null("payee");
    obj.raw("sna_attempts_error_codes", "[]");
    obj.str("date_created", &date);
    obj.str("date_updated", &date);
    obj.into_bytes()
}

/// The channel a Verification reports. `auto` is resolved by Twilio to a
/// concrete channel; SMS is what it falls back to, so a fake says `sms`.
/// Values outside the schema's enum also become `sms` rather than echoing
/// something Twilio would never answer.
fn verification_channel(requested: &str) -> &'static str {
    const CHANNELS: [&str; 5] = ["sms", "call", "email", "whatsapp", "sna"];
    CHANNELS
        .iter()
        .find(|c| c.eq_ignore_ascii_case(requested.trim()))
        .copied()
        .unwrap_or("sms")
}

/// The channel inside `send_code_attempts`: the Verify examples show the
/// older channels upper-case (`SMS`, `EMAIL`) and the newer ones lower-case
/// (`whatsapp`, `sna`); `CALL` follows the older ones.
fn attempt_channel(channel: &str) -> &'static str {
    match channel {
        "call" => "CALL",
        "email" => "EMAIL",
        "whatsapp" => "whatsapp",
        "sna" => "sna",
        _ => "SMS",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::responses::test_support::*;
    use regex::Regex;

    #[test]
    fn a_fake_verification_is_pending_with_one_attempt() {
        let (sid, body) = fake_verification(
            &VerificationRequest {
                account_sid: AC,
                service_sid: VA,
                to: "+15017122661",
                channel: "auto",
            },
            at(1_438_286_400),
        );
        let text = std::str::from_utf8(&body).unwrap();
        assert_eq!(
            top_level_keys(text),
            [
                "sid",
                "service_sid",
                "account_sid",
                "to",
                "channel",
                "status",
                "valid",
                "date_created",
                "date_updated",
                "lookup",
                "amount",
                "payee",
                "send_code_attempts",
                "sna",
                "url"
            ]
        );
        let m = parse(&body);
        assert!(sid.starts_with("VE"));
        assert_eq!(m["channel"], "sms");
        assert_eq!(m["status"], "pending");
        assert_eq!(m["valid"], false);
        assert_eq!(m["lookup"], serde_json::json!({}));
        assert_eq!(m["date_created"], "2015-07-30T20:00:00Z");
        let attempt = &m["send_code_attempts"][0];
        assert_eq!(attempt["channel"], "SMS");
        assert_eq!(attempt["time"], "2015-07-30T20:00:00Z");
        assert!(Regex::new("^VL[0-9a-f]{32}$")
            .unwrap()
            .is_match(attempt["attempt_sid"].as_str().unwrap()));
        assert_eq!(
            m["url"],
            format!("https://verify.twilio.com/v2/Services/{VA}/Verifications/{sid}")
        );
        let whatsapp = parse(
            &fake_verification(
                &VerificationRequest {
                    account_sid: AC,
                    service_sid: VA,
                    to: "+15017122661",
                    channel: "WhatsApp",
                },
                at(0),
            )
            .1,
        );
        assert_eq!(whatsapp["channel"], "whatsapp");
        assert_eq!(whatsapp["send_code_attempts"][0]["channel"], "whatsapp");
    }

    #[test]
    fn a_verify_v1_fake_names_its_version() {
        let req = VerificationRequest {
            account_sid: AC,
            service_sid: VA,
            to: "+15558675310",
            channel: "sms",
        };
        let (sid, body) = fake_verification_on(&req, "v1", at(0));
        assert_eq!(
            parse(&body)["url"],
            format!("https://verify.twilio.com/v1/Services/{VA}/Verifications/{sid}")
        );
        let (sid, body) = fake_verification_on(&req, "v9", at(0));
        assert_eq!(
            parse(&body)["url"],
            format!("https://verify.twilio.com/v2/Services/{VA}/Verifications/{sid}")
        );
    }
}
