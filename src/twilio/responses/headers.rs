//! The response headers Twilio sends, for an answer made by the guard.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

use super::sids::random_sid;

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
