//! What one node sends another through a backplane: an operation, its target, the node it
//! came from, and a tag made with the service's secret.
//!
//! Layout, version 2 (all nodes of a service must run versions that agree on it; the
//! specification, with golden messages, is `docs/backplane.md`):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version, `2` |
//! | 1 | kind: `1` publish, `2` session signal, `3` session closed, `4` publish with a position |
//! | 16 | the sending node's id (random, per server) |
//! | 2 | length of the target, big-endian |
//! | n | the target: a topic (UTF-8), or a session's route (32 hex digits: never its key) |
//! | 16 | publish with a position only: the epoch and offset (`u64le` each) |
//! | m | the body: publish and session signal: the encoded signal message; session closed: a 12-byte nonce and the session's key encrypted (ChaCha20) |
//! | 32 | the tag: HMAC-SHA256 under the service's tag key of the version and kind bytes, the target's length and the target, and the body |
//!
//! The tag leaves out the node id (a forged one can only make a node ignore a message as
//! its own) and the position (Redis gives it, inside the script that keeps and sends the
//! publication; the publication itself, what reaches clients, is covered, and so is its
//! copy kept in the history).
//!
//! A publish with a position comes from a shared history ([`SharedStore::append`](crate::server::history::SharedStore::append)),
//! which puts the position between the header this module makes
//! ([`Envelope::positioned_header`]) and the signed signal ([`Envelope::signed_publication`]),
//! so that the publication is kept and sent in one step.

use crate::random::random_bytes;
use bytes::{BufMut, Bytes, BytesMut};

use super::seal::{Seal, TAG_LEN};
use crate::protocol::topics::Position;

const VERSION: u8 = 2;
const HEADER: usize = 1 + 1 + 16 + 2;
const POSITIONED: u8 = 4;

/// A server's id among the nodes of a backplane: random, so two processes never share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeId([u8; 16]);

impl NodeId {
    pub(crate) fn random() -> Self {
        NodeId(random_bytes())
    }
}

#[cfg(test)]
impl NodeId {
    pub(crate) fn from_bytes(bytes: [u8; 16]) -> Self {
        NodeId(bytes)
    }
}

/// The header of an envelope of `kind` to `target` from `from`.
fn header(kind: u8, from: NodeId, target: &[u8], room: usize) -> Option<BytesMut> {
    let len = u16::try_from(target.len()).ok()?;
    let mut out = BytesMut::with_capacity(HEADER + target.len() + room);
    out.put_u8(VERSION);
    out.put_u8(kind);
    out.put_slice(&from.0);
    out.put_u16(len);
    out.put_slice(target);
    Some(out)
}

/// What the tag covers, but the body: the version and kind, the target's length and the
/// target.
fn signed_head(kind: u8, target: &[u8]) -> [u8; 4] {
    let len = (target.len() as u16).to_be_bytes();
    [VERSION, kind, len[0], len[1]]
}

/// One operation between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Envelope {
    /// An encoded signal for a topic's subscribers.
    Publish { topic: Bytes, frame: Bytes },
    /// An encoded signal for every connection holding the session of `route`.
    SessionSignal { route: Bytes, frame: Bytes },
    /// A session was revoked: every connection holding it loses it, every store forgets
    /// it. `sealed`: a nonce and the session key, encrypted.
    SessionClosed { route: Bytes, sealed: Bytes },
    /// An encoded signal for a topic's subscribers, with its position in the topic's
    /// shared history.
    Positioned {
        topic: Bytes,
        position: Position,
        frame: Bytes,
    },
}

/// Why a message was not taken as an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not an envelope of this version: cut short, another version, an unknown kind.
    Malformed,
    /// Its tag is not the one the service's secret gives: forged, altered, or from
    /// another service.
    Tag,
}

impl Envelope {
    fn parts(&self) -> (u8, &Bytes, &[u8]) {
        match self {
            Envelope::Publish { topic, frame } => (1, topic, frame),
            Envelope::SessionSignal { route, frame } => (2, route, frame),
            Envelope::SessionClosed { route, sealed } => (3, route, sealed),
            Envelope::Positioned { topic, frame, .. } => (POSITIONED, topic, frame),
        }
    }

