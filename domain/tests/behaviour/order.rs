use crate::support::*;
use domain::{
    personal_event, personal_snapshot, Currency, Event, Money, MoneyError, Order, OrderCommand,
    OrderError, OrderEvent, OrderLine, OrderStatus, ShippedLine, StreamType, ERASED,
    MAX_ORDER_LINES,
};

fn lines() -> Vec<OrderLine> {
    vec![line("p1", 2, eur("10.00")), line("p2", 1, eur("4.99"))]
}

fn place_with(lines: Vec<OrderLine>, email: &str) -> OrderCommand {
    OrderCommand::Place {
        order_id: order_id("o1"),
        cart_id: cart_id("c1"),
        customer_id: customer_id("u1"),
        customer_email: email.to_owned(),
        shipping_address: address(),
        lines,
        payment_id: payment_id("pay1"),
        placed_at: at(0),
    }
}

fn place() -> OrderCommand {
    place_with(lines(), "ada@example.com")
}

fn placed() -> OrderEvent {
    OrderEvent::OrderPlaced {
        order_id: order_id("o1"),
        cart_id: cart_id("c1"),
        customer_id: customer_id("u1"),
        customer_email: "ada@example.com".to_owned(),
        shipping_address: address(),
        lines: lines(),
        total: eur("24.99"),
        payment_id: payment_id("pay1"),
        placed_at: at(0),
    }
}

fn paid() -> OrderEvent {
    OrderEvent::OrderPaid {
        order_id: order_id("o1"),
        payment_id: payment_id("pay1"),
        amount: eur("24.99"),
        at: at(10),
    }
}

fn shipped() -> OrderEvent {
    OrderEvent::OrderShipped {
        order_id: order_id("o1"),
        tracking: Some("TRACK1".to_owned()),
        lines: vec![
            ShippedLine {
                product_id: product_id("p1"),
                quantity: qty(2),
            },
            ShippedLine {
                product_id: product_id("p2"),
                quantity: qty(1),
            },
        ],
        at: at(20),
    }
}

fn cancelled(was_paid: bool) -> OrderEvent {
    OrderEvent::OrderCancelled {
        order_id: order_id("o1"),
        reason: "customer asked".to_owned(),
        was_paid,
        at: at(30),
    }
}

fn mark_paid(amount: Money) -> OrderCommand {
    OrderCommand::MarkPaid {
        payment_id: payment_id("pay1"),
        amount,
        at: at(10),
    }
}

fn refund(id: &str, amount: Money) -> OrderCommand {
    OrderCommand::Refund {
        refund_id: id.to_owned(),
        amount,
        at: at(40),
    }
}

fn refunded(id: &str, amount: Money, total: Money, full: bool) -> OrderEvent {
    OrderEvent::OrderRefunded {
        order_id: order_id("o1"),
        refund_id: id.to_owned(),
        amount,
        refunded_total: total,
        full,
        at: at(40),
    }
}

#[test]
fn placing_an_order_computes_the_total_and_awaits_payment() {
    let order = given::<Order>([]).when(place()).then_expect(vec![placed()]);
    assert_eq!(order.status, OrderStatus::AwaitingPayment);
    assert_eq!(order.total, Some(eur("24.99")));
    assert_eq!(order.placed_at, Some(at(0)));
}

#[test]
fn placing_an_order_twice_fails() {
    given::<Order>([placed()])
        .when(place())
        .then_expect_error(|e| matches!(e, OrderError::AlreadyExists));
}

#[test]
fn commands_on_a_missing_order_fail_with_not_found() {
    for command in [
        mark_paid(eur("1.00")),
        OrderCommand::Cancel {
            reason: "x".to_owned(),
            at: at(1),
        },
        OrderCommand::Expire {
            at: at(1),
            unpaid_for: chrono::Duration::zero(),
        },
        refund("r1", eur("1.00")),
    ] {
        given::<Order>([])
            .when(command)
            .then_expect_error(|e| matches!(e, OrderError::NotFound));
    }
}

