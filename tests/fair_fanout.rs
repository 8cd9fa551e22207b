//! A crowd of subscribers that never read cannot hold up the ones that do: 1 000 of them
//! subscribe and stop reading while 1 KiB publishes go out; the three reading subscribers
//! on 127.0.0.1 get every publish, in order, and are never disconnected as too slow, while
//! the crowd is disconnected (the default policy) as its queues fill.
//!
//! The rate (300 a second, and 1 000) wants a release build; there the queue's
//! depth decides: `WEBWIRE_FANOUT_RATE=300 cargo test --release --test fair_fanout` passes,
//! and fails with `WEBWIRE_FANOUT_QUEUE_LEN=2` (about the 8 frames the queue held before it
//! counted bytes): every subscriber's queue backs up while the crowd's drivers still take
//! writes, and 8 frames are 27 ms at 300 a second. CI runs the debug build at 100 a second.

mod common;

use std::time::{Duration, Instant};

use common::nodes::{Seen, subscriber};
use common::{RawClient, bounded};
use tokio::sync::mpsc;
use tokio_webwire::Payload;
use tokio_webwire::protocol::{Message, Name, RequestId};
use tokio_webwire::server::{Connection, Handler, HandlerResult, Server};

const TOPIC: &str = "ticker";

/// Publishes a second: 100 by default (a debug build's, the tests'); `WEBWIRE_FANOUT_RATE`
/// sets another (the 300 wants a release build:
/// `WEBWIRE_FANOUT_RATE=300 cargo test --release --test fair_fanout`).
fn rate() -> u64 {
    std::env::var("WEBWIRE_FANOUT_RATE")
        .ok()
        .and_then(|rate| rate.parse().ok())
        .unwrap_or(100)
}

/// `subscribe` joins the ticker; `notify` signals its payload back (the sentinel).
struct Ticker;

impl Handler for Ticker {
    async fn request(&self, conn: &Connection, name: Name, payload: Payload) -> HandlerResult {
        match name.as_str() {
            "subscribe" => {
                conn.subscribe(TOPIC)?;
                Ok(Payload::empty())
            }
            _ => Ok(payload),
        }
    }
}

/// A subscriber that never reads again once subscribed: an in-memory pipe of 4 KiB, so
/// that it stalls after a few publishes, as a client behind a dead link does once the
/// kernel's buffers are full (a socket's would hold megabytes first).
async fn deaf(server: &Server<Ticker>) -> RawClient<tokio::io::DuplexStream> {
    let (mut raw, _accept_conf) = RawClient::connect_in_memory(server, 4096).await;
    let subscribe = Message::request(
        RequestId::from(1),
        Name::from_static("subscribe"),
        Payload::empty(),
    );
    raw.send(subscribe.encode().expect("encodes")).await;
    // Its reply is read, then nothing more.
    let _reply = raw.recv().await;
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_get_every_publish_while_a_thousand_subscribers_never_read() {
    let server = Server::builder(Ticker)
        .max_message_size(4096)
        // The server's default; `WEBWIRE_FANOUT_QUEUE_LEN=2` (8 KiB, about 7 publishes of
        // 1 KiB) is what a queue of 8 frames gave before the queue counted bytes.
        .outbound_queue_len(
            std::env::var("WEBWIRE_FANOUT_QUEUE_LEN")
                .ok()
                .and_then(|len| len.parse().ok())
                .unwrap_or(8),
        )
        .build()
        .expect("valid");
    let addr = common::listen(&server).await;
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (client, seen) = subscriber(addr).await;
        bounded(client.request("subscribe", ""))
            .await
            .expect("subscribed");
        readers.push((client, seen));
    }
    let mut crowd = Vec::new();
    for _ in 0..1000 {
        crowd.push(deaf(&server).await);
    }
    assert_eq!(server.subscriber_count(TOPIC), 1003);
    // About 300 publishes a second of 1 KiB, for 2 seconds.
    let rate = rate();
    let publishes = 3 * rate;
    let started = Instant::now();
    for n in 0..publishes {
        let mut payload = format!("{n:06}").into_bytes();
        payload.resize(1024, b'.');
        bounded(server.publish(TOPIC, "tick", Payload::binary(payload)))
            .await
            .expect("published");
        let due = started + Duration::from_millis(1000 * (n + 1) / rate);
        tokio::time::sleep_until(due.into()).await;
    }
    println!(
        "{publishes} publishes in {:?}; {} subscribers left",
        started.elapsed(),
        server.subscriber_count(TOPIC)
    );
    for (client, seen) in &mut readers {
        for n in 0..publishes {
            let payload = next_tick(seen).await;
            assert_eq!(
                &payload[..6],
                format!("{n:06}").as_bytes(),
                "in order, none missed"
            );
        }
        assert!(
            client.is_connected(),
            "a reader was disconnected as too slow"
        );
    }
    drop(crowd);
}

async fn next_tick(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<u8> {
    loop {
        match bounded(seen.recv()).await.expect("a signal") {
            Seen::Signal(name, text) if name == "tick" => return text.into_bytes(),
            Seen::Signal(..) => {}
            other => panic!("a reader saw {other:?}"),
        }
    }
}
