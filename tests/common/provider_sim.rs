//! A simulator of the AI providers on loopback, for the tests (and benchmarks) of
//! the metering gateway: OpenAI, Azure OpenAI and Anthropic, streaming and not, in
//! their wire formats, so the official SDKs parse its answers. It records every
//! request (all headers as they arrived, repeats included, and the body's bytes:
//! it checks no credential) and what each stream sent, and plays scripted faults.
//!
//! Self-contained: it uses no other module of tests/common, so a benchmark can
//! take it with `#[path = "../tests/common/provider_sim.rs"] mod provider_sim;`.
//!
//! # Endpoints
//! - OpenAI: `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//!   `/v1/responses`; `GET /v1/models`.
//! - Azure OpenAI: `POST /openai/deployments/{deployment}/chat/completions`
//!   (and `/completions`, `/embeddings`), any query (`api-version`).
//! - Anthropic: `POST /v1/messages` (and `GET /v1/models` in its shape when the
//!   request has an `anthropic-version` header).
//! - Anything else: 404 in the provider's error shape (Anthropic's when the
//!   request has an `anthropic-version` header, else OpenAI's). A body that is not
//!   JSON, or (outside Azure) without a `model`: 400 in the provider's shape.
//! - Every answer has a request id header (`x-request-id`, Anthropic `request-id`).
//!
//! # Usage: deterministic, the same streaming and not (`expected_usage`)
//! - Input words: the whitespace-separated words of every string under the body's
//!   `messages`, `system`, `instructions`, `prompt` and `input`, walking arrays and,
//!   in objects, their `content` and `text` fields (so content-part arrays and
//!   Responses input items count); a number in those (a token array) counts 1.
//! - Prompt tokens P = 5 + input words.
//! - Cache: when a word of those texts is `cached` (case-insensitive, punctuation
//!   trimmed), OpenAI reports `cached_tokens` K = floor(P / 2) (inside P, as OpenAI
//!   does) and Anthropic reports `cache_read_input_tokens` 7 and
//!   `cache_creation_input_tokens` 3 beside `input_tokens` = P. Else 0.
//! - The reply is `Hello from the simulator, this is <model>.` (7 words for a
//!   one-word model), cut to its first N words when the body has `max_tokens`,
//!   `max_completion_tokens` or `max_output_tokens` = N (the first of these present;
//!   at least 1 word). Output tokens = the reply's words.
//! - A stream sends the reply one word a text delta (the later ones with their
//!   leading space): one delta = one output token, so how far a stream got is
//!   how much output it generated (see "# Invoice").
//! - Reasoning (OpenAI APIs only): a model `o<digit>…` (o1, o3-mini, o4-mini) or
//!   one containing `reason` reports 4 `reasoning_tokens`, added to the completion
//!   tokens (OpenAI counts them inside `completion_tokens` / `output_tokens`).
//! - Embeddings: P only; one vector per input (a string, a token array, or each
//!   element of an array of those), `dimensions` floats (8 by default), as a
//!   little-endian f32 base64 string when `encoding_format` is `base64` (what the
//!   openai SDK asks for).
//!
//! In the gateway's terms ([`SimUsage`]): input = P - K for OpenAI, P for
//! Anthropic; cached_input = K or 7; cache_write = 0 or 3; output = reply words
//! (+ reasoning for OpenAI); reasoning = 4 or 0.
//!
//! # The model name: prefixes and faults
//! The name that scripts the answer is the body's `model`, or on Azure the
//! deployment of the path (as on Azure, where the deployment serves whatever the
//! body says). Leading prefixes, in any order, are taken off it:
//! - `slow-<ms>-`: waits that long before the response headers;
//! - `gzip-`: a whole JSON answer is sent gzip-compressed with `content-encoding:
//!   gzip`, ignoring the request's `accept-encoding` (as a misbehaving proxy would);
//! - `drip-<ms>-`: waits that long between the events of a stream (else none);
//! - `image-<KiB>-` (Responses API): the answer also carries a generated image of
//!   that many KiB of base64, as the `image_generation` tool returns it: an
//!   `image_generation_call` output item with its `result`; a stream sends a
//!   `partial_image` event and the finished item (each that large) after the text,
//!   and `response.completed` carries the image again beside the usage. The usage
//!   is the same as without it;
//! - `ping-`: a stream sends a `: ping` comment block (an SSE keep-alive, as
//!   OpenAI's and Anthropic's streams do) as its own write before each event.
//!
//! The answer echoes the body's `model` without those prefixes (the deployment's
//! when the body has none); usage is computed for that name. The rest of the name:
//! - `fault-400`, `fault-429` (with `retry-after: 1`), `fault-500`, `fault-503`:
//!   that status with the provider's error body, message `simulated <status>`;
//! - `fault-timeout`: no response headers, ever (the handler sleeps an hour; other
//!   requests are served meanwhile);
//! - `fault-reset`: the connection is reset (RST, `SO_LINGER` 0) once the request
//!   is read, without any response bytes;
//! - `fault-malformed`: 200 `application/json` with the body `{"id": "x",
//!   "usage": {`; in a stream, an event whose data is not JSON right after the
//!   first event, the rest of the stream following normally;
//! - `fault-truncated`: 200 JSON with the content-length of the whole answer but
//!   only its first half, then the connection is cut; a stream sends its events up
//!   to and including the first text delta, then the body fails (the chunked body
//!   never ends: no usage, no `message_delta`, no `[DONE]`);
//! - `fault-cut-stream`: a stream sends its events up to and including the first
//!   text delta (for Anthropic: `message_start` with the input usage, then one
//!   delta), then nothing, the connection kept open until the client goes away;
//!   a non-streaming answer likewise stalls after half of its JSON.
//!
//! Any other name is a normal answer for that model.
//!
//! # Invoice
//! [`ProviderSim::invoice`] is what the provider would bill: one [`InvoiceLine`]
//! per request to an API endpoint (the `POST` routes above), recorded exactly once
//! by a guard that every such request owns from its start, so that a test can check
//! that the provider's bill equals the gateway's ledger. `GET /v1/models` and
//! unknown paths (404) get no line. A line has the API, the model as priced (the
//! body's `model`, else the Azure deployment, without the `slow-`/`drip-`
//! prefixes: the name [`expected_usage`] prices; empty when there is neither), the
//! usage in [`SimUsage`]'s terms, whether the answer went out whole (`complete`),
//! and the request id of the answer's header. The rules:
//! - A whole answer, JSON or stream, bills [`expected_usage`], `complete: true`.
//!   A stream is whole once its last event was handed to the connection.
//! - A stream that ends early (the client closed the connection, or
//!   `fault-truncated` / `fault-cut-stream` cut it) bills the input in full
//!   (input, cached_input, cache_write) and, as output, the words of the text
//!   deltas handed to the connection before its body ended or was dropped (when
//!   the simulator noticed the client was gone: a delta already written may not
//!   have reached the client, so the figure is at least what the client read and
//!   can be a delta or two more). Reasoning tokens (OpenAI reasoning models) come
//!   before the text: once the first delta went out they are billed in full (in
//!   `reasoning` and inside `output`, as OpenAI counts them); before it, neither
//!   they nor any output is billed. `complete: false`.
//! - A non-streaming `fault-truncated` / `fault-cut-stream` answer was generated
//!   whole before its first byte went out; only its delivery breaks. It bills
//!   [`expected_usage`] with `complete: false`.
//! - `fault-malformed` is a whole answer with a garbled body: [`expected_usage`],
//!   `complete: true`.
//! - Nothing answered: the error faults (`fault-400` … `fault-503`), the 400s for
//!   a body that is not JSON or has no model, `fault-timeout` and `fault-reset`,
//!   and a client that goes away before the response headers (during `slow-`):
//!   a line with zero usage and `complete: false` (a line rather than none, so
//!   that every request to an API has exactly one line to reconcile).
//!   `fault-timeout` and `fault-reset` record it as soon as they decide never to
//!   answer (the line is there while the client still waits).
//!
//! When: a JSON or error answer's line is recorded before its response is sent;
//! a stream's when its body ends or is dropped, before [`ProviderSim::open_streams`]
//! counts it closed. So after a stream, poll for the line (or for
//! `open_streams() == 0`). [`ProviderSim::clear`] clears the invoice too.
//!
//! # Server
//! HTTP/1.1 only, axum routes served by hyper over a custom accept loop, so that
//! a handler can have its connection reset. Every connection task is owned by
//! the accept loop, and dropping the [`ProviderSim`] stops them all.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A request as it reached the simulator.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    /// Lowercase names, in the order received (a repeated header appears repeatedly).
    pub headers: Vec<(String, String)>,
    /// `Null` when the body is not JSON (or empty).
    pub body: Value,
    /// The body exactly as it arrived.
    pub raw_body: Bytes,
}

