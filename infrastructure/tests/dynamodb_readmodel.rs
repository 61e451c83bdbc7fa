//! The DynamoDB read-model store on moto: the port conformance suite, the real projections
//! building the same documents as the in-memory store, concurrent writers on one document, and
//! batches too large for one transaction.

#[path = "support/moto.rs"]
mod moto;

#[path = "support/history.rs"]
mod history;
use history::{rebuild_every_projection, simulated_history};

use commands::FeedCursor;
use infrastructure::aws::{DynamoReadModelStore, RetryPolicy};
use projections::store::EventBatch;
use projections::testsuite::conformance::{self, add, put, TestProjection, DOCS};
use projections::testsuite::properties::{assert_same_dump, incremental_equals_rebuild};
use projections::Query;
use projections::{order_history, ApplyOutcome, ReadModelStore};
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

/// [`fresh_store`] for `conformance::run_all`, which asks for stores synchronously: table
/// creation is async.
fn fresh_store_now() -> DynamoReadModelStore {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(fresh_store()))
}

/// A store for the conformance suite, with nothing else to keep alive.
fn unguarded(store: Arc<dyn ReadModelStore>) -> (Arc<dyn ReadModelStore>, conformance::Guard) {
    (store, Box::new(()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_namespaced_in_the_dynamodb_tables_passes_the_conformance_suite() {
    conformance::run_all(|| {
        let store = Arc::new(fresh_store_now());
        unguarded(Arc::new(projections::generations::Namespaced::new(
            store, 2,
        )))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_store_passes_the_conformance_suite() {
    conformance::run_all(|| unguarded(Arc::new(fresh_store_now()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hot_indexes_the_dynamodb_store_passes_the_conformance_suite() {
    conformance::run_all(|| {
        let store = fresh_store_now().with_hot_indexes([
            conformance::BY_GROUP,
            conformance::BY_TAG,
            conformance::OTHER_BY_GROUP,
        ]);
        unguarded(Arc::new(store))
    })
    .await;
}

/// The keys of one group, in the order the index lists them.
async fn group(store: &DynamoReadModelStore, group: &str) -> Vec<String> {
    store
        .query(Query::new(conformance::BY_GROUP, group, 1_000))
        .await
        .expect("query")
        .iter()
        .map(|d| d["key"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_index_spreads_its_writes_over_shards_and_still_reads_entries_written_before() {
    let (names, _) = moto::fresh_stack().await;
    let client = aws_sdk_dynamodb::Client::new(&moto::sdk_config().await);
    let projection: Arc<dyn projections::Projection> = Arc::new(TestProjection::new());
    // Entries written before the index was hot: all under one partition.
    let plain = DynamoReadModelStore::new(client.clone(), &names, retry());
    let before: Vec<_> = (0..20)
        .map(|i| {
            put(
                &format!("old-{i}"),
                1,
                &format!("old-{i:02}"),
                "g",
                &format!("{i:04}"),
                i,
            )
        })
        .collect();
    plain
        .apply_batch(EventBatch::new(projection.clone(), before))
        .await
        .expect("apply before");
    let hot = DynamoReadModelStore::new(client.clone(), &names, retry())
        .with_hot_indexes([conformance::BY_GROUP]);
    assert_eq!(group(&hot, "g").await.len(), 20, "the old entries are read");
    // Moving an old document deletes its old entry; new ones go to the shards.
    let after: Vec<_> = std::iter::once(put("old-3", 2, "old-03", "h", "0003", 3))
        .chain((0..40).map(|i| {
            put(
                &format!("new-{i}"),
                1,
                &format!("new-{i:02}"),
                "g",
                &format!("{:04}", 20 + i),
                i,
            )
        }))
        .collect();
    hot.apply_batch(EventBatch::new(projection, after))
        .await
        .expect("apply after");
    let listed = group(&hot, "g").await;
    assert_eq!(listed.len(), 59, "{listed:?}");
    assert!(!listed.contains(&"old-03".to_owned()));
    let expected: Vec<String> = (0..20)
        .filter(|i| *i != 3)
        .map(|i| format!("old-{i:02}"))
        .chain((0..40).map(|i| format!("new-{i:02}")))
        .collect();
    assert_eq!(
        listed, expected,
        "one sort order over the shards and the old partition"
    );
    assert_eq!(group(&hot, "h").await, vec!["old-03".to_owned()]);
    let limited = hot
        .query(Query::new(conformance::BY_GROUP, "g", 5).descending())
        .await
        .expect("query");
    let keys: Vec<_> = limited.iter().map(|d| d["key"].clone()).collect();
    assert_eq!(keys, ["new-39", "new-38", "new-37", "new-36", "new-35"]);
    // No partition of the index table took every new entry.
    let mut partitions = std::collections::BTreeMap::<String, usize>::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(&names.index_table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        for item in page.items() {
            if let Some(p) = item.get("p").and_then(|v| v.as_s().ok()) {
                if p.starts_with(&format!("{}#g\u{1}", conformance::BY_GROUP)) {
                    *partitions.entry(p.clone()).or_default() += 1;
                }
            }
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    assert!(partitions.len() >= 5, "{partitions:?}");
    assert!(partitions.values().all(|n| *n < 20), "{partitions:?}");
    assert_eq!(partitions.values().sum::<usize>(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projections_build_the_same_documents_on_dynamodb_as_in_memory() {
    let events = simulated_history(11, 60);
    let dynamo = Arc::new(fresh_store().await);
    let memory = Arc::new(projections::MemoryReadModelStore::new());
    rebuild_every_projection(events.clone(), dynamo.clone(), 97, "rebuild on dynamodb").await;
    rebuild_every_projection(events, memory.clone(), 97, "rebuild in memory").await;
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
        .apply_batch(EventBatch::new(
            projection.clone(),
            vec![put("seed", 1, "a", "g", "1", 0)],
        ))
        .await
        .expect("seed");
    // Eight streams add to the same document at once: the conditional writes make losers re-run.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        let projection = projection.clone();
        tasks.push(tokio::spawn(async move {
            store
                .apply_batch(EventBatch::new(
                    projection,
                    vec![add(&format!("s{t}"), 1, "a", 1 << t)],
                ))
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
        .apply_batch(
            EventBatch::new(projection.clone(), events.clone())
                .with_checkpoint(FeedCursor::at(120)),
        )
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
        FeedCursor::at(120)
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
        .apply_batch(EventBatch::new(projection, events).with_checkpoint(FeedCursor::at(120)))
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
