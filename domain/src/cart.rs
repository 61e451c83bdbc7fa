//! The cart aggregate: a customer's lines before checkout.
//!
//! A cart holds one currency (that of its first line; it is cleared when the last line goes),
//! at most [`MAX_CART_LINES`] distinct products and at most [`MAX_QUANTITY`] of each. Prices come
//! in with the command (the command service reads the catalogue first). Once checked out or
//! abandoned, a cart refuses every command.

use crate::aggregate::{
    check_version, decode_tagged, encode_payload, encode_payload_json, DecodeError, Event,
    EventSourced, StreamType,
};
use crate::ids::{CartId, CustomerId, OrderId, ProductId};
use crate::money::{Currency, Money, MoneyError};
use crate::quantity::{Quantity, MAX_QUANTITY};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most distinct products one cart may hold.
pub const MAX_CART_LINES: usize = 50;

/// Stored event names of the cart stream (all at version 1).
pub mod event_names {
    pub const CART_OPENED: &str = "CartOpened";
    pub const ITEM_ADDED: &str = "ItemAdded";
    pub const ITEM_QUANTITY_CHANGED: &str = "ItemQuantityChanged";
    pub const ITEM_REMOVED: &str = "ItemRemoved";
    pub const CART_CHECKED_OUT: &str = "CartCheckedOut";
    pub const CART_ABANDONED: &str = "CartAbandoned";

