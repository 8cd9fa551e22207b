//! Where connections come from: [`Server::serve`](crate::server::Server::serve) (the accept loop, also for `serve_tls`),
//! and headless, [`Server::serve_connection`](crate::server::Server::serve_connection) and [`Server::serve_websocket`](crate::server::Server::serve_websocket).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::http::Extensions;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::transport::{Role, Socket, close_frame};

use crate::server::connection::Peer;
use crate::server::{Handler, Server, driver, listen, upgrade};

impl<H: Handler> Server<H> {
    /// Accepts connections on `listener` until the server shuts down; every path of the
    /// HTTP endpoint leads to WebWire.
    ///
    /// The returned future owns what it needs, so it can be spawned. It completes when a
    /// shutdown has drained the handlers and starts closing the connections (until then a
    /// shutting-down server answers new HTTP requests with 503). Accept errors are logged
    /// and retried, never returned. Cancel safety: dropping the future only stops accepting.
    ///
    /// Accepted sockets get `TCP_NODELAY` (replies are batched already) and TCP keep-alive
    /// with a 30 s period, as the Go reference server's ([`configure_socket`](crate::server::configure_socket); sockets
    /// given to [`serve_connection`](Self::serve_connection) or accepted by a mounting
    /// application get them only if it calls that). For a listener that holds a burst
    /// of connections until they are accepted, see [`bind`](crate::server::bind).
    pub fn serve(&self, listener: TcpListener) -> impl Future<Output = ()> + Send + 'static {
        self.accept_loop(listener, |server, socket, remote_addr| {
            server.serve_connection(socket, Some(remote_addr));
        })
    }

    /// The accept loop of [`serve`](Self::serve) (and `serve_tls`): `serve_socket` starts
    /// serving each accepted socket.
    pub(crate) fn accept_loop<F>(
        &self,
        listener: TcpListener,
        serve_socket: F,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        F: Fn(&Self, TcpStream, SocketAddr) + Send + 'static,
    {
        let server = self.clone();
        // Counted until the listener is dropped, so that a shutdown returns with the port
        // free again (a restart on the same address can bind at once).
        let listening = self.shared.listeners.token();
        async move {
            // A server built outside a runtime joins the service's route now.
            server.shared.hub.start_backplane();
            let close_all = server.shared.close_all.clone();
            loop {
                let accepted = tokio::select! {
                    () = close_all.cancelled() => {
                        drop(listener);
                        drop(listening);
                        return;
                    }
                    accepted = listener.accept() => accepted,
                };
                match accepted {
                    Ok((socket, remote_addr)) => {
                        // The connection works without them, only less well.
                        if let Err(error) = listen::configure_socket(&socket) {
                            tracing::debug!(%error, "socket options not set");
                        }
                        serve_socket(&server, socket, remote_addr);
                    }
                    Err(error) if is_per_connection(&error) => {
                        tracing::debug!(%error, "accept failed");
                    }
                    Err(error) => {
                        // Out of file descriptors or memory: wait for connections to end
                        // instead of spinning.
                        tracing::warn!(%error, "accept failed, retrying in 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }

    /// Serves one accepted connection (headless mode): reads its HTTP upgrade request,
    /// asks [`Handler::before_upgrade`](crate::server::Handler::before_upgrade), upgrades it and serves it until it closes.
    /// Runs on its own task and is included in [`shutdown`](Self::shutdown). Counted
    /// against [`max_pending_upgrades`](crate::server::ServerBuilder::max_pending_upgrades) until it is
    /// upgraded: beyond it, `io` is closed at once.
    ///
    /// ```no_run
    /// # async fn run(server: tokio_webwire::server::Server<()>) -> std::io::Result<()> {
    /// // An accept loop of one's own, e.g. to limit connections per address first.
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
    /// loop {
    ///     let (socket, addr) = listener.accept().await?;
    ///     server.serve_connection(socket, Some(addr));
    /// }
    /// # }
    /// ```
    pub fn serve_connection<S>(&self, io: S, remote_addr: Option<SocketAddr>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let plain = |io| std::future::ready(Ok((io, Extensions::new())));
        self.serve_stream(io, plain, remote_addr);
    }

    /// Serves the socket `io` on a task of its own, included in
    /// [`shutdown`](Self::shutdown): `handshake` makes it the stream to upgrade (a TLS
    /// handshake; nothing for a plain socket), then the upgrade within the handshake
    /// timeout, then the driver. A socket not admitted ([`Admission`]: the pending limits,
    /// in all and per source) is dropped at once; one admitted may be closed later to make
    /// room, if it stays silent while the pool is full.
    ///
    /// `handshake` resolves to the stream and what it knows of itself (a `TlsInfo` after a
    /// TLS handshake; nothing for a plain socket): extensions the upgrade request gets
    /// before the checks and the hook, so one upgrade path serves every kind of stream.
    pub(crate) fn serve_stream<S, T, F, Fut>(
        &self,
        io: S,
        handshake: F,
        remote_addr: Option<SocketAddr>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: FnOnce(crate::server::admission::Counting<S>) -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<(T, Extensions)>> + Send + 'static,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Decided here, not in the task: the accept loop takes the next socket only after
        // this one's place is decided.
        let ticket = match self.shared.admission.admit(remote_addr) {
            Ok(ticket) => ticket,
            Err(refused) => {
                // Dropping `io` closes the socket before any TLS or HTTP work on it.
                tracing::debug!(?remote_addr, why = refused.as_str(), "socket closed");
                self.shared.metrics.upgrade_refused(None);
                return;
            }
        };
        let io = ticket.count(io);
        let shared = Arc::clone(&self.shared);
        let fut = async move {
            // Boxed while it runs: the upgrade's buffers do not stay in the connection's
            // task for its whole life.
            let upgrade = Box::pin(upgrade::upgrade(&shared, handshake(io), remote_addr));
            let upgraded = tokio::select! {
                upgraded = upgrade => upgraded,
                () = ticket.evicted() => {
                    shared.metrics.upgrade_refused(None);
                    None
                }
            };
            if upgraded.is_some() {
                ticket.upgraded();
            }
            drop(ticket);
            if let Some((ws, peer, place)) = upgraded {
                driver::serve(shared, ws, peer, place).await;
            }
        };
        self.shared.connections.spawn(fut);
    }

    /// Serves a WebSocket the program has already upgraded (headless mode, e.g. behind
    /// its own HTTP router) until it closes. `remote_addr` and `user_agent` are what
    /// [`Connection`](crate::server::Connection) reports. Runs on its own task and is included in
    /// [`shutdown`](Self::shutdown); during a shutdown the socket is closed at once
    /// with code 1001, and beyond [`max_connections`](crate::server::ServerBuilder::max_connections) with
    /// code 1013 (try again later).
    ///
    /// The server takes the stream under `ws` and does the WebSocket framing itself, with
    /// its own limits ([`max_message_size`](crate::server::ServerBuilder::max_message_size)): the
    /// `WebSocketStream`'s configuration is not used. Hand it over before reading from it:
    /// what it had read would be lost (a client sends nothing before the server's 101,
    /// RFC 6455 §4.1, so a stream fresh from the handshake holds nothing).
    pub fn serve_websocket<S>(
        &self,
        ws: WebSocketStream<S>,
        remote_addr: Option<SocketAddr>,
        user_agent: Option<&str>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let peer = Peer {
            remote_addr,
            user_agent: user_agent.map(Into::into),
            attached: Extensions::new(),
            // The application made the upgrade: the extension is not negotiated.
            topics_extension: false,
        };
        self.shared.connections.spawn(async move {
            let io = ws.into_inner();
            let frame = if shared.is_shutting_down() {
                close_frame(CloseCode::Away, "server shutting down")
            } else if let Some(place) = shared.places.try_take(remote_addr) {
                driver::serve(shared, (io, BytesMut::new()), peer, place).await;
                return;
            } else {
                close_frame(CloseCode::Again, "too many connections")
            };
            let config = &shared.config;
            let socket = Socket::new(
                io,
                BytesMut::new(),
                Role::Server,
                config.max_message_size,
                config.write_timeout,
            );
            // The close frame only: no wait for the answer.
            socket.close(frame, Duration::ZERO).await;
        });
    }
}

/// An accept error that concerns only the connection being accepted.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}
