//! Charge throughput of one gateway replica against a real Redis (`make bench-ledger`):
//! usage events per second applied by the ledger's charge loop, batched (the
//! default, many events per script) against one event per round trip, on loopback
//! and through a proxy that adds 0.5 ms each way (a Redis in another zone). Each
//! event is what a request covered by one limit writes: one limit counter and the
//! month-to-date spend of its four levels (with their remainders), and the tokens,
//! requests of each level. Prints a table for docs/benchmark.md.

#[path = "support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use payi_operator::limits::ledger::{BATCH, Ledger, LedgerKey, LedgerMetrics, Timeouts, UsageEvent};
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

fn main() {
    let port = free_port();
    let _redis = redis_server(port);
    let proxied = free_port();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        tokio::spawn(delay_proxy(proxied, port, Duration::from_micros(500)));
        println!("| link | one event per round trip | batched (up to {BATCH}) | ratio |");
        println!("|---|---|---|---|");
        for (link, port) in [("loopback", port), ("+0.5 ms each way", proxied)] {
            let url = format!("redis://127.0.0.1:{port}");
            let single = throughput(&url, 1).await;
            let batched = throughput(&url, BATCH).await;
            println!("| {link} | {single:.0} events/s | {batched:.0} events/s | {:.1}x |", batched / single);
        }
    });
}
