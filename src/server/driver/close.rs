//! How a connection's driver closes: replies first, the close frame, the closing
//! handshake, the place given back, abandoned handlers dropped at their timeout.

use super::*;

impl<H, S, M, F> Driver<H, S, M, F>
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Unpin,
    M: Fn(Arc<job::Context<H>>, Job) -> F,
    F: Future<Output = Option<Bytes>> + Send + 'static,
{
    /// Ends the connection for `reason`. Requests read before the end are answered, as the
    /// reference server does: running handlers finish and their replies go out before the
    /// close frame, unless the peer is gone or closed first (requests held for a `connected`
    /// hook that did not finish get the shutdown reply). Then the socket is closed and
    /// `place`, the connection's place, given back. Handlers that still run then have
    /// nobody to answer: they get the abandoned-handler timeout to finish, and are dropped
    /// after it. When this returns no handler of the connection runs.
    pub(super) async fn close(&mut self, reason: &CloseReason, place: Place) {
        // From here on the connection takes no more signals and `closed()` resolves, also
        // while running handlers finish.
        self.cx.conn.close_with(reason.clone());
        let frame = match reason {
            CloseReason::Closed => Some(close_frame(CloseCode::Normal, "closed by the server")),
            CloseReason::ServerShutdown => {
                Some(close_frame(CloseCode::Away, "server shutting down"))
            }
            CloseReason::ReadTimeout => Some(close_frame(CloseCode::Normal, "read timeout")),
            CloseReason::HookFailed => Some(close_frame(CloseCode::Error, "internal error")),
            CloseReason::SlowConsumer => Some(close_frame(CloseCode::Again, "too slow")),
            CloseReason::ProtocolViolation(_) => self.violation.take(),
            CloseReason::ClientClosed | CloseReason::ConnectionLost | CloseReason::WriteTimeout => {
                None
            }
        };
        let code = frame.as_ref().map(|frame| u16::from(frame.code));
        for job in std::mem::take(&mut self.held) {
            if let Some(id) = job.request_id() {
                let reply = encode_special(Message::ReplyShutdown { id });
                self.tally.replied(&reply);
                self.taken.push_back(Outbound::Unmetered(reply));
            }
        }
        match frame {
            Some(frame) => {
                if poll_fn(|cx| self.poll_wind_down(cx)).await.is_ok() {
                    if let Some(socket) = self.socket.take() {
                        socket
                            .close(frame, self.cx.shared.config.close_timeout)
                            .await;
                    }
                }
            }
            None => {
                if let Some(socket) = self.socket.take() {
                    socket.finish();
                }
            }
        }
        self.socket = None;
        // The socket is closed: its place is free, whatever still runs.
        drop(place);
        // Nobody can receive these replies any more; their permits still have to come back
        // before the connection is gone, within the abandoned-handler timeout.
        let grace = self.cx.shared.config.abandoned_handler_timeout;
        if tokio::time::timeout(grace, self.finish_running())
            .await
            .is_err()
        {
            tracing::debug!(
                running = self.running,
                "handlers of a gone client stopped: abandoned-handler timeout"
            );
            if let Some(abandon) = &self.abandon {
                abandon.cancel();
            }
            // Each stopped job's completion sends its `Done` at once.
            self.finish_running().await;
        }
        self.tally.closed(&self.cx.shared.metrics, reason, code);
        // Whatever comes now has nobody to go to, and nothing wakes this task any more.
        self.cx.conn.outbox().close();
        self.cx.conn.forget_driver();
    }

    /// Waits until no job of the connection runs any more, dropping what they send.
    pub(super) async fn finish_running(&mut self) {
        let conn = self.cx.conn.clone();
        while self.running > 0 {
            let outbound = poll_fn(|cx| next_outbound(&mut self.taken, conn.outbox(), cx)).await;
            take(outbound, &mut self.running, &conn, &mut self.tally);
        }
    }

    /// Writes what running handlers and the outbox still send, until no handler runs and
    /// everything is flushed. `Err` when the socket failed.
    pub(super) fn poll_wind_down(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WriteFailed>> {
        let (_, outbox) = self.feed_outbox(cx)?;
        std::task::ready!(outbox);
        self.tally.flush(&self.cx.shared.metrics);
        let Some(socket) = self.socket.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        std::task::ready!(socket.poll_flush(cx))?;
        if self.running > 0 {
            // Woken by the next `Done` through the outbox.
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}
