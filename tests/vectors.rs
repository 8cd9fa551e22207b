//! The golden vectors of PROTOCOL.md §7: every valid one parses to exactly its listed
//! fields and encodes back to its bytes; every invalid one is rejected.
//!
//! The vectors live in `../shared/protocol-vectors.json`; `tests/data/` keeps a copy so the
//! crate tests on its own, and this test fails if the two ever differ.

mod common;

use bytes::Bytes;
use common::{unhex, vectors};
use serde_json::Value;
use tokio_webwire::protocol::{
    AcceptConf, ErrorCode, Message, MessageType, Name, ProtocolVersion, RequestId,
};
use tokio_webwire::{Encoding, Payload, ProtocolError, Session};

/// Valid vectors whose bytes the Go writer does not reproduce (PROTOCOL.md §7): the padding
/// byte is written as 00, trailing bytes of a special reply are not written.
const WRITER_DIFFERS: [&str; 2] = [
    "request_utf16_padding_value_ignored",
    "reply_internal_error_trailing_bytes",
];

fn field<'a>(decoded: &'a Value, key: &str) -> &'a Value {
    decoded
        .get(key)
        .unwrap_or_else(|| panic!("decoded field {key} missing in {decoded}"))
}

fn text(decoded: &Value, key: &str) -> String {
    field(decoded, key)
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string"))
        .to_owned()
}

fn hex_field(decoded: &Value, key: &str) -> Bytes {
    Bytes::from(unhex(&text(decoded, key)))
}

fn id(decoded: &Value) -> RequestId {
    let bytes: [u8; 8] = unhex(&text(decoded, "id_hex"))
        .try_into()
        .expect("8-byte id");
    RequestId::new(bytes)
}

fn name(decoded: &Value) -> Result<Name, ProtocolError> {
    match decoded.get("name_hex") {
        Some(hex) => Name::new(unhex(hex.as_str().expect("name_hex"))),
        None => Name::new(text(decoded, "name")),
    }
}

fn number(decoded: &Value, key: &str) -> u64 {
    field(decoded, key)
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number"))
}

/// The message the vector's `decoded` fields describe, built without the parser.
fn expected_message(decoded: &Value) -> Result<Message, ProtocolError> {
    let kind = text(decoded, "kind");
    let ty = *MessageType::ALL
        .iter()
        .find(|t| format!("{t:?}") == kind)
        .unwrap_or_else(|| panic!("unknown kind {kind}"));
    assert_eq!(
        u64::from(ty as u8),
        number(decoded, "type"),
        "type byte of {kind}"
    );
    if let Some(encoding) = ty.encoding() {
        let listed = match encoding {
            Encoding::Binary => "binary",
            Encoding::Utf8 => "utf8",
            Encoding::Utf16 => "utf16",
        };
        assert_eq!(text(decoded, "encoding"), listed, "encoding of {kind}");
    }
    let payload = || Payload {
        encoding: ty.encoding().unwrap_or_default(),
        data: hex_field(decoded, "payload_hex"),
    };
    use MessageType as T;
    Ok(match ty {
        T::AcceptConf => Message::AcceptConf(AcceptConf {
            version: ProtocolVersion {
                major: number(decoded, "major").try_into().expect("u8"),
                minor: number(decoded, "minor").try_into().expect("u8"),
            },
            read_timeout: std::time::Duration::from_millis(number(decoded, "read_timeout_ms")),
            message_buffer_size: number(decoded, "message_buffer_size")
                .try_into()
                .expect("u32"),
            sub_protocol: match field(decoded, "sub_protocol") {
                Value::Null => Bytes::new(),
                sub => Bytes::from(sub.as_str().expect("sub_protocol").to_owned()),
            },
        }),
        T::Heartbeat => Message::Heartbeat,
        T::NotifySessionClosed => Message::NotifySessionClosed,
        T::NotifySessionCreated => Message::NotifySessionCreated {
            session: hex_field(decoded, "payload_hex"),
        },
        T::SignalBinary | T::SignalUtf8 | T::SignalUtf16 => {
            Message::signal(name(decoded)?, payload())
        }
        T::RequestBinary | T::RequestUtf8 | T::RequestUtf16 => {
            Message::request(id(decoded), name(decoded)?, payload())
        }
        T::ReplyBinary | T::ReplyUtf8 | T::ReplyUtf16 => Message::reply(id(decoded), payload()),
        T::ReplyError => Message::ReplyError {
            id: id(decoded),
            code: ErrorCode::new(text(decoded, "error_code"))?,
            message: Bytes::from(text(decoded, "error_message")),
        },
        T::ReplyShutdown => Message::ReplyShutdown { id: id(decoded) },
        T::ReplyInternalError => Message::ReplyInternalError { id: id(decoded) },
        T::ReplySessionNotFound => Message::ReplySessionNotFound { id: id(decoded) },
        T::ReplyMaxSessConnsReached => Message::ReplyMaxSessConnsReached { id: id(decoded) },
        T::ReplySessionsDisabled => Message::ReplySessionsDisabled { id: id(decoded) },
        T::RequestRestoreSession => Message::RequestRestoreSession {
            id: id(decoded),
            key: Bytes::from(text(decoded, "session_key")),
        },
        T::RequestCloseSession => Message::RequestCloseSession { id: id(decoded) },
    })
}

