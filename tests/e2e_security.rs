//! Nobody gains access through the operator that RBAC would not give them,
//! proven by impersonation against the real API server: grants follow Secret
//! ownership, inherited access ends with the parent's validity, and access
//! objects someone else made are never taken over.

mod common;

use common::{Operator, TestEnv, app_with_reason, client_as, eventually, forbidden, unique};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use payi_operator::crd::{Application, Group};
use serde_json::json;

fn user(name: &str) -> serde_json::Value {
    json!({"kind": "User", "name": name})
}

async fn create_app(env: &TestEnv, name: &str, spec: serde_json::Value) {
    let app: Application = serde_json::from_value(json!({"apiVersion": "payi.io/v1alpha1", "kind": "Application",
        "metadata": {"name": name}, "spec": spec}))
    .unwrap();
    env.apps().create(&PostParams::default(), &app).await.unwrap();
}

async fn create_secret(env: &TestEnv, name: &str) {
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"password": "hunter2"}})).unwrap();
    env.secrets().create(&PostParams::default(), &secret).await.unwrap();
}

async fn can_read(env: &TestEnv, who: &str, secret: &str) -> bool {
    let api: Api<Secret> = Api::namespaced(client_as(who).await, &env.namespace);
    match api.get(secret).await {
        Ok(_) => true,
        denied => {
            let shown = format!("{denied:?}");
            assert!(forbidden(denied), "unexpected answer for {who}: {shown}");
            false
        }
    }
}

/// A Group admitting this test's namespace, with `owners`.
async fn group_with_owners(env: &TestEnv, org: &str, owners: &[&str]) -> String {
    let name = unique("grp");
    let owners: Vec<_> = owners.iter().map(|o| user(o)).collect();
    let group: Group = serde_json::from_value(json!({"apiVersion": "payi.io/v1alpha1", "kind": "Group",
        "metadata": {"name": name}, "spec": {"organizationRef": {"name": org},
        "namespacePolicy": {"names": [env.namespace]}, "owners": owners}}))
    .unwrap();
    env.groups().create(&PostParams::default(), &group).await.unwrap();
    name
}

#[tokio::test]
async fn an_application_naming_someone_elses_secret_grants_nothing_on_it() {
    Operator::shared();
    let env = TestEnv::new("sec-foreign").await;
    let (_, group) = env.org_and_group().await;
    create_secret(&env, "db-password").await;
    let owner = unique("owner");
    create_app(
        &env,
        "grabby",
        json!({"groupRef": {"name": group}, "keySecret": {"name": "db-password"},
        "owners": [user(&owner)]}),
    )
    .await;
    app_with_reason(&env, "grabby", "SecretConflict").await;
    // The owner Role exists (for the Application itself) but names no Secret.
    eventually("the owner Role without a Secret rule", || async {
        let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(env.client.clone(), &env.namespace);
        let role = roles.get_opt("payi-grabby-owner").await.ok()??;
        let rules = role.rules.unwrap_or_default();
        rules.iter().all(|r| r.resources != Some(vec!["secrets".to_string()])).then_some(())
    })
    .await;
    assert!(!can_read(&env, &owner, "db-password").await, "the owner read a Secret that is not the key");
    let untouched = env.secrets().get("db-password").await.unwrap();
    assert!(untouched.owner_references().is_empty(), "the foreign Secret was adopted");
    assert_eq!(common::data_of(&untouched, "password").as_deref(), Some("hunter2"));
}

