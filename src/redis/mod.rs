//! Many servers, one service (feature `redis`): sessions shared through Redis, so that a
//! client restores its session on any node behind a load balancer.
//!
//! | file | holds |
//! |---|---|
//! | `store.rs` | [`RedisStore`]: a [`SessionStore`](crate::session::SessionStore) in Redis |
//!
//! # What is stored where
//! Each session is one Redis string under `<prefix><session key>` (prefix
//! `webwire:session:` unless set), holding the session's JSON wire form as the Go server
//! writes it (`{"k":…,"c":…,"l":…,"i":…}`), with a TTL of the store's idle timeout
//! (14 days unless set), renewed by every restore. Nothing else is kept: no index, no set
//! of keys, so a session costs the same however many there are, and expiry is Redis's.
//!
//! # Memory in Redis
//! A session takes its JSON (about 130 bytes plus its info and key) plus Redis's own
//! bookkeeping for a key with a TTL, about 80 bytes more (`MEMORY USAGE` of a session with
//! a 43-character default key and a short info string: 232 bytes on Redis 7, measured by
//! `cargo bench --features redis --bench restore_latency`), so a million such sessions
//! take about 230 MB. Sessions as large as the message size limit (8 KiB by default) take
//! that much each: bound Redis with `maxmemory` and a `volatile-*` eviction policy (every
//! session key has a TTL) if logins are not otherwise bounded.
//!
//! # While Redis is away
//! The store's connection reconnects by itself; until it has, every operation fails
//! within a second or two (redis-rs's connect and reply timeouts, two quick retries):
//! - a restore is answered with an internal error (and logged): the client keeps its
//!   session key and may try again, and its connection works for everything else;
//! - a login fails ([`SessionError::Store`](crate::SessionError::Store));
//! - a logout or [`Server::close_session`](crate::server::Server::close_session) fails to
//!   remove the stored session (logged, and returned to the caller of `close_session`):
//!   the session stays restorable until it is removed again or expires;
//! - connections, requests and signals are unaffected.
//!
//! If Redis loses its data (a restart without persistence, a flush), sessions are gone:
//! their clients are told "session not found" on their next restore and log in again.

mod backplane;
mod store;

pub use backplane::{RedisBackplane, RedisBackplaneBuilder};
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