    /// The envelope's bytes, tagged; `None` for a target over 65 535 bytes.
    pub(crate) fn encode(&self, from: NodeId, seal: &Seal) -> Option<Bytes> {
        let (kind, target, body) = self.parts();
        let mut out = header(kind, from, target, 16 + body.len() + TAG_LEN)?;
        if let Envelope::Positioned { position, .. } = self {
            out.put_u64_le(position.epoch);
            out.put_u64_le(position.offset);
        }
        out.put_slice(body);
        out.put_slice(&seal.tag(&[&signed_head(kind, target), target, body]));
        Some(out.freeze())
    }

    /// The header of a publish with a position to `topic` from `from`: what a shared
    /// history puts the position and the [signed publication](Self::signed_publication)
    /// after. `None` for a topic over 65 535 bytes (no valid topic is).
    pub(crate) fn positioned_header(from: NodeId, topic: &str) -> Option<Bytes> {
        Some(header(POSITIONED, from, topic.as_bytes(), 0)?.freeze())
    }

    /// The signal `frame` of a publish with a position to `topic`, with its tag after it:
    /// what a shared history keeps, and sends after the position.
    pub(crate) fn signed_publication(seal: &Seal, topic: &str, frame: &[u8]) -> Bytes {
        let target = topic.as_bytes();
        let tag = seal.tag(&[&signed_head(POSITIONED, target), target, frame]);
        let mut out = BytesMut::with_capacity(frame.len() + TAG_LEN);
        out.put_slice(frame);
        out.put_slice(&tag);
        out.freeze()
    }

    /// The signal of a [signed publication](Self::signed_publication) of `topic` read
    /// back from a shared history, if its tag holds.
    pub(crate) fn open_publication(seal: &Seal, topic: &str, signed: &Bytes) -> Option<Bytes> {
        let at = signed.len().checked_sub(TAG_LEN)?;
        let target = topic.as_bytes();
        let frame = signed.slice(..at);
        seal.verify(
            &[&signed_head(POSITIONED, target), target, &frame],
            &signed[at..],
        )
        .then_some(frame)
    }

