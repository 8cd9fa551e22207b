//! Requests waiting for their reply: a sharded id → entry map, each entry with its
//! deadline and its completion, and the guard that cleans up after a dropped request.
//!
//! Ids come from one counter per client, so consecutive requests land in consecutive
//! shards: a requester and the driver completing another request rarely meet on a lock.
//! Each shard is a `std` mutex held for one map operation, never across an await.
//!
//! Timeouts are not timers: each entry carries its deadline, and the connection's driver
//! sweeps the map when the earliest deadline has passed (see [`Pending::sweep`]). The
//! earliest deadline is kept in an atomic that a request lowers only when its own deadline
//! comes first, so a steady stream of requests with the same timeout does not touch it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::Payload;
use crate::client::RequestError;

/// What a request ends in, as delivered by the driver (or by a sweep).
pub(crate) type Outcome = Result<Payload, RequestError>;

/// Shards of the map; a power of two.
const SHARDS: usize = 16;

/// What a pending request is, which decides what its reply does besides reaching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An application request: the reply goes to the requester, nothing else.
    Request,
    /// RequestRestoreSession: a successful reply also becomes the client's session.
    RestoreSession,
    /// RequestCloseSession: a successful reply also ends the client's session.
    CloseSession,
}

/// When a request times out: its deadline, and the timeout it reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    /// Nanoseconds since the map's epoch; `u64::MAX` for never.
    at: u64,
    after: Duration,
}

/// A pending request as the driver takes it out of the map.
pub(crate) struct Entry {
    /// The connection the request was handed to: when it drops, so does the request.
    generation: u64,
    deadline: Deadline,
    /// What the reply means.
    pub(crate) kind: Kind,
    /// Where the outcome goes.
    pub(crate) reply: oneshot::Sender<Outcome>,
}

/// Ids are consecutive integers: a multiplication spreads them over the hash's high bits,
/// which the table's probing uses. No SipHash: ids are ours, not an attacker's.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8 | u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Shard = HashMap<u64, Entry, BuildHasherDefault<IdHasher>>;

/// The pending requests of one client, keyed by the `u64` of their [`RequestId`].
///
/// [`RequestId`]: crate::protocol::RequestId
pub(crate) struct Pending {
    shards: [Mutex<Shard>; SHARDS],
    /// The origin of deadlines in nanoseconds.
    epoch: Instant,
    /// No deadline of an entry is earlier than this (nanoseconds since `epoch`): the driver
    /// sweeps when it has passed. Lowered by [`insert`](Pending::insert), raised by
    /// [`sweep`](Pending::sweep).
    earliest: AtomicU64,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            shards: std::array::from_fn(|_| Mutex::default()),
            epoch: Instant::now(),
            earliest: AtomicU64::new(u64::MAX),
        }
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("len", &self.len()).finish()
    }
}

impl Pending {
    fn shard(&self, id: u64) -> std::sync::MutexGuard<'_, Shard> {
        // The cast keeps the low bits, which is all the mask looks at.
        #[allow(clippy::cast_possible_truncation)]
        let index = id as usize & (SHARDS - 1);
        super::lock(&self.shards[index])
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
    /// at `deadline`.
    pub(crate) fn insert(
        &self,
        id: u64,
        generation: u64,
        kind: Kind,
        deadline: Deadline,
    ) -> oneshot::Receiver<Outcome> {
        let (reply, receiver) = oneshot::channel();
        self.shard(id).insert(
            id,
            Entry {
                generation,
                deadline,
                kind,
                reply,
            },
        );
        // After the insert: a sweep that resets `earliest` before this lowers it scans the
        // shard after the insert too.
        if deadline.at < self.earliest.load(Ordering::Acquire) {
            self.earliest.fetch_min(deadline.at, Ordering::AcqRel);
        }
        receiver
    }

    /// Takes request `id` out of the map, for the driver to deliver its outcome. `None`
    /// when no such request is pending (a late reply after a timeout, or a duplicate).
    /// The requester may give up after this; sending to it then fails harmlessly.
    pub(crate) fn take(&self, id: u64) -> Option<Entry> {
        self.shard(id).remove(&id)
    }

    /// Forgets request `id` without an outcome.
    pub(crate) fn remove(&self, id: u64) {
        self.shard(id).remove(&id);
    }

    /// When the next sweep is due: the earliest deadline of an entry (or later), `None` if
    /// no entry has one.
    pub(crate) fn next_sweep(&self) -> Option<Instant> {
        match self.earliest.load(Ordering::Acquire) {
            u64::MAX => None,
            nanos => Some(self.epoch + Duration::from_nanos(nanos)),
        }
    }

    /// Fails every request whose deadline is not after `now` with
    /// [`RequestError::Timeout`], and returns how many. Recomputes the earliest deadline.
    pub(crate) fn sweep(&self, now: Instant) -> usize {
        let now = self.deadline_at(Some(now), Duration::ZERO).at;
        // Reset first: an insert that lowers it after this is seen below, or lowers it again.
        self.earliest.store(u64::MAX, Ordering::Release);
        let mut earliest = u64::MAX;
        let mut expired = Vec::new();
        for shard in &self.shards {
            let mut shard = super::lock(shard);
            let mut ids = Vec::new();
            for (id, entry) in shard.iter() {
                if entry.deadline.at <= now {
                    ids.push(*id);
                } else {
                    earliest = earliest.min(entry.deadline.at);
                }
            }
            expired.extend(ids.iter().filter_map(|id| shard.remove(id)));
        }
        if earliest != u64::MAX {
            self.earliest.fetch_min(earliest, Ordering::AcqRel);
        }
        let count = expired.len();
        for entry in expired {
            let after = entry.deadline.after;
            let _ = entry.reply.send(Err(RequestError::Timeout { after }));
        }
        count
    }

