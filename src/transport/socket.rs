//! [`Socket`]: one WebSocket, owned whole by the one task that drives its connection.
//!
//! Both roles drive a connection from a single task (the server's `driver`, the client's
//! connection task) that reads and writes the same socket in one poll loop: no split
//! halves, no queue hop to a writer task. What such a loop needs from the socket lives
//! here, once, over the raw byte stream (RFC 6455 framing is [`frame`](super::frame)):
//!
//! - reading, with every item classified ([`Incoming`]). Bytes are read in chunks of
//!   [`READ_CHUNK`] into a buffer that exists only while bytes are in flight: it is
//!   dropped whenever it has been read empty and the socket has nothing more, so an idle
//!   connection holds no read buffer, and a busy one reads many messages per system call.
//!   A message is handed out as a view of that buffer (no copy); a frame larger than a
//!   chunk is read into an allocation of its own size;
//! - batched writing: frames are queued while the socket has room and written once nothing
//!   more is ready, so a burst leaves in one system call. Payloads of
//!   [`ZERO_COPY_MIN`] bytes or more are not copied: the queue holds the frame's own
//!   buffer, written with vectored writes behind a header of a few bytes. The queue's
//!   buffers are dropped whenever it has been written empty;
//! - the write timeout: a write that makes no progress for that long means the peer
//!   stopped reading (a slow reader that keeps taking bytes is not cut off). The timer is
//!   armed only while a write waits, so a connection whose writes go straight out never
//!   touches the timer wheel;
//! - pings answered, the closing handshake both ways ([`Socket::close`], [`Socket::finish`]).
//!
//! Over 600 lines (1187, 672 before the unit tests): one type, the whole WebSocket of one
//! connection (reading, fragments, writing, closing), whose parts share its buffers; the
//! rest is its unit tests, which need its private state.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::transport::Incoming;
use crate::transport::frame::{BadHeader, Header, MAX_HEADER_LEN, MaskKeys, Opcode, apply_mask};

/// Bytes are read from the socket in chunks of this size (or the rest of a larger frame at
/// once). A chunk lives only while bytes are in flight, and a message read from it keeps
/// it alive (a view, not a copy) until the message is dropped: a running handler's
/// request holds at most `max(max_message_size + 14, READ_CHUNK)` bytes.
pub(crate) const READ_CHUNK: usize = 8 * 1024;

/// The least room worth a read system call: with less room left in the chunk, a new
/// chunk is taken (or the old one's free start reused) first.
const MIN_READ: usize = 1024;

/// Frames are queued until this many bytes wait, then written before more are taken;
/// while the peer reads everything (the last write took the whole queue) up to the
/// socket's batch ([`WRITE_BURST`] unless set) wait, so a burst of replies leaves in few
/// system calls.
pub(crate) const WRITE_ROOM: usize = 16 * 1024;

/// The queue's bound while the peer keeps up, unless set ([`Socket::batch`]; the server's
/// `write_batch_size`); see [`WRITE_ROOM`].
pub(crate) const WRITE_BURST: usize = 64 * 1024;

/// Payloads at least this long are written from their own buffer (vectored), shorter ones
/// are copied behind their header, so that many small frames make few write slices.
/// Measured on the load bench (4×64 pipelined requests, medians of 3): at 1 KiB, copying
/// took about 1.02× the generous reference server's CPU per request where a slice per
/// payload took 1.17× (a `writev` of many small slices costs more than the copy); at
/// 4 KiB the two were even within the noise.
pub(crate) const ZERO_COPY_MIN: usize = 4 * 1024;

/// The copy buffer's size once a second frame is copied while another waits (a single
/// frame gets a buffer of its own size); a full one is written as a slice of its own.
/// Larger buffers would hold more unused room for a client that stops reading.
const COPY_CHUNK: usize = 8 * 1024;

/// At most this many slices go into one vectored write (Linux takes up to 1024): a header
/// and a payload for each of 64 pipelined replies.
const MAX_SLICES: usize = 128;

/// Which end of the connection this is: a client masks what it sends and must get
/// nothing masked, a server the reverse (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// A WebSocket with batched writes and a write timeout, polled by one task.
#[derive(Debug)]
pub(crate) struct Socket<S> {
    io: S,
    role: Role,
    /// A client's masking keys; boxed, so that a server's socket carries only the `None`.
    masks: Option<Box<MaskKeys>>,
    max_message_size: usize,
    /// Read and not yet taken as frames; no allocation while nothing is in flight.
    read: BytesMut,
    /// The chunk read before `read`, taken again once the messages read from it are
    /// dropped (see [`make_room`](Self::make_room)).
    spare: BytesMut,
    /// A message that arrives in fragments, being assembled.
    fragments: Option<BytesMut>,
    /// Queued frames, in order, written before `tail`.
    out: VecDeque<Bytes>,
    /// The newest queued bytes: small frames copied together.
    tail: BytesMut,
    /// Bytes queued in `out` and `tail`.
    queued: usize,
    /// The stream writes several slices in one call.
    vectored: bool,
    /// The payload of the last ping not answered yet (one answer for several pings).
    pong: Option<Bytes>,
    /// A close frame was queued: nothing more is written.
    close_sent: bool,
    /// The last write took everything queued: the peer reads as fast as we write.
    keeping_up: bool,
    /// The queue's room while the peer keeps up (see [`batch`](Self::batch)).
    batch: usize,
    /// Buffers stay between messages (see [`keep_buffers`](Self::keep_buffers)).
    keep_buffers: bool,
    write_timeout: Duration,
    /// Armed while a write waits for the peer; allocated at the first such wait, so an idle
    /// connection does not carry a timer.
    stall: Option<Pin<Box<Sleep>>>,
    /// The write timeout is armed: a write has been waiting, without progress, since then.
    stalled: bool,
    /// Bytes were written to the stream and it has not been flushed since (a TLS stream
    /// holds what it was given until it is flushed).
    io_unflushed: bool,
}

