//! The composition root of the AWS deployment: the DynamoDB event store and read models, the
//! DynamoDB Streams relay, EventBridge and the SQS consumer groups, for one stage.
//!
//! Events reach the read models only one way: DynamoDB Stream → relay (which also indexes the
//! durable feed) → EventBridge → one SQS queue per consumer group → queue consumers. `serve`
//! never applies a commit to a projection itself. `--with-workers` runs the relay and the five
//! consumers inside the API process (tests, a single-box demo), still through the stream, the
//! bus and the queues.
//!
//! Only this module and `main` read configuration: the SDK config (standard AWS environment,
//! `AWS_ENDPOINT_URL` included) is loaded by the caller and handed in.

use crate::compose::{finish_start, ApiSettings, Embedded, StripeSettings};
use crate::notify::{NotifyChannel, NotifySettings};
use crate::state::{AppState, Parts};
use anyhow::Context;
use commands::{
    CachedKeyStore, Clock, DomainUpcaster, Erasure, EventStore, KeyStore, PaymentGateway,
    PaymentSimulator, PersonalDataStore, Pii, ProcessManagers, Pseudonyms, ServiceConfig, Shop,
    SystemClock, UpcastingStore,
};
use infrastructure::aws::provision::{provision, Provisioned, StackSpec};
use infrastructure::aws::{
    ConsumerGroup, DynamoEventStore, DynamoKeyStore, DynamoReadModelStore, DynamoShardCheckpoints,
    DynamoStoreOptions, DynamoStreamSource, EventBridgePublisher, KmsWrapping, ResourceNames,
    RetryPolicy, SqsEventQueue, StreamsOptions,
};
use infrastructure::aws::{DynamoGenerations, DynamoShardLeases};
use infrastructure::simulated::SimulatedGateway;
use projections::{GenerationRouter, Projection, ProjectionRunner, ReadModelStore};
use std::sync::Arc;
use std::time::Duration;
use workers::DeliveryWorker;
use workers::{
    CancellationToken, ExpirySweeper, Health, LoopConfig, LoopContext, QueueConsumer,
    QueueConsumerConfig, QueueHandler, Relay, RelayConfig,
};

/// Options of one stage's adapters (the default: no emulator workarounds, the default retry
/// policy, 1 MB query pages, the default command service).
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// Work around the local emulator's DynamoDB Streams quirks (see
    /// [`infrastructure::aws::fanout::streams`]). `main` turns it on when an endpoint URL is set.
    pub emulator_compat: bool,
    /// Transient AWS failures are retried this way by every adapter.
    pub retry: RetryPolicy,
    /// Items per Query page of the event store (`None`: DynamoDB's 1 MB pages).
    pub query_page_size: Option<i32>,
    /// Command service tuning (snapshot interval, conflict retries).
    pub service: ServiceConfig,
    /// The KMS key that wraps the customers' data keys (`--kms-key-id`); `None` keeps them
    /// unwrapped in the keys table.
    pub kms_key_id: Option<String>,
}

/// How long an AWS process trusts a cached data key: another process's erasure is seen by then.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(30);

/// The adapters of one stage, wired. Cheap to clone.
#[derive(Clone)]
pub struct AwsStage {
    pub names: ResourceNames,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub eventbridge: aws_sdk_eventbridge::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub cloudformation: aws_sdk_cloudformation::Client,
    /// The DynamoDB store itself (request counters, the feed indexer).
    pub dynamo_store: Arc<DynamoEventStore>,
    /// The store every consumer uses: `dynamo_store` sealing personal data on append, revealing
    /// it and upcasting on every read path.
    pub store: Arc<dyn EventStore>,
    /// The customers' data keys (the keys table, cached for [`KEY_CACHE_TTL`]).
    pub keys: Arc<dyn KeyStore>,
    /// The read-model tables themselves (generation 0 of every projection).
    pub models: Arc<DynamoReadModelStore>,
    /// What this process reads and writes: each projection's live generation
    /// ([`AwsStage::generations`] keeps it current).
    pub router: Arc<GenerationRouter>,
    /// The blue/green generations in the read-model tables.
    pub generations: Arc<DynamoGenerations>,
    /// The payment gateway: the simulator as built by [`new`](Self::new), Stripe after
    /// [`with_payments`](Self::with_payments).
    pub gateway: Arc<dyn PaymentGateway>,
    /// The simulated provider when payments are simulated.
    pub simulator: Option<Arc<dyn PaymentSimulator>>,
    pub clock: Arc<dyn Clock>,
    pub shop: Arc<Shop>,
    pub managers: Arc<ProcessManagers>,
    pub options: AwsOptions,
    /// The AWS configuration the clients were built from (for the SES channel).
    pub sdk: aws_config::SdkConfig,
}

