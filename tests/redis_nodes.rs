//! The scenarios of `tests/nodes.rs` over Redis: two servers, each with its own
//! `RedisStore` and `RedisBackplane` on one real redis-server (tests/common/redis.rs;
//! skipped without the binary unless `CI` is set), as two processes behind a load balancer
//! would have.

mod common;

use common::nodes::{self, Node, redis_node};
use common::redis::RedisServer;

/// Two nodes on a fresh redis-server, or `None` (skip) without one.
async fn two_nodes() -> Option<(RedisServer, Node, Node)> {
    let redis = RedisServer::start().await?;
    let a = redis_node(&redis).await;
    let b = redis_node(&redis).await;
    Some((redis, a, b))
}

#[tokio::test]
async fn a_publish_reaches_every_node_once() {
    let Some((_redis, a, b)) = two_nodes().await else {
        return;
    };
    nodes::a_publish_reaches_every_node_once(&a, &b).await;
}

#[tokio::test]
async fn a_session_is_signalled_and_revoked_everywhere() {
    let Some((_redis, a, mut b)) = two_nodes().await else {
        return;
    };
    nodes::a_session_is_signalled_and_revoked_everywhere(&a, &mut b).await;
}

#[tokio::test]
async fn a_logout_ends_the_session_on_every_node() {
    let Some((_redis, a, mut b)) = two_nodes().await else {
        return;
    };
    nodes::a_logout_ends_the_session_on_every_node(&a, &mut b).await;
}

#[tokio::test]
async fn a_session_outlives_its_node() {
    let Some((_redis, a, b)) = two_nodes().await else {
        return;
    };
    nodes::a_session_outlives_its_node(&a, &b).await;
}
