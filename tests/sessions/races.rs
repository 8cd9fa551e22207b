//! Revocations and logouts racing a restore: a lookup held open while the session ends.

use super::*;

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
    let (store, server, mut events, addr, a, session) = logged_in("alice").await;
    let key = session.key;
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
