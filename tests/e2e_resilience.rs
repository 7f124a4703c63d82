//! Failures that are user input or races, against the real API server: a refused
//! RoleBinding or Secret never turns into a stream of new keys, parents cannot
//! vanish under a Ready child, removed fields leave the Secret, and a converged
//! Secret is not written again.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Operator, TestEnv, app_with_reason, data_of, eventually, eventually_within, key_of, unique};
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use payi_operator::crd::{Application, Group, Organization};
use serde_json::json;

async fn apply_json<K>(api: &Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap()
}

/// Occurrences of an Event reason about `name` (series counts summed).
async fn occurrences(env: &TestEnv, name: &str, reason: &str) -> usize {
    let events = env.events_for(name).await;
    let matching = events.iter().filter(|e| e.reason.as_deref() == Some(reason));
    matching.map(|e| e.series.as_ref().and_then(|s| s.count).or(e.count).unwrap_or(1).max(1) as usize).sum()
}

type Admission = (Api<kube::api::DynamicObject>, Api<kube::api::DynamicObject>);

fn admission_apis(env: &TestEnv) -> Admission {
    let api = |kind: &str| {
        let gvk = kube::api::GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
        Api::all_with(env.client.clone(), &kube::api::ApiResource::from_gvk(&gvk))
    };
    (api("ValidatingAdmissionPolicy"), api("ValidatingAdmissionPolicyBinding"))
}

/// Installs an admission policy refusing RoleBindings to `subject` in this test's
/// namespace (as an admission webhook or policy engine might) and waits until it bites.
async fn refuse_bindings_to(env: &TestEnv, subject: &str) -> String {
    let name = unique("refuse-binding");
    let (policies, bindings) = admission_apis(env);
    let expression = format!("!has(object.subjects) || !object.subjects.exists(s, s.name == '{subject}')");
    apply_json(
        &policies,
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name}, "spec": {"failurePolicy": "Fail",
        "matchConstraints": {"resourceRules": [{"apiGroups": ["rbac.authorization.k8s.io"], "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"], "resources": ["rolebindings"]}]},
        "validations": [{"expression": expression, "message": format!("{subject} may not be bound here")}]}}),
    )
    .await;
    apply_json(
        &bindings,
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name}, "spec": {"policyName": name, "validationActions": ["Deny"],
        "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": env.namespace}}}}}),
    )
    .await;
    let probe: Api<RoleBinding> = Api::namespaced(env.client.clone(), &env.namespace);
    eventually("the admission policy to take effect", || async {
        let rb: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "probe"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": subject}]}))
        .unwrap();
        match probe.create(&PostParams::default(), &rb).await {
            Ok(_) => {
                let _ = probe.delete("probe", &DeleteParams::default()).await;
                None
            }
            Err(_) => Some(()),
        }
    })
    .await;
    name
}

#[tokio::test]
async fn a_refused_role_binding_and_a_deleted_secret_make_exactly_one_new_key() {
    Operator::shared();
    let env = TestEnv::new("res-remint").await;
    let (_, group) = env.org_and_group().await;
    let blocked = unique("blocked");
    let policy = refuse_bindings_to(&env, &blocked).await;
    apply_json(
        &env.apps(),
        json!({"apiVersion": "payi.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "svc"}, "spec": {"groupRef": {"name": group},
        "owners": [{"kind": "User", "name": blocked}]}}),
    )
    .await;
    let app = app_with_reason(&env, "svc", "AccessRejected").await;
    let message = common::ready_of(&app.status.as_ref().unwrap().conditions).unwrap().2;
    assert!(message.contains("may not be bound here"), "{message}");
    let first = key_of(&env.secrets().get("svc-payi-key").await.unwrap());
    assert_eq!(Some(payi_operator::key::fingerprint(&first)), app.status.unwrap().key_fingerprint);

    env.secrets().delete("svc-payi-key", &DeleteParams::default()).await.unwrap();
    let second = eventually("a replacement key", || async {
        let secret = env.secrets().get_opt("svc-payi-key").await.ok()??;
        let key = key_of(&secret);
        (key != first).then_some(key)
    })
    .await;
    // Watch the Secret for a while: the refusal retries with backoff and never mints again.
    let mut seen = BTreeSet::from([second.clone()]);
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        seen.insert(key_of(&env.secrets().get("svc-payi-key").await.unwrap()));
    }
    assert_eq!(seen.len(), 1, "{} keys were written after one deletion", seen.len());
    let app = app_with_reason(&env, "svc", "AccessRejected").await;
    assert_eq!(app.status.unwrap().key_fingerprint, Some(payi_operator::key::fingerprint(&second)));
    assert_eq!(occurrences(&env, "svc", "KeyRepaired").await, 1);
    assert_eq!(occurrences(&env, "svc", "AccessRejected").await, 1, "one Warning, not one per retry");
    let (policies, bindings) = admission_apis(&env);
    let _ = bindings.delete(&policy, &DeleteParams::default()).await;
    let _ = policies.delete(&policy, &DeleteParams::default()).await;
}

