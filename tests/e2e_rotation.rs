//! Key rotation against the real control plane: kubectl annotation, GitOps
//! request, grace period expiry.

mod common;

use common::{Operator, TestEnv, app_with_reason, eventually, key_of};
use kube::api::{Patch, PatchParams, PostParams};
use payi_operator::crd::Application;
use payi_operator::key::fingerprint;
use serde_json::json;

fn previous_of(secret: &k8s_openapi::api::core::v1::Secret) -> Option<String> {
    common::data_of(secret, "PAYI_API_KEY_PREVIOUS")
}

#[tokio::test]
async fn kubectl_annotate_rotates_once_and_keeps_the_old_key_working() {
    Operator::shared();
    let env = TestEnv::new("rotate-kubectl").await;
    let (_, group) = env.org_and_group().await;
    env.create_app("svc", &group).await;
    app_with_reason(&env, "svc", "KeyIssued").await;
    let old = key_of(&env.secrets().get("svc-payi-key").await.unwrap());

    let annotate = |value: &str| json!({"metadata": {"annotations": {"payi.io/rotate-key": value}}});
    env.apps().patch("svc", &PatchParams::default(), &Patch::Merge(annotate("1"))).await.unwrap();
    let secret = eventually("the Secret to hold a new key and the old one as previous", || async {
        let s = env.secrets().get("svc-payi-key").await.ok()?;
        (key_of(&s) != old && previous_of(&s).as_deref() == Some(old.as_str())).then_some(s)
    })
    .await;
    let new = key_of(&secret);
    let status = eventually("status to list both keys", || async {
        let s = env.apps().get("svc").await.ok()?.status?;
        (s.keys.len() == 2 && s.key_fingerprint.as_deref() == Some(fingerprint(&new).as_str())).then_some(s)
    })
    .await;
    assert_eq!(status.keys[1].fingerprint, fingerprint(&old));
    assert!(status.keys[1].expires_at.is_some(), "the previous key has an expiry");
    assert_eq!(status.rotation.unwrap().handled_annotation.as_deref(), Some("1"));
    env.await_events("svc", "KeyRotated", 1).await;

    // The same annotation again, an unrelated change, a resync: no further rotation.
    env.apps()
        .patch("svc", &PatchParams::default(), &Patch::Merge(json!({"spec": {"displayName": "Service"}})))
        .await
        .unwrap();
    app_with_reason(&env, "svc", "KeyIssued").await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(key_of(&env.secrets().get("svc-payi-key").await.unwrap()), new, "rotated twice for one request");
}

#[tokio::test]
async fn a_gitops_request_rotates_and_the_previous_key_expires_after_the_grace_period() {
    Operator::shared();
    let env = TestEnv::new("rotate-gitops").await;
    let (_, group) = env.org_and_group().await;
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "payi.io/v1alpha1", "kind": "Application", "metadata": {"name": "batch"},
        "spec": {"groupRef": {"name": group}, "keyRotation": {"gracePeriod": "3s"}}
    }))
    .unwrap();
    env.apps().create(&PostParams::default(), &app).await.unwrap();
    app_with_reason(&env, "batch", "KeyIssued").await;
    let old = key_of(&env.secrets().get("batch-payi-key").await.unwrap());

    let request = json!({"spec": {"keyRotation": {"requestedAt": "2026-11-29T12:00:00Z", "gracePeriod": "3s"}}});
    env.apps().patch("batch", &PatchParams::default(), &Patch::Merge(request)).await.unwrap();
    let rotated = eventually("the rotation", || async {
        let s = env.secrets().get("batch-payi-key").await.ok()?;
        (previous_of(&s).as_deref() == Some(old.as_str())).then_some(key_of(&s))
    })
    .await;
    // No watch event comes at expiry: the operator requeued itself for it.
    eventually("the previous key to be removed after 3s", || async {
        let s = env.secrets().get("batch-payi-key").await.ok()?;
        let status = env.apps().get("batch").await.ok()?.status?;
        (previous_of(&s).is_none() && status.keys.len() == 1).then_some(())
    })
    .await;
    assert_eq!(key_of(&env.secrets().get("batch-payi-key").await.unwrap()), rotated);
    env.await_events("batch", "PreviousKeyRemoved", 1).await;
}

#[tokio::test]
async fn the_schema_rejects_rotation_settings_it_cannot_honour() {
    let env = TestEnv::new("rotate-schema").await;
    let apply = PatchParams::apply("payi-tests");
    let cases = [
        (json!({"every": "10m"}), "every must be a duration of at least 1h"),
        (json!({"every": "weekly"}), "every must be a duration of at least 1h"),
        (json!({"gracePeriod": "-1h"}), "gracePeriod must be a duration from 0s to 2160h"),
        (json!({"gracePeriod": "9999h"}), "gracePeriod must be a duration from 0s to 2160h"),
    ];
    for (rotation, want) in cases {
        let raw = json!({"apiVersion": "payi.io/v1alpha1", "kind": "Application", "metadata": {"name": "bad"},
            "spec": {"groupRef": {"name": "g"}, "keyRotation": rotation}});
        let err = env.apps().patch("bad", &apply, &Patch::Apply(raw)).await.expect_err("accepted");
        assert!(err.to_string().contains(want), "want {want:?} in: {err}");
    }
}
