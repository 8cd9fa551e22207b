//! [`ServerBuilder`]: every option of a server, its default and its limits.
//!
//! Over 600 lines (958, 910 before the unit tests): one method per option of a server, each
//! with its default, its limits and the memory it implies in its docs, which are most of
//! the file; `build` checks them all in one place.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::backplane::History;
use crate::backplane::{Backplane, DynBackplane, Local};
use crate::protocol::{AcceptConf, Message};
use crate::server::config::{Config, ConfigError, Limits, SlowSubscriber, memory_per_connection};
use crate::server::history::Rules;
use crate::server::origin::{self, Origins};
use crate::server::sessions::SessionConfig;
use crate::server::{Handler, Server, Shared};
use crate::session::{DefaultKeyGenerator, MemoryStore, SessionKeyGenerator, SessionStore};

/// The default [`ServerBuilder::write_batch_size`]: the largest batch with which a client
/// that pipelines and never reads costs no more than it did before batches (see the
/// option's docs for the figures). The client's own sockets batch more
/// (`transport::socket::WRITE_BURST`, 64 KiB): what a server that stops reading
/// makes a client hold is the client's own choice.
const DEFAULT_WRITE_BATCH: usize = 32 * 1024;

/// Builds a [`Server`]: `Server::builder(handler)`, options, [`build`](Self::build).
///
/// | option | default | meaning |
/// |---|---|---|
/// | [`read_timeout`](Self::read_timeout) | 60 s | close a connection that sent nothing (not even a heartbeat or ping) for this long |
/// | [`max_message_size`](Self::max_message_size) | 8192 B | largest message accepted; larger ones close the connection (1009) |
/// | [`sub_protocol`](Self::sub_protocol) | none | application protocol name sent in the handshake |
/// | [`max_concurrent_requests`](Self::max_concurrent_requests) | 8 | handlers of one connection waiting at once (those that finish at once take none); reading pauses beyond |
/// | [`outbound_queue_len`](Self::outbound_queue_len) | 8 | signals waiting to be written to one connection, in messages of `max_message_size` bytes (more when smaller); senders wait beyond |
/// | [`write_timeout`](Self::write_timeout) | 10 s | drop a connection whose peer accepts no data for this long |
/// | [`write_batch_size`](Self::write_batch_size) | 32 KiB | frames one connection queues before writing, while its client reads everything (16 KiB once it does not) |
/// | [`handshake_timeout`](Self::handshake_timeout) | 10 s | time a new socket has to send its HTTP upgrade request |
/// | [`max_upgrade_request_size`](Self::max_upgrade_request_size) | 8 KiB | largest HTTP upgrade request (431 beyond) |
/// | [`shutdown_timeout`](Self::shutdown_timeout) | 30 s | how long a graceful shutdown waits for running handlers |
/// | [`close_timeout`](Self::close_timeout) | 2 s | how long the server waits for the client to answer its close frame |
/// | [`abandoned_handler_timeout`](Self::abandoned_handler_timeout) | 5 s | how long handlers of a client that has gone may still run before they are dropped |
/// | [`max_connections`](Self::max_connections) | 10 000 | open connections at once; 503 beyond |
/// | [`max_pending_upgrades`](Self::max_pending_upgrades) | 1024 | accepted sockets not yet upgraded (TLS handshake, HTTP request, `before_upgrade`); beyond, the one silent longest is closed to make room, or the new one |
/// | [`max_connections_per_source`](Self::max_connections_per_source) | 1000 | open connections from one source (an IPv4 address, an IPv6 /64); 503 beyond |
/// | [`max_pending_upgrades_per_source`](Self::max_pending_upgrades_per_source) | 64 | sockets of one source waiting for their upgrade; beyond, closed at once |
/// | [`source_connect_rate`](Self::source_connect_rate) | 100/s, burst 1000 | sockets one source may open that do not upgrade (one that upgrades gives its share back) |
/// | [`trusted_proxies`](Self::trusted_proxies) | none | proxies whose `X-Forwarded-For` names the client |
/// | [`allowed_origins`](Self::allowed_origins), [`allow_any_origin`](Self::allow_any_origin) | same host only | which browser pages may connect (403 for others) |
/// | [`sessions`](Self::sessions) | on | whether clients may have sessions |
/// | [`session_store`](Self::session_store) | [`MemoryStore`] | where sessions are kept |
/// | [`session_key_generator`](Self::session_key_generator) | [`DefaultKeyGenerator`] | how keys are made |
/// | [`max_session_connections`](Self::max_session_connections) | 0 (no limit) | connections per session |
/// | [`max_sessions_per_source`](Self::max_sessions_per_source) | 1000 | sessions one source address keeps in the store; beyond, its own oldest are evicted |
/// | [`ipv6_source_prefix`](Self::ipv6_source_prefix) | 64 | the prefix that makes an IPv6 source |
/// | [`backplane`](Self::backplane) | [`Local`] | how publishes, session signals and revocations reach other servers |
/// | [`slow_subscriber`](Self::slow_subscriber) | [`SlowSubscriber::Disconnect`] | what a publish does with a subscriber whose queue is full |
/// | [`max_topics_per_connection`](Self::max_topics_per_connection) | 1024 | topics one connection may subscribe to |
///
/// ```
/// use std::time::Duration;
/// use tokio_webwire::server::Server;
///
/// let server = Server::builder(())
///     .read_timeout(Duration::from_secs(30))
///     .max_message_size(64 * 1024)
///     .sub_protocol("chat")
///     .build()
///     .unwrap();
/// # drop(server);
/// ```
///
/// # Memory
///
/// Every buffer the server keeps for a connection is bounded by these options: one
/// connection can make it hold at most [`memory_per_connection`](Self::memory_per_connection)
/// bytes (280 KiB with the defaults), all connections together at most
/// [`memory_bound`](Self::memory_bound) (about 2.7 GiB at the default 10 000 connections).
/// A client that sends without reading stops being read when its share is full and is
/// dropped after the write timeout. The kernel's socket buffers come on top (tune them
/// with the `net.ipv4.tcp_rmem`/`tcp_wmem` sysctls). To serve more connections on less
/// memory, lower `max_message_size` first: the bound is mostly messages.
#[must_use = "a builder does nothing until `build` is called"]
pub struct ServerBuilder<H> {
    handler: H,
    read_timeout: Duration,
    max_message_size: usize,
    sub_protocol: Bytes,
    max_concurrent_requests: usize,
    outbound_queue_len: usize,
    write_timeout: Duration,
    write_batch_size: usize,
    handshake_timeout: Duration,
    max_upgrade_request_size: usize,
    shutdown_timeout: Duration,
    abandoned_handler_timeout: Duration,
    close_timeout: Duration,
    max_connections: usize,
    max_pending_upgrades: usize,
    max_connections_per_source: usize,
    max_pending_upgrades_per_source: usize,
    source_connect_rate: (u32, u32),
    trusted_proxies: Vec<std::net::IpAddr>,
    /// `None`: any origin; else the listed ones (and the same host), checked by `build`.
    allowed_origins: Option<Vec<String>>,
    sessions: SessionConfig,
    backplane: Arc<dyn DynBackplane>,
    backplane_secret: Option<Vec<u8>>,
    slow_subscriber: SlowSubscriber,
    max_topics_per_connection: usize,
    history: Rules,
}