/// How a write failed: the socket cannot be written any more.
#[derive(Debug)]
pub(crate) enum WriteFailed {
    /// The peer accepted no data for the whole write timeout.
    TimedOut,
    /// The socket failed, or it is closing (a close frame was sent).
    Failed(io::Error),
}

impl std::fmt::Display for WriteFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteFailed::TimedOut => f.write_str("write timed out"),
            WriteFailed::Failed(error) => error.fmt(f),
        }
    }
}

/// What reading a frame needs next.
enum Step {
    /// An item for the caller.
    Item(Incoming),
    /// At least this many more bytes.
    Need(usize),
    /// A frame was consumed that means nothing to the caller (a fragment).
    Again,
}

impl<S> Socket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Takes over `io`, the stream after the HTTP upgrade, and `read`, what was read past
    /// the upgrade's head. A message over `max_message_size` closes the connection with
    /// 1009; a write that waits longer than `write_timeout` without progress fails.
    pub(crate) fn new(
        io: S,
        read: BytesMut,
        role: Role,
        max_message_size: usize,
        write_timeout: Duration,
    ) -> Self {
        let vectored = io.is_write_vectored();
        Socket {
            io,
            role,
            masks: (role == Role::Client).then(|| Box::new(MaskKeys::new())),
            max_message_size,
            read,
            spare: BytesMut::new(),
            fragments: None,
            out: VecDeque::new(),
            tail: BytesMut::new(),
            queued: 0,
            vectored,
            pong: None,
            close_sent: false,
            keeping_up: true,
            batch: WRITE_BURST,
            keep_buffers: false,
            write_timeout,
            stall: None,
            stalled: false,
            io_unflushed: false,
        }
    }

    /// Queues up to `bytes` of frames before writing while the peer keeps up ([`WRITE_BURST`]
    /// unless set), and up to [`WRITE_ROOM`] (or `bytes`, if smaller) once it does not.
    pub(crate) fn batch(mut self, bytes: usize) -> Self {
        self.batch = bytes;
        self
    }

    /// Keeps the read chunk and the write buffer between messages (up to [`WRITE_ROOM`]
    /// for the write buffer) instead of giving them back whenever the socket is quiet: for
    /// a client, whose few connections are better served by allocating nothing per
    /// request than by the few KiB an idle server connection must not hold.
    pub(crate) fn keep_buffers(mut self) -> Self {
        self.keep_buffers = true;
        self
    }

    /// Reads the next item. After [`Incoming::Closed`], a violation or [`Incoming::Gone`],
    /// the caller stops reading.
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Incoming> {
        loop {
            match self.step() {
                Step::Item(item) => return Poll::Ready(item),
                Step::Again => {}
                Step::Need(more) => match std::task::ready!(self.poll_fill(more, cx)) {
                    Ok(0) => return Poll::Ready(Incoming::Gone),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(%error, "read failed");
                        return Poll::Ready(Incoming::Gone);
                    }
                },
            }
        }
    }

    /// Reads into `self.read`, which needs `more` bytes for the frame under way.
    fn poll_fill(&mut self, more: usize, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let room = self.read.capacity() - self.read.len();
        // A socket that keeps its chunk reads into the end of it first: by the next read
        // the messages read from it are usually dropped, and the chunk is reused whole.
        let least = if self.keep_buffers {
            more
        } else {
            more.max(MIN_READ)
        };
        if room < least {
            // What the frame needs, and up to a chunk in all: a frame that straddles two
            // chunks moves to an allocation of its own size, not to a chunk more.
            // (A client, keeping its chunks, takes a whole chunk more: its chunks are
            // reclaimed in place more often that way, and it holds few messages.)
            let chunk = if self.keep_buffers {
                READ_CHUNK
            } else {
                READ_CHUNK.saturating_sub(self.read.len())
            };
            self.make_room(more.max(chunk));
        }
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read);
        if read.is_pending() && self.read.is_empty() && !self.keep_buffers {
            // Nothing in flight: give the chunks back (messages read from them keep their
            // part).
            self.read = BytesMut::new();
            self.spare = BytesMut::new();
        }
        read
    }

    /// Makes room for `want` more bytes without allocating where it can: the chunk's own
    /// start if every message read from it is dropped, else (nothing being read) the
    /// chunk used before this one, whose messages are likely dropped by now; else a new
    /// chunk. Two chunks taking turns, a steady stream of messages allocates nothing.
    fn make_room(&mut self, want: usize) {
        if self.read.try_reclaim(want) {
            return;
        }
        if self.read.is_empty() {
            if want <= READ_CHUNK {
                std::mem::swap(&mut self.read, &mut self.spare);
                if self.read.try_reclaim(want) {
                    return;
                }
            }
            if self.keep_buffers {
                self.read.reserve(want);
            } else {
                self.read = BytesMut::with_capacity(want);
            }
            return;
        }
        if self.keep_buffers {
            self.read.reserve(want);
            return;
        }
        // Exactly what is needed: `reserve` would double (a Vec's growth), and a message
        // read from the allocation keeps all of it.
        let mut bigger = BytesMut::with_capacity(self.read.len() + want);
        bigger.extend_from_slice(&self.read);
        self.read = bigger;
    }

    /// Takes one frame from what was read, if it is all there.
    fn step(&mut self) -> Step {
        let (header, at) = match Header::read(&self.read) {
            Ok(Some(header)) => header,
            Ok(None) => return Step::Need(MAX_HEADER_LEN.saturating_sub(self.read.len()).max(1)),
            Err(bad) => return Step::Item(violation(bad)),
        };
        match (self.role, header.mask) {
            (Role::Server, None) => {
                return Step::Item(protocol_violation("unmasked frame from a client"));
            }
            (Role::Client, Some(_)) => {
                return Step::Item(protocol_violation("masked frame from a server"));
            }
            _ => {}
        }
        let assembled = self.fragments.as_ref().map_or(0, BytesMut::len) as u64;
        if !header.opcode.is_control() && assembled + header.len > self.max_message_size as u64 {
            return Step::Item(Incoming::Violation(
                CloseCode::Size,
                "message exceeds the size limit",
            ));
        }
        // Below the limit, so it fits a usize.
        let len = header.len as usize;
        if self.read.len() < at + len {
            return Step::Need(at + len - self.read.len());
        }
        self.read.advance(at);
        let mut payload = self.read.split_to(len);
        if let Some(key) = header.mask {
            apply_mask(&mut payload, key);
        }
        match (header.opcode, self.fragments.as_mut()) {
            (Opcode::Binary, None) if header.fin => Step::Item(Incoming::Frame(payload.freeze())),
            (Opcode::Binary, None) => {
                self.fragments = Some(payload);
                Step::Again
            }
            (Opcode::Continuation, Some(fragments)) => {
                fragments.extend_from_slice(&payload);
                match (header.fin, self.fragments.take()) {
                    (true, Some(message)) => Step::Item(Incoming::Frame(message.freeze())),
                    (_, fragments) => {
                        self.fragments = fragments;
                        Step::Again
                    }
                }
            }
            (Opcode::Text, None) => Step::Item(Incoming::Violation(
                CloseCode::Unsupported,
                "text messages are not WebWire",
            )),
            (Opcode::Binary | Opcode::Text, Some(_)) => {
                Step::Item(protocol_violation("a new message inside a fragmented one"))
            }
            (Opcode::Continuation, None) => {
                Step::Item(protocol_violation("a continuation without a message"))
            }
            (Opcode::Ping, _) => {
                self.pong = Some(payload.freeze());
                Step::Item(Incoming::Alive)
            }
            (Opcode::Pong, _) => Step::Item(Incoming::Alive),
            (Opcode::Close, _) => Step::Item(self.closed_by_peer(payload.freeze())),
        }
    }

    /// The peer's close frame: checked, and answered with its own code (RFC 6455 §5.5.1).
    fn closed_by_peer(&mut self, payload: Bytes) -> Incoming {
        let frame = match payload.len() {
            0 => None,
            1 => return protocol_violation("a close frame of one byte"),
            _ => {
                let code = CloseCode::from(u16::from_be_bytes([payload[0], payload[1]]));
                if !code.is_allowed() {
                    return protocol_violation("a close code that may not be sent");
                }
                let Ok(reason) = Utf8Bytes::try_from(payload.slice(2..)) else {
                    return Incoming::Violation(CloseCode::Invalid, "invalid UTF-8");
                };
                Some(CloseFrame { code, reason })
            }
        };
        if !self.close_sent {
            // Only the code: the reason is the peer's, not ours to repeat.
            let answer = payload.slice(..payload.len().min(2));
            self.queue(Opcode::Close, answer);
            self.close_sent = true;
        }
        Incoming::Closed(frame)
    }

    /// Ready when one more frame may be [`feed`](Self::feed)ed: fewer than [`WRITE_ROOM`]
    /// bytes wait (or [`WRITE_BURST`] while the peer keeps up), writing some out first if
    /// needed. Pending while the peer does not read, and then it fails once that lasted
    /// the write timeout without progress.
    pub(crate) fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WriteFailed>> {
        let room = if self.keeping_up {
            self.batch
        } else {
            self.batch.min(WRITE_ROOM)
        };
        self.poll_room_below(room, cx)
    }

    fn poll_room_below(
        &mut self,
        room: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), WriteFailed>> {
        if self.queued < room {
            return Poll::Ready(Ok(()));
        }
        match self.poll_write_out(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending if self.queued < room => Poll::Ready(Ok(())),
            Poll::Pending => self.poll_stall(cx),
        }
    }

    /// Queues one binary frame. Call only after [`poll_room`](Self::poll_room) was ready;
    /// the frame goes out at the latest with the next [`poll_flush`](Self::poll_flush).
    pub(crate) fn feed(&mut self, frame: Bytes) -> Result<(), WriteFailed> {
        if self.close_sent {
            return Err(closing());
        }
        self.queue(Opcode::Binary, frame);
        Ok(())
    }

    /// Queues a ping: a live peer answers it (unread answers cost nothing here), a peer
    /// that is gone makes a later write fail, so a connection that is not being read
    /// notices a client that left. Call only after [`poll_room`](Self::poll_room) was
    /// ready.
    pub(crate) fn probe(&mut self) -> Result<(), WriteFailed> {
        if self.close_sent {
            return Err(closing());
        }
        self.queue(Opcode::Ping, Bytes::new());
        Ok(())
    }

    /// Queues a frame: its header, then its payload (masked by a client, copied if short).
    fn queue(&mut self, opcode: Opcode, payload: Bytes) {
        let len = payload.len();
        let mask = self.masks.as_mut().map(|keys| keys.next_key());
        let head = Header::len_for(len, mask.is_some());
        self.queued += head + len;
        if mask.is_none() && self.vectored {
            if len >= ZERO_COPY_MIN {
                Header::write(opcode, len, None, &mut self.tail);
                self.out.push_back(self.tail.split().freeze());
                self.out.push_back(payload);
                return;
            }
            if self.tail.capacity() - self.tail.len() < head + len && !self.tail.is_empty() {
                // A full copy buffer leaves as a slice of its own, and the copies go on in a
                // new one: growing it would double it and copy what it holds, so the
                // queue's memory would reach twice what it holds.
                self.out.push_back(self.tail.split().freeze());
                self.tail = BytesMut::with_capacity((head + len).max(COPY_CHUNK));
            }
        }
        self.tail.reserve(head + len);
        Header::write(opcode, len, mask, &mut self.tail);
        let start = self.tail.len();
        self.tail.extend_from_slice(&payload);
        if let Some(key) = mask {
            apply_mask(&mut self.tail[start..], key);
        }
    }

    /// Writes out what was fed (nothing to do if nothing was). Pending while the peer does
    /// not read; fails once that lasted the write timeout without progress.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WriteFailed>> {
        if !self.is_unflushed() {
            return Poll::Ready(Ok(()));
        }
        match self.poll_write_out(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(failed)) => return Poll::Ready(Err(failed)),
            Poll::Pending => return self.poll_stall(cx),
        }
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(result) => {
                self.io_unflushed = false;
                self.stalled = false;
                Poll::Ready(result.map_err(WriteFailed::Failed))
            }
            Poll::Pending => self.poll_stall(cx),
        }
    }

    /// Writes the queue (the answer to a ping first) until it is empty: `Ready` then, or
    /// when writing failed; `Pending` when the socket takes no more for now.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WriteFailed>> {
        if let Some(ping) = self.pong.take()
            && !self.close_sent
        {
            self.queue(Opcode::Pong, ping);
        }
        while self.queued > 0 {
            let written = if self.out.is_empty() {
                // Everything copied into one buffer (always so for a client): no slices.
                Pin::new(&mut self.io).poll_write(cx, &self.tail)
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                for (slot, chunk) in slices.iter_mut().zip(self.out.iter()) {
                    *slot = IoSlice::new(chunk);
                    count += 1;
                }
                if count < MAX_SLICES && !self.tail.is_empty() {
                    slices[count] = IoSlice::new(&self.tail);
                    count += 1;
                }
                Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count])
            };
            let written = match written {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(WriteFailed::Failed(io::ErrorKind::WriteZero.into())));
                }
                Poll::Ready(Ok(written)) => written,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(WriteFailed::Failed(error))),
                Poll::Pending => {
                    self.keeping_up = false;
                    return Poll::Pending;
                }
            };
            // Progress: a later wait is timed from its own start.
            self.stalled = false;
            self.io_unflushed = true;
            self.consume(written);
        }
        self.keeping_up = true;
        // Written empty: the buffers go, so a quiet connection holds none.
        if !self.keep_buffers || self.tail.capacity() > WRITE_ROOM {
            self.tail = BytesMut::new();
        } else {
            self.tail.clear();
        }
        if self.out.capacity() > 8 {
            self.out = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Drops `written` bytes from the front of the queue.
    fn consume(&mut self, mut written: usize) {
        self.queued -= written;
        while written > 0 {
            match self.out.front_mut() {
                Some(chunk) if chunk.len() <= written => {
                    written -= chunk.len();
                    self.out.pop_front();
                }
                Some(chunk) => {
                    chunk.advance(written);
                    return;
                }
                None => {
                    self.tail.advance(written);
                    return;
                }
            }
        }
    }

    /// Whether fed frames (or the answer to a ping) wait to be written.
    pub(crate) fn is_unflushed(&self) -> bool {
        self.queued > 0 || self.io_unflushed || (self.pong.is_some() && !self.close_sent)
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

    /// Reads the next item (the client's handshake reads its first message this way).
    pub(crate) async fn next(&mut self) -> Incoming {
        poll_fn(|cx| self.poll_read(cx)).await
    }

    /// The closing handshake, when this side closes: writes what was fed, then `frame`,
    /// then waits (at most `close_timeout`) for the peer's answer, and returns when the
    /// socket may be dropped.
    ///
    /// Closing a socket that still holds unread data makes the kernel send a reset, and a
    /// reset can destroy the last replies and the close frame still on their way. So after
    /// the close frame everything the peer still sends is read and dropped until its answer
    /// or the end of the stream; when a frame cannot be read past (such as an oversized
    /// one), the rest is read raw, after a FIN of ours, until the peer closes its end.
    pub(crate) async fn close(mut self, frame: CloseFrame, close_timeout: Duration) {
        if !self.close_sent {
            let mut payload = BytesMut::with_capacity(2 + frame.reason.len());
            payload.extend_from_slice(&u16::from(frame.code).to_be_bytes());
            payload.extend_from_slice(frame.reason.as_bytes());
            self.queue(Opcode::Close, payload.freeze());
            self.close_sent = true;
        }
        let write_timeout = self.write_timeout;
        let goodbye = poll_fn(|cx| self.poll_flush(cx));
        match tokio::time::timeout(write_timeout, goodbye).await {
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
                match self.next().await {
                    Incoming::Closed(_) | Incoming::Gone => return,
                    Incoming::Frame(_) | Incoming::Alive => {}
                    Incoming::Violation(..) => break,
                }
            }
            if self.io.shutdown().await.is_err() {
                return;
            }
            let mut discard = vec![0; 4096];
            while matches!(self.io.read(&mut discard).await, Ok(read) if read > 0) {}
        };
        let _ = tokio::time::timeout(close_timeout, drain).await;
    }

    /// The end of a connection this side does not close with a frame of its own (the peer
    /// closed first, or is gone): what is still queued, such as the answer to the peer's
    /// close frame, goes out if the socket takes it at once, without waiting for a peer
    /// that may never read again.
    pub(crate) fn finish(mut self) {
        let _ = poll_fn(|cx| self.poll_flush(cx)).now_or_never();
    }
}

