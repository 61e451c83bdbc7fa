//! Stripe webhooks: the Stripe-authored fixtures verify and parse (typed or lenient), bad
//! signatures are refused before parsing, and applying facts through `commands::Payments`
//! against the real SQLite store is idempotent, safe under concurrent delivery and insensitive
//! to delivery order.

mod stripe_support;

use commands::{
    CommandError, IgnoredReason, PaymentRefs, ProviderEvent, ProviderFact, RefundReceipt,
    WebhookOutcome,
};
use domain::{OrderStatus, PaymentStatus};
use infrastructure::simulated::SimulatedGateway;
use infrastructure::stripe::testing::{
    charge_refunded_event, dispute_event, payment_intent_event, DisputeSpec, IntentSpec,
};
use infrastructure::stripe::{
    parse_verified, sign_for_test, ParsedWith, StripeEvent, WebhookError, WebhookVerifier,
};
use proptest::prelude::*;
use std::sync::Arc;
use stripe_support::*;

fn refs(payment_id: Option<&str>, order_id: Option<&str>) -> PaymentRefs {
    PaymentRefs {
        payment_id: payment_id.map(str::to_string),
        order_id: order_id.map(str::to_string),
    }
}

// ----- parsing --------------------------------------------------------------------------------

#[test]
fn every_payment_intent_and_charge_fixture_verifies_and_parses_into_the_right_fact() {
    let none = || refs(None, None);
    let cases: Vec<(&str, ParsedWith, ProviderFact)> = vec![
        (
            "02_payment_intent.succeeded.json",
            ParsedWith::Typed,
            ProviderFact::IntentSucceeded {
                intent_id: "pi_1PgafyB7WZ01zgkWSjxsAJo3".into(),
                charge_id: None,
                amount_minor: 1099,
                currency: "usd".into(),
                refs: none(),
            },
        ),
        (
            "03_payment_intent.payment_failed.json",
            ParsedWith::Typed,
            ProviderFact::IntentFailed {
                intent_id: "pi_1PgafyB7WZ01zgkWSjxsAJo3".into(),
                reason: "generic_decline".into(),
                refs: none(),
            },
        ),
        (
            "04_payment_intent.canceled.json",
            ParsedWith::Typed,
            ProviderFact::IntentCanceled {
                intent_id: "pi_1PgafyB7WZ01zgkWSjxsAJo3".into(),
                refs: none(),
            },
        ),
        (
            "05_charge.refunded.json",
            ParsedWith::Typed,
            ProviderFact::ChargeRefunded {
                intent_id: None,
                charge_id: "ch_1PgafuB7WZ01zgkWXYmPNZs8".into(),
                amount_refunded_minor: 100,
                currency: "usd".into(),
                refund_id: "ch_1PgafuB7WZ01zgkWXYmPNZs8:refunded:100".into(),
                refs: none(),
            },
        ),
        (
            "06_charge.dispute.created.json",
            ParsedWith::Typed,
            ProviderFact::DisputeCreated(commands::Dispute {
                dispute_id: "dp_1Pgc71B7WZ01zgkWMevJiAUx".into(),
                intent_id: None,
                charge_id: Some("ch_1PgafuB7WZ01zgkWXYmPNZs8".into()),
                reason: "general".into(),
                status: "warning_needs_response".into(),
                amount_minor: Some(1000),
                currency: Some("usd".into()),
                refs: none(),
            }),
        ),
        (
            "08_payment_intent.succeeded_api_2020-08-27.json",
            ParsedWith::Typed,
            ProviderFact::IntentSucceeded {
                intent_id: "pi_1LL567JLNIusEpbUEt3OrQiP".into(),
                charge_id: None,
                amount_minor: 1099,
                currency: "usd".into(),
                refs: none(),
            },
        ),
        (
            "09_charge.refunded_api_2020-08-27.json",
            ParsedWith::Typed,
            ProviderFact::ChargeRefunded {
                intent_id: None,
                charge_id: "ch_1LL564JLNIusEpbUy8y6fHvg".into(),
                amount_refunded_minor: 0,
                currency: "usd".into(),
                refund_id: "ch_1LL564JLNIusEpbUy8y6fHvg:refunded:0".into(),
                refs: none(),
            },
        ),
        (
            "11_charge.refunded_2012_stripe-java.json",
            ParsedWith::Lenient,
            ProviderFact::ChargeRefunded {
                intent_id: None,
                charge_id: "ch_00000000000000".into(),
                amount_refunded_minor: 1000,
                currency: "usd".into(),
                refund_id: "ch_00000000000000:refunded:1000".into(),
                refs: none(),
            },
        ),
        (
            "12_payment_intent.succeeded_localstripe_api_2017-08-15.json",
            ParsedWith::Lenient,
            ProviderFact::IntentSucceeded {
                intent_id: "pi_HE0DU0MUTEc49a".into(),
                charge_id: Some("ch_aP3yvHvykOocQY".into()),
                amount_minor: 1999,
                currency: "eur".into(),
                refs: refs(None, Some("ord_1")),
            },
        ),
        (
            "13_payment_intent.payment_failed_localstripe.json",
            ParsedWith::Lenient,
            ProviderFact::IntentFailed {
                intent_id: "pi_RLk7Mrxav7Ezu8".into(),
                reason: "card_declined".into(),
                refs: none(),
            },
        ),
    ];
    for (name, parser, fact) in cases {
        let body = fixture(name);
        let raw: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let event = deliver(&body);
        assert_eq!(event.fact, fact, "{name}");
        assert_eq!(event.parsed_with, parser, "{name}");
        assert_eq!(event.id, raw["id"].as_str().unwrap(), "{name}");
        assert_eq!(event.event_type, raw["type"].as_str().unwrap(), "{name}");
        assert_eq!(event.created, raw["created"].as_i64().unwrap(), "{name}");
        assert!(!event.livemode, "{name}");
    }
}

