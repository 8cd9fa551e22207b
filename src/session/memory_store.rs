//! [`MemoryStore`]: sessions in a map, gone when the process ends. The default store.
//!
//! Bounded three times: a session not looked up for the idle timeout is gone, and beyond
//! the capacity in sessions or in bytes a session makes room: one never restored before
//! one that was, the idle longest first. All are enforced by the store's own operations
//! (no task, no timer): every call first drops the sessions that have expired, oldest
//! first, from use-ordered indexes, so the work is amortised O(log n) per call.
//!
//! Over 600 lines (606, 406 before the unit tests): the store itself; the rest is its unit
//! tests of the bounds, which need its private maps.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::time::Instant;

use super::store::invalid_record;
use super::{Session, SessionStore, StoreError};
use crate::sync;

/// Sessions in memory: fast, never fails, lost when the process exits, and bounded.
///
/// - **Idle expiry** ([`idle_timeout`](Self::idle_timeout), default
///   [`DEFAULT_IDLE_TIMEOUT`](Self::DEFAULT_IDLE_TIMEOUT), 14 days): a session neither saved
///   nor looked up (restored) for that long is gone, as if removed. A connection that holds
///   a session does not keep it alive: the time runs from the last save or restore.
/// - **Capacity** ([`capacity`](Self::capacity), default
///   [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY), 100 000 sessions, and
///   [`max_bytes`](Self::max_bytes), default [`DEFAULT_MAX_BYTES`](Self::DEFAULT_MAX_BYTES),
///   256 MiB): saving a session into a full store evicts first the sessions that were never
///   restored, idle longest first, and only when none is left those that were (least
///   recently saved or looked up first). New logins always succeed; a flood of logins that
///   are never used again (a script logging in and vanishing) pushes out its own kind, not
///   the users who came back. A store that refused new sessions instead would let one
///   account that logs in over and over lock everyone else out. The server adds a budget
///   per source address on top
///   ([`max_sessions_per_source`](crate::server::ServerBuilder::max_sessions_per_source)),
///   so one address cannot fill the store with fresh sessions either.
///
/// Memory: a session is kept in its JSON wire form, plus about 250 bytes of bookkeeping
/// (two copies of its key, the map entries, its place in the use order); `max_bytes`
/// counts the JSON, both copies of the key and [`ENTRY_OVERHEAD`](Self::ENTRY_OVERHEAD)
/// bytes for the rest. Measured with
/// `cargo bench --bench store_memory`: 396 bytes per session whose info is one short
/// string, so a full default store of such sessions takes about 40 MiB; 8.4 KiB per session
/// with 8 000 bytes of info. Info is what the application puts in, and the server refuses
/// a session whose restore reply would exceed the message size limit (8 KiB by default),
/// which bounds one session: a full default store of sessions that large would take about
/// 0.8 GiB, so lower the capacity if sessions are large.
///
/// ```
/// use std::time::Duration;
/// use tokio_webwire::session::{MemoryStore, SessionStore};
/// use tokio_webwire::{Session, SessionInfo};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let store = MemoryStore::new()
///     .idle_timeout(Duration::from_secs(7 * 24 * 3600))
///     .capacity(10_000);
/// let session = Session::new("key-1", SessionInfo::new());
/// store.save(&session).await?;
/// let found = store.lookup("key-1").await?.unwrap();
/// assert_eq!(found.created, session.created);
/// assert!(found.last_lookup >= session.last_lookup);
/// store.remove("key-1").await?;
/// assert!(store.is_empty());
/// # Ok::<(), tokio_webwire::session::StoreError>(()) }).unwrap();
/// ```
pub struct MemoryStore {
    idle_timeout: Option<Duration>,
    capacity: usize,
    max_bytes: usize,
    // A std mutex: every operation is a few map accesses, never held across an await.
    sessions: Mutex<Sessions>,
    evicted: AtomicU64,
}

