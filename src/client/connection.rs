//! One connection to the server: dial and handshake, then its driver (`driver.rs`)
//! until the connection ends.
//!
//! ```text
//! dial ─► upgrade (User-Agent) ─► AcceptConf checked ─► run: driver task
//!                                                        ├─ session restored first (after a reconnection)
//!                                                        ├─ Link published: requests may use it
//!                                                        └─ until the connection ends, then the closing handshake
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{debug, warn};

use crate::client::config::{Config, SEND_QUEUE};
use crate::client::driver::Driver;
use crate::client::driver::Ended;
use crate::client::events::Event;
use crate::client::link::Link;
use crate::client::pending::{Kind, Pending};
use crate::client::queue::FrameQueue;
use crate::client::send::encode;
use crate::client::shared::Shared;
use crate::client::{ConnectError, RequestError};
use crate::protocol::{AcceptConf, Message, RequestId};
use crate::transport::{HeadStop, Incoming, Role, Socket, close_frame};

/// The client's stream: TCP, or TLS over it.
type Stream = MaybeTlsStream<TcpStream>;

/// A connection's WebSocket, upgraded and greeted.
pub(crate) type WsStream = Socket<Stream>;

/// How long a closing client waits for the server to answer its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The `User-Agent` of the upgrade request, unless the application sets one.
const USER_AGENT: &str = concat!("tokio-webwire/", env!("CARGO_PKG_VERSION"));

/// Checks the server's AcceptConf against what the client expects (§1.3): major version
/// 2 (the minor is informational) and the same sub-protocol name, byte for byte.
pub(crate) fn check_accept_conf(
    conf: &AcceptConf,
    expected_sub_protocol: Option<&Bytes>,
) -> Result<(), ConnectError> {
    if conf.version.major != 2 {
        return Err(ConnectError::UnsupportedVersion {
            version: conf.version,
        });
    }
    if conf.message_buffer_size < AcceptConf::MIN_MESSAGE_BUFFER_SIZE {
        return Err(ConnectError::MessageBufferTooSmall {
            size: conf.message_buffer_size,
            minimum: AcceptConf::MIN_MESSAGE_BUFFER_SIZE,
        });
    }
    let actual = conf.sub_protocol_name();
    if actual != expected_sub_protocol.map(|b| &b[..]) {
        return Err(ConnectError::SubProtocolMismatch {
            expected: expected_sub_protocol.cloned(),
            actual: actual.map(|_| conf.sub_protocol.clone()),
        });
    }
    Ok(())
}

/// Connects, upgrades and reads the AcceptConf, all within the dial timeout.
pub(crate) async fn dial(config: &Config) -> Result<(WsStream, AcceptConf), ConnectError> {
    let after = config.dial_timeout;
    tokio::time::timeout(after, dial_within(config))
        .await
        .unwrap_or(Err(ConnectError::Timeout { after }))
}

async fn dial_within(config: &Config) -> Result<(WsStream, AcceptConf), ConnectError> {
    let request = upgrade_request(config)?;
    let plain = request.uri().scheme_str() == Some("ws");
    let stream = open(config, &request).await?;
    // tungstenite makes the opening handshake; the WebSocket after it is ours, with what
    // was read past the response's head.
    let upgraded =
        tokio_tungstenite::client_async_with_config(request, HeadStop::new(stream), None)
            .await
            .map(|(ws, _response)| ws.into_inner().into_parts());
    let (stream, read) = upgraded.map_err(|error| match ConnectError::from_ws(error) {
        // A TLS server answers a plain HTTP request with a TLS alert: no HTTP version.
        ConnectError::NotHttp { reason, .. } => ConnectError::NotHttp {
            tls_likely: plain && reason == "invalid HTTP version",
            reason,
        },
        other => other,
    })?;
    let mut ws = Socket::new(
        stream,
        read,
        Role::Client,
        config.max_message_size,
        config.write_timeout,
    )
    .keep_buffers();
    let checked = match read_accept_conf(&mut ws).await {
        Ok(conf) => check_accept_conf(&conf, config.sub_protocol.as_ref()).map(|()| conf),
        Err(err) => Err(err),
    };
    match checked {
        Ok(conf) => Ok((ws, conf)),
        Err(err) => {
            let reason = match err {
                ConnectError::UnsupportedVersion { .. } => "unsupported protocol version",
                ConnectError::SubProtocolMismatch { .. } => "sub-protocol mismatch",
                ConnectError::MessageBufferTooSmall { .. } => "message buffer below 32 bytes",
                _ => "invalid handshake",
            };
            // Best effort: the connection is abandoned either way.
            ws.close(close_frame(CloseCode::Protocol, reason), CLOSE_GRACE)
                .await;
            Err(err)
        }
    }
}

