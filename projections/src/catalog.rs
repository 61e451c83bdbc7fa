//! The catalog read model: one document per product with its price and stock figures, listed by
//! category and overall (ordered by name), and one document per category counting its products
//! on sale.
//!
//! Stock figures are copied from the events (`on_hand`, `reserved`, `available` as the product
//! aggregate computed them); nothing is recomputed here.

use crate::docs::{peek_doc, update_doc};
use crate::paging::Page;
use crate::store::{
    DocTx, IndexEntry, Projection, ProjectionError, Query, ReadModelError, ReadModelStore,
};
use crate::util::{decode, from_body, get_typed, listed};
use commands::EventEnvelope;
use domain::{Money, ProductEvent, ProductId, ProductStatus, StreamType};
use serde::{Deserialize, Serialize};

pub const NAME: &str = "catalog";
/// One document per product, keyed by product id.
pub const PRODUCTS: &str = "catalog_products";
/// Partition: category; sort: lowercase name `#` product id.
pub const BY_CATEGORY: &str = "catalog_by_category";
/// Partition: [`ALL_PARTITION`]; sort: lowercase name `#` product id.
pub const ALL: &str = "catalog_all";
pub const ALL_PARTITION: &str = "all";
/// One document per category with products on sale, keyed by category.
pub const CATEGORIES: &str = "catalog_categories";
/// Partition: [`ALL_PARTITION`]; sort: category.
pub const CATEGORY_LIST: &str = "catalog_category_list";

/// A category and how many of its products are on sale (not retired).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = CategorySchema))]
pub struct CategoryView {
    pub category: String,
    pub products: u32,
}

impl CategoryView {
    fn index(&self) -> Vec<IndexEntry> {
        vec![IndexEntry::new(
            CATEGORY_LIST,
            ALL_PARTITION,
            self.category.clone(),
        )]
    }
}

/// A product as the storefront sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = ProductSchema))]
pub struct ProductView {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub product_id: ProductId,
    pub name: String,
    pub category: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub description: String,
    pub price: Money,
    pub on_hand: u32,
    pub reserved: u32,
    pub available: u32,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: ProductStatus,
    /// The product stream's version (sequence of the last event applied).
    pub version: u64,
}

impl ProductView {
    /// The sort key of both listings: lowercase name `#` product id.
    fn sort_key(&self) -> String {
        format!("{}#{}", self.name.to_lowercase(), self.product_id)
    }

    fn index(&self) -> Vec<IndexEntry> {
        let sort = self.sort_key();
        vec![
            IndexEntry::new(BY_CATEGORY, self.category.clone(), sort.clone()),
            IndexEntry::new(ALL, ALL_PARTITION, sort),
        ]
    }
}

/// The catalog projection.
#[derive(Debug, Default, Clone, Copy)]
pub struct CatalogProjection;

impl Projection for CatalogProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collections(&self) -> &'static [&'static str] {
        &[PRODUCTS, CATEGORIES]
    }

    fn indexes(&self) -> &'static [&'static str] {
        &[BY_CATEGORY, ALL, CATEGORY_LIST]
    }

    fn hot_indexes(&self) -> &'static [&'static str] {
        &[ALL, CATEGORY_LIST]
    }

    fn streams(&self) -> &'static [StreamType] {
        &[StreamType::Product]
    }

    fn apply(&self, event: &EventEnvelope, tx: &mut dyn DocTx) -> Result<(), ProjectionError> {
        let Some(e) = decode::<ProductEvent>(NAME, event)? else {
            return Ok(());
        };
        let listed_before = listed_in(tx, &event.stream_id)?;
        let known = update_doc(tx, PRODUCTS, &event.stream_id, ProductView::index, |doc| {
            apply_product(doc, e, event.sequence)
        })?;
        let listed_after = listed_in(tx, &event.stream_id)?;
        if listed_before != listed_after {
            if let Some(category) = listed_before {
                count_in(tx, &category, -1)?;
            }
            if let Some(category) = listed_after {
                count_in(tx, &category, 1)?;
            }
        }
        if !known {
            // Within a stream events arrive in order and ProductCreated is always first, so this
            // only happens for a product created by an event type this build does not know.
            tracing::warn!(
                product_id = %event.stream_id,
                event_type = %event.event_type,
                "catalog event for a product without a document ignored"
            );
        }
        Ok(())
    }
}

