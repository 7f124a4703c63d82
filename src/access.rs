//! Access per level: who may read an Application's key, and who may only look.
//!
//! Owners and readers are set on Organizations, Groups and Applications and flow
//! down. For each Application with any, the operator keeps a Role and RoleBinding
//! in its namespace: owners may `get` exactly the key Secret (by resourceNames)
//! and get/patch/update that Application; readers may `get` the Application only.
//!
//! Nothing is granted beyond what is true now: the Secret only while the
//! Application controls it (or is about to create it), and a parent's subjects
//! only while that parent is a valid parent of the Application. Existing access
//! objects are only ever changed when they are controlled by the Application.

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::crd::{AccessSubject, Application, Group, Organization, SubjectKind};
use crate::key_secret;

/// Everyone with access to one Application, after inheritance.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Grants {
    pub owners: BTreeSet<AccessSubject>,
    pub readers: BTreeSet<AccessSubject>,
}

/// The union of the Application's, its Group's and its Organization's subjects.
/// Pass the parents only while they are the Application's valid parents: a
/// parent's statement about access lasts only as long as the parent does.
pub fn effective(app: &Application, group: Option<&Group>, org: Option<&Organization>) -> Grants {
    let levels = [Some(&app.spec.access), group.map(|g| &g.spec.access), org.map(|o| &o.spec.access)];
    let mut grants = Grants::default();
    for access in levels.into_iter().flatten() {
        grants.owners.extend(access.owners.iter().cloned());
        grants.readers.extend(access.readers.iter().cloned());
    }
    grants
}

/// A Role and the RoleBinding that grants it, named alike.
pub struct Grant {
    pub role: Role,
    pub binding: RoleBinding,
}

pub fn role_name(app: &str, level: &str) -> String {
    format!("payi-{app}-{level}")
}

/// The Roles and RoleBindings `grants` call for; none for nobody. Owners get
/// the key Secret only when `secret_is_ours`: the Secret is controlled by this
/// Application or is about to be created by it.
pub fn desired(app: &Application, grants: &Grants, secret_is_ours: bool) -> Vec<Grant> {
    let name = app.name_any();
    let labels = key_secret::managed_labels(app);
    let mut owner_rules = vec![rule("payi.io", "applications", &["get", "patch", "update"], &name)];
    if secret_is_ours {
        owner_rules.insert(0, rule("", "secrets", &["get"], &app.key_secret_name()));
    }
    let reader_rules = vec![rule("payi.io", "applications", &["get"], &name)];
    [("owner", &grants.owners, owner_rules), ("reader", &grants.readers, reader_rules)]
        .into_iter()
        .filter(|(_, subjects, _)| subjects.iter().any(bindable))
        .map(|(level, subjects, rules)| {
            let meta = ObjectMeta {
                name: Some(role_name(&name, level)),
                namespace: app.namespace(),
                labels: Some(labels.clone()),
                owner_references: key_secret::controller_reference(app).map(|r| vec![r]),
                ..ObjectMeta::default()
            };
            let role_ref = RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: role_name(&name, level),
            };
            Grant {
                role: Role { metadata: meta.clone(), rules: Some(rules) },
                binding: RoleBinding {
                    metadata: meta,
                    role_ref,
                    subjects: Some(subjects.iter().filter(|s| bindable(s)).map(subject).collect()),
                },
            }
        })
        .collect()
}

