//! The ledger in Redis, shared by every gateway replica.
//!
//! - **Check** (before the provider is called): one `MGET` of the counters of
//!   every limit that covers the request, bounded by the check timeout.
//! - **Charge** (after the answer, off the request path): each metered request is
//!   one usage event with an id. Events wait in a bounded in-memory queue and are
//!   applied in batches, many per round trip, by one Lua script that, per event,
//!   records its id (`SET NX` with an expiry, [`Ledger::event_ttl`]) and skips an
//!   event it has already applied: a batch whose answer was lost (timeout, cut
//!   connection) is simply sent again and charges nothing twice. Events leave the
//!   queue when Redis acknowledged them, by id, never by position.
//! - **Exact money**: counters are nano-USD (`INCRBY`, signed 64-bit: about USD
//!   9.2 billion per window); the pico-USD remainder of each event is added to a
//!   companion counter (`<key>:p`, always below 1,000) whose overflow carries one
//!   nano-USD into the counter, in the same script. A counter therefore equals
//!   the exact sum of its events' costs, truncated to the nano-USD.
//! - **Errors** ([`classify`]): transient ones (connection, timeout, `LOADING`,
//!   `BUSY`, `TRYAGAIN`, `READONLY` from a demoted primary, …) keep the events
//!   queued and retried with backoff, up to half the id expiry; permanent ones (`NOPERM`, `OOM`, a script or
//!   type error) are retried event by event a few times, then the event is dropped
//!   with an error log naming it and `payi_limit_charges_failed_total{reason}`, so
//!   one bad event or a misconfigured Redis never blocks the queue forever.
//!
//! The queue's bound ([`MAX_QUEUED`]) is the memory a long outage may take; beyond
//! it the oldest event is dropped and counted (`payi_limit_charges_dropped_total`).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::connect::{ConnectError, Connection, Target};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

use crate::money::{NANO_PER_USD, PicoUsd};

/// Events kept while Redis cannot take them.
pub const MAX_QUEUED: usize = 100_000;
/// Events per charge script (one round trip).
pub const BATCH: usize = 128;
/// How long the charge loop waits, once woken from an empty queue, for more events
/// to join the batch. Charges are off the request's path, so this delays only when
/// spend shows, never an answer; it makes Redis' work per request smaller, which is
/// what shows in every request's tail latency.
pub const LINGER: Duration = Duration::from_millis(2);
/// Attempts at an event that fails with a permanent error before it is dropped.
pub const PERMANENT_ATTEMPTS: u32 = 5;

/// Per event: check every key holds a counter (or nothing), `SET NX` its id, and
/// when new, add its nano-USD to each money counter carrying its pico-USD remainder
/// (`<key>:p`), add each count, settle its reservations, and give counters it
/// creates their expiry. Amounts stay Redis strings on their way to `INCRBY` (Lua
/// numbers are doubles).
///
/// Cost per event is what the gateway's added latency with limits is made of (the
/// script holds Redis while it runs), so it is kept to the commands that change
/// something: a key's type is checked once per batch, and an expiry is set when an
/// `INCRBY` made the key (its total is the increment) rather than after reading its
/// `TTL` on every charge. A counter whose total returns to exactly the increment
/// gets its expiry again, which is the same instant: expiries are window ends.
///
/// KEYS: per event, its id key, then (counter, counter:p) per money counter, then
/// each count's key, then (held, amounts, reserved) per reserved counter. ARGV: id
/// expiry in seconds, event count, then per event: money counter count n, count
/// count m, reserved count r, nano-USD, pico remainder, each money counter's
/// expiry (0: none), then per count its expiry and increment.
/// Returns per event 1 (applied), 0 (already applied) or -1 (a key holds another
/// type: never applicable, checked first so nothing is half applied), then its
/// money counters' totals.
const CHARGE: &str = r"
local id_ttl = ARGV[1]
local events = tonumber(ARGV[2])
local k, a = 1, 3
local out = {}
local counter_like = {}
local function typed(key)
  local ok = counter_like[key]
  if ok == nil then
    local t = redis.call('TYPE', key).ok
    ok = t == 'none' or t == 'string'
    counter_like[key] = ok
  end
  return ok
end
local function add(key, n, ttl)
  local total = redis.call('INCRBY', key, n)
  if ttl > 0 and total == tonumber(n) then redis.call('EXPIRE', key, ttl) end
  return total
