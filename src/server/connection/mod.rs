//! [`Connection`]: the handle to one client connection that every hook receives.

mod session;
mod topics;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore, SemaphorePermit, TryAcquireError};
use tokio_tungstenite::tungstenite::http::Extensions;

use crate::payload::Payload;
use crate::protocol::IntoName;
use crate::protocol::topics::{Position, Subscribed};
use crate::server::close::CloseReason;
use crate::server::fanout::{Hub, Subscriptions, TopicError};
use crate::server::outbox::{Outbound, Outbox, SendError, encode_signal};
use crate::server::sessions::Sessions;
use crate::session::{Session, SessionError, SessionInfo};
use crate::sync;
use crate::transport::Closing;

/// One client connection, as the server's hooks see it.
///
/// Cheap to clone (a reference count) and usable from any task, also after the hook that
/// received it has returned: store it to push signals later (pub-sub). Once the connection
/// is closed every send fails with [`SendError::Closed`].
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    remote_addr: Option<SocketAddr>,
    user_agent: Option<Box<str>>,
    /// What `before_upgrade` attached.
    attached: Extensions,
    /// The connection negotiated the topics extension (`docs/topics.md`).
    topics_extension: bool,
    connected_at: SystemTime,
    max_message_size: usize,
    /// To the driver. Bounded by its users: signals hold a permit of `room`, and each
    /// handler permit sends one `Done`.
    outbox: Outbox,
    /// Room for signals and notifications in the outbox, in bytes
    /// (`outbound_queue_len` × `max_message_size`): each queued frame holds its length
    /// plus [`QUEUED_FRAME_COST`] permits until the driver writes it, so a queue of small
    /// signals (publishes of a few hundred bytes) is deep and the memory it can hold is
    /// what the formula says whatever their sizes. Closed when the connection begins to
    /// close, which fails every waiting sender.
    room: Semaphore,
    /// Raised when the connection begins to close, for whatever reason: sends fail from
    /// then on; the driver is woken, so that [`Connection::close`] from any task reaches it.
    closing: Closing,
    /// Wakes [`Connection::closed`] waiters (the driver reads `closing`).
    closed: Notify,
    /// Why the connection closes, once it does.
    close_reason: Mutex<Option<CloseReason>>,
    /// The server's topics.
    hub: Arc<Hub>,
    /// The server's sessions.
    sessions: Arc<Sessions>,
    /// The topics this connection subscribes to.
    subscriptions: Mutex<Subscriptions>,
    /// The session this connection holds.
    session: Mutex<Option<Session>>,
    /// Serialises this connection's session operations (held across their awaits).
    session_op: tokio::sync::Mutex<()>,
}

/// What the server knows about a connection before it starts: the parts of
/// [`Connection`] that come from the accepted socket and the upgrade request.
#[derive(Debug, Default, Clone)]
pub(crate) struct Peer {
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) user_agent: Option<Box<str>>,
    /// What `before_upgrade` attached ([`UpgradeRequest::attach`](crate::server::UpgradeRequest::attach)).
    pub(crate) attached: Extensions,
    /// The upgrade selected the topics extension's sub-protocol.
    pub(crate) topics_extension: bool,
}

