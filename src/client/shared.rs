//! [`Shared`]: what the handles of a client and its background tasks share (the options,
//! the request counter, the pending table, where the connection stands, the closing flag,
//! the session and its epoch, the handler's queue, the topics), and the operations on it
//! that are not the sending path (`send.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Session;
use crate::client::RequestError;
use crate::client::config::Config;
use crate::client::events::{Event, Events};
use crate::client::link::Link;
use crate::client::pending::Pending;
use crate::client::routes::Routes;
use crate::client::subscriptions::Topics;
use crate::sync::lock;
use crate::transport::Closing;

/// Where the client's connection stands, as requests and signals see it.
pub(crate) enum State {
    /// Establishing the first connection, or reconnecting: wait.
    Connecting,
    /// Connected: send through this link.
    Connected(Arc<Link>),
    /// Disconnected for good (reconnecting is off or gave up): fail with `Disconnected`.
    Down,
    /// Closed by the user: fail with `ClientClosed`.
    Closed,
}

/// What the handles and the background tasks share.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) next_id: AtomicU64,
    pub(crate) pending: Pending,
    /// The chunks of request ids pipelines hold: how the driver finds their replies.
    pub(crate) routes: Routes,
    pub(crate) state: watch::Sender<State>,
    /// Raised when the client closes (one atomic load per request and per driver
    /// wake-up), and the current connection's driver woken.
    pub(crate) closing: Closing,
    /// Cancelled when the client closes, for the waits that select on it (reconnecting).
    pub(crate) stop: CancellationToken,
    /// The client's session, if any: changed by the driver (notifications, restore and
    /// close replies) and, while no connection is in use, by `close_session` and the
    /// restore after a reconnection. A `std` mutex, never held across an await.
    pub(crate) session: Mutex<SessionState>,
    /// Held by `restore_session`, `close_session` and the restore after a reconnection, so
    /// that they never interleave: a session closed offline is not resurrected by a restore
    /// still in flight, and a restore never starts while another one is pending.
    pub(crate) session_op: tokio::sync::Mutex<()>,
    /// The handler's queue. Pushing never waits.
    pub(crate) events: Events,
    /// The supervisor task, which runs the connections.
    pub(crate) tasks: TaskTracker,
    /// The topics subscribed through the extension, with the last position seen.
    pub(crate) topics: Topics,
}

impl Shared {
    /// Makes `link` the connection requests use, unless the client is closed.
    pub(crate) fn publish(&self, link: Arc<Link>) -> bool {
        self.state.send_if_modified(|state| {
            if matches!(state, State::Closed) {
                return false;
            }
            *state = State::Connected(link);
            true
        })
    }

    /// Takes connection `generation` out of use (unless the state has moved on already).
    pub(crate) fn unpublish(&self, generation: u64) {
        let next = if self.config.reconnect.is_enabled() {
            State::Connecting
        } else {
            State::Down
        };
        self.state.send_if_modified(|state| match state {
            State::Connected(link) if link.generation == generation => {
                *state = next;
                true
            }
            _ => false,
        });
    }

    /// Moves to `next`, unless the client is closed.
    pub(crate) fn set_state(&self, next: State) {
        self.state.send_if_modified(|state| {
            if matches!(state, State::Closed) {
                return false;
            }
            *state = next;
            true
        });
    }

    /// A fresh request identifier: one counter per client, from 1.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// `count` fresh request identifiers in a row; the first is returned.
    pub(crate) fn next_ids(&self, count: u64) -> u64 {
        self.next_id.fetch_add(count, Ordering::Relaxed)
    }

    /// Fails what was handed to connection `generation` (`None`: every connection) with
    /// `error`, the pipelines' requests too. How many requests of the pending table.
    pub(crate) fn fail_generation(&self, generation: Option<u64>, error: &RequestError) -> usize {
        let failed = match generation {
            Some(generation) => self.pending.fail_generation(generation, error),
            None => {
                self.pending.fail_all(error);
                0
            }
        };
        self.routes.end(generation, error);
        failed
    }

    /// Whether the client is closed (or closing).
    pub(crate) fn is_closed(&self) -> bool {
        self.closing.is_raised()
    }

