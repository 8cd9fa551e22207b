//! Redis Cluster: a real 3-master cluster per test (tests/common/redis_cluster.rs; skipped
//! without `redis-server` and `redis-cli` unless `CI` is set). The scenarios of
//! `tests/nodes.rs` on two servers through the cluster (sharded pub/sub, the session
//! store on the cluster), a topic's history resumed on the other node, the subscriptions
//! coming back after the cluster closed every connection, a master was away or a slot moved; the session
//! store on the cluster; how the channel names spread over the hash slots.
//!
//! Over 600 lines, one subject: the backplane and store on a real cluster. Each test
//! starts its own cluster (seconds each) through the same helpers here; the scenarios
//! shared with the other backends already live in `tests/common/nodes.rs`, and what stays
//! is what only a cluster shows (slots, moves, masters away).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::nodes::{self, Node, redis_cluster_node};
use common::redis::session;
use common::redis_cluster::{MASTERS, RedisCluster};
use common::topics::{
    AllButSecret, Seen, connect, history_node, offsets, publications, publish, read, subscribe,
    subscribe_frame, texts,
};
use common::{bounded, found, listen};
use tokio_webwire::Session;
use tokio_webwire::protocol::topics::{Position, Status};
use tokio_webwire::redis::{RedisBackplane, RedisConnectError, RedisStore, redis};
use tokio_webwire::server::{History, Server, TopicError};
use tokio_webwire::session::SessionStore;

/// Two nodes on a fresh cluster, or `None` (skip) without one.
async fn two_nodes() -> Option<(RedisCluster, Node, Node)> {
    let cluster = RedisCluster::start().await?;
    let a = redis_cluster_node(&cluster).await;
    let b = redis_cluster_node(&cluster).await;
    Some((cluster, a, b))
}

nodes_scenarios!(two_nodes);

/// A server on `cluster` whose topics matching `pattern` keep `history` in the cluster.
async fn cluster_history_server(
    cluster: &RedisCluster,
    pattern: &str,
    history: History,
) -> Server<AllButSecret> {
    let backplane = bounded(RedisBackplane::builder().connect_cluster(cluster.urls()))
        .await
        .expect("the backplane connects");
    history_node(backplane, pattern, history)
        .build()
        .expect("server")
}

/// A node whose `room/*` topics keep their last 100 publications in the cluster.
async fn cluster_history_node(cluster: &RedisCluster) -> (Server<AllButSecret>, SocketAddr) {
    let server = cluster_history_server(cluster, "room/*", History::last(100)).await;
    let addr = listen(&server).await;
    (server, addr)
}

/// A node on a cluster and its address.
type HistoryNode = (Server<AllButSecret>, SocketAddr);

/// Two history nodes on a fresh cluster, or `None` (skip) without one.
async fn two_history_nodes() -> Option<(RedisCluster, HistoryNode, HistoryNode)> {
    let cluster = RedisCluster::start().await?;
    let a = cluster_history_node(&cluster).await;
    let b = cluster_history_node(&cluster).await;
    Some((cluster, a, b))
}

