//! The shared state every handler gets: one `Arc` (cloned for every request by the router and
//! its layers, so a clone is one reference count) over the parts the composition root built.

use crate::auth::Authenticator;
use commands::{Clock, EventStore, PaymentSimulator, Shop};
use metrics_exporter_prometheus::PrometheusHandle;
use projections::ReadModelStore;
use std::sync::Arc;
use std::time::Duration;
use workers::Health;

/// How long a query with `after_position` waits for its projection.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(2);

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
}

impl Parts {
    /// Read-your-writes: waits (bounded) until projection `name` has reached `after`. A query
    /// that times out is answered from the read model as it is.
    pub async fn read_after(&self, projection: &str, after: Option<u64>) {
        let Some(position) = after else {
            return;
        };
        let worker = workers::projection_worker(projection);
        if !self
            .health
            .wait_for(&worker, position, READ_YOUR_WRITES_WAIT)
            .await
        {
            tracing::debug!(projection, position, "read-your-writes wait timed out");
        }
    }
}
