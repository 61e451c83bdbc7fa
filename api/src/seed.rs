//! `backbone seed`: a realistic shop history, for demos, benchmarks and load tests.
//!
//! The history is made the way a live shop makes it, through the same command service, shop,
//! simulated payment provider, webhook handling and process managers that `serve` runs, on a
//! clock that the seeder moves forward: customers open carts (some abandoned), add one to three
//! of a catalog's products (a few best sellers sell most), check out and pay. The outcomes come
//! in fixed proportions ([`Mix`]): most payments succeed, and of those some orders ship and are
//! delivered, some are refunded in full or in part, some disputed; some cards are declined;
//! some orders are never paid and expire.
//!
//! Every choice comes from one random generator seeded with `--seed`, and the clock starts at
//! `--start`, so the same seed gives the same shop: the same products, customers, carts,
//! amounts, outcomes and times, in the same order. Ids the shop generates (carts, orders,
//! payments, events) and the customers' data keys are new on every run, as they are in
//! production.

use crate::compose;
use chrono::{DateTime, Utc};
use commands::{
    Actor, Caller, CheckoutInput, Clock, CommandContext, CreateIntent, EventStore, MailError,
    Mailer, ManualClock, Metadata, NewProduct, NoPaymentLookup, OutgoingEmail, PaymentRefs,
    PaymentSimulator, Payments, ProcessManagers, ProviderEvent, ProviderFact, ServiceConfig, Shop,
    StreamRef, TestConfirmation,
};
use domain::{
    CustomerId, Money, OrderCommand, Product, ProductId, Quantity, ShippingAddress, StreamType,
};
use projections::{ProjectionRunner, ReadModelStore, StepOutcome};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use workers::DeliveryWorker;

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedPlan {
    /// Orders placed (abandoned carts come on top).
    pub orders: u64,
    pub seed: u64,
    /// Catalog size.
    pub products: usize,
    /// The simulated clock's start: the first cart opens then, and every later step moves it on.
    pub start: DateTime<Utc>,
}

/// The proportions of a seeded history, in percent of what they are drawn from.
pub struct Mix;

impl Mix {
    /// Of carts opened, abandoned before checkout.
    pub const ABANDONED: u32 = 15;
    /// Of orders placed, paid.
    pub const PAID: u32 = 80;
    /// Of orders placed, declined at first (the card fails; the order waits for payment).
    pub const DECLINED: u32 = 8;
    /// Of declined orders, paid with another card; the others expire.
    pub const RETRIED: u32 = 50;
    // The rest, 12 %, is never paid and expires after [`ORDER_TTL`].
    /// Of paid orders, refunded (half of them in part).
    pub const REFUNDED: u32 = 6;
    /// Of paid orders, disputed.
    pub const DISPUTED: u32 = 2;
    /// Of the other paid orders, shipped.
    pub const SHIPPED: u32 = 75;
    /// Of shipped orders, delivered.
    pub const DELIVERED: u32 = 70;
}

/// How long an order may stay unpaid (the embedded default of `--order-ttl`).
pub const ORDER_TTL: chrono::Duration = chrono::Duration::minutes(30);

/// What a seed wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Products created (a catalog seeded before is reused).
    pub products: u64,
    pub customers: u64,
    pub carts: u64,
    pub abandoned: u64,
    pub orders: u64,
    pub paid: u64,
    pub declined: u64,
    pub expired: u64,
    pub refunded: u64,
    pub disputed: u64,
    pub shipped: u64,
    pub delivered: u64,
    /// Notifications recorded as delivered.
    pub notifications: u64,
}

