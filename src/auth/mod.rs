//! Secrets and people: API keys and runtime tokens, webhook signatures, admin passwords,
//! sessions, throttling.

pub mod keys;
pub mod password;
pub mod session;
pub mod signing;
pub mod throttle;
