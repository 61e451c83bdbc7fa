//! Creates, through the SDK, the resources `cloudformation/backbone.yaml` declares, for local
//! runs and tests (`backbone provision`). Every step is idempotent: a resource that already
//! exists is left as it is (queue attributes, rules, targets and policies are re-applied).
//!
//! Alarms are not created here (local emulators have no use for them); the template has them.

use super::codec::TIME_SHARDS;
use super::error::{classify, AwsFailure};
use super::names::{ConsumerGroup, ResourceNames};
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, Projection, ProjectionType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_eventbridge::operation::create_archive::CreateArchiveError;
use aws_sdk_eventbridge::operation::create_event_bus::CreateEventBusError;
use aws_sdk_sqs::types::QueueAttributeName;
use std::time::Duration;

/// Every queue receives the events of every stream type: `source` is `backbone.<stream_type>`.
pub const EVENT_PATTERN: &str = r#"{"source":[{"prefix":"backbone."}]}"#;
/// Deliveries of one message before SQS moves it to the group's DLQ.
pub const MAX_RECEIVE_COUNT: u32 = 5;
/// Seconds a received message stays invisible to other consumers.
pub const VISIBILITY_TIMEOUT_SECS: u32 = 30;
/// Kept in sync with [`TIME_SHARDS`]: the time GSI's key layout is part of the template too.
const _: () = assert!(TIME_SHARDS == 16);

/// The SDK clients provisioning needs.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub eventbridge: aws_sdk_eventbridge::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl AwsClients {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            eventbridge: aws_sdk_eventbridge::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
        }
    }
}

/// A provisioning step failed.
#[derive(Debug, thiserror::Error)]
#[error("provisioning {resource}: {source}")]
pub struct ProvisionError {
    pub resource: String,
    #[source]
    pub source: AwsFailure,
}

fn failed(resource: &str, source: AwsFailure) -> ProvisionError {
    ProvisionError {
        resource: resource.to_owned(),
        source,
    }
}

fn build_err(resource: &str, e: impl std::fmt::Display) -> ProvisionError {
    failed(
        resource,
        AwsFailure::new("build request", false, e.to_string()),
    )
}

/// One consumer group's queues as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedGroup {
    pub group: ConsumerGroup,
    pub queue_url: String,
    pub queue_arn: String,
    pub dlq_url: String,
    pub dlq_arn: String,
    pub rule_arn: String,
}

/// What [`provision`] created or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub event_bus_arn: String,
    pub groups: Vec<ProvisionedGroup>,
}

#[derive(Clone, Copy)]
enum Attr {
    S,
    N,
}

impl Attr {
    fn scalar(self) -> ScalarAttributeType {
        match self {
            Attr::S => ScalarAttributeType::S,
            Attr::N => ScalarAttributeType::N,
        }
    }
}

struct TableSpec<'a> {
    name: &'a str,
    hash: (&'static str, Attr),
    range: Option<(&'static str, Attr)>,
    /// Stream with NEW_IMAGE.
    stream: bool,
    /// GSI name, hash attribute, range attribute (all S).
    gsi: Option<(&'static str, &'static str, &'static str)>,
    ttl: Option<&'static str>,
    pitr: bool,
}

fn key_element(name: &str, key_type: KeyType) -> Result<KeySchemaElement, ProvisionError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .map_err(|e| build_err(name, e))
}

fn attr_def(name: &str, attr: Attr) -> Result<AttributeDefinition, ProvisionError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(attr.scalar())
        .build()
        .map_err(|e| build_err(name, e))
}

async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    spec: &TableSpec<'_>,
) -> Result<(), ProvisionError> {
    let name = spec.name;
    let mut req = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr_def(spec.hash.0, spec.hash.1)?)
        .key_schema(key_element(spec.hash.0, KeyType::Hash)?);
    if let Some((range, attr)) = spec.range {
        req = req
            .attribute_definitions(attr_def(range, attr)?)
            .key_schema(key_element(range, KeyType::Range)?);
    }
    if spec.stream {
        req = req.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .map_err(|e| build_err(name, e))?,
        );
    }
    if let Some((index, hash, range)) = spec.gsi {
        req = req
            .attribute_definitions(attr_def(hash, Attr::S)?)
            .attribute_definitions(attr_def(range, Attr::S)?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index)
                    .key_schema(key_element(hash, KeyType::Hash)?)
                    .key_schema(key_element(range, KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .map_err(|e| build_err(name, e))?,
            );
    }
    match req.send().await {
        Ok(_) => tracing::info!(table = name, "created table"),
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(CreateTableError::ResourceInUseException(_))
            ) =>
        {
            tracing::debug!(table = name, "table exists");
        }
        Err(e) => return Err(failed(name, classify("CreateTable", &e))),
    }
    wait_active(client, name).await?;

    if let Some(attribute) = spec.ttl {
        let current = client
            .describe_time_to_live()
            .table_name(name)
            .send()
            .await
            .map_err(|e| failed(name, classify("DescribeTimeToLive", &e)))?;
        let status = current
            .time_to_live_description()
            .and_then(|d| d.time_to_live_status().cloned());
        if !matches!(
            status,
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ) {
            client
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name(attribute)
                        .build()
                        .map_err(|e| build_err(name, e))?,
                )
                .send()
                .await
                .map_err(|e| failed(name, classify("UpdateTimeToLive", &e)))?;
        }
    }
    if spec.pitr {
        client
            .update_continuous_backups()
            .table_name(name)
            .point_in_time_recovery_specification(
                PointInTimeRecoverySpecification::builder()
                    .point_in_time_recovery_enabled(true)
                    .build()
                    .map_err(|e| build_err(name, e))?,
            )
            .send()
            .await
            .map_err(|e| failed(name, classify("UpdateContinuousBackups", &e)))?;
    }
    Ok(())
}

