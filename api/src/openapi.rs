//! The OpenAPI document served at `/openapi.json`, generated from the handlers' annotations.
//! It reads the handlers in [`crate::routes`]; they never read it.
//!
//! The document is also the list of each operation's query parameters: a request naming one it
//! does not list is refused with 400 ([`reject_undocumented_query`]).

use crate::error::ApiError;
use crate::routes::{admin, analyst, carts, catalog, ops, orders, payments, support, webhooks};
use crate::schema::{self, OpenApiSchema};
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi, ToSchema};

/// The parts of the document no handler owns: the bearer scheme and the reusable error
/// responses.
struct Components;

impl Modify for Components {
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
        for (name, response) in schema::error_responses() {
            components.responses.insert(name.into(), response.into());
        }
        // utoipa-gen 5.5 writes `#[schema(min_properties = ..)]` as `maxProperties`, so the
        // one object that needs a minimum gets it here.
        if let Some(RefOr::T(Schema::Object(describe))) = components
            .schemas
            .get_mut(admin::DescribeRequest::name().as_ref())
        {
            describe.min_properties = Some(1);
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "order backbone",
        description = "Event-sourced order backbone: storefront commands, read models, staff and analyst views. \
Errors are `{\"error\": {\"code\", \"message\", \"details\"?, \"request_id\"}}`; every operation lists the statuses it answers with. \
Command responses carry a `consistency` token; \
pass it as `consistency` to a read-model query to read your own writes (the same on every backend). \
A query parameter an operation does not list is refused with 400 `validation_failed` naming it, on every operation."
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
        support::search, support::timeline, support::refund, support::failed_notifications, support::resend_notification,
        webhooks::stripe,
        analyst::events, analyst::stream_at,
        ops::healthz, ops::readyz, ops::metrics, serve,
    ),
    components(schemas(
        domain::Money, crate::error::ErrorBody, schema::Id, schema::ConsistencyToken,
        schema::CursorToken, schema::IdempotencyKey, domain::OrderStatus,
        domain::StreamType, schema::StreamFilterText, schema::VersionOrInstant, schema::Email,
        schema::PositiveAmount,
    )),
    // Every operation needs a token but those that say otherwise.
    security(("bearer" = [])),
    modifiers(&Components),
)]
pub struct ApiDoc;

/// The document, built once per call (it is small).
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "this document", body = OpenApiSchema),
        schema::QueryErrors),
    security(()))]
pub async fn serve() -> impl IntoResponse {
    Json(document())
}

/// The query parameters each documented operation takes, by method and route template.
type QueryNames = HashMap<(Method, String), BTreeSet<String>>;

fn query_names() -> &'static QueryNames {
    static NAMES: OnceLock<QueryNames> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names = QueryNames::new();
        for (path, item) in document().paths.paths {
            let operations = [
                (Method::GET, &item.get),
                (Method::PUT, &item.put),
                (Method::POST, &item.post),
                (Method::DELETE, &item.delete),
                (Method::PATCH, &item.patch),
            ];
            for (method, operation) in operations {
                if let Some(Operation { parameters, .. }) = operation {
                    let query = parameters
                        .iter()
                        .flatten()
                        .filter(|p| p.parameter_in == ParameterIn::Query)
                        .map(|p| p.name.clone())
                        .collect();
                    names.insert((method, path.clone()), query);
                }
            }
        }
        names
    })
}

