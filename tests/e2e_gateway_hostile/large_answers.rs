//! Usage read however large the answer (docs/ai-gateway.md, "Memory bounds"): a
//! Responses stream whose image generation events carry megabytes of base64 (the
//! usage is in `response.completed`, itself as large, after them), a non-streamed
//! Responses answer of 17 MiB and an embeddings answer of 20 MiB (the usage at its
//! end). Each is passed on whole and charged exactly what the simulator's invoice
//! says, in tokens and in the ledger, without the gateway keeping the answer.

use chrono::Datelike;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::common::gateway::{Gateway, post, providers_file, send, sum};
use crate::common::provider_sim::{InvoiceLine, ProviderSim};
use crate::common::redis::{Redis, command};
use crate::common::verifier::log_dir;
use crate::common::{Operator, TestEnv, app_with_reason, eventually, key_of};
use crate::memory::{peak_rss, settled_peak};

const PRICES: &str = "providers:
  openai:
    gpt-4o-mini: {input: 0.15, cachedInput: 0.075, output: 0.6}
    text-embedding-3-small: {input: 0.02, output: 0}
";

/// What the provider bills for one invoice line, in pico-USD, priced here.
fn billed(line: &InvoiceLine) -> u128 {
    let (input, cached, output) = match line.model.as_str() {
        "gpt-4o-mini" => (150_000, 75_000, 600_000),
        "text-embedding-3-small" => (20_000, 20_000, 0),
        other => panic!("no price for {other}"),
    };
    let u = line.usage;
    u128::from(u.input) * input + u128::from(u.cached_input) * cached + u128::from(u.output) * output
}

/// The Organization's month-to-date spend in the ledger, in pico-USD.
async fn ledger_pico(redis: &str, org: &str) -> u128 {
    let now = chrono::Utc::now();
    let key = format!("payi:nusd:spend:organization/{org}:m{:04}-{:02}", now.year(), now.month());
    let get = |key: String| async move {
        let reply = command(redis, &["GET", &key]).await;
        reply.lines().nth(1).and_then(|v| v.parse::<u128>().ok()).unwrap_or(0)
    };
    get(key.clone()).await * 1000 + get(format!("{key}:p")).await
}

struct Setup {
    _env: TestEnv,
    org: String,
    key: String,
    sim: ProviderSim,
    redis: Redis,
    gw: Gateway,
}

async fn setup(name: &str) -> Setup {
    Operator::shared();
    let redis = Redis::start().await;
    let sim = ProviderSim::start().await;
    let env = TestEnv::new(name).await;
    let (org, group) = env.org_and_group().await;
    env.create_app("large", &group).await;
    app_with_reason(&env, "large", "KeyIssued").await;
    let key = key_of(&env.secrets().get("large-payi-key").await.unwrap());
    let dir = log_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let providers = providers_file(&dir, &sim.addr.to_string(), &[("openai", "sk-sim-openai-large")]);
    let prices = dir.join("prices.yaml");
    std::fs::write(&prices, PRICES).unwrap();
    let args = ["--prices-file", prices.to_str().unwrap(), "--limits-redis-url", &redis.url()];
    let gw = Gateway::start(name, &providers, &args).await;
    let auth = format!("Bearer {key}");
    let probe = json!({"model": "gpt-4o-mini", "input": "ready"}).to_string();
    eventually("the key to work at the gateway", || async {
        let answer = post(&gw.url(), "/openai/v1/responses", &[("authorization", &auth)], &probe).await.ok()?;
        (answer.status == 200).then_some(())
    })
    .await;
    Setup { _env: env, org, key, sim, redis, gw }
}

impl Setup {
    /// The gateway's peak memory grew by less than one answer's size (the smallest
    /// here, the 6 MiB image, is kept three times over in the stream).
    fn no_answer_kept(&self, before: u64) {
        let (peak, _) = peak_rss(self.gw.pid());
        let grew = peak.saturating_sub(before);
        println!("gateway peak RSS {} MiB, {} KiB more than before the answers", peak >> 20, grew >> 10);
        assert!(grew < 6 << 20, "the gateway kept an answer: its peak RSS grew {} MiB", grew >> 20);
    }

    /// Waits until everything sent is counted and charged and the invoice has `lines`.
    async fn settled(&self, lines: usize) {
        eventually("every request counted, charged and invoiced", || async {
            let m = self.gw.metrics().await;
            let idle = sum(&m, "payi_gateway_requests_in_flight", &[]) == 0.0
                && sum(&m, "payi_limit_charges_queued", &[]) == 0.0;
            (idle && self.sim.invoice().len() == lines).then_some(())
        })
        .await;
    }

