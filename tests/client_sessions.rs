//! Client sessions against a scripted server (PROTOCOL.md §4): notifications 15 and 16,
//! restore and close requests byte for byte, and the restore after a reconnection.
//!
//! Over 600 lines, one subject: the client's session state machine as the scripted
//! server drives it. Every test uses the same event recorder and scripted-session
//! helpers at the top, and the late-reply cases read as one sequence with the ones
//! before them.

mod common;

use std::time::Duration;

use time::macros::datetime;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_webwire::client::{Backoff, ClientHandler, Reconnect};
use tokio_webwire::protocol::{Message, Name, RequestId};
use tokio_webwire::{Client, ClientBuilder, Payload, RequestError, Session};

use common::script::{Script, Ws, close_code, recv_frame, recv_message, reply_vector, send};
use common::{bounded, vector};

/// The key in the `notify_session_created` vector.
const NOTIFIED_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v";

/// What a [`Recorder`] saw, in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Connected,
    Disconnected,
    Signal(String),
    SessionCreated(Session),
    SessionClosed,
}

/// A handler that reports every event on a channel.
struct Recorder(mpsc::UnboundedSender<Seen>);

impl ClientHandler for Recorder {
    async fn signal(&self, _client: &Client, name: Name, _: Payload) {
        let _ = self.0.send(Seen::Signal(name.to_string()));
    }

    async fn connected(&self, _client: &Client) {
        let _ = self.0.send(Seen::Connected);
    }

    async fn disconnected(&self, _client: &Client) {
        let _ = self.0.send(Seen::Disconnected);
    }

    async fn session_created(&self, _client: &Client, session: &Session) {
        let _ = self.0.send(Seen::SessionCreated(session.clone()));
    }

    async fn session_closed(&self, _client: &Client) {
        let _ = self.0.send(Seen::SessionClosed);
    }
}

struct Events(mpsc::UnboundedReceiver<Seen>);

impl Events {
    async fn next(&mut self) -> Seen {
        bounded(self.0.recv()).await.expect("the handler is alive")
    }

    /// Proves that nothing else was queued before: the server sends a signal, which must
    /// be the next event.
    async fn nothing_before_signal(&mut self, ws: &mut Ws) {
        send(ws, &vector("signal_utf8_named")).await;
        assert_eq!(self.next().await, Seen::Signal("chat".into()));
    }
}

fn fast_backoff() -> Reconnect {
    Reconnect::Backoff(
        Backoff::default()
            .min(Duration::from_millis(50))
            .max(Duration::from_millis(200)),
    )
}

/// Connects a client built from `builder` with a recording handler; the first event
/// (`Connected`) is already taken.
async fn connect(builder: ClientBuilder, script: &Script) -> (Client, Ws, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    let builder = builder.handler(Recorder(tx));
    let (client, ws) =
        bounded(async { tokio::join!(builder.connect(&script.url), script.accept()) }).await;
    let mut events = Events(rx);
    assert_eq!(events.next().await, Seen::Connected);
    (client.expect("connects"), ws, events)
}

fn no_reconnect() -> ClientBuilder {
    Client::builder().reconnect(Reconnect::Off)
}

/// The session of the `notify_session_created` vector.
fn notified_session() -> Session {
    let json = &vector("notify_session_created")[1..];
    Session::from_json(json).expect("the vector holds a session")
}

/// The server creates a session for the client's connection (notification 15).
async fn create_session(ws: &mut Ws, events: &mut Events) {
    send(ws, &vector("notify_session_created")).await;
    assert_eq!(
        events.next().await,
        Seen::SessionCreated(notified_session())
    );
}

/// The identifier of a request frame.
fn id_of(frame: &[u8]) -> RequestId {
    RequestId::new(frame[1..9].try_into().expect("9 bytes at least"))
}

// ─── Notifications ──────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn notification_15_sets_the_session_and_fires_the_event() {
    let script = Script::bind().await;
    let (client, mut ws, mut events) = connect(no_reconnect(), &script).await;
    assert_eq!(client.session(), None);
    create_session(&mut ws, &mut events).await;
    let session = client.session().expect("a session");
    assert_eq!(session.key, NOTIFIED_KEY);
    assert_eq!(
        session.created,
        datetime!(2019-01-04 21:19:06.123456789 +01:00)
    );
    assert_eq!(session.info.get::<u32>("uid").unwrap(), Some(42));
    assert_eq!(
        session.info.get::<String>("user").unwrap().as_deref(),
        Some("alice")
    );
}

