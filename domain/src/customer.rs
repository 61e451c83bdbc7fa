//! The customer aggregate: the erasures of one customer's personal data.
//!
//! A customer's personal data lives encrypted in other streams' events (see [`crate::personal`]);
//! erasing it means deleting the customer's data key, which the command layer does. This stream
//! is the audit trail: every erasure request that was carried out is one `CustomerErased` event,
//! with who asked and when. Read models that copied personal fields erase them when they see it.
//!
//! Erasing is idempotent in effect (a second erasure finds nothing left to erase), yet each one is
//! recorded: an order placed between two erasures is erased by the second.

use crate::aggregate::{aggregate, domain_events, StreamType};
use crate::ids::CustomerId;
use crate::text::trimmed_within;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest recorded subject of whoever requested an erasure, in characters.
pub const MAX_REQUESTER_CHARS: usize = 200;

/// State of one customer stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: Option<CustomerId>,
    /// How many erasures were recorded.
    pub erasures: u32,
    /// When the latest erasure happened.
    pub erased_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CustomerCommand {
    /// Records that the customer's personal data was erased (their data key is gone).
    Erase {
        customer_id: CustomerId,
        /// The subject of the staff member who asked.
        requested_by: String,
        at: DateTime<Utc>,
    },
}

domain_events! {
    #[derive(Debug, Clone, PartialEq)]
    pub enum CustomerEvent in event_names {
        CUSTOMER_ERASED = "CustomerErased", version 1 => CustomerErased {
            customer_id: CustomerId,
            requested_by: String,
            /// 1 for the first erasure of this customer, 2 for the next, ...
            erasure: u32,
            at: DateTime<Utc>,
        },
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomerError {
    #[error("requested_by must be 1 to 200 characters")]
    InvalidRequester,
    #[error("a command names customer {given}, but this stream is {stream}")]
    WrongCustomer {
        given: CustomerId,
        stream: CustomerId,
    },
}

impl Customer {
    pub fn decide(&self, command: CustomerCommand) -> Result<Vec<CustomerEvent>, CustomerError> {
        let CustomerCommand::Erase {
            customer_id,
            requested_by,
            at,
        } = command;
        if let Some(stream) = &self.id {
            if *stream != customer_id {
                return Err(CustomerError::WrongCustomer {
                    given: customer_id,
                    stream: stream.clone(),
                });
            }
        }
        let requested_by = trimmed_within(&requested_by, MAX_REQUESTER_CHARS)
            .ok_or(CustomerError::InvalidRequester)?;
        Ok(vec![CustomerEvent::CustomerErased {
            customer_id,
            requested_by,
            erasure: self.erasures.saturating_add(1),
            at,
        }])
    }

    pub fn evolve(&mut self, event: &CustomerEvent) {
        let CustomerEvent::CustomerErased {
            customer_id,
            erasure,
            at,
            ..
        } = event;
        self.id = Some(customer_id.clone());
        self.erasures = *erasure;
        self.erased_at = Some(*at);
    }
}

aggregate!(
    Customer,
    StreamType::Customer,
    CustomerCommand,
    CustomerEvent,
    CustomerError
);

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at() -> DateTime<Utc> {
        "2026-12-06T10:00:00Z".parse().unwrap()
    }

    fn erase(by: &str) -> CustomerCommand {
        CustomerCommand::Erase {
            customer_id: CustomerId::parse("cust-1").unwrap(),
            requested_by: by.to_owned(),
            at: at(),
        }
    }

    fn erased(erasure: u32) -> CustomerEvent {
        CustomerEvent::CustomerErased {
            customer_id: CustomerId::parse("cust-1").unwrap(),
            requested_by: "admin-1".to_owned(),
            erasure,
            at: at(),
        }
    }

    #[test]
    fn the_first_erasure_is_numbered_one() {
        TestFramework::<Customer>::with(())
            .given_no_previous_events()
            .when(erase(" admin-1 "))
            .then_expect_events(vec![erased(1)]);
    }

    #[test]
    fn every_later_erasure_is_recorded_too() {
        TestFramework::<Customer>::with(())
            .given(vec![erased(1)])
            .when(erase("admin-1"))
            .then_expect_events(vec![erased(2)]);
    }

    #[test]
    fn a_blank_requester_is_refused() {
        TestFramework::<Customer>::with(())
            .given_no_previous_events()
            .when(erase("  "))
            .then_expect_error(CustomerError::InvalidRequester);
    }

    #[test]
    fn another_customer_s_command_is_refused() {
        let mut state = Customer::default();
        state.evolve(&erased(1));
        let other = CustomerCommand::Erase {
            customer_id: CustomerId::parse("cust-2").unwrap(),
            requested_by: "admin-1".to_owned(),
            at: at(),
        };
        assert!(matches!(
            state.decide(other),
            Err(CustomerError::WrongCustomer { .. })
        ));
    }
}
