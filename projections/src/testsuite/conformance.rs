//! The conformance suite of the [`ReadModelStore`] port. Every adapter runs it:
//!
//! ```text
//! projections::testsuite::conformance::run_all(|| (Arc::new(MyStore::new()), Box::new(()))).await;
//! ```
//!
//! It uses a small test projection whose events carry the document operation in the payload,
//! so the suite checks the store's contract independently of the real read models.

use crate::docs::{put_doc, update_doc};
use crate::store::{
    ApplyOutcome, DocKey, DocTx, EncodedDoc, EventBatch, IndexEntry, Projection, ProjectionError,
    Query, ReadModelError, ReadModelStore,
};
use crate::testsuite::fixtures::{base_time, envelope};
use chrono::Duration;
use commands::{Consistency, EventEnvelope, FeedCursor, StreamRef};
use domain::StreamType;
use serde_json::{json, Value};
use std::sync::Arc;

/// Keeps whatever backs a store (a temporary directory) alive for the length of one check.
pub type Guard = Box<dyn std::any::Any + Send>;

pub const DOCS: &str = "conformance_docs";
pub const OTHER_DOCS: &str = "conformance_other_docs";
pub const UNOWNED: &str = "conformance_unowned";
pub const BY_GROUP: &str = "conformance_by_group";
pub const BY_TAG: &str = "conformance_by_tag";
pub const OTHER_BY_GROUP: &str = "conformance_other_by_group";

/// A projection driven by its payloads:
/// - `Put {key, group, sort, value, tags?}`: writes `{key, group, sort, value}` listed in
///   `BY_GROUP` (group, sort) and in `BY_TAG` (tag, key) for each tag;
/// - `Add {key, delta}`: reads the document as JSON and adds `delta` to `value` (so a duplicate
///   apply would show);
/// - `TypedAdd {key, delta}`: the same, reading the document as a typed struct, so that one
///   batch holds a document in two types in turn and must keep them coherent;
/// - `Delete {key}`; `Fail {}`: returns an error.
pub struct TestProjection {
    name: &'static str,
    collection: &'static str,
    by_group: &'static str,
}

impl TestProjection {
    pub fn new() -> Self {
        Self {
            name: "conformance",
            collection: DOCS,
            by_group: BY_GROUP,
        }
    }

    /// A second projection with its own collection and index, to check isolation.
    pub fn other() -> Self {
        Self {
            name: "conformance_other",
            collection: OTHER_DOCS,
            by_group: OTHER_BY_GROUP,
        }
    }
}

impl Default for TestProjection {
    fn default() -> Self {
        Self::new()
    }
}

fn str_field<'a>(p: &'a Value, field: &str) -> &'a str {
    p.get(field).and_then(Value::as_str).unwrap_or("")
}

fn index_by_group(doc: &Value) -> Vec<IndexEntry> {
    index_of(BY_GROUP, doc)
}

fn index_other_by_group(doc: &Value) -> Vec<IndexEntry> {
    index_of(OTHER_BY_GROUP, doc)
}

fn index_of(by_group: &'static str, doc: &Value) -> Vec<IndexEntry> {
    let mut index = vec![IndexEntry::new(
        by_group,
        str_field(doc, "group"),
        str_field(doc, "sort"),
    )];
    if let Some(tags) = doc.get("tags").and_then(Value::as_array) {
        for tag in tags.iter().filter_map(Value::as_str) {
            index.push(IndexEntry::new(BY_TAG, tag, str_field(doc, "key")));
        }
    }
    index
}

