//! `kubectl payi`: the kubectl plugin (binary `kubectl-payi` on PATH). See docs/tools.md.

pub mod rotate;
pub mod tree;
pub mod whois;

use std::io::{IsTerminal, Read};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::crd::{Application, Group, Organization};
use crate::validate::cli::{OutputFormat, ValidateArgs, connect};

/// Views and operations on the Pay-i hierarchy (Organizations, Groups, Applications).
#[derive(Debug, Parser)]
#[command(name = "kubectl payi", bin_name = "kubectl payi", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Kubeconfig context to use (KUBECONFIG is honoured).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace of Applications (default: all for tree and whois, the context's for rotate).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    /// All namespaces (the default for tree and whois).
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Organization -> Groups -> Applications with Ready, key fingerprint, key age and rotation due.
    Tree {
        /// Show only this Organization.
        organization: Option<String>,
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Whose key is this? Reads the key from stdin (never from arguments), or takes --fingerprint.
    Whois {
        /// Fingerprint as in status.keys (`sha256:...`), instead of a key on stdin.
        #[arg(long)]
        fingerprint: Option<String>,
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Request a new key for an Application (payi.io/rotate-key annotation).
    Rotate {
        /// The Application's name.
        application: String,
        /// Wait until the operator has rotated the key, showing progress.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Validate manifests against the CRDs and the live cluster (payi-operator validate --cluster).
    Check {
        /// Files and directories (*.yaml, *.yml, *.json, recursively); `-` reads stdin.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<String>,
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Rotate(#[from] rotate::RotateError),
    #[error("reading the key from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("no key on stdin: pipe the key in (`kubectl payi whois < leaked.txt`) or use --fingerprint")]
    NoKey,
    #[error("Organization {0:?} not found")]
    NoOrganization(String),
    #[error("no Application has a key with fingerprint {0}")]
    Unknown(String),
    #[error(
        "the input is not a well-formed payi key (payi_ and 45 to 50 base58 characters with a valid checksum), \
         so no Application can hold it; nothing was looked up"
    )]
    NotAKey,
}

/// Exit code of `whois` for input that is not a payi key at all (1 is "no Application holds it").
pub const EXIT_NOT_A_KEY: u8 = 3;

impl PluginError {
    fn exit_code(&self) -> u8 {
        match self {
            PluginError::NotAKey => EXIT_NOT_A_KEY,
            _ => 1,
        }
    }
}

/// Runs the plugin; returns the exit code.
pub async fn run(cli: Cli) -> u8 {
    if let Command::Check { paths, output } = &cli.command {
        let args = ValidateArgs {
            paths: paths.clone(),
            output: *output,
            cluster: true,
            namespace: cli.global.namespace.clone(),
            context: cli.global.context.clone(),
        };
        return crate::validate::cli::run(args).await;
    }
    match dispatch(cli).await {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(error) => {
            eprintln!("kubectl payi: {error}");
            error.exit_code()
        }
    }
}

async fn dispatch(cli: Cli) -> Result<String, PluginError> {
    // A key on stdin is checked before anything connects: a typo or another
    // vendor's secret gets its own answer, not "no Application has it".
    let presented = match &cli.command {
        Command::Whois { fingerprint: None, .. } => Some(well_formed_key(read_key()?)?),
        _ => None,
    };
    let client = connect(cli.global.context.clone()).await.map_err(PluginError::Connect)?;
    let scope = if cli.global.all_namespaces { None } else { cli.global.namespace.clone() };
    match cli.command {
        Command::Tree { organization, output } => {
            let (orgs, groups, apps) = list_all(&client, scope.as_deref()).await?;
            let tree = tree::build(&orgs, &groups, &apps, organization.as_deref(), Timestamp::now());
            if let Some(name) = &organization
                && tree.is_empty()
            {
                return Err(PluginError::NoOrganization(name.clone()));
            }
            Ok(match output {
                Format::Json => to_json(&serde_json::json!({ "organizations": tree })),
                Format::Text => tree::render_text(&tree, tree::Style { colour: colour_wanted() }),
            })
        }
        Command::Whois { fingerprint, output } => {
            let fingerprint = match (fingerprint, presented) {
                (Some(given), _) => whois::normalise_fingerprint(&given),
                (None, Some(key)) => crate::key::fingerprint(&key),
                (None, None) => return Err(PluginError::NoKey),
            };
            let apps = list_apps(&client, scope.as_deref()).await?;
            let owner = whois::find(&apps, &fingerprint).ok_or(PluginError::Unknown(fingerprint))?;
            Ok(match output {
                Format::Json => to_json(&owner),
                Format::Text => whois::render_text(&owner),
            })
        }
        Command::Rotate { application, wait, timeout, output } => {
            let namespace = match cli.global.namespace.clone() {
                Some(ns) => ns,
                None => client.default_namespace().to_string(),
            };
            let progress = output == Format::Text && std::io::stderr().is_terminal();
            let wait = wait.then(|| Duration::from_secs(timeout));
            let rotated = rotate::rotate(client, &namespace, &application, wait, progress).await?;
            Ok(match output {
                Format::Json => to_json(&rotated),
                Format::Text => rotate::render_text(&rotated),
            })
        }
        Command::Check { .. } => Ok(String::new()),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    let mut out = serde_json::to_string_pretty(value).unwrap_or_default();
    out.push('\n');
    out
}

/// Colour on a terminal, unless NO_COLOR is set.
fn colour_wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// The key from stdin, trimmed; it stays in this process's memory only.
fn read_key() -> Result<String, PluginError> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Paste the key, then press Enter and Ctrl-D:");
    }
    let mut text = String::new();
    stdin.read_to_string(&mut text).map_err(PluginError::Stdin)?;
    let key = text.trim().to_string();
    if key.is_empty() {
        return Err(PluginError::NoKey);
    }
    Ok(key)
}

fn well_formed_key(key: String) -> Result<String, PluginError> {
    match crate::key::is_well_formed(&key) {
        true => Ok(key),
        false => Err(PluginError::NotAKey),
    }
}

async fn list_apps(client: &Client, namespace: Option<&str>) -> Result<Vec<Application>, kube::Error> {
    let api: Api<Application> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    Ok(api.list(&ListParams::default()).await?.items)
}

async fn list_all(
    client: &Client,
    namespace: Option<&str>,
) -> Result<(Vec<Organization>, Vec<Group>, Vec<Application>), kube::Error> {
    let orgs = Api::<Organization>::all(client.clone()).list(&ListParams::default()).await?.items;
    let groups = Api::<Group>::all(client.clone()).list(&ListParams::default()).await?.items;
    let apps = list_apps(client, namespace).await?;
    Ok((orgs, groups, apps))
}