impl Recorded {
    /// The first value of a header; `name` in lowercase.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimApi {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Messages,
    /// Image generation: one image per request (`n` ignored), billed in tokens.
    Images,
}

/// What the simulator reports, in the gateway's terms (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimUsage {
    /// Input tokens not read from the cache.
    pub input: u64,
    /// OpenAI `cached_tokens`, Anthropic `cache_read_input_tokens`.
    pub cached_input: u64,
    /// Anthropic `cache_creation_input_tokens` (0 for OpenAI).
    pub cache_write: u64,
    /// Completion / output tokens, reasoning included for OpenAI.
    pub output: u64,
    pub reasoning: u64,
}

/// What the provider would bill for one request (see "# Invoice" in the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceLine {
    pub api: SimApi,
    /// As priced: without the `slow-`/`drip-` prefixes; on Azure the body's model,
    /// else the deployment.
    pub model: String,
    pub usage: SimUsage,
    /// The answer went out whole (a JSON answer, or a stream to its last event).
    pub complete: bool,
    /// As in the answer's `x-request-id` / `request-id` header.
    pub request_id: String,
}

impl InvoiceLine {
    /// Every billed token once: input, cached input, cache writes and output
    /// (reasoning is inside output for OpenAI, and 0 for Anthropic).
    pub fn total_tokens(&self) -> u64 {
        let u = self.usage;
        u.input + u.cached_input + u.cache_write + u.output
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    invoice: Mutex<Vec<InvoiceLine>>,
    /// The bytes each stream handed to its connection so far, by request id.
    sent: Mutex<std::collections::HashMap<String, Vec<u8>>>,
    open_streams: AtomicUsize,
    ids: AtomicU64,
}

impl Shared {
    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed) + 1
    }
}

