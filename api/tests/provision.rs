//! `backbone provision` against moto: the binary deploys its built-in template as the stage's
//! stack, a second run updates that stack in place, and the adapters find every table and
//! queue under the names they use.

#[path = "../../infrastructure/tests/support/moto.rs"]
mod moto;

use std::process::{Command, Output};

/// Runs `backbone provision` with `args` against this binary's moto.
fn provision(args: &[&str]) -> Output {
    backbone(&[&["provision"], args].concat())
}

/// Runs `backbone` with `args` against this binary's moto.
fn backbone(args: &[&str]) -> Output {
    let endpoint = &moto::moto().endpoint;
    Command::new(env!("CARGO_BIN_EXE_backbone"))
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("BACKBONE_STAGE")
        .env_remove("BACKBONE_STACK_NAME")
        .output()
        .expect("run backbone provision")
}

/// Runs `backbone provision` with `args` and asserts that it succeeded and logged `expected`.
fn provision_logs(args: &[&str], expected: &str) {
    let out = provision(args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(expected), "{}", stderr(&out));
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_creates_the_stack_then_updates_it_and_the_adapters_find_their_resources() {
    let names = moto::fresh_names();
    let stack = format!("backbone-{}", names.stage);
    let stage = ["--stage", names.stage.as_str()];
    provision_logs(&stage, &format!("stack {stack} created"));
    let lag = ["--parameter", "ProjectionLagSeconds=120"];
    provision_logs(
        &[&stage[..], &lag].concat(),
        &format!("stack {stack} updated"),
    );

    // The analysts' export reads the stage's durable feed: empty on a new stage.
    let export = backbone(&[
        "events",
        "export",
        "--backend",
        "aws",
        "--stage",
        &names.stage,
    ]);
    assert!(export.status.success(), "{}", stderr(&export));
    assert!(export.stdout.is_empty(), "a new stage exports nothing");

    let sdk = moto::sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    moto::assert_tables_exist(&dynamodb, &names).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    for g in &names.groups {
        for queue in [&g.queue, &g.dlq] {
            sqs.get_queue_url()
                .queue_name(queue)
                .send()
                .await
                .unwrap_or_else(|e| panic!("queue {queue} missing: {e}"));
        }
    }
    let cfn = aws_sdk_cloudformation::Client::new(&sdk);
    let described = cfn
        .describe_stacks()
        .stack_name(&stack)
        .send()
        .await
        .expect("describe_stacks");
    let lag = described.stacks()[0]
        .parameters()
        .iter()
        .find(|p| p.parameter_key() == Some("ProjectionLagSeconds"))
        .and_then(|p| p.parameter_value());
    assert_eq!(lag, Some("120"), "the --parameter reached the stack");
}

#[test]
fn stage_comes_only_from_the_stage_flag() {
    let out = provision(&["--stage", "dev", "--parameter", "Stage=prod"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Stage comes from --stage"),
        "{}",
        stderr(&out)
    );
}
