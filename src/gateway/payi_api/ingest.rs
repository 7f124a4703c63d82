//! Pay-i's ingest (`POST /api/v1/ingest`, `/api/v1/ingest/bulk`), the pure part:
//! the request as Pay-i's SDK sends it, checked and turned into the gateway's own
//! [`Usage`] by [`validate`]; the event's id by [`event_id`]; the answer's
//! `xproxy_result` by [`xproxy_result`]. The IO (key check, ledger, metrics) is in
//! `mod.rs`; the event it charges is the one a proxied request charges.
//!
//! Units → token types (a `_large_context` suffix is dropped: the price table picks
//! the long-context tier from the input count itself):
//!
//! | unit | input | output |
//! |---|---|---|
//! | `text` | `input` | `output` |
//! | `text_cache_read` | `cached_input` | — |
//! | `text_cache_write` | `cache_write` | — |
//! | `text_cache_write_1h` | `cache_write_1h` | — |
//! | `reasoning` | — | `reasoning` |
//! | `web_search_request` | — | web search requests |
//!
//! Anything else ("—" included) is an **unknown unit**: reported back in
//! `unknown_units`, counted in `payi_gateway_ingest_unknown_units_total`, and the
//! event counts as one of unknown cost at every level (the known units are still
//! charged). It is never priced as zero silently, and never refused: the call it
//! reports has happened and been billed by the provider, so dropping the report
//! would lose the known part of the money as well.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::errors::{ApiError, code};
use crate::crd::LimitType;
use crate::gateway::pricing::{Price, cost};
use crate::gateway::usage::Usage;
use crate::money::PicoUsd;
use crate::verifier::use_case::RequestContext;

/// How far in the future an event may be stamped (Pay-i's rule: clocks drift).
pub const FUTURE_SKEW: TimeDelta = TimeDelta::minutes(5);
/// The most units of one type one event may report: far above any real request
/// (a million-token context is 10^6), low enough that no sum overflows.
pub const MAX_UNITS: u64 = 1_000_000_000;
/// Unit types per event.
pub const MAX_UNIT_TYPES: usize = 64;
/// Length bound of a unit name, a resource, a provider response id.
pub const MAX_NAME: usize = 256;

/// A category this gateway prices: Pay-i's name, the price table's section and
/// the `provider` metric label (as a proxied request to that provider has).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Category {
    pub name: &'static str,
    pub price_section: &'static str,
    pub provider: &'static str,
}

pub const CATEGORIES: [Category; 3] = [
    Category { name: "system.openai", price_section: "openai", provider: "openai" },
    Category { name: "system.azureopenai", price_section: "openai", provider: "azure.openai" },
    Category { name: "system.anthropic", price_section: "anthropic", provider: "anthropic" },
];

pub fn category(name: &str) -> Option<&'static Category> {
    CATEGORIES.iter().find(|c| c.name == name)
}

/// One unit's counts as sent (signed, so a negative count is refused by name, not
/// as a JSON error).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawUnits {
    pub input: Option<i64>,
    pub output: Option<i64>,
}

/// An ingest request body (one event; in bulk, with the context as fields).
/// Fields Pay-i takes that change no money here (latencies, request and response
/// JSON, function calls, properties) are accepted and not kept.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct IngestRequest {
    pub category: Option<String>,
    pub resource: Option<String>,
    pub units: Option<BTreeMap<String, RawUnits>>,
    pub event_timestamp: Option<String>,
    pub provider_response_id: Option<String>,
    pub http_status_code: Option<i64>,
    // The context, in bulk items only (single events carry it in headers).
    pub use_case_name: Option<String>,
    pub use_case_id: Option<String>,
    pub use_case_version: Option<i64>,
    pub use_case_step: Option<String>,
    pub user_id: Option<String>,
    pub limit_ids: Option<Vec<String>>,
}

/// A checked event.
#[derive(Clone, Debug, PartialEq)]
pub struct Ingest {
    pub category: &'static Category,
    pub resource: String,
    pub usage: Usage,
    /// Units that map to no token type, by unit name: (input, output).
    pub unknown: BTreeMap<String, (u64, u64)>,
    pub event_time: DateTime<Utc>,
    pub provider_response_id: Option<String>,
}

