//! The golden history: events written by the code of `cf8c813`, checked in under
//! `tests/fixtures/golden/`, must still load, fold and project exactly as they did then.
//!
//! - `history.jsonl`: one stored envelope per line, in feed order (the payload text as stored);
//! - `states.json`: every stream's state after folding all its events;
//! - `read_models.json`: every read-model document (body and index entries) after the four
//!   projections ran over the whole history.
//!
//! `BLESS=1 cargo test -p backbone-tests --test golden` writes the files again from the simulator;
//! do that only when a change is meant to alter stored history, and say so in the commit.
//! `BLESS=expectations` keeps `history.jsonl` and writes only the two expectations, for a change
//! that reads the same history into a richer shape (a new event version's upcast).

use commands::{CommandService, EventEnvelope, EventStore, Payload, ServiceConfig, SystemClock};
use domain::{Cart, Event, EventSourced, Order, Payment, Product, StreamType};
use infrastructure::sqlite::SqliteReadModelStore;
use infrastructure::sqlite::{SqliteEventStore, SqliteOptions};
use projections::store::Dump;
use projections::testsuite::fixtures::scenario;
use projections::testsuite::VecEventStore;
use projections::{all_projections, MemoryReadModelStore, ReadModelStore};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

const SEED: u64 = 20_261_205;
const STEPS: usize = 400;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden")
}

fn read_history() -> Vec<EventEnvelope> {
    static BLESS: std::sync::Once = std::sync::Once::new();
    if std::env::var_os("BLESS").is_some() {
        // On its own thread: the projections run on a runtime of their own.
        BLESS.call_once(|| std::thread::spawn(bless).join().expect("bless"));
    }
    parse_history()
}

fn parse_history() -> Vec<EventEnvelope> {
    let text = std::fs::read_to_string(dir().join("history.jsonl")).expect("golden history");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("golden envelope"))
        .collect()
}

fn read_json(name: &str) -> Value {
    let text = std::fs::read_to_string(dir().join(name)).expect("golden file");
    serde_json::from_str(&text).expect("golden json")
}

/// Every stream's state after folding its events, typed through the domain.
fn fold_all(history: &[EventEnvelope]) -> Value {
    fn fold<A: EventSourced>(events: &[&EventEnvelope]) -> Value {
        let mut state = A::default();
        for e in events {
            let event = e
                .payload
                .decode_event::<A::Event>(&e.event_type, e.event_version)
                .unwrap_or_else(|err| panic!("{} {}: {err}", e.event_type, e.event_version));
            let encoded = Payload::of_event(&event);
            if event.event_version() == e.event_version {
                // Stored text is exactly what today's encoder writes for the decoded event.
                assert_eq!(
                    encoded.json(),
                    e.payload.json(),
                    "{} re-encodes differently",
                    e.event_type
                );
            } else {
                // An older version is upcast: written again at today's version, it reads back
                // as the same event.
                assert!(event.event_version() > e.event_version);
                let again = encoded
                    .decode_event::<A::Event>(&e.event_type, event.event_version())
                    .unwrap_or_else(|err| panic!("{} re-read: {err}", e.event_type));
                assert_eq!(
                    serde_json::to_value(&again).expect("json"),
                    serde_json::to_value(&event).expect("json"),
                    "{} does not round-trip at its current version",
                    e.event_type
                );
            }
            assert_eq!(event.event_type(), e.event_type);
            cqrs_es::Aggregate::apply(&mut state, event);
        }
        serde_json::to_value(&state).expect("state json")
    }
    let mut streams: BTreeMap<String, Vec<&EventEnvelope>> = BTreeMap::new();
    for e in history {
        streams.entry(e.stream().to_string()).or_default().push(e);
    }
    let mut out = serde_json::Map::new();
    for (key, events) in streams {
        let state = match events[0].stream_type {
            StreamType::Cart => fold::<Cart>(&events),
            StreamType::Order => fold::<Order>(&events),
            StreamType::Payment => fold::<Payment>(&events),
            StreamType::Product => fold::<Product>(&events),
            StreamType::Notification => fold::<domain::Notification>(&events),
            StreamType::Customer => fold::<domain::Customer>(&events),
        };
        out.insert(key, state);
    }
    Value::Object(out)
}