#[test]
fn other_event_types_are_verified_and_ignored_not_dropped() {
    for (name, event_type) in [
        (
            "01_plan_created_fixture_event_verbatim.json",
            "plan.created",
        ),
        (
            "07_checkout.session.completed.json",
            "checkout.session.completed",
        ),
        (
            "10_setup_intent.created_docs_api_2019-02-19.json",
            "setup_intent.created",
        ),
    ] {
        let event = deliver(&fixture(name));
        assert_eq!(
            event.fact,
            ProviderFact::Ignored {
                event_type: event_type.into()
            },
            "{name}"
        );
    }
}

#[test]
fn an_event_type_we_handle_with_an_unreadable_object_is_refused_loudly() {
    let body = br#"{"id":"evt_x","type":"payment_intent.succeeded","created":1,"data":{"object":{"id":"pi_1"}}}"#;
    assert!(matches!(
        parse_verified(body, 1),
        Err(WebhookError::Unparseable(_))
    ));
}

// ----- verification ---------------------------------------------------------------------------

/// What a verifier of [`SECRET`] says about `body` under `header`, now.
fn verify(header: Option<&str>, body: &[u8]) -> Result<i64, WebhookError> {
    WebhookVerifier::new([SECRET])
        .unwrap()
        .verify(header, body, now())
}

/// [`verify`], then the parse of the verified body.
fn verify_and_parse(header: Option<&str>, body: &[u8]) -> Result<StripeEvent, WebhookError> {
    WebhookVerifier::new([SECRET])
        .unwrap()
        .verify_and_parse(header, body, now())
}

/// The verifier found no signature by one of its secrets over exactly this body.
#[track_caller]
fn assert_no_matching_signature<T: std::fmt::Debug>(result: Result<T, WebhookError>) {
    match result {
        Err(WebhookError::NoMatchingSignature) => {}
        other => panic!("expected NoMatchingSignature, got {other:?}"),
    }
}

