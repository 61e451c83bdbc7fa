//! The shop's use cases: carts, checkout, orders, catalog administration, payment facts and
//! resending a notification.
//! Each use case loads what it needs from the aggregates (never from read models), decides with
//! the pure domain and commits through [`CommandService`].

use crate::error::{CommandError, Rejection};
use crate::ports::{ConfirmIntent, CreateIntent, GatewayError, PaymentGateway};
use crate::service::{CommandContext, CommandService, Executed, Loaded};
use crate::store::Metadata;
use domain::{
    Cart, CartCommand, CartId, CartStatus, CustomerId, EventSourced, Money, Notification,
    NotificationCommand, NotificationId, Order, OrderCommand, OrderId, OrderLine, Payment,
    PaymentCommand, PaymentId, Product, ProductCommand, ProductId, ProductStatus, Quantity,
    ShippingAddress,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The caller as the application layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A storefront customer; may only touch their own carts and orders.
    Customer(CustomerId),
    /// Support, admin, analysts and internal workers.
    Staff,
}

impl Caller {
    fn may_see(&self, owner: Option<&CustomerId>) -> bool {
        match self {
            Caller::Staff => true,
            Caller::Customer(me) => owner == Some(me),
        }
    }

    /// Whether the order exists and the caller may see it (its customer, or staff).
    fn sees_order(&self, order: &Order) -> bool {
        order.exists() && self.may_see(order.customer_id.as_ref())
    }
}

/// A stream whose commands answer with an [`Ack`]: the name a "not found" answer gives it, and
/// its status as the Ack reports it.
trait Acked: EventSourced<Error: Rejection> {
    const NAME: &'static str;

    fn status_name(&self) -> &'static str;
}

/// Implements [`Acked`] for aggregates whose `status` is a stored-name enum.
macro_rules! acked {
    ($($aggregate:ty => $name:literal),* $(,)?) => {$(
        impl Acked for $aggregate {
            const NAME: &'static str = $name;

            fn status_name(&self) -> &'static str {
                self.status.as_str()
            }
        }
    )*};
}

acked!(
    Order => "order",
    Payment => "payment",
    Product => "product",
    Notification => "notification",
);

/// A cart as returned to its owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = CartSchema))]
pub struct CartView {
    pub cart_id: String,
    pub customer_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: CartStatus,
    pub lines: Vec<CartLineView>,
    pub total: Option<Money>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub order_id: Option<OrderId>,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = CartLineSchema))]
pub struct CartLineView {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub product_id: ProductId,
    pub quantity: u32,
    pub unit_price: Money,
    pub line_total: Money,
}

impl CartView {
    pub fn from_state(cart: &Cart, version: u64) -> Self {
        Self {
            cart_id: cart
                .id
                .as_ref()
                .map(|i| i.as_str().to_owned())
                .unwrap_or_default(),
            customer_id: cart
                .customer_id
                .as_ref()
                .map(|i| i.as_str().to_owned())
                .unwrap_or_default(),
            status: cart.status,
            lines: cart
                .lines
                .values()
                .map(|l| CartLineView {
                    product_id: l.product_id.clone(),
                    quantity: l.quantity.get(),
                    unit_price: l.unit_price.clone(),
                    line_total: l.line_total.clone(),
                })
                .collect(),
            total: cart.total(),
            order_id: cart.order_id.clone(),
            version,
        }
    }
}

/// What checkout answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckoutReceipt {
    pub order_id: String,
    pub payment_id: String,
    pub total: Money,
    pub status: String,
}

/// What a payment-intent request answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentReceipt {
    pub payment_id: String,
    pub intent_id: String,
    pub client_secret: String,
}

/// Input of checkout.
#[derive(Debug, Clone)]
pub struct CheckoutInput {
    pub customer_email: String,
    pub shipping_address: ShippingAddress,
}

