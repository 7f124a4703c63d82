//! Pay-i's own API on the gateway, beside its proxy layout (`/api/v1/proxy/...`,
//! which stays in `proxy`): what a workload set up for Pay-i's SDK calls with its
//! key (`PAYI_BASE_URL` pointing here). docs/payi-api.md lists every endpoint
//! and what it does here.
//!
//! - `ingest`: a usage report of a call the workload made to the provider itself
//!   (`payi_instrument()`, `client.ingest.units(...)`), checked and priced (pure).
//! - `results`: request results kept in the ledger's Redis, per Application.
//! - `limits`: the declared limits that cover the Application, read-only (pure).
//! - `errors`: Pay-i's error shape and codes.
//!
//! An ingested event takes the path of a proxied request's usage: the same key
//! check and attribution (the verifier's index, the same headers), the same price
//! table, the same metrics (`source="ingest"`), and the same [`UsageEvent`] charged
//! through the ledger's exactly-once script ([`Ledger::apply_once`]) to every
//! limit that covers it and every level's spend. It is applied before answering,
//! not queued: the answer says whether it was charged now or was a repeat.

pub mod errors;
pub mod ingest;
pub mod limits;
pub mod results;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::metrics::{CategoryLabels, IngestLabels, OTHER_MODEL, Outcome as MetricOutcome, Source, UsageLabels};
use super::pricing::cost;
use super::proxy::{Gateway, ResponseBody, level_usage, levels};
use crate::limits::ledger::{Applied, LedgerKey};
use crate::limits::spend::{self, UsageKeys};
use crate::verifier::Answer;
use crate::verifier::index::Decision;
use crate::verifier::metrics::Name;
use crate::verifier::use_case::{XPROXY_USE_CASE_ID, XPROXY_USE_CASE_NAME, XPROXY_USE_CASE_VERSION, XPROXY_USER_ID};
use errors::{ApiError, code, json_response};
use ingest::{Ingest, IngestRequest};

/// Events in one bulk ingest: enough for a batch a workload kept while offline,
/// bounded so one request cannot hold the gateway for minutes.
pub const MAX_BULK_EVENTS: usize = 1000;
/// The header that names limits by id (not served yet: refused rather than ignored).
const LIMIT_IDS_HEADER: &str = "xproxy-limit-ids";

/// Whether a path is Pay-i's API rather than a provider's (Pay-i's proxy layout
/// `/api/v1/proxy/...` is the proxy's).
pub fn serves(path: &str) -> bool {
    path.starts_with("/api/v1/") && !path.starts_with("/api/v1/proxy/")
}

/// What a request to Pay-i's API asks for (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Ingest,
    IngestBulk,
    ResultById(String),
    ResultByProvider {
        category: String,
        provider_response_id: String,
    },
    LimitList,
    LimitGet(String),
    /// A change to a limit: refused (declared limits are read-only here).
    LimitChange(String),
    /// A Pay-i endpoint this gateway does not serve, and why.
    NotServed(&'static str),
    /// A Pay-i endpoint asked with a method it does not take.
    WrongMethod,
    /// Not a path of Pay-i's API.
    Unknown,
}

const LIMITS_NOT_SERVED: &str = "limits created through the API (by id) are not served by this gateway yet: the \
    limits declared in the Organization, Group and Application manifests apply to every request by themselves, and \
    GET /api/v1/limits lists them (docs/payi-api.md)";
const USE_CASES_NOT_SERVED: &str = "use cases are declared in the Application's spec.useCases (GitOps is the \
    source of truth); use-case instances and KPIs are not served by this gateway yet (docs/payi-api.md)";
const PROPERTIES_NOT_SERVED: &str =
    "request properties are not kept by this gateway; results are read-only (docs/payi-api.md)";
const CATEGORIES_NOT_SERVED: &str = "categories and prices come from the gateway's price table (the chart's \
    gateway.prices), not from the API (docs/payi-api.md)";