/// A `Stripe-Signature` header for `body` by `secret`, timestamped `offset` seconds from now.
fn signed(secret: &str, offset: i64, body: &[u8]) -> String {
    sign_for_test(secret, now().timestamp() + offset, body)
}

#[test]
fn a_tampered_body_is_refused() {
    let body = fixture("02_payment_intent.succeeded.json");
    let header = signed(SECRET, 0, &body);
    let mut tampered = body.clone();
    let at = tampered.windows(4).position(|w| w == b"1099").unwrap();
    tampered[at] = b'9';
    assert_no_matching_signature(verify_and_parse(Some(&header), &tampered));
    // A single added byte is enough.
    let mut longer = body.clone();
    longer.push(b'\n');
    assert_no_matching_signature(verify(Some(&header), &longer));
}

#[test]
fn a_stale_or_future_timestamp_is_refused_within_300_seconds_accepted() {
    let body = fixture("02_payment_intent.succeeded.json");
    for (offset, ok) in [(-301, false), (-299, true), (299, true), (301, false)] {
        let header = signed(SECRET, offset, &body);
        let result = verify(Some(&header), &body);
        if ok {
            assert!(result.is_ok(), "offset {offset}: {result:?}");
        } else {
            assert!(
                matches!(result, Err(WebhookError::StaleTimestamp { .. })),
                "offset {offset}: {result:?}"
            );
        }
    }
}

#[test]
fn a_missing_or_malformed_header_is_refused() {
    let body = fixture("02_payment_intent.succeeded.json");
    assert_eq!(
        verify_and_parse(None, &body),
        Err(WebhookError::MissingHeader)
    );
    assert!(matches!(
        verify_and_parse(Some("v1=abc"), &body),
        Err(WebhookError::MalformedHeader(_))
    ));
}

#[test]
fn a_signature_by_another_secret_is_refused() {
    let body = fixture("02_payment_intent.succeeded.json");
    let header = signed("whsec_someone_else", 0, &body);
    assert_no_matching_signature(verify_and_parse(Some(&header), &body));
}

#[test]
fn rotation_accepts_either_configured_secret_and_any_of_several_signatures() {
    let body = fixture("03_payment_intent.payment_failed.json");
    let t = now().timestamp();
    let both = WebhookVerifier::new(["whsec_old", "whsec_new"]).unwrap();
    let by_old = sign_for_test("whsec_old", t, &body);
    let by_new = sign_for_test("whsec_new", t, &body);
    assert!(both.verify(Some(&by_old), &body, now()).is_ok());
    assert!(both.verify(Some(&by_new), &body, now()).is_ok());
    // Stripe sends one v1 per active secret while rolling; one match is enough.
    let stranger = sign_for_test("whsec_stranger", t, &body);
    let v1 = |h: &str| h.split_once(",v1=").unwrap().1.to_string();
    let several = format!("t={t},v1={},v0=ignored,v1={}", v1(&stranger), v1(&by_new));
    assert!(both.verify(Some(&several), &body, now()).is_ok());
    let new_only = WebhookVerifier::new(["whsec_new"]).unwrap();
    assert_no_matching_signature(new_only.verify(Some(&by_old), &body, now()));
}

// ----- applying facts against SQLite ----------------------------------------------------------

/// One order placed through a simulated gateway, and the webhooks about its intent.
struct Paying {
    app: Arc<App>,
    placed: Placed,
    intent: String,
    /// The order total in minor units (10.00 EUR an item), as the intent carries it.
    amount_minor: i64,
    /// When the events about it are created, in Unix seconds.
    t: i64,
}

impl Paying {
    /// `quantity` items at 10.00 EUR on a fresh app over the simulated gateway.
    async fn start(quantity: u32) -> Self {
        Self::place(Arc::new(app(Arc::new(SimulatedGateway::new()))), quantity).await
    }

