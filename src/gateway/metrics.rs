//! Prometheus metrics of the gateway: tokens and cost per Organization, Group,
//! Application, use case, provider and model; requests by outcome; latencies.
//!
//! Label values are bounded: attribution comes from the index (declared names or
//! the open policy's catch-all), `model` from the price table or [`OTHER_MODEL`].
//! The key checks themselves are counted by the verifier's own metrics
//! (`payi_gateway_requests_total`, protocol `gateway`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use super::usage::Usage;
use crate::money::PicoUsd;
use crate::verifier::metrics::Name;

/// The `model` label of a model the price table does not know.
pub const OTHER_MODEL: &str = "(unpriced)";
/// The `model` label of a request on a path allowed at a flat price.
pub const FLAT_PRICED_MODEL: &str = "(flat-priced)";

/// Whose usage, where it went, and which model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UsageLabels {
    pub organization: Name,
    pub group: Name,
    pub application: Name,
    pub use_case: Name,
    pub provider: Name,
    pub model: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub organization: Name,
    pub group: Name,
    pub application: Name,
    pub use_case: Name,
    pub provider: Name,
    pub model: Name,
    /// `input`, `cached_input`, `cache_write`, `output` or `reasoning` (a part of `output`).
    pub token_type: &'static str,
    /// See [`Source::as_str`].
    pub source: &'static str,
}

/// The cost series: a request's [`UsageLabels`] and how its usage arrived.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CostLabels {
    #[prometheus(flatten)]
    pub usage: UsageLabels,
    /// See [`Source::as_str`].
    pub source: &'static str,
}

/// How a usage arrived, for the `source` label (two values: bounded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Read from a provider's answer that passed through the gateway.
    Proxy,
    /// Reported by the workload through Pay-i's ingest API (`/api/v1/ingest`).
    Ingest,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Proxy => "proxy",
            Source::Ingest => "ingest",
        }
    }
}

/// Ingest refusals, by Pay-i error code (a fixed list, never a client's string).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    pub reason: &'static str,
}

/// Ingested units by category (one of the few the gateway prices).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub organization: Name,
    pub group: Name,
    pub application: Name,
    pub use_case: Name,
    pub provider: Name,
    pub model: Name,
    /// See [`Outcome::as_str`].
    pub outcome: &'static str,
    /// See [`Source::as_str`].
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnpricedLabels {
    pub provider: Name,
}

/// How a proxied request ended, for the `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered 2xx and reported usage, all of it read.
    Metered,
    /// 2xx on a path whose usage is not read (e.g. `/v1/models`).
    Unmetered,
    /// 2xx, but no usage could be read (none reported, or a malformed body).
    UsageUnreadable,
    /// The provider answered 4xx or 5xx; passed through unchanged.
    ProviderError,
    /// The body or stream ended early (client gone, provider cut it): usage counted so far.
    Incomplete,
    /// 2xx on a path an `unmeteredPaths` entry allows: charged its flat price.
    FlatPriced,
    /// A stream cut before its usage arrived: the prompt and the output passed so
    /// far estimated where not reported (the provider bills them).
    Estimated,
    /// The client left a non-streamed answer; the gateway read it to its end and
    /// counted its reported usage (the provider bills it).
    Abandoned,
    UpstreamTimeout,
    /// Connection refused or reset, TLS or protocol failure before the response.
    UpstreamUnavailable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Metered => "metered",
            Outcome::Unmetered => "unmetered",
            Outcome::UsageUnreadable => "usage_unreadable",
            Outcome::ProviderError => "provider_error",
            Outcome::Incomplete => "incomplete",
            Outcome::Abandoned => "abandoned",
            Outcome::FlatPriced => "flat_priced",
            Outcome::Estimated => "estimated",
            Outcome::UpstreamTimeout => "upstream_timeout",
            Outcome::UpstreamUnavailable => "upstream_unavailable",
        }
    }
}

