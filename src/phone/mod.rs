//! Destination numbers: turns the raw `To` of a Twilio send into a normalized
//! E.164 [`Destination`] (SPEC §4 steps 1–3) and classifies it with
//! libphonenumber metadata (step 4) behind a bounded cache.
//!
//! This module must never guess. The number it returns is the number Twilio
//! will be asked to reach, so anything it cannot read with certainty is a
//! [`NumberError`]: exotic digits, invisible characters, odd separators, a
//! second `+`, an extension. Twilio would quietly normalize some of those, and
//! an attacker could use the difference to slip past a rule keyed on the
//! number. It never panics on any input, and it knows nothing about policy.
//!
//! A file per job, everything re-exported here as `crate::phone::X`:
//! - `number.rs`: the values ([`Region`], [`NumberType`], [`Channel`],
//!   [`Destination`] with its display form and `prefix:N`);
//! - `normalize.rs`: the raw `To` to E.164 ([`normalize`], channel prefixes,
//!   the spellings accepted, [`NumberError`]);
//! - `classify.rs`: [`Classifier`] and its cache, the fast path over the
//!   compiled metadata, the library as the reference.

mod classify;
mod normalize;
mod number;

pub use classify::{Classification, Classifier};
pub use normalize::{normalize, NumberError};
pub use number::{Channel, Destination, NumberType, Region};
