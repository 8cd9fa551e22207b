//! One connection to the server: dial and handshake, then one reader loop and one writer
//! task until the connection ends.
//!
//! ```text
//! socket ─► reader (read_loop) ─► parse ─┬─► reply:  pending map ─► the waiting request
//!                                        │   (session replies also update the session)
//!                                        ├─► signal: event queue ─► ClientHandler
//!                                        └─► session notification: session, event queue
//! socket ◄── writer task ◄── bounded mpsc of encoded frames ◄── request() / signal()
//!            (batches, flushes when the queue is momentarily empty, sends heartbeats)
//! ```

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::Session;
use crate::client::builder::Config;
use crate::client::handler::Event;
use crate::client::pending::Kind;
use crate::client::{ConnectError, RequestError, Shared, encode};
use crate::protocol::{AcceptConf, Message, MessageType, RequestId};
use crate::transport::{Incoming, close_frame, websocket_config};

pub(crate) type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The one-byte heartbeat frame (§1.5), shared rather than encoded each time.
const HEARTBEAT: &[u8] = &[MessageType::Heartbeat as u8];

/// At most this many queued frames are fed to the socket before a flush, so one busy
/// queue cannot postpone the flush indefinitely.
const MAX_BATCH: usize = 256;

/// How long a closing client waits for the server to answer its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What requests and signals see of a live connection: where to put frames, and the
/// server's parameters. Replaced in the client's state when the connection changes.
#[derive(Debug)]
pub(crate) struct Link {
    /// Counts the client's connections from 1; pending requests remember theirs.
    pub(crate) generation: u64,
    /// Encoded frames for the writer task.
    pub(crate) frames: mpsc::Sender<Bytes>,
    /// The server's AcceptConf.
    pub(crate) conf: AcceptConf,
}

impl Link {
    /// The largest message the server accepts.
    pub(crate) fn limit(&self) -> usize {
        usize::try_from(self.conf.message_buffer_size).unwrap_or(usize::MAX)
    }

    /// Refuses a message of `len` bytes that the server would not accept.
    pub(crate) fn check_size(&self, len: usize) -> Result<(), RequestError> {
        let limit = self.limit();
        if len > limit {
            return Err(RequestError::PayloadTooLarge { len, limit });
        }
        Ok(())
    }
}

/// The client's heartbeat period for a server read timeout: 75 % of it (§1.5). A zero
/// timeout means the server has no read deadline, so no heartbeats.
pub(crate) fn heartbeat_interval(read_timeout: Duration) -> Option<Duration> {
    (!read_timeout.is_zero()).then(|| read_timeout - read_timeout / 4)
}

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
    // Nagle off: the writer batches frames itself and flushes once per batch.
    let (mut ws, _response) = tokio_tungstenite::connect_async_with_config(
        request,
        Some(websocket_config(config.max_message_size)),
        true,
    )
    .await
    .map_err(ConnectError::from_ws)?;
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
                _ => "invalid handshake",
            };
            // Best effort: the connection is abandoned either way.
            let _ = ws
                .close(Some(close_frame(CloseCode::Protocol, reason)))
                .await;
            Err(err)
        }
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
        let header = HeaderName::try_from(name.as_str()).map_err(|_| invalid())?;
        let value = HeaderValue::try_from(value.as_str()).map_err(|_| invalid())?;
        request.headers_mut().append(header, value);
    }
    Ok(request)
}

