//! Topic histories in Redis (the Redis backplane's shared history, `docs/topics.md` §5):
//! servers on one real redis-server (tests/common/redis.rs; skipped without the binary
//! unless `CI` is set), clients in raw frames. A subscriber that moves to another node
//! gets exactly what it missed; one order and the same positions on every node, also
//! with both nodes publishing at once and a resume racing them; Redis away (a publish
//! fails, a resume is unavailable, topics without history unaffected); keys flushed (a
//! new epoch, nothing stale); trimming by count, bytes and age.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::redis::{RedisServer, kill_subscribers, subscribers};
use common::topics::{
    AllButSecret, Seen, connect, history_node, offsets, publications, publish, read, resumed,
    subscribe, subscribe_frame, texts, topics_client,
};
use common::{RawClient, bounded, listen};
use tokio_webwire::client::TopicEvent;
use tokio_webwire::protocol::topics::{Position, Status, Subscribed, codes};
use tokio_webwire::redis::RedisBackplane;
use tokio_webwire::redis::redis::aio::MultiplexedConnection;
use tokio_webwire::redis::redis::{AsyncCommands, cmd};
use tokio_webwire::server::{History, Server, TopicError};

/// A node: a server whose `room/*` topics keep `history` in `redis`, `news` none.
async fn node(redis: &RedisServer, history: History) -> (Server<AllButSecret>, SocketAddr) {
    let backplane = bounded(RedisBackplane::connect(&redis.url()))
        .await
        .expect("the backplane connects");
    let server = history_node(backplane, "room/*", history)
        .outbound_queue_len(1024)
        .build()
        .expect("server");
    let addr = listen(&server).await;
    (server, addr)
}

async fn gone(server: &Server<AllButSecret>, topic: &str) {
    bounded(async {
        while server.subscriber_count(topic) > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_subscriber_moving_to_another_node_gets_exactly_what_it_missed_then_live_ones() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, a_addr) = node(&redis, History::last(100)).await;
    let (b, b_addr) = node(&redis, History::last(100)).await;
    let (mut on_a, _) = connect(a_addr, true).await;
    let (mut watcher, _) = connect(b_addr, true).await;
    let start = subscribe(&mut on_a, "room/1", None).await;
    assert_eq!(start.status, Status::Subscribed);
    assert_eq!(
        subscribe(&mut watcher, "room/1", None).await,
        start,
        "both nodes answer the same position"
    );
    for i in 1..=3 {
        publish(&a, "room/1", &format!("m{i}")).await;
    }
    let seen = publications(&mut on_a, 3).await;
    assert_eq!(offsets(&seen), [1, 2, 3]);
    let last = seen[2].0;
    assert_eq!(last.epoch, start.position.epoch);

    drop(on_a); // killed: no close frame
    gone(&a, "room/1").await;
    // Five land while it is away, published on both nodes.
    for i in 4..=8 {
        let node = if i % 2 == 0 { &a } else { &b };
        publish(node, "room/1", &format!("m{i}")).await;
    }
    // The watcher on b saw all eight with the positions a gave.
    let watched = publications(&mut watcher, 8).await;
    assert_eq!(offsets(&watched), (1..=8).collect::<Vec<_>>());
    assert_eq!(watched[..3], seen[..]);

    // It reconnects to the other node.
    let (mut on_b, _) = connect(b_addr, true).await;
    on_b.send(subscribe_frame(2, "room/1", Some(last))).await;
    let missed = publications(&mut on_b, 5).await;
    assert_eq!(texts(&missed), ["m4", "m5", "m6", "m7", "m8"]);
    assert_eq!(offsets(&missed), [4, 5, 6, 7, 8]);
    assert!(missed.iter().all(|(p, _)| p.epoch == last.epoch));
    assert_eq!(
        read(on_b.recv().await),
        Seen::Answer(Subscribed {
            status: Status::Recovered,
            position: Position { offset: 8, ..last }
        })
    );
    publish(&a, "room/1", "m9").await;
    assert_eq!(
        publications(&mut on_b, 1).await,
        [(Position { offset: 9, ..last }, "m9".to_owned())]
    );
}

#[tokio::test]
async fn while_redis_is_away_a_publish_fails_and_a_resume_is_unavailable() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let (server, addr) = node(&redis, History::last(100)).await;
    let (mut client, _) = connect(addr, true).await;
    let start = subscribe(&mut client, "room/1", None).await;
    assert_eq!(
        subscribe(&mut client, "news", None).await.status,
        Status::NoHistory
    );
    publish(&server, "room/1", "m1").await;
    let seen = publications(&mut client, 1).await;

    redis.stop();
    match bounded(server.publish("room/1", "msg", "lost?")).await {
        Err(TopicError::History(error)) => {
            assert!(error.to_string().contains("Redis"), "{error}");
        }
        other => panic!("expected TopicError::History, got {other:?}"),
    }
    // A topic without history still reaches this node's subscribers (the backplane
    // reports that the other nodes missed it).
    match bounded(server.publish("news", "msg", "local")).await {
        Err(TopicError::Backplane { delivered, .. }) => assert_eq!(delivered, 1),
        other => panic!("expected TopicError::Backplane, got {other:?}"),
    }
    match read(client.recv().await) {
        Seen::Publication { topic, text, .. } => {
            assert_eq!(
                (topic.as_str(), text.as_str()),
                ("news", "local"),
                "nothing of room/1"
            );
        }
        other => panic!("{other:?}"),
    }
    let (mut resuming, _) = connect(addr, true).await;
    resuming
        .send(subscribe_frame(3, "room/1", Some(seen[0].0)))
        .await;
    assert_eq!(
        read(resuming.recv().await),
        Seen::Error(codes::UNAVAILABLE.into())
    );

    // Redis is back, empty: a new epoch, and the old position is not recovered.
    redis.restart().await;
    let after = bounded(async {
        loop {
            match server.publish("room/1", "msg", "m1'").await {
                Ok(_) => return,
                Err(TopicError::History(_)) => tokio::task::yield_now().await,
                Err(other) => panic!("{other}"),
            }
        }
    });
    after.await;
    let live = publications(&mut client, 1).await;
    assert_ne!(live[0].0.epoch, start.position.epoch);
    assert_eq!(live[0].0.offset, 1);
    let answer = subscribe(&mut resuming, "room/1", Some(seen[0].0)).await;
    assert_eq!(answer.status, Status::NotRecovered);
    assert_eq!(answer.position, live[0].0);
}

