//! Carts and checkout (customers only).

use crate::error::ApiResult;
use crate::extract::{AppPath, Cmd};
use crate::http::CommandReply;
use crate::schema::{
    CartItemPath, CartPath, CartReply, CommandErrors, CreateErrors, IdempotencyHeader,
    ItemReadErrors, NoBody,
};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use commands::{CartView, CheckoutInput, CommandError, Executed};
use domain::{CartId, Money, ProductId, Quantity, ShippingAddress};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Opening a cart takes no parameters (an empty body or `{}`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenCartRequest {}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItemRequest {
    #[schema(value_type = crate::schema::Id, example = "prd_espresso")]
    pub product_id: ProductId,
    /// 1 to 99.
    #[schema(value_type = u32, minimum = 1, maximum = 99)]
    pub quantity: Quantity,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeQuantityRequest {
    #[schema(value_type = u32, minimum = 1, maximum = 99)]
    pub quantity: Quantity,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShippingAddressInput {
    #[schema(schema_with = crate::schema::non_blank::<200>)]
    pub name: String,
    #[schema(schema_with = crate::schema::non_blank::<200>)]
    pub line1: String,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub line2: Option<String>,
    #[schema(schema_with = crate::schema::non_blank::<100>)]
    pub city: String,
    #[schema(schema_with = crate::schema::non_blank::<20>)]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    #[schema(pattern = "^[A-Z]{2}$", example = "DE")]
    pub country: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    #[schema(value_type = crate::schema::Email)]
    pub email: String,
    pub shipping_address: ShippingAddressInput,
}

crate::schema::committed! {
    /// The order placed, with `consistency` and `position`.
    CheckoutReply(CheckoutResponse);
}

/// What checkout answers: the order, its payment and, when the provider answered, the intent
/// the storefront confirms.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckoutResponse {
    pub order_id: String,
    pub payment_id: String,
    pub total: Money,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent_id: Option<String>,
}

#[utoipa::path(post, path = "/v1/carts", tag = "carts",
    request_body(content = OpenCartRequest, description = "empty"),
    params(IdempotencyHeader),
    responses((status = 201, description = "the new cart", body = CartReply), CreateErrors))]
pub async fn open_cart(
    State(state): State<AppState>,
    cmd: Cmd<OpenCartRequest>,
) -> ApiResult<CommandReply<CartView>> {
    let customer = cmd.principal.customer_id()?.clone();
    let executed = state.shop.open_cart(&cmd.ctx, &customer).await?;
    Ok(CommandReply::created(executed))
}

#[utoipa::path(get, path = "/v1/carts/{id}", tag = "carts",
    params(CartPath),
    responses((status = 200, description = "the cart", body = CartView), ItemReadErrors))]
pub async fn get_cart(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    AppPath(cart_id): AppPath<CartId>,
) -> ApiResult<Json<CartView>> {
    let cart = state
        .shop
        .get_cart(&principal.caller(), cart_id.as_str())
        .await?;
    Ok(Json(cart))
}

#[utoipa::path(post, path = "/v1/carts/{id}/items", tag = "carts",
    params(CartPath, IdempotencyHeader),
    request_body = AddItemRequest,
    responses((status = 200, description = "the cart", body = CartReply), CommandErrors))]
pub async fn add_item(
    State(state): State<AppState>,
    AppPath(cart_id): AppPath<CartId>,
    cmd: Cmd<AddItemRequest>,
) -> ApiResult<CommandReply<CartView>> {
    let executed = state
        .shop
        .add_item(
            &cmd.ctx,
            &cmd.caller(),
            cart_id.as_str(),
            cmd.body.product_id.as_str(),
            cmd.body.quantity,
        )
        .await?;
    Ok(CommandReply::ok(executed))
}

#[utoipa::path(patch, path = "/v1/carts/{id}/items/{product_id}", tag = "carts",
    params(CartItemPath, IdempotencyHeader),
    request_body = ChangeQuantityRequest,
    responses((status = 200, description = "the cart", body = CartReply), CommandErrors))]
pub async fn change_quantity(
    State(state): State<AppState>,
    AppPath((cart_id, product_id)): AppPath<(CartId, ProductId)>,
    cmd: Cmd<ChangeQuantityRequest>,
) -> ApiResult<CommandReply<CartView>> {
    let executed = state
        .shop
        .change_quantity(
            &cmd.ctx,
            &cmd.caller(),
            cart_id.as_str(),
            product_id.as_str(),
            cmd.body.quantity,
        )
        .await?;
    Ok(CommandReply::ok(executed))
}

#[utoipa::path(delete, path = "/v1/carts/{id}/items/{product_id}", tag = "carts",
    params(CartItemPath, IdempotencyHeader),
    request_body(content = NoBody, description = "empty"),
    responses((status = 200, description = "the cart", body = CartReply), CommandErrors))]
pub async fn remove_item(
    State(state): State<AppState>,
    AppPath((cart_id, product_id)): AppPath<(CartId, ProductId)>,
    cmd: Cmd<NoBody>,
) -> ApiResult<CommandReply<CartView>> {
    let executed = state
        .shop
        .remove_item(
            &cmd.ctx,
            &cmd.caller(),
            cart_id.as_str(),
            product_id.as_str(),
        )
        .await?;
    Ok(CommandReply::ok(executed))
}

#[utoipa::path(post, path = "/v1/carts/{id}/checkout", tag = "carts",
    params(CartPath, IdempotencyHeader),
    request_body = CheckoutRequest,
    responses((status = 201, description = "the order placed (409: insufficient stock, an empty cart, ...)", body = CheckoutReply),
        CommandErrors))]
pub async fn checkout(
    State(state): State<AppState>,
    AppPath(cart_id): AppPath<CartId>,
    cmd: Cmd<CheckoutRequest>,
) -> ApiResult<CommandReply<CheckoutResponse>> {
    let CheckoutRequest {
        email,
        shipping_address: a,
    } = cmd.body;
    let input = CheckoutInput {
        customer_email: email,
        shipping_address: ShippingAddress {
            name: a.name,
            line1: a.line1,
            line2: a.line2,
            city: a.city,
            postal_code: a.postal_code,
            country: a.country,
        },
    };
    let (executed, intent) = state
        .shop
        .checkout_and_pay(&cmd.ctx, &cmd.principal.caller(), cart_id.as_str(), input)
        .await
        .map_err(|e| match e {
            // The domain names the field after the order; the request calls it `email`.
            CommandError::Invalid { field, message } if field == "customer_email" => {
                CommandError::invalid("email", message)
            }
            other => other,
        })?;
    let receipt = executed.value;
    Ok(CommandReply::created(Executed {
        value: CheckoutResponse {
            order_id: receipt.order_id,
            payment_id: receipt.payment_id,
            total: receipt.total,
            status: receipt.status,
            client_secret: intent.as_ref().map(|i| i.client_secret.clone()),
            intent_id: intent.map(|i| i.intent_id),
        },
        commit: executed.commit,
        replayed: executed.replayed,
    }))
}
