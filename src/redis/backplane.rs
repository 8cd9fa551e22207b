//! [`RedisBackplane`]: the nodes of a service talk through Redis pub/sub, a channel per
//! route, each node subscribed to the channels of its own topics and sessions.
//!
//! Over 600 lines (704): one backplane whole: its builder (every option with its docs), the
//! connection to one Redis or a cluster, the `Backplane` implementation and the subscriber
//! task that owns the pub/sub connection; each part is short, and they share the builder's
//! private state.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSub, PubSubSink, PubSubStream};
use redis::cluster::ClusterClientBuilder;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::channel::{
    HEALTH_INTERVAL, HEALTH_LIMIT, Health, MAX_BACKOFF, MIN_BACKOFF, SUBSCRIBE_LIMIT, channel_of,
    limited,
};
use super::connection::{self, Connection};
use super::history::RedisHistory;
use super::sharded::{self, Shards};
use super::{RedisConnectError, RedisStore, sanitized};
use crate::backplane::SharedHistory;
use crate::backplane::{Backplane, BackplaneError, Inbox, Inboxes, Route};

/// A [`Backplane`] through Redis pub/sub: a channel per route, each node subscribed to
/// the channels of the topics it has subscribers to, of the sessions its connections
/// hold, and of the service (revocations): a node receives only the traffic of its own
/// topics and sessions.
///
/// | route | channel (default prefix) |
/// |---|---|
/// | a topic | `webwire:t:{<topic>}` |
/// | a session | `webwire:s:{<32 hex digits>}`, a keyed hash of its key |
/// | the service | `webwire:all` |
///
/// [`send`](Backplane::send) is a `PUBLISH` on a multiplexed connection that reconnects by
/// itself (a [`ConnectionManager`], configured as [`RedisStore::connection_config`]); a
/// task of the backplane's own holds a dedicated subscriber connection,
/// [`join`](Backplane::join) and [`leave`](Backplane::leave) are a `SUBSCRIBE` and an
/// `UNSUBSCRIBE` on it (counted: several servers in one process may share the backplane),
/// and every message on its channels goes to the inboxes of the servers built with this
/// backplane. The node's own messages come back too, and its server drops them.
///
/// **While Redis is away** (down, restarting, unreachable from this node):
/// - [`send`](Backplane::send) fails with a [`BackplaneError`], within about half a second when Redis refuses
///   connections, after about 3 s at most when nothing answers;
///   the server reports it to the caller of the operation
///   ([`Server::publish`](crate::server::Server::publish) and the others) after it has
///   delivered to its own connections: local delivery is unaffected;
/// - the subscriber notices its connection is gone (at once when Redis closes it, within
///   35 s when it silently died: a PING every 30 s), logs it, and subscribes again to
///   every channel joined, with waits from 100 ms doubling up to 5 s, for as long as the
///   backplane lives; subscribed again, it tells the servers ([`Inbox::reconnected`]),
///   which read what they missed of the topics with a history from Redis, and look up
///   every session their connections hold in their store: a session revoked meanwhile
///   (gone from a shared store) is taken from its connections then;
/// - **messages published by any node while Redis, or this node's subscriber, is
///   disconnected are lost for this node**: Redis pub/sub is fire-and-forget, it keeps
///   nothing for a subscriber that is not there. A publish or session signal then misses
///   the connections of the nodes that were not subscribed (a topic with a history is
///   caught up from Redis); a revocation is recovered as above.
///
/// A revoked session therefore outlives an outage on a node's connections by at most the
/// time the subscriber takes to notice (at once, or up to 35 s for a silent death), plus
/// its wait before subscribing again (up to 5 s after Redis is back), plus one lookup.
///
/// **On a Redis Cluster** ([`RedisBackplane::connect_cluster`]) the same, with sharded
/// pub/sub (`SPUBLISH`, `SSUBSCRIBE`) on the master of each channel's slot: see
/// [`RedisBackplaneBuilder::from_cluster_builder`].
///
/// The subscriber task ends when the last clone of the backplane is dropped (the server
/// holds one while it lives).
///
/// ```no_run
/// use tokio_webwire::redis::{RedisBackplane, RedisStore};
/// use tokio_webwire::server::Server;
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let url = "redis://127.0.0.1:6379/";
/// let server = Server::builder(())
///     .session_store(RedisStore::connect(url).await?)
///     .backplane(RedisBackplane::connect(url).await?)
///     .backplane_secret(std::env::var("WEBWIRE_SECRET")?)
///     .build()?;
/// // Reaches the topic's subscribers on every node.
/// server.publish("news", "headline", "Redis is up").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBackplane {
    inner: Arc<Inner>,
}

