//! Catalog administration, fulfilment and customer erasure (admin only).

use crate::error::{ApiError, ApiResult};
use crate::extract::{AppPath, Cmd};
use crate::http::CommandReply;
use crate::routes::orders::{order_reply, trimmed_text};
use crate::schema::{
    AckReply, CommandErrors, CreateErrors, CustomerPath, ErasureReply, IdempotencyHeader, NoBody,
    OrderPath, ProductPath, ProjectionErrors, RebuildErrors,
};
use crate::state::AppState;
use axum::extract::State;
use commands::{Ack, CommandContext, ErasureReceipt, NewProduct};
use domain::{
    CustomerId, Money, MoneyError, OrderCommand, OrderId, Product, ProductCommand, ProductId,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Largest stock a single create or restock may add.
pub const MAX_STOCK: u32 = domain::MAX_RESTOCK_QUANTITY;

/// A money amount as sent by clients: a decimal string and an ISO-4217 code.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoneyInput {
    pub amount: String,
    pub currency: String,
}

impl utoipa::PartialSchema for MoneyInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::schema::money_input().into()
    }
}

impl ToSchema for MoneyInput {}

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
    #[schema(value_type = crate::schema::Id, example = "prd_teapot")]
    pub product_id: ProductId,
    #[schema(schema_with = crate::schema::non_blank::<{ domain::MAX_PRODUCT_NAME_CHARS }>)]
    pub name: String,
    #[schema(schema_with = crate::schema::non_blank::<{ domain::MAX_CATEGORY_CHARS }>)]
    pub category: String,
    pub price: MoneyInput,
    /// 0 to 1,000,000 units.
    #[serde(default)]
    #[schema(maximum = 1_000_000)]
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
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: u32,
}

/// The storefront details to change (at least one); a field left out stays as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DescribeRequest {
    /// 1 to 200 characters.
    #[schema(schema_with = crate::schema::non_blank::<{ domain::MAX_PRODUCT_NAME_CHARS }>)]
    pub name: Option<String>,
    /// At most 2,000 characters; empty clears it.
    #[schema(schema_with = crate::schema::at_most::<{ domain::MAX_DESCRIPTION_CHARS }>)]
    pub description: Option<String>,
    /// 1 to 100 characters.
    #[schema(schema_with = crate::schema::non_blank::<{ domain::MAX_CATEGORY_CHARS }>)]
    pub category: Option<String>,
}

/// A correction of stock on hand.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustStockRequest {
    /// Units added (positive) or written down (negative), 1 to 1,000,000 either way. A
    /// write-down may not leave less on hand than is reserved (409 `below_reserved`).
    #[schema(schema_with = crate::schema::nonzero_delta::<{ MAX_STOCK as i64 }>)]
    pub delta: i64,
    /// Why, 1 to 200 characters (a count, breakage, ...).
    #[schema(schema_with = crate::schema::non_blank::<{ domain::MAX_ADJUSTMENT_REASON_CHARS }>)]
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipRequest {
    /// The carrier's tracking reference, 1 to 100 characters.
    #[serde(default)]
    #[schema(schema_with = crate::schema::non_blank::<MAX_TRACKING_CHARS>)]
    pub tracking: Option<String>,
}

/// Longest tracking reference.
pub const MAX_TRACKING_CHARS: usize = 100;

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
    params(IdempotencyHeader),
    request_body = CreateProductRequest,
    responses((status = 201, description = "created", body = AckReply), CreateErrors))]
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
    params(ProductPath, IdempotencyHeader),
    request_body = RepriceRequest,
    responses((status = 200, description = "repriced", body = AckReply), CommandErrors))]
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
    params(ProductPath, IdempotencyHeader),
    request_body = RestockRequest,
    responses((status = 200, description = "restocked", body = AckReply), CommandErrors))]
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
    params(ProductPath, IdempotencyHeader),
    responses((status = 200, description = "retired", body = AckReply), CommandErrors))]
pub async fn retire(
    State(state): State<AppState>,
    AppPath(product_id): AppPath<ProductId>,
    cmd: Cmd<NoBody>,
) -> ApiResult<CommandReply<Ack>> {
    product_reply(&state, &cmd.ctx, &product_id, |_| ProductCommand::Retire).await
}

#[utoipa::path(post, path = "/v1/admin/products/{id}/unretire", tag = "admin",
    params(ProductPath, IdempotencyHeader),
    responses((status = 200, description = "on sale again", body = AckReply), CommandErrors))]
pub async fn unretire(
    State(state): State<AppState>,
    AppPath(product_id): AppPath<ProductId>,
    cmd: Cmd<NoBody>,
) -> ApiResult<CommandReply<Ack>> {
    product_reply(&state, &cmd.ctx, &product_id, |_| ProductCommand::Unretire).await
}

