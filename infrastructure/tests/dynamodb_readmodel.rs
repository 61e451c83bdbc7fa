//! The DynamoDB read-model store on moto: the port conformance suite, the real projections
//! building the same documents as the in-memory store, concurrent writers on one document, and
//! batches too large for one transaction.

#[path = "support/moto.rs"]
mod moto;

use infrastructure::aws::{DynamoReadModelStore, RetryPolicy};
use projections::testsuite::conformance::{self, add, put, TestProjection, DOCS};
use projections::testsuite::fixtures::Simulator;
use projections::testsuite::properties::{assert_same_dump, incremental_equals_rebuild};
use projections::testsuite::VecEventStore;
use projections::Query;
use projections::{all_projections, order_history, rebuild_all, ApplyOutcome, ReadModelStore};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(200),
    }
}

async fn fresh_store() -> DynamoReadModelStore {
    let (names, _) = moto::fresh_stack().await;
    let client = aws_sdk_dynamodb::Client::new(&moto::sdk_config().await);
    DynamoReadModelStore::new(client, &names, retry())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_namespaced_in_the_dynamodb_tables_passes_the_conformance_suite() {
    conformance::run_all(|| {
        let store = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(fresh_store())
        });
        (
            Arc::new(projections::generations::Namespaced::new(
                Arc::new(store),
                2,
            )) as Arc<dyn ReadModelStore>,
            Box::new(()) as conformance::Guard,
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_store_passes_the_conformance_suite() {
    conformance::run_all(|| {
        // `run_all` asks for stores synchronously; table creation is async.
        let store = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(fresh_store())
        });
        (
            Arc::new(store) as Arc<dyn ReadModelStore>,
            Box::new(()) as conformance::Guard,
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projections_build_the_same_documents_on_dynamodb_as_in_memory() {
    let mut sim = Simulator::new(11);
    sim.run(60);
    let events = Arc::new(VecEventStore::with_events(sim.into_events()));
    let dynamo = Arc::new(fresh_store().await);
    let memory = Arc::new(projections::MemoryReadModelStore::new());
    rebuild_all(
        events.clone(),
        dynamo.clone(),
        &all_projections(),
        97,
        |_, _| {},
    )
    .await
    .expect("rebuild on dynamodb");
    rebuild_all(events, memory.clone(), &all_projections(), 97, |_, _| {})
        .await
        .expect("rebuild in memory");
    assert_same_dump(
        &dynamo.dump().await.expect("dump"),
        &memory.dump().expect("dump"),
        "dynamodb vs memory",
    );
    let mut listed = 0;
    for customer in ["alice", "bob", "carol"] {
        let on_dynamo =
            order_history::list_orders_for_customer(dynamo.as_ref(), customer, 100, None)
                .await
                .expect("list on dynamodb")
                .items;
        let in_memory =
            order_history::list_orders_for_customer(memory.as_ref(), customer, 100, None)
                .await
                .expect("list in memory")
                .items;
        assert_eq!(on_dynamo, in_memory, "orders of {customer}, newest first");
        listed += on_dynamo.len();
    }
    assert!(listed > 0, "the simulated history has orders");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_in_any_order_equals_rebuild_from_zero_on_dynamodb() {
    for seed in [3_u64, 8] {
        let (a, b, c) = (
            fresh_store().await,
            fresh_store().await,
            fresh_store().await,
        );
        incremental_equals_rebuild(
            Arc::new(a),
            Arc::new(b),
            Arc::new(c),
            |s: &DynamoReadModelStore| {
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current()
                        .block_on(s.dump())
                        .expect("dump")
                })
            },
            seed,
            12,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_on_one_document_lose_no_update() {
    let store = Arc::new(fresh_store().await);
    let projection: Arc<dyn projections::Projection> = Arc::new(TestProjection::new());
    store
        .apply_batch(
            projection.clone(),
            vec![put("seed", 1, "a", "g", "1", 0)],
            None,
        )
        .await
        .expect("seed");
    // Eight streams add to the same document at once: the conditional writes make losers re-run.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        let projection = projection.clone();
        tasks.push(tokio::spawn(async move {
            store
                .apply_batch(
                    projection,
                    vec![add(&format!("s{t}"), 1, "a", 1 << t)],
                    None,
                )
                .await
        }));
    }
    for t in tasks {
        let outcome = t.await.expect("task").expect("apply");
        assert_eq!(outcome.applied(), 1);
    }
    let doc = store.get(DOCS, "a").await.expect("get").expect("doc");
    assert_eq!(doc.get("value").and_then(Value::as_i64), Some(255));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_too_big_for_one_transaction_is_committed_in_order_with_its_checkpoint() {
    let store = fresh_store().await;
    let projection: Arc<dyn projections::Projection> = Arc::new(TestProjection::new());
    // 120 documents on 120 streams: a document, an index entry and an applied sequence each.
    let events: Vec<_> = (0..120)
        .map(|i| {
            put(
                &format!("s{i}"),
                1,
                &format!("k{i:03}"),
                "big",
                &format!("{i:03}"),
                i,
            )
        })
        .collect();
    let before = store.counts();
    let outcome = store
        .apply_batch(projection.clone(), events.clone(), Some(120))
        .await
        .expect("apply");
    let cost = store.counts() - before;
    assert_eq!(
        outcome,
        ApplyOutcome::Applied {
            applied: 120,
            skipped: 0
        }
    );
    assert!(
        cost.transact_write_items >= 4,
        "360 writes need several transactions: {cost:?}"
    );
    assert_eq!(
        store.checkpoint("conformance").await.expect("checkpoint"),
        120
    );
    let listed = store
        .query(Query::new(conformance::BY_GROUP, "big", 500).descending())
        .await
        .expect("query");
    assert_eq!(listed.len(), 120);
    assert_eq!(
        listed[0].get("key").and_then(Value::as_str),
        Some("k119"),
        "newest first"
    );
    // A redelivery of the whole batch is all duplicates.
    let again = store
        .apply_batch(projection, events, Some(120))
        .await
        .expect("again");
    assert_eq!(
        again,
        ApplyOutcome::Applied {
            applied: 0,
            skipped: 120
        }
    );
}
