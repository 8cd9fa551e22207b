//! Several servers of one service sharing a session store and a backplane (one inside the
//! test process): publishes, session signals and revocations reach every node; sessions
//! outlive their node; a store per node still loses a revoked session. The same scenarios
//! run over Redis in `tests/redis_nodes.rs`.

mod common;

use std::sync::Arc;

use common::nodes::{self, InProcess, Node, node};
use tokio::sync::mpsc;
use tokio_webwire::backplane::{Backplane, Route};
use tokio_webwire::protocol::Name;
use tokio_webwire::server::{Connection, Handler, HandlerResult};
use tokio_webwire::session::MemoryStore;
use tokio_webwire::{Payload, Session};

/// Two nodes sharing a fresh backplane and store; always `Some` (the bus is in this
/// process: nothing to skip without), with no servers to keep.
async fn two_nodes() -> Option<((), Node, Node)> {
    let bus = InProcess::default();
    let store = Arc::new(MemoryStore::default());
    let a = node(|b| b.backplane(bus.node()).session_store(store.clone())).await;
    let b = node(|b| b.backplane(bus.node()).session_store(store)).await;
    Some(((), a, b))
}

nodes_scenarios!(two_nodes);

/// Each node with a store of its own (a `MemoryStore` per process) on a shared backplane:
/// a revocation on a node that never stored the session (a load balancer sent the call
/// there) removes it from the store of the node that did, so no node restores it.
#[tokio::test]
async fn a_revocation_reaches_the_store_of_every_node() {
    let bus = InProcess::default();
    let store_b = Arc::new(MemoryStore::default());
    let a = node(|b| b.backplane(bus.node())).await;
    let b = node(|b| b.backplane(bus.node()).session_store(store_b.clone())).await;
    let (on_b, mut on_b_seen) = nodes::subscriber(b.addr).await;
    let key = nodes::login(&on_b, &mut on_b_seen).await;
    assert_eq!(store_b.len(), 1, "setup: stored on b only");

    let held_on_a = common::bounded(a.server.close_session(&key))
        .await
        .expect("revoked");
    assert_eq!(held_on_a, 0);
    // b removes it from its store before it tells its connections.
    assert_eq!(
        common::bounded(on_b_seen.recv()).await,
        Some(nodes::Seen::SessionClosed)
    );
    assert_eq!(store_b.len(), 0, "removed from b's own store");
    let (later, _seen) = nodes::subscriber(b.addr).await;
    assert_eq!(
        common::bounded(later.restore_session(&key)).await.err(),
        Some(tokio_webwire::RequestError::SessionNotFound)
    );
}

#[tokio::test]
async fn without_a_backplane_each_node_is_alone() {
    // The control: the same nodes with the default backplane see nothing of each other.
    let store = Arc::new(MemoryStore::default());
    let a = node(|b| b.session_store(store.clone())).await;
    let b = node(|b| b.session_store(store)).await;
    let (on_a, mut on_a_seen) = nodes::subscriber(a.addr).await;
    assert_eq!(nodes::ask(&on_a, "subscribe", "room").await, "true");
    // (0: b has no subscriber of its own; what matters is that a's got nothing.)
    assert_eq!(
        common::bounded(b.server.publish("room", "news", "x"))
            .await
            .unwrap(),
        0
    );
    nodes::nothing_more(&on_a, &mut on_a_seen).await;
}

#[tokio::test]
async fn what_another_node_sends_is_checked_before_it_reaches_a_client() {
    let bus = InProcess::default();
    // b may send larger signals than a accepts.
    let a = node(|b| b.backplane(bus.node()).max_message_size(1024)).await;
    let b = node(|b| b.backplane(bus.node()).max_message_size(64 * 1024)).await;
    let (on_a, mut on_a_seen) = nodes::subscriber(a.addr).await;
    assert_eq!(nodes::ask(&on_a, "subscribe", "room").await, "true");
    let room = Route::topic("room").unwrap();

    // Bytes that are no envelope: dropped and counted.
    let forger = bus.node();
    common::bounded(forger.send(&room, bytes::Bytes::from_static(b"garbage")))
        .await
        .unwrap();
    assert_eq!(a.server.backplane_refused(), 1);
    // A signal over a's limit: b's own subscribers could get it (it has none), a's do not.
    let big = "x".repeat(4096);
    common::bounded(b.server.publish("room", "news", big))
        .await
        .unwrap();
    nodes::nothing_more(&on_a, &mut on_a_seen).await;
    // What fits still flows.
    news_reaches(&b, "small", &mut on_a_seen).await;
}

