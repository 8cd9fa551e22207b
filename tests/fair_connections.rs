//! One hostile source cannot take the places every client shares. The attackers connect
//! from their own loopback addresses (127.0.0.2 and up), good clients from 127.0.0.1, and
//! each test asserts what the good clients still get: at least 95 % of their connections
//! succeed during the attack (in practice all of them). The server's limits are scaled down
//! from the defaults so that an attack fits in a test; the defaults' arithmetic is the same.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Echo, bounded, listen};
use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio_webwire::client::Reconnect;
use tokio_webwire::server::{Connection, Handler, Server, ServerBuilder};
use tokio_webwire::{Client, ConnectError};

/// A plain TCP connection from `source` that sends nothing.
async fn silent(source: &str, addr: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(format!("{source}:0").parse().ok()?).ok()?;
    tokio::time::timeout(Duration::from_secs(5), socket.connect(addr))
        .await
        .ok()?
        .ok()
}

/// Keeps `per_source` silent sockets open from each of `sources`, opening a new one
/// whenever the server closes one, until `stop`; returns once each has connected once.
async fn silent_crowd(
    addr: SocketAddr,
    sources: Vec<String>,
    per_source: usize,
    stop: Arc<AtomicBool>,
) -> JoinSet<()> {
    let mut crowd = JoinSet::new();
    let (connected, mut ready) = tokio::sync::mpsc::unbounded_channel();
    let members = sources.len() * per_source;
    for source in sources {
        for _ in 0..per_source {
            let source = source.clone();
            let stop = Arc::clone(&stop);
            let connected = connected.clone();
            crowd.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Some(mut socket) = silent(&source, addr).await else {
                        tokio::task::yield_now().await;
                        continue;
                    };
                    let _ = connected.send(());
                    // Held until the server closes it (a read of 0 bytes or an error).
                    let mut buf = [0u8; 64];
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        tokio::io::AsyncReadExt::read(&mut socket, &mut buf),
                    )
                    .await;
                }
            });
        }
    }
    for _ in 0..members {
        bounded(ready.recv()).await;
    }
    crowd
}

/// How many of `attempts` connections of our client (from 127.0.0.1) succeed, one after
/// another, each given the handshake's own time; prints their latency (connect and one
/// request), which is reported, never asserted.
async fn good_clients(addr: SocketAddr, attempts: usize) -> usize {
    let mut latencies = Vec::with_capacity(attempts);
    for _ in 0..attempts {
        let started = std::time::Instant::now();
        let connect = Client::builder()
            .reconnect(Reconnect::Off)
            .dial_timeout(Duration::from_secs(5))
            .connect(format!("ws://{addr}/"));
        let outcome: Result<Client, ConnectError> = bounded(connect).await;
        match outcome {
            Ok(client) => {
                if bounded(client.request("echo", "hi")).await.is_ok() {
                    latencies.push(started.elapsed());
                }
                client.close().await;
            }
            Err(error) => println!("a good client failed to connect: {error}"),
        }
    }
    latencies.sort();
    if let (Some(median), Some(max)) = (latencies.get(latencies.len() / 2), latencies.last()) {
        println!("good clients: connect and a request in {median:?} (median), {max:?} (max)");
    }
    latencies.len()
}

async fn start(
    configure: impl FnOnce(ServerBuilder<Echo>) -> ServerBuilder<Echo>,
) -> (Server<Echo>, SocketAddr) {
    let server = configure(Server::builder(Echo))
        .build()
        .expect("valid options");
    let addr = listen(&server).await;
    (server, addr)
}

