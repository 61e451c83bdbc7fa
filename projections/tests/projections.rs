//! The four read models, fed hand-built envelopes of typed domain events.

use chrono::{DateTime, Duration, Utc};
use commands::EventEnvelope;
use commands::FeedCursor;
use domain::{
    CartId, Currency, CustomerId, Event, Money, OrderEvent, OrderId, OrderLine, OrderStatus,
    PaymentEvent, PaymentId, PaymentStatus, ProductEvent, ProductId, ProductStatus, Quantity,
    ShippedLine, ShippingAddress, StreamType,
};
use domain::{NotificationEvent, NotificationId};
use projections::catalog::{self, CatalogProjection};
use projections::notifications::{self, DeliveryStatus, NotificationKind, NotificationsProjection};
use projections::order_history::{self, OrderHistoryProjection};
use projections::store::EventBatch;
use projections::support::{self, SupportProjection, SupportQuery, TimelineSource};
use projections::testsuite::fixtures::{base_time, event_envelope, raw_product_event};
use projections::testsuite::VecEventStore;
use projections::{
    ApplyOutcome, MemoryReadModelStore, Page, Projection, ProjectionRunner, ReadModelError,
    ReadModelStore,
};
use serde_json::json;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

fn eur(minor: i64) -> Money {
    Money::from_minor(minor, Currency::EUR).expect("money")
}

fn pid(s: &str) -> ProductId {
    ProductId::parse(s).expect("product id")
}

fn oid(s: &str) -> OrderId {
    OrderId::parse(s).expect("order id")
}

fn payid(s: &str) -> PaymentId {
    PaymentId::parse(s).expect("payment id")
}

/// Builds envelopes with per-stream sequences and a clock that ticks a second per event.
struct Streams {
    seqs: HashMap<(StreamType, String), u64>,
    now: DateTime<Utc>,
}

impl Streams {
    fn new() -> Self {
        Self {
            seqs: HashMap::new(),
            now: base_time(),
        }
    }

    fn at(&self) -> DateTime<Utc> {
        self.now
    }

    fn ev<E: Event>(&mut self, stream_type: StreamType, id: &str, e: &E) -> EventEnvelope {
        self.now += Duration::seconds(1);
        let seq = self.seqs.entry((stream_type, id.to_owned())).or_insert(0);
        *seq += 1;
        event_envelope(stream_type, id, *seq, e, self.now)
    }

    fn product(&mut self, id: &str, e: ProductEvent) -> EventEnvelope {
        self.ev(StreamType::Product, id, &e)
    }

    fn order(&mut self, id: &str, e: OrderEvent) -> EventEnvelope {
        self.ev(StreamType::Order, id, &e)
    }

    fn payment(&mut self, id: &str, e: PaymentEvent) -> EventEnvelope {
        self.ev(StreamType::Payment, id, &e)
    }
}

/// What a `get_*` query found; it must be there.
async fn found<T>(get: impl Future<Output = Result<Option<T>, ReadModelError>>) -> T {
    get.await.expect("get").expect("exists")
}

/// The items of the page a `list_*` query read.
async fn items<T>(list: impl Future<Output = Result<Page<T>, ReadModelError>>) -> Vec<T> {
    list.await.expect("list").items
}

/// The first page of `customer`'s orders, at most `limit`.
async fn customer_orders(
    models: &MemoryReadModelStore,
    customer: &str,
    limit: usize,
) -> Vec<order_history::OrderView> {
    items(order_history::list_orders_for_customer(
        models, customer, limit, None,
    ))
    .await
}

/// The first page of `customer`'s notifications, at most `limit`.
async fn customer_notifications(
    models: &MemoryReadModelStore,
    customer: &str,
    limit: usize,
) -> Vec<notifications::NotificationView> {
    items(notifications::list_notifications_for_customer(
        models, customer, limit, None,
    ))
    .await
}

async fn apply(
    models: &MemoryReadModelStore,
    projection: &Arc<dyn Projection>,
    events: Vec<EventEnvelope>,
) -> ApplyOutcome {
    models
        .apply_batch(EventBatch::new(projection.clone(), events))
        .await
        .expect("apply")
}

fn created(id: &str, name: &str, category: &str, price: i64, on_hand: u32) -> ProductEvent {
    ProductEvent::ProductCreated {
        product_id: pid(id),
        name: name.to_owned(),
        category: category.to_owned(),
        price: eur(price),
        on_hand,
    }
}

fn placed(order: &str, customer: &str, email: &str, at: DateTime<Utc>) -> OrderEvent {
    OrderEvent::OrderPlaced {
        order_id: oid(order),
        cart_id: CartId::parse(&format!("cart-{order}")).expect("cart id"),
        customer_id: CustomerId::parse(customer).expect("customer id"),
        customer_email: email.to_owned(),
        shipping_address: ShippingAddress {
            name: "Alice".to_owned(),
            line1: "1 Main Street".to_owned(),
            line2: None,
            city: "Berlin".to_owned(),
            postal_code: "10115".to_owned(),
            country: "DE".to_owned(),
        },
        lines: vec![
            OrderLine {
                product_id: pid("book"),
                name: "Book".to_owned(),
                quantity: Quantity::parse(2).expect("qty"),
                unit_price: eur(1250),
                line_total: eur(2500),
            },
            OrderLine {
                product_id: pid("pen"),
                name: "Pen".to_owned(),
                quantity: Quantity::ONE,
                unit_price: eur(199),
                line_total: eur(199),
            },
        ],
        total: eur(2699),
        payment_id: payid(&format!("pay-{order}")),
        placed_at: at,
    }
}

fn requested(order: &str) -> PaymentEvent {
    PaymentEvent::PaymentRequested {
        payment_id: payid(&format!("pay-{order}")),
        order_id: oid(order),
        amount: eur(2699),
    }
}

