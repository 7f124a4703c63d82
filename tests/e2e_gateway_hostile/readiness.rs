//! Readiness follows the key index: a gateway whose watches keep failing (its
//! path to the API server cut) turns unready within the stale bound, because a key
//! revoked meanwhile would go unnoticed, and ready again once they recover.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kube::config::Kubeconfig;
use tokio::net::{TcpListener, TcpStream};

use crate::common::gateway::{Gateway, kubeconfig, providers_file};
use crate::common::verifier::{log_dir, request};
use crate::common::{eventually_within, unique};

/// A TCP relay to the API server that can be cut: while cut, it closes what it
/// has and every new connection at once, as a lost route or a dead node would.
struct Relay {
    addr: String,
    cut: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Relay {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(generation);
        let (flag, cuts) = (cut.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if flag.load(Ordering::Acquire) {
                    continue; // dropped: closed at once
                }
                let upstream = upstream.clone();
                let mut cuts = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self { addr, cut, generation }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Release);
        if cut {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}

async fn ready(gateway: &Gateway) -> Option<(u16, String)> {
    request(&gateway.metrics, "/readyz", &[]).await.map(|a| (a.status, a.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_whose_key_watch_keeps_failing_turns_unready_and_recovers() {
    // The gateway's kubeconfig, with its API server reached through the relay.
    let mut config = Kubeconfig::read_from(kubeconfig()).unwrap();
    let cluster = config.clusters[0].cluster.as_mut().unwrap();
    let server = cluster.server.clone().unwrap();
    let upstream = server.trim_start_matches("https://").trim_end_matches('/').to_string();
    let relay = Relay::start(upstream).await;
    cluster.server = Some(format!("https://{}", relay.addr));
    let name = unique("stale");
    let dir = log_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    let providers = providers_file(&dir, "127.0.0.1:9", &[]);
    let stale_after = Duration::from_secs(2);
    let gateway = Gateway::start_with_kubeconfig(&name, &providers, &["--index-stale-seconds", "2"], &path).await;
    assert_eq!(ready(&gateway).await.unwrap().0, 200);

    relay.set_cut(true);
    let cut_at = Instant::now();
    let (_, body) = eventually_within(Duration::from_secs(60), "readyz 503 once the watches keep failing", || async {
        ready(&gateway).await.filter(|(status, _)| *status == 503)
    })
    .await;
    assert!(body.contains("can no longer be kept current"), "{body}");
    assert!(cut_at.elapsed() >= stale_after, "unready only after the stale bound, not at the first error");
    assert_eq!(
        request(&gateway.metrics, "/healthz", &[]).await.unwrap().status,
        200,
        "alive: only readiness follows the index"
    );

    relay.set_cut(false);
    // The watcher's backoff grows to 30 s between attempts: recovery is within that.
    eventually_within(Duration::from_secs(90), "readyz 200 once the watches list again", || async {
        ready(&gateway).await.filter(|(status, _)| *status == 200)
    })
    .await;
}
