//! Application-layer errors: the domain's rejections, classified, plus conflicts and store
//! failures. The API maps these to HTTP in one place.

use crate::store::StoreError;
use domain::{
    CartError, CustomerError, MoneyError, NotificationError, OrderError, PaymentError, ProductError,
};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The target does not exist (or is not visible to the caller).
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// A field of the request is invalid.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    /// A business rule refused the command (insufficient stock, cart already checked out, ...).
    #[error("{message}")]
    Rejected { code: &'static str, message: String },
    /// Optimistic concurrency lost every retry.
    #[error("version conflict on {stream} after retries")]
    Conflict { stream: String },
    /// The idempotency key was used before for a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("payment provider failure: {0}")]
    Gateway(#[from] crate::ports::GatewayError),
    /// A bug or corrupt data; the message is for logs only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CommandError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        CommandError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn rejected(code: &'static str, message: impl Into<String>) -> Self {
        CommandError::Rejected {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        CommandError::NotFound {
            what,
            id: id.into(),
        }
    }
}

/// Classifies a domain error into a [`CommandError`].
pub trait Rejection {
    fn to_command_error(&self) -> CommandError;
}

fn money(e: &MoneyError, field: &str) -> CommandError {
    match e {
        MoneyError::CurrencyMismatch { .. } => {
            CommandError::rejected("currency_mismatch", e.to_string())
        }
        _ => CommandError::invalid(field, e.to_string()),
    }
}

impl Rejection for CartError {
    fn to_command_error(&self) -> CommandError {
        let msg = self.to_string();
        match self {
            CartError::NotFound => CommandError::not_found("cart", ""),
            CartError::AlreadyExists => CommandError::rejected("cart_exists", msg),
            CartError::AlreadyCheckedOut => CommandError::rejected("cart_checked_out", msg),
            CartError::Abandoned => CommandError::rejected("cart_abandoned", msg),
            CartError::ItemNotInCart { .. } => CommandError::rejected("item_not_in_cart", msg),
            CartError::QuantityTooLarge { .. } => CommandError::invalid("quantity", msg),
            CartError::TooManyLines { .. } => CommandError::rejected("too_many_lines", msg),
            CartError::CurrencyMismatch { .. } => CommandError::rejected("currency_mismatch", msg),
            CartError::EmptyCart => CommandError::rejected("cart_empty", msg),
            CartError::Money(e) => money(e, "price"),
        }
    }
}

impl Rejection for ProductError {
    fn to_command_error(&self) -> CommandError {
        let msg = self.to_string();
        match self {
            ProductError::NotFound => CommandError::not_found("product", ""),
            ProductError::AlreadyExists => CommandError::rejected("product_exists", msg),
            ProductError::InvalidName => CommandError::invalid("name", msg),
            ProductError::InvalidCategory => CommandError::invalid("category", msg),
            ProductError::InvalidQuantity { .. } => CommandError::invalid("quantity", msg),
            ProductError::InsufficientStock { .. } => {
                CommandError::rejected("insufficient_stock", msg)
            }
            ProductError::Retired => CommandError::rejected("product_retired", msg),
            ProductError::InvalidDescription => CommandError::invalid("description", msg),
            ProductError::InvalidReason => CommandError::invalid("reason", msg),
            ProductError::InvalidAdjustment => CommandError::invalid("delta", msg),
            ProductError::BelowReserved { .. } => CommandError::rejected("below_reserved", msg),
            #[allow(unreachable_patterns)]
            _ => CommandError::rejected("product_rejected", msg),
        }
    }
}

impl Rejection for OrderError {
    fn to_command_error(&self) -> CommandError {
        let msg = self.to_string();
        match self {
            OrderError::NotFound => CommandError::not_found("order", ""),
            OrderError::InvalidEmail => CommandError::invalid("customer_email", msg),
            OrderError::InvalidShippingAddress { field } => {
                CommandError::invalid(format!("shipping_address.{field}"), msg)
            }
            OrderError::NoLines => CommandError::rejected("cart_empty", msg),
            OrderError::TooManyLines { .. } => CommandError::rejected("too_many_lines", msg),
            OrderError::InvalidRefundId => CommandError::invalid("refund_id", msg),
            OrderError::ZeroRefund => CommandError::invalid("amount", msg),
            OrderError::RefundExceedsPaid { .. } => {
                CommandError::rejected("refund_exceeds_paid", msg)
            }
            OrderError::InvalidTransition { .. } => {
                CommandError::rejected("invalid_transition", msg)
            }
            OrderError::NotDue { .. } => CommandError::rejected("not_due", msg),
            OrderError::Money(e) => money(e, "amount"),
            #[allow(unreachable_patterns)]
            _ => CommandError::rejected("order_rejected", msg),
        }
    }
}

impl Rejection for NotificationError {
    fn to_command_error(&self) -> CommandError {
        let msg = self.to_string();
        match self {
            NotificationError::AlreadyDelivered => {
                CommandError::rejected("notification_delivered", msg)
            }
            NotificationError::AlreadyFailed => CommandError::rejected("notification_failed", msg),
            NotificationError::NotFailed => CommandError::rejected("notification_not_failed", msg),
            NotificationError::Invalid { field } => CommandError::invalid(*field, msg),
            NotificationError::WrongNotification { .. } => {
                CommandError::invalid("notification_id", msg)
            }
        }
    }
}

impl Rejection for CustomerError {
    fn to_command_error(&self) -> CommandError {
        let msg = self.to_string();
        match self {
            CustomerError::InvalidRequester => CommandError::invalid("requested_by", msg),
            CustomerError::WrongCustomer { .. } => CommandError::invalid("customer_id", msg),
        }
    }
}

impl Rejection for PaymentError {
    fn to_command_error(&self) -> CommandError {
        let msg = self.to_string();
        #[allow(clippy::match_single_binding)]
        match self {
            PaymentError::NotFound => CommandError::not_found("payment", ""),
            _ => CommandError::rejected("payment_rejected", msg),
        }
    }
}
