//! [`Connection`]: the handle to one client connection that every hook receives.

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

    /// The session this connection holds, if any.
    #[must_use]
    pub fn session(&self) -> Option<Session> {
        self.held_session().clone()
    }

    /// Creates a session for this connection (PROTOCOL.md §4.3) with `info`, and returns it.
    ///
    /// The key comes from the server's key generator; the session is registered under its
    /// key and saved in the server's store, then the client is told with a session-created
    /// notification that precedes the reply of the request being handled, and
    /// [`Handler::session_created`](crate::server::Handler::session_created) runs.
    ///
    /// Fails if sessions are disabled, the connection is closed, it already holds a session,
    /// the store could not save it ([`SessionError::Store`]: Redis away, a full disk; the
    /// client is told nothing, so answer the request with an error it can try again on),
    /// the key generator made an invalid key, or the session is too large: its info must
    /// leave room for the session to travel in a restore reply within the server's
    /// `max_message_size` ([`SessionError::TooLarge`]), or the client could not get it back
    /// after a reconnect.
    ///
    /// Security: the key is the session's only credential. With the default generator it
    /// is 256 random bits; whoever presents it can restore the session (within
    /// [`max_session_connections`](crate::server::ServerBuilder::max_session_connections)
    /// and [`Handler::session_restored`](crate::server::Handler::session_restored)) until
    /// it is closed for good, revoked, or expires in the store.
    ///
    /// ```no_run
    /// # async fn f(conn: tokio_webwire::server::Connection) -> Result<(), tokio_webwire::SessionError> {
    /// use tokio_webwire::SessionInfo;
    ///
    /// let mut info = SessionInfo::new();
    /// info.insert("user", "alice").expect("a string is JSON");
    /// let session = conn.create_session(info).await?;
    /// println!("logged in, session {}", session.key);
    /// # Ok(()) }
    /// ```
    ///
    /// Cancel safety: dropped before the client has been told (while the store saves, or
    /// while waiting for room in the outbound queue), nothing has happened (a copy already
    /// saved is removed on a task of its own). Dropped later, the session exists on the
    /// connection, in the store, and the client knows it, but the hook may not have run.
    /// Await it to the end when that matters (spawn it if it must not hold up a
    /// `select!`). The server itself drops it only at a shutdown's deadline.
    pub async fn create_session(&self, info: SessionInfo) -> Result<Session, SessionError> {
        self.sessions().create(self, info).await
    }

    /// Closes this connection's session (PROTOCOL.md §4.5): the connection leaves it, the
    /// client is told with a session-closed notification, and if no other connection holds
    /// the session it is removed from the store and
    /// [`Handler::session_closed`](crate::server::Handler::session_closed) runs. Does nothing
    /// without a session; fails only if sessions are disabled.
    ///
    /// Security: this logs out **this connection**. Other connections holding the session
    /// keep it, and while one does, the key stays restorable; once none does, a restore
    /// of it still under way fails. To end a session everywhere
    /// (a password change, a stolen device), use
    /// [`Server::close_session`](crate::server::Server::close_session). With a store shared
    /// by several servers, "last connection" means the last on this server: the session
    /// is then removed from the shared store while connections to other servers keep it
    /// until they reconnect.
    ///
    /// ```no_run
    /// # async fn f(conn: tokio_webwire::server::Connection) -> Result<(), tokio_webwire::SessionError> {
    /// // A "logout" request handler:
    /// conn.close_session().await?;
    /// assert!(conn.session().is_none());
    /// # Ok(()) }
    /// ```
    ///
    /// Cancel safety: not cancel safe. The connection leaves the session first, then the
    /// store and the client are told; dropped in between, the session may stay in the
    /// store (restorable by its key) or the client may not learn that it lost it. Await it
    /// to the end (spawn it if it must not hold up a `select!`).
    pub async fn close_session(&self) -> Result<(), SessionError> {
        self.sessions().leave(self).await
    }

    fn held_session(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
        // Every critical section is one assignment or take: poisoning carries nothing.
        sync::lock(&self.inner.session)
    }

    pub(crate) fn set_session(&self, session: Option<Session>) {
        *self.held_session() = session;
    }

    /// Takes the session off the connection, if it holds one.
    pub(crate) fn take_session(&self) -> Option<Session> {
        self.held_session().take()
    }

    /// Whether the connection holds the session `key` (compared in place: no copy of the
    /// session).
    pub(crate) fn holds_session(&self, key: &str) -> bool {
        self.held_session()
            .as_ref()
            .is_some_and(|session| session.key == key)
    }

    /// Takes the session off the connection if it is the session `key`; true if it was.
    /// One step, so that of two parties ending the same session (a revocation and the
    /// connection's own close) exactly one does it and tells the client.
    pub(crate) fn take_session_if(&self, key: &str) -> bool {
        let mut held = self.held_session();
        let matches = held.as_ref().is_some_and(|session| session.key == key);
        if matches {
            *held = None;
        }
        matches
    }

    /// The server's `max_message_size`, which every frame to this client respects.
    pub(crate) fn max_message_size(&self) -> usize {
        self.inner.max_message_size
    }

    pub(crate) async fn session_op(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.session_op.lock().await
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    pub(crate) fn subscriptions(&self) -> std::sync::MutexGuard<'_, Subscriptions> {
        // Held for one topic-map operation, which does not panic.
        sync::lock(&self.inner.subscriptions)
    }

    /// Subscribes this connection to `topic`: from now on it gets every signal
    /// [published](Self::publish) to the topic, on this server or, through the
    /// [backplane](crate::backplane), on any other. Returns false if it was subscribed
    /// already. A connection leaves its topics when it ends.
    ///
    /// A topic is any text of 1 to [`MAX_TOPIC_LEN`](crate::server::MAX_TOPIC_LEN) bytes;
    /// topics exist while someone subscribes to them. Fails with [`TopicError::Closed`] once
    /// the connection is closing.
    ///
    /// ```no_run
    /// # fn f(conn: tokio_webwire::server::Connection) -> Result<(), tokio_webwire::server::TopicError> {
    /// assert!(conn.subscribe("room/rust")?);
    /// assert!(!conn.subscribe("room/rust")?, "once is enough");
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self, topic: &str) -> Result<bool, TopicError> {
        // Under the connection's own lock, which its end takes too: a subscribe racing the
        // end either is undone by it or fails.
        let mut subscriptions = self.subscriptions();
        self.inner.hub.subscribe(self, &mut subscriptions, topic)
    }

    /// Unsubscribes this connection from `topic`; false if it was not subscribed. This
    /// ends its client's own subscription to the topic too (one made through the topics
    /// extension, `docs/topics.md`): the server can always take a topic away, e.g. in
    /// [`Handler::session_left`](crate::server::Handler::session_left) when a login that
    /// granted it ends. The client is not told; it stops receiving the topic.
    ///
    /// ```no_run
    /// # fn f(conn: tokio_webwire::server::Connection) {
    /// conn.unsubscribe("room/rust");
    /// # }
    /// ```
    pub fn unsubscribe(&self, topic: &str) -> bool {
        let mut subscriptions = self.subscriptions();
        let hub = &self.inner.hub;
        let plain = hub.unsubscribe(self, &mut subscriptions, topic);
        let client = hub.unsubscribe_client(self, &mut subscriptions, topic);
        plain || client
    }

    /// The topics this connection subscribes to, in no particular order. Once it has
    /// ended (in [`Handler::disconnected`](crate::server::Handler::disconnected)), the
    /// topics it had then: it is no longer among their subscribers.
    ///
    /// ```no_run
    /// # fn f(conn: tokio_webwire::server::Connection) {
    /// for topic in conn.topics() {
    ///     println!("subscribed to {topic}");
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn topics(&self) -> Vec<String> {
        self.subscriptions().topics().map(str::to_owned).collect()
    }

    /// Whether the client negotiated the topics extension (`docs/topics.md`): it may
    /// subscribe itself to topics, as
    /// [`Handler::subscribe_requested`](crate::server::Handler::subscribe_requested)
    /// allows.
    #[must_use]
    pub fn speaks_topics(&self) -> bool {
        self.inner.topics_extension
    }

    /// The topics this connection's client subscribed to itself (through the
    /// extension), in no particular order; see [`topics`](Self::topics).
    #[must_use]
    pub fn client_topics(&self) -> Vec<String> {
        self.subscriptions()
            .client_topics()
            .map(str::to_owned)
            .collect()
    }

    /// The client subscribes itself ([`Hub::subscribe_client`], or
    /// [`Hub::subscribe_shared`] for a topic of a history the nodes share).
    pub(crate) async fn subscribe_client(
        &self,
        topic: &str,
        resume: Option<Position>,
    ) -> Result<Subscribed, TopicError> {
        if self.inner.hub.is_shared(topic) {
            return self.inner.hub.subscribe_shared(self, topic, resume).await;
        }
        let subscribed = {
            let mut subscriptions = self.subscriptions();
            self.inner
                .hub
                .subscribe_client(self, &mut subscriptions, topic, resume)?
        };
        // Answered once what other nodes publish to the topic reaches this one.
        self.inner.hub.sync_backplane().await;
        Ok(subscribed)
    }

    /// Resolves once this server's backplane carries what it now wants: after
    /// [`subscribe`](Self::subscribe), what any node publishes to the topic reaches this
    /// connection. Without a backplane between nodes (the default), at once.
    ///
    /// The first subscriber to a topic on a server makes the server join the topic's
    /// route on the backplane (`SUBSCRIBE` to its channel on Redis), which takes a round
    /// trip; until then, what other nodes publish to the topic does not reach it.
    /// [`subscribe`](Self::subscribe) does not wait for it (it stays synchronous); a
    /// handler that answers "subscribed" and wants the answer to mean "you will get
    /// every publication from now on" waits here first. A client's own subscribe
    /// (`docs/topics.md`) is answered after it.
    ///
    /// ```no_run
    /// # async fn f(conn: tokio_webwire::server::Connection) -> Result<(), tokio_webwire::server::TopicError> {
    /// conn.subscribe("room/rust")?;
    /// conn.sync_backplane().await;
    /// # Ok(()) }
    /// ```
    pub async fn sync_backplane(&self) {
        self.inner.hub.sync_backplane().await;
    }

    /// The client unsubscribes itself; false if it was not subscribed.
    pub(crate) fn unsubscribe_client(&self, topic: &str) -> bool {
        let mut subscriptions = self.subscriptions();
        self.inner
            .hub
            .unsubscribe_client(self, &mut subscriptions, topic)
    }

    /// Queues a frame that holds no room permit (a resume's replay, bounded by the
    /// history it comes from): the driver writes it in order with the rest.
    pub(crate) fn push_unmetered(&self, frame: Bytes) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        self.inner
            .outbox
            .push(Outbound::Unmetered(frame))
            .map_err(|_| SendError::Closed)
    }

    /// The connection has ended: it leaves its topics.
    pub(crate) fn leave_topics(&self) {
        let mut subscriptions = self.subscriptions();
        self.inner.hub.leave_all(self, &mut subscriptions);
    }

    /// Publishes the signal `name` with `payload` to every subscriber of `topic`, this
    /// connection included if it subscribes: the same as
    /// [`Server::publish`](crate::server::Server::publish), for handlers, which have a
    /// connection rather than the server.
    ///
    /// ```no_run
    /// # async fn f(conn: tokio_webwire::server::Connection) -> Result<(), tokio_webwire::server::TopicError> {
    /// let here = conn.publish("room/rust", "message", "hello").await?;
    /// println!("{here} subscribers on this server");
    /// # Ok(()) }
    /// ```
    pub async fn publish(
        &self,
        topic: &str,
        name: impl IntoName,
        payload: impl Into<Payload>,
    ) -> Result<usize, TopicError> {
        self.inner.hub.publish(topic, name, payload.into()).await
    }

    /// Publishes the contract signal `signal` to `topic`: the same as
    /// [`Server::emit_to`](crate::server::Server::emit_to), for handlers.
    ///
    /// ```no_run
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Said { user: String, text: String }
    /// # impl tokio_webwire::contract::Signal for Said { const NAME: &'static str = "said"; }
    /// # async fn f(conn: tokio_webwire::server::Connection) -> Result<(), tokio_webwire::server::TopicError> {
    /// conn.emit_to("room/rust", &Said { user: "alice".into(), text: "hi".into() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn emit_to<G: crate::contract::Signal>(
        &self,
        topic: &str,
        signal: &G,
    ) -> Result<usize, TopicError> {
        self.inner.hub.emit_to(topic, signal).await
    }

    /// Sends the signal `name` with `payload` to every connection holding the session
    /// `key`, on every node: the same as
    /// [`Server::signal_session`](crate::server::Server::signal_session), for handlers.
    ///
    /// ```no_run
    /// # async fn f(conn: tokio_webwire::server::Connection) -> Result<(), tokio_webwire::server::TopicError> {
    /// // Tell the user's other devices.
    /// if let Some(session) = conn.session() {
    ///     conn.signal_session(&session.key, "settings-changed", "").await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn signal_session(
        &self,
        key: &str,
        name: impl IntoName,
        payload: impl Into<Payload>,
    ) -> Result<usize, TopicError> {
        self.inner
            .hub
            .signal_session(key, name, payload.into())
            .await
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
        if let Ok(mut kept) = self.inner.close_reason.lock() {
            kept.get_or_insert(reason);
        }
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
        let reason = self
            .inner
            .close_reason
            .lock()
            .ok()
            .and_then(|kept| kept.clone());
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