impl Connection {
    pub(crate) fn new(
        id: u64,
        peer: Peer,
        max_message_size: usize,
        room: usize,
        hub: Arc<Hub>,
        sessions: Arc<Sessions>,
    ) -> Self {
        Connection {
            inner: Arc::new(Inner {
                id,
                remote_addr: peer.remote_addr,
                user_agent: peer.user_agent,
                attached: peer.attached,
                topics_extension: peer.topics_extension,
                connected_at: SystemTime::now(),
                max_message_size,
                outbox: Outbox::default(),
                room: Semaphore::new(room),
                closing: Closing::default(),
                closed: Notify::new(),
                close_reason: Mutex::new(None),
                hub,
                sessions,
                subscriptions: Mutex::new(Subscriptions::default()),
                session: Mutex::new(None),
                session_op: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// A number that identifies this connection among the server's connections, as in its
    /// log lines.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The client's address, when the transport has one.
    #[must_use]
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr
    }

    /// The `User-Agent` header of the upgrade request, when there was one.
    #[must_use]
    pub fn user_agent(&self) -> Option<&str> {
        self.inner.user_agent.as_deref()
    }

    /// The value of type `T` that [`Handler::before_upgrade`](crate::server::Handler::before_upgrade)
    /// attached to this connection ([`UpgradeRequest::attach`](crate::server::UpgradeRequest::attach)),
    /// if it attached one: the user it authenticated, say. Fixed once the connection is
    /// upgraded; for state that changes, attach an `Arc` of a lock or of atomics.
    ///
    /// ```no_run
    /// # fn f(conn: tokio_webwire::server::Connection) {
    /// #[derive(Clone)]
    /// struct User(String);
    ///
    /// let name = conn.get::<User>().map_or("anonymous", |user| user.0.as_str());
    /// # }
    /// ```
    #[must_use]
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.inner.attached.get::<T>()
    }

    /// Everything [`Handler::before_upgrade`](crate::server::Handler::before_upgrade)
    /// attached to this connection (see [`get`](Self::get)): the counterpart of
    /// [`UpgradeRequest::attached`](crate::server::UpgradeRequest::attached), not the HTTP
    /// request's extensions (those are
    /// [`UpgradeRequest::extensions`](crate::server::UpgradeRequest::extensions), seen
    /// by the hook only).
    ///
    /// ```no_run
    /// # fn f(conn: tokio_webwire::server::Connection) {
    /// if conn.attached().is_empty() {
    ///     println!("connection {}: nothing attached", conn.id());
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn attached(&self) -> &Extensions {
        &self.inner.attached
    }

    /// When the connection was established.
    #[must_use]
    pub fn connected_at(&self) -> SystemTime {
        self.inner.connected_at
    }

    /// Whether the connection is closed for sending: it began to close, for whatever
    /// reason, and every send fails from now on. "Closed" means this throughout, as for
    /// tokio's channels ([`Sender::is_closed`](tokio::sync::mpsc::Sender::is_closed)): the
    /// driver may still be writing replies and handlers may still run;
    /// [`Handler::disconnected`](crate::server::Handler::disconnected) is called once the
    /// connection has ended.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner.closing.is_raised()
    }

    /// Waits until the connection is closed for sending ([`is_closed`](Self::is_closed)),
    /// for whatever reason: for a task that serves one connection (a subscription, a
    /// stream of updates) to know when to stop. It resolves when closing begins, before the
    /// connection's last replies are written and while its handlers may still run.
    ///
    /// Cancel safe: dropping the future changes nothing.
    pub async fn closed(&self) {
        let notified = self.inner.closed.notified();
        tokio::pin!(notified);
        // Registered before the flag is read: a close in between still wakes us.
        notified.as_mut().enable();
        if !self.is_closed() {
            notified.await;
        }
    }

    /// Sends a signal to the client, waiting while the outbound queue is full. Fails with
    /// [`SendError::Closed`] once the connection is closing ([`is_closed`](Self::is_closed)).
    ///
    /// `name` is a [`Name`](crate::protocol::Name) or text ([`IntoName`]);
    /// `payload` anything that converts into a [`Payload`]. The signal is checked before
    /// it is queued: a signal the client would reject, or one over the message size limit,
    /// is refused with an error and nothing is sent.
    ///
    /// Cancel safety: dropping the future before it completes sends nothing.
    ///
    /// ```no_run
    /// # async fn f(conn: tokio_webwire::server::Connection) -> Result<(), tokio_webwire::server::SendError> {
    /// use tokio_webwire::Payload;
    /// conn.signal("news", Payload::utf8("tokio-webwire released")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn signal(
        &self,
        name: impl IntoName,
        payload: impl Into<Payload>,
    ) -> Result<(), SendError> {
        let frame = self.signal_frame(name, payload.into())?;
        self.send(frame).await
    }

