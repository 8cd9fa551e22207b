//! Requests and replies: the frames sent, every kind of reply, signals both ways, and what
//! is refused before it is sent.

use super::*;

#[tokio::test]
async fn first_request_is_byte_for_byte_the_go_clients() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    let (reply, ()) = within(async {
        tokio::join!(
            client.request("auth", Payload::binary(&b"secret"[..])),
            async {
                // Id 1, little-endian: exactly the vector.
                assert_eq!(
                    &recv(&mut ws).await[..],
                    &vector("request_binary_named")[..]
                );
                send(&mut ws, &reply_vector("reply_binary", RequestId::from(1))).await;
            }
        )
    })
    .await;
    assert_eq!(reply, Ok(Payload::binary(vec![1, 2, 3])));
}

#[tokio::test]
async fn successful_replies_keep_their_encoding() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    let cases = [
        ("reply_binary_empty", Payload::binary(Vec::new())),
        ("reply_binary", Payload::binary(vec![1, 2, 3])),
        (
            "diagram_example_reply_utf8",
            Payload::utf8("urDefinitely bored"),
        ),
        ("reply_utf16_empty", Payload::utf16("")),
        ("reply_utf16", Payload::utf16("hi")),
    ];
    for (name, expected) in cases {
        let reply = answered_with(client.request("q", "x"), &mut ws, name).await;
        assert_eq!(reply, Ok(expected), "{name}");
    }
}

#[tokio::test]
async fn error_and_special_replies_map_to_their_variants() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    let cases = [
        (
            "reply_error",
            RequestError::Reply {
                code: ErrorCode::from_static("SAMPLE_ERROR"),
                message: "Sample error message".into(),
            },
        ),
        (
            "reply_error_code_only",
            RequestError::Reply {
                code: ErrorCode::from_static("E"),
                message: String::new(),
            },
        ),
        ("reply_shutdown", RequestError::Shutdown),
        ("reply_internal_error", RequestError::Internal),
        ("reply_session_not_found", RequestError::SessionNotFound),
        (
            "reply_max_sess_conns_reached",
            RequestError::MaxSessionConnectionsReached,
        ),
        ("reply_sessions_disabled", RequestError::SessionsDisabled),
        (
            "reply_internal_error_trailing_bytes",
            RequestError::Internal,
        ),
    ];
    for (name, expected) in cases {
        let reply = answered_with(client.request("q", "x"), &mut ws, name).await;
        assert_eq!(reply, Err(expected), "{name}");
    }
    assert!(client.is_connected());
    assert_eq!(client.pending_requests(), 0);
}

#[tokio::test]
async fn error_message_is_decoded_lossily() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    let reply = answered_by(client.request("q", "x"), &mut ws, |id| {
        let mut frame = vec![0x00];
        frame.extend_from_slice(id.as_bytes());
        frame.extend_from_slice(b"\x01Eok\xff");
        vec![frame]
    })
    .await;
    assert_eq!(
        reply,
        Err(RequestError::Reply {
            code: ErrorCode::from_static("E"),
            message: "ok\u{fffd}".into()
        })
    );
}

#[tokio::test]
async fn out_of_order_replies_reach_their_requests() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    let server = async {
        let mut requests = Vec::new();
        for _ in 0..3 {
            requests.push(recv_request(&mut ws).await);
        }
        // Answer in reverse order, each with its own request's payload.
        for request in requests.into_iter().rev() {
            let reply = Message::reply(request.request_id().unwrap(), request.payload().unwrap());
            send(&mut ws, &reply.encode().unwrap()).await;
        }
    };
    let (a, b, c, ()) = within(async {
        tokio::join!(
            client.request("q", "a"),
            client.request("q", "b"),
            client.request("q", "c"),
            server
        )
    })
    .await;
    assert_eq!(
        (a.unwrap(), b.unwrap(), c.unwrap()),
        (Payload::utf8("a"), Payload::utf8("b"), Payload::utf8("c"))
    );
}

#[tokio::test]
async fn replies_for_unknown_ids_are_ignored() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    let reply = answered_by(client.request("q", "x"), &mut ws, |id| {
        vec![
            reply_vector("reply_binary", RequestId::from(999)),
            reply_vector("reply_shutdown", RequestId::from(1000)),
            reply_vector("reply_utf16", id),
            // A duplicate of the reply that was already delivered.
            reply_vector("reply_utf16", id),
        ]
    })
    .await;
    assert_eq!(reply, Ok(Payload::utf16("hi")));
    // Still connected and working.
    let reply = answered_with(client.request("q", "y"), &mut ws, "reply_binary_empty").await;
    assert_eq!(reply, Ok(Payload::binary(Vec::new())));
}

