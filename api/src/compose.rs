//! The composition root of the embedded default: one process, SQLite files under one data
//! directory, in-process fan-out, the simulated payment gateway. The only place that reads
//! configuration and builds adapters.

use crate::auth::{self, Authenticator};
use crate::state::{AppState, Parts};
use crate::webhooks::StripeWebhooks;
use anyhow::Context;
use commands::{
    Actor, CheckpointStore, Clock, CommandContext, CommandService, DomainUpcaster, EventStore,
    Metadata, NewProduct, ProcessManagers, ServiceConfig, Shop, SystemClock, UpcastingStore,
};
use commands::{CachedKeyStore, Erasure, KeyStore, PersonalDataStore, Pii, Pseudonyms};
use commands::{
    CachingLoader, Loader, LockingLoader, PaymentGateway, PaymentSimulator, Payments, StoreLoader,
};
use domain::{Money, Product, ProductId, StreamType};
use infrastructure::simulated::SimulatedGateway;
use infrastructure::sqlite::{SqliteCheckpointStore, SqliteKeyStore};
use infrastructure::sqlite::{SqliteEventStore, SqliteOptions, Synchronous};
use infrastructure::stripe::gateway::{SecretKey, StripeConfig, StripeGateway};
use infrastructure::stripe::lookup::ReadModelPaymentLookup;
use infrastructure::stripe::webhook::WebhookVerifier;
use projections::{ProjectionRunner, ReadModelStore};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use workers::payments::{PaymentRetryConfig, PaymentRetryWorker};
use workers::{
    CancellationToken, ExpirySweeper, FeedWorker, Health, LoopConfig, LoopContext,
    ProcessManagerConsumer,
};

pub const EVENTS_FILE: &str = "events.sqlite";
pub const READ_MODELS_FILE: &str = "readmodels.sqlite";
pub const WORKERS_FILE: &str = "workers.sqlite";
/// Held (advisory lock) by a running server, so `backbone rebuild` can refuse to run beside it.
pub const LOCK_FILE: &str = "backbone.lock";
/// The `file` channel's outbox under the data directory.
pub const OUTBOX_DIR: &str = "outbox";
/// The key that turns customer ids into stable pseudonyms for analysts without the `pii` scope.
pub const PSEUDONYM_SECRET_FILE: &str = "pseudonym.secret";

/// Health and checkpoint name of the process-manager consumer.
pub const PROCESS_MANAGERS: &str = "process-managers";

/// Configuration of the embedded deployment. Its secrets are in [`ApiSettings`], whose `Debug`
/// redacts them.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `synchronous=NORMAL` for the event store: faster, but a power loss may drop the latest
    /// acknowledged commits (a process crash does not). Off (FULL) by default.
    pub synchronous_normal: bool,
    /// Worker loop timing.
    pub loop_config: LoopConfig,
    /// How long an order may stay unpaid before it expires (`--order-ttl`).
    pub order_ttl: Duration,
    /// Where notifications are delivered (`--notify`); the `file` channel's outbox defaults to
    /// `data_dir/outbox`.
    pub notify: crate::notify::NotifySettings,
    /// Tokens, payments and reads. Here an unset `jwt_secret` uses (or creates)
    /// `data_dir/jwt_secret`, an unset `pseudonym_secret` the data directory's
    /// `pseudonym.secret`, and without Stripe the webhook also accepts the simulated gateway's
    /// own secret (`data_dir/stripe_webhook_secret`).
    pub api: ApiSettings,
}

