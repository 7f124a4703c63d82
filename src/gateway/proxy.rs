//! One request through the gateway: route it to a provider, check the key with
//! the verifier's index (in-process), read the body within its bound, forward it
//! with the provider's credential and without anything of the cluster's, and pass
//! the response back through a metered body.
//!
//! What leaves for the provider is decided by one deny filter,
//! [`upstream_headers`] (pure; `headers`' module doc lists what is denied and
//! why): every header the client sent and every `xProxy-Forward-<name>` it asked to
//! have forwarded is judged by the same rules, so neither the payi key (in whatever
//! header, in whatever case), nor the cluster's `xProxy-*`/`x-payi-*` headers, nor
//! a `Host`, a hop-by-hop header or another credential next to the platform's can
//! leave. The gateway then adds the provider's credential and
//! `accept-encoding: identity`. The provider's answer loses its hop-by-hop headers
//! on the way back.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use super::body::{self, Prepared};
use super::budget::{Budget, Lease};
use super::encoding::Encoding;
use super::headers::{Outgoing, remove_hop_by_hop, upstream_headers};
use super::metered::{BoxError, Idle, JsonBody, Metering, Recorder, SseBody};
use super::metrics::{Metrics, Outcome, ProviderLabels, UsageLabels};
use super::pricing::{Prices, Unpriced};
use super::providers::{Kind, PathClass, Provider, Providers, Route};
use crate::crd::LimitType;
use crate::crd::limits::usd_text;
use crate::limits::ledger::{Bound, Ledger, LedgerKey, LimitLabels, Reservation, UsageEvent, event_id};
use crate::limits::rule::{LimitRule, application_level, group_level, organization_level, use_case_level};
use crate::limits::spend::{self, UsageKeys};
use crate::money::{NANO_PER_USD, PicoUsd};
use crate::verifier::index::Attribution;
use crate::verifier::metrics::Name;
use crate::verifier::{Answer, Verifier};

pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;
pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Bounds on one request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Larger request bodies get 413 before any upstream call.
    pub max_request_bytes: usize,
    /// How long the client may take to send its body.
    pub request_body_timeout: Duration,
    /// How long the provider may take to send its response headers.
    pub upstream_timeout: Duration,
    /// How long the provider may send nothing in the middle of a body.
    pub upstream_idle: Duration,
}

/// Provider credentials by provider name, read from their files; never logged.
#[derive(Default)]
pub struct Credentials(RwLock<HashMap<String, Arc<str>>>);

impl Credentials {
    /// Reads every configured credential file; a file that cannot be read keeps
    /// the value it had and is reported by provider name only.
    pub fn reload(&self, providers: &Providers) {
        for provider in &providers.providers {
            let Some(path) = &provider.credential_file else { continue };
            match std::fs::read_to_string(path) {
                Ok(text) if !text.trim().is_empty() => {
                    let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
                    if map.get(&provider.name).is_none_or(|old| **old != *text.trim()) {
                        map.insert(provider.name.clone(), text.trim().into());
                    }
                }
                Ok(_) => tracing::warn!(provider = %provider.name, path, "provider credential file is empty"),
                Err(error) => {
                    tracing::warn!(provider = %provider.name, path, %error, "cannot read provider credential")
                }
            }
        }
    }

    fn get(&self, provider: &str) -> Option<Arc<str>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).get(provider).cloned()
    }
}

pub struct Gateway {
    pub verifier: Arc<Verifier>,
    pub providers: Providers,
    pub credentials: Credentials,
    pub client: HttpsClient,
    pub metrics: Arc<Metrics>,
    pub prices: Arc<Prices>,
    pub unpriced: Arc<Unpriced>,
    pub limits: Limits,
    /// The bytes of request bodies (and of reading answers) held at once.
    pub budget: Arc<Budget>,
    /// The limits ledger; `None`: limits are not enforced.
    pub ledger: Option<Arc<Ledger>>,
    pub ledger_policy: LedgerPolicy,
}

