//! Errors of Pay-i's API in Pay-i's wire shape, which its SDK parses:
//! `{"statusCode", "message", "xproxy_error": {"code", "message"}}`. The codes are
//! Pay-i's where Pay-i has one (its published error-code list); the few that are
//! this gateway's own (`ledger_unavailable`, `not_served`) say so in their message.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::gateway::proxy::ResponseBody;

/// Pay-i's error codes answered here (and the `reason` label of the ingest refusal metric).
pub mod code {
    pub const INVALID_API_KEY: &str = "invalid_api_key";
    pub const INVALID_JSON: &str = "invalid_json";
    pub const REQUIRED_FIELD_MISSING: &str = "required_field_missing";
    pub const CATEGORY_NOT_FOUND: &str = "category_not_found";
    pub const INVALID_EVENT_TIMESTAMP: &str = "invalid_ingest_event_timestamp";
    pub const REQUEST_PROCESSING_ERROR: &str = "request_processing_error";
    pub const USE_CASE_NOT_FOUND: &str = "use_case_not_found";
    pub const INVALID_LIMIT_IDS: &str = "invalid_limit_ids";
    pub const REQUEST_NOT_FOUND: &str = "request_not_found";
    pub const LIMIT_NOT_FOUND: &str = "limit_not_found";
    pub const UPDATE_LIMIT_VALIDATION_FAILED: &str = "update_limit_validation_failed";
    pub const REQUEST_TOO_LARGE: &str = "request_too_large";
    pub const LEDGER_UNAVAILABLE: &str = "ledger_unavailable";
    pub const NOT_SERVED: &str = "not_served";
    pub const UNEXPECTED_ERROR: &str = "unexpected_error";
}

/// One refusal: the HTTP status, Pay-i's code and a message that says what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The body Pay-i's SDK reads (`payi.types.shared.APIError`).
    pub fn body(&self) -> serde_json::Value {
        json!({
            "statusCode": self.status.as_u16(),
            "message": self.message,
            "xproxy_error": {"code": self.code, "message": self.message},
        })
    }

    pub fn response(&self) -> Response<ResponseBody> {
        let mut response = json_response(self.status, &self.body());
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(crate::verifier::http::CHALLENGE));
        }
        response
    }
}

/// A JSON answer, never cached (results are per key).
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<ResponseBody> {
    let bytes = Bytes::from(body.to_string());
    let mut response = Response::new(http_body_util::combinators::UnsyncBoxBody::new(
        Full::new(bytes).map_err(|never| match never {}),
    ));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_pay_is_shape() {
        let error = ApiError::bad_request(code::CATEGORY_NOT_FOUND, "category 'x' not found");
        assert_eq!(
            error.body(),
            json!({"statusCode": 400, "message": "category 'x' not found",
                   "xproxy_error": {"code": "category_not_found", "message": "category 'x' not found"}})
        );
        let unauthorized = ApiError::new(StatusCode::UNAUTHORIZED, code::INVALID_API_KEY, "unknown API key");
        let response = unauthorized.response();
        assert_eq!(response.status(), 401);
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
