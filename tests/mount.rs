//! A server mounted in an HTTP application (features `hyper` and `axum`): the
//! application's router takes the request and hands the upgrade over. Round trips under
//! hyper and axum, what `before_upgrade` sees (path, header, a layer's extension), the
//! same answers as on the server's own listener, limits, timeouts, and the shutdown.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use common::{CountingHook, RawClient, begin_shutdown, bounded};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_webwire::client::Reconnect;
use tokio_webwire::http::{Request, Response, StatusCode};
use tokio_webwire::protocol::Name;
use tokio_webwire::server::{
    CloseReason, Connection, Handler, HandlerResult, Server, UpgradeRequest,
};
use tokio_webwire::{Client, ConnectError, Payload, RequestError};

/// What a layer of the application puts on every request.
#[derive(Clone, Debug, PartialEq)]
struct Tag(&'static str);

/// What `before_upgrade` found, attached to the connection.
#[derive(Clone, Debug, Default, PartialEq)]
struct Seen {
    path: String,
    token: Option<String>,
    tag: Option<Tag>,
}

/// Attaches what it sees; refuses `/ws/closed` with 451; echoes requests, prefixed with the
/// attached token; reports connections and disconnections.
#[derive(Clone)]
struct App {
    connected: mpsc::UnboundedSender<(Option<Seen>, Option<SocketAddr>)>,
    disconnected: mpsc::UnboundedSender<CloseReason>,
}

impl Handler for App {
    async fn before_upgrade(&self, request: &mut UpgradeRequest) -> Result<(), StatusCode> {
        if request.uri().path() == "/ws/closed" {
            return Err(StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
        }
        let seen = Seen {
            path: request.uri().path().to_owned(),
            token: request
                .headers()
                .get("x-token")
                .and_then(|token| token.to_str().ok())
                .map(Into::into),
            tag: request.extensions().get::<Tag>().cloned(),
        };
        request.attach(seen);
        Ok(())
    }

    async fn connected(&self, conn: &Connection) {
        let _ = self
            .connected
            .send((conn.get::<Seen>().cloned(), conn.remote_addr()));
    }

    async fn disconnected(&self, _conn: &Connection, reason: &CloseReason) {
        let _ = self.disconnected.send(reason.clone());
    }

    async fn request(&self, conn: &Connection, _name: Name, payload: Payload) -> HandlerResult {
        let token = conn.get::<Seen>().and_then(|seen| seen.token.clone());
        let text = payload.to_text()?;
        Ok(Payload::utf8(format!(
            "{}:{text}",
            token.unwrap_or_default()
        )))
    }
}

struct Events {
    connected: mpsc::UnboundedReceiver<(Option<Seen>, Option<SocketAddr>)>,
    disconnected: mpsc::UnboundedReceiver<CloseReason>,
}

fn app() -> (App, Events) {
    let (connected, connected_rx) = mpsc::unbounded_channel();
    let (disconnected, disconnected_rx) = mpsc::unbounded_channel();
    let events = Events {
        connected: connected_rx,
        disconnected: disconnected_rx,
    };
    (
        App {
            connected,
            disconnected,
        },
        events,
    )
}

/// Serves an axum router with `server` at `/ws` (and `/ws/closed`), a page at `/`, and a
/// layer that tags every request; with the client's address.
async fn serve_axum(server: &Server<App>) -> SocketAddr {
    let router = Router::new()
        .route("/", get(|| async { "the page" }))
        .route("/ws", get(tokio_webwire::axum::upgrade::<App>))
        .route("/ws/closed", get(tokio_webwire::axum::upgrade::<App>))
        .with_state(server.clone())
        .layer(Extension(Tag("from a layer")));
    serve_router(router).await
}

/// Serves `router` on a fresh port, with the client's address.
async fn serve_router(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Serves `server` at `/ws` on a bare hyper 1 server; other paths get 404.
async fn serve_hyper<H: Handler>(server: &Server<H>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = server.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, remote)) = listener.accept().await else {
                return;
            };
            let server = server.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let server = server.clone();
                async move {
                    let response: Response<String> = match request.uri().path() {
                        "/ws" => server.upgrade(request, Some(remote)).await,
                        _ => {
                            let mut response = Response::new("not here".to_owned());
                            *response.status_mut() = StatusCode::NOT_FOUND;
                            response
                        }
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .with_upgrades(),
            );
        }
    });
    addr
}

fn client(url: String) -> impl Future<Output = Result<Client, ConnectError>> {
    Client::builder()
        .reconnect(Reconnect::Off)
        .header("X-Token", "t0k3n")
        .connect(url)
}

