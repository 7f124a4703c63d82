//! Limits as the gateway enforces them: compiled from the objects' specs into
//! rules with a stable id naming their level (`group/engineering/monthly`), an
//! exact maximum in nano-USD, and the ledger key of the current window. Pure.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::window::window;
use crate::crd::{Limit, LimitPeriod, LimitType};

/// The rules of one level.
pub type Rules = Arc<[LimitRule]>;
/// The rules of each use case of an Application, by name.
pub type UseCaseRules = Arc<[(Arc<str>, Rules)]>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LimitRule {
    /// `organization/<org>/<name>`, `group/<group>/<name>`,
    /// `application/<namespace>/<app>/<name>`, `use_case/<namespace>/<app>/<use case>/<name>`.
    pub id: Arc<str>,
    /// The maximum in nano-USD, the ledger's unit.
    pub max_nano: u64,
    /// The threshold as thousandths of `max` (0.8 is 800).
    pub threshold_permille: u32,
    pub period: LimitPeriod,
    pub kind: LimitType,
    /// Changes with `resetRequestedAt`: a new value starts a new counter, once.
    pub epoch: Arc<str>,
}

/// The level part of limit ids, one function per level, so the gateway, the
/// operator and the docs never disagree on them.
pub fn organization_level(name: &str) -> String {
    format!("organization/{name}")
}
pub fn group_level(name: &str) -> String {
    format!("group/{name}")
}
pub fn application_level(namespace: &str, name: &str) -> String {
    format!("application/{namespace}/{name}")
}
pub fn use_case_level(namespace: &str, application: &str, use_case: &str) -> String {
    format!("use_case/{namespace}/{application}/{use_case}")
}

/// The rules of one level's limits (those whose `max` does not parse, which the
/// schema makes impossible, are left out).
pub fn compile(level: &str, limits: &[Limit]) -> Arc<[LimitRule]> {
    limits
        .iter()
        .filter_map(|limit| {
            Some(LimitRule {
                id: format!("{level}/{}", limit.name).into(),
                max_nano: limit.max_nano_usd()?,
                threshold_permille: (limit.threshold() * 1000.0).round() as u32,
                period: limit.period,
                kind: limit.kind,
                epoch: epoch(limit.reset_requested_at.as_deref()).into(),
            })
        })
        .collect()
}

fn epoch(reset: Option<&str>) -> String {
    match reset {
        None | Some("") => "0".into(),
        Some(value) => Sha256::digest(value.as_bytes())[..6].iter().map(|b| format!("{b:02x}")).collect(),
    }
}

impl LimitRule {
    /// The ledger key of the window `now` is in, and how long it must live.
    pub fn key(&self, now: DateTime<Utc>) -> (String, Option<u64>) {
        let window = window(self.period, now);
        (format!("payi:nusd:limit:{}:{}:{}", self.id, self.epoch, window.name), window.ttl_seconds(now))
    }
}

/// The limits that cover one request: its use case's, its Application's, its
/// Group's and its Organization's (most specific first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Covering {
    pub rules: Vec<LimitRule>,
}

impl Covering {
    pub fn of<'a>(levels: impl IntoIterator<Item = &'a [LimitRule]>) -> Self {
        Self { rules: levels.into_iter().flat_map(|l| l.iter().cloned()).collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(name: &str, max: &str, kind: LimitType) -> Limit {
        Limit { name: name.into(), max: max.into(), period: LimitPeriod::Month, kind, ..Default::default() }
    }

    #[test]
    fn rules_name_their_level_and_keys_their_window_and_epoch() {
        let rules = compile("group/engineering", &[limit("monthly", "250.5", LimitType::Block)]);
        assert_eq!(&*rules[0].id, "group/engineering/monthly");
        assert_eq!(rules[0].max_nano, 250_500_000_000);
        assert_eq!(rules[0].threshold_permille, 800);
        let now = DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z").unwrap().with_timezone(&Utc);
        let (key, ttl) = rules[0].key(now);
        assert_eq!(key, "payi:nusd:limit:group/engineering/monthly:0:m2026-12");
        assert!(ttl.unwrap() > 24 * 86_400);
        let mut reset = limit("monthly", "250.5", LimitType::Block);
        reset.reset_requested_at = Some("2026-12-07T10:00:00Z".into());
        let (reset_key, _) = compile("group/engineering", &[reset])[0].key(now);
        assert_ne!(reset_key, key, "a reset starts a new counter");
    }
}
