//! The Twilio wire contract: which requests are sends, strict form parsing,
//! the fake resources and error bodies. Knows nothing about policy.
pub mod fake;
pub mod form;
pub mod hosts;
pub mod responses;
pub mod routes;
