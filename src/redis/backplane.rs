//! [`RedisBackplane`]: the nodes of a service talk through one Redis pub/sub channel.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSub, PubSubSink};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::history::RedisHistory;
use super::{RedisConnectError, RedisStore, sanitized};
use crate::backplane::{Backplane, BackplaneError, Inbox};
use crate::server::SharedHistory;

/// The first wait before subscribing again after the subscription was lost; it doubles
/// with each failed attempt up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between two attempts to subscribe again: a node is deaf to the others
/// for at most this long after Redis is back.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long one attempt to connect and subscribe may take.
const SUBSCRIBE_LIMIT: Duration = Duration::from_secs(5);

/// How often an idle subscription is checked with a PING, and how long the answer may
/// take: a connection that died without a word (a peer gone, a network partition) would
/// otherwise look like a quiet channel forever.
const HEALTH_INTERVAL: Duration = Duration::from_secs(30);
const HEALTH_LIMIT: Duration = Duration::from_secs(5);

/// A [`Backplane`] through Redis pub/sub: every node publishes to one channel and
/// subscribes to it.
///
/// [`send`](Backplane::send) is a `PUBLISH` on a multiplexed connection that reconnects by
/// itself (a [`ConnectionManager`], configured as
/// [`RedisStore::connection_config`]); a task of the backplane's own holds a
/// dedicated subscriber connection and hands every message on the channel to the inboxes
/// of the servers built with this backplane. The node's own messages come back too, and
/// its server drops them.
///
/// **While Redis is away** (down, restarting, unreachable from this node):
/// - [`send`](Backplane::send) fails with a [`BackplaneError`], within about half a second when Redis refuses
///   connections, after about 3 s at most when nothing answers;
///   the server reports it to the caller of the operation
///   ([`Server::publish`](crate::server::Server::publish) and the others) after it has
///   delivered to its own connections: local delivery is unaffected;
/// - the subscriber notices its connection is gone (at once when Redis closes it, within
///   35 s when it silently died: a PING every 30 s), logs it, and subscribes again, with
///   waits from 100 ms doubling up to 5 s, for as long as the backplane lives; subscribed
///   again, it tells the servers ([`Inbox::reconnected`]), which read what they missed of
///   the topics with a history from Redis;
/// - **messages published by any node while Redis, or this node's subscriber, is
///   disconnected are lost for this node**: Redis pub/sub is fire-and-forget, it keeps
///   nothing for a subscriber that is not there. A publish or session signal then misses
///   the connections of the nodes that were not subscribed; a revocation
///   ([`Server::close_session`](crate::server::Server::close_session)) still removed the
///   session from a shared store, so no node restores it again, but connections of a
///   node that missed it keep the session until they close.
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
    publisher: ConnectionManager,
    channel: String,
    /// The topic histories in Redis, unless turned off.
    history: Option<SharedHistory>,
    inboxes: Arc<Inboxes>,
    /// Cancels the subscriber task when the last clone goes.
    _stop: DropGuard,
}

/// The inboxes of the servers built with a backplane.
#[derive(Default)]
struct Inboxes(Mutex<Vec<Inbox>>);

impl Inboxes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Inbox>> {
        // Each critical section is a push or a pass over the list: nothing in it panics.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn attach(&self, inbox: Inbox) {
        self.lock().push(inbox);
    }

    fn deliver(&self, message: &Bytes) {
        // `Inbox::deliver` never blocks and never calls back into the backplane (what it
        // must do at length runs on a task of its own): calling it under the lock is fine.
        let mut inboxes = self.lock();
        // Servers built with this backplane and gone since are forgotten.
        inboxes.retain(|inbox| !inbox.is_closed());
        for inbox in inboxes.iter() {
            inbox.deliver(message.clone());
        }
    }

    /// The subscription is back after a gap: the servers catch up from their shared
    /// histories.
    fn reconnected(&self) {
        for inbox in self.lock().iter() {
            inbox.reconnected();
        }
    }
}

