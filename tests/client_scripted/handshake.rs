//! The handshake: AcceptConf, versions, sub-protocols, the upgrade request and its refusals.

use super::*;

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
    let reply = answered_with(client.request("q", "x"), &mut ws, "reply_binary").await;
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
