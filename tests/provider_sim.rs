//! Tests of the provider simulator itself (tests/common/provider_sim.rs): its
//! wire formats, its usage rules, its scripted faults and what it records. Only
//! the simulator and dependencies: no control plane, no library code. The
//! official SDKs parse its answers: tests/e2e_gateway.rs drives every API
//! through the gateway with them.

#[path = "common/provider_sim.rs"]
mod provider_sim;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use provider_sim::{InvoiceLine, ProviderSim, SimApi, SimUsage, expected_usage};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(sim: &ProviderSim, path: &str, headers: &[(&str, &str)], body: &Value) -> Response<Incoming> {
    let mut request = Request::post(format!("{}{path}", sim.url())).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    client().request(request).await.expect("the simulator answers")
}

async fn read(response: Response<Incoming>) -> Bytes {
    response.into_body().collect().await.expect("a whole body").to_bytes()
}

/// Status and JSON body.
async fn post(sim: &ProviderSim, path: &str, body: &Value) -> (StatusCode, Value) {
    let response = send(sim, path, &[], body).await;
    let status = response.status();
    let bytes = read(response).await;
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("JSON: {}", String::from_utf8_lossy(&bytes))))
}

/// The events of an SSE text: (event name, data).
fn sse(text: &str) -> Vec<(Option<String>, String)> {
    assert!(text.ends_with("\n\n"), "the stream ends with a whole event: {text:?}");
    text.split("\n\n")
        .filter(|block| !block.is_empty())
        .map(|block| {
            let (mut name, mut data) = (None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    assert!(data.is_none(), "one data line per event: {block:?}");
                    data = Some(v.to_string());
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (name, data.expect("every event has data"))
        })
        .collect()
}

async fn stream(sim: &ProviderSim, path: &str, body: &Value) -> Vec<(Option<String>, String)> {
    let response = send(sim, path, &[], body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream; charset=utf-8");
    assert!(response.headers().get("content-length").is_none(), "a stream is chunked");
    sse(std::str::from_utf8(&read(response).await).unwrap())
}

fn json_of(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"))
}

fn openai_usage_of(usage: &Value) -> SimUsage {
    let prompt = usage["prompt_tokens"].as_u64().unwrap();
    let cached = usage["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), prompt + completion);
    SimUsage {
        input: prompt - cached,
        cached_input: cached,
        cache_write: 0,
        output: completion,
        reasoning: usage["completion_tokens_details"]["reasoning_tokens"].as_u64().unwrap(),
    }
}

fn responses_usage_of(usage: &Value) -> SimUsage {
    let input = usage["input_tokens"].as_u64().unwrap();
    let cached = usage["input_tokens_details"]["cached_tokens"].as_u64().unwrap();
    let output = usage["output_tokens"].as_u64().unwrap();
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), input + output);
    SimUsage {
        input: input - cached,
        cached_input: cached,
        cache_write: 0,
        output,
        reasoning: usage["output_tokens_details"]["reasoning_tokens"].as_u64().unwrap(),
    }
}

fn anthropic_usage_of(usage: &Value) -> SimUsage {
    SimUsage {
        input: usage["input_tokens"].as_u64().unwrap(),
        cached_input: usage["cache_read_input_tokens"].as_u64().unwrap(),
        cache_write: usage["cache_creation_input_tokens"].as_u64().unwrap(),
        output: usage["output_tokens"].as_u64().unwrap(),
        reasoning: 0,
    }
}

fn usage(input: u64, cached_input: u64, cache_write: u64, output: u64, reasoning: u64) -> SimUsage {
    SimUsage { input, cached_input, cache_write, output, reasoning }
}

#[tokio::test]
async fn non_streaming_usage_is_expected_usage_for_each_api() {
    let sim = ProviderSim::start().await;

    // 5 + 4 words; the reply is 7 words.
    let body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]});
    let (status, answer) = post(&sim, "/v1/chat/completions", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "gpt-4o-mini");
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello from the simulator, this is gpt-4o-mini.");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["choices"][0]["logprobs"], Value::Null);
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(answer["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(openai_usage_of(&answer["usage"]), usage(9, 0, 0, 7, 0));
    assert_eq!(expected_usage(SimApi::ChatCompletions, &body), usage(9, 0, 0, 7, 0));

    // Content parts, the word "cached", a reasoning model, max_completion_tokens.
    let body = json!({"model": "o3-mini", "max_completion_tokens": 3, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "From the cached prefix:"}, {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "text", "text": "go on"}]}]});
    let (_, answer) = post(&sim, "/v1/chat/completions", &body).await;
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello from the");
    // P = 5 + 6 = 11, K = 5; output 3 words + 4 reasoning.
    assert_eq!(openai_usage_of(&answer["usage"]), usage(6, 5, 0, 7, 4));
    assert_eq!(expected_usage(SimApi::ChatCompletions, &body), usage(6, 5, 0, 7, 4));

    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": ["one two", "three"], "max_tokens": 100});
    let (_, answer) = post(&sim, "/v1/completions", &body).await;
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["choices"][0]["text"], "Hello from the simulator, this is gpt-3.5-turbo-instruct.");
    assert_eq!(answer["choices"][0]["logprobs"], Value::Null);
    assert_eq!(openai_usage_of(&answer["usage"]), usage(8, 0, 0, 7, 0));
    assert_eq!(expected_usage(SimApi::Completions, &body), usage(8, 0, 0, 7, 0));

    let body = json!({"model": "text-embedding-3-small", "input": ["a b c", "d"]});
    let (_, answer) = post(&sim, "/v1/embeddings", &body).await;
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["model"], "text-embedding-3-small");
    assert_eq!(answer["data"].as_array().unwrap().len(), 2);
    assert_eq!(answer["data"][1]["object"], "embedding");
    assert_eq!(answer["data"][1]["index"], 1);
    assert_eq!(answer["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(answer["usage"], json!({"prompt_tokens": 9, "total_tokens": 9}));
    assert_eq!(expected_usage(SimApi::Embeddings, &body), usage(9, 0, 0, 0, 0));

    // Token ids count one each; base64 little-endian f32; dimensions.
    let body = json!({"model": "text-embedding-3-small", "input": [1, 2, 3], "encoding_format": "base64",
        "dimensions": 4});
    let (_, answer) = post(&sim, "/v1/embeddings", &body).await;
    assert_eq!(answer["data"].as_array().unwrap().len(), 1);
    let encoded = answer["data"][0]["embedding"].as_str().expect("base64");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
    let floats: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(floats.len(), 4);
    assert!(floats.iter().all(|f| f.is_finite() && f.abs() <= 1.0), "{floats:?}");
    assert_eq!(answer["usage"]["prompt_tokens"], 8);

    let body = json!({"model": "o4-mini", "instructions": "Answer in French.", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "cached context here"}]},
        {"role": "user", "content": "and a question"}]});
    let (_, answer) = post(&sim, "/v1/responses", &body).await;
    assert_eq!(answer["object"], "response");
    assert_eq!(answer["status"], "completed");
    assert_eq!(answer["model"], "o4-mini");
    assert_eq!(answer["output"][0]["type"], "message");
    assert_eq!(answer["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(answer["output"][0]["content"][0]["text"], "Hello from the simulator, this is o4-mini.");
    assert_eq!(answer["instructions"], "Answer in French.");
    // P = 5 + 3 + 3 + 3 = 14, K = 7.
    assert_eq!(responses_usage_of(&answer["usage"]), usage(7, 7, 0, 11, 4));
    assert_eq!(expected_usage(SimApi::Responses, &body), usage(7, 7, 0, 11, 4));

    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 5,
        "system": [{"type": "text", "text": "You use the cached system prompt."}],
        "messages": [{"role": "user", "content": "Hi"}]});
    let (_, answer) = post(&sim, "/v1/messages", &body).await;
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["model"], "claude-sonnet-4-5");
    assert_eq!(answer["content"], json!([{"type": "text", "text": "Hello from the simulator, this"}]));
    assert_eq!(answer["stop_reason"], "end_turn");
    assert_eq!(answer["stop_sequence"], Value::Null);
    assert!(answer["id"].as_str().unwrap().starts_with("msg_"));
    // P = 5 + 6 + 1; the cache figures beside it.
    assert_eq!(anthropic_usage_of(&answer["usage"]), usage(12, 7, 3, 5, 0));
    assert_eq!(expected_usage(SimApi::Messages, &body), usage(12, 7, 3, 5, 0));

    // An unpriced model is echoed like any other.
    let body = json!({"model": "my-finetune-1", "messages": [{"role": "user", "content": "x"}]});
    let (_, answer) = post(&sim, "/v1/chat/completions", &body).await;
    assert_eq!(answer["model"], "my-finetune-1");
}

