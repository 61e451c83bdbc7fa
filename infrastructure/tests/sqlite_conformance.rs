//! The shared event-store conformance suite on the SQLite adapter (one test per check, each on
//! a fresh file), plus behaviour only the embedded store has: reopening, NORMAL sync, and group
//! commit answering each caller on its own.

use commands::conformance::{new_event, race, WithGuard};
use commands::FeedCursor;
use commands::{AppendOutcome, Commit, EventStore, StoreError, StreamAppend, StreamRef};
use domain::StreamType;
use infrastructure::sqlite::{SqliteEventStore, SqliteOptions, Synchronous};
use serde_json::json;
use std::sync::Arc;
use tempfile::TempDir;

#[path = "support/size_watch.rs"]
mod size_watch;
use size_watch::SizeWatch;

async fn fresh_store() -> WithGuard<SqliteEventStore, TempDir> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteEventStore::open(dir.path().join("events.db"), SqliteOptions::default())
        .expect("open sqlite store");
    WithGuard::new(store, dir)
}

mod conformance {
    commands::conformance_tests!(super::fresh_store);
}

/// The store with its in-memory feed tail turned off: every feed page comes from SQLite.
async fn fresh_store_without_recent_feed() -> WithGuard<SqliteEventStore, TempDir> {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteOptions {
        recent_events: 0,
        ..SqliteOptions::default()
    };
    let store =
        SqliteEventStore::open(dir.path().join("events.db"), options).expect("open sqlite store");
    WithGuard::new(store, dir)
}

mod conformance_without_recent_feed {
    commands::conformance_tests!(super::fresh_store_without_recent_feed);
}

