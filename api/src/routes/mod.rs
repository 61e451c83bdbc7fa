//! The HTTP handlers, one module per resource, and [`query`], the query parameters their reads
//! share. Each handler extracts, makes one application call and maps the result.
//! [`crate::router`] mounts them and [`crate::openapi`] documents them; no handler imports
//! either.

pub mod admin;
pub mod analyst;
pub mod carts;
pub mod catalog;
pub mod ops;
pub mod orders;
pub mod payments;
pub mod query;
pub mod support;
pub mod webhooks;