/// The category a product is counted in: its own while it is on sale, none once retired.
fn listed_in(tx: &mut dyn DocTx, product_id: &str) -> Result<Option<String>, ProjectionError> {
    Ok(peek_doc(tx, PRODUCTS, product_id, ProductView::index)?
        .filter(|v| v.status != ProductStatus::Retired)
        .map(|v| v.category))
}

/// Moves a category's count by `by`; a category with no products left on sale is dropped.
fn count_in(tx: &mut dyn DocTx, category: &str, by: i64) -> Result<(), ProjectionError> {
    update_doc(tx, CATEGORIES, category, CategoryView::index, |doc| {
        let products = doc.as_ref().map_or(0, |d| i64::from(d.products)) + by;
        *doc = u32::try_from(products)
            .ok()
            .filter(|n| *n > 0)
            .map(|products| CategoryView {
                category: category.to_owned(),
                products,
            });
    })
}

/// Folds one product event into the view; false when there is no view to change.
fn apply_product(doc: &mut Option<ProductView>, e: ProductEvent, sequence: u64) -> bool {
    if let ProductEvent::ProductCreated {
        product_id,
        name,
        category,
        price,
        on_hand,
    } = e
    {
        *doc = Some(ProductView {
            product_id,
            name,
            category,
            description: String::new(),
            price,
            on_hand,
            // A new product has no reservations yet.
            reserved: 0,
            available: on_hand,
            status: ProductStatus::Active,
            version: sequence,
        });
        return true;
    }
    let Some(view) = doc else {
        return false;
    };
    if let Some(status) = e.status_after() {
        view.status = status;
    }
    match e {
        ProductEvent::ProductCreated { .. }
        | ProductEvent::ProductRetired { .. }
        | ProductEvent::ProductUnretired { .. } => {}
        ProductEvent::ProductRepriced { price, .. } => view.price = price,
        ProductEvent::ProductRestocked {
            on_hand, available, ..
        }
        | ProductEvent::StockAdjusted {
            on_hand, available, ..
        } => {
            view.on_hand = on_hand;
            view.available = available;
        }
        ProductEvent::StockReserved {
            reserved,
            available,
            ..
        }
        | ProductEvent::StockReleased {
            reserved,
            available,
            ..
        } => {
            view.reserved = reserved;
            view.available = available;
        }
        ProductEvent::StockCommitted {
            on_hand,
            reserved,
            available,
            ..
        } => {
            view.on_hand = on_hand;
            view.reserved = reserved;
            view.available = available;
        }
        ProductEvent::ProductDescribed {
            name,
            description,
            category,
            ..
        } => {
            view.name = name;
            view.description = description;
            view.category = category;
        }
    }
    view.version = sequence;
    true
}

/// One product, or `None` when it does not exist (yet).
pub async fn get_product(
    models: &dyn ReadModelStore,
    product_id: &str,
) -> Result<Option<ProductView>, ReadModelError> {
    get_typed(models, PRODUCTS, product_id).await
}

/// The categories with products on sale, by name, with their counts, at most `limit`.
pub async fn list_categories(
    models: &dyn ReadModelStore,
    limit: usize,
) -> Result<Vec<CategoryView>, ReadModelError> {
    models
        .query(Query::new(CATEGORY_LIST, ALL_PARTITION, limit))
        .await?
        .into_iter()
        .map(|body| from_body(CATEGORIES, "(listed)", body))
        .collect()
}

/// Products ordered by name, of one category or all of them: the page of `limit` after the
/// cursor `after` (see [`crate::paging`]).
pub async fn list_products(
    models: &dyn ReadModelStore,
    category: Option<&str>,
    limit: usize,
    after: Option<&str>,
) -> Result<Page<ProductView>, ReadModelError> {
    let query = match category {
        Some(category) => Query::new(BY_CATEGORY, category, limit),
        None => Query::new(ALL, ALL_PARTITION, limit),
    };
    crate::paging::page(
        models,
        query,
        after,
        listed(PRODUCTS),
        ProductView::sort_key,
    )
    .await
}
