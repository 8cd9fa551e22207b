//! `RedisBackplane` against a real redis-server (tests/common/redis.rs; skipped without the
//! binary unless `CI` is set): two servers, each with its own backplane on one Redis, pass
//! publishes and revocations to each other exactly once; Redis killed and restarted on the
//! same port; subscriber connections closed by Redis; the subscriber task ends with the
//! backplane.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::redis::RedisServer;
use common::{LIMIT, bounded, listen};
use tokio::sync::mpsc;
use tokio_webwire::backplane::Backplane;
use tokio_webwire::client::{ClientHandler, Reconnect};
use tokio_webwire::protocol::Name;
use tokio_webwire::redis::{RedisBackplane, RedisStore, redis};
use tokio_webwire::server::{Connection, Handler, HandlerError, Server, TopicError};
use tokio_webwire::{Client, Payload, SessionInfo};

/// A node's handler: `subscribe` (the payload is the topic) and `login` (a session).
struct Node;

impl Handler for Node {
    async fn request(
        &self,
        conn: &Connection,
        name: Name,
        payload: Payload,
    ) -> Result<Payload, HandlerError> {
        match name.as_str() {
            "subscribe" => {
                conn.subscribe(&payload.to_text()?)?;
                Ok(Payload::empty())
            }
            "login" => Ok(Payload::utf8(
                conn.create_session(SessionInfo::new()).await?.key,
            )),
            _ => Ok(payload),
        }
    }
}

/// A client's signals as `name:payload`, and `closed` when its session is closed.
struct Events(mpsc::UnboundedSender<String>);

impl ClientHandler for Events {
    async fn signal(&self, _client: &Client, name: Name, payload: Payload) {
        let text = payload.to_text().unwrap_or_default();
        let _ = self.0.send(format!("{name}:{text}"));
    }

    async fn session_closed(&self, _client: &Client) {
        let _ = self.0.send("closed".to_owned());
    }
}

/// A node on `redis`: a server with a RedisStore and its own RedisBackplane.
async fn node(redis: &RedisServer) -> (Server<Node>, SocketAddr) {
    let store = bounded(RedisStore::connect(&redis.url()))
        .await
        .expect("the store connects");
    let backplane = bounded(RedisBackplane::connect(&redis.url()))
        .await
        .expect("the backplane connects");
    let server = Server::builder(Node)
        .session_store(store)
        .backplane(backplane)
        .build()
        .expect("valid options");
    let addr = listen(&server).await;
    (server, addr)
}

/// A client of `addr` subscribed to `topic`, and its events.
async fn subscriber(addr: SocketAddr, topic: &str) -> (Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = bounded(
        Client::builder()
            .reconnect(Reconnect::Off)
            .request_timeout(LIMIT)
            .handler(Events(tx))
            .connect(format!("ws://{addr}/")),
    )
    .await
    .expect("connects");
    bounded(client.request("subscribe", topic.to_owned()))
        .await
        .expect("subscribed");
    (client, rx)
}

async fn next(events: &mut mpsc::UnboundedReceiver<String>) -> String {
    bounded(events.recv()).await.expect("an event")
}

/// Every event up to and including `last`.
async fn until(events: &mut mpsc::UnboundedReceiver<String>, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some(last) {
        seen.push(next(events).await);
    }
    seen
}