/// What the API is configured with on every backend: how it verifies tokens, whom it pays
/// through, and how it answers reads. Each backend says what an unset secret falls back to.
#[derive(Clone)]
pub struct ApiSettings {
    /// HS256 secret.
    pub jwt_secret: Option<String>,
    /// RS256 via JWKS instead of HS256.
    pub jwks_url: Option<String>,
    /// Required `iss` claim, if any.
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim value, if any.
    pub jwt_audience: Option<String>,
    /// Seed the demo catalog on start (existing products are left alone).
    pub demo_catalog: bool,
    /// Real Stripe, or `None` to simulate (`main` allows that on AWS only with
    /// `--payments simulated`).
    pub stripe: Option<StripeSettings>,
    /// Webhook signing secrets accepted on `/v1/webhooks/stripe` (`STRIPE_WEBHOOK_SECRET`:
    /// current first, then the previous one while rotating).
    pub webhook_secrets: Vec<String>,
    /// Catalog reads need a token (`--catalog-auth required`).
    pub catalog_auth_required: bool,
    /// How long a query with a `consistency` token waits at most (`--consistency-wait`).
    pub consistency_wait: Duration,
    /// The key of analysts' pseudonyms (`--pseudonym-secret`).
    pub pseudonym_secret: Option<String>,
    /// The claim tokens carry their role in (`--role-claim`), for example `cognito:groups`.
    pub role_claim: String,
    /// The least time between two fetches of the JWKS (`--jwks-min-refresh`).
    pub jwks_min_refresh: Duration,
}

impl Default for ApiSettings {
    /// HS256 without an explicit secret, the demo catalog, simulated payments, public catalog
    /// reads.
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwks_url: None,
            jwt_issuer: None,
            jwt_audience: None,
            demo_catalog: true,
            stripe: None,
            webhook_secrets: Vec::new(),
            catalog_auth_required: false,
            consistency_wait: crate::state::READ_YOUR_WRITES_WAIT,
            pseudonym_secret: None,
            role_claim: auth::DEFAULT_ROLE_CLAIM.to_owned(),
            jwks_min_refresh: auth::JwksPolicy::default().min_refresh,
        }
    }
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secrets never reach a log line.
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("ApiSettings")
            .field("jwt_secret", &redacted(&self.jwt_secret))
            .field("jwks_url", &self.jwks_url)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("demo_catalog", &self.demo_catalog)
            .field("stripe", &self.stripe)
            .field("webhook_secrets", &self.webhook_secrets.len())
            .field("catalog_auth_required", &self.catalog_auth_required)
            .field("consistency_wait", &self.consistency_wait)
            .field("pseudonym_secret", &redacted(&self.pseudonym_secret))
            .field("role_claim", &self.role_claim)
            .field("jwks_min_refresh", &self.jwks_min_refresh)
            .finish()
    }
}

impl ApiSettings {
    /// The token verifier: the JWKS at `jwks_url` when set, otherwise HS256 with the secret
    /// `hs256_secret` gives (each backend knows where that comes from); either way expecting
    /// the configured issuer, audience and role claim.
    pub(crate) async fn authenticator(
        &self,
        hs256_secret: impl FnOnce() -> anyhow::Result<String>,
    ) -> anyhow::Result<Authenticator> {
        let authenticator = match &self.jwks_url {
            Some(url) => jwks_authenticator(url, self.jwks_min_refresh).await?,
            None => Authenticator::hs256(hs256_secret()?.as_bytes()),
        };
        Ok(authenticator
            .expecting(self.jwt_issuer.clone(), self.jwt_audience.clone())
            .with_role_claim(self.role_claim.clone()))
    }
}

/// Stripe configuration (`STRIPE_SECRET_KEY`, `STRIPE_BASE_URL`).
#[derive(Clone)]
pub struct StripeSettings {
    pub secret_key: String,
    /// `https://api.stripe.com` by default; tests point it at a local fake.
    pub base_url: Option<String>,
}

impl std::fmt::Debug for StripeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeSettings")
            .field("secret_key", &"<redacted>")
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// How a process pays: `--payments` (`BACKBONE_PAYMENTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PaymentMode {
    /// Stripe (`STRIPE_SECRET_KEY`, and `STRIPE_BASE_URL` for a local fake).
    Stripe,
    /// The in-process simulator: test cards, no money moves.
    Simulated,
}

