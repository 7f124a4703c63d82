//! The metering gateway end to end: the real operator mints keys on the real API
//! server, the real `payi-operator gateway` binary (as the chart's gateway
//! ServiceAccount under `make test`) checks them with the verifier's index, and the
//! official openai, anthropic and payi Python SDKs (from PyPI, in the venv the test
//! setup makes) call it unchanged. Only the providers are simulated
//! (tests/common/provider_sim.rs, on loopback, their wire formats).
//!
//! The mixed run's tokens and cost are asserted exactly, per use case, Application,
//! Group and Organization, from what the simulator reported for each request it saw.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::gateway::{Gateway, post, providers_file, send, sum};
use common::provider_sim::{ProviderSim, Recorded, SimApi, SimUsage, expected_usage};
use common::sdk::drive;
use common::{Operator, TestEnv, app_with_reason, eventually, key_of, unique};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use payi_operator::crd::Application;
use serde_json::{Value, json};

const OPENAI_CREDENTIAL: &str = "sk-sim-openai-credential-0001";
const ANTHROPIC_CREDENTIAL: &str = "sk-ant-sim-credential-0002";
const AZURE_CREDENTIAL: &str = "azure-sim-credential-0003";

/// Test prices (USD per million tokens), simple enough to check by hand; loaded
/// with --prices-file, which replaces the shipped table.
const PRICES: &str = "providers:
  openai:
    gpt-4o-mini: {input: 1.0, cachedInput: 0.5, output: 4.0}
    gpt-4o: {input: 2.0, cachedInput: 1.0, output: 8.0}
    text-embedding-3-small: {input: 0.5, output: 0.0}
  anthropic:
    claude-sonnet-4-5: {input: 3.0, cachedInput: 0.25, cacheWrite: 3.75, output: 15.0}
";

/// (input, cachedInput, cacheWrite, output) per million, as in PRICES.
fn price(provider: &str, model: &str) -> Option<(f64, f64, f64, f64)> {
    match (provider, model) {
        ("openai" | "azure.openai", "gpt-4o-mini") => Some((1.0, 0.5, 1.0, 4.0)),
        ("openai" | "azure.openai", "gpt-4o") => Some((2.0, 1.0, 2.0, 8.0)),
        ("openai", "text-embedding-3-small") => Some((0.5, 0.5, 0.5, 0.0)),
        ("anthropic", "claude-sonnet-4-5") => Some((3.0, 0.25, 3.75, 15.0)),
        _ => None,
    }
}

/// The gateway's token types for what the simulator reported: OpenAI counts
/// reasoning inside completion tokens, the gateway keeps them apart.
fn tokens(u: SimUsage) -> [(&'static str, u64); 5] {
    [
        ("input", u.input),
        ("cached_input", u.cached_input),
        ("cache_write", u.cache_write),
        ("output", u.output - u.reasoning),
        ("reasoning", u.reasoning),
    ]
}

fn cost(u: SimUsage, p: (f64, f64, f64, f64)) -> f64 {
    (u.input as f64 * p.0 + u.cached_input as f64 * p.1 + u.cache_write as f64 * p.2 + u.output as f64 * p.3) / 1e6
}

fn api_of(path: &str) -> SimApi {
    let path = path.split('?').next().unwrap_or(path);
    match path {
        p if p.ends_with("/chat/completions") => SimApi::ChatCompletions,
        p if p.ends_with("/completions") => SimApi::Completions,
        p if p.ends_with("/embeddings") => SimApi::Embeddings,
        p if p.ends_with("/responses") => SimApi::Responses,
        p if p.ends_with("/messages") => SimApi::Messages,
        p => panic!("the simulator saw an unexpected path {p}"),
    }
}

/// One SDK run: key, group, application, use case, scenario, extra environment.
type Run<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, Vec<(&'a str, &'a str)>);
/// One level of the hierarchy: its label filter, and which requests it holds.
type Level<'a> = (Vec<(&'a str, String)>, Box<dyn Fn(&Expected) -> bool + 'a>);

/// One request as the test expects it counted.
#[derive(Clone, Debug)]
struct Expected {
    group: String,
    application: String,
    use_case: String,
    provider: &'static str,
    model: String,
    usage: SimUsage,
}

