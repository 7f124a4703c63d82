//! Application reconciler: validate the parent chain, keep one key in the
//! Application's Secret, report the outcome in status.
//!
//! `gather` reads the caches (and the Secret, uncached, so a repair decision is
//! never made on stale data), `decide` is pure, `apply` writes only what differs.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::context::{Context, MANAGER, Note};
use super::grants;
use super::keyring::{self, Found, Keyring};
use super::now;
use super::status;
use crate::access::{self, Grant};
use crate::conditions::{self, Outcome, reason};
use crate::crd::{Application, ApplicationStatus, Group, Organization};
use crate::error::{Error, Result};
use crate::faults;
use crate::key::{ApiKey, MintError};
use crate::namespace_policy;
use crate::rotation::{self, PREVIOUS_EXPIRES_ANNOTATION, ROTATION_ID_ANNOTATION};

pub use super::keyring::{API_KEY_FIELD, MintCause, Move, PREVIOUS_KEY_FIELD};
/// Data key for the Organization's `baseURL`, present only when it is set.
pub const BASE_URL_FIELD: &str = "PAYI_BASE_URL";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const APPLICATION_LABEL: &str = "payi.io/application";

/// Everything one decision needs, read before deciding.
pub struct Inputs {
    pub app: Arc<Application>,
    pub group: Option<Arc<Group>>,
    pub organization: Option<Arc<Organization>>,
    pub namespace_labels: BTreeMap<String, String>,
    /// The Secret named by `spec.keySecret.name`, whoever owns it.
    pub secret: Option<Secret>,
}

/// The Secret to write. Holds key material: deliberately not `Debug`.
pub struct SecretWrite {
    pub secret: Secret,
    /// No Secret of that name exists: create it, never overwrite.
    pub create: bool,
}

/// The outcome of [`decide`].
pub struct Plan {
    pub secret: Option<SecretWrite>,
    pub status: ApplicationStatus,
    pub notes: Vec<Note>,
    /// What happened to the keys; `None` when the Application is not valid.
    pub key_move: Option<Move>,
    /// When to look again without a watch event: a previous key expiring or a rotation due.
    pub requeue_after: Option<std::time::Duration>,
    /// The access objects to keep; `None` leaves existing ones untouched.
    pub access: Option<Vec<Grant>>,
}

impl Plan {
    pub fn changes_key(&self) -> bool {
        self.key_move.as_ref().is_some_and(Move::changes_key)
    }

    pub fn minted(&self) -> Option<MintCause> {
        match self.key_move {
            Some(Move::Mint(cause)) => Some(cause),
            _ => None,
        }
    }
}

pub async fn reconcile(app: Arc<Application>, ctx: Arc<Context>) -> Result<Action> {
    ctx.stores.wait_until_ready().await;
    let inputs = gather(app, &ctx).await?;
    let mut plan = decide(&inputs, &now(), &mut ApiKey::mint)?;
    let inputs = if plan.changes_key() {
        // This replaces the key workloads use: confirm it against a fresh read of
        // the Application, since the cached status may predate our last write.
        let fresh = refetch(&inputs.app, &ctx).await?;
        let inputs = Inputs { app: Arc::new(fresh), ..inputs };
        plan = decide(&inputs, &now(), &mut ApiKey::mint)?;
        inputs
    } else {
        inputs
    };
    let requeue = plan.requeue_after;
    apply(&inputs.app, plan, &ctx).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

async fn gather(app: Arc<Application>, ctx: &Context) -> Result<Inputs> {
    let namespace = app.namespace().ok_or(Error::MissingField("Application", "metadata.namespace"))?;
    let group = ctx.stores.group(&app.spec.group_ref.name);
    let organization = group.as_ref().and_then(|g| ctx.stores.organization(&g.spec.organization_ref.name));
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret_name = app.key_secret_name();
    let secret = secrets
        .get_opt(&secret_name)
        .await
        .map_err(Error::kube(format!("reading Secret {namespace}/{secret_name}")))?;
    Ok(Inputs { namespace_labels: ctx.stores.namespace_labels(&namespace), app, group, organization, secret })
}

async fn refetch(app: &Application, ctx: &Context) -> Result<Application> {
    let namespace = app.namespace().unwrap_or_default();
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &namespace);
    api.get(&app.name_any())
        .await
        .map_err(Error::kube(format!("re-reading Application {namespace}/{}", app.name_any())))
}

