//! Process managers: react to facts in the feed with further commands.
//!
//! - PaymentSucceeded → Order MarkPaid (or, when the order is already cancelled or expired, a
//!   refund of the payment);
//! - PaymentFailed → Order RecordPaymentFailure;
//! - PaymentRefunded → Order Refund;
//! - OrderCancelled / OrderExpired → Product ReleaseStock per line, plus a refund when paid;
//!   an expired order's payment intent is also canceled at the provider, so it can no longer be
//!   paid, and the cancellation recorded on the Payment;
//! - OrderShipped → Product CommitStock per line.
//!
//! Every step carries a command id derived from the causing event (and the product), so a
//! redelivered event is a no-op at the store. Steps are safe to run at least once.

/// Payments the provider reported failed (counted when their order records it).
pub const PAYMENTS_FAILED: &str = "backbone_payments_failed_total";
use crate::error::CommandError;
use crate::ports::{CancelIntent, GatewayError, PaymentGateway, RefundRequest, RefundResult};
use crate::service::{CommandContext, Executed};
use crate::shop::{Ack, Caller, Shop};
use crate::store::EventEnvelope;
use domain::{
    Money, Order, OrderCommand, OrderEvent, OrderId, Payment, PaymentCommand, PaymentEvent,
    ProductCommand, ProductId, StreamType,
};
use std::sync::Arc;

/// The process managers over the shop's use cases.
pub struct ProcessManagers {
    shop: Arc<Shop>,
    gateway: Arc<dyn PaymentGateway>,
}

/// What a step did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    Ignored,
    Done,
}

impl ProcessManagers {
    pub fn new(shop: Arc<Shop>, gateway: Arc<dyn PaymentGateway>) -> Self {
        Self { shop, gateway }
    }

    /// Cheap filter for the feed consumer.
    pub fn handles(event: &EventEnvelope) -> bool {
        matches!(
            (event.stream_type, event.event_type.as_str()),
            (
                StreamType::Payment,
                "PaymentSucceeded" | "PaymentFailed" | "PaymentRefunded"
            ) | (
                StreamType::Order,
                "OrderCancelled" | "OrderExpired" | "OrderShipped"
            )
        )
    }

    /// Handles one event. Errors are returned for the worker to retry; domain rejections that
    /// mean "already done" are swallowed.
    #[tracing::instrument(skip_all, fields(event_id = %event.event_id, event_type = %event.event_type, correlation_id = %event.metadata.correlation_id), err)]
    pub async fn handle(&self, event: &EventEnvelope) -> Result<StepResult, CommandError> {
        if !Self::handles(event) {
            return Ok(StepResult::Ignored);
        }
        match event.stream_type {
            StreamType::Payment => {
                let decoded = event
                    .payload
                    .decode_event::<PaymentEvent>(&event.event_type, event.event_version)
                    .map_err(|e| {
                        CommandError::Internal(format!("undecodable payment event: {e}"))
                    })?;
                self.on_payment(event, decoded).await
            }
            StreamType::Order => {
                let decoded = event
                    .payload
                    .decode_event::<OrderEvent>(&event.event_type, event.event_version)
                    .map_err(|e| CommandError::Internal(format!("undecodable order event: {e}")))?;
                self.on_order(event, decoded).await
            }
            _ => Ok(StepResult::Ignored),
        }
    }

    async fn on_payment(
        &self,
        event: &EventEnvelope,
        decoded: PaymentEvent,
    ) -> Result<StepResult, CommandError> {
        match decoded {
            PaymentEvent::PaymentSucceeded {
                payment_id,
                order_id,
                amount,
                at,
                ..
            } => {
                let mark_paid = OrderCommand::MarkPaid {
                    payment_id: payment_id.clone(),
                    amount,
                    at,
                };
                let result = self
                    .order_step(event, "mark-paid", &order_id, mark_paid)
                    .await;
                match result {
                    Ok(_) => Ok(StepResult::Done),
                    // The order was cancelled or expired before the money arrived: give it back.
                    Err(CommandError::Rejected {
                        code: "invalid_transition",
                        ..
                    }) => {
                        tracing::info!(%order_id, "payment arrived for a closed order, refunding");
                        self.refund_payment(
                            event,
                            payment_id.as_str(),
                            None,
                            &format!("late:{}", event.event_id),
                        )
                        .await?;
                        Ok(StepResult::Done)
                    }
                    Err(e) => Err(e),
                }
            }
            PaymentEvent::PaymentFailed {
                order_id,
                reason,
                at,
                ..
            } => {
                let failure = OrderCommand::RecordPaymentFailure { reason, at };
                self.order_step(event, "payment-failed", &order_id, failure)
                    .await
                    .map(|executed| {
                        // Counted once per failed payment: a redelivered event is a replay.
                        if !executed.replayed {
                            metrics::counter!(PAYMENTS_FAILED).increment(1);
                        }
                        StepResult::Done
                    })
                    .or_else(already_done)
            }
            PaymentEvent::PaymentRefunded {
                order_id,
                refund_id,
                amount,
                at,
                ..
            } => {
                let refund = OrderCommand::Refund {
                    refund_id,
                    amount,
                    at,
                };
                self.order_step(event, "order-refund", &order_id, refund)
                    .await
                    .map(|_| StepResult::Done)
                    .or_else(already_done)
            }
            _ => Ok(StepResult::Ignored),
        }
    }