fn intent_created(order: &str) -> PaymentEvent {
    PaymentEvent::PaymentIntentCreated {
        payment_id: payid(&format!("pay-{order}")),
        intent_id: format!("pi_{order}"),
    }
}

fn succeeded(order: &str, at: DateTime<Utc>) -> PaymentEvent {
    PaymentEvent::PaymentSucceeded {
        payment_id: payid(&format!("pay-{order}")),
        order_id: oid(order),
        intent_id: format!("pi_{order}"),
        charge_id: Some(format!("ch_{order}")),
        amount: eur(2699),
        at,
    }
}

fn paid(order: &str, at: DateTime<Utc>) -> OrderEvent {
    OrderEvent::OrderPaid {
        order_id: oid(order),
        payment_id: payid(&format!("pay-{order}")),
        amount: eur(2699),
        at,
    }
}

// ---------------------------------------------------------------- catalog

fn catalog() -> Arc<dyn Projection> {
    Arc::new(CatalogProjection)
}

#[tokio::test]
async fn product_created_is_listed_with_everything_available() {
    let models = MemoryReadModelStore::new();
    let mut s = Streams::new();
    apply(
        &models,
        &catalog(),
        vec![s.product("book", created("book", "Rust Book", "books", 3999, 12))],
    )
    .await;

    let view = found(catalog::get_product(&models, "book")).await;
    assert_eq!(view.product_id, pid("book"));
    assert_eq!(view.name, "Rust Book");
    assert_eq!(view.category, "books");
    assert_eq!(view.price, eur(3999));
    assert_eq!((view.on_hand, view.reserved, view.available), (12, 0, 12));
    assert_eq!(view.status, ProductStatus::Active);
    assert_eq!(view.version, 1);
    assert!(catalog::get_product(&models, "nope")
        .await
        .expect("get")
        .is_none());
}

#[tokio::test]
async fn stock_figures_are_copied_from_the_events_not_recomputed() {
    let models = MemoryReadModelStore::new();
    let mut s = Streams::new();
    let o = oid("o1");
    let events = vec![
        s.product("book", created("book", "Rust Book", "books", 3999, 12)),
        // The figures below are deliberately not what a recomputation would give: the view
        // must show what the aggregate decided and recorded.
        s.product(
            "book",
            ProductEvent::StockReserved {
                product_id: pid("book"),
                order_id: o.clone(),
                quantity: 2,
                reserved: 7,
                available: 3,
            },
        ),
    ];
    apply(&models, &catalog(), events).await;
    let view = found(catalog::get_product(&models, "book")).await;
    assert_eq!((view.on_hand, view.reserved, view.available), (12, 7, 3));

    let events = vec![
        s.product(
            "book",
            ProductEvent::StockReleased {
                product_id: pid("book"),
                order_id: o.clone(),
                quantity: 2,
                reserved: 5,
                available: 7,
            },
        ),
        s.product(
            "book",
            ProductEvent::ProductRestocked {
                product_id: pid("book"),
                quantity: 10,
                on_hand: 22,
                available: 17,
            },
        ),
        s.product(
            "book",
            ProductEvent::StockCommitted {
                product_id: pid("book"),
                order_id: o,
                quantity: 5,
                on_hand: 17,
                reserved: 0,
                available: 17,
            },
        ),
    ];
    apply(&models, &catalog(), events).await;
    let view = found(catalog::get_product(&models, "book")).await;
    assert_eq!((view.on_hand, view.reserved, view.available), (17, 0, 17));
    assert_eq!(view.version, 5);
}

#[tokio::test]
async fn reprice_and_retire_update_the_product() {
    let models = MemoryReadModelStore::new();
    let mut s = Streams::new();
    let events = vec![
        s.product("book", created("book", "Rust Book", "books", 3999, 12)),
        s.product(
            "book",
            ProductEvent::ProductRepriced {
                product_id: pid("book"),
                old_price: eur(3999),
                price: eur(2999),
            },
        ),
        s.product(
            "book",
            ProductEvent::ProductRetired {
                product_id: pid("book"),
            },
        ),
    ];
    apply(&models, &catalog(), events).await;
    let view = found(catalog::get_product(&models, "book")).await;
    assert_eq!(view.price, eur(2999));
    assert_eq!(view.status, ProductStatus::Retired);
    assert_eq!(view.version, 3);
}

