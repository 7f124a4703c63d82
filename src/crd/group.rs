use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{About, Access, Counts, NamespacePolicy, ParentRef};
use super::limits::Limit;

/// Desired state of a Group.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "payi.io",
    version = "v1alpha1",
    kind = "Group",
    plural = "groups",
    shortname = "payigroup",
    shortname = "payigroups",
    category = "payi",
    doc = "A division of an Organization, such as Engineering or Marketing, that holds Applications.",
    status = "GroupStatus",
    validation = Rule::new("size(self.metadata.name) <= 63")
        .message("Group names must be at most 63 characters: they are used in label values"),
    printcolumn = r#"{"name":"Organization","type":"string","jsonPath":".spec.organizationRef.name"}"#,
    printcolumn = r#"{"name":"Apps","type":"integer","jsonPath":".status.applications.total"}"#,
    printcolumn = r#"{"name":"Apps Ready","type":"integer","jsonPath":".status.applications.ready"}"#,
    printcolumn = r#"{"name":"Month-USD","type":"string","jsonPath":".status.usage.thisMonth.spendUSD"}"#,
    printcolumn = r#"{"name":"Spend","type":"string","jsonPath":".status.limits.summary"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GroupSpec {
    /// The Organization this Group belongs to.
    pub organization_ref: ParentRef,
    /// Display name and description.
    #[serde(flatten)]
    pub about: About,
    /// Namespaces whose Applications may attach to this Group. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_policy: Option<NamespacePolicy>,
    /// Who may use this level's keys (`owners`) or only look (`readers`).
    #[serde(default, flatten)]
    pub access: Access,
    /// Budgets of this level (docs/limits.md): spend in USD per window, charged by
    /// the gateway for every request this level covers. Names are unique; at most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub limits: Vec<Limit>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The Organization this Group resolved to, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// Applications that reference this Group, and how many are Ready.
    #[serde(default)]
    pub applications: Counts,
    /// Spend and state of this object's limits, from the gateways' ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<super::limits::LimitsStatus>,
    /// Month-to-date usage of this level, limits or not, from the gateways' ledger
    /// (docs/limits.md, "Spend at every level").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<super::usage::UsageStatus>,
}
