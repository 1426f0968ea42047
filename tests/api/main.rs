//! Integration tests: one binary, every test on its own server and database.

mod admin;
mod browser;
mod call_pages;
mod calls;
mod examples;
mod flow_checks;
mod health;
mod helpers;
mod ingest;
mod ingest_refusals;
mod openapi;
mod process;
mod wakeups;
