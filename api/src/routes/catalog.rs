//! The catalog read model (every role; public unless `--catalog-auth required`).

use crate::error::{ApiError, ApiResult};
use crate::extract::{AppPath, AppQuery};
use crate::routes::orders::{limit, next_cursor, Cursor, ReadQuery};
use crate::schema::{ProductPath, PublicItemErrors, PublicReadErrors};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use commands::Consistency;
use domain::ProductId;
use projections::catalog::{self, ProductView};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CatalogQuery {
    /// Only this category.
    pub category: Option<String>,
    /// At most this many products (default 50, at most 500).
    #[param(maximum = 500)]
    pub limit: Option<usize>,
    /// The previous page's `next_cursor`: this page starts after it.
    #[param(value_type = Option<crate::schema::CursorToken>)]
    pub cursor: Option<Cursor>,
    /// Read-your-writes: a command answer's `consistency` token. The query waits (at most `--consistency-wait`, 2 s by default)
    /// until this read model reflects that write.
    #[param(value_type = Option<crate::schema::ConsistencyToken>)]
    pub consistency: Option<Consistency>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryList {
    /// Each category with products on sale, by name, with `products`, their count.
    #[schema(value_type = Vec<crate::schema::CategorySchema>)]
    pub categories: Vec<catalog::CategoryView>,
}

#[utoipa::path(get, path = "/v1/catalog/categories", tag = "catalog", params(ReadQuery),
    responses((status = 200, description = "categories with products on sale, by name", body = CategoryList), PublicReadErrors),
    security((), ("bearer" = [])))]
pub async fn list_categories(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<ReadQuery>,
) -> ApiResult<Json<CategoryList>> {
    state
        .read_after(&catalog::CatalogProjection, q.consistency.as_ref())
        .await;
    let categories =
        catalog::list_categories(state.models.as_ref(), crate::routes::orders::MAX_LIMIT).await?;
    Ok(Json(CategoryList { categories }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductList {
    #[schema(value_type = Vec<crate::schema::ProductSchema>)]
    pub products: Vec<ProductView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/catalog/products", tag = "catalog", params(CatalogQuery),
    responses((status = 200, description = "products ordered by name", body = ProductList), PublicReadErrors),
    security((), ("bearer" = [])))]
pub async fn list_products(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<CatalogQuery>,
) -> ApiResult<Json<ProductList>> {
    state
        .read_after(&catalog::CatalogProjection, q.consistency.as_ref())
        .await;
    let page = catalog::list_products(
        state.models.as_ref(),
        q.category.as_deref(),
        limit(q.limit),
        q.cursor.as_ref().map(Cursor::key),
    )
    .await?;
    Ok(Json(ProductList {
        next_cursor: next_cursor(&page),
        products: page.items,
    }))
}

#[utoipa::path(get, path = "/v1/catalog/products/{id}", tag = "catalog",
    params(ProductPath, ReadQuery),
    responses((status = 200, description = "one product", body = crate::schema::ProductSchema), PublicItemErrors),
    security((), ("bearer" = [])))]
pub async fn get_product(
    State(state): State<AppState>,
    AppPath(product_id): AppPath<ProductId>,
    AppQuery(q): AppQuery<ReadQuery>,
) -> ApiResult<Json<ProductView>> {
    state
        .read_after(&catalog::CatalogProjection, q.consistency.as_ref())
        .await;
    catalog::get_product(state.models.as_ref(), product_id.as_str())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("product"))
}
