//! A handler whose behaviour each test steers by request name, reporting what happens
//! through channels; and helpers to speak to it in raw frames.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Barrier, Semaphore, mpsc};
use tokio_webwire::protocol::{ErrorCode, Message, Name, RequestId};
use tokio_webwire::server::{
    CloseReason, Connection, Handler, HandlerError, HandlerResult, RestoreRefused, Server,
    ServerBuilder,
};
use tokio_webwire::{Encoding, Payload, Session, SessionInfo};

use super::listen;

/// A handler whose behaviour each test steers by request name, and which reports what
/// happens through channels.
pub struct Probe {
    /// "gate" requests wait for a permit here.
    pub gate: Semaphore,
    /// "barrier" requests all wait here until 100 are running at once.
    pub barrier: Barrier,
    /// Says when a "gate" request has started.
    pub entered: mpsc::UnboundedSender<()>,
    pub connected: mpsc::UnboundedSender<Connection>,
    pub disconnected: mpsc::UnboundedSender<CloseReason>,
    pub signals: mpsc::UnboundedSender<(Name, Payload)>,
    /// Session hooks: `created <key>`, `closed <key>` (by a connection), `revoked <key>`
    /// (by the server), `restored <key>` and `refused <key>` (a session of user "blocked").
    pub session_events: mpsc::UnboundedSender<String>,
    /// `session_left`: the connection's id and the key.
    pub left: mpsc::UnboundedSender<(u64, String)>,
}

pub struct Events {
    pub entered: mpsc::UnboundedReceiver<()>,
    pub connected: mpsc::UnboundedReceiver<Connection>,
    pub disconnected: mpsc::UnboundedReceiver<CloseReason>,
    pub signals: mpsc::UnboundedReceiver<(Name, Payload)>,
    pub session_events: mpsc::UnboundedReceiver<String>,
    pub left: mpsc::UnboundedReceiver<(u64, String)>,
}

impl Handler for Probe {
    async fn connected(&self, conn: &Connection) {
        let _ = self.connected.send(conn.clone());
    }

    async fn disconnected(&self, _conn: &Connection, reason: &CloseReason) {
        let _ = self.disconnected.send(reason.clone());
    }

    async fn request(&self, conn: &Connection, name: Name, payload: Payload) -> HandlerResult {
        match name.as_str() {
            "fail" => Err(HandlerError::reply(
                ErrorCode::from_static("SAMPLE_ERROR"),
                "Sample error message",
            )),
            "internal" => Err(HandlerError::internal("a secret the client must not see")),
            "panic" => panic!("handler panics on purpose"),
            "odd16" => Ok(Payload {
                encoding: Encoding::Utf16,
                data: Bytes::from_static(b"abc"),
            }),
            "big" => Ok(Payload::binary(vec![0u8; 100_000])),
            "bigerror" => Err(HandlerError::reply(
                ErrorCode::from_static("BIG"),
                "x".repeat(100_000),
            )),
            "gate" => {
                let _ = self.entered.send(());
                let permit = self.gate.acquire().await?;
                permit.forget();
                Ok(payload)
            }
            "barrier" => {
                self.barrier.wait().await;
                Ok(payload)
            }
            // Creates a session whose info holds the payload as "user"; replies its key.
            "login" => {
                let mut info = SessionInfo::new();
                info.insert("user", &payload.to_text()?)?;
                let session = conn.create_session(info).await.map_err(|error| {
                    HandlerError::reply(ErrorCode::from_static("SESSION"), error.to_string())
                })?;
                Ok(Payload::utf8(session.key))
            }
            "logout" => {
                conn.close_session().await?;
                Ok(Payload::empty())
            }
            // Waits until the connection closes, then reports what a handler sees of it:
            // `is_closed()` and whether a signal is refused.
            "await_closed" => {
                let _ = self.entered.send(());
                conn.closed().await;
                let refused = conn.signal("late", Payload::empty()).await.is_err();
                Ok(Payload::utf8(format!(
                    "closed={} refused={refused}",
                    conn.is_closed()
                )))
            }
            // Topics: the payload is the topic; `publish` takes "topic|text" and sends
            // `news` with the text, replying to how many here.
            "subscribe" => {
                let subscribed = conn
                    .subscribe(&payload.to_text()?)
                    .map_err(HandlerError::internal)?;
                // Answered once other nodes' publications reach it.
                conn.sync_backplane().await;
                Ok(Payload::utf8(subscribed.to_string()))
            }
            "unsubscribe" => Ok(Payload::utf8(
                conn.unsubscribe(&payload.to_text()?).to_string(),
            )),
            "publish" => {
                let text = payload.to_text()?;
                let (topic, text) = text.split_once('|').unwrap_or((&text, ""));
                let here = conn
                    .publish(topic, "news", text.to_owned())
                    .await
                    .map_err(HandlerError::internal)?;
                Ok(Payload::utf8(here.to_string()))
            }
            "notify" => {
                conn.signal("news", payload.clone()).await?;
                Ok(payload)
            }
            _ => Ok(payload),
        }
    }

