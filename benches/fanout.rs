//! Fan-out benchmark: one topic, 1 000 subscribers on real sockets, publishes from the
//! server.
//!
//! ```text
//! cargo bench --bench fanout                                   # one node
//! cargo bench --bench fanout --features redis -- --redis URL   # and two nodes through Redis
//! cargo bench --bench fanout -- --subscribers 200 --publishes 500
//! cargo bench --bench fanout --features redis -- --history --redis URL  # the topic keeps a history
//! cargo bench --bench fanout --features nats -- --nats nats://127.0.0.1:4222  # two nodes through NATS
//! ```
//!
//! With `--history` the topic keeps a history of its last 1 000 publications
//! (`ServerBuilder::history`): in memory on one node, in Redis on two (one Lua script
//! per publish instead of a `PUBLISH`), so the figures compare the publish's cost; in each
//! node's memory on two through NATS (which keeps nothing).
//!
//! Two phases, each on one node (publisher and subscribers on one server) and, with
//! `--redis` or `--nats`, on two (subscribers on node A, publishes on node B, through a
//! `RedisBackplane` or a `NatsBackplane`):
//! - **latency**: a publish every 20 ms; each subscriber notes when each signal arrives
//!   (the payload carries the publish time), so every delivery is one sample: p50, p99,
//!   max;
//! - **throughput**: publishes as fast as the subscribers read, at most 4 ahead of the
//!   slowest (so none is ever disconnected for falling behind): publishes per second,
//!   deliveries per second, and the CPU time of the whole process (server and the 1 000
//!   clients, which share its runtime) per delivery.
//!
//! Subscribers are raw tokio-tungstenite clients (no WebWire client logic to measure),
//! with a 4 KiB read buffer like the server's.
//! Everything is on 127.0.0.1. Run without `--bench` (as `cargo test --benches` does), it
//! only runs a short smoke check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_webwire::Payload;
use tokio_webwire::backplane::Backplane;
use tokio_webwire::protocol::{Message, Name, RequestId};
use tokio_webwire::server::{Connection, Handler, HandlerError, History, Server};

#[path = "common/cpu.rs"]
mod cpu;
use cpu::cpu_time;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const TOPIC: &str = "bench";

/// Subscribes a connection with a `subscribe` request.
struct Subscribe;

impl Handler for Subscribe {
    async fn request(
        &self,
        conn: &Connection,
        _name: Name,
        _payload: Payload,
    ) -> std::result::Result<Payload, HandlerError> {
        conn.subscribe(TOPIC).map_err(HandlerError::internal)?;
        Ok(Payload::empty())
    }
}

struct Options {
    subscribers: usize,
    publishes: usize,
    redis: Option<String>,
    nats: Option<String>,
    history: bool,
    bench: bool,
}

fn options() -> Result<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let mut options = Options {
        subscribers: if bench { 1000 } else { 20 },
        publishes: if bench { 2000 } else { 50 },
        redis: None,
        nats: None,
        history: args.iter().any(|a| a == "--history"),
        bench,
    };
    let mut args = args.iter().filter(|a| *a != "--bench" && *a != "--history");
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--subscribers" => options.subscribers = value()?.parse()?,
            "--publishes" => options.publishes = value()?.parse()?,
            "--redis" => options.redis = Some(value()?.clone()),
            "--nats" => options.nats = Some(value()?.clone()),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(options)
}

/// What the subscribers share: deliveries so far, and the latencies they measured.
struct Tally {
    delivered: AtomicU64,
    /// What each subscriber received so far.
    each: Vec<AtomicU64>,
    progress: Notify,
    /// Nanoseconds from publish to arrival, one per delivery (latency phase only).
    latencies: std::sync::Mutex<Vec<u64>>,
    start: Instant,
}

async fn start_server(
    backplane: impl Backplane,
    o: &Options,
) -> Result<(Server<Subscribe>, SocketAddr)> {
    let mut builder = Server::builder(Subscribe)
        .backplane(backplane)
        .backplane_secret(b"the bench's service secret, 32 b")
        .max_connections(0);
    if o.history {
        builder = builder.history(TOPIC, History::last(1000));
    }
    let server = builder.build()?;
    // (The default outbound queue of 8 holds the 4 publishes the throughput phase lets a
    // subscriber lag behind; a subscriber that fell further would be disconnected, and the
    // run fails instead of reporting less.)
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(server.serve(listener));
    Ok((server, addr))
}

