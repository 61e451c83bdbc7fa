//! Every AWS resource name of one deployment stage, derived in one place: the CloudFormation
//! template (`cloudformation/backbone.yaml`) builds the same names from its `Stage` parameter,
//! and the adapters find its tables, bus and queues by them.

/// A consumer group: one SQS queue (plus DLQ) fed by one EventBridge rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsumerGroup {
    Catalog,
    OrderHistory,
    Notifications,
    Support,
    ProcessManagers,
}

impl ConsumerGroup {
    pub const ALL: [ConsumerGroup; 5] = [
        ConsumerGroup::Catalog,
        ConsumerGroup::OrderHistory,
        ConsumerGroup::Notifications,
        ConsumerGroup::Support,
        ConsumerGroup::ProcessManagers,
    ];

    /// The stable name used in resource names and on the command line (`backbone worker <group>`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerGroup::Catalog => "catalog",
            ConsumerGroup::OrderHistory => "order-history",
            ConsumerGroup::Notifications => "notifications",
            ConsumerGroup::Support => "support",
            ConsumerGroup::ProcessManagers => "process-managers",
        }
    }

    pub fn parse(s: &str) -> Option<ConsumerGroup> {
        ConsumerGroup::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

impl std::fmt::Display for ConsumerGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The queue, dead-letter queue and rule of one consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupNames {
    pub group: ConsumerGroup,
    pub queue: String,
    pub dlq: String,
    pub rule: String,
}

/// All resource names of one stage.
///
/// Names are `backbone-<stage>-<what>`. The stage should be short lowercase letters, digits and
/// dashes (at most 20 characters): EventBridge archive names are limited to 48 characters and
/// rule names to 64. The template enforces that with an `AllowedPattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    pub stage: String,
    /// pk `stream` (S), sk `seq` (N); stream NEW_IMAGE; GSI [`ResourceNames::EVENTS_BY_TIME`].
    /// Each stream's snapshot is an item of its partition (see `codec`).
    pub events_table: String,
    /// pk `command_id` (S); TTL on `expires_at`.
    pub idempotency_table: String,
    /// pk `part` (S), sk `pos` (N): the durable global feed written by the indexer; GSI
    /// [`ResourceNames::FEED_BY_HOUR`].
    pub feed_table: String,
    /// pk `id` (S): relay checkpoints (one item per stream shard), owned by the relay.
    pub relay_table: String,
    /// pk `id` (S) = `<collection>#<key>`: read-model documents.
    pub docs_table: String,
    /// pk `p` (S) = `<index>#<partition>`, sk `s` (S): read-model index entries.
    pub index_table: String,
    /// pk `id` (S): per (projection, stream) applied sequences and per projection checkpoints.
    pub readmodel_state_table: String,
    /// pk `customer` (S): each customer's data key (see `keys`).
    pub keys_table: String,
    pub event_bus: String,
    pub archive: String,
    pub groups: Vec<GroupNames>,
}

impl ResourceNames {
    /// The analysts' time-range GSI of the events table.
    pub const EVENTS_BY_TIME: &'static str = "by_time";
    /// The feed's time index: pk `hour` (S, the hour of `occurred_at`), sk `pos` (N).
    pub const FEED_BY_HOUR: &'static str = "by_hour";

    pub fn for_stage(stage: &str) -> Self {
        let name = |what: &str| format!("backbone-{stage}-{what}");
        Self {
            stage: stage.to_owned(),
            events_table: name("events"),
            idempotency_table: name("idempotency"),
            feed_table: name("feed"),
            relay_table: name("relay"),
            docs_table: name("rm-docs"),
            index_table: name("rm-index"),
            readmodel_state_table: name("rm-state"),
            keys_table: name("keys"),
            event_bus: name("bus"),
            archive: name("archive"),
            groups: ConsumerGroup::ALL
                .into_iter()
                .map(|group| GroupNames {
                    group,
                    queue: name(group.as_str()),
                    dlq: name(&format!("{}-dlq", group.as_str())),
                    rule: name(&format!("to-{}", group.as_str())),
                })
                .collect(),
        }
    }

    pub fn group(&self, group: ConsumerGroup) -> Option<&GroupNames> {
        self.groups.iter().find(|g| g.group == group)
    }

    /// Every DynamoDB table name.
    pub fn tables(&self) -> [&str; 8] {
        [
            &self.events_table,
            &self.idempotency_table,
            &self.feed_table,
            &self.relay_table,
            &self.docs_table,
            &self.index_table,
            &self.readmodel_state_table,
            &self.keys_table,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_aws_limits_for_a_twenty_character_stage() {
        let names = ResourceNames::for_stage("abcdefghij0123456789");
        assert!(names.archive.len() <= 48, "{}", names.archive);
        for g in &names.groups {
            assert!(g.rule.len() <= 64, "{}", g.rule);
            assert!(g.dlq.len() <= 80, "{}", g.dlq);
        }
        assert_eq!(names.events_table, "backbone-abcdefghij0123456789-events");
    }

    #[test]
    fn groups_parse_back() {
        for g in ConsumerGroup::ALL {
            assert_eq!(ConsumerGroup::parse(g.as_str()), Some(g));
        }
        assert_eq!(ConsumerGroup::parse("nope"), None);
    }
}
