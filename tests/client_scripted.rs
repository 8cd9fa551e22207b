//! The client against a scripted server: a raw tokio-tungstenite server inside each test
//! that sends AcceptConf bytes and answers with golden-vector frames, byte for byte.
//!
//! Time-based behaviour (heartbeats, backoff, timeouts) runs with paused tokio time; every
//! other await is bounded by `within` (`common::bounded`).

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

// ─── Handshake ──────────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn handshake_reads_accept_conf() {
    let script = Script::bind().await;
    let (client, _ws) = connect(&script).await;
    assert!(client.is_connected());
    let conf = client.server_conf().expect("connected");
    assert_eq!(conf.version, ProtocolVersion::V2_0);
    assert_eq!(conf.read_timeout, Duration::from_secs(60));
    assert_eq!(conf.message_buffer_size, 8192);
}

#[tokio::test]
async fn handshake_with_matching_sub_protocol() {
    let script = Script::bind().await;
    let builder = no_reconnect().sub_protocol("chat");
    let (client, _ws) =
        connect_with(builder, &script, &vector("accept_conf_with_subprotocol")).await;
    let conf = client.server_conf().expect("connected");
    assert_eq!(conf.sub_protocol_name(), Some(&b"chat"[..]));
    assert_eq!(conf.message_buffer_size, 1024);
}

/// Connects with `builder` to a server whose first message is `first`; returns the error
/// and the close code the client sent, if any.
async fn refused_handshake(
    builder: tokio_webwire::ClientBuilder,
    first: &[u8],
) -> (ConnectError, Option<CloseCode>) {
    let script = Script::bind().await;
    let (result, code) = within(async {
        tokio::join!(builder.connect(&script.url), async {
            let mut ws = script.accept_with(first).await;
            close_code(&mut ws).await
        })
    })
    .await;
    (result.expect_err("the handshake must fail"), code)
}

#[tokio::test]
async fn wrong_major_version_is_refused() {
    let mut conf = AcceptConf::new(Duration::from_secs(60), 8192);
    conf.version = ProtocolVersion { major: 3, minor: 0 };
    let first = Message::AcceptConf(conf).encode().unwrap();
    let (err, code) = refused_handshake(no_reconnect(), &first).await;
    assert_eq!(
        err,
        ConnectError::UnsupportedVersion {
            version: ProtocolVersion { major: 3, minor: 0 }
        }
    );
    assert_eq!(code, Some(CloseCode::Protocol));
}

#[tokio::test]
async fn minor_version_is_informational() {
    let script = Script::bind().await;
    let mut first = vector("accept_conf_defaults");
    first[2] = 9;
    let (client, _ws) = connect_with(no_reconnect(), &script, &first).await;
    assert_eq!(client.server_conf().unwrap().version.minor, 9);
}

#[tokio::test]
async fn sub_protocol_mismatch_is_refused() {
    // Expected "chat", the server has none.
    let (err, _) = refused_handshake(
        no_reconnect().sub_protocol("chat"),
        &vector("accept_conf_defaults"),
    )
    .await;
    assert_eq!(
        err,
        ConnectError::SubProtocolMismatch {
            expected: Some(Bytes::from_static(b"chat")),
            actual: None
        }
    );
    // Expected none, the server speaks "chat".
    let (err, _) = refused_handshake(no_reconnect(), &vector("accept_conf_with_subprotocol")).await;
    assert_eq!(
        err,
        ConnectError::SubProtocolMismatch {
            expected: None,
            actual: Some(Bytes::from_static(b"chat"))
        }
    );
    // Expected "chat", the server speaks "chap".
    let mut chap = vector("accept_conf_with_subprotocol");
    *chap.last_mut().unwrap() = b'p';
    let (err, _) = refused_handshake(no_reconnect().sub_protocol("chat"), &chap).await;
    assert!(matches!(err, ConnectError::SubProtocolMismatch { .. }));
}

/// PROTOCOL.md §1.4: no server may announce a buffer below 32 bytes. Such a client used
/// to connect and then refuse every message with `PayloadTooLarge { limit: 0 }`.
#[tokio::test]
async fn a_message_buffer_below_the_minimum_is_refused() {
    for size in [0, 31] {
        let first = accept_conf(60_000, size);
        let (err, code) = refused_handshake(no_reconnect(), &first).await;
        assert_eq!(
            err,
            ConnectError::MessageBufferTooSmall { size, minimum: 32 }
        );
        assert_eq!(code, Some(CloseCode::Protocol));
    }
    let script = Script::bind().await;
    let (client, mut ws) = connect_with(no_reconnect(), &script, &accept_conf(60_000, 32)).await;
    let (reply, ()) = within(async {
        tokio::join!(client.request("q", "x"), async {
            let id = recv_request(&mut ws).await.request_id().unwrap();
            send(&mut ws, &reply_vector("reply_binary", id)).await;
        })
    })
    .await;
    assert!(reply.is_ok(), "{reply:?}");
}