fn dump_json(dump: &Dump) -> Value {
    Value::Array(
        dump.iter()
            .map(|((collection, key), doc)| {
                json!({
                    "collection": collection,
                    "key": key,
                    "body": doc.body,
                    "index": doc.index.iter().collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

async fn project(models: Arc<dyn ReadModelStore>, history: &[EventEnvelope]) {
    let store: Arc<dyn EventStore> = Arc::new(VecEventStore::with_events(history.to_vec()));
    projections::rebuild_all(store, models, &all_projections(), 97, |_, _| {})
        .await
        .expect("rebuild");
}

fn reencode<A: EventSourced>(e: &EventEnvelope) -> Payload {
    let event = e
        .payload
        .decode_event::<A::Event>(&e.event_type, e.event_version)
        .expect("decode");
    Payload::of_event(&event)
}

fn bless() {
    // `BLESS=expectations` keeps the stored history and writes only what it must fold and
    // project to: for a change that reads old history differently on purpose (an upcast).
    if std::env::var("BLESS").as_deref() != Ok("expectations") {
        write_history();
    }
    // Read back, so the expectations come from the stored form.
    let history = parse_history();
    let dir = dir();
    let states = fold_all(&history);
    std::fs::write(
        dir.join("states.json"),
        serde_json::to_string_pretty(&states).expect("states") + "\n",
    )
    .expect("write states");
    let models = Arc::new(MemoryReadModelStore::new());
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(project(models.clone(), &history));
    let dump = dump_json(&models.dump().expect("dump"));
    std::fs::write(
        dir.join("read_models.json"),
        serde_json::to_string_pretty(&dump).expect("dump") + "\n",
    )
    .expect("write read models");
}

/// Writes the simulator's history, as the command service would store it.
fn write_history() {
    let mut history = scenario(SEED, STEPS);
    // Stored as the command service writes it: `Payload::of_event` of the decided event.
    for e in &mut history {
        e.payload = match e.stream_type {
            StreamType::Cart => reencode::<Cart>(e),
            StreamType::Order => reencode::<Order>(e),
            StreamType::Payment => reencode::<Payment>(e),
            StreamType::Product => reencode::<Product>(e),
            StreamType::Notification => reencode::<domain::Notification>(e),
            StreamType::Customer => reencode::<domain::Customer>(e),
        };
    }
    let dir = dir();
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut lines = String::new();
    for e in &history {
        lines.push_str(&serde_json::to_string(e).expect("envelope"));
        lines.push('\n');
    }
    std::fs::write(dir.join("history.jsonl"), lines).expect("write history");
}

#[test]
fn the_golden_history_covers_every_stream_type_and_many_event_types() {
    let history = read_history();
    assert!(history.len() > 500, "only {} events", history.len());
    let types: std::collections::BTreeSet<&str> =
        history.iter().map(|e| e.event_type.as_str()).collect();
    assert!(
        types.len() >= 20,
        "only {} event types: {types:?}",
        types.len()
    );
    for stream_type in [
        StreamType::Cart,
        StreamType::Order,
        StreamType::Payment,
        StreamType::Product,
    ] {
        assert!(history.iter().any(|e| e.stream_type == stream_type));
    }
}

#[test]
fn the_golden_history_decodes_reencodes_and_folds_to_the_same_states() {
    let history = read_history();
    assert_eq!(fold_all(&history), read_json("states.json"));
}

#[tokio::test]
async fn the_golden_history_loads_from_the_embedded_store_into_the_same_states() {
    let history = read_history();
    let tmp = tempfile::tempdir().expect("tmp");
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(tmp.path().join("events.sqlite"), SqliteOptions::default())
            .expect("open"),
    );
    for e in &history {
        let append = commands::StreamAppend {
            stream: e.stream(),
            expected_version: e.sequence - 1,
            events: vec![commands::NewEvent {
                event_id: e.event_id,
                event_type: e.event_type.clone(),
                event_version: e.event_version,
                occurred_at: e.occurred_at,
                payload: e.payload.clone(),
                metadata: e.metadata.clone(),
            }],
            snapshot: None,
        };
        store
            .append(commands::Commit {
                streams: vec![append],
                idempotency: None,
            })
            .await
            .expect("append");
    }
    let expected = read_json("states.json");
    let service = CommandService::new(store, Arc::new(SystemClock), ServiceConfig::default());
    let expected = expected.as_object().expect("object");
    for (key, want) in expected {
        let (kind, id) = key.split_once('#').expect("stream key");
        let got = match kind {
            "cart" => serde_json::to_value(&*service.load::<Cart>(id).await.expect("load").state),
            "order" => serde_json::to_value(&*service.load::<Order>(id).await.expect("load").state),
            "payment" => {
                serde_json::to_value(&*service.load::<Payment>(id).await.expect("load").state)
            }
            "product" => {
                serde_json::to_value(&*service.load::<Product>(id).await.expect("load").state)
            }
            other => panic!("unknown stream type {other}"),
        }
        .expect("json");
        assert_eq!(&got, want, "{key}");
    }
}

#[tokio::test]
async fn the_golden_history_projects_to_the_same_read_models_in_memory_and_in_sqlite() {
    let history = read_history();
    let expected = read_json("read_models.json");

    let memory = Arc::new(MemoryReadModelStore::new());
    project(memory.clone(), &history).await;
    assert_eq!(dump_json(&memory.dump().expect("dump")), expected);

    let sqlite = Arc::new(SqliteReadModelStore::open_in_memory().expect("open"));
    project(sqlite.clone(), &history).await;
    assert_eq!(dump_json(&sqlite.dump().expect("dump")), expected);
}
