//! The account balance, asked of Twilio with the send's own credentials and
//! cached per account.
//!
//! Never more than one balance request is in flight per account, however
//! many sends arrive: the first send without a known balance asks and the
//! others wait for its answer; once a balance is known, a stale one is used
//! while a single background refresh runs. The Authorization value is only
//! passed on to Twilio, never stored beyond the refresh or logged.
//!
//! Its log events keep the target `smsguard::balance` (operators filter logs
//! by it with `SMSGUARD_LOG`), wherever the module sits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use moka::sync::Cache;

use crate::base::clock::{ms, Clock, Millis};
use crate::config::Money;
use crate::net::upstream::{self, Upstream};
use crate::policy::BalanceView;
use crate::twilio::routes;

#[derive(Default)]
struct Entry {
    /// The last answer and when it was fetched.
    value: Mutex<Option<(BalanceView, Millis)>>,
    /// Held by whoever is fetching: the single flight.
    flight: Arc<tokio::sync::Mutex<()>>,
}

pub struct Balances {
    entries: Cache<String, Arc<Entry>>,
    refresh: Millis,
    /// An error is remembered only briefly, so a blip does not decide for
    /// a whole refresh interval.
    error_ttl: Millis,
}

impl Balances {
    pub fn new(refresh: Duration) -> Self {
        Balances {
            entries: Cache::new(10_000),
            refresh: ms(refresh),
            error_ttl: ms(refresh).min(5_000),
        }
    }

    fn fresh(&self, v: &(BalanceView, Millis), now: Millis) -> bool {
        let ttl = if matches!(v.0, BalanceView::Known(_)) {
            self.refresh
        } else {
            self.error_ttl
        };
        now.saturating_sub(v.1) < ttl
    }

    /// Last known balances by account (for metrics).
    pub fn known(&self) -> Vec<(String, Money)> {
        self.entries
            .iter()
            .filter_map(
                |(account, e)| match *e.value.lock().unwrap_or_else(|p| p.into_inner()) {
                    Some((BalanceView::Known(m), _)) => Some((account.to_string(), m)),
                    _ => None,
                },
            )
            .collect()
    }

    /// The balance of `account` as of at most `refresh` ago.
    pub async fn view(
        &self,
        account: &str,
        auth: Option<&HeaderValue>,
        upstream: &Upstream,
        clock: &Arc<dyn Clock>,
    ) -> BalanceView {
        let Some(auth) = auth.cloned() else {
            return BalanceView::Unavailable;
        };
        let entry = self
            .entries
            .get_with_by_ref(account, || Arc::new(Entry::default()));
        let cached = *entry.value.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = cached {
            if self.fresh(&v, clock.now()) {
                return v.0;
            }
            // Stale: answer with it and let one task refresh behind.
            if let Ok(guard) = entry.flight.clone().try_lock_owned() {
                let (entry, account, upstream, clock) = (
                    entry.clone(),
                    account.to_string(),
                    upstream.clone(),
                    clock.clone(),
                );
                tokio::spawn(async move {
                    let v = fetch(&upstream, &account, auth).await;
                    *entry.value.lock().unwrap_or_else(|p| p.into_inner()) = Some((v, clock.now()));
                    drop(guard);
                });
            }
            return v.0;
        }
        let _flight = entry.flight.lock().await;
        if let Some(v) = *entry.value.lock().unwrap_or_else(|p| p.into_inner()) {
            if self.fresh(&v, clock.now()) {
                return v.0;
            }
        }
        let v = fetch(upstream, account, auth).await;
        *entry.value.lock().unwrap_or_else(|p| p.into_inner()) = Some((v, clock.now()));
        v
    }
}

async fn fetch(upstream: &Upstream, account: &str, auth: HeaderValue) -> BalanceView {
    let path = format!("/2010-04-01/Accounts/{account}/Balance.json");
    let Ok(pq) = path.parse::<http::uri::PathAndQuery>() else {
        return BalanceView::Unavailable;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, auth);
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let resp = match upstream
        .send(
            upstream::Target::Configured(routes::Upstream::Api),
            Method::GET,
            Some(&pq),
            headers,
            upstream::full(""),
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(target: "smsguard::balance", error = %e, "balance request failed");
            return BalanceView::Unavailable;
        }
    };
    let status = resp.status();
    let Ok(body) = resp.into_body().collect().await.map(|c| c.to_bytes()) else {
        return BalanceView::Unavailable;
    };
    if status != StatusCode::OK {
        tracing::warn!(target: "smsguard::balance", %status, "balance request refused");
        return BalanceView::Unavailable;
    }
    parse_balance(&body).unwrap_or(BalanceView::Unavailable)
}

/// `{"balance": "0.05", ...}`; a negative balance counts as zero.
fn parse_balance(body: &[u8]) -> Option<BalanceView> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let b = v.get("balance")?.as_str()?.trim();
    if b.starts_with('-') {
        return Some(BalanceView::Known(Money(0)));
    }
    // Twilio may give more decimals than a Money holds: keep six.
    let (w, f) = b.split_once('.').unwrap_or((b, ""));
    let f: String = f.chars().take(6).collect();
    let text = if f.is_empty() {
        w.to_string()
    } else {
        format!("{w}.{f}")
    };
    text.parse::<Money>().ok().map(BalanceView::Known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balances_parse_with_sign_and_extra_decimals() {
        assert_eq!(
            parse_balance(br#"{"balance": "0.05"}"#),
            Some(BalanceView::Known(Money(50_000)))
        );
        assert_eq!(
            parse_balance(br#"{"balance": "-3.20"}"#),
            Some(BalanceView::Known(Money(0)))
        );
        assert_eq!(
            parse_balance(br#"{"balance": "12.3456789"}"#),
            Some(BalanceView::Known(Money(12_345_678)))
        );
        assert_eq!(parse_balance(br#"{"balance": 5}"#), None);
        assert_eq!(parse_balance(b"nope"), None);
    }
}
