//! Publishes month-to-date usage on every object (`status.usage`), limits or not.
//!
//! Every `every` (30 s by default) while leading: gather every Organization,
//! Group and Application of the caches with their levels (an Application's own
//! and one per declared use case); read this month's and last month's counters of
//! all levels from the ledger, one `MGET` per 1,000 keys; decide each object's
//! `status.usage` (pure: [`desired_usage`]); write it only where it changed, with
//! its own field manager, paced by a [`WriteBudget`] shared by all objects (10
//! writes per second by default) and at most one period's budget per sweep, the
//! objects this task wrote least recently first. The reconcilers carry
//! `status.usage` in their own status writes, as they carry `status.limits`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use super::context::Context;
use super::status::Written;
use crate::crd::limits::usd_text;
use crate::crd::{Application, Group, MonthUsage, Organization, UsageStatus, UseCaseUsage};
use crate::limits::ledger::{Ledger, LedgerError};
use crate::limits::rule::{application_level, group_level, organization_level, use_case_level};
use crate::limits::spend::{self, UsageKeys};

/// The field manager of `status.usage`.
pub const USAGE_MANAGER: &str = "payi-operator-usage";
/// Keys read per ledger round trip.
const KEYS_PER_READ: usize = 1000;
/// Keys read per level: this month's four counters, then last month's four.
pub const KEYS_PER_LEVEL: usize = 8;

/// How often usage is read and how fast it may be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    /// One sweep (a ledger read of every level) this often.
    pub every: Duration,
    /// Status writes per second across all objects, at most.
    pub writes_per_second: u32,
}

impl Pace {
    /// The writes one sweep may make: one period's budget (at least one), so a sweep
    /// ends about when the next one is due and what is left waits for fresher figures.
    pub fn writes_per_sweep(&self) -> usize {
        let per_second = u128::from(self.writes_per_second.max(1));
        let budget = self.every.as_millis() * per_second / 1000;
        usize::try_from(budget).unwrap_or(usize::MAX).max(1)
    }
}

// ---- Decide (pure) ----

/// The two months a reading covers, in UTC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Months {
    pub this: String,
    pub last: String,
}

impl Months {
    pub fn at(now: DateTime<Utc>) -> Self {
        Self { this: spend::month(now), last: spend::previous_month(now) }
    }
}

/// The [`KEYS_PER_LEVEL`] keys of one level: this month's counters, then last month's,
/// each in [`UsageKeys::all`] order (spend, tokens, requests, unpriced).
pub fn level_keys(level: &str, months: &Months) -> Vec<String> {
    let this = UsageKeys::of(level, &months.this);
    let last = UsageKeys::of(level, &months.last);
    this.all().into_iter().chain(last.all()).map(str::to_string).collect()
}

/// One level's counters in one month, as the ledger holds them (an absent key is 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub spend_nano: u64,
    pub tokens: u64,
    pub requests: u64,
    pub unpriced: u64,
}

impl Counters {
    /// From figures in [`UsageKeys::all`] order; missing figures are 0.
    fn of(figures: &[u64]) -> Self {
        let at = |i: usize| figures.get(i).copied().unwrap_or(0);
        Self { spend_nano: at(0), tokens: at(1), requests: at(2), unpriced: at(3) }
    }
}

/// One month of one level as status shows it: spend as exact decimal USD text.
pub fn month_usage(month: &str, counters: Counters) -> MonthUsage {
    MonthUsage {
        month: month.to_string(),
        spend_usd: usd_text(counters.spend_nano),
        tokens: count(counters.tokens),
        requests: count(counters.requests),
        unpriced_requests: count(counters.unpriced),
    }
}

fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// This month and last month of one level from its [`KEYS_PER_LEVEL`] figures.
fn months_of(months: &Months, figures: &[u64]) -> (MonthUsage, MonthUsage) {
    let (this, last) = figures.split_at(figures.len().min(KEYS_PER_LEVEL / 2));
    (month_usage(&months.this, Counters::of(this)), month_usage(&months.last, Counters::of(last)))
}

