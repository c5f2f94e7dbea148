//! Connections: how many the server holds and how long each may keep it waiting, so that no
//! client, however slow or however many, holds the server (docs/API.md, "Server limits").
//!
//! Every connection is in one [`Phase`]. Waiting for a request head, it has the header timeout
//! (from its first byte, or from the accept for a new connection); between requests, the idle
//! timeout; while a handler runs or a stream is sent, neither (a handler's body has the body
//! timeout, in [`super::steer`]). In every phase, a client that takes none of its answer for the
//! idle timeout is cut. The phases change at the edges the server sees: bytes read, a handler
//! entered ([`enter`]), an answer handed over ([`leave`]).
//!
//! At the cap, a new connection evicts the one that has waited longest without a request in
//! progress (a client that connected and sent nothing, or kept an idle connection); when every
//! connection is busy, the new one is answered `503` and closed at once. A flood of idle or
//! dribbling connections thus costs its own connections, never the probes'.
//!
//! axum's `serve` takes any [`Listener`]: this one admits connections, and its IO type applies
//! the deadlines, with tokio's timers (which tests can pause).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::{Extensions, Method, header};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::error::CliError;

/// How long each connection may keep the server waiting, and how many it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From a request's first byte (a new connection's accept) to the end of its head.
    pub header_timeout: Duration,
    /// From the end of a request's head to the end of its body.
    pub body_timeout: Duration,
    /// Between requests on a kept-alive connection; and how long a client may take none of its
    /// answer.
    pub idle_timeout: Duration,
    /// Connections held at once, event streams included.
    pub max_connections: usize,
}

/// The header timeout unless told otherwise: long enough for a slow link to send a head of a
/// few hundred bytes, short enough that a connection sending nothing is soon let go.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The body timeout unless told otherwise: steering bodies are a few hundred bytes.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The idle timeout unless told otherwise: a browser's keep-alive reuses a connection within it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The connection cap unless told otherwise: well within the usual 1024 open files a process
/// may hold, with room for the store's own.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Open files kept for everything but connections: the store's pool, the journal, standard
/// streams, a stage's pipes under `run --listen`.
const OTHER_FILES: u64 = 64;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Limits {
    /// Limits as given on the command line; a zero timeout or cap would refuse every client,
    /// so it is refused, naming its flag.
    pub fn new(
        header_timeout: Duration,
        body_timeout: Duration,
        idle_timeout: Duration,
        max_connections: usize,
    ) -> Result<Self, CliError> {
        for (flag, value) in [
            ("--header-timeout", header_timeout),
            ("--body-timeout", body_timeout),
            ("--idle-timeout", idle_timeout),
        ] {
            if value.is_zero() {
                return Err(CliError::Invalid(format!("{flag} must be more than 0")));
            }
        }
        if max_connections == 0 {
            return Err(CliError::Invalid(
                "--max-connections must be at least 1".into(),
            ));
        }
        Ok(Limits {
            header_timeout,
            body_timeout,
            idle_timeout,
            max_connections,
        })
    }

    /// Makes sure the process may open a file for every connection (and its other files), or
    /// says why it cannot: past the limit, `accept` fails and no connection could be evicted,
    /// so the cap would not hold. Raises the soft limit up to the hard one when it must.
    pub(super) fn fit_open_files(&self) -> Result<(), CliError> {
        let needed = self.max_connections as u64 + OTHER_FILES;
        match open_files::raise_to(needed) {
            Ok(()) => Ok(()),
            Err(allowed) => Err(CliError::Invalid(format!(
                "--max-connections {} needs {needed} open files, and this process may open {allowed} (ulimit -n): lower --max-connections or raise the limit",
                self.max_connections
            ))),
        }
    }
}