/// Our client reconnects while Redis is away: its resubscription is answered
/// `WW_UNAVAILABLE`, asked again, and once Redis is back (empty) reported as not
/// recovered, with the new position; the subscription goes on.
#[tokio::test]
async fn our_client_resubscribing_while_redis_is_away_asks_again_until_it_is_back() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let backplane = bounded(RedisBackplane::connect(&redis.url()))
        .await
        .expect("the backplane connects");
    let build = || {
        Server::builder(AllButSecret)
            .history("room/*", History::last(100))
            .backplane(backplane.clone())
            .backplane_secret(common::nodes::SECRET)
            .build()
            .expect("server")
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = build();
    tokio::spawn(server.serve(listener));
    let client = topics_client(addr).await;
    let mut room = bounded(client.subscribe("room/1"))
        .await
        .expect("subscribed");
    let old = room.answer().position;

    // Redis goes away, and the client's connection with its server (restarted on the
    // same port and backplane): it reconnects and resubscribes while Redis is away.
    redis.stop();
    bounded(server.shutdown()).await;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("the same port");
    let server = build();
    tokio::spawn(server.serve(listener));
    bounded(async {
        while server.connection_count() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    redis.restart().await;
    match bounded(room.next()).await.expect("an event") {
        TopicEvent::NotRecovered { position } => {
            assert_ne!(position.epoch, old.epoch);
            assert_eq!(position.offset, 0);
        }
        other => panic!("expected NotRecovered, got {other:?}"),
    }
    publish(&server, "room/1", "after").await;
    match bounded(room.next()).await.expect("an event") {
        TopicEvent::Publication { position, .. } => {
            assert_eq!(position.map(|p| p.offset), Some(1));
        }
        other => panic!("expected the publication, got {other:?}"),
    }
}

#[tokio::test]
async fn flushed_keys_start_a_new_epoch_and_nothing_stale_is_delivered() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (server, addr) = node(&redis, History::last(100)).await;
    for i in 1..=3 {
        publish(&server, "room/1", &format!("m{i}")).await;
    }
    let (mut client, _) = connect(addr, true).await;
    let old = Position {
        offset: 2,
        ..subscribe(&mut client, "room/1", None).await.position
    };
    drop(client);
    let mut raw = redis.raw().await;
    let () = bounded(cmd("FLUSHALL").query_async(&mut raw))
        .await
        .expect("flushed");
    // Before anything is published again: told at once, with the new epoch.
    let (mut client, _) = connect(addr, true).await;
    let answer = subscribe(&mut client, "room/1", Some(old)).await;
    assert_eq!(answer.status, Status::NotRecovered);
    assert_ne!(answer.position.epoch, old.epoch);
    assert_eq!(answer.position.offset, 0);
    drop(client);
    for i in 1..=2 {
        publish(&server, "room/1", &format!("new{i}")).await;
    }
    let (mut client, _) = connect(addr, true).await;
    let answer = subscribe(&mut client, "room/1", Some(old)).await;
    assert_eq!(
        answer.status,
        Status::NotRecovered,
        "nothing stale before it"
    );
    assert_ne!(answer.position.epoch, old.epoch);
    assert_eq!(answer.position.offset, 2);
    publish(&server, "room/1", "live").await;
    assert_eq!(
        publications(&mut client, 1).await,
        [(
            Position {
                offset: 3,
                ..answer.position
            },
            "live".to_owned()
        )]
    );

    // Only the stream evicted (its hash kept): a new epoch too, never a silent gap.
    let () = bounded(raw.del("webwire:history:{room/1}:s"))
        .await
        .unwrap();
    publish(&server, "room/1", "after eviction").await;
    let seen = publications(&mut client, 1).await;
    assert_ne!(seen[0].0.epoch, answer.position.epoch);
    assert_eq!(seen[0].0.offset, 1);
}

/// The epoch of `topic`'s history on the node at `addr`, from a client that subscribes
/// and leaves (which makes the history if there was none).
async fn epoch_of(addr: SocketAddr, topic: &str) -> u64 {
    let (mut client, _) = connect(addr, true).await;
    subscribe(&mut client, topic, None).await.position.epoch
}

/// How many publications of `topic` the history's stream in Redis holds (`XLEN`).
async fn kept(raw: &mut MultiplexedConnection, topic: &str) -> usize {
    bounded(
        cmd("XLEN")
            .arg(format!("webwire:history:{{{topic}}}:s"))
            .query_async(raw),
    )
    .await
    .unwrap()
}

/// A new client of `addr` whose resume of `topic` at offset `lost` of `epoch`, which the
/// history no longer holds, is not recovered; it then resumes at `first_kept`, the oldest
/// offset kept (request 5), and is returned to read what comes.
async fn resumed_after_trim(
    addr: SocketAddr,
    topic: &str,
    epoch: u64,
    (lost, first_kept): (u64, u64),
) -> RawClient {
    let (mut client, _) = connect(addr, true).await;
    let at = |offset| Some(Position { epoch, offset });
    assert_eq!(
        subscribe(&mut client, topic, at(lost)).await.status,
        Status::NotRecovered
    );
    client.send(subscribe_frame(5, topic, at(first_kept))).await;
    client
}

#[tokio::test]
async fn the_history_is_trimmed_by_count_bytes_and_age() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mut raw = redis.raw().await;
    // Count: the last 3 of 6.
    let (server, addr) = node(&redis, History::last(3)).await;
    let epoch = epoch_of(addr, "room/count").await;
    for i in 1..=6 {
        publish(&server, "room/count", &format!("m{i}")).await;
    }
    let len = kept(&mut raw, "room/count").await;
    assert_eq!(len, 3);
    let mut client = resumed_after_trim(addr, "room/count", epoch, (2, 3)).await;
    assert_eq!(
        texts(&publications(&mut client, 3).await),
        ["m4", "m5", "m6"]
    );
    assert!(matches!(
        read(client.recv().await),
        Seen::Answer(Subscribed {
            status: Status::Recovered,
            ..
        })
    ));

    // Bytes: each signal here is 7 bytes (`40 03 "msg" "mN"`), 20 bytes keep two.
    let (server, addr) = node(&redis, History::last(100).max_bytes(20)).await;
    let epoch = epoch_of(addr, "room/bytes").await;
    for i in 1..=5 {
        publish(&server, "room/bytes", &format!("m{i}")).await;
    }
    let mut client = resumed_after_trim(addr, "room/bytes", epoch, (2, 3)).await;
    assert_eq!(texts(&publications(&mut client, 2).await), ["m4", "m5"]);

    // Age: Redis's clock is the subject, and it cannot be paused; 300 ms of it pass.
    let (server, addr) = node(
        &redis,
        History::last(100).max_age(Duration::from_millis(200)),
    )
    .await;
    let epoch = epoch_of(addr, "room/age").await;
    publish(&server, "room/age", "old").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&server, "room/age", "young").await;
    let len = kept(&mut raw, "room/age").await;
    assert_eq!(len, 1, "the old one was trimmed by the publish");
    let mut client = resumed_after_trim(addr, "room/age", epoch, (0, 1)).await;
    assert_eq!(texts(&publications(&mut client, 1).await), ["young"]);
    assert!(matches!(
        read(client.recv().await),
        Seen::Answer(Subscribed {
            status: Status::Recovered,
            ..
        })
    ));
    // And too old to replay when read, though not yet trimmed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        subscribe(&mut client, "room/age", Some(Position { epoch, offset: 1 }))
            .await
            .status,
        Status::NotRecovered
    );
}

