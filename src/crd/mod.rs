//! The `payi.io/v1alpha1` custom resources and the YAML the `crd` command prints.

mod application;
mod common;
pub mod formats;
mod group;
pub mod limits;
mod organization;
pub mod usage;

pub use application::{
    Application, ApplicationSpec, ApplicationStatus, KeyRotation, KeySecretTemplate, LiveKey, PublishedUseCase,
    RotationStatus, UseCase, UseCasePolicy, UseCaseStatus,
};
pub use common::{
    About, Access, AccessSubject, Counts, NamespacePolicy, NamespaceSelector, ParentRef, SelectorRequirement,
    SubjectKind,
};
pub use group::{Group, GroupSpec, GroupStatus};
pub use limits::{Limit, LimitPeriod, LimitState, LimitStatusItem, LimitType, LimitsStatus};
pub use organization::{Organization, OrganizationSpec, OrganizationStatus};
pub use usage::{MonthUsage, UsageStatus, UseCaseUsage};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

/// API group of every kind this operator serves.
pub const API_GROUP: &str = "payi.io";

/// All three CRDs, parents first, so applying them in order never references a missing kind.
pub fn all() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![Organization::crd(), Group::crd(), Application::crd()];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
                strip_defaults(schema);
            }
        }
    }
    crds
}

/// Removes `default:` from a schema. The API server would write those defaults
/// into stored objects, and GitOps tools (Argo CD in particular) then report the
/// difference from Git as drift forever; the controller applies defaults instead.
fn strip_defaults(schema: &mut JSONSchemaProps) {
    schema.default = None;
    let children = schema.properties.iter_mut().flat_map(|p| p.values_mut());
    for child in children {
        strip_defaults(child);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        strip_defaults(items);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        strip_defaults(extra);
    }
}

/// The CRDs as one multi-document YAML stream, exactly as committed under `crds/`.
pub fn to_yaml(crds: &[CustomResourceDefinition]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(crd)?);
    }
    Ok(out)
}

/// File name under `crds/` for one CRD: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_schemas_carry_no_defaults() {
        let yaml = to_yaml(&all()).unwrap();
        assert!(!yaml.contains("default:"), "a default: slipped into the CRDs");
    }

    fn rules_of(schema: &JSONSchemaProps) -> Vec<String> {
        schema.x_kubernetes_validations.iter().flatten().map(|v| v.rule.clone()).collect()
    }

    fn spec_of(crd: &CustomResourceDefinition) -> JSONSchemaProps {
        let schema = crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap();
        schema.properties.as_ref().unwrap()["spec"].clone()
    }

    /// The subject rules guard every RoleBinding the operator writes: they must be
    /// on owners and readers of all three kinds, not only where a test looks.
    #[test]
    fn every_subject_list_refuses_system_identities_and_bad_service_accounts() {
        for crd in all() {
            let spec = spec_of(&crd);
            for list in ["owners", "readers"] {
                let field = &spec.properties.as_ref().unwrap()[list];
                assert_eq!(field.max_items, Some(100), "{} {list}", crd.spec.names.kind);
                let Some(JSONSchemaPropsOrArray::Schema(items)) = &field.items else { panic!("{list} has no items") };
                let rules = rules_of(items).join("\n");
                for needle in ["startsWith('system:')", formats::DNS_SUBDOMAIN, "has(self.__namespace__)"] {
                    assert!(rules.contains(needle), "{} {list} lacks {needle}: {rules}", crd.spec.names.kind);
                }
                let namespace = &items.properties.as_ref().unwrap()["namespace"];
                assert!(rules_of(namespace).join("").contains(formats::DNS_LABEL), "{} {list}", crd.spec.names.kind);
            }
        }
    }

    #[test]
    fn short_names_avoid_argo_cd_and_core_kinds() {
        let taken = ["app", "apps", "application", "applications", "org", "group", "groups", "grp", "ns"];
        for crd in all() {
            let names = crd.spec.names;
            assert_eq!(names.categories, Some(vec!["payi".to_string()]));
            for short in names.short_names.unwrap_or_default() {
                assert!(!taken.contains(&short.as_str()), "{short} collides with a well-known name");
            }
        }
    }
}
