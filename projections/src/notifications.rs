//! The notifications read model: per customer, the messages the order lifecycle calls for
//! (confirmed, payment failed, shipped, delivered, refund issued, cancelled, expired, dispute
//! opened), rendered, with their delivery status.
//!
//! Only the read model lives here. Sending is a side effect kept apart: a delivery worker lists
//! the [`due_notifications`], sends them and records each attempt as an event of the
//! notification's own stream (`NotificationDelivered`, `NotificationRetrying`,
//! `NotificationFailed`, and `NotificationResendRequested` when support resends a failed one). This projection follows those streams too, so the delivery status is
//! rebuilt from the history like everything else: a rebuild or a replay never makes a delivered
//! message pending again. Delivery events may arrive before the order event that called for the
//! message (streams interleave freely); they are kept in [`DELIVERIES`] until it does.
use crate::docs::{no_index, peek_doc, put_doc, update_doc};
use crate::erasure;
use crate::store::{
    DocTx, IndexEntry, Projection, ProjectionError, Query, ReadModelError, ReadModelStore,
};
use crate::util::{decode, from_body, get_typed, listed, sort_time};
use chrono::{DateTime, Utc};
use commands::EventEnvelope;
use domain::{
    CustomerId, Money, NotificationEvent, NotificationStatus, OrderEvent, OrderId, PaymentEvent,
    StreamType,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const NAME: &str = "notifications";
/// One document per notification, keyed by the id of the event that caused it.
pub const NOTIFICATIONS: &str = "notifications";
/// What later order events need from `OrderPlaced` (customer, email, total), keyed by order id.
pub const ORDER_INFO: &str = "notif_order_info";
/// Disputes applied before their order's `OrderPlaced`, keyed by order id.
pub const EARLY_DISPUTES: &str = "notif_early_disputes";
/// The delivery state of each notification with recorded attempts, keyed by notification id.
pub const DELIVERIES: &str = "notif_deliveries";
/// Partition: customer id; sort: created_at `#` notification id.
pub const BY_CUSTOMER: &str = "notifications_by_customer";
/// Partition: [`PENDING_PARTITION`]; sort: when the next attempt is due (created_at for a first
/// attempt) `#` notification id. Only pending and retrying notifications have this entry.
pub const PENDING: &str = "notifications_pending";
pub const PENDING_PARTITION: &str = "pending";
/// Partition: [`FAILED_PARTITION`]; sort: created_at `#` notification id. Only failed
/// notifications have this entry: support's list of messages that never arrived.
pub const FAILED: &str = "notifications_failed";
pub const FAILED_PARTITION: &str = "failed";
/// Each customer's orders and latest erasure, keyed by customer id ([`crate::erasure`]).
pub const CUSTOMERS: &str = "notif_customers";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    OrderConfirmed,
    PaymentFailed,
    OrderShipped,
    OrderDelivered,
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
            NotificationKind::OrderDelivered => "order_delivered",
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
            OrderEvent::OrderDelivered { .. } => Some(NotificationKind::OrderDelivered),
            OrderEvent::OrderRefunded { .. } => Some(NotificationKind::RefundIssued),
            OrderEvent::OrderCancelled { .. } => Some(NotificationKind::OrderCancelled),
            OrderEvent::OrderExpired { .. } => Some(NotificationKind::OrderExpired),
            OrderEvent::OrderPlaced { .. } => None,
        }
    }

    /// The rendered subject line.
    pub fn subject(self, order_id: &str) -> String {
        match self {
            NotificationKind::OrderConfirmed => format!("Order {order_id} confirmed"),
            NotificationKind::PaymentFailed => format!("Payment for order {order_id} failed"),
            NotificationKind::OrderShipped => format!("Order {order_id} has shipped"),
            NotificationKind::OrderDelivered => format!("Order {order_id} was delivered"),
            NotificationKind::RefundIssued => format!("Refund for order {order_id}"),
            NotificationKind::OrderCancelled => format!("Order {order_id} cancelled"),
            NotificationKind::OrderExpired => format!("Order {order_id} expired unpaid"),
            NotificationKind::DisputeOpened => {
                format!("A dispute was opened on the payment for order {order_id}")
            }
        }
    }
}