    async fn on_order(
        &self,
        event: &EventEnvelope,
        decoded: OrderEvent,
    ) -> Result<StepResult, CommandError> {
        match decoded {
            OrderEvent::OrderCancelled {
                order_id, was_paid, ..
            } => {
                self.release_stock(event, &order_id).await?;
                if was_paid {
                    let order = self.shop.service().load::<Order>(order_id.as_str()).await?;
                    if let Some(payment_id) = order.state.payment_id.clone() {
                        self.refund_payment(
                            event,
                            payment_id.as_str(),
                            order.state.refundable(),
                            &format!("cancel:{order_id}"),
                        )
                        .await?;
                    }
                }
                Ok(StepResult::Done)
            }
            OrderEvent::OrderExpired { order_id, at } => {
                self.release_stock(event, &order_id).await?;
                self.cancel_intent(event, &order_id, at).await?;
                Ok(StepResult::Done)
            }
            OrderEvent::OrderShipped {
                order_id, lines, ..
            } => {
                let products: Vec<ProductId> = lines.into_iter().map(|l| l.product_id).collect();
                self.stock_steps(event, "commit-stock", &products, || {
                    ProductCommand::CommitStock {
                        order_id: order_id.clone(),
                    }
                })
                .await?;
                Ok(StepResult::Done)
            }
            _ => Ok(StepResult::Ignored),
        }
    }

    async fn release_stock(
        &self,
        event: &EventEnvelope,
        order_id: &OrderId,
    ) -> Result<(), CommandError> {
        let order = self.shop.service().load::<Order>(order_id.as_str()).await?;
        let products: Vec<ProductId> = order
            .state
            .lines
            .iter()
            .map(|l| l.product_id.clone())
            .collect();
        self.stock_steps(event, "release-stock", &products, || {
            ProductCommand::ReleaseStock {
                order_id: order_id.clone(),
            }
        })
        .await
    }

    /// Runs one order command as step `step` of `event`, with staff rights.
    async fn order_step(
        &self,
        event: &EventEnvelope,
        step: &str,
        order_id: &OrderId,
        command: OrderCommand,
    ) -> Result<Executed<Ack>, CommandError> {
        let ctx = CommandContext::caused_by(event, step);
        self.shop
            .order_command(&ctx, &Caller::Staff, order_id.as_str(), |_| command.clone())
            .await
    }

    /// Sends `command` to each of `products`, each as its own step `<step>:<product id>` of
    /// `event`, one after the other.
    async fn stock_steps(
        &self,
        event: &EventEnvelope,
        step: &str,
        products: &[ProductId],
        command: impl Fn() -> ProductCommand,
    ) -> Result<(), CommandError> {
        for product_id in products {
            let ctx = CommandContext::caused_by(event, &format!("{step}:{product_id}"));
            self.shop
                .product_command(&ctx, product_id.as_str(), |_| command())
                .await?;
        }
        Ok(())
    }

