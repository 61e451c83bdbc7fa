//! [`PaymentLookup`] over the support read model's `support_by_intent` and `support_by_charge`
//! indexes.

use async_trait::async_trait;
use commands::{CommandError, IntentOwner, PaymentLookup, StoreError};
use projections::store::ReadModelStore;
use projections::support::{search_orders, SupportQuery};
use std::sync::Arc;

/// Finds the order of a PaymentIntent through the support projection (which indexes orders by
/// intent id once `PaymentIntentCreated` is projected). Eventually consistent: an intent created
/// a few milliseconds ago may not be found yet, which only matters for charge and dispute events
/// (intent events carry our metadata).
pub struct ReadModelPaymentLookup {
    models: Arc<dyn ReadModelStore>,
}

impl ReadModelPaymentLookup {
    pub fn new(models: Arc<dyn ReadModelStore>) -> Self {
        Self { models }
    }
}

#[async_trait]
impl PaymentLookup for ReadModelPaymentLookup {
    async fn owner_of_intent(&self, intent_id: &str) -> Result<Option<IntentOwner>, CommandError> {
        self.owner(|q| q.intent_id = Some(intent_id.to_string()))
            .await
    }

    async fn owner_of_charge(&self, charge_id: &str) -> Result<Option<IntentOwner>, CommandError> {
        self.owner(|q| q.charge_id = Some(charge_id.to_string()))
            .await
    }
}

impl ReadModelPaymentLookup {
    /// The order of the first support entry found by a one-result query that `narrow` narrows.
    async fn owner(
        &self,
        narrow: impl FnOnce(&mut SupportQuery) + Send,
    ) -> Result<Option<IntentOwner>, CommandError> {
        let mut query = SupportQuery {
            limit: 1,
            ..SupportQuery::default()
        };
        narrow(&mut query);
        let found = search_orders(&*self.models, &query).await.map_err(|e| {
            if e.is_transient() {
                CommandError::Store(StoreError::Unavailable(e.to_string()))
            } else {
                CommandError::Internal(format!("support read model lookup failed: {e}"))
            }
        })?;
        Ok(found
            .into_iter()
            .next()
            .map(|view| IntentOwner::Order(view.order_id)))
    }
}
