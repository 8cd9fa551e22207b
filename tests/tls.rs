//! `wss://` (feature `rustls`): our client against our server over TLS, with a certificate
//! made in the test for the IP address 127.0.0.1 (dialled as such: `localhost` may
//! resolve to `::1`, where nothing listens).

mod common;

use common::Echo;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::bounded;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_webwire::client::Reconnect;
use tokio_webwire::http::StatusCode;
use tokio_webwire::protocol::Name;
use tokio_webwire::server::{
    Connection, Handler, HandlerError, HandlerResult, Server, TlsInfo, UpgradeRequest,
};
use tokio_webwire::tokio_rustls::TlsAcceptor;
use tokio_webwire::tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_webwire::tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_webwire::tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_webwire::tokio_rustls::rustls::{
    ClientConfig, ProtocolVersion, RootCertStore, ServerConfig,
};
use tokio_webwire::{Client, ConnectError, Payload};

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
    // answer at once, not the dial's timeout, which says what to try.
    match plain {
        Err(error @ ConnectError::NotHttp { .. }) => assert_eq!(
            error.to_string(),
            "the server's answer is not HTTP (invalid HTTP version): it looks like a TLS \
             server, try wss:// instead of ws://"
        ),
        Err(ConnectError::Io { .. }) => {}
        other => panic!("expected the TLS server recognised, got {other:?}"),
    }

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

