//! The runner (steps, checkpoints, gap filling, rebuild), the in-memory store against the port
//! conformance suite, and whole-system properties on simulated histories.

use commands::FeedCursor;
use commands::{EventEnvelope, EventStore, StreamRef};
use domain::{Event, ProductEvent, ProductId, StreamType};
use projections::catalog::{self, CatalogProjection};
use projections::order_history;
use projections::store::{DocKey, EventBatch};
use projections::support;
use projections::testsuite::conformance;
use projections::testsuite::fixtures::{
    base_time, envelope, event_envelope, raw_product_event, Simulator,
};
use projections::testsuite::properties::incremental_equals_rebuild;
use projections::testsuite::VecEventStore;
use projections::{
    all_projections, rebuild_all, MemoryReadModelStore, Projection, ProjectionRunner,
    ReadModelError, ReadModelStore, RunnerError, StepOutcome,
};
use proptest::prelude::*;
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

fn catalog() -> Arc<dyn Projection> {
    Arc::new(CatalogProjection)
}

fn product_created(id: &str, seq_time: i64) -> EventEnvelope {
    let e = ProductEvent::ProductCreated {
        product_id: ProductId::parse(id).expect("id"),
        name: format!("Product {id}"),
        category: "books".to_owned(),
        price: domain::Money::from_minor(1000, domain::Currency::EUR).expect("money"),
        on_hand: 10,
    };
    event_envelope(
        StreamType::Product,
        id,
        1,
        &e,
        base_time() + chrono::Duration::seconds(seq_time),
    )
}

fn restocked(id: &str, seq: u64, on_hand: u32) -> EventEnvelope {
    let e = ProductEvent::ProductRestocked {
        product_id: ProductId::parse(id).expect("id"),
        quantity: 1,
        on_hand,
        available: on_hand,
    };
    event_envelope(StreamType::Product, id, seq, &e, base_time())
}

fn cart_event(id: &str, seq: u64) -> EventEnvelope {
    envelope(
        StreamType::Cart,
        id,
        seq,
        "CartOpened",
        1,
        json!({"cart_id": id, "customer_id": "alice"}),
        base_time(),
    )
}

fn setup(
    events: Vec<EventEnvelope>,
    batch: usize,
) -> (
    Arc<VecEventStore>,
    Arc<MemoryReadModelStore>,
    ProjectionRunner,
) {
    let store = Arc::new(VecEventStore::with_events(events));
    let models = Arc::new(MemoryReadModelStore::new());
    let runner = ProjectionRunner::new(store.clone(), models.clone(), catalog(), batch);
    (store, models, runner)
}

async fn step(runner: &ProjectionRunner) -> StepOutcome {
    runner.step().await.expect("step")
}

async fn step_deferred(runner: &ProjectionRunner) -> StepOutcome {
    runner.step_deferred().await.expect("step")
}

/// A step's outcome when it consumed the feed up to `position`, applying `applied` events.
fn progressed(applied: usize, position: u64) -> StepOutcome {
    StepOutcome::Progressed {
        applied,
        position: FeedCursor::at(position),
    }
}

async fn catalog_checkpoint(models: &MemoryReadModelStore) -> FeedCursor {
    models.checkpoint("catalog").await.expect("checkpoint")
}

async fn find_product(models: &MemoryReadModelStore, id: &str) -> Option<catalog::ProductView> {
    catalog::get_product(models, id).await.expect("get")
}

async fn product(models: &MemoryReadModelStore, id: &str) -> catalog::ProductView {
    find_product(models, id).await.expect("exists")
}

#[tokio::test]
async fn the_memory_store_passes_the_conformance_suite() {
    conformance::run_all(|| {
        (
            Arc::new(MemoryReadModelStore::new()) as Arc<dyn ReadModelStore>,
            Box::new(()) as conformance::Guard,
        )
    })
    .await;
}

#[tokio::test]
async fn a_step_on_an_empty_feed_is_idle() {
    let (_, models, runner) = setup(Vec::new(), 10);
    assert_eq!(step(&runner).await, StepOutcome::Idle);
    assert_eq!(catalog_checkpoint(&models).await, FeedCursor::start());
}

#[tokio::test]
async fn steps_page_through_the_feed_and_resume_from_the_checkpoint() {
    let events = vec![
        product_created("p1", 1),
        cart_event("c1", 1),
        product_created("p2", 2),
        restocked("p1", 2, 11),
        product_created("p3", 3),
    ];
    let (store, models, runner) = setup(events, 2);
    assert_eq!(step(&runner).await, progressed(1, 2));
    assert_eq!(step(&runner).await, progressed(2, 4));
    // A new runner (a restarted worker) continues from the stored checkpoint.
    let runner = ProjectionRunner::new(store.clone(), models.clone(), catalog(), 2);
    assert_eq!(step(&runner).await, progressed(1, 5));
    assert_eq!(step(&runner).await, StepOutcome::Idle);
    let p1 = product(&models, "p1").await;
    assert_eq!((p1.on_hand, p1.version), (11, 2));
    assert_eq!(
        catalog::list_products(models.as_ref(), None, 10, None)
            .await
            .expect("list")
            .items
            .len(),
        3
    );
}

