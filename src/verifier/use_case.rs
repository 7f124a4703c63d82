//! The request side of use cases: which use case, run and user a request names in
//! Pay-i's `xProxy-*` headers (or this project's `x-payi-*` ones), whether its
//! Application allows it, and what gateways pass on. Pure: headers come in as a
//! lookup function, the declared use cases from the index.
//!
//! Bounded by design: a metric label is a declared name or [`CATCH_ALL`], never a
//! string a client chose; user and run ids are passed on as headers only.

use std::sync::Arc;

use crate::crd::UseCasePolicy;
use crate::use_case::is_valid_name;

/// Pay-i's request headers, lowercase (HTTP/2 and Envoy's ext_authz use lowercase;
/// axum's header map matches any case).
pub const XPROXY_API_KEY: &str = "xproxy-api-key";
pub const XPROXY_USE_CASE_NAME: &str = "xproxy-usecase-name";
pub const XPROXY_USE_CASE_VERSION: &str = "xproxy-usecase-version";
pub const XPROXY_USE_CASE_ID: &str = "xproxy-usecase-id";
pub const XPROXY_USER_ID: &str = "xproxy-user-id";

/// What gateways pass on (and what a client may also send in, read after Pay-i's).
pub const USE_CASE_HEADER: &str = "x-payi-use-case";
pub const USE_CASE_VERSION_HEADER: &str = "x-payi-use-case-version";
pub const USE_CASE_ID_HEADER: &str = "x-payi-use-case-id";
pub const USER_HEADER: &str = "x-payi-user";

/// The metric label of a use case an `Open` Application did not declare. Not a
/// valid use case name, so it never collides with a declared one.
pub const CATCH_ALL: &str = "(undeclared)";
/// The longest user id or use case run id passed on.
pub const MAX_ID_LEN: usize = 256;

/// The use cases an Application's status publishes: sorted by name, for lookups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UseCases {
    pub policy: UseCasePolicy,
    declared: Box<[(Arc<str>, i64)]>,
}

impl UseCases {
    pub fn new(policy: UseCasePolicy, declared: impl IntoIterator<Item = (String, i64)>) -> Self {
        let mut declared: Vec<(Arc<str>, i64)> = declared.into_iter().map(|(n, v)| (n.into(), v)).collect();
        declared.sort();
        declared.dedup_by(|a, b| a.0 == b.0);
        Self { policy, declared: declared.into() }
    }

    fn get(&self, name: &str) -> Option<&(Arc<str>, i64)> {
        let at = self.declared.binary_search_by(|(n, _)| n.as_ref().cmp(name)).ok()?;
        self.declared.get(at)
    }

    pub fn len(&self) -> usize {
        self.declared.len()
    }

    pub fn is_empty(&self) -> bool {
        self.declared.is_empty()
    }
}

/// The use case a request is attributed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The name as the request gave it (for headers).
    pub name: Arc<str>,
    /// The metric label: the declared name, or [`CATCH_ALL`].
    pub label: Arc<str>,
    pub version: i64,
}

/// What a request says about itself beyond its key, once checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestContext {
    pub use_case: Option<Resolved>,
    /// One run of the use case (`xProxy-UseCase-ID`).
    pub instance: Option<String>,
    /// `xProxy-User-ID`.
    pub user: Option<String>,
}

