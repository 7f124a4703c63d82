//! Feeds the index from watches of Organizations, Groups and Applications.
//!
//! Each watch restarts with backoff on errors; after every (re)list, objects the
//! list no longer contains are removed from the index, so a deletion missed while
//! a watch was down is not kept forever.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::index::{AppId, AppLimits, ApplicationView, Index, KeyView, parse_digest};
use super::metrics::Metrics;
use super::use_case::UseCases;
use crate::conditions;
use crate::crd::{Application, Group, Organization};
use crate::limits::rule;

/// How long a watch may keep failing before the index counts as stale.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30);

/// Whether each watch has listed its kind once, and since when it has been
/// failing: `/readyz` waits for all three to be listed, and turns false again when
/// one has failed for longer than the stale bound (its API access revoked, the API
/// server unreachable): a revoked key would then go unnoticed, so the replica stops
/// taking traffic rather than answer from an index it can no longer keep current.
#[derive(Debug)]
pub struct Synced {
    organizations: AtomicBool,
    groups: AtomicBool,
    applications: AtomicBool,
    /// Per kind, when its watch began failing (`None`: it is not).
    failing_since: Mutex<[Option<Instant>; 3]>,
    stale_after: Duration,
}

impl Default for Synced {
    fn default() -> Self {
        Self::with_stale_after(DEFAULT_STALE_AFTER)
    }
}

/// What `/readyz` says about the index.
#[derive(Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Listing,
    /// This kind's watch has failed for longer than the stale bound.
    Stale(&'static str),
}

impl Synced {
    pub fn with_stale_after(stale_after: Duration) -> Self {
        Self {
            organizations: AtomicBool::new(false),
            groups: AtomicBool::new(false),
            applications: AtomicBool::new(false),
            failing_since: Mutex::new([None; 3]),
            stale_after,
        }
    }

    /// All three kinds listed (they may have gone stale since: see [`Synced::readiness`]).
    pub fn all(&self) -> bool {
        [&self.organizations, &self.groups, &self.applications].iter().all(|s| s.load(Ordering::Acquire))
    }

    pub fn readiness(&self) -> Readiness {
        if !self.all() {
            return Readiness::Listing;
        }
        let failing = *self.failing_since.lock().unwrap_or_else(|p| p.into_inner());
        stale_kind(&failing, Instant::now(), self.stale_after).map_or(Readiness::Ready, Readiness::Stale)
    }

    /// A watch of `slot` failed; the first failure of a run starts its clock.
    fn failed(&self, slot: usize) {
        let mut failing = self.failing_since.lock().unwrap_or_else(|p| p.into_inner());
        failing[slot].get_or_insert_with(Instant::now);
    }

    /// A watch of `slot` delivered an event: it is current again.
    fn recovered(&self, slot: usize) {
        self.failing_since.lock().unwrap_or_else(|p| p.into_inner())[slot] = None;
    }
}

/// The kinds in the order of [`Synced`]'s failure slots.
const KINDS: [&str; 3] = ["Organization", "Group", "Application"];

/// The first kind whose watch has been failing for longer than `stale_after` (pure).
fn stale_kind(failing_since: &[Option<Instant>; 3], now: Instant, stale_after: Duration) -> Option<&'static str> {
    failing_since
        .iter()
        .zip(KINDS)
        .find(|(since, _)| since.is_some_and(|since| now.saturating_duration_since(since) > stale_after))
        .map(|(_, kind)| kind)
}

/// What the index needs from an Application: live means Ready=True for the
/// current generation and not being deleted. Ready=True for an older generation
/// means the operator has not judged the new spec yet: the index keeps what it
/// had for the last generation the operator judged (see [`ApplicationView::catching_up`]).
pub fn application_view(app: &Application) -> ApplicationView {
    let id = AppId { namespace: app.namespace().unwrap_or_default(), name: app.name_any() };
    let status = app.status.as_ref();
    let generation = app.metadata.generation;
    let ready = status.and_then(|s| {
        let c = s.conditions.iter().find(|c| c.type_ == conditions::READY)?;
        let observed = c.observed_generation.or(s.observed_generation);
        Some((c.status == conditions::TRUE, observed == generation))
    });
    let deleting = app.metadata.deletion_timestamp.is_some();
    let live = !deleting && ready == Some((true, true));
    let catching_up = !deleting && ready == Some((true, false));
    // A key without a published digest (status from before digests) cannot be
    // verified; it is skipped until the operator fills the digest in.
    let keys = status
        .map(|s| &s.keys[..])
        .unwrap_or_default()
        .iter()
        .filter_map(|k| {
            Some(KeyView {
                digest: parse_digest(&k.digest)?,
                expires_at_ms: k.expires_at.as_ref().map(|t| t.0.as_millisecond()),
            })
        })
        .collect();
    let use_cases = status.and_then(|s| s.use_cases.as_ref()).map_or_else(UseCases::default, |u| {
        UseCases::new(u.policy, u.items.iter().map(|i| (i.name.clone(), i.version)))
    });
    let limits = app_limits(app, &id);
    ApplicationView { id, group: app.spec.group_ref.name.clone(), live, catching_up, keys, use_cases, limits }
}

