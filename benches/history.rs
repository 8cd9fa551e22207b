//! Topic histories: what a resume of 100 missed publications takes, and what a kept
//! publication costs in memory, in this process's memory and in Redis.
//!
//! ```text
//! cargo bench --bench history                                   # in memory
//! cargo bench --bench history --features redis -- --redis URL   # and in Redis
//! ```
//!
//! - **resume**: a client of the topics extension (raw frames on a real socket) subscribes
//!   with the position it saw after 100 publications landed, and waits for the subscribe
//!   answer and the 100 (before it; on another node the last may follow it live): the
//!   time from sending `ww.subscribe` to both, p50 / p99 / max over 200 resumes. In Redis: published on node B, resumed on node A.
//! - **publish**: the time of one publish with nobody subscribed, to a topic without and
//!   with a history (in Redis: a `PUBLISH` against the Lua script, one round trip each);
//! - **memory**: the growth of the process's resident memory (in memory) or of Redis's
//!   `used_memory` (in Redis) per kept publication of a 16-byte payload, 1 000 000 kept
//!   in memory, 100 000 in Redis; against `History::ENTRY_OVERHEAD`.
//!
//! Everything is on 127.0.0.1. Without `--bench` (`cargo test --benches`) it runs a short
//! smoke check. Linux only (reads `/proc/self/status`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_webwire::Payload;
use tokio_webwire::backplane::Backplane;
use tokio_webwire::protocol::topics::{self, Position, Publication, Subscribe, Subscribed};
use tokio_webwire::protocol::{Message, RequestId};
use tokio_webwire::server::{Connection, Handler, History, Server, SubscribeRefused};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const TOPIC: &str = "bench";
const MISSED: u64 = 100;

/// Lets every client subscribe.
struct Open;

impl Handler for Open {
    async fn subscribe_requested(
        &self,
        _: &Connection,
        _: &str,
    ) -> std::result::Result<(), SubscribeRefused> {
        Ok(())
    }
}

