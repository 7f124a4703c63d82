//! One watch per kind, shared by every controller: each fills one cache and
//! tells the controllers which objects its events affect.
//!
//! kube-runtime's `Controller` can own its watches, but then every controller
//! watches every kind it maps from again, and all of a controller's trigger
//! streams back off together after an error: after an API server restart that
//! left the operator deaf for minutes. Here each watch retries on its own short
//! backoff, reports failures to [`Health`] (so `/readyz` says when the operator
//! cannot see), and asks for a full reconcile when it recovers, since objects
//! deleted during an outage produce no event.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{mpsc, watch};

use super::context::{SecretIndex, SecretMap, SecretSummary, Stores, index_insert, index_remove};
use crate::crd::{Application, Group, Organization};
use crate::health::{FAILING_FOR, Health};
use crate::key_secret;

/// The longest a failed watch waits before trying again.
pub const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(5);
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(250);

/// Exponential retry delay for one watch, reset by every successful event.
struct WatchBackoff(Duration);

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let delay = self.0;
        self.0 = (self.0 * 2).min(WATCH_BACKOFF_MAX);
        Some(delay)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.0 = WATCH_BACKOFF_MIN;
    }
}

/// Where one controller's triggers go: single objects, or everything at once.
pub struct Inbox<K: Resource<DynamicType = ()>> {
    pub one: mpsc::UnboundedSender<ObjectRef<K>>,
    pub all: mpsc::UnboundedSender<()>,
}

impl<K: Resource<DynamicType = ()>> Clone for Inbox<K> {
    fn clone(&self) -> Self {
        Self { one: self.one.clone(), all: self.all.clone() }
    }
}

/// The receiving ends, handed to the controllers.
pub struct Outbox<K: Resource<DynamicType = ()>> {
    pub one: mpsc::UnboundedReceiver<ObjectRef<K>>,
    pub all: mpsc::UnboundedReceiver<()>,
}

fn channel<K: Resource<DynamicType = ()>>() -> (Inbox<K>, Outbox<K>) {
    let (one_tx, one) = mpsc::unbounded_channel();
    let (all_tx, all) = mpsc::unbounded_channel();
    (Inbox { one: one_tx, all: all_tx }, Outbox { one, all })
}

/// The three controllers' inboxes.
#[derive(Clone)]
pub struct Triggers {
    pub applications: Inbox<Application>,
    pub groups: Inbox<Group>,
    pub organizations: Inbox<Organization>,
}

impl Triggers {
    fn applications(&self, apps: impl IntoIterator<Item = ObjectRef<Application>>) {
        apps.into_iter().for_each(|r| drop(self.applications.one.send(r)));
    }
    fn groups(&self, names: impl IntoIterator<Item = String>) {
        names.into_iter().for_each(|n| drop(self.groups.one.send(ObjectRef::new(&n))));
    }
    fn organizations(&self, names: impl IntoIterator<Item = String>) {
        names.into_iter().for_each(|n| drop(self.organizations.one.send(ObjectRef::new(&n))));
    }
    /// A full reconcile of every object, e.g. after a watch recovered.
    pub fn everything(&self) {
        let _ = self.applications.all.send(());
        let _ = self.groups.all.send(());
        let _ = self.organizations.all.send(());
    }
}

pub struct Outboxes {
    pub applications: Outbox<Application>,
    pub groups: Outbox<Group>,
    pub organizations: Outbox<Organization>,
}

/// Where a watch's events go: a reflector store, or a smaller index.
trait Sink<K>: Send {
    fn apply(&mut self, event: &Event<K>);
}

impl<K> Sink<K> for reflector::store::Writer<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    fn apply(&mut self, event: &Event<K>) {
        self.apply_watcher_event(event);
    }
}

/// Fills a [`SecretIndex`]: a re-list builds a fresh map and swaps it in when
/// complete, so Secrets deleted while the watch was down disappear too.
struct SecretIndexWriter {
    index: SecretIndex,
    building: Option<SecretMap>,
}

impl Sink<PartialObjectMeta<Secret>> for SecretIndexWriter {
    fn apply(&mut self, event: &Event<PartialObjectMeta<Secret>>) {
        match event {
            Event::Init => self.building = Some(Default::default()),
            Event::InitApply(obj) => {
                if let (Some(building), Some((key, summary))) = (self.building.as_mut(), SecretSummary::of(obj)) {
                    index_insert(building, key, summary);
                }
            }
            Event::InitDone => {
                if let Some(built) = self.building.take() {
                    *self.index.write() = built;
                }
            }
            Event::Apply(obj) => {
                if let Some((key, summary)) = SecretSummary::of(obj) {
                    index_insert(&mut self.index.write(), key, summary);
                }
            }
            Event::Delete(obj) => {
                index_remove(&mut self.index.write(), &obj.namespace().unwrap_or_default(), &obj.name_any());
            }
        }
    }
}

