//! The unpaid-order timer's cost on the embedded backend: `cargo bench -p backbone-tests --bench expiry`.
//!
//! Seeds `--orders N` (default 100,000) unpaid orders, placed one second apart, straight into
//! the event store, and builds the support read model from them. Then, with a controllable
//! clock:
//!
//! 1. a sweep when no order is due: the index query alone, whatever the number of open orders;
//! 2. sweeps that expire the `--due N` oldest orders (default 2,000), in batches of 500: the
//!    cost per expired order;
//! 3. the reference, in the same run: one `Expire` command sent directly, per order.
//!
//! Prints a Markdown table.

use backbone_tests::bench::{arg, new_event, order_placed, seed_orders, Embedded};
use commands::{Caller, CommandContext, ManualClock};
use domain::OrderCommand;
use projections::StepOutcome;
use std::sync::Arc;
use std::time::{Duration, Instant};
use workers::ExpirySweeper;

const TTL: Duration = Duration::from_secs(30 * 60);

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let orders = arg("--orders", 100_000);
    let due = arg("--due", 2_000).min(orders);
    let backend = Embedded::open().await;
    let models = backend.models.clone();

    // Orders placed one second apart, the newest now: the `due` oldest are past the TTL.
    let now = chrono::Utc::now();
    let oldest = now - chrono::Duration::seconds(orders as i64 - 1);
    let started = Instant::now();
    seed_orders(backend.store.as_ref(), orders, |i| {
        let at = oldest + chrono::Duration::seconds(i as i64);
        vec![new_event(&order_placed(i, at), at, i)]
    })
    .await;
    let runner = backend
        .project(Arc::new(projections::support::SupportProjection))
        .await;
    let seeded = started.elapsed();

    let clock = Arc::new(ManualClock::new(now));
    let shop = backend.shop(clock.clone());
    let sweeper = ExpirySweeper::new(shop.clone(), models.clone(), clock.clone(), TTL);

    // 1. Nothing due: the deadline is before the oldest order's.
    clock.advance(-chrono::Duration::seconds(
        orders as i64 + TTL.as_secs() as i64,
    ));
    let mut idle = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let sweep = sweeper.sweep().await.expect("sweep");
        idle.push(t.elapsed());
        assert_eq!(sweep.expired + sweep.skipped, 0);
    }
    idle.sort();

    // 2. The `due` oldest orders are due: sweep until they are expired.
    // The clock was `orders + TTL` before now; the order placed `orders - due` seconds before
    // now (the youngest of the due ones) reaches its deadline at `orders - due - TTL` before now.
    clock.advance(chrono::Duration::seconds(
        due as i64 + 2 * TTL.as_secs() as i64,
    ));
    // Between sweeps the support view catches up (untimed), as its projection would.
    let mut expiring = Duration::ZERO;
    let mut expired = 0;
    let mut sweeps = 0;
    while expired < due {
        let t = Instant::now();
        let sweep = sweeper.sweep().await.expect("sweep");
        expiring += t.elapsed();
        sweeps += 1;
        expired += sweep.expired;
        assert!(sweep.expired > 0, "a sweep found nothing new at {expired}");
        while let StepOutcome::Progressed { .. } = runner.step().await.expect("support view") {}
    }
    assert_eq!(expired, due, "exactly the due orders expire");

    // 3. Reference: Expire sent directly to the next orders, one by one.
    let reference_n = 500.min(orders - due);
    clock.advance(chrono::Duration::seconds(reference_n as i64));
    let t = Instant::now();
    for i in due..due + reference_n {
        shop.order_command(
            &CommandContext::default(),
            &Caller::Staff,
            &backbone_tests::bench::order_id(i),
            |_| OrderCommand::Expire {
                at: clock_now(&clock),
                unpaid_for: chrono::Duration::from_std(TTL).unwrap(),
            },
        )
        .await
        .expect("expire");
    }
    let direct = t.elapsed();

    println!(
        "## Expiry sweep on the embedded backend (`cargo bench -p backbone-tests --bench expiry`)\n"
    );
    println!(
        "{orders} open orders seeded and indexed in {:.1} s.\n",
        seeded.as_secs_f64()
    );
    println!("| measurement | result |\n|---|---|");
    println!(
        "| one sweep with {orders} open orders, none due (the index query) | p50 {}, p99 {} (50 sweeps) |",
        ms(idle[idle.len() / 2]),
        ms(idle[idle.len() * 99 / 100])
    );
    println!(
        "| expiring the {due} oldest of {orders} open orders, batches of 500 | {} in {sweeps} sweeps: {:.0} orders/s, {:.3} ms per order |",
        ms(expiring),
        due as f64 / expiring.as_secs_f64(),
        expiring.as_secs_f64() * 1e3 / due as f64
    );
    println!(
        "| reference: {reference_n} `Expire` commands sent one by one | {}: {:.3} ms per order |",
        ms(direct),
        direct.as_secs_f64() * 1e3 / reference_n as f64
    );
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<chrono::Utc> {
    commands::Clock::now(clock)
}
