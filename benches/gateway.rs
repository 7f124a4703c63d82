//! The metering gateway (`src/gateway/`) against the provider simulator of the
//! tests (`tests/common/provider_sim.rs`) on loopback: `make bench-gateway`.
//!
//! The gateway runs in a child process (this binary again, `PAYI_BENCH_ROLE=gateway`)
//! so that its memory is its own: the production `Gateway` and `server::serve`,
//! its verifier index filled with 10,000 live keys without an API server, the
//! shipped price table, a provider credential file, fresh metrics in a registry.
//! The simulator, the load generator, nginx and wrk run beside it.
//!
//! 1. Added latency: an open-loop load generator (requests sent on a fixed
//!    schedule whatever the answers, each timed from its scheduled send to the
//!    end of its body, so a stall counts for every request it delays) at 1,000
//!    and 5,000 requests/s, non-streaming and streaming, straight to the
//!    simulator and through the gateway, same requests.
//! 2. Throughput: wrk (closed loop) against the simulator, the gateway, and
//!    nginx `proxy_pass` to the same simulator.
//! 3. Memory per open stream: 1,000 and 2,000 concurrent streams through the
//!    gateway from a model that waits between events.
//! 4. The gateway's resident memory at start, after each phase, and at the end;
//!    then, as a diagnostic, after the child calls glibc's `malloc_trim`.
//!
//! At the end the gateway's `/metrics` must show every request counted, as
//! `metered` (or `incomplete` for the held streams). Method and results:
//! docs/benchmark.md, "Metering gateway".
//! `PAYI_BENCH_SECONDS` (default 10) sets each measured latency run and wrk run;
//! `PAYI_BENCH_ONLY=limits` runs only phase 5 (limits on versus off, 5 rounds).
//! Under `cargo test` (no `--bench` argument) it does nothing.

#[path = "../tests/common/provider_sim.rs"]
mod provider_sim;
#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::registry::Registry;

use payi_operator::crd::{Limit, LimitPeriod, LimitType};
use payi_operator::gateway::connections::{Bounds, Caps};
use payi_operator::gateway::pricing::{PriceTable, Prices, Unpriced};
use payi_operator::gateway::providers::Providers;
use payi_operator::gateway::proxy::{Credentials, Gateway, LedgerPolicy, Limits};
use payi_operator::gateway::{https_client, metrics as gateway_metrics, server};
use payi_operator::key::ApiKey;
use payi_operator::limits::ledger::{Ledger, LedgerMetrics, Timeouts};
use payi_operator::limits::rule::{application_level, compile, group_level, organization_level};
use payi_operator::memory;
use payi_operator::verifier::index::{AppId, AppLimits, ApplicationView, Index, KeyView, digest_of};
use payi_operator::verifier::watch::Synced;
use payi_operator::verifier::{Verifier, http as verifier_http, metrics as verifier_metrics};
use provider_sim::ProviderSim;
use support::{Wrk, free_port, tool};

