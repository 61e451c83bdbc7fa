use crate::support::*;
use domain::{
    event_names, CartEvent, DecodeError, Event, OrderEvent, PaymentEvent, ProductEvent, StreamType,
};
use serde_json::json;

#[test]
fn product_created_v1_is_upcast_with_category_uncategorized() {
    let v1 = json!({
        "product_id": "p1",
        "name": "Teapot",
        "price": { "amount": "24.00", "currency": "EUR" },
        "on_hand": 5
    });
    let event =
        ProductEvent::decode(event_names::PRODUCT_CREATED, 1, &v1.to_string()).expect("v1 decodes");
    assert_eq!(
        event,
        ProductEvent::ProductCreated {
            product_id: product_id("p1"),
            name: "Teapot".to_owned(),
            category: "uncategorized".to_owned(),
            price: eur("24.00"),
            on_hand: 5,
        }
    );
    assert_eq!(event.event_version(), 2);
}

#[test]
fn product_created_v2_keeps_its_category() {
    let event = ProductEvent::ProductCreated {
        product_id: product_id("p1"),
        name: "Teapot".to_owned(),
        category: "kitchen".to_owned(),
        price: eur("24.00"),
        on_hand: 5,
    };
    let decoded = ProductEvent::decode(event.event_type(), 2, &event.payload_json());
    assert_eq!(decoded, Ok(event));
}

#[test]
fn payment_succeeded_and_disputed_v1_are_upcast_without_the_fields_v2_added() {
    let v1 = json!({
        "payment_id": "pay1", "order_id": "o1", "intent_id": "pi_1",
        "amount": { "amount": "50.00", "currency": "EUR" },
        "at": "2026-01-01T00:00:00Z"
    });
    let event = PaymentEvent::decode(event_names::PAYMENT_SUCCEEDED, 1, &v1.to_string())
        .expect("v1 decodes");
    assert!(matches!(
        &event,
        PaymentEvent::PaymentSucceeded { charge_id: None, intent_id, .. } if intent_id == "pi_1"
    ));
    assert_eq!(event.event_version(), 2);
    let v1 = json!({
        "payment_id": "pay1", "order_id": "o1", "dispute_id": "dp_1",
        "reason": "fraudulent", "status": "lost", "at": "2026-01-01T00:00:00Z"
    });
    let event = PaymentEvent::decode(event_names::PAYMENT_DISPUTED, 1, &v1.to_string())
        .expect("v1 decodes");
    assert!(matches!(
        &event,
        PaymentEvent::PaymentDisputed { amount: None, withdrawn: None, status, .. } if status == "lost"
    ));
    assert_eq!(event.event_version(), 2);
}

#[test]
fn payment_intent_created_v1_is_upcast_without_its_client_secret() {
    let v1 = json!({
        "payment_id": "pay1", "intent_id": "pi_1",
        "client_secret_ref": "pi_1_secret_do_not_keep"
    });
    let event = PaymentEvent::decode(event_names::PAYMENT_INTENT_CREATED, 1, &v1.to_string())
        .expect("v1 decodes");
    assert_eq!(
        event,
        PaymentEvent::PaymentIntentCreated {
            payment_id: payment_id("pay1"),
            intent_id: "pi_1".to_owned(),
        }
    );
    assert_eq!(event.event_version(), 2);
    // Written again (as every read path re-encodes an upcast event), the secret is gone.
    let again = event.payload_json();
    assert!(!again.contains("secret"), "{again}");
    assert_eq!(
        PaymentEvent::decode(event_names::PAYMENT_INTENT_CREATED, 2, &again),
        Ok(event)
    );
}

#[test]
fn decoding_an_unknown_event_type_fails_with_unknown_type() {
    assert_eq!(
        CartEvent::decode("CartExploded", 1, &json!({}).to_string()),
        Err(DecodeError::UnknownType {
            event_type: "CartExploded".to_owned()
        })
    );
    // Names of another stream are unknown too.
    assert!(matches!(
        CartEvent::decode(event_names::ORDER_PLACED, 1, &json!({}).to_string()),
        Err(DecodeError::UnknownType { .. })
    ));
}

#[test]
fn decoding_a_newer_or_zero_version_fails_with_unsupported_version() {
    let payload = json!({ "cart_id": "c1" });
    assert_eq!(
        CartEvent::decode(event_names::CART_ABANDONED, 2, &payload.to_string()),
        Err(DecodeError::UnsupportedVersion {
            event_type: "CartAbandoned".to_owned(),
            version: 2
        })
    );
    assert!(matches!(
        CartEvent::decode(event_names::CART_ABANDONED, 0, &payload.to_string()),
        Err(DecodeError::UnsupportedVersion { version: 0, .. })
    ));
    assert!(matches!(
        ProductEvent::decode(event_names::PRODUCT_CREATED, 3, &payload.to_string()),
        Err(DecodeError::UnsupportedVersion { version: 3, .. })
    ));
}

#[test]
fn decoding_a_bad_payload_fails_with_malformed_and_the_stored_version() {
    let invalid_id = json!({ "cart_id": "not valid!" });
    assert!(matches!(
        CartEvent::decode(event_names::CART_ABANDONED, 1, &invalid_id.to_string()),
        Err(DecodeError::Malformed { version: 1, .. })
    ));
    let float_money = json!({
        "payment_id": "pay1", "order_id": "o1", "amount": { "amount": 12.5, "currency": "EUR" }
    });
    assert!(matches!(
        PaymentEvent::decode(event_names::PAYMENT_REQUESTED, 1, &float_money.to_string()),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        ProductEvent::decode(
            event_names::PRODUCT_CREATED,
            1,
            &json!("not an object").to_string()
        ),
        Err(DecodeError::Malformed { version: 1, .. })
    ));
}

#[test]
fn a_payload_holds_only_the_named_fields() {
    let event = OrderEvent::OrderExpired {
        order_id: order_id("o1"),
        at: at(0),
    };
    assert_eq!(
        payload_of(&event),
        json!({ "order_id": "o1", "at": "2025-01-01T00:00:00Z" })
    );
    let refund = PaymentEvent::PaymentRefunded {
        payment_id: payment_id("pay1"),
        order_id: order_id("o1"),
        refund_id: "re_1".to_owned(),
        amount: eur("5"),
        refunded_total: eur("5"),
        full: false,
        at: at(0),
    };
    assert_eq!(
        payload_of(&refund)["amount"],
        json!({ "amount": "5.00", "currency": "EUR" })
    );
}

#[test]
fn stream_types_round_trip_through_their_names() {
    for stream in StreamType::ALL {
        assert_eq!(StreamType::parse(stream.as_str()), Some(stream));
    }
    assert_eq!(StreamType::parse("shopper"), None);
}