pub fn route(method: &Method, path: &str) -> Endpoint {
    let Some(rest) = path.strip_prefix("/api/v1/") else { return Endpoint::Unknown };
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let get = method == Method::GET;
    let post = method == Method::POST;
    match segments.as_slice() {
        ["ingest"] if post => Endpoint::Ingest,
        ["ingest", "bulk"] if post => Endpoint::IngestBulk,
        ["ingest"] | ["ingest", "bulk"] => Endpoint::WrongMethod,
        ["requests", id, "result"] if get => Endpoint::ResultById(decode(id)),
        ["requests", "provider", category, id, "result"] if get => {
            Endpoint::ResultByProvider { category: decode(category), provider_response_id: decode(id) }
        }
        ["requests", .., "result"] => Endpoint::WrongMethod,
        ["requests", .., "properties"] => Endpoint::NotServed(PROPERTIES_NOT_SERVED),
        ["limits"] if get => Endpoint::LimitList,
        ["limits"] => Endpoint::NotServed(LIMITS_NOT_SERVED),
        ["limits", id @ .., "reset" | "properties"] if !id.is_empty() => Endpoint::LimitChange(joined(id)),
        ["limits", id @ ..] if get => Endpoint::LimitGet(joined(id)),
        ["limits", id @ ..] => Endpoint::LimitChange(joined(id)),
        ["use_cases", ..] => Endpoint::NotServed(USE_CASES_NOT_SERVED),
        ["categories", ..] => Endpoint::NotServed(CATEGORIES_NOT_SERVED),
        _ => Endpoint::Unknown,
    }
}

/// Path segments decoded and joined again (limit ids hold `/`, which the SDK escapes).
fn joined(segments: &[&str]) -> String {
    segments.iter().map(|s| decode(s)).collect::<Vec<_>>().join("/")
}

/// Percent-decodes one path segment (what the SDK's path template encoded); an
/// invalid escape is kept as it is.
fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, ..) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers one request to Pay-i's API.
pub async fn handle(gateway: &Arc<Gateway>, request: Request<Incoming>) -> Response<ResponseBody> {
    let endpoint = route(request.method(), request.uri().path());
    let is_ingest = matches!(endpoint, Endpoint::Ingest | Endpoint::IngestBulk);
    match serve(gateway, endpoint, request).await {
        Ok(response) => response,
        Err(error) => {
            if is_ingest {
                gateway.metrics.ingest_refused.get_or_create(&IngestLabels { reason: error.code }).inc();
            }
            error.response()
        }
    }
}

async fn serve(
    gateway: &Arc<Gateway>,
    endpoint: Endpoint,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    match endpoint {
        Endpoint::Unknown => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                code::NOT_SERVED,
                "not an endpoint of Pay-i's API (docs/payi-api.md lists those served here)",
            ));
        }
        Endpoint::WrongMethod => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                code::NOT_SERVED,
                "this endpoint does not take this method (docs/payi-api.md)",
            ));
        }
        _ => {}
    }
    let (parts, body) = request.into_parts();
    let answer = check_key(gateway, &parts.headers, &[])?;
    let now = Utc::now();
    match endpoint {
        Endpoint::Ingest => {
            refuse_limit_ids(parts.headers.get(LIMIT_IDS_HEADER).and_then(|v| v.to_str().ok()))?;
            let bytes = read_body(gateway, &parts.headers, body).await?;
            let request: IngestRequest = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::bad_request(code::INVALID_JSON, format!("the body is not an ingest event: {e}"))
            })?;
            let ingest = ingest::validate(request, now)?;
            let answer = ingest_one(gateway, &answer, &ingest, now).await?;
            Ok(json_response(StatusCode::OK, &answer))
        }
        Endpoint::IngestBulk => {
            refuse_limit_ids(parts.headers.get(LIMIT_IDS_HEADER).and_then(|v| v.to_str().ok()))?;
            bulk(gateway, &parts.headers, body, now).await
        }
        Endpoint::ResultById(id) => read_result(gateway, &answer, &id).await,
        Endpoint::ResultByProvider { category, provider_response_id } => {
            let Some(category) = ingest::category(&category) else { return Err(not_found()) };
            let Some(attribution) = answer.allowed() else { return Err(not_found()) };
            let id = ingest::event_id(
                &attribution.namespace,
                &attribution.application,
                category.name,
                Some(&provider_response_id),
            );
            read_result(gateway, &answer, &id).await
        }
        Endpoint::LimitList => {
            let Some(attribution) = answer.allowed() else { return Err(not_found()) };
            let query = limits::list_query(parts.uri.query())?;
            let (rules, cursor) = limits::page(limits::declared(&attribution.limits), &query);
            let items = with_spend(gateway, &rules, now).await?;
            let body = json!({"request_id": &*crate::limits::ledger::event_id(), "cursor": cursor, "items": items});
            Ok(json_response(StatusCode::OK, &body))
        }
        Endpoint::LimitGet(id) => {
            let Some(attribution) = answer.allowed() else { return Err(not_found()) };
            let declared = limits::declared(&attribution.limits);
            let Some(rule) = declared.into_iter().find(|r| *r.id == *id) else { return Err(limits::not_found(&id)) };
            let mut items = with_spend(gateway, &[rule], now).await?;
            let body = json!({"request_id": &*crate::limits::ledger::event_id(), "limit": items.pop()});
            Ok(json_response(StatusCode::OK, &body))
        }
        Endpoint::LimitChange(id) => {
            let Some(attribution) = answer.allowed() else { return Err(not_found()) };
            let declared = limits::declared(&attribution.limits);
            match declared.into_iter().find(|r| *r.id == *id) {
                Some(rule) => Err(limits::read_only(rule)),
                None => Err(limits::not_found(&id)),
            }
        }
        Endpoint::NotServed(why) => Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, code::NOT_SERVED, why)),
        Endpoint::Unknown | Endpoint::WrongMethod => Err(not_found()),
    }
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, code::REQUEST_NOT_FOUND, "no result with this id for this key's Application")
}

