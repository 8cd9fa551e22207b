//! Why a connection ends: [`CloseReason`](crate::server::CloseReason), what the driver closes with and the
//! [`disconnected`](crate::server::Handler::disconnected) hook is told.

use std::fmt;

/// Why a connection ended, as given to [`Handler::disconnected`](crate::server::Handler::disconnected).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client closed the connection with a close frame.
    ClientClosed,
    /// The socket failed or the client vanished without a close frame.
    ConnectionLost,
    /// No message arrived within the server's read timeout.
    ReadTimeout,
    /// The client did not read what the server sent within the write timeout.
    WriteTimeout,
    /// The client broke the protocol (the text says how); the server read nothing more,
    /// let the handlers already running send their replies, and closed the connection
    /// with a close code.
    ProtocolViolation(String),
    /// [`Connection::close`](crate::server::Connection::close) was called.
    Closed,
    /// The `connected` hook panicked; the server closed the connection with code 1011.
    HookFailed,
    /// The server shut down.
    ServerShutdown,
    /// The client did not keep up with the signals published to it (its outbound queue
    /// was full), and the server's [`SlowSubscriber`](crate::server::SlowSubscriber)
    /// policy is to disconnect it; closed with code 1013 ("try again later").
    SlowConsumer,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::ClientClosed => f.write_str("closed by the client"),
            CloseReason::ConnectionLost => f.write_str("connection lost"),
            CloseReason::ReadTimeout => f.write_str("read timeout"),
            CloseReason::WriteTimeout => f.write_str("write timeout"),
            CloseReason::ProtocolViolation(why) => write!(f, "protocol violation: {why}"),
            CloseReason::Closed => f.write_str("closed by the server"),
            CloseReason::HookFailed => f.write_str("the connected hook failed"),
            CloseReason::ServerShutdown => f.write_str("server shutdown"),
            CloseReason::SlowConsumer => f.write_str("too slow for its subscriptions"),
        }
    }
}
