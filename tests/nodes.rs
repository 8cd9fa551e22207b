//! Several servers of one service sharing a session store and a backplane (one inside the
//! test process): publishes, session signals and revocations reach every node; sessions
//! outlive their node. The same scenarios run over Redis in `tests/redis_nodes.rs`.

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
async fn a_session_outlives_its_node() {
    let (a, b) = two_nodes().await;
    nodes::a_session_outlives_its_node(&a, &b).await;
}

#[tokio::test]
async fn without_a_backplane_each_node_is_alone() {
    // The control: the same nodes with the default backplane see nothing of each other.
    let store = Arc::new(MemoryStore::default());
    let a = node(|b| b.session_store(store.clone())).await;
    let b = node(|b| b.session_store(store)).await;
    let (on_a, mut on_a_seen) = nodes::subscriber(a.addr).await;
    assert_eq!(nodes::ask(&on_a, "subscribe", "room").await, "true");
    assert_eq!(b.server.publish("room", "news", "x").await.unwrap(), 0);
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
    backplane
        .send(bytes::Bytes::from_static(b"garbage"))
        .await
        .unwrap();
    // A signal over a's limit: b's own subscribers could get it, a's do not.
    let big = "x".repeat(4096);
    assert_eq!(b.server.publish("room", "news", big).await.unwrap(), 0);
    nodes::nothing_more(&on_a, &mut on_a_seen).await;
    // What fits still flows.
    b.server.publish("room", "news", "small").await.unwrap();
    assert_eq!(
        nodes::next_signal(&mut on_a_seen).await,
        ("news".to_owned(), "small".to_owned())
    );
}
