use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use futures::FutureExt;
use futures::future::Shared;
use payi_operator::health::Health;
use payi_operator::leader::{Election, Leadership, LeaseSettings};
use payi_operator::metrics::Metrics;
use payi_operator::{controller, crd, http, memory, verifier};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Kubernetes operator for the Pay-i hierarchy: Organizations, Groups and
/// Applications, with one API key per Application kept in a Secret.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// One value, parsed once at start: its size does not matter, and boxing the
// flattened settings would only make every use of them longer.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster in KUBECONFIG or the in-cluster config.
    Run(RunArgs),
    /// Answer AI gateways whether a key is live and whose it is (HTTP forward-auth
    /// and Envoy ext_authz gRPC); reads Applications, Groups and Organizations only.
    Verifier {
        #[command(flatten)]
        settings: verifier::Settings,
        /// Log format.
        #[arg(long, env = "PAYI_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// The metering AI gateway: a reverse proxy to the AI providers that checks the
    /// payi key and counts tokens and cost per Organization, Group, Application and
    /// use case; reads Applications, Groups and Organizations only.
    Gateway {
        #[command(flatten)]
        settings: payi_operator::gateway::Settings,
        /// Log format.
        #[arg(long, env = "PAYI_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD.
    Crd {
        /// Directory to write `<plural>.payi.io.yaml` files into, instead of stdout.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Check payi.io manifests offline against the CRDs and each other (exit 0 clean, 1 errors, 2 unreadable).
    Validate(payi_operator::validate::cli::ValidateArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Reconcile every object again this often, in seconds, to catch drift no watch reports.
    #[arg(long, env = "PAYI_RESYNC_SECONDS", default_value_t = 600)]
    resync_seconds: u64,
    /// Reconciles of one kind that may run at once. 16 was the fastest measured
    /// cold start (docs/benchmark.md): each reconcile waits on several requests.
    #[arg(long, env = "PAYI_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// The limits ledger the gateways charge (`redis://`, `rediss://`, `redis+sentinel://`,
    /// as the gateway's): when set, each limit's spend and state are published on its
    /// object's status (docs/limits.md).
    #[arg(long, env = "PAYI_LIMITS_REDIS_URL", hide_env_values = true)]
    limits_redis_url: Option<String>,
    /// The CA (PEM) that signs the ledger's TLS certificates (`rediss://`); absent: the system's roots.
    #[arg(long, env = "PAYI_LIMITS_REDIS_CA_FILE")]
    limits_redis_ca_file: Option<std::path::PathBuf>,
    /// How often limits status is published, in seconds (at most one write per object per period).
    #[arg(long, env = "PAYI_LIMITS_STATUS_SECONDS", default_value_t = 30)]
    limits_status_seconds: u64,
    /// How often month-to-date usage is published on every object's status.usage, in
    /// seconds (with --limits-redis-url; docs/limits.md, "Spend at every level").
    #[arg(long, env = "PAYI_USAGE_STATUS_SECONDS", default_value_t = 30)]
    usage_status_seconds: u64,
    /// Status writes of usage per second, across all objects, at most: spreads a month's
    /// rollover (every object changes at once) over time instead of a burst at the API server.
    #[arg(long, env = "PAYI_USAGE_STATUS_WRITES_PER_SECOND", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    usage_status_writes_per_second: u32,
    /// Log format.
    #[arg(long, env = "PAYI_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Address of the HTTP server for /healthz, /readyz and /metrics.
    #[arg(long, env = "PAYI_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Run the controllers only while holding a Lease, so several replicas can run.
    #[arg(long, env = "PAYI_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the Lease (in a pod: its own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the Lease.
    #[arg(long, env = "PAYI_LEASE_NAME", default_value = "payi-operator")]
    lease_name: String,
    /// Seconds a Lease stays valid without renewal; a successor takes over at most this long after a leader dies.
    /// A leader that could not renew for two thirds of it stops writing and exits.
    #[arg(long, env = "PAYI_LEASE_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=600))]
    lease_seconds: u64,
    /// Seconds in-flight reconciles get to finish after SIGTERM before the process exits anyway.
    #[arg(long, env = "PAYI_SHUTDOWN_SECONDS", default_value_t = 30)]
    shutdown_seconds: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd { out_dir } => print_crds(out_dir),
        Command::Run(args) => runtime(Threads::Many).and_then(|rt| rt.block_on(run(args))),
        Command::Gateway { settings, log_format } => {
            runtime(Threads::Many).and_then(|rt| rt.block_on(run_gateway(settings, log_format)))
        }
        Command::Verifier { settings, log_format } => {
            runtime(Threads::Many).and_then(|rt| rt.block_on(run_verifier(settings, log_format)))
        }
        Command::Validate(args) => {
            // Before any other thread: the image's build switches to an allocator
            // whose threads do not take turns (see payi_operator::allocator).
            payi_operator::allocator::use_batch_allocator();
            let code = runtime(Threads::One).map(|rt| rt.block_on(payi_operator::validate::cli::run(args)));
            return std::process::ExitCode::from(code.unwrap_or(2));
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "exiting");
            eprintln!("payi-operator: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

enum Threads {
    One,
    Many,
}

fn runtime(threads: Threads) -> Result<tokio::runtime::Runtime, BoxError> {
    let mut builder = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread(),
        Threads::Many => tokio::runtime::Builder::new_multi_thread(),
    };
    Ok(builder.enable_all().build()?)
}

fn print_crds(out_dir: Option<PathBuf>) -> Result<(), BoxError> {
    let crds = crd::all();
    let Some(dir) = out_dir else {
        print!("{}", crd::to_yaml(&crds)?);
        return Ok(());
    };
    std::fs::create_dir_all(&dir)?;
    for one in &crds {
        let path = dir.join(crd::file_name(one));
        std::fs::write(&path, crd::to_yaml(std::slice::from_ref(one))?)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

type Stop = Shared<futures::future::BoxFuture<'static, ()>>;

async fn run_verifier(settings: verifier::Settings, log_format: LogFormat) -> Result<(), BoxError> {
    init_tracing(log_format);
    let client = kube::Client::try_default().await?;
    let shutdown: Stop = shutdown_signal().boxed().shared();
    verifier::run(client, settings, shutdown).await?;
    Ok(())
}

async fn run_gateway(settings: payi_operator::gateway::Settings, log_format: LogFormat) -> Result<(), BoxError> {
    init_tracing(log_format);
    let client = kube::Client::try_default().await?;
    let shutdown: Stop = shutdown_signal().boxed().shared();
    payi_operator::gateway::run(client, settings, shutdown).await?;
    Ok(())
}

async fn run(args: RunArgs) -> Result<(), BoxError> {
    init_tracing(args.log_format);
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let health = Arc::new(Health::default());
    let shutdown: Stop = shutdown_signal().boxed().shared();
    let listener = http::bind(args.http_addr).await.map_err(|e| format!("listening on {}: {e}", args.http_addr))?;
    let server = tokio::spawn(http::serve(listener, Arc::new(registry), health.clone(), shutdown.clone()));
    let trimmer = tokio::spawn(memory::trim_when_quiet(metrics.clone()));

    let limits = match &args.limits_redis_url {
        Some(url) => {
            let metrics = Arc::new(payi_operator::limits::ledger::LedgerMetrics::default());
            let target =
                payi_operator::limits::connect::Target { url: url.clone(), ca_file: args.limits_redis_ca_file.clone() };
            let ledger = payi_operator::limits::ledger::Ledger::open(
                &target,
                payi_operator::limits::ledger::Timeouts::reader(Duration::from_millis(500)),
                metrics,
            )?;
            Some((ledger, Duration::from_secs(args.limits_status_seconds.max(1))))
        }
        None => None,
    };
    let settings = controller::Settings {
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        concurrency: args.concurrency.max(1),
        limits,
        usage: Some(controller::usage::Pace {
            every: Duration::from_secs(args.usage_status_seconds.max(1)),
            writes_per_second: args.usage_status_writes_per_second,
        }),
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), ?settings, "starting");
    let grace = Duration::from_secs(args.shutdown_seconds);
    let result = if args.leader_election {
        let lease = LeaseSettings {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity: identity(),
            duration: Duration::from_secs(args.lease_seconds),
        };
        run_elected(client, settings, metrics, health, lease, shutdown.clone(), grace).await
    } else {
        health.set_leading(true);
        let controllers =
            controller::run(client, settings, metrics, health, Leadership::unconditional(), shutdown.clone());
        bounded(controllers, shutdown.clone(), grace).await;
        Ok(())
    };
    server.abort();
    trimmer.abort();
    tracing::info!("stopped");
    result
}

/// Waits for the Lease, runs the controllers while holding it, and releases it
/// on shutdown. Losing the Lease ends the process with an error, so the pod
/// restarts as a clean standby instead of running with stale caches.
async fn run_elected(
    client: kube::Client,
    settings: controller::Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    lease: LeaseSettings,
    shutdown: Stop,
    grace: Duration,
) -> Result<(), BoxError> {
    let election = Election::start(client.clone(), &lease);
    let mut leading = election.leading.clone();
    tracing::info!(identity = %lease.identity, lease = %lease.name, namespace = %lease.namespace, "waiting for the leader lease");
    tokio::select! {
        acquired = leading.wait_for(|l| *l) => {
            if acquired.is_err() {
                return Err("leader election stopped before acquiring the lease".into());
            }
        }
        _ = shutdown.clone() => {
            election.release().await;
            return Ok(());
        }
    }
    tracing::info!(identity = %lease.identity, "acquired the leader lease; starting controllers");
    health.set_leading(true);
    let mut watching = leading.clone();
    let lost = async move {
        let _ = watching.wait_for(|l| !*l).await;
    };
    let stop: Stop = futures::future::select(shutdown.clone(), lost.boxed()).map(|_| ()).boxed().shared();
    let controllers =
        controller::run(client, settings, metrics, health.clone(), election.leadership.clone(), stop.clone());
    bounded(controllers, stop, grace).await;
    let still_leading = *leading.borrow();
    health.set_leading(false);
    // The Lease is released once every receiver of the election is gone.
    drop(leading);
    election.release().await;
    if still_leading { Ok(()) } else { Err("lost the leader lease".into()) }
}

/// Runs `work` to its end, but no longer than `grace` after `stop` resolved:
/// a reconcile stuck on an unreachable API server must not hold up a shutdown.
async fn bounded(work: impl std::future::Future<Output = ()>, stop: Stop, grace: Duration) {
    let deadline = async {
        stop.await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        _ = work => {}
        _ = deadline => tracing::warn!(?grace, "in-flight reconciles did not finish in time; exiting anyway"),
    }
}

/// The pod name in a cluster; elsewhere the host name with a random suffix.
fn identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME") {
        return pod;
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "payi-operator".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// Resolves on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the operator");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested; finishing in-flight reconciles");
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