#[test]
fn placing_an_order_without_lines_fails() {
    given::<Order>([])
        .when(place_with(vec![], "ada@example.com"))
        .then_expect_error(|e| matches!(e, OrderError::NoLines));
}

#[test]
fn placing_an_order_with_more_than_45_lines_fails() {
    let many: Vec<OrderLine> = (0..=MAX_ORDER_LINES)
        .map(|i| line(&format!("p{i}"), 1, eur("1.00")))
        .collect();
    given::<Order>([])
        .when(place_with(many[..MAX_ORDER_LINES].to_vec(), "a@b"))
        .then_expect(vec![OrderEvent::OrderPlaced {
            order_id: order_id("o1"),
            cart_id: cart_id("c1"),
            customer_id: customer_id("u1"),
            customer_email: "a@b".to_owned(),
            shipping_address: address(),
            lines: many[..MAX_ORDER_LINES].to_vec(),
            total: eur("45.00"),
            payment_id: payment_id("pay1"),
            placed_at: at(0),
        }]);
    given::<Order>([])
        .when(place_with(many, "a@b"))
        .then_expect_error(|e| matches!(e, OrderError::TooManyLines { max: 45 }));
}

#[test]
fn placing_an_order_with_a_wrong_line_total_fails() {
    let mut bad = lines();
    bad[1].line_total = eur("5.00");
    given::<Order>([])
        .when(place_with(bad, "ada@example.com"))
        .then_expect_error(|e| matches!(e, OrderError::LineTotalMismatch { product_id } if product_id.as_str() == "p2"));
}

#[test]
fn placing_an_order_with_mixed_currencies_fails() {
    let mixed = vec![line("p1", 1, eur("1.00")), line("p2", 1, usd("1.00"))];
    given::<Order>([])
        .when(place_with(mixed, "ada@example.com"))
        .then_expect_error(|e| {
            matches!(
                e,
                OrderError::Money(MoneyError::CurrencyMismatch {
                    left: Currency::EUR,
                    right: Currency::USD
                })
            )
        });
}

#[test]
fn placing_an_order_with_duplicate_products_fails() {
    let dup = vec![line("p1", 1, eur("1.00")), line("p1", 2, eur("1.00"))];
    given::<Order>([])
        .when(place_with(dup, "ada@example.com"))
        .then_expect_error(|e| matches!(e, OrderError::DuplicateLine { .. }));
}

#[test]
fn placing_a_free_order_fails_because_nothing_could_be_paid() {
    given::<Order>([])
        .when(place_with(vec![line("p1", 1, eur("0"))], "ada@example.com"))
        .then_expect_error(|e| matches!(e, OrderError::ZeroTotal));
}

#[test]
fn placing_an_order_with_an_invalid_email_fails() {
    let too_long = format!("{}@example.com", "a".repeat(250));
    for email in [
        "",
        "ada",
        "@example.com",
        "ada@",
        "ada @example.com",
        too_long.as_str(),
    ] {
        given::<Order>([])
            .when(place_with(lines(), email))
            .then_expect_error(|e| matches!(e, OrderError::InvalidEmail));
    }
}

#[test]
fn placing_an_order_with_an_invalid_country_fails() {
    let mut command = place();
    let OrderCommand::Place {
        shipping_address, ..
    } = &mut command
    else {
        unreachable!("place() builds a Place command")
    };
    shipping_address.country = "gbr".to_owned();
    given::<Order>([]).when(command).then_expect_error(|e| {
        matches!(e, OrderError::InvalidShippingAddress { field: "country" })
    });
}

#[test]
fn marking_an_awaiting_order_paid_records_the_payment() {
    let order = given::<Order>([placed()])
        .when(mark_paid(eur("24.99")))
        .then_expect(vec![paid()]);
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(order.paid, Some(eur("24.99")));
}