pub struct ProviderSim {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl ProviderSim {
    /// Binds 127.0.0.1 on a free port and serves on a spawned task.
    pub async fn start() -> ProviderSim {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the provider simulator");
        let addr = listener.local_addr().expect("the simulator's address");
        let shared = Arc::new(Shared::default());
        let server = tokio::spawn(serve(listener, shared.clone(), router()));
        ProviderSim { addr, shared, server }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in the order their bodies arrived.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Clears the recorded requests and the invoice.
    pub fn clear(&self) {
        self.shared.requests.lock().unwrap().clear();
        self.shared.invoice.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// What the provider would bill so far, one line per request to an API, in the
    /// order the lines were recorded (see "# Invoice" in the module doc).
    pub fn invoice(&self) -> Vec<InvoiceLine> {
        self.shared.invoice.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The sum of [`InvoiceLine::total_tokens`] over the invoice.
    pub fn invoice_total_tokens(&self) -> u64 {
        self.invoice().iter().map(InvoiceLine::total_tokens).sum()
    }

    /// The bytes the stream with this request id (its `x-request-id` or
    /// `request-id`) has handed to its connection so far; `None` for an id
    /// that was no stream.
    pub fn sent(&self, request_id: &str) -> Option<Vec<u8>> {
        self.shared.sent.lock().unwrap_or_else(PoisonError::into_inner).get(request_id).cloned()
    }

    /// SSE bodies being sent right now: from the response until the body ends or
    /// is dropped (the client went away).
    pub fn open_streams(&self) -> usize {
        self.shared.open_streams.load(Ordering::SeqCst)
    }
}

impl Drop for ProviderSim {
    fn drop(&mut self) {
        // The accept loop owns every connection task: aborting it drops them all.
        self.server.abort();
    }
}

// ---------------------------------------------------------------------------
// Server

/// What a handler gets besides its route: the shared state, the request body
/// parsed, and the means to reset its connection.
#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    body: Arc<Value>,
    reset: Arc<Notify>,
}

fn router() -> Router {
    fn direct(api: SimApi) -> axum::routing::MethodRouter {
        post(move |Extension(ctx): Extension<Ctx>| answer(ctx, api, None))
    }
    fn azure(api: SimApi) -> axum::routing::MethodRouter {
        post(move |Extension(ctx): Extension<Ctx>, Path(deployment): Path<String>| answer(ctx, api, Some(deployment)))
    }
    Router::new()
        .route("/v1/chat/completions", direct(SimApi::ChatCompletions))
        .route("/v1/completions", direct(SimApi::Completions))
        .route("/v1/embeddings", direct(SimApi::Embeddings))
        .route("/v1/images/generations", direct(SimApi::Images))
        .route("/v1/responses", direct(SimApi::Responses))
        .route("/v1/messages", direct(SimApi::Messages))
        .route("/openai/deployments/{deployment}/chat/completions", azure(SimApi::ChatCompletions))
        .route("/openai/deployments/{deployment}/completions", azure(SimApi::Completions))
        .route("/openai/deployments/{deployment}/embeddings", azure(SimApi::Embeddings))
        .route("/v1/models", get(models))
        .fallback(not_found)
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, router: Router) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    connections.spawn(connection(tcp, shared.clone(), router.clone()));
                }
                // Out of descriptors, say: try again shortly rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(tcp: TcpStream, shared: Arc<Shared>, router: Router) {
    let _ = tcp.set_nodelay(true);
    let reset = Arc::new(Notify::new());
    let service = {
        let reset = reset.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let (shared, reset, router) = (shared.clone(), reset.clone(), router.clone());
            async move {
                let (parts, body) = request.into_parts();
                let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                shared.requests.lock().unwrap().push(Recorded {
                    method: parts.method.to_string(),
                    path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                        .collect(),
                    body: parsed.clone(),
                    raw_body: bytes.clone(),
                });
                let mut request = Request::from_parts(parts, Body::from(bytes));
                request.extensions_mut().insert(Ctx { shared, body: Arc::new(parsed), reset });
                TowerToHyperService::new(router).call(request).await
            }
        })
    };
    let mut connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
    tokio::select! {
        _ = &mut connection => {}
        () = reset.notified() => {
            // SO_LINGER 0: closing sends a RST, and nothing of a response was written.
            let parts = connection.into_parts();
            let _ = parts.io.inner().set_zero_linger();
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn is_anthropic(api: SimApi) -> bool {
    api == SimApi::Messages
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    response
}

/// The provider's error body: OpenAI `{"error": {…}}`, Anthropic `{"type": "error", …}`.
fn error(anthropic: bool, status: StatusCode, message: &str) -> Response {
    let body = if anthropic {
        let kind = match status.as_u16() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            _ => "api_error",
        };
        json!({"type": "error", "error": {"type": kind, "message": message}})
    } else {
        let (kind, code) = match status.as_u16() {
            400 | 404 => ("invalid_request_error", Value::Null),
            429 => ("requests", json!("rate_limit_exceeded")),
            _ => ("server_error", Value::Null),
        };
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
    };
    json_response(status, body.to_string())
}

async fn not_found(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let anthropic = headers.contains_key("anthropic-version");
    error(anthropic, StatusCode::NOT_FOUND, &format!("Invalid URL ({method} {})", uri.path()))
}

async fn models(headers: HeaderMap) -> Response {
    let ids = ["gpt-4o-mini", "gpt-4o", "o3-mini", "text-embedding-3-small", "claude-sonnet-4-5"];
    let body = if headers.contains_key("anthropic-version") {
        let data: Vec<Value> = ids
            .iter()
            .filter(|id| id.starts_with("claude"))
            .map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-09-29T00:00:00Z"}))
            .collect();
        json!({"data": data, "has_more": false, "first_id": ids[4], "last_id": ids[4]})
    } else {
        let data: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "system"}))
            .collect();
        json!({"object": "list", "data": data})
    };
    json_response(StatusCode::OK, body.to_string())
}

/// The `slow-<ms>-` and `drip-<ms>-` prefixes of a model name, and the rest.
struct Knobs {
    slow: Option<Duration>,
    drip: Duration,
    /// `gzip-`: a JSON answer is sent gzip-compressed (`content-encoding: gzip`),
    /// whatever the request's `accept-encoding` said.
    gzip: bool,
    /// `image-<KiB>-`: a Responses answer also carries a generated image of that many
    /// KiB of base64 (see [`image_output`]).
    image_bytes: usize,
    /// `ping-`: a `: ping` comment block before each event of a stream.
    ping: bool,
    model: String,
}

