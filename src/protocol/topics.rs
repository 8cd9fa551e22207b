//! The topics extension (`docs/topics.md`): client subscriptions, positions and recovery,
//! carried in ordinary v2.0 requests, replies and signals on a connection that negotiated
//! the WebSocket sub-protocol [`SUBPROTOCOL`].
//!
//! Pure like the rest of the codec: payloads in, values out, and back. Client and server
//! both use it, so the layout lives here once.
//!
//! | message | v2.0 carrier | payload |
//! |---|---|---|
//! | subscribe | `RequestBinary` named [`SUBSCRIBE`] | [`Subscribe`]: flags, position?, topic |
//! | its answer | `ReplyBinary` | [`Subscribed`]: status, epoch, offset (17 bytes) |
//! | unsubscribe | `RequestBinary` named [`UNSUBSCRIBE`] | the topic |
//! | its answer | `ReplyBinary` | empty |
//! | publication | `SignalBinary` named [`PUBLICATION`] | [`Publication`]: flags, position?, topic, the v2.0 signal |
//!
//! ```
//! use tokio_webwire::protocol::topics::{Position, Subscribe};
//!
//! let resume = Subscribe { topic: "room/1".into(), resume: Some(Position { epoch: 7, offset: 41 }) };
//! let payload = resume.encode();
//! assert_eq!(Subscribe::parse(&payload), Ok(resume));
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::{Message, MessageType, Name, ProtocolError};

/// The WebSocket sub-protocol (`Sec-WebSocket-Protocol`) a client offers and a server
/// accepts to speak the extension on a connection.
pub const SUBPROTOCOL: &str = "webwire.topics.1";

/// Request and signal names beginning with this are the extension's on a connection that
/// negotiated it.
pub const RESERVED_PREFIX: &str = "ww.";

/// The name of the subscribe request.
pub const SUBSCRIBE: Name = Name::from_static("ww.subscribe");

/// The name of the unsubscribe request.
pub const UNSUBSCRIBE: Name = Name::from_static("ww.unsubscribe");

/// The name of the publication signal.
pub const PUBLICATION: Name = Name::from_static("ww.pub");

/// The longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 1024;

/// Error codes of the extension's error replies.
pub mod codes {
    /// A malformed payload, an invalid topic, or an unknown `ww.` request.
    pub const BAD_REQUEST: &str = "WW_BAD_REQUEST";
    /// The application refused the subscription.
    pub const REFUSED: &str = "WW_REFUSED";
    /// The connection subscribes to as many topics as the server allows.
    pub const TOO_MANY_TOPICS: &str = "WW_TOO_MANY_TOPICS";
    /// The history could not be read (its store is away): not subscribed, try again.
    pub const UNAVAILABLE: &str = "WW_UNAVAILABLE";
}

const HAS_POSITION: u8 = 0x01;
const POSITION_LEN: usize = 16;

/// Where a publication stands in its topic: `offset` grows by one per publication (the
/// first of an epoch is 1; 0 means "nothing yet"), `epoch` changes whenever the history
/// behind the offsets may have lost something. Both travel as `u64` little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Position {
    /// The history's identity: random, new whenever it may have lost publications.
    pub epoch: u64,
    /// The publication's number in the epoch.
    pub offset: u64,
}

/// Why an extension payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicsWireError {
    /// The payload ends before a field it must hold.
    #[error("{what}: {len} bytes is too short")]
    Truncated {
        /// Which payload.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// Flag bits this version does not know are set.
    #[error("{what}: unknown flags 0x{flags:02x}")]
    UnknownFlags {
        /// Which payload.
        what: &'static str,
        /// The flags byte.
        flags: u8,
    },
    /// A topic is 1 to [`MAX_TOPIC_LEN`] bytes of UTF-8.
    #[error("a topic is 1 to {MAX_TOPIC_LEN} bytes of UTF-8 ({len} bytes given)")]
    InvalidTopic {
        /// The length given.
        len: usize,
    },
    /// A subscribe answer's status byte is not one of [`Status`].
    #[error("unknown subscribe status {0}")]
    UnknownStatus(u8),
    /// A subscribe answer is 17 bytes exactly.
    #[error("a subscribe answer is 17 bytes, this one {0}")]
    AnswerLength(usize),
    /// The message a publication carries is not a valid v2.0 message.
    #[error("a publication's signal: {0}")]
    Signal(ProtocolError),
    /// The message a publication carries is not a v2.0 signal.
    #[error("a publication carries a signal, not type 0x{0:02x}")]
    NotASignal(u8),
}

/// A subscribe request's payload: the topic, and the last position the client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The topic.
    pub topic: String,
    /// Resume after this position: `None` to subscribe from now on.
    pub resume: Option<Position>,
}