#[test]
fn marking_a_paid_order_paid_again_is_a_no_op() {
    given::<Order>([placed(), paid()])
        .when(mark_paid(eur("24.99")))
        .then_expect_no_events();
    given::<Order>([placed(), paid(), shipped()])
        .when(mark_paid(eur("24.99")))
        .then_expect_no_events();
}

#[test]
fn marking_paid_with_a_different_amount_fails() {
    given::<Order>([placed()])
        .when(mark_paid(eur("24.98")))
        .then_expect_error(|e| matches!(e, OrderError::AmountMismatch { .. }));
}

#[test]
fn marking_paid_with_another_payment_fails() {
    given::<Order>([placed()])
        .when(OrderCommand::MarkPaid {
            payment_id: payment_id("pay2"),
            amount: eur("24.99"),
            at: at(10),
        })
        .then_expect_error(|e| matches!(e, OrderError::PaymentMismatch { .. }));
}

#[test]
fn marking_a_cancelled_order_paid_is_an_invalid_transition() {
    given::<Order>([placed(), cancelled(false)])
        .when(mark_paid(eur("24.99")))
        .then_expect_error(|e| {
            matches!(
                e,
                OrderError::InvalidTransition {
                    from: OrderStatus::Cancelled,
                    action: "mark_paid"
                }
            )
        });
}

#[test]
fn marking_a_paid_then_cancelled_order_paid_again_is_a_no_op() {
    given::<Order>([placed(), paid(), cancelled(true)])
        .when(mark_paid(eur("24.99")))
        .then_expect_no_events();
}

#[test]
fn a_failed_payment_can_still_be_followed_by_success() {
    let failure = OrderEvent::OrderPaymentFailed {
        order_id: order_id("o1"),
        reason: "card declined".to_owned(),
        at: at(5),
    };
    let order = given::<Order>([placed()])
        .when(OrderCommand::RecordPaymentFailure {
            reason: "card declined".to_owned(),
            at: at(5),
        })
        .then_expect(vec![failure.clone()]);
    assert_eq!(order.status, OrderStatus::PaymentFailed);
    given::<Order>([placed(), failure])
        .when(mark_paid(eur("24.99")))
        .then_expect(vec![paid()]);
}

#[test]
fn a_payment_failure_after_success_is_ignored() {
    given::<Order>([placed(), paid()])
        .when(OrderCommand::RecordPaymentFailure {
            reason: "late webhook".to_owned(),
            at: at(50),
        })
        .then_expect_no_events();
}

#[test]
fn cancelling_a_paid_order_records_that_it_was_paid() {
    let order = given::<Order>([placed(), paid()])
        .when(OrderCommand::Cancel {
            reason: "customer asked".to_owned(),
            at: at(30),
        })
        .then_expect(vec![cancelled(true)]);
    assert_eq!(order.status, OrderStatus::Cancelled);
}

#[test]
fn cancelling_a_cancelled_order_is_a_no_op() {
    given::<Order>([placed(), cancelled(false)])
        .when(OrderCommand::Cancel {
            reason: "again".to_owned(),
            at: at(31),
        })
        .then_expect_no_events();
}

#[test]
fn cancelling_a_shipped_order_is_an_invalid_transition() {
    given::<Order>([placed(), paid(), shipped()])
        .when(OrderCommand::Cancel {
            reason: "too late".to_owned(),
            at: at(31),
        })
        .then_expect_error(|e| {
            matches!(
                e,
                OrderError::InvalidTransition {
                    from: OrderStatus::Shipped,
                    action: "cancel"
                }
            )
        });
}

#[test]
fn expiring_an_unpaid_order_records_the_expiry_once() {
    let expired = OrderEvent::OrderExpired {
        order_id: order_id("o1"),
        at: at(900),
    };
    let order = given::<Order>([placed()])
        .when(OrderCommand::Expire {
            at: at(900),
            unpaid_for: chrono::Duration::zero(),
        })
        .then_expect(vec![expired.clone()]);
    assert_eq!(order.status, OrderStatus::Expired);
    given::<Order>([placed(), expired])
        .when(OrderCommand::Expire {
            at: at(901),
            unpaid_for: chrono::Duration::zero(),
        })
        .then_expect_no_events();
}

