//! The order-history read model: per order its customer, status, lines, totals, payment status
//! and a timeline of order and payment events; each customer's orders listed newest first.
//!
//! An order document is fed by two streams (the order and its payment) that may arrive in any
//! relative order, so the document keeps the two streams' contributions apart (the order stream
//! owns status, amounts and lines; the payment stream owns payment status and intent id), takes
//! the latest `updated_at`, and keeps the timeline sorted by (time, stream, sequence). Whatever the
//! interleaving, the document ends up the same. Until `OrderPlaced` has been seen the document is
//! not listed and `get_order` reports no order.
//!
//! The timeline lives inside the order document rather than one document per event: a store
//! writes a document once per batch however many events touched it, so this costs one row write
//! per order and batch instead of two per event (entry and index), which is what keeps rebuilds
//! fast.

use crate::describe::{describe_order, describe_payment, dispute_after, DisputeView};
use crate::docs::update_doc;
use crate::erasure;
use crate::store::{
    DocTx, IndexEntry, Projection, ProjectionError, Query, ReadModelError, ReadModelStore,
};
use crate::util::{decode, from_body, get_typed, order_sort, payment_order};
use chrono::{DateTime, Utc};
use commands::EventEnvelope;
use domain::{
    CustomerId, Money, OrderEvent, OrderId, OrderStatus, PaymentEvent, PaymentId, PaymentStatus,
    ProductId, StreamType,
};
use serde::{Deserialize, Serialize};

pub const NAME: &str = "order_history";
/// One document per order, keyed by order id.
pub const ORDERS: &str = "order_history_orders";
/// Payment id -> order id links (payment events that do not name their order).
pub const PAYMENT_LINKS: &str = "order_history_payments";
/// Partition: customer id; sort: placed_at (fixed-width RFC 3339) `#` order id.
pub const BY_CUSTOMER: &str = "orders_by_customer";
/// Each customer's orders and latest erasure, keyed by customer id ([`crate::erasure`]).
pub const CUSTOMERS: &str = "order_history_customers";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = OrderLineSchema))]
pub struct OrderLineView {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub product_id: ProductId,
    pub name: String,
    pub quantity: u32,
    pub unit_price: Money,
    pub line_total: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = OrderTimelineEntrySchema))]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub event_type: String,
    pub description: String,
}

/// An order as its customer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = OrderSchema))]
pub struct OrderView {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub order_id: OrderId,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub customer_id: CustomerId,
    pub customer_email: String,
    pub status: OrderStatus,
    pub lines: Vec<OrderLineView>,
    pub total: Money,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub payment_id: PaymentId,
    /// `None` until the first event of the payment stream has been applied.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub payment_status: Option<PaymentStatus>,
    pub intent_id: Option<String>,
    pub paid: Option<Money>,
    /// Cumulative refunded amount.
    pub refunded: Option<Money>,
    pub tracking: Option<String>,
    /// The latest state of a dispute on the payment, if one was ever opened.
    pub dispute: Option<DisputeView>,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Oldest first.
    pub timeline: Vec<TimelineEntry>,
}

/// What `OrderPlaced` contributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Placed {
    customer_id: CustomerId,
    customer_email: String,
    lines: Vec<OrderLineView>,
    total: Money,
    payment_id: PaymentId,
    placed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DocEntry {
    at: DateTime<Utc>,
    stream: StreamType,
    seq: u64,
    event_type: String,
    description: String,
}

/// The stored document (see the module docs for why it is not the view itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderDoc {
    order_id: String,
    placed: Option<Placed>,
    status: Option<OrderStatus>,
    paid: Option<Money>,
    refunded: Option<Money>,
    tracking: Option<String>,
    payment_status: Option<PaymentStatus>,
    intent_id: Option<String>,
    #[serde(default)]
    dispute: Option<DisputeView>,
    updated_at: Option<DateTime<Utc>>,
    timeline: Vec<DocEntry>,
}

