//! `backbone seed` against the real binary: the same seed gives the same shop, the history has
//! the mix of outcomes a live shop has, `backbone rebuild all` works on it, and `serve` starts
//! on it with its read models caught up. On AWS it writes the stage's tables (moto).

#[path = "../../infrastructure/tests/support/moto.rs"]
mod moto;
#[path = "support/process.rs"]
mod process;

use commands::EventEnvelope;
use process::{
    backbone, catalog_size, embedded_serve_args, projections, rebuild_of, table_items, until_ok,
    Process,
};
use std::collections::BTreeMap;
use std::path::Path;

fn seed(dir: &Path, seed: &str) -> String {
    let out = backbone(&[
        "seed",
        "--orders",
        "150",
        "--seed",
        seed,
        "--data",
        dir.to_str().expect("utf-8"),
    ]);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn export(dir: &Path) -> Vec<EventEnvelope> {
    let out = backbone(&["events", "export", "--data", dir.to_str().expect("utf-8")]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("an envelope per line"))
        .collect()
}

/// What a history is, without the ids the shop makes anew on every run: each event's stream
/// type, type, time, and its amounts.
fn shape(events: &[EventEnvelope]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let payload = e.payload.to_value();
            let amount = ["total", "amount", "amount_refunded_total"]
                .iter()
                .find_map(|k| payload.get(*k))
                .map(|a| a.to_string())
                .unwrap_or_default();
            format!(
                "{} {} {} {amount}",
                e.stream_type.as_str(),
                e.event_type,
                e.occurred_at.to_rfc3339()
            )
        })
        .collect()
}

/// `serve` on the data directory `data`, ready, with an admin's token for it.
async fn serve_on(data: &str) -> (Process, String, String) {
    let server = Process::spawn(&[&embedded_serve_args(data)[..], &["--no-demo"]].concat());
    let api = server.address("serving the HTTP API");
    until_ok(&format!("{api}/readyz")).await;
    let token = backbone(&["token", "--sub", "ops", "--role", "admin", "--data", data]).stdout;
    let token = String::from_utf8(token).expect("utf-8").trim().to_owned();
    (server, api, token)
}

fn count(events: &[EventEnvelope], event_type: &str) -> usize {
    events.iter().filter(|e| e.event_type == event_type).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_gives_the_same_shop_which_rebuilds_and_serves() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let report = seed(a.path(), "7");
    assert_eq!(seed(b.path(), "7"), report, "the same report");
    assert!(!report.contains("notifications: 0"), "{report}");
    seed(c.path(), "8");
    let (first, second, other) = (export(a.path()), export(b.path()), export(c.path()));
    assert_eq!(
        shape(&first),
        shape(&second),
        "the same seed, the same history"
    );
    assert_ne!(
        shape(&first),
        shape(&other),
        "another seed, another history"
    );
    assert_ne!(
        first[first.len() - 1].event_id,
        second[second.len() - 1].event_id,
        "ids are new on every run"
    );

    // The mix of a live shop, made by the real flows (the process managers included).
    let by_type: BTreeMap<&str, usize> = first.iter().fold(BTreeMap::new(), |mut m, e| {
        *m.entry(e.event_type.as_str()).or_default() += 1;
        m
    });
    assert_eq!(count(&first, "OrderPlaced"), 150, "{by_type:?}");
    assert_eq!(count(&first, "ProductCreated"), 50, "{by_type:?}");
    let paid = count(&first, "OrderPaid");
    assert!((100..=140).contains(&paid), "about 80 % paid: {by_type:?}");
    for (event_type, at_least) in [
        ("CartOpened", 151),
        ("PaymentFailed", 1),
        ("OrderExpired", 1),
        ("PaymentRefunded", 1),
        ("PaymentDisputed", 1),
        ("OrderShipped", 1),
        ("OrderDelivered", 1),
        ("StockReleased", 1),
    ] {
        assert!(
            by_type.get(event_type).copied().unwrap_or(0) >= at_least,
            "{event_type}: {by_type:?}"
        );
    }
    // Every order was paid, possibly after a declined card, or expired: none is left waiting.
    assert!(count(&first, "OrderPaymentFailed") >= 1, "{by_type:?}");
    assert_eq!(paid + count(&first, "OrderExpired"), 150, "{by_type:?}");

    // `rebuild all` on the fresh history.
    let rebuilt = backbone(&["rebuild", "all", "--data", a.path().to_str().unwrap()]);
    let rebuilt = String::from_utf8_lossy(&rebuilt.stderr);
    assert!(
        rebuilt.contains(&format!("from {} events", first.len())),
        "{rebuilt}"
    );

    // The notifications the history caused are recorded as delivered, and nothing was sent.
    assert!(
        count(&first, "NotificationDelivered") >= 150,
        "a confirmation per order at least: {by_type:?}"
    );

    // `serve` starts on it: ready (every projection caught up), the catalog listed, and no
    // backlog of seeded mail to send.
    let (server, api, _) = serve_on(a.path().to_str().unwrap()).await;
    let catalog: serde_json::Value =
        serde_json::from_str(&until_ok(&format!("{api}/v1/catalog/products?limit=100")).await)
            .expect("json");
    assert_eq!(
        catalog["products"].as_array().map(Vec::len),
        Some(50),
        "{catalog}"
    );
    // The delivery worker runs at start and then every few seconds.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let outbox = a.path().join("outbox");
    let sent = std::fs::read_dir(&outbox).map(|d| d.count()).unwrap_or(0);
    assert_eq!(sent, 0, "serve sent {sent} seeded notifications");
    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_an_aws_stage_writes_its_tables() {
    let names = moto::fresh_names();
    backbone(&["provision", "--stage", &names.stage]);
    backbone(&[
        "seed",
        "--orders",
        "12",
        "--backend",
        "aws",
        "--stage",
        &names.stage,
    ]);
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto::sdk_config().await);
    let placed = table_items(&dynamodb, &names.events_table)
        .await
        .iter()
        .filter(|item| {
            item.get("event_type")
                .and_then(|v| v.as_s().ok())
                .is_some_and(|t| t == "OrderPlaced")
        })
        .count();
    assert_eq!(
        placed, 12,
        "every order placed is in the stage's events table"
    );
}

