//! Helpers shared by the integration tests: the golden vectors, and a raw WebSocket peer
//! that speaks bytes, so server tests do not depend on our own client.

// Each test file uses a different subset of these helpers, through `mod common`.
#![allow(dead_code, unreachable_pub)]

#[cfg(any(feature = "redis", feature = "nats"))]
pub mod daemon;
pub mod example;
#[cfg(feature = "nats")]
pub mod nats;
pub mod nodes;
pub mod probe;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
pub mod redis_cluster;
pub mod script;
pub mod topics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_webwire::client::{ClientHandler, Reconnect};
use tokio_webwire::http::StatusCode;
use tokio_webwire::protocol::Name;
use tokio_webwire::server::{
    Connection, Handler, HandlerResult, SendError, Server, UpgradeRequest,
};
use tokio_webwire::{Client, Payload};

const VENDORED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/protocol-vectors.json"
);

/// Where the golden vectors are kept for all implementations, when the crate is checked
/// out beside them.
pub const SHARED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/protocol-vectors.json"
);

/// Every golden vector of PROTOCOL.md §7, from the vendored copy, which must equal the
/// shared one where that exists.
pub fn vectors() -> Vec<Value> {
    let text = std::fs::read_to_string(VENDORED).expect("vendored vectors");
    if let Ok(shared) = std::fs::read_to_string(SHARED) {
        assert_eq!(
            shared, text,
            "tests/data/protocol-vectors.json differs from {SHARED}"
        );
    }
    serde_json::from_str::<Vec<Value>>(&text).expect("vectors are a JSON array")
}

/// The bytes of the golden vector `name`.
pub fn vector(name: &str) -> Vec<u8> {
    let all = vectors();
    let found = all
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name}"));
    unhex(found["hex"].as_str().expect("hex is a string"))
}

/// Hex digits (no spaces) to bytes.
pub fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0, "odd hex {hex}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// The subscription policy of the topics extension's tests: any topic but `secret`.
pub fn all_but_secret(topic: &str) -> Result<(), tokio_webwire::server::SubscribeRefused> {
    if topic == "secret" {
        return Err(tokio_webwire::server::SubscribeRefused);
    }
    Ok(())
}

/// The `subscribe_requested` of a test's `Handler` that follows [`all_but_secret`], written
/// inside its `impl Handler for …` block: `subscribe_all_but_secret!();`.
#[macro_export]
macro_rules! subscribe_all_but_secret {
    () => {
        async fn subscribe_requested(
            &self,
            _: &tokio_webwire::server::Connection,
            topic: &str,
        ) -> Result<(), tokio_webwire::server::SubscribeRefused> {
            $crate::common::all_but_secret(topic)
        }
    };
}

/// Counts its `before_upgrade` calls; refuses with the status in `X-Refuse`, if any.
#[derive(Default)]
pub struct CountingHook(pub AtomicUsize);

impl Handler for CountingHook {
    async fn before_upgrade(&self, request: &mut UpgradeRequest) -> Result<(), StatusCode> {
        self.0.fetch_add(1, Ordering::SeqCst);
        match request.headers().get("x-refuse") {
            Some(status) => Err(StatusCode::from_bytes(status.as_bytes()).expect("a status")),
            None => Ok(()),
        }
    }
}

/// Answers every request with its payload.
#[allow(dead_code)] // Not every test binary uses it.
pub struct Echo;

impl Handler for Echo {
    async fn request(&self, _: &Connection, _: Name, payload: Payload) -> HandlerResult {
        Ok(payload)
    }
}

/// The session `store` keeps under `key`, which must be there.
pub async fn found(
    store: &impl tokio_webwire::session::SessionStore,
    key: &str,
) -> tokio_webwire::Session {
    bounded(store.lookup(key))
        .await
        .expect("looked up")
        .expect("found")
}

/// Every await in a test is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Awaits `future` for at most [`LIMIT`].
pub async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, future)
        .await
        .expect("test step timed out")
}

/// Starts `server`'s shutdown on a task of its own and returns once it has begun.
pub async fn begin_shutdown<H: Handler>(server: &Server<H>) -> tokio::task::JoinHandle<()> {
    let shutdown = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown().await }
    });
    bounded(async {
        while !server.is_shutting_down() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    shutdown
}

/// `n` of our clients connected to `addr`, without reconnection, requests bounded by [`LIMIT`].
pub async fn clients(addr: SocketAddr, n: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let client = bounded(
            Client::builder()
                .reconnect(Reconnect::Off)
                .request_timeout(LIMIT)
                .connect(format!("ws://{addr}/")),
        )
        .await
        .expect("a client connects");
        clients.push(client);
    }
    clients
}

/// Our client connected to `addr` with `handler`, reconnecting as `reconnect` says,
/// requests bounded by [`LIMIT`].
pub async fn client_with<H: ClientHandler>(
    addr: SocketAddr,
    reconnect: Reconnect,
    handler: H,
) -> Client {
    bounded(
        Client::builder()
            .reconnect(reconnect)
            .request_timeout(LIMIT)
            .handler(handler)
            .connect(format!("ws://{addr}/")),
    )
    .await
    .expect("connects")
}