/// `from` publishes `text` as news to the room, and `seen` (a subscriber's events) gets
/// it.
async fn news_reaches(from: &Node, text: &str, seen: &mut mpsc::UnboundedReceiver<nodes::Seen>) {
    common::bounded(from.server.publish("room", "news", text))
        .await
        .unwrap();
    assert_eq!(nodes::next_signal(seen).await, nodes::news(text));
}

/// Whoever can write to the backplane but has not the service's secret: an envelope of
/// another service (another secret), and a genuine one altered on the way (each byte the
/// tag covers), are refused and counted; nothing reaches a client.
#[tokio::test]
async fn forged_and_altered_envelopes_are_refused() {
    let bus = InProcess::default();
    let tap = bus.tap();
    let a = node(|b| b.backplane(bus.node())).await;
    let b = node(|b| b.backplane(bus.node())).await;
    let (on_a, mut on_a_seen) = nodes::subscriber(a.addr).await;
    assert_eq!(nodes::ask(&on_a, "subscribe", "room").await, "true");
    let room = Route::topic("room").unwrap();

    // Another service on the same bus: its publish reaches a, which refuses it.
    let other = common::probe::start(|builder| {
        builder
            .backplane(bus.node())
            .backplane_secret(b"another service's secret, 32 b.!")
    })
    .await;
    common::bounded(other.0.publish("room", "news", "forged"))
        .await
        .unwrap();
    assert_eq!(a.server.backplane_refused(), 1);

    // A genuine envelope, recorded by the tap, altered byte by byte.
    news_reaches(&b, "genuine", &mut on_a_seen).await;
    let (_, genuine) = tap
        .tapped()
        .into_iter()
        .rfind(|(route, _)| *route == room)
        .expect("b's publish");
    let forger = bus.node();
    let mut refused = 1;
    for at in (0..2).chain(18..genuine.len()) {
        let mut altered = genuine.to_vec();
        altered[at] ^= 0x20;
        common::bounded(forger.send(&room, bytes::Bytes::from(altered)))
            .await
            .unwrap();
        refused += 1;
        assert_eq!(a.server.backplane_refused(), refused, "byte {at} altered");
    }
    nodes::nothing_more(&on_a, &mut on_a_seen).await;
    // The genuine one, sent again as it was, is taken (a replay within the service is
    // not what the tag stops: `docs/backplane.md`).
    common::bounded(forger.send(&room, genuine)).await.unwrap();
    assert_eq!(
        nodes::next_signal(&mut on_a_seen).await,
        ("news".to_owned(), "genuine".to_owned())
    );
}

