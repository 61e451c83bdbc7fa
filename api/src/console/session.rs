//! Signing in and out, the session cookie, and the extractors every page uses: [`Staff`] (the
//! verified caller) and [`Posted`] (a form checked for its CSRF token).

use super::csrf::{self, Seed};
use super::page::{self, Failure};
use crate::auth::{AuthError, Principal, Role};
use crate::http::MAX_BODY;
use crate::state::AppState;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The cookie holding the signed-in user's token.
pub const SESSION_COOKIE: &str = "console_session";

/// A cookie's value in a request.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name && !value.is_empty()).then(|| value.to_owned())
        })
}

/// Whether the browser reached us over HTTPS (through a proxy that says so): cookies are then
/// marked `Secure`.
pub fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// A console cookie: HttpOnly, SameSite=Strict, for `/console`, for the browser's session. An
/// empty value clears it.
pub fn cookie(name: &str, value: &str, secure: bool) -> HeaderValue {
    scoped_cookie(name, value, ("/console", "Strict", None), secure)
}

/// An HttpOnly cookie with its path, SameSite and lifetime; an empty value clears it.
pub fn scoped_cookie(
    name: &str,
    value: &str,
    (path, same_site, max_age): (&str, &str, Option<u32>),
    secure: bool,
) -> HeaderValue {
    let max_age = if value.is_empty() { Some(0) } else { max_age };
    let max_age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    let secure = if secure { "; Secure" } else { "" };
    // Token, seed and flow values are base64url and hex: nothing in them needs quoting.
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}{max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("console_invalid=; Max-Age=0"))
}

/// The signed-in staff member of a console request: the session token verified again, with
/// the token the request's forms carry. A customer is refused.
pub struct Staff {
    pub token: String,
    pub principal: Principal,
    pub csrf: String,
}

impl Staff {
    pub fn role(&self) -> Role {
        self.principal.role
    }
}

fn seed_of(parts: &Parts) -> Result<&Seed, Failure> {
    parts.extensions.get::<Seed>().ok_or_else(|| {
        tracing::error!("console request without its csrf seed");
        Failure::internal(None)
    })
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        let token = cookie_value(&parts.headers, SESSION_COOKIE).ok_or(Failure::SignIn)?;
        let principal = state.auth.verify(&token).await.map_err(|e| {
            tracing::debug!(error = %e, "console session refused");
            Failure::SignIn
        })?;
        if principal.role == Role::Customer {
            return Err(Failure::Forbidden);
        }
        let csrf = csrf::token(seed_of(parts)?, &token);
        Ok(Staff {
            token,
            principal,
            csrf,
        })
    }
}

/// A posted console form from a signed-in user, its CSRF token checked, and the idempotency key
/// [`page::form`] put in it.
pub struct Posted<T> {
    pub staff: Staff,
    pub idempotency_key: Option<String>,
    pub form: T,
}

/// A form's fields, and the value of one of them.
fn field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

async fn form_body(body: axum::body::Body) -> Result<bytes::Bytes, Failure> {
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| Failure::refused(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"))
}

impl<T: DeserializeOwned> FromRequest<AppState> for Posted<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Failure> {
        let (mut parts, body) = req.into_parts();
        let staff = Staff::from_request_parts(&mut parts, state).await?;
        let body = form_body(body).await?;
        csrf::check(
            seed_of(&parts)?,
            &staff.token,
            field(&body, csrf::FIELD).as_deref(),
        )?;
        let form = serde_urlencoded::from_bytes(&body)
            .map_err(|e| Failure::refused(StatusCode::BAD_REQUEST, e.to_string()))?;
        Ok(Posted {
            idempotency_key: field(&body, page::IDEMPOTENCY_FIELD).filter(|k| !k.is_empty()),
            staff,
            form,
        })
    }
}

/// A form with no fields of its own (only the CSRF token).
#[derive(Debug, Deserialize)]
pub struct NoFields {}

fn sign_in_form(state: &AppState, seed: &Seed, problem: Option<&str>) -> Markup {
    page::layout(
        "Sign in",
        None,
        html! {
            @if let Some(problem) = problem {
                p.problem role="alert" { (problem) }
            }
            @if let Some((issuer, _)) = super::oidc::provider(state) {
                p { a #oidc href="/console/oidc/start" { "Sign in with " (issuer) } }
                p { "Or paste a token:" }
            }
            p { "Paste a staff token (support, admin or analyst). For a dev server, mint one with "
                code { "backbone token --sub you --role support --data ./data" } "." }
            (page::form(&csrf::token(seed, ""), "/console/sign-in", "Sign in", html! {
                label { "Token" textarea name="token" rows="4" cols="80" required autocomplete="off" {} }
            }))
        },
    )
}

pub async fn sign_in_page(State(state): State<AppState>, req: Request) -> Result<Markup, Failure> {
    let (parts, _) = req.into_parts();
    Ok(sign_in_form(&state, seed_of(&parts)?, None))
}

/// Verifies the pasted token like the API verifies a bearer token and keeps it in the session
/// cookie; a customer's token is refused and never stored.
pub async fn sign_in(State(state): State<AppState>, req: Request) -> Result<Response, Failure> {
    let (parts, body) = req.into_parts();
    let seed = seed_of(&parts)?;
    let body = form_body(body).await?;
    csrf::check(seed, "", field(&body, csrf::FIELD).as_deref())?;
    let token = field(&body, "token").unwrap_or_default();
    let token = token.trim();
    let refused = |problem: &str| {
        (
            StatusCode::UNAUTHORIZED,
            sign_in_form(&state, seed, Some(problem)),
        )
    };
    let principal = match state.auth.verify(token).await {
        Ok(principal) => principal,
        Err(AuthError::Expired) => return Ok(refused("That token has expired.").into_response()),
        Err(e) => {
            tracing::debug!(error = %e, "console sign-in refused");
            return Ok(refused("That token is not valid here.").into_response());
        }
    };
    if principal.role == Role::Customer {
        return Err(Failure::Forbidden);
    }
    tracing::info!(subject = %principal.subject, role = %principal.role, "console sign-in");
    let mut response = Redirect::to("/console").into_response();
    response.headers_mut().append(
        SET_COOKIE,
        cookie(SESSION_COOKIE, token, is_https(&parts.headers)),
    );
    Ok(response)
}

pub async fn sign_out(posted: Posted<NoFields>) -> Response {
    tracing::info!(subject = %posted.staff.principal.subject, "console sign-out");
    let mut response = Redirect::to("/console/sign-in").into_response();
    response
        .headers_mut()
        .append(SET_COOKIE, cookie(SESSION_COOKIE, "", false));
    response
}