impl Knobs {
    fn parse(name: &str) -> Knobs {
        let mut knobs = Knobs {
            slow: None,
            drip: Duration::ZERO,
            gzip: false,
            image_bytes: 0,
            ping: false,
            model: name.to_string(),
        };
        loop {
            let take = |prefix: &str| -> Option<(Duration, String)> {
                let (ms, rest) = knobs.model.strip_prefix(prefix)?.split_once('-')?;
                Some((Duration::from_millis(ms.parse().ok()?), rest.to_string()))
            };
            if let Some((delay, rest)) = take("slow-") {
                (knobs.slow, knobs.model) = (Some(delay), rest);
            } else if let Some((delay, rest)) = take("drip-") {
                (knobs.drip, knobs.model) = (delay, rest);
            } else if let Some(rest) = knobs.model.strip_prefix("gzip-") {
                (knobs.gzip, knobs.model) = (true, rest.to_string());
            } else if let Some((kib, rest)) = knobs
                .model
                .strip_prefix("image-")
                .and_then(|r| r.split_once('-'))
                .filter(|(k, _)| k.parse::<usize>().is_ok())
            {
                (knobs.image_bytes, knobs.model) = (kib.parse::<usize>().unwrap_or(0) * 1024, rest.to_string());
            } else if let Some(rest) = knobs.model.strip_prefix("ping-") {
                (knobs.ping, knobs.model) = (true, rest.to_string());
            } else {
                return knobs;
            }
        }
    }
}

fn body_model(body: &Value) -> Option<&str> {
    body.get("model").and_then(Value::as_str).filter(|m| !m.is_empty())
}

async fn answer(ctx: Ctx, api: SimApi, deployment: Option<String>) -> Response {
    let anthropic = is_anthropic(api);
    let body = &*ctx.body;
    let id = ctx.shared.next_id();
    let request_id = format!("req_sim{id}");
    let control = deployment.as_deref().or(body_model(body));
    // The name usage is computed for: the body's model, else the deployment's.
    let model = body_model(body).or(control).map_or_else(String::new, |m| Knobs::parse(m).model);
    // From here on the request has its line: zero unless an answer bills more.
    let bill = Bill::new(&ctx.shared, api, model.clone(), request_id.clone());
    let mut response = match control {
        _ if body.is_null() => error(anthropic, StatusCode::BAD_REQUEST, "the body is not JSON"),
        None => error(anthropic, StatusCode::BAD_REQUEST, "you must provide a model parameter"),
        Some(control) => scripted(&ctx, api, control, &model, id, bill).await,
    };
    let request_id = HeaderValue::from_str(&request_id).unwrap();
    response.headers_mut().insert(if anthropic { "request-id" } else { "x-request-id" }, request_id);
    response
}

/// The answer as the model name scripts it; `model` is the name usage is for.
async fn scripted(ctx: &Ctx, api: SimApi, control: &str, model: &str, id: u64, bill: Bill) -> Response {
    let anthropic = is_anthropic(api);
    let body = &*ctx.body;
    let knobs = Knobs::parse(control);
    if let Some(delay) = knobs.slow {
        tokio::time::sleep(delay).await;
    }
    match knobs.model.as_str() {
        "fault-timeout" => {
            // Never answered: billed nothing, recorded now rather than in an hour.
            drop(bill);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return error(anthropic, StatusCode::GATEWAY_TIMEOUT, "simulated 504");
        }
        "fault-reset" => {
            drop(bill);
            ctx.reset.notify_one();
            return std::future::pending().await;
        }
        _ => {}
    }
    let status = match knobs.model.as_str() {
        "fault-400" => Some(StatusCode::BAD_REQUEST),
        "fault-429" => Some(StatusCode::TOO_MANY_REQUESTS),
        "fault-500" => Some(StatusCode::INTERNAL_SERVER_ERROR),
        "fault-503" => Some(StatusCode::SERVICE_UNAVAILABLE),
        _ => None,
    };
    match status {
        // The bill goes with its zero usage.
        Some(status) => {
            let mut response = error(anthropic, status, &format!("simulated {}", status.as_u16()));
            if status == StatusCode::TOO_MANY_REQUESTS {
                response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
            }
            response
        }
        None => ok_answer(ctx, api, body, model, &knobs, id, bill),
    }
}