impl Projection for TestProjection {
    fn name(&self) -> &'static str {
        self.name
    }

    fn collections(&self) -> &'static [&'static str] {
        if self.collection == DOCS {
            &[DOCS]
        } else {
            &[OTHER_DOCS]
        }
    }

    fn indexes(&self) -> &'static [&'static str] {
        if self.by_group == BY_GROUP {
            &[BY_GROUP, BY_TAG]
        } else {
            &[OTHER_BY_GROUP, BY_TAG]
        }
    }

    fn streams(&self) -> &'static [StreamType] {
        &[StreamType::Product]
    }

    fn apply(&self, event: &EventEnvelope, tx: &mut dyn DocTx) -> Result<(), ProjectionError> {
        let p = event.payload.value();
        let key = str_field(p, "key");
        let index: fn(&Value) -> Vec<IndexEntry> = if self.by_group == BY_GROUP {
            index_by_group
        } else {
            index_other_by_group
        };
        match event.event_type.as_str() {
            "Put" => {
                let doc = json!({
                    "key": key,
                    "group": str_field(p, "group"),
                    "sort": str_field(p, "sort"),
                    "value": p.get("value").cloned().unwrap_or(Value::Null),
                    "tags": p.get("tags").cloned().unwrap_or(json!([])),
                });
                put_doc(tx, self.collection, key, doc, index)?;
            }
            "Add" => {
                let delta = p.get("delta").and_then(Value::as_i64).unwrap_or(0);
                update_doc(tx, self.collection, key, index, |doc| {
                    let doc = doc.get_or_insert_with(|| {
                        json!({"key": key, "group": "added", "sort": key, "value": 0, "tags": []})
                    });
                    let value = doc.get("value").and_then(Value::as_i64).unwrap_or(0) + delta;
                    doc["value"] = json!(value);
                })?;
            }
            "TypedAdd" => {
                let delta = p.get("delta").and_then(Value::as_i64).unwrap_or(0);
                let by_group = self.by_group;
                let index: fn(&TypedCounter) -> Vec<IndexEntry> = if by_group == BY_GROUP {
                    TypedCounter::index
                } else {
                    TypedCounter::other_index
                };
                update_doc(tx, self.collection, key, index, |doc| {
                    let doc = doc.get_or_insert_with(|| TypedCounter {
                        key: key.to_owned(),
                        group: "added".to_owned(),
                        sort: key.to_owned(),
                        value: 0,
                        tags: Vec::new(),
                    });
                    doc.value += delta;
                })?;
            }
            "Delete" => tx.delete(DocKey::new(self.collection, key))?,
            "Fail" => {
                return Err(ProjectionError::CorruptDoc {
                    collection: self.collection.to_owned(),
                    key: key.to_owned(),
                    reason: "asked to fail".to_owned(),
                })
            }
            _ => {}
        }
        Ok(())
    }
}

/// The typed form of the test documents.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct TypedCounter {
    key: String,
    group: String,
    sort: String,
    value: i64,
    #[serde(default)]
    tags: Vec<String>,
}

impl TypedCounter {
    fn entries(&self, by_group: &'static str) -> Vec<IndexEntry> {
        let mut index = vec![IndexEntry::new(
            by_group,
            self.group.clone(),
            self.sort.clone(),
        )];
        for tag in &self.tags {
            index.push(IndexEntry::new(BY_TAG, tag.clone(), self.key.clone()));
        }
        index
    }

    fn index(&self) -> Vec<IndexEntry> {
        self.entries(BY_GROUP)
    }

    fn other_index(&self) -> Vec<IndexEntry> {
        self.entries(OTHER_BY_GROUP)
    }
}

/// An event of stream `product/<stream>` at `seq` doing `op` with `payload`.
pub fn op(stream: &str, seq: u64, op: &str, payload: Value) -> EventEnvelope {
    envelope(
        StreamType::Product,
        stream,
        seq,
        op,
        1,
        payload,
        base_time() + Duration::seconds(seq as i64),
    )
}

pub fn put(
    stream: &str,
    seq: u64,
    key: &str,
    group: &str,
    sort: &str,
    value: i64,
) -> EventEnvelope {
    op(
        stream,
        seq,
        "Put",
        json!({"key": key, "group": group, "sort": sort, "value": value}),
    )
}

pub fn add(stream: &str, seq: u64, key: &str, delta: i64) -> EventEnvelope {
    op(stream, seq, "Add", json!({"key": key, "delta": delta}))
}

