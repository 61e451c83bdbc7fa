//! Given/when/then over cqrs-es's `TestFramework`, plus test fixtures.
//!
//! `given::<Cart>(events).when(command).then_expect(events)` hands the history and the command to
//! `TestFramework` (which folds with `Aggregate::apply` and decides with `Aggregate::handle`) and
//! compares the outcome. On top of what `TestFramework` checks, it returns the state after the
//! events, checks every emitted event survives the store's encoding (`payload_json` then
//! `decode`), and every error follows the message style.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use cqrs_es::test::TestFramework;
use domain::{
    CartId, Currency, CustomerId, Event, EventSourced, Money, OrderId, OrderLine, PaymentId,
    ProductId, Quantity, ShippingAddress,
};
use std::fmt::Debug;

/// Folds `events` from the default state with `Aggregate::apply`.
pub fn fold<A: EventSourced>(events: impl IntoIterator<Item = A::Event>) -> A {
    let mut state = A::default();
    for event in events {
        cqrs_es::Aggregate::apply(&mut state, event);
    }
    state
}

pub fn given<A: EventSourced>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let events: Vec<A::Event> = events.into_iter().collect();
    Given {
        state: fold::<A>(events.iter().cloned()),
        events,
    }
}

pub struct Given<A: EventSourced> {
    events: Vec<A::Event>,
    state: A,
}

impl<A: EventSourced> Given<A> {
    pub fn when(self, command: A::Command) -> Then<A> {
        let result = TestFramework::<A>::with(())
            .given(self.events)
            .when(command)
            .inspect_result();
        Then {
            state: self.state,
            result,
        }
    }

    pub fn state(&self) -> &A {
        &self.state
    }
}

pub struct Then<A: EventSourced> {
    state: A,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: EventSourced> Then<A>
where
    A::Error: Debug,
{
    /// Asserts the exact events and returns the state after applying them.
    #[track_caller]
    pub fn then_expect(self, expected: Vec<A::Event>) -> A {
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected, "unexpected events");
                let mut state = self.state;
                for event in events {
                    assert_survives_storage(&event);
                    cqrs_es::Aggregate::apply(&mut state, event);
                }
                state
            }
            Err(e) => panic!("expected events {expected:?}, got error {e:?}"),
        }
    }

    /// Asserts that the command was an idempotent no-op.
    #[track_caller]
    pub fn then_expect_no_events(self) -> A {
        self.then_expect(vec![])
    }

    /// Asserts an error that satisfies `matches` (typically a `matches!` closure).
    #[track_caller]
    pub fn then_expect_error(self, matches: impl FnOnce(&A::Error) -> bool) {
        match self.result {
            Ok(events) => panic!("expected an error, got events {events:?}"),
            Err(e) => {
                assert_error_style(&e);
                assert!(matches(&e), "unexpected error {e:?}");
            }
        }
    }
}

#[track_caller]
pub fn assert_survives_storage<E: Event>(event: &E) {
    let text = event.payload_json();
    let decoded = E::decode(event.event_type(), event.event_version(), &text)
        .unwrap_or_else(|e| panic!("{event:?} does not decode: {e}"));
    assert_eq!(&decoded, event);
    // The tree path (an upcast reads the payload as a tree) agrees with the text path.
    let tree: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{event:?}: payload_json is not JSON: {e}"));
    assert!(tree.is_object(), "{event:?}: payload is not an object");
}

#[track_caller]
pub fn assert_error_style(e: &dyn std::error::Error) {
    let message = e.to_string();
    assert!(
        message.chars().next().is_some_and(|c| !c.is_uppercase()),
        "error message starts upper case: {message}"
    );
    assert!(
        !message.ends_with('.'),
        "error message ends with a period: {message}"
    );
}

// ---- fixtures ----

pub fn cart_id(s: &str) -> CartId {
    CartId::parse(s).expect("valid cart id")
}
pub fn order_id(s: &str) -> OrderId {
    OrderId::parse(s).expect("valid order id")
}
pub fn payment_id(s: &str) -> PaymentId {
    PaymentId::parse(s).expect("valid payment id")
}
pub fn product_id(s: &str) -> ProductId {
    ProductId::parse(s).expect("valid product id")
}
pub fn customer_id(s: &str) -> CustomerId {
    CustomerId::parse(s).expect("valid customer id")
}
pub fn qty(n: u32) -> Quantity {
    Quantity::parse(n).expect("valid quantity")
}
pub fn eur(amount: &str) -> Money {
    Money::parse(amount, "EUR").expect("valid EUR amount")
}
pub fn usd(amount: &str) -> Money {
    Money::parse(amount, "USD").expect("valid USD amount")
}
pub fn money(minor: i64, currency: Currency) -> Money {
    Money::from_minor(minor, currency).expect("non-negative amount")
}
/// A fixed instant `secs` seconds after 2025-01-01T00:00:00Z.
pub fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_735_689_600 + secs, 0).expect("valid timestamp")
}

pub fn address() -> ShippingAddress {
    ShippingAddress {
        name: "Ada Lovelace".to_owned(),
        line1: "12 Analytical Street".to_owned(),
        line2: None,
        city: "London".to_owned(),
        postal_code: "N1 9GU".to_owned(),
        country: "GB".to_owned(),
    }
}

/// An order line whose total is exactly `unit_price * quantity`.
pub fn line(product: &str, quantity: u32, unit_price: Money) -> OrderLine {
    let line_total = unit_price.multiply(quantity).expect("small line total");
    OrderLine {
        product_id: product_id(product),
        name: format!("product {product}"),
        quantity: qty(quantity),
        unit_price,
        line_total,
    }
}

/// An event's stored payload, parsed.
pub fn payload_of<E: Event>(event: &E) -> serde_json::Value {
    serde_json::from_str(&event.payload_json()).expect("payload_json is JSON")
}