/// Chooses the payment provider of a process, the same way on every backend:
///
/// - `--payments simulated` simulates;
/// - otherwise a Stripe key means Stripe (`--payments stripe` without one is an error);
/// - with neither, the embedded backend simulates (and says so in one warning) and every other
///   place refuses to start: `real_required` names where that is, for the message.
pub fn choose_payments(
    mode: Option<PaymentMode>,
    secret_key: Option<String>,
    base_url: Option<String>,
    real_required: Option<&str>,
) -> anyhow::Result<Option<StripeSettings>> {
    let secret_key = secret_key.filter(|k| !k.trim().is_empty());
    match (mode, secret_key) {
        (Some(PaymentMode::Simulated), _) => {
            tracing::warn!("payments are simulated (--payments simulated): no money moves");
            Ok(None)
        }
        (_, Some(secret_key)) => Ok(Some(StripeSettings {
            secret_key,
            base_url: base_url.filter(|u| !u.trim().is_empty()),
        })),
        (Some(PaymentMode::Stripe), None) => {
            anyhow::bail!("--payments stripe needs STRIPE_SECRET_KEY (--stripe-secret-key)")
        }
        (None, None) => match real_required {
            Some(place) => anyhow::bail!(
                "{place} needs a payment gateway: set STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET \
                 (and STRIPE_BASE_URL for a local fake), or pass --payments simulated to simulate \
                 payments on purpose"
            ),
            None => {
                tracing::warn!(
                    "payments are simulated (no STRIPE_SECRET_KEY): test cards only, no money moves"
                );
                Ok(None)
            }
        },
    }
}

/// A process's payment gateway, and the simulator behind it when payments are simulated.
pub type GatewayPorts = (Arc<dyn PaymentGateway>, Option<Arc<dyn PaymentSimulator>>);

/// The payment gateway of a process: Stripe when `stripe` is set, otherwise the in-process
/// simulator, which is then also the simulator port of `POST /v1/payments/{id}/confirm`.
pub fn payment_gateway(stripe: Option<&StripeSettings>) -> anyhow::Result<GatewayPorts> {
    Ok(match stripe {
        Some(stripe) => {
            let mut settings = StripeConfig::new(SecretKey::new(stripe.secret_key.clone()));
            if let Some(url) = &stripe.base_url {
                settings = settings.with_base_url(url.clone());
            }
            let gateway = StripeGateway::new(settings).context("configuring the Stripe gateway")?;
            (Arc::new(gateway), None)
        }
        None => {
            let simulated = Arc::new(SimulatedGateway::new());
            (simulated.clone(), Some(simulated))
        }
    })
}

impl EmbeddedConfig {
    /// Defaults: listen on 127.0.0.1:8080, FULL sync, dev secret file, demo catalog.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            synchronous_normal: false,
            loop_config: LoopConfig::default(),
            order_ttl: workers::DEFAULT_ORDER_TTL,
            notify: crate::notify::NotifySettings::new(crate::notify::NotifyChannel::File),
            api: ApiSettings::default(),
        }
    }

    /// The outbox of the `file` channel: `--outbox`, or `data_dir/outbox`.
    pub fn outbox(&self) -> PathBuf {
        self.notify
            .outbox
            .clone()
            .unwrap_or_else(|| self.data_dir.join(OUTBOX_DIR))
    }

    /// The HS256 secret the server verifies with (explicit, or the data directory's file).
    pub fn hs256_secret(&self) -> anyhow::Result<String> {
        match &self.api.jwt_secret {
            Some(s) if !s.is_empty() => Ok(s.clone()),
            _ => auth::load_or_create_secret(&self.data_dir)
                .with_context(|| format!("reading the JWT secret in {}", self.data_dir.display())),
        }
    }
}

/// A running backbone: the state the HTTP API serves and the workers behind it. Built by
/// [`start_embedded`] or, for the AWS deployment, [`crate::compose_aws::start_aws`].
pub struct Embedded {
    pub state: AppState,
    pub cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The data directory's lock (embedded only).
    _lock: Option<std::fs::File>,
    /// Where the operations endpoints listen, when they have a listener of their own.
    ops: Option<SocketAddr>,
}