#[tokio::test]
async fn chat_stream_with_and_without_include_usage() {
    let sim = ProviderSim::start().await;
    let base = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "cached hi there"}]});
    let expected = expected_usage(SimApi::ChatCompletions, &base);
    assert_eq!(expected, usage(4, 4, 0, 7, 0));

    let events = stream(&sim, "/v1/chat/completions", &base).await;
    assert_eq!(events.last().unwrap(), &(None, "[DONE]".to_string()));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|(_, d)| json_of(d)).collect();
    assert!(events.iter().all(|(name, _)| name.is_none()));
    assert!(chunks.iter().all(|c| c.get("usage").is_none()), "no usage without include_usage");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "gpt-4o"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello from the simulator, this is gpt-4o.");
    assert!(chunks.len() >= 5, "several content deltas: {chunks:?}");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["choices"][0]["finish_reason"].is_null()));

    let mut body = base.clone();
    body["stream_options"] = json!({"include_usage": true});
    let events = stream(&sim, "/v1/chat/completions", &body).await;
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|(_, d)| json_of(d)).collect();
    let (usage_chunk, rest) = chunks.split_last().unwrap();
    assert!(rest.iter().all(|c| c["usage"].is_null() && c.as_object().unwrap().contains_key("usage")));
    assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(openai_usage_of(&usage_chunk["usage"]), expected);

    // Completions streams, the same rules.
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "a b", "stream": true,
        "stream_options": {"include_usage": true}});
    let events = stream(&sim, "/v1/completions", &body).await;
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|(_, d)| json_of(d)).collect();
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(text, "Hello from the simulator, this is gpt-3.5-turbo-instruct.");
    let (usage_chunk, rest) = chunks.split_last().unwrap();
    assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert_eq!(openai_usage_of(&usage_chunk["usage"]), expected_usage(SimApi::Completions, &body));
    assert_eq!(expected_usage(SimApi::Completions, &body), usage(7, 0, 0, 7, 0));
}

