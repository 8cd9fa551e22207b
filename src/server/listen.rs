//! The TCP side of the sockets the server accepts itself: listening with a backlog for
//! bursts of connections, and the options of an accepted socket.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs};

/// The backlog of [`bind`]: how many connections the system completes and holds for the
/// server before it accepts them.
///
/// tokio's `TcpListener::bind` uses 128, as the standard library does. A burst beyond the
/// backlog is not refused but slowed down: the system drops the connects that find it
/// full, and those clients send them again after one second, then after two more, and so
/// on.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Listens on `addr` with a backlog of [`DEFAULT_BACKLOG`] (1024) connections, for
/// [`Server::serve`](super::Server::serve).
///
/// Use it instead of tokio's `TcpListener::bind` (backlog 128) when many clients may
/// connect at once, for example all of them reconnecting after a restart. Like that one
/// it tries each address `addr` resolves to until one can be bound, and sets
/// `SO_REUSEADDR` on Unix, so that a restarted server can bind at once.
///
/// ```no_run
/// use tokio_webwire::server::{self, Server};
///
/// # async fn run() -> std::io::Result<()> {
/// let server = Server::new(());
/// server.serve(server::bind("0.0.0.0:8081").await?).await;
/// # Ok(()) }
/// ```
///
/// A failure names the address beside the system's reason, and keeps its kind:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let taken = tokio_webwire::server::bind("127.0.0.1:0").await?;
/// let addr = taken.local_addr()?;
/// let error = tokio_webwire::server::bind(addr).await.unwrap_err();
/// assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
/// assert_eq!(
///     error.to_string(),
///     format!("cannot listen on {addr}: Address already in use (os error 98)")
/// );
/// # Ok(()) }
/// ```
pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
    bind_with_backlog(addr, DEFAULT_BACKLOG).await
}

/// Listens on `addr`, as [`bind`] does, with a backlog of `backlog` connections.
///
/// The system may hold fewer: Linux caps the backlog at `net.core.somaxconn` (4096 since
/// Linux 5.4, 128 before), without an error.
///
/// ```
/// use tokio_webwire::server;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let listener = server::bind_with_backlog("127.0.0.1:0", 4096).await?; // any free port
/// assert!(listener.local_addr()?.port() != 0);
/// # Ok(()) }
/// ```
pub async fn bind_with_backlog(addr: impl ToSocketAddrs, backlog: u32) -> io::Result<TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match listen(addr, backlog) {
            Ok(listener) => return Ok(listener),
            // The address in the message (the system's says only "Address already in
            // use"); the kind is kept for callers that match on it.
            Err(error) => {
                last_error = Some(io::Error::new(
                    error.kind(),
                    format!("cannot listen on {addr}: {error}"),
                ));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

/// Binds and listens on one address.
fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As tokio's own bind: a restarted server binds at once although connections of its
    // predecessor linger in TIME_WAIT. Not on Windows, where the option would let another
    // socket take over a port in use.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The TCP keep-alive period of accepted sockets: the Go reference server's (PROTOCOL.md
/// §1.2). The first probe goes out after this long without traffic, then one per period.
const KEEPALIVE_PERIOD: Duration = Duration::from_secs(30);

/// Sets the options [`Server::serve`](super::Server::serve) gives the sockets it accepts:
/// `TCP_NODELAY` (replies are batched already: Nagle's algorithm would only delay them)
/// and TCP keep-alive with a 30 s period, as the Go reference server's.
///
/// For sockets accepted by someone else: an axum or hyper application that mounts the
/// server (`Server::upgrade`, feature `hyper`) or a headless accept loop
/// ([`Server::serve_connection`](super::Server::serve_connection)). The server cannot
/// reach those sockets itself. With axum 0.8, call it in the listener's
/// `axum::serve::ListenerExt::tap_io` (as `examples/axum` does); otherwise where the
/// socket is accepted:
///
/// ```no_run
/// # async fn run(server: tokio_webwire::server::Server<()>) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8081").await?;
/// loop {
///     let (socket, addr) = listener.accept().await?;
///     // Works without them, only less well: not worth refusing the client.
///     let _ = tokio_webwire::server::configure_socket(&socket);
///     server.serve_connection(socket, Some(addr));
/// }
/// # }
/// ```
pub fn configure_socket(socket: &TcpStream) -> io::Result<()> {
    // Replies are batched by the connection's driver: Nagle would only add delay.
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

    use super::configure_socket;

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
        configure_socket(&socket).expect("options set");
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
