//! The order aggregate: placed from a checked-out cart, then paid, shipped, delivered, or
//! cancelled, expired and refunded.
//!
//! Commands that process managers redeliver are idempotent: a command whose effect already
//! happened returns no events instead of an error. The status never moves backwards; see
//! [`OrderStatus::can_follow`] for every transition the decisions can make.

use crate::aggregate::{aggregate, domain_events, StreamType};
use crate::ids::{CartId, CustomerId, OrderId, PaymentId, ProductId};
use crate::money::{Money, MoneyError};
use crate::quantity::Quantity;
use crate::text::{is_reference, named_enum, trimmed_within};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// Most lines one order may have. A checkout commits 1 cart + 1 order + 1 payment + one action
/// per product, plus an idempotency item, in one DynamoDB transaction of at most 100 actions; 45
/// keeps a wide margin.
pub const MAX_ORDER_LINES: usize = 45;
/// Longest customer email, in characters (RFC 5321 path limit).
pub const MAX_EMAIL_CHARS: usize = 254;
/// Longest refund reference, in characters.
pub const MAX_REFUND_ID_CHARS: usize = 255;

named_enum! {
    /// Lifecycle of an order. `OrderPlaced` moves a new order straight to `AwaitingPayment`;
    /// `Placed` exists for read models and is never the state of a stream.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(
        feature = "openapi",
        derive(utoipa::ToSchema),
        schema(as = OrderStatusName, rename_all = "snake_case")
    )]
    pub enum OrderStatus {
        /// Not placed yet.
        #[default]
        New = "new",
        Placed = "placed",
        AwaitingPayment = "awaiting_payment",
        PaymentFailed = "payment_failed",
        Paid = "paid",
        Shipped = "shipped",
        Delivered = "delivered",
        Cancelled = "cancelled",
        Expired = "expired",
        Refunded = "refunded",
    }
}

impl OrderStatus {
    /// Whether an order may be in `self` right after being in `previous`: the documented forward
    /// order. Staying put is always allowed. Otherwise:
    ///
    /// - new → placed → awaiting_payment (or new → awaiting_payment directly);
    /// - awaiting_payment ↔ payment_failed, the only back-and-forth;
    /// - awaiting_payment / payment_failed → paid, cancelled or expired;
    /// - paid → shipped → delivered;
    /// - paid → cancelled;
    /// - paid / shipped / delivered / cancelled → refunded.
    ///
    /// Expired and refunded never change.
    pub fn can_follow(self, previous: OrderStatus) -> bool {
        use OrderStatus::*;
        self == previous
            || matches!(
                (previous, self),
                (New, Placed | AwaitingPayment)
                    | (Placed, AwaitingPayment)
                    | (AwaitingPayment, PaymentFailed)
                    | (PaymentFailed, AwaitingPayment)
                    | (AwaitingPayment | PaymentFailed, Paid | Cancelled | Expired)
                    | (Paid, Shipped | Cancelled | Refunded)
                    | (Shipped, Delivered | Refunded)
                    | (Delivered | Cancelled, Refunded)
            )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: ProductId,
    /// The product's name at the time of the order.
    pub name: String,
    pub quantity: Quantity,
    pub unit_price: Money,
    /// Must equal `unit_price * quantity` exactly.
    pub line_total: Money,
}

/// What the warehouse ships for one line: enough for the process manager to commit stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippedLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippingAddress {
    pub name: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case (for example "DE").
    pub country: String,
}

impl ShippingAddress {
    /// Checks every field: name and line1 1..=200 characters, line2 at most 200, city 1..=100,
    /// postal code 1..=20 (all non-blank where required), country two upper-case letters.
    /// The error names the first offending field.
    pub fn validate(&self) -> Result<(), OrderError> {
        let invalid = |field| Err(OrderError::InvalidShippingAddress { field });
        if trimmed_within(&self.name, 200).is_none() {
            return invalid("name");
        }
        if trimmed_within(&self.line1, 200).is_none() {
            return invalid("line1");
        }
        if self.line2.as_ref().is_some_and(|l| l.chars().count() > 200) {
            return invalid("line2");
        }
        if trimmed_within(&self.city, 100).is_none() {
            return invalid("city");
        }
        if trimmed_within(&self.postal_code, 20).is_none() {
            return invalid("postal_code");
        }
        if !(self.country.len() == 2 && self.country.bytes().all(|b| b.is_ascii_uppercase())) {
            return invalid("country");
        }
        Ok(())
    }
}

