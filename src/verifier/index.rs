//! The verifier's index: which key digests are live, and whose they are.
//!
//! Fed by plain, synchronous apply/delete calls (see `watch.rs` for the watches
//! that make them); no API client and no clock of its own, so every rule below is
//! tested without a cluster. The rules:
//!
//! - An Application contributes keys only while it is live: Ready=True for its
//!   current generation and not being deleted. The caller decides that
//!   ([`ApplicationView::live`]). While the operator has not yet judged a new
//!   generation (Ready=True for an older one), the index keeps what it had.
//! - Its parents are checked at request time against the index's own Group and
//!   Organization entries, so deleting a parent refuses its keys as soon as the
//!   watch reports it, without waiting for the operator to mark anything.
//! - The current key is accepted always, a previous key until its `expiresAt`,
//!   compared with the clock passed to [`Index::verify`].
//! - A digest claimed by two Applications belongs to neither: it is refused and
//!   reported through [`Conflict`], never attributed.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::use_case::UseCases;
use crate::key;
use crate::limits::rule::{Covering, LimitRule, UseCaseRules};

/// A live Group: its Organization and its limits.
type GroupRecord = (Arc<str>, Arc<[LimitRule]>);

/// The SHA-256 of a key.
pub type Digest = [u8; 32];

/// `sha256:<64 lowercase hex digits>`, as the operator publishes it, to bytes.
pub fn parse_digest(text: &str) -> Option<Digest> {
    let hex = text.strip_prefix(key::DIGEST_PREFIX)?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The digest of a presented key.
pub fn digest_of(key: &str) -> Digest {
    Sha256::digest(key.as_bytes()).into()
}

/// `sha256:` and the first 16 hex digits: the same fingerprint status shows, safe to log.
pub fn fingerprint(digest: &Digest) -> String {
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}{hex}", key::DIGEST_PREFIX)
}

/// Namespace and name of an Application.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId {
    pub namespace: String,
    pub name: String,
}

/// Whose a key is: what the gateway passes on as `x-payi-*` headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribution {
    pub organization: Arc<str>,
    pub group: Arc<str>,
    pub application: Arc<str>,
    pub namespace: Arc<str>,
    /// What the Application's status publishes; requests are checked against it.
    pub use_cases: Arc<UseCases>,
    /// The limits of every level above the key (enforced by the gateway).
    pub limits: Limits,
}

/// The limits of an Application and of its Group and Organization.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub organization: Arc<[LimitRule]>,
    pub group: Arc<[LimitRule]>,
    pub application: Arc<[LimitRule]>,
    /// Per use case name.
    pub use_cases: UseCaseRules,
}

impl Limits {
    /// Every rule that covers a request of `use_case` (none: the Application's and above),
    /// most specific first.
    pub fn covering(&self, use_case: Option<&str>) -> Covering {
        let own = use_case.and_then(|u| self.use_cases.iter().find(|(n, _)| &**n == u)).map(|(_, r)| &r[..]);
        Covering::of(own.into_iter().chain([&self.application[..], &self.group[..], &self.organization[..]]))
    }
}

/// An Application's own limits and its use cases', as the index keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppLimits {
    pub application: Arc<[LimitRule]>,
    pub use_cases: UseCaseRules,
}

/// One key of an Application as its status publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyView {
    pub digest: Digest,
    /// Unix milliseconds after which the key is refused; `None` for the current key.
    pub expires_at_ms: Option<i64>,
}

/// What the index needs to know about one Application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplicationView {
    pub id: AppId,
    /// `spec.groupRef.name`.
    pub group: String,
    /// Ready=True for the current generation, and not being deleted.
    pub live: bool,
    /// Ready=True for an older generation: the operator has not judged the current
    /// spec yet. The index keeps what it has (a spec edit does not refuse the key for
    /// the moment until status catches up), and adds nothing it did not have.
    pub catching_up: bool,
    pub keys: Vec<KeyView>,
    /// The use cases its status publishes.
    pub use_cases: UseCases,
    /// Its limits and its use cases' (from the spec).
    pub limits: AppLimits,
}

/// A digest that two or more Applications claim; it is refused for all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The fingerprint of the digest, never the digest itself.
    pub fingerprint: String,
    pub applications: Vec<AppId>,
}