/// Opens the stream `request` goes to: TCP (Nagle off: the driver batches frames itself
/// and flushes once per batch), then TLS for `wss://` or when TLS is configured.
async fn open(config: &Config, request: &Request) -> Result<Stream, ConnectError> {
    use tokio_tungstenite::tungstenite::error::{Error, UrlError};
    let uri = request.uri();
    let host = uri
        .host()
        .ok_or_else(|| ConnectError::from_ws(Error::Url(UrlError::NoHostName)))?;
    let port = uri
        .port_u16()
        .or(match uri.scheme_str() {
            Some("wss") => Some(443),
            Some("ws") => Some(80),
            _ => None,
        })
        .ok_or_else(|| ConnectError::from_ws(Error::Url(UrlError::UnsupportedUrlScheme)))?;
    // A literal IPv6 address keeps its brackets in the `host:port` form.
    let tcp = TcpStream::connect(format!("{host}:{port}"))
        .await
        .map_err(|error| ConnectError::from_ws(Error::Io(error)))?;
    tcp.set_nodelay(true)
        .map_err(|error| ConnectError::from_ws(Error::Io(error)))?;
    #[cfg(feature = "rustls")]
    {
        let tls = match (&config.tls, uri.scheme_str()) {
            (Some(tls), _) => Some(Arc::clone(tls)),
            (None, Some("wss")) => Some(crate::client::tls::default_config()?),
            (None, _) => None,
        };
        if let Some(tls) = tls {
            // rustls names an IPv6 address without its brackets.
            let name = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let name =
                rustls::pki_types::ServerName::try_from(name).map_err(|_| ConnectError::Tls {
                    reason: "invalid DNS name".to_owned(),
                })?;
            let tls = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|error| ConnectError::from_ws(Error::Io(error)))?;
            return Ok(MaybeTlsStream::Rustls(tls));
        }
        Ok(MaybeTlsStream::Plain(tcp))
    }
    #[cfg(not(feature = "rustls"))]
    {
        let _ = config;
        if uri.scheme_str() == Some("wss") {
            return Err(ConnectError::from_ws(Error::Url(
                UrlError::TlsFeatureNotEnabled,
            )));
        }
        Ok(MaybeTlsStream::Plain(tcp))
    }
}

/// The HTTP upgrade request: the URL plus the configured extra headers.
fn upgrade_request(config: &Config) -> Result<Request, ConnectError> {
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(ConnectError::from_ws)?;
    for (name, value) in &config.headers {
        let invalid = || ConnectError::InvalidHeader { name: name.clone() };
        let name = HeaderName::try_from(name.as_str()).map_err(|_| invalid())?;
        let value = HeaderValue::try_from(value.as_str()).map_err(|_| invalid())?;
        request.headers_mut().append(name, value);
    }
    if config.topics {
        request.headers_mut().append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(crate::protocol::topics::SUBPROTOCOL),
        );
    }
    if !request.headers().contains_key(header::USER_AGENT) {
        request
            .headers_mut()
            .insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    }
    Ok(request)
}

