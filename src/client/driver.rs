//! A connection's driver: the one task that owns the client's socket, the mirror of the
//! server's (`server/driver.rs`).
//!
//! ```text
//!          ┌─────────────────────── driver (owns the transport::Socket) ──────────────────────┐
//! socket ─►│ read ─► parse ─┬─► reply: its pending entry gets the outcome, the requester a wake │
//!          │                ├─► signal, session notification: event queue (never waits) ─► handler task
//!          │                └─► session reply: session changed here, then completed          │
//! requests, signals ─► queue of encoded frames ─► fed while the socket has room ─► one flush ─┼─► socket
//!          │ one sweep timer: pending deadlines; one heartbeat timer, checked against the     │
//!          │ time of the last write                                                           │
//!          └───────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The driver never waits for user code: replies complete their entry, everything else is
//! pushed into the handler's queue, which never makes its sender wait. It handles at most
//! [`MAX_READS`] messages per round and yields after [`MAX_ROUNDS`] rounds, so a busy
//! connection cannot starve the other tasks of its worker.
//!
//! Over 600 lines (765, 590 before the unit tests): the driver itself; the rest is its unit
//! tests, which drive it over an in-memory socket.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{debug, warn};

use crate::Session;
use crate::client::RequestError;
use crate::client::events::Event;
use crate::client::events::signal_bytes;
use crate::client::link::Link;
use crate::client::pending::Kind;
use crate::client::routes::Deliveries;
use crate::client::shared::Shared;
use crate::protocol::{Message, MessageType, RequestId};
use crate::transport::{
    Incoming, MAX_READS, Round, Socket, WriteFailed, close_frame, feed_while_room, rounds,
};

/// The one-byte heartbeat frame (§1.5), shared rather than encoded each time.
const HEARTBEAT: &[u8] = &[MessageType::Heartbeat as u8];

/// Why a server that floods session notifications is disconnected.
const FLOOD: &str = "session notifications faster than the handler takes them";

/// Two sweeps of the pending requests are at least this far apart: a request times out
/// at most this long after its deadline, and many different deadlines in a row cost one
/// sweep per millisecond at most.
pub(crate) const SWEEP_GRANULARITY: Duration = Duration::from_millis(1);

/// The driver of one connection.
pub(crate) struct Driver<'a, S> {
    shared: &'a Shared,
    link: Arc<Link>,
    socket: Socket<S>,
    /// Frames taken from the link's queue, not yet fed to the socket.
    taken: VecDeque<Bytes>,
    /// Replies for pipelines, routed by their id's chunk and handed over a read batch at a
    /// time.
    deliveries: Deliveries,
    /// Wakes at the earliest deadline of a pending request; armed for `sweep_at`.
    sweep: Pin<Box<Sleep>>,
    sweep_at: Option<Instant>,
    last_sweep: Instant,
    heartbeat: Option<Heartbeat>,
    /// Frames were fed since the last flush (the heartbeat's "last write" is taken then).
    wrote: bool,
    /// Since the last flush: replies that woke a requester, and frames fed. A requester
    /// woken by a reply usually queues its next request at once; while fewer frames came
    /// than requesters were woken, the driver lets them run once before it flushes, so
    /// that their frames leave in one write.
    completed: usize,
    fed: usize,
    yielded: bool,
    /// The close frame for a protocol violation.
    violation: Option<CloseFrame>,
    /// Server signals that came before the handler was told of the connection (while a
    /// session is restored after a reconnection), delivered right after `connected`.
    held: Vec<Event>,
    /// The bytes of `held`, bounded by `max_queued_signal_bytes`.
    held_bytes: usize,
}

/// Heartbeats (§1.5): one at `period` after the last write. One timer, moved only when it
/// fires: a write records its time, it does not touch the timer.
struct Heartbeat {
    period: Duration,
    timer: Pin<Box<Sleep>>,
    last_write: Instant,
}

impl<S> std::fmt::Debug for Driver<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("generation", &self.link.generation)
            .finish_non_exhaustive()
    }
}

