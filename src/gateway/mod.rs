//! The metering AI gateway (`payi-operator gateway`): a reverse proxy that
//! workloads call instead of the AI provider. It checks the key in-process with
//! the verifier's index and watches ([`crate::verifier::KeyIndex`]), forwards to the
//! provider with the provider's credential, reads the usage the provider reports,
//! and counts tokens and cost per Organization, Group, Application and use case.
//!
//! - `providers`: which providers, and how a path picks one (pure).
//! - `body`: the request body: model, streaming, and asking for streamed usage (pure).
//! - `usage`: the usage a provider reports, from a JSON body or an SSE stream (pure).
//! - `json_scan`: the few values the meter needs, read out of JSON as it passes (pure).
//! - `sse`: an event stream's events as they pass, in any chunking (pure).
//! - `budget`: the request bytes held in flight, bounded as a whole.
//! - `estimate`: the prompt of a stream cut before its usage, by tokenizer (pure).
//! - `encoding`: compressed answers decoded for metering, within a bound (pure).
//! - `headers`: the one deny filter over the headers that leave for a provider (pure).
//! - `pricing`: the price table (USD per million tokens), reloadable.
//! - `payi_api`: Pay-i's own API beside the proxy: ingest and request results.
//! - `proxy`: one request, from the key check to the metered response.
//! - `metered`: response bodies that count usage as they pass.
//! - `metrics`: tokens, cost, outcomes and latencies.
//! - `connections`: client connections' time bounds and caps (pure decisions, and the hooks that feed them).
//! - `server`: the HTTP/1.1 and HTTP/2 listener with a bounded drain.

pub mod body;
pub mod budget;
pub mod connections;
pub mod encoding;
pub mod estimate;
pub mod headers;
pub mod json_scan;
pub mod metered;
pub mod metrics;
pub mod payi_api;
pub mod pricing;
pub mod providers;
pub mod proxy;
pub mod server;
pub mod sse;
pub mod usage;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;

use crate::limits::connect::Target;
use crate::limits::ledger::{Ledger, LedgerMetrics, Timeouts};
use crate::verifier::{self, KeyIndex};
use pricing::{PriceTable, Prices, Unpriced};
use providers::Providers;
use proxy::{Credentials, Gateway, HttpsClient, LedgerPolicy, Limits};