#[tokio::test]
async fn products_are_listed_by_category_and_name() {
    let models = MemoryReadModelStore::new();
    let mut s = Streams::new();
    let events = vec![
        s.product("p1", created("p1", "zebra puzzle", "games", 1000, 1)),
        s.product("p2", created("p2", "Atlas", "books", 1000, 1)),
        s.product("p3", created("p3", "Chess", "games", 1000, 1)),
        s.product("p4", created("p4", "Monopoly", "games", 1000, 1)),
    ];
    apply(&models, &catalog(), events).await;
    let names = |v: Vec<catalog::ProductView>| v.into_iter().map(|p| p.name).collect::<Vec<_>>();
    assert_eq!(
        names(items(catalog::list_products(&models, Some("games"), 10, None)).await),
        ["Chess", "Monopoly", "zebra puzzle"]
    );
    assert_eq!(
        names(items(catalog::list_products(&models, Some("games"), 2, None)).await),
        ["Chess", "Monopoly"]
    );
    assert_eq!(
        names(items(catalog::list_products(&models, None, 10, None)).await),
        ["Atlas", "Chess", "Monopoly", "zebra puzzle"]
    );
    assert!(
        items(catalog::list_products(&models, Some("tools"), 10, None))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn duplicate_delivery_changes_nothing() {
    let models = MemoryReadModelStore::new();
    let mut s = Streams::new();
    let events = vec![
        s.product("book", created("book", "Rust Book", "books", 3999, 12)),
        s.product(
            "book",
            ProductEvent::ProductRestocked {
                product_id: pid("book"),
                quantity: 3,
                on_hand: 15,
                available: 15,
            },
        ),
    ];
    apply(&models, &catalog(), events.clone()).await;
    let before = models.dump().expect("dump");
    let again = apply(&models, &catalog(), events).await;
    assert_eq!(
        again,
        ApplyOutcome::Applied {
            applied: 0,
            skipped: 2
        }
    );
    assert_eq!(models.dump().expect("dump"), before);
}

#[tokio::test]
async fn product_created_v1_is_upcast_to_uncategorized() {
    let models = MemoryReadModelStore::new();
    let v1 = raw_product_event(
        "old",
        1,
        "ProductCreated",
        1,
        json!({
            "product_id": "old",
            "name": "Old Thing",
            "price": {"amount": "5.00", "currency": "EUR"},
            "on_hand": 3
        }),
    );
    apply(&models, &catalog(), vec![v1]).await;
    let view = found(catalog::get_product(&models, "old")).await;
    assert_eq!(view.category, domain::UNCATEGORIZED);
    assert_eq!(view.price, eur(500));
}

#[tokio::test]
async fn unknown_event_types_are_ignored_but_counted_as_applied() {
    let models = MemoryReadModelStore::new();
    let mut s = Streams::new();
    let first = s.product("book", created("book", "Rust Book", "books", 3999, 12));
    let unknown = raw_product_event(
        "book",
        2,
        "ProductPhotographed",
        1,
        json!({"product_id": "book"}),
    );
    let outcome = apply(&models, &catalog(), vec![first, unknown]).await;
    assert_eq!(outcome.applied(), 2);
    assert_eq!(
        models
            .last_applied(
                "catalog",
                &commands::StreamRef::new(StreamType::Product, "book")
            )
            .await
            .expect("last"),
        2,
        "the stream's sequence advances past the unknown event, so no false gap follows"
    );
    let view = found(catalog::get_product(&models, "book")).await;
    assert_eq!(view.version, 1);
}

#[tokio::test]
async fn a_newer_event_version_stops_the_projection() {
    let models = MemoryReadModelStore::new();
    let future = raw_product_event("book", 1, "ProductCreated", 99, json!({}));
    let err = models
        .apply_batch(EventBatch::new(catalog(), vec![future]).with_checkpoint(FeedCursor::at(1)))
        .await
        .expect_err("unsupported version");
    assert!(matches!(
        err,
        ReadModelError::Projection {
            projection: "catalog",
            ..
        }
    ));
    assert_eq!(
        models.checkpoint("catalog").await.expect("checkpoint"),
        FeedCursor::start()
    );
}

#[tokio::test]
async fn catalog_ignores_other_streams() {
    let mut s = Streams::new();
    let order = s.order(
        "o1",
        placed("o1", "alice", "alice@example.com", base_time()),
    );
    let product = s.product("book", created("book", "Rust Book", "books", 3999, 12));
    assert!(!CatalogProjection.handles(&order));
    assert!(CatalogProjection.handles(&product));
}

// ---------------------------------------------------------------- order history

fn history() -> Arc<dyn Projection> {
    Arc::new(OrderHistoryProjection)
}

#[tokio::test]
async fn order_placed_shows_lines_totals_and_awaits_payment() {
    let models = MemoryReadModelStore::new();
    let mut s = Streams::new();
    let at = s.at();
    let events = vec![s.order("o1", placed("o1", "alice", "alice@example.com", at))];
    apply(&models, &history(), events).await;

    let view = found(order_history::get_order(&models, "o1")).await;
    assert_eq!(view.order_id, oid("o1"));
    assert_eq!(view.customer_id.as_str(), "alice");
    assert_eq!(view.customer_email, "alice@example.com");
    assert_eq!(view.status, OrderStatus::AwaitingPayment);
    assert_eq!(view.lines.len(), 2);
    assert_eq!(view.lines[0].quantity, 2);
    assert_eq!(view.lines[0].line_total, eur(2500));
    assert_eq!(view.total, eur(2699));
    assert_eq!(view.payment_id, payid("pay-o1"));
    assert_eq!(view.payment_status, None);
    assert_eq!(view.placed_at, at);
    assert_eq!(view.timeline.len(), 1);
    assert_eq!(view.timeline[0].event_type, "OrderPlaced");
    assert!(view.timeline[0].description.contains("26.99 EUR"));
}

#[tokio::test]
async fn the_whole_lifecycle_is_reflected_with_payment_status_and_timeline() {
    let models = MemoryReadModelStore::new();
    let mut s = Streams::new();
    let at = s.at();
    let mut events = vec![
        s.order("o1", placed("o1", "alice", "alice@example.com", at)),
        s.payment("pay-o1", requested("o1")),
        s.payment("pay-o1", intent_created("o1")),
    ];
    let t = s.at();
    events.push(s.payment("pay-o1", succeeded("o1", t)));
    events.push(s.order("o1", paid("o1", t)));
    apply(&models, &history(), events).await;
    let view = found(order_history::get_order(&models, "o1")).await;
    assert_eq!(view.status, OrderStatus::Paid);
    assert_eq!(view.payment_status, Some(PaymentStatus::Succeeded));
    assert_eq!(view.intent_id.as_deref(), Some("pi_o1"));
    assert_eq!(view.paid, Some(eur(2699)));

    let t = s.at();
    let events = vec![
        s.order(
            "o1",
            OrderEvent::OrderShipped {
                order_id: oid("o1"),
                tracking: Some("TRK42".to_owned()),
                lines: vec![ShippedLine {
                    product_id: pid("book"),
                    quantity: Quantity::parse(2).expect("qty"),
                }],
                at: t,
            },
        ),
        s.order(
            "o1",
            OrderEvent::OrderDelivered {
                order_id: oid("o1"),
                at: t,
            },
        ),
        s.payment(
            "pay-o1",
            PaymentEvent::PaymentRefunded {
                payment_id: payid("pay-o1"),
                order_id: oid("o1"),
                refund_id: "re_1".to_owned(),
                amount: eur(1000),
                refunded_total: eur(1000),
                full: false,
                at: t,
            },
        ),
        s.order(
            "o1",
            OrderEvent::OrderRefunded {
                order_id: oid("o1"),
                refund_id: "re_1".to_owned(),
                amount: eur(1000),
                refunded_total: eur(1000),
                full: false,
                at: t,
            },
        ),
    ];
    apply(&models, &history(), events).await;
    let view = found(order_history::get_order(&models, "o1")).await;
    assert_eq!(
        view.status,
        OrderStatus::Delivered,
        "a partial refund leaves the status alone"
    );
    assert_eq!(view.payment_status, Some(PaymentStatus::PartiallyRefunded));
    assert_eq!(view.refunded, Some(eur(1000)));
    assert_eq!(view.tracking.as_deref(), Some("TRK42"));

    let t = s.at();
    let events = vec![
        s.payment(
            "pay-o1",
            PaymentEvent::PaymentRefunded {
                payment_id: payid("pay-o1"),
                order_id: oid("o1"),
                refund_id: "re_2".to_owned(),
                amount: eur(1699),
                refunded_total: eur(2699),
                full: true,
                at: t,
            },
        ),
        s.order(
            "o1",
            OrderEvent::OrderRefunded {
                order_id: oid("o1"),
                refund_id: "re_2".to_owned(),
                amount: eur(1699),
                refunded_total: eur(2699),
                full: true,
                at: t,
            },
        ),
    ];
    apply(&models, &history(), events).await;
    let view = found(order_history::get_order(&models, "o1")).await;
    assert_eq!(view.status, OrderStatus::Refunded);
    assert_eq!(view.payment_status, Some(PaymentStatus::Refunded));
    assert_eq!(view.refunded, Some(eur(2699)));
    assert_eq!(view.updated_at, s.at());
    let types: Vec<&str> = view
        .timeline
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "OrderPlaced",
            "PaymentRequested",
            "PaymentIntentCreated",
            "PaymentSucceeded",
            "OrderPaid",
            "OrderShipped",
            "OrderDelivered",
            "PaymentRefunded",
            "OrderRefunded",
            "PaymentRefunded",
            "OrderRefunded",
        ]
    );
    assert!(view.timeline.windows(2).all(|w| w[0].at <= w[1].at));
}

