//! [`RedisStore`]: sessions in Redis, shared by every server that uses the same Redis.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use time::OffsetDateTime;

use super::connection::{self, Connection};
use super::{RedisConnectError, sanitized};
use crate::Session;
use crate::session::invalid_record;
use crate::session::{MemoryStore, SessionStore, StoreError, check_key};

/// The longest TTL a store sets: 100 years. Redis refuses an expiry whose deadline
/// overflows its clock; an idle timeout beyond this is no expiry in practice.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Sessions in Redis: every server of a service restores any session, whichever created it.
///
/// A session is one Redis string, `<prefix><key>` (prefix [`DEFAULT_PREFIX`](Self::DEFAULT_PREFIX),
/// `webwire:session:`, unless [set](Self::prefix)), holding its JSON wire form
/// ([`Session::to_json`], as the Go server writes it), with a TTL of the
/// [idle timeout](Self::idle_timeout) (14 days by default, as [`MemoryStore`]'s): set on
/// save, set again on every lookup, so a session neither saved nor restored for that long
/// is gone. Redis enforces it: no sweep, no task.
///
/// **Keys** come from clients: one that the server could never have made (not 1 to
/// [`MAX_KEY_LEN`](crate::session::MAX_KEY_LEN) bytes of printable ASCII) is not found
/// without asking Redis, and cannot be saved ([`StoreError::InvalidKey`]). Redis keys are
/// binary-safe and commands are length-prefixed, so no key can reach another command or
/// another prefix. Keys are secrets: no error text and no `Debug` output holds one.
///
/// **Failures.** While Redis cannot be reached, every operation fails with
/// [`StoreError::Other`] after the connection manager's few quick reconnection attempts
/// (about half a second when Redis refuses connections, about 3 s at most when nothing answers); the
/// server answers such a restore with an internal error and
/// logs it, and logins fail. The connection comes back by itself when Redis does. What was
/// in Redis is lost if Redis loses it (a restart without persistence): clients then log in
/// again. See [the module docs](super) for the memory a session takes in Redis.
///
/// Cloning is cheap: clones share one multiplexed connection.
///
/// **On a Redis Cluster** ([`connect_cluster`](Self::connect_cluster)) every command goes
/// to the master of its key's slot; session keys are random, so sessions spread evenly
/// over the slots, and so over the masters, by themselves (no hash tag). While a master
/// is away, the sessions in its slots fail as above, the others are unaffected.
///
/// ```no_run
/// use std::time::Duration;
/// use tokio_webwire::redis::RedisStore;
/// use tokio_webwire::server::Server;
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379/")
///     .await?
///     .prefix("chat:session:")
///     .idle_timeout(Duration::from_secs(7 * 24 * 3600));
/// let server = Server::builder(()).session_store(store).build()?;
/// # let _ = server; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    prefix: String,
    /// `None`: sessions never expire.
    idle_timeout: Option<Duration>,
}

impl RedisStore {
    /// The prefix of every key, unless [set](Self::prefix): `webwire:session:`.
    ///
    /// ```
    /// use tokio_webwire::redis::RedisStore;
    ///
    /// // Where the session with key "abc" lives in Redis, with the default prefix.
    /// assert_eq!(format!("{}abc", RedisStore::DEFAULT_PREFIX), "webwire:session:abc");
    /// ```
    pub const DEFAULT_PREFIX: &'static str = "webwire:session:";

