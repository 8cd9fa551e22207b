//! [`Inboxes`]: the inboxes of the servers built with one backplane value, for the
//! backplanes that receive on a task of their own (Redis, NATS).

use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use super::Inbox;
use crate::sync;

/// The inboxes of the servers built with a backplane: each message received goes to
/// every one (each server ignores what it has no use for).
#[derive(Default)]
pub(crate) struct Inboxes(Mutex<Vec<Inbox>>);

impl Inboxes {
    fn lock(&self) -> MutexGuard<'_, Vec<Inbox>> {
        // Each critical section is a push or a pass over the list: nothing in it panics.
        sync::lock(&self.0)
    }

    /// A server built with the backplane.
    pub(crate) fn attach(&self, inbox: Inbox) {
        self.lock().push(inbox);
    }

    /// Hands `message` to every server still there.
    pub(crate) fn deliver(&self, message: &Bytes) {
        // `Inbox::deliver` never blocks and never calls back into the backplane (what it
        // must do at length runs on a task of its own): calling it under the lock is fine.
        let mut inboxes = self.lock();
        // Servers built with this backplane and gone since are forgotten.
        inboxes.retain(|inbox| !inbox.is_closed());
        for inbox in inboxes.iter() {
            inbox.deliver(message.clone());
        }
    }

    /// The backplane's link is back after a gap, its routes joined again: the servers
    /// catch up.
    pub(crate) fn reconnected(&self) {
        for inbox in self.lock().iter() {
            inbox.reconnected();
        }
    }
}
