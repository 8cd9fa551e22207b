//! `examples/chatroom`: its server on port 0, driven by its terminal client's code and by
//! our client; logins, broadcast, and a session that survives a server restart.

mod common;

// The modules refer to each other as `crate::server` and `crate::contract`, as in the
// example.
#[path = "../examples/chatroom/client.rs"]
mod client;
#[allow(dead_code)] // its TypeScript is tests/typescript.rs's
#[path = "../examples/chatroom/contract.rs"]
mod contract;
#[path = "../examples/chatroom/server.rs"]
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::bounded;
use tokio::sync::mpsc;
use tokio_webwire::backplane::Local;
use tokio_webwire::client::{Backoff, Reconnect};
use tokio_webwire::contract::Signal;
use tokio_webwire::router::{INVALID_PAYLOAD, UNKNOWN_REQUEST};
use tokio_webwire::server::{Handler, Server};
use tokio_webwire::session::FileStore;
use tokio_webwire::{Client, Payload, RequestError};

/// Reconnects quickly, so a restart costs the test milliseconds.
fn quick() -> Backoff {
    Backoff::default()
        .min(Duration::from_millis(5))
        .max(Duration::from_millis(50))
}

/// A terminal client of the example, and what it printed.
struct Terminal {
    client: Client,
    printed: mpsc::UnboundedReceiver<String>,
}

impl Terminal {
    async fn connect(addr: SocketAddr) -> Terminal {
        let (output, printed) = mpsc::unbounded_channel();
        let client = bounded(client::connect(&format!("ws://{addr}/"), quick(), output))
            .await
            .expect("connects");
        Terminal { client, printed }
    }

    /// Types `line`; returns what the client answered.
    async fn typed(&self, line: &str) -> Option<String> {
        bounded(client::execute(&self.client, line)).await
    }

    /// Waits until the client prints `line`, skipping the lines before it.
    async fn shows(&mut self, line: &str) {
        loop {
            let printed = bounded(self.printed.recv()).await.expect("output");
            if printed == line {
                return;
            }
        }
    }

    /// The next line the client prints must be `line`.
    async fn shows_next(&mut self, line: &str) {
        let printed = bounded(self.printed.recv()).await.expect("output");
        assert_eq!(printed, line);
    }

    /// Waits until the client prints `line`; no chat message may come before it.
    async fn shows_only_events_until(&mut self, line: &str) {
        loop {
            let printed = bounded(self.printed.recv()).await.expect("output");
            assert!(!printed.starts_with('<'), "{printed:?} before {line:?}");
            if printed == line {
                return;
            }
        }
    }

    /// The next chat message the client prints, skipping events.
    async fn next_message(&mut self) -> String {
        loop {
            let printed = bounded(self.printed.recv()).await.expect("output");
            if printed.starts_with('<') {
                return printed;
            }
        }
    }
}

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "tokio-webwire-chatroom-{}-{nanos}",
            std::process::id()
        ));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the example's server on `addr` (port 0 for a new one) with sessions in `dir`;
/// retries while the port of a server just shut down is not yet free again.
async fn start(addr: SocketAddr, dir: &TempDir) -> (Server<impl Handler>, SocketAddr) {
    bounded(async {
        loop {
            let store = FileStore::new(&dir.0).expect("a session directory");
            match server::start(&addr.to_string(), server::build(store, Local)).await {
                Ok(started) => return started,
                Err(_) => tokio::task::yield_now().await,
            }
        }
    })
    .await
}