/// Reads the server's first message, which must be an AcceptConf.
async fn read_accept_conf(ws: &mut WsStream) -> Result<AcceptConf, ConnectError> {
    loop {
        let frame = match ws.next().await {
            Incoming::Frame(frame) => frame,
            Incoming::Alive => continue,
            Incoming::Closed(_) | Incoming::Gone => {
                return Err(ConnectError::ClosedBeforeHandshake);
            }
            Incoming::Violation(_, reason) => {
                return Err(ConnectError::InvalidHandshake {
                    reason: reason.to_owned(),
                });
            }
        };
        return match Message::parse(frame) {
            Ok(Message::AcceptConf(conf)) => Ok(conf),
            Ok(other) => Err(ConnectError::UnexpectedMessage {
                message_type: other.message_type(),
            }),
            Err(err) => Err(ConnectError::InvalidHandshake {
                reason: err.to_string(),
            }),
        };
    }
}

/// Runs one established connection until it ends. Publishes its [`Link`] first (unless
/// the client is closing); after a reconnection (`generation` > 1) it first restores the
/// client's session, if it has one, so that no request overtakes the restore.
///
/// When it returns, the driver has let go of the queue: every frame ever queued on this
/// connection belongs to a pending entry that the caller fails.
pub(crate) async fn run(shared: &Shared, ws: WsStream, conf: AcceptConf, generation: u64) -> Ended {
    debug!(
        generation,
        read_timeout = ?conf.read_timeout,
        limit = conf.message_buffer_size,
        "connected"
    );
    let link = Arc::new(Link {
        generation,
        queue: FrameQueue::new(SEND_QUEUE),
        conf,
        announced: AtomicBool::new(false),
    });
    // However this ends (also dropped part-way), nothing is queued on the connection after.
    let _refuse = RefuseOnDrop(&link);
    let mut driver = Driver::new(shared, Arc::clone(&link), ws);
    let ended = {
        let driving = std::future::poll_fn(|cx| driver.poll_drive(cx));
        tokio::pin!(driving);
        async {
            // The driver runs meanwhile: it delivers the restore's reply.
            let mut op = None;
            if generation > 1 && shared.session_key().is_some() {
                tokio::select! {
                    biased;
                    ended = &mut driving => return ended,
                    guard = resume_session(shared, &link) => op = Some(guard),
                }
            }
            // Subscriptions after the session (the server's hook may ask for it), before
            // the connection is published: what was missed comes before anything new.
            if generation > 1 && shared.config.topics {
                tokio::select! {
                    biased;
                    ended = &mut driving => return ended,
                    () = super::topics::resubscribe(shared, &link) => {}
                }
            }
            let published = shared.publish(Arc::clone(&link));
            drop(op);
            if published {
                shared.events.push(Event::Connected);
                link.announced.store(true, Ordering::Release);
            }
            (&mut driving).await
        }
        .await
    };
    // No new request may pick this connection any more.
    shared.unpublish(generation);
    driver.close(ended, CLOSE_GRACE).await;
    debug!(generation, ?ended, "connection ended");
    ended
}

/// Closes a link's queue when dropped: a frame pushed after that is handed back, for the
/// next connection.
struct RefuseOnDrop<'a>(&'a Link);

impl Drop for RefuseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.queue.close();
    }
}

/// The session after a reconnection (PROTOCOL.md §4.4): restored by its key, or forgotten
/// (with `session_closed`) when the server refuses it, the reply is not a session, no reply
/// comes within the request timeout, or restoring is turned off. Kept when the connection
/// ends first or the server is shutting down: the next connection tries again. Returns the
/// session lock, held until the connection is published, so that `close_session` finds the
/// client connected.
async fn resume_session<'a>(shared: &'a Shared, link: &Link) -> tokio::sync::MutexGuard<'a, ()> {
    let op = shared.session_op().await;
    let Some(key) = shared.session_key() else {
        // Closed offline meanwhile.
        return op;
    };
    if !shared.config.restore_session {
        debug!("restoring the session is off; forgetting it");
        shared.forget_session();
        return op;
    }
    match restore_on(shared, link, key).await {
        Ok(()) => debug!("session restored"),
        Err(err @ (RequestError::Disconnected | RequestError::Shutdown)) => {
            debug!(%err, "session not restored; keeping it for the next connection");
        }
        Err(err) => {
            warn!(%err, "the session could not be restored; forgetting it");
            shared.forget_session();
        }
    }
    op
}

