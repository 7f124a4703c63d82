//! The HTTP endpoints: `/healthz` (the process serves), `/readyz` (see
//! [`Readiness`]) and `/metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::health::{Health, Readiness};

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    health: Arc<Health>,
}

/// Binds the listener first, so a taken port stops the operator at start with a
/// clear error instead of leaving it running without probes.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    Ok(listener)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AppState { registry, health });
    if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(%error, "the HTTP server stopped");
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.readiness() {
        Readiness::Standby => (StatusCode::OK, "standby: waiting for the leader lease".to_string()),
        Readiness::Leading => (StatusCode::OK, "leading: caches synced, controllers running".to_string()),
        Readiness::Syncing => (StatusCode::SERVICE_UNAVAILABLE, "leading: caches still syncing".to_string()),
        Readiness::Blind(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("leading, but blind: {why}")),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    encode_metrics(&state.registry)
}

/// A `/metrics` response in OpenMetrics text, shared by the operator and the verifier.
pub fn encode_metrics(registry: &Registry) -> impl IntoResponse + use<> {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding metrics failed: {error}"),
        ),
    }
}