struct Inner {
    /// `PUBLISH` on one Redis, `SPUBLISH` on a cluster.
    publisher: Connection,
    prefix: String,
    /// The topic histories in Redis, unless turned off.
    history: Option<SharedHistory>,
    inboxes: Arc<Inboxes>,
    subscriptions: Subscriptions,
    /// Cancels the subscriber task when the last clone goes.
    _stop: DropGuard,
}

/// How the node subscribes: a connection of its own to one Redis, or sharded pub/sub on
/// the cluster connection.
enum Subscriptions {
    Single(Arc<Channels>),
    Sharded(Arc<Shards>),
}

/// The channels joined, with how many joins each, and the subscriber connection's sink
/// while it is up. One lock for both (held across a `SUBSCRIBE`): a join and the
/// subscriber coming back never cross.
#[derive(Default)]
struct Channels(tokio::sync::Mutex<Joined>);

#[derive(Default)]
struct Joined {
    counts: HashMap<String, usize>,
    sink: Option<PubSubSink>,
}

/// Options of a [`RedisBackplane`] before it connects: [`RedisBackplane::builder`].
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let backplane = tokio_webwire::redis::RedisBackplane::builder()
///     .channel_prefix("shop:")
///     .connect("redis://127.0.0.1/")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until it connects"]
pub struct RedisBackplaneBuilder {
    prefix: String,
    history_prefix: Option<String>,
    health: Health,
}

impl RedisBackplane {
    /// The prefix of the pub/sub channels of a backplane, unless
    /// [set](RedisBackplaneBuilder::channel_prefix): `webwire:`.
    ///
    /// ```
    /// use tokio_webwire::redis::RedisBackplane;
    ///
    /// // `redis-cli PSUBSCRIBE 'webwire:*'` shows what the nodes send each other.
    /// assert_eq!(RedisBackplane::DEFAULT_CHANNEL_PREFIX, "webwire:");
    /// ```
    pub const DEFAULT_CHANNEL_PREFIX: &'static str = "webwire:";

    /// Connects to the Redis at `url` (`redis://[user:password@]host[:port][/db]`) with
    /// the default prefix; see [`RedisBackplaneBuilder::connect`].
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let backplane = tokio_webwire::redis::RedisBackplane::connect("redis://127.0.0.1/").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, RedisConnectError> {
        Self::builder().connect(url).await
    }

    /// Connects to the Redis Cluster that `urls` (some of its masters) belong to, with the
    /// default prefixes; see [`RedisBackplaneBuilder::connect_cluster`].
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio_webwire::redis::RedisBackplane;
    ///
    /// let backplane =
    ///     RedisBackplane::connect_cluster(["redis://10.0.0.1:6379/", "redis://10.0.0.2:6379/"]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_cluster<I>(urls: I) -> Result<Self, RedisConnectError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::builder().connect_cluster(urls).await
    }

    /// Connects through an existing [`redis::Client`] with the default prefix; see
    /// [`RedisBackplaneBuilder::from_client`].
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio_webwire::redis::{RedisBackplane, redis};
    ///
    /// let client = redis::Client::open("redis://127.0.0.1/")?;
    /// let backplane = RedisBackplane::from_client(client).await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_client(client: redis::Client) -> Result<Self, RedisConnectError> {
        Self::builder().from_client(client).await
    }

    /// A backplane with options: the channels' prefix, the histories' prefix.
    ///
    /// ```
    /// let builder = tokio_webwire::redis::RedisBackplane::builder().channel_prefix("shop:");
    /// ```
    pub fn builder() -> RedisBackplaneBuilder {
        RedisBackplaneBuilder {
            prefix: Self::DEFAULT_CHANNEL_PREFIX.to_owned(),
            history_prefix: Some(Self::DEFAULT_HISTORY_PREFIX.to_owned()),
            health: Health {
                interval: HEALTH_INTERVAL,
                limit: HEALTH_LIMIT,
            },
        }
    }

    /// The prefix of the keys of topic histories, unless
    /// [set](RedisBackplaneBuilder::history_prefix): `webwire:history:`.
    ///
    /// ```
    /// use tokio_webwire::redis::RedisBackplane;
    ///
    /// // `redis-cli XRANGE 'webwire:history:{room/1}:s' - +` shows what room/1 keeps.
    /// assert_eq!(RedisBackplane::DEFAULT_HISTORY_PREFIX, "webwire:history:");
    /// ```
    pub const DEFAULT_HISTORY_PREFIX: &'static str = "webwire:history:";

    /// The pub/sub channel of `route`: `<prefix>t:{<topic>}`, `<prefix>s:{<route>}`
    /// or `<prefix>all` (the braces: see [`RedisBackplaneBuilder::channel_prefix`]).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio_webwire::backplane::Route;
    ///
    /// let backplane = tokio_webwire::redis::RedisBackplane::connect("redis://127.0.0.1/").await?;
    /// assert_eq!(backplane.channel(&Route::topic("room/1").unwrap()), "webwire:t:{room/1}");
    /// assert_eq!(backplane.channel(&Route::service()), "webwire:all");
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn channel(&self, route: &Route) -> String {
        channel_of(&self.inner.prefix, route)
    }
}

