//! The [`SessionStore`] trait: where sessions live between connections (PROTOCOL.md §4.7),
//! and its error, [`StoreError`].

use std::error::Error;
use std::future::Future;
use std::io;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Session, SessionError};

/// Keeps sessions so that clients can restore them, on any connection, later.
///
/// The server calls [`save`](Self::save) when it creates a session, [`lookup`](Self::lookup)
/// on every restore request, and [`remove`](Self::remove) when the last connection holding a
/// session closes it explicitly. A connection that merely goes away removes nothing: the
/// session stays restorable until the store drops it (expiry is the store's business;
/// `last_lookup` is there for it).
///
/// Keys reaching [`lookup`](Self::lookup) and [`remove`](Self::remove) come from clients:
/// treat them as untrusted input (never a path, never a query string).
///
/// Implement it with `async fn`; the futures must be `Send`, which the compiler checks.
/// [`MemoryStore`](super::MemoryStore) is the default, [`FileStore`](super::FileStore)
/// survives restarts. An `Arc<S>` is a store too.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use tokio_webwire::session::{MemoryStore, SessionStore, StoreError};
/// use tokio_webwire::{Session, SessionInfo};
///
/// /// A memory store that counts restores.
/// #[derive(Default)]
/// struct Counting { inner: MemoryStore, restores: AtomicUsize }
///
/// impl SessionStore for Counting {
///     async fn save(&self, session: &Session) -> Result<(), StoreError> {
///         self.inner.save(session).await
///     }
///     async fn lookup(&self, key: &str) -> Result<Option<Session>, StoreError> {
///         self.restores.fetch_add(1, Ordering::Relaxed);
///         self.inner.lookup(key).await
///     }
///     async fn remove(&self, key: &str) -> Result<(), StoreError> {
///         self.inner.remove(key).await
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = Counting::default();
/// store.save(&Session::new("k1", SessionInfo::new())).await?;
/// assert!(store.lookup("k1").await?.is_some());
/// assert!(store.lookup("nope").await?.is_none());
/// assert_eq!(store.restores.load(Ordering::Relaxed), 2);
/// # Ok::<(), StoreError>(()) }).unwrap();
/// ```
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session under its key.
    fn save(&self, session: &Session) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The session stored under `key`, or `None` if there is none.
    ///
    /// Records "now" as the session's last lookup, so that stale sessions can be collected,
    /// and returns the session with that **new** `last_lookup` (the time of this lookup).
    fn lookup(&self, key: &str)
    -> impl Future<Output = Result<Option<Session>, StoreError>> + Send;

    /// Deletes the session stored under `key`; a key with no session is not an error.
    fn remove(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl<S: SessionStore> SessionStore for Arc<S> {
    fn save(&self, session: &Session) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).save(session)
    }

    fn lookup(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send {
        (**self).lookup(key)
    }

    fn remove(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).remove(key)
    }
}

/// Why a [`SessionStore`] operation failed.
///
/// Its text never contains a session key or a file path (which would hold the key): errors
/// are logged, keys are secrets.
///
/// ```
/// use tokio_webwire::session::StoreError;
///
/// let err = StoreError::other("database unreachable");
/// assert_eq!(err.to_string(), "database unreachable");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing the store's files failed.
    #[error("session store I/O failed: {0}")]
    Io(#[from] io::Error),

    /// A stored record is not a valid session, or a session cannot be written as one (a
    /// timestamp outside what RFC 3339 can express).
    #[error("invalid session record: {reason}")]
    InvalidRecord {
        /// What is wrong with it (from the JSON parser or writer; never the key).
        reason: String,
    },

    /// The store cannot keep a session under this key (see the store's key rules).
    #[error("the session key cannot be stored: {reason}")]
    InvalidKey {
        /// What is wrong with the key (never the key itself).
        reason: &'static str,
    },

    /// Any other failure, typically of a custom store's backend.
    #[error(transparent)]
    Other(Box<dyn Error + Send + Sync>),
}

impl StoreError {
    /// Wraps any error (or message) of a custom store's backend.
    pub fn other(err: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        StoreError::Other(err.into())
    }
}

/// A stored record that is not a session (a corrupt file), or a session that cannot be
/// written as one.
pub(crate) fn invalid_record(error: crate::ProtocolError) -> StoreError {
    StoreError::InvalidRecord {
        reason: error.to_string(),
    }
}

impl From<StoreError> for SessionError {
    fn from(err: StoreError) -> Self {
        SessionError::Store(err.to_string())
    }
}

/// A [`SessionStore`] behind a pointer: the trait's `impl Future` methods make it unusable
/// as `dyn SessionStore`, so the server erases the store's type through this.
pub(crate) trait DynSessionStore: Send + Sync + 'static {
    fn save<'a>(&'a self, session: &'a Session) -> BoxFuture<'a, Result<(), StoreError>>;
    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Session>, StoreError>>;
    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}

impl<S: SessionStore> DynSessionStore for S {
    fn save<'a>(&'a self, session: &'a Session) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SessionStore::save(self, session))
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        Box::pin(SessionStore::lookup(self, key))
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SessionStore::remove(self, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{MemoryStore, SessionInfo};

    #[tokio::test]
    async fn arc_and_dyn_stores_reach_the_same_sessions() {
        let store = Arc::new(MemoryStore::default());
        SessionStore::save(&store, &Session::new("k", SessionInfo::new()))
            .await
            .unwrap();
        let erased: Arc<dyn DynSessionStore> = store.clone();
        assert_eq!(erased.lookup("k").await.unwrap().unwrap().key, "k");
        erased
            .save(&Session::new("k2", SessionInfo::new()))
            .await
            .unwrap();
        assert_eq!(store.len(), 2);
        erased.remove("k").await.unwrap();
        assert_eq!(SessionStore::lookup(&store, "k").await.unwrap(), None);
    }

    #[test]
    fn store_errors_become_session_errors_with_their_text() {
        let err = SessionError::from(StoreError::Io(io::Error::other("disk full")));
        assert_eq!(
            err,
            SessionError::Store("session store I/O failed: disk full".into())
        );
    }
}
