//! Checks one object against its CRD's structural schema and CEL rules the way
//! the API server does on create, with the API server's messages.
//!
//! The order follows `customResourceStrategy.Validate`: object metadata and the
//! OpenAPI schema first; the CEL rules only when none of those errors is of a
//! blocking kind (required, type, enum, too long, too many), as the server skips
//! them then too. `status` is not checked: the server drops it on create, as
//! the status subresource is enabled. Unknown fields, which the server prunes
//! silently, are reported separately (see [`IssueKind::UnknownField`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::{Context, Value as CelValue};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool, ValidationRule,
};
use serde_json::Value;

use super::cel::{Cel, escape_property};

/// What produced an issue; tells the corpus test a schema verdict from a cross-object one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IssueKind {
    /// Object metadata (name) as the API server validates it.
    Metadata,
    /// A structural schema rule: type, required, enum, lengths, pattern.
    Schema,
    /// An `x-kubernetes-validations` CEL rule.
    Cel,
    /// A field the schema does not declare: the server drops it silently.
    UnknownField,
}

/// One problem found in one object, `path` in the API server's notation.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub kind: IssueKind,
    /// Field names from the root, for locating the line; indices dropped.
    pub fields: Vec<String>,
    pub message: String,
    /// Whether the API server would reject the object for it.
    pub rejects: bool,
}

/// One CRD's schema for the served version, and its scope.
pub struct KindSchema {
    pub schema: JSONSchemaProps,
    pub namespaced: bool,
}

/// The schemas of the payi.io kinds and their compiled rules.
pub struct Schemas {
    kinds: HashMap<String, KindSchema>,
    api_versions: HashMap<String, String>,
    cel: Cel,
}

impl Schemas {
    /// From the CRDs this crate generates, so the validator and the cluster can never disagree.
    pub fn from_crds(crds: &[CustomResourceDefinition]) -> Self {
        let mut kinds = HashMap::new();
        let mut api_versions = HashMap::new();
        let mut cel = Cel::new();
        for crd in crds {
            let Some(version) = crd.spec.versions.iter().find(|v| v.storage).or(crd.spec.versions.first()) else {
                continue;
            };
            let Some(schema) = version.schema.as_ref().and_then(|s| s.open_api_v3_schema.clone()) else {
                continue;
            };
            prepare_rules(&schema, &mut cel);
            let kind = crd.spec.names.kind.clone();
            api_versions.insert(kind.clone(), format!("{}/{}", crd.spec.group, version.name));
            kinds.insert(kind, KindSchema { schema, namespaced: crd.spec.scope == "Namespaced" });
        }
        Self { kinds, api_versions, cel }
    }

    pub fn kind(&self, kind: &str) -> Option<&KindSchema> {
        self.kinds.get(kind)
    }

    /// `payi.io/v1alpha1` for a payi kind.
    pub fn api_version(&self, kind: &str) -> Option<&str> {
        self.api_versions.get(kind).map(String::as_str)
    }

    /// Every issue of `object`, a payi.io object of `kind`.
    pub fn check(&self, kind: &str, object: &Value) -> Vec<Issue> {
        let Some(kind_schema) = self.kinds.get(kind) else {
            return vec![];
        };
        let mut issues = check_metadata(object);
        let name_missing = issues.iter().any(|i| i.message.contains(": Required value"));
        let mut walk = Walk { issues: &mut issues, blocked: name_missing };
        walk.object_root(&kind_schema.schema, object);
        if walk.blocked {
            issues.push(Issue {
                kind: IssueKind::Cel,
                fields: vec![],
                message: "<nil>: Invalid value: null: some validation rules were not checked because the object was \
                          invalid; correct the existing errors to complete validation"
                    .into(),
                // The server says it too, but the object is rejected for the errors before it.
                rejects: false,
            });
        } else {
            let mut rules = Rules { cel: &self.cel, issues: &mut issues };
            rules.node(&kind_schema.schema, object, &mut Vec::new(), true);
        }
        issues
    }
}