/// Nodes a and b with a client of a subscribed to `room/1`, which got m1; then Redis
/// closes both nodes' channel subscriptions and b publishes m2 while nobody hears the
/// channel (the nodes subscribe again after 100 ms): a never receives m2 itself.
async fn a_misses_m2(
    redis: &RedisServer,
) -> (
    Server<AllButSecret>,
    Server<AllButSecret>,
    common::RawClient,
    MultiplexedConnection,
) {
    let (a, a_addr) = node(redis, History::last(100)).await;
    let (b, _) = node(redis, History::last(100)).await;
    let (mut client, _) = connect(a_addr, true).await;
    subscribe(&mut client, "room/1", None).await;
    publish(&b, "room/1", "m1").await;
    assert_eq!(texts(&publications(&mut client, 1).await), ["m1"]);
    let mut raw = redis.raw().await;
    assert_eq!(
        kill_subscribers(&mut raw).await,
        2,
        "both nodes' subscribers"
    );
    assert_eq!(subscribers(&mut raw, "webwire:all").await, 0);
    publish(&b, "room/1", "m2").await;
    (a, b, client, raw)
}

/// A publication a node never received (its subscription to the channel was down) is
/// read from the stream when the next one shows the hole: its subscribers get both, in
/// order. (If the subscription came back first, the catch-up below brings it: the same
/// outcome. The fill alone was checked before the catch-up existed: without it the test
/// timed out.)
#[tokio::test]
async fn a_publication_the_backplane_lost_is_filled_in_from_the_stream() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b, mut client, mut raw) = a_misses_m2(&redis).await;
    // a's own next publication shows a the hole: m2 is read from the stream.
    publish(&a, "room/1", "m3").await;
    let seen = publications(&mut client, 2).await;
    assert_eq!(offsets(&seen), [2, 3]);
    assert_eq!(texts(&seen), ["m2", "m3"]);
    bounded(async {
        while subscribers(&mut raw, "webwire:all").await < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // And the backplane carries b's again.
    publish(&b, "room/1", "m4").await;
    let seen = publications(&mut client, 1).await;
    assert_eq!(seen[0].0.offset, 4);
}

/// A publication a node missed while its channel subscription was down, with nothing
/// published after it: read from the stream once the subscription is back.
#[tokio::test]
async fn a_node_catches_up_from_the_stream_when_its_channel_subscription_is_back() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (_a, _b, mut client, _raw) = a_misses_m2(&redis).await;
    // Nothing after it: only the catch-up can bring it.
    let seen = publications(&mut client, 1).await;
    assert_eq!(seen[0].0.offset, 2);
    assert_eq!(texts(&seen), ["m2"]);
}

