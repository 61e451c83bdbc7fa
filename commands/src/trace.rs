//! The W3C trace context (`traceparent`) that ties a request to everything it causes.
//!
//! The API puts its request span's context into the metadata of the events the request appends
//! ([`Metadata::traceparent`](crate::Metadata)); the metadata travels with each event through
//! either feed (SQLite, or DynamoDB Streams → relay → EventBridge → SQS), and the spans that
//! handle the event later continue the trace with [`TraceParent::adopt`]. With an OpenTelemetry
//! layer installed (`--otlp-endpoint`) those spans are exported as children of the request span;
//! without one, nothing is exported and the trace id is still a field of the spans, in the logs.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use std::fmt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The HTTP header, and its meaning: <https://www.w3.org/TR/trace-context/#traceparent-header>.
pub const TRACEPARENT: &str = "traceparent";

/// A parsed `traceparent`: the trace, the span that is the parent of what follows, and whether
/// the caller samples it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: TraceId,
    span_id: SpanId,
    sampled: bool,
}

impl TraceParent {
    /// Parses `{version}-{trace id}-{parent id}-{flags}` in lowercase hex. Anything else, all-zero
    /// ids and version `ff` included, is `None`: the spec says to start a new trace then. A later
    /// version is read by its version-00 fields, as the spec asks.
    pub fn parse(header: &str) -> Option<Self> {
        let mut fields = header.trim().split('-');
        let (version, trace, span, flags) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        let well_formed = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !well_formed(version, 2)
            || version == "ff"
            || (version == "00" && fields.next().is_some())
            || !well_formed(trace, 32)
            || !well_formed(span, 16)
            || !well_formed(flags, 2)
        {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok()?;
        let span_id = SpanId::from_hex(span).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != TraceId::INVALID && span_id != SpanId::INVALID).then_some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// A new sampled trace, for a request that came without one.
    pub fn new_root() -> Self {
        Self {
            trace_id: TraceId::from_bytes(nonzero(rand::random())),
            span_id: SpanId::from_bytes(nonzero(rand::random())),
            sampled: true,
        }
    }

    /// The same trace under a new span id: what a process that exports nothing hands on.
    pub fn child(&self) -> Self {
        Self {
            span_id: SpanId::from_bytes(nonzero(rand::random())),
            ..*self
        }
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        self.trace_id.to_string()
    }

    /// The parent span id, 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        self.span_id.to_string()
    }

    /// The context of `span` when an OpenTelemetry layer tracks it.
    pub fn of_span(span: &tracing::Span) -> Option<Self> {
        let context = span.context();
        let span = context.span();
        let own = span.span_context();
        own.is_valid().then(|| Self {
            trace_id: own.trace_id(),
            span_id: own.span_id(),
            sampled: own.is_sampled(),
        })
    }

    /// Makes `span`, which must not have been entered yet, a child of this context. Without an
    /// OpenTelemetry layer there is nothing to link, and this does nothing.
    pub fn adopt(&self, span: &tracing::Span) {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let remote = SpanContext::new(
            self.trace_id,
            self.span_id,
            flags,
            true,
            TraceState::default(),
        );
        // The only error is "no OpenTelemetry layer", which is the export being off.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }

    /// The context a request span hands on to what it causes: its own when a tracer tracks it
    /// (a child of the caller's `incoming` context, if any), otherwise the caller's trace under a
    /// new span id, otherwise a new trace.
    pub fn for_request(span: &tracing::Span, incoming: Option<Self>) -> Self {
        if let Some(parent) = &incoming {
            parent.adopt(span);
        }
        Self::of_span(span)
            .unwrap_or_else(|| incoming.map_or_else(Self::new_root, |parent| parent.child()))
    }
}

/// One span per event that carries a trace context, made by `span` and adopted as a child of the
/// request that caused the event. Keep them while the events are handled and drop them after:
/// their timing is the handling's. Events without a context (replays of old history, system
/// work) get none.
pub fn event_spans(
    events: &[crate::EventEnvelope],
    span: impl Fn(&crate::EventEnvelope, &TraceParent) -> tracing::Span,
) -> Vec<tracing::Span> {
    events
        .iter()
        .filter_map(|e| {
            let parent = TraceParent::parse(e.metadata.traceparent.as_deref()?)?;
            let span = span(e, &parent);
            parent.adopt(&span);
            Some(span)
        })
        .collect()
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

fn nonzero<const N: usize>(mut bytes: [u8; N]) -> [u8; N] {
    if bytes.iter().all(|b| *b == 0) {
        bytes[N - 1] = 1;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_round_trips() {
        let parsed = TraceParent::parse(EXAMPLE).expect("valid");
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id(), "00f067aa0ba902b7");
        assert_eq!(parsed.to_string(), EXAMPLE);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(
            TraceParent::parse(unsampled).unwrap().to_string(),
            unsampled
        );
    }

    #[test]
    fn malformed_or_all_zero_headers_start_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version may append fields; its version-00 part is read.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert_eq!(
            TraceParent::parse(future).unwrap().trace_id(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn without_a_tracer_a_request_continues_the_callers_trace_under_a_new_span() {
        let span = tracing::Span::none();
        let incoming = TraceParent::parse(EXAMPLE).unwrap();
        let handed_on = TraceParent::for_request(&span, Some(incoming));
        assert_eq!(handed_on.trace_id(), incoming.trace_id());
        assert_ne!(handed_on.span_id(), incoming.span_id());
        let fresh = TraceParent::for_request(&span, None);
        assert_ne!(fresh.trace_id(), incoming.trace_id());
        assert_eq!(TraceParent::parse(&fresh.to_string()), Some(fresh));
    }
}
