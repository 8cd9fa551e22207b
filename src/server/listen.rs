//! The TCP side of the sockets the server accepts itself.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// The TCP keep-alive period of accepted sockets: the Go reference server's (PROTOCOL.md
/// §1.2). The first probe goes out after this long without traffic, then one per period.
const KEEPALIVE_PERIOD: Duration = Duration::from_secs(30);

/// Sets the options of a socket [`Server::serve`](super::Server::serve) accepted.
pub(crate) fn configure_accepted(socket: &TcpStream) -> io::Result<()> {
    // Replies are batched by the writer: Nagle would only add delay.
    socket.set_nodelay(true)?;
    // As the reference server: the kernel finds a peer that vanished without a FIN (a host
    // gone, a NAT mapping dropped) on its own, also while a connection waits in its HTTP
    // upgrade or a client with a long read timeout is quiet, and idle NAT and firewall
    // mappings are kept alive.
    let keepalive = TcpKeepalive::new().with_time(KEEPALIVE_PERIOD);
    // Go sets the probe interval to the same period; not every system lets us.
    #[cfg(any(
        target_os = "android",
        target_os = "freebsd",
        target_os = "ios",
        target_os = "linux",
        target_os = "macos",
        target_os = "windows",
    ))]
    let keepalive = keepalive.with_interval(KEEPALIVE_PERIOD);
    SockRef::from(socket).set_tcp_keepalive(&keepalive)
}

#[cfg(test)]
mod tests {
    use socket2::SockRef;
    use tokio::net::{TcpListener, TcpStream};

    use super::configure_accepted;

    /// An accepted socket (and its peer, kept open).
    async fn accepted() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (peer, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (accepted.expect("accept").0, peer.expect("connect"))
    }

    #[tokio::test]
    async fn accepted_sockets_get_no_delay_and_keep_alive_every_30_s() {
        let (socket, _peer) = accepted().await;
        configure_accepted(&socket).expect("options set");
        let options = SockRef::from(&socket);
        assert!(socket.nodelay().expect("nodelay"));
        assert!(options.keepalive().expect("SO_KEEPALIVE"));
        #[cfg(target_os = "linux")]
        {
            // The test's own number, not the constant, so that a changed period is noticed.
            let period = std::time::Duration::from_secs(30);
            assert_eq!(options.tcp_keepalive_time().expect("TCP_KEEPIDLE"), period);
            assert_eq!(
                options.tcp_keepalive_interval().expect("TCP_KEEPINTVL"),
                period
            );
        }
    }
}
