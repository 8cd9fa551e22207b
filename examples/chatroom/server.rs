//! The chat room server: log in with a request, say things, and everyone logged in hears
//! them as `message` signals. Logging in creates a session holding the user name, so a
//! client that reconnects (to this server or, with a shared store, to one restarted) is
//! still logged in.
//!
//! The requests are the contract's (`contract.rs`), each routed to an async function whose
//! arguments say what it needs; the room's membership is kept by the hooks ([`Room`]).
//!
//! Shared by `examples/chatroom/main.rs` and `tests/example_chatroom.rs`.

use std::io;
use std::net::SocketAddr;

use tokio_webwire::SessionError;
use tokio_webwire::backplane::Backplane;
use tokio_webwire::protocol::ErrorCode;
use tokio_webwire::router::{FromConnection, Router};
use tokio_webwire::server::{
    CloseReason, Connection, Handler, HandlerError, History, RestoreRefused, Server,
    SubscribeRefused, TopicError,
};
use tokio_webwire::session::SessionStore;
use tokio_webwire::{Session, SessionInfo};

use crate::contract::{ChatMessage, LoggedIn, Login, Logout, Say};

// Shared with the other example of many servers.
#[path = "../common/secret.rs"]
mod secret;
use secret::backplane_secret;

/// Error code: the user name and password do not match.
pub(crate) const WRONG_CREDENTIALS: ErrorCode = ErrorCode::from_static("WRONG_CREDENTIALS");
/// Error code: the request needs a login, and the connection holds none.
pub(crate) const NOT_LOGGED_IN: ErrorCode = ErrorCode::from_static("NOT_LOGGED_IN");
/// Error code: already logged in; log out first.
pub(crate) const ALREADY_LOGGED_IN: ErrorCode = ErrorCode::from_static("ALREADY_LOGGED_IN");
/// Error code: the request is well-formed but says nothing (an empty message). A payload
/// that is not the contract's JSON is answered by the router, with its `INVALID_PAYLOAD`.
pub(crate) const BAD_REQUEST: ErrorCode = ErrorCode::from_static("BAD_REQUEST");
/// Error code: the session store (Redis, files) cannot save a login now; try again later.
pub(crate) const SESSIONS_UNAVAILABLE: ErrorCode = ErrorCode::from_static("SESSIONS_UNAVAILABLE");
/// Error code: the room's history (in Redis with `--redis`) cannot keep a message now, so
/// it was said to nobody; try again later.
pub(crate) const ROOM_UNAVAILABLE: ErrorCode = ErrorCode::from_static("ROOM_UNAVAILABLE");

/// What `say` replies when the members on this server got the message but the other
/// servers did not (a backplane away that keeps no history of the room): a partial
/// result, not an error. Sending the message again would show it twice here.
pub(crate) const SAID_HERE_ONLY: &str =
    "said to the members on this server only: the other servers could not be reached";

/// A demo's user table: name and password. A real server would keep password hashes.
const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder")];

/// The topic of the room.
pub(crate) const ROOM: &str = "room";

/// The chat room's handler: the contract's requests routed by name (another name is
/// answered `UNKNOWN_REQUEST`), the other hooks the room's.
pub(crate) fn chat_room() -> impl Handler {
    Router::new()
        .on(login)
        .on(say)
        .on(logout)
        .hooks(Room)
        .build()
        .expect("the contract's names are valid and distinct")
}

/// `login`: a session holding the user name, for a user of the table with the right
/// password. The client learns of the session (key and info) before it gets the reply,
/// and restores it by its key after a reconnection.
async fn login(conn: Connection, login: Login) -> Result<LoggedIn, HandlerError> {
    let known = USERS
        .iter()
        .any(|&(user, password)| user == login.user && password == login.password);
    if !known {
        tracing::info!(user = login.user, "login refused");
        let refused = "unknown user or wrong password";
        return Err(HandlerError::reply(WRONG_CREDENTIALS, refused));
    }
    if conn.session().is_some() {
        return Err(HandlerError::reply(ALREADY_LOGGED_IN, "log out first"));
    }
    let mut info = SessionInfo::new();
    info.insert("user", &login.user)?;
    match conn.create_session(info).await {
        Ok(_) => {}
        // Redis away, a full disk: the client was told of no session. Say so, so that it
        // tries again later (an internal error would say nothing).
        Err(SessionError::Store(why)) => {
            tracing::warn!(user = login.user, %why, "login failed: sessions cannot be saved");
            let later = "logins cannot be saved right now; try again in a moment";
            return Err(HandlerError::reply(SESSIONS_UNAVAILABLE, later));
        }
        Err(error) => return Err(error.into()),
    }
    tracing::info!(user = login.user, "logged in");
    Ok(LoggedIn { user: login.user })
}

/// `say`: a `message` signal to the whole room. Encoded once for the room, on every node;
/// a member that cannot keep up is disconnected (and reconnects), never waited for.
async fn say(
    conn: Connection,
    User(from): User,
    Say { text }: Say,
) -> Result<Option<String>, HandlerError> {
    if text.trim().is_empty() {
        return Err(HandlerError::reply(BAD_REQUEST, "say something"));
    }
    match conn.emit_to(ROOM, &ChatMessage { from, text }).await {
        Ok(_) => Ok(None),
        // This server's members got it, the other servers' did not: a partial result, so
        // that the sender does not say it again.
        Err(TopicError::Backplane { delivered, source }) => {
            tracing::warn!(delivered, %source, "said on this server only");
            Ok(Some(SAID_HERE_ONLY.to_owned()))
        }
        // The room keeps its history in Redis, which is away: said to nobody, so that no
        // member's resume can miss it; the sender may say it again.
        Err(TopicError::History(error)) => {
            tracing::warn!(%error, "the room cannot keep messages now");
            Err(HandlerError::reply(
                ROOM_UNAVAILABLE,
                "the room cannot keep messages right now: nothing was said; try again in a moment",
            ))
        }
        Err(error) => Err(HandlerError::internal(error)),
    }
}

