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
use super::status;
use crate::conditions::{self, Outcome, reason};
use crate::crd::{Application, ApplicationStatus, Group, Organization};
use crate::error::{Error, Result};
use crate::key::{self, ApiKey, MintError};
use crate::namespace_policy;

/// Data key the workload sees as `$PAYI_API_KEY` through `envFrom`.
pub const API_KEY_FIELD: &str = "PAYI_API_KEY";
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

/// Why a new key is minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintCause {
    FirstIssue,
    SecretMissing,
    KeyMismatch,
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
    pub minted: Option<MintCause>,
}

pub async fn reconcile(app: Arc<Application>, ctx: Arc<Context>) -> Result<Action> {
    ctx.stores.wait_until_ready().await;
    let inputs = gather(app, &ctx).await?;
    let mut plan = decide(&inputs, &now(), &mut ApiKey::mint)?;
    let inputs = if plan.minted.is_some() {
        // A mint replaces the key workloads use: confirm it against a fresh read of
        // the Application, since the cached status may predate our last write.
        let fresh = refetch(&inputs.app, &ctx).await?;
        let inputs = Inputs { app: Arc::new(fresh), ..inputs };
        plan = decide(&inputs, &now(), &mut ApiKey::mint)?;
        inputs
    } else {
        inputs
    };
    apply(&inputs.app, plan, &ctx).await?;
    Ok(Action::await_change())
}

pub(super) fn now() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    // The API server stores whole seconds; matching that keeps comparisons stable.
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
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

    let (outcome, secret, minted) = match parents.problem {
        Some(problem) => (problem, None, None),
        None => match secret_state(app, inputs.secret.as_ref()) {
            SecretState::Foreign => (foreign_secret(app), None, None),
            state => {
                let (write, minted) = plan_key(app, &state, parents.base_url.as_deref(), &mut status, now, mint)?;
                let message = format!("API key is in Secret {}", app.key_secret_name());
                (Outcome::ready(reason::KEY_ISSUED, message), write, minted)
            }
        },
    };

    status.observed_generation = app.metadata.generation;
    status.conditions =
        conditions::merge(&previous.conditions, &conditions::with_kstatus(&outcome), app.metadata.generation, now);
    let mut notes = Note::ready_transition(&previous.conditions, &outcome);
    if let Some(cause) = minted {
        notes.push(mint_note(app, cause, status.key_fingerprint.as_deref().unwrap_or_default()));
    }
    Ok(Plan { secret, status, notes, minted })
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
    /// Ours, with the key it holds (if any, and if it is text).
    Owned {
        secret: &'a Secret,
        key: Option<String>,
    },
}

fn secret_state<'a>(app: &Application, secret: Option<&'a Secret>) -> SecretState<'a> {
    let Some(secret) = secret else {
        return SecretState::Missing;
    };
    let ours =
        secret.owner_references().iter().any(|r| r.controller == Some(true) && Some(&r.uid) == app.uid().as_ref());
    if !ours {
        return SecretState::Foreign;
    }
    let key = secret
        .data
        .as_ref()
        .and_then(|d| d.get(API_KEY_FIELD))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|k| !k.is_empty());
    SecretState::Owned { secret, key }
}

fn foreign_secret(app: &Application) -> Outcome {
    let message = format!(
        "Secret {:?} already exists and is not managed by this Application; it is left untouched. \
         Delete it or set spec.keySecret.name to another name",
        app.key_secret_name()
    );
    Outcome::not_ready(reason::SECRET_CONFLICT, message)
}

