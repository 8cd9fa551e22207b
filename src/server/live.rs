//! The open connections of a server: [`Live`], by id (how a shutdown reaches their
//! drivers), and [`Places`], their count against `max_connections` and each source's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::server::config::Config;
use crate::server::metrics::Metrics;
use crate::server::source::Source;
use crate::server::{CloseReason, Connection};
use crate::sync;

/// The open connections of a server, by id: how a shutdown reaches their drivers.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Whether the shutdown closed them all (a connection that registers later is closed
    /// at once), and the connections.
    conns: Mutex<(bool, HashMap<u64, Connection>)>,
}

impl Live {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, (bool, HashMap<u64, Connection>)> {
        // Every critical section is one map operation: a panic cannot leave it half done.
        sync::lock(&self.conns)
    }

    /// A connection starts; closed at once if the shutdown already closed the others.
    pub(crate) fn register(&self, conn: &Connection) {
        let mut live = self.lock();
        if live.0 {
            drop(live);
            conn.close_with(CloseReason::ServerShutdown);
        } else {
            live.1.insert(conn.id(), conn.clone());
        }
    }

    pub(crate) fn deregister(&self, conn: &Connection) {
        self.lock().1.remove(&conn.id());
    }

    /// Closes every connection, now and from now on.
    pub(crate) fn close_all(&self) {
        let conns: Vec<Connection> = {
            let mut live = self.lock();
            live.0 = true;
            live.1.values().cloned().collect()
        };
        for conn in conns {
            conn.close_with(CloseReason::ServerShutdown);
        }
    }
}

/// Counts the open WebWire connections against the server's `max_connections`, and each
/// source's against `max_connections_per_source`.
#[derive(Debug)]
pub(crate) struct Places {
    live: AtomicUsize,
    /// 0: no limit.
    max: usize,
    /// 0: no limit.
    max_per_source: usize,
    v6_prefix: u8,
    /// Open connections by source (only sources with some).
    per_source: Mutex<HashMap<Source, usize>>,
    /// `webwire_connections_open` follows `live`.
    metrics: Metrics,
}

/// One open connection's place among the server's `max_connections` (and its source's);
/// given back on drop.
#[derive(Debug)]
pub(crate) struct Place(Arc<Places>, Option<Source>);

impl Places {
    /// No connection open yet; the limits of `config`.
    pub(crate) fn new(config: &Config, metrics: Metrics) -> Self {
        Places {
            live: AtomicUsize::new(0),
            max: config.max_connections,
            max_per_source: config.max_connections_per_source,
            v6_prefix: config.admission.v6_prefix,
            per_source: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// How many connections are open.
    pub(crate) fn count(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Whether the server is full: a look only, no place is taken (so another upgrade may
    /// take the last one before [`try_take`](Self::try_take)).
    pub(crate) fn is_full(&self) -> bool {
        self.max != 0 && self.live.load(Ordering::Acquire) >= self.max
    }

    /// A place for one more connection from `remote_addr`, unless the server or its
    /// source is full. Checking and counting is one step, so racing upgrades cannot
    /// overshoot either limit.
    pub(crate) fn try_take(self: &Arc<Self>, remote_addr: Option<SocketAddr>) -> Option<Place> {
        let fits = |live: usize| (self.max == 0 || live < self.max).then_some(live + 1);
        if self
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, fits)
            .is_err()
        {
            self.metrics.connection_rejected();
            return None;
        }
        let source = remote_addr
            .filter(|_| self.max_per_source != 0)
            .map(|addr| Source::of(addr.ip(), self.v6_prefix));
        if let Some(source) = source {
            let mut per_source = self.per_source();
            let open = per_source.entry(source).or_insert(0);
            if *open >= self.max_per_source {
                drop(per_source);
                self.live.fetch_sub(1, Ordering::AcqRel);
                tracing::debug!(%source, "connection refused: its source has max_connections_per_source open");
                self.metrics.connection_rejected();
                return None;
            }
            *open += 1;
        }
        self.metrics.connection_opened();
        Some(Place(Arc::clone(self), source))
    }

    pub(crate) fn per_source(&self) -> std::sync::MutexGuard<'_, HashMap<Source, usize>> {
        // One map operation per critical section: a panic cannot leave it half done.
        sync::lock(&self.per_source)
    }

    pub(crate) fn give_back_source(&self, source: Option<Source>) {
        if let Some(source) = source {
            let mut per_source = self.per_source();
            if let Some(open) = per_source.get_mut(&source) {
                *open -= 1;
                if *open == 0 {
                    per_source.remove(&source);
                }
            }
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.give_back_source(self.1);
        self.0.live.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.connection_gone();
    }
}
