//! [`NatsBackplane`]: the nodes of a service talk through NATS subjects, one per route, and
//! each node subscribes to the routes it serves.
//!
//! Over 600 lines (684): one backplane whole: its builder (every option with its docs), the
//! connection, the `Backplane` implementation and the subscriptions it keeps; they share
//! the builder's private state.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, ServerAddr, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::{AbortHandle, Abortable, SelectAll};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{NatsConnectError, subject};
use crate::backplane::{Backplane, BackplaneError, Inbox, Inboxes, Route};
use crate::random::random_bytes;

/// How long a subscription may take to be confirmed by the server (a join, the
/// backplane's first subscription, the check after a reconnection), and a publish to be
/// taken by the connection.
const LIMIT: Duration = Duration::from_secs(5);

/// How often the connection is checked with a PING when nothing else arrives (unless
/// [`NatsBackplaneBuilder::options`] are given): async-nats reconnects once two go
/// unanswered, so a connection that died without a word is noticed within about 30 s.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// A [`Backplane`] through NATS: every route is a subject, and a node subscribes to a
/// route's subject only while it serves the route, so it receives a topic's traffic only
/// while it has a subscriber to the topic, and a session's only while it holds the session.
///
/// | route | subject |
/// |---|---|
/// | a topic | `<prefix>.t.<topic, escaped>` (see below) |
/// | a session | `<prefix>.s.<32 hex digits>` (a keyed hash of the session key, never the key) |
/// | the service (revocations) | `<prefix>.all` |
/// | this backplane's own check subject | `<prefix>.sync.<16 random hex digits>` |
///
/// The prefix is `webwire` unless [set](NatsBackplaneBuilder::prefix). A topic's name may
/// hold what a subject token cannot (`.`, `*`, `>`, spaces, any UTF-8): the token is the
/// name with every byte that is not printable ASCII, and `.`, `*`, `>` and `%`, written as
/// `%XX` (uppercase hex), so `room/1` is `webwire.t.room/1` and `chat.eu` is
/// `webwire.t.chat%2Eeu`; no two topics share a subject. A topic of 1 024 bytes (the
/// longest) takes at most 3 072 bytes escaped, within NATS's default control line of
/// 4 096 bytes with any prefix the builder accepts (at most 256 bytes).
///
/// [`send`](Backplane::send) publishes on the route's subject;
/// [`join`](Backplane::join) subscribes on the first join of a route and resolves once
/// the NATS server has registered the subscription (a message of the backplane's own,
/// published after the `SUB` on the same connection, came back: NATS handles a
/// connection's operations in order); [`leave`](Backplane::leave) unsubscribes on the last
/// leave. Joins are counted per route, so servers sharing one backplane value each join
/// and leave as they please. One task per backplane receives on every subscription and
/// hands each message to the inboxes of the servers built with it (each ignores routes it
/// does not serve, and what it sent itself).
///
/// **While NATS is away** (down, restarting, unreachable): async-nats reconnects by
/// itself (at once, then after 2, 4, … ms up to 4 s between attempts, for as long as the
/// backplane lives) and subscribes again to every subject it had.
/// - [`send`](Backplane::send) fails at once with a [`BackplaneError`] while the
///   connection is down (the server reports it to the caller after delivering to its own
///   connections); so does [`join`](Backplane::join), which is counted all the same: its
///   subscription is made when the connection is back;
/// - what any node publishes while this node's connection is down is lost for this
///   node: core NATS keeps nothing for a subscriber that is not there. Once the
///   connection is back and the server has the subscriptions again (checked by a round
///   trip), the backplane calls [`Inbox::reconnected`] on every inbox, and the servers
///   catch up what they can (see the module's docs for what that is).
///
/// The receiving task, and the connection, end when the last clone of the backplane is
/// dropped (the server holds one while it lives).
///
/// ```no_run
/// use tokio_webwire::nats::NatsBackplane;
/// use tokio_webwire::server::Server;
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let server = Server::builder(())
///     .backplane(NatsBackplane::connect("nats://127.0.0.1:4222").await?)
///     .backplane_secret(std::env::var("WEBWIRE_SECRET")?)
///     .build()?;
/// // Reaches the topic's subscribers on every node that has one.
/// server.publish("news", "headline", "NATS is up").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsBackplane {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Cancels the receiving task when the last clone goes.
    _stop: DropGuard,
}

