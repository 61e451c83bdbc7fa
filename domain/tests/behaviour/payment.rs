use crate::support::*;
use domain::{
    Currency, DisputeInfo, Event, Money, Payment, PaymentCommand, PaymentError, PaymentEvent,
    PaymentStatus,
};
use serde_json::json;

fn requested() -> PaymentEvent {
    PaymentEvent::PaymentRequested {
        payment_id: payment_id("pay1"),
        order_id: order_id("o1"),
        amount: eur("50.00"),
    }
}

/// Requests payment "pay1" of `amount` for order "o1".
fn request(amount: Money) -> PaymentCommand {
    PaymentCommand::Request {
        payment_id: payment_id("pay1"),
        order_id: order_id("o1"),
        amount,
    }
}

fn intent_created() -> PaymentEvent {
    PaymentEvent::PaymentIntentCreated {
        payment_id: payment_id("pay1"),
        intent_id: "pi_1".to_owned(),
    }
}

fn succeeded(amount: Money, secs: i64) -> PaymentEvent {
    PaymentEvent::PaymentSucceeded {
        payment_id: payment_id("pay1"),
        order_id: order_id("o1"),
        intent_id: "pi_1".to_owned(),
        charge_id: None,
        amount,
        at: at(secs),
    }
}

fn failed() -> PaymentEvent {
    PaymentEvent::PaymentFailed {
        payment_id: payment_id("pay1"),
        order_id: order_id("o1"),
        intent_id: "pi_1".to_owned(),
        reason: "card_declined".to_owned(),
        at: at(5),
    }
}

fn refunded(id: &str, amount: Money, total: Money, full: bool) -> PaymentEvent {
    PaymentEvent::PaymentRefunded {
        payment_id: payment_id("pay1"),
        order_id: order_id("o1"),
        refund_id: id.to_owned(),
        amount,
        refunded_total: total,
        full,
        at: at(100),
    }
}

fn record_succeeded(amount: Money) -> PaymentCommand {
    PaymentCommand::RecordSucceeded {
        intent_id: "pi_1".to_owned(),
        charge_id: None,
        amount,
        at: at(10),
    }
}

fn record_failed() -> PaymentCommand {
    PaymentCommand::RecordFailed {
        intent_id: "pi_1".to_owned(),
        reason: "card_declined".to_owned(),
        at: at(5),
    }
}

fn record_refunded(id: &str, total: Money) -> PaymentCommand {
    PaymentCommand::RecordRefunded {
        refund_id: id.to_owned(),
        amount_refunded_total: total,
        at: at(100),
    }
}

fn disputed(status: &str) -> PaymentCommand {
    disputed_for(status, None)
}

fn disputed_for(status: &str, amount: Option<Money>) -> PaymentCommand {
    PaymentCommand::RecordDisputed {
        dispute_id: "dp_1".to_owned(),
        reason: "fraudulent".to_owned(),
        status: status.to_owned(),
        amount,
        at: at(200),
    }
}

fn disputed_event(status: &str) -> PaymentEvent {
    disputed_event_for(status, None, None)
}

fn disputed_event_for(
    status: &str,
    amount: Option<Money>,
    withdrawn: Option<Money>,
) -> PaymentEvent {
    PaymentEvent::PaymentDisputed {
        payment_id: payment_id("pay1"),
        order_id: order_id("o1"),
        dispute_id: "dp_1".to_owned(),
        reason: "fraudulent".to_owned(),
        status: status.to_owned(),
        amount,
        withdrawn,
        at: at(200),
    }
}

#[test]
fn requesting_a_payment_records_the_amount_and_the_order() {
    let payment = given::<Payment>([])
        .when(request(eur("50.00")))
        .then_expect(vec![requested()]);
    assert_eq!(payment.status, PaymentStatus::Requested);
    assert_eq!(payment.amount, Some(eur("50.00")));
}

#[test]
fn requesting_a_zero_payment_fails() {
    given::<Payment>([])
        .when(request(eur("0.00")))
        .then_expect_error(|e| matches!(e, PaymentError::ZeroAmount));
}

#[test]
fn requesting_an_existing_payment_fails_and_a_missing_one_accepts_no_facts() {
    given::<Payment>([requested()])
        .when(request(eur("50.00")))
        .then_expect_error(|e| matches!(e, PaymentError::AlreadyExists));
    given::<Payment>([])
        .when(record_succeeded(eur("50.00")))
        .then_expect_error(|e| matches!(e, PaymentError::NotFound));
}