impl AwsStage {
    /// Builds the clients and adapters of `stage`. Nothing is called yet: see
    /// [`provision`](Self::provision) to create the resources.
    pub fn new(sdk: &aws_config::SdkConfig, stage: &str, options: AwsOptions) -> Self {
        let names = ResourceNames::for_stage(stage);
        let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
        let dynamo_store = Arc::new(DynamoEventStore::new(
            dynamodb.clone(),
            &names,
            DynamoStoreOptions {
                // The relay indexes the feed from the stream.
                index_on_append: false,
                retry: options.retry,
                query_page_size: options.query_page_size,
                // A load's one Query covers the tail the service's snapshots leave.
                snapshot_every: options.service.snapshot_every,
                ..DynamoStoreOptions::default()
            },
        ));
        let kms = options.kms_key_id.as_ref().map(|key_id| KmsWrapping {
            client: aws_sdk_kms::Client::new(sdk),
            key_id: key_id.clone(),
        });
        let keys: Arc<dyn KeyStore> = Arc::new(CachedKeyStore::new(
            DynamoKeyStore::new(dynamodb.clone(), &names.keys_table, kms).with_retry(options.retry),
            crate::compose::KEY_CACHE_CAPACITY,
            Some(KEY_CACHE_TTL),
        ));
        let store: Arc<dyn EventStore> = Arc::new(UpcastingStore::new(
            PersonalDataStore::new(dynamo_store.clone(), Pii::new(keys.clone())),
            Arc::new(DomainUpcaster),
        ));
        let all = projections::all_projections();
        let models = Arc::new(
            DynamoReadModelStore::new(dynamodb.clone(), &names, options.retry)
                .with_hot_indexes(all.iter().flat_map(|p| p.hot_indexes().iter().copied())),
        );
        let base: Arc<dyn ReadModelStore> = models.clone();
        let router = Arc::new(GenerationRouter::new(&all, |_| base.clone()));
        let generations = Arc::new(DynamoGenerations::new(
            dynamodb.clone(),
            &names,
            options.retry,
            base,
            router.clone(),
            all,
        ));
        let simulated = Arc::new(SimulatedGateway::new());
        let gateway: Arc<dyn PaymentGateway> = simulated.clone();
        let simulator: Option<Arc<dyn PaymentSimulator>> = Some(simulated);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (shop, managers) = shop_over(&store, &clock, &options, &gateway);
        Self {
            names,
            streams: aws_sdk_dynamodbstreams::Client::new(sdk),
            eventbridge: aws_sdk_eventbridge::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            cloudformation: aws_sdk_cloudformation::Client::new(sdk),
            dynamodb,
            dynamo_store,
            store,
            keys,
            models,
            router,
            generations,
            gateway,
            simulator,
            clock,
            shop,
            managers,
            options,
            sdk: sdk.clone(),
        }
    }

    /// The same stage paying through Stripe when `stripe` is set (see
    /// [`crate::compose::payment_gateway`]); with `None` it keeps simulating.
    pub fn with_payments(mut self, stripe: Option<&StripeSettings>) -> anyhow::Result<Self> {
        let (gateway, simulator) = crate::compose::payment_gateway(stripe)?;
        let (shop, managers) = shop_over(&self.store, &self.clock, &self.options, &gateway);
        self.gateway = gateway;
        self.simulator = simulator;
        self.shop = shop;
        self.managers = managers;
        Ok(self)
    }