/// Both nodes publish 1..=N at once while a subscriber on one node watches from the start
/// and clients resume on both nodes from the middle, one after the other: every
/// subscriber gets every offset once, in order, with the same text, whatever the
/// interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_from_two_nodes_racing_a_resume_leave_no_gap_and_no_duplicate() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    const N: u64 = 200;
    const RESUMES: usize = 6;
    let (a, a_addr) = node(&redis, History::last(1000)).await;
    let (b, b_addr) = node(&redis, History::last(1000)).await;
    for run in 0..10 {
        let topic = format!("room/race{run}");
        let (mut watcher, _) = connect(a_addr, true).await;
        let epoch = subscribe(&mut watcher, &topic, None).await.position.epoch;
        for i in 1..=20 {
            publish(&a, &topic, &i.to_string()).await;
        }
        // Texts are the publisher's count, so two publishers give each text twice: the
        // offsets are what must come once each.
        let publishers: Vec<_> = [a.clone(), b.clone()]
            .into_iter()
            .map(|server| {
                let topic = topic.clone();
                tokio::spawn(async move {
                    for i in 0..(N - 20) / 2 {
                        server
                            .publish(&topic, "msg", i.to_string())
                            .await
                            .expect("published");
                    }
                })
            })
            .collect();
        // Resumes one after the other, on both nodes, while the publishers run.
        let mut clients = Vec::new();
        for k in 0..RESUMES {
            let addr = if k % 2 == 0 { b_addr } else { a_addr };
            let (mut client, _) = connect(addr, true).await;
            let resume = Position { epoch, offset: 10 };
            client.send(subscribe_frame(9, &topic, Some(resume))).await;
            clients.push(client);
        }
        let mut orders = Vec::new();
        for (k, client) in clients.iter_mut().enumerate() {
            let resume = Position { epoch, offset: 10 };
            orders.push(resumed(client, resume, N, &format!("run {run}, resume {k}")).await);
        }
        let watched = publications(&mut watcher, N as usize).await;
        assert_eq!(offsets(&watched), (1..=N).collect::<Vec<_>>(), "run {run}");
        for order in &orders {
            assert_eq!(
                texts(&watched[10..]),
                *order,
                "run {run}: the same order on both nodes"
            );
        }
        for publisher in publishers {
            bounded(publisher).await.unwrap();
        }
    }
}
