//! [`ProtocolError`]: why a frame could not be parsed, or a message could not be encoded.
//!
//! It lives next to the codec whose rules it names; the crate root re-exports it.

use crate::protocol::MessageType;

/// Why a frame could not be parsed, or why a message could not be encoded.
///
/// Each variant names the rule of the WebWire v2.0 protocol that failed and the lengths or
/// bytes involved, so a log line is enough to see what a peer sent. It is
/// `tokio_webwire::protocol::ProtocolError`, and `tokio_webwire::ProtocolError` too.
///
/// ```
/// use bytes::Bytes;
/// use tokio_webwire::{protocol::Message, ProtocolError};
///
/// // A heartbeat is exactly one byte long.
/// let err = Message::parse(Bytes::from_static(&[0x21, 0x00])).unwrap_err();
/// assert!(matches!(err, ProtocolError::WrongLength { expected: 1, actual: 2, .. }));
/// let _same: tokio_webwire::protocol::ProtocolError = err;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame has no bytes at all, so not even a type byte.
    #[error("empty message: no type byte")]
    Empty,

    /// The type byte is not one of the 21 message types of protocol v2.0.
    #[error("unknown message type {0} (0x{0:02x})")]
    UnknownType(u8),

    /// The frame is shorter than its type's minimum length.
    #[error("{message_type} needs at least {min} bytes, got {actual}")]
    TooShort {
        /// The type of the message.
        message_type: MessageType,
        /// The minimum length for this type (and, where it matters, this name length).
        min: usize,
        /// The length of the frame.
        actual: usize,
    },

    /// The frame's length differs from the only length its type allows.
    #[error("{message_type} must be exactly {expected} bytes, got {actual}")]
    WrongLength {
        /// The type of the message.
        message_type: MessageType,
        /// The one valid length.
        expected: usize,
        /// The length of the frame.
        actual: usize,
    },

    /// A UTF-16 message whose total length is odd (so its payload cannot be whole code units).
    #[error("{message_type} must have an even length, got {actual}")]
    OddLength {
        /// The type of the message.
        message_type: MessageType,
        /// The length of the frame.
        actual: usize,
    },

    /// A name or error-code length byte points past the end of the frame.
    #[error("{message_type}: {field} length {declared} exceeds the {available} bytes present")]
    LengthExceedsFrame {
        /// The type of the message.
        message_type: MessageType,
        /// Which field: `"name"` or `"error code"`.
        field: &'static str,
        /// The length the frame declares.
        declared: usize,
        /// The bytes actually left in the frame for that field.
        available: usize,
    },

    /// A name or error code contains a byte outside printable ASCII (0x20..=0x7E).
    #[error(
        "{field} byte 0x{byte:02x} at index {index}{} is outside printable ASCII 0x20..=0x7E",
        in_message(.message_type)
    )]
    NonPrintable {
        /// The message the field was parsed from; `None` when building a field by hand.
        message_type: Option<MessageType>,
        /// Which field: `"name"` or `"error code"`.
        field: &'static str,
        /// The offending byte.
        byte: u8,
        /// Its index within the field.
        index: usize,
    },

    /// A name or error code longer than its one-byte length prefix can express.
    #[error("{field} is {len} bytes long, the limit is 255")]
    TooLong {
        /// Which field: `"name"` or `"error code"`.
        field: &'static str,
        /// Its length.
        len: usize,
    },

    /// A field that must not be empty is empty (error code, session key, session JSON).
    #[error("{field} must not be empty")]
    EmptyField {
        /// Which field.
        field: &'static str,
    },

    /// A request or signal that carries neither a name nor a payload: no peer accepts it.
    #[error("{message_type} needs a name or a payload, it has neither")]
    NoNameNoPayload {
        /// The type of the message.
        message_type: MessageType,
    },

    /// A UTF-16 payload whose length is not a whole number of 16-bit code units.
    #[error("{message_type}: UTF-16 payload of {len} bytes is not a whole number of code units")]
    OddUtf16Payload {
        /// The type of the message.
        message_type: MessageType,
        /// The payload length in bytes.
        len: usize,
    },

    /// A UTF-16 signal with fewer than 2 payload bytes: every parser rejects it (§2.5).
    #[error("a UTF-16 signal needs at least one code unit of payload, got {len} bytes")]
    Utf16SignalTooShort {
        /// The payload length in bytes.
        len: usize,
    },

    /// An AcceptConf read timeout that does not fit into 32 bits of milliseconds.
    #[error("read timeout of {millis} ms does not fit into 32 bits")]
    ReadTimeoutOverflow {
        /// The timeout in whole milliseconds.
        millis: u128,
    },

    /// The session JSON of §4.1 could not be read or written.
    #[error("invalid session JSON: {reason}")]
    SessionJson {
        /// What serde_json or the timestamp parser reported.
        reason: String,
    },
}

fn in_message(message_type: &Option<MessageType>) -> String {
    message_type
        .map(|ty| format!(" of a {ty}"))
        .unwrap_or_default()
}