    /// Deploys the stage's stack (`cloudformation/backbone.yaml`): creates it, or updates it
    /// when it exists (idempotent). Fails when the stack's outputs name other resources than the
    /// adapters use.
    pub async fn provision(&self, spec: &StackSpec) -> anyhow::Result<Provisioned> {
        let provisioned = provision(&self.cloudformation, spec)
            .await
            .with_context(|| format!("provisioning stage {}", self.names.stage))?;
        let disagreements = provisioned.outputs.disagreements(&self.names);
        if !disagreements.is_empty() {
            anyhow::bail!(
                "stack {} does not match stage {}: {}",
                spec.stack_name,
                self.names.stage,
                disagreements.join("; ")
            );
        }
        let indexer = self.dynamo_store.indexer();
        let layout = match spec.feed_partitions {
            Some(partitions) => indexer.create(partitions).await,
            None => indexer.layout().await,
        }
        .with_context(|| format!("fixing the feed layout of stage {}", self.names.stage))?;
        tracing::info!(
            partitions = layout.partitions,
            legacy = layout.legacy,
            "feed layout"
        );
        Ok(provisioned)
    }

    /// The unpaid-order timer over the stage's support read model; the process-managers
    /// group runs it.
    pub fn expiry(&self, order_ttl: Duration) -> ExpirySweeper {
        ExpirySweeper::new(
            self.shop.clone(),
            self.models.clone(),
            self.clock.clone(),
            order_ttl,
        )
    }

    /// The notification delivery worker over the stage's notifications read model, sending
    /// through `notify`'s channel; the notifications group runs it.
    pub fn delivery(&self, notify: &NotifySettings) -> anyhow::Result<DeliveryWorker> {
        notify.worker(
            self.shop.clone(),
            self.models.clone(),
            self.clock.clone(),
            Some(&self.sdk),
        )
    }

    /// The relay of this stage.
    /// The relay of this stage. With `config.lease_ttl` it shares the stream with the stage's
    /// other relays through leases in the relay table.
    pub fn relay(&self, config: RelayConfig) -> Relay {
        let source = DynamoStreamSource::new(
            self.streams.clone(),
            self.dynamodb.clone(),
            &self.names,
            StreamsOptions {
                emulator_compat: self.options.emulator_compat,
            },
            self.options.retry,
        );
        let relay = Relay::new(
            Arc::new(source),
            Arc::new(DynamoShardCheckpoints::new(
                self.dynamodb.clone(),
                &self.names,
                self.options.retry,
            )),
            Arc::new(self.dynamo_store.indexer().clone()),
            Arc::new(EventBridgePublisher::new(
                self.eventbridge.clone(),
                self.names.event_bus.clone(),
                self.options.retry,
            )),
            config.clone(),
        );
        match config.lease_ttl {
            Some(_) => relay.with_leases(
                Arc::new(DynamoShardLeases::new(
                    self.dynamodb.clone(),
                    &self.names,
                    self.options.retry,
                )),
                format!(
                    "relay-{}-{}",
                    std::process::id(),
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                ),
            ),
            None => relay,
        }
    }

    /// The queue of a consumer group.
    pub async fn queue(&self, group: ConsumerGroup) -> anyhow::Result<SqsEventQueue> {
        let names = self
            .names
            .group(group)
            .with_context(|| format!("no resource names for group {group}"))?;
        SqsEventQueue::connect(self.sqs.clone(), &names.queue, self.options.retry)
            .await
            .with_context(|| format!("finding the {group} queue {}", names.queue))
    }

    /// The projection a consumer group keeps (`None` for the process managers).
    pub fn projection(group: ConsumerGroup) -> Option<Arc<dyn Projection>> {
        let wanted = match group {
            ConsumerGroup::Catalog => projections::catalog::NAME,
            ConsumerGroup::OrderHistory => projections::order_history::NAME,
            ConsumerGroup::Notifications => projections::notifications::NAME,
            ConsumerGroup::Support => projections::support::NAME,
            ConsumerGroup::ProcessManagers => return None,
        };
        projections::all_projections()
            .into_iter()
            .find(|p| p.name() == wanted)
    }

    /// What a consumer of `group` does with its events.
    pub fn handler(&self, group: ConsumerGroup) -> QueueHandler {
        match Self::projection(group) {
            Some(projection) => {
                let models: Arc<dyn ReadModelStore> = self.router.clone();
                QueueHandler::Projection(Arc::new(ProjectionRunner::new(
                    self.store.clone(),
                    models,
                    projection,
                    projections::runner::DEFAULT_BATCH,
                )))
            }
            None => QueueHandler::ProcessManagers(self.managers.clone()),
        }
    }

