//! The catalog read model (every role; public unless `--catalog-auth required`).

use crate::error::{ApiError, ApiResult};
use crate::extract::{AppPath, AppQuery};
use crate::routes::query::{ListQuery, ProductList, ReadQuery, MAX_LIMIT};
use crate::schema::{ProductPath, PublicItemErrors, PublicReadErrors};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use domain::ProductId;
use projections::catalog::{self, ProductView};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The catalog's filter; its paging is a [`ListQuery`] beside it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CatalogQuery {
    /// Only this category.
    pub category: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryList {
    /// Each category with products on sale, by name, with `products`, their count.
    pub categories: Vec<catalog::CategoryView>,
}

#[utoipa::path(get, path = "/v1/catalog/categories", tag = "catalog", params(ReadQuery),
    responses((status = 200, description = "categories with products on sale, by name", body = CategoryList), PublicReadErrors),
    security((), ("bearer" = [])))]
pub async fn list_categories(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<ReadQuery>,
) -> ApiResult<Json<CategoryList>> {
    q.wait_for(&state, &catalog::CatalogProjection).await;
    let categories = catalog::list_categories(state.models.as_ref(), MAX_LIMIT).await?;
    Ok(Json(CategoryList { categories }))
}

#[utoipa::path(get, path = "/v1/catalog/products", tag = "catalog", params(CatalogQuery, ListQuery),
    responses((status = 200, description = "products ordered by name", body = ProductList), PublicReadErrors),
    security((), ("bearer" = [])))]
pub async fn list_products(
    State(state): State<AppState>,
    AppQuery(filter): AppQuery<CatalogQuery>,
    AppQuery(q): AppQuery<ListQuery>,
) -> ApiResult<Json<ProductList>> {
    let category = filter.category.as_deref();
    q.read_page(
        &state,
        &catalog::CatalogProjection,
        |models, limit, after| catalog::list_products(models, category, limit, after),
    )
    .await
}

#[utoipa::path(get, path = "/v1/catalog/products/{id}", tag = "catalog",
    params(ProductPath, ReadQuery),
    responses((status = 200, description = "one product", body = ProductView), PublicItemErrors),
    security((), ("bearer" = [])))]
pub async fn get_product(
    State(state): State<AppState>,
    AppPath(product_id): AppPath<ProductId>,
    AppQuery(q): AppQuery<ReadQuery>,
) -> ApiResult<Json<ProductView>> {
    q.wait_for(&state, &catalog::CatalogProjection).await;
    catalog::get_product(state.models.as_ref(), product_id.as_str())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("product"))
}
