//! The load generators: raw tokio-tungstenite connections (the baseline) and our own `Client`
//! used three ways, behind the [`LoadGenerator`] trait; the requests and the check of their
//! replies.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_webwire::client::Reconnect;
use tokio_webwire::protocol::{AcceptConf, Message, Name, RequestId};
use tokio_webwire::{Client, Payload};

use crate::options::LoadSpec;
use crate::wire::{Ended, Flow, pump};
use crate::{REPLY_BINARY, Result};

/// Shared between a generator and the measuring harness.
#[derive(Debug, Default)]
pub(crate) struct LoadCounters {
    /// Verified replies so far, all connections.
    pub(crate) replies: AtomicU64,
    /// Set by the harness: send no more requests, wait for the outstanding replies, return.
    pub(crate) stop: AtomicBool,
}

/// What [`LoadGenerator::run`] returns: the whole run, boxed (the trait is used as `dyn`).
pub(crate) type Run<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// A source of load. `run` opens `spec.conns` connections to `addr`, keeps `spec.pipeline`
/// requests of `spec.size` payload bytes in flight on each, checks every reply and counts it
/// in `counters.replies`; once `counters.stop` is set it sends no more and returns when every
/// request sent was answered. `ready` is called once all connections are established.
///
/// [`TungsteniteGenerator`] is the baseline; [`ClientGenerator`] is our own client.
pub(crate) trait LoadGenerator: Sync {
    /// What it is, for the header.
    fn name(&self) -> &'static str;

    /// Its `--generators` name, for the tables.
    fn key(&self) -> &'static str;

    fn run<'a>(&'a self, addr: SocketAddr, spec: LoadSpec, counters: Arc<LoadCounters>) -> Run<'a>;
}

/// Raw tokio-tungstenite connections, one [`pump`] task each: the cheapest load we can make,
/// so the server is what limits throughput as far as possible.
pub(crate) struct TungsteniteGenerator;

impl LoadGenerator for TungsteniteGenerator {
    fn name(&self) -> &'static str {
        "tokio-tungstenite"
    }

    fn key(&self) -> &'static str {
        "raw"
    }

    fn run<'a>(&'a self, addr: SocketAddr, spec: LoadSpec, counters: Arc<LoadCounters>) -> Run<'a> {
        Box::pin(async move {
            let config = WebSocketConfig::default()
                .max_message_size(Some(spec.max_message_size()))
                .max_frame_size(Some(spec.max_message_size()));
            let mut conns = Vec::with_capacity(spec.conns);
            for _ in 0..spec.conns {
                conns.push(connect(addr, config).await?);
            }
            let mut tasks = tokio::task::JoinSet::new();
            for ws in conns {
                tasks.spawn(drive_connection(ws, spec, Arc::clone(&counters)));
            }
            while let Some(joined) = tasks.join_next().await {
                joined??;
            }
            Ok(())
        })
    }
}

/// The request name of every load.
pub(crate) const ECHO: Name = Name::from_static("echo");

/// The payload of every request of `size` bytes: no zero byte, not one repeated byte.
fn load_payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8 + 1).collect()
}

/// Our own [`Client`](tokio_webwire::Client), one per connection, used one of the ways a
/// user pipelines (see [`Pipelining`]).
pub(crate) struct ClientGenerator {
    pub(crate) how: Pipelining,
}

/// How [`ClientGenerator`] keeps `P` requests in flight on each connection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pipelining {
    /// `P` request loops per connection, each a task of its own (a request, its reply
    /// checked, the next request), all multiplexed by the client.
    Tasks,
    /// One task per connection driving its `P` requests as a `FuturesUnordered` (a reply
    /// checked, the next request pushed).
    Unordered,
    /// One task per connection with a [`Pipeline`](tokio_webwire::client::Pipeline) (a
    /// reply checked, the next request sent).
    Pipeline,
}