/// An Application's limits and its use cases' (the spec says them; the gateway enforces them).
fn app_limits(app: &Application, id: &AppId) -> AppLimits {
    let level = rule::application_level(&id.namespace, &id.name);
    let use_cases = app
        .spec
        .use_cases
        .iter()
        .filter(|u| !u.limits.is_empty())
        .map(|u| {
            (
                Arc::from(u.name.as_str()),
                rule::compile(&rule::use_case_level(&id.namespace, &id.name, &u.name), &u.limits),
            )
        })
        .collect();
    AppLimits { application: rule::compile(&level, &app.spec.limits), use_cases }
}

/// One of the three watched kinds, as the index sees it.
trait Watched: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static {
    type Id: Clone + Eq + std::hash::Hash + Send;
    const KIND: &'static str;
    /// Its slot in [`Synced`]'s failure clocks (its place in [`KINDS`]).
    const SLOT: usize;
    fn id(&self) -> Self::Id;
    /// Records the object; returns digests it made contested.
    fn apply(&self, index: &mut Index) -> Vec<super::index::Conflict>;
    fn remove(id: &Self::Id, index: &mut Index);
    fn ids(index: &Index) -> Vec<Self::Id>;
    fn synced(flags: &Synced) -> &AtomicBool;
}

impl Watched for Organization {
    type Id = String;
    const KIND: &'static str = "Organization";
    const SLOT: usize = 0;
    fn id(&self) -> String {
        self.name_any()
    }
    fn apply(&self, index: &mut Index) -> Vec<super::index::Conflict> {
        // One being deleted is gone as far as keys are concerned.
        if self.metadata.deletion_timestamp.is_some() {
            index.delete_organization(&self.name_any());
        } else {
            let limits = rule::compile(&rule::organization_level(&self.name_any()), &self.spec.limits);
            index.apply_organization_with_limits(&self.name_any(), limits);
        }
        vec![]
    }
    fn remove(id: &String, index: &mut Index) {
        index.delete_organization(id);
    }
    fn ids(index: &Index) -> Vec<String> {
        index.organization_names()
    }
    fn synced(flags: &Synced) -> &AtomicBool {
        &flags.organizations
    }
}

impl Watched for Group {
    type Id = String;
    const KIND: &'static str = "Group";
    const SLOT: usize = 1;
    fn id(&self) -> String {
        self.name_any()
    }
    fn apply(&self, index: &mut Index) -> Vec<super::index::Conflict> {
        if self.metadata.deletion_timestamp.is_some() {
            index.delete_group(&self.name_any());
        } else {
            let limits = rule::compile(&rule::group_level(&self.name_any()), &self.spec.limits);
            index.apply_group_with_limits(&self.name_any(), &self.spec.organization_ref.name, limits);
        }
        vec![]
    }
    fn remove(id: &String, index: &mut Index) {
        index.delete_group(id);
    }
    fn ids(index: &Index) -> Vec<String> {
        index.group_names()
    }
    fn synced(flags: &Synced) -> &AtomicBool {
        &flags.groups
    }
}

impl Watched for Application {
    type Id = AppId;
    const KIND: &'static str = "Application";
    const SLOT: usize = 2;
    fn id(&self) -> AppId {
        AppId { namespace: self.namespace().unwrap_or_default(), name: self.name_any() }
    }
    fn apply(&self, index: &mut Index) -> Vec<super::index::Conflict> {
        index.apply_application(&application_view(self))
    }
    fn remove(id: &AppId, index: &mut Index) {
        index.delete_application(id);
    }
    fn ids(index: &Index) -> Vec<AppId> {
        index.application_ids()
    }
    fn synced(flags: &Synced) -> &AtomicBool {
        &flags.applications
    }
}

/// Runs the three watches until the future is dropped.
pub async fn run(client: Client, index: Arc<RwLock<Index>>, metrics: Arc<Metrics>, synced: Arc<Synced>) {
    let orgs = follow(Api::<Organization>::all(client.clone()), &index, &metrics, &synced);
    let groups = follow(Api::<Group>::all(client.clone()), &index, &metrics, &synced);
    let apps = follow(Api::<Application>::all(client), &index, &metrics, &synced);
    futures::join!(orgs, groups, apps);
}