/// Command-line settings of `payi-operator gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address of the proxy (HTTP/1.1 and cleartext HTTP/2).
    #[arg(long, env = "PAYI_GATEWAY_ADDR", default_value = "0.0.0.0:8000")]
    pub listen_addr: SocketAddr,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "PAYI_GATEWAY_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Seconds a watch of Organizations, Groups or Applications may keep failing
    /// before /readyz answers 503: the key index can no longer be kept current.
    #[arg(long, env = "PAYI_GATEWAY_INDEX_STALE_SECONDS",
          default_value_t = crate::verifier::watch::DEFAULT_STALE_AFTER.as_secs())]
    pub index_stale_seconds: u64,
    /// Client connections open at once; a socket beyond them is closed as soon as
    /// it is accepted (counted in payi_gateway_connections_refused_total).
    #[arg(long, env = "PAYI_GATEWAY_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Client connections open at once from one IP address (0: no such cap). Behind
    /// a proxy or SNAT every client has the proxy's address: leave it 0 there.
    #[arg(long, env = "PAYI_GATEWAY_MAX_CONNECTIONS_PER_PEER", default_value_t = 0)]
    pub max_connections_per_peer: u64,
    /// Milliseconds from accept to a connection's first complete request (HTTP/1.1
    /// head, or HTTP/2 preface, SETTINGS and HEADERS), and from a later HTTP/1.1
    /// head's first byte to its end.
    #[arg(long, env = "PAYI_GATEWAY_CONNECTION_HEAD_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub connection_head_ms: u64,
    /// Milliseconds a client connection may stay open with no request in flight
    /// (HTTP/1.1 keep-alive, HTTP/2 with no stream); an open stream is never idle.
    #[arg(long, env = "PAYI_GATEWAY_CONNECTION_IDLE_MS", default_value_t = 120_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub connection_idle_ms: u64,
    /// Milliseconds between HTTP/2 keep-alive PINGs to clients (0: none); a PING not
    /// answered within --connection-ping-timeout-ms closes the connection.
    #[arg(long, env = "PAYI_GATEWAY_CONNECTION_PING_MS", default_value_t = 30_000)]
    pub connection_ping_ms: u64,
    /// Milliseconds an HTTP/2 client has to acknowledge a keep-alive PING.
    #[arg(long, env = "PAYI_GATEWAY_CONNECTION_PING_TIMEOUT_MS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub connection_ping_timeout_ms: u64,
    /// The providers file (YAML, see docs/ai-gateway.md).
    #[arg(long, env = "PAYI_GATEWAY_PROVIDERS")]
    pub providers_file: PathBuf,
    /// A price table (YAML) replacing the shipped one; re-read while running.
    #[arg(long, env = "PAYI_GATEWAY_PRICES")]
    pub prices_file: Option<PathBuf>,
    /// How often the price table and the provider credential files are re-read, in seconds.
    #[arg(long, env = "PAYI_GATEWAY_RELOAD_SECONDS", default_value_t = 10)]
    pub reload_seconds: u64,
    /// A header that carries the payi key, read before `xProxy-Api-Key` and `Authorization`.
    #[arg(long, env = "PAYI_GATEWAY_KEY_HEADER")]
    pub key_header: Option<String>,
    /// Request bodies larger than this many bytes get 413 before any upstream call.
    #[arg(long, env = "PAYI_GATEWAY_MAX_REQUEST_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// The most bytes of request bodies (and of what reading answers holds) the gateway
    /// holds at once; a request that would pass it gets 503 `gateway_busy`. Keep it
    /// well under the memory limit (docs/ai-gateway.md, "Memory bounds"); at least 8/7
    /// of --max-request-bytes.
    #[arg(long, env = "PAYI_GATEWAY_MAX_BYTES_IN_FLIGHT", default_value_t = 64 * 1024 * 1024)]
    pub max_bytes_in_flight: usize,
    /// Seconds a client may take to send its request body.
    #[arg(long, env = "PAYI_GATEWAY_REQUEST_BODY_SECONDS", default_value_t = 30)]
    pub request_body_seconds: u64,
    /// Seconds the provider may take to send its response headers (a long generation without streaming).
    #[arg(long, env = "PAYI_GATEWAY_UPSTREAM_TIMEOUT_SECONDS", default_value_t = 600)]
    pub upstream_timeout_seconds: u64,
    /// Seconds the provider may send nothing in the middle of a body or stream.
    #[arg(long, env = "PAYI_GATEWAY_UPSTREAM_IDLE_SECONDS", default_value_t = 120)]
    pub upstream_idle_seconds: u64,
    /// The limits ledger (docs/limits.md): `redis://[user:password@]host:port[/db]`,
    /// `rediss://…` (TLS), or `redis+sentinel://[user:password@]host:port,…/<master>[/db]`
    /// (`rediss+sentinel://` with TLS). Absent: limits are not enforced. From a Secret in the chart.
    #[arg(long, env = "PAYI_GATEWAY_LIMITS_REDIS_URL", hide_env_values = true)]
    pub limits_redis_url: Option<String>,
    /// The CA (PEM) that signs the ledger's TLS certificates; absent: the system's roots.
    #[arg(long, env = "PAYI_GATEWAY_LIMITS_REDIS_CA_FILE")]
    pub limits_redis_ca_file: Option<PathBuf>,
    /// How long the ledger read before a request may take, in milliseconds.
    #[arg(long, env = "PAYI_GATEWAY_LIMITS_TIMEOUT_MS", default_value_t = 100)]
    pub limits_timeout_ms: u64,
    /// How long one batch of charges may take, in milliseconds (off the request path;
    /// a batch whose answer is late is sent again and charges nothing twice).
    #[arg(long, env = "PAYI_GATEWAY_LIMITS_CHARGE_TIMEOUT_MS", default_value_t = 1000)]
    pub limits_charge_timeout_ms: u64,
    /// How long the ledger remembers a usage event's id, in seconds; an event is
    /// retried for half of it, then given up (logged and counted).
    #[arg(long, env = "PAYI_GATEWAY_LIMITS_EVENT_TTL_SECONDS", default_value_t = 3600)]
    pub limits_event_ttl_seconds: u64,
    /// How long a block limit holds a request's reserved cost when the request never
    /// settles it (its replica was killed), in seconds.
    #[arg(long, env = "PAYI_GATEWAY_LIMITS_RESERVATION_HOLD_SECONDS", default_value_t = 900)]
    pub limits_reservation_hold_seconds: u64,
    /// Output tokens a block limit reserves for a request that sets no `max_tokens`
    /// (nor `max_completion_tokens`, `max_output_tokens`).
    #[arg(long, env = "PAYI_GATEWAY_LIMITS_DEFAULT_OUTPUT_TOKENS", default_value_t = 4096)]
    pub limits_default_output_tokens: u64,
    /// USD a block limit reserves for a request whose model the price table does not know.
    #[arg(long, env = "PAYI_GATEWAY_LIMITS_UNPRICED_RESERVATION_USD", default_value = "1")]
    pub limits_unpriced_reservation_usd: String,
    /// Refuse requests covered by a block limit (503) while the ledger cannot be read,
    /// instead of letting them through uncounted against the limit (the default).
    #[arg(long, env = "PAYI_GATEWAY_LIMITS_FAIL_CLOSED")]
    pub limits_fail_closed: bool,
    /// Seconds added to the clock that picks limit windows: for tests of window rollover.
    #[arg(
        long,
        env = "PAYI_GATEWAY_LIMITS_TIME_OFFSET_SECONDS",
        default_value_t = 0,
        hide = true,
        allow_hyphen_values = true
    )]
    pub limits_time_offset_seconds: i64,
    /// After SIGTERM, seconds in-flight requests and streams get to finish.
    #[arg(long, env = "PAYI_GATEWAY_DRAIN_SECONDS", default_value_t = 25)]
    pub drain_seconds: u64,
    /// After the drain, seconds for the requests just closed to be counted, and
    /// again for queued charges to reach the ledger.
    #[arg(long, env = "PAYI_GATEWAY_SETTLE_SECONDS", default_value_t = 5)]
    pub settle_seconds: u64,
    /// After everything is counted and charged, seconds `/metrics` stays up so a last
    /// scrape sees the final counts (set it to the scrape interval where a replica's
    /// last seconds matter; the pod's grace period must cover it).
    #[arg(long, env = "PAYI_GATEWAY_METRICS_LINGER_SECONDS", default_value_t = 0)]
    pub metrics_linger_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Listen(#[from] verifier::Error),
    #[error("reading the providers file {path}: {source}")]
    ProvidersFile { path: PathBuf, source: std::io::Error },
    #[error("the providers file {path}: {source}")]
    Providers { path: PathBuf, source: Box<providers::ProvidersError> },
    #[error("the price table {path}: {source}")]
    Prices { path: PathBuf, source: pricing::PricingError },
    #[error("the shipped price table: {0}")]
    DefaultPrices(pricing::PricingError),
    #[error(transparent)]
    Ledger(#[from] crate::limits::ledger::LedgerError),
    #[error("--limits-unpriced-reservation-usd: {0}")]
    UnpricedReservation(crate::money::MoneyError),
    #[error("TLS setup for the providers: {0}")]
    Tls(rustls::Error),
    #[error(
        "--max-bytes-in-flight {budget} leaves {large} bytes for large bodies, less than --max-request-bytes {max}: \
         a body of the largest size allowed could never be taken"
    )]
    BudgetTooSmall { budget: usize, large: usize, max: usize },
}

