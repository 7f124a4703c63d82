//! `GET /api/v1/limits[/{limit_id}]`: the limits declared in the manifests that
//! cover the key's Application (its Organization's, its Group's, its own and its
//! use cases'), read-only, in Pay-i's `Limit` shape with their spend from the
//! ledger. Changing one through the API is refused with a message naming the
//! manifest it is declared in (GitOps stays the source of truth); limits created
//! by id are not served yet. Pure but for the spend, read by the caller.

use serde_json::{Value, json};

use super::errors::{ApiError, code};
use crate::crd::LimitType;
use crate::limits::rule::LimitRule;
use crate::money::NANO_PER_USD;
use crate::verifier::index::Limits;

/// Items per page when the client asks for none, and the most it may ask for.
pub const PAGE: usize = 25;
pub const MAX_PAGE: usize = 100;

/// Every declared limit that covers some request of the Application, by id.
pub fn declared(limits: &Limits) -> Vec<&LimitRule> {
    let mut rules: Vec<&LimitRule> = limits
        .organization
        .iter()
        .chain(limits.group.iter())
        .chain(limits.application.iter())
        .chain(limits.use_cases.iter().flat_map(|(_, rules)| rules.iter()))
        .collect();
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    rules.dedup_by(|a, b| a.id == b.id);
    rules
}

/// The name part of a limit id (its last segment).
pub fn name(rule: &LimitRule) -> &str {
    rule.id.rsplit('/').next().unwrap_or(&rule.id)
}

/// Where a limit is declared, in words, from its id.
pub fn declared_in(rule: &LimitRule) -> String {
    let parts: Vec<&str> = rule.id.split('/').collect();
    match parts.as_slice() {
        ["organization", org, _] => format!("the Organization {org}'s spec.limits"),
        ["group", group, _] => format!("the Group {group}'s spec.limits"),
        ["application", ns, app, _] => format!("the Application {ns}/{app}'s spec.limits"),
        ["use_case", ns, app, use_case, _] => {
            format!("the Application {ns}/{app}'s spec.useCases[{use_case}].limits")
        }
        _ => "a manifest".to_string(),
    }
}

/// The refusal of a change to a declared limit.
pub fn read_only(rule: &LimitRule) -> ApiError {
    ApiError::new(
        hyper::StatusCode::CONFLICT,
        code::UPDATE_LIMIT_VALIDATION_FAILED,
        format!(
            "limit '{}' is declared in Git, in {}: change or reset it there (resetRequestedAt); the API only reads it",
            rule.id,
            declared_in(rule)
        ),
    )
}

pub fn not_found(id: &str) -> ApiError {
    let shown: String = id.chars().take(300).collect();
    ApiError::new(hyper::StatusCode::NOT_FOUND, code::LIMIT_NOT_FOUND, format!("limit id '{shown}' not found"))
}

/// Pay-i's `Limit` for a declared limit and its spend in the current window.
/// Creation and update times are not tracked here: the Unix epoch says so.
pub fn limit_json(rule: &LimitRule, spent_nano: u64) -> Value {
    let usd = |nano: u64| Value::from(nano as f64 / NANO_PER_USD as f64);
    json!({
        "limit_id": &*rule.id,
        "limit_name": name(rule),
        "limit_type": match rule.kind { LimitType::Block => "block", LimitType::Allow => "allow" },
        "max": usd(rule.max_nano),
        "threshold": f64::from(rule.threshold_permille) / 1000.0,
        "limit_creation_timestamp": "1970-01-01T00:00:00Z",
        "limit_update_timestamp": "1970-01-01T00:00:00Z",
        "totals": {"cost": {"total": {"base": usd(spent_nano)}}},
    })
}

/// The query of a list: `cursor` (an offset, as this gateway writes it), `limit`,
/// `limit_name`, `sort_ascending`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub offset: usize,
    pub size: usize,
    pub name: Option<String>,
    pub descending: bool,
}

