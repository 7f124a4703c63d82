//! Envoy external authorization over gRPC: `envoy.service.auth.v3.Authorization/Check`.
//!
//! An OK answer makes Envoy set the `x-payi-*` attribution headers on the request
//! (overwriting any the client sent) and, with `--strip-key-header`, remove the
//! header the key came in. A refusal is a 401 with `WWW-Authenticate` and a short
//! reason, sent by Envoy to the client.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{CheckRequestExt, CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder};
use tonic::{Request, Response, Status};

use super::Verifier;
use super::http::{CHALLENGE, attribution_headers};
use super::index::Verdict;

struct Service {
    verifier: Arc<Verifier>,
}

#[tonic::async_trait]
impl Authorization for Service {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let request = request.into_inner();
        let none = HashMap::new();
        // Envoy sends header names in lowercase.
        let headers = request.get_client_headers().unwrap_or(&none);
        let presented = self.verifier.presented_key(|name| headers.get(name).map(String::as_str));
        let verdict = self.verifier.check("grpc", presented.as_ref().map(|(key, _)| *key));
        let strip = presented.as_ref().filter(|_| self.verifier.strip_key_header).map(|(_, header)| header.as_str());
        Ok(Response::new(answer(&verdict, strip)))
    }
}

/// Envoy's instructions for a verdict; `strip` names the header to remove on OK.
pub fn answer(verdict: &Verdict, strip: Option<&str>) -> CheckResponse {
    let mut response = CheckResponse::new();
    match verdict.attribution.as_ref().filter(|_| verdict.decision.is_allowed()) {
        Some(attribution) => {
            let mut ok = OkHttpResponseBuilder::new();
            for (name, value) in attribution_headers(attribution) {
                ok.add_header(name, value, Some(HeaderAppendAction::OverwriteIfExistsOrAdd), false);
            }
            if let Some(header) = strip {
                ok.remove_header(header);
            }
            response.set_status(Status::ok("")).set_http_response(ok.build());
        }
        None => {
            let mut denied = DeniedHttpResponseBuilder::new();
            denied
                .set_http_status(HttpStatusCode::Unauthorized)
                .add_header("www-authenticate", CHALLENGE, Some(HeaderAppendAction::OverwriteIfExistsOrAdd), false)
                .add_header("content-type", "text/plain; charset=utf-8", None, false)
                .set_body(verdict.decision.reason());
            response.set_status(Status::unauthenticated(verdict.decision.reason())).set_http_response(denied.build());
        }
    }
    response
}

/// Serves Check on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    verifier: Arc<Verifier>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let result = tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(Service { verifier }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "gRPC server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verifier::index::{Attribution, Decision};
    use envoy_types::ext_authz::v3::pb::HttpResponse;

    fn allowed() -> Verdict {
        Verdict {
            decision: Decision::Allowed,
            attribution: Some(Attribution {
                organization: "acme".into(),
                group: "eng".into(),
                application: "chat".into(),
                namespace: "team".into(),
            }),
        }
    }

    #[test]
    fn ok_overwrites_the_attribution_headers_and_may_strip_the_key() {
        let response = answer(&allowed(), Some("x-api-key"));
        assert_eq!(response.status.as_ref().unwrap().code, 0);
        let Some(HttpResponse::OkResponse(ok)) = response.http_response else { panic!("no OK response") };
        let headers: Vec<(String, String, i32)> = ok
            .headers
            .iter()
            .map(|h| {
                let hv = h.header.as_ref().unwrap();
                (hv.key.clone(), hv.value.clone(), h.append_action)
            })
            .collect();
        let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
        assert_eq!(
            headers,
            [
                ("x-payi-organization".into(), "acme".into(), overwrite),
                ("x-payi-group".into(), "eng".into(), overwrite),
                ("x-payi-application".into(), "chat".into(), overwrite),
                ("x-payi-namespace".into(), "team".into(), overwrite),
            ]
        );
        assert_eq!(ok.headers_to_remove, ["x-api-key"]);
        let Some(HttpResponse::OkResponse(kept)) = answer(&allowed(), None).http_response else { panic!() };
        assert!(kept.headers_to_remove.is_empty());
    }

    #[test]
    fn a_refusal_is_a_401_with_a_challenge_and_a_short_reason() {
        for decision in [Decision::Unknown, Decision::Expired, Decision::Malformed] {
            let mut verdict = allowed();
            verdict.decision = decision;
            let response = answer(&verdict, Some("authorization"));
            assert_eq!(response.status.as_ref().unwrap().code, tonic::Code::Unauthenticated as i32);
            let Some(HttpResponse::DeniedResponse(denied)) = response.http_response else { panic!("not denied") };
            assert_eq!(denied.status.unwrap().code, HttpStatusCode::Unauthorized as i32);
            assert_eq!(denied.body, decision.reason());
            let challenge = denied.headers.iter().find_map(|h| {
                let hv = h.header.as_ref()?;
                (hv.key == "www-authenticate").then(|| hv.value.clone())
            });
            assert_eq!(challenge.as_deref(), Some(CHALLENGE));
        }
    }
}