    /// The consumer of `group`'s queue; its health name is `queue:<group>`.
    pub async fn consumer(
        &self,
        group: ConsumerGroup,
        config: QueueConsumerConfig,
    ) -> anyhow::Result<QueueConsumer> {
        let queue = self.queue(group).await?;
        Ok(QueueConsumer::new(
            format!("queue:{group}"),
            Arc::new(queue),
            self.handler(group),
            config,
        )
        .revealing(Pii::new(self.keys.clone())))
    }

    /// The erasure use case over this stage's store and keys.
    pub fn erasure(&self) -> Erasure {
        let service = crate::compose::command_service(
            self.store.clone(),
            self.clock.clone(),
            self.options.service.clone(),
        );
        Erasure::new(service, self.keys.clone())
    }
}

/// Timing of the in-process workers.
#[derive(Debug, Clone)]
pub struct AwsWorkerConfig {
    pub relay: RelayConfig,
    /// Loop of the relay: `poll` is how long it sleeps when the stream had nothing new.
    pub relay_loop: LoopConfig,
    pub consumer: QueueConsumerConfig,
    /// Loop of the consumers: `poll` should be short (a receive already long-polls).
    pub consumer_loop: LoopConfig,
    /// How long an order may stay unpaid; the process-managers group expires it then.
    pub order_ttl: Duration,
    /// Where the notifications group delivers notifications (SES by default).
    pub notify: NotifySettings,
}

impl Default for AwsWorkerConfig {
    fn default() -> Self {
        Self {
            // Deployed relays share the stream through leases.
            relay: RelayConfig {
                lease_ttl: Some(workers::DEFAULT_LEASE_TTL),
                ..RelayConfig::default()
            },
            relay_loop: LoopConfig {
                poll: Duration::from_millis(250),
                ..LoopConfig::default()
            },
            consumer: QueueConsumerConfig::default(),
            consumer_loop: LoopConfig {
                poll: Duration::from_millis(10),
                ..LoopConfig::default()
            },
            order_ttl: workers::DEFAULT_ORDER_TTL,
            notify: NotifySettings::new(NotifyChannel::Ses),
        }
    }
}

/// The shop and the process managers over `store`, paying through `gateway`.
fn shop_over(
    store: &Arc<dyn EventStore>,
    clock: &Arc<dyn Clock>,
    options: &AwsOptions,
    gateway: &Arc<dyn PaymentGateway>,
) -> (Arc<Shop>, Arc<ProcessManagers>) {
    let service =
        crate::compose::command_service(store.clone(), clock.clone(), options.service.clone());
    let shop = Arc::new(Shop::new(service, gateway.clone()));
    let managers = Arc::new(ProcessManagers::new(shop.clone(), gateway.clone()));
    (shop, managers)
}

/// Spawns the relay and one consumer per group, all stopped by `cancel`.
pub async fn spawn_workers(
    stage: &AwsStage,
    config: &AwsWorkerConfig,
    health: &Health,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let delivery = Arc::new(stage.delivery(&config.notify)?);
    let mut consumers = Vec::new();
    for group in ConsumerGroup::ALL {
        consumers.push(Arc::new(
            stage.consumer(group, config.consumer.clone()).await?,
        ));
    }
    let context = LoopContext::new(health.clone(), cancel.clone(), config.consumer_loop.clone());
    let relay = Arc::new(stage.relay(config.relay.clone()));
    let mut tasks = vec![relay.spawn(context.with_config(config.relay_loop.clone()))];
    for consumer in consumers {
        tasks.push(consumer.spawn(context.clone()));
    }
    tasks.push(workers::spawn_expiry(
        Arc::new(stage.expiry(config.order_ttl)),
        context.clone(),
    ));
    tasks.push(workers::spawn_delivery(delivery, context));
    Ok(tasks)
}

/// Configuration of `serve --backend aws`. Its secrets are in [`ApiSettings`], whose `Debug`
/// redacts them.
#[derive(Clone, Debug)]
pub struct AwsServeConfig {
    pub stage: String,
    pub options: AwsOptions,
    /// Deploy the stage's stack first (`StackSpec::for_stage`; local runs).
    pub provision: bool,
    /// Run the relay and the consumers in this process.
    pub with_workers: bool,
    pub workers: AwsWorkerConfig,
    /// Tokens, payments and reads. Here `jwt_secret` is required unless `jwks_url` is set, and
    /// an unset `pseudonym_secret` is derived from `jwt_secret`.
    pub api: ApiSettings,
}

