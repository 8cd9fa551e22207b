//! Sessions with our client against our server over real sockets: login creates a session
//! the client sees before the reply, a second client restores it, either side closes it, and
//! after the server restarts the client restores it on its own.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::bounded;
use common::probe::{Probe, probe, start};
use tokio::sync::mpsc;
use tokio_webwire::client::{Backoff, ClientHandler, Reconnect};
use tokio_webwire::server::Server;
use tokio_webwire::session::MemoryStore;
use tokio_webwire::{Client, Payload, RequestError, Session};

/// Reports session and connection events as text.
struct Watch(mpsc::UnboundedSender<String>);

impl ClientHandler for Watch {
    async fn session_created(&self, _client: &Client, session: &Session) {
        let _ = self.0.send(format!("created {}", session.key));
    }
    async fn session_closed(&self, _client: &Client) {
        let _ = self.0.send("closed".into());
    }
    async fn connected(&self, _client: &Client) {
        let _ = self.0.send("connected".into());
    }
    async fn disconnected(&self, _client: &Client) {
        let _ = self.0.send("disconnected".into());
    }
}

async fn connect(
    addr: SocketAddr,
    reconnect: Reconnect,
) -> (Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = common::client_with(addr, reconnect, Watch(tx)).await;
    (client, rx)
}

/// The next event that is not a connection event.
async fn session_event(events: &mut mpsc::UnboundedReceiver<String>) -> String {
    loop {
        let event = bounded(events.recv()).await.expect("an event");
        if event != "connected" && event != "disconnected" {
            return event;
        }
    }
}

async fn login(client: &Client, user: &str) -> String {
    let reply = bounded(client.request("login", user.to_owned()))
        .await
        .expect("login");
    let key = reply.to_text().expect("the key is text");
    // The notification came before the reply: the client already holds the session.
    let session = client
        .session()
        .expect("the session arrived before the reply");
    assert_eq!(session.key, key);
    assert_eq!(
        session.info.get::<String>("user").unwrap().as_deref(),
        Some(user)
    );
    key
}

#[tokio::test]
async fn login_restore_and_close_from_both_sides() {
    let (server, _events, addr) = start(|b| b).await;
    let (alice, mut alice_events) = connect(addr, Reconnect::Off).await;
    let key = login(&alice, "alice").await;
    assert_eq!(
        session_event(&mut alice_events).await,
        format!("created {key}")
    );

    // A second client (a second browser tab) restores it by key.
    let (tab, mut tab_events) = connect(addr, Reconnect::Off).await;
    let restored = bounded(tab.restore_session(&key)).await.expect("restored");
    assert_eq!(restored.key, key);
    assert_eq!(tab.session().map(|s| s.key), Some(key.clone()));
    assert_eq!(
        session_event(&mut tab_events).await,
        format!("created {key}")
    );
    assert_eq!(server.session_connections(&key).len(), 2);
    assert_eq!(
        bounded(tab.restore_session(&key)).await.err(),
        Some(RequestError::SessionActive)
    );

    // The client closes its own: the session lives on with alice.
    bounded(tab.close_session()).await.expect("closed");
    assert!(tab.session().is_none());
    assert_eq!(session_event(&mut tab_events).await, "closed");
    assert_eq!(server.session_connections(&key).len(), 1);

    // The server closes alice's (a logout request): alice is told.
    bounded(alice.request("logout", Payload::empty()))
        .await
        .expect("logout");
    assert!(alice.session().is_none());
    assert_eq!(session_event(&mut alice_events).await, "closed");
    assert_eq!(server.active_sessions(), 0);
    assert_eq!(
        bounded(tab.restore_session(&key)).await.err(),
        Some(RequestError::SessionNotFound)
    );
}

#[tokio::test]
async fn server_wide_close_reaches_every_client() {
    let (server, _events, addr) = start(|b| b).await;
    let (a, mut a_events) = connect(addr, Reconnect::Off).await;
    let key = login(&a, "alice").await;
    let (b, mut b_events) = connect(addr, Reconnect::Off).await;
    bounded(b.restore_session(&key)).await.expect("restored");
    session_event(&mut a_events).await;
    session_event(&mut b_events).await;
    assert_eq!(bounded(server.close_session(&key)).await, Ok(2));
    assert_eq!(session_event(&mut a_events).await, "closed");
    assert_eq!(session_event(&mut b_events).await, "closed");
    assert!(a.session().is_none() && b.session().is_none());
    // Revoked: nobody restores it any more.
    assert_not_restorable(addr, &key).await;
}

