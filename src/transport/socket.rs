//! [`Socket`]: one WebSocket, owned whole by the one task that drives its connection.
//!
//! Both roles drive a connection from a single task (the server's `driver`, the client's
//! connection task) that reads and writes the same `WebSocketStream` in one poll loop: no
//! split halves (a `BiLock` on every read and write), no queue hop to a writer task. What
//! such a loop needs from the socket lives here, once:
//!
//! - reading, with every item classified ([`Incoming`]);
//! - batched writing: frames are fed while the socket has room and flushed once nothing
//!   more is ready, so a burst leaves in one system call;
//! - the write timeout: a write that waits longer than it for the peer to read means the
//!   peer stopped reading. The timer is armed only while a write waits, so a connection
//!   whose writes go straight out never touches the timer wheel;
//! - the closing handshake, both ways ([`Socket::close`], [`Socket::finish`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{
    Error as WsError, Message as WsMessage, protocol::CloseFrame,
};

use crate::transport::Incoming;

/// A WebSocket with batched writes and a write timeout, polled by one task.
#[derive(Debug)]
pub(crate) struct Socket<S> {
    ws: WebSocketStream<S>,
    /// Frames were fed since the last completed flush.
    unflushed: bool,
    write_timeout: Duration,
    /// Armed while a write waits for the peer; allocated at the first such wait, so an idle
    /// connection does not carry a timer.
    stall: Option<Pin<Box<Sleep>>>,
    /// The write timeout is armed: a write has been waiting since it was.
    stalled: bool,
    /// `poll_room` said Pending: tungstenite is blocked until a flush gets through.
    room_waiting: bool,
}

/// How a write failed: the socket cannot be written any more.
#[derive(Debug)]
pub(crate) enum WriteFailed {
    /// The peer accepted no data for the whole write timeout.
    TimedOut,
    /// The socket failed (or the WebSocket is already closed).
    Failed(WsError),
}