/// Runs the gateway until `shutdown` resolves, then drains.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Clone + 'static,
) -> Result<(), Error> {
    let providers = read_providers(&settings.providers_file)?;
    let prices = Arc::new(Prices::new(PriceTable::default_table().map_err(Error::DefaultPrices)?));
    if let Some(path) = &settings.prices_file {
        prices.reload_from(path).map_err(|source| Error::Prices { path: path.clone(), source })?;
    }
    let listener = verifier::bind(settings.listen_addr).await?;
    let ops = verifier::bind(settings.metrics_addr).await?;
    let mut registry = Registry::default();
    let key_header = settings.key_header.as_deref();
    let stale_after = Duration::from_secs(settings.index_stale_seconds);
    let keys = KeyIndex::start_with(client, &mut registry, stale_after, |index, metrics| {
        verifier::Verifier::new(index, metrics, key_header, false).with_provider_key_headers()
    });
    let metrics = Arc::new(metrics::Metrics::default());
    metrics.register(&mut registry);
    let budget = budget_of(&settings)?;
    metrics::register_budget(&mut registry, &budget);
    let connection_metrics = Arc::new(metrics::ConnectionMetrics::default());
    connection_metrics.register(&mut registry);
    let credentials = Credentials::default();
    credentials.reload(&providers);
    let ledger = match &settings.limits_redis_url {
        Some(url) => {
            let metrics = Arc::new(LedgerMetrics::default());
            metrics.register(&mut registry);
            let timeouts = Timeouts {
                check: Duration::from_millis(settings.limits_timeout_ms),
                charge: Duration::from_millis(settings.limits_charge_timeout_ms),
                event_ttl: Duration::from_secs(settings.limits_event_ttl_seconds),
            };
            let target = Target { url: url.clone(), ca_file: settings.limits_redis_ca_file.clone() };
            Some(Ledger::open(&target, timeouts, metrics)?)
        }
        None => None,
    };
    let charges = ledger.clone().map(|l| tokio::spawn(l.run()));
    tokio::task::spawn_blocking(estimate::preload);
    let gateway = Arc::new(Gateway {
        verifier: keys.verifier.clone(),
        providers,
        credentials,
        client: https_client()?,
        metrics,
        prices,
        unpriced: Arc::new(Unpriced::default()),
        limits: Limits {
            max_request_bytes: settings.max_request_bytes,
            request_body_timeout: Duration::from_secs(settings.request_body_seconds),
            upstream_timeout: Duration::from_secs(settings.upstream_timeout_seconds),
            upstream_idle: Duration::from_secs(settings.upstream_idle_seconds),
        },
        budget,
        ledger: ledger.clone(),
        ledger_policy: LedgerPolicy {
            hold: Duration::from_secs(settings.limits_reservation_hold_seconds.max(1)),
            default_output_tokens: settings.limits_default_output_tokens,
            unpriced_reservation: crate::money::parse_scaled(&settings.limits_unpriced_reservation_usd, 12)
                .map(crate::money::PicoUsd)
                .map_err(Error::UnpricedReservation)?,
            fail_closed: settings.limits_fail_closed,
            time_offset: chrono::TimeDelta::seconds(settings.limits_time_offset_seconds),
        },
    });
    tracing::info!(
        addr = %settings.listen_addr, metrics = %settings.metrics_addr,
        providers = ?gateway.providers.providers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        "gateway starting"
    );
    let reload = tokio::spawn(reload_loop(gateway.clone(), settings.prices_file.clone(), settings.reload_seconds));
    let ops_router = verifier::http::ops_router(Arc::new(registry), keys.synced.clone());
    // Metrics are served until the very end: what the last streams spend during
    // the drain must still be scraped.
    let (ops_stop, ops_stopped) = tokio::sync::oneshot::channel::<()>();
    let ops = tokio::spawn(async move {
        let stopped = async {
            let _ = ops_stopped.await;
        };
        if let Err(error) = axum::serve(ops, ops_router).with_graceful_shutdown(stopped).await {
            tracing::error!(%error, "gateway metrics server stopped");
        }
    });
    server::serve(
        listener,
        gateway.clone(),
        connections(&settings),
        connection_metrics,
        Duration::from_secs(settings.drain_seconds),
        shutdown,
    )
    .await;
    reload.abort();
    // The connections are closed: every request is counted now or soon (an
    // abandoned answer being read to its end).
    let settle = Duration::from_secs(settings.settle_seconds);
    if !wait_until(settle, || gateway.metrics.in_flight.get() <= 0).await {
        tracing::error!(left = gateway.metrics.in_flight.get(), "requests still not counted at shutdown");
    }
    if let Some(ledger) = &ledger {
        // Charges of the requests just drained still go to the ledger.
        let left = ledger.drain(settle).await;
        if left > 0 {
            tracing::error!(
                left,
                "usage events not charged to the ledger at shutdown (payi_limit_charges_failed_total{{reason=\"shutdown\"}})"
            );
        }
    }
    if let Some(charges) = charges {
        charges.abort();
    }
    keys.stop();
    if settings.metrics_linger_seconds > 0 {
        tracing::info!(seconds = settings.metrics_linger_seconds, "gateway settled; metrics served a little longer");
        tokio::time::sleep(Duration::from_secs(settings.metrics_linger_seconds)).await;
    }
    let _ = ops_stop.send(());
    let _ = ops.await;
    tracing::info!("gateway stopped");
    Ok(())
}