fn stream(id: &str) -> StreamRef {
    StreamRef::new(StreamType::Product, id)
}

fn projection() -> Arc<dyn Projection> {
    Arc::new(TestProjection::new())
}

/// Applies `events` as the test projection; the store must not fail.
async fn apply(
    store: &dyn ReadModelStore,
    events: Vec<EventEnvelope>,
    checkpoint: Option<FeedCursor>,
) -> ApplyOutcome {
    apply_as(store, projection(), events, checkpoint).await
}

/// Applies `events` as `projection`; the store must not fail.
async fn apply_as(
    store: &dyn ReadModelStore,
    projection: Arc<dyn Projection>,
    events: Vec<EventEnvelope>,
    checkpoint: Option<FeedCursor>,
) -> ApplyOutcome {
    store
        .apply_batch(EventBatch {
            projection,
            events,
            checkpoint,
        })
        .await
        .expect("apply")
}

/// The outcome of a batch consumed whole.
fn consumed(applied: usize, skipped: usize) -> ApplyOutcome {
    ApplyOutcome::Applied { applied, skipped }
}

async fn checkpoint_of(store: &dyn ReadModelStore, projection: &str) -> FeedCursor {
    store.checkpoint(projection).await.expect("checkpoint")
}

/// The last sequence `projection` applied of `product/<stream_id>`.
async fn last_applied(store: &dyn ReadModelStore, projection: &str, stream_id: &str) -> u64 {
    store
        .last_applied(projection, &stream(stream_id))
        .await
        .expect("last applied")
}

async fn value_of(store: &dyn ReadModelStore, key: &str) -> Option<i64> {
    store
        .get(DOCS, key)
        .await
        .expect("get")
        .and_then(|d| d.get("value").and_then(Value::as_i64))
}

async fn keys(
    store: &dyn ReadModelStore,
    index: &str,
    partition: &str,
    from: Option<&str>,
    to: Option<&str>,
    descending: bool,
    limit: usize,
) -> Vec<String> {
    store
        .query(Query {
            index,
            partition,
            from,
            to,
            descending,
            limit,
        })
        .await
        .expect("query")
        .iter()
        .map(|d| str_field(d, "key").to_owned())
        .collect()
}

/// The keys listed in the whole of `(index, partition)`, ascending, at most 10.
async fn listed(store: &dyn ReadModelStore, index: &str, partition: &str) -> Vec<String> {
    keys(store, index, partition, None, None, false, 10).await
}

pub async fn applies_events_and_reads_them_back(store: &dyn ReadModelStore) {
    let events = vec![
        put("s1", 1, "a", "g", "1", 10),
        put("s2", 1, "b", "g", "2", 20),
        add("s1", 2, "a", 5),
    ];
    let outcome = apply(store, events, Some(FeedCursor::at(7))).await;
    assert_eq!(outcome, consumed(3, 0));
    assert_eq!(value_of(store, "a").await, Some(15));
    assert_eq!(value_of(store, "b").await, Some(20));
    assert_eq!(value_of(store, "missing").await, None);
    assert_eq!(checkpoint_of(store, "conformance").await, FeedCursor::at(7));
    assert_eq!(checkpoint_of(store, "never_ran").await, FeedCursor::start());
    assert_eq!(last_applied(store, "conformance", "s1").await, 2);
    assert_eq!(last_applied(store, "conformance", "s2").await, 1);
    assert_eq!(last_applied(store, "conformance", "s3").await, 0);
}

pub async fn duplicates_are_skipped(store: &dyn ReadModelStore) {
    let batch = vec![put("s1", 1, "a", "g", "1", 1), add("s1", 2, "a", 10)];
    apply(store, batch.clone(), None).await;
    // The whole batch again, then a batch repeating an event inside itself.
    let again = apply(store, batch, None).await;
    assert_eq!(again, consumed(0, 2));
    let inner = apply(
        store,
        vec![
            add("s1", 3, "a", 100),
            add("s1", 3, "a", 100),
            add("s1", 2, "a", 10),
        ],
        None,
    )
    .await;
    assert_eq!(inner, consumed(1, 2));
    assert_eq!(value_of(store, "a").await, Some(111));
}

