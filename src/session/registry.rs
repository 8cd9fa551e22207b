//! [`SessionRegistry`]: which live connections hold which session (PROTOCOL.md §4.6).
//!
//! Each registration is a connection id with the holder's handle (the server stores its
//! `Connection`, so a revocation reaches every holder from one lock). The limit check and
//! the registration happen under one lock, so two restores racing for the last free place
//! cannot both win (the Go server checks and registers separately, §8 defect 2). A
//! revocation takes a key's whole entry out under the same lock, and a restore attaches its
//! session only while its registration is still there ([`attach`]), so a
//! restore racing a revocation either ends before it (and is revoked with the rest) or
//! fails.
//!
//! [`attach`]: SessionRegistry::attach

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use super::SessionError;
use crate::sync;

/// Key → the connections registered under it, each with its holder's handle `T`.
pub(crate) struct SessionRegistry<T> {
    max_connections_per_session: usize,
    sessions: Mutex<HashMap<String, Vec<(u64, T)>>>,
    /// Told the number of keys after every change, under the lock, so that what it
    /// reports (a metrics gauge) is never an older count set after a newer one.
    observer: Option<Box<dyn Fn(usize) + Send + Sync>>,
    /// Told of each key that gets its first registration (`true`) or loses its last
    /// (`false`), under the lock, so that it hears a key's comings and goings in order.
    on_key: Option<OnKey>,
}

/// What [`SessionRegistry::on_key`] calls.
type OnKey = Box<dyn Fn(&str, bool) + Send + Sync>;

impl<T: Clone> SessionRegistry<T> {
    /// A registry allowing `max_connections_per_session` connections per key (0: no limit).
    pub(crate) fn new(max_connections_per_session: usize) -> Self {
        SessionRegistry {
            max_connections_per_session,
            sessions: Mutex::new(HashMap::new()),
            observer: None,
            on_key: None,
        }
    }

    /// Tells `on_key` of each key that gets its first registration (`true`) or loses its
    /// last (`false`).
    pub(crate) fn on_key(mut self, on_key: impl Fn(&str, bool) + Send + Sync + 'static) -> Self {
        self.on_key = Some(Box::new(on_key));
        self
    }

    /// Tells `observer` the number of keys with a connection after every change.
    pub(crate) fn observed(mut self, observer: impl Fn(usize) + Send + Sync + 'static) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    fn changed(&self, sessions: &HashMap<String, Vec<(u64, T)>>, key: &str, added: bool) {
        if let Some(observer) = &self.observer {
            observer(sessions.len());
        }
        if let Some(on_key) = &self.on_key {
            on_key(key, added);
        }
    }

    /// Registers `conn_id` (held by `holder`) under `key`, unless the key already has its
    /// maximum of connections. Registering a connection twice counts once.
    pub(crate) fn register(&self, key: &str, conn_id: u64, holder: &T) -> Result<(), SessionError> {
        let limit = self.max_connections_per_session;
        let mut sessions = self.sessions();
        match sessions.get_mut(key) {
            Some(ids) if ids.iter().any(|(id, _)| *id == conn_id) => {}
            Some(ids) if limit != 0 && ids.len() >= limit => {
                return Err(SessionError::LimitReached { limit });
            }
            Some(ids) => ids.push((conn_id, holder.clone())),
            None => {
                sessions.insert(key.to_owned(), vec![(conn_id, holder.clone())]);
                self.changed(&sessions, key, true);
            }
        }
        Ok(())
    }

    /// Removes `conn_id` from `key`; true if it was the key's last connection.
    pub(crate) fn disconnect(&self, key: &str, conn_id: u64) -> bool {
        // Every other registration keeps the key.
        self.leave(key, conn_id, |_| true)
    }