/// Where a notification's delivery stands (the Notification aggregate's status).
pub type DeliveryStatus = NotificationStatus;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = NotificationSchema))]
pub struct NotificationView {
    /// The id of the event that caused the notification.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "0190a5c2-7d1e-7c3a-9f00-4b1d2e3f4a5b"))]
    pub notification_id: Uuid,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub customer_id: CustomerId,
    /// Where to send it (the order's customer email).
    pub email: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub order_id: OrderId,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub kind: NotificationKind,
    pub subject: String,
    pub body: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub delivery_status: DeliveryStatus,
    pub created_at: DateTime<Utc>,
    /// Attempts to send it so far.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub attempts: u32,
    /// When the next attempt is due, while it is pending or retrying.
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed, if it did.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The channel that delivered it, and the provider's id for the message.
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub message_id: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub failed_at: Option<DateTime<Utc>>,
    /// Set when the customer's personal data was erased before it was delivered: it will not be
    /// sent (and its address reads erased).
    #[serde(default)]
    pub cancelled_at: Option<DateTime<Utc>>,
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
        match self.delivery_status {
            NotificationStatus::Pending | NotificationStatus::Retrying
                if self.cancelled_at.is_some() => {}
            NotificationStatus::Pending | NotificationStatus::Retrying => {
                let due = self.next_attempt_at.unwrap_or(self.created_at);
                index.push(IndexEntry::new(
                    PENDING,
                    PENDING_PARTITION,
                    format!("{}#{}", sort_time(&due), self.notification_id),
                ));
            }
            NotificationStatus::Failed => {
                index.push(IndexEntry::new(FAILED, FAILED_PARTITION, sort));
            }
            NotificationStatus::Delivered => {}
        }
        index
    }

    /// Sets the delivery fields from the recorded attempts. A message that was delivered (or
    /// given up on) was never cancelled, whenever the erasure came.
    fn set_delivery(&mut self, delivery: &Delivery) {
        if delivery.status.is_closed() {
            self.cancelled_at = None;
        }
        self.delivery_status = delivery.status;
        self.attempts = delivery.attempts;
        self.next_attempt_at = delivery.next_attempt_at;
        self.last_error.clone_from(&delivery.last_error);
        self.channel.clone_from(&delivery.channel);
        self.message_id.clone_from(&delivery.message_id);
        self.delivered_at = delivery.delivered_at;
        self.failed_at = delivery.failed_at;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderInfo {
    customer_id: CustomerId,
    email: String,
    total: Money,
    /// The notifications this order called for (sorted), so an erasure finds them.
    #[serde(default)]
    notifications: Vec<String>,
    /// The latest erasure of the customer that covers this order.
    #[serde(default)]
    erased_at: Option<DateTime<Utc>>,
}

/// The delivery state folded from a notification's stream, kept apart from the view so that it
/// survives an early arrival (before the order event that called for the message).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Delivery {
    status: NotificationStatus,
    /// The sequence of the last delivery event applied: an older one arriving late is ignored.
    sequence: u64,
    attempts: u32,
    next_attempt_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    channel: Option<String>,
    message_id: Option<String>,
    delivered_at: Option<DateTime<Utc>>,
    failed_at: Option<DateTime<Utc>>,
}

