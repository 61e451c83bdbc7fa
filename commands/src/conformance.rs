//! The event-store conformance suite, shared by every adapter of [`EventStore`].
//!
//! Every check is a `pub async fn` that takes a FRESH store, so adapter crates can run them one
//! by one (see [`conformance_tests!`](crate::conformance_tests)) or all at once with [`run_all`].
//!
//! The suite only speaks the port. It never assumes that `global_position` is set on `load` or
//! `read` results (only on `feed`), that [`CommitResult::position`] is known, or that the feed is
//! synchronous: feed checks poll until the events they wrote show up (see [`FEED_TIMEOUT`]), so
//! the same checks run against the embedded store and against DynamoDB behind its relay.
//!
//! ```text
//! async fn fresh_store() -> commands::conformance::WithGuard<MyStore, tempfile::TempDir> { .. }
//! commands::conformance_tests!(fresh_store);
//! ```

use crate::loader::{CachingLoader, Loader, LockingLoader, StoreLoader};
use crate::service::{CommandContext, CommandService, ServiceConfig};
use crate::store::{Actor, FeedFilter, LoadedStream};
use crate::store::{
    AppendOutcome, Commit, CommitResult, EventEnvelope, EventStore, Idempotency, Metadata,
    NewEvent, Snapshot, StoreError, StreamAppend, StreamRef, Upcaster, UpcastingStore,
    MAX_COMMIT_ACTIONS,
};
use crate::{CommandError, FeedCursor, Payload, SystemClock};
use chrono::{DateTime, TimeZone, Utc};
use domain::StreamType;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How long feed checks wait for an asynchronous feed (a relay) to catch up.
pub const FEED_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `task(i, barrier)` for every `i` in `0..n`, each on its own tokio task. The tasks share
/// one barrier of `n`, so once all of them wait on it they go on at the same moment. Returns the
/// results in `i` order; a task that panics fails the test.
pub async fn race<T, F, Fut>(n: usize, task: F) -> Vec<T>
where
    F: Fn(usize, Arc<tokio::sync::Barrier>) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| tokio::spawn(task(i, barrier.clone())))
        .collect();
    let mut results = Vec::with_capacity(n);
    for h in handles {
        results.push(h.await.expect("a racing task panicked"));
    }
    results
}

/// Lists every check once; [`run_all`] and [`conformance_tests!`](crate::conformance_tests) are
/// both generated from it, so a new check cannot be forgotten by either.
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_conformance_check {
    ($callback:ident { $($ctx:tt)* }) => {
        $crate::$callback! {
            { $($ctx)* }
            append_then_load_preserves_every_envelope_field,
            load_of_an_unknown_stream_is_empty,
            sequences_start_at_one_without_gaps,
            streams_are_keyed_by_type_and_id,
            expected_version_conflict_writes_nothing,
            multi_stream_commit_with_a_conflicting_last_stream_leaves_no_trace,
            concurrent_appends_to_one_stream_get_unique_gapless_sequences,
            duplicate_command_id_returns_the_first_result_and_writes_nothing,
            concurrent_duplicates_commit_exactly_once,
            idempotency_only_commit_records_the_command,
            idempotency_lookup_returns_the_stored_record,
            invalid_commits_are_rejected_without_writing,
            commit_at_the_action_limit_is_accepted,
            long_stream_loads_every_page_and_reads_exact_ranges,
            load_returns_the_latest_snapshot_and_only_later_events,
            feed_pages_cover_every_event_once_in_position_order,
            upcaster_applies_to_load_read_and_feed,
            commit_notifier_wakes_waiters_after_a_commit,
            commands_on_one_stream_all_land_once_with_every_loader,
            a_second_writer_never_makes_a_command_decide_wrong_with_every_loader,
            a_command_on_two_streams_commits_all_or_nothing_with_every_loader,
        }
    };
}

