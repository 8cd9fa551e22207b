//! [`Outbox`]: how frames and finished handlers reach a connection's driver from other
//! tasks.
//!
//! A mutex around a queue and the driver's waker, rather than an mpsc channel: an mpsc
//! allocates its first block of slots (over a kilobyte here) when it is made, for every
//! connection, idle or not, while this queue allocates only when something is queued. The
//! driver takes everything queued in one step (one lock per batch, not per frame), and a
//! sender wakes the driver only when it is waiting. Bounded by its users, not by itself:
//! signals hold a permit of the connection's room, and each handler permit sends one `Done`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::payload::Payload;
use crate::protocol::{IntoName, Message, ProtocolError};
use crate::sync;

/// What reaches a connection's driver from other tasks, through its outbox.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A frame that holds the connection's room until it is written: a signal, a
    /// publication, a session notification.
    Metered(Bytes),
    /// A frame bounded by something else than the room: the reply of a handler that
    /// finished when it was first polled (bounded by the handler permits), queued behind
    /// frames that were already waiting so that it does not overtake them; a publication
    /// a resume replays (bounded by its history).
    Unmetered(Bytes),
    /// A handler that ran on its own task ended, so its permit is back; with its reply when
    /// it answered a request.
    Done(Option<Bytes>),
}

/// The queue into a connection's driver.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Something is queued: lets the driver ask without taking the lock.
    queued: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Outbound>,
    /// The driver's waker while it waits for the queue.
    waker: Option<Waker>,
    /// The driver is gone: nothing is accepted any more.
    closed: bool,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section is a few field operations: a panic cannot leave one half
        // done.
        sync::lock(&self.state)
    }

    /// Queues `item` and wakes the driver if it waits; gives `item` back once the driver
    /// is gone.
    pub(crate) fn push(&self, item: Outbound) -> Result<(), Outbound> {
        let waker = {
            let mut state = self.lock();
            if state.closed {
                return Err(item);
            }
            state.queue.push_back(item);
            self.queued.store(true, Ordering::Release);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Moves everything queued to the end of `into`; `Pending` (and the driver is woken by
    /// the next push) when nothing is queued.
    pub(crate) fn poll_take(
        &self,
        into: &mut VecDeque<Outbound>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let mut state = self.lock();
        if state.queue.is_empty() {
            match &mut state.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        move_all(&mut state.queue, into);
        self.queued.store(false, Ordering::Release);
        Poll::Ready(())
    }

    /// Moves everything queued to the end of `into`, without waiting.
    pub(crate) fn take(&self, into: &mut VecDeque<Outbound>) {
        let mut state = self.lock();
        move_all(&mut state.queue, into);
        self.queued.store(false, Ordering::Release);
    }

    /// Whether something is queued (a hint: it may be taken or queued right after).
    pub(crate) fn has_queued(&self) -> bool {
        self.queued.load(Ordering::Acquire)
    }

    /// The driver is gone: refuses everything from now on and drops what is queued.
    pub(crate) fn close(&self) {
        let queued = {
            let mut state = self.lock();
            state.closed = true;
            state.waker = None;
            std::mem::take(&mut state.queue)
        };
        self.queued.store(false, Ordering::Release);
        drop(queued);
    }
}

/// Moves everything in `from` to the end of `into`. Into an empty `into` the two swap
/// storage instead, so that a burst's allocation moves on with it (to be dropped once the
/// driver has taken it empty, [`taken_one`]) rather than staying with the queue.
fn move_all(from: &mut VecDeque<Outbound>, into: &mut VecDeque<Outbound>) {
    if into.is_empty() {
        std::mem::swap(from, into);
    } else {
        into.append(from);
    }
}

/// Storage for this many items stays with an emptied queue; a burst's larger one goes.
const KEPT_CAPACITY: usize = 8;

/// Pops the front of `taken`, and drops its storage once it is empty after a burst, so a
/// connection that has gone quiet holds no more than [`KEPT_CAPACITY`] items' room.
pub(crate) fn taken_one(taken: &mut VecDeque<Outbound>) -> Option<Outbound> {
    let item = taken.pop_front();
    if taken.is_empty() && taken.capacity() > KEPT_CAPACITY {
        *taken = VecDeque::new();
    }
    item
}

/// Why [`Connection::signal`](crate::server::Connection::signal) could not send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closed (or closing): nothing more can be sent on it.
    #[error("the connection is closed")]
    Closed,
    /// The outbound queue is full ([`Connection::try_signal`](crate::server::Connection::try_signal) only).
    #[error("the connection's outbound queue is full")]
    QueueFull,
    /// The encoded message would exceed the server's message size limit, which clients
    /// also use as theirs.
    #[error("the message is {len} bytes, over the limit of {limit}")]
    TooLarge {
        /// The encoded length.
        len: usize,
        /// The server's `max_message_size`.
        limit: usize,
    },
    /// The name or payload cannot be sent (an invalid name, an odd-length UTF-16 payload, a
    /// signal with neither name nor payload, ...).
    #[error(transparent)]
    Invalid(#[from] ProtocolError),
    /// The value of a contract signal ([`Connection::emit`](crate::server::Connection::emit)) cannot be written as JSON.
    #[error("the signal cannot be written as JSON: {reason}")]
    Json {
        /// What serde_json said.
        reason: String,
    },
}

/// The signal `name` with `payload`, encoded, unless the encoder refuses it or it is over
/// `limit` bytes (the server's message size limit, which clients use as theirs). One
/// check for a signal to one connection and for a publish to many.
pub(crate) fn encode_signal(
    name: impl IntoName,
    payload: Payload,
    limit: usize,
) -> Result<Bytes, SendError> {
    let frame = Message::signal(name.into_name()?, payload).encode()?;
    if frame.len() > limit {
        return Err(SendError::TooLarge {
            len: frame.len(),
            limit,
        });
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_push_wakes_a_waiting_driver_once_and_the_driver_takes_all() {
        let outbox = Outbox::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut taken = VecDeque::new();
        assert!(outbox.poll_take(&mut taken, &mut cx).is_pending());
        outbox.push(Outbound::Done(None)).unwrap();
        outbox
            .push(Outbound::Unmetered(Bytes::from_static(b"x")))
            .unwrap();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "woken by the first push only"
        );
        assert!(outbox.has_queued());
        assert!(outbox.poll_take(&mut taken, &mut cx).is_ready());
        assert_eq!(taken.len(), 2);
        assert!(!outbox.has_queued());
        assert!(outbox.poll_take(&mut taken, &mut cx).is_pending());
    }

    #[test]
    fn a_closed_outbox_refuses_and_forgets() {
        let outbox = Outbox::default();
        outbox.push(Outbound::Done(None)).unwrap();
        outbox.close();
        assert!(outbox.push(Outbound::Done(None)).is_err());
        let waker = Waker::noop();
        let mut taken = VecDeque::new();
        assert!(
            outbox
                .poll_take(&mut taken, &mut Context::from_waker(waker))
                .is_pending()
        );
        assert!(taken.is_empty());
    }
}
