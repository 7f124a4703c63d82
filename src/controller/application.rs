//! Application reconciler: validate the parent chain, keep one key in the
//! Application's Secret, grant access to it, report the outcome in status.
//!
//! `gather` reads the caches (and the Secret, uncached, so a repair decision is
//! never made on stale data); `decide` is pure; `reconcile` carries the plan
//! out: access objects, then the Secret, then status, then Events. What the API
//! server refuses becomes an input to `decide` again, never a second decision.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::context::{Context, Note, SecretSummary};
use super::grants::{self, Refused};
use super::parent::CHILDREN_FINALIZER;
use super::{now, object_key, status};
use crate::access::{self, Grant};
use crate::conditions::{self, Outcome, reason};
use crate::crd::{Application, ApplicationStatus, Group, Organization};
use crate::error::{Error, Result};
use crate::faults;
use crate::key::{ApiKey, MintError};
use crate::key_secret::{self, Found, MANAGER};
use crate::keyring::{self, KeyStatus};
use crate::namespace_policy;

pub use crate::keyring::{MintCause, Move};

/// Everything one decision needs, read before deciding.
pub struct Inputs {
    pub app: Arc<Application>,
    pub group: Option<Arc<Group>>,
    pub organization: Option<Arc<Organization>>,
    pub namespace_labels: BTreeMap<String, String>,
    /// The Secret named by `spec.keySecret.name`, whoever owns it, as read now.
    /// `None` is "not found" unless `secret_unchanged`.
    pub secret: Option<Secret>,
    /// The Secret was not read because the watched metadata proves it is exactly
    /// what status records ([`known_unchanged`]).
    pub secret_unchanged: bool,
    /// What the API server refused earlier in this reconcile.
    pub refused: Refusals,
}

/// Writes the API server refused: user input the schema could not check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refusals {
    pub secret: Option<String>,
    pub access: Option<Refused>,
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
    /// The access objects to keep (none: delete ours).
    pub access: Vec<Grant>,
    pub status: ApplicationStatus,
    pub notes: Vec<Note>,
    /// What happened to the keys; `None` when no key is handled.
    pub key_move: Option<Move>,
    /// When to look again without a watch event: a previous key expiring or a rotation due.
    pub requeue_after: Option<Duration>,
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
    let key = object_key(app.as_ref());
    let namespace = app.namespace().unwrap_or_default();
    if app.metadata.deletion_timestamp.is_some() || ctx.stores.namespace_terminating(&namespace) {
        // Going away: the garbage collector removes the Secret and access objects with it.
        return Ok(Action::await_change());
    }
    let mut inputs = gather(app, &ctx).await?;
    // A first key replaces nothing; any other key change is confirmed first.
    let first = Some(Move::Mint(MintCause::FirstIssue));
    let planned = planned_move(&inputs, &now());
    if planned.as_ref().is_some_and(|m| m.changes_key() && Some(m) != first.as_ref()) {
        // This replaces the key workloads use: confirm it against a fresh read of
        // the Application, since the cached status may predate our last write.
        tracing::debug!(?planned, "re-reading the Application before a key change");
        inputs.app = Arc::new(refetch(&inputs.app, &ctx).await?);
    }
    let mut fresh = FreshKey::default();
    let plan = carry_out(&mut inputs, &mut fresh, &ctx).await?;
    if waits_quietly(&inputs.app, &plan, &ctx) {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let app = inputs.app.as_ref();
    let uid = app.uid().unwrap_or_default();
    if !ctx.written.is_pending(&uid, app.resource_version().as_deref(), &plan.status) {
        let api: Api<Application> = Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
        ctx.may_write()?;
        let version = status::write_status(&api, app, app.status.as_ref(), &plan.status).await?;
        ctx.written.remember(&uid, &plan.status, version.as_deref());
    }
    if plan.changes_key() {
        faults::crash_point(faults::AFTER_STATUS_WRITE);
    }
    count_key_events(&plan, &ctx);
    ctx.publish(inputs.app.as_ref(), &plan.notes).await;
    if inputs.refused != Refusals::default() {
        // Refused input does not fix itself quickly: look again, less and less often.
        return Ok(Action::requeue(ctx.backoff().failed(&key)));
    }
    ctx.backoff().succeeded(&key);
    Ok(plan.requeue_after.map_or_else(Action::await_change, Action::requeue))
}

