//! The one page layout, the one form helper, the failure pages, the embedded assets, and the
//! small formatting helpers the pages share. maud escapes every interpolated value.

use super::session::Staff;
use crate::auth::Role;
use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

/// The form field holding a fresh idempotency key (every form has one).
pub const IDEMPOTENCY_FIELD: &str = "idempotency_key";

/// Rows per page in the console's lists.
pub const PAGE_SIZE: usize = 25;

/// The query of a console list page without filters: where it starts, the action that led to
/// it (for its notice) and, after a command, that command's consistency token.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct ListPageQuery {
    pub cursor: String,
    pub done: String,
    /// Read-your-writes after a command: the command's consistency token.
    pub consistency: String,
}

impl ListPageQuery {
    /// The pairs of the API's query: the cursor and the consistency token.
    pub fn api_query(&self) -> [(&str, &str); 2] {
        [("cursor", &self.cursor), ("consistency", &self.consistency)]
    }
}

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The areas a role sees in the navigation. The pages behind them are guarded by the API's own
/// role checks, which this only mirrors.
fn areas(role: Role) -> Vec<(&'static str, &'static str)> {
    const SUPPORT: [(&str, &str); 2] = [
        ("/console/support/orders", "Orders"),
        ("/console/support/notifications", "Failed notifications"),
    ];
    const ADMIN: [(&str, &str); 2] = [
        ("/console/admin/catalog", "Catalog"),
        ("/console/admin/projections", "Projections"),
    ];
    const ANALYST: [(&str, &str); 2] = [
        ("/console/analyst/events", "Events"),
        ("/console/analyst/streams", "Time travel"),
    ];
    match role {
        Role::Support => SUPPORT.to_vec(),
        Role::Admin => [SUPPORT, ADMIN].concat(),
        Role::Analyst => ANALYST.to_vec(),
        Role::Customer => Vec::new(),
    }
}

/// Refuses a page whose data the API gives to more roles than the console shows it to (the
/// public catalog): only the roles whose navigation has `area` may open it.
pub fn allow(staff: &Staff, area: &str) -> Result<(), Failure> {
    if areas(staff.role()).iter().any(|(href, _)| *href == area) {
        Ok(())
    } else {
        Err(Failure::Forbidden)
    }
}

/// Every console page: the header (navigation and sign-out when signed in) around `body`.
pub fn layout(title: &str, staff: Option<&Staff>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · backbone console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/console" { "backbone console" }
                    @if let Some(staff) = staff {
                        nav {
                            @for (href, label) in areas(staff.role()) {
                                a href=(href) { (label) }
                            }
                        }
                        span.who { (staff.principal.subject) " (" (staff.role()) ")" }
                        (form(&staff.csrf, "/console/sign-out", "Sign out", html! {}))
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A POST form carrying the CSRF token and a fresh idempotency key: retrying the same form
/// (a reload, a double click) repeats the same command, which the API answers once.
pub fn form(csrf: &str, action: &str, submit: &str, fields: Markup) -> Markup {
    html! {
        form method="post" action=(action) {
            input type="hidden" name=(super::csrf::FIELD) value=(csrf);
            input type="hidden" name=(IDEMPOTENCY_FIELD) value=(uuid::Uuid::new_v4());
            (fields)
            button type="submit" { (submit) }
        }
    }
}

/// A labelled text input, filled with `value`.
pub fn input(label: &str, name: &str, kind: &str, value: Option<&str>) -> Markup {
    html! {
        label { (label) " " input type=(kind) name=(name) value=[value]; }
    }
}

/// A notice at the top of a page, for what was just done.
pub fn notice(text: &str) -> Markup {
    html! { p.notice role="status" { (text) } }
}

/// The console's home: what the signed-in role can open.
pub async fn home(staff: Staff) -> Markup {
    layout(
        "Console",
        Some(&staff),
        html! {
            p { "Signed in as " strong { (staff.principal.subject) } ", " (staff.role()) "." }
            ul {
                @for (href, label) in areas(staff.role()) {
                    li { a href=(href) { (label) } }
                }
            }
        },
    )
}

/// Any other console page.
pub async fn not_found() -> Failure {
    Failure::NotFound
}

/// The embedded style sheet and script.
pub async fn asset(Path(file): Path<String>) -> Result<Response, Failure> {
    let (body, kind) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return Err(Failure::NotFound),
    };
    Ok((
        [(CONTENT_TYPE, kind), (CACHE_CONTROL, "public, max-age=300")],
        body,
    )
        .into_response())
}

/// Why a console request ended on a failure page (or, without a session, on the sign-in page).
#[derive(Debug)]
pub enum Failure {
    /// No session, or its token expired or is not valid: sign in again.
    SignIn,
    /// The role may not do this (a customer may do nothing here).
    Forbidden,
    /// A POST without the right CSRF token.
    Csrf,
    NotFound,
    /// The API refused the request (400, 409, 413, 422): its message.
    Refused {
        status: StatusCode,
        message: String,
    },
    /// Something broke; the details are in the log (under this request id when known).
    Internal {
        request_id: Option<String>,
    },
}

impl Failure {
    pub fn refused(status: StatusCode, message: impl Into<String>) -> Self {
        Failure::Refused {
            status,
            message: message.into(),
        }
    }

    pub fn internal(request_id: Option<String>) -> Self {
        Failure::Internal { request_id }
    }
}

/// A use case's refusal, mapped like the API maps it; 5xx details go to the log only.
impl From<commands::CommandError> for Failure {
    fn from(e: commands::CommandError) -> Self {
        let e = crate::error::ApiError::from(e);
        match e.status {
            StatusCode::NOT_FOUND => Failure::NotFound,
            s if s.is_server_error() => {
                tracing::error!(
                    code = e.code,
                    detail = e.internal.as_deref().unwrap_or(""),
                    "console command failed"
                );
                Failure::internal(None)
            }
            status => Failure::refused(status, e.message),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, title, text) = match self {
            Failure::SignIn => return Redirect::to("/console/sign-in").into_response(),
            Failure::Forbidden => (
                StatusCode::FORBIDDEN,
                "Forbidden",
                "Your role may not open this page. Customers have no console.".to_owned(),
            ),
            Failure::Csrf => (
                StatusCode::FORBIDDEN,
                "Forbidden",
                "The form was not sent from this console (CSRF check failed). Load the page again and retry.".to_owned(),
            ),
            Failure::NotFound => (StatusCode::NOT_FOUND, "Not found", "Nothing here.".to_owned()),
            Failure::Refused { status, message } => (status, "Refused", message),
            Failure::Internal { request_id } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                match request_id {
                    Some(id) => format!("The server failed; the log has the details under request id {id}."),
                    None => "The server failed; the log has the details.".to_owned(),
                },
            ),
        };
        let body = html! {
            p.problem role="alert" { (text) }
            p { a href="/console" { "Back to the console" } " · " a href="/console/sign-in" { "Sign in" } }
        };
        (status, layout(title, None, body)).into_response()
    }
}

