//! Erasure in the read models that copy personal fields (order history, support,
//! notifications).
//!
//! Events read from the store already show an erased customer's fields in their erased form, so
//! a rebuild from zero needs nothing here. A live read model copied them while they were still
//! readable; on `CustomerErased` it erases its copies. Each such projection keeps, per customer,
//! the orders it holds (with when they were placed) and the latest erasure it saw, in a
//! collection of its own. An order placed up to an erasure is erased, whichever of the two events
//! the projection sees first (streams interleave freely); an order placed after it is a new one,
//! sealed under a new key, and stays.

use crate::docs::{no_index, update_doc};
use crate::store::{DocTx, ProjectionError};
use crate::util::decode;
use chrono::{DateTime, Utc};
use commands::EventEnvelope;
use domain::{CustomerEvent, CustomerId};
use serde::{Deserialize, Serialize};

/// One customer's orders as one projection holds them, and their latest erasure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct CustomerOrders {
    /// (order id, placed at), by order id (so the document does not depend on arrival order).
    orders: Vec<(String, DateTime<Utc>)>,
    erased_at: Option<DateTime<Utc>>,
}

/// Notes that the customer placed an order. `Some(erasure time)` when an erasure already seen
/// covers it: the caller then stores the order's personal fields erased.
pub(crate) fn order_placed(
    tx: &mut dyn DocTx,
    collection: &str,
    customer: &CustomerId,
    order_id: &str,
    placed_at: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, ProjectionError> {
    update_doc(tx, collection, customer.as_str(), no_index, |doc| {
        let doc = doc.get_or_insert_with(CustomerOrders::default);
        if let Err(pos) = doc
            .orders
            .binary_search_by(|(id, _)| id.as_str().cmp(order_id))
        {
            doc.orders.insert(pos, (order_id.to_owned(), placed_at));
        }
        doc.erased_at.filter(|erased| placed_at <= *erased)
    })
}

/// Applies a customer-stream event to the per-customer collection. On an erasure, calls `erase`
/// with each order the projection holds that the customer placed up to it, and the erasure's
/// time.
pub(crate) fn erase_orders(
    projection: &'static str,
    tx: &mut dyn DocTx,
    collection: &str,
    event: &EventEnvelope,
    mut erase: impl FnMut(&mut dyn DocTx, &str, DateTime<Utc>) -> Result<(), ProjectionError>,
) -> Result<(), ProjectionError> {
    let Some(CustomerEvent::CustomerErased {
        customer_id, at, ..
    }) = decode::<CustomerEvent>(projection, event)?
    else {
        return Ok(());
    };
    let orders: Vec<String> = update_doc(tx, collection, customer_id.as_str(), no_index, |doc| {
        let doc = doc.get_or_insert_with(CustomerOrders::default);
        doc.erased_at = Some(doc.erased_at.map_or(at, |e| e.max(at)));
        doc.orders
            .iter()
            .filter(|(_, placed_at)| *placed_at <= at)
            .map(|(id, _)| id.clone())
            .collect()
    })?;
    for order in &orders {
        erase(tx, order, at)?;
    }
    Ok(())
}

/// The erased form of a personal text.
pub(crate) fn erased_text() -> String {
    domain::ERASED.to_owned()
}
