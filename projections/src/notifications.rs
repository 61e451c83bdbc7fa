//! The notifications read model: per customer, the messages the order lifecycle calls for
//! (confirmed, payment failed, shipped, refund issued, cancelled), rendered, with their delivery
//! status.
//!
//! Only the read model lives here. Sending is a side effect kept apart: a delivery worker lists
//! [`pending_notifications`], sends them and calls [`mark_delivered`]. Deliveries are also
//! recorded in [`DELIVERIES`], a collection the projection does NOT own (rebuild keeps it), and
//! `apply` consults it, so that rebuilding the read model never makes delivered messages pending
//! again (which would send them twice).

use crate::docs::{no_index, peek_doc, put_doc, update_doc};
use crate::store::{
    DocTx, IndexEntry, Projection, ProjectionError, Query, ReadModelError, ReadModelStore,
};
use crate::util::{decode, from_body, sort_time, to_body};
use chrono::{DateTime, Utc};
use commands::EventEnvelope;
use domain::{CustomerId, Money, OrderEvent, OrderId, PaymentEvent, StreamType};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const NAME: &str = "notifications";
/// One document per notification, keyed by the id of the event that caused it.
pub const NOTIFICATIONS: &str = "notifications";
/// What later order events need from `OrderPlaced` (customer, email, total), keyed by order id.
pub const ORDER_INFO: &str = "notif_order_info";
/// Disputes applied before their order's `OrderPlaced`, keyed by order id.
pub const EARLY_DISPUTES: &str = "notif_early_disputes";
/// Delivery records, keyed by notification id. Not owned by the projection: survives rebuilds.
pub const DELIVERIES: &str = "notification_deliveries";
/// Partition: customer id; sort: created_at `#` notification id.
pub const BY_CUSTOMER: &str = "notifications_by_customer";
/// Partition: [`PENDING_PARTITION`]; sort: created_at `#` notification id. Only undelivered
/// notifications have this entry.
pub const PENDING: &str = "notifications_pending";
pub const PENDING_PARTITION: &str = "pending";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    OrderConfirmed,
    PaymentFailed,
    OrderShipped,
    RefundIssued,
    OrderCancelled,
    OrderExpired,
    DisputeOpened,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::OrderConfirmed => "order_confirmed",
            NotificationKind::PaymentFailed => "payment_failed",
            NotificationKind::OrderShipped => "order_shipped",
            NotificationKind::RefundIssued => "refund_issued",
            NotificationKind::OrderCancelled => "order_cancelled",
            NotificationKind::OrderExpired => "order_expired",
            NotificationKind::DisputeOpened => "dispute_opened",
        }
    }

    /// The notification an order event calls for, if any.
    pub fn for_event(event: &OrderEvent) -> Option<NotificationKind> {
        match event {
            OrderEvent::OrderPaid { .. } => Some(NotificationKind::OrderConfirmed),
            OrderEvent::OrderPaymentFailed { .. } => Some(NotificationKind::PaymentFailed),
            OrderEvent::OrderShipped { .. } => Some(NotificationKind::OrderShipped),
            OrderEvent::OrderRefunded { .. } => Some(NotificationKind::RefundIssued),
            OrderEvent::OrderCancelled { .. } => Some(NotificationKind::OrderCancelled),
            OrderEvent::OrderExpired { .. } => Some(NotificationKind::OrderExpired),
            OrderEvent::OrderPlaced { .. } | OrderEvent::OrderDelivered { .. } => None,
        }
    }

    /// The rendered subject line.
    pub fn subject(self, order_id: &str) -> String {
        match self {
            NotificationKind::OrderConfirmed => format!("Order {order_id} confirmed"),
            NotificationKind::PaymentFailed => format!("Payment for order {order_id} failed"),
            NotificationKind::OrderShipped => format!("Order {order_id} has shipped"),
            NotificationKind::RefundIssued => format!("Refund for order {order_id}"),
            NotificationKind::OrderCancelled => format!("Order {order_id} cancelled"),
            NotificationKind::OrderExpired => format!("Order {order_id} expired unpaid"),
            NotificationKind::DisputeOpened => {
                format!("A dispute was opened on the payment for order {order_id}")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Sent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationView {
    /// The id of the event that caused the notification.
    pub notification_id: Uuid,
    pub customer_id: CustomerId,
    /// Where to send it (the order's customer email).
    pub email: String,
    pub order_id: OrderId,
    pub kind: NotificationKind,
    pub subject: String,
    pub body: String,
    pub delivery_status: DeliveryStatus,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl NotificationView {
    /// The sort key of both listings: created_at `#` notification id.
    fn sort_key(&self) -> String {
        format!("{}#{}", sort_time(&self.created_at), self.notification_id)
    }

    fn index(&self) -> Vec<IndexEntry> {
        let sort = self.sort_key();
        let mut index = vec![IndexEntry::new(
            BY_CUSTOMER,
            self.customer_id.as_str(),
            sort.clone(),
        )];
        if self.delivery_status == DeliveryStatus::Pending {
            index.push(IndexEntry::new(PENDING, PENDING_PARTITION, sort));
        }
        index
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderInfo {
    customer_id: CustomerId,
    email: String,
    total: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Delivery {
    delivered_at: DateTime<Utc>,
}

fn render_body(event: &OrderEvent, order_id: &str, info: &OrderInfo) -> String {
    let total = &info.total;
    match event {
        OrderEvent::OrderPaid { amount, .. } => format!(
            "Thank you for your order {order_id}. We received your payment of {amount} and will \
             let you know when it ships."
        ),
        OrderEvent::OrderPaymentFailed { reason, .. } => format!(
            "Your payment of {total} for order {order_id} did not go through ({reason}). You can \
             retry the payment from your order page."
        ),
        OrderEvent::OrderShipped { tracking, .. } => match tracking {
            Some(t) => format!("Your order {order_id} is on its way. Tracking number: {t}."),
            None => format!("Your order {order_id} is on its way."),
        },
        OrderEvent::OrderRefunded {
            amount,
            refunded_total,
            ..
        } => format!(
            "We refunded {amount} for order {order_id} ({refunded_total} of {total} refunded in \
             total). It may take a few days to reach your account."
        ),
        OrderEvent::OrderCancelled {
            reason, was_paid, ..
        } => {
            if *was_paid {
                format!(
                    "Your order {order_id} was cancelled ({reason}). Your payment of {total} will \
                     be refunded."
                )
            } else {
                format!("Your order {order_id} was cancelled ({reason}).")
            }
        }
        OrderEvent::OrderExpired { .. } => format!(
            "Your order {order_id} was cancelled because it was not paid in time. Nothing was \
             charged."
        ),
        OrderEvent::OrderPlaced { .. } | OrderEvent::OrderDelivered { .. } => String::new(),
    }
}

/// The notifications projection.
#[derive(Debug, Default, Clone, Copy)]
pub struct NotificationsProjection;

impl Projection for NotificationsProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collections(&self) -> &'static [&'static str] {
        &[NOTIFICATIONS, ORDER_INFO, EARLY_DISPUTES]
    }

    fn streams(&self) -> &'static [StreamType] {
        &[StreamType::Order, StreamType::Payment]
    }

    fn apply(&self, event: &EventEnvelope, tx: &mut dyn DocTx) -> Result<(), ProjectionError> {
        if event.stream_type == StreamType::Payment {
            return apply_payment(event, tx);
        }
        let Some(e) = decode::<OrderEvent>(NAME, event)? else {
            return Ok(());
        };
        let order_id = event.stream_id.as_str();
        if let OrderEvent::OrderPlaced {
            customer_id,
            customer_email,
            total,
            ..
        } = e
        {
            let info = OrderInfo {
                customer_id,
                email: customer_email,
                total,
            };
            // Disputes of this order's payment that were applied before it (streams arrive in
            // any relative order) are notified now.
            let early: Option<Vec<EarlyDispute>> =
                peek_doc(tx, EARLY_DISPUTES, order_id, no_index)?;
            if let Some(early) = early {
                for dispute in early {
                    notify(
                        tx,
                        dispute.event_id,
                        dispute.at,
                        order_id,
                        NotificationKind::DisputeOpened,
                        dispute_body(order_id, &dispute.reason, &info),
                        &info,
                    )?;
                }
                update_doc::<Vec<EarlyDispute>, _>(
                    tx,
                    EARLY_DISPUTES,
                    order_id,
                    no_index,
                    |doc| *doc = None,
                )?;
            }
            return update_doc(tx, ORDER_INFO, order_id, no_index, |doc| *doc = Some(info));
        }
        let Some(kind) = NotificationKind::for_event(&e) else {
            return Ok(());
        };
        let Some(info) = peek_doc::<OrderInfo>(tx, ORDER_INFO, order_id, no_index)? else {
            // OrderPlaced is the first event of every order stream and gap filling keeps a
            // stream in order, so this only happens for orders created by an unknown event type.
            tracing::warn!(order_id, event_type = %event.event_type, "notification for an unknown order skipped");
            return Ok(());
        };
        let body = render_body(&e, order_id, &info);
        notify(
            tx,
            event.event_id,
            event.occurred_at,
            order_id,
            kind,
            body,
            &info,
        )
    }
}

/// Dispute statuses that close a dispute; any other status means it is open.
const CLOSED_DISPUTE_STATUSES: [&str; 4] = ["won", "lost", "warning_closed", "charge_refunded"];

/// A dispute applied before its order's `OrderPlaced`, notified once that arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EarlyDispute {
    event_id: Uuid,
    at: DateTime<Utc>,
    reason: String,
}

/// The customer hears when a dispute of their payment is opened (not of every later status).
fn apply_payment(event: &EventEnvelope, tx: &mut dyn DocTx) -> Result<(), ProjectionError> {
    let Some(PaymentEvent::PaymentDisputed {
        order_id,
        reason,
        status,
        ..
    }) = decode::<PaymentEvent>(NAME, event)?
    else {
        return Ok(());
    };
    if CLOSED_DISPUTE_STATUSES.contains(&status.as_str()) {
        return Ok(());
    }
    let order_id = order_id.as_str();
    match peek_doc::<OrderInfo>(tx, ORDER_INFO, order_id, no_index)? {
        Some(info) => notify(
            tx,
            event.event_id,
            event.occurred_at,
            order_id,
            NotificationKind::DisputeOpened,
            dispute_body(order_id, &reason, &info),
            &info,
        ),
        None => update_doc(tx, EARLY_DISPUTES, order_id, no_index, |doc| {
            doc.get_or_insert_with(Vec::new).push(EarlyDispute {
                event_id: event.event_id,
                at: event.occurred_at,
                reason,
            })
        }),
    }
}

fn dispute_body(order_id: &str, reason: &str, info: &OrderInfo) -> String {
    format!(
        "Your bank told us that you disputed the payment of {} for order {order_id} ({reason}). \
         We will answer the dispute; reply to this message if it was a mistake.",
        info.total
    )
}

/// Writes the notification caused by event `event_id` (once: a duplicate never gets here).
fn notify(
    tx: &mut dyn DocTx,
    event_id: Uuid,
    created_at: DateTime<Utc>,
    order_id: &str,
    kind: NotificationKind,
    body: String,
    info: &OrderInfo,
) -> Result<(), ProjectionError> {
    let order = OrderId::parse(order_id).map_err(|err| ProjectionError::CorruptDoc {
        collection: ORDER_INFO.to_owned(),
        key: order_id.to_owned(),
        reason: err.to_string(),
    })?;
    let id = event_id.to_string();
    let delivered = peek_doc::<Delivery>(tx, DELIVERIES, &id, no_index)?;
    let view = NotificationView {
        notification_id: event_id,
        customer_id: info.customer_id.clone(),
        email: info.email.clone(),
        order_id: order,
        kind,
        subject: kind.subject(order_id),
        body,
        delivery_status: if delivered.is_some() {
            DeliveryStatus::Sent
        } else {
            DeliveryStatus::Pending
        },
        created_at,
        delivered_at: delivered.map(|d| d.delivered_at),
    };
    put_doc(tx, NOTIFICATIONS, &id, view, NotificationView::index)
}

fn views(docs: Vec<serde_json::Value>) -> Result<Vec<NotificationView>, ReadModelError> {
    docs.into_iter()
        .map(|body| from_body(NOTIFICATIONS, "(listed)", body))
        .collect()
}

/// One notification by id.
pub async fn get_notification(
    models: &dyn ReadModelStore,
    notification_id: &str,
) -> Result<Option<NotificationView>, ReadModelError> {
    models
        .get(NOTIFICATIONS, notification_id)
        .await?
        .map(|body| from_body(NOTIFICATIONS, notification_id, body))
        .transpose()
}

/// A customer's notifications, newest first, at most `limit`.
pub async fn list_notifications_for_customer(
    models: &dyn ReadModelStore,
    customer_id: &str,
    limit: usize,
    after: Option<&str>,
) -> Result<crate::Page<NotificationView>, ReadModelError> {
    crate::paging::page(
        models,
        Query::new(BY_CUSTOMER, customer_id, limit).descending(),
        after,
        |body| from_body(NOTIFICATIONS, "(listed)", body).map(Some),
        NotificationView::sort_key,
    )
    .await
}

/// Undelivered notifications, oldest first, at most `limit` (the delivery worker's queue).
pub async fn pending_notifications(
    models: &dyn ReadModelStore,
    limit: usize,
) -> Result<Vec<NotificationView>, ReadModelError> {
    views(
        models
            .query(Query::new(PENDING, PENDING_PARTITION, limit))
            .await?,
    )
}

/// Records that a notification was sent: writes the delivery record (kept across rebuilds) and
/// takes the notification off the pending list. Returns `false` when there is no such
/// notification or it was already marked. The record is written first; a crash in between
/// leaves the notification pending, so delivery is at least once, never lost.
pub async fn mark_delivered(
    models: &dyn ReadModelStore,
    notification_id: &str,
    at: DateTime<Utc>,
) -> Result<bool, ReadModelError> {
    let Some(mut view) = get_notification(models, notification_id).await? else {
        return Ok(false);
    };
    if view.delivery_status == DeliveryStatus::Sent {
        return Ok(false);
    }
    let record = Delivery { delivered_at: at };
    let encode = |collection: &str, e: ProjectionError| ReadModelError::Corrupt {
        collection: collection.to_owned(),
        key: notification_id.to_owned(),
        reason: e.to_string(),
    };
    let record_body =
        to_body(DELIVERIES, notification_id, &record).map_err(|e| encode(DELIVERIES, e))?;
    models
        .put_doc(DELIVERIES, notification_id, record_body, Vec::new())
        .await?;
    view.delivery_status = DeliveryStatus::Sent;
    view.delivered_at = Some(at);
    let body =
        to_body(NOTIFICATIONS, notification_id, &view).map_err(|e| encode(NOTIFICATIONS, e))?;
    models
        .put_doc(NOTIFICATIONS, notification_id, body, view.index())
        .await?;
    Ok(true)
}