/// What the backplane's handles and its receiving task share.
struct Shared {
    client: Client,
    prefix: String,
    /// The servers, `host:port`, for messages.
    servers: String,
    inboxes: Inboxes,
    /// Hands a new subscription to the receiving task.
    subscriptions: mpsc::UnboundedSender<Abortable<Subscriber>>,
    /// Messages received on the routes' subjects.
    received: AtomicU64,
    /// Joins, leaves and round trips, one at a time.
    routes: tokio::sync::Mutex<Routes>,
}

/// The routes joined, and what proves a subscription registered.
struct Routes {
    /// By subject: how many joins, and what stops the subscription.
    joined: HashMap<String, Joined>,
    echo: Echo,
}

struct Joined {
    count: usize,
    /// Stops the subscription; `None` while there is none (the connection could not take
    /// it: it is made at the next reconnection).
    stop: Option<AbortHandle>,
}

/// A subject only this backplane subscribes to: a message it publishes there comes back
/// after everything it sent before on the connection has been handled by the server.
struct Echo {
    subject: String,
    subscriber: Subscriber,
    sent: u64,
}

impl Routes {
    /// Returns once the NATS server has handled everything this connection sent before
    /// (subscriptions included), or says why not within [`LIMIT`].
    async fn round_trip(&mut self, client: &Client) -> Result<(), String> {
        let Echo {
            subject,
            subscriber,
            sent,
        } = &mut self.echo;
        *sent += 1;
        let token = Bytes::from(sent.to_string());
        let attempt = async {
            client
                .publish(subject.clone(), token.clone())
                .await
                .map_err(|err| err.to_string())?;
            loop {
                match subscriber.next().await {
                    Some(message) if message.payload == token => return Ok(()),
                    // An earlier round trip's, which gave up waiting.
                    Some(_) => {}
                    None => return Err("the connection closed".to_owned()),
                }
            }
        };
        tokio::time::timeout(LIMIT, attempt)
            .await
            .unwrap_or_else(|_| Err(format!("the server did not answer within {LIMIT:?}")))
    }
}

impl Shared {
    /// Subscribes to `subject` and hands the subscription to the receiving task; what
    /// stops it, or why there is none.
    async fn subscribe(&self, subject: &str) -> Result<AbortHandle, String> {
        let subscriber = subscribe(&self.client, subject.to_owned()).await?;
        let (subscription, stop) = futures_util::stream::abortable(subscriber);
        self.subscriptions
            .send(subscription)
            .map_err(|_| "the backplane is stopping".to_owned())?;
        Ok(stop)
    }
}

/// Options of a [`NatsBackplane`] before it connects: [`NatsBackplane::builder`].
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let backplane = tokio_webwire::nats::NatsBackplane::builder()
///     .prefix("shop")
///     .connect("nats://127.0.0.1:4222")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until it connects"]
pub struct NatsBackplaneBuilder {
    prefix: String,
    options: Option<ConnectOptions>,
    tls: Option<async_nats::rustls::ClientConfig>,
}

impl NatsBackplane {
    /// The first token(s) of every subject of a backplane, unless
    /// [set](NatsBackplaneBuilder::prefix): `webwire`.
    ///
    /// ```
    /// use tokio_webwire::nats::NatsBackplane;
    ///
    /// // `nats sub 'webwire.>'` shows what the nodes send each other.
    /// assert_eq!(NatsBackplane::DEFAULT_PREFIX, "webwire");
    /// ```
    pub const DEFAULT_PREFIX: &'static str = "webwire";

