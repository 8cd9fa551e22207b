//! The server: accepts WebWire connections and hands their messages to a [`Handler`].
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`Server`]: listening, headless connections, shutdown |
//! | `builder.rs` | [`ServerBuilder`]: the options, [`ConfigError`] |
//! | `handler.rs` | [`Handler`] (the hooks), [`HandlerError`], [`CloseReason`] |
//! | `connection.rs` | [`Connection`], the handle hooks receive; [`SendError`] |
//! | `listen.rs` | [`bind`], [`bind_with_backlog`]: listening for bursts; [`configure_socket`]: options of accepted sockets |
//! | `upgrade.rs` | the HTTP upgrade: checks and `before_upgrade` for every path in, the HTTP side of sockets the server accepts itself |
//! | `upgrade_request.rs` | [`UpgradeRequest`]: what `before_upgrade` sees, what it attaches to the connection |
//! | `origin.rs` | which `Origin`s may connect (cross-site WebSocket hijacking) |
//! | `tls.rs` | `serve_tls`, `serve_tls_connection`, `TlsInfo` for `before_upgrade` (feature `rustls`) |
//! | `mount.rs` | `Server::upgrade`: a request a hyper or axum application hands over (feature `hyper`) |
//! | `driver.rs` | per connection: the one task that reads, dispatches and writes |
//! | `outbox.rs` | the queue from other tasks into a connection's driver |
//! | `job.rs` | what a message asks (a `Job`), and the guard of its one reply |
//! | `sessions.rs` | sessions on the server: create, restore, close, who holds which key |
//! | `client_topics.rs` | the topics extension on the server: the sub-protocol negotiated at the upgrade, the `ww.` requests of a client |
//! | `history.rs` | [`History`]: which topics keep their last publications, the ring of one topic (in memory), the engine seam to a [`SharedHistory`] |
//! | `sequencer.rs` | a topic of a shared history on one node: its publications delivered in offset order, holes filled, the resume seam |
//! | `fanout.rs` | one signal to many: topics, signals to a session's connections, what other nodes send through the backplane; [`SlowSubscriber`], [`TopicError`] |
//! | `metrics.rs` | the server's metrics (feature `metrics`): names, units, labels; no-ops without the feature |
//!
//! ```no_run
//! use tokio::net::{TcpListener, TcpStream};
//! use tokio_webwire::server::{Connection, Handler, HandlerError, Server};
//! use tokio_webwire::{Payload, protocol::Name};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     async fn request(&self, _: &Connection, _: Name, payload: Payload) -> Result<Payload, HandlerError> {
//!         Ok(payload)
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = Server::new(Echo);
//! let listener = TcpListener::bind("127.0.0.1:8081").await?;
//! tokio::spawn(server.serve(listener));
//! // ... later:
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod admission;
mod builder;
mod client_topics;
mod close;
mod config;
mod connection;
mod driver;
pub(crate) mod fanout;
mod handler;
pub(crate) mod history;
mod job;
mod listen;
pub mod metrics;
#[cfg(feature = "hyper")]
mod mount;
mod origin;
mod outbox;
mod panic;
mod sequencer;
mod sessions;
mod source;
#[cfg(feature = "rustls")]
mod tls;
mod upgrade;
mod upgrade_request;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::http::Extensions;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::session::SessionError;
use crate::transport::{Role, Socket, close_frame};

pub use crate::backplane::{History, HistoryError, SharedHistory};
pub use builder::ServerBuilder;
pub use close::CloseReason;
pub use config::{ConfigError, SlowSubscriber};
pub use connection::Connection;
pub use fanout::{MAX_TOPIC_LEN, TopicError};
pub use handler::{Handler, HandlerError, RestoreRefused, SubscribeRefused};
pub use listen::{DEFAULT_BACKLOG, bind, bind_with_backlog, configure_socket};
pub use outbox::SendError;
#[cfg(feature = "rustls")]
pub use tls::TlsInfo;
pub use upgrade_request::UpgradeRequest;