impl RequestContext {
    /// The headers a gateway sets on the forwarded request, `None` for those it
    /// must remove (so a client cannot smuggle them past).
    pub fn headers(&self) -> [(&'static str, Option<String>); 4] {
        let use_case = self.use_case.as_ref();
        [
            (USE_CASE_HEADER, use_case.map(|u| u.name.to_string())),
            (USE_CASE_VERSION_HEADER, use_case.map(|u| u.version.to_string())),
            (USE_CASE_ID_HEADER, self.instance.clone()),
            (USER_HEADER, self.user.clone()),
        ]
    }

    /// The `use_case` metric label: empty when the request named none.
    pub fn label(&self) -> Option<&Arc<str>> {
        self.use_case.as_ref().map(|u| &u.label)
    }
}

/// Why a request with a good key is refused. The messages go to the client: they
/// name its own use case, never anything of another Application's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("use case \"{0}\" is not declared by this Application (spec.useCases)")]
    Undeclared(String),
    #[error("use case \"{name}\" has no version {asked}: its current version is {current}")]
    NoSuchVersion { name: String, asked: i64, current: i64 },
    #[error("malformed use case name: 1 to 64 letters, digits, '.', '-' or '_'")]
    BadName,
    #[error("malformed use case version: a whole number of at least 1")]
    BadVersion,
    #[error("a use case version was sent without a use case name")]
    VersionWithoutName,
    #[error("malformed {0}: 1 to 256 visible characters, no spaces")]
    BadId(&'static str),
}

/// Reads and checks the use case, run and user of a request against its
/// Application's declared use cases.
pub fn resolve<'a>(declared: &UseCases, header: impl Fn(&str) -> Option<&'a str>) -> Result<RequestContext, Refusal> {
    let first = |names: [&str; 2]| names.into_iter().find_map(|n| header(n).map(str::trim).filter(|v| !v.is_empty()));
    let name = first([XPROXY_USE_CASE_NAME, USE_CASE_HEADER]);
    let version = first([XPROXY_USE_CASE_VERSION, USE_CASE_VERSION_HEADER]);
    let instance = id(first([XPROXY_USE_CASE_ID, USE_CASE_ID_HEADER]), "xProxy-UseCase-ID")?;
    let user = id(first([XPROXY_USER_ID, USER_HEADER]), "xProxy-User-ID")?;
    let use_case = match (name, version) {
        (None, None) => None,
        (None, Some(_)) => return Err(Refusal::VersionWithoutName),
        (Some(name), version) => Some(use_case(declared, name, version)?),
    };
    Ok(RequestContext { use_case, instance, user })
}

fn use_case(declared: &UseCases, name: &str, version: Option<&str>) -> Result<Resolved, Refusal> {
    if !is_valid_name(name) {
        return Err(Refusal::BadName);
    }
    let asked = match version {
        None => None,
        Some(v) => Some(v.parse::<i64>().ok().filter(|v| *v >= 1).ok_or(Refusal::BadVersion)?),
    };
    match (declared.get(name), declared.policy) {
        (Some((label, current)), _) => match asked {
            Some(asked) if asked > *current => {
                Err(Refusal::NoSuchVersion { name: name.to_string(), asked, current: *current })
            }
            _ => Ok(Resolved { name: label.clone(), label: label.clone(), version: asked.unwrap_or(*current) }),
        },
        (None, UseCasePolicy::Open) => {
            Ok(Resolved { name: name.into(), label: CATCH_ALL.into(), version: asked.unwrap_or(1) })
        }
        (None, UseCasePolicy::Declared) => Err(Refusal::Undeclared(name.to_string())),
    }
}

