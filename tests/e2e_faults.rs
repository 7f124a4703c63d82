//! Control-plane faults, for real: the API server and then etcd are killed and
//! started again under a running operator (the release-like binary). The
//! operator says it is blind while it cannot watch, picks up new work within
//! 30 s of the API server being ready again, and changes no existing key.
//!
//! One test function, so the restarts never overlap another test of this binary.

mod common;

use std::time::{Duration, Instant};

use common::process::Process;
use common::{TestEnv, app_with_reason, eventually_within, key_fingerprints, restart_component};

async fn readyz(op: &Process) -> Option<(u16, String)> {
    op.get("/readyz").await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_survives_api_server_and_etcd_restarts_without_changing_a_key() {
    let env = TestEnv::new("faults").await;
    let (_, group) = env.org_and_group().await;
    for i in 0..3 {
        env.create_app(&format!("before-{i}"), &group).await;
    }
    let op = Process::spawn("faults", &[], &[]);
    for i in 0..3 {
        app_with_reason(&env, &format!("before-{i}"), "KeyIssued").await;
    }
    eventually_within(Duration::from_secs(30), "the operator to be ready", || async {
        (readyz(&op).await?.0 == 200).then_some(())
    })
    .await;
    let keys = key_fingerprints(&env.client, &env.namespace).await;
    assert_eq!(keys.len(), 3);

    for component in ["kube-apiserver", "etcd"] {
        // Watch /readyz while the component is down: it must say the operator is blind.
        let restart = tokio::spawn(restart_component(component, 8));
        let mut blind = None;
        while !restart.is_finished() {
            if let Some((503, body)) = readyz(&op).await {
                blind.get_or_insert(body);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        restart.await.unwrap();
        let back = Instant::now();
        if component == "kube-apiserver" {
            let body = blind.clone().expect("/readyz kept answering 200 while the API server was gone");
            assert!(body.contains("cannot watch"), "{body}");
        }
        println!("{component}: /readyz while down: {blind:?}");

        // New work after the restart is done within 30 s, without restarting the operator.
        let name = format!("after-{component}");
        env.create_app(&name, &group).await;
        eventually_within(Duration::from_secs(30), &format!("{name} to get its key"), || async {
            let app = env.apps().get(&name).await.ok()?;
            (common::ready_of(&app.status?.conditions)?.1 == "KeyIssued").then_some(())
        })
        .await;
        println!("{component}: new Application Ready {:?} after the API server was ready again", back.elapsed());
        eventually_within(Duration::from_secs(60), "/readyz to recover", || async {
            (readyz(&op).await?.0 == 200).then_some(())
        })
        .await;
        let now = key_fingerprints(&env.client, &env.namespace).await;
        for (secret, fingerprint) in &keys {
            assert_eq!(now.get(secret), Some(fingerprint), "{secret} changed across the {component} restart");
        }
    }
    let logs = op.logs();
    assert!(
        logs.lines().any(|l| l.contains("\"level\":\"WARN\"") && l.contains("watch failed")),
        "no warning named the failing watch:\n{logs}"
    );
}
