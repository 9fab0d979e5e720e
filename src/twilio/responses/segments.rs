//! How many segments Twilio bills for a message body, and its encoding.

/// How a message body is encoded on the air.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// The GSM 03.38 default alphabet (127 printable entries; 0x1B is the escape
/// to the extension table and has no character of its own).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// The GSM 03.38 extension table: each costs an escape plus itself.
const GSM7_EXTENSION: &str = "\u{c}^{}\\[]~|€";

fn gsm7_septets(c: char) -> Option<u32> {
    // Most bodies are ASCII: one table lookup instead of a scan of the
    // alphabet per character.
    static ASCII: std::sync::OnceLock<[u8; 128]> = std::sync::OnceLock::new();
    if c.is_ascii() {
        let table = ASCII.get_or_init(|| {
            let mut t = [0u8; 128];
            for (i, w) in t.iter_mut().enumerate() {
                let c = char::from(i as u8);
                *w = if GSM7_BASIC.contains(c) {
                    1
                } else if GSM7_EXTENSION.contains(c) {
                    2
                } else {
                    0
                };
            }
            t
        });
        return match table[c as usize] {
            0 => None,
            w => Some(u32::from(w)),
        };
    }
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Segments Twilio would bill for `body`: GSM-7 fits 160 septets in one part
/// and 153 per part once split (extension characters cost 2 and are never
/// cut in half); anything else is UCS-2 with 70 / 67 UTF-16 code units
/// (a surrogate pair is never cut either). An empty body is 1 segment.
pub fn segments(body: &str) -> (Encoding, u32) {
    if body.chars().all(|c| gsm7_septets(c).is_some()) {
        let widths = body.chars().map(|c| gsm7_septets(c).unwrap_or(1));
        (Encoding::Gsm7, parts(widths, 160, 153))
    } else {
        let widths = body.chars().map(|c| c.len_utf16() as u32);
        (Encoding::Ucs2, parts(widths, 70, 67))
    }
}

/// Packs characters of the given widths into parts of `multi` units, unless
/// the whole fits in one part of `single` units.
fn parts(widths: impl Iterator<Item = u32> + Clone, single: u32, multi: u32) -> u32 {
    let total: u64 = widths.clone().map(u64::from).sum();
    if total <= u64::from(single) {
        return 1;
    }
    let mut count = 1u32;
    let mut used = 0u32;
    for w in widths {
        if used + w > multi {
            count = count.saturating_add(1);
            used = 0;
        }
        used += w;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_gsm7_and_ucs2_limits() {
        let gsm = |n: usize| "a".repeat(n);
        assert_eq!(segments(""), (Encoding::Gsm7, 1));
        assert_eq!(segments(&gsm(160)), (Encoding::Gsm7, 1));
        assert_eq!(segments(&gsm(161)), (Encoding::Gsm7, 2));
        assert_eq!(segments(&gsm(306)), (Encoding::Gsm7, 2));
        assert_eq!(segments(&gsm(307)), (Encoding::Gsm7, 3));
        assert_eq!(segments(&gsm(1530)), (Encoding::Gsm7, 10));

        // One emoji makes the whole message UCS-2; it is two UTF-16 units.
        assert_eq!(segments(&format!("{}😀", gsm(68))), (Encoding::Ucs2, 1));
        assert_eq!(segments(&format!("{}😀", gsm(69))), (Encoding::Ucs2, 2));
        assert_eq!(segments(&"é".repeat(70)).1, 1); // é is GSM-7
        assert_eq!(segments(&"ж".repeat(70)), (Encoding::Ucs2, 1));
        assert_eq!(segments(&"ж".repeat(71)), (Encoding::Ucs2, 2));
        assert_eq!(segments(&"ж".repeat(134)), (Encoding::Ucs2, 2));
        assert_eq!(segments(&"ж".repeat(135)), (Encoding::Ucs2, 3));
        // A surrogate pair is never cut: 134 units, but the emoji cannot
        // take the last unit of part one, so the text needs three parts.
        assert_eq!(
            segments(&format!("{}😀{}", "ж".repeat(66), "ж".repeat(66))).1,
            3
        );
    }

    #[test]
    fn gsm7_extension_characters_count_twice() {
        assert_eq!(segments(&"€".repeat(80)), (Encoding::Gsm7, 1));
        assert_eq!(segments(&"€".repeat(81)), (Encoding::Gsm7, 2));
        assert_eq!(segments(&"[".repeat(81)).1, 2);
        for c in ['^', '{', '}', '\\', '[', ']', '~', '|', '€', '\u{c}'] {
            assert_eq!(gsm7_septets(c), Some(2), "{c:?}");
        }
        // 159 plain + 1 extension = 161 septets: two parts.
        assert_eq!(segments(&format!("{}€", "a".repeat(159))).1, 2);
        // An escape pair is never cut: 152 + € does not fit in 153.
        assert_eq!(
            segments(&format!("{}€{}", "a".repeat(152), "a".repeat(152))).1,
            3
        );
        assert_eq!(GSM7_BASIC.chars().count(), 127);
    }
}
