//! A demo AI provider on loopback: the provider simulator of the tests
//! (`tests/common/provider_sim.rs`) served on its own, so that the metering
//! gateway has something to forward to without a real OpenAI or Anthropic
//! account. `make run` starts it (hack/run.sh); by hand:
//!
//! ```sh
//! cargo run --example provider-sim                            # prints http://127.0.0.1:PORT
//! cargo run --example provider-sim -- --url-file target/sim.url   # also writes the URL there
//! ```
//!
//! It speaks the OpenAI wire format (`POST /v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`, `/v1/responses`, `GET /v1/models`), Azure OpenAI's
//! (`/openai/deployments/{d}/...`) and Anthropic's (`POST /v1/messages`), streaming and
//! not, with a deterministic usage in every answer (5 + the prompt's words as input
//! tokens; the reply `Hello from the simulator, this is <model>.` as output). It
//! checks no credential. Model names script faults (`fault-429`, `slow-500-gpt-4o`,
//! ...): the module documentation of `tests/common/provider_sim.rs` has every rule.
//!
//! The simulator binds a free loopback port of its own choosing (it has no way to
//! be given one), so the address is printed on stdout, and written to the file
//! given by `--url-file` (or `PAYI_SIM_URL_FILE`) for scripts to read. Each request
//! is then printed as the line the provider would bill (its invoice), so the
//! gateway's count can be compared with the provider's. It runs until SIGINT or
//! SIGTERM. Everything it received stays in memory while it runs (it is a test
//! double): a demo, not a load target.

#[path = "../../tests/common/provider_sim.rs"]
mod provider_sim;

use std::path::PathBuf;
use std::time::Duration;

use provider_sim::ProviderSim;

const USAGE: &str = "usage: provider-sim [--url-file PATH]   (or PAYI_SIM_URL_FILE=PATH)";

fn main() {
    let mut url_file: Option<PathBuf> = std::env::var_os("PAYI_SIM_URL_FILE").map(PathBuf::from);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--url-file" => match args.next() {
                Some(path) => url_file = Some(PathBuf::from(path)),
                None => fail("--url-file needs a path"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => fail(&format!("unknown argument {other:?}")),
        }
    }

    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime");
    runtime.block_on(async move {
        let sim = ProviderSim::start().await;
        let url = sim.url();
        if let Some(path) = &url_file {
            // Written whole under another name, then renamed: a reader never sees half a URL.
            let partial = path.with_extension("partial");
            std::fs::write(&partial, format!("{url}\n"))
                .and_then(|()| std::fs::rename(&partial, path))
                .unwrap_or_else(|error| fail(&format!("cannot write {}: {error}", path.display())));
        }
        println!("provider simulator (OpenAI, Azure OpenAI and Anthropic wire formats) on {url}");

        let mut printed = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let stop = stop();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => break,
            }
            let invoice = sim.invoice();
            for line in invoice.iter().skip(printed) {
                let u = line.usage;
                println!(
                    "billed {:?} model={} input={} cached_input={} cache_write={} output={} reasoning={} complete={} request_id={}",
                    line.api, line.model, u.input, u.cached_input, u.cache_write, u.output, u.reasoning,
                    line.complete, line.request_id
                );
            }
            printed = invoice.len();
        }
        if let Some(path) = &url_file {
            let _ = std::fs::remove_file(path);
        }
        println!("provider simulator stopped");
    });
}

/// Resolves on SIGINT or SIGTERM.
async fn stop() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn fail(message: &str) -> ! {
    eprintln!("provider-sim: {message}\n{USAGE}");
    std::process::exit(2);
}
