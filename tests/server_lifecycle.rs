//! The server's life cycle: HTTP upgrade and refusal, headless connections, closing a
//! connection, graceful shutdown (with and without a deadline).
//!
//! Over 600 lines, one subject: a connection's life on the server, from the upgrade
//! request (refused, answered over HTTP, over the limit) to its close or the server's
//! shutdown, all on the probe server of `tests/common/probe.rs` and the raw HTTP helpers
//! here. (A split into upgrade, connection and shutdown files would be the next step.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::probe::{parse, request, start};
use common::{RawClient, bounded, listen, vector};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_webwire::Payload;
use tokio_webwire::protocol::{Message, RequestId};
use tokio_webwire::server::{CloseReason, Handler, Server, UpgradeRequest};

#[tokio::test]
async fn before_upgrade_can_refuse() {
    struct Gatekeeper;
    impl Handler for Gatekeeper {
        async fn before_upgrade(
            &self,
            request: &mut UpgradeRequest,
        ) -> Result<(), tokio_webwire::http::StatusCode> {
            match request.uri().path() {
                "/allowed" => Ok(()),
                _ => Err(tokio_webwire::http::StatusCode::FORBIDDEN),
            }
        }
    }
    let server = Server::new(Gatekeeper);
    let addr = listen(&server).await;
    let refused = bounded(tokio_tungstenite::connect_async(format!(
        "ws://{addr}/other"
    )))
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected 403, got {other:?}"),
    }
    let accepted = bounded(tokio_tungstenite::connect_async(format!(
        "ws://{addr}/allowed"
    )))
    .await;
    assert!(accepted.is_ok());
}

#[tokio::test]
async fn graceful_shutdown_answers_every_request() {
    let (server, mut events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;
    for id in 1..=5 {
        client
            .send(request(id, "gate", Payload::utf8("in flight")))
            .await;
    }
    for _ in 1..=5 {
        bounded(events.entered.recv()).await;
    }
    let shutdown = server.shutdown();
    tokio::pin!(shutdown);
    // Poll once: the shutdown has begun and now waits for the five handlers.
    tokio::select! {
        biased;
        () = &mut shutdown => panic!("shutdown finished with handlers running"),
        () = std::future::ready(()) => {}
    }
    assert!(server.is_shutting_down());
    for id in 6..=8 {
        client
            .send(request(id, "echo", Payload::utf8("late")))
            .await;
    }
    client.send(vector("signal_binary_named")).await;
    client.send(vector("restore_session_request")).await;
    let refused = bounded(tokio_tungstenite::connect_async(format!("ws://{addr}/"))).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 503),
        "{refused:?}"
    );
    let (shutdown_done, replies) = tokio::join!(bounded(&mut shutdown), async {
        let mut replies = Vec::new();
        for _ in 6..=8 {
            replies.push(parse(client.recv().await));
        }
        replies.push(parse(client.recv().await));
        server.handler().gate.add_permits(5);
        for _ in 1..=5 {
            replies.push(parse(client.recv().await));
        }
        let close = client.closed().await;
        (replies, close)
    });
    let () = shutdown_done;
    let (replies, close) = replies;
    // Requests 6..=8 and the restore request (its id is 1) got the shutdown reply ...
    let shutdown_replies = replies
        .iter()
        .filter(|reply| matches!(reply, Message::ReplyShutdown { .. }))
        .count();
    assert_eq!(shutdown_replies, 4, "{replies:?}");
    // ... and the five in flight their real reply: none lost.
    for id in 1..=5 {
        assert!(
            replies.contains(&Message::reply(
                RequestId::from(id),
                Payload::utf8("in flight")
            )),
            "request {id} lost"
        );
    }
    assert_eq!(close.map(|frame| frame.code), Some(CloseCode::Away));
    assert!(
        events.signals.try_recv().is_err(),
        "a signal was handled during shutdown"
    );
    assert_eq!(
        bounded(events.disconnected.recv()).await,
        Some(CloseReason::ServerShutdown)
    );
}

