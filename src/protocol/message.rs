//! The WebWire message: one enum variant per message type.

use bytes::Bytes;

use crate::payload::{Encoding, Payload};
use crate::protocol::{AcceptConf, ErrorCode, MessageType, Name, RedactedKey, RequestId};

/// One WebWire v2.0 message, with a variant for each of the 21 types of PROTOCOL.md §2.1.
///
/// Parsed messages borrow their names, payloads, keys and texts as [`Bytes`] slices of the
/// frame ([`Message::parse`]); [`Message::encode`] writes one message into one buffer.
/// For signals, requests and replies the type byte carries the payload encoding, so each
/// encoding is its own variant holding the raw `data`; [`Message::signal`],
/// [`Message::request`] and [`Message::reply`] pick the variant from a [`Payload`], and
/// [`Message::payload`] gives it back.
///
/// ```
/// use tokio_webwire::{Payload, protocol::{Message, Name, RequestId}};
///
/// let msg = Message::request(RequestId::from(1), Name::from_static("echo"), Payload::utf8("hi"));
/// assert!(matches!(msg, Message::RequestUtf8 { .. }));
/// let frame = msg.encode().unwrap();
/// assert_eq!(Message::parse(frame).unwrap(), msg);
/// ```
///
/// `Debug` shows every field but the secrets: the key of a restore request and the session
/// JSON of a NotifySessionCreated (which holds the key) appear as their length only.
///
/// ```
/// use bytes::Bytes;
/// use tokio_webwire::protocol::{Message, RequestId};
///
/// let restore = Message::RequestRestoreSession { id: RequestId::from(7), key: Bytes::from("s3cret") };
/// let shown = format!("{restore:?}");
/// assert!(!shown.contains("s3cret"));
/// assert!(shown.contains("RequestRestoreSession") && shown.contains("<redacted: 6 bytes>"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum Message {
    /// `00`: the request `id` failed with an application error.
    ReplyError {
        /// The failed request.
        id: RequestId,
        /// The error code (1..=255 printable ASCII bytes).
        code: ErrorCode,
        /// The error message, UTF-8 (not validated on receipt), may be empty.
        message: Bytes,
    },
    /// `01`: the server is shutting down and did not handle request `id`.
    ReplyShutdown {
        /// The request.
        id: RequestId,
    },
    /// `02`: request `id` failed inside the server.
    ReplyInternalError {
        /// The request.
        id: RequestId,
    },
    /// `03`: the session that request `id` asked to restore was not found.
    ReplySessionNotFound {
        /// The request.
        id: RequestId,
    },
    /// `04`: the session of restore request `id` has reached its connection limit.
    ReplyMaxSessConnsReached {
        /// The request.
        id: RequestId,
    },
    /// `05`: sessions are disabled, so session request `id` was refused.
    ReplySessionsDisabled {
        /// The request.
        id: RequestId,
    },
    /// `15`: a session was created for this connection.
    NotifySessionCreated {
        /// The session as UTF-8 JSON (PROTOCOL.md §4.1), not validated by the parser.
        session: Bytes,
    },
    /// `16`: the server closed this connection's session.
    NotifySessionClosed,
    /// `17`: the server's handshake.
    AcceptConf(AcceptConf),
    /// `1F`: close the session of this connection.
    RequestCloseSession {
        /// The request.
        id: RequestId,
    },
    /// `20`: restore the session with this key.
    RequestRestoreSession {
        /// The request.
        id: RequestId,
        /// The session key: untrusted bytes, at least one.
        key: Bytes,
    },
    /// `21`: keep-alive, never answered.
    Heartbeat,
    /// `3F`: a signal with a binary payload.
    SignalBinary {
        /// The signal's name, possibly empty.
        name: Name,
        /// The payload.
        data: Bytes,
    },
    /// `40`: a signal with a UTF-8 payload.
    SignalUtf8 {
        /// The signal's name, possibly empty.
        name: Name,
        /// The payload.
        data: Bytes,
    },
    /// `41`: a signal with a UTF-16 payload.
    SignalUtf16 {
        /// The signal's name, possibly empty.
        name: Name,
        /// The payload: little-endian code units, at least one.
        data: Bytes,
    },
    /// `7F`: a request with a binary payload.
    RequestBinary {
        /// Echoed by the reply.
        id: RequestId,
        /// The request's name, possibly empty.
        name: Name,
        /// The payload.
        data: Bytes,
    },
    /// `80`: a request with a UTF-8 payload.
    RequestUtf8 {
        /// Echoed by the reply.
        id: RequestId,
        /// The request's name, possibly empty.
        name: Name,
        /// The payload.
        data: Bytes,
    },
    /// `81`: a request with a UTF-16 payload.
    RequestUtf16 {
        /// Echoed by the reply.
        id: RequestId,
        /// The request's name, possibly empty.
        name: Name,
        /// The payload: little-endian code units.
        data: Bytes,
    },
    /// `BF`: a successful reply with a binary payload.
    ReplyBinary {
        /// The request this answers.
        id: RequestId,
        /// The payload, possibly empty.
        data: Bytes,
    },
    /// `C0`: a successful reply with a UTF-8 payload.
    ReplyUtf8 {
        /// The request this answers.
        id: RequestId,
        /// The payload, possibly empty.
        data: Bytes,
    },
    /// `C1`: a successful reply with a UTF-16 payload.
    ReplyUtf16 {
        /// The request this answers.
        id: RequestId,
        /// The payload: little-endian code units, possibly empty.
        data: Bytes,
    },
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use Message as M;
        // The variants are named as their types.
        let kind = format!("{:?}", self.message_type());
        let mut shown = f.debug_struct(&kind);
        if let Some(id) = self.request_id() {
            shown.field("id", &id);
        }
        match self {
            M::ReplyError { code, message, .. } => {
                shown.field("code", code).field("message", message);
            }
            M::NotifySessionCreated { session } => {
                shown.field("session", &RedactedKey(session.len()));
            }
            M::RequestRestoreSession { key, .. } => {
                shown.field("key", &RedactedKey(key.len()));
            }
            M::AcceptConf(conf) => {
                shown.field("conf", conf);
            }
            _ => {}
        }
        if let Some(name) = self.name() {
            shown.field("name", name);
        }
        if let Some(payload) = self.payload() {
            shown.field("data", &payload.data);
        }
        shown.finish()
    }
}