pub struct Metrics {
    pub tokens: Family<TokenLabels, Counter>,
    pub cost: Family<CostLabels, UsdCounter>,
    pub requests: Family<OutcomeLabels, Counter>,
    pub unpriced: Family<UnpricedLabels, Counter>,
    pub refused_too_large: Counter,
    /// Requests refused because their path cannot be metered (by provider).
    pub refused_paths: Family<ProviderLabels, Counter>,
    /// Requests begun and not yet counted (shutdown waits for them).
    pub in_flight: prometheus_client::metrics::gauge::Gauge,
    pub request_duration: Family<ProviderLabels, Histogram>,
    pub upstream_duration: Family<ProviderLabels, Histogram>,
    pub first_byte: Family<ProviderLabels, Histogram>,
    /// Ingest requests refused, by Pay-i error code.
    pub ingest_refused: Family<IngestLabels, Counter>,
    /// Units an ingested event reported that the gateway cannot price, by category.
    pub ingest_unknown_units: Family<CategoryLabels, Counter>,
    /// Ingested events recognised as repeats of one already charged.
    pub ingest_duplicates: Counter,
}

/// A cost counter that sums exactly (pico-USD) and is exposed in USD, so the
/// scraped total agrees with the ledger's counters: float64 holds a total exactly
/// to the nano-USD up to about USD 4 million per series, where adding float
/// costs one by one would drift.
#[derive(Clone, Debug, Default)]
pub struct UsdCounter(Arc<Mutex<PicoUsd>>);

impl UsdCounter {
    pub fn add(&self, cost: PicoUsd) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += cost;
    }

    pub fn get(&self) -> PicoUsd {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TypedMetric for UsdCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for UsdCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get().usd_f64(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// 100 µs to about 110 s: from a cached answer on loopback to a long generation.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 21))
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            tokens: Family::default(),
            cost: Family::default(),
            requests: Family::default(),
            unpriced: Family::default(),
            refused_too_large: Counter::default(),
            refused_paths: Family::default(),
            in_flight: Default::default(),
            request_duration: Family::new_with_constructor(latency),
            upstream_duration: Family::new_with_constructor(latency),
            first_byte: Family::new_with_constructor(latency),
            ingest_refused: Family::default(),
            ingest_unknown_units: Family::default(),
            ingest_duplicates: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("payi_gateway");
        r.register(
            "tokens",
            "Tokens the providers reported, by Organization, Group, Application, use case, provider, model and \
             token type (reasoning is a part of output)",
            self.tokens.clone(),
        );
        r.register(
            "cost_usd",
            "Cost in USD from the price table, same labels as tokens without token_type",
            self.cost.clone(),
        );
        r.register(
            "proxied_requests",
            "Proxied requests by attribution, provider, model and outcome",
            self.requests.clone(),
        );
        r.register(
            "unpriced_requests",
            "Requests for a model the price table does not know: tokens counted, cost not",
            self.unpriced.clone(),
        );
        r.register(
            "requests_in_flight",
            "Requests begun and not yet counted (streams open, abandoned answers being read)",
            self.in_flight.clone(),
        );
        r.register(
            "unmetered_path_refusals",
            "Requests refused because the gateway cannot meter their path (batches, files, images, ...) and no \
             unmeteredPaths entry allows it, by provider",
            self.refused_paths.clone(),
        );
        r.register(
            "request_body_too_large",
            "Requests refused with 413 before any upstream call",
            self.refused_too_large.clone(),
        );
        r.register(
            "proxy_duration_seconds",
            "Time from the request to the end of the response, by provider",
            self.request_duration.clone(),
        );
        r.register(
            "upstream_duration_seconds",
            "Time from sending upstream to the provider's response headers, by provider",
            self.upstream_duration.clone(),
        );
        r.register(
            "time_to_first_byte_seconds",
            "Streams: time from the request to the first body byte sent on, by provider",
            self.first_byte.clone(),
        );
        r.register(
            "ingest_refusals",
            "Pay-i ingest requests refused, by the error code answered (docs/payi-api.md)",
            self.ingest_refused.clone(),
        );
        r.register(
            "ingest_unknown_units",
            "Units reported through Pay-i's ingest that the price table cannot price (left out of the cost, \
             the event counted as of unknown cost), by category",
            self.ingest_unknown_units.clone(),
        );
        r.register(
            "ingest_duplicates",
            "Ingested events that repeated one already charged (same Application, category and provider \
             response id): answered duplicate_request and not charged again",
            self.ingest_duplicates.clone(),
        );
    }

    /// Counts one finished request's tokens and cost (`None`: unpriced).
    pub fn record(&self, labels: &UsageLabels, usage: &Usage, cost: Option<PicoUsd>, outcome: Outcome) {
        self.record_from(Source::Proxy, labels, usage, cost, outcome);
    }

    /// [`Metrics::record`] for a usage that arrived from `source`.
    pub fn record_from(
        &self,
        source: Source,
        labels: &UsageLabels,
        usage: &Usage,
        cost: Option<PicoUsd>,
        outcome: Outcome,
    ) {
        let source = source.as_str();
        for (token_type, count) in usage.kinds() {
            if count > 0 {
                self.tokens.get_or_create(&token_labels(labels, token_type, source)).inc_by(count);
            }
        }
        if let Some(cost) = cost {
            self.cost.get_or_create(&CostLabels { usage: labels.clone(), source }).add(cost);
        }
        self.requests.get_or_create(&outcome_labels(labels, outcome, source)).inc();
    }

    pub fn observe(family: &Family<ProviderLabels, Histogram>, provider: &Name, took: Duration) {
        family.get_or_create(&ProviderLabels { provider: provider.clone() }).observe(took.as_secs_f64());
    }
}