#[tokio::test]
async fn responses_stream_events_and_usage() {
    let sim = ProviderSim::start().await;
    let body = json!({"model": "gpt-4o-mini", "input": "Tell me a joke", "stream": true, "max_output_tokens": 4});
    let events = stream(&sim, "/v1/responses", &body).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().expect("named events")).collect();
    let deltas = names.iter().filter(|n| **n == "response.output_text.delta").count();
    assert_eq!(deltas, 4, "4 words, one a delta");
    let mut expected =
        vec!["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, expected);
    let data: Vec<Value> = events.iter().map(|(_, d)| json_of(d)).collect();
    for (i, (event, name)) in data.iter().zip(&names).enumerate() {
        assert_eq!(event["type"], *name);
        assert_eq!(event["sequence_number"], i);
    }
    assert_eq!(data[0]["response"]["status"], "in_progress");
    assert_eq!(data[0]["response"]["usage"], Value::Null);
    let text: String = data.iter().filter_map(|e| e["delta"].as_str()).collect();
    assert_eq!(text, "Hello from the simulator,");
    assert_eq!(data[names.len() - 4]["text"], text);
    let done = &data.last().unwrap()["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], text);
    assert_eq!(responses_usage_of(&done["usage"]), expected_usage(SimApi::Responses, &body));
    assert_eq!(expected_usage(SimApi::Responses, &body), usage(9, 0, 0, 4, 0));
}

#[tokio::test]
async fn anthropic_stream_events_order_and_cumulative_usage() {
    let sim = ProviderSim::start().await;
    let body = json!({"model": "claude-haiku-4-5", "max_tokens": 1024, "stream": true, "system": "cached rules",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello Claude"}]}]});
    let expected = expected_usage(SimApi::Messages, &body);
    assert_eq!(expected, usage(9, 7, 3, 7, 0));
    let events = stream(&sim, "/v1/messages", &body).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().expect("named events")).collect();
    let mut expected_names = vec!["message_start", "content_block_start", "ping"];
    expected_names.extend(std::iter::repeat_n("content_block_delta", 7));
    expected_names.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected_names, "one word a delta");
    let data: Vec<Value> = events.iter().map(|(_, d)| json_of(d)).collect();
    for (event, name) in data.iter().zip(&names) {
        assert_eq!(event["type"], *name);
    }
    let message = &data[0]["message"];
    assert_eq!(message["content"], json!([]));
    assert_eq!(message["stop_reason"], Value::Null);
    assert_eq!(message["model"], "claude-haiku-4-5");
    let start = &message["usage"];
    assert_eq!(start["input_tokens"], 9);
    assert_eq!(start["cache_read_input_tokens"], 7);
    assert_eq!(start["cache_creation_input_tokens"], 3);
    assert_eq!(start["output_tokens"], 1);
    let text: String = data.iter().filter_map(|e| e["delta"]["text"].as_str()).collect();
    assert_eq!(text, "Hello from the simulator, this is claude-haiku-4-5.");
    assert!(data[3..10].iter().all(|e| e["delta"]["type"] == "text_delta" && e["index"] == 0));
    let delta = &data[11];
    assert_eq!(delta["delta"], json!({"stop_reason": "end_turn", "stop_sequence": null}));
    assert_eq!(delta["usage"], json!({"output_tokens": expected.output}));
}

#[tokio::test]
async fn azure_deployments_and_recorded_requests() {
    let sim = ProviderSim::start().await;
    let path = "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21";
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let response = send(&sim, path, &[("api-key", "secret-1"), ("x-custom", "a")], &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["x-request-id"].to_str().unwrap().starts_with("req_"));
    let answer: Value = serde_json::from_slice(&read(response).await).unwrap();
    assert_eq!(answer["model"], "my-gpt4o", "the deployment when the body has no model");
    assert_eq!(openai_usage_of(&answer["usage"]), usage(6, 0, 0, 7, 0));

    // The body's model is echoed; the deployment scripts faults.
    let body = json!({"model": "gpt-4o", "input": "x"});
    let (_, answer) = post(&sim, "/openai/deployments/gpt-4o/embeddings?api-version=2024-10-21", &body).await;
    assert_eq!(answer["model"], "gpt-4o");
    let (status, answer) = post(&sim, "/openai/deployments/fault-500/completions?api-version=1", &body).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer["error"]["message"], "simulated 500");

    let recorded = sim.requests();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].path_and_query, path);
    assert_eq!(recorded[0].header("api-key"), Some("secret-1"));
    assert_eq!(recorded[0].header("x-custom"), Some("a"));
    assert_eq!(recorded[0].header("content-type"), Some("application/json"));
    assert_eq!(recorded[0].header("missing"), None);
    assert!(recorded[0].headers.iter().all(|(n, _)| n.chars().all(|c| !c.is_ascii_uppercase())));
    assert_eq!(recorded[0].body, json!({"messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(recorded[2].path_and_query, "/openai/deployments/fault-500/completions?api-version=1");
    sim.clear();
    assert!(sim.requests().is_empty());

    // Not JSON: recorded as Null, answered 400.
    let request = Request::post(format!("{}/v1/messages", sim.url()))
        .header("authorization", "Bearer k")
        .header("anthropic-version", "2023-06-01")
        .body(Full::new(Bytes::from_static(b"not json")))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers()["request-id"].to_str().unwrap().starts_with("req_"));
    let answer: Value = serde_json::from_slice(&read(response).await).unwrap();
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["error"]["type"], "invalid_request_error");
    let recorded = sim.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].body, Value::Null);
    assert_eq!(recorded[0].header("authorization"), Some("Bearer k"));
}

#[tokio::test]
async fn unknown_paths_and_models() {
    let sim = ProviderSim::start().await;
    let (status, answer) = post(&sim, "/v1/nothing", &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"]["type"], "invalid_request_error");
    assert_eq!(answer["error"]["param"], Value::Null);
    assert!(answer["error"]["message"].as_str().unwrap().contains("/v1/nothing"));
    let response = send(&sim, "/v1/nothing", &[("anthropic-version", "2023-06-01")], &json!({})).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let answer: Value = serde_json::from_slice(&read(response).await).unwrap();
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["error"]["type"], "not_found_error");
    assert_eq!(sim.requests().len(), 2, "unknown paths are recorded too");

    let request = Request::get(format!("{}/v1/models", sim.url())).body(Full::new(Bytes::new())).unwrap();
    let answer: Value = serde_json::from_slice(&read(client().request(request).await.unwrap()).await).unwrap();
    assert_eq!(answer["object"], "list");
    assert!(answer["data"].as_array().unwrap().iter().any(|m| m["id"] == "gpt-4o-mini" && m["object"] == "model"));
}

