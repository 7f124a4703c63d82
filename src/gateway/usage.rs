//! The usage a provider reports, read from its answer: a JSON body, or the
//! events of an SSE stream as they pass. Pure: bytes and strings in, counts out.
//!
//! The eight token types are disjoint, so their sum is the request's total:
//! - `input`: text input not read from a cache (OpenAI: `prompt_tokens` minus
//!   `cached_tokens` and `audio_tokens`; Anthropic: `input_tokens`, which already
//!   excludes cache reads and writes);
//! - `cached_input`: input read from the provider's prompt cache (OpenAI
//!   `cached_tokens`, text and audio alike; Anthropic `cache_read_input_tokens`);
//! - `cache_write`: input written to the 5-minute cache (Anthropic
//!   `cache_creation.ephemeral_5m_input_tokens`; all of
//!   `cache_creation_input_tokens` when the split is absent);
//! - `cache_write_1h`: input written to the 1-hour cache (Anthropic
//!   `cache_creation.ephemeral_1h_input_tokens`);
//! - `audio_input`: audio input not read from a cache (OpenAI
//!   `prompt_tokens_details.audio_tokens`, `input_tokens_details.audio_tokens` in
//!   the Responses API);
//! - `output`: generated text tokens that are not reasoning (OpenAI reports
//!   reasoning and audio inside `completion_tokens`; they are taken out here);
//! - `reasoning`: OpenAI's `reasoning_tokens` (Anthropic reports thinking inside
//!   `output_tokens` and does not split it, so it stays in `output`);
//! - `audio_output`: OpenAI `completion_tokens_details.audio_tokens`.
//!
//! Requests to the provider's own tools are counts, not tokens, and kept apart
//! ([`ServerTools`]): Anthropic's `server_tool_use.web_search_requests`. OpenAI's
//! Responses API does not report its web searches in the usage.
//!
//! A stream reports the same fields: Anthropic in `message_start` and each
//! `message_delta` (cumulative), OpenAI in the usage chunk or `response.completed`.
//!
//! Answers and events are read as they pass ([`super::json_scan`]): only the model, the
//! usage and the few fields that say what an event is are kept, so an answer or
//! event of any size (a 20 MiB embeddings batch, a Responses event carrying a
//! base64 image) costs a few hundred bytes to meter.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::json_scan::{Captured, Paths, ScanError, Scanned, Scanner};

/// The provider APIs the gateway meters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Messages,
    /// OpenAI image generation by a model that reports token usage (`gpt-image-*`).
    Images,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub cache_write_1h: u64,
    pub audio_input: u64,
    pub output: u64,
    pub reasoning: u64,
    pub audio_output: u64,
    /// Requests to the provider's tools: not tokens, so not in `kinds` or `total`.
    pub server_tools: ServerTools,
}

impl Usage {
    /// Each token type with its metric label.
    pub fn kinds(&self) -> [(&'static str, u64); 8] {
        [
            ("input", self.input),
            ("cached_input", self.cached_input),
            ("cache_write", self.cache_write),
            ("cache_write_1h", self.cache_write_1h),
            ("audio_input", self.audio_input),
            ("output", self.output),
            ("reasoning", self.reasoning),
            ("audio_output", self.audio_output),
        ]
    }

    /// All tokens, input and output.
    pub fn total(&self) -> u64 {
        self.kinds().iter().fold(0, |sum, (_, n)| sum.saturating_add(*n))
    }

    /// All input tokens: text and audio, cached or not, written to a cache or not
    /// (what a long-context price threshold counts).
    pub fn total_input(&self) -> u64 {
        [self.input, self.cached_input, self.cache_write, self.cache_write_1h, self.audio_input]
            .into_iter()
            .fold(0, u64::saturating_add)
    }
}

/// Requests to tools the provider runs and bills apart from tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerTools {
    pub web_search_requests: u64,
}

impl ServerTools {
    /// Each request count with its metric label.
    pub fn kinds(&self) -> [(&'static str, u64); 1] {
        [("web_search", self.web_search_requests)]
    }
}

/// What one answer said: its model and its usage, each when present.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    pub model: Option<String>,
    pub usage: Option<Usage>,
}

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("the provider's answer is not JSON: {0}")]
    NotJson(#[from] ScanError),
}

