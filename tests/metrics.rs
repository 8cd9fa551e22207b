//! Feature `metrics`: every metric of `src/server/metrics.rs`, recorded over real sockets.
//!
//! Each test builds its server inside `metrics::with_local_recorder` with a recorder of its
//! own: the server resolves its handles when it is built, so its counts reach that
//! recorder from any thread, and tests running at once do not mix their numbers.
//!
//! Over 600 lines, one subject: the file walks the metrics table of
//! `src/server/metrics.rs` in its order, and every test shares the recorder and its
//! readers defined at the top; split, the table would be read across files and the
//! recorder moved away from the only tests that use it.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use metrics::atomics::AtomicU64;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_webwire::client::Reconnect;
use tokio_webwire::protocol::{AcceptConf, ErrorCode, Message, Name, RequestId};
use tokio_webwire::server::{CloseReason, Server, ServerBuilder};
use tokio_webwire::{Client, ConnectError, Payload, RequestError};

use common::probe::{self, Events, Probe, request};
use common::{CountingHook, RawClient, begin_shutdown, bounded, clients, listen};

/// A recorder that keeps every counter and gauge as an atomic, by name and labels
/// (`name{label=value,...}`, labels sorted), and every description.
#[derive(Debug, Default)]
struct Recorded {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<String, Arc<AtomicU64>>>,
    described: Mutex<HashMap<String, (Option<Unit>, String)>>,
}

fn key_text(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|label| format!("{}={}", label.key(), label.value()))
        .collect();
    if labels.is_empty() {
        return key.name().to_owned();
    }
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

fn cell(map: &Mutex<HashMap<String, Arc<AtomicU64>>>, key: &Key) -> Arc<AtomicU64> {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(map.entry(key_text(key)).or_default())
}