/// The key check and attribution of a proxied request (the same verifier, the
/// same headers), with `fields` (a bulk event's own context) read before the headers.
fn check_key(gateway: &Gateway, headers: &HeaderMap, fields: &[(&str, &str)]) -> Result<Answer, ApiError> {
    let answer = gateway.verifier.check("gateway", |name| {
        fields
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| *value)
            .or_else(|| headers.get(name).and_then(|v| v.to_str().ok()))
    });
    if answer.allowed().is_some() {
        return Ok(answer);
    }
    Err(match answer.decision {
        Decision::UseCaseRefused => ApiError::bad_request(code::USE_CASE_NOT_FOUND, answer.reason()),
        Decision::BadHeader => ApiError::bad_request(code::REQUEST_PROCESSING_ERROR, answer.reason()),
        _ => ApiError::new(StatusCode::UNAUTHORIZED, code::INVALID_API_KEY, answer.reason()),
    })
}

/// Limits named by id are refused, not ignored: a workload that relies on one
/// must learn that it does not apply here.
fn refuse_limit_ids(ids: Option<&str>) -> Result<(), ApiError> {
    match ids.map(str::trim).filter(|ids| !ids.is_empty()) {
        None => Ok(()),
        Some(_) => Err(ApiError::bad_request(code::INVALID_LIMIT_IDS, LIMITS_NOT_SERVED)),
    }
}

/// The request body within the gateway's size and time bounds.
async fn read_body(gateway: &Gateway, headers: &HeaderMap, body: Incoming) -> Result<Bytes, ApiError> {
    let max = gateway.limits.max_request_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::REQUEST_TOO_LARGE,
            format!("the request body is larger than {max} bytes (the gateway's --max-request-bytes)"),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(gateway.limits.request_body_timeout, Limited::new(body, max).collect()).await {
        Err(_) => {
            Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, code::REQUEST_PROCESSING_ERROR, "the body took too long"))
        }
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(_)) => Err(ApiError::bad_request(code::REQUEST_PROCESSING_ERROR, "the request body could not be read")),
    }
}