/// A server mounted by `serve`, our client connected to its `/ws`, and what the
/// connection's `connected` hook read.
struct Mounted {
    server: Server<App>,
    events: Events,
    addr: SocketAddr,
    client: Client,
    seen: Option<Seen>,
    remote: Option<SocketAddr>,
}

async fn mounted<F: Future<Output = SocketAddr>>(serve: impl FnOnce(Server<App>) -> F) -> Mounted {
    let (app, mut events) = app();
    let server = Server::new(app);
    let addr = serve(server.clone()).await;
    let client = bounded(client(format!("ws://{addr}/ws"))).await.unwrap();
    let (seen, remote) = bounded(events.connected.recv()).await.unwrap();
    Mounted {
        server,
        events,
        addr,
        client,
        seen,
        remote,
    }
}

#[tokio::test]
async fn a_round_trip_through_hyper() {
    let Mounted {
        server,
        mut events,
        addr,
        client,
        seen,
        remote,
    } = mounted(|server| async move { serve_hyper(&server).await }).await;
    let seen = seen.expect("attached in before_upgrade");
    assert_eq!(seen.path, "/ws");
    assert_eq!(seen.token.as_deref(), Some("t0k3n"));
    assert_eq!(seen.tag, None, "no layer here");
    assert!(remote.is_some_and(|addr| addr.ip().is_loopback()));
    let reply = bounded(client.request("echo", "hi")).await.unwrap();
    assert_eq!(reply, Payload::utf8("t0k3n:hi"));
    assert_eq!(server.connection_count(), 1);

    // The router's own answers are untouched.
    assert_eq!(
        status(addr, "GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n").await,
        "HTTP/1.1 404 Not Found"
    );

    bounded(server.shutdown()).await;
    assert_eq!(
        bounded(events.disconnected.recv()).await,
        Some(CloseReason::ServerShutdown)
    );
    assert_eq!(server.connection_count(), 0);
    let after = bounded(client.request("echo", "gone?")).await;
    assert!(
        matches!(
            after,
            Err(RequestError::Disconnected | RequestError::ClientClosed)
        ),
        "{after:?}"
    );
}

#[tokio::test]
async fn before_upgrade_sees_the_path_a_header_and_a_layers_extension_under_axum() {
    let Mounted {
        mut events,
        client,
        seen,
        remote,
        ..
    } = mounted(|server| async move { serve_axum(&server).await }).await;
    assert_eq!(
        seen,
        Some(Seen {
            path: "/ws".into(),
            token: Some("t0k3n".into()),
            tag: Some(Tag("from a layer")),
        })
    );
    // From axum's ConnectInfo.
    assert!(remote.is_some_and(|addr| addr.ip().is_loopback()));
    let reply = bounded(client.request("echo", "über axum")).await.unwrap();
    assert_eq!(reply, Payload::utf8("t0k3n:über axum"));
    client.close().await;
    assert_eq!(
        bounded(events.disconnected.recv()).await,
        Some(CloseReason::ClientClosed)
    );
}

#[tokio::test]
async fn the_shutdown_closes_axum_mounted_connections() {
    let (app, mut events) = app();
    let server = Server::new(app);
    let addr = serve_axum(&server).await;
    let (ws, _) = bounded(tokio_tungstenite::connect_async(format!("ws://{addr}/ws")))
        .await
        .unwrap();
    let mut raw = RawClient { ws };
    raw.recv().await; // AcceptConf
    bounded(events.connected.recv()).await;
    let shutdown = begin_shutdown(&server).await;
    // Read (and so answered) while the server closes: it need not wait for the answer.
    assert_eq!(
        raw.closed().await.map(|frame| frame.code),
        Some(CloseCode::Away)
    );
    bounded(shutdown).await.unwrap();
    assert_eq!(
        bounded(events.disconnected.recv()).await,
        Some(CloseReason::ServerShutdown)
    );
    // Upgrades after it: 503, from the same check as the server's own listener.
    assert_eq!(
        status(addr, &upgrade_request("/ws", "")).await,
        "HTTP/1.1 503 Service Unavailable"
    );
}

/// An upgrade request for `path`, with `extra` header lines.
fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends `request` and returns the answer's head (status line and headers), and the
/// socket, still open.
async fn exchange(addr: SocketAddr, request: &str) -> (String, tokio::net::TcpStream) {
    let mut socket = bounded(tokio::net::TcpStream::connect(addr)).await.unwrap();
    bounded(socket.write_all(request.as_bytes())).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(bounded(socket.read_u8()).await.expect("an answer"));
    }
    (String::from_utf8(head).unwrap(), socket)
}

async fn head(addr: SocketAddr, request: &str) -> String {
    exchange(addr, request).await.0
}

