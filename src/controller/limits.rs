//! Publishes each limit's spend and state on its object: every `every` (30 s by
//! default) while leading, one ledger read for all limits of the cluster, then a
//! status write only for objects whose limits status changed (with its own field
//! manager, so the reconcilers' status writes and this one never undo each
//! other), and an Event per limit that changed state.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::context::Context;
use crate::crd::{Application, Group, LimitsStatus, Organization};
use crate::limits::ledger::Ledger;
use crate::limits::rule::{LimitRule, application_level, compile, group_level, organization_level, use_case_level};
use crate::limits::status::{Reading, limits_status, transitions};

/// The field manager of `status.limits`.
pub const LIMITS_MANAGER: &str = "payi-operator-limits";
/// Keys read per ledger round trip.
const KEYS_PER_READ: usize = 1000;

/// One object with limits: its rules (and their names and use cases) and what its status says now.
struct Target {
    object: Object,
    rules: Vec<(LimitRule, String, Option<String>)>,
    current: Option<LimitsStatus>,
}

enum Object {
    Organization(Arc<Organization>),
    Group(Arc<Group>),
    Application(Arc<Application>),
}

/// Runs until dropped.
pub async fn run(ctx: Arc<Context>, ledger: Arc<Ledger>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        if ctx.may_write().is_err() || !ctx.stores.is_synced() {
            continue;
        }
        if let Err(error) = sweep(&ctx, &ledger).await {
            tracing::warn!(%error, "limits status not updated this round");
        }
    }
}

async fn sweep(ctx: &Context, ledger: &Ledger) -> Result<(), crate::limits::ledger::LedgerError> {
    let targets = gather(ctx);
    let now = Utc::now();
    let keys: Vec<String> = targets.iter().flat_map(|t| t.rules.iter().map(|(r, _, _)| r.key(now).0)).collect();
    let mut spent = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(KEYS_PER_READ) {
        spent.extend(ledger.spent(chunk).await?);
    }
    let mut figures = spent.into_iter();
    for target in targets {
        let readings: Vec<Reading> = target
            .rules
            .iter()
            .map(|(rule, name, use_case)| Reading {
                rule,
                name,
                use_case: use_case.as_deref(),
                spent_nano: figures.next().unwrap_or(0),
            })
            .collect();
        let desired = limits_status(&readings, now);
        if desired == target.current {
            continue;
        }
        let notes = transitions(target.current.as_ref(), desired.as_ref());
        if let Err(error) = write(ctx, &target.object, desired.as_ref()).await {
            tracing::warn!(%error, "could not write limits status");
            continue;
        }
        match &target.object {
            Object::Organization(o) => ctx.publish(&**o, &notes).await,
            Object::Group(g) => ctx.publish(&**g, &notes).await,
            Object::Application(a) => ctx.publish(&**a, &notes).await,
        }
    }
    Ok(())
}

/// Every object of the caches that has limits.
fn gather(ctx: &Context) -> Vec<Target> {
    let mut targets = vec![];
    for org in ctx.stores.organizations.state() {
        let rules = named(&compile(&organization_level(&org.name_any()), &org.spec.limits), None);
        let current = org.status.as_ref().and_then(|s| s.limits.clone());
        if !rules.is_empty() || current.is_some() {
            targets.push(Target { object: Object::Organization(org), rules, current });
        }
    }
    for group in ctx.stores.groups.state() {
        let rules = named(&compile(&group_level(&group.name_any()), &group.spec.limits), None);
        let current = group.status.as_ref().and_then(|s| s.limits.clone());
        if !rules.is_empty() || current.is_some() {
            targets.push(Target { object: Object::Group(group), rules, current });
        }
    }
    for app in ctx.stores.applications.state() {
        let (namespace, name) = (app.namespace().unwrap_or_default(), app.name_any());
        let mut rules = named(&compile(&application_level(&namespace, &name), &app.spec.limits), None);
        for use_case in &app.spec.use_cases {
            let rules_of = compile(&use_case_level(&namespace, &name, &use_case.name), &use_case.limits);
            rules.extend(named(&rules_of, Some(&use_case.name)));
        }
        let current = app.status.as_ref().and_then(|s| s.limits.clone());
        if !rules.is_empty() || current.is_some() {
            targets.push(Target { object: Object::Application(app), rules, current });
        }
    }
    targets
}

fn named(rules: &[LimitRule], use_case: Option<&str>) -> Vec<(LimitRule, String, Option<String>)> {
    rules
        .iter()
        .map(|r| (r.clone(), r.id.rsplit('/').next().unwrap_or_default().to_string(), use_case.map(str::to_string)))
        .collect()
}

async fn write(ctx: &Context, object: &Object, limits: Option<&LimitsStatus>) -> Result<(), kube::Error> {
    ctx.may_write().map_err(|_| kube::Error::Service("no longer leading".into()))?;
    match object {
        Object::Organization(o) => apply(Api::<Organization>::all(ctx.client.clone()), &**o, limits).await,
        Object::Group(g) => apply(Api::<Group>::all(ctx.client.clone()), &**g, limits).await,
        Object::Application(a) => {
            let api = Api::<Application>::namespaced(ctx.client.clone(), &a.namespace().unwrap_or_default());
            apply(api, &**a, limits).await
        }
    }
}

async fn apply<K>(api: Api<K>, obj: &K, limits: Option<&LimitsStatus>) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    // None: this manager lets go of status.limits, which removes it.
    let status = match limits {
        Some(limits) => json!({"limits": limits}),
        None => json!({}),
    };
    let patch = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    api.patch_status(&obj.name_any(), &PatchParams::apply(LIMITS_MANAGER).force(), &Patch::Apply(patch)).await?;
    Ok(())
}
