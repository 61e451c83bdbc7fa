//! The unpaid-order timer: an order left unpaid for the order TTL is expired, which releases its
//! stock, cancels its payment intent and notifies the customer (the process managers and the
//! notifications read model follow the `OrderExpired` event).
//!
//! The timer is stored, not held in memory. Its deadline is the order's `placed_at`, recorded
//! in `OrderPlaced`, plus the TTL, and the support read model indexes unpaid orders by
//! `placed_at` on both backends. A sweep asks that index for the orders placed before
//! `now - ttl` and sends each one `Expire`. That makes the timer survive restarts, and lets any
//! number of sweepers run:
//!
//! - Every `Expire` of one order carries the same command id (`expire:<order id>`), so two
//!   sweepers racing on one order commit one `OrderExpired`, and the second gets the first's
//!   answer.
//! - The Order aggregate decides. A paid order refuses to expire (`invalid_transition`).
//!   Neither can an order whose deadline has not passed by the aggregate's own `placed_at`
//!   (`not_due`), even if the index is stale or a clock is skewed.
//! - A payment that lands after the expiry finds a closed order and is refunded by the process
//!   managers.
//!
//! Time comes from the sweeper's [`Clock`], so tests move it instead of sleeping.

use crate::{spawn_timer, LoopContext, Timer};
use commands::{Caller, Clock, CommandContext, CommandError, Shop};
use domain::{OrderCommand, OrderId};
use projections::{support, ReadModelStore};
use std::sync::Arc;

/// The health name of the sweeper loop.
pub const EXPIRY_WORKER: &str = "expiry";
/// How long an order may stay unpaid by default (`--order-ttl`).
pub const DEFAULT_ORDER_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// How often the sweeper looks for due orders: an order expires at most this long after its
/// deadline.
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// Orders expired per sweep at most; a full sweep is followed by another at once.
pub const SWEEP_BATCH: usize = 500;

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Orders this sweep expired.
    pub expired: usize,
    /// Due orders that did not expire: paid meanwhile, not due by the aggregate's clock, or
    /// already expired (by another sweeper, or before the read model caught up).
    pub skipped: usize,
}

/// Expires the orders left unpaid for `ttl`.
pub struct ExpirySweeper {
    shop: Arc<Shop>,
    models: Arc<dyn ReadModelStore>,
    clock: Arc<dyn Clock>,
    ttl: chrono::Duration,
    batch: usize,
}

impl ExpirySweeper {
    pub fn new(
        shop: Arc<Shop>,
        models: Arc<dyn ReadModelStore>,
        clock: Arc<dyn Clock>,
        ttl: std::time::Duration,
    ) -> Self {
        Self {
            shop,
            models,
            clock,
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
            batch: SWEEP_BATCH,
        }
    }

    /// At most this many orders per sweep.
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Expires the orders due now. A store or read-model failure stops the sweep; the orders
    /// not reached are due again next time.
    #[tracing::instrument(skip_all, fields(expired, skipped), err)]
    pub async fn sweep(&self) -> Result<Sweep, CommandError> {
        let now = self.clock.now();
        // A TTL reaching before the start of time leaves nothing due.
        let Some(cutoff) = now.checked_sub_signed(self.ttl) else {
            return Ok(Sweep::default());
        };
        let due = support::unpaid_orders_placed_before(self.models.as_ref(), &cutoff, self.batch)
            .await
            .map_err(|e| {
                CommandError::Store(commands::StoreError::Unavailable(format!(
                    "the support read model: {e}"
                )))
            })?;
        let mut sweep = Sweep::default();
        for order_id in due {
            let ctx = expiry_context(&order_id);
            let ttl = self.ttl;
            let result = self
                .shop
                .order_command(&ctx, &Caller::Staff, order_id.as_str(), |_| {
                    OrderCommand::Expire {
                        at: now,
                        unpaid_for: ttl,
                    }
                })
                .await;
            match result {
                Ok(executed) if !executed.replayed && wrote_events(&executed) => {
                    tracing::info!(%order_id, "unpaid order expired");
                    sweep.expired += 1;
                }
                Ok(_) => sweep.skipped += 1,
                Err(CommandError::Rejected { code, .. })
                    if code == "invalid_transition" || code == "not_due" =>
                {
                    tracing::debug!(%order_id, code, "due order not expired");
                    sweep.skipped += 1;
                }
                Err(e) => return Err(e),
            }
        }
        tracing::Span::current().record("expired", sweep.expired);
        tracing::Span::current().record("skipped", sweep.skipped);
        Ok(sweep)
    }
}

fn wrote_events<T>(executed: &commands::Executed<T>) -> bool {
    executed
        .commit
        .as_ref()
        .is_some_and(|c| !c.streams.is_empty())
}

/// The one command id every sweeper uses for an order's expiry.
fn expiry_context(order_id: &OrderId) -> CommandContext {
    let command_id = format!("expire:{order_id}");
    CommandContext::keyed(EXPIRY_WORKER, command_id.clone(), command_id)
}

impl Timer for ExpirySweeper {
    const NAME: &'static str = EXPIRY_WORKER;
    const EVERY: std::time::Duration = SWEEP_EVERY;

    async fn round(&self) -> Result<bool, CommandError> {
        let sweep = self.sweep().await?;
        Ok(sweep.expired + sweep.skipped >= self.batch)
    }
}

/// Runs the sweeper every [`SWEEP_EVERY`] until cancelled (at once again after a full batch).
pub fn spawn_expiry(
    sweeper: Arc<ExpirySweeper>,
    context: LoopContext,
) -> tokio::task::JoinHandle<()> {
    spawn_timer(sweeper, context)
}