    async fn place(app: Arc<App>, quantity: u32) -> Self {
        let placed = place_order(&app, quantity).await;
        let intent = placed.intent_id.clone().unwrap();
        Self {
            app,
            placed,
            intent,
            amount_minor: i64::from(quantity) * 1000,
            t: now().timestamp(),
        }
    }

    /// Our intent with our metadata, as Stripe reports it back.
    fn spec(&self) -> IntentSpec<'_> {
        IntentSpec {
            intent_id: &self.intent,
            amount_minor: self.amount_minor,
            currency: "eur",
            payment_id: Some(&self.placed.payment_id),
            order_id: Some(&self.placed.order_id),
        }
    }

    /// A signed `payment_intent.*` event about our intent, verified as the route does.
    fn intent_event(&self, event_id: &str, event_type: &str) -> ProviderEvent {
        provider_event(&payment_intent_event(
            event_id,
            event_type,
            &self.spec(),
            self.t,
            None,
        ))
    }

    /// A signed `charge.refunded` with the cumulative `refunded_minor`, verified.
    fn refund_event(
        &self,
        event_id: &str,
        charge_id: &str,
        refunded_minor: i64,
        refund_id: &str,
        created: i64,
    ) -> ProviderEvent {
        provider_event(&charge_refunded_event(
            event_id,
            &self.spec(),
            charge_id,
            refunded_minor,
            Some(refund_id),
            created,
        ))
    }

    async fn apply(&self, event: &ProviderEvent) -> WebhookOutcome {
        apply(&self.app, event).await
    }

    async fn payment(&self) -> domain::Payment {
        payment(&self.app, &self.placed.payment_id).await
    }

    /// The order after the process managers caught up with the feed.
    async fn order_after_process_managers(&self) -> domain::Order {
        let mut after = commands::FeedCursor::start();
        drain_process_managers(&self.app, &mut after).await;
        order(&self.app, &self.placed.order_id).await
    }

    async fn refund_order(
        &self,
        amount: Option<&str>,
        key: &str,
    ) -> Result<RefundReceipt, CommandError> {
        let amount = amount.map(eur);
        self.app
            .payments
            .refund_order(&ctx(), &self.placed.order_id, amount, key)
            .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_event_delivered_twice_has_one_effect() {
    let p = Paying::start(2).await;
    let event = p.intent_event("evt_twice", "payment_intent.succeeded");
    let first = p.apply(&event).await;
    assert_matches!(
        first,
        WebhookOutcome::Applied { status, .. } if status == "succeeded"
    );
    let before = payment_events(&p.app, &p.placed.payment_id).await;
    let second = p.apply(&event).await;
    assert_matches!(second, WebhookOutcome::Duplicate { .. });
    assert_eq!(payment_events(&p.app, &p.placed.payment_id).await, before);
    assert_eq!(
        before.iter().filter(|e| *e == "PaymentSucceeded").count(),
        1
    );
    let recorded = p.app.store.idempotency("stripe:evt_twice").await.unwrap();
    assert!(recorded.is_some(), "the event id is recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_deliveries_of_one_event_have_exactly_one_effect() {
    let app = Arc::new(app(Arc::new(SimulatedGateway::new())));
    for round in 0..10 {
        let p = Paying::place(app.clone(), 1).await;
        let event = p.intent_event(&format!("evt_race_{round}"), "payment_intent.succeeded");
        let (a, b) = {
            let (app1, app2) = (app.clone(), app.clone());
            let (e1, e2) = (event.clone(), event.clone());
            let h1 = tokio::spawn(async move { apply(&app1, &e1).await });
            let h2 = tokio::spawn(async move { apply(&app2, &e2).await });
            (h1.await.unwrap(), h2.await.unwrap())
        };
        let applied = [&a, &b]
            .iter()
            .filter(|o| matches!(o, WebhookOutcome::Applied { .. }))
            .count();
        assert_eq!(applied, 1, "round {round}: {a:?} / {b:?}");
        assert!(
            [&a, &b]
                .iter()
                .any(|o| matches!(o, WebhookOutcome::Duplicate { .. })),
            "round {round}: the loser gets the replay: {a:?} / {b:?}"
        );
        let events = payment_events(&app, &p.placed.payment_id).await;
        assert_eq!(
            events,
            vec![
                "PaymentRequested",
                "PaymentIntentCreated",
                "PaymentSucceeded"
            ],
            "round {round}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fact_that_changes_nothing_still_records_the_event_id() {
    let p = Paying::start(2).await;
    p.apply(&p.intent_event("evt_ok", "payment_intent.succeeded"))
        .await;
    // Late: requires_action after success is a no-op, but the delivery is remembered.
    let late = p.intent_event("evt_late", "payment_intent.requires_action");
    let outcome = p.apply(&late).await;
    assert_matches!(outcome, WebhookOutcome::NoChange { .. });
    assert!(p
        .app
        .store
        .idempotency("stripe:evt_late")
        .await
        .unwrap()
        .is_some());
    let again = p.apply(&late).await;
    assert_matches!(again, WebhookOutcome::Duplicate { .. });
}

#[tokio::test(flavor = "multi_thread")]
async fn charge_refunded_resolves_the_payment_by_intent_and_records_cumulative_totals() {
    let p = Paying::start(2).await;
    p.apply(&p.intent_event("evt_s", "payment_intent.succeeded"))
        .await;

    let partial = p.refund_event("evt_r1", "ch_1", 300, "re_1", p.t);
    let outcome = p.apply(&partial).await;
    assert_matches!(
        outcome,
        WebhookOutcome::Applied { status, .. } if status == "partially_refunded"
    );
    // A dashboard refund of the rest: cumulative 2000.
    p.apply(&p.refund_event("evt_r2", "ch_1", 2000, "re_2", p.t + 1))
        .await;
    let payment = p.payment().await;
    assert_eq!(payment.status, PaymentStatus::Refunded);
    assert_eq!(payment.refunded, Some(eur("20.00")));

    let o = p.order_after_process_managers().await;
    assert_eq!(o.status, OrderStatus::Refunded);
    assert_eq!(o.refunded, Some(eur("20.00")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declined_payment_fails_the_payment_and_the_order_follows() {
    let p = Paying::start(1).await;
    let failed = provider_event(&payment_intent_event(
        "evt_f",
        "payment_intent.payment_failed",
        &p.spec(),
        p.t,
        Some("insufficient_funds"),
    ));
    p.apply(&failed).await;
    let payment = p.payment().await;
    assert_eq!(payment.status, PaymentStatus::Failed);
    assert_eq!(
        payment.failure_reason.as_deref(),
        Some("insufficient_funds")
    );
    assert_eq!(
        p.order_after_process_managers().await.status,
        OrderStatus::PaymentFailed
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn events_about_other_payments_and_unknown_types_are_ignored() {
    let p = Paying::start(1).await;
    // A real Stripe fixture: not one of our intents, no metadata of ours.
    let cases = [
        (
            "02_payment_intent.succeeded.json",
            IgnoredReason::UnknownPayment,
        ),
        ("05_charge.refunded.json", IgnoredReason::UnknownPayment),
        (
            "06_charge.dispute.created.json",
            IgnoredReason::UnknownPayment,
        ),
        (
            "12_payment_intent.succeeded_localstripe_api_2017-08-15.json",
            IgnoredReason::UnknownPayment,
        ),
        (
            "01_plan_created_fixture_event_verbatim.json",
            IgnoredReason::UnknownType,
        ),
    ];
    for (name, reason) in cases {
        let outcome = p.apply(&provider_event(&fixture(name))).await;
        assert_eq!(outcome, WebhookOutcome::Ignored { reason }, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fact_the_payment_refuses_is_acknowledged_as_rejected_not_retried() {
    let p = Paying::start(1).await;
    // Our payment id, but another intent: the payment already has one on record.
    let s = IntentSpec {
        intent_id: "pi_not_this_one",
        ..p.spec()
    };
    let event = provider_event(&payment_intent_event(
        "evt_wrong_intent",
        "payment_intent.succeeded",
        &s,
        p.t,
        None,
    ));
    let outcome = p.apply(&event).await;
    assert_matches!(outcome, WebhookOutcome::Rejected { .. });
    assert_eq!(p.payment().await.status, PaymentStatus::IntentCreated);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_localstripe_payload_resolves_our_payment_through_its_order_id() {
    let p = Paying::start(1).await;
    // Fixture 12 with our order id and intent: only `metadata.order_id`, no payment id.
    let mut raw: serde_json::Value = serde_json::from_slice(&fixture(
        "12_payment_intent.succeeded_localstripe_api_2017-08-15.json",
    ))
    .unwrap();
    raw["data"]["object"]["id"] = p.intent.clone().into();
    raw["data"]["object"]["amount"] = 1000.into();
    raw["data"]["object"]["metadata"]["order_id"] = p.placed.order_id.clone().into();
    let body = serde_json::to_vec(&raw).unwrap();
    let outcome = p.apply(&provider_event(&body)).await;
    assert_matches!(outcome, WebhookOutcome::Applied { .. });
    let payment = p.payment().await;
    assert_eq!(payment.status, PaymentStatus::Succeeded);
    assert_eq!(payment.captured, Some(eur("10.00")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_support_refund_is_recorded_once_whether_the_answer_or_the_webhook_comes_first() {
    let sim = Arc::new(SimulatedGateway::new());
    let p = Paying::place(Arc::new(app(sim.clone())), 2).await;
    // The simulated provider takes the money, then the webhook tells us.
    sim.confirm(&p.intent, "pm_card_visa").unwrap();
    p.apply(&p.intent_event("evt_paid", "payment_intent.succeeded"))
        .await;

    let receipt = p.refund_order(Some("4.00"), "support-req-1").await.unwrap();
    assert_eq!(receipt.status, "succeeded");
    assert_eq!(receipt.amount, eur("4.00"));
    let refund_id = receipt.refund_id.clone().unwrap();
    let payment = p.payment().await;
    assert_eq!(payment.status, PaymentStatus::PartiallyRefunded);
    assert_eq!(payment.refunded, Some(eur("4.00")));

    // Stripe's charge.refunded for the same refund arrives afterwards: nothing more happens.
    let webhook = p.refund_event("evt_ch_r", "ch_9", 400, &refund_id, p.t);
    let outcome = p.apply(&webhook).await;
    assert_matches!(outcome, WebhookOutcome::NoChange { .. });
    // The support request repeated: the first receipt, no second refund.
    let again = p.refund_order(Some("4.00"), "support-req-1").await.unwrap();
    assert_eq!(again, receipt);
    // The same key with another amount is a different request.
    let mismatch = p.refund_order(Some("5.00"), "support-req-1").await;
    assert!(matches!(mismatch, Err(CommandError::IdempotencyMismatch)));
    let refunded_events = payment_events(&p.app, &p.placed.payment_id)
        .await
        .into_iter()
        .filter(|e| e == "PaymentRefunded")
        .count();
    assert_eq!(refunded_events, 1);

    // Webhook first: a dashboard refund of 6.00 reported before a support refund asks for more
    // than what is left.
    p.apply(&p.refund_event("evt_dash", "ch_9", 1000, "re_dash", p.t + 5))
        .await;
    let too_much = p.refund_order(Some("10.01"), "support-req-2").await;
    assert!(
        matches!(
            too_much,
            Err(CommandError::Rejected {
                code: "refund_exceeds_paid",
                ..
            })
        ),
        "{too_much:?}"
    );
    let rest = p.refund_order(None, "support-req-3").await.unwrap();
    assert_eq!(rest.amount, eur("10.00"));
    assert_eq!(p.payment().await.status, PaymentStatus::Refunded);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refund_before_the_success_it_implies_ends_refunded_and_the_order_follows() {
    let p = Paying::start(2).await;
    p.apply(&p.refund_event("evt_r", "ch_1", 2000, "re_1", p.t))
        .await;
    let ok = p.intent_event("evt_s", "payment_intent.succeeded");
    let outcome = p.apply(&ok).await;
    assert_matches!(outcome, WebhookOutcome::NoChange { .. });
    assert_eq!(p.payment().await.status, PaymentStatus::Refunded);
    assert_eq!(
        p.order_after_process_managers().await.status,
        OrderStatus::Refunded
    );
}

// ----- order does not matter (proptest) -------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    RequiresAction,
    Processing,
    Succeeded,
    RefundedPartial,
    RefundedFull,
    Disputed,
}

const STEPS: [Step; 6] = [
    Step::RequiresAction,
    Step::Processing,
    Step::Succeeded,
    Step::RefundedPartial,
    Step::RefundedFull,
    Step::Disputed,
];

fn body_for(step: Step, p: &Paying) -> Vec<u8> {
    let (s, t) = (p.spec(), p.t);
    match step {
        Step::RequiresAction => {
            payment_intent_event("evt_ra", "payment_intent.requires_action", &s, t, None)
        }
        Step::Processing => {
            payment_intent_event("evt_pr", "payment_intent.processing", &s, t, None)
        }
        Step::Succeeded => payment_intent_event("evt_ok", "payment_intent.succeeded", &s, t, None),
        Step::RefundedPartial => charge_refunded_event("evt_rp", &s, "ch_1", 500, Some("re_1"), t),
        Step::RefundedFull => charge_refunded_event("evt_rf", &s, "ch_1", 2000, Some("re_2"), t),
        Step::Disputed => dispute_event(
            "evt_dp",
            "charge.dispute.created",
            &DisputeSpec {
                dispute_id: "dp_1",
                charge_id: "ch_1",
                intent_id: Some(&p.intent),
                amount_minor: s.amount_minor,
                currency: s.currency,
                reason: "fraudulent",
                status: "needs_response",
            },
            t,
        ),
    }
}

/// The parts of the final state that must not depend on delivery order.
#[derive(Debug, PartialEq)]
struct Final {
    payment_status: PaymentStatus,
    captured: Option<domain::Money>,
    refunded: Option<domain::Money>,
    dispute: Option<(String, String)>,
    order_status: OrderStatus,
    order_paid: Option<domain::Money>,
    order_refunded: Option<domain::Money>,
}

async fn run_sequence(steps: &[Step]) -> Final {
    let p = Paying::start(2).await;
    for step in steps {
        let outcome = p.apply(&provider_event(&body_for(*step, &p))).await;
        assert!(
            !matches!(
                outcome,
                WebhookOutcome::Rejected { .. } | WebhookOutcome::Ignored { .. }
            ),
            "{step:?}: {outcome:?}"
        );
    }
    let o = p.order_after_process_managers().await;
    let payment = p.payment().await;
    Final {
        payment_status: payment.status,
        captured: payment.captured,
        refunded: payment.refunded,
        dispute: payment.dispute.map(|d| (d.dispute_id, d.status)),
        order_status: o.status,
        order_paid: o.paid,
        order_refunded: o.refunded,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_shuffled_sequence_of_one_payments_events_ends_in_the_ordered_final_state(
        shuffled in Just(STEPS.to_vec()).prop_shuffle()
    ) {
        let rt = runtime();
        let ordered = rt.block_on(run_sequence(&STEPS));
        prop_assert_eq!(ordered.payment_status, PaymentStatus::Refunded);
        prop_assert_eq!(ordered.order_status, OrderStatus::Refunded);
        let got = rt.block_on(run_sequence(&shuffled));
        prop_assert_eq!(got, ordered);
    }
}
