//! Sessions on the server (PROTOCOL.md §4): creating, restoring, leaving and revoking them,
//! and which connections hold which key.
//!
//! # A session's life on one server
//! Two machines, the operations between their states named as the code names them.
//!
//! **A connection and a session** (one session per connection at most, kept in the
//! [`Connection`]; a per-connection async lock serialises these operations, so none
//! interleaves with another of the same connection):
//!
//! ```text
//!            create ──────────────────────────────┐
//!  Unheld ──restore: registered──► Restoring ──attach──► Held
//!    ▲                                  │                  │
//!    │                    revoked (the attach finds no     │ leave / leave_requested
//!    │                    registration: "not found")       │ disconnect
//!    └──────────────────────────────────┴──────────────────┤ revoke / revoked_elsewhere
//!                                                           ▼
//!                                                         Unheld
//! ```
//!
//! | operation | from | who asks | who is told |
//! |---|---|---|---|
//! | `create` | Unheld | the application ([`Connection::create_session`]) | the client (NotifySessionCreated, before the request's reply), `session_created` |
//! | `restore` | Unheld or Held (another session, which it leaves as a disconnect would) | the client (a restore request) | the client (the reply), `session_restored` (which may refuse) |
//! | `leave` | Held | the application ([`Connection::close_session`]) | the client (NotifySessionClosed), `session_left`, and `session_closed` if it was the last holder |
//! | `leave_requested` | Held (or Unheld: nothing happens) | the client (a close request) | the client (the empty reply), `session_left`, `session_closed` if last |
//! | `disconnect` | Held | the connection's end | nobody: the session stays stored and restorable |
//! | `revoke` | Held or Restoring, every holder of the key at once | the application ([`Server::close_session`](crate::server::Server::close_session)) | each holder's client (NotifySessionClosed) and `session_left`; `session_closed` once |
//! | `revoked_elsewhere` | as `revoke` | another node (the backplane) | as `revoke`, here |
//!
//! **A key on this server**: *Stored* (in the store, no connection here holds it) ⇄
//! *Active* (one connection here holds it at least: `create`, `restore` / the last holder
//! `disconnect`s) → *Ended* (removed from the store). A key ends when its last holder
//! `leave`s (a restore still under way on another connection then fails: only holders keep
//! it alive), or when it is revoked; either way the other nodes are told, and their
//! holders lose it too (`revoked_elsewhere`), so a revocation is whole whether the nodes
//! share one store or each has its own.
//!
//! The [`SessionRegistry`] keeps the registrations (key → connections): `register` checks
//! the per-session limit and registers in one step, `attach` runs only while the
//! registration stands (so a restore is wholly before or after a revocation), `leave` ends
//! the key with its last holder, `disconnect` drops one registration, `revoke` takes all of
//! a key's at once.
//!
//! What each operation guarantees besides:
//! - **create**: a fresh key, saved in the store, then announced to the client before the
//!   request's reply. A store that fails fails the creation (`SessionError::Store`), and
//!   the client is told nothing: no session is announced that a reconnect could not
//!   restore.
//! - **restore**: only a key the store has, within the per-session connection limit, and
//!   accepted by `Handler::session_restored`.
//! - **revoke**: the session is removed from the store first, so nothing restores it from
//!   then on, then taken off every connection of this server that holds it or is
//!   restoring it.

mod restore;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::backplane::{Envelope, Remote, Route};
use crate::protocol::{Message, MessageType, RequestId};
use crate::server::handler::RestoreRefused;
use crate::server::metrics::SessionMetrics;
use crate::server::panic::catch_panic;
use crate::server::source::{SessionBudget, Source};
use crate::server::{Connection, Handler};
use crate::session::{
    DynSessionStore, Session, SessionError, SessionInfo, SessionKeyGenerator, SessionRegistry,
    check_key,
};
use crate::sync;

/// How much longer a session's restore reply can be than its created notification: the
/// request id (8 bytes), and a `last_lookup` that may gain a fraction of up to nine digits
/// and its dot (10 bytes) over the one the notification carried.
const RESTORE_REPLY_GROWTH: usize = 8 + 10;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The handler's session hooks, callable without knowing the handler's type.
pub(crate) trait SessionEvents: Send + Sync + 'static {
    fn created<'a>(&'a self, conn: &'a Connection, session: &'a Session) -> BoxFuture<'a, ()>;
    fn restored<'a>(
        &'a self,
        conn: &'a Connection,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<(), RestoreRefused>>;
    fn closed<'a>(&'a self, conn: Option<&'a Connection>, key: &'a str) -> BoxFuture<'a, ()>;
    fn left<'a>(&'a self, conn: &'a Connection, key: &'a str) -> BoxFuture<'a, ()>;
}