fn prepare_rules(schema: &JSONSchemaProps, cel: &mut Cel) {
    for rule in schema.x_kubernetes_validations.iter().flatten() {
        cel.prepare(&rule.rule);
        if let Some(expression) = &rule.message_expression {
            cel.prepare(expression);
        }
    }
    for child in schema.properties.iter().flat_map(|p| p.values()) {
        prepare_rules(child, cel);
    }
    if let Some(items) = items_schema(schema) {
        prepare_rules(items, cel);
    }
    if let Some(values) = additional_schema(schema) {
        prepare_rules(values, cel);
    }
}

fn items_schema(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match schema.items.as_ref()? {
        JSONSchemaPropsOrArray::Schema(s) => Some(s),
        JSONSchemaPropsOrArray::Schemas(list) => list.first(),
    }
}

fn additional_schema(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match schema.additional_properties.as_ref()? {
        JSONSchemaPropsOrBool::Schema(s) => Some(s),
        JSONSchemaPropsOrBool::Bool(_) => None,
    }
}

fn allows_any_field(schema: &JSONSchemaProps) -> bool {
    schema.x_kubernetes_preserve_unknown_fields == Some(true)
        || matches!(schema.additional_properties, Some(JSONSchemaPropsOrBool::Bool(true)))
}

// ----- object metadata -----

const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
     characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used \
     for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// The parts of `ValidateObjectMetaAccessor` a manifest can get wrong: the name.
fn check_metadata(object: &Value) -> Vec<Issue> {
    let metadata = object.get("metadata");
    let name = metadata.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("");
    let generate_name = metadata.and_then(|m| m.get("generateName")).and_then(Value::as_str).unwrap_or("");
    let issue = |message: String| Issue {
        kind: IssueKind::Metadata,
        fields: vec!["metadata".into(), "name".into()],
        message,
        rejects: true,
    };
    if name.is_empty() {
        if generate_name.is_empty() {
            return vec![issue("metadata.name: Required value: name or generateName is required".into())];
        }
        return vec![];
    }
    let mut issues = vec![];
    if name.len() > 253 {
        issues
            .push(issue(format!("metadata.name: Invalid value: {}: must be no more than 253 characters", quote(name))));
    }
    if !is_dns1123_subdomain(name) {
        issues.push(issue(format!("metadata.name: Invalid value: {}: {DNS1123_SUBDOMAIN_MESSAGE}", quote(name))));
    }
    issues
}

pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

// ----- the OpenAPI schema -----

/// Go's `%q` for the strings a manifest holds (close enough for printable text).
pub fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// A value as `field.Error` prints a bad value: strings quoted, numbers bare, the rest as JSON.
fn bad_value(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Number(_) | Value::Bool(_) => v.to_string(),
        other => other.to_string(),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One step of a path; names borrow from the object or the schema, so walking
/// allocates nothing until there is something to report.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Field(&'a str),
    Index(usize),
    Key(&'a str),
}

/// `spec.owners[0].kind`, map keys as `.key`: the OpenAPI validator's names.
fn openapi_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Field(name) | Seg::Key(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// `field.Path` notation: map keys as `[key]`; the root is `<nil>`.
fn field_path(path: &[Seg]) -> String {
    if path.is_empty() {
        return "<nil>".into();
    }
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Field(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
            Seg::Key(key) => out.push_str(&format!("[{key}]")),
        }
    }
    out
}

fn field_names(path: &[Seg]) -> Vec<String> {
    path.iter()
        .filter_map(|s| match s {
            Seg::Field(name) | Seg::Key(name) => Some(name.to_string()),
            Seg::Index(_) => None,
        })
        .collect()
}

struct Walk<'a> {
    issues: &'a mut Vec<Issue>,
    /// An error of a kind after which the API server skips the CEL rules.
    blocked: bool,
}

