//! Our server's handlers for `serve --impl ours`: the echo, and the echo as one of 20 names in
//! a hand-written `match` or on a router.

use tokio_webwire::Payload;
use tokio_webwire::protocol::Name;
use tokio_webwire::server::{Connection, Handler, HandlerError, HandlerResult};

use crate::Result;

/// Our server's handler: every request is answered with its payload; with `yields`, only
/// after yielding once, so that it is not ready at its first poll and the server runs it on
/// a task of its own.
pub(crate) struct Echo {
    pub(crate) yields: bool,
}

impl Handler for Echo {
    async fn request(&self, _conn: &Connection, _name: Name, payload: Payload) -> HandlerResult {
        if self.yields {
            tokio::task::yield_now().await;
        }
        Ok(payload)
    }
}

/// What the 19 other routes answer: their name, so that none is optimised away.
pub(crate) fn other(name: &'static str) -> Result<Payload, HandlerError> {
    Ok(Payload::utf8(name))
}

/// The hand-written handler a router replaces: a `match` of 20 arms, the echo last.
pub(crate) struct Match20;

impl Handler for Match20 {
    async fn request(&self, _conn: &Connection, name: Name, payload: Payload) -> HandlerResult {
        match name.as_str() {
            "login" => other("login"),
            "logout" => other("logout"),
            "whoami" => other("whoami"),
            "say" => other("say"),
            "join" => other("join"),
            "leave" => other("leave"),
            "rooms" => other("rooms"),
            "members" => other("members"),
            "history" => other("history"),
            "typing" => other("typing"),
            "status" => other("status"),
            "profile" => other("profile"),
            "avatar" => other("avatar"),
            "search" => other("search"),
            "invite" => other("invite"),
            "kick" => other("kick"),
            "ban" => other("ban"),
            "topic" => other("topic"),
            "ping" => other("ping"),
            "echo" => Ok(payload),
            _ => Err(HandlerError::reply(
                tokio_webwire::protocol::ErrorCode::from_static("UNKNOWN"),
                "no such request",
            )),
        }
    }
}

/// The same 20 routes on a router, the echo added first: the route the walk down the
/// list reaches last.
pub(crate) fn router20() -> tokio_webwire::router::Router<(), impl tokio_webwire::router::Routes<()>>
{
    macro_rules! routes {
        ($router:expr; $($name:literal),*) => {
            $router$(.request($name, || async { other($name) }))*
        };
    }
    let router =
        tokio_webwire::router::Router::new().request("echo", |p: Payload| async move { p });
    routes!(router; "login", "logout", "whoami", "say", "join", "leave", "rooms", "members",
        "history", "typing", "status", "profile", "avatar", "search", "invite", "kick", "ban",
        "topic", "ping")
}
