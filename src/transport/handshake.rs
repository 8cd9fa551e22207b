//! [`HeadStop`]: the client's stream during tungstenite's opening handshake, handing it no
//! byte past the end of the HTTP response head.
//!
//! tungstenite reads the server's response in chunks, and whatever it reads past the head
//! (the server's first WebSocket frames, often in the same segment as the 101) would stay
//! in its buffer, out of reach once the stream is taken back for our own framing. So the
//! handshake reads through this wrapper, which gives out the head's bytes only; what came
//! after stays here and is the [`Socket`](super::Socket)'s first bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream that reads up to the end of an HTTP head (`\r\n\r\n`) and no further.
#[derive(Debug)]
pub(crate) struct HeadStop<S> {
    io: S,
    /// Read from `io`, not given out yet.
    unread: BytesMut,
    /// Where the search for the head's end is: see [`advance`].
    matched: u8,
}

impl<S> HeadStop<S> {
    pub(crate) fn new(io: S) -> Self {
        HeadStop {
            io,
            unread: BytesMut::new(),
            matched: 0,
        }
    }

    /// The stream, and what was read past the head.
    pub(crate) fn into_parts(self) -> (S, BytesMut) {
        (self.io, self.unread)
    }

    fn head_done(&self) -> bool {
        self.matched == 4
    }
}

/// The next state of a search for the end of an HTTP head after `byte`: an empty line,
/// ended by `\r\n` or, as httparse (and so tungstenite) also accepts, by a bare `\n`.
/// States: 0 nothing, 1 `\r`, 2 a line ended, 3 a line ended then `\r`, 4 the head ended.
fn advance(matched: u8, byte: u8) -> u8 {
    match (matched, byte) {
        (2 | 3, b'\n') => 4,
        (_, b'\n') => 2,
        (2, b'\r') => 3,
        (_, b'\r') => 1,
        _ => 0,
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadStop<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.head_done() {
            // The handshake is over once the head is read; a read now would take bytes
            // that belong to the WebSocket.
            return Poll::Ready(Err(io::Error::other("read past the HTTP head")));
        }
        if this.unread.is_empty() {
            this.unread.reserve(1024);
            let read = std::task::ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.io),
                cx,
                &mut this.unread
            ))?;
            if read == 0 {
                return Poll::Ready(Ok(()));
            }
        }
        let limit = this.unread.len().min(out.remaining());
        let mut given = limit;
        for (at, &byte) in this.unread[..limit].iter().enumerate() {
            this.matched = advance(this.matched, byte);
            if this.head_done() {
                given = at + 1;
                break;
            }
        }
        out.put_slice(&this.unread[..given]);
        this.unread.advance(given);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadStop<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The head and the first frame arrive in one write: the reader gets the head only,
    /// in reads of any size, and the frame stays for the WebSocket.
    #[tokio::test]
    async fn gives_out_the_head_and_keeps_the_rest() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        for read_size in [1, 3, 7, 4096] {
            let (ours, mut theirs) = tokio::io::duplex(4096);
            let mut sent = head.to_vec();
            sent.extend_from_slice(b"\x82\x02hi");
            theirs.write_all(&sent).await.unwrap();
            let mut stop = HeadStop::new(ours);
            let mut got = Vec::new();
            while !stop.head_done() {
                let mut chunk = vec![0; read_size];
                let read = stop.read(&mut chunk).await.unwrap();
                assert!(read > 0);
                got.extend_from_slice(&chunk[..read]);
            }
            assert_eq!(got, head, "read size {read_size}");
            assert!(
                stop.read(&mut [0; 8]).await.is_err(),
                "no read past the head"
            );
            let (_, rest) = stop.into_parts();
            assert_eq!(&rest[..], b"\x82\x02hi");
        }
    }

    /// A head whose lines end with a bare `\n` (httparse accepts it): the frame after it
    /// is not given out either.
    #[tokio::test]
    async fn a_head_of_bare_line_feeds_ends_at_its_empty_line() {
        let head = b"HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\n\n";
        let (ours, mut theirs) = tokio::io::duplex(4096);
        theirs
            .write_all(&[&head[..], b"\x82\x02hi"].concat())
            .await
            .unwrap();
        let mut stop = HeadStop::new(ours);
        let mut got = Vec::new();
        let reading = async {
            while !stop.head_done() {
                let mut chunk = vec![0; 4096];
                let read = stop.read(&mut chunk).await.unwrap();
                got.extend_from_slice(&chunk[..read]);
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), reading)
            .await
            .expect("the head's end found");
        assert_eq!(got, head);
        assert_eq!(&stop.into_parts().1[..], b"\x82\x02hi");
    }

    #[test]
    fn finds_the_end_across_false_starts() {
        let mut matched = 0;
        for &byte in b"a\r\n\rb\r\r\n\r\n" {
            assert_ne!(matched, 4);
            matched = advance(matched, byte);
        }
        assert_eq!(matched, 4);
    }
}
