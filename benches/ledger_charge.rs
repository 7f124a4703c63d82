//! Charge throughput of one gateway replica against a real Redis (`make bench-ledger`):
//! usage events per second applied by the ledger's charge loop, batched (the
//! default, many events per script) against one event per round trip, on loopback
//! and through a proxy that adds 0.5 ms each way (a Redis in another zone). Each
//! event is what a request covered by one limit writes: one limit counter and the
//! month-to-date spend of its four levels (with their remainders), and the tokens,
//! requests of each level. Prints a table for docs/benchmark.md.
//!
//! Then the Redis time one request covered by three block limits costs, the
//! figure behind the gateway's added latency with limits: the reservation before
//! the provider is called and the charge that settles it after, one request at a
//! time (batch of one, the worst case), read from Redis' own `INFO commandstats`
//! (microseconds spent in each script, the commands it calls included).

#[path = "support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use payi_operator::limits::ledger::{BATCH, Bound, Ledger, LedgerKey, LedgerMetrics, Timeouts, UsageEvent};
use payi_operator::money::PicoUsd;
use support::{free_port, tool};

const EVENTS: usize = 20_000;

struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server(port: u16) -> RedisServer {
    let child = Command::new(tool("redis-server"))
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting redis-server");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    RedisServer(child)
}

/// A TCP proxy that holds every chunk `delay` before passing it on, both ways.
async fn delay_proxy(listen: u16, upstream: u16, delay: Duration) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", listen)).await.unwrap();
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else { continue };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::spawn(pipe(client_read, server_write, delay));
        tokio::spawn(pipe(server_read, client_write, delay));
    }
}

async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, delay: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        tokio::time::sleep(delay).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn event(i: usize) -> UsageEvent {
    let counter = |key: String| LedgerKey { key, ttl: Some(86_400) };
    let levels = ["organization/acme", "group/eng", "application/ns/chat", "use_case/ns/chat/draft"];
    let mut money = vec![counter("payi:nusd:limit:group/eng/monthly:0:m2026-12".into())];
    let mut counts = vec![];
    for level in levels {
        money.push(counter(format!("payi:nusd:spend:{level}:m2026-12")));
        counts.push((counter(format!("payi:tokens:{level}:m2026-12")), 700));
        counts.push((counter(format!("payi:requests:{level}:m2026-12")), 1));
    }
    UsageEvent { cost: Some(PicoUsd(195_000_000 + i as u128)), money, counts, ..UsageEvent::default() }
}

/// Events per second one ledger applies, queued all at once.
async fn throughput(url: &str, batch: usize) -> f64 {
    let timeouts = Timeouts {
        check: Duration::from_millis(100),
        charge: Duration::from_secs(5),
        event_ttl: Duration::from_secs(3600),
    };
    let ledger = Ledger::new(url, timeouts, Arc::new(LedgerMetrics::default())).unwrap();
    ledger.set_batch_size(batch);
    // Warm the connection and the script cache.
    ledger.record(event(0));
    let runner = tokio::spawn(ledger.clone().run());
    while ledger.queued() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    for i in 0..EVENTS {
        ledger.record(event(i));
    }
    while ledger.queued() > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed();
    runner.abort();
    EVENTS as f64 / took.as_secs_f64()
}

/// Requests of the per-request Redis time measurement.
const REQUESTS: usize = 5_000;

/// What a request covered by block limits on its Organization, Group and
/// Application writes: a reservation on the three limits' counters, then a charge
/// to them and to the three levels' month-to-date usage that settles it.
fn limited_request(i: usize) -> (Vec<Bound>, UsageEvent) {
    let counter = |key: String| LedgerKey { key, ttl: Some(86_400) };
    let limits = ["organization/acme/monthly", "group/eng/daily", "application/ns/chat/monthly"]
        .map(|id| format!("payi:nusd:limit:{id}:0:m2026-12"));
    let bounds = limits.iter().map(|key| Bound { key: key.clone(), max_nano: i64::MAX as u64 / 2 }).collect();
    let mut money: Vec<LedgerKey> = limits.iter().cloned().map(counter).collect();
    let mut counts = vec![];
    for level in ["organization/acme", "group/eng", "application/ns/chat"] {
        money.push(counter(format!("payi:nusd:spend:{level}:m2026-12")));
        counts.push((counter(format!("payi:tokens:{level}:m2026-12")), 700));
        counts.push((counter(format!("payi:requests:{level}:m2026-12")), 1));
    }
    let event = UsageEvent {
        cost: Some(PicoUsd(195_000_000 + i as u128)),
        money,
        counts,
        reserved: limits.to_vec(),
        ..UsageEvent::default()
    };
    (bounds, event)
}