/// A node receives a topic's traffic only while one of its connections subscribes to
/// it, and a session's only while one of its connections holds it; no session key
/// crosses the backplane in clear.
#[tokio::test]
async fn traffic_goes_only_where_it_is_wanted_and_keys_stay_hidden() {
    let bus = InProcess::default();
    let tap = bus.tap();
    let (a_bus, b_bus) = (bus.node(), bus.node());
    let a = node(|b| b.backplane(a_bus.clone())).await;
    let b = node(|b| b.backplane(b_bus.clone())).await;
    let (on_a, mut on_a_seen) = nodes::subscriber(a.addr).await;
    assert_eq!(nodes::ask(&on_a, "subscribe", "room").await, "true");
    let room = Route::topic("room").unwrap();
    assert!(a_bus.joined(&room) && !b_bus.joined(&room));

    for i in 0..10 {
        common::bounded(b.server.publish("room", "news", format!("{i}")))
            .await
            .unwrap();
    }
    for i in 0..10 {
        assert_eq!(nodes::next_signal(&mut on_a_seen).await.1, format!("{i}"));
    }
    // a's own publishes do not reach b, which has no subscriber.
    let before = (a_bus.delivered(), b_bus.delivered());
    common::bounded(a.server.publish("room", "news", "here"))
        .await
        .unwrap();
    assert_eq!(nodes::next_signal(&mut on_a_seen).await.1, "here");
    assert_eq!(b_bus.delivered(), before.1, "b has no subscriber to room");

    // The last subscriber leaves: a leaves the route, and b's publishes reach nobody.
    assert_eq!(nodes::ask(&on_a, "unsubscribe", "room").await, "true");
    common::bounded(a.server.sync_backplane()).await;
    assert!(!a_bus.joined(&room));
    let before = a_bus.delivered();
    common::bounded(b.server.publish("room", "news", "nobody"))
        .await
        .unwrap();
    assert_eq!(a_bus.delivered(), before);

    // A session held on a: signals from b reach a only, by a route that is not the key.
    let key = nodes::login(&on_a, &mut on_a_seen).await;
    let before = b_bus.delivered();
    common::bounded(b.server.signal_session(&key, "hello", "you"))
        .await
        .unwrap();
    assert_eq!(
        nodes::next_signal(&mut on_a_seen).await,
        ("hello".to_owned(), "you".to_owned())
    );
    assert_eq!(
        b_bus.delivered(),
        before,
        "b holds no connection of the session"
    );
    // A revocation from b reaches a (on the service's route, the key encrypted).
    assert_eq!(
        common::bounded(b.server.close_session(&key)).await.unwrap(),
        0
    );
    assert_eq!(
        common::bounded(on_a_seen.recv()).await,
        Some(nodes::Seen::SessionClosed)
    );
    let tapped = tap.tapped();
    assert!(tapped.iter().any(|(route, _)| *route == Route::service()));
    for (route, message) in &tapped {
        assert!(!route.name().contains(&key));
        assert!(
            !message.windows(key.len()).any(|w| w == key.as_bytes()),
            "a key in clear on {route:?}"
        );
    }
}

/// A revocation a node missed while its link was down takes effect when the link comes
/// back: the node checks the sessions its connections hold against the shared store.
#[tokio::test]
async fn a_revocation_missed_during_an_outage_takes_effect_after_it() {
    let bus = InProcess::default();
    let store = Arc::new(MemoryStore::default());
    let b_bus = bus.node();
    let a = node(|b| b.backplane(bus.node()).session_store(store.clone())).await;
    let b = node(|b| b.backplane(b_bus.clone()).session_store(store)).await;
    let (on_b, mut on_b_seen) = nodes::subscriber(b.addr).await;
    let key = nodes::login(&on_b, &mut on_b_seen).await;

    b_bus.set_down(true);
    assert_eq!(
        common::bounded(a.server.close_session(&key)).await.unwrap(),
        0
    );
    // b missed it: its client still holds the session.
    assert_eq!(
        nodes::ask(&on_b, "notify", "still here").await,
        "still here"
    );
    assert!(on_b.session().is_some());
    assert_eq!(b.server.active_sessions(), 1);

    b_bus.set_down(false);
    loop {
        match common::bounded(on_b_seen.recv()).await {
            Some(nodes::Seen::SessionClosed) => break,
            Some(nodes::Seen::Signal(..)) => continue, // the notify above
            other => panic!("expected the session's end, got {other:?}"),
        }
    }
    assert_eq!(b.server.active_sessions(), 0);
}

/// A backplane that is down: every send fails.
struct Down;

impl tokio_webwire::backplane::Backplane for Down {
    async fn send(
        &self,
        _: &Route,
        _: bytes::Bytes,
    ) -> Result<(), tokio_webwire::backplane::BackplaneError> {
        Err(tokio_webwire::backplane::BackplaneError::new("down"))
    }
    fn attach(&self, _: tokio_webwire::backplane::Inbox) {}
}