/// A parent gets its deletion guard within a second of appearing; an Application
/// waiting for that is not worth a status write and an Event, unless the wait
/// lasts: the first 30 s of this replica, and of the Application, pass quietly.
fn waits_quietly(app: &Application, plan: &Plan, ctx: &Context) -> bool {
    const QUIET: Duration = Duration::from_secs(30);
    let waiting = conditions::find(&plan.status.conditions, conditions::READY)
        .is_some_and(|c| c.reason == reason::WAITING_FOR_PARENT);
    let created = app.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let young = created.is_none_or(|t| now().0.duration_since(t).as_secs() < QUIET.as_secs() as i64);
    waiting && (young || ctx.started.elapsed() < QUIET)
}

/// Decides and writes access objects and the Secret until nothing is refused
/// any more; returns the plan whose status should be recorded.
async fn carry_out(inputs: &mut Inputs, fresh: &mut FreshKey, ctx: &Context) -> Result<Plan> {
    // Each pass either succeeds or learns one new refusal (or that the Secret
    // appeared), so a handful of passes always settles.
    for _ in 0..4 {
        let plan = decide(inputs, &now(), &mut || fresh.get())?;
        let namespace = inputs.app.namespace().unwrap_or_default();
        if inputs.refused.access.is_none()
            && let Err(refused) = grants::sync(&inputs.app, &plan.access, ctx).await?
        {
            inputs.refused.access = Some(refused);
            continue;
        }
        let mut plan = plan;
        let Some(write) = plan.secret.as_ref() else {
            return Ok(plan);
        };
        if plan.changes_key() {
            faults::crash_point(faults::BEFORE_SECRET_WRITE);
        }
        match write_secret(&namespace, write, ctx).await? {
            Written::Done(version) => {
                if plan.changes_key() {
                    faults::crash_point(faults::AFTER_SECRET_WRITE);
                }
                plan.status.key_secret_version = version;
                return Ok(plan);
            }
            Written::Refused(message) => inputs.refused.secret = Some(message),
            Written::AppearedMeanwhile => inputs.secret = read_secret(&inputs.app, ctx).await?,
        }
    }
    Err(Error::Unsettled(object_key(inputs.app.as_ref())))
}

/// A key minted at most once per reconcile, however often `decide` runs.
#[derive(Default)]
struct FreshKey(Option<ApiKey>);

impl FreshKey {
    fn get(&mut self) -> Result<ApiKey, MintError> {
        if let Some(key) = &self.0 {
            return Ok(key.clone());
        }
        let key = ApiKey::mint()?;
        self.0 = Some(key.clone());
        Ok(key)
    }
}

async fn gather(app: Arc<Application>, ctx: &Context) -> Result<Inputs> {
    let namespace = app.namespace().ok_or(Error::MissingField("Application", "metadata.namespace"))?;
    let app = with_status_we_wrote(app, ctx);
    let group = ctx.stores.group(&app.spec.group_ref.name);
    let organization = group.as_ref().and_then(|g| ctx.stores.organization(&g.spec.organization_ref.name));
    let watched = ctx.stores.secrets.get(&namespace, &app.key_secret_name());
    let base_url = organization.as_ref().and_then(|o| o.spec.base_url.as_deref());
    let secret_unchanged = watched.as_ref().is_some_and(|w| known_unchanged(&app, w, base_url, &now()));
    // Never wrote a Secret and none is watched: create it without reading first;
    // the create fails on a Secret that exists after all, and then we read it.
    let never_written = watched.is_none() && app.status.as_ref().is_none_or(|s| s.key_secret_version.is_none());
    let secret = if secret_unchanged || never_written {
        None
    } else {
        let status = app.status.as_ref();
        tracing::debug!(
            watched = ?watched,
            recorded = ?status.and_then(|s| s.key_secret_version.as_deref()),
            "reading the key Secret: its watched metadata does not prove it unchanged"
        );
        read_secret(&app, ctx).await?
    };
    let namespace_labels = ctx.stores.namespace_labels(&namespace);
    Ok(Inputs { app, group, organization, namespace_labels, secret, secret_unchanged, refused: Refusals::default() })
}

/// The cached Application, with the status this replica wrote when the cache
/// has not caught up with that write yet: deciding from the older status would
/// mistake our own Secret for a change and read it again.
fn with_status_we_wrote(app: Arc<Application>, ctx: &Context) -> Arc<Application> {
    let uid = app.uid().unwrap_or_default();
    match ctx.written.newer_than(&uid, app.resource_version().as_deref()) {
        Some(status) => Arc::new(Application { status: Some(status), ..app.as_ref().clone() }),
        None => app,
    }
}