/// Reads the server's first message, which must be an AcceptConf.
async fn read_accept_conf(ws: &mut WsStream) -> Result<AcceptConf, ConnectError> {
    loop {
        let message = match ws.next().await {
            None => return Err(ConnectError::ClosedBeforeHandshake),
            Some(Err(err)) => return Err(ConnectError::from_ws(err)),
            Some(Ok(message)) => message,
        };
        let frame = match Incoming::from_ws(message) {
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

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The server closed it, the socket failed, or the writer could not write.
    Lost,
    /// The server broke the protocol; the client closed the connection.
    Violation,
    /// The client is closing.
    Closing,
}

/// Runs one established connection until it ends. Publishes its [`Link`] first (unless
/// the client is closing); after a reconnection (`generation` > 1) it first restores the
/// client's session, if it has one, so that no request overtakes the restore.
pub(crate) async fn run(
    shared: &Shared,
    ws: WsStream,
    conf: AcceptConf,
    generation: u64,
    events: &mpsc::Sender<Event>,
) -> Ended {
    let (sink, mut stream) = ws.split();
    let (frames_tx, frames_rx) = mpsc::channel(crate::client::builder::SEND_QUEUE);
    let (close_tx, close_rx) = oneshot::channel();
    let writer_done = CancellationToken::new();
    let writer = tokio::spawn(write_loop(
        Writer {
            sink,
            frames: frames_rx,
            close: close_rx,
            heartbeat: heartbeat_interval(conf.read_timeout),
            stop: shared.stop.clone(),
        },
        writer_done.clone(),
    ));
    debug!(
        generation,
        read_timeout = ?conf.read_timeout,
        limit = conf.message_buffer_size,
        "connected"
    );
    let link = std::sync::Arc::new(Link {
        generation,
        frames: frames_tx,
        conf,
    });
    let reading = read_loop(shared, &mut stream, events, &writer_done, close_tx);
    tokio::pin!(reading);
    let ended = async {
        // The reader runs meanwhile: it delivers the restore's reply.
        let mut op = None;
        if generation > 1 && shared.session_key().is_some() {
            tokio::select! {
                biased;
                ended = &mut reading => return ended,
                guard = resume_session(shared, &link, events) => op = Some(guard),
            }
        }
        let published = shared.publish(link);
        drop(op);
        if published {
            shared.notify(events, Event::Connected).await;
        }
        reading.await
    }
    .await;

    // No new request may pick this connection any more; then wait until the writer has
    // dropped its queue, so that every frame that was queued belongs to a pending entry the
    // caller sweeps.
    shared.unpublish(generation);
    let mut writer = writer;
    // A peer that stopped reading could block the writer's last write forever.
    let joined = match tokio::time::timeout(CLOSE_GRACE, &mut writer).await {
        Ok(joined) => joined,
        Err(_) => {
            debug!(generation, "the writer is stuck; aborting it");
            writer.abort();
            writer.await
        }
    };
    match joined {
        Err(err) if !err.is_cancelled() => warn!(%err, "the writer task failed"),
        _ => {}
    }
    debug!(generation, ?ended, "connection ended");
    ended
}

/// The session after a reconnection (PROTOCOL.md §4.4): restored by its key, or forgotten
/// (with `session_closed`) when the server refuses it, the reply is not a session, no reply
/// comes within the request timeout, or restoring is turned off. Kept when the connection
/// ends first or the server is shutting down: the next connection tries again. Returns the
/// session lock, held until the connection is published, so that `close_session` finds the
/// client connected.
async fn resume_session<'a>(
    shared: &'a Shared,
    link: &Link,
    events: &mpsc::Sender<Event>,
) -> tokio::sync::MutexGuard<'a, ()> {
    let op = shared.session_op().await;
    let Some(key) = shared.session_key() else {
        // Closed offline meanwhile.
        return op;
    };
    if !shared.config.restore_session {
        debug!("restoring the session is off; forgetting it");
        shared.forget_session(events).await;
        return op;
    }
    match restore_on(shared, link, key).await {
        Ok(()) => debug!("session restored"),
        Err(err @ (RequestError::Disconnected | RequestError::Shutdown)) => {
            debug!(%err, "session not restored; keeping it for the next connection");
        }
        Err(err) => {
            warn!(%err, "the session could not be restored; forgetting it");
            shared.forget_session(events).await;
        }
    }
    op
}

/// Sends RequestRestoreSession for `key` on `link` and waits for the reply, which the
/// reader turns into the client's session.
async fn restore_on(shared: &Shared, link: &Link, key: String) -> Result<(), RequestError> {
    let id = shared.next_id();
    let message = Message::RequestRestoreSession {
        id: RequestId::from(id),
        key: Bytes::from(key),
    };
    let len = message
        .encoded_len()
        .map_err(RequestError::InvalidMessage)?;
    link.check_size(len)?;
    let frame = encode(&message)?;
    // No guard: a late reply must still reach the reader, which applies it (after a timeout
    // forgot the session, a late success brings it back, with its event).
    let reply = shared
        .send_request_on(link, frame, id, Kind::RestoreSession)
        .await
        .map_err(|_| RequestError::Disconnected)?;
    let after = shared.config.request_timeout;
    let outcome = tokio::time::timeout(after, reply)
        .await
        .map_err(|_| RequestError::Timeout { after })?;
    outcome.unwrap_or(Err(RequestError::Disconnected)).map(drop)
}

