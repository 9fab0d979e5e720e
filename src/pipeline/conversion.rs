//! Conversion seen on the wire: which forwarded sends were confirmed.
//!
//! A Verify check that Twilio answers `"status": "approved"` and Messaging
//! Feedback with `Outcome=confirmed` both pass through the guard, so it
//! learns which recipients proved receipt without any change to the app.
//! Feedback names a message by its sid, so the sids Twilio gave the sends
//! the guard forwarded are remembered here (bounded, least recently used
//! first out). This module only reads answers; it never changes what goes
//! to Twilio or back to the app.

use serde::Deserialize;

use crate::base::Lru;

/// Sids of forwarded sends (messages, verifications) → the number they
/// went to.
pub struct SentSids {
    numbers: Lru<Box<str>>,
}

impl SentSids {
    pub fn new(capacity: u64) -> SentSids {
        SentSids {
            numbers: Lru::new(capacity),
        }
    }

    pub fn remember(&self, sid: &str, e164: &str) {
        self.numbers
            .with(sid, || Box::from(""), |_| {}, |n| *n = Box::from(e164));
    }

    /// The number a forwarded send with this sid went to, if remembered.
    pub fn number(&self, sid: &str) -> Option<String> {
        self.numbers
            .update(sid, |n| n.to_string())
            .filter(|n| !n.is_empty())
    }
}

/// The few fields of a Twilio resource the guard reads.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Resource {
    pub sid: Option<String>,
    pub status: Option<String>,
    pub to: Option<String>,
    /// The call a conference participant or a caller-id check makes.
    pub call_sid: Option<String>,
}

/// Reads a Twilio JSON answer; `None` when it is not one.
pub fn resource(json: &[u8]) -> Option<Resource> {
    serde_json::from_slice(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_of_forwarded_sends_lead_back_to_their_number() {
        let s = SentSids::new(2);
        s.remember("SM1", "+447911123456");
        s.remember("SM2", "+14155550101");
        assert_eq!(s.number("SM1").as_deref(), Some("+447911123456"));
        assert_eq!(s.number("SM9"), None);
        // Bounded: a third pushes out the oldest.
        s.remember("SM3", "+14155550102");
        assert_eq!(s.number("SM1"), None);
        assert_eq!(s.number("SM3").as_deref(), Some("+14155550102"));
    }

    #[test]
    fn a_verification_check_answer_is_read_for_its_status_and_number() {
        let r = resource(
            br#"{"sid": "VE1", "to": "+14155550101", "status": "approved", "valid": true}"#,
        )
        .unwrap();
        assert_eq!(r.status.as_deref(), Some("approved"));
        assert_eq!(r.to.as_deref(), Some("+14155550101"));
        assert_eq!(resource(b"not json"), None);
    }
}
