//! The shared state every handler gets: one `Arc` (cloned for every request by the router and
//! its layers, so a clone is one reference count) over the parts the composition root built.

use crate::auth::Authenticator;
use commands::{Clock, Consistency, Erasure, EventStore, PaymentSimulator, Pseudonyms, Shop};
use metrics_exporter_prometheus::PrometheusHandle;
use projections::{Projection, ReadModelStore};
use std::sync::Arc;
use std::time::Duration;
use workers::Health;

/// How long a query with a `consistency` token waits for its read model, by default
/// (`--consistency-wait`).
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(2);

/// The first pause between two looks at the read model's bookkeeping; it doubles up to
/// [`READ_YOUR_WRITES_POLL_MAX`].
const READ_YOUR_WRITES_POLL_MIN: Duration = Duration::from_millis(2);
const READ_YOUR_WRITES_POLL_MAX: Duration = Duration::from_millis(50);

/// The handlers' view of the backbone: derefs to [`Parts`].
#[derive(Clone)]
pub struct AppState(Arc<Parts>);

impl AppState {
    pub fn new(parts: Parts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Parts {
    pub shop: Arc<Shop>,
    pub store: Arc<dyn EventStore>,
    pub models: Arc<dyn ReadModelStore>,
    pub clock: Arc<dyn Clock>,
    pub health: Health,
    /// The simulated provider, which confirms payments like Stripe.js would; `None` when a real
    /// provider (Stripe) is configured.
    pub simulator: Option<Arc<dyn PaymentSimulator>>,
    pub auth: Arc<Authenticator>,
    pub metrics: PrometheusHandle,
    /// Provider events (verified Stripe webhooks, or the simulated provider's outcomes) and
    /// support refunds.
    pub webhooks: Arc<crate::webhooks::StripeWebhooks>,
    /// In-process projection rebuilds; `None` where this process runs no projections (AWS,
    /// where SQS workers own them).
    pub rebuilds: Option<Arc<workers::Rebuilds>>,
    /// Catalog reads need a token (`--catalog-auth required`); public by default.
    pub catalog_auth_required: bool,
    /// How long a query with a `consistency` token waits at most (`--consistency-wait`).
    pub consistency_wait: Duration,
    /// Erases a customer's personal data (admin).
    pub erasure: Arc<Erasure>,
    /// Masks personal data for analysts without the `pii` scope.
    pub pseudonyms: Arc<Pseudonyms>,
}

impl Parts {
    /// Read-your-writes: waits (bounded) until `projection`'s read model reflects the write
    /// behind `token` ([`projections::reflects`]). The projection may run in this process or in
    /// workers elsewhere: only the read model's own bookkeeping is read. A query that times out,
    /// or whose read model cannot answer, is answered from the read model as it is.
    pub async fn read_after(&self, projection: &dyn Projection, token: Option<&Consistency>) {
        let Some(token) = token else {
            return;
        };
        let deadline = tokio::time::Instant::now() + self.consistency_wait;
        let mut pause = READ_YOUR_WRITES_POLL_MIN;
        loop {
            match projections::reflects(self.models.as_ref(), projection, token).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(projection = projection.name(), error = %e, "read-your-writes check failed");
                    return;
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                tracing::debug!(projection = projection.name(), %token, "read-your-writes wait timed out");
                return;
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(READ_YOUR_WRITES_POLL_MAX);
        }
    }
}
