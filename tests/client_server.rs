//! Our client against our server over real sockets on 127.0.0.1: every way a request can
//! end, signals both ways, concurrency, cancellation, and reconnecting to a restarted server.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::bounded;
use common::probe::{Probe, start};
use tokio::sync::mpsc;
use tokio_webwire::client::{Backoff, ClientHandler, Reconnect};
use tokio_webwire::protocol::{ErrorCode, Name};
use tokio_webwire::server::Server;
use tokio_webwire::{Client, Payload, RequestError};

/// Forwards server signals and connection events to the test.
struct Forward {
    signals: mpsc::UnboundedSender<(Name, Payload)>,
    connected: mpsc::UnboundedSender<bool>,
}

impl ClientHandler for Forward {
    async fn signal(&self, _client: &Client, name: Name, payload: Payload) {
        let _ = self.signals.send((name, payload));
    }

    async fn connected(&self, _client: &Client) {
        let _ = self.connected.send(true);
    }

    async fn disconnected(&self, _client: &Client) {
        let _ = self.connected.send(false);
    }
}

struct ClientEvents {
    signals: mpsc::UnboundedReceiver<(Name, Payload)>,
    connected: mpsc::UnboundedReceiver<bool>,
}

async fn connect(addr: SocketAddr, reconnect: Reconnect) -> (Client, ClientEvents) {
    let (signals, signals_rx) = mpsc::unbounded_channel();
    let (connected, connected_rx) = mpsc::unbounded_channel();
    let client = common::client_with(addr, reconnect, Forward { signals, connected }).await;
    let events = ClientEvents {
        signals: signals_rx,
        connected: connected_rx,
    };
    (client, events)
}

#[tokio::test]
async fn echo_in_every_encoding() {
    let (_server, _events, addr) = start(|b| b).await;
    let (client, _) = connect(addr, Reconnect::Off).await;
    let payloads = [
        Payload::binary(vec![0u8, 1, 2, 255]),
        Payload::utf8("héllo"),
        Payload::utf16("h€llo 𝄞"),
        Payload::empty(),
    ];
    for name in ["echo", ""] {
        for payload in &payloads {
            if name.is_empty() && payload.is_empty() {
                continue; // a request needs a name or a payload
            }
            let reply = bounded(client.request(name, payload.clone())).await;
            assert_eq!(reply.as_ref(), Ok(payload), "{name:?} {payload:?}");
        }
    }
    assert_eq!(
        bounded(client.request("", Payload::empty()))
            .await
            .err()
            .map(|e| matches!(e, RequestError::InvalidMessage(_))),
        Some(true)
    );
}

#[tokio::test]
async fn every_failure_reaches_the_caller_as_its_variant() {
    let (server, mut events, addr) = start(|b| b).await;
    let (client, _) = connect(addr, Reconnect::Off).await;
    assert_eq!(
        bounded(client.request("fail", "x")).await,
        Err(RequestError::Reply {
            code: ErrorCode::from_static("SAMPLE_ERROR"),
            message: "Sample error message".into(),
        })
    );
    for name in ["internal", "panic", "odd16"] {
        assert_eq!(
            bounded(client.request(name, "x")).await,
            Err(RequestError::Internal),
            "{name}"
        );
    }
    assert!(matches!(
        bounded(client.request("echo", vec![0u8; 9000])).await,
        Err(RequestError::PayloadTooLarge { limit: 8192, .. })
    ));
    assert!(matches!(
        bounded(client.request("bad\u{7f}", "x")).await,
        Err(RequestError::InvalidName(_))
    ));
    // A request that arrives during a shutdown is answered with the shutdown reply.
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.request("gate", "held").await })
    };
    bounded(events.entered.recv()).await;
    let shutdown = common::begin_shutdown(&server).await;
    assert_eq!(
        bounded(client.request("echo", "late")).await,
        Err(RequestError::Shutdown)
    );
    server.handler().gate.add_permits(1);
    assert_eq!(bounded(in_flight).await.unwrap(), Ok(Payload::utf8("held")));
    bounded(shutdown).await.unwrap();
}

