//! The support read model: find orders by email, order id, payment intent id, status and date
//! range, and see one order's timeline joining its order, payment and notification events.
//!
//! Like order history, an order document is fed by the order stream and the payment stream in
//! any relative order; each stream owns its own fields, so the result does not depend on the
//! interleaving. Index entries exist only once `OrderPlaced` (email, placed_at) has been seen, and
//! are recomputed from the whole document on every write, so a status change moves the order from
//! one `support_by_status` partition to the next.
//!
//! Each order's timeline is one document (entries kept sorted by time, stream and sequence, so
//! the arrival order does not matter): a store writes a document once per batch, so this costs one
//! row write per order and batch rather than an entry and an index row per event.

use crate::describe::{
    describe_order, describe_payment, dispute_after, payment_charge, DisputeView,
};
use crate::docs::{no_index, update_doc};
use crate::erasure;
use crate::notifications::NotificationKind;
use crate::paging::Page;
use crate::store::{
    DocTx, IndexEntry, Projection, ProjectionError, Query, ReadModelError, ReadModelStore,
};
use crate::util::{decode, from_body, get_typed, order_sort, payment_order, sort_seq, sort_time};
use chrono::{DateTime, Utc};
use commands::EventEnvelope;
use domain::{
    CustomerId, Money, NotificationEvent, OrderEvent, OrderId, OrderStatus, PaymentEvent,
    PaymentStatus, StreamType,
};
use serde::{Deserialize, Serialize};

pub const NAME: &str = "support";
/// One document per order, keyed by order id.
pub const ORDERS: &str = "support_orders";
/// One timeline document per order, keyed by order id.
pub const TIMELINE: &str = "support_timeline";
/// Payment id -> order id links (payment events that do not name their order).
pub const PAYMENT_LINKS: &str = "support_payments";

/// The order indexes are all sorted by placed_at (fixed-width RFC 3339) `#` order id.
/// Partition: lowercase email.
pub const BY_EMAIL: &str = "support_by_email";
/// Partition: order status (`OrderStatus::as_str`).
pub const BY_STATUS: &str = "support_by_status";
/// Partition: [`DATE_PARTITION`].
pub const BY_DATE: &str = "support_by_date";
pub const DATE_PARTITION: &str = "all";
/// Partition: payment intent id.
pub const BY_INTENT: &str = "support_by_intent";
/// Partition: the provider's charge id, once a success named it.
pub const BY_CHARGE: &str = "support_by_charge";
/// Partition: [`DISPUTED_PARTITION`]; sort as [`BY_DATE`]. Only orders whose payment was ever
/// disputed have this entry.
pub const BY_DISPUTED: &str = "support_by_disputed";
pub const DISPUTED_PARTITION: &str = "disputed";
/// Each customer's orders and latest erasure, keyed by customer id ([`crate::erasure`]).
pub const CUSTOMERS: &str = "support_customers";

/// Most documents `search_orders` examines for one query before returning what it found.
pub const MAX_SCAN: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = SupportOrderSchema))]
pub struct SupportOrderView {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub order_id: OrderId,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub customer_id: CustomerId,
    pub email: String,
    pub status: OrderStatus,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub payment_status: Option<PaymentStatus>,
    pub intent_id: Option<String>,
    /// The provider's charge id, once the payment's success named it.
    pub charge_id: Option<String>,
    /// The latest state of a dispute on the payment, if one was ever opened.
    pub dispute: Option<DisputeView>,
    pub total: Money,
    /// Messages to the customer about this order that could not be delivered.
    pub failed_notifications: u32,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Search criteria; every given criterion must match. Results are newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SupportQuery {
    /// Compared without regard to case.
    pub email: Option<String>,
    pub status: Option<OrderStatus>,
    /// Placed at or after.
    pub from: Option<DateTime<Utc>>,
    /// Placed at or before.
    pub to: Option<DateTime<Utc>>,
    pub order_id: Option<String>,
    pub intent_id: Option<String>,
    pub charge_id: Option<String>,
    /// Only orders whose payment was (`true`) or was never (`false`) disputed.
    pub disputed: Option<bool>,
    pub limit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineSource {
    Order,
    Payment,
    Notification,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = SupportTimelineEntrySchema))]
pub struct SupportTimelineEntry {
    pub at: DateTime<Utc>,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub source: TimelineSource,
    pub event_type: String,
    pub summary: String,
}

