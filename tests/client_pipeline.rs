//! `Pipeline`: many requests in flight from one task, each ending in exactly one outcome
//! with its ticket, against our server (replies, errors, timeouts, a dropped pipeline, a
//! closed client) and a scripted one (a lost connection, stray and duplicate replies).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::bounded;
use common::probe::start;
use common::script::{Script, recv_message, send};
use common::vector;
use tokio_webwire::client::{Reconnect, Ticket};
use tokio_webwire::protocol::{ErrorCode, Message};
use tokio_webwire::{Client, Payload, RequestError};

async fn connect(url: String) -> Client {
    bounded(Client::builder().reconnect(Reconnect::Off).connect(url))
        .await
        .expect("connects")
}

#[tokio::test]
async fn every_request_ends_in_one_outcome_with_its_ticket() {
    let (_server, _events, addr) = start(|b| b).await;
    let client = connect(format!("ws://{addr}/")).await;
    let mut pipeline = client.pipeline();
    // 300 requests, at most 32 in flight; every fifth one fails on the server.
    let mut sent: HashMap<Ticket, String> = HashMap::new();
    let (mut next, mut outcomes) = (0, 0);
    let send_one = async |pipeline: &mut tokio_webwire::client::Pipeline, i: usize| {
        let name = if i % 5 == 0 { "fail" } else { "echo" };
        let ticket = pipeline.send(name, format!("#{i}")).await.expect("queued");
        (ticket, format!("{name} #{i}"))
    };
    while next < 32 {
        let (ticket, what) = send_one(&mut pipeline, next).await;
        sent.insert(ticket, what);
        next += 1;
    }
    assert_eq!(pipeline.in_flight(), 32);
    while let Some((ticket, outcome)) = bounded(pipeline.next()).await {
        let what = sent.remove(&ticket).expect("one outcome per ticket");
        match (what.split_once(' '), outcome) {
            (Some(("echo", body)), Ok(reply)) => assert_eq!(reply.to_text().unwrap(), body),
            (Some(("fail", _)), Err(RequestError::Reply { code, .. })) => {
                assert_eq!(code, ErrorCode::from_static("SAMPLE_ERROR"));
            }
            (what, outcome) => panic!("{what:?} ended in {outcome:?}"),
        }
        outcomes += 1;
        if next < 300 {
            let (ticket, what) = send_one(&mut pipeline, next).await;
            sent.insert(ticket, what);
            next += 1;
        }
    }
    assert_eq!(outcomes, 300);
    assert!(sent.is_empty());
    assert_eq!(pipeline.in_flight(), 0);
    assert_eq!(client.pending_requests(), 0);
    // 300 ids are two chunks: the older one went once its requests had their outcomes.
    assert_eq!(client.pipeline_chunks(), 1);
    // Done, and still usable.
    assert!(bounded(pipeline.next()).await.is_none());
    let ticket = bounded(pipeline.send("echo", "again")).await.unwrap();
    let (answered, reply) = bounded(pipeline.next()).await.unwrap();
    assert_eq!((answered, reply), (ticket, Ok(Payload::utf8("again"))));
}

#[tokio::test]
async fn a_request_times_out_and_its_late_reply_is_ignored() {
    let (server, mut events, addr) = start(|b| b).await;
    let client = connect(format!("ws://{addr}/")).await;
    let mut pipeline = client.pipeline().timeout(Duration::from_millis(50));
    let held = bounded(pipeline.send("gate", "held")).await.unwrap();
    bounded(events.entered.recv()).await;
    let (ticket, outcome) = bounded(pipeline.next()).await.unwrap();
    assert_eq!(ticket, held);
    assert!(
        matches!(outcome, Err(RequestError::Timeout { after }) if after == Duration::from_millis(50)),
        "{outcome:?}"
    );
    assert_eq!(client.pending_requests(), 0);
    // The late reply comes before this one's and is dropped: the next outcome is this.
    server.handler().gate.add_permits(1);
    let ticket = bounded(pipeline.send("echo", "after")).await.unwrap();
    assert_eq!(
        bounded(pipeline.next()).await,
        Some((ticket, Ok(Payload::utf8("after"))))
    );
    assert_eq!(pipeline.in_flight(), 0);
}

