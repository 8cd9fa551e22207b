//! [`FileStore`]: one JSON file per session in a directory, so sessions survive restarts.
//!
//! Over 600 lines (734, 421 before the unit tests): the store itself; the rest is its unit
//! tests (files, sweeps, crash leftovers), which need its private paths.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

use super::store::invalid_record;
use super::{Session, SessionStore, StoreError};
use crate::sync;

/// The file name of a session is its key plus this extension, as in the Go server.
const EXTENSION: &str = ".wwrsess";

/// The lengths of keys a [`FileStore`] accepts. The lower bound keeps Windows device names
/// (`CON`, `NUL`, `COM1`: at most four letters) out, and any key shorter is too guessable to
/// be a session key; the upper bound keeps file names far below the usual 255-byte limit.
const KEY_LEN: std::ops::RangeInclusive<usize> = 16..=128;

/// Operations on one key run one at a time (a lookup's rewrite must not bring back a file
/// that a concurrent remove just deleted); keys are spread over this many locks.
const LOCKS: usize = 32;

/// How often the store's own operations start a sweep of the directory (expired sessions,
/// stray temporary files): at the first operation, then at most once per this interval.
const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// A temporary file older than this is a crash's leftover, not a write under way (a write
/// takes milliseconds; the margin covers a slow disk and a clock step).
const STRAY_AGE: Duration = Duration::from_secs(600);

/// Sessions as files: `<key>.wwrsess` in one directory, each holding the session's JSON wire
/// form ([`Session::to_json`]).
///
/// **Keys.** A file name never comes from an arbitrary key: the store accepts only keys of
/// 16 to 128 characters from the URL-safe base64 alphabet `A-Z a-z 0-9 - _`, which the
/// default key generator makes. Such a name cannot hold `/`, `\`, `.`, `..`, NUL or a drive
/// letter, nor name a Windows device, so no key reaches outside the directory. A session with
/// any other key cannot be saved ([`StoreError::InvalidKey`]); looking one up finds nothing
/// and removing one does nothing. On a case-insensitive file system a key differing only in
/// case finds nothing either: the key inside the file must match exactly.
///
/// **Writes** are atomic: the JSON goes to a temporary file in the same directory (named
/// `.<unique>.tmp`, never mistaken for a session), which is flushed to disk and renamed over
/// the session's file; on Unix the directory is then synced too (best effort). A crash leaves
/// the old file or the new one, never half of one, plus at worst a stray temporary file.
/// New files and directories are readable by their owner only on Unix: they hold secrets.
///
/// **Lookups** record the time of the lookup in the file (rewriting it) and return it as
/// `last_lookup`.
///
/// **Expiry.** A session not saved or looked up for the idle timeout
/// ([`idle_timeout`](Self::idle_timeout), default 14 days, as
/// [`MemoryStore`](super::MemoryStore)) is gone: a lookup finds nothing and deletes its
/// file. The time comes from the file's `l` (its last lookup), so it survives restarts.
/// Files nobody looks up again are deleted by a sweep of the directory
/// ([`sweep`](Self::sweep)), which the store starts on the blocking pool at its first
/// operation and then at most once an hour; the sweep also deletes temporary files left by
/// a crash (older than ten minutes). The disk a store uses is then bounded by the sessions
/// created within one idle timeout.
///
/// **One directory, one store.** Operations on one key are serialised within a
/// `FileStore` (and its clones), not across stores: two stores on the same directory, in
/// one process or in several, can undo each other's work (a lookup's rewrite bringing back
/// the file of a session the other just revoked). Give each directory one `FileStore`, and
/// share sessions between servers through a store made for it.
///
/// The blocking file work runs on tokio's blocking pool, so the store needs a tokio
/// runtime. Dropping a future does not stop an operation already started; it completes.
///
/// ```
/// use tokio_webwire::session::{DefaultKeyGenerator, FileStore, SessionKeyGenerator, SessionStore};
/// use tokio_webwire::{Session, SessionInfo};
///
/// # let dir = std::env::temp_dir().join(format!("wwr-doc-{}", std::process::id()));
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = FileStore::new(&dir)?;
/// let session = Session::new(DefaultKeyGenerator.generate(), SessionInfo::new());
/// store.save(&session).await?;
///
/// // A new store on the same directory, as after a restart, finds it.
/// let store = FileStore::new(&dir)?;
/// let found = store.lookup(&session.key).await?.unwrap();
/// assert_eq!(found.created, session.created);
///
/// // Keys that could name other files are refused outright.
/// assert!(store.lookup("../../etc/passwd").await?.is_none());
/// store.remove(&session.key).await?;
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
    /// `None`: sessions never expire.
    idle_timeout: Option<Duration>,
}

