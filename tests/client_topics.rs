//! Our client's subscriptions through the topics extension against our server, over real
//! sockets: publications in order, a subscriber disconnected with 1013 by the
//! slow-subscriber policy that reconnects and loses nothing, a restarted server (new
//! epoch) reported as not recovered, a refusal, and a client without the extension.

mod common;

use std::net::SocketAddr;

use common::topics::topics_client;
use common::{LIMIT, bounded};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_webwire::client::{SubscribeError, Subscription, TopicEvent};
use tokio_webwire::protocol::topics::Status;
use tokio_webwire::server::{
    CloseReason, Connection, Handler, History, Server, ServerBuilder, SlowSubscriber,
};
use tokio_webwire::{Client, RequestError};

/// Lets clients subscribe to anything but `secret`; reports why connections end.
struct App(mpsc::UnboundedSender<CloseReason>);

impl Handler for App {
    subscribe_all_but_secret!();

    async fn disconnected(&self, _: &Connection, reason: &CloseReason) {
        let _ = self.0.send(reason.clone());
    }
}

fn builder(reasons: mpsc::UnboundedSender<CloseReason>) -> ServerBuilder<App> {
    Server::builder(App(reasons)).history("room/*", History::last(1000))
}

async fn serve_on(listener: TcpListener, builder: ServerBuilder<App>) -> Server<App> {
    let server = builder.build().expect("server");
    tokio::spawn(server.serve(listener));
    server
}

/// A server from `builder` on a free port, and its address.
async fn serve(builder: ServerBuilder<App>) -> (Server<App>, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (serve_on(listener, builder).await, addr)
}

async fn next(subscription: &mut Subscription) -> TopicEvent {
    bounded(subscription.next()).await.expect("an event")
}

/// The texts of the next publications until `count` were seen, with the other events.
async fn texts(subscription: &mut Subscription, count: usize) -> (Vec<String>, Vec<TopicEvent>) {
    let mut texts = Vec::new();
    let mut others = Vec::new();
    while texts.len() < count {
        match next(subscription).await {
            TopicEvent::Publication { payload, .. } => {
                texts.push(payload.to_text().expect("text"));
            }
            other => others.push(other),
        }
    }
    (texts, others)
}

#[tokio::test]
async fn a_subscriber_disconnected_with_1013_reconnects_and_loses_nothing() {
    let (reasons_tx, mut reasons) = mpsc::unbounded_channel();
    let (server, addr) = serve(
        builder(reasons_tx)
            .outbound_queue_len(1)
            .slow_subscriber(SlowSubscriber::Disconnect),
    )
    .await;
    let client = topics_client(addr).await;
    let mut room = bounded(client.subscribe("room/1"))
        .await
        .expect("subscribed");
    assert_eq!(room.answer().status, Status::Subscribed);

    // A burst with room for one frame: the subscriber falls behind and is disconnected.
    const N: usize = 300;
    for i in 1..=N {
        let _ = server.publish("room/1", "msg", i.to_string()).await;
    }
    assert_eq!(
        bounded(reasons.recv()).await,
        Some(CloseReason::SlowConsumer),
        "the policy disconnected it with 1013"
    );
    let (got, others) = texts(&mut room, N).await;
    let expected: Vec<String> = (1..=N).map(|i| i.to_string()).collect();
    assert_eq!(got, expected, "every publication once, in order");
    assert_eq!(
        others,
        [],
        "nothing but publications before the recovery's end"
    );
    // The recovery is reported once what it recovered was delivered.
    match next(&mut room).await {
        TopicEvent::Recovered { position } => assert_eq!(position.offset, N as u64),
        other => panic!("expected Recovered, got {other:?}"),
    }
    // And live ones go on after the recovery.
    bounded(server.publish("room/1", "msg", "live"))
        .await
        .unwrap();
    let (live, _) = texts(&mut room, 1).await;
    assert_eq!(live, ["live"]);
}

