//! The request body of a metered API on its way to the provider: which model it asks
//! for, whether it streams, whether it asks to run in the background, how many output
//! tokens it allows, and, for an OpenAI stream whose client did not ask for the usage,
//! the one change the gateway makes: `stream_options.include_usage: true`, so the
//! provider reports the usage in a last chunk (which the client is then not shown).
//! Pure.
//!
//! Only the top-level fields the gateway reads are parsed into values; the rest (the
//! messages, the input, up to the whole request size) is skipped without building a
//! tree. The one change is made as text, so the body is otherwise byte for byte the
//! client's (key order, spacing, escapes, number spellings): with no `stream_options`,
//! `"stream_options":{"include_usage":true}` goes right after the opening `{`; with
//! one, only its `include_usage` value becomes `true` (added first in the object when
//! absent; a `stream_options` that is not an object becomes `{"include_usage":true}`).
//! A key the client wrote twice is changed at every occurrence, so a provider whose
//! JSON parser keeps the first of duplicated keys reads the same as one that keeps
//! the last (as the gateway's does).

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use super::usage::Api;

/// Spliced after the opening `{` when the gateway asks for the usage itself.
const INCLUDE_USAGE: &[u8] = br#""stream_options":{"include_usage":true}"#;
/// The same, before the client's first key.
const INCLUDE_USAGE_FIRST: &[u8] = br#""stream_options":{"include_usage":true},"#;

/// The fields that cap a request's output tokens, in the order they are looked for
/// (Chat Completions' old and new names, the Responses API's).
const MAX_OUTPUT_FIELDS: [&str; 3] = ["max_tokens", "max_completion_tokens", "max_output_tokens"];

#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// The model the client asked for (Azure names its deployment in the path instead).
    pub model: Option<String>,
    pub stream: bool,
    /// A Responses request with `"background": true`: answered before it runs, without
    /// its usage, so the gateway cannot meter it (`providers::Route::background_class`
    /// says whether it is forwarded). Always false for the other APIs.
    pub background: bool,
    /// The most output tokens the client allows: the first present (not null) of
    /// `max_tokens`, `max_completion_tokens`, `max_output_tokens`.
    pub max_output_tokens: Option<u64>,
    /// The length of the client's body, before any change.
    pub input_bytes: usize,
    /// What is sent: the client's bytes unchanged, unless usage was asked for.
    pub body: Bytes,
    /// The gateway added `include_usage`; the usage-only chunk is the gateway's.
    pub asked_usage_ourselves: bool,
}

impl Prepared {
    /// A body the gateway forwards without reading it (a path that is not metered).
    pub fn unread(body: Bytes) -> Prepared {
        Prepared {
            model: None,
            stream: false,
            background: false,
            max_output_tokens: None,
            input_bytes: body.len(),
            body,
            asked_usage_ourselves: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("the request body is not a JSON object")]
    NotAnObject,
    #[error("\"stream\" must be true or false")]
    BadStream,
    #[error("\"model\" must be a string")]
    BadModel,
    #[error("\"background\" must be true or false")]
    BadBackground,
    #[error("\"{0}\" must be a whole number of tokens, 0 or more")]
    BadMaxTokens(&'static str),
    #[error(
        "image model {0:?} is not metered: only models that report token usage ({IMAGE_MODELS_PREFIX}*) are forwarded \
         for image generation"
    )]
    UnmeteredImageModel(String),
    #[error("streamed image generation is not metered: send the request without \"stream\"")]
    StreamedImages,
    /// Not reached: the body was read as a JSON object before it is changed.
    #[error("the request body's stream_options could not be changed")]
    Unchangeable,
}

/// Image models whose answers report token usage, so the gateway can price them;
/// others (`dall-e-2`, the default when none is named, `dall-e-3`) are priced per
/// image by size and quality, which the answer does not say, and are refused.
pub const IMAGE_MODELS_PREFIX: &str = "gpt-image-";