struct Inner {
    dir: PathBuf,
    locks: [Mutex<()>; LOCKS],
    hasher: RandomState,
    /// When the last sweep was started (`None`: not yet).
    last_sweep: Mutex<Option<Instant>>,
}

impl FileStore {
    /// A store keeping its files in `dir`, which is created (with its parents) if missing.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir)?;
        Ok(FileStore {
            inner: Arc::new(Inner {
                dir,
                locks: std::array::from_fn(|_| Mutex::new(())),
                hasher: RandomState::new(),
                last_sweep: Mutex::new(None),
            }),
            idle_timeout: Some(super::MemoryStore::DEFAULT_IDLE_TIMEOUT),
        })
    }

    /// Sessions neither saved nor looked up for `timeout` are gone (default: 14 days).
    /// `Duration::ZERO` turns expiry off: files then stay until removed.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tokio_webwire::session::FileStore;
    ///
    /// let store = FileStore::new("/var/lib/myapp/sessions")?
    ///     .idle_timeout(Duration::from_secs(30 * 24 * 3600));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// Deletes the files of expired sessions and temporary files left by a crash (older
    /// than ten minutes); returns how many files it deleted. The store runs this itself
    /// (at its first operation, then hourly); call it to sweep on a schedule of your own.
    /// Files that are not the store's are left alone. It counts as the store's own sweep: the
    /// next one the store starts is an hour later.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), tokio_webwire::session::StoreError> {
    /// let store = tokio_webwire::session::FileStore::new("/var/lib/myapp/sessions")?;
    /// let deleted = store.sweep().await?;
    /// # Ok(()) }
    /// ```
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        // It counts as the store's own: the next one is due an interval from now.
        *self.last_sweep() = Some(Instant::now());
        self.spawn_sweep()
            .await
            .map_err(|err| StoreError::other(format!("session sweep task failed: {err}")))?
    }

    /// Starts a sweep on the blocking pool if none ran within [`SWEEP_INTERVAL`]; the
    /// operation that found it due does not wait for it.
    fn sweep_if_due(&self) {
        let mut last = self.last_sweep();
        let now = Instant::now();
        if last.is_some_and(|last| now.duration_since(last) < SWEEP_INTERVAL) {
            return;
        }
        *last = Some(now);
        drop(last);
        drop(self.spawn_sweep());
    }

    fn last_sweep(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        sync::lock(&self.inner.last_sweep)
    }

    /// Runs a sweep on the blocking pool; a failure is logged.
    fn spawn_sweep(&self) -> tokio::task::JoinHandle<Result<usize, StoreError>> {
        let inner = Arc::clone(&self.inner);
        let idle_timeout = self.idle_timeout;
        tokio::task::spawn_blocking(move || {
            let swept = sweep(&inner, idle_timeout);
            if let Err(error) = &swept {
                tracing::warn!(%error, "session directory sweep failed");
            }
            swept
        })
    }

    /// The directory holding the session files.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Runs `op` on the blocking pool while holding the lock of `key`.
    async fn run<T, F>(&self, key: &str, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T, StoreError> + Send + 'static,
    {
        self.sweep_if_due();
        let inner = Arc::clone(&self.inner);
        // The lock's index, not the key: nothing to copy into the task.
        let lock = inner.lock_index(key);
        tokio::task::spawn_blocking(move || {
            let _guard = inner.lock(lock);
            op(&inner.dir)
        })
        .await
        .map_err(|err| StoreError::other(format!("session file task failed: {err}")))?
    }
}