/// Live keys in the gateway's index (the memory target is set at 10,000).
const KEYS: usize = 10_000;
const RATES: [u32; 2] = [1_000, 5_000];
const WARM_UP: Duration = Duration::from_secs(2);
const WRK_CONNECTIONS: &str = "64";
const WRK_THREADS: &str = "2";
/// Concurrent streams held open through the gateway.
const STREAMS: [usize; 2] = [1_000, 2_000];
/// The simulator waits this long between a held stream's events: none comes
/// while the memory is read.
const STREAM_DRIP_MS: u64 = 5_000;
const MODEL: &str = "gpt-4o-mini";
const PROMPT: &str = "Say hello to the benchmark in one short sentence.";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn main() {
    if std::env::var("PAYI_BENCH_ROLE").as_deref() == Ok("gateway") {
        return gateway_child();
    }
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds: u64 = std::env::var("PAYI_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let measure = Duration::from_secs(seconds);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let files = raise_file_limit();
    let (nginx_bin, wrk_bin) = (tool("nginx"), tool("wrk"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-gateway");
    std::fs::create_dir_all(&dir).unwrap();

    // The simulator and the load generator: the same process, runtimes of their own.
    let sim_runtime = runtime("sim", cores);
    let load = runtime("load", cores);
    let sim = Arc::new(sim_runtime.block_on(ProviderSim::start()));
    {
        // The simulator records every request; the benchmark reads none of them.
        let sim = sim.clone();
        sim_runtime.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                sim.clear();
            }
        });
    }

    // The gateway, in its own process.
    let child = GatewayChild::start(&sim.url(), &dir, "plain", None);
    let (port, metrics_port, key) = (child.port, child.metrics_port, child.key.clone());
    let pid = child.process.0.id();
    std::thread::sleep(Duration::from_secs(1));
    let mut memory = vec![("idle, just started", Memory::of(pid))];

    let gateway_url = format!("http://127.0.0.1:{port}/openai/v1/chat/completions");
    let direct_url = format!("{}/v1/chat/completions", sim.url());
    let client = http_client();
    // Both paths answer before anything is timed.
    for (url, stream) in [(&direct_url, false), (&gateway_url, false), (&direct_url, true), (&gateway_url, true)] {
        let shot = Shot { url: url.parse().unwrap(), key: key.clone(), body: body(MODEL, stream), stream };
        let sample = load.block_on(shot.send(client.clone(), Instant::now()));
        assert!(sample.is_some(), "{url} (stream: {stream}) did not answer 200 with a whole body");
    }

    // `PAYI_BENCH_ONLY=limits`: only phase 5, limits (reserve and settle) on versus off.
    if std::env::var("PAYI_BENCH_ONLY").as_deref() == Ok("limits") {
        report_limits(&limits_on_off(&load, &client, &sim, &dir, &child, measure));
        return;
    }

    // 1. Added latency, open loop.
    let mut latency = Vec::new();
    for rate in RATES {
        for stream in [false, true] {
            for (path, url) in [("direct", &direct_url), ("gateway", &gateway_url)] {
                eprintln!("open loop: {rate} req/s, {}, {path}", if stream { "stream" } else { "json" });
                let shot = Shot { url: url.parse().unwrap(), key: key.clone(), body: body(MODEL, stream), stream };
                let run = open_loop(&load, &client, &shot, rate, WARM_UP, measure);
                latency.push((rate, stream, path, run));
            }
        }
    }
    memory.push(("after the open-loop runs", Memory::of(pid)));

    // 2. Throughput, closed loop: wrk against the simulator, the gateway and nginx.
    let nginx_port = free_port();
    let mut nginx = start_nginx(&nginx_bin, &dir, nginx_port, sim.addr.port());
    let script = dir.join("post.lua");
    std::fs::write(&script, wrk_script(&key)).unwrap();
    let wrk_duration = format!("{seconds}s");
    let mut throughput = Vec::new();
    for (name, url) in [
        ("simulator, direct", direct_url.clone()),
        ("gateway -> simulator", gateway_url.clone()),
        ("nginx proxy_pass -> simulator", format!("http://127.0.0.1:{nginx_port}/v1/chat/completions")),
    ] {
        eprintln!("wrk: {name}");
        throughput.push((name, wrk(&wrk_bin, &script, &wrk_duration, &url)));
    }
    let _ = Command::new("kill").args(["-QUIT", &nginx.0.id().to_string()]).status();
    let _ = nginx.0.wait();
    memory.push(("after wrk", Memory::of(pid)));

    // 3. Memory per open stream, each step on top of the last.
    eprintln!("concurrent streams: {STREAMS:?}");
    let stream_shot = Shot {
        url: gateway_url.parse().unwrap(),
        key: key.clone(),
        body: body(&format!("drip-{STREAM_DRIP_MS}-{MODEL}"), true),
        stream: true,
    };
    let streams = hold_streams(&load, &stream_shot, &STREAMS, pid, &sim);
    for (stage, when) in streams.stages.iter().zip(["streams held (first step)", "streams held (last step)"]) {
        memory.push((when, stage.memory));
    }

    // 4. At rest again: long enough for the gateway to see it is quiet and trim its heap.
    std::thread::sleep(memory::QUIET * 2 + Duration::from_secs(1));
    memory.push(("steady, after all the load", Memory::of(pid)));
    // Diagnostic: whether glibc still holds free heap the gateway's own trim left.
    let _ = Command::new("kill").args(["-USR1", &pid.to_string()]).status();
    std::thread::sleep(Duration::from_secs(1));
    memory.push(("after malloc_trim (diagnostic)", Memory::of(pid)));
    let outcomes = load.block_on(outcomes(&client, metrics_port));

    // 5. Limits on versus off: a second gateway whose every key is covered by a
    // block limit at its Organization, Group and Application, with a Redis ledger.
    let limits = limits_on_off(&load, &client, &sim, &dir, &child, measure);
    drop(child);

    report(&Results { cores, files, seconds, latency, throughput, streams, memory, outcomes, limits });
}

// ---------------------------------------------------------------------------
// The gateway child

