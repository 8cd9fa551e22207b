//! Dead and slow peers: silent peers reaped by the read timeout, peers that stop reading by
//! the write timeout, with what the server accepted bounded.

use super::*;

/// Asserts that the server closed the connection for the read timeout: the event, then, in
/// the raw bytes the silent peer has still to read, the server's close frame (0x88,
/// unmasked) and the end of the stream.
async fn assert_reaped_by_the_read_timeout(
    events: &mut Events,
    silent: &mut (impl tokio::io::AsyncRead + Unpin),
) {
    assert_eq!(
        bounded(events.disconnected.recv()).await,
        Some(CloseReason::ReadTimeout)
    );
    let mut rest = Vec::new();
    bounded(silent.read_to_end(&mut rest))
        .await
        .expect("read to EOF");
    assert_eq!(rest.first(), Some(&0x88), "{rest:?}");
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_vanished_in_memory_is_reaped_by_the_read_timeout() {
    let (server, mut events, _addr) = start(|b| b.read_timeout(Duration::from_secs(2))).await;
    // The peer's end stays open but never reads or writes again.
    let (mut silent, _) = RawClient::connect_in_memory(&server, 4096).await;
    assert_reaped_by_the_read_timeout(&mut events, silent.ws.get_mut()).await;
    bounded(server.shutdown()).await;
}

#[tokio::test]
async fn a_silent_socket_is_reaped_by_the_read_timeout() {
    let (server, mut events, addr) = start(|b| b.read_timeout(Duration::from_secs(1))).await;
    let (mut silent, _) = RawClient::connect(addr).await;
    assert_reaped_by_the_read_timeout(&mut events, silent.ws.get_mut()).await;
    bounded(server.shutdown()).await;
}

/// The third field of a `/proc/sys/net/ipv4/tcp_[rw]mem` file: a socket buffer's maximum.
fn tcp_buffer_max(which: &str) -> usize {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/tcp_{which}"))
        .ok()
        .and_then(|text| text.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(32 << 20)
}

#[tokio::test]
async fn a_socket_that_stops_reading_is_reaped_by_the_write_timeout() {
    let queue = 8;
    let chunk = 60 * 1024;
    let (_server, mut events, addr) = start(|b| {
        b.write_timeout(Duration::from_secs(1))
            .outbound_queue_len(queue)
            .max_message_size(64 * 1024)
    })
    .await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let mut ws = common::websocket_over(socket, addr).await;
    assert!(matches!(
        bounded(ws.next()).await,
        Some(Ok(WsMessage::Binary(_)))
    ));
    // From here on the peer reads nothing.
    let conn = bounded(events.connected.recv()).await.expect("connected");
    let (sent, outcome) = common::flood(&conn, Payload::binary(vec![7u8; chunk])).await;
    assert_eq!(outcome, SendError::Closed);
    assert_eq!(
        bounded(events.disconnected.recv()).await,
        Some(CloseReason::WriteTimeout)
    );
    // Accepted: the queue, a batch in tungstenite's buffers, and what the kernel's socket
    // buffers took (at most their maximum sizes, both ends): bounded whatever the time.
    let kernel = tcp_buffer_max("wmem") + tcp_buffer_max("rmem");
    let bound = queue + 4 + kernel / chunk;
    println!("write timeout: {sent} signals of {chunk} bytes accepted (bound {bound})");
    assert!(sent <= bound, "{sent} signals accepted, bound {bound}");
    drop(ws);
}

/// A client whose one reply is stuck (the pipe holds 1 KiB, the reply 4 KB) and that then
/// neither reads nor sends: with the default timeouts it is dropped by the write timeout,
/// and a shutdown does not wait for it for ever.
#[tokio::test(start_paused = true)]
async fn a_silent_non_reader_is_dropped_by_the_write_timeout() {
    let (server, mut events, _addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect_in_memory(&server, 1024).await;
    client
        .send(request(1, "echo", Payload::binary(vec![7; 4000])))
        .await;
    let reason = tokio::time::timeout(Duration::from_secs(60), events.disconnected.recv())
        .await
        .expect("dropped within a minute");
    assert_eq!(reason, Some(CloseReason::WriteTimeout));
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_does_not_wait_for_a_non_reader() {
    let (server, _events, _addr) = start(|b| b).await;
    let (mut client, _) = RawClient::connect_in_memory(&server, 1024).await;
    client
        .send(request(1, "echo", Payload::binary(vec![7; 4000])))
        .await;
    tokio::time::timeout(Duration::from_secs(120), server.shutdown())
        .await
        .expect("the shutdown ends within its timeouts");
}

/// The server's end of an in-memory pipe that counts what the server reads and lets it
/// write only `budget` bytes, then never again: a client that stopped reading, seen from
/// the server.
struct Choke {
    inner: tokio::io::DuplexStream,
    budget: usize,
    read: Arc<std::sync::atomic::AtomicUsize>,
}

impl tokio::io::AsyncRead for Choke {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.read.fetch_add(read, Ordering::SeqCst);
        polled
    }
}

impl tokio::io::AsyncWrite for Choke {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let n = data.len().min(self.budget);
        if n == 0 {
            // Never woken: the peer never reads again.
            return std::task::Poll::Pending;
        }
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, &data[..n]);
        if let std::task::Poll::Ready(Ok(written)) = polled {
            self.budget -= written;
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A client that pipelines 8 KB requests (the first of which queues a signal ahead of the
/// inline replies) and reads nothing cannot make the server take in more than the
/// documented bound per connection.
#[tokio::test(start_paused = true)]
async fn a_non_reader_cannot_make_the_server_hold_more_than_the_bound() {
    let (server, _events, _addr) = start(|b| b).await;
    let bound = Server::builder(()).memory_per_connection();
    let (ours, theirs) = tokio::io::duplex(4 << 20);
    let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let choke = Choke {
        inner: theirs,
        budget: 1024,
        read: Arc::clone(&read),
    };
    server.serve_connection(choke, None);
    let (ws, _) = bounded(tokio_tungstenite::client_async("ws://in-memory/", ours))
        .await
        .expect("WebSocket handshake");
    let mut client = RawClient { ws };
    client.recv().await;
    client
        .ws
        .feed(WsMessage::Binary(request(1, "notify", Payload::utf8("x"))))
        .await
        .unwrap();
    for id in 2..=200 {
        let echo = request(id, "echo", Payload::binary(vec![7; 8000]));
        client.ws.feed(WsMessage::Binary(echo)).await.unwrap();
    }
    bounded(client.ws.flush()).await.unwrap();
    // Paused time moves on only when no task can run: the server has read all it will.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let read = read.load(Ordering::SeqCst);
    assert!(
        read <= bound,
        "the server read {read} bytes from a client that reads nothing (bound {bound})"
    );
}
