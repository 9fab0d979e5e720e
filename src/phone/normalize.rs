//! Normalization (SPEC §4 steps 1–3): the raw `To` of a send, already
//! form-decoded, to a [`Destination`]: the channel prefix (`whatsapp:`,
//! `rcs:`), the spellings accepted (single separators between digit groups,
//! a `+` lost to form decoding, the `00` international prefix, a national
//! number in the default region) and E.164 lengths; anything else is a
//! [`NumberError`] that names the character without echoing it.

use std::fmt;

use phonenumber::metadata::DATABASE;
use phonenumber::Metadata;

use super::classify::{e164_of, without_panic};
use super::{Channel, Destination, Region};

/// E.164 allows at most 15 digits after the `+`, country code included.
pub(super) const MAX_DIGITS: usize = 15;

/// Fewer digits than this is a typo or a probe, never a number; longer but
/// still bogus numbers are left to classification (`valid: false`).
pub(super) const MIN_DIGITS: usize = 4;

/// Why a `To` value was refused. Messages never echo the raw value: it may
/// hold invisible characters or be large, and it ends up in logs.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum NumberError {
    /// Nothing left after the channel prefix and white space.
    Empty,
    /// A `name:` prefix other than `whatsapp:` or `rcs:` (lower-cased,
    /// truncated).
    UnsupportedChannel(String),
    /// A character that is not an ASCII digit, a leading `+` or a separator.
    InvalidCharacter(char),
    /// A `+` anywhere but at the very start, or more than one.
    MisplacedPlus,
    /// A separator that does not sit singly between two digit groups.
    MisplacedSeparator(char),
    /// `(` without `)`, `)` without `(`, or nested parentheses.
    UnbalancedParenthesis,
    /// Fewer than 4 digits after the `+`.
    TooShort(usize),
    /// More than the 15 digits E.164 allows after the `+`.
    TooLong(usize),
    /// `+0…`: no country calling code starts with 0.
    LeadingZero,
    /// No `+` or `00`, and no default region to read a national number in.
    NoCountry,
    /// libphonenumber could not read the value as a national number of the
    /// default region (or read it as another country's number).
    NotNational(Region),
}

impl fmt::Display for NumberError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NumberError::Empty => f.write_str("the phone number is empty"),
            NumberError::UnsupportedChannel(name) => write!(
                f,
                "unsupported channel prefix \"{name}:\"; only \"whatsapp:\" and \"rcs:\" are supported"
            ),
            NumberError::InvalidCharacter(c) => write!(
                f,
                "the phone number contains {} {}; only ASCII digits 0-9, a leading '+' and single separators (space - . ( )) are allowed",
                describe(*c),
                code_point(*c)
            ),
            NumberError::MisplacedPlus => {
                f.write_str("'+' may appear only once, at the start of the phone number")
            }
            NumberError::MisplacedSeparator(c) => write!(
                f,
                "separator {} must stand alone between two groups of digits",
                code_point(*c)
            ),
            NumberError::UnbalancedParenthesis => {
                f.write_str("the phone number has unbalanced or nested parentheses")
            }
            NumberError::TooShort(n) => write!(
                f,
                "the phone number is too short: {n} digits, at least {MIN_DIGITS} expected"
            ),
            NumberError::TooLong(n) => write!(
                f,
                "the phone number is too long: {n} digits, E.164 allows at most {MAX_DIGITS}"
            ),
            NumberError::LeadingZero => {
                f.write_str("the country calling code cannot start with 0 (\"+0…\")")
            }
            NumberError::NoCountry => f.write_str(
                "the phone number has no country code ('+' or '00') and no default region is configured",
            ),
            NumberError::NotNational(region) => {
                write!(f, "the phone number is not a national number of {region}")
            }
        }
    }
}

impl std::error::Error for NumberError {}

/// `'x' (U+0078)` for visible ASCII, `U+200B` for everything else, so a log
/// line shows exactly what was sent without reproducing invisible text.
fn code_point(c: char) -> String {
    if c.is_ascii_graphic() || c == ' ' {
        format!("'{c}' (U+{:04X})", u32::from(c))
    } else {
        format!("U+{:04X}", u32::from(c))
    }
}

