//! Memory bounds (docs/ai-gateway.md, "Memory bounds"): a tenant sending 32 request
//! bodies of almost 8 MiB at once, in the shapes that cost most to hold or parse,
//! against the real gateway binary with the chart's defaults. Its peak resident
//! memory (the kernel's high-water mark, `VmHWM`) stays under the chart's 256 MiB
//! limit, the budget of bytes in flight refuses what does not fit with 503
//! `gateway_busy` (never as too large: every body is under `--max-request-bytes`),
//! and another tenant's ordinary requests are all served meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::common::gateway::{Gateway, post, providers_file, sum};
use crate::common::provider_sim::ProviderSim;
use crate::common::verifier::{log_dir, request};
use crate::common::{Operator, TestEnv, app_with_reason, eventually, eventually_within, key_of};

const CHAT: &str = "/openai/v1/chat/completions";
/// The chart's memory limit for the gateway (charts/payi-operator/values.yaml).
const MEMORY_LIMIT: u64 = 256 << 20;
const HOSTILE: usize = 32;
/// The default `--max-bytes-in-flight`, as the chart sets it.
const BUDGET: u64 = 64 << 20;
/// Just under the default `--max-request-bytes` (8 MiB): the budget, not the size
/// bound, has to stop these.
const BODY: usize = (8 << 20) - 4096;

/// A hostile body of exactly [`BODY`] bytes: `head`, then `unit` repeated, then `tail`.
fn padded(head: &str, unit: &str, tail: &str) -> Arc<Vec<u8>> {
    let room = BODY - head.len() - tail.len();
    let mut body = Vec::with_capacity(BODY);
    body.extend_from_slice(head.as_bytes());
    body.extend(unit.as_bytes().iter().copied().cycle().take(room));
    body.extend_from_slice(tail.as_bytes());
    assert_eq!(body.len(), BODY);
    Arc::new(body)
}

/// The shapes, each with the status it gets when the gateway takes it.
fn shapes() -> Vec<(&'static str, Arc<Vec<u8>>, u16)> {
    vec![
        // Forwarded; the simulator answers after 1 s, holding the body's bytes that long.
        (
            "a prompt of 8 MiB",
            padded(r#"{"model":"slow-1000-gpt-4o-mini","messages":[{"role":"user","content":""#, "x", r#""}]}"#),
            200,
        ),
        // Forwarded as a stream (the body copied to ask for its usage, and held while
        // the stream runs: a cut stream's prompt is estimated from it).
        (
            "a streamed prompt of 8 MiB",
            padded(
                r#"{"model":"drip-300-gpt-4o-mini","stream":true,"messages":[{"role":"user","content":""#,
                "y",
                r#""}]}"#,
            ),
            200,
        ),
        // Four million JSON values where a string belongs: a Value tree of some 128 MiB.
        ("a model of four million zeros", padded(r#"{"model":["#, "0,", r#"0]}"#), 400),
        // Nested four million deep: refused at the parser's depth bound.
        ("four million nested arrays", padded(r#"{"model":"gpt-4o-mini","messages":"#, "[", ""), 400),
    ]
}

/// One request sent as careful clients send large bodies: with `Expect:
/// 100-continue`, the body only after the gateway asks for it. The status and body
/// of the final answer, and its `retry-after`.
async fn send_expecting(addr: &str, key: &str, body: &[u8]) -> (u16, String, Option<String>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {CHAT} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut read = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        read.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&read);
        if text.starts_with("HTTP/1.1 100") && text.contains("\r\n\r\n") {
            read.clear();
            stream.write_all(body).await.unwrap();
            continue;
        }
        if n == 0 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&read).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no answer head: {text:.200}"));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status line: {head}"));
    let retry_after = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("retry-after")))
        .map(|(_, v)| v.trim().to_string());
    (status, body.to_string(), retry_after)
}

/// A process's peak resident memory, and whether it is still running (not a zombie).
pub(crate) fn peak_rss(pid: u32) -> (u64, bool) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("");
    let kib: u64 = field("VmHWM:").trim_end_matches("kB").trim().parse().unwrap_or(0);
    (kib * 1024, !status.is_empty() && !field("State:").starts_with('Z'))
}

/// A process's resident memory once its peak has stopped growing for 3 s, with the
/// peak reset to it (`clear_refs` 5): the gateway loads its tokenizer's tables on a
/// thread of its own after it starts (some 40 MiB at their peak), which must neither
/// count as what a test's requests cost nor hide it below an earlier peak.
pub(crate) async fn settled_peak(pid: u32) -> u64 {
    let mut last = (peak_rss(pid).0, Instant::now());
    eventually_within(Duration::from_secs(90), "the gateway's memory to settle after its start", || {
        let (peak, _) = peak_rss(pid);
        if peak != last.0 {
            last = (peak, Instant::now());
        }
        let settled = last.1.elapsed() >= Duration::from_secs(3);
        async move { settled.then_some(peak) }
    })
    .await;
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting the gateway's peak RSS");
    peak_rss(pid).0
}

