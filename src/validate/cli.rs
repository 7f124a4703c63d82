//! The command line of `payi-operator validate` (and `kubectl payi check`).

use std::io::Write;

use clap::{Args, ValueEnum};
use kube::Client;
use kube::config::{Config, KubeConfigOptions};

use super::schema::Schemas;
use super::{Settings, input, live, output, validate};

#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// Files and directories (searched recursively for *.yaml, *.yml, *.json); `-` reads stdin.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Also look up Groups, Organizations, Namespaces and Applications in the live cluster (KUBECONFIG).
    #[arg(long)]
    pub cluster: bool,
    /// Namespace of Applications that set none (default: `default`).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Kubeconfig context for --cluster.
    #[arg(long)]
    pub context: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Sarif,
}

/// A client for the kubeconfig context (KUBECONFIG honoured), else in-cluster.
pub async fn connect(context: Option<String>) -> Result<Client, String> {
    let explicit = context.is_some();
    let options = KubeConfigOptions { context, ..KubeConfigOptions::default() };
    let config = match Config::from_kubeconfig(&options).await {
        Ok(config) => config,
        Err(error) if explicit => return Err(format!("kubeconfig: {error}")),
        Err(_) => Config::infer().await.map_err(|e| format!("no kubeconfig and not in a cluster: {e}"))?,
    };
    Client::try_from(config).map_err(|e| format!("creating the client: {e}"))
}

/// Runs the validator and prints the report; returns the exit code (0, 1, 2).
pub async fn run(args: ValidateArgs) -> u8 {
    let (documents, errors) = input::read_all(&args.paths);
    let live = if args.cluster {
        let gathered = match connect(args.context.clone()).await {
            Ok(client) => live::gather(client).await.map_err(|e| format!("reading the cluster: {e}")),
            Err(e) => Err(e),
        };
        match gathered {
            Ok(live) => Some(live),
            Err(error) => {
                eprintln!("payi-operator validate: {error}");
                return 2;
            }
        }
    } else {
        None
    };
    let settings = Settings { default_namespace: args.namespace.clone().unwrap_or_else(|| "default".into()) };
    let schemas = Schemas::from_crds(&crate::crd::all());
    let report = validate(&documents, errors, &schemas, live.as_ref(), &settings);
    let rendered = match args.output {
        OutputFormat::Text => output::text(&report),
        OutputFormat::Json => output::json(&report),
        OutputFormat::Sarif => output::sarif(&report),
    };
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(rendered.as_bytes()).and_then(|_| stdout.flush()).is_err() {
        return 2;
    }
    report.exit_code()
}