/// The status line a TLS server at `addr` answers an upgrade request with, `hosts` its
/// `Host` lines and `extra` more header lines; over a TLS connection that trusts `tls`.
async fn status_over_tls(
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    hosts: &[&str],
    extra: &str,
) -> String {
    use tokio_webwire::tokio_rustls::TlsConnector;
    use tokio_webwire::tokio_rustls::rustls::pki_types::ServerName;
    let socket = bounded(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = bounded(TlsConnector::from(tls).connect(name, socket))
        .await
        .expect("the TLS handshake");
    common::status_line_on(&mut tls, &common::upgrade_head("/", hosts, extra)).await
}

/// Over TLS the upgrade is checked as over plain TCP: exactly one `Host`, no user
/// information in `Origin`, and a page on the default port (`https://127.0.0.1`) is the
/// same origin as `Host: 127.0.0.1:443`.
#[tokio::test]
async fn host_and_origin_are_checked_over_tls_as_over_tcp() {
    let (acceptor, trusting) = certificate();
    let server = Server::new(Echo);
    let addr = serve_tls(&server, acceptor).await;
    let own = addr.to_string();
    let own = own.as_str();
    let user_info = format!("Origin: https://evil@{own}\r\n");
    let cases: [(&[&str], &str, &str); 4] = [
        (&[], "", "HTTP/1.1 400 Bad Request"),
        (&[own, "evil.example"], "", "HTTP/1.1 400 Bad Request"),
        (&[own], &user_info, "HTTP/1.1 403 Forbidden"),
        (
            &["127.0.0.1:443"],
            "Origin: https://127.0.0.1\r\n",
            "HTTP/1.1 101 Switching Protocols",
        ),
    ];
    for (hosts, extra, answer) in cases {
        let tls = Arc::clone(&trusting);
        let status = status_over_tls(addr, tls, hosts, extra).await;
        assert_eq!(status, answer, "{hosts:?} {extra}");
    }
    bounded(server.shutdown()).await;
}

/// A private CA, and certificates it signed: a certificate and its key.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

type Issued = (CertificateDer<'static>, PrivateKeyDer<'static>);

impl Ca {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        Ca { cert, key }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A certificate signed by the CA for `names` (SANs; an address parses as an IP SAN),
    /// usable as `usage` (server or client auth).
    fn issue(
        &self,
        common_name: &str,
        names: &[&str],
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> Issued {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("a certificate");
        let key = PrivateKeyDer::try_from(key.serialize_der()).expect("a key");
        (cert.der().clone(), key)
    }
}

/// Who a client certificate (its DER) belongs to, as `before_upgrade` attaches it.
#[derive(Clone, Debug, PartialEq)]
struct User(String);

/// Admits clients by certificate: the leaf of the chain rustls verified, looked up in the
/// accounts (by its bytes: a fingerprint of its own). No certificate, or an unknown one: 403.
struct MutualTls {
    accounts: Vec<(CertificateDer<'static>, String)>,
    /// What the hook saw of each handshake.
    seen: std::sync::Mutex<Vec<TlsInfo>>,
}

impl Handler for MutualTls {
    async fn before_upgrade(&self, request: &mut UpgradeRequest) -> Result<(), StatusCode> {
        let tls = request
            .extensions()
            .get::<TlsInfo>()
            .cloned()
            .ok_or(StatusCode::INTERNAL_SERVER_ERROR)?;
        self.seen.lock().unwrap().push(tls.clone());
        let leaf = tls
            .peer_certificates()
            .first()
            .ok_or(StatusCode::FORBIDDEN)?;
        let (_, user) = self
            .accounts
            .iter()
            .find(|(cert, _)| cert == leaf)
            .ok_or(StatusCode::FORBIDDEN)?;
        request.attach(User(user.clone()));
        Ok(())
    }

    async fn request(&self, conn: &Connection, _: Name, _: Payload) -> HandlerResult {
        let user = conn
            .get::<User>()
            .ok_or(HandlerError::internal("no user"))?;
        Ok(Payload::utf8(user.0.clone()))
    }
}

#[tokio::test]
async fn a_client_certificate_reaches_before_upgrade_and_one_without_is_refused() {
    let ca = Ca::new();
    let (server_cert, server_key) = ca.issue(
        "server",
        &["127.0.0.1"],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (alice_cert, alice_key) =
        ca.issue("alice", &[], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let mut roots = RootCertStore::empty();
    roots.add(ca.der()).expect("a root");
    let roots = Arc::new(roots);

    // Clients with a certificate the CA signed, and (for the hook to refuse) without any.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), ring())
        .allow_unauthenticated()
        .build()
        .expect("a client verifier");
    let mut server_config = ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert.clone(), ca.der()], server_key)
        .expect("a server configuration");
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client_config = |cert: Option<Issued>| {
        let builder = ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(Arc::clone(&roots));
        let mut config = match cert {
            Some((cert, key)) => builder
                .with_client_auth_cert(vec![cert], key)
                .expect("a client certificate"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    };

    let server = Server::new(MutualTls {
        accounts: vec![(alice_cert.clone(), "alice".into())],
        seen: std::sync::Mutex::default(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve_tls(listener, TlsAcceptor::from(Arc::new(server_config))));
    let url = format!("wss://{addr}/");

    let alice = dial(
        url.clone(),
        Some(client_config(Some((alice_cert.clone(), alice_key)))),
    )
    .await
    .unwrap_or_else(|error| panic!("{url}: {error}"));
    let reply = bounded(alice.request("whoami", "")).await.unwrap();
    assert_eq!(
        reply,
        Payload::utf8("alice"),
        "the hook's identity, attached"
    );
    {
        let seen = server.handler().seen.lock().unwrap();
        let [tls] = &seen[..] else { panic!("{seen:?}") };
        assert_eq!(
            tls.peer_certificates(),
            [alice_cert],
            "only the client's own"
        );
        assert_eq!(tls.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert!(
            matches!(
                tls.protocol_version(),
                Some(ProtocolVersion::TLSv1_3 | ProtocolVersion::TLSv1_2)
            ),
            "{tls:?}"
        );
        assert!(tls.cipher_suite().is_some(), "{tls:?}");
        // An IP address is dialled: rustls sends no SNI for one.
        assert_eq!(tls.server_name(), None);
    }
    alice.close().await;

    let anonymous = dial(url, Some(client_config(None))).await;
    assert!(
        matches!(anonymous, Err(ConnectError::Http { status: 403 })),
        "{anonymous:?}"
    );
    let seen = server.handler().seen.lock().unwrap().len();
    assert_eq!(
        seen, 2,
        "the anonymous client reached the hook, with no chain"
    );
    assert!(
        server.handler().seen.lock().unwrap()[1]
            .peer_certificates()
            .is_empty()
    );
    bounded(server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_do_not_keep_tls_clients_out() {
    // 300 sockets from 127.0.0.2 that never send a TLS hello, against 32 places: the server
    // closes the silent ones to make room for clients whose handshake talks.
    let (acceptor, trusting) = certificate();
    let server = Server::builder(Echo)
        .max_pending_upgrades(32)
        .build()
        .expect("valid");
    let addr = serve_tls(&server, acceptor).await;
    let mut silent = Vec::new();
    for _ in 0..300 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("an address"))
            .expect("bind 127.0.0.2");
        if let Ok(stream) = bounded(socket.connect(addr)).await {
            silent.push(stream);
        }
    }
    let mut succeeded = 0;
    for _ in 0..40 {
        if let Ok(client) = dial(format!("wss://{addr}/"), Some(Arc::clone(&trusting))).await {
            if bounded(client.request("echo", "hi")).await.is_ok() {
                succeeded += 1;
            }
            client.close().await;
        }
    }
    println!("{succeeded} of 40 TLS clients connected beside 300 silent sockets");
    assert!(
        succeeded >= 38,
        "only {succeeded} of 40 TLS clients connected"
    );
    drop(silent);
}