/// A user or run id: passed on only when it is 1 to 256 visible ASCII characters.
fn id(value: Option<&str>, what: &'static str) -> Result<Option<String>, Refusal> {
    match value {
        None => Ok(None),
        Some(v) if v.len() <= MAX_ID_LEN && v.bytes().all(|b| b.is_ascii_graphic()) => Ok(Some(v.to_string())),
        Some(_) => Err(Refusal::BadId(what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(policy: UseCasePolicy) -> UseCases {
        UseCases::new(policy, [("summarize".to_string(), 2), ("draft".to_string(), 1)])
    }

    fn from<'a>(headers: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    fn resolved(headers: &[(&str, &str)], policy: UseCasePolicy) -> Result<RequestContext, Refusal> {
        resolve(&declared(policy), from(headers))
    }

    #[test]
    fn no_use_case_is_attributed_to_the_application_alone() {
        let context = resolved(&[], UseCasePolicy::Declared).unwrap();
        assert_eq!(context, RequestContext::default());
        assert_eq!(context.label(), None);
        assert!(context.headers().iter().all(|(_, v)| v.is_none()));
    }

    #[test]
    fn a_declared_use_case_gets_its_current_version_or_an_earlier_one_asked_for() {
        let context = resolved(&[(XPROXY_USE_CASE_NAME, "summarize")], UseCasePolicy::Declared).unwrap();
        let use_case = context.use_case.clone().unwrap();
        assert_eq!((&*use_case.name, &*use_case.label, use_case.version), ("summarize", "summarize", 2));
        assert_eq!(context.headers()[0], (USE_CASE_HEADER, Some("summarize".into())));
        assert_eq!(context.headers()[1], (USE_CASE_VERSION_HEADER, Some("2".into())));

        let older = [(XPROXY_USE_CASE_NAME, "summarize"), (XPROXY_USE_CASE_VERSION, "1")];
        assert_eq!(resolved(&older, UseCasePolicy::Declared).unwrap().use_case.unwrap().version, 1);
        let newer = [(XPROXY_USE_CASE_NAME, "summarize"), (XPROXY_USE_CASE_VERSION, "3")];
        let refusal = resolved(&newer, UseCasePolicy::Declared).unwrap_err();
        assert_eq!(refusal.to_string(), "use case \"summarize\" has no version 3: its current version is 2");
    }

    #[test]
    fn pay_i_headers_come_before_the_projects_own() {
        let both = [(XPROXY_USE_CASE_NAME, "draft"), (USE_CASE_HEADER, "summarize")];
        assert_eq!(&*resolved(&both, UseCasePolicy::Declared).unwrap().use_case.unwrap().name, "draft");
        let own = [(USE_CASE_HEADER, "summarize"), (USE_CASE_VERSION_HEADER, "1")];
        assert_eq!(resolved(&own, UseCasePolicy::Declared).unwrap().use_case.unwrap().version, 1);
    }

    #[test]
    fn an_undeclared_use_case_is_refused_by_name_unless_the_policy_is_open() {
        let headers = [(XPROXY_USE_CASE_NAME, "translate")];
        let refusal = resolved(&headers, UseCasePolicy::Declared).unwrap_err();
        assert_eq!(refusal, Refusal::Undeclared("translate".into()));
        assert!(refusal.to_string().contains("\"translate\" is not declared"));
        // Case-sensitive, like Pay-i's.
        let upper = [(XPROXY_USE_CASE_NAME, "Summarize")];
        assert_eq!(resolved(&upper, UseCasePolicy::Declared).unwrap_err(), Refusal::Undeclared("Summarize".into()));

        let open = resolved(&headers, UseCasePolicy::Open).unwrap().use_case.unwrap();
        assert_eq!((&*open.name, &*open.label, open.version), ("translate", CATCH_ALL, 1));
        assert!(!is_valid_name(CATCH_ALL), "the catch-all must never equal a declared name");
        // A declared one keeps its own label under the open policy too.
        let own = [(XPROXY_USE_CASE_NAME, "draft")];
        assert_eq!(&*resolved(&own, UseCasePolicy::Open).unwrap().use_case.unwrap().label, "draft");
    }

    #[test]
    fn malformed_names_versions_and_ids_are_refused_without_echoing_them() {
        let cases: [(&[(&str, &str)], Refusal); 7] = [
            (&[(XPROXY_USE_CASE_NAME, "has space")], Refusal::BadName),
            (&[(XPROXY_USE_CASE_NAME, &"x".repeat(65))], Refusal::BadName),
            (&[(XPROXY_USE_CASE_NAME, "draft"), (XPROXY_USE_CASE_VERSION, "0")], Refusal::BadVersion),
            (&[(XPROXY_USE_CASE_NAME, "draft"), (XPROXY_USE_CASE_VERSION, "v1")], Refusal::BadVersion),
            (&[(XPROXY_USE_CASE_VERSION, "1")], Refusal::VersionWithoutName),
            (&[(XPROXY_USER_ID, "alice smith")], Refusal::BadId("xProxy-User-ID")),
            (&[(XPROXY_USE_CASE_ID, "run\u{7f}1")], Refusal::BadId("xProxy-UseCase-ID")),
        ];
        for (headers, refusal) in cases {
            assert_eq!(resolved(headers, UseCasePolicy::Open).unwrap_err(), refusal, "{headers:?}");
        }
        let long = "u".repeat(MAX_ID_LEN + 1);
        assert!(resolved(&[(XPROXY_USER_ID, &long)], UseCasePolicy::Open).is_err());
        assert!(!Refusal::BadName.to_string().contains("has space"));
    }

    #[test]
    fn user_and_run_ids_are_passed_on_as_headers() {
        let headers = [(XPROXY_USER_ID, "alice@example.com"), (XPROXY_USE_CASE_ID, "run-42")];
        let context = resolved(&headers, UseCasePolicy::Declared).unwrap();
        assert_eq!(context.headers()[2], (USE_CASE_ID_HEADER, Some("run-42".into())));
        assert_eq!(context.headers()[3], (USER_HEADER, Some("alice@example.com".into())));
        assert_eq!(context.label(), None, "ids never become labels");
    }
}
