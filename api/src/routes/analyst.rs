//! Event replay for analysts: the NDJSON export and time travel.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::export::{self, ExportFilter, StreamFilter};
use crate::extract::{AppPath, AppQuery};
use crate::schema::{ItemReadErrors, ReadErrors};
use crate::state::AppState;
use crate::time_travel::{self, At, StreamAt};
use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use commands::pii::PII_SCOPE;
use commands::FeedCursor;
use commands::{Pseudonyms, StreamRef};
use domain::StreamType;
use futures::TryStreamExt;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this feed cursor: the `feed_cursor` of an exported line, one position
    /// per feed partition (`0`, the default, is the start).
    #[param(pattern = r"^[0-9]{1,14}(\.[0-9]{1,14})*$", max_length = 1500)]
    pub after: Option<String>,
    /// Occurred at or after (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Occurred at or before (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Only this event type, for example `OrderPlaced`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// A stream type (`order`) or one stream (`order:ord_123`).
    #[param(value_type = Option<crate::schema::StreamFilterText>)]
    pub stream: Option<String>,
    /// At most this many events.
    #[param(maximum = 9007199254740991.0)]
    pub limit: Option<u64>,
}

impl EventsQuery {
    fn into_filter(self) -> Result<ExportFilter, ApiError> {
        let stream = self
            .stream
            .as_deref()
            .map(StreamFilter::parse)
            .transpose()
            .map_err(|e| ApiError::validation("stream", e))?;
        let after = match self.after.as_deref() {
            None => FeedCursor::start(),
            Some(text) => text
                .parse()
                .map_err(|e: commands::BadCursor| ApiError::validation("after", e.to_string()))?,
        };
        Ok(ExportFilter {
            after,
            from: self.from,
            to: self.to,
            event_type: self.event_type,
            stream,
            limit: self.limit,
        })
    }
}

/// The masking a caller gets: none with the `pii` scope, pseudonyms otherwise.
fn masking(state: &AppState, principal: &Principal) -> Option<Arc<Pseudonyms>> {
    (!principal.has_scope(PII_SCOPE)).then(|| state.pseudonyms.clone())
}

#[utoipa::path(get, path = "/v1/events", tag = "analyst", params(EventsQuery),
    description = "Personal fields read `[masked]` and customer ids are stable pseudonyms \
        (`anon_…`) unless the token carries the `pii` scope; an erased customer's fields read \
        `[erased]` for everyone.",
    responses((status = 200, description = "one event envelope (with `global_position`) per line",
        content_type = "application/x-ndjson", body = String),
        ReadErrors))]
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    AppQuery(q): AppQuery<EventsQuery>,
) -> ApiResult<Response> {
    let filter = q.into_filter()?;
    let mask = masking(&state, &principal);
    let stream = export::ndjson(state.store.clone(), filter, export::EXPORT_PAGE, mask)
        .inspect_err(|err| tracing::error!(error = %err, "event export aborted"));
    Ok((
        [(CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AtQuery {
    /// A stream version (`3`) or an RFC 3339 instant; the latest state when absent.
    #[param(value_type = Option<crate::schema::VersionOrInstant>)]
    pub at: Option<String>,
}

#[utoipa::path(get, path = "/v1/streams/{type}/{id}", tag = "analyst",
    description = "Masked like `/v1/events` unless the token carries the `pii` scope.",
    params(("type" = domain::StreamType, Path, description = "the stream type"),
        ("id" = crate::schema::Id, Path, description = "aggregate id"), AtQuery),
    responses((status = 200, description = "the state at that point and its events", body = StreamAt),
        ItemReadErrors))]
pub async fn stream_at(
    State(state): State<AppState>,
    principal: Principal,
    AppPath((stream_type, id)): AppPath<(String, String)>,
    AppQuery(q): AppQuery<AtQuery>,
) -> ApiResult<Json<StreamAt>> {
    let stream_type = StreamType::parse(&stream_type).ok_or_else(|| {
        ApiError::validation(
            "type",
            "expected cart, order, payment, product, notification or customer",
        )
    })?;
    if domain::OrderId::parse(&id).is_err() {
        return Err(ApiError::validation(
            "id",
            "expected 1 to 64 characters of [A-Za-z0-9_-]",
        ));
    }
    let at = q.at.as_deref().map(At::parse).transpose()?;
    let mut found =
        time_travel::stream_at(state.store.as_ref(), StreamRef::new(stream_type, id), at).await?;
    if let Some(pseudonyms) = masking(&state, &principal) {
        if stream_type == StreamType::Customer {
            found.stream_id = pseudonyms.of(&found.stream_id);
        }
        pseudonyms.mask_state(stream_type, &mut found.state);
        found.events.iter_mut().for_each(|e| pseudonyms.mask(e));
    }
    Ok(Json(found))
}