impl Message {
    /// A signal of the type that matches the payload's encoding.
    #[must_use]
    pub fn signal(name: Name, payload: Payload) -> Message {
        let data = payload.data;
        match payload.encoding {
            Encoding::Binary => Message::SignalBinary { name, data },
            Encoding::Utf8 => Message::SignalUtf8 { name, data },
            Encoding::Utf16 => Message::SignalUtf16 { name, data },
        }
    }

    /// A request of the type that matches the payload's encoding.
    #[must_use]
    pub fn request(id: RequestId, name: Name, payload: Payload) -> Message {
        let data = payload.data;
        match payload.encoding {
            Encoding::Binary => Message::RequestBinary { id, name, data },
            Encoding::Utf8 => Message::RequestUtf8 { id, name, data },
            Encoding::Utf16 => Message::RequestUtf16 { id, name, data },
        }
    }

    /// A reply of the type that matches the payload's encoding.
    #[must_use]
    pub fn reply(id: RequestId, payload: Payload) -> Message {
        let data = payload.data;
        match payload.encoding {
            Encoding::Binary => Message::ReplyBinary { id, data },
            Encoding::Utf8 => Message::ReplyUtf8 { id, data },
            Encoding::Utf16 => Message::ReplyUtf16 { id, data },
        }
    }

    /// The type byte of this message.
    #[must_use]
    pub fn message_type(&self) -> MessageType {
        use MessageType as T;
        match self {
            Message::ReplyError { .. } => T::ReplyError,
            Message::ReplyShutdown { .. } => T::ReplyShutdown,
            Message::ReplyInternalError { .. } => T::ReplyInternalError,
            Message::ReplySessionNotFound { .. } => T::ReplySessionNotFound,
            Message::ReplyMaxSessConnsReached { .. } => T::ReplyMaxSessConnsReached,
            Message::ReplySessionsDisabled { .. } => T::ReplySessionsDisabled,
            Message::NotifySessionCreated { .. } => T::NotifySessionCreated,
            Message::NotifySessionClosed => T::NotifySessionClosed,
            Message::AcceptConf(_) => T::AcceptConf,
            Message::RequestCloseSession { .. } => T::RequestCloseSession,
            Message::RequestRestoreSession { .. } => T::RequestRestoreSession,
            Message::Heartbeat => T::Heartbeat,
            Message::SignalBinary { .. } => T::SignalBinary,
            Message::SignalUtf8 { .. } => T::SignalUtf8,
            Message::SignalUtf16 { .. } => T::SignalUtf16,
            Message::RequestBinary { .. } => T::RequestBinary,
            Message::RequestUtf8 { .. } => T::RequestUtf8,
            Message::RequestUtf16 { .. } => T::RequestUtf16,
            Message::ReplyBinary { .. } => T::ReplyBinary,
            Message::ReplyUtf8 { .. } => T::ReplyUtf8,
            Message::ReplyUtf16 { .. } => T::ReplyUtf16,
        }
    }

