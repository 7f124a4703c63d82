//! Scale benchmark against a local control plane: `make bench` (N with
//! `PAYI_BENCH_APPS`, default 10000). Three phases on the same API server:
//!
//! 1. **baseline**: a bare client ([`baseline`]) gives N fresh Applications in a
//!    namespace of their own exactly the minimum writes, at concurrency 8 (and at
//!    the operator's concurrency when `PAYI_BENCH_CONCURRENCY` changes it); the
//!    namespace is then deleted, so the operator never sees those objects;
//! 2. **cold start**: the release operator binary over N other Applications that
//!    have neither Secret nor status;
//! 3. **restart** over the converged objects.
//!
//! It prints time, ratio to the baseline, peak and steady RSS, and the requests
//! per Application by verb and resource as counted by the API server, and writes
//! `docs/bench/ready-over-time-<N>.{csv,svg}` (under target/bench/ when
//! `PAYI_BENCH_OPERATOR` names another binary). See docs/benchmark.md.
//!
//! Under `cargo test` (no `--bench` argument) it does nothing.

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "scale/apiserver.rs"]
mod apiserver;
#[path = "scale/baseline.rs"]
mod baseline;
#[path = "scale/chart.rs"]
mod chart;
#[path = "scale/sampler.rs"]
mod sampler;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::process::Process;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::{Api, Client};
use payi_operator::crd::{Application, Group};
use sampler::Sampler;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(3600);
/// The bare client's requests in flight: 8 connections, as in issue 10's baseline.
/// More only slowed it on the 2-core machine (10,000: 35.8 s at 8, 39.4 s at 16).
const BASELINE_CONCURRENCY: usize = 8;
/// The operator's own default `--concurrency` (src/main.rs).
const OPERATOR_CONCURRENCY: usize = 16;

/// The 1-minute load average, noted next to every figure: the machine is shared.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().next().unwrap_or("?").to_string()
}

/// Creates `n` Applications of `group` in `namespace`, 64 at a time.
async fn create_apps(client: &Client, namespace: &str, group: &str, n: usize) -> Vec<Application> {
    let api: Api<Application> = Api::namespaced(client.clone(), namespace);
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let app: Application = serde_json::from_value(json!({
                "apiVersion": "payi.io/v1alpha1", "kind": "Application",
                "metadata": {"name": format!("app-{i:05}")},
                "spec": {"groupRef": {"name": group}}
            }))
            .expect("an Application");
            async move { api.create(&PostParams::default(), &app).await.expect("creating an Application") }
        })
        .buffer_unordered(64)
        .collect()
        .await
}

/// Deletes a namespace and waits until it is gone, so its objects no longer load the control plane.
async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    common::delete(&api, name).await;
    common::eventually_within(LIMIT, &format!("namespace {name} deleted"), || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
}

/// Resident and peak resident memory of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<f64>().ok())
    };
    (field("VmRSS:").unwrap_or(0.0) / 1024.0, field("VmHWM:").unwrap_or(0.0) / 1024.0)
}

/// CPU time a process has used (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// The operator's count of Application reconciles, when its /metrics has one.
fn reconciles(metrics: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| {
            let l = l.strip_prefix("payi_operator_reconciles_total{")?;
            l.contains("controller=\"application\"").then(|| l.rsplit_once(' ')?.1.parse::<f64>().ok())?
        })
        .map(|v| v as u64)
}

struct Phase {
    load: String,
    /// Until every Application was Ready (cold start) or reconciled (restart).
    done: Duration,
    /// Until the operator went idle: no writes and under 2% of a core for 2 s.
    idle: Duration,
    peak_mib: f64,
    steady_mib: f64,
    requests: apiserver::Requests,
    samples: Vec<(f64, usize)>,
}