impl LoadGenerator for ClientGenerator {
    fn name(&self) -> &'static str {
        match self.how {
            Pipelining::Tasks => "client, a task per request",
            Pipelining::Unordered => "client, FuturesUnordered per connection",
            Pipelining::Pipeline => "client, a Pipeline per connection",
        }
    }

    fn key(&self) -> &'static str {
        match self.how {
            Pipelining::Tasks => "client",
            Pipelining::Unordered => "client-unordered",
            Pipelining::Pipeline => "client-pipeline",
        }
    }

    fn run<'a>(&'a self, addr: SocketAddr, spec: LoadSpec, counters: Arc<LoadCounters>) -> Run<'a> {
        Box::pin(async move {
            let payload = Payload::binary(load_payload(spec.size));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..spec.conns {
                let client = connect_client(addr, spec).await?;
                let (payload, counters) = (payload.clone(), Arc::clone(&counters));
                match self.how {
                    Pipelining::Unordered => {
                        tasks.spawn(unordered_requests(client, spec.pipeline, payload, counters));
                    }
                    Pipelining::Pipeline => {
                        tasks.spawn(pipelined_requests(client, spec.pipeline, payload, counters));
                    }
                    Pipelining::Tasks => {
                        for _ in 0..spec.pipeline {
                            let (client, payload, counters) =
                                (client.clone(), payload.clone(), Arc::clone(&counters));
                            tasks.spawn(async move {
                                while !counters.stop.load(Ordering::Relaxed) {
                                    let reply = client.request(&ECHO, payload.clone()).await;
                                    count_reply(reply, &payload, &counters)?;
                                }
                                Ok(())
                            });
                        }
                    }
                }
            }
            while let Some(joined) = tasks.join_next().await {
                joined??;
            }
            Ok(())
        })
    }
}

/// One connection of [`ClientGenerator`] with [`Pipelining::Unordered`]: `pipeline`
/// requests in flight as a `FuturesUnordered`, one more pushed per reply until the harness
/// says stop.
async fn unordered_requests(
    client: Client,
    pipeline: usize,
    payload: Payload,
    counters: Arc<LoadCounters>,
) -> Result<()> {
    // Borrowed by every request future, so it outlives them.
    let echo = ECHO;
    let mut in_flight: futures_util::stream::FuturesUnordered<_> = (0..pipeline)
        .map(|_| client.request(&echo, payload.clone()))
        .collect();
    while let Some(reply) = in_flight.next().await {
        count_reply(reply, &payload, &counters)?;
        if !counters.stop.load(Ordering::Relaxed) {
            in_flight.push(client.request(&echo, payload.clone()));
        }
    }
    Ok(())
}

/// One connection of [`ClientGenerator`] with [`Pipelining::Pipeline`]: `pipeline`
/// requests in flight through one [`Pipeline`](tokio_webwire::client::Pipeline), one more
/// sent per reply until the harness says stop.
async fn pipelined_requests(
    client: Client,
    pipeline: usize,
    payload: Payload,
    counters: Arc<LoadCounters>,
) -> Result<()> {
    let mut requests = client.pipeline();
    for _ in 0..pipeline {
        requests.send(&ECHO, payload.clone()).await?;
    }
    while let Some((_, reply)) = requests.next().await {
        count_reply(reply, &payload, &counters)?;
        if !counters.stop.load(Ordering::Relaxed) {
            requests.send(&ECHO, payload.clone()).await?;
        }
    }
    Ok(())
}

/// A [`Client`] for the client generators: no reconnecting, the load's size limit.
async fn connect_client(addr: SocketAddr, spec: LoadSpec) -> Result<Client> {
    Ok(Client::builder()
        .reconnect(Reconnect::Off)
        .max_message_size(spec.max_message_size())
        .connect(format!("ws://{addr}/"))
        .await?)
}

/// Checks a reply of a client generator against the request's payload and counts it.
fn count_reply(
    reply: Result<Payload, tokio_webwire::client::RequestError>,
    payload: &Payload,
    counters: &LoadCounters,
) -> Result<()> {
    if reply? != *payload {
        return Err("reply differs from the request".into());
    }
    counters.replies.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Opens a WebSocket to `addr` and reads the server's first message, which must be an
/// AcceptConf.
pub(crate) async fn connect(
    addr: SocketAddr,
    config: WebSocketConfig,
) -> Result<WebSocketStream<TcpStream>> {
    Ok(connect_conf(addr, config).await?.0)
}

/// [`connect`], and the AcceptConf parsed.
pub(crate) async fn connect_conf(
    addr: SocketAddr,
    config: WebSocketConfig,
) -> Result<(WebSocketStream<TcpStream>, AcceptConf)> {
    let socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let url = format!("ws://{addr}/");
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, socket, Some(config)).await?;
    match ws.next().await {
        Some(Ok(WsMessage::Binary(frame))) => match Message::parse(frame)? {
            Message::AcceptConf(conf) => Ok((ws, conf)),
            other => Err(format!("expected AcceptConf, got {other:?}").into()),
        },
        other => Err(format!("expected AcceptConf, got {other:?}").into()),
    }
}

