//! Properties of the aggregates and of money.
//!
//! For random command sequences on each aggregate, after every step:
//! - folding all emitted events from the default state reproduces the live state;
//! - every event survives the store's encoding (`payload_json` → JSON text → `decode`) unchanged,
//!   and that text is a JSON object;
//! - the state survives a snapshot round trip (JSON text);
//! - the aggregate's invariants hold and the values carried by the events match the state;
//! - the status never moves backwards (Payment by rank, Order by `OrderStatus::can_follow`).

mod support;

use domain::{
    Cart, CartCommand, CartEvent, Currency, Event, EventSourced, Money, MoneyError, Order,
    OrderCommand, OrderEvent, OrderLine, OrderStatus, Payment, PaymentCommand, PaymentEvent,
    Product, ProductCommand, ProductEvent, MAX_CART_LINES, MAX_QUANTITY,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::cmp::Ordering;
use support::*;

// ---------------------------------------------------------------------------------------------
// Generic driver
// ---------------------------------------------------------------------------------------------

/// Runs `ops` against an aggregate. `to_command` turns an op into a command given the current
/// state (so that amounts can be derived from it), `check_step` sees the state before and after
/// each accepted command together with its events.
fn run<A, Op>(
    ops: Vec<Op>,
    to_command: impl Fn(&A, Op) -> A::Command,
    check_step: impl Fn(&A, &A, &[A::Event]) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError>
where
    A: EventSourced + PartialEq,
{
    let mut state = A::default();
    let mut history: Vec<A::Event> = Vec::new();
    for op in ops {
        let command = to_command(&state, op);
        let decided = cqrs_es::test::TestFramework::<A>::with(())
            .given(history.clone())
            .when(command)
            .inspect_result();
        let Ok(events) = decided else {
            continue;
        };
        let before = state.clone();
        for event in &events {
            check_storage_round_trip(event)?;
            cqrs_es::Aggregate::apply(&mut state, event.clone());
        }
        history.extend(events.iter().cloned());
        check_step(&before, &state, &events)?;
        prop_assert_eq!(
            &fold::<A>(history.iter().cloned()),
            &state,
            "replay differs from live state"
        );
        let snapshot = serde_json::to_string(&state).map_err(fail)?;
        let restored: A = serde_json::from_str(&snapshot).map_err(fail)?;
        prop_assert_eq!(&restored, &state, "snapshot round trip differs");
    }
    Ok(())
}

fn check_storage_round_trip<E: Event>(event: &E) -> Result<(), TestCaseError> {
    let text = event.payload_json();
    let payload: serde_json::Value = serde_json::from_str(&text).map_err(fail)?;
    prop_assert!(payload.is_object(), "payload is not a JSON object");
    let decoded = E::decode(event.event_type(), event.event_version(), &text).map_err(fail)?;
    prop_assert_eq!(&decoded, event);
    Ok(())
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

fn currency() -> impl Strategy<Value = Currency> {
    prop_oneof![9 => Just(Currency::EUR), 1 => Just(Currency::USD)]
}

/// `permille` thousandths of `m`, rounded down.
fn share(m: &Money, permille: u32) -> Money {
    let minor = i128::from(m.to_minor()) * i128::from(permille) / 1000;
    money(i64::try_from(minor).unwrap_or(i64::MAX), m.currency())
}

// ---------------------------------------------------------------------------------------------
// Product
// ---------------------------------------------------------------------------------------------

fn product_command() -> impl Strategy<Value = ProductCommand> {
    let order = (0..5_u8).prop_map(|i| order_id(&format!("o{i}")));
    prop_oneof![
        1 => (prop_oneof![Just("Teapot"), Just("  "), Just(" Mug ")], 0..30_u32).prop_map(
            |(name, initial_stock)| ProductCommand::Create {
                product_id: product_id("p1"),
                name: name.to_owned(),
                category: "kitchen".to_owned(),
                price: eur("3.00"),
                initial_stock,
            }
        ),
        2 => (0..500_i64, currency()).prop_map(|(m, c)| ProductCommand::Reprice { price: money(m, c) }),
        2 => (0..20_u32).prop_map(|quantity| ProductCommand::Restock { quantity }),
        5 => (order.clone(), 0..12_u32)
            .prop_map(|(order_id, quantity)| ProductCommand::ReserveStock { order_id, quantity }),
        2 => order.clone().prop_map(|order_id| ProductCommand::ReleaseStock { order_id }),
        2 => order.prop_map(|order_id| ProductCommand::CommitStock { order_id }),
        1 => Just(ProductCommand::Retire),
    ]
}

fn check_product(
    _before: &Product,
    p: &Product,
    events: &[ProductEvent],
) -> Result<(), TestCaseError> {
    let sum: u32 = p.reservations.values().sum();
    prop_assert_eq!(sum, p.reserved());
    prop_assert!(
        p.reserved() <= p.on_hand,
        "reserved {} > on hand {}",
        p.reserved(),
        p.on_hand
    );
    prop_assert_eq!(p.available(), p.on_hand - p.reserved());
    prop_assert!(p.reservations.values().all(|q| *q > 0));
    // A command emits at most one product event, so its carried values describe the new state.
    prop_assert!(events.len() <= 1);
    if let Some(event) = events.first() {
        let (on_hand, reserved, available) = carried_stock(event);
        prop_assert!(on_hand.is_none_or(|n| n == p.on_hand), "{event:?}");
        prop_assert!(reserved.is_none_or(|n| n == p.reserved()), "{event:?}");
        prop_assert!(available.is_none_or(|n| n == p.available()), "{event:?}");
    }
    Ok(())
}

/// The stock levels a product event carries: (on hand, reserved, available), each when it names
/// it.
fn carried_stock(event: &ProductEvent) -> (Option<u32>, Option<u32>, Option<u32>) {
    match event {
        ProductEvent::ProductCreated { on_hand, .. } => (Some(*on_hand), None, None),
        ProductEvent::ProductRestocked {
            on_hand, available, ..
        } => (Some(*on_hand), None, Some(*available)),
        ProductEvent::StockReserved {
            reserved,
            available,
            ..
        } => (None, Some(*reserved), Some(*available)),
        ProductEvent::StockReleased {
            reserved,
            available,
            ..
        } => (None, Some(*reserved), Some(*available)),
        ProductEvent::StockCommitted {
            on_hand,
            reserved,
            available,
            ..
        } => (Some(*on_hand), Some(*reserved), Some(*available)),
        _ => (None, None, None),
    }
}

// ---------------------------------------------------------------------------------------------
// Cart
// ---------------------------------------------------------------------------------------------

fn cart_command() -> impl Strategy<Value = CartCommand> {
    let product = (0..8_u8).prop_map(|i| product_id(&format!("p{i}")));
    let quantity = prop_oneof![3 => 1..=5_u32, 1 => 1..=MAX_QUANTITY].prop_map(qty);
    prop_oneof![
        1 => Just(CartCommand::Open { cart_id: cart_id("c1"), customer_id: customer_id("u1") }),
        6 => (product.clone(), quantity.clone(), 0..5_000_i64, currency()).prop_map(
            |(product_id, quantity, m, c)| CartCommand::AddItem {
                product_id,
                quantity,
                unit_price: money(m, c),
            }
        ),
        2 => (product.clone(), quantity)
            .prop_map(|(product_id, quantity)| CartCommand::ChangeQuantity { product_id, quantity }),
        2 => product.prop_map(|product_id| CartCommand::RemoveItem { product_id }),
        1 => Just(CartCommand::CheckOut { order_id: order_id("o1") }),
        1 => Just(CartCommand::Abandon),
    ]
}

fn check_cart(_before: &Cart, c: &Cart, events: &[CartEvent]) -> Result<(), TestCaseError> {
    prop_assert!(c.lines.len() <= MAX_CART_LINES);
    prop_assert_eq!(c.currency.is_none(), c.lines.is_empty());
    for (id, line) in &c.lines {
        prop_assert_eq!(id, &line.product_id);
        prop_assert!((1..=MAX_QUANTITY).contains(&line.quantity.get()));
        prop_assert_eq!(Some(line.unit_price.currency()), c.currency);
        prop_assert_eq!(
            Some(line.line_total.clone()),
            line.unit_price.multiply(line.quantity.get()).ok()
        );
    }
    if let Some(CartEvent::CartCheckedOut { total, .. }) = events.first() {
        prop_assert_eq!(Some(total.clone()), c.total());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Order
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum OrderOp {
    Place(Vec<OrderLine>),
    /// Pay the exact total, or a wrong amount.
    MarkPaid {
        exact: bool,
        other_payment: bool,
    },
    Fail,
    Cancel,
    Expire,
    Ship,
    Deliver,
    /// Refund `permille` of what is refundable (above 1000 over-refunds).
    Refund {
        id: u8,
        permille: u32,
    },
}

fn order_op() -> impl Strategy<Value = OrderOp> {
    let order_line = (0..6_u8, 1..=3_u32, 0..3_000_i64)
        .prop_map(|(p, q, m)| line(&format!("p{p}"), q, money(m, Currency::EUR)));
    prop_oneof![
        2 => prop::collection::vec(order_line, 0..4).prop_map(OrderOp::Place),
        3 => (prop::bool::weighted(0.8), prop::bool::weighted(0.1))
            .prop_map(|(exact, other_payment)| OrderOp::MarkPaid { exact, other_payment }),
        2 => Just(OrderOp::Fail),
        1 => Just(OrderOp::Cancel),
        1 => Just(OrderOp::Expire),
        2 => Just(OrderOp::Ship),
        1 => Just(OrderOp::Deliver),
        3 => (0..4_u8, 0..1_200_u32).prop_map(|(id, permille)| OrderOp::Refund { id, permille }),
    ]
}

fn order_command(o: &Order, op: OrderOp) -> OrderCommand {
    let total = o.total.clone().unwrap_or_else(|| eur("10.00"));
    match op {
        OrderOp::Place(lines) => OrderCommand::Place {
            order_id: order_id("o1"),
            cart_id: cart_id("c1"),
            customer_id: customer_id("u1"),
            customer_email: "ada@example.com".to_owned(),
            shipping_address: address(),
            lines,
            payment_id: payment_id("pay1"),
            placed_at: at(0),
        },
        OrderOp::MarkPaid {
            exact,
            other_payment,
        } => OrderCommand::MarkPaid {
            payment_id: payment_id(if other_payment { "pay2" } else { "pay1" }),
            amount: if exact { total } else { share(&total, 500) },
            at: at(1),
        },
        OrderOp::Fail => OrderCommand::RecordPaymentFailure {
            reason: "declined".to_owned(),
            at: at(2),
        },
        OrderOp::Cancel => OrderCommand::Cancel {
            reason: "asked".to_owned(),
            at: at(3),
        },
        OrderOp::Expire => OrderCommand::Expire {
            at: at(4),
            unpaid_for: chrono::Duration::zero(),
        },
        OrderOp::Ship => OrderCommand::Ship {
            tracking: Some("T1".to_owned()),
            at: at(5),
        },
        OrderOp::Deliver => OrderCommand::Deliver { at: at(6) },
        OrderOp::Refund { id, permille } => OrderCommand::Refund {
            refund_id: format!("r{id}"),
            amount: share(&o.refundable().unwrap_or(total), permille),
            at: at(7),
        },
    }
}

fn check_order(before: &Order, o: &Order, _events: &[OrderEvent]) -> Result<(), TestCaseError> {
    prop_assert!(
        o.status.can_follow(before.status),
        "order moved from {} to {}",
        before.status,
        o.status
    );
    prop_assert_ne!(o.status, OrderStatus::Placed);
    if let Some(refunded) = &o.refunded {
        let paid = o
            .paid
            .as_ref()
            .ok_or_else(|| fail("refunded without being paid"))?;
        prop_assert_ne!(refunded.cmp_amount(paid).map_err(fail)?, Ordering::Greater);
        prop_assert!(!o.refund_ids.is_empty());
        if o.status == OrderStatus::Refunded {
            prop_assert_eq!(refunded, paid);
        }
    }
    if o.exists() {
        let lines = o.lines.iter().map(|l| &l.line_total);
        let total = o
            .total
            .as_ref()
            .ok_or_else(|| fail("placed order without total"))?;
        prop_assert_eq!(&Money::sum(total.currency(), lines).map_err(fail)?, total);
        prop_assert!(!total.is_zero());
    }
    if let Some(paid) = &o.paid {
        prop_assert_eq!(Some(paid), o.total.as_ref());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Payment
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum PaymentOp {
    Request(i64),
    IntentCreated(u8),
    RequiresAction(u8),
    Processing(u8),
    /// Succeed with `permille` of the requested amount (1000 = exact), possibly in USD.
    Succeeded {
        intent: u8,
        permille: u32,
        usd: bool,
    },
    Failed(u8),
    Canceled(u8),
    /// Report a cumulative refunded total of `permille` of the captured (or requested) amount.
    Refunded {
        id: u8,
        permille: u32,
    },
    Disputed {
        id: u8,
        status: &'static str,
    },
}

fn payment_op() -> impl Strategy<Value = PaymentOp> {
    let intent = prop_oneof![9 => Just(0_u8), 1 => Just(1_u8)];
    prop_oneof![
        1 => (0..10_000_i64).prop_map(PaymentOp::Request),
        2 => intent.clone().prop_map(PaymentOp::IntentCreated),
        1 => intent.clone().prop_map(PaymentOp::RequiresAction),
        1 => intent.clone().prop_map(PaymentOp::Processing),
        3 => (intent.clone(), prop_oneof![3 => Just(1000_u32), 1 => 0..1_100_u32], prop::bool::weighted(0.05))
            .prop_map(|(intent, permille, usd)| PaymentOp::Succeeded { intent, permille, usd }),
        2 => intent.clone().prop_map(PaymentOp::Failed),
        1 => intent.prop_map(PaymentOp::Canceled),
        3 => (0..4_u8, 0..1_100_u32).prop_map(|(id, permille)| PaymentOp::Refunded { id, permille }),
        1 => (0..2_u8, prop_oneof![Just("needs_response"), Just("won"), Just("lost")])
            .prop_map(|(id, status)| PaymentOp::Disputed { id, status }),
    ]
}

fn payment_command(p: &Payment, op: PaymentOp) -> PaymentCommand {
    let requested = p.amount.clone().unwrap_or_else(|| eur("10.00"));
    let intent = |i: u8| format!("pi_{i}");
    match op {
        PaymentOp::Request(minor) => PaymentCommand::Request {
            payment_id: payment_id("pay1"),
            order_id: order_id("o1"),
            amount: money(minor, Currency::EUR),
        },
        PaymentOp::IntentCreated(i) => PaymentCommand::RecordIntentCreated {
            intent_id: intent(i),
        },
        PaymentOp::RequiresAction(i) => PaymentCommand::RecordRequiresAction {
            intent_id: intent(i),
        },
        PaymentOp::Processing(i) => PaymentCommand::RecordProcessing {
            intent_id: intent(i),
        },
        PaymentOp::Succeeded {
            intent: i,
            permille,
            usd,
        } => {
            let amount = share(&requested, permille);
            PaymentCommand::RecordSucceeded {
                charge_id: Some(format!("ch_{i}")),
                intent_id: intent(i),
                amount: if usd {
                    money(amount.to_minor(), Currency::USD)
                } else {
                    amount
                },
                at: at(10),
            }
        }
        PaymentOp::Failed(i) => PaymentCommand::RecordFailed {
            intent_id: intent(i),
            reason: "declined".to_owned(),
            at: at(11),
        },
        PaymentOp::Canceled(i) => PaymentCommand::RecordCanceled {
            intent_id: intent(i),
            at: at(12),
        },
        PaymentOp::Refunded { id, permille } => PaymentCommand::RecordRefunded {
            refund_id: format!("re_{id}"),
            amount_refunded_total: share(p.captured.as_ref().unwrap_or(&requested), permille),
            at: at(13),
        },
        PaymentOp::Disputed { id, status } => PaymentCommand::RecordDisputed {
            dispute_id: format!("dp_{id}"),
            reason: "fraudulent".to_owned(),
            status: status.to_owned(),
            amount: Some(requested.clone()),
            at: at(14),
        },
    }
}

fn check_payment(
    before: &Payment,
    p: &Payment,
    events: &[PaymentEvent],
) -> Result<(), TestCaseError> {
    prop_assert!(
        p.status.rank() >= before.status.rank(),
        "payment moved back from {} to {}",
        before.status,
        p.status
    );
    // Every single event also moves forward (the out-of-order refund emits two).
    let mut replay = before.clone();
    for event in events {
        let rank = replay.status.rank();
        replay.evolve(event);
        prop_assert!(replay.status.rank() >= rank);
        if let Some(key) = event.fact_key() {
            prop_assert!(p.seen_facts.contains(&key));
        }
    }
    if let Some(captured) = &p.captured {
        at_most(captured, p.amount.as_ref(), "captured without request")?;
        prop_assert!(p.status.is_captured());
    }
    if let Some(refunded) = &p.refunded {
        at_most(refunded, p.captured.as_ref(), "refunded before capture")?;
        at_most(refunded, p.amount.as_ref(), "refunded without request")?;
    }
    Ok(())
}

/// Fails unless `whole` is known (`missing` says why it must be) and `part` does not exceed it.
fn at_most(part: &Money, whole: Option<&Money>, missing: &str) -> Result<(), TestCaseError> {
    let whole = whole.ok_or_else(|| fail(missing))?;
    prop_assert_ne!(part.cmp_amount(whole).map_err(fail)?, Ordering::Greater);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// Most sequences start with the creation command, so that they exercise the live aggregate.
fn with_creation<T: Clone + std::fmt::Debug>(
    first: T,
    rest: impl Strategy<Value = T>,
) -> impl Strategy<Value = Vec<T>> {
    (
        prop::bool::weighted(0.9),
        prop::collection::vec(rest, 0..40),
    )
        .prop_map(move |(create, mut ops)| {
            if create {
                ops.insert(0, first.clone());
            }
            ops
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn product_replay_storage_and_stock_invariants_hold(
        commands in with_creation(
            ProductCommand::Create {
                product_id: product_id("p1"),
                name: "Teapot".to_owned(),
                category: "kitchen".to_owned(),
                price: eur("3.00"),
                initial_stock: 10,
            },
            product_command(),
        )
    ) {
        run::<Product, _>(commands, |_, c| c, check_product)?;
    }

    #[test]
    fn cart_replay_storage_and_line_invariants_hold(
        commands in with_creation(
            CartCommand::Open { cart_id: cart_id("c1"), customer_id: customer_id("u1") },
            cart_command(),
        )
    ) {
        run::<Cart, _>(commands, |_, c| c, check_cart)?;
    }

    #[test]
    fn order_replay_refund_invariants_hold_and_status_never_moves_backwards(
        ops in with_creation(
            OrderOp::Place(vec![line("p1", 2, eur("10.00")), line("p2", 1, eur("0.99"))]),
            order_op(),
        )
    ) {
        run::<Order, _>(ops, order_command, check_order)?;
    }

    #[test]
    fn payment_replay_refund_invariants_hold_and_rank_never_decreases(
        ops in with_creation(PaymentOp::Request(5_000), payment_op())
    ) {
        run::<Payment, _>(ops, payment_command, check_payment)?;
    }

    #[test]
    fn money_sum_equals_the_exact_integer_sum(
        minors in prop::collection::vec(0..1_000_000_000_000_i64, 0..50),
        currency in prop::sample::select(Currency::ALL),
    ) {
        let amounts: Vec<Money> = minors.iter().map(|m| money(*m, currency)).collect();
        let sum = Money::sum(currency, &amounts).map_err(fail)?;
        prop_assert_eq!(i128::from(sum.to_minor()), minors.iter().map(|m| i128::from(*m)).sum::<i128>());
        prop_assert_eq!(sum.currency(), currency);
    }

    #[test]
    fn money_minor_units_round_trip_through_every_representation(
        minor in 0..=i64::MAX,
        currency in prop::sample::select(Currency::ALL),
    ) {
        let m = Money::from_minor(minor, currency).map_err(fail)?;
        prop_assert_eq!(m.to_minor(), minor);
        prop_assert_eq!(m.amount().scale(), currency.minor_units());
        prop_assert_eq!(&Money::new(m.amount(), currency).map_err(fail)?, &m);
        prop_assert_eq!(&Money::parse(&m.amount().to_string(), currency.code()).map_err(fail)?, &m);
        let json = serde_json::to_string(&m).map_err(fail)?;
        prop_assert_eq!(&serde_json::from_str::<Money>(&json).map_err(fail)?, &m);
    }

    #[test]
    fn money_of_different_currencies_never_adds(
        a in 0..=i64::MAX,
        b in 0..=i64::MAX,
        left in prop::sample::select(Currency::ALL),
        right in prop::sample::select(Currency::ALL),
    ) {
        prop_assume!(left != right);
        let (x, y) = (money(a, left), money(b, right));
        prop_assert_eq!(x.checked_add(&y), Err(MoneyError::CurrencyMismatch { left, right }));
        prop_assert!(x.checked_sub(&y).is_err());
        prop_assert!(x.cmp_amount(&y).is_err());
    }

    #[test]
    fn money_multiply_is_exact_or_reports_overflow(
        minor in prop_oneof![0..1_000_000_i64, 0..=i64::MAX],
        quantity in any::<u32>(),
        currency in prop::sample::select(Currency::ALL),
    ) {
        let exact = i128::from(minor) * i128::from(quantity);
        let product = money(minor, currency).multiply(quantity);
        match i64::try_from(exact) {
            Ok(expected) => prop_assert_eq!(product, Ok(money(expected, currency))),
            Err(_) => prop_assert_eq!(product, Err(MoneyError::Overflow)),
        }
    }

    #[test]
    fn money_addition_is_exact_and_subtraction_undoes_it(
        a in 0..=i64::MAX / 2,
        b in 0..=i64::MAX / 2,
    ) {
        let (x, y) = (money(a, Currency::EUR), money(b, Currency::EUR));
        let sum = x.checked_add(&y).map_err(fail)?;
        prop_assert_eq!(sum.to_minor(), a + b);
        prop_assert_eq!(sum.checked_sub(&y), Ok(x.clone()));
        prop_assert_eq!(x.cmp_amount(&y), Ok(a.cmp(&b)));
    }
}
