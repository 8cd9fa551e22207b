//! [`Interest`]: which routes a server wants from its backplane, and the task that tells the
//! backplane, one [`join`](super::Backplane::join) or [`leave`](super::Backplane::leave) at
//! a time, in order.
//!
//! The fan-out counts its reasons to want a route ([`acquire`](Interest::acquire) and
//! [`release`](Interest::release), both synchronous and cheap: a topic's first subscriber,
//! a resume reading the history, a session's first holder); only the first acquire and the
//! last release change anything. Changes are coalesced per route until the task gets to
//! them (a topic subscribed and left a thousand times while the backplane was slow is one
//! entry), so what waits is bounded by the routes in use, and a route the task finds
//! wanted as it already is costs no call. [`sync`](Interest::sync) resolves once every
//! change made before it has reached the backplane: a client's subscribe answers only
//! then, so that what any node publishes after the answer reaches it.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{DynBackplane, Route};
use crate::sync;

/// A server's routes, and the task that joins and leaves them.
pub(crate) struct Interest {
    shared: Arc<Shared>,
    backplane: Arc<dyn DynBackplane>,
    /// Ends the task with the server.
    stop: CancellationToken,
    _stop: DropGuard,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the task (held apart, so that the task waits without holding the rest).
    wake: Arc<Notify>,
    /// The number of changes the backplane has been told of (or found unneeded).
    applied: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// Reasons to want each route.
    counts: HashMap<Route, usize>,
    /// Routes whose wanted state changed since the task last looked, in order.
    dirty: VecDeque<Route>,
    dirty_set: HashSet<Route>,
    /// Changes made so far.
    requested: u64,
    /// Whether the task runs.
    started: bool,
}

impl Interest {
    /// A server's interest; it wants the service's route from the start.
    pub(crate) fn new(backplane: Arc<dyn DynBackplane>) -> Self {
        let stop = CancellationToken::new();
        let interest = Interest {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Arc::new(Notify::new()),
                applied: watch::Sender::new(0),
            }),
            backplane,
            _stop: stop.clone().drop_guard(),
            stop,
        };
        interest.acquire(&Route::service());
        interest
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Each critical section is a few map operations: nothing in it panics.
        sync::lock(&self.shared.state)
    }

    /// One more reason to want `route`: the first one joins it (and returns true).
    pub(crate) fn acquire(&self, route: &Route) -> bool {
        let mut state = self.state();
        let count = state.counts.entry(route.clone()).or_insert(0);
        *count += 1;
        let first = *count == 1;
        if first {
            self.changed(&mut state, route);
        }
        first
    }

    /// Whether anything wants `route` now.
    pub(crate) fn wants(&self, route: &Route) -> bool {
        self.state().counts.contains_key(route)
    }

    /// One reason less: the last one leaves it.
    pub(crate) fn release(&self, route: &Route) {
        let mut state = self.state();
        let Entry::Occupied(mut count) = state.counts.entry(route.clone()) else {
            return;
        };
        *count.get_mut() -= 1;
        if *count.get() == 0 {
            count.remove();
            self.changed(&mut state, route);
        }
    }

    fn changed(&self, state: &mut State, route: &Route) {
        state.requested += 1;
        if state.dirty_set.insert(route.clone()) {
            state.dirty.push_back(route.clone());
        }
        if !state.started {
            state.started = self.start();
        }
        self.shared.wake.notify_one();
    }

    /// Starts the task if a runtime is there to run it (a server built outside one starts
    /// it at its first change inside one).
    fn start(&self) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        runtime.spawn(run(
            Arc::downgrade(&self.shared),
            Arc::clone(&self.shared.wake),
            Arc::clone(&self.backplane),
            self.stop.clone(),
        ));
        true
    }

    /// Starts the task if it has not started and a runtime is there.
    pub(crate) fn ensure_started(&self) {
        let mut state = self.state();
        if !state.started {
            state.started = self.start();
        }
    }

    /// Resolves once every change made before it has reached the backplane.
    pub(crate) async fn sync(&self) {
        let target = {
            let mut state = self.state();
            if !state.started {
                state.started = self.start();
            }
            state.requested
        };
        let mut applied = self.shared.applied.subscribe();
        // The sender lives as long as `self`.
        let _ = applied.wait_for(|applied| *applied >= target).await;
    }

    /// The routes wanted now.
    #[cfg(test)]
    fn wanted(&self) -> HashSet<Route> {
        self.state().counts.keys().cloned().collect()
    }
}

