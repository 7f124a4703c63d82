//! `kubectl-payi`: the kubectl plugin; kubectl runs it as `kubectl payi ...`.

use clap::Parser;
use payi_operator::plugin::{Cli, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(run(Cli::parse()).await)
}
