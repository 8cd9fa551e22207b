//! What can go wrong on the client: one error enum per concern.
//!
//! [`ConnectError`] says why a connection could not be established (the first one, from
//! [`Client::connect`](crate::Client::connect), or a reconnection, logged);
//! [`RequestError`] says how a request or signal ended without success.

use std::time::Duration;

use bytes::Bytes;
use tokio_tungstenite::tungstenite;

use crate::protocol::{ErrorCode, MessageType, ProtocolError, ProtocolVersion};

/// How a [`Client::request`](crate::Client::request) (or a signal) ended without a reply
/// payload.
///
/// One variant for each way a request can end: the five special replies of the protocol,
/// the server's application error, and what the client itself decides (timeout, lost or
/// closed connection, refused input). Cheap to clone and comparable, so callers can `match`
/// and tests can `assert_eq!`.
///
/// ```
/// use tokio_webwire::RequestError;
///
/// fn should_retry(err: &RequestError) -> bool {
///     matches!(err, RequestError::Timeout { .. } | RequestError::Disconnected | RequestError::Shutdown)
/// }
/// assert!(should_retry(&RequestError::Disconnected));
/// assert!(!should_retry(&RequestError::ClientClosed));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The server's handler failed the request with an application error (`00` reply).
    #[error("the server answered with error {code}: {message}")]
    Reply {
        /// The error code: 1..=255 bytes of printable ASCII.
        code: ErrorCode,
        /// The error message (invalid UTF-8 replaced with U+FFFD), possibly empty.
        message: String,
    },

    /// The server failed internally while handling the request (`02` reply); the details
    /// stay in the server's log.
    #[error("the server failed internally")]
    Internal,

    /// The server is shutting down and did not handle the request (`01` reply).
    #[error("the server is shutting down")]
    Shutdown,

    /// The session to restore does not exist on the server (`03` reply).
    #[error("session not found")]
    SessionNotFound,

    /// The session to restore already has as many connections as the server allows
    /// (`04` reply).
    #[error("the session has reached its connection limit")]
    MaxSessionConnectionsReached,

    /// Sessions are disabled on the server (`05` reply).
    #[error("sessions are disabled on the server")]
    SessionsDisabled,

    /// No reply arrived within the request's timeout. The request may still have reached
    /// the server and been handled; a reply that comes later is ignored.
    #[error("no reply within {after:?}")]
    Timeout {
        /// The timeout that elapsed.
        after: Duration,
    },

    /// The connection was lost after the request was handed to it (its reply can never
    /// come: replies travel on the connection that carried the request), or the client is
    /// disconnected and its reconnect policy does not wait. The request may or may not have
    /// reached the server.
    #[error("disconnected from the server")]
    Disconnected,

    /// The client was closed with [`Client::close`](crate::Client::close) (or every
    /// handle to it was dropped).
    #[error("the client is closed")]
    ClientClosed,

    /// The encoded message is larger than the server accepts (its AcceptConf message
    /// buffer size). Refused locally: nothing was sent.
    #[error("message of {len} bytes exceeds the server's limit of {limit} bytes")]
    PayloadTooLarge {
        /// The length of the encoded message.
        len: usize,
        /// The server's limit.
        limit: usize,
    },

    /// The name is not 0..=255 bytes of printable ASCII. Nothing was sent.
    #[error("invalid name: {0}")]
    InvalidName(ProtocolError),

    /// The message would be rejected by every peer (PROTOCOL.md §2.5): no name and no
    /// payload, a UTF-16 payload of odd length, a named UTF-16 signal without payload, an
    /// empty session key. Nothing was sent.
    #[error("invalid message: {0}")]
    InvalidMessage(ProtocolError),

    /// [`Client::restore_session`](crate::Client::restore_session) was called while a
    /// session is active. A client holds at most one session: close it first with
    /// [`Client::close_session`](crate::Client::close_session). Refused locally: nothing
    /// was sent.
    #[error("a session is already active")]
    SessionActive,

    /// [`Client::request_json`](crate::Client::request_json): the request could not be
    /// serialised (nothing was sent) or the reply is not the JSON expected.
    #[error("JSON: {reason}")]
    Json {
        /// serde_json's description.
        reason: String,
    },

    /// The server's reply could not be read: the session JSON of a restore reply is
    /// invalid (PROTOCOL.md §4.1). The local session was left as it was.
    #[error("invalid reply from the server: {0}")]
    InvalidReply(ProtocolError),
}

