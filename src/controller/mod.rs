//! Wires the three reconcilers to their watches and runs them until shutdown.

pub mod application;
mod context;
mod grants;
pub mod group;
pub mod keyring;
pub mod organization;
pub mod parent;
mod status;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

pub use context::{Context, MANAGER, Note, Stores};

use crate::crd::{Application, Group, Organization};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::health::Health;
use crate::metrics::{ErrorLabels, Metrics};

/// Label selector for the Secrets this operator manages; nothing else is watched.
pub fn managed_secret_selector() -> String {
    format!("{}={}", application::MANAGED_BY_LABEL, MANAGER)
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Every object is reconciled again this often, to catch drift no watch reports.
    pub resync: Duration,
    /// Reconciles of one kind that may run at once.
    pub concurrency: u16,
}

/// Runs the controllers until `shutdown` resolves, then lets in-flight reconciles finish.
pub async fn run<F>(client: Client, settings: Settings, metrics: Arc<Metrics>, health: Arc<Health>, shutdown: F)
where
    F: Future<Output = ()> + Send + Sync + Clone + 'static,
{
    let all = watcher::Config::default();
    let orgs = Controller::new(Api::<Organization>::all(client.clone()), all.clone());
    let groups = Controller::new(Api::<Group>::all(client.clone()), all.clone());
    let apps = Controller::new(Api::<Application>::all(client.clone()), all.clone());

    let (ns_reader, ns_writer) = reflector::store();
    let namespaces =
        reflector::reflector(ns_writer, watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), all.clone()))
            .default_backoff()
            .for_each(|_| futures::future::ready(()));

    let stores = Stores::new(orgs.store(), groups.store(), apps.store(), ns_reader, health);
    let ctx = Arc::new(Context::new(client.clone(), stores.clone(), metrics));
    let config = kube::runtime::controller::Config::default().concurrency(settings.concurrency);
    let resync = || resync_ticks(settings.resync);

    let apps = wire_applications(apps, &client, &stores)
        .with_config(config.clone())
        .reconcile_all_on(resync())
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |o, c| observed(APPLICATION, o, c, application::reconcile),
            |o, e, c| error_policy(APPLICATION, o, e, c),
            ctx.clone(),
        )
        .for_each(log_result);
    let groups = wire_groups(groups, &client, &stores)
        // Parents only count children: coalesce bursts of child changes into one write.
        .with_config(config.clone().debounce(Duration::from_millis(500)))
        .reconcile_all_on(resync())
        .graceful_shutdown_on(shutdown.clone())
        .run(|o, c| observed(GROUP, o, c, group::reconcile), |o, e, c| error_policy(GROUP, o, e, c), ctx.clone())
        .for_each(log_result);
    let orgs = wire_organizations(orgs, &client, &stores)
        .with_config(config.debounce(Duration::from_millis(500)))
        .reconcile_all_on(resync())
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |o, c| observed(ORGANIZATION, o, c, organization::reconcile),
            |o, e, c| error_policy(ORGANIZATION, o, e, c),
            ctx,
        )
        .for_each(log_result);

    tokio::select! {
        _ = async { tokio::join!(apps, groups, orgs) } => {}
        _ = namespaces => {}
    }
}

fn wire_applications(ctl: Controller<Application>, client: &Client, stores: &Stores) -> Controller<Application> {
    let secrets = watcher::Config::default().labels(&managed_secret_selector());
    let (s1, s2, s3) = (stores.clone(), stores.clone(), stores.clone());
    ctl.owns(Api::<Secret>::all(client.clone()), secrets)
        .watches(Api::<Group>::all(client.clone()), watcher::Config::default(), move |g: Group| {
            refs(s1.applications_of_group(&g.name_any()))
        })
        .watches(Api::<Organization>::all(client.clone()), watcher::Config::default(), move |o: Organization| {
            refs(s2.applications_of_organization(&o.name_any()))
        })
        .watches(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
            move |ns: PartialObjectMeta<Namespace>| {
                let name = ns.name_any();
                let apps = s3.applications.state().into_iter().filter(|a| a.namespace().as_deref() == Some(&name));
                refs(apps.collect())
            },
        )
}

