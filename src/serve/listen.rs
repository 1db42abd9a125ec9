//! The accept loop: HTTP/1 connections with a header-read timeout (a client
//! that sends headers byte by byte is dropped, not served forever; axum's own
//! `serve` sets none), and graceful shutdown: once `shutdown` resolves the
//! listener is closed (new connections are refused), open connections finish
//! their request in flight and close, up to `drain` long.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
/// Returns whether every connection finished within `drain`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        log::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let service = TowerToHyperService::new(router.clone());
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        log::debug!("connection closed with an error: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    log::info!("stopping: no new connections, draining the open ones");
    tokio::time::timeout(drain, graceful.shutdown()).await.is_ok()
}