impl OrderDoc {
    fn new(order_id: &str) -> Self {
        Self {
            order_id: order_id.to_owned(),
            placed: None,
            status: None,
            paid: None,
            refunded: None,
            tracking: None,
            payment_status: None,
            intent_id: None,
            dispute: None,
            updated_at: None,
            timeline: Vec::new(),
        }
    }

    fn record(&mut self, event: &EventEnvelope, description: String) {
        let at = event.occurred_at;
        self.updated_at = Some(self.updated_at.map_or(at, |u| u.max(at)));
        let key = (at, event.stream_type, event.sequence);
        let pos = self
            .timeline
            .binary_search_by(|e| (e.at, e.stream, e.seq).cmp(&key));
        if let Err(pos) = pos {
            self.timeline.insert(
                pos,
                DocEntry {
                    at,
                    stream: event.stream_type,
                    seq: event.sequence,
                    event_type: event.event_type.clone(),
                    description,
                },
            );
        }
    }

    fn index(&self) -> Vec<IndexEntry> {
        match &self.placed {
            Some(p) => vec![IndexEntry::new(
                BY_CUSTOMER,
                p.customer_id.as_str(),
                order_sort(&p.placed_at, &self.order_id),
            )],
            None => Vec::new(),
        }
    }

    fn into_view(self) -> Result<Option<OrderView>, ReadModelError> {
        let (Some(placed), Some(status)) = (self.placed, self.status) else {
            return Ok(None);
        };
        let order_id = OrderId::parse(&self.order_id).map_err(|e| ReadModelError::Corrupt {
            collection: ORDERS.to_owned(),
            key: self.order_id.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some(OrderView {
            order_id,
            customer_id: placed.customer_id,
            customer_email: placed.customer_email,
            status,
            lines: placed.lines,
            total: placed.total,
            payment_id: placed.payment_id,
            payment_status: self.payment_status,
            intent_id: self.intent_id,
            paid: self.paid,
            refunded: self.refunded,
            tracking: self.tracking,
            dispute: self.dispute,
            placed_at: placed.placed_at,
            updated_at: self.updated_at.unwrap_or(placed.placed_at),
            timeline: self
                .timeline
                .into_iter()
                .map(|e| TimelineEntry {
                    at: e.at,
                    event_type: e.event_type,
                    description: e.description,
                })
                .collect(),
        }))
    }
}

/// The order-history projection.
#[derive(Debug, Default, Clone, Copy)]
pub struct OrderHistoryProjection;

impl OrderHistoryProjection {
    /// Changes the order's document (created on first use, whichever stream comes first).
    fn update(
        tx: &mut dyn DocTx,
        order_id: &str,
        change: impl FnOnce(&mut OrderDoc),
    ) -> Result<(), ProjectionError> {
        update_doc(tx, ORDERS, order_id, OrderDoc::index, |doc| {
            change(doc.get_or_insert_with(|| OrderDoc::new(order_id)));
        })
    }

    fn apply_order(
        event: &EventEnvelope,
        mut e: OrderEvent,
        tx: &mut dyn DocTx,
    ) -> Result<(), ProjectionError> {
        if let OrderEvent::OrderPlaced {
            customer_id,
            customer_email,
            placed_at,
            ..
        } = &mut e
        {
            if erasure::order_placed(tx, CUSTOMERS, customer_id, &event.stream_id, *placed_at)?
                .is_some()
            {
                *customer_email = erasure::erased_text();
            }
        }
        let description = describe_order(&e);
        Self::update(tx, &event.stream_id, |doc| {
            if let Some(status) = e.status_after() {
                doc.status = Some(status);
            }
            doc.record(event, description);
            match e {
                OrderEvent::OrderPlaced {
                    customer_id,
                    customer_email,
                    lines,
                    total,
                    payment_id,
                    placed_at,
                    ..
                } => {
                    doc.placed = Some(Placed {
                        customer_id,
                        customer_email,
                        lines: lines
                            .into_iter()
                            .map(|l| OrderLineView {
                                product_id: l.product_id,
                                name: l.name,
                                quantity: l.quantity.get(),
                                unit_price: l.unit_price,
                                line_total: l.line_total,
                            })
                            .collect(),
                        total,
                        payment_id,
                        placed_at,
                    });
                }
                OrderEvent::OrderPaid { amount, .. } => doc.paid = Some(amount),
                OrderEvent::OrderShipped { tracking, .. } => doc.tracking = tracking,
                OrderEvent::OrderRefunded { refunded_total, .. } => {
                    doc.refunded = Some(refunded_total);
                }
                OrderEvent::OrderPaymentFailed { .. }
                | OrderEvent::OrderCancelled { .. }
                | OrderEvent::OrderExpired { .. }
                | OrderEvent::OrderDelivered { .. } => {}
            }
        })
    }

