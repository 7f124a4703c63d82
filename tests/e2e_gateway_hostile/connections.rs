//! Connection bounds (docs/ai-gateway.md, "Connection bounds"): a client that
//! connects and sends nothing, trickles a request head or an HTTP/2 preface,
//! keeps a connection idle, trickles a body, or opens more connections than the
//! cap, holds nothing for longer than its bound, and the gateway serves others
//! meanwhile; a stream in flight is never cut for being quiet. Real gateway
//! binary, real sockets, bounds made small by flags so each test takes seconds.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

use crate::common::gateway::{Gateway, post, providers_file, sample, sum};
use crate::common::provider_sim::ProviderSim;
use crate::common::verifier::log_dir;
use crate::common::{Operator, TestEnv, app_with_reason, eventually, eventually_within, key_of};

const CREDENTIAL: &str = "sk-sim-openai-credential-conns";
const CHAT: &str = "/openai/v1/chat/completions";
const OPEN: &str = "payi_gateway_connections_open";
const CLOSED: &str = "payi_gateway_connections_closed_total";
const REFUSED: &str = "payi_gateway_connections_refused_total";
/// What a loaded machine may add to a bound before the close is seen.
const SLACK: Duration = Duration::from_secs(3);
/// The gateway's deadline starts at its accept or its last response, a little
/// after the instant the test takes; a close this much early is still on time.
const EARLY: Duration = Duration::from_millis(150);

/// A tenant with a working key, the simulator, and a gateway started with the test's flags.
struct Bench {
    _env: TestEnv,
    key: String,
    sim: ProviderSim,
    gw: Gateway,
}

async fn bench(name: &str, flags: &[&str]) -> Bench {
    Operator::shared();
    let env = TestEnv::new(name).await;
    let (_, group) = env.org_and_group().await;
    env.create_app("tenant", &group).await;
    app_with_reason(&env, "tenant", "KeyIssued").await;
    let key = key_of(&env.secrets().get("tenant-payi-key").await.unwrap());
    let sim = ProviderSim::start().await;
    let dir = log_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let providers = providers_file(&dir, &sim.addr.to_string(), &[("openai", CREDENTIAL)]);
    let gw = Gateway::start(name, &providers, flags).await;
    let bench = Bench { _env: env, key, sim, gw };
    eventually("the tenant's key to work at the gateway", || async { (bench.chat().await == 200).then_some(()) }).await;
    bench
}

impl Bench {
    fn auth(&self) -> String {
        format!("Bearer {}", self.key)
    }

    fn addr(&self) -> SocketAddr {
        self.gw.addr.parse().unwrap()
    }

    /// One chat completion on a connection of its own: its status, 0 without an answer.
    async fn chat(&self) -> u16 {
        let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).to_string();
        post(&self.gw.url(), CHAT, &[("authorization", &self.auth())], &body).await.map_or(0, |a| a.status)
    }

    async fn metric(&self, name: &str, reason: &str) -> f64 {
        sum(&self.gw.metrics().await, name, &[("reason", reason)])
    }

    async fn open(&self) -> f64 {
        sample(&self.gw.metrics().await, OPEN)
    }
}

/// The soft open-file limit raised to the hard one (the gateway, a child, inherits it).
fn raise_open_files(needed: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write only the struct passed.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    limit.rlim_cur = limit.rlim_max;
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    assert!(limit.rlim_cur >= needed, "RLIMIT_NOFILE hard limit {} is below {needed}", limit.rlim_cur);
}