impl Subscribe {
    /// The payload: flags (bit 0: a position follows), epoch and offset if so, the topic.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(1 + POSITION_LEN + self.topic.len());
        put_position(&mut out, self.resume);
        out.put_slice(self.topic.as_bytes());
        out.freeze()
    }

    /// Reads a subscribe request's payload.
    pub fn parse(payload: &[u8]) -> Result<Self, TopicsWireError> {
        let (resume, rest) = take_position("subscribe", payload)?;
        Ok(Subscribe {
            topic: topic(rest)?.to_owned(),
            resume,
        })
    }
}

/// Reads an unsubscribe request's payload: the topic.
pub fn parse_unsubscribe(payload: &[u8]) -> Result<&str, TopicsWireError> {
    topic(payload)
}

/// What a subscription found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Subscribed without a position to resume from; the topic keeps a history.
    Subscribed,
    /// Every publication after the position given was sent, in order, before this answer.
    Recovered,
    /// The history no longer covers the position given (trimmed, or another epoch):
    /// nothing before the current position was sent.
    NotRecovered,
    /// The topic keeps no history: publications carry no position.
    NoHistory,
}

impl Status {
    fn byte(self) -> u8 {
        match self {
            Status::Subscribed => 0,
            Status::Recovered => 1,
            Status::NotRecovered => 2,
            Status::NoHistory => 3,
        }
    }

    fn from_byte(byte: u8) -> Result<Self, TopicsWireError> {
        Ok(match byte {
            0 => Status::Subscribed,
            1 => Status::Recovered,
            2 => Status::NotRecovered,
            3 => Status::NoHistory,
            other => return Err(TopicsWireError::UnknownStatus(other)),
        })
    }
}

/// The answer to a subscribe request: its status and the topic's current position (the
/// last publication's, at the moment the subscription joined; zeros without a history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed {
    /// What the subscription found.
    pub status: Status,
    /// The topic's position when the subscription joined.
    pub position: Position,
}

impl Subscribed {
    /// The reply's payload: status, epoch, offset (17 bytes).
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(1 + POSITION_LEN);
        out.put_u8(self.status.byte());
        out.put_u64_le(self.position.epoch);
        out.put_u64_le(self.position.offset);
        out.freeze()
    }

    /// Reads a subscribe reply's payload.
    pub fn parse(payload: &[u8]) -> Result<Self, TopicsWireError> {
        if payload.len() != 1 + POSITION_LEN {
            return Err(TopicsWireError::AnswerLength(payload.len()));
        }
        Ok(Subscribed {
            status: Status::from_byte(payload[0])?,
            position: read_position(&payload[1..]),
        })
    }
}

/// A publication as a subscriber through the extension receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The topic it was published to.
    pub topic: String,
    /// Its position; `None` for a topic without history.
    pub position: Option<Position>,
    /// The published signal, a whole v2.0 signal message (`3F`, `40` or `41`): what a
    /// subscriber without the extension receives.
    pub signal: Bytes,
}

impl Publication {
    /// The whole publication message (a `SignalBinary` named [`PUBLICATION`]) for the
    /// encoded v2.0 signal `signal`, in one exactly sized buffer.
    #[must_use]
    pub fn frame(topic: &str, position: Option<Position>, signal: &[u8]) -> Bytes {
        let publication = PUBLICATION;
        let name = publication.as_bytes();
        let position_len = if position.is_some() { POSITION_LEN } else { 0 };
        let len = 2 + name.len() + 1 + position_len + 2 + topic.len() + signal.len();
        let mut out = BytesMut::with_capacity(len);
        out.put_u8(MessageType::SignalBinary as u8);
        // The name is a constant of 6 bytes.
        out.put_u8(name.len() as u8);
        out.put_slice(name);
        put_position(&mut out, position);
        // Topics are checked to be at most MAX_TOPIC_LEN bytes before they get here.
        out.put_u16_le(u16::try_from(topic.len()).unwrap_or(u16::MAX));
        out.put_slice(topic.as_bytes());
        out.put_slice(signal);
        out.freeze()
    }

    /// How many bytes [`frame`](Self::frame) adds to the signal it carries.
    #[must_use]
    pub fn overhead(topic: &str, position: bool) -> usize {
        2 + PUBLICATION.len() + 1 + if position { POSITION_LEN } else { 0 } + 2 + topic.len()
    }