    /// Connects to the NATS server(s) at `url` with the default prefix; see
    /// [`NatsBackplaneBuilder::connect`].
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let backplane = tokio_webwire::nats::NatsBackplane::connect("nats://127.0.0.1:4222").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, NatsConnectError> {
        Self::builder().connect(url).await
    }

    /// A backplane with options: the subject prefix, async-nats's connection options,
    /// a TLS configuration.
    ///
    /// ```
    /// let builder = tokio_webwire::nats::NatsBackplane::builder().prefix("shop");
    /// ```
    pub fn builder() -> NatsBackplaneBuilder {
        NatsBackplaneBuilder {
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            options: None,
            tls: None,
        }
    }

    /// The prefix of its subjects.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let backplane = tokio_webwire::nats::NatsBackplane::connect("nats://127.0.0.1:4222").await?;
    /// assert_eq!(backplane.prefix(), "webwire");
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.inner.shared.prefix
    }

    /// The subject `route` travels on (to watch it with `nats sub`, or to grant it in a
    /// NATS account's permissions).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio_webwire::backplane::Route;
    /// use tokio_webwire::nats::NatsBackplane;
    ///
    /// let backplane = NatsBackplane::connect("nats://127.0.0.1:4222").await?;
    /// let route = Route::topic("chat.eu").ok_or("not a topic")?;
    /// assert_eq!(backplane.subject(&route), "webwire.t.chat%2Eeu");
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn subject(&self, route: &Route) -> String {
        subject::of(&self.inner.shared.prefix, route)
    }

    /// How many messages it has received on the subjects of the routes it joined (and
    /// handed to the servers' inboxes) since it connected: what this node's share of the
    /// service's traffic costs it. Its own check messages are not counted.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let backplane = tokio_webwire::nats::NatsBackplane::connect("nats://127.0.0.1:4222").await?;
    /// assert_eq!(backplane.received(), 0);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn received(&self) -> u64 {
        self.inner.shared.received.load(Ordering::Relaxed)
    }

    /// The async-nats client it publishes and subscribes with (to read its statistics or
    /// its connection state; what it subscribes to is the backplane's business).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio_webwire::nats::{NatsBackplane, async_nats::connection::State};
    ///
    /// let backplane = NatsBackplane::connect("nats://127.0.0.1:4222").await?;
    /// assert_eq!(backplane.client().connection_state(), State::Connected);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.inner.shared.client
    }
}

impl NatsBackplaneBuilder {
    /// The first token(s) of every subject (default [`NatsBackplane::DEFAULT_PREFIX`]):
    /// every node of a service must use the same, and services sharing one NATS each
    /// their own (or an account each). One or more tokens separated by `.`, of printable
    /// ASCII without wildcards, at most 256 bytes (so that the longest topic's subject fits
    /// NATS's default control line); [`connect`](Self::connect) refuses another.
    ///
    /// ```
    /// let builder = tokio_webwire::nats::NatsBackplane::builder().prefix("shop.webwire");
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// async-nats's connection options: credentials (`user_and_password`, `token`,
    /// `credentials_file` needs async-nats's `nkeys` feature), a client name, timeouts,
    /// the reconnection delays, root certificates (`add_root_certificates`), a client
    /// certificate. Their event callback is replaced by the backplane's (it listens for
    /// the connection coming back). Without them: a client named `tokio-webwire` that
    /// PINGs every 10 s (async-nats's default is 60 s).
    ///
    /// ```
    /// use tokio_webwire::nats::{NatsBackplane, async_nats::ConnectOptions};
    ///
    /// let builder = NatsBackplane::builder()
    ///     .options(ConnectOptions::with_user_and_password("node".into(), "s3cret".into()).name("node-1"));
    /// ```
    pub fn options(mut self, options: ConnectOptions) -> Self {
        self.options = Some(options);
        self
    }

