//! Support (support and admin): order search, an order's timeline, refunds, and the
//! notifications given up on.

use super::api::Api;
use super::page::{
    self, layout, link, money, notice, pager, pairs, segment, text, Failure, ListPageQuery,
};
use super::session::{NoFields, Posted, Staff};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Redirect;
use commands::Caller;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

/// The search form, which is also the page's query.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Search {
    email: String,
    status: String,
    from: String,
    to: String,
    order_id: String,
    intent_id: String,
    disputed: String,
    cursor: String,
}

impl Search {
    /// The criteria, as the API and the pager links take them.
    fn criteria(&self) -> Vec<(&'static str, String)> {
        vec![
            ("email", self.email.trim().to_owned()),
            ("status", self.status.trim().to_owned()),
            ("from", page::instant(&self.from)),
            ("to", page::instant(&self.to)),
            ("order_id", self.order_id.trim().to_owned()),
            ("intent_id", self.intent_id.trim().to_owned()),
            ("disputed", self.disputed.clone()),
        ]
    }
}

pub async fn search(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<Search>,
) -> Result<Markup, Failure> {
    let criteria = q.criteria();
    let query: Vec<_> = pairs(&criteria)
        .chain([("cursor", q.cursor.as_str())])
        .collect();
    let (orders, next) = Api::new(&state, &staff)
        .page("/v1/support/orders", "orders", &query)
        .await?;
    let first = link("/console/support/orders", pairs(&criteria));
    let next = next.map(|cursor| {
        link(
            "/console/support/orders",
            pairs(&criteria).chain([("cursor", cursor.as_str())]),
        )
    });
    let body = html! {
        form.search method="get" action="/console/support/orders" {
            (page::input("Email", "email", "email", Some(&q.email)))
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for status in domain::OrderStatus::ALL.map(domain::OrderStatus::as_str) {
                        option value=(status) selected[q.status == status] { (status) }
                    }
                }
            }
            (page::input("Placed from", "from", "datetime-local", Some(&q.from)))
            (page::input("to", "to", "datetime-local", Some(&q.to)))
            (page::input("Order id", "order_id", "text", Some(&q.order_id)))
            (page::input("Intent id", "intent_id", "text", Some(&q.intent_id)))
            label { "Disputed "
                select name="disputed" {
                    @for (value, label) in [("", "any"), ("true", "disputed"), ("false", "not disputed")] {
                        option value=(value) selected[q.disputed == value] { (label) }
                    }
                }
            }
            button type="submit" { "Search" }
        }
        @if orders.is_empty() {
            p { "No orders match." }
        } @else {
            table #orders {
                thead { tr { th { "Order" } th { "Email" } th { "Status" } th { "Payment" } th { "Total" }
                    th { "Dispute" } th { "Failed notifications" } th { "Placed" } } }
                tbody {
                    @for o in &orders {
                        @let id = text(&o["order_id"]);
                        tr {
                            td { a href=(format!("/console/support/orders/{}", segment(&id))) { (id) } }
                            td { (text(&o["email"])) }
                            td.status { (text(&o["status"])) }
                            td { (text(&o["payment_status"])) }
                            td { (money(&o["total"])) }
                            td { (text(&o["dispute"]["status"])) }
                            td { (text(&o["failed_notifications"])) }
                            td { (text(&o["placed_at"])) }
                        }
                    }
                }
            }
        }
        (pager(&first, next, q.cursor.is_empty()))
    };
    Ok(layout("Orders", Some(&staff), body))
}

