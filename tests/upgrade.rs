//! The upgrade's checks over a real socket: the `Origin` check (cross-site WebSocket
//! hijacking), and data `before_upgrade` attaches for the connection's later hooks.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{CountingHook, begin_shutdown, bounded, listen, status_line_on, upgrade_head};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio_webwire::http::StatusCode;
use tokio_webwire::protocol::Name;
use tokio_webwire::server::{Connection, Handler, HandlerResult, Server, UpgradeRequest};
use tokio_webwire::{Client, Payload};

/// The status line the server answers an upgrade request with, `origin` in its `Origin`
/// header (none if `None`), `Host: 127.0.0.1:<port>` as browsers send it.
async fn status_for(addr: SocketAddr, origin: Option<&str>) -> String {
    let origin = origin.map_or(String::new(), |origin| format!("Origin: {origin}\r\n"));
    status_with(addr, &origin).await
}

/// The status line the server answers an upgrade request with, `extra` header lines in it.
async fn status_with(addr: SocketAddr, extra: &str) -> String {
    let mut socket = bounded(TcpStream::connect(addr)).await.unwrap();
    status_on(&mut socket, addr, extra).await
}

/// [`status_with`] on a socket already connected; the socket stays open.
async fn status_on(socket: &mut TcpStream, addr: SocketAddr, extra: &str) -> String {
    answer_on(socket, &[&addr.to_string()], extra).await
}

/// The status line the server answers an upgrade request with, with a `Host` line for
/// each of `hosts` (HTTP/1.1 asks for exactly one) and `extra` header lines.
async fn status_hosts(addr: SocketAddr, hosts: &[&str], extra: &str) -> String {
    let mut socket = bounded(TcpStream::connect(addr)).await.unwrap();
    answer_on(&mut socket, hosts, extra).await
}

async fn answer_on(socket: &mut TcpStream, hosts: &[&str], extra: &str) -> String {
    status_line_on(socket, &upgrade_head("/ws", hosts, extra)).await
}

const SWITCHING: &str = "HTTP/1.1 101 Switching Protocols";
const BAD_REQUEST: &str = "HTTP/1.1 400 Bad Request";
const FORBIDDEN: &str = "HTTP/1.1 403 Forbidden";
const UNAVAILABLE: &str = "HTTP/1.1 503 Service Unavailable";

#[tokio::test]
async fn a_page_of_another_site_is_refused_by_default() {
    let server = Server::new(());
    let addr = listen(&server).await;
    // A page of another site: the browser would add the user's cookies.
    assert_eq!(
        status_for(addr, Some("https://evil.example")).await,
        FORBIDDEN
    );
    // Same host and port, another port, `null` (sandboxed frames, file: pages).
    let same = format!("http://{addr}");
    assert_eq!(status_for(addr, Some(&same)).await, SWITCHING);
    let other_port = format!("http://127.0.0.1:{}", addr.port() + 1);
    assert_eq!(status_for(addr, Some(&other_port)).await, FORBIDDEN);
    assert_eq!(status_for(addr, Some("null")).await, FORBIDDEN);
    // Not a browser: no Origin, nothing to check.
    assert_eq!(status_for(addr, None).await, SWITCHING);
}

/// HTTP/1.1 requires exactly one `Host` (RFC 9112 §3.2): a request without one, or with
/// two (the origin check would compare with one of them, the application may read the
/// other), is answered 400, as the Go reference does, before the hook is asked.
#[tokio::test]
async fn an_upgrade_without_exactly_one_host_is_a_bad_request() {
    let server = Server::new(CountingHook::default());
    let addr = listen(&server).await;
    let own = addr.to_string();
    assert_eq!(status_hosts(addr, &[], "").await, BAD_REQUEST);
    assert_eq!(status_hosts(addr, &[&own, &own], "").await, BAD_REQUEST);
    // The first is the page's own host: the origin check alone would have passed it.
    let origin = format!("Origin: http://{own}\r\n");
    let two = status_hosts(addr, &[&own, "evil.example"], &origin).await;
    assert_eq!(two, BAD_REQUEST);
    assert_eq!(server.handler().0.load(Ordering::SeqCst), 0, "never asked");
    assert_eq!(status_hosts(addr, &[&own], &origin).await, SWITCHING);
    assert_eq!(server.handler().0.load(Ordering::SeqCst), 1);
}

