//! Requests waiting for their reply: a slab of slots indexed by the request id, each
//! entry with its deadline and its completion (the outcome and the requester's waker), and
//! the [`Reply`] future that waits for it and cleans up when dropped.
//!
//! Ids come from one counter per client, so the slot of id `n` is `n % SLOTS`: no hashing,
//! and a requester and the driver completing another request rarely meet on a lock (one
//! `std` mutex per slot, held for one operation, never across an await). An id whose slot
//! is still held by an older request (more than [`SLOTS`] requests in flight, or a very
//! slow one) goes to an overflow map, which is empty otherwise and then costs one atomic
//! load. No channel per request: the outcome is written into the entry and the requester
//! woken, so a request costs one heap allocation here less than a oneshot would.
//!
//! Timeouts are not timers: each entry carries its deadline, and the connection's driver
//! sweeps the slab when the earliest deadline has passed (see [`Pending::sweep`]). The
//! earliest deadline is kept in an atomic that a request lowers only when its own deadline
//! comes first, so a steady stream of requests with the same timeout does not touch it.
//!
//! Over 600 lines (627, 493 before the unit tests): the table itself; the rest is its unit
//! tests, which need its private slab.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::time::Instant;

use crate::Payload;
use crate::client::RequestError;

/// What a request ends in, as delivered by the driver (or by a sweep).
pub(crate) type Outcome = Result<Payload, RequestError>;

/// Slots of the slab; a power of two.
const SLOTS: usize = 256;

/// What a pending request is, which decides what its reply does besides reaching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An application request: the reply goes to the requester, nothing else.
    Request,
    /// RequestRestoreSession sent at this session epoch: a successful reply also becomes
    /// the client's session (a late one only if the epoch is still the same).
    RestoreSession(u64),
    /// RequestCloseSession sent at this session epoch: a successful reply also ends the
    /// client's session (a late one only if the epoch is still the same).
    CloseSession(u64),
}

/// When a request times out: its deadline, and the timeout it reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    /// Nanoseconds since the map's epoch; `u64::MAX` for never.
    at: u64,
    after: Duration,
}

/// A pending request.
#[derive(Debug)]
struct Entry {
    id: u64,
    /// The connection the request was handed to: when it drops, so does the request.
    generation: u64,
    kind: Kind,
    deadline: Deadline,
    state: State,
}

#[derive(Debug)]
enum State {
    /// No outcome yet; the requester's waker, once it has polled.
    Waiting(Option<Waker>),
    /// The requester went away (session requests only): the reply is still applied when
    /// it comes, then the entry goes.
    Abandoned,
    /// The outcome, for the requester to take.
    Done(Outcome),
}

impl Entry {
    /// Delivers `outcome`: returns the waker to wake (after the lock is released), and
    /// whether the entry goes at once (nobody will take the outcome).
    fn finish(&mut self, outcome: Outcome) -> (Option<Waker>, bool) {
        match std::mem::replace(&mut self.state, State::Abandoned) {
            State::Waiting(waker) => {
                self.state = State::Done(outcome);
                (waker, false)
            }
            State::Abandoned => (None, true),
            done @ State::Done(_) => {
                self.state = done;
                (None, false)
            }
        }
    }
}

/// The pending requests of one client, keyed by the `u64` of their [`RequestId`].
///
/// [`RequestId`]: crate::protocol::RequestId
pub(crate) struct Pending {
    slots: Box<[Mutex<Option<Entry>>]>,
    /// Entries whose slot was taken when they were registered.
    overflow: Mutex<HashMap<u64, Entry>>,
    /// `overflow.len()`, read without the lock.
    overflowing: AtomicUsize,
    /// The origin of deadlines in nanoseconds.
    epoch: Instant,
    /// No deadline of an entry is earlier than this (nanoseconds since `epoch`): the driver
    /// sweeps when it has passed. Lowered by [`insert`](Pending::insert), raised by
    /// [`sweep`](Pending::sweep).
    earliest: AtomicU64,
    /// The driver, woken when an insert lowers `earliest`: its sweep timer must move
    /// earlier, and nothing else may wake it (a full socket, say).
    sweeper: AtomicWaker,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
            overflow: Mutex::default(),
            overflowing: AtomicUsize::new(0),
            epoch: Instant::now(),
            earliest: AtomicU64::new(u64::MAX),
            sweeper: AtomicWaker::new(),
        }
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("len", &self.len()).finish()
    }
}

