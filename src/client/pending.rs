//! Requests waiting for their reply: id → oneshot sender, and the guard that cleans up.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::Payload;
use crate::client::RequestError;

/// What a request ends in, as delivered by the reader (or by a sweep).
pub(crate) type Outcome = Result<Payload, RequestError>;

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

/// A pending request as the reader takes it out of the map.
pub(crate) struct Entry {
    /// The connection the request was handed to: when it drops, so does the request.
    generation: u64,
    /// What the reply means.
    pub(crate) kind: Kind,
    /// Where the outcome goes.
    pub(crate) reply: oneshot::Sender<Outcome>,
}

/// The pending requests of one client, keyed by the `u64` of their [`RequestId`].
///
/// The lock is a plain `std` mutex held for one map operation at a time, never across an
/// await.
///
/// [`RequestId`]: crate::protocol::RequestId
#[derive(Default)]
pub(crate) struct Pending {
    map: Mutex<HashMap<u64, Entry>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("len", &self.len()).finish()
    }
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        super::lock(&self.map)
    }

    /// Registers request `id` of `kind` as handed to connection `generation`.
    pub(crate) fn insert(
        &self,
        id: u64,
        generation: u64,
        kind: Kind,
    ) -> oneshot::Receiver<Outcome> {
        let (reply, receiver) = oneshot::channel();
        self.lock().insert(
            id,
            Entry {
                generation,
                kind,
                reply,
            },
        );
        receiver
    }

    /// Takes request `id` out of the map, for the reader to deliver its outcome. `None`
    /// when no such request is pending (a late reply after a timeout, or a duplicate).
    /// The requester may give up after this; sending to it then fails harmlessly.
    pub(crate) fn take(&self, id: u64) -> Option<Entry> {
        self.lock().remove(&id)
    }

    /// Delivers the outcome of request `id`. `false` when no such request is pending.
    #[cfg(test)]
    pub(crate) fn complete(&self, id: u64, outcome: Outcome) -> bool {
        match self.take(id) {
            Some(entry) => {
                let _ = entry.reply.send(outcome);
                true
            }
            None => false,
        }
    }

    /// Forgets request `id` without an outcome.
    pub(crate) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Fails every request handed to connection `generation` with `error`.
    pub(crate) fn fail_generation(&self, generation: u64, error: &RequestError) -> usize {
        let failed: Vec<Entry> = {
            let mut map = self.lock();
            let ids: Vec<u64> = map
                .iter()
                .filter(|(_, entry)| entry.generation == generation)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        let count = failed.len();
        for entry in failed {
            let _ = entry.reply.send(Err(error.clone()));
        }
        count
    }

    /// Fails every pending request with `error`.
    pub(crate) fn fail_all(&self, error: &RequestError) {
        let failed: Vec<Entry> = self.lock().drain().map(|(_, entry)| entry).collect();
        for entry in failed {
            let _ = entry.reply.send(Err(error.clone()));
        }
    }

    /// The number of pending requests.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
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
    /// reply must reach the reader (which changes the session) even when nobody waits for
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

    #[test]
    fn complete_delivers_once_and_ignores_unknown_ids() {
        let pending = Pending::default();
        let mut rx = pending.insert(1, 0, Kind::Request);
        assert!(!pending.complete(2, Ok(Payload::empty())));
        assert!(pending.complete(1, Ok(Payload::utf8("x"))));
        assert!(!pending.complete(1, Ok(Payload::empty())));
        assert_eq!(rx.try_recv(), Ok(Ok(Payload::utf8("x"))));
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn sweep_takes_only_its_generation() {
        let pending = Pending::default();
        let mut old = pending.insert(1, 7, Kind::Request);
        let mut new = pending.insert(2, 8, Kind::Request);
        assert_eq!(pending.fail_generation(7, &RequestError::Disconnected), 1);
        assert_eq!(old.try_recv(), Ok(Err(RequestError::Disconnected)));
        assert!(new.try_recv().is_err());
        pending.fail_all(&RequestError::ClientClosed);
        assert_eq!(new.try_recv(), Ok(Err(RequestError::ClientClosed)));
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn guard_removes_unless_disarmed() {
        let pending = Pending::default();
        let _rx = pending.insert(1, 0, Kind::Request);
        drop(PendingGuard::new(&pending, 1, Kind::Request));
        assert_eq!(pending.len(), 0);

        let _rx = pending.insert(2, 0, Kind::Request);
        let mut guard = PendingGuard::new(&pending, 2, Kind::Request);
        guard.disarm();
        drop(guard);
        assert_eq!(pending.len(), 1);
    }
}
