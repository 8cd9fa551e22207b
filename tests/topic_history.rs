//! The topics extension on the server (`docs/topics.md`), in raw frames over real sockets:
//! negotiation, client subscriptions and the hook that refuses them, topics with and
//! without history, resume after a lost connection (exactly the missed publications, in
//! order, then live ones), positions the history no longer covers, limits, and
//! publications racing a resume.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use common::topics::{
    Seen, connect, publications, publish, read, resumed, subscribe, subscribe_frame,
};
use common::{bounded, listen};
use tokio_webwire::Payload;
use tokio_webwire::protocol::topics::{self, Position, Status, Subscribed};
use tokio_webwire::protocol::{Message, Name, RequestId};
use tokio_webwire::server::{
    Connection, Handler, HandlerResult, History, Server, ServerBuilder, SubscribeRefused,
    TopicError,
};

/// Lets clients subscribe to anything but `secret`; answers the request `plain` (to show
/// what a v2.0 connection's `ww.` requests reach) with its name.
struct App;

impl Handler for App {
    subscribe_all_but_secret!();

    async fn request(&self, conn: &Connection, name: Name, _: Payload) -> HandlerResult {
        if name.as_str() == "subscribe-here" {
            conn.subscribe("room")?;
        }
        Ok(Payload::utf8(format!("handler saw {name}")))
    }
}

async fn server(
    configure: impl FnOnce(ServerBuilder<App>) -> ServerBuilder<App>,
) -> (Server<App>, SocketAddr) {
    let server = configure(Server::builder(App)).build().expect("server");
    let addr = listen(&server).await;
    (server, addr)
}

#[tokio::test]
async fn the_extension_is_negotiated_and_invisible_to_a_peer_that_does_not_ask() {
    let (_server, addr) = server(|b| b).await;
    let (mut v2, selected) = connect(addr, false).await;
    assert!(!selected, "no sub-protocol for a v2.0 peer");
    // Its `ww.` requests are the application's, as in v2.0.
    v2.send(subscribe_frame(7, "room", None)).await;
    let reply = Message::parse(v2.recv().await).unwrap();
    assert_eq!(
        reply.payload().unwrap().to_text().unwrap(),
        "handler saw ww.subscribe"
    );

    let (mut ext, selected) = connect(addr, true).await;
    assert!(selected, "the 101 selects webwire.topics.1");
    assert_eq!(
        subscribe(&mut ext, "room", None).await.status,
        Status::NoHistory
    );
}

#[tokio::test]
async fn the_default_hook_refuses_and_an_applications_hook_decides() {
    let default = Server::builder(()).build().unwrap();
    let addr = listen(&default).await;
    let (mut client, _) = connect(addr, true).await;
    client.send(subscribe_frame(1, "room", None)).await;
    assert_eq!(
        read(client.recv().await),
        Seen::Error(topics::codes::REFUSED.into())
    );

    let (server, addr) = server(|b| b.history("secret", History::last(10))).await;
    let (mut client, _) = connect(addr, true).await;
    client.send(subscribe_frame(1, "secret", None)).await;
    assert_eq!(
        read(client.recv().await),
        Seen::Error(topics::codes::REFUSED.into())
    );
    publish(&server, "secret", "hidden").await;
    // Nothing reaches the refused client: its next frame is the answer to another request.
    assert_eq!(
        subscribe(&mut client, "room", None).await.status,
        Status::NoHistory
    );
}

