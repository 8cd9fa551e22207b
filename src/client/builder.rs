//! The client's options, with their defaults, and the builder that sets them.

use std::time::Duration;

use bytes::Bytes;

use crate::client::events::{DEFAULT_MAX_QUEUED_SIGNAL_BYTES, DEFAULT_MAX_QUEUED_SIGNALS};
use std::sync::Arc;

use crate::client::config::Config;
use crate::client::handle::{Client, Owner};
use crate::client::shared::{Shared, State};
use crate::client::{
    ClientHandler, ConnectError, Reconnect, SignalOverflow, connection, handler, supervisor,
};

/// The default [`ClientBuilder::dial_timeout`]: 5 s, as the Go client.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The default [`ClientBuilder::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The default [`ClientBuilder::request_timeout`]: 60 s, as both reference clients.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The default [`ClientBuilder::max_message_size`]: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Options for a [`Client`], then [`connect`](ClientBuilder::connect).
///
/// ```no_run
/// use std::time::Duration;
/// use tokio_webwire::{Client, client::{Backoff, Reconnect}};
///
/// # async fn demo() -> Result<(), tokio_webwire::ConnectError> {
/// let client = Client::builder()
///     .dial_timeout(Duration::from_secs(2))
///     .request_timeout(Duration::from_secs(10))
///     .sub_protocol("chat")
///     .header("Authorization", "Bearer 0123")
///     .reconnect(Reconnect::Backoff(Backoff::default().max_attempts(10)))
///     .connect("ws://127.0.0.1:8081/")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `connect` is called"]
pub struct ClientBuilder<H = ()> {
    config: Config,
    handler: H,
}

impl Default for ClientBuilder<()> {
    fn default() -> Self {
        ClientBuilder {
            config: Config {
                url: String::new(),
                dial_timeout: DEFAULT_DIAL_TIMEOUT,
                write_timeout: DEFAULT_WRITE_TIMEOUT,
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                sub_protocol: None,
                reconnect: Reconnect::default(),
                headers: Vec::new(),
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                restore_session: true,
                topics: false,
                subscription_buffer: 1024,
                max_queued_signals: DEFAULT_MAX_QUEUED_SIGNALS,
                max_queued_signal_bytes: DEFAULT_MAX_QUEUED_SIGNAL_BYTES,
                signal_overflow: SignalOverflow::DropOldest,
                #[cfg(feature = "rustls")]
                tls: None,
            },
            handler: (),
        }
    }
}

impl ClientBuilder<()> {
    /// A builder with every option at its default and no handler.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<H: ClientHandler> ClientBuilder<H> {
    /// How long establishing a connection may take, from the TCP connect through the
    /// WebSocket upgrade to the server's AcceptConf message. Default: 5 s.
    pub fn dial_timeout(mut self, timeout: Duration) -> Self {
        self.config.dial_timeout = timeout;
        self
    }

    /// How long [`Client::request`] waits for its reply (including, while reconnecting, the
    /// wait for a connection). [`Client::request_with_timeout`] overrides it per request.
    /// Default: 60 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// The application sub-protocol name the server must announce in its AcceptConf, byte
    /// for byte. Without it the server must announce none. (This is WebWire's own label,
    /// not the `Sec-WebSocket-Protocol` header.) An empty name means none.
    pub fn sub_protocol(mut self, name: impl Into<Bytes>) -> Self {
        let name = name.into();
        self.config.sub_protocol = (!name.is_empty()).then_some(name);
        self
    }

    /// What to do when the connection is lost. Default: reconnect with
    /// [`Backoff::default`](crate::client::Backoff).
    pub fn reconnect(mut self, policy: Reconnect) -> Self {
        self.config.reconnect = policy;
        self
    }