/// The requests one connection has sent and not yet seen answered. Ids are a counter; a
/// window of flags from the oldest unanswered id catches unknown and duplicate replies.
#[derive(Debug, Default)]
pub(crate) struct Outstanding {
    /// The oldest id not yet answered.
    base: u64,
    /// The next id to send.
    next: u64,
    /// For ids `base..next`: answered yet?
    answered: VecDeque<bool>,
    pub(crate) in_flight: usize,
}

impl Outstanding {
    pub(crate) fn send(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        self.answered.push_back(false);
        self.in_flight += 1;
        id
    }

    fn answer(&mut self, id: u64) -> Result<(), String> {
        if id < self.base || id >= self.next {
            return Err(format!(
                "reply to id {id}, never sent (sent {}..{})",
                self.base, self.next
            ));
        }
        let slot = &mut self.answered[(id - self.base) as usize];
        if *slot {
            return Err(format!("second reply to id {id}"));
        }
        *slot = true;
        self.in_flight -= 1;
        while self.answered.front() == Some(&true) {
            self.answered.pop_front();
            self.base += 1;
        }
        Ok(())
    }
}

/// Binary "echo" requests of one payload, each a copy of one frame with its id patched in
/// (the codec builds the frame once), and the check of their replies.
pub(crate) struct Requests {
    payload: Vec<u8>,
    pub(crate) template: Bytes,
}

impl Requests {
    pub(crate) fn new(size: usize) -> Result<Self> {
        let payload = load_payload(size);
        let template = Message::request(RequestId::from(0), ECHO, Payload::binary(payload.clone()))
            .encode()?;
        Ok(Requests { payload, template })
    }

    /// The request with id `id`.
    pub(crate) fn frame(&self, id: u64) -> Bytes {
        let mut frame = BytesMut::from(&self.template[..]);
        frame[1..9].copy_from_slice(&id.to_le_bytes());
        frame.freeze()
    }

    /// Checks `reply` (type, length, an outstanding id, payload) and marks its id answered.
    pub(crate) fn answer(&self, reply: &[u8], state: &mut Outstanding) -> Result<(), String> {
        let size = self.payload.len();
        if reply.len() != 9 + size || reply[0] != REPLY_BINARY {
            return Err(format!(
                "bad reply: type {:#04x}, {} bytes (expected {:#04x}, {})",
                reply.first().copied().unwrap_or(0),
                reply.len(),
                REPLY_BINARY,
                9 + size
            ));
        }
        let id = u64::from_le_bytes(reply[1..9].try_into().expect("8 bytes"));
        state.answer(id)?;
        // All of a small payload, the ends of a large one.
        let (data, payload) = (&reply[9..], &self.payload[..]);
        let checked = if size <= 256 {
            data == payload
        } else {
            data[..64] == payload[..64] && data[size - 64..] == payload[size - 64..]
        };
        if !checked {
            return Err(format!("reply to id {id}: payload differs"));
        }
        Ok(())
    }
}

/// One connection of [`TungsteniteGenerator`]: P requests first, then one more per reply.
async fn drive_connection(
    mut ws: WebSocketStream<TcpStream>,
    spec: LoadSpec,
    counters: Arc<LoadCounters>,
) -> Result<()> {
    let requests = Requests::new(spec.size)?;
    let mut state = Outstanding::default();
    let mut out: VecDeque<Bytes> = (0..spec.pipeline)
        .map(|_| requests.frame(state.send()))
        .collect();
    let ended = pump(&mut ws, &mut out, usize::MAX, |reply, out| {
        requests.answer(&reply, &mut state)?;
        counters.replies.fetch_add(1, Ordering::Relaxed);
        if !counters.stop.load(Ordering::Relaxed) {
            out.push_back(requests.frame(state.send()));
        } else if state.in_flight == 0 {
            return Ok(Flow::Done);
        }
        Ok(Flow::Continue)
    })
    .await?;
    if ended != Ended::Done {
        return Err(format!("server closed with {} requests unanswered", state.in_flight).into());
    }
    Ok(())
}