fn ok_answer(ctx: &Ctx, api: SimApi, body: &Value, model: &str, knobs: &Knobs, id: u64, bill: Bill) -> Response {
    let usage = usage_for(api, body, model);
    let text = reply_text(body, model);
    let fault = knobs.model.as_str();
    let streaming = !matches!(api, SimApi::Embeddings | SimApi::Images)
        && body.get("stream").and_then(Value::as_bool) == Some(true);
    if !streaming {
        let whole = match api {
            SimApi::Embeddings => embeddings(body, model, usage),
            SimApi::Images => image(usage),
            SimApi::Responses if knobs.image_bytes > 0 => {
                let mut answer = whole(api, body, model, &text, usage, id);
                if let Some(output) = answer["output"].as_array_mut() {
                    output.push(image_output(id, knobs.image_bytes));
                }
                answer
            }
            _ => whole(api, body, model, &text, usage, id),
        }
        .to_string();
        // Generated whole before the first byte: billed whole, complete unless cut.
        bill.whole(usage, !matches!(fault, "fault-truncated" | "fault-cut-stream"));
        return match fault {
            "fault-malformed" => json_response(StatusCode::OK, r#"{"id": "x", "usage": {"#.to_string()),
            "fault-truncated" | "fault-cut-stream" => {
                let stop = if fault == "fault-truncated" { Stop::Fail } else { Stop::Stall };
                let half = Bytes::copy_from_slice(&whole.as_bytes()[..whole.len() / 2]);
                let feed = Feed::new(vec![(half, 0)], Duration::ZERO, Some((1, stop)), None, None);
                let mut response = Response::new(feed.body());
                response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
                response.headers_mut().insert("content-length", HeaderValue::from(whole.len()));
                response
            }
            _ if knobs.gzip => {
                use std::io::Write;
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                let _ = gz.write_all(whole.as_bytes());
                let mut response = Response::new(Body::from(gz.finish().unwrap_or_default()));
                response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
                response.headers_mut().insert("content-encoding", HeaderValue::from_static("gzip"));
                response
            }
            _ => json_response(StatusCode::OK, whole),
        };
    }
    let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
    let (mut events, first_delta) = stream_events(api, body, model, &text, usage, include_usage, id);
    if api == SimApi::Responses && knobs.image_bytes > 0 {
        with_image(&mut events, body, model, usage, id, knobs.image_bytes);
    }
    let stop = match fault {
        "fault-truncated" => Some((first_delta + 1, Stop::Fail)),
        "fault-cut-stream" => Some((first_delta + 1, Stop::Stall)),
        "fault-malformed" => {
            let bad = match events[0].name {
                Some(name) => format!("event: {name}\ndata: {{\"type\": \"{name}\", \"oops\n\n"),
                None => "data: {\"id\": \"x\", \"choices\": [\n\n".to_string(),
            };
            events.insert(1, Event { name: None, frame: bad, words: 0 });
            None
        }
        _ => None,
    };
    let mut frames: Vec<(Bytes, u64)> = vec![];
    for event in events {
        if knobs.ping {
            frames.push((Bytes::from_static(b": ping\n\n"), 0));
        }
        frames.push((Bytes::from(event.frame), event.words));
    }
    // A stop counts events: with pings, each event is the second of its pair of frames.
    let stop = stop.map(|(at, how)| (if knobs.ping { 2 * at } else { at }, how));
    ctx.shared.open_streams.fetch_add(1, Ordering::SeqCst);
    let bill = bill.stream(usage);
    let mut feed = Feed::new(frames, knobs.drip, stop, Some(bill), Some(OpenStream(ctx.shared.clone())));
    feed.record = Some((ctx.shared.clone(), format!("req_sim{id}")));
    let mut response = Response::new(feed.body());
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

// ---------------------------------------------------------------------------
// The invoice

/// What a request is billed so far.
enum Billed {
    /// Nothing answered (yet).
    Nothing,
    /// A JSON answer, generated whole.
    Whole { usage: SimUsage, complete: bool },
    /// A stream: the words of the text deltas handed to the connection so far, and
    /// whether its last event was.
    Stream { usage: SimUsage, words: u64, done: bool },
}

/// A request's invoice line, recorded once, when the guard is dropped: with the
/// handler (an answer that is not a stream), or with the stream's body.
struct Bill {
    shared: Arc<Shared>,
    api: SimApi,
    model: String,
    request_id: String,
    billed: Billed,
}

impl Bill {
    fn new(shared: &Arc<Shared>, api: SimApi, model: String, request_id: String) -> Bill {
        Bill { shared: shared.clone(), api, model, request_id, billed: Billed::Nothing }
    }

    /// A whole (non-streaming) answer: recorded now.
    fn whole(mut self, usage: SimUsage, complete: bool) {
        self.billed = Billed::Whole { usage, complete };
    }

    /// A stream begins: its input is billed, its output as its deltas go out.
    fn stream(mut self, usage: SimUsage) -> Bill {
        self.billed = Billed::Stream { usage, words: 0, done: false };
        self
    }

    /// An event of the stream was handed to the connection.
    fn sent(&mut self, event_words: u64, last: bool) {
        if let Billed::Stream { words, done, .. } = &mut self.billed {
            *words += event_words;
            *done |= last;
        }
    }

    fn line_usage(&self) -> (SimUsage, bool) {
        match self.billed {
            Billed::Nothing => (SimUsage::default(), false),
            Billed::Whole { usage, complete } => (usage, complete),
            Billed::Stream { usage, done: true, .. } => (usage, true),
            Billed::Stream { usage, words, done: false } => {
                // Reasoning precedes the text: billed in full once a delta went out.
                let reasoning = if words > 0 { usage.reasoning } else { 0 };
                (SimUsage { output: words + reasoning, reasoning, ..usage }, false)
            }
        }
    }
}

impl Drop for Bill {
    fn drop(&mut self) {
        let (usage, complete) = self.line_usage();
        let line = InvoiceLine {
            api: self.api,
            model: std::mem::take(&mut self.model),
            usage,
            complete,
            request_id: std::mem::take(&mut self.request_id),
        };
        // Never panic in a drop (a test that failed holding the lock poisons it).
        self.shared.invoice.lock().unwrap_or_else(PoisonError::into_inner).push(line);
    }
}

// ---------------------------------------------------------------------------
// Bodies sent frame by frame

/// Counts a stream as open while its body is alive.
struct OpenStream(Arc<Shared>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Copy)]
enum Stop {
    /// The body fails: hyper cuts the connection, the body never completes.
    Fail,
    /// Nothing more is sent, the connection stays open.
    Stall,
}

/// A body of frames, each its own write, `drip` apart, stopped at frame `stop.0`;
/// each frame with the output words it carries, counted into `bill` as it is
/// handed to the connection.
struct Feed {
    frames: std::vec::IntoIter<(Bytes, u64)>,
    sent: usize,
    drip: Duration,
    stop: Option<(usize, Stop)>,
    done: bool,
    // Dropped before `_open` (declaration order): a stream's line is recorded
    // before it stops counting as open.
    bill: Option<Bill>,
    /// Where the frames handed over are recorded: the shared state, the request id.
    record: Option<(Arc<Shared>, String)>,
    _open: Option<OpenStream>,
}

impl Feed {
    fn new(
        frames: Vec<(Bytes, u64)>,
        drip: Duration,
        stop: Option<(usize, Stop)>,
        bill: Option<Bill>,
        open: Option<OpenStream>,
    ) -> Feed {
        Feed { frames: frames.into_iter(), sent: 0, drip, stop, done: false, bill, record: None, _open: open }
    }

    fn body(self) -> Body {
        Body::from_stream(futures::stream::unfold(self, |mut feed| async move {
            if feed.done {
                return None;
            }
            if let Some((at, stop)) = feed.stop
                && feed.sent == at
            {
                match stop {
                    Stop::Stall => std::future::pending::<()>().await,
                    Stop::Fail => {
                        // Long enough for what was sent to leave before the cut.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        feed.done = true;
                        return Some((Err(io::Error::other("simulated truncation")), feed));
                    }
                }
            }
            let (frame, words) = feed.frames.next()?;
            if feed.sent > 0 && !feed.drip.is_zero() {
                tokio::time::sleep(feed.drip).await;
            }
            feed.sent += 1;
            // Counted as it is handed over: dropped while waiting, it was not sent.
            let last = feed.frames.len() == 0;
            if let Some(bill) = &mut feed.bill {
                bill.sent(words, last);
            }
            if let Some((shared, id)) = &feed.record {
                let mut sent = shared.sent.lock().unwrap_or_else(PoisonError::into_inner);
                sent.entry(id.clone()).or_default().extend_from_slice(&frame);
            }
            Some((Ok::<_, io::Error>(frame), feed))
        }))
    }
}

// ---------------------------------------------------------------------------
// Usage

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Calls `f` on every input text of a body (see the module doc); returns the
/// count of numbers (token ids) met.
fn walk_inputs(body: &Value, f: &mut impl FnMut(&str)) -> u64 {
    fn walk(value: &Value, f: &mut impl FnMut(&str)) -> u64 {
        match value {
            Value::String(s) => {
                f(s);
                0
            }
            Value::Number(_) => 1,
            Value::Array(items) => items.iter().map(|item| walk(item, f)).sum(),
            Value::Object(map) => ["content", "text"].iter().filter_map(|key| map.get(*key)).map(|v| walk(v, f)).sum(),
            _ => 0,
        }
    }
    ["messages", "system", "instructions", "prompt", "input"]
        .iter()
        .filter_map(|key| body.get(*key))
        .map(|value| walk(value, f))
        .sum()
}

fn is_reasoning(model: &str) -> bool {
    let mut chars = model.chars();
    (chars.next() == Some('o') && chars.next().is_some_and(|c| c.is_ascii_digit())) || model.contains("reason")
}

fn reply_text(body: &Value, model: &str) -> String {
    let full = format!("Hello from the simulator, this is {model}.");
    let all: Vec<&str> = full.split_whitespace().collect();
    let max = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|key| body.get(*key).and_then(Value::as_u64))
        .map_or(all.len(), |max| usize::try_from(max).unwrap_or(usize::MAX).clamp(1, all.len()));
    all[..max].join(" ")
}

