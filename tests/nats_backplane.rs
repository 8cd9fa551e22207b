//! What is particular to `NatsBackplane`, against a real nats-server (tests/common/nats.rs;
//! skipped without the binary unless `CI` is set): routing by interest (a node receives a
//! topic's traffic only while it has a subscriber, seen by the backplane's count and by
//! the server's own monitoring), joins counted for servers sharing one backplane, NATS
//! killed and restarted on the same port (a revocation missed meanwhile takes effect once
//! it is back), TLS, what `connect` refuses, the connection
//! closed with the backplane. The scenarios every backplane passes run over NATS in
//! `tests/nats_nodes.rs`.

mod common;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use common::nats::NatsServer;
use common::nodes::{self, Seen, ask, nats_node, news, next_signal, node};
use common::topics::{self, history_node};
use common::{bounded, listen};
use serde_json::Value;
use tokio_webwire::backplane::{Backplane, Route};
use tokio_webwire::nats::async_nats::connection::State;
use tokio_webwire::nats::async_nats::{ConnectOptions, rustls};
use tokio_webwire::nats::{NatsBackplane, NatsConnectError};
use tokio_webwire::protocol::topics::Status;
use tokio_webwire::server::{History, TopicError};
use tokio_webwire::session::MemoryStore;

/// Waits until `check` holds: for what only shows in another process (the NATS server's
/// view, a connection state) and has no event to wait on. Bounded; polled every 20 ms.
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let polled = tokio::time::timeout(Duration::from_secs(10), async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "not within 10 s: {what}");
}

/// The subjects the connection named `name` subscribes to, as the NATS server sees them.
async fn subjects(nats: &NatsServer, name: &str) -> Vec<String> {
    let connection = nats.connection(name).await;
    let mut subjects: Vec<String> = connection["subscriptions_list"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    subjects.sort();
    subjects
}

fn topic(name: &str) -> Route {
    Route::topic(name).expect("a valid topic")
}

#[tokio::test]
async fn a_node_without_subscribers_receives_none_of_a_topics_traffic() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let store = Arc::new(MemoryStore::default());
    let (a, a_backplane) = nats_node(&nats, "a", Arc::clone(&store)).await;
    let (b, b_backplane) = nats_node(&nats, "b", Arc::clone(&store)).await;
    let (c, c_backplane) = nats_node(&nats, "c", store).await;
    let (on_a, _on_a_seen) = nodes::subscriber(a.addr).await;
    let (on_b, mut on_b_seen) = nodes::subscriber(b.addr).await;
    let (on_c, mut on_c_seen) = nodes::subscriber(c.addr).await;
    assert_eq!(ask(&on_a, "subscribe", "room").await, "true");
    assert_eq!(ask(&on_b, "subscribe", "room").await, "true");
    assert_eq!(ask(&on_c, "subscribe", "elsewhere").await, "true");
    let room = a_backplane.subject(&topic("room"));
    let elsewhere = a_backplane.subject(&topic("elsewhere"));
    assert!(subjects(&nats, "c").await.contains(&elsewhere));
    assert!(!subjects(&nats, "c").await.contains(&room));
    let c_sent_before = nats.connection("c").await["out_msgs"].as_u64();

    for i in 0..20 {
        bounded(a.server.publish("room", "news", format!("{i}")))
            .await
            .expect("published");
    }
    // From the same node, after them: NATS keeps one publisher's order to each
    // subscriber, so when c has this one it would have had any of the twenty before it.
    bounded(a.server.publish("elsewhere", "news", "sentinel"))
        .await
        .expect("published");
    assert_eq!(next_signal(&mut on_c_seen).await, news("sentinel"));
    for i in 0..20 {
        assert_eq!(next_signal(&mut on_b_seen).await, news(&i.to_string()));
    }
    assert_eq!(c_backplane.received(), 1, "c received the sentinel only");
    assert_eq!(b_backplane.received(), 20);
    // The NATS server agrees: it sent c one message (the sentinel), b the twenty.
    let c_sent = nats.connection("c").await["out_msgs"].as_u64();
    assert_eq!(
        c_sent.zip(c_sent_before).map(|(now, then)| now - then),
        Some(1)
    );

    // The last subscriber on b leaves: b leaves the topic's subject.
    assert_eq!(ask(&on_b, "unsubscribe", "room").await, "true");
    eventually("b unsubscribed from the room's subject", || async {
        !subjects(&nats, "b").await.contains(&room)
    })
    .await;
    assert!(
        subjects(&nats, "a").await.contains(&room),
        "a still serves it"
    );
}