impl RedisBackplaneBuilder {
    /// The prefix of the pub/sub channels (default
    /// [`RedisBackplane::DEFAULT_CHANNEL_PREFIX`]): every node of a service must use the
    /// same, and services sharing one Redis each their own. Channels are global to a
    /// Redis server, whatever the database number in the URL. A topic's channel holds
    /// the topic in braces, `<prefix>t:{<topic>}`, Redis Cluster's hash tag, which its
    /// history's keys share.
    ///
    /// ```
    /// let builder = tokio_webwire::redis::RedisBackplane::builder().channel_prefix("shop:");
    /// ```
    pub fn channel_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The prefix of the keys that hold topic histories (default
    /// [`RedisBackplane::DEFAULT_HISTORY_PREFIX`]), or `None` to keep histories in each
    /// server's memory instead (each node then numbers a topic in its own epoch, and a
    /// client that moves to another node is told "not recovered").
    ///
    /// With a prefix (the default), every topic that keeps a
    /// [`History`](crate::server::History) on a server built with this backplane keeps it
    /// in Redis: a stream `<prefix>{<topic>}:s` and a hash `<prefix>{<topic>}:m` per
    /// topic, trimmed to the history's count, bytes and age by every publish. Every node
    /// gives a publication the same position, delivers a topic's publications in offset
    /// order, and resumes a client from any node. What it costs and what happens while
    /// Redis is away: `docs/topics.md`, section 5.
    ///
    /// Memory in Redis per topic: the history's signals (at most its `max_bytes`) plus
    /// about 54 bytes per kept publication in the stream: 22 of Redis's own (`cargo bench
    /// --bench history --features redis -- --redis URL`: 41 bytes of `used_memory` per
    /// publication of a 19-byte signal, 100 000 kept, before the tag) and the 32-byte tag
    /// each publication is kept with (`docs/backplane.md`); and two keys; keys of topics
    /// nobody publishes to any more stay (they are bounded by the history): remove them
    /// with `DEL` if topics come and go.
    ///
    /// ```
    /// let builder = tokio_webwire::redis::RedisBackplane::builder().history_prefix(Some("shop:history:"));
    /// ```
    pub fn history_prefix(mut self, prefix: Option<&str>) -> Self {
        self.history_prefix = prefix.map(str::to_owned);
        self
    }

    /// How often the subscriber connection is checked with a `PING` while no message
    /// comes (default 30 s; on a cluster, every master is checked), and how long its
    /// answer, and each attempt to subscribe again, may take (default 5 s). A connection that died without a word (a network partition,
    /// a peer gone) is noticed after at most `interval + limit`; until then this node
    /// hears nothing of the other nodes and does not know it. Shorter costs a `PING` more
    /// often per node; too short a `limit` gives up on a slow but living Redis.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = tokio_webwire::redis::RedisBackplane::builder()
    ///     .health_check(Duration::from_secs(5), Duration::from_secs(2));
    /// ```
    pub fn health_check(mut self, interval: Duration, limit: Duration) -> Self {
        self.health = Health {
            interval: interval.max(Duration::from_millis(1)),
            limit: limit.max(Duration::from_millis(1)),
        };
        self
    }

    /// Connects to the Redis at `url`; see [`from_client`](Self::from_client).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let backplane = tokio_webwire::redis::RedisBackplane::builder()
    ///     .channel_prefix("shop:")
    ///     .connect("redis://127.0.0.1/")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(self, url: &str) -> Result<RedisBackplane, RedisConnectError> {
        self.from_client(super::error::open(url)?).await
    }