impl<H: Handler> SessionEvents for H {
    fn created<'a>(&'a self, conn: &'a Connection, session: &'a Session) -> BoxFuture<'a, ()> {
        Box::pin(self.session_created(conn, session))
    }

    fn restored<'a>(
        &'a self,
        conn: &'a Connection,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<(), RestoreRefused>> {
        Box::pin(self.session_restored(conn, session))
    }

    fn closed<'a>(&'a self, conn: Option<&'a Connection>, key: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.session_closed(conn, key))
    }

    fn left<'a>(&'a self, conn: &'a Connection, key: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.session_left(conn, key))
    }
}

/// A registration not yet backed by an attached session: withdrawn when dropped, on every
/// way out but a successful attach (a dropped future included: a store that panics, a
/// shutdown's deadline), so that no registration outlives its operation.
struct Reservation<'a> {
    sessions: &'a Sessions,
    key: &'a str,
    conn_id: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.sessions.registry.disconnect(self.key, self.conn_id);
    }
}

/// A session saved in the store but not announced to its client: removed from the store
/// when dropped (on a task, as dropping cannot wait), so that a creation that did not reach
/// its client leaves nothing a key could restore.
struct Unannounced<'a> {
    store: &'a Arc<dyn DynSessionStore>,
    key: &'a str,
}

impl Drop for Unannounced<'_> {
    fn drop(&mut self) {
        let (store, key) = (Arc::clone(self.store), self.key.to_owned());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(error) = store.remove(&key).await {
                        tracing::warn!(%error, "an unannounced session stays stored until it expires");
                    }
                });
            }
            // Dropped outside the runtime: nobody has its key, and it expires.
            Err(_) => tracing::warn!("an unannounced session stays stored until it expires"),
        }
    }
}

/// The session state of a server, shared by its connections.
pub(crate) struct Sessions {
    enabled: bool,
    store: Arc<dyn DynSessionStore>,
    keys: Arc<dyn SessionKeyGenerator>,
    /// Who holds (or is restoring) which key, with their handles.
    registry: SessionRegistry<Connection>,
    events: Arc<dyn SessionEvents>,
    metrics: SessionMetrics,
    /// The other servers of the service, told when a session ends here for good.
    remote: Arc<Remote>,
    /// Each source's sessions: beyond its budget, its oldest leave the store.
    budget: SessionBudget,
    v6_prefix: u8,
    /// The key of each session registered here, by its route (what other nodes name it
    /// by): empty for a server alone.
    routes: Arc<Mutex<HashMap<String, String>>>,
}

/// How many sessions [`Sessions::recheck`] looks up at once.
const RECHECKS_AT_ONCE: usize = 32;

/// The session options of [`ServerBuilder`](crate::server::ServerBuilder).
#[derive(Clone)]
pub(crate) struct SessionConfig {
    pub(crate) enabled: bool,
    pub(crate) store: Arc<dyn DynSessionStore>,
    pub(crate) keys: Arc<dyn SessionKeyGenerator>,
    pub(crate) max_connections: usize,
    /// Sessions one source may have created and still hold in the store (0: no budget).
    pub(crate) max_per_source: usize,
    /// IPv6 sources are counted by this prefix.
    pub(crate) v6_prefix: u8,
}

impl Sessions {
    pub(crate) fn new(
        config: SessionConfig,
        events: Arc<dyn SessionEvents>,
        remote: Arc<Remote>,
    ) -> Self {
        let metrics = SessionMetrics::new();
        let mut registry = SessionRegistry::new(config.max_connections);
        if let Some(observer) = metrics.active_observer() {
            registry = registry.observed(observer);
        }
        let routes = Arc::new(Mutex::new(HashMap::new()));
        if let Some(seal) = remote.seal().cloned() {
            // A session's route is wanted while a connection here has it registered.
            let (remote, routes) = (Arc::clone(&remote), Arc::clone(&routes));
            registry = registry.on_key(move |key, added| {
                let route = seal.session_route(key);
                let mut routes = sync::lock(&routes);
                if added {
                    routes.insert(route.clone(), key.to_owned());
                    remote.acquire(|_| Route::session(route));
                } else {
                    routes.remove(&route);
                    remote.release(|_| Route::session(route));
                }
            });
        }
        Sessions {
            enabled: config.enabled,
            store: config.store,
            keys: config.keys,
            registry,
            events,
            metrics,
            remote,
            budget: SessionBudget::new(config.max_per_source),
            v6_prefix: config.v6_prefix,
            routes,
        }
    }

