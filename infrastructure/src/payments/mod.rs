//! Payment gateway adapters: the simulated gateway of the embedded default (Stripe comes with
//! the Stripe issue).

pub mod simulated;
