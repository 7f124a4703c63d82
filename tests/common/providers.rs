//! A simulator of the AI providers on loopback: OpenAI (chat completions,
//! completions, embeddings, responses), Azure OpenAI (deployments) and Anthropic
//! (messages), streaming and not, in their wire formats, with recorded requests
//! and scripted faults. It stands in for the providers this machine cannot reach;
//! it checks no credential, and records every header so tests can assert what
//! reached it. Self-contained (no other module of tests/common), so a benchmark
//! can include it with `#[path]`.
//!
//! Usage, the same streaming and not (`expected_usage` computes it):
//! - input tokens = 5 + the number of whitespace-separated words of every input
//!   text (messages, `system`, `instructions`, `prompt`, `input`);
//! - a text containing the word `cached`: OpenAI reports half the input (floor) as
//!   `cached_tokens`; Anthropic reports `cache_read_input_tokens` 7 and
//!   `cache_creation_input_tokens` 3 beside `input_tokens`;
//! - the reply is `Hello from the simulator, this is <model>.` (7 words), cut to
//!   `max_tokens` / `max_completion_tokens` / `max_output_tokens` words; output
//!   tokens = its words;
//! - OpenAI reasoning models (`o1`, `o3-mini`, … or a name containing `reason`)
//!   report 4 `reasoning_tokens`, inside `completion_tokens` as OpenAI does;
//! - embeddings: input tokens only.
//!
//! Faults, by model name (or Azure deployment): `fault-400`, `fault-429` (with
//! `retry-after: 1`), `fault-500`, `fault-503` (that status, the provider's error
//! body); `fault-timeout` (no answer, ever); `fault-reset` (the connection is
//! closed without an answer); `fault-malformed` (200 with a body that is not
//! JSON; in a stream, an event that is not JSON); `fault-truncated` (a body
//! shorter than its content-length; a stream cut without its end or usage);
//! `fault-cut-stream` (a stream that sends its first events, then nothing, open
//! forever). Prefixes: `slow-<ms>-<model>` waits before the headers,
//! `drip-<ms>-<model>` waits between stream events.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

/// A request as it reached the simulator.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    /// `Null` when the body is not JSON.
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimApi {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Messages,
}

/// What the simulator reports, in the gateway's terms: `input` excludes cached
/// input; `output` includes reasoning (as OpenAI counts it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimUsage {
    pub input: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    open_streams: AtomicUsize,
}

pub struct ProviderSim {
    pub addr: SocketAddr,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl ProviderSim {
    pub async fn start() -> ProviderSim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the simulator");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let server = tokio::spawn(serve(listener, state.clone()));
        ProviderSim { addr, state, server }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.state.requests.lock().unwrap().clear();
    }

    /// Stream bodies being sent right now.
    pub fn open_streams(&self) -> usize {
        self.state.open_streams.load(Ordering::SeqCst)
    }
}

impl Drop for ProviderSim {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let state = state.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            // A handler that wants the connection reset without an answer says so here.
            let reset = Arc::new(tokio::sync::Notify::new());
            let service = {
                let reset = reset.clone();
                hyper::service::service_fn(move |request| handle(request, state.clone(), reset.clone()))
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = reset.notified() => {} // dropping the connection closes the socket
            }
        });
    }
}

type SimBody = BoxBody<Bytes, std::io::Error>;

