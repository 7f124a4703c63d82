//! The operator against the real control plane: parents, keys, Secrets, status, deletion.

mod common;

use common::{Operator, TestEnv, app_with_reason, eventually, key_of, ready_of, unique};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use payi_operator::crd::Application;
use serde_json::json;

fn merge(value: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Merge(value)
}

#[tokio::test]
async fn manifests_applied_child_first_converge_and_roll_up() {
    Operator::shared();
    let env = TestEnv::new("order").await;
    let (org, group) = (unique("org"), unique("grp"));

    // Child first: nothing it needs exists yet.
    env.create_app("chatbot", &group).await;
    let app = app_with_reason(&env, "chatbot", "GroupNotFound").await;
    let (status, _, message) = ready_of(&app.status.unwrap().conditions).unwrap();
    assert_eq!(status, "False");
    assert!(message.contains(&group), "{message}");
    assert!(env.secrets().get_opt("chatbot-payi-key").await.unwrap().is_none(), "no key before the chain is valid");

    env.create_group(&group, &org).await;
    app_with_reason(&env, "chatbot", "OrganizationNotFound").await;

    env.create_org(&org, Some("https://api.example.com")).await;
    let app = app_with_reason(&env, "chatbot", "KeyIssued").await;
    let status = app.status.unwrap();
    assert_eq!(status.group.as_deref(), Some(group.as_str()));
    assert_eq!(status.organization.as_deref(), Some(org.as_str()));
    assert!(status.key_created_at.is_some());

    let secret = env.secrets().get("chatbot-payi-key").await.unwrap();
    let key = key_of(&secret);
    assert!(payi_operator::key::is_well_formed(&key));
    assert_eq!(status.key_fingerprint, Some(payi_operator::key::fingerprint(&key)));
    assert_eq!(secret.data.as_ref().unwrap()["PAYI_BASE_URL"].0, b"https://api.example.com");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("Application", Some(true)));
    assert_eq!(secret.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"], "payi-operator");

    let g = eventually("Group rollup", || async {
        let g = env.groups().get(&group).await.ok()?;
        let s = g.status.clone()?;
        (s.applications.total == 1 && s.applications.ready == 1).then_some(g)
    })
    .await;
    let gs = g.status.unwrap();
    assert_eq!(gs.observed_generation, g.metadata.generation);
    assert_eq!(ready_of(&gs.conditions).unwrap().0, "True");
    assert!(gs.conditions.iter().any(|c| c.type_ == "ApplicationsReady" && c.status == "True"));

    eventually("Organization rollup", || async {
        let o = env.orgs().get(&org).await.ok()?;
        let s = o.status?;
        (s.groups.total == 1 && s.groups.ready == 1 && s.applications.total == 1 && s.applications.ready == 1)
            .then_some(())
    })
    .await;

    env.await_events("chatbot", "KeyMinted", 1).await;
    let warning = env.await_events("chatbot", "GroupNotFound", 1).await;
    assert_eq!(warning[0].type_.as_deref(), Some("Warning"));
}

