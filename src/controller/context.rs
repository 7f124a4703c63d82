//! What every reconcile shares: the client, the caches, the Event writer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

use crate::crd::{Application, Group, Organization};
use crate::error::{Error, Result};
use crate::key_secret::{self, MANAGER};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::namespace_policy;
pub use crate::note::Note;

/// Read-only views of the watch caches, for gathering reconcile inputs.
#[derive(Clone)]
pub struct Stores {
    pub organizations: Store<Organization>,
    pub groups: Store<Group>,
    pub applications: Store<Application>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub roles: Store<Role>,
    pub bindings: Store<RoleBinding>,
    pub secrets: SecretIndex,
    pub(super) synced: watch::Receiver<bool>,
}

/// What the operator needs to know about a key Secret without reading it.
/// One per key Secret, so kept small: at 10,000 Applications every byte here
/// is 10 KB of the operator's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSummary {
    /// Its resourceVersion. etcd's are integers; any other is kept as `None`
    /// and never taken to mean "unchanged since we wrote it".
    pub resource_version: Option<u64>,
    /// UID of the controller owner, if any.
    pub controller: Option<Box<str>>,
    /// The `payi.io/content` annotation.
    pub content: Option<Box<str>>,
}

impl SecretSummary {
    pub fn of(meta: &PartialObjectMeta<k8s_openapi::api::core::v1::Secret>) -> Option<((String, String), Self)> {
        let key = (meta.namespace()?, meta.name_any());
        let owner = meta.owner_references().iter().find(|r| r.controller == Some(true));
        let content = meta.annotations().get(key_secret::CONTENT_ANNOTATION);
        let summary = Self {
            resource_version: meta.resource_version()?.parse().ok(),
            controller: owner.map(|r| r.uid.as_str().into()),
            content: content.map(|c| c.as_str().into()),
        };
        Some((key, summary))
    }

    /// Whether this is the version status records (`status.keySecretVersion`).
    pub fn is_version(&self, recorded: &str) -> bool {
        self.resource_version.is_some() && self.resource_version == recorded.parse().ok()
    }
}

/// Watched key Secrets by namespace, then name: no data, and each namespace's
/// name stored once. Lookups allocate nothing.
#[derive(Clone, Default)]
pub struct SecretIndex(Arc<std::sync::RwLock<SecretMap>>);

/// Namespace -> name -> summary.
pub type SecretMap = HashMap<Arc<str>, HashMap<Box<str>, SecretSummary>>;

impl SecretIndex {
    pub fn get(&self, namespace: &str, name: &str) -> Option<SecretSummary> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(namespace)?.get(name).cloned()
    }

    pub(super) fn write(&self) -> std::sync::RwLockWriteGuard<'_, SecretMap> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Adds or replaces a Secret's summary.
pub(super) fn index_insert(map: &mut SecretMap, (namespace, name): (String, String), summary: SecretSummary) {
    match map.get_mut(namespace.as_str()) {
        Some(names) => names.insert(name.into(), summary),
        None => map.entry(namespace.into()).or_default().insert(name.into(), summary),
    };
}

/// Forgets a deleted Secret, and its namespace once it holds none.
pub(super) fn index_remove(map: &mut SecretMap, namespace: &str, name: &str) {
    if let Some(names) = map.get_mut(namespace) {
        names.remove(name);
        if names.is_empty() {
            map.remove(namespace);
        }
    }
}

impl Stores {
    /// Blocks until every cache holds a complete list, so a reconcile never
    /// mistakes "not cached yet" for "does not exist".
    pub async fn wait_until_ready(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|ready| *ready).await;
    }

    /// Whether every cache has been filled at least once.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// The access objects of one kind labelled for `app`, from the cache.
    pub fn access_of<K>(store: &Store<K>, app: &Application) -> Vec<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone,
    {
        let (namespace, name) = (app.namespace(), app.name_any());
        let ours = |o: &Arc<K>| {
            o.meta().namespace == namespace
                && o.meta().labels.as_ref().and_then(|l| l.get(key_secret::APPLICATION_LABEL)) == Some(&name)
        };
        store.state().iter().filter(|o| ours(o)).map(|o| o.as_ref().clone()).collect()
    }

    pub fn organization(&self, name: &str) -> Option<Arc<Organization>> {
        self.organizations.get(&ObjectRef::new(name))
    }

    pub fn group(&self, name: &str) -> Option<Arc<Group>> {
        self.groups.get(&ObjectRef::new(name))
    }

    pub fn namespace_labels(&self, name: &str) -> std::collections::BTreeMap<String, String> {
        self.namespaces.get(&ObjectRef::new(name)).map(|ns| ns.labels().clone()).unwrap_or_default()
    }

    /// Applications whose `spec.groupRef` names `group`.
    pub fn applications_of_group(&self, group: &str) -> Vec<Arc<Application>> {
        self.applications.state().into_iter().filter(|a| a.spec.group_ref.name == group).collect()
    }

    /// Groups whose `spec.organizationRef` names `organization`.
    pub fn groups_of_organization(&self, organization: &str) -> Vec<Arc<Group>> {
        self.groups.state().into_iter().filter(|g| g.spec.organization_ref.name == organization).collect()
    }

    /// Applications whose Group currently belongs to `organization`.
    pub fn applications_of_organization(&self, organization: &str) -> Vec<Arc<Application>> {
        self.applications
            .state()
            .into_iter()
            .filter(|a| self.organization_of_group(&a.spec.group_ref.name).as_deref() == Some(organization))
            .collect()
    }

    /// Whether `namespace` is being deleted: nothing new can be created in it.
    pub fn namespace_terminating(&self, name: &str) -> bool {
        self.namespaces.get(&ObjectRef::new(name)).is_some_and(|ns| ns.metadata.deletion_timestamp.is_some())
    }

    /// Applications in `namespace`.
    pub fn applications_in(&self, namespace: &str) -> Vec<Arc<Application>> {
        self.applications.state().into_iter().filter(|a| a.namespace().as_deref() == Some(namespace)).collect()
    }

    /// Applications of `group` in namespaces its policy admits: only these hold it.
    pub fn admitted_applications_of_group(&self, group: &Group) -> Vec<Arc<Application>> {
        let policy = group.spec.namespace_policy.as_ref();
        let admitted = |a: &Arc<Application>| {
            let namespace = a.namespace().unwrap_or_default();
            namespace_policy::admits(policy, &namespace, &self.namespace_labels(&namespace)).is_ok()
        };
        self.applications_of_group(&group.name_any()).into_iter().filter(admitted).collect()
    }

    pub fn organization_of_group(&self, group: &str) -> Option<String> {
        self.group(group).map(|g| g.spec.organization_ref.name.clone())
    }
}

pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub metrics: Arc<Metrics>,
    events: super::events::EventWriter,
    backoff: FailureBackoff,
    leadership: Leadership,
    /// Application statuses written but maybe not yet in the cache.
    pub written: super::status::Written<crate::crd::ApplicationStatus>,
    /// When this replica started its controllers.
    pub started: std::time::Instant,
}

impl Context {
    pub fn new(client: Client, stores: Stores, metrics: Arc<Metrics>, leadership: Leadership) -> Self {
        let instance = std::env::var("POD_NAME").unwrap_or_else(|_| MANAGER.into());
        let reporter = super::events::Reporter { controller: MANAGER.into(), instance };
        Self {
            events: super::events::EventWriter::new(client.clone(), reporter),
            client,
            stores,
            metrics,
            backoff: FailureBackoff::default(),
            leadership,
            written: Default::default(),
            started: std::time::Instant::now(),
        }
    }

    /// Call before every write: a replica that is no longer sure it leads (its
    /// Lease renewal is overdue, e.g. after being frozen) must not write.
    pub fn may_write(&self) -> Result<()> {
        if self.leadership.is_valid() { Ok(()) } else { Err(Error::NotLeader) }
    }

    /// Publishes notes about `obj`. A lost Event is logged, never retried: Events
    /// are advisory and retrying would repeat the writes that succeeded.
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, notes: &[Note]) {
        if notes.is_empty() || self.may_write().is_err() {
            return;
        }
        let reference = obj.object_ref(&());
        for note in notes {
            if let Err(error) = self.events.publish(note, &reference).await {
                tracing::warn!(%error, reason = note.reason, "could not publish Event");
            }
        }
    }

    pub fn backoff(&self) -> &FailureBackoff {
        &self.backoff
    }
}

/// Exponential requeue delay per object after consecutive failures.
#[derive(Default)]
pub struct FailureBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl FailureBackoff {
    const BASE: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(300);

    /// Records a failure of `key` and returns how long to wait before retrying.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        Self::delay(*n)
    }

    pub fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.remove(key);
    }

    fn delay(attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        Self::BASE.saturating_mul(factor).min(Self::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap_and_resets() {
        let b = FailureBackoff::default();
        assert_eq!(b.failed("x"), Duration::from_millis(500));
        assert_eq!(b.failed("x"), Duration::from_secs(1));
        assert_eq!(b.failed("x"), Duration::from_secs(2));
        for _ in 0..40 {
            b.failed("x");
        }
        assert_eq!(b.failed("x"), FailureBackoff::MAX);
        b.succeeded("x");
        assert_eq!(b.failed("x"), Duration::from_millis(500));
        assert_eq!(b.failed("y"), Duration::from_millis(500));
    }

    fn summary(version: u64) -> SecretSummary {
        SecretSummary { resource_version: Some(version), controller: Some("uid".into()), content: None }
    }

    #[test]
    fn the_secret_index_keeps_namespaces_apart_and_forgets_empty_ones() {
        let index = SecretIndex::default();
        index_insert(&mut index.write(), ("a".into(), "k".into()), summary(1));
        index_insert(&mut index.write(), ("b".into(), "k".into()), summary(2));
        index_insert(&mut index.write(), ("a".into(), "k".into()), summary(3));
        assert_eq!(index.get("a", "k"), Some(summary(3)));
        assert_eq!(index.get("b", "k"), Some(summary(2)));
        assert_eq!(index.get("c", "k"), None);
        index_remove(&mut index.write(), "a", "k");
        index_remove(&mut index.write(), "a", "never-there");
        assert_eq!(index.get("a", "k"), None);
        assert!(!index.write().contains_key("a"), "an empty namespace is dropped");
        assert!(summary(7).is_version("7") && !summary(7).is_version("8") && !summary(7).is_version("x"));
    }
}
