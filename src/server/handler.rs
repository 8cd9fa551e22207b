//! The hooks a server calls: [`Handler`], and what a request handler may fail with.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::http::StatusCode;

use crate::payload::Payload;
use crate::protocol::{ErrorCode, Name};
use crate::server::{CloseReason, Connection, UpgradeRequest};
use crate::session::Session;

/// The application behind a [`Server`](crate::server::Server): one hook per event.
///
/// Every method has a default, so a handler implements only what it needs; most implement
/// [`request`](Handler::request) and [`signal`](Handler::signal). Implement the methods
/// with `async fn`. The server shares one handler between all connections and calls it
/// from many tasks at once, hence `Send + Sync`; keep shared state in fields (behind a
/// lock or atomics), or implement the trait for your state and pass it as an `Arc`.
///
/// # Cancellation
/// The server drops a hook's future, at whatever await point it has reached, only when
/// waiting longer would be pointless or past a deadline:
/// [`before_upgrade`](Handler::before_upgrade) at the
/// [`handshake_timeout`](crate::server::ServerBuilder::handshake_timeout),
/// [`connected`](Handler::connected) when its connection closes meanwhile, the request and
/// signal handlers of a client that has gone once the
/// [`abandoned_handler_timeout`](crate::server::ServerBuilder::abandoned_handler_timeout)
/// (5 s by default) has passed since its socket closed, and every hook still running when a
/// [`Server::shutdown`](crate::server::Server::shutdown) reaches its
/// [`shutdown_timeout`](crate::server::ServerBuilder::shutdown_timeout) (a request stopped
/// that way is answered with the shutdown reply). Otherwise hooks run to completion.
///
/// ```
/// use tokio_webwire::server::{Connection, Handler, HandlerError, HandlerResult};
/// use tokio_webwire::{Payload, protocol::{ErrorCode, Name}};
///
/// struct Echo;
///
/// impl Handler for Echo {
///     async fn request(&self, _conn: &Connection, name: Name, payload: Payload) -> HandlerResult {
///         match name.as_str() {
///             "echo" => Ok(payload),
///             _ => Err(HandlerError::reply(ErrorCode::from_static("UNKNOWN"), "no such request")),
///         }
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Decides whether an HTTP request may be upgraded to a WebWire connection, and
    /// attaches data to the connection if it is.
    ///
    /// Runs before the WebSocket handshake for every connection the server upgrades:
    /// sockets it accepts itself ([`Server::serve`](crate::server::Server::serve),
    /// [`Server::serve_connection`](crate::server::Server::serve_connection)) and requests
    /// an HTTP application hands over (`Server::upgrade` with the `hyper` feature, axum's
    /// handler with `axum`), after the server's own checks (not shutting down, a WebSocket
    /// upgrade, version 13, an allowed `Origin`: see
    /// [`ServerBuilder::allowed_origins`](crate::server::ServerBuilder::allowed_origins);
    /// not full: a server at
    /// [`max_connections`](crate::server::ServerBuilder::max_connections) answers 503
    /// without asking the hook). The connection's place is taken after the hook, and the
    /// server checks again then whether it is full or shutting down (503 either way).
    /// `request` has the path, the headers and the extensions of the HTTP request;
    /// [`UpgradeRequest::attach`] hands what the hook learns (the user a cookie or a token
    /// names) to the connection, where every later hook reads it with
    /// [`Connection::get`]. `Err(status)` refuses the upgrade with that HTTP status (a
    /// 1xx status, which is no final answer, becomes 500, logged at warn level). The
    /// default accepts every request.
    ///
    /// ```
    /// use tokio_webwire::server::{Connection, Handler, HandlerResult, UpgradeRequest};
    /// use tokio_webwire::{Payload, http::StatusCode, protocol::Name};
    ///
    /// #[derive(Clone)]
    /// struct User(String);
    ///
    /// struct App;
    ///
    /// impl Handler for App {
    ///     async fn before_upgrade(&self, request: &mut UpgradeRequest) -> Result<(), StatusCode> {
    ///         let token = request.headers().get("authorization").ok_or(StatusCode::UNAUTHORIZED)?;
    ///         let user = match token.as_bytes() {
    ///             b"Bearer alice-token" => User("alice".into()), // or ask an auth service
    ///             _ => return Err(StatusCode::FORBIDDEN),
    ///         };
    ///         request.attach(user);
    ///         Ok(())
    ///     }
    ///
    ///     async fn request(&self, conn: &Connection, _: Name, _: Payload) -> HandlerResult {
    ///         let user = conn.get::<User>().map_or("nobody", |user| user.0.as_str());
    ///         Ok(Payload::utf8(format!("hello, {user}")))
    ///     }
    /// }
    /// ```
    fn before_upgrade(
        &self,
        request: &mut UpgradeRequest,
    ) -> impl Future<Output = Result<(), StatusCode>> + Send {
        let _ = request;
        async { Ok(()) }
    }

    /// A connection was established: the server has sent its handshake (AcceptConf).
    ///
    /// No request or signal of the connection reaches a handler before this hook returns,
    /// so it may set up what they need (subscribe, look up the user, replay a history).
    /// Meanwhile the connection goes on: whatever the hook sends
    /// ([`Connection::signal`], a session it creates, publishes to topics it subscribed
    /// to) is written as it is queued, so a hook may send any number of signals; the
    /// client's heartbeats and pings are read, its close frame is answered, and the read
    /// and write timeouts apply. Requests and signals the client sends meanwhile are read
    /// and held, at most
    /// [`max_concurrent_requests`](crate::server::ServerBuilder::max_concurrent_requests) of
    /// them (the memory the same permits bound otherwise), and handled in their order once the
    /// hook returns; beyond that the connection is not read until then, as when every permit
    /// is busy. A hook may take any time: if the connection closes meanwhile, it is dropped
    /// (cut short at its await point), and the requests it held are answered with the
    /// shutdown reply. A hook that panics closes the connection with code 1011.
    ///
    /// ```
    /// use tokio_webwire::server::{Connection, Handler};
    ///
    /// struct Chat { history: Vec<String> }
    ///
    /// impl Handler for Chat {
    ///     async fn connected(&self, conn: &Connection) {
    ///         // Any number of signals: the connection writes them while this runs.
    ///         for line in &self.history {
    ///             if conn.signal("message", line.as_str()).await.is_err() {
    ///                 return; // the connection closed meanwhile
    ///             }
    ///         }
    ///     }
    /// }
    /// ```
    fn connected(&self, conn: &Connection) -> impl Future<Output = ()> + Send {
        let _ = conn;
        async {}
    }

    /// The connection is closed: its socket is gone and no hook of it is still running.
    fn disconnected(
        &self,
        conn: &Connection,
        reason: &CloseReason,
    ) -> impl Future<Output = ()> + Send {
        let _ = (conn, reason);
        async {}
    }

    /// Answers a request: `Ok(payload)` becomes the reply (in the payload's encoding),
    /// `Err` an error reply ([`HandlerError`]). Requests of one connection run
    /// concurrently, so replies may leave in any order. The default answers every request
    /// with an error reply of code `NOT_IMPLEMENTED`.
    fn request(
        &self,
        conn: &Connection,
        name: Name,
        payload: Payload,
    ) -> impl Future<Output = HandlerResult> + Send {
        let _ = (conn, name, payload);
        async {
            Err(HandlerError::reply(
                ErrorCode::from_static("NOT_IMPLEMENTED"),
                "this server answers no requests",
            ))
        }
    }

    /// A session was created on `conn` ([`Connection::create_session`]): the client has
    /// been told and the store has it. `create_session` returns after this hook, once the
    /// backplane carries what the hook subscribed the connection to (as a restore is
    /// answered after [`session_restored`](Handler::session_restored)): a login answered
    /// after it misses nothing published to those topics on another server. The default
    /// does nothing.
    fn session_created(
        &self,
        conn: &Connection,
        session: &Session,
    ) -> impl Future<Output = ()> + Send {
        let _ = (conn, session);
        async {}
    }

    /// A connection restored the session `session` (PROTOCOL.md §4.4): the session is on
    /// `conn` ([`Connection::session`] returns it), and the client gets its reply when this
    /// hook returns. The place to re-join rooms, write an audit line, or refuse a session
    /// the application has since disabled: `Err(RestoreRefused)` takes the session off the
    /// connection again and the client is told it was not found. Refusing leaves the
    /// session in the store; to end it everywhere, call
    /// [`Server::close_session`](crate::server::Server::close_session). A hook that panics
    /// refuses too. A connection may restore the session it already holds (the hook runs
    /// again); refusing that takes the session off it, and
    /// [`session_left`](Handler::session_left) runs, as for any other way of losing it. If
    /// the session is revoked (or the connection logs out) while the hook runs, the
    /// restore is answered "not found" once the hook returns, and `session_left` runs once
    /// this hook has ended (it may have run before too): undo there, per connection, what
    /// this hook set up. The default accepts every restore.
    ///
    /// ```
    /// use tokio_webwire::Session;
    /// use tokio_webwire::server::{Connection, Handler, RestoreRefused};
    ///
    /// struct App;
    ///
    /// impl Handler for App {
    ///     async fn session_restored(
    ///         &self,
    ///         _conn: &Connection,
    ///         session: &Session,
    ///     ) -> Result<(), RestoreRefused> {
    ///         // A user the application has blocked since the login.
    ///         match session.info.get::<bool>("blocked") {
    ///             Ok(Some(true)) => Err(RestoreRefused),
    ///             _ => Ok(()),
    ///         }
    ///     }
    /// }
    /// ```
    fn session_restored(
        &self,
        conn: &Connection,
        session: &Session,
    ) -> impl Future<Output = Result<(), RestoreRefused>> + Send {
        let _ = (conn, session);
        async { Ok(()) }
    }

    /// The session `key` was closed for good and removed from the store. `conn` is the
    /// connection that closed it when that was its last connection leaving explicitly
    /// ([`Connection::close_session`], or a client's close request); `None` when the server
    /// revoked it ([`Server::close_session`](crate::server::Server::close_session)), whether
    /// or not connections held it then. A disconnect does not close a session, and neither
    /// does expiry in the store. Runs once when the last connection leaves, and once per
    /// `Server::close_session` call, also for a key that no longer existed (a store cannot
    /// tell whether its removal removed anything); a revocation racing the last
    /// connection's own logout may therefore report the key twice, once with each. With a
    /// [backplane](crate::server::ServerBuilder::backplane), a session that ends on another
    /// server (revoked there, or its last connection there logged out) also runs it here,
    /// with `None`, if connections of this server held it. The default does nothing.
    fn session_closed(
        &self,
        conn: Option<&Connection>,
        key: &str,
    ) -> impl Future<Output = ()> + Send {
        let _ = (conn, key);
        async {}
    }

    /// `conn` no longer holds the session `key`: it logged out
    /// ([`Connection::close_session`], or its client's close request), the session was
    /// revoked ([`Server::close_session`](crate::server::Server::close_session) on this
    /// server or, through the backplane, on another) or ended on another server, a restore
    /// of another key replaced it, a restore found it gone from the store, or
    /// [`session_restored`](Self::session_restored) refused a restore of the session the
    /// connection held. Runs for
    /// every connection that leaves a session this way (before
    /// [`session_closed`](Self::session_closed) when it was the last); not when the
    /// connection merely disconnects (the session stays restorable). The place to undo
    /// what a login granted this connection, such as the topics of a members-only room.
    ///
    /// It may run twice for one leave: a leave racing the `session_created` or
    /// `session_restored` hook that granted something is reported again after that hook,
    /// so that what it granted is undone too. Make it idempotent (unsubscribing is). The
    /// default does nothing.
    ///
    /// ```
    /// use tokio_webwire::server::{Connection, Handler};
    ///
    /// struct Chat;
    ///
    /// impl Handler for Chat {
    ///     async fn session_left(&self, conn: &Connection, _key: &str) {
    ///         conn.unsubscribe("members");
    ///     }
    /// }
    /// ```
    fn session_left(&self, conn: &Connection, key: &str) -> impl Future<Output = ()> + Send {
        let _ = (conn, key);
        async {}
    }

    /// A client that negotiated the topics extension (`docs/topics.md`,
    /// [`Connection::speaks_topics`]) asks to subscribe itself to `topic`: `Ok(())` lets
    /// it (it then receives the topic's publications, and what it missed when it resumes
    /// from a position), `Err(SubscribeRefused)` answers `WW_REFUSED`. The application's
    /// authorisation: who may read which topic. A hook that panics refuses.
    ///
    /// The default **refuses every subscription**: a server that never considered
    /// client subscriptions must not let any client read its topics, which may be
    /// private rooms. Subscriptions the server makes ([`Connection::subscribe`]) do not
    /// pass through this hook.
    ///
    /// ```
    /// use tokio_webwire::server::{Connection, Handler, SubscribeRefused};
    ///
    /// struct Chat;
    ///
    /// impl Handler for Chat {
    ///     async fn subscribe_requested(&self, conn: &Connection, topic: &str)
    ///         -> Result<(), SubscribeRefused> {
    ///         // Public rooms for everyone, the members' room for logged-in users.
    ///         match topic {
    ///             "members" if conn.session().is_none() => Err(SubscribeRefused),
    ///             _ if topic.starts_with("room/") || topic == "members" => Ok(()),
    ///             _ => Err(SubscribeRefused),
    ///         }
    ///     }
    /// }
    /// ```
    fn subscribe_requested(
        &self,
        conn: &Connection,
        topic: &str,
    ) -> impl Future<Output = Result<(), SubscribeRefused>> + Send {
        let _ = (conn, topic);
        async { Err(SubscribeRefused) }
    }

    /// Receives a signal: a one-way message, never answered. The default drops it.
    fn signal(
        &self,
        conn: &Connection,
        name: Name,
        payload: Payload,
    ) -> impl Future<Output = ()> + Send {
        let _ = (conn, name, payload);
        async {}
    }
}

