//! The limits ledger in Redis, shared by every gateway replica.
//!
//! - **Check** (before the provider is called): one `MGET` of the counters of
//!   every limit that covers the request, bounded by a timeout.
//! - **Charge** (after the answer, off the request path): one Lua script that
//!   `INCRBY`s every counter by the request's cost in micro-USD and sets each new
//!   counter's expiry to the end of its window (plus a day), atomically, in one
//!   round trip. Charges wait in a bounded in-memory queue; when Redis is
//!   unreachable they stay there and are retried in order, so a Redis restart of
//!   a few seconds loses none. The queue's bound (`MAX_QUEUED`) is the memory a
//!   long outage may take; beyond it the oldest charge is dropped and counted.
//!
//! Counters are integers (micro-USD), so replicas never disagree on rounding.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use redis::aio::ConnectionManager;
use tokio::sync::Notify;

/// Charges kept while Redis cannot take them.
pub const MAX_QUEUED: usize = 100_000;

const CHARGE: &str = r"
local amount = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('INCRBY', key, amount)
  local ttl = tonumber(ARGV[i + 1])
  if ttl > 0 and redis.call('TTL', key) < 0 then
    redis.call('EXPIRE', key, ttl)
  end
end
return out
";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the limits ledger URL is not valid: {0}")]
    Url(#[source] redis::RedisError),
    #[error("the limits ledger did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the limits ledger failed: {0}")]
    Redis(#[from] redis::RedisError),
}

/// One counter to charge: its key and its expiry in seconds (`None`: never).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerKey {
    pub key: String,
    pub ttl: Option<u64>,
}

#[derive(Clone, Debug)]
struct Charge {
    counters: Vec<LedgerKey>,
    micro_usd: u64,
    /// The limit ids of the counters, for the spend gauges.
    ids: Vec<Arc<str>>,
}

#[derive(Default)]
pub struct LedgerMetrics {
    pub errors: Counter,
    pub queued: Gauge,
    pub dropped: Counter,
    pub unchecked: Counter,
    /// Requests refused by each block limit.
    pub refused: Family<LimitLabels, Counter>,
    /// Spend and maximum per limit, as this replica last saw them.
    pub spend: Family<LimitLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub max: Family<LimitLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The spend at which each limit is at risk (`max` × `threshold`).
    pub threshold: Family<LimitLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: String,
}

impl LedgerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("payi_limit");
        r.register(
            "ledger_errors",
            "Ledger reads and charges that failed (Redis down, slow or refusing)",
            self.errors.clone(),
        );
        r.register("charges_queued", "Charges waiting for the ledger in this replica", self.queued.clone());
        r.register(
            "charges_dropped",
            "Charges dropped because the queue was full during an outage",
            self.dropped.clone(),
        );
        r.register(
            "unchecked_requests",
            "Requests let through without a limit check because the ledger did not answer (fail-open)",
            self.unchecked.clone(),
        );
        r.register(
            "spend_usd",
            "Spend of each limit's current window, as last charged by this replica",
            self.spend.clone(),
        );
        r.register("max_usd", "Maximum of each limit", self.max.clone());
        r.register("refused_requests", "Requests refused because a block limit was spent", self.refused.clone());
        r.register(
            "threshold_usd",
            "Spend at which each limit is at risk (max times threshold)",
            self.threshold.clone(),
        );
    }
}

pub struct Ledger {
    connection: ConnectionManager,
    script: redis::Script,
    queue: Mutex<VecDeque<Charge>>,
    wake: Notify,
    timeout: Duration,
    pub metrics: Arc<LedgerMetrics>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("Ledger").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger at `url` (`redis://[user:password@]host:port/db`); connects lazily
    /// and reconnects by itself, so a Redis that is down at start is not an error.
    pub fn new(url: &str, timeout: Duration, metrics: Arc<LedgerMetrics>) -> Result<Arc<Self>, LedgerError> {
        let client = redis::Client::open(url).map_err(LedgerError::Url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Arc::new(Self {
            connection,
            script: redis::Script::new(CHARGE),
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            timeout,
            metrics,
        }))
    }

    /// The counters' current values (0 for absent ones), in one round trip.
    pub async fn spent(&self, keys: &[String]) -> Result<Vec<u64>, LedgerError> {
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let mut connection = self.connection.clone();
        let mut mget = redis::cmd("MGET");
        mget.arg(keys);
        let read = mget.query_async::<Vec<Option<u64>>>(&mut connection);
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(values)) => Ok(values.into_iter().map(Option::unwrap_or_default).collect()),
            Ok(Err(error)) => {
                self.metrics.errors.inc();
                Err(error.into())
            }
            Err(_) => {
                self.metrics.errors.inc();
                Err(LedgerError::Timeout(self.timeout))
            }
        }
    }

    /// Queues a charge; [`Ledger::run`] applies it.
    pub fn charge(&self, counters: Vec<LedgerKey>, ids: Vec<Arc<str>>, micro_usd: u64) {
        if counters.is_empty() || micro_usd == 0 {
            return;
        }
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= MAX_QUEUED {
            queue.pop_front();
            self.metrics.dropped.inc();
        }
        queue.push_back(Charge { counters, micro_usd, ids });
        self.metrics.queued.set(queue.len() as i64);
        drop(queue);
        self.wake.notify_one();
    }

    /// Charges waiting (for tests and the drain on shutdown).
    pub fn queued(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Applies queued charges in order until dropped; a charge that fails stays at
    /// the head of the queue and is retried after a short pause.
    pub async fn run(self: Arc<Self>) {
        loop {
            let next = self.queue.lock().unwrap_or_else(|p| p.into_inner()).front().cloned();
            let Some(charge) = next else {
                self.wake.notified().await;
                continue;
            };
            match self.apply(&charge).await {
                Ok(totals) => {
                    let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                    queue.pop_front();
                    self.metrics.queued.set(queue.len() as i64);
                    drop(queue);
                    for (id, total) in charge.ids.iter().zip(totals) {
                        self.metrics
                            .spend
                            .get_or_create(&LimitLabels { limit: id.to_string() })
                            .set(total as f64 / 1e6);
                    }
                }
                Err(error) => {
                    self.metrics.errors.inc();
                    tracing::warn!(%error, queued = self.queued(), "limits ledger unavailable; charges kept and retried");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn apply(&self, charge: &Charge) -> Result<Vec<u64>, LedgerError> {
        let mut invocation = self.script.prepare_invoke();
        for counter in &charge.counters {
            invocation.key(&counter.key);
        }
        invocation.arg(charge.micro_usd);
        for counter in &charge.counters {
            invocation.arg(counter.ttl.unwrap_or(0));
        }
        let mut connection = self.connection.clone();
        match tokio::time::timeout(self.timeout, invocation.invoke_async::<Vec<u64>>(&mut connection)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(LedgerError::Timeout(self.timeout)),
        }
    }

    /// Waits up to `bound` for the queue to empty (graceful shutdown).
    pub async fn drain(&self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        while self.queued() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
