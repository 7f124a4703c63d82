//! Condition types and reasons, and the one rule for updating a condition list.
//!
//! Conditions follow `metav1.Condition`. `lastTransitionTime` moves only when a
//! condition's status flips, as the Kubernetes API conventions ask, so an
//! unchanged outcome produces an identical status and therefore no write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
/// Rollup on Groups and Organizations: are all their Applications Ready?
pub const APPLICATIONS_READY: &str = "ApplicationsReady";
/// Present when the object has limits: False once one passed its threshold or maximum.
pub const LIMITS_OK: &str = "LimitsOk";

/// kstatus conventions (used by Flux, kpt, `kubectl wait`-style tools): present
/// and True only while the object is on its way (`Reconciling`) or stuck until a
/// person acts (`Stalled`); absent otherwise.
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

pub const TRUE: &str = "True";
pub const FALSE: &str = "False";

/// Reasons, one per outcome a person may need to act on.
pub mod reason {
    pub const KEY_ISSUED: &str = "KeyIssued";
    pub const RECONCILED: &str = "Reconciled";
    pub const GROUP_NOT_FOUND: &str = "GroupNotFound";
    pub const ORGANIZATION_NOT_FOUND: &str = "OrganizationNotFound";
    pub const NAMESPACE_NOT_ALLOWED: &str = "NamespaceNotAllowed";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    pub const SECRET_REJECTED: &str = "SecretRejected";
    /// A Role or RoleBinding of the name the operator needs exists and is not its own.
    pub const ACCESS_CONFLICT: &str = "AccessConflict";
    /// The API server refused a Role or RoleBinding (e.g. an invalid subject).
    pub const ACCESS_REJECTED: &str = "AccessRejected";
    /// The Group or Organization is being deleted: no new Application gets a key.
    pub const PARENT_DELETING: &str = "ParentDeleting";
    /// A parent does not yet carry the finalizer that keeps it while children exist.
    pub const WAITING_FOR_PARENT: &str = "WaitingForParent";
    pub const DELETION_BLOCKED: &str = "DeletionBlocked";
    pub const ALL_READY: &str = "AllReady";
    pub const NOT_ALL_READY: &str = "NotAllReady";
    pub const NO_APPLICATIONS: &str = "NoApplications";
    /// Event reasons for key lifecycle.
    pub const KEY_MINTED: &str = "KeyMinted";
    pub const KEY_REPAIRED: &str = "KeyRepaired";
    pub const KEY_ROTATED: &str = "KeyRotated";
    pub const PREVIOUS_KEY_REMOVED: &str = "PreviousKeyRemoved";
}

/// What a reconcile concluded about one condition type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Outcome {
    pub fn ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self { type_: READY, status: true, reason, message: message.into() }
    }

    pub fn not_ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self { type_: READY, status: false, reason, message: message.into() }
    }
}

/// Reasons for `Ready=False` that no amount of waiting fixes.
const NEEDS_A_PERSON: [&str; 6] = [
    reason::NAMESPACE_NOT_ALLOWED,
    reason::SECRET_CONFLICT,
    reason::SECRET_REJECTED,
    reason::ACCESS_CONFLICT,
    reason::ACCESS_REJECTED,
    reason::PARENT_DELETING,
];

/// `Ready` followed by its kstatus companion: `Stalled` when a person must act,
/// `Reconciling` while waiting for something that may still arrive.
pub fn with_kstatus(ready: &Outcome) -> Vec<Outcome> {
    let mut outcomes = vec![ready.clone()];
    if !ready.status {
        let type_ = if NEEDS_A_PERSON.contains(&ready.reason) { STALLED } else { RECONCILING };
        outcomes.push(Outcome { type_, status: true, reason: ready.reason, message: ready.message.clone() });
    }
    outcomes
}

/// The condition list after recording `outcomes`, keeping each condition's
/// `lastTransitionTime` unless its status changed. Conditions of other types
/// are dropped: this operator owns every condition on its kinds.
pub fn merge(previous: &[Condition], outcomes: &[Outcome], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    outcomes
        .iter()
        .map(|o| {
            let status = if o.status { TRUE } else { FALSE };
            let since = previous
                .iter()
                .find(|c| c.type_ == o.type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: o.type_.to_string(),
                status: status.to_string(),
                reason: o.reason.to_string(),
                message: o.message.clone(),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// Whether a status's `Ready` condition is True.
pub fn is_ready(conditions: &[Condition]) -> bool {
    find(conditions, READY).is_some_and(|c| c.status == TRUE)
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = merge(&[], &[Outcome::not_ready(reason::GROUP_NOT_FOUND, "no group")], Some(1), &at(10));
        assert_eq!(first[0].last_transition_time, at(10));

        // Same status, new reason and message: still the original transition time.
        let second = merge(&first, &[Outcome::not_ready(reason::ORGANIZATION_NOT_FOUND, "no org")], Some(2), &at(20));
        assert_eq!(second[0].last_transition_time, at(10));
        assert_eq!(second[0].reason, "OrganizationNotFound");
        assert_eq!(second[0].observed_generation, Some(2));

        let third = merge(&second, &[Outcome::ready(reason::KEY_ISSUED, "ok")], Some(2), &at(30));
        assert_eq!(third[0].last_transition_time, at(30));
        assert!(is_ready(&third));
        assert!(!is_ready(&second));
    }

    #[test]
    fn kstatus_companions_follow_the_ready_reason() {
        let types = |o: Outcome| with_kstatus(&o).iter().map(|c| c.type_).collect::<Vec<_>>();
        assert_eq!(types(Outcome::ready(reason::KEY_ISSUED, "")), vec![READY]);
        assert_eq!(types(Outcome::not_ready(reason::GROUP_NOT_FOUND, "")), vec![READY, RECONCILING]);
        assert_eq!(types(Outcome::not_ready(reason::DELETION_BLOCKED, "")), vec![READY, RECONCILING]);
        assert_eq!(types(Outcome::not_ready(reason::SECRET_CONFLICT, "")), vec![READY, STALLED]);
        assert_eq!(types(Outcome::not_ready(reason::NAMESPACE_NOT_ALLOWED, "")), vec![READY, STALLED]);
    }

    #[test]
    fn unchanged_outcome_gives_identical_conditions() {
        let outcomes = [Outcome::ready(reason::RECONCILED, "fine")];
        let first = merge(&[], &outcomes, Some(3), &at(1));
        assert_eq!(merge(&first, &outcomes, Some(3), &at(99)), first);
    }
}