fn token_labels(l: &UsageLabels, token_type: &'static str, source: &'static str) -> TokenLabels {
    TokenLabels {
        organization: l.organization.clone(),
        group: l.group.clone(),
        application: l.application.clone(),
        use_case: l.use_case.clone(),
        provider: l.provider.clone(),
        model: l.model.clone(),
        token_type,
        source,
    }
}

fn outcome_labels(l: &UsageLabels, outcome: Outcome, source: &'static str) -> OutcomeLabels {
    OutcomeLabels {
        organization: l.organization.clone(),
        group: l.group.clone(),
        application: l.application.clone(),
        use_case: l.use_case.clone(),
        provider: l.provider.clone(),
        model: l.model.clone(),
        outcome: outcome.as_str(),
        source,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionReasonLabels {
    pub reason: &'static str,
}

/// The client connections: open, refused at accept by the caps, closed by the
/// bounds (`super::connections`).
#[derive(Default)]
pub struct ConnectionMetrics {
    pub open: prometheus_client::metrics::gauge::Gauge,
    pub refused: Family<ConnectionReasonLabels, Counter>,
    pub closed: Family<ConnectionReasonLabels, Counter>,
}

impl ConnectionMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("payi_gateway");
        r.register("connections_open", "Client connections open", self.open.clone());
        r.register(
            "connections_refused",
            "Client connections closed as soon as accepted because a cap was reached, by reason: \
             max_connections, max_connections_per_peer",
            self.refused.clone(),
        );
        r.register(
            "connections_closed",
            "Client connections the gateway closed for a bound, by reason: first_request_timeout, \
             head_timeout, idle",
            self.closed.clone(),
        );
    }

    pub fn refused(&self, refusal: super::connections::Refusal) {
        self.refused.get_or_create(&ConnectionReasonLabels { reason: refusal.as_str() }).inc();
    }

    pub fn closed(&self, reason: super::connections::Reason) {
        self.closed.get_or_create(&ConnectionReasonLabels { reason: reason.as_str() }).inc();
    }
}

/// The budget of bytes in flight ([`super::budget`]): what it holds, its size, and
/// the requests it refused.
pub fn register_budget(registry: &mut Registry, budget: &super::budget::Budget) {
    let r = registry.sub_registry_with_prefix("payi_gateway");
    r.register(
        "bytes_in_flight",
        "Bytes of request bodies held in flight, and what reading answers holds (--max-bytes-in-flight bounds it)",
        budget.gauges.held.clone(),
    );
    let limit = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    limit.set(i64::try_from(budget.capacity()).unwrap_or(i64::MAX));
    r.register("bytes_in_flight_limit", "The --max-bytes-in-flight bound of bytes_in_flight", limit);
    r.register(
        "busy_refusals",
        "Requests refused with 503 gateway_busy: their body did not fit in the bytes in flight left",
        budget.gauges.refused.clone(),
    );
}