/// Why a connection to a WebWire server could not be established.
///
/// Returned by [`ClientBuilder::connect`](crate::ClientBuilder::connect); failed
/// reconnections are logged with `tracing` and retried per the reconnect policy.
///
/// ```
/// # async fn demo() {
/// use tokio_webwire::{Client, ConnectError};
///
/// match Client::connect("ws://127.0.0.1:1/").await {
///     Err(ConnectError::Io { .. }) => { /* nobody listens there */ }
///     other => println!("{other:?}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL could not be used for a WebSocket connection.
    #[error("invalid URL: {reason}")]
    InvalidUrl {
        /// What was wrong with it.
        reason: String,
    },

    /// An extra HTTP header has an invalid name or value.
    #[error("invalid HTTP header {name:?}")]
    InvalidHeader {
        /// The header's name.
        name: String,
    },

    /// The TLS handshake of a `wss://` connection failed: the server's certificate is not
    /// trusted (an unknown issuer, another name, expired), or the peer speaks no TLS.
    #[error("TLS handshake failed: {reason}")]
    Tls {
        /// What rustls reported.
        reason: String,
    },

    /// The TCP connection failed.
    #[error("I/O error: {message}")]
    Io {
        /// The kind of I/O error.
        kind: std::io::ErrorKind,
        /// The operating system's description.
        message: String,
    },

    /// The server answered the upgrade with an HTTP status instead of switching protocols
    /// (the reference server answers `503` while it shuts down; a web application answers
    /// `200` or `404` where it serves a page rather than the WebWire endpoint).
    #[error("{}", http_refusal(*.status))]
    Http {
        /// The HTTP status code.
        status: u16,
    },

    /// The server's answer to the upgrade request is not HTTP: it speaks another
    /// protocol on that port, most often TLS (a `ws://` URL for a `wss://` server).
    #[error("the server's answer is not HTTP ({reason}){}", if *.tls_likely {
        ": it looks like a TLS server, try wss:// instead of ws://"
    } else {
        ""
    })]
    NotHttp {
        /// What the HTTP parser reported.
        reason: String,
        /// The URL was `ws://`, and the answer is what a TLS server sends to a plain
        /// client (no HTTP version where one must be).
        tls_likely: bool,
    },

    /// The WebSocket handshake failed for another reason.
    #[error("WebSocket handshake failed: {reason}")]
    WebSocket {
        /// What tungstenite reported.
        reason: String,
    },

    /// The connection, the upgrade and the AcceptConf message together took longer than
    /// the dial timeout.
    #[error("no connection within the dial timeout of {after:?}")]
    Timeout {
        /// The dial timeout.
        after: Duration,
    },

    /// The server closed the connection before it sent its AcceptConf message.
    #[error("the server closed the connection before the handshake")]
    ClosedBeforeHandshake,

    /// The server's first message is well-formed but not an AcceptConf.
    #[error("expected AcceptConf as the server's first message, got {message_type}")]
    UnexpectedMessage {
        /// What the server sent instead.
        message_type: MessageType,
    },

    /// The server's first message is not a valid WebWire message (or not binary).
    #[error("invalid handshake message: {reason}")]
    InvalidHandshake {
        /// What was wrong with it.
        reason: String,
    },

    /// The server speaks another major version of the protocol (this client speaks 2).
    #[error("the server speaks protocol version {version}, this client speaks 2.x")]
    UnsupportedVersion {
        /// The version the server announced.
        version: ProtocolVersion,
    },

    /// The server's sub-protocol name differs from the one the client expects.
    #[error(
        "sub-protocol mismatch: expected {}, the server speaks {}",
        show(.expected),
        show(.actual)
    )]
    SubProtocolMismatch {
        /// What the client was configured to expect (`None`: no sub-protocol).
        expected: Option<Bytes>,
        /// What the server announced (`None`: no sub-protocol).
        actual: Option<Bytes>,
    },

    /// The server announces a message buffer below the protocol's minimum of 32 bytes
    /// (PROTOCOL.md §1.4): no request could ever fit, so the client refuses the server
    /// instead of failing every message with [`RequestError::PayloadTooLarge`].
    #[error(
        "the server announces a message buffer of {size} bytes, below the protocol's minimum of {minimum}"
    )]
    MessageBufferTooSmall {
        /// The buffer size the server announced.
        size: u32,
        /// The protocol's minimum (32).
        minimum: u32,
    },
}

/// The message of [`ConnectError::Http`]: the status, and what it most likely means.
fn http_refusal(status: u16) -> String {
    let hint = match status {
        200 => {
            ": a page is served there, not WebWire (is its endpoint at another path, such as /ws?)"
        }
        404 => ": nothing is served at that path (is the WebWire endpoint at another path?)",
        503 => ": the server is shutting down or full",
        _ => "",
    };
    format!("the server refused the WebSocket upgrade with HTTP status {status}{hint}")
}