#[tokio::test]
async fn servers_sharing_one_backplane_keep_a_route_while_either_serves_it() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let store = Arc::new(MemoryStore::default());
    let shared = bounded(
        NatsBackplane::builder()
            .options(ConnectOptions::new().name("shared"))
            .connect(&nats.url()),
    )
    .await
    .expect("connects");
    let one = node(|b| {
        b.session_store(Arc::clone(&store))
            .backplane(shared.clone())
    })
    .await;
    let two = node(|b| {
        b.session_store(Arc::clone(&store))
            .backplane(shared.clone())
    })
    .await;
    let (publisher, _) = nats_node(&nats, "publisher", store).await;
    let (on_one, mut on_one_seen) = nodes::subscriber(one.addr).await;
    let (on_two, mut on_two_seen) = nodes::subscriber(two.addr).await;
    assert_eq!(ask(&on_one, "subscribe", "room").await, "true");
    assert_eq!(ask(&on_two, "subscribe", "room").await, "true");
    let room = shared.subject(&topic("room"));
    assert_eq!(
        subjects(&nats, "shared")
            .await
            .iter()
            .filter(|s| **s == room)
            .count(),
        1,
        "one subscription for both servers"
    );

    bounded(publisher.server.publish("room", "news", "to both"))
        .await
        .expect("published");
    assert_eq!(next_signal(&mut on_one_seen).await, news("to both"));
    assert_eq!(next_signal(&mut on_two_seen).await, news("to both"));

    // One server's last subscriber leaves: the other still gets the topic.
    assert_eq!(ask(&on_one, "unsubscribe", "room").await, "true");
    bounded(publisher.server.publish("room", "news", "to two"))
        .await
        .expect("published");
    assert_eq!(next_signal(&mut on_two_seen).await, news("to two"));
    assert!(subjects(&nats, "shared").await.contains(&room));

    // And when the other's leaves too, the backplane leaves the subject.
    assert_eq!(ask(&on_two, "unsubscribe", "room").await, "true");
    eventually("the shared backplane left the room's subject", || async {
        !subjects(&nats, "shared").await.contains(&room)
    })
    .await;
}

#[tokio::test]
async fn messages_flow_again_after_nats_restarts() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let store = Arc::new(MemoryStore::default());
    let (a, _) = nats_node(&nats, "a", Arc::clone(&store)).await;
    let (b, b_backplane) = nats_node(&nats, "b", store).await;
    let (on_a, mut on_a_seen) = nodes::subscriber(a.addr).await;
    let (on_b, mut on_b_seen) = nodes::subscriber(b.addr).await;
    assert_eq!(ask(&on_a, "subscribe", "room").await, "true");
    assert_eq!(ask(&on_b, "subscribe", "room").await, "true");
    bounded(b.server.publish("room", "news", "before"))
        .await
        .expect("published");
    assert_eq!(next_signal(&mut on_a_seen).await, news("before"));
    assert_eq!(next_signal(&mut on_b_seen).await, news("before"));

    // A session held on b only.
    let (holder, mut holder_seen) = nodes::subscriber(b.addr).await;
    let key = nodes::login(&holder, &mut holder_seen).await;

    nats.stop();
    eventually("b's connection noticed NATS is gone", || async {
        b_backplane.client().connection_state() != State::Connected
    })
    .await;
    // A publish while NATS is away: this node's subscribers get it, the caller learns the
    // other nodes did not.
    match bounded(b.server.publish("room", "news", "down")).await {
        Err(TopicError::Backplane { delivered: 1, .. }) => {}
        other => panic!("expected a backplane error, got {other:?}"),
    }
    assert_eq!(next_signal(&mut on_b_seen).await, news("down"));
    assert!(
        bounded(NatsBackplane::connect(&nats.url())).await.is_err(),
        "no NATS, no new backplane"
    );

    // Revoked on a while b cannot hear of it: b's holder keeps the session for now.
    let _ = bounded(a.server.close_session(&key)).await;
    assert!(holder.session().is_some());

    nats.restart().await;
    // Once b's subscriptions are back, its server is told (`Inbox::reconnected`) and checks
    // the sessions it holds against the store: the revocation it missed takes effect.
    assert_eq!(bounded(holder_seen.recv()).await, Some(Seen::SessionClosed));
    assert_eq!(b.server.active_sessions(), 0);
    // Both directions come back, each node's subscription to the room included, and flow
    // as before, each way, once. (What b sent while NATS was away never reached a: core
    // NATS keeps nothing.)
    nodes::flowing_again(&a, &b, &mut on_a_seen, &mut on_b_seen).await;
}