impl<S> Socket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Takes over `ws`; a write that waits longer than `write_timeout` fails.
    pub(crate) fn new(ws: WebSocketStream<S>, write_timeout: Duration) -> Self {
        Socket {
            ws,
            unflushed: false,
            write_timeout,
            stall: None,
            stalled: false,
            room_waiting: false,
        }
    }

    /// Reads the next item. After [`Incoming::Closed`], a violation or [`Incoming::Gone`],
    /// the caller stops reading.
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Incoming> {
        let item = std::task::ready!(Pin::new(&mut self.ws).poll_next(cx));
        Poll::Ready(Incoming::from_read(item))
    }

    /// Ready when one more frame may be [`feed`](Self::feed)ed: tungstenite's write buffer
    /// is below its flush threshold, or it was written out. Pending while the peer does not
    /// read, and then it fails once that lasted the write timeout.
    pub(crate) fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WriteFailed>> {
        match Pin::new(&mut self.ws).poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                // Ready after Pending means tungstenite flushed everything; ready without
                // having waited says nothing about a flush that may still be waiting, so
                // it must not disarm the write timeout.
                if self.room_waiting {
                    self.room_waiting = false;
                    self.unflushed = false;
                    self.stalled = false;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(WriteFailed::Failed(error))),
            Poll::Pending => {
                self.room_waiting = true;
                self.poll_stall(cx)
            }
        }
    }

    /// Queues one binary frame. Call only after [`poll_room`](Self::poll_room) was ready;
    /// the frame goes out at the latest with the next [`poll_flush`](Self::poll_flush).
    pub(crate) fn feed(&mut self, frame: Bytes) -> Result<(), WriteFailed> {
        self.unflushed = true;
        Pin::new(&mut self.ws)
            .start_send(WsMessage::Binary(frame))
            .map_err(WriteFailed::Failed)
    }

    /// Queues a ping: a live peer answers it (unread answers cost nothing here), a peer
    /// that is gone makes a later write fail, so a connection that is not being read
    /// notices a client that left. Call only after [`poll_room`](Self::poll_room) was
    /// ready.
    pub(crate) fn probe(&mut self) -> Result<(), WriteFailed> {
        self.unflushed = true;
        Pin::new(&mut self.ws)
            .start_send(WsMessage::Ping(Bytes::new()))
            .map_err(WriteFailed::Failed)
    }

    /// Writes out what was fed (nothing to do if nothing was). Pending while the peer does
    /// not read; fails once that lasted the write timeout.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WriteFailed>> {
        if !self.unflushed {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.ws).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                // Everything fed is out: no wait is pending any more, so a later ready
                // `poll_room` must not take a frame fed after this for flushed too.
                self.unflushed = false;
                self.stalled = false;
                self.room_waiting = false;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(WriteFailed::Failed(error))),
            Poll::Pending => self.poll_stall(cx),
        }
    }

    /// Whether fed frames wait to be flushed.
    pub(crate) fn is_unflushed(&self) -> bool {
        self.unflushed
    }

    /// A write is waiting: arms the write timeout if it is not armed yet, and fails when it
    /// has passed.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WriteFailed>> {
        let write_timeout = self.write_timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(write_timeout)));
        if !self.stalled {
            // One clock read per wait, not per poll.
            self.stalled = true;
            stall.as_mut().reset(Instant::now() + write_timeout);
        }
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(WriteFailed::TimedOut)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The closing handshake, when this side closes: writes what was fed, then `frame`,
    /// then waits (at most `close_timeout`) for the peer's answer, and returns when the
    /// socket may be dropped.
    ///
    /// Closing a socket that still holds unread data makes the kernel send a reset, and a
    /// reset can destroy the last replies and the close frame still on their way. So after
    /// the close frame everything the peer still sends is read and dropped until its answer
    /// or the end of the stream; when tungstenite refuses to read on (it stops at a frame
    /// it cannot read past, such as an oversized one), the rest is read raw, after a FIN of
    /// ours, until the peer closes its end.
    pub(crate) async fn close(mut self, frame: CloseFrame, close_timeout: Duration) {
        let goodbye = async {
            SinkExt::send(&mut self.ws, WsMessage::Close(Some(frame))).await?;
            SinkExt::close(&mut self.ws).await
        };
        match tokio::time::timeout(self.write_timeout, goodbye).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::trace!(%error, "close frame not delivered");
                return;
            }
            Err(_) => {
                tracing::trace!("close frame not delivered: write timed out");
                return;
            }
        }
        let drain = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(WsMessage::Close(_))) => return,
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
            let io = self.ws.get_mut();
            if io.shutdown().await.is_err() {
                return;
            }
            let mut discard = vec![0; 4096];
            while matches!(io.read(&mut discard).await, Ok(read) if read > 0) {}
        };
        let _ = tokio::time::timeout(close_timeout, drain).await;
    }

    /// The end of a connection this side does not close with a frame of its own (the peer
    /// closed first, or is gone): what is still buffered, such as tungstenite's answer to
    /// the peer's close frame, goes out if the socket takes it at once, without waiting for
    /// a peer that may never read again.
    pub(crate) fn finish(mut self) {
        let _ = self.ws.flush().now_or_never();
    }
}

impl Incoming {
    /// Classifies what one read of the WebSocket returned.
    pub(crate) fn from_read(item: Option<Result<WsMessage, WsError>>) -> Self {
        match item {
            Some(Ok(message)) => Incoming::from_ws(message),
            Some(Err(error)) => Incoming::from_error(&error).unwrap_or_else(|| {
                tracing::debug!(%error, "read failed");
                Incoming::Gone
            }),
            None => Incoming::Gone,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::AsyncReadExt;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;
    use crate::transport::websocket_config;

    /// A frame fed after a flush that completed while the socket had made `poll_room` wait
    /// is still unflushed: the room that comes back later says nothing about it.
    #[tokio::test]
    async fn a_frame_fed_after_a_completed_wait_still_needs_its_flush() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let ws =
            WebSocketStream::from_raw_socket(ours, Role::Server, Some(websocket_config(1 << 20)))
                .await;
        let mut socket = Socket::new(ws, Duration::from_secs(60));
        // More than the pipe and tungstenite's threshold take: the write has to wait.
        socket.feed(Bytes::from(vec![7; 64 * 1024])).expect("fed");
        let waited = poll_fn(|cx| Poll::Ready(socket.poll_room(cx).is_pending())).await;
        assert!(waited, "the room must wait for the peer");
        let reader = tokio::spawn(async move {
            let mut sink = vec![0; 4096];
            while theirs.read(&mut sink).await.is_ok_and(|read| read > 0) {}
        });
        poll_fn(|cx| socket.poll_flush(cx)).await.expect("flushed");
        socket.feed(Bytes::from_static(b"after")).expect("fed");
        poll_fn(|cx| socket.poll_room(cx)).await.expect("room");
        assert!(
            socket.is_unflushed(),
            "the frame fed after the flush is not out yet"
        );
        reader.abort();
    }
}