/// Accepts one upgrade and returns its `User-Agent` header.
async fn user_agent_of(builder: tokio_webwire::ClientBuilder) -> Option<String> {
    let script = Script::bind().await;
    let (client, (headers, _ws)) = within(async {
        tokio::join!(builder.connect(&script.url), script.accept_seeing_headers())
    })
    .await;
    client.expect("connects").close().await;
    headers
        .get("user-agent")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn the_upgrade_names_the_client_unless_the_application_does() {
    let ours = format!("tokio-webwire/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(user_agent_of(no_reconnect()).await, Some(ours));
    let theirs = no_reconnect().header("User-Agent", "chat/1.0");
    assert_eq!(user_agent_of(theirs).await.as_deref(), Some("chat/1.0"));
}

#[tokio::test]
async fn first_message_must_be_a_valid_accept_conf() {
    let (err, _) = refused_handshake(no_reconnect(), &vector("signal_utf8_named")).await;
    assert!(
        matches!(err, ConnectError::UnexpectedMessage { .. }),
        "{err}"
    );
    let (err, _) = refused_handshake(no_reconnect(), &vector("accept_conf_too_short")).await;
    assert!(
        matches!(err, ConnectError::InvalidHandshake { .. }),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn dial_timeout_covers_the_accept_conf() {
    let script = Script::bind().await;
    let builder = no_reconnect().dial_timeout(Duration::from_secs(2));
    let start = Instant::now();
    let (result, _ws) = within(async {
        tokio::join!(builder.connect(&script.url), async {
            // Upgrade, but never send the AcceptConf.
            let (tcp, _) = script.listener.accept().await.unwrap();
            tokio_tungstenite::accept_async(tcp).await.unwrap()
        })
    })
    .await;
    assert_eq!(
        result.unwrap_err(),
        ConnectError::Timeout {
            after: Duration::from_secs(2)
        }
    );
    assert!(start.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn refused_upgrade_reports_the_http_status() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let script = Script::bind().await;
    let (result, ()) = within(async {
        tokio::join!(no_reconnect().connect(&script.url), async {
            let (mut tcp, _) = script.listener.accept().await.unwrap();
            let mut buf = [0; 1024];
            let _ = tcp.read(&mut buf).await;
            let response = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
                            content-length: 20\r\n\r\nserver shutting down";
            tcp.write_all(response.as_bytes()).await.unwrap();
        })
    })
    .await;
    assert_eq!(result.unwrap_err(), ConnectError::Http { status: 503 });
}

#[tokio::test]
async fn upgrade_carries_extra_headers() {
    let script = Script::bind().await;
    let builder = no_reconnect()
        .header("Authorization", "Bearer t0ken")
        .header("Origin", "http://example.test");
    let (client, (headers, _ws)) = within(async {
        tokio::join!(builder.connect(&script.url), script.accept_seeing_headers())
    })
    .await;
    client.expect("connects");
    assert_eq!(headers["authorization"], "Bearer t0ken");
    assert_eq!(headers["origin"], "http://example.test");

    let err = no_reconnect()
        .header("Bad Header", "x")
        .connect(&script.url)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ConnectError::InvalidHeader {
            name: "Bad Header".into()
        }
    );
}

// ─── Requests and replies ───────────────────────────────────────────────────────────────

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
        let (reply, ()) = within(async {
            tokio::join!(client.request("q", "x"), async {
                let id = recv_request(&mut ws).await.request_id().unwrap();
                send(&mut ws, &reply_vector(name, id)).await;
            })
        })
        .await;
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
        let (reply, ()) = within(async {
            tokio::join!(client.request("q", "x"), async {
                let id = recv_request(&mut ws).await.request_id().unwrap();
                send(&mut ws, &reply_vector(name, id)).await;
            })
        })
        .await;
        assert_eq!(reply, Err(expected), "{name}");
    }
    assert!(client.is_connected());
    assert_eq!(client.pending_requests(), 0);
}

#[tokio::test]
async fn error_message_is_decoded_lossily() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    let (reply, ()) = within(async {
        tokio::join!(client.request("q", "x"), async {
            let id = recv_request(&mut ws).await.request_id().unwrap();
            let mut frame = vec![0x00];
            frame.extend_from_slice(id.as_bytes());
            frame.extend_from_slice(b"\x01Eok\xff");
            send(&mut ws, &frame).await;
        })
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
    let (reply, ()) = within(async {
        tokio::join!(client.request("q", "x"), async {
            let id = recv_request(&mut ws).await.request_id().unwrap();
            send(&mut ws, &reply_vector("reply_binary", RequestId::from(999))).await;
            send(
                &mut ws,
                &reply_vector("reply_shutdown", RequestId::from(1000)),
            )
            .await;
            send(&mut ws, &reply_vector("reply_utf16", id)).await;
            // A duplicate of the reply that was already delivered.
            send(&mut ws, &reply_vector("reply_utf16", id)).await;
        })
    })
    .await;
    assert_eq!(reply, Ok(Payload::utf16("hi")));
    // Still connected and working.
    let (reply, ()) = within(async {
        tokio::join!(client.request("q", "y"), async {
            let id = recv_request(&mut ws).await.request_id().unwrap();
            send(&mut ws, &reply_vector("reply_binary_empty", id)).await;
        })
    })
    .await;
    assert_eq!(reply, Ok(Payload::binary(Vec::new())));
}

#[tokio::test]
async fn unexpected_well_formed_messages_are_ignored() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    let (reply, ()) = within(async {
        tokio::join!(client.request("q", "x"), async {
            let id = recv_request(&mut ws).await.request_id().unwrap();
            for name in [
                "heartbeat",
                "request_utf8_named",
                "close_session_request",
                "accept_conf_defaults",
                "notify_session_closed",
            ] {
                send(&mut ws, &vector(name)).await;
            }
            send(&mut ws, &reply_vector("reply_binary", id)).await;
        })
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

// ─── Timeouts and cancellation ──────────────────────────────────────────────────────────

#[tokio::test(start_paused = true)]
async fn request_timeout_leaves_nothing_pending() {
    let script = Script::bind().await;
    let builder = no_reconnect().request_timeout(Duration::from_secs(3));
    let (client, mut ws) = connect_with(builder, &script, &vector("accept_conf_defaults")).await;
    let start = Instant::now();
    let (reply, id) = within(async {
        tokio::join!(client.request("slow", "x"), async {
            recv_request(&mut ws).await.request_id().unwrap()
        })
    })
    .await;
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
    let (reply, ()) = within(async {
        tokio::join!(
            client.request_with_timeout("q", "x", Duration::from_millis(10)),
            async {
                recv_request(&mut ws).await;
            }
        )
    })
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
    let (welcome, ()) = within(async {
        tokio::join!(
            client.request_json::<_, Welcome>("login", &Login { user: "bob" }),
            async {
                let id = recv_request(&mut ws).await.request_id().unwrap();
                send(&mut ws, &reply_vector("reply_binary", id)).await;
            }
        )
    })
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
    let (_, ()) = within(async {
        tokio::join!(
            client.request_with_timeout("q", "x", Duration::from_millis(1)),
            async {
                recv_request(&mut ws).await;
            }
        )
    })
    .await;
    assert_eq!(&within(recv(&mut ws)).await[..], b"\x21");
    assert_eq!(Instant::now(), at(14_500));
}

// ─── Disconnects and reconnects ─────────────────────────────────────────────────────────

#[tokio::test]
async fn malformed_frame_disconnects() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    let (reply, code) = within(async {
        tokio::join!(client.request("q", "x"), async {
            recv_request(&mut ws).await;
            send(&mut ws, &vector("reply_too_short")).await;
            close_code(&mut ws).await
        })
    })
    .await;
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
    assert_eq!(within(close_code(&mut ws)).await, Some(CloseCode::Away));
    assert_eq!(
        within(client.request("q", "x")).await,
        Err(RequestError::Disconnected)
    );
}

#[tokio::test]
async fn text_message_is_a_violation_too() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    ws.send(WsMessage::text("hello")).await.unwrap();
    assert_eq!(
        within(close_code(&mut ws)).await,
        Some(CloseCode::Unsupported)
    );
    assert_eq!(
        within(client.request("q", "x")).await,
        Err(RequestError::Disconnected)
    );
}

#[tokio::test]
async fn oversize_message_from_the_server_is_a_violation() {
    let script = Script::bind().await;
    let builder = no_reconnect().max_message_size(64);
    let (client, mut ws) = connect_with(builder, &script, &vector("accept_conf_defaults")).await;
    let mut signal = b"\x3f\x01s".to_vec();
    signal.resize(65, 0);
    send(&mut ws, &signal).await;
    assert_eq!(within(close_code(&mut ws)).await, Some(CloseCode::Size));
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
    let (reply, code) = within(async {
        tokio::join!(client.request("q", "x"), async {
            recv_request(&mut ws).await;
            send(&mut ws, &vector("unknown_type_200")).await;
            close_code(&mut ws).await
        })
    })
    .await;
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

// ─── Closing ────────────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn close_fails_pending_requests_and_every_later_call() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    let other_handle = client.clone();

    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.request("q", "x").await }
    });
    within(recv_request(&mut ws)).await;
    // A signal queued before the close still goes out, then a normal close frame.
    client.signal("bye", "x").await.unwrap();
    let (_, frames) = within(async {
        tokio::join!(client.close(), async {
            let mut frames = Vec::new();
            loop {
                match ws.next().await {
                    Some(Ok(WsMessage::Binary(frame))) => frames.push(frame),
                    Some(Ok(WsMessage::Close(frame))) => {
                        frames.push(Bytes::from(format!("close {:?}", frame.map(|f| f.code))));
                    }
                    Some(Ok(_)) => {}
                    _ => return frames,
                }
            }
        })
    })
    .await;
    assert_eq!(
        frames,
        [
            Bytes::from_static(b"\x40\x03byex"),
            Bytes::from(format!("close {:?}", Some(CloseCode::Normal)))
        ]
    );
    assert_eq!(
        within(pending).await.unwrap(),
        Err(RequestError::ClientClosed)
    );

    for client in [&client, &other_handle] {
        assert!(!client.is_connected());
        assert_eq!(client.server_conf(), None);
        assert_eq!(
            client.request("q", "x").await,
            Err(RequestError::ClientClosed)
        );
        assert_eq!(
            client
                .request_with_timeout("q", "x", Duration::from_secs(1))
                .await,
            Err(RequestError::ClientClosed)
        );
        assert_eq!(
            client.signal("q", "x").await,
            Err(RequestError::ClientClosed)
        );
        // Even invalid input: the client is closed first of all.
        assert_eq!(
            client.request("bad\n", "x").await,
            Err(RequestError::ClientClosed)
        );
        assert_eq!(client.pending_requests(), 0);
        within(client.close()).await;
    }
}

