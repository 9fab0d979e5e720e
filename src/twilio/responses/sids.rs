//! Twilio sids (random, or derived from their inputs) and the FNV-1a hash
//! that derives them.

/// `prefix` followed by 32 random lowercase hex digits, like every Twilio sid.
pub fn random_sid(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

/// `prefix` followed by 32 hex digits that depend only on `parts` (FNV-1a,
/// twice with different offsets): stable across runs and Rust versions, unlike
/// the standard library's hasher.
pub(super) fn derived_sid(prefix: &str, parts: &[&str]) -> String {
    let hash = |offset: u64| {
        fnv1a(
            offset,
            parts
                .iter()
                .flat_map(|part| part.bytes().chain(std::iter::once(0))),
        )
    };
    format!(
        "{prefix}{:016x}{:016x}",
        hash(FNV_OFFSET),
        hash(0x6c62_272e_07bb_0142)
    )
}

/// `prefix` followed by 32 hex digits.
pub(super) fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == prefix.len() + 32
        && s.starts_with(prefix)
        && s[prefix.len()..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// FNV-1a's standard offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of `bytes` from `offset`: stable across runs and Rust versions,
/// unlike the standard library's hasher.
pub fn fnv1a(offset: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(offset, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::responses::test_support::*;
    use regex::Regex;

    #[test]
    fn sids_are_random_prefixed_hex() {
        let a = random_sid("SM");
        let b = random_sid("SM");
        assert_ne!(a, b);
        assert!(Regex::new("^SM[0-9a-f]{32}$").unwrap().is_match(&a));
        let pn = derived_sid("PN", &[AC, "+15017122661"]);
        assert_eq!(pn, derived_sid("PN", &[AC, "+15017122661"]));
        assert!(Regex::new("^PN[0-9a-f]{32}$").unwrap().is_match(&pn));
    }
}