#[utoipa::path(patch, path = "/v1/admin/products/{id}", tag = "admin",
    params(ProductPath, IdempotencyHeader),
    request_body = DescribeRequest,
    responses((status = 200, description = "the details changed", body = AckReply), CommandErrors))]
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
    params(ProductPath, IdempotencyHeader),
    request_body = AdjustStockRequest,
    responses((status = 200, description = "stock adjusted", body = AckReply), CommandErrors))]
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
    params(OrderPath, IdempotencyHeader),
    request_body = ShipRequest,
    responses((status = 200, description = "shipped", body = AckReply), CommandErrors))]
pub async fn ship(
    State(state): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    cmd: Cmd<ShipRequest>,
) -> ApiResult<CommandReply<Ack>> {
    let tracking = cmd
        .body
        .tracking
        .as_deref()
        .map(|t| trimmed_text("tracking", t, MAX_TRACKING_CHARS))
        .transpose()?;
    order_reply(&state, &cmd, &order_id, |at| OrderCommand::Ship {
        tracking: tracking.clone(),
        at,
    })
    .await
}

#[utoipa::path(post, path = "/v1/admin/orders/{id}/deliver", tag = "admin",
    params(OrderPath, IdempotencyHeader),
    responses((status = 200, description = "delivered", body = AckReply), CommandErrors))]
pub async fn deliver(
    State(state): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    cmd: Cmd<NoBody>,
) -> ApiResult<CommandReply<Ack>> {
    order_reply(&state, &cmd, &order_id, |at| OrderCommand::Deliver { at }).await
}

/// One projection as an operator sees it: how far its worker is, and its latest rebuild. The
/// fields are in name order, as the JSON has always had them.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionInfo {
    /// Whether its worker is healthy (`null`: no worker seen yet).
    pub healthy: Option<bool>,
    /// Feed positions behind the head.
    pub lag: Option<u64>,
    pub last_error: Option<String>,
    pub name: String,
    /// How many feed events its worker has read, over all partitions.
    pub position: Option<u64>,
    /// Its latest rebuild since the process started.
    #[schema(value_type = Option<workers::RebuildStatus>)]
    pub rebuild: Option<serde_json::Value>,
}

/// The projections of a server and the feed head they follow.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionList {
    pub head: u64,
    pub projections: Vec<ProjectionInfo>,
}

/// A rebuild that started.
#[derive(Debug, Serialize, ToSchema)]
pub struct RebuildStarted {
    #[schema(value_type = workers::RebuildStatus)]
    pub rebuild: serde_json::Value,
}

/// A rebuild's status as JSON, its fields in name order as the answers have always had them.
fn sorted(status: workers::RebuildStatus) -> serde_json::Value {
    serde_json::to_value(status).unwrap_or_default()
}

fn projection_info(
    state: &AppState,
    statuses: &mut BTreeMap<String, workers::WorkerStatus>,
    name: &str,
    head: u64,
) -> ProjectionInfo {
    let worker = statuses.remove(&workers::projection_worker(name));
    ProjectionInfo {
        healthy: worker.as_ref().map(|w| w.healthy),
        lag: worker.as_ref().map(|w| head.saturating_sub(w.position)),
        position: worker.as_ref().map(|w| w.position),
        last_error: worker.and_then(|w| w.last_error),
        name: name.to_owned(),
        rebuild: state
            .rebuilds
            .as_ref()
            .and_then(|r| r.status(name))
            .map(sorted),
    }
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
    responses((status = 200, description = "each projection, how far it is and its latest rebuild", body = ProjectionList),
        ProjectionErrors))]
pub async fn list_projections(
    State(state): State<AppState>,
) -> ApiResult<axum::Json<ProjectionList>> {
    let names = rebuilds(&state)?.names();
    // Positions here count events over all feed partitions.
    let head = state.store.head().await?.count();
    let mut statuses = state.health.snapshot();
    let projections = names
        .into_iter()
        .map(|name| projection_info(&state, &mut statuses, name, head))
        .collect();
    Ok(axum::Json(ProjectionList { head, projections }))
}

#[utoipa::path(post, path = "/v1/admin/projections/{name}/rebuild", tag = "admin",
    params(("name" = String, Path, description = "catalog, order_history, notifications or support")),
    responses((status = 202, description = "the rebuild started: replays the feed from position 0 into a new generation of the read model while queries read the live one, then promotes it; follow it with GET /v1/admin/projections (409: already being rebuilt)", body = RebuildStarted),
        RebuildErrors))]
pub async fn rebuild_projection(
    State(state): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<(axum::http::StatusCode, axum::Json<RebuildStarted>), ApiError> {
    match rebuilds(&state)?.start(&name) {
        Ok(rebuild) => Ok((
            axum::http::StatusCode::ACCEPTED,
            axum::Json(RebuildStarted {
                rebuild: sorted(rebuild),
            }),
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
    params(CustomerPath, IdempotencyHeader),
    request_body(content = NoBody, description = "empty"),
    responses((status = 200, description = "erased", body = ErasureReply), CommandErrors))]
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