async fn start(backplane: impl Backplane, history: History) -> Result<(Server<Open>, SocketAddr)> {
    let server = Server::builder(Open)
        .backplane(backplane)
        .backplane_secret(b"the bench's service secret, 32 b")
        .history(TOPIC, history)
        .build()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(server.serve(listener));
    Ok((server, addr))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw client offering the extension, past the server's AcceptConf.
async fn connect(addr: SocketAddr) -> Result<Ws> {
    let mut request = format!("ws://{addr}/").into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(topics::SUBPROTOCOL),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    ws.next().await.ok_or("no AcceptConf")??;
    Ok(ws)
}

/// Subscribes with `resume`; returns the answer once it and `expect` publications came
/// (on another node the last ones may still be on their way there, and follow the answer
/// live), and how many publications came.
async fn subscribe(
    ws: &mut Ws,
    resume: Option<Position>,
    expect: u64,
) -> Result<(Subscribed, u64)> {
    let payload = Subscribe {
        topic: TOPIC.into(),
        resume,
    }
    .encode();
    let frame = Message::request(
        RequestId::from(1_u64),
        topics::SUBSCRIBE,
        Payload::binary(payload),
    )
    .encode()?;
    ws.send(WsMessage::Binary(frame)).await?;
    let mut publications = 0;
    let mut answer = None;
    loop {
        if let Some(answer) = answer.filter(|_| publications >= expect) {
            return Ok((answer, publications));
        }
        let WsMessage::Binary(frame) = ws.next().await.ok_or("closed")?? else {
            continue;
        };
        match Message::parse(frame)? {
            Message::ReplyBinary { data, .. } => answer = Some(Subscribed::parse(&data)?),
            Message::SignalBinary { data, .. } => {
                Publication::parse(&data)?;
                publications += 1;
            }
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

/// Resumes of 100 missed publications: published through `publisher`, resumed on `addr`.
async fn resume(label: &str, publisher: &Server<Open>, addr: SocketAddr, runs: usize) -> Result {
    let mut ws = connect(addr).await?;
    let (answer, _) = subscribe(&mut ws, None, 0).await?;
    drop(ws);
    let mut position = answer.position;
    let mut took = Vec::with_capacity(runs);
    for _ in 0..runs {
        for i in 0..MISSED {
            publisher
                .publish(TOPIC, "m", Payload::binary(i.to_le_bytes().repeat(2)))
                .await?;
        }
        let mut ws = connect(addr).await?;
        let began = Instant::now();
        let (answer, got) = subscribe(&mut ws, Some(position), MISSED).await?;
        took.push(began.elapsed());
        if answer.status != topics::Status::Recovered || got != MISSED {
            return Err(format!("{label}: {answer:?} after {got} publications").into());
        }
        position = Position {
            offset: position.offset + MISSED,
            ..position
        };
    }
    took.sort_unstable();
    println!(
        "{label}: resume of {MISSED} missed publications ({runs} resumes): p50 {:?}, p99 {:?}, max {:?}",
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took.last().copied().unwrap_or_default(),
    );
    Ok(())
}

/// The time of one publish, one after the other with nobody subscribed (the publisher's
/// cost alone), to `topic` of `server`: median of 5 rounds of `n`.
async fn publish_cost(label: &str, server: &Server<Open>, topic: &str, n: u32) -> Result {
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let began = Instant::now();
        for i in 0..n {
            server
                .publish(
                    topic,
                    "m",
                    Payload::binary(u64::from(i).to_le_bytes().repeat(2)),
                )
                .await?;
        }
        rounds.push(began.elapsed() / n);
    }
    rounds.sort_unstable();
    println!(
        "{label}: publish to {topic}: {:?} each (median of 5 rounds of {n})",
        rounds[2]
    );
    Ok(())
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// The publication message a 16-byte payload makes, and its plain signal.
fn sizes() -> Result<(usize, usize)> {
    let plain = Message::signal("m".try_into()?, Payload::binary(vec![0; 16])).encode()?;
    let position = Some(Position {
        epoch: 1,
        offset: 1,
    });
    Ok((
        plain.len(),
        Publication::frame(TOPIC, position, &plain).len(),
    ))
}

/// Resident memory per kept publication, `n` kept in this process.
async fn memory_here(n: u64) -> Result {
    let history = History::last(n as usize).max_bytes(usize::MAX / 2);
    let (server, _) = start(tokio_webwire::backplane::Local, history).await?;
    let payload = Bytes::from(vec![7; 16]);
    server
        .publish(TOPIC, "m", Payload::binary(payload.clone()))
        .await?;
    let before = rss_bytes();
    for _ in 1..n {
        server
            .publish(TOPIC, "m", Payload::binary(payload.clone()))
            .await?;
    }
    let per = (rss_bytes().saturating_sub(before)) as f64 / (n - 1) as f64;
    let (_, frame) = sizes()?;
    println!(
        "in memory: {n} kept publications of a 16-byte payload: {per:.0} bytes each (message {frame} bytes, so {:.0} bytes besides it; History::ENTRY_OVERHEAD = {})",
        per - frame as f64,
        History::ENTRY_OVERHEAD
    );
    Ok(())
}

fn main() -> Result {
    let bench = std::env::args().any(|a| a == "--bench");
    let mut redis = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--redis" {
            redis = Some(args.next().ok_or("--redis needs a URL")?);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let runs = if bench { 200 } else { 5 };
        let (server, addr) = start(tokio_webwire::backplane::Local, History::last(1000)).await?;
        let n = if bench { 20_000 } else { 100 };
        publish_cost("in memory", &server, "plain", n).await?;
        publish_cost("in memory", &server, TOPIC, n).await?;
        resume("in memory", &server, addr, runs).await?;
        server.shutdown().await;
        if let Some(url) = &redis {
            in_redis(url, runs, if bench { 100_000 } else { 1000 }).await?;
        }
        memory_here(if bench { 1_000_000 } else { 10_000 }).await?;
        Ok(())
    })
}

#[cfg(feature = "redis")]
async fn in_redis(url: &str, runs: usize, n: u64) -> Result {
    use tokio_webwire::redis::{RedisBackplane, redis};
    let (a, a_addr) = start(RedisBackplane::connect(url).await?, History::last(1000)).await?;
    let (b, _) = start(RedisBackplane::connect(url).await?, History::last(1000)).await?;
    let rounds = if runs > 5 { 5_000 } else { 100 };
    publish_cost("two nodes through Redis", &b, "plain", rounds).await?;
    publish_cost(
        "two nodes through Redis, history in Redis",
        &b,
        TOPIC,
        rounds,
    )
    .await?;
    resume("in Redis (published on B, resumed on A)", &b, a_addr, runs).await?;

    let client = redis::Client::open(url)?;
    let mut raw = client.get_multiplexed_async_connection().await?;
    let used = |info: String| {
        info.lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (c, _) = start(
        RedisBackplane::builder()
            .history_prefix(Some("bench:memory:"))
            .connect(url)
            .await?,
        History::last(n as usize).max_bytes(usize::MAX / 2),
    )
    .await?;
    c.publish(TOPIC, "m", Payload::binary(vec![7; 16])).await?;
    let before: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut raw)
        .await?;
    for _ in 1..n {
        c.publish(TOPIC, "m", Payload::binary(vec![7; 16])).await?;
    }
    let after: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut raw)
        .await?;
    let per = used(after).saturating_sub(used(before)) as f64 / (n - 1) as f64;
    let (plain, _) = sizes()?;
    println!(
        "in Redis: {n} kept publications of a 16-byte payload: {per:.0} bytes each of used_memory (signal {plain} bytes, so {:.0} besides it)",
        per - plain as f64
    );
    let _: () = redis::cmd("DEL")
        .arg(format!("bench:memory:{{{TOPIC}}}:s"))
        .arg(format!("bench:memory:{{{TOPIC}}}:m"))
        .query_async(&mut raw)
        .await?;
    for server in [a, b, c] {
        server.shutdown().await;
    }
    Ok(())
}

#[cfg(not(feature = "redis"))]
async fn in_redis(_: &str, _: usize, _: u64) -> Result {
    Err("--redis needs the `redis` feature: cargo bench --bench history --features redis".into())
}