    /// Sends the contract signal `signal` ([`contract::Signal`](crate::contract::Signal))
    /// as UTF-8 JSON, waiting for room as [`signal`](Self::signal) does; a client reads it
    /// with [`Signal::read`](crate::contract::Signal::read).
    ///
    /// ```no_run
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Typing { user: String }
    /// # impl tokio_webwire::contract::Signal for Typing { const NAME: &'static str = "typing"; }
    /// # async fn f(conn: tokio_webwire::server::Connection) -> Result<(), tokio_webwire::server::SendError> {
    /// conn.emit(&Typing { user: "bob".into() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn emit<G: crate::contract::Signal>(&self, signal: &G) -> Result<(), SendError> {
        let payload = Payload::json(signal).map_err(|error| SendError::Json {
            reason: error.to_string(),
        })?;
        self.signal(G::NAME, payload).await
    }

    /// Like [`signal`](Self::signal), but fails at once with [`SendError::QueueFull`]
    /// instead of waiting for room in the outbound queue: for broadcasting to many
    /// connections, where one slow client must not hold up the others. Not async, so it
    /// can be called under a lock.
    ///
    /// ```
    /// use std::collections::HashSet;
    /// use tokio_webwire::Payload;
    /// use tokio_webwire::server::{Connection, SendError};
    ///
    /// /// Sends `text` to every subscriber, forgetting those whose connection is closed;
    /// /// a subscriber with a full queue misses this one message.
    /// fn broadcast(subscribers: &mut HashSet<Connection>, text: &str) {
    ///     let payload = Payload::utf8(text);
    ///     subscribers.retain(|conn| {
    ///         !matches!(conn.try_signal("news", payload.clone()), Err(SendError::Closed))
    ///     });
    /// }
    /// # broadcast(&mut HashSet::new(), "hi");
    /// ```
    ///
    /// Each call checks and encodes the signal anew; a broadcast to `n` connections encodes
    /// it `n` times. Topics ([`subscribe`](Self::subscribe), [`publish`](Self::publish))
    /// encode it once, and reach other servers too.
    pub fn try_signal(
        &self,
        name: impl IntoName,
        payload: impl Into<Payload>,
    ) -> Result<(), SendError> {
        let frame = self.signal_frame(name, payload.into())?;
        self.try_send(frame)
    }

    fn signal_frame(&self, name: impl IntoName, payload: Payload) -> Result<Bytes, SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        encode_signal(name, payload, self.inner.max_message_size)
    }

    /// The server's `max_message_size`, which every frame to this client respects.
    pub(crate) fn max_message_size(&self) -> usize {
        self.inner.max_message_size
    }

    /// Queues an encoded signal without waiting: the fan-out's way in.
    pub(crate) fn try_send(&self, frame: Bytes) -> Result<(), SendError> {
        match self.inner.room.try_acquire_many(frame_cost(&frame)) {
            Ok(permit) => self.queue(permit, frame),
            Err(TryAcquireError::NoPermits) => Err(SendError::QueueFull),
            Err(TryAcquireError::Closed) => Err(SendError::Closed),
        }
    }

    /// Closes the connection: it reads no more messages, lets the handlers that are
    /// running finish and send their replies, then closes the socket with code 1000.
    /// Returns at once; [`Handler::disconnected`](crate::server::Handler::disconnected)
    /// runs when the connection is gone.
    ///
    /// ```no_run
    /// # fn f(conn: tokio_webwire::server::Connection) {
    /// conn.close();
    /// assert!(conn.is_closed());
    /// # }
    /// ```
    pub fn close(&self) {
        self.close_with(CloseReason::Closed);
    }

    /// Closes the connection for `reason`, unless it is already closing for another: from
    /// now on it takes no more signals, [`closed`](Self::closed) resolves, and the driver
    /// is woken to act on it.
    pub(crate) fn close_with(&self, reason: CloseReason) {
        sync::lock(&self.inner.close_reason).get_or_insert(reason);
        let inner = &self.inner;
        if inner.closing.raise() {
            inner.room.close();
            inner.closed.notify_waiters();
            inner.closing.wake();
        }
    }

    /// Why the connection is closing, once it is (for the driver).
    pub(crate) fn closing_reason(&self) -> Option<CloseReason> {
        if !self.is_closed() {
            return None;
        }
        let reason = sync::lock(&self.inner.close_reason).clone();
        Some(reason.unwrap_or(CloseReason::ServerShutdown))
    }

    /// The driver's waker, woken by [`close_with`](Self::close_with).
    pub(crate) fn register_driver(&self, waker: &Waker) {
        self.inner.closing.register(waker);
    }

    /// Queues an encoded signal or notification, waiting for room.
    pub(crate) async fn send(&self, frame: Bytes) -> Result<(), SendError> {
        // Most sends find room: spare them the future of `acquire`.
        let cost = frame_cost(&frame);
        let permit = match self.inner.room.try_acquire_many(cost) {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(SendError::Closed),
            Err(TryAcquireError::NoPermits) => self
                .inner
                .room
                .acquire_many(cost)
                .await
                .map_err(|_| SendError::Closed)?,
        };
        self.queue(permit, frame)
    }

    fn queue(&self, permit: SemaphorePermit<'_>, frame: Bytes) -> Result<(), SendError> {
        self.inner
            .outbox
            .push(Outbound::Metered(frame))
            .map_err(|_| SendError::Closed)?;
        // The driver gives the permit back once the frame is written.
        permit.forget();
        Ok(())
    }

    /// The driver is gone: stored handles must not keep its task alive through its waker.
    pub(crate) fn forget_driver(&self) {
        self.inner.closing.forget();
    }

    /// Gives back the room of a written signal (the driver).
    pub(crate) fn signal_written(&self, frame: &Bytes) {
        self.inner.room.add_permits(frame_cost(frame) as usize);
    }

    /// Hands a finished handler's reply (if any) to the driver, giving its permit back. Never
    /// waits: each permit sends exactly one.
    pub(crate) fn complete(&self, reply: Option<Bytes>) {
        let _ = self.inner.outbox.push(Outbound::Done(reply));
    }

    /// The queue into the driver (the driver's side).
    pub(crate) fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }
}

/// What a queued frame costs besides its bytes: its place in the outbox and the shared
/// buffer's header, rounded up.
pub(crate) const QUEUED_FRAME_COST: u32 = 64;

/// The permits of the outbound room a frame holds while queued.
fn frame_cost(frame: &Bytes) -> u32 {
    // Frames are checked against the message size limit, which fits a u32.
    u32::try_from(frame.len())
        .unwrap_or(u32::MAX)
        .saturating_add(QUEUED_FRAME_COST)
}

/// Connections are equal when they are the same connection (clones of one handle), so they
/// can key a map or fill a set, e.g. of subscribers.
impl PartialEq for Connection {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Connection {}

impl std::hash::Hash for Connection {
    fn hash<S: std::hash::Hasher>(&self, state: &mut S) {
        self.inner.id.hash(state);
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("remote_addr", &self.inner.remote_addr)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}
