//! The gateway key verifier (`payi-operator verifier`): answers "is this key live,
//! and whose is it?" for AI gateways, from an in-memory index of the key digests
//! the operator publishes in Application status. It reads no Secrets and needs
//! no leader: every replica watches and answers on its own.
//!
//! - `index`: the pure index and its rules.
//! - `watch`: watches of the three kinds feeding it.
//! - `http`: forward-auth, and `/healthz`, `/readyz`, `/metrics`.
//! - `grpc`: Envoy's `envoy.service.auth.v3.Authorization/Check`.
//! - `metrics`: request counters per Application, use case and decision.
//! - `use_case`: the use case, run and user a request names, checked against its Application.

pub mod grpc;
pub mod http;
pub mod index;
pub mod metrics;
pub mod use_case;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::registry::Registry;

use index::{Attribution, Decision, Index};
use use_case::{Refusal, RequestContext};

/// Command-line settings of `payi-operator verifier`.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address of the HTTP forward-auth endpoint (any path).
    #[arg(long, env = "PAYI_VERIFIER_HTTP_ADDR", default_value = "0.0.0.0:8000")]
    pub http_addr: SocketAddr,
    /// Address of the Envoy ext_authz v3 gRPC endpoint.
    #[arg(long, env = "PAYI_VERIFIER_GRPC_ADDR", default_value = "0.0.0.0:9000")]
    pub grpc_addr: SocketAddr,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "PAYI_VERIFIER_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// A header that carries the key as its whole value (or as `Bearer <key>`), read
    /// before Pay-i's `xProxy-Api-Key` and `Authorization: Bearer <key>`, e.g. `x-api-key`.
    #[arg(long, env = "PAYI_VERIFIER_KEY_HEADER")]
    pub key_header: Option<String>,
    /// In gRPC OK answers, tell Envoy to remove the header the key came in, so the
    /// upstream never sees it.
    #[arg(long, env = "PAYI_VERIFIER_STRIP_KEY_HEADER")]
    pub strip_key_header: bool,
    /// Seconds a watch of Organizations, Groups or Applications may keep failing
    /// before /readyz answers 503: the key index can no longer be kept current.
    #[arg(long, env = "PAYI_VERIFIER_INDEX_STALE_SECONDS", default_value_t = watch::DEFAULT_STALE_AFTER.as_secs())]
    pub index_stale_seconds: u64,
}

/// The shared state of both protocols: the index, the metrics, where keys come from.
pub struct Verifier {
    index: Arc<RwLock<Index>>,
    metrics: Arc<metrics::Metrics>,
    /// Lowercase: HTTP/2 and Envoy's ext_authz headers are lowercase.
    key_header: Option<String>,
    strip_key_header: bool,
    /// Read last, after `Authorization: Bearer`: the headers the provider SDKs put
    /// their api_key in (`x-api-key`, `api-key`), for the gateway, whose clients
    /// are those SDKs configured with the payi key.
    provider_key_headers: &'static [&'static str],
}

/// Where the Anthropic and Azure OpenAI SDKs send their api_key.
pub const PROVIDER_KEY_HEADERS: &[&str] = &["x-api-key", "api-key"];

impl Verifier {
    pub fn new(
        index: Arc<RwLock<Index>>,
        metrics: Arc<metrics::Metrics>,
        key_header: Option<&str>,
        strip_key_header: bool,
    ) -> Self {
        let key_header = key_header.map(str::to_ascii_lowercase).filter(|h| !h.is_empty());
        Self { index, metrics, key_header, strip_key_header, provider_key_headers: &[] }
    }

    /// Also reads the key from the provider SDKs' own key headers (the gateway).
    pub fn with_provider_key_headers(mut self) -> Self {
        self.provider_key_headers = PROVIDER_KEY_HEADERS;
        self
    }

