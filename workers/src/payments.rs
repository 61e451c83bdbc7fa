//! The payment retry worker: creates the provider intent of payments that checkout committed
//! but whose intent creation failed (provider down, process crash), so an order never stays
//! `awaiting_payment` without a way to pay.
//!
//! How candidates are found (no read model needed): the worker follows the store's feed from
//! position 0 when it starts and keeps, in memory, the payments that were requested
//! (`PaymentRequested`) and have no later payment event yet (`PaymentIntentCreated`, or any
//! provider fact, all of which imply an intent). Memory holds only those pending payments. The
//! first pass after a start reads the whole feed once, page by page; later passes read only new
//! events. A payment is retried once it has waited `min_age` (so checkout's own attempt is not
//! raced), then with a per-payment exponential backoff while the provider keeps failing.
//! `Shop::ensure_intent` is idempotent (provider key = payment id), so a retry racing another
//! attempt creates one intent.

use crate::feed::{FeedWorker, Outcome};
use chrono::{DateTime, Utc};
use commands::FeedCursor;
use commands::{
    Actor, Clock, CommandContext, CommandError, EventStore, GatewayError, Metadata, Shop,
};
use domain::StreamType;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Tuning of the retry worker.
#[derive(Debug, Clone)]
pub struct PaymentRetryConfig {
    /// A payment without an intent is retried once it is this old.
    pub min_age: Duration,
    /// Delay before the second retry of one payment; doubles per failure up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Feed page size.
    pub feed_batch: usize,
    /// Most feed pages read per step, so a long catch-up still lets retries run.
    pub max_pages_per_step: usize,
    /// Most intent creations attempted per step.
    pub max_attempts_per_step: usize,
}

