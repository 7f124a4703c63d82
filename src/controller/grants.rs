//! Keeps the access Roles and RoleBindings of one Application as decided.

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::context::{Context, MANAGER};
use crate::access::{self, Grant};
use crate::error::{Error, Result};

/// Makes the access Roles and RoleBindings match `grants`: reads each, applies
/// only what differs, deletes those no longer wanted.
pub async fn sync(namespace: &str, grants: &[Grant], before: &[String], ctx: &Context) -> Result<()> {
    let roles: Api<Role> = Api::namespaced(ctx.client.clone(), namespace);
    let bindings: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), namespace);
    for grant in grants {
        ensure(&roles, &grant.role, access::same_role).await?;
        ensure(&bindings, &grant.binding, access::same_binding).await?;
    }
    let wanted: Vec<&str> = grants.iter().filter_map(|g| g.role.metadata.name.as_deref()).collect();
    for name in before.iter().filter(|n| !wanted.contains(&n.as_str())) {
        let gone = |r: Result<_, kube::Error>| match r {
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            other => other.map(drop).map_err(Error::kube(format!("deleting access {namespace}/{name}"))),
        };
        gone(bindings.delete(name, &Default::default()).await.map(drop))?;
        gone(roles.delete(name, &Default::default()).await.map(drop))?;
    }
    Ok(())
}

/// Applies `desired` unless the object already matches it by `same`.
async fn ensure<K>(api: &Api<K>, desired: &K, same: fn(&K, &K) -> bool) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = desired.name_any();
    let current = api.get_opt(&name).await.map_err(Error::kube(format!("reading {} {name}", K::kind(&()))))?;
    if current.as_ref().is_some_and(|c| same(c, desired)) {
        return Ok(());
    }
    let mut body = serde_json::to_value(desired).unwrap_or_default();
    body["apiVersion"] = json!(K::api_version(&()));
    body["kind"] = json!(K::kind(&()));
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(body))
        .await
        .map_err(Error::kube(format!("writing {} {name}", K::kind(&()))))?;
    Ok(())
}
