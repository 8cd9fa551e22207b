//! Hostile clients against one server while well-behaved clients keep working.
//!
//! Bad connections, all at once: every invalid golden vector (one connection each), 10
//! oversized binary messages, 10 text messages, 10 WebSocket frames truncated at the TCP
//! level (a header announcing 100 payload bytes, 10 bytes, then the write half closed) and
//! 10 connections sending seeded pseudo-random binary messages. Meanwhile 4 of our
//! [`Client`]s run request loops.
//!
//! What the server does with each:
//! - malformed WebWire message, random bytes that do not parse → close frame 1002;
//! - binary message over `max_message_size` → 1009 (refused from the frame header);
//! - text message → 1003;
//! - truncated WebSocket frame followed by EOF → no close frame: tungstenite reports the
//!   end of the stream inside a frame as a reset without closing handshake, which the
//!   server treats as a lost connection (`CloseReason::ConnectionLost`) and drops the
//!   socket; the peer reads EOF.
//!
//! Every good request must succeed. Latencies of the good requests, without and with the
//! hostile load, are printed (`cargo test --test hostile -- --nocapture`); timing is never
//! asserted. Runs in about a second.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::probe::start;
use common::{RawClient, bounded, unhex, vectors};
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_webwire::protocol::Message;
use tokio_webwire::server::CloseReason;
use tokio_webwire::{Client, Payload};

/// Connections of each kind besides the malformed vectors.
const PER_KIND: usize = 10;
/// Good clients and the requests each makes at least, per phase.
const GOOD: usize = 4;
const MIN_REQUESTS: usize = 100;

/// What a bad connection does.
#[derive(Debug, Clone)]
enum Bad {
    /// One invalid golden vector, by name.
    Malformed(String, Vec<u8>),
    /// One binary message one byte over the limit.
    Oversized,
    /// One text message.
    Text,
    /// A masked binary frame header announcing 100 bytes, 10 of them, then EOF.
    Truncated,
    /// Pseudo-random binary messages from this seed, up to the first that does not parse.
    Random(u64),
}

/// How the server ended a bad connection: its close code, or `None` for a dropped socket.
type Outcome = Option<CloseCode>;

/// xorshift64*: a small, seeded, dependency-free generator.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Random messages of 1..=48 bytes until (and including) the first one our parser rejects,
/// so the connection never writes after the server has closed it (unread data there would
/// turn the server's close into a reset). At most 50; an empty message (always invalid)
/// ends the list if none was rejected.
fn random_frames(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = XorShift(seed | 1);
    let mut frames = Vec::new();
    for _ in 0..50 {
        let len = 1 + (rng.next() % 48) as usize;
        let frame: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let rejected = Message::parse(frame.clone().into()).is_err();
        frames.push(frame);
        if rejected {
            return frames;
        }
    }
    frames.push(Vec::new());
    frames
}

/// Connects, misbehaves as `bad` says, and reports how the server ended the connection.
async fn misbehave(addr: SocketAddr, bad: Bad) -> Outcome {
    let (mut client, _) = RawClient::connect(addr).await;
    match bad {
        Bad::Malformed(_, frame) => client.send(frame).await,
        Bad::Oversized => client.send(vec![0x3f; 8193]).await,
        Bad::Text => bounded(client.ws.send(WsMessage::text("hello")))
            .await
            .expect("send text"),
        Bad::Truncated => {
            // FIN + binary, masked, 100 payload bytes announced; 10 sent.
            let mut raw = vec![0x82, 0x80 | 100, 1, 2, 3, 4];
            raw.extend_from_slice(&[0x55; 10]);
            let socket = client.ws.get_mut();
            bounded(socket.write_all(&raw)).await.expect("raw write");
            bounded(socket.shutdown())
                .await
                .expect("close the write half");
        }
        Bad::Random(seed) => {
            for frame in random_frames(seed) {
                client.send(frame).await;
            }
        }
    }
    client.closed().await.map(|frame| frame.code)
}

/// `count` sequential echo requests (at least; more until `stop` is set) from one client;
/// returns each request's latency. Every request must succeed with its own payload.
async fn request_loop(
    client: Client,
    tag: String,
    count: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let mut n = 0usize;
    while n < count || !stop.load(Ordering::Acquire) {
        let body = format!("{tag}/{n}");
        let started = Instant::now();
        let reply = client.request("echo", body.clone()).await;
        latencies.push(started.elapsed());
        assert_eq!(reply, Ok(Payload::utf8(body)), "good request {tag}/{n}");
        n += 1;
    }
    latencies
}

