//! Test support shared with other crates' tests (feature `testsuite`): a `Vec`-backed event
//! store, the read-model port conformance suite, and event fixtures.

pub mod conformance;
pub mod event_store;
pub mod fixtures;

pub use event_store::VecEventStore;
pub mod properties;
