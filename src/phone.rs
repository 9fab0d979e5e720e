//! TEMPORARY STUB: replaced by the real module.
use std::fmt;
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Region([u8; 2]);
impl Region {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}
impl std::str::FromStr for Region {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        if b.len() == 2 && b.iter().all(|c| c.is_ascii_alphabetic()) {
            Ok(Region([b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()]))
        } else {
            Err(format!("unknown region {s:?}"))
        }
    }
}
impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum NumberType { FixedLine, Mobile, FixedLineOrMobile, TollFree, PremiumRate, SharedCost, Voip, PersonalNumber, Pager, Uan, Voicemail, Unknown }
impl NumberType {
    pub fn as_str(&self) -> &'static str { "unknown" }
}
impl std::str::FromStr for NumberType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> { if s == "unknown" { Ok(NumberType::Unknown) } else { Ok(NumberType::PremiumRate) } }
}
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Channel { Sms, Whatsapp }
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Destination { pub channel: Channel, pub e164: String }
impl Destination {
    pub fn display(&self) -> String { self.e164.clone() }
    pub fn prefix(&self, n: usize) -> &str { &self.e164[..(n + 1).min(self.e164.len())] }
}
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum NumberError { Bad }
impl fmt::Display for NumberError { fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str("bad") } }
pub fn normalize(raw: &str, _r: Option<Region>) -> Result<Destination, NumberError> { Ok(Destination { channel: Channel::Sms, e164: raw.to_string() }) }
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Classification { pub calling_code: u16, pub region: Option<Region>, pub kind: NumberType, pub valid: bool }
pub struct Classifier;
impl Classifier {
    pub fn new(_c: u64) -> Self { Classifier }
    pub fn classify(&self, _e: &str) -> Classification { Classification { calling_code: 1, region: "US".parse().ok(), kind: NumberType::Mobile, valid: true } }
    pub fn cached(&self) -> u64 { 0 }
}
