//! The chat room for browsers: one axum router serves the page at `/`, the WebWire
//! JavaScript client (`js/webwire.js` of this repository) at `/webwire.js`, and the chat
//! room's WebWire server at `/ws`, all on one port, so the page needs no cross-origin
//! permission. `js/test/browser.test.js` drives it with headless Chromium.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use tokio_webwire::server::{Handler, Server};

use crate::mounted::{self, Mounted};

/// The page: log in, read and write messages, log out (`page/index.html`).
pub(crate) const PAGE: &str = include_str!("page/index.html");
/// The client module, embedded so that the example is one binary.
pub(crate) const CLIENT: &str = include_str!("../../js/webwire.js");

/// The router: page, module and WebWire endpoint.
fn router<H: Handler>(server: Server<H>) -> Router {
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
        .route("/ws", get(tokio_webwire::axum::upgrade::<H>))
        .with_state(server)
}

/// Binds `addr` and serves the router with `server` (see [`server::build`]) on it, in a
/// task of its own: the chat room served for browsers, running.
///
/// [`server::build`]: crate::server::build
pub(crate) async fn start<H: Handler>(
    addr: &str,
    server: Server<H>,
) -> std::io::Result<Mounted<H>> {
    mounted::serve(addr, server.clone(), router(server)).await
}

/// `--web`: serves the page and the chat room until `stop` (Ctrl-C), then shuts down
/// gracefully. Prints the page's URL on stdout (the browser test reads it).
pub(crate) async fn serve(
    addr: &str,
    server: Server<impl Handler>,
    stop: impl std::future::Future<Output = std::io::Result<()>>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let running = start(addr, server).await?;
    let local = running.addr;
    println!("http://{local}/ (WebWire at ws://{local}/ws)");
    stop.await?;
    running.shutdown().await;
    Ok(())
}