#[tokio::test]
async fn a_handler_may_close_the_client() {
    struct Closer(mpsc::UnboundedSender<()>);
    impl ClientHandler for Closer {
        async fn signal(&self, client: &Client, _: Name, _: Payload) {
            client.close().await;
            let _ = self.0.send(());
        }
    }
    let script = Script::bind().await;
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let builder = no_reconnect().handler(Closer(done_tx));
    let (client, mut ws) = connect_with(builder, &script, &vector("accept_conf_defaults")).await;
    send(&mut ws, &vector("signal_utf8_named")).await;
    assert_eq!(within(close_code(&mut ws)).await, Some(CloseCode::Normal));
    assert_eq!(within(done.recv()).await, Some(()));
    assert_eq!(
        client.signal("s", "x").await,
        Err(RequestError::ClientClosed)
    );
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() {
    let script = Script::bind().await;
    let (client, mut ws) = connect(&script).await;
    drop(client);
    assert_eq!(within(close_code(&mut ws)).await, Some(CloseCode::Normal));
}

// ─── Load ───────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_requests_from_eight_tasks() {
    let script = Script::bind().await;
    let (client, ws) = connect(&script).await;
    let server = tokio::spawn(echo(ws));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8 {
        let client = client.clone();
        tasks.spawn(async move {
            let requests = (0..125).map(|i| {
                let client = &client;
                async move {
                    let text = format!("task {task} request {i}");
                    let payload = if i % 3 == 0 {
                        Payload::utf16(&text)
                    } else {
                        Payload::utf8(text)
                    };
                    let reply = client.request("echo", payload.clone()).await;
                    assert_eq!(reply.as_ref(), Ok(&payload));
                }
            });
            futures_util::future::join_all(requests).await;
        });
    }
    within(async {
        while let Some(result) = tasks.join_next().await {
            result.expect("task succeeded");
        }
    })
    .await;
    assert_eq!(client.pending_requests(), 0);
    within(client.close()).await;
    within(server).await.unwrap();
}

/// A server that stops reading: the client drops the connection after its write timeout,
/// and what was in flight fails with `Disconnected` instead of waiting for the request
/// timeout.
#[tokio::test]
async fn a_server_that_stops_reading_is_dropped_after_the_write_timeout() {
    let script = Script::bind().await;
    let builder = no_reconnect()
        .write_timeout(Duration::from_millis(300))
        .request_timeout(Duration::from_secs(3600));
    let (client, _never_read) =
        connect_with(builder, &script, &accept_conf(60_000, 16 << 20)).await;
    // 64 MiB in all: more than the socket buffers take, so the writes wait.
    let requests: Vec<_> = (0..16)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .request("big", Payload::binary(vec![0; 4 << 20]))
                    .await
            })
        })
        .collect();
    for request in requests {
        let outcome = within(request).await.expect("the request task ends");
        assert!(
            matches!(outcome, Err(RequestError::Disconnected)),
            "{outcome:?}"
        );
    }
}