/// Expands to one `#[tokio::test(flavor = "multi_thread")]` per conformance check, each on a
/// fresh store made by `$make` (anything callable as `$make().await`, returning an
/// [`EventStore`]). The calling crate needs `tokio` with the `macros` and `rt-multi-thread`
/// features.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::__for_each_conformance_check!(__conformance_test_fns { $make });
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test_fns {
    ({ $make:expr } $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $crate::conformance::$name(($make)().await).await;
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_run_all {
    ({ $make:ident } $($name:ident),* $(,)?) => {
        $(
            tracing::info!(check = stringify!($name), "running store conformance check");
            $crate::conformance::$name($make().await).await;
        )*
    };
}

/// Runs every check, each on a fresh store from `make`.
pub async fn run_all<S: EventStore, F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    crate::__for_each_conformance_check!(__conformance_run_all { make });
}

/// A store that keeps something alive for as long as it lives (a temp dir, an emulator process,
/// a table to drop), so a `make` function can return both as one [`EventStore`].
pub struct WithGuard<S, G> {
    pub store: S,
    pub guard: G,
}

impl<S, G> WithGuard<S, G> {
    pub fn new(store: S, guard: G) -> Self {
        Self { store, guard }
    }
}

crate::forward_event_store! {
    impl[S: EventStore, G: Send + Sync + 'static] for WithGuard<S, G>, to |s| &s.store,
    forward [append, load, read, feed, feed_filtered, feed_in_time, head, idempotency, commit_notifier] {}
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A fixed instant with nanoseconds, so a store that truncates timestamps is caught.
fn instant(offset_secs: i64) -> DateTime<Utc> {
    let base = Utc
        .with_ymd_and_hms(2026, 11, 21, 22, 7, 13)
        .single()
        .expect("valid fixed date");
    base + chrono::Duration::seconds(offset_secs) + chrono::Duration::nanoseconds(123_456_789)
}

fn metadata(correlation: &str) -> Metadata {
    Metadata {
        correlation_id: correlation.to_string(),
        causation_id: Some(format!("cause-{correlation}")),
        actor: Actor {
            subject: "alice".into(),
            role: "customer".into(),
        },
        request_id: Some("req-1".into()),
        command_id: Some(format!("cmd-{correlation}")),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    }
}

/// A new event of `event_type` v1 with `payload` and full metadata.
pub fn new_event(event_type: &str, payload: Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.to_string(),
        event_version: 1,
        occurred_at: instant(0),
        payload: payload.into(),
        metadata: metadata("corr"),
    }
}

fn numbered_events(n: usize, from: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| new_event("ThingCounted", json!({ "n": from + i })))
        .collect()
}

fn stream(stream_type: StreamType, prefix: &str) -> StreamRef {
    StreamRef::new(stream_type, format!("{prefix}-{}", Uuid::now_v7()))
}

fn single(stream: &StreamRef, expected_version: u64, events: Vec<NewEvent>) -> Commit {
    Commit {
        streams: vec![StreamAppend {
            stream: stream.clone(),
            expected_version,
            events,
            snapshot: None,
        }],
        idempotency: None,
    }
}

fn part(stream: &StreamRef, expected_version: u64, events: Vec<NewEvent>) -> StreamAppend {
    StreamAppend {
        stream: stream.clone(),
        expected_version,
        events,
        snapshot: None,
    }
}

fn idem(command_id: &str, fingerprint: &str) -> Idempotency {
    Idempotency {
        command_id: command_id.to_string(),
        fingerprint: fingerprint.to_string(),
        outcome: json!({ "status": 201, "body": { "fingerprint": fingerprint } }),
    }
}

async fn committed<S: EventStore + ?Sized>(store: &S, commit: Commit, what: &str) -> CommitResult {
    match store.append(commit).await {
        Ok(AppendOutcome::Committed(result)) => result,
        Ok(AppendOutcome::Duplicate { .. }) => {
            panic!("{what}: expected the commit to be written, got Duplicate")
        }
        Err(e) => panic!("{what}: expected the commit to be written, got error {e:?}"),
    }
}

async fn load<S: EventStore + ?Sized>(store: &S, s: &StreamRef) -> LoadedStream {
    match store.load(s).await {
        Ok(loaded) => loaded,
        Err(e) => panic!("load({s}) failed: {e:?}"),
    }
}

/// Asserts what `load` returns for `s`: `(snapshot, sequences of the events, version)`.
async fn assert_loads<S: EventStore + ?Sized>(
    store: &S,
    s: &StreamRef,
    expected: (Option<Snapshot>, Vec<u64>, u64),
    what: &str,
) {
    let loaded = load(store, s).await;
    let sequences: Vec<u64> = loaded.events.iter().map(|e| e.sequence).collect();
    assert_eq!(
        (loaded.snapshot, sequences, loaded.version),
        expected,
        "{what}: (snapshot, event sequences, version)"
    );
}

async fn read<S: EventStore + ?Sized>(
    store: &S,
    s: &StreamRef,
    from: u64,
    to: u64,
) -> Vec<EventEnvelope> {
    match store.read(s, from..=to).await {
        Ok(events) => events,
        Err(e) => panic!("read({s}, {from}, {to}) failed: {e:?}"),
    }
}

async fn head<S: EventStore + ?Sized>(store: &S) -> FeedCursor {
    match store.head().await {
        Ok(h) => h,
        Err(e) => panic!("head() failed: {e:?}"),
    }
}

async fn lookup<S: EventStore + ?Sized>(
    store: &S,
    command_id: &str,
) -> Option<(CommitResult, Idempotency)> {
    match store.idempotency(command_id).await {
        Ok(found) => found,
        Err(e) => panic!("idempotency({command_id}) failed: {e:?}"),
    }
}

/// Reads every feed page after `after`.
async fn feed_all<S: EventStore + ?Sized>(store: &S, after: &FeedCursor) -> Vec<EventEnvelope> {
    let mut out = Vec::new();
    let mut cursor = after.clone();
    loop {
        let page = match store.feed(&cursor, 500).await {
            Ok(page) => page,
            Err(e) => panic!("feed({cursor}, 500) failed: {e:?}"),
        };
        if page.is_empty() {
            break;
        }
        assert!(
            page.iter().all(|e| e.global_position.is_some()),
            "feed returned an event without global_position"
        );
        cursor = cursor.after(&page);
        out.extend(page);
    }
    out
}

/// Polls the feed after `after` until every id in `expected` is in it; returns everything read.
async fn wait_for_feed<S: EventStore + ?Sized>(
    store: &S,
    after: &FeedCursor,
    expected: &HashSet<Uuid>,
) -> Vec<EventEnvelope> {
    let deadline = tokio::time::Instant::now() + FEED_TIMEOUT;
    loop {
        let events = feed_all(store, after).await;
        let seen: HashSet<Uuid> = events.iter().map(|e| e.event_id).collect();
        if expected.is_subset(&seen) {
            return events;
        }
        if tokio::time::Instant::now() >= deadline {
            let missing = expected.difference(&seen).count();
            panic!("the feed after {after} still misses {missing} appended events after {FEED_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_gapless(events: &[EventEnvelope], first: u64, what: &str) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.sequence,
            first + i as u64,
            "{what}: event #{i} has sequence {} but sequences must run gapless from {first}",
            e.sequence
        );
    }
}

/// Checks that a stored envelope is exactly the appended event at `stream`/`sequence`.
fn assert_envelope(stored: &EventEnvelope, new: &NewEvent, s: &StreamRef, sequence: u64) {
    let ctx = format!("{s} seq {sequence}");
    assert_eq!(stored.event_id, new.event_id, "{ctx}: event_id changed");
    assert_eq!(stored.stream_type, s.stream_type, "{ctx}: stream_type");
    assert_eq!(stored.stream_id, s.stream_id, "{ctx}: stream_id");
    assert_eq!(stored.sequence, sequence, "{ctx}: sequence");
    assert_eq!(stored.event_type, new.event_type, "{ctx}: event_type");
    assert_eq!(
        stored.event_version, new.event_version,
        "{ctx}: event_version"
    );
    assert_eq!(
        stored.occurred_at, new.occurred_at,
        "{ctx}: occurred_at must round-trip exactly (nanoseconds included)"
    );
    assert_eq!(stored.payload, new.payload, "{ctx}: payload");
    assert_eq!(stored.metadata, new.metadata, "{ctx}: metadata");
}

fn without_position(mut e: EventEnvelope) -> EventEnvelope {
    e.global_position = None;
    e
}

fn assert_conflict(result: Result<AppendOutcome, StoreError>, on: &StreamRef, what: &str) {
    match result {
        Err(StoreError::Conflict { stream, .. }) => assert_eq!(
            &stream, on,
            "{what}: the Conflict must name the stream whose expected version was wrong"
        ),
        other => panic!("{what}: expected Conflict on {on}, got {other:?}"),
    }
}

fn assert_invalid(result: Result<AppendOutcome, StoreError>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::InvalidCommit(_))),
        "{what}: expected InvalidCommit, got {result:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// Appending then loading returns every envelope field unchanged, with the store's sequences.
pub async fn append_then_load_preserves_every_envelope_field<S: EventStore>(store: S) {
    let s = stream(StreamType::Order, "roundtrip");
    let mut bare = new_event("OrderNoted", json!({}));
    bare.metadata = Metadata {
        correlation_id: "c-2".into(),
        ..Metadata::default()
    };
    bare.event_version = 7;
    bare.occurred_at = instant(3600);
    let events = vec![
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "OrderPlaced".into(),
            event_version: 2,
            occurred_at: instant(0),
            payload: Payload::from(json!({
                "order_id": s.stream_id,
                "lines": [{ "product_id": "p-1", "quantity": 3, "unit_price": "19.99" }],
                "total": { "amount": "59.97", "currency": "EUR" },
                "note": "unicode ✓ \"quoted\" \\ back\nslash",
                "flags": { "gift": true, "coupon": null },
                "big": 9_007_199_254_740_993_u64,
                "negative": -42,
            })),
            metadata: metadata("roundtrip"),
        },
        bare,
    ];
    let result = committed(&store, single(&s, 0, events.clone()), "first append").await;
    assert_eq!(
        result.streams.len(),
        1,
        "the result reports one version per stream"
    );
    assert_eq!(result.streams[0].stream, s, "the result names the stream");
    assert_eq!(
        result.streams[0].version, 2,
        "two events on a new stream make version 2"
    );

    let loaded = load(&store, &s).await;
    assert_eq!(loaded.version, 2, "load reports the stream version");
    assert!(loaded.snapshot.is_none(), "no snapshot was written");
    assert_eq!(loaded.events.len(), 2, "load returns both events");
    for (i, (stored, new)) in loaded.events.iter().zip(&events).enumerate() {
        assert_envelope(stored, new, &s, i as u64 + 1);
    }

    let read_back = read(&store, &s, 1, 2).await;
    assert_eq!(
        read_back
            .into_iter()
            .map(without_position)
            .collect::<Vec<_>>(),
        loaded
            .events
            .into_iter()
            .map(without_position)
            .collect::<Vec<_>>(),
        "read(1, 2) right after the append returns the same envelopes as load"
    );
}

