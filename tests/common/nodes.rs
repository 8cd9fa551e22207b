//! Several servers of one service: subscribers that record their signals, a backplane
//! inside the test process, and the scenarios every backplane must pass (run with this
//! one in `tests/nodes.rs`, with Redis in the `redis` feature's tests).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_webwire::backplane::{Backplane, BackplaneError, Inbox, Route};
use tokio_webwire::client::{ClientHandler, Reconnect};
use tokio_webwire::protocol::Name;
use tokio_webwire::server::{Server, ServerBuilder};
use tokio_webwire::{Client, Payload, RequestError, Session};

use super::bounded;
use super::probe::{Events, Probe, start};

/// What a client saw: a signal's name and text, or a session event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Signal(String, String),
    SessionCreated(String),
    SessionClosed,
}

/// Hands every signal and session event to a channel.
pub struct Recorder(pub mpsc::UnboundedSender<Seen>);

impl ClientHandler for Recorder {
    async fn signal(&self, _client: &Client, name: Name, payload: Payload) {
        let text = payload.to_text().unwrap_or_default();
        let _ = self.0.send(Seen::Signal(name.as_str().to_owned(), text));
    }
    async fn session_created(&self, _client: &Client, session: &Session) {
        let _ = self.0.send(Seen::SessionCreated(session.key.clone()));
    }
    async fn session_closed(&self, _client: &Client) {
        let _ = self.0.send(Seen::SessionClosed);
    }
}

/// A client of `addr` (no reconnection) whose signals and session events are recorded.
pub async fn subscriber(addr: SocketAddr) -> (Client, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = super::client_with(addr, Reconnect::Off, Recorder(tx)).await;
    (client, rx)
}

/// The text reply of a request to the probe handler.
pub async fn ask(client: &Client, name: &'static str, payload: &str) -> String {
    let reply = bounded(client.request(name, payload.to_owned()))
        .await
        .expect("a reply");
    reply.to_text().expect("text")
}

/// The next signal's name and text.
pub async fn next_signal(seen: &mut mpsc::UnboundedReceiver<Seen>) -> (String, String) {
    loop {
        match bounded(seen.recv()).await.expect("an event") {
            Seen::Signal(name, text) => return (name, text),
            _ => continue,
        }
    }
}

/// Proves `client` got nothing more than what was read: a signal it asks for now is the
/// next thing it sees.
pub async fn nothing_more(client: &Client, seen: &mut mpsc::UnboundedReceiver<Seen>) {
    assert_eq!(ask(client, "notify", "sentinel").await, "sentinel");
    assert_eq!(
        bounded(seen.recv()).await,
        Some(Seen::Signal("news".into(), "sentinel".into()))
    );
}

/// The service's secret in these tests.
pub const SECRET: &[u8] = b"the nodes' shared secret, 32 b.!";

/// Publishes signals named `name` to `topic` on `from` until `seen` gets one: the link
/// between them may still be coming back. Each attempt waits a little for the delivery;
/// all are bounded. (`name` tells these apart from the retries of another node that
/// `seen` may hold.)
pub async fn publish_until_delivered(
    from: &Node,
    topic: &str,
    name: &'static str,
    seen: &mut mpsc::UnboundedReceiver<Seen>,
) {
    bounded(async {
        for attempt in 0.. {
            let _ = from.server.publish(topic, name, format!("{attempt}")).await;
            let deadline = tokio::time::Instant::now() + Duration::from_millis(250);
            while let Ok(Some(seen)) = tokio::time::timeout_at(deadline, seen.recv()).await {
                if matches!(seen, Seen::Signal(got, _) if got == name) {
                    return;
                }
            }
        }
    })
    .await;
}

/// Nodes in one process, routed as Redis routes them: each node's backplane
/// ([`InProcess::node`]) joins and leaves routes, and a message goes to the nodes that
/// joined its route (the sender too, if it did: it ignores its own).
#[derive(Default, Clone)]
pub struct InProcess(Arc<Mutex<Vec<Member>>>);

