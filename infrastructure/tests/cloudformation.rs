//! `cloudformation/backbone.yaml`, the one declaration of the AWS resources: cfn-lint passes on
//! it, `provision` deploys it into moto (creating the stack, then updating it in place), its
//! outputs name what `ResourceNames` names, the resources it creates are the ones the adapters
//! expect (tables with their stream and GSI, queues with their redrive policy, rules targeting
//! the queues), events put on the bus reach every queue, and the event store runs on its tables.

#[path = "support/moto.rs"]
mod moto;

use commands::conformance::new_event;
use commands::FeedCursor;
use commands::{AppendOutcome, Commit, EventStore, StreamAppend, StreamRef};
use domain::StreamType;
use infrastructure::aws::provision::StackChange;
use infrastructure::aws::{
    provision, DynamoEventStore, DynamoStoreOptions, ResourceNames, StackSpec,
};
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;

fn template_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cloudformation/backbone.yaml")
}

#[test]
fn cfn_lint_passes_on_the_template() {
    let output = Command::new("cfn-lint")
        .arg(template_path())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run cfn-lint ({e}): it must be on PATH; scripts/test.sh installs it into \
                 .venv (pip install cfn-lint)"
            )
        });
    assert!(
        output.status.success(),
        "cfn-lint found problems in backbone.yaml:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_twice_creates_the_stack_then_updates_it_in_place() {
    let (names, first) = moto::fresh_stack().await;
    assert_eq!(first.change, StackChange::Created);
    assert_eq!(
        first.outputs.disagreements(&names),
        Vec::<String>::new(),
        "the outputs name what the adapters use"
    );
    let config = moto::sdk_config().await;
    let cfn = aws_sdk_cloudformation::Client::new(&config);
    let again = provision(&cfn, &StackSpec::for_stage(&names.stage))
        .await
        .expect("provisioning again is fine");
    // AWS answers "No updates are to be performed" (Unchanged); moto runs an empty update.
    assert_ne!(again.change, StackChange::Created, "{again:?}");
    assert_eq!(again.stack_id, first.stack_id, "the same stack");
    assert_eq!(again.outputs, first.outputs, "the same resources");
    check_resources_and_run_on_them(&config, &names).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_parameter_updates_the_existing_stack() {
    let (names, first) = moto::fresh_stack().await;
    let cfn = aws_sdk_cloudformation::Client::new(&moto::sdk_config().await);
    let topic = "oncall@example.com";
    let spec = StackSpec::for_stage(&names.stage).with_parameter("AlarmEmail", topic);
    let updated = provision(&cfn, &spec).await.expect("update");
    assert_eq!(updated.change, StackChange::Updated);
    assert_eq!(updated.stack_id, first.stack_id);
    let stack = moto::describe_stack(&cfn, &spec.stack_name).await;
    let parameters = stack.parameters();
    let value = |key: &str| {
        parameters
            .iter()
            .find(|p| p.parameter_key() == Some(key))
            .and_then(|p| p.parameter_value())
    };
    assert_eq!(value("AlarmEmail"), Some(topic));
    assert_eq!(value("Stage"), Some(names.stage.as_str()));
}

/// What the stack must have created, used for real.
async fn check_resources_and_run_on_them(config: &aws_config::SdkConfig, names: &ResourceNames) {
    // Tables, with the events table's stream and time GSI.
    let dynamodb = aws_sdk_dynamodb::Client::new(config);
    moto::assert_tables_exist(&dynamodb, names).await;
    let events = moto::describe_table(&dynamodb, &names.events_table).await;
    assert!(
        events.latest_stream_arn().is_some(),
        "the events table has a stream"
    );
    assert_eq!(
        events
            .stream_specification()
            .and_then(|s| s.stream_view_type())
            .map(|v| v.as_str()),
        Some("NEW_IMAGE")
    );
    assert!(
        events
            .global_secondary_indexes()
            .iter()
            .any(|g| g.index_name() == Some(ResourceNames::EVENTS_BY_TIME)),
        "the time GSI exists"
    );
    let feed = moto::describe_table(&dynamodb, &names.feed_table).await;
    assert!(
        feed.global_secondary_indexes()
            .iter()
            .any(|g| g.index_name() == Some(ResourceNames::FEED_BY_HOUR)),
        "the feed's time index exists"
    );

    // Queues with their DLQ redrive, and rules on the bus targeting them.
    let sqs = aws_sdk_sqs::Client::new(config);
    let eventbridge = aws_sdk_eventbridge::Client::new(config);
    let mut queue_urls = Vec::new();
    for g in &names.groups {
        let url = sqs
            .get_queue_url()
            .queue_name(&g.queue)
            .send()
            .await
            .unwrap_or_else(|e| panic!("queue {} missing: {e}", g.queue))
            .queue_url()
            .expect("queue url")
            .to_owned();
        sqs.get_queue_url()
            .queue_name(&g.dlq)
            .send()
            .await
            .unwrap_or_else(|e| panic!("dlq {} missing: {e}", g.dlq));
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .expect("queue attributes");
        let attrs = attrs.attributes().expect("attributes");
        let redrive: serde_json::Value = serde_json::from_str(
            attrs
                .get(&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
                .expect("redrive policy"),
        )
        .expect("redrive json");
        assert_eq!(
            redrive["maxReceiveCount"].to_string().trim_matches('"'),
            "5",
            "{redrive}"
        );
        assert!(
            redrive["deadLetterTargetArn"]
                .as_str()
                .is_some_and(|a| a.ends_with(&g.dlq)),
            "{redrive}"
        );
        let queue_arn = attrs
            .get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .expect("queue arn")
            .clone();
        let targets = eventbridge
            .list_targets_by_rule()
            .rule(&g.rule)
            .event_bus_name(&names.event_bus)
            .send()
            .await
            .unwrap_or_else(|e| panic!("rule {} missing: {e}", g.rule));
        assert!(
            targets.targets().iter().any(|t| t.arn() == queue_arn),
            "rule {} targets {queue_arn}: {targets:?}",
            g.rule
        );
        queue_urls.push(url);
    }

    // An event on the bus reaches every consumer group's queue.
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .event_bus_name(&names.event_bus)
        .source("backbone.order")
        .detail_type("OrderPlaced")
        .detail(json!({"stream_id": "o-1", "sequence": 1}).to_string())
        .build();
    let put = eventbridge
        .put_events()
        .entries(entry)
        .send()
        .await
        .expect("put_events");
    assert_eq!(put.failed_entry_count(), 0, "{put:?}");
    for url in &queue_urls {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .wait_time_seconds(2)
            .send()
            .await
            .expect("receive");
        let body = got
            .messages()
            .first()
            .and_then(|m| m.body())
            .unwrap_or_else(|| panic!("no event reached {url}"));
        assert!(body.contains("OrderPlaced"), "{body}");
    }

    // The event store runs on the created tables.
    let store = DynamoEventStore::new(
        dynamodb,
        names,
        DynamoStoreOptions {
            index_on_append: true,
            ..DynamoStoreOptions::default()
        },
    );
    let stream = StreamRef::new(StreamType::Order, "o-1");
    let outcome = store
        .append(Commit {
            streams: vec![StreamAppend {
                stream: stream.clone(),
                expected_version: 0,
                events: vec![new_event("OrderPlaced", json!({"n": 1}))],
                snapshot: None,
            }],
            idempotency: None,
        })
        .await
        .expect("append");
    assert!(matches!(outcome, AppendOutcome::Committed(_)));
    assert_eq!(store.load(&stream).await.expect("load").version, 1);
    assert_eq!(
        store
            .feed(&FeedCursor::start(), 10)
            .await
            .expect("feed")
            .len(),
        1
    );
}