/// A stream that was never written loads as version 0 with nothing in it.
pub async fn load_of_an_unknown_stream_is_empty<S: EventStore>(store: S) {
    let s = stream(StreamType::Cart, "unknown");
    let loaded = load(&store, &s).await;
    assert_eq!(loaded.version, 0, "an unknown stream has version 0");
    assert!(loaded.events.is_empty(), "an unknown stream has no events");
    assert!(
        loaded.snapshot.is_none(),
        "an unknown stream has no snapshot"
    );
    assert!(
        read(&store, &s, 1, 100).await.is_empty(),
        "reading an unknown stream returns nothing"
    );
}

/// Sequences start at 1 and grow by one per event across commits of different sizes.
pub async fn sequences_start_at_one_without_gaps<S: EventStore>(store: S) {
    let s = stream(StreamType::Product, "gapless");
    let mut version = 0;
    for (i, size) in [1usize, 3, 1, 5, 2].into_iter().enumerate() {
        let r = committed(
            &store,
            single(&s, version, numbered_events(size, version as usize)),
            "append",
        )
        .await;
        assert_eq!(
            r.streams[0].version,
            version + size as u64,
            "commit #{i} of {size} events must move the version from {version}"
        );
        version += size as u64;
    }
    let loaded = load(&store, &s).await;
    assert_eq!(loaded.version, 12, "5 commits of 1+3+1+5+2 events");
    assert_eq!(loaded.events.len(), 12, "load returns every event");
    assert_gapless(&loaded.events, 1, "load");
    for (i, e) in loaded.events.iter().enumerate() {
        assert_eq!(
            e.payload,
            json!({ "n": i }),
            "events are returned in append order"
        );
    }
}

/// The same id under two stream types names two independent streams.
pub async fn streams_are_keyed_by_type_and_id<S: EventStore>(store: S) {
    let id = format!("shared-{}", Uuid::now_v7());
    let cart = StreamRef::new(StreamType::Cart, id.clone());
    let order = StreamRef::new(StreamType::Order, id.clone());
    committed(&store, single(&cart, 0, numbered_events(2, 0)), "cart").await;
    committed(
        &store,
        single(&order, 0, numbered_events(1, 0)),
        "order with the same id must start at version 0 too",
    )
    .await;
    assert_eq!(load(&store, &cart).await.version, 2, "cart stream version");
    let order_events = load(&store, &order).await.events;
    assert_eq!(order_events.len(), 1, "order stream holds only its event");
    assert_eq!(
        order_events[0].stream_type,
        StreamType::Order,
        "stream type kept"
    );
}

/// A wrong expected version (behind, ahead, or on a new stream) writes nothing and gets Conflict;
/// the command id of the rejected commit is not recorded, so a corrected retry goes through.
pub async fn expected_version_conflict_writes_nothing<S: EventStore>(store: S) {
    let s = stream(StreamType::Order, "conflict");
    committed(&store, single(&s, 0, numbered_events(2, 0)), "setup").await;
    let before = load(&store, &s).await;

    for wrong in [0u64, 1, 3, 10] {
        let mut commit = single(&s, wrong, numbered_events(1, 100));
        commit.idempotency = Some(idem("conflict-cmd", "f1"));
        assert_conflict(
            store.append(commit).await,
            &s,
            &format!("expected version {wrong} on a stream at 2"),
        );
    }
    let fresh = stream(StreamType::Order, "conflict-new");
    assert_conflict(
        store.append(single(&fresh, 1, numbered_events(1, 0))).await,
        &fresh,
        "expected version 1 on a stream that does not exist",
    );

    let after = load(&store, &s).await;
    assert_eq!(
        after, before,
        "a conflicting append must not change the stream"
    );
    assert!(
        load(&store, &fresh).await.events.is_empty(),
        "a conflicting append must not create the stream"
    );
    assert!(
        lookup(&store, "conflict-cmd").await.is_none(),
        "a rejected commit must not record its command id"
    );
    let mut retry = single(&s, 2, numbered_events(1, 2));
    retry.idempotency = Some(idem("conflict-cmd", "f1"));
    let r = committed(
        &store,
        retry,
        "retry with the right version and the same command id",
    )
    .await;
    assert_eq!(r.streams[0].version, 3, "the retry moves the stream to 3");
}

/// A commit over three streams whose LAST stream conflicts writes nothing anywhere: not in the
/// other streams, not in the feed, not its snapshot, not its command id.
pub async fn multi_stream_commit_with_a_conflicting_last_stream_leaves_no_trace<S: EventStore>(
    store: S,
) {
    let cart = stream(StreamType::Cart, "atomic");
    let order = stream(StreamType::Order, "atomic");
    let product = stream(StreamType::Product, "atomic");
    committed(
        &store,
        single(&cart, 0, numbered_events(1, 0)),
        "cart setup",
    )
    .await;
    committed(
        &store,
        single(&product, 0, numbered_events(3, 0)),
        "product setup",
    )
    .await;
    let start = head(&store).await;
    let cart_before = load(&store, &cart).await;
    let product_before = load(&store, &product).await;

    let doomed_events = [numbered_events(1, 1), numbered_events(2, 0)];
    let doomed_ids: HashSet<Uuid> = doomed_events.iter().flatten().map(|e| e.event_id).collect();
    let mut cart_part = part(&cart, 1, doomed_events[0].clone());
    cart_part.snapshot = Some(Snapshot {
        version: 2,
        schema_version: 1,
        state: json!({ "doomed": true }),
    });
    let doomed = Commit {
        streams: vec![
            cart_part,
            part(&order, 0, doomed_events[1].clone()),
            // Wrong: the product stream is at 3.
            part(&product, 2, numbered_events(1, 3)),
        ],
        idempotency: Some(idem("atomic-cmd", "f")),
    };
    assert_conflict(
        store.append(doomed).await,
        &product,
        "the last stream's version is wrong",
    );

    assert_eq!(
        load(&store, &cart).await,
        cart_before,
        "the first stream of a failed commit must be untouched (events and snapshot)"
    );
    assert!(
        load(&store, &order).await.events.is_empty(),
        "the new stream of a failed commit must not exist"
    );
    assert_eq!(
        load(&store, &product).await,
        product_before,
        "the conflicting stream must be untouched"
    );
    assert!(
        lookup(&store, "atomic-cmd").await.is_none(),
        "a failed commit must not record its command id"
    );

    // A later successful commit proves the feed has caught up past the failed attempt.
    let sentinel = stream(StreamType::Payment, "sentinel");
    let sentinel_events = numbered_events(1, 0);
    let expected: HashSet<Uuid> = sentinel_events.iter().map(|e| e.event_id).collect();
    committed(&store, single(&sentinel, 0, sentinel_events), "sentinel").await;
    let feed = wait_for_feed(&store, &start, &expected).await;
    assert!(
        feed.iter().all(|e| !doomed_ids.contains(&e.event_id)),
        "no event of a failed commit may reach the feed"
    );
    assert_eq!(
        feed.len(),
        1,
        "only the sentinel was written after the failed commit"
    );

    // The same three streams with correct versions commit together.
    let ok = Commit {
        streams: vec![
            part(&cart, 1, numbered_events(1, 1)),
            part(&order, 0, numbered_events(2, 0)),
            part(&product, 3, numbered_events(1, 3)),
        ],
        idempotency: None,
    };
    let r = committed(&store, ok, "corrected multi-stream commit").await;
    let versions: Vec<(StreamRef, u64)> = r
        .streams
        .iter()
        .map(|v| (v.stream.clone(), v.version))
        .collect();
    assert_eq!(
        versions,
        vec![(cart.clone(), 2), (order.clone(), 2), (product.clone(), 4)],
        "the result lists each stream's new version in commit order"
    );
}