pub async fn order(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Markup, Failure> {
    order_page(&state, &staff, &id, None).await
}

/// An order: its summary, where it ships, its timeline, and the refund form.
async fn order_page(
    state: &AppState,
    staff: &Staff,
    id: &str,
    done: Option<Markup>,
) -> Result<Markup, Failure> {
    let api = Api::new(state, staff);
    let order = api.get(&format!("/v1/orders/{}", segment(id))).await?;
    let timeline = api
        .get(&format!("/v1/support/orders/{}/timeline", segment(id)))
        .await?;
    // The API let this caller read the order; where it ships is only in the order's own state.
    let ship_to = match state.shop.get_order_state(&Caller::Staff, id).await {
        Ok(loaded) => loaded.state.shipping_address.clone(),
        Err(e) => {
            tracing::warn!(order_id = %id, error = %e, "console could not load the order's shipping address");
            None
        }
    };
    let entries = timeline["entries"].as_array().cloned().unwrap_or_default();
    let body = html! {
        @if let Some(done) = done { (done) }
        dl.summary {
            dt { "Status" } dd #status { (text(&order["status"])) }
            dt { "Customer" } dd { (text(&order["customer_email"])) }
            dt { "Total" } dd { (money(&order["total"])) }
            dt { "Paid" } dd { (money(&order["paid"])) }
            dt { "Refunded" } dd #refunded { (money(&order["refunded"])) }
            dt { "Payment" } dd { (text(&order["payment_status"])) " · " (text(&order["intent_id"])) }
            dt { "Placed" } dd { (text(&order["placed_at"])) }
            @if let Some(address) = &ship_to {
                dt { "Ship to" }
                dd #ship-to {
                    (address.name) br; (address.line1) br;
                    @if let Some(line2) = &address.line2 { (line2) br; }
                    (address.postal_code) " " (address.city) ", " (address.country)
                }
            }
        }
        h2 { "Timeline" }
        table #timeline {
            thead { tr { th { "At" } th { "Source" } th { "Event" } th { "Summary" } } }
            tbody {
                @for e in &entries {
                    tr { td { (text(&e["at"])) } td { (text(&e["source"])) } td.event { (text(&e["event_type"])) } td { (text(&e["summary"])) } }
                }
            }
        }
        h2 { "Refund" }
        (page::form(&staff.csrf, &format!("/console/support/orders/{}/refunds", segment(id)), "Refund", html! {
            (page::input("Amount (empty: everything refundable)", "amount", "text", None))
        }))
    };
    Ok(layout(&format!("Order {id}"), Some(staff), body))
}

#[derive(Debug, Deserialize)]
pub struct RefundForm {
    #[serde(default)]
    amount: String,
}

/// Refunds through the API with the form's idempotency key (a resent form refunds once), and
/// shows the order with the receipt.
pub async fn refund(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<RefundForm>,
) -> Result<Markup, Failure> {
    let amount = posted.form.amount.trim();
    let body = if amount.is_empty() {
        json!({})
    } else {
        json!({ "amount": amount })
    };
    let receipt = Api::new(&state, &posted.staff)
        .send(
            Method::POST,
            &format!("/v1/support/orders/{}/refunds", segment(&id)),
            Some(&body),
            posted.idempotency_key.as_deref(),
        )
        .await?;
    tracing::info!(order_id = %id, subject = %posted.staff.principal.subject, status = %text(&receipt["status"]), "console refund");
    let done = notice(&format!(
        "Refund {}: {}",
        text(&receipt["status"]),
        money(&receipt["amount"])
    ));
    order_page(&state, &posted.staff, &id, Some(done)).await
}

const NOTIFICATIONS: &str = "/console/support/notifications";

/// Notifications the delivery worker gave up on, newest first.
pub async fn failed(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<ListPageQuery>,
) -> Result<Markup, Failure> {
    let (notifications, next) = Api::new(&state, &staff)
        .page(
            "/v1/support/notifications/failed",
            "notifications",
            &q.api_query(),
        )
        .await?;
    let first = NOTIFICATIONS;
    let next = next.map(|cursor| link(first, [("cursor", cursor.as_str())]));
    let body = html! {
        @if q.done == "resend" { (notice("Resend requested: the notification is due again now.")) }
        @if notifications.is_empty() {
            p { "No failed notifications." }
        } @else {
            table #notifications {
                thead { tr { th { "Created" } th { "Order" } th { "To" } th { "Kind" } th { "Subject" } th { "Attempts" } th { "Last error" } th {} } }
                tbody {
                    @for n in &notifications {
                        @let order = text(&n["order_id"]);
                        tr {
                            td { (text(&n["created_at"])) }
                            td { a href=(format!("/console/support/orders/{}", segment(&order))) { (order) } }
                            td { (text(&n["email"])) }
                            td { (text(&n["kind"])) }
                            td { (text(&n["subject"])) }
                            td { (text(&n["attempts"])) }
                            td { (text(&n["last_error"])) }
                            td { (page::form(&staff.csrf, &format!("{NOTIFICATIONS}/{}/resend", segment(&text(&n["notification_id"]))), "Resend", html! {})) }
                        }
                    }
                }
            }
        }
        (pager(first, next, q.cursor.is_empty()))
    };
    Ok(layout("Failed notifications", Some(&staff), body))
}

/// Resends a notification given up on through the API (due again now, for one more attempt),
/// with the form's idempotency key.
pub async fn resend(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<NoFields>,
) -> Result<Redirect, Failure> {
    let reply = Api::new(&state, &posted.staff)
        .send(
            Method::POST,
            &format!("/v1/support/notifications/{}/resend", segment(&id)),
            None,
            posted.idempotency_key.as_deref(),
        )
        .await?;
    tracing::info!(notification_id = %id, subject = %posted.staff.principal.subject, "console resend");
    let consistency = reply["consistency"].as_str().unwrap_or_default();
    Ok(Redirect::to(&link(
        NOTIFICATIONS,
        [("done", "resend"), ("consistency", consistency)],
    )))
}