/// Sends raw HTTP and returns the status line of the answer.
async fn http_status(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = bounded(tokio::net::TcpStream::connect(addr)).await.unwrap();
    bounded(socket.write_all(request.as_bytes())).await.unwrap();
    let mut answer = Vec::new();
    bounded(socket.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn requests_that_are_not_upgrades_get_an_http_answer() {
    let (_server, _events, addr) = start(|b| b.max_upgrade_request_size(1024)).await;
    assert_eq!(
        http_status(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await,
        "HTTP/1.1 400 Bad Request"
    );
    assert_eq!(
        http_status(addr, "OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n").await,
        "HTTP/1.1 200 OK"
    );
    let huge = format!("GET / HTTP/1.1\r\nX-Filler: {}\r\n\r\n", "a".repeat(2000));
    assert_eq!(
        http_status(addr, &huge).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(
        http_status(addr, "\x16\x03\x01 not http at all\r\n\r\n").await,
        "HTTP/1.1 400 Bad Request"
    );
}

/// A listener of the test's own (the program's, not the server's) on a free port of
/// 127.0.0.1, and its address.
async fn own_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The next socket of `listener`, upgraded by the program itself with tungstenite's
/// defaults, and where it comes from: a headless WebSocket to hand over.
async fn accept_upgraded(listener: &TcpListener) -> (WebSocketStream<TcpStream>, SocketAddr) {
    let (socket, remote) = listener.accept().await.unwrap();
    let ws = tokio_tungstenite::accept_async(socket).await.unwrap();
    (ws, remote)
}

/// An upgrade request of a WebSocket version `version`.
fn upgrade_request(version: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    )
}

/// Reads an HTTP response head, up to and with its empty line, and nothing after it.
async fn read_response_head(socket: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = bounded(socket.read_u8()).await.expect("a response head");
        head.push(byte);
    }
    String::from_utf8(head).expect("a text head")
}

#[tokio::test]
async fn a_request_sent_one_byte_at_a_time_is_upgraded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_server, _events, addr) = start(|b| b).await;
    let mut socket = bounded(tokio::net::TcpStream::connect(addr)).await.unwrap();
    // Each byte in a segment of its own, so that the server reads them one by one.
    socket.set_nodelay(true).unwrap();
    for byte in upgrade_request("13").bytes() {
        bounded(socket.write_all(&[byte])).await.unwrap();
    }
    let head = read_response_head(&mut socket).await;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    // The AcceptConf frame follows: binary, 11 bytes, type 0x17.
    let mut frame_start = [0u8; 3];
    bounded(socket.read_exact(&mut frame_start)).await.unwrap();
    assert_eq!(frame_start, [0x82, 11, 0x17]);
}

#[tokio::test]
async fn another_websocket_version_gets_426_naming_version_13() {
    use tokio::io::AsyncWriteExt;
    let (_server, _events, addr) = start(|b| b).await;
    for version in ["8", "14", "13, 8"] {
        let mut socket = bounded(tokio::net::TcpStream::connect(addr)).await.unwrap();
        let request = upgrade_request(version);
        bounded(socket.write_all(request.as_bytes())).await.unwrap();
        let head = read_response_head(&mut socket).await;
        let mut lines = head.lines();
        assert_eq!(
            lines.next(),
            Some("HTTP/1.1 426 Upgrade Required"),
            "{version}"
        );
        // RFC 6455 §4.4: the versions the server speaks; RFC 9110 §15.5.22: the
        // protocol to upgrade to.
        let headers: Vec<&str> = lines.collect();
        assert!(headers.contains(&"Sec-WebSocket-Version: 13"), "{head}");
        assert!(headers.contains(&"Upgrade: websocket"), "{head}");
    }
    // Without the header the request is malformed, not of another version.
    let request = upgrade_request("13").replace("Sec-WebSocket-Version: 13\r\n", "");
    assert_eq!(
        http_status(addr, &request).await,
        "HTTP/1.1 400 Bad Request"
    );
}

