//! The scenarios of `tests/nodes.rs` over Redis: two servers, each with its own
//! `RedisStore` and `RedisBackplane` on one real redis-server (tests/common/redis.rs;
//! skipped without the binary unless `CI` is set), as two processes behind a load balancer
//! would have.

mod common;

use common::nodes::{Node, redis_node};
use common::redis::RedisServer;

/// Two nodes on a fresh redis-server, or `None` (skip) without one.
async fn two_nodes() -> Option<(RedisServer, Node, Node)> {
    let redis = RedisServer::start().await?;
    let a = redis_node(&redis).await;
    let b = redis_node(&redis).await;
    Some((redis, a, b))
}

nodes_scenarios!(two_nodes);
