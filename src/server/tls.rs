//! TLS for sockets the server accepts (feature `rustls`): `wss://` served from a
//! [`TlsAcceptor`], on a listener of the server's or headless.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;

use futures_util::TryFutureExt;
use rustls::pki_types::CertificateDer;
use rustls::{CipherSuite, ProtocolVersion, ServerConnection};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::http::Extensions;

use crate::server::{Handler, Server};

/// What the TLS handshake of a connection settled, as
/// [`Handler::before_upgrade`](crate::server::Handler::before_upgrade) reads it from the
/// request's [`extensions`](crate::server::UpgradeRequest::extensions) on a connection of
/// [`Server::serve_tls`] or [`Server::serve_tls_connection`]: the client's certificate
/// chain (mTLS), the SNI name, the ALPN protocol, the version and cipher suite.
///
/// A snapshot taken after the handshake, before the HTTP request is read: the hook decides
/// on it, and [`attach`](crate::server::UpgradeRequest::attach)es what later hooks need
/// (the identity it derived, or the `TlsInfo` itself). An application that terminates TLS
/// itself and mounts the server (`Server::upgrade`, feature `hyper`) can put one in the
/// request's extensions with [`from_connection`](Self::from_connection).
///
/// The chain is only as trusted as the `ServerConfig`'s client verifier made it: with
/// `WebPkiClientVerifier` it was verified against its roots; with
/// `allow_unauthenticated()` it may be empty; with `with_no_client_auth()` it always is.
///
/// ```
/// use tokio_webwire::http::StatusCode;
/// use tokio_webwire::server::{Handler, TlsInfo, UpgradeRequest};
///
/// /// The client certificate (DER) of a verified mTLS client.
/// #[derive(Clone)]
/// struct ClientCert(Vec<u8>);
///
/// struct MutualTls;
///
/// impl Handler for MutualTls {
///     async fn before_upgrade(&self, request: &mut UpgradeRequest) -> Result<(), StatusCode> {
///         let leaf = request
///             .extensions()
///             .get::<TlsInfo>()
///             .and_then(|tls| tls.peer_certificates().first())
///             .ok_or(StatusCode::FORBIDDEN)?
///             .to_vec();
///         // Map the certificate to an account here (its subject, its fingerprint).
///         request.attach(ClientCert(leaf));
///         Ok(())
///     }
/// }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
#[derive(Clone)]
pub struct TlsInfo {
    peer_certificates: Vec<CertificateDer<'static>>,
    server_name: Option<String>,
    alpn_protocol: Option<Vec<u8>>,
    protocol_version: Option<ProtocolVersion>,
    cipher_suite: Option<CipherSuite>,
}

impl TlsInfo {
    /// What `connection`'s handshake settled (call it once the handshake is complete: a
    /// `tokio_rustls::server::TlsStream`'s `get_ref().1`).
    ///
    /// ```no_run
    /// # async fn run(acceptor: tokio_webwire::tokio_rustls::TlsAcceptor, socket: tokio::net::TcpStream) -> std::io::Result<()> {
    /// use tokio_webwire::server::TlsInfo;
    ///
    /// let tls = acceptor.accept(socket).await?;
    /// let info = TlsInfo::from_connection(tls.get_ref().1);
    /// println!("{:?} {:?}", info.protocol_version(), info.server_name());
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn from_connection(connection: &ServerConnection) -> Self {
        TlsInfo {
            peer_certificates: connection
                .peer_certificates()
                .map(<[_]>::to_vec)
                .unwrap_or_default(),
            server_name: connection.server_name().map(Into::into),
            alpn_protocol: connection.alpn_protocol().map(Into::into),
            protocol_version: connection.protocol_version(),
            cipher_suite: connection
                .negotiated_cipher_suite()
                .map(|suite| suite.suite()),
        }
    }

    /// The client's certificate chain, its own certificate first; empty when the client
    /// sent none (no client auth configured, or `allow_unauthenticated()`).
    ///
    /// ```
    /// # fn leaf(info: &tokio_webwire::server::TlsInfo) -> Option<&[u8]> {
    /// info.peer_certificates().first().map(|cert| cert.as_ref())
    /// # }
    /// ```
    #[must_use]
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        &self.peer_certificates
    }

    /// The server name the client asked for (SNI), if it sent one (clients dialling an IP
    /// address send none).
    ///
    /// ```
    /// # fn tenant(info: &tokio_webwire::server::TlsInfo) -> &str {
    /// info.server_name().unwrap_or("default")
    /// # }
    /// ```
    #[must_use]
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The ALPN protocol agreed on, if the configuration offered any (`http/1.1`).
    ///
    /// ```
    /// # fn is_http1(info: &tokio_webwire::server::TlsInfo) -> bool {
    /// info.alpn_protocol() == Some(b"http/1.1")
    /// # }
    /// ```
    #[must_use]
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.alpn_protocol.as_deref()
    }

    /// The TLS version negotiated.
    ///
    /// ```
    /// use tokio_webwire::tokio_rustls::rustls::ProtocolVersion;
    /// # fn is_tls13(info: &tokio_webwire::server::TlsInfo) -> bool {
    /// info.protocol_version() == Some(ProtocolVersion::TLSv1_3)
    /// # }
    /// ```
    #[must_use]
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.protocol_version
    }

    /// The cipher suite negotiated (its `Debug` form is its IANA name).
    ///
    /// ```
    /// # fn suite(info: &tokio_webwire::server::TlsInfo) -> String {
    /// info.cipher_suite().map(|suite| format!("{suite:?}")).unwrap_or_default()
    /// # }
    /// ```
    #[must_use]
    pub fn cipher_suite(&self) -> Option<CipherSuite> {
        self.cipher_suite
    }
}