impl AwsServeConfig {
    pub fn new(stage: impl Into<String>) -> Self {
        Self {
            stage: stage.into(),
            options: AwsOptions::default(),
            provision: false,
            with_workers: false,
            workers: AwsWorkerConfig::default(),
            api: ApiSettings::default(),
        }
    }
}

/// Wires the API over the stage's DynamoDB tables (and, with `with_workers`, starts the
/// relay and the consumers), seeds the demo catalog, and returns the state to serve.
pub async fn start_aws(
    sdk: &aws_config::SdkConfig,
    config: AwsServeConfig,
) -> anyhow::Result<Embedded> {
    let stage = AwsStage::new(sdk, &config.stage, config.options.clone())
        .with_payments(config.api.stripe.as_ref())?;
    // Configuration errors first, before anything is deployed or spawned.
    let models: Arc<dyn ReadModelStore> = stage.router.clone();
    let webhooks = Arc::new(crate::compose::webhook_endpoint(
        config.api.webhook_secrets.clone(),
        config.api.stripe.is_some(),
        stage.shop.clone(),
        stage.gateway.clone(),
        models.clone(),
        stage.clock.clone(),
    )?);
    if config.provision {
        stage
            .provision(&StackSpec::for_stage(&config.stage))
            .await?;
    }
    let authenticator = config
        .api
        .authenticator(|| match &config.api.jwt_secret {
            Some(secret) if !secret.is_empty() => Ok(secret.clone()),
            _ => anyhow::bail!(
                "the aws backend needs --jwt-secret (BACKBONE_JWT_SECRET) or --jwks-url (BACKBONE_JWKS_URL)"
            ),
        })
        .await?;
    let pseudonyms = match (&config.api.pseudonym_secret, &config.api.jwt_secret) {
        (Some(secret), _) if !secret.is_empty() => Pseudonyms::new(secret.as_bytes()),
        (_, Some(jwt)) if !jwt.is_empty() => Pseudonyms::new(format!("pseudonyms:{jwt}").as_bytes()),
        _ => anyhow::bail!(
            "the aws backend needs --pseudonym-secret (BACKBONE_PSEUDONYM_SECRET) when it verifies tokens with --jwks-url"
        ),
    };
    let health = Health::default();
    let cancel = CancellationToken::new();
    // Every read goes to the live generations, and follows their promotions.
    let outdated = stage.generations.refresh().await?;
    let mut tasks = vec![stage
        .generations
        .clone()
        .follow(cancel.clone().cancelled_owned())];
    if config.with_workers {
        tasks.extend(spawn_workers(&stage, &config.workers, &health, &cancel).await?);
    }
    // Rebuilds replay the durable feed into a new generation; the queue workers keep the live
    // one current meanwhile, wherever they run.
    let mut rebuilds =
        workers::Rebuilds::new(health.clone()).with_generations(stage.generations.clone());
    for projection in projections::all_projections() {
        rebuilds.add(Arc::new(ProjectionRunner::new(
            stage.store.clone(),
            models.clone(),
            projection,
            projections::runner::DEFAULT_BATCH,
        )));
    }
    let rebuilds = Arc::new(rebuilds);
    let state = AppState::new(Parts {
        webhooks,
        shop: stage.shop.clone(),
        store: stage.store.clone(),
        models,
        clock: stage.clock.clone(),
        health,
        simulator: stage.simulator.clone(),
        auth: Arc::new(authenticator),
        metrics: crate::metrics::prometheus(),
        rebuilds: Some(rebuilds.clone()),
        catalog_auth_required: config.api.catalog_auth_required,
        consistency_wait: config.api.consistency_wait,
        erasure: Arc::new(stage.erasure()),
        pseudonyms: Arc::new(pseudonyms),
    });
    let running = Embedded::from_parts(state, cancel, tasks, None);
    let running = finish_start(running, &rebuilds, &outdated, config.api.demo_catalog).await?;
    tracing::info!(?config, "aws backbone started");
    Ok(running)
}
