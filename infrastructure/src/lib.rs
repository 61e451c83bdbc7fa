#![forbid(unsafe_code)]
pub mod aws;
pub mod aws_fanout;
pub mod payments;
pub mod stripe;

pub mod sqlite;
pub mod sqlite_checkpoints;
pub mod sqlite_readmodel;
mod sqlite_wal;