/// Sends RequestRestoreSession for `key` on `link` and waits for the reply, which the
/// driver turns into the client's session.
async fn restore_on(shared: &Shared, link: &Link, key: String) -> Result<(), RequestError> {
    let id = shared.next_id();
    let kind = Kind::RestoreSession(shared.session_request_epoch());
    let message = Message::RequestRestoreSession {
        id: RequestId::from(id),
        key: Bytes::from(key),
    };
    let len = message
        .encoded_len()
        .map_err(RequestError::InvalidMessage)?;
    link.check_size(len)?;
    let frame = encode(&message)?;
    // A session request: a late reply still reaches the driver, which applies it unless a
    // newer session or session request came since (after a timeout forgot the session, a
    // late success brings it back, with its event).
    let reply = shared
        .send_request_on(link, frame, (id, kind), Pending::never())
        .await
        .map_err(|_| RequestError::Disconnected)?;
    let after = shared.config.request_timeout;
    let outcome = tokio::time::timeout(after, reply)
        .await
        .map_err(|_| RequestError::Timeout { after })?;
    outcome.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolVersion;

    #[test]
    fn accept_conf_checks() {
        let mut conf = AcceptConf::new(Duration::from_secs(60), 8192);
        assert_eq!(check_accept_conf(&conf, None), Ok(()));
        conf.version = ProtocolVersion { major: 2, minor: 7 };
        assert_eq!(check_accept_conf(&conf, None), Ok(()));
        conf.version = ProtocolVersion { major: 3, minor: 0 };
        assert!(matches!(
            check_accept_conf(&conf, None),
            Err(ConnectError::UnsupportedVersion { .. })
        ));
        conf.version = ProtocolVersion::V2_0;
        let chat = Bytes::from_static(b"chat");
        assert!(matches!(
            check_accept_conf(&conf, Some(&chat)),
            Err(ConnectError::SubProtocolMismatch { actual: None, .. })
        ));
        conf.sub_protocol = chat.clone();
        assert_eq!(check_accept_conf(&conf, Some(&chat)), Ok(()));
        assert!(matches!(
            check_accept_conf(&conf, None),
            Err(ConnectError::SubProtocolMismatch { expected: None, .. })
        ));
    }

    #[test]
    fn a_buffer_below_32_bytes_is_refused() {
        let mut conf = AcceptConf::new(Duration::from_secs(60), 31);
        assert_eq!(
            check_accept_conf(&conf, None),
            Err(ConnectError::MessageBufferTooSmall {
                size: 31,
                minimum: 32
            })
        );
        conf.message_buffer_size = 32;
        assert_eq!(check_accept_conf(&conf, None), Ok(()));
    }

    #[test]
    fn the_upgrade_request_names_the_client_unless_told_otherwise() {
        let mut config = crate::ClientBuilder::new().into_config();
        config.url = "ws://127.0.0.1:1/".to_owned();
        let request = upgrade_request(&config).expect("valid");
        assert_eq!(
            request
                .headers()
                .get(header::USER_AGENT)
                .map(|v| v.as_bytes()),
            Some(USER_AGENT.as_bytes())
        );
        config
            .headers
            .push(("user-agent".to_owned(), "app/2".to_owned()));
        let request = upgrade_request(&config).expect("valid");
        let agents: Vec<_> = request
            .headers()
            .get_all(header::USER_AGENT)
            .iter()
            .collect();
        assert_eq!(agents, ["app/2"]);
    }
}
