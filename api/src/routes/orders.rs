//! Orders (customers: their own; support and admin: any) and the customer's notifications.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppPath, AppQuery, Cmd};
use crate::http::CommandReply;
use crate::schema::{
    AckReply, CommandErrors, IdempotencyHeader, ItemReadErrors, OrderPath, ReadErrors,
};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use commands::{Ack, Consistency};
use domain::{OrderCommand, OrderId};
use projections::notifications::NotificationView;
use projections::order_history::{self, OrderView};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Default and largest page of list endpoints.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

pub fn limit(requested: Option<usize>) -> usize {
    requested.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

/// Where the next page of a list starts: a list answer's `next_cursor`, passed back as
/// `?cursor=`. Opaque to clients (the hex of the last item's sort key).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cursor(String);

impl Cursor {
    pub fn of(sort_key: String) -> String {
        hex::encode(sort_key)
    }

    pub fn key(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Cursor {
    type Error = &'static str;

    fn try_from(s: String) -> Result<Self, &'static str> {
        const INVALID: &str = "not a cursor this API gave out";
        if s.is_empty() || s.len() > 2_048 {
            return Err(INVALID);
        }
        let bytes = hex::decode(&s).map_err(|_| INVALID)?;
        String::from_utf8(bytes).map(Cursor).map_err(|_| INVALID)
    }
}

/// The next page's cursor, when there is one.
pub fn next_cursor<T>(page: &projections::Page<T>) -> Option<String> {
    page.next.clone().map(Cursor::of)
}

/// Query parameters of list endpoints over projections.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many items (default 50, at most 500).
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

/// Query parameters of single-item reads over projections.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// Read-your-writes: a command answer's `consistency` token. The query waits (at most `--consistency-wait`, 2 s by default)
    /// until this read model reflects that write.
    #[param(value_type = Option<crate::schema::ConsistencyToken>)]
    pub consistency: Option<Consistency>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderList {
    #[schema(value_type = Vec<crate::schema::OrderSchema>)]
    pub orders: Vec<OrderView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationList {
    #[schema(value_type = Vec<crate::schema::NotificationSchema>)]
    pub notifications: Vec<NotificationView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

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
    state
        .read_after(
            &order_history::OrderHistoryProjection,
            q.consistency.as_ref(),
        )
        .await;
    let page = order_history::list_orders_for_customer(
        state.models.as_ref(),
        customer.as_str(),
        limit(q.limit),
        q.cursor.as_ref().map(Cursor::key),
    )
    .await?;
    Ok(Json(OrderList {
        next_cursor: next_cursor(&page),
        orders: page.items,
    }))
}

#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders",
    params(OrderPath, ReadQuery),
    responses((status = 200, description = "the order from the order history", body = crate::schema::OrderSchema),
        ItemReadErrors))]
pub async fn get_order(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(order_id): AppPath<OrderId>,
    AppQuery(q): AppQuery<ReadQuery>,
) -> ApiResult<Json<OrderView>> {
    state
        .read_after(
            &order_history::OrderHistoryProjection,
            q.consistency.as_ref(),
        )
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
    let reason = cmd.body.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::validation(
            "reason",
            format!("must have 1 to {MAX_REASON_CHARS} characters"),
        ));
    }
    let at = state.clock.now();
    let executed = state
        .shop
        .order_command(&cmd.ctx, &cmd.caller(), order_id.as_str(), |_| {
            OrderCommand::Cancel {
                reason: reason.clone(),
                at,
            }
        })
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
    state
        .read_after(
            &projections::notifications::NotificationsProjection,
            q.consistency.as_ref(),
        )
        .await;
    let page = projections::notifications::list_notifications_for_customer(
        state.models.as_ref(),
        customer.as_str(),
        limit(q.limit),
        q.cursor.as_ref().map(Cursor::key),
    )
    .await?;
    Ok(Json(NotificationList {
        next_cursor: next_cursor(&page),
        notifications: page.items,
    }))
}