    async fn session_created(&self, _conn: &Connection, session: &Session) {
        let _ = self.session_events.send(format!("created {}", session.key));
    }

    async fn session_restored(
        &self,
        conn: &Connection,
        session: &Session,
    ) -> Result<(), RestoreRefused> {
        assert_eq!(conn.session().as_ref(), Some(session), "on the connection");
        let user = session.info.get::<String>("user").ok().flatten();
        // A session of user "gated" is restored only once a permit is in `gate`.
        if user.as_deref() == Some("gated") {
            let _ = self.entered.send(());
            if let Ok(permit) = self.gate.acquire().await {
                permit.forget();
            }
        }
        let blocked = user.as_deref() == Some("blocked");
        let verdict = if blocked { "refused" } else { "restored" };
        let _ = self
            .session_events
            .send(format!("{verdict} {}", session.key));
        if blocked { Err(RestoreRefused) } else { Ok(()) }
    }

    async fn session_closed(&self, conn: Option<&Connection>, key: &str) {
        let by = if conn.is_some() { "closed" } else { "revoked" };
        let _ = self.session_events.send(format!("{by} {key}"));
    }

    async fn session_left(&self, conn: &Connection, key: &str) {
        let _ = self.left.send((conn.id(), key.to_owned()));
    }

    async fn signal(&self, _conn: &Connection, name: Name, payload: Payload) {
        if name == "panic" {
            panic!("signal handler panics on purpose");
        }
        let _ = self.signals.send((name, payload));
    }
}

pub fn probe() -> (Probe, Events) {
    let (entered, entered_rx) = mpsc::unbounded_channel();
    let (connected, connected_rx) = mpsc::unbounded_channel();
    let (disconnected, disconnected_rx) = mpsc::unbounded_channel();
    let (signals, signals_rx) = mpsc::unbounded_channel();
    let (session_events, session_events_rx) = mpsc::unbounded_channel();
    let (left, left_rx) = mpsc::unbounded_channel();
    let probe = Probe {
        gate: Semaphore::new(0),
        barrier: Barrier::new(100),
        entered,
        connected,
        disconnected,
        signals,
        session_events,
        left,
    };
    let events = Events {
        entered: entered_rx,
        connected: connected_rx,
        disconnected: disconnected_rx,
        signals: signals_rx,
        session_events: session_events_rx,
        left: left_rx,
    };
    (probe, events)
}

/// A probe server with options set by `configure`, listening on a fresh port.
pub async fn start(
    configure: impl FnOnce(ServerBuilder<Arc<Probe>>) -> ServerBuilder<Arc<Probe>>,
) -> (Server<Arc<Probe>>, Events, SocketAddr) {
    let (probe, events) = probe();
    let server = configure(Server::builder(Arc::new(probe)))
        .build()
        .expect("valid options");
    let addr = listen(&server).await;
    (server, events, addr)
}

/// An encoded request.
pub fn request(id: u64, name: &'static str, payload: Payload) -> Bytes {
    Message::request(RequestId::from(id), Name::from_static(name), payload)
        .encode()
        .expect("valid request")
}

/// Parses what the server sent.
pub fn parse(frame: Bytes) -> Message {
    Message::parse(frame).expect("the server sends valid messages")
}