impl fmt::Debug for TlsInfo {
    /// The chain's length, not its bytes: a log line stays a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsInfo")
            .field("peer_certificates", &self.peer_certificates.len())
            .field("server_name", &self.server_name)
            .field(
                "alpn_protocol",
                &self.alpn_protocol.as_deref().map(String::from_utf8_lossy),
            )
            .field("protocol_version", &self.protocol_version)
            .field("cipher_suite", &self.cipher_suite)
            .finish()
    }
}

impl<H: Handler> Server<H> {
    /// Accepts TLS connections on `listener` (`wss://`) until the server shuts down: as
    /// [`serve`](Self::serve), with a TLS handshake by `acceptor` before the HTTP upgrade.
    /// The handshake counts against the
    /// [`handshake_timeout`](crate::server::ServerBuilder::handshake_timeout) together
    /// with the upgrade; a client that fails it is dropped (and logged at debug level).
    /// Offer no `h2` in the configuration's ALPN protocols: the upgrade is HTTP/1.1.
    ///
    /// What the handshake settled reaches [`Handler::before_upgrade`] as a [`TlsInfo`] in
    /// the request's [`extensions`](crate::server::UpgradeRequest::extensions). For client
    /// certificates (mTLS), build the `ServerConfig` with
    /// `with_client_cert_verifier(WebPkiClientVerifier::builder(roots).build()?)`: rustls
    /// refuses clients without a certificate the roots signed (with
    /// `allow_unauthenticated()`, they get through with an empty chain), and the hook maps
    /// [`TlsInfo::peer_certificates`] to an identity and
    /// [`attach`](crate::server::UpgradeRequest::attach)es it.
    ///
    /// Every handshake costs CPU before the client has shown anything, and
    /// [`max_connections`](crate::server::ServerBuilder::max_connections) counts only
    /// upgraded connections. What bounds handshakes: each by the handshake timeout, all
    /// together by
    /// [`max_pending_upgrades`](crate::server::ServerBuilder::max_pending_upgrades)
    /// (1024 by default; sockets beyond are closed before their handshake). Neither tells
    /// one client from another: limit connections per address in front of the server (a
    /// reverse proxy, a load balancer, the firewall).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use tokio_webwire::server::Server;
    /// use tokio_webwire::tokio_rustls::TlsAcceptor;
    /// use tokio_webwire::tokio_rustls::rustls::{ServerConfig, crypto::ring};
    /// use tokio_webwire::tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    /// use tokio_webwire::tokio_rustls::rustls::pki_types::pem::PemObject;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let certs = CertificateDer::pem_file_iter("cert.pem")?.collect::<Result<Vec<_>, _>>()?;
    /// let key = PrivateKeyDer::from_pem_file("key.pem")?;
    /// // The provider named: `ServerConfig::builder()` panics when the program links both
    /// // ring and aws-lc-rs and installs no default (`CryptoProvider::install_default`).
    /// let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
    ///     .with_safe_default_protocol_versions()?
    ///     .with_no_client_auth()
    ///     .with_single_cert(certs, key)?;
    ///
    /// let server = Server::new(());
    /// let listener = tokio_webwire::server::bind("0.0.0.0:443").await?;
    /// tokio::spawn(server.serve_tls(listener, TlsAcceptor::from(Arc::new(config))));
    /// # Ok(()) }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn serve_tls(
        &self,
        listener: TcpListener,
        acceptor: TlsAcceptor,
    ) -> impl Future<Output = ()> + Send + 'static {
        self.accept_loop(listener, move |server, socket, remote_addr| {
            server.serve_tls_connection(socket, acceptor.clone(), Some(remote_addr));
        })
    }

    /// Serves one accepted connection over TLS (headless mode): the TLS handshake by
    /// `acceptor`, then as [`serve_connection`](Self::serve_connection). Handshake and
    /// upgrade together are bounded by the
    /// [`handshake_timeout`](crate::server::ServerBuilder::handshake_timeout). Runs on its
    /// own task and is included in [`shutdown`](Self::shutdown).
    ///
    /// ```no_run
    /// # async fn run(server: tokio_webwire::server::Server<()>, acceptor: tokio_webwire::tokio_rustls::TlsAcceptor) -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("0.0.0.0:443").await?;
    /// loop {
    ///     let (socket, addr) = listener.accept().await?;
    ///     server.serve_tls_connection(socket, acceptor.clone(), Some(addr));
    /// }
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn serve_tls_connection<S>(
        &self,
        io: S,
        acceptor: TlsAcceptor,
        remote_addr: Option<SocketAddr>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // The handshake's outcome goes into the request's extensions: the upgrade code
        // stays the same for plain sockets and TLS.
        let handshake = move |io| {
            acceptor.accept(io).map_ok(|tls| {
                let mut extensions = Extensions::new();
                extensions.insert(TlsInfo::from_connection(tls.get_ref().1));
                (tls, extensions)
            })
        };
        self.serve_stream(io, handshake, remote_addr);
    }
}
