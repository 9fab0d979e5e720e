//! Status callbacks of shadowed messages. Twilio posts a message's
//! `StatusCallback` URL at each change of its status (`queued`, `sent`,
//! then `delivered` or `undelivered`), signed with `X-Twilio-Signature`;
//! an app that counts deliveries, or retries a message that never arrives,
//! waits for them. A message the guard shadowed gets the same callbacks,
//! at the moments its status moves on ([`responses::message_timeline`],
//! which a GET of it follows too), from the replica that made it.
//!
//! The signature needs the account's auth token: it is known when the
//! app authenticates with its account sid and auth token (HTTP Basic), and
//! kept only in the memory of the callbacks still to post. An app that
//! authenticates with an API key gets its callbacks unsigned.
//!
//! Bounded: at most [`MAX_PENDING`] messages with callbacks to post; more
//! are dropped and counted.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE, USER_AGENT};

use crate::net::upstream::Upstream;
use crate::twilio::responses::{self, FinalStatus};

/// Shadowed messages whose callbacks are still to post, at most.
pub const MAX_PENDING: usize = 10_000;

static PENDING: AtomicUsize = AtomicUsize::new(0);
static POSTED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Callbacks posted (answered 2xx), failed (no answer or another status)
/// and dropped (too many pending), since start, by those names.
pub fn counters() -> [(&'static str, &'static AtomicU64); 3] {
    [
        ("posted", &POSTED),
        ("failed", &FAILED),
        ("dropped", &DROPPED),
    ]
}

/// A shadowed message whose app asked for status callbacks.
pub struct Message {
    pub url: String,
    /// The account's auth token, when the request carried it.
    pub token: Option<String>,
    pub sid: String,
    pub account_sid: String,
    pub to: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub created: SystemTime,
    pub last: FinalStatus,
}

/// Posts the message's callbacks in the background, each when its status
/// changes. Returns false (and counts it) when too many are pending.
pub fn schedule(upstream: &Upstream, m: Message) -> bool {
    if PENDING.fetch_add(1, Ordering::Relaxed) >= MAX_PENDING {
        PENDING.fetch_sub(1, Ordering::Relaxed);
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    let upstream = upstream.clone();
    tokio::spawn(async move {
        let accepted = m.messaging_service_sid.is_some() && m.from.is_none();
        let (sent, done) = responses::message_timeline(&m.sid, m.created);
        // The first once the app has its answer, as Twilio's comes.
        let mut steps = vec![
            (
                if accepted { "accepted" } else { "queued" },
                m.created + Duration::from_millis(500),
            ),
            ("sent", sent),
        ];
        if m.last != FinalStatus::Sent {
            steps.push((m.last.as_str(), done));
        }
        let started = std::time::Instant::now();
        for (status, at) in steps {
            let due = at.duration_since(m.created).unwrap_or(Duration::ZERO);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
            let error = (status == m.last.as_str())
                .then(|| m.last.error())
                .flatten();
            post(&upstream, &m, status, error).await;
        }
        PENDING.fetch_sub(1, Ordering::Relaxed);
    });
    true
}

/// The form Twilio posts for a message's status, in its field names.
fn params(m: &Message, status: &str, error: Option<(u32, &str)>) -> Vec<(&'static str, String)> {
    let mut p = vec![
        ("AccountSid", m.account_sid.clone()),
        ("ApiVersion", "2010-04-01".to_string()),
        ("MessageSid", m.sid.clone()),
        ("MessageStatus", status.to_string()),
        ("SmsSid", m.sid.clone()),
        ("SmsStatus", status.to_string()),
        ("To", m.to.clone()),
    ];
    if let Some(from) = &m.from {
        p.push(("From", from.clone()));
    }
    if let Some(ms) = &m.messaging_service_sid {
        p.push(("MessagingServiceSid", ms.clone()));
    }
    if let Some((code, _)) = error {
        p.push(("ErrorCode", code.to_string()));
    }
    p
}

/// `X-Twilio-Signature`: base64 of HMAC-SHA1, keyed with the auth token,
/// of the full URL followed by each parameter's name and value, sorted by
/// name.
pub fn signature(token: &str, url: &str, params: &[(&str, String)]) -> String {
    let mut sorted: Vec<&(&str, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, token.as_bytes());
    crate::base::base64(ring::hmac::sign(&key, data.as_bytes()).as_ref())
}

async fn post(upstream: &Upstream, m: &Message, status: &str, error: Option<(u32, &str)>) {
    let params = params(m, status, error);
    let body = {
        let mut f = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &params {
            f.append_pair(k, v);
        }
        f.finish()
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers.insert(USER_AGENT, HeaderValue::from_static("TwilioProxy/1.1"));
    if let Some(token) = &m.token {
        if let Ok(v) = HeaderValue::from_str(&signature(token, &m.url, &params)) {
            headers.insert("x-twilio-signature", v);
        }
    }
    match upstream.post(&m.url, headers, Bytes::from(body)).await {
        Ok(s) if s.is_success() => {
            POSTED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(s) => {
            FAILED.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "smsguard::shadow", sid = %m.sid, %status, answer = %s, "a shadowed message's status callback was refused");
        }
        Err(e) => {
            FAILED.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "smsguard::shadow", sid = %m.sid, %status, error = %e, "a shadowed message's status callback failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Twilio's documented example: the signature of a callback to
    /// `https://mycompany.com/myapp.php?foo=1&bar=2` with five parameters,
    /// keyed with the token `12345`.
    #[test]
    fn the_signature_is_twilios() {
        let params = [
            ("CallSid", "CA1234567890ABCDE".to_string()),
            ("Caller", "+12349013030".to_string()),
            ("Digits", "1234".to_string()),
            ("From", "+12349013030".to_string()),
            ("To", "+18005551212".to_string()),
        ];
        assert_eq!(
            signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }
}
