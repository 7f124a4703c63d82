//! Spend at every level end to end: month-to-date usage counters written straight
//! into the ledger (the shared real Redis, as the gateway would), published by the
//! real operator on `status.usage` of Organizations, Groups, Applications and
//! their use cases (real API server), limits or not; `kubectl get`'s Month-USD
//! column read from the API server's own Table; no write while nothing changes;
//! writes paced by the budget.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use common::redis::{command, shared_url};
use common::{Operator, TestEnv, eventually_within, unique};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::PostParams;
use payi_operator::controller::usage::USAGE_MANAGER;
use payi_operator::crd::{Application, Group, MonthUsage, Organization, UsageStatus};
use payi_operator::limits::rule::{application_level, group_level, organization_level, use_case_level};
use payi_operator::limits::spend::{UsageKeys, month, previous_month};
use serde_json::{Value, json};

/// The shared operator, publishing usage (every second, at most 20 writes per
/// second; tests/common) from the shared Redis.
fn operator() {
    common::OPERATOR_USAGE.store(true, std::sync::atomic::Ordering::SeqCst);
    Operator::shared();
}

/// One month of counters as the gateway keeps them.
#[derive(Clone, Copy, Default)]
struct Counters {
    spend_nano: u64,
    tokens: u64,
    requests: u64,
    unpriced: u64,
}

/// Sets a level's counters of `month` in the ledger (zeros are left absent, as the gateway leaves them).
async fn set(level: &str, month: &str, c: Counters) {
    let keys = UsageKeys::of(level, month);
    let values = [c.spend_nano, c.tokens, c.requests, c.unpriced].map(|v| v.to_string());
    let mut args = vec!["MSET"];
    for (key, value) in keys.all().into_iter().zip(&values) {
        if value != "0" {
            args.extend([key, value.as_str()]);
        }
    }
    if args.len() > 1 {
        let reply = command(shared_url(), &args).await;
        assert_eq!(reply, "+OK\r\n", "MSET {args:?}");
    }
}

fn shown(month: &str, spend: &str, tokens: i64, requests: i64, unpriced: i64) -> MonthUsage {
    MonthUsage { month: month.into(), spend_usd: spend.into(), tokens, requests, unpriced_requests: unpriced }
}

fn zero(month: &str) -> MonthUsage {
    shown(month, "0", 0, 0, 0)
}