impl<'a, S> Driver<'a, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub(crate) fn new(shared: &'a Shared, link: Arc<Link>, socket: Socket<S>) -> Self {
        let now = Instant::now();
        let heartbeat = heartbeat_interval(link.conf.read_timeout).map(|period| Heartbeat {
            period,
            timer: Box::pin(tokio::time::sleep_until(now + period)),
            last_write: now,
        });
        Driver {
            shared,
            link,
            socket,
            taken: VecDeque::new(),
            deliveries: Deliveries::default(),
            sweep: Box::pin(tokio::time::sleep_until(now)),
            sweep_at: None,
            last_sweep: now,
            heartbeat,
            wrote: false,
            completed: 0,
            fed: 0,
            yielded: false,
            violation: None,
            held: Vec::new(),
            held_bytes: 0,
        }
    }

    /// Drives the connection until it ends, and says how.
    pub(crate) fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        self.shared.closing.register(cx.waker());
        if !self.held.is_empty() && self.link.announced.load(Ordering::Acquire) {
            self.held_bytes = 0;
            for signal in self.held.drain(..) {
                self.shared.events.push(signal);
            }
        }
        let busy = rounds(|| {
            if self.shared.is_closed() {
                return Err(Ended::Closing);
            }
            let completed = self.completed;
            let wrote = self.write_queued(cx)?;
            let read = self.read(cx)?;
            Ok(if self.completed > completed {
                // Requesters were woken: let them run (and queue their next requests)
                // before reading on. Come back at once if the socket may hold more.
                Round::Yield {
                    busy: read == Read::Limit,
                }
            } else if wrote || read != Read::Nothing {
                Round::Progress
            } else {
                Round::Idle
            })
        });
        let busy = match busy {
            Ok(busy) => busy,
            Err(ended) => return Poll::Ready(ended),
        };
        if let Err(ended) = self.poll_timers(cx) {
            return Poll::Ready(ended);
        }
        if self.socket.is_unflushed() {
            if self.fed < self.completed && !self.yielded {
                // Requesters woken by replies have not queued their next frames yet: let
                // them run, then write everything at once.
                self.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match self.socket.poll_flush(cx) {
                Poll::Ready(Ok(())) => self.flushed(),
                Poll::Ready(Err(failed)) => return Poll::Ready(lost(&failed)),
                Poll::Pending => {}
            }
        } else if self.wrote {
            // The socket flushed on its own (room came back after a write waited): the
            // heartbeat counts from now.
            self.flushed();
        }
        if busy {
            // Let the worker's other tasks run, and come back.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Everything fed so far is written.
    fn flushed(&mut self) {
        self.completed = 0;
        self.fed = 0;
        self.yielded = false;
        if std::mem::take(&mut self.wrote) {
            if let Some(heartbeat) = &mut self.heartbeat {
                heartbeat.last_write = Instant::now();
            }
        }
    }

    /// Feeds queued frames while the socket has room. Whether any was fed.
    fn write_queued(&mut self, cx: &mut Context<'_>) -> Result<bool, Ended> {
        let (taken, queue) = (&mut self.taken, &self.link.queue);
        let fed = feed_while_room(&mut self.socket, cx, |cx| {
            if taken.is_empty() && !queue.take(taken, cx.waker()) {
                return Poll::Pending;
            }
            taken
                .pop_front()
                .map_or(Poll::Pending, |frame| Poll::Ready(Some(frame)))
        })
        .map_err(|failed| lost(&failed))?
        .frames;
        if fed == 0 {
            return Ok(false);
        }
        // Room for as many frames as were fed, given back once per batch.
        self.link.queue.fed(fed);
        self.fed += fed;
        self.wrote = true;
        Ok(true)
    }

    /// Reads and dispatches up to [`MAX_READS`] messages; then hands the pipelines their
    /// outcomes, a batch each (also when the connection ended meanwhile).
    fn read(&mut self, cx: &mut Context<'_>) -> Result<Read, Ended> {
        let read = self.read_batch(cx);
        self.deliveries.deliver();
        read
    }

    fn read_batch(&mut self, cx: &mut Context<'_>) -> Result<Read, Ended> {
        for read in 0..MAX_READS {
            let Poll::Ready(incoming) = self.socket.poll_read(cx) else {
                return Ok(if read > 0 { Read::Some } else { Read::Nothing });
            };
            self.on_incoming(incoming)?;
        }
        Ok(Read::Limit)
    }

    /// Sweeps the pending requests at the earliest deadline; sends a heartbeat when
    /// nothing was written for its period.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Result<(), Ended> {
        // A request whose deadline comes before every other wakes the driver through
        // this, also while the socket is full and nothing else would.
        self.shared.pending.register_sweeper(cx.waker());
        loop {
            let due = self.shared.pending.next_sweep();
            if due != self.sweep_at {
                self.sweep_at = due;
                if let Some(at) = due {
                    let at = at.max(self.last_sweep + SWEEP_GRANULARITY);
                    self.sweep.as_mut().reset(at);
                }
            }
            if self.sweep_at.is_none() || self.sweep.as_mut().poll(cx).is_pending() {
                break;
            }
            let now = Instant::now();
            self.last_sweep = now;
            self.sweep_at = None;
            let expired = self.shared.pending.sweep(now);
            if expired > 0 {
                debug!(expired, "requests timed out");
            }
        }
        let Some(heartbeat) = &mut self.heartbeat else {
            return Ok(());
        };
        while heartbeat.timer.as_mut().poll(cx).is_ready() {
            let due = heartbeat.last_write + heartbeat.period;
            let now = Instant::now();
            if due > now && !self.wrote {
                // Written meanwhile: the heartbeat is due a period after that write.
                heartbeat.timer.as_mut().reset(due);
                continue;
            }
            if !self.wrote {
                // A socket without room is writing already; that counts as activity.
                if let Poll::Ready(Ok(())) = self.socket.poll_room(cx) {
                    self.socket
                        .feed(Bytes::from_static(HEARTBEAT))
                        .map_err(|failed| lost(&failed))?;
                    self.wrote = true;
                }
            }
            heartbeat.last_write = now;
            heartbeat.timer.as_mut().reset(now + heartbeat.period);
        }
        Ok(())
    }

    /// Acts on one item read from the socket; `Err` when the connection ends.
    fn on_incoming(&mut self, incoming: Incoming) -> Result<(), Ended> {
        match incoming {
            // The server announced its limit in its handshake and sends nothing larger
            // (PROTOCOL.md §1.4; the Go client even requires its buffer to equal it): more
            // is a server to stop reading, whatever `max_message_size` allows.
            Incoming::Frame(frame) if frame.len() > self.link.limit() => {
                warn!(
                    len = frame.len(),
                    announced = self.link.limit(),
                    "the server sent a message over the size it announced; closing the connection"
                );
                self.violation = Some(close_frame(
                    CloseCode::Size,
                    "message exceeds the announced size",
                ));
                Err(Ended::Violation)
            }
            Incoming::Frame(frame) => match Message::parse(frame) {
                Ok(message) => self.dispatch(message).map_err(|reason| {
                    self.violation = Some(close_frame(CloseCode::Protocol, reason));
                    Ended::Violation
                }),
                Err(err) => {
                    warn!(%err, "malformed message from the server; closing the connection");
                    self.violation = Some(close_frame(
                        CloseCode::Protocol,
                        "malformed WebWire message",
                    ));
                    Err(Ended::Violation)
                }
            },
            Incoming::Alive => Ok(()),
            Incoming::Closed(frame) => {
                debug!(?frame, "the server closed the connection");
                Err(Ended::ServerClosed(
                    frame.map(|frame| u16::from(frame.code)),
                ))
            }
            Incoming::Gone => Err(Ended::Lost),
            Incoming::Violation(code, reason) => {
                warn!(reason, "closing the connection");
                self.violation = Some(close_frame(code, reason));
                Err(Ended::Violation)
            }
        }
    }

    /// Hands one well-formed message from the server to whoever waits for it. An error is
    /// a protocol violation (a session notification whose JSON is not a session), the
    /// reason for the close frame.
    fn dispatch(&mut self, message: Message) -> Result<(), &'static str> {
        let shared = self.shared;
        let (id, outcome): (RequestId, Result<_, RequestError>) = match message {
            Message::ReplyBinary { id, .. }
            | Message::ReplyUtf8 { id, .. }
            | Message::ReplyUtf16 { id, .. } => match message.payload() {
                Some(payload) => (id, Ok(payload)),
                None => return Ok(()),
            },
            Message::ReplyError { id, code, message } => (
                id,
                Err(RequestError::Reply {
                    code,
                    message: String::from_utf8_lossy(&message).into_owned(),
                }),
            ),
            Message::ReplyShutdown { id } => (id, Err(RequestError::Shutdown)),
            Message::ReplyInternalError { id } => (id, Err(RequestError::Internal)),
            Message::ReplySessionNotFound { id } => (id, Err(RequestError::SessionNotFound)),
            Message::ReplyMaxSessConnsReached { id } => {
                (id, Err(RequestError::MaxSessionConnectionsReached))
            }
            Message::ReplySessionsDisabled { id } => (id, Err(RequestError::SessionsDisabled)),
            Message::SignalBinary { ref name, ref data }
                if shared.config.topics && *name == crate::protocol::topics::PUBLICATION =>
            {
                return super::topics::publication(shared, data);
            }
            Message::SignalBinary { .. }
            | Message::SignalUtf8 { .. }
            | Message::SignalUtf16 { .. } => {
                if let (Some(name), Some(payload)) = (message.name(), message.payload()) {
                    let signal = Event::Signal(name.clone(), payload);
                    if self.link.announced.load(Ordering::Acquire) {
                        // Signals beyond the limit are dropped by policy, never refused.
                        shared.events.push(signal);
                    } else if self.held.len() < shared.config.max_queued_signals
                        && self.held_bytes + signal_bytes(&signal)
                            <= shared.config.max_queued_signal_bytes
                    {
                        self.held_bytes += signal_bytes(&signal);
                        self.held.push(signal);
                    } else {
                        shared.events.count_dropped_signal();
                    }
                }
                return Ok(());
            }
            Message::NotifySessionCreated { session } => {
                return match Session::from_json(&session) {
                    Ok(session) => {
                        if shared.store_session(session) {
                            Ok(())
                        } else {
                            Err(FLOOD)
                        }
                    }
                    Err(err) => {
                        warn!(%err, "invalid session from the server; closing the connection");
                        Err("malformed session JSON")
                    }
                };
            }
            Message::NotifySessionClosed => {
                return if shared.forget_session() {
                    Ok(())
                } else {
                    Err(FLOOD)
                };
            }
            // Well-formed, but not something a server sends (or a second AcceptConf):
            // ignored, as the Go client does.
            Message::AcceptConf(_)
            | Message::RequestCloseSession { .. }
            | Message::RequestRestoreSession { .. }
            | Message::Heartbeat
            | Message::RequestBinary { .. }
            | Message::RequestUtf8 { .. }
            | Message::RequestUtf16 { .. } => {
                debug!(message_type = %message.message_type(), "unexpected message from the server ignored");
                return Ok(());
            }
        };
        // A reply for a pipeline, in the chunk of the last one: no pending entry, no lock.
        let outcome = match self
            .deliveries
            .route(&shared.routes, id.to_u64(), outcome, false)
        {
            Ok(()) => {
                self.completed += 1;
                return Ok(());
            }
            Err(outcome) => outcome,
        };
        // Session replies change the session here, in the order of the messages around
        // them; a late one (its requester gave up) only if nothing newer came since.
        let delivered = shared.pending.complete(
            id.to_u64(),
            outcome,
            |kind, late, outcome| match (kind, outcome) {
                (Kind::RestoreSession(epoch), Ok(payload)) => match Session::from_json(&payload.data) {
                    Ok(session) => {
                        if shared.store_session_if(session, late.then_some(epoch)).is_none() {
                            debug!(%id, "a late restore reply, superseded by a newer session or session request, ignored");
                        }
                        Ok(payload)
                    }
                    Err(err) => {
                        warn!(%err, "invalid session in a restore reply");
                        Err(RequestError::InvalidReply(err))
                    }
                },
                (Kind::CloseSession(epoch), Ok(payload)) => {
                    if shared.forget_session_if(late.then_some(epoch)).is_none() {
                        debug!(%id, "a late close reply, superseded by a newer session or session request, ignored");
                    }
                    Ok(payload)
                }
                (_, outcome) => outcome,
            },
        );
        match delivered {
            Ok(true) => self.completed += 1,
            // Nobody waits for it any more (a session request given up); that is fine.
            Ok(false) => {}
            // A pipeline's, of another chunk; or a late reply after a timeout, or a
            // duplicate.
            Err(outcome) => match self
                .deliveries
                .route(&shared.routes, id.to_u64(), outcome, true)
            {
                Ok(()) => self.completed += 1,
                Err(_) => debug!(%id, "reply for no pending request ignored"),
            },
        }
        Ok(())
    }

    /// Ends the connection: for [`Ended::Closing`] what was queued before the close is
    /// written, then a normal close frame; for [`Ended::Violation`] the violation's close
    /// frame; either way the closing handshake follows (at most `close_timeout`). When the
    /// server closed or is gone, tungstenite's answer to its close frame goes out if the
    /// socket takes it at once. Frames queued from now on are refused (their senders try
    /// the next connection).
    pub(crate) async fn close(mut self, ended: Ended, close_timeout: Duration) {
        let queued = self.link.queue.close();
        self.taken.extend(queued);
        let frame = match ended {
            Ended::Closing => {
                let mut fed = Ok(());
                while let Some(frame) = self.taken.pop_front() {
                    fed = std::future::poll_fn(|cx| self.socket.poll_room(cx)).await;
                    if fed.is_err() {
                        break;
                    }
                    fed = self.socket.feed(frame);
                    if fed.is_err() {
                        break;
                    }
                }
                if let Err(failed) = fed {
                    debug!(ended = ?lost(&failed), "queued frames not written");
                    return self.socket.finish();
                }
                Some(close_frame(CloseCode::Normal, "client closed"))
            }
            Ended::Violation => self.violation.take(),
            Ended::Lost | Ended::ServerClosed(_) => None,
        };
        match frame {
            Some(frame) => {
                // Bounded: a server that does not read cannot hold the close up.
                let closing = self.socket.close(frame, close_timeout);
                let _ = tokio::time::timeout(close_timeout * 2, closing).await;
            }
            None => self.socket.finish(),
        }
    }
}

