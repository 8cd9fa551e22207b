//! The reader task of a connection: reads, checks and dispatches every client message,
//! and owns the connection's life from handshake to `disconnected`.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{
    Error as WsError, Message as WsMessage, protocol::frame::coding::CloseCode,
};
use tracing::Instrument;

use crate::payload::Payload;
use crate::protocol::{Message, Name, RequestId};
use crate::server::connection::{Connection, Outbound, Peer};
use crate::server::writer::write_loop;
use crate::server::{CloseReason, Handler, Shared};
use crate::transport::{Incoming, close_frame};

/// Serves one upgraded connection until it is closed, then runs the `disconnected` hook.
pub(crate) async fn serve<H, S>(shared: Arc<Shared<H>>, ws: WebSocketStream<S>, peer: Peer)
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = shared.next_connection_id();
    let span = tracing::info_span!("connection", id, remote = ?peer.remote_addr);
    let config = &shared.config;
    let (queue, queued) = mpsc::channel(config.outbound_queue_len);
    let conn = Connection::new(
        id,
        peer,
        config.max_message_size,
        queue,
        shared.close_all.child_token(),
    );
    async {
        let (sink, stream) = ws.split();
        let writer = tokio::spawn(
            write_loop(sink, queued, conn.clone(), config.write_timeout).in_current_span(),
        );
        tracing::debug!("connected");
        // The handshake goes first; the queue is empty, so this never waits.
        let _ = conn.send(config.accept_conf.clone()).await;
        let mut reader = Reader {
            shared: &shared,
            conn: &conn,
            permits: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            violation: None,
        };
        shared.handler.connected(&conn).await;
        let reason = reader.read_loop(stream).await;
        tracing::debug!(%reason, "closing");

        let close = match &reason {
            // Let running handlers deliver their replies before the socket closes.
            CloseReason::Closed => {
                reader.wait_for_handlers().await;
                Some(close_frame(CloseCode::Normal, "closed by the server"))
            }
            CloseReason::ServerShutdown => {
                reader.wait_for_handlers().await;
                Some(close_frame(CloseCode::Away, "server shutting down"))
            }
            CloseReason::ReadTimeout => Some(close_frame(CloseCode::Normal, "read timeout")),
            CloseReason::ProtocolViolation(_) => reader.violation.take(),
            CloseReason::ClientClosed | CloseReason::ConnectionLost | CloseReason::WriteTimeout => {
                None
            }
        };
        let _ = conn.send_outbound(Outbound::Close(close)).await;
        let _ = writer.await;
        reader.wait_for_handlers().await;
        shared.handler.disconnected(&conn, &reason).await;
        tracing::debug!("disconnected");
    }
    .instrument(span)
    .await;
}

struct Reader<'a, H> {
    shared: &'a Arc<Shared<H>>,
    conn: &'a Connection,
    /// One permit per request or signal being handled: bounds the handlers of this
    /// connection, and all permits free means none is running.
    permits: Arc<Semaphore>,
    /// The close frame for a protocol violation.
    violation: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>,
}

