//! The echo example's client: a request in each encoding and one signal, each printed
//! with what came back.
//!
//! Shared by `examples/echo/main.rs` (`--client`) and `tests/example_echo.rs`.

use std::error::Error;
use std::io::Write;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_webwire::client::{ClientHandler, Reconnect};
use tokio_webwire::protocol::Name;
use tokio_webwire::{Client, ClientBuilder, Encoding, Payload};

/// How long the client waits for anything: a reply, the echoed signal.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The error when the server answers requests but sends no signal back: it is a WebWire
/// server, but not the echo example's.
pub(crate) const NO_SIGNAL_BACK: &str = "the signal did not come back within 5 s: the server \
     answers requests but does not send signals back as the echo server does";

/// Hands the server's signals to [`run`] through a channel.
#[derive(Debug)]
struct Signals(mpsc::UnboundedSender<(Name, Payload)>);

impl ClientHandler for Signals {
    async fn signal(&self, _client: &Client, name: Name, payload: Payload) {
        let _ = self.0.send((name, payload));
    }

    async fn connected(&self, _client: &Client) {
        tracing::info!("connected");
    }

    async fn disconnected(&self, _client: &Client) {
        tracing::info!("disconnected");
    }
}

/// Connects to the echo server at `url` with `builder`'s options (`Client::builder()`, or
/// one with a TLS configuration for `--ca`), sends a request in each encoding and a
/// signal, and writes one line per exchange to `out`.
pub(crate) async fn run(
    url: &str,
    builder: ClientBuilder,
    out: &mut (dyn Write + Send),
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let (signals, mut incoming) = mpsc::unbounded_channel();
    let client = builder
        .request_timeout(TIMEOUT)
        // A demo: if the server goes away, say so instead of waiting for it to return.
        .reconnect(Reconnect::Off)
        .handler(Signals(signals))
        .connect(url)
        .await?;
    writeln!(out, "connected to {url}")?;

    let requests = [
        Payload::utf8("hello, WebWire"),
        Payload::utf16("grüße aus UTF-16 🦀"),
        Payload::binary(vec![0x00, 0x01, 0xfe, 0xff]),
    ];
    for payload in requests {
        let sent = describe(&payload);
        let reply = client.request("echo", payload).await?;
        writeln!(out, "request echo {sent} -> reply {}", describe(&reply))?;
    }

    let payload = Payload::utf8("are you there?");
    let sent = describe(&payload);
    client.signal("ping", payload).await?;
    let (name, back) = tokio::time::timeout(TIMEOUT, incoming.recv())
        .await
        .map_err(|_| NO_SIGNAL_BACK)?
        .ok_or("the client closed")?;
    writeln!(
        out,
        "signal ping {sent} -> signal {name} {}",
        describe(&back)
    )?;

    client.close().await;
    Ok(())
}

/// `utf8 "text"`, `utf16 "text"` or `binary [00, 01]`.
pub(crate) fn describe(payload: &Payload) -> String {
    match (payload.encoding, payload.to_text()) {
        (Encoding::Utf8, Ok(text)) => format!("utf8 {text:?}"),
        (Encoding::Utf16, Ok(text)) => format!("utf16 {text:?}"),
        _ => format!("binary {:02x?}", &payload.data[..]),
    }
}

/// A TLS configuration trusting the certificates of the PEM file `ca` only (`--ca FILE`):
/// a self-signed server certificate, or the private CA that signed it.
#[cfg(feature = "rustls")]
pub(crate) fn trusting(
    ca: &std::path::Path,
) -> Result<
    std::sync::Arc<tokio_webwire::tokio_rustls::rustls::ClientConfig>,
    Box<dyn Error + Send + Sync>,
> {
    use tokio_webwire::tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_webwire::tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_webwire::tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};

    let named = |error: &dyn std::fmt::Display| format!("{}: {error}", ca.display());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|error| named(&error))? {
        roots
            .add(cert.map_err(|error| named(&error))?)
            .map_err(|error| named(&error))?;
    }
    if roots.is_empty() {
        return Err(named(
            &"no certificate in this file (--ca takes a PEM file with \
             -----BEGIN CERTIFICATE-----)",
        )
        .into());
    }
    // The provider named: `ClientConfig::builder()` panics in a program that links ring
    // and aws-lc-rs both and installs no default.
    let config = ClientConfig::builder_with_provider(std::sync::Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}
