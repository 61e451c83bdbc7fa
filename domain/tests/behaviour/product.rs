use crate::support::*;
use domain::{Product, ProductCommand, ProductError, ProductEvent, ProductStatus};

fn created(on_hand: u32) -> ProductEvent {
    ProductEvent::ProductCreated {
        product_id: product_id("p1"),
        name: "Teapot".to_owned(),
        category: "kitchen".to_owned(),
        price: eur("24.00"),
        on_hand,
    }
}

fn reserved(order: &str, quantity: u32, reserved: u32, available: u32) -> ProductEvent {
    ProductEvent::StockReserved {
        product_id: product_id("p1"),
        order_id: order_id(order),
        quantity,
        reserved,
        available,
    }
}

fn released(order: &str, quantity: u32, reserved: u32, available: u32) -> ProductEvent {
    ProductEvent::StockReleased {
        product_id: product_id("p1"),
        order_id: order_id(order),
        quantity,
        reserved,
        available,
    }
}

fn committed(
    order: &str,
    quantity: u32,
    on_hand: u32,
    reserved: u32,
    available: u32,
) -> ProductEvent {
    ProductEvent::StockCommitted {
        product_id: product_id("p1"),
        order_id: order_id(order),
        quantity,
        on_hand,
        reserved,
        available,
    }
}

fn retired() -> ProductEvent {
    ProductEvent::ProductRetired {
        product_id: product_id("p1"),
    }
}

fn create(name: &str, category: &str) -> ProductCommand {
    ProductCommand::Create {
        product_id: product_id("p1"),
        name: name.to_owned(),
        category: category.to_owned(),
        price: eur("24.00"),
        initial_stock: 10,
    }
}

fn release(order: &str) -> ProductCommand {
    ProductCommand::ReleaseStock {
        order_id: order_id(order),
    }
}

fn commit(order: &str) -> ProductCommand {
    ProductCommand::CommitStock {
        order_id: order_id(order),
    }
}

fn reserve(order: &str, quantity: u32) -> ProductCommand {
    ProductCommand::ReserveStock {
        order_id: order_id(order),
        quantity,
    }
}

#[test]
fn creating_a_product_trims_its_name_and_starts_active() {
    let product = given::<Product>([])
        .when(create("  Teapot ", " kitchen"))
        .then_expect(vec![created(10)]);
    assert_eq!(product.status, ProductStatus::Active);
    assert_eq!(product.available(), 10);
    assert!(product.exists());
}

#[test]
fn creating_a_product_with_a_blank_or_too_long_name_fails() {
    given::<Product>([])
        .when(create("   ", "kitchen"))
        .then_expect_error(|e| matches!(e, ProductError::InvalidName));
    given::<Product>([])
        .when(create(&"x".repeat(201), "kitchen"))
        .then_expect_error(|e| matches!(e, ProductError::InvalidName));
}

#[test]
fn creating_a_product_with_a_too_long_category_fails() {
    given::<Product>([])
        .when(create("Teapot", &"c".repeat(101)))
        .then_expect_error(|e| matches!(e, ProductError::InvalidCategory));
}

#[test]
fn creating_an_existing_product_fails() {
    given::<Product>([created(1)])
        .when(create("Teapot", "kitchen"))
        .then_expect_error(|e| matches!(e, ProductError::AlreadyExists));
}

#[test]
fn commands_on_a_missing_product_fail_with_not_found() {
    for command in [
        ProductCommand::Restock { quantity: 1 },
        reserve("o1", 1),
        ProductCommand::Retire,
        ProductCommand::Reprice { price: eur("1.00") },
    ] {
        given::<Product>([])
            .when(command)
            .then_expect_error(|e| matches!(e, ProductError::NotFound));
    }
}

#[test]
fn repricing_records_the_old_and_the_new_price() {
    let product = given::<Product>([created(1)])
        .when(ProductCommand::Reprice {
            price: eur("19.50"),
        })
        .then_expect(vec![ProductEvent::ProductRepriced {
            product_id: product_id("p1"),
            old_price: eur("24.00"),
            price: eur("19.50"),
        }]);
    assert_eq!(product.price, Some(eur("19.50")));
}

#[test]
fn repricing_to_the_same_price_is_a_no_op() {
    given::<Product>([created(1)])
        .when(ProductCommand::Reprice {
            price: eur("24.00"),
        })
        .then_expect_no_events();
}

