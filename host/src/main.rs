//! `nexus`: serves a Spin application's components with nexus's extras.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use nexus_host::engine::{EngineSettings, build_engine, spawn_epoch_ticker};
use nexus_host::manifest::Manifest;
use nexus_host::platform::{Platform, PlatformConfig};
use nexus_host::server::{App, ServeSettings, serve};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "nexus",
    version,
    about = "The nexus host: serves the WebAssembly components of a Spin manifest"
)]
struct Cli {
    /// Log format; `json` (the default when stderr is not a terminal) is one object per line.
    #[arg(long, global = true, env = "NEXUS_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the application: Redis and PostgreSQL from REDIS_URL and DATABASE_URL, or embedded.
    Up(UpArgs),
    /// Apply the database migrations to DATABASE_URL (or to the embedded PostgreSQL).
    Migrate(DataArgs),
    /// Run the components' build commands, as `spin build` does.
    Build {
        #[arg(long, short = 'f', default_value = "spin.toml", env = "NEXUS_MANIFEST")]
        manifest: PathBuf,
    },
    /// A tenant's components (bots, transforms) on a running nexus: push a version, roll back.
    #[command(subcommand)]
    Component(nexus_host::component_cli::ComponentCommand),
    /// Asks a nexus on this machine for `path` and exits 0 on a 2xx answer: the container
    /// image's health check, which has no curl.
    Probe {
        /// The address nexus serves on (a wildcard address is asked on loopback).
        #[arg(long, default_value = "127.0.0.1:3000", env = "NEXUS_LISTEN")]
        listen: SocketAddr,
        #[arg(default_value = "/healthz")]
        path: String,
    },
}

#[derive(clap::Args)]
struct DataArgs {
    /// Where embedded data (the embedded PostgreSQL) and the compile cache live.
    /// Default: `.nexus` beside the manifest.
    #[arg(long, env = "NEXUS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The manifest, to place the default data directory.
    #[arg(long, short = 'f', default_value = "spin.toml", env = "NEXUS_MANIFEST")]
    manifest: PathBuf,
}

#[derive(clap::Args)]
struct UpArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The address to serve HTTP on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:3000", env = "NEXUS_LISTEN")]
    listen: SocketAddr,
    /// Run the components' build commands first, as `spin up --build` does.
    #[arg(long)]
    build: bool,
    /// Requests served at once (each holds one instance slot).
    #[arg(long, default_value_t = 1000, env = "NEXUS_MAX_CONCURRENT_REQUESTS")]
    max_concurrent_requests: u32,
    /// Tenant-component calls (bots, transforms) run at once, each in an instance slot of its
    /// own beside the requests'.
    #[arg(long, default_value_t = 256, env = "NEXUS_MAX_TENANT_CALLS")]
    max_tenant_calls: u32,
    /// Components that export `nexus:platform/parking` wait inside their instance, polling, as
    /// they do under Spin, rather than parking their requests (for comparison and tests).
    #[arg(long, env = "NEXUS_NO_PARKING")]
    no_parking: bool,
    /// WebSockets held at once; upgrades past it get 503.
    #[arg(long, default_value_t = 10_000, env = "NEXUS_MAX_WEBSOCKETS")]
    max_websockets: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, default_value_t = 30, env = "NEXUS_SHUTDOWN_GRACE_SECS")]
    shutdown_grace_secs: u64,
    /// Where compiled components are cached. Default: `compile-cache` in the data directory.
    #[arg(long, env = "NEXUS_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile components afresh instead of using the on-disk cache.
    #[arg(long)]
    no_cache: bool,
    /// `apply`: bring the database's schema up to date before serving (hosts take turns under
    /// a lock). `wait`: apply nothing, and wait until the schema is up to date, as when a job
    /// of its own (`nexus migrate`, the Kubernetes manifests' Job) migrates and the hosts'
    /// database role may not change the schema.
    #[arg(long, value_enum, default_value_t = Migrate::Apply, env = "NEXUS_MIGRATE")]
    migrate: Migrate,
    /// Make (or find) a demo contact center once serving, and print its demo page's URL (for a
    /// first try; never in production). Needs the admin token.
    #[arg(long, env = "NEXUS_DEMO")]
    demo: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Migrate {
    Apply,
    Wait,
}

