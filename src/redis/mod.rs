//! Many servers, one service (feature `redis`): sessions and fan-out shared through Redis,
//! so that a client restores its session on any node behind a load balancer, and a publish,
//! a session signal or a logout reaches every node.
//!
//! | file | holds |
//! |---|---|
//! | `store.rs` | [`RedisStore`]: a [`SessionStore`](crate::session::SessionStore) in Redis or a Redis Cluster |
//! | `backplane.rs` | [`RedisBackplane`]: a [`Backplane`](crate::backplane::Backplane) over Redis pub/sub, a channel per route, sharing the topic histories |
//! | `sharded.rs` | the backplane's subscriptions on a Redis Cluster: sharded pub/sub, subscribed again after a node's connection is lost |
//! | `history.rs` | topic histories in Redis: a stream and a hash per topic, one Lua script per publish and per resume |
//! | `connection.rs` | where commands go: one Redis (a `ConnectionManager`) or a Redis Cluster (redis-rs's cluster connection), and the cluster client's timeouts |
//!
//! Every node of a service uses both, on the same Redis (or Redis Cluster), with the same
//! prefixes:
//!
//! ```no_run
//! use tokio_webwire::redis::{RedisBackplane, RedisStore};
//! use tokio_webwire::server::Server;
//!
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let url = "redis://127.0.0.1:6379/";
//! let server = Server::builder(())
//!     .session_store(RedisStore::connect(url).await?)
//!     .backplane(RedisBackplane::connect(url).await?)
//!     .backplane_secret(std::env::var("WEBWIRE_SECRET")?)
//!     .build()?;
//! # let _ = server; Ok(()) }
//! ```
//!
//! # What is stored where
//! Sessions: each session is one Redis string under `<prefix><session key>` (prefix
//! `webwire:session:` unless set), holding the session's JSON wire form as the Go server
//! writes it (`{"k":…,"c":…,"l":…,"i":…}`), with a TTL of the store's idle timeout
//! (14 days unless set), renewed by every restore. Nothing else is kept: no index, no set
//! of keys, so a session costs the same however many there are, and expiry is Redis's.
//!
//! Every node should use the same prefix and idle timeout; a node without expiry
//! (`Duration::ZERO`) keeps the TTL another node set (`SET … KEEPTTL`, Redis 6.0 or later).
//!
//! Fan-out: nothing is stored. Every node publishes its operations (an envelope: a few
//! bytes of header, the target topic or a session's route id, the encoded signal, a
//! 32-byte tag; `docs/backplane.md`) to the channel of its route, and subscribes, on a
//! connection of its own, to the channels of the topics its connections subscribe to,
//! of the sessions they hold, and of the service: `webwire:t:{<topic>}`,
//! `webwire:s:{<route id>}`, `webwire:all` (prefix `webwire:` unless set). A node receives
//! only the traffic of its own topics and sessions, and revocations.
//!
//! Topic histories ([`ServerBuilder::history`](crate::server::ServerBuilder::history)):
//! per topic a stream `webwire:history:{<topic>}:s` (the kept publications) and a hash
//! `webwire:history:{<topic>}:m` (epoch, last offset, bytes), trimmed by every publish to
//! the history's count, bytes and age; a publish to such a topic is one Lua script (one
//! round trip) that positions, keeps and publishes it. See
//! [`RedisBackplaneBuilder::history_prefix`] and `docs/topics.md` (section 5.1).
//!
//! # Memory in Redis
//! A session takes its Redis key (the prefix and the session key: 59 bytes with the
//! defaults), its JSON (146 bytes for info `{"user":"alice"}`: about 130 plus the key and
//! the info) and Redis's bookkeeping for a key with a TTL, about 60 bytes: `MEMORY USAGE`
//! reports 264 bytes for such a session on Redis 7 (measured by
//! `cargo bench --features redis --bench restore_latency`), so a million of them take about
//! 260 MB. Sessions as large as the message size limit (8 KiB by default) take that much
//! each: bound Redis with `maxmemory` and a `volatile-*` eviction policy (every session key
//! has a TTL unless expiry is off) if logins are not otherwise bounded.
//!
//! # While Redis is away
//! The store's connection reconnects by itself; until it has, every operation fails
//! quickly: within about half a second when Redis refuses connections (it is down), about 3 s at most
//! when nothing answers (three connection attempts of at most 1 s, 100 and 200 ms apart):
//! - a restore is answered with an internal error (and logged): the client keeps its
//!   session key and may try again, and its connection works for everything else;
//! - a login fails: [`Connection::create_session`](crate::server::Connection::create_session)
//!   returns [`SessionError::Store`](crate::SessionError::Store) before the client is told
//!   of any session, so no client holds a session that a reconnect could not restore;
//!   answer the request with an error the client may try again on;
//! - a logout or [`Server::close_session`](crate::server::Server::close_session) fails to
//!   remove the stored session (logged, and returned to the caller of `close_session`):
//!   the session stays restorable until it is removed again or expires;
//! - publishes, session signals and revocations still reach this node's connections, but
//!   not the other nodes': the call returns a partial result after the local delivery,
//!   [`TopicError::Backplane`](crate::server::TopicError::Backplane) with how many of this
//!   node's connections got it (tell the sender it was delivered here only, rather than
//!   invite a resend that would reach this node's connections twice),
//!   and what any node publishes while its own or another node's link is down is lost for
//!   the nodes not subscribed then (Redis pub/sub keeps nothing; see [`RedisBackplane`]);
//! - a publish to a topic with a history fails with
//!   [`TopicError::History`](crate::server::TopicError::History) and reaches nobody
//!   (nothing kept, nothing sent: no resume can hide it); a client's subscribe to such a
//!   topic is answered `WW_UNAVAILABLE` (it tries again); its live subscribers stay;
//! - connections, requests and signals are unaffected.
//!
//! # On a Redis Cluster
//! [`RedisStore::connect_cluster`] and [`RedisBackplaneBuilder::connect_cluster`] take
//! some of the cluster's masters (Redis 7 or later, for sharded pub/sub). Sessions spread
//! over the slots by their random keys. The backplane publishes with `SPUBLISH` and
//! subscribes with `SSUBSCRIBE`, so a message crosses only the master of its channel's
//! slot, never the cluster bus to every master as a plain `PUBLISH` would; a topic's
//! channel and its history's keys share the `{<topic>}` hash tag, so the history script
//! and its `SPUBLISH` run on one master. The names spread evenly: 1 000 topics `room/N`
//! fall 343, 333 and 324 on the three masters of the default slot split, 1 000 session
//! routes 314, 341 and 345 (`tests/redis_cluster.rs`), where a name with a fixed hash tag
//! (`{webwire}:t:room/N`) would put all 1 000 on one master.
//!
//! While a master is away, what is in its slots fails as above while Redis is away, and
//! the rest works. A topic whose name begins with `}` has an empty hash tag: its two
//! history keys fall in different slots, and a publish to it with a history fails
//! ([`TopicError::History`](crate::server::TopicError::History)); give such topics no
//! history on a cluster.
//!
//! If Redis loses its data (a restart without persistence, a flush), sessions are gone:
//! their clients are told "session not found" on their next restore and log in again;
//! topic histories start a new epoch: resuming clients are told "not recovered".
//!
//! # What Redis is trusted with
//! Whoever can read the session keys (the store's keys) can restore the sessions: give the
//! service a Redis (or an ACL user limited to its prefixes and channels) of its own, with a
//! password, on a network only the nodes reach.
//!
//! The channels are not trusted that far: every envelope carries a tag made with the
//! service's secret ([`ServerBuilder::backplane_secret`](crate::server::ServerBuilder::backplane_secret)),
//! checked before anything is applied, so whoever can only publish on the channels cannot
//! make a node deliver a signal or drop a session (a genuine envelope can be replayed);
//! no session key travels on them in clear. Topic names and signals do: use TLS.
//!
//! # TLS
//! With the `rustls` feature too, `rediss://` URLs connect over TLS (redis-rs's rustls
//! support), verifying Redis's certificate against the system's roots. For a private CA
//! (or a client certificate), build the client with
//! [`redis::Client::build_with_tls`] and hand it to [`RedisStore::from_client`] and
//! [`RedisBackplane::from_client`] (`tests/redis_tls.rs` does, against a redis-server with
//! a certificate made in the test). Without the feature, `rediss://` URLs are refused.

