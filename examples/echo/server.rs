//! The echo server: every request is answered with its own payload, in its own encoding,
//! and every signal goes back to the connection that sent it.
//!
//! Shared by `examples/echo/main.rs` and `tests/example_echo.rs`.

use std::error::Error;
use std::net::SocketAddr;

use tokio_webwire::Payload;
use tokio_webwire::protocol::Name;
use tokio_webwire::server::{CloseReason, Connection, Handler, HandlerResult, Server};

/// The handler: stateless, so one value serves every connection.
#[derive(Debug)]
pub(crate) struct Echo;

impl Handler for Echo {
    async fn connected(&self, conn: &Connection) {
        // The server's `connection` span adds the connection's id and address.
        tracing::info!(user_agent = conn.user_agent(), "connected");
    }

    async fn disconnected(&self, _conn: &Connection, reason: &CloseReason) {
        tracing::info!(%reason, "disconnected");
    }

    /// Any request name: the reply is the request's payload. A `Payload` carries its
    /// encoding, so UTF-8 stays UTF-8, UTF-16 stays UTF-16 and binary stays binary.
    async fn request(&self, _conn: &Connection, _name: Name, payload: Payload) -> HandlerResult {
        Ok(payload)
    }

    /// A signal is never answered, but the server may send signals of its own: send this
    /// one back, under the same name, to its sender.
    async fn signal(&self, conn: &Connection, name: Name, payload: Payload) {
        // Fails only if the client has gone meanwhile: then nobody is left to tell.
        if let Err(error) = conn.signal(name, payload).await {
            tracing::info!(%error, "signal not echoed");
        }
    }
}

/// The protocol's default message size limit, which Go clients expect unless configured
/// otherwise (`--max-message-size` changes it).
pub(crate) const DEFAULT_MAX_MESSAGE_SIZE: usize = 8192;

/// Binds `addr` and serves the echo handler on it (in a task of its own) until the
/// server shuts down, accepting messages of up to `max_message_size` bytes. Returns the
/// server, for [`Server::shutdown`], and the address it listens on: with port 0 the
/// system picks a free one.
///
/// Replies are as large as their requests, so the limit bounds both; clients learn it in
/// the handshake and send nothing larger.
pub(crate) async fn start(
    addr: &str,
    max_message_size: usize,
) -> Result<(Server<Echo>, SocketAddr), Box<dyn Error + Send + Sync>> {
    let (server, listener, local) = bind(addr, max_message_size).await?;
    tokio::spawn(server.serve(listener));
    Ok((server, local))
}

/// [`start`], over TLS (`wss://`): the certificate chain and the private key are read from
/// PEM files.
#[cfg(feature = "rustls")]
pub(crate) async fn start_tls(
    addr: &str,
    max_message_size: usize,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(Server<Echo>, SocketAddr), Box<dyn Error + Send + Sync>> {
    // Read before the port is taken.
    let acceptor = tls_acceptor(cert, key)?;
    let (server, listener, local) = bind(addr, max_message_size).await?;
    tokio::spawn(server.serve_tls(listener, acceptor));
    Ok((server, local))
}

/// What `--tls CERT KEY` says of a CERT file without a certificate.
#[cfg(feature = "rustls")]
pub(crate) const NO_CERTIFICATE: &str = "no certificate in this file (a PEM file with \
     -----BEGIN CERTIFICATE----- is expected first: --tls CERT KEY; are the two swapped?)";
/// What `--tls CERT KEY` says of a KEY file without a private key.
#[cfg(feature = "rustls")]
pub(crate) const NO_PRIVATE_KEY: &str = "no private key in this file (a PEM file with \
     -----BEGIN PRIVATE KEY----- is expected second: --tls CERT KEY; are the two swapped?)";

/// A TLS acceptor for the certificate chain in the PEM file `cert` and the private key in
/// the PEM file `key`.
#[cfg(feature = "rustls")]
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_webwire::tokio_rustls::TlsAcceptor, Box<dyn Error + Send + Sync>> {
    use tokio_webwire::tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_webwire::tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_webwire::tokio_rustls::rustls::{ServerConfig, crypto::ring};

    use tokio_webwire::tokio_rustls::rustls::pki_types::pem::Error as PemError;

    let named = |path: &std::path::Path, error: &dyn std::fmt::Display| {
        format!("{}: {error}", path.display())
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| named(cert, &error))?;
    if certs.is_empty() {
        return Err(named(cert, &NO_CERTIFICATE).into());
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|error| match error {
        PemError::NoItemsFound => named(key, &NO_PRIVATE_KEY),
        error => named(key, &error),
    })?;
    // The provider named: `ServerConfig::builder()` panics in a program that links ring
    // and aws-lc-rs both and installs no default.
    let provider = std::sync::Arc::new(ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(std::sync::Arc::new(config).into())
}

/// The server, checked before the port is taken, and its listener on `addr`.
async fn bind(
    addr: &str,
    max_message_size: usize,
) -> Result<(Server<Echo>, tokio::net::TcpListener, SocketAddr), Box<dyn Error + Send + Sync>> {
    let server = Server::builder(Echo)
        .max_message_size(max_message_size)
        .build()?;
    // Backlog 1024 (tokio's bind: 128): clients that all reconnect at once after a
    // restart wait in it, instead of having their connects dropped and sent again later.
    let listener = tokio_webwire::server::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((server, listener, local))
}
