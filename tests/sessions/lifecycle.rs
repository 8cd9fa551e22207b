//! Creating, restoring and closing sessions: from a second connection, one login per
//! connection, the connection limit, unknown keys, closing by the client or the server, and
//! sessions disabled.

use super::*;

#[tokio::test]
async fn create_then_restore_from_a_second_connection() {
    let (store, server, mut events, addr, _first, session) = logged_in("alice").await;
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
    client
        .answered_vector("restore_session_request", "reply_session_not_found")
        .await;
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
    client
        .answered_vector("restore_session_request", "reply_internal_error")
        .await;
    assert_eq!(server.active_sessions(), 0, "the reservation is released");
}

#[tokio::test]
async fn client_close_destroys_the_session_only_with_its_last_connection() {
    let (store, server, mut events, addr, mut a, session) = logged_in("alice").await;
    let key = session.key;
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
    let (store, server, mut events, addr, mut a, _session) = logged_in("alice").await;
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
    let (store, _server, mut events, _addr, mut a, session) = logged_in("alice").await;
    let key = session.key;
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