/// Input of product creation.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub product_id: ProductId,
    pub name: String,
    pub category: String,
    pub price: Money,
    pub initial_stock: u32,
}

/// A small acknowledgement for commands whose answer is just the new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = AckSchema))]
pub struct Ack {
    pub id: String,
    pub version: u64,
    pub status: String,
}

/// The shop's use cases over one [`CommandService`].
pub struct Shop {
    svc: Arc<CommandService>,
    gateway: Arc<dyn PaymentGateway>,
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

fn parse_id<T>(
    field: &str,
    value: &str,
    parse: impl Fn(&str) -> Result<T, domain::IdError>,
) -> Result<T, CommandError> {
    parse(value).map_err(|e| CommandError::invalid(field, e.to_string()))
}

impl Shop {
    pub fn new(svc: Arc<CommandService>, gateway: Arc<dyn PaymentGateway>) -> Self {
        Self { svc, gateway }
    }

    pub fn service(&self) -> &Arc<CommandService> {
        &self.svc
    }

    fn own_cart(&self, caller: &Caller, loaded: &Loaded<Cart>) -> Result<(), CommandError> {
        if !loaded.state.exists() || !caller.may_see(loaded.state.customer_id.as_ref()) {
            return Err(CommandError::not_found("cart", loaded.id.clone()));
        }
        Ok(())
    }

    // ----- carts -----------------------------------------------------------------------------

    #[tracing::instrument(skip_all, fields(customer = %customer), err)]
    pub async fn open_cart(
        &self,
        ctx: &CommandContext,
        customer: &CustomerId,
    ) -> Result<Executed<CartView>, CommandError> {
        let cart_id =
            CartId::parse(&new_id("cart")).map_err(|e| CommandError::Internal(e.to_string()))?;
        self.svc
            .execute::<Cart, _, _, _>(
                cart_id.as_str(),
                ctx,
                |_| {
                    Ok(CartCommand::Open {
                        cart_id: cart_id.clone(),
                        customer_id: customer.clone(),
                    })
                },
                CartView::from_state,
            )
            .await
    }

    pub async fn get_cart(&self, caller: &Caller, cart_id: &str) -> Result<CartView, CommandError> {
        let loaded = self.svc.load::<Cart>(cart_id).await?;
        self.own_cart(caller, &loaded)?;
        Ok(CartView::from_state(&loaded.state, loaded.version))
    }

    /// Adds a product at its current catalog price, read from the Product aggregate.
    #[tracing::instrument(skip_all, fields(cart_id = %cart_id, product_id = %product_id), err)]
    pub async fn add_item(
        &self,
        ctx: &CommandContext,
        caller: &Caller,
        cart_id: &str,
        product_id: &str,
        quantity: Quantity,
    ) -> Result<Executed<CartView>, CommandError> {
        let pid = &parse_id("product_id", product_id, ProductId::parse)?;
        self.svc
            .run(ctx, |mut attempt| async move {
                let cart = attempt.load::<Cart>(cart_id).await?;
                self.own_cart(caller, &cart)?;
                let product = attempt.read::<Product>(pid.as_str()).await?;
                let price = sellable_price(&product)?;
                let command = CartCommand::AddItem {
                    product_id: pid.clone(),
                    quantity,
                    unit_price: price,
                };
                let cart = attempt.decide(cart, command).await?;
                let view = CartView::from_state(&cart.state, cart.version);
                Ok((attempt, view))
            })
            .await
    }

    pub async fn change_quantity(
        &self,
        ctx: &CommandContext,
        caller: &Caller,
        cart_id: &str,
        product_id: &str,
        quantity: Quantity,
    ) -> Result<Executed<CartView>, CommandError> {
        let pid = parse_id("product_id", product_id, ProductId::parse)?;
        self.cart_command(ctx, caller, cart_id, move || CartCommand::ChangeQuantity {
            product_id: pid.clone(),
            quantity,
        })
        .await
    }