#[tokio::test]
async fn notification_16_clears_the_session_and_fires_the_event() {
    let script = Script::bind().await;
    let (client, mut ws, mut events) = connect(no_reconnect(), &script).await;
    // Without a session: nothing to close, no event.
    send(&mut ws, &vector("notify_session_closed")).await;
    events.nothing_before_signal(&mut ws).await;

    create_session(&mut ws, &mut events).await;
    send(&mut ws, &vector("notify_session_closed")).await;
    assert_eq!(events.next().await, Seen::SessionClosed);
    assert_eq!(client.session(), None);
    assert!(client.is_connected());
}

#[tokio::test]
async fn malformed_session_json_in_15_is_a_protocol_violation() {
    let script = Script::bind().await;
    let (client, mut ws, mut events) = connect(no_reconnect(), &script).await;
    send(&mut ws, b"\x15{\"k\":1}").await;
    assert_eq!(
        bounded(close_code(&mut ws)).await,
        Some(CloseCode::Protocol)
    );
    assert_eq!(events.next().await, Seen::Disconnected);
    assert_eq!(client.session(), None);
    assert!(!client.is_connected());
    assert_eq!(
        client.request("q", "x").await,
        Err(RequestError::Disconnected)
    );
}

// ─── Secrets stay out of Debug ───────────────────────────────────────────────────────────