impl Delivery {
    /// Folds one delivery event in; `false` for an event older than what is already folded.
    fn record(&mut self, sequence: u64, event: NotificationEvent) -> bool {
        if sequence <= self.sequence {
            return false;
        }
        self.sequence = sequence;
        match event {
            NotificationEvent::NotificationDelivered {
                channel,
                attempt,
                message_id,
                at,
                ..
            } => {
                self.status = NotificationStatus::Delivered;
                self.attempts = attempt;
                self.next_attempt_at = None;
                self.channel = Some(channel);
                self.message_id = message_id;
                self.delivered_at = Some(at);
            }
            NotificationEvent::NotificationRetrying {
                channel,
                attempt,
                reason,
                next_attempt_at,
                ..
            } => {
                self.status = NotificationStatus::Retrying;
                self.attempts = attempt;
                self.next_attempt_at = Some(next_attempt_at);
                self.channel = Some(channel);
                self.last_error = Some(reason);
            }
            NotificationEvent::NotificationFailed {
                channel,
                attempt,
                reason,
                at,
                ..
            } => {
                self.status = NotificationStatus::Failed;
                self.attempts = attempt;
                self.next_attempt_at = None;
                self.channel = Some(channel);
                self.last_error = Some(reason);
                self.failed_at = Some(at);
            }
            // Support asked to try once more: pending again, due at `at`.
            NotificationEvent::NotificationResendRequested { at, .. } => {
                self.status = NotificationStatus::Retrying;
                self.next_attempt_at = Some(at);
                self.failed_at = None;
            }
        }
        true
    }
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
        OrderEvent::OrderDelivered { .. } => format!(
            "Your order {order_id} was delivered. We hope you enjoy it; reply to this message if \
             anything is wrong."
        ),
        OrderEvent::OrderPlaced { .. } => String::new(),
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
        &[
            NOTIFICATIONS,
            ORDER_INFO,
            EARLY_DISPUTES,
            DELIVERIES,
            CUSTOMERS,
        ]
    }

    fn indexes(&self) -> &'static [&'static str] {
        &[BY_CUSTOMER, PENDING, FAILED]
    }

    fn hot_indexes(&self) -> &'static [&'static str] {
        &[PENDING, FAILED]
    }

    fn streams(&self) -> &'static [StreamType] {
        &[
            StreamType::Order,
            StreamType::Payment,
            StreamType::Notification,
            StreamType::Customer,
        ]
    }

    fn apply(&self, event: &EventEnvelope, tx: &mut dyn DocTx) -> Result<(), ProjectionError> {
        match event.stream_type {
            StreamType::Payment => return apply_payment(event, tx),
            StreamType::Notification => return apply_delivery(event, tx),
            StreamType::Customer => return apply_customer(event, tx),
            _ => {}
        }
        let Some(e) = decode::<OrderEvent>(NAME, event)? else {
            return Ok(());
        };
        let order_id = event.stream_id.as_str();
        if let OrderEvent::OrderPlaced {
            customer_id,
            customer_email,
            total,
            placed_at,
            ..
        } = e
        {
            let erased_at =
                erasure::order_placed(tx, CUSTOMERS, &customer_id, order_id, placed_at)?;
            let mut info = OrderInfo {
                customer_id,
                email: if erased_at.is_some() {
                    erasure::erased_text()
                } else {
                    customer_email
                },
                total,
                notifications: Vec::new(),
                erased_at,
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
                    insert_sorted(&mut info.notifications, dispute.event_id.to_string());
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

/// An erasure: every order the customer placed up to it forgets the address, and each of its
/// notifications too; those not delivered yet are cancelled.
fn apply_customer(event: &EventEnvelope, tx: &mut dyn DocTx) -> Result<(), ProjectionError> {
    erasure::erase_orders(NAME, tx, CUSTOMERS, event, |tx, order_id, at| {
        let notifications = update_doc(
            tx,
            ORDER_INFO,
            order_id,
            no_index,
            |doc: &mut Option<OrderInfo>| {
                doc.as_mut().map_or_else(Vec::new, |info| {
                    info.email = erasure::erased_text();
                    info.erased_at = Some(info.erased_at.map_or(at, |e| e.max(at)));
                    info.notifications.clone()
                })
            },
        )?;
        for id in notifications {
            let Some(mut view) = peek_doc::<NotificationView>(tx, NOTIFICATIONS, &id, no_index)?
            else {
                continue;
            };
            view.email = erasure::erased_text();
            if !view.delivery_status.is_closed() {
                view.cancelled_at = Some(view.cancelled_at.map_or(at, |c| c.max(at)));
            }
            put_doc(tx, NOTIFICATIONS, &id, view, NotificationView::index)?;
        }
        Ok(())
    })
}

/// A recorded delivery attempt: folds it into the notification's delivery state and, when the
/// notification is known, into its view (and its place in the pending and failed lists).
fn apply_delivery(event: &EventEnvelope, tx: &mut dyn DocTx) -> Result<(), ProjectionError> {
    let Some(e) = decode::<NotificationEvent>(NAME, event)? else {
        return Ok(());
    };
    let id = event.stream_id.as_str();
    let mut delivery = peek_doc::<Delivery>(tx, DELIVERIES, id, no_index)?.unwrap_or_default();
    if !delivery.record(event.sequence, e) {
        return Ok(());
    }
    let view = peek_doc::<NotificationView>(tx, NOTIFICATIONS, id, no_index)?;
    if let Some(mut view) = view {
        view.set_delivery(&delivery);
        put_doc(tx, NOTIFICATIONS, id, view, NotificationView::index)?;
    }
    put_doc(tx, DELIVERIES, id, delivery, no_index)
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
    let delivery = peek_doc::<Delivery>(tx, DELIVERIES, &id, no_index)?.unwrap_or_default();
    let mut view = NotificationView {
        notification_id: event_id,
        customer_id: info.customer_id.clone(),
        email: info.email.clone(),
        order_id: order,
        kind,
        subject: kind.subject(order_id),
        body,
        delivery_status: NotificationStatus::Pending,
        created_at,
        attempts: 0,
        next_attempt_at: None,
        last_error: None,
        channel: None,
        message_id: None,
        delivered_at: None,
        failed_at: None,
        // An order whose customer was erased before this was called for: nowhere to send it.
        cancelled_at: info.erased_at,
    };
    view.set_delivery(&delivery);
    put_doc(tx, NOTIFICATIONS, &id, view, NotificationView::index)?;
    update_doc(
        tx,
        ORDER_INFO,
        order_id,
        no_index,
        |doc: &mut Option<OrderInfo>| {
            if let Some(info) = doc.as_mut() {
                insert_sorted(&mut info.notifications, id.clone());
            }
        },
    )
}

fn insert_sorted(ids: &mut Vec<String>, id: String) {
    if let Err(pos) = ids.binary_search(&id) {
        ids.insert(pos, id);
    }
}

/// The notifications `query` lists.
async fn views(
    models: &dyn ReadModelStore,
    query: Query<'_>,
) -> Result<Vec<NotificationView>, ReadModelError> {
    models
        .query(query)
        .await?
        .into_iter()
        .map(|body| from_body(NOTIFICATIONS, "(listed)", body))
        .collect()
}

/// The page of the notifications `query` lists after the cursor `after`.
async fn page_of_views(
    models: &dyn ReadModelStore,
    query: Query<'_>,
    after: Option<&str>,
) -> Result<crate::Page<NotificationView>, ReadModelError> {
    crate::paging::page(
        models,
        query,
        after,
        listed(NOTIFICATIONS),
        NotificationView::sort_key,
    )
    .await
}

/// One notification by id.
pub async fn get_notification(
    models: &dyn ReadModelStore,
    notification_id: &str,
) -> Result<Option<NotificationView>, ReadModelError> {
    get_typed(models, NOTIFICATIONS, notification_id).await
}

/// A customer's notifications, newest first, at most `limit`.
pub async fn list_notifications_for_customer(
    models: &dyn ReadModelStore,
    customer_id: &str,
    limit: usize,
    after: Option<&str>,
) -> Result<crate::Page<NotificationView>, ReadModelError> {
    let query = Query::new(BY_CUSTOMER, customer_id, limit).descending();
    page_of_views(models, query, after).await
}

/// Notifications whose next attempt is due at `now`, the most overdue first, at most `limit`
/// (the delivery worker's queue).
pub async fn due_notifications(
    models: &dyn ReadModelStore,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<NotificationView>, ReadModelError> {
    // The sort key starts with the due time, and `~` sorts after every character of an id.
    let until = format!("{}#~", sort_time(&now));
    let query = Query::new(PENDING, PENDING_PARTITION, limit).between(None, Some(&until));
    views(models, query).await
}

/// Notifications still to be delivered (pending or retrying), soonest due first, at most
/// `limit`.
pub async fn pending_notifications(
    models: &dyn ReadModelStore,
    limit: usize,
) -> Result<Vec<NotificationView>, ReadModelError> {
    views(models, Query::new(PENDING, PENDING_PARTITION, limit)).await
}

/// Notifications given up on, newest first: the page of `limit` after the cursor `after`.
pub async fn failed_notifications(
    models: &dyn ReadModelStore,
    limit: usize,
    after: Option<&str>,
) -> Result<crate::Page<NotificationView>, ReadModelError> {
    let query = Query::new(FAILED, FAILED_PARTITION, limit).descending();
    page_of_views(models, query, after).await
}
