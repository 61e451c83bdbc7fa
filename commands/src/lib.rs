#![forbid(unsafe_code)]
//! The application layer: ports (event store, payment gateway, clock, ids), the command service
//! that turns commands into atomic commits, and the process managers.

pub mod payload;
pub mod store;

#[cfg(any(test, feature = "testsuite"))]
pub mod conformance;

pub use payload::Payload;
pub use store::*;
pub mod consistency;
pub mod error;
pub mod fanout;
pub mod feed;
pub mod loader;
pub mod payments;
pub mod pii;
pub mod ports;
pub mod process;
pub mod service;
pub mod shop;
pub mod trace;
pub mod upcast;

pub use consistency::{Consistency, InvalidConsistency};
pub use error::*;
pub use fanout::*;
pub use feed::{BadCursor, FeedCursor};
pub use loader::{CachingLoader, LoadRequest, Loader, LockingLoader, StoreLoader};
pub use payments::*;
pub use pii::{
    CachedKeyStore, CustomerKeys, DataKey, Erasure, ErasureReceipt, KeyStore, MemoryKeyStore,
    PersonalDataStore, Pii, Pseudonyms,
};
pub use ports::*;
pub use process::*;
pub use service::*;
pub use shop::*;
pub use trace::TraceParent;
pub use upcast::*;

/// What the exported macros name through `$crate`, so their callers need no extra dependencies.
#[doc(hidden)]
pub mod __macro_support {
    pub use async_trait::async_trait;
    pub use chrono::{DateTime, Utc};
    pub use tokio::sync::Notify;
}