    fn apply_payment(
        event: &EventEnvelope,
        e: PaymentEvent,
        tx: &mut dyn DocTx,
    ) -> Result<(), ProjectionError> {
        let Some(order_id) = payment_order(tx, PAYMENT_LINKS, event, &e)? else {
            return Ok(());
        };
        let description = describe_payment(&e);
        Self::update(tx, &order_id, |doc| {
            if let Some(status) = e.status_after() {
                doc.payment_status = Some(status);
            }
            if let Some(intent) = e.intent_id() {
                doc.intent_id = Some(intent.to_owned());
            }
            if let Some(dispute) = dispute_after(doc.dispute.as_ref(), &e) {
                doc.dispute = Some(dispute);
            }
            doc.record(event, description);
        })
    }
}

impl Projection for OrderHistoryProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collections(&self) -> &'static [&'static str] {
        &[ORDERS, PAYMENT_LINKS, CUSTOMERS]
    }

    fn indexes(&self) -> &'static [&'static str] {
        &[BY_CUSTOMER]
    }

    fn streams(&self) -> &'static [StreamType] {
        &[StreamType::Order, StreamType::Payment, StreamType::Customer]
    }

    fn apply(&self, event: &EventEnvelope, tx: &mut dyn DocTx) -> Result<(), ProjectionError> {
        match event.stream_type {
            StreamType::Order => match decode::<OrderEvent>(NAME, event)? {
                Some(e) => Self::apply_order(event, e, tx),
                None => Ok(()),
            },
            StreamType::Payment => match decode::<PaymentEvent>(NAME, event)? {
                Some(e) => Self::apply_payment(event, e, tx),
                None => Ok(()),
            },
            // An erasure: every order it covers forgets its email. (Not on the timelines: an
            // order that arrives after it could not get the same entry, and the document must
            // not depend on arrival order. The erasure is on the customer's own stream.)
            StreamType::Customer => {
                erasure::erase_orders(NAME, tx, CUSTOMERS, event, |tx, order_id, _| {
                    Self::update(tx, order_id, |doc| {
                        if let Some(placed) = doc.placed.as_mut() {
                            placed.customer_email = erasure::erased_text();
                        }
                    })
                })
            }
            StreamType::Cart | StreamType::Product | StreamType::Notification => Ok(()),
        }
    }
}

fn view_of(key: &str, body: serde_json::Value) -> Result<Option<OrderView>, ReadModelError> {
    from_body::<OrderDoc>(ORDERS, key, body)?.into_view()
}

/// One order, or `None` when it has not been placed (or not projected yet).
pub async fn get_order(
    models: &dyn ReadModelStore,
    order_id: &str,
) -> Result<Option<OrderView>, ReadModelError> {
    match get_typed::<OrderDoc>(models, ORDERS, order_id).await? {
        Some(doc) => doc.into_view(),
        None => Ok(None),
    }
}

/// A customer's orders, newest first, at most `limit`.
pub async fn list_orders_for_customer(
    models: &dyn ReadModelStore,
    customer_id: &str,
    limit: usize,
    after: Option<&str>,
) -> Result<crate::Page<OrderView>, ReadModelError> {
    crate::paging::page(
        models,
        Query::new(BY_CUSTOMER, customer_id, limit).descending(),
        after,
        |body| view_of("(listed)", body),
        |view| order_sort(&view.placed_at, view.order_id.as_str()),
    )
    .await
}