/// Options of a [`RedisBackplane`] before it connects: [`RedisBackplane::builder`].
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let backplane = tokio_webwire::redis::RedisBackplane::builder()
///     .channel("shop:bus")
///     .connect("redis://127.0.0.1/")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until it connects"]
pub struct RedisBackplaneBuilder {
    channel: String,
    history_prefix: Option<String>,
}

impl RedisBackplane {
    /// The pub/sub channel of a backplane, unless [set](RedisBackplaneBuilder::channel):
    /// `webwire:bus`.
    ///
    /// ```
    /// use tokio_webwire::redis::RedisBackplane;
    ///
    /// // `redis-cli SUBSCRIBE webwire:bus` shows what the nodes send each other.
    /// assert_eq!(RedisBackplane::DEFAULT_CHANNEL, "webwire:bus");
    /// ```
    pub const DEFAULT_CHANNEL: &'static str = "webwire:bus";

    /// Connects to the Redis at `url` (`redis://[user:password@]host[:port][/db]`) on the
    /// default channel; see [`RedisBackplaneBuilder::connect`].
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let backplane = tokio_webwire::redis::RedisBackplane::connect("redis://127.0.0.1/").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, RedisConnectError> {
        Self::builder().connect(url).await
    }

    /// Connects through an existing [`redis::Client`] on the default channel; see
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

    /// A backplane with options: the channel.
    ///
    /// ```
    /// let builder = tokio_webwire::redis::RedisBackplane::builder().channel("shop:bus");
    /// ```
    pub fn builder() -> RedisBackplaneBuilder {
        RedisBackplaneBuilder {
            channel: Self::DEFAULT_CHANNEL.to_owned(),
            history_prefix: Some(Self::DEFAULT_HISTORY_PREFIX.to_owned()),
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

    /// The pub/sub channel it publishes to and subscribes to.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let backplane = tokio_webwire::redis::RedisBackplane::connect("redis://127.0.0.1/").await?;
    /// assert_eq!(backplane.channel(), "webwire:bus");
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }
}

impl RedisBackplaneBuilder {
    /// The pub/sub channel (default [`RedisBackplane::DEFAULT_CHANNEL`]): every node of a
    /// service must use the same, and services sharing one Redis each their own. Channels
    /// are global to a Redis server, whatever the database number in the URL.
    ///
    /// ```
    /// let builder = tokio_webwire::redis::RedisBackplane::builder().channel("shop:bus");
    /// ```
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
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
    /// about 22 bytes per kept publication in the stream (`cargo bench --bench history
    /// --features redis -- --redis URL`: 41 bytes of `used_memory` per publication of a
    /// 19-byte signal, 100 000 kept), and two keys; keys of topics
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

    /// Connects to the Redis at `url`; see [`from_client`](Self::from_client).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let backplane = tokio_webwire::redis::RedisBackplane::builder()
    ///     .channel("shop:bus")
    ///     .connect("redis://127.0.0.1/")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(self, url: &str) -> Result<RedisBackplane, RedisConnectError> {
        self.from_client(super::error::open(url)?).await
    }

    /// Connects through `client`: the publishing connection, then the subscriber, which
    /// has subscribed when this returns (a message any node publishes from then on
    /// reaches the servers built with the backplane). Fails if Redis cannot be reached
    /// now; afterwards the backplane reconnects by itself. Starts a task: call it inside
    /// a tokio runtime.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio_webwire::redis::{RedisBackplane, redis};
    ///
    /// let client = redis::Client::open("redis://127.0.0.1/")?;
    /// let backplane = RedisBackplane::builder().channel("shop:bus").from_client(client).await?;
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
        let history = match self.history_prefix {
            Some(prefix) => Some(SharedHistory(std::sync::Arc::new(
                RedisHistory::new(publisher.clone(), prefix, self.channel.clone())
                    .await
                    .map_err(unreachable())?,
            ))),
            None => None,
        };
        let subscription = subscribe(&client, &self.channel)
            .await
            .map_err(unreachable())?;
        let stop = CancellationToken::new();
        let inboxes = Arc::new(Inboxes::default());
        tokio::spawn(
            Subscriber {
                client,
                channel: self.channel.clone(),
                inboxes: Arc::clone(&inboxes),
                stop: stop.clone(),
            }
            .run(subscription),
        );
        Ok(RedisBackplane {
            inner: Arc::new(Inner {
                publisher,
                channel: self.channel,
                history,
                inboxes,
                _stop: stop.drop_guard(),
            }),
        })
    }
}

