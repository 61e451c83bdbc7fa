//! The whole system from `cloudformation/backbone.yaml`: with `ImageUri` it also declares the
//! ECS Fargate services of `serve`, `relay` and every worker group, their roles, logs, secrets
//! and an ALB. moto deploys what it models (the cluster, services, task definitions, log group,
//! roles, load balancer, KMS key) and is checked through its APIs; what it skips or ignores
//! (secrets, backups, point-in-time recovery, most task and service properties, policies'
//! effect) is checked on the template itself, read by cfn-lint's own decoder.

#[path = "support/moto.rs"]
mod moto;

use infrastructure::aws::provision::{StackChange, TEMPLATE};
use infrastructure::aws::{provision, ConsumerGroup, ResourceNames, StackSpec};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn template_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cloudformation/backbone.yaml")
}

/// The template as JSON, short-form functions in their long form (`{"Ref": ...}`,
/// `{"Fn::GetAtt": [resource, attribute]}`), decoded by the cfn-lint that lints it.
fn template() -> Value {
    const DECODE: &str = "import json, sys\n\
        from cfnlint.decode import decode\n\
        template, problems = decode(sys.argv[1])\n\
        assert not problems, problems\n\
        print(json.dumps(template))";
    let python = moto::python_of("cfn-lint").unwrap_or_else(|| {
        panic!("cfn-lint is not on PATH; scripts/test.sh installs it into .venv (pip install cfn-lint)")
    });
    let output = Command::new(&python)
        .arg("-c")
        .arg(DECODE)
        .arg(template_path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        output.status.success(),
        "decoding the template failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the decoder prints JSON")
}

fn resources(template: &Value) -> &serde_json::Map<String, Value> {
    template["Resources"].as_object().expect("Resources")
}

fn of_type<'t>(template: &'t Value, kind: &str) -> Vec<(&'t str, &'t Value)> {
    resources(template)
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(id, r)| (id.as_str(), r))
        .collect()
}

/// A scalar or a list, as a list.
fn list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        one => vec![one],
    }
}

/// What a policy's `Resource` (or a `ValueFrom`) names: `EventsTable.Arn` for a Fn::GetAtt,
/// `StripeSecretKeySecret` for a Ref, the text of a Fn::Sub, or the literal.
fn target(value: &Value) -> String {
    if let Some(id) = value["Ref"].as_str() {
        return id.to_owned();
    }
    if let Some([resource, attribute]) = value["Fn::GetAtt"].as_array().map(Vec::as_slice) {
        return format!(
            "{}.{}",
            resource.as_str().unwrap(),
            attribute.as_str().unwrap()
        );
    }
    match &value["Fn::Sub"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts[0].as_str().unwrap_or_default().to_owned(),
        _ => value
            .as_str()
            .map(str::to_owned)
            .unwrap_or(value.to_string()),
    }
}

fn statements(document: &Value) -> Vec<&Value> {
    list(&document["Statement"])
}

fn strings(value: &Value) -> Vec<String> {
    list(value).into_iter().map(target).collect()
}

/// The `Name` of each entry of a container's `Environment` or `Secrets`, with its value
/// (`Value`, or what `ValueFrom` names); entries behind a condition count as present.
fn named(entries: &Value) -> BTreeMap<String, String> {
    list(entries)
        .into_iter()
        .map(|entry| match entry["Fn::If"].as_array() {
            Some(branches) => &branches[1],
            None => entry,
        })
        .map(|entry| {
            let value = entry
                .get("Value")
                .or(entry.get("ValueFrom"))
                .expect("a value");
            (entry["Name"].as_str().unwrap().to_owned(), target(value))
        })
        .collect()
}

/// The logical-id prefix of a consumer group's resources: `OrderHistory` for `order-history`.
fn logical(group: ConsumerGroup) -> String {
    group
        .as_str()
        .split('-')
        .map(|word| word[..1].to_uppercase() + &word[1..])
        .collect()
}

/// The processes the services run: `serve`, `relay` and one worker per consumer group.
fn processes() -> Vec<String> {
    ["serve", "relay"]
        .into_iter()
        .map(str::to_owned)
        .chain(ConsumerGroup::ALL.iter().map(|g| g.as_str().to_owned()))
        .collect()
}

/// Each process's task definition (by the name of its one container).
fn task_definitions(template: &Value) -> BTreeMap<String, (&str, &Value)> {
    of_type(template, "AWS::ECS::TaskDefinition")
        .into_iter()
        .map(|(id, task)| {
            let containers = task["Properties"]["ContainerDefinitions"]
                .as_array()
                .unwrap();
            assert_eq!(containers.len(), 1, "{id} runs one process");
            (
                containers[0]["Name"].as_str().unwrap().to_owned(),
                (id, task),
            )
        })
        .collect()
}

