//! `RedisStore` against a real redis-server (tests/common/redis.rs starts one per test;
//! skipped without the binary unless `CI` is set): the store's contract, the TTL, the
//! prefix, untrusted keys, Redis going away. A session restored on a second server:
//! `tests/redis_nodes.rs`.

mod common;

use std::time::Duration;

use common::redis::{RedisServer, session};
use common::{bounded, found};
use time::OffsetDateTime;
use tokio_webwire::Session;
use tokio_webwire::redis::{RedisStore, redis};
use tokio_webwire::session::{DefaultKeyGenerator, SessionKeyGenerator, SessionStore, StoreError};

/// A store on `server`, every call bounded.
async fn store(server: &RedisServer) -> RedisStore {
    bounded(RedisStore::connect(&server.url()))
        .await
        .expect("the store connects")
}

/// A store on `server` with the idle timeout `idle` that has saved `saved`, a raw
/// connection to Redis, and the key Redis keeps `saved` under.
async fn saved_with_idle_timeout(
    server: &RedisServer,
    idle: Duration,
    saved: &Session,
) -> (RedisStore, redis::aio::MultiplexedConnection, String) {
    let store = store(server).await.idle_timeout(idle);
    let con = server.raw().await;
    bounded(store.save(saved)).await.expect("saved");
    (store, con, format!("webwire:session:{}", saved.key))
}

async fn query<T: redis::FromRedisValue>(
    con: &mut redis::aio::MultiplexedConnection,
    cmd: &redis::Cmd,
) -> T {
    bounded(cmd.query_async(con)).await.expect("a Redis reply")
}

/// The TTL in Redis, in milliseconds (`PTTL`: -1 for none), of a session of `user` saved
/// with `saving` and then looked up with `looking` (the same store, or another node's).
async fn ttl_after_lookup(
    server: &RedisServer,
    saving: &RedisStore,
    looking: &RedisStore,
    user: &str,
) -> i64 {
    let mut con = server.raw().await;
    let saved = session(user);
    bounded(saving.save(&saved)).await.expect("saved");
    found(looking, &saved.key).await;
    let redis_key = format!("webwire:session:{}", saved.key);
    query(&mut con, redis::cmd("PTTL").arg(&redis_key)).await
}

#[tokio::test]
async fn save_lookup_remove() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let store = store(&server).await;
    let saved = session("alice");
    bounded(store.save(&saved)).await.expect("saved");

    let found = found(&store, &saved.key).await;
    assert_eq!(found.key, saved.key);
    assert_eq!(found.created, saved.created);
    assert_eq!(found.info, saved.info);

    bounded(store.remove(&saved.key)).await.expect("removed");
    assert_eq!(
        bounded(store.lookup(&saved.key)).await.expect("looked up"),
        None
    );
    // Removing what is not there is no error.
    bounded(store.remove(&saved.key))
        .await
        .expect("removed again");
    assert_eq!(
        bounded(store.lookup(&DefaultKeyGenerator.generate()))
            .await
            .expect("looked up"),
        None
    );
}

#[tokio::test]
async fn lookup_refreshes_last_lookup_and_the_ttl() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let mut saved = session("bob");
    saved.last_lookup = OffsetDateTime::now_utc() - Duration::from_secs(600);
    let (store, mut con, redis_key) =
        saved_with_idle_timeout(&server, Duration::from_secs(3600), &saved).await;
    let ttl: i64 = query(&mut con, redis::cmd("PTTL").arg(&redis_key)).await;
    assert!(
        (3_500_000..=3_600_000).contains(&ttl),
        "TTL after save: {ttl} ms"
    );

    // Most of the TTL gone: a lookup gives it back whole.
    let _: () = query(&mut con, redis::cmd("PEXPIRE").arg(&redis_key).arg(5_000)).await;
    let before = OffsetDateTime::now_utc();
    let found = found(&store, &saved.key).await;
    assert!(
        found.last_lookup >= before,
        "last_lookup is the lookup's time"
    );
    assert_eq!(found.created, saved.created);
    let ttl: i64 = query(&mut con, redis::cmd("PTTL").arg(&redis_key)).await;
    assert!(
        (3_500_000..=3_600_000).contains(&ttl),
        "TTL after lookup: {ttl} ms"
    );

    // What Redis holds is the session's JSON with the new last lookup.
    let json: Vec<u8> = query(&mut con, redis::cmd("GET").arg(&redis_key)).await;
    assert_eq!(Session::from_json(&json).expect("a session"), found);
}

#[tokio::test]
async fn an_idle_session_expires_in_redis() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let saved = session("carol");
    let (store, mut con, redis_key) =
        saved_with_idle_timeout(&server, Duration::from_secs(1), &saved).await;
    // The TTL is the idle timeout, in milliseconds.
    let ttl: i64 = query(&mut con, redis::cmd("PTTL").arg(&redis_key)).await;
    assert!(ttl > 0 && ttl <= 1000, "{ttl}");
    // Redis expires it on its own. Poll with EXISTS, which (unlike a lookup) does not
    // renew the TTL; bounded.
    bounded(async {
        while query::<bool>(&mut con, redis::cmd("EXISTS").arg(&redis_key)).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        bounded(store.lookup(&saved.key)).await.expect("looked up"),
        None
    );
}

