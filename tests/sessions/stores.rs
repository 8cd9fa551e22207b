//! Stores: a file store across a restart, session requests in order, and stores that fail to
//! save or hang (a creation dropped, a session not saved, a shutdown not held up).

use super::*;

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
    async fn request(&self, conn: &Connection, name: Name, _payload: Payload) -> HandlerResult {
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
