//! Integration tests: one binary, every test on its own server and database.

mod admin;
mod body_limits;
mod browser;
mod call_pages;
mod calls;
mod console_polish;
mod contract_gaps;
mod durability;
mod examples;
mod flow_checks;
mod health;
mod helpers;
mod ingest;
mod ingest_refusals;
mod key_rotation;
mod openapi;
mod precall_semantics;
mod process;
mod properties;
mod rate_limits;
mod retention;
mod routing_errors;
mod samples;
mod signing;
mod slow_clients;
mod wakeups;