impl Walk<'_> {
    fn push(&mut self, kind: IssueKind, path: &[Seg], message: String) {
        self.issues.push(Issue { kind, fields: field_names(path), message, rejects: kind != IssueKind::UnknownField });
    }

    /// Required, type, enum, too long and too many errors (`hasBlockingErr`).
    fn block(&mut self, path: &[Seg], message: String) {
        self.blocked = true;
        self.push(IssueKind::Schema, path, message);
    }

    fn object_root<'v>(&mut self, schema: &'v JSONSchemaProps, object: &'v Value) {
        let Some(map) = object.as_object() else {
            return;
        };
        let mut path = Vec::new();
        self.required(schema, map, &path);
        for (key, value) in map {
            match key.as_str() {
                "apiVersion" | "kind" | "metadata" | "status" => continue,
                _ => {}
            }
            path.push(Seg::Field(key));
            match schema.properties.as_ref().and_then(|p| p.get(key)) {
                Some(child) if !(value.is_null() && child.nullable != Some(true)) => self.node(child, value, &mut path),
                Some(_) => {}
                None => self.unknown(&path),
            }
            path.pop();
        }
    }

    fn unknown(&mut self, path: &[Seg]) {
        let name = openapi_path(path);
        self.push(IssueKind::UnknownField, path, format!("{name}: unknown field {}", quote(&name)));
    }

    fn required(&mut self, schema: &JSONSchemaProps, map: &serde_json::Map<String, Value>, path: &[Seg]) {
        for name in schema.required.iter().flatten() {
            let present = map.get(name).is_some_and(|v| !v.is_null() || nullable_child(schema, name));
            if !present {
                let mut child = path.to_vec();
                child.push(Seg::Field(name));
                self.block(&child, format!("{}: Required value", openapi_path(&child)));
            }
        }
    }

    fn node<'v>(&mut self, schema: &'v JSONSchemaProps, value: &'v Value, path: &mut Vec<Seg<'v>>) {
        if value.is_null() {
            return;
        }
        let actual = json_type(value);
        if let Some(expected) = schema.type_.as_deref() {
            let int_or_string = schema.x_kubernetes_int_or_string == Some(true);
            let float_int =
                actual == "number" && expected == "integer" && value.as_f64().is_some_and(|f| f.fract() == 0.0);
            let ok = expected == actual
                || (expected == "number" && actual == "integer")
                || float_int
                || (int_or_string && (actual == "integer" || actual == "string"));
            if !ok {
                let name = openapi_path(path);
                self.block(
                    path,
                    format!(
                        "{name}: Invalid value: {a}: {name} in body must be of type {expected}: {a}",
                        a = quote(actual)
                    ),
                );
                return;
            }
        }
        if let Some(values) = &schema.enum_
            && !values.iter().any(|v| v.0 == *value)
        {
            let supported: Vec<String> = values
                .iter()
                .map(|v| match &v.0 {
                    Value::String(s) => quote(s),
                    other => quote(&other.to_string()),
                })
                .collect();
            let name = openapi_path(path);
            self.block(
                path,
                format!("{name}: Unsupported value: {}: supported values: {}", bad_value(value), supported.join(", ")),
            );
        }
        match value {
            Value::String(s) => self.string(schema, s, path),
            Value::Number(n) => self.number(schema, n, value, path),
            Value::Array(items) => self.array(schema, items, path),
            Value::Object(map) => self.object(schema, map, path),
            _ => {}
        }
    }

    /// A length or count outside the schema's bounds. Over the maximum blocks: the
    /// API server then skips the CEL rules and says so (see `check`).
    fn size(
        &mut self,
        path: &[Seg],
        size: i64,
        (min, max): (Option<i64>, Option<i64>),
        over: impl FnOnce(i64) -> String,
        under: impl FnOnce(i64) -> String,
    ) {
        if let Some(max) = max.filter(|max| size > *max) {
            self.block(path, over(max));
        }
        if let Some(min) = min.filter(|min| size < *min) {
            self.push(IssueKind::Schema, path, under(min));
        }
    }

    fn string(&mut self, schema: &JSONSchemaProps, s: &str, path: &[Seg]) {
        let name = || openapi_path(path);
        self.size(
            path,
            s.chars().count() as i64,
            (schema.min_length, schema.max_length),
            |max| format!("{}: Too long: may not be more than {max} {}", name(), plural(max, "byte", "bytes")),
            |min| {
                format!("{n}: Invalid value: {}: {n} in body should be at least {min} chars long", quote(s), n = name())
            },
        );
        if let Some(pattern) = &schema.pattern {
            let matched = super::cel::is_match(pattern, s).unwrap_or(false);
            if !matched {
                let name = name();
                self.push(
                    IssueKind::Schema,
                    path,
                    format!("{name}: Invalid value: {}: {name} in body should match '{pattern}'", quote(s)),
                );
            }
        }
        if let Some(format) = schema.format.as_deref()
            && super::formats::check(format, s).is_some()
        {
            let name = name();
            self.block(
                path,
                format!("{name}: Invalid value: {q}: {name} in body must be of type {format}: {q}", q = quote(s)),
            );
        }
    }

    fn number(&mut self, schema: &JSONSchemaProps, n: &serde_json::Number, value: &Value, path: &[Seg]) {
        let Some(f) = n.as_f64() else { return };
        let bounds = [
            (schema.minimum, schema.exclusive_minimum == Some(true), Bound::Minimum),
            (schema.maximum, schema.exclusive_maximum == Some(true), Bound::Maximum),
        ];
        for (limit, exclusive, bound) in bounds {
            let Some(limit) = limit else { continue };
            if let Some(relation) = bound.violated(f, limit, exclusive) {
                let name = openapi_path(path);
                let message = format!(
                    "{name}: Invalid value: {}: {name} in body should be {relation} {}",
                    bad_value(value),
                    show(limit)
                );
                self.push(IssueKind::Schema, path, message);
            }
        }
    }

    fn array<'v>(&mut self, schema: &'v JSONSchemaProps, items: &'v [Value], path: &mut Vec<Seg<'v>>) {
        let len = items.len() as i64;
        let name = || openapi_path(path);
        self.size(
            path,
            len,
            (schema.min_items, schema.max_items),
            |max| format!("{}: Too many: {len}: must have at most {max} {}", name(), plural(max, "item", "items")),
            |min| format!("{n}: Invalid value: {len}: {n} in body should have at least {min} items", n = name()),
        );
        // A `set` compares whole items, a `map` the values of its key fields; the
        // API server shows a map item's duplicate as a JSON object of those keys.
        let identity = |item: &Value| -> Option<Value> {
            match schema.x_kubernetes_list_type.as_deref() {
                Some("set") => Some(item.clone()),
                Some("map") => {
                    let keys = schema.x_kubernetes_list_map_keys.as_deref().unwrap_or_default();
                    Some(Value::Object(keys.iter().filter_map(|k| Some((k.clone(), item.get(k)?.clone()))).collect()))
                }
                _ => None,
            }
        };
        let identities: Vec<Option<Value>> = items.iter().map(identity).collect();
        for (i, id) in identities.iter().enumerate() {
            let Some(id) = id else { continue };
            if identities[..i].iter().flatten().any(|earlier| earlier == id) {
                let mut at = path.clone();
                at.push(Seg::Index(i));
                let shown = match schema.x_kubernetes_list_type.as_deref() {
                    Some("map") => id.to_string(),
                    _ => bad_value(id),
                };
                self.push(IssueKind::Schema, &at, format!("{}: Duplicate value: {shown}", field_path(&at)));
            }
        }
        let Some(item_schema) = items_schema(schema) else { return };
        for (i, item) in items.iter().enumerate() {
            path.push(Seg::Index(i));
            self.node(item_schema, item, path);
            path.pop();
        }
    }

    fn object<'v>(
        &mut self,
        schema: &'v JSONSchemaProps,
        map: &'v serde_json::Map<String, Value>,
        path: &mut Vec<Seg<'v>>,
    ) {
        let count = map.len() as i64;
        let name = || openapi_path(path);
        self.size(
            path,
            count,
            (schema.min_properties, schema.max_properties),
            |max| format!("{}: Too many: {count}: must have at most {max} {}", name(), plural(max, "item", "items")),
            |min| format!("{n}: Invalid value: {count}: {n} in body should have at least {min} properties", n = name()),
        );
        self.required(schema, map, path);
        let properties = schema.properties.as_ref();
        let values = additional_schema(schema);
        for (key, value) in map {
            if let Some(child) = properties.and_then(|p| p.get(key)) {
                path.push(Seg::Field(key));
                if !(value.is_null() && child.nullable != Some(true)) {
                    self.node(child, value, path);
                }
                path.pop();
            } else if let Some(values) = values {
                path.push(Seg::Key(key));
                self.node(values, value, path);
                path.pop();
            } else if !allows_any_field(schema) {
                path.push(Seg::Field(key));
                self.unknown(path);
                path.pop();
            }
        }
    }
}

