use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::ParentRef;

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
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// The Group this Application attributes its usage to.
    pub group_ref: ParentRef,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub description: Option<String>,
    /// The Secret that receives the key. Absent: `<application>-payi-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<KeySecretTemplate>,
}

/// Name and metadata of the Secret that holds an Application's key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
pub struct KeySecretTemplate {
    /// Secret name. Absent: `<application>-payi-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) <= 253 && self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')")
        .message("must be a valid Secret name: lowercase letters, digits, '-' and '.', at most 253 characters"))]
    pub name: Option<String>,
    /// Labels added to the Secret (e.g. for Reloader or policy engines).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
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
    /// `sha256:` and the first 16 hex digits of the key's SHA-256: identifies the key, never reveals it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// When the current key was minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_created_at: Option<Time>,
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