    /// Connects to the Redis at `url` (`redis://[user:password@]host[:port][/db]`), with the
    /// default prefix and idle timeout.
    ///
    /// Fails if the URL is invalid or Redis cannot be reached now; once connected, the store
    /// reconnects by itself. The connection manager is configured as by
    /// [`connection_config`](Self::connection_config).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = tokio_webwire::redis::RedisStore::connect("redis://127.0.0.1/").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, RedisConnectError> {
        Self::from_client(super::error::open(url)?).await
    }

    /// Connects through an existing [`redis::Client`], which holds the address, credentials
    /// and database: see [`connect`](Self::connect).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio_webwire::redis::{RedisStore, redis};
    ///
    /// let client = redis::Client::open("redis://127.0.0.1/2")?;
    /// let store = RedisStore::from_client(client).await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_client(client: redis::Client) -> Result<Self, RedisConnectError> {
        let unreachable = RedisConnectError::unreachable(&client);
        let connection = ConnectionManager::new_with_config(client, Self::connection_config())
            .await
            .map_err(unreachable)?;
        Ok(Self::new(connection))
    }

    /// A store on a connection manager of the application's own (its own timeouts and
    /// retries), with the default prefix and idle timeout.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tokio_webwire::redis::{RedisStore, redis};
    /// use redis::aio::ConnectionManager;
    ///
    /// let config = RedisStore::connection_config()
    ///     .set_response_timeout(Some(Duration::from_millis(200)));
    /// let client = redis::Client::open("redis://127.0.0.1/")?;
    /// let store = RedisStore::new(ConnectionManager::new_with_config(client, config).await?);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn new(connection: ConnectionManager) -> Self {
        Self::on(Connection::Single(connection))
    }

    /// Connects to the Redis Cluster that `urls` (some of its masters, `redis://host:port`
    /// each) belong to, with the default prefix and idle timeout: every master of the
    /// cluster is found from them. Fails if a URL is invalid or no node can be reached
    /// now; once connected, the store reconnects to each node by itself, and follows the
    /// cluster when its slots move. The cluster client is configured as by
    /// [`cluster_client_builder`](Self::cluster_client_builder).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio_webwire::redis::RedisStore;
    ///
    /// let store = RedisStore::connect_cluster(["redis://10.0.0.1:6379/", "redis://10.0.0.2:6379/"])
    ///     .await?
    ///     .prefix("chat:session:");
    /// # Ok(()) }
    /// ```
    pub async fn connect_cluster<I>(urls: I) -> Result<Self, RedisConnectError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let (builder, addrs) = connection::cluster_builder(urls)?;
        let client = builder
            .build()
            .map_err(|source| RedisConnectError::Unreachable {
                addr: addrs.clone(),
                source,
            })?;
        let connection = connection::connect_cluster(&client, addrs).await?;
        Ok(Self::new_cluster(connection))
    }

    /// Connects through an existing [`ClusterClient`](redis::cluster::ClusterClient), which
    /// holds the seed nodes, credentials and timeouts: see
    /// [`connect_cluster`](Self::connect_cluster).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tokio_webwire::redis::RedisStore;
    ///
    /// let client = RedisStore::cluster_client_builder(["redis://10.0.0.1:6379/"])?
    ///     .response_timeout(Duration::from_millis(200))
    ///     .build()?;
    /// let store = RedisStore::from_cluster_client(client).await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_cluster_client(client: ClusterClient) -> Result<Self, RedisConnectError> {
        let connection =
            connection::connect_cluster(&client, "the Redis Cluster's seed nodes".to_owned())
                .await?;
        Ok(Self::new_cluster(connection))
    }

    /// A store on a cluster connection of the application's own, with the default prefix
    /// and idle timeout.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio_webwire::redis::RedisStore;
    ///
    /// let client = RedisStore::cluster_client_builder(["redis://10.0.0.1:6379/"])?.build()?;
    /// let store = RedisStore::new_cluster(client.get_async_connection().await?);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn new_cluster(connection: ClusterConnection) -> Self {
        Self::on(Connection::Cluster(connection))
    }

    /// The cluster client builder of [`connect_cluster`](Self::connect_cluster) for the
    /// seed nodes `urls`: it fails as quickly as [`connection_config`](Self::connection_config)'s
    /// connection manager does with one Redis (two retries, 100 and at most 200 ms apart;
    /// a second to connect to a node, half a second per answer, 3 s per command with its
    /// retries), where redis-rs's defaults would retry 16 times for minutes. Fails if a URL
    /// is invalid (named, its password hidden).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio_webwire::redis::RedisStore;
    ///
    /// let builder = RedisStore::cluster_client_builder(["redis://127.0.0.1:7000/"])?;
    /// let Err(error) = RedisStore::cluster_client_builder(["redis://u:secret@127.0.0.1:7000 x"]) else {
    ///     panic!("the URL does not parse");
    /// };
    /// assert!(!error.to_string().contains("secret"));
    /// # Ok(()) }
    /// ```
    pub fn cluster_client_builder<I>(urls: I) -> Result<ClusterClientBuilder, RedisConnectError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Ok(connection::cluster_builder(urls)?.0)
    }

    fn on(connection: Connection) -> Self {
        RedisStore {
            connection,
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            idle_timeout: Some(MemoryStore::DEFAULT_IDLE_TIMEOUT),
        }
    }

    /// The connection manager configuration of [`connect`](Self::connect) and
    /// [`from_client`](Self::from_client): redis-rs's timeouts (1 s to connect, 500 ms for
    /// a reply) and two reconnection attempts, 100 and 200 ms after the first, instead of
    /// six. A restore waits for the store: while Redis is away it should fail within about
    /// three seconds at most, not after the default's ten or more.
    ///
    /// ```
    /// let config = tokio_webwire::redis::RedisStore::connection_config();
    /// assert_eq!(config.number_of_retries(), 2);
    /// ```
    #[must_use]
    pub fn connection_config() -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1))
    }

    /// Keys are `prefix` followed by the session key (default:
    /// [`DEFAULT_PREFIX`](Self::DEFAULT_PREFIX)). Services sharing one Redis keep apart by
    /// their prefixes; every server of one service must use the same.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = tokio_webwire::redis::RedisStore::connect("redis://127.0.0.1/")
    ///     .await?
    ///     .prefix("shop:sessions:");
    /// assert_eq!(store.key_prefix(), "shop:sessions:");
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The prefix of every key this store reads and writes.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = tokio_webwire::redis::RedisStore::connect("redis://127.0.0.1/").await?;
    /// assert_eq!(store.key_prefix(), "webwire:session:");
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// Sessions neither saved nor looked up for `timeout` are gone (default: 14 days, as
    /// [`MemoryStore`]'s): the TTL of their keys, set on every save and lookup. Durations
    /// are rounded down to milliseconds (at least one). `Duration::ZERO` turns expiry off:
    /// sessions then stay until removed, or until Redis evicts them under its own
    /// `maxmemory-policy`.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    ///
    /// let store = tokio_webwire::redis::RedisStore::connect("redis://127.0.0.1/")
    ///     .await?
    ///     .idle_timeout(Duration::from_secs(3600));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// The Redis key of session `key`.
    fn redis_key(&self, key: &str) -> Vec<u8> {
        let mut redis_key = Vec::with_capacity(self.prefix.len() + key.len());
        redis_key.extend_from_slice(self.prefix.as_bytes());
        redis_key.extend_from_slice(key.as_bytes());
        redis_key
    }

    /// `SET <key> <json>`, with the idle timeout as TTL, only if the key exists when
    /// `existing`.
    fn set(&self, redis_key: Vec<u8>, json: &[u8], existing: bool) -> redis::Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(redis_key).arg(json);
        if existing {
            cmd.arg("XX");
        }
        match self.idle_timeout {
            Some(timeout) => {
                let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                cmd.arg("PX").arg(ms.clamp(1, MAX_TTL_MS));
            }
            // No expiry of ours: a lookup keeps whatever TTL the key has (another node's
            // store may have set one), instead of clearing it as a plain SET would.
            None if existing => {
                cmd.arg("KEEPTTL");
            }
            None => {}
        }
        cmd
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl SessionStore for RedisStore {
    /// `SET` with the idle timeout as TTL, replacing a session with the same key.
    async fn save(&self, session: &Session) -> Result<(), StoreError> {
        check_key(&session.key).map_err(|_| StoreError::InvalidKey {
            reason: "not 1 to MAX_KEY_LEN bytes of printable ASCII",
        })?;
        let json = session.to_json().map_err(invalid_record)?;
        let cmd = self.set(self.redis_key(&session.key), &json, false);
        let _: redis::Value = cmd
            .query_async(&mut self.connection.clone())
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// `GET`, then the session with `last_lookup` = now written back by `SET ... XX` with a
    /// fresh TTL.
    ///
    /// Why `XX` (set only if the key exists) and not a plain `SET`: a lookup racing a
    /// remove (a logout, [`Server::close_session`](crate::server::Server::close_session) on
    /// another node) must not bring the session back. If the remove's `DEL` lands between
    /// our `GET` and `SET`, the `SET XX` finds no key and writes nothing, and the lookup
    /// reports the session as gone, as if it had come after the remove. Why not one Lua
    /// script: the new JSON is made here, by the same writer as every save (Go's form,
    /// sorted info keys); a script would have to rewrite `l` inside the JSON in Lua, and
    /// the `script` feature would add SHA-1 and script caching for one round trip saved on
    /// a restore, which is rare next to requests.
    async fn lookup(&self, key: &str) -> Result<Option<Session>, StoreError> {
        if check_key(key).is_err() {
            return Ok(None);
        }
        let redis_key = self.redis_key(key);
        let mut connection = self.connection.clone();
        let json: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&redis_key)
            .query_async(&mut connection)
            .await
            .map_err(backend)?;
        let Some(json) = json else {
            return Ok(None);
        };
        let mut session = Session::from_json(&json).map_err(invalid_record)?;
        if session.key != key {
            // Written by something else than a RedisStore: the server answers with the
            // key the client sent, so a record of another key must not pass for this one.
            return Err(StoreError::InvalidRecord {
                reason: "the record holds another session key than its Redis key".to_owned(),
            });
        }
        session.last_lookup = OffsetDateTime::now_utc();
        let json = session.to_json().map_err(invalid_record)?;
        // `OK`, or nil when the key is gone (removed, or expired, since the `GET`).
        let written: Option<redis::Value> = self
            .set(redis_key, &json, true)
            .query_async(&mut connection)
            .await
            .map_err(backend)?;
        Ok(written.map(|_| session))
    }

    /// `DEL`; a key with no session (or one the store could never have saved) is no error.
    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        if check_key(key).is_err() {
            return Ok(());
        }
        let _: redis::Value = redis::cmd("DEL")
            .arg(self.redis_key(key))
            .query_async(&mut self.connection.clone())
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// A Redis failure as a store error, without any text that could hold a key.
fn backend(err: redis::RedisError) -> StoreError {
    StoreError::Other(sanitized(err))
}