end
for e = 1, events do
  local n, m, r = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local nano, rest = ARGV[a + 3], tonumber(ARGV[a + 4])
  a = a + 5
  local ok = true
  for i = 1, 2 * n + m do
    if not typed(KEYS[k + i]) then ok = false end
  end
  local id = string.sub(KEYS[k], 12)
  local fresh = false
  if ok then fresh = redis.call('SET', KEYS[k], '1', 'NX', 'EX', id_ttl) end
  k = k + 1
  out[#out + 1] = (not ok and -1) or (fresh and 1 or 0)
  for i = 1, n do
    local key, carry_key = KEYS[k], KEYS[k + 1]
    local ttl = tonumber(ARGV[a + i - 1])
    k = k + 2
    if fresh then
      local total = add(key, nano, ttl)
      if rest > 0 and add(carry_key, rest, ttl) >= 1000 then
        redis.call('DECRBY', carry_key, 1000)
        total = redis.call('INCRBY', key, 1)
      end
      out[#out + 1] = total
    else
      out[#out + 1] = 0
    end
  end
  a = a + n
  for i = 1, m do
    if fresh then add(KEYS[k], ARGV[a + 1], tonumber(ARGV[a])) end
    k = k + 1
    a = a + 2
  end
  for i = 1, r do
    local held, amounts, sum = KEYS[k], KEYS[k + 1], KEYS[k + 2]
    if fresh then
      local amount = redis.call('HGET', amounts, id)
      if amount then
        redis.call('DECRBY', sum, amount)
        redis.call('HDEL', amounts, id)
        redis.call('ZREM', held, id)
      end
    end
    k = k + 3
  end
end
return out
";

/// Reserves an upper bound of a request's cost on every block limit that covers
/// it, atomically, by Redis' own clock: first drops the reservations that expired
/// (a replica that died mid-request; at most 256 per counter per call, so a mass
/// expiry never holds Redis long: the rest stay counted, which errs on refusing,
/// until the next calls drop them), then refuses when any counter's spend plus
/// what is reserved plus this amount would pass its maximum, else holds the amount
/// on each until the request's usage event settles it (or it expires).
///
/// KEYS: per counter: counter, `:held` (sorted set: id by expiry), `:amounts`
/// (hash: id to nano-USD), `:reserved` (their sum). ARGV: id, nano-USD, hold in
/// milliseconds, then each counter's maximum. Returns `{0}` when held, else `{i,
/// spent, reserved}` for the first counter i (1-based) that refuses.
const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, amount, hold = ARGV[1], ARGV[2], tonumber(ARGV[3])
local n = #KEYS / 4
for i = 0, n - 1 do
  local key, held, amounts, sum = KEYS[4 * i + 1], KEYS[4 * i + 2], KEYS[4 * i + 3], KEYS[4 * i + 4]
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', held, '-inf', now, 'LIMIT', 0, 256)) do
    local was = redis.call('HGET', amounts, old)
    if was then redis.call('DECRBY', sum, was); redis.call('HDEL', amounts, old) end
    redis.call('ZREM', held, old)
  end
  local figures = redis.call('MGET', key, sum)
  local spent = tonumber(figures[1] or '0')
  local reserved = tonumber(figures[2] or '0')
  if spent + reserved + tonumber(amount) > tonumber(ARGV[4 + i]) then
    return {i + 1, spent, reserved}
  end
end
for i = 0, n - 1 do
  local held, amounts, sum = KEYS[4 * i + 2], KEYS[4 * i + 3], KEYS[4 * i + 4]
  redis.call('ZADD', held, now + hold, id)
  redis.call('HSET', amounts, id, amount)
  redis.call('INCRBY', sum, amount)
  for _, key in ipairs({held, amounts, sum}) do redis.call('PEXPIRE', key, 2 * hold) end
end
return {0}
";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the ledger URL is not valid: {0}")]
    Url(#[source] redis::RedisError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the ledger did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the ledger failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the ledger answered the charge script with {got} figures for {expected}")]
    Answer { expected: usize, got: usize },
}

/// What to do after a failed ledger call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Retry the same events later: nothing about them is wrong.
    Transient,
    /// Retrying as it is will not help (the reason is a metric label).
    Permanent(&'static str),
}

/// Sorts a ledger failure by what Redis said (pure).
pub fn classify(code: Option<&str>) -> Failure {
    match code {
        None => Failure::Transient,
        // READONLY: a primary that Sentinel demoted, answering until the connection
        // is replaced by one to the new primary (`super::connect`); NOREPLICAS: a
        // primary waiting for its replicas. Both pass; dropping events on them would
        // lose charges in every failover.
        Some(
            "LOADING" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "NOSCRIPT" | "READONLY" | "NOREPLICAS",
        ) => Failure::Transient,
        Some("NOPERM") => Failure::Permanent("noperm"),
        Some("OOM") => Failure::Permanent("oom"),
        Some("WRONGTYPE") => Failure::Permanent("wrongtype"),
        Some(_) => Failure::Permanent("error"),
    }
}

impl LedgerError {
    fn failure(&self) -> Failure {
        match self {
            LedgerError::Redis(error) if !error.is_io_error() && !error.is_timeout() => classify(error.code()),
            LedgerError::Answer { .. } => Failure::Permanent("answer"),
            _ => Failure::Transient,
        }
    }
}

/// One counter to charge: its key and its expiry in seconds (`None`: never).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerKey {
    pub key: String,
    pub ttl: Option<u64>,
}

