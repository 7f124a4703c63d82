//! Request results (`GET /api/v1/requests/{request_id}/result`, `GET
//! /api/v1/requests/provider/{category}/{provider_response_id}/result`): what an
//! ingest answered, kept in the ledger's Redis for [`RETENTION`] under a key that
//! names the Application, so another Application's key finds nothing (404, the
//! same answer as an id that never existed).
//!
//! An ingested event's request id is its usage event's id, derived from the
//! Application, the category and the provider response id
//! ([`super::ingest::event_id`]), so the lookup by provider response id needs no
//! index of its own: it derives the id and reads the same key.

use std::time::Duration;

use crate::limits::ledger::Ledger;

/// How long a result stays readable, and a repeated ingest is recognised as one
/// (the event id key lives as long): a day, so an instrumented workload's
/// retries, restarts and nightly re-sends are all caught.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Bound on one read or write of a result.
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// The longest request id accepted in a path (ids here are 32 hex digits).
pub const MAX_REQUEST_ID: usize = 128;

/// The key of one result: the Application's namespace and name, then the id.
/// Kubernetes names hold no `/` or `:`, so no two Applications share a key.
pub fn key(namespace: &str, application: &str, request_id: &str) -> String {
    format!("payi:result:{namespace}/{application}:{request_id}")
}

/// Whether `id` can be a request id (anything else is answered 404 without a read).
pub fn plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("the ledger did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the ledger failed: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Keeps `value` (an answer's JSON) under `key` for [`RETENTION`].
pub async fn store(ledger: &Ledger, key: &str, value: &str) -> Result<(), ResultError> {
    let mut set = redis::cmd("SET");
    set.arg(key).arg(value).arg("EX").arg(RETENTION.as_secs());
    let mut connection = ledger.connection();
    match tokio::time::timeout(TIMEOUT, set.query_async::<()>(&mut connection)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ResultError::Timeout(TIMEOUT)),
    }
}

/// The JSON kept under `key`, if any.
pub async fn fetch(ledger: &Ledger, key: &str) -> Result<Option<String>, ResultError> {
    let mut get = redis::cmd("GET");
    get.arg(key);
    let mut connection = ledger.connection();
    match tokio::time::timeout(TIMEOUT, get.query_async::<Option<String>>(&mut connection)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ResultError::Timeout(TIMEOUT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_keyed_by_application() {
        assert_eq!(key("ns", "chat", "abc"), "payi:result:ns/chat:abc");
        assert_ne!(key("ns", "chat", "abc"), key("ns", "other", "abc"));
        assert_ne!(key("ns", "chat", "abc"), key("other", "chat", "abc"));
    }

    #[test]
    fn only_plausible_ids_are_looked_up() {
        assert!(plausible_id("0123456789abcdef0123456789abcdef"));
        assert!(plausible_id("chatcmpl-AbC_1"));
        assert!(!plausible_id(""));
        assert!(!plausible_id("a:b"));
        assert!(!plausible_id("payi:result:ns/other:x"));
        assert!(!plausible_id(&"a".repeat(MAX_REQUEST_ID + 1)));
    }
}
