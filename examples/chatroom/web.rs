//! The chat room for browsers: one axum router serves the page at `/`, the WebWire
//! JavaScript client (`js/webwire.js` of this repository) at `/webwire.js`, and the chat
//! room's WebWire server at `/ws`, all on one port, so the page needs no cross-origin
//! permission. `js/test/browser.test.js` drives it with headless Chromium.

use std::net::SocketAddr;

use crate::server::ChatRoom;
use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_webwire::server::Server;

/// The page: log in, read and write messages, log out (`page/index.html`).
pub(crate) const PAGE: &str = include_str!("page/index.html");
/// The client module, embedded so that the example is one binary.
pub(crate) const CLIENT: &str = include_str!("../../js/webwire.js");

/// The router: page, module and WebWire endpoint.
fn router(server: Server<ChatRoom>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/webwire.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    CLIENT,
                )
                    .into_response()
            }),
        )
        .route("/ws", get(tokio_webwire::axum::upgrade::<ChatRoom>))
        .with_state(server)
}

/// The chat room served for browsers, running: its WebWire server and the HTTP task.
#[derive(Debug)]
pub(crate) struct Running {
    /// Where it listens (the port the system chose, for port 0).
    pub(crate) addr: SocketAddr,
    server: Server<ChatRoom>,
    stop_http: oneshot::Sender<()>,
    http: JoinHandle<()>,
}

/// Binds `addr` and serves the router with `server` (see [`server::build`]) on it, in a
/// task of its own.
pub(crate) async fn start(addr: &str, server: Server<ChatRoom>) -> std::io::Result<Running> {
    // The server's own bind: address reuse, so a restarted server gets its port back at
    // once, and a backlog for every client reconnecting at the same moment.
    let listener = tokio_webwire::server::bind(addr).await?;
    let addr = listener.local_addr()?;
    // axum accepts the sockets: give them what the server's own listener would.
    let listener = listener.tap_io(|socket| {
        let _ = tokio_webwire::server::configure_socket(socket);
    });
    let app = router(server.clone()).into_make_service_with_connect_info::<SocketAddr>();
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
    Ok(Running {
        addr,
        server,
        stop_http,
        http,
    })
}

impl Running {
    /// Shuts down gracefully: the WebWire connections first (axum does not wait for
    /// upgraded connections), then the HTTP server.
    pub(crate) async fn shutdown(self) {
        self.server.shutdown().await;
        let _ = self.stop_http.send(());
        let _ = self.http.await;
    }
}

/// `--web`: serves the page and the chat room until Ctrl-C, then shuts down gracefully.
/// Prints the page's URL on stdout (the browser test reads it).
pub(crate) async fn serve(
    addr: &str,
    server: Server<ChatRoom>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let running = start(addr, server).await?;
    let local = running.addr;
    println!("http://{local}/ (WebWire at ws://{local}/ws)");
    tokio::signal::ctrl_c().await?;
    running.shutdown().await;
    Ok(())
}