/// An application that does not read its subscription: past its buffer the client holds
/// publications back instead of buffering them without bound, and once the application
/// has taken what was buffered, the history replays what was held back: every
/// publication once, in order, with the catch-ups reported as recovered.
#[tokio::test]
async fn a_subscription_not_read_holds_back_past_its_buffer_and_loses_nothing() {
    let (reasons_tx, _reasons) = mpsc::unbounded_channel();
    let (server, addr) = serve(builder(reasons_tx)).await;
    let client = bounded(
        Client::builder()
            .topics(true)
            .subscription_buffer(8)
            .request_timeout(LIMIT)
            .connect(format!("ws://{addr}/")),
    )
    .await
    .expect("connects");
    let mut room = bounded(client.subscribe("room/2"))
        .await
        .expect("subscribed");
    const N: usize = 100;
    for i in 1..=N {
        bounded(server.publish("room/2", "msg", i.to_string()))
            .await
            .expect("published");
    }
    // A request's answer comes after every publication sent before it: once it is here,
    // the client has had all of them, and held back all but the first 8.
    let answered = bounded(client.request("sync", "")).await;
    assert!(
        matches!(answered, Err(RequestError::Reply { .. })),
        "{answered:?}"
    );

    let (got, mut others) = texts(&mut room, N).await;
    let expected: Vec<String> = (1..=N).map(|i| i.to_string()).collect();
    assert_eq!(got, expected, "every publication once, in order");
    if others.is_empty() {
        others.push(next(&mut room).await);
    }
    assert!(
        others
            .iter()
            .all(|event| matches!(event, TopicEvent::Recovered { .. })),
        "only catch-ups reported as recovered: {others:?}"
    );
    // Live ones go on.
    bounded(server.publish("room/2", "msg", "live"))
        .await
        .unwrap();
    loop {
        if let TopicEvent::Publication { payload, .. } = next(&mut room).await {
            assert_eq!(payload.to_text().expect("text"), "live");
            break;
        }
    }
}

#[tokio::test]
async fn a_restarted_server_is_a_new_epoch_reported_as_not_recovered() {
    let (reasons_tx, _reasons) = mpsc::unbounded_channel();
    let (server, addr) = serve(builder(reasons_tx.clone())).await;
    let client = topics_client(addr).await;
    let mut room = bounded(client.subscribe("room/2")).await.unwrap();
    for i in 1..=3 {
        bounded(server.publish("room/2", "msg", format!("m{i}")))
            .await
            .unwrap();
    }
    let (got, _) = texts(&mut room, 3).await;
    assert_eq!(got, ["m1", "m2", "m3"]);
    let before = room.answer().position.epoch;

    bounded(server.shutdown()).await;
    let listener = TcpListener::bind(addr).await.expect("the same port again");
    let restarted = serve_on(listener, builder(reasons_tx)).await;
    match next(&mut room).await {
        TopicEvent::NotRecovered { position } => {
            assert_ne!(position.epoch, before);
            assert_eq!(position.offset, 0);
        }
        other => panic!("expected NotRecovered, got {other:?}"),
    }
    bounded(restarted.publish("room/2", "msg", "after"))
        .await
        .unwrap();
    let (got, others) = texts(&mut room, 1).await;
    assert_eq!(got, ["after"], "nothing stale: {others:?}");
}

#[tokio::test]
async fn refusals_and_a_client_without_the_extension_get_clear_errors() {
    let (reasons_tx, _reasons) = mpsc::unbounded_channel();
    let (server, addr) = serve(builder(reasons_tx)).await;
    let client = topics_client(addr).await;
    match bounded(client.subscribe("secret")).await {
        Err(SubscribeError::Request(RequestError::Reply { code, .. })) => {
            assert_eq!(code.as_str(), "WW_REFUSED");
        }
        other => panic!("{other:?}"),
    }
    let mut news = bounded(client.subscribe("news")).await.unwrap();
    assert_eq!(news.answer().status, Status::NoHistory);
    assert!(matches!(
        bounded(client.subscribe("news")).await,
        Err(SubscribeError::AlreadySubscribed)
    ));
    bounded(server.publish("news", "msg", "hi")).await.unwrap();
    match next(&mut news).await {
        TopicEvent::Publication { position, .. } => assert_eq!(position, None),
        other => panic!("{other:?}"),
    }
    bounded(client.unsubscribe("news")).await.unwrap();
    assert_eq!(server.subscriber_count("news"), 0);

    let plain = bounded(Client::builder().connect(format!("ws://{addr}/")))
        .await
        .unwrap();
    assert!(matches!(
        bounded(plain.subscribe("room/1")).await,
        Err(SubscribeError::NotEnabled)
    ));
}