#[tokio::test]
async fn a_topic_without_history_delivers_without_positions_and_plain_subscribers_are_unchanged() {
    let (server, addr) = server(|b| b.history("kept/*", History::last(10))).await;
    let (mut ext, _) = connect(addr, true).await;
    let (mut plain, _) = connect(addr, false).await;
    assert_eq!(
        subscribe(&mut ext, "room", None).await,
        Subscribed {
            status: Status::NoHistory,
            position: Position::default()
        }
    );
    let subscribe_here = Message::request(
        RequestId::from(1),
        Name::from_static("subscribe-here"),
        Payload::utf8(""),
    );
    plain.send(subscribe_here.encode().unwrap()).await;
    plain.recv().await;
    assert_eq!(server.subscriber_count("room"), 2);
    publish(&server, "room", "hello").await;
    assert_eq!(
        read(ext.recv().await),
        Seen::Publication {
            topic: "room".into(),
            position: None,
            text: "hello".into()
        }
    );
    // The server-made subscription gets the plain v2.0 signal, as before.
    let signal = Message::parse(plain.recv().await).unwrap();
    assert!(
        matches!(&signal, Message::SignalUtf8 { name, data } if name.as_str() == "msg" && &data[..] == b"hello"),
        "{signal:?}"
    );
}