async fn wait_active(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), ProvisionError> {
    for _ in 0..120 {
        let out = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| failed(name, classify("DescribeTable", &e)))?;
        if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(failed(
        name,
        AwsFailure::new("DescribeTable", true, "table did not become ACTIVE in 60 s"),
    ))
}

/// The event store's tables: events (stream, time GSI, PITR), snapshots, idempotency (TTL) and
/// the feed.
pub async fn provision_event_store(
    client: &aws_sdk_dynamodb::Client,
    names: &ResourceNames,
) -> Result<(), ProvisionError> {
    let specs = [
        TableSpec {
            name: &names.events_table,
            hash: ("stream", Attr::S),
            range: Some(("seq", Attr::N)),
            stream: true,
            gsi: Some((ResourceNames::EVENTS_BY_TIME, "bucket", "bucket_sort")),
            ttl: None,
            pitr: true,
        },
        TableSpec {
            name: &names.snapshots_table,
            hash: ("stream", Attr::S),
            range: None,
            stream: false,
            gsi: None,
            ttl: None,
            pitr: true,
        },
        TableSpec {
            name: &names.idempotency_table,
            hash: ("command_id", Attr::S),
            range: None,
            stream: false,
            gsi: None,
            ttl: Some("expires_at"),
            pitr: true,
        },
        TableSpec {
            name: &names.feed_table,
            hash: ("part", Attr::S),
            range: Some(("pos", Attr::N)),
            stream: false,
            gsi: None,
            ttl: None,
            pitr: true,
        },
    ];
    for spec in &specs {
        create_table(client, spec).await?;
    }
    Ok(())
}

/// The read-model tables (docs, index entries, applied sequences and checkpoints) and the
/// relay's checkpoint table. Rebuildable from the events, so no point-in-time recovery.
pub async fn provision_read_models(
    client: &aws_sdk_dynamodb::Client,
    names: &ResourceNames,
) -> Result<(), ProvisionError> {
    let simple = |name| TableSpec {
        name,
        hash: ("id", Attr::S),
        range: None,
        stream: false,
        gsi: None,
        ttl: None,
        pitr: false,
    };
    let specs = [
        simple(&names.docs_table),
        TableSpec {
            name: &names.index_table,
            hash: ("p", Attr::S),
            range: Some(("s", Attr::S)),
            stream: false,
            gsi: None,
            ttl: None,
            pitr: false,
        },
        simple(&names.readmodel_state_table),
        simple(&names.relay_table),
    ];
    for spec in &specs {
        create_table(client, spec).await?;
    }
    Ok(())
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, ProvisionError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| failed(url, classify("GetQueueAttributes", &e)))?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| {
            failed(
                url,
                AwsFailure::new("GetQueueAttributes", false, "no QueueArn"),
            )
        })
}

/// Creates the queue, or re-applies `attributes` when it exists.
async fn ensure_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> Result<String, ProvisionError> {
    let mut req = sqs.create_queue().queue_name(name);
    for (k, v) in attributes {
        req = req.attributes(k.clone(), v);
    }
    match req.send().await {
        Ok(out) => out
            .queue_url()
            .map(str::to_owned)
            .ok_or_else(|| failed(name, AwsFailure::new("CreateQueue", false, "no queue URL"))),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_queue_name_exists()) =>
        {
            let url = sqs
                .get_queue_url()
                .queue_name(name)
                .send()
                .await
                .map_err(|e| failed(name, classify("GetQueueUrl", &e)))?
                .queue_url()
                .map(str::to_owned)
                .ok_or_else(|| {
                    failed(name, AwsFailure::new("GetQueueUrl", false, "no queue URL"))
                })?;
            let mut set = sqs.set_queue_attributes().queue_url(&url);
            for (k, v) in attributes {
                set = set.attributes(k.clone(), v);
            }
            set.send()
                .await
                .map_err(|e| failed(name, classify("SetQueueAttributes", &e)))?;
            Ok(url)
        }
        Err(e) => Err(failed(name, classify("CreateQueue", &e))),
    }
}

