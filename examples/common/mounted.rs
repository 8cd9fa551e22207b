//! A WebWire server mounted in an axum router, serving: what the `axum` and `chatroom`
//! examples share (no example itself: no `main.rs`). Each includes it with
//! `#[path = "../common/mounted.rs"]`, as do their tests.

use std::net::SocketAddr;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_webwire::server::{Handler, Server};

/// The router serving on its port: the WebWire server mounted in it, and the HTTP task.
#[derive(Debug)]
pub(crate) struct Mounted<H> {
    /// Where it listens (the port the system chose, for port 0).
    pub(crate) addr: SocketAddr,
    pub(crate) server: Server<H>,
    stop_http: oneshot::Sender<()>,
    http: JoinHandle<()>,
}

/// Binds `addr` and serves `router` (in which `server` is mounted) on it, in a task of
/// its own.
pub(crate) async fn serve<H: Handler>(
    addr: &str,
    server: Server<H>,
    router: Router,
) -> std::io::Result<Mounted<H>> {
    // The server's own bind: address reuse, so a restarted server gets its port back at
    // once, and a backlog for every client reconnecting at the same moment.
    let listener = tokio_webwire::server::bind(addr).await?;
    let addr = listener.local_addr()?;
    // The sockets are axum's: give them what the server's own listener sets (no Nagle
    // delay on replies, TCP keep-alive). Without them a connection works, only less well.
    let listener = listener.tap_io(|socket| {
        let _ = tokio_webwire::server::configure_socket(socket);
    });
    // With the client's address, for `Connection::remote_addr`.
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let (stop_http, stopped) = oneshot::channel::<()>();
    let http = tokio::spawn(async move {
        let stopped = async move {
            let _ = stopped.await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(%error, "HTTP server failed");
        }
    });
    Ok(Mounted {
        addr,
        server,
        stop_http,
        http,
    })
}

impl<H: Handler> Mounted<H> {
    /// Shuts down gracefully: WebWire first (upgrades get 503 meanwhile, requests in
    /// flight are answered, connections closed), then the HTTP server. The WebWire
    /// connections are the server's: axum's graceful shutdown does not wait for upgraded
    /// connections.
    pub(crate) async fn shutdown(self) {
        self.server.shutdown().await;
        let _ = self.stop_http.send(());
        let _ = self.http.await;
    }
}
