use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use futures::FutureExt;
use payi_operator::{controller, crd};
use tracing_subscriber::EnvFilter;

/// Kubernetes operator for the Pay-i hierarchy: Organizations, Groups and
/// Applications, with one API key per Application kept in a Secret.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster in KUBECONFIG or the in-cluster config.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD.
    Crd {
        /// Directory to write `<plural>.payi.io.yaml` files into, instead of stdout.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Reconcile every object again this often, in seconds, to catch drift no watch reports.
    #[arg(long, env = "PAYI_RESYNC_SECONDS", default_value_t = 600)]
    resync_seconds: u64,
    /// Reconciles of one kind that may run at once.
    #[arg(long, env = "PAYI_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// Log format.
    #[arg(long, env = "PAYI_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd { out_dir } => print_crds(out_dir),
        Command::Run(args) => run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("payi-operator: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn print_crds(out_dir: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
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

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    init_tracing(args.log_format);
    let client = kube::Client::try_default().await?;
    let settings = controller::Settings {
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        concurrency: args.concurrency.max(1),
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), ?settings, "starting controllers");
    let metrics = std::sync::Arc::new(payi_operator::metrics::Metrics::default());
    controller::run(client, settings, metrics, shutdown_signal().shared()).await;
    tracing::info!("stopped");
    Ok(())
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
