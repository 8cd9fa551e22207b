//! Shutdown under load: every request ends once, every request read is answered once, and
//! every disconnected hook runs after the deadline.

use super::*;

/// How the requests of one client ended.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    issued: usize,
    ok: usize,
    shutdown: usize,
    disconnected: usize,
    /// "gate" requests only.
    gate_ok: usize,
    gate_shutdown: usize,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Self) {
        self.issued += o.issued;
        self.ok += o.ok;
        self.shutdown += o.shutdown;
        self.disconnected += o.disconnected;
        self.gate_ok += o.gate_ok;
        self.gate_shutdown += o.gate_shutdown;
    }
}

const CLIENTS: usize = 8;
const PIPELINE: usize = 16;
/// Requests 5, 10 and 15 of each client are held at the probe's gate.
const GATES: [usize; 3] = [5, 10, 15];
/// Gate permits given once the shutdown has begun; the other gated requests are stopped at
/// the shutdown deadline.
const RELEASED: usize = 8;

/// Keeps `PIPELINE` requests in flight until one ends in `Disconnected`, then waits for the
/// rest; every request must end in its own reply, `Shutdown` or `Disconnected`.
async fn pipelined(client: Client, tag: usize, replies: watch::Sender<usize>) -> Tally {
    let mut tally = Tally::default();
    let mut in_flight = FuturesUnordered::new();
    let mut stop = false;
    loop {
        while !stop && in_flight.len() < PIPELINE {
            let n = tally.issued;
            tally.issued += 1;
            let name = if GATES.contains(&n) { "gate" } else { "echo" };
            let body = format!("{tag}/{n}");
            let client = client.clone();
            in_flight.push(async move {
                let result = client.request(name, body.clone()).await;
                (name, body, result)
            });
        }
        let Some((name, body, result)) = bounded(in_flight.next()).await else {
            break;
        };
        let gate = name == "gate";
        match result {
            Ok(reply) => {
                assert_eq!(reply, Payload::utf8(body), "a reply to another request");
                tally.ok += 1;
                tally.gate_ok += usize::from(gate);
                replies.send_modify(|n| *n += 1);
            }
            Err(RequestError::Shutdown) => {
                tally.shutdown += 1;
                tally.gate_shutdown += usize::from(gate);
            }
            Err(RequestError::Disconnected) => {
                tally.disconnected += 1;
                stop = true;
            }
            Err(other) => panic!("{body}: unexpected {other:?}"),
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_ends_every_request_once() {
    let (server, mut events, addr) =
        start(|b| b.shutdown_timeout(Duration::from_millis(200))).await;
    let clients = common::clients(addr, CLIENTS).await;
    let (replies, mut replied) = watch::channel(0usize);
    let loads: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(tag, client)| tokio::spawn(pipelined(client.clone(), tag, replies.clone())))
        .collect();
    // Under way: every gated request is held, and many have been answered.
    for _ in 0..CLIENTS * GATES.len() {
        bounded(events.entered.recv())
            .await
            .expect("a gated request");
    }
    bounded(replied.wait_for(|n| *n >= 2000))
        .await
        .expect("replies");

    let shutdown = common::begin_shutdown(&server).await;
    server.handler().gate.add_permits(RELEASED);
    bounded(shutdown).await.expect("shutdown");

    let mut total = Tally::default();
    for load in loads {
        total += bounded(load).await.expect("client load");
    }
    for client in &clients {
        assert_eq!(client.pending_requests(), 0);
    }
    println!("shutdown under load: {total:?}");
    let ended = total.ok + total.shutdown + total.disconnected;
    assert_eq!(total.issued, ended, "lost requests");
    assert_eq!(
        (total.gate_ok, total.gate_shutdown),
        (RELEASED, CLIENTS * GATES.len() - RELEASED),
        "released gates answered, the others stopped at the deadline"
    );
    // The echo requests that arrived during the 200 ms of draining got the shutdown reply.
    assert!(total.shutdown > total.gate_shutdown, "{total:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_shutdown_every_request_read_is_answered_exactly_once() {
    let ledger = Arc::new(Ledger::default());
    let (server, addr) = serve_on(None, &ledger, &Arc::default()).await;
    let (client, _) = RawClient::connect(addr).await;
    let (mut sink, mut stream) = client.ws.split();
    const SENT: u64 = 5000;
    // Written as fast as the socket takes them; stops at the first error (closed).
    let writer = tokio::spawn(async move {
        let mut sent = 0;
        for id in 0..SENT {
            let frame = request(id, "echo", Payload::utf8(format!("r{id}")));
            if sink.feed(WsMessage::Binary(frame)).await.is_err() {
                break;
            }
            sent += 1;
        }
        let _ = sink.flush().await;
        sent
    });
    let mut answers: HashMap<u64, Message> = HashMap::new();
    let mut shutdown = None;
    let close = loop {
        match bounded(stream.next()).await {
            Some(Ok(WsMessage::Binary(frame))) => {
                let message = parse(frame);
                let id = message.request_id().expect("a reply").to_u64();
                assert!(
                    answers.insert(id, message).is_none(),
                    "request {id} answered twice"
                );
                if answers.len() == 100 {
                    shutdown = Some(tokio::spawn({
                        let server = server.clone();
                        async move { server.shutdown().await }
                    }));
                }
            }
            Some(Ok(WsMessage::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("read failed before the close frame: {error}"),
            None => panic!("the stream ended before the close frame"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    bounded(shutdown.expect("shutdown started"))
        .await
        .expect("shutdown");
    let sent = bounded(writer).await.expect("writer");

    // The server reads in order and answers everything it read: the answered ids are
    // 0..read, the rest were never read (sent after the server stopped reading).
    let read = answers.len() as u64;
    assert!((0..read).all(|id| answers.contains_key(&id)), "a gap");
    let handled = ledger.handled();
    let mut replies = 0;
    let mut shutdown_replies = 0;
    for (id, answer) in &answers {
        let body = Bytes::from(format!("r{id}"));
        match answer {
            Message::ReplyShutdown { .. } => {
                shutdown_replies += 1;
                assert_eq!(handled.get(&body), None, "handled, then refused: {id}");
            }
            reply => {
                replies += 1;
                assert_eq!(reply.payload().map(|p| p.data), Some(body.clone()));
                assert_eq!(handled.get(&body), Some(&1), "request {id}");
            }
        }
    }
    assert_eq!(handled.len(), replies, "handled without a reply");
    println!(
        "raw shutdown: {sent} sent, {read} read ({replies} replies, {shutdown_replies} \
         shutdown replies), {} never read",
        sent - read
    );
}

/// Shutdown step 3 (`Server::shutdown` docs): every connection is closed "and its
/// `disconnected` hook runs". Once the deadline has passed, src/server/reader.rs runs the
/// hook in an unbiased `tokio::select!` against `stop_handlers`, which is already
/// cancelled: both branches are ready at the first poll, tokio picks one at random, and
/// the hook, although it would finish at once, is skipped for about half the connections.
#[tokio::test]
async fn after_the_shutdown_deadline_every_disconnected_hook_still_runs() {
    let (server, mut events, addr) = start(|b| b.shutdown_timeout(Duration::from_millis(50))).await;
    let mut held = Vec::new();
    for _ in 0..CLIENTS {
        let (mut client, _) = RawClient::connect(addr).await;
        client.send(request(1, "gate", Payload::utf8("held"))).await;
        held.push(client);
    }
    for _ in 0..CLIENTS {
        bounded(events.entered.recv())
            .await
            .expect("a held request");
    }
    bounded(server.shutdown()).await;
    let mut hooks = 0;
    while let Ok(reason) = events.disconnected.try_recv() {
        assert_eq!(reason, CloseReason::ServerShutdown);
        hooks += 1;
    }
    assert_eq!(hooks, CLIENTS, "disconnected hooks that ran");
}
