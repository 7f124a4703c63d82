//! HTTP forward-auth (nginx `auth_request`, Envoy HTTP ext_authz, Traefik
//! ForwardAuth) on its own port, and the verifier's `/healthz`, `/readyz` and
//! `/metrics` on another.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

use super::index::Attribution;
use super::watch::{Readiness, Synced};
use super::{Answer, Verifier};

pub const ORGANIZATION_HEADER: &str = "x-payi-organization";
pub const GROUP_HEADER: &str = "x-payi-group";
pub const APPLICATION_HEADER: &str = "x-payi-application";
pub const NAMESPACE_HEADER: &str = "x-payi-namespace";
/// The reason of a refusal, for gateways that drop the body (nginx `auth_request`).
pub const REFUSAL_HEADER: &str = "x-payi-refusal";
/// What a refused client is told to send.
pub const CHALLENGE: &str = r#"Bearer realm="payi""#;

/// The four attribution headers and their values.
pub fn attribution_headers(a: &Attribution) -> [(&'static str, &str); 4] {
    [
        (ORGANIZATION_HEADER, &a.organization),
        (GROUP_HEADER, &a.group),
        (APPLICATION_HEADER, &a.application),
        (NAMESPACE_HEADER, &a.namespace),
    ]
}

/// Any method, any path: the gateway forwards the original request's headers.
pub fn forward_auth_router(verifier: Arc<Verifier>) -> Router {
    Router::new().fallback(forward_auth).with_state(verifier)
}

async fn forward_auth(State(verifier): State<Arc<Verifier>>, headers: HeaderMap) -> Response {
    let answer = verifier.check("http", |name| headers.get(name).and_then(|v| v.to_str().ok()));
    let Some(attribution) = answer.allowed() else {
        return refusal(&answer);
    };
    let mut response = StatusCode::OK.into_response();
    let context = answer.context.headers();
    let context = context.iter().filter_map(|(name, value)| Some((*name, value.as_deref()?)));
    for (name, value) in attribution_headers(attribution).into_iter().chain(context) {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(HeaderName::from_static(name), value);
        }
    }
    response
}

/// 401 with the challenge when the key is the problem, 403 when the request is.
pub fn refusal(answer: &Answer) -> Response {
    let status = StatusCode::from_u16(answer.decision.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        answer.reason(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
    }
    // nginx's auth_request drops a subrequest's body; this header carries the reason
    // to its error page (examples/gateway/nginx.conf).
    if let Ok(reason) = HeaderValue::from_str(&answer.reason()) {
        response.headers_mut().insert(HeaderName::from_static(REFUSAL_HEADER), reason);
    }
    response
}

#[derive(Clone)]
struct OpsState {
    registry: Arc<Registry>,
    synced: Arc<Synced>,
}

/// `/healthz`, `/readyz` (503 until the three kinds have been listed, and while a
/// watch has kept failing past its stale bound) and `/metrics`.
pub fn ops_router(registry: Arc<Registry>, synced: Arc<Synced>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(OpsState { registry, synced })
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    match state.synced.readiness() {
        Readiness::Ready => (StatusCode::OK, "ready: Organizations, Groups and Applications listed".to_string()),
        Readiness::Listing => {
            (StatusCode::SERVICE_UNAVAILABLE, "listing Organizations, Groups and Applications".to_string())
        }
        Readiness::Stale(kind) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the {kind} watch keeps failing: the key index can no longer be kept current"),
        ),
    }
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    crate::http::encode_metrics(&state.registry)
}
