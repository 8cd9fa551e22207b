//! What is particular to `RedisBackplane`, against a real redis-server (tests/common/redis.rs;
//! skipped without the binary unless `CI` is set): Redis killed and restarted on the same
//! port, subscriber connections closed by Redis, a send while Redis is down, the subscriber
//! task ending with the backplane. The scenarios every backplane passes run over Redis in
//! `tests/redis_nodes.rs`.

mod common;

use std::time::Duration;

use common::bounded;
use common::nodes::{
    self, Node, Seen, ask, next_signal, publish_until_delivered, redis_node, signals_until,
};
use common::redis::{RedisServer, kill_subscribers, subscribers};
use tokio::sync::mpsc;
use tokio_webwire::backplane::{Backplane, Route};
use tokio_webwire::redis::RedisBackplane;
use tokio_webwire::server::TopicError;

/// A news signal with `text`.
fn news(text: &str) -> (String, String) {
    ("news".to_owned(), text.to_owned())
}

/// Two nodes on `redis`, each with a subscriber to `room`.
struct Room {
    a: Node,
    b: Node,
    /// The subscribers' clients, kept open.
    _clients: [tokio_webwire::Client; 2],
    on_a_seen: mpsc::UnboundedReceiver<Seen>,
    on_b_seen: mpsc::UnboundedReceiver<Seen>,
}

async fn room(redis: &RedisServer) -> Room {
    let a = redis_node(redis).await;
    let b = redis_node(redis).await;
    let (on_a, on_a_seen) = nodes::subscriber(a.addr).await;
    let (on_b, on_b_seen) = nodes::subscriber(b.addr).await;
    assert_eq!(ask(&on_a, "subscribe", "room").await, "true");
    assert_eq!(ask(&on_b, "subscribe", "room").await, "true");
    Room {
        a,
        b,
        _clients: [on_a, on_b],
        on_a_seen,
        on_b_seen,
    }
}

#[tokio::test]
async fn messages_flow_again_after_redis_restarts() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let Room {
        a,
        b,
        mut on_a_seen,
        mut on_b_seen,
        _clients,
    } = room(&redis).await;
    bounded(b.server.publish("room", "news", "before"))
        .await
        .expect("published");
    assert_eq!(next_signal(&mut on_a_seen).await, news("before"));
    assert_eq!(next_signal(&mut on_b_seen).await, news("before"));

    redis.stop();
    // A publish while Redis is away: this node's subscribers get it, the caller learns the
    // other nodes did not.
    match bounded(b.server.publish("room", "news", "down")).await {
        Err(TopicError::Backplane { delivered: 1, .. }) => {}
        other => panic!("expected a backplane error, got {other:?}"),
    }
    assert_eq!(next_signal(&mut on_b_seen).await, news("down"));
    assert!(
        bounded(RedisBackplane::connect(&redis.url()))
            .await
            .is_err(),
        "no Redis, no new backplane"
    );

    redis.restart().await;
    // Both directions come back: b's publishing connection and a's subscriber, then a's
    // publishing connection and b's subscriber.
    publish_until_delivered(&b, "room", "retry-b", &mut on_a_seen).await;
    publish_until_delivered(&a, "room", "retry-a", &mut on_b_seen).await;
    // Flowing as before, each way, once. (What b sent while Redis was away never reached
    // a: pub/sub keeps nothing.)
    for (from, text) in [(&a, "after a"), (&b, "after b")] {
        bounded(from.server.publish("room", "news", text))
            .await
            .expect("published");
        for seen in [&mut on_a_seen, &mut on_b_seen] {
            assert_eq!(signals_until(seen, text).await, [news(text)]);
        }
    }
}

