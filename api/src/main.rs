#![forbid(unsafe_code)]
//! `backbone`: the order backbone (serve, embedded or on AWS), the AWS relay and queue
//! workers, provisioning, dev tokens, projection rebuilds and event export. Every flag can also
//! be set through its `BACKBONE_*` environment variable; the AWS subcommands read the standard
//! AWS environment (region, credentials, `AWS_ENDPOINT_URL` for local emulators).

use anyhow::Context;
use api::auth::{self, Role};
use api::compose::{self, ApiSettings, EmbeddedConfig};
use api::compose_aws::{self, AwsOptions, AwsServeConfig, AwsStage, AwsWorkerConfig};
use api::export::{self, ExportFilter, StreamFilter};
use api::telemetry::LogFormat;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use infrastructure::aws::provision::{StackChange, StackSpec};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "backbone",
    version,
    about = "Event-sourced order backbone (embedded default, or AWS)"
)]
struct Cli {
    /// Log format: readable text (dev) or JSON lines (production). Filter with RUST_LOG.
    #[arg(long, env = "BACKBONE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Export spans over OTLP/HTTP to this collector base URL (`/v1/traces` is appended), for
    /// example `http://127.0.0.1:4318`. Requests and the projection work they cause share a
    /// trace, across processes. Off when unset.
    #[arg(long, env = "BACKBONE_OTLP_ENDPOINT", value_parser = api::telemetry::parse_otlp_endpoint, global = true)]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SyncMode {
    /// fsync every commit: an acknowledged commit survives power loss.
    Full,
    /// Faster; a power loss (not a process crash) may lose the latest commits.
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// One process, SQLite files, in-process fan-out.
    Embedded,
    /// DynamoDB, DynamoDB Streams, EventBridge and SQS.
    Aws,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Toggle {
    /// On when an endpoint URL is configured (a local emulator).
    Auto,
    On,
    Off,
}

/// Which AWS stage, and how to talk to it.
#[derive(Debug, Args)]
struct AwsArgs {
    /// Stage: every resource is named `backbone-<stage>-...` (at most 20 lowercase letters,
    /// digits and dashes).
    #[arg(long, env = "BACKBONE_STAGE", default_value = "dev")]
    stage: String,
    /// Workarounds for the local emulator's DynamoDB Streams (fresh iterators, records checked
    /// against the table).
    #[arg(long, env = "BACKBONE_EMULATOR_COMPAT", value_enum, default_value_t = Toggle::Auto)]
    emulator_compat: Toggle,
    /// Wrap the customers' data keys with this KMS key (id, ARN or alias). Every process of a
    /// stage must use the same setting.
    #[arg(long, env = "BACKBONE_KMS_KEY_ID")]
    kms_key_id: Option<String>,
}

#[derive(Debug, Args)]
struct DataArg {
    /// Data directory (event store, read models, checkpoints, dev JWT secret).
    #[arg(long = "data", env = "BACKBONE_DATA", default_value = "./data")]
    data: PathBuf,
}

// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (embedded: SQLite with its workers; `--backend aws`: DynamoDB, plus
    /// the relay and queue workers in process with `--with-workers`).
    Serve(ServeArgs),
    /// Mint an HS256 token for the data directory's secret; prints only the token.
    Token(TokenArgs),
    /// Exit 0 when `url` answers 2xx within the timeout, 1 otherwise: a container's health check
    /// without curl in the image.
    Probe(ProbeArgs),
    /// Rebuild one projection (or all) from the event store. Stop the server first.
    Rebuild(RebuildArgs),
    /// Generate a realistic shop history (carts, checkouts, payments, refunds, disputes,
    /// expiries), the same for the same `--seed`, for demos, benchmarks and load tests. On AWS,
    /// into a stage whose payments are simulated: the seeded intents exist only in the simulator.
    Seed(SeedArgs),
    /// Event history tools.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// AWS: deploy the stage's CloudFormation stack (the built-in
    /// `infrastructure/cloudformation/backbone.yaml`): create it, or update it when it exists.
    Provision(ProvisionArgs),
    /// AWS: relay the events table's stream to the feed index and the event bus.
    Relay(RelayArgs),
    /// AWS: consume one group's queue (catalog, order-history, notifications, support,
    /// process-managers).
    Worker(WorkerArgs),
}

