//! The client: requests, signals and server signals over one WebSocket, with reconnects
//! and sessions.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`Client`], the state shared with the background tasks |
//! | `builder.rs` | [`ClientBuilder`]: options and their defaults |
//! | `error.rs` | [`RequestError`], [`ConnectError`] |
//! | `handler.rs` | [`ClientHandler`]: server signals, connection and session events; its task |
//! | `events.rs` | the handler's queue, which never makes the driver wait; [`SignalOverflow`] |
//! | `pending.rs` | requests waiting for replies (a slab indexed by the id, each entry with its deadline and its outcome), and the future that waits for one and cleans up after it |
//! | `pipeline.rs` | [`Pipeline`]: many requests in flight from one task, with [`Ticket`]s; its own table of what is in flight, replies routed to it by their id's chunk |
//! | `queue.rs` | the queue of encoded frames from the handles to the driver: one lock per push, everything taken at once, room counted in frames |
//! | `connection.rs` | dial and handshake, a connection's life: session restore, publish, drive, close |
//! | `driver.rs` | the one task that owns a connection's socket: batched writes, replies, deadline sweep, heartbeats |
//! | `supervisor.rs` | the background task: one connection after another |
//! | `reconnect.rs` | [`Reconnect`], [`Backoff`]: the policy and its schedule |
//! | `tls.rs` | the default TLS configuration of `wss://` dials (feature `rustls`) |
//!
//! See [`Client`] for an example.

mod builder;
mod connection;
mod driver;
mod error;
mod events;
mod handler;
mod pending;
mod pipeline;
mod queue;
mod reconnect;
mod supervisor;
#[cfg(feature = "rustls")]
mod tls;
mod topics;

// The NATS backplane shows its server URLs in errors the same way.
#[cfg(feature = "nats")]
pub(crate) use builder::redact_url;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use builder::{
    ClientBuilder, DEFAULT_DIAL_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
};
pub use error::{ConnectError, RequestError};
pub use events::{DEFAULT_MAX_QUEUED_SIGNAL_BYTES, DEFAULT_MAX_QUEUED_SIGNALS, SignalOverflow};
pub use handler::ClientHandler;
pub use pipeline::{Pipeline, Ticket};
pub use reconnect::{Backoff, Reconnect};
pub use topics::{SubscribeError, Subscription, TopicEvent};

use crate::protocol::{AcceptConf, IntoName, Message, RequestId};
pub(crate) use crate::sync::lock;
use crate::{Payload, Session};
use builder::Config;
use connection::Link;
use events::Events;
use handler::Event;
use pending::{Deadline, Kind, Pending, Reply};

/// A WebWire client: sends requests and signals to one server and receives its signals.
///
/// `Client` is a cheap handle (`Clone + Send + Sync`): clone it into as many tasks as you
/// like; they share one connection, and any number of requests may be in flight at once.
/// Replies are matched to requests by an 8-byte identifier, a per-client `u64` counter
/// from 1 written little-endian, as the Go client does.
///
/// When the connection is lost, requests that were already handed to it fail with
/// [`RequestError::Disconnected`] (their reply can never come). The client then reconnects
/// per its [`Reconnect`] policy; requests and signals issued meanwhile wait for the new
/// connection up to their own timeout, or fail at once with `Disconnected` when
/// reconnecting is off (or has given up). A malformed message from the server is a
/// protocol violation: the client closes the connection (code 1002) and treats it as lost.
///
/// The server may give the connection a session ([`ClientHandler::session_created`]);
/// [`session`](Client::session) returns it, [`restore_session`](Client::restore_session)
/// and [`close_session`](Client::close_session) restore one by its key and close it. The
/// client keeps its session across reconnections: it restores it on each new connection
/// before any request may use it.
///
/// After [`close`](Client::close), or once every handle is dropped, every method fails
/// with [`RequestError::ClientClosed`] (except [`session`](Client::session)). The
/// `&Client` a [`ClientHandler`] method receives is not such a handle: a handler cannot
/// keep its client open.
///
/// One task per connection (its driver) owns the socket: it writes queued requests in
/// batches, reads and completes replies, times out requests by one sweep of their
/// deadlines (a request fails with [`RequestError::Timeout`] at most a millisecond after
/// its deadline), and sends heartbeats. It never waits for the handler.
///
/// # Cancel safety
/// [`request`](Client::request), [`request_with_timeout`](Client::request_with_timeout) and
/// [`signal`](Client::signal) may be dropped at any await point (a `select!`, a timeout of
/// your own, an aborted task): a dropped request removes its pending entry, so nothing
/// leaks, and a reply that arrives later is ignored. Dropping does not recall what was
/// already queued: the request or signal may still reach the server and be handled.
///
/// # Example
/// ```no_run
/// use std::time::Duration;
/// use tokio_webwire::{Client, Payload, RequestError};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::connect("ws://127.0.0.1:8081/").await?;
///
/// // Names and payloads from &str, String, Bytes, Payload; replies as Payload.
/// let reply = client.request("echo", "hello").await?;
/// assert_eq!(reply.to_text()?, "hello");
///
/// match client
///     .request_with_timeout("auth", Payload::binary(vec![1, 2, 3]), Duration::from_secs(2))
///     .await
/// {
///     Ok(reply) => println!("{} bytes", reply.len()),
///     Err(RequestError::Reply { code, message }) => println!("refused: {code} {message}"),
///     Err(other) => return Err(other.into()),
/// }
///
/// client.signal("ping", Payload::empty()).await?;
/// client.close().await;
/// assert_eq!(client.request("echo", "late").await, Err(RequestError::ClientClosed));
/// # Ok(()) }
/// ```
///
/// Its `Debug` output is short and holds no secret: the URL without credentials, query or
/// fragment, the connection's state, and whether there is a session (never its key):
///
/// ```no_run
/// # async fn demo() -> Result<(), tokio_webwire::ConnectError> {
/// let client = tokio_webwire::Client::connect("ws://127.0.0.1:8081/ws?token=s3cret").await?;
/// assert_eq!(
///     format!("{client:?}"),
///     r#"Client { url: "ws://127.0.0.1:8081/ws?<redacted>", state: Connected { generation: 1 }, session: false }"#,
/// );
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    /// `None` for the handle a handler gets: it does not keep the client open. Held only
    /// for its `Drop`.
    #[allow(dead_code)]
    owner: Option<Arc<Owner>>,
}