/// Where an entry lives: its slot, or the overflow map.
enum Place<'a> {
    Slot(MutexGuard<'a, Option<Entry>>),
    Overflow(MutexGuard<'a, HashMap<u64, Entry>>),
}

impl Place<'_> {
    fn entry(&mut self, id: u64) -> Option<&mut Entry> {
        match self {
            Place::Slot(slot) => slot.as_mut().filter(|entry| entry.id == id),
            Place::Overflow(map) => map.get_mut(&id),
        }
    }

    fn remove(&mut self, id: u64, pending: &Pending) -> Option<Entry> {
        match self {
            Place::Slot(slot) => slot.take_if(|entry| entry.id == id),
            Place::Overflow(map) => {
                let removed = map.remove(&id);
                pending.overflowing.store(map.len(), Ordering::Release);
                removed
            }
        }
    }
}

impl Pending {
    fn slot(&self, id: u64) -> MutexGuard<'_, Option<Entry>> {
        // The cast keeps the low bits, which is all the mask looks at.
        #[allow(clippy::cast_possible_truncation)]
        let index = id as usize & (SLOTS - 1);
        crate::sync::lock(&self.slots[index])
    }

    /// The place of entry `id`, locked, if it is pending.
    fn find(&self, id: u64) -> Option<Place<'_>> {
        let slot = self.slot(id);
        if slot.as_ref().is_some_and(|entry| entry.id == id) {
            return Some(Place::Slot(slot));
        }
        drop(slot);
        if self.overflowing.load(Ordering::Acquire) == 0 {
            return None;
        }
        let map = crate::sync::lock(&self.overflow);
        map.contains_key(&id).then_some(Place::Overflow(map))
    }

    /// The deadline at `at` (never, for `None`), reported as a timeout of `after`.
    pub(crate) fn deadline_at(&self, at: Option<Instant>, after: Duration) -> Deadline {
        let at = at
            .map(|at| at.saturating_duration_since(self.epoch).as_nanos())
            .and_then(|nanos| u64::try_from(nanos).ok())
            .unwrap_or(u64::MAX);
        Deadline { at, after }
    }

    /// No deadline: the entry goes with its reply or its connection.
    pub(crate) fn never() -> Deadline {
        Deadline {
            at: u64::MAX,
            after: Duration::MAX,
        }
    }

    /// Registers request `id` of `kind` as handed to connection `generation`, timing out
    /// at `deadline`; its outcome comes through the returned [`Reply`].
    pub(crate) fn insert(
        &self,
        id: u64,
        generation: u64,
        kind: Kind,
        deadline: Deadline,
    ) -> Reply<'_> {
        self.insert_waiting(id, generation, kind, deadline, None)
    }

    /// [`insert`](Pending::insert) with the requester's waker registered already: the
    /// reply's first poll, in the same poll of the same task as this call, need not look
    /// at the entry (nothing can have been delivered without waking `waker`).
    pub(crate) fn insert_polled(
        &self,
        (id, generation, kind, deadline): (u64, u64, Kind, Deadline),
        waker: &Waker,
    ) -> Reply<'_> {
        self.insert_waiting(id, generation, kind, deadline, Some(waker))
    }

    fn insert_waiting(
        &self,
        id: u64,
        generation: u64,
        kind: Kind,
        deadline: Deadline,
        waker: Option<&Waker>,
    ) -> Reply<'_> {
        let entry = Entry {
            id,
            generation,
            kind,
            deadline,
            state: State::Waiting(waker.cloned()),
        };
        let mut slot = self.slot(id);
        if slot.is_none() {
            *slot = Some(entry);
        } else {
            drop(slot);
            let mut map = crate::sync::lock(&self.overflow);
            map.insert(id, entry);
            self.overflowing.store(map.len(), Ordering::Release);
        }
        // After the insert: a sweep that resets `earliest` before this lowers it scans the
        // slot after the insert too.
        if deadline.at < self.earliest.load(Ordering::Acquire) {
            self.earliest.fetch_min(deadline.at, Ordering::AcqRel);
            self.sweeper.wake();
        }
        Reply {
            pending: self,
            id,
            kind,
            done: false,
            registered: waker.is_some(),
        }
    }

    /// Delivers `outcome`, the reply to request `id`: `apply` gets the request's kind and
    /// whether the reply is late (its requester gave up: a session request's), and says
    /// what it ends in (a session reply changes the session there, in order). Whether a
    /// requester was still waiting for it; the outcome back when no such request is
    /// pending (a late reply after a timeout, a duplicate, or a pipeline's).
    pub(crate) fn complete(
        &self,
        id: u64,
        outcome: Outcome,
        apply: impl FnOnce(Kind, bool, Outcome) -> Outcome,
    ) -> Result<bool, Outcome> {
        let Some(mut place) = self.find(id) else {
            return Err(outcome);
        };
        let Some(entry) = place.entry(id) else {
            return Err(outcome);
        };
        if matches!(entry.state, State::Done(_)) {
            // A duplicate reply: the first one counts.
            return Err(outcome);
        }
        let late = matches!(entry.state, State::Abandoned);
        let outcome = apply(entry.kind, late, outcome);
        let (waker, gone) = entry.finish(outcome);
        if gone {
            place.remove(id, self);
        }
        drop(place);
        let woken = waker.is_some();
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(woken || !gone)
    }

    /// Forgets request `id` without an outcome.
    pub(crate) fn remove(&self, id: u64) {
        if let Some(mut place) = self.find(id) {
            place.remove(id, self);
        }
    }

    /// The driver's waker, for inserts that bring the next sweep forward.
    pub(crate) fn register_sweeper(&self, waker: &Waker) {
        self.sweeper.register(waker);
    }

    /// When the next sweep is due: the earliest deadline of an entry (or later), `None` if
    /// no entry has one.
    pub(crate) fn next_sweep(&self) -> Option<Instant> {
        match self.earliest.load(Ordering::Acquire) {
            u64::MAX => None,
            nanos => Some(self.epoch + Duration::from_nanos(nanos)),
        }
    }

    /// Fails every waiting request whose deadline is not after `now` with
    /// [`RequestError::Timeout`], and returns how many. Recomputes the earliest deadline.
    pub(crate) fn sweep(&self, now: Instant) -> usize {
        let now = self.deadline_at(Some(now), Duration::ZERO).at;
        // Reset first: an insert that lowers it after this is seen below, or lowers it again.
        self.earliest.store(u64::MAX, Ordering::Release);
        let mut earliest = u64::MAX;
        let count = self.finish_where(
            |entry| {
                let due = entry.deadline.at <= now;
                if !due && matches!(entry.state, State::Waiting(_)) {
                    earliest = earliest.min(entry.deadline.at);
                }
                due
            },
            |entry| RequestError::Timeout {
                after: entry.deadline.after,
            },
        );
        if earliest != u64::MAX {
            self.earliest.fetch_min(earliest, Ordering::AcqRel);
        }
        count
    }

    /// Fails every request handed to connection `generation` with `error`.
    pub(crate) fn fail_generation(&self, generation: u64, error: &RequestError) -> usize {
        self.finish_where(|entry| entry.generation == generation, |_| error.clone())
    }

    /// Fails every pending request with `error`.
    pub(crate) fn fail_all(&self, error: &RequestError) {
        self.finish_where(|_| true, |_| error.clone());
    }

    /// Ends every entry without an outcome yet that `which` selects, with the error
    /// `error` gives it; wakes the requesters outside the locks. Returns how many.
    fn finish_where(
        &self,
        mut which: impl FnMut(&Entry) -> bool,
        error: impl Fn(&Entry) -> RequestError,
    ) -> usize {
        let mut wakers = Vec::new();
        let mut count = 0;
        let mut finish = |entry: &mut Entry| -> bool {
            if matches!(entry.state, State::Done(_)) || !which(entry) {
                return false;
            }
            count += 1;
            let (waker, gone) = entry.finish(Err(error(entry)));
            wakers.extend(waker);
            gone
        };
        for slot in &self.slots {
            let mut slot = crate::sync::lock(slot);
            if slot.as_mut().is_some_and(&mut finish) {
                *slot = None;
            }
        }
        // Always under the map's lock, never on the `overflowing` hint: an insert into the
        // map and a sweep then order through the lock, so a sweep cannot miss an entry
        // that an insert made while it reset `earliest` (a store-then-load race the hint
        // alone would allow). Sweeps are rare (at most one per millisecond).
        {
            let mut map = crate::sync::lock(&self.overflow);
            if !map.is_empty() {
                map.retain(|_, entry| !finish(entry));
                self.overflowing.store(map.len(), Ordering::Release);
            }
        }
        for waker in wakers {
            waker.wake();
        }
        count
    }

    /// The number of pending requests (outcomes not yet taken included).
    pub(crate) fn len(&self) -> usize {
        let slots = self
            .slots
            .iter()
            .filter(|slot| crate::sync::lock(slot).is_some())
            .count();
        slots + crate::sync::lock(&self.overflow).len()
    }
}

