//! The request body on its way to the provider: which model it asks for, whether
//! it streams, and, for an OpenAI stream whose client did not ask for the usage,
//! the one change the gateway makes: `stream_options.include_usage: true`, so the
//! provider reports the usage in a last chunk (which the client is then not shown).
//! Pure.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::usage::Api;

#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// The model the client asked for (Azure names its deployment in the path instead).
    pub model: Option<String>,
    pub stream: bool,
    /// What is sent: the client's bytes unchanged, unless usage was asked for.
    pub body: Bytes,
    /// The gateway added `include_usage`; the usage-only chunk is the gateway's.
    pub asked_usage_ourselves: bool,
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
}

/// Reads a metered API's request body and adds what the gateway needs to meter it.
pub fn prepare(api: Api, body: Bytes) -> Result<Prepared, BodyError> {
    let value: Value = serde_json::from_slice(&body).map_err(BodyError::NotJson)?;
    let Value::Object(mut object) = value else {
        return Err(BodyError::NotAnObject);
    };
    let model = match object.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) => Some(m.clone()),
        Some(_) => return Err(BodyError::BadModel),
    };
    let stream = match object.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(BodyError::BadStream),
    };
    let wants_usage_option = stream && matches!(api, Api::ChatCompletions | Api::Completions);
    if !wants_usage_option || client_asked_for_usage(&object) {
        return Ok(Prepared { model, stream, body, asked_usage_ourselves: false });
    }
    ask_for_usage(&mut object);
    let body = Bytes::from(Value::Object(object).to_string());
    Ok(Prepared { model, stream, body, asked_usage_ourselves: true })
}

fn client_asked_for_usage(object: &Map<String, Value>) -> bool {
    object.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true)
}

/// Sets `stream_options.include_usage`, keeping any other stream option.
fn ask_for_usage(object: &mut Map<String, Value>) {
    let options = object.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
    if !options.is_object() {
        *options = Value::Object(Map::new());
    }
    if let Value::Object(options) = options {
        options.insert("include_usage".into(), Value::Bool(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(api: Api, body: &str) -> Prepared {
        prepare(api, Bytes::from(body.to_string())).unwrap()
    }

    #[test]
    fn a_non_streaming_body_is_sent_as_it_came() {
        let body = r#"{"model":"gpt-4o", "messages":[]}"#;
        let p = prepared(Api::ChatCompletions, body);
        assert_eq!((p.model.as_deref(), p.stream, p.asked_usage_ourselves), (Some("gpt-4o"), false, false));
        assert_eq!(p.body, body.as_bytes());
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
        let p = prepared(Api::ChatCompletions, r#"{"stream":true,"stream_options":null}"#);
        assert!(p.asked_usage_ourselves);
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
    fn bodies_that_cannot_be_metered_are_refused() {
        let bad = |b: &str| prepare(Api::ChatCompletions, Bytes::from(b.to_string())).unwrap_err().to_string();
        assert!(bad("{").starts_with("the request body is not JSON"));
        assert_eq!(bad("[]"), "the request body is not a JSON object");
        assert_eq!(bad(r#"{"stream":"yes"}"#), "\"stream\" must be true or false");
        assert_eq!(bad(r#"{"model":5}"#), "\"model\" must be a string");
        assert_eq!(prepared(Api::Embeddings, r#"{"input":"x"}"#).model, None);
    }
}