#[tokio::test]
async fn publishes_reach_the_subscribers_of_every_node_exactly_once() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (server_a, addr_a) = node(&redis).await;
    let (server_b, addr_b) = node(&redis).await;
    let (_a, mut on_a) = subscriber(addr_a, "news").await;
    let (_b, mut on_b) = subscriber(addr_b, "news").await;
    let (_other, mut on_other) = subscriber(addr_a, "sports").await;

    // One from each node; each waits until both subscribers have it, so the order is known.
    assert_eq!(
        bounded(server_b.publish("news", "n", "1"))
            .await
            .expect("published"),
        1
    );
    assert_eq!(next(&mut on_a).await, "n:1");
    assert_eq!(next(&mut on_b).await, "n:1");
    assert_eq!(
        bounded(server_a.publish("news", "n", "2"))
            .await
            .expect("published"),
        1
    );
    assert_eq!(next(&mut on_a).await, "n:2");
    assert_eq!(next(&mut on_b).await, "n:2");

    // Bytes on the channel that no node sent are dropped by every node.
    let client = redis::Client::open(redis.url()).expect("a valid URL");
    let mut raw = bounded(client.get_multiplexed_async_connection())
        .await
        .expect("a plain connection");
    let _: redis::Value = bounded(
        redis::cmd("PUBLISH")
            .arg(RedisBackplane::DEFAULT_CHANNEL)
            .arg(&b"\x01\x01not an envelope"[..])
            .query_async(&mut raw),
    )
    .await
    .expect("published");

    // A last one from B: everything before it came once (one channel, in order), and the
    // other topic's subscriber got nothing.
    bounded(server_b.publish("news", "n", "end"))
        .await
        .expect("published");
    assert_eq!(until(&mut on_a, "n:end").await, ["n:end"]);
    assert_eq!(until(&mut on_b, "n:end").await, ["n:end"]);
    bounded(server_a.publish("sports", "s", "x"))
        .await
        .expect("published");
    assert_eq!(next(&mut on_other).await, "s:x");
}

#[tokio::test]
async fn close_session_on_one_node_logs_out_its_holders_on_every_node() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (server_a, addr_a) = node(&redis).await;
    let (server_b, addr_b) = node(&redis).await;
    let (on_a_client, mut on_a) = subscriber(addr_a, "any").await;
    let key = bounded(on_a_client.request("login", Payload::empty()))
        .await
        .expect("login")
        .to_text()
        .expect("the key is text");
    let (on_b_client, mut on_b) = subscriber(addr_b, "any").await;
    bounded(on_b_client.restore_session(&key))
        .await
        .expect("restored on B");

    assert_eq!(
        bounded(server_a.close_session(&key)).await.expect("closed"),
        1
    );
    assert_eq!(next(&mut on_a).await, "closed");
    assert_eq!(next(&mut on_b).await, "closed");
    assert!(server_b.session_connections(&key).is_empty());
    assert!(on_b_client.session().is_none());
    // Gone from the store too: no node restores it.
    let (again, _) = subscriber(addr_b, "any").await;
    assert!(bounded(again.restore_session(&key)).await.is_err());
}

#[tokio::test]
async fn messages_flow_again_after_redis_restarts() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let (server_a, addr_a) = node(&redis).await;
    let (server_b, addr_b) = node(&redis).await;
    let (_a, mut on_a) = subscriber(addr_a, "news").await;
    let (_b, mut on_b) = subscriber(addr_b, "news").await;
    bounded(server_b.publish("news", "n", "before"))
        .await
        .expect("published");
    assert_eq!(next(&mut on_a).await, "n:before");
    assert_eq!(next(&mut on_b).await, "n:before");

    redis.stop();
    // A publish while Redis is away fails for the other nodes, after the local delivery.
    match bounded(server_b.publish("news", "n", "down")).await {
        Err(TopicError::Backplane { delivered: 1, .. }) => {}
        other => panic!("expected a backplane error, got {other:?}"),
    }
    assert_eq!(next(&mut on_b).await, "n:down");
    let backplane = bounded(RedisBackplane::connect(&redis.url())).await;
    assert!(backplane.is_err(), "no Redis, no backplane");

    redis.restart().await;
    // Both directions come back: B's publishing connection and A's subscriber, then A's
    // publishing connection and B's subscriber. Each send is retried until one arrives.
    for (from, to, name) in [(&server_b, &mut on_a, "b"), (&server_a, &mut on_b, "a")] {
        bounded(async {
            for attempt in 0.. {
                let _ = from.publish("news", name, attempt.to_string()).await;
                // The subscriber may still be waiting to subscribe again (at most 5 s
                // between attempts): look for the delivery a little while, then send again.
                if let Ok(Some(event)) =
                    tokio::time::timeout(Duration::from_millis(250), to.recv()).await
                {
                    if event.starts_with(&format!("{name}:")) {
                        return;
                    }
                }
            }
        })
        .await;
    }
    // Flowing as before: one last message each way, once.
    bounded(server_a.publish("news", "n", "after"))
        .await
        .expect("published");
    bounded(server_b.publish("news", "n", "after-b"))
        .await
        .expect("published");
    let seen_a = until(&mut on_a, "n:after-b").await;
    assert!(
        seen_a.ends_with(&["n:after".to_owned(), "n:after-b".to_owned()]),
        "{seen_a:?}"
    );
    let seen_b = until(&mut on_b, "n:after-b").await;
    assert_eq!(
        seen_b.iter().filter(|e| *e == "n:after").count(),
        1,
        "{seen_b:?}"
    );
}

