//! A [`Server`] in an axum 0.8 router (feature `axum`): [`upgrade`] is the handler of the
//! WebWire route.
//!
//! The router hands the request to the server, which checks it, asks
//! [`Handler::before_upgrade`] (with the path, the headers and the extensions the router's
//! layers put on the request) and answers it; the connection then runs on the server's
//! tasks, with the server's limits, and [`Server::shutdown`] closes it (axum's own
//! WebSocket tasks escape `axum::serve`'s graceful shutdown, axum issue 3003). axum's `ws`
//! feature is not needed.
//!
//! ```no_run
//! use axum::{Router, routing::get, serve::ListenerExt};
//! use tokio_webwire::server::Server;
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = Server::new(()); // your Handler
//! let app = Router::new()
//!     .route("/", get(|| async { "a page" }))
//!     .route("/ws", get(tokio_webwire::axum::upgrade::<()>))
//!     .with_state(server.clone());
//! // axum accepts the sockets, so give them what `Server::serve` gives its own:
//! // TCP_NODELAY and keep-alive.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080")
//!     .await?
//!     .tap_io(|socket| {
//!         let _ = tokio_webwire::server::configure_socket(socket);
//!     });
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! The sockets are axum's: without `tap_io` and
//! [`configure_socket`](crate::server::configure_socket) they lack the `TCP_NODELAY` (a
//! reply may wait for an acknowledgement) and keep-alive of the server's own listener.
//!
//! With a state of your own, let the server be taken from it (`impl FromRef<AppState> for
//! Server<App>`). Serve the router with
//! `into_make_service_with_connect_info::<SocketAddr>()` for
//! [`Connection::remote_addr`](crate::server::Connection::remote_addr) to be known.

use std::net::SocketAddr;

use ::axum::extract::{ConnectInfo, Request, State};
use ::axum::response::Response;

use crate::server::{Handler, Server};

/// The axum handler that upgrades a request to a WebWire connection of `server`: route it
/// with `get(tokio_webwire::axum::upgrade::<H>)` on a router whose state holds the
/// [`Server`] (see the [module](self)). Answers as [`Server::upgrade`] does: 101, or the
/// refusal (400, 403, 426, 503, or `before_upgrade`'s status). The client's address comes
/// from axum's `ConnectInfo<SocketAddr>`, when the router is served with it.
pub async fn upgrade<H: Handler>(State(server): State<Server<H>>, request: Request) -> Response {
    let remote_addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    server.upgrade(request, remote_addr).await
}