/// Strips what no decision reads and what makes cached objects large.
fn slim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Starts every watch. The returned future runs them all until dropped.
pub fn start(client: &Client, health: Arc<Health>) -> (Stores, Triggers, Outboxes, impl Future<Output = ()> + use<>) {
    let (orgs_store, orgs_writer) = reflector::store();
    let (groups_store, groups_writer) = reflector::store();
    let (apps_store, apps_writer) = reflector::store();
    let (ns_store, ns_writer) = reflector::store();
    let (roles_store, roles_writer) = reflector::store();
    let (bindings_store, bindings_writer) = reflector::store();
    let secrets = SecretIndex::default();
    let secrets_writer = SecretIndexWriter { index: secrets.clone(), building: None };
    let (synced_tx, synced) = watch::channel(false);
    let stores = Stores {
        organizations: orgs_store,
        groups: groups_store,
        applications: apps_store,
        namespaces: ns_store,
        roles: roles_store,
        bindings: bindings_store,
        secrets,
        synced,
    };
    let (apps_in, apps_out) = channel();
    let (groups_in, groups_out) = channel();
    let (orgs_in, orgs_out) = channel();
    let triggers = Triggers { applications: apps_in, groups: groups_in, organizations: orgs_in };
    let outboxes = Outboxes { applications: apps_out, groups: groups_out, organizations: orgs_out };

    let all = watcher::Config::default();
    let ours = watcher::Config::default().labels(&key_secret::managed_selector());
    let h = Watched {
        health: health.clone(),
        triggers: triggers.clone(),
        stores: stores.clone(),
        synced: synced_tx,
        parents: Default::default(),
    };
    let watches = {
        let h = Arc::new(h);
        let api = |c: &Client| c.clone();
        futures::future::join_all(vec![
            run(
                "organizations.payi.io",
                watcher(Api::all(api(client)), all.clone()),
                Some(orgs_writer),
                h.clone(),
                Watched::organization,
            )
            .boxed(),
            run(
                "groups.payi.io",
                watcher(Api::all(api(client)), all.clone()),
                Some(groups_writer),
                h.clone(),
                Watched::group,
            )
            .boxed(),
            run(
                "applications.payi.io",
                watcher(Api::all(api(client)), all.clone()),
                Some(apps_writer),
                h.clone(),
                Watched::application,
            )
            .boxed(),
            run(
                "namespaces",
                watcher(Api::<PartialObjectMeta<Namespace>>::all(api(client)), all.clone()),
                Some(ns_writer),
                h.clone(),
                Watched::namespace,
            )
            .boxed(),
            // Key Secrets: metadata only, kept as a small index (resourceVersion, owner, content digest).
            run(
                "secrets",
                watcher(Api::<PartialObjectMeta<Secret>>::all(api(client)), ours.clone()),
                Some(secrets_writer),
                h.clone(),
                Watched::owned::<PartialObjectMeta<Secret>>,
            )
            .boxed(),
            run(
                "roles",
                watcher(Api::all(api(client)), ours.clone()),
                Some(roles_writer),
                h.clone(),
                Watched::owned::<Role>,
            )
            .boxed(),
            run(
                "rolebindings",
                watcher(Api::all(api(client)), ours),
                Some(bindings_writer),
                h.clone(),
                Watched::owned::<RoleBinding>,
            )
            .boxed(),
        ])
    };
    (stores, triggers, outboxes, async move {
        watches.await;
    })
}

/// What every watch shares: where to report, whom to trigger, which caches to read.
struct Watched {
    health: Arc<Health>,
    triggers: Triggers,
    stores: Stores,
    synced: watch::Sender<bool>,
    parents: std::sync::Mutex<std::collections::HashMap<(&'static str, String), ParentSeen>>,
}

/// What an Application's reconcile reads of a parent: generation, finalizers, deletion, UID.
type ParentSeen = (Option<i64>, Option<Vec<String>>, bool, Option<String>);

impl Watched {
    fn application(&self, app: &Application, _gone: bool) {
        self.triggers.applications([ObjectRef::from_obj(app)]);
        // The Group it points at now, and the one it was last counted in; likewise the Organization.
        let status = app.status.as_ref();
        let groups = [Some(app.spec.group_ref.name.clone()), status.and_then(|s| s.group.clone())];
        let org_now = self.stores.organization_of_group(&app.spec.group_ref.name);
        let orgs = [org_now, status.and_then(|s| s.organization.clone())];
        self.triggers.groups(distinct(groups));
        self.triggers.organizations(distinct(orgs));
    }

    fn group(&self, group: &Group, gone: bool) {
        let name = group.name_any();
        self.triggers.groups([name.clone()]);
        // Its own status writes change nothing its Applications read: only a new
        // spec, a finalizer change or a deletion is worth reconciling them all.
        if self.parent_changed("Group", group, gone) {
            self.triggers.applications(refs(self.stores.applications_of_group(&name)));
        }
        let previous = group.status.as_ref().and_then(|s| s.organization.clone());
        self.triggers.organizations(distinct([Some(group.spec.organization_ref.name.clone()), previous]));
    }