async fn follow<K: Watched>(api: Api<K>, index: &RwLock<Index>, metrics: &Metrics, synced: &Synced) {
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    // Ids listed since the last Init; `None` outside a (re)list.
    let mut listing: Option<HashSet<K::Id>> = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => {
                synced.recovered(K::SLOT);
                event
            }
            Err(error) => {
                synced.failed(K::SLOT);
                tracing::warn!(kind = K::KIND, %error, "watch failed; retrying with backoff");
                continue;
            }
        };
        let conflicts = {
            let mut index = match index.write() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            let conflicts = match event {
                watcher::Event::Init => {
                    listing = Some(HashSet::new());
                    vec![]
                }
                watcher::Event::InitApply(obj) => {
                    if let Some(seen) = listing.as_mut() {
                        seen.insert(obj.id());
                    }
                    obj.apply(&mut index)
                }
                watcher::Event::InitDone => {
                    if let Some(seen) = listing.take() {
                        for gone in K::ids(&index).into_iter().filter(|id| !seen.contains(id)) {
                            K::remove(&gone, &mut index);
                        }
                    }
                    if !K::synced(synced).swap(true, Ordering::AcqRel) {
                        tracing::info!(kind = K::KIND, "listed");
                    }
                    vec![]
                }
                watcher::Event::Apply(obj) => obj.apply(&mut index),
                watcher::Event::Delete(obj) => {
                    K::remove(&obj.id(), &mut index);
                    vec![]
                }
            };
            metrics.conflicts.set(i64::try_from(index.conflicts()).unwrap_or(i64::MAX));
            metrics.keys.set(i64::try_from(index.keys()).unwrap_or(i64::MAX));
            conflicts
        };
        for conflict in conflicts {
            let applications: Vec<String> =
                conflict.applications.iter().map(|a| format!("{}/{}", a.namespace, a.name)).collect();
            tracing::warn!(
                fingerprint = %conflict.fingerprint,
                applications = ?applications,
                "a key digest is claimed by more than one Application; refusing it for all of them"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(generation: i64, ready: &str, observed: i64, keys: serde_json::Value) -> Application {
        serde_json::from_value(json!({
            "apiVersion": "payi.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "chat", "namespace": "team", "generation": generation},
            "spec": {"groupRef": {"name": "eng"}},
            "status": {
                "observedGeneration": observed,
                "conditions": [{"type": "Ready", "status": ready, "reason": "KeyIssued", "message": "",
                                "observedGeneration": observed, "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "keys": keys
            }
        }))
        .unwrap()
    }

    fn keys() -> serde_json::Value {
        json!([
            {"secretKey": "PAYI_API_KEY", "fingerprint": "sha256:ba7816bf8f01cfea",
             "digest": crate::key::digest("abc"), "createdAt": "2026-01-01T00:00:00Z"},
            {"secretKey": "PAYI_API_KEY_PREVIOUS", "fingerprint": "sha256:0000000000000000",
             "digest": crate::key::digest("old"), "createdAt": "2025-12-01T00:00:00Z",
             "expiresAt": "2026-01-02T00:00:00Z"},
            {"secretKey": "PAYI_API_KEY", "fingerprint": "sha256:0000000000000000",
             "createdAt": "2025-12-01T00:00:00Z"}
        ])
    }

    #[test]
    fn a_ready_application_publishes_its_digests_with_expiry() {
        let view = application_view(&app(3, "True", 3, keys()));
        assert!(view.live);
        assert_eq!(view.id, AppId { namespace: "team".into(), name: "chat".into() });
        assert_eq!(view.group, "eng");
        // The entry without a digest is skipped.
        assert_eq!(view.keys.len(), 2);
        assert_eq!(view.keys[0], KeyView { digest: super::super::index::digest_of("abc"), expires_at_ms: None });
        assert_eq!(view.keys[1].expires_at_ms, Some(1_767_312_000_000));
    }

    #[test]
    fn an_application_is_live_only_when_ready_for_its_current_generation() {
        assert!(!application_view(&app(3, "False", 3, keys())).live);
        let stale = application_view(&app(4, "True", 3, keys()));
        assert!(!stale.live && stale.catching_up, "stale Ready");
        assert!(!application_view(&app(4, "False", 3, keys())).catching_up, "stale not-Ready");
        let mut deleting = app(3, "True", 3, keys());
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-01-01T00:00:00Z".parse().unwrap()));
        assert!(!application_view(&deleting).live);
        let mut no_status = app(3, "True", 3, keys());
        no_status.status = None;
        assert!(!application_view(&no_status).live);
    }

    #[test]
    fn a_watch_failing_past_the_bound_makes_the_index_stale() {
        let now = Instant::now();
        let bound = Duration::from_secs(30);
        assert_eq!(stale_kind(&[None; 3], now, bound), None);
        let recent = now - Duration::from_secs(10);
        assert_eq!(stale_kind(&[None, Some(recent), None], now, bound), None, "failing, within the bound");
        let long = now - Duration::from_secs(31);
        assert_eq!(stale_kind(&[None, Some(recent), Some(long)], now, bound), Some("Application"));
        let synced = Synced::with_stale_after(Duration::ZERO);
        assert_eq!(synced.readiness(), Readiness::Listing, "nothing listed yet");
        for flag in [&synced.organizations, &synced.groups, &synced.applications] {
            flag.store(true, Ordering::Release);
        }
        assert_eq!(synced.readiness(), Readiness::Ready);
        synced.failed(0);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(synced.readiness(), Readiness::Stale("Organization"));
        synced.recovered(0);
        assert_eq!(synced.readiness(), Readiness::Ready, "one event and it is current again");
    }
}