/// A stored timeline entry: the view plus the key it is ordered by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredEntry {
    /// occurred_at `#` stream type `#` stream id `#` sequence, with `#n` for the notification an
    /// event caused: unique per entry, and chronological.
    sort: String,
    at: DateTime<Utc>,
    source: TimelineSource,
    event_type: String,
    summary: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct TimelineDoc {
    entries: Vec<StoredEntry>,
}

impl TimelineDoc {
    fn insert(
        &mut self,
        event: &EventEnvelope,
        source: TimelineSource,
        event_type: &str,
        summary: String,
    ) {
        let suffix = if source == TimelineSource::Notification {
            "#n"
        } else {
            ""
        };
        let sort = format!(
            "{}#{}#{}#{}{suffix}",
            sort_time(&event.occurred_at),
            event.stream_type,
            event.stream_id,
            sort_seq(event.sequence)
        );
        if let Err(pos) = self
            .entries
            .binary_search_by(|e| e.sort.as_str().cmp(sort.as_str()))
        {
            self.entries.insert(
                pos,
                StoredEntry {
                    sort,
                    at: event.occurred_at,
                    source,
                    event_type: event_type.to_owned(),
                    summary,
                },
            );
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Placed {
    customer_id: CustomerId,
    email: String,
    total: Money,
    placed_at: DateTime<Utc>,
}

/// The stored order document: the order stream's part and the payment stream's part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SupportDoc {
    order_id: String,
    placed: Option<Placed>,
    status: Option<OrderStatus>,
    payment_status: Option<PaymentStatus>,
    intent_id: Option<String>,
    #[serde(default)]
    charge_id: Option<String>,
    #[serde(default)]
    dispute: Option<DisputeView>,
    #[serde(default)]
    failed_notifications: u32,
    updated_at: Option<DateTime<Utc>>,
}

impl SupportDoc {
    fn new(order_id: &str) -> Self {
        Self {
            order_id: order_id.to_owned(),
            placed: None,
            status: None,
            payment_status: None,
            intent_id: None,
            charge_id: None,
            dispute: None,
            failed_notifications: 0,
            updated_at: None,
        }
    }

    fn touch(&mut self, at: DateTime<Utc>) {
        self.updated_at = Some(self.updated_at.map_or(at, |u| u.max(at)));
    }

    fn index(&self) -> Vec<IndexEntry> {
        let (Some(placed), Some(status)) = (&self.placed, self.status) else {
            return Vec::new();
        };
        let sort = order_sort(&placed.placed_at, &self.order_id);
        let mut index = vec![
            IndexEntry::new(BY_STATUS, status.as_str(), sort.clone()),
            IndexEntry::new(BY_DATE, DATE_PARTITION, sort.clone()),
        ];
        // An erased email is no longer something to search by.
        if placed.email != domain::ERASED {
            index.push(IndexEntry::new(
                BY_EMAIL,
                placed.email.to_lowercase(),
                sort.clone(),
            ));
        }
        if self.dispute.is_some() {
            index.push(IndexEntry::new(
                BY_DISPUTED,
                DISPUTED_PARTITION,
                sort.clone(),
            ));
        }
        if let Some(charge) = &self.charge_id {
            index.push(IndexEntry::new(BY_CHARGE, charge.clone(), sort.clone()));
        }
        if let Some(intent) = &self.intent_id {
            index.push(IndexEntry::new(BY_INTENT, intent.clone(), sort));
        }
        index
    }

    fn into_view(self) -> Result<Option<SupportOrderView>, ReadModelError> {
        let (Some(placed), Some(status)) = (self.placed, self.status) else {
            return Ok(None);
        };
        let order_id = OrderId::parse(&self.order_id).map_err(|e| ReadModelError::Corrupt {
            collection: ORDERS.to_owned(),
            key: self.order_id.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some(SupportOrderView {
            order_id,
            customer_id: placed.customer_id,
            email: placed.email,
            status,
            payment_status: self.payment_status,
            intent_id: self.intent_id,
            charge_id: self.charge_id,
            dispute: self.dispute,
            total: placed.total,
            failed_notifications: self.failed_notifications,
            placed_at: placed.placed_at,
            updated_at: self.updated_at.unwrap_or(placed.placed_at),
        }))
    }
}

/// The support projection.
#[derive(Debug, Default, Clone, Copy)]
pub struct SupportProjection;

impl SupportProjection {
    /// Changes the order's document (created on first use, whichever stream comes first).
    fn update(
        tx: &mut dyn DocTx,
        order_id: &str,
        change: impl FnOnce(&mut SupportDoc),
    ) -> Result<(), ProjectionError> {
        update_doc(tx, ORDERS, order_id, SupportDoc::index, |doc| {
            change(doc.get_or_insert_with(|| SupportDoc::new(order_id)));
        })
    }

    /// Adds the event's entries (and the notification it causes) to the order's timeline.
    fn timeline(
        tx: &mut dyn DocTx,
        order_id: &str,
        event: &EventEnvelope,
        entries: Vec<(TimelineSource, &str, String)>,
    ) -> Result<(), ProjectionError> {
        update_doc(tx, TIMELINE, order_id, no_index, |doc| {
            let doc = doc.get_or_insert_with(TimelineDoc::default);
            for (source, event_type, summary) in entries {
                doc.insert(event, source, event_type, summary);
            }
        })
    }

    fn apply_order(
        event: &EventEnvelope,
        e: OrderEvent,
        tx: &mut dyn DocTx,
    ) -> Result<(), ProjectionError> {
        let order_id = event.stream_id.as_str();
        let erased = match &e {
            OrderEvent::OrderPlaced {
                customer_id,
                placed_at,
                ..
            } => erasure::order_placed(tx, CUSTOMERS, customer_id, order_id, *placed_at)?.is_some(),
            _ => false,
        };
        let mut entries = vec![(
            TimelineSource::Order,
            event.event_type.as_str(),
            describe_order(&e),
        )];
        if let Some(kind) = NotificationKind::for_event(&e) {
            entries.push((
                TimelineSource::Notification,
                kind.as_str(),
                format!("notification queued: {}", kind.subject(order_id)),
            ));
        }
        Self::timeline(tx, order_id, event, entries)?;
        Self::update(tx, order_id, |doc| {
            doc.touch(event.occurred_at);
            if let Some(status) = e.status_after() {
                doc.status = Some(status);
            }
            if let OrderEvent::OrderPlaced {
                customer_id,
                customer_email,
                total,
                placed_at,
                ..
            } = e
            {
                doc.placed = Some(Placed {
                    customer_id,
                    email: if erased {
                        erasure::erased_text()
                    } else {
                        customer_email
                    },
                    total,
                    placed_at,
                });
            }
        })
    }

    /// A delivery attempt goes on the order's timeline; a message given up on is counted on the
    /// order, so that support sees it in search results, until support resends it.
    fn apply_delivery(
        event: &EventEnvelope,
        e: NotificationEvent,
        tx: &mut dyn DocTx,
    ) -> Result<(), ProjectionError> {
        // How the order's count of messages given up on changes.
        let (order_id, summary, failed) = match &e {
            NotificationEvent::NotificationDelivered {
                order_id,
                kind,
                channel,
                attempt,
                ..
            } => (
                order_id,
                format!("{kind} delivered by {channel} (attempt {attempt})"),
                0,
            ),
            NotificationEvent::NotificationRetrying {
                order_id,
                kind,
                channel,
                attempt,
                reason,
                next_attempt_at,
                ..
            } => (
                order_id,
                format!(
                    "{kind} not delivered by {channel} (attempt {attempt}: {reason}); retrying \
                     at {}",
                    next_attempt_at.to_rfc3339()
                ),
                0,
            ),
            NotificationEvent::NotificationFailed {
                order_id,
                kind,
                channel,
                attempt,
                reason,
                ..
            } => (
                order_id,
                format!("{kind} FAILED by {channel} after {attempt} attempts: {reason}"),
                1,
            ),
            NotificationEvent::NotificationResendRequested {
                order_id,
                kind,
                attempts,
                at,
                ..
            } => (
                order_id,
                format!(
                    "{kind} resend requested after {attempts} attempts; due at {}",
                    at.to_rfc3339()
                ),
                -1,
            ),
        };
        let order_id = order_id.as_str();
        Self::timeline(
            tx,
            order_id,
            event,
            vec![(
                TimelineSource::Notification,
                event.event_type.as_str(),
                summary,
            )],
        )?;
        if failed == 0 {
            return Ok(());
        }
        Self::update(tx, order_id, |doc| {
            doc.failed_notifications = doc.failed_notifications.saturating_add_signed(failed);
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
        Self::timeline(
            tx,
            &order_id,
            event,
            vec![(
                TimelineSource::Payment,
                event.event_type.as_str(),
                describe_payment(&e),
            )],
        )?;
        Self::update(tx, &order_id, |doc| {
            doc.touch(event.occurred_at);
            if let Some(status) = e.status_after() {
                doc.payment_status = Some(status);
            }
            if let Some(intent) = e.intent_id() {
                doc.intent_id = Some(intent.to_owned());
            }
            if let Some(charge) = payment_charge(&e) {
                doc.charge_id = Some(charge.to_owned());
            }
            if let Some(dispute) = dispute_after(doc.dispute.as_ref(), &e) {
                doc.dispute = Some(dispute);
            }
        })
    }
}

impl Projection for SupportProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collections(&self) -> &'static [&'static str] {
        &[ORDERS, TIMELINE, PAYMENT_LINKS, CUSTOMERS]
    }

    fn indexes(&self) -> &'static [&'static str] {
        &[
            BY_EMAIL,
            BY_STATUS,
            BY_DATE,
            BY_INTENT,
            BY_CHARGE,
            BY_DISPUTED,
        ]
    }

    fn hot_indexes(&self) -> &'static [&'static str] {
        &[BY_STATUS, BY_DATE, BY_DISPUTED]
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
            // An erasure: every order it covers forgets its email, which also takes it out of
            // the email index (not on the timeline: see `order_history`).
            StreamType::Customer => {
                erasure::erase_orders(NAME, tx, CUSTOMERS, event, |tx, order_id, _| {
                    Self::update(tx, order_id, |doc| {
                        if let Some(placed) = doc.placed.as_mut() {
                            placed.email = erasure::erased_text();
                        }
                    })
                })
            }
            StreamType::Order => match decode::<OrderEvent>(NAME, event)? {
                Some(e) => Self::apply_order(event, e, tx),
                None => Ok(()),
            },
            StreamType::Payment => match decode::<PaymentEvent>(NAME, event)? {
                Some(e) => Self::apply_payment(event, e, tx),
                None => Ok(()),
            },
            StreamType::Notification => match decode::<NotificationEvent>(NAME, event)? {
                Some(e) => Self::apply_delivery(event, e, tx),
                None => Ok(()),
            },
            StreamType::Cart | StreamType::Product => Ok(()),
        }
    }
}

