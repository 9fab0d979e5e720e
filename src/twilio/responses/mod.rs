//! Twilio-shaped answers made by the guard itself: fake Message, Call,
//! conference Participant and Verification resources for a shadow ban, and Twilio error bodies for a
//! reject.
//!
//! The point of a shadow ban is that the attacker learns nothing, so every
//! byte here imitates what `api.twilio.com` and `verify.twilio.com` send:
//! key order, the `", "` / `": "` separators of Twilio's JSON writer, the
//! ASCII-only string escaping that goes with it (`\u00e9`, surrogate pairs
//! for emoji), RFC 2822 dates on the 2010 API and ISO 8601 dates on Verify,
//! sid prefixes and Twilio's response headers. The facts come from
//! `shared/twilio-contract/` (README and the OpenAPI files); the unit tests
//! check the fakes against that schema.
//!
//! This module must never: contact the network, log anything (a request's
//! body and number are personal data, and logging is the caller's job with
//! masking), panic on any input (account sids, numbers and bodies arrive from
//! the client unchecked), or invent keys that Twilio's schema does not have.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use http::StatusCode;

/// The API version every 2010 resource reports.
const API_VERSION: &str = "2010-04-01";

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
    let uri = format!(
        "/{API_VERSION}/Accounts/{}/Messages/{sid}.json",
        req.account_sid
    );
    let media = format!(
        "/{API_VERSION}/Accounts/{}/Messages/{sid}/Media.json",
        req.account_sid
    );
    let mut subresources = JsonObject::new();
    subresources.str("media", &media);

    let mut obj = JsonObject::new();
    obj.str("sid", sid);
    obj.str("date_created", &date);
    obj.str("date_updated", &rfc2822(since));
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
    obj.str("num_segments", &num_segments.to_string());
    obj.str("num_media", &req.num_media.to_string());
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
    obj.str("uri", &uri);
    obj.raw("subresource_uris", &subresources.finish());
    obj.into_bytes()
}

/// How a message body is encoded on the air.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// The GSM 03.38 default alphabet (127 printable entries; 0x1B is the escape
/// to the extension table and has no character of its own).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// The GSM 03.38 extension table: each costs an escape plus itself.
const GSM7_EXTENSION: &str = "\u{c}^{}\\[]~|€";

fn gsm7_septets(c: char) -> Option<u32> {
    // Most bodies are ASCII: one table lookup instead of a scan of the
    // alphabet per character.
    static ASCII: std::sync::OnceLock<[u8; 128]> = std::sync::OnceLock::new();
    if c.is_ascii() {
        let table = ASCII.get_or_init(|| {
            let mut t = [0u8; 128];
            for (i, w) in t.iter_mut().enumerate() {
                let c = char::from(i as u8);
                *w = if GSM7_BASIC.contains(c) {
                    1
                } else if GSM7_EXTENSION.contains(c) {
                    2
                } else {
                    0
                };
            }
            t
        });
        return match table[c as usize] {
            0 => None,
            w => Some(u32::from(w)),
        };
    }
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Segments Twilio would bill for `body`: GSM-7 fits 160 septets in one part
/// and 153 per part once split (extension characters cost 2 and are never
/// cut in half); anything else is UCS-2 with 70 / 67 UTF-16 code units
/// (a surrogate pair is never cut either). An empty body is 1 segment.
pub fn segments(body: &str) -> (Encoding, u32) {
    if body.chars().all(|c| gsm7_septets(c).is_some()) {
        let widths = body.chars().map(|c| gsm7_septets(c).unwrap_or(1));
        (Encoding::Gsm7, parts(widths, 160, 153))
    } else {
        let widths = body.chars().map(|c| c.len_utf16() as u32);
        (Encoding::Ucs2, parts(widths, 70, 67))
    }
}

/// Packs characters of the given widths into parts of `multi` units, unless
/// the whole fits in one part of `single` units.
fn parts(widths: impl Iterator<Item = u32> + Clone, single: u32, multi: u32) -> u32 {
    let total: u64 = widths.clone().map(u64::from).sum();
    if total <= u64::from(single) {
        return 1;
    }
    let mut count = 1u32;
    let mut used = 0u32;
    for w in widths {
        if used + w > multi {
            count = count.saturating_add(1);
            used = 0;
        }
        used += w;
    }
    count
}

/// What a fake Call needs from the request.
#[derive(Clone, Copy, Debug)]
pub struct CallRequest<'a> {
    pub account_sid: &'a str,
    pub to: &'a str,
    pub from: Option<&'a str>,
}