impl Embedded {
    /// A running backbone from its parts: `tasks` are stopped through `cancel` on shutdown.
    pub fn from_parts(
        state: AppState,
        cancel: CancellationToken,
        tasks: Vec<JoinHandle<()>>,
        lock: Option<std::fs::File>,
    ) -> Self {
        Self {
            state,
            cancel,
            tasks,
            _lock: lock,
            ops: None,
        }
    }

    /// Serves the operations endpoints (`/healthz`, `/readyz`, `/metrics`) on `listener` too,
    /// until shutdown; the API's own listener then serves no `/metrics`.
    pub fn with_ops_listener(mut self, listener: tokio::net::TcpListener) -> Self {
        self.ops = listener.local_addr().ok();
        let router = crate::ops::api_router(self.state.clone());
        self.tasks.push(tokio::spawn(crate::ops::serve(
            listener,
            router,
            self.cancel.clone(),
        )));
        self
    }

    /// Prints the CloudWatch metrics as EMF lines on stdout every `interval`, until shutdown
    /// ([`crate::emf`]).
    pub fn with_emf(mut self, stage: String, interval: Duration) -> Self {
        self.tasks.push(tokio::spawn(crate::emf::run(
            self.state.metrics.clone(),
            stage,
            interval,
            self.state.health.clone(),
            Some(self.state.store.clone()),
            self.cancel.clone(),
        )));
        self
    }

    /// The operations listener's address, when [`with_ops_listener`](Self::with_ops_listener)
    /// gave it one.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops
    }

    /// Stops the workers and waits for them; the stores close when the last state is dropped.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for task in self.tasks {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "worker task failed");
            }
        }
        tracing::info!("embedded backbone stopped");
    }
}

/// Takes the data directory's lock, failing when another server holds it.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let path = data_dir.join(LOCK_FILE);
    private_file(&path)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another backbone server is using {} (stop it first)",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// The event log of a data directory: the store every consumer uses and the customers' data
/// keys it seals personal data with.
#[derive(Clone)]
pub struct EventLog {
    /// Seals personal data on append, reveals it and upcasts on every read path.
    pub store: Arc<dyn EventStore>,
    pub keys: Arc<dyn KeyStore>,
}

/// How many customers' keys the embedded key cache keeps.
pub const KEY_CACHE_CAPACITY: usize = 100_000;

/// Creates `path` readable and writable by its owner only (0600), or narrows an existing file
/// to that. SQLite gives a database's `-wal` and `-shm` files the database file's mode, so they
/// follow.
pub fn private_file(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("narrowing the mode of {}", path.display()))?;
    }
    drop(file);
    Ok(())
}

/// Opens the event store of a data directory, with its key store (a table in the same file).
pub async fn open_event_store(
    data_dir: &Path,
    synchronous_normal: bool,
) -> anyhow::Result<EventLog> {
    let path = data_dir.join(EVENTS_FILE);
    private_file(&path)?;
    let options = SqliteOptions {
        synchronous: if synchronous_normal {
            Synchronous::Normal
        } else {
            Synchronous::Full
        },
        ..SqliteOptions::default()
    };
    let (store, keys) = tokio::task::spawn_blocking(move || {
        let store = SqliteEventStore::open(&path, options)?;
        let keys = SqliteKeyStore::open(&path)?;
        Ok::<_, commands::StoreError>((store, keys))
    })
    .await
    .context("opening the event store")??;
    // Only this process writes the data directory (it is locked), so cached keys never go
    // stale: an erasure here forgets them at once.
    let keys: Arc<dyn KeyStore> = Arc::new(CachedKeyStore::new(keys, KEY_CACHE_CAPACITY, None));
    Ok(EventLog {
        store: Arc::new(UpcastingStore::new(
            PersonalDataStore::new(store, Pii::new(keys.clone())),
            Arc::new(DomainUpcaster),
        )),
        keys,
    })
}

