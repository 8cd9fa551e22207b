//! [`Message`] → frame: validate first (§2.5), then write into one exactly-sized buffer.

use bytes::{BufMut, Bytes, BytesMut};

use crate::payload::Encoding;
use crate::protocol::{Message, MessageType, Name, ProtocolError, RequestId};

/// The parts of a message after its type byte, in wire order. Every message type is some
/// selection of them, so one writer serves all 21.
struct Layout<'a> {
    id: Option<&'a RequestId>,
    /// AcceptConf's version, read timeout and buffer size.
    fixed: Option<[u8; 10]>,
    /// A name or error code, written behind its length byte.
    short: Option<(u8, &'a [u8])>,
    /// One `00` byte that keeps a UTF-16 payload at an even offset.
    padding: bool,
    body: &'a [u8],
}

impl<'a> Layout<'a> {
    /// The name and payload of a signal or request: at least one of them, whole UTF-16 code
    /// units, and the padding byte after an odd name in a UTF-16 message (written even when
    /// no payload follows, §2.4 `81`).
    fn named(
        &mut self,
        ty: MessageType,
        name: &'a Name,
        data: &'a [u8],
    ) -> Result<(), ProtocolError> {
        if name.is_empty() && data.is_empty() {
            return Err(ProtocolError::NoNameNoPayload { message_type: ty });
        }
        whole_units(ty, data)?;
        self.short = Some(short(name.as_bytes(), "name")?);
        self.padding = ty.encoding() == Some(Encoding::Utf16) && name.len() % 2 == 1;
        self.body = data;
        Ok(())
    }

    fn len(&self) -> usize {
        1 + self.id.map_or(0, |_| 8)
            + self.fixed.map_or(0, |f| f.len())
            + self.short.map_or(0, |(_, s)| 1 + s.len())
            + usize::from(self.padding)
            + self.body.len()
    }
}

impl Message {
    /// Encodes the message into one frame, allocating exactly once.
    ///
    /// Refuses, instead of producing bytes a peer would reject (PROTOCOL.md §2.5): a request
    /// or signal with neither name nor payload, a UTF-16 payload of odd length, a UTF-16
    /// signal with fewer than 2 payload bytes, an empty session key or session JSON, and a
    /// read timeout over `u32::MAX` milliseconds. Names and error codes are valid by
    /// construction ([`Name`](crate::protocol::Name),
    /// [`ErrorCode`](crate::protocol::ErrorCode)). UTF-16 padding is written as §2.3 says.
    ///
    /// ```
    /// use tokio_webwire::{Payload, ProtocolError, protocol::{Message, Name}};
    ///
    /// let frame = Message::signal(Name::from_static("abc"), Payload::utf16("hi")).encode().unwrap();
    /// assert_eq!(&frame[..], b"\x41\x03abc\x00h\x00i\x00"); // padded after the odd name
    ///
    /// let empty = Message::signal(Name::empty(), Payload::empty());
    /// assert!(matches!(empty.encode(), Err(ProtocolError::NoNameNoPayload { .. })));
    /// ```
    pub fn encode(&self) -> Result<Bytes, ProtocolError> {
        let layout = self.layout()?;
        let mut buf = Vec::with_capacity(layout.len());
        self.write(&layout, &mut buf);
        // `len == capacity`, so this hands the allocation over without another one.
        Ok(Bytes::from(buf))
    }

    /// Appends the frame [`encode`](Message::encode) would produce to `out`, refusing what
    /// it refuses (then `out` is left as it was).
    ///
    /// For a sender that encodes many messages: with `out` reserved ahead, each frame is
    /// split off a shared buffer (see [`BytesMut::split`]) instead of an allocation of its
    /// own.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use tokio_webwire::{Payload, protocol::{Message, Name, RequestId}};
    ///
    /// let mut out = BytesMut::with_capacity(4096);
    /// let message = Message::request(RequestId::from(1), Name::from_static("q"), Payload::utf8("x"));
    /// message.encode_into(&mut out).unwrap();
    /// assert_eq!(out.split().freeze(), message.encode().unwrap());
    /// ```
    pub fn encode_into(&self, out: &mut BytesMut) -> Result<(), ProtocolError> {
        let layout = self.layout()?;
        out.reserve(layout.len());
        self.write(&layout, out);
        Ok(())
    }

    /// Writes the message as `layout` lays it out; `out` has room for it.
    fn write(&self, layout: &Layout<'_>, out: &mut impl BufMut) {
        out.put_u8(self.message_type() as u8);
        if let Some(id) = layout.id {
            out.put_slice(id.as_bytes());
        }
        if let Some(fixed) = &layout.fixed {
            out.put_slice(fixed);
        }
        if let Some((short_len, short)) = layout.short {
            out.put_u8(short_len);
            out.put_slice(short);
        }
        if layout.padding {
            out.put_u8(0);
        }
        out.put_slice(layout.body);
    }

