//! The partitioned feed on moto, property-tested: with four partitions, two relays indexing
//! their shards at once, one of them killed mid-page and its shard indexed again by the other
//! (a lease takeover from the last checkpoint), and pages of stream records delivered twice,
//! the feed holds every event exactly once, each stream's events in sequence order, each
//! partition's positions gapless, and readers paging through cursors see exactly that.

#[path = "support/moto.rs"]
mod moto;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use chrono::Utc;
use commands::feed::unpack;
use commands::{EventEnvelope, FeedCursor, Metadata, Payload};
use domain::StreamType;
use infrastructure::aws::{FeedIndexer, RetryPolicy};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// A feed table of its own (the feed needs no other table), and an indexer over it with the
/// layout fixed at `partitions`.
async fn fresh_feed(partitions: u32) -> FeedIndexer {
    let (indexer, _) = fresh_table().await;
    indexer.create(partitions).await.expect("layout");
    indexer
}

/// An empty feed table and an indexer over it, with no layout yet; and the table's client and name.
async fn fresh_table() -> (FeedIndexer, (aws_sdk_dynamodb::Client, String)) {
    let names = moto::fresh_names();
    let client = aws_sdk_dynamodb::Client::new(&moto::sdk_config().await);
    let attribute = |name: &str, ty| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ty)
            .build()
            .expect("attribute")
    };
    let key = |name: &str, ty| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(ty)
            .build()
            .expect("key")
    };
    client
        .create_table()
        .table_name(&names.feed_table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("part", ScalarAttributeType::S))
        .attribute_definitions(attribute("pos", ScalarAttributeType::N))
        .key_schema(key("part", KeyType::Hash))
        .key_schema(key("pos", KeyType::Range))
        .send()
        .await
        .expect("create the feed table");
    let indexer = FeedIndexer::new(
        client.clone(),
        &names,
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(100),
        },
    );
    (indexer, (client, names.feed_table))
}

fn event(stream: usize, sequence: u64) -> EventEnvelope {
    EventEnvelope {
        global_position: None,
        event_id: uuid::Uuid::new_v4(),
        stream_type: StreamType::Order,
        stream_id: format!("ord_p{stream}"),
        sequence,
        event_type: "ThingHappened".into(),
        event_version: 1,
        occurred_at: Utc::now(),
        payload: Payload::from_json(format!("{{\"n\":{sequence}}}")).expect("payload"),
        metadata: Metadata::default(),
    }
}

/// Every event of the feed, read in pages of `page` through cursors.
async fn read_all(indexer: &FeedIndexer, page: usize) -> Vec<EventEnvelope> {
    let mut cursor = FeedCursor::start();
    let mut out = Vec::new();
    loop {
        let got = indexer.read(&cursor, page).await.expect("read");
        if got.is_empty() {
            return out;
        }
        assert!(got.len() <= page, "a page holds at most its limit");
        for e in &got {
            let position = e.global_position.expect("feed events carry their position");
            assert!(!cursor.includes(position), "a page starts after its cursor");
        }
        cursor = cursor.after(&got);
        out.extend(got);
    }
}

#[derive(Debug, Clone)]
struct Case {
    /// Events per stream; stream `i` belongs to relay `i % 2`'s shard.
    streams: Vec<u64>,
    /// Stream records per relayed page.
    page: usize,
    /// When relay 0 is killed (it may finish first).
    kill_after: Duration,
    /// Relay 1 delivers each page of its shard twice.
    redeliver: bool,
    /// Page size of the readers.
    read_page: usize,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(1u64..7, 2..10),
        1usize..12,
        0u64..40,
        any::<bool>(),
        1usize..20,
    )
        .prop_map(|(streams, page, kill_ms, redeliver, read_page)| Case {
            streams,
            page,
            kill_after: Duration::from_millis(kill_ms),
            redeliver,
            read_page,
        })
}

/// The stream records of one relay's shard, in the order the shard gives them: each stream's
/// events in sequence order, streams interleaved.
fn shard(case: &Case, events: &[Vec<EventEnvelope>], relay: usize) -> Vec<EventEnvelope> {
    let mine: Vec<&Vec<EventEnvelope>> = events
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == relay)
        .map(|(_, e)| e)
        .collect();
    let longest = case.streams.iter().copied().max().unwrap_or(0) as usize;
    (0..longest)
        .flat_map(|i| mine.iter().filter_map(move |s| s.get(i).cloned()))
        .collect()
}

/// Indexes `records` `page` at a time, as relay `relay` does, delivering every page `deliveries`
/// times.
async fn index_pages(
    indexer: &FeedIndexer,
    records: &[EventEnvelope],
    page: usize,
    deliveries: usize,
    relay: &str,
) {
    for chunk in records.chunks(page) {
        for _ in 0..deliveries {
            indexer
                .index(chunk.to_vec())
                .await
                .unwrap_or_else(|e| panic!("{relay} indexes: {e}"));
        }
    }
}

