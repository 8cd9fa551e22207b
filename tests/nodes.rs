//! Several servers of one service sharing a session store and a backplane (one inside the
//! test process): publishes, session signals and revocations reach every node; sessions
//! outlive their node; a store per node still loses a revoked session. The same scenarios
//! run over Redis in `tests/redis_nodes.rs`.

mod common;

use std::sync::Arc;

use common::nodes::{self, InProcess, Node, node};
use tokio_webwire::session::MemoryStore;

/// Two nodes sharing a fresh backplane and store.
async fn two_nodes() -> (Node, Node) {
    let backplane = InProcess::default();
    let store = Arc::new(MemoryStore::default());
    let a = node(|b| b.backplane(backplane.clone()).session_store(store.clone())).await;
    let b = node(|b| b.backplane(backplane).session_store(store)).await;
    (a, b)
}

#[tokio::test]
async fn a_publish_reaches_every_node_once() {
    let (a, b) = two_nodes().await;
    nodes::a_publish_reaches_every_node_once(&a, &b).await;
}

#[tokio::test]
async fn a_session_is_signalled_and_revoked_everywhere() {
    let (a, mut b) = two_nodes().await;
    nodes::a_session_is_signalled_and_revoked_everywhere(&a, &mut b).await;
}

#[tokio::test]
async fn a_logout_ends_the_session_on_every_node() {
    let (a, mut b) = two_nodes().await;
    nodes::a_logout_ends_the_session_on_every_node(&a, &mut b).await;
}

#[tokio::test]
async fn a_session_outlives_its_node() {
    let (a, b) = two_nodes().await;
    nodes::a_session_outlives_its_node(&a, &b).await;
}

/// Each node with a store of its own (a `MemoryStore` per process) on a shared backplane:
/// a revocation on a node that never stored the session (a load balancer sent the call
/// there) removes it from the store of the node that did, so no node restores it.
#[tokio::test]
async fn a_revocation_reaches_the_store_of_every_node() {
    let backplane = InProcess::default();
    let store_b = Arc::new(MemoryStore::default());
    let a = node(|b| b.backplane(backplane.clone())).await;
    let b = node(|b| b.backplane(backplane).session_store(store_b.clone())).await;
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
    use tokio_webwire::backplane::Backplane;
    let backplane = InProcess::default();
    // b may send larger signals than a accepts.
    let a = node(|b| b.backplane(backplane.clone()).max_message_size(1024)).await;
    let b = node(|b| b.backplane(backplane.clone()).max_message_size(64 * 1024)).await;
    let (on_a, mut on_a_seen) = nodes::subscriber(a.addr).await;
    assert_eq!(nodes::ask(&on_a, "subscribe", "room").await, "true");

    // Bytes that are no envelope: dropped.
    common::bounded(backplane.send(bytes::Bytes::from_static(b"garbage")))
        .await
        .unwrap();
    // A signal over a's limit: b's own subscribers could get it (it has none), a's do not.
    let big = "x".repeat(4096);
    common::bounded(b.server.publish("room", "news", big))
        .await
        .unwrap();
    nodes::nothing_more(&on_a, &mut on_a_seen).await;
    // What fits still flows.
    common::bounded(b.server.publish("room", "news", "small"))
        .await
        .unwrap();
    assert_eq!(
        nodes::next_signal(&mut on_a_seen).await,
        ("news".to_owned(), "small".to_owned())
    );
}

/// A backplane that is down: every send fails.
struct Down;

impl tokio_webwire::backplane::Backplane for Down {
    async fn send(&self, _: bytes::Bytes) -> Result<(), tokio_webwire::backplane::BackplaneError> {
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