/// The same origin is the same scheme, host and port: a default port written on one side
/// only (`Host: a:443` for the page `https://a`) is still the same origin, another port
/// or the other scheme's default is not. An `Origin` with user information is no page's
/// (browsers never send one) and is refused, as the Go reference does.
#[tokio::test]
async fn default_ports_are_the_same_origin_and_user_information_is_refused() {
    let server = Server::new(());
    let addr = listen(&server).await;
    for (host, origin, answer) in [
        ("a:443", "https://a", SWITCHING),
        ("a:80", "http://a", SWITCHING),
        ("A:443", "HTTPS://a", SWITCHING),
        ("a", "https://a:443", SWITCHING),
        ("[::1]:443", "https://[::1]", SWITCHING),
        ("a:443", "http://a", FORBIDDEN),
        ("a:80", "https://a", FORBIDDEN),
        ("a", "https://a:8443", FORBIDDEN),
        ("a:8443", "https://a", FORBIDDEN),
        ("a:443", "https://a:x", FORBIDDEN),
    ] {
        let extra = format!("Origin: {origin}\r\n");
        assert_eq!(
            status_hosts(addr, &[host], &extra).await,
            answer,
            "Host: {host}, Origin: {origin}"
        );
    }
    for origin in [
        format!("http://evil@{addr}"),
        format!("http://user:secret@{addr}"),
        format!("http://evil.example@{addr}"),
    ] {
        assert_eq!(status_for(addr, Some(&origin)).await, FORBIDDEN, "{origin}");
    }
    assert_eq!(
        status_for(addr, Some(&format!("http://{addr}"))).await,
        SWITCHING
    );
}

#[tokio::test]
async fn listed_origins_pass_and_any_origin_turns_the_check_off() {
    let server = Server::builder(())
        .allowed_origins(["https://app.example.com"])
        .build()
        .unwrap();
    let addr = listen(&server).await;
    let listed = status_for(addr, Some("https://app.example.com")).await;
    assert_eq!(listed, SWITCHING);
    let other = status_for(addr, Some("https://evil.example")).await;
    assert_eq!(other, FORBIDDEN);
    assert_eq!(
        status_for(addr, Some(&format!("http://{addr}"))).await,
        SWITCHING,
        "the server's own host still passes"
    );

    let open = Server::builder(()).allow_any_origin().build().unwrap();
    let addr = listen(&open).await;
    let foreign = status_for(addr, Some("https://evil.example")).await;
    assert_eq!(foreign, SWITCHING);
}

#[tokio::test]
async fn a_refused_origin_never_reaches_the_handler() {
    struct Counting(mpsc::UnboundedSender<()>);
    impl Handler for Counting {
        async fn before_upgrade(&self, _: &mut UpgradeRequest) -> Result<(), StatusCode> {
            let _ = self.0.send(());
            Ok(())
        }
    }
    let (tx, mut asked) = mpsc::unbounded_channel();
    let server = Server::new(Counting(tx));
    let addr = listen(&server).await;
    assert_eq!(
        status_for(addr, Some("https://evil.example")).await,
        FORBIDDEN
    );
    assert_eq!(status_for(addr, None).await, SWITCHING);
    bounded(asked.recv()).await;
    assert!(
        asked.try_recv().is_err(),
        "asked once: for the second request"
    );
}

#[derive(Clone, Debug, PartialEq)]
struct User(String);

/// Authenticates from the `X-User` header and attaches the user; answers `whoami` with it.
struct Authenticating {
    connected: mpsc::UnboundedSender<(Option<User>, String, Option<SocketAddr>)>,
}

impl Handler for Authenticating {
    async fn before_upgrade(&self, request: &mut UpgradeRequest) -> Result<(), StatusCode> {
        let user = request
            .headers()
            .get("x-user")
            .and_then(|value| value.to_str().ok())
            .ok_or(StatusCode::UNAUTHORIZED)?;
        let user = User(user.to_owned());
        assert_eq!(request.attach(user.clone()), None);
        // The path, for the `connected` hook to report.
        let path = request.uri().path().to_owned();
        request.attach(path);
        Ok(())
    }

    async fn connected(&self, conn: &Connection) {
        let path = conn.get::<String>().cloned().unwrap_or_default();
        let _ = self
            .connected
            .send((conn.get::<User>().cloned(), path, conn.remote_addr()));
    }

    async fn request(&self, conn: &Connection, _name: Name, _payload: Payload) -> HandlerResult {
        let user = conn.get::<User>().map_or("nobody", |user| user.0.as_str());
        Ok(Payload::utf8(user))
    }
}

#[tokio::test]
async fn data_attached_before_the_upgrade_reaches_every_later_hook() {
    let (tx, mut connected) = mpsc::unbounded_channel();
    let server = Server::new(Authenticating { connected: tx });
    let addr = listen(&server).await;

    let client = bounded(
        Client::builder()
            .header("X-User", "alice")
            .connect(format!("ws://{addr}/chat")),
    )
    .await
    .unwrap();
    let (user, path, remote) = bounded(connected.recv()).await.unwrap();
    assert_eq!(user, Some(User("alice".into())));
    assert_eq!(path, "/chat");
    assert!(remote.is_some_and(|addr| addr.ip().is_loopback()));
    let reply = bounded(client.request("whoami", "")).await.unwrap();
    assert_eq!(reply, Payload::utf8("alice"));
    client.close().await;

    // Without the header the hook refuses: the client sees the status.
    let refused = bounded(
        Client::builder()
            .reconnect(tokio_webwire::client::Reconnect::Off)
            .connect(format!("ws://{addr}/chat")),
    )
    .await;
    assert_eq!(
        refused.err(),
        Some(tokio_webwire::ConnectError::Http { status: 401 })
    );
    bounded(server.shutdown()).await;
}