#[derive(Debug, Args)]
struct ProvisionArgs {
    #[command(flatten)]
    aws: AwsArgs,
    /// Stack name (default `backbone-<stage>`).
    #[arg(long, env = "BACKBONE_STACK_NAME")]
    stack_name: Option<String>,
    /// A template parameter besides Stage, for example `AlarmEmail=oncall@example.com`;
    /// repeat for more.
    #[arg(long = "parameter", value_name = "KEY=VALUE", value_parser = parse_parameter)]
    parameters: Vec<(String, String)>,
    /// The feed's partitions (1 to 65536), fixed when the stage is created: each takes about
    /// 250 events/s of up to 1 KB (see the README's capacity model). Default 4 for a new stage;
    /// an existing stage keeps its own, and asking it for another count is an error.
    #[arg(long, env = "BACKBONE_FEED_PARTITIONS")]
    feed_partitions: Option<u32>,
}

#[derive(Debug, Args)]
struct ProbeArgs {
    /// For example `http://127.0.0.1:8080/readyz`.
    #[arg(default_value = "http://127.0.0.1:8080/readyz")]
    url: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = auth::parse_ttl)]
    timeout: Duration,
}

#[derive(Debug, Args)]
struct OpsArg {
    /// Serve `/healthz`, `/readyz` and `/metrics` on this address (for `serve`: `/metrics` then
    /// leaves the API's listener).
    #[arg(long, env = "BACKBONE_OPS_LISTEN")]
    ops_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct EmfArg {
    /// Print CloudWatch metrics as EMF lines on stdout (auto: on the AWS backend).
    #[arg(long, env = "BACKBONE_EMF", value_enum, default_value_t = Toggle::Auto)]
    emf: Toggle,
    /// How often.
    #[arg(long, env = "BACKBONE_EMF_INTERVAL", default_value = "60s", value_parser = auth::parse_ttl)]
    emf_interval: Duration,
}

impl EmfArg {
    /// The interval, when EMF lines are on (`aws`: whether the process runs on AWS).
    fn interval(&self, aws: bool) -> Option<Duration> {
        let on = match self.emf {
            Toggle::On => true,
            Toggle::Off => false,
            Toggle::Auto => aws,
        };
        on.then_some(self.emf_interval)
    }
}

#[derive(Debug, Args)]
struct RelayArgs {
    /// How long a relay's shard leases last: when relays share the stream, the longest a dead
    /// relay's shards wait for another to take them over.
    #[arg(long, env = "BACKBONE_RELAY_LEASE_TTL", default_value = "30s", value_parser = auth::parse_ttl)]
    lease_ttl: Duration,
    #[command(flatten)]
    process: StageProcessArgs,
}

/// A long-running process of an AWS stage (the relay, a queue worker): its stage, its
/// operations listener and its CloudWatch metrics.
#[derive(Debug, Args)]
struct StageProcessArgs {
    #[command(flatten)]
    aws: AwsArgs,
    #[command(flatten)]
    ops: OpsArg,
    #[command(flatten)]
    emf: EmfArg,
}

impl StageProcessArgs {
    /// [`run_until_signal`] with this process's ops listener and its EMF metrics named after
    /// the stage.
    async fn run_until_signal(
        &self,
        spawn: impl FnOnce(workers::Health, workers::CancellationToken) -> tokio::task::JoinHandle<()>,
    ) -> anyhow::Result<()> {
        let emf = self.emf.interval(true).map(|i| (self.aws.stage.clone(), i));
        run_until_signal(&self.ops, emf, spawn).await
    }
}

#[derive(Debug, Args)]
struct WorkerArgs {
    /// The consumer group.
    #[arg(value_parser = parse_group)]
    group: infrastructure::aws::ConsumerGroup,
    #[command(flatten)]
    process: StageProcessArgs,
    /// Long-poll wait of each receive, in seconds (at most 20); also the longest a stopping
    /// worker waits for its last receive.
    #[arg(long, env = "BACKBONE_WORKER_WAIT_SECS", default_value_t = 10)]
    wait_secs: u64,
    /// The process managers call the gateway (refunds): they need Stripe or
    /// `--payments simulated`.
    #[command(flatten)]
    payments: PaymentArgs,
    /// process-managers: how long an order may stay unpaid before this worker expires it.
    #[arg(long, env = "BACKBONE_ORDER_TTL", default_value = "30m", value_parser = auth::parse_ttl)]
    order_ttl: Duration,
    /// notifications: where this worker delivers the notifications.
    #[command(flatten)]
    notify: NotifyArgs,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BACKBONE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    ops: OpsArg,
    #[command(flatten)]
    emf: EmfArg,
    #[command(flatten)]
    data: DataArg,
    /// Event store durability.
    #[arg(long, env = "BACKBONE_SYNCHRONOUS", value_enum, default_value_t = SyncMode::Full)]
    synchronous: SyncMode,
    /// HS256 secret (default: the data directory's `jwt_secret`, created on first use).
    #[arg(long, env = "BACKBONE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// The key of the pseudonyms analysts see without the `pii` scope (embedded: the data
    /// directory's `pseudonym.secret`; AWS: derived from the JWT secret when unset).
    #[arg(long, env = "BACKBONE_PSEUDONYM_SECRET", hide_env_values = true)]
    pseudonym_secret: Option<String>,
    /// The claim that carries the caller's role: `role`, or a provider's, for example
    /// `cognito:groups` (the most privileged group that names a role; none: a customer).
    #[arg(long, env = "BACKBONE_ROLE_CLAIM", default_value = auth::DEFAULT_ROLE_CLAIM)]
    role_claim: String,
    /// The least time between two fetches of the JWKS: after its `max-age`, or for a token
    /// signed with an unknown `kid`.
    #[arg(long, env = "BACKBONE_JWKS_MIN_REFRESH", default_value = "60s", value_parser = auth::parse_ttl)]
    jwks_min_refresh: Duration,
    /// Verify RS256 tokens with this JWKS URL instead of HS256 (for example Cognito's).
    #[arg(long, env = "BACKBONE_JWKS_URL")]
    jwks_url: Option<String>,
    /// Require tokens to carry this `iss` claim (for Cognito: the user pool's issuer URL).
    #[arg(long, env = "BACKBONE_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Require tokens' `aud` claim to contain this value (the API's audience or client id).
    #[arg(long, env = "BACKBONE_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Do not seed the demo catalog.
    #[arg(long, env = "BACKBONE_NO_DEMO")]
    no_demo: bool,
    /// Where events and read models live.
    #[arg(long, env = "BACKBONE_BACKEND", value_enum, default_value_t = Backend::Embedded)]
    backend: Backend,
    #[command(flatten)]
    aws: AwsArgs,
    /// aws: also run the relay and the five queue consumers in this process (still through the
    /// stream, the bus and the queues).
    #[arg(long, env = "BACKBONE_WITH_WORKERS")]
    with_workers: bool,
    /// aws: create the stage's resources first.
    #[arg(long, env = "BACKBONE_PROVISION")]
    provision: bool,
    #[command(flatten)]
    payments: PaymentArgs,
    /// How long an order may stay unpaid before it expires, releasing its stock (for example
    /// `30m`, `2h`).
    #[arg(long, env = "BACKBONE_ORDER_TTL", default_value = "30m", value_parser = auth::parse_ttl)]
    order_ttl: Duration,
    /// Whether catalog reads need a token: `public` (a storefront shows the catalog before
    /// anyone signs in) or `required`.
    #[arg(long, env = "BACKBONE_CATALOG_AUTH", value_enum, default_value_t = CatalogAuth::Public)]
    catalog_auth: CatalogAuth,
    /// How long a query given a `consistency` token waits at most for its read model before it
    /// answers anyway (the AWS fan-out may take longer than the embedded one).
    #[arg(long, env = "BACKBONE_CONSISTENCY_WAIT", default_value = "2s", value_parser = auth::parse_ttl)]
    consistency_wait: Duration,
    #[command(flatten)]
    notify: NotifyArgs,
}

impl ServeArgs {
    /// The API's settings, taken from the same flags on every backend; `stripe` is the
    /// backend's choice of payment provider ([`PaymentArgs::stripe`]).
    fn api_settings(&self, stripe: Option<compose::StripeSettings>) -> ApiSettings {
        ApiSettings {
            jwt_secret: self.jwt_secret.clone(),
            jwks_url: self.jwks_url.clone(),
            jwt_issuer: self.jwt_issuer.clone(),
            jwt_audience: self.jwt_audience.clone(),
            demo_catalog: !self.no_demo,
            stripe,
            webhook_secrets: self.payments.webhook_secrets(),
            catalog_auth_required: self.catalog_auth == CatalogAuth::Required,
            consistency_wait: self.consistency_wait,
            pseudonym_secret: self.pseudonym_secret.clone(),
            role_claim: self.role_claim.clone(),
            jwks_min_refresh: self.jwks_min_refresh,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CatalogAuth {
    Public,
    Required,
}

/// Where notifications are delivered, the same settings for every process and backend.
#[derive(Debug, Args)]
struct NotifyArgs {
    /// The channel: `file` (one `.eml` per message in `--outbox`; the embedded default),
    /// `smtp` (`--smtp-url`) or `ses` (Amazon SES; the aws default).
    #[arg(long, env = "BACKBONE_NOTIFY", value_enum)]
    notify: Option<api::notify::NotifyChannel>,
    /// The sender of every message, for example `Shop <orders@shop.example>` (with SES, a
    /// verified identity).
    #[arg(long, env = "BACKBONE_MAIL_FROM", default_value = api::notify::DEFAULT_MAIL_FROM)]
    mail_from: String,
    /// The SMTP server: `smtp://host:port`, `smtp://host:port?tls=required` (STARTTLS) or
    /// `smtps://user:password@host` (implicit TLS).
    #[arg(long, env = "BACKBONE_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// The `file` channel's directory (embedded default: `<data>/outbox`).
    #[arg(long, env = "BACKBONE_OUTBOX")]
    outbox: Option<PathBuf>,
    /// Attempts to deliver a notification before it is failed (retried with exponential
    /// backoff from one minute).
    #[arg(long, env = "BACKBONE_NOTIFY_ATTEMPTS", default_value_t = domain::RetryPolicy::default().max_attempts,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    notify_attempts: u32,
    /// The wait after a notification's first failed attempt, doubled after each next one (at
    /// most an hour apart).
    #[arg(long, env = "BACKBONE_NOTIFY_BACKOFF", default_value = "1m", value_parser = auth::parse_ttl)]
    notify_backoff: Duration,
}

impl NotifyArgs {
    /// The settings, with `default` as the channel when none is given.
    fn settings(&self, default: api::notify::NotifyChannel) -> api::notify::NotifySettings {
        api::notify::NotifySettings {
            channel: self.notify.unwrap_or(default),
            from: self.mail_from.clone(),
            smtp_url: self.smtp_url.clone(),
            outbox: self.outbox.clone(),
            max_attempts: self.notify_attempts,
            backoff: self.notify_backoff,
        }
    }
}

/// The payment provider, the same settings for every process and backend.
#[derive(Debug, Args)]
struct PaymentArgs {
    /// `simulated` simulates payments on purpose (the only way to on the aws backend);
    /// `stripe` insists on Stripe. Unset: Stripe when a key is set, otherwise the embedded
    /// backend simulates and the aws backend refuses to start.
    #[arg(long, env = "BACKBONE_PAYMENTS", value_enum)]
    payments: Option<compose::PaymentMode>,
    /// Stripe secret key.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    stripe_secret_key: Option<String>,
    /// Stripe API base URL (a local fake such as localstripe).
    #[arg(long, env = "STRIPE_BASE_URL")]
    stripe_base_url: Option<String>,
    /// Webhook signing secret of the Stripe endpoint (`whsec_...`); required with a Stripe key.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    stripe_webhook_secret: Option<String>,
    /// The previous webhook secret, accepted too while rotating.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET_PREVIOUS", hide_env_values = true)]
    stripe_webhook_secret_previous: Option<String>,
}

impl PaymentArgs {
    /// Stripe, or `None` to simulate; `real_required` names where simulating needs the flag.
    fn stripe(
        &self,
        real_required: Option<&str>,
    ) -> anyhow::Result<Option<compose::StripeSettings>> {
        compose::choose_payments(
            self.payments,
            self.stripe_secret_key.clone(),
            self.stripe_base_url.clone(),
            real_required,
        )
    }

    fn webhook_secrets(&self) -> Vec<String> {
        [
            self.stripe_webhook_secret.clone(),
            self.stripe_webhook_secret_previous.clone(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Subject: a customer id for customers, a staff name otherwise.
    #[arg(long, env = "BACKBONE_TOKEN_SUB")]
    sub: String,
    /// customer, support, admin or analyst.
    #[arg(long, env = "BACKBONE_TOKEN_ROLE", value_parser = parse_role)]
    role: Role,
    /// Lifetime, for example 24h, 30m, 7d.
    #[arg(long, env = "BACKBONE_TOKEN_TTL", default_value = "24h", value_parser = auth::parse_ttl)]
    ttl: Duration,
    /// OAuth scopes, space-separated: `pii` lets an analyst read personal data.
    #[arg(long, env = "BACKBONE_TOKEN_SCOPE")]
    scope: Option<String>,
    #[command(flatten)]
    data: DataArg,
    /// HS256 secret (default: the data directory's `jwt_secret`).
    #[arg(long, env = "BACKBONE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
}

#[derive(Debug, Args)]
struct RebuildArgs {
    /// catalog, order_history, notifications, support, or all.
    projection: String,
    #[command(flatten)]
    data: DataArg,
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Write events as NDJSON to stdout (one envelope with its global_position per line).
    Export(ExportArgs),
}

#[derive(Debug, Args)]
struct SeedArgs {
    /// Orders to place (abandoned carts come on top).
    #[arg(long, env = "BACKBONE_SEED_ORDERS", default_value_t = 1_000)]
    orders: u64,
    /// The random seed: the same seed gives the same shop.
    #[arg(long, env = "BACKBONE_SEED", default_value_t = 1)]
    seed: u64,
    /// Catalog size.
    #[arg(long, env = "BACKBONE_SEED_PRODUCTS", default_value_t = 50,
        value_parser = clap::value_parser!(u16).range(1..))]
    products: u16,
    /// When the simulated shop opens (RFC 3339); its clock moves on from there.
    #[arg(long, env = "BACKBONE_SEED_START")]
    start: Option<DateTime<Utc>>,
    #[command(flatten)]
    store: EventStoreArgs,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// Only events after this feed cursor (the `feed_cursor` of an exported line).
    #[arg(long, env = "BACKBONE_EXPORT_AFTER")]
    after: Option<commands::FeedCursor>,
    /// Occurred at or after (RFC 3339).
    #[arg(long, env = "BACKBONE_EXPORT_FROM")]
    from: Option<DateTime<Utc>>,
    /// Occurred at or before (RFC 3339).
    #[arg(long, env = "BACKBONE_EXPORT_TO")]
    to: Option<DateTime<Utc>>,
    /// Only this event type, for example OrderPlaced.
    #[arg(long = "type", env = "BACKBONE_EXPORT_TYPE")]
    event_type: Option<String>,
    /// A stream type (order) or one stream (order:ord_123).
    #[arg(long, env = "BACKBONE_EXPORT_STREAM", value_parser = StreamFilter::parse)]
    stream: Option<StreamFilter>,
    /// At most this many events.
    #[arg(long, env = "BACKBONE_EXPORT_LIMIT")]
    limit: Option<u64>,
    #[command(flatten)]
    store: EventStoreArgs,
}

/// The event store a command outside the server works on.
#[derive(Debug, Args)]
struct EventStoreArgs {
    #[command(flatten)]
    data: DataArg,
    /// Where the events live: the embedded data directory, or the AWS stage (its durable feed).
    #[arg(long, env = "BACKBONE_BACKEND", value_enum, default_value_t = Backend::Embedded)]
    backend: Backend,
    #[command(flatten)]
    aws: AwsArgs,
}

fn parse_group(s: &str) -> Result<infrastructure::aws::ConsumerGroup, String> {
    infrastructure::aws::ConsumerGroup::parse(s).ok_or_else(|| {
        "expected catalog, order-history, notifications, support or process-managers".to_string()
    })
}

fn parse_parameter(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() && key != "Stage" => {
            Ok((key.to_owned(), value.to_owned()))
        }
        Some(("Stage", _)) => Err("Stage comes from --stage".to_string()),
        _ => Err("expected KEY=VALUE".to_string()),
    }
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "expected customer, support, admin or analyst".to_string())
}

impl Command {
    /// The process's name in the trace collector.
    fn service(&self) -> String {
        match self {
            Command::Serve(_) => "backbone-serve".into(),
            Command::Relay(_) => "backbone-relay".into(),
            Command::Worker(args) => format!("backbone-worker-{}", args.group.as_str()),
            _ => "backbone".into(),
        }
    }

    /// The log filter when RUST_LOG is unset: a seed's thousands of commands would bury its
    /// progress bar at `info`.
    fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Seed(_) => "warn",
            _ => "info",
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Dropped when main returns: the spans still buffered are sent then.
    let _telemetry = api::telemetry::init(
        cli.log_format,
        cli.otlp_endpoint.as_deref(),
        &cli.command.service(),
        cli.command.default_log_filter(),
    )?;
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Token(args) => token(args),
        Command::Probe(args) => probe(args).await,
        Command::Rebuild(args) => rebuild(args).await,
        Command::Seed(args) => seed(args).await,
        Command::Events {
            command: EventsCommand::Export(args),
        } => export_events(args).await,
        Command::Provision(args) => provision(args).await,
        Command::Relay(args) => relay(args).await,
        Command::Worker(args) => worker(args).await,
    }
}

impl AwsArgs {
    /// The stage's adapters, on the SDK configuration of [`aws_setup`].
    async fn open_stage(&self) -> AwsStage {
        let (sdk, options) = aws_setup(self).await;
        AwsStage::new(&sdk, &self.stage, options)
    }
}

/// The SDK config from the standard AWS environment, and the stage's adapter options.
async fn aws_setup(args: &AwsArgs) -> (aws_config::SdkConfig, AwsOptions) {
    let sdk = infrastructure::aws::config_loader().load().await;
    let emulator_compat = match args.emulator_compat {
        Toggle::On => true,
        Toggle::Off => false,
        Toggle::Auto => sdk.endpoint_url().is_some(),
    };
    (
        sdk,
        AwsOptions {
            emulator_compat,
            kms_key_id: args.kms_key_id.clone(),
            ..AwsOptions::default()
        },
    )
}

async fn provision(args: ProvisionArgs) -> anyhow::Result<()> {
    let stage = args.aws.open_stage().await;
    let mut spec = StackSpec::for_stage(&args.aws.stage);
    if let Some(name) = args.stack_name {
        spec.stack_name = name;
    }
    for (key, value) in args.parameters {
        spec = spec.with_parameter(key, value);
    }
    spec.feed_partitions = args.feed_partitions;
    let provisioned = stage.provision(&spec).await?;
    eprintln!(
        "stack {} {} for stage {}",
        spec.stack_name,
        match provisioned.change {
            StackChange::Created => "created",
            StackChange::Updated => "updated",
            StackChange::Unchanged => "unchanged",
        },
        args.aws.stage,
    );
    Ok(())
}

/// Runs one worker loop until SIGTERM or ctrl-c.
async fn run_until_signal(
    ops: &OpsArg,
    emf: Option<(String, Duration)>,
    spawn: impl FnOnce(workers::Health, workers::CancellationToken) -> tokio::task::JoinHandle<()>,
) -> anyhow::Result<()> {
    let cancel = workers::CancellationToken::new();
    let health = workers::Health::default();
    let emf = emf.map(|(stage, interval)| {
        tokio::spawn(api::emf::run(
            api::metrics::prometheus(),
            stage,
            interval,
            health.clone(),
            None,
            cancel.clone(),
        ))
    });
    let listener = match ops.ops_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the ops listener {addr}"))?,
        ),
        None => None,
    };
    // The loops register with `health` as they are spawned, before /readyz can be asked: a
    // process with nothing registered yet would be vacuously ready.
    let task = spawn(health.clone(), cancel.clone());
    let ops = listener.map(|listener| {
        let router = api::ops::process_router(health, api::metrics::prometheus());
        tokio::spawn(api::ops::serve(listener, router, cancel.clone()))
    });
    api::serve::shutdown_signal().await;
    tracing::info!("stopping");
    cancel.cancel();
    task.await.context("worker task")?;
    if let Some(ops) = ops {
        ops.await.context("ops listener")?;
    }
    if let Some(emf) = emf {
        emf.await.context("metrics lines")?;
    }
    Ok(())
}

