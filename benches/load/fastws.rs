//! The fastwebsockets echo servers, with or without their replies gathered into one write
//! ([`GatherWrites`]).

use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::wire::{accept_loop, echo_reply};
use crate::{BoxError, Result};

/// The memory reference: fastwebsockets as its own echo example uses it. hyper serves the
/// HTTP/1 upgrade request (fastwebsockets' `upgrade`), then per connection one task reads a
/// frame and writes its reply, the same [`echo_reply`] as the tokio-tungstenite loop.
/// fastwebsockets has no write buffer: each frame is a write of its own. With `gather`, the
/// socket is wrapped in [`GatherWrites`], so that pipelined replies go out in one write as
/// the tokio-tungstenite loop's do (without it, a system call per reply is most of its CPU
/// at 1 KiB: 4.2 µs per request against 0.6 in a smoke run).
pub(crate) async fn serve_fastwebsockets(
    listener: TcpListener,
    limit: usize,
    gather: bool,
) -> Result<()> {
    accept_loop(listener, limit, |socket, accept_conf| {
        if gather {
            tokio::spawn(fastwebsockets_upgrade(
                GatherWrites::new(socket),
                accept_conf,
                limit,
            ));
        } else {
            tokio::spawn(fastwebsockets_upgrade(socket, accept_conf, limit));
        }
    })
    .await
}

/// Serves the HTTP/1 upgrade request of one connection of [`serve_fastwebsockets`], then
/// its WebSocket on a task of its own.
async fn fastwebsockets_upgrade<S>(socket: S, accept_conf: Bytes, limit: usize)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request| {
        let accept_conf = accept_conf.clone();
        async move {
            let (response, upgrade) = fastwebsockets::upgrade::upgrade(&mut request)?;
            tokio::spawn(async move {
                let echoed =
                    async { fastwebsockets_echo(upgrade.await?, accept_conf, limit).await };
                match echoed.await {
                    Err(error) if !peer_gone(&error) => eprintln!("fastwebsockets echo: {error}"),
                    _ => {}
                }
            });
            Ok::<_, fastwebsockets::WebSocketError>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
        .with_upgrades()
        .await;
}

/// Whether a fastwebsockets connection ended because the peer went away (the load
/// generators end by dropping their sockets; the stalled clients' are reset).
fn peer_gone(error: &BoxError) -> bool {
    use fastwebsockets::WebSocketError;
    match error.downcast_ref::<WebSocketError>() {
        Some(WebSocketError::UnexpectedEOF | WebSocketError::ConnectionClosed) => true,
        Some(WebSocketError::IoError(error)) => matches!(
            error.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        _ => false,
    }
}

/// One connection of [`serve_fastwebsockets`]: the AcceptConf, then a reply to each binary
/// request until the peer closes.
async fn fastwebsockets_echo<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: fastwebsockets::WebSocket<S>,
    accept_conf: Bytes,
    limit: usize,
) -> Result<()> {
    use fastwebsockets::{Frame, OpCode, Payload as WsPayload};
    // fastwebsockets refuses a frame of its limit or more: a frame of `limit` bytes passes.
    ws.set_max_message_size(limit + 1);
    ws.write_frame(Frame::binary(WsPayload::Borrowed(&accept_conf)))
        .await?;
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Binary if frame.fin => {
                let reply = echo_reply(&frame.payload)?;
                ws.write_frame(Frame::binary(WsPayload::Borrowed(&reply)))
                    .await?;
            }
            OpCode::Close => return Ok(()),
            other => return Err(format!("unexpected frame: {other:?}, fin {}", frame.fin).into()),
        }
    }
}

/// A connection whose writes are gathered in memory and written out when a read finds
/// nothing to read (every request read so far has its reply), or before a write once
/// [`GatherWrites::MAX`] bytes wait: what the tokio-tungstenite loop's flush per round and
/// 128 KiB write buffer do, for a library that writes each frame at once. Holds no memory
/// while nothing waits (the buffer is freed once written).
pub(crate) struct GatherWrites<S> {
    inner: S,
    /// Written to us, not yet to `inner`.
    out: Vec<u8>,
    /// How much of `out` went to `inner`.
    sent: usize,
}

impl<S> GatherWrites<S> {
    /// Writes are passed on before a write once this many bytes wait.
    const MAX: usize = 128 * 1024;

    fn new(inner: S) -> Self {
        GatherWrites {
            inner,
            out: Vec::new(),
            sent: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> GatherWrites<S> {
    /// Writes out all that waits, then frees the buffer.
    fn poll_send(&mut self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.out.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        (self.out, self.sent) = (Vec::new(), 0);
        Poll::Ready(Ok(()))
    }

    /// Room for more: what waits is written out first once it reaches `MAX`. (The buffer
    /// grows as `Vec` does: a first reserve of 16 KiB changed neither the CPU nor the idle
    /// RSS measurably in smoke runs.)
    fn poll_room(&mut self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        if self.out.len() >= Self::MAX {
            std::task::ready!(self.poll_send(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for GatherWrites<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            // Nothing more to answer for now: the replies go out.
            Poll::Pending => match this.poll_send(cx) {
                Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                _ => Poll::Pending,
            },
            read => read,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GatherWrites<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_room(cx))?;
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        std::task::ready!(this.poll_room(cx))?;
        for buf in bufs {
            this.out.extend_from_slice(buf);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