impl<H: Handler> Server<H> {
    /// A builder to set options before the server is built.
    pub fn builder(handler: H) -> ServerBuilder<H> {
        ServerBuilder::new(handler)
    }
}

impl<H: Handler> ServerBuilder<H> {
    pub(crate) fn new(handler: H) -> Self {
        ServerBuilder {
            handler,
            read_timeout: Duration::from_secs(60),
            max_message_size: 8192,
            sub_protocol: Bytes::new(),
            max_concurrent_requests: 8,
            outbound_queue_len: 8,
            write_timeout: Duration::from_secs(10),
            write_batch_size: DEFAULT_WRITE_BATCH,
            handshake_timeout: Duration::from_secs(10),
            max_upgrade_request_size: 8 * 1024,
            shutdown_timeout: Duration::from_secs(30),
            abandoned_handler_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(2),
            max_connections: 10_000,
            max_pending_upgrades: 1024,
            max_connections_per_source: 1000,
            max_pending_upgrades_per_source: 64,
            source_connect_rate: (100, 1000),
            trusted_proxies: Vec::new(),
            allowed_origins: Some(Vec::new()),
            sessions: SessionConfig {
                enabled: true,
                store: Arc::new(MemoryStore::default()),
                keys: Arc::new(DefaultKeyGenerator),
                max_connections: 0,
                max_per_source: 1000,
                v6_prefix: 64,
            },
            backplane: Arc::new(Local),
            backplane_secret: None,
            slow_subscriber: SlowSubscriber::default(),
            max_topics_per_connection: 1024,
            history: Rules::new(10_000),
        }
    }

    /// How many topics one connection may subscribe to at once (default 1024; 0: no
    /// limit); [`Connection::subscribe`](crate::server::Connection::subscribe) fails with
    /// [`TopicError::TooManyTopics`](crate::server::TopicError::TooManyTopics) beyond. A
    /// subscription costs about 100 bytes (its entry in the topic and the connection's
    /// list) plus the topic's name while it has subscribers, so the default bounds what a
    /// client choosing topic names can make the server hold to about 1 MiB per
    /// connection with short names (names are at most
    /// [`MAX_TOPIC_LEN`](crate::server::MAX_TOPIC_LEN) bytes).
    ///
    /// ```
    /// let server = tokio_webwire::server::Server::builder(())
    ///     .max_topics_per_connection(16)
    ///     .build()?;
    /// # Ok::<(), tokio_webwire::server::ConfigError>(())
    /// ```
    pub fn max_topics_per_connection(mut self, limit: usize) -> Self {
        self.max_topics_per_connection = limit;
        self
    }

    /// Topics matching `pattern` keep a [`History`] of their last publications, with a
    /// position each, so that a client of the topics extension (`docs/topics.md`) that
    /// reconnects gets exactly what it missed. `pattern` is a topic name, or a prefix
    /// ending in `*` (`"room/*"`); an exact name wins over prefixes, a longer prefix over
    /// a shorter one. Topics without a history work as before. The server keeps at most
    /// [`max_history_topics`](Self::max_history_topics) histories, each at most
    /// [`History::memory_per_topic`] bytes.
    ///
    /// Where: in this server's memory, unless the [`backplane`](Self::backplane) shares
    /// histories between the nodes
    /// ([`Backplane::shared_history`](crate::backplane::Backplane::shared_history): the
    /// Redis backplane does, feature `redis`). Then every node takes a topic's positions
    /// from the shared history and delivers its publications in their order, so a
    /// client resumes on any node; a publish to such a topic fails with
    /// [`TopicError::History`](crate::server::TopicError::History) while the shared
    /// store is away (`docs/topics.md`, section 5.1).
    ///
    /// ```
    /// use tokio_webwire::server::{History, Server};
    ///
    /// let server = Server::builder(())
    ///     .history("room/*", History::last(100).max_bytes(64 * 1024))
    ///     .history("news", History::last(10))
    ///     .build()?;
    /// # Ok::<(), tokio_webwire::server::ConfigError>(())
    /// ```
    pub fn history(mut self, pattern: &str, history: History) -> Self {
        self.history.add(pattern, history);
        self
    }