#[test]
fn an_order_expires_only_once_unpaid_for_the_whole_time_to_live() {
    let ttl = chrono::Duration::seconds(900);
    given::<Order>([placed()])
        .when(OrderCommand::Expire {
            at: at(899),
            unpaid_for: ttl,
        })
        .then_expect_error(|e| matches!(e, OrderError::NotDue { due } if *due == at(900)));
    given::<Order>([placed()])
        .when(OrderCommand::Expire {
            at: at(900),
            unpaid_for: ttl,
        })
        .then_expect(vec![OrderEvent::OrderExpired {
            order_id: order_id("o1"),
            at: at(900),
        }]);
}

#[test]
fn a_time_to_live_past_the_end_of_time_never_expires_an_order() {
    given::<Order>([placed()])
        .when(OrderCommand::Expire {
            at: at(900),
            unpaid_for: chrono::Duration::MAX,
        })
        .then_expect_error(|e| matches!(e, OrderError::NotDue { .. }));
}

#[test]
fn expiring_a_paid_order_is_an_invalid_transition() {
    given::<Order>([placed(), paid()])
        .when(OrderCommand::Expire {
            at: at(900),
            unpaid_for: chrono::Duration::zero(),
        })
        .then_expect_error(|e| {
            matches!(
                e,
                OrderError::InvalidTransition {
                    from: OrderStatus::Paid,
                    action: "expire"
                }
            )
        });
}

#[test]
fn shipping_a_paid_order_lists_the_lines_to_commit() {
    let order = given::<Order>([placed(), paid()])
        .when(OrderCommand::Ship {
            tracking: Some("TRACK1".to_owned()),
            at: at(20),
        })
        .then_expect(vec![shipped()]);
    assert_eq!(order.status, OrderStatus::Shipped);
    assert_eq!(order.tracking.as_deref(), Some("TRACK1"));
}

#[test]
fn shipping_an_unpaid_order_is_an_invalid_transition() {
    given::<Order>([placed()])
        .when(OrderCommand::Ship {
            tracking: None,
            at: at(20),
        })
        .then_expect_error(|e| {
            matches!(
                e,
                OrderError::InvalidTransition {
                    from: OrderStatus::AwaitingPayment,
                    action: "ship"
                }
            )
        });
}

#[test]
fn delivering_a_shipped_order_records_delivery() {
    let order = given::<Order>([placed(), paid(), shipped()])
        .when(OrderCommand::Deliver { at: at(60) })
        .then_expect(vec![OrderEvent::OrderDelivered {
            order_id: order_id("o1"),
            at: at(60),
        }]);
    assert_eq!(order.status, OrderStatus::Delivered);
}

#[test]
fn delivering_an_order_that_was_not_shipped_fails() {
    given::<Order>([placed(), paid()])
        .when(OrderCommand::Deliver { at: at(60) })
        .then_expect_error(|e| {
            matches!(
                e,
                OrderError::InvalidTransition {
                    action: "deliver",
                    ..
                }
            )
        });
}

#[test]
fn partial_refunds_accumulate_until_the_order_is_fully_refunded() {
    let order = given::<Order>([placed(), paid(), shipped()])
        .when(refund("r1", eur("4.99")))
        .then_expect(vec![refunded("r1", eur("4.99"), eur("4.99"), false)]);
    assert_eq!(order.status, OrderStatus::Shipped);
    assert_eq!(order.refundable(), Some(eur("20.00")));

    let order = given::<Order>([
        placed(),
        paid(),
        shipped(),
        refunded("r1", eur("4.99"), eur("4.99"), false),
    ])
    .when(refund("r2", eur("20.00")))
    .then_expect(vec![refunded("r2", eur("20.00"), eur("24.99"), true)]);
    assert_eq!(order.status, OrderStatus::Refunded);
    assert_eq!(order.refunded, Some(eur("24.99")));
}

