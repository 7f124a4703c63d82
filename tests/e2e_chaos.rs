//! `kill -9` as an ordinary event: the operator binary is killed 100 times at
//! random moments while 1,000 Applications converge. No key may ever change, and
//! at the end every Application is Ready with exactly one key in one Secret.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::Process;
use common::{TestEnv, eventually_within, key_fingerprints};
use futures::StreamExt;
use rand::Rng;

const APPS: usize = 1000;
const KILLS: usize = 100;

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_kills_while_a_thousand_applications_converge_change_no_key() {
    let env = TestEnv::new("chaos").await;
    let (_, group) = env.org_and_group().await;
    futures::stream::iter(0..APPS)
        .for_each_concurrent(32, |i| {
            let (env, group) = (&env, &group);
            async move {
                env.create_app(&format!("app-{i:04}"), group).await;
            }
        })
        .await;

    // Every key ever seen, per Secret; a second value for one Secret is a changed key.
    let seen: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (client, namespace, seen, stop) = (env.client.clone(), env.namespace.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (secret, fingerprint) in key_fingerprints(&client, &namespace).await {
                    let mut seen = seen.lock().unwrap();
                    let keys = seen.entry(secret).or_default();
                    if !keys.contains(&fingerprint) {
                        keys.push(fingerprint);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let started = Instant::now();
    for round in 0..KILLS {
        let op = Process::spawn("chaos", &[], &[]);
        let alive = Duration::from_millis(rand::rng().random_range(150..1500));
        tokio::time::sleep(alive).await;
        op.signal("-KILL");
        drop(op);
        if round % 20 == 19 {
            let issued = key_fingerprints(&env.client, &env.namespace).await.len();
            println!("after {} kills ({:?}): {issued} Secrets", round + 1, started.elapsed());
        }
    }
    let survivor = Process::spawn("chaos-final", &[], &[]);
    eventually_within(Duration::from_secs(300), "every Application Ready in the Group's status", || async {
        let status = env.groups().get(&group).await.ok()?.status?;
        (status.applications.ready as usize == APPS).then_some(())
    })
    .await;
    println!("{KILLS} kills and convergence of {APPS} Applications took {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.await.unwrap();
    drop(survivor);

    let changed: Vec<_> = seen.lock().unwrap().iter().filter(|(_, k)| k.len() > 1).map(|(s, _)| s.clone()).collect();
    assert!(changed.is_empty(), "{} keys changed under kill -9: {changed:?}", changed.len());
    let secrets = key_fingerprints(&env.client, &env.namespace).await;
    assert_eq!(secrets.len(), APPS, "one Secret per Application");
    let apps = env.apps().list(&Default::default()).await.unwrap().items;
    for app in &apps {
        let status = app.status.as_ref().expect("status");
        let secret = status.key_secret_name.as_ref().expect("a Secret name");
        assert_eq!(status.key_fingerprint.as_ref(), secrets.get(secret), "{secret}: status and Secret disagree");
        assert_eq!(status.keys.len(), 1, "{secret} holds a previous key");
    }
    let repaired: usize = env.events_for_reason("KeyRepaired").await;
    assert_eq!(repaired, 0, "keys were repaired under kill -9");
    env.cleanup().await;
}