    /// Cancels the expired order's payment intent at the provider and records it on the
    /// payment. An intent the provider will not cancel (it succeeded meanwhile) is left alone:
    /// that payment reaches a closed order and is refunded (see PaymentSucceeded).
    async fn cancel_intent(
        &self,
        event: &EventEnvelope,
        order_id: &OrderId,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), CommandError> {
        let order = self.shop.service().load::<Order>(order_id.as_str()).await?;
        let Some(payment_id) = order.state.payment_id.clone() else {
            return Ok(());
        };
        let payment = self
            .shop
            .service()
            .load::<Payment>(payment_id.as_str())
            .await?;
        let Some(intent_id) = payment.state.intent_id.clone() else {
            // No intent was ever created: nothing can be paid.
            return Ok(());
        };
        let canceled = self
            .gateway
            .cancel_intent(CancelIntent {
                intent_id: intent_id.clone(),
                idempotency_key: format!("cancel:{payment_id}"),
            })
            .await;
        match canceled {
            Ok(answer) if answer.status == "canceled" => {
                let ctx = CommandContext::caused_by(event, "payment-canceled");
                self.shop
                    .payment_fact(&ctx, payment_id.as_str(), |_| {
                        PaymentCommand::RecordCanceled {
                            intent_id: intent_id.clone(),
                            at,
                        }
                    })
                    .await
                    .map(|_| ())
                    .or_else(|e| already_done(e).map(|_| ()))
            }
            Ok(answer) => {
                tracing::warn!(%order_id, %intent_id, status = %answer.status, "the provider did not cancel the expired order's intent");
                Ok(())
            }
            Err(GatewayError::Rejected(reason)) => {
                tracing::warn!(%order_id, %intent_id, %reason, "the expired order's intent cannot be canceled");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Refunds `amount` (everything still refundable when `None`) of a payment at the provider
    /// and records the provider's answer on the payment. The provider key is deterministic, so
    /// a retried step refunds once.
    pub async fn refund_payment(
        &self,
        cause: &EventEnvelope,
        payment_id: &str,
        amount: Option<Money>,
        key: &str,
    ) -> Result<(), CommandError> {
        let payment = self.shop.service().load::<Payment>(payment_id).await?;
        refund_and_record(
            &self.shop,
            &*self.gateway,
            &CommandContext::caused_by(cause, &format!("refund:{key}")),
            &payment.state,
            amount,
            key,
        )
        .await
        .map(|_| ())
    }
}

/// Requests a refund at the provider and records it on the payment (cumulative amount).
/// Shared by the process managers and support refunds.
///
/// Returns the provider's answer, or `None` when nothing was left to refund. A refund the
/// provider reports as pending is not recorded here: the `charge.refunded` webhook records it.
pub async fn refund_and_record(
    shop: &Shop,
    gateway: &dyn PaymentGateway,
    ctx: &CommandContext,
    payment: &Payment,
    amount: Option<Money>,
    key: &str,
) -> Result<Option<RefundResult>, CommandError> {
    let (Some(pid), Some(order_id), Some(intent_id), Some(captured)) = (
        payment.id.clone(),
        payment.order_id.clone(),
        payment.intent_id.clone(),
        payment.captured.clone().or_else(|| payment.amount.clone()),
    ) else {
        return Err(CommandError::rejected(
            "not_captured",
            "payment has nothing to refund",
        ));
    };
    let remaining = payment
        .refundable(&captured)
        .map_err(|e| CommandError::Internal(e.to_string()))?;
    let amount = amount.unwrap_or(remaining);
    if amount.is_zero() {
        return Ok(None);
    }
    let result = gateway
        .refund(RefundRequest {
            payment_id: pid.clone(),
            order_id,
            intent_id,
            amount: amount.clone(),
            idempotency_key: format!("refund:{pid}:{key}"),
        })
        .await?;
    if result.status != "succeeded" {
        // Recorded when the provider confirms it (webhook).
        tracing::info!(refund_id = %result.refund_id, status = %result.status, "refund pending at the provider");
        return Ok(Some(result));
    }
    // The cumulative total, as the provider's `charge.refunded` reports it.
    let total = match &payment.refunded {
        Some(before) => before.checked_add(&result.amount),
        None => Ok(result.amount.clone()),
    }
    .map_err(|e| CommandError::Internal(e.to_string()))?;
    let refund_id = result.refund_id.clone();
    let at = shop.service().clock().now();
    shop.payment_fact(ctx, pid.as_str(), |_| PaymentCommand::RecordRefunded {
        refund_id: refund_id.clone(),
        amount_refunded_total: total.clone(),
        at,
    })
    .await?;
    Ok(Some(result))
}

/// A rejection that means the step's effect is already in place is success for a process
/// manager (for example a failure recorded after the order was paid).
fn already_done(e: CommandError) -> Result<StepResult, CommandError> {
    match e {
        CommandError::Rejected { code, message } => {
            tracing::info!(code, %message, "process step not applicable, skipping");
            Ok(StepResult::Done)
        }
        other => Err(other),
    }
}