/// Runs every good client's loop concurrently and returns all latencies.
async fn good_phase(clients: &[Client], phase: &str, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let loops: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, client)| {
            tokio::spawn(request_loop(
                client.clone(),
                format!("{phase}{i}"),
                MIN_REQUESTS,
                Arc::clone(&stop),
            ))
        })
        .collect();
    let mut all = Vec::new();
    for task in loops {
        all.extend(bounded(task).await.expect("request loop"));
    }
    all
}

fn summary(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    format!(
        "{} requests: median {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connections_are_closed_and_good_clients_never_notice() {
    // Every bad connection comes from 127.0.0.1 at once, and each must be upgraded to be
    // closed with its code: no limit per source here (tests/fair_connections.rs has them).
    let (_server, mut events, addr) = start(|b| b.max_pending_upgrades_per_source(0)).await;
    let clients = common::clients(addr, GOOD).await;

    // Without hostile load.
    let quiet = good_phase(&clients, "quiet", Arc::new(AtomicBool::new(true))).await;

    // With it: the good loops run until every bad connection has been dealt with.
    let mut bad = Vec::new();
    for vector in vectors() {
        if vector["valid"] == false {
            let name = vector["name"].as_str().expect("name").to_owned();
            let frame = unhex(vector["hex"].as_str().expect("hex"));
            bad.push(Bad::Malformed(name, frame));
        }
    }
    for i in 0..PER_KIND {
        bad.push(Bad::Oversized);
        bad.push(Bad::Text);
        bad.push(Bad::Truncated);
        bad.push(Bad::Random(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1)));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let good = tokio::spawn({
        let clients = clients.clone();
        let stop = Arc::clone(&stop);
        async move { good_phase(&clients, "busy", stop).await }
    });
    let attacks: Vec<_> = bad
        .iter()
        .map(|b| tokio::spawn(misbehave(addr, b.clone())))
        .collect();
    let mut outcomes = Vec::new();
    for attack in attacks {
        outcomes.push(bounded(attack).await.expect("bad connection task"));
    }
    stop.store(true, Ordering::Release);
    let busy = bounded(good).await.expect("good clients");

    for (b, outcome) in bad.iter().zip(&outcomes) {
        let expected = match b {
            Bad::Malformed(..) | Bad::Random(_) => Some(CloseCode::Protocol),
            Bad::Oversized => Some(CloseCode::Size),
            Bad::Text => Some(CloseCode::Unsupported),
            Bad::Truncated => None,
        };
        let what = match b {
            Bad::Malformed(name, _) => format!("malformed {name}"),
            other => format!("{other:?}"),
        };
        assert_eq!(*outcome, expected, "{what}");
    }
    // The server saw each bad connection end, for the matching reason, and no good one.
    let mut violations = 0;
    let mut lost = 0;
    for _ in 0..bad.len() {
        match bounded(events.disconnected.recv()).await.expect("an event") {
            CloseReason::ProtocolViolation(_) => violations += 1,
            CloseReason::ConnectionLost => lost += 1,
            other => panic!("unexpected disconnect reason {other:?}"),
        }
    }
    assert_eq!((violations, lost), (bad.len() - PER_KIND, PER_KIND));
    assert!(
        events.disconnected.try_recv().is_err(),
        "a good client lost"
    );
    for client in &clients {
        assert!(client.is_connected());
        assert_eq!(client.pending_requests(), 0);
    }
    println!("{} bad connections", bad.len());
    println!("good requests without hostile load: {}", summary(quiet));
    println!("good requests with hostile load:    {}", summary(busy));
}

#[test]
fn random_frames_end_with_one_the_parser_rejects() {
    for i in 0..PER_KIND as u64 {
        let frames = random_frames(0x9E37_79B9_7F4A_7C15 ^ (i + 1));
        let (last, before) = frames.split_last().expect("at least one frame");
        assert!(Message::parse(last.clone().into()).is_err());
        assert!(
            before
                .iter()
                .all(|f| Message::parse(f.clone().into()).is_ok())
        );
    }
}
