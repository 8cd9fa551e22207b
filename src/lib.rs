//! WebWire for tokio: request-reply, signals and sessions over one WebSocket.
//!
//! WebWire is a compact binary protocol (v2.0) spoken by the WebWire JavaScript client and
//! the Go server and client; this crate speaks it byte for byte.
//!
//! # Modules
//! | module | holds |
//! |---|---|
//! | [`client`] | [`Client`]: requests, signals, reconnects; [`ClientHandler`] for server signals |
//! | [`server`] | [`server::Server`]: accepts connections, calls a [`server::Handler`], [`server::Connection`] handles |
//! | [`protocol`] | the codec: [`protocol::Message`], parse and encode, no I/O |
//! | [`session`] | [`Session`], its info and JSON wire form; key generators, [`session::SessionStore`] ([`session::MemoryStore`], [`session::FileStore`]), [`SessionError`] |
//! | `payload` | [`Payload`] and [`Encoding`]: the data messages carry |
//! | `error` | [`ProtocolError`], [`PayloadError`]: one error enum per concern |
//!
//! ```
//! use tokio_webwire::{Payload, protocol::{Message, Name}};
//!
//! let frame = Message::signal(Name::from_static("chat"), Payload::utf8("hi there")).encode()?;
//! assert_eq!(&frame[..], b"\x40\x04chathi there");
//! let parsed = Message::parse(frame)?;
//! assert_eq!(parsed.payload().unwrap().to_text().unwrap(), "hi there");
//! # Ok::<(), tokio_webwire::ProtocolError>(())
//! ```

pub mod client;
mod error;
mod payload;
pub mod protocol;
pub mod server;
pub mod session;
mod transport;

pub use client::{Client, ClientBuilder, ClientHandler, ConnectError, RequestError};
pub use error::{PayloadError, ProtocolError};
pub use payload::{Encoding, Payload};
pub use session::{Session, SessionError, SessionInfo};

/// The WebSocket layer, for headless servers ([`server::Server::serve_websocket`]).
pub use tokio_tungstenite;
/// HTTP types of the upgrade request ([`server::Handler::before_upgrade`]).
pub use tokio_tungstenite::tungstenite::http;

/// The README's examples, compiled and run as doc tests so they cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