/// 16 tasks append to one stream with the versions they read: the first round has exactly one
/// winner, every loser gets Conflict, and after retries the stream holds 16 gapless events.
pub async fn concurrent_appends_to_one_stream_get_unique_gapless_sequences<S: EventStore>(
    store: S,
) {
    const TASKS: usize = 16;
    let store = Arc::new(store);
    let s = stream(StreamType::Product, "contended");
    let outcomes = race(TASKS, |task, barrier| {
        let (store, s) = (store.clone(), s.clone());
        async move {
            let (mut attempts, mut conflicts) = (0usize, 0usize);
            loop {
                let version = match store.load(&s).await {
                    Ok(l) => l.version,
                    Err(e) => panic!("task {task}: load failed: {e:?}"),
                };
                if attempts == 0 {
                    // Everyone has read version 0 before anyone appends.
                    barrier.wait().await;
                }
                attempts += 1;
                let event = new_event("StockCounted", json!({ "task": task }));
                let event_id = event.event_id;
                match store.append(single(&s, version, vec![event])).await {
                    Ok(AppendOutcome::Committed(r)) => {
                        return (task, attempts, conflicts, r.streams[0].version, event_id)
                    }
                    Ok(other) => panic!("task {task}: a commit without command id got {other:?}"),
                    Err(StoreError::Conflict { .. }) => conflicts += 1,
                    Err(e) => panic!("task {task}: a loser must get Conflict, got {e:?}"),
                }
            }
        }
    })
    .await;

    let attempts: usize = outcomes.iter().map(|o| o.1).sum();
    let conflicts: usize = outcomes.iter().map(|o| o.2).sum();
    assert_eq!(
        attempts,
        TASKS + conflicts,
        "every attempt is either the task's one success or a Conflict"
    );
    let first_round_winners = outcomes.iter().filter(|o| o.1 == 1).count();
    assert_eq!(
        first_round_winners, 1,
        "all tasks appended at expected version 0 first: exactly one may win that round"
    );
    let mut versions: Vec<u64> = outcomes.iter().map(|o| o.3).collect();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=TASKS as u64).collect::<Vec<_>>(),
        "each success got a distinct version"
    );

    let loaded = load(&*store, &s).await;
    assert_eq!(loaded.version, TASKS as u64, "final stream version");
    assert_eq!(loaded.events.len(), TASKS, "exactly one event per task");
    assert_gapless(&loaded.events, 1, "contended stream");
    for (task, _, _, version, event_id) in &outcomes {
        let e = &loaded.events[(*version - 1) as usize];
        assert_eq!(
            e.event_id, *event_id,
            "task {task}'s event must sit at the version its append returned"
        );
        assert_eq!(e.payload, json!({ "task": task }), "payload of task {task}");
    }
}

/// A repeated command id writes nothing and returns the first result and record, even when the
/// repeat carries different streams, events and fingerprint, or a now-stale expected version.
pub async fn duplicate_command_id_returns_the_first_result_and_writes_nothing<S: EventStore>(
    store: S,
) {
    let s = stream(StreamType::Cart, "dup");
    let first_commit = Commit {
        streams: vec![part(&s, 0, numbered_events(2, 0))],
        idempotency: Some(idem("dup-cmd", "first")),
    };
    let first = committed(&store, first_commit.clone(), "first commit").await;
    let start = head(&store).await;
    let before = load(&store, &s).await;

    // An exact retry: its expected version (0) is stale now, yet it must be a Duplicate.
    match store.append(first_commit).await {
        Ok(AppendOutcome::Duplicate {
            result,
            idempotency,
        }) => {
            assert_eq!(result, first, "an exact retry returns the first result");
            assert_eq!(
                idempotency,
                idem("dup-cmd", "first"),
                "and the first record"
            );
        }
        other => panic!("an exact retry must be Duplicate (not Conflict), got {other:?}"),
    }

    let other = stream(StreamType::Order, "dup-other");
    let different = Commit {
        streams: vec![
            part(&s, 2, numbered_events(1, 2)),
            part(&other, 0, numbered_events(3, 0)),
        ],
        idempotency: Some(idem("dup-cmd", "second")),
    };
    match store.append(different).await {
        Ok(AppendOutcome::Duplicate {
            result,
            idempotency,
        }) => {
            assert_eq!(
                result, first,
                "a different commit with a used command id returns the first result"
            );
            assert_eq!(
                idempotency.fingerprint, "first",
                "the record returned is the first one, so the caller can tell bodies apart"
            );
            assert_eq!(
                idempotency.outcome,
                idem("dup-cmd", "first").outcome,
                "first outcome"
            );
        }
        other => panic!("a reused command id must be Duplicate, got {other:?}"),
    }
    assert_eq!(
        load(&store, &s).await,
        before,
        "a duplicate must not write to the stream"
    );
    assert!(
        load(&store, &other).await.events.is_empty(),
        "a duplicate must not write to its other streams"
    );
    assert_eq!(
        head(&store).await,
        start,
        "a duplicate must not move the feed head"
    );
}