#[cfg(unix)]
mod open_files {
    /// Raises the soft limit on open files to `needed` if it is lower; `Err` with what the hard
    /// limit allows when that is too little.
    pub(super) fn raise_to(needed: u64) -> Result<(), u64> {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `getrlimit` writes the limits into the struct it is given, which lives for
        // the call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return Ok(()); // Unknown: accept will say.
        }
        #[allow(
            clippy::unnecessary_cast,
            reason = "rlim_t is not u64 on every platform"
        )]
        let (soft, hard) = (limit.rlim_cur as u64, limit.rlim_max as u64);
        let infinite = limit.rlim_cur == libc::RLIM_INFINITY;
        if infinite || soft >= needed {
            return Ok(());
        }
        if limit.rlim_max != libc::RLIM_INFINITY && hard < needed {
            return Err(hard);
        }
        limit.rlim_cur = needed as libc::rlim_t;
        // SAFETY: as above; the soft limit asked for is within the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(soft);
        }
        Ok(())
    }
}

#[cfg(not(unix))]
mod open_files {
    /// Elsewhere the limit is not ours to read.
    pub(super) fn raise_to(_needed: u64) -> Result<(), u64> {
        Ok(())
    }
}

/// Where a connection is in its exchange, which decides its deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request head: since its first byte, or since the accept.
    Head { since: Instant },
    /// Between requests, since the last answer was handed over.
    Idle { since: Instant },
    /// A handler runs (and reads its body, under its own timeout).
    Busy,
    /// An event stream is being sent: it lasts as long as the client follows it.
    Streaming,
}

impl Phase {
    /// Since when it has waited for a request, if it does: what eviction compares.
    fn waiting_since(self) -> Option<Instant> {
        match self {
            Phase::Head { since } | Phase::Idle { since } => Some(since),
            Phase::Busy | Phase::Streaming => None,
        }
    }
}

/// One connection's state, shared by its IO (which enforces it) and the handlers (which move it
/// on) and the listener (which may evict it).
#[derive(Debug)]
struct Conn {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Told to go by a newer connection at the cap.
    evicted: bool,
    /// Wakes the connection's task when it is evicted while waiting to read.
    reader: Option<Waker>,
}

impl Conn {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a few plain values: one a panic left half-written is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the connection to `phase` and wakes its task: hyper, having written an answer,
    /// waits for the socket without reading again, so the new phase's deadline would not be
    /// armed until some other wake-up (a stale timer) came.
    fn settle(&self, phase: Phase) {
        let mut state = self.state();
        state.phase = phase;
        if let Some(waker) = state.reader.take() {
            waker.wake();
        }
    }

    fn evict(&self) {
        let mut state = self.state();
        state.evicted = true;
        if let Some(waker) = state.reader.take() {
            waker.wake();
        }
    }
}

/// The connections held, for the cap and eviction.
#[derive(Debug)]
struct Table {
    limits: Limits,
    held: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
}

/// How many evicted connections may still be closing before new ones are refused instead:
/// keeps a flood from growing the table faster than evicted tasks let go.
const EVICTING_AT_MOST: usize = 64;

impl Table {
    /// Takes a new connection in, evicting the longest-waiting one at the cap; `None` when
    /// every connection held is busy.
    fn admit(self: &Arc<Self>, now: Instant) -> Option<(u64, Arc<Conn>)> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let evicting = held.values().filter(|c| c.state().evicted).count();
        if held.len() - evicting >= self.limits.max_connections {
            if evicting >= EVICTING_AT_MOST {
                return None;
            }
            let victim = held
                .values()
                .filter_map(|conn| {
                    let state = conn.state();
                    let since = state.phase.waiting_since()?;
                    (!state.evicted).then_some((since, conn))
                })
                .min_by_key(|(since, _)| *since)
                .map(|(_, conn)| Arc::clone(conn))?;
            victim.evict();
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            state: Mutex::new(State {
                phase: Phase::Head { since: now },
                evicted: false,
                reader: None,
            }),
        });
        held.insert(id, Arc::clone(&conn));
        Some((id, conn))
    }

    fn release(&self, id: u64) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// A TCP listener that admits connections under [`Limits`].
#[derive(Debug)]
pub(super) struct Guarded {
    listener: TcpListener,
    table: Arc<Table>,
}

