//! Harness for tests against the real control plane started by `hack/testenv.sh up`.
//!
//! Every test gets its own namespace and unique names for cluster-scoped
//! objects, so tests run in parallel. There is no skip: without a reachable
//! control plane every test fails and says how to start one.
#![allow(dead_code)]

pub mod ext_authz;
pub mod gateway;
pub mod helm;
pub mod nginx;
pub mod process;
pub mod provider_sim;
pub mod redis;
pub mod sdk;
pub mod tools;
pub mod verifier;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Namespace, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config, ResourceExt};
use payi_operator::controller::{self, Settings};
use payi_operator::crd::{self, Application, Group, Organization};
use payi_operator::metrics::Metrics;
use serde_json::json;

pub const TIMEOUT: Duration = Duration::from_secs(30);

pub fn kubeconfig_path() -> PathBuf {
    if let Ok(path) = std::env::var("KUBECONFIG") {
        return PathBuf::from(path);
    }
    let dir = std::env::var("TESTENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/testenv"));
    dir.join("kubeconfig")
}

/// The identity the operator under test runs as: the Helm chart's ServiceAccount
/// when `PAYI_TEST_OPERATOR_AS` names it (`make test` sets it after installing the
/// chart's RBAC), so the end-to-end tests prove those permissions are enough.
pub fn operator_identity() -> Option<String> {
    std::env::var("PAYI_TEST_OPERATOR_AS").ok().filter(|s| !s.is_empty())
}

/// A kubeconfig for operator processes: the admin one, impersonating
/// [`operator_identity`] when set.
pub fn operator_kubeconfig() -> PathBuf {
    let admin = kubeconfig_path();
    let Some(user) = operator_identity() else {
        return admin;
    };
    let mut config = Kubeconfig::read_from(&admin).expect("reading the admin kubeconfig");
    for auth in config.auth_infos.iter_mut().filter_map(|a| a.auth_info.as_mut()) {
        auth.impersonate = Some(user.clone());
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/test-logs/operator-{}.kubeconfig", std::process::id()));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

/// A client for the operator under test (see [`operator_identity`]).
pub async fn operator_client() -> Client {
    let kubeconfig = Kubeconfig::read_from(operator_kubeconfig()).expect("operator kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// A client for the test control plane. Panics, loudly, when there is none.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let fail = |why: String| -> ! {
        panic!(
            "no test control plane at {} ({why}). Start one with `hack/testenv.sh up`, or run `make test`, \
             which starts and stops it.",
            path.display()
        )
    };
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| fail(e.to_string()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| fail(e.to_string()));
    let client = Client::try_from(config).unwrap_or_else(|e| fail(e.to_string()));
    if let Err(e) = client.apiserver_version().await {
        fail(format!("API server unreachable: {e}"));
    }
    client
}

/// A client acting as `user` (admin impersonation), for checking what a person may do.
pub async fn client_as(user: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("reading the kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).unwrap()
}

/// Whether the API server answered 403 Forbidden.
pub fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(s)) if s.code == 403)
}

/// A short random suffix for names that must not collide across tests and runs.
pub fn unique(prefix: &str) -> String {
    let n: u32 = rand::random();
    format!("{prefix}-{n:08x}")
}

/// Installs the operator's CRDs (server-side apply, idempotent) and waits until established.
pub async fn install_crds(client: &Client) {
    let api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for crd in crd::all() {
        let name = crd.name_any();
        api.patch(&name, &PatchParams::apply("payi-tests").force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("installing CRD {name}: {e}"));
        tokio::time::timeout(TIMEOUT, await_condition(api.clone(), &name, conditions::is_crd_established()))
            .await
            .unwrap_or_else(|_| panic!("CRD {name} not established"))
            .unwrap();
    }
}

/// One test's world: a client, a fresh namespace, the CRDs installed.
pub struct TestEnv {
    pub client: Client,
    pub namespace: String,
    /// Cluster-scoped objects made through this env's helpers, deleted on drop.
    created: Mutex<Vec<(&'static str, String)>>,
}

impl TestEnv {
    pub async fn new(prefix: &str) -> Self {
        let client = client().await;
        install_crds(&client).await;
        let namespace = unique(prefix);
        create_namespace(&client, &namespace, &[]).await;
        Self { client, namespace, created: Mutex::default() }
    }

    pub fn apps(&self) -> Api<Application> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    pub fn groups(&self) -> Api<Group> {
        Api::all(self.client.clone())
    }
    pub fn orgs(&self) -> Api<Organization> {
        Api::all(self.client.clone())
    }