/// The outcome of checking a presented key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    Allowed,
    /// No key in the request.
    Missing,
    /// Not a key this operator mints: wrong prefix, length or checksum. Never looked up.
    Malformed,
    /// Well formed, but no live Application holds it.
    Unknown,
    /// A previous key past its `expiresAt`.
    Expired,
    /// Claimed by more than one Application.
    Conflict,
    /// Its Application's Group or Organization is gone.
    Orphaned,
    /// A live key, but the use case (or its version) is not one its Application declares.
    UseCaseRefused,
    /// A live key, but a malformed use case, version, run or user id header.
    BadHeader,
}

impl Decision {
    pub fn is_allowed(self) -> bool {
        self == Decision::Allowed
    }

    /// The `decision` label of the request metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Missing => "missing",
            Decision::Malformed => "malformed",
            Decision::Unknown => "unknown",
            Decision::Expired => "expired",
            Decision::Conflict => "conflict",
            Decision::Orphaned => "orphaned",
            Decision::UseCaseRefused => "use_case_refused",
            Decision::BadHeader => "bad_header",
        }
    }

    /// The short reason a refused client reads. It tells the caller what to fix
    /// without saying anything about other Applications.
    pub fn reason(self) -> &'static str {
        match self {
            Decision::Allowed => "ok",
            Decision::Missing => "no API key in the request",
            Decision::Malformed => "malformed API key",
            Decision::Unknown => "unknown API key",
            Decision::Expired => "expired API key",
            Decision::Conflict | Decision::Orphaned => "API key not attributable",
            Decision::UseCaseRefused => "use case not declared",
            Decision::BadHeader => "malformed request header",
        }
    }

    /// The HTTP status a refused client gets: 401 when the key is the problem, 403
    /// when the key is fine but the request is not (nginx's `auth_request` passes
    /// both on; any other status would become a 500).
    pub fn http_status(self) -> u16 {
        match self {
            Decision::Allowed => 200,
            Decision::UseCaseRefused | Decision::BadHeader => 403,
            _ => 401,
        }
    }
}

/// A decision and, when the index knows it, whose key it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub attribution: Option<Attribution>,
}

impl Verdict {
    fn refused(decision: Decision) -> Self {
        Self { decision, attribution: None }
    }
}

#[derive(Debug)]
struct AppRecord {
    namespace: Arc<str>,
    name: Arc<str>,
    group: Arc<str>,
    digests: Vec<Digest>,
    use_cases: Arc<UseCases>,
    limits: AppLimits,
}

impl AppRecord {
    fn id(&self) -> AppId {
        AppId { namespace: self.namespace.to_string(), name: self.name.to_string() }
    }
}

#[derive(Clone, Debug)]
struct Holder {
    app: Arc<AppRecord>,
    expires_at_ms: Option<i64>,
}

/// Who claims a digest. The single-holder case, nearly all of them, needs no allocation.
#[derive(Debug)]
enum Claim {
    One(Holder),
    Contested(Vec<Holder>),
}

#[derive(Debug, Default)]
pub struct Index {
    /// Live Organizations and their limits.
    organizations: HashMap<Arc<str>, Arc<[LimitRule]>>,
    /// Live Groups, the Organization each belongs to, and their limits.
    groups: HashMap<Arc<str>, GroupRecord>,
    /// Live Applications.
    applications: HashMap<AppId, Arc<AppRecord>>,
    digests: HashMap<Digest, Claim>,
    contested: usize,
}

impl Index {
    pub fn apply_organization(&mut self, name: &str) {
        self.apply_organization_with_limits(name, Arc::from([]));
    }

    pub fn apply_organization_with_limits(&mut self, name: &str, limits: Arc<[LimitRule]>) {
        match self.organizations.get_mut(name) {
            Some(existing) => *existing = limits,
            None => {
                self.organizations.insert(name.into(), limits);
            }
        }
    }

    pub fn delete_organization(&mut self, name: &str) {
        self.organizations.remove(name);
    }

    pub fn apply_group(&mut self, name: &str, organization: &str) {
        self.apply_group_with_limits(name, organization, Arc::from([]));
    }