/// Connects and subscribes `n` raw clients to `addr`; each then counts what it receives,
/// and records latencies while `record` says so.
async fn subscribe(
    addr: SocketAddr,
    n: usize,
    tally: &Arc<Tally>,
    record: &Arc<std::sync::atomic::AtomicBool>,
) -> Result {
    let subscribe = Message::request(
        RequestId::from(1_u64),
        Name::from_static("subscribe"),
        Payload::empty(),
    )
    .encode()?;
    // A 4 KiB read buffer, as the server's: tungstenite's default (128 KiB) is zeroed for
    // every read, which for a thousand clients reading one small frame per wake-up was
    // 28 % of the process's CPU in one `perf record` of this bench, all on the clients'
    // side.
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
    for i in 0..n {
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
            format!("ws://{addr}/"),
            Some(config),
            false,
        )
        .await?;
        let _accept_conf = ws.next().await.ok_or("no handshake")??;
        ws.send(WsMessage::Binary(subscribe.clone())).await?;
        let _reply = ws.next().await.ok_or("no reply")??;
        let tally = Arc::clone(tally);
        let record = Arc::clone(record);
        let index = i;
        tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(Ok(message)) = ws.next().await {
                let WsMessage::Binary(frame) = message else {
                    continue;
                };
                if record.load(Ordering::Relaxed) {
                    if let Ok(Message::SignalBinary { data, .. }) = Message::parse(frame) {
                        if let Ok(sent) = <[u8; 8]>::try_from(&data[..8]) {
                            let now = tally.start.elapsed().as_nanos() as u64;
                            mine.push(now.saturating_sub(u64::from_le_bytes(sent)));
                        }
                    }
                } else if !mine.is_empty() {
                    tally
                        .latencies
                        .lock()
                        .expect("not poisoned")
                        .append(&mut mine);
                }
                tally.each[index].fetch_add(1, Ordering::Relaxed);
                tally.delivered.fetch_add(1, Ordering::Relaxed);
                tally.progress.notify_one();
            }
        });
    }
    Ok(())
}

fn payload(tally: &Tally, seq: u64) -> Payload {
    let mut data = (tally.start.elapsed().as_nanos() as u64)
        .to_le_bytes()
        .to_vec();
    data.extend_from_slice(&seq.to_le_bytes());
    Payload::binary(data)
}

