//! The staff console at `/console`: server-rendered pages for support, operators (admin) and
//! analysts, served by the same process as the API.
//!
//! - Signing in ([`session`]): a pasted token, or one from the configured OpenID provider
//!   ([`oidc`]), verified like a bearer token, is kept in an HttpOnly, SameSite=Strict cookie,
//!   and every page verifies it again. A customer gets no console.
//! - Every read and every action goes through the JSON API in-process ([`api::Api`]) with the
//!   signed-in user's token, so the console has exactly the API's roles, validation and
//!   idempotency: a page whose API call is refused is a 403 page. The one exception is resending
//!   a failed notification, which the API has no operation for: the console runs that use case
//!   itself ([`support::resend`]).
//! - Every form carries a CSRF token ([`csrf`]), checked on every POST (403 otherwise).
//! - Pages are maud templates ([`page`]), which escape every value they interpolate. The one
//!   script and the style sheet are embedded in the binary, and the Content-Security-Policy lets
//!   the browser run nothing else.

mod admin;
mod analyst;
mod api;
mod csrf;
mod oidc;
mod page;
mod session;
mod support;

use crate::state::AppState;
use axum::extract::Request;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, SET_COOKIE, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

pub use page::Failure;
pub use session::Staff;

/// What the browser may load and run on a console page: its own script and style sheet, and
/// nothing inline.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes, merged into [`crate::router::app`].
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(page::home))
        .route("/console/assets/{file}", get(page::asset))
        .route(
            "/console/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/oidc/start", get(oidc::start))
        .route("/console/oidc/callback", get(oidc::callback))
        .route("/console/support/orders", get(support::search))
        .route("/console/support/orders/{id}", get(support::order))
        .route(
            "/console/support/orders/{id}/refunds",
            post(support::refund),
        )
        .route("/console/support/notifications", get(support::failed))
        .route(
            "/console/support/notifications/{id}/resend",
            post(support::resend),
        )
        .route(
            "/console/admin/catalog",
            get(admin::catalog).post(admin::create),
        )
        .route(
            "/console/admin/catalog/{id}",
            get(admin::product).post(admin::edit),
        )
        .route("/console/admin/projections", get(admin::projections))
        .route(
            "/console/admin/projections/status",
            get(admin::projections_status),
        )
        .route(
            "/console/admin/projections/{name}/rebuild",
            post(admin::rebuild),
        )
        .route("/console/analyst/events", get(analyst::events))
        .route("/console/analyst/events.ndjson", get(analyst::download))
        .route("/console/analyst/streams", get(analyst::stream))
        .route("/console/{*unknown}", get(page::not_found))
        .layer(axum::middleware::from_fn(guard))
}

/// Around every console request: the CSRF seed cookie (set on the first visit), and the headers
/// that keep pages out of caches and frames and limit what they may run.
async fn guard(mut req: Request, next: Next) -> Response {
    let secure = session::is_https(req.headers());
    let (seed, fresh) = csrf::seed(req.headers());
    req.extensions_mut().insert(seed.clone());
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    if fresh {
        headers.append(
            SET_COOKIE,
            session::cookie(csrf::SEED_COOKIE, &seed.0, secure),
        );
    }
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
