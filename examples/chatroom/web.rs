//! The chat room for browsers: one axum router serves the page at `/`, the WebWire
//! JavaScript client (`js/webwire.js` of this repository) at `/webwire.js`, and the chat
//! room's WebWire server at `/ws`, all on one port, so the page needs no cross-origin
//! permission. `js/test/browser.test.js` drives it with headless Chromium.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use tokio_webwire::server::Server;

use crate::mounted::{self, Mounted};
use crate::server::ChatRoom;

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
pub(crate) type Running = Mounted<ChatRoom>;

/// Binds `addr` and serves the router with `server` (see [`server::build`]) on it, in a
/// task of its own.
///
/// [`server::build`]: crate::server::build
pub(crate) async fn start(addr: &str, server: Server<ChatRoom>) -> std::io::Result<Running> {
    mounted::serve(addr, server.clone(), router(server)).await
}

/// `--web`: serves the page and the chat room until `stop` (Ctrl-C), then shuts down
/// gracefully. Prints the page's URL on stdout (the browser test reads it).
pub(crate) async fn serve(
    addr: &str,
    server: Server<ChatRoom>,
    stop: impl std::future::Future<Output = std::io::Result<()>>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let running = start(addr, server).await?;
    let local = running.addr;
    println!("http://{local}/ (WebWire at ws://{local}/ws)");
    stop.await?;
    running.shutdown().await;
    Ok(())
}