/// Tells `backplane` of each change, in order, until the server is gone.
async fn run(
    shared: std::sync::Weak<Shared>,
    wake: Arc<Notify>,
    backplane: Arc<dyn DynBackplane>,
    stop: CancellationToken,
) {
    // What the backplane has been told it is wanted.
    let mut joined: HashSet<Route> = HashSet::new();
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let next = {
            let mut state = sync::lock(&strong.state);
            match state.dirty.pop_front() {
                Some(route) => {
                    state.dirty_set.remove(&route);
                    let wanted = state.counts.contains_key(&route);
                    Some((route, wanted))
                }
                None => {
                    // Nothing left: every change made so far has been dealt with.
                    let requested = state.requested;
                    strong.applied.send_if_modified(|applied| {
                        let moved = *applied != requested;
                        *applied = requested;
                        moved
                    });
                    None
                }
            }
        };
        match next {
            Some((route, true)) if !joined.contains(&route) => {
                drop(strong);
                // A failure leaves the route with the backplane, which joins it when its
                // link comes back (the trait's contract): it counts as joined.
                if let Err(error) = backplane.join(&route).await {
                    tracing::warn!(?route, %error, "the backplane could not join a route yet");
                }
                joined.insert(route);
            }
            Some((route, false)) if joined.contains(&route) => {
                drop(strong);
                if let Err(error) = backplane.leave(&route).await {
                    tracing::warn!(?route, %error, "the backplane could not leave a route");
                }
                joined.remove(&route);
            }
            // Already as wanted.
            Some(_) => {}
            None => {
                drop(strong);
                let woken = wake.notified();
                tokio::select! {
                    () = woken => {}
                    () = stop.cancelled() => break,
                }
            }
        }
    }
    // The server is gone: its routes are not wanted any more.
    for route in joined {
        let _ = backplane.leave(&route).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backplane::{Backplane, BackplaneError, Inbox};
    use bytes::Bytes;

    /// Records every join and leave; each join waits for a permit, so a test decides
    /// when the backplane answers.
    #[derive(Clone)]
    struct Recording {
        calls: Arc<Mutex<Vec<String>>>,
        permits: Arc<tokio::sync::Semaphore>,
    }

    impl Default for Recording {
        fn default() -> Self {
            Recording {
                calls: Arc::default(),
                permits: Arc::new(tokio::sync::Semaphore::new(0)),
            }
        }
    }

    impl Backplane for Recording {
        async fn send(&self, _: &Route, _: Bytes) -> Result<(), BackplaneError> {
            Ok(())
        }
        fn attach(&self, _: Inbox) {}
        async fn join(&self, route: &Route) -> Result<(), BackplaneError> {
            let _permit = self.permits.acquire().await;
            self.calls
                .lock()
                .unwrap()
                .push(format!("join {}", route.name()));
            Ok(())
        }
        async fn leave(&self, route: &Route) -> Result<(), BackplaneError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("leave {}", route.name()));
            Ok(())
        }
    }

    fn topic(name: &str) -> Route {
        Route::topic(name).unwrap()
    }

    #[tokio::test]
    async fn the_first_acquire_joins_and_the_last_release_leaves() {
        let backplane = Recording::default();
        backplane.permits.add_permits(100);
        let interest = Interest::new(Arc::new(backplane.clone()));
        interest.acquire(&topic("a"));
        interest.acquire(&topic("a"));
        interest.release(&topic("a"));
        tokio::time::timeout(std::time::Duration::from_secs(5), interest.sync())
            .await
            .unwrap();
        assert_eq!(*backplane.calls.lock().unwrap(), ["join ", "join a"]);
        interest.release(&topic("a"));
        interest.release(&topic("a")); // one too many: ignored
        tokio::time::timeout(std::time::Duration::from_secs(5), interest.sync())
            .await
            .unwrap();
        assert_eq!(
            *backplane.calls.lock().unwrap(),
            ["join ", "join a", "leave a"]
        );
        assert_eq!(interest.wanted(), HashSet::from([Route::service()]));
    }

    #[tokio::test]
    async fn changes_made_while_the_backplane_is_slow_are_coalesced() {
        let backplane = Recording::default();
        let interest = Interest::new(Arc::new(backplane.clone()));
        // The service's join is waiting for a permit; meanwhile "b" comes and goes 1 000
        // times and "c" comes.
        for _ in 0..1000 {
            interest.acquire(&topic("b"));
            interest.release(&topic("b"));
        }
        interest.acquire(&topic("c"));
        assert_eq!(interest.state().dirty.len(), 3, "one entry per route");
        backplane.permits.add_permits(100);
        tokio::time::timeout(std::time::Duration::from_secs(5), interest.sync())
            .await
            .unwrap();
        assert_eq!(*backplane.calls.lock().unwrap(), ["join ", "join c"]);
    }

    #[tokio::test]
    async fn sync_waits_for_the_backplane() {
        let backplane = Recording::default();
        let interest = Interest::new(Arc::new(backplane.clone()));
        interest.acquire(&topic("d"));
        let mut sync = Box::pin(interest.sync());
        assert!(
            futures_util::poll!(&mut sync).is_pending(),
            "the joins wait for permits"
        );
        backplane.permits.add_permits(2);
        tokio::time::timeout(std::time::Duration::from_secs(5), sync)
            .await
            .unwrap();
        assert_eq!(*backplane.calls.lock().unwrap(), ["join ", "join d"]);
    }
}
