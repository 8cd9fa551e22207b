//! The client's session operations: [`Client::restore_session`] and
//! [`Client::close_session`], serialised with each other and with the restore after a
//! reconnection, each bounded by the request timeout.

use std::future::Future;

use bytes::Bytes;

use crate::Session;
use crate::client::RequestError;
use crate::client::handle::Client;
use crate::client::pending::{Kind, Pending};
use crate::client::send::encode;
use crate::client::shared::State;
use crate::protocol::{Message, RequestId};

impl Client {
    /// Restores the session stored on the server under `key` (RequestRestoreSession,
    /// PROTOCOL.md §4.4), makes it the client's session, calls
    /// [`ClientHandler::session_created`](crate::client::ClientHandler::session_created), and returns it.
    ///
    /// A client holds at most one session: while one is active the call is refused locally
    /// with [`RequestError::SessionActive`]. Otherwise it behaves like a request with the
    /// client's request timeout (waiting for a connection while reconnecting). The
    /// server's refusals: [`RequestError::SessionNotFound`] (`03`),
    /// [`RequestError::MaxSessionConnectionsReached`] (`04`),
    /// [`RequestError::SessionsDisabled`] (`05`), [`RequestError::Internal`] (`02`),
    /// [`RequestError::Shutdown`] (`01`); a reply whose JSON is not a session is
    /// [`RequestError::InvalidReply`]. On every error the local session is left as it was. An
    /// empty key is [`RequestError::InvalidMessage`], nothing sent.
    ///
    /// Cancel safe like [`request`](Client::request), with one difference: once the request
    /// left, its reply is applied even if the call was dropped or timed out, so the client
    /// stays in step with the server (a late success still becomes the client's session and
    /// fires `session_created`), unless something newer came first: a session the server
    /// created or restored since, or another restore or close sent since. A late reply
    /// never overwrites a newer session.
    ///
    /// ```no_run
    /// # async fn demo(client: tokio_webwire::Client) -> Result<(), tokio_webwire::RequestError> {
    /// use tokio_webwire::RequestError;
    ///
    /// match client.restore_session("key saved from session_created").await {
    ///     Ok(session) => println!("welcome back, {:?}", session.info.get_value("user")),
    ///     Err(RequestError::SessionNotFound) => println!("expired: log in again"),
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn restore_session(&self, key: &str) -> Result<Session, RequestError> {
        let shared = &*self.shared;
        let timeout = shared.config.request_timeout;
        self.session_operation(async {
            if shared.has_session() {
                return Err(RequestError::SessionActive);
            }
            let id = shared.next_id();
            let kind = Kind::RestoreSession(shared.session_request_epoch());
            let frame = encode(&Message::RequestRestoreSession {
                id: RequestId::from(id),
                key: Bytes::copy_from_slice(key.as_bytes()),
            })?;
            let reply = shared.exchange(frame, (id, kind), (None, timeout)).await?;
            // The driver checked and stored the session already; this parse cannot fail.
            Session::from_json(&reply.data).map_err(RequestError::InvalidReply)
        })
        .await
    }

    /// Closes the client's session (PROTOCOL.md §4.5) and calls
    /// [`ClientHandler::session_closed`](crate::client::ClientHandler::session_closed). Without a session it returns `Ok(())` at once.
    ///
    /// While connected it sends RequestCloseSession and waits for the server's
    /// confirmation (up to the client's request timeout) before it forgets the session;
    /// on an error ([`RequestError::SessionsDisabled`], [`RequestError::Shutdown`],
    /// [`RequestError::Timeout`], [`RequestError::Disconnected`], ...) the session is kept,
    /// and calling again retries. While disconnected (or reconnecting) it only forgets the
    /// session locally, as the Go client does: the server keeps it, restorable by its key.
    ///
    /// Cancel safety: cancel safe. Dropped before the request left, nothing happened; once
    /// it left, the server's confirmation is applied even if the call was dropped or timed
    /// out: a late one still forgets the session and fires `session_closed`, unless a newer
    /// session (or session request) came first, which it leaves alone.
    pub async fn close_session(&self) -> Result<(), RequestError> {
        let shared = &*self.shared;
        self.session_operation(async {
            if !shared.has_session() {
                return Ok(());
            }
            let link = match &*shared.state.borrow() {
                State::Connected(link) => Some(link.clone()),
                State::Closed => return Err(RequestError::ClientClosed),
                State::Connecting | State::Down => None,
            };
            if let Some(link) = link {
                let id = shared.next_id();
                let frame = encode(&Message::RequestCloseSession {
                    id: RequestId::from(id),
                })?;
                let kind = Kind::CloseSession(shared.session_request_epoch());
                // A session request: its reply reaches the driver even if this call is
                // dropped.
                let sent = shared
                    .send_request_on(&link, frame, (id, kind), Pending::never())
                    .await;
                if let Ok(reply) = sent {
                    // On success the driver has forgotten the session already.
                    return reply.await.map(drop);
                }
                // The connection ended before its driver took the frame: nothing was sent,
                // and the client is offline now.
            }
            if shared.is_closed() {
                return Err(RequestError::ClientClosed);
            }
            shared.forget_session();
            Ok(())
        })
        .await
    }

    /// Runs a session operation: on an open client, after the operations before it (they
    /// never interleave: a session closed offline is not resurrected by a restore still in
    /// flight), the whole of it within the request timeout.
    async fn session_operation<T>(
        &self,
        operation: impl Future<Output = Result<T, RequestError>>,
    ) -> Result<T, RequestError> {
        let shared = &*self.shared;
        shared.check_open()?;
        let timeout = shared.config.request_timeout;
        let locked = async {
            let _op = shared.session_op().await;
            operation.await
        };
        tokio::time::timeout(timeout, locked)
            .await
            .unwrap_or(Err(RequestError::Timeout { after: timeout }))
    }
}
