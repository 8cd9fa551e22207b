//! The chat room server: log in with a request, say things, and everyone logged in hears
//! them as `message` signals. Logging in creates a session holding the user name, so a
//! client that reconnects (to this server or, with a shared store, to one restarted) is
//! still logged in.
//!
//! Shared by `examples/chatroom/main.rs` and `tests/example_chatroom.rs`.

use std::io;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio_webwire::SessionError;
use tokio_webwire::backplane::Backplane;
use tokio_webwire::protocol::{ErrorCode, Name};
use tokio_webwire::server::{
    CloseReason, Connection, Handler, HandlerError, History, RestoreRefused, Server,
    SubscribeRefused, TopicError,
};
use tokio_webwire::session::SessionStore;
use tokio_webwire::{Payload, Session, SessionInfo};

/// Error code: the user name and password do not match.
pub(crate) const WRONG_CREDENTIALS: &str = "WRONG_CREDENTIALS";
/// Error code: the request needs a session, and the connection holds none.
pub(crate) const NOT_LOGGED_IN: &str = "NOT_LOGGED_IN";
/// Error code: already logged in; log out first.
pub(crate) const ALREADY_LOGGED_IN: &str = "ALREADY_LOGGED_IN";
/// Error code: the payload is not what the request expects.
pub(crate) const BAD_REQUEST: &str = "BAD_REQUEST";
/// Error code: no such request.
pub(crate) const UNKNOWN_REQUEST: &str = "UNKNOWN_REQUEST";
/// Error code: the session store (Redis, files) cannot save a login now; try again later.
pub(crate) const SESSIONS_UNAVAILABLE: &str = "SESSIONS_UNAVAILABLE";
/// Error code: the room's history (in Redis with `--redis`) cannot keep a message now, so
/// it was said to nobody; try again later.
pub(crate) const ROOM_UNAVAILABLE: &str = "ROOM_UNAVAILABLE";

/// What `say` replies when the members on this server got the message but the other
/// servers did not (a backplane away that keeps no history of the room): a partial
/// result, not an error. Sending the message again would show it twice here.
pub(crate) const SAID_HERE_ONLY: &str =
    "said to the members on this server only: the other servers could not be reached";

/// The name of the signal that carries a [`ChatMessage`].
pub(crate) const MESSAGE: &str = "message";

/// A demo's user table: name and password. A real server would keep password hashes.
const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder")];

/// The payload of a `login` request (JSON).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Login {
    pub(crate) user: String,
    pub(crate) password: String,
}

/// The payload of a `message` signal (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChatMessage {
    pub(crate) from: String,
    pub(crate) text: String,
}

/// The handler. The room is a topic: a connection joins it when it logs in (or restores
/// its login after a reconnect) and leaves it when it logs out, is logged out, or ends;
/// the server keeps the members, on every node with a shared backplane. A client that
/// speaks the topics extension (the web page) joins it itself, while logged in, and the
/// room keeps its last messages, so such a client that reconnects gets every message it
/// missed (`docs/topics.md`).
#[derive(Debug, Default)]
pub(crate) struct ChatRoom;

/// The topic of the room.
pub(crate) const ROOM: &str = "room";

fn reply(code: &'static str, message: &str) -> HandlerError {
    HandlerError::reply(ErrorCode::from_static(code), message)
}

impl ChatRoom {
    async fn login(&self, conn: &Connection, payload: &Payload) -> Result<Payload, HandlerError> {
        let login: Login = payload.parse_json().map_err(|_| {
            reply(
                BAD_REQUEST,
                r#"expected {"user": "...", "password": "..."}"#,
            )
        })?;
        let known = USERS
            .iter()
            .any(|&(user, password)| user == login.user && password == login.password);
        if !known {
            tracing::info!(user = login.user, "login refused");
            return Err(reply(WRONG_CREDENTIALS, "unknown user or wrong password"));
        }
        if conn.session().is_some() {
            return Err(reply(ALREADY_LOGGED_IN, "log out first"));
        }
        let mut info = SessionInfo::new();
        info.insert("user", &login.user)?;
        // The client learns of the session (key and info) before it gets this reply, and
        // restores it by its key after a reconnection.
        match conn.create_session(info).await {
            Ok(_) => {}
            // Redis away, a full disk: the client was told of no session. Say so, so that
            // it tries again later (an internal error would say nothing).
            Err(SessionError::Store(why)) => {
                tracing::warn!(user = login.user, %why, "login failed: sessions cannot be saved");
                return Err(reply(
                    SESSIONS_UNAVAILABLE,
                    "logins cannot be saved right now; try again in a moment",
                ));
            }
            Err(error) => return Err(error.into()),
        }
        tracing::info!(user = login.user, "logged in");
        Ok(Payload::utf8(login.user))
    }
}