/// What happens to a request covered by a block limit when the ledger cannot be read.
#[derive(Clone, Copy, Debug)]
pub struct LedgerPolicy {
    /// Refuse (503) instead of letting the request through.
    pub fail_closed: bool,
    /// Added to the clock for windows (tests of rollover only).
    pub time_offset: chrono::TimeDelta,
    /// How long a reservation holds when its request never settles it (a replica killed).
    pub hold: Duration,
    /// Output tokens reserved for a request that sets no `max_tokens`.
    pub default_output_tokens: u64,
    /// What a request for an unpriced model reserves.
    pub unpriced_reservation: PicoUsd,
}

impl Default for LedgerPolicy {
    /// The gateway's command-line defaults.
    fn default() -> Self {
        Self {
            fail_closed: false,
            time_offset: chrono::TimeDelta::zero(),
            hold: Duration::from_secs(900),
            default_output_tokens: 4096,
            unpriced_reservation: PicoUsd(crate::money::PICO_PER_USD),
        }
    }
}

impl Gateway {
    pub async fn handle(self: &Arc<Self>, request: Request<Incoming>) -> Response<ResponseBody> {
        let started = Instant::now();
        // Pay-i's own API (ingest, request results) beside its proxy layout.
        if super::payi_api::serves(request.uri().path()) {
            return super::payi_api::handle(self, request).await;
        }
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
        let Some(route) = self.providers.route(request.method(), &path) else {
            return error(StatusCode::NOT_FOUND, "no_provider", "no provider is configured at this path");
        };
        // Nothing leaves unmetered: a path the gateway cannot meter is refused
        // before the key is even read (its reason names the path and the opt-in).
        if let PathClass::Refused { reason } = &route.class {
            self.metrics
                .refused_paths
                .get_or_create(&ProviderLabels { provider: Name(route.provider.name.as_str().into()) })
                .inc();
            return error(StatusCode::FORBIDDEN, "path_not_metered", reason);
        }
        let headers = request.headers();
        let answer = self.verifier.check("gateway", |name| headers.get(name).and_then(|v| v.to_str().ok()));
        if answer.allowed().is_none() {
            let status = StatusCode::from_u16(answer.decision.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            return error(status, answer.decision.as_str(), &answer.reason());
        }
        let credential = match &route.provider.credential_file {
            Some(_) => match self.credentials.get(&route.provider.name) {
                Some(secret) => Some(secret),
                None => {
                    let message = "the gateway has no credential for this provider";
                    return error(StatusCode::SERVICE_UNAVAILABLE, "no_credential", message);
                }
            },
            None => None,
        };
        let (parts, body) = request.into_parts();
        let (bytes, body_lease) = match self.read_body(&parts.headers, body).await {
            Ok(read) => read,
            Err(refusal) => return refusal,
        };
        let prepared = match (route.api, parts.method == hyper::Method::POST) {
            (Some(api), true) => match body::prepare(api, bytes) {
                Ok(prepared) => prepared,
                Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request_body", &e.to_string()),
            },
            _ => Prepared {
                model: None,
                stream: false,
                input_bytes: bytes.len(),
                body: bytes,
                asked_usage_ourselves: false,
                background: false,
                max_output_tokens: None,
            },
        };
        // A background response is answered before its work, without usage.
        let route = match prepared.background {
            false => route,
            true => match route.background_class() {
                PathClass::Refused { reason } => return error(StatusCode::FORBIDDEN, "path_not_metered", &reason),
                class => Route { api: None, class, ..route },
            },
        };
        let mut metering = self.metering(&answer, &route, &prepared, started);
        // The body's bytes stay in the budget while it is held: until it is sent, or,
        // for a stream, until the stream ends (kept to estimate a cut stream's prompt).
        metering.body_lease = Some(body_lease);
        metering.answer_lease = Some(self.budget.lease());
        if let PathClass::FlatPriced { price_pico, .. } = &route.class {
            metering.flat_price = Some(*price_pico);
        }
        if prepared.stream {
            metering.prompt = Some(prepared.body.clone());
        }
        let flat_price = metering.flat_price;
        let bound = || flat_price.unwrap_or_else(|| self.cost_bound(price_provider(route.provider), &prepared));
        match self.check_limits(&answer, bound).await {
            Ok(charge) => metering.charge = charge,
            Err(refusal) => return refusal,
        }
        let presented = self.verifier.presented_key(|name| parts.headers.get(name).and_then(|v| v.to_str().ok()));
        let outgoing = upstream_headers(
            &parts.headers,
            &Outgoing {
                kind: route.provider.kind,
                credential: credential.as_deref(),
                key: presented.as_ref().map(|(key, _)| *key),
                key_header: answer.key_header.as_deref(),
            },
        );
        let upstream = Upstream {
            provider: route.provider.name.clone(),
            url: route.upstream.clone(),
            api: route.api,
            flat_priced: matches!(route.class, PathClass::FlatPriced { .. }),
        };
        // The call to the provider runs on its own task: a client that leaves while
        // the provider works does not cancel it (the provider bills it anyway), and
        // the answer nobody takes is read to its end and counted (`metered`).
        let gateway = self.clone();
        let call =
            tokio::spawn(async move { gateway.forward(parts.method, upstream, outgoing, prepared, metering).await });
        match call.await {
            Ok(response) => response,
            Err(failed) => {
                tracing::error!(error = %failed, "gateway request task failed");
                error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "the gateway failed on this request")
            }
        }
    }

