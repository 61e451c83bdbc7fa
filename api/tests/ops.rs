//! The operations listener (`--ops-listen`) of every process, against the real binary: `serve`
//! moves `/metrics` off its API listener, and `relay` and `worker` (on moto) answer `/healthz`,
//! `/readyz` and `/metrics`. Logs piped to a file carry no ANSI colours, and every file of the
//! embedded data directory is private to its owner. A stalled worker makes `/readyz` fail.

#[path = "../../infrastructure/tests/support/moto.rs"]
mod moto;

#[path = "support/process.rs"]
mod process;

use process::{backbone, embedded_serve_args, get, until_ok, Process};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_moves_metrics_to_the_ops_listener_and_keeps_its_files_private() {
    let data = tempfile::tempdir().expect("temp dir");
    let dir = data.path().to_str().expect("utf-8 path");
    let mut args = embedded_serve_args(dir);
    args.extend(["--ops-listen", "127.0.0.1:0", "--synchronous", "normal"]);
    let server = Process::spawn(&args);
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
    backbone(&["provision", "--stage", &names.stage]);
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
