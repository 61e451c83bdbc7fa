//! Support views (support and admin).

use crate::error::{ApiError, ApiResult};
use crate::extract::{AppPath, AppQuery, Cmd};
use crate::http::CommandReply;
use crate::routes::query::{ListQuery, NotificationList, ReadQuery, SupportOrderList};
use crate::schema::{
    AckReply, CommandErrors, IdempotencyHeader, ItemReadErrors, NoBody, NotificationPath,
    OrderPath, ReadErrors,
};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use commands::Ack;
use domain::{NotificationId, OrderId, OrderStatus};
use projections::notifications;
use projections::support::{self, SupportQuery, SupportTimelineEntry};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// What support searches orders by; its paging is a [`ListQuery`] beside it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SupportSearch {
    /// Customer email (case-insensitive).
    pub email: Option<String>,
    /// Order status, for example `paid` or `payment_failed`.
    pub status: Option<OrderStatus>,
    /// Placed at or after (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Placed at or before (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    pub order_id: Option<String>,
    /// Payment intent id at the provider.
    pub intent_id: Option<String>,
    /// Charge id at the provider (as on the customer's bank statement or a dispute).
    pub charge_id: Option<String>,
    /// `true`: only orders whose payment was disputed; `false`: only the others.
    pub disputed: Option<bool>,
}

impl SupportSearch {
    /// The read model's query: these criteria, and pages of `limit` orders.
    fn into_query(self, limit: usize) -> SupportQuery {
        SupportQuery {
            email: self.email,
            status: self.status,
            from: self.from,
            to: self.to,
            order_id: self.order_id,
            intent_id: self.intent_id,
            charge_id: self.charge_id,
            disputed: self.disputed,
            limit,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Timeline {
    pub order_id: String,
    /// Oldest first: order, payment and notification entries.
    pub entries: Vec<SupportTimelineEntry>,
}

#[utoipa::path(get, path = "/v1/support/orders", tag = "support", params(SupportSearch, ListQuery),
    responses((status = 200, description = "matching orders, newest first", body = SupportOrderList), ReadErrors))]
pub async fn search(
    State(state): State<AppState>,
    AppQuery(search): AppQuery<SupportSearch>,
    AppQuery(q): AppQuery<ListQuery>,
) -> ApiResult<Json<SupportOrderList>> {
    q.read_page(
        &state,
        &support::SupportProjection,
        |models, limit, after| {
            let query = search.into_query(limit);
            async move { support::search_orders_page(models, &query, after).await }
        },
    )
    .await
}

#[utoipa::path(get, path = "/v1/support/orders/{id}/timeline", tag = "support",
    params(OrderPath, ReadQuery),
    responses((status = 200, description = "the order's timeline", body = Timeline), ItemReadErrors))]
pub async fn timeline(
    State(state): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    AppQuery(q): AppQuery<ReadQuery>,
) -> ApiResult<Json<Timeline>> {
    q.wait_for(&state, &support::SupportProjection).await;
    let models = state.models.as_ref();
    if support::get_support_order(models, order_id.as_str())
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("order"));
    }
    let entries = support::order_timeline(models, order_id.as_str()).await?;
    Ok(Json(Timeline {
        order_id: order_id.to_string(),
        entries,
    }))
}

#[utoipa::path(get, path = "/v1/support/notifications/failed", tag = "support", params(ListQuery),
    responses((status = 200, description = "notifications given up on, newest first, with the last failure's reason", body = NotificationList),
        ReadErrors))]
pub async fn failed_notifications(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<ListQuery>,
) -> ApiResult<Json<NotificationList>> {
    q.read_page(
        &state,
        &notifications::NotificationsProjection,
        |models, limit, after| notifications::failed_notifications(models, limit, after),
    )
    .await
}

#[utoipa::path(post, path = "/v1/support/notifications/{id}/resend", tag = "support",
    description = "Makes a notification the delivery worker gave up on due again, for one more attempt.",
    params(NotificationPath, IdempotencyHeader),
    responses((status = 200, description = "due again", body = AckReply), CommandErrors))]
pub async fn resend_notification(
    State(state): State<AppState>,
    AppPath(id): AppPath<NotificationId>,
    cmd: Cmd<NoBody>,
) -> ApiResult<CommandReply<Ack>> {
    let executed = state
        .shop
        .resend_notification(&cmd.ctx, id.as_str(), state.clock.now())
        .await?;
    tracing::info!(notification_id = %id, "notification resend requested");
    Ok(CommandReply::ok(executed))
}

#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequestBody {
    /// Amount in the order's currency, for example "5.00"; omit it to refund everything that is
    /// still refundable.
    #[schema(value_type = Option<crate::schema::PositiveAmount>)]
    pub amount: Option<String>,
}

#[utoipa::path(post, path = "/v1/support/orders/{id}/refunds", tag = "support",
    description = "400 when `amount` has more decimals than the order's currency.",
    params(OrderPath, IdempotencyHeader),
    request_body = RefundRequestBody,
    responses((status = 201, description = "the refund receipt: `succeeded` is recorded now, `pending` when Stripe confirms it", body = commands::RefundReceipt),
        CommandErrors))]
pub async fn refund(
    State(state): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    cmd: crate::extract::Cmd<RefundRequestBody>,
) -> ApiResult<(axum::http::StatusCode, Json<commands::RefundReceipt>)> {
    let order = state
        .shop
        .get_order_state(&cmd.caller(), order_id.as_str())
        .await?;
    let amount = match &cmd.body.amount {
        None => None,
        Some(raw) => {
            let currency = order
                .state
                .total
                .as_ref()
                .map(|t| t.currency())
                .ok_or_else(|| ApiError::not_found("order"))?;
            Some(
                domain::Money::parse(raw.trim(), currency.code())
                    .map_err(|e| ApiError::validation("amount", e.to_string()))?,
            )
        }
    };
    if amount.as_ref().is_some_and(|a| a.is_zero()) {
        return Err(ApiError::validation("amount", "must be greater than zero"));
    }
    // The Idempotency-Key (when given) is the refund request's key; without one every request is
    // a new refund.
    let request_key = cmd
        .ctx
        .idempotency
        .as_ref()
        .map(|k| k.command_id.clone())
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let receipt = state
        .webhooks
        .payments()
        .refund_order(&cmd.ctx, order_id.as_str(), amount, &request_key)
        .await?;
    Ok((axum::http::StatusCode::CREATED, Json(receipt)))
}