impl<H: Handler> Reader<'_, H> {
    /// Reads until the connection has to close, and says why.
    async fn read_loop<R>(&mut self, mut stream: R) -> CloseReason
    where
        R: Stream<Item = Result<WsMessage, WsError>> + Unpin,
    {
        let read_timeout = self.shared.config.read_timeout;
        // One timer for the connection's life: instead of resetting it on every message
        // (a timer-wheel update each), remember the last activity and, when the timer
        // fires early, push it to the real deadline.
        let mut last_activity = Instant::now();
        let deadline = tokio::time::sleep(read_timeout);
        tokio::pin!(deadline);
        loop {
            let item = tokio::select! {
                biased;
                () = self.conn.closing().cancelled() => {
                    return self.conn.close_reason().unwrap_or(CloseReason::ServerShutdown);
                }
                item = stream.next() => item,
                () = &mut deadline => {
                    let due = last_activity + read_timeout;
                    if Instant::now() >= due {
                        return CloseReason::ReadTimeout;
                    }
                    deadline.as_mut().reset(due);
                    continue;
                }
            };
            last_activity = Instant::now();
            let incoming = match item {
                Some(Ok(message)) => Incoming::from_ws(message),
                Some(Err(error)) => match Incoming::from_error(&error) {
                    Some(violation) => violation,
                    None => {
                        tracing::debug!(%error, "read failed");
                        return CloseReason::ConnectionLost;
                    }
                },
                None => return CloseReason::ConnectionLost,
            };
            match incoming {
                Incoming::Frame(frame) => match Message::parse(frame) {
                    Ok(message) => {
                        if self.dispatch(message).await == Dispatched::AfterWaiting {
                            last_activity = Instant::now();
                        }
                    }
                    Err(error) => {
                        let why = error.to_string();
                        return self.violation(CloseCode::Protocol, "malformed message", why);
                    }
                },
                Incoming::Alive => {}
                Incoming::Closed(frame) => {
                    tracing::debug!(?frame, "closed by the client");
                    return CloseReason::ClientClosed;
                }
                Incoming::Violation(code, reason) => {
                    return self.violation(code, reason, reason.to_owned());
                }
            }
        }
    }

    fn violation(&mut self, code: CloseCode, reason: &'static str, why: String) -> CloseReason {
        tracing::debug!(%why, ?code, "protocol violation");
        self.violation = Some(close_frame(code, reason));
        CloseReason::ProtocolViolation(why)
    }

    /// Acts on one well-formed message.
    async fn dispatch(&mut self, message: Message) -> Dispatched {
        let shutting_down = self.shared.shutting_down.is_cancelled();
        match message {
            Message::Heartbeat => Dispatched::AtOnce,
            Message::SignalBinary { .. }
            | Message::SignalUtf8 { .. }
            | Message::SignalUtf16 { .. } => {
                if shutting_down {
                    tracing::debug!("signal dropped: shutting down");
                    return Dispatched::AtOnce;
                }
                let (name, payload) = named_payload(&message);
                let Some((permit, waited)) = self.permit().await else {
                    return Dispatched::AfterWaiting;
                };
                self.spawn_signal(permit, name, payload);
                waited
            }
            Message::RequestBinary { id, .. }
            | Message::RequestUtf8 { id, .. }
            | Message::RequestUtf16 { id, .. } => {
                if shutting_down {
                    return self.reply_now(Message::ReplyShutdown { id }).await;
                }
                let (name, payload) = named_payload(&message);
                let Some((permit, waited)) = self.permit().await else {
                    return Dispatched::AfterWaiting;
                };
                self.spawn_request(permit, id, name, payload);
                waited
            }
            Message::RequestRestoreSession { id, .. } | Message::RequestCloseSession { id } => {
                let reply = if shutting_down {
                    Message::ReplyShutdown { id }
                } else {
                    Message::ReplySessionsDisabled { id }
                };
                self.reply_now(reply).await
            }
            other => {
                tracing::debug!(message_type = %other.message_type(), "ignored: not a client message");
                Dispatched::AtOnce
            }
        }
    }

    async fn reply_now(&self, reply: Message) -> Dispatched {
        let _ = self.conn.send(encode_special(reply)).await;
        Dispatched::AtOnce
    }

    /// A handler slot: at once when one is free, otherwise after waiting (reading pauses
    /// meanwhile). `None` when the connection closed while waiting.
    async fn permit(&self) -> Option<(OwnedSemaphorePermit, Dispatched)> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some((permit, Dispatched::AtOnce));
        }
        tokio::select! {
            permit = self.permits.clone().acquire_owned() => {
                permit.ok().map(|permit| (permit, Dispatched::AfterWaiting))
            }
            () = self.conn.closing().cancelled() => None,
        }
    }

    /// Waits until no handler of this connection is running.
    async fn wait_for_handlers(&self) {
        let all = u32::try_from(self.shared.config.max_concurrent_requests).unwrap_or(u32::MAX);
        let _ = self.permits.acquire_many(all).await;
    }

    fn spawn_request(
        &self,
        permit: OwnedSemaphorePermit,
        id: RequestId,
        name: Name,
        payload: Payload,
    ) {
        let shared = Arc::clone(self.shared);
        let conn = self.conn.clone();
        let span = tracing::debug_span!("request", %id, %name);
        let task = async move {
            let outcome = tokio::select! {
                biased;
                outcome = AssertUnwindSafe(shared.handler.request(&conn, name, payload)).catch_unwind() => outcome,
                () = shared.stop_handlers.cancelled() => {
                    tracing::warn!("handler stopped: shutdown deadline passed");
                    let _ = conn.send(encode_special(Message::ReplyShutdown { id })).await;
                    return;
                }
            };
            let reply = match outcome {
                Ok(Ok(payload)) => Message::reply(id, payload)
                    .encode()
                    .unwrap_or_else(|error| {
                        tracing::error!(%error, "the handler's reply cannot be encoded");
                        encode_special(Message::ReplyInternalError { id })
                    }),
                Ok(Err(error)) => match error.as_reply() {
                    Some((code, message)) => Message::ReplyError {
                        id,
                        code: code.clone(),
                        message: Bytes::copy_from_slice(message.as_bytes()),
                    }
                    .encode()
                    .unwrap_or_else(|_| encode_special(Message::ReplyInternalError { id })),
                    None => {
                        tracing::error!(%error, "request failed");
                        encode_special(Message::ReplyInternalError { id })
                    }
                },
                Err(panic) => {
                    tracing::error!(panic = panic_message(&panic), "request handler panicked");
                    encode_special(Message::ReplyInternalError { id })
                }
            };
            let _ = conn.send(reply).await;
            // Only now: a connection that waits for its handlers must find the reply queued.
            drop(permit);
        };
        self.shared.handlers.spawn(task.instrument(span));
    }

    fn spawn_signal(&self, permit: OwnedSemaphorePermit, name: Name, payload: Payload) {
        let shared = Arc::clone(self.shared);
        let conn = self.conn.clone();
        let span = tracing::debug_span!("signal", %name);
        let task = async move {
            let _permit = permit;
            tokio::select! {
                biased;
                outcome = AssertUnwindSafe(shared.handler.signal(&conn, name, payload)).catch_unwind() => {
                    if let Err(panic) = outcome {
                        tracing::error!(panic = panic_message(&panic), "signal handler panicked");
                    }
                }
                () = shared.stop_handlers.cancelled() => {
                    tracing::warn!("handler stopped: shutdown deadline passed");
                }
            }
        };
        self.shared.handlers.spawn(task.instrument(span));
    }
}

/// Whether dispatching had to wait for a handler slot (reading was paused meanwhile, which
/// must not count against the client's read timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dispatched {
    AtOnce,
    AfterWaiting,
}

/// The name and payload of a signal or request.
fn named_payload(message: &Message) -> (Name, Payload) {
    let name = message.name().cloned().unwrap_or_default();
    let payload = message.payload().unwrap_or_default();
    (name, payload)
}

/// Encodes a reply that consists of a type and an identifier only.
fn encode_special(reply: Message) -> Bytes {
    // Special replies have no field that could fail a check: encoding cannot fail.
    reply
        .encode()
        .expect("a reply of a type and an identifier always encodes")
}

fn panic_message(panic: &Box<dyn Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}
