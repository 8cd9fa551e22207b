//! The handshake message the server sends first on every connection (PROTOCOL.md §1.3).

use std::time::Duration;

use bytes::Bytes;

/// A WebWire protocol version, as carried by [`AcceptConf`].
///
/// ```
/// use tokio_webwire::protocol::ProtocolVersion;
/// assert_eq!(ProtocolVersion::V2_0.to_string(), "2.0");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolVersion {
    /// Incompatible changes bump the major version; peers require it to match.
    pub major: u8,
    /// Informational: peers ignore it.
    pub minor: u8,
}

impl ProtocolVersion {
    /// Version 2.0, the version this crate, the Go server and client and the JavaScript
    /// client speak.
    pub const V2_0: ProtocolVersion = ProtocolVersion { major: 2, minor: 0 };
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The server's connection parameters, announced right after the WebSocket upgrade.
///
/// ```
/// use std::time::Duration;
/// use tokio_webwire::protocol::{AcceptConf, Message};
///
/// let conf = AcceptConf::new(Duration::from_secs(60), 8192);
/// let frame = Message::AcceptConf(conf).encode().unwrap();
/// assert_eq!(&frame[..], b"\x17\x02\x00\x60\xea\x00\x00\x00\x20\x00\x00");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AcceptConf {
    /// The protocol version the server speaks.
    pub version: ProtocolVersion,
    /// How long the server waits for a message before it drops the connection; clients send
    /// heartbeats at 75 % of it. Carried in whole milliseconds (truncated) as a `u32`.
    pub read_timeout: Duration,
    /// The largest message, in bytes, the server accepts.
    pub message_buffer_size: u32,
    /// An application-level sub-protocol label (not the HTTP header); empty means none.
    pub sub_protocol: Bytes,
}

impl AcceptConf {
    /// The smallest message buffer a server may announce (PROTOCOL.md §1.4): 32 bytes.
    pub const MIN_MESSAGE_BUFFER_SIZE: u32 = 32;

    /// Protocol 2.0 parameters without a sub-protocol name.
    #[must_use]
    pub fn new(read_timeout: Duration, message_buffer_size: u32) -> Self {
        AcceptConf {
            version: ProtocolVersion::V2_0,
            read_timeout,
            message_buffer_size,
            sub_protocol: Bytes::new(),
        }
    }

    /// The sub-protocol name, if the server announced one.
    #[must_use]
    pub fn sub_protocol_name(&self) -> Option<&[u8]> {
        (!self.sub_protocol.is_empty()).then_some(&self.sub_protocol[..])
    }
}