/// An object's `status.usage` from the figures of its levels, as [`level_keys`] read
/// them: its own level's first, then each of `use_cases` in order. Missing figures are 0.
pub fn desired_usage(months: &Months, use_cases: &[String], figures: &[u64]) -> UsageStatus {
    let mut levels = figures.chunks(KEYS_PER_LEVEL);
    let (this_month, last_month) = months_of(months, levels.next().unwrap_or_default());
    let use_cases = use_cases
        .iter()
        .map(|name| {
            let (this_month, last_month) = months_of(months, levels.next().unwrap_or_default());
            UseCaseUsage { name: name.clone(), this_month, last_month }
        })
        .collect();
    UsageStatus { this_month, last_month, use_cases }
}

/// The status writes all objects share: one every `1/writes_per_second`, across
/// sweeps, so no second holds more than `writes_per_second` of them. Unused slots
/// are not saved up: after a quiet minute the next write goes at once, the one
/// after it an interval later (no burst).
#[derive(Debug)]
pub struct WriteBudget {
    interval: Duration,
    next: Option<Instant>,
}

impl WriteBudget {
    pub fn per_second(writes: u32) -> Self {
        Self { interval: Duration::from_secs(1) / writes.max(1), next: None }
    }

    /// When the next write may start, given it is `now`; that slot is taken.
    pub fn slot(&mut self, now: Instant) -> Instant {
        let at = self.next.filter(|next| *next > now).unwrap_or(now);
        self.next = Some(at + self.interval);
        at
    }
}

/// Which changed objects this sweep writes, in order: those this task wrote least
/// recently first (never written before all), then by key; at most `limit`. The
/// rest wait for the next sweep, which reads fresher figures. Returns the chosen
/// and how many wait.
pub fn write_order<T>(
    mut changed: Vec<(String, T)>,
    last_written: &HashMap<String, Instant>,
    limit: usize,
) -> (Vec<(String, T)>, usize) {
    changed.sort_by(|(a, _), (b, _)| (last_written.get(a), a).cmp(&(last_written.get(b), b)));
    let waiting = changed.len().saturating_sub(limit);
    changed.truncate(limit);
    (changed, waiting)
}

// ---- Gather and apply ----

enum Object {
    Organization(Arc<Organization>),
    Group(Arc<Group>),
    Application(Arc<Application>),
}

/// One object with its levels and what its status says now.
struct Target {
    object: Object,
    /// Its own level, then one per declared use case.
    levels: Vec<String>,
    use_cases: Vec<String>,
    current: Option<UsageStatus>,
}

/// What the task keeps between sweeps.
struct Publisher {
    budget: WriteBudget,
    /// When this task last wrote each object (by uid): the order of the next writes.
    last_written: HashMap<String, Instant>,
    /// What it wrote that the cache may not show yet.
    written: Written<UsageStatus>,
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default)]
struct Sweep {
    objects: usize,
    keys: usize,
    changed: usize,
    written: usize,
    waiting: usize,
    failed: usize,
}

impl Sweep {
    fn log(&self) {
        let Sweep { objects, keys, changed, written, waiting, failed } = *self;
        if waiting > 0 || failed > 0 {
            tracing::info!(
                objects,
                keys,
                changed,
                written,
                waiting,
                failed,
                "usage status: not all changes written this sweep"
            );
        } else {
            tracing::debug!(objects, keys, changed, written, "usage status published");
        }
    }
}