/// The pseudonym secret of a data directory (created on first use).
pub fn pseudonyms(data_dir: &Path) -> anyhow::Result<Pseudonyms> {
    let secret = auth::load_or_create_secret_file(&data_dir.join(PSEUDONYM_SECRET_FILE), "")
        .with_context(|| format!("reading the pseudonym secret in {}", data_dir.display()))?;
    Ok(Pseudonyms::new(secret.as_bytes()))
}

/// Opens the read models of a data directory: every projection's live generation.
pub async fn open_read_models(data_dir: &Path) -> anyhow::Result<Arc<dyn ReadModelStore>> {
    Ok(
        crate::read_models::open(data_dir, &projections::all_projections())
            .await?
            .models,
    )
}

/// Opens the checkpoints of a data directory's feed consumers that are not projections.
pub async fn open_worker_checkpoints(data_dir: &Path) -> anyhow::Result<Arc<dyn CheckpointStore>> {
    let path = data_dir.join(WORKERS_FILE);
    private_file(&path)?;
    Ok(Arc::new(
        tokio::task::spawn_blocking(move || SqliteCheckpointStore::open(&path))
            .await
            .context("opening the worker checkpoints")??,
    ))
}

/// Opens everything, starts one worker per projection plus the process managers, seeds the demo
/// catalog, and returns the state to serve.
pub async fn start_embedded(config: EmbeddedConfig) -> anyhow::Result<Embedded> {
    let data_dir = config.data_dir.clone();
    let lock = lock_data_dir(&data_dir)?;
    let EventLog { store, keys } = open_event_store(&data_dir, config.synchronous_normal).await?;
    let projections = projections::all_projections();
    let read_models = crate::read_models::open(&data_dir, &projections).await?;
    let models = read_models.models.clone();
    let checkpoints = open_worker_checkpoints(&data_dir).await?;
    let authenticator = config.api.authenticator(|| config.hs256_secret()).await?;

    let (gateway, simulator) = payment_gateway(config.api.stripe.as_ref())?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let service = command_service(store.clone(), clock.clone(), ServiceConfig::default());
    let erasure = Arc::new(Erasure::new(service.clone(), keys));
    let shop = Arc::new(Shop::new(service, gateway.clone()));
    let managers = Arc::new(ProcessManagers::new(shop.clone(), gateway.clone()));
    let webhooks = Arc::new(stripe_webhooks(
        &config,
        shop.clone(),
        gateway.clone(),
        models.clone(),
        clock.clone(),
    )?);

    let health = Health::default();
    let cancel = CancellationToken::new();
    let notify = store.commit_notifier();
    let context = LoopContext::new(health.clone(), cancel.clone(), config.loop_config.clone());
    let mut tasks = Vec::new();
    let mut rebuilds =
        workers::Rebuilds::new(health.clone()).with_generations(read_models.generations.clone());
    for projection in projections {
        let name = workers::projection_worker(projection.name());
        // Registered (at its checkpoint) before the task runs, so readiness and
        // read-your-writes waits see it from the first request on.
        health.register(&name);
        health.progressed(&name, models.checkpoint(projection.name()).await?.count());
        let runner = Arc::new(ProjectionRunner::new(
            store.clone(),
            models.clone(),
            projection,
            projections::runner::DEFAULT_BATCH,
        ));
        rebuilds.add(runner.clone());
        tasks.push(workers::spawn_projection(
            runner,
            notify.clone(),
            context.clone(),
        ));
    }
    health.register(PROCESS_MANAGERS);
    health.progressed(
        PROCESS_MANAGERS,
        checkpoints.get(PROCESS_MANAGERS).await?.count(),
    );
    let consumer = Arc::new(ProcessManagerConsumer::new(
        PROCESS_MANAGERS,
        store.clone(),
        checkpoints,
        managers,
        100,
    ));
    tasks.push(consumer.spawn(notify.clone(), context.clone()));

    // Creates provider intents that checkout could not (provider down), once they are due.
    let retry = Arc::new(PaymentRetryWorker::new(
        store.clone(),
        shop.clone(),
        clock.clone(),
        PaymentRetryConfig::default(),
    ));
    let retry_poll = LoopConfig {
        poll: Duration::from_secs(1),
        ..config.loop_config.clone()
    };
    tasks.push(retry.spawn(notify.clone(), context.with_config(retry_poll)));
    // Expires the orders left unpaid for the order TTL.
    let expiry = Arc::new(ExpirySweeper::new(
        shop.clone(),
        models.clone(),
        clock.clone(),
        config.order_ttl,
    ));
    tasks.push(workers::spawn_expiry(expiry, context.clone()));
    // Delivers the notifications.
    let mut notify = config.notify.clone();
    notify.outbox = Some(config.outbox());
    let delivery = notify.worker(shop.clone(), models.clone(), clock.clone(), None)?;
    tasks.push(workers::spawn_delivery(Arc::new(delivery), context.clone()));

    let rebuilds = Arc::new(rebuilds);
    let state = AppState::new(Parts {
        shop,
        store,
        models,
        clock,
        health,
        simulator,
        auth: Arc::new(authenticator),
        metrics: crate::metrics::prometheus(),
        webhooks,
        rebuilds: Some(rebuilds.clone()),
        catalog_auth_required: config.api.catalog_auth_required,
        consistency_wait: config.api.consistency_wait,
        erasure,
        pseudonyms: Arc::new(match &config.api.pseudonym_secret {
            Some(secret) if !secret.is_empty() => Pseudonyms::new(secret.as_bytes()),
            _ => pseudonyms(&data_dir)?,
        }),
    });
    let embedded = Embedded::from_parts(state, cancel, tasks, Some(lock));
    let outdated = &read_models.outdated;
    let embedded = finish_start(embedded, &rebuilds, outdated, config.api.demo_catalog).await?;
    tracing::info!(?config, "embedded backbone started");
    Ok(embedded)
}

