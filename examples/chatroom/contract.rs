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

/// Says something to the room (logged in only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub(crate) struct Say {
    pub(crate) text: String,
}

impl contract::Request for Say {
    const NAME: &'static str = "say";
    type Reply = ();
}

/// Logs out, on every connection of the login.
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
pub(crate) fn typescript() -> contract::TypeScript {
    contract::TypeScript::new()
        .request::<Login>()
        .request::<Say>()
        .request::<Logout>()
        .signal::<ChatMessage>()
}
