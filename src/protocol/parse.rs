//! Frame → [`Message`]: every rule of PROTOCOL.md §2.4, plus printable names and codes.

use std::time::Duration;

use bytes::{Buf, Bytes};

use crate::payload::Payload;
use crate::protocol::{
    AcceptConf, ErrorCode, Message, MessageType, Name, ProtocolError, ProtocolVersion, RequestId,
};

/// The type byte read: one of the 21 of protocol v2.0, or the rule it breaks.
impl TryFrom<u8> for MessageType {
    type Error = ProtocolError;

    fn try_from(byte: u8) -> Result<Self, ProtocolError> {
        use MessageType as T;
        Ok(match byte {
            0 => T::ReplyError,
            1 => T::ReplyShutdown,
            2 => T::ReplyInternalError,
            3 => T::ReplySessionNotFound,
            4 => T::ReplyMaxSessConnsReached,
            5 => T::ReplySessionsDisabled,
            21 => T::NotifySessionCreated,
            22 => T::NotifySessionClosed,
            23 => T::AcceptConf,
            31 => T::RequestCloseSession,
            32 => T::RequestRestoreSession,
            33 => T::Heartbeat,
            63 => T::SignalBinary,
            64 => T::SignalUtf8,
            65 => T::SignalUtf16,
            127 => T::RequestBinary,
            128 => T::RequestUtf8,
            129 => T::RequestUtf16,
            191 => T::ReplyBinary,
            192 => T::ReplyUtf8,
            193 => T::ReplyUtf16,
            other => return Err(ProtocolError::UnknownType(other)),
        })
    }
}

impl Message {
    /// Parses one WebWire message from one WebSocket binary frame.
    ///
    /// Names, payloads, keys and texts in the result are slices of `frame`: parsing copies
    /// nothing, and allocates nothing once the frame's buffer is shared (as frames from the
    /// WebSocket layer are; the first slice of a `Bytes` made from a `Vec` allocates its
    /// small shared header once).
    ///
    /// Every length rule of the reference parser is enforced (PROTOCOL.md §2.4), and names
    /// and error codes must be printable ASCII (0x20..=0x7E), which the reference parser
    /// does not check. Payload text is not validated here; see [`Payload::to_text`].
    ///
    /// Never panics, whatever the bytes.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tokio_webwire::protocol::{Message, RequestId};
    ///
    /// let frame = Bytes::from_static(b"\xc0\x01\x00\x00\x00\x00\x00\x00\x00hi");
    /// let msg = Message::parse(frame).unwrap();
    /// assert_eq!(msg.request_id(), Some(RequestId::from(1)));
    /// assert_eq!(msg.payload().unwrap().as_str().unwrap(), "hi");
    /// ```
    pub fn parse(frame: Bytes) -> Result<Message, ProtocolError> {
        let Some(&type_byte) = frame.first() else {
            return Err(ProtocolError::Empty);
        };
        let ty = MessageType::try_from(type_byte)?;
        let len = frame.len();
        use MessageType as T;
        match ty {
            T::ReplyError => {
                at_least(ty, len, 11)?;
                let id = id_at_1(&frame);
                let code_len = usize::from(frame[9]);
                if code_len == 0 {
                    return Err(ProtocolError::EmptyField {
                        field: "error code",
                    });
                }
                fits(ty, "error code", code_len, len - 10)?;
                let code = ErrorCode::checked(frame.slice(10..10 + code_len), Some(ty))?;
                Ok(Message::ReplyError {
                    id,
                    code,
                    message: tail(frame, 10 + code_len),
                })
            }
            T::ReplyShutdown
            | T::ReplySessionNotFound
            | T::ReplyInternalError
            | T::ReplyMaxSessConnsReached
            | T::ReplySessionsDisabled => {
                // Written as exactly 9 bytes; trailing bytes are accepted and ignored (§2.3).
                at_least(ty, len, 9)?;
                let id = id_at_1(&frame);
                Ok(match ty {
                    T::ReplyShutdown => Message::ReplyShutdown { id },
                    T::ReplyInternalError => Message::ReplyInternalError { id },
                    T::ReplySessionNotFound => Message::ReplySessionNotFound { id },
                    T::ReplyMaxSessConnsReached => Message::ReplyMaxSessConnsReached { id },
                    _ => Message::ReplySessionsDisabled { id },
                })
            }
            T::NotifySessionCreated => {
                at_least(ty, len, 2)?;
                Ok(Message::NotifySessionCreated {
                    session: tail(frame, 1),
                })
            }
            T::NotifySessionClosed => exactly(ty, len, 1).map(|()| Message::NotifySessionClosed),
            T::Heartbeat => exactly(ty, len, 1).map(|()| Message::Heartbeat),
            T::AcceptConf => {
                at_least(ty, len, 11)?;
                let u32_at = |at: usize| {
                    u32::from_le_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]])
                };
                Ok(Message::AcceptConf(AcceptConf {
                    version: ProtocolVersion {
                        major: frame[1],
                        minor: frame[2],
                    },
                    read_timeout: Duration::from_millis(u64::from(u32_at(3))),
                    message_buffer_size: u32_at(7),
                    sub_protocol: tail(frame, 11),
                }))
            }
            T::RequestCloseSession => {
                exactly(ty, len, 9)?;
                Ok(Message::RequestCloseSession {
                    id: id_at_1(&frame),
                })
            }
            T::RequestRestoreSession => {
                at_least(ty, len, 10)?;
                Ok(Message::RequestRestoreSession {
                    id: id_at_1(&frame),
                    key: tail(frame, 9),
                })
            }
            T::SignalBinary | T::SignalUtf8 => {
                at_least(ty, len, 3)?;
                let (name, start) = name_at(&frame, ty, 1, false)?;
                Ok(Message::signal(name, payload(frame, start, ty)))
            }
            T::SignalUtf16 => {
                at_least(ty, len, 4)?;
                even(ty, len)?;
                let (name, start) = name_at(&frame, ty, 1, true)?;
                // The payload is never empty, even for a named signal.
                at_least(ty, len, start + 2)?;
                Ok(Message::signal(name, payload(frame, start, ty)))
            }
            T::RequestBinary | T::RequestUtf8 => {
                // 11 bytes: with no name the payload has at least one byte.
                at_least(ty, len, 11)?;
                let (name, start) = name_at(&frame, ty, 9, false)?;
                let id = id_at_1(&frame);
                Ok(Message::request(id, name, payload(frame, start, ty)))
            }
            T::RequestUtf16 => {
                at_least(ty, len, 11)?;
                even(ty, len)?;
                // An odd name needs its padding byte even when no payload follows.
                let (name, start) = name_at(&frame, ty, 9, true)?;
                at_least(ty, len, start)?;
                let id = id_at_1(&frame);
                Ok(Message::request(id, name, payload(frame, start, ty)))
            }
            T::ReplyBinary | T::ReplyUtf8 => {
                at_least(ty, len, 9)?;
                let id = id_at_1(&frame);
                Ok(Message::reply(id, payload(frame, 9, ty)))
            }
            T::ReplyUtf16 => {
                // The padding byte at offset 9 is mandatory.
                at_least(ty, len, 10)?;
                even(ty, len)?;
                let id = id_at_1(&frame);
                Ok(Message::reply(id, payload(frame, 10, ty)))
            }
        }
    }
}

