//! [`MemoryStore`]: sessions in a map, gone when the process ends. The default store.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use time::OffsetDateTime;

use super::{Session, SessionStore, StoreError};

/// Sessions in memory: fast, never fails, and lost when the process exits.
///
/// Sessions are kept until they are removed; nothing expires on its own.
///
/// ```
/// use tokio_webwire::session::{MemoryStore, SessionStore};
/// use tokio_webwire::{Session, SessionInfo};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let session = Session::new("key-1", SessionInfo::new());
/// store.save(&session).await?;
/// let found = store.lookup("key-1").await?.unwrap();
/// assert_eq!(found.created, session.created);
/// assert!(found.last_lookup >= session.last_lookup);
/// store.remove("key-1").await?;
/// assert!(store.is_empty());
/// # Ok::<(), tokio_webwire::session::StoreError>(()) }).unwrap();
/// ```
#[derive(Default)]
pub struct MemoryStore {
    // A std mutex: every operation is one map access, never held across an await.
    sessions: Mutex<HashMap<String, Session>>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of sessions stored.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sessions().len()
    }

    /// Whether no session is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sessions().is_empty()
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // Every critical section is a single map operation, so a panic elsewhere cannot
        // leave the map half-changed: poisoning carries no information here.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SessionStore for MemoryStore {
    /// Stores the session, replacing one with the same key.
    async fn save(&self, session: &Session) -> Result<(), StoreError> {
        self.sessions().insert(session.key.clone(), session.clone());
        Ok(())
    }

    async fn lookup(&self, key: &str) -> Result<Option<Session>, StoreError> {
        let mut sessions = self.sessions();
        Ok(sessions.get_mut(key).map(|session| {
            session.last_lookup = OffsetDateTime::now_utc();
            session.clone()
        }))
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.sessions().remove(key);
        Ok(())
    }
}

/// Shows the number of sessions only: the keys are secrets.
impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("len", &self.len())
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

    #[test]
    fn debug_hides_keys() {
        let store = MemoryStore::new();
        store
            .sessions()
            .insert("secret".into(), Session::new("secret", SessionInfo::new()));
        let debug = format!("{store:?}");
        assert_eq!(debug, "MemoryStore { len: 1 }");
    }
}