fn violation(bad: BadHeader) -> Incoming {
    protocol_violation(match bad {
        BadHeader::ReservedBits => "reserved bits set",
        BadHeader::UnknownOpcode => "unknown opcode",
        BadHeader::BadControl => "a fragmented or long control frame",
        BadHeader::BadLength => "a frame length over 2^63",
    })
}

fn protocol_violation(what: &'static str) -> Incoming {
    tracing::debug!(what, "WebSocket protocol violation");
    Incoming::Violation(CloseCode::Protocol, "WebSocket protocol violation")
}

fn closing() -> WriteFailed {
    WriteFailed::Failed(io::Error::new(
        io::ErrorKind::NotConnected,
        "the WebSocket is closing",
    ))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::transport::frame::Header;

    const LIMIT: usize = 1 << 16;

    fn server(io: DuplexStream) -> Socket<DuplexStream> {
        Socket::new(
            io,
            BytesMut::new(),
            Role::Server,
            LIMIT,
            Duration::from_secs(60),
        )
    }

    /// A frame as a client sends it: masked.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x11, 0x22, 0x33, 0x44];
        let mut out = Vec::new();
        Header::write(Opcode::Binary, payload.len(), Some(key), &mut out);
        out[0] = first;
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], key);
        out
    }

    async fn read(socket: &mut Socket<DuplexStream>) -> Incoming {
        tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("an item within 5 s")
    }

    /// Reads what the socket wrote, once it has flushed it.
    async fn written(socket: &mut Socket<DuplexStream>, peer: &mut DuplexStream) -> Vec<u8> {
        poll_fn(|cx| socket.poll_flush(cx)).await.expect("flushed");
        let mut out = vec![0; 64 * 1024];
        let read = peer.read(&mut out).await.expect("read");
        out.truncate(read);
        out
    }

    fn violation_code(incoming: Incoming) -> Option<CloseCode> {
        match incoming {
            Incoming::Violation(code, _) => Some(code),
            _ => None,
        }
    }

    #[tokio::test]
    async fn assembles_fragments_around_a_ping_and_answers_the_ping() {
        let (ours, mut peer) = tokio::io::duplex(64 * 1024);
        let mut socket = server(ours);
        let mut sent = client_frame(0x02, b"hel"); // binary, not final
        sent.extend(client_frame(0x89, b"p")); // a ping between the fragments
        sent.extend(client_frame(0x00, b"lo ")); // continuation
        sent.extend(client_frame(0x80, b"you")); // final continuation
        peer.write_all(&sent).await.unwrap();
        assert!(matches!(read(&mut socket).await, Incoming::Alive));
        match read(&mut socket).await {
            Incoming::Frame(message) => assert_eq!(&message[..], b"hello you"),
            other => panic!("expected the assembled message, got {other:?}"),
        }
        // The pong carries the ping's payload, unmasked.
        assert_eq!(written(&mut socket, &mut peer).await, b"\x8a\x01p");
    }

    #[tokio::test]
    async fn a_message_split_across_reads_is_one_message() {
        let (ours, mut peer) = tokio::io::duplex(64 * 1024);
        let mut socket = server(ours);
        let payload: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let sent = client_frame(0x82, &payload);
        let writer = tokio::spawn(async move {
            for piece in sent.chunks(333) {
                peer.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            peer
        });
        match read(&mut socket).await {
            Incoming::Frame(message) => assert_eq!(&message[..], &payload[..]),
            other => panic!("expected the message, got {other:?}"),
        }
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn every_violation_gets_its_close_code() {
        let cases: [(&str, Vec<u8>, CloseCode); 9] = [
            ("text", client_frame(0x81, b"hi"), CloseCode::Unsupported),
            ("unmasked", vec![0x82, 0x01, 0x00], CloseCode::Protocol),
            (
                "reserved bit",
                client_frame(0xC2, b"x"),
                CloseCode::Protocol,
            ),
            (
                "unknown opcode",
                client_frame(0x83, b"x"),
                CloseCode::Protocol,
            ),
            (
                "continuation first",
                client_frame(0x80, b"x"),
                CloseCode::Protocol,
            ),
            (
                "message inside a message",
                [client_frame(0x02, b"a"), client_frame(0x82, b"b")].concat(),
                CloseCode::Protocol,
            ),
            (
                "too large",
                client_frame(0x82, &vec![0; LIMIT + 1]),
                CloseCode::Size,
            ),
            (
                "too large in fragments",
                [
                    client_frame(0x02, &vec![0; LIMIT]),
                    client_frame(0x80, b"x"),
                ]
                .concat(),
                CloseCode::Size,
            ),
            (
                "close of one byte",
                client_frame(0x88, b"\x03"),
                CloseCode::Protocol,
            ),
        ];
        for (what, sent, code) in cases {
            let (ours, mut peer) = tokio::io::duplex(256 * 1024);
            let mut socket = server(ours);
            peer.write_all(&sent).await.unwrap();
            assert_eq!(
                violation_code(read(&mut socket).await),
                Some(code),
                "{what}"
            );
        }
    }

    #[tokio::test]
    async fn a_close_is_checked_and_answered_with_its_code() {
        // 1005 may not be sent; a reason that is not UTF-8 is 1007.
        for (payload, code) in [
            (&b"\x03\xed"[..], CloseCode::Protocol),
            (b"\x03\xe8\xff", CloseCode::Invalid),
        ] {
            let (ours, mut peer) = tokio::io::duplex(1024);
            let mut socket = server(ours);
            peer.write_all(&client_frame(0x88, payload)).await.unwrap();
            assert_eq!(violation_code(read(&mut socket).await), Some(code));
        }
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut socket = server(ours);
        peer.write_all(&client_frame(0x88, b"\x03\xe8bye"))
            .await
            .unwrap();
        match read(&mut socket).await {
            Incoming::Closed(Some(frame)) => {
                assert_eq!(
                    (frame.code, frame.reason.as_str()),
                    (CloseCode::Normal, "bye")
                );
            }
            other => panic!("expected the close, got {other:?}"),
        }
        assert!(
            socket.feed(Bytes::from_static(b"late")).is_err(),
            "nothing after the close"
        );
        // Answered with the code only.
        assert_eq!(written(&mut socket, &mut peer).await, b"\x88\x02\x03\xe8");
    }

    /// Short frames are copied, long ones written from their own buffer: the peer reads
    /// them all, in order, with correct headers.
    #[tokio::test]
    async fn writes_short_and_long_frames_in_order() {
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let mut socket = server(ours);
        let frames: Vec<Bytes> = [10, 5000, 3, 70_000, 200]
            .iter()
            .map(|&len| Bytes::from(vec![len as u8; len]))
            .collect();
        for frame in &frames {
            poll_fn(|cx| socket.poll_room(cx)).await.expect("room");
            socket.feed(frame.clone()).expect("fed");
        }
        poll_fn(|cx| socket.poll_flush(cx)).await.expect("flushed");
        let mut got = Vec::new();
        while got.len() < frames.iter().map(|f| f.len() + 10).sum::<usize>() {
            let mut chunk = vec![0; 64 * 1024];
            let read = peer.read(&mut chunk).await.unwrap();
            if read == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..read]);
            if let Some(rest) = parse_all(&got, frames.len()) {
                assert_eq!(rest, frames);
                return;
            }
        }
        panic!("the frames did not all arrive");
    }

    /// Splits `bytes` into `count` unmasked binary frames' payloads, if all are there.
    fn parse_all(mut bytes: &[u8], count: usize) -> Option<Vec<Bytes>> {
        let mut out = Vec::new();
        while out.len() < count {
            let (header, at) = Header::read(bytes).ok()??;
            assert_eq!((header.opcode, header.mask), (Opcode::Binary, None));
            let end = at + header.len as usize;
            out.push(Bytes::copy_from_slice(bytes.get(at..end)?));
            bytes = &bytes[end..];
        }
        Some(out)
    }

    /// Messages of the largest size back to back (each a few bytes more than a chunk on
    /// the wire): each is read into an allocation of about its own size, which is what a
    /// handler holding the message keeps, not a chunk more.
    #[tokio::test]
    async fn a_message_that_straddles_chunks_keeps_no_more_than_its_size() {
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let mut socket = Socket::new(
            ours,
            BytesMut::new(),
            Role::Server,
            8192,
            Duration::from_secs(60),
        );
        let burst: Vec<u8> = (0..8)
            .flat_map(|_| client_frame(0x82, &[7; 8192]))
            .collect();
        peer.write_all(&burst).await.unwrap();
        let mut held = Vec::new();
        for _ in 0..8 {
            let Incoming::Frame(message) = read(&mut socket).await else {
                panic!("expected a message");
            };
            held.push(message);
        }
        // With the socket's own handles gone, what a message keeps is its allocation from
        // where it starts: a message that is the only user of it can say how large.
        drop(socket);
        let mut checked = 0;
        for (at, message) in held.into_iter().enumerate().skip(1) {
            let Ok(alone) = message.try_into_mut() else {
                continue;
            };
            checked += 1;
            assert!(
                alone.capacity() <= 8192 + MAX_HEADER_LEN,
                "message {at} keeps {} bytes",
                alone.capacity()
            );
        }
        assert!(
            checked >= 4,
            "only {checked} messages were alone in their allocation"
        );
    }

    /// While the peer keeps up, frames wait until the batch is full and leave together; a
    /// smaller batch writes sooner. Once a write finds the peer not reading, the room is
    /// at most `WRITE_ROOM`.
    #[tokio::test]
    async fn the_batch_decides_when_frames_leave() {
        // 40 frames of 1 002 bytes: 40 080 bytes, between the two batches.
        for (batch, writes_at_40k) in [(64 * 1024, false), (16 * 1024, true)] {
            let (ours, _peer) = tokio::io::duplex(1 << 20);
            let mut socket = server(ours).batch(batch);
            for _ in 0..40 {
                poll_fn(|cx| socket.poll_room(cx)).await.expect("room");
                socket.feed(Bytes::from(vec![1; 1000])).expect("fed");
            }
            let written = socket.queued < 40 * 1002;
            assert_eq!(
                written, writes_at_40k,
                "batch {batch}: {} queued",
                socket.queued
            );
        }
        // A peer that takes nothing: the room falls back to `WRITE_ROOM`.
        let (ours, _peer) = tokio::io::duplex(1024);
        let mut socket = server(ours).batch(64 * 1024);
        socket.feed(Bytes::from(vec![1; 4096])).expect("fed");
        let waited = poll_fn(|cx| Poll::Ready(socket.poll_flush(cx).is_pending())).await;
        assert!(waited && !socket.keeping_up);
        socket.feed(Bytes::from(vec![1; WRITE_ROOM])).expect("fed");
        let room = poll_fn(|cx| Poll::Ready(socket.poll_room(cx).is_pending())).await;
        assert!(
            room,
            "no room beyond WRITE_ROOM for a peer that does not read"
        );
    }

    /// Short frames are copied into buffers of at most `COPY_CHUNK` (a full one leaves as a
    /// slice of its own), not into one buffer that doubles as it grows: what waits holds
    /// about what it is, and the peer still gets every frame, in order.
    #[tokio::test]
    async fn copies_fill_chunks_instead_of_doubling_one_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bound");
        let addr = listener.local_addr().expect("an address");
        let (ours, peer) = tokio::join!(listener.accept(), tokio::net::TcpStream::connect(addr));
        let (ours, mut peer) = (ours.expect("accepted").0, peer.expect("connected"));
        let mut socket = Socket::new(
            ours,
            BytesMut::new(),
            Role::Server,
            LIMIT,
            Duration::from_secs(10),
        )
        .batch(64 * 1024);
        assert!(socket.vectored, "a TCP stream takes vectored writes");
        let frame = Header::len_for(1000, false) + 1000;
        for n in 0..40u8 {
            poll_fn(|cx| socket.poll_room(cx)).await.expect("room");
            socket.feed(Bytes::from(vec![n; 1000])).expect("fed");
        }
        // All 40 wait (below the batch), in full buffers and one being filled.
        assert_eq!(socket.queued, 40 * frame);
        assert!(
            socket.tail.capacity() <= COPY_CHUNK,
            "the copy buffer grew to {} bytes",
            socket.tail.capacity()
        );
        assert!(
            socket.out.len() >= 40 * frame / COPY_CHUNK,
            "full buffers wait as slices"
        );
        poll_fn(|cx| socket.poll_flush(cx)).await.expect("flushed");
        let mut got = vec![0; 40 * frame];
        peer.read_exact(&mut got).await.expect("every frame");
        for (n, frame) in got.chunks(frame).enumerate() {
            assert_eq!(frame[0], 0x82, "frame {n}: a final binary frame");
            assert!(
                frame[4..].iter().all(|&b| usize::from(b) == n),
                "frame {n} in its place"
            );
        }
    }

    /// A connection that has gone quiet holds no buffer: what a burst took comes back.
    #[tokio::test]
    async fn a_quiet_socket_gives_its_buffers_back() {
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let mut socket = server(ours);
        let burst: Vec<u8> = (0..32)
            .flat_map(|_| client_frame(0x82, &[7; 4096]))
            .collect();
        peer.write_all(&burst).await.unwrap();
        for _ in 0..32 {
            let Incoming::Frame(message) = read(&mut socket).await else {
                panic!("expected a message");
            };
            poll_fn(|cx| socket.poll_room(cx)).await.expect("room");
            socket.feed(message).expect("fed");
        }
        let _ = written(&mut socket, &mut peer).await;
        // Nothing more to read: the read that finds nothing lets the chunks go.
        let nothing = poll_fn(|cx| Poll::Ready(socket.poll_read(cx).is_pending())).await;
        assert!(nothing);
        assert_eq!(socket.read.capacity() + socket.spare.capacity(), 0);
        assert_eq!(
            (socket.tail.capacity(), socket.out.capacity(), socket.queued),
            (0, 0, 0)
        );
    }

    /// A peer that reads slowly but steadily is not cut off, however long writing all
    /// takes; one that reads nothing is, after the write timeout.
    #[tokio::test(start_paused = true)]
    async fn the_write_timeout_measures_a_lack_of_progress() {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut socket = Socket::new(
            ours,
            BytesMut::new(),
            Role::Server,
            LIMIT,
            Duration::from_secs(1),
        );
        socket.feed(Bytes::from(vec![1; 60_000])).expect("fed");
        let reader = tokio::spawn(async move {
            let mut chunk = [0; 1024];
            let mut total = 0;
            // 1 KiB every 100 ms: about 6 s for everything, with a 1 s write timeout.
            while total < 60_000 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                total += peer.read(&mut chunk).await.unwrap();
            }
            peer
        });
        poll_fn(|cx| socket.poll_flush(cx))
            .await
            .expect("a steady reader is kept");
        let _peer = reader.await.unwrap();
        socket.feed(Bytes::from(vec![1; 60_000])).expect("fed");
        let stalled = poll_fn(|cx| socket.poll_flush(cx)).await;
        assert!(matches!(stalled, Err(WriteFailed::TimedOut)), "{stalled:?}");
    }

    /// A stream that buffers what it is given and sends it only when flushed, as a TLS
    /// stream does (tokio-rustls's `poll_write` takes plaintext into the session when
    /// the TCP socket is full; only `poll_flush` pushes it out).
    #[derive(Default)]
    struct Tlsish {
        buffered: Vec<u8>,
        delivered: Vec<u8>,
        /// Calls of `poll_flush` still to answer Pending (the TCP socket is full).
        flush_pending: usize,
        /// Calls of `poll_write` still to answer Pending.
        write_pending: usize,
    }

    impl AsyncRead for Tlsish {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Tlsish {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.write_pending > 0 {
                this.write_pending -= 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.buffered.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if this.flush_pending > 0 {
                this.flush_pending -= 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let sent = std::mem::take(&mut this.buffered);
            this.delivered.extend_from_slice(&sent);
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn tlsish(write_timeout: Duration) -> Socket<Tlsish> {
        let io = Tlsish {
            flush_pending: 1,
            ..Tlsish::default()
        };
        Socket::new(io, BytesMut::new(), Role::Server, LIMIT, write_timeout)
    }

    /// A flush the stream could not finish at once is asked again until it is done:
    /// a reply must not stay in the TLS session's buffer once the socket has room again.
    #[tokio::test]
    async fn a_pending_stream_flush_is_retried() {
        let mut socket = tlsish(Duration::from_secs(60));
        socket.feed(Bytes::from_static(b"reply")).expect("fed");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(
            socket.poll_flush(&mut cx).is_pending(),
            "the TCP socket is full"
        );
        // The driver is woken (room again) and flushes again, as both drivers do.
        let flushed = socket.poll_flush(&mut cx);
        assert!(matches!(flushed, Poll::Ready(Ok(()))), "{flushed:?}");
        assert_eq!(
            socket.io.delivered, b"\x82\x05reply",
            "poll_flush said Ready but the reply is still buffered in the stream"
        );
    }

    /// A wait that ended (the flush said Ready) does not leave the write timeout
    /// armed from its start: the next write that waits is timed from its own start.
    #[tokio::test(start_paused = true)]
    async fn a_finished_flush_does_not_leave_the_write_timeout_armed() {
        let mut socket = tlsish(Duration::from_secs(1));
        socket.feed(Bytes::from_static(b"reply")).expect("fed");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(socket.poll_flush(&mut cx).is_pending());
        assert!(socket.poll_flush(&mut cx).is_ready());
        // Much later, one write has to wait for a moment.
        tokio::time::advance(Duration::from_secs(30)).await;
        socket.io.write_pending = 1;
        socket.feed(Bytes::from_static(b"next")).expect("fed");
        let first = socket.poll_flush(&mut cx);
        assert!(
            first.is_pending(),
            "a write that has waited 0 s failed: {first:?}"
        );
    }
}