#[tokio::test]
async fn a_deferred_checkpoint_waits_for_relevant_events_or_its_interval() {
    // Five foreign events, then one the catalog handles.
    let mut events: Vec<EventEnvelope> = (1..=5).map(|i| cart_event(&format!("c{i}"), 1)).collect();
    events.push(product_created("p1", 0));
    let (_, models, runner) = setup(events, 2);
    for position in [2, 4] {
        assert_eq!(step_deferred(&runner).await, progressed(0, position));
        assert_eq!(
            catalog_checkpoint(&models).await,
            FeedCursor::start(),
            "foreign pages write nothing yet"
        );
    }
    // The page with p1 writes the checkpoint in the same transaction as the document.
    assert_eq!(step_deferred(&runner).await, progressed(1, 6));
    assert_eq!(catalog_checkpoint(&models).await, FeedCursor::at(6));
    assert!(find_product(&models, "p1").await.is_some());
    assert_eq!(step_deferred(&runner).await, StepOutcome::Idle);
}

#[tokio::test]
async fn an_idle_deferred_checkpoint_is_written_once_it_is_due() {
    let events = (1..=3).map(|i| cart_event(&format!("c{i}"), 1)).collect();
    let (_, models, runner) = setup(events, 10);
    assert_eq!(step_deferred(&runner).await, progressed(0, 3));
    assert_eq!(step_deferred(&runner).await, StepOutcome::Idle);
    assert_eq!(catalog_checkpoint(&models).await, FeedCursor::start());
    tokio::time::sleep(projections::runner::CHECKPOINT_INTERVAL).await;
    assert_eq!(step_deferred(&runner).await, StepOutcome::Idle);
    assert_eq!(
        catalog_checkpoint(&models).await,
        FeedCursor::at(3),
        "an idle step wrote the deferred checkpoint"
    );
}

#[tokio::test]
async fn the_checkpoint_advances_past_pages_of_foreign_events() {
    let events = (1..=5).map(|i| cart_event(&format!("c{i}"), 1)).collect();
    let (_, models, runner) = setup(events, 3);
    assert_eq!(step(&runner).await, progressed(0, 3));
    assert_eq!(catalog_checkpoint(&models).await, FeedCursor::at(3));
    step(&runner).await;
    assert_eq!(catalog_checkpoint(&models).await, FeedCursor::at(5));
    assert_eq!(step(&runner).await, StepOutcome::Idle);
}

#[tokio::test]
async fn a_gap_in_delivered_events_is_filled_from_the_event_store() {
    let events = vec![
        product_created("p1", 1),
        restocked("p1", 2, 11),
        restocked("p1", 3, 12),
        restocked("p1", 4, 13),
        product_created("p2", 2),
    ];
    let (_, models, runner) = setup(events.clone(), 10);
    let summary = runner
        .apply_with_gap_fill(vec![
            events[4].clone(),
            events[3].clone(),
            events[1].clone(),
            cart_event("c1", 1),
        ])
        .await
        .expect("apply");
    assert_eq!(summary.applied, 5, "p2, then p1 1..=4 after the fill");
    assert_eq!(summary.filled, 3);
    assert_eq!(
        summary.skipped, 1,
        "p1#2 came after the fill had applied it"
    );
    let p1 = product(&models, "p1").await;
    assert_eq!((p1.on_hand, p1.version), (13, 4));
    assert_eq!(
        models
            .last_applied("catalog", &StreamRef::new(StreamType::Product, "p1"))
            .await
            .expect("last"),
        4
    );
    assert_eq!(
        catalog_checkpoint(&models).await,
        FeedCursor::start(),
        "delivered events never move the feed checkpoint"
    );
}