async fn read_loop(
    shared: &Shared,
    stream: &mut SplitStream<WsStream>,
    events: &mpsc::Sender<Event>,
    writer_done: &CancellationToken,
    close_tx: oneshot::Sender<CloseFrame>,
) -> Ended {
    let violation = |code: CloseCode, reason: &'static str| {
        // The writer sends the close frame and stops.
        let _ = close_tx.send(close_frame(code, reason));
        Ended::Violation
    };
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            () = writer_done.cancelled() => return Ended::Lost,
            () = shared.stop.cancelled() => {
                // The writer sends the close frame; wait (briefly) for the server's answer,
                // keeping `close_tx` alive so the writer gets to send it.
                let drain = async {
                    while let Some(Ok(message)) = stream.next().await {
                        if message.is_close() {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
                return Ended::Closing;
            }
        };
        let message = match item {
            None => return Ended::Lost,
            Some(Ok(message)) => message,
            Some(Err(err)) => {
                return match Incoming::from_error(&err) {
                    Some(Incoming::Violation(code, reason)) => {
                        warn!(%err, "closing the connection");
                        violation(code, reason)
                    }
                    _ => {
                        debug!(%err, "connection lost");
                        Ended::Lost
                    }
                };
            }
        };
        match Incoming::from_ws(message) {
            Incoming::Frame(frame) => match Message::parse(frame) {
                Ok(message) => {
                    if let Err(reason) = dispatch(shared, message, events).await {
                        return violation(CloseCode::Protocol, reason);
                    }
                }
                Err(err) => {
                    warn!(%err, "malformed message from the server; closing the connection");
                    return violation(CloseCode::Protocol, "malformed WebWire message");
                }
            },
            Incoming::Alive => {}
            Incoming::Closed(frame) => {
                debug!(?frame, "the server closed the connection");
                return Ended::Lost;
            }
            Incoming::Gone => return Ended::Lost,
            Incoming::Violation(code, reason) => {
                warn!(reason, "closing the connection");
                return violation(code, reason);
            }
        }
    }
}

/// Hands one well-formed message from the server to whoever waits for it. An error is a
/// protocol violation (a session notification whose JSON is not a session), the reason
/// for the close frame.
async fn dispatch(
    shared: &Shared,
    message: Message,
    events: &mpsc::Sender<Event>,
) -> Result<(), &'static str> {
    let (id, outcome): (RequestId, Result<_, RequestError>) = match message {
        Message::ReplyBinary { id, .. }
        | Message::ReplyUtf8 { id, .. }
        | Message::ReplyUtf16 { id, .. } => match message.payload() {
            Some(payload) => (id, Ok(payload)),
            None => return Ok(()),
        },
        Message::ReplyError { id, code, message } => (
            id,
            Err(RequestError::Reply {
                code,
                message: String::from_utf8_lossy(&message).into_owned(),
            }),
        ),
        Message::ReplyShutdown { id } => (id, Err(RequestError::Shutdown)),
        Message::ReplyInternalError { id } => (id, Err(RequestError::Internal)),
        Message::ReplySessionNotFound { id } => (id, Err(RequestError::SessionNotFound)),
        Message::ReplyMaxSessConnsReached { id } => {
            (id, Err(RequestError::MaxSessionConnectionsReached))
        }
        Message::ReplySessionsDisabled { id } => (id, Err(RequestError::SessionsDisabled)),
        Message::SignalBinary { .. } | Message::SignalUtf8 { .. } | Message::SignalUtf16 { .. } => {
            if let (Some(name), Some(payload)) = (message.name(), message.payload()) {
                shared
                    .notify(events, Event::Signal(name.clone(), payload))
                    .await;
            }
            return Ok(());
        }
        Message::NotifySessionCreated { session } => {
            return match Session::from_json(&session) {
                Ok(session) => {
                    shared.store_session(session, events).await;
                    Ok(())
                }
                Err(err) => {
                    warn!(%err, "invalid session from the server; closing the connection");
                    Err("malformed session JSON")
                }
            };
        }
        Message::NotifySessionClosed => {
            shared.forget_session(events).await;
            return Ok(());
        }
        // Well-formed, but not something a server sends (or a second AcceptConf): ignored,
        // as the Go client does.
        Message::AcceptConf(_)
        | Message::RequestCloseSession { .. }
        | Message::RequestRestoreSession { .. }
        | Message::Heartbeat
        | Message::RequestBinary { .. }
        | Message::RequestUtf8 { .. }
        | Message::RequestUtf16 { .. } => {
            debug!(message_type = %message.message_type(), "unexpected message from the server ignored");
            return Ok(());
        }
    };
    let Some(entry) = shared.pending.take(id.to_u64()) else {
        debug!(%id, "reply for no pending request ignored");
        return Ok(());
    };
    // Session replies change the session here, in the order of the messages around them.
    let outcome = match (entry.kind, outcome) {
        (Kind::RestoreSession, Ok(payload)) => match Session::from_json(&payload.data) {
            Ok(session) => {
                shared.store_session(session, events).await;
                Ok(payload)
            }
            Err(err) => {
                warn!(%err, "invalid session in a restore reply");
                Err(RequestError::InvalidReply(err))
            }
        },
        (Kind::CloseSession, Ok(payload)) => {
            shared.forget_session(events).await;
            Ok(payload)
        }
        (_, outcome) => outcome,
    };
    // The requester may have given up meanwhile; that is fine.
    let _ = entry.reply.send(outcome);
    Ok(())
}

