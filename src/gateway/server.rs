//! The gateway's listener: HTTP/1.1 and HTTP/2 (cleartext, prior knowledge) on
//! one port through hyper-util's automatic connection builder. Each connection is
//! admitted under the caps and supervised for its time bounds
//! ([`super::connections`]); HTTP/2 connections are pinged so a peer that vanished
//! is noticed while a stream is open. On shutdown, in-flight requests and streams
//! get `drain` to finish, then the connections left are closed (aborted), which
//! counts what they used. Freed heap goes back to the system after each burst of
//! requests ([`crate::memory`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::watch;

use super::connections::{Activity, Bounds, Caps, Held, Reason, Slots, Verdict, Watched, decide};
use super::metrics::ConnectionMetrics;
use super::proxy::{Gateway, ResponseBody};
use crate::memory;

/// Concurrent streams on one HTTP/2 connection (hyper's current default, made
/// explicit so an upgrade cannot change it).
const HTTP2_MAX_STREAMS: u32 = 200;

/// How the listener treats its client connections.
#[derive(Clone, Copy, Debug)]
pub struct Connections {
    pub bounds: Bounds,
    pub caps: Caps,
    /// HTTP/2 PING interval (None: no PINGs).
    pub ping_interval: Option<Duration>,
    /// An HTTP/2 PING not acknowledged within this closes the connection.
    pub ping_timeout: Duration,
}

/// Serves `gateway` on `listener` until `shutdown`, then drains for at most `drain`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    connections: Connections,
    metrics: Arc<ConnectionMetrics>,
    drain: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A backstop only: the supervisor closes an idle connection, or one whose head
    // trickles, before hyper's timer (which starts when the connection goes idle) fires.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(connections.bounds.head + connections.bounds.idle);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(HTTP2_MAX_STREAMS)
        .keep_alive_interval(connections.ping_interval)
        .keep_alive_timeout(connections.ping_timeout);
    let slots = Slots::new(connections.caps, metrics.clone());
    let (stop, stopping) = watch::channel(false);
    // Every connection's task, so those still open after the drain are closed
    // (their bodies dropped, their requests counted and charged) before the
    // gateway settles its charges and exits.
    let mut tasks = tokio::task::JoinSet::new();
    // Requests begun plus connections ended: the heap is trimmed once this stops growing.
    let activity = Arc::new(AtomicU64::new(0));
    let trimmer = tokio::spawn(memory::trim_after_bursts({
        let activity = activity.clone();
        move || activity.load(Ordering::Relaxed)
    }));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "gateway accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Beyond the cap the socket is closed at once: a client sees its
        // connection end instead of waiting in the backlog.
        let Ok(slot) = slots.acquire(peer.ip()) else { continue };
        let _ = stream.set_nodelay(true);
        let connection = Activity::new(Instant::now());
        let gateway = gateway.clone();
        let requests = activity.clone();
        let service = hyper::service::service_fn({
            let connection = connection.clone();
            move |request: Request<Incoming>| {
                let gateway = gateway.clone();
                let held = connection.begin(request.version());
                requests.fetch_add(1, Ordering::Relaxed);
                async move {
                    let response = gateway.handle(request).await;
                    Ok::<Response<Held<ResponseBody>>, Infallible>(response.map(|body| Held::new(body, held)))
                }
            }
        });
        let io = TokioIo::new(Watched::new(stream, connection.clone()));
        let served = builder.serve_connection_with_upgrades(io, service).into_owned();
        let (ended, stopping, metrics) = (activity.clone(), stopping.clone(), metrics.clone());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let _slot = slot;
            // The supervisor (inline: hyper's connection type cannot be named,
            // and a generic bound on it trips higher-ranked lifetimes in spawn).
            // A graceful close (idle) is counted when it begins, ending with the
            // connection's own result or after CLOSE_GRACE; the others close now.
            tokio::pin!(served);
            let mut stopping = stopping;
            let mut told = false;
            let ended_by = loop {
                let now = Instant::now();
                let recheck = match decide(&connection.snapshot(), &connections.bounds, now) {
                    Verdict::Keep(recheck) => recheck,
                    Verdict::Close(reason) if reason.graceful() && !told => {
                        metrics.closed(reason);
                        connection.closing(now);
                        served.as_mut().graceful_shutdown();
                        told = true;
                        continue;
                    }
                    Verdict::Close(reason) => {
                        if reason != Reason::CloseGrace {
                            metrics.closed(reason);
                        }
                        break Err(reason);
                    }
                };
                let sleep = async {
                    match recheck {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    result = served.as_mut() => break Ok(result),
                    () = sleep => {}
                    () = connection.changed() => {}
                    _ = stopping.wait_for(|stop| *stop), if !told => {
                        served.as_mut().graceful_shutdown();
                        told = true;
                    }
                }
            };
            match ended_by {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%peer, %error, "gateway connection ended with an error"),
                Err(reason) => tracing::debug!(%peer, reason = reason.as_str(), "gateway closed a connection"),
            }
            ended.fetch_add(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    tracing::info!(?drain, "gateway draining in-flight requests");
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, drained).await.is_ok() {
        tracing::info!("gateway drained");
    } else {
        tracing::warn!(?drain, open = tasks.len(), "gateway drain bound reached; closing the remaining connections");
        tasks.abort_all();
    }
    while tasks.join_next().await.is_some() {}
    trimmer.abort();
}