/// A paid order with one partial refund "r1" of `amount` (EUR).
fn partly_refunded(amount: &str) -> [OrderEvent; 3] {
    [
        placed(),
        paid(),
        refunded("r1", eur(amount), eur(amount), false),
    ]
}

#[test]
fn repeating_a_refund_id_is_a_no_op() {
    given::<Order>(partly_refunded("4.99"))
        .when(refund("r1", eur("4.99")))
        .then_expect_no_events();
}

#[test]
fn refunding_more_than_was_paid_fails_with_refund_exceeds_paid() {
    given::<Order>(partly_refunded("20.00"))
        .when(refund("r2", eur("5.00")))
        .then_expect_error(|e| {
            matches!(e, OrderError::RefundExceedsPaid { requested, refundable }
            if *requested == eur("5.00") && *refundable == eur("4.99"))
        });
}

#[test]
fn refunding_an_unpaid_order_is_an_invalid_transition() {
    given::<Order>([placed(), cancelled(false)])
        .when(refund("r1", eur("1.00")))
        .then_expect_error(|e| {
            matches!(
                e,
                OrderError::InvalidTransition {
                    action: "refund",
                    ..
                }
            )
        });
}

#[test]
fn refunding_a_cancelled_paid_order_in_full_marks_it_refunded() {
    let order = given::<Order>([placed(), paid(), cancelled(true)])
        .when(refund("r1", eur("24.99")))
        .then_expect(vec![refunded("r1", eur("24.99"), eur("24.99"), true)]);
    assert_eq!(order.status, OrderStatus::Refunded);
}

#[test]
fn refunding_zero_or_in_another_currency_fails() {
    given::<Order>([placed(), paid()])
        .when(refund("r1", eur("0")))
        .then_expect_error(|e| matches!(e, OrderError::ZeroRefund));
    given::<Order>([placed(), paid()])
        .when(refund("r1", usd("1.00")))
        .then_expect_error(|e| matches!(e, OrderError::Money(MoneyError::CurrencyMismatch { .. })));
    given::<Order>([placed(), paid()])
        .when(refund(" ", eur("1.00")))
        .then_expect_error(|e| matches!(e, OrderError::InvalidRefundId));
}

/// The declared personal fields are the stored names: every personal field and the subject are in
/// the payload and in the snapshot state, and the erased forms decode as the stored types.
#[test]
fn the_declared_personal_fields_are_the_stored_ones() {
    let event = placed();
    let payload = payload_of(&event);
    let snapshot = serde_json::to_value(fold::<Order>([event.clone()])).expect("state");
    for (shape, json) in [
        (
            personal_event(StreamType::Order, event.event_type()),
            &payload,
        ),
        (personal_snapshot(StreamType::Order), &snapshot),
    ] {
        let shape = shape.expect("declared");
        assert_eq!(json[shape.subject], "u1");
        let mut erased = json.clone();
        for field in shape.fields {
            assert!(!json[field.name].is_null(), "{} is stored", field.name);
            erased[field.name] = field.erased_as.value();
        }
        assert!(erased.to_string().contains(ERASED));
        assert!(!erased.to_string().contains("ada@example.com"));
        assert!(!erased.to_string().contains("Analytical"));
        if shape.event_type.is_some() {
            OrderEvent::decode(event.event_type(), 1, &erased.to_string())
                .expect("the erased event decodes");
        } else {
            serde_json::from_value::<Order>(erased).expect("the erased state decodes");
        }
    }
    assert!(personal_event(StreamType::Order, "OrderPaid").is_none());
    let opened = personal_event(StreamType::Cart, "CartOpened").expect("a subject's first event");
    assert!(opened.fields.is_empty());
    assert!(personal_snapshot(StreamType::Cart).is_none());
}