/// State of one order stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: Option<OrderId>,
    pub cart_id: Option<CartId>,
    pub customer_id: Option<CustomerId>,
    pub customer_email: Option<String>,
    pub shipping_address: Option<ShippingAddress>,
    pub lines: Vec<OrderLine>,
    pub total: Option<Money>,
    pub status: OrderStatus,
    pub payment_id: Option<PaymentId>,
    pub paid: Option<Money>,
    /// Cumulative refunded amount.
    pub refunded: Option<Money>,
    pub refund_ids: BTreeSet<String>,
    pub placed_at: Option<DateTime<Utc>>,
    pub tracking: Option<String>,
}

impl Order {
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    /// What can still be refunded: paid minus refunded, `None` when nothing was paid.
    pub fn refundable(&self) -> Option<Money> {
        let paid = self.paid.as_ref()?;
        match &self.refunded {
            // Refunds never exceed the paid amount, so this does not fail in practice.
            Some(refunded) => paid.checked_sub(refunded).ok(),
            None => Some(paid.clone()),
        }
    }
}

// `Place` is much larger than the other variants. Boxing its address would make every caller
// write `Box::new`, for a value that lives only while one command is decided.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    Place {
        order_id: OrderId,
        cart_id: CartId,
        customer_id: CustomerId,
        customer_email: String,
        shipping_address: ShippingAddress,
        lines: Vec<OrderLine>,
        payment_id: PaymentId,
        placed_at: DateTime<Utc>,
    },
    /// Idempotent: an order already paid (including one paid and then cancelled) ignores it.
    /// An unpaid cancelled or expired order refuses it; the process manager then refunds.
    MarkPaid {
        payment_id: PaymentId,
        amount: Money,
        at: DateTime<Utc>,
    },
    RecordPaymentFailure {
        reason: String,
        at: DateTime<Utc>,
    },
    Cancel {
        reason: String,
        at: DateTime<Utc>,
    },
    /// Expires an order left unpaid for at least `unpaid_for` since it was placed; an earlier
    /// one refuses with `NotDue`.
    Expire {
        at: DateTime<Utc>,
        unpaid_for: chrono::Duration,
    },
    Ship {
        tracking: Option<String>,
        at: DateTime<Utc>,
    },
    Deliver {
        at: DateTime<Utc>,
    },
    /// Records one refund of `amount` (an increment, not a running total).
    Refund {
        refund_id: String,
        amount: Money,
        at: DateTime<Utc>,
    },
}

