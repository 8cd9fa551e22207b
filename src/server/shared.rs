//! [`Shared`]: what all connections of a server share.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backplane::{DynBackplane, Remote};
use crate::server::admission::Admission;
use crate::server::config::Config;
use crate::server::fanout::Hub;
use crate::server::metrics::Metrics;
use crate::server::sessions::{SessionConfig, SessionEvents, Sessions};
use crate::server::{Handler, Live, Places};

/// What all connections of a server share.
pub(crate) struct Shared<H> {
    pub(crate) handler: Arc<H>,
    /// Sessions and topics, also reached by the backplane.
    /// Sessions on this server: who holds which, and every operation on them.
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) config: Config,
    /// Set when a shutdown begins: upgrades get 503, requests the shutdown reply, signals
    /// are dropped. (A flag, not a token: it is read for every message, and a token's
    /// `is_cancelled` takes a lock.)
    pub(crate) shutting_down: AtomicBool,
    /// Cancelled when the shutdown has drained the handlers: `serve` loops and upgrades
    /// in progress stop (open connections are closed through `live`).
    pub(crate) close_all: CancellationToken,
    /// The open connections, so that a shutdown can close them.
    pub(crate) live: Live,
    /// Cancelled when the shutdown deadline passes: handlers still running are dropped.
    pub(crate) stop_handlers: CancellationToken,
    /// Connection tasks, from HTTP request to `disconnected` hook.
    pub(crate) connections: TaskTracker,
    /// Request and signal handler tasks.
    pub(crate) handlers: TaskTracker,
    /// Running `serve` loops, each until its listener is dropped.
    pub(crate) listeners: TaskTracker,
    pub(crate) next_connection_id: AtomicU64,
    /// Live WebWire connections, against `max_connections`.
    pub(crate) places: Arc<Places>,
    /// Sockets of ours not yet upgraded, against `max_pending_upgrades` and the limits
    /// per source.
    pub(crate) admission: Arc<Admission>,
    /// Cancelled when the shutdown is complete.
    pub(crate) shutdown_done: CancellationToken,
    /// The metric handles (nothing without the `metrics` feature).
    pub(crate) metrics: Metrics,
}

impl<H> Shared<H> {
    pub(crate) fn new(
        handler: H,
        config: Config,
        sessions: SessionConfig,
        backplane: Arc<dyn DynBackplane>,
        seal: Option<crate::backplane::Seal>,
    ) -> Self
    where
        H: Handler,
    {
        let handler = Arc::new(handler);
        let events: Arc<dyn SessionEvents> = handler.clone();
        let metrics = Metrics::new();
        let places = Arc::new(Places::new(&config, metrics.clone()));
        let admission = Admission::new(config.admission.clone());
        let remote = Arc::new(Remote::new(backplane, seal));
        let handlers = TaskTracker::new();
        let sessions = Arc::new(Sessions::new(sessions, events, Arc::clone(&remote)));
        Shared {
            admission,
            sessions: Arc::clone(&sessions),
            hub: Hub::new(
                sessions,
                remote,
                handlers.clone(),
                config.fanout.clone(),
                metrics.clone(),
            ),
            handler,
            config,
            shutting_down: AtomicBool::new(false),
            close_all: CancellationToken::new(),
            live: Live::default(),
            stop_handlers: CancellationToken::new(),
            connections: TaskTracker::new(),
            handlers,
            listeners: TaskTracker::new(),
            next_connection_id: AtomicU64::new(1),
            places,
            shutdown_done: CancellationToken::new(),
            metrics,
        }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub(crate) fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }
}
