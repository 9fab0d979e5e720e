//! The fake Message: created, read back later as its status moves on
//! (queued or accepted, sent, then its final status), and its Feedback.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::dates::rfc2822;
use super::json::JsonObject;
use super::segments::segments;
use super::sids::{fnv1a, random_sid, FNV_OFFSET};
use super::API_VERSION;

/// What a fake Message needs from the request.
#[derive(Clone, Copy, Debug)]
pub struct MessageRequest<'a> {
    pub account_sid: &'a str,
    /// Value to echo in `to`, already normalized by the caller
    /// (`+15558675310`, `whatsapp:+15558675310`).
    pub to: &'a str,
    pub from: Option<&'a str>,
    pub messaging_service_sid: Option<&'a str>,
    pub body: Option<&'a str>,
    /// Count of `MediaUrl` parameters.
    pub num_media: usize,
}

/// The JSON of a freshly created Message (answered with 201). Returns the sid
/// and the body.
///
/// Key order and values follow recorded real answers (contract README): with
/// a `MessagingServiceSid` and no `From` the message is `accepted`, `from` is
/// `null` and `num_segments` is `"0"` (Twilio picks the sender later);
/// otherwise it is `queued` with the segments Twilio would bill.
pub fn fake_message(req: &MessageRequest, now: SystemTime) -> (String, Bytes) {
    let sid = random_sid(if req.num_media > 0 { "MM" } else { "SM" });
    let body = message_json(req, &sid, now);
    (sid, body)
}

/// The JSON of the Message `sid` made from `req` at `now`: the same inputs
/// always give the same bytes, so a fake can be kept as its inputs.
pub fn message_json(req: &MessageRequest, sid: &str, now: SystemTime) -> Bytes {
    message_json_at(req, sid, now, now, FinalStatus::Delivered)
}

/// What becomes of a message the guard did not send, in the end (Twilio's
/// last status for it): `shadow.final_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalStatus {
    Delivered,
    /// `undelivered` with error 30003 (unreachable destination handset).
    Undelivered,
    /// It stays `sent`, as when a carrier reports nothing.
    Sent,
}

impl FinalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FinalStatus::Delivered => "delivered",
            FinalStatus::Undelivered => "undelivered",
            FinalStatus::Sent => "sent",
        }
    }

    /// Twilio's error code and message for it, if it is a failure.
    pub fn error(self) -> Option<(u32, &'static str)> {
        (self == FinalStatus::Undelivered).then_some((30003, "Unreachable destination handset"))
    }
}

/// The moments a message the guard did not send moves on, as Twilio's do:
/// it is `sent` a second or two after it was created, and reaches its final
/// status two to six seconds after that. Drawn from the sid, so every
/// replica tells the same story.
pub fn message_timeline(sid: &str, created: SystemTime) -> (SystemTime, SystemTime) {
    let h = fnv1a(FNV_OFFSET, sid.bytes());
    let sent = created + Duration::from_millis(1_000 + h % 1_000);
    let done = sent + Duration::from_millis(2_000 + (h >> 20) % 4_000);
    (sent, done)
}

/// The status of the message `sid` created at `created`, as read at `now`,
/// and since when it has it: its first status (`queued`, or `accepted`
/// when Twilio picks the sender), then `sent`, then `last`.
pub fn message_status(
    sid: &str,
    accepted: bool,
    created: SystemTime,
    now: SystemTime,
    last: FinalStatus,
) -> (&'static str, SystemTime) {
    let (sent, done) = message_timeline(sid, created);
    if now < sent {
        (if accepted { "accepted" } else { "queued" }, created)
    } else if now < done || last == FinalStatus::Sent {
        ("sent", sent)
    } else {
        (last.as_str(), done)
    }
}

/// The JSON of the Message `sid` made from `req` at `created`, as read at
/// `now`: its status moves on as a real one's does ([`message_status`]),
/// with `date_sent`, `date_updated` and, for a failure, the error.
pub fn message_json_at(
    req: &MessageRequest,
    sid: &str,
    created: SystemTime,
    now: SystemTime,
    last: FinalStatus,
) -> Bytes {
    let date = rfc2822(created);
    let accepted = req.messaging_service_sid.is_some() && req.from.is_none();
    let (status, since) = message_status(sid, accepted, created, now, last);
    let num_segments = if status == "accepted" {
        0
    } else {
        segments(req.body.unwrap_or("")).1
    };
    let date_sent = (since > created).then(|| rfc2822(message_timeline(sid, created).0));
    let error = if status == last.as_str() {
        last.error()
    } else {
        None
    };
    let base = [
        "/",
        API_VERSION,
        "/Accounts/",
        req.account_sid,
        "/Messages/",
        sid,
    ];
    let mut subresources = JsonObject::with_capacity(128);
    subresources.str_parts("media", &base, "/Media.json");

    // Twilio's Message is about 900 bytes; the body and the numbers add
    // to that.
    let mut obj = JsonObject::with_capacity(1024 + req.body.map_or(0, str::len));
    obj.str("sid", sid);
    obj.str("date_created", &date);
    if since == created {
        obj.str("date_updated", &date);
    } else {
        obj.str("date_updated", &rfc2822(since));
    }
    match &date_sent {
        Some(d) => obj.str("date_sent", d),
        None => obj.null("date_sent"),
    }
    obj.str("account_sid", req.account_sid);
    obj.str("to", req.to);
    obj.opt_str("from", req.from);
    obj.opt_str("messaging_service_sid", req.messaging_service_sid);
    // A media-only message has an empty body on Twilio, not null.
    obj.str("body", req.body.unwrap_or(""));
    obj.str("status", status);
    obj.str_u64("num_segments", u64::from(num_segments));
    obj.str_u64("num_media", req.num_media as u64);
    obj.str("direction", "outbound-api");
    obj.str("api_version", API_VERSION);
    obj.null("price");
    obj.str("price_unit", "USD");
    match error {
        Some((code, message)) => {
            obj.raw("error_code", &code.to_string());
            obj.str("error_message", message);
        }
        None => {
            obj.null("error_code");
            obj.null("error_message");
        }
    }
    obj.str_parts("uri", &base, ".json");
    obj.raw("subresource_uris", &subresources.finish());
    obj.into_bytes()
}

