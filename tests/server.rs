//! The server's requests, signals, limits and timeouts over real sockets on 127.0.0.1
//! (in-memory pipes where time is paused), driven by a raw WebSocket client that sends
//! and checks bytes (the golden vectors), so these tests do not depend on our client.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::probe::{Events, parse, request, start};
use common::{RawClient, bounded, unhex, vector};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_webwire::Payload;
use tokio_webwire::protocol::{Message, Name, RequestId};
use tokio_webwire::server::{CloseReason, SendError};

#[tokio::test]
async fn handshake_is_accept_conf_first() {
    let (_server, _events, addr) = start(|b| b).await;
    let (_client, accept_conf) = RawClient::connect(addr).await;
    assert_eq!(&accept_conf[..], &vector("accept_conf_defaults")[..]);

    let (_server, _events, addr) = start(|b| {
        b.read_timeout(Duration::from_secs(3))
            .max_message_size(1024)
            .sub_protocol("chat")
    })
    .await;
    let (_client, accept_conf) = RawClient::connect(addr).await;
    assert_eq!(
        &accept_conf[..],
        &vector("accept_conf_with_subprotocol")[..]
    );
}

#[tokio::test]
async fn echo_in_every_encoding_named_and_unnamed() {
    let (_server, _events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;
    let requests = [
        "request_binary_named",
        "request_binary_payload_only",
        "request_utf8_named",
        "request_utf8_name_only",
        "request_utf16_even_name",
        "request_utf16_odd_name_padded",
        "request_utf16_unnamed",
        "request_utf16_odd_name_only_padded",
        "request_utf16_even_name_only",
        "request_utf16_padding_value_ignored",
        "request_binary_name_255_no_payload",
        "diagram_example_request_utf8",
    ];
    for name in requests {
        let frame = Bytes::from(vector(name));
        let sent = parse(frame.clone());
        client.send(frame).await;
        let reply = parse(client.recv().await);
        let expected = Message::reply(sent.request_id().unwrap(), sent.payload().unwrap());
        assert_eq!(reply, expected, "echo of {name}");
    }
    // Byte for byte, the padding byte of a UTF-16 reply included.
    client.send(vector("request_utf16_even_name")).await;
    assert_eq!(
        &client.recv().await[..],
        &unhex("c101000000000000000061006200")[..]
    );
}

#[tokio::test]
async fn error_replies_hide_internal_errors() {
    let (_server, _events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;

    client.send(request(1, "fail", Payload::empty())).await;
    assert_eq!(&client.recv().await[..], &vector("reply_error")[..]);

    for (id, name) in [
        (2, "internal"),
        (3, "panic"),
        (4, "odd16"),
        (6, "big"),
        (7, "bigerror"),
    ] {
        client.send(request(id, name, Payload::utf8("x"))).await;
        let reply = parse(client.recv().await);
        assert_eq!(
            reply,
            Message::ReplyInternalError {
                id: RequestId::from(id)
            },
            "{name} becomes an internal error"
        );
    }
    // The connection survived the panic.
    assert_eq!(
        echo(&mut client, 5, "alive").await,
        Message::reply(RequestId::from(5), Payload::utf8("alive"))
    );
}

#[tokio::test]
async fn hundred_concurrent_requests_each_answered_once_with_its_id() {
    let (_server, _events, addr) = start(|b| b.max_concurrent_requests(100)).await;
    let (mut client, _) = RawClient::connect(addr).await;
    for id in 1..=100u64 {
        let payload = Payload::binary(id.to_le_bytes().to_vec());
        client.send(request(id, "barrier", payload)).await;
    }
    // The barrier only opens when all 100 handlers run at once.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let reply = parse(client.recv().await);
        let id = reply.request_id().unwrap();
        assert_eq!(
            &reply.payload().unwrap().data[..],
            &id.to_u64().to_le_bytes()
        );
        assert!(seen.insert(id.to_u64()), "{id} answered twice");
    }
    assert_eq!(seen.len(), 100);
}

#[tokio::test]
async fn a_slow_request_does_not_hold_up_others() {
    let (server, mut events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;
    client.send(request(1, "gate", Payload::utf8("slow"))).await;
    bounded(events.entered.recv()).await;
    client.send(request(2, "echo", Payload::utf8("fast"))).await;
    client.send(vector("signal_binary_named")).await;
    assert_eq!(
        parse(client.recv().await).request_id(),
        Some(RequestId::from(2))
    );
    let (name, payload) = bounded(events.signals.recv()).await.unwrap();
    assert_eq!(
        (name.as_str(), &payload.data[..]),
        ("event", &[1u8, 2, 3][..])
    );
    server.handler().gate.add_permits(1);
    assert_eq!(
        parse(client.recv().await).request_id(),
        Some(RequestId::from(1))
    );
}

/// With one slot, every message waits its turn, session requests too: nothing sent after
/// a suspended request is answered before it.
#[tokio::test]
async fn one_slot_means_requests_in_order() {
    let (server, mut events, addr) = start(|b| b.max_concurrent_requests(1)).await;
    let (mut client, _) = RawClient::connect(addr).await;
    client
        .send(request(1, "gate", Payload::utf8("first")))
        .await;
    client
        .send(request(2, "echo", Payload::utf8("second")))
        .await;
    bounded(events.entered.recv()).await;
    let restore = Message::RequestRestoreSession {
        id: RequestId::from(3),
        key: Bytes::from_static(b"no-such-session"),
    };
    client.send(restore.encode().unwrap()).await;
    let close = Message::RequestCloseSession {
        id: RequestId::from(4),
    };
    client.send(close.encode().unwrap()).await;
    // A round trip on another connection gives the server time to read the first one's
    // later requests, were it reading.
    let (mut other, _) = RawClient::connect(addr).await;
    other.send(request(9, "echo", Payload::empty())).await;
    other.recv().await;
    server.handler().gate.add_permits(1);
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(parse(client.recv().await).request_id());
    }
    assert_eq!(
        order,
        [1, 2, 3, 4].map(|id| Some(RequestId::from(id))),
        "answered out of order"
    );
}

#[tokio::test]
async fn server_signals_reach_the_client() {
    let (_server, mut events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;
    // From inside a request handler, before its reply.
    client
        .send(request(1, "notify", Payload::utf8("hi there")))
        .await;
    assert_eq!(
        parse(client.recv().await),
        Message::signal(Name::from_static("news"), Payload::utf8("hi there"))
    );
    assert_eq!(
        parse(client.recv().await).request_id(),
        Some(RequestId::from(1))
    );
    // From any task, through a stored connection.
    let conn = bounded(events.connected.recv()).await.unwrap();
    tokio::spawn(async move { conn.signal("chat", Payload::utf8("hi there")).await });
    assert_eq!(&client.recv().await[..], &vector("signal_utf8_named")[..]);
}

#[tokio::test]
async fn signals_the_client_would_reject_are_refused() {
    let (_server, mut events, addr) = start(|b| b.max_message_size(64)).await;
    let (_client, _) = RawClient::connect(addr).await;
    let conn = bounded(events.connected.recv()).await.unwrap();
    assert!(matches!(
        conn.signal("", Payload::empty()).await,
        Err(SendError::Invalid(_))
    ));
    assert!(matches!(
        conn.signal("a", Payload::utf16("")).await,
        Err(SendError::Invalid(_))
    ));
    assert!(matches!(
        conn.signal("bad\nname", Payload::utf8("x")).await,
        Err(SendError::Invalid(_))
    ));
    assert_eq!(
        conn.signal("big", Payload::binary(vec![0u8; 60])).await,
        Err(SendError::TooLarge { len: 65, limit: 64 })
    );
}

#[tokio::test]
async fn bad_input_closes_with_the_matching_code() {
    let (_server, mut events, addr) = start(|b| b).await;
    let cases: [(&str, WsMessage, CloseCode); 6] = [
        (
            "malformed",
            WsMessage::binary(vector("request_name_flag_exceeds_data")),
            CloseCode::Protocol,
        ),
        (
            "unknown type",
            WsMessage::binary(vector("unknown_type_200")),
            CloseCode::Protocol,
        ),
        ("empty", WsMessage::binary(Vec::new()), CloseCode::Protocol),
        (
            "strict name",
            WsMessage::binary(vector("signal_name_control_char_parser_accepts")),
            CloseCode::Protocol,
        ),
        ("text", WsMessage::text("hello"), CloseCode::Unsupported),
        (
            "too large",
            WsMessage::binary(vec![0x3f; 8193]),
            CloseCode::Size,
        ),
    ];
    for (what, message, code) in cases {
        let (mut client, _) = RawClient::connect(addr).await;
        bounded(futures_util::SinkExt::send(&mut client.ws, message))
            .await
            .unwrap();
        let frame = client
            .closed()
            .await
            .unwrap_or_else(|| panic!("{what}: no close frame"));
        assert_eq!(frame.code, code, "{what}");
        let reason = bounded(events.disconnected.recv()).await.unwrap();
        assert!(
            matches!(reason, CloseReason::ProtocolViolation(_)),
            "{what}: {reason:?}"
        );
    }
    // A message of exactly the limit is fine.
    let (mut client, _) = RawClient::connect(addr).await;
    let mut exact = vec![0x3fu8, 0];
    exact.resize(8192, b'x');
    client.send(exact).await;
    echo_answered(&mut client, 1, "still here").await;
}

#[tokio::test]
async fn client_bound_messages_are_ignored_and_pings_answered() {
    let (_server, _events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;
    for name in [
        "reply_binary",
        "accept_conf_defaults",
        "notify_session_closed",
        "reply_shutdown",
    ] {
        client.send(vector(name)).await;
    }
    bounded(futures_util::SinkExt::send(
        &mut client.ws,
        WsMessage::Ping(Bytes::from_static(b"p")),
    ))
    .await
    .unwrap();
    assert_eq!(
        client.next().await,
        Some(WsMessage::Pong(Bytes::from_static(b"p")))
    );
    echo_answered(&mut client, 9, "ok").await;
}

#[tokio::test]
async fn session_requests_are_refused_while_sessions_are_disabled() {
    let (_server, _events, addr) = start(|b| b.sessions(false)).await;
    let (mut client, _) = RawClient::connect(addr).await;
    client
        .answered_vector("restore_session_request", "reply_sessions_disabled")
        .await;
    client
        .answered_vector("close_session_request", "reply_sessions_disabled")
        .await;
}

/// Sends an echo request `id` of `text` from `client`; returns the server's answer.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut RawClient<S>,
    id: u64,
    text: &str,
) -> Message {
    client.send(request(id, "echo", Payload::utf8(text))).await;
    parse(client.recv().await)
}

/// `client` is still served: its echo request `id` of `text` is answered.
async fn echo_answered<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut RawClient<S>,
    id: u64,
    text: &str,
) {
    let answer = echo(client, id, text).await;
    assert_eq!(answer.request_id(), Some(RequestId::from(id)));
}

/// Waits for `client` to be closed by the 2 s read timeout, 2 to 2.2 s from now.
async fn closed_for_silence(client: &mut RawClient<tokio::io::DuplexStream>, events: &mut Events) {
    let silent_from = tokio::time::Instant::now();
    let frame = client.closed().await.expect("close frame");
    assert_eq!(frame.code, CloseCode::Normal);
    assert_eq!(frame.reason, "read timeout");
    let elapsed = silent_from.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed <= Duration::from_millis(2200),
        "{elapsed:?}"
    );
    assert_eq!(
        bounded(events.disconnected.recv()).await,
        Some(CloseReason::ReadTimeout)
    );
}