    /// The current version of a cart event type, or `None` for a name this stream never wrote.
    pub fn cart_event_version(event_type: &str) -> Option<u32> {
        match event_type {
            CART_OPENED
            | ITEM_ADDED
            | ITEM_QUANTITY_CHANGED
            | ITEM_REMOVED
            | CART_CHECKED_OUT
            | CART_ABANDONED => Some(1),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CartStatus {
    /// Not opened yet.
    #[default]
    New,
    Open,
    CheckedOut,
    Abandoned,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
    pub unit_price: Money,
    /// `unit_price * quantity`, exact.
    pub line_total: Money,
}

/// State of one cart stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cart {
    pub id: Option<CartId>,
    pub customer_id: Option<CustomerId>,
    /// The currency of the lines; `None` while the cart is empty.
    pub currency: Option<Currency>,
    pub lines: BTreeMap<ProductId, CartLine>,
    pub status: CartStatus,
    /// The order the cart was checked out into.
    pub order_id: Option<OrderId>,
}

impl Cart {
    /// Sum of the line totals; `None` while the cart has no lines (and so no currency).
    pub fn total(&self) -> Option<Money> {
        let currency = self.currency?;
        Money::sum(currency, self.lines.values().map(|l| &l.line_total)).ok()
    }

    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    /// The cart total if line `product_id` had `line_total` (added or replaced): checks that the
    /// total stays representable, so that `total()` and checkout can never fail.
    fn total_with(&self, product_id: &ProductId, line_total: &Money) -> Result<Money, MoneyError> {
        let others = self
            .lines
            .values()
            .filter(|l| &l.product_id != product_id)
            .map(|l| &l.line_total);
        Money::sum(
            line_total.currency(),
            others.chain(std::iter::once(line_total)),
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CartCommand {
    Open {
        cart_id: CartId,
        customer_id: CustomerId,
    },
    /// Adds `quantity` to the line of `product_id`, creating it when absent. The whole line is
    /// (re)priced at `unit_price`, the current catalogue price fetched by the caller.
    AddItem {
        product_id: ProductId,
        quantity: Quantity,
        unit_price: Money,
    },
    ChangeQuantity {
        product_id: ProductId,
        quantity: Quantity,
    },
    RemoveItem {
        product_id: ProductId,
    },
    CheckOut {
        order_id: OrderId,
    },
    Abandon,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum CartEvent {
    #[serde(rename = "CartOpened")]
    CartOpened {
        cart_id: CartId,
        customer_id: CustomerId,
    },
    /// `quantity` is the line's new total quantity, not the increment.
    #[serde(rename = "ItemAdded")]
    ItemAdded {
        cart_id: CartId,
        product_id: ProductId,
        quantity: Quantity,
        unit_price: Money,
        line_total: Money,
    },
    #[serde(rename = "ItemQuantityChanged")]
    ItemQuantityChanged {
        cart_id: CartId,
        product_id: ProductId,
        quantity: Quantity,
        line_total: Money,
    },
    #[serde(rename = "ItemRemoved")]
    ItemRemoved {
        cart_id: CartId,
        product_id: ProductId,
    },
    #[serde(rename = "CartCheckedOut")]
    CartCheckedOut {
        cart_id: CartId,
        order_id: OrderId,
        total: Money,
    },
    #[serde(rename = "CartAbandoned")]
    CartAbandoned { cart_id: CartId },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CartError {
    #[error("cart not found")]
    NotFound,
    #[error("cart already exists")]
    AlreadyExists,
    #[error("cart is already checked out")]
    AlreadyCheckedOut,
    #[error("cart was abandoned")]
    Abandoned,
    #[error("product {product_id} is not in the cart")]
    ItemNotInCart { product_id: ProductId },
    #[error("quantity {requested} of product {product_id} exceeds the maximum of {max}")]
    QuantityTooLarge {
        product_id: ProductId,
        requested: u32,
        max: u32,
    },
    #[error("cart cannot hold more than {max} lines")]
    TooManyLines { max: usize },
    #[error("item priced in {item} cannot join a cart in {cart}")]
    CurrencyMismatch { cart: Currency, item: Currency },
    #[error("cart is empty")]
    EmptyCart,
    #[error(transparent)]
    Money(#[from] MoneyError),
}

impl Event for CartEvent {
    fn event_type(&self) -> &'static str {
        use event_names::*;
        match self {
            CartEvent::CartOpened { .. } => CART_OPENED,
            CartEvent::ItemAdded { .. } => ITEM_ADDED,
            CartEvent::ItemQuantityChanged { .. } => ITEM_QUANTITY_CHANGED,
            CartEvent::ItemRemoved { .. } => ITEM_REMOVED,
            CartEvent::CartCheckedOut { .. } => CART_CHECKED_OUT,
            CartEvent::CartAbandoned { .. } => CART_ABANDONED,
        }
    }

    fn event_version(&self) -> u32 {
        1
    }

    fn payload(&self) -> serde_json::Value {
        encode_payload(self)
    }

    fn current_version(event_type: &str) -> Option<u32> {
        event_names::cart_event_version(event_type)
    }

    fn payload_json(&self) -> String {
        encode_payload_json(self, self.event_type())
    }

    fn decode(
        event_type: &str,
        event_version: u32,
        payload: serde_json::Value,
    ) -> Result<Self, DecodeError> {
        let current = event_names::cart_event_version(event_type).ok_or_else(|| {
            DecodeError::UnknownType {
                event_type: event_type.to_owned(),
            }
        })?;
        check_version(event_type, event_version, current)?;
        decode_tagged(event_type, payload).map_err(|e| e.with_version(event_version))
    }
}

impl EventSourced for Cart {
    const STREAM_TYPE: StreamType = StreamType::Cart;
    type Command = CartCommand;
    type Event = CartEvent;
    type Error = CartError;

    fn decide(&self, command: CartCommand) -> Result<Vec<CartEvent>, CartError> {
        match (&self.id, command) {
            (
                None,
                CartCommand::Open {
                    cart_id,
                    customer_id,
                },
            ) => Ok(vec![CartEvent::CartOpened {
                cart_id,
                customer_id,
            }]),
            (Some(_), CartCommand::Open { .. }) => Err(CartError::AlreadyExists),
            (None, _) => Err(CartError::NotFound),
            (Some(id), command) => match self.status {
                CartStatus::CheckedOut => Err(CartError::AlreadyCheckedOut),
                CartStatus::Abandoned => Err(CartError::Abandoned),
                CartStatus::New | CartStatus::Open => self.decide_open(id.clone(), command),
            },
        }
    }

    fn apply(&mut self, event: &CartEvent) {
        match event {
            CartEvent::CartOpened {
                cart_id,
                customer_id,
            } => {
                self.id = Some(cart_id.clone());
                self.customer_id = Some(customer_id.clone());
                self.status = CartStatus::Open;
            }
            CartEvent::ItemAdded {
                product_id,
                quantity,
                unit_price,
                line_total,
                ..
            } => {
                self.currency = Some(unit_price.currency());
                self.lines.insert(
                    product_id.clone(),
                    CartLine {
                        product_id: product_id.clone(),
                        quantity: *quantity,
                        unit_price: unit_price.clone(),
                        line_total: line_total.clone(),
                    },
                );
            }
            CartEvent::ItemQuantityChanged {
                product_id,
                quantity,
                line_total,
                ..
            } => {
                if let Some(line) = self.lines.get_mut(product_id) {
                    line.quantity = *quantity;
                    line.line_total = line_total.clone();
                }
            }
            CartEvent::ItemRemoved { product_id, .. } => {
                self.lines.remove(product_id);
                if self.lines.is_empty() {
                    self.currency = None;
                }
            }
            CartEvent::CartCheckedOut { order_id, .. } => {
                self.status = CartStatus::CheckedOut;
                self.order_id = Some(order_id.clone());
            }
            CartEvent::CartAbandoned { .. } => self.status = CartStatus::Abandoned,
        }
    }
}

impl Cart {
    /// Decides a command for an existing, open cart.
    fn decide_open(
        &self,
        cart_id: CartId,
        command: CartCommand,
    ) -> Result<Vec<CartEvent>, CartError> {
        match command {
            CartCommand::Open { .. } => Err(CartError::AlreadyExists),
            CartCommand::AddItem {
                product_id,
                quantity,
                unit_price,
            } => {
                if let Some(cart) = self.currency {
                    if cart != unit_price.currency() {
                        return Err(CartError::CurrencyMismatch {
                            cart,
                            item: unit_price.currency(),
                        });
                    }
                }
                let quantity = match self.lines.get(&product_id) {
                    Some(line) => line.quantity.checked_add(quantity).map_err(|e| {
                        CartError::QuantityTooLarge {
                            product_id: product_id.clone(),
                            requested: e.value,
                            max: MAX_QUANTITY,
                        }
                    })?,
                    None if self.lines.len() >= MAX_CART_LINES => {
                        return Err(CartError::TooManyLines {
                            max: MAX_CART_LINES,
                        })
                    }
                    None => quantity,
                };
                let line_total = unit_price.multiply(quantity.get())?;
                self.total_with(&product_id, &line_total)?;
                Ok(vec![CartEvent::ItemAdded {
                    cart_id,
                    product_id,
                    quantity,
                    unit_price,
                    line_total,
                }])
            }
            CartCommand::ChangeQuantity {
                product_id,
                quantity,
            } => {
                let line = self
                    .lines
                    .get(&product_id)
                    .ok_or_else(|| CartError::ItemNotInCart {
                        product_id: product_id.clone(),
                    })?;
                if line.quantity == quantity {
                    return Ok(vec![]);
                }
                let line_total = line.unit_price.multiply(quantity.get())?;
                self.total_with(&product_id, &line_total)?;
                Ok(vec![CartEvent::ItemQuantityChanged {
                    cart_id,
                    product_id,
                    quantity,
                    line_total,
                }])
            }
            CartCommand::RemoveItem { product_id } => {
                if !self.lines.contains_key(&product_id) {
                    return Err(CartError::ItemNotInCart { product_id });
                }
                Ok(vec![CartEvent::ItemRemoved {
                    cart_id,
                    product_id,
                }])
            }
            CartCommand::CheckOut { order_id } => {
                let currency = match self.currency {
                    Some(c) if !self.lines.is_empty() => c,
                    _ => return Err(CartError::EmptyCart),
                };
                let total = Money::sum(currency, self.lines.values().map(|l| &l.line_total))?;
                Ok(vec![CartEvent::CartCheckedOut {
                    cart_id,
                    order_id,
                    total,
                }])
            }
            CartCommand::Abandon => Ok(vec![CartEvent::CartAbandoned { cart_id }]),
        }
    }
}
