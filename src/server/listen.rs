//! Accepting connections so that idle or slow clients cannot starve the
//! others: at most [`Options::max_connections`](super::Options) open at
//! once, and a connection that takes longer than
//! [`Options::header_read_timeout`](super::Options) to send a request head
//! (its first, or the next one on a kept-alive connection) is closed.
//!
//! At the cap the server stops accepting until a connection ends, so the
//! process never runs out of file descriptors (a new client waits in the
//! kernel's queue, in order, for at most about one header timeout while
//! others trickle). The cap defaults to 256, or half the process's
//! open-file limit when that is lower.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Options;

/// Serves `app` on `listener` until the future is dropped.
///
/// # Errors
/// Never, today: failed accepts (a client that went away, a momentary
/// lack of file descriptors) are retried after a short pause.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    options: &Options,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // A client that went away before we took it, or a momentary
            // lack of file descriptors: pause, then take the next one.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        tokio::spawn(async move {
            // A client that breaks off is its own business.
            let _ = connection.await;
            drop(slot);
        });
    }
}

/// The default connection cap: 256, or half the soft limit on open files
/// when that is lower (read from `/proc/self/limits` on Linux; elsewhere
/// 256).
pub(crate) fn default_max_connections() -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|soft| soft.parse::<usize>().ok())
        });
    match limit {
        Some(n) => (n / 2).clamp(8, 256),
        None => 256,
    }
}
