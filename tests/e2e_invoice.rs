//! The provider's bill equals the ledger (issue 25's acceptance test): two gateway
//! replicas share one Redis ledger; the provider simulator keeps an invoice of
//! what it would bill for every request it served, cut ones included. After a
//! mixed run (every metered API, JSON and streams, through both replicas; Redis
//! slowed past the charge timeout, then restarted; provider errors), the
//! Organization's month-to-date ledger counter, the summed Prometheus cost and an
//! independent pricing of the invoice agree to the nano-USD. Then clients cancel
//! (before the first byte and mid-stream) and one replica is sent SIGTERM
//! mid-stream: the totals still agree, within the documented tolerance of the
//! estimated part (docs/ai-gateway.md).

mod common;

use std::time::Duration;

use chrono::Datelike;
use common::gateway::{Gateway, post, providers_file, send, sum};
use common::provider_sim::{InvoiceLine, ProviderSim};
use common::redis::{Redis, command};
use common::{Operator, TestEnv, app_with_reason, eventually, key_of};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use payi_operator::crd::Application;
use serde_json::{Value, json};

/// Odd prices, so remainders below a nano-USD occur and must be carried.
const PRICES: &str = "providers:
  openai:
    gpt-4o-mini: {input: 0.15, cachedInput: 0.075, output: 0.6, aliases: [slow-300-drip-60-gpt-4o-mini]}
    o3-mini: {input: 1.1, cachedInput: 0.55, output: 4.4}
    text-embedding-3-small: {input: 0.02, output: 0}
    gpt-image-1: {input: 5, cachedInput: 1.25, output: 40}
  anthropic:
    claude-sonnet-4-5: {input: 3, cachedInput: 0.3, cacheWrite: 3.75, output: 15}
";

/// Pico-USD per token (USD per million × 10^6): input, cached input, cache write, output.
fn price(model: &str) -> (u128, u128, u128, u128) {
    match model {
        "gpt-4o-mini" => (150_000, 75_000, 150_000, 600_000),
        "o3-mini" => (1_100_000, 550_000, 1_100_000, 4_400_000),
        "text-embedding-3-small" => (20_000, 20_000, 20_000, 0),
        "gpt-image-1" => (5_000_000, 1_250_000, 5_000_000, 40_000_000),
        "claude-sonnet-4-5" => (3_000_000, 300_000, 3_750_000, 15_000_000),
        other => panic!("no price for {other}"),
    }
}

/// What the provider bills for one invoice line, priced independently of the gateway.
fn billed(line: &InvoiceLine) -> u128 {
    if line.usage.input + line.usage.cached_input + line.usage.cache_write + line.usage.output == 0 {
        return 0;
    }
    let (input, cached, write, output) = price(&line.model);
    let u = line.usage;
    // OpenAI counts reasoning inside output; both bill it as output.
    u128::from(u.input) * input
        + u128::from(u.cached_input) * cached
        + u128::from(u.cache_write) * write
        + u128::from(u.output) * output
}

/// Tokens by which an estimate of one cut stream may differ from the bill: the
/// prompt (tokenizer and message framing against the provider's count) and the
/// output (content events that passed against tokens generated).
const ESTIMATE_TOKENS: u128 = 12;

async fn app(env: &TestEnv, name: &str, group: &str) -> String {
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "payi.io/v1alpha1", "kind": "Application", "metadata": {"name": name},
        "spec": {"groupRef": {"name": group}}
    }))
    .unwrap();
    env.apps().create(&PostParams::default(), &app).await.unwrap();
    app_with_reason(env, name, "KeyIssued").await;
    key_of(&env.secrets().get(&format!("{name}-payi-key")).await.unwrap())
}

