//! Mounted in an HTTP application (feature `hyper`): the application's router takes the
//! HTTP request, [`Server::upgrade`] checks it and answers it, and the upgraded connection
//! is served as any other.
//!
//! ```text
//! hyper / axum ─► router ─► Server::upgrade(request) ─► upgrade::check, OnUpgrade?, upgrade::accept (before_upgrade, place)
//!                                 │                       └─► 101 (or the refusal) back to the router
//!                                 └─► task on the server's tracker: hyper's OnUpgrade ─► WebSocket ─► driver
//! ```
//!
//! The connection's task is tracked by the server, so [`Server::shutdown`] closes it like
//! any other (axum's own WebSocket tasks are not tracked by `axum::serve`'s graceful
//! shutdown: axum issue 3003).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Request, Response, header};

use crate::server::metrics::Metrics;
use crate::server::upgrade::{self, Accepted, Refusal};
use crate::server::{Handler, Server, driver};

impl<H: Handler> Server<H> {
    /// Upgrades an HTTP request that a hyper 1 (or axum) application's router hands over,
    /// and returns the response to send: `101 Switching Protocols`, after which the
    /// connection is served on a task of its own, or the refusal.
    ///
    /// The request is checked exactly as on the server's own listener (400 when it is not
    /// a WebSocket upgrade or has no `Host` or more than one, which hyper lets through,
    /// 426 for a version other than 13, 403 for a foreign `Origin`,
    /// 503 while shutting down or at
    /// [`max_connections`](crate::server::ServerBuilder::max_connections)), then
    /// [`Handler::before_upgrade`] sees its path, headers and extensions (what the
    /// application's layers put there). A connection's place is taken after the hook, so
    /// an upgrade whose hook ran while the last place went to another is answered 503
    /// too. The hook is bounded by the
    /// [`handshake_timeout`](crate::server::ServerBuilder::handshake_timeout) (503 after
    /// it), and so is hyper's hand-over of the socket after the 101. The connection is
    /// part of the server's [`shutdown`](Self::shutdown), and has the server's limits
    /// (message size, connections, timeouts), except
    /// [`max_upgrade_request_size`](crate::server::ServerBuilder::max_upgrade_request_size):
    /// hyper reads the head, within its own limit (`http1::Builder::max_buf_size`).
    /// `remote_addr` is what [`Connection::remote_addr`](crate::server::Connection::remote_addr)
    /// reports. The socket is the application's, so it lacks the `TCP_NODELAY` and TCP
    /// keep-alive that [`serve`](Self::serve) sets: call
    /// [`configure_socket`](crate::server::configure_socket) where it is accepted (with
    /// axum, in the listener's `tap_io`).
    ///
    /// The response's body type is the application's (`String`, `Full<Bytes>`, axum's
    /// `Body`, ...): anything made from a `&'static str`. hyper must serve the HTTP
    /// connection `with_upgrades()`; a request that did not come through hyper's HTTP/1.1
    /// server (which gives it its `OnUpgrade`) is answered with 500, without asking the
    /// hook.
    ///
    /// ```no_run
    /// use std::convert::Infallible;
    /// use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
    /// use hyper_util::rt::TokioIo;
    /// use tokio_webwire::server::Server;
    ///
    /// # async fn run(server: Server<()>) -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    /// loop {
    ///     let (socket, addr) = listener.accept().await?;
    ///     // What `serve` sets on its own sockets: hyper's are the application's.
    ///     let _ = tokio_webwire::server::configure_socket(&socket);
    ///     let server = server.clone();
    ///     let service = service_fn(move |request: Request<Incoming>| {
    ///         let server = server.clone();
    ///         async move {
    ///             Ok::<_, Infallible>(match request.uri().path() {
    ///                 "/ws" => server.upgrade(request, Some(addr)).await,
    ///                 _ => Response::new(String::from("hello")),
    ///             })
    ///         }
    ///     });
    ///     tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(socket), service).with_upgrades());
    /// }
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
    pub fn upgrade<B, R>(
        &self,
        request: Request<B>,
        remote_addr: Option<SocketAddr>,
    ) -> impl Future<Output = Response<R>> + Send + 'static
    where
        R: From<&'static str>,
    {
        // The body (empty for an upgrade) is dropped here, so the future does not depend
        // on its type.
        let (parts, _body) = request.into_parts();
        let mut head = Request::from_parts(parts, ());
        // hyper's hand-over of the socket; not for the hook, nor for the connection.
        let on_upgrade = head.extensions_mut().remove::<OnUpgrade>();
        let shared = Arc::clone(&self.shared);
        async move {
            // Counted among the server's connections from before the checks until the
            // connection's task is spawned (and so counted itself): a shutdown does not
            // return between a 101 decided here and the task that serves it.
            let _tracked = shared.connections.token();
            let response = match upgrade::check(&shared, &head) {
                Ok(response) => response,
                Err(refused) => return refusal(&shared.metrics, &refused),
            };
            // Before the hook: a request hyper cannot upgrade neither runs it nor takes a
            // place. (hyper gives upgrade requests only their `OnUpgrade`, so this comes
            // after the check that it is one.)
            let Some(on_upgrade) = on_upgrade else {
                tracing::warn!(
                    "upgrade request without hyper's OnUpgrade: not served by a hyper 1 HTTP/1.1 server"
                );
                return refusal(
                    &shared.metrics,
                    &Refusal::new(hyper::StatusCode::INTERNAL_SERVER_ERROR, ""),
                );
            };
            let asked = upgrade::accept(&shared, head, response, remote_addr);
            let Some(accepted) = upgrade::bounded(&shared, asked).await else {
                // Abandoned at the handshake timeout, or by a shutdown.
                return refusal(
                    &shared.metrics,
                    if shared.is_shutting_down() {
                        &Refusal::SHUTTING_DOWN
                    } else {
                        &Refusal::TIMED_OUT
                    },
                );
            };
            let Accepted {
                response,
                peer,
                place,
            } = match accepted {
                Ok(accepted) => accepted,
                Err(refused) => return refusal(&shared.metrics, &refused),
            };
            let task_shared = Arc::clone(&shared);
            shared.connections.spawn(async move {
                let shared = task_shared;
                // hyper hands the socket over once it has sent the 101.
                let upgraded = match upgrade::bounded(&shared, on_upgrade).await {
                    Some(Ok(upgraded)) => upgraded,
                    Some(Err(error)) => {
                        tracing::debug!(%error, "upgrade failed after the 101");
                        return;
                    }
                    None => return,
                };
                // hyper replays what it read past the request itself.
                let io = TokioIo::new(upgraded);
                driver::serve(shared, (io, BytesMut::new()), peer, place).await;
            });
            response.map(|()| R::from(""))
        }
    }
}

/// The HTTP response for a request that is not upgraded: the one answer of every refusal
/// of a mounted server (upgrade.rs's `respond` is for sockets of ours), so counted here.
fn refusal<R: From<&'static str>>(metrics: &Metrics, refusal: &Refusal) -> Response<R> {
    metrics.upgrade_refused(Some(refusal.status));
    let mut response = Response::new(R::from(refusal.body));
    *response.status_mut() = refusal.status;
    let headers = response.headers_mut();
    for (name, value) in refusal.headers {
        // Written as HTTP/1.1 writes them (`Sec-WebSocket-Version`), stored in lower case.
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    if !refusal.body.is_empty() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    response
}
