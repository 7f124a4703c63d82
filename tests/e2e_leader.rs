//! Two operator processes (the real binary) against one control plane: one leads,
//! the other waits; killing the leader hands over within the lease duration with
//! no key minted twice; SIGTERM releases the Lease. Also scrapes the HTTP endpoints.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::process::Process;
use common::{TestEnv, app_with_reason, eventually, key_of, unique};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

const LEASE_SECONDS: u64 = 6;

/// Each test runs its own operators, which reconcile every Application of the
/// cluster: two tests at once would mint each other's keys.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The value of one Prometheus sample, if present.
fn sample(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases.get_opt(name).await.ok()??.spec?.holder_identity.filter(|h| !h.is_empty())
}

async fn fingerprints(env: &TestEnv, names: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in names {
        let app = app_with_reason(env, name, "KeyIssued").await;
        let fp = app.status.as_ref().and_then(|s| s.key_fingerprint.clone()).unwrap();
        let secret = app.status.as_ref().and_then(|s| s.key_secret_name.clone()).unwrap();
        let key = key_of(&env.secrets().get(&secret).await.unwrap());
        assert_eq!(payi_operator::key::fingerprint(&key), fp, "{name}: Secret and status disagree");
        out.insert(name.clone(), fp);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn one_leader_reconciles_and_a_killed_leader_is_replaced_without_new_keys() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new("leader").await;
    let (org, group, lease) = (unique("org"), unique("grp"), unique("lease"));
    env.create_org(&org, None).await;
    env.create_group(&group, &org).await;
    let first: Vec<String> = (0..10).map(|i| format!("before-{i}")).collect();
    for name in &first {
        env.create_app(name, &group).await;
    }

    // The chart grants Lease access in its own namespace only; `make test` says which.
    let lease_ns = std::env::var("PAYI_TEST_LEASE_NAMESPACE").unwrap_or_else(|_| env.namespace.clone());
    let elected = |name: &str| {
        let args =
            ["--leader-election", "--lease-namespace", &lease_ns, "--lease-name", &lease, "--lease-seconds", "6"];
        Process::spawn(name, &args, &[])
    };
    let (a, b) = (elected("op-a"), elected("op-b"));
    let before = fingerprints(&env, &first).await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &lease_ns);
    let leader_name = eventually("a Lease holder", || holder(&leases, &lease)).await;
    let (leader, standby) = if leader_name == a.name { (a, b) } else { (b, a) };

    // Exactly one reconciles: the standby has run no reconcile at all.
    let standby_metrics = eventually("standby /metrics", || async { standby.get("/metrics").await }).await.1;
    assert_eq!(sample(&standby_metrics, "payi_operator_reconciles_total{controller=\"application\"}"), None);
    let (code, body) = standby.get("/readyz").await.unwrap();
    assert_eq!((code, body.contains("standby")), (200, true), "{body}");
    let leader_metrics = eventually("leader metrics to show the Group gauge", || async {
        let body = leader.get("/metrics").await?.1;
        let gauge = format!("payi_operator_group_applications{{organization=\"{org}\",group=\"{group}\"}}");
        (sample(&body, &gauge) == Some(10.0)).then_some(body)
    })
    .await;
    assert!(sample(&leader_metrics, "payi_operator_reconciles_total{controller=\"application\"}").unwrap() >= 10.0);
    assert!(sample(&leader_metrics, "payi_operator_keys_total{event=\"minted\"}").unwrap() >= 10.0);
    assert!(leader_metrics.contains("payi_operator_reconcile_duration_seconds_bucket{"));
    let (code, body) = leader.get("/readyz").await.unwrap();
    assert_eq!((code, body.contains("leading")), (200, true), "{body}");
    assert_eq!(leader.get("/healthz").await.unwrap().0, 200);
    for line in leader.logs().lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }

    // kill -9 the leader, and keep changing things while nobody leads.
    leader.signal("-KILL");
    let killed = Instant::now();
    let later: Vec<String> = (0..5).map(|i| format!("after-{i}")).collect();
    for name in &later {
        env.create_app(name, &group).await;
    }
    eventually("the standby to take the Lease", || async {
        (holder(&leases, &lease).await.as_deref() == Some(standby.name.as_str())).then_some(())
    })
    .await;
    let new_keys = fingerprints(&env, &later).await;
    let takeover = killed.elapsed();
    println!("takeover and 5 new keys {takeover:?} after kill -9 (lease {LEASE_SECONDS}s)");
    assert!(takeover < Duration::from_secs(LEASE_SECONDS + 8), "takeover took {takeover:?}");
    assert_eq!(fingerprints(&env, &first).await, before, "a key changed across the failover");
    assert_eq!(new_keys.len(), 5);
    for name in &later {
        let minted = env.await_events(name, "KeyMinted", 1).await;
        let occurrences: usize = minted.iter().map(common::occurrences).sum();
        assert_eq!(occurrences, 1, "{name} was minted more than once");
    }

    // SIGTERM: the new leader stops cleanly and gives the Lease back at once.
    standby.signal("-TERM");
    eventually("the Lease to be released", || async { holder(&leases, &lease).await.is_none().then_some(()) }).await;
    let mut standby = standby;
    let status = standby.exit_status().await;
    assert!(status.success(), "exit status {status:?}; log:\n{}", standby.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_leader_that_wakes_after_losing_the_lease_writes_nothing() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new("frozen").await;
    let (_, group) = env.org_and_group().await;
    let lease = unique("lease");
    let lease_ns = std::env::var("PAYI_TEST_LEASE_NAMESPACE").unwrap_or_else(|_| env.namespace.clone());
    let args = ["--leader-election", "--lease-namespace", &lease_ns, "--lease-name", &lease, "--lease-seconds", "6"];
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &lease_ns);
    let mut old = Process::spawn("frozen-a", &args, &[]);
    eventually("op-a to lead", || async { (holder(&leases, &lease).await? == old.name).then_some(()) }).await;
    let successor = Process::spawn("frozen-b", &args, &[]);
    env.create_app("before", &group).await;
    fingerprints(&env, &["before".to_string()]).await;

    old.signal("-STOP");
    eventually_longer("op-b to take over from the frozen leader", || async {
        (holder(&leases, &lease).await? == successor.name).then_some(())
    })
    .await;
    env.create_app("during", &group).await;
    fingerprints(&env, &["during".to_string()]).await;
    old.signal("-CONT");
    let status = old.exit_status().await;
    assert!(!status.success(), "the woken leader should stop: {status:?}");
    let logs = old.logs();
    let woke = logs.find("no longer the leader").expect("the woken leader says it lost the lease");
    assert!(!logs[woke..].contains("minted API key"), "the woken leader minted:\n{logs}");
    for name in ["before", "during"] {
        let events = env.events_for(name).await;
        let minted: Vec<_> = events.iter().filter(|e| e.reason.as_deref() == Some("KeyMinted")).collect();
        let occurrences: usize = minted.iter().map(|e| common::occurrences(e)).sum();
        assert_eq!(occurrences, 1, "{name}: {minted:?}");
    }
    let during = env.events_for("during").await;
    assert!(
        during.iter().all(|e| e.reporting_instance.as_deref() == Some(successor.name.as_str())),
        "an Event about 'during' came from the frozen leader: {during:?}"
    );
}

async fn eventually_longer<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    common::eventually_within(Duration::from_secs(60), what, probe).await
}
