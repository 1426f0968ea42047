//! Precall: pre-call webhooks and flows for voice agents.

pub mod auth;
pub mod calls;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod connect;
pub mod demo;
pub mod domain;
pub mod drafts;
pub mod error;
pub mod http;
pub mod metrics;
pub mod phones;
pub mod serve;
pub mod startup;
pub mod store;
pub mod wakeups;
