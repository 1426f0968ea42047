//! Precall: pre-call webhooks and flows for voice agents.

pub mod auth;
pub mod domain;
