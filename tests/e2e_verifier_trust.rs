//! What the verifier trusts in Application status, with no operator running: the
//! test writes status itself (as cluster admin, which no chart role for people
//! may do; see e2e_chart), so it can publish what the operator never would.
//!
//! - a digest claimed by two Applications is refused for both, logged with its
//!   fingerprint only, and counted in `payi_gateway_digest_conflicts`;
//! - a Ready condition for an older generation publishes nothing.
//!
//! Its own test binary: an operator in the same process would rewrite the status.

mod common;

use std::time::{Duration, Instant};

use common::verifier::{Verifier, request};
use common::{TestEnv, eventually};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use payi_operator::crd::Application;
use payi_operator::key::{self, ApiKey};
use serde_json::json;

async fn check(verifier: &Verifier, key: &str) -> (u16, String) {
    let bearer = format!("Bearer {key}");
    let reply = request(&verifier.http, "/", &[("Authorization", &bearer)]).await.expect("the verifier answers");
    (reply.status, reply.body)
}

/// An Application whose status says Ready for `observed` and publishes `keys` as current keys.
async fn publish(env: &TestEnv, name: &str, group: &str, keys: &[&str], observed_offset: i64) {
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "payi.io/v1alpha1", "kind": "Application", "metadata": {"name": name},
        "spec": {"groupRef": {"name": group}}
    }))
    .unwrap();
    let created = env.apps().create(&PostParams::default(), &app).await.unwrap();
    let observed = created.metadata.generation.unwrap() + observed_offset;
    let keys: Vec<_> = keys
        .iter()
        .map(|k| {
            json!({"secretKey": "PAYI_API_KEY", "fingerprint": key::fingerprint(k), "digest": key::digest(k),
                   "createdAt": "2026-01-01T00:00:00Z"})
        })
        .collect();
    let status = json!({"status": {
        "observedGeneration": observed,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KeyIssued", "message": "test",
                        "observedGeneration": observed, "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "keys": keys
    }});
    env.apps().patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
}

#[tokio::test]
async fn a_contested_digest_is_refused_for_both_and_a_stale_ready_publishes_nothing() {
    let env = TestEnv::new("verifier-trust").await;
    let (org, group) = env.org_and_group().await;
    let (shared, own, stale) = (
        ApiKey::mint().unwrap().expose().to_string(),
        ApiKey::mint().unwrap().expose().to_string(),
        ApiKey::mint().unwrap().expose().to_string(),
    );
    publish(&env, "first", &group, &[&shared], 0).await;
    publish(&env, "second", &group, &[&own, &shared], 0).await;
    publish(&env, "stale", &group, &[&stale], -1).await;
    let verifier = Verifier::start("trust", &[]).await;

    eventually("the uncontested key to be allowed", || async { (check(&verifier, &own).await.0 == 200).then_some(()) })
        .await;
    assert_eq!(check(&verifier, &shared).await, (401, "API key not attributable".to_string()));
    assert_eq!(check(&verifier, &stale).await, (401, "unknown API key".to_string()));
    let metrics = verifier.metrics().await;
    assert!(metrics.contains("payi_gateway_digest_conflicts 1"), "{metrics}");
    assert!(metrics.contains(r#"decision="conflict""#), "{metrics}");

    let logs = verifier.logs();
    let fingerprint = key::fingerprint(&shared);
    let warning = logs.lines().find(|l| l.contains(&fingerprint)).expect("the conflict is logged with its fingerprint");
    assert!(warning.contains("WARN"), "{warning}");
    for app in ["first", "second"] {
        assert!(warning.contains(&format!("{}/{app}", env.namespace)), "{warning}");
    }
    let digest = key::digest(&shared);
    assert!(!logs.contains(&digest["sha256:".len()..]), "the full digest reached the log");
    assert!(!logs.contains(&shared) && !logs.contains(&own), "a key reached the log");

    // The conflict ends when one claimant goes; the other's key works again.
    let since = Instant::now();
    common::delete(&env.apps(), "second").await;
    eventually("the remaining claimant's key to be allowed", || async {
        (check(&verifier, &shared).await.0 == 200).then_some(())
    })
    .await;
    assert!(since.elapsed() <= Duration::from_secs(2), "took {:?}", since.elapsed());
    assert!(verifier.metrics().await.contains("payi_gateway_digest_conflicts 0"));

    common::delete(&env.groups(), &group).await;
    common::delete(&env.orgs(), &org).await;
    common::delete(&Api::<Namespace>::all(env.client.clone()), &env.namespace).await;
}
