use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{About, Access, Counts};
use super::limits::Limit;

/// Desired state of an Organization.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "payi.io",
    version = "v1alpha1",
    kind = "Organization",
    plural = "organizations",
    shortname = "payiorg",
    shortname = "payiorgs",
    category = "payi",
    doc = "The top of the Pay-i hierarchy: all AI resources, users and settings of one company.",
    status = "OrganizationStatus",
    validation = Rule::new("size(self.metadata.name) <= 63")
        .message("Organization names must be at most 63 characters: they are used in label values"),
    printcolumn = r#"{"name":"Groups","type":"integer","jsonPath":".status.groups.total"}"#,
    printcolumn = r#"{"name":"Apps","type":"integer","jsonPath":".status.applications.total"}"#,
    printcolumn = r#"{"name":"Apps Ready","type":"integer","jsonPath":".status.applications.ready"}"#,
    printcolumn = r#"{"name":"Month-USD","type":"string","jsonPath":".status.usage.thisMonth.spendUSD"}"#,
    printcolumn = r#"{"name":"Spend","type":"string","jsonPath":".status.limits.summary"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationSpec {
    /// Display name and description.
    #[serde(flatten)]
    pub about: About,
    /// URL of the Pay-i API or AI gateway this organization's applications call.
    /// Published to every key Secret as `PAYI_BASE_URL`.
    #[serde(rename = "baseURL", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(
        validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''")
            .message("baseURL must be an absolute http or https URL, e.g. https://api.pay-i.com"),
        // Go's URL parser, behind isURL(), accepts user:password@host; the URL is
        // copied into every key Secret of the Organization, readable by all owners.
        validation = Rule::new("!self.matches('^[^/?#]*//[^/?#]*@')")
            .message("baseURL must not contain a user name or password (user:password@): it is copied into every key Secret")
    )]
    pub base_url: Option<String>,
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
pub struct OrganizationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Groups that reference this Organization, and how many are Ready.
    #[serde(default)]
    pub groups: Counts,
    /// Applications in those Groups, and how many are Ready.
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
