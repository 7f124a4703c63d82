//! GitOps health: kstatus rules and the Argo CD Lua health check, evaluated on
//! objects captured from the live control plane at each stage of convergence.

mod common;

use common::{Operator, TestEnv, app_with_reason, eventually, unique};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use serde_json::{Value, json};

/// The kstatus verdict for a custom resource, per its documented generic rules.
#[derive(Debug, PartialEq, Eq)]
enum KStatus {
    InProgress,
    Failed,
    Current,
}

fn condition_true(obj: &Value, type_: &str) -> bool {
    obj["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == type_ && c["status"] == "True")
}

fn kstatus(obj: &Value) -> KStatus {
    let generation = obj["metadata"]["generation"].as_i64();
    let observed = obj["status"]["observedGeneration"].as_i64();
    if observed.is_none() || observed < generation {
        return KStatus::InProgress;
    }
    if condition_true(obj, "Reconciling") {
        return KStatus::InProgress;
    }
    if condition_true(obj, "Stalled") {
        return KStatus::Failed;
    }
    KStatus::Current
}

/// Runs docs/argocd/health.lua the way Argo CD does: `obj` global, a table back.
fn argocd_health(obj: &Value) -> (String, String) {
    use mlua::LuaSerdeExt;
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/argocd/health.lua")).unwrap();
    let lua = mlua::Lua::new();
    let value = lua.to_value_with(obj, mlua::serde::SerializeOptions::new().serialize_none_to_null(false)).unwrap();
    lua.globals().set("obj", value).unwrap();
    let hs: mlua::Table = lua.load(&script).eval().expect("health.lua runs");
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

/// Saves a captured object for later reading and returns it as JSON.
fn capture<K: serde::Serialize>(stage: &str, obj: &K) -> Value {
    let value = serde_json::to_value(obj).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs/gitops-captures");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{stage}.json")), serde_json::to_string_pretty(&value).unwrap()).unwrap();
    value
}

fn assert_health(stage: &str, obj: &Value, want_kstatus: KStatus, want_argo: &str) {
    assert_eq!(kstatus(obj), want_kstatus, "{stage}: kstatus of {obj:#}");
    let (status, message) = argocd_health(obj);
    assert_eq!(status, want_argo, "{stage}: Argo CD health ({message})");
}

#[tokio::test]
async fn every_kind_reports_kstatus_and_argo_cd_health_through_convergence() {
    Operator::shared();
    let env = TestEnv::new("gitops").await;
    let (org, group) = (unique("org"), unique("grp"));

    // Not yet seen by the operator: no status at all.
    let fresh: Value = json!({"apiVersion": "payi.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "x", "generation": 1}, "spec": {"groupRef": {"name": group}}});
    assert_health("unobserved", &fresh, KStatus::InProgress, "Progressing");

    env.create_app("web", &group).await;
    let waiting = capture("application-waiting-for-group", &app_with_reason(&env, "web", "GroupNotFound").await);
    assert_health("waiting for parent", &waiting, KStatus::InProgress, "Progressing");

    env.create_group(&group, &org).await;
    let group_waiting = eventually("the Group to wait for its Organization", || async {
        let g = env.groups().get(&group).await.ok()?;
        let waiting = g.status.as_ref()?.conditions.iter().any(|c| c.reason == "OrganizationNotFound");
        waiting.then_some(g)
    })
    .await;
    assert_health("group waiting", &capture("group-waiting", &group_waiting), KStatus::InProgress, "Progressing");

    env.create_org(&org, None).await;
    let ready = capture("application-ready", &app_with_reason(&env, "web", "KeyIssued").await);
    assert_health("application ready", &ready, KStatus::Current, "Healthy");
    let g = eventually("the Group Ready", || async {
        let g = env.groups().get(&group).await.ok()?;
        common::ready_of(&g.status.as_ref()?.conditions).filter(|r| r.0 == "True").map(|_| g)
    })
    .await;
    assert_health("group ready", &capture("group-ready", &g), KStatus::Current, "Healthy");
    let o = eventually("the Organization Ready", || async {
        let o = env.orgs().get(&org).await.ok()?;
        common::ready_of(&o.status.as_ref()?.conditions).filter(|r| r.0 == "True").map(|_| o)
    })
    .await;
    assert_health("organization ready", &capture("organization-ready", &o), KStatus::Current, "Healthy");

    // A newer generation than the operator has seen is in progress, whatever the conditions say.
    let mut newer = ready.clone();
    newer["metadata"]["generation"] = json!(ready["metadata"]["generation"].as_i64().unwrap() + 1);
    assert_health("unobserved generation", &newer, KStatus::InProgress, "Progressing");

    // Something only a person can fix is Stalled / Degraded.
    let foreign: Secret =
        serde_json::from_value(json!({"metadata": {"name": "blocked-payi-key"}, "stringData": {"k": "v"}})).unwrap();
    env.secrets().create(&PostParams::default(), &foreign).await.unwrap();
    env.create_app("blocked", &group).await;
    let stalled = capture("application-secret-conflict", &app_with_reason(&env, "blocked", "SecretConflict").await);
    assert_health("secret conflict", &stalled, KStatus::Failed, "Degraded");
}
