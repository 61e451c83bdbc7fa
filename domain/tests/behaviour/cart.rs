use crate::support::*;
use domain::{
    Cart, CartCommand, CartError, CartEvent, CartStatus, Currency, Money, MoneyError,
    MAX_CART_LINES,
};

fn opened() -> CartEvent {
    CartEvent::CartOpened {
        cart_id: cart_id("c1"),
        customer_id: customer_id("u1"),
    }
}

/// Opens cart "c1" for `customer`.
fn open(customer: &str) -> CartCommand {
    CartCommand::Open {
        cart_id: cart_id("c1"),
        customer_id: customer_id(customer),
    }
}

fn added(product: &str, quantity: u32, unit_price: Money) -> CartEvent {
    CartEvent::ItemAdded {
        cart_id: cart_id("c1"),
        product_id: product_id(product),
        quantity: qty(quantity),
        line_total: unit_price.multiply(quantity).expect("small total"),
        unit_price,
    }
}

fn add(product: &str, quantity: u32, unit_price: Money) -> CartCommand {
    CartCommand::AddItem {
        product_id: product_id(product),
        quantity: qty(quantity),
        unit_price,
    }
}

/// Checks the cart out into order "o1".
fn check_out() -> CartCommand {
    CartCommand::CheckOut {
        order_id: order_id("o1"),
    }
}

fn removed(product: &str) -> CartEvent {
    CartEvent::ItemRemoved {
        cart_id: cart_id("c1"),
        product_id: product_id(product),
    }
}

fn remove(product: &str) -> CartCommand {
    CartCommand::RemoveItem {
        product_id: product_id(product),
    }
}

#[test]
fn opening_a_new_cart_records_the_customer() {
    let cart = given::<Cart>([])
        .when(open("u1"))
        .then_expect(vec![opened()]);
    assert_eq!(cart.status, CartStatus::Open);
    assert_eq!(cart.customer_id, Some(customer_id("u1")));
    assert_eq!(cart.total(), None);
}

#[test]
fn opening_a_cart_twice_fails_because_it_already_exists() {
    given::<Cart>([opened()])
        .when(open("u2"))
        .then_expect_error(|e| matches!(e, CartError::AlreadyExists));
}

#[test]
fn adding_an_item_to_a_cart_that_was_never_opened_fails_with_not_found() {
    given::<Cart>([])
        .when(add("p1", 1, eur("1.00")))
        .then_expect_error(|e| matches!(e, CartError::NotFound));
}

#[test]
fn adding_an_item_records_the_exact_line_total() {
    let cart = given::<Cart>([opened()])
        .when(add("p1", 3, eur("19.99")))
        .then_expect(vec![CartEvent::ItemAdded {
            cart_id: cart_id("c1"),
            product_id: product_id("p1"),
            quantity: qty(3),
            unit_price: eur("19.99"),
            line_total: eur("59.97"),
        }]);
    assert_eq!(cart.currency, Some(Currency::EUR));
    assert_eq!(cart.total(), Some(eur("59.97")));
}

#[test]
fn adding_the_same_product_again_adds_to_its_quantity() {
    given::<Cart>([opened(), added("p1", 2, eur("5.00"))])
        .when(add("p1", 3, eur("5.00")))
        .then_expect(vec![added("p1", 5, eur("5.00"))]);
}

#[test]
fn adding_beyond_99_units_of_one_product_fails_with_quantity_too_large() {
    given::<Cart>([opened(), added("p1", 60, eur("1.00"))])
        .when(add("p1", 40, eur("1.00")))
        .then_expect_error(|e| {
            matches!(
                e,
                CartError::QuantityTooLarge {
                    requested: 100,
                    max: 99,
                    ..
                }
            )
        });
}

#[test]
fn adding_a_51st_distinct_product_fails_with_too_many_lines() {
    let history: Vec<CartEvent> = std::iter::once(opened())
        .chain((0..MAX_CART_LINES).map(|i| added(&format!("p{i}"), 1, eur("1.00"))))
        .collect();
    given::<Cart>(history.clone())
        .when(add("extra", 1, eur("1.00")))
        .then_expect_error(|e| matches!(e, CartError::TooManyLines { max: 50 }));
    // An existing line can still grow.
    given::<Cart>(history)
        .when(add("p0", 1, eur("1.00")))
        .then_expect(vec![added("p0", 2, eur("1.00"))]);
}

#[test]
fn adding_an_item_in_another_currency_fails_with_currency_mismatch() {
    given::<Cart>([opened(), added("p1", 1, eur("1.00"))])
        .when(add("p2", 1, usd("1.00")))
        .then_expect_error(|e| {
            matches!(
                e,
                CartError::CurrencyMismatch {
                    cart: Currency::EUR,
                    item: Currency::USD
                }
            )
        });
}

#[test]
fn an_emptied_cart_accepts_items_in_a_new_currency() {
    let cart = given::<Cart>([opened(), added("p1", 1, eur("1.00")), removed("p1")])
        .when(add("p2", 2, usd("3.00")))
        .then_expect(vec![added("p2", 2, usd("3.00"))]);
    assert_eq!(cart.total(), Some(usd("6.00")));
}

