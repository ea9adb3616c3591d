//! Accepting connections so that idle or slow clients cannot starve the
//! others: at most [`Options::max_connections`](super::Options) open at
//! once, and a connection that takes longer than
//! [`Options::header_read_timeout`](super::Options) to send a request head
//! (its first, or the next one on a kept-alive connection) is closed, as
//! is one whose client takes none of a response for
//! [`Options::write_timeout`](super::Options) (a client that stops reading
//! would otherwise hold its response in memory for as long as it likes).
//!
//! At the cap, a new client takes the place of the connection idle the
//! longest: one with no request in flight, for at least
//! [`MIN_IDLE_BEFORE_EVICTION`], and nothing unread in its socket. That
//! is a client that opened a connection and sent nothing, one trickling its
//! request head (bytes that are not yet a request do not make it busy), or
//! a kept-alive connection between requests (nginx's "reusable
//! connections" policy). A client that sent its request is never closed
//! for room, nor is one whose request is in flight (a render, an event stream, a body being
//! read under its own timeout). When none qualifies, new clients wait in
//! the kernel's queue. So a flood of idle connections costs a valid client
//! a fraction of a second per cap's worth of them, not a header timeout,
//! and the process never runs out of file descriptors. The cap defaults to
//! 256, or half the process's open-file limit when that is lower.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

use super::Options;

/// How long a connection must have been without a request in flight
/// before a new client may take its place at the cap. Long enough that a
/// client which connected and is sending its request is not taken for an
/// idle one; short enough that a flood of a thousand idle connections
/// delays a valid client by about a second.
pub(crate) const MIN_IDLE_BEFORE_EVICTION: Duration = Duration::from_millis(500);

/// How often the accept loop, at the cap with no connection to close,
/// looks again for one that has waited long enough.
const RECHECK: Duration = Duration::from_millis(50);

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
    let open = Arc::new(Open::new());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // A client that went away before we took it, or a momentary
            // lack of file descriptors: pause, then take the next one.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // At the cap with a client waiting: make room by closing the
        // connection idle the longest, or wait for a connection to end (or
        // to have been idle long enough).
        let slot = loop {
            if let Ok(slot) = slots.clone().try_acquire_owned() {
                break slot;
            }
            if open.close_longest_idle() {
                match slots.clone().acquire_owned().await {
                    Ok(slot) => break slot,
                    Err(_) => return Ok(()),
                }
            }
            tokio::select! {
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => break slot,
                    Err(_) => return Ok(()),
                },
                () = tokio::time::sleep(RECHECK) => {}
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = open.add(stream);
        let service = {
            let app = app.clone();
            let conn = conn.clone();
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let in_flight = InFlight::enter(conn.clone());
                let conn = conn.clone();
                let mut app = app.clone();
                async move {
                    let response = tower_service::Service::call(&mut app, request).await?;
                    if response.extensions().get::<LongLived>().is_some() {
                        // Waiting on the server's events, not working: idle.
                        drop(in_flight);
                        return Ok::<_, Infallible>(response);
                    }
                    let writing = Writing::start(conn.clone());
                    Ok(response.map(|body| {
                        Body::new(Tracked {
                            body,
                            _in_flight: in_flight,
                            _writing: writing,
                        })
                    }))
                }
            })
        };
        let io = Shared(conn.clone());
        let connection = http.serve_connection(TokioIo::new(io), service);
        let open = open.clone();
        let write_timeout = options.write_timeout;
        tokio::spawn(async move {
            // A client that stops reading a response is closed once it has
            // taken nothing for the write timeout: what the response holds
            // is freed.
            let stalled = async {
                let every =
                    (write_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
                while !conn.stalled(write_timeout) {
                    tokio::time::sleep(every).await;
                }
            };
            // A client that breaks off is its own business; a connection
            // closed for room is dropped while it waits, closing its socket.
            tokio::select! {
                _ = connection => {}
                () = conn.close.notified() => {}
                () = stalled => {}
            }
            open.remove(conn.id);
            drop(slot);
        });
    }
}

/// Marks a response that streams for as long as the client listens (the
/// reload events): its connection counts as idle while it does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LongLived;

/// The open connections, for choosing which one makes room.
struct Open {
    next_id: AtomicU64,
    epoch: Instant,
    table: Mutex<HashMap<u64, Arc<Connection>>>,
}

