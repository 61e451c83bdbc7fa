//! Given/when/then tests of the four aggregates, value types and event decoding.

#[path = "../support/mod.rs"]
mod support;

mod cart;
mod events;
mod order;
mod payment;
mod product;
mod values;