/// `logout`: ends the login on every connection holding it.
async fn logout(conn: Connection, _: User, _: Logout) -> Result<(), HandlerError> {
    conn.close_session().await?;
    Ok(())
}

/// The logged-in user's name, for the routes of members only: a connection without a
/// login is answered `NOT_LOGGED_IN`, and the route does not run.
struct User(String);

impl<S> FromConnection<S> for User {
    fn from_connection(conn: &Connection, _: &S) -> Result<Self, HandlerError> {
        let session = conn
            .session()
            .ok_or_else(|| HandlerError::reply(NOT_LOGGED_IN, "log in first"))?;
        let user = session.info.get::<String>("user")?;
        user.map(User)
            .ok_or_else(|| HandlerError::internal("a session without a user"))
    }
}

/// The room's hooks. The room is a topic: a connection joins it when it logs in (or
/// restores its login after a reconnect) and leaves it when it logs out, is logged out,
/// or ends; the server keeps the members, on every node with a shared backplane. A client
/// that speaks the topics extension (the web page) joins it itself, while logged in, and
/// the room keeps its last messages, so such a client that reconnects gets every message
/// it missed (`docs/topics.md`).
#[derive(Debug, Default)]
pub(crate) struct Room;

impl Handler for Room {
    async fn connected(&self, conn: &Connection) {
        // The server's `connection` span adds the connection's id and address.
        tracing::info!(user_agent = conn.user_agent(), "connected");
    }

    /// The server took the connection out of the room already.
    async fn disconnected(&self, _conn: &Connection, reason: &CloseReason) {
        tracing::info!(%reason, "disconnected");
    }

    /// Logged in: a member of the room. (The login is answered once the backplane carries
    /// the room here: the server waits for it after this hook.)
    async fn session_created(&self, conn: &Connection, _session: &Session) {
        join(conn);
    }

    /// Logged out (by this client, or everywhere by the server): no longer a member.
    async fn session_left(&self, conn: &Connection, _key: &str) {
        conn.unsubscribe(ROOM);
    }

    /// Only members read the room: a client may subscribe itself to it while logged in.
    async fn subscribe_requested(
        &self,
        conn: &Connection,
        topic: &str,
    ) -> Result<(), SubscribeRefused> {
        if topic == ROOM && conn.session().is_some() {
            Ok(())
        } else {
            Err(SubscribeRefused)
        }
    }

    /// A session restored after a reconnect is a login only while its user still exists:
    /// one removed from the user table since is refused (its client is told the session
    /// was not found, and logs in again).
    async fn session_restored(
        &self,
        conn: &Connection,
        session: &Session,
    ) -> Result<(), RestoreRefused> {
        let name = session.info.get::<String>("user").ok().flatten();
        let known = name.is_some_and(|name| USERS.iter().any(|&(user, _)| user == name));
        if !known {
            return Err(RestoreRefused);
        }
        join(conn);
        Ok(())
    }
}

/// How many connections may hold one login at once (tabs, devices). The protocol's
/// reference allows any number (0), so a session key that leaked could be used on as many
/// connections as its thief likes; a room needs only a few.
pub(crate) const MAX_CONNECTIONS_PER_LOGIN: usize = 4;

/// How many messages the room keeps for clients that reconnect, and for how long.
const ROOM_HISTORY: usize = 200;

/// Joins the room; a connection that is closing already just does not. A client of the
/// topics extension subscribes itself (once logged in), so it is not joined twice.
fn join(conn: &Connection) {
    if conn.speaks_topics() {
        return;
    }
    if let Err(error) = conn.subscribe(ROOM) {
        tracing::debug!(%error, "not joined");
    }
}

/// A [`chat_room`] server keeping its sessions in `store`, reaching the other servers of
/// the service through `backplane` (`Local` when there are none).
pub(crate) fn build(store: impl SessionStore, backplane: impl Backplane) -> Server<impl Handler> {
    Server::builder(chat_room())
        .session_store(store)
        .max_session_connections(MAX_CONNECTIONS_PER_LOGIN)
        .history(
            ROOM,
            History::last(ROOM_HISTORY).max_age(std::time::Duration::from_secs(3600)),
        )
        .backplane(backplane)
        .backplane_secret(backplane_secret())
        .build()
        .expect("valid options")
}

/// Binds `addr` and serves `server` (see [`build`]) on it, in a task of its own. Returns
/// the server and the address it listens on.
pub(crate) async fn start<H: Handler>(
    addr: &str,
    server: Server<H>,
) -> io::Result<(Server<H>, SocketAddr)> {
    // Backlog 1024 (tokio's bind: 128): clients that all reconnect at once after a
    // restart wait in it, instead of having their connects dropped and sent again later.
    let listener = tokio_webwire::server::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(server.serve(listener));
    Ok((server, local))
}
