//! The server: accepts WebWire connections and hands their messages to a [`Handler`].
//!
//! | file | holds |
//! |---|---|
//! | `handle.rs` | [`Server`]: the handle, what it offers besides serving, shutdown |
//! | `accept.rs` | where connections come from: `serve`, `serve_connection`, `serve_websocket` |
//! | `builder.rs`, `config.rs` | [`ServerBuilder`]: the options; [`ConfigError`], [`SlowSubscriber`] |
//! | `shared.rs`, `live.rs` | what every connection shares; the open connections and their places |
//! | `handler.rs`, `close.rs`, `panic.rs` | [`Handler`] (the hooks), [`HandlerError`]; [`CloseReason`]; panics caught |
//! | `connection/` | [`Connection`], the handle hooks receive: identity, signalling, closing; its session; its topics |
//! | `listen.rs` | [`bind`], [`bind_with_backlog`]: listening for bursts; [`configure_socket`]: options of accepted sockets |
//! | `admission.rs`, `source.rs` | the pending upgrades, in all and per source; what a source is |
//! | `upgrade.rs` | the HTTP upgrade: checks and `before_upgrade` for every path in, the HTTP side of sockets the server accepts itself |
//! | `upgrade_request.rs` | [`UpgradeRequest`]: what `before_upgrade` sees, what it attaches to the connection |
//! | `origin.rs` | which `Origin`s may connect (cross-site WebSocket hijacking) |
//! | `tls.rs` | `serve_tls`, `serve_tls_connection`, `TlsInfo` for `before_upgrade` (feature `rustls`) |
//! | `mount.rs` | `Server::upgrade`: a request a hyper or axum application hands over (feature `hyper`) |
//! | `driver/` | per connection: the one task that reads, dispatches and writes; its closing |
//! | `outbox.rs` | the queue from other tasks into a connection's driver; [`SendError`] |
//! | `job.rs` | what a message asks (a `Job`), and the guard of its one reply |
//! | `sessions/` | sessions on the server: the state machine of a session's life, its operations |
//! | `client_topics.rs` | the topics extension on the server: the sub-protocol negotiated at the upgrade, the `ww.` requests of a client |
//! | `history.rs` | which topics keep their last publications, the ring of one topic (in memory) |
//! | `sequencer.rs` | a topic of a shared history on one node: its publications delivered in offset order, holes filled, the resume seam |
//! | `fanout/` | one signal to many: topics, signals to a session's connections, what other nodes send; [`TopicError`] |
//! | `metrics.rs` | the server's metrics (feature `metrics`): names, units, labels; no-ops without the feature |
//!
//! ```no_run
//! use tokio::net::{TcpListener, TcpStream};
//! use tokio_webwire::server::{Connection, Handler, HandlerResult, Server};
//! use tokio_webwire::{Payload, protocol::Name};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     async fn request(&self, _: &Connection, _: Name, payload: Payload) -> HandlerResult {
//!         Ok(payload)
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = Server::new(Echo);
//! let listener = TcpListener::bind("127.0.0.1:8081").await?;
//! tokio::spawn(server.serve(listener));
//! // ... later:
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod accept;
mod admission;
mod builder;
mod client_topics;
mod close;
mod config;
mod connection;
mod driver;
pub(crate) mod fanout;
mod handle;
mod handler;
pub(crate) mod history;
mod job;
mod listen;
mod live;
pub mod metrics;
#[cfg(feature = "hyper")]
mod mount;
mod origin;
mod outbox;
mod panic;
mod sequencer;
mod sessions;
mod shared;
mod source;
#[cfg(feature = "rustls")]
mod tls;
mod upgrade;
mod upgrade_request;

pub use crate::backplane::{History, HistoryError, SharedHistory};
pub use builder::ServerBuilder;
pub use close::CloseReason;
pub use config::{ConfigError, SlowSubscriber};
pub use connection::Connection;
pub use fanout::{MAX_TOPIC_LEN, TopicError};
pub use handle::Server;
pub use handler::{Handler, HandlerError, HandlerResult, RestoreRefused, SubscribeRefused};
pub use listen::{DEFAULT_BACKLOG, bind, bind_with_backlog, configure_socket};
pub use outbox::SendError;
#[cfg(feature = "rustls")]
pub use tls::TlsInfo;
pub use upgrade_request::UpgradeRequest;

pub(crate) use live::{Live, Place, Places};
pub(crate) use shared::Shared;