#[tokio::test]
async fn a_dropped_pipeline_leaves_nothing_pending() {
    let (server, mut events, addr) = start(|b| b).await;
    let client = connect(format!("ws://{addr}/")).await;
    let mut pipeline = client.pipeline().timeout(Duration::MAX);
    for _ in 0..3 {
        bounded(pipeline.send("gate", "held")).await.unwrap();
    }
    for _ in 0..3 {
        bounded(events.entered.recv()).await;
    }
    // The pipeline's requests are its own; their chunk of ids is routed to it.
    assert_eq!(client.pending_requests(), 0);
    assert_eq!(client.pipeline_chunks(), 1);
    drop(pipeline);
    assert_eq!(client.pipeline_chunks(), 0);
    // Their replies come, to nobody; the client serves on.
    server.handler().gate.add_permits(3);
    assert_eq!(
        bounded(client.request("echo", "next")).await,
        Ok(Payload::utf8("next"))
    );
}

#[tokio::test]
async fn closing_the_client_ends_what_is_in_flight() {
    let (_server, mut events, addr) = start(|b| b).await;
    let client = connect(format!("ws://{addr}/")).await;
    let mut pipeline = client.pipeline();
    let held = bounded(pipeline.send("gate", "held")).await.unwrap();
    bounded(events.entered.recv()).await;
    bounded(client.close()).await;
    assert_eq!(
        bounded(pipeline.next()).await,
        Some((held, Err(RequestError::ClientClosed)))
    );
    assert!(bounded(pipeline.next()).await.is_none());
    assert_eq!(
        bounded(pipeline.send("echo", "x")).await,
        Err(RequestError::ClientClosed)
    );
    assert_eq!(pipeline.in_flight(), 0);
}

/// Against a scripted server: a reply for no request and a second reply for one are
/// ignored; a lost connection fails what is still in flight, once.
#[tokio::test]
async fn stray_replies_are_ignored_and_a_lost_connection_fails_the_rest() {
    let script = Script::bind().await;
    let accept_conf = vector("accept_conf_defaults");
    let (client, mut ws) = bounded(async {
        tokio::join!(
            connect(script.url.clone()),
            script.accept_with(&accept_conf)
        )
    })
    .await;
    let mut pipeline = client.pipeline();
    let first = bounded(pipeline.send("q", "1")).await.unwrap();
    let second = bounded(pipeline.send("q", "2")).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        match bounded(recv_message(&mut ws)).await {
            Message::RequestUtf8 { id, .. } => ids.push(id),
            other => panic!("expected a request, got {other:?}"),
        }
    }
    assert_eq!(
        ids.iter().map(|id| id.to_u64()).collect::<Vec<_>>(),
        [first.id(), second.id()]
    );
    let reply = |id, text: &str| {
        Message::reply(id, Payload::utf8(text))
            .encode()
            .expect("a valid reply")
    };
    // Unknown id, then the first request's reply twice.
    bounded(send(
        &mut ws,
        &reply(tokio_webwire::protocol::RequestId::from(999), "stray"),
    ))
    .await;
    bounded(send(&mut ws, &reply(ids[0], "one"))).await;
    bounded(send(&mut ws, &reply(ids[0], "one again"))).await;
    assert_eq!(
        bounded(pipeline.next()).await,
        Some((first, Ok(Payload::utf8("one"))))
    );
    drop(ws);
    assert_eq!(
        bounded(pipeline.next()).await,
        Some((second, Err(RequestError::Disconnected)))
    );
    assert!(bounded(pipeline.next()).await.is_none());
    assert_eq!(client.pending_requests(), 0);
}