    /// TLS with this rustls configuration (its roots, a client certificate), required
    /// whatever the URL's scheme. Without it, a `tls://` URL (or a server that requires
    /// TLS) is spoken to with the operating system's root certificates.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tokio_webwire::nats::{NatsBackplane, async_nats::rustls};
    ///
    /// let roots = rustls::RootCertStore::empty(); // add your CA's certificate
    /// let config = rustls::ClientConfig::builder_with_provider(Arc::new(
    ///     rustls::crypto::ring::default_provider(),
    /// ))
    /// .with_safe_default_protocol_versions()?
    /// .with_root_certificates(roots)
    /// .with_no_client_auth();
    /// let builder = NatsBackplane::builder().tls_config(config);
    /// # Ok::<(), rustls::Error>(())
    /// ```
    pub fn tls_config(mut self, config: async_nats::rustls::ClientConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Connects to the NATS server(s) at `url` (`nats://[user:password@]host[:port]`,
    /// `tls://…` for TLS, several separated by commas: async-nats moves to another when
    /// one goes), subscribes to the service's subject and to its own check subject, and
    /// returns once the server has both (a message sent on the service's subject from
    /// then on reaches the servers built with the backplane). Fails if no server can be
    /// reached now; afterwards the backplane reconnects by itself. Starts a task: call it
    /// inside a tokio runtime.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let backplane = tokio_webwire::nats::NatsBackplane::builder()
    ///     .prefix("shop")
    ///     .connect("nats://10.0.0.1:4222,nats://10.0.0.2:4222")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(self, url: &str) -> Result<NatsBackplane, NatsConnectError> {
        if let Some(why) = subject::invalid_prefix(&self.prefix) {
            return Err(NatsConnectError::InvalidPrefix {
                prefix: self.prefix,
                why,
            });
        }
        let addrs = parse(url)?;
        let servers = addrs
            .iter()
            .map(|addr| format!("{}:{}", addr.host(), addr.port()))
            .collect::<Vec<_>>()
            .join(", ");
        let (events, events_rx) = mpsc::unbounded_channel();
        let mut options = self
            .options
            .unwrap_or_else(|| {
                ConnectOptions::new()
                    .name("tokio-webwire")
                    .ping_interval(PING_INTERVAL)
            })
            .event_callback(move |event| {
                // The receiving task reads them; it is gone only when the backplane is.
                let _ = events.send(event);
                async {}
            });
        if let Some(config) = self.tls {
            options = options.tls_client_config(config).require_tls(true);
        }
        let client =
            options
                .connect(addrs)
                .await
                .map_err(|source| NatsConnectError::Unreachable {
                    servers: servers.clone(),
                    source,
                })?;
        let subscribe_failed = |why: String| NatsConnectError::Subscribe {
            servers: servers.clone(),
            why,
        };
        let echo = format!("{}.sync.{}", self.prefix, hex(&random_bytes::<8>()));
        let echo = Echo {
            subscriber: subscribe(&client, echo.clone())
                .await
                .map_err(subscribe_failed)?,
            subject: echo,
            sent: 0,
        };
        let (subscriptions, subscriptions_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            client,
            prefix: self.prefix,
            servers: servers.clone(),
            inboxes: Inboxes::default(),
            subscriptions,
            received: AtomicU64::new(0),
            routes: tokio::sync::Mutex::new(Routes {
                joined: HashMap::new(),
                echo,
            }),
        });
        let stop = CancellationToken::new();
        tokio::spawn(
            Receiver {
                shared: Arc::clone(&shared),
                subscriptions: subscriptions_rx,
                events: events_rx,
                stop: stop.clone(),
            }
            .run(),
        );
        // Proves that the connection carries messages both ways.
        shared
            .routes
            .lock()
            .await
            .round_trip(&shared.client)
            .await
            .map_err(subscribe_failed)?;
        let backplane = NatsBackplane {
            inner: Arc::new(Inner {
                shared,
                _stop: stop.drop_guard(),
            }),
        };
        Ok(backplane)
    }
}