#[derive(Default)]
struct Member {
    inbox: Option<Inbox>,
    routes: std::collections::HashMap<Route, usize>,
    delivered: usize,
    /// A tap: gets a copy of every message, whatever its route.
    tap: Option<Vec<(Route, Bytes)>>,
    /// Its link is down: what is sent to it is lost.
    down: bool,
}

/// One node's end of an [`InProcess`] bus.
#[derive(Clone)]
pub struct InProcessNode {
    bus: InProcess,
    id: usize,
}

impl InProcess {
    /// A new node's backplane on this bus.
    pub fn node(&self) -> InProcessNode {
        let mut members = self.0.lock().expect("not poisoned");
        members.push(Member::default());
        InProcessNode {
            bus: self.clone(),
            id: members.len() - 1,
        }
    }

    /// A node that records every message on the bus (whoever can read the backplane).
    pub fn tap(&self) -> InProcessNode {
        let node = self.node();
        self.0.lock().expect("not poisoned")[node.id].tap = Some(Vec::new());
        node
    }
}

impl InProcessNode {
    /// How many messages the bus has handed to this node.
    pub fn delivered(&self) -> usize {
        self.bus.0.lock().expect("not poisoned")[self.id].delivered
    }

    /// What a [tap](InProcess::tap) recorded.
    pub fn tapped(&self) -> Vec<(Route, Bytes)> {
        self.bus.0.lock().expect("not poisoned")[self.id]
            .tap
            .clone()
            .unwrap_or_default()
    }

    /// Takes this node's link down (what is sent to it is lost) or brings it back (then
    /// its server is told, [`Inbox::reconnected`]).
    pub fn set_down(&self, down: bool) {
        let inbox = {
            let mut members = self.bus.0.lock().expect("not poisoned");
            members[self.id].down = down;
            members[self.id].inbox.clone()
        };
        if let (false, Some(inbox)) = (down, inbox) {
            inbox.reconnected();
        }
    }

    /// Whether this node has joined `route`.
    pub fn joined(&self, route: &Route) -> bool {
        self.bus.0.lock().expect("not poisoned")[self.id]
            .routes
            .contains_key(route)
    }
}

impl Backplane for InProcessNode {
    async fn send(&self, route: &Route, message: Bytes) -> Result<(), BackplaneError> {
        let inboxes: Vec<Inbox> = {
            let mut members = self.bus.0.lock().expect("not poisoned");
            for member in members.iter_mut() {
                if let Some(tap) = &mut member.tap {
                    tap.push((route.clone(), message.clone()));
                }
            }
            members
                .iter_mut()
                .filter(|member| member.routes.contains_key(route) && !member.down)
                .filter_map(|member| {
                    member.delivered += 1;
                    member.inbox.clone()
                })
                .collect()
        };
        for inbox in inboxes {
            inbox.deliver(message.clone());
        }
        Ok(())
    }

    fn attach(&self, inbox: Inbox) {
        self.bus.0.lock().expect("not poisoned")[self.id].inbox = Some(inbox);
    }

    async fn join(&self, route: &Route) -> Result<(), BackplaneError> {
        let mut members = self.bus.0.lock().expect("not poisoned");
        *members[self.id].routes.entry(route.clone()).or_insert(0) += 1;
        Ok(())
    }

    async fn leave(&self, route: &Route) -> Result<(), BackplaneError> {
        let mut members = self.bus.0.lock().expect("not poisoned");
        let routes = &mut members[self.id].routes;
        if let Some(count) = routes.get_mut(route) {
            *count -= 1;
            if *count == 0 {
                routes.remove(route);
            }
        }
        Ok(())
    }
}

/// One server of the service.
pub struct Node {
    pub server: Server<Arc<Probe>>,
    pub events: Events,
    pub addr: SocketAddr,
}