/// The gateway as `payi-operator gateway` builds it, with the key index filled
/// here instead of from an API server. Serves until killed.
fn gateway_child() {
    // Gone with the benchmark, however it ends.
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let upstream = var("PAYI_BENCH_UPSTREAM");
    let keys: usize = var("PAYI_BENCH_KEYS").parse().unwrap();
    let key_file = PathBuf::from(var("PAYI_BENCH_KEY_FILE"));
    let port: u16 = var("PAYI_BENCH_PORT").parse().unwrap();
    let metrics_port: u16 = var("PAYI_BENCH_METRICS_PORT").parse().unwrap();
    let dir = PathBuf::from(var("PAYI_BENCH_DIR"));
    let redis = std::env::var("PAYI_BENCH_LIMITS_REDIS").ok();
    // The same runtime as `payi-operator gateway`: multi-threaded, one worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let (index, presented) = filled_index(keys, redis.is_some());
        let mut registry = Registry::default();
        let ledger = redis.map(|url| {
            let metrics = Arc::new(LedgerMetrics::default());
            metrics.register(&mut registry);
            // The gateway's defaults (--limits-timeout-ms, --limits-charge-timeout-ms, --limits-event-ttl-seconds).
            let timeouts = Timeouts {
                check: Duration::from_millis(100),
                charge: Duration::from_millis(1000),
                event_ttl: Duration::from_secs(3600),
            };
            Ledger::new(&url, timeouts, metrics).unwrap()
        });
        if let Some(ledger) = &ledger {
            tokio::spawn(ledger.clone().run());
        }
        let key_metrics = Arc::new(verifier_metrics::Metrics::default());
        key_metrics.register(&mut registry);
        let verifier = Verifier::new(Arc::new(RwLock::new(index)), key_metrics, None, false);
        let credential = dir.join("openai-credential");
        std::fs::write(&credential, "sk-bench-not-a-real-key\n").unwrap();
        let providers = Providers::parse(&format!(
            "providers:\n  - {{name: openai, kind: openai, baseURL: '{upstream}', credentialFile: '{}'}}\n",
            credential.display()
        ))
        .unwrap();
        let credentials = Credentials::default();
        credentials.reload(&providers);
        let metrics = Arc::new(gateway_metrics::Metrics::default());
        metrics.register(&mut registry);
        let gateway = Arc::new(Gateway {
            verifier: Arc::new(verifier.with_provider_key_headers()),
            providers,
            credentials,
            client: https_client().unwrap(),
            metrics,
            prices: Arc::new(Prices::new(PriceTable::default_table().unwrap())),
            unpriced: Arc::new(Unpriced::default()),
            limits: Limits {
                max_request_bytes: 8 * 1024 * 1024,
                request_body_timeout: Duration::from_secs(30),
                upstream_timeout: Duration::from_secs(600),
                upstream_idle: Duration::from_secs(120),
            },
            budget: payi_operator::gateway::budget::Budget::new(64 * 1024 * 1024),
            ledger,
            ledger_policy: LedgerPolicy::default(),
        });
        // Not the gateway's: lets the benchmark see how much of the heap glibc keeps unused.
        let mut trim = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).unwrap();
        tokio::spawn(async move {
            while trim.recv().await.is_some() {
                // SAFETY: malloc_trim only walks glibc's own heaps.
                let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
            }
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        // /metrics, so the benchmark can check every request was metered.
        let ops = tokio::net::TcpListener::bind(("127.0.0.1", metrics_port)).await.unwrap();
        let ops_router = verifier_http::ops_router(Arc::new(registry), Arc::new(Synced::default()));
        tokio::spawn(async move { axum::serve(ops, ops_router).await });
        // Listening: now the benchmark may have the key.
        let partial = key_file.with_extension("partial");
        std::fs::write(&partial, &presented).unwrap();
        std::fs::rename(&partial, &key_file).unwrap();
        // The flags' defaults, but no cap: the benchmark opens thousands of streams.
        let connections = server::Connections {
            bounds: Bounds { head: Duration::from_secs(10), idle: Duration::from_secs(120) },
            caps: Caps { max_open: usize::MAX, max_per_peer: 0 },
            ping_interval: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(20),
        };
        let connection_metrics = Arc::new(gateway_metrics::ConnectionMetrics::default());
        server::serve(
            listener,
            gateway,
            connections,
            connection_metrics,
            Duration::from_secs(1),
            std::future::pending(),
        )
        .await;
    });
}

/// An index of `keys` live keys, one per Application, and the last key. With
/// `limits`, a block limit on the Organization, the Group and every Application,
/// each far above what the benchmark spends, so every request is checked and
/// charged against three counters and none is refused.
fn filled_index(keys: usize, limits: bool) -> (Index, String) {
    let limit = |name: &str, period| Limit {
        name: name.into(),
        max: "1000000".into(),
        period,
        kind: LimitType::Block,
        threshold: None,
        reset_requested_at: None,
    };
    let rules = |level: String, name: &str, period| {
        if limits { compile(&level, &[limit(name, period)]) } else { Arc::from([]) }
    };
    let mut index = Index::default();
    index.apply_organization_with_limits("acme", rules(organization_level("acme"), "monthly", LimitPeriod::Month));
    index.apply_group_with_limits("eng", "acme", rules(group_level("eng"), "daily", LimitPeriod::Day));
    let mut presented = String::new();
    for i in 0..keys {
        let key = ApiKey::mint().unwrap().expose().to_string();
        let name = format!("app-{i}");
        let application = rules(application_level("team", &name), "monthly", LimitPeriod::Month);
        index.apply_application(&ApplicationView {
            id: AppId { namespace: "team".into(), name },
            group: "eng".into(),
            live: true,
            catching_up: false,
            keys: vec![KeyView { digest: digest_of(&key), expires_at_ms: None }],
            use_cases: Default::default(),
            limits: AppLimits { application, use_cases: Default::default() },
        });
        presented = key;
    }
    (index, presented)
}