/// Eight tasks commit with the same command id at once, each to its own stream: exactly one
/// commits, the others get Duplicate with that one's result, and only its events exist.
pub async fn concurrent_duplicates_commit_exactly_once<S: EventStore>(store: S) {
    const TASKS: usize = 8;
    let store = Arc::new(store);
    let start = head(&*store).await;
    let results = race(TASKS, |task, barrier| {
        let store = store.clone();
        async move {
            let s = stream(StreamType::Payment, &format!("race-{task}"));
            let events = numbered_events(1, task);
            let id = events[0].event_id;
            let commit = Commit {
                streams: vec![part(&s, 0, events)],
                idempotency: Some(idem("race-cmd", &format!("task-{task}"))),
            };
            barrier.wait().await;
            let outcome = store.append(commit).await;
            (s, id, outcome)
        }
    })
    .await;
    let winners: Vec<_> = results
        .iter()
        .filter_map(|(s, id, o)| match o {
            Ok(AppendOutcome::Committed(r)) => Some((s.clone(), *id, r.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {TASKS} concurrent commits with one command id may be written; outcomes: {:?}",
        results.iter().map(|r| &r.2).collect::<Vec<_>>()
    );
    let (winner_stream, winner_event, winner_result) = &winners[0];
    for (s, _, outcome) in &results {
        match outcome {
            Ok(AppendOutcome::Committed(_)) => {}
            Ok(AppendOutcome::Duplicate { result, .. }) => assert_eq!(
                result, winner_result,
                "every duplicate gets the winner's result"
            ),
            Err(e) => panic!("a concurrent duplicate must get Duplicate, got {e:?}"),
        }
        let events = load(&*store, s).await.events;
        if s == winner_stream {
            assert_eq!(events.len(), 1, "the winner's event is stored");
        } else {
            assert!(
                events.is_empty(),
                "a duplicate's stream {s} must stay empty"
            );
        }
    }
    let expected = HashSet::from([*winner_event]);
    let feed = wait_for_feed(&*store, &start, &expected).await;
    assert_eq!(
        feed.len(),
        1,
        "only the winner's event reaches the feed, got {feed:?}"
    );
}

/// A commit with no streams and an idempotency record only records the command id.
pub async fn idempotency_only_commit_records_the_command<S: EventStore>(store: S) {
    let start = head(&store).await;
    let commit = Commit {
        streams: vec![],
        idempotency: Some(idem("stripe:evt_only", "f")),
    };
    let r = committed(&store, commit.clone(), "idempotency-only commit").await;
    assert!(r.streams.is_empty(), "no stream was touched, got {r:?}");
    let (stored, record) = lookup(&store, "stripe:evt_only")
        .await
        .unwrap_or_else(|| panic!("the idempotency-only commit must be recorded"));
    assert_eq!(stored, r, "the stored result is the commit's result");
    assert_eq!(record, idem("stripe:evt_only", "f"), "the stored record");
    match store.append(commit).await {
        Ok(AppendOutcome::Duplicate { result, .. }) => assert_eq!(result, r, "first result"),
        other => panic!("repeating an idempotency-only commit must be Duplicate, got {other:?}"),
    }
    assert_eq!(
        head(&store).await,
        start,
        "an idempotency-only commit writes no event"
    );
}

/// `idempotency()` finds nothing for unknown ids and returns the result and record otherwise.
pub async fn idempotency_lookup_returns_the_stored_record<S: EventStore>(store: S) {
    assert!(
        lookup(&store, "never-seen").await.is_none(),
        "an unknown command id has no record"
    );
    let s = stream(StreamType::Order, "lookup");
    let commit = Commit {
        streams: vec![part(&s, 0, numbered_events(2, 0))],
        idempotency: Some(idem("http:alice:key-1", "sha-1")),
    };
    let r = committed(&store, commit, "commit with command id").await;
    let (result, record) = lookup(&store, "http:alice:key-1")
        .await
        .unwrap_or_else(|| panic!("a committed command id must be found"));
    assert_eq!(result, r, "lookup returns the commit's result unchanged");
    assert_eq!(
        record,
        idem("http:alice:key-1", "sha-1"),
        "lookup returns the record unchanged"
    );
    assert!(
        lookup(&store, "http:alice:key-2").await.is_none(),
        "ids are matched exactly"
    );
    assert_eq!(
        load(&store, &s).await.version,
        2,
        "lookup writes nothing and the events exist"
    );
}

/// Malformed commits get InvalidCommit and write nothing.
pub async fn invalid_commits_are_rejected_without_writing<S: EventStore>(store: S) {
    let s = stream(StreamType::Cart, "invalid");
    committed(&store, single(&s, 0, numbered_events(1, 0)), "setup").await;
    let before = load(&store, &s).await;
    let start = head(&store).await;

    assert_invalid(store.append(Commit::default()).await, "an empty commit");
    assert_invalid(
        store
            .append(Commit {
                streams: vec![
                    part(&s, 1, numbered_events(1, 1)),
                    part(&s, 2, numbered_events(1, 2)),
                ],
                idempotency: None,
            })
            .await,
        "the same stream twice",
    );
    assert_invalid(
        store.append(single(&s, 1, vec![])).await,
        "a stream with no events",
    );
    let mut bad_snapshot = part(&s, 1, numbered_events(2, 1));
    bad_snapshot.snapshot = Some(Snapshot {
        version: 2,
        schema_version: 1,
        state: json!({}),
    });
    assert_invalid(
        store
            .append(Commit {
                streams: vec![bad_snapshot],
                idempotency: None,
            })
            .await,
        "a snapshot at version 2 for a commit that ends at 3",
    );
    let too_big = Commit {
        streams: vec![part(&s, 1, numbered_events(MAX_COMMIT_ACTIONS, 1))],
        idempotency: Some(idem("too-big", "f")),
    };
    assert_invalid(
        store.append(too_big).await,
        "MAX_COMMIT_ACTIONS events plus an idempotency record",
    );
    let other = stream(StreamType::Order, "invalid-big");
    let too_big_multi = Commit {
        streams: vec![
            part(&other, 0, numbered_events(MAX_COMMIT_ACTIONS / 2, 0)),
            part(
                &s,
                1,
                numbered_events(MAX_COMMIT_ACTIONS - MAX_COMMIT_ACTIONS / 2 + 1, 1),
            ),
        ],
        idempotency: None,
    };
    assert_invalid(
        store.append(too_big_multi).await,
        "more than MAX_COMMIT_ACTIONS events across streams",
    );

    assert_eq!(
        load(&store, &s).await,
        before,
        "rejected commits write nothing"
    );
    assert!(
        load(&store, &other).await.events.is_empty(),
        "rejected commits create no stream"
    );
    assert!(
        lookup(&store, "too-big").await.is_none(),
        "rejected commits record no command id"
    );
    assert_eq!(
        head(&store).await,
        start,
        "rejected commits do not move the feed head"
    );
}

/// Exactly MAX_COMMIT_ACTIONS writes (events, a snapshot, an idempotency record) fit one commit.
pub async fn commit_at_the_action_limit_is_accepted<S: EventStore>(store: S) {
    let a = stream(StreamType::Order, "limit-a");
    let b = stream(StreamType::Product, "limit-b");
    let a_events = MAX_COMMIT_ACTIONS - 40;
    let b_events = 38;
    let mut a_part = part(&a, 0, numbered_events(a_events, 0));
    a_part.snapshot = Some(Snapshot {
        version: a_events as u64,
        schema_version: 1,
        state: json!({ "n": a_events }),
    });
    let commit = Commit {
        streams: vec![a_part, part(&b, 0, numbered_events(b_events, 0))],
        idempotency: Some(idem("limit-cmd", "f")),
    };
    assert_eq!(
        commit.event_count() + 2,
        MAX_COMMIT_ACTIONS,
        "fixture uses exactly the limit"
    );
    committed(
        &store,
        commit,
        "a commit of exactly MAX_COMMIT_ACTIONS writes",
    )
    .await;
    let la = load(&store, &a).await;
    assert_eq!(la.version, a_events as u64, "first stream version");
    assert_eq!(
        la.snapshot.map(|s| s.version),
        Some(a_events as u64),
        "snapshot stored"
    );
    assert_eq!(
        read(&store, &a, 1, u64::MAX).await.len(),
        a_events,
        "all events of the first stream"
    );
    assert_eq!(
        load(&store, &b).await.events.len(),
        b_events,
        "all events of the second stream"
    );
}

/// A 1,050-event stream loads completely and `read` returns exactly the asked range.
pub async fn long_stream_loads_every_page_and_reads_exact_ranges<S: EventStore>(store: S) {
    const TOTAL: u64 = 1_050;
    let s = stream(StreamType::Product, "long");
    let mut version = 0u64;
    while version < TOTAL {
        let n = (TOTAL - version).min(MAX_COMMIT_ACTIONS as u64);
        committed(
            &store,
            single(&s, version, numbered_events(n as usize, version as usize)),
            "bulk append",
        )
        .await;
        version += n;
    }
    let loaded = load(&store, &s).await;
    assert_eq!(loaded.version, TOTAL, "version of the long stream");
    assert_eq!(
        loaded.events.len() as u64,
        TOTAL,
        "load must follow every page"
    );
    assert_gapless(&loaded.events, 1, "long stream load");
    for (i, e) in loaded.events.iter().enumerate() {
        assert_eq!(
            e.payload,
            json!({ "n": i }),
            "event at sequence {} is out of order",
            i + 1
        );
    }

    for (from, to, first, count) in [
        (1u64, 1u64, 1u64, 1usize),
        (1, TOTAL, 1, TOTAL as usize),
        (0, 10, 1, 10),
        (100, 101, 100, 2),
        (999, 1_002, 999, 4),
        (1_000, 1_050, 1_000, 51),
        (1_040, 5_000, 1_040, 11),
        (1, u64::MAX, 1, TOTAL as usize),
        (TOTAL + 1, TOTAL + 100, 0, 0),
        (10, 9, 0, 0),
    ] {
        let events = read(&store, &s, from, to).await;
        assert_eq!(
            events.len(),
            count,
            "read({from}, {to}) must return exactly {count} events"
        );
        assert_gapless(&events, first, &format!("read({from}, {to})"));
    }
}

/// Load returns the latest snapshot and only the events after it; a newer snapshot supersedes an
/// older one; `read` still returns every event.
pub async fn load_returns_the_latest_snapshot_and_only_later_events<S: EventStore>(store: S) {
    let s = stream(StreamType::Cart, "snap");
    let snap = |version: u64| Snapshot {
        version,
        schema_version: 3,
        state: json!({ "items": version, "note": "state ✓" }),
    };
    let mut first = part(&s, 0, numbered_events(3, 0));
    first.snapshot = Some(snap(3));
    committed(
        &store,
        Commit {
            streams: vec![first],
            idempotency: None,
        },
        "events with a snapshot",
    )
    .await;
    assert_loads(
        &store,
        &s,
        (Some(snap(3)), vec![], 3),
        "the snapshot comes back unchanged, no event is newer, the version is the snapshot's",
    )
    .await;

    committed(&store, single(&s, 3, numbered_events(2, 3)), "two more").await;
    assert_loads(
        &store,
        &s,
        (Some(snap(3)), vec![4, 5], 5),
        "the snapshot stays, only the events after it are loaded, the version counts them",
    )
    .await;

    let other = stream(StreamType::Order, "snap-other");
    let mut newer = part(&s, 5, numbered_events(1, 5));
    newer.snapshot = Some(snap(6));
    let mut other_part = part(&other, 0, numbered_events(1, 0));
    other_part.snapshot = Some(snap(1));
    committed(
        &store,
        Commit {
            streams: vec![newer, other_part],
            idempotency: Some(idem("snap-cmd", "f")),
        },
        "a multi-stream commit with two snapshots",
    )
    .await;
    assert_loads(
        &store,
        &s,
        (Some(snap(6)), vec![], 6),
        "the newer snapshot supersedes the older, nothing is after it",
    )
    .await;
    assert_eq!(
        load(&store, &other).await.snapshot,
        Some(snap(1)),
        "each stream of a commit gets its own snapshot"
    );
    let all = read(&store, &s, 1, 100).await;
    assert_eq!(all.len(), 6, "snapshots never hide events from read");
    assert_gapless(&all, 1, "read after snapshots");
}

/// The feed returns every event exactly once in strictly increasing positions; pages of any size
/// cover it; within a stream it follows the sequence; each envelope equals what load returns;
/// `head()` equals the last position.
pub async fn feed_pages_cover_every_event_once_in_position_order<S: EventStore>(store: S) {
    let start = head(&store).await;
    let streams = [
        stream(StreamType::Cart, "feed"),
        stream(StreamType::Order, "feed"),
        stream(StreamType::Payment, "feed"),
        stream(StreamType::Product, "feed"),
    ];
    let mut versions = [0u64; 4];
    let mut expected = HashSet::new();
    let mut results = Vec::new();
    for round in 0..12usize {
        let mut parts = Vec::new();
        // Single-stream commits, and every third round a commit over two or three streams.
        let touched: Vec<usize> = if round % 3 == 2 {
            vec![round % 4, (round + 1) % 4, (round + 2) % 4]
        } else {
            vec![round % 4]
        };
        for &i in &touched {
            let events = numbered_events(1 + (round + i) % 4, versions[i] as usize);
            expected.extend(events.iter().map(|e| e.event_id));
            parts.push(part(&streams[i], versions[i], events.clone()));
            versions[i] += events.len() as u64;
        }
        let ids: Vec<Uuid> = parts
            .iter()
            .flat_map(|p| p.events.iter().map(|e| e.event_id))
            .collect();
        let r = committed(
            &store,
            Commit {
                streams: parts,
                idempotency: None,
            },
            "feed fixture",
        )
        .await;
        results.push((r, ids));
    }

    let all = wait_for_feed(&store, &start, &expected).await;
    assert_eq!(
        all.len(),
        expected.len(),
        "the feed holds each appended event once and nothing else"
    );
    let positions: Vec<u64> = all.iter().map(|e| e.global_position.unwrap_or(0)).collect();
    assert!(
        positions.iter().all(|&p| !start.includes(p)),
        "every position is after the starting head"
    );
    let mut per_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for &p in &positions {
        let (partition, position) = crate::feed::unpack(p);
        per_partition.entry(partition).or_default().push(position);
    }
    for (partition, positions) in &per_partition {
        assert!(
            positions.windows(2).all(|w| w[0] + 1 == w[1]),
            "each partition's positions run gapless in feed order (partition {partition}: {positions:?})"
        );
    }

    for limit in [1usize, 7, 50] {
        let mut cursor = start.clone();
        let mut paged = Vec::new();
        loop {
            let page = match store.feed(&cursor, limit).await {
                Ok(p) => p,
                Err(e) => panic!("feed({cursor}, {limit}) failed: {e:?}"),
            };
            assert!(
                page.len() <= limit,
                "feed({cursor}, {limit}) returned {} events",
                page.len()
            );
            // The filtered read of the same page holds exactly the page's matching events and
            // reports the page's last position even when that event is filtered out.
            let keep =
                |e: &EventEnvelope| e.stream_type == StreamType::Order || e.sequence % 3 == 1;
            let read = FeedFilter {
                after: &cursor,
                limit,
                keep: &keep,
            };
            match store.feed_filtered(read).await {
                Ok(filtered) => assert_eq!(
                    filtered,
                    crate::store::FilteredPage::from_page(&cursor, page.clone(), &keep),
                    "feed_filtered({cursor}, {limit}) differs from the filtered feed page"
                ),
                Err(e) => panic!("feed_filtered({cursor}, {limit}) failed: {e:?}"),
            }
            if page.is_empty() {
                break;
            }
            for e in &page {
                let p = e.global_position.unwrap_or(0);
                assert!(
                    !cursor.includes(p),
                    "feed({cursor}, {limit}) returned position {p} at or before the cursor"
                );
            }
            cursor = cursor.after(&page);
            paged.extend(page);
        }
        assert_eq!(
            paged, all,
            "pages of {limit} must cover the feed exactly once, in order"
        );
    }

    let last = start.after(&all);
    assert_eq!(
        head(&store).await,
        last,
        "head() is the cursor past every event of the feed"
    );
    match store.feed(&last, 10).await {
        Ok(rest) => assert!(rest.is_empty(), "nothing after the head, got {rest:?}"),
        Err(e) => panic!("feed(head, 10) failed: {e:?}"),
    }

    let by_id: HashMap<Uuid, &EventEnvelope> = all.iter().map(|e| (e.event_id, e)).collect();
    for (r, ids) in &results {
        if let Some(position) = r.position {
            let max = ids
                .iter()
                .filter_map(|id| by_id.get(id).and_then(|e| e.global_position))
                .max();
            assert_eq!(
                Some(position),
                max,
                "CommitResult.position, when known, is the commit's highest feed position"
            );
        }
    }
    let mut per_stream: BTreeMap<StreamRef, Vec<EventEnvelope>> = BTreeMap::new();
    for e in &all {
        per_stream.entry(e.stream()).or_default().push(e.clone());
    }
    for (i, s) in streams.iter().enumerate() {
        let from_feed = per_stream.remove(s).unwrap_or_default();
        assert_eq!(
            from_feed.len() as u64,
            versions[i],
            "the feed holds every event of {s}"
        );
        assert_gapless(
            &from_feed,
            1,
            &format!("the feed's events of {s}, in feed order"),
        );
        let loaded = load(&store, s).await.events;
        for (f, l) in from_feed.iter().zip(&loaded) {
            if let Some(p) = l.global_position {
                assert_eq!(
                    Some(p),
                    f.global_position,
                    "load's global_position, when set, matches the feed"
                );
            }
        }
        assert_eq!(
            from_feed
                .into_iter()
                .map(without_position)
                .collect::<Vec<_>>(),
            loaded.into_iter().map(without_position).collect::<Vec<_>>(),
            "the feed's envelopes of {s} equal load's"
        );
    }
}

/// Test upcaster: `ThingHappened` v1 `{name}` becomes v2 `{name, color: "unknown"}`.
struct ThingUpcaster;

impl Upcaster for ThingUpcaster {
    fn upcast(&self, mut event: EventEnvelope) -> EventEnvelope {
        if event.event_type == "ThingHappened" && event.event_version == 1 {
            event.event_version = 2;
            let mut payload = event.payload.value().clone();
            if let Value::Object(map) = &mut payload {
                map.insert("color".into(), json!("unknown"));
            }
            event.payload = payload.into();
        }
        event
    }
}

/// Wrapped in an [`UpcastingStore`], load, read and feed all return upcast events, while the
/// stored events stay as written.
pub async fn upcaster_applies_to_load_read_and_feed<S: EventStore>(store: S) {
    let store = UpcastingStore::new(store, Arc::new(ThingUpcaster));
    let start = head(&store).await;
    let s = stream(StreamType::Product, "upcast");
    let mut v1 = new_event("ThingHappened", json!({ "name": "old" }));
    v1.event_version = 1;
    let mut v2 = new_event("ThingHappened", json!({ "name": "new", "color": "red" }));
    v2.event_version = 2;
    let other = new_event("OtherThing", json!({ "name": "other" }));
    committed(
        &store,
        single(&s, 0, vec![v1.clone(), v2.clone(), other.clone()]),
        "mixed versions",
    )
    .await;

    let check = |events: &[EventEnvelope], path: &str| {
        assert_eq!(events.len(), 3, "{path}: all three events");
        assert_eq!(
            (events[0].event_version, events[0].payload.value()),
            (2, &json!({ "name": "old", "color": "unknown" })),
            "{path}: the v1 event must come back upcast to v2"
        );
        assert_eq!(
            (events[1].event_version, events[1].payload.value()),
            (2, &json!({ "name": "new", "color": "red" })),
            "{path}: the v2 event is unchanged"
        );
        assert_eq!(
            (
                events[2].event_type.as_str(),
                events[2].event_version,
                events[2].payload.value()
            ),
            ("OtherThing", 1, &json!({ "name": "other" })),
            "{path}: other event types are untouched"
        );
    };
    check(&load(&store, &s).await.events, "load");
    check(&read(&store, &s, 1, 3).await, "read");
    let ids = HashSet::from([v1.event_id, v2.event_id, other.event_id]);
    let feed = wait_for_feed(&store, &start, &ids).await;
    let feed: Vec<EventEnvelope> = feed
        .into_iter()
        .filter(|e| ids.contains(&e.event_id))
        .collect();
    check(&feed, "feed");
    // A filtered feed judges and returns the upcast events: "version 2" keeps both
    // ThingHappened events, the first one upcast.
    let at_v2 = |e: &EventEnvelope| e.event_version == 2 && ids.contains(&e.event_id);
    let read = FeedFilter {
        after: &start,
        limit: 100,
        keep: &at_v2,
    };
    let filtered = match store.feed_filtered(read).await {
        Ok(page) => page.events,
        Err(e) => panic!("feed_filtered failed: {e:?}"),
    };
    assert_eq!(
        filtered,
        feed[..2].to_vec(),
        "feed_filtered sees upcast events"
    );
    let raw = load(store.inner(), &s).await.events;
    assert_eq!(
        (raw[0].event_version, &raw[0].payload),
        (1, &v1.payload),
        "the stored event itself is not rewritten"
    );
}

/// When the store offers a commit notifier, a waiter registered before a commit wakes after it.
pub async fn commit_notifier_wakes_waiters_after_a_commit<S: EventStore>(store: S) {
    let Some(notify) = store.commit_notifier() else {
        return;
    };
    let before = head(&store).await;
    let notified = notify.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    let s = stream(StreamType::Order, "notify");
    committed(&store, single(&s, 0, numbered_events(1, 0)), "append").await;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), notified)
            .await
            .is_ok(),
        "a waiter registered before the commit must be woken by it"
    );
    // The notification follows the write, so a woken tailer finds the event.
    let after = head(&store).await;
    assert!(
        after != before || store.feed(&before, 10).await.is_ok_and(|f| !f.is_empty()),
        "after the notification the new event is reachable (head {before} -> {after})"
    );
}

