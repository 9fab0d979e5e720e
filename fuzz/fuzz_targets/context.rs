//! `context`: the app's context headers -> `smsguard::base::context::read`.
//!
//! Input: byte 0 picks how many `X-SMSGuard-Client-IP` values (0..=2) and
//! `X-SMSGuard-User` values (0..=2) the request carries and the IPv6 prefix
//! length; the rest, split at `\n`, are their values (bytes a header value
//! may hold).
//!
//! Invariants, against a reference reading written here:
//! 1. A present header is never read as absent: a result with no client
//!    address means no `X-SMSGuard-Client-IP` was sent, and likewise for
//!    the user.
//! 2. A header given twice is refused.
//! 3. One client value is taken iff it is one IP address with optional
//!    blanks around it; it is keyed as IPv4 when it is IPv4 or
//!    IPv4-mapped, else as its network of the prefix (masked here bit by
//!    bit), and never as anything else.
//! 4. A user key is never empty, at most 256 bytes of visible ASCII (or
//!    spaces), and is the trimmed value itself iff that is 1..=256 bytes of
//!    visible ASCII and spaces not starting with `sha256:`; otherwise
//!    `sha256:` and 32 lowercase hex digits, the same for the same bytes.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use smsguard::base::context::{read, user_key, ContextError, CLIENT_IP_HEADER, USER_HEADER};

/// The reference key: IPv4 kept, mapped IPv4 unwrapped, IPv6 masked bit
/// by bit to `prefix` bits.
fn reference_key(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let o = v6.octets();
            if o[..10].iter().all(|b| *b == 0) && o[10] == 0xff && o[11] == 0xff {
                return IpAddr::from([o[12], o[13], o[14], o[15]]);
            }
            let mut out = [0u8; 16];
            for bit in 0..usize::from(prefix.min(128)) {
                let (byte, shift) = (bit / 8, 7 - bit % 8);
                out[byte] |= o[byte] & (1 << shift);
            }
            IpAddr::V6(Ipv6Addr::from(out))
        }
    }
}

fn reference_ip(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw).ok()?;
    s.trim_matches(|c| c == ' ' || c == '\t').parse().ok()
}

fn plain_user(raw: &[u8]) -> Option<&str> {
    let t = raw.trim_ascii();
    let ok = !t.is_empty()
        && t.len() <= 256
        && t.iter().all(|b| b.is_ascii_graphic() || *b == b' ')
        && !t.starts_with(b"sha256:");
    ok.then(|| std::str::from_utf8(t).unwrap())
}

fn check_user_key(raw: &[u8]) {
    let k = user_key(raw);
    assert!(!k.is_empty() && k.len() <= 256, "{k:?}");
    assert!(
        k.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
        "{k:?}"
    );
    match plain_user(raw) {
        Some(p) => assert_eq!(k, p),
        None => {
            let hex = k.strip_prefix("sha256:").expect("a digest");
            assert!(
                hex.len() == 32
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert_eq!(k, user_key(&raw.to_vec()), "deterministic");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (n_ip, n_user) = (usize::from(sel % 3), usize::from(sel / 3 % 3));
    let prefix = [64u8, 48, 56, 128, 16, 96, 127, 1][usize::from(sel >> 5)];
    let mut values = rest.split(|b| *b == b'\n');
    let mut headers = HeaderMap::new();
    let mut ips = Vec::new();
    let mut users = Vec::new();
    for (n, name, kept) in [
        (n_ip, &CLIENT_IP_HEADER, &mut ips),
        (n_user, &USER_HEADER, &mut users),
    ] {
        for _ in 0..n {
            let Ok(v) = HeaderValue::from_bytes(values.next().unwrap_or(b"")) else {
                return;
            };
            kept.push(v.as_bytes().to_vec());
            headers.append(name, v);
        }
    }
    for u in &users {
        check_user_key(u);
    }
    let got = read(&headers, prefix);
    match got {
        Ok(ctx) => {
            assert!(ips.len() <= 1 && users.len() <= 1, "a duplicate was taken");
            assert_eq!(
                ctx.client_ip.is_some(),
                ips.len() == 1,
                "present read as absent"
            );
            assert_eq!(
                ctx.user.is_some(),
                users.len() == 1,
                "present read as absent"
            );
            if let Some(ip) = ctx.client_ip {
                let want = reference_ip(&ips[0]).expect("an unreadable address was taken");
                assert_eq!(ip, reference_key(want, prefix));
            }
            if let Some(u) = ctx.user {
                assert_eq!(u, user_key(&users[0]));
            }
        }
        Err(ContextError::DuplicateClientIp) => assert!(ips.len() > 1),
        Err(ContextError::InvalidClientIp) => {
            assert_eq!(ips.len(), 1);
            assert!(
                reference_ip(&ips[0]).is_none(),
                "a readable address was refused"
            );
        }
        Err(ContextError::DuplicateUser) => {
            assert!(users.len() > 1);
            assert!(ips.len() <= 1, "the address is read first");
        }
    }
});
