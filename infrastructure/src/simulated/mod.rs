//! The simulated payment provider: a [`commands::PaymentGateway`] that behaves like Stripe test
//! mode, with no account and no network. The embedded default uses it unless a Stripe key is
//! configured; the AWS deployment's demo mode always does.

mod gateway;

pub use gateway::{charge_of, outcome_for, SimOutcome, SimulatedGateway};