/// Decides the Secret, status and Events for one Application. Pure: the clock
/// and the key source are passed in.
pub fn decide(
    inputs: &Inputs,
    now: &Time,
    mint: &mut dyn FnMut() -> Result<ApiKey, MintError>,
) -> Result<Plan, MintError> {
    let app = inputs.app.as_ref();
    let previous = app.status.clone().unwrap_or_default();
    let parents = resolve_parents(inputs);
    let mut status = ApplicationStatus {
        group: parents.group.clone(),
        organization: parents.organization.clone(),
        ..previous.clone()
    };

    let access = parents.problem.is_none().then(|| {
        let grants = access::effective(app, inputs.group.as_deref(), inputs.organization.as_deref());
        access::desired(app, &grants, &managed_labels(app))
    });
    if let Some(access) = &access {
        status.access_roles = access.iter().filter_map(|g| g.role.metadata.name.clone()).collect();
    }
    let (outcome, keys) = match parents.problem {
        Some(problem) => (problem, None),
        None => match secret_state(app, inputs.secret.as_ref()) {
            SecretState::Foreign => (foreign_secret(app), None),
            state => {
                let keys = plan_key(app, &state, parents.base_url.as_deref(), &mut status, now, mint)?;
                let message = format!("API key is in Secret {}", app.key_secret_name());
                (Outcome::ready(reason::KEY_ISSUED, message), Some(keys))
            }
        },
    };

    status.observed_generation = app.metadata.generation;
    status.conditions =
        conditions::merge(&previous.conditions, &conditions::with_kstatus(&outcome), app.metadata.generation, now);
    let mut notes = Note::ready_transition(&previous.conditions, &outcome);
    let Some(keys) = keys else {
        return Ok(Plan { secret: None, status, notes, key_move: None, requeue_after: None, access });
    };
    notes.extend(keys.notes);
    let requeue_after = next_deadline(&status, now);
    Ok(Plan { secret: keys.write, status, notes, key_move: Some(keys.chosen), requeue_after, access })
}

/// The earliest of the previous key's expiry and the next scheduled rotation.
fn next_deadline(status: &ApplicationStatus, now: &Time) -> Option<std::time::Duration> {
    let expiries = status.keys.iter().filter_map(|k| k.expires_at.as_ref());
    let scheduled = status.rotation.as_ref().and_then(|r| r.next_rotation_at.as_ref());
    let earliest = expiries.chain(scheduled).min_by_key(|t| t.0)?;
    // A second late rather than early, so the deadline has surely passed.
    Some(rotation::until(now, earliest) + std::time::Duration::from_secs(1))
}

struct Parents {
    group: Option<String>,
    organization: Option<String>,
    base_url: Option<String>,
    problem: Option<Outcome>,
}

/// Walks Application -> Group -> Organization; the first missing link or
/// refused namespace becomes the reason the Application is not Ready.
fn resolve_parents(inputs: &Inputs) -> Parents {
    let app = inputs.app.as_ref();
    let group_name = &app.spec.group_ref.name;
    let mut parents = Parents { group: None, organization: None, base_url: None, problem: None };
    let Some(group) = &inputs.group else {
        let message = format!("Group {group_name:?} does not exist");
        parents.problem = Some(Outcome::not_ready(reason::GROUP_NOT_FOUND, message));
        return parents;
    };
    parents.group = Some(group_name.clone());
    let org_name = &group.spec.organization_ref.name;
    let Some(organization) = &inputs.organization else {
        let message = format!("Organization {org_name:?} of Group {group_name:?} does not exist");
        parents.problem = Some(Outcome::not_ready(reason::ORGANIZATION_NOT_FOUND, message));
        return parents;
    };
    parents.organization = Some(org_name.clone());
    parents.base_url = organization.spec.base_url.clone();
    let namespace = app.namespace().unwrap_or_default();
    let policy = group.spec.namespace_policy.as_ref();
    if let Err(refusal) = namespace_policy::admits(policy, &namespace, &inputs.namespace_labels) {
        let message = format!("Group {group_name:?} does not admit namespace {namespace:?}: {}", refusal.0);
        parents.problem = Some(Outcome::not_ready(reason::NAMESPACE_NOT_ALLOWED, message));
    }
    parents
}