// ---- the command service over this store, with and without the loader decorators ----------

/// The loader stacks every command-level check runs with: none, each decorator alone, both.
fn loader_stacks(store: &Arc<dyn EventStore>) -> Vec<(&'static str, Arc<dyn Loader>)> {
    let plain = || -> Arc<dyn Loader> { Arc::new(StoreLoader::new(store.clone())) };
    let cached = || -> Arc<dyn Loader> { Arc::new(CachingLoader::new(plain(), 64)) };
    let locked = |inner: Arc<dyn Loader>| -> Arc<dyn Loader> {
        Arc::new(LockingLoader::new(inner, vec![StreamType::Cart]))
    };
    vec![
        ("plain", plain()),
        ("cached", cached()),
        ("locked", locked(plain())),
        ("cached+locked", locked(cached())),
    ]
}

fn service(store: &Arc<dyn EventStore>, loader: Arc<dyn Loader>, attempts: u32) -> CommandService {
    CommandService::with_loader(
        store.clone(),
        loader,
        Arc::new(SystemClock),
        ServiceConfig {
            max_attempts: attempts,
            retry_base: Duration::from_micros(200),
            ..ServiceConfig::default()
        },
    )
}

fn cart_ref(id: &str) -> domain::CartId {
    domain::CartId::parse(id).unwrap_or_else(|e| panic!("cart id {id}: {e}"))
}

