//! A real 3-master Redis Cluster for the tests of feature `redis`: three `redis-server`s
//! with `--cluster-enabled yes` on free ports of 127.0.0.1 (each with its cluster bus port,
//! its port + 10 000, free too), joined by `redis-cli --cluster create` with no replicas
//! (the default slot split: 0-5460, 5461-10922, 10923-16383), no persistence, killed and
//! reaped when dropped.
//!
//! Without `redis-server` or `redis-cli` a test is skipped ([`RedisCluster::start`]
//! returns `None` after saying so on stderr), unless the environment variable `CI` is set
//! (both come in Debian's `redis-server` package, which `.ci/run` installs).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio_webwire::redis::redis;

use super::daemon::{retry, temporary_dir};
use super::redis::{installed, ping};

/// How many masters the cluster has.
pub const MASTERS: usize = 3;

/// How long the servers have to answer PING, `redis-cli --cluster create` to finish, and
/// every node to report `cluster_state:ok`: each of the three steps.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// What Redis adds to a node's port for its cluster bus.
const BUS_OFFSET: u16 = 10_000;

/// Three cluster-enabled `redis-server` processes of the test's own, one cluster.
pub struct RedisCluster {
    ports: [u16; MASTERS],
    dir: PathBuf,
    /// Each running node's port and process.
    children: Vec<(u16, Child)>,
}

impl RedisCluster {
    /// Starts a cluster on free ports, or returns `None` (the test should return at once)
    /// when `redis-server` or `redis-cli` is missing outside CI. Panics in CI without them.
    pub async fn start() -> Option<RedisCluster> {
        if !installed("redis-server") || !installed("redis-cli") {
            return None;
        }
        let dir = temporary_dir("redis-cluster");
        let mut cluster = RedisCluster {
            ports: [0; MASTERS],
            dir,
            children: Vec::new(),
        };
        retry("Redis Cluster start", async || {
            cluster.ports = cluster_ports();
            let started = cluster.spawn().await;
            if started.is_err() {
                cluster.stop();
                // What the failed nodes wrote (their nodes-P.conf above all) must not be
                // read by the next attempt's.
                let _ = std::fs::remove_dir_all(&cluster.dir);
                std::fs::create_dir_all(&cluster.dir).expect("the cluster's directory");
            }
            started
        })
        .await;
        Some(cluster)
    }

    /// `redis://127.0.0.1:<port>/` of every master: the seed nodes a cluster client is
    /// given.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// The ports the masters listen on.
    pub fn ports(&self) -> [u16; MASTERS] {
        self.ports
    }

    /// A plain cluster connection, to look at what the code under test wrote.
    pub async fn raw(&self) -> redis::cluster_async::ClusterConnection {
        let client = redis::cluster::ClusterClient::new(self.urls()).expect("valid URLs");
        tokio::time::timeout(Duration::from_secs(10), client.get_async_connection())
            .await
            .expect("connected in time")
            .expect("a cluster connection")
    }

    /// A plain connection to the master on `port` alone (one of [`ports`](Self::ports)).
    pub async fn node(&self, port: u16) -> redis::aio::MultiplexedConnection {
        node_connection(port)
            .await
            .unwrap_or_else(|why| panic!("no connection to the node on {port}: {why}"))
    }

    /// Every master closes every client connection but the one asking (as a restart of
    /// each, or an operator, would) and stays up; returns how many it closed.
    pub async fn kill_clients(&self) -> usize {
        let mut killed = 0;
        for port in self.ports {
            let mut node = self.node(port).await;
            for kind in ["normal", "pubsub"] {
                let kill = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg(kind)
                    .clone();
                let closed: usize = answer(&mut node, &kill, "CLIENT KILL").await;
                killed += closed;
            }
        }
        killed
    }

