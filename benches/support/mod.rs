//! What the HTTP benchmarks share: installing the Debian tools they run, free
//! loopback ports, and running wrk and reading its summary.
// Each benchmark uses part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// The path of a Debian tool, installed by `hack/tools/apt.sh` when missing.
pub fn tool(name: &str) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("hack/tools/apt.sh").arg(name).current_dir(repo).output().expect("hack/tools/apt.sh");
    assert!(out.status.success(), "installing {name}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What one wrk run reports.
pub struct Wrk {
    pub requests_per_second: f64,
    pub p50: String,
    pub p99: String,
    pub non_2xx: u64,
    pub socket_errors: String,
}

/// Runs `command` (wrk with its arguments, `--latency` among them) and reads its summary.
pub fn wrk(mut command: Command) -> Wrk {
    let out = command.output().expect("running wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "wrk failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let field = |prefix: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string())).unwrap_or_default()
    };
    Wrk {
        requests_per_second: field("Requests/sec:").parse().unwrap_or(0.0),
        p50: field("50%"),
        p99: field("99%"),
        non_2xx: field("Non-2xx or 3xx responses:").parse().unwrap_or(0),
        socket_errors: field("Socket errors:"),
    }
}