/// Binds `--ops-listen`, if set, for `serve`.
async fn with_ops(running: api::Embedded, ops: &OpsArg) -> anyhow::Result<api::Embedded> {
    Ok(match ops.ops_listen {
        Some(addr) => running.with_ops_listener(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the ops listener {addr}"))?,
        ),
        None => running,
    })
}

async fn probe(args: ProbeArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(args.timeout).build()?;
    let answer = client
        .get(&args.url)
        .send()
        .await
        .with_context(|| format!("probing {}", args.url))?;
    anyhow::ensure!(
        answer.status().is_success(),
        "{} answered {}",
        args.url,
        answer.status()
    );
    Ok(())
}

async fn relay(args: RelayArgs) -> anyhow::Result<()> {
    let aws = &args.process.aws;
    let stage = aws.open_stage().await;
    let mut config = AwsWorkerConfig::default();
    config.relay.lease_ttl = Some(args.lease_ttl);
    let relay = std::sync::Arc::new(stage.relay(config.relay));
    tracing::info!(stage = %aws.stage, "relay started");
    args.process
        .run_until_signal(|health, cancel| {
            relay.spawn(workers::LoopContext::new(health, cancel, config.relay_loop))
        })
        .await
}

async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let stripe = if args.group == infrastructure::aws::ConsumerGroup::ProcessManagers {
        args.payments.stripe(Some("the process-managers worker"))?
    } else {
        None
    };
    let aws = &args.process.aws;
    let stage = aws.open_stage().await.with_payments(stripe.as_ref())?;
    // The consumer applies to each projection's live generation, and follows promotions.
    stage.generations.refresh().await?;
    let generations = stage.generations.clone();
    let mut config = AwsWorkerConfig::default();
    config.consumer.wait = Duration::from_secs(args.wait_secs.min(20));
    let consumer = std::sync::Arc::new(stage.consumer(args.group, config.consumer).await?);
    // The process-managers group also runs the unpaid-order timer, the notifications group the
    // delivery worker.
    let expiry = (args.group == infrastructure::aws::ConsumerGroup::ProcessManagers)
        .then(|| std::sync::Arc::new(stage.expiry(args.order_ttl)));
    let delivery = match args.group {
        infrastructure::aws::ConsumerGroup::Notifications => Some(std::sync::Arc::new(
            stage.delivery(&args.notify.settings(api::notify::NotifyChannel::Ses))?,
        )),
        _ => None,
    };
    tracing::info!(stage = %aws.stage, group = %args.group, "worker started");
    args.process
        .run_until_signal(|health, cancel| {
            let follower = generations.follow(cancel.clone().cancelled_owned());
            let context = workers::LoopContext::new(health, cancel, config.consumer_loop);
            let timers: Vec<_> = expiry
                .map(|s| workers::spawn_expiry(s, context.clone()))
                .into_iter()
                .chain(delivery.map(|d| workers::spawn_delivery(d, context.clone())))
                .collect();
            let consumer = consumer.spawn(context);
            tokio::spawn(async move {
                futures::future::join_all(timers).await;
                let _ = consumer.await;
                let _ = follower.await;
            })
        })
        .await
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.backend == Backend::Aws {
        return serve_aws(args).await;
    }
    let config = EmbeddedConfig {
        listen: args.listen,
        synchronous_normal: args.synchronous == SyncMode::Normal,
        api: args.api_settings(args.payments.stripe(None)?),
        order_ttl: args.order_ttl,
        notify: args.notify.settings(api::notify::NotifyChannel::File),
        ..EmbeddedConfig::new(args.data.data)
    };
    let emf = args.emf.interval(false).map(|i| ("embedded".to_owned(), i));
    let listen = config.listen;
    serve_on(listen, compose::start_embedded(config), &args.ops, emf).await
}

