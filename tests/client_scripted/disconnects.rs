//! Disconnects and reconnects: protocol violations and close frames from the server, and
//! the backoff schedule of reconnection.

use super::*;

#[tokio::test]
async fn malformed_frame_disconnects() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    let (reply, code) =
        request_meeting_violation(&client, &mut ws, &vector("reply_too_short")).await;
    assert_eq!(reply, Err(RequestError::Disconnected));
    assert_eq!(code, Some(CloseCode::Protocol));
    assert_eq!(client.pending_requests(), 0);
    // Reconnecting is off: everything fails at once.
    assert!(!client.is_connected());
    assert_eq!(
        client.request("q", "x").await,
        Err(RequestError::Disconnected)
    );
    assert_eq!(
        client.signal("q", "x").await,
        Err(RequestError::Disconnected)
    );
}

/// The closing handshake (RFC 6455 §5.5.1): the server's close frame gets the client's
/// answer, with the same code, before the client lets go of the socket.
#[tokio::test]
async fn the_servers_close_frame_is_answered() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    let going_away = CloseFrame {
        code: CloseCode::Away,
        reason: "server shutting down".into(),
    };
    within(ws.close(Some(going_away)))
        .await
        .expect("close sent");
    closed_with(&client, &mut ws, Some(CloseCode::Away)).await;
}

#[tokio::test]
async fn text_message_is_a_violation_too() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    ws.send(WsMessage::text("hello")).await.unwrap();
    closed_with(&client, &mut ws, Some(CloseCode::Unsupported)).await;
}

#[tokio::test]
async fn oversize_message_from_the_server_is_a_violation() {
    let script = Script::bind().await;
    let builder = no_reconnect().max_message_size(64);
    let (client, mut ws) = connect_with(builder, &script, &vector("accept_conf_defaults")).await;
    let mut signal = b"\x3f\x01s".to_vec();
    signal.resize(65, 0);
    send(&mut ws, &signal).await;
    closed_with(&client, &mut ws, Some(CloseCode::Size)).await;
}

/// The client closes `ws` with `code`, and its requests then fail as disconnected.
async fn closed_with(client: &Client, ws: &mut Ws, code: Option<CloseCode>) {
    assert_eq!(within(close_code(ws)).await, code);
    assert_eq!(
        within(client.request("q", "x")).await,
        Err(RequestError::Disconnected)
    );
}

fn fast_backoff() -> Reconnect {
    Reconnect::Backoff(
        Backoff::default()
            .min(Duration::from_millis(100))
            .max(Duration::from_secs(1)),
    )
}

#[tokio::test(start_paused = true)]
async fn malformed_frame_reconnects_when_enabled() {
    let script = Script::bind().await;
    let (handler, mut seen) = recorder();
    let builder = Client::builder().reconnect(fast_backoff()).handler(handler);
    let (client, mut ws) = connect_with(builder, &script, &vector("accept_conf_defaults")).await;
    assert_eq!(within(seen.recv()).await, Some(Seen::Connected));

    // In flight when the violation happens: fails; the reply can never come.
    let (reply, code) =
        request_meeting_violation(&client, &mut ws, &vector("unknown_type_200")).await;
    assert_eq!(reply, Err(RequestError::Disconnected));
    assert_eq!(code, Some(CloseCode::Protocol));
    assert_eq!(within(seen.recv()).await, Some(Seen::Disconnected));

    // Issued while disconnected: they wait for the reconnection, then succeed.
    let server = tokio::spawn(async move {
        let ws = script.accept().await;
        echo(ws).await;
    });
    let (signal, reply) =
        within(async { tokio::join!(client.signal("s", "x"), client.request("q", "again")) }).await;
    assert_eq!(signal, Ok(()));
    assert_eq!(reply, Ok(Payload::utf8("again")));
    assert_eq!(within(seen.recv()).await, Some(Seen::Connected));
    assert_eq!(client.pending_requests(), 0);
    within(client.close()).await;
    within(server).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn requests_wait_for_the_reconnection_up_to_their_timeout() {
    let script = Script::bind().await;
    let (handler, mut seen) = recorder();
    let builder = Client::builder().reconnect(fast_backoff()).handler(handler);
    let (client, ws) = connect_with(builder, &script, &vector("accept_conf_defaults")).await;
    assert_eq!(within(seen.recv()).await, Some(Seen::Connected));
    drop(ws);
    assert_eq!(within(seen.recv()).await, Some(Seen::Disconnected));
    // The server is gone for good (its listener accepts nothing more): the request waits
    // for a connection that never comes, then times out.
    let start = Instant::now();
    let reply = client
        .request_with_timeout("q", "x", Duration::from_secs(5))
        .await;
    assert_eq!(
        reply,
        Err(RequestError::Timeout {
            after: Duration::from_secs(5)
        })
    );
    assert!(start.elapsed() >= Duration::from_secs(5));
    assert!(!client.is_connected());
    assert_eq!(client.pending_requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn backoff_schedule_is_followed_and_attempts_are_limited() {
    let script = Script::bind().await;
    let backoff = Backoff::default()
        .min(Duration::from_secs(1))
        .max(Duration::from_secs(5))
        .max_attempts(4);
    let builder = Client::builder().reconnect(Reconnect::Backoff(backoff.clone()));
    let (client, ws) = connect_with(builder, &script, &vector("accept_conf_defaults")).await;
    // The server drops the connection, then refuses each reconnection by closing the TCP
    // connection at once; it notes when each attempt arrives.
    let lost = Instant::now();
    drop(ws);
    let mut attempts = Vec::new();
    for _ in 0..4 {
        let (tcp, _) = within(script.listener.accept()).await.unwrap();
        attempts.push(Instant::now());
        drop(tcp);
    }
    // Attempt n waits between min·2ⁿ and min·2ⁿ⁺¹ (capped at 5 s) after the previous one
    // failed (the first: after the loss).
    let mut previous = lost;
    for (n, at) in attempts.iter().enumerate() {
        let waited = *at - previous;
        let low = backoff.delay(n as u32, 0.0);
        let high = backoff.delay(n as u32, 1.0);
        assert!(
            waited >= low && waited <= high + Duration::from_millis(50),
            "attempt {n} after {waited:?}, expected {low:?}..={high:?}"
        );
        previous = *at;
    }
    // Four failed attempts: the client gives up, and requests fail at once.
    within(async {
        loop {
            match client.request("q", "x").await {
                Err(RequestError::Disconnected) => break,
                // Still on the last attempt.
                Err(RequestError::Timeout { .. }) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    // No fifth attempt.
    assert!(
        tokio::time::timeout(Duration::from_secs(60), script.listener.accept())
            .await
            .is_err()
    );
}
