//! Topics on one server, over real connections: a publish reaches each subscriber once and
//! nobody else, subscriptions end with their connection, and a subscriber that cannot keep
//! up is handled by the server's policy without holding up the publisher or the others.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::nodes::{Seen, ask, next_signal, nothing_more, subscriber};
use common::probe::{Probe, parse, request, start};
use common::{RawClient, bounded};
use tokio::sync::mpsc;
use tokio_webwire::Payload;
use tokio_webwire::protocol::Message;
use tokio_webwire::server::{CloseReason, Server, SlowSubscriber, TopicError};

#[tokio::test]
async fn a_publish_reaches_each_subscriber_once_and_nobody_else() {
    let (server, _events, addr) = start(|b| b).await;
    let (a, mut a_signals) = subscriber(addr).await;
    let (b, mut b_signals) = subscriber(addr).await;
    let (outsider, mut outsider_signals) = subscriber(addr).await;
    assert_eq!(ask(&a, "subscribe", "room").await, "true");
    assert_eq!(
        ask(&a, "subscribe", "room").await,
        "false",
        "once is enough"
    );
    assert_eq!(ask(&b, "subscribe", "room").await, "true");
    assert_eq!(ask(&outsider, "subscribe", "elsewhere").await, "true");
    assert_eq!(server.subscriber_count("room"), 2);

    let here = bounded(server.publish("room", "news", "first"))
        .await
        .expect("published");
    assert_eq!(here, 2);
    // A subscriber publishing reaches itself too.
    assert_eq!(ask(&b, "publish", "room|second").await, "2");
    for signals in [&mut a_signals, &mut b_signals] {
        for text in ["first", "second"] {
            let got = next_signal(signals).await;
            assert_eq!(got, ("news".to_owned(), text.to_owned()));
        }
    }
    // The outsider got none of them, nor did the subscribers get anything twice.
    nothing_more(&outsider, &mut outsider_signals).await;
    nothing_more(&a, &mut a_signals).await;
    nothing_more(&b, &mut b_signals).await;

    // Unsubscribed: no more.
    assert_eq!(ask(&a, "unsubscribe", "room").await, "true");
    assert_eq!(ask(&a, "unsubscribe", "room").await, "false");
    assert_eq!(
        bounded(server.publish("room", "news", "third"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(server.subscriber_count("room"), 1);
}

#[tokio::test]
async fn a_connection_leaves_its_topics_when_it_ends() {
    let (server, mut events, addr) = start(|b| b).await;
    let (a, _a_signals) = subscriber(addr).await;
    assert_eq!(ask(&a, "subscribe", "room").await, "true");
    assert_eq!(ask(&a, "subscribe", "hall").await, "true");
    let conn = bounded(events.connected.recv()).await.expect("connected");
    let mut topics = conn.topics();
    topics.sort();
    assert_eq!(topics, ["hall", "room"]);

    a.close().await;
    bounded(events.disconnected.recv()).await.expect("gone");
    assert_eq!(server.subscriber_count("room"), 0);
    assert_eq!(server.subscriber_count("hall"), 0);
    // What it had, for the `disconnected` hook; it can join nothing more.
    let mut topics = conn.topics();
    topics.sort();
    assert_eq!(topics, ["hall", "room"]);
    assert!(matches!(conn.subscribe("room"), Err(TopicError::Closed)));
    assert_eq!(server.subscriber_count("room"), 0);
    assert_eq!(
        bounded(server.publish("room", "news", "x")).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn a_connection_subscribes_to_at_most_max_topics_per_connection() {
    let (server, mut events, addr) = start(|b| b.max_topics_per_connection(2)).await;
    let (a, _signals) = subscriber(addr).await;
    assert_eq!(ask(&a, "subscribe", "one").await, "true");
    assert_eq!(ask(&a, "subscribe", "two").await, "true");
    let conn = bounded(events.connected.recv()).await.expect("connected");
    assert!(matches!(
        conn.subscribe("three"),
        Err(TopicError::TooManyTopics { limit: 2 })
    ));
    assert_eq!(server.subscriber_count("three"), 0);
    // Leaving one makes room again.
    assert!(conn.unsubscribe("one"));
    assert_eq!(conn.subscribe("three").ok(), Some(true));
}

#[tokio::test]
async fn bad_topics_and_signals_are_refused_before_anything_is_sent() {
    let (server, mut events, addr) = start(|b| b.max_message_size(1024)).await;
    let (a, _signals) = subscriber(addr).await;
    assert_eq!(ask(&a, "subscribe", "room").await, "true");
    let conn = bounded(events.connected.recv()).await.expect("connected");
    assert!(matches!(
        conn.subscribe(""),
        Err(TopicError::InvalidTopic { len: 0 })
    ));
    let long = "t".repeat(tokio_webwire::server::MAX_TOPIC_LEN + 1);
    assert!(matches!(
        conn.subscribe(&long),
        Err(TopicError::InvalidTopic { .. })
    ));
    assert!(matches!(
        server.publish("room", "news", vec![0u8; 2000]).await,
        Err(TopicError::TooLarge { limit: 1024, .. })
    ));
    assert!(matches!(
        server.publish("room", "bad name\n", "x").await,
        Err(TopicError::Invalid(_))
    ));
}

/// Subscribes a raw connection over an in-memory pipe of `buffer` bytes, which then reads
/// nothing more: its pipe and its outbound queue fill up.
async fn stalled_subscriber(
    server: &Server<Arc<Probe>>,
    events: &mut common::probe::Events,
    buffer: usize,
) -> (
    RawClient<tokio::io::DuplexStream>,
    tokio_webwire::server::Connection,
) {
    let (mut raw, _accept_conf) = RawClient::connect_in_memory(server, buffer).await;
    let conn = bounded(events.connected.recv()).await.expect("connected");
    raw.send(request(1, "subscribe", Payload::utf8("room")))
        .await;
    assert!(matches!(parse(raw.recv().await), Message::ReplyUtf8 { .. }));
    (raw, conn)
}

/// Publishes 1 KiB signals, each after the reading subscriber got the one before, until
/// `done` says so; returns how many were published. Bounded: a stalled pipe of a few KiB
/// and a queue of 2 fill long before.
async fn publish_until(
    server: &Server<Arc<Probe>>,
    reader: &mut mpsc::UnboundedReceiver<Seen>,
    mut done: impl FnMut(usize) -> bool,
) -> usize {
    for n in 1..=500 {
        let text = format!("{n:04}{}", "x".repeat(1020));
        let here = bounded(server.publish("room", "news", text.clone()))
            .await
            .expect("published");
        let got = next_signal(reader).await;
        assert_eq!(got.1, text, "the reader gets each, in order");
        if done(here) {
            return n;
        }
    }
    panic!("the stalled subscriber never fell behind");
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_disconnected_and_nobody_waits_for_it() {
    let (server, mut events, addr) = start(|b| b.outbound_queue_len(2)).await;
    let (reader, mut reader_signals) = subscriber(addr).await;
    let _ = bounded(events.connected.recv()).await;
    assert_eq!(ask(&reader, "subscribe", "room").await, "true");
    let (mut stalled, stalled_conn) = stalled_subscriber(&server, &mut events, 4096).await;

    let published = publish_until(&server, &mut reader_signals, |_| stalled_conn.is_closed()).await;
    assert!(published > 2, "the queue held some first");
    // The stalled client, reading again (before the server's close timeout gives up on
    // it), finds what was queued, then the close: 1013, "try again later".
    let close = stalled.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1013);
    assert_eq!(
        bounded(events.disconnected.recv()).await,
        Some(CloseReason::SlowConsumer)
    );
    assert_eq!(server.subscriber_count("room"), 1);
    // The reader is still there and still subscribed.
    assert_eq!(ask(&reader, "publish", "room|still here").await, "1");
}

#[tokio::test]
async fn with_skip_a_slow_subscriber_misses_signals_but_stays() {
    let (server, mut events, addr) = start(|b| {
        b.outbound_queue_len(2)
            .slow_subscriber(SlowSubscriber::Skip)
            // The stalled pipe must not end the connection while the test runs.
            .write_timeout(Duration::from_secs(60))
    })
    .await;
    let (reader, mut reader_signals) = subscriber(addr).await;
    let _ = bounded(events.connected.recv()).await;
    assert_eq!(ask(&reader, "subscribe", "room").await, "true");
    let (mut stalled, stalled_conn) = stalled_subscriber(&server, &mut events, 4096).await;

    // Until a publish reaches only the reader: the stalled one was skipped.
    let published = publish_until(&server, &mut reader_signals, |here| here == 1).await;
    assert!(!stalled_conn.is_closed());
    assert_eq!(server.subscriber_count("room"), 2);

    // Reading again, it gets a prefix of what was published (the skipped ones are
    // missing, the rest in order), and the connection still answers.
    stalled
        .send(request(2, "echo", Payload::utf8("ping")))
        .await;
    let mut received = Vec::new();
    loop {
        match parse(stalled.recv().await) {
            Message::SignalUtf8 { data, .. } => received.push(data),
            Message::ReplyUtf8 { data, .. } => {
                assert_eq!(&data[..], b"ping");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(!received.is_empty());
    assert!(
        received.len() < published,
        "{} of {published} arrived: some were skipped",
        received.len()
    );
    assert!(received.windows(2).all(|w| w[0] < w[1]), "in order");
}