mod backplane;
mod channel;
mod connection;
mod error;
mod history;
mod sharded;
mod store;

pub use backplane::{RedisBackplane, RedisBackplaneBuilder};
pub use error::RedisConnectError;
pub use store::RedisStore;

/// The Redis client this module is built on, in the version it uses: its
/// [`Client`](redis::Client) and [`ConnectionManager`](redis::aio::ConnectionManager)
/// configure connections beyond a URL.
pub use ::redis;

/// A Redis failure as an error to log or return, without any text that could hold a
/// session key or a message.
///
/// Connection, timeout and server errors (Redis's own message: `OOM ...`, `READONLY ...`)
/// keep their text; an unexpected or unparsable reply only says so, since redis-rs writes
/// the reply itself into such errors, and a reply can be a session holding its key.
fn sanitized(err: ::redis::RedisError) -> Box<dyn std::error::Error + Send + Sync> {
    match err.kind() {
        ::redis::ErrorKind::Parse | ::redis::ErrorKind::UnexpectedReturnType => {
            format!("Redis answered with an unexpected reply ({:?})", err.kind()).into()
        }
        _ => Box::new(RedisFailure(err)),
    }
}

/// A Redis error, prefixed so that a log line names Redis.
#[derive(Debug, thiserror::Error)]
#[error("Redis failed: {0}")]
struct RedisFailure(::redis::RedisError);