#[tokio::test]
async fn signals_both_ways() {
    let (_server, mut events, addr) = start(|b| b).await;
    let (client, mut client_events) = connect(addr, Reconnect::Off).await;
    let conn = bounded(events.connected.recv()).await.unwrap();

    bounded(client.signal("up", Payload::utf16("to the server")))
        .await
        .unwrap();
    let (name, payload) = bounded(events.signals.recv()).await.unwrap();
    assert_eq!(name, "up");
    assert_eq!(payload.to_text().unwrap(), "to the server");

    for i in 0..10u8 {
        bounded(conn.signal("down", Payload::binary(vec![i])))
            .await
            .unwrap();
    }
    for i in 0..10u8 {
        let (name, payload) = bounded(client_events.signals.recv()).await.unwrap();
        assert_eq!(
            (name.as_str(), &payload.data[..]),
            ("down", &[i][..]),
            "in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_from_eight_tasks() {
    let (_server, _events, addr) = start(|b| b.max_concurrent_requests(256)).await;
    let (client, _) = connect(addr, Reconnect::Off).await;
    let tasks: Vec<_> = (0..8u32)
        .map(|task| {
            let client = client.clone();
            tokio::spawn(async move {
                let requests = (0..125u32).map(|i| {
                    let client = client.clone();
                    async move {
                        let body = format!("{task}/{i}");
                        let reply = client.request("echo", body.clone()).await?;
                        assert_eq!(reply.as_str().ok(), Some(body.as_str()));
                        Ok::<_, RequestError>(())
                    }
                });
                futures_util::future::try_join_all(requests).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(bounded(task).await.unwrap().map(|done| done.len()), Ok(125));
    }
    assert_eq!(client.pending_requests(), 0);
}

#[tokio::test]
async fn timeouts_and_cancellation_leave_nothing_pending() {
    let (server, mut events, addr) = start(|b| b).await;
    let (client, _) = connect(addr, Reconnect::Off).await;

    // Cancelled: the caller stops waiting as soon as the handler has started.
    bounded(async {
        tokio::select! {
            _ = client.request("gate", "cancelled") => panic!("the gate is closed"),
            _ = events.entered.recv() => {}
        }
    })
    .await;
    assert_eq!(client.pending_requests(), 0);

    // Timed out.
    let timed_out = client.request_with_timeout("gate", "slow", Duration::from_millis(50));
    assert!(matches!(
        bounded(timed_out).await,
        Err(RequestError::Timeout { .. })
    ));
    assert_eq!(client.pending_requests(), 0);

    // The late replies are ignored, and the connection serves on.
    server.handler().gate.add_permits(2);
    assert_eq!(
        bounded(client.request("echo", "next")).await,
        Ok(Payload::utf8("next"))
    );
    assert_eq!(client.pending_requests(), 0);
}

/// A probe server bound to exactly `addr` (to restart a server on the same port).
async fn restart_on(addr: SocketAddr) -> Server<Arc<Probe>> {
    let (probe, _events) = common::probe::probe();
    let server = Server::new(Arc::new(probe));
    common::listen_on(&server, addr).await;
    server
}

#[tokio::test]
async fn reconnects_to_a_restarted_server_and_requests_wait_for_it() {
    let (server, _events, addr) = start(|b| b).await;
    let backoff = Backoff::default()
        .min(Duration::from_millis(5))
        .max(Duration::from_millis(50));
    let (client, mut client_events) = connect(addr, Reconnect::Backoff(backoff)).await;
    assert_eq!(bounded(client_events.connected.recv()).await, Some(true));
    assert_eq!(
        bounded(client.request("echo", "before")).await,
        Ok(Payload::utf8("before"))
    );

    let mut current = server;
    for round in 0..3 {
        bounded(current.shutdown()).await;
        assert_eq!(bounded(client_events.connected.recv()).await, Some(false));
        // Issued while the server is down: waits for the reconnection.
        let waiting = {
            let client = client.clone();
            tokio::spawn(async move { client.request("echo", format!("during {round}")).await })
        };
        current = restart_on(addr).await;
        assert_eq!(bounded(client_events.connected.recv()).await, Some(true));
        assert_eq!(
            bounded(waiting).await.unwrap(),
            Ok(Payload::utf8(format!("during {round}")))
        );
    }
    assert_eq!(client.pending_requests(), 0);
}

#[tokio::test]
async fn without_reconnect_a_lost_server_fails_requests_at_once() {
    let (server, _events, addr) = start(|b| b).await;
    let (client, mut client_events) = connect(addr, Reconnect::Off).await;
    assert_eq!(bounded(client_events.connected.recv()).await, Some(true));
    bounded(server.shutdown()).await;
    assert_eq!(bounded(client_events.connected.recv()).await, Some(false));
    assert_eq!(
        bounded(client.request("echo", "x")).await,
        Err(RequestError::Disconnected)
    );
    bounded(client.close()).await;
    assert_eq!(
        bounded(client.request("echo", "x")).await,
        Err(RequestError::ClientClosed)
    );
}

/// Without the `rustls` feature a `wss://` URL cannot be dialled: the error says which
/// feature is missing (`tests/tls.rs` has the dials with it).
#[cfg(not(feature = "rustls"))]
#[tokio::test]
async fn wss_without_the_rustls_feature_names_the_feature() {
    // Something listens, so the dial gets as far as the TLS step.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dialled = bounded(
        Client::builder()
            .reconnect(Reconnect::Off)
            .connect(format!("wss://{addr}/")),
    )
    .await;
    match dialled {
        Err(tokio_webwire::ConnectError::InvalidUrl { reason }) => {
            assert!(reason.contains("`rustls` feature"), "{reason}");
        }
        other => panic!("expected InvalidUrl, got {other:?}"),
    }
}
