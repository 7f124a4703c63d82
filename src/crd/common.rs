//! Types shared by the three kinds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to a cluster-scoped parent by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
pub struct ParentRef {
    /// Name of the parent object.
    #[x_kube(validation = Rule::new("size(self) > 0 && size(self) <= 63")
        .message("must be a name of 1 to 63 characters"))]
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
    #[x_kube(validation = Rule::new("self.all(n, size(n) > 0 && size(n) <= 63)")
        .message("namespace names must be 1 to 63 characters"))]
    #[schemars(length(max = 1000))]
    pub names: Vec<String>,
    /// Namespaces admitted by their labels. `{}` admits every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// A count of children and how many of them are Ready.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, KubeSchema)]
pub struct Counts {
    pub total: i32,
    pub ready: i32,
}

/// Someone who may be granted access: a user, a group of users, or a ServiceAccount.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, KubeSchema)]
#[x_kube(validation = Rule::new("self.kind != 'ServiceAccount' || (has(self.__namespace__) && size(self.__namespace__) > 0)")
    .message("a ServiceAccount subject needs its namespace"))]
pub struct AccessSubject {
    pub kind: SubjectKind,
    /// User name, group name, or ServiceAccount name.
    #[x_kube(validation = Rule::new("size(self) > 0 && size(self) <= 253").message("name must be 1 to 253 characters"))]
    pub name: String,
    /// Namespace of a ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