    pub async fn remove_item(
        &self,
        ctx: &CommandContext,
        caller: &Caller,
        cart_id: &str,
        product_id: &str,
    ) -> Result<Executed<CartView>, CommandError> {
        let pid = parse_id("product_id", product_id, ProductId::parse)?;
        self.cart_command(ctx, caller, cart_id, move || CartCommand::RemoveItem {
            product_id: pid.clone(),
        })
        .await
    }

    async fn cart_command(
        &self,
        ctx: &CommandContext,
        caller: &Caller,
        cart_id: &str,
        command: impl Fn() -> CartCommand,
    ) -> Result<Executed<CartView>, CommandError> {
        self.svc
            .execute::<Cart, _, _, _>(
                cart_id,
                ctx,
                |loaded| {
                    self.own_cart(caller, loaded)?;
                    Ok(command())
                },
                CartView::from_state,
            )
            .await
    }

    // ----- checkout --------------------------------------------------------------------------

    /// Checks a cart out in ONE multi-stream commit: Cart CheckedOut, Order Placed, a Product
    /// StockReserved per line and Payment Requested. Prices and stock come from the Product
    /// aggregates. A lost race re-reads everything and decides again.
    #[tracing::instrument(skip_all, fields(cart_id = %cart_id), err)]
    pub async fn checkout(
        &self,
        ctx: &CommandContext,
        caller: &Caller,
        cart_id: &str,
        input: CheckoutInput,
    ) -> Result<Executed<CheckoutReceipt>, CommandError> {
        // Ids are fixed outside the retry loop so every attempt decides the same order.
        let order_id =
            OrderId::parse(&new_id("ord")).map_err(|e| CommandError::Internal(e.to_string()))?;
        let payment_id =
            PaymentId::parse(&new_id("pay")).map_err(|e| CommandError::Internal(e.to_string()))?;
        let (order_id, payment_id, input) = (&order_id, &payment_id, &input);
        self.svc
            .run(ctx, |mut attempt| async move {
                let cart = attempt.load::<Cart>(cart_id).await?;
                self.own_cart(caller, &cart)?;
                let (Some(cart_key), Some(customer)) =
                    (cart.state.id.clone(), cart.state.customer_id.clone())
                else {
                    return Err(CommandError::not_found("cart", cart_id));
                };
                let cart_lines = cart.state.lines.clone();
                attempt
                    .decide(
                        cart,
                        CartCommand::CheckOut {
                            order_id: order_id.clone(),
                        },
                    )
                    .await?;
                let mut lines = Vec::with_capacity(cart_lines.len());
                // Lines are ordered by product id, so concurrent checkouts load (and, with the
                // locking loader, lock) products in the same order.
                for line in cart_lines.values() {
                    let product = attempt.load::<Product>(line.product_id.as_str()).await?;
                    let price = sellable_price(&product)?;
                    let line_total = price
                        .multiply(line.quantity.get())
                        .map_err(|e| CommandError::invalid("quantity", e.to_string()))?;
                    lines.push(OrderLine {
                        product_id: line.product_id.clone(),
                        name: product.state.name.clone(),
                        quantity: line.quantity,
                        unit_price: price,
                        line_total,
                    });
                    let reserve = ProductCommand::ReserveStock {
                        order_id: order_id.clone(),
                        quantity: line.quantity.get(),
                    };
                    attempt
                        .decide(product, reserve)
                        .await
                        .map_err(|e| match e {
                            CommandError::Rejected { code, message } => CommandError::Rejected {
                                code,
                                message: format!("{message} (product {})", line.product_id),
                            },
                            other => other,
                        })?;
                }
                let order = attempt.load::<Order>(order_id.as_str()).await?;
                let place = OrderCommand::Place {
                    order_id: order_id.clone(),
                    cart_id: cart_key,
                    customer_id: customer,
                    customer_email: input.customer_email.clone(),
                    shipping_address: input.shipping_address.clone(),
                    lines,
                    payment_id: payment_id.clone(),
                    placed_at: attempt.now(),
                };
                let placed = attempt.decide(order, place).await?.state;
                let total = placed
                    .total
                    .clone()
                    .ok_or_else(|| CommandError::Internal("placed order has no total".into()))?;
                let payment = attempt.load::<Payment>(payment_id.as_str()).await?;
                let request = PaymentCommand::Request {
                    payment_id: payment_id.clone(),
                    order_id: order_id.clone(),
                    amount: total.clone(),
                };
                attempt.decide(payment, request).await?;
                let receipt = CheckoutReceipt {
                    order_id: order_id.to_string(),
                    payment_id: payment_id.to_string(),
                    total,
                    status: placed.status.as_str().to_string(),
                };
                Ok((attempt, receipt))
            })
            .await
    }

