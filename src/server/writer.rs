//! The writer task of a connection: the only code that writes to its socket.

use std::time::Duration;

use futures_util::{FutureExt, Sink, SinkExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_util::sync::CancellationToken;

use crate::server::CloseReason;
use crate::server::connection::{Connection, Outbound};

/// At most this many queued messages are written between two flushes, so a steady stream
/// of replies still reaches the socket regularly.
const MAX_BATCH: usize = 1024;

/// Writes queued messages until told to close or the socket fails.
///
/// Messages are fed into tungstenite's write buffer as long as more are queued, then
/// flushed: a burst of replies leaves in one system call, a lone reply at once. A batch
/// (or the final close) that takes longer than `write_timeout` means the peer stopped
/// reading: the connection is dropped.
///
/// Returns the sink if a close frame was delivered: the peer owes an answer, and the reader
/// waits for it with the whole socket.
pub(crate) async fn write_loop<S>(
    mut sink: S,
    mut queue: mpsc::Receiver<Outbound>,
    conn: Connection,
    write_timeout: Duration,
    stop: CancellationToken,
) -> Option<S>
where
    S: Sink<WsMessage, Error = WsError> + Unpin,
{
    let mut close = None;
    loop {
        let first = tokio::select! {
            biased;
            first = queue.recv() => first,
            () = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        let batch = async {
            let mut next = Some(first);
            let mut written = 0;
            while let Some(outbound) = next.take() {
                match outbound {
                    Outbound::Frame(frame) => sink.feed(WsMessage::Binary(frame)).await?,
                    Outbound::Close(frame) => {
                        close = Some(frame);
                        break;
                    }
                }
                written += 1;
                if written < MAX_BATCH {
                    next = queue.try_recv().ok();
                }
            }
            sink.flush().await
        };
        // Most batches go out at once: only one that has to wait gets a timer.
        let written = {
            tokio::pin!(batch);
            match (&mut batch).now_or_never() {
                Some(result) => Ok(result),
                None => tokio::time::timeout(write_timeout, batch).await,
            }
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "write failed");
                conn.close_with(CloseReason::ConnectionLost);
                // After the client's close frame, tungstenite refuses new messages but still
                // owes the client its close answer: give it a chance to leave.
                let _ = tokio::time::timeout(write_timeout, sink.flush()).await;
                return None;
            }
            Err(_) => {
                tracing::debug!(?write_timeout, "peer stopped reading: write timed out");
                conn.close_with(CloseReason::WriteTimeout);
                return None;
            }
        }
        if close.is_some() {
            break;
        }
    }
    // Stop taking messages before the (possibly slow) close, so senders fail fast.
    queue.close();
    if let Some(Some(frame)) = close {
        let goodbye = async {
            sink.send(WsMessage::Close(Some(frame))).await?;
            sink.close().await
        };
        match tokio::time::timeout(write_timeout, goodbye).await {
            Ok(Ok(())) => return Some(sink),
            Ok(Err(error)) => tracing::trace!(%error, "close frame not delivered"),
            Err(_) => tracing::trace!("close frame not delivered: write timed out"),
        }
    }
    None
}