async fn serve_aws(args: ServeArgs) -> anyhow::Result<()> {
    // Checked before anything else: no customer may ever pay through a simulator by accident.
    let stripe = args.payments.stripe(Some("serve --backend aws"))?;
    let (sdk, options) = aws_setup(&args.aws).await;
    let stage = args.aws.stage.clone();
    let config = AwsServeConfig {
        options,
        provision: args.provision,
        with_workers: args.with_workers,
        api: args.api_settings(stripe),
        workers: AwsWorkerConfig {
            order_ttl: args.order_ttl,
            notify: args.notify.settings(api::notify::NotifyChannel::Ses),
            ..AwsWorkerConfig::default()
        },
        ..AwsServeConfig::new(args.aws.stage)
    };
    let emf = args.emf.interval(true).map(|i| (stage, i));
    serve_on(
        args.listen,
        compose_aws::start_aws(&sdk, config),
        &args.ops,
        emf,
    )
    .await
}

/// Binds the API's listener at `listen`, then starts the backbone and serves it there until
/// SIGTERM or ctrl-c, with the ops listener `ops` asks for and, when `emf` names the process and
/// an interval, its CloudWatch metrics as EMF lines.
async fn serve_on(
    listen: SocketAddr,
    start: impl std::future::Future<Output = anyhow::Result<api::Embedded>>,
    ops: &OpsArg,
    emf: Option<(String, Duration)>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let mut running = with_ops(start.await?, ops).await?;
    if let Some((name, interval)) = emf {
        running = running.with_emf(name, interval);
    }
    api::serve(listener, running).await
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let secret = EmbeddedConfig {
        api: ApiSettings {
            jwt_secret: args.jwt_secret,
            ..ApiSettings::default()
        },
        ..EmbeddedConfig::new(args.data.data)
    }
    .hs256_secret()?;
    let token = auth::mint_hs256_scoped(
        secret.as_bytes(),
        &args.sub,
        args.role,
        args.scope.as_deref(),
        args.ttl,
    )?;
    println!("{token}");
    Ok(())
}