#[tokio::test]
async fn payment_events_arriving_before_the_order_are_merged_in() {
    let models = MemoryReadModelStore::new();
    let mut s = Streams::new();
    let at = s.at();
    let order = s.order("o1", placed("o1", "alice", "alice@example.com", at));
    let payment = vec![
        s.payment("pay-o1", requested("o1")),
        s.payment("pay-o1", intent_created("o1")),
    ];
    apply(&models, &history(), payment).await;
    assert!(
        order_history::get_order(&models, "o1")
            .await
            .expect("get")
            .is_none(),
        "no order before OrderPlaced"
    );
    assert!(customer_orders(&models, "alice", 10).await.is_empty());

    apply(&models, &history(), vec![order]).await;
    let view = found(order_history::get_order(&models, "o1")).await;
    assert_eq!(view.payment_status, Some(PaymentStatus::IntentCreated));
    assert_eq!(view.intent_id.as_deref(), Some("pi_o1"));
    let types: Vec<&str> = view
        .timeline
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        ["OrderPlaced", "PaymentRequested", "PaymentIntentCreated"],
        "the timeline is ordered by time whatever the arrival order"
    );
    assert_eq!(customer_orders(&models, "alice", 10).await.len(), 1);
}

#[tokio::test]
async fn a_customers_orders_are_listed_newest_first() {
    let models = MemoryReadModelStore::new();
    let mut s = Streams::new();
    let t0 = base_time();
    let events = vec![
        s.order("o1", placed("o1", "alice", "alice@example.com", t0)),
        s.order(
            "o2",
            placed("o2", "alice", "alice@example.com", t0 + Duration::hours(2)),
        ),
        s.order(
            "o3",
            placed("o3", "bob", "bob@example.com", t0 + Duration::hours(3)),
        ),
        s.order(
            "o4",
            placed("o4", "alice", "alice@example.com", t0 + Duration::hours(1)),
        ),
    ];
    apply(&models, &history(), events).await;
    let ids = |v: Vec<order_history::OrderView>| {
        v.into_iter()
            .map(|o| o.order_id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(customer_orders(&models, "alice", 10).await),
        ["o2", "o4", "o1"]
    );
    assert_eq!(
        ids(customer_orders(&models, "alice", 2).await),
        ["o2", "o4"]
    );
    assert_eq!(ids(customer_orders(&models, "bob", 10).await), ["o3"]);
}

#[tokio::test]
async fn out_of_order_delivery_is_repaired_by_gap_filling() {
    let mut s = Streams::new();
    let at = s.at();
    let events = vec![
        s.order("o1", placed("o1", "alice", "alice@example.com", at)),
        s.payment("pay-o1", requested("o1")),
        s.payment("pay-o1", intent_created("o1")),
        s.payment("pay-o1", succeeded("o1", at)),
        s.order("o1", paid("o1", at)),
    ];
    let store = Arc::new(VecEventStore::with_events(events.clone()));
    let models = Arc::new(MemoryReadModelStore::new());
    let runner = ProjectionRunner::new(store, models.clone(), history(), 100);

    // Only the last event of each stream arrives (the rest is lost or late).
    let summary = runner
        .apply_with_gap_fill(vec![events[4].clone(), events[3].clone()])
        .await
        .expect("apply");
    assert_eq!(summary.applied, 5);
    assert_eq!(summary.filled, 3);
    let view = found(order_history::get_order(models.as_ref(), "o1")).await;
    assert_eq!(view.status, OrderStatus::Paid);
    assert_eq!(view.payment_status, Some(PaymentStatus::Succeeded));

    // The late ones finally arrive: all duplicates.
    let summary = runner.apply_with_gap_fill(events).await.expect("apply");
    assert_eq!((summary.applied, summary.skipped), (0, 5));
}

// ---------------------------------------------------------------- notifications

fn notifs() -> Arc<dyn Projection> {
    Arc::new(NotificationsProjection)
}

#[tokio::test]
async fn each_lifecycle_event_renders_its_notification() {
    let models = MemoryReadModelStore::new();
    let mut s = Streams::new();
    let at = s.at();
    let mut events = vec![
        s.order("o1", placed("o1", "alice", "alice@example.com", at)),
        s.order(
            "o1",
            OrderEvent::OrderPaymentFailed {
                order_id: oid("o1"),
                reason: "card_declined".to_owned(),
                at,
            },
        ),
        s.order("o1", paid("o1", at)),
        s.order(
            "o1",
            OrderEvent::OrderShipped {
                order_id: oid("o1"),
                tracking: Some("TRK42".to_owned()),
                lines: Vec::new(),
                at,
            },
        ),
        s.order(
            "o1",
            OrderEvent::OrderDelivered {
                order_id: oid("o1"),
                at,
            },
        ),
        s.order(
            "o1",
            OrderEvent::OrderRefunded {
                order_id: oid("o1"),
                refund_id: "re_1".to_owned(),
                amount: eur(500),
                refunded_total: eur(500),
                full: false,
                at,
            },
        ),
    ];
    events.push(s.order("o2", placed("o2", "alice", "alice@example.com", at)));
    events.push(s.order(
        "o2",
        OrderEvent::OrderCancelled {
            order_id: oid("o2"),
            reason: "changed my mind".to_owned(),
            was_paid: true,
            at,
        },
    ));
    events.push(s.order("o3", placed("o3", "alice", "alice@example.com", at)));
    events.push(s.order(
        "o3",
        OrderEvent::OrderExpired {
            order_id: oid("o3"),
            at,
        },
    ));
    apply(&models, &notifs(), events.clone()).await;

    let list = customer_notifications(&models, "alice", 50).await;
    let kinds: Vec<NotificationKind> = list.iter().map(|n| n.kind).collect();
    assert_eq!(
        kinds,
        [
            NotificationKind::OrderExpired,
            NotificationKind::OrderCancelled,
            NotificationKind::RefundIssued,
            NotificationKind::OrderDelivered,
            NotificationKind::OrderShipped,
            NotificationKind::OrderConfirmed,
            NotificationKind::PaymentFailed,
        ],
        "newest first; nothing for OrderPlaced"
    );
    let by_kind = |k: NotificationKind, order: &str| {
        list.iter()
            .find(|n| n.kind == k && n.order_id.as_str() == order)
            .expect("notification")
    };
    let failed = by_kind(NotificationKind::PaymentFailed, "o1");
    assert_eq!(failed.subject, "Payment for order o1 failed");
    assert!(failed.body.contains("26.99 EUR") && failed.body.contains("card_declined"));
    assert_eq!(failed.email, "alice@example.com");
    assert_eq!(failed.delivery_status, DeliveryStatus::Pending);
    let confirmed = by_kind(NotificationKind::OrderConfirmed, "o1");
    assert_eq!(confirmed.subject, "Order o1 confirmed");
    assert!(confirmed.body.contains("26.99 EUR"));
    assert!(by_kind(NotificationKind::OrderShipped, "o1")
        .body
        .contains("TRK42"));
    let delivered = by_kind(NotificationKind::OrderDelivered, "o1");
    assert_eq!(delivered.subject, "Order o1 was delivered");
    assert!(delivered.body.contains("was delivered"));
    let refund = by_kind(NotificationKind::RefundIssued, "o1");
    assert!(refund.body.contains("5.00 EUR") && refund.body.contains("26.99 EUR"));
    let cancelled = by_kind(NotificationKind::OrderCancelled, "o2");
    assert!(cancelled.body.contains("changed my mind") && cancelled.body.contains("refunded"));
    let expired = by_kind(NotificationKind::OrderExpired, "o3");
    assert!(expired.body.contains("not paid in time"));
    assert_eq!(expired.subject, "Order o3 expired unpaid");
    assert_eq!(expired.notification_id, events[9].event_id);
    assert!(customer_notifications(&models, "bob", 50).await.is_empty());
}

fn delivery(
    id: &str,
    order: &str,
    attempt: u32,
    outcome: &str,
    at: DateTime<Utc>,
) -> NotificationEvent {
    let notification_id = NotificationId::parse(id).expect("notification id");
    let (order_id, kind, channel) = (oid(order), "order_confirmed".to_owned(), "file".to_owned());
    match outcome {
        "delivered" => NotificationEvent::NotificationDelivered {
            notification_id,
            order_id,
            kind,
            channel,
            attempt,
            message_id: Some(format!("<{id}@shop.example>")),
            at,
        },
        "retrying" => NotificationEvent::NotificationRetrying {
            notification_id,
            order_id,
            kind,
            channel,
            attempt,
            reason: "421 busy".to_owned(),
            at,
            next_attempt_at: at + Duration::minutes(10),
        },
        _ => NotificationEvent::NotificationFailed {
            notification_id,
            order_id,
            kind,
            channel,
            attempt,
            reason: "550 no such mailbox".to_owned(),
            at,
        },
    }
}

#[tokio::test]
async fn delivery_events_move_notifications_through_the_queue_and_survive_a_rebuild() {
    let mut s = Streams::new();
    let at = s.at();
    let mut events = vec![
        s.order("o1", placed("o1", "alice", "alice@example.com", at)),
        s.order("o1", paid("o1", at)),
        s.order(
            "o1",
            OrderEvent::OrderShipped {
                order_id: oid("o1"),
                tracking: None,
                lines: Vec::new(),
                at,
            },
        ),
    ];
    let confirmed = events[1].event_id.to_string();
    let shipped = events[2].event_id.to_string();
    let later = at + Duration::minutes(1);
    // The confirmation is delivered at the second attempt; the shipping notice fails for good.
    events.push(s.ev(
        StreamType::Notification,
        &confirmed,
        &delivery(&confirmed, "o1", 1, "retrying", later),
    ));
    let store = Arc::new(VecEventStore::with_events(events.clone()));
    let models = Arc::new(MemoryReadModelStore::new());
    let runner = ProjectionRunner::new(store.clone(), models.clone(), notifs(), 10);
    runner.step().await.expect("step");

    let due = |now| {
        let models = models.clone();
        async move {
            notifications::due_notifications(models.as_ref(), now, 10)
                .await
                .expect("due")
                .into_iter()
                .map(|n| n.kind)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        due(later).await,
        [NotificationKind::OrderShipped],
        "the retry is not due yet"
    );
    assert_eq!(
        due(later + Duration::minutes(10)).await,
        [
            NotificationKind::OrderShipped,
            NotificationKind::OrderConfirmed
        ],
        "the most overdue first"
    );
    let retrying = found(notifications::get_notification(models.as_ref(), &confirmed)).await;
    assert_eq!(retrying.delivery_status, DeliveryStatus::Retrying);
    assert_eq!(retrying.attempts, 1);
    assert_eq!(retrying.last_error.as_deref(), Some("421 busy"));

    store.push(s.ev(
        StreamType::Notification,
        &confirmed,
        &delivery(&confirmed, "o1", 2, "delivered", later),
    ));
    store.push(s.ev(
        StreamType::Notification,
        &shipped,
        &delivery(&shipped, "o1", 1, "failed", later),
    ));
    runner.step().await.expect("step");

    let check = |models: Arc<MemoryReadModelStore>| {
        let (confirmed, shipped) = (confirmed.clone(), shipped.clone());
        async move {
            assert!(notifications::pending_notifications(models.as_ref(), 10)
                .await
                .expect("pending")
                .is_empty());
            let sent = found(notifications::get_notification(models.as_ref(), &confirmed)).await;
            assert_eq!(sent.delivery_status, DeliveryStatus::Delivered);
            assert_eq!(sent.delivered_at, Some(later));
            assert_eq!(sent.attempts, 2);
            let failed = notifications::failed_notifications(models.as_ref(), 10, None)
                .await
                .expect("failed")
                .items;
            assert_eq!(failed.len(), 1);
            assert_eq!(failed[0].notification_id.to_string(), shipped);
            assert_eq!(failed[0].last_error.as_deref(), Some("550 no such mailbox"));
            assert_eq!(
                customer_notifications(models.as_ref(), "alice", 10)
                    .await
                    .len(),
                2,
                "delivered and failed ones stay in the customer's list"
            );
        }
    };
    check(models.clone()).await;
    // A rebuild folds the same history: nothing becomes pending again.
    runner.rebuild(|_, _| {}).await.expect("rebuild");
    check(models.clone()).await;
}

#[tokio::test]
async fn a_delivery_event_applied_before_its_notification_is_kept_until_it_arrives() {
    let models = MemoryReadModelStore::new();
    let mut s = Streams::new();
    let at = s.at();
    let placed = s.order("o1", placed("o1", "alice", "alice@example.com", at));
    let paid = s.order("o1", paid("o1", at));
    let id = paid.event_id.to_string();
    let delivered = s.ev(
        StreamType::Notification,
        &id,
        &delivery(&id, "o1", 1, "delivered", at),
    );
    // The notification stream's event first, then the order stream's.
    apply(&models, &notifs(), vec![delivered]).await;
    apply(&models, &notifs(), vec![placed, paid]).await;
    let view = found(notifications::get_notification(&models, &id)).await;
    assert_eq!(view.delivery_status, DeliveryStatus::Delivered);
    assert!(notifications::pending_notifications(&models, 10)
        .await
        .expect("pending")
        .is_empty());
}

#[tokio::test]
async fn a_redelivered_event_does_not_notify_twice() {
    let models = MemoryReadModelStore::new();
    let mut s = Streams::new();
    let at = s.at();
    let events = vec![
        s.order("o1", placed("o1", "alice", "alice@example.com", at)),
        s.order("o1", paid("o1", at)),
    ];
    apply(&models, &notifs(), events.clone()).await;
    apply(&models, &notifs(), events[1..].to_vec()).await;
    assert_eq!(
        notifications::pending_notifications(&models, 10)
            .await
            .expect("pending")
            .len(),
        1
    );
}

// ---------------------------------------------------------------- support

fn supp() -> Arc<dyn Projection> {
    Arc::new(SupportProjection)
}

async fn support_ids(models: &MemoryReadModelStore, q: SupportQuery) -> Vec<String> {
    support::search_orders(models, &q)
        .await
        .expect("search")
        .into_iter()
        .map(|v| v.order_id.to_string())
        .collect()
}

#[tokio::test]
async fn support_finds_orders_by_every_criterion() {
    let models = MemoryReadModelStore::new();
    let mut s = Streams::new();
    let t0 = base_time();
    let h = Duration::hours;
    let events = vec![
        s.order("o1", placed("o1", "alice", "Alice@Example.com", t0)),
        s.order("o2", placed("o2", "bob", "bob@example.com", t0 + h(1))),
        s.order("o3", placed("o3", "alice", "alice@example.com", t0 + h(2))),
        s.payment("pay-o3", requested("o3")),
        s.payment("pay-o3", intent_created("o3")),
        s.payment("pay-o3", succeeded("o3", t0 + h(2))),
        s.order("o3", paid("o3", t0 + h(2))),
    ];
    apply(&models, &supp(), events).await;
    let q = |limit| SupportQuery {
        limit,
        ..SupportQuery::default()
    };

    let alice = || Some("alice@example.com".to_owned());
    let cases: Vec<(SupportQuery, &[&str], &str)> = vec![
        (q(10), &["o3", "o2", "o1"], "newest first"),
        (q(2), &["o3", "o2"], "at most the limit"),
        (q(0), &[], "a zero limit finds nothing"),
        (
            SupportQuery {
                email: Some("ALICE@example.COM".to_owned()),
                ..q(10)
            },
            &["o3", "o1"],
            "email matches without regard to case",
        ),
        (
            SupportQuery {
                status: Some(OrderStatus::AwaitingPayment),
                ..q(10)
            },
            &["o2", "o1"],
            "o3 moved out of the awaiting_payment partition when it was paid",
        ),
        (
            SupportQuery {
                status: Some(OrderStatus::Paid),
                ..q(10)
            },
            &["o3"],
            "by status",
        ),
        (
            SupportQuery {
                intent_id: Some("pi_o3".to_owned()),
                ..q(10)
            },
            &["o3"],
            "by intent id",
        ),
        (
            SupportQuery {
                order_id: Some("o2".to_owned()),
                ..q(10)
            },
            &["o2"],
            "by order id",
        ),
        (
            SupportQuery {
                order_id: Some("o2".to_owned()),
                email: alice(),
                ..q(10)
            },
            &[],
            "every criterion must match",
        ),
        (
            SupportQuery {
                from: Some(t0 + h(1)),
                to: Some(t0 + h(2)),
                ..q(10)
            },
            &["o3", "o2"],
            "the date range is inclusive at both ends",
        ),
        (
            SupportQuery {
                email: alice(),
                to: Some(t0 + h(1)),
                ..q(10)
            },
            &["o1"],
            "email and date range together",
        ),
    ];
    for (query, expected, why) in cases {
        let shown = format!("{query:?}");
        assert_eq!(
            support_ids(&models, query).await,
            expected,
            "{why}: {shown}"
        );
    }
    let view = found(support::get_support_order(&models, "o3")).await;
    assert_eq!(view.status, OrderStatus::Paid);
    assert_eq!(view.payment_status, Some(PaymentStatus::Succeeded));
    assert_eq!(view.intent_id.as_deref(), Some("pi_o3"));
    assert_eq!(view.total, eur(2699));
}

#[tokio::test]
async fn support_search_pages_through_sparse_matches() {
    let models = MemoryReadModelStore::new();
    let mut s = Streams::new();
    let t0 = base_time();
    let mut events = Vec::new();
    for i in 0..60 {
        let id = format!("o{i:02}");
        events.push(s.order(
            &id,
            placed(&id, "alice", "alice@example.com", t0 + Duration::minutes(i)),
        ));
        if i % 7 == 0 {
            events.push(s.order(&id, paid(&id, t0)));
        }
    }
    apply(&models, &supp(), events).await;
    let found = support_ids(
        &models,
        SupportQuery {
            email: Some("alice@example.com".to_owned()),
            status: Some(OrderStatus::Paid),
            limit: 5,
            ..SupportQuery::default()
        },
    )
    .await;
    assert_eq!(found, ["o56", "o49", "o42", "o35", "o28"]);
    let all_paid = support_ids(
        &models,
        SupportQuery {
            email: Some("alice@example.com".to_owned()),
            status: Some(OrderStatus::Paid),
            limit: 100,
            ..SupportQuery::default()
        },
    )
    .await;
    assert_eq!(all_paid.len(), 9);
}

/// Support resends a notification given up on: it is due again, off the failed list, no longer
/// counted on the order, and on the order's timeline.
#[tokio::test]
async fn a_resent_notification_is_due_again_and_no_longer_counted_as_failed() {
    let mut s = Streams::new();
    let at = s.at();
    let mut events = vec![
        s.order("o1", placed("o1", "alice", "alice@example.com", at)),
        s.order("o1", paid("o1", at)),
    ];
    let confirmed = events[1].event_id.to_string();
    let (failed_at, due_at) = (at + Duration::minutes(1), at + Duration::minutes(5));
    events.push(s.ev(
        StreamType::Notification,
        &confirmed,
        &delivery(&confirmed, "o1", 1, "failed", failed_at),
    ));
    let models = MemoryReadModelStore::new();
    for projection in [notifs(), supp()] {
        apply(&models, &projection, events.clone()).await;
    }
    async fn failed_count(models: &MemoryReadModelStore) -> u32 {
        found(support::get_support_order(models, "o1"))
            .await
            .failed_notifications
    }
    assert_eq!(failed_count(&models).await, 1);

    let resent = vec![s.ev(
        StreamType::Notification,
        &confirmed,
        &NotificationEvent::NotificationResendRequested {
            notification_id: NotificationId::parse(&confirmed).expect("id"),
            order_id: oid("o1"),
            kind: "order_confirmed".to_owned(),
            attempts: 1,
            at: due_at,
        },
    )];
    for projection in [notifs(), supp()] {
        apply(&models, &projection, resent.clone()).await;
    }
    assert!(notifications::failed_notifications(&models, 10, None)
        .await
        .expect("failed")
        .items
        .is_empty());
    let due = notifications::due_notifications(&models, due_at, 10)
        .await
        .expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].delivery_status, DeliveryStatus::Retrying);
    assert_eq!(due[0].attempts, 1);
    assert_eq!(failed_count(&models).await, 0);
    let timeline = support::order_timeline(&models, "o1")
        .await
        .expect("timeline");
    let last = timeline.last().expect("entries");
    assert_eq!(last.event_type, "NotificationResendRequested");
    assert!(last.summary.contains("resend requested after 1 attempts"));
}

