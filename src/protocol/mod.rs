//! The WebWire v2.0 codec: pure, with no I/O and no async runtime.
//!
//! [`Message::parse`] turns one WebSocket binary frame into a [`Message`] whose names and
//! payloads are slices of the frame; [`Message::encode`] turns a `Message` into one frame.
//! This module is the only place in the crate that knows byte offsets.
//!
//! | file | holds |
//! |---|---|
//! | `message_type.rs` | [`MessageType`], the type byte |
//! | `fields.rs` | [`RequestId`], [`Name`] (and [`IntoName`]), [`ErrorCode`]: validated header fields |
//! | `accept_conf.rs` | [`AcceptConf`], [`ProtocolVersion`]: the handshake |
//! | `message.rs` | [`Message`]: one variant per message type |
//! | `parse.rs` | frame → message |
//! | `encode.rs` | message → frame |
//! | `error.rs` | [`ProtocolError`]: the rule a frame or message broke |
//! | `topics.rs` | [`topics`]: the payloads of the topics extension (`docs/topics.md`) |
//!
//! ```
//! use bytes::Bytes;
//! use tokio_webwire::{Payload, protocol::{Message, Name, RequestId}};
//!
//! // The request from the upstream protocol diagram.
//! let frame = Bytes::from_static(b"\x80\xa1\xe7\x37\x90\x12\x86\xf7\x9a\x03abcr u bored?");
//! let Message::RequestUtf8 { id, name, data } = Message::parse(frame).unwrap() else {
//!     unreachable!()
//! };
//! assert_eq!((name.as_str(), &data[..]), ("abc", &b"r u bored?"[..]));
//!
//! let reply = Message::reply(id, Payload::utf8("urDefinitely bored")).encode().unwrap();
//! assert_eq!(&reply[1..9], id.as_bytes());
//! ```

mod accept_conf;
mod encode;
mod error;
mod fields;
mod message;
mod message_type;
mod parse;
pub mod topics;

pub use accept_conf::{AcceptConf, ProtocolVersion};
pub use error::ProtocolError;
pub(crate) use fields::RedactedKey;
pub use fields::{ErrorCode, IntoName, MAX_NAME_LEN, Name, RequestId};
pub use message::Message;
pub use message_type::MessageType;