impl Backplane for RedisBackplane {
    /// `PUBLISH` to the channel. Fails while Redis cannot be reached (after the connection
    /// manager's quick reconnection attempts); Redis's count of receivers is not looked at:
    /// a node with no subscriber yet is not an error.
    async fn send(&self, message: Bytes) -> Result<(), BackplaneError> {
        let _: redis::Value = redis::cmd("PUBLISH")
            .arg(&self.inner.channel)
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

    /// The topic histories in Redis (unless the builder's
    /// [`history_prefix`](RedisBackplaneBuilder::history_prefix) is `None`).
    fn shared_history(&self) -> Option<SharedHistory> {
        self.inner.history.clone()
    }
}

impl fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("channel", &self.inner.channel)
            .finish_non_exhaustive()
    }
}

/// A subscriber connection to `channel`, subscribed.
async fn subscribe(client: &redis::Client, channel: &str) -> Result<PubSub, redis::RedisError> {
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub)
    };
    tokio::time::timeout(SUBSCRIBE_LIMIT, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "subscribing timed out",
            )))
        })
}

/// The task that receives what other nodes publish.
struct Subscriber {
    client: redis::Client,
    channel: String,
    inboxes: Arc<Inboxes>,
    stop: CancellationToken,
}

impl Subscriber {
    /// Delivers from `subscription` until it is lost, subscribes again, and so on, until
    /// the backplane is dropped.
    async fn run(self, mut subscription: PubSub) {
        loop {
            let lost = tokio::select! {
                () = self.stop.cancelled() => return,
                lost = self.pump(subscription) => lost,
            };
            tracing::warn!(
                channel = %self.channel,
                why = %lost,
                "backplane subscription lost; messages published until it is back are not received"
            );
            subscription = match self.resubscribe().await {
                Some(subscription) => subscription,
                None => return,
            };
            tracing::info!(channel = %self.channel, "backplane subscribed again");
            self.inboxes.reconnected();
        }
    }

    /// Hands every message to the inboxes until the connection is gone; says why it ended.
    async fn pump(&self, subscription: PubSub) -> String {
        let (mut sink, mut messages) = subscription.split();
        let mut health = tokio::time::interval_at(
            tokio::time::Instant::now() + HEALTH_INTERVAL,
            HEALTH_INTERVAL,
        );
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
                    if let Err(why) = ping(&mut sink).await {
                        return why;
                    }
                }
            }
        }
    }

    /// Connects and subscribes again, waiting longer after each failure; `None` once the
    /// backplane is dropped.
    async fn resubscribe(&self) -> Option<PubSub> {
        let mut backoff = MIN_BACKOFF;
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            tokio::select! {
                () = self.stop.cancelled() => return None,
                subscribed = subscribe(&self.client, &self.channel) => match subscribed {
                    Ok(subscription) => return Some(subscription),
                    Err(error) => tracing::debug!(
                        channel = %self.channel,
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
async fn ping(sink: &mut PubSubSink) -> Result<(), String> {
    match tokio::time::timeout(HEALTH_LIMIT, sink.ping::<redis::Value>()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("PING failed: {}", sanitized(error))),
        Err(_) => Err(format!("no answer to PING within {HEALTH_LIMIT:?}")),
    }
}
