//! The app's context headers: who is behind a send.
//!
//! `X-SMSGuard-Client-IP` (the app's end user's address) and
//! `X-SMSGuard-User` (the app's own user id) carry end-user data an
//! attacker can shape: a raw `X-Forwarded-For`, a user name. A header that
//! is present is never read as absent:
//!
//! - the client address must be one IP address, given once: a duplicated
//!   header, a list (`a, b`), an address with a port, an empty value or
//!   anything else is refused ([`ContextError`]), never replaced by the
//!   TCP peer (the app's own server, which must not be judged as an end
//!   user, least of all against `numbers.safe_clients`);
//! - an address is keyed as the client it stands for: an IPv4-mapped IPv6
//!   address (`::ffff:a.b.c.d`) as its IPv4 address, any other IPv6
//!   address by its network of `numbers.client_ipv6_prefix` bits (one host
//!   owns a whole /64 and picks any address in it);
//! - the user must be given once; a value longer than [`MAX_USER`] bytes,
//!   empty, or with bytes other than visible ASCII is judged under a digest
//!   of its bytes (`sha256:` and 32 hex digits), never dropped.

use std::net::{IpAddr, Ipv6Addr};

use http::header::{HeaderMap, HeaderName};

/// The application's end user's IP, for `client_ip` rules.
pub const CLIENT_IP_HEADER: HeaderName = HeaderName::from_static("x-smsguard-client-ip");
/// The application's own user id, for `user` rules.
pub const USER_HEADER: HeaderName = HeaderName::from_static("x-smsguard-user");

/// Longest user id judged as given; a longer one is judged by its digest.
pub const MAX_USER: usize = 256;

/// Default prefix length IPv6 clients are keyed by.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// Who is behind a send, as the policy keys it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The end user's address as keyed ([`key_ip`]); `None` without the
    /// header: `client_ip` rules then do not apply.
    pub client_ip: Option<IpAddr>,
    /// The user as keyed ([`user_key`]); `None` without the header.
    pub user: Option<String>,
}

/// A context header that is present but cannot be judged: the send is
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextError {
    /// `X-SMSGuard-Client-IP` is given more than once.
    DuplicateClientIp,
    /// `X-SMSGuard-Client-IP` is not one IP address.
    InvalidClientIp,
    /// `X-SMSGuard-User` is given more than once.
    DuplicateUser,
}

impl ContextError {
    /// The header at fault.
    pub fn header(&self) -> &'static str {
        match self {
            ContextError::DuplicateClientIp | ContextError::InvalidClientIp => {
                "X-SMSGuard-Client-IP"
            }
            ContextError::DuplicateUser => "X-SMSGuard-User",
        }
    }
}

impl std::fmt::Display for ContextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContextError::DuplicateClientIp => {
                f.write_str("X-SMSGuard-Client-IP is given more than once")
            }
            ContextError::InvalidClientIp => f.write_str(
                "X-SMSGuard-Client-IP must be exactly one IP address (no list, port or name)",
            ),
            ContextError::DuplicateUser => f.write_str("X-SMSGuard-User is given more than once"),
        }
    }
}

impl std::error::Error for ContextError {}

/// Reads both context headers; `ipv6_prefix` is `numbers.client_ipv6_prefix`.
pub fn read(headers: &HeaderMap, ipv6_prefix: u8) -> Result<Context, ContextError> {
    let client_ip = match single(headers, &CLIENT_IP_HEADER, ContextError::DuplicateClientIp)? {
        None => None,
        Some(raw) => Some(key_ip(parse_ip(raw)?, ipv6_prefix)),
    };
    let user = single(headers, &USER_HEADER, ContextError::DuplicateUser)?.map(user_key);
    Ok(Context { client_ip, user })
}

/// The one value of a header, as bytes; `dup` when given more than once.
fn single<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    dup: ContextError,
) -> Result<Option<&'h [u8]>, ContextError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => Ok(Some(v.as_bytes())),
        (Some(_), Some(_)) => Err(dup),
    }
}

/// One IP address, surrounding spaces and tabs allowed; nothing else.
fn parse_ip(raw: &[u8]) -> Result<IpAddr, ContextError> {
    std::str::from_utf8(raw)
        .ok()
        .map(|s| s.trim_matches([' ', '\t']))
        .and_then(|s| s.parse::<IpAddr>().ok())
        .ok_or(ContextError::InvalidClientIp)
}