/// The first instant of the default `--start`.
pub fn default_start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T08:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// Seeds `plan` into `store` (a composed store: sealing and upcasting included). `progress` is
/// called with the number of orders placed so far.
///
/// With `models`, the notifications the history caused are then recorded as delivered, as a
/// live shop's delivery worker would have recorded them (through its notifications read model,
/// which is left caught up; nothing is sent), so that a server started on the history has no
/// backlog of mail to send.
pub async fn seed(
    store: Arc<dyn EventStore>,
    models: Option<Arc<dyn ReadModelStore>>,
    plan: &SeedPlan,
    progress: impl Fn(u64),
) -> anyhow::Result<SeedReport> {
    let clock = Arc::new(ManualClock::new(plan.start));
    let service = compose::command_service(store.clone(), clock.clone(), ServiceConfig::default());
    let (gateway, simulator) = compose::payment_gateway(None)?;
    let simulator = simulator.ok_or_else(|| anyhow::anyhow!("the simulated gateway"))?;
    let shop = Arc::new(Shop::new(service, gateway.clone()));
    let seeder = Seeder {
        store,
        clock,
        managers: ProcessManagers::new(shop.clone(), gateway.clone()),
        payments: Payments::new(shop.clone(), gateway, Arc::new(NoPaymentLookup)),
        shop,
        simulator,
        rng: StdRng::seed_from_u64(plan.seed),
        report: SeedReport::default(),
    };
    seeder.run(plan, models, progress).await
}

/// A channel that takes every message and sends nothing: the seeded history's deliveries.
struct Discard;

#[async_trait::async_trait]
impl Mailer for Discard {
    fn channel(&self) -> &'static str {
        "seed"
    }

    async fn send(&self, _: &OutgoingEmail) -> Result<Option<String>, MailError> {
        Ok(None)
    }
}

struct Seeder {
    store: Arc<dyn EventStore>,
    clock: Arc<ManualClock>,
    shop: Arc<Shop>,
    managers: ProcessManagers,
    payments: Payments,
    simulator: Arc<dyn PaymentSimulator>,
    rng: StdRng,
    report: SeedReport,
}

/// A placed order, as the seeder follows it.
struct Placed {
    order_id: String,
    payment_id: String,
    intent_id: String,
    /// Payment attempts so far (each confirmation is a distinct provider event).
    attempts: u32,
    total: Money,
    placed_at: DateTime<Utc>,
    /// The last sequence of the payment's and the order's streams the process managers handled.
    handled: [u64; 2],
}

const FIRST_NAMES: &[&str] = &[
    "Ada", "Ben", "Chloe", "Dev", "Emma", "Femi", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Luca",
];
const LAST_NAMES: &[&str] = &[
    "Meyer", "Novak", "Okafor", "Peters", "Quinn", "Rossi", "Silva", "Tanaka", "Ulrich", "Varga",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Berlin", "10115", "DE"),
    ("Hamburg", "20095", "DE"),
    ("Vienna", "1010", "AT"),
    ("Zurich", "8001", "CH"),
    ("Paris", "75001", "FR"),
    ("Amsterdam", "1012", "NL"),
];
const CATEGORIES: &[(&str, &[&str])] = &[
    (
        "coffee",
        &["Espresso beans", "Filter roast", "Decaf", "Single origin"],
    ),
    ("tea", &["Sencha", "Earl Grey", "Assam", "Rooibos"]),
    ("equipment", &["Grinder", "Kettle", "Scale", "Dripper"]),
    ("accessories", &["Filters", "Mug", "Tin", "Brush"]),
];

impl Seeder {
    async fn run(
        mut self,
        plan: &SeedPlan,
        models: Option<Arc<dyn ReadModelStore>>,
        progress: impl Fn(u64),
    ) -> anyhow::Result<SeedReport> {
        let products = self.catalog(plan).await?;
        let customers = (plan.orders / 3).max(1);
        self.report.customers = customers;
        let mut unpaid: std::collections::VecDeque<Placed> = Default::default();
        while self.report.orders < plan.orders {
            self.clock
                .advance(chrono::Duration::seconds(self.rng.random_range(5..240)));
            self.expire_due(&mut unpaid, false).await?;
            let customer = self.rng.random_range(0..customers);
            let Some(mut placed) = self.shop_once(customer, &products).await? else {
                continue;
            };
            progress(self.report.orders);
            let roll = self.rng.random_range(0..100);
            if roll < Mix::PAID {
                self.pay(&mut placed, "pm_card_visa").await?;
                self.report.paid += 1;
                self.after_payment(&mut placed).await?;
            } else if roll < Mix::PAID + Mix::DECLINED {
                self.pay(&mut placed, "4000000000000002").await?;
                self.report.declined += 1;
                if self.rng.random_range(0..100) < Mix::RETRIED {
                    self.pay(&mut placed, "pm_card_visa").await?;
                    self.report.paid += 1;
                    self.after_payment(&mut placed).await?;
                } else {
                    unpaid.push_back(placed);
                }
            } else {
                unpaid.push_back(placed);
            }
        }
        self.clock.advance(ORDER_TTL);
        self.expire_due(&mut unpaid, true).await?;
        if let Some(models) = models {
            self.deliver_notifications(models).await?;
        }
        Ok(self.report)
    }