fn describe(c: char) -> &'static str {
    let invisible = matches!(
        u32::from(c),
        0x00AD | 0x034F | 0x061C | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E
            | 0x2060..=0x206F | 0xFE00..=0xFE0F | 0xFEFF | 0xFFF9..=0xFFFB
    );
    if c.is_ascii_alphabetic() {
        "the letter"
    } else if c.is_numeric() {
        "a non-ASCII digit"
    } else if invisible {
        "the invisible character"
    } else if c.is_control() {
        "the control character"
    } else if c.is_whitespace() {
        "the non-ASCII space"
    } else {
        "the character"
    }
}

/// Normalize a raw `To` value (already form-decoded).
pub fn normalize(raw: &str, default_region: Option<Region>) -> Result<Destination, NumberError> {
    let (channel, rest) = split_channel(raw)?;

    // Form decoding turns an unencoded '+' into a space; a space right before
    // the digits can only have been that '+'.
    let plus_lost = rest.starts_with(' ')
        && rest
            .trim_start_matches(' ')
            .starts_with(|c: char| c.is_ascii_digit());
    let body = rest.trim_matches([' ', '\t']);
    if body.is_empty() {
        return Err(NumberError::Empty);
    }
    if let Some(c) = body.chars().find(|c| !is_allowed(*c)) {
        return Err(NumberError::InvalidCharacter(c));
    }

    let (international, body) = match body.strip_prefix('+') {
        Some(after) => (true, after),
        None => (plus_lost, body),
    };
    let digits = strip_separators(body)?;

    let e164 = if international {
        international_e164(&digits)?
    } else if let Some(after_idd) = digits.strip_prefix("00") {
        international_e164(after_idd)?
    } else {
        national_e164(&digits, default_region.ok_or(NumberError::NoCountry)?)?
    };
    Ok(Destination { channel, e164 })
}

fn split_channel(raw: &str) -> Result<(Channel, &str), NumberError> {
    let Some((name, rest)) = raw.split_once(':') else {
        return Ok((Channel::Sms, raw));
    };
    if name.eq_ignore_ascii_case("whatsapp") {
        return Ok((Channel::Whatsapp, rest));
    }
    if name.eq_ignore_ascii_case("rcs") {
        return Ok((Channel::Rcs, rest));
    }
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphabetic()) {
        let shown = name.get(..16).unwrap_or(name).to_ascii_lowercase();
        return Err(NumberError::UnsupportedChannel(shown));
    }
    // Not a channel: the ':' is reported as an invalid character.
    Ok((Channel::Sms, raw))
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')')
}

/// Returns the digits of a number written as digit groups with single
/// separators between them: "1 (415) 555-0100", "44.7911.123456".
fn strip_separators(body: &str) -> Result<String, NumberError> {
    #[derive(PartialEq)]
    enum Last {
        Start,
        Digit,
        Plain(char),
        Open,
        Close,
    }

    let mut digits = String::with_capacity(MAX_DIGITS + 1);
    let mut last = Last::Start;
    let mut open = false;
    for c in body.chars() {
        last = match c {
            '0'..='9' => {
                digits.push(c);
                Last::Digit
            }
            ' ' | '-' | '.' if matches!(last, Last::Digit | Last::Close) => Last::Plain(c),
            '(' if open => return Err(NumberError::UnbalancedParenthesis),
            '(' if matches!(last, Last::Start | Last::Digit | Last::Plain(_)) => {
                open = true;
                Last::Open
            }
            ')' if !open => return Err(NumberError::UnbalancedParenthesis),
            ')' if last == Last::Digit => {
                open = false;
                Last::Close
            }
            '+' => return Err(NumberError::MisplacedPlus),
            ' ' | '-' | '.' | '(' | ')' => return Err(NumberError::MisplacedSeparator(c)),
            _ => return Err(NumberError::InvalidCharacter(c)),
        };
    }
    match last {
        _ if open => Err(NumberError::UnbalancedParenthesis),
        Last::Plain(c) => Err(NumberError::MisplacedSeparator(c)),
        _ => Ok(digits),
    }
}

/// `digits` follow a '+' or an international "00".
fn international_e164(digits: &str) -> Result<String, NumberError> {
    if digits.starts_with('0') {
        return Err(NumberError::LeadingZero);
    }
    if digits.len() < MIN_DIGITS {
        return Err(NumberError::TooShort(digits.len()));
    }
    if digits.len() > MAX_DIGITS {
        return Err(NumberError::TooLong(digits.len()));
    }
    Ok(format!("+{digits}"))
}

