//! [`SessionError`]: why creating, restoring or closing a session failed.

/// Why a session could not be created, restored or closed (PROTOCOL.md §4.3 to §4.5).
///
/// Where a restore request fails, the variant names the reply the peer gets. No variant
/// carries a session key: keys are secrets and errors end up in logs.
///
/// ```
/// use tokio_webwire::session::SessionError;
///
/// let err = SessionError::LimitReached { limit: 2 };
/// assert_eq!(err.to_string(), "the session already has its maximum of 2 connections");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Sessions are disabled on this server (restore: `05` reply).
    #[error("sessions are disabled")]
    Disabled,

    /// The connection already holds a session; a connection holds at most one, so close it
    /// first (PROTOCOL.md §4.6, §8 defect 2).
    #[error("the connection already holds a session")]
    AlreadyActive,

    /// The connection is closed, so the session could not be announced or attached.
    #[error("the connection is closed")]
    Closed,

    /// No session is stored under the key (restore: `03` reply).
    #[error("session not found")]
    NotFound,

    /// The session already has as many connections as the server allows (restore: `04`
    /// reply).
    #[error("the session already has its maximum of {limit} connections")]
    LimitReached {
        /// The configured maximum of connections per session.
        limit: usize,
    },

    /// A key generator produced a key the protocol cannot carry safely: empty, too long,
    /// or with bytes outside printable ASCII (see [`MAX_KEY_LEN`](super::MAX_KEY_LEN)).
    #[error("invalid session key: {reason}")]
    InvalidKey {
        /// What is wrong with the key (never the key itself).
        reason: &'static str,
    },

    /// The session is too large to travel: the largest message that carries it (its
    /// restore reply, with a `last_lookup` of the longest form) would exceed the
    /// connection's `max_message_size`, so the client could neither receive it nor get it
    /// back after a reconnect. Keep session info small; it is sent on every restore.
    #[error("the session needs a {len}-byte message, over the {limit}-byte message size limit")]
    TooLarge {
        /// The size of the largest message that would carry the session.
        len: usize,
        /// The connection's maximum message size.
        limit: usize,
    },

    /// The session store failed (restore: `02` reply); the text is the store error's.
    #[error("session store failed: {0}")]
    Store(String),

    /// [`Server::close_session`](crate::server::Server::close_session): the session is
    /// revoked on this server (and gone from the store), but the backplane could not tell
    /// the other servers, whose connections may still hold it until they reconnect; the
    /// text is the backplane's error. Retrying is safe.
    #[error(
        "revoked on this server ({held} connections), but the other servers could not be told: {reason}"
    )]
    Backplane {
        /// How many of this server's connections held the session (and lost it).
        held: usize,
        /// The backplane's error.
        reason: String,
    },
}