fn show(name: &Option<Bytes>) -> String {
    match name {
        Some(bytes) => format!("{:?}", String::from_utf8_lossy(bytes)),
        None => "none".to_owned(),
    }
}

impl ConnectError {
    /// Translates a tungstenite error from the TCP connection or the upgrade.
    pub(crate) fn from_ws(error: tungstenite::Error) -> Self {
        use tungstenite::Error;
        match error {
            // rustls reports through `io::Error`s that wrap its own error.
            #[cfg(feature = "rustls")]
            Error::Io(e) if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) => {
                ConnectError::Tls {
                    reason: e.to_string(),
                }
            }
            Error::Tls(e) => ConnectError::Tls {
                reason: e.to_string(),
            },
            Error::Url(tungstenite::error::UrlError::TlsFeatureNotEnabled) => {
                ConnectError::InvalidUrl {
                    reason: "wss:// needs the `rustls` feature of tokio-webwire".to_owned(),
                }
            }
            // Its text holds the whole URL, credentials and query included: errors are
            // logged (failed reconnections), so it is named without it.
            Error::Url(tungstenite::error::UrlError::UnableToConnect(_)) => {
                ConnectError::WebSocket {
                    reason: "unable to connect to the URL's host".to_owned(),
                }
            }
            Error::Io(e) => ConnectError::Io {
                kind: e.kind(),
                message: e.to_string(),
            },
            Error::Url(e) => ConnectError::InvalidUrl {
                reason: e.to_string(),
            },
            Error::HttpFormat(e) => ConnectError::InvalidUrl {
                reason: e.to_string(),
            },
            Error::Http(response) => ConnectError::Http {
                status: response.status().as_u16(),
            },
            Error::Protocol(tungstenite::error::ProtocolError::HttparseError(e)) => {
                ConnectError::NotHttp {
                    reason: e.to_string(),
                    tls_likely: false,
                }
            }
            Error::ConnectionClosed | Error::AlreadyClosed => ConnectError::ClosedBeforeHandshake,
            other => ConnectError::WebSocket {
                reason: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_error_repeats_the_url() {
        use tungstenite::error::UrlError;
        let url = "wss://alice:s3cret@host/ws?token=s3cret";
        let err = ConnectError::from_ws(tungstenite::Error::Url(UrlError::UnableToConnect(
            url.to_owned(),
        )));
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(!format!("{err:?}").contains("s3cret"), "{err:?}");
        assert!(err.to_string().contains("unable to connect"));
    }

    #[test]
    fn messages_name_what_happened() {
        let err = RequestError::Reply {
            code: ErrorCode::from_static("E"),
            message: "bad".into(),
        };
        assert_eq!(err.to_string(), "the server answered with error E: bad");
        let err = ConnectError::SubProtocolMismatch {
            expected: Some(Bytes::from_static(b"chat")),
            actual: None,
        };
        assert_eq!(
            err.to_string(),
            "sub-protocol mismatch: expected \"chat\", the server speaks none"
        );
        assert_eq!(
            RequestError::PayloadTooLarge { len: 9, limit: 8 }.to_string(),
            "message of 9 bytes exceeds the server's limit of 8 bytes"
        );
    }

    #[test]
    fn refused_upgrades_say_what_the_status_most_likely_means() {
        assert_eq!(
            ConnectError::Http { status: 200 }.to_string(),
            "the server refused the WebSocket upgrade with HTTP status 200: a page is served \
             there, not WebWire (is its endpoint at another path, such as /ws?)"
        );
        assert_eq!(
            ConnectError::Http { status: 403 }.to_string(),
            "the server refused the WebSocket upgrade with HTTP status 403"
        );
    }

    #[test]
    fn an_answer_that_is_not_http_is_named() {
        // What a ws:// dial of a TLS server reads (tests/tls.rs makes one).
        let plain = ConnectError::NotHttp {
            reason: "invalid HTTP version".to_owned(),
            tls_likely: true,
        };
        assert_eq!(
            plain.to_string(),
            "the server's answer is not HTTP (invalid HTTP version): it looks like a TLS \
             server, try wss:// instead of ws://"
        );
        let other = ConnectError::NotHttp {
            reason: "invalid token".to_owned(),
            tls_likely: false,
        };
        assert_eq!(
            other.to_string(),
            "the server's answer is not HTTP (invalid token)"
        );
    }
}
