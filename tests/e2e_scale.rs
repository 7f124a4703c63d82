//! Writes at scale, counted by the API server itself (`apiserver_request_total`).
//!
//! Alone in its test binary, so no other test writes while it counts.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Operator, TestEnv, eventually_within, writes};

/// Generous: the figures printed are the measurement, this only bounds a hang.
const SCALE_TIMEOUT: Duration = Duration::from_secs(300);
use futures::{StreamExt, TryStreamExt};

const APPS: usize = 1000;

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0))).filter(|(_, v)| *v > 0).collect()
}

/// Waits until the operator has run at least `apps` Application reconciles and
/// then none for a second, i.e. it is idle.
async fn settle(operator: &Operator, apps: u64) {
    eventually_within(SCALE_TIMEOUT, "the operator to reconcile every Application and go idle", || async {
        let before = operator.metrics.reconciles_of("application") + operator.metrics.reconciles_of("group");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = operator.metrics.reconciles_of("application") + operator.metrics.reconciles_of("group");
        (operator.metrics.reconciles_of("application") >= apps && before == after).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resync_of_a_thousand_converged_applications_writes_nothing() {
    let env = TestEnv::new("scale").await;
    let (_, group) = env.org_and_group().await;
    futures::stream::iter(0..APPS)
        .map(|i| {
            let env = &env;
            let group = &group;
            async move { env.create_app(&format!("app-{i:04}"), group).await }
        })
        .buffer_unordered(32)
        .map(Ok::<_, ()>)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();

    // Cold start: every Application gets a key.
    let before_cold = writes(&env.client).await;
    let started = Instant::now();
    let first = Operator::start();
    eventually_within(SCALE_TIMEOUT, "all Applications Ready in the Group's status", || async {
        let status = env.groups().get(&group).await.ok()?.status?;
        (status.applications.ready as usize == APPS).then_some(())
    })
    .await;
    let converged = started.elapsed();
    settle(&first, APPS as u64).await;
    let cold = diff(&writes(&env.client).await, &before_cold);
    first.stop();

    let group_status_writes = cold.get("groups/status").copied().unwrap_or(0);
    let org_status_writes = cold.get("organizations/status").copied().unwrap_or(0);
    println!("cold start of {APPS} Applications: converged in {converged:?}; writes by resource: {cold:?}");
    assert!(cold.get("secrets").copied().unwrap_or(0) >= APPS as u64, "the counter misses writes: {cold:?}");
    assert!(group_status_writes < 50, "{group_status_writes} Group status writes for one burst: {cold:?}");
    assert!(org_status_writes < 50, "{org_status_writes} Organization status writes for one burst: {cold:?}");

    // Restart: a fresh operator re-reads and reconciles everything, and must write nothing.
    let before_resync = writes(&env.client).await;
    let started = Instant::now();
    let second = Operator::start();
    settle(&second, APPS as u64).await;
    let resync_time = started.elapsed();
    let resync = diff(&writes(&env.client).await, &before_resync);
    let reconciles = second.metrics.reconciles_of("application");
    second.stop();
    println!("resync of {APPS} converged Applications: {reconciles} reconciles in {resync_time:?}; writes: {resync:?}");
    assert!(resync.is_empty(), "a resync of converged Applications wrote: {resync:?}");
}
