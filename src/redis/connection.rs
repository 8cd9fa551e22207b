//! [`Connection`]: where the store's commands, the history scripts and the backplane's
//! publishes go: one Redis, or a Redis Cluster.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use super::RedisConnectError;

/// A multiplexed connection that reconnects by itself, to one Redis or to every master of
/// a Redis Cluster. Cloning is cheap: clones share it.
///
/// On a cluster, redis-rs routes each command to the master of its key's slot (`EVALSHA`
/// by its first key, `SCRIPT LOAD` to every master), follows `MOVED` and `ASK`, and
/// refreshes its slot map when the cluster changes.
#[derive(Clone)]
pub(crate) enum Connection {
    /// One Redis.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => connection.req_packed_commands(cmd, offset, count),
            Connection::Cluster(connection) => connection.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

/// How many times a cluster command is tried again after a failure (a node refusing
/// connections, a timeout): as the single Redis's connection manager, two.
const CLUSTER_RETRIES: u32 = 2;

/// How long connecting to one node may take.
const CLUSTER_CONNECT_LIMIT: Duration = Duration::from_secs(1);

/// How long one answer may take (the connection manager's default for one Redis).
const CLUSTER_RESPONSE_LIMIT: Duration = Duration::from_millis(500);

/// How long a command may take in all, its retries and redirections included: as long as
/// the single Redis's three attempts at most.
const CLUSTER_OVERALL_LIMIT: Duration = Duration::from_secs(3);

/// A cluster client builder for `urls` (the seed nodes), configured to fail as quickly as
/// a single Redis's connection manager ([`RedisStore::connection_config`]): two retries
/// 100 and at most 200 ms apart, a second to connect to a node, half a second per answer,
/// three seconds per command in all; and the seed nodes' addresses, for errors.
///
/// A URL that does not parse is named (its password hidden).
///
/// [`RedisStore::connection_config`]: super::RedisStore::connection_config
pub(crate) fn cluster_builder<I>(
    urls: I,
) -> Result<(ClusterClientBuilder, String), RedisConnectError>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let nodes = urls
        .into_iter()
        .map(|url| {
            let url = url.as_ref();
            url.into_connection_info()
                .map_err(|source| RedisConnectError::invalid_url(url, source))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let addrs = nodes
        .iter()
        .map(|node| node.addr().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let builder = ClusterClientBuilder::new(nodes)
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(100)
        .max_retry_wait(1000)
        // Waits of rand(100 .. 100 * 2^retry) ms: 100, then up to 200.
        .retry_wait_formula(100, 2)
        .connection_timeout(CLUSTER_CONNECT_LIMIT)
        .response_timeout(CLUSTER_RESPONSE_LIMIT)
        .overall_response_timeout(Some(CLUSTER_OVERALL_LIMIT));
    Ok((builder, addrs))
}

/// Connects `client` to its cluster (every master of the slot map it reads from the seed
/// nodes, `addrs` for the error). Fails if no seed node answers.
pub(crate) async fn connect_cluster(
    client: &ClusterClient,
    addrs: String,
) -> Result<ClusterConnection, RedisConnectError> {
    client
        .get_async_connection()
        .await
        .map_err(|source| RedisConnectError::Unreachable {
            addr: addrs,
            source,
        })
}
