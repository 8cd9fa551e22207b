//! Fuzzes a whole server connection: a sequence of WebSocket messages from a client, and
//! everything the server answers.
//!
//! # Input format
//!
//! ```text
//! input   = flags:u8  message*
//! message = header:u16le  bytes[header & 0x3FFF]      (cut short at the end of the input)
//! ```
//!
//! * `flags` bit 0: **close early**: the client sends its close frame right after the last
//!   message (replies the server has not yet written when it reads the close are legitimately
//!   lost: tungstenite refuses to send data after the peer's close, RFC 6455 §5.5.1). When
//!   clear (**quiesce**), the client first waits until the whole runtime is idle (a 1 s sleep
//!   in paused time, which only completes once no task can make progress), then closes.
//! * `flags` bit 1: the server's WebSocket is configured with the server's message limit
//!   (as `serve_websocket` asks); when clear it has tungstenite's default limit and only the
//!   server's own size check applies.
//! * `header >> 14` is the kind: `0` and `3` binary, `1` text (the bytes made valid UTF-8
//!   with `from_utf8_lossy`), `2` ping (cut to 125 bytes); `header & 0x3FFF` the length.
//!
//! # Setup
//!
//! One current-thread tokio runtime for the process, with paused time (deterministic: every
//! timer fires as soon as the runtime is idle, so nothing waits in real time and nothing
//! hangs). Per input: a fresh server (message limit 1024 bytes, in-memory session store
//! holding a session `s`, session keys `k0`, `k1`, ...), an in-memory WebSocket pair over
//! `tokio::io::duplex` served with `Server::serve_websocket`, a client task that collects
//! everything the server sends, and at the end `Server::shutdown`.
//!
//! The handler answers requests by name: `fail` → error reply `FAIL`/`failed`; `oops` →
//! internal error; `big` → a 2000-byte payload (over the limit: the server must send an
//! internal error instead); `sleep` → echo after 1 + first payload byte ms (so the handler
//! runs on a task of its own, and replies come out of order); `login` → create a session,
//! then echo; `logout` → close the session, then echo; anything else → echo. Signals are
//! dropped. (No handler panics: libfuzzer-sys's panic hook aborts on every panic, caught
//! ones included, so a panic anywhere — server tasks too — is a crash.)
//!
//! # Checks
//!
//! The input is run through a model: each message, in order, is either a violation (a text
//! message, a binary message over 1024 bytes, or one `Message::parse` rejects; the server
//! must stop reading there, so later messages are not modelled), or a well-formed message:
//! requests (`7F`/`80`/`81`) and session requests (`1F`/`20`) expect exactly one reply
//! with their identifier (identifiers are a multiset: duplicates are answered once each),
//! everything else expects nothing.
//!
//! 1. No panic anywhere (see above), and no hang: the server ends the connection, and
//!    `shutdown` completes, within bounded virtual time; no task is left on the runtime.
//! 2. The first server message is the AcceptConf with the 1024-byte limit; then only
//!    replies and session notifications, all well-formed binary messages.
//! 3. Every reply answers an expected request, at most once per request; in quiesce mode
//!    every expected request is answered (exactly once). The content is checked too: echo
//!    is `Message::reply(id, payload)` in the request's encoding, `fail`/`oops`/`big` as
//!    above, a close-session request gets the empty binary reply, a restore request gets
//!    either "session not found" or a UTF-8 reply holding the session JSON of that key.
//! 4. The server's close frame carries the code of the violation (1003 text, 1009 too
//!    large, 1002 malformed), or, without a violation, no error code.

#![no_main]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_webwire::protocol::{ErrorCode, Message, Name, RequestId};
use tokio_webwire::server::{Connection, Handler, HandlerError, HandlerResult, Server};
use tokio_webwire::session::{MemoryStore, SessionStore};
use tokio_webwire::{Payload, Session, SessionInfo};