/// Whether the watched metadata of the key Secret proves it holds exactly what
/// status records and what the spec asks for now, so it need not be read: ours,
/// unchanged since we last wrote or read it, the same content digest, and no key
/// change due (a rotation needs the old key's value, an expiry a write).
pub fn known_unchanged(app: &Application, watched: &SecretSummary, base_url: Option<&str>, now: &Time) -> bool {
    let Some(status) = app.status.as_ref() else { return false };
    let (Some(version), Some(current)) = (&status.key_secret_version, &status.key_fingerprint) else {
        return false;
    };
    let ours = watched.controller.is_some() && watched.controller.as_deref() == app.uid().as_deref();
    let same_secret = status.key_secret_name.as_deref() == Some(app.key_secret_name().as_str());
    let rotation = status.rotation.clone().unwrap_or_default();
    let expiring = status.keys.iter().filter_map(|k| k.expires_at.as_ref()).any(|at| at.0 <= now.0);
    let previous = status.keys.iter().find(|k| k.secret_key == key_secret::PREVIOUS_KEY_FIELD);
    let previous = previous.and_then(|k| Some((k.fingerprint.as_str(), k.expires_at.as_ref()?)));
    let shape = key_secret::shape(app, current, previous, base_url);
    ours && same_secret
        && watched.is_version(version)
        && keyring::pending(app, &rotation, now).is_none()
        && !expiring
        && shape.matches(watched.content.as_deref())
}

async fn read_secret(app: &Application, ctx: &Context) -> Result<Option<Secret>> {
    let namespace = app.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = app.key_secret_name();
    secrets.get_opt(&name).await.map_err(Error::kube(format!("reading Secret {namespace}/{name}")))
}

async fn refetch(app: &Application, ctx: &Context) -> Result<Application> {
    let namespace = app.namespace().unwrap_or_default();
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &namespace);
    api.get(&app.name_any())
        .await
        .map_err(Error::kube(format!("re-reading Application {namespace}/{}", app.name_any())))
}

/// The key move `decide` would choose, without minting anything.
pub fn planned_move(inputs: &Inputs, now: &Time) -> Option<Move> {
    let app = inputs.app.as_ref();
    let parents = resolve_parents(inputs);
    if parents.problem.is_some() || inputs.refused.secret.is_some() {
        return None;
    }
    if inputs.secret_unchanged {
        return Some(Move::Keep);
    }
    let existing = match secret_state(app, inputs.secret.as_ref()) {
        SecretState::Foreign => return None,
        SecretState::Owned(secret) => Some(secret),
        SecretState::Missing | SecretState::Unchanged => None,
    };
    let found = existing.map(Found::in_secret).unwrap_or_default();
    let status = app.status.clone().unwrap_or_default();
    Some(keyring::choose(app, &status, &found, existing.is_some(), now))
}

