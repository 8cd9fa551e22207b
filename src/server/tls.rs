//! TLS for sockets the server accepts (feature `rustls`): `wss://` served from a
//! [`TlsAcceptor`], on a listener of the server's or headless.

use std::future::Future;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::server::{Handler, Server};

impl<H: Handler> Server<H> {
    /// Accepts TLS connections on `listener` (`wss://`) until the server shuts down: as
    /// [`serve`](Self::serve), with a TLS handshake by `acceptor` before the HTTP upgrade.
    /// The handshake counts against the
    /// [`handshake_timeout`](crate::server::ServerBuilder::handshake_timeout) together
    /// with the upgrade; a client that fails it is dropped (and logged at debug level).
    /// Offer no `h2` in the configuration's ALPN protocols: the upgrade is HTTP/1.1.
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
        self.serve_stream(acceptor.accept(io), remote_addr);
    }
}