fn at_least_95_percent(succeeded: usize, attempts: usize, attack: &str) {
    println!("{attack}: {succeeded} of {attempts} good connections succeeded");
    assert!(
        succeeded * 100 >= attempts * 95,
        "{attack}: only {succeeded} of {attempts} good connections succeeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_from_one_source_hold_at_most_its_share() {
    // A pool of 64 pending places, 16 per source: the attacker keeps 200 silent sockets
    // going (reopened as they are closed) from 127.0.0.2.
    let (_server, addr) = start(|b| {
        b.max_pending_upgrades(64)
            .max_pending_upgrades_per_source(16)
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut crowd = silent_crowd(addr, vec!["127.0.0.2".into()], 200, Arc::clone(&stop)).await;
    let succeeded = good_clients(addr, 40).await;
    stop.store(true, Ordering::Relaxed);
    crowd.abort_all();
    at_least_95_percent(succeeded, 40, "200 silent sockets from one source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_from_many_sources_are_closed_to_make_room() {
    // Eight attacking sources, each within its share (4), together fill the pool of 16
    // places twice over; the server closes the silent ones to make room for clients that
    // talk.
    let (_server, addr) = start(|b| {
        b.max_pending_upgrades(16)
            .max_pending_upgrades_per_source(4)
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let sources = (2..10).map(|n| format!("127.0.0.{n}")).collect();
    let mut crowd = silent_crowd(addr, sources, 4, Arc::clone(&stop)).await;
    let succeeded = good_clients(addr, 40).await;
    stop.store(true, Ordering::Relaxed);
    crowd.abort_all();
    at_least_95_percent(succeeded, 40, "32 silent sockets from 8 sources, 16 places");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_source_leave_room_for_everyone_else() {
    // 100 places, 20 per source: one host opens 60 idle WebWire connections.
    let (server, addr) = start(|b| b.max_connections(100).max_connections_per_source(20)).await;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..60 {
        let Some(socket) = silent("127.0.0.2", addr).await else {
            refused += 1;
            continue;
        };
        match tokio_tungstenite::client_async(format!("ws://{addr}/"), socket).await {
            Ok((mut ws, _)) => {
                let _accept_conf = bounded(ws.next()).await;
                held.push(ws);
            }
            Err(_) => refused += 1,
        }
    }
    assert_eq!(
        (held.len(), refused),
        (20, 40),
        "the source holds its share only"
    );
    assert_eq!(server.connection_count(), 20);
    let succeeded = good_clients(addr, 40).await;
    at_least_95_percent(succeeded, 40, "60 idle connections from one source");
}

/// Opens a WebSocket from `source` with `X-Forwarded-For: forwarded`; the upgrade's status.
async fn upgrade_from(
    source: &str,
    addr: SocketAddr,
    forwarded: &str,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = silent(source, addr).await.ok_or(0u16)?;
    let mut request = format!("ws://{addr}/")
        .into_client_request()
        .map_err(|_| 0u16)?;
    request
        .headers_mut()
        .insert("x-forwarded-for", forwarded.parse().map_err(|_| 0u16)?);
    match tokio_tungstenite::client_async(request, socket).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(_) => Err(0),
    }
}

/// Reports each connection's address on a channel.
struct Addresses(tokio::sync::mpsc::UnboundedSender<Option<SocketAddr>>);

impl Handler for Addresses {
    async fn connected(&self, conn: &Connection) {
        let _ = self.0.send(conn.remote_addr());
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_limits_count_the_forwarded_clients() {
    let (seen, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let server = Server::builder(Addresses(seen))
        .trusted_proxies(["127.0.0.3".parse().expect("an address")])
        .max_connections_per_source(2)
        .build()
        .expect("valid");
    let addr = listen(&server).await;
    // Through the proxy: each forwarded client is its own source.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            upgrade_from("127.0.0.3", addr, "203.0.113.7")
                .await
                .expect("upgraded"),
        );
        let seen = bounded(seen_rx.recv()).await.flatten().expect("an address");
        assert_eq!(seen, "203.0.113.7:0".parse().expect("an address"));
    }
    assert_eq!(
        upgrade_from("127.0.0.3", addr, "203.0.113.7").await.err(),
        Some(503)
    );
    // A hop appended by the proxy chain: the last untrusted one counts.
    held.push(
        upgrade_from("127.0.0.3", addr, "198.51.100.1, 127.0.0.3")
            .await
            .expect("another client"),
    );
    let seen = bounded(seen_rx.recv()).await.flatten().expect("an address");
    assert_eq!(seen.ip().to_string(), "198.51.100.1");
    // From an untrusted peer the header is ignored.
    held.push(
        upgrade_from("127.0.0.4", addr, "203.0.113.7")
            .await
            .expect("upgraded"),
    );
    let seen = bounded(seen_rx.recv()).await.flatten().expect("an address");
    assert_eq!(seen.ip().to_string(), "127.0.0.4");
}
