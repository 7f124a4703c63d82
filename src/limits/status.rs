//! What an object's status says about its limits, from the ledger's figures, and
//! which changes deserve an Event. Pure.

use chrono::{DateTime, Utc};

use super::rule::LimitRule;
use super::window::window;
use crate::conditions::Outcome;
use crate::crd::limits::usd_text;
use crate::crd::{LimitState, LimitStatusItem, LimitsStatus};
use crate::note::Note;

/// One limit of an object with what its counter holds now.
pub struct Reading<'a> {
    pub rule: &'a LimitRule,
    pub name: &'a str,
    pub use_case: Option<&'a str>,
    pub spent_nano: u64,
}

pub fn state_of(rule: &LimitRule, spent_nano: u64) -> LimitState {
    let threshold = u128::from(rule.max_nano) * u128::from(rule.threshold_permille) / 1000;
    if spent_nano >= rule.max_nano {
        LimitState::Exceeded
    } else if u128::from(spent_nano) >= threshold {
        LimitState::ThresholdReached
    } else {
        LimitState::Ok
    }
}

/// The status of an object's limits (`None` when it has none).
pub fn limits_status(readings: &[Reading<'_>], now: DateTime<Utc>) -> Option<LimitsStatus> {
    if readings.is_empty() {
        return None;
    }
    let items: Vec<LimitStatusItem> = readings
        .iter()
        .map(|r| LimitStatusItem {
            id: r.rule.id.to_string(),
            name: r.name.to_string(),
            use_case: r.use_case.map(str::to_string),
            kind: r.rule.kind,
            spend_usd: usd_text(r.spent_nano),
            max_usd: usd_text(r.rule.max_nano),
            state: state_of(r.rule, r.spent_nano),
            window: window_label(&window(r.rule.period, now).name),
        })
        .collect();
    let state = items.iter().map(|i| i.state).max().unwrap_or_default();
    // The one nearest its maximum, by fraction spent.
    let nearest = readings
        .iter()
        .max_by_key(|r| u128::from(r.spent_nano) * 1_000_000 / u128::from(r.rule.max_nano.max(1)))
        .map(|r| {
            let of = r.use_case.map(|u| format!("{u}/{}", r.name)).unwrap_or_else(|| r.name.to_string());
            format!("{}/{} USD ({of})", usd_text(r.spent_nano), usd_text(r.rule.max_nano))
        })
        .unwrap_or_default();
    Some(LimitsStatus { state, summary: nearest, items })
}

fn window_label(name: &str) -> String {
    name.strip_prefix(['d', 'w', 'm']).unwrap_or(name).to_string()
}

/// The `LimitsOk` condition for an object whose status has limits. Its message
/// names limits, never amounts, so it changes only when a state does (spend moves
/// every sweep; the condition is rewritten on transitions only).
pub fn limits_condition(limits: Option<&LimitsStatus>) -> Option<Outcome> {
    let limits = limits?;
    let ids = |state: LimitState| {
        limits.items.iter().filter(|i| i.state == state).map(|i| i.id.as_str()).collect::<Vec<_>>().join(", ")
    };
    let (status, reason, message) = match limits.state {
        LimitState::Ok => {
            (true, "WithinLimits", format!("all {} limits are under their thresholds", limits.items.len()))
        }
        LimitState::ThresholdReached => {
            (false, "ThresholdReached", format!("past the threshold: {}", ids(LimitState::ThresholdReached)))
        }
        LimitState::Exceeded => (false, "Exceeded", format!("at or over the maximum: {}", ids(LimitState::Exceeded))),
    };
    Some(Outcome { type_: crate::conditions::LIMITS_OK, status, reason, message })
}

/// An Event for each limit whose state changed (a limit seen for the first time
/// is reported only when it is not `ok`).
pub fn transitions(before: Option<&LimitsStatus>, after: Option<&LimitsStatus>) -> Vec<Note> {
    let Some(after) = after else { return vec![] };
    after
        .items
        .iter()
        .filter_map(|item| {
            let old = before.and_then(|b| b.items.iter().find(|i| i.id == item.id)).map(|i| i.state);
            let old = old.unwrap_or(LimitState::Ok);
            if old == item.state {
                return None;
            }
            let spend = format!("{} of {} USD in window {}", item.spend_usd, item.max_usd, item.window);
            Some(match item.state {
                LimitState::Exceeded => {
                    Note::warning("LimitExceeded", format!("limit {} reached its maximum: {spend}", item.id))
                }
                LimitState::ThresholdReached => {
                    Note::warning("LimitThresholdReached", format!("limit {} passed its threshold: {spend}", item.id))
                }
                LimitState::Ok => {
                    Note::normal("LimitOk", format!("limit {} is under its threshold again: {spend}", item.id))
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Limit, LimitPeriod, LimitType};
    use crate::limits::rule::compile;

    fn rules() -> std::sync::Arc<[LimitRule]> {
        let limit = |name: &str, max: &str| Limit {
            name: name.into(),
            max: max.into(),
            period: LimitPeriod::Month,
            kind: LimitType::Block,
            threshold: Some(0.75),
            ..Default::default()
        };
        compile("group/eng", &[limit("monthly", "100"), limit("daily", "10")])
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn status(spent: [u64; 2]) -> Option<LimitsStatus> {
        let rules = rules();
        let readings: Vec<Reading> = rules
            .iter()
            .zip(spent)
            .map(|(rule, spent_nano)| Reading {
                rule,
                name: rule.id.rsplit('/').next().unwrap(),
                use_case: None,
                spent_nano,
            })
            .collect();
        limits_status(&readings, now())
    }

    #[test]
    fn states_follow_threshold_and_maximum_and_the_summary_names_the_nearest() {
        let s = status([10_000_000_000, 8_000_000_000]).unwrap();
        assert_eq!(s.items[0].state, LimitState::Ok);
        assert_eq!(s.items[1].state, LimitState::ThresholdReached);
        assert_eq!(s.state, LimitState::ThresholdReached);
        assert_eq!(s.summary, "8/10 USD (daily)");
        assert_eq!(s.items[0].window, "2026-12");
        assert_eq!((s.items[0].spend_usd.as_str(), s.items[0].max_usd.as_str()), ("10", "100"));
        let s = status([100_000_000_000, 0]).unwrap();
        assert_eq!(s.state, LimitState::Exceeded);
        assert!(limits_status(&[], now()).is_none());
    }

    #[test]
    fn the_condition_follows_the_worst_state_and_not_the_amounts() {
        assert!(limits_condition(None).is_none());
        let ok = limits_condition(status([1, 0]).as_ref()).unwrap();
        assert_eq!((ok.type_, ok.status, ok.reason), ("LimitsOk", true, "WithinLimits"));
        let over = limits_condition(status([100_000_000_000, 0]).as_ref()).unwrap();
        assert_eq!((over.status, over.reason), (false, "Exceeded"));
        assert_eq!(over.message, "at or over the maximum: group/eng/monthly");
        assert_eq!(
            over,
            limits_condition(status([120_000_000_000, 0]).as_ref()).unwrap(),
            "more spend, same condition"
        );
    }

    #[test]
    fn an_event_fires_once_per_transition() {
        let ok = status([0, 0]);
        let risky = status([80_000_000_000, 0]);
        let over = status([100_000_000_000, 0]);
        assert!(transitions(None, ok.as_ref()).is_empty(), "a new limit that is fine says nothing");
        let notes = transitions(ok.as_ref(), risky.as_ref());
        assert_eq!(notes.iter().map(|n| n.reason).collect::<Vec<_>>(), ["LimitThresholdReached"]);
        assert!(notes[0].message.contains("group/eng/monthly"), "{}", notes[0].message);
        assert!(
            transitions(risky.as_ref(), status([85_000_000_000, 0]).as_ref()).is_empty(),
            "still at risk: no repeat"
        );
        assert_eq!(transitions(risky.as_ref(), over.as_ref())[0].reason, "LimitExceeded");
        assert_eq!(transitions(over.as_ref(), ok.as_ref())[0].reason, "LimitOk");
    }
}
