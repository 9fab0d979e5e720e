//! smsguard: a transparent proxy in front of the Twilio REST API that judges
//! every paid send against a policy and stops SMS traffic pumping.
#![forbid(unsafe_code)]

pub mod admin;
pub mod base;
pub mod cli;
pub mod config;
pub mod guard;
pub mod net;
pub mod phone;
pub mod pipeline;
pub mod policy;
pub mod replay;
pub mod store;
pub mod telemetry;
pub mod twilio;