/// Runs the operator binary until it has handled all `apps` Applications and gone idle.
async fn operator_phase(client: &Client, group: &str, apps: usize, name: &str, args: &[&str]) -> Phase {
    let load = load();
    let before = apiserver::requests(client).await;
    let started = Instant::now();
    let mut operator = match std::env::var_os("PAYI_BENCH_OPERATOR") {
        // Another build, such as the image's static musl binary (target/<triple>/release/payi-operator).
        Some(binary) => Process::spawn_binary(std::path::Path::new(&binary), name, args, &[]),
        None => Process::spawn(name, args, &[]),
    };
    let pid = operator.child.id();
    let groups: Api<Group> = Api::all(client.clone());
    let sampled = groups.clone();
    let group_name = group.to_string();
    let sampler = Sampler::start(started, move || {
        let (groups, group) = (sampled.clone(), group_name.clone());
        async move { Some(groups.get(&group).await.ok()?.status?.applications.ready as usize) }
    });
    let cold = name.contains("cold");
    let operator_ref = &operator;
    common::eventually_within(LIMIT, "every Application Ready (cold start) or reconciled (restart)", || async {
        let done = if cold {
            let ready = groups.get(group).await.ok()?.status?.applications.ready as usize;
            ready >= apps
        } else {
            // The counter appears with the first reconcile; if a build never shows it,
            // the idle wait below is all there is to go by after 30 s.
            let metrics = operator_ref.get("/metrics").await?.1;
            reconciles(&metrics).map_or(started.elapsed() > Duration::from_secs(30), |n| n as usize >= apps)
        };
        done.then_some(())
    })
    .await;
    let done = started.elapsed();
    common::eventually_within(LIMIT, "the operator idle", || async {
        let (writes, cpu) = (apiserver::writes(&apiserver::requests(client).await), cpu_ticks(pid));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let quiet = apiserver::writes(&apiserver::requests(client).await) == writes;
        // 2% of one core over 2 s, at 100 ticks a second.
        (quiet && cpu_ticks(pid) - cpu <= 4).then_some(())
    })
    .await;
    let idle = started.elapsed() - Duration::from_secs(2);
    let samples = sampler.stop().await;
    let mut requests = apiserver::since(&apiserver::requests(client).await, &before);
    // The benchmark's own polling of the Group's status; the operator reads Groups from its cache.
    requests.remove(&("GET".to_string(), "groups".to_string()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (steady_mib, peak_mib) = memory(pid);
    operator.signal("-TERM");
    operator.exit_status().await;
    Phase { load, done, idle, peak_mib, steady_mib, requests, samples }
}

/// A baseline run on `apps` fresh Applications in a namespace of their own, deleted afterwards.
async fn baseline_phase(client: &Client, group: &str, apps: usize, concurrency: usize) -> (String, baseline::Outcome) {
    let namespace = common::unique("bench-baseline");
    common::create_namespace(client, &namespace, &[]).await;
    let created = create_apps(client, &namespace, group, apps).await;
    let load = load();
    let operator_client = common::operator_client().await;
    let mut outcome = baseline::run(&operator_client, created, concurrency).await;
    outcome.samples.push((outcome.elapsed.as_secs_f64(), apps));
    delete_namespace(client, &namespace).await;
    (load, outcome)
}

fn per_app(n: u64, apps: usize) -> String {
    format!("{:.2}", n as f64 / apps as f64)
}

fn print_requests(title: &str, requests: &apiserver::Requests, apps: usize) {
    println!("\n{title}: requests per Application (total), by verb and resource");
    for ((verb, resource), n) in requests {
        println!("  {verb:<8} {resource:<24} {:>8}  ({n})", per_app(*n, apps));
    }
    let writes: u64 = apiserver::writes(requests).values().sum();
    println!(
        "  writes: {} per Application ({writes}); Secret GETs: {} per Application",
        per_app(writes, apps),
        per_app(apiserver::count(requests, "GET", "secrets"), apps)
    );
}

async fn run(apps: usize, concurrency: Option<usize>) {
    let env = common::TestEnv::new("bench").await;
    let (_, group) = env.org_and_group().await;
    println!("payi-operator scale benchmark: {apps} Applications, load {} at start", load());

    // 1. The baseline, at its own concurrency and at the one the operator is given.
    let mut baselines = BTreeMap::new();
    for c in [Some(BASELINE_CONCURRENCY), concurrency.filter(|c| *c != BASELINE_CONCURRENCY)].into_iter().flatten() {
        let (load, outcome) = baseline_phase(&env.client, &group, apps, c).await;
        println!("baseline, concurrency {c}: {:.1?} (load {load})", outcome.elapsed);
        baselines.insert(c, outcome);
    }

    // 2. and 3. The operator, cold and restarted.
    let started = Instant::now();
    create_apps(&env.client, &env.namespace, &group, apps).await;
    println!("created {apps} Applications for the operator in {:.1?}", started.elapsed());
    let flag = concurrency.map(|c| c.to_string());
    let args: Vec<&str> = flag.as_deref().map(|c| vec!["--concurrency", c]).unwrap_or_default();
    let cold = operator_phase(&env.client, &group, apps, "bench-cold-start", &args).await;
    let restart = operator_phase(&env.client, &group, apps, "bench-restart", &args).await;

    let operator_concurrency = concurrency.unwrap_or(OPERATOR_CONCURRENCY);
    let base = &baselines[&BASELINE_CONCURRENCY];
    println!(
        "\n| {apps} Applications | until all Ready | until idle | ratio to baseline (c=8) | peak RSS | steady RSS | writes/App | Secret GETs/App | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (c, b) in &baselines {
        println!("| baseline, concurrency {c} | {:.1?} | | 1.00 | | | 2.00 | 0 | |", b.elapsed);
    }
    for (label, p) in [
        (format!("operator cold start (concurrency {operator_concurrency})"), &cold),
        ("operator restart".into(), &restart),
    ] {
        let writes: u64 = apiserver::writes(&p.requests).values().sum();
        println!(
            "| {label} | {:.1?} | {:.1?} | {:.2} | {:.0} MiB | {:.0} MiB | {} | {} | {} |",
            p.done,
            p.idle,
            p.done.as_secs_f64() / base.elapsed.as_secs_f64(),
            p.peak_mib,
            p.steady_mib,
            per_app(writes, apps),
            per_app(apiserver::count(&p.requests, "GET", "secrets"), apps),
            p.load,
        );
    }
    if let Some(b) = baselines.get(&operator_concurrency).filter(|_| operator_concurrency != BASELINE_CONCURRENCY) {
        println!(
            "ratio to the baseline at concurrency {operator_concurrency}: {:.2}",
            cold.done.as_secs_f64() / b.elapsed.as_secs_f64()
        );
    }
    print_requests("cold start", &cold.requests, apps);
    print_requests("restart", &restart.requests, apps);
    println!(
        "\nmemory per Application (steady RSS after restart / N): {:.1} KiB",
        restart.steady_mib * 1024.0 / apps as f64
    );

    // The charts in docs/ are the release build's; another binary's go to target/.
    let dir = match std::env::var_os("PAYI_BENCH_OPERATOR") {
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/bench"),
        Some(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench"),
    };
    std::fs::create_dir_all(&dir).expect("the charts' directory");
    let series = [
        chart::Series { key: "baseline", label: "baseline (bare client, concurrency 8)", samples: &base.samples },
        chart::Series { key: "operator", label: "payi-operator cold start", samples: &cold.samples },
    ];
    let csv = dir.join(format!("ready-over-time-{apps}.csv"));
    chart::write_csv(&csv, &series).expect("writing the CSV");
    let svg = dir.join(format!("ready-over-time-{apps}.svg"));
    let title = format!("{apps} Applications Ready over time");
    chart::write_svg(&svg, &title, &series).expect("rendering the chart");
    println!("wrote {} and {}", csv.display(), svg.display());
    env.cleanup().await;
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<usize>().ok());
    let apps = number("PAYI_BENCH_APPS").unwrap_or(10_000);
    let concurrency = number("PAYI_BENCH_CONCURRENCY");
    tokio::runtime::Runtime::new().expect("a runtime").block_on(run(apps, concurrency));
}