/// Reads until the peer closes (end of stream or reset): when it did.
async fn closed(mut stream: impl AsyncRead + Unpin) -> Instant {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

/// A connection from `local` (an address on loopback) to `to`.
async fn connect_from(local: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends `bytes` one at a time, `every` apart, until the peer closes: when it
/// closed, and whether all the bytes had been sent by then.
async fn trickle(stream: TcpStream, bytes: Vec<u8>, every: Duration) -> (Instant, bool) {
    let (reader, mut writer) = stream.into_split();
    let all = bytes.len();
    let sent = Arc::new(AtomicUsize::new(0));
    let writing = tokio::spawn({
        let sent = sent.clone();
        async move {
            for byte in bytes {
                if writer.write_all(&[byte]).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(every).await;
            }
            // Kept open: the peer, not this end, closes the connection.
            std::future::pending::<()>().await;
        }
    });
    let at = closed(reader).await;
    writing.abort();
    (at, sent.load(Ordering::SeqCst) == all)
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_sockets_and_trickled_heads_are_closed_at_the_head_bound_while_others_are_served() {
    raise_open_files(4_500);
    // Long enough that connecting 2,000 sockets on a loaded machine ends well within it.
    let head = Duration::from_secs(8);
    let b = bench("gw-conn-silent", &["--connection-head-ms", "8000", "--max-connections", "4000"]).await;
    let addr = b.addr();
    // (name, connect began, connected, closed, bytes sent when closed)
    let mut held = JoinSet::new();
    let rss = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status.lines().find(|l| l.starts_with("VmRSS")).unwrap_or("VmRSS: ?").to_string()
    };
    println!("gateway before: {}", rss(b.gw.pid()));
    // Connected one after the other: all at once would overflow the listen
    // backlog, and the kernel's SYN retries would spread them over seconds.
    let connecting = Instant::now();
    for _ in 0..2_000 {
        let began = Instant::now();
        let stream = TcpStream::connect(addr).await.expect("connecting a silent socket");
        let connected = Instant::now();
        held.spawn(async move { ("silent", began, connected, closed(stream).await, false) });
    }
    println!("2,000 sockets connected in {:?}", connecting.elapsed());
    // A trickled HTTP/2 preface, a whole preface and SETTINGS and then nothing,
    // and a trickled HTTP/1.1 head: 400 ms a byte, so neither is whole within the bound.
    let h1_head =
        format!("POST {CHAT} HTTP/1.1\r\nhost: gw\r\nauthorization: {}\r\ncontent-length: 2\r\n\r\n{{}}", b.auth());
    for (name, bytes) in [
        ("trickled h2 preface", H2_PREFACE.to_vec()),
        ("h2 preface and settings, no request", [H2_PREFACE, H2_SETTINGS].concat()),
        ("trickled h1 head", h1_head.into_bytes()),
    ] {
        let every = if name.starts_with("trickled") { Duration::from_millis(400) } else { Duration::ZERO };
        held.spawn(async move {
            let began = Instant::now();
            let stream = TcpStream::connect(addr).await.unwrap();
            let connected = Instant::now();
            let (at, sent) = trickle(stream, bytes, every).await;
            (name, began, connected, at, sent)
        });
    }
    let all = 2_003.0;
    eventually("the gateway to hold all the sockets", || async { (b.open().await >= all).then_some(()) }).await;
    println!("gateway holding {all} sockets: {}", rss(b.gw.pid()));
    // Another client is served meanwhile, and the sockets are still held after.
    assert_eq!(b.chat().await, 200, "a real request while 2,003 sockets are held");
    assert!(b.open().await >= all, "the sockets were still held when the request was served");
    let deadline = head + SLACK + Duration::from_secs(5);
    let mut closes = 0;
    while let Ok(Some(joined)) = tokio::time::timeout(deadline, held.join_next()).await {
        let (name, began, connected, at, sent) = joined.unwrap();
        assert!(at + EARLY >= began + head, "{name} closed before the bound: {:?}", at - began);
        assert!(at <= connected + head + SLACK, "{name} closed late: {:?} after connecting", at - connected);
        if name.starts_with("trickled") {
            assert!(!sent, "{name}: the whole of it was sent before the close");
        }
        closes += 1;
    }
    assert_eq!(closes, 2_003, "sockets still open {deadline:?} after the bound");
    assert!(b.metric(CLOSED, "first_request_timeout").await >= all);
    eventually("the open-connection gauge back to 0", || async { (b.open().await == 0.0).then_some(()) }).await;
}

/// A chat completion request for a connection of the test's own.
fn chat_request(auth: &str, body: &str) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("http://gw{CHAT}"))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// The status and the whole body of an answer.
async fn whole(response: hyper::Result<http::Response<hyper::body::Incoming>>) -> (u16, String) {
    let response = response.expect("the gateway answered");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("the whole body").to_bytes();
    (status, String::from_utf8_lossy(&body).into())
}

fn small_chat() -> String {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

/// Reads one HTTP/1.1 answer with a content-length from `stream`: its head.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed before the answer: {}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let length: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
            if data.len() >= end + 4 + length {
                return text[..end].to_string();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_keep_alive_connections_are_closed_at_the_idle_bound_on_http1_and_http2() {
    let idle = Duration::from_millis(1500);
    let head = Duration::from_millis(1000);
    let b = bench("gw-conn-idle", &["--connection-idle-ms", "1500", "--connection-head-ms", "1000"]).await;
    let auth = b.auth();

    // HTTP/1.1 keep-alive: one request, then nothing.
    let (mut h1, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(TcpStream::connect(b.addr()).await.unwrap())).await.unwrap();
    let h1_conn = tokio::spawn(async move { (conn.await, Instant::now()) });
    let (status, _) = whole(h1.send_request(chat_request(&auth, &small_chat())).await).await;
    assert_eq!(status, 200);
    let h1_answered = Instant::now();

    // HTTP/2 (prior knowledge): one stream, then nothing.
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(TcpStream::connect(b.addr()).await.unwrap()),
    )
    .await
    .unwrap();
    let h2_conn = tokio::spawn(async move { (conn.await, Instant::now()) });
    let (status, _) = whole(h2.send_request(chat_request(&auth, &small_chat())).await).await;
    assert_eq!(status, 200);
    let h2_answered = Instant::now();

    // HTTP/1.1: an answer, then the next head trickled from the start: the head
    // bound from its first byte closes it, before the idle bound would.
    let mut raw = TcpStream::connect(b.addr()).await.unwrap();
    raw.write_all(b"GET /openai/v1/models HTTP/1.1\r\nhost: gw\r\n\r\n").await.unwrap();
    let answer = read_answer(&mut raw).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let first_byte = Instant::now();
    let (trickled_closed, sent) =
        trickle(raw, b"GET /openai/v1/models HTTP/1.1\r\nhost: gw\r\n\r\n".to_vec(), Duration::from_millis(200)).await;
    assert!(!sent, "the whole head was sent before the close");
    assert!(trickled_closed + EARLY >= first_byte + head, "the trickled head was cut early");
    assert!(trickled_closed <= first_byte + head + SLACK, "the trickled head was cut late");

    let bound = idle + SLACK + Duration::from_secs(2);
    let (h1_result, h1_closed) =
        tokio::time::timeout(bound, h1_conn).await.expect("HTTP/1.1 idle connection closed").unwrap();
    let (h2_result, h2_closed) =
        tokio::time::timeout(bound, h2_conn).await.expect("HTTP/2 idle connection closed").unwrap();
    println!(
        "idle bound {idle:?}: HTTP/1.1 closed {:?} after its answer ({h1_result:?}), HTTP/2 {:?} ({h2_result:?})",
        h1_closed - h1_answered,
        h2_closed - h2_answered
    );
    for (protocol, answered, at) in [("HTTP/1.1", h1_answered, h1_closed), ("HTTP/2", h2_answered, h2_closed)] {
        assert!(at + EARLY >= answered + idle, "{protocol}: closed {:?} after its answer", at - answered);
        assert!(at <= answered + idle + SLACK, "{protocol}: closed {:?} after its answer", at - answered);
    }
    // HTTP/2 is told first (GOAWAY), so its client's connection ends cleanly.
    assert!(h2_result.is_ok(), "HTTP/2 idle close without GOAWAY: {h2_result:?}");
    assert!(b.metric(CLOSED, "idle").await >= 2.0);
    assert_eq!(b.metric(CLOSED, "head_timeout").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_beyond_the_caps_are_closed_at_once_and_counted() {
    let b = bench(
        "gw-conn-cap",
        &["--max-connections", "20", "--max-connections-per-peer", "10", "--connection-head-ms", "60000"],
    )
    .await;
    let addr = b.addr();
    eventually("the bench's own connections to end", || async { (b.open().await == 0.0).then_some(()) }).await;
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(connect_from("127.0.0.1", addr).await);
    }
    eventually("10 connections held", || async { (b.open().await == 10.0).then_some(()) }).await;
    // The 11th from the same address is closed at once.
    let refused = Instant::now();
    let at = closed(connect_from("127.0.0.1", addr).await).await;
    assert!(at - refused < SLACK, "a connection over the per-peer cap was held {:?}", at - refused);
    assert_eq!(b.metric(REFUSED, "max_connections_per_peer").await, 1.0);
    // Another address has its own 10, which fill the cap of 20.
    for _ in 0..10 {
        held.push(connect_from("127.0.0.2", addr).await);
    }
    eventually("20 connections held", || async { (b.open().await == 20.0).then_some(()) }).await;
    let mut excess = JoinSet::new();
    for _ in 0..5 {
        excess.spawn(async move {
            let began = Instant::now();
            closed(connect_from("127.0.0.3", addr).await).await - began
        });
    }
    while let Some(took) = excess.join_next().await {
        let took = took.unwrap();
        assert!(took < SLACK, "a connection over the cap was held {took:?}");
    }
    // A real client is refused too while the cap is reached (and counted).
    assert_eq!(b.chat().await, 0, "a request was served beyond the cap");
    assert_eq!(b.metric(REFUSED, "max_connections").await, 6.0);
    assert_eq!(b.open().await, 20.0, "refused connections are not counted open");
    drop(held);
    eventually("the held connections to end", || async { (b.open().await == 0.0).then_some(()) }).await;
    assert_eq!(b.chat().await, 200, "served again below the cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_in_flight_longer_than_the_idle_bound_is_not_cut() {
    // Events 1.2 s apart, each gap longer than the 1 s idle bound; HTTP/2 PINGs every 300 ms.
    let idle = Duration::from_millis(1000);
    let b = bench(
        "gw-conn-stream",
        &["--connection-idle-ms", "1000", "--connection-ping-ms", "300", "--connection-ping-timeout-ms", "2000"],
    )
    .await;
    let auth = b.auth();
    let body = json!({"model": "drip-1200-gpt-4o-mini", "stream": true, "max_tokens": 2,
        "messages": [{"role": "user", "content": "a slow answer"}]})
    .to_string();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(TcpStream::connect(b.addr()).await.unwrap()),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let started = Instant::now();
    let (url, headers) = (b.gw.url(), [("authorization", auth.as_str())]);
    let over_h1 = post(&url, CHAT, &headers, &body);
    let over_h2 = async { whole(h2.send_request(chat_request(&auth, &body)).await).await };
    let (h1, (h2_status, h2_body)) = tokio::join!(over_h1, over_h2);
    let took = started.elapsed();
    let h1 = h1.expect("the HTTP/1.1 stream was answered whole");
    assert_eq!((h1.status, h2_status), (200, 200));
    assert!(h1.body.contains("[DONE]"), "the HTTP/1.1 stream was cut: {}", h1.body);
    assert!(h2_body.contains("[DONE]"), "the HTTP/2 stream was cut: {h2_body}");
    assert!(took > idle * 3, "the streams were meant to outlast the idle bound: {took:?}");
    println!("two streams of {took:?} under a {idle:?} idle bound, whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_trickled_after_a_whole_head_gets_408_at_the_body_bound_and_the_connection_ends() {
    let bound = Duration::from_secs(2);
    let b = bench("gw-conn-body", &["--request-body-seconds", "2"]).await;
    let mut stream = TcpStream::connect(b.addr()).await.unwrap();
    let head = format!(
        "POST {CHAT} HTTP/1.1\r\nhost: gw\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{{",
        b.auth()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let began = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let trickling = tokio::spawn(async move {
        while writer.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = tokio::time::timeout(bound + SLACK + Duration::from_secs(2), async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the connection of a trickled body ended");
    trickling.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(ended + EARLY >= began + bound, "cut before the body bound: {:?}", ended - began);
    assert!(ended <= began + bound + SLACK, "cut late: {:?}", ended - began);
}

/// A client socket that can go silent for good, as a peer whose machine vanished:
/// once frozen it neither reads nor writes (and so answers no PING).
struct Freezable {
    io: TcpStream,
    frozen: Arc<AtomicBool>,
}

impl AsyncRead for Freezable {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.frozen.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Freezable {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.frozen.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.frozen.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_http2_peer_that_stops_answering_pings_is_closed_with_its_stream_open() {
    let (ping, ping_timeout) = (Duration::from_millis(500), Duration::from_millis(1000));
    let b = bench(
        "gw-conn-ping",
        &["--connection-ping-ms", "500", "--connection-ping-timeout-ms", "1000", "--connection-idle-ms", "60000"],
    )
    .await;
    // The first stream cut before its usage loads the tokenizer for its estimate,
    // seconds in a debug build, in the drop that also closes the socket: done
    // here, so that what is timed below is the PING bound alone.
    let cut = json!({"model": "fault-truncated", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let _ = post(&b.gw.url(), CHAT, &[("authorization", &b.auth())], &cut.to_string()).await;
    eventually("the cut stream to be estimated", || async {
        let metrics = b.gw.metrics().await;
        (sum(&metrics, "payi_gateway_proxied_requests_total", &[("outcome", "estimated")]) >= 1.0).then_some(())
    })
    .await;
    eventually("the bench's own connections to end", || async { (b.open().await == 0.0).then_some(()) }).await;
    let frozen = Arc::new(AtomicBool::new(false));
    let socket = TcpStream::connect(b.addr()).await.unwrap().into_std().unwrap();
    let watcher = socket.try_clone().unwrap();
    let io = Freezable { io: TcpStream::from_std(socket).unwrap(), frozen: frozen.clone() };
    let (mut h2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    // A stream that never ends: the simulator sends its first delta, then nothing.
    let body = json!({"model": "fault-cut-stream", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let response = h2.send_request(chat_request(&b.auth(), &body.to_string())).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body();
    stream.frame().await.expect("the stream's first bytes").expect("a frame");
    assert_eq!(b.sim.open_streams(), 1);
    frozen.store(true, Ordering::SeqCst);
    let froze = Instant::now();
    let bound = ping + ping_timeout + SLACK;
    // What the frozen client no longer reads, a second descriptor of its socket
    // does: the gateway's last frames, then the end of the connection.
    let at = tokio::time::timeout(bound + Duration::from_secs(2), closed(TcpStream::from_std(watcher).unwrap()))
        .await
        .expect("the gateway closed the silent HTTP/2 peer");
    eventually_within(SLACK, "the gateway's gauge to count it closed", || async {
        (b.open().await == 0.0).then_some(())
    })
    .await;
    let took = at - froze;
    println!(
        "a frozen HTTP/2 peer with a stream open was closed {took:?} after it froze (PING {ping:?}, timeout {ping_timeout:?})"
    );
    assert!(took <= bound, "closed late: {took:?}");
    // A PING sent just before the freeze times out first: at the earliest its timeout less an interval.
    assert!(took + EARLY >= ping_timeout - ping, "closed before a PING could time out: {took:?}");
    // And the provider's stream was cut with it.
    eventually("the upstream stream to end", || async { (b.sim.open_streams() == 0).then_some(()) }).await;
    drop(stream);
}
