//! Session restore latency over real sockets, [`RedisStore`] against [`MemoryStore`]:
//! `cargo bench --features redis --bench restore_latency [-- --restores N]`.
//!
//! Starts a `redis-server` of its own (tests/common/redis.rs: a free port of 127.0.0.1, no
//! persistence), then for each store a server on 127.0.0.1 and two clients: one logs in and
//! holds the session, the other restores it `N` times (2 000 by default), closing it after
//! each restore (not timed; the first client still holds it, so the store keeps it). Prints
//! p50, p99, the mean and the maximum of the restore round trips, and the memory Redis
//! reports (`MEMORY USAGE`) for the session's key. Without `--bench` (`cargo test
//! --benches`) it runs 20 restores of each, as a smoke test.

// The Redis helper reaches the process helpers as `super::daemon`.
#[path = "../tests/common/daemon.rs"]
#[allow(dead_code, unreachable_pub)]
mod daemon;
#[path = "../tests/common/redis.rs"]
#[allow(dead_code, unreachable_pub)]
mod redis_server;

use std::time::{Duration, Instant};

use redis_server::RedisServer;
use tokio::net::TcpListener;
use tokio_webwire::client::Reconnect;
use tokio_webwire::protocol::Name;
use tokio_webwire::redis::{RedisStore, redis};
use tokio_webwire::server::{Connection, Handler, HandlerResult, Server};
use tokio_webwire::session::{MemoryStore, SessionStore};
use tokio_webwire::{Client, Payload, SessionInfo};

/// Every await on the network is bounded by this.
const LIMIT: Duration = Duration::from_secs(10);

/// `login` creates a session whose info is `{"user": <payload>}` and answers its key.
struct Login;

impl Handler for Login {
    async fn request(&self, conn: &Connection, name: Name, payload: Payload) -> HandlerResult {
        if name != "login" {
            return Ok(payload);
        }
        let mut info = SessionInfo::new();
        info.insert("user", &payload.to_text()?)?;
        Ok(Payload::utf8(conn.create_session(info).await?.key))
    }
}

type Error = Box<dyn std::error::Error>;

async fn bounded<T>(future: impl std::future::Future<Output = T>) -> Result<T, Error> {
    Ok(tokio::time::timeout(LIMIT, future).await?)
}

async fn client(url: &str) -> Result<Client, Error> {
    Ok(bounded(
        Client::builder()
            .reconnect(Reconnect::Off)
            .request_timeout(LIMIT)
            .connect(url),
    )
    .await??)
}

/// The restore round trips against a server with `store`, and the session's key.
async fn measure(
    store: impl SessionStore,
    restores: usize,
) -> Result<(Vec<Duration>, String), Error> {
    let server = Server::builder(Login).session_store(store).build()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/", listener.local_addr()?);
    tokio::spawn(server.serve(listener));

    let holder = client(&url).await?;
    let key = bounded(holder.request("login", Payload::utf8("alice")))
        .await??
        .to_text()?;
    let restorer = client(&url).await?;
    let mut times = Vec::with_capacity(restores);
    for _ in 0..restores {
        let start = Instant::now();
        bounded(restorer.restore_session(&key)).await??;
        times.push(start.elapsed());
        bounded(restorer.close_session()).await??;
    }
    bounded(restorer.close()).await?;
    bounded(holder.close()).await?;
    bounded(server.shutdown()).await?;
    Ok((times, key))
}

fn report(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "{name:<12} restores {:>5}  p50 {:>7.1} µs  p99 {:>7.1} µs  mean {:>7.1} µs  max {:>8.1} µs",
        times.len(),
        at(0.50).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6,
        times[times.len() - 1].as_secs_f64() * 1e6,
    );
}

async fn run(restores: usize) -> Result<(), Error> {
    let Some(redis) = RedisServer::start().await else {
        return Ok(());
    };
    let store = bounded(RedisStore::connect(&redis.url())).await??;
    // Warm-up (connections, allocator, caches), not reported.
    measure(MemoryStore::new(), restores / 10 + 1).await?;
    measure(store.clone(), restores / 10 + 1).await?;

    let (memory, _) = measure(MemoryStore::new(), restores).await?;
    let (redis_times, key) = measure(store, restores).await?;
    report("MemoryStore", memory);
    report("RedisStore", redis_times);

    let client = redis::Client::open(redis.url())?;
    let mut raw = bounded(client.get_multiplexed_async_connection()).await??;
    let redis_key = format!("{}{key}", RedisStore::DEFAULT_PREFIX);
    let bytes: Option<u64> = bounded(
        redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&redis_key)
            .query_async(&mut raw),
    )
    .await??;
    let json: Vec<u8> = bounded(redis::cmd("GET").arg(&redis_key).query_async(&mut raw)).await??;
    println!(
        "Redis memory of one session (43-char key, info {{\"user\":\"alice\"}}): {} bytes, of which {} of JSON",
        bytes.unwrap_or(0),
        json.len()
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let restores = match args.iter().position(|arg| arg == "--restores") {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(2_000),
        None if args.iter().any(|arg| arg == "--bench") => 2_000,
        None => 20,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    if let Err(error) = runtime.block_on(run(restores)) {
        eprintln!("restore_latency failed: {error}");
        std::process::exit(1);
    }
}