/// OpenAI's usage object, in all its shapes (chat and completions use
/// prompt/completion names, the Responses API input/output names).
#[derive(Deserialize, Default)]
#[serde(default)]
struct OpenaiUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    prompt_tokens_details: Option<Details>,
    completion_tokens_details: Option<Details>,
    input_tokens_details: Option<Details>,
    output_tokens_details: Option<Details>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Details {
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    audio_tokens: Option<u64>,
}

impl OpenaiUsage {
    /// Cached, audio and reasoning tokens are parts of the prompt and completion
    /// counts: each is taken out of what remains (bounded by it, so a provider's
    /// odd figures cannot make the parts exceed the whole).
    fn usage(&self) -> Usage {
        let prompt = self.prompt_tokens.or(self.input_tokens).unwrap_or(0);
        let completion = self.completion_tokens.or(self.output_tokens).unwrap_or(0);
        let input_details = self.prompt_tokens_details.as_ref().or(self.input_tokens_details.as_ref());
        let output_details = self.completion_tokens_details.as_ref().or(self.output_tokens_details.as_ref());
        let part = |details: Option<&Details>, field: fn(&Details) -> Option<u64>, of: u64| {
            details.and_then(field).unwrap_or(0).min(of)
        };
        let cached = part(input_details, |d| d.cached_tokens, prompt);
        let audio_input = part(input_details, |d| d.audio_tokens, prompt - cached);
        let reasoning = part(output_details, |d| d.reasoning_tokens, completion);
        let audio_output = part(output_details, |d| d.audio_tokens, completion - reasoning);
        Usage {
            input: prompt - cached - audio_input,
            cached_input: cached,
            audio_input,
            output: completion - reasoning - audio_output,
            reasoning,
            audio_output,
            ..Usage::default()
        }
    }
}