    /// Passes `payment_method` on to the provider to confirm the payment's intent, for the
    /// order's customer (or staff); anyone else gets "not found". Nothing is recorded here: the
    /// payment moves only on the provider's verified webhook. The answer carries the provider's
    /// status of the intent. A replay (same Idempotency-Key) returns the first answer without
    /// calling the provider again, and the provider's key derives from the request's, so a
    /// retried request confirms once.
    #[tracing::instrument(skip_all, fields(payment_id = %payment_id), err)]
    pub async fn confirm_payment(
        &self,
        ctx: &CommandContext,
        caller: &Caller,
        payment_id: &str,
        payment_method: &str,
    ) -> Result<Executed<Ack>, CommandError> {
        if let Some(replayed) = self.svc.replay::<Ack>(ctx).await? {
            return Ok(replayed);
        }
        let payment = self.owned_payment(caller, payment_id).await?;
        // Only the intent is needed: its client secret is not asked of the provider.
        let (intent_id, _) = self.record_intent(ctx, payment_id).await?;
        let request_key = match &ctx.idempotency {
            Some(key) => key.command_id.clone(),
            None => uuid::Uuid::now_v7().to_string(),
        };
        let confirmed = self
            .gateway
            .confirm_intent(ConfirmIntent {
                intent_id,
                payment_method: payment_method.to_owned(),
                idempotency_key: format!("confirm:{payment_id}:{request_key}"),
            })
            .await?;
        let ack = Ack {
            id: payment_id.to_owned(),
            version: payment.version,
            status: confirmed.status,
        };
        self.svc.remember(ctx, ack).await
    }

    /// The payment, when the caller may see its order (its customer, or staff); "not found"
    /// otherwise, so that nobody else learns it exists.
    async fn owned_payment(
        &self,
        caller: &Caller,
        payment_id: &str,
    ) -> Result<Loaded<Payment>, CommandError> {
        let payment = self.svc.load::<Payment>(payment_id).await?;
        let owned = match &payment.state.order_id {
            Some(order_id) => self
                .get_order_state(caller, order_id.as_str())
                .await
                .is_ok(),
            None => false,
        };
        if !owned {
            return Err(CommandError::not_found("payment", payment_id));
        }
        Ok(payment)
    }

    /// Creates (or returns the existing) provider intent of a payment and records it, with its
    /// client secret: the provider's answer when the intent is created now, asked of the
    /// provider again when it already exists (the secret is never stored).
    /// Safe to call repeatedly and concurrently: the provider key is the payment id and the
    /// Payment aggregate ignores a second identical fact.
    #[tracing::instrument(skip_all, fields(payment_id = %payment_id), err)]
    pub async fn ensure_intent(
        &self,
        ctx: &CommandContext,
        payment_id: &str,
    ) -> Result<IntentReceipt, CommandError> {
        let (intent_id, created_secret) = self.record_intent(ctx, payment_id).await?;
        let client_secret = match created_secret {
            Some(secret) => secret,
            None => self.gateway.client_secret(&intent_id).await?,
        };
        Ok(IntentReceipt {
            payment_id: payment_id.to_string(),
            intent_id,
            client_secret,
        })
    }

