//! WebWire for tokio: request-reply, signals and sessions over one WebSocket.
//!
//! WebWire is a compact binary protocol (v2.0) spoken by the WebWire JavaScript client and
//! the Go server and client; this crate speaks it byte for byte, with a [server] and a
//! [client](Client) on tokio. Over one connection:
//! - **requests** get exactly one reply, or an error reply with a code and a message;
//!   any number may be in flight at once;
//! - **signals** are one-way messages, from the client to the server and back;
//! - **sessions** are created by the server (a login), mirrored to the client, and
//!   restored by their key after a reconnect, from a store that may outlive the server.
//!
//! Every payload carries its encoding: binary, UTF-8 or UTF-16 ([`Payload`]).
//!
//! # Example
//! A server that answers every request with its payload, and a client that asks it
//! something:
//!
//! ```
//! use tokio::net::TcpListener;
//! use tokio_webwire::server::{Connection, Handler, HandlerError, Server};
//! use tokio_webwire::{Client, Payload, protocol::Name};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     async fn request(&self, _: &Connection, _: Name, payload: Payload)
//!         -> Result<Payload, HandlerError>
//!     {
//!         Ok(payload)
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let listener = TcpListener::bind("127.0.0.1:0").await?; // any free port
//!     let url = format!("ws://{}/", listener.local_addr()?);
//!     let server = Server::new(Echo);
//!     tokio::spawn(server.serve(listener));
//!
//!     let client = Client::connect(&url).await?;
//!     let reply = client.request("echo", Payload::utf16("hello")).await?;
//!     assert_eq!(reply, Payload::utf16("hello")); // in the request's encoding
//!
//!     client.close().await;
//!     server.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! The `examples/` directory holds more: `echo` (with a client), `pubsub` (a topic that
//! every subscriber gets what is published to) and `chatroom` (logins as sessions that
//! survive a reconnect; a room as a topic; a page for browsers). The guide in the
//! repository's `docs/` (linked from the README) lists every option of both sides.
//!
//! # Features
//! None is on by default; the default build has none of their dependencies (no TLS, no
//! HTTP framework).
//!
//! | feature | adds |
//! |---|---|
//! | `rustls` | `wss://` for the [`Client`] (webpki roots, or `ClientBuilder::tls_config`); TLS for the server, `Server::serve_tls` and `Server::serve_tls_connection` with a `tokio_rustls::TlsAcceptor` (client certificates and the rest of the handshake reach `before_upgrade` as `server::TlsInfo`); rustls with its `ring` provider, re-exported as `tokio_webwire::tokio_rustls` |
//! | `hyper` | `Server::upgrade`: a server mounted on a hyper 1 application, which hands it the upgrade request |
//! | `axum` | the `hyper` feature, and `tokio_webwire::axum::upgrade`: a handler for an axum 0.8 router |
//! | `redis` | `tokio_webwire::redis`: many servers, one service; `RedisStore`, a session store in Redis (a client restores its session on any node), and `RedisBackplane` (publishes, session signals and logouts reach every node through Redis pub/sub), on one Redis or a Redis Cluster, with redis-rs re-exported as `tokio_webwire::redis::redis` |
//! | `metrics` | server metrics through the [`metrics`](https://docs.rs/metrics) facade (connections, requests by outcome, handlers in flight, bytes, protocol errors, close reasons and codes, sessions, slow subscribers); the application installs an exporter. Names, units and labels: [`server::metrics`] |
//!
//! # Modules
//! | module | holds |
//! |---|---|
//! | [`client`] | [`Client`]: requests, signals, reconnects, its session; [`ClientBuilder`], [`ClientHandler`] for server signals and events, [`RequestError`], [`ConnectError`] |
//! | [`server`] | [`server::Server`]: accepts connections, calls a [`server::Handler`], [`server::Connection`] handles, [`server::ServerBuilder`], [`server::UpgradeRequest`] (what `before_upgrade` sees and attaches) |
//! | [`backplane`] | [`backplane::Backplane`]: how publishes, session signals and session ends reach the other servers of a service; [`backplane::Local`], the default |
//! | `axum` | (feature `axum`) `upgrade`, the handler of a WebWire route in an axum router |
//! | `redis` | (feature `redis`) `RedisStore` and `RedisBackplane`: sessions and fan-out shared by many servers through Redis |
//! | [`session`] | [`Session`], its info and JSON wire form; key generators, [`session::SessionStore`] ([`session::MemoryStore`], [`session::FileStore`]), [`SessionError`] |
//! | [`protocol`] | the codec: [`protocol::Message`], parse and encode, no I/O; names, error codes, request ids; [`ProtocolError`] |
//! | (root) | [`Payload`] and [`Encoding`]: the data messages carry; [`PayloadError`]; [`ProtocolError`] again, from [`protocol`] |
//!
//! # Cancel safety
//! Every public async method says in its documentation what dropping its future
//! (a `select!`, a timeout, an aborted task) leaves behind. In short: the client's
//! requests, signals and session calls, [`Client::close`] and
//! [`server::Server::shutdown`] are cancel safe; the server's session operations
//! ([`server::Connection::create_session`], [`server::Connection::close_session`],
//! [`server::Server::close_session`]) are not: await them to the end.
//!
//! # The codec alone
//! ```
//! use tokio_webwire::{Payload, protocol::{Message, Name}};
//!
//! let frame = Message::signal(Name::from_static("chat"), Payload::utf8("hi there")).encode()?;
//! assert_eq!(&frame[..], b"\x40\x04chathi there");
//! let parsed = Message::parse(frame)?;
//! assert_eq!(parsed.payload().unwrap().to_text().unwrap(), "hi there");
//! # Ok::<(), tokio_webwire::ProtocolError>(())
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
pub mod backplane;
pub mod client;
pub mod contract;
mod error;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod nats;
mod payload;
pub mod protocol;
mod random;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub mod router;
pub mod server;
pub mod session;
mod sync;
mod transport;

pub use client::{Client, ClientBuilder, ClientHandler, ConnectError, RequestError};
pub use error::PayloadError;
pub use payload::{Encoding, Payload};
pub use protocol::ProtocolError;
pub use session::{Session, SessionError, SessionInfo};

/// TLS (feature `rustls`): `TlsAcceptor` for the server, and `rustls` itself (client and
/// server configurations), in the versions this crate uses.
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
pub use tokio_rustls;
/// The WebSocket layer, for headless servers ([`server::Server::serve_websocket`]).
pub use tokio_tungstenite;
/// HTTP types of the upgrade request ([`server::Handler::before_upgrade`]).
pub use tokio_tungstenite::tungstenite::http;

/// The README's examples, compiled and run as doc tests so they cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The guide's pages (`docs/`), their examples compiled and run as doc tests.
#[cfg(doctest)]
mod guide {
    #[doc = include_str!("../docs/01-server-and-client.md")]
    pub struct ServerAndClient;
    #[doc = include_str!("../docs/02-configuration.md")]
    pub struct Configuration;
    #[doc = include_str!("../docs/03-sessions.md")]
    pub struct Sessions;
    #[doc = include_str!("../docs/04-topics-and-many-servers.md")]
    pub struct TopicsAndManyServers;
    #[doc = include_str!("../docs/05-deploying.md")]
    pub struct Deploying;
    #[doc = include_str!("../docs/06-performance.md")]
    pub struct Performance;
    #[doc = include_str!("../docs/07-codec-and-hardening.md")]
    pub struct CodecAndHardening;
}
