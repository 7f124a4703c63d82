//! Types shared by the three kinds.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::formats;

/// A reference to a cluster-scoped parent by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
pub struct ParentRef {
    /// Name of the parent object.
    #[x_kube(validation = Rule::new(format!("size(self) > 0 && {}", formats::dns_subdomain("self", 63)))
        .message("must be a name of 1 to 63 characters: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    pub name: String,
}

/// Which namespaces may hold Applications of a Group.
///
/// A namespace is admitted when it is listed in `names` or its labels match
/// `selector`. Kubernetes selector rules apply: an empty selector (`{}`) matches
/// every namespace, an absent one matches none. An absent or empty policy admits
/// no namespace at all, so a Group must opt in to the teams that may use it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacePolicy {
    /// Namespaces admitted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new(format!("self.all(n, {})", formats::dns_label("n")))
        .message("namespacePolicy.names entries must be namespace names: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"))]
    #[schemars(length(max = 1000), inner(length(max = 63)))]
    pub names: Vec<String>,
    /// Namespaces admitted by their labels. `{}` admits every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<NamespaceSelector>,
}

/// A label selector over namespaces, with the JSON shape and the validation rules
/// of Kubernetes' own `LabelSelector`, so a selector Kubernetes would refuse is
/// refused when the Group is applied rather than admitting or refusing namespaces
/// in surprising ways later (`NotIn` with no values would admit every namespace).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// Labels a namespace must carry, key and value. The requirements are ANDed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    #[x_kube(
        validation = Rule::new(format!("self.all(k, size(k) <= 317 && {})", formats::qualified_name("k")))
            .message("matchLabels keys must be label keys: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
        validation = Rule::new(format!("self.all(k, {})", formats::label_value("self[k]")))
            .message("matchLabels values must be label values: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit")
    )]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Label requirements a namespace must meet. The requirements are ANDed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub match_expressions: Option<Vec<SelectorRequirement>>,
}

/// One requirement of a namespace selector: a label key, an operator and values.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)")
        .message("operators In and NotIn need at least one entry in values"),
    validation = Rule::new("!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0")
        .message("operators Exists and DoesNotExist take no values: remove values")
)]
pub struct SelectorRequirement {
    /// The label key the requirement applies to.
    #[schemars(length(max = 317))]
    #[x_kube(validation = Rule::new(formats::qualified_name("self"))
        .message("key must be a label key: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))]
    pub key: String,
    /// One of `In`, `NotIn`, `Exists` and `DoesNotExist`.
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self in ['In', 'NotIn', 'Exists', 'DoesNotExist']")
        .message("operator must be one of In, NotIn, Exists and DoesNotExist"))]
    pub operator: String,
    /// Label values for `In` and `NotIn`; none for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    #[x_kube(validation = Rule::new(format!("self.all(v, {})", formats::label_value("v")))
        .message("values must be label values: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))]
    pub values: Option<Vec<String>>,
}

impl From<&NamespaceSelector> for LabelSelector {
    fn from(selector: &NamespaceSelector) -> Self {
        LabelSelector {
            match_labels: selector.match_labels.clone(),
            match_expressions: selector.match_expressions.as_ref().map(|requirements| {
                requirements
                    .iter()
                    .map(|r| LabelSelectorRequirement {
                        key: r.key.clone(),
                        operator: r.operator.clone(),
                        values: r.values.clone(),
                    })
                    .collect()
            }),
        }
    }
}

/// A count of children and how many of them are Ready.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, KubeSchema)]
pub struct Counts {
    pub total: i32,
    pub ready: i32,
}

/// Someone who may be granted access: a user, a group of users, or a ServiceAccount.
///
/// The rules keep out what RBAC would store but nobody should be handed through
/// this operator: the cluster's own `system:` users and groups (every
/// authenticated user, anonymous requests, cluster admins, all ServiceAccounts),
/// and ServiceAccount names RBAC cannot match. ServiceAccounts of any namespace
/// may be named: whoever can write owners can already read the key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, KubeSchema)]
#[x_kube(
    validation = Rule::new("self.kind == 'ServiceAccount' || !self.name.startsWith('system:')")
        .message("User and Group names starting with system: (such as system:authenticated, system:anonymous or system:masters) are Kubernetes' own identities and cannot be granted access; name a person or team, or use kind ServiceAccount"),
    validation = Rule::new(format!("self.kind != 'ServiceAccount' || ({})", formats::dns_subdomain("self.name", 253)))
        .message("a ServiceAccount name must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, e.g. ci-bot"),
    validation = Rule::new("self.kind != 'ServiceAccount' || has(self.__namespace__)")
        .message("a ServiceAccount subject needs its namespace"),
    validation = Rule::new("self.kind == 'ServiceAccount' || !has(self.__namespace__)")
        .message("namespace is only for ServiceAccount subjects: remove it from User and Group subjects")
)]
pub struct AccessSubject {
    pub kind: SubjectKind,
    /// User name, group name, or ServiceAccount name.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("size(self) > 0 && size(self) <= 253").message("name must be 1 to 253 characters"))]
    pub name: String,
    /// Namespace of a ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new(formats::dns_label("self"))
        .message("namespace must be a namespace name: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"))]
    pub namespace: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum SubjectKind {
    User,
    Group,
    ServiceAccount,
}

/// Who may use the keys below this object, and who may only look.
///
/// Access flows down: an Organization's owners own every Application of its
/// Groups, a Group's owners every Application in it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
pub struct Access {
    /// May read the key Secrets and manage the Applications.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub owners: Vec<AccessSubject>,
    /// May read the Applications, never a Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub readers: Vec<AccessSubject>,
}

/// What a person reads about an object; the operator does not interpret it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct About {
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub description: Option<String>,
}