#[tokio::test]
async fn status_faults_in_each_provider_shape() {
    let sim = ProviderSim::start().await;
    for (model, status) in [("fault-400", 400), ("fault-429", 429), ("fault-500", 500), ("fault-503", 503)] {
        for stream in [false, true] {
            let body = json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]});
            let response = send(&sim, "/v1/chat/completions", &[], &body).await;
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()["content-type"], "application/json");
            assert_eq!(
                response.headers().get("retry-after").map(|v| v.to_str().unwrap()),
                (status == 429).then_some("1")
            );
            let answer: Value = serde_json::from_slice(&read(response).await).unwrap();
            assert_eq!(answer["error"]["message"], format!("simulated {status}"));
            assert!(answer["error"]["type"].is_string());
            assert!(answer["error"].as_object().unwrap().contains_key("code"));
            assert_eq!(answer["error"]["param"], Value::Null);

            let body = json!({"model": model, "stream": stream, "max_tokens": 9, "messages": []});
            let response = send(&sim, "/v1/messages", &[], &body).await;
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers().get("retry-after").is_some(), status == 429);
            let answer: Value = serde_json::from_slice(&read(response).await).unwrap();
            assert_eq!(answer["type"], "error");
            assert_eq!(answer["error"]["message"], format!("simulated {status}"));
            let kind = answer["error"]["type"].as_str().unwrap();
            assert_eq!(
                kind,
                ["invalid_request_error", "rate_limit_error", "api_error", "overloaded_error"]
                    [[400, 429, 500, 503].iter().position(|s| *s == status).unwrap()]
            );
        }
    }
    // Faults behind prefixes.
    let body = json!({"model": "slow-50-fault-429", "input": "x"});
    let started = Instant::now();
    let (status, _) = post(&sim, "/v1/responses", &body).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[tokio::test]
async fn timeout_never_answers_and_blocks_nothing_else() {
    let sim = ProviderSim::start().await;
    let body = json!({"model": "fault-timeout", "messages": [{"role": "user", "content": "x"}]});
    let hung = {
        let request = Request::post(format!("{}/v1/chat/completions", sim.url()))
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        tokio::spawn(client().request(request))
    };
    let ok = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]});
    let (status, _) = post(&sim, "/v1/chat/completions", &ok).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!hung.is_finished(), "no answer within a second");
    assert_eq!(sim.requests().len(), 2, "the hung request was recorded");
    hung.abort();
}

#[tokio::test]
async fn reset_closes_the_connection_without_an_answer() {
    let sim = ProviderSim::start().await;
    let body = json!({"model": "fault-reset", "messages": [{"role": "user", "content": "x"}]}).to_string();
    let mut tcp = tokio::net::TcpStream::connect(sim.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body.as_bytes()).await.unwrap();
    let mut buf = vec![0; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.expect("closed at once");
    match read {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(n) => panic!("expected a reset, read {n} bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
    }

    // A client sees a connection error; the simulator goes on serving.
    for api in ["/v1/messages", "/v1/responses"] {
        let request = Request::post(format!("{}{api}", sim.url()))
            .body(Full::new(Bytes::from(json!({"model": "fault-reset", "stream": true}).to_string())))
            .unwrap();
        let error = client().request(request).await.expect_err("a connection error");
        assert!(error.is_connect() || std::error::Error::source(&error).is_some(), "{error:?}");
    }
    let (status, _) = post(&sim, "/v1/embeddings", &json!({"model": "e", "input": "x"})).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn truncated_bodies_fail() {
    let sim = ProviderSim::start().await;
    let body = json!({"model": "fault-truncated", "messages": [{"role": "user", "content": "x"}]});
    let response = send(&sim, "/v1/chat/completions", &[], &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let length: usize = response.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let mut body = response.into_body();
    let mut received = 0;
    let failed = loop {
        match body.frame().await {
            Some(Ok(frame)) => received += frame.data_ref().map_or(0, Bytes::len),
            Some(Err(_)) => break true,
            None => break false,
        }
    };
    assert!(failed, "the body fails");
    assert!(received > 0 && received < length, "{received} of {length} bytes");

    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "fault-truncated", "stream": true,
            "stream_options": {"include_usage": true}, "messages": []}),
        ),
        ("/v1/messages", json!({"model": "fault-truncated", "stream": true, "max_tokens": 5, "messages": []})),
        ("/v1/responses", json!({"model": "fault-truncated", "stream": true, "input": "x"})),
    ] {
        let response = send(&sim, path, &[], &body).await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut text = String::new();
        let failed = loop {
            match body.frame().await {
                Some(Ok(frame)) => text.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap()),
                Some(Err(_)) => break true,
                None => break false,
            }
        };
        assert!(failed, "{path}: the stream fails");
        let events = sse(&text);
        assert!(events.len() >= 2, "{path}: {text}");
        assert!(!text.contains("[DONE]") && !text.contains("message_delta") && !text.contains("response.completed"));
        if path != "/v1/messages" {
            assert!(!text.contains("\"usage\":{"), "{path}: no usage figures: {text}");
        }
        assert!(text.contains("Hello"), "{path}: one delta: {text}");
    }
    assert_eq!(sim.open_streams(), 0);
}

