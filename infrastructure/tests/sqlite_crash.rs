//! Crash safety of the SQLite event store: a child process appends commits as fast as it can and
//! prints the id of each acknowledged one; the parent SIGKILLs it mid-run, reopens the file and
//! checks that every acknowledged commit is there, every commit is whole (all of its events in
//! all of its streams, or nothing), and every stream is gapless. Three rounds run on the same
//! file, so recovery from a killed writer is itself followed by more writes and another kill.
//!
//! The child is this same test binary, re-executed with [`CHILD_DB_ENV`] set, running only
//! [`crash_writer_child_process`] (which does nothing in a normal test run).

#[path = "support/child.rs"]
mod child;
use child::child_test;

use commands::FeedCursor;
use commands::{
    Actor, AppendOutcome, Commit, EventStore, Idempotency, Metadata, NewEvent, Snapshot,
    StoreError, StreamAppend, StreamRef,
};
use domain::StreamType;
use infrastructure::sqlite::{SqliteEventStore, SqliteOptions};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const CHILD_DB_ENV: &str = "BACKBONE_SQLITE_CRASH_CHILD_DB";
const CHILD_ROUND_ENV: &str = "BACKBONE_SQLITE_CRASH_CHILD_ROUND";
const CHILD_TEST: &str = "crash_writer_child_process";
const WRITER_TASKS: usize = 8;
/// Events per commit: one on the task's long-lived cart stream, two on a new order stream.
const EVENTS_PER_COMMIT: usize = 3;
/// The child stops by itself after this long, in case the parent died without killing it.
const CHILD_MAX_RUNTIME: Duration = Duration::from_secs(60);

/// Entry point of the child process. A no-op unless [`CHILD_DB_ENV`] is set.
#[test]
fn crash_writer_child_process() {
    let Ok(path) = std::env::var(CHILD_DB_ENV) else {
        return;
    };
    let round: usize = std::env::var(CHILD_ROUND_ENV)
        .ok()
        .and_then(|r| r.parse().ok())
        .expect("round number");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(write_until_killed(path, round));
}