/// Everything a role may do, as (action, target) pairs: its inline policies and the managed
/// policies of the template it attaches.
fn grants(template: &Value, role: &str) -> BTreeSet<(String, String)> {
    let properties = &resources(template)[role]["Properties"];
    let mut documents: Vec<&Value> = list(&properties["Policies"])
        .into_iter()
        .map(|p| &p["PolicyDocument"])
        .collect();
    for managed in list(&properties["ManagedPolicyArns"]) {
        let id = managed["Ref"]
            .as_str()
            .expect("a managed policy of the template");
        documents.push(&resources(template)[id]["Properties"]["PolicyDocument"]);
    }
    let mut grants = BTreeSet::new();
    for statement in documents.into_iter().flat_map(statements) {
        assert_eq!(statement["Effect"], "Allow", "{role}: {statement}");
        for action in strings(&statement["Action"]) {
            for resource in strings(&statement["Resource"]) {
                grants.insert((action.clone(), resource));
            }
        }
    }
    grants
}

/// Each process's task role, by process.
fn task_roles(template: &Value) -> BTreeMap<String, BTreeSet<(String, String)>> {
    task_definitions(template)
        .into_iter()
        .map(|(process, (_, task))| {
            let role = target(&task["Properties"]["TaskRoleArn"]);
            let role = role.strip_suffix(".Arn").expect("a role of the template");
            (process, grants(template, role))
        })
        .collect()
}