#[tokio::test]
async fn a_secret_refused_by_a_quota_is_a_condition_and_is_retried_with_backoff() {
    Operator::shared();
    let env = TestEnv::new("res-quota").await;
    let (_, group) = env.org_and_group().await;
    let quotas: Api<ResourceQuota> = Api::namespaced(env.client.clone(), &env.namespace);
    // No quota controller runs here: write the status it would compute, so the
    // API server's quota admission refuses every Secret ("exceeded quota").
    apply_json(&quotas, json!({"metadata": {"name": "no-secrets"}, "spec": {"hard": {"count/secrets": "0"}}})).await;
    let status = json!({"status": {"hard": {"count/secrets": "0"}, "used": {"count/secrets": "0"}}});
    quotas.patch_status("no-secrets", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    env.create_app("svc", &group).await;
    let app = app_with_reason(&env, "svc", "SecretRejected").await;
    let message = common::ready_of(&app.status.as_ref().unwrap().conditions).unwrap().2;
    assert!(message.contains("quota"), "{message}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(occurrences(&env, "svc", "SecretRejected").await, 1);
    assert_eq!(app.status.unwrap().key_fingerprint, None, "no key recorded that is in no Secret");

    quotas.delete("no-secrets", &DeleteParams::default()).await.unwrap();
    eventually_within(Duration::from_secs(90), "the retry after the quota is gone", || async {
        let app = env.apps().get("svc").await.ok()?;
        let ready = common::ready_of(&app.status?.conditions)?;
        (ready.1 == "KeyIssued").then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_organization_deleted_right_after_its_application_is_ready_waits_for_it() {
    Operator::shared();
    let env = TestEnv::new("res-race").await;
    let (org, group) = (unique("org"), unique("grp"));
    tokio::join!(env.create_org(&org, None), env.create_group(&group, &org), env.create_app("svc", &group));
    app_with_reason(&env, "svc", "KeyIssued").await;
    env.orgs().delete(&org, &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held: Organization = env.orgs().get(&org).await.expect("the Organization was deleted under its Group");
    assert!(held.metadata.deletion_timestamp.is_some());
    let group_obj: Group = env.groups().get(&group).await.unwrap();
    assert_eq!(group_obj.status.and_then(|s| s.organization), Some(org.clone()));

    // A new Application under the Organization being deleted is not admitted.
    env.create_app("late", &group).await;
    app_with_reason(&env, "late", "ParentDeleting").await;
    assert!(env.secrets().get_opt("late-payi-key").await.unwrap().is_none());

    for name in ["svc", "late"] {
        env.apps().delete(name, &DeleteParams::default()).await.unwrap();
    }
    env.groups().delete(&group, &DeleteParams::default()).await.unwrap();
    eventually("the Organization to go once nothing references it", || async {
        env.orgs().get_opt(&org).await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_application_in_a_refused_namespace_does_not_block_deleting_the_group() {
    Operator::shared();
    let env = TestEnv::new("res-refused").await;
    let (_, group) = env.org_and_group().await;
    let other = unique("res-other");
    common::create_namespace(&env.client, &other, &[]).await;
    let outsider: Api<Application> = Api::namespaced(env.client.clone(), &other);
    apply_json(
        &outsider,
        json!({"apiVersion": "payi.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "squatter"}, "spec": {"groupRef": {"name": group}}}),
    )
    .await;
    eventually("the squatter to be refused", || async {
        let app = outsider.get("squatter").await.ok()?;
        (common::ready_of(&app.status?.conditions)?.1 == "NamespaceNotAllowed").then_some(())
    })
    .await;
    env.groups().delete(&group, &DeleteParams::default()).await.unwrap();
    eventually("the Group to be deleted", || async {
        env.groups().get_opt(&group).await.ok()?.is_none().then_some(())
    })
    .await;
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let _ = namespaces.delete(&other, &DeleteParams::default()).await;
}

#[tokio::test]
async fn removed_fields_leave_the_secret_and_a_converged_secret_is_not_written_again() {
    Operator::shared();
    let env = TestEnv::new("res-remove").await;
    let (org, group) = (unique("org"), unique("grp"));
    env.create_org(&org, Some("https://gateway.example.com")).await;
    env.create_group(&group, &org).await;
    apply_json(
        &env.apps(),
        json!({"apiVersion": "payi.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "svc"}, "spec": {"groupRef": {"name": group},
        "keySecret": {"labels": {"reload": "true"}, "annotations": {"team": "a"}}}}),
    )
    .await;
    app_with_reason(&env, "svc", "KeyIssued").await;
    let secret = eventually("the base URL in the Secret", || async {
        let s = env.secrets().get("svc-payi-key").await.ok()?;
        data_of(&s, "PAYI_BASE_URL").is_some().then_some(s)
    })
    .await;
    let key = key_of(&secret);
    assert_eq!(secret.labels().get("reload").map(String::as_str), Some("true"));
    // Someone else's label on the Secret stays whatever the spec says.
    let foreign = json!({"metadata": {"labels": {"example.com/backup": "daily"}}});
    env.secrets().patch("svc-payi-key", &PatchParams::default(), &Patch::Merge(&foreign)).await.unwrap();

    env.orgs().patch(&org, &PatchParams::default(), &Patch::Merge(json!({"spec": {"baseURL": null}}))).await.unwrap();
    env.apps()
        .patch("svc", &PatchParams::default(), &Patch::Merge(json!({"spec": {"keySecret": null}})))
        .await
        .unwrap();
    let cleaned = eventually("the removed fields to leave the Secret", || async {
        let s = env.secrets().get("svc-payi-key").await.ok()?;
        let gone = data_of(&s, "PAYI_BASE_URL").is_none()
            && !s.labels().contains_key("reload")
            && !s.annotations().contains_key("team");
        gone.then_some(s)
    })
    .await;
    assert_eq!(cleaned.labels().get("example.com/backup").map(String::as_str), Some("daily"));
    assert_eq!(key_of(&cleaned), key, "removing fields changed the key");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = env.secrets().get("svc-payi-key").await.unwrap();
    assert_eq!(later.resource_version(), cleaned.resource_version(), "the converged Secret was written again");
}
