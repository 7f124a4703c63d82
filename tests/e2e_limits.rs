//! Limits end to end: budgets declared on the objects (real API server, real
//! operator), enforced by the real gateway binary against a real Redis ledger
//! (Debian's redis-server), with the provider simulated on loopback.
//!
//! Prices are set so one token costs exactly 0.001 USD (10^6 nano-USD), and every
//! request here is the same, so each costs the same known amount and budgets are
//! written as multiples of it.

mod common;

use std::time::{Duration, Instant};

use chrono::Datelike;

use common::gateway::{Gateway, post, providers_file, sum};
use common::provider_sim::{ProviderSim, SimApi, expected_usage};
use common::redis::{Redis, command, shared_url};
use common::sdk::drive;
use common::{Operator, TestEnv, eventually, unique};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams};
use payi_operator::crd::{Group, Organization};
use serde_json::{Value, json};

/// Who sends a request: a key and the use case it names.
type Callers<'a> = Vec<(&'a str, Option<&'a str>)>;

/// The shared operator, publishing limits status from the shared Redis.
fn operator() {
    common::OPERATOR_LIMITS.store(true, std::sync::atomic::Ordering::SeqCst);
    Operator::shared();
}

const PRICES: &str =
    "providers:\n  openai:\n    gpt-4o-mini: {input: 1000, cachedInput: 1000, cacheWrite1h: 1000, output: 1000}\n";

fn request_body() -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hello there"}]})
}

/// What one request costs, in nano-USD (the ledger's unit; 10^6 per token).
fn cost_nano() -> u64 {
    let u = expected_usage(SimApi::ChatCompletions, &request_body());
    (u.input + u.cached_input + u.cache_write + u.output) * 1_000_000
}

/// What a block limit reserves for one request before the provider is called: an
/// upper bound of its cost, one token per body byte plus its `max_tokens` (8), each
/// at the dearest price (all are 10^6 nano-USD per token here).
fn bound_nano() -> u64 {
    (request_body().to_string().len() as u64 + 8) * 1_000_000
}