    /// Checks the limits that cover the request against the ledger; returns how to
    /// record it afterwards (its cost to those limits and the usage of every level
    /// it belongs to), or the refusal when a block limit cannot take it.
    ///
    /// Block limits are held, not just read: an upper bound of the request's cost
    /// ([`Gateway::cost_bound`]) is reserved on each of them in one atomic script,
    /// refused when spend plus what requests in flight hold plus this bound would
    /// pass the maximum, and settled to the exact cost by the request's usage event.
    /// So concurrent requests, on any replica, cannot together pass a maximum. A
    /// flat-priced path reserves its flat price.
    async fn check_limits(
        &self,
        answer: &Answer,
        bound: impl FnOnce() -> PicoUsd,
    ) -> Result<Option<Recorder>, Response<ResponseBody>> {
        let (Some(ledger), Some(attribution)) = (&self.ledger, answer.allowed()) else { return Ok(None) };
        let use_case = answer.context.label().map(|l| &**l);
        let covering = attribution.limits.covering(use_case);
        let now = chrono::Utc::now() + self.ledger_policy.time_offset;
        let keys: Vec<LedgerKey> =
            covering.rules.iter().map(|r| r.key(now)).map(|(key, ttl)| LedgerKey { key, ttl }).collect();
        let blocking: Vec<(&LimitRule, Bound)> = covering
            .rules
            .iter()
            .zip(&keys)
            .filter(|(rule, _)| rule.kind == LimitType::Block)
            .map(|(rule, key)| (rule, Bound { key: key.key.clone(), max_nano: rule.max_nano }))
            .collect();
        let mut id = None;
        let mut reserved = vec![];
        if !blocking.is_empty() {
            let event = event_id();
            let bound = bound();
            let bounds: Vec<Bound> = blocking.iter().map(|(_, b)| b.clone()).collect();
            match ledger.reserve(&event, &bounds, bound, self.ledger_policy.hold).await {
                Ok(Reservation::Held) => {
                    id = Some(event);
                    reserved = bounds.into_iter().map(|b| b.key).collect();
                }
                Ok(Reservation::Refused { index, spent_nano, reserved_nano }) => {
                    let rule = blocking.get(index).map_or(&covering.rules[0], |(rule, _)| rule);
                    ledger.metrics.refused.get_or_create(&LimitLabels { limit: rule.id.to_string() }).inc();
                    return Err(limit_reached(rule, spent_nano, reserved_nano, bound));
                }
                Err(failure) if self.ledger_policy.fail_closed => {
                    ledger.metrics.refused_unavailable.inc();
                    tracing::warn!(error = %failure, "limits ledger unreadable; refusing (fail-closed)");
                    let message = "the limits ledger is unavailable; requests covered by a block limit are refused";
                    return Err(error(StatusCode::SERVICE_UNAVAILABLE, "limits_unavailable", message));
                }
                Err(failure) => {
                    ledger.metrics.unchecked.inc();
                    tracing::warn!(error = %failure, "limits ledger unreadable; request let through unchecked (fail-open)");
                }
            }
        }
        for rule in &covering.rules {
            let labels = LimitLabels { limit: rule.id.to_string() };
            let max = rule.max_nano as f64 / NANO_PER_USD as f64;
            ledger.metrics.max.get_or_create(&labels).set(max);
            ledger.metrics.threshold.get_or_create(&labels).set(max * f64::from(rule.threshold_permille) / 1000.0);
        }
        let levels = levels(attribution, use_case);
        let usage = level_usage(&levels, now);
        let limits = covering.rules.iter().map(|r| r.id.clone()).collect();
        let ledger = ledger.clone();
        Ok(Some(Box::new(move |cost, tokens| {
            let event = UsageEvent { id, reserved, ..usage.event(keys, limits, cost, tokens) };
            ledger.record(event);
        })))
    }