/// The JSON of a freshly created Call (answered with 201): every property of
/// the OpenAPI schema `api.v2010.account.call`, in the schema's order, with
/// the values of a call that is queued and not yet dialled.
pub fn fake_call(req: &CallRequest, now: SystemTime) -> (String, Bytes) {
    let sid = random_sid("CA");
    let body = call_json(req, &sid, now);
    (sid, body)
}

/// The JSON of the queued Call `sid` made from `req` at `now` (what
/// [`fake_call`] answers; also the call behind a fake participant).
pub fn call_json(req: &CallRequest, sid: &str, now: SystemTime) -> Bytes {
    let date = rfc2822(now);
    let base = format!("/{API_VERSION}/Accounts/{}/Calls/{sid}", req.account_sid);
    let mut subresources = JsonObject::new();
    // The subresources and order of the schema's own example.
    for (key, name) in [
        ("notifications", "Notifications"),
        ("recordings", "Recordings"),
        ("payments", "Payments"),
        ("events", "Events"),
        ("siprec", "Siprec"),
        ("streams", "Streams"),
        ("transcriptions", "Transcriptions"),
        (
            "user_defined_message_subscriptions",
            "UserDefinedMessageSubscriptions",
        ),
        ("user_defined_messages", "UserDefinedMessages"),
    ] {
        subresources.str(key, &format!("{base}/{name}.json"));
    }
    // An outbound call reports the sid of the caller id it was placed from.
    // Derived from the account and number rather than random, so repeated
    // fake calls from one number agree with each other as real ones do.
    let phone_number_sid = req
        .from
        .map(|from| derived_sid("PN", &[req.account_sid, from]));

    let mut obj = JsonObject::new();
    obj.str("sid", sid);
    obj.str("date_created", &date);
    obj.str("date_updated", &date);
    obj.null("parent_call_sid");
    obj.str("account_sid", req.account_sid);
    obj.str("to", req.to);
    obj.str("to_formatted", &display_number(req.to));
    obj.opt_str("from", req.from);
    obj.opt_str("from_formatted", req.from.map(display_number).as_deref());
    obj.opt_str("phone_number_sid", phone_number_sid.as_deref());
    obj.str("status", "queued");
    obj.null("start_time");
    obj.null("end_time");
    obj.null("duration");
    obj.null("price");
    obj.str("price_unit", "USD");
    obj.str("direction", "outbound-api");
    obj.null("answered_by");
    obj.str("api_version", API_VERSION);
    obj.null("forwarded_from");
    obj.null("group_sid");
    obj.null("caller_name");
    obj.str("queue_time", "0");
    obj.null("trunk_sid");
    obj.str("uri", &format!("{base}.json"));
    obj.raw("subresource_uris", &subresources.finish());
    obj.into_bytes()
}

/// What a fake conference Participant needs from the request.
#[derive(Clone, Copy, Debug)]
pub struct ParticipantRequest<'a> {
    pub account_sid: &'a str,
    /// The `{ConferenceSid}` of the path: a `CF` sid or a friendly name.
    pub conference: &'a str,
    pub to: &'a str,
    pub from: Option<&'a str>,
    pub label: Option<&'a str>,
    pub call_sid_to_coach: Option<&'a str>,
    /// The boolean parameters as sent (`"true"`, `"False"`...).
    pub coaching: Option<&'a str>,
    pub muted: Option<&'a str>,
    pub start_conference_on_enter: Option<&'a str>,
    pub end_conference_on_exit: Option<&'a str>,
}

/// A fake Participant and the fake Call behind it.
#[derive(Clone, Debug)]
pub struct FakeParticipant {
    /// The `CA` sid of the call Twilio would place (the participant's id).
    pub call_sid: String,
    /// The conference's `CF` sid: the path's when it is one, else one
    /// derived from the account and the friendly name, so that every fake
    /// participant of one named conference reports the same conference.
    pub conference_sid: String,
    pub body: Bytes,
    /// The queued Call `call_sid`, as `GET .../Calls/{CallSid}` shows it.
    pub call: Bytes,
}

