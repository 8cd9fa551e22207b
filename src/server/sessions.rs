//! Sessions on the server (PROTOCOL.md §4): creating, restoring and closing them, and which
//! connections hold which key.
//!
//! Per connection, one session at most, kept in the [`Connection`]; a per-connection async
//! lock serialises that connection's session operations (create, restore, close), so none
//! of them can interleave with another of the same connection. Across connections, the
//! [`SessionRegistry`] checks the connection limit and registers in one step.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use crate::protocol::{Message, RequestId};
use crate::server::metrics::SessionMetrics;
use crate::server::{Connection, Handler};
use crate::session::{
    DynSessionStore, Session, SessionError, SessionInfo, SessionKeyGenerator, SessionRegistry,
    check_key,
};

type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The handler's session hooks, callable without knowing the handler's type.
pub(crate) trait SessionEvents: Send + Sync + 'static {
    fn created<'a>(&'a self, conn: &'a Connection, session: &'a Session) -> BoxFuture<'a>;
    fn closed<'a>(&'a self, conn: &'a Connection, key: &'a str) -> BoxFuture<'a>;
}

impl<H: Handler> SessionEvents for H {
    fn created<'a>(&'a self, conn: &'a Connection, session: &'a Session) -> BoxFuture<'a> {
        Box::pin(self.session_created(conn, session))
    }

    fn closed<'a>(&'a self, conn: &'a Connection, key: &'a str) -> BoxFuture<'a> {
        Box::pin(self.session_closed(conn, key))
    }
}

/// A registration not yet backed by an attached session: withdrawn when dropped.
struct Reservation<'a> {
    registry: &'a SessionRegistry,
    key: &'a str,
    conn_id: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.registry.deregister(self.key, self.conn_id);
    }
}

/// The session state of a server, shared by its connections.
pub(crate) struct Sessions {
    enabled: bool,
    store: Arc<dyn DynSessionStore>,
    keys: Arc<dyn SessionKeyGenerator>,
    registry: SessionRegistry,
    /// The connections that hold a session, by connection id.
    holders: Mutex<HashMap<u64, Connection>>,
    events: Arc<dyn SessionEvents>,
    metrics: SessionMetrics,
}

/// The session options of [`ServerBuilder`](crate::server::ServerBuilder).
#[derive(Clone)]
pub(crate) struct SessionConfig {
    pub(crate) enabled: bool,
    pub(crate) store: Arc<dyn DynSessionStore>,
    pub(crate) keys: Arc<dyn SessionKeyGenerator>,
    pub(crate) max_connections: usize,
}