fn wire_groups(ctl: Controller<Group>, client: &Client, stores: &Stores) -> Controller<Group> {
    let s1 = stores.clone();
    ctl.watches(Api::<Organization>::all(client.clone()), watcher::Config::default(), move |o: Organization| {
        refs(s1.groups_of_organization(&o.name_any()))
    })
    .watches(Api::<Application>::all(client.clone()), watcher::Config::default(), |a: Application| {
        // The Group it points at now, and the one it was last counted in.
        let previous = a.status.and_then(|s| s.group);
        names_to_refs([Some(a.spec.group_ref.name), previous])
    })
}

fn wire_organizations(ctl: Controller<Organization>, client: &Client, stores: &Stores) -> Controller<Organization> {
    let s1 = stores.clone();
    ctl.watches(Api::<Group>::all(client.clone()), watcher::Config::default(), |g: Group| {
        let previous = g.status.and_then(|s| s.organization);
        names_to_refs([Some(g.spec.organization_ref.name), previous])
    })
    .watches(Api::<Application>::all(client.clone()), watcher::Config::default(), move |a: Application| {
        let current = s1.organization_of_group(&a.spec.group_ref.name);
        let previous = a.status.and_then(|s| s.organization);
        names_to_refs([current, previous])
    })
}

/// The current time, in whole seconds as the API server stores it, so a status
/// computed twice in the same second compares equal.
pub(crate) fn now() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

fn refs<K: Resource<DynamicType = ()>>(objs: Vec<Arc<K>>) -> Vec<ObjectRef<K>> {
    objs.iter().map(|o| ObjectRef::from_obj(o.as_ref())).collect()
}

fn names_to_refs<K: Resource<DynamicType = ()>>(names: [Option<String>; 2]) -> Vec<ObjectRef<K>> {
    let mut names: Vec<String> = names.into_iter().flatten().collect();
    names.dedup();
    names.iter().map(|n| ObjectRef::new(n)).collect()
}

fn resync_ticks(every: Duration) -> impl futures::Stream<Item = ()> + Send {
    let start = tokio::time::Instant::now() + every;
    futures::stream::unfold(tokio::time::interval_at(start, every), |mut interval| async move {
        interval.tick().await;
        Some(((), interval))
    })
}

/// Controller names, as used in metrics labels.
pub const APPLICATION: &str = "application";
pub const GROUP: &str = "group";
pub const ORGANIZATION: &str = "organization";

/// Runs one reconcile in a tracing span, timed and counted.
async fn observed<K, F, Fut>(controller: &'static str, obj: Arc<K>, ctx: Arc<Context>, reconcile: F) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action>>,
{
    let key = object_key(obj.as_ref());
    let span = tracing::info_span!("reconcile", controller, object = %key);
    let _timer = ctx.metrics.start(controller);
    let result = reconcile(obj, ctx.clone()).instrument(span).await;
    if result.is_ok() {
        ctx.backoff().succeeded(&key);
        tracing::debug!(controller, object = %key, "reconciled");
    }
    result
}

fn error_policy<K>(controller: &'static str, obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let key = object_key(obj.as_ref());
    let reason = error.label();
    ctx.metrics.failures.get_or_create(&ErrorLabels { controller, reason }).inc();
    let delay = ctx.backoff().failed(&key);
    tracing::warn!(controller, object = %key, error = %error, reason, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    let meta = obj.meta();
    match &meta.namespace {
        Some(ns) => format!("{}/{ns}/{}", K::kind(&()), meta.name.as_deref().unwrap_or_default()),
        None => format!("{}/{}", K::kind(&()), meta.name.as_deref().unwrap_or_default()),
    }
}

async fn log_result<K: Resource, E: Debug>(result: std::result::Result<(ObjectRef<K>, Action), E>)
where
    K::DynamicType: Debug,
{
    if let Err(error) = result {
        tracing::debug!(?error, "controller event");
    }
}
