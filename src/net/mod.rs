//! The network edge: the listener with its connection limits and timeouts
//! ([`server`]), the client that forwards to Twilio ([`upstream`]), and
//! TLS with the local CA that interception mints from ([`tls`]). Knows
//! nothing of policy; imports only `config` and `base`.

pub mod server;
pub mod tls;
pub mod upstream;