/// A handler behind an `Arc` is a handler, so state can be shared with the rest of the
/// program.
impl<H: Handler> Handler for Arc<H> {
    fn before_upgrade(
        &self,
        request: &mut UpgradeRequest,
    ) -> impl Future<Output = Result<(), StatusCode>> + Send {
        (**self).before_upgrade(request)
    }

    fn connected(&self, conn: &Connection) -> impl Future<Output = ()> + Send {
        (**self).connected(conn)
    }

    fn disconnected(
        &self,
        conn: &Connection,
        reason: &CloseReason,
    ) -> impl Future<Output = ()> + Send {
        (**self).disconnected(conn, reason)
    }

    // Inlined, so a handler's future (a router's lookup and dispatch) is built in the job
    // that awaits it rather than in a call of its own.
    #[inline(always)]
    fn request(
        &self,
        conn: &Connection,
        name: Name,
        payload: Payload,
    ) -> impl Future<Output = HandlerResult> + Send {
        (**self).request(conn, name, payload)
    }

    fn session_created(
        &self,
        conn: &Connection,
        session: &Session,
    ) -> impl Future<Output = ()> + Send {
        (**self).session_created(conn, session)
    }

    fn session_restored(
        &self,
        conn: &Connection,
        session: &Session,
    ) -> impl Future<Output = Result<(), RestoreRefused>> + Send {
        (**self).session_restored(conn, session)
    }

