//! smsguard: a transparent proxy in front of the Twilio REST API that judges
//! every paid send against a policy and stops SMS traffic pumping.
#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod phone;
pub mod policy;
pub mod store;
pub mod twilio;