/// Charges one checked event and answers Pay-i's `IngestResponse`.
async fn ingest_one(
    gateway: &Gateway,
    answer: &Answer,
    ingest: &Ingest,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let unexpected = || ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code::UNEXPECTED_ERROR, "no attribution");
    let attribution = answer.allowed().ok_or_else(unexpected)?;
    let category = ingest.category;
    let request_id = ingest::event_id(
        &attribution.namespace,
        &attribution.application,
        category.name,
        ingest.provider_response_id.as_deref(),
    );
    let table = gateway.prices.current();
    let priced = table.lookup(category.price_section, &ingest.resource);
    let split = priced.map(|(_, price)| ingest::split_cost(&ingest.usage, price));
    let total = priced.map(|(_, price)| cost(&ingest.usage, price));
    let mut warnings = ingest::warnings(ingest, priced.is_some());
    let use_case = answer.context.label().map(|l| &**l);
    let labels = UsageLabels {
        organization: Name(attribution.organization.clone()),
        group: Name(attribution.group.clone()),
        application: Name(attribution.application.clone()),
        use_case: Name(answer.context.label().cloned().unwrap_or_else(|| "".into())),
        provider: Name(category.provider.into()),
        model: Name(priced.map_or(OTHER_MODEL, |(name, _)| name).into()),
    };
    let response = |result: Value| {
        json!({
            "event_timestamp": ingest.event_time.to_rfc3339(),
            "ingest_timestamp": now.to_rfc3339(),
            "request_id": &*request_id,
            "xproxy_result": result,
        })
    };
    let count_metrics = || {
        gateway.metrics.record_from(Source::Ingest, &labels, &ingest.usage, total, MetricOutcome::Metered);
        let unknown = ingest.unknown_total();
        if unknown > 0 {
            gateway
                .metrics
                .ingest_unknown_units
                .get_or_create(&CategoryLabels { category: category.name })
                .inc_by(unknown);
        }
    };
    let Some(ledger) = &gateway.ledger else {
        // Metered all the same; nothing to keep a result in or to recognise a repeat by.
        count_metrics();
        warnings.push("the gateway has no ledger: this result is not kept and a repeat is not recognised".into());
        let outcome = ingest::Outcome {
            request_id: &request_id,
            ingest,
            context: &answer.context,
            cost: split,
            limits: vec![],
            duplicate: false,
            warnings,
        };
        return Ok(response(ingest::xproxy_result(&outcome)));
    };
    // The event of a proxied request, with this id: every covering limit and every
    // level's spend, tokens and request count (and its unknown cost, if any).
    let windows = now + gateway.ledger_policy.time_offset;
    let covering = attribution.limits.covering(use_case);
    let keys: Vec<LedgerKey> =
        covering.rules.iter().map(|r| r.key(windows)).map(|(key, ttl)| LedgerKey { key, ttl }).collect();
    let levels = levels(attribution, use_case);
    let limit_ids = covering.rules.iter().map(|r| r.id.clone()).collect();
    let mut event = level_usage(&levels, windows).event(keys, limit_ids, total, ingest.usage.total());
    if total.is_some() && !ingest.unknown.is_empty() {
        let month = spend::month(windows);
        let ttl = Some(spend::ttl_seconds(windows));
        for level in &levels {
            event.counts.push((LedgerKey { key: UsageKeys::of(level, &month).unpriced, ttl }, 1));
        }
    }
    event.id = Some(request_id.clone());
    let result_key = results::key(&attribution.namespace, &attribution.application, &request_id);
    match ledger.apply_once(event, results::RETENTION).await {
        Ok(Applied::Fresh(totals)) => {
            count_metrics();
            let limits = covering
                .rules
                .iter()
                .zip(totals)
                .map(|(rule, spent)| (rule.id.clone(), rule.kind, spent, rule.max_nano))
                .collect();
            let outcome = ingest::Outcome {
                request_id: &request_id,
                ingest,
                context: &answer.context,
                cost: split,
                limits,
                duplicate: false,
                warnings,
            };
            let answer = response(ingest::xproxy_result(&outcome));
            if let Err(error) = results::store(ledger, &result_key, &answer.to_string()).await {
                tracing::warn!(request = %request_id, %error, "ingest charged; its result not kept");
            }
            Ok(answer)
        }
        Ok(Applied::Repeat) => {
            gateway.metrics.ingest_duplicates.inc();
            let kept = results::fetch(ledger, &result_key).await.ok().flatten();
            let kept = kept.and_then(|text| serde_json::from_str::<Value>(&text).ok());
            let mut answer = match kept.filter(|kept| kept["xproxy_result"].is_object()) {
                Some(kept) => kept,
                // Charged by a report whose result is not (or not yet) kept.
                None => {
                    let outcome = ingest::Outcome {
                        request_id: &request_id,
                        ingest,
                        context: &answer.context,
                        cost: split,
                        limits: vec![],
                        duplicate: true,
                        warnings: vec![],
                    };
                    response(ingest::xproxy_result(&outcome))
                }
            };
            if let Some(answer) = answer.as_object_mut() {
                answer.insert("ingest_timestamp".into(), json!(now.to_rfc3339()));
                if let Some(result) = answer.get_mut("xproxy_result").and_then(Value::as_object_mut) {
                    result.insert("duplicate_request".into(), json!(true));
                }
            }
            Ok(answer)
        }
        Ok(Applied::WrongType) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::UNEXPECTED_ERROR,
            "a ledger key holds something other than a counter: the event cannot be charged",
        )),
        Err(error) => {
            tracing::warn!(request = %request_id, %error, "ingest not charged: the ledger did not answer");
            // 504: Pay-i's instrumentation queues a report answered so and sends it
            // again later; the same id then charges it once.
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                code::LEDGER_UNAVAILABLE,
                "the limits ledger did not answer: the event was not charged; send it again (it is charged once)",
            ))
        }
    }
}