#[tokio::test]
async fn a_full_server_answers_503_without_asking_the_hook() {
    let server = Server::builder(CountingHook::default())
        .max_connections(1)
        .build()
        .unwrap();
    let addr = listen(&server).await;
    // Holds the one place (taken before its 101, so before `connect` returns).
    let _first = bounded(Client::builder().connect(format!("ws://{addr}/")))
        .await
        .unwrap();
    assert_eq!(server.handler().0.load(Ordering::SeqCst), 1);
    assert_eq!(status_for(addr, None).await, UNAVAILABLE);
    // The hook may be an auth backend's call: a full server does not make it.
    assert_eq!(server.handler().0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_hook_refusing_with_a_1xx_status_is_answered_with_500() {
    let server = Server::new(CountingHook::default());
    let addr = listen(&server).await;
    for status in ["101", "100"] {
        let answer = status_with(addr, &format!("X-Refuse: {status}\r\n")).await;
        assert_eq!(answer, "HTTP/1.1 500 Internal Server Error", "{status}");
    }
    // Other refusals keep their status.
    let answer = status_with(addr, "X-Refuse: 401\r\n").await;
    assert_eq!(answer, "HTTP/1.1 401 Unauthorized");
}

/// Gates `before_upgrade` of requests with `X-Gate` and the `block` request: each reports
/// it has begun, then waits for a permit of its semaphore.
struct Gated {
    hook_entered: mpsc::UnboundedSender<()>,
    hook_gate: Arc<Semaphore>,
    request_entered: mpsc::UnboundedSender<()>,
    request_gate: Arc<Semaphore>,
}

impl Handler for Gated {
    async fn before_upgrade(&self, request: &mut UpgradeRequest) -> Result<(), StatusCode> {
        if request.headers().contains_key("x-gate") {
            let _ = self.hook_entered.send(());
            let _permit = self.hook_gate.acquire().await;
        }
        Ok(())
    }

    async fn request(&self, _: &Connection, _: Name, payload: Payload) -> HandlerResult {
        let _ = self.request_entered.send(());
        let _permit = self.request_gate.acquire().await;
        Ok(payload)
    }
}

#[tokio::test]
async fn a_hook_that_ends_after_the_shutdown_began_gets_503_not_101() {
    let (hook_entered, mut hook_began) = mpsc::unbounded_channel();
    let (request_entered, mut request_began) = mpsc::unbounded_channel();
    let hook_gate = Arc::new(Semaphore::new(0));
    let request_gate = Arc::new(Semaphore::new(0));
    let server = Server::new(Gated {
        hook_entered,
        hook_gate: Arc::clone(&hook_gate),
        request_entered,
        request_gate: Arc::clone(&request_gate),
    });
    let addr = listen(&server).await;
    // A request in flight holds the shutdown in its first step (draining the handlers),
    // while upgrades are still answered.
    let client = bounded(Client::builder().connect(format!("ws://{addr}/")))
        .await
        .unwrap();
    let in_flight = tokio::spawn(async move { client.request("block", "x").await });
    bounded(request_began.recv()).await;
    let upgrade = tokio::spawn(async move { status_with(addr, "X-Gate: 1\r\n").await });
    bounded(hook_began.recv()).await;

    let shutdown = begin_shutdown(&server).await;
    hook_gate.add_permits(1);
    assert_eq!(bounded(upgrade).await.unwrap(), UNAVAILABLE);

    request_gate.add_permits(1);
    assert!(bounded(in_flight).await.unwrap().is_ok());
    bounded(shutdown).await.unwrap();
}

#[tokio::test]
async fn sockets_beyond_max_pending_upgrades_are_closed_at_once() {
    let server = Server::builder(())
        .max_pending_upgrades(1)
        // Far beyond the test's bound: a socket closed within it was not timed out.
        .handshake_timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let addr = listen(&server).await;
    // Connected and silent: it waits for its upgrade, holding the one place. (Accepted
    // first: the accept loop takes sockets in the order they connected.)
    let mut waiting = bounded(TcpStream::connect(addr)).await.unwrap();
    let mut beyond = bounded(TcpStream::connect(addr)).await.unwrap();
    let mut byte = [0u8; 1];
    let read = bounded(beyond.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed unanswered: {read:?}"
    );

    // The waiting socket is still served.
    assert_eq!(status_on(&mut waiting, addr, "").await, SWITCHING);
    // Its place is given back before the connection's first frame (AcceptConf) is sent:
    // once a byte of it is in, another socket may wait for its upgrade.
    let mut head = b"\r\n".to_vec();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(bounded(waiting.read_u8()).await.unwrap());
    }
    bounded(waiting.read_u8()).await.unwrap();
    assert_eq!(status_with(addr, "").await, SWITCHING);
}