impl Inner {
    /// Which lock guards `key`'s file.
    fn lock_index(&self, key: &str) -> usize {
        self.hasher.hash_one(key) as usize % LOCKS
    }

    /// A file lock, by [`lock_index`](Self::lock_index). It guards no data, only the
    /// order of file operations.
    fn lock(&self, index: usize) -> std::sync::MutexGuard<'_, ()> {
        sync::lock(&self.locks[index])
    }
}

/// Whether a session last used at `last_lookup` has expired now.
fn expired(last_lookup: OffsetDateTime, idle_timeout: Option<Duration>) -> bool {
    idle_timeout.is_some_and(|timeout| OffsetDateTime::now_utc() - last_lookup >= timeout)
}

/// The sweep: see [`FileStore::sweep`].
fn sweep(inner: &Inner, idle_timeout: Option<Duration>) -> Result<usize, StoreError> {
    let now = SystemTime::now();
    let age = |meta: &fs::Metadata| {
        meta.modified()
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .unwrap_or_default()
    };
    let mut deleted = 0;
    for entry in fs::read_dir(&inner.dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if is_temp_name(&name) {
            if age(&meta) >= STRAY_AGE && fs::remove_file(entry.path()).is_ok() {
                deleted += 1;
            }
            continue;
        }
        let Some(key) = name.strip_suffix(EXTENSION) else {
            continue;
        };
        // Every save or lookup rewrites the file: one written more recently than the
        // timeout cannot have expired, and needs no reading.
        let may_have_expired = idle_timeout.is_some_and(|timeout| age(&meta) >= timeout);
        // The cheap test first: the name check formats a string.
        if !may_have_expired || file_name(key).is_err() {
            continue;
        }
        let _guard = inner.lock(inner.lock_index(key));
        let Ok(json) = fs::read(entry.path()) else {
            continue;
        };
        // A file that does not parse is left for a person to look at.
        if let Ok(session) = Session::from_json(&json) {
            if expired(session.last_lookup, idle_timeout) && fs::remove_file(entry.path()).is_ok() {
                deleted += 1;
            }
        }
    }
    if deleted > 0 {
        sync_dir(&inner.dir);
        tracing::debug!(deleted, "session directory swept");
    }
    Ok(deleted)
}

impl SessionStore for FileStore {
    /// Writes the session's file, replacing one with the same key.
    async fn save(&self, session: &Session) -> Result<(), StoreError> {
        let name = file_name(&session.key).map_err(|reason| StoreError::InvalidKey { reason })?;
        let json = session.to_json().map_err(invalid_record)?;
        self.run(&session.key, move |dir| write_atomic(dir, &name, &json))
            .await
    }

    async fn lookup(&self, key: &str) -> Result<Option<Session>, StoreError> {
        let Ok(name) = file_name(key) else {
            return Ok(None);
        };
        let wanted = key.to_owned();
        let idle_timeout = self.idle_timeout;
        self.run(key, move |dir| {
            let json = match fs::read(dir.join(&name)) {
                Ok(json) => json,
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(err) => return Err(err.into()),
            };
            let mut session = Session::from_json(&json).map_err(invalid_record)?;
            if session.key != wanted {
                // A key differing in case, on a case-insensitive file system.
                return Ok(None);
            }
            if expired(session.last_lookup, idle_timeout) {
                fs::remove_file(dir.join(&name))?;
                sync_dir(dir);
                return Ok(None);
            }
            session.last_lookup = OffsetDateTime::now_utc();
            let json = session.to_json().map_err(invalid_record)?;
            write_atomic(dir, &name, &json)?;
            Ok(Some(session))
        })
        .await
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        let Ok(name) = file_name(key) else {
            return Ok(());
        };
        self.run(key, move |dir| {
            match fs::remove_file(dir.join(name)) {
                Ok(()) => sync_dir(dir),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err.into()),
            }
            Ok(())
        })
        .await
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.inner.dir)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// The file name for `key`, or why the key cannot have one (see [`FileStore`]).
fn file_name(key: &str) -> Result<String, &'static str> {
    if !KEY_LEN.contains(&key.len()) {
        return Err("a file store needs keys of 16 to 128 characters");
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("a file store needs keys of A-Z a-z 0-9 - _ only");
    }
    Ok(format!("{key}{EXTENSION}"))
}