#[tokio::test]
async fn unexpected_well_formed_messages_are_ignored() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    let reply = answered_by(client.request("q", "x"), &mut ws, |id| {
        let mut frames: Vec<Vec<u8>> = [
            "heartbeat",
            "request_utf8_named",
            "close_session_request",
            "accept_conf_defaults",
            "notify_session_closed",
        ]
        .into_iter()
        .map(vector)
        .collect();
        frames.push(reply_vector("reply_binary", id));
        frames
    })
    .await;
    assert_eq!(reply, Ok(Payload::binary(vec![1, 2, 3])));
    assert!(client.is_connected());
}

#[tokio::test]
async fn server_signals_reach_the_handler_in_order() {
    let script = Script::bind().await;
    let (handler, mut seen) = recorder();
    let builder = no_reconnect().handler(handler);
    let (client, mut ws) = connect_with(builder, &script, &vector("accept_conf_defaults")).await;
    assert_eq!(within(seen.recv()).await, Some(Seen::Connected));
    for name in [
        "signal_utf8_named",
        "signal_utf8_name_only",
        "signal_utf16_unnamed",
        "signal_binary_named",
    ] {
        send(&mut ws, &vector(name)).await;
    }
    let expected = [
        Seen::Signal("chat".into(), Payload::utf8("hi there")),
        Seen::Signal("a".into(), Payload::utf8("")),
        Seen::Signal(String::new(), Payload::utf16("A")),
        Seen::Signal("event".into(), Payload::binary(vec![1, 2, 3])),
    ];
    for expected in expected {
        assert_eq!(within(seen.recv()).await, Some(expected));
    }
    drop(ws);
    assert_eq!(within(seen.recv()).await, Some(Seen::Disconnected));
    drop(client);
}

#[tokio::test]
async fn client_signals_are_sent_as_is() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    within(client.signal("chat", "hi there")).await.unwrap();
    assert_eq!(&recv(&mut ws).await[..], b"\x40\x04chathi there");
    within(client.signal("abc", Payload::utf16("hi")))
        .await
        .unwrap();
    assert_eq!(
        &recv(&mut ws).await[..],
        &vector("signal_utf16_odd_name_padded")[..]
    );
    within(client.signal(Name::empty(), Payload::binary(vec![0xff])))
        .await
        .unwrap();
    assert_eq!(
        &recv(&mut ws).await[..],
        &vector("signal_binary_unnamed")[..]
    );
}

#[tokio::test]
async fn invalid_input_is_refused_locally() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    assert!(matches!(
        client.request("tab\there", "x").await,
        Err(RequestError::InvalidName(_))
    ));
    assert!(matches!(
        client.request("n".repeat(256), "x").await,
        Err(RequestError::InvalidName(_))
    ));
    assert!(matches!(
        client.request("", Payload::empty()).await,
        Err(RequestError::InvalidMessage(_))
    ));
    assert!(matches!(
        client.signal("a", Payload::utf16("")).await,
        Err(RequestError::InvalidMessage(_))
    ));
    assert!(matches!(
        client.signal("é", "x").await,
        Err(RequestError::InvalidName(_))
    ));
    assert_eq!(client.pending_requests(), 0);
    // Nothing reached the server: the next frame is the next valid signal.
    client.signal("ok", "1").await.unwrap();
    assert_eq!(&within(recv(&mut ws)).await[..], b"\x40\x02ok1");
}

#[tokio::test]
async fn messages_over_the_servers_limit_are_refused_locally() {
    let script = Script::bind().await;
    let (client, mut ws) = connect_with(no_reconnect(), &script, &accept_conf(60_000, 64)).await;
    // A request is 10 header bytes + name + payload: "q" + 53 bytes = 64, at the limit.
    let fits = vec![7u8; 53];
    let too_big = vec![7u8; 54];
    assert_eq!(
        client.request("q", too_big.clone()).await,
        Err(RequestError::PayloadTooLarge { len: 65, limit: 64 })
    );
    assert_eq!(
        client.signal("q", vec![7u8; 62]).await,
        Err(RequestError::PayloadTooLarge { len: 65, limit: 64 })
    );
    assert_eq!(client.pending_requests(), 0);
    let (reply, ()) = within(async {
        tokio::join!(client.request("q", fits), async {
            let frame = recv(&mut ws).await;
            assert_eq!(frame.len(), 64);
            let id = Message::parse(frame).unwrap().request_id().unwrap();
            send(&mut ws, &reply_vector("reply_binary_empty", id)).await;
        })
    })
    .await;
    assert_eq!(reply, Ok(Payload::binary(Vec::new())));
}