    async fn deliver_notifications(
        &mut self,
        models: Arc<dyn ReadModelStore>,
    ) -> anyhow::Result<()> {
        let runner = ProjectionRunner::new(
            self.store.clone(),
            models.clone(),
            Arc::new(projections::notifications::NotificationsProjection),
            projections::runner::REBUILD_BATCH,
        );
        let worker = DeliveryWorker::new(
            self.shop.clone(),
            models,
            Arc::new(Discard),
            self.clock.clone(),
        );
        loop {
            while runner.step().await? != StepOutcome::Idle {}
            let round = worker.deliver_due().await?;
            self.report.notifications += round.delivered as u64;
            if round.delivered == 0 {
                return Ok(());
            }
        }
    }

    fn context(&self, subject: &str, role: &str, correlation: String) -> CommandContext {
        CommandContext {
            metadata: Metadata {
                correlation_id: correlation,
                actor: Actor {
                    subject: subject.into(),
                    role: role.into(),
                },
                ..Metadata::default()
            },
            idempotency: None,
        }
    }

    /// The catalog: `plan.products` products across the categories, stocked for the whole run.
    async fn catalog(&mut self, plan: &SeedPlan) -> anyhow::Result<Vec<String>> {
        let stock =
            u32::try_from(plan.orders.saturating_mul(3).saturating_add(100)).unwrap_or(u32::MAX);
        let mut ids = Vec::with_capacity(plan.products);
        for p in 0..plan.products.max(1) {
            let (category, names) = CATEGORIES[p % CATEGORIES.len()];
            let name = names[(p / CATEGORIES.len()) % names.len()];
            let cents = self.rng.random_range(350..15_000i64);
            let id = format!("prd_seed_{p:04}");
            ids.push(id.clone());
            // Seeding into a history seeded before sells from the catalog already there.
            if self
                .shop
                .service()
                .load::<Product>(&id)
                .await?
                .state
                .exists()
            {
                continue;
            }
            let ctx = self.context("seed", "admin", format!("seed-catalog-{p}"));
            self.shop
                .create_product(
                    &ctx,
                    NewProduct {
                        product_id: ProductId::parse(&id)?,
                        name: format!("{name} No. {}", p / (CATEGORIES.len() * names.len()) + 1),
                        category: category.into(),
                        price: Money::from_minor(cents, domain::Currency::parse("EUR")?)?,
                        initial_stock: stock,
                    },
                )
                .await?;
            self.report.products += 1;
        }
        Ok(ids)
    }

