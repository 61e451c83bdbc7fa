//! The OpenAPI document served at `/openapi.json`, generated from the handlers' annotations.
//! It reads the handlers in [`crate::routes`]; they never read it.

use crate::routes::{admin, analyst, carts, catalog, ops, orders, payments, support, webhooks};
use crate::schema::MoneySchema;
use axum::response::IntoResponse;
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "claims: sub, role (customer | support | admin | analyst), exp",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "order backbone",
        description = "Event-sourced order backbone: storefront commands, read models, staff and analyst views. \
Errors are `{\"error\": {\"code\", \"message\", \"details\"?, \"request_id\"}}`. Command responses carry a `consistency` token; \
pass it as `consistency` to a read-model query to read your own writes (the same on every backend)."
    ),
    paths(
        carts::open_cart, carts::get_cart, carts::add_item, carts::change_quantity,
        carts::remove_item, carts::checkout,
        orders::list_orders, orders::get_order, orders::cancel, orders::notifications,
        catalog::list_products, catalog::get_product,
        payments::client_secret, payments::confirm,
        admin::create_product, admin::reprice, admin::restock, admin::retire, admin::unretire,
        admin::describe, admin::adjust_stock, catalog::list_categories, admin::ship,
        admin::deliver, admin::list_projections, admin::rebuild_projection, admin::erase_customer,
        support::search, support::timeline, support::refund, support::failed_notifications,
        webhooks::stripe,
        analyst::events, analyst::stream_at,
        ops::healthz, ops::readyz, ops::metrics, serve,
    ),
    components(schemas(MoneySchema, crate::error::ErrorBody)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// The document, built once per call (it is small).
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "this document")))]
pub async fn serve() -> impl IntoResponse {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_itself_and_the_shared_wire_types() {
        let doc = document();
        assert!(doc.paths.paths.contains_key("/openapi.json"));
        assert!(doc
            .paths
            .paths
            .contains_key("/v1/carts/{id}/items/{product_id}"));
        let schemas = &doc.components.expect("components").schemas;
        for name in ["MoneySchema", "ErrorBody"] {
            assert!(schemas.contains_key(name), "{name} missing");
        }
    }
}
