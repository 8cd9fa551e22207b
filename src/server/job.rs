//! What a client message asks of the server, as one future per message ([`Job`]), and the
//! guard that gives every request exactly one reply ([`Completion`]).
//!
//! Requests, signals and the two session requests are all jobs: each takes one of the
//! connection's `max_concurrent_requests` permits while it runs on a task of its own, so a
//! limit of one means one by one in arrival order, whatever the message.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;

use crate::payload::Payload;
use crate::protocol::{Message, Name, RedactedKey, RequestId};
use crate::server::panic::panic_message;
use crate::server::{Connection, Handler, HandlerError, Shared, client_topics};

/// One message's work.
pub(crate) enum Job {
    /// A request for [`Handler::request`].
    Request {
        id: RequestId,
        name: Name,
        payload: Payload,
    },
    /// A signal for [`Handler::signal`].
    Signal { name: Name, payload: Payload },
    /// A session restore request (§4.4).
    Restore { id: RequestId, key: Bytes },
    /// A session close request (§4.5).
    CloseSession { id: RequestId },
}

impl std::fmt::Debug for Job {
    /// Everything but a restore's key (its length only): keys are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Request { id, name, payload } => f
                .debug_struct("Request")
                .field("id", id)
                .field("name", name)
                .field("payload", payload)
                .finish(),
            Job::Signal { name, payload } => f
                .debug_struct("Signal")
                .field("name", name)
                .field("payload", payload)
                .finish(),
            Job::Restore { id, key } => f
                .debug_struct("Restore")
                .field("id", id)
                .field("key", &RedactedKey(key.len()))
                .finish(),
            Job::CloseSession { id } => f.debug_struct("CloseSession").field("id", id).finish(),
        }
    }
}

impl Job {
    /// The job of a client message; `None` for a heartbeat or a message only a server sends.
    pub(crate) fn from_message(message: Message) -> Option<Job> {
        use crate::payload::Encoding::{Binary, Utf8, Utf16};
        let request = |id, name, encoding, data| Job::Request {
            id,
            name,
            payload: Payload { encoding, data },
        };
        let signal = |name, encoding, data| Job::Signal {
            name,
            payload: Payload { encoding, data },
        };
        Some(match message {
            Message::RequestBinary { id, name, data } => request(id, name, Binary, data),
            Message::RequestUtf8 { id, name, data } => request(id, name, Utf8, data),
            Message::RequestUtf16 { id, name, data } => request(id, name, Utf16, data),
            Message::SignalBinary { name, data } => signal(name, Binary, data),
            Message::SignalUtf8 { name, data } => signal(name, Utf8, data),
            Message::SignalUtf16 { name, data } => signal(name, Utf16, data),
            Message::RequestRestoreSession { id, key } => Job::Restore { id, key },
            Message::RequestCloseSession { id } => Job::CloseSession { id },
            Message::Heartbeat => return None,
            other => {
                tracing::debug!(message_type = %other.message_type(), "ignored: not a client message");
                return None;
            }
        })
    }

    /// The span its handling runs in (disabled, and nearly free, unless a subscriber
    /// wants debug spans).
    pub(crate) fn span(&self) -> tracing::Span {
        match self {
            Job::Request { id, name, .. } => tracing::debug_span!("request", %id, %name),
            Job::Signal { name, .. } => tracing::debug_span!("signal", %name),
            Job::Restore { id, .. } => tracing::debug_span!("restore session", %id),
            Job::CloseSession { id } => tracing::debug_span!("close session", %id),
        }
    }

    /// The request this job must answer; `None` for a signal.
    pub(crate) fn request_id(&self) -> Option<RequestId> {
        match self {
            Job::Request { id, .. } | Job::Restore { id, .. } | Job::CloseSession { id } => {
                Some(*id)
            }
            Job::Signal { .. } => None,
        }
    }
}

/// What a connection's jobs share: one reference count per job instead of two.
pub(crate) struct Context<H> {
    pub(crate) shared: Arc<Shared<H>>,
    pub(crate) conn: Connection,
}