/// Held by every handle of the application; the last one dropped closes the client.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.shut_down();
    }
}

/// Where the client's connection stands, as requests and signals see it.
pub(crate) enum State {
    /// Establishing the first connection, or reconnecting: wait.
    Connecting,
    /// Connected: send through this link.
    Connected(Arc<Link>),
    /// Disconnected for good (reconnecting is off or gave up): fail with `Disconnected`.
    Down,
    /// Closed by the user: fail with `ClientClosed`.
    Closed,
}

/// What the handles and the background tasks share.
pub(crate) struct Shared {
    pub(crate) config: Config,
    next_id: AtomicU64,
    pub(crate) pending: Pending,
    /// The chunks of request ids pipelines hold: how the driver finds their replies.
    pub(crate) routes: pipeline::Routes,
    state: watch::Sender<State>,
    /// Set when the client closes: one atomic load per request and per driver wake-up.
    closed: AtomicBool,
    /// Cancelled when the client closes, for the waits that select on it (reconnecting).
    pub(crate) stop: CancellationToken,
    /// The current connection's driver, woken when the client closes.
    pub(crate) driver: AtomicWaker,
    /// The client's session, if any: changed by the driver (notifications, restore and
    /// close replies) and, while no connection is in use, by `close_session` and the
    /// restore after a reconnection. A `std` mutex, never held across an await.
    session: Mutex<SessionSlot>,
    /// Held by `restore_session`, `close_session` and the restore after a reconnection, so
    /// that they never interleave: a session closed offline is not resurrected by a restore
    /// still in flight, and a restore never starts while another one is pending.
    session_op: tokio::sync::Mutex<()>,
    /// The handler's queue. Pushing never waits.
    pub(crate) events: Events,
    /// The supervisor task, which runs the connections.
    tasks: TaskTracker,
    /// The topics subscribed through the extension, with the last position seen.
    pub(crate) topics: topics::Topics,
}

impl Shared {
    /// Makes `link` the connection requests use, unless the client is closed.
    pub(crate) fn publish(&self, link: Arc<Link>) -> bool {
        self.state.send_if_modified(|state| {
            if matches!(state, State::Closed) {
                return false;
            }
            *state = State::Connected(link);
            true
        })
    }

    /// Takes connection `generation` out of use (unless the state has moved on already).
    pub(crate) fn unpublish(&self, generation: u64) {
        let next = if self.config.reconnect.is_enabled() {
            State::Connecting
        } else {
            State::Down
        };
        self.state.send_if_modified(|state| match state {
            State::Connected(link) if link.generation == generation => {
                *state = next;
                true
            }
            _ => false,
        });
    }

    /// Moves to `next`, unless the client is closed.
    pub(crate) fn set_state(&self, next: State) {
        self.state.send_if_modified(|state| {
            if matches!(state, State::Closed) {
                return false;
            }
            *state = next;
            true
        });
    }

    /// A fresh request identifier: one counter per client, from 1.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// `count` fresh request identifiers in a row; the first is returned.
    pub(crate) fn next_ids(&self, count: u64) -> u64 {
        self.next_id.fetch_add(count, Ordering::Relaxed)
    }

