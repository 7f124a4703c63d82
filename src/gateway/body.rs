//! The request body of a metered API on its way to the provider: which model it asks
//! for, whether it streams, whether it asks to run in the background, how many output
//! tokens it allows, and, for an OpenAI stream whose client did not ask for the usage,
//! the one change the gateway makes: `stream_options.include_usage: true`, so the
//! provider reports the usage in a last chunk (which the client is then not shown).
//! Pure.
//!
//! Only the top-level fields the gateway reads are parsed into values; the rest (the
//! messages, the input, up to the whole request size) is skipped without building a
//! tree. When the client sent no `stream_options`, the option is spliced in as text
//! right after the opening `{`, so the body is otherwise byte for byte the client's;
//! when it sent `stream_options` without `include_usage: true`, the body is parsed
//! whole and written again (keys then in sorted order).

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::usage::Api;

/// Spliced after the opening `{` when the gateway asks for the usage itself.
const INCLUDE_USAGE: &[u8] = br#""stream_options":{"include_usage":true}"#;

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
    let body = match (asked_usage_ourselves, fields.stream_options.is_some()) {
        (false, _) => body,
        (true, false) => match splice_include_usage(&body, fields.keys > 0) {
            Some(spliced) => spliced,
            None => rewrite_with_usage(&body)?,
        },
        (true, true) => rewrite_with_usage(&body)?,
    };
    Ok(Prepared { model, stream, background, max_output_tokens, input_bytes, body, asked_usage_ourselves })
}

/// The top-level fields the gateway reads, each as the client wrote it (the last of
/// duplicated keys, as a JSON parser keeps); everything else is skipped.
#[derive(Debug, Default)]
struct Fields {
    /// How many top-level keys the object has.
    keys: usize,
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
            fields.keys += 1;
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

/// The body with `"stream_options":{"include_usage":true}` first, for a body with no
/// `stream_options`; `None` if it has no `{` (not an object: not reached).
fn splice_include_usage(body: &[u8], has_keys: bool) -> Option<Bytes> {
    let open = body.iter().position(|b| *b == b'{')?;
    let (head, tail) = body.split_at(open + 1);
    let mut spliced = Vec::with_capacity(body.len() + INCLUDE_USAGE.len() + 1);
    spliced.extend_from_slice(head);
    spliced.extend_from_slice(INCLUDE_USAGE);
    if has_keys {
        spliced.push(b',');
    }
    spliced.extend_from_slice(tail);
    Some(Bytes::from(spliced))
}

/// The body parsed whole and written again with `stream_options.include_usage: true`,
/// keeping any other stream option.
fn rewrite_with_usage(body: &[u8]) -> Result<Bytes, BodyError> {
    let Value::Object(mut object) = serde_json::from_slice(body).map_err(BodyError::NotJson)? else {
        return Err(BodyError::NotAnObject);
    };
    let options = object.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
    if !options.is_object() {
        *options = Value::Object(Map::new());
    }
    if let Value::Object(options) = options {
        options.insert("include_usage".into(), Value::Bool(true));
    }
    Ok(Bytes::from(Value::Object(object).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
