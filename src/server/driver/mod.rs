//! A connection's driver: the one task that owns its socket, from the handshake to the
//! `disconnected` hook.
//!
//! ```text
//!          ┌──────────────────────── driver task (owns the Socket) ───────────────────────┐
//! socket ─►│ read ─► parse ─► Job ─► polled once here ── Ready ─► reply fed to the socket ─┼─► socket
//!          │                            └─ Pending: own task, one permit ─► Done(reply) ─┐   │
//!          │ outbox ◄─ Connection::signal, session notifications (bounded by room) ◄───┘   │
//!          │   └─► fed to the socket while it has room; flushed once nothing is ready       │
//!          └───────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The driver reads only while the socket has room for a reply and a handler permit is
//! free, so a client that does not read, or one that floods slow requests, stops being
//! read (backpressure without a queue); one that stays so for the write timeout is dropped.
//! It handles at most [`MAX_READS`] messages between two flushes and yields after
//! [`MAX_ROUNDS`] rounds, so one busy connection cannot starve the others of its worker.
//!
//! The `connected` hook runs inside the same poll loop: while it runs, the driver writes
//! what the outbox holds (the hook's own signals, publishes to topics it subscribed to,
//! session notifications), reads (heartbeats, pings, a close), enforces the read and write
//! timeouts, and holds the jobs it reads, at most `max_concurrent_requests` of them, until
//! the hook returns; they are dispatched in their order then. Beyond that it stops reading,
//! as it does when every handler permit is taken.
//!
//! Over 600 lines (636): the poll loop of one connection, one type whose steps share its
//! state; the closing and a job's first poll are in the files beside it.

mod close;
mod launch;

use launch::{Launcher, Started};

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::protocol::Message;
use crate::server::connection::{Connection, Peer};
use crate::server::job::{self, Completion, Job, encode_special};
use crate::server::metrics::{ProtocolErrorKind, Tally};
use crate::server::outbox::{Outbound, Outbox, taken_one};
use crate::server::panic::catch_panic;
use crate::server::{CloseReason, Handler, Live, Place, Shared};
use crate::transport::{
    Incoming, MAX_READS, Role, Round, Socket, WriteFailed, close_frame, feed_while_room, rounds,
};

/// The read timeout is checked this many times per timeout: an idle connection is closed
/// between `T` and `T + T/10` after its last message, for one timer per connection instead
/// of a clock read and a timer update per message.
const READ_TIMEOUT_TICKS: u32 = 10;

/// Serves one upgraded connection until it is closed, then runs the `disconnected` hook.
///
/// `place` is the connection's place among the server's `max_connections`, held until the
/// socket is closed (handlers that still run then do not keep it: see
/// [`Driver::close`]).
///
/// Not an `async fn`: everything is set up before the future is made, so the future holds
/// the boxed driver and a few handles, not the WebSocket a second time, and the phases
/// that run once (greeting, closing, the `disconnected` hook) are boxed while they run.
/// An idle connection is mostly this task and its driver, so their size is what an idle
/// connection costs.
pub(crate) fn serve<H, S>(
    shared: Arc<Shared<H>>,
    (io, read): (S, BytesMut),
    peer: Peer,
    place: Place,
) -> impl Future<Output = ()> + Send
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = shared.next_connection_id();
    // An address is shown as itself (no `Some(..)`), and left out when there is none.
    let remote = peer.remote_addr.map(tracing::field::display);
    let span = tracing::info_span!("connection", id, remote);
    let config = &shared.config;
    let conn = Connection::new(
        id,
        peer,
        config.max_message_size,
        // The outbound room in bytes: the same bound as `outbound_queue_len` messages of
        // the largest size, deeper for small ones.
        config
            .outbound_queue_len
            .saturating_mul(config.max_message_size),
        Arc::clone(&shared.hub),
        Arc::clone(&shared.sessions),
    );
    let cx = Arc::new(job::Context {
        shared: Arc::clone(&shared),
        conn: conn.clone(),
    });
    let socket = Socket::new(
        io,
        read,
        Role::Server,
        config.max_message_size,
        config.write_timeout,
    )
    .batch(config.write_batch_size);
    let mut driver = Box::new(driver(cx, socket, job::run::<H>));
    async move {
        shared.live.register(&conn);
        // From here on, however this task ends (a panic in the driver or in a stream of
        // the application's, the runtime dropping it), the connection leaves its topics,
        // its session registration and the live registry.
        let departure = Departure {
            conn: &conn,
            live: &shared.live,
            armed: true,
        };
        tracing::debug!("connected");
        let reason = match Box::pin(driver.greet()).await {
            Some(reason) => reason,
            None => {
                // Boxed while it runs (most hooks finish in their first poll), so an idle
                // connection does not carry the hook's future.
                let hook = catch_panic(shared.handler.connected(&conn));
                let mut hook = Some(Box::pin(hook));
                let reason = poll_fn(|cx| driver.poll_with_hook(&mut hook, cx)).await;
                // A hook still running when the connection closes is cut short.
                drop(hook);
                reason
            }
        };
        tracing::debug!(%reason, "closing");
        Box::pin(driver.close(&reason, place)).await;
        drop(driver);
        Box::pin(departure.depart()).await;
        Box::pin(disconnected(&shared, &conn, &reason)).await;
        tracing::debug!(%reason, "disconnected");
    }
    .instrument(span)
}