#[tokio::test]
async fn malformed_bodies() {
    let sim = ProviderSim::start().await;
    let body = json!({"model": "fault-malformed", "messages": []});
    let response = send(&sim, "/v1/chat/completions", &[], &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let bytes = read(response).await;
    assert_eq!(&bytes[..], br#"{"id": "x", "usage": {"#);

    for path in ["/v1/chat/completions", "/v1/messages", "/v1/responses"] {
        let body = json!({"model": "fault-malformed", "stream": true, "max_tokens": 9, "messages": [], "input": "x"});
        let events = stream(&sim, path, &body).await;
        assert!(serde_json::from_str::<Value>(&events[0].1).is_ok());
        assert!(serde_json::from_str::<Value>(&events[1].1).is_err(), "{path}: {:?}", events[1]);
        let bad = events.iter().filter(|(_, d)| d != "[DONE]" && serde_json::from_str::<Value>(d).is_err()).count();
        assert_eq!(bad, 1);
    }
}

#[tokio::test]
async fn cut_stream_stalls_until_the_client_goes() {
    let sim = ProviderSim::start().await;
    for (path, first) in [("/v1/messages", "message_start"), ("/v1/chat/completions", "chat.completion.chunk")] {
        let body = json!({"model": "fault-cut-stream", "stream": true, "max_tokens": 9,
            "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "a b c"}]});
        let response = send(&sim, path, &[], &body).await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut text = String::new();
        let stalled = loop {
            match tokio::time::timeout(Duration::from_millis(500), body.frame()).await {
                Ok(Some(Ok(frame))) => text.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap()),
                Ok(other) => panic!("{path}: the stream ended: {:?}", other.map(|r| r.map(|_| ()))),
                Err(_) => break true,
            }
        };
        assert!(stalled);
        let events = sse(&text);
        assert!(events[0].1.contains(first), "{path}: {text}");
        assert!(text.contains("Hello"), "{path}: one delta: {text}");
        assert!(!text.contains(" from"), "{path}: only one delta: {text}");
        if path == "/v1/messages" {
            let start = json_of(&events[0].1);
            assert_eq!(start["message"]["usage"]["input_tokens"], 8);
            assert_eq!(events.len(), 4, "message_start, content_block_start, ping, one delta");
        }
        assert_eq!(sim.open_streams(), 1);
        drop(body);
        wait_until(|| sim.open_streams() == 0).await;
    }
}

async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met in 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn slow_and_drip_prefixes() {
    let sim = ProviderSim::start().await;
    let body = json!({"model": "slow-300-gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]});
    let started = Instant::now();
    let (status, answer) = post(&sim, "/v1/chat/completions", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(answer["model"], "gpt-4o-mini", "the prefix is taken off");
    assert_eq!(openai_usage_of(&answer["usage"]), expected_usage(SimApi::ChatCompletions, &body));

    // Each event its own frame, 100 ms apart; the stream is open meanwhile.
    let body = json!({"model": "drip-100-claude-x", "stream": true, "max_tokens": 9, "messages": []});
    let started = Instant::now();
    let response = send(&sim, "/v1/messages", &[], &body).await;
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    // Bounds loose enough for a loaded machine: the 12 gaps take 1200 ms at least.
    let first_at = started.elapsed();
    assert!(first_at < Duration::from_millis(500), "the first event at once, not with the rest: {first_at:?}");
    assert!(first.starts_with(b"event: message_start\n"));
    assert!(first.ends_with(b"\n\n") && first.windows(2).filter(|w| w == b"\n\n").count() == 1, "one event a frame");
    assert_eq!(sim.open_streams(), 1);
    let mut frames = 1;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap().into_data().unwrap();
        assert_eq!(frame.windows(2).filter(|w| w == b"\n\n").count(), 1, "one event a frame");
        frames += 1;
    }
    assert_eq!(frames, 13, "3 events, 7 deltas of a word, 3 events");
    assert!(started.elapsed() >= Duration::from_millis(1200), "dripped");
    wait_until(|| sim.open_streams() == 0).await;
}

#[tokio::test]
async fn dropping_the_simulator_stops_it() {
    let sim = ProviderSim::start().await;
    let addr = sim.addr;
    let body = json!({"model": "fault-cut-stream", "stream": true, "messages": []});
    let response = send(&sim, "/v1/chat/completions", &[], &body).await;
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    drop(sim);
    // The stalled stream's connection is closed, and nothing listens any more.
    let end = tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = body.frame().await {} });
    end.await.expect("the connection closes");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

// ---------------------------------------------------------------------------
// The invoice

/// The answer's request id header.
fn request_id(response: &Response<Incoming>) -> String {
    let header = response.headers().get("x-request-id").or_else(|| response.headers().get("request-id"));
    header.expect("a request id").to_str().unwrap().to_string()
}

/// The invoice line of a request, polled for (a stream's is recorded as its body
/// ends, which can be just after the client read the end).
async fn line_of(sim: &ProviderSim, request_id: &str) -> InvoiceLine {
    wait_until(|| sim.invoice().iter().any(|l| l.request_id == request_id)).await;
    let lines: Vec<InvoiceLine> = sim.invoice().into_iter().filter(|l| l.request_id == request_id).collect();
    assert_eq!(lines.len(), 1, "one line a request: {lines:#?}");
    lines.into_iter().next().unwrap()
}

fn line(api: SimApi, model: &str, usage: SimUsage, complete: bool, request_id: &str) -> InvoiceLine {
    InvoiceLine { api, model: model.to_string(), usage, complete, request_id: request_id.to_string() }
}

/// The output words of a text delta event's data (0 for any other event).
fn delta_words(data: &str) -> u64 {
    let Ok(event) = serde_json::from_str::<Value>(data) else { return 0 };
    let text = [
        &event["choices"][0]["delta"]["content"],
        &event["choices"][0]["text"],
        &event["delta"],
        &event["delta"]["text"],
    ]
    .into_iter()
    .find_map(Value::as_str)
    .unwrap_or("");
    text.split_whitespace().count() as u64
}

/// Reads a stream until the whole events read so far carry `words` output words;
/// returns the body, still open, and the events' text.
async fn read_words(response: Response<Incoming>, words: u64) -> (Incoming, String) {
    let mut body = response.into_body();
    let mut text = String::new();
    loop {
        let complete = &text[..text.rfind("\n\n").map_or(0, |at| at + 2)];
        let read: u64 = if complete.is_empty() { 0 } else { sse(complete).iter().map(|(_, d)| delta_words(d)).sum() };
        assert!(read <= words, "read past {words} words: {text}");
        if read == words {
            return (body, text);
        }
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("the next event in 5 s");
        let frame = frame.expect("the stream goes on").expect("a frame");
        text.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
    }
}

#[tokio::test]
async fn invoice_bills_whole_answers_and_streams_at_expected_usage() {
    let sim = ProviderSim::start().await;
    let say = |model: &str, stream: bool| {
        json!({"model": model, "stream": stream,
            "messages": [{"role": "user", "content": "cached words here"}]})
    };
    let cases: Vec<(&str, Value, SimApi, &str)> = vec![
        ("/v1/chat/completions", say("gpt-4o-mini", false), SimApi::ChatCompletions, "gpt-4o-mini"),
        ("/v1/chat/completions", say("slow-5-o3-mini", false), SimApi::ChatCompletions, "o3-mini"),
        (
            "/v1/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "a b"}),
            SimApi::Completions,
            "gpt-3.5-turbo-instruct",
        ),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": ["a b", "c"]}),
            SimApi::Embeddings,
            "text-embedding-3-small",
        ),
        (
            "/v1/responses",
            json!({"model": "o4-mini", "input": "a cached b", "max_output_tokens": 3}),
            SimApi::Responses,
            "o4-mini",
        ),
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "system": "cached", "max_tokens": 99, "messages": []}),
            SimApi::Messages,
            "claude-sonnet-4-5",
        ),
        // Azure: the body's model when it has one, the deployment's else; no prefixes.
        (
            "/openai/deployments/slow-5-my-gpt4o/chat/completions?api-version=1",
            json!({"messages": []}),
            SimApi::ChatCompletions,
            "my-gpt4o",
        ),
        (
            "/openai/deployments/x/embeddings?api-version=1",
            json!({"model": "gpt-4o", "input": "a"}),
            SimApi::Embeddings,
            "gpt-4o",
        ),
        // Streams, with and without the usage chunk: the provider bills them alike.
        (
            "/v1/chat/completions",
            {
                let mut body = say("drip-5-o3-mini", true);
                body["stream_options"] = json!({"include_usage": true});
                body
            },
            SimApi::ChatCompletions,
            "o3-mini",
        ),
        ("/v1/chat/completions", say("gpt-4o", true), SimApi::ChatCompletions, "gpt-4o"),
        (
            "/v1/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "a", "stream": true}),
            SimApi::Completions,
            "gpt-3.5-turbo-instruct",
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "input": "a b", "stream": true}),
            SimApi::Responses,
            "gpt-4o-mini",
        ),
        (
            "/v1/messages",
            json!({"model": "slow-5-claude-haiku-4-5", "system": "cached", "max_tokens": 4, "stream": true,
                "messages": []}),
            SimApi::Messages,
            "claude-haiku-4-5",
        ),
    ];
    let mut total = 0;
    for (path, body, api, model) in &cases {
        let response = send(&sim, path, &[], body).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let id = request_id(&response);
        read(response).await;
        let expected = if body.get("model").is_some() {
            expected_usage(*api, body)
        } else {
            usage(5, 0, 0, 7, 0) // the deployment's name: "… this is my-gpt4o."
        };
        assert_eq!(line_of(&sim, &id).await, line(*api, model, expected, true, &id), "{path} {body}");
        total += expected.input + expected.cached_input + expected.cache_write + expected.output;
    }
    // The reasoning and cache figures are billed as reported.
    assert_eq!(line_of(&sim, "req_sim2").await.usage, usage(4, 4, 0, 11, 4));
    assert_eq!(line_of(&sim, "req_sim6").await.usage, usage(6, 7, 3, 7, 0));

    // Free endpoints and unknown paths: no line.
    let request = Request::get(format!("{}/v1/models", sim.url())).body(Full::new(Bytes::new())).unwrap();
    assert_eq!(client().request(request).await.unwrap().status(), StatusCode::OK);
    let (status, _) = post(&sim, "/v1/nothing", &say("gpt-4o", false)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(sim.invoice().len(), cases.len());
    assert_eq!(sim.invoice_total_tokens(), total);
    assert_eq!(sim.invoice().iter().map(InvoiceLine::total_tokens).sum::<u64>(), total);

    sim.clear();
    assert!(sim.invoice().is_empty() && sim.requests().is_empty());
    assert_eq!(sim.invoice_total_tokens(), 0);
}

