#![forbid(unsafe_code)]
pub mod payments;

pub mod sqlite;
pub mod sqlite_checkpoints;
pub mod sqlite_readmodel;