/// The user name in `conn`'s session.
fn user(conn: &Connection) -> Result<String, HandlerError> {
    let session = conn
        .session()
        .ok_or_else(|| reply(NOT_LOGGED_IN, "log in first"))?;
    session
        .info
        .get::<String>("user")?
        .ok_or_else(|| HandlerError::internal("a session without a user"))
}

impl Handler for ChatRoom {
    async fn connected(&self, conn: &Connection) {
        // The server's `connection` span adds the connection's id and address.
        tracing::info!(user_agent = conn.user_agent(), "connected");
    }

    /// The server took the connection out of the room already.
    async fn disconnected(&self, _conn: &Connection, reason: &CloseReason) {
        tracing::info!(%reason, "disconnected");
    }

    /// Logged in: a member of the room.
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

    /// `login` (JSON `{"user", "password"}`; replies the user name), and for those logged
    /// in: `say` (UTF-8 or UTF-16 text; broadcast as a `message` signal; replies nothing,
    /// or [`SAID_HERE_ONLY`] when the other servers could not be reached; refused with
    /// [`ROOM_UNAVAILABLE`] when the room's history in Redis cannot keep it), `logout`.
    async fn request(
        &self,
        conn: &Connection,
        name: Name,
        payload: Payload,
    ) -> Result<Payload, HandlerError> {
        if name == "login" {
            return self.login(conn, &payload).await;
        }
        let from = user(conn)?;
        match name.as_str() {
            "say" => {
                let text = payload
                    .to_text()
                    .map_err(|_| reply(BAD_REQUEST, "say something in text"))?;
                if text.trim().is_empty() {
                    return Err(reply(BAD_REQUEST, "say something"));
                }
                // Encoded once for the whole room, on every node; a member that cannot
                // keep up is disconnected (and reconnects), never waited for.
                let message = Payload::json(&ChatMessage { from, text })?;
                match conn.publish(ROOM, MESSAGE, message).await {
                    // Everyone got it: nothing to say.
                    Ok(_) => Ok(Payload::empty()),
                    // This server's members got it, the other servers' did not: a partial
                    // result, so that the sender does not say it again.
                    Err(TopicError::Backplane { delivered, source }) => {
                        tracing::warn!(delivered, %source, "said on this server only");
                        Ok(Payload::utf8(SAID_HERE_ONLY))
                    }
                    // The room keeps its history in Redis, which is away: said to nobody,
                    // so that no member's resume can miss it; the sender may say it again.
                    Err(TopicError::History(error)) => {
                        tracing::warn!(%error, "the room cannot keep messages now");
                        Err(reply(
                            ROOM_UNAVAILABLE,
                            "the room cannot keep messages right now: nothing was said; try again in a moment",
                        ))
                    }
                    Err(error) => Err(HandlerError::internal(error)),
                }
            }
            "logout" => {
                conn.close_session().await?;
                Ok(Payload::empty())
            }
            _ => Err(reply(UNKNOWN_REQUEST, "requests: login, say, logout")),
        }
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

/// A [`ChatRoom`] server keeping its sessions in `store`, reaching the other servers of
/// the service through `backplane` (`Local` when there are none).
pub(crate) fn build(store: impl SessionStore, backplane: impl Backplane) -> Server<ChatRoom> {
    Server::builder(ChatRoom)
        .session_store(store)
        .max_session_connections(MAX_CONNECTIONS_PER_LOGIN)
        .history(
            ROOM,
            History::last(ROOM_HISTORY).max_age(std::time::Duration::from_secs(3600)),
        )
        .backplane(backplane)
        .build()
        .expect("valid options")
}

/// Binds `addr` and serves `server` (see [`build`]) on it, in a task of its own. Returns
/// the server and the address it listens on.
pub(crate) async fn start(
    addr: &str,
    server: Server<ChatRoom>,
) -> io::Result<(Server<ChatRoom>, SocketAddr)> {
    // Backlog 1024 (tokio's bind: 128): clients that all reconnect at once after a
    // restart wait in it, instead of having their connects dropped and sent again later.
    let listener = tokio_webwire::server::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(server.serve(listener));
    Ok((server, local))
}
