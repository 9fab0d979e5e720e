//! The bottom of the crate: small parts every layer uses and that import
//! nothing of smsguard. Time ([`clock`]), a bounded map ([`lru`]) and the
//! app's context headers with the keys policy derives from them
//! ([`context`]).

pub mod clock;
pub mod context;
pub mod lru;

pub use lru::Lru;