    /// An extra HTTP header for the WebSocket upgrade request, such as `Authorization` or
    /// `Origin`. Repeatable; an invalid name or value fails
    /// [`connect`](ClientBuilder::connect) with [`ConnectError::InvalidHeader`].
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.headers.push((name.into(), value.into()));
        self
    }

    /// The largest message the client accepts from the server, in bytes. A larger one is a
    /// protocol violation: the client closes the connection with code 1009 and reconnects
    /// per its policy. Default: 16 MiB. Each connection accepts no more than its server
    /// announced in its handshake either (the server's own limit, which it keeps for what
    /// it sends), so this bounds what a server that announces more can make the client
    /// read: the memory a message being read can take.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// Whether the client restores its session after each reconnection (PROTOCOL.md
    /// §4.4), before requests may use the new connection. Default: `true`, as both
    /// reference clients do.
    ///
    /// With `false` the session does not survive a reconnection: the new connection holds
    /// none on the server, so the client forgets its local one and calls
    /// [`ClientHandler::session_closed`] before it reports the connection. Keep the key
    /// from [`ClientHandler::session_created`] to restore the session yourself with
    /// [`Client::restore_session`].
    pub fn restore_session_on_reconnect(mut self, restore: bool) -> Self {
        self.config.restore_session = restore;
        self
    }

    /// Speak the topics extension (`docs/topics.md`; default off): the client offers the
    /// WebSocket sub-protocol `webwire.topics.1`, and [`Client::subscribe`] works. A
    /// server that does not select it fails the handshake
    /// ([`ConnectError`](crate::ConnectError)), so turn it on only for servers that
    /// speak it (tokio-webwire's do; the v2.0 reference servers do not).
    ///
    /// ```
    /// let builder = tokio_webwire::Client::builder().topics(true);
    /// ```
    pub fn topics(mut self, enabled: bool) -> Self {
        self.config.topics = enabled;
        self
    }

    /// How many events one [`Subscription`](crate::client::Subscription) buffers for an
    /// application that has not taken them yet (default 1024; at least 1). Beyond it the
    /// client holds publications back instead of buffering them without bound, and once
    /// the subscription has taken what was buffered it subscribes again from the last
    /// position delivered: the server's history replays what was held back (see
    /// [`Subscription::next`](crate::client::Subscription::next)). Memory: this many
    /// publications per subscription, each its payload and its `TopicEvent`.
    ///
    /// ```
    /// let builder = tokio_webwire::Client::builder().topics(true).subscription_buffer(256);
    /// ```
    pub fn subscription_buffer(mut self, events: usize) -> Self {
        self.config.subscription_buffer = events.max(1);
        self
    }

    /// How many server signals may wait for the handler (at least 1; default 1024). The
    /// connection never waits for the handler: a signal beyond this is dropped per
    /// [`signal_overflow`](ClientBuilder::signal_overflow), counted in
    /// [`Client::dropped_signals`] and logged. Connection and session events are never
    /// dropped and do not count.
    pub fn max_queued_signals(mut self, signals: usize) -> Self {
        self.config.max_queued_signals = signals.max(1);
        self
    }

    /// How many bytes of server signals (names and payloads) may wait for the handler
    /// (default 16 MiB); beyond, signals are dropped per
    /// [`signal_overflow`](ClientBuilder::signal_overflow) as beyond
    /// [`max_queued_signals`](ClientBuilder::max_queued_signals), and a signal larger than
    /// this is dropped whatever the policy.
    ///
    /// With [`max_message_size`](ClientBuilder::max_message_size) it bounds what a server,
    /// hostile or flooding, can make a connection hold for a handler that falls behind:
    /// this many bytes of queued signals (the same again while a session is restored after
    /// a reconnection), plus the message being read (at most `max_message_size`). With the
    /// defaults, about 48 MiB per connection, where counting signals alone allowed 1024 ×
    /// 16 MiB.
    ///
    /// ```
    /// use tokio_webwire::Client;
    ///
    /// // A dashboard on a small device: at most 1 MiB of signals behind its handler.
    /// let builder = Client::builder().max_queued_signal_bytes(1 << 20);
    /// # drop(builder);
    /// ```
    pub fn max_queued_signal_bytes(mut self, bytes: usize) -> Self {
        self.config.max_queued_signal_bytes = bytes;
        self
    }

    /// Which signal is dropped when [`max_queued_signals`](ClientBuilder::max_queued_signals)
    /// are waiting for the handler. Default: [`SignalOverflow::DropOldest`].
    pub fn signal_overflow(mut self, policy: SignalOverflow) -> Self {
        self.config.signal_overflow = policy;
        self
    }

    /// How long a write may wait for a server that accepts no data (default 10 s; at least
    /// 1 ms): the clock starts when a write has to wait and starts again whenever the
    /// server takes some bytes, so a slow link that keeps moving is never cut off. A
    /// connection whose writes wait longer is dropped, and the client reconnects
    /// per its [`reconnect`](ClientBuilder::reconnect) policy; its requests fail with
    /// [`RequestError::Disconnected`](crate::RequestError::Disconnected) or wait for the
    /// next connection, as after any lost connection.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The TLS configuration for `wss://` URLs: the roots to trust (a private CA, the
    /// system's with `rustls-native-certs`), client certificates, the crypto provider.
    /// Without it, a `wss://` dial trusts the webpki roots (Mozilla's root certificates,
    /// compiled in) and uses the process's default provider, else ring. Leave its ALPN
    /// protocols empty (or `http/1.1`): a WebSocket upgrade is HTTP/1.1.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use tokio_webwire::Client;
    /// use tokio_webwire::tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
    /// use tokio_webwire::tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// // Trust a private CA only.
    /// let mut roots = RootCertStore::empty();
    /// roots.add(CertificateDer::from_pem_file("ca.pem")?)?;
    /// // The provider named: `ClientConfig::builder()` panics when the program links both
    /// // ring and aws-lc-rs and installs no default (`CryptoProvider::install_default`).
    /// let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
    ///     .with_safe_default_protocol_versions()?
    ///     .with_root_certificates(roots)
    ///     .with_no_client_auth();
    /// let client = Client::builder()
    ///     .tls_config(Arc::new(config))
    ///     .connect("wss://internal.example:8443/")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn tls_config(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.config.tls = Some(config);
        self
    }

    /// The handler for server signals, connection and session events.
    pub fn handler<H2: ClientHandler>(self, handler: H2) -> ClientBuilder<H2> {
        ClientBuilder {
            config: self.config,
            handler,
        }
    }

    /// Connects to `url` and performs the handshake.
    ///
    /// `url` is `ws://host[:port][/path]` or `wss://…`; as with the Go client, `http://`
    /// is read as `ws://` and `https://` as `wss://`. `wss://` needs the `rustls` feature
    /// (without it the dial fails with [`ConnectError::InvalidUrl`] saying so); it trusts
    /// the webpki roots unless `tls_config` says otherwise. Fails when no connection is established within the
    /// dial timeout, whatever the reconnect policy: the policy applies to connections lost
    /// later.
    ///
    /// Cancel safety: dropping the future abandons the attempt; a connection already made
    /// is closed and no background task is left running.
    pub async fn connect(self, url: impl AsRef<str>) -> Result<Client, ConnectError> {
        let mut config = self.config;
        config.url = websocket_url(url.as_ref());
        Client::start(config, self.handler).await
    }
}