    /// Fails what was handed to connection `generation` (`None`: every connection) with
    /// `error`, the pipelines' requests too. How many requests of the pending table.
    pub(crate) fn fail_generation(&self, generation: Option<u64>, error: &RequestError) -> usize {
        let failed = match generation {
            Some(generation) => self.pending.fail_generation(generation, error),
            None => {
                self.pending.fail_all(error);
                0
            }
        };
        self.routes.end(generation, error);
        failed
    }

    /// Whether the client is closed (or closing).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The state of a client that is about to connect. The handler's queue is finished
    /// by the supervisor when it ends and by the client's closing: a handler hears of a
    /// session closed offline after the last connection ended.
    pub(crate) fn new(config: Config) -> Self {
        let events = Events::new(
            config.max_queued_signals,
            config.max_queued_signal_bytes,
            config.signal_overflow,
            2,
        );
        Shared {
            config,
            next_id: AtomicU64::new(1),
            pending: Pending::default(),
            routes: pipeline::Routes::default(),
            state: watch::Sender::new(State::Connecting),
            closed: AtomicBool::new(false),
            stop: CancellationToken::new(),
            driver: AtomicWaker::new(),
            session: Mutex::new(SessionSlot::default()),
            session_op: tokio::sync::Mutex::new(()),
            events,
            tasks: TaskTracker::new(),
            topics: std::sync::Mutex::default(),
        }
    }

    /// The current session.
    pub(crate) fn session(&self) -> Option<Session> {
        lock(&self.session).current.clone()
    }

    /// The key of the current session.
    pub(crate) fn session_key(&self) -> Option<String> {
        lock(&self.session)
            .current
            .as_ref()
            .map(|session| session.key.clone())
    }

    /// Whether the client has a session.
    fn has_session(&self) -> bool {
        lock(&self.session).current.is_some()
    }

    /// A session request (restore or close) is about to be sent: its epoch, which a late
    /// reply to it must still find (see [`SessionSlot`]).
    pub(crate) fn session_request_epoch(&self) -> u64 {
        lock(&self.session).next_epoch()
    }

    /// Makes `session` the client's session and tells the handler; false if the handler's
    /// queue refused the event (a flood of session notifications).
    pub(crate) fn store_session(&self, session: Session) -> bool {
        self.store_session_if(session, None).unwrap_or(true)
    }

    /// [`store_session`](Self::store_session) for the late reply of a restore sent at
    /// `epoch` (`Some`): `None`, and nothing changed, if a newer session request or session
    /// has come since.
    pub(crate) fn store_session_if(&self, session: Session, epoch: Option<u64>) -> Option<bool> {
        let mut slot = lock(&self.session);
        if epoch.is_some_and(|epoch| epoch != slot.epoch) {
            return None;
        }
        slot.next_epoch();
        slot.current = Some(session.clone());
        // Pushed under the lock: two changes reach the handler in the order they were made.
        Some(self.events.push(Event::SessionCreated(session)))
    }

    /// Forgets the client's session and tells the handler, if there was one; false as
    /// [`store_session`](Self::store_session).
    pub(crate) fn forget_session(&self) -> bool {
        self.forget_session_if(None).unwrap_or(true)
    }

    /// [`forget_session`](Self::forget_session) for the late reply of a close sent at
    /// `epoch` (`Some`): `None`, and nothing changed, if a newer session request or session
    /// has come since.
    pub(crate) fn forget_session_if(&self, epoch: Option<u64>) -> Option<bool> {
        let mut slot = lock(&self.session);
        if epoch.is_some_and(|epoch| epoch != slot.epoch) {
            return None;
        }
        let gone = slot.current.take();
        Some(gone.is_none() || self.events.push(Event::SessionClosed))
    }

    /// Waits until no other session operation runs.
    pub(crate) async fn session_op(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.session_op.lock().await
    }

    /// Closes the client without waiting: no new work, pending requests fail, the driver
    /// writes what was queued, then a close frame.
    fn shut_down(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.stop.cancel();
        self.state.send_replace(State::Closed);
        self.fail_generation(None, &RequestError::ClientClosed);
        self.driver.wake();
        self.events.finish();
    }

    /// The connection to send through, waiting while connecting. With `stale`, a link
    /// whose queue turned out to be closed: wait until the state has moved past it.
    async fn link(&self, stale: Option<&Arc<Link>>) -> Result<Arc<Link>, RequestError> {
        let usable = |state: &State| match state {
            State::Connecting => false,
            State::Connected(link) => stale.is_none_or(|stale| !Arc::ptr_eq(link, stale)),
            State::Down | State::Closed => true,
        };
        let resolve = |state: &State| match state {
            State::Connected(link) => Ok(link.clone()),
            State::Down => Err(RequestError::Disconnected),
            State::Connecting | State::Closed => Err(RequestError::ClientClosed),
        };
        {
            // Fast path: connected, no subscription needed.
            let state = self.state.borrow();
            if usable(&state) {
                return resolve(&state);
            }
        }
        let mut changes = self.state.subscribe();
        let state = changes
            .wait_for(usable)
            .await
            .map_err(|_| RequestError::ClientClosed)?;
        resolve(&state)
    }