/// The budget of bytes in flight; it must take a body of the largest size allowed.
fn budget_of(settings: &Settings) -> Result<Arc<budget::Budget>, Error> {
    let capacity = settings.max_bytes_in_flight;
    let large = capacity - capacity / budget::SMALL_SHARE;
    if large < settings.max_request_bytes {
        return Err(Error::BudgetTooSmall { budget: capacity, large, max: settings.max_request_bytes });
    }
    Ok(budget::Budget::new(capacity))
}

/// The client connections' bounds from the flags.
fn connections(settings: &Settings) -> server::Connections {
    let max_open = usize::try_from(settings.max_connections).unwrap_or(usize::MAX);
    connections::raise_open_files_limit(max_open);
    server::Connections {
        bounds: connections::Bounds {
            head: Duration::from_millis(settings.connection_head_ms),
            idle: Duration::from_millis(settings.connection_idle_ms),
        },
        caps: connections::Caps {
            max_open,
            max_per_peer: usize::try_from(settings.max_connections_per_peer).unwrap_or(usize::MAX),
        },
        ping_interval: (settings.connection_ping_ms > 0).then(|| Duration::from_millis(settings.connection_ping_ms)),
        ping_timeout: Duration::from_millis(settings.connection_ping_timeout_ms),
    }
}