/// The server's message size limit.
const LIMIT: usize = 1024;
/// How long the client waits (virtual time) for the server to go idle in quiesce mode.
/// Longer than any `sleep` handler (at most 256 ms), shorter than the read-timeout tick.
const QUIET: Duration = Duration::from_secs(1);
/// Bound (virtual time) for the server to end the connection, and for the shutdown.
const BOUND: Duration = Duration::from_secs(600);
/// The session the store holds from the start.
const STORED_KEY: &str = "s";

struct FuzzHandler;

impl Handler for FuzzHandler {
    async fn request(&self, conn: &Connection, name: Name, payload: Payload) -> HandlerResult {
        match name.as_bytes() {
            b"fail" => Err(HandlerError::reply(
                ErrorCode::from_static("FAIL"),
                "failed",
            )),
            b"oops" => Err(HandlerError::internal("oops")),
            b"big" => Ok(Payload::binary(vec![0x55; 2000])),
            b"sleep" => {
                let ms = 1 + u64::from(payload.data.first().copied().unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(payload)
            }
            b"login" => {
                let _ = conn.create_session(SessionInfo::new()).await;
                Ok(payload)
            }
            b"logout" => {
                let _ = conn.close_session().await;
                Ok(payload)
            }
            _ => Ok(payload),
        }
    }
}

/// What one well-formed message asks of the server.
#[derive(Debug)]
enum Expect {
    /// A reply with exactly these bytes.
    Exact { id: RequestId, frame: Bytes },
    /// A restore request's reply: "not found", or the session of `key`.
    Restore { id: RequestId, key: Bytes },
}

impl Expect {
    fn id(&self) -> RequestId {
        match self {
            Expect::Exact { id, .. } | Expect::Restore { id, .. } => *id,
        }
    }

    fn accepts(&self, frame: &Bytes, reply: &Message) -> bool {
        match self {
            Expect::Exact { frame: want, .. } => want == frame,
            Expect::Restore { id, key } => match reply {
                Message::ReplySessionNotFound { id: got } => got == id,
                Message::ReplyUtf8 { id: got, data } => {
                    got == id
                        && Session::from_json(data).is_ok_and(|s| s.key.as_bytes() == &key[..])
                }
                _ => false,
            },
        }
    }
}

/// The model of one input: what the server must answer, and how it must close.
#[derive(Debug, Default)]
struct Model {
    expected: Vec<Expect>,
    /// The close code of the first violation, if any.
    violation: Option<CloseCode>,
}

fn model(messages: &[WsMessage], ws_limit: bool) -> Model {
    let mut model = Model::default();
    for message in messages {
        let (frame, violation) = match message {
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            WsMessage::Text(text) if ws_limit && text.len() > LIMIT => {
                (None, Some(CloseCode::Size))
            }
            WsMessage::Text(_) => (None, Some(CloseCode::Unsupported)),
            WsMessage::Binary(data) if data.len() > LIMIT => (None, Some(CloseCode::Size)),
            WsMessage::Binary(data) => match Message::parse(data.clone()) {
                Ok(parsed) => (Some(parsed), None),
                Err(_) => (None, Some(CloseCode::Protocol)),
            },
            other => unreachable!("the client sends no {other:?}"),
        };
        if let Some(code) = violation {
            model.violation = Some(code);
            return model;
        }
        let Some(parsed) = frame else { continue };
        let expect = match parsed {
            Message::RequestBinary { id, ref name, .. }
            | Message::RequestUtf8 { id, ref name, .. }
            | Message::RequestUtf16 { id, ref name, .. } => {
                let reply = match name.as_bytes() {
                    b"fail" => Message::ReplyError {
                        id,
                        code: ErrorCode::from_static("FAIL"),
                        message: Bytes::from_static(b"failed"),
                    },
                    b"oops" | b"big" => Message::ReplyInternalError { id },
                    _ => Message::reply(id, parsed.payload().expect("a request has a payload")),
                };
                Expect::Exact {
                    id,
                    frame: reply.encode().expect("the expected reply encodes"),
                }
            }
            Message::RequestCloseSession { id } => Expect::Exact {
                id,
                frame: Message::ReplyBinary {
                    id,
                    data: Bytes::new(),
                }
                .encode()
                .unwrap(),
            },
            Message::RequestRestoreSession { id, key } => Expect::Restore { id, key },
            _ => continue,
        };
        model.expected.push(expect);
    }
    model
}

/// Splits the input into its flags and WebSocket messages (see the module docs).
fn messages(data: &[u8]) -> Option<(u8, Vec<WsMessage>)> {
    let (&flags, mut rest) = data.split_first()?;
    let mut messages = Vec::new();
    while rest.len() >= 2 {
        let header = u16::from_le_bytes([rest[0], rest[1]]);
        rest = &rest[2..];
        let len = usize::from(header & 0x3FFF).min(rest.len());
        let (bytes, tail) = rest.split_at(len);
        rest = tail;
        messages.push(match header >> 14 {
            1 => WsMessage::text(String::from_utf8_lossy(bytes).into_owned()),
            2 => WsMessage::Ping(Bytes::copy_from_slice(&bytes[..bytes.len().min(125)])),
            _ => WsMessage::Binary(Bytes::copy_from_slice(bytes)),
        });
    }
    Some((flags, messages))
}

/// What the client received, in order.
#[derive(Debug, Default)]
struct Received {
    frames: Vec<Bytes>,
    close: Option<Option<CloseFrame>>,
    texts: usize,
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((flags, messages)) = messages(data) else {
        return;
    };
    let close_early = flags & 1 != 0;
    let ws_limit = flags & 2 != 0;
    let model = model(&messages, ws_limit);

