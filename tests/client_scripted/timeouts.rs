//! Timeouts and cancellation, and heartbeats: request timeouts and dropped requests leave
//! nothing pending; pings at three quarters of the read timeout.

use super::*;

#[tokio::test(start_paused = true)]
async fn request_timeout_leaves_nothing_pending() {
    let script = Script::bind().await;
    let builder = no_reconnect().request_timeout(Duration::from_secs(3));
    let (client, mut ws) = connect_with(builder, &script, &vector("accept_conf_defaults")).await;
    let start = Instant::now();
    let (reply, id) = unanswered(client.request("slow", "x"), &mut ws).await;
    assert_eq!(
        reply,
        Err(RequestError::Timeout {
            after: Duration::from_secs(3)
        })
    );
    assert!(start.elapsed() >= Duration::from_secs(3));
    assert_eq!(client.pending_requests(), 0);

    // Its late reply is ignored; the per-request timeout overrides the default.
    send(&mut ws, &reply_vector("reply_binary", id)).await;
    let (reply, _) = unanswered(
        client.request_with_timeout("q", "x", Duration::from_millis(10)),
        &mut ws,
    )
    .await;
    assert_eq!(
        reply,
        Err(RequestError::Timeout {
            after: Duration::from_millis(10)
        })
    );
    assert_eq!(client.pending_requests(), 0);
    assert!(client.is_connected());
}

#[tokio::test]
async fn dropping_a_request_removes_its_entry() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;

    // Aborted task.
    let task = tokio::spawn({
        let client = client.clone();
        async move { client.request("q", "x").await }
    });
    let id = within(recv_request(&mut ws)).await.request_id().unwrap();
    assert_eq!(client.pending_requests(), 1);
    task.abort();
    assert!(within(task).await.unwrap_err().is_cancelled());
    assert_eq!(client.pending_requests(), 0);

    // Lost a `select!`.
    let (received_tx, mut received) = mpsc::channel(1);
    let server = tokio::spawn(async move {
        let _ = recv_request(&mut ws).await;
        received_tx.send(()).await.unwrap();
        // Late replies for both requests: ignored.
        send(&mut ws, &reply_vector("reply_binary", id)).await;
        send(&mut ws, &reply_vector("reply_binary", RequestId::from(2))).await;
        ws
    });
    within(async {
        tokio::select! {
            _ = client.request("q", "y") => panic!("no reply was sent"),
            _ = received.recv() => {}
        }
    })
    .await;
    assert_eq!(client.pending_requests(), 0);
    let mut ws = within(server).await.unwrap();

    // The client works on.
    let (reply, ()) = within(async {
        tokio::join!(client.request("q", "z"), async {
            let id = recv_request(&mut ws).await.request_id().unwrap();
            assert_eq!(id, RequestId::from(3));
            send(&mut ws, &reply_vector("reply_utf16", id)).await;
        })
    })
    .await;
    assert_eq!(reply, Ok(Payload::utf16("hi")));
}

#[tokio::test]
async fn request_json_sends_and_reads_json() {
    #[derive(serde::Serialize)]
    struct Login<'a> {
        user: &'a str,
    }
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Welcome {
        id: u32,
    }
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    let (welcome, ()) = within(async {
        tokio::join!(
            client.request_json::<_, Welcome>("login", &Login { user: "alice" }),
            async {
                let request = recv_request(&mut ws).await;
                assert_eq!(
                    request.payload(),
                    Some(Payload::utf8(r#"{"user":"alice"}"#))
                );
                let id = request.request_id().unwrap();
                let reply = Message::reply(id, Payload::utf16(r#"{"id":7}"#));
                send(&mut ws, &reply.encode().unwrap()).await;
            }
        )
    })
    .await;
    assert_eq!(welcome, Ok(Welcome { id: 7 }));
    // A reply that is not a `Welcome`.
    let welcome = answered_with(
        client.request_json::<_, Welcome>("login", &Login { user: "bob" }),
        &mut ws,
        "reply_binary",
    )
    .await;
    assert!(
        matches!(welcome, Err(RequestError::Json { .. })),
        "{welcome:?}"
    );
}

// ─── Heartbeats ─────────────────────────────────────────────────────────────────────────

#[tokio::test(start_paused = true)]
async fn heartbeats_at_three_quarters_of_the_read_timeout() {
    let script = Script::bind().await;
    // Read timeout 4 s: heartbeat every 3 s of silence.
    let (client, mut ws) = connect_with(no_reconnect(), &script, &accept_conf(4_000, 8192)).await;
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);

    assert_eq!(&within(recv(&mut ws)).await[..], b"\x21");
    assert_eq!(Instant::now(), at(3_000));
    assert_eq!(&within(recv(&mut ws)).await[..], b"\x21");
    assert_eq!(Instant::now(), at(6_000));

    // An outgoing signal at 7 s restarts the timer: the next heartbeat is due at 10 s.
    tokio::time::sleep_until(at(7_000)).await;
    client.signal("s", "x").await.unwrap();
    assert_eq!(&within(recv(&mut ws)).await[..], b"\x40\x01sx");
    assert_eq!(&within(recv(&mut ws)).await[..], b"\x21");
    assert_eq!(Instant::now(), at(10_000));

    // So does a request, at 11.5 s: next heartbeat at 14.5 s.
    tokio::time::sleep_until(at(11_500)).await;
    let (_, _) = unanswered(
        client.request_with_timeout("q", "x", Duration::from_millis(1)),
        &mut ws,
    )
    .await;
    assert_eq!(&within(recv(&mut ws)).await[..], b"\x21");
    assert_eq!(Instant::now(), at(14_500));
}