/// `POST /api/v1/ingest/bulk`: a bare array of events, each with its context as
/// fields, each checked and charged as a single ingest. A ledger that does not
/// answer fails the whole request (504), so the client sends it all again:
/// what was charged before is then recognised and not charged twice.
async fn bulk(
    gateway: &Gateway,
    headers: &HeaderMap,
    body: Incoming,
    now: DateTime<Utc>,
) -> Result<Response<ResponseBody>, ApiError> {
    let bytes = read_body(gateway, headers, body).await?;
    let events: Vec<Value> = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(code::INVALID_JSON, format!("the body is not an array of events: {e}")))?;
    if events.len() > MAX_BULK_EVENTS {
        return Err(ApiError::bad_request(
            code::REQUEST_PROCESSING_ERROR,
            format!("{} events in one bulk ingest; at most {MAX_BULK_EVENTS}", events.len()),
        ));
    }
    let mut errors = vec![];
    let mut ingested = 0;
    for (index, event) in events.into_iter().enumerate() {
        match bulk_event(gateway, headers, event, now).await {
            Ok(()) => ingested += 1,
            Err(error) if error.code == code::LEDGER_UNAVAILABLE => return Err(error),
            Err(error) => {
                gateway.metrics.ingest_refused.get_or_create(&IngestLabels { reason: error.code }).inc();
                errors.push(json!({"item_index": index, "xproxy_result": error.body()}));
            }
        }
    }
    let total = ingested + errors.len();
    let body = json!({
        "ingest_count": ingested,
        "ingest_timestamp": now.to_rfc3339(),
        "request_id": &*crate::limits::ledger::event_id(),
        "error_count": errors.len(),
        "item_error_count": errors.len(),
        "total_count": total,
        "errors": errors,
    });
    Ok(json_response(StatusCode::OK, &body))
}

async fn bulk_event(gateway: &Gateway, headers: &HeaderMap, event: Value, now: DateTime<Utc>) -> Result<(), ApiError> {
    let request: IngestRequest = serde_json::from_value(event)
        .map_err(|e| ApiError::bad_request(code::INVALID_JSON, format!("the event is not an ingest event: {e}")))?;
    if request.limit_ids.as_ref().is_some_and(|ids| ids.iter().any(|id| !id.trim().is_empty())) {
        return Err(ApiError::bad_request(code::INVALID_LIMIT_IDS, LIMITS_NOT_SERVED));
    }
    let version = request.use_case_version.map(|v| v.to_string());
    let mut fields: Vec<(&str, &str)> = vec![];
    for (name, value) in [
        (XPROXY_USE_CASE_NAME, request.use_case_name.as_deref()),
        (XPROXY_USE_CASE_ID, request.use_case_id.as_deref()),
        (XPROXY_USE_CASE_VERSION, version.as_deref()),
        (XPROXY_USER_ID, request.user_id.as_deref()),
    ] {
        if let Some(value) = value {
            fields.push((name, value));
        }
    }
    let answer = check_key(gateway, headers, &fields)?;
    let ingest = ingest::validate(request, now)?;
    ingest_one(gateway, &answer, &ingest, now).await.map(|_| ())
}

/// Each limit in Pay-i's shape with its spend in the current window, from the ledger.
async fn with_spend(
    gateway: &Gateway,
    rules: &[&crate::limits::rule::LimitRule],
    now: DateTime<Utc>,
) -> Result<Vec<Value>, ApiError> {
    let Some(ledger) = &gateway.ledger else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::LEDGER_UNAVAILABLE,
            "limits' spend is kept in the limits ledger, and this gateway has none (--limits-redis-url)",
        ));
    };
    let windows = now + gateway.ledger_policy.time_offset;
    let keys: Vec<String> = rules.iter().map(|r| r.key(windows).0).collect();
    let spent = ledger.spent(&keys).await.map_err(|error| {
        tracing::warn!(%error, "limits' spend not read");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code::LEDGER_UNAVAILABLE, "the limits ledger did not answer")
    })?;
    Ok(rules.iter().zip(spent).map(|(rule, spent)| limits::limit_json(rule, spent)).collect())
}