#[tokio::test]
async fn namespace_policy_by_selector_and_by_name() {
    Operator::shared();
    let env = TestEnv::new("policy").await;
    let (org, group) = (unique("org"), unique("grp"));
    env.create_org(&org, None).await;
    let by_label: payi_operator::crd::Group = serde_json::from_value(json!({
        "apiVersion": "payi.io/v1alpha1", "kind": "Group", "metadata": {"name": group},
        "spec": {"organizationRef": {"name": org}, "namespacePolicy": {"selector": {"matchLabels": {"payi.io/group": group}}}}
    }))
    .unwrap();
    env.groups().create(&PostParams::default(), &by_label).await.unwrap();

    env.create_app("outsider", &group).await;
    let app = app_with_reason(&env, "outsider", "NamespaceNotAllowed").await;
    let message = ready_of(&app.status.unwrap().conditions).unwrap().2;
    assert!(message.contains(&env.namespace), "{message}");
    assert!(env.secrets().get_opt("outsider-payi-key").await.unwrap().is_none());

    // Labelling the namespace admits it: the Namespace watch reconciles at once.
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(env.client.clone());
    namespaces
        .patch(
            &env.namespace,
            &PatchParams::default(),
            &merge(json!({"metadata": {"labels": {"payi.io/group": group}}})),
        )
        .await
        .unwrap();
    app_with_reason(&env, "outsider", "KeyIssued").await;

    // An empty policy admits nothing; the key already issued stays untouched.
    let before = key_of(&env.secrets().get("outsider-payi-key").await.unwrap());
    env.groups()
        .patch(&group, &PatchParams::default(), &merge(json!({"spec": {"namespacePolicy": null}})))
        .await
        .unwrap();
    app_with_reason(&env, "outsider", "NamespaceNotAllowed").await;
    assert_eq!(key_of(&env.secrets().get("outsider-payi-key").await.unwrap()), before);
}

#[tokio::test]
async fn an_existing_foreign_secret_is_never_modified() {
    Operator::shared();
    let env = TestEnv::new("conflict").await;
    let (_, group) = env.org_and_group().await;
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "billing-payi-key"}, "stringData": {"PAYI_API_KEY": "someone-elses"}
    }))
    .unwrap();
    let foreign = env.secrets().create(&PostParams::default(), &foreign).await.unwrap();

    env.create_app("billing", &group).await;
    let app = app_with_reason(&env, "billing", "SecretConflict").await;
    assert!(app.status.unwrap().key_fingerprint.is_none());
    let after = env.secrets().get("billing-payi-key").await.unwrap();
    assert_eq!(after.metadata.resource_version, foreign.metadata.resource_version, "the Secret was written to");
    env.await_events("billing", "SecretConflict", 1).await;

    // Pointing the Application at a free name resolves the conflict.
    env.apps()
        .patch("billing", &PatchParams::default(), &merge(json!({"spec": {"keySecret": {"name": "billing-key"}}})))
        .await
        .unwrap();
    let app = app_with_reason(&env, "billing", "KeyIssued").await;
    assert_eq!(app.status.unwrap().key_secret_name.as_deref(), Some("billing-key"));
    assert_eq!(key_of(&env.secrets().get("billing-payi-key").await.unwrap()), "someone-elses");
}

#[tokio::test]
async fn deleted_or_tampered_secrets_are_repaired_with_a_fresh_key() {
    Operator::shared();
    let env = TestEnv::new("repair").await;
    let (_, group) = env.org_and_group().await;
    env.create_app("svc", &group).await;
    let first = app_with_reason(&env, "svc", "KeyIssued").await.status.unwrap().key_fingerprint.unwrap();

    env.secrets().delete("svc-payi-key", &DeleteParams::default()).await.unwrap();
    let second = eventually("a new key after the Secret was deleted", || async {
        let fp = env.apps().get("svc").await.ok()?.status?.key_fingerprint?;
        let secret = env.secrets().get_opt("svc-payi-key").await.ok()??;
        (fp != first && payi_operator::key::fingerprint(&key_of(&secret)) == fp).then_some(fp)
    })
    .await;

    let tampered = json!({"data": {"PAYI_API_KEY": ByteString(b"payi_chosen_by_someone".to_vec())}});
    env.secrets().patch("svc-payi-key", &PatchParams::default(), &merge(tampered)).await.unwrap();
    eventually("a new key after the Secret's data was replaced", || async {
        let fp = env.apps().get("svc").await.ok()?.status?.key_fingerprint?;
        let key = key_of(&env.secrets().get("svc-payi-key").await.ok()?);
        (fp != second && key != "payi_chosen_by_someone" && payi_operator::key::fingerprint(&key) == fp).then_some(())
    })
    .await;
    let repaired = env.await_events("svc", "KeyRepaired", 2).await;
    assert!(repaired.iter().all(|e| e.type_.as_deref() == Some("Warning")));
}