impl Recorder for Recorded {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(cell(&self.counters, key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(cell(&self.gauges, key))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

impl Recorded {
    fn describe(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        let mut described = self
            .described
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        described.insert(key.as_str().to_owned(), (unit, description.into_owned()));
    }

    /// The counter `key` (as `key_text` writes it); panics if the server never
    /// registered it.
    fn counter(&self, key: &str) -> u64 {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let counter = counters
            .get(key)
            .unwrap_or_else(|| panic!("counter {key} is not registered"));
        counter.load(Ordering::Acquire)
    }

    fn gauge(&self, key: &str) -> f64 {
        let gauges = self.gauges.lock().unwrap_or_else(PoisonError::into_inner);
        let gauge = gauges
            .get(key)
            .unwrap_or_else(|| panic!("gauge {key} is not registered"));
        f64::from_bits(gauge.load(Ordering::Acquire))
    }

    /// The sum of every counter named `name`, whatever its labels.
    fn total(&self, name: &str) -> u64 {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters
            .iter()
            .filter(|(key, _)| *key == name || key.starts_with(&format!("{name}{{")))
            .map(|(_, counter)| counter.load(Ordering::Acquire))
            .sum()
    }
}

/// A probe server built under `recorder`, with options set by `configure`, listening on
/// a fresh port.
async fn start(
    recorder: &Recorded,
    configure: impl FnOnce(ServerBuilder<Arc<Probe>>) -> ServerBuilder<Arc<Probe>>,
) -> (Server<Arc<Probe>>, Events, std::net::SocketAddr) {
    let (probe, events) = probe::probe();
    let server = metrics::with_local_recorder(recorder, || {
        configure(Server::builder(Arc::new(probe)))
            .build()
            .expect("valid options")
    });
    let addr = listen(&server).await;
    (server, events, addr)
}

/// Waits for the next `disconnected` hook, checks that its close was counted (once) under
/// `reason` and `code`, and returns the hook's reason.
async fn next_close(
    recorder: &Recorded,
    events: &mut Events,
    reason: &str,
    code: &str,
) -> CloseReason {
    let closed = bounded(events.disconnected.recv())
        .await
        .expect("disconnected");
    let key = format!("webwire_connections_closed_total{{code={code},reason={reason}}}");
    assert_eq!(recorder.counter(&key), 1, "{closed:?}");
    closed
}

fn len(message: Message) -> u64 {
    message.encode().expect("encodes").len() as u64
}

fn id() -> RequestId {
    // Every id is 8 bytes: the lengths do not depend on its value.
    RequestId::from(0_u64)
}

/// Connections, requests by outcome, handlers in flight, signals both ways and bytes both
/// ways, from one connection of our client; the close when it leaves.
#[tokio::test]
async fn a_connection_is_counted_from_connect_to_close() {
    let recorder = Recorded::default();
    let (server, mut events, addr) = start(&recorder, |b| b).await;
    let client = clients(addr, 1).await.remove(0);
    assert_eq!(recorder.gauge("webwire_connections_open"), 1.0);
    assert_eq!(recorder.counter("webwire_connections_total"), 1);

    let mut received = 0;
    let mut sent = len(Message::AcceptConf(
        client.server_conf().expect("connected"),
    ));
    let hello = Payload::utf8("hello");
    let echo = Name::from_static("echo");
    for _ in 0..3 {
        bounded(client.request("echo", hello.clone()))
            .await
            .expect("echoed");
        received += len(Message::request(id(), echo.clone(), hello.clone()));
        sent += len(Message::reply(id(), hello.clone()));
    }
    let failed = bounded(client.request("fail", hello.clone())).await;
    assert!(matches!(failed, Err(RequestError::Reply { .. })));
    received += len(Message::request(
        id(),
        Name::from_static("fail"),
        hello.clone(),
    ));
    sent += len(Message::ReplyError {
        id: id(),
        code: ErrorCode::from_static("SAMPLE_ERROR"),
        message: Bytes::from_static(b"Sample error message"),
    });
    for name in ["panic", "internal"] {
        let failed = bounded(client.request(name, hello.clone())).await;
        assert!(matches!(failed, Err(RequestError::Internal)), "{failed:?}");
        received += len(Message::request(
            id(),
            Name::new(name).expect("valid"),
            hello.clone(),
        ));
        sent += len(Message::ReplyInternalError { id: id() });
    }

    // A handler that waits runs on a task of its own: in flight until it finishes. The
    // request after it is answered in a later round than the one that started it, so its
    // reply is only out once the gauge has moved.
    let gate = tokio::spawn({
        let client = client.clone();
        let hello = hello.clone();
        async move { client.request("gate", hello).await }
    });
    bounded(events.entered.recv())
        .await
        .expect("the gate handler runs");
    bounded(client.request("echo", hello.clone()))
        .await
        .expect("echoed");
    assert_eq!(recorder.gauge("webwire_handlers_in_flight"), 1.0);
    server.handler().gate.add_permits(1);
    bounded(gate)
        .await
        .expect("joined")
        .expect("the gate opened");
    assert_eq!(recorder.gauge("webwire_handlers_in_flight"), 0.0);
    for name in ["gate", "echo"] {
        received += len(Message::request(
            id(),
            Name::new(name).expect("valid"),
            hello.clone(),
        ));
        sent += len(Message::reply(id(), hello.clone()));
    }

    // Signals: one from the client, one from the server (sent before its reply).
    bounded(client.signal("ping", hello.clone()))
        .await
        .expect("sent");
    bounded(events.signals.recv())
        .await
        .expect("the signal arrives");
    received += len(Message::signal(Name::from_static("ping"), hello.clone()));
    bounded(client.request("notify", hello.clone()))
        .await
        .expect("notified");
    received += len(Message::request(
        id(),
        Name::from_static("notify"),
        hello.clone(),
    ));
    sent += len(Message::signal(Name::from_static("news"), hello.clone()));
    sent += len(Message::reply(id(), hello.clone()));
    assert_eq!(recorder.counter("webwire_signals_received_total"), 1);
    assert_eq!(recorder.counter("webwire_signals_sent_total"), 1);

    bounded(client.close()).await;
    let reason = next_close(&recorder, &mut events, "client_closed", "1000").await;
    assert_eq!(reason, CloseReason::ClientClosed);
    assert_eq!(recorder.gauge("webwire_connections_open"), 0.0);
    assert_eq!(recorder.total("webwire_connections_closed_total"), 1);
    // 3 + 1 + 1 (the gate) + 1 (after it) + 1 (notify)
    assert_eq!(recorder.counter("webwire_requests_total{outcome=ok}"), 6);
    assert_eq!(
        recorder.counter("webwire_requests_total{outcome=error_reply}"),
        1
    );
    assert_eq!(
        recorder.counter("webwire_requests_total{outcome=internal_error}"),
        2
    );
    assert_eq!(recorder.total("webwire_requests_total"), 9);
    // Exactly the WebWire messages, each way.
    assert_eq!(recorder.counter("webwire_bytes_received_total"), received);
    assert_eq!(recorder.counter("webwire_bytes_sent_total"), sent);
    assert_eq!(recorder.total("webwire_protocol_errors_total"), 0);
    bounded(server.shutdown()).await;
}

/// Each kind of violation is counted by kind, and its connection's close by the code the
/// server sent; a message type only servers send is counted and ignored.
#[tokio::test]
async fn protocol_errors_are_counted_by_kind_and_close_code() {
    let recorder = Recorded::default();
    // A short close timeout: after an oversized message the server waits for the client to
    // close its end, which tungstenite leaves to the server.
    let (server, mut events, addr) = start(&recorder, |b| {
        b.max_message_size(1024)
            .close_timeout(Duration::from_millis(200))
    })
    .await;
    let violations: [(WsMessage, CloseCode, &str); 3] = [
        (
            WsMessage::text("hello"),
            CloseCode::Unsupported,
            "text_message",
        ),
        (
            WsMessage::binary(Bytes::from_static(b"\x80\x01")),
            CloseCode::Protocol,
            "malformed_message",
        ),
        (
            WsMessage::binary(vec![0x21; 2048]),
            CloseCode::Size,
            "message_too_large",
        ),
    ];
    for (message, code, kind) in violations {
        let (mut raw, _) = RawClient::connect(addr).await;
        bounded(raw.ws.send(message)).await.expect("sent");
        let frame = raw.closed().await.expect("a close frame");
        assert_eq!(frame.code, code);
        let code = u16::from(code).to_string();
        let reason = next_close(&recorder, &mut events, "protocol_violation", &code).await;
        assert!(
            matches!(reason, CloseReason::ProtocolViolation(_)),
            "{reason:?}"
        );
        assert_eq!(
            recorder.counter(&format!("webwire_protocol_errors_total{{kind={kind}}}")),
            1,
            "{kind}"
        );
    }

    // A reply from a client is not a client message: ignored, counted, the connection
    // goes on.
    let (mut raw, _) = RawClient::connect(addr).await;
    raw.send(
        Message::reply(id(), Payload::utf8("?"))
            .encode()
            .expect("encodes"),
    )
    .await;
    raw.send(request(1, "echo", Payload::utf8("still here")))
        .await;
    let reply = probe::parse(raw.recv().await);
    assert_eq!(reply.payload(), Some(Payload::utf8("still here")));
    assert_eq!(
        recorder.counter("webwire_protocol_errors_total{kind=unexpected_message}"),
        1
    );
    assert_eq!(recorder.total("webwire_protocol_errors_total"), 4);
    assert_eq!(recorder.gauge("webwire_connections_open"), 1.0);
    drop(raw);
    let reason = next_close(&recorder, &mut events, "connection_lost", "none").await;
    assert_eq!(reason, CloseReason::ConnectionLost);
    assert_eq!(recorder.gauge("webwire_connections_open"), 0.0);
    bounded(server.shutdown()).await;
}

/// Sessions: created, held by two connections (one session), refused restores, closed
/// for good by a logout; a disconnect leaves a session unheld but not closed.
#[tokio::test]
async fn sessions_are_counted() {
    let recorder = Recorded::default();
    let (server, mut events, addr) = start(&recorder, |b| b).await;
    let [alice, second, stranger]: [Client; 3] =
        clients(addr, 3).await.try_into().expect("three clients");
    assert_eq!(recorder.gauge("webwire_sessions_active"), 0.0);
    let key = bounded(alice.request("login", "alice"))
        .await
        .expect("logged in");
    let key = key.to_text().expect("the key is text");
    assert_eq!(recorder.counter("webwire_sessions_created_total"), 1);
    assert_eq!(recorder.gauge("webwire_sessions_active"), 1.0);

    bounded(second.restore_session(&key))
        .await
        .expect("restored");
    assert_eq!(
        recorder.gauge("webwire_sessions_active"),
        1.0,
        "one session, two connections"
    );
    let refused = bounded(stranger.restore_session("no-such-session")).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        recorder.counter("webwire_requests_total{outcome=session_refused}"),
        1
    );
    // The login and the restore.
    assert_eq!(recorder.counter("webwire_requests_total{outcome=ok}"), 2);

    bounded(alice.close()).await;
    // The hook runs after the connection has left its session.
    bounded(events.disconnected.recv()).await;
    assert_eq!(
        recorder.gauge("webwire_sessions_active"),
        1.0,
        "still held by the second"
    );
    bounded(second.request("logout", ""))
        .await
        .expect("logged out");
    assert_eq!(recorder.counter("webwire_sessions_closed_total"), 1);
    assert_eq!(recorder.gauge("webwire_sessions_active"), 0.0);

    // A revocation closes a session for good.
    let bob = bounded(stranger.request("login", "bob"))
        .await
        .expect("logged in");
    assert_eq!(recorder.gauge("webwire_sessions_active"), 1.0);
    let bob = bob.to_text().expect("the key is text");
    assert_eq!(bounded(server.close_session(&bob)).await, Ok(1));
    assert_eq!(recorder.counter("webwire_sessions_closed_total"), 2);
    assert_eq!(recorder.gauge("webwire_sessions_active"), 0.0);

    // A disconnect does not close a session: it is just no longer held.
    bounded(stranger.request("login", "carol"))
        .await
        .expect("logged in");
    assert_eq!(recorder.gauge("webwire_sessions_active"), 1.0);
    bounded(stranger.close()).await;
    bounded(server.shutdown()).await;
    assert_eq!(recorder.gauge("webwire_sessions_active"), 0.0);
    assert_eq!(recorder.counter("webwire_sessions_created_total"), 3);
    assert_eq!(recorder.counter("webwire_sessions_closed_total"), 2);
}

/// A shutdown: a request that arrives during it is counted as `shutdown`, the connection's
/// close as `server_shutdown` with 1001.
#[tokio::test]
async fn a_shutdown_is_counted() {
    let recorder = Recorded::default();
    let (server, mut events, addr) = start(&recorder, |b| b).await;
    let client = clients(addr, 1).await.remove(0);
    let gate = tokio::spawn({
        let client = client.clone();
        async move { client.request("gate", "").await }
    });
    bounded(events.entered.recv())
        .await
        .expect("the gate handler runs");
    let shutdown = begin_shutdown(&server).await;
    let refused = bounded(client.request("echo", "")).await;
    assert!(
        matches!(refused, Err(RequestError::Shutdown)),
        "{refused:?}"
    );
    assert_eq!(
        recorder.counter("webwire_requests_total{outcome=shutdown}"),
        1
    );
    server.handler().gate.add_permits(1);
    bounded(gate)
        .await
        .expect("joined")
        .expect("the running handler finishes");
    bounded(shutdown).await.expect("shut down");
    let reason = next_close(&recorder, &mut events, "server_shutdown", "1001").await;
    assert_eq!(reason, CloseReason::ServerShutdown);
    assert_eq!(recorder.counter("webwire_requests_total{outcome=ok}"), 1);
    assert_eq!(recorder.gauge("webwire_connections_open"), 0.0);
}

/// A subscriber too slow for its topic is counted by policy, and its close by reason.
#[tokio::test]
async fn a_slow_subscriber_is_counted() {
    let recorder = Recorded::default();
    let (server, mut events, _addr) = start(&recorder, |b| b.outbound_queue_len(1)).await;
    // A pipe of 2 KiB that nobody reads after the subscription: the queue fills.
    let (mut stalled, _) = RawClient::connect_in_memory(&server, 2048).await;
    let conn = bounded(events.connected.recv()).await.expect("connected");
    stalled
        .send(request(1, "subscribe", Payload::utf8("room")))
        .await;
    let _reply = stalled.recv().await;
    let text = "x".repeat(1024);
    for _ in 0..100 {
        if conn.is_closed() {
            break;
        }
        bounded(server.publish("room", "news", text.clone()))
            .await
            .expect("published");
    }
    assert!(conn.is_closed(), "disconnected as too slow");
    assert_eq!(
        recorder.counter("webwire_fanout_slow_total{policy=disconnect}"),
        1
    );
    assert_eq!(
        recorder.counter("webwire_fanout_slow_total{policy=skip}"),
        0
    );
    // Read again, it gets the close; the close is counted under its reason and code.
    let _ = stalled.closed().await;
    let reason = next_close(&recorder, &mut events, "slow_consumer", "1013").await;
    assert_eq!(reason, CloseReason::SlowConsumer);
}

/// Upgrades beyond `max_connections` are refused and counted.
#[tokio::test]
async fn connections_over_the_limit_are_counted() {
    let recorder = Recorded::default();
    let (server, _events, addr) = start(&recorder, |b| b.max_connections(1)).await;
    let first = clients(addr, 1).await;
    let refused = bounded(
        Client::builder()
            .reconnect(Reconnect::Off)
            .dial_timeout(Duration::from_secs(5))
            .connect(format!("ws://{addr}/")),
    )
    .await;
    assert!(
        matches!(refused, Err(ConnectError::Http { status: 503 })),
        "{refused:?}"
    );
    assert_eq!(recorder.counter("webwire_connections_rejected_total"), 1);
    assert_eq!(recorder.counter("webwire_connections_total"), 1);
    assert_eq!(recorder.gauge("webwire_connections_open"), 1.0);
    drop(first);
    bounded(server.shutdown()).await;
}

/// Every metric is described with its unit when the server is built, and registered (so
/// an exporter shows it from the start).
#[tokio::test]
async fn every_metric_is_described_with_its_unit() {
    let recorder = Recorded::default();
    let server = metrics::with_local_recorder(&recorder, || Server::new(()));
    let expected = [
        ("webwire_connections_open", Unit::Count, false),
        ("webwire_connections_total", Unit::Count, true),
        ("webwire_connections_rejected_total", Unit::Count, true),
        ("webwire_upgrades_refused_total", Unit::Count, true),
        ("webwire_connections_closed_total", Unit::Count, true),
        ("webwire_requests_total", Unit::Count, true),
        ("webwire_handlers_in_flight", Unit::Count, false),
        ("webwire_signals_received_total", Unit::Count, true),
        ("webwire_signals_sent_total", Unit::Count, true),
        ("webwire_bytes_received_total", Unit::Bytes, true),
        ("webwire_bytes_sent_total", Unit::Bytes, true),
        ("webwire_protocol_errors_total", Unit::Count, true),
        ("webwire_fanout_slow_total", Unit::Count, true),
        ("webwire_backplane_refused_total", Unit::Count, true),
        ("webwire_backplane_received_total", Unit::Count, true),
        ("webwire_sessions_active", Unit::Count, false),
        ("webwire_sessions_created_total", Unit::Count, true),
        ("webwire_sessions_closed_total", Unit::Count, true),
    ];
    let described = recorder
        .described
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(described.len(), expected.len(), "{described:?}");
    for (name, unit, counter) in expected {
        let (found, help) = described
            .get(name)
            .unwrap_or_else(|| panic!("{name} not described"));
        assert_eq!(found.as_ref(), Some(&unit), "{name}");
        assert!(!help.is_empty(), "{name}");
        let registered = if counter {
            &recorder.counters
        } else {
            &recorder.gauges
        };
        let registered = registered.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(
            registered
                .keys()
                .any(|key| key == name || key.starts_with(&format!("{name}{{"))),
            "{name} not registered"
        );
    }
    // Labels have fixed values only: 18 close pairs, 5 outcomes, 6 kinds, 8 statuses, 2
    // policies, and 10 counters without labels.
    assert_eq!(
        recorder
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len(),
        18 + 5 + 6 + 8 + 2 + 10
    );
    drop(server);
}

/// The handshake a default server sends, for the byte count of a connection that ends
/// before it reads anything.
#[tokio::test]
async fn the_handshake_is_counted_even_when_nothing_follows() {
    let recorder = Recorded::default();
    let (server, mut events, addr) = start(&recorder, |b| b).await;
    let (raw, accept_conf) = RawClient::connect(addr).await;
    drop(raw);
    bounded(events.disconnected.recv())
        .await
        .expect("disconnected");
    let expected = len(Message::AcceptConf(AcceptConf::new(
        Duration::from_secs(60),
        8192,
    )));
    assert_eq!(accept_conf.len() as u64, expected);
    assert_eq!(recorder.counter("webwire_bytes_sent_total"), expected);
    assert_eq!(recorder.counter("webwire_bytes_received_total"), 0);
    bounded(server.shutdown()).await;
}

/// The status line `addr` answers `request` with (a 101 is followed by a WebSocket, not an
/// end, so only that line is read).
async fn status_line(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = bounded(tokio::net::TcpStream::connect(addr)).await.unwrap();
    bounded(socket.write_all(request.as_bytes())).await.unwrap();
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        line.push(bounded(socket.read_u8()).await.expect("an answer"));
    }
    String::from_utf8(line).unwrap().trim_end().to_owned()
}

/// An upgrade request for `path` to `host`, `extra` header lines in it.
fn upgrade_request(host: &str, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Upgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Requests refused the same way on every way in, with the status line each gets: a
/// foreign `Origin`, one with user information, no upgrade, no `Host` or two, another
/// WebSocket version, a hook's 401 (counted as `other`) and 1xx (answered, and counted,
/// as 500). The hook is `CountingHook`'s.
fn refusals_on_every_way_in(host: &str, path: &str) -> Vec<(String, &'static str)> {
    vec![
        (
            upgrade_request(host, path, "Origin: https://evil.example\r\n"),
            "HTTP/1.1 403 Forbidden",
        ),
        (
            upgrade_request(host, path, &format!("Origin: http://evil@{host}\r\n")),
            "HTTP/1.1 403 Forbidden",
        ),
        (
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            upgrade_request(host, path, "").replace(&format!("Host: {host}\r\n"), ""),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            upgrade_request(host, path, &format!("Host: {host}\r\n")),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            upgrade_request(host, path, "").replace("Version: 13", "Version: 8"),
            "HTTP/1.1 426 Upgrade Required",
        ),
        (
            upgrade_request(host, path, "X-Refuse: 401\r\n"),
            "HTTP/1.1 401 Unauthorized",
        ),
        (
            upgrade_request(host, path, "X-Refuse: 101\r\n"),
            "HTTP/1.1 500 Internal Server Error",
        ),
    ]
}

/// Sends each request on a socket of its own and checks the status line it gets.
async fn assert_answers(addr: std::net::SocketAddr, answers: Vec<(String, &str)>) {
    for (request, answer) in answers {
        assert_eq!(status_line(addr, &request).await, answer, "{request}");
    }
}

/// The refusals `webwire_upgrades_refused_total` counts, by status, every refused upgrade
/// exactly once; the 503 of a full server in `webwire_connections_rejected_total` too.
fn assert_refused(recorder: &Recorded, expected: &[(&str, u64)]) {
    for (status, count) in expected {
        let key = format!("webwire_upgrades_refused_total{{status={status}}}");
        assert_eq!(recorder.counter(&key), *count, "{key}");
    }
    let sum: u64 = expected.iter().map(|(_, count)| count).sum();
    assert_eq!(recorder.total("webwire_upgrades_refused_total"), sum);
}

/// Every refusal of the server's own listener is counted under the status it answered; a
/// hook's status outside the fixed set as `other`; `OPTIONS` (answered 200) not at all.
#[tokio::test]
async fn refused_upgrades_are_counted_by_status() {
    let recorder = Recorded::default();
    let server = metrics::with_local_recorder(&recorder, || {
        Server::builder(CountingHook::default())
            .max_upgrade_request_size(1024)
            .build()
            .expect("valid options")
    });
    let addr = listen(&server).await;
    let host = addr.to_string();
    let mut answers = refusals_on_every_way_in(&host, "/");
    answers.extend([
        (
            upgrade_request(&host, "/", &format!("X-Filler: {}\r\n", "a".repeat(2000))),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
        (
            upgrade_request(&host, "/", "X-Refuse: 403\r\n"),
            "HTTP/1.1 403 Forbidden",
        ),
        (
            format!("OPTIONS / HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            "HTTP/1.1 200 OK",
        ),
    ]);
    assert_answers(addr, answers).await;
    // The hook ran for its three only: the server's own refusals come before it.
    assert_eq!(server.handler().0.load(Ordering::SeqCst), 3);
    assert_refused(
        &recorder,
        &[
            ("400", 3),
            ("403", 3),
            ("426", 1),
            ("431", 1),
            ("500", 1),
            ("503", 0),
            ("other", 1),
            ("none", 0),
        ],
    );
    // An upgrade that goes through is no refusal.
    let accepted = status_line(addr, &upgrade_request(&host, "/", "")).await;
    assert_eq!(accepted, "HTTP/1.1 101 Switching Protocols");
    assert_eq!(recorder.total("webwire_upgrades_refused_total"), 10);
    bounded(server.shutdown()).await;
}

/// A full server's 503 is counted as a refused upgrade and (as before) as a rejected
/// connection; a socket beyond `max_pending_upgrades` as refused with status `none`.
#[tokio::test]
async fn full_servers_and_sockets_beyond_max_pending_upgrades_are_counted() {
    use tokio::io::AsyncReadExt;
    let recorder = Recorded::default();
    let (server, _events, addr) = start(&recorder, |b| {
        b.max_connections(1)
            .max_pending_upgrades(1)
            // Far beyond the test's bound: a socket closed within it was not timed out.
            .handshake_timeout(Duration::from_secs(600))
    })
    .await;
    let host = addr.to_string();
    let first = clients(addr, 1).await;
    let full = status_line(addr, &upgrade_request(&host, "/", "")).await;
    assert_eq!(full, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(recorder.counter("webwire_connections_rejected_total"), 1);

    // Connected and silent: it holds the one pending place (accepted first: the accept
    // loop takes sockets in the order they connected), so the next is closed unanswered.
    let _waiting = bounded(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let mut beyond = bounded(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let mut byte = [0u8; 1];
    let read = bounded(beyond.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed unanswered: {read:?}"
    );
    assert_refused(&recorder, &[("503", 1), ("none", 1)]);
    drop(first);
    bounded(server.shutdown()).await;
}

/// A server mounted in an axum router counts its refusals in the same counter, under the
/// same statuses: a foreign `Origin`, a request that is no upgrade, another version, the
/// hook's refusals.
#[cfg(feature = "axum")]
#[tokio::test]
async fn refusals_of_a_mounted_server_are_counted_alike() {
    let recorder = Recorded::default();
    let server = metrics::with_local_recorder(&recorder, || Server::new(CountingHook::default()));
    let router = axum::Router::new()
        .route(
            "/ws",
            axum::routing::get(tokio_webwire::axum::upgrade::<CountingHook>),
        )
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let host = addr.to_string();
    let mut answers = refusals_on_every_way_in(&host, "/ws");
    answers.extend([
        (
            upgrade_request(&host, "/ws", "X-Refuse: 503\r\n"),
            "HTTP/1.1 503 Service Unavailable",
        ),
        (
            upgrade_request(&host, "/ws", ""),
            "HTTP/1.1 101 Switching Protocols",
        ),
    ]);
    assert_answers(addr, answers).await;
    assert_refused(
        &recorder,
        &[
            ("400", 3),
            ("403", 2),
            ("426", 1),
            ("500", 1),
            ("503", 1),
            ("other", 1),
        ],
    );
    bounded(server.shutdown()).await;
}
