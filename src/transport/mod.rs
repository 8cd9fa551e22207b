//! The WebSocket layer under both roles: tokio-tungstenite in, `Bytes` frames out.
//!
//! Client and server share what a WebSocket frame means to WebWire (§1.1 of the protocol):
//! one binary message is one WebWire message, a text message is a protocol violation,
//! pings and pongs are only signs of life, and a close frame ends the conversation. They
//! also share how tungstenite is configured for many small connections.

mod socket;

pub(crate) use socket::{Socket, WriteFailed};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::{
    self, Message as WsMessage,
    protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode},
};

/// tungstenite reads from the socket in chunks of this size. Its default (128 KiB) is
/// allocated up front for every connection, which caps a server at a few thousand idle
/// connections per GiB; 4 KiB keeps an idle connection small and still reads a typical
/// WebWire message in one system call. Larger messages grow the buffer as needed.
pub(crate) const READ_BUFFER_SIZE: usize = 4 * 1024;

/// Frames are collected in tungstenite's write buffer until it holds this much or the
/// writer flushes, so a burst of small replies leaves in one system call.
pub(crate) const WRITE_BUFFER_SIZE: usize = 16 * 1024;

/// The tungstenite configuration for a connection that accepts messages of at most
/// `max_message_size` bytes. Frames are limited to the same size: a larger frame could
/// never be part of an acceptable message.
pub(crate) fn websocket_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(WRITE_BUFFER_SIZE)
        // Writes only pile up past `write_buffer_size` while the socket refuses them; the
        // writer's own queue and write timeout bound that, this is a last line of defence.
        .max_write_buffer_size(WRITE_BUFFER_SIZE + max_message_size.max(1) * 2 + 1024)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// What one item read from a WebSocket means to WebWire.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A binary message: one WebWire message, not yet parsed.
    Frame(Bytes),
    /// A ping or pong: the peer is alive, nothing to dispatch. tungstenite answers pings
    /// itself on the next read or flush.
    Alive,
    /// The peer closed the connection (tungstenite has queued the answer to its close frame;
    /// it leaves with the next read or flush).
    Closed(Option<CloseFrame>),
    /// The peer broke the protocol: the connection must be closed with this code and reason.
    Violation(CloseCode, &'static str),
    /// The stream ended or failed without a close frame: the peer is gone.
    Gone,
}

impl Incoming {
    /// Classifies one message read from the socket.
    pub(crate) fn from_ws(message: WsMessage) -> Self {
        match message {
            WsMessage::Binary(frame) => Incoming::Frame(frame),
            WsMessage::Ping(_) | WsMessage::Pong(_) => Incoming::Alive,
            WsMessage::Close(frame) => Incoming::Closed(frame),
            WsMessage::Text(_) => {
                Incoming::Violation(CloseCode::Unsupported, "text messages are not WebWire")
            }
            // tungstenite hands out raw frames only to writers; a reader never sees one.
            WsMessage::Frame(_) => Incoming::Violation(CloseCode::Protocol, "unexpected raw frame"),
        }
    }

    /// Classifies a read error: a size or protocol violation deserves a close frame with
    /// the matching code; anything else means the socket is gone (`None`).
    pub(crate) fn from_error(error: &tungstenite::Error) -> Option<Self> {
        use tungstenite::error::{CapacityError, Error, ProtocolError};
        match error {
            // The peer vanished without a close frame: gone, not misbehaving.
            Error::Protocol(
                ProtocolError::ResetWithoutClosingHandshake | ProtocolError::ReceivedAfterClosing,
            ) => None,
            Error::Capacity(CapacityError::MessageTooLong { .. }) => Some(Incoming::Violation(
                CloseCode::Size,
                "message exceeds the size limit",
            )),
            Error::Capacity(_) => Some(Incoming::Violation(CloseCode::Size, "frame too large")),
            Error::Protocol(_) => Some(Incoming::Violation(
                CloseCode::Protocol,
                "WebSocket protocol violation",
            )),
            Error::Utf8(_) => Some(Incoming::Violation(CloseCode::Invalid, "invalid UTF-8")),
            _ => None,
        }
    }
}

/// A close frame with `code` and a short `reason` (RFC 6455 limits it to 123 bytes).
pub(crate) fn close_frame(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_a_violation_and_binary_a_frame() {
        assert!(matches!(
            Incoming::from_ws(WsMessage::text("hi")),
            Incoming::Violation(CloseCode::Unsupported, _)
        ));
        assert!(matches!(
            Incoming::from_ws(WsMessage::binary(Bytes::from_static(b"\x21"))),
            Incoming::Frame(f) if f[..] == b"\x21"[..]
        ));
        assert!(matches!(
            Incoming::from_ws(WsMessage::Ping(Bytes::new())),
            Incoming::Alive
        ));
    }

    #[test]
    fn frame_limit_equals_message_limit() {
        let config = websocket_config(8192);
        assert_eq!(config.max_message_size, Some(8192));
        assert_eq!(config.max_frame_size, Some(8192));
        assert!(config.max_write_buffer_size > config.write_buffer_size);
    }
}