/// An authenticator of RS256 tokens signed with the keys of the JWKS at `url`, fetched now and
/// again at most every `min_refresh`.
pub(crate) async fn jwks_authenticator(
    url: &str,
    min_refresh: Duration,
) -> anyhow::Result<Authenticator> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the JWKS client")?;
    let policy = crate::auth::JwksPolicy {
        min_refresh,
        ..crate::auth::JwksPolicy::default()
    };
    Authenticator::jwks_with(url, client, policy)
        .await
        .with_context(|| format!("fetching the JWKS from {url}"))
}

/// The last steps of starting a backbone, on every backend: rebuilds the `outdated` projections
/// and seeds the demo catalog when asked (a failed seed stops what was started).
pub(crate) async fn finish_start(
    running: Embedded,
    rebuilds: &Arc<workers::Rebuilds>,
    outdated: &[&'static str],
    demo_catalog: bool,
) -> anyhow::Result<Embedded> {
    rebuilds.start_outdated(outdated);
    if demo_catalog {
        if let Err(err) = seed_demo_catalog(&running.state.shop).await {
            running.shutdown().await;
            return Err(err);
        }
    }
    Ok(running)
}

/// The webhook endpoint: real Stripe secrets when configured. In the embedded default the
/// endpoint accepts events signed with the simulated provider's own secret (created in the data
/// directory on first use, so local tools and tests can sign events for it), plus any configured
/// secret; the simulated provider's own outcomes need no signature (see [`crate::payments`]).
pub fn stripe_webhooks(
    config: &EmbeddedConfig,
    shop: Arc<Shop>,
    gateway: Arc<dyn PaymentGateway>,
    models: Arc<dyn ReadModelStore>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<StripeWebhooks> {
    let mut secrets = config.api.webhook_secrets.clone();
    if config.api.stripe.is_none() {
        let secret = auth::load_or_create_secret_file(
            &config.data_dir.join(SIM_WEBHOOK_SECRET_FILE),
            "whsec_",
        )
        .context("reading the simulated gateway's webhook secret")?;
        secrets.push(secret);
    }
    webhook_endpoint(
        secrets,
        config.api.stripe.is_some(),
        shop,
        gateway,
        models,
        clock,
    )
}

/// The webhook endpoint of any backend, verifying with `secrets` (`STRIPE_WEBHOOK_SECRET`, then
/// the previous one while rotating). With Stripe they are required. A simulating process with
/// none verifies against a random per-process secret: nothing outside signs for it, and the
/// simulated provider's own outcomes need no signature (see [`crate::payments`]).
pub fn webhook_endpoint(
    mut secrets: Vec<String>,
    stripe: bool,
    shop: Arc<Shop>,
    gateway: Arc<dyn PaymentGateway>,
    models: Arc<dyn ReadModelStore>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<StripeWebhooks> {
    secrets.retain(|s| !s.trim().is_empty());
    if secrets.is_empty() {
        if stripe {
            anyhow::bail!("STRIPE_WEBHOOK_SECRET is required when STRIPE_SECRET_KEY is set");
        }
        secrets.push(format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>())));
    }
    let lookup = Arc::new(ReadModelPaymentLookup::new(models));
    let payments = Arc::new(Payments::new(shop, gateway, lookup));
    let verifier = WebhookVerifier::new(secrets).context("configuring the webhook secrets")?;
    Ok(StripeWebhooks::new(verifier, payments, clock))
}

/// The simulated provider's webhook signing secret, inside the data directory.
pub const SIM_WEBHOOK_SECRET_FILE: &str = "stripe_webhook_secret";

/// The demo catalog: (id, name, category, price in EUR, stock).
pub const DEMO_CATALOG: &[(&str, &str, &str, &str, u32)] = &[
    (
        "prd_espresso",
        "Espresso beans 1 kg",
        "coffee",
        "24.90",
        100,
    ),
    ("prd_filter", "Filter coffee 500 g", "coffee", "12.50", 100),
    ("prd_decaf", "Decaf beans 500 g", "coffee", "13.90", 50),
    ("prd_grinder", "Burr grinder", "equipment", "149.00", 10),
    ("prd_kettle", "Gooseneck kettle", "equipment", "59.00", 20),
    ("prd_scale", "Brew scale", "equipment", "29.90", 15),
    ("prd_sencha", "Sencha green tea 100 g", "tea", "8.50", 40),
    ("prd_earl_grey", "Earl Grey 100 g", "tea", "7.90", 3),
];

/// Creates the demo products that do not exist yet.
pub async fn seed_demo_catalog(shop: &Shop) -> anyhow::Result<()> {
    let mut created = 0;
    for (id, name, category, price, stock) in DEMO_CATALOG {
        let product = shop.service().load::<Product>(id).await?;
        if product.state.exists() {
            continue;
        }
        let ctx = CommandContext {
            metadata: Metadata {
                correlation_id: "seed-demo-catalog".into(),
                causation_id: None,
                actor: Actor {
                    subject: "system".into(),
                    role: "system".into(),
                },
                request_id: None,
                command_id: None,
                traceparent: None,
            },
            // A concurrent seeder (another start on the same data) replays instead of failing.
            idempotency: Some(commands::IdempotencyKey::new(
                format!("seed:product:{id}"),
                id.as_bytes(),
            )),
        };
        shop.create_product(
            &ctx,
            NewProduct {
                product_id: ProductId::parse(id)?,
                name: (*name).to_string(),
                category: (*category).to_string(),
                price: Money::parse(price, "EUR")?,
                initial_stock: *stock,
            },
        )
        .await?;
        created += 1;
    }
    if created > 0 {
        tracing::info!(created, "seeded the demo catalog");
    }
    Ok(())
}

/// How many aggregate states a process keeps in memory between commands.
const STATE_CACHE: usize = 10_000;

/// The command service of every backend, with the loader decorators chosen here:
///
/// - a state cache ([`CachingLoader`]): commands decide on the states the last commits reached
///   instead of reading and folding their streams again; a stale state costs a retry, never a
///   wrong answer;
/// - product locks ([`LockingLoader`]): checkouts of this process that reserve the same product
///   queue on it instead of conflicting and retrying (a flash sale).
pub fn command_service(
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
) -> Arc<CommandService> {
    let loader: Arc<dyn Loader> = Arc::new(StoreLoader::new(store.clone()));
    let loader: Arc<dyn Loader> = Arc::new(CachingLoader::new(loader, STATE_CACHE));
    let loader: Arc<dyn Loader> = Arc::new(LockingLoader::new(loader, vec![StreamType::Product]));
    Arc::new(CommandService::with_loader(store, loader, clock, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Option<String> {
        Some("sk_test_123".into())
    }

    #[test]
    fn neither_backend_configuration_prints_its_secrets() {
        let secrets = [
            "jwt-secret-1",
            "pseudonym-secret-1",
            "sk_test_123",
            "whsec_1",
        ];
        let api = ApiSettings {
            jwt_secret: Some(secrets[0].into()),
            pseudonym_secret: Some(secrets[1].into()),
            stripe: Some(StripeSettings {
                secret_key: secrets[2].into(),
                base_url: None,
            }),
            webhook_secrets: vec![secrets[3].into()],
            ..ApiSettings::default()
        };
        let embedded = EmbeddedConfig {
            api: api.clone(),
            ..EmbeddedConfig::new("data")
        };
        let aws = crate::compose_aws::AwsServeConfig {
            api,
            ..crate::compose_aws::AwsServeConfig::new("stage")
        };
        for printed in [format!("{embedded:?}"), format!("{aws:?}")] {
            for secret in secrets {
                assert!(!printed.contains(secret), "{secret} in {printed}");
            }
        }
    }

    #[test]
    fn a_stripe_key_means_stripe_on_every_backend_unless_simulation_is_asked_for() {
        for required in [None, Some("serve --backend aws")] {
            let chosen =
                choose_payments(None, key(), Some("http://127.0.0.1:8420".into()), required)
                    .unwrap()
                    .expect("stripe");
            assert_eq!(chosen.secret_key, "sk_test_123");
            assert_eq!(chosen.base_url.as_deref(), Some("http://127.0.0.1:8420"));
            let forced = choose_payments(Some(PaymentMode::Stripe), key(), None, required).unwrap();
            assert!(forced.is_some_and(|s| s.base_url.is_none()));
            assert!(
                choose_payments(Some(PaymentMode::Simulated), key(), None, required)
                    .unwrap()
                    .is_none()
            );
        }
    }

    #[test]
    fn without_a_key_only_the_embedded_backend_simulates_by_default() {
        assert!(choose_payments(None, None, None, None).unwrap().is_none());
        assert!(choose_payments(None, Some("  ".into()), None, None)
            .unwrap()
            .is_none());
        let refused = choose_payments(None, None, None, Some("serve --backend aws"))
            .unwrap_err()
            .to_string();
        for named in [
            "serve --backend aws",
            "STRIPE_SECRET_KEY",
            "STRIPE_WEBHOOK_SECRET",
            "--payments simulated",
        ] {
            assert!(refused.contains(named), "{named} missing from: {refused}");
        }
        assert!(
            choose_payments(Some(PaymentMode::Simulated), None, None, Some("aws"))
                .unwrap()
                .is_none()
        );
        let insisted = choose_payments(Some(PaymentMode::Stripe), None, None, None).unwrap_err();
        assert!(insisted.to_string().contains("STRIPE_SECRET_KEY"));
    }

    #[test]
    fn a_stripe_gateway_has_no_simulator_behind_it_and_its_key_is_never_printed() {
        let stripe = StripeSettings {
            secret_key: "sk_live_secret".into(),
            base_url: None,
        };
        assert!(!format!("{stripe:?}").contains("sk_live_secret"));
        let (_, simulator) = payment_gateway(Some(&stripe)).unwrap();
        assert!(simulator.is_none(), "no simulator behind a Stripe gateway");
        let (_, simulator) = payment_gateway(None).unwrap();
        assert!(simulator.is_some());
    }
}
