//! Pure types and rules: no I/O here, so everything can be unit-tested in place.

pub mod conditions;
pub mod document;
pub mod duplicates;
pub mod flow;
pub mod ids;
pub mod layout;
pub mod payload;
pub mod phone;
pub mod runtime;
pub mod template;
pub mod text;
pub mod variables;