async fn tenant_key(env: &TestEnv, name: &str, group: &str) -> String {
    env.create_app(name, group).await;
    app_with_reason(env, name, "KeyIssued").await;
    key_of(&env.secrets().get(&format!("{name}-payi-key")).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_hostile_8_mib_bodies_stay_under_the_memory_limit_and_other_tenants_are_served() {
    Operator::shared();
    let env = TestEnv::new("hostile-memory").await;
    let (_, group) = env.org_and_group().await;
    let hostile = tenant_key(&env, "hostile", &group).await;
    let steady = tenant_key(&env, "steady", &group).await;
    let sim = ProviderSim::start().await;
    let dir = log_dir().join(format!("hostile-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let providers = providers_file(&dir, &sim.addr.to_string(), &[("openai", "sk-sim-openai-memory")]);
    // The chart's defaults: --max-request-bytes 8 MiB, --max-bytes-in-flight 64 MiB.
    let gw = Gateway::start("hostile-memory", &providers, &[]).await;
    let ordinary =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "steady work"}]}).to_string();
    for key in [&hostile, &steady] {
        let auth = format!("Bearer {key}");
        eventually("each tenant's key to work at the gateway", || async {
            let answer = post(&gw.url(), CHAT, &[("authorization", &auth)], &ordinary).await.ok()?;
            (answer.status == 200).then_some(())
        })
        .await;
    }
    let before = settled_peak(gw.pid()).await;

    // The storm, and beside it the other tenant's ordinary requests, one after another.
    let shapes = shapes();
    let started = Instant::now();
    let mut storm = JoinSet::new();
    for i in 0..HOSTILE {
        let (name, body, taken) = shapes[i % shapes.len()].clone();
        let (addr, key) = (gw.addr.clone(), hostile.clone());
        storm.spawn(async move { (name, taken, send_expecting(&addr, &key, &body).await) });
    }
    let storm_over = Arc::new(AtomicBool::new(false));
    let served = {
        let (url, auth, body) = (gw.url(), format!("Bearer {steady}"), ordinary.clone());
        let storm_over = storm_over.clone();
        tokio::spawn(async move {
            let mut statuses = vec![];
            while statuses.len() < 10 || !storm_over.load(Ordering::Relaxed) {
                let answer = post(&url, CHAT, &[("authorization", &auth)], &body).await;
                statuses.push(answer.map(|a| (a.status, a.body)).unwrap_or_else(|e| (0, e)));
            }
            statuses
        })
    };
    let mut busy = 0;
    let mut taken = 0;
    while let Some(result) = storm.join_next().await {
        let (name, status_if_taken, (status, body, retry_after)) = result.unwrap();
        let code =
            serde_json::from_str::<Value>(&body).ok().and_then(|v| v["error"]["code"].as_str().map(String::from));
        if status == 503 {
            assert_eq!(code.as_deref(), Some("gateway_busy"), "{name}: {body}");
            assert_eq!(retry_after.as_deref(), Some("1"), "{name}: a busy gateway says when to come back");
            busy += 1;
        } else {
            assert_eq!(status, status_if_taken, "{name}: {body:.300}");
            if status == 400 {
                assert_eq!(code.as_deref(), Some("invalid_request_body"), "{name}: {body:.300}");
            }
            taken += 1;
        }
    }
    let storm_took = started.elapsed();
    storm_over.store(true, Ordering::Relaxed);
    let statuses = served.await.unwrap();
    let (peak, alive) = peak_rss(gw.pid());
    let metrics = gw.metrics().await;
    println!(
        "{HOSTILE} hostile bodies of {BODY} bytes: {taken} taken, {busy} refused busy; {} ordinary requests of the \
         other tenant; gateway peak RSS {} MiB (before the storm {} MiB); storm {storm_took:?}",
        statuses.len(),
        peak >> 20,
        before >> 20,
    );
    assert!(alive, "the gateway is still running");
    assert!(peak < MEMORY_LIMIT, "peak RSS {} MiB is over the 256 MiB limit", peak >> 20);
    // The sizing rule of docs/ai-gateway.md: bodies in flight cost at most twice the
    // budget (a stream's body is copied once). Without the budget (a 4 GiB one) this
    // storm took 32 bodies at once and the peak went 220 MiB over the start.
    assert!(
        peak.saturating_sub(before) < 2 * BUDGET,
        "the storm added {} MiB, more than twice the budget",
        (peak - before) >> 20
    );
    assert!(busy >= 1 && taken >= 1, "the budget took some and refused some: {taken} taken, {busy} busy");
    assert_eq!(sum(&metrics, "payi_gateway_busy_refusals_total", &[]), busy as f64);
    assert_eq!(sum(&metrics, "payi_gateway_request_body_too_large_total", &[]), 0.0, "none refused for its size");
    assert_eq!(sum(&metrics, "payi_gateway_bytes_in_flight_limit", &[]), BUDGET as f64);
    let refused: Vec<_> = statuses.iter().filter(|(status, _)| *status != 200).collect();
    assert!(refused.is_empty(), "the other tenant was refused: {refused:?}");
    // Everything taken is given back once the answers are done.
    eventually("the bytes in flight to come back to nothing", || async {
        let m = gw.metrics().await;
        (sum(&m, "payi_gateway_bytes_in_flight", &[]) == 0.0 && sum(&m, "payi_gateway_requests_in_flight", &[]) == 0.0)
            .then_some(())
    })
    .await;
    assert_eq!(request(&gw.metrics, "/healthz", &[]).await.map(|r| r.status), Some(200));
}
