//! The `connected` hook runs inside the driver's bounds: while it runs, the connection
//! writes what the hook sends, delivers publishes, reads heartbeats and holds requests
//! for after it, and keeps its timeouts; a connection whose client has gone gives its
//! place back at once and its handlers within the abandoned-handler timeout; a connection
//! task that panics leaves nothing behind in the server.

mod common;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use common::nodes::{Seen, ask, next_signal, subscriber};
use common::{RawClient, bounded, listen};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_webwire::client::Reconnect;
use tokio_webwire::protocol::{Message, Name, RequestId};
use tokio_webwire::server::{CloseReason, Connection, Handler, HandlerResult, Server};
use tokio_webwire::{Client, Payload, SessionInfo};

/// A chat-like server whose `connected` hook replays a history, may subscribe, may create
/// a session, and may wait for the test's permission to finish.
#[derive(Default)]
struct App {
    /// Signals the hook sends before anything else.
    history: usize,
    /// A topic the hook subscribes to first.
    topic: Option<&'static str>,
    /// The hook creates a session after the history.
    login: bool,
    /// The hook waits for a permit of this (and keeps it) before it returns.
    gate: Option<Arc<Semaphore>>,
    /// Requests named `wait` wait for a permit of this.
    hold: Option<Arc<Semaphore>>,
    /// Set when the hook returns.
    greeted: AtomicBool,
    /// Told when a handler of `wait` is dropped (`true`) or finishes (`false`).
    ended: Option<mpsc::UnboundedSender<bool>>,
    /// Told when a handler of `wait` starts waiting.
    started: Option<mpsc::UnboundedSender<()>>,
    /// Told when the `disconnected` hook runs.
    gone: Option<mpsc::UnboundedSender<CloseReason>>,
}

impl Handler for App {
    async fn connected(&self, conn: &Connection) {
        if let Some(topic) = self.topic {
            conn.subscribe(topic).expect("a valid topic");
        }
        for i in 0..self.history {
            if conn.signal("history", i.to_string()).await.is_err() {
                return;
            }
        }
        if self.login {
            let mut info = SessionInfo::new();
            info.insert("user", "alice").expect("a string");
            conn.create_session(info).await.expect("a session");
        }
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("the gate stays open").forget();
        }
        self.greeted.store(true, Ordering::SeqCst);
    }

    async fn request(&self, _conn: &Connection, name: Name, payload: Payload) -> HandlerResult {
        match name.as_str() {
            // Whether the hook had returned when this request was handled.
            "greeted" => Ok(Payload::utf8(
                self.greeted.load(Ordering::SeqCst).to_string(),
            )),
            // Waits until the hold opens, reporting whether it was dropped first.
            "wait" => {
                let report = Report(self.ended.clone(), true);
                if let Some(started) = &self.started {
                    let _ = started.send(());
                }
                let hold = self.hold.as_ref().expect("a hold");
                let _permit = hold.acquire().await.expect("the hold stays open");
                let mut report = report;
                report.1 = false;
                Ok(payload)
            }
            _ => Ok(payload),
        }
    }

    async fn disconnected(&self, _conn: &Connection, reason: &CloseReason) {
        if let Some(gone) = &self.gone {
            let _ = gone.send(reason.clone());
        }
    }
}

/// Tells whether a handler was dropped (`true`, unless set otherwise) when it is dropped.
struct Report(Option<mpsc::UnboundedSender<bool>>, bool);

impl Drop for Report {
    fn drop(&mut self) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(self.1);
        }
    }
}

async fn start(app: App) -> (Server<App>, std::net::SocketAddr) {
    let server = Server::new(app);
    let addr = listen(&server).await;
    (server, addr)
}

/// The history signals a recorder saw, in order, then the reply to `greeted`.
async fn history(seen: &mut mpsc::UnboundedReceiver<Seen>, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let (name, text) = next_signal(seen).await;
        assert_eq!(name, "history");
        got.push(text);
    }
    got
}