pub async fn gap_is_reported_and_the_prefix_committed(store: &dyn ReadModelStore) {
    let outcome = apply(
        store,
        vec![
            put("s1", 1, "a", "g", "1", 1),
            put("s2", 1, "b", "g", "2", 2),
            add("s1", 3, "a", 100),
            put("s3", 1, "c", "g", "3", 3),
        ],
        Some(FeedCursor::at(10)),
    )
    .await;
    let ApplyOutcome::Gap {
        stream: gap_stream,
        expected,
        got,
        applied,
        skipped,
        remaining,
    } = outcome
    else {
        panic!("expected a gap, got {outcome:?}");
    };
    assert_eq!(gap_stream, stream("s1"));
    assert_eq!((expected, got, applied, skipped), (2, 3, 2, 0));
    assert_eq!(
        remaining
            .iter()
            .map(|e| (e.stream_id.as_str(), e.sequence))
            .collect::<Vec<_>>(),
        vec![("s1", 3), ("s3", 1)],
        "the gap event and everything after it come back untouched"
    );
    assert_eq!(value_of(store, "a").await, Some(1));
    assert_eq!(value_of(store, "b").await, Some(2));
    assert_eq!(value_of(store, "c").await, None);
    assert_eq!(
        checkpoint_of(store, "conformance").await,
        FeedCursor::start(),
        "no checkpoint when the batch was not consumed"
    );
    assert_eq!(last_applied(store, "conformance", "s1").await, 1);

    // Filling the gap and retrying completes the batch.
    let mut retry = vec![add("s1", 2, "a", 10)];
    retry.extend(remaining);
    let outcome = apply(store, retry, Some(FeedCursor::at(10))).await;
    assert_eq!(outcome, consumed(3, 0));
    assert_eq!(value_of(store, "a").await, Some(111));
    assert_eq!(value_of(store, "c").await, Some(3));
    assert_eq!(
        checkpoint_of(store, "conformance").await,
        FeedCursor::at(10)
    );
}

pub async fn a_batch_reads_its_own_writes(store: &dyn ReadModelStore) {
    apply(
        store,
        vec![
            put("s1", 1, "a", "g", "1", 1),
            add("s1", 2, "a", 2),
            add("s1", 3, "a", 3),
            put("s2", 1, "b", "g", "2", 5),
            op("s2", 2, "Delete", json!({"key": "b"})),
            add("s2", 3, "b", 7),
        ],
        None,
    )
    .await;
    assert_eq!(value_of(store, "a").await, Some(6));
    assert_eq!(
        value_of(store, "b").await,
        Some(7),
        "a read after a delete in the same batch sees no document"
    );
}

pub async fn typed_and_plain_access_stay_coherent(store: &dyn ReadModelStore) {
    let typed_add = |seq, delta| op("s1", seq, "TypedAdd", json!({"key": "a", "delta": delta}));
    apply(
        store,
        vec![
            put("s1", 1, "a", "g", "1", 1),
            typed_add(2, 2),
            add("s1", 3, "a", 3),
            typed_add(4, 4),
            typed_add(5, 5),
            typed_add(6, 0),
            op("s2", 1, "TypedAdd", json!({"key": "b", "delta": 7})),
        ],
        None,
    )
    .await;
    assert_eq!(value_of(store, "a").await, Some(15));
    assert_eq!(value_of(store, "b").await, Some(7));
    assert_eq!(
        listed(store, BY_GROUP, "g").await,
        ["a"],
        "typed writes keep the index entries their index function gives"
    );
    assert_eq!(listed(store, BY_GROUP, "added").await, ["b"]);
    // Across batches, and a typed change followed by a plain delete in one batch.
    apply(
        store,
        vec![
            typed_add(7, 100),
            op("s2", 2, "TypedAdd", json!({"key": "b", "delta": 1})),
            op("s2", 3, "Delete", json!({"key": "b"})),
        ],
        None,
    )
    .await;
    assert_eq!(value_of(store, "a").await, Some(115));
    assert_eq!(value_of(store, "b").await, None);
    assert!(listed(store, BY_GROUP, "added").await.is_empty());
}

