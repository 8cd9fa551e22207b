//! The client's handler against a scripted server: it never stalls replies (a handler
//! that awaits requests during a burst of signals, a handler that does not return), the
//! signal overflow policies, and a handler that cannot keep its client open.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_webwire::client::{ClientHandler, Reconnect, SignalOverflow};
use tokio_webwire::protocol::{Message, Name};
use tokio_webwire::{Client, ClientBuilder, Payload, RequestError};

mod common;

use common::script::{Script, Ws, close_code, recv_message, send};
use common::{bounded as within, vector};

fn no_reconnect() -> ClientBuilder {
    Client::builder().reconnect(Reconnect::Off)
}

async fn connect<H: ClientHandler>(builder: ClientBuilder<H>, script: &Script) -> (Client, Ws) {
    let (client, ws) =
        within(async { tokio::join!(builder.connect(&script.url), script.accept()) }).await;
    (client.expect("connects"), ws)
}

/// A signal frame named `s` whose payload is `n`, as text.
fn signal(n: usize) -> Vec<u8> {
    Message::signal(Name::from_static("s"), Payload::utf8(n.to_string()))
        .encode()
        .expect("encodes")
        .to_vec()
}

/// Answers `count` requests with their payload; returns them in the order they came.
async fn answer(ws: &mut Ws, count: usize) -> Vec<Payload> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let request = recv_message(ws).await;
        let (Some(id), Some(payload)) = (request.request_id(), request.payload()) else {
            panic!("expected a request, got {request:?}");
        };
        let reply = Message::reply(id, payload.clone())
            .encode()
            .expect("encodes");
        send(ws, &reply).await;
        seen.push(payload);
    }
    seen
}

/// A handler whose `signal` asks the server through the same client, and reports the
/// reply. Before the driver, the reader waited for room in the handler's 64-event queue
/// while the handler waited for a reply behind the unread signals: every request timed out.
struct AskBack(mpsc::UnboundedSender<Result<Payload, RequestError>>);

impl ClientHandler for AskBack {
    async fn signal(&self, client: &Client, _: Name, payload: Payload) {
        let reply = client
            .request_with_timeout("back", payload, Duration::from_secs(5))
            .await;
        let _ = self.0.send(reply);
    }
}

#[tokio::test]
async fn a_handler_awaiting_requests_during_a_burst_of_signals_does_not_stall_replies() {
    const BURST: usize = 300;
    let script = Script::bind().await;
    let (tx, mut replies) = mpsc::unbounded_channel();
    let (_client, mut ws) = connect(no_reconnect().handler(AskBack(tx)), &script).await;
    within(async {
        for n in 0..BURST {
            send(&mut ws, &signal(n)).await;
        }
        // One request per signal, in the signals' order: one handler call at a time.
        let asked = answer(&mut ws, BURST).await;
        let expected: Vec<Payload> = (0..BURST).map(|n| Payload::utf8(n.to_string())).collect();
        assert_eq!(asked, expected);
    })
    .await;
    for n in 0..BURST {
        let reply = within(replies.recv()).await.expect("handler alive");
        assert_eq!(reply, Ok(Payload::utf8(n.to_string())));
    }
}

/// A handler that takes the first signal and then holds on to it until `release` has a
/// permit; reports every signal it handles.
struct Stuck {
    seen: mpsc::UnboundedSender<String>,
    release: Arc<Semaphore>,
}

impl ClientHandler for Stuck {
    async fn signal(&self, _: &Client, _: Name, payload: Payload) {
        let text = payload.to_text().expect("text");
        let _ = self.seen.send(text);
        if let Ok(permit) = self.release.acquire().await {
            permit.forget();
        }
    }
}