/// The sessions, and the order in which they were last used: those never looked up
/// (`fresh`) apart from those restored at least once (`proven`), so eviction takes the
/// fresh ones first.
#[derive(Default)]
struct Sessions {
    by_key: HashMap<String, Entry>,
    /// Use number → key of sessions never looked up, least recently used first.
    fresh: BTreeMap<u64, String>,
    /// Use number → key of sessions looked up at least once, least recently used first.
    proven: BTreeMap<u64, String>,
    next_use: u64,
    /// What the sessions take, as `max_bytes` counts it.
    bytes: usize,
}

struct Entry {
    /// The session in its JSON wire form: a fifth of the parsed form's memory for a small
    /// session (a `SessionInfo` map allocates room for eleven fields), parsed again on the
    /// rare lookup.
    json: Bytes,
    /// Its key in `fresh` or `proven`.
    use_number: u64,
    /// Looked up at least once: in `proven`.
    proven: bool,
    /// When it was last saved or looked up (tokio's clock, so that tests can move it).
    used_at: Instant,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            idle_timeout: Some(Self::DEFAULT_IDLE_TIMEOUT),
            capacity: Self::DEFAULT_CAPACITY,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            sessions: Mutex::new(Sessions::default()),
            evicted: AtomicU64::new(0),
        }
    }
}

impl MemoryStore {
    /// How long a session lives without a save or lookup, unless set: 14 days.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(14 * 24 * 3600);

    /// How many sessions a store keeps, unless set: 100 000.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// How many bytes of sessions a store keeps, unless set: 256 MiB (about 30 000 sessions
    /// of the largest a default server accepts, 8 KiB each; 650 000 small ones, beyond the
    /// default capacity).
    pub const DEFAULT_MAX_BYTES: usize = 256 << 20;

    /// The bookkeeping `max_bytes` counts per session besides its JSON and two copies of
    /// its key: the map entries and the use index. Not measured on its own: the about 250
    /// bytes of bookkeeping `benches/store_memory` measured per session (keys included)
    /// less the two 43-byte keys, rounded up.
    pub const ENTRY_OVERHEAD: usize = 160;

    /// An empty store with the default bounds.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sessions neither saved nor looked up for `timeout` are gone (default: 14 days).
    /// `Duration::ZERO` turns expiry off: sessions then stay until removed or evicted.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_webwire::session::MemoryStore;
    ///
    /// let store = MemoryStore::new().idle_timeout(Duration::from_secs(3600));
    /// ```
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// At most `sessions` are kept (default: 100 000); saving one more evicts the session
    /// idle longest. 0 means no bound, which lets a client that logs in over and over grow
    /// the store until the idle timeout.
    ///
    /// ```
    /// use tokio_webwire::session::MemoryStore;
    ///
    /// let store = MemoryStore::new().capacity(1_000);
    /// ```
    #[must_use]
    pub fn capacity(mut self, sessions: usize) -> Self {
        self.capacity = sessions;
        self
    }