/// The processes whose role has `action` on `target`.
fn who_may(
    roles: &BTreeMap<String, BTreeSet<(String, String)>>,
    action: &str,
    target: &str,
) -> BTreeSet<String> {
    roles
        .iter()
        .filter(|(_, grants)| grants.contains(&(action.to_owned(), target.to_owned())))
        .map(|(process, _)| process.clone())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_template_fits_in_a_template_body() {
    // `provision` and `aws cloudformation deploy` send it as TemplateBody, which CloudFormation
    // caps at 51,200 bytes (beyond, it must come from S3).
    assert!(
        TEMPLATE.len() <= 51_200,
        "backbone.yaml is {} bytes, more than a template body may be",
        TEMPLATE.len()
    );
}

#[test]
fn every_table_recovers_to_a_point_in_time_and_the_sources_of_truth_are_backed_up_daily() {
    let template = template();
    let tables = of_type(&template, "AWS::DynamoDB::Table");
    assert_eq!(tables.len(), ResourceNames::for_stage("x").tables().len());
    for (id, table) in &tables {
        assert_eq!(
            table["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
            true,
            "{id} has point-in-time recovery"
        );
    }

    // An erased customer's key must not outlive the recovery window: a day by default, no
    // stream, no backup.
    let keys = &resources(&template)["KeysTable"]["Properties"];
    assert_eq!(
        keys["PointInTimeRecoverySpecification"]["RecoveryPeriodInDays"],
        json!({"Ref": "KeysRecoveryDays"})
    );
    assert_eq!(template["Parameters"]["KeysRecoveryDays"]["Default"], 1);
    assert!(keys.get("StreamSpecification").is_none(), "{keys}");

    // Backed up: every table that outlives the stack, but the keys.
    let [(_, selection)] = of_type(&template, "AWS::Backup::BackupSelection")[..] else {
        panic!("one backup selection")
    };
    let backed_up: BTreeSet<String> =
        strings(&selection["Properties"]["BackupSelection"]["Resources"])
            .into_iter()
            .collect();
    let retained: BTreeSet<String> = tables
        .iter()
        .filter(|(id, table)| table["DeletionPolicy"] == "Retain" && *id != "KeysTable")
        .map(|(id, _)| format!("{id}.Arn"))
        .collect();
    assert_eq!(backed_up, retained);
    assert_eq!(
        backed_up,
        set(&["EventsTable.Arn", "IdempotencyTable.Arn", "FeedTable.Arn"])
    );
    let [(plan_id, plan)] = of_type(&template, "AWS::Backup::BackupPlan")[..] else {
        panic!("one backup plan")
    };
    assert_eq!(
        selection["Properties"]["BackupPlanId"],
        json!({ "Ref": plan_id })
    );
    let rules = plan["Properties"]["BackupPlan"]["BackupPlanRule"]
        .as_array()
        .unwrap();
    assert_eq!(rules.len(), 1);
    let [(vault_id, vault)] = of_type(&template, "AWS::Backup::BackupVault")[..] else {
        panic!("one backup vault")
    };
    assert_eq!(
        vault["DeletionPolicy"], "Retain",
        "recovery points outlive the stack"
    );
    assert_eq!(rules[0]["TargetBackupVault"], json!({ "Ref": vault_id }));
    assert_eq!(rules[0]["ScheduleExpression"], "cron(0 3 * * ? *)", "daily");
    assert_eq!(
        rules[0]["Lifecycle"]["DeleteAfterDays"],
        json!({"Ref": "BackupRetentionDays"})
    );
    let role = target(&selection["Properties"]["BackupSelection"]["IamRoleArn"]);
    let role = &resources(&template)[role.strip_suffix(".Arn").unwrap()]["Properties"];
    assert_eq!(
        role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"],
        "backup.amazonaws.com"
    );
}

/// Actions AWS authorizes on `"*"` only (no resource-level permissions), each with why a process
/// needs it.
const UNSCOPABLE: &[(&str, &str)] = &[
    (
        "dynamodb:ListStreams",
        "the relay finds the events table's stream by listing the table's streams",
    ),
    (
        "ecr:GetAuthorizationToken",
        "pulling the image starts with a registry token",
    ),
];

#[test]
fn every_policy_statement_names_exactly_its_resources() {
    let template = template();
    let mut documents: Vec<(String, &Value)> = Vec::new();
    for (id, role) in of_type(&template, "AWS::IAM::Role") {
        for policy in list(&role["Properties"]["Policies"]) {
            documents.push((id.to_owned(), &policy["PolicyDocument"]));
        }
    }
    for kind in ["AWS::IAM::ManagedPolicy", "AWS::SQS::QueuePolicy"] {
        for (id, policy) in of_type(&template, kind) {
            documents.push((id.to_owned(), &policy["Properties"]["PolicyDocument"]));
        }
    }
    assert!(documents.len() >= 10, "{documents:?}");
    let unscopable: BTreeSet<&str> = UNSCOPABLE.iter().map(|(action, _)| *action).collect();
    let mut on_everything = BTreeSet::new();
    for (id, document) in &documents {
        for statement in statements(document) {
            let actions = strings(&statement["Action"]);
            let resources = strings(&statement["Resource"]);
            assert!(
                !resources.is_empty(),
                "{id}: a statement without resources: {statement}"
            );
            assert!(
                actions.iter().all(|a| !a.contains('*')),
                "{id}: a wildcard action: {statement}"
            );
            if resources.iter().any(|r| r.contains('*')) {
                assert_eq!(
                    resources,
                    ["*"],
                    "{id}: a partly wildcard resource: {statement}"
                );
                assert!(
                    actions.iter().all(|a| unscopable.contains(a.as_str())),
                    "{id}: {actions:?} on \"*\", though AWS lets them be scoped: {statement}"
                );
                on_everything.extend(actions);
            }
        }
    }
    assert_eq!(
        on_everything,
        unscopable.iter().map(|a| (*a).to_owned()).collect(),
        "every exemption is used (else drop it)"
    );

    // A key policy's Resource is always "*", which means the key itself; it leaves the key's
    // use to IAM policies, granting it to the account only.
    for (id, key) in of_type(&template, "AWS::KMS::Key") {
        for statement in statements(&key["Properties"]["KeyPolicy"]) {
            assert_eq!(
                target(&statement["Principal"]["AWS"]),
                "arn:${AWS::Partition}:iam::${AWS::AccountId}:root",
                "{id}: {statement}"
            );
        }
    }
}

#[test]
fn each_process_may_make_exactly_the_calls_it_makes() {
    let template = template();
    let roles = task_roles(&template);
    assert_eq!(
        roles.keys().cloned().collect::<BTreeSet<_>>(),
        processes().into_iter().collect(),
        "a task definition, with a role, per process"
    );
    let consumers: BTreeSet<String> = ConsumerGroup::ALL
        .iter()
        .map(|g| g.as_str().to_owned())
        .collect();

    // Each worker consumes its own queue, and no other.
    for group in ConsumerGroup::ALL {
        let queue = format!("{}Queue.Arn", logical(group));
        for action in [
            "sqs:GetQueueUrl",
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility",
        ] {
            assert_eq!(
                who_may(&roles, action, &queue),
                set(&[group.as_str()]),
                "{action} on {queue}"
            );
        }
    }
    for (process, grants) in &roles {
        for (action, on) in grants.iter().filter(|(a, _)| a.starts_with("sqs:")) {
            let own = ConsumerGroup::parse(process).map(|g| format!("{}Queue.Arn", logical(g)));
            assert_eq!(Some(on), own.as_ref(), "{process} has {action} on {on}");
        }
    }

    // Only the relay reads the stream, keeps checkpoints, indexes the feed and publishes.
    let relay = set(&["relay"]);
    for (action, on) in [
        ("dynamodb:DescribeStream", "EventsTable.StreamArn"),
        ("dynamodb:GetShardIterator", "EventsTable.StreamArn"),
        ("dynamodb:GetRecords", "EventsTable.StreamArn"),
        ("dynamodb:ListStreams", "*"),
        ("dynamodb:PutItem", "RelayTable.Arn"),
        ("dynamodb:PutItem", "FeedTable.Arn"),
        ("events:PutEvents", "Bus.Arn"),
    ] {
        assert_eq!(who_may(&roles, action, on), relay, "{action} on {on}");
    }
    assert!(
        roles["relay"]
            .iter()
            .all(|(a, on)| !on.starts_with("EventsTable.Arn") && !a.starts_with("kms:")),
        "the relay neither reads events from the table nor opens personal data: {:?}",
        roles["relay"]
    );

    // Commands (appending events, recording idempotency, creating and erasing keys) run in
    // serve, in the notifications worker (marking deliveries) and in the process managers.
    let commands = set(&["serve", "notifications", "process-managers"]);
    for (action, on) in [
        ("dynamodb:PutItem", "EventsTable.Arn"),
        ("dynamodb:ConditionCheckItem", "EventsTable.Arn"),
        ("dynamodb:PutItem", "IdempotencyTable.Arn"),
        ("dynamodb:UpdateItem", "KeysTable.Arn"),
        ("kms:GenerateDataKey", "DataKeysKey.Arn"),
    ] {
        assert_eq!(who_may(&roles, action, on), commands, "{action} on {on}");
    }
    // Every process but the relay opens personal data.
    let readers: BTreeSet<String> = processes().into_iter().filter(|p| p != "relay").collect();
    assert_eq!(who_may(&roles, "kms:Decrypt", "DataKeysKey.Arn"), readers);
    assert_eq!(
        who_may(&roles, "dynamodb:GetItem", "KeysTable.Arn"),
        readers
    );

    // The four projections write the read models; serve and the process managers read them.
    let projections: BTreeSet<String> = consumers
        .iter()
        .filter(|g| *g != "process-managers")
        .cloned()
        .collect();
    for table in [
        "ReadModelDocsTable.Arn",
        "ReadModelIndexTable.Arn",
        "ReadModelStateTable.Arn",
    ] {
        assert_eq!(
            who_may(&roles, "dynamodb:PutItem", table),
            projections,
            "{table}"
        );
        assert_eq!(
            who_may(&roles, "dynamodb:DeleteItem", table),
            projections,
            "{table}"
        );
        assert_eq!(who_may(&roles, "dynamodb:Query", table), readers, "{table}");
    }
    // Analysts read the feed through serve, by position and by hour.
    let serve = set(&["serve"]);
    assert_eq!(who_may(&roles, "dynamodb:Query", "FeedTable.Arn"), serve);
    assert_eq!(
        who_may(&roles, "dynamodb:Query", "${FeedTable.Arn}/index/by_hour"),
        serve
    );

    // Only the notifications worker sends mail, from its verified identity.
    let identity =
        "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${MailIdentity}";
    for (process, grants) in &roles {
        let mail: BTreeSet<&str> = grants
            .iter()
            .filter(|(action, _)| action.starts_with("ses:"))
            .map(|(_, on)| on.as_str())
            .collect();
        let expected = if process == "notifications" {
            BTreeSet::from([identity])
        } else {
            BTreeSet::new()
        };
        assert_eq!(mail, expected, "{process} sends mail");
    }

    // Nobody deletes or scans what the read models are rebuilt from.
    for (process, grants) in &roles {
        for (action, on) in grants {
            let source = ["EventsTable", "IdempotencyTable", "FeedTable", "KeysTable"]
                .iter()
                .any(|t| on.starts_with(t));
            assert!(
                !(source && (action == "dynamodb:DeleteItem" || action == "dynamodb:Scan")),
                "{process} may {action} on {on}"
            );
            assert!(
                !matches!(
                    action.as_str(),
                    "dynamodb:BatchWriteItem" | "dynamodb:DeleteTable" | "dynamodb:Scan"
                ),
                "{process} may {action} on {on}"
            );
        }
    }
}

#[test]
fn secrets_reach_exactly_the_tasks_that_read_them() {
    let template = template();
    let tasks = task_definitions(&template);
    let stripe_key = ("STRIPE_SECRET_KEY", "StripeSecretKeySecret");
    let expected: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::from([
        (
            "serve",
            vec![
                ("BACKBONE_JWT_SECRET", "JwtSecret"),
                ("BACKBONE_PSEUDONYM_SECRET", "PseudonymSecret"),
                stripe_key,
                ("STRIPE_WEBHOOK_SECRET", "StripeWebhookSecret"),
            ],
        ),
        // Refunds, and cancelling the intents of expired orders.
        ("process-managers", vec![stripe_key]),
    ]);
    for (process, (id, task)) in &tasks {
        let container = &task["Properties"]["ContainerDefinitions"][0];
        let secrets = named(&container["Secrets"]);
        let wanted: BTreeMap<String, String> = expected
            .get(process.as_str())
            .into_iter()
            .flatten()
            .map(|(name, secret)| ((*name).to_owned(), (*secret).to_owned()))
            .collect();
        assert_eq!(secrets, wanted, "the secrets of {process} ({id})");
        let environment = named(&container["Environment"]);
        for name in secrets.keys() {
            assert!(
                !environment.contains_key(name),
                "{process}: {name} in plain text too"
            );
        }
    }
    // The Stripe secrets are injected only when paying through Stripe: a task cannot start on
    // a secret without a value.
    let serve = &tasks["serve"].1["Properties"]["ContainerDefinitions"][0]["Secrets"];
    let conditional: Vec<&Value> = list(serve)
        .into_iter()
        .filter_map(|s| s["Fn::If"].as_array())
        .map(|branches| &branches[0])
        .collect();
    assert_eq!(
        conditional,
        [&json!("PaysWithStripe"), &json!("PaysWithStripe")]
    );

    // Every secret the tasks read, and no other, is readable by the execution role.
    let injected: BTreeSet<String> = expected
        .values()
        .flatten()
        .map(|(_, s)| (*s).to_owned())
        .collect();
    let execution_roles: BTreeSet<String> = tasks
        .values()
        .map(|(_, task)| target(&task["Properties"]["ExecutionRoleArn"]))
        .collect();
    let mut readable = BTreeSet::new();
    for role in &execution_roles {
        for (action, on) in grants(&template, role.strip_suffix(".Arn").unwrap()) {
            if action == "secretsmanager:GetSecretValue" {
                readable.insert(on);
            }
        }
    }
    assert_eq!(readable, injected);

    // The template never sets the Stripe values, so an update keeps what was put; the JWT and
    // pseudonym secrets are generated.
    for (id, secret) in of_type(&template, "AWS::SecretsManager::Secret") {
        let properties = &secret["Properties"];
        assert!(
            properties.get("SecretString").is_none(),
            "{id} sets a value"
        );
        let generated = properties.get("GenerateSecretString").is_some();
        assert_eq!(generated, !id.starts_with("Stripe"), "{id}");
    }
}

#[test]
fn the_services_need_an_image_and_the_load_balancer_its_subnets() {
    let template = template();
    let compute = [
        "AWS::ECS::",
        "AWS::Logs::",
        "AWS::EC2::",
        "AWS::ElasticLoadBalancingV2::",
        "AWS::CloudFormation::WaitConditionHandle",
        "AWS::IAM::ManagedPolicy",
    ];
    let backup_role = &of_type(&template, "AWS::Backup::BackupSelection")[0].1["Properties"]
        ["BackupSelection"]["IamRoleArn"];
    let backup_role = target(backup_role);
    for (id, resource) in resources(&template) {
        let kind = resource["Type"].as_str().unwrap();
        let is_compute = compute.iter().any(|c| kind.starts_with(c))
            || (kind == "AWS::IAM::Role" && backup_role != format!("{id}.Arn"));
        let condition = resource["Condition"].as_str();
        if kind.starts_with("AWS::ElasticLoadBalancingV2::") || id.starts_with("LoadBalancer") {
            assert_eq!(condition, Some("HasLoadBalancer"), "{id}");
        } else if is_compute {
            assert!(
                matches!(condition, Some("HasServices" | "HasLoadBalancer")),
                "{id} ({kind}) is deployed without an image: {condition:?}"
            );
        } else {
            assert_ne!(condition, Some("HasServices"), "{id} is data plane");
        }
    }
    let conditions = &template["Conditions"];
    assert_eq!(
        conditions["HasServices"]["Fn::And"][0],
        json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "ImageUri"}, ""]}]})
    );
    assert_eq!(
        conditions["HasLoadBalancer"]["Fn::And"][0],
        json!({"Condition": "HasServices"})
    );

    // The load balancer checks serve where the API answers it.
    let [(_, group)] = of_type(&template, "AWS::ElasticLoadBalancingV2::TargetGroup")[..] else {
        panic!("one target group")
    };
    assert_eq!(group["Properties"]["HealthCheckPath"], "/readyz");
    assert_eq!(group["Properties"]["Port"], 8080);
    let serve = &task_definitions(&template)["serve"].1["Properties"]["ContainerDefinitions"][0];
    assert_eq!(
        named(&serve["Environment"])["BACKBONE_LISTEN"],
        "0.0.0.0:8080"
    );
    assert_eq!(serve["PortMappings"][0]["ContainerPort"], 8080);
    let [(_, log_group)] = of_type(&template, "AWS::Logs::LogGroup")[..] else {
        panic!("one log group")
    };
    assert_eq!(
        log_group["Properties"]["RetentionInDays"],
        json!({"Ref": "LogRetentionDays"})
    );
}

