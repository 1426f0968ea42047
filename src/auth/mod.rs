//! Secrets and people: API keys and runtime tokens, admin passwords, sessions, throttling.

pub mod keys;
pub mod password;
pub mod session;
pub mod throttle;