/// Runs until dropped.
pub async fn run(ctx: Arc<Context>, ledger: Arc<Ledger>, pace: Pace) {
    let mut tick = tokio::time::interval(pace.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut publisher = Publisher {
        budget: WriteBudget::per_second(pace.writes_per_second),
        last_written: HashMap::new(),
        written: Written::default(),
    };
    loop {
        tick.tick().await;
        if ctx.may_write().is_err() || !ctx.stores.is_synced() {
            continue;
        }
        match sweep(&ctx, &ledger, pace, &mut publisher).await {
            Ok(done) => done.log(),
            Err(error) => tracing::warn!(%error, "usage status not updated this round"),
        }
    }
}

async fn sweep(ctx: &Context, ledger: &Ledger, pace: Pace, publisher: &mut Publisher) -> Result<Sweep, LedgerError> {
    let targets = gather(ctx);
    let months = Months::at(Utc::now());
    let keys: Vec<String> = targets.iter().flat_map(|t| t.levels.iter().flat_map(|l| level_keys(l, &months))).collect();
    let mut figures = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(KEYS_PER_READ) {
        figures.extend(ledger.spent(chunk).await?);
    }
    let mut done = Sweep { objects: targets.len(), keys: keys.len(), ..Default::default() };
    // Forget objects that are gone.
    let present: std::collections::HashSet<String> = targets.iter().map(|t| t.object.uid()).collect();
    publisher.last_written.retain(|uid, _| present.contains(uid));
    publisher.written.retain(|uid| present.contains(uid));
    let mut figures = figures.as_slice();
    let mut changed = vec![];
    for target in targets {
        let (own, rest) = figures.split_at((target.levels.len() * KEYS_PER_LEVEL).min(figures.len()));
        figures = rest;
        let desired = desired_usage(&months, &target.use_cases, own);
        let (uid, version) = (target.object.uid(), target.object.meta().resource_version.clone());
        // Asked first: it also forgets a write the cache has caught up with.
        let pending = publisher.written.is_pending(&uid, version.as_deref(), &desired);
        if pending || target.current.as_ref() == Some(&desired) {
            continue;
        }
        changed.push((uid, (target.object, desired)));
    }
    done.changed = changed.len();
    let (chosen, waiting) = write_order(changed, &publisher.last_written, pace.writes_per_sweep());
    done.waiting = waiting;
    for (uid, (object, usage)) in chosen {
        tokio::time::sleep_until(publisher.budget.slot(Instant::now())).await;
        if ctx.may_write().is_err() {
            break;
        }
        match write(ctx, &object, &usage).await {
            Ok(version) => {
                publisher.written.remember(&uid, &usage, version.as_deref());
                publisher.last_written.insert(uid, Instant::now());
                done.written += 1;
            }
            // Deleted since the caches were read: nothing to publish on.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => {
                done.failed += 1;
                tracing::warn!(%error, object = %object.key(), "could not write usage status");
            }
        }
    }
    Ok(done)
}

/// Every object of the caches (but those being deleted) with its levels.
fn gather(ctx: &Context) -> Vec<Target> {
    let mut targets = vec![];
    let live = |meta: &kube::api::ObjectMeta| meta.deletion_timestamp.is_none();
    for org in ctx.stores.organizations.state().into_iter().filter(|o| live(&o.metadata)) {
        let levels = vec![organization_level(&org.name_any())];
        let current = org.status.as_ref().and_then(|s| s.usage.clone());
        targets.push(Target { object: Object::Organization(org), levels, use_cases: vec![], current });
    }
    for group in ctx.stores.groups.state().into_iter().filter(|g| live(&g.metadata)) {
        let levels = vec![group_level(&group.name_any())];
        let current = group.status.as_ref().and_then(|s| s.usage.clone());
        targets.push(Target { object: Object::Group(group), levels, use_cases: vec![], current });
    }
    for app in ctx.stores.applications.state().into_iter().filter(|a| live(&a.metadata)) {
        let (namespace, name) = (app.namespace().unwrap_or_default(), app.name_any());
        let use_cases: Vec<String> = app.spec.use_cases.iter().map(|u| u.name.clone()).collect();
        let mut levels = vec![application_level(&namespace, &name)];
        levels.extend(use_cases.iter().map(|u| use_case_level(&namespace, &name, u)));
        let current = app.status.as_ref().and_then(|s| s.usage.clone());
        targets.push(Target { object: Object::Application(app), levels, use_cases, current });
    }
    targets
}

impl Object {
    fn meta(&self) -> &kube::api::ObjectMeta {
        match self {
            Object::Organization(o) => &o.metadata,
            Object::Group(g) => &g.metadata,
            Object::Application(a) => &a.metadata,
        }
    }

    fn uid(&self) -> String {
        self.meta().uid.clone().unwrap_or_default()
    }