// ---- deployed into moto ----

/// A call in AWS's JSON protocol to moto (ECS, CloudWatch Logs), whose SDKs this crate does not
/// use; moto routes a request by the service its signature's scope names.
async fn moto_json(service: &str, target: &str, body: Value) -> Value {
    let request = moto_request(service, "application/x-amz-json-1.1")
        .header("X-Amz-Target", target)
        .body(body.to_string());
    let text = success_text(request, target).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{target}: {e}: {text}"))
}

/// A request to moto, signed for `service`, with a body of `content_type`.
fn moto_request(service: &str, content_type: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(&moto::moto().endpoint)
        .header("Content-Type", content_type)
        .header("Authorization", authorization(service))
}

/// Sends `request`, which must succeed, and returns the answer's body; `what` names the call.
async fn success_text(request: reqwest::RequestBuilder, what: &str) -> String {
    let answer = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = answer.status();
    let text = answer.text().await.expect("an answer");
    assert!(status.is_success(), "{what}: {status} {text}");
    text
}

/// A call in AWS's query protocol to moto (Elastic Load Balancing v2), answered in XML.
async fn moto_query(service: &str, form: &[(&str, &str)]) -> String {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let request = moto_request(service, "application/x-www-form-urlencoded").body(body);
    success_text(request, &format!("{form:?}")).await
}