    /// Creates any object of this test from JSON (namespaced kinds go to the test namespace).
    pub async fn create_app(&self, name: &str, group: &str) -> Application {
        let app: Application = serde_json::from_value(json!({
            "apiVersion": "payi.io/v1alpha1", "kind": "Application",
            "metadata": {"name": name},
            "spec": {"groupRef": {"name": group}}
        }))
        .unwrap();
        self.apps().create(&PostParams::default(), &app).await.unwrap()
    }

    /// A Group admitting this test's namespace by name.
    /// Creates an Application in `group` with `spec`'s fields added to its spec,
    /// waits for its key, and returns the key.
    pub async fn create_app_with_key(&self, name: &str, group: &str, spec: serde_json::Value) -> String {
        let mut body = json!({"groupRef": {"name": group}});
        body.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
        let app: Application = serde_json::from_value(json!({
            "apiVersion": "payi.io/v1alpha1", "kind": "Application", "metadata": {"name": name}, "spec": body
        }))
        .unwrap();
        self.apps().create(&PostParams::default(), &app).await.unwrap();
        app_with_reason(self, name, "KeyIssued").await;
        key_of(&self.secrets().get(&format!("{name}-payi-key")).await.unwrap())
    }

    pub async fn create_group(&self, name: &str, org: &str) -> Group {
        let group: Group = serde_json::from_value(json!({
            "apiVersion": "payi.io/v1alpha1", "kind": "Group",
            "metadata": {"name": name},
            "spec": {"organizationRef": {"name": org}, "namespacePolicy": {"names": [self.namespace]}}
        }))
        .unwrap();
        self.created.lock().unwrap().push(("group", name.to_string()));
        self.groups().create(&PostParams::default(), &group).await.unwrap()
    }

