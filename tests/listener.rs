//! The listener's timeouts and caps (part of the fault suite).
mod common;
#[path = "faults/listener.rs"]
mod listener;