#[tokio::test]
async fn the_support_timeline_joins_order_payment_and_notification_events() {
    let models = MemoryReadModelStore::new();
    let mut s = Streams::new();
    let at = s.at();
    let order_placed = s.order("o1", placed("o1", "alice", "alice@example.com", at));
    let payment = vec![
        s.payment("pay-o1", requested("o1")),
        s.payment("pay-o1", intent_created("o1")),
    ];
    let t = s.at();
    let later = vec![
        s.payment("pay-o1", succeeded("o1", t)),
        s.order("o1", paid("o1", t)),
    ];
    // Payment stream first, order stream after: the timeline still sorts by time.
    apply(&models, &supp(), payment).await;
    apply(&models, &supp(), vec![order_placed]).await;
    apply(&models, &supp(), later).await;

    let timeline = support::order_timeline(&models, "o1")
        .await
        .expect("timeline");
    let entries: Vec<(TimelineSource, &str)> = timeline
        .iter()
        .map(|e| (e.source, e.event_type.as_str()))
        .collect();
    assert_eq!(
        entries,
        [
            (TimelineSource::Order, "OrderPlaced"),
            (TimelineSource::Payment, "PaymentRequested"),
            (TimelineSource::Payment, "PaymentIntentCreated"),
            (TimelineSource::Payment, "PaymentSucceeded"),
            (TimelineSource::Order, "OrderPaid"),
            (TimelineSource::Notification, "order_confirmed"),
        ]
    );
    assert!(timeline[2].summary.contains("pi_o1"));
    assert!(timeline[5].summary.contains("Order o1 confirmed"));
    assert!(support::order_timeline(&models, "o9")
        .await
        .expect("timeline")
        .is_empty());
}