    /// The intent id of a payment, its intent created and recorded first when it has none; the
    /// client secret too, when the intent was created by this call.
    async fn record_intent(
        &self,
        ctx: &CommandContext,
        payment_id: &str,
    ) -> Result<(String, Option<String>), CommandError> {
        let loaded = self.svc.load::<Payment>(payment_id).await?;
        let p = &loaded.state;
        if let Some(intent) = &p.intent_id {
            return Ok((intent.clone(), None));
        }
        let (Some(pid), Some(order_id), Some(amount)) =
            (p.id.clone(), p.order_id.clone(), p.amount.clone())
        else {
            return Err(CommandError::not_found("payment", payment_id));
        };
        let created = self
            .gateway
            .create_intent(CreateIntent {
                idempotency_key: pid.to_string(),
                payment_id: pid,
                order_id,
                amount,
            })
            .await?;
        let intent_id = created.intent_id.clone();
        self.svc
            .execute::<Payment, _, _, _>(
                payment_id,
                &CommandContext {
                    metadata: Metadata {
                        command_id: None,
                        ..ctx.metadata.clone()
                    },
                    idempotency: None,
                },
                |_| {
                    Ok(PaymentCommand::RecordIntentCreated {
                        intent_id: intent_id.clone(),
                    })
                },
                |_, _| (),
            )
            .await?;
        Ok((created.intent_id, Some(created.client_secret)))
    }

    /// The client secret of a payment's intent, asked of the provider (it is never stored), for
    /// the order's customer (or staff); anyone else gets "not found". A payment whose intent is
    /// not created yet (the provider was down at checkout, and the retry worker has not caught
    /// up) is rejected as `intent_pending`.
    #[tracing::instrument(skip_all, fields(payment_id = %payment_id), err)]
    pub async fn client_secret(
        &self,
        caller: &Caller,
        payment_id: &str,
    ) -> Result<IntentReceipt, CommandError> {
        let payment = self.owned_payment(caller, payment_id).await?;
        let Some(intent_id) = payment.state.intent_id.clone() else {
            return Err(CommandError::rejected(
                "intent_pending",
                "the payment has no provider intent yet, retry later",
            ));
        };
        let client_secret = self.gateway.client_secret(&intent_id).await?;
        Ok(IntentReceipt {
            payment_id: payment_id.to_string(),
            intent_id,
            client_secret,
        })
    }

    /// Checkout followed by a best-effort intent creation. The order is committed whatever the
    /// provider does; a transient provider failure leaves the payment for the retry worker.
    pub async fn checkout_and_pay(
        &self,
        ctx: &CommandContext,
        caller: &Caller,
        cart_id: &str,
        input: CheckoutInput,
    ) -> Result<(Executed<CheckoutReceipt>, Option<IntentReceipt>), CommandError> {
        let executed = self.checkout(ctx, caller, cart_id, input).await?;
        let intent = match self.ensure_intent(ctx, &executed.value.payment_id).await {
            Ok(intent) => Some(intent),
            Err(CommandError::Gateway(GatewayError::Transient(reason))) => {
                tracing::warn!(payment_id = %executed.value.payment_id, %reason, "intent creation deferred to the retry worker");
                None
            }
            Err(err) => {
                tracing::error!(payment_id = %executed.value.payment_id, error = %err, "intent creation failed");
                None
            }
        };
        Ok((executed, intent))
    }

    // ----- orders ----------------------------------------------------------------------------

    pub async fn get_order_state(
        &self,
        caller: &Caller,
        order_id: &str,
    ) -> Result<Loaded<Order>, CommandError> {
        let loaded = self.svc.load::<Order>(order_id).await?;
        if !caller.sees_order(&loaded.state) {
            return Err(CommandError::not_found("order", order_id));
        }
        Ok(loaded)
    }

