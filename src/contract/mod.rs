//! One definition of a request or a signal for both ends: its name, its payload type and,
//! for a request, its reply type.
//!
//! A contract type is an ordinary serde type with a name: the server's
//! [`Router::on`](crate::router::Router::on) routes it and checks the handler's argument
//! and reply types against it, the client's [`Client::call`](crate::Client::call) sends it
//! and reads its reply as `Reply`, so a change to either side that breaks the other does
//! not compile. Signals go the same way: [`Client::emit`](crate::Client::emit),
//! [`Connection::emit`](crate::server::Connection::emit), and to a topic's subscribers
//! [`Server::emit_to`](crate::server::Server::emit_to).
//! On the wire it is a plain v2.0 request (or signal) named [`Request::NAME`]
//! with the value as UTF-8 JSON: peers without the contract (the JavaScript client, the Go
//! reference) call it by its name.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tokio_webwire::contract;
//!
//! /// Logs in; the reply says whom.
//! #[derive(Serialize, Deserialize)]
//! pub struct Login { pub user: String }
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct Welcome { pub display_name: String }
//!
//! impl contract::Request for Login {
//!     const NAME: &'static str = "login";
//!     type Reply = Welcome;
//! }
//!
//! /// Someone is typing (no reply).
//! #[derive(Serialize, Deserialize)]
//! pub struct Typing { pub user: String }
//!
//! impl contract::Signal for Typing {
//!     const NAME: &'static str = "typing";
//! }
//! ```

#[cfg(feature = "ts")]
mod typescript;

#[cfg(feature = "ts")]
#[cfg_attr(docsrs, doc(cfg(feature = "ts")))]
pub use typescript::TypeScript;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::payload::Payload;
use crate::protocol::Name;

/// A request with its name and its reply type: see the [module docs](self).
pub trait Request: Serialize + DeserializeOwned + Send + 'static {
    /// The request's name on the wire: a valid WebWire name (checked when a router is
    /// built, and when a client sends it).
    const NAME: &'static str;
    /// What the server answers with, as UTF-8 JSON.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
}

/// A signal (either way) with its name: see the [module docs](self).
pub trait Signal: Serialize + DeserializeOwned + Send + 'static {
    /// The signal's name on the wire: a valid WebWire name.
    const NAME: &'static str;

    /// The signal `name` with `payload` read as this type: `None` when it has another name,
    /// `Some(Err(..))` when the payload is not this type's JSON. For a
    /// [`ClientHandler`](crate::ClientHandler)'s `signal` (or a server's, without a
    /// router).
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// use tokio_webwire::{Payload, contract::Signal, protocol::Name};
    /// # #[derive(Serialize, Deserialize, Debug, PartialEq)]
    /// # pub struct Typing { pub user: String }
    /// # impl Signal for Typing { const NAME: &'static str = "typing"; }
    ///
    /// let payload = Payload::json(&Typing { user: "alice".into() }).unwrap();
    /// let typing = Typing::read(&Name::from_static("typing"), &payload);
    /// assert_eq!(typing.unwrap().unwrap(), Typing { user: "alice".into() });
    /// assert!(Typing::read(&Name::from_static("message"), &payload).is_none());
    /// ```
    fn read(name: &Name, payload: &Payload) -> Option<Result<Self, serde_json::Error>> {
        (name.as_str() == Self::NAME).then(|| payload.parse_json())
    }
}