fn view_of(key: &str, body: serde_json::Value) -> Result<Option<SupportOrderView>, ReadModelError> {
    from_body::<SupportDoc>(ORDERS, key, body)?.into_view()
}

fn matches(view: &SupportOrderView, q: &SupportQuery) -> bool {
    q.email
        .as_ref()
        .is_none_or(|e| e.eq_ignore_ascii_case(&view.email))
        && q.status.is_none_or(|s| s == view.status)
        && q.intent_id
            .as_ref()
            .is_none_or(|i| view.intent_id.as_ref() == Some(i))
        && q.charge_id
            .as_ref()
            .is_none_or(|c| view.charge_id.as_ref() == Some(c))
        && q.order_id
            .as_ref()
            .is_none_or(|o| o.as_str() == view.order_id.as_str())
        && q.from.is_none_or(|from| view.placed_at >= from)
        && q.to.is_none_or(|to| view.placed_at <= to)
        && q.disputed.is_none_or(|d| d == view.dispute.is_some())
}

/// The first page of [`search_orders_page`].
pub async fn search_orders(
    models: &dyn ReadModelStore,
    q: &SupportQuery,
) -> Result<Vec<SupportOrderView>, ReadModelError> {
    Ok(search_orders_page(models, q, None).await?.items)
}