    fn organization(&self, org: &Organization, gone: bool) {
        let name = org.name_any();
        self.triggers.organizations([name.clone()]);
        if self.parent_changed("Organization", org, gone) {
            let groups = self.stores.groups_of_organization(&name);
            self.triggers.groups(groups.iter().map(|g| g.name_any()));
            self.triggers.applications(refs(self.stores.applications_of_organization(&name)));
        }
    }

    /// Whether what children read of a parent (spec, finalizers, deletion) changed
    /// since its last event; remembers it. One small entry per parent.
    fn parent_changed<K: Resource>(&self, kind: &'static str, parent: &K, gone: bool) -> bool {
        let meta = parent.meta();
        if gone {
            let mut parents = self.parents.lock().unwrap_or_else(|p| p.into_inner());
            parents.remove(&(kind, meta.name.clone().unwrap_or_default()));
            return true;
        }
        let seen = (meta.generation, meta.finalizers.clone(), meta.deletion_timestamp.is_some(), meta.uid.clone());
        let key = (kind, meta.name.clone().unwrap_or_default());
        let mut parents = self.parents.lock().unwrap_or_else(|p| p.into_inner());
        parents.insert(key, seen.clone()) != Some(seen)
    }

    /// A namespace's labels decide which Groups admit its Applications.
    fn namespace(&self, ns: &PartialObjectMeta<Namespace>, _gone: bool) {
        let apps = self.stores.applications_in(&ns.name_any());
        self.triggers.groups(distinct(apps.iter().map(|a| Some(a.spec.group_ref.name.clone()))));
        self.triggers.applications(refs(apps));
    }

    /// Objects the operator made for an Application (labelled with its name).
    fn owned<K: Resource<DynamicType = ()>>(&self, obj: &K, _gone: bool) {
        let meta = obj.meta();
        let app = meta.labels.as_ref().and_then(|l| l.get(key_secret::APPLICATION_LABEL));
        if let (Some(app), Some(ns)) = (app, &meta.namespace) {
            self.triggers.applications([ObjectRef::new(app).within(ns)]);
        }
    }

    fn listed(&self, name: &'static str, first: bool) {
        self.health.listed(name);
        if first {
            tracing::info!(watch = name, "initial list complete");
        } else {
            // Deletions while the watch was down produced no event.
            tracing::info!(watch = name, "re-listed; reconciling everything");
            self.triggers.everything();
        }
        if self.health.all_listed() {
            self.synced.send_if_modified(|s| !std::mem::replace(s, true));
        }
    }
}

fn distinct(names: impl IntoIterator<Item = Option<String>>) -> Vec<String> {
    let mut names: Vec<String> = names.into_iter().flatten().collect();
    names.sort();
    names.dedup();
    names
}

fn refs<K: Resource<DynamicType = ()>>(objs: Vec<Arc<K>>) -> Vec<ObjectRef<K>> {
    objs.iter().map(|o| ObjectRef::from_obj(o.as_ref())).collect()
}

/// Drives one watch: fills its cache, maps its events to triggers, reports its health.
async fn run<K, S, W>(
    name: &'static str,
    stream: S,
    mut writer: Option<W>,
    watched: Arc<Watched>,
    on_change: fn(&Watched, &K, bool),
) where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    S: Stream<Item = watcher::Result<Event<K>>> + Send,
    W: Sink<K>,
{
    watched.health.expect(name);
    let stream = stream.modify(slim).backoff(WatchBackoff(WATCH_BACKOFF_MIN));
    let mut stream = std::pin::pin!(stream);
    let mut first_list = true;
    let mut recovery = tokio::time::interval(FAILING_FOR);
    let mut blind = false;
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = recovery.tick() => {
                // A resumed watch says nothing until something changes: count
                // a quiet spell without errors as recovery.
                if blind && watched.health.failing().iter().all(|(n, _)| *n != name) {
                    blind = false;
                    tracing::info!(watch = name, "watch works again; reconciling everything");
                    watched.triggers.everything();
                }
                continue;
            }
        };
        let Some(event) = event else { break };
        match event {
            Ok(event) => {
                watched.health.working(name);
                if let Some(writer) = writer.as_mut() {
                    writer.apply(&event);
                }
                match &event {
                    Event::Apply(obj) | Event::InitApply(obj) => on_change(&watched, obj, false),
                    Event::Delete(obj) => on_change(&watched, obj, true),
                    Event::InitDone => {
                        watched.listed(name, std::mem::take(&mut first_list));
                        blind = false;
                    }
                    Event::Init => {}
                }
            }
            Err(error) => {
                if watched.health.failed(name, error.to_string()) {
                    tracing::warn!(watch = name, %error, "watch failed; retrying");
                }
                blind = true;
            }
        }
    }
}