impl Ingest {
    pub fn unknown_total(&self) -> u64 {
        self.unknown.values().fold(0, |sum, (i, o)| sum.saturating_add(*i).saturating_add(*o))
    }
}

/// Checks an event and maps its units (pure; `now` is the gateway's clock).
pub fn validate(request: IngestRequest, now: DateTime<Utc>) -> Result<Ingest, ApiError> {
    let missing = |field: &str| {
        ApiError::bad_request(code::REQUIRED_FIELD_MISSING, format!("required request field '{field}' is missing"))
    };
    let name = request.category.filter(|c| !c.trim().is_empty()).ok_or_else(|| missing("category"))?;
    let category = category(name.trim()).ok_or_else(|| {
        let known: Vec<&str> = CATEGORIES.iter().map(|c| c.name).collect();
        ApiError::bad_request(
            code::CATEGORY_NOT_FOUND,
            format!("category '{}' not found: this gateway prices {}", shown(&name), known.join(", ")),
        )
    })?;
    let resource = request.resource.filter(|r| !r.trim().is_empty()).ok_or_else(|| missing("resource"))?;
    if resource.len() > MAX_NAME {
        return Err(processing(format!("resource is longer than {MAX_NAME} bytes")));
    }
    let units = request.units.ok_or_else(|| missing("units"))?;
    if units.len() > MAX_UNIT_TYPES {
        return Err(processing(format!("units has {} unit types; at most {MAX_UNIT_TYPES}", units.len())));
    }
    let mut usage = Usage::default();
    let mut unknown = BTreeMap::new();
    for (unit, counts) in &units {
        if unit.len() > MAX_NAME {
            return Err(processing(format!("a unit name is longer than {MAX_NAME} bytes")));
        }
        let input = count(unit, "input", counts.input)?;
        let output = count(unit, "output", counts.output)?;
        let (left_in, left_out) = add_unit(&mut usage, unit, input, output);
        if left_in > 0 || left_out > 0 {
            let entry: &mut (u64, u64) = unknown.entry(unit.clone()).or_default();
            entry.0 = entry.0.saturating_add(left_in);
            entry.1 = entry.1.saturating_add(left_out);
        }
    }
    let event_time = match request.event_timestamp.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        None => now,
        Some(text) => timestamp(text).ok_or_else(|| {
            ApiError::bad_request(
                code::INVALID_EVENT_TIMESTAMP,
                format!("event_timestamp '{}' is not an ISO 8601 date and time", shown(text)),
            )
        })?,
    };
    if event_time > now + FUTURE_SKEW {
        return Err(ApiError::bad_request(
            code::INVALID_EVENT_TIMESTAMP,
            format!(
                "event_timestamp {} cannot be more than 5 minutes in the future (now {})",
                event_time.to_rfc3339(),
                now.to_rfc3339()
            ),
        ));
    }
    let provider_response_id = match request.provider_response_id.map(|id| id.trim().to_string()) {
        Some(id) if id.is_empty() => None,
        Some(id) if id.len() > MAX_NAME || id.chars().any(|c| c.is_control()) => {
            return Err(processing(format!(
                "provider_response_id must be at most {MAX_NAME} bytes without control characters"
            )));
        }
        id => id,
    };
    Ok(Ingest { category, resource: resource.trim().to_string(), usage, unknown, event_time, provider_response_id })
}

fn processing(message: String) -> ApiError {
    ApiError::bad_request(code::REQUEST_PROCESSING_ERROR, message)
}

/// A client's string in a message: bounded, so an error cannot echo a megabyte.
fn shown(text: &str) -> String {
    text.chars().take(64).collect()
}

fn count(unit: &str, side: &str, value: Option<i64>) -> Result<u64, ApiError> {
    let value = value.unwrap_or(0);
    if value < 0 {
        return Err(processing(format!(
            "units.{}.{side} is {value}: unit counts must be whole numbers of at least 0",
            shown(unit)
        )));
    }
    let value = value.unsigned_abs();
    if value > MAX_UNITS {
        return Err(processing(format!("units.{}.{side} is {value}: at most {MAX_UNITS} per event", shown(unit))));
    }
    Ok(value)
}