    /// The request identifier of a request, session request or any reply.
    #[must_use]
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            Message::ReplyError { id, .. }
            | Message::ReplyShutdown { id }
            | Message::ReplyInternalError { id }
            | Message::ReplySessionNotFound { id }
            | Message::ReplyMaxSessConnsReached { id }
            | Message::ReplySessionsDisabled { id }
            | Message::RequestCloseSession { id }
            | Message::RequestRestoreSession { id, .. }
            | Message::RequestBinary { id, .. }
            | Message::RequestUtf8 { id, .. }
            | Message::RequestUtf16 { id, .. }
            | Message::ReplyBinary { id, .. }
            | Message::ReplyUtf8 { id, .. }
            | Message::ReplyUtf16 { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// The name of a signal or request.
    #[must_use]
    pub fn name(&self) -> Option<&Name> {
        match self {
            Message::SignalBinary { name, .. }
            | Message::SignalUtf8 { name, .. }
            | Message::SignalUtf16 { name, .. }
            | Message::RequestBinary { name, .. }
            | Message::RequestUtf8 { name, .. }
            | Message::RequestUtf16 { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The payload of a signal, request or reply, with its encoding (a cheap clone).
    #[must_use]
    pub fn payload(&self) -> Option<Payload> {
        let encoding = self.message_type().encoding()?;
        let data = match self {
            Message::SignalBinary { data, .. }
            | Message::SignalUtf8 { data, .. }
            | Message::SignalUtf16 { data, .. }
            | Message::RequestBinary { data, .. }
            | Message::RequestUtf8 { data, .. }
            | Message::RequestUtf16 { data, .. }
            | Message::ReplyBinary { data, .. }
            | Message::ReplyUtf8 { data, .. }
            | Message::ReplyUtf16 { data, .. } => data.clone(),
            _ => return None,
        };
        Some(Payload { encoding, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_keys_and_session_json_but_shows_the_rest() {
        let id = RequestId::from(7);
        let restore = Message::RequestRestoreSession {
            id,
            key: Bytes::from_static(b"s3cret-key"),
        };
        let notify = Message::NotifySessionCreated {
            session: Bytes::from_static(br#"{"k":"s3cret-key","c":"2019-01-04T21:19:06Z"}"#),
        };
        for message in [&restore, &notify] {
            let shown = format!("{message:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        assert_eq!(
            format!("{restore:?}"),
            "RequestRestoreSession { id: RequestId(0700000000000000), key: <redacted: 10 bytes> }"
        );
        assert_eq!(
            format!("{notify:?}"),
            "NotifySessionCreated { session: <redacted: 45 bytes> }"
        );
        // Everything else is shown as it is.
        let request = Message::request(id, Name::from_static("echo"), Payload::utf8("hi"));
        assert_eq!(
            format!("{request:?}"),
            r#"RequestUtf8 { id: RequestId(0700000000000000), name: "echo", data: b"hi" }"#
        );
        let error = Message::ReplyError {
            id,
            code: ErrorCode::from_static("E1"),
            message: Bytes::from_static(b"no"),
        };
        assert_eq!(
            format!("{error:?}"),
            r#"ReplyError { id: RequestId(0700000000000000), code: "E1", message: b"no" }"#
        );
        assert_eq!(format!("{:?}", Message::Heartbeat), "Heartbeat");
        assert_eq!(
            format!("{:?}", Message::RequestCloseSession { id }),
            "RequestCloseSession { id: RequestId(0700000000000000) }"
        );
    }

    #[test]
    fn constructors_and_accessors_agree() {
        let id = RequestId::from(7);
        let name = Name::from_static("n");
        for enc in [Encoding::Binary, Encoding::Utf8, Encoding::Utf16] {
            let payload = Payload {
                encoding: enc,
                data: Bytes::from_static(b"ab"),
            };
            let signal = Message::signal(name.clone(), payload.clone());
            assert_eq!(signal.message_type(), MessageType::signal(enc));
            assert_eq!(signal.payload().as_ref(), Some(&payload));
            assert_eq!(signal.name(), Some(&name));
            assert_eq!(signal.request_id(), None);

            let request = Message::request(id, name.clone(), payload.clone());
            assert_eq!(request.message_type(), MessageType::request(enc));
            assert_eq!(request.payload().as_ref(), Some(&payload));
            assert_eq!(request.request_id(), Some(id));

            let reply = Message::reply(id, payload.clone());
            assert_eq!(reply.message_type(), MessageType::reply(enc));
            assert_eq!(reply.payload(), Some(payload));
            assert_eq!(reply.name(), None);
        }
        assert_eq!(Message::Heartbeat.payload(), None);
        assert_eq!(Message::ReplyShutdown { id }.request_id(), Some(id));
    }
}
