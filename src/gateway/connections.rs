//! Bounds on the gateway's client connections, so a client that connects and
//! sends little or nothing cannot hold sockets, tasks and buffers:
//!
//! - **head**: a new connection must deliver its first complete request (HTTP/1.1
//!   head, or HTTP/2 preface, SETTINGS and a request's HEADERS) within `head` of
//!   being accepted, whatever it trickles meanwhile; a later HTTP/1.1 head must be
//!   complete within `head` of its first byte. Both close the socket at once.
//! - **idle**: a connection with no request open (HTTP/1.1 between requests, HTTP/2
//!   with no stream) is closed after `idle`; HTTP/2 gets a GOAWAY first, so its
//!   client knows not to send on it. A request open, however long (a stream of
//!   events), keeps its connection.
//! - **cap**: at most `max_open` connections at once (and `max_per_peer` from one
//!   address when set); a socket beyond that is closed as soon as it is accepted.
//!
//! hyper has the HTTP/1.1 head bound only once it knows the protocol and no idle
//! bound for HTTP/2, so the connection's reads ([`Watched`]) and its requests
//! ([`RequestGuard`], held by the response body until it ends) are recorded in an
//! [`Activity`], and [`decide`] (pure) says when to close. HTTP/2 keep-alive PINGs
//! (hyper's) find peers that vanished while a stream is open.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::metrics::ConnectionMetrics;

/// How long a connection closed for being idle gets to say goodbye (HTTP/2's
/// GOAWAY and its PING round trip) before the socket is closed regardless.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The time bounds of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// From accept to the first complete request; from a later HTTP/1.1 head's first byte to its end.
    pub head: Duration,
    /// With no request open.
    pub idle: Duration,
}

/// The protocol of a connection, known from its first request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Why the gateway closed a connection, for the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No complete first request within the head bound of accept (silent socket,
    /// trickled HTTP/2 preface, trickled first head).
    FirstRequestTimeout,
    /// A later HTTP/1.1 head not complete within the head bound of its first byte.
    HeadTimeout,
    /// No request open for the idle bound.
    Idle,
    /// Asked to close gracefully (idle) and still open, with no request, after [`CLOSE_GRACE`].
    CloseGrace,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::FirstRequestTimeout => "first_request_timeout",
            Reason::HeadTimeout => "head_timeout",
            Reason::Idle => "idle",
            Reason::CloseGrace => "close_grace",
        }
    }

    /// Whether the peer is told first (GOAWAY) instead of the socket being closed at once.
    pub fn graceful(self) -> bool {
        matches!(self, Reason::Idle)
    }
}

/// What [`decide`] says about a connection now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it; look again at this instant (None: when its activity changes).
    Keep(Option<Instant>),
    Close(Reason),
}

/// What is known of one connection's activity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub accepted: Instant,
    pub protocol: Option<Protocol>,
    /// Requests begun on it so far.
    pub requests: u64,
    /// Requests whose response has not ended.
    pub open: usize,
    /// When the last open request ended (`accepted` before any).
    pub idle_since: Instant,
    /// The first byte read after `idle_since`, while no request was open.
    pub read_while_idle: Option<Instant>,
    /// When a graceful close began.
    pub closing: Option<Instant>,
}

/// When and why to close a connection (pure: the time is an argument).
pub fn decide(s: &Snapshot, bounds: &Bounds, now: Instant) -> Verdict {
    if s.open > 0 {
        return Verdict::Keep(None);
    }
    let (deadline, reason) = if let Some(closing) = s.closing {
        (closing + CLOSE_GRACE, Reason::CloseGrace)
    } else if s.requests == 0 {
        (s.accepted + bounds.head, Reason::FirstRequestTimeout)
    } else if let (Some(Protocol::Http1), Some(first)) = (s.protocol, s.read_while_idle) {
        // A head is arriving. On HTTP/2 bytes while idle are PINGs, SETTINGS or
        // WINDOW_UPDATEs, none of which makes the connection busy.
        (first + bounds.head, Reason::HeadTimeout)
    } else {
        (s.idle_since + bounds.idle, Reason::Idle)
    };
    if now >= deadline { Verdict::Close(reason) } else { Verdict::Keep(Some(deadline)) }
}

/// One connection's activity, written by its reads and its requests, read by its supervisor.
pub struct Activity {
    state: Mutex<Snapshot>,
    changed: Notify,
}