#[tokio::test]
async fn login_broadcast_and_a_session_that_survives_a_restart() {
    let sessions = TempDir::new();
    let (server, addr) = start("127.0.0.1:0".parse().unwrap(), &sessions).await;
    let mut alice = Terminal::connect(addr).await;
    let mut bob = Terminal::connect(addr).await;

    // Nothing but login without a session; wrong credentials are refused.
    assert_eq!(
        alice.typed("hello?").await.as_deref(),
        Some("! NOT_LOGGED_IN: log in first")
    );
    assert_eq!(
        bob.typed("/login bob wonderland").await.as_deref(),
        Some("! WRONG_CREDENTIALS: unknown user or wrong password")
    );
    assert!(bob.client.session().is_none());

    assert_eq!(bob.typed("/login bob builder").await, None);
    bob.shows("* logged in as bob").await;
    assert_eq!(alice.typed("/login alice wonderland").await, None);
    alice.shows("* logged in as alice").await;
    assert_eq!(
        alice.typed("/login alice wonderland").await.as_deref(),
        Some("! ALREADY_LOGGED_IN: log out first")
    );
    let key = alice.client.session().expect("a session").key;
    assert_eq!(server.active_sessions(), 2);

    // Messages reach everyone logged in, the sender included.
    assert_eq!(alice.typed("hi bob").await, None);
    assert_eq!(alice.next_message().await, "<alice> hi bob");
    assert_eq!(bob.next_message().await, "<alice> hi bob");
    assert_eq!(bob.typed("hi alice").await, None);
    assert_eq!(alice.next_message().await, "<bob> hi alice");
    assert_eq!(bob.next_message().await, "<bob> hi alice");

    // The server restarts on the same port with the same session files: both clients
    // reconnect, restore their sessions, and say things without logging in again.
    bounded(server.shutdown()).await;
    alice.shows("* disconnected, reconnecting").await;
    bob.shows("* disconnected, reconnecting").await;
    let (server, _) = start(addr, &sessions).await;
    // Reconnected, then logged in again (restored), in the order a reader expects.
    alice.shows_next("* connected").await;
    alice.shows_next("* logged in as alice").await;
    bob.shows_next("* connected").await;
    bob.shows_next("* logged in as bob").await;
    assert_eq!(alice.client.session().map(|s| s.key), Some(key.clone()));
    assert_eq!(server.session_connections(&key).len(), 1);
    assert_eq!(alice.typed("still here").await, None);
    assert_eq!(alice.next_message().await, "<alice> still here");
    assert_eq!(bob.next_message().await, "<alice> still here");

    // Logging out ends the session for good: the next line is refused.
    assert_eq!(alice.typed("/logout").await, None);
    alice.shows("* logged out").await;
    assert_eq!(
        alice.typed("bye").await.as_deref(),
        Some("! NOT_LOGGED_IN: log in first")
    );
    assert_eq!(server.active_sessions(), 1);
    // Out of the room too: what bob says now does not reach her. Back in, the first
    // message she sees is one said after her return.
    assert_eq!(bob.typed("alice left").await, None);
    assert_eq!(bob.next_message().await, "<bob> alice left");
    assert_eq!(alice.typed("/login alice wonderland").await, None);
    // (What was sent to her connection before her login would be printed before it.)
    alice.shows_only_events_until("* logged in as alice").await;
    assert_eq!(bob.typed("welcome back").await, None);
    assert_eq!(alice.next_message().await, "<bob> welcome back");

    // Logged out everywhere by the server (a moderator): bob hears the room no more.
    let bob_key = bob.client.session().expect("bob's session").key;
    assert_eq!(bob.next_message().await, "<bob> welcome back");
    assert_eq!(bounded(server.close_session(&bob_key)).await, Ok(1));
    bob.shows("* logged out").await;
    assert_eq!(alice.typed("is bob gone?").await, None);
    assert_eq!(alice.next_message().await, "<alice> is bob gone?");
    assert_eq!(bob.typed("/login bob builder").await, None);
    bob.shows_only_events_until("* logged in as bob").await;
    assert_eq!(alice.typed("hi again").await, None);
    assert_eq!(bob.next_message().await, "<alice> hi again");

    bounded(alice.client.close()).await;
    bounded(bob.client.close()).await;
    bounded(server.shutdown()).await;
}