fn full(status: StatusCode, content_type: &str, body: String) -> Response<SimBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", content_type.parse().unwrap());
    response
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
    reset: Arc<tokio::sync::Notify>,
) -> Result<Response<SimBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    state.requests.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path_and_query: path.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.clone(),
    });
    let bare = path.split('?').next().unwrap_or("/");
    let deployment = bare.strip_prefix("/openai/deployments/").and_then(|r| r.split('/').next()).map(str::to_string);
    let api = match bare {
        "/v1/models" => return Ok(full(StatusCode::OK, "application/json", models())),
        p if p.ends_with("/chat/completions") => SimApi::ChatCompletions,
        p if p.ends_with("/completions") => SimApi::Completions,
        p if p.ends_with("/embeddings") => SimApi::Embeddings,
        "/v1/responses" => SimApi::Responses,
        "/v1/messages" => SimApi::Messages,
        _ => return Ok(error(SimApi::ChatCompletions, 404, "not_found_error", "no such endpoint")),
    };
    let model = body["model"].as_str().map(str::to_string).or(deployment).unwrap_or_else(|| "unknown".into());
    let (delay, drip, model) = prefixes(&model);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    match model.as_str() {
        "fault-400" => return Ok(error(api, 400, "invalid_request_error", "simulated 400")),
        "fault-429" => {
            let mut r = error(api, 429, "rate_limit_error", "simulated 429");
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
            return Ok(r);
        }
        "fault-500" => return Ok(error(api, 500, "api_error", "simulated 500")),
        "fault-503" => return Ok(error(api, 503, "overloaded_error", "simulated 503")),
        "fault-timeout" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        "fault-reset" => {
            reset.notify_one();
            std::future::pending::<()>().await;
        }
        _ => {}
    }
    let usage = expected_usage(api, &body);
    let text = reply_words(&body, &model).join(" ");
    let stream = body["stream"].as_bool() == Some(true);
    Ok(match (api, stream) {
        (SimApi::Embeddings, _) => {
            full(StatusCode::OK, "application/json", embeddings(&body, &model, usage).to_string())
        }
        (_, false) if model == "fault-malformed" => {
            full(StatusCode::OK, "application/json", "{\"id\": \"x\", \"usage\": {".into())
        }
        (_, false) if model == "fault-truncated" => {
            // Half the body, then the connection fails: the declared length is never reached.
            let body = whole(api, &model, &text, usage).to_string();
            let half = Bytes::from(body[..body.len() / 2].to_string());
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(half))).await;
                // Long enough for the head and the first half to leave before the cut.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = tx.send(Err(std::io::Error::other("simulated cut"))).await;
            });
            let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut().insert("content-type", "application/json".parse().unwrap());
            r.headers_mut().insert("content-length", body.len().to_string().parse().unwrap());
            r
        }
        (_, false) => full(StatusCode::OK, "application/json", whole(api, &model, &text, usage).to_string()),
        (_, true) => {
            let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
            let events = stream_events(api, &model, &text, usage, include_usage);
            streamed(events, &model, drip, state)
        }
    })
}

/// `slow-<ms>-` and `drip-<ms>-` prefixes, and the model name after them.
fn prefixes(model: &str) -> (Option<Duration>, Duration, String) {
    let mut rest = model.to_string();
    let (mut slow, mut drip) = (None, Duration::from_millis(2));
    loop {
        let take = |prefix: &str, rest: &str| {
            let r = rest.strip_prefix(prefix)?;
            let (ms, tail) = r.split_once('-')?;
            Some((Duration::from_millis(ms.parse().ok()?), tail.to_string()))
        };
        if let Some((d, tail)) = take("slow-", &rest) {
            (slow, rest) = (Some(d), tail);
        } else if let Some((d, tail)) = take("drip-", &rest) {
            (drip, rest) = (d, tail);
        } else {
            return (slow, drip, if rest == model { rest } else { model.to_string() });
        }
    }
}

fn models() -> String {
    json!({"object": "list", "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 1_700_000_000, "owned_by": "sim"},
        {"id": "gpt-4o", "object": "model", "created": 1_700_000_000, "owned_by": "sim"}
    ]})
    .to_string()
}