#[tokio::test]
async fn a_gap_the_store_cannot_fill_is_an_error() {
    let (_, models, runner) = setup(vec![product_created("p1", 1)], 10);
    let err = runner
        .apply_with_gap_fill(vec![restocked("p1", 3, 12)])
        .await
        .expect_err("p1#2 is nowhere");
    assert!(
        matches!(
            err,
            RunnerError::UnfillableGap {
                expected: 1,
                to: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(find_product(&models, "p1").await.is_none());
}

#[tokio::test]
async fn a_failing_projection_stops_without_advancing_and_fails_again_on_retry() {
    let malformed = raw_product_event("p2", 1, "ProductCreated", 2, json!({"product_id": "p2"}));
    let (_, models, runner) = setup(
        vec![
            product_created("p1", 1),
            malformed,
            product_created("p3", 3),
        ],
        10,
    );
    for _ in 0..2 {
        let err = runner.step().await.expect_err("malformed payload");
        assert!(matches!(
            err,
            RunnerError::ReadModel(ReadModelError::Projection { .. })
        ));
        assert!(!err.is_transient());
        assert_eq!(catalog_checkpoint(&models).await, FeedCursor::start());
        assert!(find_product(&models, "p1").await.is_none());
    }
}

#[tokio::test]
async fn rebuild_replays_from_zero_and_reports_progress() {
    let events: Vec<EventEnvelope> = (0..12)
        .map(|i| product_created(&format!("p{i}"), i))
        .collect();
    let (store, models, runner) = setup(events, 5);
    step(&runner).await;
    // A stray document the rebuild must drop.
    models
        .put_doc(
            DocKey::new(catalog::PRODUCTS, "ghost"),
            projections::EncodedDoc::from_json(
                &json!({}),
                vec![projections::IndexEntry::new(catalog::ALL, "all", "ghost")],
            ),
        )
        .await
        .expect("put");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let summary = runner
        .rebuild(move |position, head| seen2.lock().expect("lock").push((position, head)))
        .await
        .expect("rebuild");
    assert_eq!(summary.events, 12);
    assert_eq!(summary.applied, 12);
    assert_eq!(summary.position, store.head().await.expect("head"));
    assert_eq!(*seen.lock().expect("lock"), [(12, 12)]);
    assert!(models
        .get(catalog::PRODUCTS, "ghost")
        .await
        .expect("get")
        .is_none());
    assert_eq!(catalog_checkpoint(&models).await, FeedCursor::at(12));
    assert_eq!(step(&runner).await, StepOutcome::Idle);
}

#[tokio::test]
async fn rebuild_all_pipelines_pages_and_reports_each() {
    let mut sim = Simulator::new(7);
    sim.run(60);
    let store = Arc::new(VecEventStore::with_events(sim.into_events()));
    let head = store.head().await.expect("head");
    let models = Arc::new(MemoryReadModelStore::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let summary = rebuild_all(
        store.clone(),
        models.clone(),
        &all_projections(),
        10,
        move |position, head| seen2.lock().expect("lock").push((position, head)),
    )
    .await
    .expect("rebuild");
    assert_eq!(summary.position, head);
    assert_eq!(summary.events, head.count());
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len() as u64, head.count().div_ceil(10));
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(seen.last().copied(), Some((head.count(), head.count())));
}

#[test]
fn the_four_projections_have_distinct_names_and_collections() {
    let all = all_projections();
    let names: Vec<&str> = all.iter().map(|p| p.name()).collect();
    assert_eq!(
        names,
        ["catalog", "order_history", "notifications", "support"]
    );
    let mut seen = HashSet::new();
    for p in &all {
        for c in p.collections() {
            assert!(seen.insert(*c), "collection {c} owned twice");
        }
    }
    // The delivery state is folded from the notification streams, so a rebuild owns it too.
    assert!(seen.contains(projections::notifications::DELIVERIES));
}

/// The views agree with the write side's own state after a long simulated history.
#[tokio::test]
async fn views_agree_with_the_aggregates_after_a_simulated_history() {
    let mut sim = Simulator::new(42);
    sim.run(400);
    let store = Arc::new(VecEventStore::with_events(sim.events().to_vec()));
    let models = Arc::new(MemoryReadModelStore::new());
    rebuild_all(store, models.clone(), &all_projections(), 64, |_, _| {})
        .await
        .expect("rebuild");

    let mut products = 0;
    for (id, p) in sim.products() {
        let view = product(&models, id).await;
        assert_eq!(view.on_hand, p.on_hand, "{id}");
        assert_eq!(view.reserved, p.reserved(), "{id}");
        assert_eq!(view.available, p.available(), "{id}");
        assert_eq!(view.status, p.status, "{id}");
        assert_eq!(Some(view.price), p.price.clone(), "{id}");
        products += 1;
    }
    assert!(products > 0);
    let mut orders = 0;
    for (id, o) in sim.orders() {
        let view = order_history::get_order(models.as_ref(), id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(view.status, o.status, "{id}");
        assert_eq!(view.paid, o.paid, "{id}");
        assert_eq!(view.refunded, o.refunded, "{id}");
        assert_eq!(Some(view.total.clone()), o.total, "{id}");
        let s = support::get_support_order(models.as_ref(), id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(s.status, o.status, "{id}");
        orders += 1;
    }
    assert!(orders > 5, "the simulation placed orders");
    for (id, p) in sim.payments() {
        let order_id = p.order_id.as_ref().expect("payment has an order");
        let view = order_history::get_order(models.as_ref(), order_id.as_str())
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(view.payment_status, Some(p.status), "{id}");
        assert_eq!(view.intent_id, p.intent_id, "{id}");
    }
    // Every status the simulation reached is searchable, and counts add up.
    let mut total = 0;
    for status in domain::OrderStatus::ALL {
        let found = support::search_orders(
            models.as_ref(),
            &support::SupportQuery {
                status: Some(status),
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .expect("search");
        assert!(found.iter().all(|v| v.status == status));
        total += found.len();
    }
    assert_eq!(total, orders);
}

#[tokio::test]
async fn a_simulated_history_covers_every_event_type_the_projections_handle() {
    let mut sim = Simulator::new(3);
    sim.run(600);
    let types: HashSet<&str> = sim.events().iter().map(|e| e.event_type.as_str()).collect();
    for expected in [
        "ProductCreated",
        "ProductRestocked",
        "StockReserved",
        "StockReleased",
        "StockCommitted",
        "OrderPlaced",
        "OrderPaid",
        "OrderPaymentFailed",
        "OrderCancelled",
        "OrderExpired",
        "OrderShipped",
        "OrderDelivered",
        "OrderRefunded",
        "PaymentRequested",
        "PaymentIntentCreated",
        "PaymentSucceeded",
        "PaymentFailed",
        "PaymentRefunded",
        "PaymentDisputed",
        "CartCheckedOut",
    ] {
        assert!(types.contains(expected), "no {expected} in the simulation");
    }
    // Sanity: the payloads round-trip through the domain decoder.
    for e in sim
        .events()
        .iter()
        .filter(|e| e.stream_type == StreamType::Order)
    {
        domain::OrderEvent::decode(&e.event_type, e.event_version, e.payload.json())
            .expect("decodes");
    }
}

async fn memory_property(seed: u64, steps: usize) {
    incremental_equals_rebuild(
        Arc::new(MemoryReadModelStore::new()),
        Arc::new(MemoryReadModelStore::new()),
        Arc::new(MemoryReadModelStore::new()),
        |m: &MemoryReadModelStore| m.dump().expect("dump"),
        seed,
        steps,
    )
    .await;
}

#[tokio::test]
async fn incremental_equals_rebuild_on_a_long_history() {
    memory_property(1, 300).await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random interleavings of several products, orders and payments, delivered at least once in
    /// any order and in random batch sizes, give exactly the documents a rebuild gives.
    #[test]
    fn incremental_in_any_order_equals_rebuild_from_zero(seed in any::<u64>(), steps in 1usize..80) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(memory_property(seed, steps));
    }
}

#[tokio::test]
async fn a_namespaced_generation_passes_the_conformance_suite() {
    conformance::run_all(|| {
        let shared = Arc::new(MemoryReadModelStore::new()) as Arc<dyn ReadModelStore>;
        (
            Arc::new(projections::generations::Namespaced::new(shared, 3))
                as Arc<dyn ReadModelStore>,
            Box::new(()) as conformance::Guard,
        )
    })
    .await;
}

async fn listed(store: &projections::generations::Namespaced) -> usize {
    let query = projections::Query::new(catalog::ALL, catalog::ALL_PARTITION, 10);
    store.query(query).await.expect("query").len()
}

#[tokio::test]
async fn generations_in_one_store_neither_see_nor_reset_each_other() {
    use projections::generations::Namespaced;
    let shared = Arc::new(MemoryReadModelStore::new()) as Arc<dyn ReadModelStore>;
    let (blue, green) = (
        Namespaced::new(shared.clone(), 0),
        Namespaced::new(shared.clone(), 1),
    );
    let projection = catalog();
    let created = product_created("p1", 1);
    blue.apply_batch(
        EventBatch::new(projection.clone(), vec![created.clone()])
            .with_checkpoint(FeedCursor::at(1)),
    )
    .await
    .expect("blue");
    assert_eq!(green.get(catalog::PRODUCTS, "p1").await.unwrap(), None);
    assert_eq!(
        green.checkpoint("catalog").await.unwrap(),
        FeedCursor::start()
    );
    green
        .apply_batch(
            EventBatch::new(projection.clone(), vec![created]).with_checkpoint(FeedCursor::at(1)),
        )
        .await
        .expect("green");
    assert_eq!(listed(&blue).await, 1);
    assert_eq!(listed(&green).await, 1);
    blue.reset(projection.as_ref()).await.expect("reset blue");
    assert_eq!(listed(&blue).await, 0);
    assert_eq!(listed(&green).await, 1, "the other generation is untouched");
    assert!(green.get(catalog::PRODUCTS, "p1").await.unwrap().is_some());
    assert_eq!(
        green.checkpoint("catalog").await.unwrap(),
        FeedCursor::at(1)
    );
}
