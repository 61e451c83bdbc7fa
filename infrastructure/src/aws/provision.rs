//! `backbone provision`: deploys `cloudformation/backbone.yaml`, the one declaration of the AWS
//! resources, as one CloudFormation stack per stage. The template is compiled into the binary
//! ([`TEMPLATE`]), so the binary needs nothing beside it.
//!
//! The stack is created when it does not exist and updated when it does (parameters the spec
//! does not set keep their values); an update that changes nothing ("No updates are to be
//! performed") is a success. Either way the call waits for a terminal status and, on a failed
//! one, reports the reasons the stack's events give. What remains here besides the deployment
//! is reading the stack's outputs and checking that they name what [`ResourceNames`] names, the
//! names the adapters use.

use super::error::{classify, AwsFailure};
use super::names::{ConsumerGroup, ResourceNames};
use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use aws_sdk_cloudformation::types::{Capability, Parameter, Stack, StackEvent, StackStatus};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The CloudFormation template of the AWS deployment.
pub const TEMPLATE: &str = include_str!("../../cloudformation/backbone.yaml");

/// The template creates IAM roles and policies (the backups', the tasks'), which CloudFormation
/// wants acknowledged; none is named, so `CAPABILITY_IAM` is enough.
const CAPABILITIES: Capability = Capability::CapabilityIam;

/// How long [`provision`] waits for a terminal status by default (CloudFormation's own
/// per-resource timeouts end a stuck deployment well before).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Which stack to deploy, with which template parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSpec {
    pub stack_name: String,
    /// Template parameters (`Stage`, `AlarmEmail`, ...); the rest are the template's defaults
    /// on creation, and keep their values on an update.
    pub parameters: BTreeMap<String, String>,
    /// Longest wait for a terminal status.
    pub timeout: Duration,
    /// The feed's partitions, fixed when the stage is created (`None`: the default for a new
    /// stage, whatever it has for an existing one). See [`super::FeedIndexer::create`].
    pub feed_partitions: Option<u32>,
}

impl StackSpec {
    /// The stack `backbone-<stage>` with its `Stage` parameter set.
    pub fn for_stage(stage: &str) -> Self {
        Self {
            stack_name: format!("backbone-{stage}"),
            parameters: BTreeMap::from([("Stage".to_owned(), stage.to_owned())]),
            timeout: DEFAULT_TIMEOUT,
            feed_partitions: None,
        }
    }

    /// Sets one template parameter.
    pub fn with_parameter(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.parameters.insert(key.into(), value.into());
        self
    }
}

/// What a deployment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackChange {
    Created,
    Updated,
    /// The stack already matched the template and parameters.
    Unchanged,
}

/// A deployed stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub stack_id: String,
    pub change: StackChange,
    pub outputs: StackOutputs,
}

/// A provisioning call failed, or the stack ended in a failed status.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("stack {stack}: {source}")]
    Call {
        stack: String,
        #[source]
        source: AwsFailure,
    },
    #[error("stack {stack} ended in {status}: {}", reasons.join("; "))]
    Failed {
        stack: String,
        status: String,
        /// `<logical id> <status>: <reason>` of each failed resource, oldest first.
        reasons: Vec<String>,
    },
    #[error("stack {stack} still {status} after {timeout:?}")]
    TimedOut {
        stack: String,
        status: String,
        timeout: Duration,
    },
}

/// The outputs of a deployed stack, by output key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackOutputs(pub BTreeMap<String, String>);