/// Anthropic's usage object (`message_start` has all of it, `message_delta` the
/// cumulative output so far, and sometimes the input figures again).
#[derive(Deserialize, Default)]
#[serde(default)]
struct AnthropicUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    /// The cache writes by lifetime; their sum is `cache_creation_input_tokens`.
    cache_creation: Option<CacheCreation>,
    server_tool_use: Option<AnthropicServerToolUse>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CacheCreation {
    ephemeral_5m_input_tokens: Option<u64>,
    ephemeral_1h_input_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AnthropicServerToolUse {
    web_search_requests: Option<u64>,
}

impl AnthropicUsage {
    /// Applies this report over what was known: present fields replace (every
    /// Anthropic figure is cumulative), absent ones keep their value. Cache writes
    /// come from the split by lifetime when it is given; otherwise the total less
    /// the 1-hour writes already known is the 5-minute part (all of it, in a
    /// single report).
    fn apply(&self, usage: &mut Usage) {
        if let Some(n) = self.input_tokens {
            usage.input = n;
        }
        if let Some(n) = self.cache_read_input_tokens {
            usage.cached_input = n;
        }
        let split = self
            .cache_creation
            .as_ref()
            .filter(|c| c.ephemeral_5m_input_tokens.is_some() || c.ephemeral_1h_input_tokens.is_some());
        match (split, self.cache_creation_input_tokens) {
            (Some(split), _) => {
                usage.cache_write = split.ephemeral_5m_input_tokens.unwrap_or(0);
                usage.cache_write_1h = split.ephemeral_1h_input_tokens.unwrap_or(0);
            }
            (None, Some(n)) => usage.cache_write = n.saturating_sub(usage.cache_write_1h),
            (None, None) => {}
        }
        if let Some(n) = self.output_tokens {
            usage.output = n;
        }
        if let Some(n) = self.server_tool_use.as_ref().and_then(|s| s.web_search_requests) {
            usage.server_tools.web_search_requests = n;
        }
    }
}

/// A reported model name; an empty one is none.
fn model_name(model: Option<&str>) -> Option<String> {
    model.filter(|m| !m.is_empty()).map(str::to_string)
}

/// A captured string (or null): `Err` when it is another type.
fn string_of(captured: &Captured) -> Result<Option<String>, ()> {
    match captured {
        Captured::Absent => Ok(None),
        Captured::Value(raw) => serde_json::from_slice::<Option<String>>(raw).map_err(|_| ()),
        Captured::TooLarge => Err(()),
    }
}

/// Reads a usage object of `api`'s kind from its raw JSON; `None` when it is absent,
/// null, not an object, or of the wrong shape.
fn usage_of(api: Api, captured: &Captured) -> Option<Usage> {
    let raw = captured.value().filter(|raw| raw.first() == Some(&b'{'))?;
    match api {
        Api::Messages => {
            let reported = serde_json::from_slice::<AnthropicUsage>(raw).ok()?;
            let mut usage = Usage::default();
            reported.apply(&mut usage);
            Some(usage)
        }
        _ => serde_json::from_slice::<OpenaiUsage>(raw).ok().map(|u| u.usage()),
    }
}

/// What a whole (non-streaming) answer's scan keeps.
const BODY_PATHS: Paths = &[&["model"], &["usage"]];
const BODY_MODEL: usize = 0;
const BODY_USAGE: usize = 1;

/// Reads a whole (non-streaming) JSON answer as it passes, keeping only its model and
/// usage ([`super::json_scan`]): however large the answer, it holds at most those two values.
#[derive(Debug)]
pub struct BodyMeter {
    api: Api,
    scanner: Scanner,
}

impl BodyMeter {
    pub fn new(api: Api) -> Self {
        Self { api, scanner: Scanner::new(BODY_PATHS) }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.scanner.push(bytes);
    }

    /// Bytes read so far.
    pub fn read(&self) -> u64 {
        self.scanner.read()
    }

    /// Bytes held beyond the answer's own (the values kept so far).
    pub fn held(&self) -> usize {
        self.scanner.held()
    }

    /// The answer's model and usage, once it is read whole.
    pub fn finish(self) -> Result<Reported, UsageError> {
        let scanned = self.scanner.finish()?;
        let model = string_of(scanned.get(BODY_MODEL)).ok().flatten();
        Ok(Reported { model: model_name(model.as_deref()), usage: usage_of(self.api, scanned.get(BODY_USAGE)) })
    }
}

impl std::io::Write for BodyMeter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.push(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The model and usage of a whole (non-streaming) JSON answer.
pub fn from_body(api: Api, body: &[u8]) -> Result<Reported, UsageError> {
    let mut meter = BodyMeter::new(api);
    meter.push(body);
    meter.finish()
}

/// What the gateway does with one stream event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Pass it to the client.
    Forward,
    /// OpenAI's usage-only chunk (`choices: []` with a usage): hidden from a client
    /// that did not ask for it.
    UsageOnly,
}

/// The fields of a stream event the meter reads. Everything else, above all the
/// generated text and images, is skipped by the scan without being kept.
const EVENT_PATHS: Paths = &[
    &["type"],
    &["model"],
    &["usage"],
    // Chat completions: whether it is empty (the usage-only last chunk), and whether
    // a choice carries generated text.
    &["choices"],
    // Responses: the response with its model and usage.
    &["response", "model"],
    &["response", "usage"],
    // Anthropic `message_start`: the message with its model and input usage.
    &["message", "model"],
    &["message", "usage"],
];
const TYPE: usize = 0;
const MODEL: usize = 1;
const USAGE: usize = 2;
const CHOICES: usize = 3;
const RESPONSE_MODEL: usize = 4;
const RESPONSE_USAGE: usize = 5;
const MESSAGE_MODEL: usize = 6;
const MESSAGE_USAGE: usize = 7;

/// The data of one stream event, read as it arrives (an event can be megabytes: a
/// Responses image generation sends its base64 images in events).
#[derive(Debug)]
pub struct EventData {
    scanner: Scanner,
    /// The first bytes, to recognise `[DONE]`.
    head: Vec<u8>,
}

/// Long enough for `[DONE]` with some whitespace around it.
const HEAD: usize = 16;

impl Default for EventData {
    fn default() -> Self {
        Self { scanner: Scanner::new(EVENT_PATHS), head: Vec::new() }
    }
}

impl EventData {
    pub fn push(&mut self, bytes: &[u8]) {
        let room = HEAD.saturating_sub(self.head.len()).min(bytes.len());
        self.head.extend_from_slice(&bytes[..room]);
        self.scanner.push(bytes);
    }

    /// Bytes held beyond the event's own (the values kept so far).
    pub fn held(&self) -> usize {
        self.scanner.held() + self.head.capacity()
    }

    fn is_done_marker(&self) -> bool {
        self.scanner.read() <= HEAD as u64 && self.head.trim_ascii() == b"[DONE]"
    }
}

/// One choice of a chat or completions chunk: only whether it carries text.
#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    /// Completions.
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
}