/// What a connection leaves behind in the server: its subscriptions, its session
/// registration and its entry among the live connections. Left on the way out
/// ([`depart`](Self::depart)), or when dropped before that: one guard, so that a connection
/// task that panics or is dropped leaves nothing behind either.
struct Departure<'a> {
    conn: &'a Connection,
    live: &'a Live,
    armed: bool,
}

impl Departure<'_> {
    /// Leaves, after the session operations that still run on the connection (a handler
    /// that stopped mid-way leaves the session lock to the next).
    async fn depart(mut self) {
        self.conn.leave_topics();
        self.conn.sessions().disconnect(self.conn).await;
        self.live.deregister(self.conn);
        self.armed = false;
    }
}

impl Drop for Departure<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Without waiting for the session lock: a task that panicked cannot wait.
            self.conn.leave_topics();
            self.conn.sessions().disconnect_now(self.conn);
            self.live.deregister(self.conn);
        }
    }
}

/// Runs the `disconnected` hook. It always runs; one that hangs is stopped a shutdown
/// timeout after the shutdown deadline (or after it started, if later), so it cannot hold
/// a shutdown up for ever.
async fn disconnected<H: Handler>(shared: &Shared<H>, conn: &Connection, reason: &CloseReason) {
    let give_up = async {
        shared.stop_handlers.cancelled().await;
        tokio::time::sleep(shared.config.shutdown_timeout).await;
    };
    tokio::select! {
        biased;
        outcome = catch_panic(async { shared.handler.disconnected(conn, reason).await }) => {
            if let Err(panic) = outcome {
                tracing::error!(panic, "the disconnected hook panicked");
            }
        }
        () = give_up => {
            tracing::warn!("disconnected hook stopped: it outlived the shutdown deadline");
        }
    }
}

