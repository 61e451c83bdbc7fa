//! The notification delivery worker: sends every due notification through the configured
//! [`Mailer`] and records each attempt as an event of the notification's stream.
//!
//! Delivery is at least once:
//!
//! - The queue is the notifications read model's pending list, ordered by when each message is
//!   next due. Before sending, the worker reads the notification's own stream, the source of
//!   truth: a message already delivered or failed (the read model lags, or another worker got
//!   there first) is skipped, so a rebuild or a replay of the read model never sends again.
//! - The message's `Message-ID` derives from the notification id alone, so a resend after a
//!   crash between sending and recording is the same message, which mail systems collapse; the
//!   `file` channel overwrites the same file.
//! - Each attempt is recorded under the command id `deliver:<notification>:<attempt>`: two
//!   workers that raced on one attempt commit it once.
//! - A failed attempt is retried with exponential backoff ([`RetryPolicy`]); after the last
//!   one, or a permanent failure, the notification is failed with the reason and support lists
//!   it.
//!
//! Time comes from the worker's [`Clock`], so tests move it instead of sleeping.

/// Notifications given up on.
pub const NOTIFICATIONS_FAILED: &str = "backbone_notifications_failed_total";
use crate::{spawn_timer, LoopContext, Timer};
use commands::{Clock, CommandContext, CommandError, Mailer, OutgoingEmail, Shop};
use domain::{AttemptOutcome, Notification, NotificationCommand, NotificationId, RetryPolicy};
use futures::StreamExt;
use projections::notifications::{self, NotificationKind, NotificationView};
use projections::ReadModelStore;
use std::sync::Arc;

/// The health name of the delivery loop.
pub const DELIVERY_WORKER: &str = "delivery";
/// How often the worker looks for due notifications.
pub const DELIVER_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Notifications sent per round at most; a full round is followed by another at once.
pub const DELIVERY_BATCH: usize = 100;
/// Messages of a round in flight at once: a channel's latency (an SMTP or SES round trip, a
/// file's flush) is paid in parallel, while each notification's attempts stay in order.
pub const DELIVERY_CONCURRENCY: usize = 8;

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deliveries {
    pub delivered: usize,
    /// Attempts that failed and will be retried.
    pub retrying: usize,
    /// Notifications given up on this round.
    pub failed: usize,
    /// Due in the read model but closed or not yet due by their own stream.
    pub skipped: usize,
}

impl Deliveries {
    fn handled(&self) -> usize {
        self.delivered + self.retrying + self.failed + self.skipped
    }
}

/// Sends due notifications.
pub struct DeliveryWorker {
    shop: Arc<Shop>,
    models: Arc<dyn ReadModelStore>,
    mailer: Arc<dyn Mailer>,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    batch: usize,
    concurrency: usize,
}