#[test]
fn recording_the_intent_moves_the_payment_to_intent_created_once() {
    let payment = given::<Payment>([requested()])
        .when(PaymentCommand::RecordIntentCreated {
            intent_id: "pi_1".to_owned(),
        })
        .then_expect(vec![intent_created()]);
    assert_eq!(payment.status, PaymentStatus::IntentCreated);
    assert_eq!(payment.intent_id.as_deref(), Some("pi_1"));
    given::<Payment>([requested(), intent_created()])
        .when(PaymentCommand::RecordIntentCreated {
            intent_id: "pi_1".to_owned(),
        })
        .then_expect_no_events();
}

#[test]
fn recording_the_intent_yields_a_version_2_event_without_a_client_secret() {
    given::<Payment>([requested()])
        .when(PaymentCommand::RecordIntentCreated {
            intent_id: "pi_1".to_owned(),
        })
        .then_expect(vec![intent_created()]);
    let event = intent_created();
    assert_eq!(event.event_version(), 2);
    // The stored payload names the intent only: the client secret stays with the provider.
    assert_eq!(
        payload_of(&event),
        json!({ "payment_id": "pay1", "intent_id": "pi_1" })
    );
}

#[test]
fn requires_action_then_processing_move_the_payment_forward() {
    let requires_action = PaymentEvent::PaymentRequiresAction {
        payment_id: payment_id("pay1"),
        intent_id: "pi_1".to_owned(),
    };
    given::<Payment>([requested(), intent_created()])
        .when(PaymentCommand::RecordRequiresAction {
            intent_id: "pi_1".to_owned(),
        })
        .then_expect(vec![requires_action.clone()]);
    let payment = given::<Payment>([requested(), intent_created(), requires_action])
        .when(PaymentCommand::RecordProcessing {
            intent_id: "pi_1".to_owned(),
        })
        .then_expect(vec![PaymentEvent::PaymentProcessing {
            payment_id: payment_id("pay1"),
            intent_id: "pi_1".to_owned(),
        }]);
    assert_eq!(payment.status, PaymentStatus::Processing);
}

#[test]
fn processing_reported_after_success_is_a_no_op() {
    given::<Payment>([requested(), intent_created(), succeeded(eur("50.00"), 10)])
        .when(PaymentCommand::RecordProcessing {
            intent_id: "pi_1".to_owned(),
        })
        .then_expect_no_events();
}

#[test]
fn success_is_recorded_with_the_captured_amount() {
    let payment = given::<Payment>([requested(), intent_created()])
        .when(record_succeeded(eur("50.00")))
        .then_expect(vec![succeeded(eur("50.00"), 10)]);
    assert_eq!(payment.status, PaymentStatus::Succeeded);
    assert_eq!(payment.captured, Some(eur("50.00")));
}

#[test]
fn success_after_failure_is_recorded_because_the_customer_retried() {
    given::<Payment>([requested(), intent_created(), failed()])
        .when(record_succeeded(eur("50.00")))
        .then_expect(vec![succeeded(eur("50.00"), 10)]);
}

#[test]
fn a_second_success_is_a_no_op() {
    given::<Payment>([requested(), intent_created(), succeeded(eur("50.00"), 10)])
        .when(record_succeeded(eur("50.00")))
        .then_expect_no_events();
}

#[test]
fn success_in_another_currency_or_above_the_request_fails() {
    given::<Payment>([requested(), intent_created()])
        .when(record_succeeded(usd("50.00")))
        .then_expect_error(|e| {
            matches!(
                e,
                PaymentError::CurrencyMismatch {
                    expected: Currency::EUR,
                    actual: Currency::USD
                }
            )
        });
    given::<Payment>([requested(), intent_created()])
        .when(record_succeeded(eur("50.01")))
        .then_expect_error(|e| matches!(e, PaymentError::AmountExceedsRequested { .. }));
}

#[test]
fn success_with_another_intent_fails_with_intent_mismatch() {
    given::<Payment>([requested(), intent_created()])
        .when(PaymentCommand::RecordSucceeded {
            intent_id: "pi_other".to_owned(),
            charge_id: None,
            amount: eur("50.00"),
            at: at(10),
        })
        .then_expect_error(|e| {
            matches!(e, PaymentError::IntentMismatch { expected, actual }
                if expected == "pi_1" && actual == "pi_other")
        });
}