    /// The invoice, the gateway's tokens and the ledger agree exactly, every request
    /// metered from its reported usage.
    async fn charged_as_invoiced(&self) {
        let invoice = self.sim.invoice();
        assert!(invoice.iter().all(|l| l.complete), "{invoice:?}");
        let m = self.gw.metrics().await;
        let org = [("organization", self.org.as_str())];
        let tokens = |kind: &str| sum(&m, "payi_gateway_tokens_total", &[org[0], ("token_type", kind)]) as u64;
        let sum_of = |f: fn(&InvoiceLine) -> u64| invoice.iter().map(f).sum::<u64>();
        assert_eq!(tokens("input"), sum_of(|l| l.usage.input), "input tokens");
        assert_eq!(tokens("cached_input"), sum_of(|l| l.usage.cached_input));
        assert_eq!(tokens("output"), sum_of(|l| l.usage.output - l.usage.reasoning), "output tokens");
        let metered = sum(&m, "payi_gateway_proxied_requests_total", &[org[0], ("outcome", "metered")]);
        let all = sum(&m, "payi_gateway_proxied_requests_total", &org);
        assert_eq!((metered, all), (invoice.len() as f64, invoice.len() as f64), "every answer metered");
        let bill: u128 = invoice.iter().map(billed).sum();
        let ledger = ledger_pico(&self.redis.url(), &self.org).await;
        println!("{} invoice lines, bill {bill} pico-USD, ledger {ledger}", invoice.len());
        assert!(bill > 0);
        assert_eq!(ledger, bill, "the ledger holds exactly what the provider bills");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_image_generation_stream_with_6_mib_events_is_passed_whole_and_charged_its_usage() {
    let s = setup("large-image-stream").await;
    let before = s.sim.invoice().len();
    let rss_before = settled_peak(s.gw.pid()).await;
    let auth = format!("Bearer {}", s.key);
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let body = json!({"model": "image-6144-gpt-4o-mini", "input": "draw a lighthouse at dusk", "stream": true,
                      "tools": [{"type": "image_generation", "partial_images": 1}]});
    let response = send(&s.gw.url(), "POST", "/openai/v1/responses", &headers, &body.to_string()).await.unwrap();
    assert_eq!(response.status(), 200);
    let stream = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(stream.to_vec()).unwrap();
    assert!(stream.len() > 18 << 20, "{} bytes", stream.len());
    // The events are the provider's, whole: three of them carry the 6 MiB image.
    let events: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let of = |kind: &str| events.iter().find(|e| e["type"] == kind).unwrap_or_else(|| panic!("no {kind} event"));
    let image = 6144 * 1024;
    let partial = of("response.image_generation_call.partial_image")["partial_image_b64"].as_str().map(str::len);
    assert_eq!(partial, Some(image));
    let completed = of("response.completed");
    assert_eq!(completed["response"]["output"][1]["result"].as_str().map(str::len), Some(image));
    assert_eq!(events.last().map(|e| &e["type"]), Some(&json!("response.completed")));
    s.settled(before + 1).await;
    s.charged_as_invoiced().await;
    s.no_answer_kept(rss_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_answers_of_17_and_20_mib_are_passed_whole_and_charged_their_usage() {
    let s = setup("large-json").await;
    let before = s.sim.invoice().len();
    let rss_before = settled_peak(s.gw.pid()).await;
    let auth = format!("Bearer {}", s.key);
    // About 5.6 bytes of JSON per dimension: 3.6 million dimensions are over 20 MiB.
    let embeddings = json!({"model": "text-embedding-3-small", "input": "one two three", "dimensions": 3_600_000});
    let answer =
        post(&s.gw.url(), "/openai/v1/embeddings", &[("authorization", &auth)], &embeddings.to_string()).await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.body.len() > 20 << 20, "the answer is {} bytes", answer.body.len());
    let parsed: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(parsed["data"][0]["embedding"].as_array().map(Vec::len), Some(3_600_000));
    assert_eq!(parsed["usage"]["prompt_tokens"], 8);
    // A Responses answer carrying a 17 MiB image before its usage.
    let image = json!({"model": "image-17408-gpt-4o-mini", "input": "draw a harbour",
                       "tools": [{"type": "image_generation"}]});
    let answer =
        post(&s.gw.url(), "/openai/v1/responses", &[("authorization", &auth)], &image.to_string()).await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.body.len() > 17 << 20, "the answer is {} bytes", answer.body.len());
    s.settled(before + 2).await;
    s.charged_as_invoiced().await;
    s.no_answer_kept(rss_before);
}