/// The JSON of a Message Feedback answer (201), per
/// `api.v2010.account.message.message_feedback`.
pub fn message_feedback(
    account_sid: &str,
    message_sid: &str,
    outcome: &str,
    now: SystemTime,
) -> Bytes {
    let date = rfc2822(now);
    let outcome = if outcome.eq_ignore_ascii_case("confirmed") {
        "confirmed"
    } else {
        "unconfirmed"
    };
    let mut obj = JsonObject::new();
    obj.str("account_sid", account_sid);
    obj.str("message_sid", message_sid);
    obj.str("outcome", outcome);
    obj.str("date_created", &date);
    obj.str("date_updated", &date);
    obj.str(
        "uri",
        &format!("/{API_VERSION}/Accounts/{account_sid}/Messages/{message_sid}/Feedback.json"),
    );
    obj.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::responses::test_support::*;
    use regex::Regex;
    use serde_json::Value;

    const MESSAGE_KEYS: [&str; 20] = [
        "sid",
        "date_created",
        "date_updated",
        "date_sent",
        "account_sid",
        "to",
        "from",
        "messaging_service_sid",
        "body",
        "status",
        "num_segments",
        "num_media",
        "direction",
        "api_version",
        "price",
        "price_unit",
        "error_code",
        "error_message",
        "uri",
        "subresource_uris",
    ];

    #[test]
    fn a_queued_message_has_twilios_twenty_keys_in_order() {
        let (sid, body) = fake_message(&queued_request(), at(1_692_853_305));
        let text = std::str::from_utf8(&body).unwrap();
        assert_eq!(top_level_keys(text), MESSAGE_KEYS);
        let m = parse(&body);
        assert_eq!(m.len(), 20);
        assert_eq!(m["sid"], sid.as_str());
        assert!(Regex::new(r"^(SM|MM)[0-9a-fA-F]{32}$")
            .unwrap()
            .is_match(&sid));
        assert!(sid.starts_with("SM"));
        assert_eq!(m["status"], "queued");
        assert_eq!(m["from"], "+15017122661");
        assert_eq!(m["messaging_service_sid"], Value::Null);
        assert_eq!(m["num_segments"], "1");
        assert_eq!(m["num_media"], "0");
        assert_eq!(m["date_created"], "Thu, 24 Aug 2023 05:01:45 +0000");
        assert_eq!(m["date_updated"], m["date_created"]);
        assert_eq!(m["date_sent"], Value::Null);
        assert_eq!(m["price"], Value::Null);
        assert_eq!(m["price_unit"], "USD");
        assert_eq!(m["direction"], "outbound-api");
        assert_eq!(m["api_version"], "2010-04-01");
        assert_eq!(m["error_code"], Value::Null);
        assert_eq!(m["error_message"], Value::Null);
        assert_eq!(
            m["uri"],
            format!("/2010-04-01/Accounts/{AC}/Messages/{sid}.json")
        );
        assert_eq!(
            m["subresource_uris"],
            serde_json::json!({"media": format!("/2010-04-01/Accounts/{AC}/Messages/{sid}/Media.json")})
        );
    }

    #[test]
    fn a_service_only_message_is_accepted_without_from_or_segments() {
        let (_, body) = fake_message(&accepted_request(), at(1_692_853_305));
        let text = std::str::from_utf8(&body).unwrap();
        assert_eq!(top_level_keys(text), MESSAGE_KEYS);
        let m = parse(&body);
        assert_eq!(m["status"], "accepted");
        assert_eq!(m["from"], Value::Null);
        assert_eq!(m["messaging_service_sid"], MG);
        assert_eq!(m["num_segments"], "0");
        assert_eq!(m["to"], "whatsapp:+15558675310");
        assert_eq!(m["body"], "Hello! 👍");
        // Twilio's writer escapes non-ASCII as UTF-16 units.
        assert!(text.contains(r#""body": "Hello! \ud83d\udc4d""#), "{text}");
    }

    #[test]
    fn a_message_with_service_and_from_is_queued_and_keeps_both() {
        let req = MessageRequest {
            messaging_service_sid: Some(MG),
            ..queued_request()
        };
        let m = parse(&fake_message(&req, at(0)).1);
        assert_eq!(m["status"], "queued");
        assert_eq!(m["messaging_service_sid"], MG);
        assert_eq!(m["from"], "+15017122661");
    }

    #[test]
    fn a_message_with_media_gets_an_mm_sid_and_counts_media_as_a_string() {
        let req = MessageRequest {
            num_media: 2,
            body: None,
            ..queued_request()
        };
        let (sid, body) = fake_message(&req, at(0));
        assert!(sid.starts_with("MM"));
        let m = parse(&body);
        assert_eq!(m["num_media"], "2");
        assert_eq!(m["body"], "");
    }
}
