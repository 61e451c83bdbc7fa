use crate::support::*;
use domain::{
    CartId, Currency, CustomerId, Decimal, IdError, Money, MoneyError, NotificationStatus,
    OrderError, OrderStatus, PaymentStatus, ProductId, ProductStatus, Quantity, QuantityError,
    MAX_QUANTITY,
};
use serde_json::json;
use std::cmp::Ordering;
use std::str::FromStr;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("valid decimal")
}

#[test]
fn currency_parse_accepts_table_codes_only() {
    assert_eq!(Currency::parse("EUR"), Ok(Currency::EUR));
    assert_eq!(Currency::parse("KWD").map(|c| c.code()), Ok("KWD"));
    for bad in ["eur", "EU", "EURO", "XXX", "", " EUR"] {
        assert_eq!(
            Currency::parse(bad),
            Err(MoneyError::UnknownCurrency(bad.to_owned())),
            "{bad:?}"
        );
    }
}

#[test]
fn currency_minor_units_follow_iso_4217() {
    for (code, minor) in [
        ("USD", 2),
        ("EUR", 2),
        ("HUF", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("ISK", 0),
        ("BHD", 3),
        ("KWD", 3),
        ("JOD", 3),
        ("TND", 3),
    ] {
        assert_eq!(
            Currency::parse(code).map(|c| c.minor_units()),
            Ok(minor),
            "{code}"
        );
    }
}

#[test]
fn currency_serializes_as_its_code_and_rejects_unknown_codes() {
    assert_eq!(serde_json::to_value(Currency::GBP).ok(), Some(json!("GBP")));
    assert!(serde_json::from_value::<Currency>(json!("ABC")).is_err());
    assert!(serde_json::from_value::<Currency>(json!("gbp")).is_err());
}

#[test]
fn money_is_stored_at_exactly_the_currency_scale() {
    let m = Money::new(dec("12.5"), Currency::EUR).expect("valid");
    assert_eq!(m.amount().to_string(), "12.50");
    assert_eq!(m.to_minor(), 1250);
    assert_eq!(m.to_string(), "12.50 EUR");
    // Trailing zeros beyond the scale are not extra precision.
    assert_eq!(Money::new(dec("12.500"), Currency::EUR), Ok(m));
    assert_eq!(
        Money::new(dec("500"), Currency::JPY).map(|m| m.to_string()),
        Ok("500 JPY".to_owned())
    );
    assert_eq!(
        Money::new(dec("1.5"), Currency::BHD).map(|m| m.to_minor()),
        Ok(1500)
    );
}

#[test]
fn money_with_more_decimals_than_the_currency_allows_is_rejected() {
    assert!(matches!(
        Money::new(dec("12.501"), Currency::EUR),
        Err(MoneyError::TooPrecise {
            currency: Currency::EUR,
            ..
        })
    ));
    assert!(matches!(
        Money::parse("1.5", "JPY"),
        Err(MoneyError::TooPrecise { .. })
    ));
}

#[test]
fn money_cannot_be_negative() {
    assert_eq!(
        Money::new(dec("-0.01"), Currency::EUR),
        Err(MoneyError::Negative)
    );
    assert_eq!(
        Money::from_minor(-1, Currency::EUR),
        Err(MoneyError::Negative)
    );
    assert_eq!(Money::parse("-3", "EUR"), Err(MoneyError::Negative));
    assert_eq!(
        eur("5.00").checked_sub(&eur("5.01")),
        Err(MoneyError::Negative)
    );
    assert_eq!(
        Money::new(dec("-0"), Currency::EUR),
        Ok(Money::zero(Currency::EUR))
    );
}

#[test]
fn money_parse_rejects_non_plain_amounts() {
    for bad in ["", "abc", "1e3", "1,50", " 1.00", "+1", "1.2.3"] {
        assert!(
            matches!(Money::parse(bad, "EUR"), Err(MoneyError::InvalidAmount(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        Money::parse("1.00", "XYZ"),
        Err(MoneyError::UnknownCurrency(_))
    ));
}

#[test]
fn money_beyond_the_minor_unit_range_overflows() {
    let max = money(i64::MAX, Currency::EUR);
    assert_eq!(max.checked_add(&eur("0.01")), Err(MoneyError::Overflow));
    assert_eq!(max.multiply(2), Err(MoneyError::Overflow));
    assert_eq!(
        Money::new(dec("100000000000000000000"), Currency::EUR),
        Err(MoneyError::Overflow)
    );
    assert_eq!(max.multiply(1), Ok(max.clone()));
}

#[test]
fn money_arithmetic_is_exact_within_one_currency() {
    assert_eq!(eur("0.10").checked_add(&eur("0.20")), Ok(eur("0.30")));
    assert_eq!(eur("1.00").checked_sub(&eur("0.01")), Ok(eur("0.99")));
    assert_eq!(eur("19.99").multiply(3), Ok(eur("59.97")));
    assert_eq!(eur("19.99").multiply(0), Ok(Money::zero(Currency::EUR)));
    assert!(Money::zero(Currency::EUR).is_zero());
    assert_eq!(eur("2.00").cmp_amount(&eur("10.00")), Ok(Ordering::Less));
}

#[test]
fn money_of_different_currencies_cannot_be_combined() {
    let mismatch = Err(MoneyError::CurrencyMismatch {
        left: Currency::EUR,
        right: Currency::USD,
    });
    assert_eq!(eur("1.00").checked_add(&usd("1.00")), mismatch);
    assert_eq!(eur("1.00").checked_sub(&usd("1.00")), mismatch);
    assert_eq!(
        eur("1.00").cmp_amount(&usd("1.00")).map(|_| ()),
        Err(MoneyError::CurrencyMismatch {
            left: Currency::EUR,
            right: Currency::USD
        })
    );
    assert!(Money::sum(Currency::EUR, [&eur("1.00"), &usd("1.00")]).is_err());
}

#[test]
fn money_sum_of_nothing_is_zero_of_the_currency() {
    assert_eq!(
        Money::sum(Currency::JPY, []),
        Ok(Money::zero(Currency::JPY))
    );
    assert_eq!(
        Money::sum(Currency::EUR, [&eur("1.10"), &eur("2.20")]),
        Ok(eur("3.30"))
    );
}

#[test]
fn money_serializes_with_a_string_amount_and_validates_on_read() {
    let value = serde_json::to_value(eur("12.5")).expect("serializes");
    assert_eq!(value, json!({ "amount": "12.50", "currency": "EUR" }));
    assert_eq!(
        serde_json::from_value::<Money>(value).ok(),
        Some(eur("12.50"))
    );
    for bad in [
        json!({ "amount": 12.5, "currency": "EUR" }),
        json!({ "amount": "12.501", "currency": "EUR" }),
        json!({ "amount": "-1.00", "currency": "EUR" }),
        json!({ "amount": "1.00", "currency": "EURO" }),
        json!({ "amount": "1.00" }),
    ] {
        assert!(
            serde_json::from_value::<Money>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn ids_accept_1_to_64_safe_characters() {
    assert_eq!(
        CartId::parse("cart_01-AB").map(|c| c.to_string()),
        Ok("cart_01-AB".to_owned())
    );
    assert!(ProductId::parse(&"x".repeat(64)).is_ok());
    for bad in [
        String::new(),
        "x".repeat(65),
        "a b".to_owned(),
        "a/b".to_owned(),
        "é".to_owned(),
    ] {
        assert_eq!(
            CustomerId::parse(&bad),
            Err(IdError {
                kind: "customer",
                value: bad.clone()
            })
        );
    }
}

#[test]
fn ids_serialize_as_plain_strings_and_reject_invalid_ones_on_read() {
    assert_eq!(serde_json::to_value(cart_id("c1")).ok(), Some(json!("c1")));
    assert_eq!(
        serde_json::from_value::<CartId>(json!("c1")).ok(),
        Some(cart_id("c1"))
    );
    assert!(serde_json::from_value::<CartId>(json!("c 1")).is_err());
    assert!(serde_json::from_value::<CartId>(json!("")).is_err());
    assert!(serde_json::from_value::<CartId>(json!(7)).is_err());
}

#[test]
fn quantity_accepts_1_to_99() {
    assert_eq!(Quantity::parse(1).map(Quantity::get), Ok(1));
    assert_eq!(Quantity::parse(MAX_QUANTITY).map(Quantity::get), Ok(99));
    assert_eq!(Quantity::parse(0), Err(QuantityError { value: 0 }));
    assert_eq!(Quantity::parse(100), Err(QuantityError { value: 100 }));
    assert_eq!(
        qty(60).checked_add(qty(40)),
        Err(QuantityError { value: 100 })
    );
    assert_eq!(qty(60).checked_add(qty(39)), Ok(qty(99)));
}

#[test]
fn quantity_serializes_as_a_number_and_is_validated_on_read() {
    assert_eq!(serde_json::to_value(qty(3)).ok(), Some(json!(3)));
    assert_eq!(
        serde_json::from_value::<Quantity>(json!(3)).ok(),
        Some(qty(3))
    );
    assert!(serde_json::from_value::<Quantity>(json!(0)).is_err());
    assert!(serde_json::from_value::<Quantity>(json!(100)).is_err());
    assert!(serde_json::from_value::<Quantity>(json!("3")).is_err());
}

/// Spoils one field of a valid address.
type Spoil = fn(&mut domain::ShippingAddress);

#[test]
fn shipping_address_validation_names_the_first_bad_field() {
    assert_eq!(address().validate(), Ok(()));
    let cases: [(&str, Spoil); 6] = [
        ("name", |a| a.name = "  ".to_owned()),
        ("line1", |a| a.line1 = String::new()),
        ("line2", |a| a.line2 = Some("x".repeat(201))),
        ("city", |a| a.city = "c".repeat(101)),
        ("postal_code", |a| a.postal_code = String::new()),
        ("country", |a| a.country = "G1".to_owned()),
    ];
    for (field, break_it) in cases {
        let mut a = address();
        break_it(&mut a);
        assert_eq!(
            a.validate(),
            Err(OrderError::InvalidShippingAddress { field })
        );
    }
}

/// Asserts that `name` gives each status its serialized (stored) form.
#[track_caller]
fn assert_names_are_serialized_forms<S: serde::Serialize + Copy>(
    statuses: &[S],
    name: fn(S) -> &'static str,
) {
    for &status in statuses {
        assert_eq!(serde_json::to_value(status).ok(), Some(json!(name(status))));
    }
}

#[test]
fn status_names_match_their_serialized_form() {
    assert_names_are_serialized_forms(&OrderStatus::ALL, OrderStatus::as_str);
    assert_names_are_serialized_forms(&PaymentStatus::ALL, PaymentStatus::as_str);
    assert_names_are_serialized_forms(
        &[
            ProductStatus::Draft,
            ProductStatus::Active,
            ProductStatus::Retired,
        ],
        ProductStatus::as_str,
    );
    assert_names_are_serialized_forms(
        &[
            NotificationStatus::Pending,
            NotificationStatus::Retrying,
            NotificationStatus::Delivered,
            NotificationStatus::Failed,
        ],
        NotificationStatus::as_str,
    );
}

#[test]
fn order_status_can_follow_only_the_documented_transitions() {
    use OrderStatus::*;
    assert!(Paid.can_follow(AwaitingPayment));
    assert!(AwaitingPayment.can_follow(PaymentFailed));
    assert!(Refunded.can_follow(Cancelled));
    assert!(Delivered.can_follow(Shipped));
    assert!(!AwaitingPayment.can_follow(Paid));
    assert!(!Paid.can_follow(Shipped));
    assert!(!Shipped.can_follow(Cancelled));
    assert!(!Paid.can_follow(Expired));
    // Expired and refunded are final.
    for next in OrderStatus::ALL {
        if next != Expired {
            assert!(!next.can_follow(Expired), "{next} after expired");
        }
        if next != Refunded {
            assert!(!next.can_follow(Refunded), "{next} after refunded");
        }
    }
}

#[test]
fn payment_status_ranks_increase_in_declared_order() {
    let ranks: Vec<u8> = PaymentStatus::ALL.iter().map(|s| s.rank()).collect();
    assert_eq!(ranks, (0..=9).collect::<Vec<u8>>());
    assert!(PaymentStatus::Succeeded.is_captured());
    assert!(!PaymentStatus::Canceled.is_captured());
}