    /// The state of a client that is about to connect. The handler's queue is finished
    /// by the supervisor when it ends and by the client's closing: a handler hears of a
    /// session closed offline after the last connection ended.
    pub(crate) fn new(config: Config) -> Self {
        let events = Events::new(
            config.max_queued_signals,
            config.max_queued_signal_bytes,
            config.signal_overflow,
            2,
        );
        Shared {
            config,
            next_id: AtomicU64::new(1),
            pending: Pending::default(),
            routes: Routes::default(),
            state: watch::Sender::new(State::Connecting),
            closing: Closing::default(),
            stop: CancellationToken::new(),
            session: Mutex::new(SessionState::default()),
            session_op: tokio::sync::Mutex::new(()),
            events,
            tasks: TaskTracker::new(),
            topics: std::sync::Mutex::default(),
        }
    }

    /// The current session.
    pub(crate) fn session(&self) -> Option<Session> {
        lock(&self.session).current.clone()
    }

    /// The key of the current session.
    pub(crate) fn session_key(&self) -> Option<String> {
        lock(&self.session)
            .current
            .as_ref()
            .map(|session| session.key.clone())
    }

    /// Whether the client has a session.
    pub(crate) fn has_session(&self) -> bool {
        lock(&self.session).current.is_some()
    }

    /// A session request (restore or close) is about to be sent: its epoch, which a late
    /// reply to it must still find (see [`SessionState`]).
    pub(crate) fn session_request_epoch(&self) -> u64 {
        lock(&self.session).next_epoch()
    }

    /// Makes `session` the client's session and tells the handler; false if the handler's
    /// queue refused the event (a flood of session notifications).
    pub(crate) fn store_session(&self, session: Session) -> bool {
        self.store_session_if(session, None).unwrap_or(true)
    }

    /// [`store_session`](Self::store_session) for the late reply of a restore sent at
    /// `epoch` (`Some`): `None`, and nothing changed, if a newer session request or session
    /// has come since.
    pub(crate) fn store_session_if(&self, session: Session, epoch: Option<u64>) -> Option<bool> {
        let mut state = lock(&self.session);
        if epoch.is_some_and(|epoch| epoch != state.epoch) {
            return None;
        }
        state.next_epoch();
        state.current = Some(session.clone());
        // Pushed under the lock: two changes reach the handler in the order they were made.
        Some(self.events.push(Event::SessionCreated(session)))
    }

    /// Forgets the client's session and tells the handler, if there was one; false as
    /// [`store_session`](Self::store_session).
    pub(crate) fn forget_session(&self) -> bool {
        self.forget_session_if(None).unwrap_or(true)
    }

    /// [`forget_session`](Self::forget_session) for the late reply of a close sent at
    /// `epoch` (`Some`): `None`, and nothing changed, if a newer session request or session
    /// has come since.
    pub(crate) fn forget_session_if(&self, epoch: Option<u64>) -> Option<bool> {
        let mut state = lock(&self.session);
        if epoch.is_some_and(|epoch| epoch != state.epoch) {
            return None;
        }
        let gone = state.current.take();
        Some(gone.is_none() || self.events.push(Event::SessionClosed))
    }

    /// Waits until no other session operation runs.
    pub(crate) async fn session_op(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.session_op.lock().await
    }

    /// Closes the client without waiting: no new work, pending requests fail, the driver
    /// writes what was queued, then a close frame.
    pub(crate) fn shut_down(&self) {
        if !self.closing.raise() {
            return;
        }
        self.stop.cancel();
        self.state.send_replace(State::Closed);
        self.fail_generation(None, &RequestError::ClientClosed);
        self.closing.wake();
        self.events.finish();
    }
}

/// The client's session and its epoch.
///
/// The epoch counts the session's changes (a session created or restored) and the session
/// requests sent (restore, close). A session request remembers the epoch it was sent at;
/// its reply is applied when the requester still waits for it (session requests never
/// overlap, so nothing newer can have been asked for) and, once the requester gave up (a
/// timeout, a dropped call), only while the epoch is the same: a late reply never replaces
/// a session that came since, nor undoes a request sent since. Forgetting the session does
/// not count: a late restore that finds no session takes its place, in step with the
/// server that restored it.
#[derive(Debug, Default)]
pub(crate) struct SessionState {
    pub(crate) current: Option<Session>,
    pub(crate) epoch: u64,
}

impl SessionState {
    /// Counts a change or a request; returns the new epoch.
    pub(crate) fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }
}

impl std::fmt::Debug for State {
    /// The state and the connection's generation; nothing of the link's queue.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Connecting => f.write_str("Connecting"),
            State::Connected(link) => f
                .debug_struct("Connected")
                .field("generation", &link.generation)
                .finish(),
            State::Down => f.write_str("Down"),
            State::Closed => f.write_str("Closed"),
        }
    }
}
