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

use super::http::{CHALLENGE, attribution_headers};
use super::{Answer, Verifier};

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
        let answer = self.verifier.check("grpc", |name| headers.get(name).map(String::as_str));
        Ok(Response::new(instructions(&answer, self.verifier.strips_key_header())))
    }
}

/// Envoy's instructions for an answer; with `strip`, an OK removes the key's header.
pub fn instructions(answer: &Answer, strip: bool) -> CheckResponse {
    let mut response = CheckResponse::new();
    let Some(attribution) = answer.allowed() else {
        return denied(answer);
    };
    let mut ok = OkHttpResponseBuilder::new();
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    for (name, value) in attribution_headers(attribution) {
        ok.add_header(name, value, overwrite, false);
    }
    // The use case, run and user are set when the request named them and removed
    // when it did not, so a client cannot send its own past the gateway.
    for (name, value) in answer.context.headers() {
        match value {
            Some(value) => ok.add_header(name, value, overwrite, false),
            None => ok.remove_header(name),
        };
    }
    if let Some(header) = answer.key_header.as_deref().filter(|_| strip) {
        ok.remove_header(header);
    }
    response.set_status(Status::ok("")).set_http_response(ok.build());
    response
}

fn denied(answer: &Answer) -> CheckResponse {
    let reason = answer.reason();
    let mut denied = DeniedHttpResponseBuilder::new();
    denied.add_header("content-type", "text/plain; charset=utf-8", None, false).set_body(&reason);
    let status = if answer.decision.http_status() == 403 {
        denied.set_http_status(HttpStatusCode::Forbidden);
        Status::permission_denied(reason)
    } else {
        denied.set_http_status(HttpStatusCode::Unauthorized).add_header(
            "www-authenticate",
            CHALLENGE,
            Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
            false,
        );
        Status::unauthenticated(reason)
    };
    let mut response = CheckResponse::new();
    response.set_status(status).set_http_response(denied.build());
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
    use crate::verifier::use_case::{Refusal, RequestContext, Resolved};
    use envoy_types::ext_authz::v3::pb::HttpResponse;

    fn allowed() -> Answer {
        Answer {
            decision: Decision::Allowed,
            attribution: Some(Attribution {
                organization: "acme".into(),
                group: "eng".into(),
                application: "chat".into(),
                namespace: "team".into(),
                use_cases: Default::default(),
                limits: Default::default(),
            }),
            context: RequestContext::default(),
            refusal: None,
            key_header: Some("x-api-key".into()),
        }
    }

    fn ok_headers(response: &CheckResponse) -> (Vec<(String, String)>, Vec<String>) {
        let Some(HttpResponse::OkResponse(ok)) = response.http_response.as_ref() else { panic!("no OK response") };
        let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
        assert!(ok.headers.iter().all(|h| h.append_action == overwrite), "every header overwrites");
        let set = ok
            .headers
            .iter()
            .map(|h| {
                let hv = h.header.as_ref().unwrap();
                (hv.key.clone(), hv.value.clone())
            })
            .collect();
        (set, ok.headers_to_remove.clone())
    }

    #[test]
    fn ok_overwrites_the_attribution_headers_removes_unsent_context_and_may_strip_the_key() {
        let response = instructions(&allowed(), true);
        assert_eq!(response.status.as_ref().unwrap().code, 0);
        let (set, removed) = ok_headers(&response);
        let set: Vec<(&str, &str)> = set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            set,
            [
                ("x-payi-organization", "acme"),
                ("x-payi-group", "eng"),
                ("x-payi-application", "chat"),
                ("x-payi-namespace", "team"),
            ]
        );
        assert_eq!(
            removed,
            ["x-payi-use-case", "x-payi-use-case-version", "x-payi-use-case-id", "x-payi-user", "x-api-key"]
        );
        let (_, kept) = ok_headers(&instructions(&allowed(), false));
        assert!(!kept.contains(&"x-api-key".to_string()));
    }

    #[test]
    fn ok_sets_the_use_case_run_and_user_the_request_named() {
        let mut answer = allowed();
        answer.context = RequestContext {
            use_case: Some(Resolved { name: "summarize".into(), label: "summarize".into(), version: 2 }),
            instance: Some("run-1".into()),
            user: Some("alice".into()),
        };
        let (set, removed) = ok_headers(&instructions(&answer, false));
        for header in [
            ("x-payi-use-case", "summarize"),
            ("x-payi-use-case-version", "2"),
            ("x-payi-use-case-id", "run-1"),
            ("x-payi-user", "alice"),
        ] {
            assert!(set.contains(&(header.0.to_string(), header.1.to_string())), "{header:?} in {set:?}");
        }
        assert!(removed.is_empty());
    }

    #[test]
    fn a_refused_use_case_is_a_403_that_names_it() {
        let mut answer = allowed();
        answer.decision = Decision::UseCaseRefused;
        answer.refusal = Some(Refusal::Undeclared("translate".into()));
        let response = instructions(&answer, true);
        assert_eq!(response.status.as_ref().unwrap().code, tonic::Code::PermissionDenied as i32);
        let Some(HttpResponse::DeniedResponse(denied)) = response.http_response else { panic!("not denied") };
        assert_eq!(denied.status.unwrap().code, HttpStatusCode::Forbidden as i32);
        assert!(denied.body.contains("\"translate\" is not declared"), "{}", denied.body);
        assert!(!denied.headers.iter().any(|h| h.header.as_ref().unwrap().key == "www-authenticate"));
    }

    #[test]
    fn a_refusal_is_a_401_with_a_challenge_and_a_short_reason() {
        for decision in [Decision::Unknown, Decision::Expired, Decision::Malformed] {
            let mut answer = allowed();
            answer.decision = decision;
            let response = instructions(&answer, true);
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
