//! Item 8 of issue #26: the gateway changes nothing a client sends or receives but
//! the one thing it must. A streamed OpenAI chat request that did not ask for the
//! usage gets `stream_options.include_usage: true` and nothing else changed (key
//! order, spacing, number spellings); the stream the provider sends back reaches
//! the client byte for byte, `: ping` keep-alives included, minus only the usage
//! chunk the gateway asked for. Real key, real gateway binary, the simulator
//! recording the bytes it received and the bytes it sent.

use std::path::PathBuf;

use http_body_util::BodyExt;

use crate::common::gateway::{Gateway, send};
use crate::common::provider_sim::ProviderSim;
use crate::common::{self, Operator, TestEnv, app_with_reason, eventually, key_of};

const OPENAI: &str = "sk-bytes-openai-platform-0001";

fn providers_file(dir: &std::path::Path, upstream: &str) -> PathBuf {
    let credential = dir.join("credential-openai");
    std::fs::write(&credential, format!("{OPENAI}\n")).unwrap();
    let text = format!(
        "providers:\n  - name: openai\n    kind: openai\n    baseURL: http://{upstream}\n    credentialFile: {}\n",
        credential.display()
    );
    let path = dir.join("providers.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Sends a chat request body as given; returns the answer's request id and the
/// exact bytes the client received.
async fn chat(gw: &Gateway, key: &str, body: &str) -> (u16, String, Vec<u8>) {
    let auth = format!("Bearer {key}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let response = send(&gw.url(), "POST", "/openai/v1/chat/completions", &headers, body).await.unwrap();
    let status = response.status().as_u16();
    let id = response.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let bytes = response.into_body().collect().await.expect("the whole stream").to_bytes().to_vec();
    (status, id, bytes)
}

/// The stream's blocks (each up to and including its empty line).
fn blocks(stream: &[u8]) -> Vec<&[u8]> {
    let mut out = vec![];
    let mut rest = stream;
    while let Some(end) = rest.windows(2).position(|w| w == b"\n\n") {
        out.push(&rest[..end + 2]);
        rest = &rest[end + 2..];
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Whether a block is OpenAI's usage-only chunk (`choices: []` with a usage).
fn is_usage_chunk(block: &[u8]) -> bool {
    let text = String::from_utf8_lossy(block);
    let Some(data) = text.trim_end().strip_prefix("data: ") else { return false };
    let Ok(chunk) = serde_json::from_str::<serde_json::Value>(data) else { return false };
    chunk["choices"].as_array().is_some_and(Vec::is_empty) && chunk["usage"].is_object()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_body_and_the_stream_change_only_where_the_gateway_must() {
    Operator::shared();
    let env = TestEnv::new("hostile-bytes").await;
    let (_org, group) = env.org_and_group().await;
    env.create_app("streamer", &group).await;
    app_with_reason(&env, "streamer", "KeyIssued").await;
    let key = key_of(&env.secrets().get("streamer-payi-key").await.unwrap());
    let sim = ProviderSim::start().await;
    let dir = common::verifier::log_dir().join(format!("hostile-bytes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gw = Gateway::start("hostile-bytes", &providers_file(&dir, &sim.addr.to_string()), &[]).await;
    let warm = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    eventually("the gateway to know the key", || async { (chat(&gw, &key, warm).await.0 == 200).then_some(()) }).await;

    // Streams that did not ask for the usage: the one field changed in place, or
    // spliced in first; the client's spacing, order and number spellings kept.
    let cases = [
        (
            "{ \"messages\" : [ {\"role\":\"user\", \"content\":\"bytes  please\"} ],\n  \"stream_options\": {\"include_usage\" :false, \"x\":1},\n  \"model\":\"ping-gpt-4o-mini\", \"stream\":true , \"temperature\": 1.50E0 }",
            "{ \"messages\" : [ {\"role\":\"user\", \"content\":\"bytes  please\"} ],\n  \"stream_options\": {\"include_usage\" :true, \"x\":1},\n  \"model\":\"ping-gpt-4o-mini\", \"stream\":true , \"temperature\": 1.50E0 }",
        ),
        (
            "{\"stream\":true,\"model\":\"ping-gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\\u00e9\"}]}",
            "{\"stream_options\":{\"include_usage\":true},\"stream\":true,\"model\":\"ping-gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\\u00e9\"}]}",
        ),
    ];
    for (sent, forwarded) in cases {
        sim.clear();
        let (status, id, received) = chat(&gw, &key, sent).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&received));
        let seen = sim.requests();
        assert_eq!(std::str::from_utf8(&seen[0].raw_body).unwrap(), forwarded, "what the provider got");
        let provider_sent = eventually("the stream's bytes to be recorded", || async {
            sim.sent(&id).filter(|s| s.ends_with(b"data: [DONE]\n\n"))
        })
        .await;
        let all = blocks(&provider_sent);
        let usage: Vec<usize> = (0..all.len()).filter(|i| is_usage_chunk(all[*i])).collect();
        assert_eq!(usage.len(), 1, "the provider sent one usage chunk: {}", String::from_utf8_lossy(&provider_sent));
        let expected: Vec<u8> =
            all.iter().enumerate().filter(|(i, _)| !usage.contains(i)).flat_map(|(_, b)| b.to_vec()).collect();
        assert_eq!(
            String::from_utf8_lossy(&received),
            String::from_utf8_lossy(&expected),
            "the client got the provider's bytes minus the usage chunk"
        );
        let pings = |s: &[u8]| blocks(s).iter().filter(|b| **b == b": ping\n\n").count();
        assert!(pings(&received) > 5, "the keep-alives passed");
        assert_eq!(pings(&received), pings(&provider_sent), "every keep-alive passed");
    }

    // A client that asked for the usage, and one that does not stream: untouched both ways.
    for body in [
        "{\"model\":\"ping-gpt-4o-mini\" ,\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        "{\"model\" : \"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}], \"stream_options\":null}",
    ] {
        sim.clear();
        let (status, id, received) = chat(&gw, &key, body).await;
        assert_eq!(status, 200);
        assert_eq!(std::str::from_utf8(&sim.requests()[0].raw_body).unwrap(), body, "the body as the client sent it");
        if body.contains("\"stream\":true") {
            let provider_sent = eventually("the stream's bytes to be recorded", || async {
                sim.sent(&id).filter(|s| s.ends_with(b"data: [DONE]\n\n"))
            })
            .await;
            assert_eq!(received, provider_sent, "a stream whose usage the client asked for passes whole");
        }
    }
}
