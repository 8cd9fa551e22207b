//! The reader task of a connection: reads, checks and dispatches every client message,
//! and owns the connection's life from handshake to `disconnected`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{
    Error as WsError, Message as WsMessage, protocol::frame::coding::CloseCode,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::payload::Payload;
use crate::protocol::{Message, RequestId};
use crate::server::connection::{Connection, Outbound, Peer};
use crate::server::writer::write_loop;
use crate::server::{CloseReason, Handler, HandlerError, Shared, Slot};
use crate::transport::{Incoming, close_frame};

/// Serves one upgraded connection until it is closed, then runs the `disconnected` hook.
///
/// `slot` is the connection's place among the server's `max_connections`, held until the
/// connection is gone.
pub(crate) async fn serve<H, S>(
    shared: Arc<Shared<H>>,
    ws: WebSocketStream<S>,
    peer: Peer,
    slot: Slot,
) where
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
        Arc::clone(&shared.sessions),
    );
    async {
        let (sink, mut stream) = ws.split();
        // Stops the writer if this task ends without telling it (a panic, an abort).
        let writer_stop = CancellationToken::new();
        let _stop_writer = writer_stop.clone().drop_guard();
        let writer = tokio::spawn(
            write_loop(
                sink,
                queued,
                conn.clone(),
                config.write_timeout,
                writer_stop,
            )
            .in_current_span(),
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
        let connected = tokio::select! {
            outcome = catch_panic(async { shared.handler.connected(&conn).await }) => outcome,
            () = conn.closing().cancelled() => Ok(()),
        };
        let reason = match connected {
            Ok(()) => reader.read_loop(&mut stream).await,
            Err(panic) => {
                tracing::error!(panic, "the connected hook panicked");
                CloseReason::HookFailed
            }
        };
        tracing::debug!(%reason, "closing");

        // Requests read before the end are answered, as the reference server does: running
        // handlers finish and their replies go out before the close frame, unless the peer
        // is gone anyway.
        let close = match &reason {
            CloseReason::Closed => Some(close_frame(CloseCode::Normal, "closed by the server")),
            CloseReason::ServerShutdown => {
                Some(close_frame(CloseCode::Away, "server shutting down"))
            }
            CloseReason::ReadTimeout => Some(close_frame(CloseCode::Normal, "read timeout")),
            CloseReason::HookFailed => Some(close_frame(CloseCode::Error, "internal error")),
            CloseReason::ProtocolViolation(_) => reader.violation.take(),
            CloseReason::ClientClosed | CloseReason::ConnectionLost | CloseReason::WriteTimeout => {
                None
            }
        };
        if close.is_some() {
            reader.wait_for_handlers().await;
        }
        let _ = conn.send_outbound(Outbound::Close(close)).await;
        match writer.await {
            Ok(Some(sink)) => match stream.reunite(sink) {
                Ok(ws) => linger(ws, config.close_timeout).await,
                Err(error) => tracing::error!(%error, "the socket's halves do not match"),
            },
            // No close frame went out (the peer is gone, or closed first): nothing to wait for.
            _ => drop(stream),
        }
        reader.wait_for_handlers().await;
        conn.sessions().disconnected(&conn);
        // The socket is closed: its place is free before the hook hears of it.
        drop(slot);
        // The hook always runs; one that hangs is stopped a shutdown timeout after the
        // shutdown deadline (or after it started, if later), so it cannot hold a shutdown
        // up for ever.
        let give_up = async {
            shared.stop_handlers.cancelled().await;
            tokio::time::sleep(shared.config.shutdown_timeout).await;
        };
        tokio::select! {
            biased;
            outcome = catch_panic(async { shared.handler.disconnected(&conn, &reason).await }) => {
                if let Err(panic) = outcome {
                    tracing::error!(panic, "the disconnected hook panicked");
                }
            }
            () = give_up => {
                tracing::warn!("disconnected hook stopped: it outlived the shutdown deadline");
            }
        }
        tracing::debug!("disconnected");
    }
    .instrument(span)
    .await;
}

/// The server's end of the closing handshake, after its close frame went out: waits for
/// the client's answer, for at most `timeout`, reading and dropping whatever comes first,
/// then closes the socket.
///
/// Closing a socket that still holds unread data makes the kernel reset the connection, and
/// a reset can destroy the replies and the close frame still on their way. So when
/// tungstenite stops before the answer (it refuses to read past an oversized or broken
/// frame), the rest is read raw: after a FIN of ours, until the client closes its end.
async fn linger<S>(mut ws: WebSocketStream<S>, timeout: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let drain = async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Close(_))) => return,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
        let io = ws.get_mut();
        if io.shutdown().await.is_err() {
            return;
        }
        let mut discard = vec![0; 4096];
        while matches!(io.read(&mut discard).await, Ok(read) if read > 0) {}
    };
    let _ = tokio::time::timeout(timeout, drain).await;
}