impl Backplane for NatsBackplane {
    /// Publishes `message` on the route's subject: the nodes subscribed to it get it
    /// (this one too, if it is; its server drops what it sent). Fails at once while the
    /// connection is down, and when the message is over the server's `max_payload`
    /// (1 MiB unless configured).
    async fn send(&self, route: &Route, message: Bytes) -> Result<(), BackplaneError> {
        let shared = &self.inner.shared;
        if shared.client.connection_state() != State::Connected {
            return Err(BackplaneError::new(format!(
                "NATS at {} is not connected",
                shared.servers
            )));
        }
        let subject = subject::of(&shared.prefix, route);
        match tokio::time::timeout(LIMIT, shared.client.publish(subject, message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(BackplaneError::new(err)),
            Err(_) => Err(BackplaneError::new(format!(
                "NATS at {} did not take the message within {LIMIT:?}",
                shared.servers
            ))),
        }
    }

    fn attach(&self, inbox: Inbox) {
        self.inner.shared.inboxes.attach(inbox);
    }

    /// Subscribes to the route's subject on its first join, and returns once the NATS
    /// server has the subscription; a later join only counts (or subscribes, if an
    /// earlier one could not). A join is counted even when it fails (the connection is down, or the server does not confirm within 5 s): the
    /// subscription is then made, or confirmed, when the connection is back, before
    /// [`Inbox::reconnected`].
    async fn join(&self, route: &Route) -> Result<(), BackplaneError> {
        let shared = &self.inner.shared;
        let subject = subject::of(&shared.prefix, route);
        let mut routes = shared.routes.lock().await;
        // Counted first: whatever fails below is made good at the next reconnection (or
        // the next join of the route).
        let joined = routes.joined.entry(subject.clone()).or_insert(Joined {
            count: 0,
            stop: None,
        });
        joined.count += 1;
        if joined.stop.is_some() {
            return Ok(());
        }
        let failed = |why: String| {
            BackplaneError::new(format!(
                "cannot subscribe to {subject} on NATS at {} yet (subscribed when it is back): {why}",
                shared.servers
            ))
        };
        if shared.client.connection_state() != State::Connected {
            // async-nats would queue the subscription until it reconnects; the
            // reconnection makes it instead, with the others that failed.
            return Err(failed("not connected".to_owned()));
        }
        let stop = shared.subscribe(&subject).await.map_err(failed)?;
        if let Some(joined) = routes.joined.get_mut(&subject) {
            joined.stop = Some(stop);
        }
        routes.round_trip(&shared.client).await.map_err(failed)
    }

    /// Counts the leave, and unsubscribes from the route's subject on the last one.
    async fn leave(&self, route: &Route) -> Result<(), BackplaneError> {
        let shared = &self.inner.shared;
        let subject = subject::of(&shared.prefix, route);
        let mut routes = shared.routes.lock().await;
        match routes.joined.get_mut(&subject) {
            Some(joined) if joined.count > 1 => joined.count -= 1,
            Some(_) => {
                // The receiving task drops the subscription, which unsubscribes.
                if let Some(stop) = routes.joined.remove(&subject).and_then(|j| j.stop) {
                    stop.abort();
                }
            }
            None => tracing::debug!(%subject, "backplane: a leave without a join ignored"),
        }
        Ok(())
    }

    // `shared_history` is `None`: core NATS keeps nothing (see the module's docs).
}

impl fmt::Debug for NatsBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBackplane")
            .field("prefix", &self.inner.shared.prefix)
            .field("servers", &self.inner.shared.servers)
            .finish_non_exhaustive()
    }
}