    pub async fn create_org(&self, name: &str, base_url: Option<&str>) -> Organization {
        let mut spec = json!({"displayName": name});
        if let Some(url) = base_url {
            spec["baseURL"] = json!(url);
        }
        let org: Organization = serde_json::from_value(json!({
            "apiVersion": "payi.io/v1alpha1", "kind": "Organization",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap();
        self.created.lock().unwrap().push(("organization", name.to_string()));
        self.orgs().create(&PostParams::default(), &org).await.unwrap()
    }

    /// A fresh Organization and a Group in it that admits this test's namespace.
    pub async fn org_and_group(&self) -> (String, String) {
        let (org, group) = (unique("org"), unique("grp"));
        self.create_org(&org, None).await;
        self.create_group(&group, &org).await;
        (org, group)
    }

    /// Events about one object in this namespace (or cluster-scoped ones, reported in `default`).
    pub async fn events_for(&self, name: &str) -> Vec<Event> {
        let mut all = vec![];
        for ns in [self.namespace.as_str(), "default"] {
            let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
            let list = api.list(&ListParams::default()).await.unwrap();
            all.extend(list.items.into_iter().filter(|e| e.involved_object.name.as_deref() == Some(name)));
        }
        all
    }
}

impl TestEnv {
    /// Waits until `reason` was reported at least `count` times about `name`. The
    /// recorder folds repeats of one reason into a single Event with a series
    /// count, so occurrences are summed, not Events counted.
    pub async fn await_events(&self, name: &str, reason: &str, count: usize) -> Vec<Event> {
        eventually(&format!("{count} {reason} Event(s) about {name}"), || async {
            let events = self.events_for(name).await;
            let matching: Vec<Event> = events.into_iter().filter(|e| e.reason.as_deref() == Some(reason)).collect();
            let occurrences: usize = matching.iter().map(occurrences).sum();
            (occurrences >= count).then_some(matching)
        })
        .await
    }
}

/// How often an Event happened: the recorder folds repeats into a series count.
pub fn occurrences(event: &Event) -> usize {
    let series = event.series.as_ref().map_or(0, |s| s.count.unwrap_or(0));
    let legacy = event.count.unwrap_or(0);
    series.max(legacy).max(1) as usize
}

pub async fn create_namespace(client: &Client, name: &str, labels: &[(&str, &str)]) {
    let api: Api<Namespace> = Api::all(client.clone());
    let labels: std::collections::BTreeMap<_, _> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

pub async fn delete<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let _ = api.delete(name, &DeleteParams::background()).await;
}

/// Polls `probe` until it yields `Some`, or panics after [`TIMEOUT`] with `what`.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(TIMEOUT, what, probe).await
}

/// [`eventually`] with a longer limit, for work that scales with object count.
pub async fn eventually_within<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            let logs = captured_logs();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!("timed out after {limit:?} waiting for {what}; last operator log lines:\n{}", tail.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads a Ready condition as (status, reason, message).
pub fn ready_of(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<(String, String, String)> {
    conditions.iter().find(|c| c.type_ == "Ready").map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the Application's Ready condition has `reason` for its current generation.
pub async fn app_with_reason(env: &TestEnv, name: &str, reason: &str) -> Application {
    eventually(&format!("Application {name} to report {reason}"), || async {
        let app = env.apps().get(name).await.ok()?;
        let status = app.status.clone()?;
        let (_, r, _) = ready_of(&status.conditions)?;
        (r == reason && status.observed_generation == app.metadata.generation).then_some(app)
    })
    .await
}

pub fn key_of(secret: &Secret) -> String {
    data_of(secret, "PAYI_API_KEY").expect("the Secret holds PAYI_API_KEY")
}

/// One data entry of a Secret as text, if present.
pub fn data_of(secret: &Secret, field: &str) -> Option<String> {
    let value = secret.data.as_ref()?.get(field)?;
    Some(String::from_utf8(value.0.clone()).expect("Secret data is text"))
}

/// Write requests the API server has served for the kinds this operator touches, by resource.
pub async fn writes(client: &Client) -> BTreeMap<String, u64> {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.expect("scraping the API server's /metrics");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let (labels, value) = line.rsplit_once(' ').unwrap();
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
            labels[start..].split('"').next()
        };
        let verb = label("verb").unwrap_or_default();
        let resource = label("resource").unwrap_or_default();
        let subresource = label("subresource").unwrap_or_default();
        let ours = ["applications", "groups", "organizations", "secrets", "events"].contains(&resource);
        let write = ["POST", "PUT", "PATCH", "APPLY", "DELETE"].contains(&verb);
        if ours && write {
            let key = if subresource.is_empty() { resource.to_string() } else { format!("{resource}/{subresource}") };
            *out.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0) as u64;
        }
    }
    out
}

/// Log lines the in-process operator wrote, for asserting what never appears in them.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

/// The operator's log of this test process, kept on disk for reading after a failure.
fn log_file() -> &'static Mutex<Option<std::fs::File>> {
    static FILE: OnceLock<Mutex<Option<std::fs::File>>> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
        let _ = std::fs::create_dir_all(&dir);
        let exe = std::env::current_exe().ok().and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()));
        let path = dir.join(format!("{}.log", exe.unwrap_or_else(|| "test".into())));
        Mutex::new(std::fs::File::create(path).ok())
    })
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        if let Some(file) = log_file().lock().unwrap().as_mut() {
            let _ = file.write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Set before the first `Operator::shared()` of a test binary (e2e_limits) to give
/// its operator the test process's shared Redis as limits ledger.
pub static OPERATOR_LIMITS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set before the first `Operator::shared()` of a test binary (e2e_usage) to have its
/// operator publish status.usage from the shared Redis (which `OPERATOR_LIMITS` implies).
pub static OPERATOR_USAGE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// status.usage of the in-process operator, when `OPERATOR_USAGE` asks for it: read
/// every second, at most 20 writes per second.
fn usage_settings() -> Option<controller::usage::Pace> {
    OPERATOR_USAGE
        .load(std::sync::atomic::Ordering::SeqCst)
        .then_some(controller::usage::Pace { every: Duration::from_secs(1), writes_per_second: 20 })
}

/// The limits ledger of the in-process operator, when `OPERATOR_LIMITS` (or
/// `OPERATOR_USAGE`) asks for it: the shared Redis (`redis::shared_url`), limits
/// status published every second.
fn limits_settings() -> Option<(Arc<payi_operator::limits::ledger::Ledger>, Duration)> {
    let wanted = |flag: &std::sync::atomic::AtomicBool| flag.load(std::sync::atomic::Ordering::SeqCst);
    if !wanted(&OPERATOR_LIMITS) && !wanted(&OPERATOR_USAGE) {
        return None;
    }
    let url = redis::shared_url();
    let metrics = Arc::new(payi_operator::limits::ledger::LedgerMetrics::default());
    let ledger = payi_operator::limits::ledger::Ledger::new(
        url,
        payi_operator::limits::ledger::Timeouts::reader(Duration::from_millis(500)),
        metrics,
    )
    .ok()?;
    Some((ledger, Duration::from_secs(1)))
}

/// An operator running in this test process on its own runtime and thread.
pub struct Operator {
    pub metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Operator {
    /// Starts the controllers against the test control plane.
    pub fn start() -> Self {
        static TRACING: OnceLock<()> = OnceLock::new();
        TRACING.get_or_init(|| {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("debug,kube=info,hyper=info,tower=info,rustls=info")
                .with_writer(|| Capture)
                .with_ansi(false)
                .try_init();
        });
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let m = metrics.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("operator runtime");
            runtime.block_on(async move {
                install_crds(&client().await).await;
                let client = operator_client().await;
                let shutdown = futures::FutureExt::shared(async move {
                    let _ = stopped.await;
                });
                let settings = Settings {
                    resync: Duration::from_secs(3600),
                    concurrency: 8,
                    limits: limits_settings(),
                    usage: usage_settings(),
                };
                let health = Arc::new(payi_operator::health::Health::default());
                health.set_leading(true);
                controller::run(
                    client,
                    settings,
                    m,
                    health,
                    payi_operator::leader::Leadership::unconditional(),
                    shutdown,
                )
                .await;
            });
        });
        Self { metrics, stop: Some(stop), thread: Some(thread) }
    }

    /// The operator shared by all tests of one test binary; never stopped.
    pub fn shared() -> &'static Operator {
        static SHARED: OnceLock<Operator> = OnceLock::new();
        SHARED.get_or_init(Operator::start)
    }

    /// Stops the controllers and waits for in-flight reconciles to finish.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `hack/testenv.sh restart <component> <seconds down>` against the control