/// The JSON of a freshly created conference Participant (answered with 201).
///
/// `api_v2010.json` in the contract does not include Conferences: the keys
/// and their order are those of Twilio's public Participant resource
/// (`api.v2010.account.conference.participant`) as its create example shows
/// them, written from knowledge of that resource, not checked against a
/// schema file. Dates are RFC 2822 like the rest of the 2010 API; booleans
/// echo the request's parameters with Twilio's defaults; `queue_time` is a
/// string, as on Calls.
pub fn fake_participant(req: &ParticipantRequest, now: SystemTime) -> FakeParticipant {
    let call_sid = random_sid("CA");
    let conference_sid = if is_sid(req.conference, "CF") {
        req.conference.to_string()
    } else {
        derived_sid("CF", &[req.account_sid, req.conference])
    };
    let date = rfc2822(now);
    let flag = |value: Option<&str>, default: bool| match value.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("true") => "true",
        Some(v) if v.eq_ignore_ascii_case("false") => "false",
        _ if default => "true",
        _ => "false",
    };
    let mut obj = JsonObject::new();
    obj.str("account_sid", req.account_sid);
    obj.str("call_sid", &call_sid);
    obj.opt_str("label", req.label);
    obj.str("conference_sid", &conference_sid);
    obj.str("date_created", &date);
    obj.str("date_updated", &date);
    obj.raw(
        "end_conference_on_exit",
        flag(req.end_conference_on_exit, false),
    );
    obj.raw("muted", flag(req.muted, false));
    obj.raw("hold", "false");
    obj.str("status", "queued");
    obj.raw(
        "start_conference_on_enter",
        flag(req.start_conference_on_enter, true),
    );
    obj.raw("coaching", flag(req.coaching, false));
    obj.opt_str("call_sid_to_coach", req.call_sid_to_coach);
    obj.str("queue_time", "0");
    obj.str(
        "uri",
        &format!(
            "/{API_VERSION}/Accounts/{}/Conferences/{conference_sid}/Participants/{call_sid}.json",
            req.account_sid
        ),
    );
    let call = call_json(
        &CallRequest {
            account_sid: req.account_sid,
            to: req.to,
            from: req.from,
        },
        &call_sid,
        now,
    );
    FakeParticipant {
        call_sid,
        conference_sid,
        body: obj.into_bytes(),
        call,
    }
}

/// `prefix` followed by 32 hex digits.
fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == prefix.len() + 32
        && s.starts_with(prefix)
        && s[prefix.len()..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Twilio's display form of a number: North American numbers as
/// `(415) 867-5309`, everything else unchanged (E.164, SIP, client:...).
fn display_number(number: &str) -> String {
    let digits = number.strip_prefix("+1").unwrap_or("");
    if digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()) {
        format!("({}) {}-{}", &digits[..3], &digits[3..6], &digits[6..])
    } else {
        number.to_string()
    }
}

/// A ValidationRequest as Twilio answers `POST .../OutgoingCallerIds.json`
/// (201): the validation call it placed to `phone_number` (`call_sid`, a
/// call the fake store can answer for) and the code to type. The keys in
/// the order of Twilio's API reference.
pub fn validation_request(
    account_sid: &str,
    call_sid: &str,
    phone_number: &str,
    friendly_name: Option<&str>,
) -> Bytes {
    let code = format!("{:06}", rand::random::<u32>() % 1_000_000);
    let mut obj = JsonObject::new();
    obj.str("account_sid", account_sid);
    obj.str("call_sid", call_sid);
    obj.str(
        "friendly_name",
        &friendly_name.map_or_else(|| display_number(phone_number), str::to_string),
    );
    obj.str("phone_number", phone_number);
    obj.str("validation_code", &code);
    Bytes::from(obj.finish())
}

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

/// The JSON of an account balance, as `GET .../Balance.json` answers it.
pub fn balance(account_sid: &str, balance: &str, currency: &str) -> Bytes {
    let mut obj = JsonObject::new();
    obj.str("account_sid", account_sid);
    obj.str("balance", balance);
    obj.str("currency", currency);
    obj.into_bytes()
}

/// The headers Twilio sends with its answers, in Twilio's order, for an
/// answer made by the guard. `api_domain` is `api.twilio.com` or
/// `verify.twilio.com` (anything that is not a valid header value falls
/// back to `api.twilio.com`); `duration` becomes `Twilio-Request-Duration`.
pub fn twilio_headers(api_domain: &str, duration: Duration) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(16);
    let mut put = |name: &'static str, value: HeaderValue| {
        headers.append(HeaderName::from_static(name), value);
    };
    put(
        CONTENT_TYPE.as_str(),
        HeaderValue::from_static("application/json"),
    );
    if let Ok(id) = HeaderValue::from_str(&random_sid("RQ")) {
        put("twilio-request-id", id);
    }
    if let Ok(d) = HeaderValue::from_str(&format!("{:.3}", duration.as_secs_f64())) {
        put("twilio-request-duration", d);
    }
    put("twilio-concurrent-requests", HeaderValue::from_static("1"));
    put("x-home-region", HeaderValue::from_static("us1"));
    let domain = HeaderValue::from_str(api_domain)
        .ok()
        .filter(|_| !api_domain.is_empty())
        .unwrap_or_else(|| HeaderValue::from_static("api.twilio.com"));
    put("x-api-domain", domain);
    put("x-powered-by", HeaderValue::from_static("AT-5000"));
    put("x-shenanigans", HeaderValue::from_static("none"));
    put(
        "strict-transport-security",
        HeaderValue::from_static("max-age=31536000"),
    );
    put("access-control-allow-origin", HeaderValue::from_static("*"));
    put(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    put(
        "access-control-allow-headers",
        HeaderValue::from_static(
            "Accept, Authorization, Content-Type, If-Match, If-Modified-Since, If-None-Match, If-Unmodified-Since, Idempotency-Key",
        ),
    );
    put(
        "access-control-expose-headers",
        HeaderValue::from_static("ETag"),
    );
    put(
        "access-control-allow-credentials",
        HeaderValue::from_static("true"),
    );
    headers
}