/// Adds one unit's counts to `usage`; returns the parts it has no token type for.
fn add_unit(usage: &mut Usage, unit: &str, input: u64, output: u64) -> (u64, u64) {
    let base = unit.strip_suffix("_large_context").unwrap_or(unit);
    let add = |field: &mut u64, n: u64| *field = field.saturating_add(n);
    match base {
        "text" => {
            add(&mut usage.input, input);
            add(&mut usage.output, output);
            (0, 0)
        }
        "text_cache_read" => {
            add(&mut usage.cached_input, input);
            (0, output)
        }
        "text_cache_write" => {
            add(&mut usage.cache_write, input);
            (0, output)
        }
        "text_cache_write_1h" => {
            add(&mut usage.cache_write_1h, input);
            (0, output)
        }
        "reasoning" => {
            add(&mut usage.reasoning, output);
            (input, 0)
        }
        "web_search_request" => {
            add(&mut usage.server_tools.web_search_requests, output);
            (input, 0)
        }
        _ => (input, output),
    }
}

/// An ISO 8601 date and time; one without an offset is UTC (Python's naive
/// `datetime.isoformat()`).
fn timestamp(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
}

/// The usage event's id: the same for every report of one provider response by
/// one Application in one category, so a repeat is recognised by the ledger's
/// exactly-once key and charged nothing; 128 bits of SHA-256, in the format of
/// the ledger's own ids. Without a provider response id nothing can be matched:
/// a random id.
pub fn event_id(namespace: &str, application: &str, category: &str, provider_response_id: Option<&str>) -> Arc<str> {
    let Some(response) = provider_response_id else { return crate::limits::ledger::event_id() };
    let mut hash = Sha256::new();
    for part in ["payi-ingest", namespace, application, category, response] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect::<String>().into()
}

/// The cost of an event split as Pay-i reports it: input (every input token type)
/// and output (the rest: output, reasoning, web searches). Exact; the total is
/// the same [`cost`] a proxied request has.
pub fn split_cost(usage: &Usage, price: &Price) -> (PicoUsd, PicoUsd) {
    let total = cost(usage, price);
    let inputs = Usage { output: 0, reasoning: 0, audio_output: 0, server_tools: Default::default(), ..*usage };
    let input = cost(&inputs, price);
    (input, PicoUsd(total.0.saturating_sub(input.0)))
}

/// A limit's state after a charge, in Pay-i's words: a block limit at or past its
/// maximum is `blocked` (the next proxied request is refused), an allow limit
/// past it `exceeded`.
pub fn limit_state(kind: LimitType, spent_nano: u64, max_nano: u64) -> &'static str {
    match kind {
        LimitType::Block if spent_nano >= max_nano => "blocked",
        LimitType::Allow if spent_nano > max_nano => "exceeded",
        _ => "ok",
    }
}

/// What the answer says about one event (everything but the ids and limit states
/// comes from the checked event and its attribution).
pub struct Outcome<'a> {
    pub request_id: &'a str,
    pub ingest: &'a Ingest,
    pub context: &'a RequestContext,
    /// Input and output cost; `None` when the resource is not in the price table.
    pub cost: Option<(PicoUsd, PicoUsd)>,
    /// (limit id, limit type, spend after this event, maximum), in nano-USD.
    pub limits: Vec<(Arc<str>, LimitType, u64, u64)>,
    pub duplicate: bool,
    pub warnings: Vec<String>,
}

