//! Sessions end to end on the server (PROTOCOL.md §4), spoken in raw frames: creation,
//! restore, limits, lookups that fail, closing by either side, disconnects, a file store
//! across a restart, and keys a client made up.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::probe::{Events, Probe, parse, probe, request, start};
use common::{RawClient, begin_shutdown, bounded, listen, vector};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_webwire::protocol::{Message, Name, RequestId};
use tokio_webwire::server::{Connection, Handler, HandlerError, Server};
use tokio_webwire::session::{FileStore, MemoryStore, SessionStore, StoreError};
use tokio_webwire::{Payload, Session, SessionInfo};

fn restore(id: u64, key: &[u8]) -> Bytes {
    Message::RequestRestoreSession {
        id: RequestId::from(id),
        key: Bytes::copy_from_slice(key),
    }
    .encode()
    .expect("valid restore request")
}

fn close(id: u64) -> Bytes {
    Message::RequestCloseSession {
        id: RequestId::from(id),
    }
    .encode()
    .expect("valid close request")
}

/// Logs `client` in as `user`: the notification must come before the reply.
async fn login<S>(client: &mut RawClient<S>, id: u64, user: &str) -> Session
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    client
        .send(request(id, "login", Payload::utf8(user.to_owned())))
        .await;
    let Message::NotifySessionCreated { session } = parse(client.recv().await) else {
        panic!("the session notification must precede the reply");
    };
    let session = Session::from_json(&session).expect("session JSON");
    let reply = parse(client.recv().await);
    assert_eq!(
        reply,
        Message::reply(RequestId::from(id), Payload::utf8(session.key.clone()))
    );
    session
}

/// Restores `key` and returns the session the server answered with.
async fn restored<S>(client: &mut RawClient<S>, id: u64, key: &str) -> Session
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    client.send(restore(id, key.as_bytes())).await;
    match parse(client.recv().await) {
        Message::ReplyUtf8 { id: got, data } if got == RequestId::from(id) => {
            Session::from_json(&data).expect("session JSON")
        }
        other => panic!("expected the session, got {other:?}"),
    }
}

/// Restores `key` and expects "not found".
async fn not_found<S>(client: &mut RawClient<S>, id: u64, key: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    client.send(restore(id, key)).await;
    answered_not_found(client, id).await;
}

/// The next frame must answer request `id` with "not found".
async fn answered_not_found<S>(client: &mut RawClient<S>, id: u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    assert_eq!(
        parse(client.recv().await),
        Message::ReplySessionNotFound {
            id: RequestId::from(id)
        }
    );
}

/// The next session hook the probe reports must be `expected`.
async fn expect_event(events: &mut Events, expected: String) {
    assert_eq!(bounded(events.session_events.recv()).await, Some(expected));
}

#[tokio::test]
async fn create_then_restore_from_a_second_connection() {
    let store = Arc::new(MemoryStore::default());
    let (server, mut events, addr) = start(|b| b.session_store(Arc::clone(&store))).await;
    let (mut first, _) = RawClient::connect(addr).await;
    let session = login(&mut first, 1, "alice").await;
    assert_eq!(session.key.len(), 43, "256 bits, URL-safe base64");
    assert_eq!(
        session.info.get::<String>("user").unwrap().as_deref(),
        Some("alice")
    );
    assert_eq!(session.created, session.last_lookup);
    expect_event(&mut events, format!("created {}", session.key)).await;
    assert_eq!(store.len(), 1);

    let (mut second, _) = RawClient::connect(addr).await;
    let again = restored(&mut second, 7, &session.key).await;
    assert_eq!(
        (again.key.as_str(), &again.info),
        (session.key.as_str(), &session.info)
    );
    assert_eq!(server.session_connections(&session.key).len(), 2);
    assert_eq!(server.active_sessions(), 1);

    // Restoring the session a connection already holds answers with it again.
    let same = restored(&mut second, 8, &session.key).await;
    assert_eq!(same.key, session.key);
    assert_eq!(server.session_connections(&session.key).len(), 2);
}