#[tokio::test]
async fn invoice_bills_what_a_dropped_stream_sent() {
    let sim = ProviderSim::start().await;
    for (path, body, api, model) in [
        (
            "/v1/chat/completions",
            json!({"model": "drip-50-o3-mini", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "cached a b"}]}),
            SimApi::ChatCompletions,
            "o3-mini",
        ),
        (
            "/v1/messages",
            json!({"model": "drip-50-claude-x", "stream": true, "max_tokens": 99, "system": "cached",
                "messages": [{"role": "user", "content": "a b"}]}),
            SimApi::Messages,
            "claude-x",
        ),
        (
            "/v1/responses",
            json!({"model": "drip-50-gpt-4o-mini", "stream": true, "input": "a"}),
            SimApi::Responses,
            "gpt-4o-mini",
        ),
    ] {
        let full = expected_usage(api, &body);
        assert_eq!(full.output - full.reasoning, 7, "a 7-word reply, longer than what is read and its bound");
        let response = send(&sim, path, &[], &body).await;
        let id = request_id(&response);
        // Three deltas of a word each, then the client goes.
        let (open, text) = read_words(response, 3).await;
        assert!(text.contains("Hello") && text.contains(" the") && !text.contains("simulator"), "{path}: {text}");
        assert!(sim.invoice().iter().all(|l| l.request_id != id), "{path}: no line while the stream is open");
        drop(open);

        // The input in full; the output the simulator had handed over when it
        // noticed: the 3 read, and at most 2 more written meanwhile (50 ms apart).
        let billed = line_of(&sim, &id).await;
        assert_eq!((billed.api, billed.model.as_str(), billed.complete), (api, model, false), "{billed:?}");
        let u = billed.usage;
        assert_eq!((u.input, u.cached_input, u.cache_write), (full.input, full.cached_input, full.cache_write));
        // Reasoning in full once a delta went out (o3-mini: 4; the others none).
        assert_eq!(u.reasoning, full.reasoning, "{path}");
        let words = u.output - u.reasoning;
        assert!((3..=5).contains(&words), "{path}: {words} words billed, 3 read: {billed:?}");
        wait_until(|| sim.open_streams() == 0).await;
    }
    assert_eq!(sim.invoice().len(), 3);
}