async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let data = args.data.data;
    // Refuse while a server runs on the directory: its workers would race the reset. A running
    // server rebuilds its own projections on request instead.
    let _lock = compose::lock_data_dir(&data).context(
        "to rebuild a projection of a running server, ask it: \
         POST /v1/admin/projections/{name}/rebuild (admin token)",
    )?;
    let all = projections::all_projections();
    let selected: Vec<_> = if args.projection == "all" {
        all
    } else {
        let found: Vec<_> = all
            .into_iter()
            .filter(|p| p.name() == args.projection)
            .collect();
        if found.is_empty() {
            anyhow::bail!(
                "unknown projection {:?} (catalog, order_history, notifications, support or all)",
                args.projection
            );
        }
        found
    };
    let store = compose::open_event_store(&data, false).await?.store;
    let models = compose::open_read_models(&data).await?;
    let bar = indicatif::ProgressBar::new(store.head().await?.count());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} rebuilding [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let summary = projections::rebuild_all(
        store,
        models,
        &selected,
        projections::runner::REBUILD_BATCH,
        |position, head| {
            bar.set_length(head);
            bar.set_position(position);
        },
    )
    .await?;
    bar.finish_and_clear();
    eprintln!(
        "rebuilt {} from {} events ({} applied), at position {}",
        selected
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", "),
        summary.events,
        summary.applied,
        summary.position
    );
    Ok(())
}

