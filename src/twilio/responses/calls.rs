//! The fake Call, the conference Participant (and the Call behind it), and
//! the ValidationRequest of an outgoing caller id (a call placed to check it).

use std::time::SystemTime;

use bytes::Bytes;

use super::dates::rfc2822;
use super::json::JsonObject;
use super::sids::{derived_sid, is_sid, random_sid};
use super::API_VERSION;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::responses::test_support::*;
    use serde_json::Value;

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
}