/// A dispute opened on an order's payment notifies the customer once, whether its event is
/// applied before or after the order's `OrderPlaced` (different streams arrive in any order);
/// later dispute statuses notify nobody.
#[tokio::test]
async fn an_opened_dispute_notifies_the_customer_whatever_the_interleaving() {
    let mut s = Streams::new();
    let at = s.at();
    let placed = s.order("o7", placed("o7", "alice", "alice@example.com", at));
    let dispute = |s: &mut Streams, status: &str| {
        s.payment(
            "pay-o7",
            PaymentEvent::PaymentDisputed {
                payment_id: payid("pay-o7"),
                order_id: oid("o7"),
                dispute_id: "dp_7".to_owned(),
                reason: "fraudulent".to_owned(),
                status: status.to_owned(),
                amount: Some(eur(2699)),
                withdrawn: (status == "lost").then(|| eur(2699)),
                at,
            },
        )
    };
    let opened = dispute(&mut s, "needs_response");
    let lost = dispute(&mut s, "lost");

    let in_order = MemoryReadModelStore::new();
    for e in [&placed, &opened, &lost] {
        apply(&in_order, &notifs(), vec![e.clone()]).await;
    }
    let early = MemoryReadModelStore::new();
    for e in [&opened, &lost, &placed] {
        apply(&early, &notifs(), vec![e.clone()]).await;
    }
    assert_eq!(
        in_order.dump().expect("dump"),
        early.dump().expect("dump"),
        "the same notifications whatever the order"
    );
    let list = customer_notifications(&early, "alice", 10).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].kind, NotificationKind::DisputeOpened);
    assert_eq!(list[0].notification_id, opened.event_id);
    assert!(list[0].body.contains("fraudulent") && list[0].body.contains("o7"));
}

