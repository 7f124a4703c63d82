//! Owners and readers per level, proven by impersonating them: owners read
//! exactly their Applications' key Secrets, readers see Applications but no
//! Secret, others see nothing, and removing a subject removes the access.

mod common;

use common::{Operator, TestEnv, app_with_reason, client_as, eventually, forbidden, unique};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::Role;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use payi_operator::crd::Application;
use serde_json::json;

fn user(name: &str) -> serde_json::Value {
    json!({"kind": "User", "name": name})
}

#[tokio::test]
async fn owners_and_readers_flow_down_the_hierarchy() {
    Operator::shared();
    let env = TestEnv::new("access").await;
    let (org, group) = (unique("org"), unique("grp"));
    let (org_owner, group_reader, app_owner, outsider) =
        (unique("org-owner"), unique("group-reader"), unique("app-owner"), unique("outsider"));
    let org_obj = serde_json::from_value(json!({"apiVersion": "payi.io/v1alpha1", "kind": "Organization",
        "metadata": {"name": org}, "spec": {"owners": [user(&org_owner)]}}))
    .unwrap();
    env.orgs().create(&PostParams::default(), &org_obj).await.unwrap();
    let group_obj = serde_json::from_value(json!({"apiVersion": "payi.io/v1alpha1", "kind": "Group",
        "metadata": {"name": group}, "spec": {"organizationRef": {"name": org},
        "namespacePolicy": {"names": [env.namespace]}, "readers": [user(&group_reader)]}}))
    .unwrap();
    env.groups().create(&PostParams::default(), &group_obj).await.unwrap();
    let app: Application = serde_json::from_value(json!({"apiVersion": "payi.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "svc"}, "spec": {"groupRef": {"name": group}, "owners": [user(&app_owner)]}}))
    .unwrap();
    env.apps().create(&PostParams::default(), &app).await.unwrap();
    app_with_reason(&env, "svc", "KeyIssued").await;
    let other: Secret =
        serde_json::from_value(json!({"metadata": {"name": "unrelated"}, "stringData": {"k": "v"}})).unwrap();
    env.secrets().create(&PostParams::default(), &other).await.unwrap();

    let secrets_of = |c: kube::Client| Api::<Secret>::namespaced(c, &env.namespace);
    let apps_of = |c: kube::Client| Api::<Application>::namespaced(c, &env.namespace);
    let (owner_c, reader_c, app_owner_c, outsider_c) = (
        client_as(&org_owner).await,
        client_as(&group_reader).await,
        client_as(&app_owner).await,
        client_as(&outsider).await,
    );

    eventually("the Organization's owner to read the key", || async {
        secrets_of(owner_c.clone()).get("svc-payi-key").await.ok()
    })
    .await;
    assert!(
        secrets_of(app_owner_c.clone()).get("svc-payi-key").await.is_ok(),
        "the Application's owner cannot read its key"
    );
    assert!(forbidden(secrets_of(owner_c.clone()).get("unrelated").await), "an owner read another Secret");
    assert!(forbidden(secrets_of(owner_c.clone()).list(&ListParams::default()).await), "an owner listed Secrets");
    let rename = Patch::Merge(json!({"spec": {"displayName": "Service"}}));
    assert!(
        apps_of(owner_c.clone()).patch("svc", &PatchParams::default(), &rename).await.is_ok(),
        "an owner cannot manage"
    );

    eventually("the Group's reader to see the Application", || async {
        apps_of(reader_c.clone()).get("svc").await.ok()
    })
    .await;
    assert!(forbidden(secrets_of(reader_c.clone()).get("svc-payi-key").await), "a reader read the key");
    assert!(forbidden(apps_of(reader_c.clone()).patch("svc", &PatchParams::default(), &rename).await));

    assert!(forbidden(apps_of(outsider_c.clone()).get("svc").await), "an outsider saw the Application");
    assert!(forbidden(secrets_of(outsider_c).get("svc-payi-key").await), "an outsider read the key");

    // Taking the owner off the Organization takes the access away.
    env.orgs().patch(&org, &PatchParams::default(), &Patch::Merge(json!({"spec": {"owners": null}}))).await.unwrap();
    eventually("the former owner to lose the key", || async {
        forbidden(secrets_of(owner_c.clone()).get("svc-payi-key").await).then_some(())
    })
    .await;
    assert!(secrets_of(app_owner_c).get("svc-payi-key").await.is_ok(), "the Application's own owner lost access");

    // Nobody left: the operator removes what it created.
    env.apps().patch("svc", &PatchParams::default(), &Patch::Merge(json!({"spec": {"owners": null}}))).await.unwrap();
    env.groups()
        .patch(&group, &PatchParams::default(), &Patch::Merge(json!({"spec": {"readers": null}})))
        .await
        .unwrap();
    let roles: Api<Role> = Api::namespaced(env.client.clone(), &env.namespace);
    eventually("the access Roles to be deleted", || async {
        let left =
            roles.list(&ListParams::default().labels("app.kubernetes.io/managed-by=payi-operator")).await.ok()?;
        let status = env.apps().get("svc").await.ok()?.status?;
        (left.items.is_empty() && status.access_roles.is_empty()).then_some(())
    })
    .await;
}