    /// Removes `conn_id` from `key` as a connection that leaves the session for good; true
    /// if no remaining registration `holds` it (only restores still under way, if any), in
    /// which case the key's entry goes too, so that those restores fail to attach: the
    /// session ends with its last holder, not with its last registration.
    pub(crate) fn leave(&self, key: &str, conn_id: u64, holds: impl Fn(&T) -> bool) -> bool {
        let mut sessions = self.sessions();
        let Some(ids) = sessions.get_mut(key) else {
            return false;
        };
        let Some(pos) = ids.iter().position(|(id, _)| *id == conn_id) else {
            return false;
        };
        ids.swap_remove(pos);
        if ids.iter().any(|(_, holder)| holds(holder)) {
            return false;
        }
        sessions.remove(key);
        self.changed(&sessions, key, false);
        true
    }

    /// Runs `attach` if `conn_id` is still registered under `key`, under the registry's
    /// lock (so a [`revoke`](Self::revoke) is wholly before or after it); false if not.
    pub(crate) fn attach(&self, key: &str, conn_id: u64, attach: impl FnOnce()) -> bool {
        let sessions = self.sessions();
        let registered = sessions
            .get(key)
            .is_some_and(|ids| ids.iter().any(|(id, _)| *id == conn_id));
        if registered {
            attach();
        }
        registered
    }

    /// Takes every registration of `key` out at once and returns their holders.
    pub(crate) fn revoke(&self, key: &str) -> Vec<T> {
        let mut sessions = self.sessions();
        let revoked = sessions.remove(key);
        if revoked.is_some() {
            self.changed(&sessions, key, false);
        }
        revoked
            .map(|ids| ids.into_iter().map(|(_, holder)| holder).collect())
            .unwrap_or_default()
    }

    /// The holders registered under `key`.
    pub(crate) fn holders(&self, key: &str) -> Vec<T> {
        self.sessions()
            .get(key)
            .map(|ids| ids.iter().map(|(_, holder)| holder.clone()).collect())
            .unwrap_or_default()
    }

    /// Every key with a registration.
    pub(crate) fn keys(&self) -> Vec<String> {
        self.sessions().keys().cloned().collect()
    }

