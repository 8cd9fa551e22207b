//! The client: requests, signals and server signals over one WebSocket, with reconnects
//! and sessions.
//!
//! | file | holds |
//! |---|---|
//! | `handle.rs` | [`Client`], the application's handle |
//! | `builder.rs` | [`ClientBuilder`]: options and their defaults; connecting |
//! | `config.rs` | the built options, read by the handles and tasks |
//! | `shared.rs` | the state the handles and the background tasks share |
//! | `send.rs` | the path of a request or a signal to the connection |
//! | `session.rs` | restoring and closing the session |
//! | `error.rs` | [`RequestError`], [`ConnectError`] |
//! | `handler.rs` | [`ClientHandler`]: server signals, connection and session events; its task |
//! | `events.rs` | the handler's queue, which never makes the driver wait; [`SignalOverflow`] |
//! | `pending.rs` | requests waiting for replies (a slab indexed by the id, each entry with its deadline and its outcome), and the future that waits for one and cleans up after it |
//! | `pipeline.rs` | [`Pipeline`]: many requests in flight from one task, with [`Ticket`]s, in a table of its own |
//! | `routes.rs` | how replies find their pipeline: chunks of ids, inboxes, the driver's deliveries |
//! | `queue.rs` | the queue of encoded frames from the handles to the driver: one lock per push, everything taken at once, room counted in frames |
//! | `link.rs` | what requests and signals see of a live connection |
//! | `connection.rs` | dial and handshake, a connection's life: session restore, publish, drive, close |
//! | `driver.rs` | the one task that owns a connection's socket: batched writes, replies, deadline sweep, heartbeats |
//! | `supervisor.rs` | the background task: one connection after another |
//! | `reconnect.rs` | [`Reconnect`], [`Backoff`]: the policy and its schedule |
//! | `topics.rs`, `subscriptions.rs` | the topics extension: [`Subscription`], [`TopicEvent`], the topic table |
//! | `tls.rs` | the default TLS configuration of `wss://` dials (feature `rustls`) |
//!
//! See [`Client`] for an example.

mod builder;
mod config;
mod connection;
mod driver;
mod error;
mod events;
mod handle;
mod handler;
mod link;
mod pending;
mod pipeline;
mod queue;
mod reconnect;
mod routes;
mod send;
mod session;
mod shared;
mod subscriptions;
mod supervisor;
#[cfg(feature = "rustls")]
mod tls;
mod topics;

// The NATS backplane shows its server URLs in errors the same way.
#[cfg(feature = "nats")]
pub(crate) use config::redact_url;

pub use builder::{
    ClientBuilder, DEFAULT_DIAL_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
};
pub use error::{ConnectError, RequestError};
pub use events::{DEFAULT_MAX_QUEUED_SIGNAL_BYTES, DEFAULT_MAX_QUEUED_SIGNALS, SignalOverflow};
pub use handle::Client;
pub use handler::ClientHandler;
pub use pipeline::{Pipeline, Ticket};
pub use reconnect::{Backoff, Reconnect};
pub use subscriptions::TopicEvent;
pub use topics::{SubscribeError, Subscription};
