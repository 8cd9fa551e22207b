//! One source cannot flush everyone's sessions: a script on 127.0.0.2 that logs in over and
//! over and vanishes pushes out its own sessions, and the real users' on 127.0.0.1 stay
//! restorable; sessions with huge user data are bounded in bytes, not only in number.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{bounded, listen};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_webwire::protocol::{Message, Name, RequestId};
use tokio_webwire::server::{Connection, Handler, HandlerResult, Server};
use tokio_webwire::session::{MemoryStore, SessionStore};
use tokio_webwire::{Payload, Session, SessionInfo};

/// `login` creates a session whose user is the payload's text.
struct Login;

impl Handler for Login {
    async fn request(&self, conn: &Connection, _: Name, payload: Payload) -> HandlerResult {
        let mut info = SessionInfo::new();
        info.insert("user", &payload.to_text()?)?;
        conn.create_session(info).await?;
        Ok(Payload::empty())
    }
}

/// Connects from `source`, logs in as `user`, and vanishes; returns the session key.
async fn login_from(source: &str, addr: SocketAddr, user: &str) -> String {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("an address"))
        .expect("bind the source address");
    let mut ws = common::websocket_over(socket, addr).await;
    let _accept_conf = bounded(ws.next()).await;
    let request = Message::request(
        RequestId::from(1),
        Name::from_static("login"),
        Payload::utf8(user.to_owned()),
    );
    bounded(ws.send(WsMessage::binary(
        request.encode().expect("encodes").to_vec(),
    )))
    .await
    .expect("sent");
    let mut key = None;
    loop {
        let Some(Ok(WsMessage::Binary(frame))) = bounded(ws.next()).await else {
            panic!("the connection ended before the reply");
        };
        match Message::parse(frame).expect("parses") {
            Message::NotifySessionCreated { session } => {
                key = Some(Session::from_json(&session).expect("a session").key);
            }
            reply => {
                assert_eq!(reply.request_id(), Some(RequestId::from(1)));
                break;
            }
        }
    }
    key.expect("a session before the reply")
}

#[tokio::test]
async fn a_login_flood_from_one_source_evicts_its_own_sessions_not_the_users() {
    let store = Arc::new(MemoryStore::new().capacity(300));
    let server = Server::builder(Login)
        .session_store(Arc::clone(&store))
        .max_sessions_per_source(100)
        .build()
        .expect("valid");
    let addr = listen(&server).await;
    // 20 real users log in (and have not come back yet: their sessions were never
    // restored, like the flood's).
    let mut users = Vec::new();
    for n in 0..20 {
        users.push(login_from("127.0.0.1", addr, &format!("user-{n}")).await);
    }
    // 400 logins from one script: more than the whole store holds with the users.
    let mut flood = Vec::new();
    for n in 0..400 {
        flood.push(login_from("127.0.0.2", addr, &format!("bot-{n}")).await);
    }
    for key in &users {
        assert!(
            store.lookup(key).await.expect("a lookup").is_some(),
            "a user's session was flushed by the flood"
        );
    }
    // The script keeps its latest 100, no more.
    let mut kept = 0;
    for key in &flood {
        kept += usize::from(store.lookup(key).await.expect("a lookup").is_some());
    }
    assert_eq!(kept, 100);
    assert!(store.lookup(&flood[399]).await.expect("a lookup").is_some());
}

#[tokio::test]
async fn huge_sessions_are_bounded_in_bytes() {
    let store = Arc::new(MemoryStore::new().max_bytes(256 * 1024));
    let server = Server::builder(Login)
        .session_store(Arc::clone(&store))
        .max_message_size(64 * 1024)
        .max_sessions_per_source(0)
        .build()
        .expect("valid");
    let addr = listen(&server).await;
    // 100 logins with 7 000-byte user names: about 700 KB of sessions.
    for n in 0..100 {
        let user = format!("{n:04}{}", "x".repeat(7_000));
        login_from("127.0.0.2", addr, &user).await;
        assert!(store.bytes() <= 256 * 1024, "{} bytes kept", store.bytes());
    }
    assert!(
        store.len() < 40,
        "{} sessions of 7 KB in 256 KiB",
        store.len()
    );
}