    /// An upper bound of what the request can cost, reserved on its block limits:
    /// no more input tokens than body bytes (a token is at least one byte), and the
    /// request's output cap (`max_tokens` and its aliases), or the configured cap when
    /// it has none, each at the dearest price the model has. A model the table does
    /// not price reserves the configured cap of USD.
    fn cost_bound(&self, price_provider: &str, prepared: &Prepared) -> PicoUsd {
        let policy = &self.ledger_policy;
        let table = self.prices.current();
        let Some((_, price)) = prepared.model.as_deref().and_then(|m| table.lookup(price_provider, m)) else {
            return policy.unpriced_reservation;
        };
        let output = prepared.max_output_tokens.unwrap_or(policy.default_output_tokens);
        price.upper_bound(prepared.input_bytes as u64, output)
    }

    /// The request body, within the size and time bounds and the budget of bytes in
    /// flight, with its bytes' lease on the budget.
    async fn read_body(&self, headers: &HeaderMap, body: Incoming) -> Result<(Bytes, Lease), Response<ResponseBody>> {
        let max = self.limits.max_request_bytes;
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(self.too_large());
        }
        // A body of declared length is taken whole from the budget before any of it
        // is read, or refused then (a client that sent `Expect: 100-continue` has not
        // sent it yet); a chunked one is taken as it arrives.
        let declared = declared.map_or(0, |n| n as usize);
        let mut lease = self.budget.lease();
        if !lease.try_grow(declared) {
            return Err(self.busy());
        }
        let collect = read_within(body, max, declared, &mut lease);
        match tokio::time::timeout(self.limits.request_body_timeout, collect).await {
            Err(_) => Err(error(StatusCode::REQUEST_TIMEOUT, "request_timeout", "the request body took too long")),
            Ok(Ok(bytes)) => Ok((bytes, lease)),
            Ok(Err(BodyRead::TooLarge)) => Err(self.too_large()),
            Ok(Err(BodyRead::Busy)) => Err(self.busy()),
            Ok(Err(BodyRead::Failed)) => {
                Err(error(StatusCode::BAD_REQUEST, "request_body", "the request body could not be read"))
            }
        }
    }

    /// 503 `gateway_busy`: the budget of bytes in flight cannot take this body now.
    fn busy(&self) -> Response<ResponseBody> {
        self.budget.refused();
        let message = "the gateway holds as many request bytes as it may right now; retry shortly";
        let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "gateway_busy", message);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(BUSY_RETRY_AFTER_SECONDS));
        response
    }

    fn too_large(&self) -> Response<ResponseBody> {
        self.metrics.refused_too_large.inc();
        let message = format!("the request body is larger than {} bytes", self.limits.max_request_bytes);
        error(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", &message)
    }

    fn metering(&self, answer: &Answer, route: &Route, prepared: &Prepared, started: Instant) -> Metering {
        let a = answer.allowed().cloned();
        let name = |v: Option<Arc<str>>| Name(v.unwrap_or_else(|| "".into()));
        let labels = UsageLabels {
            organization: name(a.as_ref().map(|a| a.organization.clone())),
            group: name(a.as_ref().map(|a| a.group.clone())),
            application: name(a.as_ref().map(|a| a.application.clone())),
            use_case: name(answer.context.label().cloned()),
            provider: Name(route.provider.name.as_str().into()),
            model: Name::default(),
        };
        Metering::new(
            labels,
            price_provider(route.provider).to_string(),
            prepared.model.clone(),
            self.metrics.clone(),
            self.prices.clone(),
            self.unpriced.clone(),
            started,
            prepared.stream,
        )
    }

    async fn forward(
        &self,
        method: hyper::Method,
        route: Upstream,
        headers: HeaderMap,
        prepared: Prepared,
        mut metering: Metering,
    ) -> Response<ResponseBody> {
        let mut request = Request::new(Full::new(prepared.body));
        *request.method_mut() = method;
        *request.headers_mut() = headers;
        match route.url.parse() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => {
                metering.finish(None, None, Outcome::UpstreamUnavailable);
                return error(StatusCode::BAD_GATEWAY, "bad_upstream_url", "the provider's URL is not valid");
            }
        }
        let sent = Instant::now();
        let response = match tokio::time::timeout(self.limits.upstream_timeout, self.client.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                tracing::warn!(provider = %route.provider, error = %e, "provider unreachable");
                metering.finish(None, None, Outcome::UpstreamUnavailable);
                return error(StatusCode::BAD_GATEWAY, "upstream_unavailable", "the provider could not be reached");
            }
            Err(_) => {
                metering.finish(None, None, Outcome::UpstreamTimeout);
                return error(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "the provider did not answer in time");
            }
        };
        Metrics::observe(&self.metrics.upstream_duration, &metering.labels.provider, sent.elapsed());
        if metering.prompt.is_none() {
            // The body was sent and is no longer held.
            metering.body_lease = None;
        }
        let (mut parts, incoming) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        let body = Idle::new(incoming, self.limits.upstream_idle);
        let is_sse = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let body: ResponseBody = match (route.api, parts.status.is_success(), is_sse) {
            (None, true, _) if route.flat_priced => {
                UnsyncBoxBody::new(JsonBody::passthrough(body, Outcome::FlatPriced, metering))
            }
            // A compressed stream's events cannot be read as they pass.
            (Some(_), true, true) if parts.headers.get(header::CONTENT_ENCODING).is_some_and(|e| e != "identity") => {
                tracing::warn!(provider = %route.provider, "compressed event stream: its usage is not read");
                UnsyncBoxBody::new(JsonBody::passthrough(body, Outcome::UsageUnreadable, metering))
            }
            (Some(api), true, true) => {
                if prepared.asked_usage_ourselves {
                    parts.headers.remove(header::CONTENT_LENGTH);
                }
                UnsyncBoxBody::new(SseBody::new(body, api, prepared.asked_usage_ourselves, metering))
            }
            (api, true, _) => {
                let encoding = parts.headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
                match Encoding::of(encoding) {
                    Ok(encoding) => UnsyncBoxBody::new(JsonBody::new(body, api, metering).encoded(encoding)),
                    Err(_) if api.is_none() => UnsyncBoxBody::new(JsonBody::new(body, api, metering)),
                    Err(error) => {
                        tracing::warn!(%error, "provider answer in an encoding the gateway cannot read");
                        UnsyncBoxBody::new(JsonBody::passthrough(body, Outcome::UsageUnreadable, metering))
                    }
                }
            }
            (_, false, _) => UnsyncBoxBody::new(JsonBody::passthrough(body, Outcome::ProviderError, metering)),
        };
        Response::from_parts(parts, body)
    }
}