fn at_least(message_type: MessageType, actual: usize, min: usize) -> Result<(), ProtocolError> {
    if actual < min {
        return Err(ProtocolError::TooShort {
            message_type,
            min,
            actual,
        });
    }
    Ok(())
}

fn exactly(message_type: MessageType, actual: usize, expected: usize) -> Result<(), ProtocolError> {
    if actual != expected {
        return Err(ProtocolError::WrongLength {
            message_type,
            expected,
            actual,
        });
    }
    Ok(())
}

fn even(message_type: MessageType, actual: usize) -> Result<(), ProtocolError> {
    if actual % 2 != 0 {
        return Err(ProtocolError::OddLength {
            message_type,
            actual,
        });
    }
    Ok(())
}

fn fits(
    message_type: MessageType,
    field: &'static str,
    declared: usize,
    available: usize,
) -> Result<(), ProtocolError> {
    if declared > available {
        return Err(ProtocolError::LengthExceedsFrame {
            message_type,
            field,
            declared,
            available,
        });
    }
    Ok(())
}

/// The identifier at offsets 1..9; callers have checked that the frame is long enough.
fn id_at_1(frame: &[u8]) -> RequestId {
    let mut id = [0; 8];
    id.copy_from_slice(&frame[1..9]);
    RequestId::new(id)
}

/// Reads the length-prefixed name whose length byte is at `at` (checked to exist) and
/// returns it with the offset where the payload starts: right after the name, or one byte
/// later when `padded` (UTF-16) and the name length is odd.
fn name_at(
    frame: &Bytes,
    ty: MessageType,
    at: usize,
    padded: bool,
) -> Result<(Name, usize), ProtocolError> {
    let name_len = usize::from(frame[at]);
    let name_start = at + 1;
    fits(ty, "name", name_len, frame.len() - name_start)?;
    let name_end = name_start + name_len;
    let name = Name::checked(frame.slice(name_start..name_end), Some(ty))?;
    let padding = usize::from(padded && name_len % 2 == 1);
    Ok((name, name_end + padding))
}

/// The payload from `start` (checked to be within the frame) to the end, with the encoding
/// the type byte carries (callers pass only signal, request and reply types).
fn payload(frame: Bytes, start: usize, ty: MessageType) -> Payload {
    Payload {
        encoding: ty.encoding().unwrap_or_default(),
        data: tail(frame, start),
    }
}

/// The frame from `start` (checked to be within it) to the end. The frame itself becomes
/// the tail, which spares the reference-count round trip a `slice` would cost.
fn tail(mut frame: Bytes, start: usize) -> Bytes {
    frame.advance(start);
    frame
}