/// `prefix` followed by 32 random lowercase hex digits, like every Twilio sid.
pub fn random_sid(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

/// `prefix` followed by 32 hex digits that depend only on `parts` (FNV-1a,
/// twice with different offsets): stable across runs and Rust versions, unlike
/// the standard library's hasher.
fn derived_sid(prefix: &str, parts: &[&str]) -> String {
    let hash = |offset: u64| {
        fnv1a(
            offset,
            parts
                .iter()
                .flat_map(|part| part.bytes().chain(std::iter::once(0))),
        )
    };
    format!(
        "{prefix}{:016x}{:016x}",
        hash(FNV_OFFSET),
        hash(0x6c62_272e_07bb_0142)
    )
}

/// FNV-1a's standard offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of `bytes` from `offset`: stable across runs and Rust versions,
/// unlike the standard library's hasher.
pub fn fnv1a(offset: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(offset, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// RFC 2822 in GMT as the 2010 API writes it: `Thu, 24 Aug 2023 05:01:45 +0000`.
pub fn rfc2822(t: SystemTime) -> String {
    let c = Civil::from_unix(unix_seconds(t));
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[c.weekday],
        c.day,
        MONTHS[c.month - 1],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

/// ISO 8601 in UTC with seconds precision, as Verify writes it:
/// `2015-07-30T20:00:00Z`.
pub fn iso8601(t: SystemTime) -> String {
    let c = Civil::from_unix(unix_seconds(t));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Whole seconds since the Unix epoch, rounded down, saturating far from it.
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let d = before.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let partial = i64::from(d.subsec_nanos() > 0);
            0i64.saturating_sub(secs).saturating_sub(partial)
        }
    }
}

/// A UTC calendar date and time.
struct Civil {
    year: i64,
    /// 1..=12
    month: usize,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday
    weekday: usize,
}

impl Civil {
    fn from_unix(secs: i64) -> Civil {
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month: month as usize,
            day,
            hour: (of_day / 3600) as u32,
            minute: (of_day / 60 % 60) as u32,
            second: (of_day % 60) as u32,
            // 1970-01-01 was a Thursday.
            weekday: (days.rem_euclid(7) as usize + 4) % 7,
        }
    }
}

/// Proleptic Gregorian date of a day count from 1970-01-01. Works in 400-year
/// eras (146 097 days each) that start on 1 March, so the leap day is the
/// last day of its year and month lengths follow a fixed pattern.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11]
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A JSON object written the way Twilio writes it: keys in insertion order,
/// `", "` between members, `": "` after keys, ASCII-only strings.
struct JsonObject {
    buf: String,
    empty: bool,
}

impl JsonObject {
    fn new() -> Self {
        JsonObject {
            buf: String::from("{"),
            empty: true,
        }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.buf.push_str(", ");
        }
        self.empty = false;
        push_json_string(&mut self.buf, key);
        self.buf.push_str(": ");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        push_json_string(&mut self.buf, value);
    }

    fn opt_str(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    fn null(&mut self, key: &str) {
        self.raw(key, "null");
    }

    /// A value that is already JSON (number, bool, nested object or array).
    fn raw(&mut self, key: &str, json: &str) {
        self.key(key);
        self.buf.push_str(json);
    }

    fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }

    fn into_bytes(self) -> Bytes {
        Bytes::from(self.finish())
    }
}

