//! The queue of encoded frames between a client's handles and its connection's driver.
//!
//! A `std` mutex around a `VecDeque`, held for one push or one take, never across an
//! await. The driver takes everything queued at once (a swap, one lock per batch), and a
//! push wakes it only when it found the queue empty and said so: a burst of requests
//! costs one wake-up, not one each. Room is counted in frames, from the push until the
//! driver has fed the frame to its socket, so at most `capacity` frames wait outside
//! the socket's own buffer. Senders that find no room wait on a [`Notify`], told when
//! the driver frees room in a full queue.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::Waker;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use crate::sync::lock;

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct FrameQueue {
    state: Mutex<State>,
    /// The driver, woken by a push after it found the queue empty.
    driver: AtomicWaker,
    /// Senders waiting for room.
    room: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Bytes>,
    /// Frames pushed (or room reserved for them) and not yet fed to the socket.
    held: usize,
    /// The driver found the queue empty: the next push wakes it.
    driver_waits: bool,
    /// Senders waiting for room: while there are any, room freed is theirs (a push
    /// without waiting is refused), so that a steady stream of pushes cannot starve them.
    waiters: usize,
    /// The connection ended: nothing more is taken.
    closed: bool,
}

/// A sender of [`FrameQueue::reserve`] counted among the waiters; uncounted when dropped.
struct Waiting<'a> {
    queue: &'a FrameQueue,
    counted: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.counted {
            lock(&self.queue.state).waiters -= 1;
        }
    }
}

/// Why a frame was handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue is full.
    Full,
    /// The connection ended.
    Closed,
}

impl FrameQueue {
    /// An empty queue for at most `capacity` frames.
    pub(crate) fn new(capacity: usize) -> Self {
        FrameQueue {
            state: Mutex::default(),
            driver: AtomicWaker::new(),
            room: Notify::new(),
            capacity,
        }
    }