/// Decides the Secret, access objects, status and Events for one Application.
/// Pure: the clock and the key source are passed in.
pub fn decide(
    inputs: &Inputs,
    now: &Time,
    mint: &mut dyn FnMut() -> Result<ApiKey, MintError>,
) -> Result<Plan, MintError> {
    let app = inputs.app.as_ref();
    let previous = app.status.clone().unwrap_or_default();
    let parents = resolve_parents(inputs);
    let state = match inputs.secret_unchanged {
        true => SecretState::Unchanged,
        false => secret_state(app, inputs.secret.as_ref()),
    };
    let (outcome, keys) = match (&parents.problem, &state, &inputs.refused.secret) {
        (Some(problem), _, _) => (problem.clone(), None),
        (None, SecretState::Foreign, _) => (foreign_secret(app), None),
        (None, _, Some(refusal)) => (Outcome::not_ready(reason::SECRET_REJECTED, refusal.clone()), None),
        (None, _, None) => {
            let keys = match state {
                SecretState::Unchanged => unchanged_key(&previous),
                _ => plan_key(app, &state, parents.base_url.as_deref(), &previous, now, mint)?,
            };
            let message = format!("API key is in Secret {}", app.key_secret_name());
            (Outcome::ready(reason::KEY_ISSUED, message), Some(keys))
        }
    };
    // Owners may read the Secret only once it is this Application's. Not while it is
    // being created: `gather` creates a never-written Secret without reading first,
    // and the name may turn out to be someone else's Secret. The Secret's watch
    // event reconciles again, and that pass grants it.
    let secret_is_ours = matches!(state, SecretState::Owned(_) | SecretState::Unchanged);
    let (group, organization) = match parents.inherit {
        true => (inputs.group.as_deref(), inputs.organization.as_deref()),
        false => (None, None),
    };
    let access = access::desired(app, &access::effective(app, group, organization), secret_is_ours);
    let outcome = match (&inputs.refused.access, outcome.status) {
        (Some(refused), true) => Outcome::not_ready(refused.reason, refused.message.clone()),
        _ => outcome,
    };

    // status.limits is the limits task's; carried (with its LimitsOk condition) while the
    // spec has limits (see controller/limits.rs). status.usage is the usage task's, carried
    // as it is by `..previous` below (see controller/usage.rs).
    let has_limits = !app.spec.limits.is_empty() || app.spec.use_cases.iter().any(|u| !u.limits.is_empty());
    let limits = previous.limits.clone().filter(|_| has_limits);
    let mut outcomes = conditions::with_kstatus(&outcome);
    outcomes.extend(crate::limits::status::limits_condition(limits.as_ref()));
    let mut status = ApplicationStatus {
        limits,
        group: parents.group.clone(),
        organization: parents.organization.clone(),
        observed_generation: app.metadata.generation,
        conditions: conditions::merge(&previous.conditions, &outcomes, app.metadata.generation, now),
        access_roles: access.iter().filter_map(|g| g.role.metadata.name.clone()).collect(),
        use_cases: Some(crate::use_case::published(app, outcome.status)),
        ..previous.clone()
    };
    let mut notes = Note::ready_transition(&previous.conditions, &outcome);
    let Some(keys) = keys else {
        return Ok(Plan { secret: None, access, status, notes, key_move: None, requeue_after: None });
    };
    notes.extend(keys.notes);
    let requeue_after = keyring::next_deadline(&keys.recorded, now);
    status.key_secret_name = Some(app.key_secret_name());
    // The version read now, when nothing is written; a write records its own (see `carry_out`).
    if let (SecretState::Owned(secret), None) = (&state, &keys.write) {
        status.key_secret_version = secret.resource_version();
    }
    keys.recorded.write_into(&mut status);
    Ok(Plan { secret: keys.write, access, status, notes, key_move: Some(keys.chosen), requeue_after })
}

struct Parents {
    group: Option<String>,
    organization: Option<String>,
    base_url: Option<String>,
    /// Why no key may be issued now, if anything.
    problem: Option<Outcome>,
    /// Whether the parents' owners and readers apply: both exist and admit the namespace.
    inherit: bool,
}

/// Walks Application -> Group -> Organization; the first missing link, refused
/// namespace, or parent without its deletion guard becomes the reason the
/// Application is not Ready.
fn resolve_parents(inputs: &Inputs) -> Parents {
    let app = inputs.app.as_ref();
    let group_name = &app.spec.group_ref.name;
    let mut parents = Parents { group: None, organization: None, base_url: None, problem: None, inherit: false };
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
        return parents;
    }
    parents.inherit = true;
    parents.problem = unprotected_parent(group, organization, has_key(app));
    parents
}

/// A parent being deleted admits no new Application, and none gets a key before
/// both parents carry the finalizer that keeps them until their children go.
fn unprotected_parent(group: &Group, organization: &Organization, has_key: bool) -> Option<Outcome> {
    let (g, o) = (group.name_any(), organization.name_any());
    let guarded = |finalizers: &[String]| finalizers.iter().any(|f| f == CHILDREN_FINALIZER);
    if !has_key {
        let deleting = [
            ("Group", &g, group.metadata.deletion_timestamp.is_some()),
            ("Organization", &o, organization.metadata.deletion_timestamp.is_some()),
        ];
        if let Some((kind, name, _)) = deleting.iter().find(|(_, _, d)| *d) {
            let message = format!("{kind} {name:?} is being deleted and admits no new Application");
            return Some(Outcome::not_ready(reason::PARENT_DELETING, message));
        }
    }
    for (kind, name, finalizers) in [("Group", &g, group.finalizers()), ("Organization", &o, organization.finalizers())]
    {
        if !guarded(finalizers) {
            let message = format!("waiting for {kind} {name:?} to be guarded against deletion");
            return Some(Outcome::not_ready(reason::WAITING_FOR_PARENT, message));
        }
    }
    None
}

