//! The aggregates driven through cqrs-es's own `TestFramework`.

mod support;

use cqrs_es::test::TestFramework;
use cqrs_es::{Aggregate, DomainEvent};
use domain::{
    Cart, CartCommand, CartError, CartEvent, Order, Payment, PaymentCommand, PaymentEvent, Product,
    ProductCommand, ProductError, ProductEvent,
};
use support::*;

fn cart_opened() -> CartEvent {
    CartEvent::CartOpened {
        cart_id: cart_id("c1"),
        customer_id: customer_id("u1"),
    }
}

fn product_created() -> ProductEvent {
    ProductEvent::ProductCreated {
        product_id: product_id("p1"),
        name: "Teapot".to_owned(),
        category: "kitchen".to_owned(),
        price: eur("24.00"),
        on_hand: 5,
    }
}

#[test]
fn cqrs_es_adds_an_item_to_an_open_cart_but_refuses_to_check_out_an_empty_one() {
    let open_cart = || TestFramework::<Cart>::with(()).given(vec![cart_opened()]);
    open_cart()
        .when(CartCommand::AddItem {
            product_id: product_id("p1"),
            quantity: qty(2),
            unit_price: eur("1.50"),
        })
        .then_expect_events(vec![CartEvent::ItemAdded {
            cart_id: cart_id("c1"),
            product_id: product_id("p1"),
            quantity: qty(2),
            unit_price: eur("1.50"),
            line_total: eur("3.00"),
        }]);
    open_cart()
        .when(CartCommand::CheckOut {
            order_id: order_id("o1"),
        })
        .then_expect_error(CartError::EmptyCart);
}

#[test]
fn cqrs_es_treats_a_redelivered_reservation_as_a_no_op() {
    let reserved = ProductEvent::StockReserved {
        product_id: product_id("p1"),
        order_id: order_id("o1"),
        quantity: 2,
        reserved: 2,
        available: 3,
    };
    let reserve = |history: Vec<ProductEvent>, order: &str, quantity: u32| {
        TestFramework::<Product>::with(())
            .given(history)
            .when(ProductCommand::ReserveStock {
                order_id: order_id(order),
                quantity,
            })
    };
    reserve(vec![product_created()], "o1", 2).then_expect_events(vec![reserved.clone()]);
    reserve(vec![product_created(), reserved], "o1", 2).then_expect_events(vec![]);
    reserve(vec![product_created()], "o2", 6).then_expect_error(ProductError::InsufficientStock {
        requested: 6,
        available: 5,
    });
}

#[test]
fn cqrs_es_sees_the_stored_names_versions_and_stream_types() {
    assert_eq!(Cart::aggregate_type(), "cart");
    assert_eq!(Order::aggregate_type(), "order");
    assert_eq!(Payment::aggregate_type(), "payment");
    assert_eq!(Product::aggregate_type(), "product");
    let requested = PaymentEvent::PaymentRequested {
        payment_id: payment_id("pay1"),
        order_id: order_id("o1"),
        amount: eur("5.00"),
    };
    assert_eq!(DomainEvent::event_type(&requested), "PaymentRequested");
    assert_eq!(DomainEvent::event_version(&requested), "1");
    assert_eq!(DomainEvent::event_version(&product_created()), "2");
    TestFramework::<Payment>::with(())
        .given_no_previous_events()
        .when(PaymentCommand::Request {
            payment_id: payment_id("pay1"),
            order_id: order_id("o1"),
            amount: eur("5.00"),
        })
        .then_expect_events(vec![requested]);
}

#[test]
fn cqrs_es_records_a_delivery_after_a_retry_and_then_refuses_another() {
    use domain::{
        AttemptOutcome, Notification, NotificationCommand, NotificationError, NotificationEvent,
        NotificationId, RetryPolicy,
    };
    let id = NotificationId::parse("n-1").unwrap();
    let at = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    let retrying = NotificationEvent::NotificationRetrying {
        notification_id: id.clone(),
        order_id: order_id("o1"),
        kind: "order_confirmed".to_owned(),
        channel: "smtp".to_owned(),
        attempt: 1,
        reason: "421 try later".to_owned(),
        at,
        next_attempt_at: at + chrono::Duration::minutes(1),
    };
    let record = NotificationCommand::RecordAttempt {
        notification_id: id.clone(),
        order_id: order_id("o1"),
        kind: "order_confirmed".to_owned(),
        channel: "smtp".to_owned(),
        outcome: AttemptOutcome::Sent {
            message_id: Some("m-1".to_owned()),
        },
        at,
        policy: RetryPolicy::default(),
    };
    let delivered = NotificationEvent::NotificationDelivered {
        notification_id: id,
        order_id: order_id("o1"),
        kind: "order_confirmed".to_owned(),
        channel: "smtp".to_owned(),
        attempt: 2,
        message_id: Some("m-1".to_owned()),
        at,
    };
    TestFramework::<Notification>::with(())
        .given(vec![retrying.clone()])
        .when(record.clone())
        .then_expect_events(vec![delivered.clone()]);
    TestFramework::<Notification>::with(())
        .given(vec![retrying, delivered])
        .when(record)
        .then_expect_error(NotificationError::AlreadyDelivered);
}
