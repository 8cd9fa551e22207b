//! What the minimal servers and the raw load generator share: the accept loop (with the
//! AcceptConf frame sent first), the echo reply and [`pump`], a full-duplex WebSocket loop.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_webwire::protocol::{AcceptConf, Message};

use crate::{REPLY_BINARY, REQUEST_BINARY, Result};

/// The AcceptConf the minimal servers send first, the same as ours, so the generator sees
/// no difference.
fn accept_conf_frame(limit: usize) -> Result<Bytes> {
    Ok(Message::AcceptConf(AcceptConf::new(
        Duration::from_secs(60),
        u32::try_from(limit)?,
    ))
    .encode()?)
}

/// The minimal servers' accept loop, for ever: Nagle off on each connection, then `serve`
/// with the socket and the AcceptConf frame to send first.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    limit: usize,
    mut serve: impl FnMut(TcpStream, Bytes),
) -> Result<()> {
    let accept_conf = accept_conf_frame(limit)?;
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        serve(socket, accept_conf.clone());
    }
}

/// `0xBF` + id + payload of a binary request, in one buffer.
pub(crate) fn echo_reply(frame: &[u8]) -> Result<Bytes, String> {
    if frame.len() < 10 || frame[0] != REQUEST_BINARY {
        return Err("not a binary request".into());
    }
    let start = 10 + usize::from(frame[9]);
    let payload = frame.get(start..).ok_or("name past the end")?;
    let mut reply = BytesMut::with_capacity(9 + payload.len());
    reply.put_u8(REPLY_BINARY);
    reply.put_slice(&frame[1..9]);
    reply.put_slice(payload);
    Ok(reply.freeze())
}

/// What a frame handler tells [`pump`].
pub(crate) enum Flow {
    Continue,
    Done,
}

/// How [`pump`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The frame handler said [`Flow::Done`].
    Done,
    /// The peer closed the connection.
    Closed,
}

/// Reads and writes one WebSocket in a single poll loop: every binary message goes to
/// `on_frame`, which may queue frames in `out`; queued frames are fed to tungstenite and
/// flushed once per round (a round reads until the socket has nothing more). Reading pauses
/// while `out` holds `max_out` frames. Reads and writes never wait for each other, so large
/// pipelined messages cannot deadlock.
pub(crate) async fn pump<S, F>(
    ws: &mut WebSocketStream<S>,
    out: &mut VecDeque<Bytes>,
    max_out: usize,
    mut on_frame: F,
) -> Result<Ended, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Bytes, &mut VecDeque<Bytes>) -> Result<Flow, String>,
{
    let mut unflushed = false;
    poll_fn(|cx| {
        loop {
            let mut progress = false;
            while out.len() < max_out {
                match Pin::new(&mut *ws).poll_next(cx) {
                    Poll::Ready(Some(Ok(WsMessage::Binary(frame)))) => {
                        progress = true;
                        if let Flow::Done = on_frame(frame, out)? {
                            return Poll::Ready(Ok(Ended::Done));
                        }
                    }
                    Poll::Ready(Some(Ok(WsMessage::Close(_))) | None) => {
                        return Poll::Ready(Ok(Ended::Closed));
                    }
                    Poll::Ready(Some(Ok(_))) => progress = true,
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error.to_string())),
                    Poll::Pending => break,
                }
            }
            while !out.is_empty() {
                match Pin::new(&mut *ws).poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let frame = out.pop_front().expect("not empty");
                        Pin::new(&mut *ws)
                            .start_send(WsMessage::Binary(frame))
                            .map_err(|e| e.to_string())?;
                        unflushed = true;
                        progress = true;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error.to_string())),
                    Poll::Pending => break,
                }
            }
            if unflushed {
                match Pin::new(&mut *ws).poll_flush(cx) {
                    Poll::Ready(Ok(())) => unflushed = false,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error.to_string())),
                    Poll::Pending => {}
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    })
    .await
}