pub async fn a_failing_projection_writes_nothing(store: &dyn ReadModelStore) {
    apply(
        store,
        vec![put("s1", 1, "a", "g", "1", 1)],
        Some(FeedCursor::at(1)),
    )
    .await;
    let err = store
        .apply_batch(
            EventBatch::new(
                projection(),
                vec![
                    add("s1", 2, "a", 5),
                    op("s1", 3, "TypedAdd", json!({"key": "a", "delta": 50})),
                    put("s2", 1, "b", "g", "2", 2),
                    op("s3", 1, "Fail", json!({"key": "x"})),
                ],
            )
            .with_checkpoint(FeedCursor::at(5)),
        )
        .await
        .expect_err("the projection fails");
    assert!(
        matches!(
            err,
            ReadModelError::Projection {
                projection: "conformance",
                ..
            }
        ),
        "unexpected error {err:?}"
    );
    assert!(!err.is_transient());
    assert_eq!(value_of(store, "a").await, Some(1));
    assert_eq!(value_of(store, "b").await, None);
    assert_eq!(checkpoint_of(store, "conformance").await, FeedCursor::at(1));
    assert_eq!(last_applied(store, "conformance", "s1").await, 1);
    assert_eq!(listed(store, BY_GROUP, "g").await, vec!["a"]);
}

pub async fn queries_order_and_bound_by_sort_key(store: &dyn ReadModelStore) {
    let events = vec![
        put("s1", 1, "k3", "g", "2026-01-03", 3),
        put("s2", 1, "k1", "g", "2026-01-01", 1),
        put("s3", 1, "k5", "g", "2026-01-05", 5),
        put("s4", 1, "k2", "g", "2026-01-02", 2),
        put("s5", 1, "k4", "g", "2026-01-04", 4),
        put("s6", 1, "x1", "other", "2026-01-03", 9),
        op(
            "s7",
            1,
            "Put",
            json!({"key": "t1", "group": "h", "sort": "a", "value": 1, "tags": ["red", "blue"]}),
        ),
    ];
    apply(store, events, None).await;
    let q = |from, to, desc, limit| keys(store, BY_GROUP, "g", from, to, desc, limit);
    assert_eq!(
        q(None, None, false, 10).await,
        ["k1", "k2", "k3", "k4", "k5"]
    );
    assert_eq!(
        q(None, None, true, 10).await,
        ["k5", "k4", "k3", "k2", "k1"]
    );
    assert_eq!(q(None, None, true, 2).await, ["k5", "k4"]);
    assert_eq!(q(None, None, false, 2).await, ["k1", "k2"]);
    assert_eq!(
        q(Some("2026-01-02"), Some("2026-01-04"), false, 10).await,
        ["k2", "k3", "k4"],
        "bounds are inclusive"
    );
    assert_eq!(
        q(Some("2026-01-02"), Some("2026-01-04"), true, 2).await,
        ["k4", "k3"]
    );
    assert_eq!(q(Some("2026-01-04x"), None, false, 10).await, ["k5"]);
    assert_eq!(q(None, Some("2026-01-01"), false, 10).await, ["k1"]);
    assert_eq!(q(None, None, false, 0).await, Vec::<String>::new());
    assert_eq!(
        listed(store, BY_GROUP, "nobody").await,
        Vec::<String>::new()
    );
    assert_eq!(
        listed(store, "no_such_index", "g").await,
        Vec::<String>::new()
    );
    // One document under several indexes and partitions.
    assert_eq!(listed(store, BY_TAG, "red").await, ["t1"]);
    assert_eq!(listed(store, BY_TAG, "blue").await, ["t1"]);
    assert_eq!(listed(store, BY_GROUP, "h").await, ["t1"]);
}