    let rt = runtime();
    let received = rt.block_on(run(messages, close_early, ws_limit));
    // Tasks the runtime has not yet dropped (an aborted timer) go on the next yields.
    rt.block_on(async {
        for _ in 0..100 {
            if rt.metrics().num_alive_tasks() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    });
    assert_eq!(
        rt.metrics().num_alive_tasks(),
        0,
        "tasks left on the runtime after shutdown"
    );

    check(&model, &received, close_early);
});

async fn run(messages: Vec<WsMessage>, close_early: bool, ws_limit: bool) -> Received {
    let store = MemoryStore::new();
    store
        .save(&Session::new(STORED_KEY, SessionInfo::new()))
        .await
        .expect("the memory store saves");
    let keys = AtomicU64::new(0);
    let server = Server::builder(FuzzHandler)
        .max_message_size(LIMIT)
        .session_store(store)
        .session_key_generator(move || format!("k{}", keys.fetch_add(1, Ordering::Relaxed)))
        .build()
        .expect("a valid configuration");

    // Large enough for everything either side can write: neither side ever waits for room.
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let server_config = ws_limit.then(|| {
        WebSocketConfig::default()
            .max_message_size(Some(LIMIT))
            .max_frame_size(Some(LIMIT))
    });
    let server_ws = WebSocketStream::from_raw_socket(server_io, Role::Server, server_config).await;
    server.serve_websocket(server_ws, None, None);
    let client_ws = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
    let (mut tx, mut rx) = client_ws.split();

    let collected = Arc::new(Mutex::new(Received::default()));
    let reader = tokio::spawn({
        let collected = Arc::clone(&collected);
        async move {
            while let Some(Ok(message)) = rx.next().await {
                let mut got = collected.lock().unwrap();
                match message {
                    WsMessage::Binary(frame) => got.frames.push(frame),
                    WsMessage::Close(frame) => got.close = Some(frame),
                    WsMessage::Text(_) => got.texts += 1,
                    WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => {}
                }
            }
        }
    });

    for message in messages {
        // Fails once the server has closed the connection: the rest cannot be sent.
        if tx.send(message).await.is_err() {
            break;
        }
    }
    if !close_early {
        tokio::time::sleep(QUIET).await;
    }
    let _ = tx.send(WsMessage::Close(None)).await;

    tokio::time::timeout(BOUND, reader)
        .await
        .expect("the server never ended the connection")
        .expect("the client reader does not panic");
    drop(tx);
    tokio::time::timeout(BOUND, server.shutdown())
        .await
        .expect("the shutdown never completed");
    drop(server);
    Arc::try_unwrap(collected)
        .expect("the reader is done")
        .into_inner()
        .unwrap()
}

fn check(model: &Model, received: &Received, close_early: bool) {
    assert_eq!(received.texts, 0, "the server sent a text message");

    // 2. The handshake first, then replies and notifications only.
    let mut frames = received.frames.iter();
    if let Some(first) = frames.next() {
        match Message::parse(first.clone()) {
            Ok(Message::AcceptConf(conf)) => {
                assert_eq!(conf.message_buffer_size, LIMIT as u32, "AcceptConf limit")
            }
            other => panic!("the first message is not the AcceptConf: {other:?}"),
        }
    } else {
        // Only a client that closes at once may miss even the handshake: the server can read
        // the close before its writer first runs, and tungstenite sends nothing after that.
        assert!(
            close_early,
            "the server sent nothing, not even its AcceptConf"
        );
    }
    let mut replies = Vec::new();
    for frame in frames {
        assert!(
            frame.len() <= LIMIT,
            "a server message over the limit: {} bytes",
            frame.len()
        );
        let message = match Message::parse(frame.clone()) {
            Ok(message) => message,
            Err(error) => panic!("the server sent a malformed message {frame:02x?}: {error}"),
        };
        match message {
            Message::NotifySessionCreated { .. } | Message::NotifySessionClosed => {}
            Message::ReplyBinary { .. }
            | Message::ReplyUtf8 { .. }
            | Message::ReplyUtf16 { .. }
            | Message::ReplyError { .. }
            | Message::ReplyInternalError { .. }
            | Message::ReplySessionNotFound { .. } => replies.push((frame.clone(), message)),
            other => panic!("unexpected message from the server: {other:?}"),
        }
    }

    // 3. Match replies to expectations: exact bytes first, then restore replies.
    let mut open: HashMap<RequestId, Vec<&Expect>> = HashMap::new();
    for expect in &model.expected {
        open.entry(expect.id()).or_default().push(expect);
    }
    let mut unmatched = Vec::new();
    for (frame, reply) in &replies {
        let id = reply.request_id().expect("a reply has an id");
        let candidates = open.get_mut(&id);
        let Some(candidates) = candidates else {
            panic!("a reply to an identifier never requested (or answered too often): {reply:?}");
        };
        // Identical replies are interchangeable.
        let exact = candidates
            .iter()
            .position(|e| matches!(e, Expect::Exact { frame: want, .. } if want == frame));
        match exact {
            Some(at) => {
                candidates.swap_remove(at);
            }
            None => unmatched.push((frame, reply)),
        }
    }
    // A "not found" answers any restore request with its id, a session only the one for
    // its key: sessions pick first, so a "not found" never takes a place a session needs.
    unmatched.sort_by_key(|(_, reply)| matches!(reply, Message::ReplySessionNotFound { .. }));
    for (frame, reply) in unmatched {
        let id = reply.request_id().unwrap();
        let candidates = open.get_mut(&id).unwrap();
        match candidates.iter().position(|e| e.accepts(frame, reply)) {
            Some(at) => {
                candidates.swap_remove(at);
            }
            None => panic!(
                "a reply that answers no open request with id {id}: {reply:?}\nopen: {candidates:?}"
            ),
        }
    }
    if !close_early {
        let missing: Vec<_> = open.values().flatten().collect();
        assert!(
            missing.is_empty(),
            "requests never answered: {missing:?}\nviolation: {:?}",
            model.violation
        );
    }

    // 4. The close code.
    let code = received
        .close
        .as_ref()
        .and_then(|frame| frame.as_ref())
        .map(|f| f.code);
    match model.violation {
        Some(want) => assert_eq!(code, Some(want), "close code after a violation"),
        None => assert!(
            matches!(code, None | Some(CloseCode::Normal)),
            "close code {code:?} without a violation"
        ),
    }
}