/// Reads a metered API's request body and adds what the gateway needs to meter it.
pub fn prepare(api: Api, body: Bytes) -> Result<Prepared, BodyError> {
    let fields = Fields::read(&body)?;
    let model = match fields.model {
        None | Some(Field::Null) => None,
        Some(Field::String(m)) => Some(m),
        Some(_) => return Err(BodyError::BadModel),
    };
    let stream = flag(fields.stream.as_ref(), BodyError::BadStream)?;
    if api == Api::Images {
        let named = model.clone().unwrap_or_else(|| "dall-e-2".to_string());
        if !named.starts_with(IMAGE_MODELS_PREFIX) {
            return Err(BodyError::UnmeteredImageModel(named));
        }
        if stream {
            return Err(BodyError::StreamedImages);
        }
    }
    let background = match api {
        Api::Responses => flag(fields.background.as_ref(), BodyError::BadBackground)?,
        _ => false,
    };
    let max_output_tokens = max_output_tokens(&fields.max_output)?;
    let input_bytes = body.len();
    let wants_usage_option = stream && matches!(api, Api::ChatCompletions | Api::Completions);
    let asked_usage_ourselves = wants_usage_option && !client_asked_for_usage(fields.stream_options.as_ref());
    let body = match asked_usage_ourselves {
        false => body,
        true => with_include_usage(&body).ok_or(BodyError::Unchangeable)?,
    };
    Ok(Prepared { model, stream, background, max_output_tokens, input_bytes, body, asked_usage_ourselves })
}

/// The top-level fields the gateway reads, each as the client wrote it (the last of
/// duplicated keys, as a JSON parser keeps); everything else is skipped.
#[derive(Debug, Default)]
struct Fields {
    model: Option<Field>,
    stream: Option<Field>,
    stream_options: Option<Field>,
    background: Option<Field>,
    /// In the order of [`MAX_OUTPUT_FIELDS`].
    max_output: [Option<Field>; 3],
}