    /// At most `bytes` of sessions are kept (default 256 MiB): their JSON, two copies of
    /// each key and [`ENTRY_OVERHEAD`](Self::ENTRY_OVERHEAD) per session; saving beyond
    /// evicts as beyond the [`capacity`](Self::capacity). 0 means no bound in bytes.
    ///
    /// ```
    /// use tokio_webwire::session::MemoryStore;
    ///
    /// let store = MemoryStore::new().max_bytes(64 << 20);
    /// ```
    #[must_use]
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// What the stored sessions take, as [`max_bytes`](Self::max_bytes) counts it.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use tokio_webwire::session::{MemoryStore, SessionStore};
    /// use tokio_webwire::{Session, SessionInfo};
    ///
    /// let store = MemoryStore::new();
    /// assert_eq!(store.bytes(), 0);
    /// store.save(&Session::new("key-1", SessionInfo::new())).await?;
    /// assert!(store.bytes() > MemoryStore::ENTRY_OVERHEAD);
    /// # Ok::<(), tokio_webwire::session::StoreError>(()) }).unwrap();
    /// ```
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.sessions().bytes
    }

    /// The number of stored sessions that have not expired.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use tokio_webwire::session::{MemoryStore, SessionStore};
    /// use tokio_webwire::{Session, SessionInfo};
    ///
    /// let store = MemoryStore::new();
    /// store.save(&Session::new("key-1", SessionInfo::new())).await?;
    /// assert_eq!(store.len(), 1);
    /// # Ok::<(), tokio_webwire::session::StoreError>(()) }).unwrap();
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.sessions().by_key.len()
    }

    /// Whether the store holds no session that has not expired.
    ///
    /// ```
    /// use tokio_webwire::session::MemoryStore;
    ///
    /// assert!(MemoryStore::new().is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many sessions were evicted to make room (not those that expired).
    ///
    /// ```
    /// use tokio_webwire::session::MemoryStore;
    ///
    /// assert_eq!(MemoryStore::new().evicted(), 0);
    /// ```
    #[must_use]
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// The sessions, with those that have expired dropped.
    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        // Every critical section leaves the maps consistent before anything can panic:
        // poisoning carries no information here.
        let mut sessions = sync::lock(&self.sessions);
        if let Some(timeout) = self.idle_timeout {
            let now = Instant::now();
            sessions.expire(|used_at| now.saturating_duration_since(used_at) >= timeout);
        }
        sessions
    }
}

/// What `max_bytes` counts for a session.
fn cost(key: &str, json: &[u8]) -> usize {
    2 * key.len() + json.len() + MemoryStore::ENTRY_OVERHEAD
}

impl Sessions {
    /// Drops the least recently used sessions of each index while `expired` says so of
    /// them.
    fn expire(&mut self, expired: impl Fn(Instant) -> bool) {
        for proven in [false, true] {
            loop {
                let index = if proven { &self.proven } else { &self.fresh };
                let Some((_, key)) = index.first_key_value() else {
                    break;
                };
                let used_at = self.by_key.get(key).map(|e| e.used_at);
                if used_at.is_some_and(|used_at| !expired(used_at)) {
                    break;
                }
                let key = key.clone();
                self.remove(&key);
            }
        }
    }

    fn index(&mut self, proven: bool) -> &mut BTreeMap<u64, String> {
        if proven {
            &mut self.proven
        } else {
            &mut self.fresh
        }
    }

    /// The next use number, which orders `fresh` and `proven`.
    fn next_use(&mut self) -> u64 {
        self.next_use += 1;
        self.next_use
    }

    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.by_key.remove(key) {
            self.index(entry.proven).remove(&entry.use_number);
            self.bytes -= cost(key, &entry.json);
        }
    }

    /// Drops the session never restored that is idle longest, or if none is left, the
    /// restored one idle longest. False when the store is empty.
    fn evict_one(&mut self) -> bool {
        let oldest = self
            .fresh
            .first_key_value()
            .or_else(|| self.proven.first_key_value())
            .map(|(_, key)| key.clone());
        match oldest {
            Some(key) => {
                self.remove(&key);
                true
            }
            None => false,
        }
    }
}