    /// Reads a publication signal's payload (the signal's name was [`PUBLICATION`]).
    /// `signal` is a slice of `payload`, checked to be a valid v2.0 signal; read it with
    /// [`Message::parse`].
    pub fn parse(payload: &Bytes) -> Result<Self, TopicsWireError> {
        let (position, rest) = take_position("publication", payload)?;
        let truncated = || TopicsWireError::Truncated {
            what: "publication",
            len: payload.len(),
        };
        let len_bytes = rest.get(..2).ok_or_else(truncated)?;
        let topic_len = usize::from(u16::from_le_bytes([len_bytes[0], len_bytes[1]]));
        let topic_bytes = rest.get(2..2 + topic_len).ok_or_else(truncated)?;
        let topic = topic(topic_bytes)?.to_owned();
        let start = payload.len() - (rest.len() - 2 - topic_len);
        let signal = payload.slice(start..);
        // The inner message is checked whole (zero copies), so a reader never hands on a
        // publication whose signal it cannot read.
        match Message::parse(signal.clone()) {
            Ok(
                Message::SignalBinary { .. }
                | Message::SignalUtf8 { .. }
                | Message::SignalUtf16 { .. },
            ) => {}
            Ok(other) => return Err(TopicsWireError::NotASignal(other.message_type() as u8)),
            Err(error) => return Err(TopicsWireError::Signal(error)),
        }
        Ok(Publication {
            topic,
            position,
            signal,
        })
    }
}

fn put_position(out: &mut BytesMut, position: Option<Position>) {
    match position {
        Some(position) => {
            out.put_u8(HAS_POSITION);
            out.put_u64_le(position.epoch);
            out.put_u64_le(position.offset);
        }
        None => out.put_u8(0),
    }
}

fn take_position<'a>(
    what: &'static str,
    payload: &'a [u8],
) -> Result<(Option<Position>, &'a [u8]), TopicsWireError> {
    let truncated = || TopicsWireError::Truncated {
        what,
        len: payload.len(),
    };
    let (&flags, rest) = payload.split_first().ok_or_else(truncated)?;
    match flags {
        0 => Ok((None, rest)),
        HAS_POSITION => {
            let position = rest.get(..POSITION_LEN).ok_or_else(truncated)?;
            Ok((Some(read_position(position)), &rest[POSITION_LEN..]))
        }
        flags => Err(TopicsWireError::UnknownFlags { what, flags }),
    }
}

fn read_position(bytes: &[u8]) -> Position {
    let word = |at: usize| {
        let mut le = [0; 8];
        le.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(le)
    };
    Position {
        epoch: word(0),
        offset: word(8),
    }
}

fn topic(bytes: &[u8]) -> Result<&str, TopicsWireError> {
    let invalid = TopicsWireError::InvalidTopic { len: bytes.len() };
    if bytes.is_empty() || bytes.len() > MAX_TOPIC_LEN {
        return Err(invalid);
    }
    std::str::from_utf8(bytes).map_err(|_| invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Payload;

    #[test]
    fn a_publication_round_trips_and_carries_the_plain_signal() {
        let inner = Message::signal(Name::from_static("msg"), Payload::utf8("hi"))
            .encode()
            .unwrap();
        let position = Some(Position {
            epoch: u64::MAX,
            offset: 3,
        });
        let frame = Publication::frame("room", position, &inner);
        assert_eq!(
            frame.len(),
            inner.len() + Publication::overhead("room", true)
        );
        let Ok(Message::SignalBinary { name, data }) = Message::parse(frame) else {
            panic!("not a binary signal");
        };
        assert_eq!(name, PUBLICATION);
        let publication = Publication::parse(&data).unwrap();
        assert_eq!(publication.topic, "room");
        assert_eq!(publication.position, position);
        assert_eq!(publication.signal, inner);
    }

    #[test]
    fn truncated_and_odd_payloads_are_errors_not_panics() {
        let full = Subscribe {
            topic: "t".into(),
            resume: Some(Position::default()),
        }
        .encode();
        for len in 0..full.len() {
            assert!(Subscribe::parse(&full[..len]).is_err(), "cut at {len}");
        }
        assert!(matches!(
            Subscribe::parse(b"\x02t"),
            Err(TopicsWireError::UnknownFlags { flags: 2, .. })
        ));
        assert!(Subscribe::parse(b"\x00\xff").is_err(), "not UTF-8");
        let long = vec![b'a'; MAX_TOPIC_LEN + 1];
        assert!(parse_unsubscribe(&long).is_err());
        assert!(parse_unsubscribe(&long[1..]).is_ok());
        let frame = Publication::frame("t", None, b"\x40\x00x");
        let payload = frame.slice(2 + PUBLICATION.len()..);
        for len in 0..payload.len() {
            assert!(
                Publication::parse(&payload.slice(..len)).is_err(),
                "cut at {len}"
            );
        }
        assert_eq!(
            Subscribed::parse(&[9; 17]),
            Err(TopicsWireError::UnknownStatus(9))
        );
        assert_eq!(
            Subscribed::parse(&[0; 16]),
            Err(TopicsWireError::AnswerLength(16))
        );
    }
}
