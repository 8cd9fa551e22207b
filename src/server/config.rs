//! What a built server's options are: [`Config`], read by its connections, the fan-out's
//! [`Limits`] and [`SlowSubscriber`](crate::server::SlowSubscriber) policy; why a configuration is refused
//! ([`ConfigError`](crate::server::ConfigError)); the memory one connection may hold. [`ServerBuilder`](crate::server::ServerBuilder) sets them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::server::history::Rules;
use crate::server::origin::Origins;
use crate::transport::{MAX_HEADER_LEN, READ_CHUNK};

/// Why a server configuration was refused by [`ServerBuilder::build`](crate::server::ServerBuilder::build).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The read timeout must be at least one second (clients send heartbeats at 75 % of
    /// it) and at most `u32::MAX` milliseconds (it travels as a `u32` in the handshake).
    #[error("read timeout {0:?} is outside 1 s ..= u32::MAX ms")]
    ReadTimeout(Duration),
    /// The message size limit must be at least 32 bytes and fit in a `u32`.
    #[error("message size limit {0} is outside 32 ..= u32::MAX bytes")]
    MaxMessageSize(usize),
    /// The sub-protocol name is longer than the message size limit allows.
    #[error("the sub-protocol name ({0} bytes) does not fit in the handshake message")]
    SubProtocol(usize),
    /// A limit is 0, or too large to be counted (over `u32::MAX`).
    #[error("{0} must be in 1 ..= u32::MAX")]
    Limit(&'static str),
    /// A timeout that must be positive is zero.
    #[error("{0} must be longer than zero")]
    ZeroTimeout(&'static str),
    /// An allowed origin is not `scheme://host[:port]`.
    #[error("allowed origin {0:?} is not scheme://host[:port]")]
    Origin(String),
    /// A backplane between nodes needs the service's secret
    /// ([`ServerBuilder::backplane_secret`](crate::server::ServerBuilder::backplane_secret)), at least
    /// [`MIN_SECRET_LEN`](crate::backplane::MIN_SECRET_LEN) bytes: without one, whoever can
    /// write to the backplane could make every node deliver signals and drop sessions.
    #[error(
        "a backplane between nodes needs the service's secret (backplane_secret), at least {min} bytes ({len} given)"
    )]
    BackplaneSecret {
        /// The secret's length (0: none given).
        len: usize,
        /// The shortest allowed.
        min: usize,
    },
}

/// The options of a server, read by its connections.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) read_timeout: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) max_concurrent_requests: usize,
    pub(crate) outbound_queue_len: usize,
    pub(crate) write_timeout: Duration,
    pub(crate) write_batch_size: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_upgrade_request_size: usize,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) abandoned_handler_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) max_connections: usize,
    /// 0: no limit.
    /// 0: no limit.
    pub(crate) max_connections_per_source: usize,
    /// Peers whose `X-Forwarded-For` names the client.
    pub(crate) trusted_proxies: Arc<[std::net::IpAddr]>,
    /// The pending-upgrade limits, in all and per source.
    pub(crate) admission: crate::server::admission::Limits,
    /// Which `Origin`s may open a connection.
    pub(crate) origins: Origins,
    /// The handshake every connection starts with, encoded once.
    pub(crate) accept_conf: Bytes,
    /// The fan-out's options (the slow-subscriber policy, the topic limit).
    pub(crate) fanout: Limits,
}

/// What the server does with a subscriber whose outbound queue is full when a publish (or
/// a session signal) reaches it. Set with
/// [`ServerBuilder::slow_subscriber`](crate::server::ServerBuilder::slow_subscriber).
///
/// Either way the publisher and the other subscribers never wait for it.
///
/// ```
/// use tokio_webwire::server::{Server, SlowSubscriber};
///
/// // Tickers: a client that misses a price will get the next one.
/// let server = Server::builder(()).slow_subscriber(SlowSubscriber::Skip).build()?;
/// # Ok::<(), tokio_webwire::server::ConfigError>(())
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlowSubscriber {
    /// Close its connection (close code 1013, "try again later";
    /// [`CloseReason::SlowConsumer`](crate::server::CloseReason::SlowConsumer) for the hooks). Its client sees the disconnect, so
    /// it knows it may have missed signals; a reconnecting client restores its session
    /// and subscribes again. The default: nothing is lost without someone noticing.
    #[default]
    Disconnect,
    /// It misses this signal and stays subscribed. Each skip is counted
    /// (`webwire_fanout_slow_total{policy="skip"}` with the `metrics` feature) and logged
    /// at debug level; the client is not told. For data where the next signal replaces
    /// the last (prices, positions).
    Skip,
}

/// The options of a server's fan-out.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) slow: SlowSubscriber,
    pub(crate) max_message_size: usize,
    pub(crate) max_topics_per_connection: usize,
    /// Which topics keep a history.
    pub(crate) history: Arc<Rules>,
}

/// What the server itself may hold for one connection, in bytes: the state of a connection
/// and its transport's buffers, then messages (see [`ServerBuilder::memory_per_connection`](crate::server::ServerBuilder::memory_per_connection)).
pub(crate) fn memory_per_connection(
    max_message_size: usize,
    max_concurrent_requests: usize,
    outbound_queue_len: usize,
    write_batch_size: usize,
) -> usize {
    /// The connection's own state (driver, handle, socket, timers), rounded up.
    const STATE: usize = 16 * 1024;
    // Two read chunks: the one being read and the one before it, taking turns.
    let fixed = (STATE + 2 * READ_CHUNK).saturating_add(write_batch_size);
    let messages = max_concurrent_requests
        .saturating_add(outbound_queue_len)
        .saturating_add(3);
    // A running handler's request is a view of the chunk it was read into, which it keeps
    // whole until it is done: a chunk, or an allocation of its frame's size.
    let request = max_message_size
        .saturating_add(MAX_HEADER_LEN)
        .max(READ_CHUNK);
    let requests = max_concurrent_requests.saturating_mul(request);
    fixed
        .saturating_add(max_message_size.saturating_mul(messages))
        .saturating_add(requests)
}