fn usd(nano: u64) -> String {
    let text = format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

struct Setup {
    env: TestEnv,
    org: String,
    groups: Vec<String>,
}

impl Setup {
    async fn clean_up(self) {
        for group in &self.groups {
            common::delete(&self.env.groups(), group).await;
        }
        common::delete(&self.env.orgs(), &self.org).await;
        common::delete(&Api::<Namespace>::all(self.env.client.clone()), &self.env.namespace).await;
    }
}

async fn gateway(name: &str, sim: &ProviderSim, redis_url: &str, extra: &[&str]) -> Gateway {
    let dir = common::verifier::log_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    let providers = providers_file(&dir, &sim.addr.to_string(), &[("openai", "sk-sim")]);
    let prices = dir.join("prices.yaml");
    std::fs::write(&prices, PRICES).unwrap();
    let mut args = vec!["--prices-file", prices.to_str().unwrap(), "--limits-redis-url", redis_url];
    args.extend_from_slice(extra);
    Gateway::start(name, &providers, &args).await
}

/// One chat request with `key` (and a use case), answered whole.
async fn call(gw: &Gateway, key: &str, use_case: Option<&str>) -> common::gateway::Answer {
    let auth = format!("Bearer {key}");
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(use_case) = use_case {
        headers.push(("xProxy-UseCase-Name", use_case));
    }
    post(&gw.url(), "/openai/v1/chat/completions", &headers, &request_body().to_string())
        .await
        .expect("the gateway answers")
}

/// Waits until this gateway has handed every charge to the ledger.
async fn charged(gw: &Gateway) {
    eventually("the gateway's charges to reach the ledger", || async {
        (sum(&gw.metrics().await, "payi_limit_charges_queued", &[]) == 0.0).then_some(())
    })
    .await;
}

/// Waits until the gateway's index has `limit` (it follows the objects by watch).
async fn enforced(gw: &Gateway, key: &str, use_case: Option<&str>, limit: &str) {
    eventually(&format!("the gateway to know limit {limit}"), || async {
        let metrics = gw.metrics().await;
        if sum(&metrics, "payi_limit_max_usd", &[("limit", limit)]) > 0.0 {
            return Some(());
        }
        // A request makes the gateway evaluate the covering limits (and charges it).
        // (401 until the gateway's watch has the Application.)
        let answer = call(gw, key, use_case).await;
        assert!([200, 400, 401].contains(&answer.status), "{answer:?}");
        None
    })
    .await;
    charged(gw).await;
}

async fn spent(redis_url: &str, limit: &str) -> u64 {
    let keys = command(redis_url, &["KEYS", &format!("payi:nusd:limit:{limit}:*")]).await;
    // The counter, not its remainder or its reservations.
    let key = keys
        .lines()
        .find(|l| l.starts_with("payi:") && !payi_operator::limits::ledger::is_companion(l))
        .unwrap_or_else(|| panic!("no counter for {limit}: {keys}"));
    let value = command(redis_url, &["GET", key]).await;
    value.lines().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn limit(name: &str, max_nano: u64, kind: &str) -> Value {
    json!({"name": name, "max": usd(max_nano), "period": "month", "type": kind})
}

async fn patch_limits<K>(api: &Api<K>, name: &str, limits: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"limits": limits}}))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_block_limit_at_each_level_stops_exactly_the_requests_it_covers_and_names_itself() {
    operator();
    let redis = shared_url();
    let sim = ProviderSim::start().await;
    let gw = gateway("limits-levels", &sim, redis, &[]).await;
    let c = cost_nano();
    assert!(c > 0);

    for level in ["use_case", "application", "group", "organization"] {
        let env = TestEnv::new(&format!("lim-{}", level.replace('_', ""))).await;
        let org = unique("org");
        let (g1, g2) = (unique("g1"), unique("g2"));
        env.create_org(&org, None).await;
        env.create_group(&g1, &org).await;
        env.create_group(&g2, &org).await;
        let a = env.create_app_with_key("a", &g1, json!({"useCases": [{"name": "uc"}]})).await;
        let b = env.create_app_with_key("b", &g1, json!({})).await;
        let other = env.create_app_with_key("c", &g2, json!({})).await;
        // Room for three requests: two spent and the third's reservation.
        let budget = json!([limit("budget", 2 * c + bound_nano(), "block")]);
        let ns = env.namespace.clone();
        let (id, covered, uncovered): (String, Callers, Callers) = match level {
            "use_case" => {
                let patch = json!({"spec": {"useCases": [{"name": "uc", "limits": budget}]}});
                env.apps().patch("a", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
                (
                    format!("use_case/{ns}/a/uc/budget"),
                    vec![(&a, Some("uc"))],
                    vec![(&a, None), (&b, None), (&other, None)],
                )
            }
            "application" => {
                patch_limits(&env.apps(), "a", budget).await;
                (
                    format!("application/{ns}/a/budget"),
                    vec![(&a, Some("uc")), (&a, None)],
                    vec![(&b, None), (&other, None)],
                )
            }
            "group" => {
                patch_limits(&Api::<Group>::all(env.client.clone()), &g1, budget).await;
                (format!("group/{g1}/budget"), vec![(&a, None), (&b, None)], vec![(&other, None)])
            }
            _ => {
                patch_limits(&Api::<Organization>::all(env.client.clone()), &org, budget).await;
                (format!("organization/{org}/budget"), vec![(&a, None), (&b, None), (&other, None)], vec![])
            }
        };
        let (first_key, first_uc) = covered[0];
        enforced(&gw, first_key, first_uc, &id).await;
        // One charge so far (the request that found the limit). Two more fit.
        assert_eq!(spent(redis, &id).await, c, "{level}");
        for i in 0..2 {
            let (key, use_case) = covered[(i + 1) % covered.len()];
            let answer = call(&gw, key, use_case).await;
            assert_eq!(answer.status, 200, "{level}: request {i} under the limit: {}", answer.body);
            charged(&gw).await;
        }
        assert_eq!(spent(redis, &id).await, 3 * c);
        sim.clear();
        for (key, use_case) in &covered {
            let refused = call(&gw, key, *use_case).await;
            assert_eq!(refused.status, 400, "{level}: the spent limit refuses: {}", refused.body);
            assert_eq!(refused.headers.get("x-payi-limit").unwrap(), id.as_str());
            let body: Value = serde_json::from_str(&refused.body).unwrap();
            assert_eq!(body["xproxy_error"]["code"], "limit_reached");
            assert_eq!(body["xproxy_result"]["blocked_limit_ids"], json!([id]));
            assert!(body["error"]["message"].as_str().unwrap().contains(&id), "{body}");
        }
        assert!(sim.requests().is_empty(), "{level}: a refused request reached the provider");
        for (key, use_case) in &uncovered {
            let answer = call(&gw, key, *use_case).await;
            assert_eq!(answer.status, 200, "{level}: a request the limit does not cover is refused: {}", answer.body);
        }
        charged(&gw).await;
        assert_eq!(spent(redis, &id).await, 3 * c, "{level}: refused and uncovered requests are not charged to it");
        let metrics = gw.metrics().await;
        let refused_lines: Vec<&str> = metrics.lines().filter(|l| l.contains("refused")).collect();
        assert_eq!(
            sum(&metrics, "payi_limit_refused_requests_total", &[("limit", &id)]),
            covered.len() as f64,
            "{refused_lines:?}"
        );
        if level == "group" {
            // The official SDK sees Pay-i's answer for a blocked limit.
            let sdk = drive(&gw.url(), &a, "openai-chat", &[]);
            assert_eq!(sdk["error"]["status"], 400, "{sdk}");
            assert_eq!(sdk["error"]["body"]["xproxy_error"]["code"], "limit_reached", "{sdk}");
        }
        Setup { env, org, groups: vec![g1, g2] }.clean_up().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_allow_limit_records_the_overrun_and_never_refuses() {
    operator();
    let redis = shared_url();
    let sim = ProviderSim::start().await;
    let gw = gateway("limits-allow", &sim, redis, &[]).await;
    let env = TestEnv::new("lim-allow").await;
    let (org, group) = env.org_and_group().await;
    let c = cost_nano();
    let key = env.create_app_with_key("spender", &group, json!({"limits": [limit("soft", c * 3 / 2, "allow")]})).await;
    let id = format!("application/{}/spender/soft", env.namespace);
    enforced(&gw, &key, None, &id).await;
    for _ in 0..3 {
        assert_eq!(call(&gw, &key, None).await.status, 200);
    }
    charged(&gw).await;
    assert_eq!(spent(redis, &id).await, 4 * c, "every request is charged, past the maximum");
    let metrics = gw.metrics().await;
    let spend = sum(&metrics, "payi_limit_spend_usd", &[("limit", &id)]);
    let max = sum(&metrics, "payi_limit_max_usd", &[("limit", &id)]);
    assert!(spend > max, "the overrun shows: spend {spend} over max {max}");
    assert_eq!(sum(&metrics, "payi_limit_refused_requests_total", &[]), 0.0);
    Setup { env, org, groups: vec![group] }.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_requests_at_the_maximum_never_pass_it() {
    operator();
    let redis = shared_url();
    let sim = ProviderSim::start().await;
    let gw = gateway("limits-overshoot", &sim, redis, &[]).await;
    let env = TestEnv::new("lim-burst").await;
    let (org, group) = env.org_and_group().await;
    let (c, bound) = (cost_nano(), bound_nano());
    // After 9 requests, room for 5 more reservations.
    let max = 9 * c + 5 * bound;
    let key = env.create_app_with_key("bursty", &group, json!({"limits": [limit("cap", max, "block")]})).await;
    let id = format!("application/{}/bursty/cap", env.namespace);
    enforced(&gw, &key, None, &id).await;
    for _ in 0..8 {
        assert_eq!(call(&gw, &key, None).await.status, 200);
    }
    charged(&gw).await;
    assert_eq!(spent(redis, &id).await, 9 * c);
    let burst = futures::future::join_all((0..50).map(|_| call(&gw, &key, None))).await;
    let allowed = burst.iter().filter(|a| a.status == 200).count();
    let refused = burst.iter().filter(|a| a.status == 400).count();
    assert_eq!(allowed + refused, 50, "{:?}", burst.iter().map(|a| a.status).collect::<Vec<_>>());
    assert!(allowed >= 5, "the five reservations that fit go through ({allowed})");
    charged(&gw).await;
    let total = spent(redis, &id).await;
    assert_eq!(total, (9 + allowed as u64) * c, "every allowed request is charged once");
    println!("50 concurrent requests with room for 5 reservations: {allowed} allowed, spend {total} of {max} nano-USD");
    assert!(total <= max, "spend {total} passed the maximum {max}");
    // Nothing is left held once they all settled.
    let held = command(redis, &["GET", &format!("payi:nusd:limit:{id}:0:m{}:reserved", month_now())]).await;
    assert_eq!(held.lines().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0), 0, "{held}");
    Setup { env, org, groups: vec![group] }.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn windows_roll_over_and_a_gitops_reset_starts_a_new_count_once() {
    operator();
    let redis = shared_url();
    let sim = ProviderSim::start().await;
    let gw = gateway("limits-window", &sim, redis, &[]).await;
    let env = TestEnv::new("lim-window").await;
    let (org, group) = env.org_and_group().await;
    // One request's reservation fits; after it, its cost plus the next reservation does not.
    let key = env.create_app_with_key("monthly", &group, json!({"limits": [limit("m", bound_nano(), "block")]})).await;
    let id = format!("application/{}/monthly/m", env.namespace);
    enforced(&gw, &key, None, &id).await;
    assert_eq!(call(&gw, &key, None).await.status, 400, "one request spends it");

    // Next month, by the clock: the same limit, a new window.
    let now = chrono::Utc::now();
    let (year, month) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    let next_month = chrono::NaiveDate::from_ymd_opt(year, month, 1).unwrap().and_hms_opt(0, 1, 0).unwrap().and_utc();
    let offset = (next_month - now).num_seconds().to_string();
    let later = gateway("limits-window-later", &sim, redis, &["--limits-time-offset-seconds", &offset]).await;
    let answer = eventually("the next month's window to be open", || async {
        let a = call(&later, &key, None).await;
        (a.status != 401).then_some(a)
    })
    .await;
    assert_eq!(answer.status, 200, "a new window starts at zero: {}", answer.body);
    charged(&later).await;
    assert_eq!(call(&later, &key, None).await.status, 400, "and fills up again");
    // This month is still spent.
    assert_eq!(call(&gw, &key, None).await.status, 400);

    // A reset through Git: a new resetRequestedAt opens a new count, once.
    let reset = json!([{"name": "m", "max": usd(bound_nano()), "period": "month", "type": "block", "resetRequestedAt": "2026-12-07T12:00:00Z"}]);
    patch_limits(&env.apps(), "monthly", reset.clone()).await;
    let started = Instant::now();
    let answer = eventually("the reset to reach the gateway", || async {
        let a = call(&gw, &key, None).await;
        (a.status == 200).then_some(a)
    })
    .await;
    assert_eq!(answer.status, 200);
    println!("reset took effect after {:?}", started.elapsed());
    charged(&gw).await;
    assert_eq!(call(&gw, &key, None).await.status, 400, "the reset happened once");
    // Applying the same value again (GitOps re-sync) does not reset again.
    patch_limits(&env.apps(), "monthly", reset).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(call(&gw, &key, None).await.status, 400, "the same resetRequestedAt resets nothing");
    Setup { env, org, groups: vec![group] }.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_mid_run_loses_no_charge_and_fail_closed_refuses_meanwhile() {
    operator();
    let mut redis = Redis::start().await;
    let sim = ProviderSim::start().await;
    let url = redis.url();
    let gw = gateway("limits-redis", &sim, &url, &[]).await;
    let strict = gateway("limits-redis-strict", &sim, &url, &["--limits-fail-closed"]).await;
    let env = TestEnv::new("lim-redis").await;
    let (org, group) = env.org_and_group().await;
    let c = cost_nano();
    let key = env.create_app_with_key("steady", &group, json!({"limits": [limit("big", c * 1000, "block")]})).await;
    let id = format!("application/{}/steady/big", env.namespace);
    enforced(&gw, &key, None, &id).await;
    for _ in 0..4 {
        assert_eq!(call(&gw, &key, None).await.status, 200);
    }
    charged(&gw).await;
    assert_eq!(spent(&url, &id).await, 5 * c);

    // Redis goes away for 3 s; requests keep coming.
    redis.stop();
    let mut during = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let answer = call(&gw, &key, None).await;
        assert_eq!(answer.status, 200, "fail-open: {}", answer.body);
        during += 1;
        let strict_answer = call(&strict, &key, None).await;
        assert_eq!(strict_answer.status, 503, "fail-closed refuses while the ledger is down");
    }
    let metrics = gw.metrics().await;
    assert!(sum(&metrics, "payi_limit_charges_queued", &[]) >= 1.0, "charges wait in the queue");
    assert!(sum(&metrics, "payi_limit_unchecked_requests_total", &[]) >= during as f64);
    assert_eq!(common::verifier::request(&gw.metrics, "/readyz", &[]).await.unwrap().status, 200, "still ready");
    // Redis answers again (restart returns at its first PONG, polled every 10 ms):
    // the ledger's probe reconnects without waiting for a request to fail, so the
    // fail-closed gateway serves again within a second (docs/limits.md).
    redis.restart(Duration::from_millis(0)).await;
    let back = Instant::now();
    let mut refused = 0;
    loop {
        let answer = call(&strict, &key, None).await;
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 503, "{}", answer.body);
        refused += 1;
        assert!(back.elapsed() < Duration::from_secs(10), "fail-closed still refuses 10 s after Redis is back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = back.elapsed();
    eprintln!("fail-closed served again {recovered:?} after Redis answered ({refused} refused meanwhile)");
    assert!(recovered <= Duration::from_secs(1), "fail-closed served again only after {recovered:?}");
    charged(&gw).await;
    charged(&strict).await;
    assert_eq!(spent(&url, &id).await, (6 + during) * c, "no charge lost across the restart ({during} during it)");
    Setup { env, org, groups: vec![group] }.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_publishes_spend_and_state_on_the_object_with_one_event_per_transition() {
    operator();
    let redis = shared_url();
    let sim = ProviderSim::start().await;
    let gw = gateway("limits-status", &sim, redis, &[]).await;
    let env = TestEnv::new("lim-status").await;
    let (org, group) = env.org_and_group().await;
    let c = cost_nano();
    let groups = Api::<Group>::all(env.client.clone());
    // An allow limit: its states come from spend alone (a block limit would also
    // weigh each request's reservation; tests above cover that).
    let budget = json!([{"name": "monthly", "max": usd(c * 4), "period": "month", "type": "allow", "threshold": 0.5}]);
    patch_limits(&groups, &group, budget).await;
    let key = env.create_app_with_key("watched", &group, json!({})).await;
    let id = format!("group/{group}/monthly");
    let state = |g: Group| g.status.and_then(|s| s.limits).map(|l| (l.state, l.summary, l.items));
    // Published before any spend: ok, 0 of the maximum.
    let published = eventually("the Group's limits status", || async {
        state(groups.get(&group).await.unwrap()).filter(|(_, _, items)| items.len() == 1)
    })
    .await;
    assert_eq!(published.0, payi_operator::crd::LimitState::Ok);
    assert_eq!(published.2[0].id, id);
    assert_eq!(published.2[0].spend_usd, "0");
    enforced(&gw, &key, None, &id).await;
    call(&gw, &key, None).await;
    charged(&gw).await;
    // 2 of 4: the threshold (0.5) is reached.
    let risky = eventually("thresholdReached on the Group", || async {
        state(groups.get(&group).await.unwrap())
            .filter(|(s, _, _)| *s == payi_operator::crd::LimitState::ThresholdReached)
    })
    .await;
    assert!(risky.1.ends_with("USD (monthly)"), "{}", risky.1);
    for _ in 0..2 {
        call(&gw, &key, None).await;
    }
    charged(&gw).await;
    eventually("exceeded on the Group", || async {
        state(groups.get(&group).await.unwrap()).filter(|(s, _, _)| *s == payi_operator::crd::LimitState::Exceeded)
    })
    .await;
    // The LimitsOk condition says the same, naming the limit; Ready is untouched.
    let condition = eventually("LimitsOk=False (Exceeded)", || async {
        let g = groups.get(&group).await.unwrap();
        let conditions = g.status.map(|s| s.conditions).unwrap_or_default();
        let limits_ok = conditions.iter().find(|c| c.type_ == "LimitsOk").cloned()?;
        let ready = conditions.iter().find(|c| c.type_ == "Ready").cloned()?;
        (limits_ok.reason == "Exceeded").then_some((limits_ok, ready))
    })
    .await;
    assert_eq!(condition.0.status, "False");
    assert!(condition.0.message.contains(&id), "{}", condition.0.message);
    assert_eq!(condition.1.status, "True", "a spent budget is not a configuration error");
    // Each transition told once, however many sweeps ran.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = env.events_for(&group).await;
    let count = |reason: &str| {
        events.iter().filter(|e| e.reason.as_deref() == Some(reason)).map(common::occurrences).sum::<usize>()
    };
    assert_eq!((count("LimitThresholdReached"), count("LimitExceeded")), (1, 1), "{events:?}");
    // Nothing changes: no more status writes (resourceVersion stays).
    let before = groups.get(&group).await.unwrap().metadata.resource_version;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        groups.get(&group).await.unwrap().metadata.resource_version,
        before,
        "an unchanged status is not written"
    );
    Setup { env, org, groups: vec![group] }.clean_up().await;
}

/// `YYYY-MM` now, as the ledger names month windows.
fn month_now() -> String {
    let now = chrono::Utc::now();
    format!("{:04}-{:02}", now.year(), now.month())
}

/// A client that sends a non-streamed request and hangs up before the answer.
async fn leave_early(gw: &Gateway, key: &str, body: &Value) {
    use tokio::io::AsyncWriteExt;
    let addr = gw.url().trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = body.to_string();
    let head = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    // Gone before the provider (answering after 800 ms) has said anything.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_leaves_before_the_answer_is_still_charged_what_the_provider_bills() {
    operator();
    let redis = shared_url();
    let sim = ProviderSim::start().await;
    let gw = gateway("limits-abandoned", &sim, redis, &[]).await;
    let env = TestEnv::new("lim-abandon").await;
    let (org, group) = env.org_and_group().await;
    let c = cost_nano();
    let key = env.create_app_with_key("leaver", &group, json!({"limits": [limit("monthly", c * 1000, "block")]})).await;
    let id = format!("application/{}/leaver/monthly", env.namespace);
    enforced(&gw, &key, None, &id).await;
    let before = spent(redis, &id).await;
    // The Application's month-to-date usage, kept whether or not it has limits.
    let month = month_now();
    let level = format!("application/{}/leaver", env.namespace);
    let counter = |name: &str| format!("payi:{name}:{level}:m{month}");
    let read = |key: String| async move {
        let value = command(redis, &["GET", &key]).await;
        value.lines().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    let (spend_before, requests_before) = (read(counter("nusd:spend")).await, read(counter("requests")).await);
    let mut body = request_body();
    body["model"] = json!("slow-800-gpt-4o-mini");
    for _ in 0..3 {
        leave_early(&gw, &key, &body).await;
    }
    eventually("the abandoned answers to be read to their end and counted", || async {
        let metrics = gw.metrics().await;
        (sum(&metrics, "payi_gateway_proxied_requests_total", &[("outcome", "abandoned")]) == 3.0).then_some(())
    })
    .await;
    charged(&gw).await;
    assert_eq!(spent(redis, &id).await - before, 3 * c, "each abandoned answer charged what the provider billed");
    assert_eq!(read(counter("nusd:spend")).await - spend_before, 3 * c, "and to the Application's month-to-date spend");
    assert_eq!(read(counter("requests")).await - requests_before, 3);
    let metrics = gw.metrics().await;
    assert_eq!(sum(&metrics, "payi_gateway_proxied_requests_total", &[("outcome", "incomplete")]), 0.0);
    Setup { env, org, groups: vec![group] }.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_requests_through_two_replicas_never_pass_a_block_limit() {
    operator();
    let redis = shared_url();
    let sim = ProviderSim::start().await;
    let (one, two) = (
        gateway("limits-pair-a", &sim, redis, &["--limits-default-output-tokens", "64"]).await,
        gateway("limits-pair-b", &sim, redis, &["--limits-default-output-tokens", "64"]).await,
    );
    let env = TestEnv::new("lim-pair").await;
    let (org, group) = env.org_and_group().await;
    let c = cost_nano();
    // Sized for about 50 requests by their real cost.
    let max = 50 * c;
    let key = env.create_app_with_key("crowd", &group, json!({"limits": [limit("cap", max, "block")]})).await;
    let id = format!("application/{}/crowd/cap", env.namespace);
    enforced(&one, &key, None, &id).await;
    enforced(&two, &key, None, &id).await;
    let before = spent(redis, &id).await;
    // Half of them set no max_tokens: they reserve the configured output cap (64).
    let unbounded = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]});
    let calls = (0..200).map(|i| {
        let gw = if i % 2 == 0 { &one } else { &two };
        let body = if i % 4 < 2 { request_body() } else { unbounded.clone() };
        let auth = format!("Bearer {key}");
        async move {
            post(&gw.url(), "/openai/v1/chat/completions", &[("authorization", &auth)], &body.to_string())
                .await
                .expect("the gateway answers")
                .status
        }
    });
    let statuses = futures::future::join_all(calls).await;
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 400), "{statuses:?}");
    charged(&one).await;
    charged(&two).await;
    let total = spent(redis, &id).await;
    println!(
        "200 concurrent requests on two replicas at a maximum of {max} nano-USD: {allowed} allowed, spend {total}"
    );
    assert!(allowed >= 1, "some requests fit");
    assert!(total <= max, "spend {total} passed the maximum {max} ({before} before the burst)");
    Setup { env, org, groups: vec![group] }.clean_up().await;
}