pub fn list_query(query: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut list = ListQuery { size: PAGE, ..ListQuery::default() };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = super::decode(value);
        let bad =
            || ApiError::bad_request(code::REQUEST_PROCESSING_ERROR, format!("query parameter {key} is not valid"));
        match key {
            "cursor" => list.offset = value.parse().map_err(|_| bad())?,
            "limit" => list.size = value.parse::<usize>().map_err(|_| bad())?.clamp(1, MAX_PAGE),
            "limit_name" => list.name = Some(value).filter(|v| !v.is_empty()),
            "sort_ascending" => list.descending = value.eq_ignore_ascii_case("false"),
            _ => {}
        }
    }
    Ok(list)
}

/// One page of `rules` and the cursor of the next (none at the end).
pub fn page<'a>(rules: Vec<&'a LimitRule>, query: &ListQuery) -> (Vec<&'a LimitRule>, Option<String>) {
    let mut rules: Vec<&LimitRule> =
        rules.into_iter().filter(|r| query.name.as_deref().is_none_or(|n| name(r) == n)).collect();
    if query.descending {
        rules.reverse();
    }
    let end = query.offset.saturating_add(query.size).min(rules.len());
    let next = (end < rules.len()).then(|| end.to_string());
    (rules.get(query.offset.min(end)..end).unwrap_or_default().to_vec(), next)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::crd::LimitPeriod;

    fn rule(id: &str, kind: LimitType) -> LimitRule {
        LimitRule {
            id: id.into(),
            max_nano: 2_500_000_000,
            threshold_permille: 800,
            period: LimitPeriod::Month,
            kind,
            epoch: "0".into(),
        }
    }

    fn limits() -> Limits {
        Limits {
            organization: Arc::new([rule("organization/acme/monthly", LimitType::Allow)]),
            group: Arc::new([]),
            application: Arc::new([rule("application/ns/chat/budget", LimitType::Block)]),
            use_cases: Arc::new([(
                "summarize".into(),
                Arc::new([rule("use_case/ns/chat/summarize/cap", LimitType::Block)]) as Arc<[LimitRule]>,
            )]),
        }
    }

    #[test]
    fn every_level_that_covers_the_application_is_listed() {
        let limits = limits();
        let ids: Vec<&str> = declared(&limits).iter().map(|r| &*r.id).collect();
        assert_eq!(ids, ["application/ns/chat/budget", "organization/acme/monthly", "use_case/ns/chat/summarize/cap"]);
    }

    #[test]
    fn limits_read_as_pay_is_limit() {
        let value = limit_json(&rule("application/ns/chat/budget", LimitType::Block), 1_250_000_000);
        assert_eq!(value["limit_name"], "budget");
        assert_eq!(value["limit_type"], "block");
        assert_eq!(value["max"], 2.5);
        assert_eq!(value["threshold"], 0.8);
        assert_eq!(value["totals"]["cost"]["total"]["base"], 1.25);
    }

    #[test]
    fn a_change_names_the_manifest_to_change() {
        let error = read_only(&rule("use_case/ns/chat/summarize/cap", LimitType::Block));
        assert_eq!(error.status, 409);
        assert!(error.message.contains("Git") && error.message.contains("ns/chat's spec.useCases[summarize]"));
        assert!(read_only(&rule("group/eng/x", LimitType::Block)).message.contains("the Group eng's spec.limits"));
    }

    #[test]
    fn pages_follow_the_cursor() {
        let limits = limits();
        let query = list_query(Some("limit=2")).unwrap();
        let (first, next) = page(declared(&limits), &query);
        assert_eq!(first.len(), 2);
        assert_eq!(next.as_deref(), Some("2"));
        let query = list_query(Some("limit=2&cursor=2")).unwrap();
        let (last, next) = page(declared(&limits), &query);
        assert_eq!((last.len(), next), (1, None));
        let query = list_query(Some("cursor=99")).unwrap();
        assert!(page(declared(&limits), &query).0.is_empty());
        let query = list_query(Some("limit_name=budget&sort_ascending=false")).unwrap();
        assert_eq!(page(declared(&limits), &query).0.len(), 1);
        assert!(list_query(Some("cursor=x")).is_err());
    }
}