    fn check_open(&self) -> Result<(), RequestError> {
        if self.is_closed() {
            return Err(RequestError::ClientClosed);
        }
        Ok(())
    }

    /// Queues `frame` on the current connection without waiting, if it is connected and
    /// has room. With `request`, registers it as pending first (the entry is removed again
    /// if the frame is not queued). [`Queued::Retry`] hands the frame back for the slow
    /// path.
    fn try_queue(
        &self,
        len: usize,
        frame: Bytes,
        request: Option<(u64, Kind, Deadline, &Waker)>,
    ) -> Result<Queued<'_>, RequestError> {
        let state = self.state.borrow();
        let State::Connected(link) = &*state else {
            return Ok(Queued::Retry(frame));
        };
        link.check_size(len)?;
        let Some((id, kind, deadline, waker)) = request else {
            return Ok(match link.try_push(frame) {
                Ok(()) => Queued::Signal,
                Err((frame, _)) => Queued::Retry(frame),
            });
        };
        let reply = self
            .pending
            .insert_polled((id, link.generation, kind, deadline), waker);
        match link.try_push(frame) {
            Ok(()) => Ok(Queued::Request(reply)),
            Err((frame, _)) => {
                reply.withdraw();
                Ok(Queued::Retry(frame))
            }
        }
    }

    /// Sends request `message` and waits for its reply, over whichever connection is
    /// current, registering it as pending before its frame is queued. A plain request's
    /// entry goes when this future is dropped (timed out, cancelled); a session request's
    /// stays, so its reply still reaches the driver, which applies it.
    ///
    /// `deadline` (`None`: never) bounds the whole exchange: the wait for a connection or
    /// for room in its queue here, the wait for the reply through the driver's sweep.
    async fn exchange(
        &self,
        frame: Bytes,
        (id, kind): (u64, Kind),
        (at, after): (Option<Instant>, Duration),
    ) -> Result<Payload, RequestError> {
        let deadline = match kind {
            Kind::Request => self.pending.deadline_at(at, after),
            // A late reply must still reach the driver: no sweep for these.
            Kind::RestoreSession(_) | Kind::CloseSession(_) => Pending::never(),
        };
        // Fast path: connected, room in the queue; no await, no clone of the link.
        let len = frame.len();
        // The requester's waker goes with the entry: the reply's first poll, right below
        // in this same poll, need not look at the entry.
        let mut frame = Some(frame);
        let queued = std::future::poll_fn(|cx| {
            let frame = frame.take().unwrap_or_default();
            Poll::Ready(self.try_queue(len, frame, Some((id, kind, deadline, cx.waker()))))
        })
        .await;
        let reply = match queued? {
            Queued::Request(reply) => reply,
            Queued::Signal => return Err(RequestError::Disconnected),
            Queued::Retry(frame) => {
                // Boxed: waiting for a connection or for room needs a timer and the
                // state's subscription, which would make every request's future (and the
                // copies of it) a kilobyte larger.
                let queued = Box::pin(async move {
                    let queued = self.queue(frame, len, |link, frame| async move {
                        self.send_request_on(&link, frame, (id, kind), deadline)
                            .await
                    });
                    match at {
                        Some(at) => tokio::time::timeout_at(at, queued)
                            .await
                            .unwrap_or(Err(RequestError::Timeout { after })),
                        None => queued.await,
                    }
                });
                queued.await?
            }
        };
        // Dropped before its outcome (timed out by the caller, cancelled), the reply
        // removes the entry.
        reply.await
    }

    /// Queues signal `frame` on whichever connection is current.
    async fn send_signal(&self, frame: Bytes) -> Result<(), RequestError> {
        let len = frame.len();
        let frame = match self.try_queue(len, frame, None)? {
            Queued::Retry(frame) => frame,
            Queued::Signal | Queued::Request(_) => return Ok(()),
        };
        let after = self.config.request_timeout;
        let queued = self.queue(
            frame,
            len,
            |link, frame| async move { link.push(frame).await },
        );
        tokio::time::timeout(after, queued)
            .await
            .unwrap_or(Err(RequestError::Timeout { after }))
    }

    /// Queues `frame` on the current connection with `attempt`, which hands the frame back
    /// if the connection ended before its driver took it: nothing was sent, so the next
    /// connection is tried.
    async fn queue<T, F>(
        &self,
        mut frame: Bytes,
        len: usize,
        mut attempt: impl FnMut(Arc<Link>, Bytes) -> F,
    ) -> Result<T, RequestError>
    where
        F: Future<Output = Result<T, Bytes>>,
    {
        let mut link = self.link(None).await?;
        loop {
            link.check_size(len)?;
            match attempt(Arc::clone(&link), frame).await {
                Ok(sent) => return Ok(sent),
                Err(bytes) => frame = bytes,
            }
            link = self.link(Some(&link)).await?;
        }
    }

    /// Registers request `id` of `kind` as pending on `link` until `deadline`, then queues
    /// its frame. If the connection ended before its driver took the frame, nothing was
    /// sent: the entry is removed and the frame handed back.
    async fn send_request_on(
        &self,
        link: &Link,
        frame: Bytes,
        (id, kind): (u64, Kind),
        deadline: Deadline,
    ) -> Result<Reply<'_>, Bytes> {
        // Room first, then register and queue with no await in between: a caller that
        // gives up while waiting for room leaves no entry behind (a session request's
        // entry would otherwise wait for a reply that can never come).
        if !link.reserve().await {
            return Err(frame);
        }
        let reply = self.pending.insert(id, link.generation, kind, deadline);
        match link.push_reserved(frame) {
            Ok(()) => Ok(reply),
            Err(returned) => {
                reply.withdraw();
                Err(returned)
            }
        }
    }
}

