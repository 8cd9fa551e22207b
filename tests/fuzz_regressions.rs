//! Reproducers of what the `server_frames` fuzz target found (fuzz/README.md), as plain
//! tests: an in-memory WebSocket pair, paused time, raw frames.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_webwire::Payload;
use tokio_webwire::protocol::{Message, Name, RequestId};
use tokio_webwire::server::{Connection, Handler, HandlerResult, Server};

/// Echoes, after a short sleep for requests named `sleep` (so that handler runs on a task
/// of its own).
struct SleepyEcho;

impl Handler for SleepyEcho {
    async fn request(&self, _conn: &Connection, name: Name, payload: Payload) -> HandlerResult {
        if name.as_str() == "sleep" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(payload)
    }
}

/// Sends `frames` to a fresh server and returns everything it sends back: binary messages,
/// and the code of its close frame.
async fn exchange(frames: Vec<WsMessage>) -> (Vec<Bytes>, Option<CloseCode>) {
    let server = Server::builder(SleepyEcho).build().expect("valid options");
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server_ws = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
    server.serve_websocket(server_ws, None, None);
    let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
    for frame in frames {
        client.send(frame).await.expect("sent");
    }
    let mut binary = Vec::new();
    let mut close = None;
    let read_all = async {
        while let Some(Ok(message)) = client.next().await {
            match message {
                WsMessage::Binary(frame) => binary.push(frame),
                WsMessage::Close(frame) => close = frame.map(|frame| frame.code),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_all)
        .await
        .expect("the server ends the connection");
    (binary, close)
}

fn sleep_request(id: u64) -> WsMessage {
    let frame = Message::RequestBinary {
        id: RequestId::from(id),
        name: Name::from_static("sleep"),
        data: Bytes::from_static(b"zzz"),
    }
    .encode()
    .expect("encodes");
    WsMessage::Binary(frame)
}

/// The server's messages after its AcceptConf, parsed.
fn replies(frames: &[Bytes]) -> Vec<Message> {
    frames[1..]
        .iter()
        .map(|frame| Message::parse(frame.clone()).expect("well-formed"))
        .collect()
}

/// Sends `[request, violation]` and asserts that the connection closed with `code` after
/// the one reply, `(id, data)`: the request read before the violation (`what`) is answered.
async fn answered_before_close(
    [request, violation]: [WsMessage; 2],
    code: CloseCode,
    (id, data): (u64, &'static [u8]),
    what: &str,
) {
    let (frames, close) = exchange(vec![request, violation]).await;
    assert_eq!(close, Some(code));
    assert_eq!(
        replies(&frames),
        vec![Message::ReplyBinary {
            id: RequestId::from(id),
            data: Bytes::from_static(data),
        }],
        "the request read before {what} is answered"
    );
}

/// Found by `server_frames`: a request whose handler was still running when a later message
/// broke the protocol never got its reply. The reader queued the violation's close frame
/// at once and the writer sent it and ended; the handler finished afterwards and its reply
/// was dropped. Now the reader waits for running handlers before every close frame, as
/// PROTOCOL.md §2.6 asks: "Handlers already running on that connection finish first; the
/// socket is released after the last one."
#[tokio::test(start_paused = true)]
async fn running_handler_is_answered_before_a_violation_closes() {
    // `7F` alone: a request of 1 byte, which `Message::parse` rejects (malformed, 1002).
    answered_before_close(
        [
            sleep_request(1),
            WsMessage::Binary(Bytes::from_static(b"\x7f")),
        ],
        CloseCode::Protocol,
        (1, b"zzz"),
        "the violation",
    )
    .await;
}

/// The same with a text message as the violation (1003).
#[tokio::test(start_paused = true)]
async fn running_handler_is_answered_before_a_text_message_closes() {
    answered_before_close(
        [sleep_request(2), WsMessage::text("hi")],
        CloseCode::Unsupported,
        (2, b"zzz"),
        "the text message",
    )
    .await;
}

/// Control: a handler that finishes at once is answered before the close frame.
#[tokio::test(start_paused = true)]
async fn inline_handler_is_answered_before_a_violation_closes() {
    let frame = Message::RequestBinary {
        id: RequestId::from(3),
        name: Name::from_static("echo"),
        data: Bytes::from_static(b"now"),
    }
    .encode()
    .expect("encodes");
    answered_before_close(
        [
            WsMessage::Binary(frame),
            WsMessage::Binary(Bytes::from_static(b"\x7f")),
        ],
        CloseCode::Protocol,
        (3, b"now"),
        "the violation",
    )
    .await;
}
