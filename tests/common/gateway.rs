//! The gateway binary (`payi-operator gateway`) as a child process, for the
//! gateway's end-to-end tests: it runs as the chart's gateway ServiceAccount when
//! `PAYI_TEST_GATEWAY_AS` names it (`make test` sets it), with a providers file
//! that points every provider at the loopback simulator.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use kube::config::Kubeconfig;

use super::verifier::{free_port, log_dir, request};

/// The providers the tests use, all at `upstream` (the simulator), with the
/// credential files of those that have one.
pub fn providers_file(dir: &std::path::Path, upstream: &str, credentials: &[(&str, &str)]) -> PathBuf {
    let mut text = String::from("providers:\n");
    for (name, kind) in [("openai", "openai"), ("anthropic", "anthropic"), ("azure.openai", "azure")] {
        text.push_str(&format!("  - name: {name}\n    kind: {kind}\n    baseURL: http://{upstream}\n"));
        if let Some((_, secret)) = credentials.iter().find(|(n, _)| *n == name) {
            let file = dir.join(format!("credential-{name}"));
            std::fs::write(&file, format!("{secret}\n")).unwrap();
            text.push_str(&format!("    credentialFile: {}\n", file.display()));
        }
    }
    let path = dir.join("providers.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The gateway's kubeconfig (as the chart's ServiceAccount when `PAYI_TEST_GATEWAY_AS` names it).
pub fn kubeconfig() -> PathBuf {
    let admin = super::kubeconfig_path();
    let Some(user) = std::env::var("PAYI_TEST_GATEWAY_AS").ok().filter(|u| !u.is_empty()) else {
        return admin;
    };
    let mut config = Kubeconfig::read_from(&admin).expect("reading the admin kubeconfig");
    for auth in config.auth_infos.iter_mut().filter_map(|a| a.auth_info.as_mut()) {
        auth.impersonate = Some(user.clone());
    }
    let path = log_dir().join(format!("gateway-{}.kubeconfig", std::process::id()));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

/// `payi-operator gateway` as a child process, killed when dropped.
pub struct Gateway {
    child: Child,
    pub addr: String,
    pub metrics: String,
    log: PathBuf,
}

impl Gateway {
    pub async fn start(name: &str, providers: &std::path::Path, extra: &[&str]) -> Self {
        let gateway = Self::spawn(name, providers, extra, &kubeconfig());
        gateway.await_probe("/readyz").await;
        gateway
    }

    /// A gateway that reaches the API server with `kubeconfig`.
    pub async fn start_with_kubeconfig(
        name: &str,
        providers: &std::path::Path,
        extra: &[&str],
        kubeconfig: &std::path::Path,
    ) -> Self {
        let gateway = Self::spawn(name, providers, extra, kubeconfig);
        gateway.await_probe("/readyz").await;
        gateway
    }

    /// A gateway whose API server never answers (a kubeconfig pointing at a
    /// closed port): it must be alive and never ready.
    pub async fn start_unready(name: &str, providers: &std::path::Path) -> Self {
        let path = log_dir().join(format!("{name}-unreachable.kubeconfig"));
        let config = "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
            users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n";
        std::fs::write(&path, config).unwrap();
        let gateway = Self::spawn(name, providers, &[], &path);
        gateway.await_probe("/healthz").await;
        gateway
    }

    fn spawn(name: &str, providers: &std::path::Path, extra: &[&str], kubeconfig: &std::path::Path) -> Self {
        let (addr, metrics) = (free_port(), free_port());
        let log = log_dir().join(format!("gateway-{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_payi-operator"))
            .args(["gateway", "--listen-addr", &addr, "--metrics-addr", &metrics, "--providers-file"])
            .arg(providers)
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "debug,kube=info,hyper=info,hyper_util=info,tower=info,rustls=info,h2=info")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting payi-operator gateway");
        Self { child, addr, metrics, log }
    }

    async fn await_probe(&self, path: &'static str) {
        let probe = self.metrics.clone();
        super::eventually(&format!("the gateway's {path} to answer 200"), || async {
            (request(&probe, path, &[]).await?.status == 200).then_some(())
        })
        .await;
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        request(&self.metrics, "/metrics", &[]).await.expect("scraping the gateway").body
    }

    /// SIGTERM, then the exit status within `limit` (None: still running).
    pub fn terminate(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one sample line of a Prometheus scrape (labels exactly as given), 0 when absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A gateway answer read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

type TestClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

fn client() -> TestClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Sends one request and returns the response with its body still arriving.
pub async fn send(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    let mut request = http::Request::builder().method(method).uri(format!("{url}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(http_body_util::Full::new(bytes::Bytes::from(body.to_string()))).unwrap();
    client().request(request).await.map_err(|e| format!("{e:?}"))
}

/// POSTs a JSON body and reads the whole answer (an error reading the body is an Err).
pub async fn post(url: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Result<Answer, String> {
    use http_body_util::BodyExt;
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let response = send(url, "POST", path, &all, body).await?;
    let (parts, incoming) = response.into_parts();
    let bytes = incoming.collect().await.map_err(|e| format!("reading the body: {e:?}"))?.to_bytes();
    Ok(Answer { status: parts.status.as_u16(), headers: parts.headers, body: String::from_utf8_lossy(&bytes).into() })
}

/// Every sample of metric `name` in a scrape, with its labels.
pub fn series(metrics: &str, name: &str) -> Vec<(std::collections::BTreeMap<String, String>, f64)> {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.rsplit_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let value: f64 = value.split(' ').next()?.parse().ok()?;
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once("=\"")?;
                    Some((k.to_string(), v.trim_end_matches('"').to_string()))
                })
                .collect();
            Some((labels, value))
        })
        .collect()
}

/// The sum of metric `name` over the samples whose labels include all of `filter`.
pub fn sum(metrics: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    series(metrics, name)
        .into_iter()
        .filter(|(labels, _)| filter.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, v)| v)
        .sum()
}