/// The client's session and its epoch.
///
/// The epoch counts the session's changes (a session created or restored) and the session
/// requests sent (restore, close). A session request remembers the epoch it was sent at;
/// its reply is applied when the requester still waits for it (session requests never
/// overlap, so nothing newer can have been asked for) and, once the requester gave up (a
/// timeout, a dropped call), only while the epoch is the same: a late reply never replaces
/// a session that came since, nor undoes a request sent since. Forgetting the session does
/// not count: a late restore that finds no session takes its place, in step with the
/// server that restored it.
#[derive(Debug, Default)]
pub(crate) struct SessionSlot {
    current: Option<Session>,
    epoch: u64,
}

impl SessionSlot {
    /// Counts a change or a request; returns the new epoch.
    fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }
}

impl std::fmt::Debug for State {
    /// The state and the connection's generation; nothing of the link's queue.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Connecting => f.write_str("Connecting"),
            State::Connected(link) => f
                .debug_struct("Connected")
                .field("generation", &link.generation)
                .finish(),
            State::Down => f.write_str("Down"),
            State::Closed => f.write_str("Closed"),
        }
    }
}

impl std::fmt::Debug for Client {
    /// What helps reading a log: the URL without credentials, the state, whether there is
    /// a session (never its key).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = &*self.shared;
        f.debug_struct("Client")
            .field("url", &shared.config.redacted_url())
            .field("state", &*shared.state.borrow())
            .field("session", &shared.has_session())
            .finish()
    }
}

/// What [`Shared::try_queue`] did with a frame.
enum Queued<'a> {
    /// The request's frame is queued; its outcome comes through this.
    Request(Reply<'a>),
    /// The signal's frame is queued.
    Signal,
    /// Not connected, or no room: the frame, for the slow path.
    Retry(Bytes),
}

fn encode(message: &Message) -> Result<Bytes, RequestError> {
    message.encode().map_err(RequestError::InvalidMessage)
}

impl Client {
    /// A handle that does not keep the client open (the library's own tasks hold these).
    pub(crate) fn view(shared: Arc<Shared>) -> Client {
        Client {
            shared,
            owner: None,
        }
    }

