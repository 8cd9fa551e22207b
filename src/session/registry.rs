//! [`SessionRegistry`]: which live connections hold which session (PROTOCOL.md §4.6).
//!
//! Only connection ids live here; the server keeps its own id → connection map. The limit
//! check and the registration happen under one lock, so two restores racing for the last
//! free place cannot both win (the Go server checks and registers separately, §8 defect 2).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::SessionError;

/// Session key → ids of the connections currently holding that session.
pub(crate) struct SessionRegistry {
    /// The most connections one session may have; 0 means no limit.
    max_connections_per_session: usize,
    /// Never holds an empty list: a key leaves the map with its last connection. A list,
    /// not a set: sessions have a few connections (often one), so a scan beats hashing.
    sessions: Mutex<HashMap<String, Vec<u64>>>,
}

impl SessionRegistry {
    /// An empty registry allowing `max_connections_per_session` connections per session
    /// (0: no limit).
    pub(crate) fn new(max_connections_per_session: usize) -> Self {
        SessionRegistry {
            max_connections_per_session,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Registers `conn_id` under `key` unless the session is full; checking and inserting
    /// is one step. A connection already registered under `key` stays so and is not counted
    /// twice.
    pub(crate) fn try_register(&self, key: &str, conn_id: u64) -> Result<(), SessionError> {
        let limit = self.max_connections_per_session;
        let mut sessions = self.sessions();
        match sessions.get_mut(key) {
            Some(ids) if ids.contains(&conn_id) => {}
            Some(ids) if limit != 0 && ids.len() >= limit => {
                return Err(SessionError::LimitReached { limit });
            }
            Some(ids) => ids.push(conn_id),
            None => {
                sessions.insert(key.to_owned(), vec![conn_id]);
            }
        }
        Ok(())
    }

    /// Removes `conn_id` from `key`. True if it was the session's last connection (the
    /// caller then destroys the session if the connection left it explicitly); false if
    /// others remain or `conn_id` was not registered under `key`.
    pub(crate) fn deregister(&self, key: &str, conn_id: u64) -> bool {
        let mut sessions = self.sessions();
        let Some(ids) = sessions.get_mut(key) else {
            return false;
        };
        let Some(pos) = ids.iter().position(|&id| id == conn_id) else {
            return false;
        };
        ids.swap_remove(pos);
        if ids.is_empty() {
            sessions.remove(key);
            true
        } else {
            false
        }
    }

    /// The ids of the connections holding `key`, in no particular order; empty if none.
    pub(crate) fn connections(&self, key: &str) -> Vec<u64> {
        self.sessions().get(key).cloned().unwrap_or_default()
    }

    /// The number of sessions with at least one connection.
    pub(crate) fn active_sessions(&self) -> usize {
        self.sessions().len()
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Vec<u64>>> {
        // Each critical section leaves the map consistent before anything can panic.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts only: the keys are secrets.
impl fmt::Debug for SessionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRegistry")
            .field(
                "max_connections_per_session",
                &self.max_connections_per_session,
            )
            .field("active_sessions", &self.active_sessions())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};
    use std::thread;

    use super::*;

    /// `threads` threads register distinct connections under one key at the same moment;
    /// returns how many succeeded.
    fn race(limit: usize, threads: u64) -> (Arc<SessionRegistry>, usize) {
        let registry = Arc::new(SessionRegistry::new(limit));
        let barrier = Arc::new(Barrier::new(threads as usize));
        let handles: Vec<_> = (0..threads)
            .map(|id| {
                let (registry, barrier) = (Arc::clone(&registry), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    registry.try_register("k", id).is_ok()
                })
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&won| won)
            .count();
        (registry, wins)
    }

    #[test]
    fn racing_registrations_respect_the_limit() {
        for _ in 0..20 {
            let (registry, wins) = race(1, 16);
            assert_eq!(wins, 1);
            assert_eq!(registry.connections("k").len(), 1);

            let (registry, wins) = race(3, 32);
            assert_eq!(wins, 3);
            assert_eq!(registry.connections("k").len(), 3);
        }
    }

    #[test]
    fn no_limit_takes_everyone() {
        let (registry, wins) = race(0, 32);
        assert_eq!(wins, 32);
        let mut ids = registry.connections("k");
        ids.sort_unstable();
        assert_eq!(ids, (0..32).collect::<Vec<_>>());
    }

    #[test]
    fn the_limit_error_names_the_limit() {
        let registry = SessionRegistry::new(2);
        registry.try_register("k", 1).unwrap();
        registry.try_register("k", 2).unwrap();
        let err = registry.try_register("k", 3).unwrap_err();
        assert_eq!(err, SessionError::LimitReached { limit: 2 });
        // Other sessions have their own places.
        registry.try_register("other", 3).unwrap();
    }

    #[test]
    fn registering_twice_counts_once() {
        let registry = SessionRegistry::new(1);
        registry.try_register("k", 7).unwrap();
        registry.try_register("k", 7).unwrap();
        assert_eq!(registry.connections("k"), [7]);
        assert!(registry.deregister("k", 7));
    }

    #[test]
    fn deregistering_reports_the_last_connection() {
        let registry = SessionRegistry::new(0);
        registry.try_register("a", 1).unwrap();
        registry.try_register("a", 2).unwrap();
        registry.try_register("b", 3).unwrap();
        assert_eq!(registry.active_sessions(), 2);

        assert!(!registry.deregister("a", 9), "unknown connection");
        assert!(!registry.deregister("zzz", 1), "unknown key");
        assert!(!registry.deregister("b", 1), "connection of another key");
        assert!(!registry.deregister("a", 1), "one left");
        assert_eq!(registry.connections("a"), [2]);
        assert!(registry.deregister("a", 2), "the last one");
        assert!(!registry.deregister("a", 2), "already gone");

        assert_eq!(registry.active_sessions(), 1);
        assert_eq!(registry.connections("a").len(), 0);
        assert!(registry.connections("a").is_empty());
    }

    #[test]
    fn a_freed_place_can_be_taken() {
        let registry = SessionRegistry::new(1);
        registry.try_register("k", 1).unwrap();
        assert!(registry.try_register("k", 2).is_err());
        assert!(registry.deregister("k", 1));
        registry.try_register("k", 2).unwrap();
    }

    #[test]
    fn debug_hides_keys() {
        let registry = SessionRegistry::new(4);
        registry.try_register("secret", 1).unwrap();
        assert_eq!(
            format!("{registry:?}"),
            "SessionRegistry { max_connections_per_session: 4, active_sessions: 1 }"
        );
    }
}
