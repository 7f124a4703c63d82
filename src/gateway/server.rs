//! The gateway's listener: HTTP/1.1 and HTTP/2 (cleartext, prior knowledge) on
//! one port through hyper-util's automatic connection builder, with a bound on
//! how long a client may take to send its request head, and a bounded drain on
//! shutdown: in-flight requests and streams get `drain` to finish, then the
//! connections left are closed (aborted), which counts what they used. Freed heap goes back to the system after each burst
//! of requests ([`crate::memory`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;

use super::proxy::{Gateway, ResponseBody};
use crate::memory;

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `gateway` on `listener` until `shutdown`, then drains for at most `drain`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    drain: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    // Every connection's task, so those still open after the drain are closed
    // (their bodies dropped, their requests counted and charged) before the
    // gateway settles its charges and exits.
    let mut connections = tokio::task::JoinSet::new();
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
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let gateway = gateway.clone();
            requests.fetch_add(1, Ordering::Relaxed);
            async move { Ok::<Response<ResponseBody>, Infallible>(gateway.handle(request).await) }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        let ended = activity.clone();
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, error = %error, "gateway connection ended with an error");
            }
            ended.fetch_add(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    tracing::info!(?drain, "gateway draining in-flight requests");
    match tokio::time::timeout(drain, graceful.shutdown()).await {
        Ok(()) => tracing::info!("gateway drained"),
        Err(_) => {
            tracing::warn!(
                ?drain,
                open = connections.len(),
                "gateway drain bound reached; closing the remaining connections"
            );
            connections.abort_all();
        }
    }
    while connections.join_next().await.is_some() {}
    trimmer.abort();
}