#[tokio::test]
async fn a_group_owner_repointing_an_application_cannot_read_other_secrets() {
    Operator::shared();
    let env = TestEnv::new("sec-repoint").await;
    let org = unique("org");
    env.create_org(&org, None).await;
    let owner = unique("group-owner");
    let group = group_with_owners(&env, &org, &[&owner]).await;
    create_secret(&env, "db-password").await;
    create_app(&env, "svc", json!({"groupRef": {"name": group}})).await;
    app_with_reason(&env, "svc", "KeyIssued").await;
    eventually("the Group owner to read the key", || async {
        can_read(&env, &owner, "svc-payi-key").await.then_some(())
    })
    .await;
    assert!(!can_read(&env, &owner, "db-password").await);

    // The Group owner may patch the Application; repointing it must not open the other Secret.
    let as_owner: Api<Application> = Api::namespaced(client_as(&owner).await, &env.namespace);
    let patch = json!({"spec": {"keySecret": {"name": "db-password"}}});
    as_owner.patch("svc", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("owners may edit");
    app_with_reason(&env, "svc", "SecretConflict").await;
    // The grant moved to a Secret the Application does not control: withdrawn, not transferred.
    eventually("the old key grant to be withdrawn", || async {
        (!can_read(&env, &owner, "svc-payi-key").await).then_some(())
    })
    .await;
    for _ in 0..10 {
        assert!(!can_read(&env, &owner, "db-password").await, "repointing opened db-password");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn inherited_access_ends_while_the_group_reference_is_broken() {
    Operator::shared();
    let env = TestEnv::new("sec-broken").await;
    let org = unique("org");
    env.create_org(&org, None).await;
    let (group_owner, app_owner) = (unique("group-owner"), unique("app-owner"));
    let group = group_with_owners(&env, &org, &[&group_owner]).await;
    create_app(&env, "svc", json!({"groupRef": {"name": group}, "owners": [user(&app_owner)]})).await;
    app_with_reason(&env, "svc", "KeyIssued").await;
    eventually("both owners to read the key", || async {
        (can_read(&env, &group_owner, "svc-payi-key").await && can_read(&env, &app_owner, "svc-payi-key").await)
            .then_some(())
    })
    .await;

    env.apps()
        .patch("svc", &PatchParams::default(), &Patch::Merge(json!({"spec": {"groupRef": {"name": "no-such-group"}}})))
        .await
        .unwrap();
    app_with_reason(&env, "svc", "GroupNotFound").await;
    eventually("the Group's owner to lose the key", || async {
        (!can_read(&env, &group_owner, "svc-payi-key").await).then_some(())
    })
    .await;
    assert!(can_read(&env, &app_owner, "svc-payi-key").await, "the Application's own owner keeps its key");
    // Removing the owner from the Group while the reference is broken changes nothing back.
    env.groups()
        .patch(&group, &PatchParams::default(), &Patch::Merge(json!({"spec": {"owners": null}})))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(!can_read(&env, &group_owner, "svc-payi-key").await);
}

#[tokio::test]
async fn a_hand_made_role_binding_with_the_operators_name_is_never_taken_over() {
    Operator::shared();
    let env = TestEnv::new("sec-collide").await;
    let (_, group) = env.org_and_group().await;
    let (mallory, alice) = (unique("mallory"), unique("alice"));
    let planted: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "payi-svc-owner", "labels": {"app.kubernetes.io/managed-by": "payi-operator",
            "payi.io/application": "svc"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": mallory}]
    }))
    .unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(env.client.clone(), &env.namespace);
    let planted = bindings.create(&PostParams::default(), &planted).await.unwrap();
    create_app(&env, "svc", json!({"groupRef": {"name": group}, "owners": [user(&alice)]})).await;
    let app = app_with_reason(&env, "svc", "AccessConflict").await;
    let ready = common::ready_of(&app.status.unwrap().conditions).unwrap();
    assert!(ready.2.contains("payi-svc-owner"), "the message names the object: {}", ready.2);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let after = bindings.get("payi-svc-owner").await.unwrap();
    assert_eq!(after.metadata.resource_version, planted.metadata.resource_version, "the planted binding was written");
    assert_eq!(after.subjects, planted.subjects);
    assert!(!can_read(&env, &alice, "svc-payi-key").await, "access through a binding the operator does not own");
    assert_eq!(env.events_for("svc").await.iter().filter(|e| e.reason.as_deref() == Some("AccessConflict")).count(), 1);
}
