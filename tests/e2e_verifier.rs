//! The gateway key verifier (`payi-operator verifier`, the real binary) against the
//! real control plane and the operator:
//!
//! - a real nginx (Debian package, installed by `hack/tools/apt.sh` when missing)
//!   runs `examples/gateway/nginx.conf` with `auth_request` to the verifier's HTTP
//!   port in front of a loopback upstream that records what reaches it;
//! - a tonic client drives the Envoy ext_authz gRPC API.
//!
//! Refusals after a rotation's grace period, an Application's deletion and a
//! parent's deletion are timed: each must come within 2 s.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::ext_authz as grpc;
use common::nginx::{Nginx, Upstream};
use common::verifier::{Reply, Verifier, request};
use common::{Operator, TestEnv, app_with_reason, eventually, key_of, unique};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use payi_operator::crd::Application;
use payi_operator::key::ApiKey;
use serde_json::json;

/// What an OK answer removes when the request named no use case, run or user.
const CONTEXT_HEADERS: [&str; 4] = ["x-payi-use-case", "x-payi-use-case-version", "x-payi-use-case-id", "x-payi-user"];

/// The longest a key may keep working after it should stop.
const REFUSAL_LIMIT: Duration = Duration::from_secs(2);

async fn through_nginx(nginx: &Nginx, key: &str) -> Reply {
    let bearer = format!("Bearer {key}");
    request(&nginx.addr, "/v1/chat/completions", &[("Authorization", &bearer), ("X-Payi-Group", "forged")])
        .await
        .expect("nginx answers")
}

/// Polls until nginx refuses `key`, and returns how long after `since` that was.
async fn refused_after(nginx: &Nginx, key: &str, since: Instant) -> Duration {
    loop {
        if through_nginx(nginx, key).await.status == 401 {
            return since.elapsed();
        }
        assert!(since.elapsed() < Duration::from_secs(30), "the key still works 30 s later");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create_app(env: &TestEnv, name: &str, group: &str, rotation: serde_json::Value) -> String {
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "payi.io/v1alpha1", "kind": "Application", "metadata": {"name": name},
        "spec": {"groupRef": {"name": group}, "keyRotation": rotation}
    }))
    .unwrap();
    env.apps().create(&PostParams::default(), &app).await.unwrap();
    app_with_reason(env, name, "KeyIssued").await;
    key_of(&env.secrets().get(&format!("{name}-payi-key")).await.unwrap())
}

/// Deletes the test's namespace and the cluster-scoped objects it made.
async fn clean_up(env: &TestEnv, orgs: &[&str], groups: &[&str]) {
    for group in groups {
        common::delete(&env.groups(), group).await;
    }
    for org in orgs {
        common::delete(&env.orgs(), org).await;
    }
    common::delete(&Api::<Namespace>::all(env.client.clone()), &env.namespace).await;
}