pub async fn rewriting_a_document_replaces_its_index_entries(store: &dyn ReadModelStore) {
    apply(
        store,
        vec![
            put("s1", 1, "a", "old", "1", 1),
            put("s2", 1, "b", "old", "2", 2),
        ],
        None,
    )
    .await;
    apply(
        store,
        vec![
            put("s1", 2, "a", "new", "1", 1),
            op("s2", 2, "Delete", json!({"key": "b"})),
        ],
        None,
    )
    .await;
    assert_eq!(listed(store, BY_GROUP, "old").await, Vec::<String>::new());
    assert_eq!(listed(store, BY_GROUP, "new").await, ["a"]);
    assert_eq!(value_of(store, "b").await, None);
}

pub async fn checkpoints_never_move_backwards(store: &dyn ReadModelStore) {
    apply(store, Vec::new(), Some(FeedCursor::at(50))).await;
    assert_eq!(
        checkpoint_of(store, "conformance").await,
        FeedCursor::at(50)
    );
    apply(store, Vec::new(), Some(FeedCursor::at(20))).await;
    assert_eq!(
        checkpoint_of(store, "conformance").await,
        FeedCursor::at(50)
    );
    apply(store, Vec::new(), None).await;
    assert_eq!(
        checkpoint_of(store, "conformance").await,
        FeedCursor::at(50)
    );
}

pub async fn projections_keep_separate_bookkeeping(store: &dyn ReadModelStore) {
    let other: Arc<dyn Projection> = Arc::new(TestProjection::other());
    apply(
        store,
        vec![put("s1", 1, "a", "g", "1", 1)],
        Some(FeedCursor::at(3)),
    )
    .await;
    let outcome = apply_as(
        store,
        other.clone(),
        vec![put("s1", 1, "a", "g", "1", 2)],
        Some(FeedCursor::at(4)),
    )
    .await;
    assert_eq!(
        outcome.applied(),
        1,
        "another projection applies the same event"
    );
    assert_eq!(checkpoint_of(store, "conformance").await, FeedCursor::at(3));
    assert_eq!(
        checkpoint_of(store, "conformance_other").await,
        FeedCursor::at(4)
    );
    let doc = store.get(OTHER_DOCS, "a").await.expect("get");
    assert_eq!(
        doc.and_then(|d| d.get("value").and_then(Value::as_i64)),
        Some(2)
    );
    assert_eq!(value_of(store, "a").await, Some(1));
}

pub async fn reset_drops_only_the_projections_data(store: &dyn ReadModelStore) {
    let other: Arc<dyn Projection> = Arc::new(TestProjection::other());
    apply(
        store,
        vec![
            put("s1", 1, "a", "g", "1", 1),
            put("s2", 1, "b", "g", "2", 2),
        ],
        Some(FeedCursor::at(9)),
    )
    .await;
    apply_as(
        store,
        other.clone(),
        vec![put("s1", 1, "a", "g", "1", 1)],
        Some(FeedCursor::at(9)),
    )
    .await;
    store
        .put_doc(
            DocKey::new(UNOWNED, "u"),
            EncodedDoc::from_json(
                &json!({"key": "u"}),
                vec![IndexEntry::new("conformance_unowned_idx", "p", "1")],
            ),
        )
        .await
        .expect("put_doc");

    store.reset(&TestProjection::new()).await.expect("reset");

    assert_eq!(value_of(store, "a").await, None);
    assert_eq!(value_of(store, "b").await, None);
    assert_eq!(
        listed(store, BY_GROUP, "g").await,
        Vec::<String>::new(),
        "index entries go with their documents"
    );
    assert_eq!(
        checkpoint_of(store, "conformance").await,
        FeedCursor::start()
    );
    assert_eq!(last_applied(store, "conformance", "s1").await, 0);
    // Untouched: the other projection and a collection nobody owns.
    assert!(store.get(OTHER_DOCS, "a").await.expect("get").is_some());
    assert_eq!(listed(store, OTHER_BY_GROUP, "g").await, ["a"]);
    assert_eq!(
        checkpoint_of(store, "conformance_other").await,
        FeedCursor::at(9)
    );
    assert_eq!(last_applied(store, "conformance_other", "s1").await, 1);
    assert!(store.get(UNOWNED, "u").await.expect("get").is_some());
    assert_eq!(listed(store, "conformance_unowned_idx", "p").await, ["u"]);

    // Replaying after a reset applies everything again.
    let outcome = apply(
        store,
        vec![put("s1", 1, "a", "g", "1", 1)],
        Some(FeedCursor::at(9)),
    )
    .await;
    assert_eq!(outcome.applied(), 1);
}