use self::metrics::Metrics;
use crate::backplane::{DynBackplane, Remote};
use crate::payload::Payload;
use crate::protocol::IntoName;
use crate::sync;
use admission::Admission;
use config::Config;
use connection::Peer;
use fanout::Hub;
use sessions::{SessionConfig, SessionEvents, Sessions};
use source::Source;

/// A WebWire server: a [`Handler`] and its options, serving any number of connections.
///
/// Cheap to clone (all clones are the same server). Connections come from
/// [`serve`](Self::serve) (a listener the server accepts on; `serve_tls` for `wss://` with
/// the `rustls` feature), or headless from the program's own HTTP stack:
/// [`serve_connection`](Self::serve_connection) for an accepted socket the server upgrades
/// itself (`serve_tls_connection` over TLS), `upgrade` for a request a hyper or axum
/// router hands over (the `hyper` feature), [`serve_websocket`](Self::serve_websocket) for
/// an already-upgraded WebSocket. Every upgrade but the last is checked the same way (see
/// [`Handler::before_upgrade`] and [`ServerBuilder::allowed_origins`]).
/// [`shutdown`](Self::shutdown) ends them all gracefully.
pub struct Server<H> {
    shared: Arc<Shared<H>>,
}

/// What all connections of a server share.
pub(crate) struct Shared<H> {
    pub(crate) handler: Arc<H>,
    /// Sessions and topics, also reached by the backplane.
    /// Sessions on this server: who holds which, and every operation on them.
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) config: Config,
    /// Set when a shutdown begins: upgrades get 503, requests the shutdown reply, signals
    /// are dropped. (A flag, not a token: it is read for every message, and a token's
    /// `is_cancelled` takes a lock.)
    shutting_down: AtomicBool,
    /// Cancelled when the shutdown has drained the handlers: `serve` loops and upgrades
    /// in progress stop (open connections are closed through `live`).
    pub(crate) close_all: CancellationToken,
    /// The open connections, so that a shutdown can close them.
    pub(crate) live: Live,
    /// Cancelled when the shutdown deadline passes: handlers still running are dropped.
    pub(crate) stop_handlers: CancellationToken,
    /// Connection tasks, from HTTP request to `disconnected` hook.
    connections: TaskTracker,
    /// Request and signal handler tasks.
    pub(crate) handlers: TaskTracker,
    /// Running `serve` loops, each until its listener is dropped.
    listeners: TaskTracker,
    next_connection_id: AtomicU64,
    /// Live WebWire connections, against `max_connections`.
    pub(crate) places: Arc<Places>,
    /// Sockets of ours not yet upgraded, against `max_pending_upgrades` and the limits
    /// per source.
    admission: Arc<Admission>,
    /// Cancelled when the shutdown is complete.
    shutdown_done: CancellationToken,
    /// The metric handles (nothing without the `metrics` feature).
    pub(crate) metrics: Metrics,
}

impl<H> Shared<H> {
    fn new(
        handler: H,
        config: Config,
        sessions: SessionConfig,
        backplane: Arc<dyn DynBackplane>,
        seal: Option<crate::backplane::Seal>,
    ) -> Self
    where
        H: Handler,
    {
        let handler = Arc::new(handler);
        let events: Arc<dyn SessionEvents> = handler.clone();
        let metrics = Metrics::new();
        let places = Arc::new(Places {
            live: AtomicUsize::new(0),
            max: config.max_connections,
            max_per_source: config.max_connections_per_source,
            v6_prefix: config.admission.v6_prefix,
            per_source: Mutex::new(HashMap::new()),
            metrics: metrics.clone(),
        });
        let admission = Admission::new(config.admission.clone());
        let remote = Arc::new(Remote::new(backplane, seal));
        let handlers = TaskTracker::new();
        let sessions = Arc::new(Sessions::new(sessions, events, Arc::clone(&remote)));
        Shared {
            admission,
            sessions: Arc::clone(&sessions),
            hub: Hub::new(
                sessions,
                remote,
                handlers.clone(),
                config.fanout.clone(),
                metrics.clone(),
            ),
            handler,
            config,
            shutting_down: AtomicBool::new(false),
            close_all: CancellationToken::new(),
            live: Live::default(),
            stop_handlers: CancellationToken::new(),
            connections: TaskTracker::new(),
            handlers,
            listeners: TaskTracker::new(),
            next_connection_id: AtomicU64::new(1),
            places,
            shutdown_done: CancellationToken::new(),
            metrics,
        }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub(crate) fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }
}