/// plane of this test run (the one whose kubeconfig the tests use), returning
/// once the API server answers `/readyz` again.
pub async fn restart_component(component: &str, seconds_down: u32) {
    let dir = kubeconfig_path().parent().map(PathBuf::from).expect("the kubeconfig lives in the testenv dir");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hack/testenv.sh");
    let status = tokio::process::Command::new(script)
        .args(["restart", component, &seconds_down.to_string()])
        .env("TESTENV_DIR", &dir)
        .status()
        .await
        .expect("running hack/testenv.sh restart");
    assert!(status.success(), "hack/testenv.sh restart {component} failed: {status}");
}

/// Fingerprints of the `PAYI_API_KEY` of every key Secret in `namespace`, by Secret name.
pub async fn key_fingerprints(client: &Client, namespace: &str) -> BTreeMap<String, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default().labels("app.kubernetes.io/managed-by=payi-operator")).await;
    let mut out = BTreeMap::new();
    for secret in list.map(|l| l.items).unwrap_or_default() {
        if let Some(key) = data_of(&secret, "PAYI_API_KEY") {
            out.insert(secret.name_any(), payi_operator::key::fingerprint(&key));
        }
    }
    out
}

impl TestEnv {
    /// Occurrences of an Event reason in this test's namespace.
    pub async fn events_for_reason(&self, reason: &str) -> usize {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = api.list(&ListParams::default()).await.unwrap();
        list.items.iter().filter(|e| e.reason.as_deref() == Some(reason)).map(occurrences).sum()
    }

    /// Deletes the test's namespace (and with it its Applications, Secrets and
    /// access objects), so a reused control plane does not pile up objects.
    pub async fn cleanup(&self) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let _ = api.delete(&self.namespace, &DeleteParams::background()).await;
    }
}

/// Tests delete what they create, so a reused control plane does not pile up
/// objects: the namespace (and with it every Application, Secret and access
/// object in it) and the Organizations and Groups made through the helpers.
/// Best effort, on a thread and client of its own, since `drop` cannot await.
impl Drop for TestEnv {
    fn drop(&mut self) {
        let namespace = self.namespace.clone();
        let created = std::mem::take(&mut *self.created.lock().unwrap_or_else(|p| p.into_inner()));
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Runtime::new() else { return };
            runtime.block_on(async move {
                let Ok(kubeconfig) = Kubeconfig::read_from(kubeconfig_path()) else { return };
                let Ok(config) = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await else {
                    return;
                };
                let Ok(client) = Client::try_from(config) else { return };
                let _ = Api::<Namespace>::all(client.clone()).delete(&namespace, &DeleteParams::background()).await;
                for (kind, name) in created {
                    let _ = match kind {
                        "group" => {
                            Api::<Group>::all(client.clone()).delete(&name, &DeleteParams::background()).await.map(drop)
                        }
                        _ => Api::<Organization>::all(client.clone())
                            .delete(&name, &DeleteParams::background())
                            .await
                            .map(drop),
                    };
                }
                // Wait (bounded) until the namespace is gone, so the next test binary's operator
                // does not start with thousands of objects being deleted.
                let namespaces = Api::<Namespace>::all(client.clone());
                for _ in 0..600 {
                    if matches!(namespaces.get_opt(&namespace).await, Ok(None) | Err(_)) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}
