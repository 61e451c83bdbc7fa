#![forbid(unsafe_code)]
//! `backbone`: the embedded order backbone (serve), dev tokens, projection rebuilds and event
//! export. Every flag can also be set through its `BACKBONE_*` environment variable.

use anyhow::Context;
use api::auth::{self, Role};
use api::compose::{self, EmbeddedConfig};
use api::export::{self, ExportFilter, StreamFilter};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "backbone",
    version,
    about = "Event-sourced order backbone (embedded default)"
)]
struct Cli {
    /// Log format: readable text (dev) or JSON lines (production). Filter with RUST_LOG.
    #[arg(long, env = "BACKBONE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SyncMode {
    /// fsync every commit: an acknowledged commit survives power loss.
    Full,
    /// Faster; a power loss (not a process crash) may lose the latest commits.
    Normal,
}

#[derive(Debug, Args)]
struct DataArg {
    /// Data directory (event store, read models, checkpoints, dev JWT secret).
    #[arg(long = "data", env = "BACKBONE_DATA", default_value = "./data")]
    data: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API with the workers (embedded: SQLite, simulated payments).
    Serve(ServeArgs),
    /// Mint an HS256 token for the data directory's secret; prints only the token.
    Token(TokenArgs),
    /// Rebuild one projection (or all) from the event store. Stop the server first.
    Rebuild(RebuildArgs),
    /// Event history tools.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BACKBONE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    data: DataArg,
    /// Event store durability.
    #[arg(long, env = "BACKBONE_SYNCHRONOUS", value_enum, default_value_t = SyncMode::Full)]
    synchronous: SyncMode,
    /// HS256 secret (default: the data directory's `jwt_secret`, created on first use).
    #[arg(long, env = "BACKBONE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Verify RS256 tokens with this JWKS URL instead of HS256 (for example Cognito's).
    #[arg(long, env = "BACKBONE_JWKS_URL")]
    jwks_url: Option<String>,
    /// Do not seed the demo catalog.
    #[arg(long, env = "BACKBONE_NO_DEMO")]
    no_demo: bool,
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
struct ExportArgs {
    /// Only events after this feed position.
    #[arg(long, env = "BACKBONE_EXPORT_AFTER")]
    after: Option<u64>,
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
    data: DataArg,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "expected customer, support, admin or analyst".to_string())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: stdout carries the token and the NDJSON export.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Token(args) => token(args),
        Command::Rebuild(args) => rebuild(args).await,
        Command::Events {
            command: EventsCommand::Export(args),
        } => export_events(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = EmbeddedConfig {
        listen: args.listen,
        synchronous_normal: args.synchronous == SyncMode::Normal,
        jwt_secret: args.jwt_secret,
        jwks_url: args.jwks_url,
        demo_catalog: !args.no_demo,
        ..EmbeddedConfig::new(args.data.data)
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let embedded = compose::start_embedded(config).await?;
    api::serve(listener, embedded).await
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let secret = EmbeddedConfig {
        jwt_secret: args.jwt_secret,
        ..EmbeddedConfig::new(args.data.data)
    }
    .hs256_secret()?;
    let token = auth::mint_hs256(secret.as_bytes(), &args.sub, args.role, args.ttl)?;
    println!("{token}");
    Ok(())
}

async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let data = args.data.data;
    // Refuse while a server runs on the directory: its workers would race the reset.
    let _lock = compose::lock_data_dir(&data)?;
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
    let store = compose::open_event_store(&data, false).await?;
    let models = compose::open_read_models(&data).await?;
    let bar = indicatif::ProgressBar::new(store.head().await?);
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

async fn export_events(args: ExportArgs) -> anyhow::Result<()> {
    let store = compose::open_event_store(&args.data.data, false).await?;
    let filter = ExportFilter {
        after: args.after.unwrap_or(0),
        from: args.from,
        to: args.to,
        event_type: args.event_type,
        stream: args.stream,
        limit: args.limit,
    };
    // A CLI writing to a pipe: blocking writes are what backpressure should do here.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut chunks = std::pin::pin!(export::ndjson(store, filter, export::EXPORT_PAGE));
    while let Some(chunk) = chunks.next().await {
        out.write_all(&chunk?)?;
    }
    out.flush()?;
    Ok(())
}
