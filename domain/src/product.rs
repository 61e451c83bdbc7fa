//! The product aggregate: catalogue data, stock on hand and per-order stock reservations.
//!
//! Reservations are keyed by order, so a redelivered `ReserveStock` for the same order never
//! reserves twice. `available = on_hand - reserved` and is never negative.

use crate::aggregate::{aggregate, domain_events, DecodeError, StreamType};
use crate::ids::{OrderId, ProductId};
use crate::money::Money;
use crate::text::trimmed_within;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest product name, in characters (after trimming).
pub const MAX_PRODUCT_NAME_CHARS: usize = 200;
/// Longest product category, in characters (after trimming).
pub const MAX_CATEGORY_CHARS: usize = 100;
/// Largest quantity a single restock may add (or a stock adjustment move, either way).
pub const MAX_RESTOCK_QUANTITY: u32 = 1_000_000;
/// Longest product description, in characters (after trimming).
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
/// Longest reason of a stock adjustment, in characters (after trimming).
pub const MAX_ADJUSTMENT_REASON_CHARS: usize = 200;
/// Category given to products created before categories existed (`ProductCreated` v1).
pub const UNCATEGORIZED: &str = "uncategorized";

/// Version 2 added `category`; version 1 payloads are upcast with category "uncategorized".
pub const PRODUCT_CREATED_VERSION: u32 = 2;
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    /// Not created yet.
    #[default]
    Draft,
    Active,
    Retired,
}

impl ProductStatus {
    /// The stored name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            ProductStatus::Draft => "draft",
            ProductStatus::Active => "active",
            ProductStatus::Retired => "retired",
        }
    }
}

/// State of one product stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: Option<ProductId>,
    pub name: String,
    pub category: String,
    #[serde(default)]
    pub description: String,
    pub price: Option<Money>,
    pub on_hand: u32,
    /// Units held for each order, from reservation until release or commit.
    pub reservations: BTreeMap<OrderId, u32>,
    pub status: ProductStatus,
}

impl Product {
    /// Units held by reservations.
    pub fn reserved(&self) -> u32 {
        // Decisions keep the sum at most `on_hand`; saturating keeps this total on odd data.
        self.reservations
            .values()
            .fold(0_u32, |acc, q| acc.saturating_add(*q))
    }

    /// Units that can still be reserved: `on_hand - reserved`, never negative.
    pub fn available(&self) -> u32 {
        self.on_hand.saturating_sub(self.reserved())
    }

