//! The golden messages of the topics extension (`docs/topics.md`,
//! `tests/data/topics-vectors.json`, which the JavaScript client's tests read too): every
//! valid one parses to its listed fields and our encoders write exactly its bytes; every
//! invalid payload is refused.

mod common;

use bytes::Bytes;
use common::unhex;
use serde_json::Value;
use tokio_webwire::protocol::topics::{self, Position, Publication, Status, Subscribe, Subscribed};
use tokio_webwire::protocol::{ErrorCode, Message, Name, RequestId};
use tokio_webwire::{Encoding, Payload};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/topics-vectors.json"
);

fn vectors() -> Value {
    let text = std::fs::read_to_string(VECTORS).expect("topics-vectors.json");
    serde_json::from_str(&text).expect("JSON")
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {value}"))
}

fn id(decoded: &Value) -> RequestId {
    RequestId::new(
        unhex(str_of(decoded, "id_hex"))
            .try_into()
            .expect("8 bytes"),
    )
}

fn epoch(hex: &str) -> u64 {
    u64::from_le_bytes(unhex(hex).try_into().expect("8 bytes"))
}

fn position(decoded: &Value) -> Option<Position> {
    decoded["epoch_hex"].as_str().map(|hex| Position {
        epoch: epoch(hex),
        offset: decoded["offset"].as_u64().expect("offset"),
    })
}

/// The id and data of `message`, the vector `vector`, which must be a binary request named
/// `expected`.
fn topics_request(message: Message, expected: Name, vector: &str) -> (RequestId, Bytes) {
    let Message::RequestBinary { id, name, data } = message else {
        panic!("{vector}: not a binary request");
    };
    assert_eq!(name, expected, "{vector}");
    (id, data)
}

fn request(id: RequestId, name: Name, payload: Bytes) -> Bytes {
    Message::request(id, name, Payload::binary(payload))
        .encode()
        .unwrap()
}

