//! Many nodes, many topics: what each node receives from the backplane with routing by
//! interest, against the broadcast every node received before it.
//!
//! ```text
//! cargo bench --bench scale                                        # 16 nodes, in-process bus
//! cargo bench --bench scale -- --broadcast                         # every node joins every topic
//! cargo bench --bench scale --features redis -- --redis URL        # a RedisBackplane per node
//! cargo bench --bench scale --features redis -- --redis URL --broadcast
//! cargo bench --bench scale --features nats -- --nats URL [--broadcast]
//! cargo bench --bench scale --features redis -- --redis-cluster URL,URL,URL [--broadcast]
//! cargo bench --bench scale -- --nodes 16 --topics 1000 --publishes 5
//! ```
//!
//! `--nodes` servers (16) run in this process, each with a backplane of its own: a routed
//! in-process bus (a message goes to the nodes that joined its route, as Redis's channels
//! do), or with `--redis URL` a `RedisBackplane` per node on that Redis (`--nats URL`: a
//! `NatsBackplane` per node). `--topics` topics
//! (1 000) each have a subscriber on two nodes (topic `t` on nodes `t mod N` and
//! `(7t + 3) mod N`): one WebWire client per node (our `Client`, through the topics
//! extension) subscribes to that node's topics. Each topic then gets `--publishes` (5)
//! publications, each from a third node (`(13t + 5 + i) mod N`), one topic after the other,
//! waiting for both deliveries of each.
//!
//! Reported: what the backplane handed each node (`Server::backplane_received`: min,
//! median, max, total), the deliveries to clients, the process's CPU time (servers,
//! backplanes and clients share it) per delivery, and the latency from publish to a
//! client (p50, p99). `--broadcast` reproduces the traffic of the single-channel backplane
//! it replaces: every node's backplane joins every topic's route before the run, so every
//! node receives every publication (its server, having no subscriber to most, drops them).
//!
//! Counts are exact; times depend on the machine (2 cores, everything on 127.0.0.1).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_webwire::Client;
use tokio_webwire::backplane::{Backplane, BackplaneError, Inbox, Route};
use tokio_webwire::client::TopicEvent;
use tokio_webwire::server::{Connection, Handler, Server, SubscribeRefused};

#[path = "common/cpu.rs"]
mod cpu;
use cpu::cpu_time;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const SECRET: &[u8] = b"the bench's service secret, 32 b";

/// Lets clients subscribe to any topic.
struct Open;

impl Handler for Open {
    async fn subscribe_requested(
        &self,
        _conn: &Connection,
        _topic: &str,
    ) -> std::result::Result<(), SubscribeRefused> {
        Ok(())
    }
}

/// A routed bus in this process: a message goes to the nodes that joined its route.
#[derive(Default, Clone)]
struct Bus(Arc<Mutex<Vec<Member>>>);

#[derive(Default)]
struct Member {
    inbox: Option<Inbox>,
    routes: HashMap<Route, usize>,
}

/// One node's end of the bus.
#[derive(Clone)]
struct BusNode {
    bus: Bus,
    id: usize,
}

impl Bus {
    fn node(&self) -> BusNode {
        let mut members = self.0.lock().unwrap_or_else(|e| e.into_inner());
        members.push(Member::default());
        BusNode {
            bus: self.clone(),
            id: members.len() - 1,
        }
    }
}

impl Backplane for BusNode {
    async fn send(&self, route: &Route, message: Bytes) -> std::result::Result<(), BackplaneError> {
        let inboxes: Vec<Inbox> = {
            let members = self.bus.0.lock().unwrap_or_else(|e| e.into_inner());
            members
                .iter()
                .filter(|member| member.routes.contains_key(route))
                .filter_map(|member| member.inbox.clone())
                .collect()
        };
        for inbox in inboxes {
            inbox.deliver(message.clone());
        }
        Ok(())
    }

    fn attach(&self, inbox: Inbox) {
        self.bus.0.lock().unwrap_or_else(|e| e.into_inner())[self.id].inbox = Some(inbox);
    }