/// The outcome of one pending request, when it comes; the request's entry leaves with it.
///
/// Dropped before that, it removes an application request's entry: a timed-out,
/// `select!`-ed away or aborted request leaves nothing behind. A session request's entry
/// stays (its reply must still reach the driver, which changes the session) and goes with
/// its reply or its connection.
#[derive(Debug)]
#[must_use = "the outcome comes through the reply"]
pub(crate) struct Reply<'a> {
    pending: &'a Pending,
    id: u64,
    kind: Kind,
    done: bool,
    /// The waker was registered with the entry; the first poll (in the same task poll)
    /// returns `Pending` without a look.
    registered: bool,
}

impl Reply<'_> {
    /// The request was not sent after all: its entry goes, whatever its kind.
    pub(crate) fn withdraw(mut self) {
        self.done = true;
        self.pending.remove(self.id);
    }
}

impl Future for Reply<'_> {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        if std::mem::take(&mut self.registered) {
            return Poll::Pending;
        }
        let id = self.id;
        let Some(mut place) = self.pending.find(id) else {
            // Removed without an outcome: cannot happen while this reply exists.
            self.done = true;
            return Poll::Ready(Err(RequestError::Disconnected));
        };
        let Some(entry) = place.entry(id) else {
            self.done = true;
            return Poll::Ready(Err(RequestError::Disconnected));
        };
        match &mut entry.state {
            State::Waiting(waker) => {
                match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            State::Done(_) | State::Abandoned => {
                let outcome = match place.remove(id, self.pending).map(|entry| entry.state) {
                    Some(State::Done(outcome)) => outcome,
                    _ => Err(RequestError::Disconnected),
                };
                drop(place);
                self.done = true;
                Poll::Ready(outcome)
            }
        }
    }
}