async fn status(addr: SocketAddr, request: &str) -> String {
    let head = head(addr, request).await;
    head.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn axum_mounted_upgrades_get_the_servers_answers() {
    let (app, _events) = app();
    let server = Server::builder(app).max_connections(1).build().unwrap();
    let addr = serve_axum(&server).await;
    let not_an_upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(
        status(addr, not_an_upgrade).await,
        "HTTP/1.1 400 Bad Request"
    );
    let old = upgrade_request("/ws", "").replace("Version: 13", "Version: 8");
    let answer = head(addr, &old).await;
    assert!(
        answer.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{answer}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("sec-websocket-version: 13\r\n"),
        "{answer}"
    );
    let foreign = upgrade_request("/ws", "Origin: https://evil.example\r\n");
    assert_eq!(status(addr, &foreign).await, "HTTP/1.1 403 Forbidden");
    assert_eq!(
        status(addr, &upgrade_request("/ws/closed", "")).await,
        "HTTP/1.1 451 Unavailable For Legal Reasons"
    );
    // The limit of one connection: the first is upgraded (and kept open), the second
    // gets 503.
    let (first, _open) = exchange(addr, &upgrade_request("/ws", "")).await;
    assert!(
        first.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{first}"
    );
    assert_eq!(
        status(addr, &upgrade_request("/ws", "")).await,
        "HTTP/1.1 503 Service Unavailable"
    );
    let page = status(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(page, "HTTP/1.1 200 OK");
}

/// hyper reads the head but checks no `Host` (it keeps both of two, and serves a request
/// without one): the server's check gives the same answers as on its own listener. None
/// or two is 400, an `Origin` with user information 403, and a default port spelled on
/// one side only the same origin.
#[tokio::test]
async fn axum_mounted_upgrades_check_host_and_origin_alike() {
    let server = Server::new(CountingHook::default());
    let addr = serve_counting(&server).await;
    let upgrade = |extra: &str| upgrade_request("/ws", extra);
    let no_host = upgrade("").replace("Host: x\r\n", "");
    assert_eq!(status(addr, &no_host).await, "HTTP/1.1 400 Bad Request");
    let two_hosts = upgrade("Host: evil.example\r\nOrigin: http://x\r\n");
    assert_eq!(status(addr, &two_hosts).await, "HTTP/1.1 400 Bad Request");
    let user_info = upgrade("Origin: http://evil@x\r\n");
    assert_eq!(status(addr, &user_info).await, "HTTP/1.1 403 Forbidden");
    let other_default = upgrade("Origin: http://x\r\n").replace("Host: x", "Host: x:443");
    assert_eq!(status(addr, &other_default).await, "HTTP/1.1 403 Forbidden");
    assert_eq!(server.handler().0.load(Ordering::SeqCst), 0, "never asked");
    let default_port = upgrade("Origin: https://x\r\n").replace("Host: x", "Host: x:443");
    let (answer, _open) = exchange(addr, &default_port).await;
    assert!(
        answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{answer}"
    );
}

/// Serves an axum router with `server` (its hook counting) at `/ws`.
async fn serve_counting(server: &Server<CountingHook>) -> SocketAddr {
    let router = Router::new()
        .route("/ws", get(tokio_webwire::axum::upgrade::<CountingHook>))
        .with_state(server.clone());
    serve_router(router).await
}

/// A valid upgrade request as a router would hand it over, but not through hyper's
/// server (so without its `OnUpgrade`).
fn handed_over(path: &str) -> Request<()> {
    Request::get(path)
        .header("host", "x")
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap()
}

#[tokio::test]
async fn a_request_hyper_cannot_upgrade_gets_500_and_frees_its_place() {
    let server = Server::builder(CountingHook::default())
        .max_connections(1)
        .build()
        .unwrap();
    for _ in 0..2 {
        let response: Response<String> = bounded(server.upgrade(handed_over("/ws"), None)).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(server.connection_count(), 0);
    }
    // Found out before the hook: it is not asked about a request that cannot be upgraded.
    assert_eq!(server.handler().0.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hook_that_hangs_is_answered_with_503_at_the_handshake_timeout() {
    struct Hanging;
    impl Handler for Hanging {
        async fn before_upgrade(&self, _: &mut UpgradeRequest) -> Result<(), StatusCode> {
            std::future::pending().await
        }
    }
    let server = Server::builder(Hanging)
        .handshake_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Through hyper's server, whose requests can be upgraded: the hook is asked.
    let addr = serve_hyper(&server).await;
    let started = tokio::time::Instant::now();
    let answer = exchange(addr, &upgrade_request("/ws", "")).await.0;
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    // Paused time moves on while every task waits, the socket's read included.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
}