/// A probe server configured by `configure` (the shared backplane and store), with the
/// service's [`SECRET`].
pub async fn node(
    configure: impl FnOnce(ServerBuilder<Arc<Probe>>) -> ServerBuilder<Arc<Probe>>,
) -> Node {
    let (server, events, addr) = start(|b| configure(b.backplane_secret(SECRET))).await;
    Node {
        server,
        events,
        addr,
    }
}

/// A publish on one node reaches the subscribers of every node, each exactly once; and a
/// handler's publish on the other node too.
pub async fn a_publish_reaches_every_node_once(a: &Node, b: &Node) {
    let (on_a, mut on_a_seen) = subscriber(a.addr).await;
    let (on_b, mut on_b_seen) = subscriber(b.addr).await;
    let (other_on_b, mut other_seen) = subscriber(b.addr).await;
    assert_eq!(ask(&on_a, "subscribe", "room").await, "true");
    assert_eq!(ask(&on_b, "subscribe", "room").await, "true");

    let here = bounded(b.server.publish("room", "news", "from b"))
        .await
        .expect("published");
    assert_eq!(here, 1, "one subscriber on b itself");
    assert_eq!(ask(&on_a, "publish", "room|from a").await, "1");
    for seen in [&mut on_a_seen, &mut on_b_seen] {
        let mut got = vec![next_signal(seen).await, next_signal(seen).await];
        got.sort();
        assert_eq!(
            got,
            [
                ("news".to_owned(), "from a".to_owned()),
                ("news".to_owned(), "from b".to_owned())
            ]
        );
    }
    // Nothing twice: a sentinel from each node follows, and each subscriber's next two
    // signals are the sentinels. The one from the other node travels the backplane
    // behind anything that node sent before it (one connection keeps its order), so a
    // late duplicate would come first.
    for (node, text) in [(a, "sentinel a"), (b, "sentinel b")] {
        bounded(node.server.publish("room", "news", text))
            .await
            .expect("published");
    }
    for seen in [&mut on_a_seen, &mut on_b_seen] {
        let mut got = vec![next_signal(seen).await, next_signal(seen).await];
        got.sort();
        assert_eq!(got, [news("sentinel a"), news("sentinel b")]);
    }
    nothing_more(&other_on_b, &mut other_seen).await;
}

/// A news signal with `text`.
pub fn news(text: &str) -> (String, String) {
    ("news".to_owned(), text.to_owned())
}

/// Every signal `seen` gets up to and including `last`, retries left out.
pub async fn signals_until(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    last: &str,
) -> Vec<(String, String)> {
    let mut signals = Vec::new();
    while signals.last() != Some(&news(last)) {
        let signal = next_signal(seen).await;
        if !signal.0.starts_with("retry") {
            signals.push(signal);
        }
    }
    signals
}

/// After the link between `a` and `b` went away and came back (each with a subscriber to
/// `room`, whose signals `on_a_seen` and `on_b_seen` get): both directions come back
/// (b's sending and a's receiving, then a's sending and b's receiving), and then a
/// publish from each reaches both subscribers once.
pub async fn flowing_again(
    a: &Node,
    b: &Node,
    on_a_seen: &mut mpsc::UnboundedReceiver<Seen>,
    on_b_seen: &mut mpsc::UnboundedReceiver<Seen>,
) {
    publish_until_delivered(b, "room", "retry-b", on_a_seen).await;
    publish_until_delivered(a, "room", "retry-a", on_b_seen).await;
    for (from, text) in [(a, "after a"), (b, "after b")] {
        bounded(from.server.publish("room", "news", text))
            .await
            .expect("published");
        for seen in [&mut *on_a_seen, &mut *on_b_seen] {
            assert_eq!(signals_until(seen, text).await, [news(text)]);
        }
    }
}

/// Logs `client` in; returns its session key.
pub async fn login(client: &Client, seen: &mut mpsc::UnboundedReceiver<Seen>) -> String {
    let key = ask(client, "login", "alice").await;
    assert_eq!(
        bounded(seen.recv()).await,
        Some(Seen::SessionCreated(key.clone()))
    );
    key
}

/// A client subscribed to `node`, and what it sees.
type Subscriber = (Client, mpsc::UnboundedReceiver<Seen>);

