//! The HTTP handlers, one module per resource. Each extracts, makes one application call and
//! maps the result. [`crate::router`] mounts them and [`crate::openapi`] documents them; no
//! handler imports either.

pub mod admin;
pub mod analyst;
pub mod carts;
pub mod catalog;
pub mod ops;
pub mod orders;
pub mod payments;
pub mod support;
pub mod webhooks;