impl Client {
    /// Connects to `url` with every option at its default (see [`ClientBuilder`]), and
    /// returns once the connection is ready for requests. Cancel safe as
    /// [`ClientBuilder::connect`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), tokio_webwire::ConnectError> {
    /// let client = tokio_webwire::Client::connect("ws://127.0.0.1:8081/").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: impl AsRef<str>) -> Result<Client, ConnectError> {
        ClientBuilder::new().connect(url).await
    }

    /// A builder for a client with options: timeouts, sub-protocol, reconnect policy,
    /// upgrade headers, a handler.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// Dials, then hands the connection to the supervisor task.
    async fn start<H: ClientHandler>(config: Config, handler: H) -> Result<Client, ConnectError> {
        let first = connection::dial(&config).await?;
        let shared = Arc::new(Shared::new(config));
        // Not tracked: a handler may close the client, and `close` waits for the tracker.
        // It ends once the queue is finished and empty.
        let view = Client {
            shared: Arc::clone(&shared),
            owner: None,
        };
        tokio::spawn(handler::run_events(handler, view));
        let mut published = shared.state.subscribe();
        shared
            .tasks
            .spawn(supervisor::supervise(Arc::clone(&shared), first));
        shared.tasks.close();
        let client = Client {
            owner: Some(Arc::new(Owner {
                shared: Arc::clone(&shared),
            })),
            shared,
        };
        // Return once the connection is in use, so `is_connected` holds from the start.
        let _ = published
            .wait_for(|state| !matches!(state, State::Connecting))
            .await;
        Ok(client)
    }
}

