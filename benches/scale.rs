//! Scale benchmark against the local control plane: `make bench` (or
//! `PAYI_BENCH_APPS=20000 make bench`). Creates N Applications, starts the release
//! operator binary, and reports time to converge, peak memory and API writes, then
//! restarts it over the converged objects and reports the same. Figures go in
//! docs/benchmark.md.
//!
//! Under `cargo test` (no `--bench` argument) it does nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::process::Process;
use common::{TestEnv, eventually_within};
use futures::StreamExt;
use kube::Client;

/// Total writes on the operator's kinds, from the harness's per-resource counter.
async fn writes(client: &Client) -> u64 {
    common::writes(client).await.values().sum()
}

/// Resident and peak resident memory of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<f64>().ok())
    };
    (field("VmRSS:").unwrap_or(0.0) / 1024.0, field("VmHWM:").unwrap_or(0.0) / 1024.0)
}

async fn run(apps: usize) {
    let env = TestEnv::new("bench").await;
    let (_, group) = env.org_and_group().await;
    let started = Instant::now();
    futures::stream::iter(0..apps)
        .map(|i| {
            let (env, group) = (&env, &group);
            async move { env.create_app(&format!("app-{i:05}"), group).await }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    println!("created {apps} Applications in {:.1?}", started.elapsed());

    let mut results = BTreeMap::new();
    for phase in ["cold start", "restart over converged objects"] {
        let before = writes(&env.client).await;
        let started = Instant::now();
        let mut operator = Process::spawn(
            &format!("bench-{}", phase.replace(' ', "-")),
            &["--concurrency", "16"],
            &[("RUST_LOG", "warn")],
        );
        let limit = Duration::from_secs(3600);
        let operator_ref = &operator;
        eventually_within(limit, "every Application reconciled and Ready, and the operator idle", || async {
            let status = env.groups().get(&group).await.ok()?.status?;
            let metrics = operator_ref.get("/metrics").await?.1;
            let reconciled = metrics.lines().find_map(|l| {
                l.strip_prefix("payi_operator_reconciles_total{controller=\"application\"}")?.trim().parse::<f64>().ok()
            })?;
            if (status.applications.ready as usize) < apps || (reconciled as usize) < apps {
                return None;
            }
            let settled = writes(&env.client).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            (writes(&env.client).await == settled).then_some(())
        })
        .await;
        let converged = started.elapsed();
        let (rss, peak) = memory(operator.child.id());
        let wrote = writes(&env.client).await - before;
        operator.signal("-TERM");
        operator.exit_status().await;
        results.insert(phase, (converged, rss, peak, wrote));
    }
    println!("\n| phase ({apps} Applications) | until idle | RSS | peak RSS | API writes |");
    println!("|---|---|---|---|---|");
    for (phase, (time, rss, peak, wrote)) in results {
        println!("| {phase} | {time:.1?} | {rss:.0} MiB | {peak:.0} MiB | {wrote} |");
    }
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(env.client.clone());
    common::delete(&namespaces, &env.namespace).await;
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let apps = std::env::var("PAYI_BENCH_APPS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    tokio::runtime::Runtime::new().unwrap().block_on(run(apps));
}
