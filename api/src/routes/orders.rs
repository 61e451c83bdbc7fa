//! Orders (customers: their own; support and admin: any) and the customer's notifications.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppPath, AppQuery, Cmd};
use crate::http::CommandReply;
use crate::routes::query::{ListQuery, NotificationList, OrderList, ReadQuery};
use crate::schema::{
    AckReply, CommandErrors, IdempotencyHeader, ItemReadErrors, OrderPath, ReadErrors,
};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use commands::Ack;
use domain::{OrderCommand, OrderId};
use projections::notifications;
use projections::order_history::{self, OrderView};
use serde::Deserialize;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why the order is cancelled (1 to 500 characters).
    #[schema(schema_with = crate::schema::non_blank::<MAX_REASON_CHARS>)]
    pub reason: String,
}

pub const MAX_REASON_CHARS: usize = 500;

#[utoipa::path(get, path = "/v1/orders", tag = "orders", params(ListQuery),
    responses((status = 200, description = "the caller's orders, newest first", body = OrderList), ReadErrors))]
pub async fn list_orders(
    State(state): State<AppState>,
    principal: Principal,
    AppQuery(q): AppQuery<ListQuery>,
) -> ApiResult<Json<OrderList>> {
    let customer = principal.customer_id()?;
    q.read_page(
        &state,
        &order_history::OrderHistoryProjection,
        |models, limit, after| {
            order_history::list_orders_for_customer(models, customer.as_str(), limit, after)
        },
    )
    .await
}

#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders",
    params(OrderPath, ReadQuery),
    responses((status = 200, description = "the order from the order history", body = OrderView),
        ItemReadErrors))]
pub async fn get_order(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(order_id): AppPath<OrderId>,
    AppQuery(q): AppQuery<ReadQuery>,
) -> ApiResult<Json<OrderView>> {
    q.wait_for(&state, &order_history::OrderHistoryProjection)
        .await;
    let order = order_history::get_order(state.models.as_ref(), order_id.as_str())
        .await?
        // Another customer's order is reported as missing, not forbidden.
        .filter(|o| {
            principal
                .customer
                .as_ref()
                .is_none_or(|c| *c == o.customer_id)
        })
        .ok_or_else(|| ApiError::not_found("order"))?;
    Ok(Json(order))
}

#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders",
    params(OrderPath, IdempotencyHeader),
    request_body = CancelRequest,
    responses((status = 200, description = "the order's new status", body = AckReply), CommandErrors))]
pub async fn cancel(
    State(state): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    cmd: Cmd<CancelRequest>,
) -> ApiResult<CommandReply<Ack>> {
    let reason = trimmed_text("reason", &cmd.body.reason, MAX_REASON_CHARS)?;
    order_reply(&state, &cmd, &order_id, |at| OrderCommand::Cancel {
        reason: reason.clone(),
        at,
    })
    .await
}

/// `text` without surrounding white space, or a 400 naming `field` unless that has 1 to
/// `max_chars` characters.
pub(crate) fn trimmed_text(field: &str, text: &str, max_chars: usize) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > max_chars {
        return Err(ApiError::validation(
            field,
            format!("must have 1 to {max_chars} characters"),
        ));
    }
    Ok(text.to_owned())
}

/// Runs the order command `command(now)` on `order_id` for the caller of `cmd` and answers with
/// its commit.
pub(crate) async fn order_reply<T>(
    state: &AppState,
    cmd: &Cmd<T>,
    order_id: &OrderId,
    command: impl Fn(DateTime<Utc>) -> OrderCommand,
) -> ApiResult<CommandReply<Ack>> {
    let at = state.clock.now();
    let executed = state
        .shop
        .order_command(&cmd.ctx, &cmd.caller(), order_id.as_str(), |_| command(at))
        .await?;
    Ok(CommandReply::ok(executed))
}

#[utoipa::path(get, path = "/v1/me/notifications", tag = "orders", params(ListQuery),
    responses((status = 200, description = "the caller's notifications, newest first", body = NotificationList), ReadErrors))]
pub async fn notifications(
    State(state): State<AppState>,
    principal: Principal,
    AppQuery(q): AppQuery<ListQuery>,
) -> ApiResult<Json<NotificationList>> {
    let customer = principal.customer_id()?;
    q.read_page(
        &state,
        &notifications::NotificationsProjection,
        |models, limit, after| {
            notifications::list_notifications_for_customer(models, customer.as_str(), limit, after)
        },
    )
    .await
}