#[tokio::test]
async fn zero_idle_timeout_sets_no_ttl() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let store = store(&server).await.idle_timeout(Duration::ZERO);
    let ttl = ttl_after_lookup(&server, &store, &store, "dave").await;
    assert_eq!(ttl, -1, "no expiry");
}

#[tokio::test]
async fn a_store_without_expiry_keeps_the_ttl_another_node_set() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let expiring = store(&server).await.idle_timeout(Duration::from_secs(3600));
    let lasting = store(&server).await.idle_timeout(Duration::ZERO);
    let ttl = ttl_after_lookup(&server, &expiring, &lasting, "fay").await;
    assert!(
        ttl > 0,
        "the other node's expiry survives the lookup: {ttl}"
    );
}

#[tokio::test]
async fn keys_live_under_the_prefix() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let shop = store(&server).await.prefix("shop:s:");
    let chat = store(&server).await;
    let mut con = server.raw().await;
    let saved = session("erin");
    bounded(shop.save(&saved)).await.expect("saved");
    let keys: Vec<String> = query(&mut con, redis::cmd("KEYS").arg("*")).await;
    assert_eq!(keys, [format!("shop:s:{}", saved.key)]);
    // Another prefix, another namespace.
    assert_eq!(
        bounded(chat.lookup(&saved.key)).await.expect("looked up"),
        None
    );
    bounded(chat.save(&saved)).await.expect("saved");
    let mut keys: Vec<String> = query(&mut con, redis::cmd("KEYS").arg("*")).await;
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("shop:s:{}", saved.key),
            format!("webwire:session:{}", saved.key)
        ]
    );
    bounded(shop.remove(&saved.key)).await.expect("removed");
    assert!(
        bounded(chat.lookup(&saved.key))
            .await
            .expect("looked up")
            .is_some()
    );
}

#[tokio::test]
async fn odd_keys_are_not_found_and_cannot_be_saved() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let store = store(&server).await;
    let mut con = server.raw().await;
    bounded(store.save(&session("frank"))).await.expect("saved");
    let long = "k".repeat(5_000);
    let odd = [
        "",
        "*",
        "?",
        "[a-z]*",
        "a b",
        "\0",
        "\r\nFLUSHALL\r\n",
        "é",
        "\u{7f}",
        &long,
    ];
    for key in odd {
        assert_eq!(
            bounded(store.lookup(key)).await.expect("not an error"),
            None,
            "key {key:?}"
        );
        bounded(store.remove(key)).await.expect("not an error");
        let mut bad = session("odd");
        bad.key = key.to_owned();
        match bounded(store.save(&bad)).await {
            // A printable key ("*", "?", "[a-z]*") is a key like any other: Redis keys are
            // not patterns.
            Ok(()) => {
                assert!(key.bytes().all(|b| (0x21..=0x7e).contains(&b)) && !key.is_empty());
                let found = bounded(store.lookup(key)).await.expect("looked up");
                assert_eq!(found.map(|s| s.key), Some(key.to_owned()));
                bounded(store.remove(key)).await.expect("removed");
            }
            Err(StoreError::InvalidKey { .. }) => {}
            Err(other) => panic!("unexpected error for {key:?}: {other}"),
        }
    }
    // The one real session is still there, alone.
    let count: usize = query(&mut con, &redis::cmd("DBSIZE")).await;
    assert_eq!(count, 1);
}

// Two workers, so that the lookup and the remove really run at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_racing_a_remove_never_brings_the_session_back() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let store = store(&server).await;
    let mut con = server.raw().await;
    // Whatever the interleaving, the remove wins: after both, nothing is left.
    for _ in 0..100 {
        let saved = session("gina");
        bounded(store.save(&saved)).await.expect("saved");
        let lookup = tokio::spawn({
            let store = store.clone();
            let key = saved.key.clone();
            async move { store.lookup(&key).await }
        });
        bounded(store.remove(&saved.key)).await.expect("removed");
        bounded(lookup)
            .await
            .expect("the lookup task ran")
            .expect("looked up");
        let exists: usize = query(
            &mut con,
            redis::cmd("EXISTS").arg(format!("webwire:session:{}", saved.key)),
        )
        .await;
        assert_eq!(exists, 0);
    }
}

#[tokio::test]
async fn redis_away_fails_operations_without_the_key_and_they_recover() {
    let Some(mut server) = RedisServer::start().await else {
        return;
    };
    let store = store(&server).await;
    let saved = session("hank");
    bounded(store.save(&saved)).await.expect("saved");

    server.stop();
    let error = bounded(store.lookup(&saved.key))
        .await
        .expect_err("Redis is away");
    let text = format!("{error} {error:?}");
    assert!(!text.contains(&saved.key), "the key leaked: {text}");
    assert!(bounded(store.save(&session("ivy"))).await.is_err());
    assert!(!format!("{store:?}").contains(&saved.key));

    // Back, empty (no persistence): the store reconnects by itself.
    server.restart().await;
    let found = bounded(async {
        loop {
            match store.lookup(&saved.key).await {
                Ok(found) => return found,
                // Reconnecting: Redis's return is no event we can wait on, so look
                // again a little later (bounded above).
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert_eq!(found, None, "Redis lost it");
    bounded(store.save(&saved)).await.expect("saved again");
    assert!(
        bounded(store.lookup(&saved.key))
            .await
            .expect("looked up")
            .is_some()
    );
}
