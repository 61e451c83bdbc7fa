//! Catalog administration, fulfilment and customer erasure (admin only).

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{AppPath, Cmd};
use crate::http::CommandReply;
use crate::schema::NoBody;
use crate::state::AppState;
use axum::extract::State;
use commands::{Ack, CommandContext, ErasureReceipt, NewProduct};
use domain::{
    CustomerId, Money, MoneyError, OrderCommand, OrderId, Product, ProductCommand, ProductId,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Largest stock a single create or restock may add.
pub const MAX_STOCK: u32 = domain::MAX_RESTOCK_QUANTITY;

/// A money amount as sent by clients: a decimal string and an ISO-4217 code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyInput {
    #[schema(example = "12.50")]
    pub amount: String,
    #[schema(example = "EUR")]
    pub currency: String,
}

impl MoneyInput {
    /// Validates the amount and currency, naming `field.amount` or `field.currency`.
    pub fn to_money(&self, field: &str) -> Result<Money, ApiError> {
        Money::parse(self.amount.trim(), self.currency.trim()).map_err(|e| match e {
            MoneyError::UnknownCurrency(_) => {
                ApiError::validation(format!("{field}.currency"), e.to_string())
            }
            _ => ApiError::validation(format!("{field}.amount"), e.to_string()),
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    #[schema(value_type = String, example = "prd_teapot")]
    pub product_id: ProductId,
    pub name: String,
    pub category: String,
    pub price: MoneyInput,
    #[serde(default)]
    pub initial_stock: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepriceRequest {
    pub price: MoneyInput,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestockRequest {
    /// 1 to 1,000,000 units.
    pub quantity: u32,
}

/// The storefront details to change; a field left out stays as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DescribeRequest {
    /// 1 to 200 characters.
    pub name: Option<String>,
    /// At most 2,000 characters; empty clears it.
    pub description: Option<String>,
    /// 1 to 100 characters.
    pub category: Option<String>,
}

/// A correction of stock on hand.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustStockRequest {
    /// Units added (positive) or written down (negative), 1 to 1,000,000 either way. A
    /// write-down may not leave less on hand than is reserved (409 `below_reserved`).
    pub delta: i64,
    /// Why, 1 to 200 characters (a count, breakage, ...).
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipRequest {
    #[serde(default)]
    pub tracking: Option<String>,
}

/// Runs one product command and answers with its commit.
async fn product_reply(
    state: &AppState,
    ctx: &CommandContext,
    product_id: &ProductId,
    command: impl Fn(&Product) -> ProductCommand,
) -> ApiResult<CommandReply<Ack>> {
    let executed = state
        .shop
        .product_command(ctx, product_id.as_str(), command)
        .await?;
    Ok(CommandReply::ok(executed))
}

fn stock(field: &str, quantity: u32, min: u32) -> Result<u32, ApiError> {
    if (min..=MAX_STOCK).contains(&quantity) {
        Ok(quantity)
    } else {
        Err(ApiError::validation(
            field,
            format!("must be between {min} and {MAX_STOCK}"),
        ))
    }
}

#[utoipa::path(post, path = "/v1/admin/products", tag = "admin",
    params(("Idempotency-Key" = Option<String>, Header, description = "replays the first answer")),
    request_body = CreateProductRequest,
    responses((status = 201, description = "created, with `consistency` and `position`", body = serde_json::Value),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_product(
    State(state): State<AppState>,
    cmd: Cmd<CreateProductRequest>,
) -> ApiResult<CommandReply<Ack>> {
    let b = &cmd.body;
    let input = NewProduct {
        product_id: b.product_id.clone(),
        name: b.name.clone(),
        category: b.category.clone(),
        price: b.price.to_money("price")?,
        initial_stock: stock("initial_stock", b.initial_stock, 0)?,
    };
    let executed = state.shop.create_product(&cmd.ctx, input).await?;
    Ok(CommandReply::created(executed))
}

#[utoipa::path(put, path = "/v1/admin/products/{id}/price", tag = "admin",
    params(("id" = String, Path, description = "product id"),
        ("Idempotency-Key" = Option<String>, Header, description = "replays the first answer")),
    request_body = RepriceRequest,
    responses((status = 200, description = "repriced, with `consistency` and `position`", body = serde_json::Value),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reprice(
    State(state): State<AppState>,
    AppPath(product_id): AppPath<ProductId>,
    cmd: Cmd<RepriceRequest>,
) -> ApiResult<CommandReply<Ack>> {
    let price = cmd.body.price.to_money("price")?;
    product_reply(&state, &cmd.ctx, &product_id, |_| ProductCommand::Reprice {
        price: price.clone(),
    })
    .await
}

#[utoipa::path(post, path = "/v1/admin/products/{id}/restock", tag = "admin",
    params(("id" = String, Path, description = "product id"),
        ("Idempotency-Key" = Option<String>, Header, description = "replays the first answer")),
    request_body = RestockRequest,
    responses((status = 200, description = "restocked, with `consistency` and `position`", body = serde_json::Value),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn restock(
    State(state): State<AppState>,
    AppPath(product_id): AppPath<ProductId>,
    cmd: Cmd<RestockRequest>,
) -> ApiResult<CommandReply<Ack>> {
    let quantity = stock("quantity", cmd.body.quantity, 1)?;
    product_reply(&state, &cmd.ctx, &product_id, |_| ProductCommand::Restock {
        quantity,
    })
    .await
}

#[utoipa::path(post, path = "/v1/admin/products/{id}/retire", tag = "admin",
    params(("id" = String, Path, description = "product id"),
        ("Idempotency-Key" = Option<String>, Header, description = "replays the first answer")),
    responses((status = 200, description = "retired, with `consistency` and `position`", body = serde_json::Value),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retire(
    State(state): State<AppState>,
    AppPath(product_id): AppPath<ProductId>,
    cmd: Cmd<NoBody>,
) -> ApiResult<CommandReply<Ack>> {
    product_reply(&state, &cmd.ctx, &product_id, |_| ProductCommand::Retire).await
}

#[utoipa::path(post, path = "/v1/admin/products/{id}/unretire", tag = "admin",
    params(("id" = String, Path, description = "product id"),
        ("Idempotency-Key" = Option<String>, Header, description = "replays the first answer")),
    responses((status = 200, description = "on sale again, with `consistency` and `position`", body = serde_json::Value),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn unretire(
    State(state): State<AppState>,
    AppPath(product_id): AppPath<ProductId>,
    cmd: Cmd<NoBody>,
) -> ApiResult<CommandReply<Ack>> {
    product_reply(&state, &cmd.ctx, &product_id, |_| ProductCommand::Unretire).await
}

#[utoipa::path(patch, path = "/v1/admin/products/{id}", tag = "admin",
    params(("id" = String, Path, description = "product id"),
        ("Idempotency-Key" = Option<String>, Header, description = "replays the first answer")),
    request_body = DescribeRequest,
    responses((status = 200, description = "the details changed, with `consistency` and `position`", body = serde_json::Value),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn describe(
    State(state): State<AppState>,
    AppPath(product_id): AppPath<ProductId>,
    cmd: Cmd<DescribeRequest>,
) -> ApiResult<CommandReply<Ack>> {
    let DescribeRequest {
        name,
        description,
        category,
    } = &cmd.body;
    if name.is_none() && description.is_none() && category.is_none() {
        return Err(ApiError::validation(
            "body",
            "give at least one of name, description and category",
        ));
    }
    product_reply(&state, &cmd.ctx, &product_id, |_| {
        ProductCommand::Describe {
            name: name.clone(),
            description: description.clone(),
            category: category.clone(),
        }
    })
    .await
}

#[utoipa::path(post, path = "/v1/admin/products/{id}/stock-adjustments", tag = "admin",
    params(("id" = String, Path, description = "product id"),
        ("Idempotency-Key" = Option<String>, Header, description = "replays the first answer")),
    request_body = AdjustStockRequest,
    responses((status = 200, description = "stock adjusted, with `consistency` and `position`", body = serde_json::Value),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn adjust_stock(
    State(state): State<AppState>,
    AppPath(product_id): AppPath<ProductId>,
    cmd: Cmd<AdjustStockRequest>,
) -> ApiResult<CommandReply<Ack>> {
    let (delta, reason) = (cmd.body.delta, cmd.body.reason.clone());
    product_reply(&state, &cmd.ctx, &product_id, |_| {
        ProductCommand::AdjustStock {
            delta,
            reason: reason.clone(),
        }
    })
    .await
}

#[utoipa::path(post, path = "/v1/admin/orders/{id}/ship", tag = "admin",
    params(("id" = String, Path, description = "order id"),
        ("Idempotency-Key" = Option<String>, Header, description = "replays the first answer")),
    request_body = ShipRequest,
    responses((status = 200, description = "shipped, with `consistency` and `position`", body = serde_json::Value),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn ship(
    State(state): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    cmd: Cmd<ShipRequest>,
) -> ApiResult<CommandReply<Ack>> {
    let tracking = cmd
        .body
        .tracking
        .as_deref()
        .map(str::trim)
        .map(str::to_string);
    if tracking
        .as_ref()
        .is_some_and(|t| t.is_empty() || t.len() > 100)
    {
        return Err(ApiError::validation(
            "tracking",
            "must have 1 to 100 characters",
        ));
    }
    let at = state.clock.now();
    let executed = state
        .shop
        .order_command(&cmd.ctx, &cmd.caller(), order_id.as_str(), |_| {
            OrderCommand::Ship {
                tracking: tracking.clone(),
                at,
            }
        })
        .await?;
    Ok(CommandReply::ok(executed))
}

#[utoipa::path(post, path = "/v1/admin/orders/{id}/deliver", tag = "admin",
    params(("id" = String, Path, description = "order id"),
        ("Idempotency-Key" = Option<String>, Header, description = "replays the first answer")),
    responses((status = 200, description = "delivered, with `consistency` and `position`", body = serde_json::Value),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn deliver(
    State(state): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    cmd: Cmd<NoBody>,
) -> ApiResult<CommandReply<Ack>> {
    let at = state.clock.now();
    let executed = state
        .shop
        .order_command(&cmd.ctx, &cmd.caller(), order_id.as_str(), |_| {
            OrderCommand::Deliver { at }
        })
        .await?;
    Ok(CommandReply::ok(executed))
}

/// One projection as an operator sees it: how far its worker is, and its latest rebuild.
fn projection_info(
    state: &AppState,
    statuses: &mut BTreeMap<String, workers::WorkerStatus>,
    name: &str,
    head: u64,
) -> serde_json::Value {
    let worker = statuses.remove(&workers::projection_worker(name));
    let rebuild = state.rebuilds.as_ref().and_then(|r| r.status(name));
    serde_json::json!({
        "name": name,
        "position": worker.as_ref().map(|w| w.position),
        "lag": worker.as_ref().map(|w| head.saturating_sub(w.position)),
        "healthy": worker.as_ref().map(|w| w.healthy),
        "last_error": worker.and_then(|w| w.last_error),
        "rebuild": rebuild,
    })
}

fn rebuilds(state: &AppState) -> Result<&std::sync::Arc<workers::Rebuilds>, ApiError> {
    state.rebuilds.as_ref().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "not_supported",
            "this server runs no projections (on AWS, the queue workers own them)",
        )
    })
}

#[utoipa::path(get, path = "/v1/admin/projections", tag = "admin",
    responses((status = 200, description = "each projection: `name`, `position`, `lag` (feed positions behind the head), `healthy`, `last_error` and its latest `rebuild` (`state`, `position`, `head`, `per_second`, `eta_seconds`)", body = serde_json::Value),
        (status = 501, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_projections(
    State(state): State<AppState>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let names = rebuilds(&state)?.names();
    let head = state.store.head().await.map_err(ApiError::internal)?;
    let mut statuses = state.health.snapshot();
    let list: Vec<serde_json::Value> = names
        .into_iter()
        .map(|name| projection_info(&state, &mut statuses, name, head))
        .collect();
    Ok(axum::Json(
        serde_json::json!({ "head": head, "projections": list }),
    ))
}

#[utoipa::path(post, path = "/v1/admin/projections/{name}/rebuild", tag = "admin",
    params(("name" = String, Path, description = "catalog, order_history, notifications or support")),
    responses((status = 202, description = "the rebuild started: replays the feed from position 0 into a new generation of the read model while queries read the live one, then promotes it; follow it with GET /v1/admin/projections", body = serde_json::Value),
        (status = 404, body = ErrorBody), (status = 409, description = "already being rebuilt", body = ErrorBody),
        (status = 501, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rebuild_projection(
    State(state): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<(axum::http::StatusCode, axum::Json<serde_json::Value>), ApiError> {
    match rebuilds(&state)?.start(&name) {
        Ok(status) => Ok((
            axum::http::StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({ "rebuild": status })),
        )),
        Err(workers::RebuildError::Unknown(_)) => Err(ApiError::not_found("projection")),
        Err(e @ workers::RebuildError::AlreadyRunning(_)) => Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "rebuild_in_progress",
            e.to_string(),
        )),
    }
}

#[utoipa::path(post, path = "/v1/admin/customers/{id}/erase", tag = "admin",
    description = "Erases the customer's personal data: their data key is deleted, so the \
        email, name and address in their events, and every read model's copies, read \
        `[erased]` from now on (orders, totals and statuses stay). Records `CustomerErased` on \
        the customer's stream each time; repeating it is harmless.",
    params(("id" = String, Path, description = "customer id"),
        ("Idempotency-Key" = Option<String>, Header, description = "replays the first answer")),
    request_body(content = NoBody, description = "empty"),
    responses((status = 200, description = "erased, with `consistency` and `position`", body = ErasureReceiptSchema),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn erase_customer(
    State(state): State<AppState>,
    AppPath(customer_id): AppPath<CustomerId>,
    cmd: Cmd<NoBody>,
) -> ApiResult<CommandReply<ErasureReceipt>> {
    let executed = state
        .erasure
        .erase(&cmd.ctx, &customer_id, &cmd.principal.subject)
        .await?;
    Ok(CommandReply::ok(executed))
}

/// What an erasure answers.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ErasureReceiptSchema {
    pub customer_id: String,
    /// 1 for the customer's first erasure, 2 for the next, ...
    pub erasure: u32,
    pub erased_at: chrono::DateTime<chrono::Utc>,
}
