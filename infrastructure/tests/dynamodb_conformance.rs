//! The shared event-store conformance suite on [`DynamoEventStore`] over moto (one test per
//! check, each on its own fresh tables), plus what only the DynamoDB store has: request budgets,
//! the feed indexer's idempotency, the analysts' time GSI, and commits whose existence checks
//! do not fit in the transaction.

#[path = "support/moto.rs"]
mod moto;

use chrono::{TimeZone, Utc};
use commands::conformance::new_event;
use commands::{
    AppendOutcome, Commit, EventStore, Idempotency, Snapshot, StoreError, StreamAppend, StreamRef,
    MAX_COMMIT_ACTIONS,
};
use commands::{FeedCursor, FeedTimeRange};
use domain::StreamType;
use infrastructure::aws::{DynamoEventStore, DynamoStoreOptions, ResourceNames, RetryPolicy};
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

fn options(index_on_append: bool) -> DynamoStoreOptions {
    DynamoStoreOptions {
        index_on_append,
        // Small pages, so that every multi-page path runs.
        query_page_size: Some(200),
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(200),
        },
        ..DynamoStoreOptions::default()
    }
}

async fn store_with(opts: DynamoStoreOptions) -> (DynamoEventStore, ResourceNames) {
    let (names, _) = moto::fresh_stack().await;
    let client = aws_sdk_dynamodb::Client::new(&moto::sdk_config().await);
    (DynamoEventStore::new(client, &names, opts), names)
}

async fn fresh_store() -> DynamoEventStore {
    store_with(options(true)).await.0
}

mod conformance {
    commands::conformance_tests!(super::fresh_store);
}

fn part(stream: &StreamRef, expected_version: u64, n: usize) -> StreamAppend {
    StreamAppend {
        stream: stream.clone(),
        expected_version,
        events: (0..n)
            .map(|i| {
                new_event(
                    "ThingCounted",
                    json!({ "n": expected_version as usize + i }),
                )
            })
            .collect(),
        snapshot: None,
    }
}

fn commit(parts: Vec<StreamAppend>) -> Commit {
    Commit {
        streams: parts,
        idempotency: None,
    }
}

fn stream(t: StreamType, prefix: &str) -> StreamRef {
    StreamRef::new(t, format!("{prefix}-{}", uuid::Uuid::now_v7()))
}