/// A client on `a` logs in, and a client on `b` restores its session (the store is
/// shared): returns the session's key and both clients.
async fn logged_in_on_both(a: &Node, b: &Node) -> (String, Subscriber, Subscriber) {
    let (on_a, mut on_a_seen) = subscriber(a.addr).await;
    let key = login(&on_a, &mut on_a_seen).await;
    let (on_b, mut on_b_seen) = subscriber(b.addr).await;
    bounded(on_b.restore_session(&key))
        .await
        .expect("restored on the other node (shared store)");
    assert_eq!(
        bounded(on_b_seen.recv()).await,
        Some(Seen::SessionCreated(key.clone()))
    );
    (key, (on_a, on_a_seen), (on_b, on_b_seen))
}

/// A session signal on one node reaches the session's connections on every node; a
/// revocation on one node logs the session out everywhere, and no node restores it.
pub async fn a_session_is_signalled_and_revoked_everywhere(a: &Node, b: &mut Node) {
    let (key, (on_a, mut on_a_seen), (on_b, mut on_b_seen)) = logged_in_on_both(a, b).await;

    assert_eq!(
        bounded(a.server.signal_session(&key, "news", "to alice"))
            .await
            .expect("signalled"),
        1
    );
    for seen in [&mut on_a_seen, &mut on_b_seen] {
        assert_eq!(
            next_signal(seen).await,
            ("news".to_owned(), "to alice".to_owned())
        );
    }

    assert_eq!(
        bounded(a.server.close_session(&key))
            .await
            .expect("revoked"),
        1,
        "one holder on a itself"
    );
    for seen in [&mut on_a_seen, &mut on_b_seen] {
        assert_eq!(bounded(seen.recv()).await, Some(Seen::SessionClosed));
    }
    // b's hooks heard of it: b's connection left it, and held it.
    let (_, left) = bounded(b.events.left.recv()).await.expect("left on b");
    assert_eq!(left, key);
    loop {
        let event = bounded(b.events.session_events.recv())
            .await
            .expect("event");
        if event == format!("revoked {key}") {
            break;
        }
    }
    assert!(on_b.session().is_none());
    assert_eq!(b.server.active_sessions(), 0);
    for client in [&on_a, &on_b] {
        assert_eq!(
            bounded(client.restore_session(&key)).await.err(),
            Some(RequestError::SessionNotFound)
        );
    }
}

/// The last connection holding a session on one node logs out: the session is gone
/// from the shared store, so the connections holding it on the other nodes lose it too,
/// at once and told, rather than at their next restore.
pub async fn a_logout_ends_the_session_on_every_node(a: &Node, b: &mut Node) {
    let (key, (on_a, _on_a_seen), (on_b, mut on_b_seen)) = logged_in_on_both(a, b).await;

    bounded(on_a.close_session())
        .await
        .expect("logged out on a");
    assert_eq!(
        bounded(on_b_seen.recv()).await,
        Some(Seen::SessionClosed),
        "the holder on b is told"
    );
    let (_, left) = bounded(b.events.left.recv()).await.expect("left on b");
    assert_eq!(left, key);
    assert!(on_b.session().is_none());
    assert_eq!(b.server.active_sessions(), 0);
}

/// A client logged in on one node restores its session on another after the first one
/// shut down.
pub async fn a_session_outlives_its_node(a: &Node, b: &Node) {
    let (on_a, mut on_a_seen) = subscriber(a.addr).await;
    let key = login(&on_a, &mut on_a_seen).await;
    bounded(a.server.shutdown()).await;
    let (on_b, _seen) = subscriber(b.addr).await;
    let session = bounded(on_b.restore_session(&key))
        .await
        .expect("restored on b");
    assert_eq!(
        session.info.get::<String>("user").unwrap().as_deref(),
        Some("alice")
    );
}

