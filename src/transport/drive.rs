//! The loop both drivers share (the server's connection driver and the client's): how much
//! one wake-up does, feeding frames while the socket has room, the closing flag other
//! tasks raise, and how a failed write is reported. What each driver does in a round
//! (dispatching jobs, completing requests) stays with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Socket, WriteFailed};

/// Messages read between two flushes: a long pipelined burst still gets its answers (the
/// server's replies, the client's queued requests) out regularly.
pub(crate) const MAX_READS: usize = 64;

/// Rounds (write what is queued, read, flush) in one wake-up before a driver yields to the
/// other tasks of its worker (hyper's dispatcher bounds its loop the same way), so one busy
/// connection cannot starve the others.
pub(crate) const MAX_ROUNDS: usize = 16;

/// What one round of a driver did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    /// Something happened: go round again.
    Progress,
    /// Nothing to do until a waker fires.
    Idle,
    /// Stop here and let other tasks run; `busy` if the driver must come back at once.
    Yield { busy: bool },
}

/// Runs `round` until it is idle or yields, [`MAX_ROUNDS`] times at most. Returns whether
/// the driver is still busy; the caller then wakes its own task before it returns
/// `Pending`, so that the worker's other tasks run before it goes on.
pub(crate) fn rounds<E>(mut round: impl FnMut() -> Result<Round, E>) -> Result<bool, E> {
    for _ in 0..MAX_ROUNDS {
        match round()? {
            Round::Progress => {}
            Round::Idle => return Ok(false),
            Round::Yield { busy } => return Ok(busy),
        }
    }
    Ok(true)
}

/// What [`feed_while_room`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fed {
    /// Items taken from the source (some carry no frame).
    pub(crate) taken: usize,
    /// Frames fed to the socket.
    pub(crate) frames: usize,
    /// It stopped because the socket has no room (rather than because the source is
    /// empty); either way a waker is registered for what it waits on.
    pub(crate) full: bool,
}

/// Feeds frames from `next` while the socket has room. `next` gives `Ready(Some(frame))`
/// to write, `Ready(None)` for an item without a frame, and `Pending` once it is empty
/// (having registered the waker).
pub(crate) fn feed_while_room<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut Socket<S>,
    cx: &mut Context<'_>,
    mut next: impl FnMut(&mut Context<'_>) -> Poll<Option<Bytes>>,
) -> Result<Fed, WriteFailed> {
    let mut fed = Fed::default();
    loop {
        if socket.poll_room(cx)?.is_pending() {
            fed.full = true;
            return Ok(fed);
        }
        let Poll::Ready(item) = next(cx) else {
            return Ok(fed);
        };
        fed.taken += 1;
        if let Some(frame) = item {
            fed.frames += 1;
            socket.feed(frame)?;
        }
    }
}

impl WriteFailed {
    /// Says in the debug log why the connection's writes ended.
    pub(crate) fn log(&self) {
        match self {
            WriteFailed::TimedOut => tracing::debug!("the peer stopped reading: write timed out"),
            WriteFailed::Failed(error) => tracing::debug!(%error, "write failed"),
        }
    }
}

/// A driver's closing flag: raised once, by any task, and the driver woken to act on it.
/// An atomic flag because the driver reads it on every wake-up.
#[derive(Debug, Default)]
pub(crate) struct Closing {
    raised: AtomicBool,
    driver: AtomicWaker,
}

impl Closing {
    /// Raises the flag; true for the call that raised it. The driver is not woken yet:
    /// [`wake`](Self::wake) once what it must find is in place.
    pub(crate) fn raise(&self) -> bool {
        !self.raised.swap(true, Ordering::AcqRel)
    }

    /// Whether the flag is raised.
    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Wakes the driver, if one registered.
    pub(crate) fn wake(&self) {
        self.driver.wake();
    }

    /// The driver's waker, for [`wake`](Self::wake).
    pub(crate) fn register(&self, waker: &Waker) {
        self.driver.register(waker);
    }

    /// Forgets the driver's waker (it has ended).
    pub(crate) fn forget(&self) {
        drop(self.driver.take());
    }
}
