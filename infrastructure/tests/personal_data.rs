//! Personal data at rest: the store conformance suite through the sealing decorator, sealed
//! fields as stored, erasure on every read path of the store, legacy histories in clear, and the
//! DynamoDB key store (plain and wrapped with moto's KMS) against the key-store contract.

#[path = "support/moto.rs"]
mod moto;

use commands::conformance::key_store_contract;
use commands::conformance::WithGuard;
use commands::FeedCursor;
use commands::{
    CachedKeyStore, Commit, EventStore, KeyStore, MemoryKeyStore, Metadata, NewEvent, Payload,
    PersonalDataStore, Pii, Snapshot, StreamAppend, StreamRef,
};
use domain::{CartId, CustomerId, Event, Money, Order, OrderEvent, ShippingAddress, StreamType};
use infrastructure::aws::{DynamoKeyStore, KmsWrapping};
use infrastructure::sqlite::{SqliteEventStore, SqliteKeyStore, SqliteOptions};
use projections::testsuite::fixtures::one_unit_order_placed;
use std::sync::Arc;
use tempfile::TempDir;

async fn fresh_sealed_store() -> WithGuard<PersonalDataStore<SqliteEventStore>, TempDir> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteEventStore::open(dir.path().join("events.db"), SqliteOptions::default())
        .expect("open sqlite store");
    let keys: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::default());
    WithGuard::new(PersonalDataStore::new(store, Pii::new(keys)), dir)
}

/// The decorator changes nothing the store contract promises.
mod conformance_sealed {
    commands::conformance_tests!(super::fresh_sealed_store);
}

const EMAIL: &str = "ada.lovelace@example.com";
const LINE1: &str = "12 Analytical Engine Row";

fn placed(order: &str, customer: &str) -> OrderEvent {
    let address = ShippingAddress {
        name: "Ada Lovelace".to_owned(),
        line1: LINE1.to_owned(),
        line2: Some("Flat 1".to_owned()),
        city: "London".to_owned(),
        postal_code: "W1".to_owned(),
        country: "GB".to_owned(),
    };
    let price = Money::parse("9.99", "EUR").unwrap();
    let at = "2026-12-06T10:00:00Z".parse().unwrap();
    one_unit_order_placed(order, customer, EMAIL, address, price, at)
}

fn commit(order: &str, payload: Payload, snapshot: Option<Snapshot>) -> Commit {
    Commit {
        streams: vec![StreamAppend {
            stream: StreamRef::new(StreamType::Order, order),
            expected_version: 0,
            events: vec![NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: "OrderPlaced".to_owned(),
                event_version: 1,
                occurred_at: chrono::Utc::now(),
                payload,
                metadata: Metadata::default(),
            }],
            snapshot,
        }],
        idempotency: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_fields_open_until_erasure_and_then_read_erased_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let raw = Arc::new(SqliteEventStore::open(&path, SqliteOptions::default()).unwrap());
    let keys: Arc<dyn KeyStore> = Arc::new(CachedKeyStore::new(
        SqliteKeyStore::open(&path).unwrap(),
        100,
        None,
    ));
    let store = PersonalDataStore::new(raw.clone(), Pii::new(keys.clone()));

    // A new order, with its snapshot; and one written before sealing existed (in clear).
    let event = placed("o-1", "ada");
    let mut state = Order::default();
    state.evolve(&event);
    let snapshot = Snapshot {
        version: 1,
        schema_version: 1,
        state: serde_json::to_value(&state).unwrap(),
    };
    store
        .append(commit("o-1", Payload::of_event(&event), Some(snapshot)))
        .await
        .unwrap();
    raw.append(commit(
        "o-legacy",
        Payload::of_event(&placed("o-legacy", "ada")),
        None,
    ))
    .await
    .unwrap();

    // As stored: self-describing sealed values, ids and amounts in clear.
    let order = StreamRef::new(StreamType::Order, "o-1");
    let stored = raw.load(&order).await.unwrap();
    let stored_events = raw.read(&order, 1..=1).await.unwrap();
    let payload = stored_events[0].payload.value();
    assert_eq!(payload["customer_email"]["enc"], "AES-256-GCM");
    assert!(payload["customer_email"]["kid"].is_string());
    assert_eq!(payload["shipping_address"]["enc"], "AES-256-GCM");
    assert_eq!(payload["customer_id"], "ada");
    assert_eq!(payload["total"]["amount"], "9.99");
    let sealed_state = &stored.snapshot.as_ref().expect("snapshot").state;
    assert_eq!(sealed_state["customer_email"]["enc"], "AES-256-GCM");
    let text = stored_events[0].payload.json().to_owned() + &sealed_state.to_string();
    assert!(!text.contains(EMAIL) && !text.contains(LINE1), "{text}");

    // Read through the decorator: opened, on every path, equal to what was decided.
    let loaded = store.load(&order).await.unwrap();
    assert!(loaded.events.is_empty(), "the snapshot covers the event");
    let revealed: Order = serde_json::from_value(loaded.snapshot.unwrap().state).unwrap();
    assert_eq!(revealed, state);
    let read = store.read(&order, 1..=1).await.unwrap();
    let decoded = read[0]
        .payload
        .decode_event::<OrderEvent>("OrderPlaced", 1)
        .unwrap();
    assert_eq!(decoded, event);
    let feed = store.feed(&FeedCursor::start(), 10).await.unwrap();
    assert_eq!(feed.len(), 2);
    assert_eq!(feed[0].payload.value()["customer_email"], EMAIL);
    assert_eq!(
        feed[1].payload.value()["customer_email"],
        EMAIL,
        "legacy reads in clear"
    );

    // Erased: every path shows the erased form; ids, lines and totals stay.
    keys.erase("ada").await.unwrap();
    let feed = store.feed(&FeedCursor::start(), 10).await.unwrap();
    let filtered = store
        .feed_filtered(commands::FeedFilter {
            after: &FeedCursor::start(),
            limit: 10,
            keep: &|_| true,
        })
        .await
        .unwrap();
    let read = store.read(&order, 1..=1).await.unwrap();
    let loaded = store.load(&order).await.unwrap();
    for payload in feed
        .iter()
        .chain(filtered.events.iter())
        .chain(read.iter())
        .map(|e| e.payload.value())
        .chain(std::iter::once(&loaded.snapshot.as_ref().unwrap().state))
    {
        assert_eq!(payload["customer_email"], "[erased]", "{payload}");
        assert_eq!(payload["shipping_address"]["line1"], "[erased]");
        assert_eq!(
            payload["shipping_address"]["line2"],
            serde_json::Value::Null
        );
        assert_eq!(payload["customer_id"], "ada");
        assert_eq!(payload["total"]["amount"], "9.99");
    }
    // The erased events still decode and fold.
    let erased = feed[0]
        .payload
        .decode_event::<OrderEvent>("OrderPlaced", 1)
        .unwrap();
    assert_eq!(erased.event_type(), "OrderPlaced");

    // Another customer is untouched.
    store
        .append(commit(
            "o-2",
            Payload::of_event(&placed("o-2", "bea")),
            None,
        ))
        .await
        .unwrap();
    let bea = store
        .read(&StreamRef::new(StreamType::Order, "o-2"), 1..=1)
        .await
        .unwrap();
    assert_eq!(bea[0].payload.value()["customer_email"], EMAIL);
}