/// A kept result, for this key's Application only.
async fn read_result(gateway: &Gateway, answer: &Answer, id: &str) -> Result<Response<ResponseBody>, ApiError> {
    let Some(ledger) = &gateway.ledger else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::LEDGER_UNAVAILABLE,
            "request results are kept in the limits ledger, and this gateway has none (--limits-redis-url)",
        ));
    };
    let Some(attribution) = answer.allowed() else { return Err(not_found()) };
    if !results::plausible_id(id) {
        return Err(not_found());
    }
    let key = results::key(&attribution.namespace, &attribution.application, id);
    let kept = results::fetch(ledger, &key).await.map_err(|error| {
        tracing::warn!(%error, "request result not read");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code::LEDGER_UNAVAILABLE, "the limits ledger did not answer")
    })?;
    let Some(kept) = kept.and_then(|text| serde_json::from_str::<Value>(&text).ok()) else { return Err(not_found()) };
    Ok(json_response(StatusCode::OK, &json!({"xproxy_result": kept["xproxy_result"]})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pay_is_api_is_told_apart_from_its_proxy_layout() {
        assert!(serves("/api/v1/ingest"));
        assert!(serves("/api/v1/requests/abc/result"));
        assert!(!serves("/api/v1/proxy/openai/v1/chat/completions"));
        assert!(!serves("/openai/v1/chat/completions"));
        assert!(!serves("/api/v2/ingest"));
    }

    #[test]
    fn routes() {
        assert_eq!(route(&Method::POST, "/api/v1/ingest"), Endpoint::Ingest);
        assert_eq!(route(&Method::POST, "/api/v1/ingest/bulk"), Endpoint::IngestBulk);
        assert_eq!(route(&Method::GET, "/api/v1/ingest"), Endpoint::WrongMethod);
        assert_eq!(route(&Method::GET, "/api/v1/requests/abc/result"), Endpoint::ResultById("abc".into()));
        assert_eq!(
            route(&Method::GET, "/api/v1/requests/provider/system.openai/chatcmpl%2D1/result"),
            Endpoint::ResultByProvider { category: "system.openai".into(), provider_response_id: "chatcmpl-1".into() }
        );
        assert_eq!(route(&Method::PUT, "/api/v1/requests/abc/properties"), Endpoint::NotServed(PROPERTIES_NOT_SERVED));
        assert_eq!(route(&Method::POST, "/api/v1/limits"), Endpoint::NotServed(LIMITS_NOT_SERVED));
        assert_eq!(route(&Method::GET, "/api/v1/limits"), Endpoint::LimitList);
        let id = "application/ns/chat/budget";
        assert_eq!(
            route(&Method::GET, "/api/v1/limits/application%2Fns%2Fchat%2Fbudget"),
            Endpoint::LimitGet(id.into())
        );
        assert_eq!(route(&Method::GET, "/api/v1/limits/application/ns/chat/budget"), Endpoint::LimitGet(id.into()));
        for (method, path) in [
            (Method::PUT, "/api/v1/limits/application%2Fns%2Fchat%2Fbudget"),
            (Method::DELETE, "/api/v1/limits/application%2Fns%2Fchat%2Fbudget"),
            (Method::POST, "/api/v1/limits/application%2Fns%2Fchat%2Fbudget/reset"),
            (Method::PUT, "/api/v1/limits/application%2Fns%2Fchat%2Fbudget/properties"),
        ] {
            assert_eq!(route(&method, path), Endpoint::LimitChange(id.into()), "{method} {path}");
        }
        assert_eq!(route(&Method::POST, "/api/v1/use_cases/instances/x"), Endpoint::NotServed(USE_CASES_NOT_SERVED));
        assert_eq!(route(&Method::GET, "/api/v1/nothing"), Endpoint::Unknown);
    }

    #[test]
    fn percent_escapes_are_decoded_and_bad_ones_kept() {
        assert_eq!(decode("a%20b%2Fc"), "a b/c");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }

    #[test]
    fn limits_named_by_id_are_refused_not_ignored() {
        assert!(refuse_limit_ids(None).is_ok());
        assert!(refuse_limit_ids(Some(" ")).is_ok());
        assert_eq!(refuse_limit_ids(Some("user-1")).unwrap_err().code, code::INVALID_LIMIT_IDS);
    }
}
