//! The chart's ValidatingAdmissionPolicy: the operator's ServiceAccount may write
//! only the narrow Roles and RoleBindings it makes for owners and readers, even
//! if it held every RBAC permission; everyone else is unaffected.
//!
//! The test installs its own release of the chart's identity objects (ServiceAccount,
//! ClusterRole and binding, policy and policy binding, rendered by `helm template`),
//! so it neither depends on nor disturbs the release `make test` installs, and it
//! deletes them afterwards. To prove that the policy, not RBAC's escalation check,
//! refuses the broad Roles, it also grants that ServiceAccount `escalate` and `bind`
//! in the test namespace.

mod common;

use std::panic::AssertUnwindSafe;

use common::helm::{kind, name};
use common::{TestEnv, client_as, eventually, unique};
use futures::FutureExt;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{Scope, pinned_kind};
use kube::{Api, Client};
use serde_json::{Value, json};

const ROLE_DENIED: &str = "the payi operator may only write Roles whose every rule grants get on Secrets";
const BINDING_DENIED: &str = "the payi operator may only write RoleBindings to a Role (not a ClusterRole) named payi-*";

/// The kinds of the chart that make up the operator's identity and the policy.
const INSTALLED: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

fn render(release: &str, namespace: &str) -> Vec<Value> {
    common::helm::render(release, namespace, &[])
}

async fn api_for(client: &Client, obj: &Value) -> (Api<DynamicObject>, ApiResource, bool) {
    let api_version = obj["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let (resource, caps) = pinned_kind(client, &GroupVersionKind::gvk(group, version, kind(obj)))
        .await
        .unwrap_or_else(|e| panic!("discovering {api_version} {}: {e}", kind(obj)));
    match caps.scope {
        Scope::Namespaced => {
            let ns = obj["metadata"]["namespace"].as_str().expect("namespace");
            (Api::namespaced_with(client.clone(), ns, &resource), resource, true)
        }
        Scope::Cluster => (Api::all_with(client.clone(), &resource), resource, false),
    }
}

fn role(name: &str, rules: Value) -> Role {
    serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules})).unwrap()
}

fn binding(name: &str, role_kind: &str, role_name: &str) -> RoleBinding {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]
    }))
    .unwrap()
}

fn denied_with<T: std::fmt::Debug>(result: Result<T, kube::Error>, message: &str) -> Result<(), String> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 && status.message.contains(message) => Ok(()),
        other => Err(format!("expected 403 with {message:?}, got {other:?}")),
    }
}

