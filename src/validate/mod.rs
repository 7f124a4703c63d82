//! `payi-operator validate`: checks payi.io manifests offline against the
//! CRDs this crate generates (structural schema and CEL rules, with the API
//! server's messages), and across objects (parents exist, namespace admitted,
//! Secret names unique). See docs/tools.md.

pub mod cel;
pub mod cli;
pub mod cross;
mod formats;
mod go_url;
pub mod input;
pub mod live;
pub mod output;
pub mod schema;

use std::collections::HashMap;

use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::crd::{API_GROUP, NamespacePolicy};
use cross::{ApplicationFacts, CrossRule, GroupFacts, Origin, World};
use input::{Document, ReadError};
use schema::{IssueKind, Schemas};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// What kind of check found a problem; the ids are stable (JSON and SARIF rule ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Check {
    /// The input could not be read or parsed.
    #[serde(rename = "unreadable")]
    Unreadable,
    /// A payi.io kind or version the CRDs do not serve.
    #[serde(rename = "kind")]
    Kind,
    #[serde(rename = "metadata")]
    Metadata,
    #[serde(rename = "schema")]
    Schema,
    #[serde(rename = "cel")]
    Cel,
    #[serde(rename = "unknown-field")]
    UnknownField,
    #[serde(rename = "reference")]
    Reference,
    #[serde(rename = "namespace-policy")]
    NamespacePolicy,
    #[serde(rename = "secret-name")]
    SecretName,
    #[serde(rename = "duplicate")]
    Duplicate,
}

impl Check {
    pub const ALL: [Check; 10] = [
        Check::Unreadable,
        Check::Kind,
        Check::Metadata,
        Check::Schema,
        Check::Cel,
        Check::UnknownField,
        Check::Reference,
        Check::NamespacePolicy,
        Check::SecretName,
        Check::Duplicate,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Check::Unreadable => "unreadable",
            Check::Kind => "kind",
            Check::Metadata => "metadata",
            Check::Schema => "schema",
            Check::Cel => "cel",
            Check::UnknownField => "unknown-field",
            Check::Reference => "reference",
            Check::NamespacePolicy => "namespace-policy",
            Check::SecretName => "secret-name",
            Check::Duplicate => "duplicate",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Check::Unreadable => "The input could not be read or parsed as YAML or JSON.",
            Check::Kind => "A payi.io kind or version that the CRDs do not serve.",
            Check::Metadata => "Object metadata the API server rejects (the name).",
            Check::Schema => "A rule of the CRD's OpenAPI schema: type, required, enum, length, pattern.",
            Check::Cel => "An x-kubernetes-validations CEL rule of the CRD.",
            Check::UnknownField => "A field the schema does not declare; the API server would drop it silently.",
            Check::Reference => "A Group or Organization that is referenced but does not exist.",
            Check::NamespacePolicy => "A Group whose namespacePolicy does not admit the Application's namespace.",
            Check::SecretName => "Two claims on one Secret name in a namespace.",
            Check::Duplicate => "The same object twice in the input; the later one wins.",
        }
    }

    /// Whether the API server itself rejects an object for it (the corpus test's "schema error").
    pub fn is_schema(self) -> bool {
        matches!(self, Check::Kind | Check::Metadata | Check::Schema | Check::Cel | Check::UnknownField)
    }
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub severity: Severity,
    pub check: Check,
    /// `Kind namespace/name` of the object, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub message: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Objects read, of any kind.
    pub objects: usize,
    /// payi.io objects checked.
    pub checked: usize,
    /// Whether some input could not be read or parsed (exit code 2).
    pub unreadable: bool,
}

impl Report {
    /// 0 clean (warnings allowed), 1 errors found, 2 unreadable input.
    pub fn exit_code(&self) -> u8 {
        if self.unreadable {
            2
        } else if self.findings.iter().any(|f| f.severity == Severity::Error) {
            1
        } else {
            0
        }
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == severity).count()
    }
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace of Applications without `metadata.namespace` (`--namespace`, else `default`).
    pub default_namespace: String,
}

