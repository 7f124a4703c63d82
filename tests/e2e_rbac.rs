//! What people bound to the standard `view` and `edit` roles can do with this
//! operator's kinds and keys, exercised by impersonating them. Relies on the
//! chart's aggregated ClusterRoles, which `make test` installs.

mod common;

use common::{TestEnv, app_with_reason, client_as, create_namespace, eventually, forbidden, unique};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Api;
use kube::api::{ListParams, PostParams};
use payi_operator::crd::{Application, Group};
use serde_json::json;

async fn bind(env: &TestEnv, user: &str, cluster_role: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{cluster_role}-{user}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .unwrap();
    let api: Api<RoleBinding> = Api::namespaced(env.client.clone(), &env.namespace);
    api.create(&PostParams::default(), &binding).await.unwrap();
}

#[tokio::test]
async fn an_editor_attaching_to_a_group_that_refuses_the_namespace_gets_no_key() {
    common::Operator::shared();
    let env = TestEnv::new("rbac-edit").await;
    let other = unique("rbac-other");
    create_namespace(&env.client, &other, &[]).await;
    let (org, group) = (unique("org"), unique("grp"));
    env.create_org(&org, None).await;
    // The Group admits only the other namespace.
    let refusing: Group = serde_json::from_value(json!({
        "apiVersion": "payi.io/v1alpha1", "kind": "Group", "metadata": {"name": group},
        "spec": {"organizationRef": {"name": org}, "namespacePolicy": {"names": [other]}}
    }))
    .unwrap();
    env.groups().create(&PostParams::default(), &refusing).await.unwrap();
    // A key that exists in the other namespace.
    let secrets_there: Api<Secret> = Api::namespaced(env.client.clone(), &other);
    let key: Secret =
        serde_json::from_value(json!({"metadata": {"name": "someone-payi-key"}, "stringData": {"PAYI_API_KEY": "x"}}))
            .unwrap();
    secrets_there.create(&PostParams::default(), &key).await.unwrap();

    let editor = unique("editor");
    bind(&env, &editor, "edit").await;
    let as_editor = client_as(&editor).await;
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "payi.io/v1alpha1", "kind": "Application", "metadata": {"name": "sneaky"},
        "spec": {"groupRef": {"name": group}}
    }))
    .unwrap();
    // Aggregation into `edit` is asynchronous: retry until the editor may create Applications.
    let editor_apps: Api<Application> = Api::namespaced(as_editor.clone(), &env.namespace);
    eventually("the editor to be allowed to create Applications", || async {
        editor_apps.create(&PostParams::default(), &app).await.ok()
    })
    .await;

    let refused = app_with_reason(&env, "sneaky", "NamespaceNotAllowed").await;
    let message = common::ready_of(&refused.status.unwrap().conditions).unwrap().2;
    assert!(message.contains(&env.namespace), "{message}");
    assert!(env.secrets().get_opt("sneaky-payi-key").await.unwrap().is_none(), "a key was issued");

    let editor_secrets_there: Api<Secret> = Api::namespaced(as_editor.clone(), &other);
    assert!(
        forbidden(editor_secrets_there.get("someone-payi-key").await),
        "the editor read a key in another namespace"
    );
    assert!(forbidden(editor_secrets_there.list(&ListParams::default()).await));
    // Groups and Organizations are platform-owned.
    let editor_groups: Api<Group> = Api::all(as_editor);
    assert!(forbidden(editor_groups.create(&PostParams::default(), &refusing).await));
}

#[tokio::test]
async fn a_viewer_sees_the_hierarchy_but_no_key() {
    common::Operator::shared();
    let env = TestEnv::new("rbac-view").await;
    let (_, group) = env.org_and_group().await;
    env.create_app("visible", &group).await;
    app_with_reason(&env, "visible", "KeyIssued").await;

    let viewer = unique("viewer");
    bind(&env, &viewer, "view").await;
    let as_viewer = client_as(&viewer).await;
    let viewer_apps: Api<Application> = Api::namespaced(as_viewer.clone(), &env.namespace);
    let seen = eventually("the viewer to be allowed to list Applications", || async {
        viewer_apps.list(&ListParams::default()).await.ok()
    })
    .await;
    assert_eq!(seen.items.len(), 1);
    let viewer_secrets: Api<Secret> = Api::namespaced(as_viewer.clone(), &env.namespace);
    assert!(forbidden(viewer_secrets.get("visible-payi-key").await), "the viewer read a key");
    assert!(forbidden(viewer_secrets.list(&ListParams::default()).await), "the viewer listed Secrets");
    assert!(forbidden(viewer_apps.delete("visible", &Default::default()).await), "the viewer deleted an Application");
}