#[test]
fn failure_is_recorded_and_a_repeated_failure_is_a_no_op() {
    let payment = given::<Payment>([requested(), intent_created()])
        .when(record_failed())
        .then_expect(vec![failed()]);
    assert_eq!(payment.status, PaymentStatus::Failed);
    assert_eq!(payment.failure_reason.as_deref(), Some("card_declined"));
    given::<Payment>([requested(), intent_created(), failed()])
        .when(record_failed())
        .then_expect_no_events();
}

#[test]
fn failure_after_success_is_ignored() {
    given::<Payment>([requested(), intent_created(), succeeded(eur("50.00"), 10)])
        .when(record_failed())
        .then_expect_no_events();
}

#[test]
fn a_retry_after_failure_cannot_move_the_payment_back() {
    given::<Payment>([requested(), intent_created(), failed()])
        .when(PaymentCommand::RecordProcessing {
            intent_id: "pi_1".to_owned(),
        })
        .then_expect_no_events();
}

#[test]
fn cancellation_before_success_is_recorded_and_after_success_ignored() {
    let cancel = PaymentCommand::RecordCanceled {
        intent_id: "pi_1".to_owned(),
        at: at(30),
    };
    let payment = given::<Payment>([requested(), intent_created()])
        .when(cancel.clone())
        .then_expect(vec![PaymentEvent::PaymentCanceled {
            payment_id: payment_id("pay1"),
            order_id: order_id("o1"),
            intent_id: "pi_1".to_owned(),
            at: at(30),
        }]);
    assert_eq!(payment.status, PaymentStatus::Canceled);
    given::<Payment>([requested(), intent_created(), succeeded(eur("50.00"), 10)])
        .when(cancel)
        .then_expect_no_events();
}

#[test]
fn cumulative_refunds_record_each_increment_until_full() {
    let base = [requested(), intent_created(), succeeded(eur("50.00"), 10)];
    let payment = given::<Payment>(base.clone())
        .when(record_refunded("re_1", eur("20.00")))
        .then_expect(vec![refunded("re_1", eur("20.00"), eur("20.00"), false)]);
    assert_eq!(payment.status, PaymentStatus::PartiallyRefunded);

    let mut history = base.to_vec();
    history.push(refunded("re_1", eur("20.00"), eur("20.00"), false));
    let payment = given::<Payment>(history)
        .when(record_refunded("re_2", eur("50.00")))
        .then_expect(vec![refunded("re_2", eur("30.00"), eur("50.00"), true)]);
    assert_eq!(payment.status, PaymentStatus::Refunded);
    assert_eq!(payment.refunded, Some(eur("50.00")));
}

#[test]
fn a_refund_total_already_recorded_is_a_no_op() {
    given::<Payment>([
        requested(),
        intent_created(),
        succeeded(eur("50.00"), 10),
        refunded("re_1", eur("20.00"), eur("20.00"), false),
    ])
    .when(record_refunded("re_1", eur("20.00")))
    .then_expect_no_events();
}

#[test]
fn a_refund_total_above_the_captured_amount_fails() {
    given::<Payment>([requested(), intent_created(), succeeded(eur("40.00"), 10)])
        .when(record_refunded("re_1", eur("40.01")))
        .then_expect_error(|e| {
            matches!(e, PaymentError::RefundExceedsAmount { requested, amount }
                if *requested == eur("40.01") && *amount == eur("40.00"))
        });
}

#[test]
fn a_refund_reported_before_success_records_the_success_first() {
    let payment = given::<Payment>([requested(), intent_created()])
        .when(record_refunded("re_1", eur("10.00")))
        .then_expect(vec![
            succeeded(eur("50.00"), 100),
            refunded("re_1", eur("10.00"), eur("10.00"), false),
        ]);
    assert_eq!(payment.status, PaymentStatus::PartiallyRefunded);
    assert_eq!(payment.captured, Some(eur("50.00")));
}

#[test]
fn a_refund_before_any_intent_fails_with_not_captured() {
    given::<Payment>([requested()])
        .when(record_refunded("re_1", eur("10.00")))
        .then_expect_error(|e| matches!(e, PaymentError::NotCaptured));
}

