//! Crash safety of rotation: the operator binary is aborted (as by kill -9) at
//! each point of a rotation, a fresh one takes over, and the end state is one new
//! current key, the old one as previous, and status that matches the Secret.
//!
//! No in-process operator here: only the child processes act.

mod common;

use common::process::Process;
use common::{TestEnv, app_with_reason, eventually, key_of};
use kube::api::{Patch, PatchParams};
use payi_operator::faults;
use payi_operator::key::fingerprint;
use serde_json::json;

async fn crash_during_rotation_at(point: &str) {
    let env = TestEnv::new("crash").await;
    let (_, group) = env.org_and_group().await;
    env.create_app("svc", &group).await;

    let mut first = Process::spawn(&format!("crash-issue-{point}"), &[], &[]);
    app_with_reason(&env, "svc", "KeyIssued").await;
    let old = key_of(&env.secrets().get("svc-payi-key").await.unwrap());
    first.signal("-TERM");
    assert!(first.exit_status().await.success());

    let mut crashing = Process::spawn(&format!("crash-at-{point}"), &[], &[("PAYI_CRASH_AT", point)]);
    let request = json!({"spec": {"keyRotation": {"requestedAt": format!("crash-{point}")}}});
    env.apps().patch("svc", &PatchParams::default(), &Patch::Merge(request)).await.unwrap();
    let status = crashing.exit_status().await;
    assert!(!status.success(), "{point}: the operator should have aborted; log:\n{}", crashing.logs());

    let mut recovering = Process::spawn(&format!("crash-recover-{point}"), &[], &[]);
    let (secret, app) = eventually(&format!("{point}: the rotation to settle"), || async {
        let app = env.apps().get("svc").await.ok()?;
        let handled = app.status.as_ref()?.rotation.as_ref()?.handled_request.clone();
        let secret = env.secrets().get("svc-payi-key").await.ok()?;
        (handled.as_deref() == Some(format!("crash-{point}").as_str())).then_some((secret, app))
    })
    .await;
    let status = app.status.unwrap();
    let current = key_of(&secret);
    let previous = common::data_of(&secret, "PAYI_API_KEY_PREVIOUS").expect("a previous key");
    assert_ne!(current, old, "{point}: no new key");
    assert_eq!(previous, old, "{point}: the old key is not the previous one");
    assert_eq!(status.key_fingerprint, Some(fingerprint(&current)), "{point}: status disagrees with the Secret");
    let listed: Vec<&str> = status.keys.iter().map(|k| k.fingerprint.as_str()).collect();
    assert_eq!(listed, vec![fingerprint(&current).as_str(), fingerprint(&old).as_str()], "{point}");
    // Nothing more happens: the recovered state is stable.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(key_of(&env.secrets().get("svc-payi-key").await.unwrap()), current, "{point}: rotated again");
    recovering.signal("-TERM");
    assert!(recovering.exit_status().await.success());
}

/// A repair (the Secret was deleted) interrupted right after the new Secret was
/// written: the next operator completes it with the key already written.
async fn crash_during_repair() {
    let env = TestEnv::new("crash-repair").await;
    let (_, group) = env.org_and_group().await;
    env.create_app("svc", &group).await;
    let mut first = Process::spawn("crash-repair-issue", &[], &[]);
    app_with_reason(&env, "svc", "KeyIssued").await;
    let lost = key_of(&env.secrets().get("svc-payi-key").await.unwrap());
    first.signal("-TERM");
    assert!(first.exit_status().await.success());

    let mut crashing = Process::spawn("crash-repair-at", &[], &[("PAYI_CRASH_AT", faults::AFTER_SECRET_WRITE)]);
    env.secrets().delete("svc-payi-key", &Default::default()).await.unwrap();
    assert!(!crashing.exit_status().await.success(), "the operator should have aborted");
    let written = key_of(&env.secrets().get("svc-payi-key").await.expect("the Secret was written before the crash"));
    assert_ne!(written, lost);

    let mut recovering = Process::spawn("crash-repair-recover", &[], &[]);
    eventually("the repair to be recorded", || async {
        let app = env.apps().get("svc").await.ok()?;
        (app.status?.key_fingerprint? == fingerprint(&written)).then_some(())
    })
    .await;
    assert_eq!(key_of(&env.secrets().get("svc-payi-key").await.unwrap()), written, "a second key was minted");
    recovering.signal("-TERM");
    assert!(recovering.exit_status().await.success());
}

// One test, points in sequence: the child processes watch the whole cluster, so
// two crash scenarios must not overlap.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_survives_a_crash_at_every_point() {
    for point in [faults::BEFORE_SECRET_WRITE, faults::AFTER_SECRET_WRITE, faults::AFTER_STATUS_WRITE] {
        crash_during_rotation_at(point).await;
    }
    crash_during_repair().await;
}
