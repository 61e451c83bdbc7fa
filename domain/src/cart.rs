//! The cart aggregate: a customer's lines before checkout.
//!
//! A cart holds one currency (that of its first line; it is cleared when the last line goes),
//! at most [`MAX_CART_LINES`] distinct products and at most [`MAX_QUANTITY`] of each. Prices come
//! in with the command (the command service reads the catalogue first). Once checked out or
//! abandoned, a cart refuses every command.

use crate::aggregate::{aggregate, domain_events, StreamType};
use crate::ids::{CartId, CustomerId, OrderId, ProductId};
use crate::money::{Currency, Money, MoneyError};
use crate::quantity::{Quantity, MAX_QUANTITY};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most distinct products one cart may hold.
pub const MAX_CART_LINES: usize = 50;

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

domain_events! {
    #[derive(Debug, Clone, PartialEq)]
    pub enum CartEvent in event_names {
        CART_OPENED = "CartOpened", version 1 => CartOpened {
            cart_id: CartId,
            customer_id: CustomerId,
        },
        /// `quantity` is the line's new total quantity, not the increment.
        ITEM_ADDED = "ItemAdded", version 1 => ItemAdded {
            cart_id: CartId,
            product_id: ProductId,
            quantity: Quantity,
            unit_price: Money,
            line_total: Money,
        },
        ITEM_QUANTITY_CHANGED = "ItemQuantityChanged", version 1 => ItemQuantityChanged {
            cart_id: CartId,
            product_id: ProductId,
            quantity: Quantity,
            line_total: Money,
        },
        ITEM_REMOVED = "ItemRemoved", version 1 => ItemRemoved {
            cart_id: CartId,
            product_id: ProductId,
        },
        CART_CHECKED_OUT = "CartCheckedOut", version 1 => CartCheckedOut {
            cart_id: CartId,
            order_id: OrderId,
            total: Money,
        },
        CART_ABANDONED = "CartAbandoned", version 1 => CartAbandoned {     cart_id: CartId },
    }
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

impl Cart {
    /// Decides a command: pure, synchronous; `Aggregate::handle` calls it.
    pub fn decide(&self, command: CartCommand) -> Result<Vec<CartEvent>, CartError> {
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

    /// Folds one event into the state. Never fails: events are facts. `Aggregate::apply`
    /// calls it.
    pub fn evolve(&mut self, event: &CartEvent) {
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

aggregate!(Cart, StreamType::Cart, CartCommand, CartEvent, CartError);

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