    async fn join(&self, route: &Route) -> std::result::Result<(), BackplaneError> {
        let mut members = self.bus.0.lock().unwrap_or_else(|e| e.into_inner());
        *members[self.id].routes.entry(route.clone()).or_insert(0) += 1;
        Ok(())
    }

    async fn leave(&self, route: &Route) -> std::result::Result<(), BackplaneError> {
        let mut members = self.bus.0.lock().unwrap_or_else(|e| e.into_inner());
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

struct Options {
    nodes: usize,
    topics: usize,
    publishes: usize,
    broadcast: bool,
    redis: Option<String>,
    /// The URLs of a Redis Cluster's masters, comma-separated.
    cluster: Option<String>,
    nats: Option<String>,
}

fn options() -> Result<Options> {
    let mut o = Options {
        nodes: 16,
        topics: 1000,
        publishes: 5,
        broadcast: false,
        redis: None,
        cluster: None,
        nats: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Without `--bench` (`cargo test --benches`): a smoke check.
    if !args.iter().any(|a| a == "--bench") {
        o.nodes = 4;
        o.topics = 20;
        o.publishes = 1;
    }
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--nodes" => o.nodes = value()?.parse()?,
            "--topics" => o.topics = value()?.parse()?,
            "--publishes" => o.publishes = value()?.parse()?,
            "--broadcast" => o.broadcast = true,
            "--redis" => o.redis = Some(value()?),
            "--nats" => o.nats = Some(value()?),
            "--redis-cluster" => o.cluster = Some(value()?),
            "--bench" => {}
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if o.nodes < 3 {
        return Err("--nodes must be at least 3".into());
    }
    Ok(o)
}

/// The two nodes with a subscriber to topic `t`.
fn subscribed_on(t: usize, nodes: usize) -> [usize; 2] {
    let a = t % nodes;
    let mut b = (7 * t + 3) % nodes;
    if b == a {
        b = (a + 1) % nodes;
    }
    [a, b]
}

/// The node that publishes topic `t`'s `i`th publication: one without a subscriber.
fn publisher(t: usize, i: usize, nodes: usize) -> usize {
    let on = subscribed_on(t, nodes);
    let mut p = (13 * t + 5 + i) % nodes;
    while on.contains(&p) {
        p = (p + 1) % nodes;
    }
    p
}

fn topic(t: usize) -> String {
    format!("room/{t}")
}

async fn start(backplane: impl Backplane) -> Result<(Server<Open>, String)> {
    let server = Server::builder(Open)
        .backplane(backplane)
        .backplane_secret(SECRET)
        .max_topics_per_connection(0)
        .outbound_queue_len(1024)
        .build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/", listener.local_addr()?);
    tokio::spawn(server.serve(listener));
    Ok((server, url))
}

#[tokio::main]
async fn main() -> Result {
    let o = options()?;
    let bus = Bus::default();
    let mut servers = Vec::new();
    for _ in 0..o.nodes {
        #[cfg(feature = "redis")]
        if let Some(urls) = &o.cluster {
            let backplane =
                tokio_webwire::redis::RedisBackplane::connect_cluster(urls.split(',')).await?;
            if o.broadcast {
                for t in 0..o.topics {
                    let route = Route::topic(&topic(t)).ok_or("a topic")?;
                    let _ = backplane.join(&route).await;
                }
            }
            servers.push(start(backplane).await?);
            continue;
        }
        let (server, url) = match &o.redis {
            #[cfg(feature = "redis")]
            Some(redis) => {
                let backplane = tokio_webwire::redis::RedisBackplane::connect(redis).await?;
                if o.broadcast {
                    for t in 0..o.topics {
                        let route = Route::topic(&topic(t)).ok_or("a topic")?;
                        let _ = backplane.join(&route).await;
                    }
                }
                start(backplane).await?
            }
            #[cfg(not(feature = "redis"))]
            Some(_) => return Err("--redis needs --features redis".into()),
            #[cfg(feature = "nats")]
            None if o.nats.is_some() => {
                let url = o.nats.as_deref().unwrap_or_default();
                let backplane = tokio_webwire::nats::NatsBackplane::connect(url).await?;
                if o.broadcast {
                    for t in 0..o.topics {
                        let route = Route::topic(&topic(t)).ok_or("a topic")?;
                        backplane.join(&route).await?;
                    }
                }
                start(backplane).await?
            }
            #[cfg(not(feature = "nats"))]
            None if o.nats.is_some() => return Err("--nats needs --features nats".into()),
            None => {
                let node = bus.node();
                if o.broadcast {
                    for t in 0..o.topics {
                        let route = Route::topic(&topic(t)).ok_or("a topic")?;
                        node.join(&route).await?;
                    }
                }
                start(node).await?
            }
        };
        servers.push((server, url));
    }

    // One client per node, subscribed to the node's topics; every publication it gets is
    // counted, with its latency (the payload carries the publish time, in µs since start).
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let mut clients = Vec::new();
    for (n, (_, url)) in servers.iter().enumerate() {
        let client = Client::builder().topics(true).connect(url).await?;
        for t in (0..o.topics).filter(|t| subscribed_on(*t, o.nodes).contains(&n)) {
            let mut subscription = client.subscribe(&topic(t)).await?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(event) = subscription.next().await {
                    if let TopicEvent::Publication { payload, .. } = event {
                        let sent: u64 = payload
                            .to_text()
                            .ok()
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(0);
                        let now = started.elapsed().as_micros() as u64;
                        let _ = tx.send(now.saturating_sub(sent));
                    }
                }
            });
        }
        clients.push(client);
    }
    for (server, _) in &servers {
        server.sync_backplane().await;
    }
    let before: Vec<u64> = servers
        .iter()
        .map(|(s, _)| s.backplane_received())
        .collect();
    let cpu = cpu_time();
    let wall = Instant::now();
    let mut latencies = Vec::new();
    for t in 0..o.topics {
        for i in 0..o.publishes {
            let from = &servers[publisher(t, i, o.nodes)].0;
            let at = started.elapsed().as_micros() as u64;
            from.publish(&topic(t), "news", at.to_string()).await?;
            for _ in 0..2 {
                let latency = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await?
                    .ok_or("the subscribers are gone")?;
                latencies.push(latency);
            }
        }
    }
    let cpu = cpu_time().saturating_sub(cpu);
    let wall = wall.elapsed();
    let mut received: Vec<u64> = servers
        .iter()
        .zip(&before)
        .map(|((s, _), b)| s.backplane_received() - b)
        .collect();
    received.sort_unstable();
    latencies.sort_unstable();
    let deliveries = latencies.len();
    let publications = o.topics * o.publishes;
    let pct = |p: usize| latencies[(deliveries * p / 100).min(deliveries - 1)];
    println!(
        "{} nodes, {} topics (subscribers on 2 nodes each), {} publications, {}, {}",
        o.nodes,
        o.topics,
        publications,
        if o.cluster.is_some() {
            "Redis Cluster (3 masters)"
        } else if o.redis.is_some() {
            "Redis"
        } else if o.nats.is_some() {
            "NATS"
        } else {
            "in-process bus"
        },
        if o.broadcast {
            "broadcast (every node joins every topic)"
        } else {
            "routing by interest"
        }
    );
    println!(
        "received per node: min {} median {} max {} total {} ({:.2} per publication)",
        received[0],
        received[received.len() / 2],
        received[received.len() - 1],
        received.iter().sum::<u64>(),
        received.iter().sum::<u64>() as f64 / publications as f64,
    );
    println!(
        "deliveries {deliveries}; CPU {:.1} µs per delivery; {:.0} publications/s; latency p50 {} µs p99 {} µs",
        cpu.as_secs_f64() * 1e6 / deliveries as f64,
        publications as f64 / wall.as_secs_f64(),
        pct(50),
        pct(99),
    );
    drop(clients);
    Ok(())
}