    /// How many connections subscribe to the sharded channel `channel` (`PUBSUB
    /// SHARDNUMSUB` on every master, added up: only the master of its slot has any).
    pub async fn shard_subscribers(&self, channel: &str) -> usize {
        let mut subscribers = 0;
        for port in self.ports {
            let mut node = self.node(port).await;
            let numsub = redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel).clone();
            let counts: Vec<(String, usize)> =
                answer(&mut node, &numsub, "PUBSUB SHARDNUMSUB").await;
            subscribers += counts.first().map_or(0, |(_, n)| *n);
        }
        subscribers
    }

    /// The port of the master that serves `slot` (`CLUSTER SLOTS`).
    pub async fn master_of(&self, slot: u16) -> u16 {
        let mut node = self.node(self.ports[0]).await;
        // Each range: start, end, the master (host, port, id), its replicas.
        let ranges: Vec<Vec<redis::Value>> = answer(
            &mut node,
            &redis::cmd("CLUSTER").arg("SLOTS").clone(),
            "CLUSTER SLOTS",
        )
        .await;
        for range in ranges {
            let number = |value: &redis::Value| -> u16 {
                redis::from_redis_value(value.clone()).expect("a number")
            };
            if (number(&range[0])..=number(&range[1])).contains(&slot) {
                let master: Vec<redis::Value> =
                    redis::from_redis_value(range[2].clone()).expect("a master");
                return number(&master[1]);
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// Moves `slot` (which must hold no key) to the master on `to`, as `redis-cli --cluster
    /// reshard` would: importing and migrating, then the new owner on every node. Redis
    /// unsubscribes the old owner's subscribers to the slot's sharded channels.
    pub async fn move_slot(&self, slot: u16, to: u16) {
        let from = self.master_of(slot).await;
        let id = |port| async move {
            let mut node = self.node(port).await;
            let id: String = redis::cmd("CLUSTER")
                .arg("MYID")
                .query_async(&mut node)
                .await
                .expect("CLUSTER MYID");
            id
        };
        let (from_id, to_id) = (id(from).await, id(to).await);
        let setslot = |port: u16, args: Vec<String>| async move {
            let mut node = self.node(port).await;
            let _: () = tokio::time::timeout(
                READY_LIMIT,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg(&args)
                    .query_async(&mut node),
            )
            .await
            .expect("answered in time")
            .unwrap_or_else(|err| panic!("CLUSTER SETSLOT {slot} {args:?} on {port}: {err}"));
        };
        setslot(to, vec!["IMPORTING".into(), from_id.clone()]).await;
        setslot(from, vec!["MIGRATING".into(), to_id.clone()]).await;
        setslot(to, vec!["NODE".into(), to_id.clone()]).await;
        setslot(from, vec!["NODE".into(), to_id.clone()]).await;
        for port in self.ports {
            if port != from && port != to {
                setslot(port, vec!["NODE".into(), to_id.clone()]).await;
            }
        }
    }

    /// Kills every node and reaps it.
    fn stop(&mut self) {
        for (_, mut child) in self.children.drain(..) {
            // An error means it has exited already; wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs the three servers, joins them into a cluster and waits until every node says
    /// `cluster_state:ok`; on failure the logs are in the error (the caller stops them).
    async fn spawn(&mut self) -> Result<(), String> {
        for port in self.ports {
            let child = self.spawn_node(port)?;
            self.children.push((port, child));
        }
        let up = tokio::time::timeout(READY_LIMIT, async {
            for port in self.ports {
                // Polling processes we cannot be told about: they have no readiness
                // signal but answering.
                while !ping(port).await {
                    if let Some(status) = self.exited() {
                        return Err(format!("a redis-server exited: {status}"));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|_| Err(format!("no PONG from every node within {READY_LIMIT:?}")));
        up.map_err(|why| self.with_logs(why))?;
        self.create().await.map_err(|why| self.with_logs(why))?;
        self.settle().await.map_err(|why| self.with_logs(why))
    }

    /// Runs the `redis-server` of `port`, with the cluster configuration file of that port
    /// (a node restarted with it is the same node, with the same slots).
    fn spawn_node(&self, port: u16) -> Result<Child, String> {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(self.dir.join(format!("nodes-{port}.conf")))
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.log(port))
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            // `DEBUG SLEEP` makes a master that keeps its connections and answers nothing.
            .args(["--enable-debug-command", "local"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| format!("cannot run redis-server: {err}"))
    }

    /// Kills the master on `port` (one of [`ports`](Self::ports)) and reaps it: its slots
    /// are served by nobody until [`restart_node`](Self::restart_node) (there are no
    /// replicas to fail over to).
    pub fn stop_node(&mut self, port: u16) {
        if let Some(at) = self.children.iter().position(|(p, _)| *p == port) {
            let (_, mut child) = self.children.remove(at);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the master on `port` again, empty (nothing is persisted) but the same node
    /// with the same slots, and waits until every node says `cluster_state:ok` again.
    pub async fn restart_node(&mut self, port: u16) {
        self.stop_node(port);
        let child = self
            .spawn_node(port)
            .unwrap_or_else(|why| panic!("{}", self.with_logs(why)));
        self.children.push((port, child));
        let up = tokio::time::timeout(READY_LIMIT, async {
            while !ping(port).await {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if up.is_err() {
            panic!(
                "{}",
                self.with_logs(format!("no PONG on {port} after a restart"))
            );
        }
        if let Err(why) = self.settle().await {
            panic!("{}", self.with_logs(why));
        }
    }

    /// `redis-cli --cluster create` with no replicas: the slots split in three.
    async fn create(&self) -> Result<(), String> {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let create = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(READY_LIMIT, create)
            .await
            .map_err(|_| format!("redis-cli --cluster create took over {READY_LIMIT:?}"))?
            .map_err(|err| format!("cannot run redis-cli: {err}"))?;
        // redis-cli says `[OK] All 16384 slots covered.` when it is done, and exits 0 on
        // some failures too.
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !stdout.contains("All 16384 slots covered") {
            return Err(format!(
                "redis-cli --cluster create failed ({}): {stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    /// Waits until every node reports `cluster_state:ok` and knows all three masters'
    /// slots: before that, a client could be sent to a node that does not serve a slot yet.
    async fn settle(&self) -> Result<(), String> {
        let settled = tokio::time::timeout(READY_LIMIT, async {
            for port in self.ports {
                let mut connection = node_connection(port).await?;
                loop {
                    if node_settled(&mut connection).await? {
                        break;
                    }
                    // Polling: the cluster bus has no signal for this either.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Ok::<_, String>(())
        })
        .await;
        settled.unwrap_or_else(|_| Err(format!("not cluster_state:ok within {READY_LIMIT:?}")))
    }

    /// The exit status of a node that has exited, if any.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.children
            .iter_mut()
            .find_map(|(_, child)| child.try_wait().ok().flatten())
    }

    fn log(&self, port: u16) -> PathBuf {
        self.dir.join(format!("redis-{port}.log"))
    }

    /// `why`, followed by every node's log.
    fn with_logs(&self, why: String) -> String {
        let mut text = why;
        for port in self.ports {
            let log = std::fs::read_to_string(self.log(port)).unwrap_or_default();
            text.push_str(&format!("\nlog of the node on {port}:\n{log}"));
        }
        text
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain connection to the node on `port`.
/// `cmd`'s answer from `node` within `READY_LIMIT`; panics with `what` if it failed.
async fn answer<T: redis::FromRedisValue>(
    node: &mut redis::aio::MultiplexedConnection,
    cmd: &redis::Cmd,
    what: &str,
) -> T {
    tokio::time::timeout(READY_LIMIT, cmd.query_async(node))
        .await
        .expect("answered in time")
        .expect(what)
}

async fn node_connection(port: u16) -> Result<redis::aio::MultiplexedConnection, String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|err| err.to_string())?;
    tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| format!("no connection to {port} within 10 s"))?
    .map_err(|err| err.to_string())
}

/// Whether the node says `cluster_state:ok` and `cluster_known_nodes:3`.
async fn node_settled(connection: &mut redis::aio::MultiplexedConnection) -> Result<bool, String> {
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(connection)
        .await
        .map_err(|err| format!("CLUSTER INFO failed: {err}"))?;
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
            .map(str::to_owned)
    };
    Ok(field("cluster_state").as_deref() == Some("ok")
        && field("cluster_known_nodes").as_deref() == Some(&MASTERS.to_string()))
}

/// Three ports of 127.0.0.1 that, with their cluster bus ports (+10 000), were free a
/// moment ago. Each is held while the next are chosen, so the three differ.
fn cluster_ports() -> [u16; MASTERS] {
    let mut held = Vec::new();
    let mut ports = [0; MASTERS];
    for port in &mut ports {
        *port = loop {
            let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .expect("a free port on 127.0.0.1");
            let candidate = listener.local_addr().expect("its address").port();
            let Some(bus) = candidate.checked_add(BUS_OFFSET) else {
                continue;
            };
            // The bus port must be free now; keep both until all three are chosen.
            if let Ok(bus) = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, bus))) {
                held.push(listener);
                held.push(bus);
                break candidate;
            }
        };
    }
    ports
}