/// The driver of a connection. `start` is [`job::run`]: passed as a value, its type (a
/// function item, not a pointer) and that of its future are inferred, and every job is
/// started with a static call.
fn driver<H: Handler, S, M, F>(
    cx: Arc<job::Context<H>>,
    socket: Socket<S>,
    start: M,
) -> Driver<H, S, M, F>
where
    M: Fn(Arc<job::Context<H>>, Job) -> F,
{
    let config = &cx.shared.config;
    let tick = config.read_timeout / READ_TIMEOUT_TICKS;
    let mut ticker = tokio::time::interval_at(Instant::now() + tick, tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    Driver {
        max_running: config.max_concurrent_requests,
        socket: Some(socket),
        taken: VecDeque::new(),
        running: 0,
        jobs: Launcher { start, spare: None },
        waker: None,
        ticker,
        heard: false,
        silent_ticks: 0,
        violation: None,
        tally: Tally::default(),
        greeting: true,
        held: VecDeque::new(),
        abandon: None,
        cx,
    }
}

/// The state of one connection's driver. `M` starts a job ([`job::run`]), `F` is its future.
pub(super) struct Driver<H, S, M, F> {
    cx: Arc<job::Context<H>>,
    /// `None` once the closing handshake took it.
    socket: Option<Socket<S>>,
    /// Taken from the outbox, not yet written (the socket had no room).
    taken: VecDeque<Outbound>,
    /// Jobs running on tasks of their own, each holding a permit until its `Done` arrives.
    running: usize,
    max_running: usize,
    jobs: Launcher<M, F>,
    /// The waker last given to the connection (registered again only when it changes).
    waker: Option<Waker>,
    /// Checks the read timeout, [`READ_TIMEOUT_TICKS`] times per timeout.
    ticker: Interval,
    /// A message arrived since the last tick.
    heard: bool,
    silent_ticks: u32,
    /// The close frame for a protocol violation.
    violation: Option<CloseFrame>,
    /// What was counted for the metrics since the last flush (nothing without the
    /// `metrics` feature).
    tally: Tally,
    /// The `connected` hook is still running: jobs read meanwhile are held.
    greeting: bool,
    /// Jobs read while the `connected` hook ran, in their order; with the running ones at
    /// most `max_running`.
    held: VecDeque<Job>,
    /// Stops the jobs of this connection that run on tasks of their own, once its client
    /// has been gone for the abandoned-handler timeout (a child of the server's
    /// `stop_handlers`, so the shutdown deadline stops them too). Made with the first such
    /// job.
    abandon: Option<CancellationToken>,
}

/// The next item of a connection's outbox: what was taken before, or what is queued now.
fn next_outbound(
    taken: &mut VecDeque<Outbound>,
    outbox: &Outbox,
    cx: &mut Context<'_>,
) -> Poll<Outbound> {
    if taken.is_empty() {
        std::task::ready!(outbox.poll_take(taken, cx));
    }
    taken_one(taken).map_or(Poll::Pending, Poll::Ready)
}

/// Accounts for what came out of a connection's outbox (a signal's room given back, a
/// handler's permit given back, its reply counted); returns the frame to write, if any.
fn take(
    outbound: Outbound,
    running: &mut usize,
    conn: &Connection,
    tally: &mut Tally,
) -> Option<Bytes> {
    match outbound {
        Outbound::Metered(frame) => {
            conn.signal_written(&frame);
            Some(frame)
        }
        // Counted when it finished (`Driver::reply`).
        Outbound::Unmetered(frame) => Some(frame),
        Outbound::Done(reply) => {
            debug_assert!(*running > 0, "a Done without a running job");
            *running = running.saturating_sub(1);
            tally.handler_done();
            if let Some(reply) = &reply {
                tally.replied(reply);
            }
            reply
        }
    }
}

/// What ended a connection's writes.
fn write_failed(failed: &WriteFailed) -> CloseReason {
    failed.log();
    match failed {
        WriteFailed::TimedOut => CloseReason::WriteTimeout,
        WriteFailed::Failed(_) => CloseReason::ConnectionLost,
    }
}

impl<H, S, M, F> Driver<H, S, M, F>
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Unpin,
    M: Fn(Arc<job::Context<H>>, Job) -> F,
    F: Future<Output = Option<Bytes>> + Send + 'static,
{
    /// Sends the handshake; `Some` if the connection has to close already.
    async fn greet(&mut self) -> Option<CloseReason> {
        let shared = &self.cx.shared;
        let socket = self.socket.as_mut()?;
        self.tally.sent(&shared.config.accept_conf);
        let greeted = match socket.feed(shared.config.accept_conf.clone()) {
            Ok(()) => poll_fn(|cx| socket.poll_flush(cx)).await,
            Err(failed) => Err(failed),
        };
        greeted.err().map(|failed| write_failed(&failed))
    }

    /// Drives the connection while the `connected` hook (`hook`, until it is done) runs:
    /// its signals are written, the client is read and its jobs held, timeouts are
    /// enforced. Once the hook is done the held jobs are dispatched.
    fn poll_with_hook<C>(
        &mut self,
        hook: &mut Option<Pin<Box<C>>>,
        cx: &mut Context<'_>,
    ) -> Poll<CloseReason>
    where
        C: Future<Output = Result<(), String>>,
    {
        if let Some(running) = hook {
            match running.as_mut().poll(cx) {
                Poll::Ready(outcome) => {
                    *hook = None;
                    self.greeting = false;
                    if let Err(panic) = outcome {
                        tracing::error!(panic, "the connected hook panicked");
                        return Poll::Ready(CloseReason::HookFailed);
                    }
                }
                Poll::Pending => {}
            }
        }
        self.poll_drive(cx)
    }

    /// Drives the connection until it has to close, and says why.
    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        // Registering is an atomic read-modify-write; the task's waker rarely changes.
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.cx.conn.register_driver(cx.waker());
            self.waker = Some(cx.waker().clone());
        }
        let busy = rounds(|| {
            if let Some(reason) = self.cx.conn.closing_reason() {
                return Err(reason);
            }
            let progress = self.poll_round(cx)?;
            let probed = self.poll_read_timeout(cx)?;
            Ok(if progress || probed {
                Round::Progress
            } else {
                Round::Idle
            })
        });
        match busy {
            Err(reason) => Poll::Ready(reason),
            Ok(busy) => {
                if busy {
                    // Let the worker's other tasks run, and come back.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }

    /// One round: write what the outbox holds, read and handle what arrived, flush.
    /// Whether anything happened.
    fn poll_round(&mut self, cx: &mut Context<'_>) -> Result<bool, CloseReason> {
        // The outbox first: replies of finished handlers give permits back for reading.
        let (mut progress, _) = self
            .feed_outbox(cx)
            .map_err(|failed| write_failed(&failed))?;
        let mut reads = 0;
        // Reading stops while replies wait in `taken` (they are written first, each only
        // when the socket has room) and once the connection is closing.
        while reads < MAX_READS && self.taken.is_empty() && !self.cx.conn.is_closed() {
            // Jobs held while the `connected` hook ran go first, once it is done.
            let held = !self.greeting && !self.held.is_empty();
            if !held && self.running + self.held.len() >= self.max_running {
                break;
            }
            let socket = self.socket.as_mut().ok_or(CloseReason::ConnectionLost)?;
            match socket.poll_room(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(failed)) => return Err(write_failed(&failed)),
                Poll::Pending => break,
            }
            if held {
                if let Some(job) = self.held.pop_front() {
                    progress = true;
                    reads += 1;
                    self.dispatch(job)?;
                }
                continue;
            }
            let Poll::Ready(incoming) = socket.poll_read(cx) else {
                break;
            };
            progress = true;
            reads += 1;
            self.heard = true;
            self.on_incoming(incoming)?;
        }
        // Counted before the replies leave: whoever got a reply finds it counted.
        self.tally.flush(&self.cx.shared.metrics);
        let socket = self.socket.as_mut().ok_or(CloseReason::ConnectionLost)?;
        if let Poll::Ready(Err(failed)) = socket.poll_flush(cx) {
            return Err(write_failed(&failed));
        }
        Ok(progress)
    }

    /// Acts on one item read from the socket; `Err` when the connection has to close.
    fn on_incoming(&mut self, incoming: Incoming) -> Result<(), CloseReason> {
        let max = self.cx.shared.config.max_message_size;
        if let Incoming::Frame(frame) = &incoming {
            self.tally.received(frame);
        }
        match incoming {
            // A headless WebSocket may have been configured with a larger limit.
            Incoming::Frame(frame) if frame.len() > max => {
                let why = format!("{} bytes over the limit", frame.len());
                let kind = ProtocolErrorKind::MessageTooLarge;
                Err(self.violation(kind, CloseCode::Size, "message exceeds the size limit", why))
            }
            Incoming::Frame(frame) => match Message::parse(frame) {
                Ok(Message::Heartbeat) => Ok(()),
                Ok(message) => match Job::from_message(message) {
                    Some(job) => self.dispatch(job),
                    // A type only servers send: ignored, but counted.
                    None => {
                        let unexpected = ProtocolErrorKind::UnexpectedMessage;
                        self.cx.shared.metrics.protocol_error(unexpected);
                        Ok(())
                    }
                },
                Err(error) => {
                    let why = error.to_string();
                    let kind = ProtocolErrorKind::MalformedMessage;
                    Err(self.violation(kind, CloseCode::Protocol, "malformed message", why))
                }
            },
            Incoming::Alive => Ok(()),
            Incoming::Closed(frame) => {
                tracing::debug!(?frame, "closed by the client");
                self.tally
                    .client_closed(frame.as_ref().map(|frame| frame.code.into()));
                Err(CloseReason::ClientClosed)
            }
            Incoming::Violation(code, reason) => {
                let kind = ProtocolErrorKind::of_websocket(code);
                Err(self.violation(kind, code, reason, reason.to_owned()))
            }
            Incoming::Gone => Err(CloseReason::ConnectionLost),
        }
    }

    fn violation(
        &mut self,
        kind: ProtocolErrorKind,
        code: CloseCode,
        reason: &'static str,
        why: String,
    ) -> CloseReason {
        tracing::debug!(%why, ?code, "protocol violation");
        self.cx.shared.metrics.protocol_error(kind);
        self.violation = Some(close_frame(code, reason));
        CloseReason::ProtocolViolation(why)
    }

    /// Starts a job: polled once here; finished, its reply is written at once; waiting,
    /// it moves to a task of its own with one of the connection's permits.
    fn dispatch(&mut self, job: Job) -> Result<(), CloseReason> {
        let request = job.request_id();
        if self.cx.shared.is_shutting_down() {
            return match request {
                Some(id) => self.reply(encode_special(Message::ReplyShutdown { id })),
                None => {
                    tracing::debug!("signal dropped: shutting down");
                    Ok(())
                }
            };
        }
        if self.greeting {
            self.held.push_back(job);
            return Ok(());
        }
        if request.is_none() {
            self.tally.signal_received();
        }
        let span = job.span();
        match self.jobs.start(&self.cx, job, &span) {
            Started::Done(Some(reply)) => self.reply(reply),
            Started::Done(None) => Ok(()),
            Started::Waiting(mut future) => {
                self.running += 1;
                self.tally.handler_started();
                let completion = Completion::new(self.cx.conn.clone(), request);
                let shutdown = &self.cx.shared.stop_handlers;
                let stop = self
                    .abandon
                    .get_or_insert_with(|| shutdown.child_token())
                    .clone();
                self.cx.shared.handlers.spawn(
                    async move {
                        let handling = poll_fn(|cx| match future.as_mut().as_pin_mut() {
                            Some(running) => {
                                let polled = job::poll_job(running, cx, request);
                                if polled.is_ready() {
                                    // Finished (or panicked): never polled again.
                                    future.set(None);
                                }
                                polled
                            }
                            None => Poll::Ready(None),
                        });
                        tokio::select! {
                            biased;
                            reply = handling => completion.complete(reply),
                            () = stop.cancelled() => {
                                tracing::warn!("handler stopped: its client is gone, or the shutdown deadline passed");
                                // Dropped, the completion sends the shutdown reply.
                                drop(completion);
                            }
                        }
                    }
                    .instrument(span),
                );
                Ok(())
            }
        }
    }

    /// Writes the reply of a job that finished at once, unless frames queued before it
    /// (a session-created notification of its own handler, say) must go first.
    fn reply(&mut self, frame: Bytes) -> Result<(), CloseReason> {
        self.tally.replied(&frame);
        if !self.taken.is_empty() || self.cx.conn.outbox().has_queued() {
            self.cx.conn.outbox().take(&mut self.taken);
            self.taken.push_back(Outbound::Unmetered(frame));
            return Ok(());
        }
        let socket = self.socket.as_mut().ok_or(CloseReason::ConnectionLost)?;
        self.tally.sent(&frame);
        socket.feed(frame).map_err(|failed| write_failed(&failed))
    }

    /// Checks the read timeout: `Err` once no message came for [`READ_TIMEOUT_TICKS`]
    /// ticks. Time spent not reading (all permits taken, or no room to write) is not the
    /// client's silence; but a client that left while every permit was taken would never be
    /// read again, so each tick spent so sends it a ping: once it is gone, a write fails
    /// (the second ping at the latest, after its reset) and the connection ends as lost,
    /// within two ticks. `Ok(true)` when a ping waits to be flushed.
    fn poll_read_timeout(&mut self, cx: &mut Context<'_>) -> Result<bool, CloseReason> {
        let mut probed = false;
        while self.ticker.poll_tick(cx).is_ready() {
            let busy = self.running + self.held.len() >= self.max_running;
            let unflushed = self.socket.as_ref().is_some_and(Socket::is_unflushed);
            if busy && !unflushed && !self.heard {
                if let Some(socket) = self.socket.as_mut() {
                    if let Poll::Ready(room) = socket.poll_room(cx) {
                        room.and_then(|()| socket.probe())
                            .map_err(|failed| write_failed(&failed))?;
                        probed = true;
                    }
                }
            }
            if self.heard || busy || unflushed {
                self.heard = false;
                self.silent_ticks = 0;
            } else {
                self.silent_ticks += 1;
                if self.silent_ticks >= READ_TIMEOUT_TICKS {
                    return Err(CloseReason::ReadTimeout);
                }
            }
        }
        Ok(probed)
    }

    /// Feeds what the outbox holds while the socket has room. Says whether it fed anything,
    /// and whether it stopped because the outbox is empty (`Ready`) or because the socket
    /// has no room (`Pending`); either way a waker is registered for what it waits on.
    fn feed_outbox(&mut self, cx: &mut Context<'_>) -> Result<(bool, Poll<()>), WriteFailed> {
        let Some(socket) = self.socket.as_mut() else {
            return Ok((false, Poll::Ready(())));
        };
        let (taken, running, conn, tally) = (
            &mut self.taken,
            &mut self.running,
            &self.cx.conn,
            &mut self.tally,
        );
        let fed = feed_while_room(socket, cx, |cx| {
            let outbound = std::task::ready!(next_outbound(taken, conn.outbox(), cx));
            let frame = take(outbound, running, conn, tally);
            if let Some(frame) = &frame {
                tally.sent(frame);
            }
            Poll::Ready(frame)
        })?;
        let stopped = if fed.full {
            Poll::Pending
        } else {
            Poll::Ready(())
        };
        Ok((fed.taken > 0, stopped))
    }
}