async fn committed(store: &DynamoEventStore, c: Commit) {
    match store.append(c).await {
        Ok(AppendOutcome::Committed(_)) => {}
        other => panic!("expected a commit, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_is_one_transaction_plus_the_loads_of_its_streams() {
    let (store, _) = store_with(options(false)).await;
    let cart = stream(StreamType::Cart, "cart");
    let products = [
        stream(StreamType::Product, "p"),
        stream(StreamType::Product, "p"),
    ];
    committed(&store, commit(vec![part(&cart, 0, 3)])).await;
    for p in &products {
        committed(&store, commit(vec![part(p, 0, 2)])).await;
    }
    let order = stream(StreamType::Order, "order");
    let payment = stream(StreamType::Payment, "payment");

    let before = store.counts();
    let mut versions = Vec::new();
    for s in [&cart, &products[0], &products[1], &order, &payment] {
        versions.push(store.load(s).await.expect("load").version);
    }
    let loads = store.counts() - before;
    let checkout = Commit {
        streams: vec![
            part(&cart, versions[0], 1),
            part(&order, versions[3], 1),
            part(&products[0], versions[1], 1),
            part(&products[1], versions[2], 1),
            part(&payment, versions[4], 1),
        ],
        idempotency: Some(Idempotency {
            command_id: format!("http:alice:{}", uuid::Uuid::now_v7()),
            fingerprint: "f".into(),
            outcome: json!({"status": 201}),
        }),
    };
    let mid = store.counts();
    committed(&store, checkout).await;
    let append = store.counts() - mid;
    assert_eq!(
        append.transact_write_items, 1,
        "one TransactWriteItems: {append:?}"
    );
    assert_eq!(append.total(), 1, "and nothing else: {append:?}");
    assert_eq!(
        (loads.query, loads.total()),
        (5, 5),
        "each of the 5 loads is one Query: {loads:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_is_one_query_once_a_snapshot_exists_however_long_the_history() {
    let (store, _) = store_with(DynamoStoreOptions::default()).await;
    let s = stream(StreamType::Product, "long");
    let mut version = 0u64;
    while version < 600 {
        committed(&store, commit(vec![part(&s, version, 99)])).await;
        version += 99;
    }
    let mut with_snapshot = part(&s, version, 1);
    with_snapshot.snapshot = Some(Snapshot {
        version: version + 1,
        schema_version: 1,
        state: json!({"n": version + 1}),
    });
    committed(&store, commit(vec![with_snapshot])).await;
    version += 1;
    committed(&store, commit(vec![part(&s, version, 3)])).await;

    let before = store.counts();
    let loaded = store.load(&s).await.expect("load");
    let cost = store.counts() - before;
    assert_eq!(loaded.version, version + 3);
    assert_eq!(loaded.events.len(), 3, "only the events after the snapshot");
    assert_eq!(
        loaded.snapshot.as_ref().map(|s| s.state.clone()),
        Some(json!({"n": version}))
    );
    assert_eq!((cost.query, cost.total()), (1, 1), "{cost:?}");

    // The snapshot item is no event: reads of the stream never return it.
    let all = store.read(&s, 1..=u64::MAX).await.expect("read");
    assert_eq!(all.len() as u64, version + 3);
    assert!(all.iter().zip(1..).all(|(e, seq)| e.sequence == seq));
}

/// A tail longer than the snapshot interval (a stream that has no snapshot yet, or a big commit
/// right after one) is read over several pages, newest first, and comes back whole and in
/// order; a newer snapshot replaces the older one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_longer_than_the_first_page_follows_the_pages() {
    let (store, _) = store_with(DynamoStoreOptions {
        snapshot_every: 4,
        query_page_size: Some(3),
        ..DynamoStoreOptions::default()
    })
    .await;
    let s = stream(StreamType::Order, "tail");
    committed(&store, commit(vec![part(&s, 0, 11)])).await;
    let loaded = store.load(&s).await.expect("load");
    assert_eq!(loaded.snapshot, None);
    assert_eq!(loaded.version, 11);
    assert!(loaded
        .events
        .iter()
        .zip(1..)
        .all(|(e, seq)| e.sequence == seq));
    assert_eq!(loaded.events.len(), 11);

    for (at, n) in [(11u64, 1usize), (12, 9)] {
        let mut snap = part(&s, at, n);
        snap.snapshot = Some(Snapshot {
            version: at + n as u64,
            schema_version: 1,
            state: json!({"at": at + n as u64}),
        });
        committed(&store, commit(vec![snap])).await;
    }
    committed(&store, commit(vec![part(&s, 21, 7)])).await;
    let before = store.counts();
    let loaded = store.load(&s).await.expect("load");
    let cost = store.counts() - before;
    assert_eq!(loaded.snapshot.as_ref().map(|s| s.version), Some(21));
    assert_eq!(loaded.version, 28);
    assert_eq!(
        loaded.events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (22..=28).collect::<Vec<_>>()
    );
    // Snapshot + 7 events + the one at the snapshot's version that ends the read, 3 per page.
    assert_eq!((cost.query, cost.total()), (3, 3), "{cost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_whose_existence_checks_do_not_fit_check_before_the_transaction() {
    let (store, _) = store_with(options(false)).await;
    let a = stream(StreamType::Order, "full-a");
    let b = stream(StreamType::Product, "full-b");
    committed(&store, commit(vec![part(&a, 0, 1)])).await;
    committed(&store, commit(vec![part(&b, 0, 1)])).await;

    // 100 writes on two existing streams: no room for the two ConditionChecks.
    let half = MAX_COMMIT_ACTIONS / 2;
    let before = store.counts();
    committed(&store, commit(vec![part(&a, 1, half), part(&b, 1, half)])).await;
    let cost = store.counts() - before;
    assert_eq!(
        (cost.transact_write_items, cost.get_item),
        (1, 2),
        "{cost:?}"
    );
    assert_eq!(store.load(&a).await.expect("load").version, 1 + half as u64);

    // An expected version ahead of the stream is still a Conflict on that stream.
    let ahead = commit(vec![
        part(&a, 1 + half as u64, half),
        part(&b, 5 + half as u64, half),
    ]);
    match store.append(ahead).await {
        Err(StoreError::Conflict { stream, .. }) => assert_eq!(stream, b),
        other => panic!("expected a Conflict on {b}, got {other:?}"),
    }
    assert_eq!(store.load(&a).await.expect("load").version, 1 + half as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indexer_indexes_each_event_once_whatever_is_redelivered() {
    let (store, _) = store_with(options(false)).await;
    let s = stream(StreamType::Order, "relay");
    committed(&store, commit(vec![part(&s, 0, 99)])).await;
    committed(&store, commit(vec![part(&s, 99, 21)])).await;
    assert_eq!(
        store.head().await.expect("head"),
        FeedCursor::start(),
        "nothing indexed without a relay"
    );
    let events = store.read(&s, 1..=200).await.expect("read");
    assert_eq!(events.len(), 120);

    let indexer = store.indexer().clone();
    indexer
        .index(events[..70].to_vec())
        .await
        .expect("first delivery");
    // Redelivery: overlapping batches, two indexers at once, then a shuffled repeat.
    let (a, b) = tokio::join!(
        indexer.index(events[50..120].to_vec()),
        indexer.index(events.clone()),
    );
    a.expect("index a");
    b.expect("index b");
    let mut again = events[10..30].to_vec();
    again.reverse();
    indexer.index(again).await.expect("redelivery");

    // One stream: all of it in one partition of the feed.
    let head = store.head().await.expect("head");
    assert_eq!(head.count(), 120);
    let feed = store.feed(&FeedCursor::start(), 1_000).await.expect("feed");
    let ids: HashSet<_> = feed.iter().map(|e| e.event_id).collect();
    assert_eq!(feed.len(), 120, "each event once");
    assert_eq!(ids.len(), 120);
    let partition = commands::feed::unpack(feed[0].global_position.expect("position")).0;
    let positions: Vec<(u32, u64)> = feed
        .iter()
        .filter_map(|e| e.global_position.map(commands::feed::unpack))
        .collect();
    assert_eq!(
        positions,
        (1..=120).map(|p| (partition, p)).collect::<Vec<_>>(),
        "gapless positions in the stream's partition"
    );
    let before_end = FeedCursor::start().after(&feed[..115]);
    assert_eq!(store.feed(&before_end, 5).await.expect("feed").len(), 5);
    assert!(store.feed(&head, 5).await.expect("feed").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_replay_a_time_range_through_the_time_index() {
    let (store, _) = store_with(options(false)).await;
    let base = Utc
        .with_ymd_and_hms(2026, 11, 21, 21, 50, 0)
        .single()
        .expect("valid date");
    let streams: Vec<StreamRef> = (0..6).map(|_| stream(StreamType::Order, "gsi")).collect();
    for (i, s) in streams.iter().enumerate() {
        let mut p = part(s, 0, 3);
        for (j, e) in p.events.iter_mut().enumerate() {
            // Spread over 21:50 .. 22:41, across the hour boundary.
            e.occurred_at = base + chrono::Duration::minutes((i * 3 + j) as i64 * 3);
        }
        committed(&store, commit(vec![p])).await;
    }
    let from = base + chrono::Duration::minutes(6);
    let to = base + chrono::Duration::minutes(30);
    let got = store.events_between(from, to).await.expect("replay");
    let times: Vec<_> = got.iter().map(|e| e.occurred_at).collect();
    let expected: Vec<_> = (2..=10)
        .map(|k| base + chrono::Duration::minutes(k * 3))
        .collect();
    assert_eq!(
        times, expected,
        "every event in [from, to], in time order, across the hour"
    );
}

/// The feed's time index: a time range is read hour by hour through the GSI and merged into feed
/// order, page after page, and holds exactly the feed's entries within the range, even where
/// feed order and time order disagree across hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_range_reads_the_feed_through_its_time_index_in_feed_order() {
    let (store, _) = store_with(options(false)).await;
    let streams = [
        stream(StreamType::Order, "time-a"),
        stream(StreamType::Order, "time-b"),
        stream(StreamType::Product, "time-c"),
    ];
    for s in &streams {
        committed(&store, commit(vec![part(s, 0, 20)])).await;
    }
    // Interleave the streams (each stays in sequence order) and spread occurred_at over three
    // hours so that feed order and time order disagree.
    let base = Utc.with_ymd_and_hms(2026, 11, 21, 21, 0, 0).unwrap();
    let mut events = Vec::new();
    for seq in 1..=20u64 {
        for s in &streams {
            let mut e = store.read(s, seq..=seq).await.expect("read").remove(0);
            let i = events.len() as i64;
            e.occurred_at = base + chrono::Duration::minutes((i * 37) % 60 * 3);
            events.push(e);
        }
    }
    store.indexer().index(events).await.expect("index");
    let feed = store.feed(&FeedCursor::start(), 1_000).await.expect("feed");
    assert_eq!(feed.len(), 60);

    let at = |h: u32, m: u32| Utc.with_ymd_and_hms(2026, 11, 21, h, m, 0).unwrap();
    for (from, to) in [
        (at(21, 10), at(22, 20)),
        (at(22, 0), at(22, 59)),
        (at(21, 0), at(23, 59)),
        (at(22, 30), at(22, 30)),
        (at(20, 0), at(20, 59)),
    ] {
        // Each partition's events in the range, in position order, merged as the feed merges.
        let mut partitions: Vec<Vec<_>> = vec![Vec::new(); 4];
        for e in &feed {
            let (partition, _) = commands::feed::unpack(e.global_position.expect("position"));
            if e.occurred_at >= from && e.occurred_at <= to {
                partitions[partition as usize].push(e.clone());
            }
        }
        let expected = commands::feed::merge(partitions, usize::MAX);
        let mut got = Vec::new();
        let mut after = FeedCursor::start();
        loop {
            let page = store
                .feed_in_time(FeedTimeRange {
                    after: &after,
                    from,
                    to,
                    limit: 7,
                })
                .await
                .expect("read")
                .expect("an indexed range");
            if page.is_empty() {
                break;
            }
            after = after.after(&page);
            assert!(page.len() <= 7);
            got.extend(page);
        }
        assert_eq!(got, expected, "{from} to {to}");
    }
    assert_eq!(
        store
            .feed_in_time(FeedTimeRange {
                after: &FeedCursor::start(),
                from: at(0, 0),
                to: at(0, 0) + chrono::Duration::days(40),
                limit: 10,
            })
            .await
            .expect("read"),
        None,
        "a range of more than a month is left to the feed"
    );
}
