//! Wires the three reconcilers to their watches and runs them until shutdown.

pub mod application;
mod context;
mod events;
mod grants;
pub mod group;
pub mod limits;
pub mod organization;
pub mod parent;
mod status;
pub mod usage;
mod watches;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use tracing::Instrument;

pub use context::{Context, Note, Stores};
pub use watches::WATCH_BACKOFF_MAX;

use crate::error::{Error, Result};
use crate::health::Health;
use crate::leader::Leadership;
use crate::metrics::{ErrorLabels, Metrics};

#[derive(Debug, Clone)]
pub struct Settings {
    /// Every object is reconciled again this often, to catch drift no watch reports.
    pub resync: Duration,
    /// Reconciles of one kind that may run at once.
    pub concurrency: u16,
    /// The limits ledger the gateways charge, and how often limits status is published from it.
    pub limits: Option<(Arc<crate::limits::ledger::Ledger>, Duration)>,
    /// How often and how fast month-to-date usage is published on every object
    /// (`status.usage`) from the same ledger; nothing without `limits`.
    pub usage: Option<usage::Pace>,
}

/// Runs the controllers until `shutdown` resolves, then lets in-flight reconciles
/// finish. `leadership` is checked before every write.
pub async fn run<F>(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    leadership: Leadership,
    shutdown: F,
) where
    F: Future<Output = ()> + Send + Sync + Clone + 'static,
{
    let (stores, _triggers, outboxes, watches) = watches::start(&client, health);
    let ctx = Arc::new(Context::new(client.clone(), stores.clone(), metrics, leadership));
    let config = kube::runtime::controller::Config::default().concurrency(settings.concurrency);
    // Parents only count children: coalesce bursts of child changes into one write.
    let parents = config.clone().debounce(Duration::from_millis(300));

    let apps = controller(stores.applications.clone(), outboxes.applications, &settings)
        .with_config(config)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |o, c| observed(APPLICATION, o, c, application::reconcile),
            |o, e, c| error_policy(APPLICATION, o, e, c),
            ctx.clone(),
        )
        .for_each(log_result);
    let groups = controller(stores.groups.clone(), outboxes.groups, &settings)
        .with_config(parents.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(|o, c| observed(GROUP, o, c, group::reconcile), |o, e, c| error_policy(GROUP, o, e, c), ctx.clone())
        .for_each(log_result);
    let limits = settings.limits.clone().map(|(ledger, every)| tokio::spawn(limits::run(ctx.clone(), ledger, every)));
    let usage = match (&settings.limits, settings.usage) {
        (Some((ledger, _)), Some(pace)) => Some(tokio::spawn(usage::run(ctx.clone(), ledger.clone(), pace))),
        _ => None,
    };
    let orgs = controller(stores.organizations.clone(), outboxes.organizations, &settings)
        .with_config(parents)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |o, c| observed(ORGANIZATION, o, c, organization::reconcile),
            |o, e, c| error_policy(ORGANIZATION, o, e, c),
            ctx,
        )
        .for_each(log_result);

    tokio::select! {
        _ = async { tokio::join!(apps, groups, orgs) } => {}
        _ = watches => {}
    }
    for task in [limits, usage].into_iter().flatten() {
        task.abort();
    }
}

/// A controller fed by the shared watches: single objects through `reconcile_on`,
/// everything on each resync tick or when a watch asks for it.
fn controller<K>(store: Store<K>, outbox: watches::Outbox<K>, settings: &Settings) -> Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let everything = futures::stream::select(resync_ticks(settings.resync), received(outbox.all));
    Controller::for_stream(futures::stream::pending(), store)
        .reconcile_on(received(outbox.one))
        .reconcile_all_on(everything)
}

fn received<T: Send + 'static>(rx: tokio::sync::mpsc::UnboundedReceiver<T>) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

/// The current time, in whole seconds as the API server stores it, so a status
/// computed twice in the same second compares equal.
pub(crate) fn now() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
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

pub(crate) fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
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