impl DataArgs {
    fn data_dir(&self) -> PathBuf {
        let dir = self.data_dir.clone().unwrap_or_else(|| {
            self.manifest
                .parent()
                .filter(|dir| !dir.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join(".nexus")
        });
        // Absolute, so that logs say where the data is and no library resolves it elsewhere.
        std::path::absolute(&dir).unwrap_or(dir)
    }
}

/// The log on stderr (filtered by `RUST_LOG`), and for `nexus up` with an OTLP endpoint
/// configured, the exporter of traces; the exporter, to be shut down at the end.
fn init_logging(
    format: Option<LogFormat>,
    traces: bool,
) -> anyhow::Result<Option<nexus_host::telemetry::Exporter>> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn")
    });
    // The spans that exist for the trace alone stay out of the log (a log line's span is its
    // request's): the most specific directive, so `RUST_LOG=debug` does not bring them in.
    let filter = filter.add_directive(
        format!("{}=off", nexus_host::telemetry::TARGET)
            .parse()
            .context("the log filter")?,
    );
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => !std::io::stderr().is_terminal(),
    };
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = if json {
        log.json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    } else {
        log.boxed()
    }
    .with_filter(filter);
    // Two shapes rather than an `Option` layer: an absent layer still answers "enabled" for
    // every callsite, which would turn on what the log's filter turns off (guests would see
    // debug enabled, and every disabled event would be built only to be dropped).
    let registry = tracing_subscriber::registry().with(log);
    let exporter = if traces {
        let (exporter, layer) = nexus_host::telemetry::start(tokio::runtime::Handle::current())?;
        registry
            .with(layer)
            .try_init()
            .context("cannot set up the log")?;
        Some(exporter)
    } else {
        registry.try_init().context("cannot set up the log")?;
        None
    };
    if let Some(exporter) = &exporter {
        tracing::info!(
            endpoint = exporter.endpoint(),
            "exporting traces over OTLP/HTTP"
        );
    }
    Ok(exporter)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let traces = matches!(cli.command, Command::Up(_)) && nexus_host::telemetry::configured();
    let exporter = match init_logging(cli.log_format, traces) {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("error: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Up(args) => up(args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Build { manifest } => Manifest::load(&manifest)
            .map_err(Into::into)
            .and_then(|m| nexus_host::build::build_components(&m)),
        Command::Component(command) => nexus_host::component_cli::run(command).await,
        Command::Probe { listen, path } => probe(listen, &path).await,
    };
    if let Some(exporter) = exporter {
        exporter.shutdown().await;
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Migrates the platform database, retrying while the server is not up yet (as when nexus and
/// PostgreSQL start together on Kubernetes).
async fn migrate_platform(platform: &Platform) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match nexus_host::migrate::migrate_url(&platform.database_url).await {
            Ok(applied) => {
                tracing::info!(applied = ?applied, "database schema is up to date");
                return Ok(());
            }
            Err(err) if attempt < 10 && format!("{err:#}").contains("cannot connect") => {
                attempt += 1;
                tracing::warn!(error = %format!("{err:#}"), attempt, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Waits until another process (the migrations Job) has brought the schema up to date. Nothing
/// announces that, so the database is asked again every 2 s; the startup probe bounds the wait.
async fn wait_for_schema(database_url: &str) -> anyhow::Result<()> {
    loop {
        match nexus_host::migrate::pending_url(database_url).await {
            Ok(pending) if pending.is_empty() => {
                tracing::info!("database schema is up to date");
                return Ok(());
            }
            Ok(pending) => {
                tracing::info!(pending = ?pending, "waiting for the migrations to be applied (nexus migrate)");
            }
            Err(err) if format!("{err:#}").contains("cannot connect") => {
                tracing::warn!(error = %format!("{err:#}"), "database not reachable yet; retrying");
            }
            Err(err) => return Err(err),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn migrate(args: DataArgs) -> anyhow::Result<()> {
    let platform = Platform::start(PlatformConfig::from_env(), &args.data_dir()).await?;
    let result = migrate_platform(&platform).await;
    platform.shutdown()?;
    result
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let manifest = Manifest::load(&args.data.manifest)?;
    if args.build {
        nexus_host::build::build_components(&manifest)?;
    }
    let data_dir = args.data.data_dir();
    let platform = Arc::new(Platform::start(PlatformConfig::from_env(), &data_dir).await?);
    match args.migrate {
        Migrate::Apply => migrate_platform(&platform).await?,
        Migrate::Wait => wait_for_schema(&platform.database_url).await?,
    }

    let max_memory_bytes = App::max_memory_bytes(&manifest);
    let engine = build_engine(&EngineSettings {
        // A request may call a tenant component from inside its own instance.
        // The host's own timed requests and job runs have slots of their own.
        max_instances: args
            .max_concurrent_requests
            .saturating_add(args.max_tenant_calls)
            .saturating_add(u32::try_from(manifest.host_request_slots()).unwrap_or(u32::MAX)),
        max_memory_bytes,
        cache_dir: (!args.no_cache).then(|| {
            args.cache_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("compile-cache"))
        }),
    })?;
    spawn_epoch_ticker(&engine)?;
    let settings = ServeSettings {
        max_concurrent_requests: usize::try_from(args.max_concurrent_requests)
            .unwrap_or(usize::MAX),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        max_websockets: args.max_websockets,
        max_tenant_calls: usize::try_from(args.max_tenant_calls).unwrap_or(usize::MAX),
        max_memory_bytes,
        park_requests: !args.no_parking,
    };
    let app = Arc::new(App::new(
        &manifest,
        engine,
        Arc::clone(&platform),
        &settings,
    )?);
    app.start().await?;

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    // The first line on stdout says where to reach the app; scripts and tests read it.
    println!("nexus is serving http://{address}");
    for trigger in &manifest.http_triggers {
        if let Some(route) = &trigger.route {
            println!("  http://{address}{route} -> {}", trigger.component);
        }
    }
    for (component, websocket) in manifest.websocket_routes() {
        println!("  ws://{address}{} -> {component}", websocket.route);
    }
    tracing::info!(%address, app = %manifest.application.name, "serving");
    if args.demo {
        let admin_token = nexus_host::variables::AppVariables::resolve(
            &manifest,
            |name| std::env::var(name).ok(),
            &platform.variables,
        )?
        .get("admin_token")
        .unwrap_or_default()
        .to_owned();
        let manifest_dir = manifest.dir.clone();
        tokio::spawn(async move {
            let base = format!("http://{address}");
            match nexus_host::demo::provision(&base, &admin_token, &data_dir, &manifest_dir).await {
                Ok(access) => {
                    println!("demo: {}", access.page_url(&base));
                    println!(
                        "  the agent console: {base}/console/ (the demo page links to it with the tokens)"
                    );
                }
                Err(err) => tracing::error!(error = format!("{err:#}"), "cannot set up the demo"),
            }
        });
    }
    let (stop_jobs, stopping) = tokio::sync::watch::channel(false);
    nexus_host::schedule::start(
        nexus_host::schedule::schedules(&manifest)?,
        address,
        stopping.clone(),
    );
    let database = platform
        .variables
        .get("postgres_address")
        .cloned()
        .context("the platform names no database")?;
    nexus_host::queue::start(
        nexus_host::queue::workers(&manifest)?,
        nexus_host::queue::JobContext {
            postgres: platform.postgres.clone(),
            database,
            address,
            metrics: Arc::clone(&app.metrics),
            stopping,
        },
    );

    let shutdown = async move {
        shutdown_signal().await;
        // No new job runs or timed requests once the listener stops taking requests.
        let _ = stop_jobs.send(true);
    };
    serve(app, listener, &settings, shutdown).await?;
    match Arc::try_unwrap(platform) {
        Ok(platform) => platform.shutdown()?,
        Err(_) => tracing::warn!(
            "requests still hold the platform; leaving the embedded servers to the OS"
        ),
    }
    Ok(())
}

async fn probe(listen: SocketAddr, path: &str) -> anyhow::Result<()> {
    let mut address = listen;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        nexus_host::loopback::get(address, path, "probe"),
    )
    .await
    .with_context(|| format!("no answer from {address}{path} within 5 s"))??;
    if (200..300).contains(&answer.status) {
        println!("{}", answer.body.trim_end());
        Ok(())
    } else {
        anyhow::bail!(
            "{address}{path} answered {}: {}",
            answer.status,
            answer.body.trim_end()
        )
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