/// A number's limit in the schema (`minimum`, `maximum`).
#[derive(Clone, Copy)]
enum Bound {
    Minimum,
    Maximum,
}

impl Bound {
    /// The relation the API server's message demands, when `f` breaks the limit.
    fn violated(self, f: f64, limit: f64, exclusive: bool) -> Option<&'static str> {
        let (outside, relation) = match (self, exclusive) {
            (Bound::Minimum, true) => (f <= limit, "greater than"),
            (Bound::Minimum, false) => (f < limit, "greater than or equal to"),
            (Bound::Maximum, true) => (f >= limit, "less than"),
            (Bound::Maximum, false) => (f > limit, "less than or equal to"),
        };
        outside.then_some(relation)
    }
}

/// A limit as Go prints it: whole numbers without a fraction.
fn show(limit: f64) -> String {
    if limit.fract() == 0.0 { format!("{}", limit as i64) } else { limit.to_string() }
}

fn plural(n: i64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

fn nullable_child(schema: &JSONSchemaProps, name: &str) -> bool {
    schema.properties.as_ref().and_then(|p| p.get(name)).is_some_and(|c| c.nullable == Some(true))
}

// ----- CEL rules -----

/// A JSON value as CEL sees it: unknown fields pruned, nulls in non-nullable
/// fields dropped, the root's `metadata` reduced to name and generateName and
/// its `status` dropped (as the API server does on create), declared property
/// names escaped. Converts straight from the manifest, without a pruned copy.
fn to_cel(schema: Option<&JSONSchemaProps>, value: &Value, root: bool) -> CelValue {
    match value {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => {
            let wants_float = schema.and_then(|s| s.type_.as_deref()) == Some("number");
            match (n.as_i64(), wants_float) {
                (Some(i), false) => CelValue::Int(i),
                _ => CelValue::Float(n.as_f64().unwrap_or(0.0)),
            }
        }
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => {
            let item = schema.and_then(items_schema);
            CelValue::List(Arc::new(items.iter().map(|i| to_cel(item, i, false)).collect()))
        }
        Value::Object(map) => cel_map(map.iter().filter_map(|(key, v)| cel_entry(schema, key, v, root))),
    }
}

/// [`to_cel`] of an object reduced to the fields its rules select: the root's one
/// rule reads `self.metadata.name`, and converting all of `spec` for it was most of
/// the validator's CEL work.
fn to_cel_selected(schema: &JSONSchemaProps, value: &Value, root: bool, fields: &[&BTreeSet<String>]) -> CelValue {
    let Value::Object(map) = value else { return to_cel(Some(schema), value, root) };
    let selected = |key: &str| {
        let wanted = |name: &str| fields.iter().any(|f| f.contains(name));
        wanted(key) || escape_property(key).is_some_and(|escaped| wanted(&escaped))
    };
    let entries = map.iter().filter(|(key, _)| selected(key));
    cel_map(entries.filter_map(|(key, v)| cel_entry(Some(schema), key, v, root)))
}

/// One field of an object for CEL, or `None` when CEL does not see it.
fn cel_entry(schema: Option<&JSONSchemaProps>, key: &str, v: &Value, root: bool) -> Option<(String, CelValue)> {
    if root {
        match key {
            "status" => return None,
            "metadata" => return Some((key.to_string(), cel_metadata(v))),
            "apiVersion" | "kind" => return Some((key.to_string(), to_cel(None, v, false))),
            _ => {}
        }
    }
    let Some(schema) = schema else {
        // Beneath x-kubernetes-preserve-unknown-fields: everything, as written.
        return Some((escape_property(key)?, to_cel(None, v, false)));
    };
    let kept = |child: &JSONSchemaProps| !(v.is_null() && child.nullable != Some(true));
    if let Some(child) = schema.properties.as_ref().and_then(|p| p.get(key)) {
        return kept(child).then(|| Some((escape_property(key)?, to_cel(Some(child), v, false))))?;
    }
    if let Some(values) = additional_schema(schema) {
        return kept(values).then(|| (key.to_string(), to_cel(Some(values), v, false)));
    }
    if allows_any_field(schema) {
        return Some((escape_property(key)?, to_cel(None, v, false)));
    }
    None
}

/// What CEL sees of object metadata on create: the name and generateName.
fn cel_metadata(metadata: &Value) -> CelValue {
    let fields = ["name", "generateName"].into_iter();
    cel_map(fields.filter_map(|field| Some((field.to_string(), to_cel(None, metadata.get(field)?, false)))))
}

/// A CEL map of named fields.
fn cel_map(entries: impl Iterator<Item = (String, CelValue)>) -> CelValue {
    let out: HashMap<Key, CelValue> = entries.map(|(name, v)| (Key::String(Arc::new(name)), v)).collect();
    CelValue::Map(Map::from(out))
}

struct Rules<'a> {
    cel: &'a Cel,
    issues: &'a mut Vec<Issue>,
}

