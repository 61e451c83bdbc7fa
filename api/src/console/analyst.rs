//! Analysts: the event browser (filters, paging, the NDJSON download of the same filter) and a
//! stream's time travel. Masked like the API: personal fields need the `pii` scope.

use super::api::{read, Api};
use super::page::{self, json, layout, link, pager, pairs, segment, text, Failure};
use super::session::Staff;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

const STREAMS: &str = "/console/analyst/streams";

/// The event filter, which is also the page's query.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EventFilter {
    from: String,
    to: String,
    #[serde(rename = "type")]
    event_type: String,
    stream: String,
    /// Paging: the feed cursor the page starts after.
    after: String,
}

impl EventFilter {
    fn criteria(&self) -> [(&'static str, String); 4] {
        [
            ("from", page::instant(&self.from)),
            ("to", page::instant(&self.to)),
            ("type", self.event_type.trim().to_owned()),
            ("stream", self.stream.trim().to_owned()),
        ]
    }
}

/// A page of events, oldest first.
pub async fn events(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<EventFilter>,
) -> Result<Markup, Failure> {
    let criteria = q.criteria();
    let limit = page::PAGE_SIZE.to_string();
    let uri = link(
        "/v1/events",
        pairs(&criteria).chain([("after", q.after.as_str()), ("limit", limit.as_str())]),
    );
    let answer = Api::new(&state, &staff).get_raw(&uri).await?;
    let bytes = read(answer).await?;
    let events: Vec<Value> = bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(serde_json::from_slice)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            tracing::error!(error = %e, "the event export answered the console with a bad line");
            Failure::internal(None)
        })?;
    let first = link("/console/analyst/events", pairs(&criteria));
    // The next page starts after the last line's cursor.
    let last = events
        .last()
        .and_then(|e| e["feed_cursor"].as_str())
        .map(str::to_owned);
    let next = last
        .filter(|_| events.len() == page::PAGE_SIZE)
        .map(|after| {
            link(
                "/console/analyst/events",
                pairs(&criteria).chain([("after", after.as_str())]),
            )
        });
    let download = link("/console/analyst/events.ndjson", pairs(&criteria));
    let body = html! {
        form.search method="get" action="/console/analyst/events" {
            (page::input("From", "from", "datetime-local", Some(&q.from)))
            (page::input("To", "to", "datetime-local", Some(&q.to)))
            (page::input("Type", "type", "text", Some(&q.event_type)))
            (page::input("Stream (order or order:ord_1)", "stream", "text", Some(&q.stream)))
            button type="submit" { "Filter" }
        }
        p { a #download href=(download) download="events.ndjson" { "Download these events (NDJSON)" } }
        @if events.is_empty() {
            p { "No events match." }
        } @else {
            table #events {
                thead { tr { th { "Position" } th { "Occurred" } th { "Stream" } th { "Version" } th { "Type" } th { "Payload" } } }
                tbody {
                    @for e in &events {
                        @let (kind, id) = (text(&e["stream_type"]), text(&e["stream_id"]));
                        @let version = text(&e["sequence"]);
                        tr {
                            td { (text(&e["global_position"])) }
                            td { (text(&e["occurred_at"])) }
                            td { (kind) ":" (id) }
                            td { a href=(link(STREAMS, [("type", kind.as_str()), ("id", id.as_str()), ("at", version.as_str())])) { (version) } }
                            td { (text(&e["event_type"])) }
                            td { details { summary { "payload" } (json(&e["payload"])) } }
                        }
                    }
                }
            }
        }
        (pager(&first, next, q.after.is_empty()))
    };
    Ok(layout("Events", Some(&staff), body))
}

/// Every event of the filter, streamed from the API's export as a file.
pub async fn download(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<EventFilter>,
) -> Result<Response, Failure> {
    let criteria = q.criteria();
    let answer = Api::new(&state, &staff)
        .get_raw(&link("/v1/events", pairs(&criteria)))
        .await?;
    Ok((
        [
            (CONTENT_TYPE, "application/x-ndjson"),
            (
                CONTENT_DISPOSITION,
                "attachment; filename=\"events.ndjson\"",
            ),
        ],
        answer.into_body(),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StreamQuery {
    #[serde(rename = "type")]
    stream_type: String,
    id: String,
    /// A version or an instant; the latest state when empty.
    at: String,
}

/// A stream as it was at a version or an instant: its state and the events folded into it.
pub async fn stream(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<StreamQuery>,
) -> Result<Markup, Failure> {
    let found = if q.stream_type.is_empty() || q.id.is_empty() {
        // Nothing asked yet, and the API is not asked; only analysts see even the form.
        page::allow(&staff, STREAMS)?;
        None
    } else {
        let at = if q.at.trim().parse::<u64>().is_ok() {
            q.at.trim().to_owned()
        } else {
            page::instant(&q.at)
        };
        let uri = link(
            &format!(
                "/v1/streams/{}/{}",
                segment(q.stream_type.trim()),
                segment(q.id.trim())
            ),
            [("at", at.as_str())],
        );
        Some(Api::new(&state, &staff).get(&uri).await?)
    };
    let body = html! {
        form.search method="get" action=(STREAMS) {
            label { "Stream type "
                select name="type" {
                    @for kind in domain::StreamType::ALL.map(domain::StreamType::as_str) {
                        option value=(kind) selected[q.stream_type == kind] { (kind) }
                    }
                }
            }
            (page::input("Id", "id", "text", Some(&q.id)))
            (page::input("At (a version or an instant; empty: now)", "at", "text", Some(&q.at)))
            button type="submit" { "Show" }
        }
        @if let Some(found) = &found {
            p { "Version " strong #version { (text(&found["version"])) } " of " (text(&found["stream_type"])) ":" (text(&found["stream_id"])) }
            h2 { "State" }
            (json(&found["state"]))
            h2 { "Events" }
            table #stream-events {
                thead { tr { th { "Version" } th { "Occurred" } th { "Type" } } }
                tbody {
                    @for e in found["events"].as_array().into_iter().flatten() {
                        tr { td { (text(&e["sequence"])) } td { (text(&e["occurred_at"])) } td { (text(&e["event_type"])) } }
                    }
                }
            }
        }
    };
    Ok(layout("Time travel", Some(&staff), body))
}
