//! How replies find the pipelines that sent their requests: each pipeline's chunks of
//! request ids registered in [`Routes`], its [`Inbox`], and [`Deliveries`], the driver's
//! side (the last chunk cached, a read batch handed over with one lock and one wake-up).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::task::AtomicWaker;

use crate::client::RequestError;
use crate::client::pending::Outcome;
use crate::sync::lock;

/// Request ids a pipeline takes from the client's counter at a time.
pub(crate) const CHUNK: u64 = 256;

/// What reaches a pipeline from the driver and the supervisor.
#[derive(Debug)]
pub(crate) enum Arrival {
    /// The reply to request `id` (or to an id it never sent, which it ignores).
    Reply(u64, Outcome),
    /// The connection of this generation ended (`None`: every connection, the client
    /// closed): what was sent on it ends in this error.
    Ended(Option<u64>, RequestError),
}

/// Where a pipeline's arrivals wait for it.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    pub(crate) arrivals: Mutex<Arrivals>,
    /// The pipeline's task, woken by a push.
    pub(crate) reader: AtomicWaker,
}

#[derive(Debug, Default)]
pub(crate) struct Arrivals {
    pub(crate) queue: VecDeque<Arrival>,
    /// The pipeline is gone: nothing is queued any more.
    pub(crate) closed: bool,
}

impl Inbox {
    /// Queues `arrivals` and wakes the pipeline.
    fn push(&self, arrivals: impl IntoIterator<Item = Arrival>) {
        {
            let mut held = lock(&self.arrivals);
            if held.closed {
                return;
            }
            held.queue.extend(arrivals);
        }
        self.reader.wake();
    }
}

/// The chunks of request ids pipelines hold, by their first id: how the driver finds the
/// pipeline a reply is for.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    chunks: Mutex<BTreeMap<u64, Arc<Inbox>>>,
    /// `chunks.len()`, read without the lock: a client without pipelines pays one load.
    len: AtomicUsize,
}

impl Routes {
    pub(crate) fn register(&self, base: u64, inbox: &Arc<Inbox>) {
        let mut chunks = lock(&self.chunks);
        chunks.insert(base, Arc::clone(inbox));
        self.len.store(chunks.len(), Ordering::Release);
    }

    pub(crate) fn unregister(&self, base: u64) {
        let mut chunks = lock(&self.chunks);
        chunks.remove(&base);
        self.len.store(chunks.len(), Ordering::Release);
    }

    /// The chunk `id` falls in, and its pipeline.
    fn find(&self, id: u64) -> Option<(u64, Arc<Inbox>)> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let chunks = lock(&self.chunks);
        let (&base, inbox) = chunks.range(..=id).next_back()?;
        (id - base < CHUNK).then(|| (base, Arc::clone(inbox)))
    }

    /// Tells every pipeline with a chunk that the connection of `generation` ended (`None`:
    /// the client closed), with `error` for what it sent there.
    pub(crate) fn end(&self, generation: Option<u64>, error: &RequestError) {
        let inboxes: Vec<Arc<Inbox>> = {
            let chunks = lock(&self.chunks);
            let mut inboxes: Vec<Arc<Inbox>> = Vec::new();
            for inbox in chunks.values() {
                if !inboxes.iter().any(|seen| Arc::ptr_eq(seen, inbox)) {
                    inboxes.push(Arc::clone(inbox));
                }
            }
            inboxes
        };
        for inbox in inboxes {
            inbox.push([Arrival::Ended(generation, error.clone())]);
        }
    }

    /// The number of chunks registered (a test hook's figure).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

/// The driver's side of the routes: the chunk of the last reply routed, and the
/// outcomes of the batch being read, handed over once it is read.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    /// The chunk of the last reply routed to a pipeline, and that pipeline.
    cached: Option<(u64, Arc<Inbox>)>,
    /// The pipeline `held` goes to.
    to: Option<Arc<Inbox>>,
    held: Vec<Arrival>,
}

impl Deliveries {
    /// Takes the reply to `id` if it is for a pipeline: the chunk of the last one, or else
    /// (`look_up`) one registered in `routes`. The outcome back if it is not.
    pub(crate) fn route(
        &mut self,
        routes: &Routes,
        id: u64,
        outcome: Outcome,
        look_up: bool,
    ) -> Result<(), Outcome> {
        let hit = self
            .cached
            .as_ref()
            .is_some_and(|(base, _)| id.wrapping_sub(*base) < CHUNK);
        if !hit {
            if !look_up {
                return Err(outcome);
            }
            let Some(found) = routes.find(id) else {
                return Err(outcome);
            };
            self.cached = Some(found);
        }
        let Some((_, inbox)) = &self.cached else {
            return Err(outcome);
        };
        if !self.to.as_ref().is_some_and(|to| Arc::ptr_eq(to, inbox)) {
            let inbox = Arc::clone(inbox);
            self.deliver();
            self.to = Some(inbox);
        }
        self.held.push(Arrival::Reply(id, outcome));
        Ok(())
    }

    /// Hands the outcomes held to their pipeline.
    pub(crate) fn deliver(&mut self) {
        if let Some(to) = self.to.take() {
            to.push(self.held.drain(..));
        }
    }
}