    fn session_closed(
        &self,
        conn: Option<&Connection>,
        key: &str,
    ) -> impl Future<Output = ()> + Send {
        (**self).session_closed(conn, key)
    }

    fn session_left(&self, conn: &Connection, key: &str) -> impl Future<Output = ()> + Send {
        (**self).session_left(conn, key)
    }

    fn subscribe_requested(
        &self,
        conn: &Connection,
        topic: &str,
    ) -> impl Future<Output = Result<(), SubscribeRefused>> + Send {
        (**self).subscribe_requested(conn, topic)
    }

    fn signal(
        &self,
        conn: &Connection,
        name: Name,
        payload: Payload,
    ) -> impl Future<Output = ()> + Send {
        (**self).signal(conn, name, payload)
    }
}

/// [`Handler::session_restored`] refuses a restore: the client is told the session was not
/// found (reply `03`), and the connection holds no session.
///
/// ```
/// use tokio_webwire::server::RestoreRefused;
///
/// assert_eq!(RestoreRefused.to_string(), "session restore refused");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, thiserror::Error)]
#[error("session restore refused")]
pub struct RestoreRefused;

/// [`Handler::subscribe_requested`] refuses a client's subscription: the client's
/// subscribe request is answered with the error code `WW_REFUSED`.
///
/// ```
/// use tokio_webwire::server::SubscribeRefused;
///
/// assert_eq!(SubscribeRefused.to_string(), "subscription refused");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, thiserror::Error)]
#[error("subscription refused")]
pub struct SubscribeRefused;