    /// The sender and the operation, if `message` is an envelope of this version whose tag
    /// holds.
    pub(crate) fn decode(message: &Bytes, seal: &Seal) -> Result<(NodeId, Envelope), Refused> {
        let header = message.get(..HEADER).ok_or(Refused::Malformed)?;
        if header[0] != VERSION {
            return Err(Refused::Malformed);
        }
        let kind = header[1];
        let node = NodeId(header[2..18].try_into().map_err(|_| Refused::Malformed)?);
        let len = usize::from(u16::from_be_bytes([header[18], header[19]]));
        let end = HEADER + len;
        let position_len = if kind == POSITIONED { 16 } else { 0 };
        let tag_at = message
            .len()
            .checked_sub(TAG_LEN)
            .filter(|at| *at >= end + position_len)
            .ok_or(Refused::Malformed)?;
        if !(1..=4).contains(&kind) {
            return Err(Refused::Malformed);
        }
        let target = message.slice(HEADER..end);
        let body = message.slice(end + position_len..tag_at);
        if !seal.verify(
            &[&signed_head(kind, &target), &target, &body],
            &message[tag_at..],
        ) {
            return Err(Refused::Tag);
        }
        let envelope = match kind {
            1 => Envelope::Publish {
                topic: target,
                frame: body,
            },
            2 => Envelope::SessionSignal {
                route: target,
                frame: body,
            },
            3 => Envelope::SessionClosed {
                route: target,
                sealed: body,
            },
            _ => {
                let at = &message[end..end + 16];
                let word = |i: usize| {
                    let mut le = [0; 8];
                    le.copy_from_slice(&at[i..i + 8]);
                    u64::from_le_bytes(le)
                };
                Envelope::Positioned {
                    topic: target,
                    position: Position {
                        epoch: word(0),
                        offset: word(8),
                    },
                    frame: body,
                }
            }
        };
        Ok((node, envelope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal() -> Seal {
        Seal::new(b"the service's secret, 32 bytes.")
    }

    fn every_kind() -> Vec<Envelope> {
        vec![
            Envelope::Publish {
                topic: Bytes::from_static(b"room/1"),
                frame: Bytes::from_static(b"\x02\x04news"),
            },
            Envelope::SessionSignal {
                route: Bytes::from(seal().session_route("k")),
                frame: Bytes::from_static(b"\x03"),
            },
            Envelope::SessionClosed {
                route: Bytes::from(seal().session_route("key")),
                sealed: Bytes::from(seal().encrypt(b"key")),
            },
            Envelope::Positioned {
                topic: Bytes::from_static(b"room/1"),
                position: Position {
                    epoch: 0x0123_4567_89ab_cdef,
                    offset: 42,
                },
                frame: Bytes::from_static(b"\x02\x04news"),
            },
        ]
    }

    #[test]
    fn every_kind_round_trips_with_its_sender() {
        let node = NodeId::random();
        for envelope in every_kind() {
            let bytes = envelope.encode(node, &seal()).unwrap();
            assert_eq!(Envelope::decode(&bytes, &seal()), Ok((node, envelope)));
        }
        assert_ne!(NodeId::random(), node);
    }

    #[test]
    fn a_positioned_publish_is_its_header_position_and_signed_publication() {
        let node = NodeId::random();
        let position = Position {
            epoch: 7,
            offset: 9,
        };
        let mut assembled = BytesMut::new();
        assembled.put_slice(&Envelope::positioned_header(node, "t").unwrap());
        assembled.put_u64_le(7);
        assembled.put_u64_le(9);
        let signed = Envelope::signed_publication(&seal(), "t", b"\x02\x01x");
        assembled.put_slice(&signed);
        let expected = Envelope::Positioned {
            topic: Bytes::from_static(b"t"),
            position,
            frame: Bytes::from_static(b"\x02\x01x"),
        };
        assert_eq!(
            Envelope::decode(&assembled.freeze(), &seal()),
            Ok((node, expected.clone()))
        );
        assert_eq!(
            expected.encode(node, &seal()),
            Some({
                let mut b = BytesMut::from(&Envelope::positioned_header(node, "t").unwrap()[..]);
                b.put_u64_le(7);
                b.put_u64_le(9);
                b.put_slice(&signed);
                b.freeze()
            })
        );
        assert_eq!(
            Envelope::open_publication(&seal(), "t", &signed).as_deref(),
            Some(&b"\x02\x01x"[..])
        );
        assert_eq!(Envelope::open_publication(&seal(), "u", &signed), None);
        assert_eq!(
            Envelope::open_publication(&Seal::new(b"another secret, long enough."), "t", &signed),
            None
        );
    }

    #[test]
    fn a_forged_or_altered_envelope_is_refused() {
        let node = NodeId::random();
        let other = Seal::new(b"another service's secret, 32 b.");
        for envelope in every_kind() {
            let good = envelope.encode(node, &seal()).unwrap();
            // Another service's secret.
            assert_eq!(
                Envelope::decode(&envelope.encode(node, &other).unwrap(), &seal()),
                Err(Refused::Tag)
            );
            // Every bit of what the tag covers, flipped.
            let position = match envelope {
                Envelope::Positioned { .. } => 16,
                _ => 0,
            };
            let len = usize::from(u16::from_be_bytes([good[18], good[19]]));
            for at in (2..HEADER)
                .chain(HEADER..HEADER + len)
                .chain(HEADER + len + position..good.len())
            {
                if (2..18).contains(&at) {
                    continue; // the node id: not covered
                }
                let mut altered = good.to_vec();
                altered[at] ^= 1;
                let verdict = Envelope::decode(&Bytes::from(altered), &seal());
                assert!(verdict.is_err(), "byte {at} altered in {envelope:?}");
            }
        }
    }

    #[test]
    fn what_is_not_an_envelope_is_refused_not_misread() {
        let good = every_kind()[2].encode(NodeId::random(), &seal()).unwrap();
        for len in 0..good.len() {
            assert!(
                Envelope::decode(&good.slice(..len), &seal()).is_err(),
                "cut at {len}"
            );
        }
        let mut other_version = good.to_vec();
        other_version[0] = 1;
        assert_eq!(
            Envelope::decode(&Bytes::from(other_version), &seal()),
            Err(Refused::Malformed)
        );
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert_eq!(
            Envelope::decode(&Bytes::from(trailing), &seal()),
            Err(Refused::Tag)
        );
        let mut unknown = good.to_vec();
        unknown[1] = 9;
        assert_eq!(
            Envelope::decode(&Bytes::from(unknown), &seal()),
            Err(Refused::Malformed)
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The route id of the session `key`, checked against (or written into) `vector`.
    fn session_route(vector: &mut serde_json::Value, seal: &Seal, key: &str) -> String {
        let route = seal.session_route(key);
        if std::env::var_os("WRITE_VECTORS").is_some() {
            vector["route"] = serde_json::Value::String(route.clone());
        }
        assert_eq!(
            vector["route"].as_str(),
            Some(route.as_str()),
            "route of {key}"
        );
        route
    }

    /// The golden messages of `docs/backplane-vectors.json`: each vector's envelope,
    /// encoded with its secret, node id (and nonce), is its bytes, and its bytes decode to
    /// it; the session routes are the keyed hashes of their keys. (`WRITE_VECTORS=1`
    /// writes the file afresh from the inputs: for a change of format only.)
    #[test]
    fn golden_vectors() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/backplane-vectors.json");
        let text = std::fs::read_to_string(path).unwrap();
        let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
        let secret = file["secret"].as_str().unwrap().as_bytes().to_vec();
        let seal = Seal::new(&secret);
        let node = NodeId::from_bytes(unhex(file["node"].as_str().unwrap()).try_into().unwrap());
        for vector in file["vectors"].as_array_mut().unwrap() {
            let frame = Bytes::from(unhex(vector["signal"].as_str().unwrap_or("")));
            let target = vector["target"].as_str().unwrap().to_owned();
            let envelope = match vector["kind"].as_str().unwrap() {
                "publish" => Envelope::Publish {
                    topic: Bytes::from(target.clone()),
                    frame,
                },
                "positioned" => Envelope::Positioned {
                    topic: Bytes::from(target.clone()),
                    position: Position {
                        epoch: vector["epoch"].as_u64().unwrap(),
                        offset: vector["offset"].as_u64().unwrap(),
                    },
                    frame,
                },
                "session_signal" => {
                    let route = session_route(vector, &seal, &target);
                    Envelope::SessionSignal {
                        route: Bytes::from(route),
                        frame,
                    }
                }
                "session_closed" => {
                    let nonce: [u8; 12] =
                        unhex(vector["nonce"].as_str().unwrap()).try_into().unwrap();
                    let route = session_route(vector, &seal, &target);
                    Envelope::SessionClosed {
                        route: Bytes::from(route),
                        sealed: Bytes::from(seal.encrypt_with(nonce, target.as_bytes())),
                    }
                }
                other => panic!("unknown kind {other}"),
            };
            let bytes = envelope.encode(node, &seal).unwrap();
            if std::env::var_os("WRITE_VECTORS").is_some() {
                vector["bytes"] = serde_json::Value::String(hex(&bytes));
                continue;
            }
            assert_eq!(
                vector["bytes"].as_str(),
                Some(hex(&bytes).as_str()),
                "{envelope:?}"
            );
            let decoded = Envelope::decode(
                &Bytes::from(unhex(vector["bytes"].as_str().unwrap())),
                &seal,
            );
            assert_eq!(decoded, Ok((node, envelope.clone())));
            if let Envelope::SessionClosed { sealed, .. } = &envelope {
                assert_eq!(seal.decrypt(sealed).as_deref(), Some(target.as_bytes()));
            }
        }
        if std::env::var_os("WRITE_VECTORS").is_some() {
            std::fs::write(path, serde_json::to_string_pretty(&file).unwrap() + "\n").unwrap();
        }
    }
}