#[tokio::test]
async fn a_revocation_the_backplane_cannot_carry_is_still_done_here() {
    let a = node(|b| b.backplane(Down)).await;
    let (on_a, mut on_a_seen) = nodes::subscriber(a.addr).await;
    let key = nodes::login(&on_a, &mut on_a_seen).await;
    match a.server.close_session(&key).await {
        Err(tokio_webwire::SessionError::Backplane { held, .. }) => assert_eq!(held, 1),
        other => panic!("expected a backplane error, got {other:?}"),
    }
    assert_eq!(
        common::bounded(on_a_seen.recv()).await,
        Some(nodes::Seen::SessionClosed)
    );
    assert!(on_a.session().is_none());
    // A publish is delivered here all the same, and says the others missed it.
    assert_eq!(nodes::ask(&on_a, "subscribe", "room").await, "true");
    match a.server.publish("room", "news", "x").await {
        Err(tokio_webwire::server::TopicError::Backplane { delivered, .. }) => {
            assert_eq!(delivered, 1)
        }
        other => panic!("expected a backplane error, got {other:?}"),
    }
}

/// A backplane whose joins of topic routes wait until the test lets them through.
struct Gated {
    inner: nodes::InProcessNode,
    gate: Arc<tokio::sync::Semaphore>,
    asked: Arc<tokio::sync::Notify>,
}

impl Backplane for Gated {
    async fn send(
        &self,
        route: &Route,
        message: bytes::Bytes,
    ) -> Result<(), tokio_webwire::backplane::BackplaneError> {
        self.inner.send(route, message).await
    }
    fn attach(&self, inbox: tokio_webwire::backplane::Inbox) {
        self.inner.attach(inbox);
    }
    async fn join(&self, route: &Route) -> Result<(), tokio_webwire::backplane::BackplaneError> {
        if *route == Route::topic("room").expect("a topic") {
            self.asked.notify_one();
            let _permit = self.gate.acquire().await;
        }
        self.inner.join(route).await
    }
    async fn leave(&self, route: &Route) -> Result<(), tokio_webwire::backplane::BackplaneError> {
        self.inner.leave(route).await
    }
}

/// Joins `room` when a session is created.
struct JoinOnLogin;

impl Handler for JoinOnLogin {
    async fn request(&self, conn: &Connection, name: Name, _: Payload) -> HandlerResult {
        if name.as_str() == "ping" {
            return Ok(Payload::utf8("pong"));
        }
        conn.create_session(tokio_webwire::SessionInfo::new())
            .await?;
        Ok(Payload::utf8("in"))
    }

    async fn session_created(&self, conn: &Connection, _: &Session) {
        let _ = conn.subscribe("room");
    }
}

/// A login whose `session_created` hook subscribes is answered only once the backplane
/// carries the topic to this node: what another node publishes after the answer arrives.
#[tokio::test]
async fn a_login_is_answered_once_the_hook_subscriptions_reach_the_backplane() {
    let bus = InProcess::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let asked = Arc::new(tokio::sync::Notify::new());
    let server = tokio_webwire::server::Server::builder(JoinOnLogin)
        .backplane(Gated {
            inner: bus.node(),
            gate: Arc::clone(&gate),
            asked: Arc::clone(&asked),
        })
        .backplane_secret(nodes::SECRET)
        .build()
        .expect("valid options");
    let addr = common::listen(&server).await;
    let client = common::bounded(tokio_webwire::Client::connect(format!("ws://{addr}/")))
        .await
        .expect("connects");
    let mut login = Box::pin(client.request("login", ""));
    // The hook subscribed and the node asked to join; the join is held.
    tokio::select! {
        reply = &mut login => panic!("answered before the join: {reply:?}"),
        () = common::bounded(asked.notified()) => {}
    }
    // A request read after that is answered after anything queued before it: a login
    // answered without waiting would have arrived by now.
    let pong = common::bounded(client.request("ping", ""))
        .await
        .expect("a pong");
    assert_eq!(pong.to_text().expect("text"), "pong");
    assert!(
        futures_util::poll!(&mut login).is_pending(),
        "the login was answered while the node had not joined the room"
    );
    gate.add_permits(1);
    let reply = common::bounded(login).await.expect("logged in");
    assert_eq!(reply.to_text().expect("text"), "in");
}
