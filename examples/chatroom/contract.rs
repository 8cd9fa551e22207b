//! The chat room's contract: every request and signal with its name and types, shared by
//! the server's routes, the terminal client's calls and, as TypeScript
//! (`js/types/chat.ts`, generated with the `ts` feature), the page's.

use serde::{Deserialize, Serialize};
use tokio_webwire::contract;

/// Logs in as one of the room's users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub(crate) struct Login {
    pub(crate) user: String,
    pub(crate) password: String,
}

/// Whom the login is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub(crate) struct LoggedIn {
    pub(crate) user: String,
}

impl contract::Request for Login {
    const NAME: &'static str = "login";
    type Reply = LoggedIn;
}

/// Says something to the room (logged in only). The reply is `None` when every member
/// heard it, or a note when only some did (the members on this server, while the other
/// servers cannot be reached): a partial result, not to be said again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub(crate) struct Say {
    pub(crate) text: String,
}

impl contract::Request for Say {
    const NAME: &'static str = "say";
    type Reply = Option<String>;
}

/// Logs out, on every connection of the login (logged in only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub(crate) struct Logout {}

impl contract::Request for Logout {
    const NAME: &'static str = "logout";
    type Reply = ();
}

/// What someone said, to every member of the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub(crate) struct ChatMessage {
    pub(crate) from: String,
    pub(crate) text: String,
}

impl contract::Signal for ChatMessage {
    const NAME: &'static str = "message";
}

/// The contract as TypeScript.
#[cfg(feature = "ts")]
#[allow(dead_code)] // tests/typescript.rs's, which writes and checks js/types/chat.ts
pub(crate) fn typescript() -> contract::TypeScript {
    contract::TypeScript::new()
        .request::<Login>()
        .request::<Say>()
        .request::<Logout>()
        .signal::<ChatMessage>()
}