fn append_one(stream: &StreamRef, expected_version: u64, n: usize) -> Commit {
    Commit {
        streams: vec![StreamAppend {
            stream: stream.clone(),
            expected_version,
            events: (0..n)
                .map(|i| new_event("ThingCounted", json!({ "n": i })))
                .collect(),
            snapshot: None,
        }],
        idempotency: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_after_drop_keeps_events_snapshots_idempotency_and_head() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    let order = StreamRef::new(StreamType::Order, "o-1");
    let (before_events, before_head, before_record) = {
        let store = SqliteEventStore::open(&path, SqliteOptions::default()).expect("open");
        store
            .append(append_one(&order, 0, 3))
            .await
            .expect("append");
        let mut commit = append_one(&order, 3, 2);
        commit.streams[0].snapshot = Some(commands::Snapshot {
            version: 5,
            schema_version: 1,
            state: json!({ "n": 5 }),
        });
        commit.idempotency = Some(commands::Idempotency {
            command_id: "cmd-1".into(),
            fingerprint: "f".into(),
            outcome: json!({ "ok": true }),
        });
        store.append(commit).await.expect("append with snapshot");
        (
            store.read(&order, 1..=100).await.expect("read"),
            store.head().await.expect("head"),
            store.idempotency("cmd-1").await.expect("lookup"),
        )
    };
    assert_eq!(before_head, FeedCursor::at(5), "five events were written");

    let store = SqliteEventStore::open(&path, SqliteOptions::default()).expect("reopen");
    assert_eq!(
        store.head().await.expect("head"),
        before_head,
        "head is restored from the file"
    );
    assert_eq!(
        store.read(&order, 1..=100).await.expect("read"),
        before_events,
        "every event survives the reopen unchanged"
    );
    assert_eq!(
        store.idempotency("cmd-1").await.expect("lookup"),
        before_record,
        "the idempotency record survives"
    );
    let loaded = store.load(&order).await.expect("load");
    assert_eq!(
        loaded.snapshot.map(|s| s.version),
        Some(5),
        "the snapshot survives"
    );
    assert_eq!(loaded.version, 5, "the stream version survives");
    match store.append(append_one(&order, 5, 1)).await {
        Ok(AppendOutcome::Committed(r)) => assert_eq!(
            r.position,
            Some(6),
            "positions continue after the reopened head"
        ),
        other => panic!("appending after a reopen must work, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_synchronous_mode_is_opt_in_and_works() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    assert_eq!(
        SqliteOptions::default().synchronous,
        Synchronous::Full,
        "FULL is the default"
    );
    let cart = StreamRef::new(StreamType::Cart, "c-1");
    {
        let store = SqliteEventStore::open(
            &path,
            SqliteOptions {
                synchronous: Synchronous::Normal,
                ..SqliteOptions::default()
            },
        )
        .expect("open with NORMAL");
        for v in 0..10 {
            store.append(append_one(&cart, v, 1)).await.expect("append");
        }
    }
    let store = SqliteEventStore::open(&path, SqliteOptions::default()).expect("reopen with FULL");
    assert_eq!(
        store.load(&cart).await.expect("load").version,
        10,
        "commits made under NORMAL are kept after a clean shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_gives_each_caller_its_own_outcome() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        SqliteEventStore::open(dir.path().join("events.db"), SqliteOptions::default())
            .expect("open"),
    );
    let shared = StreamRef::new(StreamType::Product, "p-shared");
    store
        .append(append_one(&shared, 0, 1))
        .await
        .expect("setup");

    // Many commits queued at once land in the same groups: independent streams must commit,
    // stale expected versions must conflict alone, and one valid append to the shared stream
    // must win without being undone by its failing neighbours.
    const N: usize = 64;
    let outcomes = race(N, |i, barrier| {
        let (store, shared) = (store.clone(), shared.clone());
        async move {
            let commit = match i % 4 {
                // Stale: the shared stream is at 1.
                0 => append_one(&shared, 0, 1),
                // Valid the first time, then a conflict for the rest.
                1 => append_one(&shared, 1, 1),
                _ => append_one(&StreamRef::new(StreamType::Cart, format!("c-{i}")), 0, 2),
            };
            barrier.wait().await;
            (i, store.append(commit).await)
        }
    })
    .await;
    let mut shared_wins = 0;
    for (i, outcome) in outcomes {
        match (i % 4, outcome) {
            (0, Err(StoreError::Conflict { actual, .. })) => {
                assert!(actual >= Some(1), "a stale append sees the real version")
            }
            (1, Ok(AppendOutcome::Committed(r))) => {
                assert_eq!(
                    r.streams[0].version, 2,
                    "the one winner moves the stream to 2"
                );
                shared_wins += 1;
            }
            (1, Err(StoreError::Conflict { .. })) => {}
            (k, Ok(AppendOutcome::Committed(r))) if k >= 2 => {
                assert_eq!(r.streams[0].version, 2, "independent stream committed");
                assert!(r.position.is_some(), "the embedded store knows positions");
            }
            (k, other) => panic!("commit {i} (kind {k}) got an unexpected outcome {other:?}"),
        }
    }
    assert_eq!(shared_wins, 1, "exactly one append at version 1 wins");
    let stats = store.write_stats();
    assert_eq!(
        stats.commits,
        1 + N as u64,
        "every request was handled once"
    );
    assert!(
        stats.groups < stats.commits,
        "concurrent commits share transactions: {stats:?}"
    );
    let loaded = store.load(&shared).await.expect("load");
    assert_eq!(
        loaded.version, 2,
        "the shared stream holds setup + one winner"
    );
    for i in (0..N).filter(|i| i % 4 >= 2) {
        let s = StreamRef::new(StreamType::Cart, format!("c-{i}"));
        assert_eq!(
            store.load(&s).await.expect("load").events.len(),
            2,
            "commit {i} was kept although other commits in its group failed"
        );
    }
    let feed = store
        .feed(&FeedCursor::start(), 10_000)
        .await
        .expect("feed");
    assert_eq!(
        feed.len(),
        1 + 1 + (N / 2) * 2,
        "nothing else reached the feed"
    );
    assert_eq!(
        store.head().await.expect("head"),
        FeedCursor::at(feed.last().and_then(|e| e.global_position).unwrap_or(0)),
        "head matches the feed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_watch_and_global_positions_are_set_on_every_read_path() {
    let fresh = fresh_store().await;
    let store = &fresh.store;
    let mut watch = store.head_watch();
    assert_eq!(*watch.borrow_and_update(), 0, "an empty store has head 0");
    let s = StreamRef::new(StreamType::Payment, "pay-1");
    store.append(append_one(&s, 0, 3)).await.expect("append");
    assert!(
        watch.has_changed().unwrap_or(false),
        "the watch saw the commit"
    );
    assert_eq!(*watch.borrow_and_update(), 3, "the watch carries the head");
    let loaded = store.load(&s).await.expect("load");
    let read = store.read(&s, 1..=3).await.expect("read");
    let positions = |events: &[commands::EventEnvelope]| -> Vec<Option<u64>> {
        events.iter().map(|e| e.global_position).collect()
    };
    let expected = vec![Some(1), Some(2), Some(3)];
    assert_eq!(positions(&loaded.events), expected, "load sets positions");
    assert_eq!(positions(&read), expected, "read sets positions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_an_event_id_is_an_invalid_commit() {
    let fresh = fresh_store().await;
    let store = &fresh.store;
    let a = StreamRef::new(StreamType::Order, "o-a");
    let b = StreamRef::new(StreamType::Order, "o-b");
    let commit = append_one(&a, 0, 1);
    let mut replay = append_one(&b, 0, 1);
    replay.streams[0].events = commit.streams[0].events.clone();
    store.append(commit).await.expect("first");
    let result = store.append(replay).await;
    assert!(
        matches!(result, Err(StoreError::InvalidCommit(_))),
        "re-sending stored events is InvalidCommit, got {result:?}"
    );
    assert!(
        store.load(&b).await.expect("load").events.is_empty(),
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_feed_pages_read_in_parallel_ranges_equal_small_pages() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteEventStore::open(
        dir.path().join("events.db"),
        SqliteOptions {
            synchronous: Synchronous::Normal,
            // Every page from SQLite: this test is about its parallel ranges.
            recent_events: 0,
            ..SqliteOptions::default()
        },
    )
    .expect("open");
    // 3,050 events over 61 streams, so pages of 1,000 split into ranges below the head, and
    // the last page does not.
    for c in 0..61 {
        let s = StreamRef::new(StreamType::Order, format!("o-{c}"));
        store.append(append_one(&s, 0, 50)).await.expect("append");
    }
    let mut small = Vec::new();
    let mut after = 0;
    loop {
        let page = store.feed(&FeedCursor::at(after), 7).await.expect("feed");
        let Some(last) = page.last() else { break };
        after = last.global_position.expect("position");
        small.extend(page);
    }
    assert_eq!(small.len(), 3_050, "small pages see every event");
    for (after, limit) in [
        (0u64, 1_000usize),
        (17, 1_000),
        (2_000, 1_000),
        (2_500, 4_096),
        (0, 10_000),
    ] {
        let page = store
            .feed(&FeedCursor::at(after), limit)
            .await
            .expect("feed");
        let expected: Vec<_> = small
            .iter()
            .filter(|e| e.global_position > Some(after))
            .take(limit)
            .cloned()
            .collect();
        assert_eq!(
            page, expected,
            "feed({after}, {limit}) must equal the same range read in small pages"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_memory_feed_tail_serves_exactly_what_sqlite_holds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    // A tail of 25 events: pages starting further back fall back to SQLite.
    let small_tail = SqliteOptions {
        recent_events: 25,
        ..SqliteOptions::default()
    };
    let store = SqliteEventStore::open(&path, small_tail.clone()).expect("open");
    // Multi-stream commits, with metadata, snapshots and a conflicting commit in between.
    for c in 0..20u64 {
        let order = StreamRef::new(StreamType::Order, format!("o-{}", c % 3));
        let cart = StreamRef::new(StreamType::Cart, format!("c-{c}"));
        let version = store.load(&order).await.expect("load").version;
        let mut commit = append_one(&order, version, 2);
        commit.streams.push(StreamAppend {
            stream: cart.clone(),
            expected_version: 0,
            events: vec![new_event("CartOpened", json!({ "c": c, "price": "1.50" }))],
            snapshot: None,
        });
        store.append(commit).await.expect("append");
        let stale = append_one(&order, 0, 1);
        assert!(matches!(
            store.append(stale).await,
            Err(StoreError::Conflict { .. })
        ));
    }
    let head = store.head().await.expect("head").count();
    assert_eq!(head, 60);
    let mut from_memory = Vec::new();
    for after in [0, 20, 34, 35, 36, 50, 59, 60] {
        from_memory.push(store.feed(&FeedCursor::at(after), 7).await.expect("feed"));
    }
    drop(store);

    // Reopened, the tail is empty: every page comes from SQLite.
    let store = SqliteEventStore::open(&path, small_tail).expect("reopen");
    for (after, page) in [0, 20, 34, 35, 36, 50, 59, 60]
        .into_iter()
        .zip(&from_memory)
    {
        let from_sqlite = store.feed(&FeedCursor::at(after), 7).await.expect("feed");
        assert_eq!(&from_sqlite, page, "page after {after}");
        let expected: Vec<u64> = (after + 1..=(after + 7).min(head)).collect();
        let positions: Vec<u64> = page.iter().filter_map(|e| e.global_position).collect();
        assert_eq!(positions, expected, "page after {after}");
    }
    // New commits after the reopen are served from memory again, gapless after the old head.
    let cart = StreamRef::new(StreamType::Cart, "c-new");
    store.append(append_one(&cart, 0, 3)).await.expect("append");
    let page = store.feed(&FeedCursor::at(59), 10).await.expect("feed");
    let positions: Vec<u64> = page.iter().filter_map(|e| e.global_position).collect();
    assert_eq!(positions, vec![60, 61, 62, 63]);
    assert_eq!(page[1].stream_id, "c-new");
    assert_eq!(page[3].sequence, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_failing_mid_write_is_undone_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    let store = Arc::new(SqliteEventStore::open(&path, SqliteOptions::default()).expect("open"));
    let setup = append_one(&StreamRef::new(StreamType::Product, "p-0"), 0, 1);
    let reused = setup.streams[0].events[0].clone();
    store.append(setup).await.expect("setup");

    // Every fourth commit writes a new stream, then fails on its second stream, whose event
    // reuses a stored event id: its first writes must be undone, and only they.
    const N: usize = 48;
    let outcomes = race(N, |i, barrier| {
        let (store, reused) = (store.clone(), reused.clone());
        async move {
            let mut commit = append_one(&StreamRef::new(StreamType::Cart, format!("c-{i}")), 0, 2);
            if i % 4 == 0 {
                commit.streams.push(StreamAppend {
                    stream: StreamRef::new(StreamType::Order, format!("o-{i}")),
                    expected_version: 0,
                    events: vec![reused],
                    snapshot: None,
                });
            }
            barrier.wait().await;
            (i, store.append(commit).await)
        }
    })
    .await;
    for (i, outcome) in outcomes {
        match (i % 4 == 0, outcome) {
            (true, Err(StoreError::InvalidCommit(_))) => {}
            (false, Ok(AppendOutcome::Committed(r))) => assert_eq!(r.streams[0].version, 2),
            (_, other) => panic!("commit {i} got {other:?}"),
        }
    }
    for i in 0..N {
        let cart = store
            .load(&StreamRef::new(StreamType::Cart, format!("c-{i}")))
            .await
            .expect("load");
        let expected = if i % 4 == 0 { 0 } else { 2 };
        assert_eq!(cart.events.len(), expected, "cart of commit {i}");
    }
    // The feed, from memory and from SQLite, holds the setup and the 36 good commits, gapless.
    let from_memory = store.feed(&FeedCursor::start(), 1_000).await.expect("feed");
    let positions: Vec<u64> = from_memory
        .iter()
        .filter_map(|e| e.global_position)
        .collect();
    assert_eq!(positions, (1..=1 + 36 * 2).collect::<Vec<u64>>());
    drop(store);
    let reopened = SqliteEventStore::open(&path, SqliteOptions::default()).expect("reopen");
    assert_eq!(
        reopened
            .feed(&FeedCursor::start(), 1_000)
            .await
            .expect("feed"),
        from_memory
    );
}

/// The writer remembers the versions it wrote, so checking expected versions costs no query. A
/// remembered version must be exactly the stored one: after commits, after conflicts, and after
/// a group whose commit failed mid-write was rolled back and rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_remembered_versions_never_let_a_stale_expectation_through() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteEventStore::open(dir.path().join("events.db"), SqliteOptions::default())
        .expect("open");
    let cart = StreamRef::new(StreamType::Cart, "c-remembered");
    let conflict_at = |outcome: Result<AppendOutcome, StoreError>| match outcome {
        Err(StoreError::Conflict { actual, .. }) => actual,
        other => panic!("expected a conflict, got {other:?}"),
    };

    store.append(append_one(&cart, 0, 2)).await.expect("first");
    // Remembered from the first commit: a retry of it, and a guess past it, both conflict.
    assert_eq!(
        conflict_at(store.append(append_one(&cart, 0, 1)).await),
        Some(2)
    );
    assert_eq!(
        conflict_at(store.append(append_one(&cart, 3, 1)).await),
        Some(2)
    );
    store.append(append_one(&cart, 2, 1)).await.expect("at 2");

    // A commit that fails mid-write after writing `cart`: its group is rolled back and
    // rewritten, and `cart` must not be remembered at the version the failed write reached.
    let other = StreamRef::new(StreamType::Product, "p-remembered");
    let reused = append_one(&other, 0, 1);
    let reused_event = reused.streams[0].events[0].clone();
    store.append(reused).await.expect("other");
    let failing = Commit {
        streams: vec![
            append_one(&cart, 3, 2).streams.remove(0),
            StreamAppend {
                stream: StreamRef::new(StreamType::Order, "o-remembered"),
                expected_version: 0,
                events: vec![reused_event],
                snapshot: None,
            },
        ],
        idempotency: None,
    };
    assert!(matches!(
        store.append(failing).await,
        Err(StoreError::InvalidCommit(_))
    ));
    assert_eq!(
        conflict_at(store.append(append_one(&cart, 5, 1)).await),
        Some(3)
    );
    let ok = store.append(append_one(&cart, 3, 1)).await.expect("at 3");
    let AppendOutcome::Committed(result) = ok else {
        panic!("expected a commit, got {ok:?}");
    };
    assert_eq!(result.streams[0].version, 4);

    // Many commits to one stream in one group check against each other's writes.
    let store = Arc::new(store);
    let mut handles = Vec::new();
    for expected in [4, 4, 5, 6] {
        let (store, cart) = (store.clone(), cart.clone());
        handles.push(tokio::spawn(async move {
            store.append(append_one(&cart, expected, 1)).await
        }));
    }
    let mut committed = 0;
    for h in handles {
        if h.await.expect("task").is_ok() {
            committed += 1;
        }
    }
    let stored = store.load(&cart).await.expect("load");
    assert_eq!(stored.version, 4 + committed);
    let sequences: Vec<u64> = stored.events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=4 + committed).collect::<Vec<u64>>());
}

/// Under a steady stream of commits and reads, the background checkpoint never catches up with
/// the writer by itself, so SQLite never rewinds the WAL and it grows without bound (every commit
/// then also allocates new blocks of the file). The writer rewinds it whenever a checkpoint has
/// caught up: the WAL must stay a few megabytes long, and everything committed must still read
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_stays_small_under_steady_writes_and_reads() {
    const WRITERS: usize = 16;
    const COMMITS_PER_WRITER: usize = 800;
    // ~50 MB of payload in all: far more than the bound below.
    let payload = "x".repeat(4096);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    let options = SqliteOptions {
        checkpoint_interval: std::time::Duration::from_millis(5),
        // Feed reads go to SQLite, so readers hold WAL snapshots all the time.
        recent_events: 0,
        ..SqliteOptions::default()
    };
    let store = Arc::new(SqliteEventStore::open(&path, options).expect("open"));
    let wal = SizeWatch::start(dir.path().join("events.db-wal"));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..4u64 {
        let (store, done) = (store.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let from = store
                    .head()
                    .await
                    .expect("head")
                    .count()
                    .saturating_sub(50 + r);
                store.feed(&FeedCursor::at(from), 50).await.expect("feed");
                reads += 1;
            }
            reads
        }));
    }
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, payload) = (store.clone(), payload.clone());
        writers.push(tokio::spawn(async move {
            let stream = StreamRef::new(StreamType::Cart, format!("wal-{w}"));
            for version in 0..COMMITS_PER_WRITER as u64 {
                let mut commit = append_one(&stream, version, 1);
                commit.streams[0].events[0].payload = json!({ "pad": payload }).into();
                match store.append(commit).await.expect("append") {
                    AppendOutcome::Committed(_) => {}
                    other => panic!("unexpected outcome {other:?}"),
                }
            }
        }));
    }
    for w in writers {
        w.await.expect("writer task");
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let mut reads = 0;
    for r in readers {
        reads += r.await.expect("reader task");
    }
    let stats = store.write_stats();
    wal.stop_and_assert_below(12 * 1024 * 1024, &format!("the WAL ({stats:?})"));
    assert!(
        reads > 100,
        "readers kept reading during the writes: {reads}"
    );
    assert!(
        stats.wal_restarts > 0,
        "the writer rewound the WAL: {stats:?}"
    );
    for w in 0..WRITERS {
        let stream = StreamRef::new(StreamType::Cart, format!("wal-{w}"));
        let loaded = store.load(&stream).await.expect("load");
        assert_eq!(
            loaded.version, COMMITS_PER_WRITER as u64,
            "stream {w} is whole"
        );
    }
    assert_eq!(
        store.head().await.expect("head"),
        FeedCursor::at((WRITERS * COMMITS_PER_WRITER) as u64),
        "every commit is in the feed"
    );
}