#[tokio::test(start_paused = true)]
async fn read_timeout_closes_a_silent_connection_and_heartbeats_keep_it_open() {
    let (server, mut events, _addr) = start(|b| b.read_timeout(Duration::from_secs(2))).await;

    // Checked every tenth of the timeout: it fires between 2 and 2.2 s of silence.
    let (mut quiet, _) = RawClient::connect_in_memory(&server, 4096).await;
    closed_for_silence(&mut quiet, &mut events).await;

    // Silence that starts between two checks still ends within 1.1 T (the checks are
    // 200 ms apart; a coarser check, every 500 ms, would take up to 2.5 s).
    let (mut late, _) = RawClient::connect_in_memory(&server, 4096).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    late.send(vector("heartbeat")).await;
    closed_for_silence(&mut late, &mut events).await;

    let (mut chatty, _) = RawClient::connect_in_memory(&server, 4096).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        chatty.send(vector("heartbeat")).await;
    }
    // Pings count as activity too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    bounded(futures_util::SinkExt::send(
        &mut chatty.ws,
        WsMessage::Ping(Bytes::new()),
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    echo_answered(&mut chatty, 1, "after 10.5 s").await;
}

#[tokio::test]
async fn a_heartbeat_flood_is_harmless() {
    let (_server, _events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;
    for _ in 0..20_000 {
        futures_util::SinkExt::feed(&mut client.ws, WsMessage::binary(vec![0x21]))
            .await
            .unwrap();
    }
    assert_eq!(
        echo(&mut client, 1, "after the flood").await,
        Message::reply(RequestId::from(1), Payload::utf8("after the flood"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let queue = 8;
    let (server, mut events, _addr) = start(|b| {
        b.write_timeout(Duration::from_secs(5))
            .outbound_queue_len(queue)
            .max_message_size(64 * 1024)
    })
    .await;
    let pipe = 64 * 1024;
    let (_silent, _) = RawClient::connect_in_memory(&server, pipe).await;
    let conn = bounded(events.connected.recv()).await.unwrap();
    let (sent, outcome) = common::flood(&conn, Payload::binary(vec![7u8; 60 * 1024])).await;
    assert_eq!(outcome, SendError::Closed);
    assert_eq!(
        bounded(events.disconnected.recv()).await,
        Some(CloseReason::WriteTimeout)
    );
    // What was accepted is the queue, one batch in tungstenite's write buffer and what the
    // pipe took: bounded by configuration, however long the server kept trying.
    let bound = queue + 4 + pipe / (60 * 1024);
    assert!(sent <= bound, "{sent} signals accepted, bound {bound}");
}

#[tokio::test]
async fn a_panicking_signal_handler_leaves_the_connection_alive() {
    let (_server, mut events, addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect(addr).await;
    client
        .send(
            Message::signal(Name::from_static("panic"), Payload::utf8("boom"))
                .encode()
                .unwrap(),
        )
        .await;
    client.send(vector("signal_binary_unnamed")).await;
    let (name, payload) = bounded(events.signals.recv()).await.unwrap();
    assert!(name.is_empty());
    assert_eq!(&payload.data[..], b"\xff");
}