/// A gateway child process: where it listens, and the key the benchmark presents.
struct GatewayChild {
    process: Killed,
    port: u16,
    metrics_port: u16,
    key: Arc<str>,
}

impl GatewayChild {
    /// Starts one and waits until it listens; `redis`: its limits ledger.
    fn start(upstream: &str, dir: &Path, name: &str, redis: Option<&str>) -> GatewayChild {
        let (port, metrics_port) = (free_port(), free_port());
        let key_file = dir.join(format!("presented-key-{name}"));
        let _ = std::fs::remove_file(&key_file);
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .env("PAYI_BENCH_ROLE", "gateway")
            .env("PAYI_BENCH_UPSTREAM", upstream)
            .env("PAYI_BENCH_KEYS", KEYS.to_string())
            .env("PAYI_BENCH_KEY_FILE", &key_file)
            .env("PAYI_BENCH_PORT", port.to_string())
            .env("PAYI_BENCH_METRICS_PORT", metrics_port.to_string())
            .env("PAYI_BENCH_DIR", dir)
            .env_remove("PAYI_BENCH_LIMITS_REDIS")
            .stdin(Stdio::null());
        if let Some(url) = redis {
            command.env("PAYI_BENCH_LIMITS_REDIS", url);
        }
        let mut process = Killed(command.spawn().expect("starting the gateway child"));
        let key = wait_for_key(&mut process.0, &key_file);
        GatewayChild { process, port, metrics_port, key }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/openai/v1/chat/completions", self.port)
    }
}

fn wait_for_key(child: &mut std::process::Child, key_file: &Path) -> Arc<str> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(key) = std::fs::read_to_string(key_file) {
            return key.trim().into();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the gateway child exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "the gateway child did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when dropped (also on a panic).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------
// Requests

fn runtime(name: &str, threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads).thread_name(name).enable_all().build().unwrap()
}

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).build(connector)
}

fn body(model: &str, stream: bool) -> Bytes {
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": stream,
    });
    Bytes::from(body.to_string())
}

/// One request as the load generator sends it.
#[derive(Clone)]
struct Shot {
    url: hyper::Uri,
    key: Arc<str>,
    body: Bytes,
    stream: bool,
}

/// One answered request: microseconds from its scheduled send to its first body
/// frame and to the end of its body.
#[derive(Clone, Copy)]
struct Sample {
    first_byte_us: u32,
    total_us: u32,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Shot {
    fn request(&self) -> Request<Full<Bytes>> {
        Request::post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, format!("Bearer {}", self.key))
            .body(Full::new(self.body.clone()))
            .unwrap()
    }

    /// Sends it and reads the whole answer; `None` unless it is a 200 with a
    /// complete body (a stream ending in `[DONE]`).
    async fn send(self, client: HttpClient, scheduled: Instant) -> Option<Sample> {
        let exchange = async {
            let response = client.request(self.request()).await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            let mut body = response.into_body();
            let mut first = None;
            let mut tail = Vec::new();
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame.ok()?.into_data() else { continue };
                first.get_or_insert_with(|| scheduled.elapsed());
                tail.extend_from_slice(&data);
                tail.drain(..tail.len().saturating_sub(16));
            }
            let total = scheduled.elapsed();
            if self.stream && !tail.ends_with(b"data: [DONE]\n\n") {
                return None;
            }
            Some(Sample { first_byte_us: micros(first.unwrap_or(total)), total_us: micros(total) })
        };
        tokio::time::timeout(Duration::from_secs(30), exchange).await.ok().flatten()
    }
}

/// What one open-loop run measured (warm-up left out).
struct Run {
    samples: Vec<Sample>,
    errors: usize,
    /// The latest any request was sent after its scheduled time.
    worst_send_lag: Duration,
}

/// Sends `shot` `rate` times a second for `warm_up + measure` on a fixed
/// schedule, never waiting for answers, and keeps the samples after the warm-up.
fn open_loop(
    load: &tokio::runtime::Runtime,
    client: &HttpClient,
    shot: &Shot,
    rate: u32,
    warm_up: Duration,
    measure: Duration,
) -> Run {
    // The pacer is this thread, sleeping between sends; a tight timer slack keeps it on time.
    // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000) };
    let interval = Duration::from_secs(1) / rate;
    let skip = (warm_up.as_secs_f64() * f64::from(rate)) as usize;
    let count = skip + (measure.as_secs_f64() * f64::from(rate)) as usize;
    let start = Instant::now() + Duration::from_millis(10);
    let mut handles = Vec::with_capacity(count);
    let mut worst_send_lag = Duration::ZERO;
    for i in 0..count {
        let scheduled = start + interval * i as u32;
        let now = Instant::now();
        if scheduled > now {
            std::thread::sleep(scheduled - now);
        }
        if i >= skip {
            worst_send_lag = worst_send_lag.max(scheduled.elapsed());
        }
        handles.push(load.spawn(shot.clone().send(client.clone(), scheduled)));
    }
    let results: Vec<Option<Sample>> = load
        .block_on(async { futures::future::join_all(handles).await.into_iter().map(|r| r.ok().flatten()).collect() });
    let measured = &results[skip..];
    Run {
        samples: measured.iter().flatten().copied().collect(),
        errors: measured.iter().filter(|s| s.is_none()).count(),
        worst_send_lag,
    }
}