    /// One customer visit: a cart, abandoned or checked out. A popular product is more likely:
    /// the square of a uniform draw favours the front of the catalog.
    async fn shop_once(
        &mut self,
        customer: u64,
        products: &[String],
    ) -> anyhow::Result<Option<Placed>> {
        let customer_id = CustomerId::parse(&format!("cust_seed_{customer:06}"))?;
        let caller = Caller::Customer(customer_id.clone());
        let ctx = self.context(
            customer_id.as_str(),
            "customer",
            format!("seed-visit-{}", self.report.carts),
        );
        let cart = self.shop.open_cart(&ctx, &customer_id).await?.value.cart_id;
        self.report.carts += 1;
        let lines = match self.rng.random_range(0..10) {
            0..=5 => 1,
            6..=8 => 2,
            _ => 3,
        };
        let mut chosen: Vec<usize> = Vec::new();
        while chosen.len() < lines.min(products.len()) {
            let draw: f64 = self.rng.random();
            let i = ((draw * draw) * products.len() as f64) as usize;
            if !chosen.contains(&i) {
                chosen.push(i.min(products.len() - 1));
            }
        }
        for i in chosen {
            let quantity = Quantity::parse(self.rng.random_range(1..=2))?;
            self.shop
                .add_item(&ctx, &caller, &cart, &products[i], quantity)
                .await?;
        }
        if self.rng.random_range(0..100) < Mix::ABANDONED {
            self.report.abandoned += 1;
            return Ok(None);
        }
        let (first, last) = (
            FIRST_NAMES[self.rng.random_range(0..FIRST_NAMES.len())],
            LAST_NAMES[self.rng.random_range(0..LAST_NAMES.len())],
        );
        let (city, postal_code, country) = CITIES[self.rng.random_range(0..CITIES.len())];
        let input = CheckoutInput {
            customer_email: format!("{}.{customer}@example.com", first.to_lowercase()),
            shipping_address: ShippingAddress {
                name: format!("{first} {last}"),
                line1: format!("{} Main Street", self.rng.random_range(1..200)),
                line2: None,
                city: city.into(),
                postal_code: postal_code.into(),
                country: country.into(),
            },
        };
        let (checkout, intent) = self
            .shop
            .checkout_and_pay(&ctx, &caller, &cart, input)
            .await?;
        self.report.orders += 1;
        let intent =
            intent.ok_or_else(|| anyhow::anyhow!("the simulated gateway made no intent"))?;
        let placed = Placed {
            order_id: checkout.value.order_id,
            payment_id: checkout.value.payment_id,
            intent_id: intent.intent_id,
            total: checkout.value.total,
            placed_at: self.clock.now(),
            attempts: 0,
            handled: [0, 0],
        };
        let mut placed = placed;
        self.settle(&mut placed).await?;
        Ok(Some(placed))
    }

    /// Confirms the payment with a test payment method, as a storefront would, and delivers the
    /// provider's event to the webhook handling.
    async fn pay(&mut self, placed: &mut Placed, method: &str) -> anyhow::Result<()> {
        self.clock
            .advance(chrono::Duration::seconds(self.rng.random_range(10..600)));
        placed.attempts += 1;
        let event = self
            .simulator
            .confirm_test_payment(TestConfirmation {
                intent: CreateIntent {
                    payment_id: domain::PaymentId::parse(&placed.payment_id)?,
                    order_id: domain::OrderId::parse(&placed.order_id)?,
                    amount: placed.total.clone(),
                    idempotency_key: placed.payment_id.clone(),
                },
                intent_id: placed.intent_id.clone(),
                payment_method: method.into(),
                event_id: format!("evt_seed_pay_{}_{}", placed.payment_id, placed.attempts),
                at: self.clock.now(),
            })
            .await?;
        self.deliver(placed, event).await
    }

    async fn deliver(&mut self, placed: &mut Placed, event: ProviderEvent) -> anyhow::Result<()> {
        let metadata = Metadata {
            correlation_id: format!("seed-{}", placed.order_id),
            ..Metadata::default()
        };
        self.payments.apply(&event, metadata).await?;
        self.settle(placed).await
    }