    /// The key of the session registered here under the route `route`.
    pub(crate) fn key_of_route(&self, route: &str) -> Option<String> {
        let routes = sync::lock(&self.routes);
        routes.get(route).cloned()
    }

    /// The backplane's link came back after a gap in which revocations may have been
    /// lost: every session registered here is looked up in the store
    /// ([`RECHECKS_AT_ONCE`] at a time), and the connections holding one the store no
    /// longer has lose it and are told, as in a revocation (the `session_closed` hook runs
    /// here once for each). A store that fails a lookup leaves that session as it is.
    pub(crate) async fn recheck(&self) {
        use futures_util::StreamExt;
        if !self.enabled {
            return;
        }
        let keys = self.registry.keys();
        let gone = futures_util::stream::iter(keys)
            .map(|key| async move {
                match catch_panic(self.store.lookup(&key)).await {
                    Ok(Ok(None)) => {
                        if self.revoke_holders(&key).await > 0 {
                            if let Err(panic) = catch_panic(self.events.closed(None, &key)).await {
                                tracing::error!(panic, "the session_closed hook panicked");
                            }
                            return 1;
                        }
                        0
                    }
                    Ok(Ok(Some(_))) => 0,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "a session could not be checked against the store");
                        0
                    }
                    Err(panic) => {
                        tracing::error!(panic, "the session store panicked in a lookup");
                        0
                    }
                }
            })
            .buffer_unordered(RECHECKS_AT_ONCE)
            .fold(0usize, |sum, gone| async move { sum + gone })
            .await;
        if gone > 0 {
            tracing::info!(
                sessions = gone,
                "sessions revoked while the backplane was away were taken from their connections"
            );
        }
    }

    /// Tells the other nodes that the session `key` has ended: their connections lose it
    /// (a store they share no longer has it, so they could not restore it anyway).
    ///
    /// It travels on the service's route, to every node (each one's own store may keep the
    /// session), with the key encrypted and the session's route beside it.
    async fn forward_closed(&self, key: &str) -> Result<(), crate::backplane::BackplaneError> {
        let envelope = |seal: &crate::backplane::Seal| {
            let envelope = Envelope::SessionClosed {
                route: Bytes::from(seal.session_route(key)),
                sealed: Bytes::from(seal.encrypt(key.as_bytes())),
            };
            (Route::service(), envelope)
        };
        self.remote.send(envelope).await
    }

    /// Takes the session `key` off `conn` and out of the registry. Returns whether `conn`
    /// still held it (a revocation may have taken it first, and run `session_left`).
    fn disconnect_from(&self, conn: &Connection, key: &str) -> bool {
        let held = conn.take_session_if(key);
        self.registry.disconnect(key, conn.id());
        held
    }

    /// `conn` leaves its session explicitly (under its session lock): the last connection
    /// to leave ends it. Returns the session's key if `conn` held one, and whether it
    /// ended; the caller runs the `session_closed` hook once it has released the lock (a
    /// hook may start a new session on the connection).
    async fn leave_held(&self, conn: &Connection) -> Option<(String, bool)> {
        // Taken in one step: a revocation racing this either took it first (and told the
        // client) or finds nothing.
        let session = conn.take_session()?;
        // Only connections that hold it keep it alive: a restore still under way on
        // another connection fails (the session was closed before it was restored), rather
        // than keep the session stored for a restore that may fail and leave it unheld.
        let key = session.key.as_str();
        let last = self
            .registry
            .leave(key, conn.id(), |other| other.holds_session(key));
        if last {
            self.metrics.closed();
            if let Err(error) = self.store.remove(&session.key).await {
                tracing::error!(%error, "the session store could not remove a closed session");
            }
            // Connections to other servers may hold it too: it is gone from the store
            // they share, so they lose it now and are told, rather than find out at
            // their next restore.
            if let Err(error) = self.forward_closed(&session.key).await {
                tracing::error!(%error, "a closed session could not be announced to the other nodes");
            }
        }
        Some((session.key, last))
    }

    /// [`Connection::create_session`].
    pub(crate) async fn create(
        &self,
        conn: &Connection,
        info: SessionInfo,
    ) -> Result<Session, SessionError> {
        if !self.enabled {
            return Err(SessionError::Disabled);
        }
        let op = conn.session_op().await;
        if conn.is_closed() {
            return Err(SessionError::Closed);
        }
        if conn.session().is_some() {
            return Err(SessionError::AlreadyActive);
        }
        let key = self.keys.generate();
        check_key(&key)?;
        let session = Session::new(key, info);
        let json = session
            .to_json()
            .map_err(|error| SessionError::Store(error.to_string()))?;
        // A session travels twice: in this notification and, after every reconnect, in a
        // restore reply. One over the size limit would make the Go and JavaScript clients
        // drop the connection, and its restore would fail later; refuse it now.
        let len = 1 + json.len() + RESTORE_REPLY_GROWTH;
        let limit = conn.max_message_size();
        if len > limit {
            return Err(SessionError::TooLarge { len, limit });
        }
        let notification = Message::NotifySessionCreated { session: json }
            .encode()
            .map_err(|error| SessionError::Store(error.to_string()))?;
        // Registered before it is announced (a custom generator that repeats a key must not
        // push a session past its connection limit); undone if the announcement fails or
        // this future is dropped while it waits for room in the queue.
        self.registry.register(&session.key, conn.id(), conn)?;
        let reservation = Reservation {
            sessions: self,
            key: &session.key,
            conn_id: conn.id(),
        };
        // Saved before it is announced: the client is told of a session only once a
        // reconnect can restore it. A store that fails (Redis away, a full disk) fails the
        // login, which the client can try again; the reference server announced the session
        // anyway, and its client learnt only at the next reconnect that it was gone.
        self.store.save(&session).await.map_err(|error| {
            tracing::warn!(%error, "a login failed: the session store could not save it");
            SessionError::from(error)
        })?;
        // Announced once what other nodes send the session reaches this one.
        self.remote.sync().await;
        // Stored, not yet announced: removed again if the announcement fails or this
        // future is dropped while it waits for room in the queue.
        let stored = Unannounced {
            store: &self.store,
            key: &session.key,
        };
        if conn.send(notification).await.is_err() {
            return Err(SessionError::Closed);
        }
        // Announced: from here on the registration and the stored copy belong to the
        // attached session. (A key nobody knows yet cannot have been revoked meanwhile.)
        std::mem::forget(reservation);
        std::mem::forget(stored);
        conn.set_session(Some(session.clone()));
        self.metrics.created();
        if let Some(addr) = conn.remote_addr() {
            // A source beyond its budget loses its own oldest sessions, nobody else's.
            let source = Source::of(addr.ip(), self.v6_prefix);
            for key in self.budget.created(source, &session.key) {
                tracing::debug!(%source, "session evicted: its source is over its budget");
                if let Err(error) = self.store.remove(&key).await {
                    tracing::warn!(%error, "an evicted session could not be removed");
                }
            }
        }
        // Hooks run without the lock, so that they may use the connection's sessions.
        drop(op);
        self.events.created(conn, &session).await;
        // A logout or revocation that came while the hook ran may have run `session_left`
        // before the hook granted anything: undo it again.
        if !conn.holds_session(&session.key) {
            self.events.left(conn, &session.key).await;
        }
        // Returned once what the hook subscribed to reaches this node from the others (at
        // once when it changed nothing), so that the login's answer promises it.
        self.remote.sync().await;
        Ok(session)
    }

    /// [`Connection::close_session`]: the connection leaves its session and is told so.
    pub(crate) async fn leave(&self, conn: &Connection) -> Result<(), SessionError> {
        if !self.enabled {
            return Err(SessionError::Disabled);
        }
        let op = conn.session_op().await;
        let Some((key, last)) = self.leave_held(conn).await else {
            return Ok(());
        };
        // The connection may be gone already: then there is nobody to tell.
        let _ = conn.send(session_closed_notification()).await;
        drop(op);
        self.events.left(conn, &key).await;
        if last {
            self.events.closed(Some(conn), &key).await;
        }
        Ok(())
    }

    /// [`Server::close_session`](crate::server::Server::close_session): ends the session
    /// `key` everywhere. Removed from the store first (from then on no restore finds it),
    /// then every registration of the key is taken at once, so a restore still under way
    /// fails ("not found") and every connection holding it loses it and is told; then the
    /// `session_closed` hook, once. Returns how many connections held it.
    ///
    /// A store failure is returned after the connections have lost the session (the
    /// stored copy may then survive, and the hook does not run).
    pub(crate) async fn revoke(&self, key: &str) -> Result<usize, SessionError> {
        if !self.enabled {
            return Err(SessionError::Disabled);
        }
        let removed = self.store.remove(key).await;
        if let Err(error) = &removed {
            tracing::error!(%error, "the session store could not remove a revoked session");
        }
        // The other nodes are told at the same time as this node's connections, not after
        // them (each of which may wait for room in its queue).
        let (held, forwarded) =
            futures_util::future::join(self.revoke_holders(key), self.forward_closed(key)).await;
        removed?;
        self.metrics.closed();
        self.events.closed(None, key).await;
        if let Err(error) = forwarded {
            tracing::error!(%error, "a revocation could not reach the other nodes");
            return Err(SessionError::Backplane {
                held,
                reason: error.to_string(),
            });
        }
        Ok(held)
    }

    /// Another node ended the session `key` (revoked it, or its last connection there
    /// logged out): removed from this server's store too, then this server's connections
    /// lose it as in [`revoke`](Self::revoke), and the `session_closed` hook runs here too
    /// if any of them held it (so that per-node state of the session goes with it).
    ///
    /// The removal is what makes a revocation whole when each node has a store of its own
    /// (a `MemoryStore` or `FileStore` per process): the revoking node could only remove
    /// it from its own. With a shared store it is a second removal of a key already gone.
    pub(crate) async fn revoked_elsewhere(&self, key: &str) {
        if !self.enabled || check_key(key).is_err() {
            return;
        }
        // Store first, as in `revoke`: a restore racing this finds nothing, or is taken
        // with the registrations below. (On a task of the hub's: a store that panics must
        // not keep the connections here from losing the session.)
        match catch_panic(self.store.remove(key)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(
                %error,
                "the session store could not remove a session ended on another node"
            ),
            Err(panic) => tracing::error!(panic, "the session store panicked in a removal"),
        }
        if self.revoke_holders(key).await > 0 {
            if let Err(panic) = catch_panic(self.events.closed(None, key)).await {
                tracing::error!(panic, "the session_closed hook panicked");
            }
        }
    }

    /// Takes every registration of `key` at once; each connection that held the session
    /// loses it and is told. Returns how many held it.
    async fn revoke_holders(&self, key: &str) -> usize {
        let mut holders = self.registry.revoke(key);
        holders.retain(|conn| conn.take_session_if(key));
        let closed = session_closed_notification();
        // Each waits for room in its own connection's queue (at most until that
        // connection's write timeout), so a slow one does not hold up the others.
        futures_util::future::join_all(holders.iter().map(|conn| async {
            let _ = conn.send(closed.clone()).await;
            if let Err(panic) = catch_panic(self.events.left(conn, key)).await {
                tracing::error!(panic, "the session_left hook panicked");
            }
        }))
        .await;
        holders.len()
    }

    /// Runs `session_left` for each session `conn` left, in order (with its session lock
    /// released).
    async fn tell_left(&self, conn: &Connection, left: &[String]) {
        for key in left {
            self.events.left(conn, key).await;
        }
    }

    /// Answers a close-session request (§4.5): the empty reply, whether or not the
    /// connection held a session; no notification to the requester.
    pub(crate) async fn leave_requested(&self, conn: &Connection, id: RequestId) -> Message {
        if !self.enabled {
            return Message::ReplySessionsDisabled { id };
        }
        let op = conn.session_op().await;
        let left = self.leave_held(conn).await;
        drop(op);
        if let Some((key, last)) = left {
            self.events.left(conn, &key).await;
            if last {
                self.events.closed(Some(conn), &key).await;
            }
        }
        Message::ReplyBinary {
            id,
            data: Bytes::new(),
        }
    }

    /// The connection is gone: its registration goes, the session stays (§4.6). Under the
    /// connection's session lock, so that an operation still under way on a stored handle
    /// (a create from another task) ends first and its session is not left registered to
    /// a connection that no longer exists.
    pub(crate) async fn disconnect(&self, conn: &Connection) {
        let _op = conn.session_op().await;
        self.disconnect_now(conn);
    }

    /// [`disconnect`](Self::disconnect) without the session lock, for a connection
    /// task that cannot wait any more (it panicked, or the runtime dropped it): a session
    /// operation still running on a handler task of the connection may then register
    /// after this.
    pub(crate) fn disconnect_now(&self, conn: &Connection) {
        if let Some(session) = conn.take_session() {
            self.registry.disconnect(&session.key, conn.id());
        }
    }

    /// The connections holding the session `key` (not those still restoring it).
    pub(crate) fn connections(&self, key: &str) -> Vec<Connection> {
        let mut holders = self.registry.holders(key);
        holders.retain(|conn| conn.holds_session(key));
        holders
    }

    /// How many sessions have at least one connection.
    pub(crate) fn active(&self) -> usize {
        self.registry.active_sessions()
    }
}

/// The notification that tells a client it has lost its session: its type byte alone.
fn session_closed_notification() -> Bytes {
    const FRAME: [u8; 1] = [MessageType::NotifySessionClosed as u8];
    Bytes::from_static(&FRAME)
}