/// Writes `s` as a JSON string with every character outside printable ASCII
/// escaped as `\uXXXX` (lowercase hex, UTF-16 surrogate pairs beyond the BMP),
/// which is what Twilio's JSON writer does (`"Hello! \ud83d\udc4d"`).
fn push_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut rest = s;
    while !rest.is_empty() {
        // Printable ASCII other than '"' and the backslash is copied as it is,
        // a run at a time.
        let plain = rest
            .bytes()
            .position(|b| !(b' '..=b'~').contains(&b) || b == b'"' || b == b'\\')
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
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;
    use serde_json::Value;
    use std::path::PathBuf;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const MG: &str = "MG0123456789abcdef0123456789abcdef";
    const VA: &str = "VA0123456789abcdef0123456789abcdef";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn parse(bytes: &Bytes) -> serde_json::Map<String, Value> {
        match serde_json::from_slice::<Value>(bytes).expect("valid JSON") {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    /// Keys of a JSON object in the order they appear in the text.
    fn top_level_keys(text: &str) -> Vec<String> {
        // serde_json's Map is sorted unless preserve_order is on, so read the
        // order from the raw text instead.
        let mut keys = Vec::new();
        let mut depth = 0;
        let mut chars = text.char_indices().peekable();
        let mut expect_key = false;
        while let Some((i, c)) = chars.next() {
            match c {
                '{' | '[' => {
                    depth += 1;
                    expect_key = depth == 1 && c == '{';
                }
                '}' | ']' => depth -= 1,
                ',' if depth == 1 => expect_key = true,
                '"' => {
                    let start = i + 1;
                    let mut end = start;
                    while let Some((j, d)) = chars.next() {
                        if d == '\\' {
                            chars.next();
                        } else if d == '"' {
                            end = j;
                            break;
                        }
                    }
                    if expect_key && depth == 1 {
                        keys.push(text[start..end].to_string());
                        expect_key = false;
                    }
                }
                _ => {}
            }
        }
        keys
    }

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

    fn queued_request() -> MessageRequest<'static> {
        MessageRequest {
            account_sid: AC,
            to: "+15558675310",
            from: Some("+15017122661"),
            messaging_service_sid: None,
            body: Some("Your code is 123456"),
            num_media: 0,
        }
    }

    fn accepted_request() -> MessageRequest<'static> {
        MessageRequest {
            account_sid: AC,
            to: "whatsapp:+15558675310",
            from: None,
            messaging_service_sid: Some(MG),
            body: Some("Hello! 👍"),
            num_media: 0,
        }
    }

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

    #[test]
    fn rfc2822_round_trips_a_known_timestamp() {
        assert_eq!(
            rfc2822(at(1_692_853_305)),
            "Thu, 24 Aug 2023 05:01:45 +0000"
        );
        assert_eq!(rfc2822(at(0)), "Thu, 01 Jan 1970 00:00:00 +0000");
        // The Call example in the OpenAPI file.
        assert_eq!(
            rfc2822(at(1_283_286_988)),
            "Tue, 31 Aug 2010 20:36:28 +0000"
        );
        let shape =
            Regex::new(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} \+0000$")
                .unwrap();
        assert!(shape.is_match(&rfc2822(SystemTime::now())));
    }

    #[test]
    fn dates_handle_leap_years_and_year_boundaries() {
        // 2024-02-29 (leap), 2023-03-01 after a non-leap February.
        assert_eq!(
            rfc2822(at(1_709_164_800)),
            "Thu, 29 Feb 2024 00:00:00 +0000"
        );
        assert_eq!(
            rfc2822(at(1_677_628_800)),
            "Wed, 01 Mar 2023 00:00:00 +0000"
        );
        // 2000 is a leap year (divisible by 400), 2100 is not.
        assert_eq!(rfc2822(at(951_782_400)), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc2822(at(4_107_542_400)),
            "Mon, 01 Mar 2100 00:00:00 +0000"
        );
        // The last second of a year and the first of the next.
        assert_eq!(
            rfc2822(at(1_704_067_199)),
            "Sun, 31 Dec 2023 23:59:59 +0000"
        );
        assert_eq!(
            rfc2822(at(1_704_067_200)),
            "Mon, 01 Jan 2024 00:00:00 +0000"
        );
        assert_eq!(
            rfc2822(at(1_735_603_200)),
            "Tue, 31 Dec 2024 00:00:00 +0000"
        );
        // Before the epoch, rounding down.
        assert_eq!(
            rfc2822(UNIX_EPOCH - Duration::from_millis(500)),
            "Wed, 31 Dec 1969 23:59:59 +0000"
        );
        assert_eq!(iso8601(at(1_438_286_400)), "2015-07-30T20:00:00Z");
        assert_eq!(iso8601(at(1_709_251_199)), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn dates_far_from_the_epoch_do_not_panic() {
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 2);
        assert!(rfc2822(far).ends_with("+0000"));
        assert!(iso8601(far).ends_with('Z'));
        if let Some(early) = UNIX_EPOCH.checked_sub(Duration::from_secs(1 << 40)) {
            assert!(rfc2822(early).ends_with("+0000"));
        }
    }

    #[test]
    fn segments_follow_gsm7_and_ucs2_limits() {
        let gsm = |n: usize| "a".repeat(n);
        assert_eq!(segments(""), (Encoding::Gsm7, 1));
        assert_eq!(segments(&gsm(160)), (Encoding::Gsm7, 1));
        assert_eq!(segments(&gsm(161)), (Encoding::Gsm7, 2));
        assert_eq!(segments(&gsm(306)), (Encoding::Gsm7, 2));
        assert_eq!(segments(&gsm(307)), (Encoding::Gsm7, 3));
        assert_eq!(segments(&gsm(1530)), (Encoding::Gsm7, 10));

        // One emoji makes the whole message UCS-2; it is two UTF-16 units.
        assert_eq!(segments(&format!("{}😀", gsm(68))), (Encoding::Ucs2, 1));
        assert_eq!(segments(&format!("{}😀", gsm(69))), (Encoding::Ucs2, 2));
        assert_eq!(segments(&"é".repeat(70)).1, 1); // é is GSM-7
        assert_eq!(segments(&"ж".repeat(70)), (Encoding::Ucs2, 1));
        assert_eq!(segments(&"ж".repeat(71)), (Encoding::Ucs2, 2));
        assert_eq!(segments(&"ж".repeat(134)), (Encoding::Ucs2, 2));
        assert_eq!(segments(&"ж".repeat(135)), (Encoding::Ucs2, 3));
        // A surrogate pair is never cut: 134 units, but the emoji cannot
        // take the last unit of part one, so the text needs three parts.
        assert_eq!(
            segments(&format!("{}😀{}", "ж".repeat(66), "ж".repeat(66))).1,
            3
        );
    }

    #[test]
    fn gsm7_extension_characters_count_twice() {
        assert_eq!(segments(&"€".repeat(80)), (Encoding::Gsm7, 1));
        assert_eq!(segments(&"€".repeat(81)), (Encoding::Gsm7, 2));
        assert_eq!(segments(&"[".repeat(81)).1, 2);
        for c in ['^', '{', '}', '\\', '[', ']', '~', '|', '€', '\u{c}'] {
            assert_eq!(gsm7_septets(c), Some(2), "{c:?}");
        }
        // 159 plain + 1 extension = 161 septets: two parts.
        assert_eq!(segments(&format!("{}€", "a".repeat(159))).1, 2);
        // An escape pair is never cut: 152 + € does not fit in 153.
        assert_eq!(
            segments(&format!("{}€{}", "a".repeat(152), "a".repeat(152))).1,
            3
        );
        assert_eq!(GSM7_BASIC.chars().count(), 127);
    }

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

    #[test]
    fn headers_are_twilios_in_order() {
        let headers = twilio_headers("verify.twilio.com", Duration::from_millis(126));
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "twilio-request-id",
                "twilio-request-duration",
                "twilio-concurrent-requests",
                "x-home-region",
                "x-api-domain",
                "x-powered-by",
                "x-shenanigans",
                "strict-transport-security",
                "access-control-allow-origin",
                "access-control-allow-methods",
                "access-control-allow-headers",
                "access-control-expose-headers",
                "access-control-allow-credentials",
            ]
        );
        let get = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_string();
        assert_eq!(get("content-type"), "application/json");
        assert!(Regex::new("^RQ[0-9a-f]{32}$")
            .unwrap()
            .is_match(&get("twilio-request-id")));
        assert_eq!(get("twilio-request-duration"), "0.126");
        assert_eq!(get("twilio-concurrent-requests"), "1");
        assert_eq!(get("x-home-region"), "us1");
        assert_eq!(get("x-api-domain"), "verify.twilio.com");
        assert_eq!(get("x-powered-by"), "AT-5000");
        assert_eq!(get("x-shenanigans"), "none");
        assert_eq!(get("strict-transport-security"), "max-age=31536000");
        assert_eq!(get("access-control-allow-origin"), "*");
        assert_eq!(
            get("access-control-allow-methods"),
            "GET, POST, DELETE, OPTIONS"
        );
        assert!(get("access-control-allow-headers").ends_with("Idempotency-Key"));
        assert_eq!(get("access-control-expose-headers"), "ETag");
        assert_eq!(get("access-control-allow-credentials"), "true");

        let slow = twilio_headers("bad\nvalue", Duration::from_secs(2));
        assert_eq!(slow.get("x-api-domain").unwrap(), "api.twilio.com");
        assert_eq!(slow.get("twilio-request-duration").unwrap(), "2.000");
    }

    #[test]
    fn sids_are_random_prefixed_hex() {
        let a = random_sid("SM");
        let b = random_sid("SM");
        assert_ne!(a, b);
        assert!(Regex::new("^SM[0-9a-f]{32}$").unwrap().is_match(&a));
        let pn = derived_sid("PN", &[AC, "+15017122661"]);
        assert_eq!(pn, derived_sid("PN", &[AC, "+15017122661"]));
        assert!(Regex::new("^PN[0-9a-f]{32}$").unwrap().is_match(&pn));
    }

    #[test]
    fn a_fake_call_is_queued_with_formatted_numbers() {
        let (sid, body) = fake_call(
            &CallRequest {
                account_sid: AC,
                to: "+14158675309",
                from: Some("+442071838750"),
            },
            at(1_283_286_988),
        );
        let m = parse(&body);
        assert!(sid.starts_with("CA"));
        assert_eq!(m["status"], "queued");
        assert_eq!(m["to_formatted"], "(415) 867-5309");
        assert_eq!(m["from_formatted"], "+442071838750");
        assert_eq!(m["date_created"], "Tue, 31 Aug 2010 20:36:28 +0000");
        assert_eq!(
            m["uri"],
            format!("/2010-04-01/Accounts/{AC}/Calls/{sid}.json")
        );
        assert_eq!(
            m["subresource_uris"]["recordings"],
            format!("/2010-04-01/Accounts/{AC}/Calls/{sid}/Recordings.json")
        );
        let no_from = parse(
            &fake_call(
                &CallRequest {
                    account_sid: AC,
                    to: "client:alice",
                    from: None,
                },
                at(0),
            )
            .1,
        );
        assert_eq!(no_from["from"], Value::Null);
        assert_eq!(no_from["phone_number_sid"], Value::Null);
        assert_eq!(no_from["to_formatted"], "client:alice");
    }

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
    fn a_fake_participant_has_twilios_keys_and_a_call_behind_it() {
        let req = ParticipantRequest {
            account_sid: AC,
            conference: "Room 7",
            to: "+15558675310",
            from: Some("+15017122661"),
            label: Some("customer"),
            call_sid_to_coach: None,
            coaching: None,
            muted: Some("TRUE"),
            start_conference_on_enter: Some("false"),
            end_conference_on_exit: Some("nonsense"),
        };
        let p = fake_participant(&req, at(1_692_853_305));
        let text = std::str::from_utf8(&p.body).unwrap();
        assert_eq!(
            top_level_keys(text),
            [
                "account_sid",
                "call_sid",
                "label",
                "conference_sid",
                "date_created",
                "date_updated",
                "end_conference_on_exit",
                "muted",
                "hold",
                "status",
                "start_conference_on_enter",
                "coaching",
                "call_sid_to_coach",
                "queue_time",
                "uri",
            ]
        );
        let m = parse(&p.body);
        assert_eq!(m["call_sid"], p.call_sid.as_str());
        assert!(is_sid(&p.call_sid, "CA"));
        assert!(
            is_sid(&p.conference_sid, "CF"),
            "a friendly name gets a CF sid"
        );
        assert_eq!(m["conference_sid"], p.conference_sid.as_str());
        assert_eq!(m["date_created"], "Thu, 24 Aug 2023 05:01:45 +0000");
        assert_eq!(m["status"], "queued");
        assert_eq!(m["muted"], true);
        assert_eq!(m["start_conference_on_enter"], false);
        assert_eq!(
            m["end_conference_on_exit"], false,
            "unreadable: the default"
        );
        assert_eq!(m["coaching"], false);
        assert_eq!(m["call_sid_to_coach"], Value::Null);
        assert_eq!(
            m["uri"],
            format!(
                "/2010-04-01/Accounts/{AC}/Conferences/{}/Participants/{}.json",
                p.conference_sid, p.call_sid
            )
        );
        // The same friendly name, the same conference; a CF sid is kept.
        assert_eq!(
            fake_participant(&req, at(0)).conference_sid,
            p.conference_sid
        );
        let cf = "CF0123456789abcdef0123456789abcdef";
        let by_sid = fake_participant(
            &ParticipantRequest {
                conference: cf,
                ..req
            },
            at(0),
        );
        assert_eq!(by_sid.conference_sid, cf);
        // The call behind it is a queued Call with the same sid.
        let c = parse(&p.call);
        assert_eq!(c["sid"], p.call_sid.as_str());
        assert_eq!(c["to"], "+15558675310");
        assert_eq!(c["status"], "queued");
        let spec = load_spec("api_v2010.json");
        check_against_schema(&spec, "api.v2010.account.call", &p.call);
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

    #[test]
    fn a_balance_has_its_three_keys() {
        let body = balance(AC, "0.05", "USD");
        assert_eq!(
            body,
            Bytes::from(format!(
                r#"{{"account_sid": "{AC}", "balance": "0.05", "currency": "USD"}}"#
            ))
        );
    }

    // ---- checks against Twilio's OpenAPI schema ----

    fn contract_dir() -> PathBuf {
        let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/twilio-contract");
        if beside.is_dir() {
            beside
        } else {
            PathBuf::from("/work/shared/twilio-contract")
        }
    }

    fn load_spec(file: &str) -> Value {
        let path = contract_dir().join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_str(&text).expect("OpenAPI file is JSON")
    }

    /// Every schema property is present with the right type, enum value and
    /// pattern, and the fake has no key the schema lacks.
    fn check_against_schema(spec: &Value, schema_name: &str, body: &Bytes) {
        let schemas = &spec["components"]["schemas"];
        let props = schemas[schema_name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {schema_name} has no properties"));
        let fake = parse(body);
        for key in fake.keys() {
            assert!(
                props.contains_key(key),
                "{schema_name}: fake has key {key} the schema lacks"
            );
        }
        for (name, prop) in props {
            let value = fake
                .get(name)
                .unwrap_or_else(|| panic!("{schema_name}: fake lacks {name}"));
            let prop = match prop.get("$ref").and_then(Value::as_str) {
                Some(reference) => {
                    let target = reference.trim_start_matches("#/components/schemas/");
                    let resolved = &schemas[target];
                    let allowed = resolved["enum"].as_array().expect("ref to an enum");
                    assert!(
                        allowed.contains(value),
                        "{schema_name}.{name} = {value} not in {allowed:?}"
                    );
                    resolved
                }
                None => prop,
            };
            if value.is_null() {
                assert_eq!(
                    prop.get("nullable"),
                    Some(&Value::Bool(true)),
                    "{schema_name}.{name} is null but not nullable"
                );
                continue;
            }
            if let Some(ty) = prop.get("type").and_then(Value::as_str) {
                let ok = match ty {
                    "string" => value.is_string(),
                    "integer" => value.is_i64() || value.is_u64(),
                    "number" => value.is_number(),
                    "boolean" => value.is_boolean(),
                    "object" => value.is_object(),
                    "array" => value.is_array(),
                    other => panic!("unknown schema type {other}"),
                };
                assert!(ok, "{schema_name}.{name} = {value} is not a {ty}");
            }
            if let Some(pattern) = prop.get("pattern").and_then(Value::as_str) {
                let s = value.as_str().expect("patterns apply to strings");
                assert!(
                    Regex::new(pattern).unwrap().is_match(s),
                    "{schema_name}.{name} = {s} does not match {pattern}"
                );
            }
            if let (Some(min), Some(s)) = (prop.get("minLength"), value.as_str()) {
                assert!(s.len() as u64 >= min.as_u64().unwrap());
            }
            if let (Some(max), Some(s)) = (prop.get("maxLength"), value.as_str()) {
                assert!(s.len() as u64 <= max.as_u64().unwrap());
            }
        }
    }

    #[test]
    fn fakes_match_twilios_openapi_schemas() {
        let api = load_spec("api_v2010.json");
        let verify = load_spec("verify_v2.json");
        let message = "api.v2010.account.message";
        check_against_schema(&api, message, &fake_message(&queued_request(), at(0)).1);
        check_against_schema(&api, message, &fake_message(&accepted_request(), at(0)).1);
        let mms = MessageRequest {
            num_media: 1,
            body: None,
            ..queued_request()
        };
        check_against_schema(&api, message, &fake_message(&mms, at(0)).1);
        for from in [Some("+15017122661"), None] {
            let call = CallRequest {
                account_sid: AC,
                to: "+15558675310",
                from,
            };
            check_against_schema(&api, "api.v2010.account.call", &fake_call(&call, at(0)).1);
        }
        check_against_schema(
            &api,
            "api.v2010.account.balance",
            &balance(AC, "100.00", "USD"),
        );
        for channel in ["sms", "call", "whatsapp", "auto", "bogus"] {
            let req = VerificationRequest {
                account_sid: AC,
                service_sid: VA,
                to: "+15558675310",
                channel,
            };
            check_against_schema(
                &verify,
                "verify.v2.service.verification",
                &fake_verification(&req, at(0)).1,
            );
        }
        for approved in [true, false] {
            let req = VerificationCheckRequest {
                account_sid: AC,
                service_sid: VA,
                verification_sid: None,
                to: "+15558675310",
                channel: "sms",
                approved,
            };
            check_against_schema(
                &verify,
                "verify.v2.service.verification_check",
                &verification_check(&req, at(0)),
            );
        }
    }
}
