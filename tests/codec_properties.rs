//! Properties of the codec over generated input: encode → parse is the identity for every
//! valid message, and parse never panics, whatever the bytes.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use tokio_webwire::protocol::{
    AcceptConf, ErrorCode, Message, MessageType, Name, ProtocolVersion, RequestId,
};
use tokio_webwire::{Encoding, Payload, Session, SessionInfo};

/// Payload sizes: mostly small, sometimes up to 64 KiB.
fn data(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        1 => prop::collection::vec(any::<u8>(), 0..=max),
    ]
}

fn name() -> impl Strategy<Value = Name> {
    "[ -~]{0,255}".prop_map(|s| Name::new(s).expect("printable ASCII"))
}

fn id() -> impl Strategy<Value = RequestId> {
    any::<[u8; 8]>().prop_map(RequestId::new)
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![
        Just(Encoding::Binary),
        Just(Encoding::Utf8),
        Just(Encoding::Utf16)
    ]
}

/// A payload of `encoding` with at least `min` bytes; UTF-16 payloads have even lengths.
fn payload(encoding: Encoding, min: usize) -> impl Strategy<Value = Payload> {
    data(64 * 1024).prop_filter_map("payload too short", move |mut data| {
        if encoding == Encoding::Utf16 && data.len() % 2 == 1 {
            data.pop();
        }
        (data.len() >= min).then(|| Payload {
            encoding,
            data: Bytes::from(data),
        })
    })
}

/// A request or signal needs a name or a payload; a UTF-16 signal needs a code unit.
fn named(min_utf16: usize) -> impl Strategy<Value = (Name, Payload)> {
    (name(), encoding())
        .prop_flat_map(move |(name, enc)| {
            let min = match enc {
                Encoding::Utf16 => min_utf16,
                _ => usize::from(name.is_empty()),
            };
            (Just(name), payload(enc, min))
        })
        .prop_filter("neither name nor payload", |(n, p)| {
            !(n.is_empty() && p.is_empty())
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (id(), named(0)).prop_map(|(id, (name, p))| Message::request(id, name, p)),
        named(2).prop_map(|(name, p)| Message::signal(name, p)),
        (id(), encoding())
            .prop_flat_map(|(id, e)| payload(e, 0).prop_map(move |p| Message::reply(id, p))),
        (id(), "[ -~]{1,255}", ".{0,100}").prop_map(|(id, code, message)| Message::ReplyError {
            id,
            code: ErrorCode::new(code).expect("printable ASCII"),
            message: Bytes::from(message),
        }),
        (id(), 1..=5u8).prop_map(|(id, ty)| match ty {
            1 => Message::ReplyShutdown { id },
            2 => Message::ReplyInternalError { id },
            3 => Message::ReplySessionNotFound { id },
            4 => Message::ReplyMaxSessConnsReached { id },
            _ => Message::ReplySessionsDisabled { id },
        }),
        data(1024)
            .prop_filter("empty", |d| !d.is_empty())
            .prop_map(|d| Message::NotifySessionCreated {
                session: Bytes::from(d)
            }),
        Just(Message::NotifySessionClosed),
        Just(Message::Heartbeat),
        (
            any::<u8>(),
            any::<u8>(),
            any::<u32>(),
            any::<u32>(),
            data(64)
        )
            .prop_map(|(major, minor, millis, size, sub)| {
                Message::AcceptConf(AcceptConf {
                    version: ProtocolVersion { major, minor },
                    read_timeout: Duration::from_millis(u64::from(millis)),
                    message_buffer_size: size,
                    sub_protocol: Bytes::from(sub),
                })
            }),
        id().prop_map(|id| Message::RequestCloseSession { id }),
        (id(), data(300).prop_filter("empty", |d| !d.is_empty())).prop_map(|(id, key)| {
            Message::RequestRestoreSession {
                id,
                key: Bytes::from(key),
            }
        }),
    ]
}

/// Any instant RFC 3339 can write, at any whole-minute UTC offset.
fn timestamp() -> impl Strategy<Value = time::OffsetDateTime> {
    (
        0i64..253_402_300_799,
        0u32..1_000_000_000,
        -(23 * 60 + 59)..=(23 * 60 + 59i32),
    )
        .prop_filter_map("out of range", |(secs, nanos, offset_minutes)| {
            let offset = time::UtcOffset::from_whole_seconds(offset_minutes * 60).ok()?;
            let at = time::OffsetDateTime::from_unix_timestamp(secs).ok()?;
            let at = at
                .replace_nanosecond(nanos)
                .ok()?
                .checked_to_offset(offset)?;
            (0..=9999).contains(&at.year()).then_some(at)
        })
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn encode_then_parse_is_the_identity(msg in message()) {
        let frame = msg.encode().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(frame[0], msg.message_type() as u8);
        prop_assert_eq!(Message::parse(frame), Ok(msg));
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(frame in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Message::parse(Bytes::from(frame));
    }

    /// Arbitrary bytes behind a valid type byte reach every type's length rules; whatever
    /// parses can be written again and reads back the same.
    #[test]
    fn whatever_parses_encodes_and_parses_back(
        ty in prop::sample::select(MessageType::ALL.to_vec()),
        rest in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut frame = vec![ty as u8];
        frame.extend_from_slice(&rest);
        if let Ok(msg) = Message::parse(Bytes::from(frame)) {
            prop_assert_eq!(msg.message_type(), ty);
            let again = msg.encode().map_err(|e| TestCaseError::fail(format!("{msg:?}: {e}")))?;
            prop_assert_eq!(Message::parse(again), Ok(msg));
        }
    }

    /// The session JSON reads back to the same session, offsets included.
    #[test]
    fn session_json_round_trips(
        key in ".{1,80}",
        created in timestamp(),
        last_lookup in timestamp(),
        info in prop::collection::btree_map(".{0,12}", json_value(), 0..6),
    ) {
        let session = Session {
            key,
            created,
            last_lookup,
            info: SessionInfo::from(info.into_iter().collect::<serde_json::Map<_, _>>()),
        };
        let json = session.to_json().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let back = Session::from_json(&json).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(back.created.offset(), created.offset());
        prop_assert_eq!(back.last_lookup.offset(), last_lookup.offset());
        prop_assert_eq!(back.to_json(), Ok(json));
        prop_assert_eq!(back, session);
    }
}