/// The handler is stuck on signal 0 while signals 1..=10 arrive with room for 4: the
/// policy decides which 4 it sees, 6 are counted as dropped, and a request's reply that
/// arrives behind them all is not delayed.
async fn overflow(policy: SignalOverflow) -> Vec<String> {
    let script = Script::bind().await;
    let (tx, mut seen) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let handler = Stuck {
        seen: tx,
        release: Arc::clone(&release),
    };
    let builder = no_reconnect()
        .max_queued_signals(4)
        .signal_overflow(policy)
        .handler(handler);
    let (client, mut ws) = connect(builder, &script).await;
    send(&mut ws, &signal(0)).await;
    assert_eq!(within(seen.recv()).await.as_deref(), Some("0"));
    for n in 1..=10 {
        send(&mut ws, &signal(n)).await;
    }
    // The reply comes after the ten signals on the socket, while the handler is stuck.
    let (reply, _) =
        within(async { tokio::join!(client.request("q", "x"), answer(&mut ws, 1)) }).await;
    assert_eq!(reply, Ok(Payload::utf8("x")));
    assert_eq!(client.dropped_signals(), 6);
    release.add_permits(100);
    let mut handled = Vec::new();
    for _ in 0..4 {
        handled.push(within(seen.recv()).await.expect("handler alive"));
    }
    // Nothing more: a signal sent now comes next.
    send(&mut ws, &signal(11)).await;
    assert_eq!(within(seen.recv()).await.as_deref(), Some("11"));
    handled
}

#[tokio::test]
async fn overflow_drop_oldest_keeps_the_latest_signals() {
    assert_eq!(
        overflow(SignalOverflow::DropOldest).await,
        ["7", "8", "9", "10"]
    );
}

#[tokio::test]
async fn overflow_drop_newest_keeps_the_first_signals() {
    assert_eq!(
        overflow(SignalOverflow::DropNewest).await,
        ["1", "2", "3", "4"]
    );
}

/// A handler that keeps a clone of the client it is given, and uses it.
struct Keeper {
    kept: Mutex<Option<Client>>,
    used: mpsc::UnboundedSender<Result<(), RequestError>>,
}

impl ClientHandler for Keeper {
    async fn connected(&self, client: &Client) {
        *self.kept.lock().expect("not poisoned") = Some(client.clone());
    }

    async fn signal(&self, client: &Client, _: Name, _: Payload) {
        let _ = self.used.send(client.signal("pong", "x").await);
    }
}

#[tokio::test]
async fn dropping_every_handle_ends_the_client_whatever_the_handler_keeps() {
    let script = Script::bind().await;
    let (tx, mut used) = mpsc::unbounded_channel();
    let keeper = Keeper {
        kept: Mutex::new(None),
        used: tx,
    };
    let builder = Client::builder().handler(keeper);
    let (client, mut ws) = connect(builder, &script).await;
    // The handler works with the client while the application holds it.
    send(&mut ws, &vector("signal_utf8_named")).await;
    assert_eq!(within(used.recv()).await, Some(Ok(())));
    let pong = within(recv_message(&mut ws)).await;
    assert_eq!(pong.name().map(|n| n.to_string()), Some("pong".to_owned()));

    // The application lets go: the client closes (a normal close frame is sent only when
    // the client closes), although the handler still holds a clone.
    drop(client);
    assert_eq!(within(close_code(&mut ws)).await, Some(CloseCode::Normal));
}

#[tokio::test]
async fn a_handler_that_never_returns_does_not_stall_replies_or_the_close() {
    struct Forever;
    impl ClientHandler for Forever {
        async fn signal(&self, _: &Client, _: Name, _: Payload) {
            std::future::pending::<()>().await;
        }
    }
    let script = Script::bind().await;
    let (client, mut ws) = connect(no_reconnect().handler(Forever), &script).await;
    for n in 0..100 {
        send(&mut ws, &signal(n)).await;
    }
    let (reply, _) =
        within(async { tokio::join!(client.request("q", "x"), answer(&mut ws, 1)) }).await;
    assert_eq!(reply, Ok(Payload::utf8("x")));
    within(client.close()).await;
    assert_eq!(within(close_code(&mut ws)).await, Some(CloseCode::Normal));
}