#[tokio::test]
async fn a_second_login_on_one_connection_fails() {
    let (_server, _events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;
    login(&mut client, 1, "alice").await;
    client.send(request(2, "login", Payload::utf8("bob"))).await;
    let Message::ReplyError { code, message, .. } = parse(client.recv().await) else {
        panic!("a second session on one connection must fail");
    };
    assert_eq!(code, "SESSION");
    assert_eq!(&message[..], b"the connection already holds a session");
}

#[tokio::test]
async fn concurrent_restores_respect_the_connection_limit() {
    let (server, _events, addr) = start(|b| b.max_session_connections(2)).await;
    let (mut owner, _) = RawClient::connect(addr).await;
    let key = login(&mut owner, 1, "alice").await.key;
    let (mut a, _) = RawClient::connect(addr).await;
    let (mut b, _) = RawClient::connect(addr).await;
    // Both requests are on the wire before either answer is read.
    a.send(restore(1, key.as_bytes())).await;
    b.send(restore(1, key.as_bytes())).await;
    let (answer_a, answer_b) = tokio::join!(a.recv(), b.recv());
    let mut answers = [parse(answer_a), parse(answer_b)].map(|m| m.message_type().to_string());
    answers.sort();
    assert_eq!(
        answers,
        ["ReplyMaxSessConnsReached (0x04)", "ReplyUtf8 (0xc0)"],
        "exactly one restore wins the last place"
    );
    assert_eq!(server.session_connections(&key).len(), 2);
}

#[tokio::test]
async fn unknown_and_made_up_keys_are_not_found() {
    let (server, _events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;
    client.send(vector("restore_session_request")).await;
    assert_eq!(
        &client.recv().await[..],
        &vector("reply_session_not_found")[..]
    );
    for key in [
        &b"../../etc/passwd"[..],
        b"a b",
        b"\xff\xfe",
        b"\x00",
        &[b'k'; 2000][..],
    ] {
        client.send(restore(2, key)).await;
        assert_eq!(
            parse(client.recv().await),
            Message::ReplySessionNotFound {
                id: RequestId::from(2)
            },
            "{key:?}"
        );
    }
    assert_eq!(server.active_sessions(), 0);
}

/// A store whose lookups fail.
struct Broken;

impl SessionStore for Broken {
    async fn save(&self, _: &Session) -> Result<(), StoreError> {
        Ok(())
    }
    async fn lookup(&self, _: &str) -> Result<Option<Session>, StoreError> {
        Err(StoreError::other("the database is down"))
    }
    async fn remove(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_lookup_is_an_internal_error() {
    let (server, _events, addr) = start(|b| b.session_store(Broken)).await;
    let (mut client, _) = RawClient::connect(addr).await;
    client.send(vector("restore_session_request")).await;
    assert_eq!(
        &client.recv().await[..],
        &vector("reply_internal_error")[..]
    );
    assert_eq!(server.active_sessions(), 0, "the reservation is released");
}

#[tokio::test]
async fn client_close_destroys_the_session_only_with_its_last_connection() {
    let store = Arc::new(MemoryStore::default());
    let (server, mut events, addr) = start(|b| b.session_store(Arc::clone(&store))).await;
    let (mut a, _) = RawClient::connect(addr).await;
    let key = login(&mut a, 1, "alice").await.key;
    bounded(events.session_events.recv()).await;
    let (mut b, _) = RawClient::connect(addr).await;
    restored(&mut b, 1, &key).await;
    expect_event(&mut events, format!("restored {key}")).await;

    a.send(close(2)).await;
    assert_eq!(
        &a.recv().await[..],
        &Message::reply(RequestId::from(2), Payload::empty())
            .encode()
            .unwrap()[..],
        "an empty reply, and no session-closed notification to the requester"
    );
    assert_eq!(store.len(), 1, "b still holds the session");
    assert_eq!(server.session_connections(&key).len(), 1);
    // Each connection that leaves is heard of, the last one too.
    let (a_id, left) = bounded(events.left.recv()).await.expect("a left");
    assert_eq!(left, key);

    b.send(close(2)).await;
    assert_eq!(parse(b.recv().await).request_id(), Some(RequestId::from(2)));
    assert_eq!(store.len(), 0);
    let (b_id, left) = bounded(events.left.recv()).await.expect("b left");
    assert_eq!(left, key);
    assert_ne!(a_id, b_id);
    expect_event(&mut events, format!("closed {key}")).await;
    // Closing without a session is answered all the same.
    b.send(close(3)).await;
    assert_eq!(parse(b.recv().await).request_id(), Some(RequestId::from(3)));
    assert!(events.left.try_recv().is_err(), "nothing left this time");
    // Gone for good.
    not_found(&mut b, 4, key.as_bytes()).await;
}

#[tokio::test]
async fn the_server_closes_a_session_on_one_connection_or_on_all() {
    let store = Arc::new(MemoryStore::default());
    let (server, mut events, addr) = start(|b| b.session_store(Arc::clone(&store))).await;
    let (mut a, _) = RawClient::connect(addr).await;
    login(&mut a, 1, "alice").await;
    bounded(events.session_events.recv()).await;

    // One connection, from a handler: the notification, then the reply.
    a.send(request(2, "logout", Payload::empty())).await;
    assert_eq!(&a.recv().await[..], &vector("notify_session_closed")[..]);
    assert_eq!(parse(a.recv().await).request_id(), Some(RequestId::from(2)));
    assert_eq!(store.len(), 0);
    bounded(events.session_events.recv()).await;
    bounded(events.left.recv()).await.expect("a logged out");

    // Every connection of a key.
    let key = login(&mut a, 3, "alice").await.key;
    let (mut b, _) = RawClient::connect(addr).await;
    let (mut c, _) = RawClient::connect(addr).await;
    restored(&mut b, 1, &key).await;
    restored(&mut c, 1, &key).await;
    for expected in ["created", "restored", "restored"] {
        expect_event(&mut events, format!("{expected} {key}")).await;
    }
    assert_eq!(bounded(server.close_session(&key)).await, Ok(3));
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(
            &client.recv().await[..],
            &vector("notify_session_closed")[..]
        );
    }
    assert_eq!(server.active_sessions(), 0);
    assert_eq!(store.len(), 0);
    // The hook ran once, as a revocation, after each holder was heard of as leaving.
    expect_event(&mut events, format!("revoked {key}")).await;
    assert!(events.session_events.try_recv().is_err());
    let mut holders = Vec::new();
    while let Ok((id, left)) = events.left.try_recv() {
        assert_eq!(left, key);
        holders.push(id);
    }
    holders.sort_unstable();
    holders.dedup();
    assert_eq!(holders.len(), 3, "each of the three holders, once");
    // Every holder lost it: a close request finds nothing to close, so no hook runs.
    a.send(close(4)).await;
    assert_eq!(parse(a.recv().await).request_id(), Some(RequestId::from(4)));
    assert!(events.session_events.try_recv().is_err());
}

#[tokio::test]
async fn a_disconnect_keeps_the_session_restorable() {
    let (server, mut events, addr) = start(|b| b).await;
    let (mut a, _) = RawClient::connect(addr).await;
    let key = login(&mut a, 1, "alice").await.key;
    drop(a);
    bounded(events.disconnected.recv()).await;
    assert_eq!(server.active_sessions(), 0, "no connection holds it");
    let (mut b, _) = RawClient::connect(addr).await;
    assert_eq!(restored(&mut b, 1, &key).await.key, key);
}

#[tokio::test]
async fn restoring_another_session_leaves_the_first() {
    let (server, mut events, addr) = start(|b| b).await;
    let (mut a, _) = RawClient::connect(addr).await;
    let first = login(&mut a, 1, "alice").await.key;
    let (mut b, _) = RawClient::connect(addr).await;
    let second = login(&mut b, 1, "bob").await.key;
    restored(&mut a, 2, &second).await;
    assert!(
        server.session_connections(&first).is_empty(),
        "no leaked registration"
    );
    assert_eq!(server.session_connections(&second).len(), 2);
    // a left its first session: what that login granted it can be undone.
    assert_eq!(
        bounded(events.left.recv()).await.map(|(_, key)| key),
        Some(first)
    );
}

#[tokio::test]
async fn a_held_session_gone_from_the_store_is_left_at_the_next_restore() {
    let store = Arc::new(MemoryStore::default());
    let (_server, mut events, addr) = start(|b| b.session_store(Arc::clone(&store))).await;
    let (mut a, _) = RawClient::connect(addr).await;
    let key = login(&mut a, 1, "alice").await.key;
    // Removed behind the server's back (another node's logout, an expiry).
    store.remove(&key).await.unwrap();
    not_found(&mut a, 2, key.as_bytes()).await;
    assert_eq!(bounded(events.left.recv()).await.map(|(_, k)| k), Some(key));
}

#[tokio::test]
async fn sessions_disabled_refuse_creation() {
    let (_server, _events, addr) = start(|b| b.sessions(false)).await;
    let (mut client, _) = RawClient::connect(addr).await;
    client
        .send(request(1, "login", Payload::utf8("alice")))
        .await;
    let Message::ReplyError { message, .. } = parse(client.recv().await) else {
        panic!("creation must fail");
    };
    assert_eq!(&message[..], b"sessions are disabled");
}

#[tokio::test]
async fn a_file_store_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!(
        "tokio-webwire-sessions-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    let serve = |events: &mut Option<Events>| {
        let (handler, ev): (Probe, Events) = probe();
        *events = Some(ev);
        Server::builder(Arc::new(handler))
            .session_store(FileStore::new(&dir).expect("session directory"))
            .build()
            .expect("valid options")
    };
    let mut events = None;
    let first = serve(&mut events);
    let addr = listen(&first).await;
    let (mut client, _) = RawClient::connect(addr).await;
    let session = login(&mut client, 1, "alice").await;
    bounded(first.shutdown()).await;

    let second = serve(&mut events);
    let addr = listen(&second).await;
    let (mut client, _) = RawClient::connect(addr).await;
    let again = restored(&mut client, 1, &session.key).await;
    assert_eq!((again.key, again.info), (session.key, session.info));
    assert!(again.last_lookup >= session.last_lookup);
    bounded(second.shutdown()).await;
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test]
async fn session_requests_are_handled_in_the_order_they_arrive() {
    let (_server, _events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;
    let session = login(&mut client, 1, "alice").await;
    client.send(close(2)).await;
    client.send(restore(3, session.key.as_bytes())).await;
    assert_eq!(
        parse(client.recv().await).request_id(),
        Some(RequestId::from(2))
    );
    assert_eq!(
        parse(client.recv().await),
        Message::ReplySessionNotFound {
            id: RequestId::from(3)
        },
        "closed by its only connection, the session is gone"
    );
}

#[tokio::test(start_paused = true)]
async fn a_creation_dropped_before_the_client_is_told_leaves_nothing() {
    let store = Arc::new(MemoryStore::default());
    let (server, mut events, _addr) =
        start(|b| b.outbound_queue_len(1).session_store(Arc::clone(&store))).await;
    // A client that reads nothing: the pipe and then the queue fill up.
    let (_silent, _) = RawClient::connect_in_memory(&server, 1024).await;
    let conn = bounded(events.connected.recv()).await.expect("connected");
    // With paused time, a send that waits 1 ms waits for a writer stuck on the full pipe.
    let fill = || conn.signal("fill", Payload::binary(vec![0u8; 512]));
    while let Ok(sent) = tokio::time::timeout(std::time::Duration::from_millis(1), fill()).await {
        sent.expect("the connection stays open while it fills");
    }
    let gave_up = tokio::time::timeout(
        std::time::Duration::from_millis(10),
        conn.create_session(tokio_webwire::SessionInfo::new()),
    )
    .await;
    assert!(gave_up.is_err(), "the notification cannot be queued");
    assert!(conn.session().is_none());
    assert_eq!(server.active_sessions(), 0, "no registration left behind");
    // Saved before it was to be announced, and removed on a task of its own once dropped.
    bounded(async {
        while !store.is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// A store whose saves fail (Redis away, a full disk), counting them.
#[derive(Default)]
struct Unsaving(std::sync::atomic::AtomicUsize);

impl SessionStore for Unsaving {
    async fn save(&self, _: &Session) -> Result<(), StoreError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(StoreError::other("Connection refused (os error 111)"))
    }
    async fn lookup(&self, _: &str) -> Result<Option<Session>, StoreError> {
        Ok(None)
    }
    async fn remove(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A login the store did not save is no login: the client is told of no session (which
/// no reconnect could restore), the request fails with the store's error, nothing stays
/// registered, and the connection goes on.
#[tokio::test]
async fn a_session_the_store_did_not_save_is_never_announced() {
    let store = Arc::new(Unsaving::default());
    let (server, _events, addr) = start(|b| b.session_store(Arc::clone(&store))).await;
    let (mut client, _) = RawClient::connect(addr).await;
    client
        .send(request(1, "login", Payload::utf8("alice".to_owned())))
        .await;
    match parse(client.recv().await) {
        Message::ReplyError { id, code, message } => {
            assert_eq!(id, RequestId::from(1));
            assert_eq!(code, "SESSION");
            assert_eq!(
                &message[..],
                b"session store failed: Connection refused (os error 111)"
            );
        }
        other => panic!("expected the login's error reply, and no session before it: {other:?}"),
    }
    assert_eq!(store.0.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(server.active_sessions(), 0, "no registration left behind");
    // Still usable: a session request gets its normal answer.
    not_found(&mut client, 2, b"no-such-key").await;
}

/// Starts a session on `login` and closes it on `logout`; its `session_closed` hook logs
/// the connection in again as a guest, which needs the connection's session lock.
struct Relogin;

impl Handler for Relogin {
    async fn request(
        &self,
        conn: &Connection,
        name: Name,
        _payload: Payload,
    ) -> Result<Payload, HandlerError> {
        match name.as_str() {
            "login" => {
                let session = conn.create_session(SessionInfo::new()).await?;
                Ok(Payload::utf8(session.key))
            }
            _ => {
                conn.close_session().await?;
                Ok(Payload::empty())
            }
        }
    }

    async fn session_closed(&self, conn: Option<&Connection>, _key: &str) {
        let conn = conn.expect("closed by its connection");
        let mut info = SessionInfo::new();
        info.insert("user", "guest").expect("a string is JSON");
        conn.create_session(info).await.expect("a new session");
    }
}

/// Hooks run after the connection's session lock is released: a `session_closed` hook
/// may start the next session.
#[tokio::test]
async fn a_session_closed_hook_may_create_a_session() {
    let server = Server::new(Relogin);
    let addr = listen(&server).await;
    let (mut client, _) = RawClient::connect(addr).await;
    client.send(request(1, "login", Payload::empty())).await;
    assert!(matches!(
        parse(client.recv().await),
        Message::NotifySessionCreated { .. }
    ));
    parse(client.recv().await);
    client.send(request(2, "logout", Payload::empty())).await;
    assert_eq!(parse(client.recv().await), Message::NotifySessionClosed);
    let Message::NotifySessionCreated { session } = parse(client.recv().await) else {
        panic!("the hook's session must be announced");
    };
    let session = Session::from_json(&session).expect("session JSON");
    assert_eq!(
        session.info.get::<String>("user").unwrap().as_deref(),
        Some("guest")
    );
    assert_eq!(
        parse(client.recv().await).request_id(),
        Some(RequestId::from(2))
    );
}

/// A store whose lookups never return (a dead database), reporting each one.
struct HangingStore(tokio::sync::mpsc::UnboundedSender<()>);

impl SessionStore for HangingStore {
    async fn save(&self, _session: &Session) -> Result<(), StoreError> {
        Ok(())
    }

    async fn lookup(&self, _key: &str) -> Result<Option<Session>, StoreError> {
        let _ = self.0.send(());
        std::future::pending().await
    }

    async fn remove(&self, _key: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A store that never answers cannot hold a shutdown up: at the deadline the restore is
/// stopped, answered with the shutdown reply, and the connection closes.
#[tokio::test]
async fn a_hanging_store_does_not_hang_the_shutdown() {
    let (lookups, mut looked_up) = tokio::sync::mpsc::unbounded_channel();
    let (server, _events, addr) = start(|b| {
        b.session_store(HangingStore(lookups))
            .shutdown_timeout(Duration::from_millis(200))
    })
    .await;
    let (mut client, _) = RawClient::connect(addr).await;
    client.send(restore(1, b"some-session-key")).await;
    bounded(looked_up.recv()).await;
    let shutdown = begin_shutdown(&server).await;
    assert_eq!(
        parse(client.recv().await),
        Message::ReplyShutdown {
            id: RequestId::from(1)
        }
    );
    let frame = client.closed().await.expect("close frame");
    assert_eq!(frame.code, CloseCode::Away);
    bounded(shutdown).await.expect("shutdown completes");
}

/// A memory store whose lookups, once they have found what they found, wait for a permit.
struct GatedLookups {
    inner: MemoryStore,
    found: tokio::sync::mpsc::UnboundedSender<()>,
    gate: tokio::sync::Semaphore,
}

impl SessionStore for GatedLookups {
    async fn save(&self, session: &Session) -> Result<(), StoreError> {
        self.inner.save(session).await
    }
    async fn lookup(&self, key: &str) -> Result<Option<Session>, StoreError> {
        let found = self.inner.lookup(key).await;
        let _ = self.found.send(());
        self.gate
            .acquire()
            .await
            .map_err(StoreError::other)?
            .forget();
        found
    }
    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.inner.remove(key).await
    }
}

/// `Server::close_session` is a revocation: with nobody online it still removes the
/// stored session, and the hook runs once.
#[tokio::test]
async fn a_revocation_ends_a_session_nobody_holds() {
    let store = Arc::new(MemoryStore::new());
    let (server, mut events, addr) = start(|b| b.session_store(Arc::clone(&store))).await;
    let (mut a, _) = RawClient::connect(addr).await;
    let key = login(&mut a, 1, "alice").await.key;
    drop(a);
    bounded(events.disconnected.recv()).await;

    assert_eq!(bounded(server.close_session(&key)).await, Ok(0));
    assert!(store.is_empty());
    expect_event(&mut events, format!("created {key}")).await;
    expect_event(&mut events, format!("revoked {key}")).await;
    let (mut b, _) = RawClient::connect(addr).await;
    not_found(&mut b, 1, key.as_bytes()).await;
}

/// A restore whose lookup found the session just before a revocation removed it is
/// answered "not found", and leaves nothing registered.
#[tokio::test]
async fn a_restore_racing_a_revocation_is_not_found() {
    let mut race = a_restore_held_after_its_lookup().await;
    let key = race.key.clone();
    // The revocation reaches a, which holds it.
    assert_eq!(bounded(race.server.close_session(&key)).await, Ok(1));
    assert_eq!(
        &race.a.recv().await[..],
        &vector("notify_session_closed")[..]
    );
    race.store.gate.add_permits(1);
    answered_not_found(&mut race.b, 1).await;
    assert!(race.server.session_connections(&key).is_empty());
    assert_eq!(race.server.active_sessions(), 0);
    expect_event(&mut race.events, format!("revoked {key}")).await;
    assert!(
        race.events.session_events.try_recv().is_err(),
        "no restore hook"
    );
}

/// What [`a_restore_held_after_its_lookup`] sets up.
struct Racing {
    server: Server<Arc<Probe>>,
    events: Events,
    store: Arc<GatedLookups>,
    /// Holds the session.
    a: RawClient,
    /// Restores it (request 1): its lookup has found the session and waits at the gate.
    b: RawClient,
    key: String,
}

async fn a_restore_held_after_its_lookup() -> Racing {
    let (found, mut lookups) = tokio::sync::mpsc::unbounded_channel();
    let store = Arc::new(GatedLookups {
        inner: MemoryStore::new(),
        found,
        gate: tokio::sync::Semaphore::new(0),
    });
    let (server, mut events, addr) = start(|b| b.session_store(Arc::clone(&store))).await;
    let (mut a, _) = RawClient::connect(addr).await;
    let key = login(&mut a, 1, "alice").await.key;
    expect_event(&mut events, format!("created {key}")).await;
    let (mut b, _) = RawClient::connect(addr).await;
    b.send(restore(1, key.as_bytes())).await;
    bounded(lookups.recv()).await;
    Racing {
        server,
        events,
        store,
        a,
        b,
        key,
    }
}

/// A session must fit in its restore reply: the server refuses to create one that would
/// not (the Go and JavaScript clients drop a connection over an oversized notification,
/// and a restore reply over the limit would fail every reconnect).
#[tokio::test]
async fn a_session_too_large_to_restore_is_refused_when_created() {
    const LIMIT: usize = 1024;
    let (_server, _events, addr) = start(|b| b.max_message_size(LIMIT)).await;
    let (mut client, _) = RawClient::connect(addr).await;
    let (mut created, mut refused) = (0, 0);
    let mut id = 0;
    // User names around the size where the session's JSON reaches the limit.
    for len in 820..=900 {
        id += 1;
        client
            .send(request(id, "login", Payload::utf8("u".repeat(len))))
            .await;
        let frame = client.recv().await;
        assert!(frame.len() <= LIMIT, "{len}: a {}-byte frame", frame.len());
        match parse(frame) {
            Message::NotifySessionCreated { session } => {
                created += 1;
                let key = Session::from_json(&session).expect("session JSON").key;
                assert!(matches!(
                    parse(client.recv().await),
                    Message::ReplyUtf8 { .. }
                ));
                // It comes back in a restore reply, which must fit too.
                id += 1;
                assert_eq!(restored(&mut client, id, &key).await.key, key);
                id += 1;
                client.send(close(id)).await;
                assert_eq!(
                    parse(client.recv().await).request_id(),
                    Some(RequestId::from(id))
                );
            }
            Message::ReplyError { code, message, .. } => {
                refused += 1;
                assert_eq!(code, "SESSION");
                let message = String::from_utf8_lossy(&message).into_owned();
                assert!(
                    message.contains("1024-byte message size limit"),
                    "{message}"
                );
            }
            other => panic!("{len}: {other:?}"),
        }
    }
    assert!(
        created > 0 && refused > 0,
        "{created} created, {refused} refused"
    );
}

/// Stored sessions expire when they have not been restored for the store's idle timeout.
#[tokio::test(start_paused = true)]
async fn a_stored_session_expires_after_its_idle_timeout() {
    let hour = Duration::from_secs(3600);
    let store = Arc::new(MemoryStore::new().idle_timeout(hour));
    let (server, mut events, _addr) = start(|b| b.session_store(Arc::clone(&store))).await;
    // In-memory pipes: with paused time, no message can be late behind the clock.
    let connect = || RawClient::connect_in_memory(&server, 64 * 1024);
    let (mut a, _) = connect().await;
    let key = login(&mut a, 1, "alice").await.key;
    drop(a);
    bounded(events.disconnected.recv()).await;

    // A restore within the timeout finds it and renews it: two seconds later it has been
    // stored for longer than the timeout, but idle for less.
    tokio::time::advance(hour - Duration::from_secs(1)).await;
    let (mut b, _) = connect().await;
    assert_eq!(restored(&mut b, 1, &key).await.key, key);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(restored(&mut b, 2, &key).await.key, key, "renewed");
    drop(b);
    bounded(events.disconnected.recv()).await;

    tokio::time::advance(hour).await;
    let (mut c, _) = connect().await;
    not_found(&mut c, 1, key.as_bytes()).await;
    assert!(store.is_empty());
}

/// Logins that leave their sessions behind cannot grow the default store without bound:
/// beyond its capacity, the session idle longest makes room.
#[tokio::test]
async fn a_full_store_makes_room_instead_of_growing() {
    let store = Arc::new(MemoryStore::new().capacity(3));
    let (_server, mut events, addr) = start(|b| b.session_store(Arc::clone(&store))).await;
    let mut keys = Vec::new();
    for user in 0..10 {
        let (mut client, _) = RawClient::connect(addr).await;
        keys.push(login(&mut client, 1, &format!("user{user}")).await.key);
        drop(client);
        bounded(events.disconnected.recv()).await;
    }
    assert_eq!(store.len(), 3);
    assert_eq!(store.evicted(), 7);
    let (mut client, _) = RawClient::connect(addr).await;
    not_found(&mut client, 1, keys[6].as_bytes()).await;
    assert_eq!(restored(&mut client, 2, &keys[9]).await.key, keys[9]);
}

/// `Handler::session_restored` sees the session on the connection and can refuse it: the
/// client is told "not found" and the connection holds nothing.
#[tokio::test]
async fn the_restore_hook_can_refuse_a_session() {
    let store = Arc::new(MemoryStore::new());
    let (server, mut events, addr) = start(|b| b.session_store(Arc::clone(&store))).await;
    let (mut a, _) = RawClient::connect(addr).await;
    let blocked = login(&mut a, 1, "blocked").await.key;
    let (mut b, _) = RawClient::connect(addr).await;
    let alice = login(&mut b, 1, "alice").await.key;
    drop((a, b));
    for _ in 0..2 {
        bounded(events.disconnected.recv()).await;
    }
    for _ in 0..2 {
        bounded(events.session_events.recv()).await;
    }

    let (mut client, _) = RawClient::connect(addr).await;
    not_found(&mut client, 1, blocked.as_bytes()).await;
    expect_event(&mut events, format!("refused {blocked}")).await;
    assert!(server.session_connections(&blocked).is_empty());
    assert_eq!(server.active_sessions(), 0);
    assert_eq!(store.len(), 2, "a refusal leaves the session stored");

    assert_eq!(restored(&mut client, 2, &alice).await.key, alice);
    expect_event(&mut events, format!("restored {alice}")).await;
    assert_eq!(server.session_connections(&alice).len(), 1);
}

/// A connection restores the session it already holds and the hook refuses it this time:
/// the connection loses the session, and `session_left` runs for it, so that what its
/// login granted (a room joined in `session_created`) is undone as on any other way out.
#[tokio::test]
async fn a_refused_restore_of_the_held_session_runs_session_left() {
    let (server, mut events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;
    let id = bounded(events.connected.recv())
        .await
        .expect("connected")
        .id();
    // Only restores of "blocked" are refused: its login is a session like any other.
    let key = login(&mut client, 1, "blocked").await.key;
    expect_event(&mut events, format!("created {key}")).await;

    not_found(&mut client, 2, key.as_bytes()).await;
    expect_event(&mut events, format!("refused {key}")).await;
    assert_eq!(bounded(events.left.recv()).await, Some((id, key.clone())));
    assert!(server.session_connections(&key).is_empty());
    assert_eq!(server.active_sessions(), 0);
    // Left once: a logout now finds no session to leave.
    client.send(close(3)).await;
    assert_eq!(
        parse(client.recv().await),
        Message::ReplyBinary {
            id: RequestId::from(3),
            data: Bytes::new()
        }
    );
    assert!(events.left.try_recv().is_err(), "session_left ran once");
}

/// A session saved by a server with a larger message size limit, restored on one whose
/// reply cannot carry it: an internal error, and the connection does not hold it.
#[tokio::test]
async fn a_stored_session_too_large_for_the_reply_is_not_attached() {
    let store = Arc::new(MemoryStore::new());
    let (_big, _events, big_addr) = start(|b| {
        b.session_store(Arc::clone(&store))
            .max_message_size(64 * 1024)
    })
    .await;
    let (small, _events, small_addr) =
        start(|b| b.session_store(Arc::clone(&store)).max_message_size(1024)).await;
    let (mut a, _) = RawClient::connect(big_addr).await;
    let key = login(&mut a, 1, &"u".repeat(2000)).await.key;

    let (mut b, _) = RawClient::connect(small_addr).await;
    b.send(restore(1, key.as_bytes())).await;
    assert_eq!(
        parse(b.recv().await),
        Message::ReplyInternalError {
            id: RequestId::from(1)
        }
    );
    assert!(small.session_connections(&key).is_empty());
    assert_eq!(small.active_sessions(), 0);
}

/// A revocation that lands while the `session_restored` hook runs: the restore is not
/// found once the hook returns, and the connection does not hold the session.
#[tokio::test]
async fn a_revocation_during_the_restore_hook_wins() {
    let (server, mut events, addr) = start(|b| b).await;
    let (mut a, _) = RawClient::connect(addr).await;
    let key = login(&mut a, 1, "gated").await.key;
    let (mut b, _) = RawClient::connect(addr).await;
    b.send(restore(1, key.as_bytes())).await;
    bounded(events.entered.recv()).await;

    assert!(bounded(server.close_session(&key)).await.is_ok());
    assert_eq!(&a.recv().await[..], &vector("notify_session_closed")[..]);
    server.handler().gate.add_permits(1);
    // b may be told of the revocation first: what matters is that it is not restored.
    let mut answer = parse(b.recv().await);
    if answer == Message::NotifySessionClosed {
        answer = parse(b.recv().await);
    }
    assert_eq!(
        answer,
        Message::ReplySessionNotFound {
            id: RequestId::from(1)
        }
    );
    assert!(server.session_connections(&key).is_empty());
    assert_eq!(server.active_sessions(), 0);
    // b was a holder when the revocation came (attached, its hook still running), so it
    // left then; and it leaves again once its hook is done, undoing what the hook may
    // have granted after the first `session_left` ran.
    let _a = bounded(events.connected.recv()).await.expect("a");
    let b_id = bounded(events.connected.recv()).await.expect("b").id();
    let mut b_left = 0;
    while b_left < 2 {
        let (id, left) = bounded(events.left.recv()).await.expect("a left event");
        assert_eq!(left, key);
        if id == b_id {
            b_left += 1;
        }
    }
}

/// A store whose lookups panic.
struct PanickingLookups(MemoryStore);

impl SessionStore for PanickingLookups {
    async fn save(&self, session: &Session) -> Result<(), StoreError> {
        self.0.save(session).await
    }
    async fn lookup(&self, _: &str) -> Result<Option<Session>, StoreError> {
        panic!("the store fails on purpose")
    }
    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.0.remove(key).await
    }
}

/// A restore whose future is dropped part-way (here: the store panicked) leaves no
/// registration behind to hold one of the session's places for ever.
#[tokio::test]
async fn a_restore_that_never_finishes_leaves_no_registration() {
    let (server, mut events, addr) = start(|b| {
        b.session_store(PanickingLookups(MemoryStore::new()))
            .max_session_connections(1)
    })
    .await;
    let (mut a, _) = RawClient::connect(addr).await;
    let key = login(&mut a, 1, "alice").await.key;
    drop(a);
    bounded(events.disconnected.recv()).await;

    let (mut b, _) = RawClient::connect(addr).await;
    b.send(restore(1, key.as_bytes())).await;
    assert_eq!(
        parse(b.recv().await),
        Message::ReplyInternalError {
            id: RequestId::from(1)
        }
    );
    assert_eq!(server.active_sessions(), 0);
    assert!(server.session_connections(&key).is_empty());
}

/// The last holder's logout ends the session also while another connection is restoring
/// it: that restore is not found, and nothing stays stored (a restore that failed later
/// would otherwise leave the session stored with nobody holding it).
#[tokio::test]
async fn a_logout_ends_the_session_for_a_restore_under_way() {
    let mut race = a_restore_held_after_its_lookup().await;
    let key = race.key.clone();
    race.a.send(close(2)).await;
    assert_eq!(
        parse(race.a.recv().await).request_id(),
        Some(RequestId::from(2))
    );
    expect_event(&mut race.events, format!("closed {key}")).await;
    assert!(race.store.inner.is_empty());
    race.store.gate.add_permits(1);
    answered_not_found(&mut race.b, 1).await;
    assert_eq!(race.server.active_sessions(), 0);
}
