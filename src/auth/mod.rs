//! Secrets: API keys for webhook senders and bearer tokens for the call runtime.

pub mod keys;