fn national_e164(digits: &str, region: Region) -> Result<String, NumberError> {
    if digits.len() > MAX_DIGITS {
        return Err(NumberError::TooLong(digits.len()));
    }
    let not_national = NumberError::NotNational(region);
    let id = region.id().ok_or_else(|| not_national.clone())?;
    let home_code = DATABASE
        .by_id(region.as_str())
        .map(Metadata::country_code)
        .ok_or_else(|| not_national.clone())?;
    let number = without_panic(|| phonenumber::parse(Some(id), digits).ok())
        .ok_or_else(|| not_national.clone())?;
    // libphonenumber also accepts an IDD ("011 44…" in the US) here. That is
    // not a national number, and Twilio may read it differently: refuse it.
    if number.code().value() != home_code {
        return Err(not_national);
    }
    let e164 = e164_of(&number);
    // The library built this string; hold it to the same rules as ours.
    match e164.strip_prefix('+') {
        Some(rest) if rest.bytes().all(|b| b.is_ascii_digit()) => international_e164(rest),
        _ => Err(not_national),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::classify::is_e164;

    fn region(s: &str) -> Region {
        s.parse().expect("test region")
    }

    fn e164(raw: &str) -> Result<String, NumberError> {
        normalize(raw, None).map(|d| d.e164)
    }

    // --- normalization --------------------------------------------------

    #[test]
    fn whatsapp_and_rcs_prefixes_in_any_case_are_stripped_and_echoed_in_lower_case() {
        for raw in [
            "whatsapp:+14155550100",
            "WhatsApp:+14155550100",
            "WHATSAPP:+14155550100",
        ] {
            let dest = normalize(raw, None).unwrap();
            assert_eq!(dest.channel, Channel::Whatsapp, "{raw}");
            assert_eq!(dest.e164, "+14155550100");
            assert_eq!(dest.display(), "whatsapp:+14155550100");
        }
        // RCS without fallback: judged as the number it carries.
        for raw in ["rcs:+14155550100", "RCS:+1 415 555 0100"] {
            let dest = normalize(raw, None).unwrap();
            assert_eq!(dest.channel, Channel::Rcs, "{raw}");
            assert_eq!(dest.e164, "+14155550100");
            assert_eq!(dest.display(), "rcs:+14155550100");
        }
        let sms = normalize("+14155550100", None).unwrap();
        assert_eq!(sms.channel, Channel::Sms);
        assert_eq!(sms.display(), "+14155550100");
    }

    #[test]
    fn other_channel_prefixes_are_refused() {
        assert_eq!(
            normalize("messenger:+14155550100", None),
            Err(NumberError::UnsupportedChannel("messenger".into()))
        );
        assert_eq!(
            normalize("TEL:+14155550100", None),
            Err(NumberError::UnsupportedChannel("tel".into()))
        );
        // Two prefixes: the second ':' is not part of a number.
        assert_eq!(
            normalize("whatsapp:whatsapp:+14155550100", None),
            Err(NumberError::InvalidCharacter('w'))
        );
    }

    #[test]
    fn a_leading_space_is_the_plus_form_decoding_ate() {
        assert_eq!(e164(" 14155550100").unwrap(), "+14155550100");
        assert_eq!(e164("   998993941234").unwrap(), "+998993941234");
        assert_eq!(
            normalize("whatsapp: 14155550100", None).unwrap().display(),
            "whatsapp:+14155550100"
        );
        // Without the space it is a national number, which needs a region.
        assert_eq!(e164("14155550100"), Err(NumberError::NoCountry));
        // Spaces before an explicit '+' are only trimmed.
        assert_eq!(e164("  +14155550100\t").unwrap(), "+14155550100");
    }

    #[test]
    fn blank_values_are_empty() {
        for raw in ["", "   ", "\t", "whatsapp:", "whatsapp: \t "] {
            assert_eq!(normalize(raw, None), Err(NumberError::Empty), "{raw:?}");
        }
        assert_eq!(e164("+"), Err(NumberError::TooShort(0)));
    }

    #[test]
    fn single_separators_between_digit_groups_are_dropped() {
        assert_eq!(e164("+1 (415) 555-0100").unwrap(), "+14155550100");
        assert_eq!(e164("+44.7911.123456").unwrap(), "+447911123456");
        assert_eq!(e164("+998 99-394-12-34").unwrap(), "+998993941234");
        assert_eq!(e164("+1(415)555.0100").unwrap(), "+14155550100");
    }

    #[test]
    fn separators_out_of_place_are_refused() {
        let cases = [
            ("+1  4155550100", NumberError::MisplacedSeparator(' ')),
            ("+1 -4155550100", NumberError::MisplacedSeparator('-')),
            ("+14155550100-", NumberError::MisplacedSeparator('-')),
            ("+-14155550100", NumberError::MisplacedSeparator('-')),
            ("+ 14155550100", NumberError::MisplacedSeparator(' ')),
            ("+1 (415 555-0100", NumberError::UnbalancedParenthesis),
            ("+1 415) 555-0100", NumberError::UnbalancedParenthesis),
            ("+1 ((415)) 5550100", NumberError::UnbalancedParenthesis),
            ("+1 () 4155550100", NumberError::MisplacedSeparator(')')),
            ("+1 (415)(555) 0100", NumberError::MisplacedSeparator('(')),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw, None), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn a_second_plus_is_refused() {
        assert_eq!(e164("++14155550100"), Err(NumberError::MisplacedPlus));
        assert_eq!(e164("+1415+5550100"), Err(NumberError::MisplacedPlus));
        assert_eq!(e164("1415+5550100"), Err(NumberError::MisplacedPlus));
    }

    #[test]
    fn double_zero_is_the_international_prefix() {
        assert_eq!(e164("00998993941234").unwrap(), "+998993941234");
        assert_eq!(e164("0044 7911 123456").unwrap(), "+447911123456");
        // Even with a default region "00" is not read as a national number.
        assert_eq!(
            normalize("00447911123456", Some(region("US")))
                .unwrap()
                .e164,
            "+447911123456"
        );
        assert_eq!(e164("000447911123456"), Err(NumberError::LeadingZero));
    }

    #[test]
    fn national_numbers_need_a_default_region() {
        let us = Some(region("US"));
        assert_eq!(normalize("4155550100", us).unwrap().e164, "+14155550100");
        assert_eq!(
            normalize("(415) 555-0100", us).unwrap().e164,
            "+14155550100"
        );
        assert_eq!(
            normalize("07911 123456", Some(region("GB"))).unwrap().e164,
            "+447911123456"
        );
        assert_eq!(normalize("4155550100", None), Err(NumberError::NoCountry));
    }

    #[test]
    fn a_national_number_that_dials_abroad_is_refused() {
        // libphonenumber reads US "011" as the international prefix.
        assert_eq!(
            normalize("011447911123456", Some(region("US"))),
            Err(NumberError::NotNational(region("US")))
        );
    }

    #[test]
    fn national_numbers_get_the_same_character_checks() {
        let us = Some(region("US"));
        assert_eq!(
            normalize("415\u{200B}5550100", us),
            Err(NumberError::InvalidCharacter('\u{200B}'))
        );
        assert_eq!(
            normalize("415555010\u{0663}", us),
            Err(NumberError::InvalidCharacter('\u{0663}'))
        );
    }

    #[test]
    fn arabic_indic_digits_are_refused() {
        assert_eq!(
            e164("+1415555010\u{0663}"),
            Err(NumberError::InvalidCharacter('\u{0663}'))
        );
    }

    #[test]
    fn full_width_digits_are_refused() {
        assert_eq!(
            e164("+\u{FF11}4155550100"),
            Err(NumberError::InvalidCharacter('\u{FF11}'))
        );
    }

    #[test]
    fn devanagari_digits_are_refused() {
        assert_eq!(
            e164("+141555501\u{0966}\u{0966}"),
            Err(NumberError::InvalidCharacter('\u{0966}'))
        );
    }

    #[test]
    fn zero_width_space_is_refused() {
        assert_eq!(
            e164("+1415\u{200B}5550100"),
            Err(NumberError::InvalidCharacter('\u{200B}'))
        );
    }

    #[test]
    fn direction_marks_and_word_joiner_are_refused() {
        for c in ['\u{200E}', '\u{200F}', '\u{2060}'] {
            assert_eq!(
                e164(&format!("+1415{c}5550100")),
                Err(NumberError::InvalidCharacter(c))
            );
        }
    }

    #[test]
    fn non_breaking_space_is_refused() {
        assert_eq!(
            e164("+1\u{00A0}4155550100"),
            Err(NumberError::InvalidCharacter('\u{00A0}'))
        );
        // Also where an ASCII space would have been the lost '+'.
        assert_eq!(
            e164("\u{00A0}14155550100"),
            Err(NumberError::InvalidCharacter('\u{00A0}'))
        );
    }

    #[test]
    fn byte_order_mark_is_refused() {
        assert_eq!(
            e164("\u{FEFF}+14155550100"),
            Err(NumberError::InvalidCharacter('\u{FEFF}'))
        );
    }

    #[test]
    fn other_unicode_spaces_and_controls_are_refused() {
        for c in ['\u{2009}', '\u{3000}', '\u{0000}', '\n', '\t'] {
            assert_eq!(
                e164(&format!("+1415{c}5550100")),
                Err(NumberError::InvalidCharacter(c)),
                "U+{:04X}",
                u32::from(c)
            );
        }
    }

    #[test]
    fn letters_are_refused() {
        assert_eq!(
            e164("+1800FLOWERS"),
            Err(NumberError::InvalidCharacter('F'))
        );
        assert_eq!(
            e164("+1415555O100"),
            Err(NumberError::InvalidCharacter('O'))
        );
    }

    #[test]
    fn extensions_are_refused() {
        assert_eq!(
            e164("+14155550100x12"),
            Err(NumberError::InvalidCharacter('x'))
        );
        assert_eq!(
            e164("+14155550100 ext 12"),
            Err(NumberError::InvalidCharacter('e'))
        );
        assert_eq!(
            e164("+14155550100;ext=12"),
            Err(NumberError::InvalidCharacter(';'))
        );
    }

    #[test]
    fn dialling_symbols_are_refused() {
        for c in ['*', '#', ',', ';', '/'] {
            assert_eq!(
                e164(&format!("+14155550100{c}")),
                Err(NumberError::InvalidCharacter(c))
            );
        }
    }

    #[test]
    fn lengths_outside_e164_are_refused() {
        assert_eq!(e164("+123"), Err(NumberError::TooShort(3)));
        assert_eq!(e164("+1234").unwrap(), "+1234");
        assert_eq!(e164("+123456789012345").unwrap(), "+123456789012345");
        assert_eq!(e164("+1234567890123456"), Err(NumberError::TooLong(16)));
        assert_eq!(
            normalize("4155550100123456", Some(region("US"))),
            Err(NumberError::TooLong(16))
        );
        assert_eq!(e164("+0123456789"), Err(NumberError::LeadingZero));
    }

    #[test]
    fn error_messages_name_the_character_without_echoing_it() {
        let zwsp = NumberError::InvalidCharacter('\u{200B}').to_string();
        assert!(zwsp.contains("invisible character U+200B"), "{zwsp}");
        assert!(!zwsp.contains('\u{200B}'));
        let digit = NumberError::InvalidCharacter('\u{0663}').to_string();
        assert!(digit.contains("non-ASCII digit U+0663"), "{digit}");
        let letter = NumberError::InvalidCharacter('x').to_string();
        assert!(letter.contains("letter 'x' (U+0078)"), "{letter}");
        let nbsp = NumberError::InvalidCharacter('\u{00A0}').to_string();
        assert!(nbsp.contains("non-ASCII space U+00A0"), "{nbsp}");
    }

    #[test]
    fn normalized_numbers_always_hold_the_e164_invariant() {
        // A deterministic pseudo-random walk over inputs built from the
        // characters the parser treats specially.
        const ALPHABET: [&str; 16] = [
            "0",
            "1",
            "4",
            "9",
            "+",
            " ",
            "-",
            ".",
            "(",
            ")",
            "00",
            "\t",
            ":",
            "whatsapp:",
            "\u{0663}",
            "\u{200B}",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let mut raw = String::new();
            for _ in 0..(seed % 24) {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                raw.push_str(ALPHABET[(seed >> 60) as usize]);
            }
            for default in [None, Some(region("US"))] {
                if let Ok(dest) = normalize(&raw, default) {
                    assert!(is_e164(&dest.e164), "{raw:?} -> {:?}", dest.e164);
                    assert!(dest.e164.len() > MIN_DIGITS, "{raw:?}");
                }
            }
        }
    }
}