/// What the live cluster holds, for `--cluster`.
#[derive(Debug, Default, Clone)]
pub struct Live {
    pub organizations: Vec<String>,
    /// (name, organization, namespacePolicy)
    pub groups: Vec<(String, String, Option<NamespacePolicy>)>,
    pub namespaces: Vec<(String, std::collections::BTreeMap<String, String>)>,
    pub applications: Vec<ApplicationFacts>,
}

/// Checks every document; `live` adds the cluster's objects to the cross-object rules.
pub fn validate(
    documents: &[Document],
    read_errors: Vec<ReadError>,
    schemas: &Schemas,
    live: Option<&Live>,
    settings: &Settings,
) -> Report {
    let mut report = Report { objects: documents.len(), unreadable: !read_errors.is_empty(), ..Report::default() };
    for error in read_errors {
        report.findings.push(Finding {
            file: error.file.to_string(),
            line: error.line,
            severity: Severity::Error,
            check: Check::Unreadable,
            object: None,
            message: error.message,
        });
    }
    let mut object_issues = check_objects(documents, schemas);
    let mut world = World { with_cluster: live.is_some(), ..World::default() };
    let mut seen: HashMap<(String, String, String), usize> = HashMap::new();
    for (index, document) in documents.iter().enumerate() {
        let object = &document.value;
        let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = at(object, &["metadata", "name"]).and_then(Value::as_str).unwrap_or("");
        let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
        let finding = |check: Check, severity: Severity, fields: &[String], object: String, message: String| Finding {
            file: document.file.to_string(),
            line: input::locate(document, fields),
            severity,
            check,
            object: Some(object),
            message,
        };
        if group != API_GROUP {
            gather_core(&mut world, index, object, api_version, kind, name, settings);
            continue;
        }
        report.checked += 1;
        let Some(kind_schema) = schemas.kind(kind) else {
            report.findings.push(finding(
                Check::Kind,
                Severity::Error,
                &[],
                format!("{kind} {name}"),
                format!("no matches for kind {kind:?} in group {API_GROUP:?}"),
            ));
            continue;
        };
        let namespace = if kind_schema.namespaced {
            at(object, &["metadata", "namespace"])
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(&settings.default_namespace)
                .to_string()
        } else {
            String::new()
        };
        let who = if namespace.is_empty() { format!("{kind} {name}") } else { format!("{kind} {namespace}/{name}") };
        if schemas.api_version(kind) != Some(api_version) {
            report.findings.push(finding(
                Check::Kind,
                Severity::Error,
                &["apiVersion".into()],
                who,
                format!("no matches for kind {kind:?} in version {api_version:?}"),
            ));
            continue;
        }
        if let Some(first) = seen.insert((kind.to_string(), namespace.clone(), name.to_string()), index) {
            let earlier = &documents[first];
            report.findings.push(finding(
                Check::Duplicate,
                Severity::Warning,
                &[],
                who.clone(),
                format!("{who} is also defined at {}:{}; the later one wins", earlier.file, earlier.line),
            ));
        }
        for issue in std::mem::take(&mut object_issues[index]) {
            let check = match issue.kind {
                IssueKind::Metadata => Check::Metadata,
                IssueKind::Schema => Check::Schema,
                IssueKind::Cel => Check::Cel,
                IssueKind::UnknownField => Check::UnknownField,
            };
            let severity =
                if issue.rejects || check == Check::UnknownField { Severity::Error } else { Severity::Warning };
            report.findings.push(finding(check, severity, &issue.fields, who.clone(), issue.message));
        }
        gather_payi(&mut world, index, object, kind, name, namespace);
    }
    if let Some(live) = live {
        add_live(&mut world, live);
    }
    for found in cross::check(&world) {
        let document = &documents[found.document];
        let fields: Vec<String> = found.fields.iter().map(|f| f.to_string()).collect();
        report.findings.push(Finding {
            file: document.file.to_string(),
            line: input::locate(document, &fields),
            severity: if found.certain { Severity::Error } else { Severity::Warning },
            check: match found.rule {
                CrossRule::Reference => Check::Reference,
                CrossRule::NamespacePolicy => Check::NamespacePolicy,
                CrossRule::SecretName => Check::SecretName,
            },
            object: None,
            message: found.message,
        });
    }
    report.findings.sort_by(|a, b| (&a.file, a.line, a.check).cmp(&(&b.file, b.line, b.check)));
    report
}

