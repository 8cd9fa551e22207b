//! The scenarios of `tests/common/nodes.rs` over NATS: two servers, each with its own
//! `NatsBackplane` on one real nats-server (tests/common/nats.rs; skipped without the
//! binary unless `CI` is set), as two processes behind a load balancer would have, and
//! one session store (NATS holds no sessions: in production a `RedisStore`).

mod common;

use std::sync::Arc;

use common::nats::NatsServer;
use common::nodes::{Node, nats_node};
use tokio_webwire::session::MemoryStore;

/// Two nodes on a fresh nats-server, or `None` (skip) without one.
async fn two_nodes() -> Option<(NatsServer, Node, Node)> {
    let nats = NatsServer::start().await?;
    let store = Arc::new(MemoryStore::default());
    let (a, _) = nats_node(&nats, "a", Arc::clone(&store)).await;
    let (b, _) = nats_node(&nats, "b", store).await;
    Some((nats, a, b))
}

nodes_scenarios!(two_nodes);