fn product_ref(id: &str) -> domain::ProductId {
    domain::ProductId::parse(id).unwrap_or_else(|e| panic!("product id {id}: {e}"))
}

/// Runs one cart command through `svc`; answers the cart's version and line count after it.
async fn cart_command(
    svc: &CommandService,
    cart: &str,
    command: impl Fn() -> domain::CartCommand,
) -> Result<(u64, usize), CommandError> {
    let command = &command;
    svc.run(&CommandContext::default(), |mut attempt| async move {
        let loaded = attempt.load::<domain::Cart>(cart).await?;
        let after = attempt.decide(loaded, command()).await?;
        let answer = (after.version, after.state.lines.len());
        Ok((attempt, answer))
    })
    .await
    .map(|executed| executed.value)
}

fn open(cart: &str) -> impl Fn() -> domain::CartCommand + '_ {
    move || domain::CartCommand::Open {
        cart_id: cart_ref(cart),
        customer_id: domain::CustomerId::parse("conformance")
            .unwrap_or_else(|e| panic!("customer id: {e}")),
    }
}

fn add(product: &str, quantity: u32) -> impl Fn() -> domain::CartCommand + '_ {
    move || domain::CartCommand::AddItem {
        product_id: product_ref(product),
        quantity: domain::Quantity::parse(quantity).unwrap_or_else(|e| panic!("quantity: {e}")),
        unit_price: domain::Money::parse("1.50", "EUR").unwrap_or_else(|e| panic!("money: {e}")),
    }
}

fn remove(product: &str) -> impl Fn() -> domain::CartCommand + '_ {
    move || domain::CartCommand::RemoveItem {
        product_id: product_ref(product),
    }
}

