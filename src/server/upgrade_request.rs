//! [`UpgradeRequest`]: what [`Handler::before_upgrade`](crate::server::Handler::before_upgrade)
//! sees of an HTTP upgrade, and the data it attaches to the connection.

use std::fmt;
use std::net::SocketAddr;

use tokio_tungstenite::tungstenite::http::{Extensions, HeaderMap, HeaderName, Request, Uri};

/// An HTTP upgrade request on its way to becoming a WebWire connection, as
/// [`Handler::before_upgrade`](crate::server::Handler::before_upgrade) sees it.
///
/// It holds the request's head (method, path, headers) and its
/// [`extensions`](Self::extensions): for sockets the server reads itself what the stream
/// knows (over TLS, the handshake's `TlsInfo`: client certificates, SNI, ALPN), and
/// whatever the HTTP stack put there for requests a hyper or axum application hands over
/// (an auth layer's user, axum's `ConnectInfo`). The hook may [`attach`](Self::attach)
/// typed data to the connection it is deciding about; every later hook reads it with
/// [`Connection::get`](crate::server::Connection::get).
///
/// ```
/// use tokio_webwire::http::{Request, StatusCode};
/// use tokio_webwire::server::UpgradeRequest;
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct User(String);
///
/// /// What a `before_upgrade` hook might do: a user from a header, or a refusal.
/// fn authenticate(request: &mut UpgradeRequest) -> Result<(), StatusCode> {
///     let user = request
///         .headers()
///         .get("x-user")
///         .and_then(|value| value.to_str().ok())
///         .ok_or(StatusCode::UNAUTHORIZED)?;
///     request.attach(User(user.to_owned()));
///     Ok(())
/// }
///
/// let http = Request::get("/ws").header("x-user", "alice").body(()).unwrap();
/// let mut request = UpgradeRequest::new(http, None);
/// assert_eq!(authenticate(&mut request), Ok(()));
/// assert_eq!(request.attached().get::<User>(), Some(&User("alice".into())));
/// ```
pub struct UpgradeRequest {
    request: Request<()>,
    remote_addr: Option<SocketAddr>,
    attached: Extensions,
}

impl fmt::Debug for UpgradeRequest {
    /// The header names only, and the path without its query: `Cookie`, `Authorization`
    /// and tokens in a query (browsers cannot set headers on a WebSocket) stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers().keys().map(HeaderName::as_str).collect();
        f.debug_struct("UpgradeRequest")
            .field("method", self.request.method())
            .field("path", &self.uri().path())
            .field("header_names", &header_names)
            .field("remote_addr", &self.remote_addr)
            .field("extensions", &self.extensions().len())
            .field("attached", &self.attached.len())
            .finish()
    }
}

impl UpgradeRequest {
    /// An upgrade request from `request`'s head and the client's address (e.g. to test a
    /// handler's `before_upgrade`).
    #[must_use]
    pub fn new(request: Request<()>, remote_addr: Option<SocketAddr>) -> Self {
        UpgradeRequest {
            request,
            remote_addr,
            attached: Extensions::new(),
        }
    }

    /// The HTTP request: method, URI, version, headers and extensions.
    #[must_use]
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// The request's URI; its path is the request's path (every path reaches the server
    /// when it accepts sockets itself).
    #[must_use]
    pub fn uri(&self) -> &Uri {
        self.request.uri()
    }

    /// The request's headers (`Origin`, `Cookie`, `Authorization`, ...).
    #[must_use]
    pub fn headers(&self) -> &HeaderMap {
        self.request.headers()
    }

    /// The request's own extensions, put there by the HTTP stack: an axum or tower layer's
    /// data (an authenticated user, axum's `ConnectInfo`). For sockets the server reads
    /// itself: a `TlsInfo` (feature `rustls`) on connections of `Server::serve_tls` and
    /// `serve_tls_connection` (the client's certificates, for mTLS), nothing on plain
    /// ones. Not the connection's: see [`attach`](Self::attach).
    #[must_use]
    pub fn extensions(&self) -> &Extensions {
        self.request.extensions()
    }

    /// The client's address, when the transport has one.
    #[must_use]
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// Attaches `value` to the connection, if it is upgraded: every later hook reads it
    /// with [`Connection::get`](crate::server::Connection::get). One value per type; a
    /// value of the same type attached before is replaced and returned.
    pub fn attach<T: Clone + Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        self.attached.insert(value)
    }

    /// What has been attached so far.
    #[must_use]
    pub fn attached(&self) -> &Extensions {
        &self.attached
    }

    /// The request and the data for the connection.
    pub(crate) fn into_parts(self) -> (Request<()>, Extensions) {
        (self.request, self.attached)
    }
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::http::Request;

    use super::UpgradeRequest;

    #[test]
    fn debug_names_the_headers_but_never_prints_their_values_nor_the_query() {
        let http = Request::get("/ws?token=s3cr3t-query")
            .header("cookie", "session=s3cr3t-cookie")
            .header("authorization", "Bearer s3cr3t-token")
            .body(())
            .unwrap();
        let mut request = UpgradeRequest::new(http, None);
        request.attach(42_u32);
        let debug = format!("{request:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(
            debug.contains("cookie") && debug.contains("authorization"),
            "{debug}"
        );
        assert!(debug.contains("\"/ws\""), "{debug}");
    }
}