/// Two pipelines and plain requests on one client at once: every reply reaches the one
/// that sent its request (the pipelines' ids come in chunks, interleaved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelines_and_plain_requests_share_a_connection() {
    let (_server, _events, addr) = start(|b| b.max_concurrent_requests(256)).await;
    let client = connect(format!("ws://{addr}/")).await;
    let run = |label: &'static str| {
        let client = client.clone();
        tokio::spawn(async move {
            let mut pipeline = client.pipeline();
            let mut sent = HashMap::new();
            for i in 0..600 {
                let body = format!("{label} {i}");
                let ticket = pipeline.send("echo", body.clone()).await.expect("queued");
                sent.insert(ticket, body);
                // Up to 40 in flight: a reply read for each request sent beyond.
                if pipeline.in_flight() >= 40 {
                    let (ticket, reply) = pipeline.next().await.expect("in flight");
                    assert_eq!(reply.unwrap().to_text().unwrap(), sent[&ticket]);
                    sent.remove(&ticket);
                }
            }
            while let Some((ticket, reply)) = pipeline.next().await {
                assert_eq!(reply.unwrap().to_text().unwrap(), sent[&ticket]);
                sent.remove(&ticket);
            }
            assert!(sent.is_empty());
        })
    };
    let (a, b) = (run("a"), run("b"));
    let plain = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                let body = format!("plain {i}");
                assert_eq!(
                    client.request("echo", body.clone()).await,
                    Ok(Payload::utf8(body))
                );
            }
        })
    };
    for task in [a, b, plain] {
        bounded(task).await.unwrap();
    }
    assert_eq!(client.pending_requests(), 0);
    // Each pipeline's chunks went with it.
    assert_eq!(client.pipeline_chunks(), 0);
}

/// Tells the test when the client has lost its connection.
struct OnDisconnect(tokio::sync::mpsc::UnboundedSender<()>);

impl tokio_webwire::client::ClientHandler for OnDisconnect {
    async fn disconnected(&self, _client: &Client) {
        let _ = self.0.send(());
    }
}

/// With reconnecting on, a pipeline's request sent while the server is down waits for
/// the next connection and is answered there.
#[tokio::test]
async fn a_pipeline_goes_on_over_the_next_connection() {
    let (server, _events, addr) = start(|b| b).await;
    let backoff = tokio_webwire::client::Backoff::default()
        .min(Duration::from_millis(5))
        .max(Duration::from_millis(50));
    let (disconnected, mut disconnects) = tokio::sync::mpsc::unbounded_channel();
    let client = bounded(
        Client::builder()
            .reconnect(Reconnect::Backoff(backoff))
            .handler(OnDisconnect(disconnected))
            .connect(format!("ws://{addr}/")),
    )
    .await
    .expect("connects");
    let mut pipeline = client.pipeline();
    let before = bounded(pipeline.send("echo", "before")).await.unwrap();
    assert_eq!(
        bounded(pipeline.next()).await,
        Some((before, Ok(Payload::utf8("before"))))
    );
    bounded(server.shutdown()).await;
    bounded(disconnects.recv()).await;
    // Sent while the server is down (the cached connection refuses it): it waits.
    let restarted = async {
        let (probe, _events) = common::probe::probe();
        let server = tokio_webwire::server::Server::new(std::sync::Arc::new(probe));
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::task::yield_now().await,
            }
        };
        tokio::spawn(server.serve(listener));
        server
    };
    let (during, _server) =
        bounded(async { tokio::join!(pipeline.send("echo", "during"), restarted) }).await;
    let during = during.expect("queued on the next connection");
    assert_eq!(
        bounded(pipeline.next()).await,
        Some((during, Ok(Payload::utf8("during"))))
    );
}

/// A request that stays in flight keeps its own chunk of ids routed, not the chunks after
/// it: their routes go as their requests are answered.
#[tokio::test]
async fn a_slow_request_pins_only_its_own_chunk() {
    let (server, mut events, addr) = start(|b| b).await;
    let client = connect(format!("ws://{addr}/")).await;
    let mut pipeline = client.pipeline().timeout(Duration::MAX);
    let held = bounded(pipeline.send("gate", "held")).await.unwrap();
    bounded(events.entered.recv()).await;
    // Five chunks' worth of requests after it, each answered before the next is sent.
    for i in 0..1280 {
        let ticket = bounded(pipeline.send("echo", format!("{i}")))
            .await
            .unwrap();
        let (answered, _) = bounded(pipeline.next()).await.unwrap();
        assert_eq!(answered, ticket);
    }
    // The held request's chunk and the newest one.
    assert_eq!(client.pipeline_chunks(), 2);
    server.handler().gate.add_permits(1);
    assert_eq!(
        bounded(pipeline.next()).await,
        Some((held, Ok(Payload::utf8("held"))))
    );
    assert_eq!(client.pipeline_chunks(), 1);
}
