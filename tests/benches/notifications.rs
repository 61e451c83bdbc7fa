//! Notification delivery through the `file` channel on the embedded backend:
//! `cargo bench -p backbone-tests --bench notifications`.
//!
//! Seeds `--orders N` (default 10,000) paid orders straight into the event store and builds the
//! notifications read model from them: N pending `order_confirmed` messages. Then:
//!
//! 1. the delivery worker sends them all, in rounds of its default batch: the first half one
//!    at a time, the rest with its default concurrency. Each one is read from its own stream,
//!    written as an `.eml` to the outbox (flushed to disk) and recorded as
//!    `NotificationDelivered` under its command id. Between rounds the read model catches up
//!    (timed apart), as its projection would;
//! 2. the reference, in the same run: the same messages written by the `file` channel alone,
//!    as many in flight.
//!
//! Prints a Markdown table.

use backbone_tests::bench::{arg, paid_order, seed_orders, Embedded};
use commands::{Mailer, ManualClock};
use futures::StreamExt;
use infrastructure::mail::{parse_sender, FileMailer};
use projections::notifications::NotificationsProjection;
use projections::{ProjectionRunner, ReadModelStore, StepOutcome};
use std::sync::Arc;
use std::time::{Duration, Instant};
use workers::{compose, DeliveryWorker, DELIVERY_BATCH, DELIVERY_CONCURRENCY};

fn per_second(n: usize, d: Duration) -> String {
    format!(
        "{:.0}/s, {:.3} ms each",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64() * 1e3 / n as f64
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let orders = arg("--orders", 10_000);
    let backend = Embedded::open().await;
    let (dir, models) = (&backend.dir, &backend.models);

    let now = chrono::Utc::now();
    let started = Instant::now();
    seed_orders(backend.store.as_ref(), orders, |i| paid_order(i, now)).await;
    let runner = backend.project(Arc::new(NotificationsProjection)).await;
    let seeded = started.elapsed();

    let clock = Arc::new(ManualClock::new(now + chrono::Duration::seconds(1)));
    let shop = backend.shop(clock.clone());
    let from = parse_sender(api::notify::DEFAULT_MAIL_FROM).expect("sender");
    let outbox = dir.path().join("outbox");
    let mailer = Arc::new(FileMailer::new(&outbox, from.clone()));
    let worker = |concurrency| {
        DeliveryWorker::new(shop.clone(), models.clone(), mailer.clone(), clock.clone())
            .with_concurrency(concurrency)
    };

    // 1. The worker delivers the first half one message at a time, then the rest with its
    //    default concurrency.
    let due_at = now + chrono::Duration::seconds(1);
    let half = orders / 2;
    let serial = deliver(&worker(1), &runner, models, half, due_at).await;
    let concurrent = deliver(
        &worker(DELIVERY_CONCURRENCY),
        &runner,
        models,
        orders - half,
        due_at,
    )
    .await;
    let files = std::fs::read_dir(&outbox).expect("outbox").count();
    assert_eq!(files, orders, "one .eml per notification");

    // 2. Reference: the same messages through the channel alone, as many in flight.
    let reference = FileMailer::new(dir.path().join("reference"), from);
    let sent: Vec<_> = serial.sent.iter().chain(&concurrent.sent).collect();
    let t = Instant::now();
    let writes = sent.iter().map(|email| reference.send(email));
    let written: Vec<_> = futures::stream::iter(writes)
        .buffer_unordered(DELIVERY_CONCURRENCY)
        .collect()
        .await;
    let direct = t.elapsed();
    assert!(written.iter().all(Result::is_ok));

    println!(
        "## Notification delivery through the file channel (`cargo bench -p backbone-tests --bench notifications`)\n"
    );
    println!(
        "{orders} paid orders seeded and their notifications projected in {:.1} s.\n",
        seeded.as_secs_f64()
    );
    println!("| measurement | result |\n|---|---|");
    for (run, label) in [(&serial, "one at a time"), (&concurrent, "8 in flight")] {
        println!(
            "| the delivery worker, {label}: {} notifications in {} rounds of {DELIVERY_BATCH} | {:.2} s: {} |",
            run.sent.len(),
            run.rounds,
            run.delivering.as_secs_f64(),
            per_second(run.sent.len(), run.delivering)
        );
    }
    let caught_up = serial.catching_up + concurrent.catching_up;
    println!(
        "| the notifications read model catching up between rounds | {:.2} s: {} |",
        caught_up.as_secs_f64(),
        per_second(orders, caught_up)
    );
    println!(
        "| reference: the same {} messages written by the file channel alone, 8 in flight | {:.2} s: {} |",
        sent.len(),
        direct.as_secs_f64(),
        per_second(sent.len(), direct)
    );
}

/// One delivery run: the messages sent and where the time went.
struct Run {
    sent: Vec<commands::OutgoingEmail>,
    rounds: usize,
    delivering: Duration,
    catching_up: Duration,
}

/// Lets `worker` deliver `n` notifications; between rounds the read model catches up.
async fn deliver(
    worker: &DeliveryWorker,
    runner: &ProjectionRunner,
    models: &Arc<dyn ReadModelStore>,
    n: usize,
    due_at: chrono::DateTime<chrono::Utc>,
) -> Run {
    let mut run = Run {
        sent: Vec::with_capacity(n),
        rounds: 0,
        delivering: Duration::ZERO,
        catching_up: Duration::ZERO,
    };
    while run.sent.len() < n {
        let batch = DELIVERY_BATCH.min(n - run.sent.len());
        let due = projections::notifications::due_notifications(models.as_ref(), due_at, batch)
            .await
            .expect("due");
        let t = Instant::now();
        let round = worker.deliver(&due, due_at).await.expect("deliver");
        run.delivering += t.elapsed();
        run.rounds += 1;
        assert_eq!(round.delivered, due.len(), "{round:?}");
        run.sent.extend(due.iter().map(compose));
        let t = Instant::now();
        while let StepOutcome::Progressed { .. } = runner.step().await.expect("notifications view")
        {
        }
        run.catching_up += t.elapsed();
    }
    run
}
