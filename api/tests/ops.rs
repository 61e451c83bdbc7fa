//! The operations listener (`--ops-listen`) of every process, against the real binary: `serve`
//! moves `/metrics` off its API listener, and `relay` and `worker` (on moto) answer `/healthz`,
//! `/readyz` and `/metrics`. Logs piped to a file carry no ANSI colours, and every file of the
//! embedded data directory is private to its owner. A stalled worker makes `/readyz` fail.

#[path = "../../infrastructure/tests/support/moto.rs"]
mod moto;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A `backbone` process, stopped (SIGTERM, then killed) when dropped, and its stderr lines.
struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    all: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

impl Process {
    fn spawn(args: &[&str]) -> Self {
        let endpoint = &moto::moto().endpoint;
        let mut child = Command::new(env!("CARGO_BIN_EXE_backbone"))
            .args(args)
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
    fn address(&self, what: &str) -> String {
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
    fn metrics_line(&self, metric: &str) -> serde_json::Value {
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

    fn logs(&self) -> String {
        self.all.lock().unwrap().clone()
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
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

async fn get(url: &str) -> (u16, String) {
    let answer = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = answer.status().as_u16();
    (status, answer.text().await.expect("body"))
}

/// Polls `url` until it answers 200.
async fn until_ok(url: &str) -> String {
    for _ in 0..300 {
        let (status, body) = get(url).await;
        if status == 200 {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_moves_metrics_to_the_ops_listener_and_keeps_its_files_private() {
    let data = tempfile::tempdir().expect("temp dir");
    let dir = data.path().to_str().expect("utf-8 path");
    let server = Process::spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--ops-listen",
        "127.0.0.1:0",
        "--synchronous",
        "normal",
        "--data",
        dir,
    ]);
    let ops = server.address("ops endpoints listening");
    let api = server.address("serving the HTTP API");
    assert_ne!(ops, api);
    until_ok(&format!("{ops}/readyz")).await;
    let metrics = until_ok(&format!("{ops}/metrics")).await;
    assert!(metrics.contains("backbone_worker_healthy"), "{metrics}");
    assert!(
        metrics.contains("backbone_projection_lag_positions"),
        "{metrics}"
    );
    assert_eq!(get(&format!("{ops}/healthz")).await.0, 200);
    // The API's listener keeps health and readiness (a load balancer checks them), not metrics.
    assert_eq!(get(&format!("{api}/metrics")).await.0, 404);
    assert_eq!(get(&format!("{api}/readyz")).await.0, 200);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(data.path()).expect("data dir") {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_file() {
                let mode = meta.permissions().mode() & 0o777;
                let name = entry.file_name().to_string_lossy().into_owned();
                assert_eq!(mode, 0o600, "{name} is {mode:o}");
                seen.push(name);
            }
        }
        for name in [
            "events.sqlite",
            "events.sqlite-wal",
            "readmodels.sqlite",
            "workers.sqlite",
            "jwt_secret",
            "backbone.lock",
        ] {
            assert!(seen.iter().any(|s| s == name), "{name} in {seen:?}");
        }
    }
    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_worker_serve_health_readiness_and_metrics() {
    let names = moto::fresh_names();
    let provisioned = Command::new(env!("CARGO_BIN_EXE_backbone"))
        .args(["provision", "--stage", &names.stage])
        .env("AWS_ENDPOINT_URL", &moto::moto().endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .expect("provision");
    assert!(
        provisioned.status.success(),
        "{}",
        String::from_utf8_lossy(&provisioned.stderr)
    );
    for (args, worker, metric) in [
        (vec!["relay"], "relay", "RelayIteratorAgeMilliseconds"),
        (
            vec!["worker", "catalog", "--wait-secs", "1"],
            "queue:catalog",
            "ProjectionLagSeconds",
        ),
    ] {
        let mut args: Vec<&str> = args;
        args.extend([
            "--stage",
            &names.stage,
            "--ops-listen",
            "127.0.0.1:0",
            "--emf-interval",
            "1s",
        ]);
        let process = Process::spawn(&args);
        let ops = process.address("ops endpoints listening");
        assert_eq!(get(&format!("{ops}/healthz")).await.0, 200);
        let ready = until_ok(&format!("{ops}/readyz")).await;
        assert!(ready.contains(worker), "{ready}");
        let metrics = until_ok(&format!("{ops}/metrics")).await;
        assert!(
            metrics.contains(&format!("backbone_worker_healthy{{worker=\"{worker}\"}} 1")),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!("backbone_worker_stalled{{worker=\"{worker}\"}} 0")),
            "{metrics}"
        );
        // On AWS the process prints its CloudWatch metrics as EMF lines on stdout.
        let line = process.metrics_line(metric);
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "Backbone"
        );
        assert_eq!(line["Stage"], names.stage.as_str());
        assert!(line[metric].is_number(), "{metric} in {line}");
        assert!(
            process.stop().success(),
            "{args:?} stops cleanly on SIGTERM"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_makes_readyz_fail_until_its_step_ends() {
    let health = workers::Health::with_stall_after(Duration::from_millis(50));
    health.register("queue:support");
    health.caught_up("queue:support");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let cancel = workers::CancellationToken::new();
    let server = tokio::spawn(api::ops::serve(
        listener,
        api::ops::process_router(health.clone(), api::metrics::prometheus()),
        cancel.clone(),
    ));
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
    health.step_started("queue:support");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["workers"]["queue:support"]["stalled"], true, "{body}");
    let (_, metrics) = get(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("backbone_worker_stalled{worker=\"queue:support\"} 1"),
        "{metrics}"
    );
    health.step_finished("queue:support");
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
    cancel.cancel();
    server.await.expect("ops server stops");
}