/// What one request adds to the ledger.
#[derive(Clone, Debug, Default)]
pub struct UsageEvent {
    /// Its exact cost; `None` when it is not known (an unpriced model, unreadable
    /// usage): then the money counters get nothing and a count says so.
    pub cost: Option<PicoUsd>,
    /// Counters of money (nano-USD): the covering limits' first, then the levels' spend.
    pub money: Vec<LedgerKey>,
    /// The limit ids of the first `limits.len()` money counters, for the spend gauges.
    pub limits: Vec<Arc<str>>,
    /// Plain counts: tokens, requests, requests of unknown cost, each with its increment.
    pub counts: Vec<(LedgerKey, u64)>,
    /// The id given when its cost was reserved ([`Ledger::reserve`]); new otherwise.
    pub id: Option<Arc<str>>,
    /// Counters on which its cost was reserved: the reservation is settled (removed)
    /// when the event is applied, in the same script.
    pub reserved: Vec<String>,
}

impl UsageEvent {
    fn is_empty(&self) -> bool {
        let no_money = self.money.is_empty() || self.cost.is_none_or(|c| c == PicoUsd::ZERO);
        no_money && self.counts.iter().all(|(_, n)| *n == 0)
    }

    fn cost_text(&self) -> String {
        self.cost.map_or_else(|| "unknown".to_string(), |c| c.to_string())
    }
}

/// One usage event on its way to the ledger.
#[derive(Clone, Debug)]
struct Charge {
    /// Unique per event (random 128 bits, hex), the key of exactly-once.
    id: Arc<str>,
    event: UsageEvent,
    queued_at: Instant,
    permanent_failures: u32,
}

/// The suffixes of the keys kept beside a money counter: its pico-USD remainder,
/// then its reservations (held ids by expiry, their amounts, their sum). Readers
/// of the counters tell them apart by these.
pub const COMPANIONS: [&str; 4] = [":p", ":held", ":amounts", ":reserved"];

/// Whether `key` is one of a counter's companions rather than a counter.
pub fn is_companion(key: &str) -> bool {
    COMPANIONS.iter().any(|suffix| key.ends_with(suffix))
}

/// The keys that hold the reservations on `counter`.
fn reservation_keys(counter: &str) -> [String; 3] {
    let [_, held, amounts, reserved] = COMPANIONS;
    [format!("{counter}{held}"), format!("{counter}{amounts}"), format!("{counter}{reserved}")]
}

/// A block limit's counter to reserve on, with its maximum (nano-USD).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bound {
    pub key: String,
    pub max_nano: u64,
}

/// The answer to a reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    Held,
    /// The counter at this index of the request would pass its maximum.
    Refused {
        index: usize,
        spent_nano: u64,
        reserved_nano: u64,
    },
}

/// A new event id: 128 random bits in hex.
pub fn event_id() -> Arc<str> {
    format!("{:032x}", rand::random::<u128>()).into()
}

