//! The system runs on the resources `infrastructure/cloudformation/backbone.yaml` creates in
//! moto when `backbone provision` deploys it: commands on its DynamoDB tables, the relay on its
//! events stream (checkpointing in its relay table, indexing its feed table, publishing to its
//! bus), and a queue consumer on the queue its rule feeds. (The infrastructure crate's own
//! template test lints the template and checks each resource; this one runs the fan-out on
//! them.)

use backbone_tests::aws::{
    drain_relay, fresh_stage, run_consumer_until_empty, run_workload, stream_and_checkpoints,
    table_event_ids, test_workers,
};
use backbone_tests::whole_feed;
use commands::ShardCheckpointStore;
use infrastructure::aws::ConsumerGroup;
use projections::ReadModelStore;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_and_a_consumer_run_on_the_resources_the_template_created() {
    // Everything below uses what the stack created.
    let stage = fresh_stage().await;

    let w = run_workload(&stage.shop, "cfn", 3, 1).await;
    let relay = stage.relay(test_workers().relay);
    let relayed = drain_relay(&relay).await;
    let table = table_event_ids(&stage).await;
    // The stream also carries the snapshot items' writes, which the relay reads and skips.
    assert!(
        relayed > table.len(),
        "every stream record relayed, snapshot writes too: {relayed} records, {} events",
        table.len()
    );
    assert_eq!(
        whole_feed(stage.store.as_ref()).await.len(),
        table.len(),
        "the feed table holds them all"
    );

    // The checkpoint lives in the template's relay table.
    let (source, checkpoints) = stream_and_checkpoints(&stage);
    let shards = commands::ChangeSource::shards(&source).await.unwrap();
    for shard in &shards {
        let saved = checkpoints.load(&shard.id).await.unwrap();
        assert!(
            saved.and_then(|c| c.sequence).is_some(),
            "checkpoint of {}",
            shard.id
        );
    }

    // The catalog consumer on the template's queue (fed by the template's rule).
    let consumer = stage
        .consumer(ConsumerGroup::Catalog, test_workers().consumer)
        .await
        .unwrap();
    run_consumer_until_empty(
        &stage,
        ConsumerGroup::Catalog,
        &consumer,
        Duration::from_secs(60),
    )
    .await;
    let product = stage
        .models
        .get(projections::catalog::PRODUCTS, &w.products[0])
        .await
        .unwrap()
        .expect("the product reached the catalog read model");
    // Three checkouts of 1, 2 and 3 units.
    assert_eq!(product["reserved"], 6, "{product}");
    assert_eq!(product["available"], 10_000 - 6, "{product}");
}
