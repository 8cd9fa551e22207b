//! `wss://` (feature `rustls`): our client against our server over TLS, with a certificate
//! made in the test for the IP address 127.0.0.1 (dialled as such: `localhost` may
//! resolve to `::1`, where nothing listens).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::bounded;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_webwire::client::Reconnect;
use tokio_webwire::protocol::Name;
use tokio_webwire::server::{Connection, Handler, HandlerError, Server};
use tokio_webwire::tokio_rustls::TlsAcceptor;
use tokio_webwire::tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_webwire::tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_webwire::tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_webwire::{Client, ConnectError, Payload};

struct Echo;

impl Handler for Echo {
    async fn request(
        &self,
        _: &Connection,
        _: Name,
        payload: Payload,
    ) -> Result<Payload, HandlerError> {
        Ok(payload)
    }
}

/// A self-signed certificate for 127.0.0.1 (an IP address SAN: rcgen makes one of a name
/// that parses as an address): the acceptor serving it, and a client configuration that
/// trusts it (and nothing else).
fn certificate() -> (TlsAcceptor, Arc<ClientConfig>) {
    certificate_for(&["127.0.0.1"])
}

/// The ring provider, named: `ServerConfig::builder()` would panic in a build that links
/// aws-lc-rs too and installs no default provider.
fn ring() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn certificate_for(names: &[&str]) -> (TlsAcceptor, Arc<ClientConfig>) {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let certified = rcgen::generate_simple_self_signed(names).expect("a certificate");
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::try_from(certified.key_pair.serialize_der()).expect("a key");
    let server = ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("a server configuration");
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("a root");
    let client = ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (TlsAcceptor::from(Arc::new(server)), Arc::new(client))
}

/// Dials `url` once (no reconnects), trusting what `tls` trusts (the webpki roots if
/// `None`).
async fn dial(url: String, tls: Option<Arc<ClientConfig>>) -> Result<Client, ConnectError> {
    let builder = Client::builder().reconnect(Reconnect::Off);
    let builder = match tls {
        Some(tls) => builder.tls_config(tls),
        None => builder,
    };
    bounded(builder.connect(url)).await
}

async fn serve_tls(server: &Server<Echo>, acceptor: TlsAcceptor) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve_tls(listener, acceptor));
    addr
}

#[tokio::test]
async fn a_wss_round_trip() {
    let (acceptor, trusting) = certificate();
    let server = Server::new(Echo);
    let addr = serve_tls(&server, acceptor).await;
    let url = format!("wss://{addr}/");
    let client = dial(url.clone(), Some(trusting))
        .await
        .unwrap_or_else(|error| panic!("{url}: {error}"));
    let reply = bounded(client.request("echo", Payload::utf16("über TLS")))
        .await
        .unwrap();
    assert_eq!(reply, Payload::utf16("über TLS"));
    client.close().await;
    bounded(server.shutdown()).await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_error() {
    let (acceptor, _) = certificate();
    let server = Server::new(Echo);
    let addr = serve_tls(&server, acceptor).await;
    // The default configuration trusts the webpki roots, which did not sign ours.
    let refused = dial(format!("wss://127.0.0.1:{}/", addr.port()), None).await;
    match refused {
        Err(ConnectError::Tls { reason }) => {
            assert!(reason.contains("certificate"), "{reason}");
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    // A trusted certificate, but for another name than the one dialled.
    let (other_acceptor, other_trusting) = certificate_for(&["example.invalid"]);
    let other = Server::new(Echo);
    let other_addr = serve_tls(&other, other_acceptor).await;
    let url = format!("wss://127.0.0.1:{}/", other_addr.port());
    let wrong_name = dial(url, Some(other_trusting)).await;
    assert!(
        matches!(&wrong_name, Err(ConnectError::Tls { reason }) if reason.contains("not valid for")),
        "{wrong_name:?}"
    );
}

#[tokio::test]
async fn a_plain_client_at_a_tls_server_and_a_tls_client_at_a_plain_one_fail_clearly() {
    let (acceptor, trusting) = certificate();
    let server = Server::new(Echo);
    let tls_addr = serve_tls(&server, acceptor).await;
    let plain = dial(format!("ws://{tls_addr}/"), None).await;
    // The server's TLS alert, read as an HTTP answer (or the socket it then closes): an
    // answer at once, not the dial's timeout.
    assert!(
        matches!(
            plain,
            Err(ConnectError::WebSocket { .. } | ConnectError::Io { .. })
        ),
        "{plain:?}"
    );

    let plain_server = Server::new(Echo);
    let plain_addr = common::listen(&plain_server).await;
    let tls = dial(format!("wss://{plain_addr}/"), Some(trusting)).await;
    assert!(matches!(tls, Err(ConnectError::Tls { .. })), "{tls:?}");
}

#[tokio::test]
async fn headless_tls_connections_are_served_and_shut_down() {
    let (acceptor, trusting) = certificate();
    let server = Server::new(Echo);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepting = server.clone();
    tokio::spawn(async move {
        let (socket, remote) = listener.accept().await.unwrap();
        accepting.serve_tls_connection(socket, acceptor, Some(remote));
    });
    let client = dial(format!("wss://127.0.0.1:{}/", addr.port()), Some(trusting))
        .await
        .unwrap();
    let reply = bounded(client.request("echo", "headless")).await.unwrap();
    assert_eq!(reply, Payload::utf8("headless"));
    assert_eq!(server.connection_count(), 1);
    bounded(server.shutdown()).await;
    assert_eq!(server.connection_count(), 0);
    let after = bounded(client.request("echo", "gone")).await;
    assert!(after.is_err(), "{after:?}");
}

#[tokio::test(start_paused = true)]
async fn a_silent_socket_is_dropped_at_the_handshake_timeout_tls_included() {
    let (acceptor, _) = certificate();
    let server = Server::builder(Echo)
        .handshake_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let addr = serve_tls(&server, acceptor).await;
    // Connected, but never a ClientHello: the server gives up at the timeout (paused
    // time moves on while every task waits).
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(60), socket.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}