impl Activity {
    pub fn new(accepted: Instant) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(Snapshot {
                accepted,
                protocol: None,
                requests: 0,
                open: 0,
                idle_since: accepted,
                read_while_idle: None,
                closing: None,
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Snapshot> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> Snapshot {
        *self.lock()
    }

    /// Resolves after the activity changed in a way that can move a deadline.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// A request begins; the connection is busy until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>, version: hyper::Version) -> RequestGuard {
        let mut s = self.lock();
        s.requests += 1;
        s.open += 1;
        s.read_while_idle = None;
        s.protocol.get_or_insert(if version == hyper::Version::HTTP_2 { Protocol::Http2 } else { Protocol::Http1 });
        RequestGuard(self.clone())
    }

    pub fn closing(&self, now: Instant) {
        self.lock().closing.get_or_insert(now);
    }

    fn read(&self) {
        let mut s = self.lock();
        if s.open == 0 && s.requests > 0 && s.read_while_idle.is_none() {
            s.read_while_idle = Some(Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }
}

/// A request's hold on its connection, released when its response body ends or is dropped.
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.open = s.open.saturating_sub(1);
        if s.open == 0 {
            s.idle_since = Instant::now();
            s.read_while_idle = None;
            drop(s);
            self.0.changed.notify_one();
        }
    }
}

/// A response body that holds its request's [`RequestGuard`] until it ends or is dropped.
pub struct Held<B> {
    body: B,
    _guard: RequestGuard,
}

impl<B> Held<B> {
    pub fn new(body: B, guard: RequestGuard) -> Self {
        Self { body, _guard: guard }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Held<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A client socket whose reads are recorded in its connection's [`Activity`].
pub struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub fn new(io: T, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// How many connections may be open at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub max_open: usize,
    /// 0: no cap per peer address.
    pub max_per_peer: usize,
}

/// Why a connection was refused at accept, for the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    MaxConnectionsPerPeer,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerPeer => "max_connections_per_peer",
        }
    }
}

/// Whether one more connection fits (pure).
pub fn admit(caps: &Caps, open: usize, open_from_peer: usize) -> Result<(), Refusal> {
    if open >= caps.max_open {
        Err(Refusal::MaxConnections)
    } else if caps.max_per_peer > 0 && open_from_peer >= caps.max_per_peer {
        Err(Refusal::MaxConnectionsPerPeer)
    } else {
        Ok(())
    }
}

#[derive(Default)]
struct Counts {
    open: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// The open connections, counted against [`Caps`] and in the `connections_open` gauge.
pub struct Slots {
    caps: Caps,
    counts: Mutex<Counts>,
    metrics: Arc<ConnectionMetrics>,
}

impl Slots {
    pub fn new(caps: Caps, metrics: Arc<ConnectionMetrics>) -> Arc<Self> {
        Arc::new(Self { caps, counts: Mutex::default(), metrics })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection from `peer`, held until dropped, or why there is none (counted).
    pub fn acquire(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let mut counts = self.lock();
        let from_peer = if self.caps.max_per_peer > 0 { counts.per_peer.get(&peer).copied().unwrap_or(0) } else { 0 };
        if let Err(refusal) = admit(&self.caps, counts.open, from_peer) {
            drop(counts);
            self.metrics.refused(refusal);
            return Err(refusal);
        }
        counts.open += 1;
        if self.caps.max_per_peer > 0 {
            *counts.per_peer.entry(peer).or_default() += 1;
        }
        self.metrics.open.inc();
        Ok(Slot { slots: self.clone(), peer })
    }
}

/// One open connection's place under the caps.
pub struct Slot {
    slots: Arc<Slots>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.slots.lock();
        counts.open = counts.open.saturating_sub(1);
        if let Some(n) = counts.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                counts.per_peer.remove(&self.peer);
            }
        }
        drop(counts);
        self.slots.metrics.open.dec();
    }
}

