//! What a subscriber connection of the backplane needs, one subscriber or one per shard
//! (`backplane.rs`, `sharded.rs`): the channel of a route, how often an idle subscription
//! is checked, the waits between attempts, and the limits on one attempt.

use std::time::Duration;

use crate::backplane::{Route, RouteKind};

/// The first wait before subscribing again after the subscription was lost; it doubles
/// with each failed attempt up to [`MAX_BACKOFF`].
pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between two attempts to subscribe again: a node is deaf to the others
/// for at most this long after Redis is back.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long one attempt to connect and subscribe may take.
pub(super) const SUBSCRIBE_LIMIT: Duration = Duration::from_secs(5);

/// How often an idle subscription is checked with a PING, and how long the answer may
/// take: a connection that died without a word (a peer gone, a network partition) would
/// otherwise look like a quiet channel forever.
pub(crate) const HEALTH_INTERVAL: Duration = Duration::from_secs(30);
pub(crate) const HEALTH_LIMIT: Duration = Duration::from_secs(5);

/// The channel of `route` under `prefix`: `<prefix>t:{<topic>}`, `<prefix>s:{<route>}`,
/// `<prefix>all`. The braces are Redis Cluster's hash tag: a topic's channel and its
/// history's keys (`<history prefix>{<topic>}:s`) share a slot.
pub(crate) fn channel_of(prefix: &str, route: &Route) -> String {
    match route.kind() {
        RouteKind::Topic => format!("{prefix}t:{{{}}}", route.name()),
        RouteKind::Session => format!("{prefix}s:{{{}}}", route.name()),
        _ => format!("{prefix}all"),
    }
}

/// How often an idle subscription is checked, and how long an answer may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct Health {
    pub(super) interval: Duration,
    pub(super) limit: Duration,
}

/// `command` within [`SUBSCRIBE_LIMIT`].
pub(super) async fn limited(
    command: impl std::future::Future<Output = Result<(), redis::RedisError>>,
) -> Result<(), redis::RedisError> {
    within(SUBSCRIBE_LIMIT, command).await
}

/// `command`, failed with a timeout if it takes longer than `limit`.
pub(super) async fn within(
    limit: Duration,
    command: impl std::future::Future<Output = Result<(), redis::RedisError>>,
) -> Result<(), redis::RedisError> {
    tokio::time::timeout(limit, command)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "subscribing timed out",
            )))
        })
}
