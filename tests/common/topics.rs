//! The topics extension in raw frames (`docs/topics.md`): a client offering it, its
//! requests, and what the server sends read as the extension reads it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_webwire::backplane::Backplane;
use tokio_webwire::client::{Backoff, Reconnect};
use tokio_webwire::protocol::topics::{self, Position, Publication, Status, Subscribe, Subscribed};
use tokio_webwire::protocol::{Message, RequestId};
use tokio_webwire::server::{Handler, History, Server, ServerBuilder};
use tokio_webwire::{Client, Payload};

use super::{LIMIT, RawClient, bounded};

/// A raw client offering the extension; returns it and whether the server selected it.
pub async fn connect(addr: SocketAddr, offer: bool) -> (RawClient, bool) {
    let mut request = format!("ws://{addr}/")
        .into_client_request()
        .expect("request");
    if offer {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(topics::SUBPROTOCOL),
        );
    }
    let (ws, response) = bounded(tokio_tungstenite::connect_async(request))
        .await
        .expect("WebSocket connect");
    let selected = response.headers().get("Sec-WebSocket-Protocol").is_some();
    let mut client = RawClient { ws };
    client.recv().await; // AcceptConf
    (client, selected)
}

/// Our client with the topics extension at `addr`: it reconnects at once (5 to 50 ms
/// apart) and its requests are bounded by `LIMIT`.
pub async fn topics_client(addr: SocketAddr) -> Client {
    let backoff = Backoff::default()
        .min(Duration::from_millis(5))
        .max(Duration::from_millis(50));
    bounded(
        Client::builder()
            .topics(true)
            .reconnect(Reconnect::Backoff(backoff))
            .request_timeout(LIMIT)
            .connect(format!("ws://{addr}/")),
    )
    .await
    .expect("connects")
}

pub fn subscribe_frame(id: u64, topic: &str, resume: Option<Position>) -> Bytes {
    let payload = Subscribe {
        topic: topic.into(),
        resume,
    }
    .encode();
    Message::request(
        RequestId::from(id),
        topics::SUBSCRIBE,
        Payload::binary(payload),
    )
    .encode()
    .unwrap()
}

/// A frame from the server, read as the extension reads it.
#[derive(Debug, PartialEq)]
pub enum Seen {
    Publication {
        topic: String,
        position: Option<Position>,
        text: String,
    },
    Answer(Subscribed),
    Unsubscribed,
    Error(String),
    Other(Message),
}

pub fn read(frame: Bytes) -> Seen {
    match Message::parse(frame).expect("a v2.0 message") {
        Message::SignalBinary { name, data } if name == topics::PUBLICATION => {
            let publication = Publication::parse(&data).expect("a publication");
            let inner = Message::parse(publication.signal).expect("inner signal");
            let text = inner
                .payload()
                .map(|p| p.to_text().expect("text"))
                .unwrap_or_default();
            Seen::Publication {
                topic: publication.topic,
                position: publication.position,
                text,
            }
        }
        Message::ReplyBinary { data, .. } if data.is_empty() => Seen::Unsubscribed,
        Message::ReplyBinary { data, .. } => {
            Seen::Answer(Subscribed::parse(&data).expect("a subscribe answer"))
        }
        Message::ReplyError { code, .. } => Seen::Error(code.as_str().to_owned()),
        other => Seen::Other(other),
    }
}

pub async fn subscribe(
    client: &mut RawClient,
    topic: &str,
    resume: Option<Position>,
) -> Subscribed {
    client.send(subscribe_frame(1, topic, resume)).await;
    match read(client.recv().await) {
        Seen::Answer(answer) => answer,
        other => panic!("expected an answer, got {other:?}"),
    }
}

/// Reads `n` publications of `topic`; returns their positions and texts.
pub async fn publications(client: &mut RawClient, n: usize) -> Vec<(Position, String)> {
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        match read(client.recv().await) {
            Seen::Publication {
                position: Some(position),
                text,
                ..
            } => seen.push((position, text)),
            other => panic!("expected a publication, got {other:?}"),
        }
    }
    seen
}

/// Reads what a resume after `from` sends until offset `last` and the answer came: every
/// offset after `from` once and in order (in `epoch`), the answer `Recovered` after what
/// it recovered; `what` names the resume in a failure. Returns the texts in order.
pub async fn resumed(client: &mut RawClient, from: Position, last: u64, what: &str) -> Vec<String> {
    let mut next = from.offset + 1;
    let mut answered = false;
    let mut texts = Vec::new();
    while next <= last || !answered {
        match read(client.recv().await) {
            Seen::Publication {
                position: Some(position),
                text,
                ..
            } => {
                let expected = Position {
                    offset: next,
                    ..from
                };
                assert_eq!(position, expected, "{what}: gap or duplicate");
                texts.push(text);
                next += 1;
            }
            Seen::Answer(answer) => {
                assert_eq!(answer.status, Status::Recovered, "{what}");
                assert!(
                    answer.position.offset < next,
                    "{what}: the answer comes after what it recovered"
                );
                answered = true;
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    texts
}

/// Publishes the signal `msg` with `text` to `topic` on `server`, bounded.
pub async fn publish<H: Handler>(server: &Server<H>, topic: &str, text: &str) {
    bounded(server.publish(topic, "msg", text.to_owned()))
        .await
        .expect("published");
}

/// The texts of publications read by [`publications`], in order.
pub fn texts(seen: &[(Position, String)]) -> Vec<&str> {
    seen.iter().map(|(_, text)| text.as_str()).collect()
}

/// The offsets of publications read by [`publications`], in order.
pub fn offsets(seen: &[(Position, String)]) -> Vec<u64> {
    seen.iter().map(|(position, _)| position.offset).collect()
}

/// A node of the service on `backplane`: [`AllButSecret`]'s server whose topics matching
/// `pattern` keep `history`, with the nodes' shared secret. Not yet built, so that a test
/// can add to it.
pub fn history_node(
    backplane: impl Backplane,
    pattern: &str,
    history: History,
) -> ServerBuilder<AllButSecret> {
    Server::builder(AllButSecret)
        .history(pattern, history)
        .backplane(backplane)
        .backplane_secret(super::nodes::SECRET)
}

/// Lets clients subscribe to anything but `secret`.
pub struct AllButSecret;

impl Handler for AllButSecret {
    crate::subscribe_all_but_secret!();
}