impl Default for PaymentRetryConfig {
    fn default() -> Self {
        Self {
            min_age: Duration::from_secs(30),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
            feed_batch: 500,
            max_pages_per_step: 20,
            max_attempts_per_step: 20,
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    correlation_id: String,
    failures: u32,
    next_attempt: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct Tracker {
    position: FeedCursor,
    pending: BTreeMap<String, Pending>,
}

/// The retry worker. Share it behind an `Arc` and [`spawn`](FeedWorker::spawn) it.
pub struct PaymentRetryWorker {
    name: String,
    store: Arc<dyn EventStore>,
    shop: Arc<Shop>,
    clock: Arc<dyn Clock>,
    config: PaymentRetryConfig,
    tracker: Mutex<Tracker>,
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl PaymentRetryWorker {
    pub fn new(
        store: Arc<dyn EventStore>,
        shop: Arc<Shop>,
        clock: Arc<dyn Clock>,
        config: PaymentRetryConfig,
    ) -> Self {
        Self {
            name: "payment-retry".into(),
            store,
            shop,
            clock,
            config,
            tracker: Mutex::new(Tracker::default()),
        }
    }

    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        // Plain bookkeeping: a panic elsewhere cannot leave it in a state that matters.
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Payments currently known to lack an intent.
    pub fn pending(&self) -> Vec<String> {
        self.tracker().pending.keys().cloned().collect()
    }

    /// Reads new feed events into the pending set. Returns whether the position moved.
    async fn catch_up(&self) -> Result<bool, commands::StoreError> {
        let start = self.tracker().position.clone();
        let mut position = start.clone();
        for _ in 0..self.config.max_pages_per_step.max(1) {
            let payments = |e: &commands::EventEnvelope| e.stream_type == StreamType::Payment;
            let page = self
                .store
                .feed_filtered(commands::FeedFilter {
                    after: &position,
                    limit: self.config.feed_batch.max(1),
                    keep: &payments,
                })
                .await?;
            let Some(last) = page.next else {
                break;
            };
            position = position.max(&last);
            let mut tracker = self.tracker();
            for event in &page.events {
                if event.event_type == domain::event_names::PAYMENT_REQUESTED {
                    let due = event.occurred_at + chrono_duration(self.config.min_age);
                    tracker.pending.insert(
                        event.stream_id.clone(),
                        Pending {
                            correlation_id: event.metadata.correlation_id.clone(),
                            failures: 0,
                            next_attempt: due,
                        },
                    );
                } else {
                    // Every later payment event implies the intent exists.
                    tracker.pending.remove(&event.stream_id);
                }
            }
            tracker.position = position.clone();
            metrics::gauge!("backbone_payments_without_intent").set(tracker.pending.len() as f64);
        }
        Ok(position != start)
    }

    fn backoff(&self, failures: u32) -> chrono::Duration {
        let d = self
            .config
            .retry_base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.config.retry_max);
        chrono_duration(d)
    }
}

impl FeedWorker for PaymentRetryWorker {
    fn name(&self) -> &str {
        &self.name
    }

    /// One pass: read new feed events, then retry the payments that are due. The loop wakes on
    /// commits or after `config.poll`, which must be short enough for due retries (due-ness is
    /// time-based): a second or so.
    ///
    /// `Progressed` when the feed moved or an intent was created, `Idle` otherwise. Only a store
    /// failure is an error: a provider outage is logged and counted
    /// (`backbone_payment_intent_retries_total{result="failed"}`,
    /// `backbone_payments_without_intent`) but does not mark the worker unhealthy, because
    /// readiness must not depend on Stripe being up.
    #[tracing::instrument(skip_all, fields(worker = %self.name), err(Display))]
    async fn step(&self) -> anyhow::Result<Outcome> {
        let moved = self.catch_up().await?;
        let now = self.clock.now();
        let due: Vec<(String, Pending)> = {
            let tracker = self.tracker();
            let mut due: Vec<_> = tracker
                .pending
                .iter()
                .filter(|(_, p)| p.next_attempt <= now)
                .map(|(id, p)| (id.clone(), p.clone()))
                .collect();
            due.sort_by_key(|(_, p)| p.next_attempt);
            due.truncate(self.config.max_attempts_per_step.max(1));
            due
        };
        let (mut created, mut failed) = (0usize, 0usize);
        for (payment_id, pending) in due {
            let ctx = CommandContext {
                metadata: Metadata {
                    correlation_id: pending.correlation_id.clone(),
                    actor: Actor {
                        subject: self.name.clone(),
                        role: "worker".into(),
                    },
                    ..Metadata::default()
                },
                idempotency: None,
            };
            match self.shop.ensure_intent(&ctx, &payment_id).await {
                Ok(receipt) => {
                    created += 1;
                    metrics::counter!("backbone_payment_intent_retries_total", "result" => "created").increment(1);
                    tracing::info!(%payment_id, intent_id = %receipt.intent_id, attempts = pending.failures + 1, "payment intent created by the retry worker");
                    self.tracker().pending.remove(&payment_id);
                }
                Err(CommandError::NotFound { .. }) => {
                    tracing::warn!(%payment_id, "payment to retry does not exist, dropping it");
                    self.tracker().pending.remove(&payment_id);
                }
                Err(err) => {
                    failed += 1;
                    metrics::counter!("backbone_payment_intent_retries_total", "result" => "failed").increment(1);
                    let mut tracker = self.tracker();
                    if let Some(p) = tracker.pending.get_mut(&payment_id) {
                        p.failures = p.failures.saturating_add(1);
                        p.next_attempt = now + self.backoff(p.failures);
                        if matches!(err, CommandError::Gateway(GatewayError::Transient(_))) {
                            tracing::warn!(%payment_id, failures = p.failures, error = %err, "intent creation still failing, will retry");
                        } else {
                            tracing::error!(%payment_id, failures = p.failures, error = %err, "intent creation failed, will retry");
                        }
                    }
                }
            }
        }
        if failed > 0 {
            tracing::debug!(created, failed, "payment retry pass done");
        }
        let position = self.tracker().position.count();
        Ok(if moved || created > 0 {
            Outcome::Progressed(position)
        } else {
            Outcome::Idle
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use commands::{
        Caller, CheckoutInput, CommandService, CreateIntent, CreatedIntent, ManualClock,
        NewProduct, PaymentGateway, RefundRequest, RefundResult, ServiceConfig,
    };
    use domain::{CustomerId, Money, Payment, PaymentStatus, ProductId, Quantity, ShippingAddress};
    use projections::testsuite::event_store::VecEventStore;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails with `Transient` (like a 500 from Stripe) `failures` times, then succeeds.
    struct FlakyGateway {
        failures: AtomicU32,
        calls: AtomicU32,
    }

    #[async_trait]
    impl PaymentGateway for FlakyGateway {
        async fn create_intent(&self, r: CreateIntent) -> Result<CreatedIntent, GatewayError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                return Err(GatewayError::Transient("stripe answered 500".into()));
            }
            Ok(CreatedIntent {
                intent_id: format!("pi_{}", r.idempotency_key),
                client_secret: format!("pi_{}_secret_x", r.idempotency_key),
            })
        }
        async fn client_secret(&self, intent_id: &str) -> Result<String, GatewayError> {
            Ok(format!("{intent_id}_secret_x"))
        }
        async fn confirm_intent(
            &self,
            _r: commands::ConfirmIntent,
        ) -> Result<commands::IntentStatus, GatewayError> {
            Err(GatewayError::Rejected("not in this test".into()))
        }
        async fn refund(&self, _r: RefundRequest) -> Result<RefundResult, GatewayError> {
            Err(GatewayError::Rejected("not in this test".into()))
        }
        async fn cancel_intent(
            &self,
            _r: commands::CancelIntent,
        ) -> Result<commands::IntentStatus, GatewayError> {
            Err(GatewayError::Rejected("not in this test".into()))
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    async fn setup(
        failures: u32,
    ) -> (
        Arc<Shop>,
        Arc<ManualClock>,
        Arc<FlakyGateway>,
        Arc<dyn EventStore>,
    ) {
        let store: Arc<dyn EventStore> = Arc::new(VecEventStore::new());
        let clock = Arc::new(ManualClock::new(t0()));
        let gateway = Arc::new(FlakyGateway {
            failures: AtomicU32::new(failures),
            calls: AtomicU32::new(0),
        });
        let svc = Arc::new(CommandService::new(
            store.clone(),
            clock.clone(),
            ServiceConfig::default(),
        ));
        let shop = Arc::new(Shop::new(svc, gateway.clone()));
        shop.create_product(
            &CommandContext::default(),
            NewProduct {
                product_id: ProductId::parse("prod_1").unwrap(),
                name: "Widget".into(),
                category: "tools".into(),
                price: Money::parse("12.50", "EUR").unwrap(),
                initial_stock: 10,
            },
        )
        .await
        .unwrap();
        (shop, clock, gateway, store)
    }

    async fn checkout(shop: &Shop) -> (String, bool) {
        let customer = CustomerId::parse("cus_1").unwrap();
        let caller = Caller::Customer(customer.clone());
        let ctx = CommandContext::default();
        let cart = shop.open_cart(&ctx, &customer).await.unwrap();
        shop.add_item(
            &ctx,
            &caller,
            &cart.value.cart_id,
            "prod_1",
            Quantity::parse(2).unwrap(),
        )
        .await
        .unwrap();
        let (receipt, intent) = shop
            .checkout_and_pay(
                &ctx,
                &caller,
                &cart.value.cart_id,
                CheckoutInput {
                    customer_email: "ada@example.com".into(),
                    shipping_address: ShippingAddress {
                        name: "Ada".into(),
                        line1: "1 Way".into(),
                        line2: None,
                        city: "London".into(),
                        postal_code: "N1".into(),
                        country: "GB".into(),
                    },
                },
            )
            .await
            .unwrap();
        (receipt.value.payment_id, intent.is_some())
    }

    fn worker(
        shop: Arc<Shop>,
        clock: Arc<ManualClock>,
        store: Arc<dyn EventStore>,
    ) -> PaymentRetryWorker {
        PaymentRetryWorker::new(
            store,
            shop,
            clock,
            PaymentRetryConfig {
                min_age: Duration::from_secs(30),
                retry_base: Duration::from_secs(5),
                retry_max: Duration::from_secs(60),
                ..PaymentRetryConfig::default()
            },
        )
    }

    #[tokio::test]
    async fn checkout_succeeds_while_the_provider_fails_and_the_worker_creates_the_intent_later() {
        // Checkout's own attempt fails (the gateway retries internally; here one failure stands
        // for "retries exhausted"), then two worker attempts fail, then one succeeds.
        let (shop, clock, gateway, store) = setup(3).await;
        let (payment_id, got_intent) = checkout(&shop).await;
        assert!(!got_intent, "the provider was down at checkout");
        let w = worker(shop.clone(), clock.clone(), store);

        // Too young: checkout's own attempt is not raced.
        assert_eq!(
            w.step().await.unwrap(),
            Outcome::Progressed(w.tracker().position.count())
        );
        assert_eq!(w.pending(), vec![payment_id.clone()]);
        // Each row: seconds the clock moves, then one idle step, then the provider calls so far.
        for (seconds, calls, why) in [
            (0, 1, "still too young"),
            (31, 2, "a provider failure is not a worker failure"),
            (0, 2, "backing off: not retried at once"),
            (6, 3, "retried after the 5 s backoff"),
            (6, 3, "backoff doubled to 10 s"),
        ] {
            clock.advance(chrono::Duration::seconds(seconds));
            assert_eq!(w.step().await.unwrap(), Outcome::Idle, "{why}");
            assert_eq!(gateway.calls.load(Ordering::SeqCst), calls, "{why}");
        }
        clock.advance(chrono::Duration::seconds(5));
        assert!(matches!(w.step().await.unwrap(), Outcome::Progressed(_)));
        assert_eq!(gateway.calls.load(Ordering::SeqCst), 4);
        assert!(w.pending().is_empty());

        let payment = shop.service().load::<Payment>(&payment_id).await.unwrap();
        assert_eq!(payment.state.status, PaymentStatus::IntentCreated);
        assert_eq!(
            payment.state.intent_id.as_deref(),
            Some(format!("pi_{payment_id}").as_str())
        );

        // The IntentCreated event in the feed keeps it out of the pending set.
        w.step().await.unwrap();
        assert!(w.pending().is_empty());
    }

    #[tokio::test]
    async fn a_restarted_worker_finds_pending_payments_from_the_feed_and_skips_paid_ones() {
        let (shop, clock, _gateway, store) = setup(1).await;
        let (pending_id, got) = checkout(&shop).await;
        assert!(!got);
        let (ok_id, got) = checkout(&shop).await;
        assert!(got, "the provider is back for the second checkout");
        let w = worker(shop.clone(), clock.clone(), store);
        w.step().await.unwrap();
        assert_eq!(w.pending(), vec![pending_id.clone()]);
        assert!(!w.pending().contains(&ok_id));
        clock.advance(chrono::Duration::seconds(31));
        assert!(matches!(w.step().await.unwrap(), Outcome::Progressed(_)));
        assert!(w.pending().is_empty());
    }
}