#[tokio::test]
async fn tls_with_a_client_config() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("a certificate");
    let Some(nats) =
        NatsServer::start_tls(&certified.cert.pem(), &certified.key_pair.serialize_pem()).await
    else {
        return;
    };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(certified.cert.der().clone())
        .expect("the certificate as a root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_root_certificates(roots)
    .with_no_client_auth();

    // Without our root, the handshake fails: an error, not a panic.
    match bounded(NatsBackplane::connect(&nats.url())).await {
        Err(NatsConnectError::Unreachable { .. }) => {}
        other => panic!("expected the certificate refused, got {other:?}"),
    }

    let store = Arc::new(MemoryStore::default());
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        let backplane = bounded(
            NatsBackplane::builder()
                .tls_config(config.clone())
                .options(ConnectOptions::new().name(name))
                .connect(&nats.url()),
        )
        .await
        .expect("connects over TLS");
        let store = Arc::clone(&store);
        nodes.push(node(|b| b.session_store(store).backplane(backplane)).await);
    }
    let (on_a, mut on_a_seen) = nodes::subscriber(nodes[0].addr).await;
    assert_eq!(ask(&on_a, "subscribe", "room").await, "true");
    bounded(nodes[1].server.publish("room", "news", "over TLS"))
        .await
        .expect("published");
    assert_eq!(next_signal(&mut on_a_seen).await, news("over TLS"));
    assert_eq!(nats.connection("a").await["tls_version"], "1.3");
}