/// The schema and CEL issues of every payi.io object of a served kind and
/// version, indexed like `documents`; objects are independent, so all cores check.
fn check_objects(documents: &[Document], schemas: &Schemas) -> Vec<Vec<schema::Issue>> {
    map_all(documents, |document| {
        let text = |field: &str| document.value.get(field).and_then(Value::as_str).unwrap_or("");
        let (api_version, kind) = (text("apiVersion"), text("kind"));
        match schemas.api_version(kind) == Some(api_version) {
            true => schemas.check(kind, &document.value),
            false => vec![],
        }
    })
}

/// `f` over every item, in order: on all cores, unless threads that allocate
/// take turns (musl's allocator, which the arm64 image keeps, has one lock for
/// every call: on amd64, two threads took 4.1 s for 10,000 manifests and one thread
/// 1.2 to 1.5 s).
pub(crate) fn map_all<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    if crate::allocator::threads_allocate_in_parallel() {
        items.par_iter().map(f).collect()
    } else {
        items.iter().map(f).collect()
    }
}

/// The field at `path` (names from the root): `Value::pointer` without the
/// allocations it makes to unescape each segment.
fn at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(value, |value, field| value.get(field))
}

/// Namespaces and Secrets of the input, for the cross-object rules; other kinds are ignored.
fn gather_core(
    world: &mut World,
    index: usize,
    object: &Value,
    api_version: &str,
    kind: &str,
    name: &str,
    settings: &Settings,
) {
    match (api_version, kind) {
        ("v1", "Namespace") => {
            let labels = schema::string_map(at(object, &["metadata", "labels"]));
            world.namespaces.insert(name.to_string(), labels);
        }
        ("v1", "Secret") => {
            let namespace = at(object, &["metadata", "namespace"])
                .and_then(Value::as_str)
                .unwrap_or(&settings.default_namespace)
                .to_string();
            world.secrets.push((namespace, name.to_string(), index));
        }
        _ => {}
    }
}

fn gather_payi(world: &mut World, index: usize, object: &Value, kind: &str, name: &str, namespace: String) {
    let origin = Origin::Input(index);
    let text = |path: &[&str]| at(object, path).and_then(Value::as_str).unwrap_or("").to_string();
    match kind {
        "Organization" => {
            world.organizations.insert(name.to_string(), origin);
        }
        "Group" => {
            // A policy that does not parse has a schema error already; treat it as absent.
            let policy = at(object, &["spec", "namespacePolicy"])
                .filter(|p| !p.is_null())
                .and_then(|p| serde_json::from_value::<NamespacePolicy>(p.clone()).ok());
            let organization = text(&["spec", "organizationRef", "name"]);
            world.groups.insert(name.to_string(), GroupFacts { organization, policy, origin });
        }
        "Application" => {
            let secret = at(object, &["spec", "keySecret", "name"])
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("{name}-payi-key"));
            world.applications.push(ApplicationFacts {
                namespace,
                name: name.to_string(),
                group: text(&["spec", "groupRef", "name"]),
                secret,
                origin,
            });
        }
        _ => {}
    }
}

/// Adds the cluster's objects that the input does not redefine: the input is what will be applied.
fn add_live(world: &mut World, live: &Live) {
    for name in &live.organizations {
        world.organizations.entry(name.clone()).or_insert(Origin::Cluster);
    }
    for (name, organization, policy) in &live.groups {
        world.groups.entry(name.clone()).or_insert_with(|| GroupFacts {
            organization: organization.clone(),
            policy: policy.clone(),
            origin: Origin::Cluster,
        });
    }
    for (name, labels) in &live.namespaces {
        world.namespaces.entry(name.clone()).or_insert_with(|| labels.clone());
    }
    for app in &live.applications {
        let redefined = world.applications.iter().any(|a| a.namespace == app.namespace && a.name == app.name);
        if !redefined {
            world.applications.push(ApplicationFacts { origin: Origin::Cluster, ..app.clone() });
        }
    }
}

#[cfg(test)]
mod tests;