#[tokio::test]
async fn invoice_of_a_stream_dropped_before_its_first_delta_is_its_input() {
    let sim = ProviderSim::start().await;
    // 3 s before the first delta: the client is gone long before it.
    for (path, body, api) in [
        (
            "/v1/chat/completions",
            json!({"model": "drip-3000-o3-mini", "stream": true,
                "messages": [{"role": "user", "content": "cached a"}]}),
            SimApi::ChatCompletions,
        ),
        (
            "/v1/messages",
            json!({"model": "drip-3000-claude-x", "stream": true, "max_tokens": 9, "system": "cached", "messages": []}),
            SimApi::Messages,
        ),
    ] {
        let response = send(&sim, path, &[], &body).await;
        let id = request_id(&response);
        // The stream's first event (the role chunk, message_start), then the client goes.
        let mut open = response.into_body();
        let first = open.frame().await.expect("a first event").expect("a frame").into_data().unwrap();
        assert!(!std::str::from_utf8(&first).unwrap().contains("Hello"));
        drop(open);
        let full = expected_usage(api, &body);
        let input_only = SimUsage { output: 0, reasoning: 0, ..full };
        assert_eq!(
            line_of(&sim, &id).await,
            line(api, body["model"].as_str().unwrap().trim_start_matches("drip-3000-"), input_only, false, &id)
        );
    }
}

#[tokio::test]
async fn invoice_of_faults() {
    let sim = ProviderSim::start().await;
    let chat = |model: &str, stream: bool| {
        json!({"model": model, "stream": stream, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "a b c"}]})
    };
    let nothing = SimUsage::default();

    // Errors: a line with nothing billed.
    for model in ["fault-400", "fault-429", "fault-500", "slow-5-fault-503"] {
        for stream in [false, true] {
            let response = send(&sim, "/v1/chat/completions", &[], &chat(model, stream)).await;
            assert!(response.status().is_client_error() || response.status().is_server_error());
            let id = request_id(&response);
            let priced = model.trim_start_matches("slow-5-");
            assert_eq!(line_of(&sim, &id).await, line(SimApi::ChatCompletions, priced, nothing, false, &id));
        }
    }
    // Not JSON, or no model: the same; no model to name.
    let request =
        Request::post(format!("{}/v1/messages", sim.url())).body(Full::new(Bytes::from_static(b"{"))).unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let id = request_id(&response);
    assert_eq!(line_of(&sim, &id).await, line(SimApi::Messages, "", nothing, false, &id));
    let response = send(&sim, "/v1/responses", &[], &json!({"input": "x"})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let id = request_id(&response);
    assert_eq!(line_of(&sim, &id).await, line(SimApi::Responses, "", nothing, false, &id));

    // A timeout: the line is there while the client still waits.
    let before = sim.invoice().len();
    let hung = {
        let request = Request::post(format!("{}/v1/messages", sim.url()))
            .body(Full::new(Bytes::from(
                json!({"model": "fault-timeout", "max_tokens": 5, "messages": []}).to_string(),
            )))
            .unwrap();
        tokio::spawn(client().request(request))
    };
    wait_until(|| sim.invoice().len() == before + 1).await;
    let billed = sim.invoice().pop().unwrap();
    assert_eq!(
        (billed.api, billed.model.as_str(), billed.usage, billed.complete),
        (SimApi::Messages, "fault-timeout", nothing, false)
    );
    assert!(!hung.is_finished(), "still no answer");
    hung.abort();

    // A reset: no answer, nothing billed.
    let request = Request::post(format!("{}/v1/responses", sim.url()))
        .body(Full::new(Bytes::from(json!({"model": "fault-reset", "input": "x", "stream": true}).to_string())))
        .unwrap();
    client().request(request).await.expect_err("a connection error");
    wait_until(|| sim.invoice().len() == before + 2).await;
    let billed = sim.invoice().pop().unwrap();
    assert_eq!(
        (billed.api, billed.model.as_str(), billed.usage, billed.complete),
        (SimApi::Responses, "fault-reset", nothing, false)
    );

    // A stream truncated after its first delta: the input and that word; on
    // Azure, priced for the body's (reasoning) model, its reasoning with it.
    let body = json!({"model": "o3-mini", "stream": true, "messages": [{"role": "user", "content": "cached a b"}]});
    let response = send(&sim, "/openai/deployments/fault-truncated/chat/completions?api-version=1", &[], &body).await;
    let id = request_id(&response);
    let mut stream = response.into_body();
    while let Some(Ok(_)) = stream.frame().await {}
    let full = expected_usage(SimApi::ChatCompletions, &body);
    assert_eq!(full.reasoning, 4);
    let cut = SimUsage { output: 1 + 4, ..full };
    assert_eq!(line_of(&sim, &id).await, line(SimApi::ChatCompletions, "o3-mini", cut, false, &id));

    // A stream cut (silent) after its first delta: billed when the client goes.
    let body =
        json!({"model": "fault-cut-stream", "stream": true, "max_tokens": 9, "system": "cached", "messages": []});
    let response = send(&sim, "/v1/messages", &[], &body).await;
    let id = request_id(&response);
    let (open, _) = read_words(response, 1).await;
    assert_eq!(sim.open_streams(), 1);
    assert!(sim.invoice().iter().all(|l| l.request_id != id), "no line while the stream is open");
    drop(open);
    let full = expected_usage(SimApi::Messages, &body);
    let cut = SimUsage { output: 1, ..full };
    assert_eq!(line_of(&sim, &id).await, line(SimApi::Messages, "fault-cut-stream", cut, false, &id));

    // Non-streaming cuts: generated whole, delivered in part.
    for model in ["fault-truncated", "fault-cut-stream"] {
        let body = chat(model, false);
        let response = send(&sim, "/v1/chat/completions", &[], &body).await;
        assert_eq!(response.status(), StatusCode::OK);
        let id = request_id(&response);
        let full = expected_usage(SimApi::ChatCompletions, &body);
        assert_eq!(line_of(&sim, &id).await, line(SimApi::ChatCompletions, model, full, false, &id));
    }
    // Malformed: whole answers with a garbled body.
    for stream in [false, true] {
        let body = chat("fault-malformed", stream);
        let response = send(&sim, "/v1/chat/completions", &[], &body).await;
        let id = request_id(&response);
        read(response).await;
        let full = expected_usage(SimApi::ChatCompletions, &body);
        assert_eq!(line_of(&sim, &id).await, line(SimApi::ChatCompletions, "fault-malformed", full, true, &id));
    }
    wait_until(|| sim.open_streams() == 0).await;
}