    pub fn exists(&self) -> bool {
        self.id.is_some()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProductCommand {
    Create {
        product_id: ProductId,
        name: String,
        category: String,
        price: Money,
        initial_stock: u32,
    },
    Reprice {
        price: Money,
    },
    Restock {
        quantity: u32,
    },
    ReserveStock {
        order_id: OrderId,
        quantity: u32,
    },
    ReleaseStock {
        order_id: OrderId,
    },
    /// Stock leaves the warehouse (on shipment): the reservation becomes a decrement of on hand.
    CommitStock {
        order_id: OrderId,
    },
    Retire,
    /// Puts a retired product back on sale.
    Unretire,
    /// Changes the storefront details; `None` keeps a field as it is.
    Describe {
        name: Option<String>,
        description: Option<String>,
        category: Option<String>,
    },
    /// Corrects stock on hand up or down (a count, breakage, a found pallet), with the reason.
    /// A write-down may not leave less on hand than is reserved.
    AdjustStock {
        delta: i64,
        reason: String,
    },
}

domain_events! {
    #[derive(Debug, Clone, PartialEq)]
    pub enum ProductEvent in event_names {
        PRODUCT_CREATED = "ProductCreated", version PRODUCT_CREATED_VERSION => ProductCreated {
            product_id: ProductId,
            name: String,
            category: String,
            price: Money,
            on_hand: u32,
        },
        PRODUCT_REPRICED = "ProductRepriced", version 1 => ProductRepriced {
            product_id: ProductId,
            old_price: Money,
            price: Money,
        },
        PRODUCT_RESTOCKED = "ProductRestocked", version 1 => ProductRestocked {
            product_id: ProductId,
            quantity: u32,
            on_hand: u32,
            available: u32,
        },
        STOCK_RESERVED = "StockReserved", version 1 => StockReserved {
            product_id: ProductId,
            order_id: OrderId,
            quantity: u32,
            reserved: u32,
            available: u32,
        },
        STOCK_RELEASED = "StockReleased", version 1 => StockReleased {
            product_id: ProductId,
            order_id: OrderId,
            quantity: u32,
            reserved: u32,
            available: u32,
        },
        STOCK_COMMITTED = "StockCommitted", version 1 => StockCommitted {
            product_id: ProductId,
            order_id: OrderId,
            quantity: u32,
            on_hand: u32,
            reserved: u32,
            available: u32,
        },
        PRODUCT_RETIRED = "ProductRetired", version 1 => ProductRetired {     product_id: ProductId },
        PRODUCT_UNRETIRED = "ProductUnretired", version 1 => ProductUnretired { product_id: ProductId },
        /// The details after the change, every field (changed or not).
        PRODUCT_DESCRIBED = "ProductDescribed", version 1 => ProductDescribed {
            product_id: ProductId,
            name: String,
            description: String,
            category: String,
        },
        STOCK_ADJUSTED = "StockAdjusted", version 1 => StockAdjusted {
            product_id: ProductId,
            delta: i64,
            reason: String,
            on_hand: u32,
            available: u32,
        },
    }
    upcast = upcast;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    #[error("product not found")]
    NotFound,
    #[error("product already exists")]
    AlreadyExists,
    #[error("product name must be 1 to 200 characters")]
    InvalidName,
    #[error("product category must be 1 to 100 characters")]
    InvalidCategory,
    #[error("quantity {quantity} is not allowed here")]
    InvalidQuantity { quantity: u32 },
    #[error("insufficient stock: requested {requested}, available {available}")]
    InsufficientStock { requested: u32, available: u32 },
    #[error("product is retired")]
    Retired,
    #[error("stock on hand would exceed the supported maximum")]
    StockOverflow,
    #[error("product description must be at most 2000 characters")]
    InvalidDescription,
    #[error("an adjustment reason must be 1 to 200 characters")]
    InvalidReason,
    #[error("a stock adjustment must move 1 to 1000000 units, up or down")]
    InvalidAdjustment,
    #[error("a write-down to {on_hand} would leave less on hand than the {reserved} reserved")]
    BelowReserved { on_hand: i64, reserved: u32 },
}

/// Brings an older payload to the current shape of its event type.
fn upcast(
    event_type: &str,
    version: u32,
    mut payload: serde_json::Value,
) -> Result<serde_json::Value, DecodeError> {
    if event_type == event_names::PRODUCT_CREATED && version == 1 {
        let fields = payload
            .as_object_mut()
            .ok_or_else(|| DecodeError::Malformed {
                event_type: event_type.to_owned(),
                version,
                reason: "payload is not an object".to_owned(),
            })?;
        fields
            .entry("category")
            .or_insert_with(|| serde_json::Value::from(UNCATEGORIZED));
    }
    Ok(payload)
}

impl Product {
    /// Decides a command: pure, synchronous; `Aggregate::handle` calls it.
    pub fn decide(&self, command: ProductCommand) -> Result<Vec<ProductEvent>, ProductError> {
        let product_id = match (&self.id, &command) {
            (
                None,
                ProductCommand::Create {
                    product_id,
                    name,
                    category,
                    price,
                    initial_stock,
                },
            ) => {
                let name = trimmed_within(name, MAX_PRODUCT_NAME_CHARS)
                    .ok_or(ProductError::InvalidName)?;
                let category = trimmed_within(category, MAX_CATEGORY_CHARS)
                    .ok_or(ProductError::InvalidCategory)?;
                return Ok(vec![ProductEvent::ProductCreated {
                    product_id: product_id.clone(),
                    name,
                    category,
                    price: price.clone(),
                    on_hand: *initial_stock,
                }]);
            }
            (Some(_), ProductCommand::Create { .. }) => return Err(ProductError::AlreadyExists),
            (None, _) => return Err(ProductError::NotFound),
            (Some(id), _) => id.clone(),
        };
        let retired = self.status == ProductStatus::Retired;

        match command {
            ProductCommand::Create { .. } => Err(ProductError::AlreadyExists),
            ProductCommand::Reprice { price } => {
                if retired {
                    return Err(ProductError::Retired);
                }
                match &self.price {
                    Some(old) if *old == price => Ok(vec![]),
                    old => Ok(vec![ProductEvent::ProductRepriced {
                        product_id,
                        // A created product always has a price; zero of the new currency
                        // stands in should an odd history lack one.
                        old_price: old.clone().unwrap_or(Money::zero(price.currency())),
                        price,
                    }]),
                }
            }
            ProductCommand::Restock { quantity } => {
                if retired {
                    return Err(ProductError::Retired);
                }
                if quantity == 0 || quantity > MAX_RESTOCK_QUANTITY {
                    return Err(ProductError::InvalidQuantity { quantity });
                }
                let on_hand = self
                    .on_hand
                    .checked_add(quantity)
                    .ok_or(ProductError::StockOverflow)?;
                Ok(vec![ProductEvent::ProductRestocked {
                    product_id,
                    quantity,
                    on_hand,
                    available: on_hand.saturating_sub(self.reserved()),
                }])
            }
            ProductCommand::ReserveStock { order_id, quantity } => {
                if self.reservations.contains_key(&order_id) {
                    return Ok(vec![]);
                }
                if quantity == 0 {
                    return Err(ProductError::InvalidQuantity { quantity });
                }
                if retired {
                    return Err(ProductError::Retired);
                }
                let available = self.available();
                if quantity > available {
                    return Err(ProductError::InsufficientStock {
                        requested: quantity,
                        available,
                    });
                }
                Ok(vec![ProductEvent::StockReserved {
                    product_id,
                    order_id,
                    quantity,
                    reserved: self.reserved().saturating_add(quantity),
                    available: available - quantity,
                }])
            }
            ProductCommand::ReleaseStock { order_id } => {
                let Some(&quantity) = self.reservations.get(&order_id) else {
                    return Ok(vec![]);
                };
                Ok(vec![ProductEvent::StockReleased {
                    product_id,
                    order_id,
                    quantity,
                    reserved: self.reserved().saturating_sub(quantity),
                    available: self.available().saturating_add(quantity),
                }])
            }
            ProductCommand::CommitStock { order_id } => {
                let Some(&quantity) = self.reservations.get(&order_id) else {
                    return Ok(vec![]);
                };
                // The reservation is part of `reserved <= on_hand`, so the subtractions do not
                // saturate in practice, and available is unchanged (both sides drop by `quantity`).
                Ok(vec![ProductEvent::StockCommitted {
                    product_id,
                    order_id,
                    quantity,
                    on_hand: self.on_hand.saturating_sub(quantity),
                    reserved: self.reserved().saturating_sub(quantity),
                    available: self.available(),
                }])
            }
            ProductCommand::Retire => {
                if retired {
                    Ok(vec![])
                } else {
                    Ok(vec![ProductEvent::ProductRetired { product_id }])
                }
            }
            ProductCommand::Unretire => {
                if retired {
                    Ok(vec![ProductEvent::ProductUnretired { product_id }])
                } else {
                    Ok(vec![])
                }
            }
            ProductCommand::Describe {
                name,
                description,
                category,
            } => {
                let name = match name {
                    Some(n) => trimmed_within(&n, MAX_PRODUCT_NAME_CHARS)
                        .ok_or(ProductError::InvalidName)?,
                    None => self.name.clone(),
                };
                let category = match category {
                    Some(c) => trimmed_within(&c, MAX_CATEGORY_CHARS)
                        .ok_or(ProductError::InvalidCategory)?,
                    None => self.category.clone(),
                };
                let description = match description {
                    Some(d) => {
                        let d = d.trim();
                        if d.chars().count() > MAX_DESCRIPTION_CHARS {
                            return Err(ProductError::InvalidDescription);
                        }
                        d.to_owned()
                    }
                    None => self.description.clone(),
                };
                if (&name, &description, &category)
                    == (&self.name, &self.description, &self.category)
                {
                    return Ok(vec![]);
                }
                Ok(vec![ProductEvent::ProductDescribed {
                    product_id,
                    name,
                    description,
                    category,
                }])
            }
            ProductCommand::AdjustStock { delta, reason } => {
                if delta == 0 || delta.unsigned_abs() > u64::from(MAX_RESTOCK_QUANTITY) {
                    return Err(ProductError::InvalidAdjustment);
                }
                let reason = trimmed_within(&reason, MAX_ADJUSTMENT_REASON_CHARS)
                    .ok_or(ProductError::InvalidReason)?;
                let after = i64::from(self.on_hand) + delta;
                let reserved = self.reserved();
                if after < i64::from(reserved) {
                    return Err(ProductError::BelowReserved {
                        on_hand: after,
                        reserved,
                    });
                }
                let on_hand = u32::try_from(after).map_err(|_| ProductError::StockOverflow)?;
                Ok(vec![ProductEvent::StockAdjusted {
                    product_id,
                    delta,
                    reason,
                    on_hand,
                    available: on_hand - reserved,
                }])
            }
        }
    }

    /// Folds one event into the state. Never fails: events are facts. `Aggregate::apply`
    /// calls it.
    pub fn evolve(&mut self, event: &ProductEvent) {
        if let Some(status) = event.status_after() {
            self.status = status;
        }
        match event {
            ProductEvent::ProductCreated {
                product_id,
                name,
                category,
                price,
                on_hand,
            } => {
                self.id = Some(product_id.clone());
                self.name = name.clone();
                self.category = category.clone();
                self.price = Some(price.clone());
                self.on_hand = *on_hand;
            }
            ProductEvent::ProductRepriced { price, .. } => self.price = Some(price.clone()),
            ProductEvent::ProductRestocked { on_hand, .. } => self.on_hand = *on_hand,
            ProductEvent::StockReserved {
                order_id, quantity, ..
            } => {
                self.reservations.insert(order_id.clone(), *quantity);
            }
            ProductEvent::StockReleased { order_id, .. } => {
                self.reservations.remove(order_id);
            }
            ProductEvent::StockCommitted {
                order_id, on_hand, ..
            } => {
                self.reservations.remove(order_id);
                self.on_hand = *on_hand;
            }
            ProductEvent::ProductDescribed {
                name,
                description,
                category,
                ..
            } => {
                self.name = name.clone();
                self.description = description.clone();
                self.category = category.clone();
            }
            ProductEvent::StockAdjusted { on_hand, .. } => self.on_hand = *on_hand,
            ProductEvent::ProductRetired { .. } | ProductEvent::ProductUnretired { .. } => {}
        }
    }
}

impl ProductEvent {
    /// The status the product is in after this event; `None` when the event leaves it as it was.
    /// Folding and the catalog both take the status from here.
    pub fn status_after(&self) -> Option<ProductStatus> {
        match self {
            ProductEvent::ProductCreated { .. } | ProductEvent::ProductUnretired { .. } => {
                Some(ProductStatus::Active)
            }
            ProductEvent::ProductRetired { .. } => Some(ProductStatus::Retired),
            ProductEvent::ProductRepriced { .. }
            | ProductEvent::ProductRestocked { .. }
            | ProductEvent::StockReserved { .. }
            | ProductEvent::StockReleased { .. }
            | ProductEvent::StockCommitted { .. }
            | ProductEvent::ProductDescribed { .. }
            | ProductEvent::StockAdjusted { .. } => None,
        }
    }
}

aggregate!(
    Product,
    StreamType::Product,
    ProductCommand,
    ProductEvent,
    ProductError
);