/// How a request handler failed.
///
/// Either an error the client is meant to see ([`HandlerError::reply`]: an error reply with
/// a code and a message), or any other error ([`HandlerError::internal`], or `?` on any
/// `std::error::Error`), which reaches the client only as an internal-error reply while its
/// text is logged on the server. A panicking handler counts as an internal error too.
///
/// ```
/// use tokio_webwire::server::HandlerError;
/// use tokio_webwire::protocol::ErrorCode;
///
/// fn parse(text: &str) -> Result<u32, HandlerError> {
///     if text.is_empty() {
///         return Err(HandlerError::reply(ErrorCode::from_static("EMPTY"), "say something"));
///     }
///     Ok(text.parse::<u32>()?) // a parse failure becomes an internal error
/// }
/// assert!(parse("").unwrap_err().is_reply());
/// assert!(!parse("x").unwrap_err().is_reply());
/// ```
pub struct HandlerError(Failure);

/// What a request handler returns: the reply's payload (or `T`), or a [`HandlerError`]. The
/// signature of [`Handler::request`] fits on one line with it.
///
/// ```
/// use tokio_webwire::Payload;
/// use tokio_webwire::protocol::Name;
/// use tokio_webwire::server::{Connection, Handler, HandlerResult};
///
/// struct Echo;
///
/// impl Handler for Echo {
///     async fn request(&self, _: &Connection, _: Name, payload: Payload) -> HandlerResult {
///         Ok(payload)
///     }
/// }
/// ```
pub type HandlerResult<T = Payload> = Result<T, HandlerError>;