/// Waits (60 s at most: the first sweeps also give every object already in the
/// cluster its zeros) until an object's status.usage is `want`; says what it saw last.
async fn usage_becomes<F, Fut>(what: &str, want: &UsageStatus, get: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<UsageStatus>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seen = get().await;
        if seen.as_ref() == Some(want) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let logs = common::captured_logs();
            let tail: Vec<&str> = logs.lines().rev().take(20).collect();
            panic!(
                "timed out waiting for {what}:\nwant {want:?}\nsaw  {seen:?}\nlog tail (newest first):\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the Group reconciler has settled on the Group (Ready, any status, for
/// its generation), so no write of its own comes later.
async fn reconciled(groups: &Api<Group>, name: &str) -> Group {
    common::eventually(&format!("Group {name} reconciled"), || async {
        let group = groups.get(name).await.ok()?;
        let status = group.status.as_ref()?;
        let ready = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && status.observed_generation == group.metadata.generation).then_some(group)
    })
    .await
}

/// An object as the API server returns it, untyped.
async fn raw(client: &kube::Client, path: &str, accept: &str) -> Value {
    let request = http::Request::get(path).header("Accept", accept).body(Vec::new()).unwrap();
    serde_json::from_str(&client.request_text(request).await.unwrap()).unwrap()
}

/// The cell of column `column` in the API server's Table for one object: what
/// `kubectl get` prints.
async fn table_cell(client: &kube::Client, path: &str, column: &str) -> Option<Value> {
    let table = raw(client, path, "application/json;as=Table;v=v1;g=meta.k8s.io").await;
    let index = table["columnDefinitions"].as_array()?.iter().position(|c| c["name"] == column)?;
    Some(table["rows"][0]["cells"][index].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_level_shows_this_and_last_months_usage_exactly() {
    operator();
    let env = TestEnv::new("usage").await;
    let (org, group) = env.org_and_group().await;
    let quiet = unique("quiet");
    env.create_group(&quiet, &org).await;
    let app_name = "chat";
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "payi.io/v1alpha1", "kind": "Application", "metadata": {"name": app_name},
        "spec": {"groupRef": {"name": group}, "useCases": [{"name": "summarize"}, {"name": "draft"}]}
    }))
    .unwrap();
    env.apps().create(&PostParams::default(), &app).await.unwrap();
    let now = Utc::now();
    let (this, last) = (month(now), previous_month(now));
    let ns = env.namespace.clone();

    // The gateway adds every request to all four levels; here each level gets its own figures.
    let c = |spend_nano, tokens, requests, unpriced| Counters { spend_nano, tokens, requests, unpriced };
    set(&organization_level(&org), &this, c(5_000_000_001, 9_000, 40, 1)).await;
    set(&organization_level(&org), &last, c(70_250_000_000, 120_000, 900, 0)).await;
    set(&group_level(&group), &this, c(1_234_567_891, 1_500, 12, 0)).await;
    set(&application_level(&ns, app_name), &this, c(1_234_567_891, 1_500, 12, 0)).await;
    set(&application_level(&ns, app_name), &last, c(500_000_000, 80, 2, 3)).await;
    set(&use_case_level(&ns, app_name, "summarize"), &this, c(1_000_000_000, 1_000, 10, 0)).await;
    set(&use_case_level(&ns, app_name, "summarize"), &last, c(1, 1, 1, 0)).await;
    // A use case that is not declared is not published, whatever the ledger holds.
    set(&use_case_level(&ns, app_name, "ghost"), &this, c(7, 7, 7, 0)).await;

    let orgs: Api<Organization> = env.orgs();
    let want = UsageStatus {
        this_month: shown(&this, "5.000000001", 9_000, 40, 1),
        last_month: shown(&last, "70.25", 120_000, 900, 0),
        use_cases: vec![],
    };
    usage_becomes("the Organization's usage", &want, || async { orgs.get(&org).await.ok()?.status?.usage }).await;

    let groups: Api<Group> = env.groups();
    let want = UsageStatus {
        this_month: shown(&this, "1.234567891", 1_500, 12, 0),
        last_month: zero(&last),
        use_cases: vec![],
    };
    usage_becomes("the Group's usage", &want, || async { groups.get(&group).await.ok()?.status?.usage }).await;
    // A level with no counters at all shows zeros: what it spent is known to be nothing.
    let nothing = UsageStatus { this_month: zero(&this), last_month: zero(&last), use_cases: vec![] };
    usage_becomes("zeros on the quiet Group", &nothing, || async { groups.get(&quiet).await.ok()?.status?.usage })
        .await;

    let apps = env.apps();
    let want = UsageStatus {
        this_month: shown(&this, "1.234567891", 1_500, 12, 0),
        last_month: shown(&last, "0.5", 80, 2, 3),
        use_cases: vec![
            payi_operator::crd::UseCaseUsage {
                name: "summarize".into(),
                this_month: shown(&this, "1", 1_000, 10, 0),
                last_month: shown(&last, "0.000000001", 1, 1, 0),
            },
            payi_operator::crd::UseCaseUsage { name: "draft".into(), this_month: zero(&this), last_month: zero(&last) },
        ],
    };
    usage_becomes("the Application's and its use cases' usage", &want, || async {
        apps.get(app_name).await.ok()?.status?.usage
    })
    .await;

    // The wire names, as documented, as the API server stores them.
    let stored = raw(&env.client, &format!("/apis/payi.io/v1alpha1/groups/{group}"), "application/json").await;
    assert_eq!(
        stored["status"]["usage"]["thisMonth"],
        json!({"month": this, "spendUSD": "1.234567891", "tokens": 1500, "requests": 12}),
        "unpricedRequests is left out when 0"
    );
    // The usage task owns status.usage (its own field manager); the reconcilers' Ready stays.
    let managers: Vec<String> = groups
        .get(&group)
        .await
        .unwrap()
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.iter().any(|m| m == USAGE_MANAGER), "{managers:?}");
    let reconciled = reconciled(&groups, &group).await;
    assert_eq!(
        reconciled.status.and_then(|s| s.usage).map(|u| u.this_month.spend_usd).as_deref(),
        Some("1.234567891"),
        "the reconciler's status and the usage live side by side"
    );

    // `kubectl get payigroup` answers "what did this Group spend this month": the API
    // server's Table (what kubectl prints) has the figure in the Month-USD column.
    let client = env.client.clone();
    let cell = table_cell(&client, &format!("/apis/payi.io/v1alpha1/groups/{group}"), "Month-USD").await;
    assert_eq!(cell, Some(json!("1.234567891")));
    let cell = table_cell(&client, &format!("/apis/payi.io/v1alpha1/organizations/{org}"), "Month-USD").await;
    assert_eq!(cell, Some(json!("5.000000001")));
    let path = format!("/apis/payi.io/v1alpha1/namespaces/{ns}/applications/{app_name}");
    assert_eq!(table_cell(&client, &path, "Month-USD").await, Some(json!("1.234567891")));
    let cell = table_cell(&client, &format!("/apis/payi.io/v1alpha1/groups/{quiet}"), "Month-USD").await;
    assert_eq!(cell, Some(json!("0")));

    // More spend arrives: the status follows on the next sweep.
    set(&group_level(&group), &this, c(2_000_000_000, 3_000, 24, 0)).await;
    let want = UsageStatus { this_month: shown(&this, "2", 3_000, 24, 0), last_month: zero(&last), use_cases: vec![] };
    usage_becomes("the Group's new spend", &want, || async { groups.get(&group).await.ok()?.status?.usage }).await;

    common::delete(&apps, app_name).await;
    for g in [&group, &quiet] {
        common::delete(&groups, g).await;
    }
    common::delete(&orgs, &org).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unchanged_usage_is_not_written_again() {
    operator();
    let env = TestEnv::new("usage-idle").await;
    let (org, group) = env.org_and_group().await;
    let canary = unique("canary");
    env.create_group(&canary, &org).await;
    let now = Utc::now();
    let (this, last) = (month(now), previous_month(now));
    let groups: Api<Group> = env.groups();
    set(&group_level(&group), &this, Counters { spend_nano: 42, tokens: 4, requests: 1, unpriced: 0 }).await;
    let want =
        UsageStatus { this_month: shown(&this, "0.000000042", 4, 1, 0), last_month: zero(&last), use_cases: vec![] };
    usage_becomes("the Group's usage", &want, || async { groups.get(&group).await.ok()?.status?.usage }).await;
    let settled = reconciled(&groups, &group).await.metadata.resource_version;

    // Proof that sweeps run meanwhile: the canary's counters change twice and each
    // change is published, so at least two sweeps read the unchanged Group too.
    for requests in [1u64, 2] {
        set(&group_level(&canary), &this, Counters { requests, ..Default::default() }).await;
        let want = UsageStatus {
            this_month: shown(&this, "0", 0, requests as i64, 0),
            last_month: zero(&last),
            use_cases: vec![],
        };
        usage_becomes("the canary's usage", &want, || async { groups.get(&canary).await.ok()?.status?.usage }).await;
    }
    assert_eq!(
        groups.get(&group).await.unwrap().metadata.resource_version,
        settled,
        "an unchanged usage is not written"
    );
    for g in [&group, &canary] {
        common::delete(&groups, g).await;
    }
    common::delete(&env.orgs(), &org).await;
}