/// The address a client is keyed by: IPv4 as is, an IPv4-mapped IPv6
/// address as its IPv4 address, any other IPv6 address as the first
/// address of its network of `ipv6_prefix` bits (0..=128; more reads as 128).
pub fn key_ip(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u32::from(ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

/// The key of a user id: the id itself when it is 1..=[`MAX_USER`] bytes of
/// visible ASCII (spaces and tabs around it trimmed), else `sha256:` and
/// the first 16 bytes of the SHA-256 of its raw bytes, in hex.
pub fn user_key(raw: &[u8]) -> String {
    let trimmed = raw.trim_ascii();
    let plain = !trimmed.is_empty()
        && trimmed.len() <= MAX_USER
        && trimmed.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
    match std::str::from_utf8(trimmed) {
        Ok(s) if plain && !s.starts_with("sha256:") => s.to_string(),
        _ => digest(raw),
    }
}

fn digest(raw: &[u8]) -> String {
    use std::fmt::Write;
    let d = ring::digest::digest(&ring::digest::SHA256, raw);
    let mut out = String::with_capacity(7 + 32);
    out.push_str("sha256:");
    for b in &d.as_ref()[..16] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(ip: &[&[u8]], user: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in ip {
            h.append(&CLIENT_IP_HEADER, HeaderValue::from_bytes(v).unwrap());
        }
        for v in user {
            h.append(&USER_HEADER, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn a_present_client_ip_is_one_address_or_refused() {
        let ok = read(&headers(&[b" 203.0.113.9 "], &[]), 64).unwrap();
        assert_eq!(ok.client_ip, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(read(&headers(&[], &[]), 64).unwrap().client_ip, None);
        for bad in [
            &b"203.0.113.9, 198.51.100.1"[..],
            b"203.0.113.9:443",
            b"[2001:db8::1]:443",
            b"",
            b"   ",
            b"garbage",
            b"203.0.113.9 198.51.100.1",
            b"unknown",
            b"\xff\xfe",
        ] {
            assert_eq!(
                read(&headers(&[bad], &[]), 64),
                Err(ContextError::InvalidClientIp),
                "{bad:?}"
            );
        }
        assert_eq!(
            read(&headers(&[b"203.0.113.9", b"203.0.113.9"], &[]), 64),
            Err(ContextError::DuplicateClientIp)
        );
    }

    #[test]
    fn addresses_are_keyed_as_the_client_they_stand_for() {
        let k = |s: &str, p| key_ip(s.parse().unwrap(), p).to_string();
        assert_eq!(k("::ffff:203.0.113.9", 64), "203.0.113.9");
        assert_eq!(k("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64), "2001:db8:1:2::");
        assert_eq!(k("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 48), "2001:db8:1::");
        assert_eq!(k("2001:db8::1", 128), "2001:db8::1");
        assert_eq!(k("2001:db8::1", 0), "::");
        assert_eq!(k("2001:db8::1", 200), "2001:db8::1");
        assert_eq!(k("198.51.100.7", 1), "198.51.100.7");
    }

    #[test]
    fn users_are_never_dropped() {
        assert_eq!(user_key(b"alice"), "alice");
        assert_eq!(user_key(b" alice "), "alice");
        let long = vec![b'a'; MAX_USER + 1];
        for raw in [
            &long[..],
            "jos\u{e9}".as_bytes(),
            b"",
            b"a\x01b",
            b"sha256:00",
        ] {
            let k = user_key(raw);
            assert!(k.starts_with("sha256:") && k.len() == 39, "{raw:?} -> {k}");
        }
        // Different bytes, different keys; the same bytes, the same key.
        assert_ne!(user_key(&long), user_key(&long[1..]));
        assert_eq!(user_key(&long), user_key(&long.clone()));
        let h = headers(&[], &[b"u1", b"u2"]);
        assert_eq!(read(&h, 64), Err(ContextError::DuplicateUser));
        let h = headers(&[], &["jos\u{e9}".as_bytes()]);
        assert!(read(&h, 64).unwrap().user.unwrap().starts_with("sha256:"));
    }
}
