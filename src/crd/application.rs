use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{About, Access, ParentRef};
use super::formats;
use super::limits::Limit;

/// Desired state of an Application.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "payi.io",
    version = "v1alpha1",
    kind = "Application",
    plural = "applications",
    namespaced,
    shortname = "payiapp",
    shortname = "payiapps",
    category = "payi",
    doc = "One service that calls AI providers; the only level that gets an API key, kept in a Secret.",
    status = "ApplicationStatus",
    validation = Rule::new("size(self.metadata.name) <= 63")
        .message("Application names must be at most 63 characters: they are used in label values"),
    printcolumn = r#"{"name":"Group","type":"string","jsonPath":".spec.groupRef.name"}"#,
    printcolumn = r#"{"name":"Organization","type":"string","jsonPath":".status.organization"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".status.keySecretName"}"#,
    printcolumn = r#"{"name":"Use Cases","type":"integer","jsonPath":".status.useCases.declared"}"#,
    printcolumn = r#"{"name":"Month-USD","type":"string","jsonPath":".status.usage.thisMonth.spendUSD"}"#,
    printcolumn = r#"{"name":"Spend","type":"string","jsonPath":".status.limits.summary"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// The Group this Application attributes its usage to.
    pub group_ref: ParentRef,
    /// Display name and description.
    #[serde(flatten)]
    pub about: About,
    /// The Secret that receives the key. Absent: `<application>-payi-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<KeySecretTemplate>,
    /// When to replace the key. Absent: only on request through the
    /// `payi.io/rotate-key` annotation, with a 24h grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rotation: Option<KeyRotation>,
    /// Who may use this level's keys (`owners`) or only look (`readers`).
    #[serde(default, flatten)]
    pub access: Access,
    /// The end-to-end scenarios of this Application (such as `summarize_ticket`) that
    /// requests name in `xProxy-UseCase-Name`; usage is attributed to each. Names are
    /// unique; at most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub use_cases: Vec<UseCase>,
    /// What a request naming a use case that is not declared gets: `Declared` (the
    /// default) refuses it; `Open` attributes it to one catch-all use case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_case_policy: Option<UseCasePolicy>,
    /// Budgets of this level (docs/limits.md): spend in USD per window, charged by
    /// the gateway for every request this level covers. Names are unique; at most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub limits: Vec<Limit>,
}

/// One end-to-end scenario of an Application, the fourth level of attribution.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
pub struct UseCase {
    /// Case-sensitive, unique within the Application: 1 to 64 letters, digits, '.', '-' or '_'.
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9._-]+$')")
        .message("use case names must be 1 to 64 letters, digits, '.', '-' or '_', e.g. summarize_ticket"))]
    pub name: String,
    /// What the use case does, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Starts at 1 (the default) and goes up only when a person raises it. Requests
    /// may name this version or an earlier one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000000")
        .message("use case versions are whole numbers from 1 to 1000000"))]
    pub version: Option<i64>,
    /// Budgets of this use case alone (docs/limits.md). Names are unique; at most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub limits: Vec<Limit>,
}

/// How a request's use case is checked against the declared ones.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UseCasePolicy {
    /// Only declared use cases are accepted; any other is refused with its name.
    #[default]
    Declared,
    /// Undeclared use cases are accepted and counted under one catch-all label value.
    Open,
}

/// Key rotation. A rotation makes a new key `PAYI_API_KEY` and keeps the old one
/// as `PAYI_API_KEY_PREVIOUS` for the grace period, so workloads can reload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRotation {
    /// Any new value rotates the key once, e.g. the time of the request committed to Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) <= 128").message("requestedAt must be at most 128 characters"))]
    pub requested_at: Option<String>,
    /// Rotate automatically this often, as a duration such as `720h`. At least `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(formats::duration_between(Some("1h"), None))
        .message("every must be a duration of at least 1h in whole hours, minutes and seconds, written like 720h or 1h30m"))]
    pub every: Option<String>,
    /// How long the previous key keeps working after a rotation, e.g. `24h` (the default) or `0s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(formats::duration_between(None, Some("2160h")))
        .message("gracePeriod must be a duration from 0s to 2160h in whole hours, minutes and seconds, written like 24h or 90m"))]
    pub grace_period: Option<String>,
}

