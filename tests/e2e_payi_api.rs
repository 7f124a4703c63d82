//! Pay-i's own API on the gateway (docs/payi-api.md), driven by the pinned `payi`
//! SDK (tests/sdk/payi_api.py): a workload in Pay-i's instrumented set-up calls
//! the provider simulator directly with the `openai` SDK under `payi_instrument()`
//! and `@track(...)`, and its usage reaches the gateway through `POST
//! /api/v1/ingest`. The real operator mints the keys on the real API server, the
//! real gateway binary checks them, prices the report with the table a proxied
//! request uses and charges it through the real Redis ledger, once.

mod common;

use chrono::Utc;
use common::gateway::{Gateway, post, providers_file, sum};
use common::provider_sim::{ProviderSim, SimUsage};
use common::redis::{command, shared_url};
use common::{Operator, TestEnv, eventually, unique};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use serde_json::{Value, json};

/// USD per million tokens: one input token costs 10^6 nano-USD, so every cost
/// below is a whole number of nano-USD, checked exactly.
const PRICES: &str = "providers:
  openai:
    gpt-4o-mini: {input: 1000, cachedInput: 500, output: 4000}
  anthropic:
    claude-sonnet-4-5: {input: 3000, cachedInput: 300, cacheWrite: 3750, output: 15000}
";

/// nano-USD per token of gpt-4o-mini: (input, cached input, output; reasoning is output).
const GPT_4O_MINI: (u64, u64, u64) = (1_000_000, 500_000, 4_000_000);

/// What the simulator's invoice line costs at PRICES (reasoning is inside its output).
fn invoice_cost_nano(u: SimUsage) -> u64 {
    u.input * GPT_4O_MINI.0 + u.cached_input * GPT_4O_MINI.1 + u.output * GPT_4O_MINI.2
}