/// The server addresses of `url`: one or more `nats://` or `tls://` URLs separated by
/// commas.
fn parse(url: &str) -> Result<Vec<ServerAddr>, NatsConnectError> {
    let invalid = |why: String| NatsConnectError::InvalidUrl {
        url: crate::client::redact_url(url),
        why,
    };
    let addrs = url
        .split(',')
        .map(|one| {
            let one = one.trim();
            // async-nats's message names what is wrong (the scheme, url's parse error),
            // not the URL.
            let addr: ServerAddr = one
                .parse()
                .map_err(|err: std::io::Error| invalid(err.to_string()))?;
            match addr.scheme() {
                "nats" | "tls" => Ok(addr),
                other => Err(invalid(format!(
                    "the scheme {other:?} is not nats or tls (websockets are not built)"
                ))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(addrs)
}

/// Subscribes to `subject`, waiting at most [`LIMIT`] for the connection to take it.
async fn subscribe(client: &Client, subject: String) -> Result<Subscriber, String> {
    match tokio::time::timeout(LIMIT, client.subscribe(subject)).await {
        Ok(Ok(subscriber)) => Ok(subscriber),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("the connection did not take it within {LIMIT:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The task that receives on every subscription and tells of reconnections.
struct Receiver {
    shared: Arc<Shared>,
    subscriptions: mpsc::UnboundedReceiver<Abortable<Subscriber>>,
    events: mpsc::UnboundedReceiver<Event>,
    stop: CancellationToken,
}

impl Receiver {
    async fn run(mut self) {
        let mut streams = SelectAll::new();
        // The first `Connected` is the connection `connect` made; each later one a
        // reconnection (counted on those rather than on `Disconnected`: async-nats drops
        // events when its own queue is full, and a missed catch-up would go unnoticed).
        let mut connected_before = false;
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                Some(subscription) = self.subscriptions.recv() => streams.push(subscription),
                Some(message) = streams.next(), if !streams.is_empty() => {
                    let message: async_nats::Message = message;
                    self.shared.received.fetch_add(1, Ordering::Relaxed);
                    self.shared.inboxes.deliver(&message.payload);
                }
                Some(event) = self.events.recv() => match event {
                    Event::Disconnected => {
                        tracing::warn!(
                            servers = %self.shared.servers,
                            "NATS backplane disconnected; messages published until it is back are not received"
                        );
                    }
                    Event::Connected if connected_before => {
                        // A task of its own: the round trip must not hold up deliveries.
                        tokio::spawn(caught_up(Arc::clone(&self.shared)));
                    }
                    Event::Connected => connected_before = true,
                    Event::SlowConsumer(_) => tracing::warn!(
                        servers = %self.shared.servers,
                        "NATS backplane: messages dropped, a subscription's buffer was full"
                    ),
                    // One per failed attempt while NATS is away: the warning above said it.
                    Event::ClientError(error) => tracing::debug!(
                        servers = %self.shared.servers, %error, "NATS backplane"
                    ),
                    Event::ServerError(error) => tracing::warn!(
                        servers = %self.shared.servers, %error, "NATS backplane: the server says"
                    ),
                    other => tracing::info!(servers = %self.shared.servers, event = %other, "NATS backplane"),
                },
            }
        }
    }
}

/// After a reconnection (async-nats has sent the subscriptions it had again, before
/// anything else): the routes joined without a subscription are subscribed, and once the
/// server has them all, the inboxes are told.
async fn caught_up(shared: Arc<Shared>) {
    let mut routes = shared.routes.lock().await;
    for (subject, joined) in &mut routes.joined {
        if joined.stop.is_none() {
            match shared.subscribe(subject).await {
                Ok(stop) => joined.stop = Some(stop),
                Err(why) => tracing::warn!(
                    servers = %shared.servers,
                    %subject,
                    %why,
                    "NATS backplane: cannot subscribe yet (tried again at the next reconnection)"
                ),
            }
        }
    }
    let confirmed = routes.round_trip(&shared.client).await;
    drop(routes);
    match confirmed {
        Ok(()) => tracing::info!(servers = %shared.servers, "NATS backplane subscribed again"),
        // Told all the same: a late catch-up is better than none (another reconnection
        // will tell them again).
        Err(why) => tracing::warn!(
            servers = %shared.servers,
            %why,
            "NATS backplane: the subscriptions could not be confirmed after a reconnection"
        ),
    }
    shared.inboxes.reconnected();
}