pub async fn put_doc_replaces_a_document_and_its_index(store: &dyn ReadModelStore) {
    apply(
        store,
        vec![op(
            "s1",
            1,
            "Put",
            json!({"key": "a", "group": "g", "sort": "1", "value": 1, "tags": ["red"]}),
        )],
        None,
    )
    .await;
    store
        .put_doc(
            DocKey::new(DOCS, "a"),
            EncodedDoc::from_json(
                &json!({"key": "a", "value": 2}),
                vec![IndexEntry::new(BY_GROUP, "g2", "5")],
            ),
        )
        .await
        .expect("put_doc");
    assert_eq!(value_of(store, "a").await, Some(2));
    assert_eq!(listed(store, BY_TAG, "red").await, Vec::<String>::new());
    assert_eq!(listed(store, BY_GROUP, "g").await, Vec::<String>::new());
    assert_eq!(listed(store, BY_GROUP, "g2").await, ["a"]);
}

/// Read-your-writes: a token is reflected once every stream of it that the projection consumes
/// is applied up to its version; streams of other types never hold it back.
pub async fn reflects_a_token_once_its_streams_are_applied(store: &dyn ReadModelStore) {
    let projection = projection();
    let token: Consistency = "product.s1.2~product.s2.1~order.o1.5"
        .parse()
        .expect("a token");
    let reflected = || crate::store::reflects(store, projection.as_ref(), &token);
    assert!(!reflected().await.expect("reflects"));
    apply_as(
        store,
        projection.clone(),
        vec![
            put("s1", 1, "a", "g", "1", 1),
            put("s2", 1, "b", "g", "2", 2),
        ],
        None,
    )
    .await;
    assert!(!reflected().await.expect("reflects"), "s1 is at 1 of 2");
    apply_as(store, projection.clone(), vec![add("s1", 2, "a", 1)], None).await;
    assert!(
        reflected().await.expect("reflects"),
        "the order stream is not one the projection consumes"
    );
    let other = Arc::new(TestProjection::other());
    assert!(
        !crate::store::reflects(store, other.as_ref(), &token)
            .await
            .expect("reflects"),
        "bookkeeping is per projection"
    );
}

/// Runs every check, each against a fresh store from `make`.
pub async fn run_all<F>(make: F)
where
    F: Fn() -> (Arc<dyn ReadModelStore>, Guard),
{
    macro_rules! check {
        ($($name:ident),+ $(,)?) => {
            $(
                let (store, _guard) = make();
                tracing::info!(check = stringify!($name), "read model conformance");
                $name(store.as_ref()).await;
            )+
        };
    }
    check!(
        applies_events_and_reads_them_back,
        duplicates_are_skipped,
        gap_is_reported_and_the_prefix_committed,
        a_batch_reads_its_own_writes,
        typed_and_plain_access_stay_coherent,
        a_failing_projection_writes_nothing,
        queries_order_and_bound_by_sort_key,
        rewriting_a_document_replaces_its_index_entries,
        checkpoints_never_move_backwards,
        projections_keep_separate_bookkeeping,
        reset_drops_only_the_projections_data,
        put_doc_replaces_a_document_and_its_index,
        reflects_a_token_once_its_streams_are_applied,
    );
}
