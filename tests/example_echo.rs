//! `examples/echo`: its server on port 0, driven by its own client and by ours.

mod common;

#[path = "../examples/echo/client.rs"]
mod echo_client;
#[path = "../examples/echo/server.rs"]
mod echo_server;

use common::bounded;
use tokio::sync::mpsc;
use tokio_webwire::client::ClientHandler;
use tokio_webwire::protocol::Name;
use tokio_webwire::server::Server;
use tokio_webwire::{Client, Encoding, Payload};

/// The example's echo server on a fresh port, holding messages to `limit` bytes; returns
/// it and its URL.
async fn serve(limit: usize) -> (Server<echo_server::Echo>, String) {
    let (server, addr) = echo_server::start("127.0.0.1:0", limit)
        .await
        .expect("binds");
    (server, format!("ws://{addr}/"))
}

#[tokio::test]
async fn the_example_client_prints_every_exchange() {
    let (server, url) = serve(echo_server::DEFAULT_MAX_MESSAGE_SIZE).await;
    let mut out = Vec::new();
    bounded(echo_client::run(&url, Client::builder(), &mut out))
        .await
        .expect("the client runs");
    let out = String::from_utf8(out).expect("text");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            &*format!("connected to {url}"),
            r#"request echo utf8 "hello, WebWire" -> reply utf8 "hello, WebWire""#,
            r#"request echo utf16 "grüße aus UTF-16 🦀" -> reply utf16 "grüße aus UTF-16 🦀""#,
            "request echo binary [00, 01, fe, ff] -> reply binary [00, 01, fe, ff]",
            r#"signal ping utf8 "are you there?" -> signal ping utf8 "are you there?""#,
        ]
    );
    bounded(server.shutdown()).await;
}

/// Forwards signals to the test.
struct Signals(mpsc::UnboundedSender<(Name, Payload)>);

impl ClientHandler for Signals {
    async fn signal(&self, _client: &Client, name: Name, payload: Payload) {
        let _ = self.0.send((name, payload));
    }
}

async fn connect(url: &str) -> (Client, mpsc::UnboundedReceiver<(Name, Payload)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = common::example::client_with(url, Signals(tx)).await;
    (client, rx)
}

#[tokio::test]
async fn replies_keep_the_encoding_and_signals_return_to_their_sender_only() {
    let (server, url) = serve(echo_server::DEFAULT_MAX_MESSAGE_SIZE).await;
    let (a, mut a_signals) = connect(&url).await;
    let (b, mut b_signals) = connect(&url).await;

    for (name, payload) in [
        ("", Payload::utf8("no name needed")),
        ("x", Payload::utf16("ü")),
        ("bytes", Payload::binary(vec![0xff; 1000])),
        ("empty", Payload::empty()),
    ] {
        let reply = bounded(a.request(name, payload.clone()))
            .await
            .expect("a reply");
        assert_eq!(reply, payload, "request {name:?}");
    }

    bounded(a.signal("hi", Payload::utf16("from a")))
        .await
        .expect("sent");
    let (name, payload) = bounded(a_signals.recv()).await.expect("echoed");
    assert_eq!(name, "hi");
    assert_eq!(payload.encoding, Encoding::Utf16);
    assert_eq!(payload.to_text().unwrap(), "from a");

    // b's own signal comes back to b; a's never reached it.
    bounded(b.signal("hi", "from b")).await.expect("sent");
    let (_, payload) = bounded(b_signals.recv()).await.expect("echoed");
    assert_eq!(payload.as_str().unwrap(), "from b");
    assert!(b_signals.try_recv().is_err());

    bounded(a.close()).await;
    bounded(b.close()).await;
    bounded(server.shutdown()).await;
}

#[tokio::test]
async fn a_larger_limit_echoes_a_256_kib_payload() {
    let limit = 512 * 1024;
    let (server, url) = serve(limit).await;
    let (client, _signals) = connect(&url).await;
    // A period of 251 bytes (no power of two), so that a byte lost or moved shows.
    let payload = Payload::binary(
        (0..256 * 1024)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let reply = bounded(client.request("big", payload.clone()))
        .await
        .expect("a reply");
    assert_eq!(reply, payload);
    bounded(client.close()).await;
    bounded(server.shutdown()).await;
}

/// `--tls CERT KEY`: the echo server over `wss://`, with PEM files of a certificate made
/// here; the example's client trusts that certificate only (`--ca FILE`). Files that are
/// missing or swapped are named, with what they lack.
#[cfg(feature = "rustls")]
#[tokio::test]
async fn the_server_serves_wss_from_pem_files() {
    let (dir, cert, key) = common::example::self_signed_pem_files("echo-tls");

    let missing = echo_server::start_tls("127.0.0.1:0", 8192, &dir.join("none.pem"), &key).await;
    let error = missing.expect_err("no certificate file").to_string();
    assert!(error.contains("none.pem"), "{error}");
    // Swapped: the key file holds no certificate.
    let swapped = echo_server::start_tls("127.0.0.1:0", 8192, &key, &cert).await;
    let error = swapped.expect_err("swapped").to_string();
    assert_eq!(
        error,
        format!("{}: {}", key.display(), echo_server::NO_CERTIFICATE)
    );
    // The certificate twice: no private key.
    let no_key = echo_server::start_tls("127.0.0.1:0", 8192, &cert, &cert).await;
    let error = no_key.expect_err("no key").to_string();
    assert_eq!(
        error,
        format!("{}: {}", cert.display(), echo_server::NO_PRIVATE_KEY)
    );
    let not_a_ca = echo_client::trusting(&key)
        .expect_err("a key is no CA")
        .to_string();
    assert!(
        not_a_ca.contains("no certificate in this file"),
        "{not_a_ca}"
    );

    let started = echo_server::start_tls("127.0.0.1:0", 8192, &cert, &key).await;
    let trusting = echo_client::trusting(&cert).expect("a CA file");
    std::fs::remove_dir_all(&dir).unwrap();
    let (server, addr) = started.expect("serves");
    let mut out = Vec::new();
    let url = format!("wss://{addr}/");
    bounded(echo_client::run(
        &url,
        Client::builder().tls_config(trusting),
        &mut out,
    ))
    .await
    .expect("the client trusts the certificate");
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.lines().count(), 5, "{out}");
    bounded(server.shutdown()).await;
}