    fn key(&self) -> String {
        match self {
            Object::Organization(o) => super::object_key(&**o),
            Object::Group(g) => super::object_key(&**g),
            Object::Application(a) => super::object_key(&**a),
        }
    }
}

/// Writes `status.usage` alone (server-side apply, this task's field manager);
/// returns the object's new resourceVersion.
async fn write(ctx: &Context, object: &Object, usage: &UsageStatus) -> Result<Option<String>, kube::Error> {
    match object {
        Object::Organization(o) => apply(Api::<Organization>::all(ctx.client.clone()), &**o, usage).await,
        Object::Group(g) => apply(Api::<Group>::all(ctx.client.clone()), &**g, usage).await,
        Object::Application(a) => {
            let api = Api::<Application>::namespaced(ctx.client.clone(), &a.namespace().unwrap_or_default());
            apply(api, &**a, usage).await
        }
    }
}

async fn apply<K>(api: Api<K>, obj: &K, usage: &UsageStatus) -> Result<Option<String>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": {"usage": usage}});
    let params = PatchParams::apply(USAGE_MANAGER).force();
    let written = api.patch_status(&obj.name_any(), &params, &Patch::Apply(patch)).await?;
    Ok(written.resource_version())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn month(m: &str, spend: &str, tokens: i64, requests: i64, unpriced: i64) -> MonthUsage {
        MonthUsage { month: m.into(), spend_usd: spend.into(), tokens, requests, unpriced_requests: unpriced }
    }

    #[test]
    fn keys_are_this_months_then_last_months_in_counter_order() {
        let months = Months::at(at("2026-12-07T12:00:00Z"));
        let keys = level_keys("group/engineering", &months);
        assert_eq!(keys.len(), KEYS_PER_LEVEL);
        assert_eq!(keys[0], "payi:nusd:spend:group/engineering:m2026-12");
        assert_eq!(keys[3], "payi:unpriced:group/engineering:m2026-12");
        assert_eq!(keys[4], "payi:nusd:spend:group/engineering:m2026-11");
        assert_eq!(keys[6], "payi:requests:group/engineering:m2026-11");
    }

    #[test]
    fn usage_is_exact_decimal_usd_and_absent_counters_are_zero() {
        let months = Months::at(at("2026-12-07T12:00:00Z"));
        let figures = [1_234_567_891, 1500, 12, 0, 2_500_000_000, 700, 3, 2];
        let usage = desired_usage(&months, &[], &figures);
        assert_eq!(usage.this_month, month("2026-12", "1.234567891", 1500, 12, 0));
        assert_eq!(usage.last_month, month("2026-11", "2.5", 700, 3, 2));
        assert!(usage.use_cases.is_empty());
        let nothing = desired_usage(&months, &[], &[0; 8]);
        assert_eq!(nothing.this_month, month("2026-12", "0", 0, 0, 0));
        assert_eq!(nothing.last_month, month("2026-11", "0", 0, 0, 0));
        assert_eq!(desired_usage(&months, &[], &[]), nothing, "missing figures read as zero");
        let huge = desired_usage(&months, &[], &[u64::MAX, u64::MAX, 0, 0, 0, 0, 0, 0]);
        assert_eq!(huge.this_month.spend_usd, "18446744073.709551615", "no float anywhere");
        assert_eq!(huge.this_month.tokens, i64::MAX);
    }

    #[test]
    fn use_cases_follow_their_application_in_declared_order() {
        let months = Months::at(at("2026-12-07T12:00:00Z"));
        let names = vec!["summarize".to_string(), "draft".to_string()];
        let mut figures = vec![3_000_000_000, 30, 3, 0, 0, 0, 0, 0];
        figures.extend([1_000_000_000, 10, 1, 0, 0, 0, 0, 0]);
        figures.extend([2_000_000_000, 20, 2, 1, 5, 0, 1, 0]);
        let usage = desired_usage(&months, &names, &figures);
        assert_eq!(usage.this_month.spend_usd, "3");
        assert_eq!(usage.use_cases.len(), 2);
        assert_eq!(usage.use_cases[0].name, "summarize");
        assert_eq!(usage.use_cases[0].this_month, month("2026-12", "1", 10, 1, 0));
        assert_eq!(usage.use_cases[1].name, "draft");
        assert_eq!(usage.use_cases[1].this_month, month("2026-12", "2", 20, 2, 1));
        assert_eq!(usage.use_cases[1].last_month, month("2026-11", "0.000000005", 0, 1, 0));
    }

    #[test]
    fn the_month_rolls_over_in_utc_and_this_month_becomes_last_month() {
        let december = Months::at(at("2026-12-31T23:59:59Z"));
        let january = Months::at(at("2027-01-01T00:00:00Z"));
        assert_eq!(december, Months { this: "2026-12".into(), last: "2026-11".into() });
        assert_eq!(january, Months { this: "2027-01".into(), last: "2026-12".into() });
        assert_eq!(Months::at(at("2026-12-31T23:30:00-01:00")).this, "2027-01", "UTC, not local time");
        // The same level read on both sides of midnight: December's keys move to last month's place.
        let level = "organization/acme";
        assert_eq!(level_keys(level, &december)[..4], level_keys(level, &january)[4..]);
        let before = desired_usage(&december, &[], &[9_000_000_000, 90, 9, 0, 0, 0, 0, 0]);
        let after = desired_usage(&january, &[], &[0, 0, 0, 0, 9_000_000_000, 90, 9, 0]);
        assert_eq!(after.last_month, before.this_month);
        assert_eq!(after.this_month, month("2027-01", "0", 0, 0, 0));
        assert_ne!(after, before, "a rollover is a change: every object is written once");
    }

    #[test]
    fn the_budget_spaces_writes_and_saves_no_burst() {
        let start = Instant::now();
        let mut budget = WriteBudget::per_second(10);
        // 25 writes wanted at once: one every 100 ms.
        let slots: Vec<Duration> = (0..25).map(|_| budget.slot(start) - start).collect();
        assert_eq!(slots[0], Duration::ZERO);
        assert_eq!(slots[1], Duration::from_millis(100));
        assert_eq!(slots[24], Duration::from_millis(2400));
        // No window of one second holds more than 10.
        for first in &slots {
            let within = slots.iter().filter(|s| **s >= *first && **s < *first + Duration::from_secs(1)).count();
            assert!(within <= 10, "{within} writes within a second of {first:?}");
        }
        // A writer that is slower than the budget is never held back.
        let later = start + Duration::from_secs(10);
        assert_eq!(budget.slot(later), later);
        // After a quiet minute: one at once, the next an interval later, not a burst.
        let quiet = later + Duration::from_secs(60);
        assert_eq!(budget.slot(quiet), quiet);
        assert_eq!(budget.slot(quiet), quiet + Duration::from_millis(100));
        assert_eq!(WriteBudget::per_second(0).interval, Duration::from_secs(1), "0 is taken as 1");
    }

    #[test]
    fn a_sweep_writes_one_periods_budget_least_recently_written_first() {
        let pace = Pace { every: Duration::from_secs(30), writes_per_second: 10 };
        assert_eq!(pace.writes_per_sweep(), 300);
        assert_eq!(Pace { every: Duration::from_millis(100), writes_per_second: 1 }.writes_per_sweep(), 1);
        let now = Instant::now();
        let last: HashMap<String, Instant> =
            [("a".to_string(), now + Duration::from_secs(2)), ("b".to_string(), now)].into();
        let changed = ["a", "b", "c", "d"].map(|k| (k.to_string(), ())).to_vec();
        let (chosen, waiting) = write_order(changed.clone(), &last, 3);
        let keys: Vec<&str> = chosen.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!((keys, waiting), (vec!["c", "d", "b"], 1), "never written first, then the stalest");
        let (all, waiting) = write_order(changed, &last, 10);
        assert_eq!((all.len(), waiting), (4, 0));
        let (none, waiting) = write_order(Vec::<(String, ())>::new(), &last, 10);
        assert_eq!((none.len(), waiting), (0, 0), "nothing changed, nothing written");
    }
}