/// The writer task's half of a connection.
struct Writer {
    sink: SplitSink<WsStream, WsMessage>,
    frames: mpsc::Receiver<Bytes>,
    /// A close frame from the reader (protocol violation), or its end (connection over).
    close: oneshot::Receiver<CloseFrame>,
    heartbeat: Option<Duration>,
    stop: CancellationToken,
}

/// Writes queued frames, batched, and heartbeats when nothing else was written for the
/// heartbeat period. Ends when the reader ends or asks for a close, when the client closes
/// (after writing what was queued and a normal close frame), or when a write fails.
async fn write_loop(writer: Writer, done: CancellationToken) {
    let _done = done.drop_guard();
    if let Err(err) = write_frames(writer).await {
        debug!(%err, "write failed");
    }
}

async fn write_frames(writer: Writer) -> Result<(), tungstenite::Error> {
    let Writer {
        mut sink,
        mut frames,
        mut close,
        heartbeat,
        stop,
    } = writer;
    let period = heartbeat.unwrap_or(Duration::MAX);
    let beat = tokio::time::sleep(period);
    tokio::pin!(beat);
    loop {
        tokio::select! {
            biased;
            frame = &mut close => {
                match frame {
                    Ok(frame) => sink.send(WsMessage::Close(Some(frame))).await?,
                    // The reader ended. If the server closed, tungstenite queued the answer
                    // to its close frame; it goes out if the socket takes it now (a server
                    // that stopped reading gets no wait; `unconstrained`, so a spent
                    // cooperative budget cannot make the one attempt fail).
                    Err(_) => {
                        let _ = tokio::task::unconstrained(sink.flush()).now_or_never();
                    }
                }
                return Ok(());
            }
            () = stop.cancelled() => return close_gracefully(sink, frames).await,
            frame = frames.recv() => {
                let Some(frame) = frame else {
                    // Every link handle is gone: the client closed, or the reader ended.
                    if stop.is_cancelled() {
                        return close_gracefully(sink, frames).await;
                    }
                    return Ok(());
                };
                // Requesters woke this task with their first frame and run on: let the
                // others queue theirs too, so a burst leaves in one write.
                tokio::task::yield_now().await;
                sink.feed(WsMessage::Binary(frame)).await?;
                for _ in 1..MAX_BATCH {
                    match frames.try_recv() {
                        Ok(frame) => sink.feed(WsMessage::Binary(frame)).await?,
                        Err(_) => break,
                    }
                }
                sink.flush().await?;
            }
            () = &mut beat, if heartbeat.is_some() => {
                sink.send(WsMessage::Binary(Bytes::from_static(HEARTBEAT))).await?;
            }
        }
        // Every outgoing message restarts the heartbeat timer.
        if let Some(deadline) = Instant::now().checked_add(period) {
            beat.as_mut().reset(deadline);
        }
    }
}

/// The client closes: what was queued before the close still goes out, then a normal
/// close frame.
async fn close_gracefully(
    mut sink: SplitSink<WsStream, WsMessage>,
    mut frames: mpsc::Receiver<Bytes>,
) -> Result<(), tungstenite::Error> {
    while let Ok(frame) = frames.try_recv() {
        sink.feed(WsMessage::Binary(frame)).await?;
    }
    let normal = close_frame(CloseCode::Normal, "client closed");
    sink.send(WsMessage::Close(Some(normal))).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolVersion;

    #[test]
    fn heartbeat_at_three_quarters_of_the_read_timeout() {
        assert_eq!(
            heartbeat_interval(Duration::from_secs(60)),
            Some(Duration::from_secs(45))
        );
        assert_eq!(
            heartbeat_interval(Duration::from_millis(3_000)),
            Some(Duration::from_millis(2_250))
        );
        assert_eq!(heartbeat_interval(Duration::ZERO), None);
    }

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
}