fn authorization(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

/// Deploys `body` as a stack of its own and returns its outputs.
async fn deploy(
    cfn: &aws_sdk_cloudformation::Client,
    name: &str,
    body: &str,
) -> BTreeMap<String, String> {
    cfn.create_stack()
        .stack_name(name)
        .template_body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {e:?}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stack = moto::describe_stack(cfn, name).await;
        let status = stack.stack_status().map(|s| s.as_str()).unwrap_or_default();
        if !status.ends_with("_IN_PROGRESS") {
            assert_eq!(status, "CREATE_COMPLETE", "{name}: {stack:?}");
            return stack
                .outputs()
                .iter()
                .map(|o| {
                    (
                        o.output_key().unwrap().to_owned(),
                        o.output_value().unwrap().to_owned(),
                    )
                })
                .collect();
        }
        assert!(Instant::now() < deadline, "{name} still {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A VPC with two subnets in two zones, for the tasks and the load balancer.
const NETWORK: &str = r#"
Resources:
  Vpc: { Type: AWS::EC2::VPC, Properties: { CidrBlock: 10.0.0.0/16 } }
  A: { Type: AWS::EC2::Subnet, Properties: { VpcId: !Ref Vpc, CidrBlock: 10.0.1.0/24, AvailabilityZone: us-east-1a } }
  B: { Type: AWS::EC2::Subnet, Properties: { VpcId: !Ref Vpc, CidrBlock: 10.0.2.0/24, AvailabilityZone: us-east-1b } }
Outputs:
  VpcId: { Value: !Ref Vpc }
  SubnetIds: { Value: !Join [",", [!Ref A, !Ref B]] }
"#;

/// The stack's resources by logical id: (type, physical id). moto also lists the resources it
/// skipped, without an id.
async fn stack_resources(
    cfn: &aws_sdk_cloudformation::Client,
    stack: &str,
) -> BTreeMap<String, (String, String)> {
    cfn.describe_stack_resources()
        .stack_name(stack)
        .send()
        .await
        .expect("describe_stack_resources")
        .stack_resources()
        .iter()
        .filter_map(|r| {
            Some((
                r.logical_resource_id()?.to_owned(),
                (
                    r.resource_type()?.to_owned(),
                    r.physical_resource_id().unwrap_or_default().to_owned(),
                ),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_system_deploys_with_its_services_and_load_balancer() {
    let config = moto::sdk_config().await;
    let cfn = aws_sdk_cloudformation::Client::new(&config);
    let names = moto::fresh_names();
    let stage = names.stage.as_str();
    let network = deploy(&cfn, &format!("network-{stage}"), NETWORK).await;
    let image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/backbone:1.2.3";
    let mail_from = "Shop <orders@shop.example>";
    let spec = StackSpec::for_stage(stage)
        .with_parameter("ImageUri", image)
        .with_parameter("VpcId", &network["VpcId"])
        .with_parameter("SubnetIds", &network["SubnetIds"])
        .with_parameter("LoadBalancerSubnetIds", &network["SubnetIds"])
        .with_parameter("MailFrom", mail_from)
        .with_parameter("MailIdentity", "shop.example");
    let deployed = provision(&cfn, &spec)
        .await
        .unwrap_or_else(|e| panic!("deploying the whole system into moto: {e}"));
    assert_eq!(deployed.change, StackChange::Created);
    assert_eq!(deployed.outputs.disagreements(&names), Vec::<String>::new());
    let api = deployed
        .outputs
        .get("ApiUrl")
        .expect("the load balancer's URL");
    assert!(
        api.starts_with("http://") && api.ends_with(".elb.amazonaws.com"),
        "{api}"
    );
    let key = deployed
        .outputs
        .get("DataKeysKeyArn")
        .expect("the data keys' KMS key");

    let created = stack_resources(&cfn, &spec.stack_name).await;
    let count = |kind: &str| created.values().filter(|(k, _)| k == kind).count();
    let processes = processes();
    assert_eq!(count("AWS::ECS::Cluster"), 1);
    assert_eq!(count("AWS::ECS::Service"), processes.len());
    assert_eq!(count("AWS::ECS::TaskDefinition"), processes.len());
    assert_eq!(count("AWS::Logs::LogGroup"), 1);
    assert_eq!(
        count("AWS::IAM::Role"),
        processes.len() + 2,
        "task roles, execution, backup"
    );
    assert_eq!(count("AWS::ElasticLoadBalancingV2::LoadBalancer"), 1);
    assert_eq!(count("AWS::ElasticLoadBalancingV2::Listener"), 1);
    assert_eq!(count("AWS::KMS::Key"), 1);

    // The key the tasks wrap data keys with. (moto keeps a key policy from a template as an
    // object and then fails on every call that checks it, DescribeKey included: list it.)
    let kms = aws_sdk_kms::Client::new(&config);
    let keys = kms.list_keys().limit(1000).send().await.expect("list_keys");
    assert!(
        keys.keys().iter().any(|k| k.key_arn() == Some(key)),
        "{key} in {keys:?}"
    );

    // Each process runs as a service of the stage's cluster, with its command, settings,
    // secrets (by name: moto drops where they come from), logs and health check.
    let cluster = format!("backbone-{stage}");
    let services = moto_json(
        "ecs",
        "AmazonEC2ContainerServiceV20141113.DescribeServices",
        json!({ "cluster": cluster, "services": processes }),
    )
    .await;
    let services = services["services"].as_array().expect("services");
    assert_eq!(services.len(), processes.len(), "{services:?}");
    let template = template();
    let declared = task_definitions(&template);
    for service in services {
        let process = service["serviceName"].as_str().unwrap();
        let expected_count = if process == "serve" { 2 } else { 1 };
        assert_eq!(service["desiredCount"], expected_count, "{process}");
        let (task_id, _) = declared[process];
        assert_eq!(
            service["taskDefinition"].as_str(),
            Some(created[task_id].1.as_str()),
            "{process}"
        );
        let task = moto_json(
            "ecs",
            "AmazonEC2ContainerServiceV20141113.DescribeTaskDefinition",
            json!({ "taskDefinition": service["taskDefinition"] }),
        )
        .await;
        let container = &task["taskDefinition"]["containerDefinitions"][0];
        assert_eq!(container["image"], image, "{process}");
        let command: Vec<&str> = container["command"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let environment: BTreeMap<&str, &str> = container["environment"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| !e.is_null())
            .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
            .collect();
        let secrets: BTreeSet<&str> = container["secrets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["name"].as_str())
            .collect();
        assert_eq!(environment["BACKBONE_STAGE"], stage, "{process}");
        let probe = container["healthCheck"]["command"].as_array().unwrap();
        assert_eq!(
            probe[..3],
            [json!("CMD"), json!("backbone"), json!("probe")],
            "{process}"
        );
        match process {
            "serve" => {
                assert_eq!(command, ["serve"]);
                assert_eq!(environment["BACKBONE_BACKEND"], "aws");
                assert_eq!(environment["BACKBONE_PAYMENTS"], "stripe");
                assert_eq!(environment["BACKBONE_NO_DEMO"], "true");
                assert_eq!(environment["BACKBONE_KMS_KEY_ID"], key);
                assert!(
                    !environment.contains_key("BACKBONE_JWKS_URL"),
                    "unset without JwksUrl"
                );
                assert_eq!(
                    secrets,
                    BTreeSet::from([
                        "BACKBONE_JWT_SECRET",
                        "BACKBONE_PSEUDONYM_SECRET",
                        "STRIPE_SECRET_KEY",
                        "STRIPE_WEBHOOK_SECRET"
                    ])
                );
            }
            "relay" => {
                assert_eq!(command, ["relay"]);
                assert!(secrets.is_empty());
            }
            group => {
                assert_eq!(command, ["worker", group]);
                assert_eq!(environment["BACKBONE_KMS_KEY_ID"], key, "{group}");
                let stripe: BTreeSet<&str> = if group == "process-managers" {
                    BTreeSet::from(["STRIPE_SECRET_KEY"])
                } else {
                    BTreeSet::new()
                };
                assert_eq!(secrets, stripe, "{group}");
                if group == "notifications" {
                    assert_eq!(environment["BACKBONE_NOTIFY"], "ses");
                    assert_eq!(environment["BACKBONE_MAIL_FROM"], mail_from);
                }
            }
        }
        if process != "serve" {
            // Their health check probes the ops listener they serve.
            let ops = environment["BACKBONE_OPS_LISTEN"];
            assert_eq!(probe[3], format!("http://{ops}/readyz"), "{process}");
        }
        let logs = &container["logConfiguration"];
        assert_eq!(logs["logDriver"], "awslogs", "{process}");
        assert_eq!(
            logs["options"]["awslogs-group"],
            cluster.as_str(),
            "{process}"
        );
        assert_eq!(logs["options"]["awslogs-stream-prefix"], process);
    }

    let groups = moto_json(
        "logs",
        "Logs_20140328.DescribeLogGroups",
        json!({ "logGroupNamePrefix": cluster }),
    )
    .await;
    assert_eq!(groups["logGroups"][0]["logGroupName"], cluster.as_str());
    assert_eq!(groups["logGroups"][0]["retentionInDays"], 30, "{groups}");

    let balancer = &created["LoadBalancer"].1;
    let target_groups = moto_query(
        "elasticloadbalancing",
        &[
            ("Action", "DescribeTargetGroups"),
            ("Version", "2015-12-01"),
            ("LoadBalancerArn", balancer),
        ],
    )
    .await;
    for expected in [
        "<HealthCheckPath>/readyz</HealthCheckPath>",
        "<Port>8080</Port>",
        "<TargetType>ip</TargetType>",
    ] {
        assert!(
            target_groups.contains(expected),
            "{expected} in {target_groups}"
        );
    }

    // Provisioning the stage again with its name only keeps its services (and changing one
    // parameter changes only that).
    let again = provision(
        &cfn,
        &StackSpec::for_stage(stage).with_parameter("ApiDesiredCount", "3"),
    )
    .await
    .expect("provisioning again");
    assert_eq!(again.change, StackChange::Updated);
    assert_eq!(again.outputs.get("ApiUrl"), Some(api));
    let services = moto_json(
        "ecs",
        "AmazonEC2ContainerServiceV20141113.DescribeServices",
        json!({ "cluster": cluster, "services": ["serve", "catalog"] }),
    )
    .await;
    let counts: Vec<&Value> = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["desiredCount"])
        .collect();
    assert_eq!(counts, [&json!(3), &json!(1)], "{services}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_without_an_image_deploys_its_data_plane_only() {
    let (names, deployed) = moto::fresh_stack().await;
    assert_eq!(deployed.outputs.disagreements(&names), Vec::<String>::new());
    assert!(deployed.outputs.get("ApiUrl").is_none());
    let cfn = aws_sdk_cloudformation::Client::new(&moto::sdk_config().await);
    let created = stack_resources(&cfn, &format!("backbone-{}", names.stage)).await;
    let kinds: BTreeSet<&str> = created.values().map(|(kind, _)| kind.as_str()).collect();
    for kind in &kinds {
        assert!(
            ![
                "AWS::ECS::",
                "AWS::Logs::",
                "AWS::EC2::",
                "AWS::ElasticLoadBalancingV2::"
            ]
            .iter()
            .any(|c| kind.starts_with(c)),
            "{kind} without an image: {kinds:?}"
        );
    }
    assert!(
        kinds.contains("AWS::KMS::Key"),
        "the data keys' key is data plane: {kinds:?}"
    );
}