impl SessionStore for MemoryStore {
    async fn save(&self, session: &Session) -> Result<(), StoreError> {
        // Copied to an allocation of its exact size: the encoder's buffer has room to
        // spare (up to half of it), which a store of many sessions would keep.
        let json = Bytes::copy_from_slice(&session.to_json().map_err(invalid_record)?);
        let cost = cost(&session.key, &json);
        let mut sessions = self.sessions();
        // Saved again (a renewal), it keeps its standing.
        let proven = sessions.by_key.get(&session.key).is_some_and(|e| e.proven);
        sessions.remove(&session.key);
        while (self.capacity != 0 && sessions.by_key.len() >= self.capacity)
            || (self.max_bytes != 0 && sessions.bytes + cost > self.max_bytes)
        {
            if !sessions.evict_one() {
                break; // Alone larger than `max_bytes`: kept, there is nothing to evict.
            }
            if self.evicted.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    capacity = self.capacity,
                    max_bytes = self.max_bytes,
                    "session store full: evicting sessions never restored first, idle longest first"
                );
            }
        }
        let use_number = sessions.next_use();
        sessions
            .index(proven)
            .insert(use_number, session.key.clone());
        let entry = Entry {
            json,
            use_number,
            proven,
            used_at: Instant::now(),
        };
        sessions.bytes += cost;
        sessions.by_key.insert(session.key.clone(), entry);
        Ok(())
    }

    async fn lookup(&self, key: &str) -> Result<Option<Session>, StoreError> {
        let mut guard = self.sessions();
        let use_number = guard.next_use();
        let sessions = &mut *guard;
        let Some(entry) = sessions.by_key.get_mut(key) else {
            return Ok(None);
        };
        // A lookup is a use: it moves the session to the back of the eviction order, among
        // the proven ones.
        let from = if entry.proven {
            &mut sessions.proven
        } else {
            &mut sessions.fresh
        };
        if let Some(key) = from.remove(&entry.use_number) {
            sessions.proven.insert(use_number, key);
        }
        entry.proven = true;
        entry.use_number = use_number;
        entry.used_at = Instant::now();
        let mut session = Session::from_json(&entry.json).map_err(invalid_record)?;
        // The stored `l` is left as saved: the lookup time is only ever read back here.
        session.last_lookup = OffsetDateTime::now_utc();
        Ok(Some(session))
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.sessions().remove(key);
        Ok(())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("len", &self.len())
            .field("idle_timeout", &self.idle_timeout)
            .field("capacity", &self.capacity)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionInfo;

    #[tokio::test]
    async fn round_trip() {
        let store = MemoryStore::new();
        let mut info = SessionInfo::new();
        info.insert("uid", &42).unwrap();
        let session = Session::new("k1", info);
        store.save(&session).await.unwrap();
        assert_eq!(store.len(), 1);

        let found = store.lookup("k1").await.unwrap().unwrap();
        assert_eq!(found.key, "k1");
        assert_eq!(found.created, session.created);
        assert_eq!(found.info, session.info);
        assert!(found.last_lookup >= session.last_lookup);

        assert_eq!(store.lookup("k2").await.unwrap(), None);
        store.remove("k2").await.unwrap();
        store.remove("k1").await.unwrap();
        assert_eq!(store.lookup("k1").await.unwrap(), None);
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn lookup_records_and_returns_the_new_last_lookup() {
        let store = MemoryStore::new();
        let mut session = Session::new("k", SessionInfo::new());
        session.last_lookup = session.created - time::Duration::hours(1);
        store.save(&session).await.unwrap();

        let first = store.lookup("k").await.unwrap().unwrap();
        assert!(first.last_lookup > session.last_lookup);
        let second = store.lookup("k").await.unwrap().unwrap();
        assert!(second.last_lookup >= first.last_lookup);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_expires_after_the_idle_timeout_since_its_last_use() {
        let hour = Duration::from_secs(3600);
        let store = MemoryStore::new().idle_timeout(hour);
        store
            .save(&Session::new("k", SessionInfo::new()))
            .await
            .unwrap();
        store
            .save(&Session::new("other", SessionInfo::new()))
            .await
            .unwrap();

        tokio::time::advance(hour - Duration::from_secs(1)).await;
        assert!(
            store.lookup("k").await.unwrap().is_some(),
            "a use renews it"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(store.len(), 1, "the unused one has expired");
        assert_eq!(store.lookup("other").await.unwrap(), None);

        // "k" was last used an hour less a second ago; a second short of its timeout:
        tokio::time::advance(hour - Duration::from_secs(2)).await;
        assert!(store.lookup("k").await.unwrap().is_some());
        tokio::time::advance(hour).await;
        assert_eq!(store.lookup("k").await.unwrap(), None);
        assert!(store.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_idle_timeout_keeps_sessions() {
        let store = MemoryStore::new().idle_timeout(Duration::ZERO);
        store
            .save(&Session::new("k", SessionInfo::new()))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(10 * 365 * 24 * 3600)).await;
        assert!(store.lookup("k").await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_evicts_the_session_idle_longest() {
        let store = MemoryStore::new().capacity(3);
        for key in ["a", "b", "c"] {
            store
                .save(&Session::new(key, SessionInfo::new()))
                .await
                .unwrap();
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        // "a" is used again: "b" is now the one idle longest.
        assert!(store.lookup("a").await.unwrap().is_some());
        store
            .save(&Session::new("d", SessionInfo::new()))
            .await
            .unwrap();
        assert_eq!(store.len(), 3);
        assert_eq!(store.evicted(), 1);
        assert_eq!(store.lookup("b").await.unwrap(), None);
        for key in ["a", "c", "d"] {
            assert!(store.lookup(key).await.unwrap().is_some(), "{key} kept");
        }
        // Saving a stored key again replaces it, it does not evict another.
        store
            .save(&Session::new("c", SessionInfo::new()))
            .await
            .unwrap();
        assert_eq!((store.len(), store.evicted()), (3, 1));
    }

    #[tokio::test]
    async fn a_flood_of_sessions_never_restored_evicts_its_own_kind_first() {
        let store = MemoryStore::new().capacity(10);
        // Five users who came back (restored at least once)...
        for n in 0..5 {
            let key = format!("user-{n}");
            store
                .save(&Session::new(key.clone(), SessionInfo::new()))
                .await
                .unwrap();
            assert!(store.lookup(&key).await.unwrap().is_some());
        }
        // ...and a script that logs in 1 000 times and never comes back.
        for n in 0..1000 {
            let key = format!("flood-{n}");
            store
                .save(&Session::new(key, SessionInfo::new()))
                .await
                .unwrap();
        }
        assert_eq!(store.len(), 10);
        assert_eq!(store.evicted(), 995);
        for n in 0..5 {
            let key = format!("user-{n}");
            assert!(store.lookup(&key).await.unwrap().is_some(), "{key} kept");
        }
        // The flood's latest are the fresh ones kept.
        assert!(store.lookup("flood-999").await.unwrap().is_some());
        assert_eq!(store.lookup("flood-994").await.unwrap(), None);
        // With no fresh session left, the proven ones idle longest go.
        let store = MemoryStore::new().capacity(2);
        for key in ["a", "b", "c"] {
            store
                .save(&Session::new(key, SessionInfo::new()))
                .await
                .unwrap();
            assert!(store.lookup(key).await.unwrap().is_some());
        }
        assert_eq!(store.lookup("a").await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_store_is_bounded_in_bytes() {
        let mut info = SessionInfo::new();
        info.insert("blob", &"x".repeat(4000)).unwrap();
        let one = cost(
            "key-00",
            &Session::new("key-00", info.clone()).to_json().unwrap(),
        );
        // Timestamps vary the JSON by a few bytes: room for ten, not eleven.
        let budget = 10 * one + one / 2;
        let store = MemoryStore::new().max_bytes(budget);
        for n in 0..25 {
            let session = Session::new(format!("key-{n:02}"), info.clone());
            store.save(&session).await.unwrap();
            assert!(store.bytes() <= budget, "{} over {budget}", store.bytes());
        }
        assert_eq!(store.len(), 10);
        assert_eq!(store.evicted(), 15);
        // Removing gives the bytes back.
        let before = store.bytes();
        store.remove("key-24").await.unwrap();
        assert!(
            before - store.bytes() > one - 16,
            "{before} → {}",
            store.bytes()
        );
    }

    #[test]
    fn debug_hides_keys() {
        let store = MemoryStore::new();
        store.sessions().by_key.insert(
            "secret".into(),
            Entry {
                json: Session::new("secret", SessionInfo::new())
                    .to_json()
                    .unwrap(),
                use_number: 0,
                proven: false,
                used_at: Instant::now(),
            },
        );
        let debug = format!("{store:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.starts_with("MemoryStore { len: 1,"), "{debug}");
    }
}