/// Orders matching `q`, newest first: the page of `q.limit` after the cursor `after` (see
/// [`crate::paging`]). The most selective index among the criteria is read and the rest are
/// checked on each order, scanning at most [`MAX_SCAN`] orders per page.
pub async fn search_orders_page(
    models: &dyn ReadModelStore,
    q: &SupportQuery,
    after: Option<&str>,
) -> Result<Page<SupportOrderView>, ReadModelError> {
    if q.limit == 0 {
        return Ok(Page {
            items: Vec::new(),
            next: None,
        });
    }
    if let Some(order_id) = &q.order_id {
        let view = match models.get(ORDERS, order_id).await? {
            Some(body) => view_of(order_id, body)?,
            None => None,
        };
        let items = view
            .into_iter()
            .filter(|v| matches(v, q))
            .filter(|v| {
                after.is_none_or(|a| order_sort(&v.placed_at, v.order_id.as_str()).as_str() < a)
            })
            .collect();
        return Ok(Page { items, next: None });
    }
    let email;
    let (index, partition): (&str, &str) = if let Some(intent) = &q.intent_id {
        (BY_INTENT, intent)
    } else if let Some(charge) = &q.charge_id {
        (BY_CHARGE, charge)
    } else if let Some(e) = &q.email {
        email = e.to_lowercase();
        (BY_EMAIL, &email)
    } else if q.disputed == Some(true) {
        (BY_DISPUTED, DISPUTED_PARTITION)
    } else if let Some(status) = q.status {
        (BY_STATUS, status.as_str())
    } else {
        (BY_DATE, DATE_PARTITION)
    };
    let from = q.from.as_ref().map(sort_time);
    // '~' sorts after every id character, so the bound includes orders placed exactly at `to`.
    let mut to = q.to.as_ref().map(|t| format!("{}#~", sort_time(t)));
    // Sort keys are unique within a partition (they end with the order id), so paging continues
    // from the last key seen, inclusive, and skips that one document.
    let mut last: Option<String> = after.map(str::to_owned);
    if let Some(a) = after {
        if to.as_ref().is_none_or(|t| a < t.as_str()) {
            to = Some(a.to_owned());
        }
    }
    let page = (q.limit * 2).clamp(20, 500);
    let mut found = Vec::new();
    let mut scanned = 0;
    let finish = |mut found: Vec<SupportOrderView>| {
        let next = if found.len() > q.limit {
            found.truncate(q.limit);
            found
                .last()
                .map(|v: &SupportOrderView| order_sort(&v.placed_at, v.order_id.as_str()))
        } else {
            None
        };
        Page { items: found, next }
    };
    loop {
        let docs = models
            .query(
                Query::new(index, partition, page)
                    .between(from.as_deref(), to.as_deref())
                    .descending(),
            )
            .await?;
        let n = docs.len();
        for body in docs {
            let Some(view) = view_of("(listed)", body)? else {
                continue;
            };
            let key = order_sort(&view.placed_at, view.order_id.as_str());
            if last.as_ref().is_some_and(|l| key >= *l) {
                continue;
            }
            last = Some(key);
            scanned += 1;
            if matches(&view, q) {
                found.push(view);
                // One more than the page, to know whether another follows.
                if found.len() > q.limit {
                    return Ok(finish(found));
                }
            }
        }
        if n < page {
            return Ok(finish(found));
        }
        if scanned >= MAX_SCAN {
            tracing::debug!(index, scanned, "support search stopped at the scan limit");
            // More may match beyond the scan: continue from the last order scanned.
            let mut page = finish(found);
            if page.next.is_none() {
                page.next = last;
            }
            return Ok(page);
        }
        to.clone_from(&last);
    }
}

