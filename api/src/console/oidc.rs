//! Signing in through the OpenID provider the server trusts (`--jwt-issuer`, with
//! `--jwt-audience` as the console's client id): the authorization-code flow with PKCE, for a
//! public client (no client secret).
//!
//! `/console/oidc/start` reads the provider's discovery document, keeps a random `state` and
//! PKCE verifier in a short-lived cookie, and sends the browser to the provider. The provider
//! sends it back to `/console/oidc/callback` with a code, which is exchanged at the token
//! endpoint; the token the server's verifier accepts (the access token, else the ID token)
//! becomes the session, exactly like a pasted one.

use super::page::{self, Failure};
use super::session::{self, SESSION_COOKIE};
use crate::auth::Role;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::header::{HOST, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use maud::html;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;
use std::time::Duration;

/// The cookie holding the flow's `state` and PKCE verifier between start and callback.
const FLOW_COOKIE: &str = "console_oidc";
/// How long a sign-in at the provider may take.
const FLOW_SECS: u32 = 600;
const CALLBACK: &str = "/console/oidc/callback";

static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
});

/// The provider and the console's client id, when the server is configured with both.
pub fn provider(state: &AppState) -> Option<(&str, &str)> {
    Some((state.auth.issuer()?, state.auth.audience()?))
}

#[derive(Debug, Deserialize)]
struct Discovery {
    authorization_endpoint: String,
    token_endpoint: String,
}

/// Sends `request` to the provider and reads its successful answer as JSON.
async fn json_answer<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> reqwest::Result<T> {
    request.send().await?.error_for_status()?.json().await
}

async fn discover(issuer: &str) -> Result<Discovery, Failure> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    json_answer::<Discovery>(CLIENT.get(&url))
        .await
        .map_err(|e| {
            tracing::error!(%url, error = %e, "OpenID discovery failed");
            Failure::internal(None)
        })
}

/// Where the provider sends the browser back: this server as the browser reached it.
fn redirect_uri(headers: &HeaderMap) -> Result<String, Failure> {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| Failure::refused(StatusCode::BAD_REQUEST, "the request names no host"))?;
    let scheme = if session::is_https(headers) {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{host}{CALLBACK}"))
}

fn random() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The flow cookie. SameSite=Lax, not Strict: the provider's redirect back is a cross-site
/// navigation, on which a Strict cookie would not be sent.
fn flow_cookie(value: &str, headers: &HeaderMap) -> HeaderValue {
    session::scoped_cookie(
        FLOW_COOKIE,
        value,
        (CALLBACK, "Lax", Some(FLOW_SECS)),
        session::is_https(headers),
    )
}

pub async fn start(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Failure> {
    let (issuer, client_id) = provider(&state).ok_or(Failure::NotFound)?;
    let discovery = discover(issuer).await?;
    let (flow_state, verifier) = (random(), random());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let redirect_uri = redirect_uri(&headers)?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", "openid")
        .append_pair("state", &flow_state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let separator = if discovery.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let to = format!(
        "{}{separator}{}",
        discovery.authorization_endpoint,
        query.finish()
    );
    let mut response = Redirect::to(&to).into_response();
    response.headers_mut().append(
        SET_COOKIE,
        flow_cookie(&format!("{flow_state}.{verifier}"), &headers),
    );
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Tokens {
    access_token: Option<String>,
    id_token: Option<String>,
}

pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(answer): Query<Callback>,
) -> Result<Response, Failure> {
    let (issuer, client_id) = provider(&state).ok_or(Failure::NotFound)?;
    let refused = |why: &str| Failure::refused(StatusCode::BAD_REQUEST, why);
    if let Some(error) = &answer.error {
        tracing::info!(%error, "the OpenID provider refused the sign-in");
        return Err(refused("the provider did not sign you in"));
    }
    let flow = session::cookie_value(&headers, FLOW_COOKIE).unwrap_or_default();
    let (expected, verifier) = flow
        .split_once('.')
        .ok_or_else(|| refused("the sign-in expired: start it again"))?;
    // The state ties the answer to the flow this browser started (login CSRF).
    if answer.state.as_deref() != Some(expected) {
        tracing::warn!("OpenID callback with a foreign state refused");
        return Err(refused("the sign-in does not match: start it again"));
    }
    let code = answer
        .code
        .ok_or_else(|| refused("the provider sent no code"))?;
    let discovery = discover(issuer).await?;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", &redirect_uri(&headers)?),
        ("client_id", client_id),
        ("code_verifier", verifier),
    ];
    let exchange = CLIENT.post(&discovery.token_endpoint).form(&form);
    let tokens = json_answer::<Tokens>(exchange).await.map_err(|e| {
        tracing::warn!(error = %e, "OpenID code exchange failed");
        refused("the provider did not give a token: start again")
    })?;
    let mut session = None;
    for token in [tokens.access_token, tokens.id_token].into_iter().flatten() {
        match state.auth.verify(&token).await {
            Ok(principal) => {
                session = Some((token, principal));
                break;
            }
            Err(e) => tracing::debug!(error = %e, "a token from the provider was refused"),
        }
    }
    let (token, principal) = session.ok_or_else(|| {
        tracing::warn!("no token from the OpenID provider passed verification");
        Failure::refused(
            StatusCode::UNAUTHORIZED,
            "the provider's token is not valid here",
        )
    })?;
    if principal.role == Role::Customer {
        return Err(Failure::Forbidden);
    }
    tracing::info!(subject = %principal.subject, role = %principal.role, "console sign-in through OpenID");
    // A page, not a redirect: the session cookie is SameSite=Strict, and a redirect chain that
    // began at the provider is cross-site, so it would not be sent yet.
    let page = page::layout(
        "Signed in",
        None,
        html! {
            meta http-equiv="refresh" content="0; url=/console";
            p { "Signed in. " a href="/console" { "Open the console" } }
        },
    );
    let mut response = page.into_response();
    let headers_out = response.headers_mut();
    headers_out.append(
        SET_COOKIE,
        session::cookie(SESSION_COOKIE, &token, session::is_https(&headers)),
    );
    headers_out.append(SET_COOKIE, flow_cookie("", &headers));
    Ok(response)
}