impl Sessions {
    pub(crate) fn new(config: SessionConfig, events: Arc<dyn SessionEvents>) -> Self {
        Sessions {
            enabled: config.enabled,
            store: config.store,
            keys: config.keys,
            registry: SessionRegistry::new(config.max_connections),
            holders: Mutex::new(HashMap::new()),
            events,
            metrics: SessionMetrics::new(),
        }
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Connection>> {
        // Every critical section is one map operation: a panic cannot leave it half done.
        self.holders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `session` on `conn` and registers it (the registry entry is already made).
    fn attach(&self, conn: &Connection, session: Session) {
        conn.set_session(Some(session));
        self.holders().insert(conn.id(), conn.clone());
        self.metrics.held(|| self.registry.active_sessions());
    }

    /// Takes the session off `conn` and out of the registry; true if `conn` was the
    /// session's last connection.
    fn detach(&self, conn: &Connection, key: &str) -> bool {
        conn.set_session(None);
        self.holders().remove(&conn.id());
        let last = self.registry.deregister(key, conn.id());
        self.metrics.held(|| self.registry.active_sessions());
        last
    }

    /// `conn` leaves its session explicitly: the last connection to leave destroys it.
    /// True if it did: the caller runs the `session_closed` hook once it has released the
    /// connection's session lock (a hook may start a new session on it).
    async fn leave(&self, conn: &Connection, key: &str) -> bool {
        let last = self.detach(conn, key);
        if last {
            self.metrics.closed();
            if let Err(error) = self.store.remove(key).await {
                tracing::error!(%error, "the session store could not remove a closed session");
            }
        }
        last
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
        let notification = Message::NotifySessionCreated { session: json }
            .encode()
            .map_err(|error| SessionError::Store(error.to_string()))?;
        // Registered before it is announced (a custom generator that repeats a key must not
        // push a session past its connection limit); undone if the announcement fails or
        // this future is dropped while it waits for room in the queue.
        self.registry.try_register(&session.key, conn.id())?;
        let reservation = Reservation {
            registry: &self.registry,
            key: &session.key,
            conn_id: conn.id(),
        };
        if conn.send(notification).await.is_err() {
            return Err(SessionError::Closed);
        }
        // Announced: from here on the registration belongs to the attached session.
        std::mem::forget(reservation);
        self.attach(conn, session.clone());
        self.metrics.created();
        if let Err(error) = self.store.save(&session).await {
            // As the reference: the session lives on, it just cannot be restored later.
            tracing::error!(%error, "the session store could not save a new session");
        }
        // Hooks run without the lock, so that they may use the connection's sessions.
        drop(op);
        self.events.created(conn, &session).await;
        Ok(session)
    }

    /// [`Connection::close_session`]: the connection leaves its session and is told so.
    pub(crate) async fn close(&self, conn: &Connection) -> Result<(), SessionError> {
        if !self.enabled {
            return Err(SessionError::Disabled);
        }
        let op = conn.session_op().await;
        let Some(session) = conn.session() else {
            return Ok(());
        };
        let last = self.leave(conn, &session.key).await;
        let closed = Message::NotifySessionClosed
            .encode()
            .map_err(|error| SessionError::Store(error.to_string()))?;
        // The connection may be gone already: then there is nobody to tell.
        let _ = conn.send(closed).await;
        drop(op);
        if last {
            self.events.closed(conn, &session.key).await;
        }
        Ok(())
    }

    /// Answers a restore request (§4.4) for `conn`.
    ///
    /// A connection that already holds a session and restores another one leaves the old
    /// one first, as a disconnect would (the old session stays stored and restorable); the
    /// reference keeps both registrations, a leak. Restoring the session it holds just
    /// answers with it again.
    pub(crate) async fn restore(&self, conn: &Connection, id: RequestId, key: Bytes) -> Message {
        if !self.enabled {
            return Message::ReplySessionsDisabled { id };
        }
        let _op = conn.session_op().await;
        // Keys are untrusted bytes: one we could never have made is simply not found.
        let Some(key) = std::str::from_utf8(&key)
            .ok()
            .filter(|key| check_key(key).is_ok())
        else {
            return Message::ReplySessionNotFound { id };
        };
        let current = conn.session();
        let already_held = current.as_ref().is_some_and(|session| session.key == key);
        if !already_held {
            if let Err(error) = self.registry.try_register(key, conn.id()) {
                tracing::debug!(%error, "restore refused");
                return Message::ReplyMaxSessConnsReached { id };
            }
        }
        let release = |this: &Self| {
            if !already_held {
                this.registry.deregister(key, conn.id());
            }
        };
        let session = match self.store.lookup(key).await {
            Ok(Some(session)) => session,
            Ok(None) => {
                release(self);
                return Message::ReplySessionNotFound { id };
            }
            Err(error) => {
                tracing::error!(%error, "the session store failed a lookup");
                release(self);
                return Message::ReplyInternalError { id };
            }
        };
        // The key the client sent is the session's key, whatever the store returned.
        let session = Session {
            key: key.to_owned(),
            ..session
        };
        let json = match session.to_json() {
            Ok(json) => json,
            Err(error) => {
                tracing::error!(%error, "a stored session cannot be written as JSON");
                release(self);
                return Message::ReplyInternalError { id };
            }
        };
        if let Some(old) = current.filter(|_| !already_held) {
            self.detach(conn, &old.key);
        }
        self.attach(conn, session);
        Message::ReplyUtf8 { id, data: json }
    }

    /// Answers a close-session request (§4.5): the empty reply, whether or not the
    /// connection held a session; no notification to the requester.
    pub(crate) async fn close_requested(&self, conn: &Connection, id: RequestId) -> Message {
        if !self.enabled {
            return Message::ReplySessionsDisabled { id };
        }
        let op = conn.session_op().await;
        let closed = match conn.session() {
            Some(session) if self.leave(conn, &session.key).await => Some(session.key),
            _ => None,
        };
        drop(op);
        if let Some(key) = closed {
            self.events.closed(conn, &key).await;
        }
        Message::ReplyBinary {
            id,
            data: Bytes::new(),
        }
    }

    /// The connection is gone: its registration goes, the session stays (§4.6).
    pub(crate) fn disconnected(&self, conn: &Connection) {
        if let Some(session) = conn.session() {
            self.detach(conn, &session.key);
        }
    }

    /// The connections holding the session `key`.
    pub(crate) fn connections(&self, key: &str) -> Vec<Connection> {
        let ids = self.registry.connections(key);
        let holders = self.holders();
        ids.iter()
            .filter_map(|id| holders.get(id).cloned())
            .collect()
    }

    /// How many sessions have at least one connection.
    pub(crate) fn active(&self) -> usize {
        self.registry.active_sessions()
    }
}