#[test]
fn repricing_or_restocking_a_retired_product_fails() {
    given::<Product>([created(1), retired()])
        .when(ProductCommand::Reprice { price: eur("1.00") })
        .then_expect_error(|e| matches!(e, ProductError::Retired));
    given::<Product>([created(1), retired()])
        .when(ProductCommand::Restock { quantity: 1 })
        .then_expect_error(|e| matches!(e, ProductError::Retired));
}

#[test]
fn restocking_adds_to_on_hand_and_reports_what_is_available() {
    let product = given::<Product>([created(10), reserved("o1", 4, 4, 6)])
        .when(ProductCommand::Restock { quantity: 5 })
        .then_expect(vec![ProductEvent::ProductRestocked {
            product_id: product_id("p1"),
            quantity: 5,
            on_hand: 15,
            available: 11,
        }]);
    assert_eq!(product.available(), 11);
}

#[test]
fn restocking_zero_or_more_than_a_million_units_fails() {
    for quantity in [0, 1_000_001] {
        given::<Product>([created(1)])
            .when(ProductCommand::Restock { quantity })
            .then_expect_error(
                |e| matches!(e, ProductError::InvalidQuantity { quantity: q } if *q == quantity),
            );
    }
}

#[test]
fn restocking_past_the_largest_stock_fails_with_stock_overflow() {
    given::<Product>([created(u32::MAX - 10)])
        .when(ProductCommand::Restock { quantity: 11 })
        .then_expect_error(|e| matches!(e, ProductError::StockOverflow));
}

#[test]
fn reserving_stock_reduces_what_is_available() {
    let product = given::<Product>([created(10)])
        .when(reserve("o1", 3))
        .then_expect(vec![reserved("o1", 3, 3, 7)]);
    assert_eq!(product.reserved(), 3);
    assert_eq!(product.available(), 7);
    assert_eq!(product.on_hand, 10);
}

#[test]
fn checkout_fails_when_stock_is_insufficient() {
    given::<Product>([created(10), reserved("o1", 8, 8, 2)])
        .when(reserve("o2", 3))
        .then_expect_error(|e| {
            matches!(
                e,
                ProductError::InsufficientStock {
                    requested: 3,
                    available: 2
                }
            )
        });
}

#[test]
fn reserving_again_for_the_same_order_is_a_no_op() {
    given::<Product>([created(10), reserved("o1", 3, 3, 7)])
        .when(reserve("o1", 3))
        .then_expect_no_events();
}

#[test]
fn reserving_zero_units_fails() {
    given::<Product>([created(10)])
        .when(reserve("o1", 0))
        .then_expect_error(|e| matches!(e, ProductError::InvalidQuantity { quantity: 0 }));
}

#[test]
fn releasing_a_reservation_makes_its_units_available_again() {
    let product = given::<Product>([created(10), reserved("o1", 3, 3, 7)])
        .when(release("o1"))
        .then_expect(vec![released("o1", 3, 0, 10)]);
    assert!(product.reservations.is_empty());
}

#[test]
fn releasing_or_committing_without_a_reservation_is_a_no_op() {
    for command in [release("o1"), commit("o1")] {
        given::<Product>([created(10)])
            .when(command)
            .then_expect_no_events();
    }
}

#[test]
fn committing_a_reservation_reduces_on_hand_and_keeps_available() {
    let product = given::<Product>([
        created(10),
        reserved("o1", 3, 3, 7),
        reserved("o2", 2, 5, 5),
    ])
    .when(commit("o1"))
    .then_expect(vec![committed("o1", 3, 7, 2, 5)]);
    assert_eq!(product.on_hand, 7);
    assert_eq!(product.available(), 5);
}

#[test]
fn retiring_twice_is_a_no_op() {
    let product = given::<Product>([created(1)])
        .when(ProductCommand::Retire)
        .then_expect(vec![retired()]);
    assert_eq!(product.status, ProductStatus::Retired);
    given::<Product>([created(1), retired()])
        .when(ProductCommand::Retire)
        .then_expect_no_events();
}

#[test]
fn a_retired_product_refuses_new_reservations_but_settles_existing_ones() {
    let history = [created(10), reserved("o1", 3, 3, 7), retired()];
    given::<Product>(history.clone())
        .when(reserve("o2", 1))
        .then_expect_error(|e| matches!(e, ProductError::Retired));
    given::<Product>(history.clone())
        .when(release("o1"))
        .then_expect(vec![released("o1", 3, 0, 10)]);
    given::<Product>(history)
        .when(commit("o1"))
        .then_expect(vec![committed("o1", 3, 7, 0, 7)]);
}