#[derive(Default)]
pub struct LedgerMetrics {
    pub errors: Counter,
    pub queued: Gauge,
    pub dropped: Counter,
    /// Events applied, and repeats the ledger recognised and skipped.
    pub applied: Counter,
    pub duplicates: Counter,
    /// Round trips of the charge script (`applied / batches` is the batch size).
    pub batches: Counter,
    /// Events given up: a permanent error, the retry horizon passed, or shutdown.
    pub failed: Family<ReasonLabels, Counter>,
    pub unchecked: Counter,
    /// Requests refused (503) because the ledger could not be read (fail-closed).
    pub refused_unavailable: Counter,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

impl LedgerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("payi_limit");
        r.register(
            "ledger_errors",
            "Ledger reads and charges that failed (Redis down, slow or refusing)",
            self.errors.clone(),
        );
        r.register("charges_queued", "Usage events waiting for the ledger in this replica", self.queued.clone());
        r.register(
            "charges_dropped",
            "Usage events dropped because the queue was full during an outage",
            self.dropped.clone(),
        );
        r.register(
            "charges_applied",
            "Usage events the ledger acknowledged as applied (once, whichever send applied them)",
            self.applied.clone(),
        );
        r.register(
            "charges_duplicate",
            "Usage events sent again after a lost answer and recognised by the ledger as already applied",
            self.duplicates.clone(),
        );
        r.register("charge_batches", "Charge script round trips (several events each)", self.batches.clone());
        r.register(
            "charges_failed",
            "Usage events given up, by reason (a permanent Redis error, the retry horizon, shutdown)",
            self.failed.clone(),
        );
        r.register(
            "unchecked_requests",
            "Requests let through without a limit check because the ledger did not answer (fail-open)",
            self.unchecked.clone(),
        );
        r.register(
            "unavailable_refusals",
            "Requests refused because the ledger did not answer and a block limit covers them (fail-closed)",
            self.refused_unavailable.clone(),
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

/// How long ledger calls may take.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// The read before a request (on the request's path: short).
    pub check: Duration,
    /// One charge script (off the request path).
    pub charge: Duration,
    /// How long an event's id is remembered; events are retried for half of it.
    pub event_ttl: Duration,
}

impl Timeouts {
    /// For a process that only reads the counters (the operator's status).
    pub fn reader(timeout: Duration) -> Self {
        Self { check: timeout, charge: timeout, event_ttl: Duration::from_secs(3600) }
    }
}

pub struct Ledger {
    connection: Connection,
    script: redis::Script,
    reserve_script: redis::Script,
    queue: Mutex<VecDeque<Charge>>,
    /// Events per charge script ([`BATCH`]; 1 only to measure what batching gains).
    batch: std::sync::atomic::AtomicUsize,
    wake: Notify,
    timeouts: Timeouts,
    pub metrics: Arc<LedgerMetrics>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("Ledger").field("timeouts", &self.timeouts).finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger at `url` (`redis://[user:password@]host:port/db`); see [`Ledger::open`].
    pub fn new(url: &str, timeouts: Timeouts, metrics: Arc<LedgerMetrics>) -> Result<Arc<Self>, LedgerError> {
        Self::open(&Target::url(url), timeouts, metrics)
    }

    /// A ledger at `target` (plain, TLS or through Sentinel: `super::connect`);
    /// connects lazily and reconnects by itself (probing while Redis is away), so
    /// a Redis that is down at start is not an error.
    pub fn open(target: &Target, timeouts: Timeouts, metrics: Arc<LedgerMetrics>) -> Result<Arc<Self>, LedgerError> {
        let connection = Connection::open(target, timeouts.check.max(timeouts.charge))?;
        Ok(Arc::new(Self {
            connection,
            script: redis::Script::new(CHARGE),
            reserve_script: redis::Script::new(RESERVE),
            queue: Mutex::new(VecDeque::new()),
            batch: std::sync::atomic::AtomicUsize::new(BATCH),
            wake: Notify::new(),
            timeouts,
            metrics,
        }))
    }

