//! `smsguard replay` and the demo: past or generated sends driven through
//! the same guard as `serve`, in front of the built-in fake Twilio, on a
//! simulated clock.
//!
//! One engine serves both: the demo is a replay of a generated day. A
//! record is one send as an operator's export describes it (Twilio's Bulk
//! Export JSON lines or the Console's CSV, plus smsguard's own optional
//! fields); it never reaches the network beyond 127.0.0.1.

pub mod traffic;

use std::net::IpAddr;

use crate::clock::Millis;
use crate::twilio::routes::Product;

/// One send to replay, in the order of its input.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Line of the input it came from (1-based; 0 for generated traffic).
    pub line: usize,
    /// When it was sent (`date_created` / `date_sent` / `SentDate`).
    pub at: Millis,
    /// Destination as written in the export (`to` / `To`).
    pub to: String,
    pub from: Option<String>,
    /// Only its length and alphabet matter (segments); never printed.
    pub body: Option<String>,
    pub num_segments: Option<u32>,
    /// What Twilio charged, in millionths of the currency (absolute value:
    /// exports write charges as negative numbers).
    pub price: Option<u64>,
    pub status: Option<String>,
    /// `outbound-api` is judged; anything else is counted and skipped.
    pub direction: Option<String>,
    /// The account the send was billed to (`account_sid`), when known.
    pub account: Option<String>,
    pub client_ip: Option<IpAddr>,
    pub user: Option<String>,
    pub product: Product,
    /// Verify channel (`sms`, `call`, `whatsapp`); messaging ignores it.
    pub channel: Option<String>,
    /// When the recipient proved receipt: replayed as the real confirmation
    /// call (a Verify check answered `approved`, or Messaging Feedback
    /// `Outcome=confirmed`) at that moment, if the guard let the send out.
    pub confirmed_at: Option<Millis>,
    /// Free text the report groups by (`legitimate`, `attack: ...`).
    pub label: Option<String>,
}

impl Record {
    /// A generated outbound send with everything optional left empty.
    pub fn new(at: Millis, to: impl Into<String>, product: Product) -> Record {
        Record {
            line: 0,
            at,
            to: to.into(),
            from: None,
            body: None,
            num_segments: None,
            price: None,
            status: None,
            direction: None,
            account: None,
            client_ip: None,
            user: None,
            product,
            channel: None,
            confirmed_at: None,
            label: None,
        }
    }

    /// Whether the guard judges this record (outbound sends only).
    pub fn judged(&self) -> bool {
        self.direction
            .as_deref()
            .is_none_or(|d| d.eq_ignore_ascii_case("outbound-api"))
    }
}
