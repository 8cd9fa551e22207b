//! Closing: by the application, by a handler, by dropping every handle.

use super::*;

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
