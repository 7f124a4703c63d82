//! A tonic client of the verifier's Envoy ext_authz v3 API, built from Envoy's own protos (envoy-types).
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse, attribute_context};

use std::collections::HashMap;

use super::verifier::Verifier;

pub async fn check(verifier: &Verifier, headers: &[(&str, &str)]) -> CheckResponse {
    let mut client = AuthorizationClient::connect(format!("http://{}", verifier.grpc)).await.expect("gRPC connect");
    let http = attribute_context::HttpRequest {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request { http: Some(http), ..Default::default() }),
            ..Default::default()
        }),
    };
    client.check(request).await.expect("Check").into_inner()
}

/// The headers an OK answer sets, and the ones it removes.
pub fn ok_headers(response: &CheckResponse) -> (HashMap<String, String>, Vec<String>) {
    assert_eq!(response.status.as_ref().map(|s| s.code), Some(0), "not OK: {response:?}");
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else { panic!("no OK response") };
    let set = ok.headers.iter().filter_map(|h| h.header.as_ref()).map(|h| (h.key.clone(), h.value.clone()));
    (set.collect(), ok.headers_to_remove.clone())
}

/// The HTTP status and body of a denied answer for a bad key (gRPC UNAUTHENTICATED).
pub fn denied(response: &CheckResponse) -> (i32, String) {
    denied_with(response, tonic::Code::Unauthenticated)
}

/// The HTTP status and body of a denied answer with the gRPC status `code`.
pub fn denied_with(response: &CheckResponse, code: tonic::Code) -> (i32, String) {
    assert_eq!(response.status.as_ref().map(|s| s.code), Some(code as i32), "{response:?}");
    let Some(HttpResponse::DeniedResponse(denied)) = &response.http_response else { panic!("not denied") };
    (denied.status.as_ref().map_or(0, |s| s.code), denied.body.clone())
}