    pub fn apply_group_with_limits(&mut self, name: &str, organization: &str, limits: Arc<[LimitRule]>) {
        let organization = match self.organizations.get_key_value(organization) {
            Some((interned, _)) => interned.clone(),
            None => organization.into(),
        };
        self.groups.insert(name.into(), (organization, limits));
    }

    pub fn delete_group(&mut self, name: &str) {
        self.groups.remove(name);
    }

    /// Records an Application's current state; returns the conflicts it newly creates.
    pub fn apply_application(&mut self, view: &ApplicationView) -> Vec<Conflict> {
        if view.catching_up {
            return vec![];
        }
        self.delete_application(&view.id);
        if !view.live {
            return vec![];
        }
        let record = Arc::new(AppRecord {
            namespace: view.id.namespace.as_str().into(),
            name: view.id.name.as_str().into(),
            group: self.intern_group(&view.group),
            digests: view.keys.iter().map(|k| k.digest).collect(),
            use_cases: Arc::new(view.use_cases.clone()),
            limits: view.limits.clone(),
        });
        let mut conflicts = vec![];
        for key in &view.keys {
            let holder = Holder { app: record.clone(), expires_at_ms: key.expires_at_ms };
            if let Some(conflict) = self.claim(key.digest, holder) {
                conflicts.push(conflict);
            }
        }
        self.applications.insert(view.id.clone(), record);
        conflicts
    }

    pub fn delete_application(&mut self, id: &AppId) {
        let Some(record) = self.applications.remove(id) else {
            return;
        };
        for digest in &record.digests {
            self.release(digest, &record);
        }
    }

    /// The verdict on a presented key (`None`: the request carried none) at `now_ms`.
    pub fn verify(&self, presented: Option<&str>, now_ms: i64) -> Verdict {
        let Some(presented) = presented.filter(|k| !k.is_empty()) else {
            return Verdict::refused(Decision::Missing);
        };
        if !key::is_well_formed(presented) {
            return Verdict::refused(Decision::Malformed);
        }
        self.lookup(&digest_of(presented), now_ms)
    }

    /// The verdict on a digest at `now_ms`.
    pub fn lookup(&self, digest: &Digest, now_ms: i64) -> Verdict {
        let holder = match self.digests.get(digest) {
            None => return Verdict::refused(Decision::Unknown),
            Some(Claim::Contested(_)) => return Verdict::refused(Decision::Conflict),
            Some(Claim::One(holder)) => holder,
        };
        let Some(attribution) = self.attribute(&holder.app) else {
            return Verdict::refused(Decision::Orphaned);
        };
        let decision = match holder.expires_at_ms {
            Some(expires) if now_ms >= expires => Decision::Expired,
            _ => Decision::Allowed,
        };
        Verdict { decision, attribution: Some(attribution) }
    }

    /// Digests two or more Applications claim right now.
    pub fn conflicts(&self) -> usize {
        self.contested
    }

    /// Digests held by live Applications.
    pub fn keys(&self) -> usize {
        self.digests.len()
    }

    pub fn organization_names(&self) -> Vec<String> {
        self.organizations.keys().map(|n| n.to_string()).collect()
    }

    pub fn group_names(&self) -> Vec<String> {
        self.groups.keys().map(|n| n.to_string()).collect()
    }

    pub fn application_ids(&self) -> Vec<AppId> {
        self.applications.keys().cloned().collect()
    }

    fn attribute(&self, app: &AppRecord) -> Option<Attribution> {
        let (organization, group_limits) = self.groups.get(&app.group)?;
        let (organization, organization_limits) = self.organizations.get_key_value(organization)?;
        Some(Attribution {
            organization: organization.clone(),
            group: app.group.clone(),
            application: app.name.clone(),
            namespace: app.namespace.clone(),
            use_cases: app.use_cases.clone(),
            limits: Limits {
                organization: organization_limits.clone(),
                group: group_limits.clone(),
                application: app.limits.application.clone(),
                use_cases: app.limits.use_cases.clone(),
            },
        })
    }

    /// One shared allocation per Group name, however many Applications use it.
    fn intern_group(&self, name: &str) -> Arc<str> {
        match self.groups.get_key_value(name) {
            Some((interned, _)) => interned.clone(),
            None => name.into(),
        }
    }