/// One step of holding streams open: `open` streams in all.
struct Stage {
    open: usize,
    /// Streams that had their first event through the gateway at the reading.
    started: usize,
    /// Streams the simulator had open at the reading.
    upstream_open: usize,
    memory: Memory,
    /// From the first stream of this step until every stream had its first event.
    ramp: Duration,
}

/// What holding streams open measured.
struct Held {
    before: Memory,
    stages: Vec<Stage>,
    /// After the clients went away: until the simulator saw every stream closed,
    /// and how many it still had open then.
    closed_after: Duration,
    left_open: usize,
}

/// Opens streams through the gateway 1 ms apart, up to each count of `steps` in
/// turn, keeping the earlier ones open; at each step waits until every stream
/// has had its first event, then reads the gateway's memory. Then drops them
/// all and waits until the simulator has seen them go.
fn hold_streams(load: &tokio::runtime::Runtime, shot: &Shot, steps: &[usize], pid: u32, sim: &ProviderSim) -> Held {
    let before = Memory::of(pid);
    let client = http_client();
    let started = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let mut stages = Vec::new();
    for &open in steps {
        let began = Instant::now();
        while tasks.len() < open {
            let (client, request, started) = (client.clone(), shot.request(), started.clone());
            tasks.push(load.spawn(async move {
                let Ok(response) = client.request(request).await else { return };
                if !response.status().is_success() {
                    return;
                }
                let mut body = response.into_body();
                let mut counted = false;
                while let Some(Ok(frame)) = body.frame().await {
                    if frame.is_data() && !std::mem::replace(&mut counted, true) {
                        started.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }));
            std::thread::sleep(Duration::from_millis(1));
        }
        let deadline = began + Duration::from_secs(20);
        while started.load(Ordering::SeqCst) < open && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let ramp = began.elapsed();
        std::thread::sleep(Duration::from_millis(300));
        stages.push(Stage {
            open,
            started: started.load(Ordering::SeqCst),
            upstream_open: sim.open_streams(),
            memory: Memory::of(pid),
            ramp,
        });
    }
    for task in &tasks {
        task.abort();
    }
    drop(client);
    // The gateway notices a client gone at its next write (the stream's next
    // event), then drops its upstream stream.
    let gone = Instant::now();
    let deadline = gone + Duration::from_millis(STREAM_DRIP_MS * 3);
    while sim.open_streams() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    Held { before, stages, closed_after: gone.elapsed(), left_open: sim.open_streams() }
}

/// A gateway child's `/metrics`, as text.
async fn scrape(client: &HttpClient, metrics_port: u16) -> String {
    let uri: hyper::Uri = format!("http://127.0.0.1:{metrics_port}/metrics").parse().unwrap();
    let request = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
    let response = client.request(request).await.expect("the gateway's /metrics");
    let text = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&text).into_owned()
}

/// The sum of every series of one counter or gauge in a scrape.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, v| sum + v)
}

/// The gateway's `payi_gateway_proxied_requests_total`, summed by outcome.
async fn outcomes(client: &HttpClient, metrics_port: u16) -> Vec<(String, u64)> {
    let text = scrape(client, metrics_port).await;
    let mut sums: Vec<(String, u64)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("payi_gateway_proxied_requests_total{")) {
        let outcome = line.split("outcome=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("?").to_string();
        let count: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        match sums.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, sum)) => *sum += count as u64,
            None => sums.push((outcome, count as u64)),
        }
    }
    sums
}

// ---------------------------------------------------------------------------
// Limits on versus off

/// Open-loop rate of the limits comparison.
const LIMITS_RATE: u32 = 1_000;
/// Rounds of off/on pairs, alternating, so drift of the machine hits both.
const LIMITS_ROUNDS: usize = 5;