    /// The key a request presents and the header it came in; see [`presented_key`].
    pub fn presented_key<'a>(&self, header: impl Fn(&str) -> Option<&'a str>) -> Option<(&'a str, String)> {
        presented_key(self.key_header.as_deref(), &header)
            .or_else(|| self.provider_key_headers.iter().find_map(|name| whole_value(name, header(name))))
    }

    /// Decides on a request now from its headers (a lookup by lowercase name), and
    /// counts the decision.
    pub fn check<'a>(&self, protocol: &'static str, header: impl Fn(&str) -> Option<&'a str> + Copy) -> Answer {
        let started = Instant::now();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let presented = self.presented_key(header);
        let verdict = match self.index.read() {
            Ok(index) => index.verify(presented.as_ref().map(|(k, _)| *k), now_ms),
            Err(poisoned) => poisoned.into_inner().verify(presented.as_ref().map(|(k, _)| *k), now_ms),
        };
        let key_header = presented.map(|(_, h)| h);
        let mut answer = Answer {
            decision: verdict.decision,
            attribution: verdict.attribution,
            context: RequestContext::default(),
            refusal: None,
            key_header,
        };
        if let Some(attribution) = answer.attribution.as_ref().filter(|_| answer.decision.is_allowed()) {
            match use_case::resolve(&attribution.use_cases, header) {
                Ok(context) => answer.context = context,
                Err(refusal) => {
                    answer.decision = match refusal {
                        Refusal::Undeclared(_) | Refusal::NoSuchVersion { .. } => Decision::UseCaseRefused,
                        _ => Decision::BadHeader,
                    };
                    answer.refusal = Some(refusal);
                }
            }
        }
        self.metrics.observe(protocol, &answer, started.elapsed());
        answer
    }

    /// Whether OK answers tell the gateway to remove the key's header.
    pub fn strips_key_header(&self) -> bool {
        self.strip_key_header
    }
}

/// The verifier's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub decision: Decision,
    /// Whose key it was, when the index knows (also for some refusals; never sent then).
    pub attribution: Option<Attribution>,
    /// The use case, run and user, when allowed.
    pub context: RequestContext,
    /// Why a good key's request was refused.
    pub refusal: Option<Refusal>,
    /// The (lowercase) header the key came in.
    pub key_header: Option<String>,
}

impl Answer {
    /// The attribution, only when the request is allowed.
    pub fn allowed(&self) -> Option<&Attribution> {
        self.attribution.as_ref().filter(|_| self.decision.is_allowed())
    }

    /// What a refused client reads: the use-case refusal in words, else the decision's reason.
    pub fn reason(&self) -> String {
        match &self.refusal {
            Some(refusal) => refusal.to_string(),
            None => self.decision.reason().to_string(),
        }
    }
}

/// The key in a request: the configured header's value (optionally `Bearer <key>`),
/// else Pay-i's `xProxy-Api-Key`, else the credentials of `Authorization: Bearer
/// <key>`. Returns the key and the (lowercase) header it came in.
pub fn presented_key<'a>(
    key_header: Option<&str>,
    header: impl Fn(&str) -> Option<&'a str>,
) -> Option<(&'a str, String)> {
    for name in key_header.into_iter().chain([use_case::XPROXY_API_KEY]) {
        if let Some(found) = whole_value(name, header(name)) {
            return Some(found);
        }
    }
    let credentials = bearer(header("authorization")?)?;
    Some((credentials, "authorization".to_string()))
}

/// A header whose whole value (or its `Bearer` credentials) is the key.
fn whole_value<'a>(name: &str, value: Option<&'a str>) -> Option<(&'a str, String)> {
    let value = value?;
    let value = bearer(value).unwrap_or(value).trim();
    (!value.is_empty()).then(|| (value, name.to_string()))
}

/// The credentials of a `Bearer` authorization value (the scheme is case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim()).filter(|c| !c.is_empty())
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// The key index the verifier and the gateway share, fed by its watches: one
/// implementation of "which keys are live", whichever process answers.
pub struct KeyIndex {
    pub verifier: Arc<Verifier>,
    pub synced: Arc<watch::Synced>,
    watches: tokio::task::JoinHandle<()>,
}

impl KeyIndex {
    /// Starts the watches of the three kinds; registers the key-check metrics.
    pub fn start(
        client: kube::Client,
        registry: &mut Registry,
        stale_after: Duration,
        key_header: Option<&str>,
        strip: bool,
    ) -> Self {
        Self::start_with(client, registry, stale_after, |index, metrics| {
            Verifier::new(index, metrics, key_header, strip)
        })
    }