/// Does `job`; the output is the encoded reply of a request (`None` for a signal). A
/// reply the client must not receive becomes an internal-error reply ([`encode_reply`]).
///
/// Panics are not caught here but around each poll of this future ([`poll_job`]): so
/// the handler's future is stored right inside this one, with no wrapper to be moved
/// into, and the whole future (copied into the driver's reused box for every request) stays small. The
/// rare session requests are boxed for the same reason.
pub(crate) async fn run<H: Handler>(cx: Arc<Context<H>>, job: Job) -> Option<Bytes> {
    let Context { shared, conn } = &*cx;
    let (id, reply) = match job {
        Job::Request { id, name, payload } if client_topics::is_extension_request(conn, &name) => {
            let reply = Box::pin(client_topics::handle(shared, conn, id, &name, payload)).await;
            (id, reply)
        }
        Job::Request { id, name, payload } => (
            id,
            reply_to(id, shared.handler.request(conn, name, payload).await),
        ),
        Job::Signal { name, payload } => {
            shared.handler.signal(conn, name, payload).await;
            return None;
        }
        Job::Restore { id, key } => (id, Box::pin(conn.sessions().restore(conn, id, key)).await),
        Job::CloseSession { id } => {
            let reply = Box::pin(conn.sessions().leave_requested(conn, id)).await;
            (id, reply)
        }
    };
    Some(encode_reply(id, reply, shared.config.max_message_size))
}

/// Polls a job's future, catching a panic: a panicking handler's request is answered with
/// an internal-error reply (its text is logged, never sent), a signal's is logged. A
/// future that panicked is finished: it must not be polled again.
pub(crate) fn poll_job<F>(
    future: Pin<&mut F>,
    cx: &mut TaskContext<'_>,
    request: Option<RequestId>,
) -> Poll<Option<Bytes>>
where
    F: Future<Output = Option<Bytes>>,
{
    match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
        Ok(polled) => polled,
        Err(panic) => {
            let panic = panic_message(panic);
            Poll::Ready(match request {
                Some(id) => {
                    tracing::error!(panic, "request handler panicked");
                    Some(encode_special(Message::ReplyInternalError { id }))
                }
                None => {
                    tracing::error!(panic, "signal handler panicked");
                    None
                }
            })
        }
    }
}

/// Owned by a job that runs on a task of its own: hands its reply to the connection's
/// driver and gives its permit back, exactly once, however the task ends. A task stopped at the
/// shutdown deadline (or dropped by a runtime that shuts down) answers its request with the
/// shutdown reply.
#[must_use = "dropping a completion answers its request with the shutdown reply"]
pub(crate) struct Completion {
    conn: Connection,
    request: Option<RequestId>,
    done: bool,
}

impl Completion {
    pub(crate) fn new(conn: Connection, request: Option<RequestId>) -> Self {
        Completion {
            conn,
            request,
            done: false,
        }
    }

    /// The job ended with `reply`.
    pub(crate) fn complete(mut self, reply: Option<Bytes>) {
        self.done = true;
        self.conn.complete(reply);
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.done {
            let reply = self
                .request
                .map(|id| encode_special(Message::ReplyShutdown { id }));
            self.conn.complete(reply);
        }
    }
}

/// The reply to request `id`, from what its handler returned.
fn reply_to(id: RequestId, outcome: Result<Payload, HandlerError>) -> Message {
    match outcome {
        Ok(payload) => Message::reply(id, payload),
        Err(error) => match error.as_reply() {
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
    }
}

/// Encodes the reply to request `id`; a reply the client must not receive (one the encoder
/// refuses, or one over the message size limit, which clients use as their receive limit)
/// is logged and replaced by an internal-error reply, so the request is always answered.
pub(crate) fn encode_reply(id: RequestId, reply: Message, limit: usize) -> Bytes {
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
pub(crate) fn encode_special(reply: Message) -> Bytes {
    // Special replies have no field that could fail a check: encoding cannot fail.
    reply
        .encode()
        .expect("a reply of a type and an identifier always encodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_a_restore_without_its_key() {
        let restore = Job::from_message(Message::RequestRestoreSession {
            id: RequestId::from(3),
            key: Bytes::from_static(b"s3cret-key"),
        });
        let shown = format!("{restore:?}");
        assert_eq!(
            shown,
            "Some(Restore { id: RequestId(0300000000000000), key: <redacted: 10 bytes> })"
        );
    }
}