/// Name and metadata of the Secret that holds an Application's key.
///
/// Labels and annotations are checked as Kubernetes checks a Secret's, so a bad
/// one is refused when the Application is applied, not when the operator writes
/// the Secret. The operator's own keys are refused: it reads `payi.io/`
/// annotations back to recover from a crash mid-rotation, and selects its
/// Secrets by `app.kubernetes.io/managed-by`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
pub struct KeySecretTemplate {
    /// Secret name. Absent: `<application>-payi-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(formats::dns_subdomain("self", 253))
        .message("must be a valid Secret name: lowercase letters, digits, '-' and '.', at most 253 characters, starting and ending with a letter or digit"))]
    pub name: Option<String>,
    /// Labels added to the Secret (e.g. for Reloader or policy engines).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    #[x_kube(
        validation = Rule::new(format!("self.all(k, size(k) <= 317 && {})", formats::qualified_name("k")))
            .message("keySecret.labels keys must be label keys: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
        validation = Rule::new(format!("self.all(k, {})", formats::label_value("self[k]")))
            .message("keySecret.labels values must be label values: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
        validation = Rule::new("self.all(k, !k.startsWith('payi.io/') && k != 'app.kubernetes.io/managed-by')")
            .message("keySecret.labels may not set the operator's own labels (payi.io/... and app.kubernetes.io/managed-by)")
    )]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the Secret. At most 64 KiB in total, keys included.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 65536}))]
    #[x_kube(
        validation = Rule::new(format!("self.all(k, size(k) <= 317 && {})", formats::qualified_name("k")))
            .message("keySecret.annotations keys must be annotation keys: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
        validation = Rule::new("self.all(k, !k.startsWith('payi.io/'))")
            .message("keySecret.annotations may not set the operator's own annotations (payi.io/...)"),
        validation = Rule::new("self.map(k, size(k) + size(self[k])).sum() <= 65536")
            .message("keySecret.annotations may hold at most 64 KiB in total, keys and values together")
    )]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The Organization the Application's Group belongs to, when both exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// The Group the Application is attached to, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The Secret holding the key, in the Application's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_name: Option<String>,
    /// The key Secret's resourceVersion when this operator last wrote or read it: while the
    /// watched Secret still has it, the Secret is known unchanged and need not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_version: Option<String>,
    /// `sha256:` and the first 16 hex digits of the key's SHA-256: identifies the key, never reveals it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// When the current key was minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_created_at: Option<Time>,
    /// The keys in the Secret that work now: the current one first, then the
    /// previous one while its grace period lasts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<LiveKey>,
    /// Which rotation requests have been carried out, and when the next scheduled one is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,
    /// The Roles (each with a RoleBinding of the same name) granting owners and readers access.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_roles: Vec<String>,
    /// The use cases requests may name, as gateways attribute them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_cases: Option<UseCaseStatus>,
    /// Spend and state of this object's limits, from the gateways' ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<super::limits::LimitsStatus>,
    /// Month-to-date usage of this level, limits or not, from the gateways' ledger
    /// (docs/limits.md, "Spend at every level").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<super::usage::UsageStatus>,
}

/// The use cases of an Application as the operator publishes them for gateways:
/// only this status, never the spec, is what the verifier and the gateway trust.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UseCaseStatus {
    /// How many `spec.useCases` declares.
    pub declared: i64,
    /// How many are live: attributable now (all of them while the Application is Ready, else none).
    pub live: i64,
    /// `Declared` or `Open`, with the default applied.
    pub policy: UseCasePolicy,
    /// The live use cases with their versions, defaults applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<PublishedUseCase>,
}

/// A live use case: its name and current version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
pub struct PublishedUseCase {
    pub name: String,
    pub version: i64,
}

/// One working key, identified by fingerprint only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveKey {
    /// The Secret data key holding it: `PAYI_API_KEY` or `PAYI_API_KEY_PREVIOUS`.
    pub secret_key: String,
    pub fingerprint: String,
    /// `sha256:` and all 64 lowercase hex digits of the key's SHA-256, for gateways
    /// that verify keys by digest (see docs/gateway.md). Empty only in status written
    /// before the operator published digests, until its next reconcile fills it in.
    #[serde(default)]
    pub digest: String,
    pub created_at: Time,
    /// When it is removed from the Secret; absent for the current key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// The `spec.keyRotation.requestedAt` value last carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_request: Option<String>,
    /// The `payi.io/rotate-key` annotation value last carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_annotation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_at: Option<Time>,
    /// When `spec.keyRotation.every` rotates the key next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_at: Option<Time>,
}

impl Application {
    /// Name of the Secret that holds this Application's key.
    pub fn key_secret_name(&self) -> String {
        self.spec
            .key_secret
            .as_ref()
            .and_then(|t| t.name.clone())
            .unwrap_or_else(|| format!("{}-payi-key", self.metadata.name.as_deref().unwrap_or_default()))
    }
}
