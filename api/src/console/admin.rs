//! Operators (admin): the catalog, the projections with their rebuilds (live progress), and
//! the delivery failure counts.

use super::api::Api;
use super::page::{
    self, layout, link, money, notice, pager, segment, text, Failure, ListPageQuery,
};
use super::session::{NoFields, Posted, Staff};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Redirect;
use axum::Json;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

const CATALOG: &str = "/console/admin/catalog";

/// The catalog, with the form that creates a product.
pub async fn catalog(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<ListPageQuery>,
) -> Result<Markup, Failure> {
    // The catalog is public, but editing it is not: only admins see this page.
    page::allow(&staff, CATALOG)?;
    let (products, next) = Api::new(&state, &staff)
        .page("/v1/catalog/products", "products", &q.api_query())
        .await?;
    let first = CATALOG;
    let next = next.map(|cursor| link(first, [("cursor", cursor.as_str())]));
    let body = html! {
        @if q.done == "create" { (notice("Product created.")) }
        table #products {
            thead { tr { th { "Product" } th { "Name" } th { "Category" } th { "Price" } th { "On hand" }
                th { "Reserved" } th { "Available" } th { "Status" } } }
            tbody {
                @for p in &products {
                    @let id = text(&p["product_id"]);
                    tr {
                        td { a href=(format!("{CATALOG}/{}", segment(&id))) { (id) } }
                        td { (text(&p["name"])) }
                        td { (text(&p["category"])) }
                        td { (money(&p["price"])) }
                        td { (text(&p["on_hand"])) }
                        td { (text(&p["reserved"])) }
                        td { (text(&p["available"])) }
                        td { (text(&p["status"])) }
                    }
                }
            }
        }
        (pager(first, next, q.cursor.is_empty()))
        h2 { "New product" }
        (page::form(&staff.csrf, CATALOG, "Create", html! {
            (page::input("Product id", "product_id", "text", Some("prd_")))
            (page::input("Name", "name", "text", None))
            (page::input("Category", "category", "text", None))
            (page::input("Price", "amount", "text", None))
            (page::input("Currency", "currency", "text", Some("EUR")))
            (page::input("Initial stock", "quantity", "number", Some("0")))
        }))
    };
    Ok(layout("Catalog", Some(&staff), body))
}

/// Every field a catalog form may send; each action reads the ones it needs.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProductForm {
    action: String,
    product_id: String,
    name: String,
    category: String,
    description: String,
    amount: String,
    currency: String,
    quantity: String,
}

impl ProductForm {
    fn quantity(&self) -> Result<u32, Failure> {
        self.quantity.trim().parse().map_err(|_| {
            Failure::refused(
                StatusCode::BAD_REQUEST,
                "the quantity must be a whole number",
            )
        })
    }

    fn price(&self) -> Value {
        json!({ "amount": self.amount.trim(), "currency": self.currency.trim() })
    }
}

pub async fn create(
    State(state): State<AppState>,
    posted: Posted<ProductForm>,
) -> Result<Redirect, Failure> {
    let form = &posted.form;
    let body = json!({
        "product_id": form.product_id.trim(),
        "name": form.name.trim(),
        "category": form.category.trim(),
        "price": form.price(),
        "initial_stock": form.quantity()?,
    });
    let answer = Api::new(&state, &posted.staff)
        .send(
            Method::POST,
            "/v1/admin/products",
            Some(&body),
            posted.idempotency_key.as_deref(),
        )
        .await?;
    Ok(done(CATALOG, "create", &answer))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProductQuery {
    done: String,
    consistency: String,
}

/// What each product action is called once done.
const DONE: [(&str, &str); 5] = [
    ("reprice", "Price changed."),
    ("describe", "Description changed."),
    ("restock", "Restocked."),
    ("retire", "Retired."),
    ("unretire", "Back on sale."),
];

/// One product, with a form per action.
pub async fn product(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Query(q): Query<ProductQuery>,
) -> Result<Markup, Failure> {
    page::allow(&staff, CATALOG)?;
    let p = Api::new(&state, &staff)
        .get(&link(
            &format!("/v1/catalog/products/{}", segment(&id)),
            [("consistency", q.consistency.as_str())],
        ))
        .await?;
    let action = format!("{CATALOG}/{}", segment(&id));
    let form = |name: &str, label: &str, fields: Markup| {
        page::form(
            &staff.csrf,
            &action,
            label,
            html! { input type="hidden" name="action" value=(name); (fields) },
        )
    };
    let retired = p["status"].as_str() == Some("retired");
    let body = html! {
        @if let Some((_, done)) = DONE.iter().find(|(a, _)| *a == q.done) { (notice(done)) }
        dl.summary {
            dt { "Name" } dd { (text(&p["name"])) }
            dt { "Category" } dd { (text(&p["category"])) }
            dt { "Description" } dd { (text(&p["description"])) }
            dt { "Price" } dd #price { (money(&p["price"])) }
            dt { "On hand" } dd #on-hand { (text(&p["on_hand"])) }
            dt { "Reserved" } dd { (text(&p["reserved"])) }
            dt { "Status" } dd #product-status { (text(&p["status"])) }
        }
        h2 { "Reprice" }
        (form("reprice", "Reprice", html! {
            (page::input("Price", "amount", "text", p["price"]["amount"].as_str()))
            (page::input("Currency", "currency", "text", p["price"]["currency"].as_str()))
        }))
        h2 { "Describe" }
        (form("describe", "Save", html! {
            (page::input("Name", "name", "text", p["name"].as_str()))
            (page::input("Category", "category", "text", p["category"].as_str()))
            (page::input("Description", "description", "text", p["description"].as_str()))
        }))
        h2 { "Restock" }
        (form("restock", "Restock", page::input("Quantity", "quantity", "number", Some("1"))))
        h2 { "Sale" }
        @if retired {
            (form("unretire", "Put back on sale", html! {}))
        } @else {
            (form("retire", "Retire", html! {}))
        }
    };
    Ok(layout(&format!("Product {id}"), Some(&staff), body))
}

/// Runs one product action through the API, then shows the product as the command left it.
pub async fn edit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<ProductForm>,
) -> Result<Redirect, Failure> {
    let form = &posted.form;
    let base = format!("/v1/admin/products/{}", segment(&id));
    let (method, uri, body) = match form.action.as_str() {
        "reprice" => (
            Method::PUT,
            format!("{base}/price"),
            json!({ "price": form.price() }),
        ),
        "describe" => (
            Method::PATCH,
            base,
            json!({
                "name": form.name.trim(),
                "category": form.category.trim(),
                "description": form.description.trim(),
            }),
        ),
        "restock" => (
            Method::POST,
            format!("{base}/restock"),
            json!({ "quantity": form.quantity()? }),
        ),
        "retire" | "unretire" => (Method::POST, format!("{base}/{}", form.action), json!({})),
        _ => {
            return Err(Failure::refused(
                StatusCode::BAD_REQUEST,
                "unknown product action",
            ))
        }
    };
    let answer = Api::new(&state, &posted.staff)
        .send(method, &uri, Some(&body), posted.idempotency_key.as_deref())
        .await?;
    Ok(done(
        &format!("{CATALOG}/{}", segment(&id)),
        &form.action,
        &answer,
    ))
}