fn rule(group: &str, resource: &str, verbs: &[&str], name: &str) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(vec![resource.into()]),
        resource_names: Some(vec![name.into()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

/// Whether a subject may be bound at all. The schema refuses the others, but an
/// object stored before that rule existed may still name them: they are skipped.
fn bindable(s: &AccessSubject) -> bool {
    !(matches!(s.kind, SubjectKind::User | SubjectKind::Group) && s.name.starts_with("system:"))
}

fn subject(s: &AccessSubject) -> Subject {
    let (kind, api_group) = match s.kind {
        SubjectKind::User => ("User", Some("rbac.authorization.k8s.io".to_string())),
        SubjectKind::Group => ("Group", Some("rbac.authorization.k8s.io".to_string())),
        SubjectKind::ServiceAccount => ("ServiceAccount", None),
    };
    Subject { kind: kind.into(), api_group, name: s.name.clone(), namespace: s.namespace.clone() }
}

/// One write that brings an access object to what is wanted.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<K> {
    /// Not there (as far as the cache knows): POST, which fails rather than overwrite.
    Create(K),
    /// Ours and different: PUT with the cached resourceVersion.
    Replace(K),
    /// Ours and no longer wanted: DELETE with a UID precondition.
    Delete { name: String, uid: String },
    /// Someone else's object has the name: never touched, reported instead.
    Conflict(String),
}

/// Access objects a Role or RoleBinding can be compared by.
pub trait AccessObject: Resource + Clone {
    fn same_grant(&self, other: &Self) -> bool;
    /// `self` with `desired`'s grant, labels and owner, keeping the rest.
    fn with_grant_of(&self, desired: &Self) -> Self;
}

impl AccessObject for Role {
    fn same_grant(&self, other: &Self) -> bool {
        self.rules == other.rules
    }
    fn with_grant_of(&self, desired: &Self) -> Self {
        let mut next = adopt_meta(self, desired);
        next.rules = desired.rules.clone();
        next
    }
}

impl AccessObject for RoleBinding {
    fn same_grant(&self, other: &Self) -> bool {
        self.subjects == other.subjects && self.role_ref == other.role_ref
    }
    fn with_grant_of(&self, desired: &Self) -> Self {
        let mut next = adopt_meta(self, desired);
        next.subjects = desired.subjects.clone();
        next
    }
}

fn adopt_meta<K: Resource + Clone>(current: &K, desired: &K) -> K {
    let mut next = current.clone();
    let meta = next.meta_mut();
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.extend(desired.meta().labels.clone().unwrap_or_default());
    meta.labels = Some(labels);
    meta.managed_fields = None;
    next
}

/// Pure: the writes that make the access objects of one kind `wanted`, given the
/// objects of that kind `seen` in the cache for this Application (by name).
pub fn changes<K: AccessObject>(app: &Application, wanted: &[K], seen: &[K]) -> Vec<Change<K>> {
    let mut out = vec![];
    for want in wanted {
        let name = want.meta().name.clone().unwrap_or_default();
        match seen.iter().find(|s| s.meta().name.as_deref() == Some(name.as_str())) {
            None => out.push(Change::Create(want.clone())),
            Some(have) if !key_secret::controlled_by(have, app) => out.push(Change::Conflict(name)),
            Some(have) if have.same_grant(want) && labelled(have) => {}
            Some(have) => out.push(Change::Replace(have.with_grant_of(want))),
        }
    }
    for have in seen.iter().filter(|s| key_secret::controlled_by(*s, app)) {
        let name = have.meta().name.clone().unwrap_or_default();
        if !wanted.iter().any(|w| w.meta().name.as_deref() == Some(name.as_str())) {
            out.push(Change::Delete { name, uid: have.meta().uid.clone().unwrap_or_default() });
        }
    }
    out
}

fn labelled<K: Resource>(obj: &K) -> bool {
    let labels = obj.meta().labels.as_ref();
    labels.and_then(|l| l.get(key_secret::MANAGED_BY_LABEL)).map(String::as_str) == Some(key_secret::MANAGER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Access, ApplicationSpec, GroupSpec, OrganizationSpec};

    fn who(kind: SubjectKind, name: &str) -> AccessSubject {
        let namespace = (kind == SubjectKind::ServiceAccount).then(|| "ci".to_string());
        AccessSubject { kind, name: name.into(), namespace }
    }

    fn access(owners: Vec<AccessSubject>, readers: Vec<AccessSubject>) -> Access {
        Access { owners, readers }
    }

    #[test]
    fn access_flows_down_and_is_deduplicated() {
        let alice = who(SubjectKind::User, "alice");
        let team = who(SubjectKind::Group, "team");
        let bot = who(SubjectKind::ServiceAccount, "deployer");
        let mut app = Application::new("svc", ApplicationSpec::default());
        app.spec.access = access(vec![bot.clone()], vec![]);
        let group = Group::new(
            "eng",
            GroupSpec { access: access(vec![alice.clone()], vec![team.clone()]), ..Default::default() },
        );
        let org = Organization::new(
            "acme",
            OrganizationSpec { access: access(vec![alice.clone()], vec![]), ..Default::default() },
        );
        let grants = effective(&app, Some(&group), Some(&org));
        assert_eq!(grants.owners, BTreeSet::from([alice, bot]));
        assert_eq!(grants.readers, BTreeSet::from([team]));
    }

    #[test]
    fn owners_get_exactly_their_secret_and_readers_no_secret() {
        let mut app = Application::new("svc", ApplicationSpec::default());
        app.metadata.namespace = Some("team-a".into());
        app.metadata.uid = Some("u".into());
        let grants = Grants {
            owners: BTreeSet::from([who(SubjectKind::User, "alice")]),
            readers: BTreeSet::from([who(SubjectKind::User, "bob")]),
        };
        let grants = desired(&app, &grants, true);
        assert_eq!(grants.len(), 2);
        let owner = &grants[0];
        assert_eq!(owner.role.metadata.name.as_deref(), Some("payi-svc-owner"));
        let secret_rule = &owner.role.rules.as_ref().unwrap()[0];
        assert_eq!(secret_rule.resources, Some(vec!["secrets".to_string()]));
        assert_eq!(secret_rule.resource_names, Some(vec!["svc-payi-key".to_string()]));
        assert_eq!(secret_rule.verbs, vec!["get".to_string()]);
        let reader = &grants[1];
        assert!(reader.role.rules.as_ref().unwrap().iter().all(|r| r.resources != Some(vec!["secrets".into()])));
        assert_eq!(reader.binding.subjects.as_ref().unwrap()[0].name, "bob");
    }

    #[test]
    fn system_identities_stored_before_the_schema_refused_them_are_never_bound() {
        let everyone = Grants {
            owners: BTreeSet::from([who(SubjectKind::Group, "system:authenticated"), who(SubjectKind::User, "alice")]),
            readers: BTreeSet::from([who(SubjectKind::User, "system:anonymous")]),
        };
        let grants = desired(&owned_app(), &everyone, true);
        assert_eq!(grants.len(), 1, "no reader binding for nobody bindable");
        let names: Vec<_> = grants[0].binding.subjects.iter().flatten().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["alice"]);
    }

    #[test]
    fn nobody_means_no_objects() {
        let app = Application::new("svc", ApplicationSpec::default());
        assert!(desired(&app, &Grants::default(), true).is_empty());
    }

    fn owned_app() -> Application {
        let mut app = Application::new("svc", ApplicationSpec::default());
        app.metadata.namespace = Some("team-a".into());
        app.metadata.uid = Some("u".into());
        app
    }

    fn alice_owns() -> Grants {
        Grants { owners: BTreeSet::from([who(SubjectKind::User, "alice")]), readers: BTreeSet::new() }
    }

    #[test]
    fn a_secret_that_is_not_ours_is_never_granted() {
        let grants = desired(&owned_app(), &alice_owns(), false);
        let rules = grants[0].role.rules.as_ref().unwrap();
        assert!(rules.iter().all(|r| r.resources != Some(vec!["secrets".into()])), "{rules:?}");
        assert_eq!(rules.len(), 1, "owners keep their Application rights");
    }

    #[test]
    fn changes_create_replace_delete_ours_and_never_touch_others() {
        let app = owned_app();
        let wanted: Vec<Role> = desired(&app, &alice_owns(), true).into_iter().map(|g| g.role).collect();
        assert!(matches!(changes(&app, &wanted, &[]).as_slice(), [Change::Create(_)]));
        // Converged: nothing to do.
        let mut live = wanted[0].clone();
        live.metadata.uid = Some("r1".into());
        live.metadata.resource_version = Some("5".into());
        assert!(changes(&app, &wanted, std::slice::from_ref(&live)).is_empty());
        // Drifted: replaced, keeping the resourceVersion as a precondition.
        let mut drifted = live.clone();
        drifted.rules.as_mut().unwrap().pop();
        let found = changes(&app, &wanted, &[drifted]);
        let [Change::Replace(next)] = found.as_slice() else { panic!("{found:?}") };
        assert_eq!(
            (next.rules.clone(), next.metadata.resource_version.as_deref()),
            (wanted[0].rules.clone(), Some("5"))
        );
        // Same name, someone else's (no controller reference to this UID): reported, not touched.
        let mut forged = live.clone();
        forged.metadata.owner_references = None;
        forged.rules = Some(vec![rule("", "secrets", &["list"], "x")]);
        assert_eq!(changes(&app, &wanted, &[forged]), vec![Change::Conflict("payi-svc-owner".into())]);
        // No longer wanted: deleted by UID.
        assert_eq!(
            changes(&app, &[], std::slice::from_ref(&live)),
            vec![Change::Delete { name: "payi-svc-owner".into(), uid: "r1".into() }]
        );
    }
}