/// What the simulator reports for this request body at this API (see the module
/// doc). The model is the body's `model` without its prefixes.
pub fn expected_usage(api: SimApi, body: &Value) -> SimUsage {
    let model = Knobs::parse(body_model(body).unwrap_or("unknown")).model;
    usage_for(api, body, &model)
}

fn usage_for(api: SimApi, body: &Value, model: &str) -> SimUsage {
    let (mut text_words, mut cached) = (0, false);
    let token_ids = walk_inputs(body, &mut |text| {
        text_words += words(text);
        cached |= text
            .split_whitespace()
            .any(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).eq_ignore_ascii_case("cached"));
    });
    let prompt = 5 + text_words + token_ids;
    let output = words(&reply_text(body, model));
    match api {
        SimApi::Embeddings => SimUsage { input: prompt, ..SimUsage::default() },
        // gpt-image-1's output for one square image at low quality.
        SimApi::Images => SimUsage { input: prompt, output: IMAGE_TOKENS, ..SimUsage::default() },
        SimApi::Messages => SimUsage {
            input: prompt,
            cached_input: if cached { 7 } else { 0 },
            cache_write: if cached { 3 } else { 0 },
            output,
            reasoning: 0,
        },
        SimApi::ChatCompletions | SimApi::Completions | SimApi::Responses => {
            let cached_tokens = if cached { prompt / 2 } else { 0 };
            let reasoning = if is_reasoning(model) { 4 } else { 0 };
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
        "prompt_tokens_details": {"cached_tokens": u.cached_input, "cache_write_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
}

fn responses_usage(u: SimUsage) -> Value {
    let input = u.input + u.cached_input;
    json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": u.cached_input, "cache_write_tokens": 0},
        "output_tokens": u.output, "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": input + u.output})
}

