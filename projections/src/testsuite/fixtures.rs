//! Event fixtures: envelope builders and a simulator that drives the real domain aggregates
//! (`decide` + `apply`) to produce realistic, internally consistent histories across products,
//! carts, orders and payments.

use chrono::{DateTime, Duration, TimeZone, Utc};
use commands::{EventEnvelope, Metadata};
use domain::{
    Cart, CartCommand, CartId, Currency, CustomerId, Event, EventSourced, Money, Order,
    OrderCommand, OrderEvent, OrderId, OrderLine, OrderStatus, Payment, PaymentCommand, PaymentId,
    PaymentStatus, Product, ProductCommand, ProductId, ProductStatus, Quantity, ShippingAddress,
    StreamType,
};
use std::collections::BTreeMap;
use uuid::Uuid;

/// 2026-11-21T22:00:00Z, the fixtures' epoch.
pub fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 22, 0, 0)
        .single()
        .unwrap_or_default()
}

/// A deterministic event id for (stream, sequence), so that generated histories are
/// reproducible and the same event always has the same id.
pub fn event_id(stream_type: StreamType, stream_id: &str, sequence: u64) -> Uuid {
    let text = format!("{stream_type}#{stream_id}#{sequence}");
    let hash = |seed: u64| {
        text.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let hi = hash(0xcbf2_9ce4_8422_2325);
    let lo = hash(0x8422_2325_cbf2_9ce4);
    Uuid::from_u128((u128::from(hi) << 64) | u128::from(lo))
}

/// An envelope with an explicit type, version and payload (no feed position: stores set it).
pub fn envelope(
    stream_type: StreamType,
    stream_id: &str,
    sequence: u64,
    event_type: &str,
    event_version: u32,
    payload: serde_json::Value,
    occurred_at: DateTime<Utc>,
) -> EventEnvelope {
    EventEnvelope {
        global_position: None,
        event_id: event_id(stream_type, stream_id, sequence),
        stream_type,
        stream_id: stream_id.to_owned(),
        sequence,
        event_type: event_type.to_owned(),
        event_version,
        occurred_at,
        payload: payload.into(),
        metadata: Metadata {
            correlation_id: format!("corr-{stream_id}"),
            ..Metadata::default()
        },
    }
}

/// A product-stream envelope at [`base_time`] with a payload that no typed event makes (an old
/// version, an unknown type, a malformed body).
pub fn raw_product_event(
    product_id: &str,
    sequence: u64,
    event_type: &str,
    event_version: u32,
    payload: serde_json::Value,
) -> EventEnvelope {
    envelope(
        StreamType::Product,
        product_id,
        sequence,
        event_type,
        event_version,
        payload,
        base_time(),
    )
}

/// An envelope for a typed domain event.
pub fn event_envelope<E: Event>(
    stream_type: StreamType,
    stream_id: &str,
    sequence: u64,
    event: &E,
    occurred_at: DateTime<Utc>,
) -> EventEnvelope {
    let mut envelope = envelope(
        stream_type,
        stream_id,
        sequence,
        event.event_type(),
        event.event_version(),
        serde_json::Value::Null,
        occurred_at,
    );
    envelope.payload = commands::Payload::of_event(event);
    envelope
}

/// The `OrderPlaced` of order `order` with one line, one unit of product "p1" at `price`, by
/// `customer` from cart `cart-{order}`, to be paid with payment `pay-{order}`.
pub fn one_unit_order_placed(
    order: &str,
    customer: &str,
    email: &str,
    shipping_address: ShippingAddress,
    price: Money,
    placed_at: DateTime<Utc>,
) -> OrderEvent {
    OrderEvent::OrderPlaced {
        order_id: OrderId::parse(order).expect("order id"),
        cart_id: CartId::parse(&format!("cart-{order}")).expect("cart id"),
        customer_id: CustomerId::parse(customer).expect("customer id"),
        customer_email: email.to_owned(),
        shipping_address,
        lines: vec![OrderLine {
            product_id: ProductId::parse("p1").expect("product id"),
            name: "Widget".to_owned(),
            quantity: Quantity::ONE,
            unit_price: price.clone(),
            line_total: price.clone(),
        }],
        total: price,
        payment_id: PaymentId::parse(&format!("pay-{order}")).expect("payment id"),
        placed_at,
    }
}

/// A small deterministic PRNG (SplitMix64), so fixtures need no `rand` dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

const CUSTOMERS: [(&str, &str); 3] = [
    ("alice", "alice@example.com"),
    ("bob", "bob@example.com"),
    ("carol", "Carol@Example.COM"),
];
const CATEGORIES: [&str; 3] = ["books", "games", "tools"];

struct OrderInfo {
    cart_id: String,
    payment_id: String,
    products: Vec<(String, u32)>,
}

/// Drives the domain aggregates with random but valid commands and records every event they
/// emit, with per-stream sequences, in commit order (the order a feed would have).
pub struct Simulator {
    rng: Rng,
    now: DateTime<Utc>,
    log: Vec<EventEnvelope>,
    products: BTreeMap<String, (Product, u64)>,
    carts: BTreeMap<String, (Cart, u64)>,
    orders: BTreeMap<String, (Order, u64)>,
    payments: BTreeMap<String, (Payment, u64)>,
    order_info: BTreeMap<String, OrderInfo>,
    customers: BTreeMap<String, (domain::Customer, u64)>,
    /// Order ids in creation order.
    order_ids: Vec<String>,
    counter: u64,
}

/// How many of the latest orders later steps (payment, shipping, refunds) choose from.
const RECENT_ORDERS: usize = 64;

/// The orders the simulator pays, fails or expires: still waiting for their money.
const UNPAID: &[OrderStatus] = &[OrderStatus::AwaitingPayment, OrderStatus::PaymentFailed];
/// The orders the simulator cancels.
const CANCELLABLE: &[OrderStatus] = &[
    OrderStatus::AwaitingPayment,
    OrderStatus::PaymentFailed,
    OrderStatus::Paid,
];
/// The orders the simulator refunds.
const REFUNDABLE: &[OrderStatus] = &[
    OrderStatus::Paid,
    OrderStatus::Shipped,
    OrderStatus::Delivered,
];

fn pick_key<T>(rng: &mut Rng, map: &BTreeMap<String, T>) -> Option<String> {
    map.keys().nth(rng.below(map.len())).cloned()
}

/// Decides a command, applies and records the events; false when rejected or a no-op.
fn run<A: EventSourced>(
    log: &mut Vec<EventEnvelope>,
    now: DateTime<Utc>,
    id: &str,
    aggregate: &mut (A, u64),
    command: A::Command,
) -> bool {
    // `handle` is ready at once: it calls the aggregate's synchronous `decide`.
    let decided =
        futures::executor::block_on(cqrs_es::Aggregate::handle(&aggregate.0, command, &()));
    match decided {
        Ok(events) if !events.is_empty() => {
            for e in events {
                aggregate.1 += 1;
                log.push(event_envelope(A::STREAM_TYPE, id, aggregate.1, &e, now));
                cqrs_es::Aggregate::apply(&mut aggregate.0, e);
            }
            true
        }
        _ => false,
    }
}

impl Simulator {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            now: base_time(),
            log: Vec::new(),
            products: BTreeMap::new(),
            carts: BTreeMap::new(),
            orders: BTreeMap::new(),
            payments: BTreeMap::new(),
            order_info: BTreeMap::new(),
            customers: BTreeMap::new(),
            order_ids: Vec::new(),
            counter: 0,
        }
    }

    /// The events recorded so far, in commit order, without feed positions.
    pub fn events(&self) -> &[EventEnvelope] {
        &self.log
    }

    pub fn into_events(self) -> Vec<EventEnvelope> {
        self.log
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}-{}", self.counter)
    }

    /// Runs `steps` random steps (each one or a few commits).
    pub fn run(&mut self, steps: usize) {
        for _ in 0..steps {
            // Several events of one step share a timestamp, like one commit; sometimes two steps
            // share one too, so that timeline ordering must break ties.
            if self.rng.percent(80) {
                self.now += Duration::seconds(self.rng.range(1, 600) as i64);
            }
            let roll = self.rng.below(100);
            match roll {
                0..=9 => self.create_product(),
                10..=14 => self.restock_or_reprice(),
                15..=36 => {
                    if self.active_products() < 2 {
                        self.create_product();
                    }
                    self.checkout();
                }
                37..=56 => self.progress_payment(),
                57..=66 => self.ship_or_deliver(),
                67..=74 => self.cancel(),
                75..=80 => self.expire(),
                81..=90 => self.refund(),
                91..=94 => self.dispute(),
                95..=97 => self.retire(),
                _ => self.erase(),
            }
        }
    }

    pub fn create_product(&mut self) {
        if self.active_products() >= 6 || self.products.len() >= 12 {
            return;
        }
        let id = self.next_id("prod");
        let category = CATEGORIES[self.rng.below(CATEGORIES.len())];
        let price = self.money(100, 5_000);
        let stock = self.rng.range(5, 40) as u32;
        let (Ok(product_id), Some(price)) = (ProductId::parse(&id), price) else {
            return;
        };
        let mut agg = (Product::default(), 0);
        let name = format!("Product {}", self.counter);
        run(
            &mut self.log,
            self.now,
            &id,
            &mut agg,
            ProductCommand::Create {
                product_id,
                name,
                category: category.to_owned(),
                price,
                initial_stock: stock,
            },
        );
        self.products.insert(id, agg);
    }

    fn money(&mut self, lo: u64, hi: u64) -> Option<Money> {
        Money::from_minor(self.rng.range(lo, hi) as i64, Currency::EUR).ok()
    }

    fn restock_or_reprice(&mut self) {
        let Some(id) = pick_key(&mut self.rng, &self.products) else {
            return;
        };
        let command = if self.rng.percent(60) {
            ProductCommand::Restock {
                quantity: self.rng.range(1, 20) as u32,
            }
        } else {
            match self.money(100, 5_000) {
                Some(price) => ProductCommand::Reprice { price },
                None => return,
            }
        };
        if let Some(agg) = self.products.get_mut(&id) {
            run(&mut self.log, self.now, &id, agg, command);
        }
    }

    fn active_products(&self) -> usize {
        self.products
            .values()
            .filter(|(p, _)| p.status == ProductStatus::Active)
            .count()
    }

    fn retire(&mut self) {
        if self.active_products() < 4 || self.rng.percent(50) {
            return;
        }
        let Some(id) = pick_key(&mut self.rng, &self.products) else {
            return;
        };
        if let Some(agg) = self.products.get_mut(&id) {
            run(&mut self.log, self.now, &id, agg, ProductCommand::Retire);
        }
    }

    /// Cart events, then one "checkout commit": CartCheckedOut, OrderPlaced, StockReserved per
    /// line and PaymentRequested.
    pub fn checkout(&mut self) {
        let (customer, email) = CUSTOMERS[self.rng.below(CUSTOMERS.len())];
        let wanted = self.rng.range(1, 3) as usize;
        let mut chosen: Vec<(String, u32)> = Vec::new();
        for _ in 0..wanted {
            let Some(pid) = pick_key(&mut self.rng, &self.products) else {
                break;
            };
            let qty = self.rng.range(1, 3) as u32;
            let ok = self
                .products
                .get(&pid)
                .is_some_and(|(p, _)| p.status == ProductStatus::Active && p.available() >= qty);
            if ok && !chosen.iter().any(|(c, _)| *c == pid) {
                chosen.push((pid, qty));
            }
        }
        if chosen.is_empty() {
            return;
        }
        let cart_id = self.next_id("cart");
        let order_id = self.next_id("order");
        let payment_id = self.next_id("pay");
        let (Ok(cart), Ok(order), Ok(payment), Ok(customer_id)) = (
            CartId::parse(&cart_id),
            OrderId::parse(&order_id),
            PaymentId::parse(&payment_id),
            CustomerId::parse(customer),
        ) else {
            return;
        };

        let mut lines = Vec::new();
        for (pid, qty) in &chosen {
            let Some((p, _)) = self.products.get(pid) else {
                return;
            };
            let (Some(price), Ok(quantity), Ok(product_id)) = (
                p.price.clone(),
                Quantity::parse(*qty),
                ProductId::parse(pid),
            ) else {
                return;
            };
            let Ok(line_total) = price.multiply(*qty) else {
                return;
            };
            lines.push(OrderLine {
                product_id,
                name: p.name.clone(),
                quantity,
                unit_price: price,
                line_total,
            });
        }
        let Ok(total) = Money::sum(Currency::EUR, lines.iter().map(|l| &l.line_total)) else {
            return;
        };

        let now = self.now;
        let mut cart_agg = (Cart::default(), 0);
        run(
            &mut self.log,
            now,
            &cart_id,
            &mut cart_agg,
            CartCommand::Open {
                cart_id: cart.clone(),
                customer_id: customer_id.clone(),
            },
        );
        for l in &lines {
            run(
                &mut self.log,
                now,
                &cart_id,
                &mut cart_agg,
                CartCommand::AddItem {
                    product_id: l.product_id.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price.clone(),
                },
            );
        }
        self.now += Duration::seconds(self.rng.range(1, 60) as i64);
        let now = self.now;
        run(
            &mut self.log,
            now,
            &cart_id,
            &mut cart_agg,
            CartCommand::CheckOut {
                order_id: order.clone(),
            },
        );
        let mut order_agg = (Order::default(), 0);
        let placed = run(
            &mut self.log,
            now,
            &order_id,
            &mut order_agg,
            OrderCommand::Place {
                order_id: order.clone(),
                cart_id: cart,
                customer_id,
                customer_email: email.to_owned(),
                shipping_address: ShippingAddress {
                    name: customer.to_owned(),
                    line1: "1 Main Street".to_owned(),
                    line2: None,
                    city: "Berlin".to_owned(),
                    postal_code: "10115".to_owned(),
                    country: "DE".to_owned(),
                },
                lines,
                payment_id: payment.clone(),
                placed_at: now,
            },
        );
        if !placed {
            return;
        }
        for (pid, qty) in &chosen {
            if let Some(agg) = self.products.get_mut(pid) {
                run(
                    &mut self.log,
                    now,
                    pid,
                    agg,
                    ProductCommand::ReserveStock {
                        order_id: order.clone(),
                        quantity: *qty,
                    },
                );
            }
        }
        let mut payment_agg = (Payment::default(), 0);
        run(
            &mut self.log,
            now,
            &payment_id,
            &mut payment_agg,
            PaymentCommand::Request {
                payment_id: payment,
                order_id: order,
                amount: total,
            },
        );
        self.carts.insert(cart_id.clone(), cart_agg);
        self.orders.insert(order_id.clone(), order_agg);
        self.order_ids.push(order_id.clone());
        self.payments.insert(payment_id.clone(), payment_agg);
        self.order_info.insert(
            order_id,
            OrderInfo {
                cart_id,
                payment_id,
                products: chosen,
            },
        );
    }

    /// A random order among the most recent ones in one of `statuses` (older orders have
    /// mostly reached a final state; looking at the recent ones keeps long runs linear).
    fn pick_order(&mut self, statuses: &[OrderStatus]) -> Option<String> {
        let recent = self.order_ids.len().saturating_sub(RECENT_ORDERS);
        let candidates: Vec<String> = self.order_ids[recent..]
            .iter()
            .filter(|id| {
                self.orders
                    .get(*id)
                    .is_some_and(|(o, _)| statuses.contains(&o.status))
            })
            .cloned()
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let i = self.rng.below(candidates.len());
        candidates.get(i).cloned()
    }

    fn order_cmd(&mut self, order_id: &str, command: OrderCommand) -> bool {
        match self.orders.get_mut(order_id) {
            Some(agg) => run(&mut self.log, self.now, order_id, agg, command),
            None => false,
        }
    }

    fn payment_cmd(&mut self, payment_id: &str, command: PaymentCommand) -> bool {
        match self.payments.get_mut(payment_id) {
            Some(agg) => run(&mut self.log, self.now, payment_id, agg, command),
            None => false,
        }
    }

    fn stock_cmd(&mut self, order_id: &str, release: bool) {
        let Ok(order) = OrderId::parse(order_id) else {
            return;
        };
        let products: Vec<String> = self
            .order_info
            .get(order_id)
            .map(|i| i.products.iter().map(|(p, _)| p.clone()).collect())
            .unwrap_or_default();
        for pid in products {
            let command = if release {
                ProductCommand::ReleaseStock {
                    order_id: order.clone(),
                }
            } else {
                ProductCommand::CommitStock {
                    order_id: order.clone(),
                }
            };
            if let Some(agg) = self.products.get_mut(&pid) {
                run(&mut self.log, self.now, &pid, agg, command);
            }
        }
    }

    fn payment_of(&self, order_id: &str) -> Option<(String, Money, PaymentStatus)> {
        let info = self.order_info.get(order_id)?;
        let (payment, _) = self.payments.get(&info.payment_id)?;
        Some((
            info.payment_id.clone(),
            payment.amount.clone()?,
            payment.status,
        ))
    }

    fn progress_payment(&mut self) {
        let Some(order_id) = self.pick_order(UNPAID) else {
            return;
        };
        let Some((payment_id, amount, status)) = self.payment_of(&order_id) else {
            return;
        };
        let intent = format!("pi_{payment_id}");
        let Ok(pid) = PaymentId::parse(&payment_id) else {
            return;
        };
        let at = self.now;
        match status {
            PaymentStatus::Requested => {
                self.payment_cmd(
                    &payment_id,
                    PaymentCommand::RecordIntentCreated {
                        intent_id: intent.clone(),
                    },
                );
                if self.rng.percent(40) {
                    self.payment_cmd(
                        &payment_id,
                        PaymentCommand::RecordProcessing { intent_id: intent },
                    );
                }
            }
            _ => {
                if self.rng.percent(70) {
                    let ok = self.payment_cmd(
                        &payment_id,
                        PaymentCommand::RecordSucceeded {
                            charge_id: Some(intent.replacen("pi_", "ch_", 1)),
                            intent_id: intent,
                            amount: amount.clone(),
                            at,
                        },
                    );
                    if ok {
                        self.order_cmd(
                            &order_id,
                            OrderCommand::MarkPaid {
                                payment_id: pid,
                                amount,
                                at,
                            },
                        );
                    }
                } else {
                    let reason = "card_declined".to_owned();
                    let ok = self.payment_cmd(
                        &payment_id,
                        PaymentCommand::RecordFailed {
                            intent_id: intent,
                            reason: reason.clone(),
                            at,
                        },
                    );
                    if ok {
                        self.order_cmd(
                            &order_id,
                            OrderCommand::RecordPaymentFailure { reason, at },
                        );
                    }
                }
            }
        }
    }

    fn ship_or_deliver(&mut self) {
        let at = self.now;
        if let Some(order_id) = self.pick_order(&[OrderStatus::Paid]) {
            let tracking = self
                .rng
                .percent(70)
                .then(|| format!("TRK{}", self.rng.range(1000, 9999)));
            if self.order_cmd(&order_id, OrderCommand::Ship { tracking, at }) {
                self.stock_cmd(&order_id, false);
            }
        } else if let Some(order_id) = self.pick_order(&[OrderStatus::Shipped]) {
            self.order_cmd(&order_id, OrderCommand::Deliver { at });
        }
    }

    fn cancel(&mut self) {
        let Some(order_id) = self.pick_order(CANCELLABLE) else {
            return;
        };
        let at = self.now;
        let was_paid = self
            .orders
            .get(&order_id)
            .is_some_and(|(o, _)| o.status == OrderStatus::Paid);
        let cancelled = self.order_cmd(
            &order_id,
            OrderCommand::Cancel {
                reason: "customer request".to_owned(),
                at,
            },
        );
        if !cancelled {
            return;
        }
        self.stock_cmd(&order_id, true);
        if was_paid {
            self.refund_amount(&order_id, None);
        }
    }

    /// Erases a customer's personal data (they keep ordering afterwards).
    fn erase(&mut self) {
        let (customer, _) = CUSTOMERS[self.rng.below(CUSTOMERS.len())];
        let Ok(customer_id) = domain::CustomerId::parse(customer) else {
            return;
        };
        let at = self.now;
        let aggregate = self.customers.entry(customer.to_owned()).or_default();
        run(
            &mut self.log,
            at,
            customer,
            aggregate,
            domain::CustomerCommand::Erase {
                customer_id,
                requested_by: "admin".to_owned(),
                at,
            },
        );
    }

    fn expire(&mut self) {
        let Some(order_id) = self.pick_order(UNPAID) else {
            return;
        };
        let at = self.now;
        if self.order_cmd(
            &order_id,
            OrderCommand::Expire {
                at,
                unpaid_for: chrono::Duration::zero(),
            },
        ) {
            self.stock_cmd(&order_id, true);
        }
    }

    fn refund(&mut self) {
        let Some(order_id) = self.pick_order(REFUNDABLE) else {
            return;
        };
        let part = self.rng.percent(60);
        let amount = if part {
            self.payment_of(&order_id).and_then(|(_, total, _)| {
                Money::from_minor(total.to_minor() / 3, Currency::EUR).ok()
            })
        } else {
            None
        };
        self.refund_amount(&order_id, amount);
    }

    /// Refunds `amount` (or everything left) on the payment and then the order, like the
    /// `charge.refunded` process manager.
    fn refund_amount(&mut self, order_id: &str, amount: Option<Money>) {
        let Some((payment_id, total, _)) = self.payment_of(order_id) else {
            return;
        };
        let already = self
            .payments
            .get(&payment_id)
            .and_then(|(p, _)| p.refunded.clone())
            .unwrap_or_else(|| Money::zero(Currency::EUR));
        let Ok(left) = total.checked_sub(&already) else {
            return;
        };
        let increment = amount.unwrap_or(left);
        if increment.is_zero() {
            return;
        }
        let Ok(cumulative) = already.checked_add(&increment) else {
            return;
        };
        let refund_id = self.next_id("re");
        let at = self.now;
        let ok = self.payment_cmd(
            &payment_id,
            PaymentCommand::RecordRefunded {
                refund_id: refund_id.clone(),
                amount_refunded_total: cumulative,
                at,
            },
        );
        if ok {
            self.order_cmd(
                order_id,
                OrderCommand::Refund {
                    refund_id,
                    amount: increment,
                    at,
                },
            );
        }
    }

    fn dispute(&mut self) {
        let Some(order_id) = self.pick_order(&[OrderStatus::Paid, OrderStatus::Shipped]) else {
            return;
        };
        let Some((payment_id, amount, _)) = self.payment_of(&order_id) else {
            return;
        };
        let at = self.now;
        self.payment_cmd(
            &payment_id,
            PaymentCommand::RecordDisputed {
                dispute_id: format!("dp_{payment_id}"),
                reason: "fraudulent".to_owned(),
                status: "needs_response".to_owned(),
                amount: Some(amount),
                at,
            },
        );
    }

    /// The carts created so far (ids), for tests that check carts are ignored.
    pub fn cart_ids(&self) -> Vec<String> {
        self.order_info
            .values()
            .map(|i| i.cart_id.clone())
            .collect()
    }

    /// The write side's state of every product, order and payment, to check that views agree.
    pub fn products(&self) -> impl Iterator<Item = (&str, &Product)> {
        self.products.iter().map(|(id, (p, _))| (id.as_str(), p))
    }

    pub fn orders(&self) -> impl Iterator<Item = (&str, &Order)> {
        self.orders.iter().map(|(id, (o, _))| (id.as_str(), o))
    }

    pub fn payments(&self) -> impl Iterator<Item = (&str, &Payment)> {
        self.payments.iter().map(|(id, (p, _))| (id.as_str(), p))
    }
}

/// A reproducible history of `steps` simulator steps, in commit (feed) order.
pub fn scenario(seed: u64, steps: usize) -> Vec<EventEnvelope> {
    let mut sim = Simulator::new(seed);
    sim.run(steps);
    sim.into_events()
}

/// Cuts `events` into consecutive batches of random sizes in `1..=max`.
pub fn random_batches(
    events: &[EventEnvelope],
    rng: &mut Rng,
    max: usize,
) -> Vec<Vec<EventEnvelope>> {
    let mut out = Vec::new();
    let mut rest = events;
    while !rest.is_empty() {
        let n = (rng.below(max.max(1)) + 1).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head.to_vec());
        rest = tail;
    }
    out
}

/// At-least-once, any-order delivery of `events` (like SQS): shuffled, about a fifth of the
/// events delivered twice, cut into random batches of at most `max`.
pub fn unordered_delivery(
    events: &[EventEnvelope],
    rng: &mut Rng,
    max: usize,
) -> Vec<Vec<EventEnvelope>> {
    let mut all: Vec<EventEnvelope> = events.to_vec();
    for e in events {
        if rng.percent(20) {
            all.push(e.clone());
        }
    }
    rng.shuffle(&mut all);
    random_batches(&all, rng, max)
}