/// What one round of reading did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Nothing was ready (the socket will wake the driver).
    Nothing,
    /// Messages were read until nothing was ready.
    Some,
    /// [`MAX_READS`] messages were read; more may be ready.
    Limit,
}

/// How a failed write ends the connection.
fn lost(failed: &WriteFailed) -> Ended {
    failed.log();
    Ended::Lost
}

/// How a connection ended; its `Display` is what the client's log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The server closed it with a close frame (its code: 1001 when it shuts down).
    ServerClosed(Option<u16>),
    /// The socket failed or closed without a close frame, or a write failed or timed out.
    Lost,
    /// The server broke the protocol; the client closed the connection.
    Violation,
    /// The client is closing.
    Closing,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::ServerClosed(Some(1001)) => f.write_str("the server is going away (1001)"),
            Ended::ServerClosed(Some(code)) => write!(f, "closed by the server ({code})"),
            Ended::ServerClosed(None) => f.write_str("closed by the server"),
            Ended::Lost => f.write_str("connection lost"),
            Ended::Violation => f.write_str("closed by the client: the server broke the protocol"),
            Ended::Closing => f.write_str("closed by the client"),
        }
    }
}

/// The shortest heartbeat period: a server that announces a read timeout of a
/// millisecond (a hostile or broken one) would otherwise make the client send heartbeats
/// in a loop. Read timeouts down to a third of a second are still served; ours allows no
/// less than one second.
pub(crate) const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);

