//! [`NatsConnectError`]: why a [`NatsBackplane`](super::NatsBackplane) could not be made,
//! naming the URL or the servers, never a password.

/// Why [`NatsBackplane::connect`](super::NatsBackplane::connect) (or its builder's) failed:
/// a subject prefix NATS cannot carry, a URL that does not parse, or no server that could
/// be reached. The message names NATS and the URL or the servers, never a password or a
/// token.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use tokio_webwire::nats::{NatsBackplane, NatsConnectError};
///
/// let error = NatsBackplane::connect("http://user:secret@127.0.0.1:4222").await.unwrap_err();
/// assert!(matches!(error, NatsConnectError::InvalidUrl { .. }));
/// assert!(error.to_string().starts_with("invalid NATS URL \"http://<redacted>@127.0.0.1:4222\""));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsConnectError {
    /// The subject prefix set with
    /// [`NatsBackplaneBuilder::prefix`](super::NatsBackplaneBuilder::prefix) cannot start
    /// a NATS subject.
    #[error("invalid NATS subject prefix {prefix:?}: {why}")]
    InvalidPrefix {
        /// The prefix.
        prefix: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A URL of the list does not parse, or is not `nats://` or `tls://`.
    #[error(
        "invalid NATS URL {url:?} (expected nats://[user:password@]host[:port] or tls://…, \
         several separated by commas): {why}"
    )]
    InvalidUrl {
        /// The URL, with its user and password (and any query) redacted.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// No server of the list could be reached, or one refused the connection (a wrong
    /// password, a TLS handshake that failed).
    #[error("cannot connect to NATS at {servers}: {source}")]
    Unreachable {
        /// The servers tried, as `host:port`, separated by commas.
        servers: String,
        /// What async-nats reported.
        source: async_nats::ConnectError,
    },
    /// The connection was made but the backplane could not subscribe on it (it timed
    /// out, or the connection closed).
    #[error("cannot subscribe on NATS at {servers}: {why}")]
    Subscribe {
        /// The servers, as `host:port`, separated by commas.
        servers: String,
        /// What failed.
        why: String,
    },
}
