//! Limits and the restore hook: sessions too large, idle expiry, a full store, restores the
//! hook refuses, and restores that panic or never finish.

use super::*;

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
    let (store, server, mut events, addr, a, session) = logged_in("blocked").await;
    let blocked = session.key;
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
    restore_fails_internally(&mut b, &key).await;
    assert!(small.session_connections(&key).is_empty());
    assert_eq!(small.active_sessions(), 0);
}

/// `client` asks to restore `key` and is answered with an internal error.
async fn restore_fails_internally(client: &mut RawClient, key: &str) {
    client.send(restore(1, key.as_bytes())).await;
    assert_eq!(
        parse(client.recv().await),
        Message::ReplyInternalError {
            id: RequestId::from(1)
        }
    );
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
    restore_fails_internally(&mut b, &key).await;
    assert_eq!(server.active_sessions(), 0);
    assert!(server.session_connections(&key).is_empty());
}