async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let plan = api::seed::SeedPlan {
        orders: args.orders,
        seed: args.seed,
        products: usize::from(args.products),
        start: args.start.unwrap_or_else(api::seed::default_start),
    };
    let bar = indicatif::ProgressBar::new(plan.orders);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} seeding [{bar:40}] {pos}/{len} orders ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let progress = |placed| bar.set_position(placed);
    let report = match args.store.backend {
        Backend::Embedded => {
            let data = args.store.data.data;
            let _lock = compose::lock_data_dir(&data)
                .context("stop the server on this data directory before seeding it")?;
            // Seeding is replayable: a power loss costs the tail of the run, nothing acknowledged.
            let store = compose::open_event_store(&data, true).await?.store;
            let models = compose::open_read_models(&data).await?;
            let report = api::seed::seed(store.clone(), Some(models), &plan, progress).await?;
            // The seeder ran the process managers itself: `serve` starts after them.
            compose::open_worker_checkpoints(&data)
                .await?
                .set(compose::PROCESS_MANAGERS, &store.head().await?)
                .await?;
            report
        }
        Backend::Aws => {
            let stage = args.store.aws.open_stage().await;
            // The stage's notifications worker delivers what the history caused.
            api::seed::seed(stage.store.clone(), None, &plan, progress).await?
        }
    };
    bar.finish_and_clear();
    eprintln!("seeded {report:?}");
    Ok(())
}

async fn export_events(args: ExportArgs) -> anyhow::Result<()> {
    let store = match args.store.backend {
        Backend::Embedded => {
            compose::open_event_store(&args.store.data.data, false)
                .await?
                .store
        }
        Backend::Aws => args.store.aws.open_stage().await.store,
    };
    let filter = ExportFilter {
        after: args.after.unwrap_or_default(),
        from: args.from,
        to: args.to,
        event_type: args.event_type,
        stream: args.stream,
        limit: args.limit,
    };
    // A CLI writing to a pipe: blocking writes are what backpressure should do here.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut chunks = std::pin::pin!(export::ndjson(store, filter, export::EXPORT_PAGE, None));
    while let Some(chunk) = chunks.next().await {
        out.write_all(&chunk?)?;
    }
    out.flush()?;
    Ok(())
}
