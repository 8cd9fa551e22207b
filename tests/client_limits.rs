//! What a hostile server can make our client hold: its queued signals are bounded in bytes
//! as well as in number, and no message over the size the server announced is accepted.
//! The hostile server listens on its own loopback address (127.0.0.2).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::bounded;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_webwire::client::{ClientHandler, Reconnect};
use tokio_webwire::protocol::{AcceptConf, Message, Name};
use tokio_webwire::{Client, ConnectError, Payload};

/// A handler that takes each signal only when the test lets it, and reports its size.
struct Slow {
    gate: Arc<Semaphore>,
    seen: mpsc::UnboundedSender<usize>,
}

impl ClientHandler for Slow {
    async fn signal(&self, _: &Client, _: Name, payload: Payload) {
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
        let _ = self.seen.send(payload.data.len());
    }
}

/// A server on 127.0.0.2 announcing `announced` bytes; returns its listener and URL.
async fn hostile() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let url = format!("ws://{}/", listener.local_addr().expect("addr"));
    (listener, url)
}

fn accept_conf(announced: u32) -> Vec<u8> {
    Message::AcceptConf(AcceptConf::new(Duration::from_secs(60), announced))
        .encode()
        .expect("encodes")
        .to_vec()
}

/// Accepts on `listener` the client `connecting` and answers its upgrade, announcing
/// `announced` bytes; returns the server's end of the socket and the connected client.
async fn accepted(
    listener: &TcpListener,
    connecting: JoinHandle<Result<Client, ConnectError>>,
    announced: u32,
) -> (WebSocketStream<TcpStream>, Client) {
    let (tcp, _) = bounded(listener.accept()).await.expect("accept");
    let mut ws = bounded(tokio_tungstenite::accept_async(tcp))
        .await
        .expect("upgrade");
    bounded(ws.send(WsMessage::binary(accept_conf(announced))))
        .await
        .expect("handshake");
    let client = bounded(connecting)
        .await
        .expect("joined")
        .expect("connects");
    (ws, client)
}

fn signal(len: usize) -> Vec<u8> {
    Message::signal(Name::from_static("flood"), Payload::binary(vec![7u8; len]))
        .encode()
        .expect("encodes")
        .to_vec()
}

#[tokio::test]
async fn a_flood_of_large_signals_is_held_within_the_byte_budget() {
    const MIB: usize = 1 << 20;
    let (listener, url) = hostile().await;
    let gate = Arc::new(Semaphore::new(0));
    let (seen, mut seen_rx) = mpsc::unbounded_channel();
    let connecting = tokio::spawn(
        Client::builder()
            .reconnect(Reconnect::Off)
            .max_queued_signal_bytes(8 * MIB)
            .handler(Slow {
                gate: Arc::clone(&gate),
                seen,
            })
            .connect(url),
    );
    let (mut ws, client) = accepted(&listener, connecting, 16 << 20).await;
    // The handler takes the first signal and stays in it: the rest queue behind it.
    bounded(ws.send(WsMessage::binary(signal(MIB))))
        .await
        .expect("sent");
    // 100 MiB more, far over the budget.
    for _ in 0..100 {
        bounded(ws.send(WsMessage::binary(signal(MIB))))
            .await
            .expect("sent");
    }
    // A request after the flood: its reply proves the client read all of it.
    let pinged = tokio::spawn({
        let client = client.clone();
        async move { client.request("ping", "").await }
    });
    let request = loop {
        match bounded(ws.next()).await {
            Some(Ok(WsMessage::Binary(frame))) => break Message::parse(frame).expect("parses"),
            Some(Ok(_)) => {}
            other => panic!("expected the request, got {other:?}"),
        }
    };
    let id = request.request_id().expect("a request");
    let reply = Message::reply(id, Payload::empty())
        .encode()
        .expect("encodes");
    bounded(ws.send(WsMessage::binary(reply.to_vec())))
        .await
        .expect("sent");
    bounded(pinged).await.expect("joined").expect("replied");
    // Each queued signal holds 1 MiB and its name: 7 fit in 8 MiB. The first was taken by
    // the handler before the flood, or is one of the 7; either way at most 8 are kept.
    let dropped = client.dropped_signals();
    assert!(
        (93..=94).contains(&dropped),
        "{dropped} of 101 dropped: the queue held more than its byte budget"
    );
    gate.add_permits(200);
    let mut handled = 0;
    while handled < 101 - dropped {
        assert_eq!(bounded(seen_rx.recv()).await, Some(MIB));
        handled += 1;
    }
    assert!(seen_rx.try_recv().is_err(), "no more than the budget held");
}

#[tokio::test]
async fn a_message_over_the_announced_size_closes_the_connection() {
    let (listener, url) = hostile().await;
    let connecting = tokio::spawn(Client::builder().reconnect(Reconnect::Off).connect(url));
    // It announces 1 KiB, then sends 2 KiB (the client's own limit is 16 MiB).
    let (mut ws, _client) = accepted(&listener, connecting, 1024).await;
    bounded(ws.send(WsMessage::binary(signal(2048))))
        .await
        .expect("sent");
    let close = loop {
        match bounded(ws.next()).await {
            Some(Ok(WsMessage::Close(frame))) => break frame.expect("a close frame"),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::Size);
    assert_eq!(close.reason.as_str(), "message exceeds the announced size");
}
