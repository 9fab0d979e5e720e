//! The response headers Twilio sends, for an answer made by the guard.

use std::sync::LazyLock;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

use super::sids::random_sid;

/// The headers Twilio sends with its answers, in Twilio's order, for an
/// answer made by the guard. `api_domain` is `api.twilio.com` or
/// `verify.twilio.com` (anything that is not a valid header value falls
/// back to `api.twilio.com`); `duration` becomes `Twilio-Request-Duration`.
///
/// Built from a template made once (names hashed once, in order), with the
/// three values that vary put in place: a copy of the template costs an
/// allocation, where building the map each time hashed fourteen names.
pub fn twilio_headers(api_domain: &str, duration: Duration) -> HeaderMap {
    static TEMPLATE: LazyLock<HeaderMap> = LazyLock::new(template);
    let mut headers = TEMPLATE.clone();
    if let Ok(id) = HeaderValue::from_str(&random_sid("RQ")) {
        headers.insert(REQUEST_ID, id);
    }
    if let Ok(d) = HeaderValue::from_str(&format!("{:.3}", duration.as_secs_f64())) {
        headers.insert(REQUEST_DURATION, d);
    }
    if api_domain != API_DOMAIN {
        if let Some(domain) = HeaderValue::from_str(api_domain)
            .ok()
            .filter(|_| !api_domain.is_empty())
        {
            headers.insert(X_API_DOMAIN, domain);
        }
    }
    headers
}

const REQUEST_ID: HeaderName = HeaderName::from_static("twilio-request-id");
const REQUEST_DURATION: HeaderName = HeaderName::from_static("twilio-request-duration");
const X_API_DOMAIN: HeaderName = HeaderName::from_static("x-api-domain");
const API_DOMAIN: &str = "api.twilio.com";

/// Twilio's headers in its order, with placeholders where
/// [`twilio_headers`] puts the values of one answer (`insert` keeps a
/// header's place).
fn template() -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(16);
    let mut put = |name: HeaderName, value: &'static str| {
        headers.append(name, HeaderValue::from_static(value));
    };
    put(CONTENT_TYPE, "application/json");
    put(REQUEST_ID, "RQ");
    put(REQUEST_DURATION, "0.000");
    put(HeaderName::from_static("twilio-concurrent-requests"), "1");
    put(HeaderName::from_static("x-home-region"), "us1");
    put(X_API_DOMAIN, API_DOMAIN);
    put(HeaderName::from_static("x-powered-by"), "AT-5000");
    put(HeaderName::from_static("x-shenanigans"), "none");
    put(
        HeaderName::from_static("strict-transport-security"),
        "max-age=31536000",
    );
    put(HeaderName::from_static("access-control-allow-origin"), "*");
    put(
        HeaderName::from_static("access-control-allow-methods"),
        "GET, POST, DELETE, OPTIONS",
    );
    put(
        HeaderName::from_static("access-control-allow-headers"),
        "Accept, Authorization, Content-Type, If-Match, If-Modified-Since, If-None-Match, If-Unmodified-Since, Idempotency-Key",
    );
    put(
        HeaderName::from_static("access-control-expose-headers"),
        "ETag",
    );
    put(
        HeaderName::from_static("access-control-allow-credentials"),
        "true",
    );
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

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
}