#[tokio::test]
async fn template_drift_is_restored_and_the_key_survives_parent_moves() {
    Operator::shared();
    let env = TestEnv::new("drift").await;
    let (org, group, other) = (unique("org"), unique("grp"), unique("grp"));
    env.create_org(&org, None).await;
    env.create_group(&group, &org).await;
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "payi.io/v1alpha1", "kind": "Application", "metadata": {"name": "web"},
        "spec": {"groupRef": {"name": group}, "keySecret": {
            "labels": {"team": "web"}, "annotations": {"reloader.stakater.com/match": "true"}}}
    }))
    .unwrap();
    env.apps().create(&PostParams::default(), &app).await.unwrap();
    app_with_reason(&env, "web", "KeyIssued").await;
    let key = key_of(&env.secrets().get("web-payi-key").await.unwrap());

    let strip = json!({"metadata": {"labels": {"team": null}, "annotations": {"reloader.stakater.com/match": null}}});
    env.secrets().patch("web-payi-key", &PatchParams::default(), &merge(strip)).await.unwrap();
    eventually("the template's label and annotation back on the Secret", || async {
        let s = env.secrets().get("web-payi-key").await.ok()?;
        let restored = s.metadata.labels.as_ref()?.get("team").map(String::as_str) == Some("web")
            && s.metadata.annotations.as_ref()?.contains_key("reloader.stakater.com/match");
        restored.then_some(())
    })
    .await;

    // Move to a Group that does not exist yet, then back: the key stays.
    env.apps()
        .patch("web", &PatchParams::default(), &merge(json!({"spec": {"groupRef": {"name": other}}})))
        .await
        .unwrap();
    app_with_reason(&env, "web", "GroupNotFound").await;
    env.create_group(&other, &org).await;
    app_with_reason(&env, "web", "KeyIssued").await;
    env.apps()
        .patch("web", &PatchParams::default(), &merge(json!({"spec": {"groupRef": {"name": group}}})))
        .await
        .unwrap();
    let app = app_with_reason(&env, "web", "KeyIssued").await;
    assert_eq!(app.status.unwrap().group.as_deref(), Some(group.as_str()));
    assert_eq!(key_of(&env.secrets().get("web-payi-key").await.unwrap()), key, "the key changed");
    // The Group it left counts it no more.
    eventually("the Group it left to count zero Applications", || async {
        let s = env.groups().get(&other).await.ok()?.status?;
        (s.applications.total == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn parents_wait_for_their_children_and_secrets_follow_their_application() {
    Operator::shared();
    let env = TestEnv::new("deletion").await;
    let (org, group) = env.org_and_group().await;
    env.create_app("doomed", &group).await;
    app_with_reason(&env, "doomed", "KeyIssued").await;
    eventually("finalizers on both parents", || async {
        let g = env.groups().get(&group).await.ok()?;
        let o = env.orgs().get(&org).await.ok()?;
        let has = |f: &Option<Vec<String>>| f.iter().flatten().any(|f| f == "payi.io/children");
        (has(&g.metadata.finalizers) && has(&o.metadata.finalizers)).then_some(())
    })
    .await;

    env.orgs().delete(&org, &DeleteParams::default()).await.unwrap();
    env.groups().delete(&group, &DeleteParams::default()).await.unwrap();
    let g = eventually("the Group to say what it waits for", || async {
        let g = env.groups().get(&group).await.ok()?;
        let (_, reason, message) = ready_of(&g.status.as_ref()?.conditions)?;
        (reason == "DeletionBlocked").then_some(message)
    })
    .await;
    assert!(g.contains("doomed"), "{g}");
    eventually("the Organization to say what it waits for", || async {
        let o = env.orgs().get(&org).await.ok()?;
        let (_, reason, message) = ready_of(&o.status.as_ref()?.conditions)?;
        (reason == "DeletionBlocked" && message.contains(&group)).then_some(())
    })
    .await;
    // The Application keeps working while its parents wait.
    app_with_reason(&env, "doomed", "KeyIssued").await;

    env.apps().delete("doomed", &DeleteParams::background()).await.unwrap();
    eventually("the Secret garbage-collected and both parents gone", || async {
        let secret_gone = env.secrets().get_opt("doomed-payi-key").await.ok()?.is_none();
        let group_gone = env.groups().get_opt(&group).await.ok()?.is_none();
        let org_gone = env.orgs().get_opt(&org).await.ok()?.is_none();
        (secret_gone && group_gone && org_gone).then_some(())
    })
    .await;
}

#[tokio::test]
async fn key_material_never_reaches_logs_events_or_status() {
    Operator::shared();
    let env = TestEnv::new("hygiene").await;
    let (_, group) = env.org_and_group().await;
    env.create_app("quiet", &group).await;
    let app = app_with_reason(&env, "quiet", "KeyIssued").await;
    // A repair writes key material again; check that path too.
    env.secrets().delete("quiet-payi-key", &DeleteParams::default()).await.unwrap();
    let fp = app.status.unwrap().key_fingerprint.unwrap();
    let app = eventually("repair", || async {
        let a = env.apps().get("quiet").await.ok()?;
        (a.status.as_ref()?.key_fingerprint.as_deref() != Some(fp.as_str())).then_some(a)
    })
    .await;
    let key = eventually("the new Secret", || async { env.secrets().get_opt("quiet-payi-key").await.ok()? }).await;
    let key = key_of(&key);

    let logs = common::captured_logs();
    assert!(logs.contains("reconcile"), "the operator's logs were not captured");
    assert!(!logs.contains(&key), "the key appeared in the operator's logs");
    env.await_events("quiet", "KeyRepaired", 1).await;
    let events = serde_json::to_string(&env.events_for("quiet").await).unwrap();
    assert!(!events.contains(&key), "the key appeared in an Event");
    let status = serde_json::to_string(&app.status).unwrap();
    assert!(!status.contains(&key), "the key appeared in status");
}

#[tokio::test]
async fn the_schema_rejects_invalid_manifests_with_clear_messages() {
    let env = TestEnv::new("schema").await;
    let apply = PatchParams::apply("payi-tests");
    let app = |spec: serde_json::Value| json!({"apiVersion": "payi.io/v1alpha1", "kind": "Application", "metadata": {"name": "bad"}, "spec": spec});
    let cases = [
        (app(json!({"groupRef": {"name": ""}})), "must be a name of 1 to 63 characters"),
        (app(json!({})), "spec.groupRef: Required value"),
        (app(json!({"groupRef": {"name": "g"}, "keySecret": {"name": "Not_A_Name"}})), "must be a valid Secret name"),
    ];
    for (raw, want) in cases {
        // Raw JSON, so that fields the Rust type requires can still be missing.
        let err = env.apps().patch("bad", &apply, &Patch::Apply(raw)).await.expect_err("invalid Application accepted");
        assert!(err.to_string().contains(want), "want {want:?} in: {err}");
    }

    let long = "a".repeat(64);
    let raw = json!({"apiVersion": "payi.io/v1alpha1", "kind": "Organization", "metadata": {"name": long}, "spec": {}});
    let err = env.orgs().patch(&long, &apply, &Patch::Apply(raw)).await.unwrap_err();
    assert!(err.to_string().contains("at most 63 characters"), "{err}");

    let name = unique("org");
    let raw = json!({"apiVersion": "payi.io/v1alpha1", "kind": "Organization", "metadata": {"name": name},
        "spec": {"baseURL": "ftp://example.com"}});
    let err = env.orgs().patch(&name, &apply, &Patch::Apply(raw)).await.unwrap_err();
    assert!(err.to_string().contains("baseURL must be an absolute http or https URL"), "{err}");
}