/// Everything: the tables of [`provision_event_store`] and [`provision_read_models`], the bus
/// with its archive, and per consumer group a DLQ, a queue redriving to it after
/// [`MAX_RECEIVE_COUNT`] receives, a rule routing every `backbone.*` event to the queue and the
/// queue policy that lets EventBridge deliver to it.
#[tracing::instrument(skip_all, fields(stage = %names.stage), err)]
pub async fn provision(
    clients: &AwsClients,
    names: &ResourceNames,
) -> Result<Provisioned, ProvisionError> {
    provision_event_store(&clients.dynamodb, names).await?;
    provision_read_models(&clients.dynamodb, names).await?;

    let eb = &clients.eventbridge;
    let bus = &names.event_bus;
    match eb.create_event_bus().name(bus).send().await {
        Ok(_) => tracing::info!(bus, "created event bus"),
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(CreateEventBusError::ResourceAlreadyExistsException(_))
            ) => {}
        Err(e) => return Err(failed(bus, classify("CreateEventBus", &e))),
    }
    let event_bus_arn = eb
        .describe_event_bus()
        .name(bus)
        .send()
        .await
        .map_err(|e| failed(bus, classify("DescribeEventBus", &e)))?
        .arn()
        .map(str::to_owned)
        .ok_or_else(|| failed(bus, AwsFailure::new("DescribeEventBus", false, "no ARN")))?;
    match eb
        .create_archive()
        .archive_name(&names.archive)
        .event_source_arn(&event_bus_arn)
        // Everything on the bus (only backbone events travel on it), as in the template.
        .retention_days(ResourceNames::ARCHIVE_RETENTION_DAYS)
        .send()
        .await
    {
        Ok(_) => tracing::info!(archive = %names.archive, "created archive"),
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(CreateArchiveError::ResourceAlreadyExistsException(_))
            ) => {}
        Err(e) => return Err(failed(&names.archive, classify("CreateArchive", &e))),
    }

    let sqs = &clients.sqs;
    let mut groups = Vec::with_capacity(names.groups.len());
    for g in &names.groups {
        let dlq_url = ensure_queue(
            sqs,
            &g.dlq,
            &[(
                QueueAttributeName::MessageRetentionPeriod,
                "1209600".to_owned(),
            )],
        )
        .await?;
        let dlq_arn = queue_arn(sqs, &dlq_url).await?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": MAX_RECEIVE_COUNT.to_string(),
        })
        .to_string();
        let queue_url = ensure_queue(
            sqs,
            &g.queue,
            &[
                (QueueAttributeName::RedrivePolicy, redrive),
                (
                    QueueAttributeName::VisibilityTimeout,
                    VISIBILITY_TIMEOUT_SECS.to_string(),
                ),
                (
                    QueueAttributeName::ReceiveMessageWaitTimeSeconds,
                    "20".to_owned(),
                ),
            ],
        )
        .await?;
        let queue_arn = queue_arn(sqs, &queue_url).await?;

        let rule_arn = eb
            .put_rule()
            .name(&g.rule)
            .event_bus_name(bus)
            .event_pattern(EVENT_PATTERN)
            .state(aws_sdk_eventbridge::types::RuleState::Enabled)
            .description(format!("backbone events to the {} queue", g.group))
            .send()
            .await
            .map_err(|e| failed(&g.rule, classify("PutRule", &e)))?
            .rule_arn()
            .map(str::to_owned)
            .ok_or_else(|| failed(&g.rule, AwsFailure::new("PutRule", false, "no rule ARN")))?;
        let target = aws_sdk_eventbridge::types::Target::builder()
            .id("queue")
            .arn(&queue_arn)
            .build()
            .map_err(|e| build_err(&g.rule, e))?;
        let put = eb
            .put_targets()
            .rule(&g.rule)
            .event_bus_name(bus)
            .targets(target)
            .send()
            .await
            .map_err(|e| failed(&g.rule, classify("PutTargets", &e)))?;
        if put.failed_entry_count() > 0 {
            return Err(failed(
                &g.rule,
                AwsFailure::new("PutTargets", false, format!("{:?}", put.failed_entries())),
            ));
        }
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "events-to-queue",
                "Effect": "Allow",
                "Principal": { "Service": "events.amazonaws.com" },
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": { "ArnEquals": { "aws:SourceArn": rule_arn } },
            }],
        })
        .to_string();
        sqs.set_queue_attributes()
            .queue_url(&queue_url)
            .attributes(QueueAttributeName::Policy, policy)
            .send()
            .await
            .map_err(|e| failed(&g.queue, classify("SetQueueAttributes", &e)))?;
        groups.push(ProvisionedGroup {
            group: g.group,
            queue_url,
            queue_arn,
            dlq_url,
            dlq_arn,
            rule_arn,
        });
    }
    Ok(Provisioned {
        event_bus_arn,
        groups,
    })
}