    /// The counters' current values in nano-USD (0 for absent ones), in one round trip.
    pub async fn spent(&self, keys: &[String]) -> Result<Vec<u64>, LedgerError> {
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let mut mget = redis::cmd("MGET");
        mget.arg(keys);
        let mget = &mget;
        let values: Vec<Option<u64>> =
            self.check_call(|mut connection| async move { mget.query_async(&mut connection).await }).await?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// One call on the request's path, within the check bound. A connection that
    /// died while Redis was away fails the first call on it and only then
    /// reconnects: that call is retried once on the new connection, within the same
    /// bound, so the first request after an outage is checked, not refused
    /// (fail-closed) or let through (fail-open).
    async fn check_call<T, F, Fut>(&self, call: F) -> Result<T, LedgerError>
    where
        F: Fn(Connection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeouts.check;
        for retry in [true, false] {
            match tokio::time::timeout_at(deadline, call(self.connection.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) if retry && (error.is_io_error() || error.is_connection_dropped()) => continue,
                Ok(Err(error)) => {
                    self.metrics.errors.inc();
                    return Err(error.into());
                }
                Err(_) => break,
            }
        }
        self.metrics.errors.inc();
        Err(LedgerError::Timeout(self.timeouts.check))
    }

    /// Reserves `amount` on every bound for the event `id`, or says which bound
    /// refuses (see [`RESERVE`]); held for `hold` unless the event settles it first.
    pub async fn reserve(
        &self,
        id: &str,
        bounds: &[Bound],
        amount: PicoUsd,
        hold: Duration,
    ) -> Result<Reservation, LedgerError> {
        if bounds.is_empty() {
            return Ok(Reservation::Held);
        }
        let nano = u64::try_from(amount.ceil_nano()).unwrap_or(u64::MAX).min(i64::MAX as u64);
        let mut invocation = self.reserve_script.prepare_invoke();
        invocation.arg(id).arg(nano).arg(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1));
        for bound in bounds {
            let [held, amounts, sum] = reservation_keys(&bound.key);
            invocation.key(&bound.key).key(held).key(amounts).key(sum);
            invocation.arg(bound.max_nano);
        }
        let invocation = &invocation;
        let answer: Vec<i64> =
            self.check_call(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await?;
        Ok(match answer.as_slice() {
            [index, spent, reserved] if *index > 0 => Reservation::Refused {
                index: (*index - 1) as usize,
                spent_nano: (*spent).max(0) as u64,
                reserved_nano: (*reserved).max(0) as u64,
            },
            _ => Reservation::Held,
        })
    }

    /// Queues one usage event; [`Ledger::run`] applies it. Returns its id (`None`:
    /// it adds nothing).
    pub fn record(&self, event: UsageEvent) -> Option<Arc<str>> {
        if event.is_empty() {
            return None;
        }
        let id = event.id.clone().unwrap_or_else(event_id);
        let charge = Charge { id: id.clone(), event, queued_at: Instant::now(), permanent_failures: 0 };
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= MAX_QUEUED
            && let Some(oldest) = queue.pop_front()
        {
            self.metrics.dropped.inc();
            tracing::error!(event = %oldest.id, cost_usd = %oldest.event.cost_text(), "ledger queue full: oldest usage event dropped");
        }
        queue.push_back(charge);
        self.metrics.queued.set(queue.len() as i64);
        drop(queue);
        self.wake.notify_one();
        Some(id)
    }

    /// Sets how many events one charge script applies (the benchmark compares 1 with [`BATCH`]).
    pub fn set_batch_size(&self, events: usize) {
        self.batch.store(events.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Events waiting (for tests and the drain on shutdown).
    pub fn queued(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Applies queued events in batches until dropped.
    pub async fn run(self: Arc<Self>) {
        let mut isolate = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            let size = self.batch.load(std::sync::atomic::Ordering::Relaxed).max(1);
            let batch = self.next_batch(if isolate { 1 } else { size });
            if batch.is_empty() {
                self.wake.notified().await;
                // Let the events of the next moment join this one: a batch costs
                // Redis one script call, and its events' shared counters (the
                // Organization's, the Group's) one type check, instead of one each.
                tokio::time::sleep(LINGER).await;
                continue;
            }
            match self.apply(&batch).await {
                Ok(applied) => {
                    self.acknowledge(&batch, &applied);
                    isolate = false;
                    backoff = Duration::from_millis(100);
                }
                Err(error) => {
                    self.metrics.errors.inc();
                    match error.failure() {
                        Failure::Transient => {
                            tracing::warn!(%error, queued = self.queued(), "ledger unavailable; usage events kept and retried");
                        }
                        Failure::Permanent(reason) => {
                            tracing::error!(%error, reason, queued = self.queued(), "ledger refused a charge");
                            if isolate {
                                self.permanent_failure(&batch[0].id, reason);
                            }
                            isolate = true;
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Up to `n` events from the front; those past the retry horizon are given up first.
    fn next_batch(&self, n: usize) -> Vec<Charge> {
        let horizon = self.timeouts.event_ttl / 2;
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        while queue.front().is_some_and(|c| c.queued_at.elapsed() > horizon) {
            if let Some(old) = queue.pop_front() {
                self.give_up(&old, "expired");
            }
        }
        self.metrics.queued.set(queue.len() as i64);
        queue.iter().take(n).cloned().collect()
    }

    /// Removes the applied events (by id) and updates the spend gauges.
    fn acknowledge(&self, batch: &[Charge], answer: &[Applied]) {
        let done: HashSet<&str> = batch.iter().map(|c| &*c.id).collect();
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        // The batch was the queue's front; overflow may have dropped some of it
        // since, never reordered it, so what is left of it is still the front.
        while queue.front().is_some_and(|c| done.contains(&*c.id)) {
            queue.pop_front();
        }
        self.metrics.queued.set(queue.len() as i64);
        drop(queue);
        self.metrics.batches.inc();
        for (charge, applied) in batch.iter().zip(answer) {
            match applied {
                Applied::Fresh(totals) => {
                    self.metrics.applied.inc();
                    for (limit, total) in charge.event.limits.iter().zip(totals) {
                        let labels = LimitLabels { limit: limit.to_string() };
                        self.metrics.spend.get_or_create(&labels).set(*total as f64 / NANO_PER_USD as f64);
                    }
                }
                Applied::Repeat => {
                    // Ids are this replica's own: a repeat is an earlier send of ours
                    // whose answer was lost, so the event is in the ledger once.
                    self.metrics.applied.inc();
                    self.metrics.duplicates.inc();
                    tracing::info!(event = %charge.id, "usage event already applied; not charged again");
                }
                Applied::WrongType => self.give_up(charge, "wrongtype"),
            }
        }
    }

    fn permanent_failure(&self, id: &str, reason: &'static str) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let Some(position) = queue.iter().position(|c| &*c.id == id) else { return };
        queue[position].permanent_failures += 1;
        if queue[position].permanent_failures >= PERMANENT_ATTEMPTS
            && let Some(charge) = queue.remove(position)
        {
            self.metrics.queued.set(queue.len() as i64);
            drop(queue);
            self.give_up(&charge, reason);
        }
    }

    fn give_up(&self, charge: &Charge, reason: &'static str) {
        self.metrics.failed.get_or_create(&ReasonLabels { reason }).inc();
        tracing::error!(
            event = %charge.id, cost_usd = %charge.event.cost_text(), reason,
            counters = ?charge.event.money.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
            "usage event given up: not charged to the ledger"
        );
    }

    async fn apply(&self, batch: &[Charge]) -> Result<Vec<Applied>, LedgerError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(self.timeouts.event_ttl.as_secs().max(1)).arg(batch.len());
        for charge in batch {
            let event = &charge.event;
            let (nano, rest) = event.cost.unwrap_or_default().split_nano();
            let nano = u64::try_from(nano).unwrap_or(u64::MAX).min(i64::MAX as u64);
            invocation.key(format!("payi:event:{}", charge.id));
            invocation.arg(event.money.len()).arg(event.counts.len()).arg(event.reserved.len()).arg(nano).arg(rest);
            for counter in &event.money {
                invocation.key(&counter.key).key(format!("{}{}", counter.key, COMPANIONS[0]));
                invocation.arg(counter.ttl.unwrap_or(0));
            }
            for (counter, increment) in &event.counts {
                invocation.key(&counter.key);
                invocation.arg(counter.ttl.unwrap_or(0)).arg((*increment).min(i64::MAX as u64));
            }
            for counter in &event.reserved {
                let [held, amounts, sum] = reservation_keys(counter);
                invocation.key(held).key(amounts).key(sum);
            }
        }
        let mut connection = self.connection.clone();
        let call = invocation.invoke_async::<Vec<i64>>(&mut connection);
        let figures = match tokio::time::timeout(self.timeouts.charge, call).await {
            Ok(result) => result?,
            Err(_) => return Err(LedgerError::Timeout(self.timeouts.charge)),
        };
        let expected = batch.iter().map(|c| 1 + c.event.money.len()).sum();
        if figures.len() != expected {
            return Err(LedgerError::Answer { expected, got: figures.len() });
        }
        let mut figures = figures.into_iter();
        Ok(batch
            .iter()
            .map(|charge| {
                let state = figures.next();
                let totals: Vec<u64> =
                    figures.by_ref().take(charge.event.money.len()).map(|t| t.max(0) as u64).collect();
                match state {
                    Some(1) => Applied::Fresh(totals),
                    Some(0) => Applied::Repeat,
                    _ => Applied::WrongType,
                }
            })
            .collect())
    }

    /// Waits up to `bound` for the queue to empty (graceful shutdown); what is left
    /// then is logged and counted, never dropped silently. Returns how many were left.
    pub async fn drain(&self, bound: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + bound;
        while self.queued() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left: Vec<Charge> = self.queue.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        for charge in &left {
            self.give_up(charge, "shutdown");
        }
        self.metrics.queued.set(0);
        left.len()
    }
}

impl Ledger {
    /// Applies one event now, through the same charge script and `payi:event:<id>`
    /// key as the queue, and says whether it was new: for callers that must answer
    /// "charged" or "already charged" (Pay-i's ingest, whose ids repeat by design
    /// when a client re-sends a report). The id is remembered for `remember` (at
    /// least the configured event expiry). Nothing is queued: on an error the
    /// caller answers its client, who sends the event again.
    pub async fn apply_once(&self, event: UsageEvent, remember: Duration) -> Result<Applied, LedgerError> {
        let id = event.id.clone().unwrap_or_else(event_id);
        let charge = Charge { id: id.clone(), event, queued_at: Instant::now(), permanent_failures: 0 };
        let applied = match self.apply(std::slice::from_ref(&charge)).await {
            Ok(mut applied) if applied.len() == 1 => applied.remove(0),
            Ok(applied) => return Err(LedgerError::Answer { expected: 1, got: applied.len() }),
            Err(error) => {
                self.metrics.errors.inc();
                return Err(error);
            }
        };
        self.metrics.batches.inc();
        match &applied {
            Applied::Fresh(totals) => {
                self.metrics.applied.inc();
                for (limit, total) in charge.event.limits.iter().zip(totals) {
                    let labels = LimitLabels { limit: limit.to_string() };
                    self.metrics.spend.get_or_create(&labels).set(*total as f64 / NANO_PER_USD as f64);
                }
                let seconds = remember.as_secs();
                if seconds > self.timeouts.event_ttl.as_secs() {
                    let mut expire = redis::cmd("EXPIRE");
                    expire.arg(format!("payi:event:{id}")).arg(seconds);
                    let mut connection = self.connection.clone();
                    let call = expire.query_async::<i64>(&mut connection);
                    match tokio::time::timeout(self.timeouts.charge, call).await {
                        Ok(Ok(_)) => {}
                        // Charged once already; only a repeat after the shorter expiry could be missed.
                        Ok(Err(error)) => {
                            tracing::warn!(event = %id, %error, "event id kept for the default expiry only")
                        }
                        Err(_) => tracing::warn!(event = %id, "event id kept for the default expiry only (timeout)"),
                    }
                }
            }
            Applied::Repeat => {
                self.metrics.duplicates.inc();
            }
            Applied::WrongType => self.give_up(&charge, "wrongtype"),
        }
        Ok(applied)
    }

    /// The ledger's connection, for stores kept beside the counters (request results).
    pub fn connection(&self) -> Connection {
        self.connection.clone()
    }
}

/// What the ledger did with one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Charged now; its counters' new totals in nano-USD.
    Fresh(Vec<u64>),
    /// Already applied by an earlier send; nothing charged.
    Repeat,
    /// A counter's key holds something else than a counter: never applicable.
    WrongType,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_sorted_by_what_redis_said() {
        assert_eq!(classify(None), Failure::Transient);
        for transient in ["LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "READONLY", "NOREPLICAS"] {
            assert_eq!(classify(Some(transient)), Failure::Transient, "{transient}");
        }
        assert_eq!(classify(Some("NOPERM")), Failure::Permanent("noperm"));
        assert_eq!(classify(Some("OOM")), Failure::Permanent("oom"));
        assert_eq!(classify(Some("ERR")), Failure::Permanent("error"));
    }

    #[test]
    fn event_ids_are_unique_hex() {
        let ids: HashSet<Arc<str>> = (0..1000).map(|_| event_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
    }
}