    /// How many topics may keep a history at once (default 10 000; at least 1). A topic's
    /// history is made by its first publication or client subscription; beyond the limit
    /// the least recently published one is dropped, so its subscribers are told they were
    /// not recovered when they resume (its next history has a new epoch). With the
    /// histories' own bounds this bounds their memory: `max_history_topics` times the
    /// largest [`History::memory_per_topic`] ([`history_memory_bound`](Self::history_memory_bound)).
    /// With shared histories the histories are in the shared store and this bounds the
    /// per-topic ordering states a node keeps for topics nobody here subscribes to.
    ///
    /// ```
    /// use tokio_webwire::server::{History, Server};
    ///
    /// let builder = Server::builder(())
    ///     .history("room/*", History::last(100).max_bytes(64 * 1024))
    ///     .max_history_topics(1000);
    /// assert_eq!(builder.history_memory_bound(), 1000 * (64 * 1024 + 100 * History::ENTRY_OVERHEAD));
    /// ```
    pub fn max_history_topics(mut self, limit: usize) -> Self {
        self.history.max_topics = limit.max(1);
        self
    }

    /// The most the topics' histories hold together, in bytes: see
    /// [`max_history_topics`](Self::max_history_topics).
    #[must_use]
    pub fn history_memory_bound(&self) -> usize {
        self.history.memory_bound()
    }

    /// How the operations that concern every server of a service reach the other servers
    /// (default [`Local`]: there are none). See [`backplane`](crate::backplane): with a
    /// shared backplane, [`Server::publish`], [`Server::signal_session`] and
    /// [`Server::close_session`] reach the connections of every server; give the servers
    /// a shared [`session_store`](Self::session_store) too, so a client restores its
    /// session on any of them.
    ///
    /// A store per server (a [`MemoryStore`] or a `FileStore` in each process) with a
    /// shared backplane is allowed and consistent: a session ended on one server (revoked,
    /// or its last connection there logged out) is removed from every server's store,
    /// each removing it from its own when the backplane brings the news, so a revoked
    /// session is restorable nowhere. Sessions are then restorable only on the server
    /// that created them (a load balancer with sticky sessions). It is not refused at
    /// `build`, because a store per process cannot be told from a shared one: servers in
    /// one process (tests, a demo) may share one `Arc<MemoryStore>`, and each server
    /// removing the key is then a second removal of a key already gone. With a store
    /// that is shared (Redis), that second removal is one round trip per server and
    /// revocation.
    ///
    /// ```
    /// use tokio_webwire::backplane::Local;
    /// use tokio_webwire::server::Server;
    ///
    /// let server = Server::builder(()).backplane(Local).build()?;
    /// # Ok::<(), tokio_webwire::server::ConfigError>(())
    /// ```
    pub fn backplane(mut self, backplane: impl Backplane) -> Self {
        self.backplane = Arc::new(backplane);
        self
    }