impl Guarded {
    pub(super) fn new(listener: TcpListener, limits: Limits) -> Self {
        Guarded {
            listener,
            table: Arc::new(Table {
                limits,
                held: Mutex::new(HashMap::new()),
                next: AtomicU64::new(0),
            }),
        }
    }
}

/// What a connection over the cap is told before it is closed, when every connection is busy.
const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nx-content-type-options: nosniff\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 87\r\n\r\n{\"error\":\"the server holds as many connections as it may: try again soon\",\"status\":503}";

impl Listener for Guarded {
    type Io = GuardedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, address) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            };
            let Some((id, conn)) = self.table.admit(Instant::now()) else {
                // A fresh socket's send buffer takes these few bytes at once; if it does not,
                // closing says enough.
                let _ = stream.try_write(FULL);
                continue;
            };
            let io = GuardedIo {
                stream,
                conn,
                id,
                table: Arc::clone(&self.table),
                read_deadline: Box::pin(tokio::time::sleep_until(Instant::now())),
                read_armed: None,
                write_deadline: Box::pin(tokio::time::sleep_until(Instant::now())),
                write_stalled: None,
            };
            return (io, address);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// As axum's own listener does: a connection that failed before it was accepted is the
/// client's business; anything else (out of open files) is waited out, not spun on.
async fn accept_failed(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    eprintln!("  ! accepting a connection failed: {error}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A connection's stream, which fails its reads and writes past the connection's deadlines;
/// hyper then closes the connection. Dropping it frees its place under the cap.
#[derive(Debug)]
pub(super) struct GuardedIo {
    stream: TcpStream,
    conn: Arc<Conn>,
    id: u64,
    table: Arc<Table>,
    read_deadline: Pin<Box<Sleep>>,
    /// The deadline `read_deadline` is set to, if it is armed.
    read_armed: Option<Instant>,
    write_deadline: Pin<Box<Sleep>>,
    /// Since when writes have made no progress.
    write_stalled: Option<Instant>,
}

impl Drop for GuardedIo {
    fn drop(&mut self) {
        self.table.release(self.id);
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

impl GuardedIo {
    /// After a write made no progress: fails once the client has taken nothing for the idle
    /// timeout.
    fn write_pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let since = *self.write_stalled.get_or_insert_with(Instant::now);
        let deadline = since + self.table.limits.idle_timeout;
        if self.write_deadline.deadline() != deadline {
            self.write_deadline.as_mut().reset(deadline);
        }
        match self.write_deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(timed_out(
                "the client took none of its answer for the idle timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let evicted = || {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "evicted for a newer connection at the cap",
            )))
        };
        if this.conn.state().evicted {
            return evicted();
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        // Looked at again under the lock that also keeps the waker: an eviction between the
        // look above and here would otherwise find no waker to wake, and wait for a timer.
        let mut state = this.conn.state();
        if state.evicted {
            return evicted();
        }
        match read {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before
                    && let Phase::Idle { .. } = state.phase
                {
                    state.phase = Phase::Head {
                        since: Instant::now(),
                    };
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                if !state
                    .reader
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    state.reader = Some(cx.waker().clone());
                }
                let limits = &this.table.limits;
                let (deadline, what) = match state.phase {
                    Phase::Head { since } => (
                        since + limits.header_timeout,
                        "the request head did not arrive within the header timeout",
                    ),
                    Phase::Idle { since } => (
                        since + limits.idle_timeout,
                        "no request came within the idle timeout",
                    ),
                    Phase::Busy | Phase::Streaming => {
                        this.read_armed = None;
                        return Poll::Pending;
                    }
                };
                drop(state);
                if this.read_armed != Some(deadline) {
                    this.read_deadline.as_mut().reset(deadline);
                    this.read_armed = Some(deadline);
                }
                match this.read_deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(timed_out(what))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Ready(written) => {
                self.write_stalled = None;
                Poll::Ready(written)
            }
            Poll::Pending => self.write_pending(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(written) => {
                self.write_stalled = None;
                Poll::Ready(written)
            }
            Poll::Pending => self.write_pending(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request's handle on its connection, for [`enter`] and [`leave`].
#[derive(Debug, Clone)]
pub(super) struct Handle(Arc<Conn>);

impl Connected<IncomingStream<'_, Guarded>> for Handle {
    fn connect_info(stream: IncomingStream<'_, Guarded>) -> Self {
        Handle(Arc::clone(&stream.io().conn))
    }
}

/// The request's head is read and a handler takes it: no read deadline until it answers.
pub(super) fn enter(request: &axum::extract::Request) -> Option<Handle> {
    let handle = request
        .extensions()
        .get::<ConnectInfo<Handle>>()
        .map(|ConnectInfo(handle)| handle.clone())?;
    handle.0.state().phase = Phase::Busy;
    Some(handle)
}

/// The answer is handed over: an event stream keeps the connection as long as the client
/// follows it; anything else starts the idle timeout. A `HEAD` for the stream sends no stream.
pub(super) fn leave(handle: Option<Handle>, method: &Method, response: &Response) {
    let Some(Handle(conn)) = handle else { return };
    let streaming = method != Method::HEAD
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
    conn.settle(if streaming {
        Phase::Streaming
    } else {
        Phase::Idle {
            since: Instant::now(),
        }
    });
}

/// Held by an event stream's body: once the stream ends (the store failed, say) and the
/// connection lives on, it waits for its next request under the idle timeout again, rather
/// than as a stream that never ends.
#[derive(Debug)]
pub(super) struct StreamEnd(Option<Handle>);

impl StreamEnd {
    /// For the stream of the request whose extensions these are.
    pub(super) fn of(extensions: &Extensions) -> Self {
        StreamEnd(
            extensions
                .get::<ConnectInfo<Handle>>()
                .map(|ConnectInfo(handle)| handle.clone()),
        )
    }
}

impl Drop for StreamEnd {
    fn drop(&mut self) {
        if let Some(Handle(conn)) = &self.0
            && conn.state().phase == Phase::Streaming
        {
            conn.settle(Phase::Idle {
                since: Instant::now(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_connections: usize) -> Arc<Table> {
        Arc::new(Table {
            limits: Limits {
                max_connections,
                ..Limits::default()
            },
            held: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        })
    }

    #[test]
    fn at_the_cap_the_longest_waiting_connection_is_evicted_and_busy_ones_never() {
        let table = table(3);
        let start = Instant::now();
        let (_, first) = table.admit(start).unwrap();
        let (_, second) = table.admit(start + Duration::from_secs(1)).unwrap();
        let (_, third) = table.admit(start + Duration::from_secs(2)).unwrap();
        first.state().phase = Phase::Busy;
        third.state().phase = Phase::Streaming;

        let (_, fourth) = table.admit(start + Duration::from_secs(3)).unwrap();
        assert!(second.state().evicted, "the one waiting for its head");
        assert!(!first.state().evicted && !third.state().evicted);
        fourth.state().phase = Phase::Busy;
        // Until the evicted one has gone, it still counts; the held ones are all busy now.
        assert!(table.admit(start + Duration::from_secs(4)).is_none());
    }

    #[test]
    fn a_released_connection_frees_its_place() {
        let table = table(1);
        let (id, conn) = table.admit(Instant::now()).unwrap();
        conn.state().phase = Phase::Busy;
        assert!(table.admit(Instant::now()).is_none());
        table.release(id);
        assert!(table.admit(Instant::now()).is_some());
    }

    #[test]
    fn the_refusal_declares_its_length() {
        let text = std::str::from_utf8(FULL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.ends_with(&format!("\r\ncontent-length: {}", body.len())));
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }

    #[test]
    fn zero_limits_are_refused_by_name() {
        let s = Duration::from_secs(1);
        for (limits, flag) in [
            (Limits::new(Duration::ZERO, s, s, 1), "--header-timeout"),
            (Limits::new(s, Duration::ZERO, s, 1), "--body-timeout"),
            (Limits::new(s, s, Duration::ZERO, 1), "--idle-timeout"),
            (Limits::new(s, s, s, 0), "--max-connections"),
        ] {
            assert!(limits.unwrap_err().to_string().contains(flag), "{flag}");
        }
    }
}
