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
//!
//! A file per part, everything re-exported here as
//! `crate::twilio::responses::X`:
//!
//! * `errors.rs`: [`TwilioError`], Twilio's error bodies;
//! * `message.rs`: the fake Message (its timeline, status and final
//!   status, its JSON as read at a time) and Message Feedback;
//! * `segments.rs`: the segments and encoding Twilio bills a body by;
//! * `calls.rs`: the fake Call, conference Participant and caller-id
//!   ValidationRequest;
//! * `verify.rs`: the fake Verification and the Verification Check answer;
//! * `balance.rs`: the account's Balance;
//! * `headers.rs`: Twilio's response headers;
//! * `sids.rs`: random and derived sids, FNV-1a;
//! * `dates.rs`: RFC 2822 and ISO 8601 dates;
//! * `json.rs`: the JSON writer shaped like Twilio's.

mod balance;
mod calls;
mod dates;
mod errors;
mod headers;
mod json;
mod message;
mod segments;
mod sids;
#[cfg(test)]
mod test_support;
mod verify;

pub use balance::balance;
pub use calls::{
    call_json, fake_call, fake_participant, validation_request, CallRequest, FakeParticipant,
    ParticipantRequest,
};
pub use dates::{iso8601, rfc2822};
pub use errors::TwilioError;
pub use headers::twilio_headers;
pub use message::{
    fake_message, message_feedback, message_json, message_json_at, message_status,
    message_timeline, FinalStatus, MessageRequest,
};
pub use segments::{segments, Encoding};
pub use sids::{fnv1a, random_sid, FNV_OFFSET};
pub use verify::{
    fake_verification, fake_verification_on, verification_check, VerificationCheckRequest,
    VerificationRequest,
};

/// The API version every 2010 resource reports.
const API_VERSION: &str = "2010-04-01";

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

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