    /// How many keys have at least one connection.
    pub(crate) fn active_sessions(&self) -> usize {
        self.sessions().len()
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Vec<(u64, T)>>> {
        // Each critical section leaves the map consistent before anything can panic.
        sync::lock(&self.sessions)
    }
}

impl<T: Clone> fmt::Debug for SessionRegistry<T> {
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
    fn race(limit: usize, threads: u64) -> (Arc<SessionRegistry<u64>>, usize) {
        let registry = Arc::new(SessionRegistry::<u64>::new(limit));
        let barrier = Arc::new(Barrier::new(threads as usize));
        let handles: Vec<_> = (0..threads)
            .map(|id| {
                let (registry, barrier) = (Arc::clone(&registry), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    registry.register("k", id, &id).is_ok()
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
            assert_eq!(registry.holders("k").len(), 1);

            let (registry, wins) = race(3, 32);
            assert_eq!(wins, 3);
            assert_eq!(registry.holders("k").len(), 3);
        }
    }

    #[test]
    fn no_limit_takes_everyone() {
        let (registry, wins) = race(0, 32);
        assert_eq!(wins, 32);
        let mut ids = registry.holders("k");
        ids.sort_unstable();
        assert_eq!(ids, (0..32).collect::<Vec<_>>());
    }

    #[test]
    fn the_limit_error_names_the_limit() {
        let registry = SessionRegistry::<u64>::new(2);
        registry.register("k", 1, &1).unwrap();
        registry.register("k", 2, &2).unwrap();
        let err = registry.register("k", 3, &3).unwrap_err();
        assert_eq!(err, SessionError::LimitReached { limit: 2 });
        // Other sessions have their own places.
        registry.register("other", 3, &3).unwrap();
    }

    #[test]
    fn registering_twice_counts_once() {
        let registry = SessionRegistry::<u64>::new(1);
        registry.register("k", 7, &7).unwrap();
        registry.register("k", 7, &7).unwrap();
        assert_eq!(registry.holders("k"), [7]);
        assert!(registry.disconnect("k", 7));
    }

    #[test]
    fn deregistering_reports_the_last_connection() {
        let registry = SessionRegistry::<u64>::new(0);
        registry.register("a", 1, &1).unwrap();
        registry.register("a", 2, &2).unwrap();
        registry.register("b", 3, &3).unwrap();
        assert_eq!(registry.active_sessions(), 2);

        assert!(!registry.disconnect("a", 9), "unknown connection");
        assert!(!registry.disconnect("zzz", 1), "unknown key");
        assert!(!registry.disconnect("b", 1), "connection of another key");
        assert!(!registry.disconnect("a", 1), "one left");
        assert_eq!(registry.holders("a"), [2]);
        assert!(registry.disconnect("a", 2), "the last one");
        assert!(!registry.disconnect("a", 2), "already gone");

        assert_eq!(registry.active_sessions(), 1);
        assert_eq!(registry.holders("a").len(), 0);
        assert!(registry.holders("a").is_empty());
    }

    #[test]
    fn a_freed_place_can_be_taken() {
        let registry = SessionRegistry::<u64>::new(1);
        registry.register("k", 1, &1).unwrap();
        assert!(registry.register("k", 2, &2).is_err());
        assert!(registry.disconnect("k", 1));
        registry.register("k", 2, &2).unwrap();
    }

    #[test]
    fn debug_hides_keys() {
        let registry = SessionRegistry::<u64>::new(4);
        registry.register("secret", 1, &1).unwrap();
        assert_eq!(
            format!("{registry:?}"),
            "SessionRegistry { max_connections_per_session: 4, active_sessions: 1 }"
        );
    }

    #[test]
    fn a_revocation_takes_every_holder_and_stops_later_attaches() {
        let registry = SessionRegistry::<u64>::new(0);
        registry.register("k", 1, &1).unwrap();
        registry.register("k", 2, &2).unwrap();
        let mut attached = false;
        assert!(registry.attach("k", 1, || attached = true));
        assert!(attached);

        let mut revoked = registry.revoke("k");
        revoked.sort_unstable();
        assert_eq!(revoked, [1, 2]);
        assert!(registry.holders("k").is_empty());
        assert!(!registry.attach("k", 2, || panic!("attached a revoked key")));
        assert!(!registry.disconnect("k", 2), "nothing left to disconnect");
        assert!(registry.revoke("k").is_empty());
    }

    #[test]
    fn the_last_holder_leaving_ends_registrations_still_pending() {
        let registry = SessionRegistry::<u64>::new(0);
        for id in [1, 2, 3] {
            registry.register("k", id, &id).unwrap();
        }
        // 1 and 2 hold the session; 3 is restoring.
        let holds = |holders: &[u64]| {
            let holders = holders.to_vec();
            move |id: &u64| holders.contains(id)
        };
        assert!(!registry.leave("k", 1, holds(&[2])), "2 still holds it");
        assert!(registry.leave("k", 2, holds(&[])), "only a restore is left");
        assert!(registry.holders("k").is_empty());
        assert!(!registry.attach("k", 3, || panic!("attached after the end")));
        assert!(!registry.leave("k", 3, holds(&[])), "already gone");
    }

    #[test]
    fn the_observer_hears_every_change_of_the_count() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let seen = Arc::new(AtomicUsize::new(usize::MAX));
        let registry = SessionRegistry::<u64>::new(0).observed({
            let seen = Arc::clone(&seen);
            move |count| seen.store(count, Ordering::Relaxed)
        });
        let count = || seen.load(Ordering::Relaxed);
        registry.register("a", 1, &1).unwrap();
        registry.register("b", 2, &2).unwrap();
        registry.register("b", 3, &3).unwrap();
        assert_eq!(count(), 2);
        registry.disconnect("b", 2);
        assert_eq!(count(), 2, "b still has a connection");
        registry.disconnect("b", 3);
        assert_eq!(count(), 1);
        registry.register("c", 4, &4).unwrap();
        assert!(registry.leave("c", 4, |_| false));
        assert_eq!(count(), 1);
        registry.revoke("a");
        assert_eq!(count(), 0);
    }
}
