//! What one node sends another through a backplane: an operation, its target, and the
//! node it came from.
//!
//! Layout (all nodes of a service must run versions that agree on it):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version, `1` |
//! | 1 | kind: `1` publish, `2` session signal, `3` session closed, `4` publish with a position |
//! | 16 | the sending node's id (random, per server) |
//! | 2 | length of the target, big-endian |
//! | n | the target: a topic or a session key (UTF-8) |
//! | rest | publish and session signal: the encoded signal message; publish with a position: the epoch and offset (`u64le` each), then the encoded signal; session closed: empty |
//!
//! A publish with a position comes from a shared history ([`SharedStore::append`](crate::server::history::SharedStore::append)),
//! which appends the position and the signal to the header this module makes
//! ([`Envelope::positioned_header`]), so that the publication is kept and sent in one step.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::RedactedKey;
use crate::protocol::topics::Position;

const VERSION: u8 = 1;
const HEADER: usize = 1 + 1 + 16 + 2;

/// A server's id among the nodes of a backplane: random, so two processes never share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeId([u8; 16]);

impl NodeId {
    pub(crate) fn random() -> Self {
        NodeId(random_bytes())
    }
}

/// `N` random bytes from the OS generator, for identities that must differ between
/// processes (node ids, history epochs). The OS generator does not fail on the platforms
/// tokio runs on; should it, clock-derived bytes still tell processes apart in practice.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::TryRng;
    let mut bytes = [0; N];
    if rand::rngs::SysRng.try_fill_bytes(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = (nanos ^ u128::from(std::process::id())).to_le_bytes();
        for (at, byte) in bytes.iter_mut().enumerate() {
            *byte = seed[at % seed.len()] ^ (at as u8);
        }
    }
    bytes
}

/// The header of an envelope of `kind` to `target` from `from`.
fn header(kind: u8, from: NodeId, target: &[u8]) -> Option<BytesMut> {
    let len = u16::try_from(target.len()).ok()?;
    let mut out = BytesMut::with_capacity(HEADER + target.len());
    out.put_u8(VERSION);
    out.put_u8(kind);
    out.put_slice(&from.0);
    out.put_u16(len);
    out.put_slice(target);
    Some(out)
}

/// One operation between nodes.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Envelope {
    /// An encoded signal for a topic's subscribers.
    Publish { topic: Bytes, frame: Bytes },
    /// An encoded signal for every connection holding a session.
    SessionSignal { key: Bytes, frame: Bytes },
    /// A session was revoked: every connection holding it loses it.
    SessionClosed { key: Bytes },
    /// An encoded signal for a topic's subscribers, with its position in the topic's
    /// shared history.
    Positioned {
        topic: Bytes,
        position: Position,
        frame: Bytes,
    },
}

impl std::fmt::Debug for Envelope {
    /// A session's key as its length only: keys are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Envelope::Publish { topic, frame } => f
                .debug_struct("Publish")
                .field("topic", topic)
                .field("frame", frame)
                .finish(),
            Envelope::SessionSignal { key, frame } => f
                .debug_struct("SessionSignal")
                .field("key", &RedactedKey(key.len()))
                .field("frame", frame)
                .finish(),
            Envelope::SessionClosed { key } => f
                .debug_struct("SessionClosed")
                .field("key", &RedactedKey(key.len()))
                .finish(),
            Envelope::Positioned {
                topic,
                position,
                frame,
            } => f
                .debug_struct("Positioned")
                .field("topic", topic)
                .field("position", position)
                .field("frame", frame)
                .finish(),
        }
    }
}

impl Envelope {
    pub(crate) fn encode(&self, from: NodeId) -> Option<Bytes> {
        let mut position = [0; 16];
        let (kind, target, at, body): (u8, &Bytes, &[u8], &[u8]) = match self {
            Envelope::Publish { topic, frame } => (1, topic, &[], frame),
            Envelope::SessionSignal { key, frame } => (2, key, &[], frame),
            Envelope::SessionClosed { key } => (3, key, &[], &[]),
            Envelope::Positioned {
                topic,
                position: p,
                frame,
            } => {
                position[..8].copy_from_slice(&p.epoch.to_le_bytes());
                position[8..].copy_from_slice(&p.offset.to_le_bytes());
                (4, topic, &position, frame)
            }
        };
        let mut out = header(kind, from, target)?;
        out.reserve(at.len() + body.len());
        out.put_slice(at);
        out.put_slice(body);
        Some(out.freeze())
    }