/// A lost dispute shows what it withdrew on the order view, the support view and the timeline,
/// even when its report leaves the amount out; a payment is found by the charge its success
/// named.
#[tokio::test]
async fn a_lost_dispute_shows_the_amount_withdrawn_and_orders_are_found_by_charge() {
    let mut s = Streams::new();
    let at = s.at();
    let dispute = |s: &mut Streams, status: &str, amount: Option<Money>| {
        s.payment(
            "pay-o8",
            PaymentEvent::PaymentDisputed {
                payment_id: payid("pay-o8"),
                order_id: oid("o8"),
                dispute_id: "dp_8".to_owned(),
                reason: "fraudulent".to_owned(),
                status: status.to_owned(),
                withdrawn: if status == "lost" {
                    amount.clone()
                } else {
                    None
                },
                amount,
                at,
            },
        )
    };
    let events = vec![
        s.order("o8", placed("o8", "bob", "bob@example.com", at)),
        s.payment("pay-o8", succeeded("o8", at)),
        dispute(&mut s, "needs_response", Some(eur(2699))),
        dispute(&mut s, "lost", Some(eur(2699))),
        // A later report of the same dispute without an amount keeps what was known.
        dispute(&mut s, "lost", None),
    ];
    let models = MemoryReadModelStore::new();
    apply(&models, &history(), events.clone()).await;
    apply(&models, &supp(), events).await;

    let view = found(order_history::get_order(&models, "o8")).await;
    let d = view.dispute.expect("dispute on the order view");
    assert_eq!(d.status, "lost");
    assert_eq!(d.amount, Some(eur(2699)));
    assert_eq!(d.withdrawn, Some(eur(2699)));

    let q = SupportQuery {
        charge_id: Some("ch_o8".to_owned()),
        limit: 10,
        ..SupportQuery::default()
    };
    let found = support::search_orders(&models, &q).await.expect("search");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].charge_id.as_deref(), Some("ch_o8"));
    assert_eq!(
        found[0].dispute.as_ref().and_then(|d| d.withdrawn.clone()),
        Some(eur(2699))
    );
    let other = SupportQuery {
        charge_id: Some("ch_o9".to_owned()),
        limit: 10,
        ..SupportQuery::default()
    };
    assert!(support_ids(&models, other).await.is_empty());
    let timeline = support::order_timeline(&models, "o8")
        .await
        .expect("timeline");
    assert!(
        timeline
            .iter()
            .any(|e| e.summary == "dispute dp_8 lost: fraudulent (26.99 EUR withdrawn)"),
        "{timeline:?}"
    );
}
