//! TEMPORARY STUB
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Product { Messaging, Voice, Verify }
impl Product { pub fn as_str(&self) -> &'static str { match self { Product::Messaging => "messaging", Product::Voice => "voice", Product::Verify => "verify" } } }
