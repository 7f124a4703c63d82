//! Access per level: who may read an Application's key, and who may only look.
//!
//! Owners and readers are set on Organizations, Groups and Applications and flow
//! down. For each Application with any, the operator keeps a Role and RoleBinding
//! in its namespace: owners may `get` exactly the key Secret (by resourceNames)
//! and get/patch/update that Application; readers may `get` the Application only.

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::crd::{AccessSubject, Application, Group, Organization, SubjectKind};

/// Everyone with access to one Application, after inheritance.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Grants {
    pub owners: BTreeSet<AccessSubject>,
    pub readers: BTreeSet<AccessSubject>,
}

/// The union of the Application's, its Group's and its Organization's subjects.
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

/// The Roles and RoleBindings `grants` call for; none for nobody.
pub fn desired(app: &Application, grants: &Grants, labels: &std::collections::BTreeMap<String, String>) -> Vec<Grant> {
    let name = app.name_any();
    let owner_rules = vec![
        rule("", "secrets", &["get"], &app.key_secret_name()),
        rule("payi.io", "applications", &["get", "patch", "update"], &name),
    ];
    let reader_rules = vec![rule("payi.io", "applications", &["get"], &name)];
    [("owner", &grants.owners, owner_rules), ("reader", &grants.readers, reader_rules)]
        .into_iter()
        .filter(|(_, subjects, _)| !subjects.is_empty())
        .map(|(level, subjects, rules)| {
            let meta = ObjectMeta {
                name: Some(role_name(&name, level)),
                namespace: app.namespace(),
                labels: Some(labels.clone()),
                owner_references: app.controller_owner_ref(&()).map(|r| vec![r]),
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
                    subjects: Some(subjects.iter().map(subject).collect()),
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

fn subject(s: &AccessSubject) -> Subject {
    let (kind, api_group) = match s.kind {
        SubjectKind::User => ("User", Some("rbac.authorization.k8s.io".to_string())),
        SubjectKind::Group => ("Group", Some("rbac.authorization.k8s.io".to_string())),
        SubjectKind::ServiceAccount => ("ServiceAccount", None),
    };
    Subject { kind: kind.into(), api_group, name: s.name.clone(), namespace: s.namespace.clone() }
}

/// Whether an existing Role already grants what `desired` does.
pub fn same_role(current: &Role, desired: &Role) -> bool {
    current.rules == desired.rules
}

/// Whether an existing RoleBinding already binds what `desired` does.
pub fn same_binding(current: &RoleBinding, desired: &RoleBinding) -> bool {
    current.subjects == desired.subjects && current.role_ref == desired.role_ref
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
        let grants = desired(&app, &grants, &Default::default());
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
    fn nobody_means_no_objects() {
        let app = Application::new("svc", ApplicationSpec::default());
        assert!(desired(&app, &Grants::default(), &Default::default()).is_empty());
    }
}