/// Whether `name` is one of [`write_atomic`]'s temporary files (`.<pid>-<n>-<nanos>.tmp`).
fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Replaces `dir/name` with `contents` so that a crash leaves the old or the new file.
fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<(), StoreError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = dir.join(format!(
        ".{}-{}-{nanos}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
    ));
    let written = write_new(&temp, contents).and_then(|()| fs::rename(&temp, dir.join(name)));
    if let Err(err) = written {
        let _ = fs::remove_file(&temp);
        return Err(err.into());
    }
    sync_dir(dir);
    Ok(())
}

/// Creates `path` (which must not exist), writes `contents` and flushes them to disk.
fn write_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes a rename or a removal in `dir` durable, where the platform allows (Unix).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(err) = fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(%err, "could not sync the session directory");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{DefaultKeyGenerator, SessionInfo, SessionKeyGenerator};

    /// A fresh directory under the system's temporary one, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let path = std::env::temp_dir().join(format!(
                "tokio-webwire-file-store-{}-{}-{nanos}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
            ));
            fs::create_dir(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn session() -> Session {
        let mut info = SessionInfo::new();
        info.insert("uid", &42).unwrap();
        info.insert("user", &"alice").unwrap();
        Session::new(DefaultKeyGenerator.generate(), info)
    }

    #[tokio::test]
    async fn round_trip() {
        let tmp = TempDir::new();
        let store = FileStore::new(tmp.0.join("sessions")).unwrap();
        let session = session();
        store.save(&session).await.unwrap();
        assert_eq!(listing(store.dir()), [format!("{}.wwrsess", session.key)]);

        let found = store.lookup(&session.key).await.unwrap().unwrap();
        assert_eq!(found.key, session.key);
        assert_eq!(found.created, session.created);
        assert_eq!(found.info, session.info);
        assert!(found.last_lookup >= session.last_lookup);

        store.remove(&session.key).await.unwrap();
        assert_eq!(store.lookup(&session.key).await.unwrap(), None);
        store.remove(&session.key).await.unwrap();
        assert!(listing(store.dir()).is_empty());
    }

    #[tokio::test]
    async fn lookup_writes_the_new_last_lookup_to_disk() {
        let tmp = TempDir::new();
        let store = FileStore::new(&tmp.0).unwrap();
        let mut session = session();
        session.last_lookup = session.created - time::Duration::hours(1);
        store.save(&session).await.unwrap();

        let found = store.lookup(&session.key).await.unwrap().unwrap();
        assert!(found.last_lookup > session.last_lookup);
        let on_disk =
            Session::from_json(&fs::read(tmp.0.join(format!("{}.wwrsess", session.key))).unwrap())
                .unwrap();
        assert_eq!(on_disk, found);
    }

    #[tokio::test]
    async fn sessions_survive_a_restart() {
        let tmp = TempDir::new();
        let session = session();
        FileStore::new(&tmp.0)
            .unwrap()
            .save(&session)
            .await
            .unwrap();

        let store = FileStore::new(&tmp.0).unwrap();
        let found = store.lookup(&session.key).await.unwrap().unwrap();
        assert_eq!(found.created, session.created);
        assert_eq!(found.info, session.info);
    }

    #[tokio::test]
    async fn malicious_keys_touch_nothing() {
        let tmp = TempDir::new();
        let store = FileStore::new(tmp.0.join("store")).unwrap();
        // Files a path traversal would reach: beside the store and one level up.
        fs::write(tmp.0.join("victim.wwrsess"), b"keep").unwrap();
        let long = "a".repeat(10_000);
        let just_too_long = "a".repeat(129);
        let absolute = format!("{}", tmp.0.join("victim").display());
        let keys = [
            "../etc/passwd",
            "../victim",
            "a/b",
            "a\\b",
            "..",
            ".",
            "",
            "a\0b",
            "%2e%2e",
            "%2e%2e%2fvictim",
            "C:victim",
            "CON",
            "NUL",
            "short",
            "sixteen.chars.ok",
            "sixteen chars ok",
            long.as_str(),
            just_too_long.as_str(),
            absolute.as_str(),
        ];
        for key in keys {
            let err = store
                .save(&Session::new(key, SessionInfo::new()))
                .await
                .unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidKey { .. }),
                "{key:?}: {err}"
            );
            assert!(key.len() < 4 || !err.to_string().contains(key), "{key:?}");
            assert_eq!(store.lookup(key).await.unwrap(), None, "{key:?}");
            store.remove(key).await.unwrap();
        }
        assert!(listing(store.dir()).is_empty());
        assert_eq!(listing(&tmp.0), ["store", "victim.wwrsess"]);
        assert_eq!(fs::read(tmp.0.join("victim.wwrsess")).unwrap(), b"keep");
    }

    #[tokio::test]
    async fn key_length_limits() {
        let tmp = TempDir::new();
        let store = FileStore::new(&tmp.0).unwrap();
        for key in ["a".repeat(16), "Z_-9".repeat(32)] {
            store
                .save(&Session::new(key.clone(), SessionInfo::new()))
                .await
                .unwrap();
            assert!(store.lookup(&key).await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn stray_temporary_files_do_no_harm() {
        let tmp = TempDir::new();
        let store = FileStore::new(&tmp.0).unwrap();
        let session = session();
        store.save(&session).await.unwrap();
        // What a crash between creating and renaming a temporary file leaves behind.
        fs::write(tmp.0.join(".1-0-0.tmp"), br#"{"k":"#).unwrap();
        fs::write(tmp.0.join(format!(".{}.wwrsess.tmp", session.key)), b"{").unwrap();

        let found = store.lookup(&session.key).await.unwrap().unwrap();
        assert_eq!(found.created, session.created);
        store.save(&self::session()).await.unwrap();
        assert_eq!(listing(&tmp.0).len(), 4);
    }

    #[tokio::test]
    async fn a_corrupt_file_is_an_error_not_a_panic() {
        let tmp = TempDir::new();
        let store = FileStore::new(&tmp.0).unwrap();
        let key = DefaultKeyGenerator.generate();
        fs::write(tmp.0.join(format!("{key}.wwrsess")), br#"{"k":"#).unwrap();
        let err = store.lookup(&key).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidRecord { .. }), "{err}");
        assert!(!err.to_string().contains(&key));
    }

    #[tokio::test]
    async fn a_file_of_another_key_is_not_found() {
        let tmp = TempDir::new();
        let store = FileStore::new(&tmp.0).unwrap();
        let session = session();
        let other = DefaultKeyGenerator.generate();
        fs::write(
            tmp.0.join(format!("{other}.wwrsess")),
            session.to_json().unwrap(),
        )
        .unwrap();
        assert_eq!(store.lookup(&other).await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_lookups_leave_a_valid_file() {
        let tmp = TempDir::new();
        let store = FileStore::new(&tmp.0).unwrap();
        let session = session();
        store.save(&session).await.unwrap();
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (store, key) = (store.clone(), session.key.clone());
                tokio::spawn(async move { store.lookup(&key).await })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().unwrap().is_some());
        }
        assert_eq!(listing(&tmp.0), [format!("{}.wwrsess", session.key)]);
        let found = store.lookup(&session.key).await.unwrap().unwrap();
        assert_eq!(found.info, session.info);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn files_are_private_on_unix() {
        use std::os::unix::fs::PermissionsExt;

        let tmp = TempDir::new();
        let dir = tmp.0.join("new");
        let store = FileStore::new(&dir).unwrap();
        let session = session();
        store.save(&session).await.unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(format!("{}.wwrsess", session.key))), 0o600);
    }

    /// A session last used `ago`.
    fn used(ago: Duration) -> Session {
        let mut session = session();
        session.last_lookup = OffsetDateTime::now_utc() - ago;
        session
    }

    fn set_age(path: &Path, age: Duration) {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[tokio::test]
    async fn a_session_idle_too_long_is_not_found_and_its_file_goes() {
        let tmp = TempDir::new();
        let store = FileStore::new(&tmp.0).unwrap().idle_timeout(DAY);
        let fresh = used(DAY - Duration::from_secs(60));
        let stale = used(DAY + Duration::from_secs(1));
        store.save(&fresh).await.unwrap();
        store.save(&stale).await.unwrap();

        assert_eq!(store.lookup(&stale.key).await.unwrap(), None);
        assert_eq!(listing(&tmp.0), [format!("{}.wwrsess", fresh.key)]);
        // The lookup renews the other one.
        let found = store.lookup(&fresh.key).await.unwrap().unwrap();
        assert!(found.last_lookup > fresh.last_lookup);

        // Without expiry, an old session is found.
        let forever = FileStore::new(&tmp.0).unwrap().idle_timeout(Duration::ZERO);
        let old = used(1000 * DAY);
        forever.save(&old).await.unwrap();
        assert!(forever.lookup(&old.key).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_sweep_deletes_expired_sessions_and_crash_leftovers_only() {
        let tmp = TempDir::new();
        let store = FileStore::new(&tmp.0).unwrap().idle_timeout(DAY);
        // A sweep now, on an empty directory, is the store's first: no sweep of its own
        // runs beside the test's.
        assert_eq!(store.sweep().await.unwrap(), 0);

        let stale = used(2 * DAY);
        let fresh = used(Duration::ZERO);
        let old_but_renewed = used(Duration::ZERO);
        for session in [&stale, &fresh, &old_but_renewed] {
            store.save(session).await.unwrap();
        }
        let path = |session: &Session| tmp.0.join(format!("{}.wwrsess", session.key));
        set_age(&path(&stale), 2 * DAY);
        // An old file whose record says it was used recently (a copied directory).
        set_age(&path(&old_but_renewed), 2 * DAY);
        // A crash's leftover, a write under way, and files that are not the store's.
        fs::write(tmp.0.join(".1-0-0.tmp"), b"{").unwrap();
        set_age(&tmp.0.join(".1-0-0.tmp"), Duration::from_secs(3600));
        fs::write(tmp.0.join(".1-1-0.tmp"), b"{").unwrap();
        fs::write(tmp.0.join("notes.txt"), b"mine").unwrap();
        set_age(&tmp.0.join("notes.txt"), 10 * DAY);
        fs::write(tmp.0.join("bad key!.wwrsess"), b"{}").unwrap();
        set_age(&tmp.0.join("bad key!.wwrsess"), 10 * DAY);

        assert_eq!(store.sweep().await.unwrap(), 2);
        let mut expected = vec![
            ".1-1-0.tmp".to_owned(),
            "bad key!.wwrsess".to_owned(),
            format!("{}.wwrsess", fresh.key),
            format!("{}.wwrsess", old_but_renewed.key),
            "notes.txt".to_owned(),
        ];
        expected.sort();
        assert_eq!(listing(&tmp.0), expected);
        assert_eq!(store.sweep().await.unwrap(), 0);
    }
}