/// Refuses a request to a documented operation whose query string names a parameter the
/// operation does not list (400 `validation_failed`, the parameter as `field`). Routes the
/// document does not describe pass through.
pub async fn reject_undocumented_query(
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let query = request.uri().query().unwrap_or("");
    if !query.is_empty() {
        let key = matched.map(|m| (request.method().clone(), m.as_str().to_owned()));
        if let Some(known) = key.and_then(|k| query_names().get(&k)) {
            let unknown = form_urlencoded::parse(query.as_bytes())
                .map(|(name, _)| name)
                .find(|name| !known.contains(name.as_ref()));
            if let Some(name) = unknown {
                return ApiError::validation(name, "unknown query parameter").into_response();
            }
        }
    }
    next.run(request).await
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
        let components = doc.components.expect("components");
        for name in ["MoneySchema", "ErrorBody"] {
            assert!(components.schemas.contains_key(name), "{name} missing");
        }
        for (_, name, _) in schema::ERRORS {
            assert!(components.responses.contains_key(*name), "{name} missing");
        }
    }

    /// The inner crates derive the schemas of `OrderStatus` and `StreamType` with `rename_all`,
    /// which must give the names `named_enum!` stores (utoipa does not see those).
    #[test]
    fn documented_status_and_stream_names_are_the_stored_ones() {
        let doc = serde_json::to_value(document()).expect("json");
        let names = |component: &str| doc["components"]["schemas"][component]["enum"].clone();
        assert_eq!(
            names("OrderStatusName"),
            serde_json::json!(domain::OrderStatus::ALL.map(domain::OrderStatus::as_str))
        );
        assert_eq!(
            names("StreamTypeName"),
            serde_json::json!(domain::StreamType::ALL.map(domain::StreamType::as_str))
        );
    }

    /// Each operation's documented answers, as `(method path, status)` pairs.
    fn operations(doc: &utoipa::openapi::OpenApi) -> Vec<(String, Operation)> {
        let mut all = Vec::new();
        for (path, item) in &doc.paths.paths {
            let operations = [
                ("GET", &item.get),
                ("PUT", &item.put),
                ("POST", &item.post),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
            ];
            for (method, operation) in operations {
                if let Some(operation) = operation {
                    all.push((format!("{method} {path}"), operation.clone()));
                }
            }
        }
        all
    }

    #[test]
    fn every_operation_names_its_security_and_documents_its_refusals() {
        let doc = document();
        for (name, operation) in operations(&doc) {
            let security = operation
                .security
                .as_ref()
                .or(doc.security.as_ref())
                .unwrap_or_else(|| panic!("{name} names no security requirement"));
            let public = security
                .iter()
                .any(|s| serde_json::to_value(s).expect("json") == serde_json::json!({}));
            let statuses = &operation.responses.responses;
            if !public {
                for status in ["401", "403"] {
                    assert!(statuses.contains_key(status), "{name} lacks {status}");
                }
            }
            // Any operation refuses a query parameter it does not list.
            assert!(statuses.contains_key("400"), "{name} lacks 400");
            if operation.request_body.is_some() {
                assert!(statuses.contains_key("413"), "{name} lacks 413");
            }
        }
    }

    #[test]
    fn no_answer_is_an_untyped_object() {
        let doc = serde_json::to_value(document()).expect("json");
        let mut untyped = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("item") {
                for (status, response) in operation["responses"].as_object().expect("responses") {
                    for (media, content) in response["content"].as_object().into_iter().flatten() {
                        let schema = &content["schema"];
                        let typed = schema.get("$ref").is_some()
                            || schema.get("type").is_some_and(|t| t != "object")
                            || schema.get("properties").is_some()
                            || schema.get("oneOf").is_some()
                            || schema.get("allOf").is_some();
                        if !typed {
                            untyped.push(format!("{method} {path} {status} {media}: {schema}"));
                        }
                    }
                }
            }
        }
        assert!(untyped.is_empty(), "untyped answers: {untyped:#?}");
    }

    #[test]
    fn every_error_answer_refers_to_a_declared_response() {
        let doc = document();
        for (name, operation) in operations(&doc) {
            for (status, response) in &operation.responses.responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        matches!(response, RefOr::Ref(_)) || name == "GET /readyz",
                        "{name} {status} is declared in place"
                    );
                }
            }
        }
    }

    #[test]
    fn each_operation_knows_its_query_parameters() {
        let names = query_names();
        let list = &names[&(Method::GET, "/v1/orders".to_string())];
        assert!(
            list.contains("cursor") && list.contains("limit"),
            "{list:?}"
        );
        assert!(names[&(Method::GET, "/healthz".to_string())].is_empty());
    }
}