    /// Fails every request handed to connection `generation` with `error`.
    pub(crate) fn fail_generation(&self, generation: u64, error: &RequestError) -> usize {
        self.fail_where(|entry| entry.generation == generation, |_| error.clone())
    }

    /// Fails every pending request with `error`.
    pub(crate) fn fail_all(&self, error: &RequestError) {
        self.fail_where(|_| true, |_| error.clone());
    }

    /// Removes the entries `which` selects, then sends each the outcome `error` gives it
    /// (outside the locks).
    fn fail_where(
        &self,
        which: impl Fn(&Entry) -> bool,
        error: impl Fn(&Entry) -> RequestError,
    ) -> usize {
        let mut failed = Vec::new();
        for shard in &self.shards {
            let mut shard = super::lock(shard);
            let ids: Vec<u64> = shard
                .iter()
                .filter(|(_, entry)| which(entry))
                .map(|(id, _)| *id)
                .collect();
            failed.extend(ids.iter().filter_map(|id| shard.remove(id)));
        }
        let count = failed.len();
        for entry in failed {
            let outcome = Err(error(&entry));
            let _ = entry.reply.send(outcome);
        }
        count
    }

    /// The number of pending requests.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| super::lock(shard).len())
            .sum()
    }
}

/// Removes its request from [`Pending`] when dropped, unless the request already ended
/// there (its outcome arrived, so the entry is gone). This is what makes a timed-out,
/// `select!`-ed away or aborted request leave nothing behind.
#[derive(Debug)]
pub(crate) struct PendingGuard<'a> {
    pending: &'a Pending,
    id: u64,
    armed: bool,
}

impl<'a> PendingGuard<'a> {
    /// A guard for request `id` of `kind`. Session requests are never removed by it: their
    /// reply must reach the driver (which changes the session) even when nobody waits for
    /// it any more. Their entry goes with its reply, or with its connection.
    pub(crate) fn new(pending: &'a Pending, id: u64, kind: Kind) -> Self {
        PendingGuard {
            pending,
            id,
            armed: kind == Kind::Request,
        }
    }

    /// The entry is known to be gone: dropping the guard need not take the lock.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pending.remove(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        pending: &Pending,
        id: u64,
        generation: u64,
        in_ms: Option<u64>,
    ) -> oneshot::Receiver<Outcome> {
        let deadline = match in_ms {
            Some(ms) => pending.deadline_at(
                Some(pending.epoch + Duration::from_millis(ms)),
                Duration::from_millis(ms),
            ),
            None => Pending::never(),
        };
        pending.insert(id, generation, Kind::Request, deadline)
    }

    #[test]
    fn take_delivers_once_and_ignores_unknown_ids() {
        let pending = Pending::default();
        let mut rx = entry(&pending, 1, 0, None);
        assert!(pending.take(2).is_none());
        let taken = pending.take(1).expect("pending");
        assert!(taken.reply.send(Ok(Payload::utf8("x"))).is_ok());
        assert!(pending.take(1).is_none());
        assert_eq!(rx.try_recv(), Ok(Ok(Payload::utf8("x"))));
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn failing_a_generation_takes_only_its_entries() {
        let pending = Pending::default();
        let mut old = entry(&pending, 1, 7, None);
        let mut new = entry(&pending, 2, 8, None);
        assert_eq!(pending.fail_generation(7, &RequestError::Disconnected), 1);
        assert_eq!(old.try_recv(), Ok(Err(RequestError::Disconnected)));
        assert!(new.try_recv().is_err());
        pending.fail_all(&RequestError::ClientClosed);
        assert_eq!(new.try_recv(), Ok(Err(RequestError::ClientClosed)));
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
            Err(RequestError::Timeout {
                after: Duration::from_millis(ms),
            })
        };
        assert_eq!(early.try_recv(), Ok(timeout(100)));
        assert_eq!(pending.next_sweep(), Some(at(200)));
        assert_eq!(pending.sweep(at(300)), 2);
        assert_eq!(middle.try_recv(), Ok(timeout(200)));
        assert_eq!(late.try_recv(), Ok(timeout(300)));
        // Only the entry without a deadline is left, and no sweep is due.
        assert_eq!(pending.len(), 1);
        assert_eq!(pending.next_sweep(), None);
    }

    #[test]
    fn ids_spread_over_the_shards() {
        let pending = Pending::default();
        let _receivers: Vec<_> = (1..=64).map(|id| entry(&pending, id, 0, None)).collect();
        for shard in &pending.shards {
            assert_eq!(super::super::lock(shard).len(), 64 / SHARDS);
        }
    }

    #[test]
    fn guard_removes_unless_disarmed() {
        let pending = Pending::default();
        let _rx = entry(&pending, 1, 0, None);
        drop(PendingGuard::new(&pending, 1, Kind::Request));
        assert_eq!(pending.len(), 0);

        let _rx = entry(&pending, 2, 0, None);
        let mut guard = PendingGuard::new(&pending, 2, Kind::Request);
        guard.disarm();
        drop(guard);
        assert_eq!(pending.len(), 1);

        // Session requests keep their entry: their reply must still be applied.
        let _rx = entry(&pending, 3, 0, None);
        drop(PendingGuard::new(&pending, 3, Kind::RestoreSession));
        assert_eq!(pending.len(), 2);
    }
}