/// Pay-i's `xproxy_result` for an ingested event. Costs are USD as JSON numbers
/// (Pay-i's type); the exact pico-USD amounts are what the ledger and metrics hold.
pub fn xproxy_result(o: &Outcome) -> Value {
    let usd = |p: PicoUsd| Value::from(p.usd_f64());
    let mut result = json!({
        "request_id": o.request_id,
        "duplicate_request": o.duplicate,
    });
    if let Some((input, output)) = o.cost {
        result["cost"] = json!({
            "currency": "usd",
            "input": {"base": usd(input)},
            "output": {"base": usd(output)},
            "total": {"base": usd(input + output)},
        });
    }
    if !o.limits.is_empty() {
        let states: serde_json::Map<String, Value> = o
            .limits
            .iter()
            .map(|(id, kind, spent, max)| (id.to_string(), json!({"state": limit_state(*kind, *spent, *max)})))
            .collect();
        result["limits"] = Value::Object(states);
        let blocked: Vec<&str> = o
            .limits
            .iter()
            .filter(|(_, kind, spent, max)| limit_state(*kind, *spent, *max) == "blocked")
            .map(|(id, ..)| &**id)
            .collect();
        result["blocked_limit_ids"] = json!(blocked);
    }
    if !o.ingest.unknown.is_empty() {
        let unknown: serde_json::Map<String, Value> = o
            .ingest
            .unknown
            .iter()
            .map(|(unit, (input, output))| (unit.clone(), json!({"input": input, "output": output})))
            .collect();
        result["unknown_units"] = Value::Object(unknown);
    }
    if let Some(use_case) = &o.context.use_case {
        result["use_case_name"] = json!(&*use_case.name);
    }
    if let Some(id) = &o.context.instance {
        result["use_case_id"] = json!(id);
    }
    if let Some(user) = &o.context.user {
        result["user_id"] = json!(user);
    }
    if !o.warnings.is_empty() {
        result["warnings"] = json!(o.warnings);
    }
    result
}

