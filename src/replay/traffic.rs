//! Generated traffic for `smsguard demo`: a day of legitimate one-time-code
//! sends (with the people who confirm them) and pumping attacks of several
//! kinds, as replay records labelled by class.
//!
//! Labels start with `legitimate` or `attack`; the demo's verdict counts by
//! that first word.

use crate::clock::Millis;
use crate::config::Config;

use super::Record;

/// What to generate. Different seeds give different numbers, ranges, times
/// and client addresses; the held-out day also changes rates and mixes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    /// A day whose attack ranges, rates and mixes differ from the demo's,
    /// to check that a policy does not depend on the demo's numbers.
    pub held_out: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            seed: 20_231_122,
            held_out: false,
        }
    }
}

/// The day's sends starting at `day` (a UTC midnight), sorted by time.
/// `config` tells which countries and number types the policy allows, so
/// legitimate users only have numbers a real user of this app would have.
pub fn day(plan: &Plan, day: Millis, config: &Config) -> Result<Vec<Record>, String> {
    let _ = (plan, day, config);
    Err("traffic generation is not written yet".into())
}