impl<H: Handler> Server<H> {
    /// A server with `handler` and the default options (see [`ServerBuilder`]).
    pub fn new(handler: H) -> Self {
        Self::builder(handler)
            .build()
            .expect("the default options are valid")
    }

    /// The handler, e.g. to reach state it holds.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use tokio_webwire::server::{Connection, Handler, Server};
    ///
    /// #[derive(Default)]
    /// struct Counter(AtomicUsize);
    ///
    /// impl Handler for Counter {
    ///     async fn connected(&self, _conn: &Connection) {
    ///         self.0.fetch_add(1, Ordering::Relaxed);
    ///     }
    /// }
    ///
    /// let server = Server::new(Counter::default());
    /// assert_eq!(server.handler().0.load(Ordering::Relaxed), 0);
    /// ```
    #[must_use]
    pub fn handler(&self) -> &H {
        &self.shared.handler
    }

    /// Accepts connections on `listener` until the server shuts down; every path of the
    /// HTTP endpoint leads to WebWire.
    ///
    /// The returned future owns what it needs, so it can be spawned. It completes when a
    /// shutdown has drained the handlers and starts closing the connections (until then a
    /// shutting-down server answers new HTTP requests with 503). Accept errors are logged
    /// and retried, never returned. Cancel safety: dropping the future only stops accepting.
    ///
    /// Accepted sockets get `TCP_NODELAY` (replies are batched already) and TCP keep-alive
    /// with a 30 s period, as the Go reference server's ([`configure_socket`]; sockets
    /// given to [`serve_connection`](Self::serve_connection) or accepted by a mounting
    /// application get them only if it calls that). For a listener that holds a burst
    /// of connections until they are accepted, see [`bind`].
    pub fn serve(&self, listener: TcpListener) -> impl Future<Output = ()> + Send + 'static {
        self.accept_loop(listener, |server, socket, remote_addr| {
            server.serve_connection(socket, Some(remote_addr));
        })
    }

    /// The accept loop of [`serve`](Self::serve) (and `serve_tls`): `serve_socket` starts
    /// serving each accepted socket.
    fn accept_loop<F>(
        &self,
        listener: TcpListener,
        serve_socket: F,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        F: Fn(&Self, TcpStream, SocketAddr) + Send + 'static,
    {
        let server = self.clone();
        // Counted until the listener is dropped, so that a shutdown returns with the port
        // free again (a restart on the same address can bind at once).
        let listening = self.shared.listeners.token();
        async move {
            // A server built outside a runtime joins the service's route now.
            server.shared.hub.start_backplane();
            let close_all = server.shared.close_all.clone();
            loop {
                let accepted = tokio::select! {
                    () = close_all.cancelled() => {
                        drop(listener);
                        drop(listening);
                        return;
                    }
                    accepted = listener.accept() => accepted,
                };
                match accepted {
                    Ok((socket, remote_addr)) => {
                        // The connection works without them, only less well.
                        if let Err(error) = listen::configure_socket(&socket) {
                            tracing::debug!(%error, "socket options not set");
                        }
                        serve_socket(&server, socket, remote_addr);
                    }
                    Err(error) if is_per_connection(&error) => {
                        tracing::debug!(%error, "accept failed");
                    }
                    Err(error) => {
                        // Out of file descriptors or memory: wait for connections to end
                        // instead of spinning.
                        tracing::warn!(%error, "accept failed, retrying in 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }

    /// Serves one accepted connection (headless mode): reads its HTTP upgrade request,
    /// asks [`Handler::before_upgrade`], upgrades it and serves it until it closes.
    /// Runs on its own task and is included in [`shutdown`](Self::shutdown). Counted
    /// against [`max_pending_upgrades`](ServerBuilder::max_pending_upgrades) until it is
    /// upgraded: beyond it, `io` is closed at once.
    ///
    /// ```no_run
    /// # async fn run(server: tokio_webwire::server::Server<()>) -> std::io::Result<()> {
    /// // An accept loop of one's own, e.g. to limit connections per address first.
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
    /// loop {
    ///     let (socket, addr) = listener.accept().await?;
    ///     server.serve_connection(socket, Some(addr));
    /// }
    /// # }
    /// ```
    pub fn serve_connection<S>(&self, io: S, remote_addr: Option<SocketAddr>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let plain = |io| std::future::ready(Ok((io, Extensions::new())));
        self.serve_stream(io, plain, remote_addr);
    }

    /// Serves the socket `io` on a task of its own, included in
    /// [`shutdown`](Self::shutdown): `handshake` makes it the stream to upgrade (a TLS
    /// handshake; nothing for a plain socket), then the upgrade within the handshake
    /// timeout, then the driver. A socket not admitted ([`Admission`]: the pending limits,
    /// in all and per source) is dropped at once; one admitted may be closed later to make
    /// room, if it stays silent while the pool is full.
    ///
    /// `handshake` resolves to the stream and what it knows of itself (a `TlsInfo` after a
    /// TLS handshake; nothing for a plain socket): extensions the upgrade request gets
    /// before the checks and the hook, so one upgrade path serves every kind of stream.
    fn serve_stream<S, T, F, Fut>(&self, io: S, handshake: F, remote_addr: Option<SocketAddr>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: FnOnce(admission::Counting<S>) -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<(T, Extensions)>> + Send + 'static,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Decided here, not in the task: the accept loop takes the next socket only after
        // this one's place is decided.
        let ticket = match self.shared.admission.admit(remote_addr) {
            Ok(ticket) => ticket,
            Err(refused) => {
                // Dropping `io` closes the socket before any TLS or HTTP work on it.
                tracing::debug!(?remote_addr, why = refused.as_str(), "socket closed");
                self.shared.metrics.upgrade_refused(None);
                return;
            }
        };
        let io = ticket.count(io);
        let shared = Arc::clone(&self.shared);
        let fut = async move {
            // Boxed while it runs: the upgrade's buffers do not stay in the connection's
            // task for its whole life.
            let upgrade = Box::pin(upgrade::upgrade(&shared, handshake(io), remote_addr));
            let upgraded = tokio::select! {
                upgraded = upgrade => upgraded,
                () = ticket.evicted() => {
                    shared.metrics.upgrade_refused(None);
                    None
                }
            };
            if upgraded.is_some() {
                ticket.upgraded();
            }
            drop(ticket);
            if let Some((ws, peer, place)) = upgraded {
                driver::serve(shared, ws, peer, place).await;
            }
        };
        self.shared.connections.spawn(fut);
    }

    /// Serves a WebSocket the program has already upgraded (headless mode, e.g. behind
    /// its own HTTP router) until it closes. `remote_addr` and `user_agent` are what
    /// [`Connection`] reports. Runs on its own task and is included in
    /// [`shutdown`](Self::shutdown); during a shutdown the socket is closed at once
    /// with code 1001, and beyond [`max_connections`](ServerBuilder::max_connections) with
    /// code 1013 (try again later).
    ///
    /// The server takes the stream under `ws` and does the WebSocket framing itself, with
    /// its own limits ([`max_message_size`](ServerBuilder::max_message_size)): the
    /// `WebSocketStream`'s configuration is not used. Hand it over before reading from it:
    /// what it had read would be lost (a client sends nothing before the server's 101,
    /// RFC 6455 §4.1, so a stream fresh from the handshake holds nothing).
    pub fn serve_websocket<S>(
        &self,
        ws: WebSocketStream<S>,
        remote_addr: Option<SocketAddr>,
        user_agent: Option<&str>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let peer = Peer {
            remote_addr,
            user_agent: user_agent.map(Into::into),
            attached: Extensions::new(),
            // The application made the upgrade: the extension is not negotiated.
            topics_extension: false,
        };
        self.shared.connections.spawn(async move {
            let io = ws.into_inner();
            let frame = if shared.is_shutting_down() {
                close_frame(CloseCode::Away, "server shutting down")
            } else if let Some(place) = shared.places.try_take(remote_addr) {
                driver::serve(shared, (io, BytesMut::new()), peer, place).await;
                return;
            } else {
                close_frame(CloseCode::Again, "too many connections")
            };
            let config = &shared.config;
            let socket = Socket::new(
                io,
                BytesMut::new(),
                Role::Server,
                config.max_message_size,
                config.write_timeout,
            );
            // The close frame only: no wait for the answer.
            socket.close(frame, Duration::ZERO).await;
        });
    }

    /// Ends the session `key` everywhere: a revocation, the "log out everywhere" of an
    /// application (PROTOCOL.md §4.5 from the server's side).
    ///
    /// In this order: the session is removed from the store, so from then on no connection
    /// can restore it (a restore still under way is answered "not found"); every
    /// connection of this server that holds it loses it and is told with a session-closed
    /// notification; then [`Handler::session_closed`] runs once, with no connection. It
    /// works the same with no connection online (the stored session is removed). Returns
    /// how many connections held it, once each has been told or has closed (a client that
    /// stopped reading holds this up until its connection's write timeout drops it; it
    /// lost the session at once all the same).
    ///
    /// With a [backplane](crate::server::ServerBuilder::backplane), every other server
    /// removes it from its own store too (a store each, or one shared: then again) and its
    /// connections lose it at once. Without one, a store shared by several servers loses it
    /// for all of them, but connections to other servers keep it until they close it or
    /// reconnect (their restore then fails).
    ///
    /// Fails with [`SessionError::Disabled`] without sessions, and with
    /// [`SessionError::Store`] if the store could not remove it: the connections have lost
    /// it even then, but the stored copy may survive (retry), and the hook does not run.
    ///
    /// ```no_run
    /// # async fn f(server: tokio_webwire::server::Server<()>, key: &str) -> Result<(), tokio_webwire::SessionError> {
    /// // A password change: every device of the user must log in again.
    /// let online = server.close_session(key).await?;
    /// println!("logged out {online} connections");
    /// # Ok(()) }
    /// ```
    ///
    /// Cancel safety: dropped after the store has removed the session, the registry has
    /// been cleared in the same step as the lookup of the holders, so none keeps it, but
    /// some may not be told and the hook may not run.
    pub async fn close_session(&self, key: &str) -> Result<usize, SessionError> {
        self.shared.sessions.revoke(key).await
    }

    /// Publishes the signal `name` with `payload` to every connection subscribed to
    /// `topic` ([`Connection::subscribe`]), on this server and, through the
    /// [`backplane`](ServerBuilder::backplane), on every other. Returns to how many of
    /// this server's connections it was queued.
    ///
    /// The signal is checked and encoded once, for all subscribers. Nothing waits for a
    /// subscriber: one whose outbound queue is full is handled by the
    /// [`slow_subscriber`](ServerBuilder::slow_subscriber) policy. A topic nobody
    /// subscribes to takes the signal and drops it.
    ///
    /// Fails with [`TopicError::InvalidTopic`], [`TopicError::Invalid`] or
    /// [`TopicError::TooLarge`] before anything is sent, and with
    /// [`TopicError::Backplane`] (after this server's subscribers got it) when the
    /// backplane could not pass it on. A topic with a [history](ServerBuilder::history)
    /// the nodes share (the Redis backplane's) costs one round trip to the shared store,
    /// which positions, keeps and passes on the publication in one step, and fails with
    /// [`TopicError::History`], delivered to nobody, while the store is away.
    ///
    /// Cancel safety: this server's subscribers have the signal once the future is first
    /// polled; dropped before it completes, the other servers may miss it.
    ///
    /// ```no_run
    /// # async fn f(server: tokio_webwire::server::Server<()>) -> Result<(), tokio_webwire::server::TopicError> {
    /// use tokio_webwire::Payload;
    /// server.publish("prices/EURUSD", "price", Payload::utf8("1.0842")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish(
        &self,
        topic: &str,
        name: impl IntoName,
        payload: impl Into<Payload>,
    ) -> Result<usize, TopicError> {
        self.shared.hub.publish(topic, name, payload.into()).await
    }

    /// Publishes the contract signal `signal` ([`contract::Signal`](crate::contract::Signal))
    /// to `topic` as UTF-8 JSON: [`publish`](Self::publish) with the signal's name, so a
    /// subscriber reads it with [`Signal::read`](crate::contract::Signal::read) and the
    /// name and type are the ones the contract gives both ends. A value serde cannot write
    /// as JSON fails with [`TopicError::Json`], publishing nothing.
    ///
    /// ```no_run
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Said { user: String, text: String }
    /// # impl tokio_webwire::contract::Signal for Said { const NAME: &'static str = "said"; }
    /// # async fn f(server: tokio_webwire::server::Server<()>) -> Result<(), tokio_webwire::server::TopicError> {
    /// let said = Said { user: "alice".into(), text: "hello".into() };
    /// let here = server.emit_to("room/rust", &said).await?;
    /// println!("{here} subscribers on this server");
    /// # Ok(()) }
    /// ```
    pub async fn emit_to<G: crate::contract::Signal>(
        &self,
        topic: &str,
        signal: &G,
    ) -> Result<usize, TopicError> {
        self.shared.hub.emit_to(topic, signal).await
    }

    /// Sends the signal `name` with `payload` to every connection that holds the session
    /// `key`, on this server and, through the [`backplane`](ServerBuilder::backplane), on
    /// every other: a message to all of one user's devices. Returns to how many of this
    /// server's connections it was queued; the rules are [`publish`](Self::publish)'s.
    ///
    /// ```no_run
    /// # async fn f(server: tokio_webwire::server::Server<()>, key: &str) -> Result<(), tokio_webwire::server::TopicError> {
    /// server.signal_session(key, "password-changed", "").await?;
    /// # Ok(()) }
    /// ```
    pub async fn signal_session(
        &self,
        key: &str,
        name: impl IntoName,
        payload: impl Into<Payload>,
    ) -> Result<usize, TopicError> {
        self.shared
            .hub
            .signal_session(key, name, payload.into())
            .await
    }

    /// How many messages from other nodes this server refused: their tag was not the
    /// service secret's ([`ServerBuilder::backplane_secret`]: forged, altered on the way,
    /// or another service's), or they were not envelopes. Nothing of them reached a
    /// client. Also `webwire_backplane_refused_total` with the `metrics` feature.
    ///
    /// ```
    /// let server = tokio_webwire::server::Server::builder(()).build()?;
    /// assert_eq!(server.backplane_refused(), 0);
    /// # Ok::<(), tokio_webwire::server::ConfigError>(())
    /// ```
    #[must_use]
    pub fn backplane_refused(&self) -> u64 {
        self.shared.hub.refused()
    }

    /// How many messages the backplane handed this server (whether applied, ignored as
    /// its own, or refused): with a backplane that routes (Redis), the traffic of the
    /// topics its connections subscribe to, of the sessions they hold, and of
    /// revocations. Also `webwire_backplane_received_total` with the `metrics` feature.
    ///
    /// ```
    /// let server = tokio_webwire::server::Server::builder(()).build()?;
    /// assert_eq!(server.backplane_received(), 0);
    /// # Ok::<(), tokio_webwire::server::ConfigError>(())
    /// ```
    #[must_use]
    pub fn backplane_received(&self) -> u64 {
        self.shared.hub.received()
    }

    /// Resolves once the backplane carries every route this server wants (see
    /// [`Connection::sync_backplane`]).
    ///
    /// ```no_run
    /// # async fn f(server: tokio_webwire::server::Server<()>) {
    /// server.sync_backplane().await;
    /// # }
    /// ```
    pub async fn sync_backplane(&self) {
        self.shared.hub.sync_backplane().await;
    }

    /// How many of this server's connections subscribe to `topic`.
    #[must_use]
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.shared.hub.subscriber_count(topic)
    }

    /// The connections that hold the session `key` (empty when none does).
    #[must_use]
    pub fn session_connections(&self, key: &str) -> Vec<Connection> {
        self.shared.sessions.connections(key)
    }

    /// How many sessions are held by at least one connection.
    #[must_use]
    pub fn active_sessions(&self) -> usize {
        self.shared.sessions.active()
    }

    /// How many WebWire connections are open (upgraded, not yet closed).
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.shared.places.live.load(Ordering::Acquire)
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.shared.is_shutting_down()
    }

    /// Shuts the server down gracefully and returns when every connection is closed.
    ///
    /// 1. New HTTP requests are answered with 503; new requests on open connections with
    ///    the shutdown reply; new signals are dropped.
    /// 2. Running handlers finish and their replies are sent, for at most the
    ///    [`shutdown_timeout`](ServerBuilder::shutdown_timeout); handlers still running then
    ///    are stopped and their requests answered with the shutdown reply.
    /// 3. Every connection, headless ones included, is closed with code 1001 (a client
    ///    gets up to the [`close_timeout`](ServerBuilder::close_timeout) to answer the
    ///    close frame), and its `disconnected` hook runs; every [`serve`](Self::serve) loop stops and drops its
    ///    listener, so the address is free again when this returns (a `serve` future
    ///    that is kept but never polled holds the shutdown up: spawn it or drop it).
    ///
    /// Calling it again, or from several tasks, waits for the same shutdown.
    ///
    /// Cancel safety: the shutdown runs on a task of its own; dropping this future stops
    /// only the waiting, never the shutdown.
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        // From the first poll on, new work is refused.
        if !shared.shutting_down.swap(true, Ordering::AcqRel) {
            tokio::spawn(drain(Arc::clone(shared)));
        }
        shared.shutdown_done.cancelled().await;
    }
}

/// The shutdown sequence of [`Server::shutdown`].
async fn drain<H: Handler>(shared: Arc<Shared<H>>) {
    tracing::info!("shutting down");
    // The deadline holds for every handler and hook, also one that slipped past the flag.
    let timeout = shared.config.shutdown_timeout;
    let deadline = tokio::spawn({
        let stop = shared.stop_handlers.clone();
        async move {
            tokio::time::sleep(timeout).await;
            stop.cancel();
        }
    });
    shared.handlers.close();
    tokio::select! {
        () = shared.handlers.wait() => {}
        () = shared.stop_handlers.cancelled() => {
            tracing::warn!("shutdown deadline passed: stopping the handlers still running");
            shared.handlers.wait().await;
        }
    }
    shared.close_all.cancel();
    shared.live.close_all();
    shared.connections.close();
    shared.connections.wait().await;
    shared.listeners.close();
    shared.listeners.wait().await;
    deadline.abort();
    tracing::info!("shut down");
    shared.shutdown_done.cancel();
}

/// The open connections of a server, by id: how a shutdown reaches their drivers.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Whether the shutdown closed them all (a connection that registers later is closed
    /// at once), and the connections.
    conns: Mutex<(bool, HashMap<u64, Connection>)>,
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, (bool, HashMap<u64, Connection>)> {
        // Every critical section is one map operation: a panic cannot leave it half done.
        sync::lock(&self.conns)
    }

    /// A connection starts; closed at once if the shutdown already closed the others.
    pub(crate) fn register(&self, conn: &Connection) {
        let mut live = self.lock();
        if live.0 {
            drop(live);
            conn.close_with(CloseReason::ServerShutdown);
        } else {
            live.1.insert(conn.id(), conn.clone());
        }
    }

    pub(crate) fn deregister(&self, conn: &Connection) {
        self.lock().1.remove(&conn.id());
    }

    /// Closes every connection, now and from now on.
    fn close_all(&self) {
        let conns: Vec<Connection> = {
            let mut live = self.lock();
            live.0 = true;
            live.1.values().cloned().collect()
        };
        for conn in conns {
            conn.close_with(CloseReason::ServerShutdown);
        }
    }
}

/// Counts the open WebWire connections against the server's `max_connections`, and each
/// source's against `max_connections_per_source`.
#[derive(Debug)]
pub(crate) struct Places {
    live: AtomicUsize,
    /// 0: no limit.
    max: usize,
    /// 0: no limit.
    max_per_source: usize,
    v6_prefix: u8,
    /// Open connections by source (only sources with some).
    per_source: Mutex<HashMap<Source, usize>>,
    /// `webwire_connections_open` follows `live`.
    metrics: Metrics,
}

/// One open connection's place among the server's `max_connections` (and its source's);
/// given back on drop.
#[derive(Debug)]
pub(crate) struct Place(Arc<Places>, Option<Source>);

impl Places {
    /// Whether the server is full: a look only, no place is taken (so another upgrade may
    /// take the last one before [`try_take`](Self::try_take)).
    pub(crate) fn is_full(&self) -> bool {
        self.max != 0 && self.live.load(Ordering::Acquire) >= self.max
    }

    /// A place for one more connection from `remote_addr`, unless the server or its
    /// source is full. Checking and counting is one step, so racing upgrades cannot
    /// overshoot either limit.
    pub(crate) fn try_take(self: &Arc<Self>, remote_addr: Option<SocketAddr>) -> Option<Place> {
        let fits = |live: usize| (self.max == 0 || live < self.max).then_some(live + 1);
        if self
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, fits)
            .is_err()
        {
            self.metrics.connection_rejected();
            return None;
        }
        let source = remote_addr
            .filter(|_| self.max_per_source != 0)
            .map(|addr| Source::of(addr.ip(), self.v6_prefix));
        if let Some(source) = source {
            let mut per_source = self.per_source();
            let open = per_source.entry(source).or_insert(0);
            if *open >= self.max_per_source {
                drop(per_source);
                self.live.fetch_sub(1, Ordering::AcqRel);
                tracing::debug!(%source, "connection refused: its source has max_connections_per_source open");
                self.metrics.connection_rejected();
                return None;
            }
            *open += 1;
        }
        self.metrics.connection_opened();
        Some(Place(Arc::clone(self), source))
    }

    fn per_source(&self) -> std::sync::MutexGuard<'_, HashMap<Source, usize>> {
        // One map operation per critical section: a panic cannot leave it half done.
        sync::lock(&self.per_source)
    }

    fn give_back_source(&self, source: Option<Source>) {
        if let Some(source) = source {
            let mut per_source = self.per_source();
            if let Some(open) = per_source.get_mut(&source) {
                *open -= 1;
                if *open == 0 {
                    per_source.remove(&source);
                }
            }
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.give_back_source(self.1);
        self.0.live.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.connection_gone();
    }
}

/// An accept error that concerns only the connection being accepted.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

impl<H> Clone for Server<H> {
    fn clone(&self) -> Self {
        Server {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<H> fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.shared.config)
            .field("connections", &self.shared.connections.len())
            .field("shutting_down", &self.shared.is_shutting_down())
            .finish_non_exhaustive()
    }
}