#[tokio::test]
async fn headless_connections_are_served_and_included_in_shutdown() {
    let (server, mut events, _addr) = start(|b| b).await;
    let (listener, addr) = own_listener().await;
    let accepting = server.clone();
    tokio::spawn(async move {
        // First socket: the program upgrades it itself and hands over the WebSocket.
        let (ws, remote) = accept_upgraded(&listener).await;
        accepting.serve_websocket(ws, Some(remote), Some("upgraded-by-the-program"));
        // Second socket: handed over raw, the server upgrades it.
        let (socket, remote) = listener.accept().await.unwrap();
        accepting.serve_connection(socket, Some(remote));
    });

    let (mut upgraded, accept_conf) = RawClient::connect(addr).await;
    assert_eq!(&accept_conf[..], &vector("accept_conf_defaults")[..]);
    let conn = bounded(events.connected.recv()).await.unwrap();
    assert_eq!(conn.user_agent(), Some("upgraded-by-the-program"));
    assert!(conn.remote_addr().is_some_and(|a| a.ip().is_loopback()));

    let request_with_agent = tokio_webwire::http::Request::builder()
        .uri(format!("ws://{addr}/any/path"))
        .header("Host", addr.to_string())
        .header("User-Agent", "raw-test/1")
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header(
            "Sec-WebSocket-Key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap();
    let (ws, _) = bounded(tokio_tungstenite::connect_async(request_with_agent))
        .await
        .unwrap();
    let mut raw = RawClient { ws };
    assert_eq!(&raw.recv().await[..], &vector("accept_conf_defaults")[..]);
    let conn = bounded(events.connected.recv()).await.unwrap();
    assert_eq!(conn.user_agent(), Some("raw-test/1"));

    for client in [&mut upgraded, &mut raw] {
        client.send(request(1, "echo", Payload::utf8("hi"))).await;
        assert_eq!(
            parse(client.recv().await),
            Message::reply(RequestId::from(1), Payload::utf8("hi"))
        );
    }
    bounded(server.shutdown()).await;
    for client in [&mut upgraded, &mut raw] {
        assert_eq!(
            client.closed().await.map(|frame| frame.code),
            Some(CloseCode::Away)
        );
    }
    for _ in 0..2 {
        assert_eq!(
            bounded(events.disconnected.recv()).await,
            Some(CloseReason::ServerShutdown)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_deadline_stops_stuck_handlers_with_the_shutdown_reply() {
    let (server, mut events, _addr) = start(|b| b.shutdown_timeout(Duration::from_secs(3))).await;
    let (mut client, _) = RawClient::connect_in_memory(&server, 4096).await;
    client
        .send(request(7, "gate", Payload::utf8("never released")))
        .await;
    bounded(events.entered.recv()).await;
    let started = tokio::time::Instant::now();
    // The client reads on, so it answers the close frame at once (the closing handshake).
    let (_, (reply, close)) = tokio::join!(bounded(server.shutdown()), async {
        (client.recv().await, client.closed().await)
    });
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_millis(3100),
        "{elapsed:?}"
    );
    assert_eq!(
        parse(reply),
        Message::ReplyShutdown {
            id: RequestId::from(7)
        }
    );
    assert_eq!(close.map(|frame| frame.code), Some(CloseCode::Away));
}

#[tokio::test]
async fn close_lets_running_handlers_reply_then_closes_with_1000() {
    let (server, mut events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;
    let conn = bounded(events.connected.recv()).await.unwrap();
    client
        .send(request(1, "gate", Payload::utf8("running")))
        .await;
    bounded(events.entered.recv()).await;
    conn.close();
    assert!(conn.is_closed());
    server.handler().gate.add_permits(1);
    assert_eq!(
        parse(client.recv().await),
        Message::reply(RequestId::from(1), Payload::utf8("running"))
    );
    assert_eq!(
        client.closed().await.map(|frame| frame.code),
        Some(CloseCode::Normal)
    );
    assert_eq!(
        bounded(events.disconnected.recv()).await,
        Some(CloseReason::Closed)
    );
    assert!(
        conn.signal("late", Payload::utf8("x")).await.is_err(),
        "a closed connection accepts no signal"
    );
}

#[tokio::test]
async fn a_client_close_frame_ends_the_connection() {
    let (_server, mut events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;
    let conn = bounded(events.connected.recv()).await.unwrap();
    let watcher = tokio::spawn(async move { conn.closed().await });
    let going = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    bounded(client.ws.close(Some(going))).await.unwrap();
    bounded(watcher).await.unwrap();
    assert_eq!(
        bounded(events.disconnected.recv()).await,
        Some(CloseReason::ClientClosed)
    );
    // The closing handshake: the server answers with the same code.
    assert_eq!(
        client.closed().await.map(|frame| frame.code),
        Some(CloseCode::Normal)
    );
}

#[tokio::test]
async fn a_request_waiting_for_a_slot_during_shutdown_gets_the_shutdown_reply() {
    let (server, mut events, _addr) = start(|b| b.max_concurrent_requests(1)).await;
    // In memory, the server reads a frame as soon as it is written: request 2 is read
    // before the shutdown begins, and waits for the slot request 1 holds. It must be
    // answered, and must not start a handler after the drain.
    let (mut client, _) = RawClient::connect_in_memory(&server, 4096).await;
    client
        .send(request(1, "gate", Payload::utf8("running")))
        .await;
    bounded(events.entered.recv()).await;
    client
        .send(request(2, "gate", Payload::utf8("waiting")))
        .await;
    let shutdown = common::begin_shutdown(&server).await;
    server.handler().gate.add_permits(1);
    let mut replies = vec![parse(client.recv().await), parse(client.recv().await)];
    replies.sort_by_key(|reply| reply.request_id());
    assert_eq!(
        replies,
        [
            Message::reply(RequestId::from(1), Payload::utf8("running")),
            Message::ReplyShutdown {
                id: RequestId::from(2)
            },
        ]
    );
    bounded(shutdown).await.unwrap();
    assert_eq!(client.closed().await.map(|f| f.code), Some(CloseCode::Away));
}

#[tokio::test]
async fn dropping_the_shutdown_future_does_not_stop_the_shutdown() {
    let (server, mut events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;
    client
        .send(request(1, "gate", Payload::utf8("running")))
        .await;
    bounded(events.entered.recv()).await;
    let gave_up = tokio::time::timeout(Duration::from_millis(20), server.shutdown()).await;
    assert!(gave_up.is_err(), "the handler is still running");
    server.handler().gate.add_permits(1);
    assert_eq!(
        parse(client.recv().await),
        Message::reply(RequestId::from(1), Payload::utf8("running"))
    );
    // Nobody awaits the shutdown any more, yet the connection is closed.
    assert_eq!(client.closed().await.map(|f| f.code), Some(CloseCode::Away));
    bounded(server.shutdown()).await;
}

#[tokio::test]
async fn a_panicking_connected_hook_closes_with_1011() {
    struct PanicsOnConnect(tokio::sync::mpsc::UnboundedSender<CloseReason>);
    impl Handler for PanicsOnConnect {
        async fn connected(&self, _conn: &tokio_webwire::server::Connection) {
            panic!("connected hook panics on purpose");
        }
        async fn disconnected(&self, _: &tokio_webwire::server::Connection, reason: &CloseReason) {
            let _ = self.0.send(reason.clone());
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = Server::new(PanicsOnConnect(tx));
    let addr = listen(&server).await;
    let (mut client, _) = RawClient::connect(addr).await;
    assert_eq!(
        client.closed().await.map(|f| f.code),
        Some(CloseCode::Error)
    );
    assert_eq!(bounded(rx.recv()).await, Some(CloseReason::HookFailed));
}

#[tokio::test]
async fn a_handler_that_panics_before_its_first_await_is_answered() {
    struct PanicsEarly;
    impl Handler for PanicsEarly {
        #[allow(clippy::manual_async_fn)]
        fn request(
            &self,
            _conn: &tokio_webwire::server::Connection,
            name: tokio_webwire::protocol::Name,
            payload: Payload,
        ) -> impl std::future::Future<Output = Result<Payload, tokio_webwire::server::HandlerError>> + Send
        {
            if name == "early" {
                panic!("panics while building its future");
            }
            async move { Ok(payload) }
        }
    }
    let server = Server::new(PanicsEarly);
    let addr = listen(&server).await;
    let (mut client, _) = RawClient::connect(addr).await;
    client.send(request(1, "early", Payload::utf8("x"))).await;
    assert_eq!(
        parse(client.recv().await),
        Message::ReplyInternalError {
            id: RequestId::from(1)
        }
    );
    client.send(request(2, "fine", Payload::utf8("x"))).await;
    assert_eq!(
        parse(client.recv().await).request_id(),
        Some(RequestId::from(2))
    );
}

#[tokio::test]
async fn a_client_that_vanishes_is_a_lost_connection() {
    let (_server, mut events, addr) = start(|b| b).await;
    let (client, _) = RawClient::connect(addr).await;
    drop(client); // no close frame: the socket just goes away
    assert_eq!(
        bounded(events.disconnected.recv()).await,
        Some(CloseReason::ConnectionLost)
    );
}

#[tokio::test]
async fn a_headless_websocket_is_held_to_the_size_limit() {
    let (server, _events, _addr) = start(|b| b.max_message_size(1024)).await;
    let (listener, addr) = own_listener().await;
    let accepting = server.clone();
    tokio::spawn(async move {
        // tungstenite's defaults accept far more than the server's limit.
        let (ws, remote) = accept_upgraded(&listener).await;
        accepting.serve_websocket(ws, Some(remote), None);
    });
    let (mut client, _) = RawClient::connect(addr).await;
    client.send(vec![0x3f_u8; 1025]).await;
    assert_eq!(client.closed().await.map(|f| f.code), Some(CloseCode::Size));
}

#[tokio::test]
async fn beyond_the_connection_limit_upgrades_get_503() {
    let (server, mut events, addr) = start(|b| b.max_connections(2)).await;
    let (first, _) = RawClient::connect(addr).await;
    let (_second, _) = RawClient::connect(addr).await;
    assert_eq!(server.connection_count(), 2);
    let refused = bounded(tokio_tungstenite::connect_async(format!("ws://{addr}/"))).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 503),
        "{refused:?}"
    );
    // A headless WebSocket beyond the limit is closed with 1013 (try again later).
    let (ours, theirs) = tokio::io::duplex(4096);
    let handshake = tokio::spawn(tokio_tungstenite::client_async("ws://in-memory/", ours));
    let ws = bounded(tokio_tungstenite::accept_async(theirs))
        .await
        .unwrap();
    server.serve_websocket(ws, None, None);
    let (ws, _) = bounded(handshake).await.unwrap().unwrap();
    let mut headless = RawClient { ws };
    assert_eq!(
        headless.closed().await.map(|f| f.code),
        Some(CloseCode::Again)
    );

    // A place frees up when a connection ends.
    drop(first);
    bounded(events.disconnected.recv()).await;
    assert_eq!(server.connection_count(), 1);
    let (mut third, _) = RawClient::connect(addr).await;
    third.send(request(1, "echo", Payload::utf8("in"))).await;
    assert_eq!(
        parse(third.recv().await).request_id(),
        Some(RequestId::from(1))
    );
    assert_eq!(server.connection_count(), 2);
}

/// Closes every connection at once and holds its `disconnected` hook until released.
struct HeldHook {
    released: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl Handler for HeldHook {
    async fn connected(&self, conn: &tokio_webwire::server::Connection) {
        conn.close();
    }

    async fn disconnected(&self, _conn: &tokio_webwire::server::Connection, _: &CloseReason) {
        if let Some(released) = self.released.lock().await.take() {
            let _ = released.await;
        }
    }
}

/// Once the closing handshake is over the socket is closed at once, not after the
/// `disconnected` hook: the client reads its EOF while the hook is still held.
#[tokio::test]
async fn the_socket_is_closed_before_the_disconnected_hook_runs() {
    let (release, released) = tokio::sync::oneshot::channel();
    let server = Server::builder(HeldHook {
        released: tokio::sync::Mutex::new(Some(released)),
    })
    .build()
    .unwrap();
    let addr = listen(&server).await;
    let (mut client, _) = RawClient::connect(addr).await;
    // `closed` answers the close frame and reads to the end of the stream.
    assert_eq!(
        client.closed().await.map(|frame| frame.code),
        Some(CloseCode::Normal)
    );
    let _ = release.send(());
    bounded(server.shutdown()).await;
}

/// An oversized message is refused from its frame header; the server then reads the rest of
/// it raw and waits for the client to close, so the client gets the 1009 close frame and a
/// clean end of stream, never a connection reset.
#[tokio::test]
async fn an_oversized_message_ends_in_a_clean_close_not_a_reset() {
    let (server, _events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;
    let sent = bounded(client.ws.send(WsMessage::binary(vec![0u8; 1 << 20]))).await;
    let mut seen = Vec::new();
    while let Some(message) = bounded(client.ws.next()).await {
        let failed = message.is_err();
        seen.push(message);
        if failed {
            break;
        }
    }
    assert!(sent.is_ok(), "{sent:?}");
    match &seen[..] {
        [Ok(WsMessage::Close(Some(frame)))] => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected the 1009 close frame, then the end: {other:?}"),
    }
    bounded(server.shutdown()).await;
}

/// A protocol violation marks the connection closed at once: a handler waiting for
/// `closed()` wakes up, sees `is_closed()`, has its signals refused, and its reply still
/// goes out before the close frame.
#[tokio::test]
async fn a_violation_closes_the_connection_for_its_running_handlers() {
    let (_server, mut events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;
    client
        .send(request(1, "await_closed", Payload::empty()))
        .await;
    bounded(events.entered.recv()).await;
    client.send(vec![0xFF_u8]).await; // no such message type
    let reply = parse(client.recv().await);
    assert_eq!(reply.request_id(), Some(RequestId::from(1)));
    assert_eq!(
        reply.payload().map(|p| p.to_text().unwrap()),
        Some("closed=true refused=true".to_owned())
    );
    let frame = client.closed().await.expect("close frame");
    assert_eq!(frame.code, CloseCode::Protocol);
    assert!(matches!(
        bounded(events.disconnected.recv()).await,
        Some(CloseReason::ProtocolViolation(_))
    ));
}

/// The read timeout, too, marks the connection closed for the handlers still running.
#[tokio::test(start_paused = true)]
async fn a_read_timeout_closes_the_connection_for_its_running_handlers() {
    let (server, mut events, _addr) = start(|b| b.read_timeout(Duration::from_secs(2))).await;
    let (mut client, _) = RawClient::connect_in_memory(&server, 4096).await;
    client
        .send(request(1, "await_closed", Payload::empty()))
        .await;
    bounded(events.entered.recv()).await;
    let reply = parse(client.recv().await);
    assert_eq!(
        reply.payload().map(|p| p.to_text().unwrap()),
        Some("closed=true refused=true".to_owned())
    );
    let frame = client.closed().await.expect("close frame");
    assert_eq!(frame.reason, "read timeout");
    assert_eq!(
        bounded(events.disconnected.recv()).await,
        Some(CloseReason::ReadTimeout)
    );
}