    /// Connects through `client`: the publishing connection, then the subscriber
    /// connection (subscribed to nothing yet: each server joins its routes). Fails if
    /// Redis cannot be reached now; afterwards the backplane reconnects by itself. Starts
    /// a task: call it inside a tokio runtime.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio_webwire::redis::{RedisBackplane, redis};
    ///
    /// let client = redis::Client::open("redis://127.0.0.1/")?;
    /// let backplane = RedisBackplane::builder().channel_prefix("shop:").from_client(client).await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_client(
        self,
        client: redis::Client,
    ) -> Result<RedisBackplane, RedisConnectError> {
        let unreachable = || RedisConnectError::unreachable(&client);
        let publisher =
            ConnectionManager::new_with_config(client.clone(), RedisStore::connection_config())
                .await
                .map_err(unreachable())?;
        let publisher = Connection::Single(publisher);
        let history = self.history(&publisher).await.map_err(unreachable())?;
        let channels = Arc::new(Channels::default());
        let stream = subscribe(&client, &channels, SUBSCRIBE_LIMIT)
            .await
            .map_err(unreachable())?;
        let stop = CancellationToken::new();
        let inboxes = Arc::new(Inboxes::default());
        tokio::spawn(
            Subscriber {
                client,
                channels: Arc::clone(&channels),
                inboxes: Arc::clone(&inboxes),
                stop: stop.clone(),
                health: self.health,
            }
            .run(stream),
        );
        Ok(RedisBackplane {
            inner: Arc::new(Inner {
                publisher,
                prefix: self.prefix,
                history,
                inboxes,
                subscriptions: Subscriptions::Single(channels),
                _stop: stop.drop_guard(),
            }),
        })
    }

    /// Connects to the Redis Cluster that `urls` (some of its masters, `redis://host:port`
    /// each) belong to: sharded pub/sub (Redis 7), each channel on the master of its slot;
    /// see [`from_cluster_builder`](Self::from_cluster_builder). The cluster client is
    /// configured as by [`RedisStore::cluster_client_builder`].
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio_webwire::redis::{RedisBackplane, RedisStore};
    /// use tokio_webwire::server::Server;
    ///
    /// let nodes = ["redis://10.0.0.1:6379/", "redis://10.0.0.2:6379/", "redis://10.0.0.3:6379/"];
    /// let server = Server::builder(())
    ///     .session_store(RedisStore::connect_cluster(nodes).await?)
    ///     .backplane(RedisBackplane::builder().connect_cluster(nodes).await?)
    ///     .backplane_secret(std::env::var("WEBWIRE_SECRET")?)
    ///     .build()?;
    /// # let _ = server; Ok(()) }
    /// ```
    pub async fn connect_cluster<I>(self, urls: I) -> Result<RedisBackplane, RedisConnectError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let (builder, addrs) = connection::cluster_builder(urls)?;
        self.cluster(builder, addrs).await
    }

    /// Connects through `builder` (the seed nodes, credentials and timeouts of the
    /// application's own) to a Redis Cluster of Redis 7 or later, with RESP3 and a push
    /// channel of the backplane's own (set on `builder`, replacing any it had).
    ///
    /// One cluster connection publishes (`SPUBLISH` to the route's channel), runs the
    /// history scripts (each on the master of its topic's slot: its keys and its channel
    /// share the `{<topic>}` hash tag) and subscribes: [`join`](Backplane::join) is an
    /// `SSUBSCRIBE` on the master of the channel's slot, [`leave`](Backplane::leave) an
    /// `SUNSUBSCRIBE`. Every message crosses only the master of its channel's slot and
    /// the nodes that joined the channel; topics and sessions spread over the masters by
    /// their names (1 000 topics `room/N` fall 343, 333 and 324 on the three masters of
    /// the default slot split: `tests/redis_cluster.rs`).
    ///
    /// **While a master is away**, the routes in its slots behave as every route does
    /// while one Redis is away (see [`RedisBackplane`]); the others are unaffected. When
    /// a node's connection closes (or a PING to every master every 30 s finds one dead,
    /// or Redis unsubscribes the node because a slot moved), the backplane subscribes
    /// again to every channel joined, with waits from 100 ms doubling up to 5 s, then
    /// tells the servers ([`Inbox::reconnected`]).
    ///
    /// Fails if no seed node can be reached now. Starts a task: call it inside a tokio
    /// runtime.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tokio_webwire::redis::{RedisBackplane, RedisStore};
    ///
    /// let builder = RedisStore::cluster_client_builder(["redis://10.0.0.1:6379/"])?
    ///     .connection_timeout(Duration::from_millis(300));
    /// let backplane = RedisBackplane::builder().from_cluster_builder(builder).await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_cluster_builder(
        self,
        builder: ClusterClientBuilder,
    ) -> Result<RedisBackplane, RedisConnectError> {
        self.cluster(builder, "the Redis Cluster's seed nodes".to_owned())
            .await
    }

    async fn cluster(
        self,
        builder: ClusterClientBuilder,
        addrs: String,
    ) -> Result<RedisBackplane, RedisConnectError> {
        let stop = CancellationToken::new();
        let inboxes = Arc::new(Inboxes::default());
        let (connection, shards, subscriber) = sharded::connect(
            builder,
            addrs.clone(),
            Arc::clone(&inboxes),
            stop.clone(),
            self.health,
        )
        .await?;
        let publisher = Connection::Cluster(connection);
        let history =
            self.history(&publisher)
                .await
                .map_err(|source| RedisConnectError::Unreachable {
                    addr: addrs,
                    source,
                })?;
        tokio::spawn(subscriber.run());
        Ok(RedisBackplane {
            inner: Arc::new(Inner {
                publisher,
                prefix: self.prefix,
                history,
                inboxes,
                subscriptions: Subscriptions::Sharded(shards),
                _stop: stop.drop_guard(),
            }),
        })
    }

    /// The topic histories through `publisher`, unless turned off (their scripts loaded).
    async fn history(
        &self,
        publisher: &Connection,
    ) -> Result<Option<SharedHistory>, redis::RedisError> {
        let Some(prefix) = &self.history_prefix else {
            return Ok(None);
        };
        let history =
            RedisHistory::new(publisher.clone(), prefix.clone(), self.prefix.clone()).await?;
        Ok(Some(SharedHistory(Arc::new(history))))
    }
}