/// Projections catching up from zero on a seeded history, and rebuilds while the server runs,
/// send no notification, issue no command (the history does not grow) and so call no gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_history_has_no_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path(), "11");
    let data = dir.path().to_str().unwrap();
    let before = export(dir.path());
    // Every read model but the notifications (the seeder leaves those caught up) starts at zero.
    let (server, api, token) = serve_on(data).await;
    for name in ["notifications", "order_history", "support", "catalog"] {
        // One at a time.
        rebuild_while(&api, &token, name, || async {}).await;
    }
    // The delivery worker had every chance to act on the replayed notifications.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(server.stop().success());
    let sent = std::fs::read_dir(dir.path().join("outbox"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(sent, 0, "replays sent {sent} notifications");
    let after = export(dir.path());
    assert_eq!(
        after.len(),
        before.len(),
        "replays issued commands: {:?}",
        after[before.len().min(after.len())..]
            .iter()
            .map(|e| &e.event_type)
            .collect::<Vec<_>>()
    );
}

/// Rebuilds `name` on the running server at `api`, calling `during` until it is done; returns
/// how many times `during` ran.
async fn rebuild_while<F, Fut>(api: &str, token: &str, name: &str, during: F) -> usize
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let client = reqwest::Client::new();
    let answer = client
        .post(format!("{api}/v1/admin/projections/{name}/rebuild"))
        .bearer_auth(token)
        .send()
        .await
        .expect("rebuild");
    assert_eq!(answer.status(), 202, "{name}");
    rebuilt_while(api, token, name, during).await
}

/// Calls `during` until `name`'s latest rebuild is done; returns how many times it ran.
async fn rebuilt_while<F, Fut>(api: &str, token: &str, name: &str, during: F) -> usize
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut runs = 0;
    loop {
        during().await;
        runs += 1;
        let list = projections(api, token).await;
        let state = rebuild_of(&list, name)["state"].clone();
        assert_ne!(state, "failed", "{list}");
        if state == "done" {
            return runs;
        }
        assert!(std::time::Instant::now() < deadline, "{list}");
    }
}

fn live_generations(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(dir.join(api::read_models::GENERATIONS_FILE)).expect("pointer file"),
    )
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_during_a_rebuild_always_see_a_whole_read_model() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path(), "5");
    let data = dir.path().to_str().unwrap();
    let (server, api, token) = serve_on(data).await;
    let token = token.as_str();
    assert_eq!(catalog_size(&api).await, 50);
    for generation in [1, 2] {
        let runs = rebuild_while(&api, token, "catalog", || async {
            assert_eq!(
                catalog_size(&api).await,
                50,
                "a query saw a partial catalog"
            );
        })
        .await;
        assert!(runs >= 1);
        assert_eq!(
            live_generations(dir.path())["catalog"]["generation"],
            generation
        );
        assert!(dir
            .path()
            .join(format!("readmodels.catalog.{generation}.sqlite"))
            .exists());
    }
    // The replaced generation's file is gone; the other projections stayed where they were.
    assert!(!dir.path().join("readmodels.catalog.1.sqlite").exists());
    assert_eq!(live_generations(dir.path())["support"]["generation"], 0);
    assert_eq!(catalog_size(&api).await, 50);
    assert!(server.stop().success());

    // A restart serves the promoted generation.
    let (server, api, _) = serve_on(data).await;
    assert_eq!(catalog_size(&api).await, 50);
    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_projection_version_rebuilds_at_start_while_the_old_generation_serves() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path(), "6");
    let data = dir.path().to_str().unwrap();
    // The read models as an older release of the catalog projection left them.
    backbone(&["rebuild", "all", "--data", data]);
    let mut pointer = live_generations(dir.path());
    pointer["catalog"]["version"] = serde_json::json!(0);
    std::fs::write(
        dir.path().join(api::read_models::GENERATIONS_FILE),
        serde_json::to_vec(&pointer).unwrap(),
    )
    .unwrap();
    let (server, api, token) = serve_on(data).await;
    rebuilt_while(&api, &token, "catalog", || async {
        assert_eq!(
            catalog_size(&api).await,
            50,
            "the old generation serves meanwhile"
        );
    })
    .await;
    let live = live_generations(dir.path());
    assert_eq!(live["catalog"]["generation"], 1, "{live}");
    assert_eq!(live["catalog"]["version"], 1, "{live}");
    assert_eq!(live["support"]["generation"], 0, "{live}");
    assert!(server
        .logs()
        .contains("projection version changed, rebuilding"));
    assert!(server.stop().success());
}
