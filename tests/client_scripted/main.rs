//! The client against a scripted server: a raw tokio-tungstenite server inside each test
//! that sends AcceptConf bytes and answers with golden-vector frames, byte for byte.
//!
//! Time-based behaviour (heartbeats, backoff, timeouts) runs with paused tokio time; every
//! other await is bounded by `within` (`common::bounded`).

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_webwire::client::{Backoff, ClientHandler, Reconnect};
use tokio_webwire::protocol::{AcceptConf, ErrorCode, Message, Name, ProtocolVersion, RequestId};
use tokio_webwire::{Client, ConnectError, Payload, RequestError};

#[path = "../common/mod.rs"]
mod common;

use common::script::{
    Script, Ws, accept_conf, close_code, echo, recv, recv_message as recv_request, reply_vector,
    send,
};
use common::{bounded as within, vector};

fn no_reconnect() -> tokio_webwire::ClientBuilder {
    Client::builder().reconnect(Reconnect::Off)
}

/// Connects `builder` to `script`, which accepts with `first`.
async fn connect_with<H: ClientHandler>(
    builder: tokio_webwire::ClientBuilder<H>,
    script: &Script,
    first: &[u8],
) -> (Client, Ws) {
    let (client, ws) =
        within(async { tokio::join!(builder.connect(&script.url), script.accept_with(first)) })
            .await;
    (client.expect("connects"), ws)
}

async fn connect(script: &Script) -> (Client, Ws) {
    connect_with(no_reconnect(), script, &vector("accept_conf_defaults")).await
}

/// What a [`Recorder`] saw, in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Connected,
    Disconnected,
    Signal(String, Payload),
}

/// A handler that reports every event on a channel.
struct Recorder(mpsc::UnboundedSender<Seen>);

impl ClientHandler for Recorder {
    async fn signal(&self, _client: &Client, name: Name, payload: Payload) {
        let _ = self.0.send(Seen::Signal(name.to_string(), payload));
    }

    async fn connected(&self, _client: &Client) {
        let _ = self.0.send(Seen::Connected);
    }

    async fn disconnected(&self, _client: &Client) {
        let _ = self.0.send(Seen::Disconnected);
    }
}

fn recorder() -> (Recorder, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Recorder(tx), rx)
}

/// Runs `request` (a call on the client) while the script reads the request it sends and
/// answers it with the reply vector `name` under its id; returns the call's outcome.
async fn answered_with<T>(request: impl Future<Output = T>, ws: &mut Ws, name: &str) -> T {
    answered_by(request, ws, |id| vec![reply_vector(name, id)]).await
}

/// Runs `request` while the script reads the request it sends and answers it with the
/// frames `answer` makes from its id, in order; returns the call's outcome.
async fn answered_by<T>(
    request: impl Future<Output = T>,
    ws: &mut Ws,
    answer: impl FnOnce(RequestId) -> Vec<Vec<u8>>,
) -> T {
    let (outcome, ()) = within(async {
        tokio::join!(request, async {
            let id = recv_request(ws).await.request_id().unwrap();
            for frame in answer(id) {
                send(ws, &frame).await;
            }
        })
    })
    .await;
    outcome
}

/// Runs `request` while the script reads the request it sends and answers nothing;
/// returns the call's outcome and the request's id.
async fn unanswered<T>(request: impl Future<Output = T>, ws: &mut Ws) -> (T, RequestId) {
    within(async {
        tokio::join!(request, async {
            recv_request(ws).await.request_id().unwrap()
        })
    })
    .await
}

/// A request in flight when the script sends `frame` (a protocol violation): returns the
/// request's outcome and the code of the close frame the client then sends.
async fn request_meeting_violation(
    client: &Client,
    ws: &mut Ws,
    frame: &[u8],
) -> (Result<Payload, RequestError>, Option<CloseCode>) {
    within(async {
        tokio::join!(client.request("q", "x"), async {
            recv_request(ws).await;
            send(ws, frame).await;
            close_code(ws).await
        })
    })
    .await
}

mod closing;
mod disconnects;
mod handshake;
mod load;
mod requests;
mod timeouts;