/// Microseconds Redis spent in scripts so far (`EVALSHA` and `EVAL`), and their calls.
fn script_usec(connection: &mut redis::Connection) -> (u64, u64) {
    let info: String = redis::cmd("INFO").arg("commandstats").query(connection).unwrap();
    let mut total = (0, 0);
    for line in info.lines().filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:")) {
        for field in line.split(':').nth(1).unwrap_or("").split(',') {
            match field.split_once('=') {
                Some(("usec", v)) => total.0 += v.parse::<u64>().unwrap(),
                Some(("calls", v)) => total.1 += v.parse::<u64>().unwrap(),
                _ => {}
            }
        }
    }
    total
}

/// Redis microseconds per request (reservation, charge) covered by three block limits.
async fn per_request(url: &str) -> (f64, f64) {
    let timeouts = Timeouts {
        check: Duration::from_millis(500),
        charge: Duration::from_secs(5),
        event_ttl: Duration::from_secs(3600),
    };
    let ledger = Ledger::new(url, timeouts, Arc::new(LedgerMetrics::default())).unwrap();
    ledger.set_batch_size(1);
    let runner = tokio::spawn(ledger.clone().run());
    let mut stats = redis::Client::open(url).unwrap().get_connection().unwrap();
    let hold = Duration::from_secs(900);
    let mut reserve = 0;
    let mut charge = 0;
    for i in 0..REQUESTS + 100 {
        let (bounds, mut event) = limited_request(i);
        let id = payi_operator::limits::ledger::event_id();
        let before = script_usec(&mut stats).0;
        ledger.reserve(&id, &bounds, PicoUsd(2_000_000_000), hold).await.unwrap();
        let reserved = script_usec(&mut stats).0;
        event.id = Some(id);
        ledger.record(event);
        while ledger.queued() > 0 {
            tokio::task::yield_now().await;
        }
        let charged = script_usec(&mut stats).0;
        // The first hundred warm the script cache and create the keys.
        if i >= 100 {
            reserve += reserved - before;
            charge += charged - reserved;
        }
    }
    runner.abort();
    (reserve as f64 / REQUESTS as f64, charge as f64 / REQUESTS as f64)
}

fn main() {
    let port = free_port();
    let _redis = redis_server(port);
    let proxied = free_port();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        tokio::spawn(delay_proxy(proxied, port, Duration::from_micros(500)));
        // `PAYI_BENCH_ONLY=per-request`: only the Redis time per request.
        let only_per_request = std::env::var("PAYI_BENCH_ONLY").as_deref() == Ok("per-request");
        println!("| link | one event per round trip | batched (up to {BATCH}) | ratio |");
        println!("|---|---|---|---|");
        for (link, port) in [("loopback", port), ("+0.5 ms each way", proxied)] {
            if only_per_request {
                break;
            }
            let url = format!("redis://127.0.0.1:{port}");
            let single = throughput(&url, 1).await;
            let batched = throughput(&url, BATCH).await;
            println!("| {link} | {single:.0} events/s | {batched:.0} events/s | {:.1}x |", batched / single);
        }
        let (reserve, charge) = per_request(&format!("redis://127.0.0.1:{port}")).await;
        println!();
        println!("Redis time per request covered by 3 block limits ({REQUESTS} requests, one at a time):");
        println!("| reservation | charge (settles it) | total |");
        println!("|---|---|---|");
        println!("| {reserve:.1} µs | {charge:.1} µs | {:.1} µs |", reserve + charge);
    });
}