/// Concurrent commands on one stream, retried on conflicts: each lands exactly once, at its own
/// version, whatever decorates the loader.
pub async fn commands_on_one_stream_all_land_once_with_every_loader<S: EventStore>(store: S) {
    let store: Arc<dyn EventStore> = Arc::new(store);
    for (label, loader) in loader_stacks(&store) {
        let svc = Arc::new(service(&store, loader, 200));
        let cart = format!("busy-{}", label.replace('+', "-"));
        cart_command(&svc, &cart, open(&cart)).await.expect("open");
        let mut tasks = Vec::new();
        for t in 0..4u32 {
            let (svc, cart) = (svc.clone(), cart.clone());
            tasks.push(tokio::spawn(async move {
                let mut versions = Vec::new();
                for i in 0..5u32 {
                    let product = format!("p{t}-{i}");
                    let (version, _) = cart_command(&svc, &cart, add(&product, 1))
                        .await
                        .unwrap_or_else(|e| panic!("{label}: add: {e}"));
                    versions.push(version);
                }
                versions
            }));
        }
        let mut versions = Vec::new();
        for t in tasks {
            versions.extend(t.await.expect("task"));
        }
        versions.sort_unstable();
        assert_eq!(versions, (2..=21).collect::<Vec<u64>>(), "{label}");
        let loaded = svc.load::<domain::Cart>(&cart).await.expect("load");
        assert_eq!(
            (loaded.version, loaded.state.lines.len()),
            (21, 20),
            "{label}"
        );
    }
}

/// Another writer (another process, with its own loader) changes a stream behind a service's
/// back: the service's next commands still decide on the stream as it is. A command decided on
/// an outdated state conflicts and is decided again; a refusal is only returned when the current
/// state refuses too.
pub async fn a_second_writer_never_makes_a_command_decide_wrong_with_every_loader<S: EventStore>(
    store: S,
) {
    let store: Arc<dyn EventStore> = Arc::new(store);
    for ((label, loader), (_, other_loader)) in
        loader_stacks(&store).into_iter().zip(loader_stacks(&store))
    {
        let svc = service(&store, loader, 8);
        let other = service(&store, other_loader, 8);
        let cart = format!("shared-{}", label.replace('+', "-"));
        cart_command(&svc, &cart, open(&cart)).await.expect("open");
        cart_command(&svc, &cart, add("p1", 1))
            .await
            .expect("add p1");
        // Behind its back: p1 goes, p2 comes.
        cart_command(&other, &cart, remove("p1"))
            .await
            .expect("other removes p1");
        cart_command(&other, &cart, add("p2", 1))
            .await
            .expect("other adds p2");
        // Valid on the current state only (p2 is unknown to a remembered version 2).
        let removed = cart_command(&svc, &cart, remove("p2")).await;
        assert_eq!(removed.expect(label), (5, 0), "{label}");
        // Valid on a remembered state only (p1 is long gone): refused.
        let refused = cart_command(&svc, &cart, remove("p1")).await;
        assert!(
            matches!(refused, Err(CommandError::Rejected { .. })),
            "{label}: {refused:?}"
        );
        let stored = other.load::<domain::Cart>(&cart).await.expect("load");
        assert_eq!(stored.version, 5, "{label}");
    }
}

/// A command deciding on two streams whose second stream moved on: with no retry left, the
/// conflict is returned and neither stream has changed.
pub async fn a_command_on_two_streams_commits_all_or_nothing_with_every_loader<S: EventStore>(
    store: S,
) {
    let store: Arc<dyn EventStore> = Arc::new(store);
    for (label, loader) in loader_stacks(&store) {
        let svc = service(&store, loader, 1);
        let other = service(&store, Arc::new(StoreLoader::new(store.clone())), 1);
        let tag = label.replace('+', "-");
        let (first, second) = (format!("pair-a-{tag}"), format!("pair-b-{tag}"));
        for cart in [&first, &second] {
            cart_command(&svc, cart, open(cart)).await.expect("open");
        }
        let (first_ref, second_ref, other) = (&first, &second, &other);
        let result = svc
            .run(&CommandContext::default(), |mut attempt| async move {
                let a = attempt.load::<domain::Cart>(first_ref).await?;
                let b = attempt.load::<domain::Cart>(second_ref).await?;
                attempt.decide(a, add("p1", 1)()).await?;
                // Another writer moves the second stream between this load and the append.
                cart_command(other, second_ref, add("p9", 1)).await?;
                attempt.decide(b, add("p1", 1)()).await?;
                Ok((attempt, ()))
            })
            .await;
        assert!(
            matches!(result, Err(CommandError::Conflict { .. })),
            "{label}: {result:?}"
        );
        let a = svc.load::<domain::Cart>(&first).await.expect("load");
        assert_eq!(
            (a.version, a.state.lines.len()),
            (1, 0),
            "{label}: first stream changed"
        );
        let b = svc.load::<domain::Cart>(&second).await.expect("load");
        assert_eq!(b.version, 2, "{label}: only the other writer's event");
    }
}

/// Runs `pms` over the whole feed after `*after`, page by page as the worker does, moving
/// `*after` past each handled event. Panics on any error.
pub async fn drain_process_managers(
    store: &dyn EventStore,
    pms: &crate::process::ProcessManagers,
    after: &mut FeedCursor,
) {
    loop {
        let page = store.feed(after, 100).await.expect("feed page");
        if page.is_empty() {
            return;
        }
        for e in &page {
            pms.handle(e)
                .await
                .expect("process managers handle the event");
            after.advance(e.global_position.expect("feed events carry their position"));
        }
    }
}

/// The [`KeyStore`] contract, for every adapter's tests.
pub async fn key_store_contract(keys: Arc<dyn crate::pii::KeyStore>) {
    let customer = format!("contract-{}", uuid::Uuid::new_v4().simple());
    let unknown = keys.lookup(&customer).await.expect("lookup");
    assert!(
        unknown.key.is_none() && !unknown.erased,
        "a new customer has nothing"
    );

    let racers: Vec<_> = (0..8)
        .map(|_| {
            let keys = keys.clone();
            let customer = customer.clone();
            tokio::spawn(async move { keys.key_for(&customer).await.expect("key_for") })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    let mut materials = std::collections::BTreeSet::new();
    for racer in racers {
        let key = racer.await.expect("join");
        ids.insert(key.id().to_owned());
        materials.insert(*key.material());
    }
    assert_eq!(ids.len(), 1, "concurrent key_for calls agree on one key");
    assert_eq!(materials.len(), 1);
    let first = keys.key_for(&customer).await.expect("key_for again");
    let found = keys.lookup(&customer).await.expect("lookup");
    assert_eq!(
        found.key.as_ref().map(crate::pii::DataKey::id),
        Some(first.id())
    );
    assert_eq!(
        found.key.as_ref().map(|k| *k.material()),
        Some(*first.material())
    );
    assert!(!found.erased);

    keys.erase(&customer).await.expect("erase");
    keys.erase(&customer).await.expect("erase again is fine");
    let erased = keys.lookup(&customer).await.expect("lookup");
    assert!(erased.key.is_none(), "the key is gone");
    assert!(erased.erased, "the erasure is remembered");

    let second = keys
        .key_for(&customer)
        .await
        .expect("a new key after erasure");
    assert_ne!(second.id(), first.id());
    assert_ne!(second.material(), first.material());
    let after = keys.lookup(&customer).await.expect("lookup");
    assert_eq!(
        after.key.as_ref().map(crate::pii::DataKey::id),
        Some(second.id())
    );
    assert!(after.erased, "a new key keeps the older erasure");

    let never = format!("never-{}", uuid::Uuid::new_v4().simple());
    keys.erase(&never)
        .await
        .expect("erasing a customer without a key");
    assert!(keys.lookup(&never).await.expect("lookup").erased);
}
