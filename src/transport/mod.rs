//! The WebSocket layer under both roles: bytes from the socket in, `Bytes` messages out.
//!
//! Client and server share what a WebSocket frame means to WebWire (§1.1 of the protocol):
//! one binary message is one WebWire message, a text message is a protocol violation,
//! pings and pongs are only signs of life, and a close frame ends the conversation. The
//! framing (RFC 6455) is ours ([`frame`], [`Socket`]) so that buffers exist only while
//! bytes are in flight; tungstenite still makes the client's opening handshake, whose
//! stream [`HeadStop`] keeps from reading past the HTTP head.

mod drive;
mod frame;
mod handshake;
mod socket;

pub(crate) use drive::{Closing, MAX_READS, Round, feed_while_room, rounds};
pub(crate) use frame::MAX_HEADER_LEN;
pub(crate) use handshake::HeadStop;
pub(crate) use socket::{READ_CHUNK, Role, Socket, WriteFailed};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};

/// What one item read from a WebSocket means to WebWire.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A binary message: one WebWire message, not yet parsed.
    Frame(Bytes),
    /// A ping or pong: the peer is alive, nothing to dispatch. A ping is answered with the
    /// next write or flush.
    Alive,
    /// The peer closed the connection (the answer to its close frame is queued; it leaves
    /// with the next flush or [`Socket::finish`]).
    Closed(Option<CloseFrame>),
    /// The peer broke the protocol: the connection must be closed with this code and reason.
    Violation(CloseCode, &'static str),
    /// The stream ended or failed without a close frame: the peer is gone.
    Gone,
}

/// A close frame with `code` and a short `reason` (RFC 6455 limits it to 123 bytes).
pub(crate) fn close_frame(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.into(),
    }
}