impl StackOutputs {
    fn of(stack: &Stack) -> Self {
        Self(
            stack
                .outputs()
                .iter()
                .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The output keys of a consumer group: `CatalogQueueUrl`, `OrderHistoryRuleArn`, ...
    fn group_key(group: ConsumerGroup, what: &str) -> String {
        let mut key: String = group
            .as_str()
            .split('-')
            .map(|word| {
                let mut chars = word.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect();
        key.push_str(what);
        key
    }

    /// Every output that names a resource, with the name the adapters use for it. Queue URLs
    /// and ARNs name their resource in their last path segment.
    fn expected(names: &ResourceNames) -> Vec<(String, &str)> {
        let mut expected = vec![
            ("EventsTableName".to_owned(), names.events_table.as_str()),
            ("IdempotencyTableName".to_owned(), &names.idempotency_table),
            ("FeedTableName".to_owned(), &names.feed_table),
            ("RelayTableName".to_owned(), &names.relay_table),
            ("ReadModelDocsTableName".to_owned(), &names.docs_table),
            ("ReadModelIndexTableName".to_owned(), &names.index_table),
            (
                "ReadModelStateTableName".to_owned(),
                &names.readmodel_state_table,
            ),
            ("KeysTableName".to_owned(), &names.keys_table),
            ("EventBusName".to_owned(), &names.event_bus),
            ("EventBusArn".to_owned(), &names.event_bus),
            ("ArchiveArn".to_owned(), &names.archive),
        ];
        for g in &names.groups {
            expected.push((Self::group_key(g.group, "QueueUrl"), &g.queue));
            expected.push((Self::group_key(g.group, "DeadLetterQueueUrl"), &g.dlq));
            expected.push((Self::group_key(g.group, "RuleArn"), &g.rule));
        }
        expected
    }

    /// Where these outputs and `names` disagree (empty when the template and the adapters name
    /// every resource alike).
    pub fn disagreements(&self, names: &ResourceNames) -> Vec<String> {
        Self::expected(names)
            .into_iter()
            .filter_map(|(key, name)| match self.get(&key) {
                None => Some(format!("no output {key} (the adapters use {name})")),
                Some(value) if value.rsplit(['/', ':']).next() != Some(name) => {
                    Some(format!("output {key} is {value}, the adapters use {name}"))
                }
                Some(_) => None,
            })
            .collect()
    }

    /// The queue URL of a consumer group.
    pub fn queue_url(&self, group: ConsumerGroup) -> Option<&str> {
        self.get(&Self::group_key(group, "QueueUrl"))
    }

    /// The stream the relay reads.
    pub fn events_stream_arn(&self) -> Option<&str> {
        self.get("EventsStreamArn")
    }
}

fn call_failed<E>(
    stack: &str,
    operation: &'static str,
    err: &aws_sdk_cloudformation::error::SdkError<
        E,
        aws_sdk_cloudformation::config::http::HttpResponse,
    >,
) -> ProvisionError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    ProvisionError::Call {
        stack: stack.to_owned(),
        source: classify(operation, err),
    }
}

/// CloudFormation answers a missing stack with a `ValidationError` saying so.
fn is_missing(err: &impl ProvideErrorMetadata) -> bool {
    err.code() == Some("ValidationError")
        && err.message().is_some_and(|m| m.contains("does not exist"))
}

/// The stack, or `None` when there is none by that name.
async fn describe(
    cfn: &aws_sdk_cloudformation::Client,
    stack: &str,
) -> Result<Option<Stack>, ProvisionError> {
    match cfn.describe_stacks().stack_name(stack).send().await {
        Ok(out) => Ok(out.stacks().first().cloned()),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(call_failed(stack, "DescribeStacks", &e)),
    }
}

/// Deploys [`TEMPLATE`] as `spec`'s stack and waits for it to settle.
#[tracing::instrument(skip_all, fields(stack = %spec.stack_name), err)]
pub async fn provision(
    cfn: &aws_sdk_cloudformation::Client,
    spec: &StackSpec,
) -> Result<Provisioned, ProvisionError> {
    let stack = spec.stack_name.as_str();
    let mut parameters: Vec<Parameter> = spec
        .parameters
        .iter()
        .map(|(k, v)| {
            Parameter::builder()
                .parameter_key(k)
                .parameter_value(v)
                .build()
        })
        .collect();
    let existing = describe(cfn, stack).await?;
    if let Some(existing) = &existing {
        parameters.extend(previous_values(cfn, spec, existing).await?);
    }
    // CreateStack and UpdateStack send the same fields through builders of different types.
    macro_rules! deploy {
        ($request:expr) => {
            $request
                .stack_name(stack)
                .template_body(TEMPLATE)
                .capabilities(CAPABILITIES)
                .set_parameters(Some(parameters))
                .send()
                .await
        };
    }
    let change = if existing.is_none() {
        deploy!(cfn.create_stack()).map_err(|e| call_failed(stack, "CreateStack", &e))?;
        tracing::info!("creating stack");
        StackChange::Created
    } else {
        match deploy!(cfn.update_stack()) {
            Ok(_) => {
                tracing::info!("updating stack");
                StackChange::Updated
            }
            Err(e)
                if e.code() == Some("ValidationError")
                    && e.message()
                        .is_some_and(|m| m.contains("No updates are to be performed")) =>
            {
                StackChange::Unchanged
            }
            Err(e) => return Err(call_failed(stack, "UpdateStack", &e)),
        }
    };
    let settled = wait_settled(cfn, stack, spec.timeout).await?;
    let status = settled
        .stack_status()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
    if !matches!(
        settled.stack_status(),
        Some(StackStatus::CreateComplete | StackStatus::UpdateComplete)
    ) {
        return Err(ProvisionError::Failed {
            stack: stack.to_owned(),
            status,
            reasons: failure_reasons(cfn, stack).await,
        });
    }
    tracing::info!(?change, %status, "stack deployed");
    Ok(Provisioned {
        stack_id: settled.stack_id().unwrap_or(stack).to_owned(),
        change,
        outputs: StackOutputs::of(&settled),
    })
}

/// On an update, every parameter of the stack that `spec` does not set, the template still
/// declares, and that is not at its default keeps its value, as with `aws cloudformation
/// deploy`: provisioning a stage again must not, say, remove the services a deployment with
/// `ImageUri` started. (A parameter at its default gets it again anyway; and moto 5.2.5 fails
/// on a previous value that was never given.)
async fn previous_values(
    cfn: &aws_sdk_cloudformation::Client,
    spec: &StackSpec,
    existing: &Stack,
) -> Result<Vec<Parameter>, ProvisionError> {
    let summary = cfn
        .get_template_summary()
        .template_body(TEMPLATE)
        .send()
        .await
        .map_err(|e| call_failed(&spec.stack_name, "GetTemplateSummary", &e))?;
    let defaults: BTreeMap<&str, &str> = summary
        .parameters()
        .iter()
        .filter_map(|p| Some((p.parameter_key()?, p.default_value().unwrap_or_default())))
        .collect();
    Ok(existing
        .parameters()
        .iter()
        .filter_map(|p| Some((p.parameter_key()?, p.parameter_value().unwrap_or_default())))
        .filter(|(key, value)| {
            !spec.parameters.contains_key(*key)
                && defaults.get(key).is_some_and(|default| default != value)
        })
        .map(|(key, _)| {
            Parameter::builder()
                .parameter_key(key)
                .use_previous_value(true)
                .build()
        })
        .collect())
}

/// Polls the stack until its status is no longer `*_IN_PROGRESS` (transient describe failures
/// are polled through).
async fn wait_settled(
    cfn: &aws_sdk_cloudformation::Client,
    stack: &str,
    timeout: Duration,
) -> Result<Stack, ProvisionError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(100);
    let mut last_status = String::from("unknown");
    loop {
        match describe(cfn, stack).await {
            Ok(Some(found)) => {
                let status = found.stack_status().map(|s| s.as_str()).unwrap_or_default();
                if !status.ends_with("_IN_PROGRESS") {
                    return Ok(found);
                }
                last_status = status.to_owned();
            }
            Ok(None) => last_status = "missing".to_owned(),
            Err(ProvisionError::Call { source, .. }) if source.transient => {
                tracing::warn!(error = %source, "describing the stack failed, retrying");
            }
            Err(e) => return Err(e),
        }
        if Instant::now() + pause > deadline {
            return Err(ProvisionError::TimedOut {
                stack: stack.to_owned(),
                status: last_status,
                timeout,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Whether `event` marks the start of a deployment: the stack's own `*_IN_PROGRESS` event
/// with the reason "User Initiated".
fn starts_a_deployment(event: &StackEvent) -> bool {
    event.resource_type() == Some("AWS::CloudFormation::Stack")
        && event
            .resource_status()
            .is_some_and(|s| s.as_str().ends_with("_IN_PROGRESS"))
        && event.resource_status_reason() == Some("User Initiated")
}

/// The reasons of the failed events of the latest deployment (or why they could not be read).
async fn failure_reasons(cfn: &aws_sdk_cloudformation::Client, stack: &str) -> Vec<String> {
    let mut events = Vec::new();
    let mut next = None;
    loop {
        match cfn
            .describe_stack_events()
            .stack_name(stack)
            .set_next_token(next.take())
            .send()
            .await
        {
            Ok(page) => {
                events.extend(page.stack_events().iter().cloned());
                match page.next_token() {
                    Some(token) if !events.iter().any(starts_a_deployment) => {
                        next = Some(token.to_owned());
                    }
                    _ => break,
                }
            }
            Err(e) => {
                return vec![format!(
                    "the stack's events could not be read: {}",
                    classify("DescribeStackEvents", &e)
                )]
            }
        }
    }
    latest_failures(&events)
}

/// `<logical id> <status>: <reason>` of every failed event of the latest deployment, oldest
/// first. `events` come newest first, as DescribeStackEvents returns them; the latest
/// deployment's events are those after its "User Initiated" start (comparing event times with
/// this machine's clock would trust two clocks to agree).
pub fn latest_failures(events: &[StackEvent]) -> Vec<String> {
    let mut reasons: Vec<String> = events
        .iter()
        .take_while(|e| !starts_a_deployment(e))
        .filter(|e| {
            e.resource_status()
                .is_some_and(|s| s.as_str().ends_with("_FAILED"))
        })
        .map(|e| {
            format!(
                "{} {}: {}",
                e.logical_resource_id().unwrap_or("?"),
                e.resource_status().map(|s| s.as_str()).unwrap_or("?"),
                e.resource_status_reason().unwrap_or("no reason given")
            )
        })
        .collect();
    reasons.reverse();
    if reasons.is_empty() {
        reasons.push("no failed resource events".to_owned());
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudformation::types::ResourceStatus;

    fn event(id: &str, kind: &str, status: ResourceStatus, reason: &str) -> StackEvent {
        StackEvent::builder()
            .stack_id("stack")
            .event_id(format!("{id}-{status}"))
            .stack_name("backbone-dev")
            .logical_resource_id(id)
            .resource_type(kind)
            .resource_status(status)
            .resource_status_reason(reason)
            .timestamp(aws_sdk_cloudformation::primitives::DateTime::from_secs(0))
            .build()
    }

    #[test]
    fn a_failed_deployment_reports_the_reasons_of_its_own_failed_resources_oldest_first() {
        const STACK: &str = "AWS::CloudFormation::Stack";
        const TABLE: &str = "AWS::DynamoDB::Table";
        // Newest first.
        let events = [
            event(
                "backbone-dev",
                STACK,
                ResourceStatus::UpdateFailed,
                "rolled back",
            ),
            event(
                "Bus",
                "AWS::Events::EventBus",
                ResourceStatus::UpdateFailed,
                "limit",
            ),
            event("EventsTable", TABLE, ResourceStatus::UpdateComplete, ""),
            event(
                "backbone-dev",
                STACK,
                ResourceStatus::UpdateInProgress,
                "User Initiated",
            ),
            event(
                "Archive",
                "AWS::Events::Archive",
                ResourceStatus::CreateFailed,
                "older",
            ),
        ];
        assert_eq!(
            latest_failures(&events),
            [
                "Bus UPDATE_FAILED: limit",
                "backbone-dev UPDATE_FAILED: rolled back"
            ]
        );
        assert_eq!(latest_failures(&events[2..]), ["no failed resource events"]);
    }

    #[test]
    fn outputs_name_what_the_adapters_use_or_say_where_they_differ() {
        let names = ResourceNames::for_stage("dev");
        let mut outputs = StackOutputs(
            StackOutputs::expected(&names)
                .into_iter()
                .map(|(key, name)| {
                    let value = if key.ends_with("Url") {
                        format!("https://sqs.eu-west-1.amazonaws.com/123/{name}")
                    } else if key.ends_with("Arn") {
                        format!("arn:aws:events:eu-west-1:123:rule/backbone-dev-bus/{name}")
                    } else {
                        name.to_owned()
                    };
                    (key, value)
                })
                .collect(),
        );
        assert_eq!(outputs.disagreements(&names), Vec::<String>::new());
        assert_eq!(
            outputs.queue_url(ConsumerGroup::ProcessManagers),
            Some("https://sqs.eu-west-1.amazonaws.com/123/backbone-dev-process-managers")
        );
        outputs
            .0
            .insert("FeedTableName".into(), "backbone-prod-feed".into());
        outputs.0.remove("OrderHistoryRuleArn");
        assert_eq!(
            outputs.disagreements(&names),
            [
                "output FeedTableName is backbone-prod-feed, the adapters use backbone-dev-feed",
                "no output OrderHistoryRuleArn (the adapters use backbone-dev-to-order-history)"
            ]
        );
    }
}
