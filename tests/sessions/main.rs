//! Sessions end to end on the server (PROTOCOL.md §4), spoken in raw frames: creation,
//! restore, limits, lookups that fail, closing by either side, disconnects, a file store
//! across a restart, and keys a client made up.

#[path = "../common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::probe::{Events, Probe, parse, probe, request, start};
use common::{RawClient, begin_shutdown, bounded, listen, vector};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_webwire::protocol::{Message, Name, RequestId};
use tokio_webwire::server::{Connection, Handler, HandlerResult, Server};
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

/// A probe server keeping sessions in a fresh [`MemoryStore`], and a client that logged
/// in on it as `user` (request 1): the start of many tests here. Returns the store, the
/// server, its events, its address, the client and the session.
async fn logged_in(
    user: &str,
) -> (
    Arc<MemoryStore>,
    Server<Arc<Probe>>,
    Events,
    SocketAddr,
    RawClient,
    Session,
) {
    let store = Arc::new(MemoryStore::new());
    let (server, events, addr) = start(|b| b.session_store(Arc::clone(&store))).await;
    let (mut client, _) = RawClient::connect(addr).await;
    let session = login(&mut client, 1, user).await;
    (store, server, events, addr, client, session)
}

/// The next session hook the probe reports must be `expected`.
async fn expect_event(events: &mut Events, expected: String) {
    assert_eq!(bounded(events.session_events.recv()).await, Some(expected));
}

mod lifecycle;
mod limits;
mod races;
mod stores;