enum SecretState<'a> {
    Missing,
    Foreign,
    /// Ours: controlled by this Application.
    Owned {
        secret: &'a Secret,
    },
}

fn secret_state<'a>(app: &Application, secret: Option<&'a Secret>) -> SecretState<'a> {
    let Some(secret) = secret else {
        return SecretState::Missing;
    };
    let ours =
        secret.owner_references().iter().any(|r| r.controller == Some(true) && Some(&r.uid) == app.uid().as_ref());
    if ours { SecretState::Owned { secret } } else { SecretState::Foreign }
}

fn foreign_secret(app: &Application) -> Outcome {
    let message = format!(
        "Secret {:?} already exists and is not managed by this Application; it is left untouched. \
         Delete it or set spec.keySecret.name to another name",
        app.key_secret_name()
    );
    Outcome::not_ready(reason::SECRET_CONFLICT, message)
}

/// The keys decided for a valid Application, and the Secret write they need.
struct KeyPlan {
    chosen: Move,
    write: Option<SecretWrite>,
    notes: Vec<Note>,
}

/// Chooses and carries out the key move, filling the key fields of `status`.
fn plan_key(
    app: &Application,
    state: &SecretState,
    base_url: Option<&str>,
    status: &mut ApplicationStatus,
    now: &Time,
    mint: &mut dyn FnMut() -> Result<ApiKey, MintError>,
) -> Result<KeyPlan, MintError> {
    let existing = match state {
        SecretState::Owned { secret } => Some(*secret),
        _ => None,
    };
    let found = existing.map(Found::in_secret).unwrap_or_default();
    let chosen = keyring::choose(app, status, &found, existing.is_some(), now);
    let ring = keyring::carry_out(app, &chosen, &found, status, now, mint)?;
    status.key_secret_name = Some(app.key_secret_name());
    let notes = keyring::notes(app, &chosen, &found, &ring);
    let desired = desired_secret(app, &ring, base_url);
    let write = match existing {
        Some(current) if !chosen.changes_key() && in_sync(current, &desired) => None,
        Some(_) => Some(SecretWrite { secret: desired, create: false }),
        None => Some(SecretWrite { secret: desired, create: true }),
    };
    Ok(KeyPlan { chosen, write, notes })
}

/// The Secret as this operator wants it: key, optional base URL, the template's
/// labels and annotations, and a controller reference so deletion cascades.
pub fn desired_secret(app: &Application, ring: &Keyring, base_url: Option<&str>) -> Secret {
    let template = app.spec.key_secret.clone().unwrap_or_default();
    let mut labels = template.labels;
    labels.extend(managed_labels(app));
    let bytes = |v: &str| ByteString(v.as_bytes().to_vec());
    let mut data = BTreeMap::from([(API_KEY_FIELD.to_string(), bytes(&ring.current))]);
    let mut annotations = template.annotations;
    if let Some((previous, expires)) = &ring.previous {
        data.insert(PREVIOUS_KEY_FIELD.into(), bytes(previous));
        annotations.insert(PREVIOUS_EXPIRES_ANNOTATION.into(), expires.0.to_string());
    }
    if let Some(id) = &ring.rotation_id {
        annotations.insert(ROTATION_ID_ANNOTATION.into(), id.clone());
    }
    if let Some(url) = base_url {
        data.insert(BASE_URL_FIELD.into(), bytes(url));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(app.key_secret_name()),
            namespace: app.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: controller_reference(app).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Labels on everything this operator creates for an Application.
fn managed_labels(app: &Application) -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY_LABEL.into(), MANAGER.into()), (APPLICATION_LABEL.into(), app.name_any())])
}

fn controller_reference(app: &Application) -> Option<OwnerReference> {
    let mut reference = app.controller_owner_ref(&())?;
    reference.block_owner_deletion = Some(true);
    Some(reference)
}

