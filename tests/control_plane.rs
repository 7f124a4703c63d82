//! Proves the test control plane is a real one: the garbage collector runs and
//! CRD validation rules are enforced by the API server.

mod common;

use common::{TestEnv, eventually, unique};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, ResourceExt};
use serde_json::json;

#[tokio::test]
async fn garbage_collector_deletes_owned_objects() {
    let env = TestEnv::new("smoke-gc").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.namespace);
    let owner = configmaps
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap())
        .await
        .unwrap();
    let owned: Secret = serde_json::from_value(json!({
        "metadata": {"name": "owned", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().unwrap()
        }]},
        "stringData": {"k": "v"}
    }))
    .unwrap();
    env.secrets().create(&PostParams::default(), &owned).await.unwrap();

    configmaps.delete("owner", &DeleteParams::background()).await.unwrap();
    eventually("the garbage collector to delete the owned Secret", || async {
        env.secrets().get_opt("owned").await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn cel_rules_reject_invalid_objects_with_their_message() {
    let env = TestEnv::new("smoke-cel").await;
    let group = format!("{}.smoke.payi.io", unique("g"));
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {
                    "type": "object",
                    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                    "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}]
                }}
            }}}]
        }
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let name = crd.name_any();
    tokio::time::timeout(common::TIMEOUT, await_condition(crds.clone(), &name, conditions::is_crd_established()))
        .await
        .expect("CRD established")
        .unwrap();

    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", "Widget"), "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &env.namespace, &resource);
    let widget = |min: i64, max: i64| {
        serde_json::from_value::<DynamicObject>(json!({
            "apiVersion": format!("{group}/v1"), "kind": "Widget",
            "metadata": {"name": format!("w-{min}-{max}")}, "spec": {"min": min, "max": max}
        }))
        .unwrap()
    };
    // Discovery may lag the Established condition by a moment.
    eventually("the Widget kind to be served", || async {
        widgets.create(&PostParams::default(), &widget(1, 2)).await.ok()
    })
    .await;
    let err = widgets.create(&PostParams::default(), &widget(5, 1)).await.unwrap_err();
    assert!(err.to_string().contains("min must not exceed max"), "unexpected error: {err}");
    crds.delete(&name, &DeleteParams::default()).await.unwrap();
}
