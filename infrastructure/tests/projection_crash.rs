//! Projections survive a crash: a child process runs checkouts while all four projection
//! runners tail the feed into the SQLite read models; the parent SIGKILLs it mid-run, reopens
//! both files, lets the projections catch up from their checkpoints, and checks that the read
//! models equal a clean rebuild from position 0 into a fresh file.
//!
//! The child is this test binary re-executed with [`CHILD_ENV`] set.

#[path = "support/shop.rs"]
mod shop;

#[path = "support/child.rs"]
mod child;
use child::child_test;

#[path = "support/history.rs"]
mod history;
use history::rebuild_every_projection;

use commands::FeedCursor;
use commands::{
    Caller, CheckoutInput, CommandContext, CommandService, EventStore, NewProduct, ServiceConfig,
    Shop, SystemClock,
};
use domain::{CustomerId, Money, ProductId, Quantity};
use infrastructure::simulated::SimulatedGateway;
use infrastructure::sqlite::SqliteReadModelStore;
use infrastructure::sqlite::{SqliteEventStore, SqliteOptions};
use projections::runner::{ProjectionRunner, StepOutcome};
use projections::{all_projections, ReadModelStore};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "BACKBONE_PROJECTION_CRASH_CHILD_DIR";
const CHILD_TEST: &str = "projection_crash_child_process";

fn ctx() -> CommandContext {
    shop::context("crash")
}

fn open(dir: &Path) -> (Arc<dyn EventStore>, Arc<SqliteReadModelStore>) {
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(dir.join("events.sqlite"), SqliteOptions::default())
            .expect("open events"),
    );
    let models =
        Arc::new(SqliteReadModelStore::open(dir.join("readmodels.sqlite")).expect("open models"));
    (store, models)
}

fn runners(
    store: &Arc<dyn EventStore>,
    models: &Arc<SqliteReadModelStore>,
) -> Vec<Arc<ProjectionRunner>> {
    all_projections()
        .into_iter()
        .map(|p| {
            Arc::new(ProjectionRunner::new(
                store.clone(),
                models.clone() as Arc<dyn ReadModelStore>,
                p,
                50,
            ))
        })
        .collect()
}

#[test]
fn projection_crash_child_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(child(Path::new(&dir).to_path_buf()));
}

async fn child(dir: std::path::PathBuf) {
    let (store, models) = open(&dir);
    let svc = Arc::new(CommandService::new(
        store.clone(),
        Arc::new(SystemClock),
        ServiceConfig::default(),
    ));
    let shop = Arc::new(Shop::new(svc, Arc::new(SimulatedGateway::new())));
    for p in 0..5 {
        shop.create_product(
            &ctx(),
            NewProduct {
                product_id: ProductId::parse(&format!("p{p}")).expect("id"),
                name: format!("Product {p}"),
                category: format!("cat{}", p % 2),
                price: Money::parse("3.00", "EUR").expect("money"),
                initial_stock: 1_000_000,
            },
        )
        .await
        .expect("product");
    }
    for runner in runners(&store, &models) {
        tokio::spawn(async move {
            loop {
                match runner.step().await {
                    Ok(StepOutcome::Idle) => tokio::time::sleep(Duration::from_millis(1)).await,
                    Ok(_) => {}
                    Err(e) => panic!("projection failed in the child: {e}"),
                }
            }
        });
    }
    println!("\nSTARTED");
    let mut tasks = Vec::new();
    for t in 0..4 {
        let shop = shop.clone();
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut i = 0;
            while Instant::now() < deadline {
                let customer = CustomerId::parse(&format!("c{t}-{i}")).expect("id");
                let caller = Caller::Customer(customer.clone());
                let cart = shop
                    .open_cart(&ctx(), &customer)
                    .await
                    .expect("cart")
                    .value
                    .cart_id;
                shop.add_item(
                    &ctx(),
                    &caller,
                    &cart,
                    &format!("p{}", i % 5),
                    Quantity::parse(1).expect("q"),
                )
                .await
                .expect("add");
                shop.checkout_and_pay(
                    &ctx(),
                    &caller,
                    &cart,
                    CheckoutInput {
                        customer_email: format!("c{t}-{i}@example.com"),
                        ..shop::checkout_input()
                    },
                )
                .await
                .expect("checkout");
                println!("ACK {t}-{i}");
                i += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn catch_up(store: &Arc<dyn EventStore>, models: &Arc<SqliteReadModelStore>) {
    for runner in runners(store, models) {
        while runner.step().await.expect("step") != StepOutcome::Idle {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn projections_restarted_after_a_crash_equal_a_clean_rebuild() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = child_test(CHILD_TEST)
        .env(CHILD_ENV, dir.path())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut acks = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if line.starts_with("ACK ") {
            acks += 1;
            if acks == 60 {
                break;
            }
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert_eq!(
        acks, 60,
        "the child acknowledged checkouts before it was killed"
    );

    let (store, models) = open(dir.path());
    // The embedded feed has one partition: cursors count its events.
    let head = store.head().await.expect("head").count();
    assert!(head > 0);
    let before: Vec<u64> = {
        let mut v = Vec::new();
        for p in all_projections() {
            v.push(
                models
                    .checkpoint(p.name())
                    .await
                    .expect("checkpoint")
                    .count(),
            );
        }
        v
    };
    assert!(
        before.iter().any(|&c| c > 0),
        "the projections had made progress before the crash: {before:?}"
    );
    catch_up(&store, &models).await;
    for p in all_projections() {
        assert_eq!(
            models.checkpoint(p.name()).await.expect("checkpoint"),
            FeedCursor::at(head)
        );
    }
    let incremental = models.dump().expect("dump");

    let fresh = Arc::new(
        SqliteReadModelStore::open(dir.path().join("rebuilt.sqlite")).expect("fresh models"),
    );
    rebuild_every_projection(store.clone(), fresh.clone(), 1_000, "rebuild").await;
    let rebuilt = fresh.dump().expect("dump");
    assert!(!rebuilt.is_empty());
    assert_eq!(incremental.len(), rebuilt.len(), "same documents");
    assert!(
        incremental == rebuilt,
        "restarted read models equal a clean rebuild"
    );
}
