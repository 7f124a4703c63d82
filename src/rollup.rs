//! Aggregated status of a parent, computed from its children alone.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::conditions::{self, APPLICATIONS_READY, Outcome, reason};
use crate::crd::Counts;

/// How many names a rollup message lists before it summarises the rest.
const NAMES_SHOWN: usize = 5;

/// Something with a Ready condition and a name worth showing to a person.
pub trait Child {
    fn display_name(&self) -> String;
    fn conditions(&self) -> &[Condition];
}

pub fn counts<C: Child>(children: &[Arc<C>]) -> Counts {
    let ready = children.iter().filter(|c| conditions::is_ready(c.conditions())).count();
    Counts { total: saturate(children.len()), ready: saturate(ready) }
}

/// `ApplicationsReady`: True when every Application is Ready (or there are none).
pub fn applications_ready<C: Child>(apps: &[Arc<C>]) -> Outcome {
    let not_ready: Vec<&Arc<C>> = apps.iter().filter(|a| !conditions::is_ready(a.conditions())).collect();
    let (status, reason, message) = if apps.is_empty() {
        (true, reason::NO_APPLICATIONS, "no Application references this object yet".to_string())
    } else if not_ready.is_empty() {
        (true, reason::ALL_READY, format!("all {} Applications are Ready", apps.len()))
    } else {
        let names = list_names(not_ready.iter().map(|a| describe_not_ready(a.as_ref())));
        let message = format!("{} of {} Applications are not Ready: {names}", not_ready.len(), apps.len());
        (false, reason::NOT_ALL_READY, message)
    };
    Outcome { type_: APPLICATIONS_READY, status, reason, message }
}

/// `ns/name (Reason)` for one child that is not Ready.
fn describe_not_ready<C: Child>(child: &C) -> String {
    match conditions::find(child.conditions(), conditions::READY) {
        Some(ready) => format!("{} ({})", child.display_name(), ready.reason),
        None => format!("{} (not yet reconciled)", child.display_name()),
    }
}

/// At most [`NAMES_SHOWN`] names, then how many more, so messages stay short at scale.
pub fn list_names(names: impl Iterator<Item = String>) -> String {
    let mut names: Vec<String> = names.collect();
    names.sort();
    let extra = names.len().saturating_sub(NAMES_SHOWN);
    names.truncate(NAMES_SHOWN);
    let mut out = names.join(", ");
    if extra > 0 {
        out.push_str(&format!(" and {extra} more"));
    }
    out
}

fn saturate(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    struct Fake(&'static str, Option<bool>);

    impl Child for Fake {
        fn display_name(&self) -> String {
            self.0.to_string()
        }
        fn conditions(&self) -> &[Condition] {
            // Leaked once per test value; keeps the fake trivial.
            let conds = match self.1 {
                None => vec![],
                Some(ready) => {
                    let o = if ready {
                        Outcome::ready(reason::KEY_ISSUED, "")
                    } else {
                        Outcome::not_ready(reason::GROUP_NOT_FOUND, "")
                    };
                    conditions::merge(&[], &[o], Some(1), &Time(Timestamp::UNIX_EPOCH))
                }
            };
            Box::leak(conds.into_boxed_slice())
        }
    }

    #[test]
    fn counts_total_and_ready() {
        let apps = vec![Arc::new(Fake("a", Some(true))), Arc::new(Fake("b", Some(false))), Arc::new(Fake("c", None))];
        assert_eq!(counts(&apps), Counts { total: 3, ready: 1 });
        assert_eq!(counts::<Fake>(&[]), Counts { total: 0, ready: 0 });
    }

    #[test]
    fn applications_ready_names_the_laggards() {
        let apps =
            vec![Arc::new(Fake("ns/a", Some(true))), Arc::new(Fake("ns/b", Some(false))), Arc::new(Fake("ns/c", None))];
        let o = applications_ready(&apps);
        assert!(!o.status);
        assert_eq!(o.reason, reason::NOT_ALL_READY);
        assert_eq!(o.message, "2 of 3 Applications are not Ready: ns/b (GroupNotFound), ns/c (not yet reconciled)");
        assert!(applications_ready::<Fake>(&[]).status);
        assert_eq!(applications_ready(&apps[..1]).reason, reason::ALL_READY);
    }

    #[test]
    fn long_lists_are_summarised() {
        let names = (0..12).map(|i| format!("app-{i:02}"));
        assert_eq!(list_names(names), "app-00, app-01, app-02, app-03, app-04 and 7 more");
    }
}