/// Topics on every master: a client of node a subscribed to each gets what node b
/// publishes, with the positions the history in the cluster gives; it moves to node b
/// and resumes each from where it was: exactly what it missed, then live ones.
#[tokio::test]
async fn a_topic_history_is_resumed_on_the_other_node() {
    let Some((cluster, (a, a_addr), (b, b_addr))) = two_history_nodes().await else {
        return;
    };
    // room/0, room/1 and room/3 are on three different masters (slots 1 652, 5 717 and
    // 13 847: the slot function is checked against Redis's below).
    let topics = ["room/0", "room/1", "room/3"];
    let shards: std::collections::BTreeSet<usize> = topics
        .iter()
        .map(|topic| shard(slot(&format!("{{{topic}}}"))))
        .collect();
    assert_eq!(shards.len(), MASTERS, "one topic per master");

    let (mut on_a, _) = connect(a_addr, true).await;
    let mut last = Vec::new();
    for topic in topics {
        let start = subscribe(&mut on_a, topic, None).await;
        assert_eq!(start.status, Status::Subscribed);
        for i in 1..=2 {
            publish(&b, topic, &format!("{topic} m{i}")).await;
        }
        let seen = publications(&mut on_a, 2).await;
        assert_eq!(offsets(&seen), [1, 2], "{topic}");
        assert_eq!(seen[1].0.epoch, start.position.epoch);
        last.push(seen[1].0);
    }
    drop(on_a); // killed: no close frame
    for topic in topics {
        bounded(async {
            while a.subscriber_count(topic) > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        // Missed while away, published on both nodes.
        publish(&a, topic, &format!("{topic} m3")).await;
        publish(&b, topic, &format!("{topic} m4")).await;
    }

    let (mut on_b, _) = connect(b_addr, true).await;
    for (id, (topic, last)) in topics.iter().zip(&last).enumerate() {
        on_b.send(subscribe_frame(id as u64 + 10, topic, Some(*last)))
            .await;
        // The missed ones, in order, and the answer: before them when node b's own
        // position of the topic is behind (it published m4 there with no subscriber, so
        // it heard nothing of m3 and takes it from the stream as the hole's filling),
        // after them otherwise. Either way nothing is missed and nothing comes twice.
        let mut missed = Vec::new();
        let mut answer = None;
        while missed.len() < 2 || answer.is_none() {
            match read(on_b.recv().await) {
                Seen::Publication {
                    position: Some(position),
                    text,
                    ..
                } => missed.push((position, text)),
                Seen::Answer(subscribed) => {
                    assert_eq!(answer, None, "{topic}: one answer");
                    answer = Some((subscribed, missed.len()));
                }
                other => panic!("{topic}: {other:?}"),
            }
        }
        assert_eq!(
            texts(&missed),
            [format!("{topic} m3"), format!("{topic} m4")]
        );
        assert_eq!(offsets(&missed), [3, 4]);
        assert!(missed.iter().all(|(p, _)| p.epoch == last.epoch));
        let (subscribed, before) = answer.expect("answered");
        assert_eq!(subscribed.status, Status::Recovered, "{topic}");
        assert_eq!(subscribed.position.epoch, last.epoch);
        assert_eq!(
            subscribed.position.offset,
            [2, 3, 4][before],
            "{topic}: the answer's position is the last publication before it"
        );
    }
    for (topic, last) in topics.iter().zip(&last) {
        publish(&a, topic, &format!("{topic} m5")).await;
        assert_eq!(
            publications(&mut on_b, 1).await,
            [(Position { offset: 5, ..*last }, format!("{topic} m5"))]
        );
    }
    // Each topic's history is on the master of its slot.
    let mut raw = cluster.raw().await;
    for topic in topics {
        let kept: usize = bounded(
            redis::cmd("XLEN")
                .arg(format!("webwire:history:{{{topic}}}:s"))
                .query_async(&mut raw),
        )
        .await
        .expect("XLEN");
        assert_eq!(kept, 5, "{topic}");
    }
}

/// Every master closes every connection: both nodes subscribe again (each tells its
/// server, which catches up), and messages flow both ways as before, once.
#[tokio::test]
async fn messages_flow_again_after_the_cluster_closes_every_connection() {
    let Some((cluster, a, b)) = two_nodes().await else {
        return;
    };
    let (on_a, mut on_a_seen) = nodes::subscriber(a.addr).await;
    let (on_b, mut on_b_seen) = nodes::subscriber(b.addr).await;
    assert_eq!(nodes::ask(&on_a, "subscribe", "room").await, "true");
    assert_eq!(nodes::ask(&on_b, "subscribe", "room").await, "true");
    assert_eq!(cluster.shard_subscribers("webwire:t:{room}").await, 2);
    bounded(b.server.publish("room", "news", "before"))
        .await
        .expect("published");
    for seen in [&mut on_a_seen, &mut on_b_seen] {
        assert_eq!(nodes::next_signal(seen).await, news("before"));
    }

    assert!(cluster.kill_clients().await >= 2, "both nodes' connections");
    assert_eq!(cluster.shard_subscribers("webwire:t:{room}").await, 0);
    nodes::publish_until_delivered(&b, "room", "retry-b", &mut on_a_seen).await;
    nodes::publish_until_delivered(&a, "room", "retry-a", &mut on_b_seen).await;
    assert_eq!(cluster.shard_subscribers("webwire:t:{room}").await, 2);
    for (from, text) in [(&a, "after a"), (&b, "after b")] {
        bounded(from.server.publish("room", "news", text))
            .await
            .expect("published");
        for seen in [&mut on_a_seen, &mut on_b_seen] {
            assert_eq!(nodes::signals_until(seen, text).await, [news(text)], "once");
        }
    }
}

/// A cluster that stops answering without closing a connection (every master in `DEBUG
/// SLEEP`): the backplane's `health_check` PING notices, it subscribes again, and its
/// server looks up the sessions it holds; one deleted from the store meanwhile (as by a
/// revocation this node never heard of) is taken from its client. With the check's
/// defaults (30 s) nothing would happen within the test's bound.
#[tokio::test]
async fn a_silent_cluster_is_noticed_by_the_health_check() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let store = store_on(&cluster).await;
    let backplane = bounded(
        RedisBackplane::builder()
            .health_check(Duration::from_millis(200), Duration::from_millis(200))
            .connect_cluster(cluster.urls()),
    )
    .await
    .expect("the backplane connects");
    let a = nodes::node(|builder| builder.session_store(store).backplane(backplane)).await;
    let (client, mut seen) = nodes::subscriber(a.addr).await;
    let key = nodes::login(&client, &mut seen).await;

    let mut raw = cluster.raw().await;
    let deleted: usize = bounded(
        redis::cmd("DEL")
            .arg(format!("{}{key}", RedisStore::DEFAULT_PREFIX))
            .query_async(&mut raw),
    )
    .await
    .expect("DEL");
    assert_eq!(deleted, 1, "the session was in the store");
    for port in cluster.ports() {
        let mut master = cluster.node(port).await;
        tokio::spawn(async move {
            let _: redis::RedisResult<redis::Value> = redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg("1")
                .query_async(&mut master)
                .await;
        });
    }
    assert_eq!(bounded(seen.recv()).await, Some(nodes::Seen::SessionClosed));
    assert!(client.session().is_none());
}

/// One master stopped: the channels of its slots are lost (a publish to them fails to
/// reach the other node), those of the other masters keep flowing to both nodes while
/// the backplane tries to subscribe again; the master back (empty, same slots), every
/// channel flows again, once.
#[tokio::test]
async fn a_master_away_stops_only_the_channels_of_its_slots() {
    let Some((mut cluster, a, b)) = two_nodes().await else {
        return;
    };
    let (on_a, mut seen) = nodes::subscriber(a.addr).await;
    // One topic per master (slots 1 652, 5 717 and 13 847).
    let topics = ["room/0", "room/1", "room/3"];
    for topic in topics {
        assert_eq!(nodes::ask(&on_a, "subscribe", topic).await, "true");
    }
    let away = cluster.master_of(slot("{room/1}")).await;
    for topic in [topics[0], topics[2]] {
        let master = cluster.master_of(slot(&format!("{{{topic}}}"))).await;
        assert_ne!(master, away, "{topic} is on another master");
    }

    cluster.stop_node(away);
    match bounded(b.server.publish("room/1", "news", "lost")).await {
        Err(TopicError::Backplane { delivered: 0, .. }) => {}
        other => panic!("expected a backplane error, got {other:?}"),
    }
    // The other masters' channels flow while node a keeps trying to subscribe room/1's.
    for topic in [topics[0], topics[2]] {
        bounded(b.server.publish(topic, "news", topic))
            .await
            .expect("published through a master that is up");
        assert_eq!(nodes::next_signal(&mut seen).await, news(topic));
    }

    cluster.restart_node(away).await;
    nodes::publish_until_delivered(&b, "room/1", "retry", &mut seen).await;
    for topic in topics {
        bounded(b.server.publish(topic, "news", format!("{topic} after")))
            .await
            .expect("published");
        let text = format!("{topic} after");
        assert_eq!(
            nodes::signals_until(&mut seen, &text).await,
            [news(&text)],
            "once, and nothing lost was delivered"
        );
    }
}

/// A topic's slot moved to another master: Redis unsubscribes the nodes from its channel
/// on the old one; the backplane subscribes again (on the new one, after redis-rs learns
/// the move from a MOVED reply), and the topic flows again.
#[tokio::test]
async fn a_moved_slot_is_subscribed_again_on_its_new_master() {
    let Some((cluster, a, b)) = two_nodes().await else {
        return;
    };
    let (on_a, mut seen) = nodes::subscriber(a.addr).await;
    assert_eq!(nodes::ask(&on_a, "subscribe", "room").await, "true");
    bounded(b.server.publish("room", "news", "before"))
        .await
        .expect("published");
    assert_eq!(nodes::next_signal(&mut seen).await, news("before"));

    let room = slot("{room}");
    let from = cluster.master_of(room).await;
    let to = cluster
        .ports()
        .into_iter()
        .find(|port| *port != from)
        .expect("another master");
    cluster.move_slot(room, to).await;
    assert_eq!(cluster.master_of(room).await, to);
    nodes::publish_until_delivered(&b, "room", "retry", &mut seen).await;
    assert_eq!(cluster.shard_subscribers("webwire:t:{room}").await, 1);
    bounded(b.server.publish("room", "news", "after"))
        .await
        .expect("published");
    assert_eq!(
        nodes::signals_until(&mut seen, "after").await,
        [news("after")]
    );
}

fn news(text: &str) -> (String, String) {
    ("news".to_owned(), text.to_owned())
}

/// A publication node a missed while its subscriptions were down (the cluster closed
/// every connection, node b published at once, a subscribes again after 100 ms), with
/// nothing published after it: a's subscriber gets it once a is subscribed again, which
/// only the catch-up after [`Inbox::reconnected`] can bring.
///
/// [`Inbox::reconnected`]: tokio_webwire::backplane::Inbox::reconnected
#[tokio::test]
async fn a_node_catches_up_a_topic_when_its_subscriptions_are_back() {
    let Some((cluster, (_a, a_addr), (b, _))) = two_history_nodes().await else {
        return;
    };
    let (mut client, _) = connect(a_addr, true).await;
    subscribe(&mut client, "room/1", None).await;
    publish(&b, "room/1", "m1").await;
    assert_eq!(texts(&publications(&mut client, 1).await), ["m1"]);

    assert!(cluster.kill_clients().await >= 2);
    // b's own connection to the slot's master was closed too: redis-rs reconnects it
    // within its retries, or the publish fails and is made again.
    bounded(async {
        while b.publish("room/1", "msg", "m2").await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let seen = publications(&mut client, 1).await;
    assert_eq!(offsets(&seen), [2]);
    assert_eq!(texts(&seen), ["m2"]);
}

/// A topic whose name starts with `}` has an empty hash tag in `{<topic>}`: Redis hashes
/// its history's two keys whole, into different slots, so a publish to it with a history
/// fails with a clear error (the keys do not hash to the same slot), nothing kept and nothing sent; without a
/// history it is an ordinary channel. A known limit of the channel and key names.
#[tokio::test]
async fn a_topic_starting_with_a_closing_brace_cannot_keep_a_history_on_a_cluster() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let server = cluster_history_server(&cluster, "}kept", History::last(10)).await;
    match bounded(server.publish("}kept", "msg", "m1")).await {
        Err(TopicError::History(error)) => {
            assert!(error.to_string().contains("same slot"), "{error}");
        }
        other => panic!("expected TopicError::History, got {other:?}"),
    }
    assert_eq!(
        bounded(server.publish("}plain", "msg", "m1"))
            .await
            .expect("sent"),
        0
    );
}

/// A session store on `cluster`.
async fn store_on(cluster: &RedisCluster) -> RedisStore {
    bounded(RedisStore::connect_cluster(cluster.urls()))
        .await
        .expect("the store connects to the cluster")
}

/// How many keys the master on `port` holds.
async fn keys_on(cluster: &RedisCluster, port: u16) -> usize {
    let mut node = cluster.node(port).await;
    bounded(redis::cmd("DBSIZE").query_async(&mut node))
        .await
        .expect("DBSIZE")
}

#[tokio::test]
async fn sessions_spread_over_every_master_and_round_trip() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let store = store_on(&cluster).await;
    let sessions: Vec<Session> = (0..60).map(|i| session(&format!("user{i}"))).collect();
    for session in &sessions {
        bounded(store.save(session)).await.expect("saved");
    }
    // Random keys, no hash tag: each master has its share (a master with none of 60 has
    // a chance of 3 * (2/3)^60, about 1e-10).
    for port in cluster.ports() {
        let held = keys_on(&cluster, port).await;
        assert!(
            held > 0,
            "the master on {port} holds none of the 60 sessions"
        );
    }
    for saved in &sessions {
        let found = found(&store, &saved.key).await;
        assert_eq!(found.key, saved.key);
        assert_eq!(found.info, saved.info);
    }
    // Another node's store, through other seed nodes, sees them too.
    let other = bounded(RedisStore::connect_cluster(&cluster.urls()[2..]))
        .await
        .expect("the second store connects through one seed node");
    for saved in &sessions {
        bounded(other.remove(&saved.key)).await.expect("removed");
        assert_eq!(
            bounded(store.lookup(&saved.key)).await.expect("looked up"),
            None
        );
    }
    for port in cluster.ports() {
        assert_eq!(keys_on(&cluster, port).await, 0, "left on {port}");
    }
}

#[tokio::test]
async fn a_cluster_with_no_node_up_is_an_error_naming_the_seeds() {
    // Ports nothing listens on: taken and given back at once.
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port()
        })
        .collect();
    let urls: Vec<String> = ports
        .iter()
        .map(|port| format!("redis://127.0.0.1:{port}/"))
        .collect();
    let error = bounded(RedisStore::connect_cluster(&urls))
        .await
        .expect_err("nothing to connect to");
    assert!(
        matches!(error, RedisConnectError::Unreachable { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    for port in ports {
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    }
}

/// CRC16 (XMODEM: polynomial 0x1021, initial 0), as Redis Cluster computes key slots.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc
}

/// The hash slot of `key`: the CRC16 of its hash tag (what is between its first `{` and
/// the first `}` after it, if not empty) or of the whole key, modulo 16 384.
fn slot(key: &str) -> u16 {
    let key = key.as_bytes();
    let tag = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tag.unwrap_or(key)) % 16_384
}