/// A JSON value as a table cell: text as it is, nothing as a dash.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "—".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A money value (`{"amount", "currency"}`) as `12.50 EUR`.
pub fn money(value: &Value) -> String {
    match (value["amount"].as_str(), value["currency"].as_str()) {
        (Some(amount), Some(currency)) => format!("{amount} {currency}"),
        _ => text(value),
    }
}

/// A URL path with a query of the given, non-empty pairs.
pub fn link<'k, 'v>(path: &str, pairs: impl IntoIterator<Item = (&'k str, &'v str)>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        if !value.is_empty() {
            query.append_pair(key, value);
        }
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// A form's criteria as [`link`] takes them.
pub fn pairs<'a>(
    criteria: &'a [(&'static str, String)],
) -> impl Iterator<Item = (&'static str, &'a str)> + 'a {
    criteria.iter().map(|(k, v)| (*k, v.as_str()))
}

/// One URL path segment, percent-encoded.
pub fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An instant from a form: RFC 3339 as it is, and a `datetime-local` input's value
/// (`2026-01-31T09:30`, no zone) read as UTC.
pub fn instant(input: &str) -> String {
    let input = input.trim();
    if input.is_empty() || chrono::DateTime::parse_from_rfc3339(input).is_ok() {
        return input.to_owned();
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(input, f).ok())
        .map(|t| t.and_utc().to_rfc3339())
        // Anything else goes to the API as typed, which says what is wrong with it.
        .unwrap_or_else(|| input.to_owned())
}

/// A pager: a link to the first page when this is not it, and to the next when there is one.
pub fn pager(first: &str, next: Option<String>, is_first: bool) -> Markup {
    html! {
        nav.pager {
            @if !is_first { a href=(first) { "First page" } }
            @if let Some(next) = next { a href=(next) rel="next" { "Next page" } }
        }
    }
}

/// A JSON document, pretty-printed (as text).
pub fn json(value: &Value) -> Markup {
    html! { pre.json { (serde_json::to_string_pretty(value).unwrap_or_default()) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datetime_local_value_is_read_as_utc() {
        assert_eq!(instant("2026-01-31T09:30"), "2026-01-31T09:30:00+00:00");
        assert_eq!(instant("2026-01-31T09:30:00Z"), "2026-01-31T09:30:00Z");
        assert_eq!(instant(" "), "");
    }

    #[test]
    fn links_carry_only_the_given_pairs_encoded() {
        assert_eq!(link("/x", [("a", ""), ("b", "1 & 2")]), "/x?b=1+%26+2");
        assert_eq!(link("/x", [("a", "")]), "/x");
    }

    #[test]
    fn interpolated_markup_is_escaped() {
        let page = input("Name", "name", "text", Some("<script>alert(1)</script>")).into_string();
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert!(!page.contains("<script>"), "{page}");
    }
}