#[tokio::test]
async fn debug_output_holds_no_key_and_no_url_credentials() {
    let script = Script::bind().await;
    let port = script.listener.local_addr().expect("addr").port();
    let url = format!("ws://alice:s3cret@127.0.0.1:{port}/ws?token=s3cret#s3cret");
    let (tx, rx) = mpsc::unbounded_channel();
    let builder = no_reconnect().handler(Recorder(tx));
    let (client, ws) =
        bounded(async { tokio::join!(builder.connect(&url), script.accept()) }).await;
    let (client, mut ws, mut events) = (client.expect("connects"), ws, Events(rx));
    assert_eq!(events.next().await, Seen::Connected);
    let url_shown = format!("ws://<redacted>@127.0.0.1:{port}/ws?<redacted>");
    assert_eq!(
        format!("{client:?}"),
        format!(
            r#"Client {{ url: "{url_shown}", state: Connected {{ generation: 1 }}, session: false }}"#
        )
    );

    create_session(&mut ws, &mut events).await;
    let shown = format!("{client:?}");
    assert_eq!(
        shown,
        format!(
            r#"Client {{ url: "{url_shown}", state: Connected {{ generation: 1 }}, session: true }}"#
        )
    );
    let session = client.session().expect("a session");
    for shown in [shown, format!("{client:#?}"), format!("{session:?}")] {
        assert!(!shown.contains(NOTIFIED_KEY), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
    // What is left of the session is still worth reading.
    let shown = format!("{session:?}");
    assert!(
        shown.contains("key: <redacted: 64 bytes>") && shown.contains("alice"),
        "{shown}"
    );

    drop(ws);
    assert_eq!(events.next().await, Seen::Disconnected);
    assert_eq!(
        format!("{client:?}"),
        format!(r#"Client {{ url: "{url_shown}", state: Down, session: true }}"#)
    );
    client.close().await;
    assert!(format!("{client:?}").contains("state: Closed"));
}

// ─── restore_session ────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn restore_sends_the_golden_request_and_stores_the_reply() {
    let script = Script::bind().await;
    let (client, mut ws, mut events) = connect(no_reconnect(), &script).await;
    let (restored, ()) = bounded(async {
        tokio::join!(client.restore_session("testsessionkey"), async {
            // The first request of the client: identifier 1, as in the vector.
            let frame = recv_frame(&mut ws).await;
            assert_eq!(frame[..], vector("restore_session_request")[..]);
            send(&mut ws, &vector("reply_utf8_restored_session")).await;
        })
    })
    .await;
    let restored = restored.expect("restored");
    assert_eq!(restored.key, "testsessionkey");
    assert_eq!(restored.created, datetime!(2019-01-04 21:19:06 UTC));
    assert_eq!(restored.last_lookup, datetime!(2019-01-05 08:00:00.5 UTC));
    assert!(restored.info.is_empty());
    assert_eq!(client.session().as_ref(), Some(&restored));
    assert_eq!(events.next().await, Seen::SessionCreated(restored));
    assert_eq!(client.pending_requests(), 0);
}

#[tokio::test]
async fn restore_failures_leave_no_session() {
    let script = Script::bind().await;
    let (client, mut ws, mut events) = connect(no_reconnect(), &script).await;
    let cases = [
        ("reply_session_not_found", RequestError::SessionNotFound),
        (
            "reply_max_sess_conns_reached",
            RequestError::MaxSessionConnectionsReached,
        ),
        ("reply_sessions_disabled", RequestError::SessionsDisabled),
        ("reply_internal_error", RequestError::Internal),
        ("reply_shutdown", RequestError::Shutdown),
    ];
    for (name, expected) in cases {
        let (restored, ()) = bounded(async {
            tokio::join!(client.restore_session("k"), async {
                let frame = recv_frame(&mut ws).await;
                assert_eq!(frame[0], 0x20);
                assert_eq!(&frame[9..], b"k");
                send(&mut ws, &reply_vector(name, id_of(&frame))).await;
            })
        })
        .await;
        assert_eq!(restored, Err(expected), "{name}");
        assert_eq!(client.session(), None, "{name}");
    }

    // A reply that is not a session: an error, nothing stored, the connection stays.
    let (restored, ()) = bounded(async {
        tokio::join!(client.restore_session("k"), async {
            let frame = recv_frame(&mut ws).await;
            let mut reply = vec![0xc0];
            reply.extend_from_slice(&frame[1..9]);
            reply.extend_from_slice(b"{\"k\":\"k\"}");
            send(&mut ws, &reply).await;
        })
    })
    .await;
    assert!(
        matches!(restored, Err(RequestError::InvalidReply(_))),
        "{restored:?}"
    );
    assert_eq!(client.session(), None);
    assert!(client.is_connected());
    // No session event was fired along the way.
    events.nothing_before_signal(&mut ws).await;
    assert_eq!(client.pending_requests(), 0);
}

#[tokio::test]
async fn a_late_restore_reply_still_becomes_the_session() {
    let script = Script::bind().await;
    let (client, mut ws, mut events) = impatient(&script).await;
    let frame = restore_timing_out(&client, &mut ws, "testsessionkey").await;
    assert_eq!(client.session(), None);
    // The server did restore it: its reply, late, keeps the client in step.
    let reply = reply_vector("reply_utf8_restored_session", id_of(&frame));
    send(&mut ws, &reply).await;
    let Seen::SessionCreated(session) = events.next().await else {
        panic!("expected the session event");
    };
    assert_eq!(session.key, "testsessionkey");
    assert_eq!(client.session(), Some(session));
    assert_eq!(client.pending_requests(), 0);
}

/// A restore reply (`C0`) to request `id` carrying a session with `key`.
fn session_reply(id: RequestId, key: &str) -> Vec<u8> {
    let mut reply = vec![0xc0];
    reply.extend_from_slice(id.as_bytes());
    reply.extend_from_slice(format!(r#"{{"k":"{key}","c":"2019-01-04T21:19:06Z"}}"#).as_bytes());
    reply
}

/// A NotifySessionCreated (`15`) of a session with `key`.
fn notify_created(key: &str) -> Vec<u8> {
    let mut frame = vec![0x15];
    frame.extend_from_slice(format!(r#"{{"k":"{key}","c":"2019-01-04T21:19:06Z"}}"#).as_bytes());
    frame
}

/// The request timeout of [`impatient`] clients.
const IMPATIENT: Duration = Duration::from_millis(100);

/// A client whose requests time out after [`IMPATIENT`], connected.
async fn impatient(script: &Script) -> (Client, Ws, Events) {
    connect(no_reconnect().request_timeout(IMPATIENT), script).await
}

/// Sends a restore of `key` that times out; returns its frame as the server got it.
async fn restore_timing_out(client: &Client, ws: &mut Ws, key: &str) -> bytes::Bytes {
    let (restored, frame) =
        bounded(async { tokio::join!(client.restore_session(key), recv_frame(ws)) }).await;
    assert_eq!(restored, Err(RequestError::Timeout { after: IMPATIENT }));
    frame
}

/// The server creates a session, then the client sends a close of it that times out;
/// returns the close's frame as the server got it.
async fn close_timing_out(client: &Client, ws: &mut Ws, events: &mut Events) -> bytes::Bytes {
    create_session(ws, events).await;
    let (closed, frame) =
        bounded(async { tokio::join!(client.close_session(), recv_frame(ws)) }).await;
    assert_eq!(closed, Err(RequestError::Timeout { after: IMPATIENT }));
    // Kept until the server confirms.
    assert!(client.session().is_some());
    frame
}

/// Once the late replies are in: nothing more happens before a signal, the client holds
/// `session`, and no request is pending.
async fn settled_with(client: &Client, ws: &mut Ws, events: &mut Events, session: Session) {
    events.nothing_before_signal(ws).await;
    assert_eq!(client.session(), Some(session));
    assert_eq!(client.pending_requests(), 0);
}

#[tokio::test]
async fn a_late_restore_reply_does_not_overwrite_a_session_created_since() {
    let script = Script::bind().await;
    let (client, mut ws, mut events) = impatient(&script).await;
    let frame = restore_timing_out(&client, &mut ws, "testsessionkey").await;
    // The application moved on: the server created a session for it (a login).
    create_session(&mut ws, &mut events).await;
    // The forgotten restore's reply comes last: it must not replace the newer session.
    send(
        &mut ws,
        &reply_vector("reply_utf8_restored_session", id_of(&frame)),
    )
    .await;
    settled_with(&client, &mut ws, &mut events, notified_session()).await;
}

#[tokio::test]
async fn a_late_restore_reply_does_not_overwrite_a_newer_restore() {
    let script = Script::bind().await;
    let (client, mut ws, mut events) = impatient(&script).await;
    let first = restore_timing_out(&client, &mut ws, "testsessionkey").await;
    let (restored, ()) = bounded(async {
        tokio::join!(client.restore_session("other"), async {
            let second = recv_frame(&mut ws).await;
            assert_eq!(&second[9..], b"other");
            // The server answers both, the forgotten one first.
            send(
                &mut ws,
                &reply_vector("reply_utf8_restored_session", id_of(&first)),
            )
            .await;
            send(&mut ws, &session_reply(id_of(&second), "other")).await;
        })
    })
    .await;
    let restored = restored.expect("restored");
    assert_eq!(restored.key, "other");
    // One session event: the one asked for last.
    assert_eq!(events.next().await, Seen::SessionCreated(restored.clone()));
    settled_with(&client, &mut ws, &mut events, restored).await;
}

#[tokio::test]
async fn a_late_close_reply_does_not_end_a_session_created_since() {
    let script = Script::bind().await;
    let (client, mut ws, mut events) = impatient(&script).await;
    let frame = close_timing_out(&client, &mut ws, &mut events).await;
    // A new session since (the server replaced it)...
    send(&mut ws, &notify_created("fresh")).await;
    let Seen::SessionCreated(fresh) = events.next().await else {
        panic!("expected the session event");
    };
    assert_eq!(fresh.key, "fresh");
    // ...and the forgotten close's confirmation comes last: the new session stays.
    send(&mut ws, &reply_vector("reply_binary_empty", id_of(&frame))).await;
    settled_with(&client, &mut ws, &mut events, fresh).await;
}

#[tokio::test]
async fn a_late_close_reply_with_nothing_newer_still_ends_the_session() {
    let script = Script::bind().await;
    let (client, mut ws, mut events) = impatient(&script).await;
    let frame = close_timing_out(&client, &mut ws, &mut events).await;
    send(&mut ws, &reply_vector("reply_binary_empty", id_of(&frame))).await;
    assert_eq!(events.next().await, Seen::SessionClosed);
    assert_eq!(client.session(), None);
    assert_eq!(client.pending_requests(), 0);
}

#[tokio::test]
async fn restore_while_a_session_is_active_is_refused_locally() {
    let script = Script::bind().await;
    let (client, mut ws, mut events) = connect(no_reconnect(), &script).await;
    create_session(&mut ws, &mut events).await;
    assert_eq!(
        bounded(client.restore_session("other")).await,
        Err(RequestError::SessionActive)
    );
    assert_eq!(client.session(), Some(notified_session()));
    // Nothing was sent: the next message the server sees is this request.
    let (reply, ()) = bounded(async {
        tokio::join!(client.request("q", "x"), async {
            let message = recv_message(&mut ws).await;
            assert_eq!(message.name().map(Name::as_str), Some("q"));
            let id = message.request_id().unwrap();
            send(
                &mut ws,
                &Message::reply(id, Payload::empty()).encode().unwrap(),
            )
            .await;
        })
    })
    .await;
    assert_eq!(reply, Ok(Payload::empty()));
}

#[tokio::test]
async fn restore_with_an_empty_key_is_refused_locally() {
    let script = Script::bind().await;
    let (client, _ws, _events) = connect(no_reconnect(), &script).await;
    assert!(matches!(
        bounded(client.restore_session("")).await,
        Err(RequestError::InvalidMessage(_))
    ));
}

// ─── close_session ──────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn close_sends_1f_and_id_and_clears_after_the_empty_reply() {
    let script = Script::bind().await;
    let (client, mut ws, mut events) = connect(no_reconnect(), &script).await;
    // Without a session: Ok at once, nothing sent.
    assert_eq!(bounded(client.close_session()).await, Ok(()));

    create_session(&mut ws, &mut events).await;
    let (closed, ()) = bounded(async {
        tokio::join!(client.close_session(), async {
            let frame = recv_frame(&mut ws).await;
            // Exactly 9 bytes; the client's first request, so identifier 1.
            assert_eq!(frame[..], vector("close_session_request")[..]);
            // Not cleared before the server confirms.
            assert!(client.session().is_some());
            send(&mut ws, &vector("reply_binary_empty")).await;
        })
    })
    .await;
    assert_eq!(closed, Ok(()));
    assert_eq!(client.session(), None);
    assert_eq!(events.next().await, Seen::SessionClosed);
    assert_eq!(client.pending_requests(), 0);
}

#[tokio::test]
async fn close_refused_by_the_server_keeps_the_session() {
    let script = Script::bind().await;
    let (client, mut ws, mut events) = connect(no_reconnect(), &script).await;
    create_session(&mut ws, &mut events).await;
    let (closed, ()) = bounded(async {
        tokio::join!(client.close_session(), async {
            let frame = recv_frame(&mut ws).await;
            assert_eq!(frame.len(), 9);
            assert_eq!(frame[0], 0x1f);
            send(
                &mut ws,
                &reply_vector("reply_sessions_disabled", id_of(&frame)),
            )
            .await;
        })
    })
    .await;
    assert_eq!(closed, Err(RequestError::SessionsDisabled));
    assert_eq!(client.session(), Some(notified_session()));
    events.nothing_before_signal(&mut ws).await;
}

#[tokio::test]
async fn close_while_disconnected_clears_locally() {
    let script = Script::bind().await;
    let (client, mut ws, mut events) = connect(no_reconnect(), &script).await;
    create_session(&mut ws, &mut events).await;
    drop(ws);
    assert_eq!(events.next().await, Seen::Disconnected);
    assert!(!client.is_connected());
    // Kept while disconnected...
    assert_eq!(client.session(), Some(notified_session()));
    // ...until closed, which needs no server.
    assert_eq!(bounded(client.close_session()).await, Ok(()));
    assert_eq!(client.session(), None);
    assert_eq!(events.next().await, Seen::SessionClosed);
    assert_eq!(bounded(client.close_session()).await, Ok(()));

    client.close().await;
    assert_eq!(
        client.close_session().await,
        Err(RequestError::ClientClosed)
    );
}

// ─── Restore after a reconnection ───────────────────────────────────────────────────────

/// Loses the connection, then issues a request while the client reconnects; returns the
/// request's task and the new connection.
async fn reconnect_with_a_waiting_request(
    client: &Client,
    ws: Ws,
    script: &Script,
    events: &mut Events,
) -> (tokio::task::JoinHandle<Result<Payload, RequestError>>, Ws) {
    drop(ws);
    assert_eq!(events.next().await, Seen::Disconnected);
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.request("q", "after").await }
    });
    // The request is waiting for the connection before the client dials again.
    tokio::task::yield_now().await;
    let ws = bounded(script.accept()).await;
    (waiting, ws)
}

/// Answers the next request (echo) and checks that it is the waiting one.
async fn answer_the_waiting_request(
    ws: &mut Ws,
    waiting: tokio::task::JoinHandle<Result<Payload, RequestError>>,
) {
    let message = recv_message(ws).await;
    assert_eq!(message.name().map(Name::as_str), Some("q"));
    let id = message.request_id().unwrap();
    send(
        ws,
        &Message::reply(id, message.payload().unwrap())
            .encode()
            .unwrap(),
    )
    .await;
    assert_eq!(bounded(waiting).await.unwrap(), Ok(Payload::utf8("after")));
}

#[tokio::test]
async fn reconnection_restores_the_session_before_any_queued_request() {
    let script = Script::bind().await;
    let builder = Client::builder().reconnect(fast_backoff());
    let (client, mut ws, mut events) = connect(builder, &script).await;
    // A session restored by hand, from the golden reply.
    let (restored, ()) = bounded(async {
        tokio::join!(client.restore_session("testsessionkey"), async {
            recv_frame(&mut ws).await;
            send(&mut ws, &vector("reply_utf8_restored_session")).await;
        })
    })
    .await;
    let restored = restored.unwrap();
    assert_eq!(events.next().await, Seen::SessionCreated(restored.clone()));

    let (waiting, mut ws) =
        reconnect_with_a_waiting_request(&client, ws, &script, &mut events).await;
    // The first message on the new connection: 20 + id + key.
    let frame = bounded(recv_frame(&mut ws)).await;
    assert_eq!(frame[0], 0x20);
    assert_eq!(&frame[9..], b"testsessionkey");
    // Not connected (for requests) until the restore is answered.
    assert!(!client.is_connected());
    let mut reply = reply_vector("reply_utf8_restored_session", id_of(&frame));
    // The server's answer may carry a new last lookup: the client takes it.
    let json = br#"{"k":"testsessionkey","c":"2019-01-04T21:19:06Z","l":"2019-01-06T00:00:00Z"}"#;
    reply.truncate(9);
    reply.extend_from_slice(json);
    send(&mut ws, &reply).await;

    let refreshed = Session::from_json(json).unwrap();
    assert_eq!(events.next().await, Seen::SessionCreated(refreshed.clone()));
    assert_eq!(events.next().await, Seen::Connected);
    assert_eq!(client.session(), Some(refreshed));
    answer_the_waiting_request(&mut ws, waiting).await;
}

#[tokio::test]
async fn reconnection_forgets_a_session_the_server_does_not_know() {
    let script = Script::bind().await;
    let builder = Client::builder().reconnect(fast_backoff());
    let (client, mut ws, mut events) = connect(builder, &script).await;
    create_session(&mut ws, &mut events).await;

    let (waiting, mut ws) =
        reconnect_with_a_waiting_request(&client, ws, &script, &mut events).await;
    let frame = bounded(recv_frame(&mut ws)).await;
    assert_eq!(frame[0], 0x20);
    assert_eq!(&frame[9..], NOTIFIED_KEY.as_bytes());
    assert!(!client.is_connected());
    // A signal sent during the restore reaches the handler after `connected`.
    send(&mut ws, &vector("signal_utf8_named")).await;
    send(
        &mut ws,
        &reply_vector("reply_session_not_found", id_of(&frame)),
    )
    .await;

    assert_eq!(events.next().await, Seen::SessionClosed);
    assert_eq!(events.next().await, Seen::Connected);
    assert_eq!(events.next().await, Seen::Signal("chat".into()));
    assert_eq!(client.session(), None);
    answer_the_waiting_request(&mut ws, waiting).await;
}

#[tokio::test]
async fn reconnection_without_restoring_sends_nothing_and_forgets_the_session() {
    let script = Script::bind().await;
    let builder = Client::builder()
        .reconnect(fast_backoff())
        .restore_session_on_reconnect(false);
    let (client, mut ws, mut events) = connect(builder, &script).await;
    create_session(&mut ws, &mut events).await;

    let (waiting, mut ws) =
        reconnect_with_a_waiting_request(&client, ws, &script, &mut events).await;
    assert_eq!(events.next().await, Seen::SessionClosed);
    assert_eq!(events.next().await, Seen::Connected);
    assert_eq!(client.session(), None);
    // The first message on the new connection is the waiting request.
    answer_the_waiting_request(&mut ws, waiting).await;
}

#[tokio::test]
async fn a_reconnection_without_a_session_restores_nothing() {
    let script = Script::bind().await;
    let builder = Client::builder().reconnect(fast_backoff());
    let (client, mut ws, mut events) = connect(builder, &script).await;
    // No session: a reconnection sends no restore either.
    let (waiting, mut ws2) =
        reconnect_with_a_waiting_request(&client, ws, &script, &mut events).await;
    assert_eq!(events.next().await, Seen::Connected);
    answer_the_waiting_request(&mut ws2, waiting).await;
    ws = ws2;
    events.nothing_before_signal(&mut ws).await;
}