impl Drop for Reply<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Some(mut place) = self.pending.find(self.id) else {
            return;
        };
        let keep = self.kind != Kind::Request
            && place
                .entry(self.id)
                .is_some_and(|entry| matches!(entry.state, State::Waiting(_)));
        if keep {
            if let Some(entry) = place.entry(self.id) {
                entry.state = State::Abandoned;
            }
        } else {
            place.remove(self.id, self.pending);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn entry(pending: &Pending, id: u64, generation: u64, in_ms: Option<u64>) -> Reply<'_> {
        let deadline = match in_ms {
            Some(ms) => pending.deadline_at(
                Some(pending.epoch + Duration::from_millis(ms)),
                Duration::from_millis(ms),
            ),
            None => Pending::never(),
        };
        pending.insert(id, generation, Kind::Request, deadline)
    }

    /// Polls `reply` once, with a waker that does nothing.
    fn poll(reply: &mut Reply<'_>) -> Poll<Outcome> {
        Pin::new(reply).poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn complete_delivers_once_and_ignores_unknown_ids() {
        let pending = Pending::default();
        let mut reply = entry(&pending, 1, 0, None);
        assert!(poll(&mut reply).is_pending());
        assert_eq!(
            pending.complete(2, Ok(Payload::empty()), |_, _, outcome| outcome),
            Err(Ok(Payload::empty()))
        );
        assert_eq!(
            pending.complete(1, Ok(Payload::utf8("x")), |_, _, outcome| outcome),
            Ok(true)
        );
        assert_eq!(
            pending.complete(1, Ok(Payload::empty()), |_, _, outcome| outcome),
            Err(Ok(Payload::empty()))
        );
        assert_eq!(poll(&mut reply), Poll::Ready(Ok(Payload::utf8("x"))));
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn failing_a_generation_takes_only_its_entries() {
        let pending = Pending::default();
        let mut old = entry(&pending, 1, 7, None);
        let mut new = entry(&pending, 2, 8, None);
        assert_eq!(pending.fail_generation(7, &RequestError::Disconnected), 1);
        assert_eq!(poll(&mut old), Poll::Ready(Err(RequestError::Disconnected)));
        assert!(poll(&mut new).is_pending());
        pending.fail_all(&RequestError::ClientClosed);
        assert_eq!(poll(&mut new), Poll::Ready(Err(RequestError::ClientClosed)));
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn the_sweep_times_out_what_is_due_and_finds_the_next_deadline() {
        let pending = Pending::default();
        let at = |ms| pending.epoch + Duration::from_millis(ms);
        assert_eq!(pending.next_sweep(), None);
        let mut late = entry(&pending, 1, 0, Some(300));
        assert_eq!(pending.next_sweep(), Some(at(300)));
        // An earlier deadline lowers it; a later one does not.
        let mut early = entry(&pending, 2, 0, Some(100));
        let mut middle = entry(&pending, 3, 0, Some(200));
        let _never = entry(&pending, 4, 0, None);
        assert_eq!(pending.next_sweep(), Some(at(100)));

        assert_eq!(pending.sweep(at(99)), 0);
        assert_eq!(pending.sweep(at(150)), 1);
        let timeout = |ms| {
            Poll::Ready(Err(RequestError::Timeout {
                after: Duration::from_millis(ms),
            }))
        };
        assert_eq!(poll(&mut early), timeout(100));
        assert_eq!(pending.next_sweep(), Some(at(200)));
        assert_eq!(pending.sweep(at(300)), 2);
        assert_eq!(poll(&mut middle), timeout(200));
        assert_eq!(poll(&mut late), timeout(300));
        // Only the entry without a deadline is left, and no sweep is due.
        assert_eq!(pending.len(), 1);
        assert_eq!(pending.next_sweep(), None);
    }

    #[test]
    fn an_id_whose_slot_is_taken_overflows() {
        let pending = Pending::default();
        let slots = SLOTS as u64;
        let mut first = entry(&pending, 5, 0, None);
        let mut same_slot = entry(&pending, 5 + slots, 0, None);
        assert_eq!(pending.len(), 2);
        assert_eq!(
            pending.complete(5 + slots, Ok(Payload::utf8("b")), |_, _, outcome| outcome),
            Ok(true)
        );
        assert_eq!(
            pending.complete(5, Ok(Payload::utf8("a")), |_, _, outcome| outcome),
            Ok(true)
        );
        assert_eq!(poll(&mut same_slot), Poll::Ready(Ok(Payload::utf8("b"))));
        assert_eq!(poll(&mut first), Poll::Ready(Ok(Payload::utf8("a"))));
        assert_eq!(pending.len(), 0);
        assert_eq!(pending.overflowing.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_dropped_reply_removes_a_request_but_not_a_session_request() {
        let pending = Pending::default();
        drop(entry(&pending, 1, 0, None));
        assert_eq!(pending.len(), 0);

        // A session request's reply is applied when it comes, though nobody waits.
        let restore = pending.insert(2, 0, Kind::RestoreSession(5), Pending::never());
        drop(restore);
        assert_eq!(pending.len(), 1);
        let mut applied = None;
        let delivered = pending.complete(2, Ok(Payload::empty()), |kind, late, outcome| {
            applied = Some((kind, late));
            outcome
        });
        assert_eq!(delivered, Ok(false));
        assert_eq!(applied, Some((Kind::RestoreSession(5), true)));
        assert_eq!(pending.len(), 0);

        // Withdrawn (never sent), a session request's entry goes too.
        pending
            .insert(3, 0, Kind::CloseSession(6), Pending::never())
            .withdraw();
        assert_eq!(pending.len(), 0);
    }
}