#[tokio::test]
async fn connect_says_what_is_wrong() {
    let bad_prefix = bounded(
        NatsBackplane::builder()
            .prefix("shop.*")
            .connect("nats://127.0.0.1:4222"),
    )
    .await;
    assert!(
        matches!(&bad_prefix, Err(NatsConnectError::InvalidPrefix { prefix, .. }) if prefix == "shop.*"),
        "{bad_prefix:?}"
    );

    let bad_url = bounded(NatsBackplane::connect("redis://user:s3cret@127.0.0.1:4222")).await;
    let shown = bad_url.expect_err("not a NATS URL").to_string();
    assert!(shown.starts_with("invalid NATS URL"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");

    // A port nothing listens on (taken free, and given back).
    let port = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let absent = bounded(NatsBackplane::connect(&format!(
        "nats://user:s3cret@127.0.0.1:{port}"
    )))
    .await;
    let error = absent.expect_err("nothing there");
    assert!(matches!(error, NatsConnectError::Unreachable { .. }));
    let shown = error.to_string();
    assert!(
        shown.starts_with(&format!("cannot connect to NATS at 127.0.0.1:{port}")),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[tokio::test]
async fn the_connection_closes_with_the_backplane() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let store = Arc::new(MemoryStore::default());
    let (a, backplane) = nats_node(&nats, "a", store).await;
    assert!(!subjects(&nats, "a").await.is_empty());
    bounded(a.server.shutdown()).await;
    drop(a);
    drop(backplane);
    eventually("the backplane's connection closed", || async {
        nats.connections()
            .await
            .iter()
            .all(|connection| connection["name"] != "a")
    })
    .await;
}

/// A node's in-memory history misses what was published while the node had no
/// subscriber to the topic (it had left the topic's subject): a client resuming there from
/// before that gap must not be told it recovered everything.
#[tokio::test]
async fn a_resume_across_a_time_the_node_did_not_serve_the_topic_is_not_silently_short() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let mut servers = Vec::new();
    for name in ["a", "b"] {
        let backplane = bounded(
            NatsBackplane::builder()
                .options(ConnectOptions::new().name(name))
                .connect(&nats.url()),
        )
        .await
        .expect("connects");
        let server = history_node(backplane, "room", History::last(10))
            .build()
            .expect("valid options");
        let addr = listen(&server).await;
        servers.push((server, addr));
    }
    let (a, b_addr) = (&servers[0].0, servers[1].1);
    let room = || async {
        subjects(&nats, "b")
            .await
            .iter()
            .any(|subject| subject.starts_with("webwire.t.room"))
    };

    let (mut client, _) = topics::connect(b_addr, true).await;
    topics::subscribe(&mut client, "room", None).await;
    bounded(a.publish("room", "msg", "m1"))
        .await
        .expect("published");
    let (last, _) = topics::publications(&mut client, 1).await[0].clone();
    drop(client);
    eventually("b left the room's subject", || async { !room().await }).await;

    // A witness on the room's subject: once it has both, NATS has routed them (to
    // nobody on b).
    let witness = bounded(NatsBackplane::connect(&nats.url()))
        .await
        .expect("connects");
    bounded(witness.join(&topic("room"))).await.expect("joined");
    for text in ["m2", "m3"] {
        bounded(a.publish("room", "msg", text))
            .await
            .expect("published");
    }
    eventually("the witness has m2 and m3", || async {
        witness.received() == 2
    })
    .await;

    let (mut again, _) = topics::connect(b_addr, true).await;
    let answer = topics::subscribe(&mut again, "room", Some(last)).await;
    assert_eq!(
        answer.status,
        Status::NotRecovered,
        "b never had m2 and m3: {answer:?}"
    );
}

/// Topics holding what a NATS subject cannot (`.`, wildcards, spaces, any UTF-8, the
/// longest a topic may be) travel on subjects of their own, each to its subscribers only.
#[tokio::test]
async fn any_topic_travels_on_a_subject_of_its_own() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let store = Arc::new(MemoryStore::default());
    let (a, a_backplane) = nats_node(&nats, "a", Arc::clone(&store)).await;
    let (b, _) = nats_node(&nats, "b", store).await;
    let longest = "é".repeat(512); // 1 024 bytes, the longest topic
    let topics = [
        "a.b",
        "a%2Eb",
        "*",
        ">",
        "with space\t",
        "ünïcödé",
        &longest,
    ];
    let mut subscribers = Vec::new();
    for topic in topics {
        let (client, seen) = nodes::subscriber(a.addr).await;
        assert_eq!(ask(&client, "subscribe", topic).await, "true");
        subscribers.push((client, seen));
    }
    assert!(
        subjects(&nats, "a")
            .await
            .contains(&"webwire.t.a%2Eb".to_owned())
    );
    for topic in topics {
        bounded(b.server.publish(topic, "news", topic.to_owned()))
            .await
            .expect("published");
    }
    // Each subscriber gets its own topic's signal, and nothing else.
    for (topic, (client, seen)) in topics.iter().zip(&mut subscribers) {
        assert_eq!(next_signal(seen).await, news(topic));
        nodes::nothing_more(client, seen).await;
    }
    assert_eq!(a_backplane.received(), topics.len() as u64);
}
