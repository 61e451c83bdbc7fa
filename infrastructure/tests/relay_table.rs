//! The relay table's adapters on moto, in a stage deployed from the template: the shard leases
//! and the shard checkpoints, both conditional writes on the same table.

#[path = "support/moto.rs"]
mod moto;

use commands::{CheckpointSave, FanoutError, ShardCheckpoint, ShardCheckpointStore, ShardLeases};
use infrastructure::aws::{DynamoShardCheckpoints, DynamoShardLeases, RetryPolicy};
use std::time::Duration;

const TTL: Duration = Duration::from_secs(60);

/// A fresh stage (its relay table among the rest) and a client of it.
async fn fresh_relay_table() -> (infrastructure::aws::ResourceNames, aws_sdk_dynamodb::Client) {
    let (names, _) = moto::fresh_stack().await;
    (
        names,
        aws_sdk_dynamodb::Client::new(&moto::sdk_config().await),
    )
}

#[tokio::test]
async fn a_lease_is_held_by_one_relay_until_released_or_expired() {
    let (names, client) = fresh_relay_table().await;
    let leases = DynamoShardLeases::new(client, &names, RetryPolicy::default());
    let acquire = |shard, owner, ttl| {
        let leases = &leases;
        async move { leases.acquire(shard, owner, ttl).await.expect("acquire") }
    };

    assert!(acquire("s1", "a", TTL).await, "a free shard is taken");
    assert!(acquire("s1", "a", TTL).await, "the holder renews its lease");
    assert!(!acquire("s1", "b", TTL).await, "a held lease is not taken");
    leases.release("s1", "b").await.expect("release");
    assert!(
        !acquire("s1", "b", TTL).await,
        "releasing somebody else's lease frees nothing"
    );
    leases.release("s1", "a").await.expect("release");
    assert!(acquire("s1", "b", TTL).await, "a released lease is taken");

    assert!(acquire("s2", "a", Duration::ZERO).await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        acquire("s2", "b", TTL).await,
        "an expired lease is taken over"
    );

    assert_eq!(leases.heartbeat("a", TTL).await.expect("heartbeat"), 1);
    assert_eq!(
        leases.heartbeat("b", TTL).await.expect("heartbeat"),
        2,
        "both relays are alive"
    );
}

#[tokio::test]
async fn a_checkpoint_moves_only_from_the_one_stored() {
    let (names, client) = fresh_relay_table().await;
    let checkpoints = DynamoShardCheckpoints::new(client, &names, RetryPolicy::default());
    let save = |previous, next| {
        checkpoints.save(CheckpointSave {
            shard: "s",
            previous,
            next,
        })
    };
    let started = ShardCheckpoint::default();
    let relayed = ShardCheckpoint {
        sequence: Some("100".into()),
        finished: false,
    };
    let finished = ShardCheckpoint {
        sequence: Some("200".into()),
        finished: true,
    };

    assert_eq!(checkpoints.load("s").await.expect("load"), None);
    save(None, &started).await.expect("the first checkpoint");
    assert!(
        matches!(
            save(None, &started).await,
            Err(FanoutError::CheckpointConflict { .. })
        ),
        "a first checkpoint is written once"
    );
    save(Some(&started), &relayed)
        .await
        .expect("from no sequence");
    assert!(
        matches!(
            save(Some(&started), &finished).await,
            Err(FanoutError::CheckpointConflict { .. })
        ),
        "a stale previous checkpoint conflicts"
    );
    save(Some(&relayed), &finished)
        .await
        .expect("from a sequence");
    assert_eq!(checkpoints.load("s").await.expect("load"), Some(finished));
}