    /// What happens to a paid order: a refund, a dispute, or shipping and delivery.
    async fn after_payment(&mut self, placed: &mut Placed) -> anyhow::Result<()> {
        let roll = self.rng.random_range(0..100);
        let staff = self.context("support", "support", format!("seed-{}", placed.order_id));
        if roll < Mix::REFUNDED {
            self.clock
                .advance(chrono::Duration::minutes(self.rng.random_range(30..2_880)));
            let amount = if self.rng.random_bool(0.5) {
                None
            } else {
                Some(Money::from_minor(
                    (placed.total.to_minor() / 2).max(1),
                    placed.total.currency(),
                )?)
            };
            self.payments
                .refund_order(&staff, &placed.order_id, amount, "seed-refund")
                .await?;
            self.report.refunded += 1;
            return self.settle(placed).await;
        }
        if roll < Mix::REFUNDED + Mix::DISPUTED {
            self.clock
                .advance(chrono::Duration::days(self.rng.random_range(3..30)));
            let event = ProviderEvent {
                event_id: format!("evt_seed_dispute_{}", placed.payment_id),
                event_type: "charge.dispute.created".into(),
                occurred_at: self.clock.now(),
                livemode: false,
                fact: ProviderFact::DisputeCreated(commands::Dispute {
                    dispute_id: format!("dp_seed_{}", placed.payment_id),
                    intent_id: Some(placed.intent_id.clone()),
                    charge_id: None,
                    reason: "fraudulent".into(),
                    status: "needs_response".into(),
                    amount_minor: Some(placed.total.to_minor()),
                    currency: Some(placed.total.currency().code().to_lowercase()),
                    refs: PaymentRefs {
                        payment_id: Some(placed.payment_id.clone()),
                        order_id: Some(placed.order_id.clone()),
                    },
                }),
            };
            self.report.disputed += 1;
            return self.deliver(placed, event).await;
        }
        if self.rng.random_range(0..100) >= Mix::SHIPPED {
            return Ok(());
        }
        self.clock
            .advance(chrono::Duration::hours(self.rng.random_range(2..48)));
        let at = self.clock.now();
        let tracking = format!("TRK{:010}", self.rng.random_range(0..10_000_000_000u64));
        self.shop
            .order_command(&staff, &Caller::Staff, &placed.order_id, |_| {
                OrderCommand::Ship {
                    tracking: Some(tracking.clone()),
                    at,
                }
            })
            .await?;
        self.report.shipped += 1;
        if self.rng.random_range(0..100) < Mix::DELIVERED {
            let at = at + chrono::Duration::hours(self.rng.random_range(20..96));
            self.shop
                .order_command(&staff, &Caller::Staff, &placed.order_id, |_| {
                    OrderCommand::Deliver { at }
                })
                .await?;
            self.report.delivered += 1;
        }
        self.settle(placed).await
    }

    /// Expires the unpaid orders whose time is up (all of them when `all`), as the expiry
    /// worker does.
    async fn expire_due(
        &mut self,
        unpaid: &mut std::collections::VecDeque<Placed>,
        all: bool,
    ) -> anyhow::Result<()> {
        let now = self.clock.now();
        while unpaid
            .front()
            .is_some_and(|placed| all || now - placed.placed_at >= ORDER_TTL)
        {
            let Some(mut placed) = unpaid.pop_front() else {
                break;
            };
            let ctx = self.context("expiry", "system", format!("seed-{}", placed.order_id));
            self.shop
                .order_command(&ctx, &Caller::Staff, &placed.order_id, |_| {
                    OrderCommand::Expire {
                        at: now,
                        unpaid_for: ORDER_TTL,
                    }
                })
                .await?;
            self.report.expired += 1;
            self.settle(&mut placed).await?;
        }
        Ok(())
    }

    /// Runs the process managers on the order's and payment's new events until they cause no
    /// more (what the process-managers worker does from the feed, on any backend).
    async fn settle(&mut self, placed: &mut Placed) -> anyhow::Result<()> {
        let streams = [
            StreamRef::new(StreamType::Payment, placed.payment_id.clone()),
            StreamRef::new(StreamType::Order, placed.order_id.clone()),
        ];
        loop {
            let mut handled = 0;
            for (stream, seen) in streams.iter().zip(placed.handled.iter_mut()) {
                for event in self.store.read(stream, *seen + 1..=u64::MAX).await? {
                    *seen = event.sequence;
                    self.managers.handle(&event).await?;
                    handled += 1;
                }
            }
            if handled == 0 {
                return Ok(());
            }
        }
    }
}