/// 30 Groups whose usage changes at once: the writes are spread by the budget (20
/// per second in the test operator), counted per second from the time the API
/// server recorded for this task's field manager on each object.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_keep_to_the_budget() {
    operator();
    let env = TestEnv::new("usage-budget").await;
    let org = unique("org");
    env.create_org(&org, None).await;
    let names: Vec<String> = (0..30).map(|i| format!("{}-{i}", unique("burst"))).collect();
    for name in &names {
        env.create_group(name, &org).await;
    }
    let groups: Api<Group> = env.groups();
    // Every Group first shows zeros; then all change in the same instant.
    let now = Utc::now();
    let (this, last) = (month(now), previous_month(now));
    for name in &names {
        let want = UsageStatus { this_month: zero(&this), last_month: zero(&last), use_cases: vec![] };
        usage_becomes("zeros on every Group", &want, || async { groups.get(name).await.ok()?.status?.usage }).await;
    }
    let mut mset = vec!["MSET".to_string()];
    for name in &names {
        mset.extend([UsageKeys::of(&group_level(name), &this).requests, "1".into()]);
    }
    let args: Vec<&str> = mset.iter().map(String::as_str).collect();
    assert_eq!(command(shared_url(), &args).await, "+OK\r\n");
    let written: Vec<Time> = eventually_within(Duration::from_secs(60), "all 30 Groups updated", || async {
        let mut times = vec![];
        for name in &names {
            let g = groups.get(name).await.ok()?;
            (g.status.as_ref()?.usage.as_ref()?.this_month.requests == 1).then_some(())?;
            let entry = g.metadata.managed_fields?.into_iter().find(|m| m.manager.as_deref() == Some(USAGE_MANAGER))?;
            times.push(entry.time?);
        }
        Some(times)
    })
    .await;
    let mut per_second: BTreeMap<i64, usize> = BTreeMap::new();
    for time in &written {
        *per_second.entry(time.0.as_second()).or_default() += 1;
    }
    let busiest = per_second.values().max().copied().unwrap_or(0);
    let span = per_second.keys().last().unwrap() - per_second.keys().next().unwrap();
    eprintln!("usage writes of 30 changed Groups per second: {per_second:?}");
    // 20 per second, give or take one write whose latency moved it across a second's edge.
    assert!(busiest <= 21, "{busiest} writes in one second: {per_second:?}");
    assert!(span >= 1, "30 writes at 20 per second take more than a second: {per_second:?}");
    for name in &names {
        common::delete(&groups, name).await;
    }
    common::delete(&env.orgs(), &org).await;
}