#[tokio::test]
async fn subscriber_connections_closed_by_redis_subscribe_again() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = redis_node(&redis).await;
    let b = redis_node(&redis).await;
    let (on_a, mut on_a_seen) = nodes::subscriber(a.addr).await;
    assert_eq!(ask(&on_a, "subscribe", "room").await, "true");
    let mut raw = redis.raw().await;

    // Redis closes every subscriber connection (an operator, pub/sub's
    // `client-output-buffer-limit`) and stays up.
    assert_eq!(
        kill_subscribers(&mut raw).await,
        2,
        "both nodes' subscribers"
    );

    // Both subscribe again after their backoff (its first wait is 100 ms); Redis's count
    // of subscribers is the only sign of it, so it is looked at until it is back (bounded).
    // Then b's publishes reach a's subscribers again.
    bounded(async {
        while subscribers(&mut raw, "webwire:all").await != 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    bounded(b.server.publish("room", "news", "again"))
        .await
        .expect("published");
    assert_eq!(next_signal(&mut on_a_seen).await, news("again"));
}

#[tokio::test]
async fn a_send_fails_while_redis_is_down_and_the_subscriber_ends_with_the_backplane() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let mut raw = redis.raw().await;
    let backplane = bounded(
        RedisBackplane::builder()
            .channel_prefix("test:")
            .connect(&redis.url()),
    )
    .await
    .expect("connects");
    let room = Route::topic("room/1").unwrap();
    assert_eq!(backplane.channel(&room), "test:t:{room/1}");
    assert_eq!(backplane.channel(&Route::service()), "test:all");
    // A route joined twice is subscribed once, and left on its last leave.
    bounded(backplane.join(&room)).await.expect("joined");
    bounded(backplane.join(&room)).await.expect("joined");
    assert_eq!(subscribers(&mut raw, "test:t:{room/1}").await, 1);
    bounded(backplane.leave(&room)).await.expect("left");
    assert_eq!(subscribers(&mut raw, "test:t:{room/1}").await, 1);
    bounded(backplane.leave(&room)).await.expect("left");
    assert_eq!(subscribers(&mut raw, "test:t:{room/1}").await, 0);
    bounded(backplane.join(&Route::service()))
        .await
        .expect("joined");
    assert_eq!(subscribers(&mut raw, "test:all").await, 1);
    bounded(backplane.send(&Route::service(), "hello".into()))
        .await
        .expect("sent");

    // Dropped: its task ends, and its subscriber connection with it.
    drop(backplane);
    bounded(async {
        while subscribers(&mut raw, "test:all").await != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let backplane = bounded(RedisBackplane::connect(&redis.url()))
        .await
        .expect("connects");
    redis.stop();
    let error = bounded(backplane.send(&Route::service(), "lost".into()))
        .await
        .expect_err("Redis is away");
    assert!(
        error.to_string().starts_with("backplane: Redis failed"),
        "{error}"
    );
}

/// The sequence number of a `n<seq>` news signal.
fn seq(signal: &(String, String)) -> Option<u64> {
    signal.1.strip_prefix('n').and_then(|n| n.parse().ok())
}

#[tokio::test]
async fn redis_restarted_under_load_loses_only_what_was_published_while_it_was_away() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tokio::sync::Notify;

    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let Room {
        a: _a,
        b,
        mut on_a_seen,
        mut on_b_seen,
        _clients,
    } = room(&redis).await;

    // b publishes `n0`, `n1`, ... every millisecond, noting which publishes the backplane
    // refused, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let refusal = Arc::new(Notify::new());
    let publisher = tokio::spawn({
        let (server, stop, next, refusal) = (
            b.server.clone(),
            stop.clone(),
            next.clone(),
            refusal.clone(),
        );
        async move {
            let mut refused = Vec::new();
            let mut every = tokio::time::interval(Duration::from_millis(1));
            while !stop.load(Ordering::Acquire) {
                every.tick().await;
                let n = next.load(Ordering::Acquire);
                match server.publish("room", "news", format!("n{n}")).await {
                    Ok(1) => {}
                    Err(TopicError::Backplane { delivered: 1, .. }) => {
                        refused.push(n);
                        refusal.notify_one();
                    }
                    other => panic!("publish {n}: {other:?}"),
                }
                next.store(n + 1, Ordering::Release);
            }
            (next.load(Ordering::Acquire), refused)
        }
    });

    // Flowing to a; then Redis goes away until b has had three publishes refused.
    let mut on_a_got = Vec::new();
    while on_a_got.len() < 20 {
        on_a_got.extend(seq(&next_signal(&mut on_a_seen).await));
    }
    redis.stop();
    for _ in 0..3 {
        bounded(refusal.notified()).await;
    }
    redis.restart().await;
    // Back by itself: a gets what b publishes from some point after the restart on.
    let restarted_at = next.load(Ordering::Acquire);
    while on_a_got.last().is_none_or(|&n| n < restarted_at + 20) {
        on_a_got.extend(seq(&next_signal(&mut on_a_seen).await));
    }
    stop.store(true, Ordering::Release);
    let (published, refused) = bounded(publisher).await.expect("the publisher ends");
    assert!(refused.len() >= 3);

    // b's own subscriber got every publish, in order: local delivery never depended on
    // Redis.
    for n in 0..published {
        assert_eq!(next_signal(&mut on_b_seen).await, news(&format!("n{n}")));
    }
    // a got each at most once, in order, and none that the backplane refused; what was
    // lost is what was published while Redis (or a's subscription) was away.
    assert!(on_a_got.windows(2).all(|w| w[0] < w[1]), "{on_a_got:?}");
    assert!(on_a_got.iter().all(|n| !refused.contains(n)));
    // (That a receives again after the restart is the loop above: it waits, bounded, for
    // publishes made after it.)
}