#[test]
fn disputes_are_recorded_once_per_status() {
    let base = [requested(), intent_created(), succeeded(eur("50.00"), 10)];
    let payment = given::<Payment>(base.clone())
        .when(disputed("needs_response"))
        .then_expect(vec![disputed_event("needs_response")]);
    assert_eq!(
        payment.dispute,
        Some(DisputeInfo {
            dispute_id: "dp_1".to_owned(),
            reason: "fraudulent".to_owned(),
            status: "needs_response".to_owned(),
            amount: None,
        })
    );
    // The status does not change: a dispute is a flag, not a status.
    assert_eq!(payment.status, PaymentStatus::Succeeded);

    let mut history = base.to_vec();
    history.push(disputed_event("needs_response"));
    given::<Payment>(history.clone())
        .when(disputed("needs_response"))
        .then_expect_no_events();
    let payment = given::<Payment>(history)
        .when(disputed("lost"))
        .then_expect(vec![disputed_event("lost")]);
    assert_eq!(payment.dispute.map(|d| d.status).as_deref(), Some("lost"));
}

#[test]
fn a_lost_dispute_records_the_amount_withdrawn_and_a_won_one_does_not() {
    let base = [requested(), intent_created(), succeeded(eur("50.00"), 10)];
    let opened = disputed_event_for("needs_response", Some(eur("50.00")), None);
    let payment = given::<Payment>(base.clone())
        .when(disputed_for("needs_response", Some(eur("50.00"))))
        .then_expect(vec![opened.clone()]);
    assert_eq!(payment.withdrawn, None);
    assert_eq!(payment.dispute.and_then(|d| d.amount), Some(eur("50.00")));

    let mut history = base.to_vec();
    history.push(opened);
    let payment = given::<Payment>(history.clone())
        .when(disputed_for("lost", Some(eur("50.00"))))
        .then_expect(vec![disputed_event_for(
            "lost",
            Some(eur("50.00")),
            Some(eur("50.00")),
        )]);
    assert_eq!(payment.withdrawn, Some(eur("50.00")));
    // A chargeback is not a refund: the payment's status and refunds stay.
    assert_eq!(payment.status, PaymentStatus::Succeeded);
    assert_eq!(payment.refunded, None);

    let payment = given::<Payment>(history)
        .when(disputed_for("won", Some(eur("50.00"))))
        .then_expect(vec![disputed_event_for("won", Some(eur("50.00")), None)]);
    assert_eq!(payment.withdrawn, None);
}

#[test]
fn a_disputed_amount_in_another_currency_or_above_the_payment_is_refused() {
    let base = [requested(), intent_created(), succeeded(eur("50.00"), 10)];
    given::<Payment>(base.clone())
        .when(disputed_for(
            "lost",
            Some(Money::parse("50.00", "USD").unwrap()),
        ))
        .then_expect_error(|e| matches!(e, PaymentError::CurrencyMismatch { .. }));
    given::<Payment>(base.clone())
        .when(disputed_for("lost", Some(eur("50.01"))))
        .then_expect_error(|e| matches!(e, PaymentError::InvalidDisputeAmount { .. }));
    given::<Payment>(base)
        .when(disputed_for("lost", Some(eur("0.00"))))
        .then_expect_error(|e| matches!(e, PaymentError::InvalidDisputeAmount { .. }));
}

#[test]
fn a_success_remembers_the_charge_that_took_the_money() {
    let event = PaymentEvent::PaymentSucceeded {
        payment_id: payment_id("pay1"),
        order_id: order_id("o1"),
        intent_id: "pi_1".to_owned(),
        charge_id: Some("ch_1".to_owned()),
        amount: eur("50.00"),
        at: at(10),
    };
    let payment = given::<Payment>([requested(), intent_created()])
        .when(PaymentCommand::RecordSucceeded {
            intent_id: "pi_1".to_owned(),
            charge_id: Some("ch_1".to_owned()),
            amount: eur("50.00"),
            at: at(10),
        })
        .then_expect(vec![event]);
    assert_eq!(payment.charge_id.as_deref(), Some("ch_1"));
    given::<Payment>([requested(), intent_created()])
        .when(PaymentCommand::RecordSucceeded {
            intent_id: "pi_1".to_owned(),
            charge_id: Some(" ".to_owned()),
            amount: eur("50.00"),
            at: at(10),
        })
        .then_expect_error(|e| matches!(e, PaymentError::InvalidReference { field: "charge_id" }));
}

#[test]
fn an_empty_provider_reference_is_rejected() {
    given::<Payment>([requested()])
        .when(PaymentCommand::RecordIntentCreated {
            intent_id: String::new(),
        })
        .then_expect_error(|e| matches!(e, PaymentError::InvalidReference { field: "intent_id" }));
}