async fn run(case: Case) {
    let indexer = fresh_feed(4).await;
    let events: Vec<Vec<EventEnvelope>> = case
        .streams
        .iter()
        .enumerate()
        .map(|(s, &n)| (1..=n).map(|seq| event(s, seq)).collect())
        .collect();
    let (shard0, shard1) = (shard(&case, &events, 0), shard(&case, &events, 1));

    // Relay 0 indexes its shard until it is killed; relay 1 indexes its own at the same time,
    // delivering pages twice when asked.
    let killed = {
        let (indexer, records, page) = (indexer.clone(), shard0.clone(), case.page);
        tokio::spawn(async move { index_pages(&indexer, &records, page, 1, "relay 0").await })
    };
    let other = {
        let (indexer, page) = (indexer.clone(), case.page);
        let deliveries = if case.redeliver { 2 } else { 1 };
        tokio::spawn(
            async move { index_pages(&indexer, &shard1, page, deliveries, "relay 1").await },
        )
    };
    tokio::time::sleep(case.kill_after).await;
    killed.abort();
    let _ = killed.await;
    other.await.expect("relay 1");
    // Relay 1 takes relay 0's shard over from its last checkpoint (none: the start).
    index_pages(&indexer, &shard0, case.page, 1, "the takeover").await;

    let feed = read_all(&indexer, case.read_page).await;
    let total: u64 = case.streams.iter().sum();
    let ids: HashSet<uuid::Uuid> = feed.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), feed.len(), "no event is in the feed twice");
    assert_eq!(feed.len() as u64, total, "every event is in the feed");
    let mut per_stream: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut per_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for e in &feed {
        per_stream.entry(&e.stream_id).or_default().push(e.sequence);
        let (partition, position) = unpack(e.global_position.expect("position"));
        per_partition.entry(partition).or_default().push(position);
    }
    for (stream, seqs) in &per_stream {
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, &expected, "{stream}'s events in sequence order");
    }
    for (partition, positions) in &per_partition {
        let expected: Vec<u64> = (1..=positions.len() as u64).collect();
        assert_eq!(
            positions, &expected,
            "partition {partition} is gapless, in order"
        );
    }
    assert_eq!(
        indexer.head().await.expect("head"),
        FeedCursor::start().after(&feed),
        "the head is the cursor past the whole feed"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn every_event_once_in_stream_order_despite_kills_and_redelivery(case in cases()) {
        tokio::runtime::Runtime::new().expect("runtime").block_on(run(case));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_spread_over_the_partitions_and_the_layout_is_fixed() {
    let indexer = fresh_feed(4).await;
    let events: Vec<EventEnvelope> = (0..40).map(|s| event(s, 1)).collect();
    indexer.index(events).await.expect("index");
    let head = indexer.head().await.expect("head");
    assert_eq!(
        head.positions().len(),
        4,
        "all four partitions took events: {head}"
    );
    assert_eq!(head.count(), 40);
    let err = indexer
        .create(8)
        .await
        .expect_err("the partition count is fixed");
    assert!(
        err.to_string().contains("fixed when it was created"),
        "{err}"
    );
    assert_eq!(indexer.create(4).await.expect("same count").partitions, 4);
}

/// A stage created before partitions (a `head` counter, `feed` entries, no layout item) is read
/// and indexed as one partition under its old keys, with its markers, and a redelivery of what
/// it indexed before does not grow it.
#[tokio::test(flavor = "multi_thread")]
async fn a_feed_created_before_partitions_stays_one_partition() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let (indexer, (client, table)) = fresh_table().await;
    let old = event(0, 1);
    // What the one-partition indexer left: the counter, the entry and the event's marker.
    let mut entry = infrastructure::aws::codec::envelope_item(&old).expect("item");
    entry.insert("part".into(), AttributeValue::S("feed".into()));
    entry.insert("pos".into(), AttributeValue::N("1".into()));
    for item in [
        std::collections::HashMap::from([
            ("part".to_owned(), AttributeValue::S("head".into())),
            ("pos".to_owned(), AttributeValue::N("0".into())),
            ("last".to_owned(), AttributeValue::N("1".into())),
        ]),
        std::collections::HashMap::from([
            (
                "part".to_owned(),
                AttributeValue::S(format!("event#{}", old.event_id)),
            ),
            ("pos".to_owned(), AttributeValue::N("0".into())),
            ("at".to_owned(), AttributeValue::N("1".into())),
        ]),
        entry,
    ] {
        client
            .put_item()
            .table_name(&table)
            .set_item(Some(item))
            .send()
            .await
            .expect("put");
    }
    let layout = indexer.layout().await.expect("layout");
    assert!(layout.legacy && layout.partitions == 1, "{layout:?}");
    // The old event again (redelivered), then new events of other streams.
    let mut events = vec![old.clone()];
    events.extend((1..6).map(|s| event(s, 1)));
    indexer.index(events).await.expect("index");
    let feed = read_all(&indexer, 4).await;
    assert_eq!(feed.len(), 6, "the old event once, and the five new ones");
    assert_eq!(feed[0].event_id, old.event_id);
    let positions: Vec<u64> = feed.iter().filter_map(|e| e.global_position).collect();
    assert_eq!(
        positions,
        (1..=6).collect::<Vec<_>>(),
        "one partition, gapless"
    );
    assert_eq!(indexer.head().await.expect("head"), FeedCursor::at(6));
}