fn has_key(app: &Application) -> bool {
    app.status.as_ref().is_some_and(|s| s.key_fingerprint.is_some())
}

enum SecretState<'a> {
    Missing,
    Foreign,
    /// Ours: controlled by this Application.
    Owned(&'a Secret),
    /// Ours and exactly as status records it, known from its watched metadata.
    Unchanged,
}

fn secret_state<'a>(app: &Application, secret: Option<&'a Secret>) -> SecretState<'a> {
    match secret {
        None => SecretState::Missing,
        Some(secret) if key_secret::controlled_by(secret, app) => SecretState::Owned(secret),
        Some(_) => SecretState::Foreign,
    }
}

fn foreign_secret(app: &Application) -> Outcome {
    let message = format!(
        "Secret {:?} already exists and is not managed by this Application; it is left untouched. \
         Delete it or set spec.keySecret.name to another name",
        app.key_secret_name()
    );
    Outcome::not_ready(reason::SECRET_CONFLICT, message)
}

/// The keys decided for a valid Application, the Secret write they need and their status.
struct KeyPlan {
    chosen: Move,
    write: Option<SecretWrite>,
    notes: Vec<Note>,
    recorded: KeyStatus,
}

/// The key plan for a Secret known to be as status records: nothing to do.
fn unchanged_key(status: &ApplicationStatus) -> KeyPlan {
    KeyPlan { chosen: Move::Keep, write: None, notes: vec![], recorded: KeyStatus::of(status) }
}

fn plan_key(
    app: &Application,
    state: &SecretState,
    base_url: Option<&str>,
    status: &ApplicationStatus,
    now: &Time,
    mint: &mut dyn FnMut() -> Result<ApiKey, MintError>,
) -> Result<KeyPlan, MintError> {
    let existing = match state {
        SecretState::Owned(secret) => Some(*secret),
        _ => None,
    };
    let found = existing.map(Found::in_secret).unwrap_or_default();
    let chosen = keyring::choose(app, status, &found, existing.is_some(), now);
    let (ring, recorded) = keyring::carry_out(app, &chosen, &found, status, now, mint)?;
    let notes = keyring::notes(app, &chosen, &found, &ring);
    let desired = key_secret::desired(app, &ring, base_url);
    let write = match existing {
        Some(current) if key_secret::in_sync(current, &desired) => None,
        Some(current) => Some(SecretWrite { secret: key_secret::updated(current, &desired), create: false }),
        None => Some(SecretWrite { secret: desired, create: true }),
    };
    Ok(KeyPlan { chosen, write, notes, recorded })
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
        Some(Move::Complete(trigger)) if trigger.id.starts_with("repair:") => {
            ctx.metrics.key_event("repaired");
            tracing::warn!(fingerprint, "completed an interrupted key repair");
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

enum Written {
    /// Written; the Secret's new resourceVersion.
    Done(Option<String>),
    /// The API server refused the object itself (validation, admission, quota).
    Refused(String),
    /// A create found a Secret of that name, made by someone since we looked.
    AppearedMeanwhile,
}

/// Creates or replaces the key Secret. Transport and permission failures of the
/// operator itself are errors and retry; refusals of the object are returned.
async fn write_secret(namespace: &str, write: &SecretWrite, ctx: &Context) -> Result<Written> {
    ctx.may_write()?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let name = write.secret.name_any();
    let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    let result = if write.create {
        // POST fails on an existing Secret, so a Secret created by someone else
        // since we looked is never overwritten.
        api.create(&params, &write.secret).await
    } else {
        // PUT carries the resourceVersion we read: a concurrent change fails it.
        api.replace(&name, &params, &write.secret).await
    };
    match result {
        Ok(written) => Ok(Written::Done(written.resource_version())),
        Err(kube::Error::Api(status)) if write.create && status.code == 409 => Ok(Written::AppearedMeanwhile),
        Err(kube::Error::Api(status)) if grants::is_refusal(&status) => {
            Ok(Written::Refused(format!("the API server refused Secret {name}: {}", status.message)))
        }
        Err(source) => Err(Error::Kube { action: format!("writing Secret {namespace}/{name}"), source }),
    }
}

#[cfg(test)]
#[path = "application_tests.rs"]
mod tests;