fn error(api: SimApi, status: u16, kind: &str, message: &str) -> Response<SimBody> {
    let body = match api {
        SimApi::Messages => json!({"type": "error", "error": {"type": kind, "message": message}}),
        _ => json!({"error": {"message": message, "type": kind, "param": null, "code": kind}}),
    };
    full(StatusCode::from_u16(status).unwrap(), "application/json", body.to_string())
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Every input text of a request body.
fn input_texts(body: &Value) -> Vec<String> {
    fn texts(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| texts(i, out)),
            Value::Object(map) => {
                for key in ["content", "text", "input"] {
                    if let Some(v) = map.get(key) {
                        texts(v, out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = vec![];
    for key in ["messages", "system", "instructions", "prompt", "input"] {
        if let Some(v) = body.get(key) {
            texts(v, &mut out);
        }
    }
    out
}

fn is_reasoning(model: &str) -> bool {
    let mut chars = model.chars();
    (chars.next() == Some('o') && chars.next().is_some_and(|c| c.is_ascii_digit())) || model.contains("reason")
}

fn reply_words(body: &Value, model: &str) -> Vec<String> {
    let all: Vec<String> = ["Hello", "from", "the", "simulator,", "this", "is"]
        .iter()
        .map(|w| w.to_string())
        .chain([format!("{model}.")])
        .collect();
    let max = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body[*k].as_u64())
        .map_or(all.len(), |m| (m as usize).clamp(1, all.len()));
    all.into_iter().take(max).collect()
}

/// The usage the simulator reports for `body` at `api` (see the module doc).
pub fn expected_usage(api: SimApi, body: &Value) -> SimUsage {
    let texts = input_texts(body);
    let prompt = 5 + texts.iter().map(|t| words(t)).sum::<u64>();
    let cached =
        texts.iter().any(|t| t.split_whitespace().any(|w| w.trim_matches(|c: char| !c.is_alphanumeric()) == "cached"));
    let model_raw = body["model"].as_str().unwrap_or("unknown");
    let (_, _, model) = prefixes(model_raw);
    let output = if api == SimApi::Embeddings { 0 } else { reply_words(body, &model).len() as u64 };
    match api {
        SimApi::Messages => SimUsage {
            input: prompt,
            cached_input: if cached { 7 } else { 0 },
            cache_write: if cached { 3 } else { 0 },
            output,
            reasoning: 0,
        },
        SimApi::Embeddings => SimUsage { input: prompt, ..SimUsage::default() },
        _ => {
            let cached_tokens = if cached { prompt / 2 } else { 0 };
            let reasoning = if is_reasoning(&model) { 4 } else { 0 };
            SimUsage {
                input: prompt - cached_tokens,
                cached_input: cached_tokens,
                cache_write: 0,
                output: output + reasoning,
                reasoning,
            }
        }
    }
}

fn openai_usage(u: SimUsage) -> Value {
    let prompt = u.input + u.cached_input;
    json!({"prompt_tokens": prompt, "completion_tokens": u.output, "total_tokens": prompt + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cached_input, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
}

fn responses_usage(u: SimUsage) -> Value {
    let input = u.input + u.cached_input;
    json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": u.cached_input},
        "output_tokens": u.output, "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": input + u.output})
}

fn anthropic_usage(u: SimUsage) -> Value {
    json!({"input_tokens": u.input, "output_tokens": u.output,
        "cache_creation_input_tokens": u.cache_write, "cache_read_input_tokens": u.cached_input})
}

const CREATED: u64 = 1_765_000_000;

fn response_object(model: &str, text: &str, usage: Option<Value>, status: &str) -> Value {
    let output = if status == "completed" {
        json!([{"type": "message", "id": "msg_sim", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}])
    } else {
        json!([])
    };
    json!({"id": "resp_sim", "object": "response", "created_at": CREATED, "status": status, "model": model,
        "output": output, "usage": usage, "error": null, "incomplete_details": null, "instructions": null,
        "metadata": {}, "parallel_tool_calls": true, "temperature": 1.0, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "text": {"format": {"type": "text"}}, "truncation": "disabled"})
}

/// A whole (non-streaming) answer.
fn whole(api: SimApi, model: &str, text: &str, u: SimUsage) -> Value {
    match api {
        SimApi::ChatCompletions => json!({"id": "chatcmpl-sim", "object": "chat.completion", "created": CREATED,
            "model": model, "system_fingerprint": "fp_sim",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null, "finish_reason": "stop"}],
            "usage": openai_usage(u)}),
        SimApi::Completions => json!({"id": "cmpl-sim", "object": "text_completion", "created": CREATED,
            "model": model, "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": "stop"}],
            "usage": openai_usage(u)}),
        SimApi::Responses => response_object(model, text, Some(responses_usage(u)), "completed"),
        SimApi::Messages => json!({"id": "msg_sim", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": anthropic_usage(u)}),
        SimApi::Embeddings => Value::Null,
    }
}

fn embeddings(body: &Value, model: &str, u: SimUsage) -> Value {
    use base64::Engine;
    let inputs = match &body["input"] {
        Value::Array(items) => items.len().max(1),
        _ => 1,
    };
    let dimensions = body["dimensions"].as_u64().unwrap_or(8) as usize;
    let vector: Vec<f32> = (0..dimensions).map(|i| (i as f32 + 1.0) / 10.0).collect();
    let embedding = if body["encoding_format"].as_str() == Some("base64") {
        let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
        json!(base64::engine::general_purpose::STANDARD.encode(bytes))
    } else {
        json!(vector)
    };
    let data: Vec<Value> =
        (0..inputs).map(|i| json!({"object": "embedding", "index": i, "embedding": embedding})).collect();
    json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": u.input, "total_tokens": u.input}})
}

/// An SSE event: (event name or none, data).
type Event = (Option<&'static str>, String);

fn stream_events(api: SimApi, model: &str, text: &str, u: SimUsage, include_usage: bool) -> Vec<Event> {
    let pieces: Vec<String> =
        text.split(' ').enumerate().map(|(i, w)| if i == 0 { w.to_string() } else { format!(" {w}") }).collect();
    let null_usage = |mut v: Value| {
        if include_usage {
            v["usage"] = Value::Null;
        }
        v
    };
    match api {
        SimApi::ChatCompletions | SimApi::Completions => {
            let chat = api == SimApi::ChatCompletions;
            let object = if chat { "chat.completion.chunk" } else { "text_completion" };
            let chunk = |choice: Value| {
                null_usage(json!({"id": "chatcmpl-sim", "object": object, "created": CREATED, "model": model,
                    "system_fingerprint": "fp_sim", "choices": [choice]}))
            };
            let mut events = vec![];
            if chat {
                events.push(chunk(json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null})));
            }
            for piece in &pieces {
                events.push(if chat {
                    chunk(json!({"index": 0, "delta": {"content": piece}, "logprobs": null, "finish_reason": null}))
                } else {
                    chunk(json!({"index": 0, "text": piece, "logprobs": null, "finish_reason": null}))
                });
            }
            events.push(if chat {
                chunk(json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}))
            } else {
                chunk(json!({"index": 0, "text": "", "logprobs": null, "finish_reason": "stop"}))
            });
            if include_usage {
                events.push(json!({"id": "chatcmpl-sim", "object": object, "created": CREATED, "model": model,
                    "system_fingerprint": "fp_sim", "choices": [], "usage": openai_usage(u)}));
            }
            let mut out: Vec<Event> = events.into_iter().map(|e| (None, e.to_string())).collect();
            out.push((None, "[DONE]".into()));
            out
        }
        SimApi::Responses => {
            let mut seq = 0;
            let mut ev = |name: &'static str, mut data: Value| {
                data["type"] = json!(name);
                data["sequence_number"] = json!(seq);
                seq += 1;
                (Some(name), data.to_string())
            };
            let item = json!({"type": "message", "id": "msg_sim", "status": "in_progress", "role": "assistant", "content": []});
            let part = json!({"type": "output_text", "text": "", "annotations": []});
            let done_part = json!({"type": "output_text", "text": text, "annotations": []});
            let done_item = json!({"type": "message", "id": "msg_sim", "status": "completed", "role": "assistant", "content": [done_part.clone()]});
            let mut out = vec![
                ev("response.created", json!({"response": response_object(model, "", None, "in_progress")})),
                ev("response.in_progress", json!({"response": response_object(model, "", None, "in_progress")})),
                ev("response.output_item.added", json!({"output_index": 0, "item": item})),
                ev(
                    "response.content_part.added",
                    json!({"item_id": "msg_sim", "output_index": 0, "content_index": 0, "part": part}),
                ),
            ];
            for piece in &pieces {
                out.push(ev("response.output_text.delta", json!({"item_id": "msg_sim", "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []})));
            }
            out.push(ev(
                "response.output_text.done",
                json!({"item_id": "msg_sim", "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
            ));
            out.push(ev(
                "response.content_part.done",
                json!({"item_id": "msg_sim", "output_index": 0, "content_index": 0, "part": done_part}),
            ));
            out.push(ev("response.output_item.done", json!({"output_index": 0, "item": done_item})));
            out.push(ev(
                "response.completed",
                json!({"response": response_object(model, text, Some(responses_usage(u)), "completed")}),
            ));
            out
        }
        SimApi::Messages => {
            let start_usage = json!({"input_tokens": u.input, "cache_creation_input_tokens": u.cache_write,
                "cache_read_input_tokens": u.cached_input, "output_tokens": 1});
            let mut out: Vec<Event> = vec![
                (
                    Some("message_start"),
                    json!({"type": "message_start", "message": {"id": "msg_sim", "type": "message",
                    "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": start_usage}})
                    .to_string(),
                ),
                (
                    Some("content_block_start"),
                    json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}})
                    .to_string(),
                ),
                (Some("ping"), json!({"type": "ping"}).to_string()),
            ];
            for piece in &pieces {
                out.push((
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": piece}})
                    .to_string(),
                ));
            }
            out.push((Some("content_block_stop"), json!({"type": "content_block_stop", "index": 0}).to_string()));
            out.push((
                Some("message_delta"),
                json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": u.output}})
                .to_string(),
            ));
            out.push((Some("message_stop"), json!({"type": "message_stop"}).to_string()));
            out
        }
        SimApi::Embeddings => vec![],
    }
}

fn encode((name, data): &Event) -> Bytes {
    match name {
        Some(name) => Bytes::from(format!("event: {name}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

/// Counts a stream as open while its body is alive.
struct OpenGuard(Arc<State>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

fn streamed(events: Vec<Event>, model: &str, drip: Duration, state: Arc<State>) -> Response<SimBody> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    state.open_streams.fetch_add(1, Ordering::SeqCst);
    let guard = OpenGuard(state);
    let model = model.to_string();
    tokio::spawn(async move {
        let _guard = guard;
        let total = events.len();
        for (i, event) in events.iter().enumerate() {
            match model.as_str() {
                "fault-cut-stream" if i == 3.min(total) => {
                    // Silence, connection kept open, until the client goes away.
                    tx.closed().await;
                    return;
                }
                "fault-truncated" if i == 2 => {
                    let _ = tx.send(Err(std::io::Error::other("simulated cut"))).await;
                    return;
                }
                "fault-malformed" if i == 1 => {
                    let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"data: {not json\n\n")))).await;
                }
                _ => {}
            }
            if tx.send(Ok(Frame::data(encode(event)))).await.is_err() {
                return;
            }
            tokio::time::sleep(drip).await;
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert("content-type", "text/event-stream; charset=utf-8".parse().unwrap());
    response.headers_mut().insert("cache-control", "no-cache".parse().unwrap());
    response
}