/// The vector's verdict for a strict parser: `strict.valid` where present.
fn strictly_valid(vector: &Value) -> bool {
    vector
        .pointer("/strict/valid")
        .or_else(|| vector.get("valid"))
        .and_then(Value::as_bool)
        .expect("valid flag")
}

#[test]
fn the_shared_file_holds_68_vectors() {
    let all = vectors();
    assert_eq!(all.len(), 68);
    let valid = all
        .iter()
        .filter(|v| v["valid"] == Value::Bool(true))
        .count();
    assert_eq!((valid, all.len() - valid), (42, 26));
    assert_eq!(all.iter().filter(|v| strictly_valid(v)).count(), 41);
}

#[test]
fn valid_vectors_parse_to_their_listed_fields() {
    for vector in vectors().iter().filter(|v| strictly_valid(v)) {
        let name = vector["name"].as_str().unwrap_or_default();
        let frame = Bytes::from(unhex(vector["hex"].as_str().unwrap_or_default()));
        let decoded = &vector["decoded"];
        let expected = expected_message(decoded).unwrap_or_else(|e| panic!("{name}: {e}"));
        let parsed = Message::parse(frame.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed, expected, "{name}");

        if let Some(want) = decoded.get("payload_text").and_then(Value::as_str) {
            let got = match &parsed {
                Message::NotifySessionCreated { session } => {
                    Payload::utf8(std::str::from_utf8(session).expect("session JSON is UTF-8"))
                        .to_text()
                }
                other => other.payload().expect("payload").to_text(),
            };
            assert_eq!(got.as_deref(), Ok(want), "{name}: payload text");
        }
    }
}

#[test]
fn valid_vectors_encode_back_to_their_bytes() {
    let mut reproduced = 0;
    for vector in vectors().iter().filter(|v| strictly_valid(v)) {
        let name = vector["name"].as_str().unwrap_or_default();
        let bytes = unhex(vector["hex"].as_str().unwrap_or_default());
        let message =
            expected_message(&vector["decoded"]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let encoded = message.encode().unwrap_or_else(|e| panic!("{name}: {e}"));
        if WRITER_DIFFERS.contains(&name) {
            assert_ne!(
                &encoded[..],
                &bytes[..],
                "{name} is listed as differing but does not"
            );
            assert_eq!(Message::parse(encoded).as_ref(), Ok(&message), "{name}");
        } else {
            assert_eq!(&encoded[..], &bytes[..], "{name}");
            reproduced += 1;
        }
    }
    assert_eq!(reproduced, 39);
}

#[test]
fn invalid_vectors_are_rejected() {
    let mut rejected = 0;
    for vector in vectors().iter().filter(|v| !strictly_valid(v)) {
        let name = vector["name"].as_str().unwrap_or_default();
        let frame = Bytes::from(unhex(vector["hex"].as_str().unwrap_or_default()));
        let result = Message::parse(frame);
        assert!(result.is_err(), "{name} parsed as {result:?}");
        rejected += 1;
    }
    assert_eq!(rejected, 27);
}

#[test]
fn the_strict_vector_fails_on_its_name_byte() {
    let err = Message::parse(Bytes::from_static(&[0x40, 0x01, 0x0a, 0x78])).unwrap_err();
    assert_eq!(
        err,
        ProtocolError::NonPrintable {
            message_type: Some(MessageType::SignalUtf8),
            field: "name",
            byte: 0x0a,
            index: 0,
        }
    );
}

#[test]
fn the_writer_refuses_the_utf16_signal_every_parser_rejects() {
    // `signal_utf16_name_only`: the Go writer emits it; we refuse to (§2.5).
    let signal = Message::SignalUtf16 {
        name: Name::from_static("ab"),
        data: Bytes::new(),
    };
    assert_eq!(
        signal.encode(),
        Err(ProtocolError::Utf16SignalTooShort { len: 0 })
    );
}

#[test]
fn session_json_vectors_decode_and_encode_byte_for_byte() {
    let mut seen = 0;
    for vector in vectors() {
        let Some(listed) = vector.pointer("/decoded/session") else {
            continue;
        };
        let name = vector["name"].as_str().unwrap_or_default();
        let json = hex_field(&vector["decoded"], "payload_hex");
        let session = Session::from_json(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            session.key,
            listed["k"].as_str().unwrap_or_default(),
            "{name}"
        );
        let rfc3339 = time::format_description::well_known::Rfc3339;
        for (at, key) in [(session.created, "c"), (session.last_lookup, "l")] {
            let want =
                time::OffsetDateTime::parse(listed[key].as_str().unwrap_or_default(), &rfc3339)
                    .expect("listed timestamp");
            assert_eq!(at, want, "{name}: {key}");
            assert_eq!(at.offset(), want.offset(), "{name}: offset of {key}");
        }
        let info = Value::Object(session.info.as_map().clone());
        assert_eq!(
            listed
                .get("i")
                .cloned()
                .unwrap_or(Value::Object(Default::default())),
            info,
            "{name}"
        );
        // What the Go server would have written for this session.
        assert_eq!(session.to_json().as_deref(), Ok(&json[..]), "{name}");
        seen += 1;
    }
    assert_eq!(seen, 2);
}