enum Failure {
    Reply { code: ErrorCode, message: String },
    Internal(Box<dyn StdError + Send + Sync>),
}

impl HandlerError {
    /// An error reply the client receives as is: `code` (printable ASCII, 1..=255 bytes,
    /// checked when the [`ErrorCode`] is built) and a UTF-8 `message`.
    #[must_use]
    pub fn reply(code: ErrorCode, message: impl Into<String>) -> Self {
        HandlerError(Failure::Reply {
            code,
            message: message.into(),
        })
    }

    /// An internal error: the client learns only that the request failed, the server logs
    /// `error`.
    #[must_use]
    pub fn internal(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        HandlerError(Failure::Internal(error.into()))
    }

    /// Whether the client sees this error's code and message.
    #[must_use]
    pub fn is_reply(&self) -> bool {
        matches!(self.0, Failure::Reply { .. })
    }

    /// The code and message of an error reply; `None` for an internal error.
    pub(crate) fn as_reply(&self) -> Option<(&ErrorCode, &str)> {
        match &self.0 {
            Failure::Reply { code, message } => Some((code, message)),
            Failure::Internal(_) => None,
        }
    }
}

/// Any error turns into an internal error, so a handler can use `?` freely. (This is why
/// `HandlerError` itself does not implement `std::error::Error`.)
impl<E: StdError + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError::internal(error)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Failure::Reply { code, message } => f
                .debug_struct("HandlerError::Reply")
                .field("code", code)
                .field("message", message)
                .finish(),
            Failure::Internal(error) => f
                .debug_tuple("HandlerError::Internal")
                .field(error)
                .finish(),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Failure::Reply { code, message } => write!(f, "error reply {code}: {message}"),
            Failure::Internal(error) => write!(f, "internal error: {error}"),
        }
    }
}

/// The handler that accepts every connection, answers every request with a
/// `NOT_IMPLEMENTED` error reply and drops signals: for tests and for servers that only
/// push signals through stored [`Connection`]s.
impl Handler for () {}