impl Backplane for RedisBackplane {
    /// `PUBLISH` to the route's channel. Fails while Redis cannot be reached (after the
    /// connection manager's quick reconnection attempts); Redis's count of receivers is
    /// not looked at: a route no node joined is not an error.
    async fn send(&self, route: &Route, message: Bytes) -> Result<(), BackplaneError> {
        let publish = match self.inner.publisher {
            Connection::Single(_) => "PUBLISH",
            Connection::Cluster(_) => "SPUBLISH",
        };
        let _: redis::Value = redis::cmd(publish)
            .arg(self.channel(route))
            .arg(message.as_ref())
            .query_async(&mut self.inner.publisher.clone())
            .await
            .map_err(|err| BackplaneError::new(sanitized(err)))?;
        Ok(())
    }

    /// Adds `inbox` to those the subscriber delivers to. Needs no runtime.
    fn attach(&self, inbox: Inbox) {
        self.inner.inboxes.attach(inbox);
    }

    /// `SUBSCRIBE` to the route's channel, on its first join; resolves once Redis has
    /// confirmed it. While the subscriber is disconnected it fails, and the channel is
    /// subscribed to when it is back.
    async fn join(&self, route: &Route) -> Result<(), BackplaneError> {
        let channel = self.channel(route);
        let channels = match &self.inner.subscriptions {
            Subscriptions::Single(channels) => channels,
            Subscriptions::Sharded(shards) => return shards.join(channel).await,
        };
        let mut joined = channels.0.lock().await;
        let count = joined.counts.entry(channel.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            return Ok(());
        }
        let Some(sink) = joined.sink.as_mut() else {
            return Err(BackplaneError::new(
                "not subscribed to Redis now: joined when it is back",
            ));
        };
        limited(sink.subscribe(&channel))
            .await
            .map_err(|err| BackplaneError::new(sanitized(err)))
    }