/// Keeps the recorded key when the Secret still holds it, otherwise mints one.
/// Fills the key fields of `status`.
fn plan_key(
    app: &Application,
    state: &SecretState,
    base_url: Option<&str>,
    status: &mut ApplicationStatus,
    now: &Time,
    mint: &mut dyn FnMut() -> Result<ApiKey, MintError>,
) -> Result<(Option<SecretWrite>, Option<MintCause>), MintError> {
    let recorded = status.key_fingerprint.clone();
    let (existing, current_key) = match state {
        SecretState::Owned { secret, key } => (Some(*secret), key.clone()),
        _ => (None, None),
    };
    let cause = match (&current_key, &recorded) {
        (None, None) if existing.is_none() => Some(MintCause::FirstIssue),
        (None, Some(_)) if existing.is_none() => Some(MintCause::SecretMissing),
        (None, _) => Some(MintCause::KeyMismatch),
        // Our own Secret but no record (status lost, or first write not yet seen): adopt it.
        (Some(_), None) => None,
        (Some(k), Some(fp)) if &key::fingerprint(k) != fp => Some(MintCause::KeyMismatch),
        (Some(_), Some(_)) => None,
    };

    status.key_secret_name = Some(app.key_secret_name());
    let key_value = match cause {
        Some(_) => {
            let key = mint()?;
            status.key_fingerprint = Some(key.fingerprint());
            status.key_created_at = Some(now.clone());
            key.expose().to_string()
        }
        None => {
            let k = current_key.unwrap_or_default();
            status.key_fingerprint = Some(key::fingerprint(&k));
            if status.key_created_at.is_none() {
                status.key_created_at = existing.and_then(|s| s.metadata.creation_timestamp.clone());
            }
            k
        }
    };
    let desired = desired_secret(app, &key_value, base_url);
    let write = match existing {
        Some(current) if cause.is_none() && in_sync(current, &desired) => None,
        Some(_) => Some(SecretWrite { secret: desired, create: false }),
        None => Some(SecretWrite { secret: desired, create: true }),
    };
    Ok((write, cause))
}

/// The Secret as this operator wants it: key, optional base URL, the template's
/// labels and annotations, and a controller reference so deletion cascades.
pub fn desired_secret(app: &Application, key: &str, base_url: Option<&str>) -> Secret {
    let template = app.spec.key_secret.clone().unwrap_or_default();
    let mut labels = template.labels;
    labels.insert(MANAGED_BY_LABEL.into(), MANAGER.into());
    labels.insert(APPLICATION_LABEL.into(), app.name_any());
    let mut data = BTreeMap::from([(API_KEY_FIELD.to_string(), ByteString(key.as_bytes().to_vec()))]);
    if let Some(url) = base_url {
        data.insert(BASE_URL_FIELD.into(), ByteString(url.as_bytes().to_vec()));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(app.key_secret_name()),
            namespace: app.namespace(),
            labels: Some(labels),
            annotations: (!template.annotations.is_empty()).then_some(template.annotations),
            owner_references: controller_reference(app).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
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

fn mint_note(app: &Application, cause: MintCause, fingerprint: &str) -> Note {
    let secret = app.key_secret_name();
    match cause {
        MintCause::FirstIssue => {
            Note::normal(reason::KEY_MINTED, format!("minted API key {fingerprint} into Secret {secret}"))
        }
        MintCause::SecretMissing => Note::warning(
            reason::KEY_REPAIRED,
            format!("Secret {secret} was deleted; minted a new API key {fingerprint}"),
        ),
        MintCause::KeyMismatch => Note::warning(
            reason::KEY_REPAIRED,
            format!("Secret {secret} no longer held the recorded key; minted a new API key {fingerprint}"),
        ),
    }
}

async fn apply(app: &Application, plan: Plan, ctx: &Context) -> Result<()> {
    let namespace = app.namespace().unwrap_or_default();
    let mut plan = plan;
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
    }
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &namespace);
    status::write_status(&api, app, app.status.as_ref(), &plan.status).await?;
    count_key_events(&plan, ctx);
    ctx.publish(app, &plan.notes).await;
    Ok(())
}

fn count_key_events(plan: &Plan, ctx: &Context) {
    let fingerprint = plan.status.key_fingerprint.as_deref().unwrap_or_default();
    match plan.minted {
        Some(MintCause::FirstIssue) => {
            ctx.metrics.key_event("minted");
            tracing::info!(fingerprint, "minted API key");
        }
        Some(cause) => {
            ctx.metrics.key_event("repaired");
            tracing::warn!(fingerprint, ?cause, "replaced API key");
        }
        None => {}
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