#[cfg(test)]
impl ClientBuilder<()> {
    /// The options as set so far.
    pub(crate) fn into_config(self) -> Config {
        self.config
    }
}

/// `http(s)://` → `ws(s)://`, as the Go client does; anything else is left alone.
fn websocket_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    match scheme.to_ascii_lowercase().as_str() {
        "http" => format!("ws://{rest}"),
        "https" => format!("wss://{rest}"),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::config::redact_url;

    #[test]
    fn http_schemes_become_websocket_schemes() {
        assert_eq!(websocket_url("http://h:1/x"), "ws://h:1/x");
        assert_eq!(websocket_url("HTTPS://h/"), "wss://h/");
        assert_eq!(websocket_url("ws://h/"), "ws://h/");
        assert_eq!(websocket_url("h:1"), "h:1");
    }

    #[test]
    fn defaults() {
        let builder = ClientBuilder::new();
        assert_eq!(builder.config.dial_timeout, Duration::from_secs(5));
        assert_eq!(builder.config.request_timeout, Duration::from_secs(60));
        assert_eq!(builder.config.max_message_size, 16 << 20);
        assert!(builder.config.reconnect.is_enabled());
        assert!(builder.config.restore_session);
        assert_eq!(builder.config.max_queued_signals, 1024);
        assert_eq!(builder.config.signal_overflow, SignalOverflow::DropOldest);
        assert_eq!(builder.sub_protocol("").config.sub_protocol, None);
    }

    #[test]
    fn urls_lose_their_credentials_query_and_fragment() {
        let cases = [
            ("ws://127.0.0.1:8081/", "ws://127.0.0.1:8081/"),
            ("wss://host/ws?token=s3cret", "wss://host/ws?<redacted>"),
            (
                "wss://alice:s3cret@host:8443/ws?token=s3cret#s3cret",
                "wss://<redacted>@host:8443/ws?<redacted>",
            ),
            ("ws://alice:p@ss@host/", "ws://<redacted>@host/"),
            ("ws://s3cret@host", "ws://<redacted>@host"),
            ("ws://host?s3cret", "ws://host?<redacted>"),
            ("ws://host/#s3cret", "ws://host/#<redacted>"),
            ("host/path?s3cret", "host/path?<redacted>"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("s3cret"));
        }
    }

    #[test]
    fn debug_output_hides_the_url_credentials() {
        let mut config = ClientBuilder::new().into_config();
        config.url = websocket_url("https://bob:hunter2@chat.example/ws?token=abc123");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("abc123") && !debug.contains("bob"));
        assert!(debug.contains(r#"url: "wss://<redacted>@chat.example/ws?<redacted>""#));
    }

    #[test]
    fn debug_output_hides_header_values() {
        let builder = ClientBuilder::new().header("Authorization", "Bearer secret");
        let debug = format!("{builder:?}");
        assert!(debug.contains("Authorization"));
        assert!(!debug.contains("secret"));
    }
}