async fn dynamo_keys(
    kms: Option<KmsWrapping>,
) -> (DynamoKeyStore, aws_sdk_dynamodb::Client, String) {
    let (names, _) = moto::fresh_stack().await;
    let client = aws_sdk_dynamodb::Client::new(&moto::sdk_config().await);
    (
        DynamoKeyStore::new(client.clone(), &names.keys_table, kms),
        client,
        names.keys_table,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dynamodb_key_store_keeps_the_contract() {
    let (keys, ..) = dynamo_keys(None).await;
    key_store_contract(Arc::new(keys)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dynamodb_key_store_wraps_keys_with_kms() {
    let kms = aws_sdk_kms::Client::new(&moto::sdk_config().await);
    let key_id = kms
        .create_key()
        .send()
        .await
        .expect("create a KMS key")
        .key_metadata()
        .expect("metadata")
        .key_id()
        .to_owned();
    let wrapping = KmsWrapping {
        client: kms,
        key_id,
    };
    let (keys, client, table) = dynamo_keys(Some(wrapping.clone())).await;
    key_store_contract(Arc::new(keys)).await;

    // Stored wrapped, never in clear; a second process (no cache) unwraps the same key.
    let (first, ..) = (DynamoKeyStore::new(
        client.clone(),
        &table,
        Some(wrapping.clone()),
    ),);
    let key = first.key_for("kim").await.unwrap();
    let item = client
        .get_item()
        .table_name(&table)
        .key(
            "customer",
            aws_sdk_dynamodb::types::AttributeValue::S("kim".into()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("kim's item");
    assert!(
        item.contains_key("wrapped") && !item.contains_key("material"),
        "{item:?}"
    );
    let wrapped = item["wrapped"].as_b().unwrap().as_ref().to_vec();
    assert!(!wrapped.windows(32).any(|w| w == key.material()));
    let second = DynamoKeyStore::new(client.clone(), &table, Some(wrapping));
    let again = second.lookup("kim").await.unwrap().key.expect("kim's key");
    assert_eq!(again.material(), key.material());
    assert_eq!(again.id(), key.id());
    // Without the KMS key the wrapped key cannot be read.
    let unwrapped = DynamoKeyStore::new(client, &table, None);
    assert!(unwrapped.lookup("kim").await.is_err());
}

/// A customer's key is created with their first event (their first cart), so that checkout
/// finds it ready; the event itself is stored as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_cart_creates_the_customers_key() {
    let keys: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::default());
    let dir = tempfile::tempdir().unwrap();
    let raw = Arc::new(
        SqliteEventStore::open(dir.path().join("e.db"), SqliteOptions::default()).unwrap(),
    );
    let store = PersonalDataStore::new(raw.clone(), Pii::new(keys.clone()));
    assert!(keys.lookup("cleo").await.unwrap().key.is_none());
    let opened = domain::CartEvent::CartOpened {
        cart_id: CartId::parse("cart-9").unwrap(),
        customer_id: CustomerId::parse("cleo").unwrap(),
    };
    let payload = Payload::of_event(&opened);
    let mut commit = commit("unused", payload.clone(), None);
    commit.streams[0].stream = StreamRef::new(StreamType::Cart, "cart-9");
    commit.streams[0].events[0].event_type = "CartOpened".to_owned();
    store.append(commit).await.unwrap();
    assert!(keys.lookup("cleo").await.unwrap().key.is_some());
    let stored = raw
        .read(&StreamRef::new(StreamType::Cart, "cart-9"), 1..=1)
        .await
        .unwrap();
    assert_eq!(stored[0].payload, payload, "nothing in it is sealed");
}
