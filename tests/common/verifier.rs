//! The verifier binary (`payi-operator verifier`) as a child process, and a plain
//! HTTP/1.1 client, for the verifier's end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube::config::Kubeconfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

pub fn log_dir() -> PathBuf {
    let dir = repo().join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The verifier's kubeconfig: the admin one, impersonating the chart's verifier
/// ServiceAccount when `PAYI_TEST_VERIFIER_AS` names it (`make test` sets it), so
/// the test proves the chart's read-only role is enough.
pub fn verifier_kubeconfig() -> PathBuf {
    let admin = super::kubeconfig_path();
    let Some(user) = std::env::var("PAYI_TEST_VERIFIER_AS").ok().filter(|u| !u.is_empty()) else {
        return admin;
    };
    let mut config = Kubeconfig::read_from(&admin).expect("reading the admin kubeconfig");
    for auth in config.auth_infos.iter_mut().filter_map(|a| a.auth_info.as_mut()) {
        auth.impersonate = Some(user.clone());
    }
    let path = log_dir().join(format!("verifier-{}.kubeconfig", std::process::id()));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

/// `payi-operator verifier` as a child process, killed when dropped.
pub struct Verifier {
    child: Child,
    /// HTTP forward-auth address.
    pub http: String,
    /// Envoy ext_authz gRPC address.
    pub grpc: String,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub metrics: String,
    log: PathBuf,
}

impl Verifier {
    pub async fn start(name: &str, extra: &[&str]) -> Self {
        let (http, grpc, metrics) = (free_port(), free_port(), free_port());
        let log = log_dir().join(format!("verifier-{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_payi-operator"))
            .args(["verifier", "--http-addr", &http, "--grpc-addr", &grpc, "--metrics-addr", &metrics])
            .args(extra)
            .env("KUBECONFIG", verifier_kubeconfig())
            .env("RUST_LOG", "debug,kube=info,hyper=info,tower=info,rustls=info,h2=info")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting payi-operator verifier");
        let verifier = Self { child, http, grpc, metrics, log };
        let addr = verifier.metrics.clone();
        super::eventually("the verifier's /readyz to answer 200", || async {
            (request(&addr, "/readyz", &[]).await?.status == 200).then_some(())
        })
        .await;
        verifier
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        request(&self.metrics, "/metrics", &[]).await.expect("scraping the verifier").body
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Reply {
    pub status: u16,
    /// Status line and headers, lowercased.
    pub head: String,
    pub body: String,
}

/// A plain HTTP/1.1 GET, so the test depends on no HTTP client crate.
pub async fn request(addr: &str, path: &str, headers: &[(&str, &str)]) -> Option<Reply> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut text = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).await.ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await.ok()?.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Some(Reply { status, head: head.to_ascii_lowercase(), body: body.to_string() })
}