#[test]
fn every_valid_message_reads_and_writes_as_listed() {
    let vectors = vectors();
    assert_eq!(vectors["subprotocol"], topics::SUBPROTOCOL);
    let valid = vectors["valid"].as_array().expect("valid");
    assert!(valid.len() >= 15, "{} vectors", valid.len());
    for vector in valid {
        let name = str_of(vector, "name");
        let bytes = Bytes::from(unhex(str_of(vector, "hex")));
        let decoded = &vector["decoded"];
        let message = Message::parse(bytes.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let written = match str_of(decoded, "kind") {
            "subscribe" => {
                let (got, data) = topics_request(message, topics::SUBSCRIBE, name);
                assert_eq!(got, id(decoded), "{name}");
                let resume = decoded["resume"].as_object().map(|resume| Position {
                    epoch: epoch(resume["epoch_hex"].as_str().expect("epoch")),
                    offset: resume["offset"].as_u64().expect("offset"),
                });
                let subscribe = Subscribe {
                    topic: str_of(decoded, "topic").to_owned(),
                    resume,
                };
                assert_eq!(Subscribe::parse(&data).as_ref(), Ok(&subscribe), "{name}");
                request(got, topics::SUBSCRIBE, subscribe.encode())
            }
            "unsubscribe" => {
                let (got, data) = topics_request(message, topics::UNSUBSCRIBE, name);
                let topic = str_of(decoded, "topic");
                assert_eq!(topics::parse_unsubscribe(&data), Ok(topic), "{name}");
                request(
                    got,
                    topics::UNSUBSCRIBE,
                    Bytes::copy_from_slice(topic.as_bytes()),
                )
            }
            "answer" => {
                let Message::ReplyBinary { id: got, data } = message else {
                    panic!("{name}: not a binary reply");
                };
                assert_eq!(got, id(decoded));
                let status = match str_of(decoded, "status") {
                    "subscribed" => Status::Subscribed,
                    "recovered" => Status::Recovered,
                    "not_recovered" => Status::NotRecovered,
                    "no_history" => Status::NoHistory,
                    other => panic!("{name}: status {other}"),
                };
                let answer = Subscribed {
                    status,
                    position: position(decoded).expect("position"),
                };
                assert_eq!(Subscribed::parse(&data), Ok(answer), "{name}");
                Message::reply(got, Payload::binary(answer.encode()))
                    .encode()
                    .unwrap()
            }
            "unsubscribed" => {
                let Message::ReplyBinary { id: got, data } = message else {
                    panic!("{name}: not a binary reply");
                };
                assert!(data.is_empty());
                Message::reply(got, Payload::binary(Bytes::new()))
                    .encode()
                    .unwrap()
            }
            "publication" => {
                let Message::SignalBinary { name: n, data } = message else {
                    panic!("{name}: not a binary signal");
                };
                assert_eq!(n, topics::PUBLICATION, "{name}");
                let publication = Publication::parse(&data).unwrap();
                let topic = str_of(decoded, "topic");
                assert_eq!(publication.topic, topic, "{name}");
                assert_eq!(publication.position, position(decoded), "{name}");
                let signal = Bytes::from(unhex(str_of(decoded, "signal_hex")));
                assert_eq!(publication.signal, signal, "{name}");
                let inner = &decoded["signal"];
                let parsed = Message::parse(publication.signal.clone()).unwrap();
                let (inner_name, payload) = match parsed {
                    Message::SignalBinary { name, data } => (name, Payload::binary(data)),
                    Message::SignalUtf8 { name, data } => (
                        name,
                        Payload {
                            encoding: Encoding::Utf8,
                            data,
                        },
                    ),
                    Message::SignalUtf16 { name, data } => (
                        name,
                        Payload {
                            encoding: Encoding::Utf16,
                            data,
                        },
                    ),
                    other => panic!("{name}: inner {other:?}"),
                };
                assert_eq!(inner_name.as_str(), str_of(inner, "name"), "{name}");
                let encoding = match payload.encoding {
                    Encoding::Binary => "binary",
                    Encoding::Utf8 => "utf8",
                    Encoding::Utf16 => "utf16",
                };
                assert_eq!(encoding, str_of(inner, "encoding"), "{name}");
                assert_eq!(payload.data, unhex(str_of(inner, "payload_hex")), "{name}");
                // What the server writes: the plain signal, encoded once, wrapped.
                let plain = Message::signal(inner_name, payload).encode().unwrap();
                Publication::frame(topic, position(decoded), &plain)
            }
            "error" => {
                let Message::ReplyError {
                    id: got,
                    code,
                    message,
                } = message
                else {
                    panic!("{name}: not an error reply");
                };
                let expected = str_of(decoded, "code");
                assert_eq!(code.as_str(), expected);
                assert!(
                    [
                        topics::codes::BAD_REQUEST,
                        topics::codes::REFUSED,
                        topics::codes::TOO_MANY_TOPICS,
                        topics::codes::UNAVAILABLE
                    ]
                    .contains(&expected),
                    "{name}: a code the spec names"
                );
                assert_eq!(message, str_of(decoded, "message").as_bytes(), "{name}");
                Message::ReplyError {
                    id: got,
                    code: ErrorCode::new(Bytes::copy_from_slice(expected.as_bytes())).unwrap(),
                    message: Bytes::copy_from_slice(str_of(decoded, "message").as_bytes()),
                }
                .encode()
                .unwrap()
            }
            other => panic!("{name}: kind {other}"),
        };
        assert_eq!(written, bytes, "{name}: written bytes");
    }
}

#[test]
fn every_invalid_payload_is_refused() {
    let vectors = vectors();
    let invalid = vectors["invalid"].as_array().expect("invalid");
    assert!(invalid.len() >= 10);
    for vector in invalid {
        let name = str_of(vector, "name");
        let payload = Bytes::from(unhex(str_of(vector, "payload_hex")));
        let refused = match str_of(vector, "kind") {
            "subscribe" => Subscribe::parse(&payload).is_err(),
            "unsubscribe" => topics::parse_unsubscribe(&payload).is_err(),
            "answer" => Subscribed::parse(&payload).is_err(),
            "publication" => Publication::parse(&payload).is_err(),
            other => panic!("{name}: kind {other}"),
        };
        assert!(refused, "{name} was accepted: {}", str_of(vector, "why"));
    }
}