/// Waits until `count()` reaches `target`; fails when it has not moved for 10 s (a
/// subscriber was disconnected: its deliveries never come).
async fn reached(tally: &Tally, target: u64, what: &str, count: impl Fn() -> u64) -> Result {
    let mut last = (count(), Instant::now());
    loop {
        let notified = tally.progress.notified();
        let now = count();
        if now >= target {
            return Ok(());
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) {
            return Err(format!("{what} stuck at {now} of {target}").into());
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
    }
}

/// Waits until the slowest subscriber has received `each` signals.
async fn slowest_at(tally: &Tally, each: u64) -> Result {
    let slowest = || {
        let counts = tally.each.iter().map(|n| n.load(Ordering::Relaxed));
        counts.min().unwrap_or(0)
    };
    reached(tally, each, "the slowest subscriber", slowest).await
}

/// Waits until `target` deliveries have been counted in all.
async fn delivered(tally: &Tally, target: u64) -> Result {
    let all = || tally.delivered.load(Ordering::Relaxed);
    reached(tally, target, "deliveries", all).await
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    Duration::from_nanos(sorted[at])
}

/// Both phases, subscribers on `sub_addr`, publishes through `publisher`.
async fn measure(
    label: &str,
    publisher: &Server<Subscribe>,
    sub_addr: SocketAddr,
    o: &Options,
) -> Result {
    let tally = Arc::new(Tally {
        delivered: AtomicU64::new(0),
        each: (0..o.subscribers).map(|_| AtomicU64::new(0)).collect(),
        progress: Notify::new(),
        latencies: std::sync::Mutex::new(Vec::new()),
        start: Instant::now(),
    });
    let record = Arc::new(std::sync::atomic::AtomicBool::new(true));
    subscribe(sub_addr, o.subscribers, &tally, &record).await?;
    let n = o.subscribers as u64;

    // Latency: one publish every 20 ms.
    let latency_publishes = (o.publishes / 10).max(10) as u64;
    let mut every = tokio::time::interval(Duration::from_millis(20));
    for seq in 0..latency_publishes {
        every.tick().await;
        publisher
            .publish(TOPIC, "tick", payload(&tally, seq))
            .await?;
    }
    delivered(&tally, latency_publishes * n).await?;
    record.store(false, Ordering::Relaxed);
    // One more publish makes every subscriber hand its samples over.
    publisher.publish(TOPIC, "tick", payload(&tally, 0)).await?;
    delivered(&tally, (latency_publishes + 1) * n).await?;
    let mut latencies = std::mem::take(&mut *tally.latencies.lock().expect("not poisoned"));
    latencies.sort_unstable();

    // Throughput: at most 4 publishes ahead of the slowest subscriber.
    let base = tally.delivered.load(Ordering::Relaxed);
    let base_each = latency_publishes + 1;
    let publishes = o.publishes as u64;
    let cpu_before = cpu_time();
    let began = Instant::now();
    for seq in 0..publishes {
        if seq >= 4 {
            slowest_at(&tally, base_each + seq - 4).await?;
        }
        publisher
            .publish(TOPIC, "tick", payload(&tally, seq))
            .await?;
    }
    delivered(&tally, base + publishes * n).await?;
    let elapsed = began.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_before);
    let deliveries = publishes * n;

    println!(
        "{label}: {} subscribers | latency ({} deliveries at 50 publishes/s): p50 {:?}, p99 {:?}, max {:?} | throughput: {:.0} publishes/s, {:.0} deliveries/s, CPU {:.2} µs/delivery",
        o.subscribers,
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies
            .last()
            .map_or(Duration::ZERO, |&l| Duration::from_nanos(l)),
        publishes as f64 / elapsed.as_secs_f64(),
        deliveries as f64 / elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / deliveries as f64,
    );
    Ok(())
}

fn main() -> Result {
    let o = options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (server, addr) = start_server(tokio_webwire::backplane::Local, &o).await?;
        let history = if o.history { ", history" } else { "" };
        measure(&format!("one node{history}"), &server, addr, &o).await?;
        server.shutdown().await;
        if let Some(url) = &o.redis {
            through_redis(url, &o).await?;
        }
        if let Some(url) = &o.nats {
            through_nats(url, &o).await?;
        }
        if !o.bench {
            println!(
                "fanout smoke check passed (run with `cargo bench --bench fanout` to measure)"
            );
        }
        Ok(())
    })
}

/// Subscribers on node A (backplane `a`), publishes on node B (backplane `b`).
#[cfg(any(feature = "redis", feature = "nats"))]
async fn two_nodes(through: &str, a: impl Backplane, b: impl Backplane, o: &Options) -> Result {
    let (a, a_addr) = start_server(a, o).await?;
    let (b, _) = start_server(b, o).await?;
    measure(&format!("two nodes through {through}"), &b, a_addr, o).await?;
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

#[cfg(feature = "redis")]
async fn through_redis(url: &str, o: &Options) -> Result {
    use tokio_webwire::redis::RedisBackplane;
    let through = if o.history {
        "Redis, history in Redis"
    } else {
        "Redis"
    };
    let (a, b) = (
        RedisBackplane::connect(url).await?,
        RedisBackplane::connect(url).await?,
    );
    two_nodes(through, a, b, o).await
}

#[cfg(not(feature = "redis"))]
async fn through_redis(_url: &str, _o: &Options) -> Result {
    Err("--redis needs the `redis` feature: cargo bench --bench fanout --features redis".into())
}

#[cfg(feature = "nats")]
async fn through_nats(url: &str, o: &Options) -> Result {
    use tokio_webwire::nats::NatsBackplane;
    let through = if o.history {
        "NATS, history in each node's memory"
    } else {
        "NATS"
    };
    let (a, b) = (
        NatsBackplane::connect(url).await?,
        NatsBackplane::connect(url).await?,
    );
    two_nodes(through, a, b, o).await
}

#[cfg(not(feature = "nats"))]
async fn through_nats(_url: &str, _o: &Options) -> Result {
    Err("--nats needs the `nats` feature: cargo bench --bench fanout --features nats".into())
}