/// The four scenarios above as the `#[tokio::test]` functions of one backend, named as the
/// scenarios are: `$two_nodes` is an `async fn() -> Option<(K, Node, Node)>` (`K`, the
/// backend's servers, kept until the scenario is over; `None` skips, without the binary).
/// Used as `nodes_scenarios!(two_nodes);` at the top level of a test file (exported, the
/// macro stands at the crate root).
#[macro_export]
macro_rules! nodes_scenarios {
    ($two_nodes:ident) => {
        #[tokio::test]
        async fn a_publish_reaches_every_node_once() {
            let Some((_servers, a, b)) = $two_nodes().await else {
                return;
            };
            $crate::common::nodes::a_publish_reaches_every_node_once(&a, &b).await;
        }

        #[tokio::test]
        async fn a_session_is_signalled_and_revoked_everywhere() {
            let Some((_servers, a, mut b)) = $two_nodes().await else {
                return;
            };
            $crate::common::nodes::a_session_is_signalled_and_revoked_everywhere(&a, &mut b).await;
        }

        #[tokio::test]
        async fn a_logout_ends_the_session_on_every_node() {
            let Some((_servers, a, mut b)) = $two_nodes().await else {
                return;
            };
            $crate::common::nodes::a_logout_ends_the_session_on_every_node(&a, &mut b).await;
        }

        #[tokio::test]
        async fn a_session_outlives_its_node() {
            let Some((_servers, a, b)) = $two_nodes().await else {
                return;
            };
            $crate::common::nodes::a_session_outlives_its_node(&a, &b).await;
        }
    };
}

/// A node of the service on `redis`: a probe server with a `RedisStore` and a
/// `RedisBackplane` of its own, as a process behind a load balancer would have.
#[cfg(feature = "redis")]
pub async fn redis_node(redis: &super::redis::RedisServer) -> Node {
    let backplane = bounded(tokio_webwire::redis::RedisBackplane::connect(&redis.url()))
        .await
        .expect("the backplane connects");
    redis_node_with(redis, backplane).await
}

/// [`redis_node`], with a backplane the test made (through a proxy, with other options).
#[cfg(feature = "redis")]
pub async fn redis_node_with(
    redis: &super::redis::RedisServer,
    backplane: impl tokio_webwire::backplane::Backplane,
) -> Node {
    let store = bounded(tokio_webwire::redis::RedisStore::connect(&redis.url()))
        .await
        .expect("the store connects");
    node(|b| b.session_store(store).backplane(backplane)).await
}

/// A node of the service on `nats`: a probe server with a `NatsBackplane` of its own (its
/// connection named `name`, as `nats.connection(name)` finds it) and `store`, shared by
/// the nodes of the test (NATS holds no sessions); the backplane is returned too, to read
/// what it received.
#[cfg(feature = "nats")]
pub async fn nats_node(
    nats: &super::nats::NatsServer,
    name: &str,
    store: Arc<tokio_webwire::session::MemoryStore>,
) -> (Node, tokio_webwire::nats::NatsBackplane) {
    use tokio_webwire::nats::{NatsBackplane, async_nats::ConnectOptions};
    let backplane = bounded(
        NatsBackplane::builder()
            .options(ConnectOptions::new().name(name))
            .connect(&nats.url()),
    )
    .await
    .expect("the backplane connects");
    let node = node(|b| b.session_store(store).backplane(backplane.clone())).await;
    (node, backplane)
}

/// A node of the service on the Redis Cluster `cluster`: a probe server with a
/// `RedisStore` and a `RedisBackplane` of its own on the cluster, as a process behind a
/// load balancer would have.
#[cfg(feature = "redis")]
pub async fn redis_cluster_node(cluster: &super::redis_cluster::RedisCluster) -> Node {
    use tokio_webwire::redis::{RedisBackplane, RedisStore};
    let store = bounded(RedisStore::connect_cluster(cluster.urls()))
        .await
        .expect("the store connects");
    let backplane = bounded(RedisBackplane::builder().connect_cluster(cluster.urls()))
        .await
        .expect("the backplane connects");
    node(|b| b.session_store(store).backplane(backplane)).await
}
