//! A scripted server for client tests: a raw tokio-tungstenite listener that sends and
//! receives WebWire frames as bytes.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderMap;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_webwire::protocol::{AcceptConf, Message, RequestId};

use super::vector;

/// One connection the script accepted.
pub type Ws = WebSocketStream<TcpStream>;

/// A listener on 127.0.0.1:0 that plays the server.
pub struct Script {
    pub listener: TcpListener,
    pub url: String,
}

impl Script {
    pub async fn bind() -> Script {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}/", listener.local_addr().expect("addr"));
        Script { listener, url }
    }

    /// Accepts one WebSocket connection and sends `first` (normally an AcceptConf).
    pub async fn accept_with(&self, first: &[u8]) -> Ws {
        let (tcp, _) = self.listener.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        send(&mut ws, first).await;
        ws
    }

    /// Accepts one connection with the default AcceptConf vector, and returns the headers
    /// of its upgrade request too.
    // The callback's signature is tungstenite's, large error type included.
    #[allow(clippy::result_large_err, dead_code)]
    pub async fn accept_seeing_headers(&self) -> (HeaderMap, Ws) {
        let (tcp, _) = self.listener.accept().await.expect("accept");
        let mut headers = HeaderMap::new();
        let callback = |request: &Request, response: Response| {
            headers = request.headers().clone();
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, callback)
            .await
            .expect("upgrade");
        send(&mut ws, &vector("accept_conf_defaults")).await;
        (headers, ws)
    }

    /// Accepts one connection with the default AcceptConf vector (60 s, 8192 bytes).
    pub async fn accept(&self) -> Ws {
        self.accept_with(&vector("accept_conf_defaults")).await
    }
}

/// An AcceptConf with the given read timeout and size limit.
pub fn accept_conf(read_timeout_ms: u64, limit: u32) -> Vec<u8> {
    let conf = AcceptConf::new(Duration::from_millis(read_timeout_ms), limit);
    Message::AcceptConf(conf)
        .encode()
        .expect("encodes")
        .to_vec()
}

/// Vector `name` (a reply) with its identifier replaced by `id`.
pub fn reply_vector(name: &str, id: RequestId) -> Vec<u8> {
    let mut bytes = vector(name);
    bytes[1..9].copy_from_slice(id.as_bytes());
    bytes
}

/// Sends one binary frame to the client.
pub async fn send(ws: &mut Ws, bytes: &[u8]) {
    ws.send(WsMessage::binary(bytes.to_vec()))
        .await
        .expect("server send");
}

/// The next binary message from the client, heartbeats included.
pub async fn recv(ws: &mut Ws) -> Bytes {
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Binary(bytes))) => return bytes,
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
}

/// The next message from the client other than a heartbeat, as bytes.
pub async fn recv_frame(ws: &mut Ws) -> Bytes {
    loop {
        let frame = recv(ws).await;
        if frame[..] != [0x21] {
            return frame;
        }
    }
}

/// The next message from the client other than a heartbeat, parsed.
pub async fn recv_message(ws: &mut Ws) -> Message {
    Message::parse(recv_frame(ws).await).expect("the client sends valid messages")
}

/// The close code the client sends, reading past anything else; answers the close.
pub async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Close(frame))) => {
                let _ = ws.flush().await;
                return frame.map(|f| f.code);
            }
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

/// Answers every request with its own payload until the client goes away.
pub async fn echo(mut ws: Ws) {
    while let Some(Ok(message)) = ws.next().await {
        let WsMessage::Binary(frame) = message else {
            continue;
        };
        let Ok(message) = Message::parse(frame) else {
            return;
        };
        if let (Some(id), Some(payload)) = (message.request_id(), message.payload()) {
            let reply = Message::reply(id, payload).encode().expect("encodes");
            if ws.send(WsMessage::Binary(reply)).await.is_err() {
                return;
            }
        }
    }
}