/// The warnings an event's answer carries about its money.
pub fn warnings(ingest: &Ingest, priced: bool) -> Vec<String> {
    let mut warnings = vec![];
    if !priced {
        warnings.push(format!(
            "resource '{}' is not in the price table's {} section: its units are counted, its cost is unknown",
            shown(&ingest.resource),
            ingest.category.price_section
        ));
    }
    if !ingest.unknown.is_empty() {
        let names: Vec<&str> = ingest.unknown.keys().map(String::as_str).collect();
        warnings.push(format!(
            "units {} have no price here: left out of the cost and counted as of unknown cost (unknown_units)",
            names.join(", ")
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::PicoPerToken;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-08T01:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn request(body: Value) -> IngestRequest {
        serde_json::from_value(body).unwrap()
    }

    fn refused(body: Value) -> ApiError {
        validate(request(body), now()).unwrap_err()
    }

    #[test]
    fn units_become_the_gateways_token_types() {
        let ingest = validate(
            request(json!({
                "category": "system.openai", "resource": "gpt-4o",
                "units": {"text": {"input": 10, "output": 5}, "text_cache_read": {"input": 4, "output": 0},
                          "reasoning": {"input": 0, "output": 3}},
                "provider_response_id": "chatcmpl-1",
            })),
            now(),
        )
        .unwrap();
        assert_eq!(
            ingest.usage,
            Usage { input: 10, cached_input: 4, output: 5, reasoning: 3, ..Usage::default() },
            "text_cache_read is cached input, reasoning a part of output"
        );
        assert!(ingest.unknown.is_empty());
        assert_eq!(ingest.event_time, now());
        let anthropic = validate(
            request(json!({
                "category": "system.anthropic", "resource": "claude-sonnet-4-5",
                "units": {"text_large_context": {"input": 7, "output": 2},
                          "text_cache_write_large_context": {"input": 3},
                          "text_cache_write_1h": {"input": 1},
                          "web_search_request": {"output": 2}},
            })),
            now(),
        )
        .unwrap();
        assert_eq!(anthropic.usage.input, 7);
        assert_eq!(anthropic.usage.cache_write, 3);
        assert_eq!(anthropic.usage.cache_write_1h, 1);
        assert_eq!(anthropic.usage.server_tools.web_search_requests, 2);
    }

    #[test]
    fn unknown_units_are_kept_apart_and_never_free() {
        let ingest = validate(
            request(json!({
                "category": "system.openai", "resource": "gpt-4o",
                "units": {"text": {"input": 10}, "vision": {"input": 100}, "text_cache_read": {"input": 1, "output": 2},
                          "reasoning": {"input": 6}},
            })),
            now(),
        )
        .unwrap();
        assert_eq!(ingest.usage, Usage { input: 10, cached_input: 1, ..Usage::default() });
        let unknown: Vec<_> = ingest.unknown.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(unknown, [("reasoning", (6, 0)), ("text_cache_read", (0, 2)), ("vision", (100, 0))]);
        assert_eq!(ingest.unknown_total(), 108);
        assert_eq!(warnings(&ingest, true).len(), 1);
    }

    #[test]
    fn bad_input_gets_pay_is_codes_with_what_to_fix() {
        let base = || json!({"category": "system.openai", "resource": "gpt-4o", "units": {"text": {"input": 1}}});
        let mut no_category = base();
        no_category.as_object_mut().unwrap().remove("category");
        assert_eq!(refused(no_category).code, code::REQUIRED_FIELD_MISSING);
        let mut unknown = base();
        unknown["category"] = json!("system.aws.bedrock");
        let error = refused(unknown);
        assert_eq!((error.code, error.status.as_u16()), (code::CATEGORY_NOT_FOUND, 400));
        assert!(error.message.contains("system.aws.bedrock") && error.message.contains("system.anthropic"));
        let mut negative = base();
        negative["units"] = json!({"text": {"input": -5}});
        let error = refused(negative);
        assert_eq!(error.code, code::REQUEST_PROCESSING_ERROR);
        assert!(error.message.contains("units.text.input is -5"), "{}", error.message);
        let mut huge = base();
        huge["units"] = json!({"text": {"output": MAX_UNITS + 1}});
        assert_eq!(refused(huge).code, code::REQUEST_PROCESSING_ERROR);
        let mut future = base();
        future["event_timestamp"] = json!("2026-12-08T01:05:01Z");
        let error = refused(future);
        assert_eq!(error.code, code::INVALID_EVENT_TIMESTAMP);
        assert!(error.message.contains("5 minutes"), "{}", error.message);
        let mut garbled = base();
        garbled["event_timestamp"] = json!("yesterday");
        assert_eq!(refused(garbled).code, code::INVALID_EVENT_TIMESTAMP);
        let mut no_units = base();
        no_units.as_object_mut().unwrap().remove("units");
        assert_eq!(refused(no_units).code, code::REQUIRED_FIELD_MISSING);
    }

    #[test]
    fn timestamps_within_the_skew_naive_or_past_are_taken() {
        for (text, minutes) in
            [("2026-12-08T01:05:00+00:00", 5), ("2026-12-08T01:04:00", 4), ("2026-12-08 00:00:00.000001", -59)]
        {
            let ingest = validate(
                request(json!({"category": "system.openai", "resource": "gpt-4o", "units": {},
                                "event_timestamp": text})),
                now(),
            )
            .unwrap();
            assert_eq!((ingest.event_time - now()).num_minutes(), minutes, "{text}");
        }
    }

    #[test]
    fn one_provider_response_is_one_event_per_application() {
        let a = event_id("ns", "chat", "system.openai", Some("chatcmpl-1"));
        assert_eq!(a, event_id("ns", "chat", "system.openai", Some("chatcmpl-1")));
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, event_id("ns", "other", "system.openai", Some("chatcmpl-1")));
        assert_ne!(a, event_id("ns", "chat", "system.anthropic", Some("chatcmpl-1")));
        // The separators keep names from running into each other.
        assert_ne!(event_id("a", "bc", "system.openai", Some("x")), event_id("ab", "c", "system.openai", Some("x")));
        assert_ne!(event_id("ns", "chat", "system.openai", None), event_id("ns", "chat", "system.openai", None));
    }

    #[test]
    fn cost_splits_exactly_into_input_and_output() {
        let price = Price {
            tokens: crate::gateway::pricing::TokenPrices {
                input: PicoPerToken(2_000_000),
                cached_input: Some(PicoPerToken(1_000_000)),
                output: PicoPerToken(8_000_000),
                ..Default::default()
            },
            ..Default::default()
        };
        let usage = Usage { input: 10, cached_input: 4, output: 5, reasoning: 3, ..Usage::default() };
        let (input, output) = split_cost(&usage, &price);
        assert_eq!(input, PicoUsd(10 * 2_000_000 + 4 * 1_000_000));
        assert_eq!(output, PicoUsd(8 * 8_000_000));
        assert_eq!(input + output, cost(&usage, &price));
    }

    #[test]
    fn limit_states_tell_what_the_next_request_meets() {
        assert_eq!(limit_state(LimitType::Block, 99, 100), "ok");
        assert_eq!(limit_state(LimitType::Block, 100, 100), "blocked");
        assert_eq!(limit_state(LimitType::Allow, 100, 100), "ok");
        assert_eq!(limit_state(LimitType::Allow, 101, 100), "exceeded");
    }
}
