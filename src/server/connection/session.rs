//! A connection's session: the one it holds, and the operations of `Sessions` as the
//! connection offers them.

use super::*;

impl Connection {
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

    pub(super) fn held_session(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
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

    pub(crate) async fn session_op(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.session_op.lock().await
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }
}
