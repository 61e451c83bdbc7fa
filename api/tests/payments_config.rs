//! The binary refuses to run the AWS deployment without a payment gateway: `serve --backend aws`
//! and the process-managers worker exit non-zero, naming the settings and the flag, before they
//! touch AWS.

use std::process::{Command, Output};

/// Runs the binary with no payment settings but `env`.
fn backbone(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backbone"));
    cmd.args(args);
    for var in [
        "STRIPE_SECRET_KEY",
        "STRIPE_BASE_URL",
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_WEBHOOK_SECRET_PREVIOUS",
        "BACKBONE_PAYMENTS",
        "BACKBONE_BACKEND",
    ] {
        cmd.env_remove(var);
    }
    // Nothing may be reached: an endpoint that refuses connections.
    cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("BACKBONE_JWT_SECRET", "test-secret")
        .envs(env.iter().copied())
        .output()
        .expect("run backbone")
}

fn assert_refused(out: &Output, place: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    for named in [
        place,
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "--payments simulated",
    ] {
        assert!(stderr.contains(named), "{named} missing from: {stderr}");
    }
}

#[test]
fn serve_on_aws_without_stripe_exits_with_a_message_naming_the_settings_and_the_flag() {
    let out = backbone(
        &["serve", "--backend", "aws", "--listen", "127.0.0.1:0"],
        &[],
    );
    assert_refused(&out, "serve --backend aws");
}

#[test]
fn the_process_managers_worker_without_stripe_exits_with_the_same_message() {
    let out = backbone(&["worker", "process-managers"], &[]);
    assert_refused(&out, "the process-managers worker");
}

#[test]
fn a_stripe_key_without_a_webhook_secret_is_refused_on_aws_too() {
    let out = backbone(
        &["serve", "--backend", "aws", "--listen", "127.0.0.1:0"],
        &[("STRIPE_SECRET_KEY", "sk_test_x")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains("STRIPE_WEBHOOK_SECRET is required"),
        "{stderr}"
    );
}