/// An Application with use cases; returns its key.
async fn app(env: &TestEnv, name: &str, group: &str, use_cases: Value) -> String {
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "payi.io/v1alpha1", "kind": "Application", "metadata": {"name": name},
        "spec": {"groupRef": {"name": group}, "useCases": use_cases}
    }))
    .unwrap();
    env.apps().create(&PostParams::default(), &app).await.unwrap();
    app_with_reason(env, name, "KeyIssued").await;
    key_of(&env.secrets().get(&format!("{name}-payi-key")).await.unwrap())
}

async fn clean_up(env: &TestEnv, org: &str, groups: &[&str]) {
    for group in groups {
        common::delete(&env.groups(), group).await;
    }
    common::delete(&env.orgs(), org).await;
    common::delete(&Api::<Namespace>::all(env.client.clone()), &env.namespace).await;
}

/// The gateway with every provider at the simulator, each with a credential.
async fn gateway(name: &str, sim: &ProviderSim, extra: &[&str]) -> (Gateway, tempdir::Dir) {
    let dir = tempdir::Dir::new(name);
    let upstream = sim.addr.to_string();
    let creds =
        [("openai", OPENAI_CREDENTIAL), ("anthropic", ANTHROPIC_CREDENTIAL), ("azure.openai", AZURE_CREDENTIAL)];
    let providers = providers_file(&dir.0, &upstream, &creds);
    let prices = dir.0.join("prices.yaml");
    std::fs::write(&prices, PRICES).unwrap();
    let mut args = vec!["--prices-file", prices.to_str().unwrap()];
    args.extend_from_slice(extra);
    (Gateway::start(name, &providers, &args).await, dir)
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(name: &str) -> Self {
            let dir = super::common::verifier::log_dir().join(format!("{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }
}

/// What reached the simulator must carry the provider credential and nothing of
/// the cluster: no payi key, no xProxy-* or x-payi-* header.
fn assert_clean(seen: &Recorded, keys: &[&str]) {
    for (name, value) in &seen.headers {
        assert!(!name.starts_with("xproxy-") && !name.starts_with("x-payi-"), "{name} reached the provider");
        for key in keys {
            assert!(!value.contains(key), "the payi key reached the provider in {name}");
        }
    }
    let credential = match api_of(&seen.path_and_query) {
        SimApi::Messages => seen.header("x-api-key").map(str::to_string),
        _ if seen.path_and_query.starts_with("/openai/deployments/") => seen.header("api-key").map(str::to_string),
        _ => seen.header("authorization").map(str::to_string),
    };
    let wanted = match api_of(&seen.path_and_query) {
        SimApi::Messages => ANTHROPIC_CREDENTIAL.to_string(),
        _ if seen.path_and_query.starts_with("/openai/deployments/") => AZURE_CREDENTIAL.to_string(),
        _ => format!("Bearer {OPENAI_CREDENTIAL}"),
    };
    assert_eq!(credential, Some(wanted), "the provider credential on {}", seen.path_and_query);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sdks_call_the_gateway_unchanged_and_tokens_and_cost_add_up_at_every_level() {
    Operator::shared();
    let env = TestEnv::new("gw-mixed").await;
    let org = unique("org");
    let (eng, mkt) = (unique("eng"), unique("mkt"));
    env.create_org(&org, None).await;
    env.create_group(&eng, &org).await;
    env.create_group(&mkt, &org).await;
    let use_cases = json!([{"name": "summarize_ticket"}, {"name": "draft_reply", "version": 2}]);
    let support = app(&env, "support", &eng, use_cases).await;
    let search = app(&env, "search", &eng, json!([])).await;
    let campaigns = app(&env, "campaigns", &mkt, json!([])).await;
    let sim = ProviderSim::start().await;
    let (gw, _dir) = gateway("gw-mixed", &sim, &[]).await;
    let url = gw.url();

    // (key, group, application, use case, scenario, extra env)
    let runs: Vec<Run> = vec![
        (&support, &eng, "support", "", "openai-chat", vec![]),
        (&support, &eng, "support", "", "openai-chat-stream", vec![]),
        (&support, &eng, "support", "", "openai-chat-stream-usage", vec![]),
        (&support, &eng, "support", "", "openai-embeddings", vec![]),
        (&support, &eng, "support", "summarize_ticket", "payi-openai", vec![("USE_CASE", "summarize_ticket")]),
        (&support, &eng, "support", "summarize_ticket", "payi-openai-stream", vec![("USE_CASE", "summarize_ticket")]),
        (
            &support,
            &eng,
            "support",
            "draft_reply",
            "payi-anthropic",
            vec![("USE_CASE", "draft_reply"), ("USER_ID", "alice")],
        ),
        (&support, &eng, "support", "draft_reply", "payi-anthropic-stream", vec![("USE_CASE", "draft_reply")]),
        (&search, &eng, "search", "", "openai-responses", vec![]),
        (&search, &eng, "search", "", "openai-responses-stream", vec![]),
        (&search, &eng, "search", "", "openai-completions", vec![("MODEL", "gpt-4o-mini")]),
        (&search, &eng, "search", "", "azure-chat", vec![]),
        (&campaigns, &mkt, "campaigns", "", "anthropic-messages", vec![]),
        (&campaigns, &mkt, "campaigns", "", "anthropic-messages-stream", vec![]),
        (&campaigns, &mkt, "campaigns", "", "openai-chat", vec![("MODEL", "my-finetune-1")]),
        (&campaigns, &mkt, "campaigns", "", "openai-chat", vec![("MODEL", "my-finetune-1")]),
    ];
    let mut expected = Vec::new();
    let mut results = BTreeMap::new();
    for (key, group, application, use_case, scenario, extra) in &runs {
        sim.clear();
        let result = drive(&url, key, scenario, extra);
        assert_eq!(result["ok"], true, "{scenario} through the gateway: {result}");
        let seen = sim.requests();
        assert_eq!(seen.len(), 1, "{scenario}: one request reaches the provider, saw {seen:?}");
        let seen = &seen[0];
        assert_clean(seen, &[&support, &search, &campaigns]);
        let provider = match (api_of(&seen.path_and_query), seen.path_and_query.starts_with("/openai/deployments/")) {
            (SimApi::Messages, _) => "anthropic",
            (_, true) => "azure.openai",
            _ => "openai",
        };
        let model = seen.body["model"].as_str().unwrap().to_string();
        let usage = expected_usage(api_of(&seen.path_and_query), &seen.body);
        assert!(usage.input > 0, "{scenario}: the simulator reported input tokens");
        expected.push(Expected {
            group: group.to_string(),
            application: application.to_string(),
            use_case: use_case.to_string(),
            provider,
            model,
            usage,
        });
        results.insert(*scenario, result);
    }

    // Streams: the client that did not ask for usage never sees the usage chunk
    // the gateway asked for; the one that asked gets exactly one.
    let plain = &results["openai-chat-stream"];
    assert_eq!((plain["usage_chunks"].as_u64(), plain["empty_choice_chunks"].as_u64()), (Some(0), Some(0)), "{plain}");
    assert_eq!(results["openai-chat-stream-usage"]["usage_chunks"], 1);
    // The gateway asked for the usage of the plain stream itself.
    // A wrong key gets 401 in the shape the SDK reads, and reaches no provider.
    sim.clear();
    let wrong = drive(&url, "", "openai-wrong-key", &[]);
    assert_eq!(wrong["error"]["status"], 401, "{wrong}");
    assert!(sim.requests().is_empty());
    // An undeclared use case is refused by name with 403.
    let undeclared = drive(&url, &support, "payi-openai", &[("USE_CASE", "nope")]);
    assert_eq!(undeclared["error"]["status"], 403, "{undeclared}");
    assert!(undeclared["error"]["message"].as_str().unwrap().contains("nope"), "{undeclared}");
    assert!(sim.requests().is_empty());

    let total_tokens: u64 = expected.iter().map(|e| tokens(e.usage).iter().map(|(_, n)| n).sum::<u64>()).sum();
    let metrics = eventually("the gateway to count every request", || async {
        let metrics = gw.metrics().await;
        let counted = sum(&metrics, "payi_gateway_tokens_total", &[("organization", &org)]);
        (counted as u64 == total_tokens).then_some(metrics)
    })
    .await;

    // Every level, every token type, exactly.
    let levels: Vec<Level> = vec![
        (vec![("organization", org.clone())], Box::new(|_| true)),
        (vec![("group", eng.clone())], Box::new(|e| e.group == eng)),
        (vec![("group", mkt.clone())], Box::new(|e| e.group == mkt)),
        (vec![("group", eng.clone()), ("application", "support".into())], Box::new(|e| e.application == "support")),
        (vec![("group", eng.clone()), ("application", "search".into())], Box::new(|e| e.application == "search")),
        (vec![("group", mkt.clone()), ("application", "campaigns".into())], Box::new(|e| e.application == "campaigns")),
        (
            vec![("application", "support".into()), ("use_case", "summarize_ticket".into())],
            Box::new(|e| e.use_case == "summarize_ticket"),
        ),
        (
            vec![("application", "support".into()), ("use_case", "draft_reply".into())],
            Box::new(|e| e.use_case == "draft_reply"),
        ),
        (
            vec![("application", "support".into()), ("use_case", "".into())],
            Box::new(|e| e.application == "support" && e.use_case.is_empty()),
        ),
    ];
    for (filter, matches) in &levels {
        let mut filter: Vec<(&str, &str)> = filter.iter().map(|(k, v)| (*k, v.as_str())).collect();
        filter.push(("organization", &org));
        for token_type in ["input", "cached_input", "cache_write", "output", "reasoning"] {
            let want: u64 = expected
                .iter()
                .filter(|e| matches(e))
                .map(|e| tokens(e.usage).iter().find(|(t, _)| *t == token_type).unwrap().1)
                .sum();
            let mut f = filter.clone();
            f.push(("token_type", token_type));
            let got = sum(&metrics, "payi_gateway_tokens_total", &f);
            assert_eq!(got as u64, want, "{token_type} tokens at {filter:?}");
        }
        let want: f64 = expected
            .iter()
            .filter(|e| matches(e))
            .filter_map(|e| price(e.provider, &e.model).map(|p| cost(e.usage, p)))
            .sum();
        let got = sum(&metrics, "payi_gateway_cost_usd_total", &filter);
        assert!((got - want).abs() <= 1e-12 + want * 1e-9, "cost at {filter:?}: {got} != {want}");
        assert!(want > 0.0, "cost at {filter:?} is priced");
    }

    // The unpriced model: tokens counted under one bounded label, no cost, and one log line.
    let unpriced = [("application", "campaigns"), ("model", "(unpriced)")];
    assert!(sum(&metrics, "payi_gateway_tokens_total", &unpriced) > 0.0);
    assert_eq!(sum(&metrics, "payi_gateway_cost_usd_total", &unpriced), 0.0);
    assert_eq!(sum(&metrics, "payi_gateway_unpriced_requests_total", &[("provider", "openai")]), 2.0);
    assert!(!metrics.contains("my-finetune-1"), "an unpriced model name became a label");
    let logs = gw.logs();
    assert_eq!(logs.matches("model not in the price table").count(), 1, "one log line per unpriced model");
    // Azure's deployment is priced as its model, under its own provider label.
    assert!(sum(&metrics, "payi_gateway_tokens_total", &[("provider", "azure.openai"), ("model", "gpt-4o")]) > 0.0);
    let outcomes: Vec<_> = common::gateway::series(&metrics, "payi_gateway_proxied_requests_total")
        .into_iter()
        .filter(|(l, _)| l.get("organization") == Some(&org))
        .map(|(l, v)| (l["application"].clone(), l["model"].clone(), l["outcome"].clone(), v))
        .collect();
    assert_eq!(
        sum(&metrics, "payi_gateway_proxied_requests_total", &[("organization", &org), ("outcome", "metered")]),
        runs.len() as f64,
        "{outcomes:?}"
    );
    // Latency histograms, and time to first byte for the streams.
    assert!(
        sum(&metrics, "payi_gateway_time_to_first_byte_seconds_count", &[]) >= 6.0,
        "streams time their first byte"
    );
    assert!(sum(&metrics, "payi_gateway_upstream_duration_seconds_count", &[]) >= runs.len() as f64);

    // Never the key or a credential in the logs or the metrics.
    for secret in [support.as_str(), &search, &campaigns, OPENAI_CREDENTIAL, ANTHROPIC_CREDENTIAL, AZURE_CREDENTIAL] {
        assert!(!logs.contains(secret), "a secret in the gateway's log");
        assert!(!metrics.contains(secret), "a secret in the gateway's metrics");
    }
    clean_up(&env, &org, &[&eng, &mkt]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_faults_pass_through_or_are_counted_and_never_hang_the_gateway() {
    Operator::shared();
    let env = TestEnv::new("gw-faults").await;
    let (org, group) = env.org_and_group().await;
    let key = app(&env, "faulty", &group, json!([])).await;
    let sim = ProviderSim::start().await;
    let (gw, _dir) = gateway(
        "gw-faults",
        &sim,
        &["--upstream-timeout-seconds", "1", "--upstream-idle-seconds", "1", "--max-request-bytes", "65536"],
    )
    .await;
    let url = gw.url();
    let auth = format!("Bearer {key}");
    let headers = [("authorization", auth.as_str())];
    let chat = |model: &str, stream: bool| {
        json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello there"}]}).to_string()
    };
    let via_gateway = |body: String| {
        let url = url.clone();
        let auth = auth.clone();
        async move { post(&url, "/openai/v1/chat/completions", &[("authorization", &auth)], &body).await }
    };

    // Provider errors: status and body exactly as the provider sent them.
    for (model, status) in [("fault-400", 400), ("fault-429", 429), ("fault-500", 500), ("fault-503", 503)] {
        let direct = post(&sim.url(), "/v1/chat/completions", &[], &chat(model, false)).await.unwrap();
        let through = via_gateway(chat(model, false)).await.unwrap();
        assert_eq!((through.status, &through.body), (status, &direct.body), "{model}");
        if status == 429 {
            assert_eq!(through.headers.get("retry-after").unwrap(), "1");
        }
    }
    // Timeout and reset: an answer of the gateway's own, promptly.
    let started = Instant::now();
    let timeout = via_gateway(chat("fault-timeout", false)).await.unwrap();
    assert_eq!(timeout.status, 504, "{}", timeout.body);
    assert!(started.elapsed() < Duration::from_secs(5), "the upstream timeout took {:?}", started.elapsed());
    let reset = via_gateway(chat("fault-reset", false)).await.unwrap();
    assert_eq!(reset.status, 502, "{}", reset.body);
    // A malformed body is passed on and counted as unreadable usage.
    let malformed = via_gateway(chat("fault-malformed", false)).await.unwrap();
    assert_eq!(malformed.status, 200);
    // A truncated body: the client sees the break; the gateway counts it.
    let truncated = via_gateway(chat("fault-truncated", false)).await;
    assert!(truncated.is_err() || truncated.as_ref().unwrap().body.len() < 40, "{truncated:?}");
    // A stream cut by the provider (silence): ended by the idle bound, counted
    // incomplete with the usage reported so far (none for OpenAI before the end).
    let cut = via_gateway(chat("fault-cut-stream", true)).await;
    assert!(cut.is_err(), "a silent stream is cut: {cut:?}");
    // An Anthropic stream cut after message_start keeps its input tokens.
    let body = json!({"model": "fault-cut-stream", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "hello there"}]});
    let cut = post(&url, "/anthropic/v1/messages", &headers, &body.to_string()).await;
    assert!(cut.is_err(), "{cut:?}");
    // A stream truncated by the provider.
    let truncated_stream = via_gateway(chat("fault-truncated", true)).await;
    assert!(truncated_stream.is_err() || !truncated_stream.unwrap().body.contains("[DONE]"));

    // 413 before any upstream call.
    sim.clear();
    let big = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(70_000)}]});
    let refused = via_gateway(big.to_string()).await.unwrap();
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert!(sim.requests().is_empty(), "a refused body reached the provider");
    // A body that is not JSON: 400 from the gateway, nothing sent.
    let bad = via_gateway("{not json".into()).await.unwrap();
    assert_eq!(bad.status, 400);
    assert!(sim.requests().is_empty());
    // No such provider: 404.
    let none = post(&url, "/nowhere/v1/chat/completions", &headers, &chat("m", false)).await.unwrap();
    assert_eq!(none.status, 404);

    let metrics = eventually("the faults to be counted", || async {
        let m = gw.metrics().await;
        let count =
            |outcome| sum(&m, "payi_gateway_proxied_requests_total", &[("organization", &org), ("outcome", outcome)]);
        // Cut bodies: incomplete, or estimated where a stream's usage had not come yet.
        (count("incomplete") + count("estimated") >= 3.0).then_some(m)
    })
    .await;
    let count =
        |outcome| sum(&metrics, "payi_gateway_proxied_requests_total", &[("organization", &org), ("outcome", outcome)]);
    assert_eq!(count("provider_error"), 4.0, "{metrics}");
    assert_eq!(count("upstream_timeout"), 1.0);
    assert_eq!(count("upstream_unavailable"), 1.0);
    assert!(count("usage_unreadable") >= 1.0, "malformed and truncated bodies: {metrics}");
    assert_eq!(sum(&metrics, "payi_gateway_request_body_too_large_total", &[]), 1.0);
    // The cut Anthropic stream counted the input message_start reported.
    let input = sum(&metrics, "payi_gateway_tokens_total", &[("provider", "anthropic"), ("token_type", "input")]);
    assert!(input > 0.0, "the cut stream's input tokens: {metrics}");
    // Still healthy and serving.
    assert_eq!(common::verifier::request(&gw.metrics, "/readyz", &[]).await.unwrap().status, 200);
    let ok = via_gateway(chat("gpt-4o-mini", false)).await.unwrap();
    assert_eq!(ok.status, 200);
    for secret in [key.as_str(), OPENAI_CREDENTIAL, ANTHROPIC_CREDENTIAL] {
        assert!(!gw.logs().contains(secret) && !metrics.contains(secret), "a secret leaked");
    }
    clean_up(&env, &org, &[&group]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_streams_in_flight_finish_within_the_drain_bound() {
    Operator::shared();
    let env = TestEnv::new("gw-drain").await;
    let (org, group) = env.org_and_group().await;
    let key = app(&env, "streamer", &group, json!([])).await;
    let sim = ProviderSim::start().await;
    let (mut gw, _dir) = gateway("gw-drain", &sim, &["--drain-seconds", "3"]).await;
    let auth = format!("Bearer {key}");
    // A stream with 100 ms between events, in flight when SIGTERM comes.
    let body = json!({"model": "drip-100-gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "a long answer please"}]});
    let url = gw.url();
    let stream = tokio::spawn({
        let (url, auth) = (url.clone(), auth.clone());
        async move { post(&url, "/openai/v1/chat/completions", &[("authorization", &auth)], &body.to_string()).await }
    });
    eventually("the stream to be in flight", || async { (sim.open_streams() == 1).then_some(()) }).await;
    // And one that never ends, which the bound cuts.
    let endless = json!({"model": "fault-cut-stream", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let endless = tokio::spawn({
        let (url, auth) = (url.clone(), auth.clone());
        async move { post(&url, "/openai/v1/chat/completions", &[("authorization", &auth)], &endless.to_string()).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = gw.terminate(Duration::from_secs(10));
        (status, gw)
    });
    // New connections are refused soon after SIGTERM.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = send(&url, "GET", "/openai/v1/models", &[("authorization", &auth)], "").await;
    assert!(late.is_err(), "a new request after SIGTERM was served: {late:?}");
    let finished = stream.await.unwrap().expect("the stream in flight finished");
    assert_eq!(finished.status, 200);
    assert!(finished.body.contains("[DONE]"), "the drained stream is whole: {}", finished.body);
    assert!(endless.await.unwrap().is_err(), "the endless stream was cut at the bound");
    let (status, gw) = status.await.unwrap();
    let took = started.elapsed();
    assert!(status.is_some_and(|s| s.success()), "the gateway exits cleanly after draining: {status:?}");
    assert!(took < Duration::from_secs(6), "drain bound 3 s, took {took:?}");
    assert!(gw.logs().contains("gateway drain bound reached"), "{}", gw.logs());
    clean_up(&env, &org, &[&group]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_application_loses_the_gateway_within_two_seconds() {
    Operator::shared();
    let env = TestEnv::new("gw-revoke").await;
    let (org, group) = env.org_and_group().await;
    let key = app(&env, "leaving", &group, json!([])).await;
    let sim = ProviderSim::start().await;
    let (gw, _dir) = gateway("gw-revoke", &sim, &[]).await;
    let auth = format!("Bearer {key}");
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let url = gw.url();
    let headers = [("authorization", auth.as_str())];
    let call = || post(&url, "/openai/v1/chat/completions", &headers, &body);
    let first = eventually("the key to work", || async { call().await.ok().filter(|a| a.status == 200) }).await;
    assert!(first.body.contains("chat.completion"));
    common::delete(&env.apps(), "leaving").await;
    let deleted = Instant::now();
    loop {
        if call().await.unwrap().status == 401 {
            break;
        }
        assert!(deleted.elapsed() < Duration::from_secs(2), "the deleted Application's key still works");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("gateway refused the deleted Application's key after {:?}", deleted.elapsed());
    clean_up(&env, &org, &[&group]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn not_ready_until_the_index_is_built() {
    // A gateway whose API server does not answer: alive, never ready, refusing keys.
    let sim = ProviderSim::start().await;
    let dir = tempdir::Dir::new("gw-unready");
    let providers = providers_file(&dir.0, &sim.addr.to_string(), &[]);
    let gw = Gateway::start_unready("gw-unready", &providers).await;
    let probe = |path: &'static str| {
        let addr = gw.metrics.clone();
        async move { common::verifier::request(&addr, path, &[]).await.map(|r| r.status) }
    };
    assert_eq!(probe("/healthz").await, Some(200));
    for _ in 0..10 {
        assert_eq!(probe("/readyz").await, Some(503));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = json!({"model": "gpt-4o-mini", "messages": []}).to_string();
    let answer = post(&gw.url(), "/openai/v1/chat/completions", &[("authorization", "Bearer payi_x")], &body).await;
    assert_ne!(answer.unwrap().status, 200);
    assert!(sim.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prices_and_provider_credentials_are_reloaded_without_a_restart() {
    Operator::shared();
    let env = TestEnv::new("gw-reload").await;
    let (org, group) = env.org_and_group().await;
    let key = app(&env, "reloaded", &group, json!([])).await;
    let sim = ProviderSim::start().await;
    let (gw, dir) = gateway("gw-reload", &sim, &["--reload-seconds", "1"]).await;
    let auth = format!("Bearer {key}");
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "price me"}]}).to_string();
    let url = gw.url();
    let headers = [("authorization", auth.as_str())];
    let cost = || async {
        let m = gw.metrics().await;
        sum(&m, "payi_gateway_cost_usd_total", &[("application", "reloaded")])
    };
    let first = eventually("the key to work", || async {
        post(&url, "/openai/v1/chat/completions", &headers, &body).await.ok().filter(|a| a.status == 200)
    })
    .await;
    assert_eq!(first.status, 200);
    let one = eventually("the first cost", || async { Some(cost().await).filter(|c| *c > 0.0) }).await;

    // Ten times the prices, and a rotated provider credential: both files rewritten in place.
    let tenfold =
        PRICES.replace("{input: 1.0, cachedInput: 0.5, output: 4.0}", "{input: 10.0, cachedInput: 5.0, output: 40.0}");
    assert_ne!(tenfold, PRICES);
    std::fs::write(dir.0.join("prices.yaml"), tenfold).unwrap();
    std::fs::write(dir.0.join("credential-openai"), "sk-rotated-credential-0009\n").unwrap();
    eventually("the rotated credential to be sent", || async {
        sim.clear();
        let answer = post(&url, "/openai/v1/chat/completions", &headers, &body).await.ok()?;
        let seen = sim.requests().pop()?;
        (answer.status == 200 && seen.header("authorization") == Some("Bearer sk-rotated-credential-0009"))
            .then_some(())
    })
    .await;
    // The last request was priced by the new table: ten times the first one's cost.
    let before = cost().await;
    assert_eq!(post(&url, "/openai/v1/chat/completions", &headers, &body).await.unwrap().status, 200);
    let after = eventually("the request to be counted", || async { Some(cost().await).filter(|c| *c > before) }).await;
    let added = after - before;
    assert!((added - 10.0 * one).abs() < 1e-12, "the reloaded table prices ten times higher: {added} vs {one}");
    assert!(gw.logs().contains("price table reloaded"), "the reload is logged");
    assert!(!gw.logs().contains("sk-rotated-credential-0009"), "the credential is never logged");
    common::delete(&env.groups(), &group).await;
    common::delete(&env.orgs(), &org).await;
    common::delete(&Api::<Namespace>::all(env.client.clone()), &env.namespace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paths_the_gateway_cannot_meter_are_refused_and_never_reach_the_provider() {
    Operator::shared();
    let env = TestEnv::new("gw-paths").await;
    let (org, group) = env.org_and_group().await;
    let key = app(&env, "batcher", &group, json!([])).await;
    let sim = ProviderSim::start().await;
    let (gw, _dir) = gateway("gw-paths", &sim, &[]).await;
    let auth = format!("Bearer {key}");
    let headers = [("authorization", auth.as_str())];
    let url = gw.url();
    // The key works on a metered path first.
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    eventually("the key to work", || async {
        post(&url, "/openai/v1/chat/completions", &headers, &chat).await.ok().filter(|a| a.status == 200)
    })
    .await;
    sim.clear();
    let background = json!({"model": "gpt-4o-mini", "input": "hi", "background": true}).to_string();
    let refused = [
        ("POST", "/openai/v1/batches", "{}".to_string(), "/v1/batches"),
        ("POST", "/openai/v1/files", "{}".to_string(), "/v1/files"),
        ("POST", "/openai/v1/images/edits", "{}".to_string(), "/v1/images/edits"),
        ("POST", "/openai/v1/audio/speech", "{}".to_string(), "/v1/audio/speech"),
        ("POST", "/openai/v1/fine_tuning/jobs", "{}".to_string(), "/v1/fine_tuning/jobs"),
        ("POST", "/api/v1/proxy/openai/v1/batches", "{}".to_string(), "/v1/batches"),
        ("POST", "/anthropic/v1/messages/batches", "{}".to_string(), "/v1/messages/batches"),
        ("POST", "/openai/v1/responses", background, "background"),
        ("POST", "/openai/v1/chat/../batches", "{}".to_string(), ".."),
        ("POST", "/openai/v1/%2e%2e/v1/batches", "{}".to_string(), "base URL"),
        ("DELETE", "/openai/v1/chat/completions", String::new(), "/v1/chat/completions"),
    ];
    for (method, path, body, named) in refused {
        let answer =
            send(&url, method, path, &[("authorization", auth.as_str()), ("content-type", "application/json")], &body)
                .await
                .unwrap();
        let status = answer.status().as_u16();
        use http_body_util::BodyExt;
        let text = String::from_utf8(answer.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        assert_eq!(status, 403, "{method} {path}: {text}");
        assert!(text.contains("path_not_metered") && text.contains(named), "{method} {path}: {text}");
    }
    // Image generation is metered for models that report token usage; others are refused.
    for model in ["dall-e-3", "dall-e-2"] {
        let body = json!({"model": model, "prompt": "a cat"}).to_string();
        let answer = post(&url, "/openai/v1/images/generations", &headers, &body).await.unwrap();
        assert_eq!(answer.status, 400, "{model}: {}", answer.body);
        assert!(answer.body.contains(model) && answer.body.contains("not metered"), "{}", answer.body);
    }
    assert!(sim.requests().is_empty(), "a refused request reached the provider: {:?}", sim.requests());
    let metrics = gw.metrics().await;
    assert!(sum(&metrics, "payi_gateway_unmetered_path_refusals_total", &[]) >= 10.0);
    // Free paths still pass: listing models costs nothing.
    let models = send(&url, "GET", "/openai/v1/models", &headers, "").await.unwrap();
    assert_eq!(models.status().as_u16(), 200);
    clean_up(&env, &org, &[&group]).await;
}