    /// Runs one order command on behalf of `caller`.
    pub async fn order_command(
        &self,
        ctx: &CommandContext,
        caller: &Caller,
        order_id: &str,
        command: impl Fn(&Order) -> OrderCommand,
    ) -> Result<Executed<Ack>, CommandError> {
        self.acked(ctx, order_id, |order| caller.sees_order(order), command)
            .await
    }

    /// Runs one command on stream `id` of `A` and answers an [`Ack`] with the stream's new
    /// status. A stream that `found` refuses (missing, or not the caller's) is "not found".
    async fn acked<A: Acked>(
        &self,
        ctx: &CommandContext,
        id: &str,
        found: impl Fn(&A) -> bool,
        command: impl Fn(&A) -> A::Command,
    ) -> Result<Executed<Ack>, CommandError> {
        self.svc
            .execute::<A, _, _, _>(
                id,
                ctx,
                |loaded| {
                    if !found(&loaded.state) {
                        return Err(CommandError::not_found(A::NAME, id));
                    }
                    Ok(command(&loaded.state))
                },
                |state, version| Ack {
                    id: id.to_string(),
                    version,
                    status: state.status_name().to_string(),
                },
            )
            .await
    }

    // ----- products --------------------------------------------------------------------------

    pub async fn create_product(
        &self,
        ctx: &CommandContext,
        input: NewProduct,
    ) -> Result<Executed<Ack>, CommandError> {
        let id = input.product_id.clone();
        self.product_command(ctx, id.as_str(), move |_| ProductCommand::Create {
            product_id: input.product_id.clone(),
            name: input.name.clone(),
            category: input.category.clone(),
            price: input.price.clone(),
            initial_stock: input.initial_stock,
        })
        .await
    }

    pub async fn product_command(
        &self,
        ctx: &CommandContext,
        product_id: &str,
        command: impl Fn(&Product) -> ProductCommand,
    ) -> Result<Executed<Ack>, CommandError> {
        // The product's own decision says when it does not exist (creation needs none).
        self.acked(ctx, product_id, |_| true, command)
            .await
            .map_err(|e| match e {
                CommandError::NotFound { what, .. } => CommandError::not_found(what, product_id),
                other => other,
            })
    }

    // ----- notifications ---------------------------------------------------------------------

    /// Makes a notification the delivery worker gave up on due again at `at` (now), for one
    /// more attempt (support).
    #[tracing::instrument(skip_all, fields(notification_id = %notification_id), err)]
    pub async fn resend_notification(
        &self,
        ctx: &CommandContext,
        notification_id: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Executed<Ack>, CommandError> {
        let id = parse_id("notification_id", notification_id, NotificationId::parse)?;
        let resend = |_: &Notification| NotificationCommand::Resend {
            notification_id: id.clone(),
            at,
        };
        self.acked(ctx, notification_id, |n| n.id.is_some(), resend)
            .await
    }

    // ----- payments --------------------------------------------------------------------------

    /// Applies a provider fact to a payment (webhooks, gateway answers). Replays are no-ops.
    pub async fn payment_fact(
        &self,
        ctx: &CommandContext,
        payment_id: &str,
        command: impl Fn(&Payment) -> PaymentCommand,
    ) -> Result<Executed<Ack>, CommandError> {
        self.acked(ctx, payment_id, Payment::exists, command).await
    }
}

/// The price a product sells at now, or why it can't be sold.
fn sellable_price(product: &Loaded<Product>) -> Result<Money, CommandError> {
    if !product.state.exists() {
        return Err(CommandError::not_found("product", product.id.clone()));
    }
    if product.state.status == ProductStatus::Retired {
        return Err(domain::ProductError::Retired.to_command_error());
    }
    product
        .state
        .price
        .clone()
        .ok_or_else(|| CommandError::Internal("product without a price".into()))
}