/// The client's heartbeat period for a server read timeout: 75 % of it (§1.5), but no
/// less than [`MIN_HEARTBEAT_INTERVAL`]. A zero timeout means the server has no read
/// deadline, so no heartbeats.
pub(crate) fn heartbeat_interval(read_timeout: Duration) -> Option<Duration> {
    (!read_timeout.is_zero()).then(|| (read_timeout - read_timeout / 4).max(MIN_HEARTBEAT_INTERVAL))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use futures_util::StreamExt;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::{Role as WsRole, WebSocketConfig};

    use super::*;
    use crate::client::pending::Pending;
    use crate::client::queue::FrameQueue;
    use crate::protocol::AcceptConf;
    use crate::transport::Role;

    fn shared() -> Shared {
        let config = crate::ClientBuilder::new().into_config();
        Shared::new(config)
    }

    async fn pair(
        read_timeout: Duration,
    ) -> (
        Arc<Link>,
        Socket<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (c, s) = tokio::io::duplex(4096);
        // The server is tungstenite's: our framing against another implementation.
        let config = WebSocketConfig::default().read_buffer_size(4096);
        let sws = WebSocketStream::from_raw_socket(s, WsRole::Server, Some(config)).await;
        let link = Arc::new(Link {
            generation: 1,
            queue: FrameQueue::new(64),
            conf: AcceptConf::new(read_timeout, 1 << 20),
            announced: AtomicBool::new(true),
        });
        let socket = Socket::new(
            c,
            bytes::BytesMut::new(),
            Role::Client,
            1 << 20,
            Duration::from_secs(60),
        );
        (link, socket, sws)
    }

    /// After a write that met backpressure and then drained, the client goes idle: a
    /// heartbeat is due 3 s (75 % of 4 s) after that write.
    async fn heartbeat_after_write_of(len: usize) {
        let shared = shared();
        let (link, socket, mut server) = pair(Duration::from_secs(4)).await;
        let mut driver = Driver::new(&shared, Arc::clone(&link), socket);
        let driving = std::future::poll_fn(|cx| driver.poll_drive(cx));
        let script = async {
            link.try_push(Bytes::from(vec![7u8; len])).expect("room");
            // The server does not read for a moment: the write waits.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let first = server.next().await.expect("message").expect("ok");
            assert_eq!(first.len(), len);
            tokio::time::timeout(Duration::from_secs(20), server.next()).await
        };
        tokio::select! {
            ended = driving => panic!("driver ended: {ended:?}"),
            next = script => {
                let next = next.expect("no heartbeat within 20 s of idleness (read timeout 4 s)");
                assert_eq!(&next.expect("msg").expect("ok").into_data()[..], HEARTBEAT);
            }
        }
    }

    #[test]
    fn heartbeat_at_three_quarters_of_the_read_timeout() {
        assert_eq!(
            heartbeat_interval(Duration::from_secs(60)),
            Some(Duration::from_secs(45))
        );
        assert_eq!(
            heartbeat_interval(Duration::from_millis(3_000)),
            Some(Duration::from_millis(2_250))
        );
        assert_eq!(heartbeat_interval(Duration::ZERO), None);
    }

    #[test]
    fn a_tiny_read_timeout_cannot_make_heartbeats_a_busy_loop() {
        for announced in [Duration::from_millis(1), Duration::from_nanos(1)] {
            assert_eq!(heartbeat_interval(announced), Some(MIN_HEARTBEAT_INTERVAL));
        }
        assert_eq!(
            heartbeat_interval(Duration::from_millis(400)),
            Some(Duration::from_millis(300))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_after_a_small_write() {
        heartbeat_after_write_of(100).await;
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_after_a_backpressured_write() {
        heartbeat_after_write_of(200_000).await;
    }

    /// A request queued behind a write of `len` bytes to a server that never reads times
    /// out at its deadline (1 ms late at most, per the docs), whether or not that write
    /// filled the socket.
    async fn request_times_out_behind_a_write_of(len: usize) {
        let shared = Arc::new(shared());
        let (link, socket, _server_never_reads) = pair(Duration::ZERO).await;
        // The driver on a task of its own, as in the client.
        let driver_task = {
            let (shared, link) = (Arc::clone(&shared), Arc::clone(&link));
            tokio::spawn(async move {
                let mut driver = Driver::new(&shared, link, socket);
                std::future::poll_fn(|cx| driver.poll_drive(cx)).await
            })
        };
        link.try_push(Bytes::from(vec![7u8; len])).expect("room");
        tokio::time::sleep(Duration::from_millis(10)).await;
        let after = Duration::from_millis(100);
        let deadline = shared
            .pending
            .deadline_at(Some(Instant::now() + after), after);
        let reply = shared.pending.insert(1, 1, Kind::Request, deadline);
        link.try_push(Bytes::from_static(b"request 1"))
            .expect("room");
        let out = tokio::time::timeout(Duration::from_secs(5), reply).await;
        assert!(!driver_task.is_finished());
        assert!(
            matches!(out, Ok(Err(RequestError::Timeout { .. }))),
            "100 ms request still pending after 5 s: {out:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_times_out_while_the_socket_is_full() {
        request_times_out_behind_a_write_of(200_000).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_times_out_behind_a_small_write() {
        request_times_out_behind_a_write_of(100).await;
    }

    /// A session request that never got room in the queue (so was never sent) and whose
    /// caller gave up leaves nothing behind.
    #[tokio::test(start_paused = true)]
    async fn a_session_request_dropped_while_waiting_for_room_leaves_no_entry() {
        let shared = shared();
        let link = Link {
            generation: 1,
            queue: FrameQueue::new(0),
            conf: AcceptConf::new(Duration::ZERO, 1 << 20),
            announced: AtomicBool::new(true),
        };
        let sent = tokio::time::timeout(
            Duration::from_millis(50),
            shared.send_request_on(
                &link,
                Bytes::from_static(b"close"),
                (1, Kind::CloseSession(0)),
                Pending::never(),
            ),
        )
        .await;
        assert!(sent.is_err());
        assert_eq!(
            shared.pending.len(),
            0,
            "never-sent close-session entry left behind"
        );
    }
}