/// Seconds a client refused for a busy gateway is told to wait (bodies in flight
/// are sent on within a provider's round trip, so room comes back quickly).
const BUSY_RETRY_AFTER_SECONDS: &str = "1";

/// Why a request body was not read whole.
enum BodyRead {
    TooLarge,
    /// The budget of bytes in flight cannot take more of it.
    Busy,
    Failed,
}

/// Reads a body of at most `max` bytes (`declared` by its content-length, 0 when not,
/// and already in `lease`); what passes the lease is taken from the budget before
/// it is kept.
async fn read_within(mut body: Incoming, max: usize, declared: usize, lease: &mut Lease) -> Result<Bytes, BodyRead> {
    let mut kept = BytesMut::with_capacity(declared.min(max));
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| BodyRead::Failed)?.into_data() else { continue };
        let size = kept.len() + data.len();
        if size > max {
            return Err(BodyRead::TooLarge);
        }
        if size > lease.bytes() && !lease.try_grow(size - lease.bytes()) {
            return Err(BodyRead::Busy);
        }
        kept.extend_from_slice(&data);
    }
    Ok(kept.freeze())
}

/// The month-to-date usage counters of the levels one request belongs to.
pub(super) struct LevelUsage {
    keys: Vec<UsageKeys>,
    ttl: u64,
}

