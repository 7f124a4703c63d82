//! What every reconcile shares: the client, the caches, the event recorder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::conditions::{self, Outcome};
use crate::crd::{Application, Group, Organization};
use crate::health::Health;
use crate::metrics::Metrics;

/// Field manager and Event reporter name.
pub const MANAGER: &str = "payi-operator";

/// Read-only views of the watch caches, for gathering reconcile inputs.
#[derive(Clone)]
pub struct Stores {
    pub organizations: Store<Organization>,
    pub groups: Store<Group>,
    pub applications: Store<Application>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    synced: watch::Receiver<bool>,
}

impl Stores {
    /// Wraps the caches and starts a task that marks them synced once each holds
    /// a complete list.
    pub fn new(
        organizations: Store<Organization>,
        groups: Store<Group>,
        applications: Store<Application>,
        namespaces: Store<PartialObjectMeta<Namespace>>,
        health: Arc<Health>,
    ) -> Self {
        let (tx, synced) = watch::channel(false);
        let stores = Self { organizations, groups, applications, namespaces, synced };
        let waiting = stores.clone();
        tokio::spawn(async move {
            while !waiting.all_filled() {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            health.set_synced();
            let _ = tx.send(true);
        });
        stores
    }

    /// Whether every cache has seen its first complete list.
    ///
    /// `Store::wait_until_ready` keeps only the most recent waiter's waker, and each
    /// controller's runner already waits on its own store; a second waiter would
    /// starve one of them. So the stores are polled once per tick, never awaited.
    fn all_filled(&self) -> bool {
        use futures::FutureExt;
        self.organizations.wait_until_ready().now_or_never().is_some()
            && self.groups.wait_until_ready().now_or_never().is_some()
            && self.applications.wait_until_ready().now_or_never().is_some()
            && self.namespaces.wait_until_ready().now_or_never().is_some()
    }

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

    pub fn organization_of_group(&self, group: &str) -> Option<String> {
        self.group(group).map(|g| g.spec.organization_ref.name.clone())
    }
}

/// Something to tell a person about an object, published as a Kubernetes Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Note {
    pub fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Self { warning: false, reason, message: message.into() }
    }
    pub fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Self { warning: true, reason, message: message.into() }
    }

    /// A Warning when `Ready` turns False or changes reason while False; nothing
    /// otherwise, so a resync of an unchanged object publishes no Event.
    pub fn ready_transition(previous: &[Condition], ready: &Outcome) -> Vec<Note> {
        let before = conditions::find(previous, conditions::READY);
        let unchanged =
            before.is_some_and(|c| c.reason == ready.reason && (c.status == conditions::TRUE) == ready.status);
        if unchanged || ready.status {
            return vec![];
        }
        vec![Note::warning(ready.reason, ready.message.clone())]
    }
}

pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub metrics: Arc<Metrics>,
    recorder: Recorder,
    backoff: FailureBackoff,
}

impl Context {
    pub fn new(client: Client, stores: Stores, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter { controller: MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        Self { recorder, client, stores, metrics, backoff: FailureBackoff::default() }
    }

    /// Publishes notes about `obj`. A lost Event is logged, never retried: Events
    /// are advisory and retrying would repeat the writes that succeeded.
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, notes: &[Note]) {
        let reference = obj.object_ref(&());
        for note in notes {
            let event = Event {
                type_: if note.warning { EventType::Warning } else { EventType::Normal },
                reason: note.reason.into(),
                note: Some(note.message.clone()),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(error) = self.recorder.publish(&event, &reference).await {
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
}