/// What the limits comparison measured.
struct LimitsRuns {
    /// (stream, "off" or "on", run), off and on alternating.
    runs: Vec<(bool, &'static str, Run)>,
    /// Requests the limited gateway metered, and the Organization's counter in Redis.
    metered_on: u64,
    organization_nano_usd: i64,
    /// `payi_gateway_cost_usd_total` of the limited gateway.
    cost_usd: f64,
    ledger_errors: f64,
    charges_dropped: f64,
    unchecked: f64,
    refused: f64,
}

/// Redis on loopback for the ledger, append-only file on (as the chart's
/// documentation advises), killed when dropped.
fn start_redis(dir: &Path) -> (Killed, String) {
    let bin = tool("redis-server");
    let port = free_port();
    let data = dir.join("redis");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let process = Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
        .arg("--dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("starting redis-server");
    let url = format!("redis://127.0.0.1:{port}/0");
    let deadline = Instant::now() + Duration::from_secs(20);
    while redis::Client::open(url.as_str()).unwrap().get_connection().is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Killed(process), url)
}

/// The same open-loop runs through `off` (no ledger) and a second gateway with
/// every key covered by three block limits and a Redis ledger.
fn limits_on_off(
    load: &tokio::runtime::Runtime,
    client: &HttpClient,
    sim: &ProviderSim,
    dir: &Path,
    off: &GatewayChild,
    measure: Duration,
) -> LimitsRuns {
    let (_redis, url) = start_redis(dir);
    let on = GatewayChild::start(&sim.url(), dir, "limits", Some(&url));
    let mut runs = Vec::new();
    for _ in 0..LIMITS_ROUNDS {
        for stream in [false, true] {
            for (path, child) in [("off", off), ("on", &on)] {
                eprintln!("limits {path}: {LIMITS_RATE} req/s, {}", if stream { "stream" } else { "json" });
                let shot = Shot {
                    url: child.url().parse().unwrap(),
                    key: child.key.clone(),
                    body: body(MODEL, stream),
                    stream,
                };
                runs.push((stream, path, open_loop(load, client, &shot, LIMITS_RATE, WARM_UP, measure)));
            }
        }
    }
    // The charges are queued after each answer: give the last ones time to land.
    std::thread::sleep(Duration::from_secs(1));
    let text = load.block_on(scrape(client, on.metrics_port));
    let mut redis = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg("payi:nusd:limit:organization/acme/monthly:*").query(&mut redis).unwrap();
    let mut organization_nano_usd = 0;
    // The counters themselves, not their remainders or their reservations.
    for key in keys.into_iter().filter(|k| !payi_operator::limits::ledger::is_companion(k)) {
        organization_nano_usd += redis::cmd("GET").arg(&key).query::<i64>(&mut redis).unwrap();
    }
    LimitsRuns {
        runs,
        metered_on: metric_sum(&text, "payi_gateway_proxied_requests_total") as u64,
        organization_nano_usd,
        cost_usd: metric_sum(&text, "payi_gateway_cost_usd_total"),
        ledger_errors: metric_sum(&text, "payi_limit_ledger_errors_total"),
        charges_dropped: metric_sum(&text, "payi_limit_charges_dropped_total"),
        unchecked: metric_sum(&text, "payi_limit_unchecked_requests_total"),
        refused: metric_sum(&text, "payi_limit_refused_requests_total"),
    }
}

// ---------------------------------------------------------------------------
// wrk and nginx

/// The soft limit on open files raised to the hard one (the held streams need
/// two descriptors each in this process and two in the gateway's); returns it.
fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    let needed = 2 * STREAMS[STREAMS.len() - 1] as u64 + 256;
    assert!(limit.rlim_cur >= needed, "open files limited to {}: {needed} needed", limit.rlim_cur);
    limit.rlim_cur
}

