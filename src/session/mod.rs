//! Sessions: the value both sides share, its JSON wire form (PROTOCOL.md §4.1), and the
//! server's building blocks: key generators, stores and the registry (§4.2, §4.6, §4.7).
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`Session`], [`SessionInfo`] |
//! | `json.rs` | the `{"k","c","l","i"}` wire form, written as Go writes it |
//! | `error.rs` | [`SessionError`]: why creating, restoring or closing failed |
//! | `key.rs` | [`SessionKeyGenerator`], [`DefaultKeyGenerator`] (256 random bits), the key check |
//! | `store.rs` | [`SessionStore`] (save, lookup, remove), [`StoreError`], the type-erased store |
//! | `memory_store.rs` | [`MemoryStore`]: the default, in a map |
//! | `file_store.rs` | [`FileStore`]: one file per session, atomic writes, safe file names |
//! | `registry.rs` | the server's key → connection ids map with the per-session limit |

mod error;
mod file_store;
mod json;
mod key;
mod memory_store;
mod registry;
mod store;

pub use error::SessionError;
pub use file_store::FileStore;
pub use key::{DefaultKeyGenerator, MAX_KEY_LEN, SessionKeyGenerator};
pub use memory_store::MemoryStore;
pub use store::{SessionStore, StoreError};

pub(crate) use {key::check_key, registry::SessionRegistry, store::DynSessionStore};
// For the Redis store, outside this module.
#[cfg(feature = "redis")]
pub(crate) use store::invalid_record;

use serde::{Serialize, de::DeserializeOwned};

use crate::protocol::RedactedKey;
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// A session: created by the server, synchronised to the client, restorable by its key.
///
/// ```
/// use tokio_webwire::{Session, SessionInfo};
///
/// let mut info = SessionInfo::new();
/// info.insert("user", &"alice").unwrap();
/// let session = Session::new("key-1", info);
/// let json = session.to_json().unwrap();
/// assert_eq!(Session::from_json(&json).unwrap(), session);
/// ```
///
/// Its `Debug` output shows everything but the key (only its length): whoever knows the
/// key can restore the session, so `tracing::info!(?session)` must not print it.
///
/// ```
/// # use tokio_webwire::{Session, SessionInfo};
/// let session = Session::new("secret-key-1", SessionInfo::new());
/// let shown = format!("{session:?}");
/// assert!(!shown.contains("secret-key-1"));
/// assert!(shown.contains("<redacted: 12 bytes>") && shown.contains("created"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The key that identifies the session; clients treat it as opaque.
    pub key: String,
    /// When the session was created.
    pub created: OffsetDateTime,
    /// When the session was last looked up in its store (equal to `created` at first).
    pub last_lookup: OffsetDateTime,
    /// Application data attached to the session: a JSON object.
    pub info: SessionInfo,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("key", &RedactedKey(self.key.len()))
            .field("created", &self.created)
            .field("last_lookup", &self.last_lookup)
            .field("info", &self.info)
            .finish()
    }
}

impl Session {
    /// A session created now (UTC), with `last_lookup` equal to `created`.
    #[must_use]
    pub fn new(key: impl Into<String>, info: SessionInfo) -> Self {
        let now = OffsetDateTime::now_utc();
        Session {
            key: key.into(),
            created: now,
            last_lookup: now,
            info,
        }
    }
}

/// The info object of a [`Session`]: string keys, arbitrary JSON values.
///
/// Written with its keys sorted at every level, as Go writes them.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tokio_webwire::SessionInfo;
///
/// #[derive(Serialize, Deserialize, PartialEq, Debug)]
/// struct User { uid: u64, user: String }
///
/// let info = SessionInfo::from_serializable(&User { uid: 42, user: "alice".into() }).unwrap();
/// assert_eq!(info.get::<u64>("uid").unwrap(), Some(42));
/// assert_eq!(info.get::<u64>("missing").unwrap(), None);
/// assert_eq!(info.deserialize::<User>().unwrap(), User { uid: 42, user: "alice".into() });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionInfo(Map<String, Value>);

impl SessionInfo {
    /// An empty info object.
    #[must_use]
    pub fn new() -> Self {
        SessionInfo(Map::new())
    }

    /// The info object `value` serialises to; anything but a JSON object is an error.
    pub fn from_serializable<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        match serde_json::to_value(value)? {
            Value::Object(map) => Ok(SessionInfo(map)),
            other => Err(serde::ser::Error::custom(format_args!(
                "session info must be a JSON object, not {other}"
            ))),
        }
    }

    /// The whole object deserialised into `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.0)
    }

    /// The value under `key` deserialised into `T`; `Ok(None)` when the key is absent.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, serde_json::Error> {
        self.0.get(key).map(T::deserialize).transpose()
    }

    /// The raw JSON value under `key`.
    #[must_use]
    pub fn get_value(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// Stores `value` under `key`, replacing what was there.
    pub fn insert<T: Serialize + ?Sized>(
        &mut self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        self.0.insert(key.into(), serde_json::to_value(value)?);
        Ok(())
    }

    /// Removes and returns the value under `key`.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.0.remove(key)
    }

    /// The number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the object has no entries (it is then left out of the wire form).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The underlying JSON object.
    #[must_use]
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

impl From<Map<String, Value>> for SessionInfo {
    fn from(map: Map<String, Value>) -> Self {
        SessionInfo(map)
    }
}

impl From<SessionInfo> for Map<String, Value> {
    fn from(info: SessionInfo) -> Self {
        info.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_session_but_not_its_key() {
        let mut info = SessionInfo::new();
        info.insert("user", &"alice").unwrap();
        let session = Session::new("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", info);
        let shown = format!("{session:?}");
        assert!(!shown.contains("AAECAwQF"), "{shown}");
        assert!(shown.contains("key: <redacted: 43 bytes>"), "{shown}");
        assert!(shown.contains("created:") && shown.contains("last_lookup:"));
        assert!(
            shown.contains("alice"),
            "the info is the application's: {shown}"
        );
        // Pretty-printed too.
        assert!(!format!("{session:#?}").contains("AAECAwQF"));
    }
}