/// Runs tests/sdk/payi_api.py with the pinned SDKs and returns what it printed.
fn sdk(gateway: &Gateway, key: &str, scenario: &str, env: &[(&str, &str)]) -> Value {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = std::process::Command::new(common::sdk::python());
    command
        .arg(repo.join("tests/sdk/payi_api.py"))
        .arg(scenario)
        .env("GATEWAY_URL", gateway.url())
        .env("PAYI_API_KEY", key)
        .env("PYTHONUNBUFFERED", "1");
    for name in ["PAYI_BASE_URL", "USE_CASE", "USER_ID", "MODEL", "CALL", "SIM_URL"] {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().expect("running tests/sdk/payi_api.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "payi_api.py {scenario} failed:\n{stdout}\n{stderr}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("payi_api.py {scenario} printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

/// One client method of `payi.Payi()`, e.g. `ingest.units`.
fn call(gateway: &Gateway, key: &str, method: &str, args: Value, kwargs: Value) -> Value {
    let spec = json!({"method": method, "args": args, "kwargs": kwargs}).to_string();
    sdk(gateway, key, "call", &[("CALL", &spec)])
}

async fn gateway(name: &str, sim: &ProviderSim, extra: &[&str]) -> Gateway {
    let dir = common::verifier::log_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    let providers = providers_file(&dir, &sim.addr.to_string(), &[("openai", "sk-sim")]);
    let prices = dir.join("prices.yaml");
    std::fs::write(&prices, PRICES).unwrap();
    let mut args = vec!["--prices-file", prices.to_str().unwrap()];
    args.extend_from_slice(extra);
    Gateway::start(name, &providers, &args).await
}

/// The value of one Redis counter (0 when absent).
async fn counter(redis_url: &str, key: &str) -> u64 {
    let reply = command(redis_url, &["GET", key]).await;
    reply.lines().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The month-to-date spend, tokens and requests of a level, as the ledger holds them.
async fn level(redis_url: &str, level: &str) -> (u64, u64, u64) {
    let keys = payi_operator::limits::spend::UsageKeys::of(level, &payi_operator::limits::spend::month(Utc::now()));
    (
        counter(redis_url, &keys.spend).await,
        counter(redis_url, &keys.tokens).await,
        counter(redis_url, &keys.requests).await,
    )
}

async fn clean_up(env: &TestEnv, org: &str, groups: &[&str]) {
    for group in groups {
        common::delete(&env.groups(), group).await;
    }
    common::delete(&env.orgs(), org).await;
    common::delete(&Api::<Namespace>::all(env.client.clone()), &env.namespace).await;
}

/// Waits until the gateway's index knows `key` (it follows the objects by watch).
async fn known(gw: &Gateway, key: &str) {
    eventually("the gateway to know the key", || async {
        let answer = post(&gw.url(), "/api/v1/ingest", &[("xProxy-api-key", key)], "{}").await.ok()?;
        (answer.status != 401).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instrumented_usage_is_ingested_priced_and_charged_once_and_its_result_is_this_applications_only() {
    Operator::shared();
    let redis = shared_url();
    let env = TestEnv::new("payi-ingest").await;
    let org = unique("org");
    let group = unique("eng");
    env.create_org(&org, None).await;
    env.create_group(&group, &org).await;
    let support = env.create_app_with_key("support", &group, json!({"useCases": [{"name": "summarize"}]})).await;
    let other = env.create_app_with_key("other", &group, json!({})).await;
    let sim = ProviderSim::start().await;
    let gw = gateway("payi-ingest", &sim, &["--limits-redis-url", redis, "--max-request-bytes", "65536"]).await;
    known(&gw, &support).await;
    known(&gw, &other).await;
    let ns = env.namespace.clone();
    let app_level = format!("application/{ns}/support");
    let use_case_level = format!("use_case/{ns}/support/summarize");

    // The workload calls the provider directly; the instrumentation reports it.
    let sim_url = sim.url();
    let run = sdk(
        &gw,
        &support,
        "instrumented-openai",
        &[("SIM_URL", &sim_url), ("USE_CASE", "summarize"), ("USER_ID", "alice")],
    );
    assert_eq!(run["ok"], true, "{run}");
    let invoice = sim.invoice();
    assert_eq!(invoice.len(), 1, "one call reached the provider, directly: {invoice:?}");
    let billed = invoice[0].usage;
    assert!(billed.input > 0 && billed.output > 0, "{billed:?}");
    let cost = invoice_cost_nano(billed);
    let result = &run["last_result"];
    assert_eq!(result["duplicate_request"], false, "{run}");
    assert_eq!(result["use_case_name"], "summarize", "{run}");
    assert_eq!(result["user_id"], "alice", "{run}");
    assert_eq!(result["cost"]["total"]["base"].as_f64(), Some(cost as f64 / 1e9), "{run}");
    let request_id = result["request_id"].as_str().expect("a request id").to_string();
    let response_id = run["response_id"].as_str().unwrap().to_string();

    // Every level holds it exactly: the ledger's counters and the metrics.
    let tokens = billed.input + billed.cached_input + billed.cache_write + billed.output;
    for level_key in
        [format!("organization/{org}"), format!("group/{group}"), app_level.clone(), use_case_level.clone()]
    {
        assert_eq!(level(redis, &level_key).await, (cost, tokens, 1), "{level_key}");
    }
    let metrics = gw.metrics().await;
    let ingest = [("organization", org.as_str()), ("source", "ingest")];
    assert_eq!(sum(&metrics, "payi_gateway_tokens_total", &ingest), tokens as f64, "{metrics}");
    for (token_type, count) in [("input", billed.input), ("output", billed.output)] {
        let filter =
            [("application", "support"), ("use_case", "summarize"), ("token_type", token_type), ("source", "ingest")];
        assert_eq!(sum(&metrics, "payi_gateway_tokens_total", &filter), count as f64, "{token_type}");
    }
    let counted = sum(&metrics, "payi_gateway_cost_usd_total", &ingest);
    assert!((counted - cost as f64 / 1e9).abs() < 1e-12, "{counted} USD counted, {cost} nano-USD billed");
    assert_eq!(sum(&metrics, "payi_gateway_tokens_total", &[("organization", &org), ("source", "proxy")]), 0.0);

    // The same provider response reported again (a retry): answered as a
    // duplicate with the first answer's id, charged nothing.
    let units = json!({"text": {"input": billed.input, "output": billed.output}});
    let again = call(
        &gw,
        &support,
        "ingest.units",
        json!([]),
        json!({"category": "system.openai", "resource": "gpt-4o-mini", "units": units,
               "provider_response_id": response_id, "use_case_name": "summarize", "user_id": "alice"}),
    );
    assert_eq!(again["ok"], true, "{again}");
    assert_eq!(again["result"]["xproxy_result"]["duplicate_request"], true, "{again}");
    assert_eq!(again["result"]["request_id"], request_id.as_str(), "{again}");
    assert_eq!(level(redis, &app_level).await, (cost, tokens, 1), "a duplicate charges nothing");
    let metrics = gw.metrics().await;
    assert_eq!(sum(&metrics, "payi_gateway_tokens_total", &ingest), tokens as f64);
    assert_eq!(sum(&metrics, "payi_gateway_ingest_duplicates_total", &[]), 1.0);

    // The result, by request id and by provider response id; another
    // Application's key finds neither.
    let by_id = call(&gw, &support, "requests.request_id.result.retrieve", json!([request_id]), json!({}));
    assert_eq!(by_id["ok"], true, "{by_id}");
    assert_eq!(by_id["result"]["xproxy_result"]["cost"]["total"]["base"].as_f64(), Some(cost as f64 / 1e9));
    assert_eq!(by_id["result"]["xproxy_result"]["request_id"], request_id.as_str());
    let by_response = call(
        &gw,
        &support,
        "requests.response_id.result.retrieve",
        json!([response_id]),
        json!({"category": "system.openai"}),
    );
    assert_eq!(by_response["result"], by_id["result"], "{by_response}");
    for (method, args, kwargs) in [
        ("requests.request_id.result.retrieve", json!([request_id]), json!({})),
        ("requests.response_id.result.retrieve", json!([response_id]), json!({"category": "system.openai"})),
    ] {
        let foreign = call(&gw, &other, method, args, kwargs);
        assert_eq!(foreign["ok"], false, "{foreign}");
        assert_eq!(foreign["error"]["status"], 404, "{foreign}");
        assert_eq!(foreign["error"]["body"]["xproxy_error"]["code"], "request_not_found", "{foreign}");
    }

    // Cache reads, reasoning and a unit the table cannot price: the known units
    // charged exactly, the unknown one reported, counted and marked unknown cost.
    let mixed = call(
        &gw,
        &support,
        "ingest.units",
        json!([]),
        json!({"category": "system.openai", "resource": "gpt-4o-mini",
               "units": {"text": {"input": 10, "output": 5}, "text_cache_read": {"input": 4, "output": 0},
                         "reasoning": {"input": 0, "output": 3}, "vision": {"input": 100, "output": 0}},
               "provider_response_id": unique("chatcmpl")}),
    );
    assert_eq!(mixed["ok"], true, "{mixed}");
    let mixed_cost = 10 * GPT_4O_MINI.0 + 4 * GPT_4O_MINI.1 + (5 + 3) * GPT_4O_MINI.2;
    let xr = &mixed["result"]["xproxy_result"];
    assert_eq!(xr["cost"]["total"]["base"].as_f64(), Some(mixed_cost as f64 / 1e9), "{mixed}");
    assert_eq!(xr["cost"]["input"]["base"].as_f64(), Some((10 * GPT_4O_MINI.0 + 4 * GPT_4O_MINI.1) as f64 / 1e9));
    assert_eq!(xr["unknown_units"]["vision"]["input"], 100, "{mixed}");
    assert_eq!(level(redis, &app_level).await, (cost + mixed_cost, tokens + 22, 2));
    let unpriced =
        payi_operator::limits::spend::UsageKeys::of(&app_level, &payi_operator::limits::spend::month(Utc::now()));
    assert_eq!(counter(redis, &unpriced.unpriced).await, 1, "an event with unknown units is one of unknown cost");
    let metrics = gw.metrics().await;
    assert_eq!(
        sum(&metrics, "payi_gateway_ingest_unknown_units_total", &[("category", "system.openai")]),
        100.0,
        "{metrics}"
    );
    assert_eq!(
        sum(&metrics, "payi_gateway_tokens_total", &[("application", "support"), ("token_type", "cached_input")]),
        4.0
    );

    // Bad input: Pay-i's codes, a message that says what to fix, nothing charged.
    let base =
        json!({"category": "system.openai", "resource": "gpt-4o-mini", "units": {"text": {"input": 1, "output": 1}}});
    let future = (Utc::now() + chrono::TimeDelta::minutes(10)).to_rfc3339();
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (json!({"event_timestamp": future}), 400, "invalid_ingest_event_timestamp", "5 minutes"),
        (
            json!({"units": {"text": {"input": -5, "output": 1}}}),
            400,
            "request_processing_error",
            "units.text.input is -5",
        ),
        (json!({"category": "system.aws.bedrock"}), 400, "category_not_found", "system.aws.bedrock"),
    ];
    for (change, status, code, says) in cases {
        let mut kwargs = base.clone();
        kwargs.as_object_mut().unwrap().extend(change.as_object().unwrap().clone());
        let refused = call(&gw, &support, "ingest.units", json!([]), kwargs);
        assert_eq!(refused["ok"], false, "{refused}");
        assert_eq!(refused["error"]["status"], status, "{refused}");
        let body = &refused["error"]["body"];
        assert_eq!(body["statusCode"], status, "{refused}");
        assert_eq!(body["xproxy_error"]["code"], code, "{refused}");
        assert!(body["message"].as_str().unwrap().contains(says), "{refused}");
    }
    let oversized = json!({"category": "system.openai", "resource": "gpt-4o-mini", "units": {},
                           "provider_request_json": "x".repeat(70_000)});
    let answer =
        post(&gw.url(), "/api/v1/ingest", &[("xProxy-api-key", &support)], &oversized.to_string()).await.unwrap();
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(answer.body.contains("\"code\":\"request_too_large\""), "{answer:?}");
    let undeclared = call(&gw, &support, "ingest.units", json!([]), {
        let mut kwargs = base.clone();
        kwargs["use_case_name"] = json!("nope");
        kwargs
    });
    assert_eq!(undeclared["error"]["body"]["xproxy_error"]["code"], "use_case_not_found", "{undeclared}");
    let wrong_key = call(&gw, "payi-not-a-key", "ingest.units", json!([]), base.clone());
    assert_eq!(wrong_key["error"]["status"], 401, "{wrong_key}");
    assert_eq!(wrong_key["error"]["body"]["xproxy_error"]["code"], "invalid_api_key", "{wrong_key}");
    assert_eq!(level(redis, &app_level).await, (cost + mixed_cost, tokens + 22, 2), "refusals charge nothing");
    let metrics = gw.metrics().await;
    for code in
        ["invalid_ingest_event_timestamp", "request_processing_error", "category_not_found", "request_too_large"]
    {
        assert_eq!(sum(&metrics, "payi_gateway_ingest_refusals_total", &[("reason", code)]), 1.0, "{code}");
    }
    // A Pay-i endpoint not served here says so.
    let instance =
        post(&gw.url(), "/api/v1/use_cases/instances/summarize", &[("xProxy-api-key", &support)], "{}").await.unwrap();
    assert_eq!(instance.status, 501, "{instance:?}");
    assert!(
        instance.body.contains("\"code\":\"not_served\"") && instance.body.contains("spec.useCases"),
        "{instance:?}"
    );

    clean_up(&env, &org, &[&group]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ingested_call_past_a_block_limit_is_charged_and_the_next_proxied_request_is_refused() {
    Operator::shared();
    let redis = shared_url();
    let env = TestEnv::new("payi-ingest-limit").await;
    let org = unique("org");
    let group = unique("eng");
    env.create_org(&org, None).await;
    env.create_group(&group, &org).await;
    // Room for 100 input tokens.
    let key = env
        .create_app_with_key(
            "a",
            &group,
            json!({"limits": [{"name": "budget", "max": "0.1", "period": "month", "type": "block"}]}),
        )
        .await;
    let sim = ProviderSim::start().await;
    let gw = gateway("payi-ingest-limit", &sim, &["--limits-redis-url", redis]).await;
    known(&gw, &key).await;
    let limit = format!("application/{}/a/budget", env.namespace);

    // 150 input tokens: a call that happened; it cannot be refused, only charged.
    let over = call(
        &gw,
        &key,
        "ingest.units",
        json!([]),
        json!({"category": "system.openai", "resource": "gpt-4o-mini", "units": {"text": {"input": 150, "output": 0}},
               "provider_response_id": unique("chatcmpl")}),
    );
    assert_eq!(over["ok"], true, "{over}");
    let xr = &over["result"]["xproxy_result"];
    assert_eq!(xr["limits"][&limit]["state"], "blocked", "{over}");
    assert_eq!(xr["blocked_limit_ids"], json!([limit]), "{over}");
    let spent = {
        let keys = command(redis, &["KEYS", &format!("payi:nusd:limit:{limit}:*")]).await;
        let key = keys
            .lines()
            .find(|l| l.starts_with("payi:") && !payi_operator::limits::ledger::is_companion(l))
            .unwrap_or_else(|| panic!("no counter for {limit}: {keys}"))
            .to_string();
        counter(redis, &key).await
    };
    assert_eq!(spent, 150 * GPT_4O_MINI.0, "the whole call charged to the limit");

    // The next proxied request is refused by the spent limit, before the provider.
    sim.clear();
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    let refused = post(
        &gw.url(),
        "/openai/v1/chat/completions",
        &[("authorization", &format!("Bearer {key}"))],
        &body.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body.contains("limit_reached") && refused.body.contains(&limit), "{refused:?}");
    assert!(sim.requests().is_empty(), "a refused request never reaches the provider");

    // The limits that cover the Application, read through the API with their
    // spend; declared in Git, so changing one through the API is refused.
    let org_limit = format!("organization/{org}/org-budget");
    let org_patch =
        json!({"spec": {"limits": [{"name": "org-budget", "max": "1000", "period": "month", "type": "allow"}]}});
    Api::<payi_operator::crd::Organization>::all(env.client.clone())
        .patch(&org, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(org_patch))
        .await
        .unwrap();
    let listed = eventually("the gateway to know the Organization's limit", || async {
        let listed = call(&gw, &key, "limits.list", json!([]), json!({"limit": 1}));
        (listed["result"]["items"].as_array()?.len() == 2).then_some(listed)
    })
    .await;
    assert_eq!(listed["result"]["first_page_cursor"], "1", "one per page, the SDK followed the cursor: {listed}");
    let items = listed["result"]["items"].as_array().unwrap();
    let ids: Vec<&str> = items.iter().map(|i| i["limit_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [limit.as_str(), org_limit.as_str()], "{listed}");
    let budget = &items[0];
    assert_eq!((budget["limit_name"].as_str(), budget["limit_type"].as_str()), (Some("budget"), Some("block")));
    assert_eq!(budget["max"].as_f64(), Some(0.1));
    assert_eq!(budget["totals"]["cost"]["total"]["base"].as_f64(), Some(0.15), "{budget}");
    let one = call(&gw, &key, "limits.retrieve", json!([limit]), json!({}));
    assert_eq!(one["result"]["limit"], *budget, "{one}");
    for (method, kwargs) in
        [("limits.update", json!({"max": 5})), ("limits.reset", json!({})), ("limits.delete", json!({}))]
    {
        let refused = call(&gw, &key, method, json!([limit]), kwargs);
        assert_eq!(refused["error"]["status"], 409, "{method}: {refused}");
        let message = refused["error"]["body"]["message"].as_str().unwrap();
        assert!(message.contains("declared in Git") && message.contains("spec.limits"), "{method}: {message}");
    }
    let created = call(&gw, &key, "limits.create", json!([]), json!({"limit_name": "per-user", "max": 1.0}));
    assert_eq!(created["error"]["status"], 501, "{created}");
    // Another Group's Application does not see this one's limit.
    let outsider_group = unique("other");
    env.create_group(&outsider_group, &org).await;
    let outsider = env.create_app_with_key("outsider", &outsider_group, json!({})).await;
    known(&gw, &outsider).await;
    let foreign = call(&gw, &outsider, "limits.retrieve", json!([limit]), json!({}));
    assert_eq!(foreign["error"]["status"], 404, "{foreign}");
    assert_eq!(foreign["error"]["body"]["xproxy_error"]["code"], "limit_not_found", "{foreign}");
    common::delete(&env.apps(), "outsider").await;
    common::delete(&env.groups(), &outsider_group).await;

    clean_up(&env, &org, &[&group]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_ledger_ingest_still_meters_and_results_answer_503() {
    Operator::shared();
    let env = TestEnv::new("payi-noledger").await;
    let org = unique("org");
    let group = unique("eng");
    env.create_org(&org, None).await;
    env.create_group(&group, &org).await;
    let key = env.create_app_with_key("a", &group, json!({})).await;
    let sim = ProviderSim::start().await;
    let gw = gateway("payi-noledger", &sim, &[]).await;
    known(&gw, &key).await;

    let ingested = call(
        &gw,
        &key,
        "ingest.units",
        json!([]),
        json!({"category": "system.openai", "resource": "gpt-4o-mini", "units": {"text": {"input": 7, "output": 2}},
               "provider_response_id": "chatcmpl-noledger"}),
    );
    assert_eq!(ingested["ok"], true, "{ingested}");
    let cost = 7 * GPT_4O_MINI.0 + 2 * GPT_4O_MINI.2;
    assert_eq!(ingested["result"]["xproxy_result"]["cost"]["total"]["base"].as_f64(), Some(cost as f64 / 1e9));
    let metrics = gw.metrics().await;
    let filter = [("organization", org.as_str()), ("source", "ingest")];
    assert_eq!(sum(&metrics, "payi_gateway_tokens_total", &filter), 9.0, "{metrics}");
    assert!((sum(&metrics, "payi_gateway_cost_usd_total", &filter) - cost as f64 / 1e9).abs() < 1e-12);

    let request_id = ingested["result"]["request_id"].as_str().unwrap().to_string();
    let result = call(&gw, &key, "requests.request_id.result.retrieve", json!([request_id]), json!({}));
    assert_eq!(result["error"]["status"], 503, "{result}");
    let message = result["error"]["body"]["message"].as_str().unwrap();
    assert!(message.contains("ledger") && message.contains("--limits-redis-url"), "{message}");

    clean_up(&env, &org, &[&group]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bulk_ingest_charges_each_event_once_and_reports_the_refused_ones_by_index() {
    Operator::shared();
    let redis = shared_url();
    let env = TestEnv::new("payi-bulk").await;
    let org = unique("org");
    let group = unique("eng");
    env.create_org(&org, None).await;
    env.create_group(&group, &org).await;
    let key = env.create_app_with_key("a", &group, json!({"useCases": [{"name": "summarize"}]})).await;
    let sim = ProviderSim::start().await;
    let gw = gateway("payi-bulk", &sim, &["--limits-redis-url", redis]).await;
    known(&gw, &key).await;
    let ns = env.namespace.clone();

    let first = unique("chatcmpl");
    let second = unique("msg");
    let events = json!([
        {"category": "system.openai", "resource": "gpt-4o-mini", "units": {"text": {"input": 10, "output": 2}},
         "provider_response_id": first, "use_case_name": "summarize", "user_id": "bob"},
        {"category": "system.anthropic", "resource": "claude-sonnet-4-5",
         "units": {"text": {"input": 20, "output": 1}, "text_cache_write": {"input": 4}},
         "provider_response_id": second},
        // The first again: recognised, not charged twice.
        {"category": "system.openai", "resource": "gpt-4o-mini", "units": {"text": {"input": 10, "output": 2}},
         "provider_response_id": first, "use_case_name": "summarize", "user_id": "bob"},
        {"category": "system.openai", "resource": "gpt-4o-mini", "units": {"text": {"input": -1}}},
        {"category": "system.openai", "resource": "gpt-4o-mini", "units": {"text": {"input": 1}},
         "use_case_name": "undeclared"},
    ]);
    let openai_cost = 10 * GPT_4O_MINI.0 + 2 * GPT_4O_MINI.2;
    // claude-sonnet-4-5 at PRICES: 3000, 3750 and 15000 USD per million.
    let anthropic_cost = 20 * 3_000_000 + 4 * 3_750_000 + 15_000_000;
    for round in 0..2 {
        let answer = call(&gw, &key, "ingest.bulk", json!([]), json!({"events": events}));
        assert_eq!(answer["ok"], true, "{answer}");
        let result = &answer["result"];
        assert_eq!((result["ingest_count"].as_u64(), result["total_count"].as_u64()), (Some(3), Some(5)), "{answer}");
        let errors = result["errors"].as_array().unwrap();
        let refused: Vec<(u64, &str)> = errors
            .iter()
            .map(|e| (e["item_index"].as_u64().unwrap(), e["xproxy_result"]["xproxy_error"]["code"].as_str().unwrap()))
            .collect();
        assert_eq!(refused, [(3, "request_processing_error"), (4, "use_case_not_found")], "{answer}");
        let application = level(redis, &format!("application/{ns}/a")).await;
        assert_eq!(application, (openai_cost + anthropic_cost, 12 + 25, 2), "round {round}: each event charged once");
        assert_eq!(level(redis, &format!("use_case/{ns}/a/summarize")).await, (openai_cost, 12, 1), "round {round}");
    }
    let metrics = gw.metrics().await;
    assert_eq!(
        sum(&metrics, "payi_gateway_ingest_duplicates_total", &[]),
        4.0,
        "one in the first round, three in the second"
    );
    let filter = [("organization", org.as_str()), ("source", "ingest"), ("provider", "anthropic")];
    assert_eq!(sum(&metrics, "payi_gateway_tokens_total", &filter), 25.0, "{metrics}");
    assert_eq!(
        sum(&metrics, "payi_gateway_tokens_total", &[("organization", &org), ("token_type", "cache_write")]),
        4.0
    );

    clean_up(&env, &org, &[&group]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instrumented_anthropic_call_is_charged_what_the_provider_billed() {
    Operator::shared();
    let redis = shared_url();
    let env = TestEnv::new("payi-ingest-anthropic").await;
    let org = unique("org");
    let group = unique("eng");
    env.create_org(&org, None).await;
    env.create_group(&group, &org).await;
    let key = env.create_app_with_key("a", &group, json!({"useCases": [{"name": "draft"}]})).await;
    let sim = ProviderSim::start().await;
    let gw = gateway("payi-ingest-anthropic", &sim, &["--limits-redis-url", redis]).await;
    known(&gw, &key).await;

    let sim_url = sim.url();
    let run = sdk(&gw, &key, "instrumented-anthropic", &[("SIM_URL", &sim_url), ("USE_CASE", "draft")]);
    assert_eq!(run["ok"], true, "{run}");
    let invoice = sim.invoice();
    assert_eq!(invoice.len(), 1, "{invoice:?}");
    let billed = invoice[0].usage;
    // claude-sonnet-4-5 at PRICES, nano-USD per token.
    let cost = billed.input * 3_000_000
        + billed.cached_input * 300_000
        + billed.cache_write * 3_750_000
        + billed.output * 15_000_000;
    let tokens = billed.input + billed.cached_input + billed.cache_write + billed.output;
    assert!(cost > 0, "{billed:?}");
    assert_eq!(run["last_result"]["cost"]["total"]["base"].as_f64(), Some(cost as f64 / 1e9), "{run}");
    let ns = env.namespace.clone();
    for level_key in [format!("organization/{org}"), format!("application/{ns}/a"), format!("use_case/{ns}/a/draft")] {
        assert_eq!(level(redis, &level_key).await, (cost, tokens, 1), "{level_key}");
    }
    let metrics = gw.metrics().await;
    let filter = [("organization", org.as_str()), ("source", "ingest"), ("provider", "anthropic")];
    assert_eq!(sum(&metrics, "payi_gateway_tokens_total", &filter), tokens as f64, "{metrics}");

    clean_up(&env, &org, &[&group]).await;
}