    fn claim(&mut self, digest: Digest, holder: Holder) -> Option<Conflict> {
        let Some(claim) = self.digests.get_mut(&digest) else {
            self.digests.insert(digest, Claim::One(holder));
            return None;
        };
        let was_contested = matches!(claim, Claim::Contested(_));
        let mut holders = match std::mem::replace(claim, Claim::Contested(vec![])) {
            Claim::One(existing) => vec![existing],
            Claim::Contested(existing) => existing,
        };
        // The same Application listing one key twice is no conflict.
        holders.retain(|h| !Arc::ptr_eq(&h.app, &holder.app));
        holders.push(holder);
        if holders.len() == 1 {
            *claim = Claim::One(holders.remove(0));
            return None;
        }
        let applications = holders.iter().map(|h| h.app.id()).collect();
        *claim = Claim::Contested(holders);
        if !was_contested {
            self.contested += 1;
        }
        Some(Conflict { fingerprint: fingerprint(&digest), applications })
    }

    fn release(&mut self, digest: &Digest, record: &Arc<AppRecord>) {
        let Some(claim) = self.digests.get_mut(digest) else {
            return;
        };
        match claim {
            Claim::One(holder) if Arc::ptr_eq(&holder.app, record) => {
                self.digests.remove(digest);
            }
            Claim::One(_) => {}
            Claim::Contested(holders) => {
                holders.retain(|h| !Arc::ptr_eq(&h.app, record));
                if holders.len() == 1 {
                    *claim = Claim::One(holders.remove(0));
                    self.contested -= 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::ApiKey;

    const NOW: i64 = 1_800_000_000_000;

    fn key() -> String {
        ApiKey::mint().unwrap().expose().to_string()
    }

    fn id(name: &str) -> AppId {
        AppId { namespace: "team".into(), name: name.into() }
    }

    fn app(name: &str, group: &str, keys: &[(&str, Option<i64>)]) -> ApplicationView {
        ApplicationView {
            id: id(name),
            group: group.into(),
            live: true,
            catching_up: false,
            keys: keys.iter().map(|(k, exp)| KeyView { digest: digest_of(k), expires_at_ms: *exp }).collect(),
            use_cases: UseCases::default(),
            limits: Default::default(),
        }
    }

    /// An index with Organization `acme` and its Group `eng`.
    fn hierarchy() -> Index {
        let mut index = Index::default();
        index.apply_organization("acme");
        index.apply_group("eng", "acme");
        index
    }

    fn decision(index: &Index, key: &str) -> Decision {
        index.verify(Some(key), NOW).decision
    }

    #[test]
    fn a_live_key_is_attributed_to_all_four_levels() {
        let mut index = hierarchy();
        let k = key();
        assert!(index.apply_application(&app("chat", "eng", &[(&k, None)])).is_empty());
        let verdict = index.verify(Some(&k), NOW);
        assert_eq!(verdict.decision, Decision::Allowed);
        let a = verdict.attribution.unwrap();
        assert_eq!((&*a.organization, &*a.group, &*a.application, &*a.namespace), ("acme", "eng", "chat", "team"));
    }

    #[test]
    fn missing_malformed_and_unknown_keys_are_refused() {
        let mut index = hierarchy();
        let k = key();
        index.apply_application(&app("chat", "eng", &[(&k, None)]));
        assert_eq!(index.verify(None, NOW).decision, Decision::Missing);
        assert_eq!(index.verify(Some(""), NOW).decision, Decision::Missing);
        assert_eq!(decision(&index, "sk_live_abc"), Decision::Malformed);
        assert_eq!(decision(&index, &k[..k.len() - 1]), Decision::Malformed);
        let mut corrupted = k.clone().into_bytes();
        let last = corrupted.len() - 1;
        corrupted[last] = if corrupted[last] == b'2' { b'3' } else { b'2' };
        assert_eq!(decision(&index, &String::from_utf8(corrupted).unwrap()), Decision::Malformed);
        assert_eq!(decision(&index, &key()), Decision::Unknown);
    }

    #[test]
    fn a_malformed_key_is_refused_even_if_its_digest_were_indexed() {
        // Proves the shape check comes first: the index never sees malformed input.
        let mut index = hierarchy();
        index.apply_application(&app("chat", "eng", &[("not-a-key", None)]));
        assert_eq!(decision(&index, "not-a-key"), Decision::Malformed);
        assert_eq!(index.lookup(&digest_of("not-a-key"), NOW).decision, Decision::Allowed);
    }

    #[test]
    fn a_previous_key_works_until_it_expires_by_the_clock_of_the_request() {
        let mut index = hierarchy();
        let (current, previous) = (key(), key());
        let expires = NOW + 5_000;
        index.apply_application(&app("chat", "eng", &[(&current, None), (&previous, Some(expires))]));
        assert_eq!(index.verify(Some(&previous), NOW).decision, Decision::Allowed);
        assert_eq!(index.verify(Some(&previous), expires - 1).decision, Decision::Allowed);
        let late = index.verify(Some(&previous), expires);
        assert_eq!(late.decision, Decision::Expired);
        assert_eq!(late.attribution.unwrap().application.as_ref(), "chat");
        assert_eq!(index.verify(Some(&current), expires + 86_400_000).decision, Decision::Allowed);
    }

    #[test]
    fn an_application_that_is_not_live_or_deleted_contributes_nothing() {
        let mut index = hierarchy();
        let k = key();
        let mut view = app("chat", "eng", &[(&k, None)]);
        index.apply_application(&view);
        view.live = false;
        index.apply_application(&view);
        assert_eq!(decision(&index, &k), Decision::Unknown);
        view.live = true;
        index.apply_application(&view);
        assert_eq!(decision(&index, &k), Decision::Allowed);
        index.delete_application(&view.id);
        assert_eq!(decision(&index, &k), Decision::Unknown);
        assert_eq!(index.keys(), 0);
    }

    #[test]
    fn an_application_the_operator_is_catching_up_with_keeps_what_it_had() {
        let mut index = hierarchy();
        let k = key();
        let mut view = app("chat", "eng", &[(&k, None)]);
        index.apply_application(&view);
        // A spec edit: Ready=True for the previous generation. The key keeps working,
        // attributed as the operator last judged it, not as the new spec says.
        let mut edited = app("chat", "other", &[]);
        (edited.live, edited.catching_up) = (false, true);
        index.apply_application(&edited);
        let verdict = index.verify(Some(&k), NOW);
        assert_eq!(verdict.decision, Decision::Allowed);
        assert_eq!(&*verdict.attribution.unwrap().group, "eng");
        // Nothing that was not there before is added.
        let fresh = key();
        let mut stale = app("new", "eng", &[(&fresh, None)]);
        (stale.live, stale.catching_up) = (false, true);
        index.apply_application(&stale);
        assert_eq!(decision(&index, &fresh), Decision::Unknown);
        // The operator's verdict on the new generation decides again.
        view.live = false;
        index.apply_application(&view);
        assert_eq!(decision(&index, &k), Decision::Unknown);
    }

    #[test]
    fn a_rotation_replaces_the_keys_of_an_application() {
        let mut index = hierarchy();
        let (old, new) = (key(), key());
        index.apply_application(&app("chat", "eng", &[(&old, None)]));
        index.apply_application(&app("chat", "eng", &[(&new, None)]));
        assert_eq!(decision(&index, &old), Decision::Unknown);
        assert_eq!(decision(&index, &new), Decision::Allowed);
        assert_eq!(index.keys(), 1);
    }

    #[test]
    fn a_missing_group_or_organization_orphans_the_key_at_once() {
        let mut index = hierarchy();
        let k = key();
        index.apply_application(&app("chat", "eng", &[(&k, None)]));
        index.delete_group("eng");
        assert_eq!(decision(&index, &k), Decision::Orphaned);
        index.apply_group("eng", "acme");
        assert_eq!(decision(&index, &k), Decision::Allowed);
        index.delete_organization("acme");
        assert_eq!(decision(&index, &k), Decision::Orphaned);
        // A Group moved to an Organization that does not exist is no better.
        index.apply_organization("acme");
        index.apply_group("eng", "other");
        assert_eq!(decision(&index, &k), Decision::Orphaned);
        // An Application whose Group never existed.
        let stray = key();
        index.apply_application(&app("stray", "nope", &[(&stray, None)]));
        assert_eq!(decision(&index, &stray), Decision::Orphaned);
    }

    #[test]
    fn a_digest_claimed_twice_is_refused_for_both_and_counted_once() {
        let mut index = hierarchy();
        let (shared, own) = (key(), key());
        assert!(index.apply_application(&app("a", "eng", &[(&shared, None)])).is_empty());
        let conflicts = index.apply_application(&app("b", "eng", &[(&shared, None), (&own, None)]));
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].applications, [id("a"), id("b")]);
        assert_eq!(conflicts[0].fingerprint, key::fingerprint(&shared));
        assert_eq!(index.conflicts(), 1);
        assert_eq!(decision(&index, &shared), Decision::Conflict);
        assert_eq!(index.verify(Some(&shared), NOW).attribution, None);
        assert_eq!(decision(&index, &own), Decision::Allowed);

        // Re-applying b keeps the conflict without counting it twice.
        index.apply_application(&app("b", "eng", &[(&shared, None), (&own, None)]));
        assert_eq!(index.conflicts(), 1);
        // A third claimant: still one contested digest.
        index.apply_application(&app("c", "eng", &[(&shared, None)]));
        assert_eq!(index.conflicts(), 1);
        index.delete_application(&id("c"));
        index.delete_application(&id("a"));
        assert_eq!(index.conflicts(), 0);
        assert_eq!(decision(&index, &shared), Decision::Allowed);
        assert_eq!(index.verify(Some(&shared), NOW).attribution.unwrap().application.as_ref(), "b");
    }

    #[test]
    fn one_application_listing_a_key_twice_is_no_conflict() {
        let mut index = hierarchy();
        let k = key();
        assert!(index.apply_application(&app("a", "eng", &[(&k, None), (&k, Some(NOW + 1))])).is_empty());
        assert_eq!(index.conflicts(), 0);
        index.delete_application(&id("a"));
        assert_eq!(index.keys(), 0);
    }

    #[test]
    fn digests_parse_only_in_the_published_format() {
        let k = key();
        let published = key::digest(&k);
        assert_eq!(parse_digest(&published), Some(digest_of(&k)));
        assert_eq!(fingerprint(&digest_of(&k)), key::fingerprint(&k));
        assert_eq!(parse_digest(&published.to_uppercase()), None);
        assert_eq!(parse_digest(&published[..published.len() - 1]), None);
        assert_eq!(parse_digest(published.trim_start_matches("sha256:")), None);
        assert_eq!(parse_digest(""), None);
    }

    #[test]
    fn a_key_carries_the_limits_of_every_level_most_specific_first() {
        use crate::crd::{Limit, LimitPeriod, LimitType};
        use crate::limits::rule::compile;
        let limit = |name: &str| Limit {
            name: name.into(),
            max: "10".into(),
            period: LimitPeriod::Month,
            kind: LimitType::Block,
            ..Default::default()
        };
        let mut index = Index::default();
        index.apply_organization_with_limits("acme", compile("organization/acme", &[limit("monthly")]));
        index.apply_group_with_limits("eng", "acme", compile("group/eng", &[limit("monthly")]));
        let k = key();
        let mut view = app("chat", "eng", &[(&k, None)]);
        view.limits = AppLimits {
            application: compile("application/team/chat", &[limit("weekly")]),
            use_cases: Arc::from([(Arc::from("draft"), compile("use_case/team/chat/draft", &[limit("daily")]))]),
        };
        index.apply_application(&view);
        let limits = index.verify(Some(&k), NOW).attribution.unwrap().limits;
        let ids = |c: Covering| c.rules.iter().map(|r| r.id.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ids(limits.covering(Some("draft"))),
            [
                "use_case/team/chat/draft/daily",
                "application/team/chat/weekly",
                "group/eng/monthly",
                "organization/acme/monthly"
            ]
        );
        assert_eq!(ids(limits.covering(Some("other"))).len(), 3);
        assert_eq!(ids(limits.covering(None)).len(), 3);
        // A Group's new limits reach keys already indexed.
        index.apply_group_with_limits("eng", "acme", compile("group/eng", &[]));
        let limits = index.verify(Some(&k), NOW).attribution.unwrap().limits;
        assert_eq!(ids(limits.covering(None)), ["application/team/chat/weekly", "organization/acme/monthly"]);
    }
}