    /// The service's secret, shared by every node of the service and by nobody else:
    /// required with any [`backplane`](Self::backplane) but [`Local`], at least
    /// [`MIN_SECRET_LEN`](crate::backplane::MIN_SECRET_LEN) bytes (32 random bytes are
    /// right; [`build`](Self::build) fails without it).
    ///
    /// Every message between nodes carries a tag made with it (HMAC-SHA256), checked
    /// before anything of it is applied: a message forged by whoever can write to the
    /// backplane, altered on the way, or sent by another service (another secret) is
    /// dropped and counted ([`Server::backplane_refused`]). It also keys the hash that
    /// names a session's route (no session key travels in clear between nodes) and
    /// encrypts the key a revocation carries. `docs/backplane.md` specifies all three.
    ///
    /// To change the secret, restart every node with the new one: nodes with different
    /// secrets refuse each other's messages.
    ///
    /// ```
    /// use tokio_webwire::server::Server;
    ///
    /// // From the environment or a secrets manager in a real service.
    /// let secret = b"32 bytes of random from a vault!";
    /// let server = Server::builder(()).backplane_secret(secret).build()?;
    /// # Ok::<(), tokio_webwire::server::ConfigError>(())
    /// ```
    pub fn backplane_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.backplane_secret = Some(secret.as_ref().to_vec());
        self
    }

    /// What a publish or session signal does with a subscriber whose outbound queue
    /// ([`outbound_queue_len`](Self::outbound_queue_len)) is full (default
    /// [`SlowSubscriber::Disconnect`]). Either way the publisher and the other subscribers
    /// never wait; a queued signal holds a reference to the one encoded frame, not a copy.
    ///
    /// ```
    /// use tokio_webwire::server::{Server, SlowSubscriber};
    ///
    /// let server = Server::builder(()).slow_subscriber(SlowSubscriber::Skip).build()?;
    /// # Ok::<(), tokio_webwire::server::ConfigError>(())
    /// ```
    pub fn slow_subscriber(mut self, policy: SlowSubscriber) -> Self {
        self.slow_subscriber = policy;
        self
    }

    /// How many WebWire connections may be open at once (default 10 000; 0: no limit).
    /// Beyond it, upgrades are refused with HTTP 503 `too many connections` (headless
    /// WebSockets are closed with code 1013), so a flood of clients cannot exhaust memory
    /// or file descriptors; a full server refuses before
    /// [`Handler::before_upgrade`](crate::server::Handler::before_upgrade) runs, and
    /// again after it if the last place went meanwhile. An idle connection costs about
    /// 10 KiB; the most any connection can make the server hold is [`memory_per_connection`](Self::memory_per_connection),
    /// so this limit times that is the server's bound ([`memory_bound`](Self::memory_bound)).
    pub fn max_connections(mut self, limit: usize) -> Self {
        self.max_connections = limit;
        self
    }

    /// How many sockets may wait for their upgrade at once (default 1024; 0: no limit):
    /// sockets the server accepted (or was given, headless) whose TLS handshake, HTTP
    /// request or [`before_upgrade`](crate::server::Handler::before_upgrade) is not done
    /// yet. When all places are taken, the waiting socket that has sent the fewest bytes
    /// (the oldest of those, and at least a quarter of a second old) is closed to make room
    /// for the new one, so sockets that only hold places (silent, or a byte now and then)
    /// cannot keep a client that talks out; if every waiting socket is younger, the new
    /// one is closed at once, before any TLS or HTTP work. Each source is also held to
    /// [`max_pending_upgrades_per_source`](Self::max_pending_upgrades_per_source).
    ///
    /// Until the upgrade, nothing else bounds them but the
    /// [`handshake_timeout`](Self::handshake_timeout): without this limit, a flood of
    /// sockets that open TLS handshakes (each costing CPU) or send their request slowly
    /// would all be served at once, [`max_connections`](Self::max_connections) counting
    /// only upgraded connections. Requests a hyper or axum application hands over
    /// (`Server::upgrade`) are not counted: the application accepted and read them.
    ///
    /// Memory: a waiting socket holds at most its request head
    /// ([`max_upgrade_request_size`](Self::max_upgrade_request_size), 8 KiB by default, so
    /// 8 MiB at the default limit), plus with TLS the TLS session and its buffers.
    ///
    /// ```
    /// use tokio_webwire::server::Server;
    ///
    /// // A small server: a few hundred clients, each connecting once.
    /// let server = Server::builder(()).max_pending_upgrades(256).build().unwrap();
    /// # drop(server);
    /// ```
    pub fn max_pending_upgrades(mut self, limit: usize) -> Self {
        self.max_pending_upgrades = limit;
        self
    }

    /// How many open connections one source may have (default 1000; 0: no limit). A
    /// source is an IPv4 address or an IPv6 prefix
    /// ([`ipv6_source_prefix`](Self::ipv6_source_prefix)); an upgrade beyond is answered
    /// 503 (headless WebSockets: closed with 1013), as beyond
    /// [`max_connections`](Self::max_connections), so that one host cannot take every
    /// place. Counted on every way in, mounted upgrades included, by the address the
    /// server was given for the connection.
    ///
    /// 1000 is 1000 users behind one address (an office, a campus, a carrier-grade NAT)
    /// with one connection each; raise it when more of yours share an address.
    ///
    /// ```
    /// use tokio_webwire::server::Server;
    ///
    /// let server = Server::builder(()).max_connections_per_source(5_000).build().unwrap();
    /// # drop(server);
    /// ```
    pub fn max_connections_per_source(mut self, limit: usize) -> Self {
        self.max_connections_per_source = limit;
        self
    }

    /// How many sockets of one source may wait for their upgrade at once (default 64; 0:
    /// no limit); one beyond is closed at once. So one source cannot fill
    /// [`max_pending_upgrades`](Self::max_pending_upgrades) with sockets that never send
    /// their request: it holds at most this many places. 64 lets the users behind one
    /// address connect 64 at a time, a handshake each (milliseconds); more wait for their
    /// client's next attempt.
    ///
    /// ```
    /// use tokio_webwire::server::Server;
    ///
    /// let server = Server::builder(()).max_pending_upgrades_per_source(16).build().unwrap();
    /// # drop(server);
    /// ```
    pub fn max_pending_upgrades_per_source(mut self, limit: usize) -> Self {
        self.max_pending_upgrades_per_source = limit;
        self
    }

    /// How fast one source may open sockets that do not upgrade: `per_second` on average,
    /// `burst` at once (default 100 per second, burst 1000; `per_second` 0: no limit). A
    /// socket beyond is closed at once. A socket that upgrades gives back what it took, so
    /// clients that connect and talk are never held back by it, however many share an
    /// address (a thousand users behind one NAT reconnecting after a restart pass in one
    /// burst); a source whose sockets are silent, fail their TLS handshake or are refused
    /// is slowed to `per_second`.
    ///
    /// ```
    /// use tokio_webwire::server::Server;
    ///
    /// let server = Server::builder(()).source_connect_rate(20, 200).build().unwrap();
    /// # drop(server);
    /// ```
    pub fn source_connect_rate(mut self, per_second: u32, burst: u32) -> Self {
        self.source_connect_rate = (per_second, burst.max(1));
        self
    }

    /// Reverse proxies (and load balancers) in front of the server, by address: a
    /// connection from one of them is the client's that its `X-Forwarded-For` header names
    /// (the last address in it that is not itself a trusted proxy), so that
    /// [`Connection::remote_addr`](crate::server::Connection::remote_addr) (with port 0),
    /// `before_upgrade`'s [`UpgradeRequest::remote_addr`](crate::server::UpgradeRequest::remote_addr),
    /// the limits per source and the session budget see the client, not the proxy. The
    /// proxy's own sockets are not held to the per-source limits on pending upgrades, since
    /// it carries many clients. From any other peer the header is ignored: a client could
    /// write anything in it. Default: none.
    ///
    /// ```
    /// use tokio_webwire::server::Server;
    ///
    /// // nginx on the same host, with `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`
    /// let server = Server::builder(()).trusted_proxies(["127.0.0.1".parse().unwrap()]).build();
    /// # drop(server);
    /// ```
    pub fn trusted_proxies(mut self, proxies: impl IntoIterator<Item = std::net::IpAddr>) -> Self {
        self.trusted_proxies = proxies.into_iter().collect();
        self
    }

    /// Origins, besides the server's own host, whose pages may open connections: each
    /// `scheme://host[:port]` exactly as browsers send it in `Origin`, e.g.
    /// `"https://app.example.com"` (compared without regard to case; a path or a `*`
    /// anywhere, as there are no wildcards, fails [`build`](Self::build) with
    /// [`ConfigError::Origin`]). Replaces the list of an earlier call.
    ///
    /// By default an upgrade whose `Origin` header names another host or port than its
    /// `Host` header (a default port may be left out on either side: `https://a` is the
    /// origin of `Host: a:443`), or carries user information (`http://evil@a`), is
    /// refused with 403, as the Go reference server does: this is the defence
    /// against cross-site WebSocket hijacking, where a page of any site opens a WebSocket
    /// to your server and the browser adds the user's cookies. Requests without `Origin`
    /// (clients that are not browsers, ours included) always pass. List the origins of
    /// your pages when they are served from another host than the WebSocket, or when a
    /// reverse proxy rewrites `Host`.
    ///
    /// ```
    /// use tokio_webwire::server::Server;
    ///
    /// let server = Server::builder(())
    ///     .allowed_origins(["https://app.example.com", "https://admin.example.com"])
    ///     .build()
    ///     .unwrap();
    /// # drop(server);
    /// assert!(Server::builder(()).allowed_origins(["*"]).build().is_err());
    /// ```
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_origins = Some(origins.into_iter().map(Into::into).collect());
        self
    }

    /// Accepts upgrades whatever their `Origin` (the check of
    /// [`allowed_origins`](Self::allowed_origins) is off): only for servers whose clients
    /// authenticate every connection with something a foreign page cannot send (a token
    /// in a header or the first request, no cookies), or that serve public data.
    pub fn allow_any_origin(mut self) -> Self {
        self.allowed_origins = None;
        self
    }

    /// Whether clients may have sessions (default: yes). Without, session requests are
    /// answered with "sessions disabled" and [`Connection::create_session`] fails.
    ///
    /// [`Connection::create_session`]: crate::server::Connection::create_session
    pub fn sessions(mut self, enabled: bool) -> Self {
        self.sessions.enabled = enabled;
        self
    }

    /// Where sessions are kept (default: [`MemoryStore`], lost when the process ends;
    /// [`FileStore`](crate::session::FileStore) survives restarts). Servers behind one
    /// load balancer share a store (`RedisStore`, feature `redis`), or one `Arc` of a
    /// store when they run in one process; with a store each, a client restores its
    /// session only on the server that made it (revocations still reach every store
    /// through the [`backplane`](Self::backplane)).
    pub fn session_store(mut self, store: impl SessionStore) -> Self {
        self.sessions.store = Arc::new(store);
        self
    }

    /// How session keys are made (default: [`DefaultKeyGenerator`], 256 random bits).
    pub fn session_key_generator(mut self, keys: impl SessionKeyGenerator) -> Self {
        self.sessions.keys = Arc::new(keys);
        self
    }

    /// How many connections may hold one session at once (default 0: no limit); a restore
    /// beyond it is refused.
    pub fn max_session_connections(mut self, limit: usize) -> Self {
        self.sessions.max_connections = limit;
        self
    }

    /// How many sessions created from one source (an IPv4 address, an IPv6 /64: see
    /// [`ipv6_source_prefix`](Self::ipv6_source_prefix)) the store keeps (default 1000; 0:
    /// no budget). A source that creates more loses its own oldest sessions from the store
    /// (they stay on their connections, but a reconnection cannot restore them): so a
    /// script that logs in over and over from one address pushes out its own sessions,
    /// never the other users'.
    ///
    /// 1000 is 1000 users behind one address (an office, a campus, a carrier-grade NAT)
    /// each keeping a session; raise it if more of yours share one. The server keeps the
    /// keys it counts: about 100 bytes per session, for at most 65 536 sources (the
    /// source heard from longest ago is forgotten beyond), and takes the source from
    /// [`Connection::remote_addr`](crate::server::Connection::remote_addr): behind a proxy,
    /// that is the proxy's, unless your `before_upgrade` knows better.
    ///
    /// ```
    /// use tokio_webwire::server::Server;
    ///
    /// let server = Server::builder(()).max_sessions_per_source(5_000).build();
    /// # drop(server);
    /// ```
    pub fn max_sessions_per_source(mut self, sessions: usize) -> Self {
        self.sessions.max_per_source = sessions;
        self
    }

    /// The prefix by which IPv6 sources are counted (default 64, at most 128): a host, or
    /// a home, is handed a whole /64, so a finer count would let one client be many
    /// sources. IPv4-mapped IPv6 addresses count as their IPv4 address.
    ///
    /// ```
    /// use tokio_webwire::server::Server;
    ///
    /// // A network whose users each have a /56.
    /// let server = Server::builder(()).ipv6_source_prefix(56).build();
    /// # drop(server);
    /// ```
    pub fn ipv6_source_prefix(mut self, bits: u8) -> Self {
        self.sessions.v6_prefix = bits.min(128);
        self
    }

    /// How long a connection may stay silent before the server closes it (default 60 s,
    /// at least 1 s). Sent to clients in the handshake; they send heartbeats at 75 % of it.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// The largest message, in bytes, the server accepts (default 8192, at least 32): a
    /// larger one closes the connection with code 1009. Sent to clients in the handshake
    /// (the protocol's "message buffer size"); the Go client expects 8192 unless configured
    /// otherwise. Server signals larger than this are refused before they are sent.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The application protocol name sent in the handshake (default: none). Clients that
    /// expect a name refuse a server that sends another.
    pub fn sub_protocol(mut self, name: impl Into<Bytes>) -> Self {
        self.sub_protocol = name.into();
        self
    }

    /// How many requests and signals of one connection are handled at once on tasks of
    /// their own (default 8): handlers that finish when first polled (most) take no permit.
    /// When all are busy the server stops reading that connection until one finishes;
    /// 1 handles every message, session requests included, one by one, in order. Each
    /// permit may hold a request and its reply, `2 × max_message_size` bytes
    /// ([`memory_per_connection`](Self::memory_per_connection)).
    pub fn max_concurrent_requests(mut self, limit: usize) -> Self {
        self.max_concurrent_requests = limit;
        self
    }

    /// How much may wait to be written to one connection, in messages of the largest size
    /// (default 8): signals and session notifications queued for one connection take up to
    /// this times `max_message_size` bytes, each counted with its length plus 64 bytes of
    /// bookkeeping, so the queue holds 8 messages of 8 KiB with the defaults, or about 60
    /// publishes of 1 KiB. When it is full,
    /// [`Connection::signal`](crate::server::Connection::signal) waits,
    /// [`Connection::try_signal`](crate::server::Connection::try_signal) fails and a publish
    /// applies the [`slow_subscriber`](Self::slow_subscriber) policy. It fills only while the
    /// client reads slower than the server sends
    /// ([`memory_per_connection`](Self::memory_per_connection)).
    pub fn outbound_queue_len(mut self, len: usize) -> Self {
        self.outbound_queue_len = len;
        self
    }

    /// How long a write may wait for a peer that accepts no data (default 10 s); then the
    /// connection is dropped. It measures a lack of progress: the clock starts when a write
    /// has to wait and starts again whenever the peer takes some bytes, so a slow client
    /// that keeps reading is never cut off, however long a large message takes.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// How many bytes of frames one connection queues before it writes them, while its
    /// client reads everything it is given (default 32 KiB; at least 1). Replies and
    /// signals wait in the queue until nothing more is ready or it holds this much, so a
    /// pipelining client gets many in one system call; once a write finds the client not
    /// reading, the queue takes at most 16 KiB (or this, if smaller) until it has been
    /// written empty again.
    ///
    /// The trade: a larger batch costs fewer system calls per request, and a client that
    /// stops reading can make the server hold up to this much more
    /// ([`memory_per_connection`](Self::memory_per_connection)). On the load bench
    /// (`benches/load/`, 4 connections × 64 pipelined requests, medians of 3) the server
    /// took 1.02× the generous reference server's CPU per request at 1 KiB and 1.13× at
    /// 4 KiB with 32 KiB, 1.02× and 1.08× with 64 KiB, 1.16× and 1.35× with 16 KiB, while
    /// 300 clients that pipeline 8 KiB requests and never read held 41 KiB each with
    /// 32 KiB, 50 KiB with 64 KiB and 35 KiB with 16 KiB. The default is the largest of
    /// these that keeps such clients within what they cost before the batch existed
    /// (44 KiB).
    ///
    /// ```
    /// use tokio_webwire::server::Server;
    ///
    /// let lean = Server::builder(()).write_batch_size(16 * 1024);
    /// assert_eq!(lean.memory_per_connection(), 270_448);
    /// ```
    pub fn write_batch_size(mut self, bytes: usize) -> Self {
        self.write_batch_size = bytes;
        self
    }

    /// How long a new socket has to send its HTTP upgrade request (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The largest HTTP upgrade request, head and headers, in bytes (default 8 KiB).
    pub fn max_upgrade_request_size(mut self, bytes: usize) -> Self {
        self.max_upgrade_request_size = bytes;
        self
    }

    /// How long [`Server::shutdown`] waits for running handlers before it stops them
    /// (default 30 s). Requests whose handler was stopped are answered with the shutdown
    /// reply.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long the handlers of a connection whose client has gone may still run
    /// (default 5 s); then they are dropped at whatever await point they have reached, as
    /// at the shutdown deadline.
    ///
    /// A client that closes its connection, or whose connection is lost, while handlers of
    /// it wait (on a database, another service) can no longer receive their replies. Its
    /// place among [`max_connections`](Self::max_connections) is given back as soon as its
    /// socket is closed, whatever still runs; its handlers, and the memory they hold, are
    /// gone at most this long after. The
    /// [`disconnected`](crate::server::Handler::disconnected) hook runs once they are.
    /// A client that sends [`max_concurrent_requests`](Self::max_concurrent_requests) slow
    /// requests and leaves, again and again, keeps at most `max_concurrent_requests` ×
    /// (its connections per second) × this timeout handlers alive. Zero drops them at once,
    /// as hyper drops the service future of a connection that is gone; `Duration::MAX`
    /// lets them finish (until a shutdown's deadline).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_webwire::server::Server;
    ///
    /// // Handlers that write to a database get the time to finish the write.
    /// let server = Server::builder(()).abandoned_handler_timeout(Duration::from_secs(30)).build();
    /// # drop(server);
    /// ```
    pub fn abandoned_handler_timeout(mut self, timeout: Duration) -> Self {
        self.abandoned_handler_timeout = timeout;
        self
    }

    /// How long the server waits for the client to answer its close frame (default 2 s),
    /// reading and dropping whatever the client still sends meanwhile; then, or once the
    /// client has answered, the TCP connection is closed. After a frame the WebSocket
    /// layer cannot read past (an oversized one), the rest is read as raw bytes, after
    /// the server's FIN, until the client closes its end.
    ///
    /// The wait is the WebSocket closing handshake (RFC 6455 §7.1.1), and it protects the
    /// last replies: a socket closed with unread data in it is reset by the kernel, and a
    /// reset can destroy the replies and the close frame still on their way to the client.
    /// Zero closes at once. The wait delays the
    /// [`disconnected`](crate::server::Handler::disconnected) hook; a client that never
    /// answers (a dead peer reaped by the read timeout, say) costs the whole wait, which
    /// also adds to [`Server::shutdown`].
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The most one connection can make the server hold, in bytes, with these options:
    /// what the server itself buffers for a client that sends as much as it may and reads
    /// nothing (a handler's own allocations are not counted, nor the kernel's socket
    /// buffers). With `M` = [`max_message_size`](Self::max_message_size), `c` =
    /// [`max_concurrent_requests`](Self::max_concurrent_requests) and `q` =
    /// [`outbound_queue_len`](Self::outbound_queue_len):
    ///
    /// ```text
    /// 32 KiB + b (the connection's state, two 8 KiB read chunks taking turns, and
    ///          b = write_batch_size, 32 KiB by default: frames waiting for the socket)
    /// + M × 3 (a message being read, one being assembled, one written past the queue)
    /// + max(M + 14, 8 KiB) × c + M × c (each running handler: its request, which keeps
    ///          the chunk or the frame-sized allocation it was read into, then its reply)
    /// + M × q  (queued signals)
    /// ```
    ///
    /// With the defaults (8 KiB, 8, 8) that is 286 832 bytes (280 KiB). The read chunk and the write queue
    /// exist only while bytes are in flight: an idle connection holds neither, and a busy
    /// one gives them back when it goes quiet. A client that stops reading stops
    /// being read once that is reached, and is dropped after the
    /// [`write_timeout`](Self::write_timeout).
    ///
    /// ```
    /// use tokio_webwire::server::Server;
    ///
    /// let builder = Server::builder(());
    /// assert_eq!(builder.memory_per_connection(), 286_832);
    /// // At most 10 000 connections by default: about 2.7 GiB in the worst case.
    /// assert_eq!(builder.memory_bound(), Some(10_000 * 286_832));
    /// ```
    #[must_use]
    pub fn memory_per_connection(&self) -> usize {
        memory_per_connection(
            self.max_message_size,
            self.max_concurrent_requests,
            self.outbound_queue_len,
            self.write_batch_size,
        )
    }

    /// The most all connections together can make the server hold, in bytes:
    /// [`max_connections`](Self::max_connections) × [`memory_per_connection`](Self::memory_per_connection);
    /// `None` without a connection limit (or if it does not fit a `usize`).
    #[must_use]
    pub fn memory_bound(&self) -> Option<usize> {
        match self.max_connections {
            0 => None,
            n => n.checked_mul(self.memory_per_connection()),
        }
    }

    /// Checks the options and builds the server.
    ///
    /// With the `metrics` feature, this is when the server describes its metrics and
    /// resolves their handles from the recorder installed at that moment: install the
    /// exporter first ([`server::metrics`](crate::server::metrics)).
    pub fn build(self) -> Result<Server<H>, ConfigError> {
        let seal = match &self.backplane_secret {
            Some(secret) if secret.len() >= crate::backplane::MIN_SECRET_LEN => {
                Some(crate::backplane::Seal::new(secret))
            }
            _ if self.backplane.is_local() => None,
            secret => {
                return Err(ConfigError::BackplaneSecret {
                    len: secret.as_ref().map_or(0, Vec::len),
                    min: crate::backplane::MIN_SECRET_LEN,
                });
            }
        };
        // The upper bound (u32::MAX ms, the wire field) is the encoder's check, below.
        if self.read_timeout < Duration::from_secs(1) {
            return Err(ConfigError::ReadTimeout(self.read_timeout));
        }
        let buffer_size = u32::try_from(self.max_message_size)
            .ok()
            .filter(|&size| size >= 32)
            .ok_or(ConfigError::MaxMessageSize(self.max_message_size))?;
        for (name, value) in [
            ("max_concurrent_requests", self.max_concurrent_requests),
            ("outbound_queue_len", self.outbound_queue_len),
            ("max_upgrade_request_size", self.max_upgrade_request_size),
            ("write_batch_size", self.write_batch_size),
        ] {
            if value == 0 || u32::try_from(value).is_err() {
                return Err(ConfigError::Limit(name));
            }
        }
        for (name, value) in [
            ("write_timeout", self.write_timeout),
            ("handshake_timeout", self.handshake_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroTimeout(name));
            }
        }
        let origins = match self.allowed_origins {
            None => Origins::Any,
            Some(listed) if listed.is_empty() => Origins::SameHost,
            Some(listed) => Origins::Listed(
                listed
                    .iter()
                    .map(|allowed| {
                        origin::listed(allowed).ok_or_else(|| ConfigError::Origin(allowed.clone()))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let sub_protocol_len = self.sub_protocol.len();
        let conf = AcceptConf {
            sub_protocol: self.sub_protocol,
            ..AcceptConf::new(self.read_timeout, buffer_size)
        };
        let accept_conf = Message::AcceptConf(conf)
            .encode()
            .map_err(|_| ConfigError::ReadTimeout(self.read_timeout))?;
        if accept_conf.len() > self.max_message_size {
            return Err(ConfigError::SubProtocol(sub_protocol_len));
        }
        let config = Config {
            read_timeout: self.read_timeout,
            max_message_size: self.max_message_size,
            max_concurrent_requests: self.max_concurrent_requests,
            outbound_queue_len: self.outbound_queue_len,
            write_timeout: self.write_timeout,
            write_batch_size: self.write_batch_size,
            handshake_timeout: self.handshake_timeout,
            max_upgrade_request_size: self.max_upgrade_request_size,
            shutdown_timeout: self.shutdown_timeout,
            abandoned_handler_timeout: self.abandoned_handler_timeout,
            close_timeout: self.close_timeout,
            max_connections: self.max_connections,
            max_connections_per_source: self.max_connections_per_source,
            trusted_proxies: self.trusted_proxies.clone().into(),
            admission: crate::server::admission::Limits {
                max_pending: self.max_pending_upgrades,
                max_pending_per_source: self.max_pending_upgrades_per_source,
                rate: self.source_connect_rate.0,
                burst: self.source_connect_rate.1,
                v6_prefix: self.sessions.v6_prefix,
                trusted: self.trusted_proxies.into(),
            },
            origins,
            accept_conf,
            fanout: Limits {
                slow: self.slow_subscriber,
                max_message_size: self.max_message_size,
                max_topics_per_connection: self.max_topics_per_connection,
                history: Arc::new(self.history),
            },
        };
        Ok(Server {
            shared: Arc::new(Shared::new(
                self.handler,
                config,
                self.sessions,
                self.backplane,
                seal,
            )),
        })
    }
}

impl<H> std::fmt::Debug for ServerBuilder<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("read_timeout", &self.read_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("sub_protocol", &self.sub_protocol)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("outbound_queue_len", &self.outbound_queue_len)
            .field("write_timeout", &self.write_timeout)
            .field("write_batch_size", &self.write_batch_size)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_upgrade_request_size", &self.max_upgrade_request_size)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("abandoned_handler_timeout", &self.abandoned_handler_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_pending_upgrades", &self.max_pending_upgrades)
            .field(
                "max_connections_per_source",
                &self.max_connections_per_source,
            )
            .field(
                "max_pending_upgrades_per_source",
                &self.max_pending_upgrades_per_source,
            )
            .field("source_connect_rate", &self.source_connect_rate)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("allowed_origins", &self.allowed_origins)
            .field("sessions", &self.sessions.enabled)
            .field("max_session_connections", &self.sessions.max_connections)
            .field("slow_subscriber", &self.slow_subscriber)
            .field("max_topics_per_connection", &self.max_topics_per_connection)
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_encode_the_reference_handshake() {
        let server = Server::builder(()).build().unwrap();
        assert_eq!(
            &server.shared.config.accept_conf[..],
            b"\x17\x02\x00\x60\xea\x00\x00\x00\x20\x00\x00"
        );
    }

    #[test]
    fn limits_are_checked() {
        let b = || Server::builder(());
        assert_eq!(
            b().read_timeout(Duration::from_millis(999)).build().err(),
            Some(ConfigError::ReadTimeout(Duration::from_millis(999)))
        );
        assert!(
            b().read_timeout(Duration::from_secs(5_000_000))
                .build()
                .is_err()
        );
        assert_eq!(
            b().max_message_size(31).build().err(),
            Some(ConfigError::MaxMessageSize(31))
        );
        assert!(b().max_message_size(32).build().is_ok());
        assert_eq!(
            b().max_concurrent_requests(0).build().err(),
            Some(ConfigError::Limit("max_concurrent_requests"))
        );
        assert_eq!(
            b().write_timeout(Duration::ZERO).build().err(),
            Some(ConfigError::ZeroTimeout("write_timeout"))
        );
        assert_eq!(
            b().max_message_size(32)
                .sub_protocol("x".repeat(30))
                .build()
                .err(),
            Some(ConfigError::SubProtocol(30))
        );
    }
}
