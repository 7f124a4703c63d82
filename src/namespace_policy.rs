//! Whether a Group admits Applications from a namespace.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};

use crate::crd::{NamespacePolicy, NamespaceSelector};

/// Why a namespace is not admitted, in words for a condition message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Admits `namespace` when the policy lists it by name or its labels match the
/// policy's selector. No policy admits nothing (see [`NamespacePolicy`]).
pub fn admits(
    policy: Option<&NamespacePolicy>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), Refusal> {
    let Some(policy) = policy else {
        return Err(Refusal("the Group has no namespacePolicy, so it admits no namespace".into()));
    };
    if policy.names.iter().any(|n| n == namespace) {
        return Ok(());
    }
    let Some(selector) = &policy.selector else {
        return Err(Refusal(format!("namespace {namespace:?} is not in the Group's namespacePolicy.names")));
    };
    // The schema refuses what Kubernetes would refuse; this stays for Groups
    // stored before it did, so that `NotIn` without values never admits everything.
    if let Some(problem) = values_problem(selector) {
        return Err(Refusal(format!("the Group's namespacePolicy.selector is invalid: {problem}")));
    }
    let parsed = Selector::try_from(LabelSelector::from(selector))
        .map_err(|e| Refusal(format!("the Group's namespacePolicy.selector is invalid: {e}")))?;
    if parsed.matches(labels) {
        Ok(())
    } else {
        Err(Refusal(format!(
            "namespace {namespace:?} is neither listed in the Group's namespacePolicy.names nor matched by its selector"
        )))
    }
}

/// The values rules of Kubernetes' label selectors: `In` and `NotIn` need
/// values, `Exists` and `DoesNotExist` take none.
fn values_problem(selector: &NamespaceSelector) -> Option<String> {
    selector.match_expressions.iter().flatten().find_map(|r| {
        let count = r.values.as_ref().map_or(0, Vec::len);
        match r.operator.as_str() {
            "In" | "NotIn" if count == 0 => Some(format!("operator {} on {:?} needs values", r.operator, r.key)),
            "Exists" | "DoesNotExist" if count > 0 => {
                Some(format!("operator {} on {:?} takes no values", r.operator, r.key))
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{NamespaceSelector, SelectorRequirement};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn by_labels(pairs: &[(&str, &str)]) -> NamespacePolicy {
        NamespacePolicy {
            names: vec![],
            selector: Some(NamespaceSelector { match_labels: Some(labels(pairs)), match_expressions: None }),
        }
    }

    #[test]
    fn no_policy_and_empty_policy_admit_nothing() {
        assert!(admits(None, "team-a", &labels(&[])).is_err());
        assert!(admits(Some(&NamespacePolicy::default()), "team-a", &labels(&[])).is_err());
    }

    #[test]
    fn names_admit_exactly_those_namespaces() {
        let policy = NamespacePolicy { names: vec!["team-a".into()], selector: None };
        assert_eq!(admits(Some(&policy), "team-a", &labels(&[])), Ok(()));
        assert!(admits(Some(&policy), "team-b", &labels(&[])).is_err());
    }

    #[test]
    fn empty_selector_admits_every_namespace() {
        let policy = NamespacePolicy { names: vec![], selector: Some(NamespaceSelector::default()) };
        assert_eq!(admits(Some(&policy), "anything", &labels(&[])), Ok(()));
    }

    #[test]
    fn selector_matches_labels_and_names_add_to_it() {
        let mut policy = by_labels(&[("payi.io/group", "engineering")]);
        assert_eq!(admits(Some(&policy), "a", &labels(&[("payi.io/group", "engineering")])), Ok(()));
        assert!(admits(Some(&policy), "b", &labels(&[("payi.io/group", "marketing")])).is_err());
        policy.names.push("b".into());
        assert_eq!(admits(Some(&policy), "b", &labels(&[])), Ok(()));
    }

    fn by_expression(operator: &str, values: Option<Vec<&str>>) -> NamespacePolicy {
        NamespacePolicy {
            names: vec![],
            selector: Some(NamespaceSelector {
                match_labels: None,
                match_expressions: Some(vec![SelectorRequirement {
                    key: "tier".into(),
                    operator: operator.into(),
                    values: values.map(|v| v.into_iter().map(String::from).collect()),
                }]),
            }),
        }
    }

    #[test]
    fn selectors_kubernetes_would_refuse_admit_nothing() {
        for (operator, values) in [
            ("NotIn", Some(vec![])),
            ("NotIn", None),
            ("In", Some(vec![])),
            ("Exists", Some(vec!["web"])),
            ("DoesNotExist", Some(vec!["web"])),
        ] {
            let policy = by_expression(operator, values.clone());
            let refusal = admits(Some(&policy), "a", &labels(&[])).unwrap_err();
            assert!(refusal.0.contains("invalid"), "{operator} {values:?}: {refusal:?}");
        }
        let fine = by_expression("NotIn", Some(vec!["legacy"]));
        assert_eq!(admits(Some(&fine), "a", &labels(&[("tier", "web")])), Ok(()));
        let fine = by_expression("Exists", Some(vec![]));
        assert_eq!(admits(Some(&fine), "a", &labels(&[("tier", "web")])), Ok(()));
    }

    #[test]
    fn an_invalid_selector_is_a_refusal_not_a_panic() {
        let policy = NamespacePolicy {
            names: vec![],
            selector: Some(NamespaceSelector {
                match_labels: None,
                match_expressions: Some(vec![SelectorRequirement {
                    key: "tier".into(),
                    operator: "Sometimes".into(),
                    values: None,
                }]),
            }),
        };
        let refusal = admits(Some(&policy), "a", &labels(&[])).unwrap_err();
        assert!(refusal.0.contains("invalid"), "{refusal:?}");
    }
}