#[tokio::test]
async fn the_policy_lets_the_operator_write_only_narrow_roles() {
    let env = TestEnv::new("admission").await;
    let release = unique("adm");
    // The chart also renders user-facing ClusterRoles; keep only the operator's own.
    let objects: Vec<Value> = render(&release, &env.namespace)
        .into_iter()
        .filter(|o| INSTALLED.contains(&kind(o)))
        // The verifier's identity (its own ServiceAccount and bindings) is not the operator's.
        .filter(|o| {
            !matches!(kind(o), "ClusterRole" | "ClusterRoleBinding" | "ServiceAccount")
                || name(o) == format!("{release}-payi-operator")
        })
        .collect();
    let mut kinds: Vec<&str> = objects.iter().map(kind).collect();
    kinds.sort();
    let mut want = INSTALLED.to_vec();
    want.sort();
    assert_eq!(kinds, want, "the chart does not render the operator's identity and policy");

    let mut cluster_scoped: Vec<(ApiResource, String)> = vec![];
    let outcome = AssertUnwindSafe(check(&env, &release, &objects, &mut cluster_scoped)).catch_unwind().await;

    common::helm::clean_up(&env, &cluster_scoped).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn check(env: &TestEnv, release: &str, objects: &[Value], cluster_scoped: &mut Vec<(ApiResource, String)>) {
    let ns = env.namespace.as_str();
    for obj in objects {
        let (api, resource, namespaced) = api_for(&env.client, obj).await;
        api.patch(name(obj), &PatchParams::apply("payi-e2e-admission").force(), &Patch::Apply(obj))
            .await
            .unwrap_or_else(|e| panic!("applying {} {}: {e}", kind(obj), name(obj)));
        if !namespaced {
            cluster_scoped.push((resource, name(obj).to_string()));
        }
    }

    // Without this, RBAC's own escalation check would refuse the broadest Roles
    // before the policy is asked; with it, only the policy stands in the way.
    let operator_sa = format!("{release}-payi-operator");
    let admin_roles: Api<Role> = Api::namespaced(env.client.clone(), ns);
    let admin_bindings: Api<RoleBinding> = Api::namespaced(env.client.clone(), ns);
    let escalate = role(
        "test-escalate",
        json!([{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "clusterroles"], "verbs": ["escalate", "bind"]}]),
    );
    admin_roles.create(&PostParams::default(), &escalate).await.unwrap();
    let grant: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "test-escalate"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "test-escalate"},
        "subjects": [{"kind": "ServiceAccount", "name": operator_sa, "namespace": ns}]
    }))
    .unwrap();
    admin_bindings.create(&PostParams::default(), &grant).await.unwrap();

    let operator = client_as(&format!("system:serviceaccount:{ns}:{operator_sa}")).await;
    let roles: Api<Role> = Api::namespaced(operator.clone(), ns);
    let bindings: Api<RoleBinding> = Api::namespaced(operator.clone(), ns);

    // A new policy takes effect asynchronously; a dry run changes nothing while waiting.
    let dry_run = PostParams { dry_run: true, ..PostParams::default() };
    let list_secrets = role(
        "payi-svc-owner",
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"], "resourceNames": ["svc-payi-key"]}]),
    );
    eventually("the admission policy to refuse the operator a list-secrets Role", || async {
        denied_with(roles.create(&dry_run, &list_secrets).await, ROLE_DENIED).ok()
    })
    .await;

    // The Roles and RoleBindings the operator makes (src/access.rs) pass.
    let owner = role(
        "payi-svc-owner",
        json!([
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["svc-payi-key"]},
            {"apiGroups": ["payi.io"], "resources": ["applications"], "verbs": ["get", "patch", "update"], "resourceNames": ["svc"]}
        ]),
    );
    let reader = role(
        "payi-svc-reader",
        json!([{"apiGroups": ["payi.io"], "resources": ["applications"], "verbs": ["get"], "resourceNames": ["svc"]}]),
    );
    for r in [&owner, &reader] {
        roles.create(&PostParams::default(), r).await.expect("the operator's own Role was refused");
    }
    for b in ["payi-svc-owner", "payi-svc-reader"] {
        bindings
            .create(&PostParams::default(), &binding(b, "Role", b))
            .await
            .expect("the operator's own RoleBinding was refused");
    }
    // A PUT with the resourceVersion read, as the operator changes them, is an UPDATE and passes too.
    let mut changed = roles.get("payi-svc-owner").await.unwrap();
    changed.rules.as_mut().unwrap()[0].resource_names = Some(vec!["svc-payi-key".into(), "svc-other-key".into()]);
    roles.replace("payi-svc-owner", &PostParams::default(), &changed).await.unwrap();

    // Anything broader is refused, on create and on update.
    let broader = [
        (
            "list secrets",
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"], "resourceNames": ["k"]}]),
        ),
        ("get every secret", json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}])),
        (
            "get every secret, empty names",
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": []}]),
        ),
        ("every verb", json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"], "resourceNames": ["k"]}])),
        ("every resource", json!([{"apiGroups": [""], "resources": ["*"], "verbs": ["get"], "resourceNames": ["k"]}])),
        (
            "every group",
            json!([{"apiGroups": ["*"], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["k"]}]),
        ),
        (
            "secrets and configmaps",
            json!([{"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get"], "resourceNames": ["k"]}]),
        ),
        (
            "delete applications",
            json!([{"apiGroups": ["payi.io"], "resources": ["applications"], "verbs": ["get", "delete"], "resourceNames": ["svc"]}]),
        ),
        ("every application", json!([{"apiGroups": ["payi.io"], "resources": ["applications"], "verbs": ["get"]}])),
        (
            "a narrow rule and a broad one",
            json!([
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["k"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["p"]}
            ]),
        ),
    ];
    let mut failures = vec![];
    for (what, rules) in &broader {
        if let Err(e) =
            denied_with(roles.create(&PostParams::default(), &role("payi-broad", rules.clone())).await, ROLE_DENIED)
        {
            failures.push(format!("create with {what}: {e}"));
        }
        let mut update = roles.get("payi-svc-reader").await.unwrap();
        update.rules = serde_json::from_value(rules.clone()).unwrap();
        let replaced = roles.replace("payi-svc-reader", &PostParams::default(), &update).await;
        if let Err(e) = denied_with(replaced, ROLE_DENIED) {
            failures.push(format!("update to {what}: {e}"));
        }
    }
    for (what, role_kind, role_name) in [
        ("a ClusterRole", "ClusterRole", "cluster-admin"),
        ("a ClusterRole named payi-*", "ClusterRole", "payi-svc-owner"),
        ("another Role", "Role", "test-escalate"),
    ] {
        if let Err(e) = denied_with(
            bindings.create(&PostParams::default(), &binding("payi-broad", role_kind, role_name)).await,
            BINDING_DENIED,
        ) {
            failures.push(format!("RoleBinding to {what}: {e}"));
        }
    }
    assert!(failures.is_empty(), "the policy let the operator through:\n  {}", failures.join("\n  "));

    // Everyone else is unaffected: the admin writes the same broad objects.
    admin_roles
        .create(&PostParams::default(), &role("broad", broader[0].1.clone()))
        .await
        .expect("the policy refused the admin");
    admin_bindings
        .create(&PostParams::default(), &binding("broad", "ClusterRole", "view"))
        .await
        .expect("the policy refused the admin");
}