/// Signals `payload` to `conn` until a signal is refused, as to a peer that stopped
/// reading; returns how many were accepted and the refusal.
pub async fn flood(conn: &Connection, payload: Payload) -> (usize, SendError) {
    let mut sent = 0usize;
    loop {
        match bounded(conn.signal("flood", payload.clone())).await {
            Ok(()) => sent += 1,
            Err(error) => return (sent, error),
        }
    }
}

/// Connects `socket` (set up by the caller: a source address, buffer sizes) to `addr` and
/// upgrades it to a WebSocket; nothing is read yet.
pub async fn websocket_over(
    socket: tokio::net::TcpSocket,
    addr: SocketAddr,
) -> WebSocketStream<TcpStream> {
    let stream = bounded(socket.connect(addr)).await.expect("connect");
    let (ws, _) = bounded(tokio_tungstenite::client_async(
        format!("ws://{addr}/"),
        stream,
    ))
    .await
    .expect("upgrade");
    ws
}

/// Starts `server` on exactly `addr`, as a server restarted on the port of one that
/// stopped: the bind is retried until the old listener has let go of the port.
pub async fn listen_on<H: Handler>(server: &Server<H>, addr: SocketAddr) {
    let listener = bounded(async {
        loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => return listener,
                Err(_) => tokio::task::yield_now().await,
            }
        }
    })
    .await;
    tokio::spawn(server.serve(listener));
}

/// Starts `server` on a fresh port of 127.0.0.1 and returns its address.
pub async fn listen<H: Handler>(server: &Server<H>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(server.serve(listener));
    addr
}

/// An HTTP upgrade request head for `path`, with a `Host` line for each of `hosts` and
/// `extra` header lines.
pub fn upgrade_head(path: &str, hosts: &[&str], extra: &str) -> String {
    let hosts: String = hosts
        .iter()
        .map(|host| format!("Host: {host}\r\n"))
        .collect();
    format!(
        "GET {path} HTTP/1.1\r\n{hosts}{extra}Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Sends `request` on `io` and returns the status line of the answer (a 101 is followed
/// by a WebSocket, not an end, so only that line is read); `io` stays open.
pub async fn status_line_on<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    request: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(io.write_all(request.as_bytes()))
        .await
        .expect("sent");
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        line.push(bounded(io.read_u8()).await.expect("an answer"));
    }
    String::from_utf8(line).expect("text").trim_end().to_owned()
}

/// A raw WebSocket peer: sends and receives WebWire frames as bytes.
pub struct RawClient<S = MaybeTlsStream<TcpStream>> {
    pub ws: WebSocketStream<S>,
}

impl RawClient {
    /// Connects without reading anything.
    pub async fn connect_only(addr: SocketAddr) -> RawClient {
        let (ws, _) = bounded(tokio_tungstenite::connect_async(format!("ws://{addr}/")))
            .await
            .expect("WebSocket connect");
        RawClient { ws }
    }

    /// Connects and reads the server's handshake, which it returns.
    pub async fn connect(addr: SocketAddr) -> (RawClient, Bytes) {
        let mut client = Self::connect_only(addr).await;
        let accept_conf = client.recv().await;
        (client, accept_conf)
    }

    /// Connects to `server` through an in-memory pipe of `buffer` bytes each way, which
    /// the server accepts as a headless connection. Unlike a socket, the pipe wakes its
    /// reader at once, so tests with paused time never see the clock jump past a message
    /// that the kernel has not yet delivered.
    pub async fn connect_in_memory<H: Handler>(
        server: &Server<H>,
        buffer: usize,
    ) -> (RawClient<DuplexStream>, Bytes) {
        let (ours, theirs) = tokio::io::duplex(buffer);
        server.serve_connection(theirs, None);
        let (ws, _) = bounded(tokio_tungstenite::client_async("ws://in-memory/", ours))
            .await
            .expect("WebSocket handshake");
        let mut client = RawClient { ws };
        let accept_conf = client.recv().await;
        (client, accept_conf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    /// Sends one binary frame.
    pub async fn send(&mut self, frame: impl Into<Bytes>) {
        bounded(self.ws.send(WsMessage::Binary(frame.into())))
            .await
            .expect("send");
    }

    /// Receives the next binary frame (skipping pings and pongs); panics on anything else.
    pub async fn recv(&mut self) -> Bytes {
        loop {
            match self.next().await {
                Some(WsMessage::Binary(frame)) => return frame,
                Some(WsMessage::Ping(_) | WsMessage::Pong(_)) => {}
                other => panic!("expected a binary frame, got {other:?}"),
            }
        }
    }

    /// Sends the golden vector `sent` and checks that the answer is the vector `expected`,
    /// byte for byte.
    pub async fn answered_vector(&mut self, sent: &str, expected: &str) {
        self.send(vector(sent)).await;
        assert_eq!(&self.recv().await[..], &vector(expected)[..]);
    }

    /// The next message, or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<WsMessage> {
        match bounded(self.ws.next()).await {
            Some(Ok(message)) => Some(message),
            Some(Err(_)) | None => None,
        }
    }

    /// Reads until the server's close frame and returns it (frames before it are skipped).
    /// Like a well-behaved client, it then reads on until the stream ends, which sends the
    /// answer to the close frame (tungstenite writes it on the next read).
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        loop {
            match self.next().await {
                Some(WsMessage::Close(frame)) => {
                    while self.next().await.is_some() {}
                    return frame;
                }
                Some(_) => {}
                None => return None,
            }
        }
    }
}