/// A top-level field's value as far as the gateway reads it: scalars are kept;
/// arrays and objects are skipped without being built, so a hostile
/// `{"model": [0,0,…]}` of 8 MiB costs no memory before it is refused.
#[derive(Clone, Debug, PartialEq)]
enum Field {
    Null,
    Bool(bool),
    /// A whole number, 0 or more.
    Unsigned(u64),
    String(String),
    /// An object: only its `include_usage` (for `stream_options`), when a boolean.
    Object {
        include_usage: Option<bool>,
    },
    /// Another number, or an array.
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Field, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Field, E> {
        Ok(Field::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Field, E> {
        Ok(Field::Bool(b))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Field, E> {
        Ok(Field::Unsigned(n))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Field, E> {
        Ok(u64::try_from(n).map_or(Field::Other, Field::Unsigned))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Field, E> {
        Ok(Field::Other)
    }

    fn visit_str<E>(self, s: &str) -> Result<Field, E> {
        Ok(Field::String(s.to_string()))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
        let mut include_usage = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "include_usage" => include_usage = Some(map.next_value::<Field>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let include_usage = match include_usage {
            Some(Field::Bool(b)) => Some(b),
            _ => None,
        };
        Ok(Field::Object { include_usage })
    }
}

impl Fields {
    fn read(body: &[u8]) -> Result<Fields, BodyError> {
        serde_json::from_slice(body).map_err(|e| match serde_json::from_slice::<IgnoredAny>(body) {
            Ok(_) => BodyError::NotAnObject,
            Err(_) => BodyError::NotJson(e),
        })
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Fields, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "model" => &mut fields.model,
                "stream" => &mut fields.stream,
                "stream_options" => &mut fields.stream_options,
                "background" => &mut fields.background,
                other => match MAX_OUTPUT_FIELDS.iter().position(|name| *name == other) {
                    Some(i) => &mut fields.max_output[i],
                    None => {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                },
            };
            *slot = Some(map.next_value()?);
        }
        Ok(fields)
    }
}

/// A boolean field: absent or null is false.
fn flag(value: Option<&Field>, bad: BodyError) -> Result<bool, BodyError> {
    match value {
        None | Some(Field::Null) => Ok(false),
        Some(Field::Bool(b)) => Ok(*b),
        Some(_) => Err(bad),
    }
}

/// The first present cap on output tokens; every present one must be a whole number.
fn max_output_tokens(values: &[Option<Field>; 3]) -> Result<Option<u64>, BodyError> {
    let mut first = None;
    for (name, value) in MAX_OUTPUT_FIELDS.iter().zip(values) {
        match value {
            None | Some(Field::Null) => {}
            Some(Field::Unsigned(tokens)) => first = first.or(Some(*tokens)),
            Some(_) => return Err(BodyError::BadMaxTokens(name)),
        }
    }
    Ok(first)
}

fn client_asked_for_usage(options: Option<&Field>) -> bool {
    matches!(options, Some(Field::Object { include_usage: Some(true) }))
}

/// The body with `stream_options.include_usage: true` and nothing else changed (see
/// the module doc); `None` when it is not a JSON object (not reached: it was read).
fn with_include_usage(body: &[u8]) -> Option<Bytes> {
    let members = json_text::members(body)?;
    let options: Vec<&json_text::Member> = members.iter().filter(|m| m.key == "stream_options").collect();
    let mut edits: Vec<(usize, usize, &[u8])> = vec![];
    if options.is_empty() {
        let open = body.iter().position(|b| *b == b'{')?;
        edits.push((open + 1, open + 1, if members.is_empty() { INCLUDE_USAGE } else { INCLUDE_USAGE_FIRST }));
    }
    for option in options {
        let value = body.get(option.value.clone())?;
        if value.first() != Some(&b'{') {
            edits.push((option.value.start, option.value.end, br#"{"include_usage":true}"#));
            continue;
        }
        let inner = json_text::members(value)?;
        let flags: Vec<&json_text::Member> = inner.iter().filter(|m| m.key == "include_usage").collect();
        if flags.is_empty() {
            let at = option.value.start + 1;
            edits.push((
                at,
                at,
                if inner.is_empty() { br#""include_usage":true"# } else { br#""include_usage":true,"# },
            ));
        }
        for flag in flags {
            let span = option.value.start + flag.value.start..option.value.start + flag.value.end;
            edits.push((span.start, span.end, b"true"));
        }
    }
    json_text::apply(body, edits)
}

/// Where the members of a JSON object are in its text, for changing one value in
/// place. Only for text a JSON parser has accepted: it finds boundaries, it does
/// not validate (and gives `None`, never a panic, on text it cannot follow).
mod json_text {
    use std::ops::Range;

    use bytes::Bytes;

    /// One `"key": value` of an object: the key decoded, where its value's text is.
    pub struct Member {
        pub key: String,
        pub value: Range<usize>,
    }

    /// The members of the object `text` holds (whitespace around it allowed), in order.
    pub fn members(text: &[u8]) -> Option<Vec<Member>> {
        let mut at = skip_whitespace(text, 0);
        if text.get(at) != Some(&b'{') {
            return None;
        }
        at = skip_whitespace(text, at + 1);
        let mut members = vec![];
        if text.get(at) == Some(&b'}') {
            return Some(members);
        }
        loop {
            let key_end = string_end(text, at)?;
            let key = key_text(&text[at..key_end])?;
            at = skip_whitespace(text, key_end);
            if text.get(at) != Some(&b':') {
                return None;
            }
            let start = skip_whitespace(text, at + 1);
            let end = value_end(text, start)?;
            members.push(Member { key, value: start..end });
            at = skip_whitespace(text, end);
            match text.get(at)? {
                b',' => at = skip_whitespace(text, at + 1),
                b'}' => return Some(members),
                _ => return None,
            }
        }
    }

    /// `text` with each `(start, end, replacement)` made; `None` if two overlap.
    pub fn apply(text: &[u8], mut edits: Vec<(usize, usize, &[u8])>) -> Option<Bytes> {
        edits.sort_by_key(|(start, _, _)| *start);
        let added: usize = edits.iter().map(|(_, _, r)| r.len()).sum();
        let mut out = Vec::with_capacity(text.len() + added);
        let mut copied = 0;
        for (start, end, replacement) in edits {
            out.extend_from_slice(text.get(copied..start)?);
            out.extend_from_slice(replacement);
            copied = end;
        }
        out.extend_from_slice(text.get(copied..)?);
        Some(Bytes::from(out))
    }

    fn skip_whitespace(text: &[u8], mut at: usize) -> usize {
        while text.get(at).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
            at += 1;
        }
        at
    }

    /// The end (exclusive) of the string whose opening quote is at `at`.
    fn string_end(text: &[u8], mut at: usize) -> Option<usize> {
        if text.get(at) != Some(&b'"') {
            return None;
        }
        at += 1;
        loop {
            match text.get(at)? {
                b'\\' => at += 2,
                b'"' => return Some(at + 1),
                _ => at += 1,
            }
        }
    }

    /// The end (exclusive) of the value that starts at `at`.
    fn value_end(text: &[u8], at: usize) -> Option<usize> {
        match text.get(at)? {
            b'"' => string_end(text, at),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut i = at;
                loop {
                    match text.get(i)? {
                        b'"' => {
                            i = string_end(text, i)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.checked_sub(1)?;
                            if depth == 0 {
                                return Some(i + 1);
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {
                let mut i = at;
                while text.get(i).is_some_and(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')) {
                    i += 1;
                }
                (i > at).then_some(i)
            }
        }
    }

    /// A key as the parser reads it: escapes (`"\u0073tream_options"`) decoded.
    fn key_text(quoted: &[u8]) -> Option<String> {
        match quoted.contains(&b'\\') {
            false => std::str::from_utf8(quoted.get(1..quoted.len().checked_sub(1)?)?).ok().map(str::to_string),
            true => serde_json::from_slice(quoted).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn image_generation_is_metered_only_for_models_that_report_usage() {
        let ok = prepare(Api::Images, Bytes::from_static(br#"{"model":"gpt-image-1","prompt":"a cat"}"#)).unwrap();
        assert_eq!(ok.model.as_deref(), Some("gpt-image-1"));
        for (body, refused) in [
            (r#"{"model":"dall-e-3","prompt":"a cat"}"#, "\"dall-e-3\" is not metered"),
            (r#"{"prompt":"a cat"}"#, "\"dall-e-2\" is not metered"),
            (r#"{"model":"gpt-image-1","prompt":"a cat","stream":true}"#, "streamed image generation"),
        ] {
            let error = prepare(Api::Images, Bytes::from(body)).unwrap_err().to_string();
            assert!(error.contains(refused), "{body}: {error}");
        }
    }

    fn prepared(api: Api, body: &str) -> Prepared {
        prepare(api, Bytes::from(body.to_string())).unwrap()
    }

    #[test]
    fn a_non_streaming_body_is_sent_as_it_came() {
        let body = r#"{"model":"gpt-4o", "messages":[]}"#;
        let p = prepared(Api::ChatCompletions, body);
        assert_eq!((p.model.as_deref(), p.stream, p.asked_usage_ourselves), (Some("gpt-4o"), false, false));
        assert_eq!(p.body, body.as_bytes());
        assert_eq!(p.input_bytes, body.len());
    }

    #[test]
    fn an_openai_stream_without_stream_options_gets_include_usage_spliced_in_first() {
        let body = r#"  {"stream":true, "model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let p = prepared(Api::ChatCompletions, body);
        assert!(p.stream && p.asked_usage_ourselves);
        assert_eq!(
            std::str::from_utf8(&p.body).unwrap(),
            r#"  {"stream_options":{"include_usage":true},"stream":true, "model":"m","messages":[{"role":"user","content":"hi"}]}"#
        );
        assert_eq!(p.input_bytes, body.len());
        let p = prepared(Api::Completions, "{\"stream\":true}");
        assert_eq!(p.body, r#"{"stream_options":{"include_usage":true},"stream":true}"#.as_bytes());
        let sent: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(sent["stream_options"]["include_usage"], true);
    }

    /// The client's bytes and exactly what the provider must get: the one change
    /// made in place, every other byte (order, spacing, escapes, numbers) the client's.
    #[test]
    fn include_usage_changes_only_that_field_byte_for_byte() {
        let cases = [
            (
                r#"{"model":"m","stream":true,"stream_options":{"include_usage":false},"temperature":1.0E0}"#,
                r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"temperature":1.0E0}"#,
            ),
            (
                "{ \"z\" : 1 ,\n  \"stream_options\" : { \"include_usage\" :  null , \"x\":[1,{\"y\":\"}\"}] },\n  \"stream\":true, \"a\": \"\\u00e9\" }",
                "{ \"z\" : 1 ,\n  \"stream_options\" : { \"include_usage\" :  true , \"x\":[1,{\"y\":\"}\"}] },\n  \"stream\":true, \"a\": \"\\u00e9\" }",
            ),
            (
                r#"{"stream":true,"stream_options":{"x":1},"model":"m"}"#,
                r#"{"stream":true,"stream_options":{"include_usage":true,"x":1},"model":"m"}"#,
            ),
            (r#"{"stream":true,"stream_options":{ }}"#, r#"{"stream":true,"stream_options":{"include_usage":true }}"#),
            (r#"{"stream_options":null,"stream":true}"#, r#"{"stream_options":{"include_usage":true},"stream":true}"#),
            (
                r#"{"stream_options":"yes","stream":true,"n":-0.5e-3}"#,
                r#"{"stream_options":{"include_usage":true},"stream":true,"n":-0.5e-3}"#,
            ),
            // An escaped key is the same key.
            (
                r#"{"stream":true,"stream_\u006fptions":{"include\u005fusage":false}}"#,
                r#"{"stream":true,"stream_\u006fptions":{"include\u005fusage":true}}"#,
            ),
            // Duplicated keys: every occurrence, whichever one the provider keeps.
            (
                r#"{"stream_options":{"include_usage":true},"stream":true,"stream_options":{"include_usage":false,"include_usage":false}}"#,
                r#"{"stream_options":{"include_usage":true},"stream":true,"stream_options":{"include_usage":true,"include_usage":true}}"#,
            ),
            // A nested stream_options (inside a message) is not the request's.
            (
                r#"{"messages":[{"stream_options":{"include_usage":false}}],"stream":true}"#,
                r#"{"stream_options":{"include_usage":true},"messages":[{"stream_options":{"include_usage":false}}],"stream":true}"#,
            ),
        ];
        for (sent, forwarded) in cases {
            let p = prepared(Api::ChatCompletions, sent);
            assert!(p.asked_usage_ourselves, "{sent}");
            assert_eq!(std::str::from_utf8(&p.body).unwrap(), forwarded);
            let read: Value = serde_json::from_slice(&p.body).unwrap();
            assert_eq!(read["stream_options"]["include_usage"], true, "{forwarded}");
        }
    }

    #[test]
    fn the_text_scanner_never_panics_on_text_it_cannot_follow() {
        for text in ["", "{", "{\"a\"", "{\"a\":", "{\"a\":1", "{\"a\":[1,{]", "{\"a\\", "[]", "{\"a\":}", "{}}", "}"] {
            let _ = json_text::members(text.as_bytes());
            let _ = with_include_usage(text.as_bytes());
        }
        assert!(json_text::apply(b"abc", vec![(0, 2, b"x"), (1, 1, b"y")]).is_none(), "overlapping edits");
    }

    #[test]
    fn an_openai_stream_gets_include_usage_keeping_other_options() {
        let p = prepared(Api::ChatCompletions, r#"{"model":"m","stream":true,"stream_options":{"x":1}}"#);
        assert!(p.stream && p.asked_usage_ourselves);
        let sent: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(sent["stream_options"], serde_json::json!({"x": 1, "include_usage": true}));
        // The client said false: it gets no usage chunk, the gateway still reads one.
        let p = prepared(Api::Completions, r#"{"stream":true,"stream_options":{"include_usage":false}}"#);
        assert!(p.asked_usage_ourselves);
        let sent: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(sent["stream_options"], serde_json::json!({"include_usage": true}));
        let p = prepared(Api::ChatCompletions, r#"{"stream":true,"stream_options":null}"#);
        assert!(p.asked_usage_ourselves);
        let sent: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(sent, serde_json::json!({"stream": true, "stream_options": {"include_usage": true}}));
    }

    #[test]
    fn a_client_that_asked_for_usage_or_an_api_that_always_reports_is_untouched() {
        let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
        let p = prepared(Api::ChatCompletions, body);
        assert!(p.stream && !p.asked_usage_ourselves);
        assert_eq!(p.body, body.as_bytes());
        for api in [Api::Messages, Api::Responses] {
            let p = prepared(api, r#"{"model":"m","stream":true}"#);
            assert!(p.stream && !p.asked_usage_ourselves, "{api:?}");
        }
    }

    #[test]
    fn a_background_response_is_noticed() {
        assert!(prepared(Api::Responses, r#"{"model":"o3","input":"x","background":true}"#).background);
        assert!(!prepared(Api::Responses, r#"{"model":"o3","background":false}"#).background);
        assert!(!prepared(Api::Responses, r#"{"model":"o3","background":null}"#).background);
        assert!(!prepared(Api::Responses, r#"{"model":"o3"}"#).background);
        // The last of a duplicated key counts, as at the provider's JSON parser.
        assert!(prepared(Api::Responses, r#"{"background":false,"background":true}"#).background);
        // Only the Responses API runs in the background.
        assert!(!prepared(Api::ChatCompletions, r#"{"background":true}"#).background);
        let error = prepare(Api::Responses, Bytes::from(r#"{"background":"yes"}"#)).unwrap_err();
        assert_eq!(error.to_string(), "\"background\" must be true or false");
    }

    #[test]
    fn the_output_token_cap_is_the_first_present_of_its_three_names() {
        let cap = |api, body: &str| prepared(api, body).max_output_tokens;
        assert_eq!(cap(Api::ChatCompletions, r#"{"max_tokens":100}"#), Some(100));
        assert_eq!(cap(Api::ChatCompletions, r#"{"max_completion_tokens":200}"#), Some(200));
        assert_eq!(cap(Api::Responses, r#"{"max_output_tokens":300}"#), Some(300));
        assert_eq!(cap(Api::Messages, r#"{"max_tokens":1024,"messages":[]}"#), Some(1024));
        assert_eq!(cap(Api::ChatCompletions, r#"{"max_completion_tokens":2,"max_tokens":1}"#), Some(1));
        assert_eq!(cap(Api::ChatCompletions, r#"{"max_tokens":null,"max_completion_tokens":2}"#), Some(2));
        assert_eq!(cap(Api::ChatCompletions, r#"{"max_tokens":0}"#), Some(0));
        assert_eq!(cap(Api::Embeddings, r#"{"input":"x"}"#), None);
        for (body, message) in [
            (r#"{"max_tokens":-1}"#, "\"max_tokens\" must be a whole number of tokens, 0 or more"),
            (r#"{"max_tokens":1.5}"#, "\"max_tokens\" must be a whole number of tokens, 0 or more"),
            (r#"{"max_tokens":100.0}"#, "\"max_tokens\" must be a whole number of tokens, 0 or more"),
            (
                r#"{"max_completion_tokens":"10"}"#,
                "\"max_completion_tokens\" must be a whole number of tokens, 0 or more",
            ),
            (
                r#"{"max_tokens":1,"max_output_tokens":true}"#,
                "\"max_output_tokens\" must be a whole number of tokens, 0 or more",
            ),
            (r#"{"max_output_tokens":1e30}"#, "\"max_output_tokens\" must be a whole number of tokens, 0 or more"),
        ] {
            let error = prepare(Api::Responses, Bytes::from(body)).unwrap_err();
            assert_eq!(error.to_string(), message, "{body}");
        }
    }

    #[test]
    fn bodies_that_cannot_be_metered_are_refused() {
        let bad = |b: &str| prepare(Api::ChatCompletions, Bytes::from(b.to_string())).unwrap_err().to_string();
        assert!(bad("{").starts_with("the request body is not JSON"));
        assert!(bad(r#"{"a":1} x"#).starts_with("the request body is not JSON"));
        assert!(bad("").starts_with("the request body is not JSON"));
        assert_eq!(bad("[]"), "the request body is not a JSON object");
        assert_eq!(bad("\"{\""), "the request body is not a JSON object");
        assert_eq!(bad(r#"{"stream":"yes"}"#), "\"stream\" must be true or false");
        assert_eq!(bad(r#"{"model":5}"#), "\"model\" must be a string");
        assert_eq!(prepared(Api::Embeddings, r#"{"input":"x"}"#).model, None);
        // A key written with escapes is the same key.
        assert_eq!(bad(r#"{"\u006dodel":5}"#), "\"model\" must be a string");
    }

    #[test]
    fn arrays_and_objects_where_a_scalar_belongs_are_refused_or_ignored_unbuilt() {
        let bad = |b: String| prepare(Api::ChatCompletions, Bytes::from(b)).unwrap_err().to_string();
        // A million values where the model's name belongs: skipped, then refused.
        let zeros = format!(r#"{{"model":[{}0]}}"#, "0,".repeat(1 << 20));
        assert_eq!(bad(zeros), "\"model\" must be a string");
        assert_eq!(bad(r#"{"max_tokens":[1]}"#.into()), "\"max_tokens\" must be a whole number of tokens, 0 or more");
        assert_eq!(bad(r#"{"stream":{"a":[true]}}"#.into()), "\"stream\" must be true or false");
        // stream_options: only its include_usage is read, the last of duplicates, and only a boolean.
        let asked = |b: &str| prepared(Api::ChatCompletions, b).asked_usage_ourselves;
        assert!(!asked(r#"{"stream":true,"stream_options":{"x":[[1]],"include_usage":true}}"#));
        assert!(asked(r#"{"stream":true,"stream_options":{"include_usage":true,"include_usage":false}}"#));
        assert!(asked(r#"{"stream":true,"stream_options":{"include_usage":[true]}}"#));
        assert!(asked(r#"{"stream":true,"stream_options":[{"include_usage":true}]}"#));
    }

    #[test]
    fn an_eight_mebibyte_field_passes_through_unparsed() {
        let zeros = "0,".repeat(4 << 20);
        let messages = format!("[{}0]", zeros);
        let plain = format!(r#"{{"model":"m","messages":{messages},"max_tokens":5}}"#);
        assert!(plain.len() > 8 << 20);
        let p = prepared(Api::ChatCompletions, &plain);
        assert_eq!((p.model.as_deref(), p.max_output_tokens, p.input_bytes), (Some("m"), Some(5), plain.len()));
        assert_eq!(p.body, plain.as_bytes(), "no rewrite: the client's bytes");

        let streamed = format!(r#"{{"model":"m","stream":true,"messages":{messages}}}"#);
        let p = prepared(Api::ChatCompletions, &streamed);
        assert!(p.asked_usage_ourselves);
        let (head, tail) = p.body.split_at(1 + INCLUDE_USAGE.len() + 1);
        assert_eq!(head, br#"{"stream_options":{"include_usage":true},"#);
        assert_eq!(tail, &streamed.as_bytes()[1..], "the rest is the client's, byte for byte");
    }
}