impl Rules<'_> {
    /// Walks the manifest as written; fields CEL does not see (unknown, or null where
    /// the schema does not allow it) have no rules to run, as [`to_cel`] prunes them.
    fn node<'v>(&mut self, schema: &'v JSONSchemaProps, value: &'v Value, path: &mut Vec<Seg<'v>>, root: bool) {
        if let Some(rules) = &schema.x_kubernetes_validations
            && !value.is_null()
        {
            let this = match self.selected(rules) {
                Some(fields) => to_cel_selected(schema, value, root, &fields),
                None => to_cel(Some(schema), value, root),
            };
            let scope = self.cel.bind(this);
            for rule in rules {
                self.rule(schema, rule, value, &scope, path);
            }
        }
        match value {
            Value::Object(map) => {
                let values = additional_schema(schema);
                for (key, v) in map {
                    if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                        continue;
                    }
                    if let Some(child) = schema.properties.as_ref().and_then(|p| p.get(key)) {
                        path.push(Seg::Field(key));
                        self.node(child, v, path, false);
                        path.pop();
                    } else if let Some(values) = values {
                        path.push(Seg::Key(key));
                        self.node(values, v, path, false);
                        path.pop();
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = items_schema(schema) {
                    for (i, item) in items.iter().enumerate() {
                        path.push(Seg::Index(i));
                        self.node(item_schema, item, path, false);
                        path.pop();
                    }
                }
            }
            _ => {}
        }
    }

    /// The fields of `self` a node's rules select, or `None` when one may read it whole.
    fn selected<'r>(&'r self, rules: &'r [ValidationRule]) -> Option<Vec<&'r BTreeSet<String>>> {
        let sources = rules.iter().flat_map(|r| std::iter::once(&r.rule).chain(r.message_expression.as_ref()));
        sources.map(|source| self.cel.reads(source)).collect()
    }

    fn rule(
        &mut self,
        schema: &JSONSchemaProps,
        rule: &ValidationRule,
        value: &Value,
        scope: &Context<'_, 'static>,
        path: &[Seg],
    ) {
        // Transition rules compare with the stored object; a manifest is a create.
        if rule.rule.contains("oldSelf") {
            return;
        }
        let result = self.cel.eval(&rule.rule, scope);
        if matches!(result, Ok(CelValue::Bool(true))) {
            // The common case: nothing to report, so nothing to format.
            return;
        }
        let sts_type = schema.type_.clone().unwrap_or_default();
        let rule_text = rule.message.as_deref().map(str::trim).filter(|m| !m.is_empty()).unwrap_or(rule.rule.trim());
        let here = field_path(path);
        let fields = field_names(path);
        match result {
            Ok(CelValue::Bool(true)) => {}
            Ok(CelValue::Bool(false)) => {
                let mut at = path.to_vec();
                if let Some(extra) = rule.field_path.as_deref() {
                    at.extend(parse_field_path(extra));
                }
                let detail = rule
                    .message_expression
                    .as_deref()
                    .and_then(|e| match self.cel.eval(e, scope) {
                        Ok(CelValue::String(s)) => Some(s.to_string()),
                        _ => None,
                    })
                    .unwrap_or_else(|| match rule.message.as_deref().map(str::trim) {
                        Some(m) if !m.is_empty() => m.to_string(),
                        _ => format!("failed rule: {}", rule.rule.trim()),
                    });
                let shown = if sts_type == "object" || sts_type == "array" {
                    String::new()
                } else {
                    format!(": {}", bad_value(value))
                };
                let at_path = field_path(&at);
                let message = match rule.reason.as_deref() {
                    Some("FieldValueForbidden") => format!("{at_path}: Forbidden: {detail}"),
                    Some("FieldValueRequired") => format!("{at_path}: Required value: {detail}"),
                    Some("FieldValueDuplicate") => format!("{at_path}: Duplicate value{shown}"),
                    _ => format!("{at_path}: Invalid value{shown}: {detail}"),
                };
                self.issues.push(Issue { kind: IssueKind::Cel, fields: field_names(&at), message, rejects: true });
            }
            Ok(other) => self.issues.push(Issue {
                kind: IssueKind::Cel,
                fields,
                message: format!(
                    "{here}: Invalid value: {}: rule returned {other:?}, not a bool: {rule_text}",
                    quote(&sts_type)
                ),
                rejects: true,
            }),
            Err(error) => self.issues.push(Issue {
                kind: IssueKind::Cel,
                fields,
                message: format!("{here}: Invalid value: {}: {error} evaluating rule: {rule_text}", quote(&sts_type)),
                rejects: true,
            }),
        }
    }
}

/// `.a.b` or `.a['b']` from a rule's `fieldPath`.
fn parse_field_path(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        match part.split_once('[') {
            Some((name, rest)) => {
                if !name.is_empty() {
                    out.push(Seg::Field(name));
                }
                let key = rest.trim_end_matches(']').trim_matches('\'');
                match key.parse::<usize>() {
                    Ok(i) => out.push(Seg::Index(i)),
                    Err(_) => out.push(Seg::Key(key)),
                }
            }
            None => out.push(Seg::Field(part)),
        }
    }
    out
}

/// Fields of `labels`-like maps, for callers that need them as a map.
pub fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}
