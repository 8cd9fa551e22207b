//! The reference server: a minimal tokio-tungstenite echo loop, with its buffer sizes.

use std::collections::VecDeque;
use std::fmt;

use futures_util::SinkExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::Result;
use crate::wire::{Flow, accept_loop, echo_reply, pump};

/// The read chunk and the write buffer of a minimal tokio-tungstenite server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Buffers {
    /// `read_buffer_size`: the bytes tungstenite asks the socket for in one read.
    read: usize,
    /// `write_buffer_size`: frames are gathered up to this before a write.
    write: usize,
}

impl Buffers {
    /// The reference: what a server tuned for throughput takes. An 8 KiB read chunk
    /// (tungstenite's default, 128 KiB, would be that much memory per connection) and
    /// tungstenite's default 128 KiB write buffer: few system calls per request.
    pub(crate) const GENEROUS: Buffers = Buffers {
        read: 8 * 1024,
        write: 128 * 1024,
    };

    /// The sizes of our transport before issue 22 (4 KiB / 16 KiB): beside
    /// [`Buffers::GENEROUS`], what the buffer sizes alone cost.
    pub(crate) const SMALL: Buffers = Buffers {
        read: 4 * 1024,
        write: 16 * 1024,
    };

    /// The hard cap on the write buffer: the write buffer, then room for one more frame of
    /// the largest size (twice, as our transport allows) and its header.
    fn max_write(self, limit: usize) -> usize {
        self.write + limit * 2 + 1024
    }

    /// The tungstenite configuration of a minimal server with these buffers.
    fn config(self, limit: usize) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read)
            .write_buffer_size(self.write)
            .max_write_buffer_size(self.max_write(limit))
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit))
    }
}

impl fmt::Display for Buffers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} KiB read chunk, {} KiB write buffer (max: that + 2 × the size limit + 1 KiB)",
            self.read / 1024,
            self.write / 1024
        )
    }
}

/// The baseline: tokio-tungstenite's own handshake, then per connection one task that reads
/// requests and writes replies in the same poll loop ([`pump`]: no channel, no task per
/// request, one flush per batch). It parses the type byte, the id and the name length only.
pub(crate) async fn serve_minimal(
    listener: TcpListener,
    limit: usize,
    buffers: Buffers,
) -> Result<()> {
    accept_loop(listener, limit, |socket, accept_conf| {
        tokio::spawn(async move {
            let config = buffers.config(limit);
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(socket, Some(config)).await
            else {
                return;
            };
            if ws.send(WsMessage::Binary(accept_conf)).await.is_err() {
                return;
            }
            let mut out = VecDeque::new();
            let _ = pump(&mut ws, &mut out, 64, |frame, out| {
                out.push_back(echo_reply(&frame)?);
                Ok(Flow::Continue)
            })
            .await;
        });
    })
    .await
}