    /// The header of a publish with a position to `topic` from `from`: what a shared
    /// history appends the position and the signal to. `None` for a topic over 65 535
    /// bytes (no valid topic is).
    pub(crate) fn positioned_header(from: NodeId, topic: &str) -> Option<Bytes> {
        Some(header(4, from, topic.as_bytes())?.freeze())
    }

    /// The sender and the operation, or `None` for bytes that are not an envelope of this
    /// version.
    pub(crate) fn decode(message: &Bytes) -> Option<(NodeId, Envelope)> {
        let header = message.get(..HEADER)?;
        if header[0] != VERSION {
            return None;
        }
        let node = NodeId(header[2..18].try_into().ok()?);
        let len = usize::from(u16::from_be_bytes([header[18], header[19]]));
        let end = HEADER.checked_add(len)?;
        if message.len() < end {
            return None;
        }
        let target = message.slice(HEADER..end);
        let body = message.slice(end..);
        let envelope = match header[1] {
            1 => Envelope::Publish {
                topic: target,
                frame: body,
            },
            2 => Envelope::SessionSignal {
                key: target,
                frame: body,
            },
            3 if body.is_empty() => Envelope::SessionClosed { key: target },
            4 if body.len() >= 16 => Envelope::Positioned {
                topic: target,
                position: Position {
                    epoch: u64::from_le_bytes(body[..8].try_into().ok()?),
                    offset: u64::from_le_bytes(body[8..16].try_into().ok()?),
                },
                frame: body.slice(16..),
            },
            _ => return None,
        };
        Some((node, envelope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_target_of_a_publish_but_no_session_key() {
        let key = Bytes::from_static(b"s3cret-session-key");
        for envelope in [
            Envelope::SessionSignal {
                key: key.clone(),
                frame: Bytes::from_static(b"\x03"),
            },
            Envelope::SessionClosed { key },
        ] {
            let shown = format!("{envelope:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("Session") && shown.contains("<redacted: 18 bytes>"));
        }
        let publish = Envelope::Publish {
            topic: Bytes::from_static(b"room/1"),
            frame: Bytes::new(),
        };
        assert!(format!("{publish:?}").contains("room/1"));
    }

    #[test]
    fn every_kind_round_trips_with_its_sender() {
        let node = NodeId::random();
        for envelope in [
            Envelope::Publish {
                topic: Bytes::from_static(b"room/1"),
                frame: Bytes::from_static(b"\x02\x04news"),
            },
            Envelope::SessionSignal {
                key: Bytes::from_static(b"k"),
                frame: Bytes::from_static(b"\x03"),
            },
            Envelope::SessionClosed {
                key: Bytes::from_static(b"key"),
            },
            Envelope::Positioned {
                topic: Bytes::from_static(b"room/1"),
                position: Position {
                    epoch: 0x0123_4567_89ab_cdef,
                    offset: 42,
                },
                frame: Bytes::from_static(b"\x02\x04news"),
            },
        ] {
            let bytes = envelope.encode(node).unwrap();
            assert_eq!(Envelope::decode(&bytes), Some((node, envelope)));
        }
        assert_ne!(NodeId::random(), node);
    }

    #[test]
    fn what_is_not_an_envelope_is_refused_not_misread() {
        let good = Envelope::SessionClosed {
            key: Bytes::from_static(b"key"),
        }
        .encode(NodeId::random())
        .unwrap();
        for len in 0..good.len() {
            assert_eq!(Envelope::decode(&good.slice(..len)), None, "cut at {len}");
        }
        let mut other_version = good.to_vec();
        other_version[0] = 2;
        assert_eq!(Envelope::decode(&Bytes::from(other_version)), None);
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert_eq!(Envelope::decode(&Bytes::from(trailing)), None);
        let mut unknown = good.to_vec();
        unknown[1] = 9;
        assert_eq!(Envelope::decode(&Bytes::from(unknown)), None);
    }
}