    /// Queues `frame` if there is room right now; hands it back otherwise.
    pub(crate) fn try_push(&self, frame: Bytes) -> Result<(), (Bytes, Refused)> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err((frame, Refused::Closed));
        }
        if state.held >= self.capacity || state.waiters > 0 {
            return Err((frame, Refused::Full));
        }
        state.held += 1;
        self.push_locked(state, frame);
        Ok(())
    }

    /// Whether the connection ended (pushes are refused).
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// Waits for room for one frame and takes it; false if the connection ended. Cancel
    /// safe: dropped while waiting, it takes nothing.
    pub(crate) async fn reserve(&self) -> bool {
        // Counted among the waiters from the first look that finds no room until this
        // returns or is dropped.
        let mut waiting = Waiting {
            queue: self,
            counted: false,
        };
        loop {
            // Registered before the look: room freed after the look wakes this.
            let freed = self.room.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut state = lock(&self.state);
                if state.closed {
                    return false;
                }
                if state.held < self.capacity {
                    state.held += 1;
                    if std::mem::take(&mut waiting.counted) {
                        state.waiters -= 1;
                    }
                    return true;
                }
                if !waiting.counted {
                    waiting.counted = true;
                    state.waiters += 1;
                }
            }
            freed.await;
        }
    }

    /// Queues `frame` in room taken by [`reserve`](Self::reserve); hands it back if the
    /// connection ended.
    pub(crate) fn push_reserved(&self, frame: Bytes) -> Result<(), Bytes> {
        let state = lock(&self.state);
        if state.closed {
            return Err(frame);
        }
        self.push_locked(state, frame);
        Ok(())
    }

    fn push_locked(&self, mut state: std::sync::MutexGuard<'_, State>, frame: Bytes) {
        state.frames.push_back(frame);
        let wake = std::mem::take(&mut state.driver_waits);
        drop(state);
        if wake {
            self.driver.wake();
        }
    }

    /// The driver takes every queued frame into `into` (empty); if there is none, `waker`
    /// is woken by the next push. Whether any came.
    pub(crate) fn take(&self, into: &mut VecDeque<Bytes>, waker: &Waker) -> bool {
        let mut state = lock(&self.state);
        if state.frames.is_empty() {
            state.driver_waits = true;
            self.driver.register(waker);
            return false;
        }
        // A swap: both queues keep their capacity.
        std::mem::swap(&mut state.frames, into);
        true
    }

    /// The driver fed `count` taken frames to its socket: room for as many.
    pub(crate) fn fed(&self, count: usize) {
        let was_full = {
            let mut state = lock(&self.state);
            let was_full = state.held >= self.capacity;
            state.held = state.held.saturating_sub(count);
            was_full
        };
        // Only a full queue has senders waiting (they look under the same lock). They
        // all look again; those that find no room wait for the next frames fed.
        if was_full {
            self.room.notify_waiters();
        }
    }

    /// Refuses every push from now on, tells the senders waiting for room, and returns
    /// what was queued.
    pub(crate) fn close(&self) -> VecDeque<Bytes> {
        let frames = {
            let mut state = lock(&self.state);
            state.closed = true;
            std::mem::take(&mut state.frames)
        };
        self.room.notify_waiters();
        frames
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn frames_are_taken_in_order_and_room_comes_back_when_fed() {
        let queue = FrameQueue::new(2);
        queue.try_push(frame(1)).expect("room");
        queue.try_push(frame(2)).expect("room");
        assert_eq!(
            queue.try_push(frame(3)).map_err(|e| e.1),
            Err(Refused::Full)
        );
        let mut taken = VecDeque::new();
        assert!(queue.take(&mut taken, Waker::noop()));
        assert_eq!(taken, [frame(1), frame(2)]);
        // Taken is not fed: still no room.
        assert_eq!(
            queue.try_push(frame(3)).map_err(|e| e.1),
            Err(Refused::Full)
        );
        queue.fed(1);
        queue.try_push(frame(3)).expect("room after a feed");
        assert_eq!(queue.close(), [frame(3)]);
        assert_eq!(
            queue.try_push(frame(4)).map_err(|e| e.1),
            Err(Refused::Closed)
        );
        assert_eq!(queue.push_reserved(frame(5)), Err(frame(5)));
    }

    /// A task that waits for room in `queue` (full), once it waits.
    async fn waiter(queue: &std::sync::Arc<FrameQueue>) -> tokio::task::JoinHandle<bool> {
        let waiting = {
            let queue = std::sync::Arc::clone(queue);
            tokio::spawn(async move { queue.reserve().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        waiting
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_waits_for_room_and_a_close_releases_it() {
        let queue = std::sync::Arc::new(FrameQueue::new(1));
        queue.try_push(frame(1)).expect("room");
        let waiting = waiter(&queue).await;
        queue.fed(1);
        let reserved = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(matches!(reserved, Ok(Ok(true))), "{reserved:?}");

        // Full again (the reservation holds the room): a close tells the next waiter.
        let refused = waiter(&queue).await;
        queue.close();
        let reserved = tokio::time::timeout(Duration::from_secs(1), refused).await;
        assert!(matches!(reserved, Ok(Ok(false))), "{reserved:?}");
    }

    /// Room freed while a sender waits is that sender's: a push that does not wait is
    /// refused meanwhile.
    #[tokio::test(start_paused = true)]
    async fn a_waiting_sender_gets_the_room_before_a_push_that_does_not_wait() {
        let queue = std::sync::Arc::new(FrameQueue::new(1));
        queue.try_push(frame(1)).expect("room");
        let waiting = waiter(&queue).await;
        queue.fed(1);
        assert_eq!(
            queue.try_push(frame(2)).map_err(|e| e.1),
            Err(Refused::Full)
        );
        let reserved = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(matches!(reserved, Ok(Ok(true))), "{reserved:?}");
        assert_eq!(queue.push_reserved(frame(3)), Ok(()));
        // A waiter that gives up is no longer counted.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), queue.reserve()).await;
        assert!(gave_up.is_err());
        queue.fed(1);
        queue.try_push(frame(4)).expect("no waiter left");
    }

    #[test]
    fn a_push_wakes_a_driver_that_found_the_queue_empty_once() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let count = std::sync::Arc::new(Count(0.into()));
        let waker = Waker::from(std::sync::Arc::clone(&count));
        let queue = FrameQueue::new(8);
        let mut taken = VecDeque::new();
        assert!(!queue.take(&mut taken, &waker));
        queue.try_push(frame(1)).expect("room");
        queue.try_push(frame(2)).expect("room");
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