impl Choice<'_> {
    fn generated(&self) -> bool {
        let some = |t: &Option<Cow<str>>| t.as_ref().is_some_and(|t| !t.is_empty());
        some(&self.text)
            || self.delta.as_ref().is_some_and(|d| some(&d.content) || some(&d.refusal) || d.tool_calls.is_some())
    }
}

/// The `choices` of a chunk, as the meter needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choices {
    Absent,
    Empty,
    /// Present, not empty, and whether a choice carries generated content.
    Some {
        generated: bool,
    },
}

impl Choices {
    /// `Err` when `choices` is not a list of choices.
    fn of(captured: &Captured) -> Result<Choices, ()> {
        match captured {
            Captured::Absent => Ok(Choices::Absent),
            // Past the bound a chunk's choices carry generated content, surely.
            Captured::TooLarge => Ok(Choices::Some { generated: true }),
            Captured::Value(raw) => match serde_json::from_slice::<Option<Vec<Choice>>>(raw).map_err(|_| ())? {
                None => Ok(Choices::Absent),
                Some(list) if list.is_empty() => Ok(Choices::Empty),
                Some(list) => Ok(Choices::Some { generated: list.iter().any(Choice::generated) }),
            },
        }
    }
}

/// The fields of one event, each checked for its type: an event with one of the
/// wrong type changes nothing.
struct EventFields {
    kind: Option<String>,
    model: Option<String>,
    choices: Choices,
    response_model: Option<String>,
    message_model: Option<String>,
}

impl EventFields {
    fn of(scanned: &Scanned) -> Result<EventFields, ()> {
        if !scanned.object {
            return Err(());
        }
        Ok(EventFields {
            kind: string_of(scanned.get(TYPE))?,
            model: string_of(scanned.get(MODEL))?,
            choices: Choices::of(scanned.get(CHOICES))?,
            // A response or message of another shape has no model.
            response_model: string_of(scanned.get(RESPONSE_MODEL)).ok().flatten(),
            message_model: string_of(scanned.get(MESSAGE_MODEL)).ok().flatten(),
        })
    }
}

/// Follows one SSE stream's events and keeps the latest usage it reported.
#[derive(Debug)]
pub struct StreamMeter {
    api: Api,
    model: Option<String>,
    usage: Usage,
    reported: bool,
    complete: bool,
    /// Events that carried generated content (a chat chunk with choices, a Responses
    /// `*.delta`, an Anthropic `content_block_delta`): the output passed so far when
    /// the stream is cut before its usage (OpenAI streams one token per chunk).
    content_events: u64,
}

impl StreamMeter {
    pub fn new(api: Api) -> Self {
        Self { api, model: None, usage: Usage::default(), reported: false, complete: false, content_events: 0 }
    }

    /// The usage of a stream cut before its end: what was reported, with the
    /// input (from `prompt_tokens`, called only when no input was reported) and the
    /// output (the content events passed) estimated where the report is missing or
    /// lower; and whether anything was estimated.
    pub fn cut_usage(&self, prompt_tokens: impl FnOnce() -> u64) -> (Usage, bool) {
        let mut usage = self.usage;
        let mut estimated = false;
        if usage.total_input() == 0 {
            usage.input = prompt_tokens();
            estimated = usage.input > 0;
        }
        let output = usage.output + usage.reasoning + usage.audio_output;
        if self.content_events > output {
            usage.output += self.content_events - output;
            estimated = true;
        }
        (usage, estimated)
    }

    /// Reads one event (its `event:` name, empty when none, and its data).
    /// Data that is not JSON is passed on and changes nothing.
    pub fn event(&mut self, event: &str, data: &str) -> EventKind {
        let mut read = EventData::default();
        read.push(data.as_bytes());
        self.event_read(event, read)
    }

    /// Reads one event whose data was read as it arrived.
    pub fn event_read(&mut self, event: &str, data: EventData) -> EventKind {
        if data.is_done_marker() {
            self.complete = true;
            return EventKind::Forward;
        }
        let Ok(scanned) = data.scanner.finish() else { return EventKind::Forward };
        let Ok(fields) = EventFields::of(&scanned) else { return EventKind::Forward };
        match self.api {
            Api::Messages => self.anthropic(&fields, &scanned),
            Api::Responses => self.responses(event, &fields, &scanned),
            _ => return self.openai_chunk(&fields, &scanned),
        }
        EventKind::Forward
    }