    /// The length of the frame [`Message::encode`] would produce, or why it would refuse.
    ///
    /// Lets a sender check a size limit before it allocates.
    ///
    /// ```
    /// use tokio_webwire::{Payload, protocol::{Message, RequestId}};
    ///
    /// let reply = Message::reply(RequestId::from(1), Payload::utf16("hi"));
    /// assert_eq!(reply.encoded_len(), Ok(14)); // type, id, padding, 4 payload bytes
    /// ```
    pub fn encoded_len(&self) -> Result<usize, ProtocolError> {
        self.layout().map(|layout| layout.len())
    }

    fn layout(&self) -> Result<Layout<'_>, ProtocolError> {
        let ty = self.message_type();
        let utf16 = ty.encoding() == Some(Encoding::Utf16);
        let mut layout = Layout {
            id: None,
            fixed: None,
            short: None,
            padding: false,
            body: &[],
        };
        match self {
            Message::ReplyError { id, code, message } => {
                layout.id = Some(id);
                layout.short = Some(short(code.as_bytes(), "error code")?);
                layout.body = message;
            }
            Message::ReplyShutdown { id }
            | Message::ReplyInternalError { id }
            | Message::ReplySessionNotFound { id }
            | Message::ReplyMaxSessConnsReached { id }
            | Message::ReplySessionsDisabled { id }
            | Message::RequestCloseSession { id } => layout.id = Some(id),
            Message::NotifySessionCreated { session } => {
                non_empty(session, "session JSON")?;
                layout.body = session;
            }
            Message::NotifySessionClosed | Message::Heartbeat => {}
            Message::AcceptConf(conf) => {
                let millis = conf.read_timeout.as_millis();
                let timeout = u32::try_from(millis)
                    .map_err(|_| ProtocolError::ReadTimeoutOverflow { millis })?;
                let mut fixed = [0; 10];
                fixed[0] = conf.version.major;
                fixed[1] = conf.version.minor;
                fixed[2..6].copy_from_slice(&timeout.to_le_bytes());
                fixed[6..10].copy_from_slice(&conf.message_buffer_size.to_le_bytes());
                layout.fixed = Some(fixed);
                layout.body = &conf.sub_protocol;
            }
            Message::RequestRestoreSession { id, key } => {
                non_empty(key, "session key")?;
                layout.id = Some(id);
                layout.body = key;
            }
            Message::SignalBinary { name, data }
            | Message::SignalUtf8 { name, data }
            | Message::SignalUtf16 { name, data } => {
                // Every parser rejects a UTF-16 signal without a code unit (§2.5).
                if utf16 && data.is_empty() && !name.is_empty() {
                    return Err(ProtocolError::Utf16SignalTooShort { len: 0 });
                }
                layout.named(ty, name, data)?;
            }
            Message::RequestBinary { id, name, data }
            | Message::RequestUtf8 { id, name, data }
            | Message::RequestUtf16 { id, name, data } => {
                layout.id = Some(id);
                layout.named(ty, name, data)?;
            }
            Message::ReplyBinary { id, data }
            | Message::ReplyUtf8 { id, data }
            | Message::ReplyUtf16 { id, data } => {
                whole_units(ty, data)?;
                layout.id = Some(id);
                // A UTF-16 reply always has its padding byte at offset 9.
                layout.padding = utf16;
                layout.body = data;
            }
        }
        Ok(layout)
    }
}

/// A name or error code with its length byte. Their types already limit them to 255 bytes;
/// the conversion only keeps a broken invariant from truncating the length on the wire.
fn short<'a>(bytes: &'a [u8], field: &'static str) -> Result<(u8, &'a [u8]), ProtocolError> {
    let len = u8::try_from(bytes.len()).map_err(|_| ProtocolError::TooLong {
        field,
        len: bytes.len(),
    })?;
    Ok((len, bytes))
}

fn non_empty(bytes: &[u8], field: &'static str) -> Result<(), ProtocolError> {
    if bytes.is_empty() {
        return Err(ProtocolError::EmptyField { field });
    }
    Ok(())
}

/// A UTF-16 payload must be whole code units; other encodings pass.
fn whole_units(message_type: MessageType, data: &[u8]) -> Result<(), ProtocolError> {
    if message_type.encoding() == Some(Encoding::Utf16) && data.len() % 2 != 0 {
        return Err(ProtocolError::OddUtf16Payload {
            message_type,
            len: data.len(),
        });
    }
    Ok(())
}
