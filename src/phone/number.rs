//! The values a destination is described by: [`Region`] (an ISO region
//! libphonenumber knows), [`NumberType`] (as named in config), [`Channel`]
//! and the normalized [`Destination`] with its display form and `prefix:N`.

use std::fmt;
use std::str::FromStr;

use phonenumber::country::Id;
use serde::{Deserialize, Serialize};

/// ISO 3166-1 alpha-2 region, upper case, e.g. "US", "GG", "UZ". Copy, 2 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region([u8; 2]);

impl Region {
    pub fn as_str(&self) -> &str {
        // Only `known` builds a Region, from two ASCII letters, so this cannot
        // fail; "ZZ" is libphonenumber's own "unknown region".
        std::str::from_utf8(&self.0).unwrap_or("ZZ")
    }

    /// A region libphonenumber has metadata for. Metadata ids that are not
    /// regions (the "001" of +800, +882, +883, +979…) yield None.
    pub(super) fn known(code: &str) -> Option<Region> {
        match code.as_bytes() {
            &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                let region = Region([a.to_ascii_uppercase(), b.to_ascii_uppercase()]);
                region.id().map(|_| region)
            }
            _ => None,
        }
    }

    pub(super) fn id(&self) -> Option<Id> {
        Id::from_str(self.as_str()).ok()
    }
}

impl FromStr for Region {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Region::known(s).ok_or_else(|| {
            format!("unknown region {s:?}: expected an ISO 3166-1 alpha-2 code known to libphonenumber, e.g. \"US\" or \"GB\"")
        })
    }
}

impl TryFrom<String> for Region {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Region> for String {
    fn from(region: Region) -> String {
        region.as_str().to_owned()
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Number types, named as operators write them in config (snake_case).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberType {
    FixedLine,
    Mobile,
    FixedLineOrMobile,
    TollFree,
    PremiumRate,
    SharedCost,
    Voip,
    PersonalNumber,
    Pager,
    Uan,
    Voicemail,
    Unknown,
}

impl NumberType {
    pub const ALL: [NumberType; 12] = [
        NumberType::FixedLine,
        NumberType::Mobile,
        NumberType::FixedLineOrMobile,
        NumberType::TollFree,
        NumberType::PremiumRate,
        NumberType::SharedCost,
        NumberType::Voip,
        NumberType::PersonalNumber,
        NumberType::Pager,
        NumberType::Uan,
        NumberType::Voicemail,
        NumberType::Unknown,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            NumberType::FixedLine => "fixed_line",
            NumberType::Mobile => "mobile",
            NumberType::FixedLineOrMobile => "fixed_line_or_mobile",
            NumberType::TollFree => "toll_free",
            NumberType::PremiumRate => "premium_rate",
            NumberType::SharedCost => "shared_cost",
            NumberType::Voip => "voip",
            NumberType::PersonalNumber => "personal_number",
            NumberType::Pager => "pager",
            NumberType::Uan => "uan",
            NumberType::Voicemail => "voicemail",
            NumberType::Unknown => "unknown",
        }
    }
}

impl FromStr for NumberType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NumberType::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = NumberType::ALL.iter().map(NumberType::as_str).collect();
                format!(
                    "unknown number type {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for NumberType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Channel {
    /// No channel prefix.
    Sms,
    /// `whatsapp:` prefix.
    Whatsapp,
    /// `rcs:` prefix: RCS without fallback to SMS, billed per message.
    Rcs,
}

/// A destination after normalization (SPEC §4 steps 1–3).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Destination {
    pub channel: Channel,
    /// "+998993941234": '+' then 1..=15 ASCII digits, nothing else.
    pub e164: String,
}

impl Destination {
    /// The value Twilio would echo in `to`: "+1555...", "whatsapp:+1555..."
    /// or "rcs:+1555...".
    pub fn display(&self) -> String {
        match self.channel {
            Channel::Sms => self.e164.clone(),
            Channel::Whatsapp => format!("whatsapp:{}", self.e164),
            Channel::Rcs => format!("rcs:{}", self.e164),
        }
    }

    /// `prefix:N`: '+' followed by the first N digits (country code included);
    /// the whole number if it has fewer digits.
    pub fn prefix(&self, n: usize) -> &str {
        // The fields are public, so do not trust e164 to be ASCII: fall back
        // to the whole value rather than slice inside a character.
        self.e164.get(..n.saturating_add(1)).unwrap_or(&self.e164)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::normalize;

    fn region(s: &str) -> Region {
        s.parse().expect("test region")
    }

    #[test]
    fn prefix_counts_digits_after_the_plus() {
        let dest = normalize("+998993941234", None).unwrap();
        assert_eq!(dest.prefix(8), "+99899394");
        assert_eq!(dest.prefix(3), "+998");
        assert_eq!(dest.prefix(0), "+");
        assert_eq!(dest.prefix(12), "+998993941234");
        assert_eq!(dest.prefix(40), "+998993941234");
        assert_eq!(dest.prefix(usize::MAX), "+998993941234");
    }

    // --- names ------------------------------------------------------------

    #[test]
    fn regions_parse_in_any_case_and_only_if_known() {
        assert_eq!(region("gb").as_str(), "GB");
        assert_eq!(region("Gg").to_string(), "GG");
        assert_eq!(region("UZ"), region("uz"));
        for bad in ["XX", "UK", "G", "GBR", "", "001", "G\u{0130}"] {
            let err = bad.parse::<Region>().unwrap_err();
            assert!(err.contains("unknown region"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn regions_deserialize_from_config_strings() {
        use serde::de::{value::Error, IntoDeserializer};
        let gb: Result<Region, Error> = Region::deserialize("gb".into_deserializer());
        assert_eq!(gb, Ok(region("GB")));
        let xx: Result<Region, Error> = Region::deserialize("XX".into_deserializer());
        assert!(xx.is_err());
        assert_eq!(String::from(region("uz")), "UZ");
    }

    #[test]
    fn number_type_names_round_trip() {
        use serde::de::{value::Error, IntoDeserializer};
        for kind in NumberType::ALL {
            assert_eq!(kind.as_str().parse::<NumberType>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
            let from_config: Result<NumberType, Error> =
                NumberType::deserialize(kind.as_str().into_deserializer());
            assert_eq!(from_config, Ok(kind));
        }
        let distinct: std::collections::HashSet<_> = NumberType::ALL.iter().collect();
        assert_eq!(distinct.len(), NumberType::ALL.len());
        let err = "premium".parse::<NumberType>().unwrap_err();
        assert!(
            err.contains("premium_rate") && err.contains("voicemail"),
            "{err}"
        );
        assert!("Mobile".parse::<NumberType>().is_err());
    }
}