/// A new client cannot restore `key`.
async fn assert_not_restorable(addr: SocketAddr, key: &str) {
    let (client, _) = connect(addr, Reconnect::Off).await;
    assert_eq!(
        bounded(client.restore_session(key)).await.err(),
        Some(RequestError::SessionNotFound)
    );
    assert!(client.session().is_none());
}

#[tokio::test]
async fn a_revocation_with_nobody_online_ends_the_session() {
    let (server, mut events, addr) = start(|b| b).await;
    let (a, _) = connect(addr, Reconnect::Off).await;
    let key = login(&a, "alice").await;
    bounded(a.close()).await;
    // Gone on the server's side too before the revocation, so nobody holds it.
    bounded(events.disconnected.recv())
        .await
        .expect("disconnected");
    assert_eq!(bounded(server.close_session(&key)).await, Ok(0));
    assert_not_restorable(addr, &key).await;
}

#[tokio::test]
async fn refused_sessions_reach_the_client_as_errors() {
    // Too large to travel: the login fails, the client holds nothing, the link stays up.
    let (_server, mut events, addr) = start(|b| b.max_message_size(1024)).await;
    let (a, _) = connect(addr, Reconnect::Off).await;
    let refused = bounded(a.request("login", "u".repeat(1000))).await;
    assert!(
        matches!(&refused, Err(RequestError::Reply { code, .. }) if code == "SESSION"),
        "{refused:?}"
    );
    assert!(a.session().is_none());
    assert_eq!(
        bounded(a.request("echo", "still here")).await,
        Ok(Payload::utf8("still here"))
    );

    // Refused by the restore hook (the probe refuses user "blocked"): the session is
    // stored, and the hook is what refused it.
    let key = login(&a, "blocked").await;
    assert_not_restorable(addr, &key).await;
    loop {
        let event = bounded(events.session_events.recv())
            .await
            .expect("an event");
        if event == format!("refused {key}") {
            break;
        }
    }
}

#[tokio::test]
async fn the_limit_and_disabled_sessions_reach_the_client_as_errors() {
    let (_server, _events, addr) = start(|b| b.max_session_connections(1)).await;
    let (a, _) = connect(addr, Reconnect::Off).await;
    let key = login(&a, "alice").await;
    let (b, _) = connect(addr, Reconnect::Off).await;
    assert_eq!(
        bounded(b.restore_session(&key)).await.err(),
        Some(RequestError::MaxSessionConnectionsReached)
    );
    assert!(b.session().is_none());

    let (_server, _events, addr) = start(|b| b.sessions(false)).await;
    let (c, _) = connect(addr, Reconnect::Off).await;
    assert_eq!(
        bounded(c.restore_session(&key)).await.err(),
        Some(RequestError::SessionsDisabled)
    );
}

/// A probe server on exactly `addr` keeping sessions in `store`.
async fn serve_on(addr: SocketAddr, store: Arc<MemoryStore>) -> Server<Arc<Probe>> {
    let (handler, _events) = probe();
    let server = Server::builder(Arc::new(handler))
        .session_store(store)
        .build()
        .expect("valid options");
    common::listen_on(&server, addr).await;
    server
}

#[tokio::test]
async fn after_a_restart_the_client_restores_its_session_or_forgets_it() {
    let store = Arc::new(MemoryStore::default());
    let (server, _events, addr) = start(|b| b.session_store(Arc::clone(&store))).await;
    let backoff = Backoff::default()
        .min(Duration::from_millis(5))
        .max(Duration::from_millis(50));
    let (client, mut events) = connect(addr, Reconnect::Backoff(backoff)).await;
    let key = login(&client, "alice").await;
    session_event(&mut events).await;

    // Restarted with the same store: restored before the connection is announced.
    bounded(server.shutdown()).await;
    let server = serve_on(addr, Arc::clone(&store)).await;
    loop {
        if bounded(events.recv()).await.as_deref() == Some("connected") {
            break;
        }
    }
    assert_eq!(
        server.session_connections(&key).len(),
        1,
        "restored on its own"
    );
    assert_eq!(client.session().map(|s| s.key), Some(key.clone()));
    let who = bounded(client.request("echo", "still me")).await;
    assert_eq!(who, Ok(Payload::utf8("still me")));

    // Restarted with an empty store: the session is not found and forgotten.
    bounded(server.shutdown()).await;
    let _server = serve_on(addr, Arc::new(MemoryStore::default())).await;
    loop {
        match bounded(events.recv()).await.as_deref() {
            Some("closed") => break,
            Some(event) if event.starts_with("created") => panic!("restored from an empty store"),
            _ => {}
        }
    }
    assert!(client.session().is_none());
}
