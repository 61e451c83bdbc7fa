#![forbid(unsafe_code)]
//! The adapters of the backbone's ports, one module per technology:
//!
//! - [`sqlite`]: the embedded deployment: the event store, the read-model store and the
//!   process managers' checkpoints, each in its own SQLite file;
//! - [`aws`]: the AWS deployment: the DynamoDB event store, read-model store and feed index, the
//!   fan-out (DynamoDB Streams relay source, EventBridge, SQS) and provisioning;
//! - [`mail`]: the notification channels (outbox files and SMTP; SES is in [`aws`]);
//! - [`stripe`]: the Stripe payment gateway, webhook verification and the payment lookup;
//! - [`simulated`]: a payment provider that behaves like Stripe test mode, with no account and no
//!   network (the embedded default and the AWS demo).
//!
//! Adapters implement ports owned by `commands` and `projections`, and never read configuration
//! themselves: the composition root (the `backbone` binary) builds and hands them what they need.

pub mod aws;
pub mod mail;
pub mod simulated;
pub mod sqlite;
pub mod stripe;
