//! How an event travels on the bus and arrives in a queue.
//!
//! The relay puts each event with `source` = `backbone.<stream_type>`, `detail-type` = the event
//! type and `detail` = the envelope as JSON. An EventBridge rule with an SQS target delivers the
//! whole bus event as the message body:
//!
//! ```json
//! {"version": "0", "id": "...", "detail-type": "OrderPlaced", "source": "backbone.order",
//!  "time": "...", "region": "...", "resources": [], "detail": { <the envelope> }}
//! ```
//!
//! Only `source`, `detail-type` and `detail` are read: local emulators leave out `account` (and
//! real EventBridge may add fields), so nothing else is required.

use commands::EventEnvelope;
use serde_json::Value;

/// The bus `source` of an event: `backbone.<stream_type>`.
pub fn source_of(event: &EventEnvelope) -> String {
    format!("backbone.{}", event.stream_type.as_str())
}

/// Decodes an SQS message body into the envelope it carries. Also accepts a bare envelope (a
/// message sent to the queue directly, as operators re-driving by hand may do).
///
/// An error means the message can never be processed: consumers leave it for the DLQ.
pub fn decode_message(body: &str) -> Result<EventEnvelope, String> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| format!("message body is not json: {e}"))?;
    let Some(detail) = value.get("detail") else {
        return serde_json::from_value(value)
            .map_err(|e| format!("message is neither a bus event nor an envelope: {e}"));
    };
    // Some producers put the detail as a JSON string; EventBridge delivers an object.
    let detail = match detail {
        Value::String(text) => {
            serde_json::from_str(text).map_err(|e| format!("bus event detail is not json: {e}"))?
        }
        other => other.clone(),
    };
    let event: EventEnvelope = serde_json::from_value(detail)
        .map_err(|e| format!("bus event detail is not an envelope: {e}"))?;
    if let Some(source) = value.get("source").and_then(Value::as_str) {
        if source != source_of(&event) {
            return Err(format!(
                "bus event source {source} does not match its envelope's stream type {}",
                event.stream_type.as_str()
            ));
        }
    }
    if let Some(detail_type) = value.get("detail-type").and_then(Value::as_str) {
        if detail_type != event.event_type {
            return Err(format!(
                "bus event detail-type {detail_type} does not match its envelope's event type {}",
                event.event_type
            ));
        }
    }
    Ok(event)
}

/// The body EventBridge delivers for `event` (what [`decode_message`] reads), for tests and
/// tools that inject messages into a queue.
pub fn bus_message(event: &EventEnvelope) -> Result<String, serde_json::Error> {
    let detail = serde_json::to_value(event)?;
    serde_json::to_string(&serde_json::json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": event.event_type,
        "source": source_of(event),
        "time": event.occurred_at.to_rfc3339(),
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use commands::Metadata;
    use domain::StreamType;

    fn event() -> EventEnvelope {
        EventEnvelope {
            global_position: None,
            event_id: uuid::Uuid::now_v7(),
            stream_type: StreamType::Payment,
            stream_id: "pay_1".into(),
            sequence: 3,
            event_type: "PaymentSucceeded".into(),
            event_version: 1,
            occurred_at: chrono::Utc::now(),
            payload: serde_json::json!({"amount": {"amount": "10.00", "currency": "EUR"}}).into(),
            metadata: Metadata {
                correlation_id: "c-1".into(),
                ..Metadata::default()
            },
        }
    }

    #[test]
    fn a_bus_event_without_an_account_field_decodes_to_its_envelope() {
        let e = event();
        let body = bus_message(&e).unwrap();
        assert!(!body.contains("\"account\""));
        assert_eq!(decode_message(&body).unwrap(), e);
    }

    #[test]
    fn a_bare_envelope_and_a_string_detail_decode_too() {
        let e = event();
        assert_eq!(
            decode_message(&serde_json::to_string(&e).unwrap()).unwrap(),
            e
        );
        let body = serde_json::json!({
            "source": "backbone.payment",
            "detail-type": "PaymentSucceeded",
            "detail": serde_json::to_string(&e).unwrap(),
        });
        assert_eq!(decode_message(&body.to_string()).unwrap(), e);
    }

    #[test]
    fn garbage_and_mismatched_routing_fields_are_rejected() {
        assert!(decode_message("not json").is_err());
        assert!(decode_message(r#"{"detail": {"nope": 1}}"#).is_err());
        let e = event();
        let mut body: Value = serde_json::from_str(&bus_message(&e).unwrap()).unwrap();
        body["detail-type"] = "OrderPlaced".into();
        assert!(decode_message(&body.to_string()).is_err());
    }
}
