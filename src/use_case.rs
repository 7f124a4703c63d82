//! Use cases as an Application declares them, and as the operator publishes them
//! in status for the verifier and the gateway. Pure: no client, no clock.
//!
//! The request side (which use case a request names, and whether it may) lives in
//! `verifier::use_case`; both read only what this module publishes.

use crate::crd::{Application, PublishedUseCase, UseCaseStatus};

/// The most use cases one Application may declare (the schema's `maxItems`).
pub const MAX_PER_APPLICATION: usize = 64;
/// The longest use case name (Pay-i's limit, the schema's `maxLength`).
pub const MAX_NAME_LEN: usize = 64;
/// The version of a use case that does not say.
pub const DEFAULT_VERSION: i64 = 1;

/// Whether `name` follows Pay-i's rules: 1 to 64 ASCII letters, digits, `.`, `-` or `_`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// What status says about the use cases: all declared ones, with defaults
/// applied, while the Application is `live` (Ready); none otherwise.
pub fn published(app: &Application, live: bool) -> UseCaseStatus {
    let declared = &app.spec.use_cases;
    let items: Vec<PublishedUseCase> = match live {
        true => declared
            .iter()
            .map(|u| PublishedUseCase { name: u.name.clone(), version: u.version.unwrap_or(DEFAULT_VERSION) })
            .collect(),
        false => vec![],
    };
    UseCaseStatus {
        declared: declared.len() as i64,
        live: items.len() as i64,
        policy: app.spec.use_case_policy.unwrap_or_default(),
        items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ApplicationSpec, UseCase, UseCasePolicy};

    fn app(use_cases: &[(&str, Option<i64>)], policy: Option<UseCasePolicy>) -> Application {
        let spec = ApplicationSpec {
            use_cases: use_cases
                .iter()
                .map(|(n, v)| UseCase { name: n.to_string(), version: *v, ..Default::default() })
                .collect(),
            use_case_policy: policy,
            ..Default::default()
        };
        Application::new("chat", spec)
    }

    #[test]
    fn names_follow_pay_i_rules() {
        for good in ["summarize_ticket", "a", "draft-reply.v2", "ABC_123", &"x".repeat(64)] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", "has space", "slash/", "ümlaut", "tab\t", &"x".repeat(65), "semi;colon"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_live_application_publishes_every_use_case_with_its_version_defaulted() {
        let status = published(&app(&[("summarize", None), ("draft", Some(3))], None), true);
        assert_eq!((status.declared, status.live, status.policy), (2, 2, UseCasePolicy::Declared));
        assert_eq!(
            status.items,
            [
                PublishedUseCase { name: "summarize".into(), version: 1 },
                PublishedUseCase { name: "draft".into(), version: 3 }
            ]
        );
    }

    #[test]
    fn an_application_that_is_not_ready_publishes_none_but_counts_them() {
        let status = published(&app(&[("summarize", None)], Some(UseCasePolicy::Open)), false);
        assert_eq!((status.declared, status.live, status.policy), (1, 0, UseCasePolicy::Open));
        assert!(status.items.is_empty());
    }
}
