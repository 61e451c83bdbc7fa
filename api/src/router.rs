//! The router: route groups by role, each behind its auth layer, and the cross-cutting layers.
//! The handlers live in [`crate::routes`]; the OpenAPI document that describes them is served by
//! [`crate::openapi`].

use crate::auth::Role;
use crate::http::{AuthLayer, RequestContextLayer, MAX_BODY};
use crate::openapi;
use crate::routes::{admin, analyst, carts, catalog, ops, orders, payments, support, webhooks};
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, patch, post, put};
use axum::Router;

const CUSTOMER: &[Role] = &[Role::Customer];
const ORDER_READERS: &[Role] = &[Role::Customer, Role::Support, Role::Admin];
const ORDER_CANCELLERS: &[Role] = &[Role::Customer, Role::Admin];
const EVERYONE: &[Role] = &[Role::Customer, Role::Support, Role::Admin, Role::Analyst];
const ADMIN: &[Role] = &[Role::Admin];
const SUPPORT: &[Role] = &[Role::Support, Role::Admin];
const ANALYST: &[Role] = &[Role::Analyst];

/// Puts a route group behind authentication and a role check.
fn group(state: &AppState, roles: &'static [Role], routes: Router<AppState>) -> Router<AppState> {
    routes.route_layer(AuthLayer {
        state: state.clone(),
        roles,
    })
}

/// The whole HTTP API. Needs no socket: tests can drive it with `tower::ServiceExt::oneshot`.
pub fn app(state: AppState) -> Router {
    build(state, true)
}

/// [`app`] without `/metrics`, for a server whose metrics are on its operations listener
/// (`--ops-listen`): a load balancer's listener then does not expose them.
pub fn app_without_metrics(state: AppState) -> Router {
    build(state, false)
}

fn build(state: AppState, metrics: bool) -> Router {
    let storefront = Router::new()
        .route("/v1/carts", post(carts::open_cart))
        .route("/v1/carts/{id}", get(carts::get_cart))
        .route("/v1/carts/{id}/items", post(carts::add_item))
        .route(
            "/v1/carts/{id}/items/{product_id}",
            patch(carts::change_quantity).delete(carts::remove_item),
        )
        .route("/v1/carts/{id}/checkout", post(carts::checkout))
        .route("/v1/orders", get(orders::list_orders))
        .route("/v1/me/notifications", get(orders::notifications))
        .route(
            "/v1/payments/{payment_id}/client-secret",
            get(payments::client_secret),
        )
        .route("/v1/payments/{payment_id}/confirm", post(payments::confirm));
    let order_reads = Router::new().route("/v1/orders/{id}", get(orders::get_order));
    let order_cancel = Router::new().route("/v1/orders/{id}/cancel", post(orders::cancel));
    let catalog = Router::new()
        .route("/v1/catalog/products", get(catalog::list_products))
        .route("/v1/catalog/products/{id}", get(catalog::get_product))
        .route("/v1/catalog/categories", get(catalog::list_categories));
    let admin = Router::new()
        .route("/v1/admin/products", post(admin::create_product))
        .route("/v1/admin/products/{id}/price", put(admin::reprice))
        .route("/v1/admin/products/{id}/restock", post(admin::restock))
        .route("/v1/admin/products/{id}", patch(admin::describe))
        .route("/v1/admin/products/{id}/retire", post(admin::retire))
        .route("/v1/admin/products/{id}/unretire", post(admin::unretire))
        .route(
            "/v1/admin/products/{id}/stock-adjustments",
            post(admin::adjust_stock),
        )
        .route("/v1/admin/orders/{id}/ship", post(admin::ship))
        .route("/v1/admin/orders/{id}/deliver", post(admin::deliver))
        .route(
            "/v1/admin/customers/{id}/erase",
            post(admin::erase_customer),
        )
        .route("/v1/admin/projections", get(admin::list_projections))
        .route(
            "/v1/admin/projections/{name}/rebuild",
            post(admin::rebuild_projection),
        );
    let support = Router::new()
        .route("/v1/support/orders", get(support::search))
        .route("/v1/support/orders/{id}/timeline", get(support::timeline))
        .route("/v1/support/orders/{id}/refunds", post(support::refund))
        .route(
            "/v1/support/notifications/failed",
            get(support::failed_notifications),
        )
        .route(
            "/v1/support/notifications/{id}/resend",
            post(support::resend_notification),
        );
    let analyst = Router::new()
        .route("/v1/events", get(analyst::events))
        .route("/v1/streams/{type}/{id}", get(analyst::stream_at));
    let operations = if metrics {
        Router::new().route("/metrics", get(ops::metrics))
    } else {
        Router::new()
    };
    let operations = operations
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/openapi.json", get(openapi::serve))
        .route("/v1/webhooks/stripe", post(webhooks::stripe));

    Router::new()
        .merge(group(&state, CUSTOMER, storefront))
        .merge(group(&state, ORDER_READERS, order_reads))
        .merge(group(&state, ORDER_CANCELLERS, order_cancel))
        // A storefront shows the catalog before anyone signs in; `--catalog-auth required`
        // puts it behind a token again.
        .merge(if state.catalog_auth_required {
            group(&state, EVERYONE, catalog)
        } else {
            catalog
        })
        .merge(group(&state, ADMIN, admin))
        .merge(group(&state, SUPPORT, support))
        .merge(group(&state, ANALYST, analyst))
        .merge(operations)
        // The document lists each operation's query parameters; any other is refused.
        .route_layer(axum::middleware::from_fn(
            openapi::reject_undocumented_query,
        ))
        .merge(crate::console::router())
        .fallback(ops::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(RequestContextLayer)
        .with_state(state)
}