/// The levels a request is charged to, broadest first: its Organization, Group,
/// Application and, when it names one, use case. One list for every source of
/// usage (proxied or reported).
pub(super) fn levels(attribution: &Attribution, use_case: Option<&str>) -> Vec<String> {
    let mut levels = vec![
        organization_level(&attribution.organization),
        group_level(&attribution.group),
        application_level(&attribution.namespace, &attribution.application),
    ];
    if let Some(use_case) = use_case {
        levels.push(use_case_level(&attribution.namespace, &attribution.application, use_case));
    }
    levels
}

pub(super) fn level_usage(levels: &[String], now: chrono::DateTime<chrono::Utc>) -> LevelUsage {
    let month = spend::month(now);
    LevelUsage { keys: levels.iter().map(|level| UsageKeys::of(level, &month)).collect(), ttl: spend::ttl_seconds(now) }
}

impl LevelUsage {
    /// The usage event of a finished request: its cost to the covering limits' counters
    /// and to each level's spend, its tokens and itself to each level's counts.
    pub(super) fn event(
        self,
        limit_keys: Vec<LedgerKey>,
        limits: Vec<Arc<str>>,
        cost: Option<PicoUsd>,
        tokens: u64,
    ) -> UsageEvent {
        let ttl = Some(self.ttl);
        let counter = |key: String| LedgerKey { key, ttl };
        let mut money = limit_keys;
        let mut counts = Vec::with_capacity(self.keys.len() * 3);
        for keys in self.keys {
            money.push(counter(keys.spend));
            counts.push((counter(keys.tokens), tokens));
            counts.push((counter(keys.requests), 1));
            if cost.is_none() {
                counts.push((counter(keys.unpriced), 1));
            }
        }
        UsageEvent { cost, money, limits, counts, ..UsageEvent::default() }
    }
}

/// Where one request goes, owned, for the task that calls the provider.
struct Upstream {
    provider: String,
    url: String,
    api: Option<super::usage::Api>,
    /// Allowed by an `unmeteredPaths` entry: a 2xx answer costs its flat price.
    flat_priced: bool,
}

/// Which price table section a provider's models are in.
fn price_provider(provider: &Provider) -> &'static str {
    match provider.kind {
        Kind::Openai | Kind::Azure => "openai",
        Kind::Anthropic => "anthropic",
    }
}

/// Pay-i's answer for a blocked limit (HTTP 400, `xproxy_error.code`
/// `limit_reached`, the limit in `xproxy_result.blocked_limit_ids`), with an
/// `error.message` the providers' SDKs show, naming the limit and its level.
pub fn limit_reached(rule: &LimitRule, spent_nano: u64, held_nano: u64, bound: PicoUsd) -> Response<ResponseBody> {
    let id = &*rule.id;
    let message = format!(
        "limit {id} reached: {} of {} USD spent, {} USD held by requests in flight, and this request may cost up to {} USD",
        usd_text(spent_nano),
        usd_text(rule.max_nano),
        usd_text(held_nano),
        bound
    );
    let body = serde_json::json!({
        "statusCode": 400,
        "message": "Bad Request",
        "error": {"message": message, "type": "payi_gateway", "code": "limit_reached"},
        "xproxy_error": {"code": "limit_reached", "message": "Insufficient limit for the requested operation"},
        "xproxy_result": {"limits": {id: {"state": "blocked"}}, "blocked_limit_ids": [id]},
    });
    let mut response =
        Response::new(UnsyncBoxBody::new(Full::new(Bytes::from(body.to_string())).map_err(|never| match never {})));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(id) {
        headers.insert("x-payi-limit", value);
    }
    response
}

/// A JSON error in the shape the providers' SDKs read (`error.message`).
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<ResponseBody> {
    let body = serde_json::json!({"error": {"message": message, "type": "payi_gateway", "code": code}});
    let mut response =
        Response::new(UnsyncBoxBody::new(Full::new(Bytes::from(body.to_string())).map_err(|never| match never {})));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(crate::verifier::http::CHALLENGE));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_json_the_sdks_read() {
        let response = error(StatusCode::UNAUTHORIZED, "unknown", "unknown API key");
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
