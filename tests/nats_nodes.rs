//! The scenarios of `tests/common/nodes.rs` over NATS: two servers, each with its own
//! `NatsBackplane` on one real nats-server (tests/common/nats.rs; skipped without the
//! binary unless `CI` is set), as two processes behind a load balancer would have, and
//! one session store (NATS holds no sessions: in production a `RedisStore`).

mod common;

use std::sync::Arc;

use common::nats::NatsServer;
use common::nodes::{self, Node, nats_node};
use tokio_webwire::session::MemoryStore;

/// Two nodes on a fresh nats-server, or `None` (skip) without one.
async fn two_nodes() -> Option<(NatsServer, Node, Node)> {
    let nats = NatsServer::start().await?;
    let store = Arc::new(MemoryStore::default());
    let (a, _) = nats_node(&nats, "a", Arc::clone(&store)).await;
    let (b, _) = nats_node(&nats, "b", store).await;
    Some((nats, a, b))
}

#[tokio::test]
async fn a_publish_reaches_every_node_once() {
    let Some((_nats, a, b)) = two_nodes().await else {
        return;
    };
    nodes::a_publish_reaches_every_node_once(&a, &b).await;
}

#[tokio::test]
async fn a_session_is_signalled_and_revoked_everywhere() {
    let Some((_nats, a, mut b)) = two_nodes().await else {
        return;
    };
    nodes::a_session_is_signalled_and_revoked_everywhere(&a, &mut b).await;
}

#[tokio::test]
async fn a_logout_ends_the_session_on_every_node() {
    let Some((_nats, a, mut b)) = two_nodes().await else {
        return;
    };
    nodes::a_logout_ends_the_session_on_every_node(&a, &mut b).await;
}

#[tokio::test]
async fn a_session_outlives_its_node() {
    let Some((_nats, a, b)) = two_nodes().await else {
        return;
    };
    nodes::a_session_outlives_its_node(&a, &b).await;
}