/// nginx as a reverse proxy to the simulator: one worker per core, HTTP/1.1
/// upstream connections kept alive in a pool.
fn start_nginx(nginx: &str, dir: &Path, port: u16, upstream_port: u16) -> Killed {
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(&prefix).unwrap();
    let p = prefix.display();
    let config = format!(
        "worker_processes auto;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n\
           fastcgi_temp_path {p}/fastcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
           upstream simulator {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}\n\
           server {{ listen 127.0.0.1:{port};\n\
             location / {{ proxy_pass http://simulator; proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\"; }} }} }}\n"
    );
    std::fs::write(prefix.join("nginx.conf"), config).unwrap();
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .arg("-e")
        .arg(prefix.join("error.log"))
        .stdin(Stdio::null())
        .spawn()
        .expect("starting nginx");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    Killed(child)
}

/// The same POST for every wrk request: the non-streaming chat completion.
fn wrk_script(key: &str) -> String {
    let body = String::from_utf8(body(MODEL, false).to_vec()).unwrap();
    format!(
        "wrk.method = \"POST\"\nwrk.body = [[{body}]]\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Authorization\"] = \"Bearer {key}\"\n"
    )
}

fn wrk(wrk: &str, script: &Path, duration: &str, url: &str) -> Wrk {
    let mut command = Command::new(wrk);
    command.args(["-t", WRK_THREADS, "-c", WRK_CONNECTIONS, "-d", duration, "--latency", "-s"]).arg(script).arg(url);
    support::wrk(command)
}

// ---------------------------------------------------------------------------
// Memory and the report

/// A process's memory from `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy, Default)]
struct Memory {
    rss: u64,
    peak: u64,
    anon: u64,
    file: u64,
}

impl Memory {
    fn of(pid: u32) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the gateway child's status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Memory { rss: field("VmRSS:"), peak: field("VmHWM:"), anon: field("RssAnon:"), file: field("RssFile:") }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

/// p50, p90, p99 and max, in microseconds.
fn spread(values: impl Iterator<Item = u32>) -> [u32; 4] {
    let mut sorted: Vec<u32> = values.collect();
    sorted.sort_unstable();
    [
        percentile(&sorted, 50.0),
        percentile(&sorted, 90.0),
        percentile(&sorted, 99.0),
        sorted.last().copied().unwrap_or(0),
    ]
}

fn ms(us: u32) -> String {
    format!("{:.3}", f64::from(us) / 1000.0)
}

fn added(gateway: u32, direct: u32) -> String {
    format!("{:+.3}", (f64::from(gateway) - f64::from(direct)) / 1000.0)
}

/// Everything the benchmark measured, for the report.
struct Results<'a> {
    cores: usize,
    files: u64,
    seconds: u64,
    latency: Vec<(u32, bool, &'a str, Run)>,
    throughput: Vec<(&'a str, Wrk)>,
    streams: Held,
    memory: Vec<(&'a str, Memory)>,
    outcomes: Vec<(String, u64)>,
    limits: LimitsRuns,
}

fn report(results: &Results) {
    let Results { cores, files, seconds, latency, throughput, streams, memory, outcomes, limits } = results;
    println!();
    println!("Metering gateway on loopback, {cores} cores shared by the gateway (child process), the simulator,");
    println!("the load generator, nginx and wrk; {KEYS} live keys in the gateway's index; open files {files}.");
    println!();
    println!(
        "Open loop: {seconds} s measured after {} s warm-up at each rate; milliseconds from each",
        WARM_UP.as_secs()
    );
    println!("request's scheduled send to the end of its body (first body frame for streams: ttfb).");
    println!(
        "{:>6} {:6} {:8} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "req/s", "kind", "path", "n", "errors", "p50", "p90", "p99", "max", "ttfb p50", "ttfb p99", "send lag"
    );
    for (rate, stream, path, run) in latency {
        let total = spread(run.samples.iter().map(|s| s.total_us));
        let first = spread(run.samples.iter().map(|s| s.first_byte_us));
        let (ttfb50, ttfb99) = if *stream { (ms(first[0]), ms(first[2])) } else { ("-".into(), "-".into()) };
        println!(
            "{rate:>6} {:6} {path:8} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8} {ttfb50:>9} {ttfb99:>9} {:>9}",
            if *stream { "stream" } else { "json" },
            run.samples.len(),
            run.errors,
            ms(total[0]),
            ms(total[1]),
            ms(total[2]),
            ms(total[3]),
            ms(micros(run.worst_send_lag)),
        );
    }
    println!();
    println!("Added by the gateway (gateway percentile minus direct percentile), milliseconds:");
    println!(
        "{:>6} {:6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "req/s", "kind", "p50", "p90", "p99", "max", "ttfb p50", "ttfb p99"
    );
    for pair in latency.chunks(2) {
        let [(rate, stream, _, direct), (_, _, _, gateway)] = pair else { continue };
        let d = spread(direct.samples.iter().map(|s| s.total_us));
        let g = spread(gateway.samples.iter().map(|s| s.total_us));
        let (df, gf) = (
            spread(direct.samples.iter().map(|s| s.first_byte_us)),
            spread(gateway.samples.iter().map(|s| s.first_byte_us)),
        );
        let (t50, t99) = if *stream { (added(gf[0], df[0]), added(gf[2], df[2])) } else { ("-".into(), "-".into()) };
        println!(
            "{rate:>6} {:6} {:>8} {:>8} {:>8} {:>8} {t50:>9} {t99:>9}",
            if *stream { "stream" } else { "json" },
            added(g[0], d[0]),
            added(g[1], d[1]),
            added(g[2], d[2]),
            added(g[3], d[3]),
        );
    }
    println!();
    println!("Closed loop: wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{seconds}s, the same non-streaming POST:");
    for (name, r) in throughput {
        println!(
            "  {name:32} {:>9.0} req/s   p50 {:>9}   p99 {:>9}   non-2xx {}   {}",
            r.requests_per_second,
            r.p50,
            r.p99,
            r.non_2xx,
            if r.socket_errors.is_empty() { String::new() } else { format!("socket errors: {}", r.socket_errors) }
        );
    }
    let rps = |i: usize| throughput.get(i).map_or(0.0, |(_, r)| r.requests_per_second);
    println!(
        "  gateway / nginx: {:.2}   gateway / simulator direct: {:.2}",
        rps(1) / rps(2).max(1.0),
        rps(1) / rps(0).max(1.0)
    );
    println!();
    println!("Concurrent streams through the gateway (the simulator waits {STREAM_DRIP_MS} ms between events),");
    println!("each step opened on top of the last:");
    let mut last = (0, streams.before);
    for stage in &streams.stages {
        let grown = stage.memory.rss.saturating_sub(last.1.rss);
        println!(
            "  {:>5} open ({:>5} started in {:.1} s, {:>5} open upstream): RSS {:.1} -> {:.1} MiB; per 1,000 streams: \
             {:.1} MiB for this step's, {:.1} MiB over the RSS before any",
            stage.open,
            stage.started,
            stage.ramp.as_secs_f64(),
            stage.upstream_open,
            mib(last.1.rss),
            mib(stage.memory.rss),
            mib(grown) * 1000.0 / (stage.open - last.0) as f64,
            mib(stage.memory.rss.saturating_sub(streams.before.rss)) * 1000.0 / stage.open as f64,
        );
        last = (stage.open, stage.memory);
    }
    println!(
        "  clients gone: the simulator saw its streams closed after {:.1} s ({} still open)",
        streams.closed_after.as_secs_f64(),
        streams.left_open
    );
    println!();
    println!("The gateway child's memory (MiB):");
    println!("  {:30} {:>7} {:>7} {:>8} {:>8}", "when", "VmRSS", "VmHWM", "RssAnon", "RssFile");
    for (when, m) in memory {
        println!("  {when:30} {:>7.1} {:>7.1} {:>8.1} {:>8.1}", mib(m.rss), mib(m.peak), mib(m.anon), mib(m.file));
    }
    println!();
    let counted: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
    println!("Requests the gateway counted, by outcome: {}", counted.join(", "));
    println!("  (metered: whole answers with their usage read; incomplete: the held streams, cut by their clients)");
    report_limits(limits);
    for (_, _, path, run) in latency {
        assert!(run.errors == 0, "{path}: {} requests failed", run.errors);
    }
    for stage in &streams.stages {
        assert_eq!(stage.started, stage.open, "not every held stream started");
    }
    for (outcome, n) in outcomes {
        assert!(["metered", "incomplete"].contains(&outcome.as_str()), "{n} requests counted {outcome}");
    }
    for (name, r) in throughput {
        assert_eq!(r.non_2xx, 0, "{name}: non-2xx answers");
    }
}

fn report_limits(limits: &LimitsRuns) {
    println!();
    println!(
        "Limits on versus off: {LIMITS_RATE} req/s open loop, {LIMITS_ROUNDS} rounds of off/on; \"on\" is a second gateway"
    );
    println!("whose every key is covered by 3 block limits (Organization, Group, Application) with a Redis ledger:");
    println!(
        "{:6} {:4} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "kind", "path", "n", "errors", "p50", "p90", "p99", "max", "ttfb p99"
    );
    for (stream, path, run) in &limits.runs {
        let total = spread(run.samples.iter().map(|s| s.total_us));
        let first = spread(run.samples.iter().map(|s| s.first_byte_us));
        println!(
            "{:6} {path:4} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9}",
            if *stream { "stream" } else { "json" },
            run.samples.len(),
            run.errors,
            ms(total[0]),
            ms(total[1]),
            ms(total[2]),
            ms(total[3]),
            if *stream { ms(first[2]) } else { "-".into() },
        );
    }
    println!("Added by limits (on minus off, same round), milliseconds:");
    let mut p99_added: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
    for pair in limits.runs.chunks(2) {
        let [(stream, _, off), (_, _, on)] = pair else { continue };
        let (a, b) = (spread(off.samples.iter().map(|s| s.total_us)), spread(on.samples.iter().map(|s| s.total_us)));
        p99_added[usize::from(*stream)].push(i64::from(b[2]) - i64::from(a[2]));
        println!(
            "  {:6} p50 {}  p90 {}  p99 {}",
            if *stream { "stream" } else { "json" },
            added(b[0], a[0]),
            added(b[1], a[1]),
            added(b[2], a[2])
        );
    }
    for (kind, mut values) in ["json", "stream"].into_iter().zip(p99_added) {
        values.sort_unstable();
        let median = values.get(values.len() / 2).copied().unwrap_or(0);
        println!("  {kind:6} p99 added, median of the rounds: {:+.3} ms", median as f64 / 1000.0);
    }
    println!(
        "The limited gateway: {} requests metered, {:.6} USD in its metrics; the Organization's counter in Redis \
         {:.6} USD; ledger errors {}, charges dropped {}, unchecked {}, refused {}",
        limits.metered_on,
        limits.cost_usd,
        limits.organization_nano_usd as f64 / 1e9,
        limits.ledger_errors,
        limits.charges_dropped,
        limits.unchecked,
        limits.refused
    );
    for (_, path, run) in &limits.runs {
        assert!(run.errors == 0, "limits {path}: {} requests failed", run.errors);
    }
    assert!(limits.metered_on > 0 && limits.organization_nano_usd > 0, "the limited gateway charged nothing");
    assert_eq!(limits.ledger_errors + limits.charges_dropped + limits.unchecked + limits.refused, 0.0);
    // Every charge landed, exactly: the ledger carries sub-nano remainders, and the
    // gateway's cost counter sums exactly (float64 only at exposition).
    let missing = (limits.cost_usd * 1e9 - limits.organization_nano_usd as f64).abs();
    assert!(missing <= 1.0, "the ledger holds {missing} nano-USD less than the gateway metered");
}