fn anthropic_usage(u: SimUsage) -> Value {
    json!({"input_tokens": u.input, "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cached_input, "output_tokens": u.output, "service_tier": "standard"})
}

// ---------------------------------------------------------------------------
// Answers

/// A Responses API `response` object.
fn response_object(body: &Value, model: &str, id: u64, output: Value, usage: Option<Value>) -> Value {
    let completed = usage.is_some();
    let created = unix_now();
    json!({"id": format!("resp_sim{id}"), "object": "response", "created_at": created,
        "status": if completed { "completed" } else { "in_progress" },
        "completed_at": if completed { json!(created) } else { Value::Null },
        "background": false, "error": null, "incomplete_details": null,
        "instructions": body.get("instructions").cloned().unwrap_or(Value::Null),
        "max_output_tokens": body.get("max_output_tokens").cloned().unwrap_or(Value::Null),
        "max_tool_calls": null, "metadata": {}, "model": model, "output": output,
        "parallel_tool_calls": true, "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null}, "service_tier": "default", "store": true,
        "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto", "tools": [], "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled",
        "usage": usage, "user": null})
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn output_message(id: u64, status: &str, content: Value) -> Value {
    json!({"type": "message", "id": format!("msg_sim{id}"), "status": status, "role": "assistant", "content": content})
}

/// A whole (non-streaming) answer.
fn whole(api: SimApi, body: &Value, model: &str, text: &str, u: SimUsage, id: u64) -> Value {
    let created = unix_now();
    match api {
        SimApi::ChatCompletions => json!({"id": format!("chatcmpl-sim{id}"), "object": "chat.completion",
            "created": created, "model": model, "system_fingerprint": "fp_sim", "service_tier": "default",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null,
                "annotations": []}, "logprobs": null, "finish_reason": "stop"}],
            "usage": openai_usage(u)}),
        SimApi::Completions => json!({"id": format!("cmpl-sim{id}"), "object": "text_completion",
            "created": created, "model": model, "system_fingerprint": "fp_sim",
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": "stop"}],
            "usage": openai_usage(u)}),
        SimApi::Responses => {
            let output = json!([output_message(id, "completed", json!([output_text(text)]))]);
            response_object(body, model, id, output, Some(responses_usage(u)))
        }
        SimApi::Messages => json!({"id": format!("msg_sim{id}"), "type": "message", "role": "assistant",
            "model": model, "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "stop_sequence": null, "usage": anthropic_usage(u)}),
        SimApi::Embeddings => embeddings(body, model, u),
        SimApi::Images => image(u),
    }
}

/// The output tokens of one generated image.
pub const IMAGE_TOKENS: u64 = 272;

/// An image generation answer in gpt-image-1's shape: a tiny base64 image and the
/// token usage (`input_tokens_details` splits text from image input).
fn image(u: SimUsage) -> Value {
    json!({"created": 1_700_000_000, "data": [{"b64_json": "iVBORw0KGgo="}],
        "usage": {"input_tokens": u.input, "output_tokens": u.output, "total_tokens": u.input + u.output,
                  "input_tokens_details": {"text_tokens": u.input, "image_tokens": 0}}})
}

fn embeddings(body: &Value, model: &str, u: SimUsage) -> Value {
    use base64::Engine as _;
    let inputs = match body.get("input") {
        Some(Value::Array(items)) if !items.first().is_some_and(Value::is_number) => items.len(),
        _ => 1,
    };
    let dimensions = body.get("dimensions").and_then(Value::as_u64).unwrap_or(8) as usize;
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = (0..inputs)
        .map(|index| {
            let vector: Vec<f32> = (0..dimensions).map(|i| ((index * 7 + i) % 10) as f32 / 10.0 - 0.45).collect();
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": u.input, "total_tokens": u.input}})
}

/// An image generation call's output item, its `result` `bytes` of base64 (what the
/// Responses API's `image_generation` tool returns: gpt-image-1's images are
/// megabytes of base64 PNG).
fn image_output(id: u64, bytes: usize) -> Value {
    json!({"type": "image_generation_call", "id": format!("ig_sim{id}"), "status": "completed",
        "background": "opaque", "output_format": "png", "quality": "low", "size": "1024x1024",
        "revised_prompt": "a lighthouse at dusk", "result": base64_text(bytes)})
}

/// `bytes` characters of base64 (not an image, but the same alphabet and weight).
fn base64_text(bytes: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..bytes).map(|i| ALPHABET[(i * 7 + i / 64) % 64] as char).collect()
}

/// A Responses stream with an image generated after its text, as the
/// `image_generation` tool streams it: a partial image and the finished item, each an
/// event of `bytes` of base64, before `response.completed`, whose `output` carries
/// the image again (so that event is as large) with the same usage.
fn with_image(events: &mut Vec<Event>, body: &Value, model: &str, u: SimUsage, id: u64, bytes: usize) {
    let Some(completed) = events.pop() else { return };
    let mut sequence = events.len();
    let mut event = |name: &'static str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(sequence);
        sequence += 1;
        named_event(name, &data)
    };
    let item_id = format!("ig_sim{id}");
    let image = image_output(id, bytes);
    let added = json!({"type": "image_generation_call", "id": item_id, "status": "in_progress"});
    events.push(event("response.output_item.added", json!({"output_index": 1, "item": added})));
    events.push(event("response.image_generation_call.generating", json!({"output_index": 1, "item_id": item_id})));
    events.push(event(
        "response.image_generation_call.partial_image",
        json!({"output_index": 1, "item_id": item_id, "partial_image_index": 0, "partial_image_b64": base64_text(bytes)}),
    ));
    events.push(event("response.image_generation_call.completed", json!({"output_index": 1, "item_id": item_id})));
    events.push(event("response.output_item.done", json!({"output_index": 1, "item": image})));
    let text = reply_text(body, model);
    let message = output_message(id, "completed", json!([output_text(&text)]));
    let output = json!([message, image_output(id, bytes)]);
    let done = response_object(body, model, id, output, Some(responses_usage(u)));
    events.push(event("response.completed", json!({"response": done})));
    drop(completed);
}

/// An SSE event as sent: its `event:` name if any, the whole text, and the output
/// words it carries (a text delta's; 0 for the others).
struct Event {
    name: Option<&'static str>,
    frame: String,
    words: u64,
}

fn data_event(data: &Value) -> Event {
    Event { name: None, frame: format!("data: {data}\n\n"), words: 0 }
}

fn named_event(name: &'static str, data: &Value) -> Event {
    Event { name: Some(name), frame: format!("event: {name}\ndata: {data}\n\n"), words: 0 }
}

/// A text delta event: it carries the words of `piece`.
fn delta(event: Event, piece: &str) -> Event {
    Event { words: words(piece), ..event }
}

/// The reply in stream deltas of one word each (the later ones with their
/// leading space): one delta, one output token.
fn pieces(text: &str) -> Vec<String> {
    text.split(' ').enumerate().map(|(i, word)| if i == 0 { word.to_string() } else { format!(" {word}") }).collect()
}

/// The events of a stream, and the index of its first text delta.
fn stream_events(
    api: SimApi,
    body: &Value,
    model: &str,
    text: &str,
    u: SimUsage,
    include_usage: bool,
    id: u64,
) -> (Vec<Event>, usize) {
    let created = unix_now();
    match api {
        SimApi::ChatCompletions | SimApi::Completions => {
            let chat = api == SimApi::ChatCompletions;
            let (object, id) = if chat {
                ("chat.completion.chunk", format!("chatcmpl-sim{id}"))
            } else {
                ("text_completion", format!("cmpl-sim{id}"))
            };
            let chunk = |choices: Value| {
                let mut chunk = json!({"id": id, "object": object, "created": created, "model": model,
                    "system_fingerprint": "fp_sim", "choices": choices});
                if include_usage {
                    chunk["usage"] = Value::Null;
                }
                data_event(&chunk)
            };
            let choice = |content: Option<&str>, finish: Option<&str>| {
                if chat {
                    let delta = match content {
                        Some(c) => json!({"content": c}),
                        None => json!({}),
                    };
                    json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}])
                } else {
                    json!([{"index": 0, "text": content.unwrap_or(""), "logprobs": null, "finish_reason": finish}])
                }
            };
            let mut events = vec![];
            if chat {
                events.push(chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null},
                        "logprobs": null, "finish_reason": null}])));
            }
            let first_delta = events.len();
            for piece in pieces(text) {
                events.push(delta(chunk(choice(Some(&piece), None)), &piece));
            }
            events.push(chunk(choice(None, Some("stop"))));
            if include_usage {
                let last = json!({"id": id, "object": object, "created": created, "model": model,
                    "system_fingerprint": "fp_sim", "choices": [], "usage": openai_usage(u)});
                events.push(data_event(&last));
            }
            events.push(Event { name: None, frame: "data: [DONE]\n\n".to_string(), words: 0 });
            (events, first_delta)
        }
        SimApi::Responses => {
            let mut sequence = 0;
            let mut event = |name: &'static str, mut data: Value| {
                data["type"] = json!(name);
                data["sequence_number"] = json!(sequence);
                sequence += 1;
                named_event(name, &data)
            };
            let item_id = format!("msg_sim{id}");
            let at = |mut v: Value| {
                v["item_id"] = json!(item_id);
                v["output_index"] = json!(0);
                v["content_index"] = json!(0);
                v
            };
            let in_progress = response_object(body, model, id, json!([]), None);
            let mut events = vec![
                event("response.created", json!({"response": in_progress})),
                event("response.in_progress", json!({"response": in_progress})),
                event(
                    "response.output_item.added",
                    json!({"output_index": 0, "item": output_message(id, "in_progress", json!([]))}),
                ),
                event("response.content_part.added", at(json!({"part": output_text("")}))),
            ];
            let first_delta = events.len();
            for piece in pieces(text) {
                let event = event("response.output_text.delta", at(json!({"delta": piece, "logprobs": []})));
                events.push(delta(event, &piece));
            }
            let done_item = output_message(id, "completed", json!([output_text(text)]));
            events.push(event("response.output_text.done", at(json!({"text": text, "logprobs": []}))));
            events.push(event("response.content_part.done", at(json!({"part": output_text(text)}))));
            events.push(event("response.output_item.done", json!({"output_index": 0, "item": done_item})));
            let completed = response_object(body, model, id, json!([done_item]), Some(responses_usage(u)));
            events.push(event("response.completed", json!({"response": completed})));
            (events, first_delta)
        }
        SimApi::Messages => {
            let start_usage = json!({"input_tokens": u.input, "cache_creation_input_tokens": u.cache_write,
                "cache_read_input_tokens": u.cached_input, "output_tokens": 1, "service_tier": "standard"});
            let message = json!({"id": format!("msg_sim{id}"), "type": "message", "role": "assistant",
                "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage});
            let mut events = vec![
                named_event("message_start", &json!({"type": "message_start", "message": message})),
                named_event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                ),
                named_event("ping", &json!({"type": "ping"})),
            ];
            let first_delta = events.len();
            for piece in pieces(text) {
                let event = named_event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
                );
                events.push(delta(event, &piece));
            }
            events.push(named_event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
            events.push(named_event(
                "message_delta",
                &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                    "usage": {"output_tokens": u.output}}),
            ));
            events.push(named_event("message_stop", &json!({"type": "message_stop"})));
            (events, first_delta)
        }
        SimApi::Embeddings | SimApi::Images => (vec![], 0),
    }
}
