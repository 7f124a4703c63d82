//! Keeps the access Roles and RoleBindings of one Application as decided,
//! touching only objects the Application controls.

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::core::Status;
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::{Context, Stores};
use crate::access::{self, AccessObject, Change, Grant};
use crate::conditions::reason;
use crate::crd::Application;
use crate::error::{Error, Result};
use crate::key_secret::{self, MANAGER};

/// An access object the API server refused, or one of our names taken by someone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: &'static str,
    pub message: String,
}

/// Whether a failed write was a refusal of the object itself (validation,
/// admission webhook or policy, quota) rather than of the operator's own
/// permissions, which RBAC words as "cannot <verb> resource".
pub fn is_refusal(status: &Status) -> bool {
    match status.code {
        400 | 422 => true,
        403 => !status.message.contains(" cannot "),
        _ => false,
    }
}

/// Makes the access objects of `app` match `grants`. `Ok(Err(_))` is a refusal
/// to report; errors are the operator's own and retry.
pub async fn sync(app: &Application, grants: &[Grant], ctx: &Context) -> Result<Result<(), Refused>> {
    let namespace = app.namespace().unwrap_or_default();
    let roles: Vec<Role> = grants.iter().map(|g| g.role.clone()).collect();
    let bindings: Vec<RoleBinding> = grants.iter().map(|g| g.binding.clone()).collect();
    let api = Api::namespaced(ctx.client.clone(), &namespace);
    if let Err(refused) = sync_kind(app, &api, &roles, &ctx.stores.roles, ctx).await? {
        return Ok(Err(refused));
    }
    let api = Api::namespaced(ctx.client.clone(), &namespace);
    sync_kind(app, &api, &bindings, &ctx.stores.bindings, ctx).await
}

async fn sync_kind<K>(
    app: &Application,
    api: &Api<K>,
    wanted: &[K],
    cache: &Store<K>,
    ctx: &Context,
) -> Result<Result<(), Refused>>
where
    K: AccessObject + Resource<DynamicType = ()> + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let seen = Stores::access_of(cache, app);
    for change in access::changes(app, wanted, &seen) {
        ctx.may_write()?;
        let outcome = match change {
            Change::Create(obj) => create(app, api, obj).await?,
            Change::Replace(obj) => write(api, obj.name_any(), api.replace(&obj.name_any(), &params(), &obj).await)?,
            Change::Delete { name, uid } => {
                let precondition = Preconditions { uid: Some(uid), resource_version: None };
                let params = DeleteParams { preconditions: Some(precondition), ..DeleteParams::default() };
                match api.delete(&name, &params).await {
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
                    other => other.map(drop).map_err(Error::kube(format!("deleting {} {name}", K::kind(&())))),
                }?;
                Ok(())
            }
            Change::Conflict(name) => Err(conflict::<K>(&name)),
        };
        if let Err(refused) = outcome {
            return Ok(Err(refused));
        }
    }
    Ok(Ok(()))
}

fn params() -> PostParams {
    PostParams { field_manager: Some(MANAGER.into()), ..PostParams::default() }
}

/// POSTs `obj`; if the name is taken, it is ours only when it is controlled by `app`.
async fn create<K>(app: &Application, api: &Api<K>, obj: K) -> Result<Result<(), Refused>>
where
    K: AccessObject + Resource<DynamicType = ()> + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = obj.name_any();
    match api.create(&params(), &obj).await {
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        other => return write(api, name, other),
    }
    let existing = api.get(&name).await.map_err(Error::kube(format!("reading {} {name}", K::kind(&()))))?;
    if !key_secret::controlled_by(&existing, app) {
        return Ok(Err(conflict::<K>(&name)));
    }
    if existing.same_grant(&obj) {
        return Ok(Ok(()));
    }
    let next = existing.with_grant_of(&obj);
    write(api, name.clone(), api.replace(&name, &params(), &next).await)
}

fn write<K: Resource<DynamicType = ()>>(
    _api: &Api<K>,
    name: String,
    result: kube::Result<K>,
) -> Result<Result<(), Refused>> {
    match result {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(status)) if is_refusal(&status) => Ok(Err(Refused {
            reason: reason::ACCESS_REJECTED,
            message: format!("the API server refused {} {name}: {}", K::kind(&()), status.message),
        })),
        Err(source) => Err(Error::Kube { action: format!("writing {} {name}", K::kind(&())), source }),
    }
}

fn conflict<K: Resource<DynamicType = ()>>(name: &str) -> Refused {
    Refused {
        reason: reason::ACCESS_CONFLICT,
        message: format!(
            "{} {name:?} already exists and is not managed by this Application; it is left untouched and no \
             access is granted through it. Delete it or rename the Application",
            K::kind(&())
        ),
    }
}