/// Raises this process's open-file limit to its hard limit (as Go's runtime does),
/// and warns when it is too low for `max_open` connections, each of which may hold
/// a second descriptor to a provider.
pub fn raise_open_files_limit(max_open: usize) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let needed = (max_open as u64).saturating_mul(2).saturating_add(256);
    if limit.rlim_cur < needed {
        tracing::warn!(
            open_files = limit.rlim_cur,
            max_connections = max_open,
            "the open-file limit is below two per connection under --max-connections; accepts may fail before the cap"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds { head: Duration::from_secs(10), idle: Duration::from_secs(120) };

    fn fresh(t0: Instant) -> Snapshot {
        Snapshot {
            accepted: t0,
            protocol: None,
            requests: 0,
            open: 0,
            idle_since: t0,
            read_while_idle: None,
            closing: None,
        }
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn a_new_connection_has_the_head_bound_for_its_first_request_whatever_it_trickles() {
        let t0 = Instant::now();
        let c = fresh(t0);
        assert_eq!(decide(&c, &BOUNDS, t0), Verdict::Keep(Some(t0 + s(10))));
        assert_eq!(decide(&c, &BOUNDS, t0 + s(10)), Verdict::Close(Reason::FirstRequestTimeout));
        // Bytes before the first request do not move the deadline.
        let trickling = Snapshot { read_while_idle: Some(t0 + s(9)), ..c };
        assert_eq!(decide(&trickling, &BOUNDS, t0 + s(10)), Verdict::Close(Reason::FirstRequestTimeout));
    }

    #[test]
    fn an_open_request_keeps_its_connection_however_long() {
        let t0 = Instant::now();
        let busy = Snapshot { requests: 1, open: 1, protocol: Some(Protocol::Http2), ..fresh(t0) };
        assert_eq!(decide(&busy, &BOUNDS, t0 + s(86_400)), Verdict::Keep(None));
        let closing = Snapshot { closing: Some(t0), ..busy };
        assert_eq!(decide(&closing, &BOUNDS, t0 + s(86_400)), Verdict::Keep(None));
    }

    #[test]
    fn an_idle_connection_is_closed_gracefully_after_the_idle_bound_from_its_last_response() {
        let t0 = Instant::now();
        for protocol in [Protocol::Http1, Protocol::Http2] {
            let idle = Snapshot { requests: 3, protocol: Some(protocol), idle_since: t0 + s(50), ..fresh(t0) };
            assert_eq!(decide(&idle, &BOUNDS, t0 + s(169)), Verdict::Keep(Some(t0 + s(170))));
            assert_eq!(decide(&idle, &BOUNDS, t0 + s(170)), Verdict::Close(Reason::Idle));
            assert!(Reason::Idle.graceful());
        }
    }

    #[test]
    fn a_later_http1_head_has_the_head_bound_from_its_first_byte() {
        let t0 = Instant::now();
        let idle = Snapshot { requests: 1, protocol: Some(Protocol::Http1), idle_since: t0, ..fresh(t0) };
        let arriving = Snapshot { read_while_idle: Some(t0 + s(100)), ..idle };
        assert_eq!(decide(&arriving, &BOUNDS, t0 + s(105)), Verdict::Keep(Some(t0 + s(110))));
        assert_eq!(decide(&arriving, &BOUNDS, t0 + s(110)), Verdict::Close(Reason::HeadTimeout));
        assert!(!Reason::HeadTimeout.graceful() && !Reason::FirstRequestTimeout.graceful());
    }

    #[test]
    fn http2_frames_while_idle_do_not_keep_a_connection_open_nor_start_a_head_bound() {
        let t0 = Instant::now();
        let pinging =
            Snapshot { requests: 1, protocol: Some(Protocol::Http2), read_while_idle: Some(t0 + s(1)), ..fresh(t0) };
        assert_eq!(decide(&pinging, &BOUNDS, t0 + s(20)), Verdict::Keep(Some(t0 + s(120))));
        assert_eq!(decide(&pinging, &BOUNDS, t0 + s(120)), Verdict::Close(Reason::Idle));
    }

    #[test]
    fn a_graceful_close_without_requests_ends_after_the_grace() {
        let t0 = Instant::now();
        let closing = Snapshot { requests: 1, closing: Some(t0 + s(120)), ..fresh(t0) };
        assert_eq!(decide(&closing, &BOUNDS, t0 + s(120)), Verdict::Keep(Some(t0 + s(120) + CLOSE_GRACE)));
        assert_eq!(decide(&closing, &BOUNDS, t0 + s(121)), Verdict::Close(Reason::CloseGrace));
    }

    #[test]
    fn the_caps_refuse_beyond_the_total_then_beyond_the_peer() {
        let caps = Caps { max_open: 10, max_per_peer: 3 };
        assert_eq!(admit(&caps, 9, 2), Ok(()));
        assert_eq!(admit(&caps, 10, 0), Err(Refusal::MaxConnections));
        assert_eq!(admit(&caps, 5, 3), Err(Refusal::MaxConnectionsPerPeer));
        let no_peer_cap = Caps { max_per_peer: 0, ..caps };
        assert_eq!(admit(&no_peer_cap, 9, 1_000), Ok(()));
    }
}