    /// Starts the watches with a verifier `make` builds over the index and metrics.
    pub fn start_with(
        client: kube::Client,
        registry: &mut Registry,
        stale_after: Duration,
        make: impl FnOnce(Arc<RwLock<Index>>, Arc<metrics::Metrics>) -> Verifier,
    ) -> Self {
        let index = Arc::new(RwLock::new(Index::default()));
        let metrics = Arc::new(metrics::Metrics::default());
        metrics.register(registry);
        let synced = Arc::new(watch::Synced::with_stale_after(stale_after));
        let verifier = Arc::new(make(index.clone(), metrics.clone()));
        let watches = tokio::spawn(watch::run(client, index, metrics, synced.clone()));
        Self { verifier, synced, watches }
    }

    pub fn stop(&self) {
        self.watches.abort();
    }
}

/// Binds a listener, naming the address on failure.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Listen { addr, source })
}

/// Runs the watches and the three servers until `shutdown` resolves.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Clone + 'static,
) -> Result<(), Error> {
    // Bind everything first, so a taken port stops the verifier at start.
    let http = bind(settings.http_addr).await?;
    let grpc = bind(settings.grpc_addr).await?;
    let ops = bind(settings.metrics_addr).await?;
    let mut registry = Registry::default();
    let stale_after = Duration::from_secs(settings.index_stale_seconds);
    let keys =
        KeyIndex::start(client, &mut registry, stale_after, settings.key_header.as_deref(), settings.strip_key_header);
    tracing::info!(
        http = %settings.http_addr, grpc = %settings.grpc_addr, metrics = %settings.metrics_addr,
        key_header = ?settings.key_header, strip_key_header = settings.strip_key_header,
        "verifier starting"
    );

    let serve = |listener, router: axum::Router, what: &'static str| {
        let shutdown = shutdown.clone();
        async move {
            if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
                tracing::error!(%error, what, "HTTP server stopped");
            }
        }
    };
    let http = tokio::spawn(serve(http, http::forward_auth_router(keys.verifier.clone()), "forward-auth"));
    let ops = tokio::spawn(serve(ops, http::ops_router(Arc::new(registry), keys.synced.clone()), "metrics"));
    let grpc = tokio::spawn(grpc::serve(grpc, keys.verifier.clone(), shutdown.clone()));

    shutdown.await;
    keys.stop();
    for server in [http, ops, grpc] {
        let _ = server.await;
    }
    tracing::info!("verifier stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from<'a>(headers: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    #[test]
    fn the_key_comes_from_a_bearer_authorization_or_the_configured_header() {
        let bearer = [("authorization", "Bearer payi_abc")];
        assert_eq!(presented_key(None, from(&bearer)), Some(("payi_abc", "authorization".into())));
        assert_eq!(presented_key(None, from(&[("authorization", "bearer   payi_abc ")])).unwrap().0, "payi_abc");
        assert_eq!(presented_key(None, from(&[("authorization", "Basic dXNlcjpwYXNz")])), None);
        assert_eq!(presented_key(None, from(&[("authorization", "Bearer ")])), None);
        assert_eq!(presented_key(None, from(&[("x-api-key", "payi_abc")])), None);

        let both = [("x-api-key", "payi_custom"), ("authorization", "Bearer payi_bearer")];
        assert_eq!(presented_key(Some("x-api-key"), from(&both)), Some(("payi_custom", "x-api-key".into())));
        assert_eq!(presented_key(Some("x-api-key"), from(&[("x-api-key", "Bearer payi_x")])).unwrap().0, "payi_x");
        // Pay-i's own header comes after the configured one and before Authorization.
        let payi = [("xproxy-api-key", "payi_x"), ("authorization", "Bearer sk-provider")];
        assert_eq!(presented_key(None, from(&payi)), Some(("payi_x", "xproxy-api-key".into())));
        assert_eq!(presented_key(Some("x-api-key"), from(&payi)).unwrap().1, "xproxy-api-key");
        // Falls back to Authorization when the configured header is absent or empty.
        assert_eq!(presented_key(Some("x-api-key"), from(&bearer)).unwrap().0, "payi_abc");
        let empty = [("x-api-key", " "), ("authorization", "Bearer payi_abc")];
        assert_eq!(presented_key(Some("x-api-key"), from(&empty)).unwrap().1, "authorization");
    }
}