domain_events! {
    // `OrderPlaced` is much larger than the other variants; see `OrderCommand` for why it is not
    // boxed.
    #[allow(clippy::large_enum_variant)]
    #[derive(Debug, Clone, PartialEq)]
    pub enum OrderEvent in event_names {
        ORDER_PLACED = "OrderPlaced", version 1 => OrderPlaced {
            order_id: OrderId,
            cart_id: CartId,
            customer_id: CustomerId,
            customer_email: String,
            shipping_address: ShippingAddress,
            lines: Vec<OrderLine>,
            total: Money,
            payment_id: PaymentId,
            placed_at: DateTime<Utc>,
        },
        ORDER_PAID = "OrderPaid", version 1 => OrderPaid {
            order_id: OrderId,
            payment_id: PaymentId,
            amount: Money,
            at: DateTime<Utc>,
        },
        ORDER_PAYMENT_FAILED = "OrderPaymentFailed", version 1 => OrderPaymentFailed {
            order_id: OrderId,
            reason: String,
            at: DateTime<Utc>,
        },
        ORDER_CANCELLED = "OrderCancelled", version 1 => OrderCancelled {
            order_id: OrderId,
            reason: String,
            /// True when the order had been paid: the process manager must refund it.
            was_paid: bool,
            at: DateTime<Utc>,
        },
        ORDER_EXPIRED = "OrderExpired", version 1 => OrderExpired {
            order_id: OrderId,
            at: DateTime<Utc>,
        },
        ORDER_SHIPPED = "OrderShipped", version 1 => OrderShipped {
            order_id: OrderId,
            tracking: Option<String>,
            lines: Vec<ShippedLine>,
            at: DateTime<Utc>,
        },
        ORDER_DELIVERED = "OrderDelivered", version 1 => OrderDelivered {
            order_id: OrderId,
            at: DateTime<Utc>,
        },
        ORDER_REFUNDED = "OrderRefunded", version 1 => OrderRefunded {
            order_id: OrderId,
            refund_id: String,
            amount: Money,
            refunded_total: Money,
            /// True when `refunded_total` equals the paid amount.
            full: bool,
            at: DateTime<Utc>,
        },
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order not found")]
    NotFound,
    #[error("order already exists")]
    AlreadyExists,
    #[error("customer email is not a valid address")]
    InvalidEmail,
    #[error("shipping address field {field} is invalid")]
    InvalidShippingAddress { field: &'static str },
    #[error("an order needs at least one line")]
    NoLines,
    #[error("an order cannot have more than {max} lines")]
    TooManyLines { max: usize },
    #[error("product {product_id} appears on more than one line")]
    DuplicateLine { product_id: ProductId },
    #[error("line total of product {product_id} is not unit price times quantity")]
    LineTotalMismatch { product_id: ProductId },
    #[error("order total must be greater than zero")]
    ZeroTotal,
    #[error("payment {actual} does not belong to this order (expected {expected})")]
    PaymentMismatch {
        expected: PaymentId,
        actual: PaymentId,
    },
    #[error("paid amount {actual} does not match the order total {expected}")]
    AmountMismatch { expected: Money, actual: Money },
    #[error("refund of {requested} exceeds the refundable {refundable}")]
    RefundExceedsPaid { requested: Money, refundable: Money },
    #[error("refund id must be 1 to 255 characters without surrounding spaces")]
    InvalidRefundId,
    #[error("refund amount must be greater than zero")]
    ZeroRefund,
    #[error("the order is not due to expire before {due}")]
    NotDue { due: DateTime<Utc> },
    #[error("cannot {action} an order that is {from}")]
    InvalidTransition {
        from: OrderStatus,
        action: &'static str,
    },
    #[error(transparent)]
    Money(#[from] MoneyError),
}

fn is_valid_email(email: &str) -> bool {
    email.chars().count() <= MAX_EMAIL_CHARS
        && !email.chars().any(char::is_whitespace)
        && email
            .rsplit_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
}

/// Checks the lines of a new order and returns their exact total.
fn order_total(lines: &[OrderLine]) -> Result<Money, OrderError> {
    let first = lines.first().ok_or(OrderError::NoLines)?;
    if lines.len() > MAX_ORDER_LINES {
        return Err(OrderError::TooManyLines {
            max: MAX_ORDER_LINES,
        });
    }
    let mut seen = BTreeSet::new();
    for line in lines {
        if !seen.insert(&line.product_id) {
            return Err(OrderError::DuplicateLine {
                product_id: line.product_id.clone(),
            });
        }
        if line.unit_price.multiply(line.quantity.get())? != line.line_total {
            return Err(OrderError::LineTotalMismatch {
                product_id: line.product_id.clone(),
            });
        }
    }
    let total = Money::sum(
        first.unit_price.currency(),
        lines.iter().map(|l| &l.line_total),
    )?;
    if total.is_zero() {
        return Err(OrderError::ZeroTotal);
    }
    Ok(total)
}

impl Order {
    /// Decides a command: pure, synchronous; `Aggregate::handle` calls it.
    pub fn decide(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        match (&self.id, command) {
            (
                None,
                OrderCommand::Place {
                    order_id,
                    cart_id,
                    customer_id,
                    customer_email,
                    shipping_address,
                    lines,
                    payment_id,
                    placed_at,
                },
            ) => {
                if !is_valid_email(&customer_email) {
                    return Err(OrderError::InvalidEmail);
                }
                shipping_address.validate()?;
                let total = order_total(&lines)?;
                Ok(vec![OrderEvent::OrderPlaced {
                    order_id,
                    cart_id,
                    customer_id,
                    customer_email,
                    shipping_address,
                    lines,
                    total,
                    payment_id,
                    placed_at,
                }])
            }
            (Some(_), OrderCommand::Place { .. }) => Err(OrderError::AlreadyExists),
            (None, _) => Err(OrderError::NotFound),
            (Some(order_id), command) => self.decide_placed(order_id.clone(), command),
        }
    }

    /// Folds one event into the state. Never fails: events are facts. `Aggregate::apply`
    /// calls it.
    pub fn evolve(&mut self, event: &OrderEvent) {
        if let Some(status) = event.status_after() {
            self.status = status;
        }
        match event {
            OrderEvent::OrderPlaced {
                order_id,
                cart_id,
                customer_id,
                customer_email,
                shipping_address,
                lines,
                total,
                payment_id,
                placed_at,
            } => {
                self.id = Some(order_id.clone());
                self.cart_id = Some(cart_id.clone());
                self.customer_id = Some(customer_id.clone());
                self.customer_email = Some(customer_email.clone());
                self.shipping_address = Some(shipping_address.clone());
                self.lines = lines.clone();
                self.total = Some(total.clone());
                self.payment_id = Some(payment_id.clone());
                self.placed_at = Some(*placed_at);
            }
            OrderEvent::OrderPaid { amount, .. } => self.paid = Some(amount.clone()),
            OrderEvent::OrderShipped { tracking, .. } => self.tracking = tracking.clone(),
            OrderEvent::OrderRefunded {
                refund_id,
                refunded_total,
                ..
            } => {
                self.refunded = Some(refunded_total.clone());
                self.refund_ids.insert(refund_id.clone());
            }
            OrderEvent::OrderPaymentFailed { .. }
            | OrderEvent::OrderCancelled { .. }
            | OrderEvent::OrderExpired { .. }
            | OrderEvent::OrderDelivered { .. } => {}
        }
    }
}

impl OrderEvent {
    /// The status the order is in after this event; `None` when the event leaves it as it was
    /// (a partial refund). Folding and the read models both take the status from here.
    pub fn status_after(&self) -> Option<OrderStatus> {
        Some(match self {
            OrderEvent::OrderPlaced { .. } => OrderStatus::AwaitingPayment,
            OrderEvent::OrderPaid { .. } => OrderStatus::Paid,
            OrderEvent::OrderPaymentFailed { .. } => OrderStatus::PaymentFailed,
            OrderEvent::OrderCancelled { .. } => OrderStatus::Cancelled,
            OrderEvent::OrderExpired { .. } => OrderStatus::Expired,
            OrderEvent::OrderShipped { .. } => OrderStatus::Shipped,
            OrderEvent::OrderDelivered { .. } => OrderStatus::Delivered,
            OrderEvent::OrderRefunded { full: true, .. } => OrderStatus::Refunded,
            OrderEvent::OrderRefunded { full: false, .. } => return None,
        })
    }
}

aggregate!(
    Order,
    StreamType::Order,
    OrderCommand,
    OrderEvent,
    OrderError
);

impl Order {
    /// Decides a command for an order that has been placed.
    fn decide_placed(
        &self,
        order_id: OrderId,
        command: OrderCommand,
    ) -> Result<Vec<OrderEvent>, OrderError> {
        use OrderStatus::*;
        let from = self.status;
        let invalid = |action| Err(OrderError::InvalidTransition { from, action });
        match command {
            OrderCommand::Place { .. } => Err(OrderError::AlreadyExists),
            OrderCommand::MarkPaid {
                payment_id,
                amount,
                at,
            } => match from {
                Paid | Shipped | Delivered | Refunded => Ok(vec![]),
                // Paid, then cancelled: this payment is already on record (and the cancellation
                // told the process manager to refund it), so a redelivery changes nothing.
                Cancelled if self.paid.is_some() => Ok(vec![]),
                AwaitingPayment | PaymentFailed => {
                    if let Some(expected) = &self.payment_id {
                        if *expected != payment_id {
                            return Err(OrderError::PaymentMismatch {
                                expected: expected.clone(),
                                actual: payment_id,
                            });
                        }
                    }
                    if let Some(total) = &self.total {
                        if *total != amount {
                            return Err(OrderError::AmountMismatch {
                                expected: total.clone(),
                                actual: amount,
                            });
                        }
                    }
                    Ok(vec![OrderEvent::OrderPaid {
                        order_id,
                        payment_id,
                        amount,
                        at,
                    }])
                }
                New | Placed | Cancelled | Expired => invalid("mark_paid"),
            },
            OrderCommand::RecordPaymentFailure { reason, at } => match from {
                AwaitingPayment | PaymentFailed => Ok(vec![OrderEvent::OrderPaymentFailed {
                    order_id,
                    reason,
                    at,
                }]),
                // A failure reported after success, cancellation or expiry changes nothing.
                New | Placed | Paid | Shipped | Delivered | Cancelled | Expired | Refunded => {
                    Ok(vec![])
                }
            },
            OrderCommand::Cancel { reason, at } => match from {
                AwaitingPayment | PaymentFailed | Paid => Ok(vec![OrderEvent::OrderCancelled {
                    order_id,
                    reason,
                    was_paid: self.paid.is_some(),
                    at,
                }]),
                Cancelled => Ok(vec![]),
                New | Placed | Shipped | Delivered | Expired | Refunded => invalid("cancel"),
            },
            OrderCommand::Expire { at, unpaid_for } => match from {
                AwaitingPayment | PaymentFailed => {
                    // A deadline past the end of time never comes.
                    let due = self.placed_at.map(|placed| {
                        placed
                            .checked_add_signed(unpaid_for)
                            .unwrap_or(DateTime::<Utc>::MAX_UTC)
                    });
                    match due {
                        Some(due) if at < due => Err(OrderError::NotDue { due }),
                        _ => Ok(vec![OrderEvent::OrderExpired { order_id, at }]),
                    }
                }
                Expired => Ok(vec![]),
                New | Placed | Paid | Shipped | Delivered | Cancelled | Refunded => {
                    invalid("expire")
                }
            },
            OrderCommand::Ship { tracking, at } => match from {
                Paid => Ok(vec![OrderEvent::OrderShipped {
                    order_id,
                    tracking,
                    lines: self
                        .lines
                        .iter()
                        .map(|l| ShippedLine {
                            product_id: l.product_id.clone(),
                            quantity: l.quantity,
                        })
                        .collect(),
                    at,
                }]),
                _ => invalid("ship"),
            },
            OrderCommand::Deliver { at } => match from {
                Shipped => Ok(vec![OrderEvent::OrderDelivered { order_id, at }]),
                _ => invalid("deliver"),
            },
            OrderCommand::Refund {
                refund_id,
                amount,
                at,
            } => {
                if self.refund_ids.contains(&refund_id) {
                    return Ok(vec![]);
                }
                if !is_reference(&refund_id, MAX_REFUND_ID_CHARS) {
                    return Err(OrderError::InvalidRefundId);
                }
                let Some(paid) = &self.paid else {
                    return invalid("refund");
                };
                if amount.is_zero() {
                    return Err(OrderError::ZeroRefund);
                }
                let already = self
                    .refunded
                    .clone()
                    .unwrap_or_else(|| Money::zero(paid.currency()));
                let refunded_total = already.checked_add(&amount)?;
                let full = match refunded_total.cmp_amount(paid)? {
                    Ordering::Greater => {
                        return Err(OrderError::RefundExceedsPaid {
                            requested: amount,
                            refundable: paid.checked_sub(&already)?,
                        })
                    }
                    Ordering::Equal => true,
                    Ordering::Less => false,
                };
                Ok(vec![OrderEvent::OrderRefunded {
                    order_id,
                    refund_id,
                    amount,
                    refunded_total,
                    full,
                    at,
                }])
            }
        }
    }
}
