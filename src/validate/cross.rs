//! Rules across objects, which no single schema can express: an Application's
//! Group and the Group's Organization exist, the Group admits the Application's
//! namespace, no two Applications claim one Secret, and no Secret manifest
//! takes a key Secret's name. Pure: the caller gathers what exists (in the
//! input, and with `--cluster` in the live cluster) into a [`World`].

use std::collections::{BTreeMap, HashMap};

use crate::conditions::reason;
use crate::crd::NamespacePolicy;
use crate::namespace_policy::admits;

/// Where an object comes from: a document of the input (by index) or the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Input(usize),
    Cluster,
}

#[derive(Debug, Clone)]
pub struct GroupFacts {
    pub organization: String,
    pub policy: Option<NamespacePolicy>,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct ApplicationFacts {
    pub namespace: String,
    pub name: String,
    pub group: String,
    pub secret: String,
    pub origin: Origin,
}

/// Everything the cross-object rules look at.
#[derive(Debug, Default)]
pub struct World {
    pub organizations: HashMap<String, Origin>,
    pub groups: HashMap<String, GroupFacts>,
    /// Namespaces known, with their labels.
    pub namespaces: HashMap<String, BTreeMap<String, String>>,
    pub applications: Vec<ApplicationFacts>,
    /// Secret manifests of the input: (namespace, name) -> document.
    pub secrets: Vec<(String, String, usize)>,
    /// Whether the live cluster was consulted, for the wording of "not found".
    pub with_cluster: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CrossRule {
    /// A parent reference that resolves to nothing.
    Reference,
    /// A Group that does not admit the Application's namespace.
    NamespacePolicy,
    /// Two claims on one Secret name.
    SecretName,
}

/// One cross-object finding on one input document.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossFinding {
    pub document: usize,
    pub rule: CrossRule,
    /// Field names locating the line, from the object's root.
    pub fields: Vec<&'static str>,
    pub message: String,
    /// False when the rule could not be decided (a warning).
    pub certain: bool,
}

pub fn check(world: &World) -> Vec<CrossFinding> {
    let mut out = Vec::new();
    let nowhere = if world.with_cluster { "in the input or the cluster" } else { "in the input" };
    for (name, group) in &world.groups {
        // An empty reference is a schema error already.
        if let Origin::Input(document) = group.origin
            && !group.organization.is_empty()
            && !world.organizations.contains_key(&group.organization)
        {
            out.push(CrossFinding {
                document,
                rule: CrossRule::Reference,
                fields: vec!["spec", "organizationRef", "name"],
                message: format!(
                    "Group {name}: Organization {:?} not found {nowhere} (the operator reports {})",
                    group.organization,
                    reason::ORGANIZATION_NOT_FOUND
                ),
                certain: true,
            });
        }
    }
    for app in &world.applications {
        let Origin::Input(document) = app.origin else { continue };
        if app.group.is_empty() {
            continue;
        }
        let who = format!("Application {}/{}", app.namespace, app.name);
        let Some(group) = world.groups.get(&app.group) else {
            out.push(CrossFinding {
                document,
                rule: CrossRule::Reference,
                fields: vec!["spec", "groupRef", "name"],
                message: format!(
                    "{who}: Group {:?} not found {nowhere} (the operator reports {})",
                    app.group,
                    reason::GROUP_NOT_FOUND
                ),
                certain: true,
            });
            continue;
        };
        if group.origin == Origin::Cluster && !world.organizations.contains_key(&group.organization) {
            out.push(CrossFinding {
                document,
                rule: CrossRule::Reference,
                fields: vec!["spec", "groupRef", "name"],
                message: format!(
                    "{who}: Group {:?} belongs to Organization {:?}, which is not found {nowhere} (the operator reports {})",
                    app.group,
                    group.organization,
                    reason::ORGANIZATION_NOT_FOUND
                ),
                certain: true,
            });
        }
        let known = world.namespaces.get(&app.namespace);
        let labels = known.cloned().unwrap_or_default();
        if let Err(refusal) = admits(group.policy.as_ref(), &app.namespace, &labels) {
            // Without the Namespace's labels a selector cannot be decided.
            let undecided = known.is_none() && group.policy.as_ref().is_some_and(|p| p.selector.is_some());
            let message = if undecided {
                format!(
                    "{who}: namespace {:?} is not in the input{}, so Group {:?}'s namespacePolicy.selector cannot be checked",
                    app.namespace,
                    if world.with_cluster { " or the cluster" } else { "" },
                    app.group
                )
            } else {
                format!("{who}: {} (the operator reports {})", refusal.0, reason::NAMESPACE_NOT_ALLOWED)
            };
            out.push(CrossFinding {
                document,
                rule: CrossRule::NamespacePolicy,
                fields: vec!["spec", "groupRef", "name"],
                message,
                certain: !undecided,
            });
        }
    }
    out.extend(secret_claims(world));
    out.sort_by_key(|f| f.document);
    out
}

fn secret_claims(world: &World) -> Vec<CrossFinding> {
    let mut out = Vec::new();
    let mut claims: BTreeMap<(&str, &str), Vec<&ApplicationFacts>> = BTreeMap::new();
    for app in &world.applications {
        claims.entry((app.namespace.as_str(), app.secret.as_str())).or_default().push(app);
    }
    for ((namespace, secret), apps) in &claims {
        if apps.len() > 1 {
            for app in apps {
                let Origin::Input(document) = app.origin else { continue };
                let others: Vec<String> =
                    apps.iter().filter(|o| o.name != app.name).map(|o| format!("{:?}", o.name)).collect();
                if others.is_empty() {
                    continue;
                }
                out.push(CrossFinding {
                    document,
                    rule: CrossRule::SecretName,
                    fields: vec!["spec", "keySecret", "name"],
                    message: format!(
                        "Application {namespace}/{}: key Secret {secret:?} is also claimed by Application {} (the operator reports {})",
                        app.name,
                        others.join(", "),
                        reason::SECRET_CONFLICT
                    ),
                    certain: true,
                });
            }
        }
    }
    for (namespace, name, document) in &world.secrets {
        if let Some(apps) = claims.get(&(namespace.as_str(), name.as_str())) {
            let owner = &apps[0].name;
            out.push(CrossFinding {
                document: *document,
                rule: CrossRule::SecretName,
                fields: vec!["metadata", "name"],
                message: format!(
                    "Secret {namespace}/{name} has the name of Application {owner:?}'s key Secret; the operator \
                     would not take it over (it reports {}), or this manifest would overwrite the key",
                    reason::SECRET_CONFLICT
                ),
                certain: true,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        let mut w = World::default();
        w.organizations.insert("acme".into(), Origin::Input(0));
        w.groups.insert(
            "eng".into(),
            GroupFacts {
                organization: "acme".into(),
                policy: Some(NamespacePolicy { names: vec!["team-a".into()], selector: None }),
                origin: Origin::Input(1),
            },
        );
        w
    }

    fn app(name: &str, ns: &str, group: &str, secret: &str, document: usize) -> ApplicationFacts {
        ApplicationFacts {
            namespace: ns.into(),
            name: name.into(),
            group: group.into(),
            secret: secret.into(),
            origin: Origin::Input(document),
        }
    }

    #[test]
    fn a_complete_set_passes() {
        let mut w = world();
        w.applications.push(app("chat", "team-a", "eng", "chat-payi-key", 2));
        assert_eq!(check(&w), vec![]);
    }

    #[test]
    fn missing_parents_are_reported_where_they_are_referenced() {
        let mut w = world();
        w.organizations.clear();
        w.applications.push(app("chat", "team-a", "nope", "s", 2));
        let found = check(&w);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].document, found[0].rule), (1, CrossRule::Reference));
        assert!(found[1].message.contains("GroupNotFound"), "{}", found[1].message);
    }

    #[test]
    fn namespace_policy_by_name_is_certain_and_by_unknown_labels_is_not() {
        let mut w = world();
        w.applications.push(app("chat", "team-b", "eng", "s", 2));
        let found = check(&w);
        assert!(found[0].certain && found[0].message.contains("NamespaceNotAllowed"), "{found:?}");
        if let Some(group) = w.groups.get_mut("eng") {
            group.policy = Some(NamespacePolicy {
                names: vec![],
                selector: Some(crate::crd::NamespaceSelector {
                    match_labels: Some([("t".to_string(), "a".to_string())].into()),
                    match_expressions: None,
                }),
            });
        }
        let found = check(&w);
        assert!(!found[0].certain, "{found:?}");
        w.namespaces.insert("team-b".into(), [("t".to_string(), "a".to_string())].into());
        assert_eq!(check(&w), vec![]);
    }

    #[test]
    fn secret_claims_collide() {
        let mut w = world();
        w.applications.push(app("a", "team-a", "eng", "shared", 2));
        w.applications.push(app("b", "team-a", "eng", "shared", 3));
        w.secrets.push(("team-a".into(), "shared".into(), 4));
        let found = check(&w);
        assert_eq!(found.iter().map(|f| f.document).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert!(found.iter().all(|f| f.rule == CrossRule::SecretName));
    }
}
