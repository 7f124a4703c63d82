//! Use cases, the fourth level of attribution, end to end: Applications declare
//! them (`spec.useCases`), the operator publishes them in status, and the real
//! verifier binary attributes requests that name them in Pay-i's `xProxy-*`
//! headers, through a real nginx (`examples/gateway/nginx.conf`) and through the
//! Envoy ext_authz gRPC API. Renaming or removing a use case is timed: its
//! attribution must stop within 2 s.

mod common;

use std::time::{Duration, Instant};

use common::ext_authz as grpc;
use common::nginx::{Nginx, Upstream};
use common::verifier::{Reply, Verifier, request};
use common::{Operator, TestEnv, eventually};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

/// The longest a renamed or removed use case may keep being attributed.
const STOP_LIMIT: Duration = Duration::from_secs(2);

async fn set_use_cases(env: &TestEnv, name: &str, use_cases: Value) {
    let patch = json!({"spec": {"useCases": use_cases}});
    env.apps().patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
}

async fn via_nginx(nginx: &Nginx, headers: &[(&str, &str)]) -> Reply {
    request(&nginx.addr, "/v1/chat/completions", headers).await.expect("nginx answers")
}

/// Polls until `probe` says the use case is refused; returns how long after `since`.
async fn stopped_after<F, Fut>(since: Instant, mut refused: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if refused().await {
            return since.elapsed();
        }
        assert!(since.elapsed() < Duration::from_secs(30), "the use case is still attributed 30 s later");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn clean_up(env: &TestEnv, org: &str, group: &str) {
    common::delete(&env.groups(), group).await;
    common::delete(&env.orgs(), org).await;
    common::delete(&Api::<Namespace>::all(env.client.clone()), &env.namespace).await;
}

#[tokio::test]
async fn status_publishes_declared_use_cases_with_versions_defaulted() {
    Operator::shared();
    let env = TestEnv::new("usecase-status").await;
    let (org, group) = env.org_and_group().await;
    let use_cases = json!([{"name": "summarize", "description": "tickets"}, {"name": "draft", "version": 4}]);
    env.create_app_with_key("support", &group, json!({"useCases": use_cases})).await;
    let status = env.apps().get("support").await.unwrap().status.unwrap().use_cases.unwrap();
    assert_eq!((status.declared, status.live), (2, 2));
    let items: Vec<(String, i64)> = status.items.iter().map(|i| (i.name.clone(), i.version)).collect();
    assert_eq!(items, [("summarize".to_string(), 1), ("draft".to_string(), 4)]);
    // The spec keeps what Git says: no default written into it.
    let spec = env.apps().get("support").await.unwrap().spec;
    assert_eq!(spec.use_cases[0].version, None);
    assert_eq!(spec.use_case_policy, None);
    clean_up(&env, &org, &group).await;
}

#[tokio::test]
async fn nginx_passes_pay_i_use_case_headers_on_and_refuses_undeclared_ones_by_name() {
    Operator::shared();
    let env = TestEnv::new("usecase-nginx").await;
    let (org, group) = env.org_and_group().await;
    let use_cases = json!([{"name": "summarize_ticket", "version": 2}, {"name": "draft_reply"}]);
    let key = env.create_app_with_key("support", &group, json!({"useCases": use_cases})).await;

    let verifier = Verifier::start("usecase-nginx", &[]).await;
    let upstream = Upstream::start().await;
    let nginx = Nginx::start(&verifier.http, &upstream.addr).await;

    // What Pay-i's SDK sends: the key in xProxy-Api-Key, the provider's own key in
    // Authorization, and the use case, its run and the user in xProxy-* headers. A
    // forged x-payi-use-case loses to Pay-i's header.
    let pay_i = [
        ("xProxy-Api-Key", key.as_str()),
        ("Authorization", "Bearer sk-provider-key"),
        ("xProxy-UseCase-Name", "summarize_ticket"),
        ("xProxy-UseCase-ID", "run-0001"),
        ("xProxy-User-ID", "alice@example.com"),
        ("X-Payi-Use-Case", "forged"),
        ("X-Payi-Application", "forged"),
    ];
    let ok = eventually("nginx to let the Pay-i request through", || async {
        let reply = via_nginx(&nginx, &pay_i).await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_eq!(ok.body, "upstream reached");
    let seen = upstream.last();
    let header = |name: &str| seen.get(name).map(String::as_str);
    assert_eq!(header("x-payi-organization"), Some(org.as_str()));
    assert_eq!(header("x-payi-group"), Some(group.as_str()));
    assert_eq!(header("x-payi-application"), Some("support"));
    assert_eq!(header("x-payi-use-case"), Some("summarize_ticket"));
    assert_eq!(header("x-payi-use-case-version"), Some("2"));
    assert_eq!(header("x-payi-use-case-id"), Some("run-0001"));
    assert_eq!(header("x-payi-user"), Some("alice@example.com"));
    assert!(seen.values().all(|v| !v.contains(&key)), "the upstream saw the key: {seen:?}");

    // An earlier version is accepted as such; a later one is refused.
    let v1 = [
        ("xProxy-Api-Key", key.as_str()),
        ("xProxy-UseCase-Name", "summarize_ticket"),
        ("xProxy-UseCase-Version", "1"),
    ];
    assert_eq!(via_nginx(&nginx, &v1).await.status, 200);
    assert_eq!(upstream.last().get("x-payi-use-case-version").map(String::as_str), Some("1"));

    // No use case: attributed to the Application alone; whatever use-case headers
    // of our own the client did not send are absent upstream.
    let plain = [("xProxy-Api-Key", key.as_str())];
    assert_eq!(via_nginx(&nginx, &plain).await.status, 200);
    let seen = upstream.last();
    assert_eq!(seen.get("x-payi-application").map(String::as_str), Some("support"));
    for absent in ["x-payi-use-case", "x-payi-use-case-version", "x-payi-use-case-id", "x-payi-user"] {
        assert!(!seen.contains_key(absent), "{absent} reached the upstream: {seen:?}");
    }

    // Refused with a 403 that names the problem (the key is fine: no 401), and the
    // upstream never hears of it.
    let before = upstream.count();
    let refusals: [(&[(&str, &str)], &str); 5] = [
        (&[("xProxy-UseCase-Name", "translate")], r#"use case "translate" is not declared"#),
        (&[("X-Payi-Use-Case", "forged")], r#"use case "forged" is not declared"#),
        (&[("xProxy-UseCase-Name", "summarize_ticket"), ("xProxy-UseCase-Version", "3")], "has no version 3"),
        (&[("xProxy-UseCase-Name", "draft reply")], "malformed use case name"),
        (&[("xProxy-User-ID", "alice smith")], "malformed xProxy-User-ID"),
    ];
    for (extra, reason) in refusals {
        let mut headers = vec![("xProxy-Api-Key", key.as_str())];
        headers.extend_from_slice(extra);
        let reply = via_nginx(&nginx, &headers).await;
        assert_eq!(reply.status, 403, "{extra:?}: {}", reply.head);
        assert!(reply.body.contains(reason), "{extra:?}: {:?} does not say {reason:?}", reply.body);
    }
    assert_eq!(upstream.count(), before, "a refused request reached the upstream");

    // Renaming a use case stops its attribution within 2 s.
    let since = Instant::now();
    set_use_cases(&env, "support", json!([{"name": "summarize_ticket_v2"}, {"name": "draft_reply"}])).await;
    let old = [("xProxy-Api-Key", key.as_str()), ("xProxy-UseCase-Name", "summarize_ticket")];
    let took = stopped_after(since, || async {
        let status = via_nginx(&nginx, &old).await.status;
        assert!(status == 200 || status == 403, "the key was refused during the edit: {status}");
        status == 403
    })
    .await;
    println!("renamed use case refused {took:?} after the change was applied");
    assert!(took <= STOP_LIMIT, "the old name was attributed {took:?} after the rename");
    let new = [("xProxy-Api-Key", key.as_str()), ("xProxy-UseCase-Name", "summarize_ticket_v2")];
    assert_eq!(via_nginx(&nginx, &new).await.status, 200);

    // Counted per use case; ids never become labels; the key never reaches the log.
    let metrics = verifier.metrics().await;
    let counted = |use_case: &str, decision: &str| {
        format!(
            r#"payi_gateway_requests_total{{organization="{org}",group="{group}",application="support",use_case="{use_case}",decision="{decision}"}}"#
        )
    };
    for (use_case, decision) in
        [("summarize_ticket", "allowed"), ("", "allowed"), ("", "use_case_refused"), ("", "bad_header")]
    {
        assert!(metrics.contains(&counted(use_case, decision)), "no {use_case}/{decision} in:\n{metrics}");
    }
    assert!(!metrics.contains("alice") && !metrics.contains("run-0001"), "an id became a label:\n{metrics}");
    assert!(!verifier.logs().contains(&key), "the key reached the verifier's log");
    clean_up(&env, &org, &group).await;
}

#[tokio::test]
async fn envoy_ext_authz_attributes_use_cases_and_bounds_the_open_policy() {
    Operator::shared();
    let env = TestEnv::new("usecase-grpc").await;
    let (org, group) = env.org_and_group().await;
    let declared = env.create_app_with_key("agent", &group, json!({"useCases": [{"name": "plan"}]})).await;
    let open =
        env.create_app_with_key("lab", &group, json!({"useCasePolicy": "Open", "useCases": [{"name": "eval"}]})).await;
    let verifier = Verifier::start("usecase-grpc", &["--strip-key-header"]).await;

    let check = |key: String, use_case: Option<&'static str>| {
        let verifier = &verifier;
        async move {
            let mut headers = vec![("xproxy-api-key", key.as_str()), ("x-payi-use-case-id", "job-7")];
            headers.extend(use_case.map(|u| ("xproxy-usecase-name", u)));
            grpc::check(verifier, &headers).await
        }
    };
    let response = eventually("the verifier to know the key", || async {
        let response = check(declared.clone(), Some("plan")).await;
        (response.status.as_ref()?.code == 0).then_some(response)
    })
    .await;
    let (set, removed) = grpc::ok_headers(&response);
    assert_eq!(set.get("x-payi-application").map(String::as_str), Some("agent"));
    assert_eq!(set.get("x-payi-use-case").map(String::as_str), Some("plan"));
    assert_eq!(set.get("x-payi-use-case-version").map(String::as_str), Some("1"));
    assert_eq!(set.get("x-payi-use-case-id").map(String::as_str), Some("job-7"));
    // The user was not named, so a client-sent x-payi-user is removed; and the key's header is stripped.
    assert_eq!(removed, ["x-payi-user", "xproxy-api-key"]);

    let (status, body) =
        grpc::denied_with(&check(declared.clone(), Some("summarize")).await, tonic::Code::PermissionDenied);
    assert_eq!(status, 403);
    assert!(body.contains(r#"use case "summarize" is not declared"#), "{body}");

    // Open: any well-formed name passes on as the header, but counts under one catch-all label.
    for i in 0..20 {
        let name: &'static str = Box::leak(format!("experiment-{i}").into_boxed_str());
        let response = eventually("the open Application's key to be known", || async {
            let response = check(open.clone(), Some(name)).await;
            (response.status.as_ref()?.code == 0).then_some(response)
        })
        .await;
        assert_eq!(grpc::ok_headers(&response).0.get("x-payi-use-case").map(String::as_str), Some(name));
    }
    grpc::ok_headers(&check(open.clone(), Some("eval")).await);
    let metrics = verifier.metrics().await;
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("payi_gateway_requests_total{") && l.contains(r#"application="lab""#))
        .collect();
    let labels = |use_case: &str| {
        format!(
            r#"payi_gateway_requests_total{{organization="{org}",group="{group}",application="lab",use_case="{use_case}",decision="allowed"}}"#
        )
    };
    assert_eq!(series.len(), 2, "20 undeclared names must share one series: {series:?}");
    assert!(series.iter().any(|l| l.starts_with(&labels("(undeclared)")) && l.ends_with(" 20")), "{series:?}");
    assert!(series.iter().any(|l| l.starts_with(&labels("eval"))), "{series:?}");

    // Removing a declared use case stops its attribution within 2 s.
    let since = Instant::now();
    set_use_cases(&env, "agent", json!([])).await;
    let denied = tonic::Code::PermissionDenied as i32;
    let took = stopped_after(since, || async {
        let response = check(declared.clone(), Some("plan")).await;
        let code = response.status.as_ref().map(|s| s.code);
        // The key itself must keep working throughout the edit: only the use case goes.
        assert!(matches!(code, Some(0)) || code == Some(denied), "the key was refused during the edit: {response:?}");
        code == Some(denied)
    })
    .await;
    println!("gRPC: removed use case refused {took:?} after the change was applied");
    assert!(took <= STOP_LIMIT, "the removed use case was attributed {took:?} after removal");
    grpc::ok_headers(&check(declared.clone(), None).await);
    clean_up(&env, &org, &group).await;
}
