//! Throughput and latency of the verifier's HTTP forward-auth next to nginx
//! serving a static 200, measured with wrk on loopback in the same run:
//! `make bench-verifier`. nginx and wrk are Debian packages, installed by
//! `hack/tools/apt.sh` when missing.
//!
//! The verifier side is the production forward-auth router and index (release
//! build, multi-threaded tokio runtime with one worker per core), filled with
//! 100,000 live keys without an API server; wrk presents one of them as
//! `Authorization: Bearer <key>`, so every request is a full check (shape,
//! checksum, SHA-256, index lookup, metrics) answered 200 with the four headers.
//!
//! Under `cargo test` (no `--bench` argument) it does nothing.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, RwLock};

use payi_operator::key::ApiKey;
use payi_operator::verifier::index::{AppId, ApplicationView, Index, KeyView, digest_of};
use payi_operator::verifier::{Verifier, http, metrics};
use support::{Wrk, free_port, tool};

const DURATION: &str = "10s";
const CONNECTIONS: &str = "64";
const THREADS: &str = "2";

fn wrk(wrk: &str, url: &str, headers: &[String]) -> Wrk {
    let mut command = Command::new(wrk);
    command.args(["-t", THREADS, "-c", CONNECTIONS, "-d", DURATION, "--latency"]);
    for header in headers {
        command.args(["-H", header]);
    }
    command.arg(url);
    support::wrk(command)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (nginx, wrk_bin) = (tool("nginx"), tool("wrk"));

    // The verifier: 100,000 keys in the index, served on its own runtime.
    let mut index = Index::default();
    index.apply_organization("acme");
    index.apply_group("eng", "acme");
    let mut presented = String::new();
    for i in 0..100_000 {
        let key = ApiKey::mint().unwrap().expose().to_string();
        let view = ApplicationView {
            id: AppId { namespace: "team".into(), name: format!("app-{i}") },
            group: "eng".into(),
            live: true,
            catching_up: false,
            keys: vec![KeyView { digest: digest_of(&key), expires_at_ms: None }],
            use_cases: Default::default(),
            limits: Default::default(),
        };
        index.apply_application(&view);
        presented = key;
    }
    let verifier_port = free_port();
    let verifier =
        Arc::new(Verifier::new(Arc::new(RwLock::new(index)), Arc::new(metrics::Metrics::default()), None, false));
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", verifier_port)).await.unwrap();
            axum::serve(listener, http::forward_auth_router(verifier)).await.unwrap();
        });
    });

    // nginx: a static 200, one worker per core.
    let nginx_port = free_port();
    let prefix = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-nginx");
    std::fs::create_dir_all(&prefix).unwrap();
    let p = prefix.display();
    let config = format!(
        "worker_processes auto;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n\
           fastcgi_temp_path {p}/fastcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
           server {{ listen 127.0.0.1:{nginx_port}; location / {{ return 200 \"ok\"; }} }} }}\n"
    );
    std::fs::write(prefix.join("nginx.conf"), config).unwrap();
    let mut nginx = Command::new(nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .arg("-e")
        .arg(prefix.join("error.log"))
        .stdin(Stdio::null())
        .spawn()
        .expect("starting nginx");
    std::thread::sleep(std::time::Duration::from_millis(500));

    let bearer = format!("Authorization: Bearer {presented}");
    let verifier_result = wrk(&wrk_bin, &format!("http://127.0.0.1:{verifier_port}/v1/chat"), &[bearer]);
    let nginx_result = wrk(&wrk_bin, &format!("http://127.0.0.1:{nginx_port}/"), &[]);
    let _ = Command::new("kill").args(["-QUIT", &nginx.id().to_string()]).status();
    let _ = nginx.wait();

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION} on loopback, {cores} cores (wrk shares them)");
    for (name, r) in [("verifier forward-auth (valid key)", &verifier_result), ("nginx static 200", &nginx_result)] {
        println!("  {name:36} {:>10.0} req/s   p99 {:>10}   non-2xx {}", r.requests_per_second, r.p99, r.non_2xx);
    }
    let ratio = verifier_result.requests_per_second / nginx_result.requests_per_second.max(1.0);
    println!("  verifier / nginx: {ratio:.2}");
    assert_eq!(verifier_result.non_2xx, 0, "the verifier refused the benchmark's key");
}