impl DeliveryWorker {
    pub fn new(
        shop: Arc<Shop>,
        models: Arc<dyn ReadModelStore>,
        mailer: Arc<dyn Mailer>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            shop,
            models,
            mailer,
            clock,
            policy: RetryPolicy::default(),
            batch: DELIVERY_BATCH,
            concurrency: DELIVERY_CONCURRENCY,
        }
    }

    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// At most this many notifications per round.
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// At most this many messages in flight at once (1: one after the other).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Sends the notifications due now. A store or read-model failure stops the round; the
    /// notifications not reached are due again next time.
    #[tracing::instrument(skip_all, fields(delivered, retrying, failed, skipped), err)]
    pub async fn deliver_due(&self) -> Result<Deliveries, CommandError> {
        let now = self.clock.now();
        let due = notifications::due_notifications(self.models.as_ref(), now, self.batch)
            .await
            .map_err(|e| {
                CommandError::Store(commands::StoreError::Unavailable(format!(
                    "the notifications read model: {e}"
                )))
            })?;
        let round = self.deliver(&due, now).await?;
        let span = tracing::Span::current();
        span.record("delivered", round.delivered);
        span.record("retrying", round.retrying);
        span.record("failed", round.failed);
        span.record("skipped", round.skipped);
        Ok(round)
    }

    /// Sends the notifications `due`, each once, as of `now`.
    pub async fn deliver(
        &self,
        due: &[NotificationView],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Deliveries, CommandError> {
        // Each notification appears once in `due`, so the ones in flight never share a stream.
        let attempts: Vec<_> = due.iter().map(|view| self.attempt(view, now)).collect();
        let mut attempts = futures::stream::iter(attempts).buffer_unordered(self.concurrency);
        let mut round = Deliveries::default();
        while let Some(outcome) = attempts.next().await {
            match outcome? {
                Attempt::Delivered => round.delivered += 1,
                Attempt::Retrying => round.retrying += 1,
                Attempt::Failed => round.failed += 1,
                Attempt::Skipped => round.skipped += 1,
            }
        }
        Ok(round)
    }

    async fn attempt(
        &self,
        view: &NotificationView,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Attempt, CommandError> {
        let id = view.notification_id.to_string();
        let stream = self.shop.service().load::<Notification>(&id).await?;
        let state = &stream.state;
        let not_yet = state.next_attempt_at.is_some_and(|next| next > now);
        if state.status.is_closed() || not_yet {
            tracing::debug!(notification_id = %id, status = state.status.as_str(), "not due by its stream");
            return Ok(Attempt::Skipped);
        }
        let attempt = state.attempts + 1;
        let email = compose(view);
        let outcome = match self.mailer.send(&email).await {
            Ok(message_id) => AttemptOutcome::Sent { message_id },
            Err(e) => {
                tracing::warn!(notification_id = %id, attempt, permanent = e.permanent, error = %e.reason, "notification not delivered");
                AttemptOutcome::Failed {
                    reason: e.reason,
                    permanent: e.permanent,
                }
            }
        };
        let notification_id = NotificationId::parse(&id)
            .map_err(|e| CommandError::Internal(format!("notification id: {e}")))?;
        let command = NotificationCommand::RecordAttempt {
            notification_id,
            order_id: view.order_id.clone(),
            kind: view.kind.as_str().to_owned(),
            channel: self.mailer.channel().to_owned(),
            outcome,
            at: now,
            policy: self.policy,
        };
        let result = self
            .shop
            .service()
            .execute::<Notification, _, _, _>(
                &id,
                &delivery_context(&id, attempt),
                |_| Ok(command.clone()),
                |state, _| state.status,
            )
            .await;
        match result {
            Ok(executed) => Ok(match executed.value {
                domain::NotificationStatus::Delivered => Attempt::Delivered,
                domain::NotificationStatus::Failed => {
                    metrics::counter!(NOTIFICATIONS_FAILED).increment(1);
                    Attempt::Failed
                }
                _ => Attempt::Retrying,
            }),
            // Another worker recorded the outcome first: the message was sent at least once.
            Err(CommandError::Rejected { code, .. })
                if code == "notification_delivered" || code == "notification_failed" =>
            {
                Ok(Attempt::Skipped)
            }
            Err(e) => Err(e),
        }
    }
}

/// What became of one due notification.
enum Attempt {
    Delivered,
    Retrying,
    Failed,
    Skipped,
}

/// The one command id every worker uses for a notification's `attempt`.
fn delivery_context(notification_id: &str, attempt: u32) -> CommandContext {
    CommandContext::keyed(
        DELIVERY_WORKER,
        format!("deliver:{notification_id}:{attempt}"),
        format!("notification:{notification_id}"),
    )
}

/// The message for a notification: its subject, its text, and the HTML template of its kind.
pub fn compose(view: &NotificationView) -> OutgoingEmail {
    OutgoingEmail {
        notification_id: view.notification_id.to_string(),
        to: view.email.clone(),
        subject: view.subject.clone(),
        text: format!("{}\n\n-- \n{FOOTER}\n", view.body),
        html: html(view),
    }
}

const FOOTER: &str = "You receive this message because you placed an order with us.";

/// The HTML part: a heading and an accent per kind around the (escaped) text.
fn html(view: &NotificationView) -> String {
    let (heading, accent) = match view.kind {
        NotificationKind::OrderConfirmed => ("Thank you for your order", "#2e7d32"),
        NotificationKind::PaymentFailed => ("Your payment did not go through", "#c62828"),
        NotificationKind::OrderShipped => ("Your order is on its way", "#1565c0"),
        NotificationKind::OrderDelivered => ("Your order was delivered", "#2e7d32"),
        NotificationKind::RefundIssued => ("Your refund", "#6a1b9a"),
        NotificationKind::OrderCancelled => ("Your order was cancelled", "#616161"),
        NotificationKind::OrderExpired => ("Your order expired", "#616161"),
        NotificationKind::DisputeOpened => ("A dispute was opened", "#ef6c00"),
    };
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{subject}</title></head>\
         <body style=\"font-family:sans-serif;max-width:36em\">\
         <h1 style=\"color:{accent};font-size:1.4em\">{heading}</h1>\
         <p>{body}</p>\
         <p style=\"color:#757575;font-size:.8em\">Order {order}. {FOOTER}</p>\
         </body></html>\n",
        subject = escape(&view.subject),
        body = escape(&view.body),
        order = escape(view.order_id.as_str()),
    )
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Timer for DeliveryWorker {
    const NAME: &'static str = DELIVERY_WORKER;
    const EVERY: std::time::Duration = DELIVER_EVERY;

    async fn round(&self) -> Result<bool, CommandError> {
        let round = self.deliver_due().await?;
        Ok(round.handled() >= self.batch)
    }
}

/// Runs the worker every [`DELIVER_EVERY`] until cancelled (at once again after a full round).
pub fn spawn_delivery(
    worker: Arc<DeliveryWorker>,
    context: LoopContext,
) -> tokio::task::JoinHandle<()> {
    spawn_timer(worker, context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_what_the_customer_or_a_provider_wrote() {
        assert_eq!(
            escape(r#"<b>"Tom & Jerry's"</b>"#),
            "&lt;b&gt;&quot;Tom &amp; Jerry&#39;s&quot;&lt;/b&gt;"
        );
    }
}
