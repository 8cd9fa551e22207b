//! [`Server`](crate::server::Server): the handle to a server; what it offers besides serving connections (sessions,
//! topics, counts), and its graceful shutdown.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::session::SessionError;

use crate::payload::Payload;
use crate::protocol::IntoName;
use crate::server::{Connection, Handler, Shared, TopicError};

/// A WebWire server: a [`Handler`](crate::server::Handler) and its options, serving any number of connections.
///
/// Cheap to clone (all clones are the same server). Connections come from
/// [`serve`](Self::serve) (a listener the server accepts on; `serve_tls` for `wss://` with
/// the `rustls` feature), or headless from the program's own HTTP stack:
/// [`serve_connection`](Self::serve_connection) for an accepted socket the server upgrades
/// itself (`serve_tls_connection` over TLS), `upgrade` for a request a hyper or axum
/// router hands over (the `hyper` feature), [`serve_websocket`](Self::serve_websocket) for
/// an already-upgraded WebSocket. Every upgrade but the last is checked the same way (see
/// [`Handler::before_upgrade`](crate::server::Handler::before_upgrade) and [`ServerBuilder::allowed_origins`](crate::server::ServerBuilder::allowed_origins)).
/// [`shutdown`](Self::shutdown) ends them all gracefully.
pub struct Server<H> {
    pub(crate) shared: Arc<Shared<H>>,
}

impl<H: Handler> Server<H> {
    /// A server with `handler` and the default options (see [`ServerBuilder`](crate::server::ServerBuilder)).
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

    /// Ends the session `key` everywhere: a revocation, the "log out everywhere" of an
    /// application (PROTOCOL.md §4.5 from the server's side).
    ///
    /// In this order: the session is removed from the store, so from then on no connection
    /// can restore it (a restore still under way is answered "not found"); every
    /// connection of this server that holds it loses it and is told with a session-closed
    /// notification; then [`Handler::session_closed`](crate::server::Handler::session_closed) runs once, with no connection. It
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
    /// `topic` ([`Connection::subscribe`](crate::server::Connection::subscribe)), on this server and, through the
    /// [`backplane`](crate::server::ServerBuilder::backplane), on every other. Returns to how many of
    /// this server's connections it was queued.
    ///
    /// The signal is checked and encoded once, for all subscribers. Nothing waits for a
    /// subscriber: one whose outbound queue is full is handled by the
    /// [`slow_subscriber`](crate::server::ServerBuilder::slow_subscriber) policy. A topic nobody
    /// subscribes to takes the signal and drops it.
    ///
    /// Fails with [`TopicError::InvalidTopic`], [`TopicError::Invalid`] or
    /// [`TopicError::TooLarge`] before anything is sent, and with
    /// [`TopicError::Backplane`] (after this server's subscribers got it) when the
    /// backplane could not pass it on. A topic with a [history](crate::server::ServerBuilder::history)
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
    /// `key`, on this server and, through the [`backplane`](crate::server::ServerBuilder::backplane), on
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
    /// service secret's ([`ServerBuilder::backplane_secret`](crate::server::ServerBuilder::backplane_secret): forged, altered on the way,
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
    /// [`Connection::sync_backplane`](crate::server::Connection::sync_backplane)).
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
        self.shared.places.count()
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
    ///    [`shutdown_timeout`](crate::server::ServerBuilder::shutdown_timeout); handlers still running then
    ///    are stopped and their requests answered with the shutdown reply.
    /// 3. Every connection, headless ones included, is closed with code 1001 (a client
    ///    gets up to the [`close_timeout`](crate::server::ServerBuilder::close_timeout) to answer the
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

/// The shutdown sequence of [`Server::shutdown`](crate::server::Server::shutdown).
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
