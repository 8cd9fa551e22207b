//! `examples/pubsub`: its server on port 0; subscribers and a publisher are our clients.

mod common;

#[path = "../examples/pubsub/server.rs"]
mod pubsub_server;

use common::bounded;
use tokio::sync::mpsc;
use tokio_webwire::backplane::Local;
use tokio_webwire::client::ClientHandler;
use tokio_webwire::protocol::Name;
use tokio_webwire::{Client, Payload, RequestError};

/// Forwards signals to the test as `name: text`.
struct Signals(mpsc::UnboundedSender<String>);

impl ClientHandler for Signals {
    async fn signal(&self, _client: &Client, name: Name, payload: Payload) {
        let _ = self
            .0
            .send(format!("{name}: {}", payload.to_text().unwrap()));
    }
}

async fn connect(url: &str) -> (Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = common::example::client_with(url, Signals(tx)).await;
    (client, rx)
}

async fn request(client: &Client, name: &str, payload: &str) -> String {
    let reply = bounded(client.request(name, payload.to_owned()))
        .await
        .expect("a reply");
    reply.to_text().expect("text")
}

#[tokio::test]
async fn publications_reach_every_subscriber_and_leavers_are_dropped() {
    let news = pubsub_server::News::new(false);
    let (server, addr) =
        pubsub_server::start("127.0.0.1:0", pubsub_server::app(news.clone()), Local)
            .await
            .expect("binds");
    let url = format!("ws://{addr}/");
    let mut count = news.subscribers();

    let (s1, mut s1_signals) = connect(&url).await;
    let (s2, mut s2_signals) = connect(&url).await;
    let (publisher, mut publisher_signals) = connect(&url).await;
    assert_eq!(request(&s1, "subscribe", "").await, "subscribed");
    assert_eq!(request(&s2, "subscribe", "").await, "subscribed");
    // Subscribing twice changes nothing.
    request(&s2, "subscribe", "").await;
    assert_eq!(*count.borrow_and_update(), 2);

    assert_eq!(
        request(&publisher, "publish", "hello").await,
        "2 subscribers"
    );
    assert_eq!(bounded(s1_signals.recv()).await.unwrap(), "news: hello");
    assert_eq!(bounded(s2_signals.recv()).await.unwrap(), "news: hello");

    // What the server itself publishes (the example's ticker) goes the same way.
    let delivered = bounded(news.tick(&server, 1)).await.expect("published");
    assert_eq!(delivered, 2);
    assert_eq!(bounded(s1_signals.recv()).await.unwrap(), "tick: tick 1");
    assert_eq!(bounded(s2_signals.recv()).await.unwrap(), "tick: tick 1");

    // A subscriber that disconnects is dropped by the `disconnected` hook.
    bounded(s2.close()).await;
    bounded(count.wait_for(|&n| n == 1))
        .await
        .expect("the count is watched");
    assert_eq!(
        request(&publisher, "publish", "still there?").await,
        "1 subscribers"
    );
    assert_eq!(
        bounded(s1_signals.recv()).await.unwrap(),
        "news: still there?"
    );

    // Unsubscribing stops the signals.
    assert_eq!(request(&s1, "unsubscribe", "").await, "unsubscribed");
    assert_eq!(*count.borrow_and_update(), 0);
    assert_eq!(
        request(&publisher, "publish", "anyone?").await,
        "0 subscribers"
    );

    // Signals of one connection arrive in order, so after resubscribing, the next signal
    // s1 and the publisher see is the marker: "anyone?" reached neither.
    request(&s1, "subscribe", "").await;
    request(&publisher, "subscribe", "").await;
    assert_eq!(
        request(&publisher, "publish", "marker").await,
        "2 subscribers"
    );
    assert_eq!(bounded(s1_signals.recv()).await.unwrap(), "news: marker");
    assert_eq!(
        bounded(publisher_signals.recv()).await.unwrap(),
        "news: marker"
    );

    match bounded(s1.request("shout", "")).await {
        Err(RequestError::Reply { code, message }) => {
            assert_eq!(code, "UNKNOWN_REQUEST");
            assert_eq!(message, r#"no request named "shout""#);
        }
        other => panic!("expected an error reply, got {other:?}"),
    }

    bounded(s1.close()).await;
    bounded(publisher.close()).await;
    bounded(server.shutdown()).await;
}

/// Two servers on one Redis (`--redis URL`): the publisher is told its server's count and
/// that the news went on (it reached the other server's subscriber), and each subscriber
/// gets the ticks of its own server only: one per tick, not one per server.
#[cfg(feature = "redis")]
#[tokio::test]
async fn two_servers_on_redis_count_here_and_tick_once() {
    use common::redis::RedisServer;
    use tokio_webwire::redis::RedisBackplane;

    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let node = |news: pubsub_server::News| async {
        let backplane = bounded(RedisBackplane::connect(&redis.url()))
            .await
            .expect("Redis");
        pubsub_server::start("127.0.0.1:0", pubsub_server::app(news), backplane)
            .await
            .expect("binds")
    };
    let (a_news, b_news) = (
        pubsub_server::News::new(true),
        pubsub_server::News::new(true),
    );
    let (a, a_addr) = node(a_news.clone()).await;
    let (b, b_addr) = node(b_news.clone()).await;
    let (publisher, _) = connect(&format!("ws://{a_addr}/")).await;
    let (subscriber, mut seen) = connect(&format!("ws://{b_addr}/")).await;
    request(&subscriber, "subscribe", "").await;

    assert_eq!(
        request(&publisher, "publish", "hello").await,
        "0 subscribers on this server, and sent on to the other servers"
    );
    assert_eq!(bounded(seen.recv()).await.unwrap(), "news: hello");

    // Both servers tick; the subscriber of b hears b's tick only. A's news published
    // after a's tick comes through Redis behind it: had a's tick reached b's subscriber,
    // it would come before the news.
    assert_eq!(bounded(a_news.tick(&a, 1)).await.ok(), Some(0));
    assert_eq!(bounded(b_news.tick(&b, 1)).await.ok(), Some(1));
    assert_eq!(bounded(seen.recv()).await.unwrap(), "tick: tick 1");
    request(&publisher, "publish", "after the ticks").await;
    assert_eq!(bounded(seen.recv()).await.unwrap(), "news: after the ticks");

    bounded(publisher.close()).await;
    bounded(subscriber.close()).await;
    bounded(a.shutdown()).await;
    bounded(b.shutdown()).await;
}