#[tokio::test]
async fn a_send_while_redis_is_down_fails_and_the_subscriber_ends_with_the_backplane() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let client = redis::Client::open(redis.url()).expect("a valid URL");
    let backplane = bounded(
        RedisBackplane::builder()
            .channel("test:bus")
            .connect(&redis.url()),
    )
    .await
    .expect("connects");
    assert_eq!(backplane.channel(), "test:bus");
    let mut raw = bounded(client.get_multiplexed_async_connection())
        .await
        .expect("a plain connection");
    let subscribers = |raw: &mut redis::aio::MultiplexedConnection| {
        let mut raw = raw.clone();
        async move {
            let counts: Vec<(String, usize)> = bounded(
                redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg("test:bus")
                    .query_async(&mut raw),
            )
            .await
            .expect("PUBSUB NUMSUB");
            counts[0].1
        }
    };
    assert_eq!(subscribers(&mut raw).await, 1);
    bounded(backplane.send("hello".into())).await.expect("sent");

    // Dropped: its task ends and its subscriber connection with it.
    drop(backplane);
    bounded(async {
        while subscribers(&mut raw).await != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let backplane = bounded(RedisBackplane::connect(&redis.url()))
        .await
        .expect("connects");
    redis.stop();
    let error = bounded(backplane.send("lost".into()))
        .await
        .expect_err("Redis is away");
    assert!(
        error.to_string().starts_with("backplane: Redis failed"),
        "{error}"
    );
}

#[tokio::test]
async fn a_subscriber_connection_killed_by_redis_subscribes_again() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (_server_a, addr_a) = node(&redis).await;
    let (server_b, _) = node(&redis).await;
    let (_a, mut on_a) = subscriber(addr_a, "news").await;
    let client = redis::Client::open(redis.url()).expect("a valid URL");
    let mut raw = bounded(client.get_multiplexed_async_connection())
        .await
        .expect("a plain connection");

    // Redis closes every subscriber connection (an operator, a `client-output-buffer-limit`
    // for pubsub reached); Redis itself stays up.
    let killed: usize = bounded(
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut raw),
    )
    .await
    .expect("CLIENT KILL");
    assert_eq!(killed, 2, "both nodes' subscribers");

    // Both subscribe again (100 ms later), and B's publishes reach A's subscribers again.
    bounded(async {
        loop {
            let numsub: Vec<(String, usize)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(RedisBackplane::DEFAULT_CHANNEL)
                .query_async(&mut raw)
                .await
                .expect("PUBSUB NUMSUB");
            if numsub.first().map(|(_, n)| *n) == Some(2) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    bounded(server_b.publish("news", "n", "again"))
        .await
        .expect("published");
    assert_eq!(next(&mut on_a).await, "n:again");
}