/// One open connection: its socket, its requests in flight, since when it
/// has had none, and the signal that closes it.
struct Connection {
    id: u64,
    stream: Arc<TcpStream>,
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `epoch` to its accept or the end of its last
    /// request.
    idle_since: AtomicU64,
    closing: AtomicBool,
    close: Notify,
    /// Responses being written (bodies not yet all taken).
    writing: AtomicUsize,
    /// Milliseconds from `epoch` to the last write the client took, or the
    /// start of the response being written.
    progress: AtomicU64,
}

impl Connection {
    /// Whether a response has waited longer than `limit` for the client to
    /// take any of it.
    fn stalled(&self, limit: Duration) -> bool {
        let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.writing.load(Ordering::Acquire) > 0
            && self
                .now()
                .saturating_sub(self.progress.load(Ordering::Acquire))
                > limit
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the client sent bytes the server has not read yet (a
    /// request on its way in, even when its task has not run since). A
    /// peek at the socket: it takes nothing from it.
    fn has_unread(&self) -> bool {
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
        socket2::SockRef::from(&*self.stream)
            .peek(&mut byte)
            .is_ok_and(|n| n > 0)
    }
}

impl Open {
    fn new() -> Self {
        Open {
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            table: Mutex::new(HashMap::new()),
        }
    }

    fn add(&self, stream: TcpStream) -> Arc<Connection> {
        let conn = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            stream: Arc::new(stream),
            epoch: self.epoch,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            close: Notify::new(),
            writing: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
        });
        conn.idle_since.store(conn.now(), Ordering::Release);
        self.lock().insert(conn.id, conn.clone());
        conn
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Signals the connection idle the longest (for at least
    /// [`MIN_IDLE_BEFORE_EVICTION`], with nothing unread in its socket) to
    /// close. False when none qualifies.
    fn close_longest_idle(&self) -> bool {
        let table = self.lock();
        let Some(now) = table.values().next().map(|c| c.now()) else {
            return false;
        };
        let limit = u64::try_from(MIN_IDLE_BEFORE_EVICTION.as_millis()).unwrap_or(u64::MAX);
        let mut idle: Vec<(u64, &Arc<Connection>)> = table
            .values()
            .filter(|c| {
                !c.closing.load(Ordering::Acquire) && c.in_flight.load(Ordering::Acquire) == 0
            })
            .map(|c| (c.idle_since.load(Ordering::Acquire), c))
            .filter(|(since, _)| now.saturating_sub(*since) >= limit)
            .collect();
        idle.sort_unstable_by_key(|(since, c)| (*since, c.id));
        let Some((_, victim)) = idle.into_iter().find(|(_, c)| !c.has_unread()) else {
            return false;
        };
        victim.closing.store(true, Ordering::Release);
        // Stored if its task is not waiting on it yet: it closes on its
        // next poll.
        victim.close.notify_one();
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request in flight on a connection, from its head being read until its
/// response body is written to the end (or dropped).
struct InFlight(Arc<Connection>);

/// A response being written: dropped with its body.
struct Writing(Arc<Connection>);

impl Writing {
    fn start(conn: Arc<Connection>) -> Self {
        conn.progress.store(conn.now(), Ordering::Release);
        conn.writing.fetch_add(1, Ordering::AcqRel);
        Self(conn)
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        self.0.writing.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    fn enter(conn: Arc<Connection>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it is written.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
    _writing: Writing,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A client's socket shared between hyper, which reads and writes it, and
/// the connection table, which peeks at it; every write the client takes
/// is progress for the write timeout.
struct Shared(Arc<Connection>);

impl Shared {
    fn progressed<T>(&self, done: &io::Result<T>) {
        if done.is_ok() {
            self.0.progress.store(self.0.now(), Ordering::Release);
        }
    }
}

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.0.stream.poll_read_ready(cx))?;
            match self.0.stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale; `try_read` cleared it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.0.stream.poll_write_ready(cx))?;
            match self.0.stream.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => {
                    self.progressed(&done);
                    return Poll::Ready(done);
                }
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.0.stream.poll_write_ready(cx))?;
            match self.0.stream.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => {
                    self.progressed(&done);
                    return Poll::Ready(done);
                }
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// TCP writes are not buffered here.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0.stream).shutdown(std::net::Shutdown::Write))
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