async fn write_until_killed(path: String, round: usize) {
    let store = std::sync::Arc::new(
        SqliteEventStore::open(&path, SqliteOptions::default()).expect("child opens the store"),
    );
    // libtest may have printed "test name ... " without a newline; start ACKs on a fresh line.
    emit("\nSTARTED");
    let deadline = Instant::now() + CHILD_MAX_RUNTIME;
    let mut tasks = Vec::new();
    for task in 0..WRITER_TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let cart = StreamRef::new(StreamType::Cart, format!("cart-{task}"));
            let mut version = store.load(&cart).await.expect("load").version;
            let mut n = 0usize;
            while Instant::now() < deadline {
                let id = format!("r{round}-t{task}-n{n}");
                let commit = commit_for(&id, &cart, version, n);
                match store.append(commit).await {
                    Ok(AppendOutcome::Committed(_)) => {
                        emit(&format!("ACK {id}"));
                        version += 1;
                        n += 1;
                    }
                    Err(StoreError::Unavailable(_)) => {}
                    other => panic!("child append {id} failed: {other:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    // If the parent has gone, there is nobody to tell; the writes themselves continue.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn event(commit_id: &str, part: &str) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "CrashTested".into(),
        event_version: 1,
        occurred_at: chrono::Utc::now(),
        payload:
            json!({ "commit": commit_id, "part": part, "events_in_commit": EVENTS_PER_COMMIT })
                .into(),
        metadata: Metadata {
            correlation_id: commit_id.to_string(),
            causation_id: None,
            actor: Actor {
                subject: "crash-test".into(),
                role: "admin".into(),
            },
            request_id: None,
            command_id: Some(commit_id.to_string()),
            traceparent: None,
        },
    }
}

fn commit_for(id: &str, cart: &StreamRef, cart_version: u64, n: usize) -> Commit {
    let order = StreamRef::new(StreamType::Order, format!("order-{id}"));
    Commit {
        streams: vec![
            StreamAppend {
                stream: cart.clone(),
                expected_version: cart_version,
                events: vec![event(id, "cart")],
                // Every 5th commit also replaces the cart's snapshot in the same transaction.
                snapshot: (n % 5 == 4).then(|| Snapshot {
                    version: cart_version + 1,
                    schema_version: 1,
                    state: json!({ "commit": id }),
                }),
            },
            StreamAppend {
                stream: order,
                expected_version: 0,
                events: vec![event(id, "order-1"), event(id, "order-2")],
                snapshot: None,
            },
        ],
        idempotency: Some(Idempotency {
            command_id: id.to_string(),
            fingerprint: "crash".into(),
            outcome: json!({ "commit": id }),
        }),
    }
}

#[test]
fn acknowledged_commits_survive_sigkill_of_the_writer_process() {
    if std::env::var_os(CHILD_DB_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    let mut acknowledged: HashSet<String> = HashSet::new();
    for round in 0..3usize {
        let mut child = child_test(CHILD_TEST)
            .env(CHILD_DB_ENV, &path)
            .env(CHILD_ROUND_ENV, round.to_string())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the writer child");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Kill at a different point each round, well into the run.
        let kill_after = 300 + round * 137;
        let mut round_acks = 0usize;
        for line in lines.by_ref() {
            let line = line.expect("child stdout");
            if let Some(id) = line.trim().strip_prefix("ACK ") {
                acknowledged.insert(id.to_string());
                round_acks += 1;
                if round_acks >= kill_after {
                    break;
                }
            }
        }
        assert!(
            round_acks >= kill_after,
            "round {round}: the child stopped after {round_acks} commits, before being killed"
        );
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("reap the child");
        assert!(!status.success(), "the child must have died from the kill");
        // Whatever the child printed before it died was acknowledged before it died.
        for line in lines {
            let Ok(line) = line else { break };
            if let Some(id) = line.trim().strip_prefix("ACK ") {
                acknowledged.insert(id.to_string());
            }
        }
        verify(&path, &acknowledged, round);
    }
}

/// Reopens the file after a kill and checks every durability and atomicity promise.
fn verify(path: &Path, acknowledged: &HashSet<String>, round: usize) {
    let integrity: String = rusqlite::Connection::open(path)
        .and_then(|c| c.query_row("PRAGMA integrity_check", [], |row| row.get(0)))
        .expect("integrity check");
    assert_eq!(
        integrity, "ok",
        "round {round}: the file is intact after the kill"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = SqliteEventStore::open(path, SqliteOptions::default()).expect("reopen");
        let mut feed = Vec::new();
        let mut after = 0;
        loop {
            let page = store
                .feed(&FeedCursor::at(after), 1_000)
                .await
                .expect("feed");
            let Some(last) = page.last() else { break };
            after = last.global_position.expect("feed sets positions");
            feed.extend(page);
        }
        assert_eq!(
            store.head().await.expect("head"),
            FeedCursor::at(after),
            "round {round}: head after reopen"
        );

        let mut per_commit: HashMap<String, Vec<String>> = HashMap::new();
        let mut streams: BTreeMap<StreamRef, u64> = BTreeMap::new();
        for e in &feed {
            let commit = e.metadata.command_id.clone().expect("command id");
            let part = e.payload.value()["part"]
                .as_str()
                .expect("part")
                .to_string();
            per_commit.entry(commit).or_default().push(part);
            *streams.entry(e.stream()).or_default() += 1;
        }
        for (commit, parts) in &per_commit {
            assert_eq!(
                parts,
                &["cart", "order-1", "order-2"],
                "round {round}: commit {commit} is partial: only {parts:?} survived"
            );
            assert!(
                store.idempotency(commit).await.expect("lookup").is_some(),
                "round {round}: commit {commit} has events but no idempotency record"
            );
        }
        for id in acknowledged {
            assert!(
                per_commit.contains_key(id),
                "round {round}: acknowledged commit {id} was lost"
            );
        }
        for (stream, count) in &streams {
            let events = store.read(stream, 1..=u64::MAX).await.expect("read");
            let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
            assert_eq!(
                sequences,
                (1..=*count).collect::<Vec<_>>(),
                "round {round}: {stream} must be gapless"
            );
            let loaded = store.load(stream).await.expect("load");
            assert_eq!(
                loaded.version, *count,
                "round {round}: {stream} loads at its last sequence"
            );
            if let Some(snapshot) = &loaded.snapshot {
                assert!(
                    snapshot.version <= *count,
                    "round {round}: a snapshot never runs ahead of its events"
                );
            }
        }
        eprintln!(
            "round {round}: {} commits on disk, {} acknowledged so far, {} events",
            per_commit.len(),
            acknowledged.len(),
            feed.len()
        );
    });
}
