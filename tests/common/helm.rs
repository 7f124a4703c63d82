//! Helm for the chart tests: the binary `hack/tools/build.sh` builds, and the
//! chart rendered into objects.

use std::path::Path;
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::Value;

pub const CHART: &str = "charts/payi-operator";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Helm binary built by `hack/tools/build.sh`, once per test process.
pub fn binary() -> &'static Path {
    super::tools::built("helm")
}

pub fn run(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("running helm {args:?}: {e}"))
}

/// Runs helm and returns its stdout, failing the test with its stderr when it fails.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "helm {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm writes UTF-8")
}

/// `helm template` of the chart, as one JSON value per rendered object.
pub fn render(release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", release, CHART, "--namespace", namespace];
    args.extend_from_slice(extra);
    documents(&ok(&args))
}

/// The objects of a multi-document YAML stream; empty documents are dropped.
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{yaml}")))
        .filter(|v| !v.is_null())
        .collect()
}

pub fn kind(obj: &Value) -> &str {
    obj["kind"].as_str().unwrap_or_default()
}

pub fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

/// Deletes what a chart test applied outside its namespace, then the namespace:
/// run whether or not the checks passed.
pub async fn clean_up(env: &super::TestEnv, cluster_scoped: &[(kube::core::ApiResource, String)]) {
    use kube::api::{Api, DeleteParams, DynamicObject};
    for (resource, object) in cluster_scoped {
        let api: Api<DynamicObject> = Api::all_with(env.client.clone(), resource);
        let _ = api.delete(object, &DeleteParams::background()).await;
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    super::delete(&namespaces, &env.namespace).await;
}