    /// Chat completions and completions chunks: the usage comes in a last chunk
    /// (`stream_options.include_usage`), whose `choices` is empty.
    fn openai_chunk(&mut self, fields: &EventFields, scanned: &Scanned) -> EventKind {
        if self.model.is_none() {
            self.model = model_name(fields.model.as_deref());
        }
        if matches!(fields.choices, Choices::Some { generated: true }) {
            self.content_events += 1;
        }
        let Some(usage) = usage_of(self.api, scanned.get(USAGE)) else {
            return EventKind::Forward;
        };
        self.usage = usage;
        self.reported = true;
        if fields.choices == Choices::Empty { EventKind::UsageOnly } else { EventKind::Forward }
    }

    /// The Responses API: `response.completed` (or `.incomplete`/`.failed`)
    /// carries the response with its usage.
    fn responses(&mut self, event: &str, fields: &EventFields, scanned: &Scanned) {
        let kind = fields.kind.as_deref().unwrap_or(event);
        if kind.ends_with(".delta") {
            self.content_events += 1;
        }
        self.take_model(fields.response_model.as_deref());
        if let Some(usage) = usage_of(self.api, scanned.get(RESPONSE_USAGE)) {
            self.usage = usage;
            self.reported = true;
        }
        if kind == "response.completed" {
            self.complete = true;
        }
    }

    /// Anthropic: `message_start` has the input (and one output token so far),
    /// each `message_delta` the cumulative output; `message_stop` ends it.
    fn anthropic(&mut self, fields: &EventFields, scanned: &Scanned) {
        match fields.kind.as_deref() {
            Some("message_start") => {
                self.take_model(fields.message_model.as_deref());
                self.apply_anthropic(scanned.get(MESSAGE_USAGE));
            }
            Some("message_delta") => self.apply_anthropic(scanned.get(USAGE)),
            Some("content_block_delta") => self.content_events += 1,
            Some("message_stop") => self.complete = true,
            _ => {}
        }
    }

    fn apply_anthropic(&mut self, usage: &Captured) {
        let Some(raw) = usage.value().filter(|raw| raw.first() == Some(&b'{')) else { return };
        let Ok(reported) = serde_json::from_slice::<AnthropicUsage>(raw) else { return };
        reported.apply(&mut self.usage);
        self.reported = true;
    }

    fn take_model(&mut self, model: Option<&str>) {
        if self.model.is_none() {
            self.model = model_name(model);
        }
    }

    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The latest usage reported (zeros when none was).
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Whether any usage was reported.
    pub fn reported(&self) -> bool {
        self.reported
    }