#[test]
fn adding_an_item_whose_line_total_overflows_fails_with_a_money_error() {
    let huge = money(i64::MAX / 2 + 1, Currency::EUR);
    given::<Cart>([opened()])
        .when(add("p1", 3, huge.clone()))
        .then_expect_error(|e| matches!(e, CartError::Money(MoneyError::Overflow)));
    // Two lines that each fit but whose sum would not are refused too.
    given::<Cart>([opened(), added("p1", 1, huge.clone())])
        .when(add("p2", 1, huge))
        .then_expect_error(|e| matches!(e, CartError::Money(MoneyError::Overflow)));
}

#[test]
fn changing_quantity_records_the_new_line_total() {
    let cart = given::<Cart>([opened(), added("p1", 2, eur("2.50"))])
        .when(CartCommand::ChangeQuantity {
            product_id: product_id("p1"),
            quantity: qty(7),
        })
        .then_expect(vec![CartEvent::ItemQuantityChanged {
            cart_id: cart_id("c1"),
            product_id: product_id("p1"),
            quantity: qty(7),
            line_total: eur("17.50"),
        }]);
    assert_eq!(cart.lines[&product_id("p1")].quantity, qty(7));
    assert_eq!(cart.total(), Some(eur("17.50")));
}

#[test]
fn changing_quantity_to_the_same_value_is_a_no_op() {
    given::<Cart>([opened(), added("p1", 2, eur("2.50"))])
        .when(CartCommand::ChangeQuantity {
            product_id: product_id("p1"),
            quantity: qty(2),
        })
        .then_expect_no_events();
}

#[test]
fn changing_quantity_of_a_product_not_in_the_cart_fails() {
    given::<Cart>([opened()])
        .when(CartCommand::ChangeQuantity {
            product_id: product_id("p9"),
            quantity: qty(1),
        })
        .then_expect_error(
            |e| matches!(e, CartError::ItemNotInCart { product_id } if product_id.as_str() == "p9"),
        );
}

#[test]
fn removing_an_item_drops_its_line() {
    let cart = given::<Cart>([
        opened(),
        added("p1", 1, eur("1.00")),
        added("p2", 1, eur("2.00")),
    ])
    .when(remove("p1"))
    .then_expect(vec![removed("p1")]);
    assert_eq!(cart.total(), Some(eur("2.00")));
}

#[test]
fn removing_a_product_not_in_the_cart_fails() {
    given::<Cart>([opened()])
        .when(remove("p1"))
        .then_expect_error(|e| matches!(e, CartError::ItemNotInCart { .. }));
}

#[test]
fn checkout_records_the_exact_total() {
    let cart = given::<Cart>([
        opened(),
        added("p1", 3, eur("0.10")),
        added("p2", 1, eur("0.20")),
    ])
    .when(check_out())
    .then_expect(vec![CartEvent::CartCheckedOut {
        cart_id: cart_id("c1"),
        order_id: order_id("o1"),
        total: eur("0.50"),
    }]);
    assert_eq!(cart.status, CartStatus::CheckedOut);
    assert_eq!(cart.order_id, Some(order_id("o1")));
}

#[test]
fn checkout_fails_when_cart_is_empty() {
    given::<Cart>([opened()])
        .when(check_out())
        .then_expect_error(|e| matches!(e, CartError::EmptyCart));
}

#[test]
fn a_checked_out_cart_refuses_every_command() {
    let history = [
        opened(),
        added("p1", 1, eur("1.00")),
        CartEvent::CartCheckedOut {
            cart_id: cart_id("c1"),
            order_id: order_id("o1"),
            total: eur("1.00"),
        },
    ];
    for command in [
        add("p2", 1, eur("1.00")),
        remove("p1"),
        check_out(),
        CartCommand::Abandon,
    ] {
        given::<Cart>(history.clone())
            .when(command)
            .then_expect_error(|e| matches!(e, CartError::AlreadyCheckedOut));
    }
}

#[test]
fn abandoning_an_open_cart_records_it() {
    let cart = given::<Cart>([opened()])
        .when(CartCommand::Abandon)
        .then_expect(vec![CartEvent::CartAbandoned {
            cart_id: cart_id("c1"),
        }]);
    assert_eq!(cart.status, CartStatus::Abandoned);
}

#[test]
fn an_abandoned_cart_refuses_checkout_and_new_items() {
    let history = [
        opened(),
        added("p1", 1, eur("1.00")),
        CartEvent::CartAbandoned {
            cart_id: cart_id("c1"),
        },
    ];
    given::<Cart>(history.clone())
        .when(check_out())
        .then_expect_error(|e| matches!(e, CartError::Abandoned));
    given::<Cart>(history)
        .when(add("p2", 1, eur("1.00")))
        .then_expect_error(|e| matches!(e, CartError::Abandoned));
}

#[test]
fn replaying_a_cart_history_rebuilds_its_lines() {
    let history = [
        opened(),
        added("p1", 2, eur("1.25")),
        added("p2", 1, eur("4.00")),
    ];
    let cart = fold::<Cart>(history.iter().cloned());
    assert_eq!(cart.lines.len(), 2);
    assert_eq!(cart.lines[&product_id("p1")].line_total, eur("2.50"));
    assert_eq!(cart.total(), Some(eur("6.50")));
}