/// The contract on the wire, as a client without it (the Go reference, a page without
/// the types) sees it: requests by name with UTF-8 or UTF-16 JSON, JSON replies, and the
/// error codes.
#[tokio::test]
async fn the_wire_contract_for_other_clients() {
    let sessions = TempDir::new();
    let (server, addr) = start("127.0.0.1:0".parse().unwrap(), &sessions).await;
    let client = bounded(
        Client::builder()
            .reconnect(Reconnect::Off)
            .connect(format!("ws://{addr}/")),
    )
    .await
    .expect("connects");
    let code = |result: Result<Payload, RequestError>| match result {
        Err(RequestError::Reply { code, .. }) => code,
        other => panic!("expected an error reply, got {other:?}"),
    };
    let request = |name: &'static str, payload: Payload| bounded(client.request(name, payload));
    let json = |value: serde_json::Value| Payload::json(&value).unwrap();

    // A payload that is not the contract's JSON is refused by the router, the route
    // never running.
    assert_eq!(
        code(request("login", Payload::utf8("not json")).await),
        INVALID_PAYLOAD
    );
    let mallory = json(serde_json::json!({"user": "mallory", "password": "x"}));
    assert_eq!(
        code(request("login", mallory).await),
        server::WRONG_CREDENTIALS
    );
    let hi = json(serde_json::json!({"text": "hi"}));
    assert_eq!(code(request("say", hi).await), server::NOT_LOGGED_IN);
    assert_eq!(
        code(request("logout", json(serde_json::json!({}))).await),
        server::NOT_LOGGED_IN
    );
    // UTF-16 JSON works as well as UTF-8: the reply is JSON saying whom.
    let login = r#"{"user":"bob","password":"builder"}"#;
    let reply = request("login", Payload::utf16(login))
        .await
        .expect("logged in");
    assert_eq!(reply, Payload::utf8(r#"{"user":"bob"}"#));
    let session = client.session().expect("the session came before the reply");
    assert_eq!(
        session.info.get::<String>("user").unwrap().as_deref(),
        Some("bob")
    );
    // Said to everyone: the reply is JSON null (no note).
    let said = request("say", json(serde_json::json!({"text": "hello"}))).await;
    assert_eq!(said, Ok(Payload::utf8("null")));
    assert_eq!(
        code(request("say", json(serde_json::json!({"text": "  "}))).await),
        server::BAD_REQUEST
    );
    // Plain text was the old `say`; the contract's is JSON.
    assert_eq!(
        code(request("say", Payload::utf8("hi")).await),
        INVALID_PAYLOAD
    );
    let dance = request("dance", Payload::empty()).await;
    assert_eq!(
        dance,
        Err(RequestError::Reply {
            code: UNKNOWN_REQUEST,
            message: r#"no request named "dance""#.into()
        })
    );
    // Sent directly from server code, as a moderator would.
    let welcome = Payload::json(&contract::ChatMessage {
        from: "server".into(),
        text: "welcome".into(),
    })
    .unwrap();
    let name = contract::ChatMessage::NAME;
    let delivered = bounded(server.publish(server::ROOM, name, welcome))
        .await
        .unwrap();
    assert_eq!(delivered, 1);

    bounded(client.close()).await;
    bounded(server.shutdown()).await;
}

/// The terminal client pointed at a page (the `--web` server's `/`) is shown the command
/// for `/ws` (the process itself: tests/example_errors.rs).
#[test]
fn a_page_instead_of_the_chat_room_shows_the_way_to_ws() {
    let error = tokio_webwire::ConnectError::Http { status: 200 };
    let said = client::not_the_endpoint("ws://127.0.0.1:8083/", &error);
    assert!(said.starts_with(&error.to_string()), "{said}");
    assert!(
        said.ends_with(
            "\n  a chat room served with --web has WebWire at /ws: \
             cargo run --example chatroom --features axum -- --client ws://127.0.0.1:8083/ws"
        ),
        "{said}"
    );
}