/// Polls `done` every 20 ms for at most `bound`; whether it became true.
async fn wait_until(bound: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn read_providers(path: &PathBuf) -> Result<Providers, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ProvidersFile { path: path.clone(), source })?;
    Providers::parse(&text).map_err(|source| Error::Providers { path: path.clone(), source: Box::new(source) })
}

/// How long a TCP connection to a provider may take to open.
pub const PROVIDER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle connections kept per provider host. Each holds its buffers (tens of KiB
/// with TLS): after a burst of thousands of concurrent HTTP/1.1 streams the pool
/// would otherwise keep them all for the idle timeout.
pub const PROVIDER_IDLE_CONNECTIONS: usize = 256;

/// HTTP/1.1 and HTTP/2 (by ALPN) to the providers, over rustls with the system's
/// roots; plain http for in-cluster OpenAI-compatible servers.
pub fn https_client() -> Result<HttpsClient, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_provider_and_native_roots(provider.clone()) {
        Ok(builder) => builder,
        Err(error) => {
            tracing::warn!(%error, "no system CA certificates: https providers will fail to connect");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(Error::Tls)?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    // Nagle's algorithm would hold a small request body behind the head for an
    // acknowledgement; a provider that does not answer SYN should fail fast, not
    // after the kernel's two minutes of retries.
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(PROVIDER_CONNECT_TIMEOUT));
    let connector = builder.https_or_http().enable_http1().enable_http2().wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(PROVIDER_IDLE_CONNECTIONS)
        .build(connector);
    Ok(client)
}

/// Re-reads the price table and the provider credentials, so a changed ConfigMap
/// or a rotated Secret (both mounted files) takes effect without a restart.
async fn reload_loop(gateway: Arc<Gateway>, prices_file: Option<PathBuf>, seconds: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(seconds.max(1)));
    tick.tick().await;
    loop {
        tick.tick().await;
        gateway.credentials.reload(&gateway.providers);
        if let Some(path) = &prices_file {
            match gateway.prices.reload_from(path) {
                Ok(true) => tracing::info!(path = %path.display(), "price table reloaded"),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "price table not reloaded; keeping the last good one")
                }
            }
        }
    }
}