/// Unpaid orders (awaiting payment, or whose payment failed) placed at or before `cutoff`,
/// oldest first within each status, at most `limit`: the orders an expiry sweep is due to
/// expire. The read model may lag; the Order aggregate decides whether each one really expires.
pub async fn unpaid_orders_placed_before(
    models: &dyn ReadModelStore,
    cutoff: &DateTime<Utc>,
    limit: usize,
) -> Result<Vec<OrderId>, ReadModelError> {
    // '~' sorts after every id character, so the bound includes orders placed exactly then.
    let to = format!("{}#~", sort_time(cutoff));
    let mut due = Vec::new();
    for status in [OrderStatus::AwaitingPayment, OrderStatus::PaymentFailed] {
        let left = limit.saturating_sub(due.len());
        if left == 0 {
            break;
        }
        let docs = models
            .query(Query::new(BY_STATUS, status.as_str(), left).between(None, Some(&to)))
            .await?;
        for body in docs {
            if let Some(view) = view_of("(listed)", body)? {
                due.push(view.order_id);
            }
        }
    }
    Ok(due)
}

/// One order's timeline (order, payment and notification entries), oldest first.
pub async fn order_timeline(
    models: &dyn ReadModelStore,
    order_id: &str,
) -> Result<Vec<SupportTimelineEntry>, ReadModelError> {
    match get_typed::<TimelineDoc>(models, TIMELINE, order_id).await? {
        Some(doc) => Ok(doc
            .entries
            .into_iter()
            .map(|e| SupportTimelineEntry {
                at: e.at,
                source: e.source,
                event_type: e.event_type,
                summary: e.summary,
            })
            .collect()),
        None => Ok(Vec::new()),
    }
}

/// One order's support view, `None` until it has been placed.
pub async fn get_support_order(
    models: &dyn ReadModelStore,
    order_id: &str,
) -> Result<Option<SupportOrderView>, ReadModelError> {
    match get_typed::<SupportDoc>(models, ORDERS, order_id).await? {
        Some(doc) => doc.into_view(),
        None => Ok(None),
    }
}