/// The shard of a slot in the split `redis-cli --cluster create` makes for three masters.
fn shard(slot: u16) -> usize {
    match slot {
        0..=5460 => 0,
        5461..=10922 => 1,
        _ => 2,
    }
}

/// The channels of 1 000 topics `room/N`, as the backplane names them.
fn topic_channels() -> Vec<String> {
    (0..1000)
        .map(|n| format!("webwire:t:{{room/{n}}}"))
        .collect()
}

/// The channels of 1 000 sessions: 32 hex digits each (a keyed hash of the session key,
/// here a fixed pseudo-random sequence, so the figures are the same on every run).
fn session_channels() -> Vec<String> {
    let mut state: u64 = 0x5eed;
    let mut next = move || {
        // SplitMix64.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..1000)
        .map(|_| format!("webwire:s:{{{:016x}{:016x}}}", next(), next()))
        .collect()
}

/// How many of `channels` land on each of the three shards.
fn spread(channels: &[String]) -> [usize; MASTERS] {
    let mut counts = [0; MASTERS];
    for channel in channels {
        counts[shard(slot(channel))] += 1;
    }
    counts
}

#[test]
fn the_slot_function_is_redis_cluster_s() {
    // The CRC16/XMODEM check value, and slots from the Redis Cluster specification.
    assert_eq!(crc16(b"123456789"), 0x31c3);
    assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
    assert_eq!(slot("foo{}{bar}"), crc16(b"foo{}{bar}") % 16_384);
    assert_eq!(slot("foo{{bar}}zap"), crc16(b"{bar") % 16_384);
    assert_eq!(slot("foo{bar}{zap}"), slot("bar"));
}

#[test]
fn topic_and_session_channels_spread_over_three_shards() {
    let topics = spread(&topic_channels());
    let sessions = spread(&session_channels());
    // A naive name with the prefix as the hash tag would put every topic in one slot.
    let naive = spread(
        &(0..1000)
            .map(|n| format!("{{webwire}}:t:room/{n}"))
            .collect::<Vec<_>>(),
    );
    let distinct: std::collections::BTreeSet<u16> =
        topic_channels().iter().map(|c| slot(c)).collect();
    println!(
        "1000 topic channels webwire:t:{{room/N}} on shards 0-5460, 5461-10922, 10923-16383: \
         {topics:?} ({} distinct slots); 1000 session channels webwire:s:{{<32 hex>}}: \
         {sessions:?}; {{webwire}}:t:room/N: {naive:?}",
        distinct.len()
    );
    for (what, counts) in [("topics", topics), ("sessions", sessions)] {
        for (shard, count) in counts.iter().enumerate() {
            assert!(
                *count >= 250,
                "shard {shard} gets {count} of 1000 {what}: {counts:?}"
            );
        }
    }
    assert_eq!(naive.iter().filter(|count| **count > 0).count(), 1);
}

#[tokio::test]
async fn the_cluster_places_channels_where_the_spread_says() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let port = cluster.ports()[0];
    let mut node = cluster.node(port).await;
    // The cluster's own split: three ranges, the default ones.
    // Each range: start, end, the master, its replicas (none here).
    let ranges: BTreeMap<u16, u16> = bounded(
        redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Vec<Vec<redis::Value>>>(&mut node),
    )
    .await
    .expect("CLUSTER SLOTS")
    .into_iter()
    .map(|range| {
        let bound =
            |i: usize| -> u16 { redis::from_redis_value(range[i].clone()).expect("a slot number") };
        (bound(0), bound(1))
    })
    .collect();
    assert_eq!(
        ranges,
        BTreeMap::from([(0, 5460), (5461, 10922), (10923, 16383)])
    );
    // Redis's own CLUSTER KEYSLOT agrees with the slot of every channel name measured.
    let channels: Vec<String> = topic_channels()
        .into_iter()
        .chain(session_channels())
        .collect();
    let mut pipe = redis::pipe();
    for channel in &channels {
        pipe.cmd("CLUSTER").arg("KEYSLOT").arg(channel);
    }
    let keyslots: Vec<u16> = bounded(pipe.query_async(&mut node))
        .await
        .expect("CLUSTER KEYSLOT");
    for (channel, keyslot) in channels.iter().zip(keyslots) {
        assert_eq!(slot(channel), keyslot, "{channel}");
    }
}