#[tokio::test]
async fn invoice_of_a_request_abandoned_before_its_headers_is_empty() {
    let sim = ProviderSim::start().await;
    let body = json!({"model": "slow-2000-gpt-4o", "messages": [{"role": "user", "content": "x"}]}).to_string();
    let mut tcp = tokio::net::TcpStream::connect(sim.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body.as_bytes()).await.unwrap();
    wait_until(|| sim.requests().len() == 1).await;
    drop(tcp);
    let started = Instant::now();
    wait_until(|| sim.invoice().len() == 1).await;
    let billed = sim.invoice().pop().unwrap();
    assert_eq!((billed.model.as_str(), billed.usage, billed.complete), ("gpt-4o", SimUsage::default(), false));
    assert!(started.elapsed() < Duration::from_millis(1500), "noticed before the answer was due");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoice_has_one_line_per_request_under_concurrency() {
    let sim = std::sync::Arc::new(ProviderSim::start().await);
    let cases = |i: usize| -> (&'static str, Value, SimApi) {
        let content = format!("request {i}{}", if i.is_multiple_of(3) { " cached" } else { "" });
        let stream = i.is_multiple_of(2);
        match i % 5 {
            0 => (
                "/v1/chat/completions",
                json!({"model": "drip-2-o3-mini", "stream": stream,
                    "messages": [{"role": "user", "content": content}]}),
                SimApi::ChatCompletions,
            ),
            1 => (
                "/v1/completions",
                json!({"model": "gpt-3.5-turbo-instruct", "stream": stream, "prompt": content}),
                SimApi::Completions,
            ),
            2 => ("/v1/embeddings", json!({"model": "text-embedding-3-small", "input": content}), SimApi::Embeddings),
            3 => ("/v1/responses", json!({"model": "gpt-4o", "stream": stream, "input": content}), SimApi::Responses),
            _ => (
                "/v1/messages",
                json!({"model": "drip-2-claude-x", "stream": stream, "max_tokens": 9,
                    "messages": [{"role": "user", "content": content}]}),
                SimApi::Messages,
            ),
        }
    };
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let sim = sim.clone();
            tokio::spawn(async move {
                let (path, body, api) = cases(i);
                let response = send(&sim, path, &[], &body).await;
                assert_eq!(response.status(), StatusCode::OK);
                let id = request_id(&response);
                read(response).await;
                (id, api, body)
            })
        })
        .collect();
    let mut answered = vec![];
    for task in tasks {
        answered.push(task.await.unwrap());
    }
    wait_until(|| sim.invoice().len() >= 50).await;
    let invoice = sim.invoice();
    assert_eq!(invoice.len(), 50);
    let ids: HashSet<&str> = invoice.iter().map(|l| l.request_id.as_str()).collect();
    assert_eq!(ids.len(), 50, "distinct request ids");
    for (id, api, body) in &answered {
        let billed = invoice.iter().find(|l| &l.request_id == id).expect("a line for every answer");
        assert_eq!((billed.api, billed.usage, billed.complete), (*api, expected_usage(*api, body), true), "{body}");
    }
    let total: u64 = answered
        .iter()
        .map(|(_, api, body)| {
            let u = expected_usage(*api, body);
            u.input + u.cached_input + u.cache_write + u.output
        })
        .sum();
    assert_eq!(sim.invoice_total_tokens(), total);
}