    /// `UNSUBSCRIBE` from the route's channel, on its last leave.
    async fn leave(&self, route: &Route) -> Result<(), BackplaneError> {
        let channel = self.channel(route);
        let channels = match &self.inner.subscriptions {
            Subscriptions::Single(channels) => channels,
            Subscriptions::Sharded(shards) => return shards.leave(channel).await,
        };
        let mut joined = channels.0.lock().await;
        let Some(count) = joined.counts.get_mut(&channel) else {
            return Ok(());
        };
        *count -= 1;
        if *count > 0 {
            return Ok(());
        }
        joined.counts.remove(&channel);
        let Some(sink) = joined.sink.as_mut() else {
            return Ok(());
        };
        limited(sink.unsubscribe(&channel))
            .await
            .map_err(|err| BackplaneError::new(sanitized(err)))
    }

    /// The topic histories in Redis (unless the builder's
    /// [`history_prefix`](RedisBackplaneBuilder::history_prefix) is `None`).
    fn shared_history(&self) -> Option<SharedHistory> {
        self.inner.history.clone()
    }
}

impl fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// A new subscriber connection, subscribed to every channel joined (under the channels'
/// lock, which then holds its sink): its stream of messages.
async fn subscribe(
    client: &redis::Client,
    channels: &Channels,
    limit: Duration,
) -> Result<PubSubStream, redis::RedisError> {
    let mut joined = channels.0.lock().await;
    let attempt = async {
        let pubsub: PubSub = client.get_async_pubsub().await?;
        let (mut sink, stream) = pubsub.split();
        let names: Vec<&String> = joined.counts.keys().collect();
        if !names.is_empty() {
            sink.subscribe(names).await?;
        }
        Ok((sink, stream))
    };
    let (sink, stream) = tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "subscribing timed out",
            )))
        })?;
    joined.sink = Some(sink);
    Ok(stream)
}

/// The task that receives what other nodes publish.
struct Subscriber {
    client: redis::Client,
    channels: Arc<Channels>,
    inboxes: Arc<Inboxes>,
    stop: CancellationToken,
    health: Health,
}

impl Subscriber {
    /// Delivers from `stream` until its connection is lost, subscribes again, and so on,
    /// until the backplane is dropped.
    async fn run(self, mut stream: PubSubStream) {
        loop {
            let lost = tokio::select! {
                () = self.stop.cancelled() => return,
                lost = self.pump(stream) => lost,
            };
            self.channels.0.lock().await.sink = None;
            tracing::warn!(
                why = %lost,
                "backplane subscription lost; messages published until it is back are not received"
            );
            stream = match self.resubscribe().await {
                Some(stream) => stream,
                None => return,
            };
            tracing::info!("backplane subscribed again");
            self.inboxes.reconnected();
        }
    }

    /// Hands every message to the inboxes until the connection is gone; says why it ended.
    async fn pump(&self, mut messages: PubSubStream) -> String {
        let every = self.health.interval;
        let mut health = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        // After a stall, one check, not a burst of them (each may hold up the messages).
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    // The payload is copied once, out of redis-rs's reply value.
                    Some(message) => self.inboxes.deliver(&Bytes::copy_from_slice(message.get_payload_bytes())),
                    None => return "the connection closed".to_owned(),
                },
                _ = health.tick() => {
                    let sink = self.channels.0.lock().await.sink.clone();
                    let Some(mut sink) = sink else {
                        return "the subscriber connection is gone".to_owned();
                    };
                    if let Err(why) = ping(&mut sink, self.health.limit).await {
                        return why;
                    }
                }
            }
        }
    }

    /// Connects and subscribes again, waiting longer after each failure; `None` once the
    /// backplane is dropped.
    async fn resubscribe(&self) -> Option<PubSubStream> {
        let mut backoff = MIN_BACKOFF;
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            tokio::select! {
                () = self.stop.cancelled() => return None,
                subscribed = subscribe(&self.client, &self.channels, self.health.limit.max(MIN_BACKOFF)) => match subscribed {
                    Ok(stream) => return Some(stream),
                    Err(error) => tracing::debug!(
                        error = %sanitized(error),
                        retry_in = ?backoff,
                        "backplane cannot subscribe yet"
                    ),
                },
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Whether the subscriber connection still answers.
async fn ping(sink: &mut PubSubSink, limit: Duration) -> Result<(), String> {
    match tokio::time::timeout(limit, sink.ping::<redis::Value>()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("PING failed: {}", sanitized(error))),
        Err(_) => Err(format!("no answer to PING within {limit:?}")),
    }
}
