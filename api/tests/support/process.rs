//! A `backbone` process started from the built binary for a CLI test, pointed at the shared moto
//! server, and the small HTTP helpers those tests poll it with. Include it next to the moto
//! support module:
//!
//! ```ignore
//! #[path = "../../infrastructure/tests/support/moto.rs"]
//! mod moto;
//! #[path = "support/process.rs"]
//! mod process;
//! ```

// Each test crate uses the part it needs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A `backbone` process, stopped (SIGTERM, then killed) when dropped, and its stderr lines.
pub struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    all: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

impl Process {
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with_env(args, &[])
    }

    /// [`Process::spawn`] with extra environment variables.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let endpoint = &super::moto::moto().endpoint;
        let mut child = Command::new(env!("CARGO_BIN_EXE_backbone"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("BACKBONE_STAGE")
            .env_remove("BACKBONE_OPS_LISTEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start backbone");
        let out = child.stdout.take().expect("stdout");
        let stdout = Arc::new(Mutex::new(String::new()));
        let printed = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                printed.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        let all = Arc::new(Mutex::new(String::new()));
        let sink = all.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line.clone() + "\n"));
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            lines,
            all,
            stdout,
        }
    }

    /// The `addr=` of the first log line containing `what`.
    pub fn address(&self, what: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(line) = self.logs().lines().find(|l| l.contains(what)) {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .unwrap_or_else(|| panic!("no addr in {line:?}"));
                return format!("http://{addr}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {what:?} line; stderr:\n{}",
                self.logs()
            );
            let _ = self.lines.recv_timeout(Duration::from_millis(100));
        }
    }

    /// The first EMF line printed on stdout that has a value for `metric`, waiting for it.
    pub fn metrics_line(&self, metric: &str) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let printed = self.stdout.lock().unwrap().clone();
            for line in printed.lines().filter(|l| l.contains("\"_aws\"")) {
                let line: serde_json::Value =
                    serde_json::from_str(line).expect("an EMF line is JSON");
                if line[metric].is_number() {
                    return line;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no EMF line with {metric} on stdout:\n{printed}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn logs(&self) -> String {
        self.all.lock().unwrap().clone()
    }

    /// SIGTERM, and the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let status = self.child.wait().expect("wait");
        assert!(
            !self.logs().contains('\u{1b}'),
            "no ANSI colours in piped logs"
        );
        status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn get(url: &str) -> (u16, String) {
    let answer = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = answer.status().as_u16();
    (status, answer.text().await.expect("body"))
}

/// Polls `url` until it answers 200.
pub async fn until_ok(url: &str) -> String {
    for _ in 0..300 {
        let (status, body) = get(url).await;
        if status == 200 {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered 200");
}

/// Runs the binary to completion against the shared moto server and asserts it succeeded.
pub fn backbone(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_backbone"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("BACKBONE_BACKEND")
        .env("AWS_ENDPOINT_URL", &super::moto::moto().endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .expect("run backbone");
    assert!(
        out.status.success(),
        "backbone {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The arguments of `serve` on the embedded data directory `data`, on a port of the system's
/// choice; a test appends its own.
pub fn embedded_serve_args(data: &str) -> Vec<&str> {
    vec!["serve", "--listen", "127.0.0.1:0", "--data", data]
}

/// The arguments of `serve` on the AWS stage `stage` with the simulated payment provider, no
/// demo catalog, a port of the system's choice and HS256 tokens signed with `jwt_secret`; a
/// test appends its own.
pub fn aws_serve_args<'a>(stage: &'a str, jwt_secret: &'a str) -> Vec<&'a str> {
    vec![
        "serve",
        "--backend",
        "aws",
        "--stage",
        stage,
        "--payments",
        "simulated",
        "--no-demo",
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        jwt_secret,
    ]
}

/// `GET /v1/admin/projections` of the server at `api`, as the admin with `token`.
pub async fn projections(api: &str, token: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{api}/v1/admin/projections"))
        .bearer_auth(token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json")
}

/// The latest rebuild of the projection `name` in a [`projections`] answer (`null`: none).
pub fn rebuild_of(projections: &serde_json::Value, name: &str) -> serde_json::Value {
    projections["projections"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .map(|p| p["rebuild"].clone())
        .unwrap_or_default()
}

/// An admin's token for a server verifying HS256 tokens with `secret`.
pub fn admin_token(secret: &str) -> String {
    api::auth::mint_hs256(
        secret.as_bytes(),
        "ops",
        api::auth::Role::Admin,
        Duration::from_secs(600),
    )
    .expect("token")
}

/// Every item of a DynamoDB table.
pub async fn table_items(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        items.extend(page.items().iter().cloned());
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return items;
        }
    }
}

/// How many products the catalog of the server at `api` lists (its first 100).
pub async fn catalog_size(api: &str) -> usize {
    let catalog: serde_json::Value = reqwest::get(format!("{api}/v1/catalog/products?limit=100"))
        .await
        .expect("catalog")
        .json()
        .await
        .expect("json");
    catalog["products"].as_array().map_or(0, Vec::len)
}