/// Back to `page` after a command, saying what was done, and reading what it wrote (the
/// command's consistency token).
fn done(page: &str, action: &str, answer: &Value) -> Redirect {
    let consistency = answer["consistency"].as_str().unwrap_or_default();
    Redirect::to(&link(
        page,
        [("done", action), ("consistency", consistency)],
    ))
}

/// The counts of deliveries that failed, from this process's metrics.
fn failure_counts(state: &AppState) -> [(&'static str, u64); 3] {
    let rendered = state.metrics.render();
    let total = |metric: &str, label: Option<&str>| -> u64 {
        rendered
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| {
                line.strip_prefix(metric)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter(|line| label.is_none_or(|l| line.contains(l)))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            // Counters: whole numbers.
            .map(|count| count as u64)
            .sum()
    };
    [
        (
            "Notifications given up on (delivery failed for good)",
            total(workers::delivery::NOTIFICATIONS_FAILED, None),
        ),
        (
            "Queue messages failed, left for redelivery and then the DLQ (queue workers only)",
            total("backbone_queue_messages_total", Some("result=\"failed\"")),
        ),
        (
            "Worker steps failed (retried from their checkpoint)",
            total("backbone_worker_failures_total", None),
        ),
    ]
}

/// How a rebuild is going, as the script also writes it.
fn progress(rebuild: &Value) -> String {
    if rebuild.is_null() {
        return "—".to_owned();
    }
    format!(
        "{} {}/{}",
        text(&rebuild["state"]),
        text(&rebuild["position"]),
        text(&rebuild["head"])
    )
}

/// The projections: position, lag, health and rebuilds, refreshed by the page's script while a
/// rebuild runs.
pub async fn projections(State(state): State<AppState>, staff: Staff) -> Result<Markup, Failure> {
    let found = Api::new(&state, &staff)
        .get("/v1/admin/projections")
        .await?;
    let projections = found["projections"].as_array().cloned().unwrap_or_default();
    let body = html! {
        p { "Feed head: " strong #head { (text(&found["head"])) } }
        table #projections data-poll="/console/admin/projections/status" {
            thead { tr { th { "Projection" } th { "Position" } th { "Lag" } th { "Healthy" } th { "Last error" } th { "Rebuild" } th {} } }
            tbody {
                @for p in &projections {
                    @let name = text(&p["name"]);
                    tr data-projection=(name) {
                        td { (name) }
                        td data-field="position" { (text(&p["position"])) }
                        td data-field="lag" { (text(&p["lag"])) }
                        td data-field="healthy" { (text(&p["healthy"])) }
                        td data-field="last_error" { (text(&p["last_error"])) }
                        td {
                            progress max=(p["rebuild"]["head"].as_u64().unwrap_or(1).max(1)) value=(p["rebuild"]["position"].as_u64().unwrap_or(0)) {}
                            " " span data-field="rebuild" { (progress(&p["rebuild"])) }
                        }
                        td { (page::form(&staff.csrf, &format!("/console/admin/projections/{}/rebuild", segment(&name)), "Rebuild", html! {})) }
                    }
                }
            }
        }
        h2 { "Delivery failures since this process started" }
        dl.summary #failures {
            @for (label, count) in failure_counts(&state) {
                dt { (label) } dd { (count) }
            }
        }
    };
    Ok(layout("Projections", Some(&staff), body))
}

/// The projections as the API lists them, for the page's script.
pub async fn projections_status(
    State(state): State<AppState>,
    staff: Staff,
) -> Result<Json<Value>, Failure> {
    Ok(Json(
        Api::new(&state, &staff)
            .get("/v1/admin/projections")
            .await?,
    ))
}

pub async fn rebuild(
    State(state): State<AppState>,
    Path(name): Path<String>,
    posted: Posted<NoFields>,
) -> Result<Redirect, Failure> {
    Api::new(&state, &posted.staff)
        .send(
            Method::POST,
            &format!("/v1/admin/projections/{}/rebuild", segment(&name)),
            None,
            None,
        )
        .await?;
    tracing::info!(projection = %name, subject = %posted.staff.principal.subject, "console rebuild");
    Ok(Redirect::to("/console/admin/projections"))
}