struct Reader<'a, H> {
    shared: &'a Arc<Shared<H>>,
    conn: &'a Connection,
    /// One permit per handler running on its own task: bounds the handlers of this
    /// connection, and all permits free means none is running.
    permits: Arc<Semaphore>,
    /// The close frame for a protocol violation.
    violation: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>,
}

/// How often the read timeout is checked, as a fraction of it: the timeout fires between
/// `T` and `T + T/4` after the last message, which spares a clock read per message.
const READ_TIMEOUT_TICKS: u32 = 4;

impl<H: Handler> Reader<'_, H> {
    /// Reads until the connection has to close, and says why.
    async fn read_loop<R>(&mut self, stream: &mut R) -> CloseReason
    where
        R: Stream<Item = Result<WsMessage, WsError>> + Unpin,
    {
        let conn = self.conn;
        let read_timeout = self.shared.config.read_timeout;
        let tick = read_timeout / READ_TIMEOUT_TICKS;
        // One timer for the connection's life: rather than resetting a deadline on every
        // message (a clock read and a timer-wheel update each), note messages and look at
        // whether anything was heard every quarter of the timeout.
        let mut ticker = tokio::time::interval_at(Instant::now() + tick, tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard = false;
        let mut idle_since = Instant::now();
        let closing = conn.closing().cancelled();
        tokio::pin!(closing);
        loop {
            let item = tokio::select! {
                biased;
                () = &mut closing => {
                    return conn.close_reason().unwrap_or(CloseReason::ServerShutdown);
                }
                item = stream.next() => item,
                now = ticker.tick() => {
                    if heard {
                        heard = false;
                        idle_since = now;
                    } else if now - idle_since >= read_timeout {
                        return CloseReason::ReadTimeout;
                    }
                    continue;
                }
            };
            heard = true;
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
                // A headless WebSocket may have been configured with a larger limit.
                Incoming::Frame(frame) if frame.len() > self.shared.config.max_message_size => {
                    let why = format!("{} bytes over the limit", frame.len());
                    return self.violation(CloseCode::Size, "message exceeds the size limit", why);
                }
                Incoming::Frame(frame) => match Message::parse(frame) {
                    Ok(message) => {
                        if self.dispatch(message).await == Dispatched::AfterWaiting {
                            // Reading was paused for a slot: not the client's silence.
                            ticker.reset();
                            idle_since = Instant::now();
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
        use crate::payload::Encoding::{Binary, Utf8, Utf16};
        let (id, name, payload) = match message {
            Message::Heartbeat => return Dispatched::AtOnce,
            Message::SignalBinary { name, data } => (
                None,
                name,
                Payload {
                    encoding: Binary,
                    data,
                },
            ),
            Message::SignalUtf8 { name, data } => (
                None,
                name,
                Payload {
                    encoding: Utf8,
                    data,
                },
            ),
            Message::SignalUtf16 { name, data } => (
                None,
                name,
                Payload {
                    encoding: Utf16,
                    data,
                },
            ),
            Message::RequestBinary { id, name, data } => (
                Some(id),
                name,
                Payload {
                    encoding: Binary,
                    data,
                },
            ),
            Message::RequestUtf8 { id, name, data } => (
                Some(id),
                name,
                Payload {
                    encoding: Utf8,
                    data,
                },
            ),
            Message::RequestUtf16 { id, name, data } => (
                Some(id),
                name,
                Payload {
                    encoding: Utf16,
                    data,
                },
            ),
            // Session requests are handled here, in order, as the reference does.
            Message::RequestRestoreSession { id, key } => {
                let restore = self.conn.sessions().restore(self.conn, id, key);
                return self.session_request(id, restore).await;
            }
            Message::RequestCloseSession { id } => {
                let close = self.conn.sessions().close_requested(self.conn, id);
                return self.session_request(id, close).await;
            }
            other => {
                tracing::debug!(message_type = %other.message_type(), "ignored: not a client message");
                return Dispatched::AtOnce;
            }
        };
        // Wait for a slot first: the shutdown may begin meanwhile.
        let waited = if self.permits.available_permits() > 0 {
            Dispatched::AtOnce
        } else {
            let all_busy = self.permits.acquire().await;
            drop(all_busy);
            Dispatched::AfterWaiting
        };
        if self.shared.is_shutting_down() {
            match id {
                Some(id) => self.reply_now(Message::ReplyShutdown { id }).await,
                None => tracing::debug!("signal dropped: shutting down"),
            }
            return waited;
        }
        let shared = Arc::clone(self.shared);
        let conn = self.conn.clone();
        match id {
            Some(id) => {
                let span = tracing::debug_span!("request", %id, %name);
                self.run(
                    span,
                    async move {
                        let outcome = catch_panic(async {
                            shared.handler.request(&conn, name, payload).await
                        });
                        let reply = reply_to(id, outcome.await);
                        let _ = conn
                            .send(encode_reply(id, reply, shared.config.max_message_size))
                            .await;
                    },
                    Some(id),
                );
            }
            None => {
                let span = tracing::debug_span!("signal", %name);
                self.run(
                    span,
                    async move {
                        let outcome = catch_panic(async {
                            shared.handler.signal(&conn, name, payload).await
                        });
                        if let Err(panic) = outcome.await {
                            tracing::error!(panic, "signal handler panicked");
                        }
                    },
                    None,
                );
            }
        }
        waited
    }

    /// Runs a handler: polled once right here, which finishes most handlers (those that do
    /// not wait for anything) without a task, a permit or a wake-up of their own; one that
    /// has to wait continues on a task of its own, holding a handler slot, until it is done
    /// or the shutdown deadline stops it (a stopped request gets the shutdown reply).
    fn run(
        &self,
        span: tracing::Span,
        handling: impl Future<Output = ()> + Send + 'static,
        request: Option<RequestId>,
    ) {
        let mut handling = Box::pin(handling.instrument(span));
        let mut cx = Context::from_waker(Waker::noop());
        if handling.as_mut().poll(&mut cx).is_ready() {
            return;
        }
        // A slot was free when `dispatch` looked, and only this task takes slots.
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            tracing::error!("no handler slot free: handler dropped");
            return;
        };
        let stop = self.shared.stop_handlers.clone();
        let stopped_reply = request.map(|id| (self.conn.clone(), id));
        self.shared.handlers.spawn(async move {
            tokio::select! {
                biased;
                () = &mut handling => {}
                () = stop.cancelled() => {
                    tracing::warn!("handler stopped: shutdown deadline passed");
                    if let Some((conn, id)) = stopped_reply {
                        let _ = conn.send(encode_special(Message::ReplyShutdown { id })).await;
                    }
                }
            }
            // Only now: a connection that waits for its handlers must find the reply queued.
            drop(permit);
        });
    }

    /// Answers a session request with what `handle` replies, or, during a shutdown, with
    /// the shutdown reply (`handle` is then never polled).
    async fn session_request(
        &self,
        id: RequestId,
        handle: impl Future<Output = Message>,
    ) -> Dispatched {
        let reply = if self.shared.is_shutting_down() {
            Message::ReplyShutdown { id }
        } else {
            handle.await
        };
        self.reply_now(reply).await;
        Dispatched::AtOnce
    }

    async fn reply_now(&self, reply: Message) {
        let limit = self.shared.config.max_message_size;
        let id = reply.request_id().unwrap_or_default();
        let _ = self.conn.send(encode_reply(id, reply, limit)).await;
    }

    /// Waits until no handler of this connection is running.
    async fn wait_for_handlers(&self) {
        let all = u32::try_from(self.shared.config.max_concurrent_requests).unwrap_or(u32::MAX);
        let _ = self.permits.acquire_many(all).await;
    }
}

/// Whether dispatching had to wait for a handler slot (reading was paused meanwhile, which
/// must not count against the client's read timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dispatched {
    AtOnce,
    AfterWaiting,
}

/// The reply to request `id`, from what its handler returned.
fn reply_to(id: RequestId, outcome: Result<Result<Payload, HandlerError>, String>) -> Message {
    match outcome {
        Ok(Ok(payload)) => Message::reply(id, payload),
        Ok(Err(error)) => match error.as_reply() {
            Some((code, message)) => Message::ReplyError {
                id,
                code: code.clone(),
                message: Bytes::copy_from_slice(message.as_bytes()),
            },
            None => {
                tracing::error!(%error, "request failed");
                Message::ReplyInternalError { id }
            }
        },
        Err(panic) => {
            tracing::error!(panic, "request handler panicked");
            Message::ReplyInternalError { id }
        }
    }
}

/// Encodes the reply to request `id`; a reply the client must not receive (one the encoder
/// refuses, or one over the message size limit, which clients use as their receive limit)
/// is logged and replaced by an internal-error reply, so the request is always answered.
fn encode_reply(id: RequestId, reply: Message, limit: usize) -> Bytes {
    match reply.encode() {
        Ok(frame) if frame.len() <= limit => return frame,
        Ok(frame) => tracing::error!(
            len = frame.len(),
            limit,
            "the reply exceeds the message size limit"
        ),
        Err(error) => tracing::error!(%error, "the reply cannot be encoded"),
    }
    encode_special(Message::ReplyInternalError { id })
}

/// Encodes a reply that consists of a type and an identifier only.
fn encode_special(reply: Message) -> Bytes {
    // Special replies have no field that could fail a check: encoding cannot fail.
    reply
        .encode()
        .expect("a reply of a type and an identifier always encodes")
}

/// Runs `future`, turning a panic into its message. The whole call is inside the future,
/// so a handler that panics before its first await is caught too.
async fn catch_panic<T>(future: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(not a string)".to_owned())
        })
}
