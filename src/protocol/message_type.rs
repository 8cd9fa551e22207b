//! The type byte: the 21 message types of protocol v2.0 (PROTOCOL.md §2.1).

use std::fmt;

use crate::payload::Encoding;

/// The first byte of every WebWire message.
///
/// ```
/// use tokio_webwire::protocol::MessageType;
///
/// assert_eq!(MessageType::try_from(0x80), Ok(MessageType::RequestUtf8));
/// assert_eq!(MessageType::RequestUtf8 as u8, 128);
/// assert!(MessageType::try_from(6).is_err()); // the v1.x protocol-error reply is gone
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// `00`, S→C: a request failed with an error code and message.
    ReplyError = 0,
    /// `01`, S→C: the server is shutting down and did not handle the request.
    ReplyShutdown = 1,
    /// `02`, S→C: the request failed inside the server; details are not disclosed.
    ReplyInternalError = 2,
    /// `03`, S→C: the session to restore does not exist.
    ReplySessionNotFound = 3,
    /// `04`, S→C: the session already has the maximum number of connections.
    ReplyMaxSessConnsReached = 4,
    /// `05`, S→C: sessions are disabled on this server.
    ReplySessionsDisabled = 5,
    /// `15`, S→C: a session was created for this connection; carries the session JSON.
    NotifySessionCreated = 21,
    /// `16`, S→C: the session of this connection was closed by the server.
    NotifySessionClosed = 22,
    /// `17`, S→C: the handshake message, sent first on every connection.
    AcceptConf = 23,
    /// `1F`, C→S: close the session of this connection.
    RequestCloseSession = 31,
    /// `20`, C→S: restore a session by key.
    RequestRestoreSession = 32,
    /// `21`, C→S: keeps an idle connection open.
    Heartbeat = 33,
    /// `3F`, both directions: a signal with a binary payload.
    SignalBinary = 63,
    /// `40`, both directions: a signal with a UTF-8 payload.
    SignalUtf8 = 64,
    /// `41`, both directions: a signal with a UTF-16 payload.
    SignalUtf16 = 65,
    /// `7F`, C→S: a request with a binary payload.
    RequestBinary = 127,
    /// `80`, C→S: a request with a UTF-8 payload.
    RequestUtf8 = 128,
    /// `81`, C→S: a request with a UTF-16 payload.
    RequestUtf16 = 129,
    /// `BF`, S→C: a reply with a binary payload.
    ReplyBinary = 191,
    /// `C0`, S→C: a reply with a UTF-8 payload.
    ReplyUtf8 = 192,
    /// `C1`, S→C: a reply with a UTF-16 payload.
    ReplyUtf16 = 193,
}

impl MessageType {
    /// Every message type, in type-byte order.
    pub const ALL: [MessageType; 21] = [
        MessageType::ReplyError,
        MessageType::ReplyShutdown,
        MessageType::ReplyInternalError,
        MessageType::ReplySessionNotFound,
        MessageType::ReplyMaxSessConnsReached,
        MessageType::ReplySessionsDisabled,
        MessageType::NotifySessionCreated,
        MessageType::NotifySessionClosed,
        MessageType::AcceptConf,
        MessageType::RequestCloseSession,
        MessageType::RequestRestoreSession,
        MessageType::Heartbeat,
        MessageType::SignalBinary,
        MessageType::SignalUtf8,
        MessageType::SignalUtf16,
        MessageType::RequestBinary,
        MessageType::RequestUtf8,
        MessageType::RequestUtf16,
        MessageType::ReplyBinary,
        MessageType::ReplyUtf8,
        MessageType::ReplyUtf16,
    ];

    /// The signal type that carries a payload of `encoding`.
    #[must_use]
    pub const fn signal(encoding: Encoding) -> MessageType {
        match encoding {
            Encoding::Binary => MessageType::SignalBinary,
            Encoding::Utf8 => MessageType::SignalUtf8,
            Encoding::Utf16 => MessageType::SignalUtf16,
        }
    }

    /// The request type that carries a payload of `encoding`.
    #[must_use]
    pub const fn request(encoding: Encoding) -> MessageType {
        match encoding {
            Encoding::Binary => MessageType::RequestBinary,
            Encoding::Utf8 => MessageType::RequestUtf8,
            Encoding::Utf16 => MessageType::RequestUtf16,
        }
    }

    /// The reply type that carries a payload of `encoding`.
    #[must_use]
    pub const fn reply(encoding: Encoding) -> MessageType {
        match encoding {
            Encoding::Binary => MessageType::ReplyBinary,
            Encoding::Utf8 => MessageType::ReplyUtf8,
            Encoding::Utf16 => MessageType::ReplyUtf16,
        }
    }

    /// The payload encoding of a signal, request or reply type; `None` for the others.
    #[must_use]
    pub const fn encoding(self) -> Option<Encoding> {
        use MessageType as T;
        match self {
            T::SignalBinary | T::RequestBinary | T::ReplyBinary => Some(Encoding::Binary),
            T::SignalUtf8 | T::RequestUtf8 | T::ReplyUtf8 => Some(Encoding::Utf8),
            T::SignalUtf16 | T::RequestUtf16 | T::ReplyUtf16 => Some(Encoding::Utf16),
            _ => None,
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?} (0x{:02x})", *self as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolError;

    #[test]
    fn every_byte_maps_to_at_most_one_type_and_back() {
        let known: Vec<u8> = (0..=255u8)
            .filter(|b| MessageType::try_from(*b).is_ok())
            .collect();
        assert_eq!(known.len(), 21);
        for ty in MessageType::ALL {
            assert_eq!(MessageType::try_from(ty as u8), Ok(ty));
        }
        assert_eq!(MessageType::try_from(6), Err(ProtocolError::UnknownType(6)));
    }

    #[test]
    fn payload_types_agree_with_their_encoding() {
        for enc in [Encoding::Binary, Encoding::Utf8, Encoding::Utf16] {
            for ty in [
                MessageType::signal(enc),
                MessageType::request(enc),
                MessageType::reply(enc),
            ] {
                assert_eq!(ty.encoding(), Some(enc));
            }
        }
        assert_eq!(MessageType::ReplyError.encoding(), None);
    }
}