/// Whether `current` already carries everything `desired` asks for. Extra labels
/// or annotations added by others are left alone.
fn in_sync(current: &Secret, desired: &Secret) -> bool {
    let subset = |want: &Option<BTreeMap<String, String>>, have: &Option<BTreeMap<String, String>>| {
        want.iter().flatten().all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    subset(&desired.metadata.labels, &current.metadata.labels)
        && subset(&desired.metadata.annotations, &current.metadata.annotations)
        && current.data == desired.data
}

async fn apply(app: &Application, plan: Plan, ctx: &Context) -> Result<()> {
    let namespace = app.namespace().unwrap_or_default();
    let mut plan = plan;
    let key_change = plan.changes_key();
    if key_change {
        faults::crash_point(faults::BEFORE_SECRET_WRITE);
    }
    if let Some(write) = plan.secret.take()
        && let Err(rejection) = write_secret(&namespace, write, ctx).await?
    {
        // The API server refused the Secret (e.g. an invalid template label):
        // user input the schema could not check, so report it, do not retry.
        let outcome = Outcome::not_ready(reason::SECRET_REJECTED, rejection);
        let previous = app.status.clone().unwrap_or_default();
        plan.notes = Note::ready_transition(&previous.conditions, &outcome);
        plan.status = ApplicationStatus {
            conditions: conditions::merge(
                &previous.conditions,
                &conditions::with_kstatus(&outcome),
                app.metadata.generation,
                &now(),
            ),
            ..previous
        };
        plan.status.observed_generation = app.metadata.generation;
        plan.key_move = None;
    }
    if key_change {
        faults::crash_point(faults::AFTER_SECRET_WRITE);
    }
    if let Some(grants) = &plan.access {
        let before = app.status.as_ref().map(|s| s.access_roles.as_slice()).unwrap_or_default();
        grants::sync(&namespace, grants, before, ctx).await?;
    }
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &namespace);
    status::write_status(&api, app, app.status.as_ref(), &plan.status).await?;
    if key_change {
        faults::crash_point(faults::AFTER_STATUS_WRITE);
    }
    count_key_events(&plan, ctx);
    ctx.publish(app, &plan.notes).await;
    Ok(())
}

fn count_key_events(plan: &Plan, ctx: &Context) {
    let fingerprint = plan.status.key_fingerprint.as_deref().unwrap_or_default();
    match &plan.key_move {
        Some(Move::Mint(MintCause::FirstIssue)) => {
            ctx.metrics.key_event("minted");
            tracing::info!(fingerprint, "minted API key");
        }
        Some(Move::Mint(cause)) => {
            ctx.metrics.key_event("repaired");
            tracing::warn!(fingerprint, ?cause, "replaced API key");
        }
        Some(Move::Rotate(trigger) | Move::Complete(trigger)) => {
            ctx.metrics.key_event("rotated");
            tracing::info!(fingerprint, rotation = %trigger.id, "rotated API key");
        }
        Some(Move::Keep) | None => {}
    }
    if plan.notes.iter().any(|n| n.reason == reason::SECRET_CONFLICT) {
        ctx.metrics.key_event("conflict");
    }
}

/// Creates or updates the key Secret. `Ok(Err(message))` is a rejection of the
/// object itself; transport and permission failures are errors and retry.
async fn write_secret(namespace: &str, write: SecretWrite, ctx: &Context) -> Result<Result<(), String>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let name = write.secret.name_any();
    let result = if write.create {
        // POST fails on an existing Secret, so a Secret created by someone else
        // since we looked is never overwritten.
        api.create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &write.secret)
            .await
            .map(drop)
    } else {
        let mut body = write.secret;
        body.metadata.managed_fields = None;
        let patch = serde_json::to_value(&body).map(|mut v| {
            v["apiVersion"] = json!("v1");
            v["kind"] = json!("Secret");
            v
        });
        let patch = patch.unwrap_or_default();
        api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(patch)).await.map(drop)
    };
    match result {
        Ok(()) => Ok(Ok(())),
        Err(kube::Error::Api(status)) if status.code == 422 || status.code == 400 => {
            Ok(Err(format!("the API server rejected Secret {name}: {}", status.message)))
        }
        Err(source) => Err(Error::Kube { action: format!("writing Secret {namespace}/{name}"), source }),
    }
}

#[cfg(test)]
#[path = "application_tests.rs"]
mod tests;