    /// Whether the stream's own end marker arrived (`[DONE]`, `message_stop`,
    /// `response.completed`).
    pub fn complete(&self) -> bool {
        self.complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_chat_usage_splits_cached_and_reasoning() {
        let body = br#"{"model":"o3-mini","usage":{"prompt_tokens":100,"completion_tokens":50,"total_tokens":150,
            "prompt_tokens_details":{"cached_tokens":40},"completion_tokens_details":{"reasoning_tokens":20}}}"#;
        let r = from_body(Api::ChatCompletions, body).unwrap();
        assert_eq!(r.model.as_deref(), Some("o3-mini"));
        let u = r.usage.unwrap();
        assert_eq!(
            u,
            Usage { input: 60, cached_input: 40, cache_write: 0, output: 30, reasoning: 20, ..Usage::default() }
        );
        assert_eq!(u.total(), 150);
    }

    #[test]
    fn embeddings_and_responses_usage() {
        let e = from_body(Api::Embeddings, br#"{"model":"m","usage":{"prompt_tokens":8,"total_tokens":8}}"#).unwrap();
        assert_eq!(e.usage.unwrap(), Usage { input: 8, ..Usage::default() });
        let r = br#"{"model":"gpt-4o","usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":4},
            "output_tokens":7,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":17}}"#;
        let u = from_body(Api::Responses, r).unwrap().usage.unwrap();
        assert_eq!(u, Usage { input: 6, cached_input: 4, cache_write: 0, output: 5, reasoning: 2, ..Usage::default() });
    }

    #[test]
    fn anthropic_usage_keeps_cache_reads_and_writes_apart() {
        let body = br#"{"model":"claude-sonnet-4-5","usage":{"input_tokens":12,"output_tokens":9,
            "cache_creation_input_tokens":3,"cache_read_input_tokens":7}}"#;
        let u = from_body(Api::Messages, body).unwrap().usage.unwrap();
        assert_eq!(
            u,
            Usage { input: 12, cached_input: 7, cache_write: 3, output: 9, reasoning: 0, ..Usage::default() }
        );
    }

    #[test]
    fn absent_null_or_odd_usage_is_none_and_bad_json_an_error() {
        assert_eq!(from_body(Api::ChatCompletions, br#"{"model":"m"}"#).unwrap().usage, None);
        assert_eq!(from_body(Api::ChatCompletions, br#"{"usage":null}"#).unwrap().usage, None);
        assert_eq!(from_body(Api::ChatCompletions, br#"{"usage":{"prompt_tokens":"x"}}"#).unwrap().usage, None);
        assert!(from_body(Api::ChatCompletions, br#"{"id": "x", "usage": {"#).is_err());
        assert_eq!(from_body(Api::ChatCompletions, br#"[1,2]"#).unwrap(), Reported::default());
        // Cached above prompt (a provider bug) cannot underflow.
        let odd = br#"{"usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":5}}}"#;
        assert_eq!(from_body(Api::ChatCompletions, odd).unwrap().usage.unwrap().cached_input, 1);
    }

    #[test]
    fn an_openai_stream_reports_its_last_usage_chunk_as_usage_only() {
        let mut m = StreamMeter::new(Api::ChatCompletions);
        let first = r#"{"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}"#;
        assert_eq!(m.event("", first), EventKind::Forward);
        assert!(!m.reported());
        let last = r#"{"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}}"#;
        assert_eq!(m.event("", last), EventKind::UsageOnly);
        assert!(!m.complete());
        assert_eq!(m.event("", "[DONE]"), EventKind::Forward);
        assert!(m.complete() && m.reported());
        assert_eq!(m.usage(), Usage { input: 9, output: 3, ..Usage::default() });
        assert_eq!(m.model(), Some("gpt-4o-mini"));
        // Not JSON: passed on, nothing changes.
        assert_eq!(m.event("", "{not json"), EventKind::Forward);
    }

    #[test]
    fn stream_events_are_read_without_their_text_and_odd_ones_change_nothing() {
        let mut m = StreamMeter::new(Api::ChatCompletions);
        // An escaped model name (not borrowable from the input) and nested text in the delta.
        let first = r#"{"model":"gpt-4o\u002dmini","choices":[{"delta":{"content":"a \"quoted\" {x:[1]}"}}]}"#;
        assert_eq!(m.event("", first), EventKind::Forward);
        assert_eq!(m.model(), Some("gpt-4o-mini"));
        for odd in [r#""a string""#, "[1,2]", r#"{"choices":"not a list","usage":{"prompt_tokens":1}}"#, "null"] {
            assert_eq!(m.event("", odd), EventKind::Forward, "{odd}");
        }
        assert!(!m.reported(), "nothing counted from events of the wrong shape");
        let last = r#"{"id":"c","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2},"extra":{"deep":[{}]}}"#;
        assert_eq!(m.event("", last), EventKind::UsageOnly);
        assert_eq!(m.usage(), Usage { input: 4, output: 2, ..Usage::default() });
    }

    #[test]
    fn an_anthropic_stream_counts_cumulative_output() {
        let mut m = StreamMeter::new(Api::Messages);
        let start = r#"{"type":"message_start","message":{"model":"claude-haiku-4-5","usage":{"input_tokens":20,
            "cache_read_input_tokens":7,"cache_creation_input_tokens":3,"output_tokens":1}}}"#;
        m.event("message_start", start);
        assert_eq!(
            m.usage(),
            Usage { input: 20, cached_input: 7, cache_write: 3, output: 1, reasoning: 0, ..Usage::default() }
        );
        m.event("content_block_delta", r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"a"}}"#);
        m.event("message_delta", r#"{"type":"message_delta","usage":{"output_tokens":5}}"#);
        m.event("message_delta", r#"{"type":"message_delta","usage":{"output_tokens":11}}"#);
        assert_eq!(m.usage().output, 11);
        assert_eq!(m.usage().input, 20);
        assert!(!m.complete());
        m.event("message_stop", r#"{"type":"message_stop"}"#);
        assert!(m.complete());
        assert_eq!(m.model(), Some("claude-haiku-4-5"));
    }

    #[test]
    fn image_generation_usage_is_read_like_responses_usage() {
        let body = br#"{"created":1,"data":[{"b64_json":"aGk="}],"usage":{"input_tokens":50,"output_tokens":1056,
            "total_tokens":1106,"input_tokens_details":{"text_tokens":50,"image_tokens":0}}}"#;
        let usage = from_body(Api::Images, body).unwrap().usage.unwrap();
        assert_eq!((usage.input, usage.output, usage.total()), (50, 1056, 1106));
    }

    #[test]
    fn a_cut_stream_estimates_what_was_not_reported() {
        let mut m = StreamMeter::new(Api::ChatCompletions);
        m.event("", r#"{"model":"gpt-4o","choices":[{"delta":{"role":"assistant","content":""}}]}"#);
        for word in ["Hello", " from", " the"] {
            m.event("", &format!(r#"{{"model":"gpt-4o","choices":[{{"delta":{{"content":"{word}"}}}}]}}"#));
        }
        // Three chunks of text (the role chunk carries none); the prompt from the tokenizer.
        assert_eq!(m.cut_usage(|| 12), (Usage { input: 12, output: 3, ..Usage::default() }, true));
        // Anthropic reported its input at the start: only the output is raised.
        let mut a = StreamMeter::new(Api::Messages);
        a.event(
            "message_start",
            r#"{"type":"message_start","message":{"usage":{"input_tokens":20,"output_tokens":1}}}"#,
        );
        for _ in 0..4 {
            a.event(
                "content_block_delta",
                r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"a b"}}"#,
            );
        }
        let (usage, estimated) = a.cut_usage(|| unreachable!("the input was reported"));
        assert_eq!((usage.input, usage.output, estimated), (20, 4, true));
        // Nothing passed and nothing to count: nothing estimated.
        assert_eq!(StreamMeter::new(Api::Responses).cut_usage(|| 0), (Usage::default(), false));
    }

    #[test]
    fn a_responses_stream_takes_usage_from_the_completed_response() {
        let mut m = StreamMeter::new(Api::Responses);
        m.event("response.created", r#"{"type":"response.created","response":{"model":"gpt-4o","usage":null}}"#);
        assert!(!m.reported());
        m.event("response.output_text.delta", r#"{"type":"response.output_text.delta","delta":"x"}"#);
        let done = r#"{"type":"response.completed","response":{"model":"gpt-4o","usage":{"input_tokens":5,"output_tokens":2}}}"#;
        assert_eq!(m.event("response.completed", done), EventKind::Forward);
        assert!(m.complete() && m.reported());
        assert_eq!(m.usage(), Usage { input: 5, output: 2, ..Usage::default() });
    }

    #[test]
    fn openai_audio_tokens_are_taken_out_of_text_input_and_output() {
        let body = br#"{"model":"gpt-4o-audio-preview","usage":{"prompt_tokens":100,"completion_tokens":60,
            "prompt_tokens_details":{"cached_tokens":10,"audio_tokens":30},
            "completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":45}}}"#;
        let u = from_body(Api::ChatCompletions, body).unwrap().usage.unwrap();
        let want =
            Usage { input: 60, cached_input: 10, audio_input: 30, output: 15, audio_output: 45, ..Usage::default() };
        assert_eq!(u, want);
        assert_eq!(u.total(), 160, "the parts sum to prompt + completion");
        assert_eq!(u.total_input(), 100);
        // The Responses API reports input audio in input_tokens_details.
        let r = br#"{"usage":{"input_tokens":50,"input_tokens_details":{"cached_tokens":5,"audio_tokens":20},
            "output_tokens":8,"output_tokens_details":{"reasoning_tokens":3}}}"#;
        let u = from_body(Api::Responses, r).unwrap().usage.unwrap();
        let want = Usage { input: 25, cached_input: 5, audio_input: 20, output: 5, reasoning: 3, ..Usage::default() };
        assert_eq!(u, want);
        assert_eq!(u.server_tools, ServerTools::default(), "Responses does not report web searches");
        // Parts larger than what remains are bounded by it: the total never exceeds the reported one.
        let odd = br#"{"usage":{"prompt_tokens":10,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":6,"audio_tokens":9},
            "completion_tokens_details":{"reasoning_tokens":3,"audio_tokens":9}}}"#;
        let u = from_body(Api::ChatCompletions, odd).unwrap().usage.unwrap();
        assert_eq!((u.input, u.cached_input, u.audio_input), (0, 6, 4));
        assert_eq!((u.output, u.reasoning, u.audio_output), (0, 3, 1));
        assert_eq!(u.total(), 14);
    }

    #[test]
    fn anthropic_cache_writes_split_into_5_minute_and_1_hour_and_web_searches_are_counted_apart() {
        let body = br#"{"model":"claude-sonnet-4-5","usage":{"input_tokens":12,"output_tokens":9,
            "cache_creation_input_tokens":30,"cache_read_input_tokens":7,
            "cache_creation":{"ephemeral_5m_input_tokens":10,"ephemeral_1h_input_tokens":20},
            "server_tool_use":{"web_search_requests":3}}}"#;
        let u = from_body(Api::Messages, body).unwrap().usage.unwrap();
        let want = Usage {
            input: 12,
            cached_input: 7,
            cache_write: 10,
            cache_write_1h: 20,
            output: 9,
            server_tools: ServerTools { web_search_requests: 3 },
            ..Usage::default()
        };
        assert_eq!(u, want);
        assert_eq!(u.total(), 58, "web searches are not tokens");
        assert_eq!(u.total_input(), 49);
        assert_eq!(u.server_tools.kinds(), [("web_search", 3)]);
        // Without the split (older API versions) every cache write is a 5-minute one;
        // an empty split or a null server_tool_use changes nothing.
        let body = br#"{"usage":{"input_tokens":1,"output_tokens":1,"cache_creation_input_tokens":30,
            "cache_creation":{},"server_tool_use":null}}"#;
        let u = from_body(Api::Messages, body).unwrap().usage.unwrap();
        assert_eq!((u.cache_write, u.cache_write_1h, u.server_tools.web_search_requests), (30, 0, 0));
    }

    #[test]
    fn an_anthropic_stream_reads_the_cache_split_and_web_searches_from_start_and_deltas() {
        let mut m = StreamMeter::new(Api::Messages);
        let start = r#"{"type":"message_start","message":{"model":"claude-sonnet-4-5","usage":{"input_tokens":20,
            "cache_read_input_tokens":7,"cache_creation_input_tokens":300,"output_tokens":1,
            "cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200}}}}"#;
        m.event("message_start", start);
        assert_eq!((m.usage().cache_write, m.usage().cache_write_1h), (100, 200));
        // A delta repeating the total without the split keeps it; the web searches are cumulative.
        let delta = r#"{"type":"message_delta","usage":{"output_tokens":5,"cache_creation_input_tokens":300,
            "server_tool_use":{"web_search_requests":1}}}"#;
        m.event("message_delta", delta);
        let last =
            r#"{"type":"message_delta","usage":{"output_tokens":40,"server_tool_use":{"web_search_requests":2}}}"#;
        m.event("message_delta", last);
        m.event("message_stop", r#"{"type":"message_stop"}"#);
        let want = Usage {
            input: 20,
            cached_input: 7,
            cache_write: 100,
            cache_write_1h: 200,
            output: 40,
            server_tools: ServerTools { web_search_requests: 2 },
            ..Usage::default()
        };
        assert_eq!(m.usage(), want);
    }

    #[test]
    fn openai_streams_read_audio_from_the_usage_chunk_and_the_completed_response() {
        let mut m = StreamMeter::new(Api::ChatCompletions);
        let last = r#"{"model":"gpt-4o-mini-audio-preview","choices":[],"usage":{"prompt_tokens":40,"completion_tokens":30,
            "prompt_tokens_details":{"cached_tokens":0,"audio_tokens":25},"completion_tokens_details":{"audio_tokens":20}}}"#;
        assert_eq!(m.event("", last), EventKind::UsageOnly);
        assert_eq!(m.usage(), Usage { input: 15, audio_input: 25, output: 10, audio_output: 20, ..Usage::default() });
        let mut m = StreamMeter::new(Api::Responses);
        let done = r#"{"type":"response.completed","response":{"model":"gpt-realtime","usage":{"input_tokens":9,
            "input_tokens_details":{"cached_tokens":2,"audio_tokens":4},"output_tokens":3}}}"#;
        m.event("response.completed", done);
        assert_eq!(m.usage(), Usage { input: 3, cached_input: 2, audio_input: 4, output: 3, ..Usage::default() });
    }
}