/// The requests of one round: every metered API, JSON and streams, a reasoning
/// model, a cached prompt, and provider errors.
fn round() -> Vec<(&'static str, Value)> {
    let chat = |model: &str, stream: bool, text: &str| json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]});
    vec![
        ("/openai/v1/chat/completions", chat("gpt-4o-mini", false, "count the sheep please")),
        ("/openai/v1/chat/completions", chat("gpt-4o-mini", true, "a stream of words")),
        ("/openai/v1/chat/completions", chat("o3-mini", false, "think about it")),
        ("/openai/v1/chat/completions", chat("gpt-4o-mini", false, "this one is cached for sure")),
        // Compressed although the gateway asked for identity: decoded for metering.
        ("/openai/v1/chat/completions", chat("gzip-gpt-4o-mini", false, "squeezed through gzip")),
        ("/openai/v1/chat/completions", chat("fault-500", false, "fails")),
        ("/openai/v1/chat/completions", chat("fault-500", true, "fails too")),
        ("/openai/v1/completions", json!({"model": "gpt-4o-mini", "prompt": "once upon a time"})),
        ("/openai/v1/embeddings", json!({"model": "text-embedding-3-small", "input": ["one", "two three"]})),
        ("/openai/v1/images/generations", json!({"model": "gpt-image-1", "prompt": "a lighthouse at dusk"})),
        ("/openai/v1/responses", json!({"model": "gpt-4o-mini", "input": "hello responses"})),
        ("/openai/v1/responses", json!({"model": "gpt-4o-mini", "input": "stream responses", "stream": true})),
        (
            "/anthropic/v1/messages",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi cached"}]}),
        ),
        (
            "/anthropic/v1/messages",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true,
                   "messages": [{"role": "user", "content": "stream me"}]}),
        ),
    ]
}

async fn run_round(gateways: &[&Gateway], key: &str) {
    let auth = format!("Bearer {key}");
    let headers = [("authorization", auth.as_str()), ("anthropic-version", "2023-06-01")];
    for (i, (path, body)) in round().into_iter().enumerate() {
        let gw = gateways[i % gateways.len()];
        let answer = post(&gw.url(), path, &headers, &body.to_string()).await.expect("the gateway answers");
        let failing = body["model"].as_str().unwrap_or_default().starts_with("fault-");
        assert_eq!(answer.status, if failing { 500 } else { 200 }, "{path} {body}: {}", answer.body);
    }
}

/// The Organization's month-to-date spend in the ledger, in pico-USD (the counter
/// in nano-USD and its pico-USD remainder).
async fn ledger_pico(redis: &str, org: &str) -> u128 {
    let now = chrono::Utc::now();
    let key = format!("payi:nusd:spend:organization/{org}:m{:04}-{:02}", now.year(), now.month());
    let get = |key: String| async move {
        let reply = command(redis, &["GET", &key]).await;
        reply.lines().nth(1).and_then(|v| v.parse::<u128>().ok()).unwrap_or(0)
    };
    get(key.clone()).await * 1000 + get(format!("{key}:p")).await
}

/// Every charge of this replica reached the ledger and nothing is in flight.
async fn settled(gw: &Gateway) {
    eventually("the replica's requests counted and charged", || async {
        let m = gw.metrics().await;
        let idle = sum(&m, "payi_gateway_requests_in_flight", &[]) == 0.0;
        (idle && sum(&m, "payi_limit_charges_queued", &[]) == 0.0).then_some(())
    })
    .await;
}

fn cost_usd(metrics: &str, org: &str) -> f64 {
    sum(metrics, "payi_gateway_cost_usd_total", &[("organization", org)])
}

/// Pico-USD from a Prometheus USD figure (exact to the nano-USD at these amounts).
fn pico(usd: f64) -> i128 {
    (usd * 1e12).round() as i128
}

/// Sends a request and hangs up after `after`, before any answer byte.
async fn leave_early(gw: &Gateway, key: &str, path: &str, body: &Value, after: Duration) {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
    let body = body.to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    tokio::time::sleep(after).await;
    drop(stream);
}

