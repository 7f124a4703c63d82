//! A highly available ledger: the real gateway against a real `redis-server`
//! speaking only TLS (a throwaway CA, a password), and against a primary, a
//! replica and three real `redis-sentinel`s whose primary is killed (SIGKILL)
//! under a steady load of charges. The operator reads through the same
//! constructor (`Ledger::open`), checked here too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use payi_operator::limits::connect::Target;
use payi_operator::limits::ledger::{Ledger, Timeouts, is_companion};
use serde_json::{Value, json};

use crate::common::gateway::{Gateway, post, providers_file, sum};
use crate::common::provider_sim::{ProviderSim, SimApi, expected_usage};
use crate::common::redis::{Options, Redis, Sentinels, Tls};
use crate::common::{self, TestEnv, app_with_reason, eventually, eventually_within, key_of, unique};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use payi_operator::crd::Application;

/// One token costs exactly 10^6 nano-USD, so every request costs the same known amount.
const PRICES: &str =
    "providers:\n  openai:\n    gpt-4o-mini: {input: 1000, cachedInput: 1000, cacheWrite1h: 1000, output: 1000}\n";
const PASSWORD: &str = "ledger-s3cret";

fn request_body() -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hello there"}]})
}

fn cost_nano() -> u64 {
    let u = expected_usage(SimApi::ChatCompletions, &request_body());
    (u.input + u.cached_input + u.cache_write + u.output) * 1_000_000
}

/// A fail-closed gateway on `url`: a request is served only when the ledger took its
/// reservation. The check may take a second (not 100 ms): these tests are about where
/// the ledger is, and a loaded test machine's latency would refuse requests too.
async fn gateway(name: &str, sim: &ProviderSim, url: &str, ca: &std::path::Path) -> Gateway {
    let dir = common::verifier::log_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    let providers = providers_file(&dir, &sim.addr.to_string(), &[("openai", "sk-sim")]);
    let prices = dir.join("prices.yaml");
    std::fs::write(&prices, PRICES).unwrap();
    let args = [
        "--prices-file",
        prices.to_str().unwrap(),
        "--limits-redis-url",
        url,
        "--limits-redis-ca-file",
        ca.to_str().unwrap(),
        "--limits-fail-closed",
        "--limits-timeout-ms",
        "1000",
    ];
    Gateway::start(name, &providers, &args).await
}

/// An Application with a block limit far above what the test spends; its key.
async fn app(env: &TestEnv, name: &str, group: &str) -> String {
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "payi.io/v1alpha1", "kind": "Application", "metadata": {"name": name},
        "spec": {"groupRef": {"name": group},
                 "limits": [{"name": "big", "max": "100000", "period": "month", "type": "block"}]}
    }))
    .unwrap();
    env.apps().create(&PostParams::default(), &app).await.unwrap();
    app_with_reason(env, name, "KeyIssued").await;
    key_of(&env.secrets().get(&format!("{name}-payi-key")).await.unwrap())
}

async fn call(gw: &Gateway, key: &str) -> common::gateway::Answer {
    let auth = format!("Bearer {key}");
    post(&gw.url(), "/openai/v1/chat/completions", &[("authorization", &auth)], &request_body().to_string())
        .await
        .expect("the gateway answers")
}

/// Until the gateway serves `key` (its key watch has the Application).
async fn served(gw: &Gateway, key: &str) {
    eventually("the gateway to serve the new Application", || async {
        let answer = call(gw, key).await;
        (answer.status == 200).then_some(())
    })
    .await;
}

async fn charged(gw: &Gateway) {
    eventually("the gateway's charges to reach the ledger", || async {
        (sum(&gw.metrics().await, "payi_limit_charges_queued", &[]) == 0.0).then_some(())
    })
    .await;
}

/// The limit's counter (nano-USD) on `redis`, and its key.
async fn counter(redis: &Redis, limit: &str) -> (String, u64) {
    let keys = redis.cli(&["KEYS", &format!("payi:nusd:limit:{limit}:*")]).await.expect("redis answers");
    let key = keys.lines().find(|k| !k.is_empty() && !is_companion(k)).unwrap_or_else(|| panic!("no counter: {keys}"));
    let value = redis.cli(&["GET", key]).await.expect("redis answers");
    (key.to_string(), value.trim().parse().unwrap_or(0))
}

/// What the operator reads (it builds its ledger with the same `Ledger::open`).
async fn operator_reads(url: &str, ca: &std::path::Path, key: &str) -> u64 {
    let target = Target { url: url.to_string(), ca_file: Some(ca.to_path_buf()) };
    let ledger = Ledger::open(&target, Timeouts::reader(Duration::from_millis(500)), Arc::default()).unwrap();
    eventually("the operator's ledger to read the counter", || async { ledger.spent(&[key.to_string()]).await.ok() })
        .await[0]
}