#[tokio::test]
async fn nginx_auth_request_lets_live_keys_through_with_attribution_and_refuses_the_rest() {
    Operator::shared();
    let env = TestEnv::new("verifier-nginx").await;
    let (org, group) = env.org_and_group().await;
    let key = create_app(&env, "chat", &group, json!({"gracePeriod": "4s"})).await;

    let verifier = Verifier::start("nginx", &[]).await;
    let upstream = Upstream::start().await;
    let nginx = Nginx::start(&verifier.http, &upstream.addr).await;

    // A live key reaches the upstream with the four attribution headers (the
    // client's forged one replaced) and without the key.
    let ok = eventually("nginx to let the live key through", || async {
        let reply = through_nginx(&nginx, &key).await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_eq!(ok.body, "upstream reached");
    let seen = upstream.last();
    assert_eq!(seen.get("x-payi-organization"), Some(&org));
    assert_eq!(seen.get("x-payi-group"), Some(&group));
    assert_eq!(seen.get("x-payi-application").map(String::as_str), Some("chat"));
    assert_eq!(seen.get("x-payi-namespace"), Some(&env.namespace));
    assert!(seen.values().all(|v| !v.contains(&key)), "the upstream saw the key: {seen:?}");

    // Unknown, malformed and missing keys: 401 from nginx with the challenge; the
    // upstream never hears of them.
    let before = upstream.count();
    let unknown = ApiKey::mint().unwrap().expose().to_string();
    let mut corrupted = key.clone();
    corrupted.pop();
    corrupted.push(if key.ends_with('2') { '3' } else { '2' });
    for (what, presented) in
        [("unknown", unknown.as_str()), ("corrupted", corrupted.as_str()), ("foreign", "sk-live-0123456789")]
    {
        let reply = through_nginx(&nginx, presented).await;
        assert_eq!(reply.status, 401, "{what} key: {}", reply.head);
        assert!(reply.head.contains(r#"www-authenticate: bearer realm="payi""#), "{what} key: {}", reply.head);
    }
    let missing = request(&nginx.addr, "/v1/models", &[]).await.unwrap();
    assert_eq!(missing.status, 401);
    assert_eq!(upstream.count(), before, "a refused request reached the upstream");

    // Rotation with a 4 s grace period: both keys work, then the previous one is
    // refused within 2 s of its expiresAt.
    let annotate = json!({"metadata": {"annotations": {"payi.io/rotate-key": "1"}}});
    env.apps().patch("chat", &PatchParams::default(), &Patch::Merge(annotate)).await.unwrap();
    let (new_key, expires) = eventually("the rotation to show in status", || async {
        let secret = env.secrets().get("chat-payi-key").await.ok()?;
        let status = env.apps().get("chat").await.ok()?.status?;
        let previous = status.keys.iter().find(|k| k.secret_key == "PAYI_API_KEY_PREVIOUS")?;
        let new_key = key_of(&secret);
        (new_key != key).then(|| (new_key, previous.expires_at.clone().unwrap().0))
    })
    .await;
    eventually("nginx to let the new key through", || async {
        (through_nginx(&nginx, &new_key).await.status == 200).then_some(())
    })
    .await;
    let until_expiry = |at: k8s_openapi::jiff::Timestamp| {
        let left = at.as_millisecond() - k8s_openapi::jiff::Timestamp::now().as_millisecond();
        Duration::from_millis(left.max(0) as u64)
    };
    let left = until_expiry(expires);
    if left > Duration::from_millis(500) {
        assert_eq!(through_nginx(&nginx, &key).await.status, 200, "the previous key during its grace period");
        println!("previous key accepted with {left:?} of its grace period left");
    } else {
        println!("too little of the grace period left ({left:?}) to check the previous key is accepted");
    }
    tokio::time::sleep(until_expiry(expires)).await;
    let late = refused_after(&nginx, &key, Instant::now()).await;
    println!("previous key refused {late:?} after its expiresAt");
    assert!(late <= REFUSAL_LIMIT, "the previous key was still accepted {late:?} after it expired");
    assert_eq!(through_nginx(&nginx, &new_key).await.status, 200);

    // Deleting the Application refuses its key within 2 s.
    let since = Instant::now();
    common::delete(&env.apps(), "chat").await;
    let after_delete = refused_after(&nginx, &new_key, since).await;
    println!("key refused {after_delete:?} after its Application was deleted");
    assert!(after_delete <= REFUSAL_LIMIT, "refused only {after_delete:?} after the Application was deleted");

    // Deleting a parent (the Group, then, for another Application, the Organization)
    // refuses the keys below it within 2 s, before the operator has done anything.
    let (org2, group2) = env.org_and_group().await;
    let group3 = unique("grp");
    env.create_group(&group3, &org2).await;
    let in_group = create_app(&env, "in-group", &group2, json!(null)).await;
    let in_org = create_app(&env, "in-org", &group3, json!(null)).await;
    for key in [&in_group, &in_org] {
        eventually("nginx to let the key through", || async {
            (through_nginx(&nginx, key).await.status == 200).then_some(())
        })
        .await;
    }
    let since = Instant::now();
    common::delete(&env.groups(), &group2).await;
    let after_group = refused_after(&nginx, &in_group, since).await;
    println!("key refused {after_group:?} after its Group was deleted");
    assert!(after_group <= REFUSAL_LIMIT, "refused only {after_group:?} after the Group was deleted");
    assert_eq!(through_nginx(&nginx, &in_org).await.status, 200, "another Group's key is unaffected");
    let since = Instant::now();
    common::delete(&env.orgs(), &org2).await;
    let after_org = refused_after(&nginx, &in_org, since).await;
    println!("key refused {after_org:?} after its Organization was deleted");
    assert!(after_org <= REFUSAL_LIMIT, "refused only {after_org:?} after the Organization was deleted");

    // Counted per Application and decision; keys never in the verifier's log.
    let metrics = verifier.metrics().await;
    let allowed = format!(
        r#"payi_gateway_requests_total{{organization="{org}",group="{group}",application="chat",use_case="",decision="allowed"}}"#
    );
    assert!(metrics.contains(&allowed), "{metrics}");
    for decision in ["unknown", "malformed", "missing", "expired", "orphaned"] {
        assert!(metrics.contains(&format!(r#"decision="{decision}""#)), "no {decision} count in:\n{metrics}");
    }
    let logs = verifier.logs();
    for secret in [&key, &new_key, &in_group, &in_org, &unknown] {
        assert!(!logs.contains(secret.as_str()), "a key reached the verifier's log");
    }
    clean_up(&env, &[&org, &org2], &[&group, &group3]).await;
}

#[tokio::test]
async fn envoy_ext_authz_grpc_check_allows_live_keys_and_denies_the_rest() {
    Operator::shared();
    let env = TestEnv::new("verifier-grpc").await;
    let (org, group) = env.org_and_group().await;
    let key = create_app(&env, "agent", &group, json!(null)).await;
    let verifier = Verifier::start("grpc", &["--key-header", "X-Api-Key", "--strip-key-header"]).await;

    let bearer = format!("Bearer {key}");
    let response = eventually("the verifier to know the key", || async {
        let response = grpc::check(&verifier, &[("authorization", &bearer)]).await;
        (response.status.as_ref()?.code == 0).then_some(response)
    })
    .await;
    let (set, removed) = grpc::ok_headers(&response);
    let want: HashMap<String, String> = [
        ("x-payi-organization", org.as_str()),
        ("x-payi-group", group.as_str()),
        ("x-payi-application", "agent"),
        ("x-payi-namespace", env.namespace.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(set, want);
    // The use case, run and user headers the request did not name are removed too.
    assert_eq!(removed, [CONTEXT_HEADERS.as_slice(), &["authorization"]].concat());

    // The configured header wins, and is the one stripped.
    let (_, removed) = grpc::ok_headers(&grpc::check(&verifier, &[("x-api-key", &key)]).await);
    assert_eq!(removed, [CONTEXT_HEADERS.as_slice(), &["x-api-key"]].concat());

    let unknown = format!("Bearer {}", ApiKey::mint().unwrap().expose());
    assert_eq!(
        grpc::denied(&grpc::check(&verifier, &[("authorization", &unknown)]).await),
        (401, "unknown API key".into())
    );
    assert_eq!(
        grpc::denied(&grpc::check(&verifier, &[("x-api-key", "payi_nope")]).await),
        (401, "malformed API key".into())
    );
    assert_eq!(grpc::denied(&grpc::check(&verifier, &[]).await), (401, "no API key in the request".into()));

    // Deleting the Application denies its key within 2 s.
    let since = Instant::now();
    common::delete(&env.apps(), "agent").await;
    loop {
        let response = grpc::check(&verifier, &[("authorization", &bearer)]).await;
        if response.status.as_ref().map(|s| s.code) != Some(0) {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(30), "still allowed 30 s after deletion");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = since.elapsed();
    println!("gRPC: key denied {took:?} after its Application was deleted");
    assert!(took <= REFUSAL_LIMIT, "denied only {took:?} after deletion");
    assert!(verifier.metrics().await.contains(r#"payi_gateway_request_duration_seconds_count{protocol="grpc"}"#));
    assert!(!verifier.logs().contains(&key), "the key reached the verifier's log");
    clean_up(&env, &[&org], &[&group]).await;
}
