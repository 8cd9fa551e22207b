//! `examples/pubsub`: its server on port 0; subscribers and a publisher are our clients.

mod common;

#[path = "../examples/pubsub/server.rs"]
mod pubsub_server;

use common::bounded;
use tokio::sync::mpsc;
use tokio_webwire::backplane::Local;
use tokio_webwire::client::{ClientHandler, Reconnect};
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
    let client = bounded(
        Client::builder()
            .reconnect(Reconnect::Off)
            .handler(Signals(tx))
            .connect(url),
    )
    .await
    .expect("connects");
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
    let (server, addr) = pubsub_server::start("127.0.0.1:0", Local)
        .await
        .expect("binds");
    let url = format!("ws://{addr}/");
    let mut count = server.handler().subscribers();

    let (s1, mut s1_signals) = connect(&url).await;
    let (s2, mut s2_signals) = connect(&url).await;
    let (publisher, mut publisher_signals) = connect(&url).await;
    assert_eq!(request(&s1, "subscribe", "").await, "subscribed");
    assert_eq!(request(&s2, "subscribe", "").await, "subscribed");
    // Subscribing twice changes nothing.
    request(&s2, "subscribe", "").await;
    assert_eq!(*count.borrow_and_update(), 2);

    assert_eq!(request(&publisher, "publish", "hello").await, "2");
    assert_eq!(bounded(s1_signals.recv()).await.unwrap(), "news: hello");
    assert_eq!(bounded(s2_signals.recv()).await.unwrap(), "news: hello");

    // What the server itself publishes (the example's ticker) goes the same way.
    let delivered = bounded(server.publish(pubsub_server::TOPIC, "tick", "tick 1"))
        .await
        .expect("published");
    assert_eq!(delivered, 2);
    assert_eq!(bounded(s1_signals.recv()).await.unwrap(), "tick: tick 1");
    assert_eq!(bounded(s2_signals.recv()).await.unwrap(), "tick: tick 1");

    // A subscriber that disconnects is dropped by the `disconnected` hook.
    bounded(s2.close()).await;
    bounded(count.wait_for(|&n| n == 1))
        .await
        .expect("the count is watched");
    assert_eq!(request(&publisher, "publish", "still there?").await, "1");
    assert_eq!(
        bounded(s1_signals.recv()).await.unwrap(),
        "news: still there?"
    );

    // Unsubscribing stops the signals.
    assert_eq!(request(&s1, "unsubscribe", "").await, "unsubscribed");
    assert_eq!(*count.borrow_and_update(), 0);
    assert_eq!(request(&publisher, "publish", "anyone?").await, "0");

    // Signals of one connection arrive in order, so after resubscribing, the next signal
    // s1 and the publisher see is the marker: "anyone?" reached neither.
    request(&s1, "subscribe", "").await;
    request(&publisher, "subscribe", "").await;
    assert_eq!(request(&publisher, "publish", "marker").await, "2");
    assert_eq!(bounded(s1_signals.recv()).await.unwrap(), "news: marker");
    assert_eq!(
        bounded(publisher_signals.recv()).await.unwrap(),
        "news: marker"
    );

    match bounded(s1.request("shout", "")).await {
        Err(RequestError::Reply { code, .. }) => assert_eq!(code, "UNKNOWN_REQUEST"),
        other => panic!("expected an error reply, got {other:?}"),
    }

    bounded(s1.close()).await;
    bounded(publisher.close()).await;
    bounded(server.shutdown()).await;
}