/// Reads `frames` body frames of a stream, then drops it (the client stops reading).
async fn read_then_cancel(gw: &Gateway, key: &str, body: &Value, frames: usize) {
    let auth = format!("Bearer {key}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let response = send(&gw.url(), "POST", "/openai/v1/chat/completions", &headers, &body.to_string()).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut body = response.into_body();
    let mut data = 0;
    while data < frames {
        match body.frame().await {
            Some(Ok(frame)) if frame.data_ref().is_some_and(|d| !d.is_empty()) => data += 1,
            Some(Ok(_)) => {}
            other => panic!("the stream ended before {frames} frames: {other:?}"),
        }
    }
    drop(body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_providers_bill_equals_the_ledger_and_the_metrics_through_two_replicas_and_faults() {
    Operator::shared();
    let mut redis = Redis::start().await;
    let url = redis.url();
    let sim = ProviderSim::start().await;
    let dir = common::verifier::log_dir().join(common::unique("invoice"));
    std::fs::create_dir_all(&dir).unwrap();
    let providers = providers_file(&dir, &sim.addr.to_string(), &[("openai", "sk-sim"), ("anthropic", "sk-ant-sim")]);
    let prices = dir.join("prices.yaml");
    std::fs::write(&prices, PRICES).unwrap();
    let args = |extra: &'static [&'static str]| {
        let mut args = vec![
            "--prices-file".to_string(),
            prices.display().to_string(),
            "--limits-redis-url".into(),
            url.clone(),
            // Redis below is slowed past this on purpose: late answers are sent again.
            "--limits-charge-timeout-ms".into(),
            "100".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let a_args = args(&[]);
    let b_args = args(&["--drain-seconds", "1", "--settle-seconds", "5", "--metrics-linger-seconds", "5"]);
    let a = Gateway::start("invoice-a", &providers, &a_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let mut b = Gateway::start("invoice-b", &providers, &b_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let env = TestEnv::new("invoice").await;
    let (org, group) = env.org_and_group().await;
    let key = app(&env, "billed", &group).await;
    for gw in [&a, &b] {
        let auth = format!("Bearer {key}");
        let probe = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "ready"}]}).to_string();
        eventually("the key to work on each replica", || async {
            let answer =
                post(&gw.url(), "/openai/v1/chat/completions", &[("authorization", &auth)], &probe).await.ok()?;
            (answer.status == 200).then_some(())
        })
        .await;
    }

    // Phase 1: reported usage only, under a slow and then a restarted ledger.
    run_round(&[&a, &b], &key).await;
    let slow = {
        let addr = redis.addr.clone();
        tokio::spawn(async move {
            // About 5 s of a Redis slower than the charge timeout (not down).
            for _ in 0..10 {
                command(&addr, &["DEBUG", "SLEEP", "0.4"]).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    while !slow.is_finished() {
        run_round(&[&a, &b], &key).await;
    }
    slow.await.unwrap();
    redis.stop();
    run_round(&[&b, &a], &key).await;
    redis.restart(Duration::ZERO).await;
    run_round(&[&a, &b], &key).await;
    settled(&a).await;
    settled(&b).await;

    let invoice = sim.invoice();
    assert!(invoice.iter().all(|l| l.complete || billed(l) == 0), "phase 1 has no cut request: {invoice:?}");
    let bill: u128 = invoice.iter().map(billed).sum();
    let ledger = ledger_pico(&url, &org).await;
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    let metrics = pico(cost_usd(&ma, &org) + cost_usd(&mb, &org));
    println!("phase 1: {} invoice lines, bill {bill} pico-USD, ledger {ledger}, metrics {metrics}", invoice.len());
    assert_eq!(ledger, bill, "the ledger holds exactly what the provider bills");
    assert!((metrics - bill as i128).abs() <= 1_000, "Prometheus {metrics} vs bill {bill} (to the nano-USD)");
    let duplicates =
        sum(&ma, "payi_limit_charges_duplicate_total", &[]) + sum(&mb, "payi_limit_charges_duplicate_total", &[]);
    println!("phase 1: {duplicates} late charges sent again and recognised");
    for m in [&ma, &mb] {
        assert_eq!(sum(m, "payi_limit_charges_failed_total", &[]), 0.0, "no usage event given up");
        assert_eq!(sum(m, "payi_limit_charges_dropped_total", &[]), 0.0);
    }

    // Phase 2: clients cancel, and replica b is stopped mid-stream.
    let drip = |text: &str| json!({"model": "drip-60-gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": text}]});
    let slow_json = json!({"model": "slow-300-gpt-4o-mini", "messages": [{"role": "user", "content": "wait for me"}]});
    let slow_stream = json!({"model": "slow-300-drip-60-gpt-4o-mini", "stream": true,
                             "messages": [{"role": "user", "content": "nobody reads this"}]});
    let mut cut = 0u128;
    for gw in [&a, &b] {
        leave_early(gw, &key, "/openai/v1/chat/completions", &slow_json, Duration::from_millis(100)).await;
        leave_early(gw, &key, "/openai/v1/chat/completions", &slow_stream, Duration::from_millis(100)).await;
        read_then_cancel(gw, &key, &drip("cut me off after three"), 3).await;
        cut += 2;
    }
    // A stream in flight on b when it gets SIGTERM: cut at its 1 s drain bound.
    let in_flight = {
        let (url, auth) = (b.url(), format!("Bearer {key}"));
        let body = json!({"model": "drip-400-gpt-4o-mini", "stream": true,
                          "messages": [{"role": "user", "content": "a long answer during shutdown"}]});
        tokio::spawn(async move {
            let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
            let response = send(&url, "POST", "/openai/v1/chat/completions", &headers, &body.to_string()).await;
            if let Ok(response) = response {
                let _ = response.into_body().collect().await;
            }
        })
    };
    eventually("the stream to be in flight on b", || async {
        (sum(&b.metrics().await, "payi_gateway_requests_in_flight", &[]) >= 1.0).then_some(())
    })
    .await;
    cut += 1;
    let _ = std::process::Command::new("kill").args(["-TERM", &b.pid().to_string()]).status();
    // b keeps /metrics up while it drains and settles (and lingers 5 s): its final counts.
    let final_b = eventually("b to have counted and charged everything", || async {
        let m = common::verifier::request(&b.metrics, "/metrics", &[]).await?.body;
        let done = sum(&m, "payi_gateway_requests_in_flight", &[]) == 0.0
            && sum(&m, "payi_limit_charges_queued", &[]) == 0.0
            && sum(&m, "payi_gateway_proxied_requests_total", &[("outcome", "estimated")]) >= 3.0;
        done.then_some(m)
    })
    .await;
    assert!(b.terminate(Duration::from_secs(20)).is_some_and(|s| s.success()), "b exits 0 after SIGTERM");
    in_flight.await.unwrap();
    settled(&a).await;
    eventually("every line of the invoice", || async {
        let lines = sim.invoice().len();
        (lines == invoice.len() + 7).then_some(())
    })
    .await;

    let invoice = sim.invoice();
    let bill: u128 = invoice.iter().map(billed).sum();
    let ledger = ledger_pico(&url, &org).await;
    let ma = a.metrics().await;
    let metrics = pico(cost_usd(&ma, &org) + cost_usd(&final_b, &org));
    let tolerance = cut * ESTIMATE_TOKENS * price("gpt-4o-mini").3;
    for line in &invoice[invoice.len() - 7..] {
        println!("phase 2 invoice: {} {:?} complete={}", line.model, line.usage, line.complete);
    }
    println!(
        "phase 2: bill {bill} pico-USD, ledger {ledger}, metrics {metrics}, {cut} estimated streams, tolerance {tolerance}"
    );
    assert!((metrics - ledger as i128).abs() <= 1_000, "Prometheus {metrics} vs ledger {ledger} (to the nano-USD)");
    assert!(
        ledger.abs_diff(bill) <= tolerance,
        "the ledger {ledger} is within {tolerance} of the provider's bill {bill} (the estimated part)"
    );
    let estimated = sum(&ma, "payi_gateway_proxied_requests_total", &[("outcome", "estimated")])
        + sum(&final_b, "payi_gateway_proxied_requests_total", &[("outcome", "estimated")]);
    assert_eq!(estimated, cut as f64, "each cut stream estimated, none left at zero");
    let abandoned = sum(&ma, "payi_gateway_proxied_requests_total", &[("outcome", "abandoned")])
        + sum(&final_b, "payi_gateway_proxied_requests_total", &[("outcome", "abandoned")]);
    assert_eq!(abandoned, 2.0, "each answer its client left was read and charged");
    let unpriced = sum(&ma, "payi_gateway_unpriced_requests_total", &[])
        + sum(&final_b, "payi_gateway_unpriced_requests_total", &[]);
    assert_eq!(unpriced, 0.0, "a stream cut before its first event is priced by the model it asked for");

    for group in [&group] {
        common::delete(&env.groups(), group).await;
    }
    common::delete(&env.orgs(), &org).await;
    common::delete(&Api::<Namespace>::all(env.client.clone()), &env.namespace).await;
}