async fn clean_up(env: TestEnv, (org, group): (String, String)) {
    common::delete(&env.groups(), &group).await;
    common::delete(&env.orgs(), &org).await;
    common::delete(&Api::<Namespace>::all(env.client.clone()), &env.namespace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ledger_over_tls_checks_the_server_against_the_ca_file_and_charges_exactly() {
    common::Operator::shared();
    let tls = Tls::generate("ledger-tls");
    let redis =
        Redis::start_with(Options { tls: Some(tls.clone()), password: Some(PASSWORD.into()), ..Options::default() })
            .await;
    assert!(redis.url().starts_with("rediss://"), "TLS only: the server has no plain port");
    let sim = ProviderSim::start().await;
    let gw = gateway("ledger-tls", &sim, &redis.url(), &tls.ca).await;
    // The same server, but a CA that did not sign its certificate: no connection,
    // so fail-closed refuses (and nothing is sent in clear instead).
    let stranger = Tls::generate("ledger-tls-stranger");
    let refused = gateway("ledger-tls-wrong-ca", &sim, &redis.url(), &stranger.ca).await;
    let env = TestEnv::new("ha-tls").await;
    let levels = env.org_and_group().await;
    let key = app(&env, "tls", &levels.1).await;
    let id = format!("application/{}/tls/big", env.namespace);
    served(&gw, &key).await;
    for _ in 0..9 {
        assert_eq!(call(&gw, &key).await.status, 200);
    }
    charged(&gw).await;
    let (counter_key, spent) = counter(&redis, &id).await;
    assert_eq!(spent, 10 * cost_nano(), "every request charged once over TLS");
    assert_eq!(operator_reads(&redis.url(), &tls.ca, &counter_key).await, spent, "the operator reads over TLS");

    let answer = call(&refused, &key).await;
    assert_eq!(answer.status, 503, "a server the CA does not vouch for is no ledger: {}", answer.body);
    assert!(answer.body.contains("limits_unavailable"), "{}", answer.body);
    assert!(sum(&refused.metrics().await, "payi_limit_ledger_errors_total", &[]) >= 1.0);
    assert!(!refused.logs().contains(PASSWORD) && !gw.logs().contains(PASSWORD), "the password is never logged");
    // A CA for a URL that is not TLS is a configuration error at start, not a silent downgrade.
    let plain = Target { url: format!("redis://:{PASSWORD}@{}", redis.addr), ca_file: Some(tls.ca.clone()) };
    let error = Ledger::open(&plain, Timeouts::reader(Duration::from_millis(500)), Arc::default()).unwrap_err();
    assert!(error.to_string().contains("not TLS") && !error.to_string().contains(PASSWORD), "{error}");
    clean_up(env, levels).await;
}

/// One answer of the load: when it came and what it was.
struct Answered {
    at: Instant,
    status: u16,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_killed_under_load_is_followed_through_sentinel_and_loses_at_most_the_replication_window() {
    common::Operator::shared();
    let tls = Tls::generate("ledger-ha");
    let options = Options { tls: Some(tls.clone()), password: Some(PASSWORD.into()), replica_of: None };
    let mut primary = Redis::start_with(options.clone()).await;
    let replica = Redis::start_with(Options { replica_of: Some(primary.addr.clone()), ..options }).await;
    eventually("the replica to be in sync with the primary", || async {
        replica.cli(&["INFO", "replication"]).await?.contains("master_link_status:up").then_some(())
    })
    .await;
    let sentinels = Sentinels::start(&primary, 3, 2, 1).await;
    let url = sentinels.url();
    assert!(url.starts_with("rediss+sentinel://"), "{url}");
    let sim = ProviderSim::start().await;
    let gw = Arc::new(gateway("ledger-ha", &sim, &url, &tls.ca).await);
    let env = TestEnv::new("ha-sentinel").await;
    let levels = env.org_and_group().await;
    let key = app(&env, "ha", &levels.1).await;
    let id = format!("application/{}/ha/big", env.namespace);
    served(&gw, &key).await;
    charged(&gw).await;
    let c = cost_nano();

    // A steady load: four clients, each sending its next request when the last is answered.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (gw, key, stop) = (gw.clone(), key.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = vec![];
                while !stop.load(Ordering::Relaxed) {
                    let answer = call(&gw, &key).await;
                    assert!([200, 503].contains(&answer.status), "{answer:?}");
                    answers.push(Answered { at: Instant::now(), status: answer.status });
                    if answer.status == 503 {
                        // Refused while the ledger moves: try again soon, not in a spin.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    primary.kill();
    let killed = Instant::now();

    // Sentinel promotes the replica; the gateway follows and serves (and charges) again.
    let promoted = eventually_within(Duration::from_secs(60), "Sentinel to name the replica primary", || async {
        (sentinels.primary().await? == replica.addr).then_some(killed.elapsed())
    })
    .await;
    // The old primary is dead: whatever is applied from now on went to the new one.
    let applied = || async { sum(&gw.metrics().await, "payi_limit_charges_applied_total", &[]) };
    let at_promotion = applied().await;
    eventually_within(Duration::from_secs(60), "charges to be applied by the new primary", || async {
        (applied().await >= at_promotion + 10.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = vec![];
    for worker in load {
        answers.extend(worker.await.unwrap());
    }
    charged(&gw).await;

    let ok = |a: &&Answered| a.status == 200;
    let served_total = answers.iter().filter(ok).count() as u64 + 1; // and the first request (`served`)
    let before = answers.iter().filter(ok).filter(|a| a.at < killed).count() as u64;
    let last_second = answers.iter().filter(ok).filter(|a| a.at < killed && killed - a.at <= Duration::from_secs(1));
    let last_second = last_second.count() as u64;
    let after: Vec<&Answered> = answers.iter().filter(ok).filter(|a| a.at > killed).collect();
    let refused = answers.iter().filter(|a| a.status == 503).count();
    // Fail-closed refuses while no primary takes reservations: the window the failover cost.
    let refusals: Vec<Duration> = answers.iter().filter(|a| a.status == 503).map(|a| a.at - killed).collect();
    let window = (refusals.iter().min(), refusals.iter().max());
    let (counter_key, spent) = counter(&replica, &id).await;
    assert_eq!(spent % c, 0, "whole requests only");
    let charged_requests = spent / c;
    assert!(charged_requests <= served_total, "nothing charged twice: {charged_requests} of {served_total}");
    let lost = served_total - charged_requests;
    let last_refusal = window.1.copied().unwrap_or_default();
    let resumed = after.iter().filter(|a| a.at - killed > last_refusal).count();
    eprintln!(
        "failover: {served_total} requests served ({before} before the kill, {} after, {resumed} of them after the \
         last refusal), {refused} refused (503) from {:?} to {:?} after the kill; Sentinel named the replica \
         {promoted:?} after the kill; the new primary holds {charged_requests} charges: {lost} lost (acknowledged \
         by the old primary, not replicated), bound {last_second} (served in the last second before the kill)",
        after.len(),
        window.0,
        window.1,
    );
    assert!(resumed >= 10, "charges continue after the failover: {resumed} served after the last refusal");
    assert!(lost <= last_second, "lost {lost} charges, more than the last second before the kill ({last_second})");
    assert_eq!(operator_reads(&url, &tls.ca, &counter_key).await, spent, "the operator follows the failover");
    clean_up(env, levels).await;
}

/// Connections on `redis` other than the one asking (the only other client here is the ledger).
async fn ledger_clients(redis: &Redis) -> usize {
    let clients = redis.command(&["CLIENT", "LIST"]).await;
    clients.lines().filter(|l| l.contains(" cmd=") && !l.contains("cmd=client|list")).count()
}

/// Recovery without a request: the probe redials while Redis is away, so the ledger
/// is connected again within its interval (200 ms; 1 s asserted) of Redis answering,
/// and the first check is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_reconnects_by_itself_soon_after_redis_answers_again() {
    let mut redis = Redis::start().await;
    let ledger =
        Ledger::open(&Target::url(&redis.url()), Timeouts::reader(Duration::from_millis(100)), Arc::default()).unwrap();
    let keys = ["payi:nusd:test:probe".to_string()];
    eventually("the ledger to connect", || async { ledger.spent(&keys).await.ok() }).await;
    redis.stop();
    // Away long enough for several probes to fail.
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart(Duration::ZERO).await;
    let back = Instant::now();
    while ledger_clients(&redis).await == 0 {
        assert!(back.elapsed() < Duration::from_secs(5), "the ledger did not reconnect by itself");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reconnected = back.elapsed();
    eprintln!("the ledger reconnected {reconnected:?} after Redis answered, with no call made");
    assert!(reconnected <= Duration::from_secs(1), "reconnected only after {reconnected:?}");
    let checked = Instant::now();
    assert_eq!(ledger.spent(&keys).await.unwrap(), [0]);
    assert!(checked.elapsed() < Duration::from_millis(100), "the first check used the probe's connection");
}
