//! What a provider bills for a stream its client cut before the usage arrived:
//! OpenAI reports a stream's usage only in its last chunk, yet bills the prompt and
//! every token generated until the connection closed. The prompt is counted here
//! with OpenAI's own tokenizer (`tiktoken-rs`, the encoding of the model's family;
//! o200k for models it does not know), the way OpenAI's cookbook counts chat
//! messages; the output is the content events that passed (`usage::StreamMeter`).
//! Pure, and used only for cut streams. The tables of the default tokenizer are
//! loaded once at start ([`preload`]), off the runtime: loading them takes seconds
//! in a debug build under load, which inside the first cut stream's drop stalled a
//! runtime worker and delayed that charge past the shutdown drain.

use serde_json::Value;

use super::usage::Api;

/// Tokens OpenAI adds around each chat message (role and separators), and once to
/// prime the reply (OpenAI cookbook, "How to count tokens with tiktoken").
const PER_MESSAGE: u64 = 3;
const REPLY_PRIMING: u64 = 3;

/// Loads the default tokenizer's tables (o200k, the encoding of current models and
/// of those it does not know); blocking, so run it on a blocking thread.
pub fn preload() {
    tiktoken_rs::o200k_base_singleton();
}

/// The prompt tokens of a request body of `api` for `model`; 0 when the body is not
/// JSON or has no text.
pub fn prompt_tokens(api: Api, model: Option<&str>, body: &[u8]) -> u64 {
    let Ok(value) = serde_json::from_slice::<Value>(body) else { return 0 };
    let bpe = model.and_then(|m| tiktoken_rs::bpe_for_model(m).ok()).unwrap_or_else(tiktoken_rs::o200k_base_singleton);
    let count = |text: &str| bpe.encode_ordinary(text).len() as u64;
    let mut texts = Vec::new();
    let mut messages = 0;
    match api {
        Api::ChatCompletions => {
            for message in value.get("messages").and_then(Value::as_array).into_iter().flatten() {
                messages += 1;
                texts_of(message.get("content"), &mut texts);
                texts_of(message.get("name"), &mut texts);
            }
        }
        Api::Responses => {
            texts_of(value.get("instructions"), &mut texts);
            texts_of(value.get("input"), &mut texts);
        }
        Api::Completions | Api::Embeddings | Api::Images => {
            texts_of(value.get("prompt").or(value.get("input")), &mut texts)
        }
        Api::Messages => {
            texts_of(value.get("system"), &mut texts);
            for message in value.get("messages").and_then(Value::as_array).into_iter().flatten() {
                messages += 1;
                texts_of(message.get("content"), &mut texts);
            }
        }
    }
    // Tool definitions are sent to the model as text too.
    let tools = value.get("tools").map(Value::to_string);
    let text_tokens: u64 = texts.iter().map(|t| count(t)).sum::<u64>() + tools.map_or(0, |t| count(&t));
    let framing = if messages > 0 { messages * PER_MESSAGE + REPLY_PRIMING } else { 0 };
    text_tokens + framing
}

/// The strings a content value holds: itself, the items of an array, and the
/// `text`/`content` of objects (content parts, Responses input items).
fn texts_of<'a>(value: Option<&'a Value>, out: &mut Vec<&'a str>) {
    match value {
        Some(Value::String(text)) => out.push(text),
        Some(Value::Array(items)) => items.iter().for_each(|item| texts_of(Some(item), out)),
        Some(Value::Object(object)) => {
            texts_of(object.get("text"), out);
            texts_of(object.get("content"), out);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_prompts_count_text_and_message_framing() {
        let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"hello there"}]}]}"#;
        let bpe = tiktoken_rs::o200k_base_singleton();
        let text = (bpe.encode_ordinary("Be brief.").len() + bpe.encode_ordinary("hello there").len()) as u64;
        assert_eq!(prompt_tokens(Api::ChatCompletions, Some("gpt-4o-mini"), body), text + 2 * 3 + 3);
    }

    #[test]
    fn other_apis_and_odd_bodies() {
        let responses = br#"{"model":"gpt-4o","instructions":"Be brief.","input":[{"role":"user","content":"hi"}]}"#;
        assert!(prompt_tokens(Api::Responses, Some("gpt-4o"), responses) >= 3);
        let completions = br#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test"}"#;
        assert_eq!(prompt_tokens(Api::Completions, Some("gpt-3.5-turbo-instruct"), completions), 5);
        assert_eq!(prompt_tokens(Api::ChatCompletions, None, b"not json"), 0);
        assert_eq!(prompt_tokens(Api::ChatCompletions, Some("some-unknown-model"), br#"{"messages":[]}"#), 0);
    }
}