    /// Connects to `url` with every option at its default (see [`ClientBuilder`]), and
    /// returns once the connection is ready for requests. Cancel safe as
    /// [`ClientBuilder::connect`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), tokio_webwire::ConnectError> {
    /// let client = tokio_webwire::Client::connect("ws://127.0.0.1:8081/").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: impl AsRef<str>) -> Result<Client, ConnectError> {
        ClientBuilder::new().connect(url).await
    }

    /// A builder for a client with options: timeouts, sub-protocol, reconnect policy,
    /// upgrade headers, a handler.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// Dials, then hands the connection to the supervisor task.
    async fn start<H: ClientHandler>(config: Config, handler: H) -> Result<Client, ConnectError> {
        let first = connection::dial(&config).await?;
        let shared = Arc::new(Shared::new(config));
        // Not tracked: a handler may close the client, and `close` waits for the tracker.
        // It ends once the queue is finished and empty.
        let view = Client {
            shared: Arc::clone(&shared),
            owner: None,
        };
        tokio::spawn(handler::run_events(handler, view));
        let mut published = shared.state.subscribe();
        shared
            .tasks
            .spawn(supervisor::supervise(Arc::clone(&shared), first));
        shared.tasks.close();
        let client = Client {
            owner: Some(Arc::new(Owner {
                shared: Arc::clone(&shared),
            })),
            shared,
        };
        // Return once the connection is in use, so `is_connected` holds from the start.
        let _ = published
            .wait_for(|state| !matches!(state, State::Connecting))
            .await;
        Ok(client)
    }

    /// Sends request `name` with `payload` and waits for the reply, for at most the
    /// client's request timeout (60 s unless configured).
    ///
    /// `name` may be empty, but not together with an empty payload. See
    /// [`request_with_timeout`](Client::request_with_timeout) for the details.
    ///
    /// Cancel safety: cancel safe in the sense of the [type's documentation](Client#cancel-safety):
    /// a dropped request leaves nothing behind, but may still reach the server.
    ///
    /// Requests in flight together share the connection's writes and reads. To keep many
    /// in flight from one task, send them through a [`Pipeline`], which hands their
    /// outcomes back as they come: no future, waker, wake-up or shared entry per request.
    /// On the load bench (4 connections × 64 in flight of 16 B, medians of 3) it took a
    /// third less client CPU per request than this method awaited in a task each or in a
    /// `FuturesUnordered`, and as much as raw tokio-tungstenite loops at 4 KiB.
    ///
    /// ```no_run
    /// # async fn demo(client: tokio_webwire::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut pipeline = client.pipeline();
    /// for i in 0..64 {
    ///     pipeline.send("echo", format!("#{i}")).await?;
    /// }
    /// while let Some((_ticket, reply)) = pipeline.next().await {
    ///     println!("{:?}", reply?.to_text());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn request(
        &self,
        name: impl IntoName,
        payload: impl Into<Payload>,
    ) -> Result<Payload, RequestError> {
        let timeout = self.shared.config.request_timeout;
        self.request_with_timeout(name, payload, timeout).await
    }

    /// Sends request `name` with `payload` and waits up to `timeout` for the reply.
    ///
    /// The timeout covers everything: waiting for a connection while reconnecting, waiting
    /// for room in the send queue, and the reply. Fails locally, sending nothing, when the
    /// name is invalid ([`RequestError::InvalidName`]), the message could not be parsed
    /// by any peer ([`RequestError::InvalidMessage`]) or is larger than the server
    /// accepts ([`RequestError::PayloadTooLarge`]). Cancel safe in the sense of the type's
    /// documentation.
    ///
    /// ```no_run
    /// # async fn demo(client: tokio_webwire::Client) {
    /// use std::time::Duration;
    /// use tokio_webwire::RequestError;
    ///
    /// let reply = client.request_with_timeout("slow", "x", Duration::from_millis(100)).await;
    /// assert!(matches!(reply, Ok(_) | Err(RequestError::Timeout { .. })));
    /// # }
    /// ```
    pub async fn request_with_timeout(
        &self,
        name: impl IntoName,
        payload: impl Into<Payload>,
        timeout: Duration,
    ) -> Result<Payload, RequestError> {
        let shared = &*self.shared;
        shared.check_open()?;
        let name = name.into_name().map_err(RequestError::InvalidName)?;
        let id = shared.next_id();
        // Encoded once, before the size check: the length is the frame's.
        let frame = encode(&Message::request(RequestId::from(id), name, payload.into()))?;
        let deadline = (Instant::now().checked_add(timeout), timeout);
        shared.exchange(frame, (id, Kind::Request), deadline).await
    }

    /// Sends signal `name` with `payload`: one-way, never answered.
    ///
    /// Returns once the signal is queued for the connection's driver, which is no proof
    /// that it reached the server. While reconnecting it waits for the connection, up to
    /// the client's request timeout ([`RequestError::Timeout`]). Fails locally like
    /// [`request`](Client::request) on invalid input, and also for a named UTF-16 signal
    /// without payload, which no parser accepts. Cancel safe: dropped before it returns,
    /// the signal was either queued or not sent at all.
    pub async fn signal(
        &self,
        name: impl IntoName,
        payload: impl Into<Payload>,
    ) -> Result<(), RequestError> {
        let shared = &*self.shared;
        shared.check_open()?;
        let name = name.into_name().map_err(RequestError::InvalidName)?;
        let frame = encode(&Message::signal(name, payload.into()))?;
        shared.send_signal(frame).await
    }

    /// Closes the client gracefully and waits until its connection is closed.
    ///
    /// Pending requests fail with [`RequestError::ClientClosed`]; signals queued before
    /// the call are still written, then a close frame (1000), and the client waits up to
    /// 1 s for the server's answer. A server that does not read holds this up for at most
    /// the [`write_timeout`](ClientBuilder::write_timeout) before the socket is dropped. Afterwards every method fails with `ClientClosed`, on every
    /// clone. Closing twice is harmless. Cancel safe: the close proceeds in the background
    /// if the returned future is dropped.
    pub async fn close(&self) {
        self.shared.shut_down();
        self.shared.tasks.wait().await;
    }

    /// The client's session (a copy), if it has one.
    ///
    /// The server creates sessions ([`ClientHandler::session_created`] tells when);
    /// [`restore_session`](Client::restore_session) restores one by its key. The session is
    /// kept while disconnected and restored automatically after a reconnection (see
    /// [`ClientBuilder::restore_session_on_reconnect`]).
    #[must_use]
    pub fn session(&self) -> Option<Session> {
        self.shared.session()
    }

    /// Restores the session stored on the server under `key` (RequestRestoreSession,
    /// PROTOCOL.md §4.4), makes it the client's session, calls
    /// [`ClientHandler::session_created`], and returns it.
    ///
    /// A client holds at most one session: while one is active the call is refused locally
    /// with [`RequestError::SessionActive`]. Otherwise it behaves like a request with the
    /// client's request timeout (waiting for a connection while reconnecting). The
    /// server's refusals: [`RequestError::SessionNotFound`] (`03`),
    /// [`RequestError::MaxSessionConnectionsReached`] (`04`),
    /// [`RequestError::SessionsDisabled`] (`05`), [`RequestError::Internal`] (`02`),
    /// [`RequestError::Shutdown`] (`01`); a reply whose JSON is not a session is
    /// [`RequestError::InvalidReply`]. On every error the local session is left as it was. An
    /// empty key is [`RequestError::InvalidMessage`], nothing sent.
    ///
    /// Cancel safe like [`request`](Client::request), with one difference: once the request
    /// left, its reply is applied even if the call was dropped or timed out, so the client
    /// stays in step with the server (a late success still becomes the client's session and
    /// fires `session_created`), unless something newer came first: a session the server
    /// created or restored since, or another restore or close sent since. A late reply
    /// never overwrites a newer session.
    ///
    /// ```no_run
    /// # async fn demo(client: tokio_webwire::Client) -> Result<(), tokio_webwire::RequestError> {
    /// use tokio_webwire::RequestError;
    ///
    /// match client.restore_session("key saved from session_created").await {
    ///     Ok(session) => println!("welcome back, {:?}", session.info.get_value("user")),
    ///     Err(RequestError::SessionNotFound) => println!("expired: log in again"),
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn restore_session(&self, key: &str) -> Result<Session, RequestError> {
        let shared = &*self.shared;
        shared.check_open()?;
        let timeout = shared.config.request_timeout;
        let restore = async {
            let _op = shared.session_op().await;
            if shared.has_session() {
                return Err(RequestError::SessionActive);
            }
            let id = shared.next_id();
            let kind = Kind::RestoreSession(shared.session_request_epoch());
            let frame = encode(&Message::RequestRestoreSession {
                id: RequestId::from(id),
                key: Bytes::copy_from_slice(key.as_bytes()),
            })?;
            let reply = shared.exchange(frame, (id, kind), (None, timeout)).await?;
            // The driver checked and stored the session already; this parse cannot fail.
            Session::from_json(&reply.data).map_err(RequestError::InvalidReply)
        };
        tokio::time::timeout(timeout, restore)
            .await
            .unwrap_or(Err(RequestError::Timeout { after: timeout }))
    }

    /// Closes the client's session (PROTOCOL.md §4.5) and calls
    /// [`ClientHandler::session_closed`]. Without a session it returns `Ok(())` at once.
    ///
    /// While connected it sends RequestCloseSession and waits for the server's
    /// confirmation (up to the client's request timeout) before it forgets the session;
    /// on an error ([`RequestError::SessionsDisabled`], [`RequestError::Shutdown`],
    /// [`RequestError::Timeout`], [`RequestError::Disconnected`], ...) the session is kept,
    /// and calling again retries. While disconnected (or reconnecting) it only forgets the
    /// session locally, as the Go client does: the server keeps it, restorable by its key.
    ///
    /// Cancel safety: cancel safe. Dropped before the request left, nothing happened; once
    /// it left, the server's confirmation is applied even if the call was dropped or timed
    /// out: a late one still forgets the session and fires `session_closed`, unless a newer
    /// session (or session request) came first, which it leaves alone.
    pub async fn close_session(&self) -> Result<(), RequestError> {
        let shared = &*self.shared;
        shared.check_open()?;
        let timeout = shared.config.request_timeout;
        let close = async {
            let _op = shared.session_op().await;
            if !shared.has_session() {
                return Ok(());
            }
            let link = match &*shared.state.borrow() {
                State::Connected(link) => Some(link.clone()),
                State::Closed => return Err(RequestError::ClientClosed),
                State::Connecting | State::Down => None,
            };
            if let Some(link) = link {
                let id = shared.next_id();
                let frame = encode(&Message::RequestCloseSession {
                    id: RequestId::from(id),
                })?;
                let kind = Kind::CloseSession(shared.session_request_epoch());
                // A session request: its reply reaches the driver even if this call is
                // dropped.
                let sent = shared
                    .send_request_on(&link, frame, (id, kind), Pending::never())
                    .await;
                if let Ok(reply) = sent {
                    // On success the driver has forgotten the session already.
                    return reply.await.map(drop);
                }
                // The connection ended before its driver took the frame: nothing was sent,
                // and the client is offline now.
            }
            if shared.is_closed() {
                return Err(RequestError::ClientClosed);
            }
            shared.forget_session();
            Ok(())
        };
        tokio::time::timeout(timeout, close)
            .await
            .unwrap_or(Err(RequestError::Timeout { after: timeout }))
    }

    /// Whether the client is connected right now.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        matches!(*self.shared.state.borrow(), State::Connected(_))
    }

    /// The server's handshake parameters (protocol version, read timeout, message size
    /// limit, sub-protocol) of the current connection, if connected.
    #[must_use]
    pub fn server_conf(&self) -> Option<AcceptConf> {
        match &*self.shared.state.borrow() {
            State::Connected(link) => Some(link.conf.clone()),
            _ => None,
        }
    }

    /// Sends request `name` with `req` as its JSON payload (UTF-8) and reads the reply's
    /// JSON as `Resp` (a UTF-16 reply is decoded first), within the client's request
    /// timeout.
    ///
    /// Fails like [`request`](Client::request), and with [`RequestError::Json`] when `req`
    /// cannot be serialised (nothing sent) or the reply is not a `Resp`. Cancel safe like
    /// [`request`](Client::request).
    ///
    /// ```no_run
    /// # async fn demo(client: tokio_webwire::Client) -> Result<(), tokio_webwire::RequestError> {
    /// #[derive(serde::Serialize)]
    /// struct Login<'a> { user: &'a str, password: &'a str }
    /// #[derive(serde::Deserialize)]
    /// struct Welcome { display_name: String }
    ///
    /// let welcome: Welcome = client
    ///     .request_json("login", &Login { user: "alice", password: "wonderland" })
    ///     .await?;
    /// println!("hello, {}", welcome.display_name);
    /// # Ok(()) }
    /// ```
    pub async fn request_json<Req, Resp>(
        &self,
        name: impl IntoName,
        req: &Req,
    ) -> Result<Resp, RequestError>
    where
        Req: serde::Serialize + ?Sized,
        Resp: serde::de::DeserializeOwned,
    {
        let json = |err: serde_json::Error| RequestError::Json {
            reason: err.to_string(),
        };
        let payload = Payload::json(req).map_err(json)?;
        let reply = self.request(name, payload).await?;
        reply.parse_json().map_err(json)
    }

    /// Sends the contract request `request` ([`contract::Request`](crate::contract::Request))
    /// and reads its reply as the contract's reply type: the server's
    /// [`Router::on`](crate::router::Router::on) route and this call are checked against the
    /// same definition. An error reply is [`RequestError::Reply`], a reply that is not the
    /// reply type's JSON [`RequestError::Json`].
    ///
    /// ```no_run
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Login { user: String }
    /// # #[derive(Serialize, Deserialize)] struct Welcome { visits: usize }
    /// # impl tokio_webwire::contract::Request for Login {
    /// #     const NAME: &'static str = "login"; type Reply = Welcome; }
    /// # async fn demo(client: tokio_webwire::Client) -> Result<(), tokio_webwire::RequestError> {
    /// let welcome: Welcome = client.call(Login { user: "alice".into() }).await?;
    /// println!("visit number {}", welcome.visits);
    /// # Ok(()) }
    /// ```
    pub async fn call<R: crate::contract::Request>(
        &self,
        request: R,
    ) -> Result<R::Reply, RequestError> {
        self.request_json(R::NAME, &request).await
    }

    /// Sends the contract signal `signal` ([`contract::Signal`](crate::contract::Signal)) as
    /// UTF-8 JSON.
    ///
    /// ```no_run
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Typing { user: String }
    /// # impl tokio_webwire::contract::Signal for Typing { const NAME: &'static str = "typing"; }
    /// # async fn demo(client: tokio_webwire::Client) -> Result<(), tokio_webwire::RequestError> {
    /// client.emit(&Typing { user: "alice".into() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn emit<G: crate::contract::Signal>(&self, signal: &G) -> Result<(), RequestError> {
        let payload = Payload::json(signal).map_err(|err| RequestError::Json {
            reason: err.to_string(),
        })?;
        self.signal(G::NAME, payload).await
    }

    /// How many server signals were dropped because the handler fell behind (see
    /// [`ClientBuilder::max_queued_signals`] and [`SignalOverflow`]), over the client's
    /// life.
    #[must_use]
    pub fn dropped_signals(&self) -> u64 {
        self.shared.events.dropped()
    }

    /// The number of requests waiting for a reply. A test hook, not a stable API.
    #[doc(hidden)]
    #[must_use]
    pub fn pending_requests(&self) -> usize {
        self.shared.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn client_is_clone_send_sync() {
        assert_send_sync::<Client>();
    }
}