fn numbers(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

#[tokio::test]
async fn a_connected_hook_may_send_more_signals_than_the_outbound_queue_holds() {
    // 8 signals fit in the default queue; the ninth used to wait for a driver that was
    // waiting for the hook.
    let (_server, addr) = start(App {
        history: 200,
        ..App::default()
    })
    .await;
    let (client, mut seen) = subscriber(addr).await;
    assert_eq!(history(&mut seen, 200).await, numbers(200));
    assert_eq!(ask(&client, "greeted", "").await, "true");
}

#[tokio::test]
async fn a_hook_that_creates_a_session_behind_a_long_history_does_not_hang() {
    // The session notification waits behind the history, under the session lock.
    let (server, addr) = start(App {
        history: 50,
        login: true,
        ..App::default()
    })
    .await;
    let (client, mut seen) = subscriber(addr).await;
    assert_eq!(history(&mut seen, 50).await, numbers(50));
    assert_eq!(ask(&client, "greeted", "").await, "true");
    let session = client.session().expect("the session reached the client");
    // A revocation waits on the same sends: it reaches this connection too.
    let closed = bounded(server.close_session(&session.key)).await;
    assert_eq!(closed.expect("revoked"), 1);
}

#[tokio::test]
async fn requests_sent_while_the_hook_runs_are_handled_after_it_in_their_order() {
    let gate = Arc::new(Semaphore::new(0));
    let (_server, addr) = start(App {
        gate: Some(Arc::clone(&gate)),
        ..App::default()
    })
    .await;
    let (mut raw, _accept_conf) = RawClient::connect(addr).await;
    // More than the slots hold: the driver holds 8 and reads the rest once they run.
    for id in 1..=12u64 {
        let request = Message::request(RequestId::from(id), name("greeted"), Payload::empty());
        raw.send(request.encode().expect("encodes")).await;
    }
    // Nothing is answered while the hook runs; a heartbeat still goes through.
    raw.send(Message::Heartbeat.encode().expect("encodes"))
        .await;
    let early = tokio::time::timeout(Duration::from_millis(200), raw.recv()).await;
    assert!(
        early.is_err(),
        "a reply before the hook returned: {early:?}"
    );
    gate.add_permits(1);
    for id in 1..=12u64 {
        let reply = Message::parse(raw.recv().await).expect("a reply");
        assert_eq!(reply.request_id(), Some(RequestId::from(id)), "in order");
        let text = reply.payload().expect("a payload").to_text().expect("text");
        assert_eq!(text, "true", "handled after the hook returned");
    }
}

#[tokio::test]
async fn publishes_during_the_hook_reach_a_subscriber_that_reads() {
    // The hook subscribes, then waits (an auth lookup, say) while publishes land: more of
    // them than the outbound queue holds.
    let gate = Arc::new(Semaphore::new(0));
    let (server, addr) = start(App {
        topic: Some("room"),
        gate: Some(Arc::clone(&gate)),
        ..App::default()
    })
    .await;
    let (client, mut seen) = subscriber(addr).await;
    bounded(async {
        while server.subscriber_count("room") == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    for i in 0..40 {
        // Each publish waits for the one before to have been read, as a subscriber on a
        // good link would.
        let here = bounded(server.publish("room", "news", i.to_string()))
            .await
            .expect("published");
        assert_eq!(here, 1, "publish {i} still reaches the subscriber");
        assert_eq!(next_signal(&mut seen).await, ("news".into(), i.to_string()));
    }
    gate.add_permits(1);
    assert_eq!(ask(&client, "greeted", "").await, "true");
}

#[tokio::test(start_paused = true)]
async fn the_read_timeout_holds_while_the_hook_runs() {
    let gate = Arc::new(Semaphore::new(0));
    let server = Server::builder(App {
        gate: Some(Arc::clone(&gate)),
        ..App::default()
    })
    .read_timeout(Duration::from_secs(2))
    .build()
    .expect("valid");
    let (mut raw, _) = RawClient::connect_in_memory(&server, 4096).await;
    // Heartbeats keep it open well past the timeout while the hook waits.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        raw.send(Message::Heartbeat.encode().expect("encodes"))
            .await;
    }
    // Then silence: closed by the read timeout, the hook still waiting.
    let frame = raw.closed().await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Normal);
    assert_eq!(frame.reason.as_str(), "read timeout");
}

/// A server whose `wait` requests wait on `hold`, reporting when each starts, whether it
/// ended dropped (`true`) or done, and the `disconnected` hook's reason.
struct Waiting {
    hold: Arc<Semaphore>,
    started: mpsc::UnboundedReceiver<()>,
    ended: mpsc::UnboundedReceiver<bool>,
    gone: mpsc::UnboundedReceiver<CloseReason>,
}

impl Waiting {
    fn app() -> (App, Waiting) {
        let hold = Arc::new(Semaphore::new(0));
        let (ended, ended_rx) = mpsc::unbounded_channel();
        let (gone, gone_rx) = mpsc::unbounded_channel();
        let (started, started_rx) = mpsc::unbounded_channel();
        let app = App {
            hold: Some(Arc::clone(&hold)),
            ended: Some(ended),
            gone: Some(gone),
            started: Some(started),
            ..App::default()
        };
        let waiting = Waiting {
            hold,
            started: started_rx,
            ended: ended_rx,
            gone: gone_rx,
        };
        (app, waiting)
    }

    /// `client` sends `n` requests that wait, and they have started.
    async fn busy(&mut self, client: &Client, n: usize) {
        for _ in 0..n {
            let client = client.clone();
            tokio::spawn(async move { client.request("wait", "").await });
        }
        for _ in 0..n {
            bounded(self.started.recv()).await;
        }
    }

    /// `n` handlers ended, each `dropped` (or done), and then the hook ran with `reason`.
    async fn ended_then_gone(&mut self, n: usize, dropped: bool, reason: CloseReason) {
        for _ in 0..n {
            assert_eq!(bounded(self.ended.recv()).await, Some(dropped));
        }
        assert_eq!(bounded(self.gone.recv()).await, Some(reason));
    }
}

#[tokio::test]
async fn a_clients_place_comes_back_when_it_leaves_while_its_handlers_wait() {
    let (app, mut waiting) = Waiting::app();
    let server = Server::builder(app)
        .max_connections(1)
        // Every slot busy, the server reads nothing: it pings the client every tenth of this
        // to find out whether it is still there.
        .read_timeout(Duration::from_secs(1))
        // Long enough to outlast the test: the place must not wait for it.
        .abandoned_handler_timeout(Duration::from_secs(3600))
        .build()
        .expect("valid");
    let addr = listen(&server).await;
    let leaver = connect(addr).await;
    assert_eq!(ask(&leaver, "greeted", "").await, "true");
    // Every slot busy with a request that waits, then the client leaves.
    waiting.busy(&leaver, 8).await;
    leaver.close().await;
    // The next client gets the place while the handlers still wait.
    let next = bounded(async {
        loop {
            match try_connect(addr).await {
                Some(client) => return client,
                None => tokio::task::yield_now().await,
            }
        }
    })
    .await;
    assert_eq!(ask(&next, "greeted", "").await, "true");
    assert!(
        waiting.gone.try_recv().is_err(),
        "`disconnected` runs once the handlers are done"
    );
    // Released, they finish (they were not dropped), and only then does the hook run.
    // The server did not read the client's close frame (no slot was free): its pings
    // found the connection gone.
    waiting.hold.add_permits(8);
    waiting
        .ended_then_gone(8, false, CloseReason::ConnectionLost)
        .await;
}

#[tokio::test]
async fn handlers_of_a_gone_client_are_dropped_at_the_abandoned_handler_timeout() {
    let (app, mut waiting) = Waiting::app();
    let server = Server::builder(app)
        .abandoned_handler_timeout(Duration::ZERO)
        .build()
        .expect("valid");
    let addr = listen(&server).await;
    let client = connect(addr).await;
    assert_eq!(ask(&client, "greeted", "").await, "true");
    waiting.busy(&client, 3).await;
    client.close().await;
    // The hold never opens: each handler is dropped, then the hook runs.
    waiting
        .ended_then_gone(3, true, CloseReason::ClientClosed)
        .await;
}

#[tokio::test]
async fn a_connection_task_that_panics_leaves_no_subscription_session_or_entry_behind() {
    let (gone, _gone_rx) = mpsc::unbounded_channel();
    let server = Server::builder(App {
        topic: Some("room"),
        login: true,
        gone: Some(gone),
        ..App::default()
    })
    .build()
    .expect("valid");
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let fuse = Arc::new(AtomicBool::new(false));
    server.serve_connection(
        Fuse {
            io: theirs,
            blown: Arc::clone(&fuse),
        },
        None,
    );
    let (ws, _) = bounded(tokio_tungstenite::client_async("ws://in-memory/", ours))
        .await
        .expect("WebSocket handshake");
    let mut raw = RawClient { ws };
    let _accept_conf = raw.recv().await;
    // The hook subscribed and logged in: the session notification arrives.
    let created = Message::parse(raw.recv().await).expect("a notification");
    let key = match created {
        Message::NotifySessionCreated { session } => {
            tokio_webwire::Session::from_json(&session)
                .expect("a session")
                .key
        }
        other => panic!("expected the session, got {other:?}"),
    };
    assert_eq!(server.subscriber_count("room"), 1);
    assert_eq!(server.connection_count(), 1);
    // The stream panics under the driver at its next read.
    fuse.store(true, Ordering::SeqCst);
    raw.send(Message::Heartbeat.encode().expect("encodes"))
        .await;
    bounded(async {
        while server.connection_count() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(server.subscriber_count("room"), 0, "left its topic");
    let revoked = bounded(server.close_session(&key)).await;
    assert_eq!(revoked.expect("revoked"), 0, "no connection holds it");
}

/// A stream that panics on a read once its fuse is blown.
struct Fuse {
    io: tokio::io::DuplexStream,
    blown: Arc<AtomicBool>,
}

impl AsyncRead for Fuse {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.blown.load(Ordering::SeqCst) {
            panic!("the application's stream panics on purpose");
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Fuse {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

fn name(text: &'static str) -> Name {
    Name::from_static(text)
}

async fn connect(addr: std::net::SocketAddr) -> Client {
    bounded(try_connect(addr)).await.expect("connects")
}

async fn try_connect(addr: std::net::SocketAddr) -> Option<Client> {
    Client::builder()
        .reconnect(Reconnect::Off)
        .request_timeout(Duration::from_secs(10))
        .connect(format!("ws://{addr}/"))
        .await
        .ok()
}