#[tokio::test]
async fn a_killed_subscriber_resumes_with_exactly_what_it_missed_then_live_ones() {
    let (server, addr) = server(|b| b.history("room/*", History::last(100))).await;
    let (mut client, _) = connect(addr, true).await;
    let answer = subscribe(&mut client, "room/1", None).await;
    assert_eq!(answer.status, Status::Subscribed);
    assert_eq!(answer.position.offset, 0);
    for i in 1..=3 {
        publish(&server, "room/1", &format!("m{i}")).await;
    }
    let seen = publications(&mut client, 3).await;
    let offsets: Vec<u64> = seen.iter().map(|(p, _)| p.offset).collect();
    assert_eq!(offsets, [1, 2, 3]);
    assert!(seen.iter().all(|(p, _)| p.epoch == answer.position.epoch));
    let last = seen[2].0;

    drop(client); // killed: no close frame
    bounded(async {
        while server.subscriber_count("room/1") > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    for i in 4..=8 {
        publish(&server, "room/1", &format!("m{i}")).await;
    }

    let (mut again, _) = connect(addr, true).await;
    again.send(subscribe_frame(2, "room/1", Some(last))).await;
    let missed = publications(&mut again, 5).await;
    let texts: Vec<&str> = missed.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["m4", "m5", "m6", "m7", "m8"]);
    let offsets: Vec<u64> = missed.iter().map(|(p, _)| p.offset).collect();
    assert_eq!(offsets, [4, 5, 6, 7, 8]);
    assert_eq!(
        read(again.recv().await),
        Seen::Answer(Subscribed {
            status: Status::Recovered,
            position: Position { offset: 8, ..last }
        })
    );
    publish(&server, "room/1", "m9").await;
    let live = publications(&mut again, 1).await;
    assert_eq!(live[0], (Position { offset: 9, ..last }, "m9".to_owned()));
}

#[tokio::test]
async fn a_position_the_history_does_not_cover_is_told_with_nothing_stale() {
    let (server, addr) = server(|b| b.history("news", History::last(3))).await;
    let (mut client, _) = connect(addr, true).await;
    let start = subscribe(&mut client, "news", None).await.position;
    drop(client);
    for i in 1..=6 {
        publish(&server, "news", &format!("m{i}")).await;
    }
    // Offsets 1..=6, 4..=6 kept: a client that saw up to 2 missed 3, which is gone.
    let (mut client, _) = connect(addr, true).await;
    let answer = subscribe(&mut client, "news", Some(Position { offset: 2, ..start })).await;
    assert_eq!(
        answer,
        Subscribed {
            status: Status::NotRecovered,
            position: Position { offset: 6, ..start }
        }
    );
    // Another epoch (a restarted server's, say) is not recovered either.
    let answer = subscribe(
        &mut client,
        "news",
        Some(Position {
            epoch: start.epoch ^ 1,
            offset: 6,
        }),
    )
    .await;
    assert_eq!(answer.status, Status::NotRecovered);
    // Nothing stale came before the answers: the next frame is the next publication.
    publish(&server, "news", "m7").await;
    assert_eq!(publications(&mut client, 1).await[0].1, "m7");

    // A new server (a restart) has a new epoch: the old position is not recovered.
    let (restarted, addr) = server_again().await;
    let (mut client, _) = connect(addr, true).await;
    let answer = subscribe(&mut client, "news", Some(Position { offset: 7, ..start })).await;
    assert_eq!(answer.status, Status::NotRecovered);
    assert_ne!(answer.position.epoch, start.epoch);
    assert_eq!(answer.position.offset, 0);
    drop(restarted);
}

async fn server_again() -> (Server<App>, SocketAddr) {
    server(|b| b.history("news", History::last(3))).await
}

#[tokio::test]
async fn limits_and_malformed_requests_get_clear_errors() {
    let (server, addr) = server(|b| {
        b.history("big", History::last(10))
            .max_topics_per_connection(1)
            .max_message_size(256)
    })
    .await;
    let (mut client, _) = connect(addr, true).await;
    subscribe(&mut client, "a", None).await;
    assert_eq!(
        subscribe(&mut client, "a", None).await.status,
        Status::NoHistory,
        "a repeat is fine"
    );
    client.send(subscribe_frame(2, "b", None)).await;
    assert_eq!(
        read(client.recv().await),
        Seen::Error(topics::codes::TOO_MANY_TOPICS.into())
    );
    for payload in [&b""[..], b"\x00", b"\x04x", b"\x01short"] {
        let frame = Message::request(
            RequestId::from(3),
            topics::SUBSCRIBE,
            Payload::binary(Bytes::copy_from_slice(payload)),
        );
        client.send(frame.encode().unwrap()).await;
        assert_eq!(
            read(client.recv().await),
            Seen::Error(topics::codes::BAD_REQUEST.into()),
            "{payload:?}"
        );
    }
    let unknown = Message::request(
        RequestId::from(4),
        Name::from_static("ww.nope"),
        Payload::binary(Bytes::from_static(b"x")),
    );
    client.send(unknown.encode().unwrap()).await;
    assert_eq!(
        read(client.recv().await),
        Seen::Error(topics::codes::BAD_REQUEST.into())
    );
    // A publication that would not fit the message size limit with its position is
    // refused, and nothing of it is kept.
    let large = "x".repeat(230);
    let refused = bounded(server.publish("big", "msg", large)).await;
    assert!(
        matches!(refused, Err(TopicError::TooLarge { limit: 256, .. })),
        "{refused:?}"
    );
    let unsubscribe = Message::request(
        RequestId::from(5),
        topics::UNSUBSCRIBE,
        Payload::binary(Bytes::from_static(b"a")),
    );
    client.send(unsubscribe.encode().unwrap()).await;
    assert_eq!(read(client.recv().await), Seen::Unsubscribed);
    let answer = subscribe(
        &mut client,
        "big",
        Some(Position {
            epoch: 1,
            offset: 0,
        }),
    )
    .await;
    assert_eq!(
        answer.position.offset, 0,
        "the refused publication has no position"
    );
}

/// A publisher publishes 1..=N without pause while a client resumes from the middle:
/// whatever the interleaving, the client gets every offset after its position exactly
/// once, in order (the replayed ones, then the live ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_racing_a_resume_leave_no_gap_and_no_duplicate() {
    const N: u64 = 200;
    for run in 0..30 {
        let (server, addr) = server(|b| {
            b.history("race", History::last(1000))
                .outbound_queue_len(1024)
        })
        .await;
        let (mut first, _) = connect(addr, true).await;
        let epoch = subscribe(&mut first, "race", None).await.position.epoch;
        drop(first);
        for i in 1..=20 {
            publish(&server, "race", &i.to_string()).await;
        }
        let (mut client, _) = connect(addr, true).await;
        let publisher = tokio::spawn({
            let server = server.clone();
            async move {
                for i in 21..=N {
                    server
                        .publish("race", "msg", i.to_string())
                        .await
                        .expect("published");
                    if i % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
        let resume = Position { epoch, offset: 10 };
        client.send(subscribe_frame(9, "race", Some(resume))).await;
        let texts = resumed(&mut client, resume, N, &format!("run {run}")).await;
        let expected: Vec<String> = (11..=N).map(|i| i.to_string()).collect();
        assert_eq!(texts, expected, "run {run}");
        bounded(publisher).await.unwrap();
        drop(Arc::new(server));
    }
}

/// The server can take a client's own subscription away (a login that granted it ended):
/// `Connection::unsubscribe` ends both kinds.
#[tokio::test]
async fn the_server_can_take_a_clients_subscription_away() {
    struct Revoking;
    impl Handler for Revoking {
        async fn subscribe_requested(
            &self,
            _: &Connection,
            _: &str,
        ) -> Result<(), SubscribeRefused> {
            Ok(())
        }
        async fn request(&self, conn: &Connection, _: Name, _: Payload) -> HandlerResult {
            Ok(Payload::utf8(conn.unsubscribe("room").to_string()))
        }
    }
    let server = Server::builder(Revoking).build().unwrap();
    let addr = listen(&server).await;
    let (mut client, _) = connect(addr, true).await;
    subscribe(&mut client, "room", None).await;
    assert_eq!(server.subscriber_count("room"), 1);
    let take_away = Message::request(
        RequestId::from(2),
        Name::from_static("take-away"),
        Payload::utf8(""),
    );
    client.send(take_away.encode().unwrap()).await;
    let reply = Message::parse(client.recv().await).unwrap();
    assert_eq!(reply.payload().unwrap().to_text().unwrap(), "true");
    assert_eq!(server.subscriber_count("room"), 0);
    bounded(server.publish("room", "msg", "after"))
        .await
        .unwrap();
    // Nothing of the topic reaches it: the next frame answers the next request.
    assert_eq!(
        subscribe(&mut client, "other", None).await.status,
        Status::NoHistory
    );
}

/// Two servers on one backplane, each with an in-memory history: each gives the topic's
/// publications (the other's included) positions of its own epoch, and a position from
/// one is "not recovered" on the other, never answered with the other's offsets.
#[tokio::test]
async fn another_nodes_position_is_not_recovered_and_its_publications_get_local_ones() {
    let bus = common::nodes::InProcess::default();
    let secret = common::nodes::SECRET;
    let (a, a_addr) = server(|b| {
        b.history("room", History::last(10))
            .backplane(bus.node())
            .backplane_secret(secret)
    })
    .await;
    let (_b, b_addr) = server(|b| {
        b.history("room", History::last(10))
            .backplane(bus.node())
            .backplane_secret(secret)
    })
    .await;
    let (mut on_a, _) = connect(a_addr, true).await;
    let (mut on_b, _) = connect(b_addr, true).await;
    let a_epoch = subscribe(&mut on_a, "room", None).await.position.epoch;
    let b_epoch = subscribe(&mut on_b, "room", None).await.position.epoch;
    assert_ne!(a_epoch, b_epoch);
    publish(&a, "room", "m1").await;
    let here = publications(&mut on_a, 1).await;
    let there = publications(&mut on_b, 1).await;
    assert_eq!(
        here[0],
        (
            Position {
                epoch: a_epoch,
                offset: 1
            },
            "m1".to_owned()
        )
    );
    assert_eq!(
        there[0],
        (
            Position {
                epoch: b_epoch,
                offset: 1
            },
            "m1".to_owned()
        )
    );
    // A client of A moving to B with A's position.
    let (mut moved, _) = connect(b_addr, true).await;
    let answer = subscribe(&mut moved, "room", Some(here[0].0)).await;
    assert_eq!(
        answer,
        Subscribed {
            status: Status::NotRecovered,
            position: Position {
                epoch: b_epoch,
                offset: 1
            }
        }
    );
}
