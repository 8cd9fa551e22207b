//! One signal to many connections: topics, signals to a session's connections, and what
//! other nodes send through the [`Backplane`](crate::backplane::Backplane).
//!
//! A signal for many is encoded once: every subscriber's queue holds a reference to the
//! same buffer, so a publish costs one frame of memory however many subscribers it has.
//! Each topic keeps its subscribers in a map of its own behind a read-write lock: a
//! publish finds the topic under the server's topic-map lock (one lookup), then queues
//! under the topic's read lock, so publishes to one topic run side by side and publishes
//! to different topics meet only for that lookup; a subscribe or unsubscribe is one
//! insert or removal in the topic, O(1), under the topic-map lock and the topic's write
//! lock (so a topic emptied and dropped cannot swallow a subscriber joining it at that
//! moment), plus a scan of the connection's own list of topics (at most
//! `max_topics_per_connection`). Queueing never blocks, so no lock is held across a wait.
//!
//! A subscriber that cannot keep up (its outbound queue, `outbound_queue_len` ×
//! `max_message_size` bytes, is full) is handled by the server's [`SlowSubscriber`] policy: disconnected (the default:
//! its client notices, reconnects and knows it may have missed something) or skipped for
//! that one signal (counted and logged). Neither ever blocks the publisher or the other
//! subscribers.
//!
//! Clients that negotiated the topics extension (`docs/topics.md`) subscribe themselves
//! ([`Hub::subscribe_client`]): they are the topic's *client* members and receive each
//! publication wrapped with its topic and position (`ww.pub`), while the members the
//! server subscribed ([`Connection::subscribe`]) receive the plain signal. A topic with a
//! [`History`](crate::server::History) keeps its publications in a [`Ring`]: a publish
//! takes the ring's lock, gives the publication its position, keeps it and delivers it,
//! and a client's resume takes the same lock to replay what it missed and join the
//! members, so every publication is either replayed or delivered live, never both,
//! never neither. Topics without a history take none of these steps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use bytes::Bytes;

use crate::backplane::{BackplaneError, Envelope, Inbox, Remote};
use crate::payload::Payload;
use crate::protocol::topics::{Position, Publication, Status, Subscribed};
use crate::protocol::{IntoName, Message, MessageType, ProtocolError};
use crate::server::connection::encode_signal;
use crate::server::history::{History, Ring, Rules, SharedRing};
use crate::server::metrics::Metrics;
use crate::server::sessions::Sessions;
use crate::server::{CloseReason, Connection, SendError};
use crate::session::check_key;

/// The longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = crate::protocol::topics::MAX_TOPIC_LEN;

/// One topic's subscribers, by connection id.
type Subscribers = RwLock<Members>;

/// A topic's subscribers: those the server subscribed, and clients that subscribed
/// themselves through the extension.
#[derive(Default)]
struct Members {
    plain: HashMap<u64, Connection>,
    client: HashMap<u64, Connection>,
}

impl Members {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.client.is_empty()
    }

    fn set(&mut self, client: bool) -> &mut HashMap<u64, Connection> {
        if client {
            &mut self.client
        } else {
            &mut self.plain
        }
    }
}

/// What the server does with a subscriber whose outbound queue is full when a publish (or
/// a session signal) reaches it. Set with
/// [`ServerBuilder::slow_subscriber`](crate::server::ServerBuilder::slow_subscriber).
///
/// Either way the publisher and the other subscribers never wait for it.
///
/// ```
/// use tokio_webwire::server::{Server, SlowSubscriber};
///
/// // Tickers: a client that misses a price will get the next one.
/// let server = Server::builder(()).slow_subscriber(SlowSubscriber::Skip).build()?;
/// # Ok::<(), tokio_webwire::server::ConfigError>(())
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlowSubscriber {
    /// Close its connection (close code 1013, "try again later";
    /// [`CloseReason::SlowConsumer`] for the hooks). Its client sees the disconnect, so
    /// it knows it may have missed signals; a reconnecting client restores its session
    /// and subscribes again. The default: nothing is lost without someone noticing.
    #[default]
    Disconnect,
    /// It misses this signal and stays subscribed. Each skip is counted
    /// (`webwire_fanout_slow_total{policy="skip"}` with the `metrics` feature) and logged
    /// at debug level; the client is not told. For data where the next signal replaces
    /// the last (prices, positions).
    Skip,
}

/// Why a topic operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic is empty or longer than [`MAX_TOPIC_LEN`] bytes.
    #[error("a topic is 1 to {MAX_TOPIC_LEN} bytes, this one is {len}")]
    InvalidTopic {
        /// The topic's length in bytes.
        len: usize,
    },
    /// The connection is closed: it cannot subscribe any more.
    #[error("the connection is closed")]
    Closed,
    /// The connection subscribes to as many topics as the server allows
    /// ([`max_topics_per_connection`](crate::server::ServerBuilder::max_topics_per_connection)).
    #[error("the connection already subscribes to its maximum of {limit} topics")]
    TooManyTopics {
        /// The server's `max_topics_per_connection`.
        limit: usize,
    },
    /// The encoded signal would exceed the server's message size limit.
    #[error("the signal is {len} bytes, over the limit of {limit}")]
    TooLarge {
        /// The encoded length.
        len: usize,
        /// The server's `max_message_size`.
        limit: usize,
    },
    /// The name or payload cannot be sent as a signal.
    #[error(transparent)]
    Invalid(#[from] ProtocolError),
    /// This node's connections got the signal (`delivered` of them), but the backplane
    /// could not pass it to the other nodes.
    #[error("delivered to {delivered} connections here, but not to other nodes: {source}")]
    Backplane {
        /// How many of this node's connections it was queued for.
        delivered: usize,
        /// The backplane's error.
        source: BackplaneError,
    },
}

/// A connection's topics, kept with the connection so that it leaves them when it ends.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    /// What the server subscribed it to.
    topics: Vec<Arc<str>>,
    /// What its client subscribed to through the extension.
    client: Vec<Arc<str>>,
    /// The connection has ended and left its topics: it may not join any more.
    ended: bool,
}

impl Subscriptions {
    pub(crate) fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.iter().map(|topic| &**topic)
    }

    /// The topics its client subscribed to itself.
    pub(crate) fn client_topics(&self) -> impl Iterator<Item = &str> {
        self.client.iter().map(|topic| &**topic)
    }

    fn list(&mut self, client: bool) -> &mut Vec<Arc<str>> {
        if client {
            &mut self.client
        } else {
            &mut self.topics
        }
    }

    /// Fails if one more topic would be over `limit` (0: none).
    fn check_room(&self, limit: usize) -> Result<(), TopicError> {
        if limit != 0 && self.topics.len() + self.client.len() >= limit {
            return Err(TopicError::TooManyTopics { limit });
        }
        Ok(())
    }
}

/// The fan-out of one server: its topics, and its end of the backplane. Also the home
/// of the server's [`Sessions`], which the backplane reaches too.
pub(crate) struct Hub {
    pub(crate) sessions: Sessions,
    topics: Mutex<HashMap<Arc<str>, Arc<Subscribers>>>,
    /// The histories of topics that keep one, by topic: they outlive their subscribers
    /// (publications land while a client reconnects). Lock order: a ring, then `topics`,
    /// then a topic's subscribers.
    rings: Mutex<HashMap<Arc<str>, SharedRing>>,
    remote: Arc<Remote>,
    /// Where what other nodes send runs when it must wait (a revocation): the server's
    /// handler tasks, which a shutdown waits for.
    tasks: tokio_util::task::TaskTracker,
    limits: Limits,
    metrics: Metrics,
}

/// The options of a server's fan-out.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) slow: SlowSubscriber,
    pub(crate) max_message_size: usize,
    pub(crate) max_topics_per_connection: usize,
    /// Which topics keep a history.
    pub(crate) history: Arc<Rules>,
}

impl Hub {
    /// The hub, attached to its backplane (which then holds only a weak reference: a
    /// server that is gone ignores what arrives).
    pub(crate) fn new(
        sessions: Sessions,
        remote: Arc<Remote>,
        tasks: tokio_util::task::TaskTracker,
        limits: Limits,
        metrics: Metrics,
    ) -> Arc<Self> {
        let hub = Arc::new(Hub {
            sessions,
            topics: Mutex::new(HashMap::new()),
            rings: Mutex::new(HashMap::new()),
            remote,
            tasks,
            limits,
            metrics,
        });
        hub.remote.attach(Inbox::new(Arc::downgrade(&hub)));
        hub
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Subscribers>>> {
        // Each critical section is a map operation or two: nothing in it panics.
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `conn` to `topic`'s subscribers; false if it was one already.
    pub(crate) fn subscribe(
        &self,
        conn: &Connection,
        subscriptions: &mut Subscriptions,
        topic: &str,
    ) -> Result<bool, TopicError> {
        check_topic(topic)?;
        if subscriptions.ended || conn.is_closed() {
            return Err(TopicError::Closed);
        }
        if subscriptions.topics.iter().any(|t| &**t == topic) {
            return Ok(false);
        }
        subscriptions.check_room(self.limits.max_topics_per_connection)?;
        self.join(conn, subscriptions, topic, false);
        Ok(true)
    }

    /// Adds `conn` to `topic`'s members of one kind, and the topic to its list.
    fn join(
        &self,
        conn: &Connection,
        subscriptions: &mut Subscriptions,
        topic: &str,
        client: bool,
    ) {
        let mut topics = self.topics();
        // The connection's list shares the map's copy of the name.
        let (name, subscribers) = match topics.get_key_value(topic) {
            Some((name, subscribers)) => (Arc::clone(name), Arc::clone(subscribers)),
            None => {
                let name: Arc<str> = Arc::from(topic);
                let subscribers = Arc::new(Subscribers::default());
                topics.insert(Arc::clone(&name), Arc::clone(&subscribers));
                (name, subscribers)
            }
        };
        // Inserted while the map is locked: an unsubscribe emptying the topic removes it
        // from the map under the same lock, so it cannot drop it with this one inside.
        write(&subscribers)
            .set(client)
            .insert(conn.id(), conn.clone());
        drop(topics);
        let list = subscriptions.list(client);
        if !list.iter().any(|t| **t == *name) {
            list.push(name);
        }
    }

    /// A client subscribes itself to `topic` (the extension's `ww.subscribe`), resuming
    /// after `resume` if given: what it missed is queued for it and it joins the topic's
    /// client members in one step with respect to the topic's publishes (the ring's
    /// lock), so the seam has no gap and no duplicate. A repeated subscribe joins once.
    pub(crate) fn subscribe_client(
        &self,
        conn: &Connection,
        subscriptions: &mut Subscriptions,
        topic: &str,
        resume: Option<Position>,
    ) -> Result<Subscribed, TopicError> {
        check_topic(topic)?;
        if subscriptions.ended || conn.is_closed() {
            return Err(TopicError::Closed);
        }
        if !subscriptions.client.iter().any(|t| &**t == topic) {
            subscriptions.check_room(self.limits.max_topics_per_connection)?;
        }
        let Some(history) = self.limits.history.find(topic) else {
            self.join(conn, subscriptions, topic, true);
            return Ok(Subscribed {
                status: Status::NoHistory,
                position: Position::default(),
            });
        };
        let ring = self.ring(topic, history);
        let mut ring = lock(&ring);
        let (status, missed) = ring.resume(resume);
        for frame in missed {
            // Not metered by the connection's room: bounded by the history's own bounds,
            // and each frame is the history's buffer, not a copy.
            conn.push_unmetered(frame).map_err(|_| TopicError::Closed)?;
        }
        let position = ring.position();
        self.join(conn, subscriptions, topic, true);
        drop(ring);
        Ok(Subscribed { status, position })
    }

    /// A client unsubscribes itself from `topic`; false if it was not subscribed.
    pub(crate) fn unsubscribe_client(
        &self,
        conn: &Connection,
        subscriptions: &mut Subscriptions,
        topic: &str,
    ) -> bool {
        self.leave(conn, subscriptions, topic, true)
    }

    /// The ring of `topic`, made if it has none (dropping the least recently used one at
    /// the server's limit of histories).
    fn ring(&self, topic: &str, history: History) -> SharedRing {
        let mut rings = self.rings.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ring) = rings.get(topic) {
            return Arc::clone(ring);
        }
        if rings.len() >= self.limits.history.max_topics.max(1) {
            // A ring being written is in use: not the one to drop.
            let oldest = rings
                .iter()
                .filter_map(|(name, ring)| Some((ring.try_lock().ok()?.used, name)))
                .min_by_key(|(used, _)| *used)
                .map(|(_, name)| Arc::clone(name));
            if let Some(name) = oldest {
                tracing::debug!(topic = &*name, "history dropped: too many topics keep one");
                rings.remove(&name);
            }
        }
        let ring = Arc::new(Mutex::new(Ring::new(history)));
        rings.insert(Arc::from(topic), Arc::clone(&ring));
        ring
    }

    /// Takes `conn` off `topic`'s subscribers; false if it was not one.
    pub(crate) fn unsubscribe(
        &self,
        conn: &Connection,
        subscriptions: &mut Subscriptions,
        topic: &str,
    ) -> bool {
        self.leave(conn, subscriptions, topic, false)
    }

    fn leave(
        &self,
        conn: &Connection,
        subscriptions: &mut Subscriptions,
        topic: &str,
        client: bool,
    ) -> bool {
        let list = subscriptions.list(client);
        let Some(at) = list.iter().position(|t| &**t == topic) else {
            return false;
        };
        let topic = list.swap_remove(at);
        if !subscriptions.ended {
            self.remove(&mut self.topics(), conn, &topic, client);
        }
        true
    }

    /// `conn` has ended: it leaves every topic and may join none any more. Its list
    /// stays, so that the `disconnected` hook can see what it was subscribed to.
    pub(crate) fn leave_all(&self, conn: &Connection, subscriptions: &mut Subscriptions) {
        if subscriptions.ended {
            return;
        }
        subscriptions.ended = true;
        if subscriptions.topics.is_empty() && subscriptions.client.is_empty() {
            return;
        }
        let mut topics = self.topics();
        for topic in &subscriptions.topics {
            self.remove(&mut topics, conn, topic, false);
        }
        for topic in &subscriptions.client {
            self.remove(&mut topics, conn, topic, true);
        }
    }

    fn remove(
        &self,
        topics: &mut HashMap<Arc<str>, Arc<Subscribers>>,
        conn: &Connection,
        topic: &str,
        client: bool,
    ) {
        let Some(subscribers) = topics.get(topic) else {
            return;
        };
        let mut subscribers = write(subscribers);
        subscribers.set(client).remove(&conn.id());
        if subscribers.is_empty() {
            drop(subscribers);
            topics.remove(topic);
        }
    }

    /// How many of this server's connections subscribe to `topic`.
    pub(crate) fn subscriber_count(&self, topic: &str) -> usize {
        let subscribers = self.topics().get(topic).cloned();
        subscribers.map_or(0, |subscribers| {
            let members = read(&subscribers);
            members.plain.len() + members.client.len()
        })
    }

    /// The signal `name` with `payload`, encoded once for all its receivers.
    pub(crate) fn encode(
        &self,
        name: impl IntoName,
        payload: Payload,
    ) -> Result<Bytes, TopicError> {
        encode_signal(name, payload, self.limits.max_message_size).map_err(|error| match error {
            SendError::TooLarge { len, limit } => TopicError::TooLarge { len, limit },
            SendError::Invalid(error) => TopicError::Invalid(error),
            // Encoding alone fails only with the two above.
            SendError::Closed | SendError::QueueFull | SendError::Json { .. } => TopicError::Closed,
        })
    }

    /// [`Server::publish`](crate::server::Server::publish).
    pub(crate) async fn publish(
        &self,
        topic: &str,
        name: impl IntoName,
        payload: Payload,
    ) -> Result<usize, TopicError> {
        check_topic(topic)?;
        let frame = self.encode(name, payload)?;
        let delivered = self.publish_here(topic, &frame)?;
        let envelope = || Envelope::Publish {
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            frame,
        };
        self.forward(envelope, delivered).await
    }

    /// [`Server::signal_session`](crate::server::Server::signal_session).
    pub(crate) async fn signal_session(
        &self,
        key: &str,
        name: impl IntoName,
        payload: Payload,
    ) -> Result<usize, TopicError> {
        // A key no session can have reaches nobody, here or elsewhere.
        if check_key(key).is_err() {
            return Ok(0);
        }
        let frame = self.encode(name, payload)?;
        let delivered = self.signal_holders(key, &frame);
        let envelope = || Envelope::SessionSignal {
            key: Bytes::copy_from_slice(key.as_bytes()),
            frame,
        };
        self.forward(envelope, delivered).await
    }

    /// Hands the envelope to the other nodes; `delivered` is what this node did.
    async fn forward(
        &self,
        envelope: impl FnOnce() -> Envelope,
        delivered: usize,
    ) -> Result<usize, TopicError> {
        match self.remote.send(envelope).await {
            Ok(()) => Ok(delivered),
            Err(source) => Err(TopicError::Backplane { delivered, source }),
        }
    }

    /// Publishes the encoded signal `plain` to `topic` on this node: a topic with a
    /// history gives it its position and keeps it first, under the ring's lock, which
    /// is held while it is delivered. Returns for how many connections it was queued.
    fn publish_here(&self, topic: &str, plain: &Bytes) -> Result<usize, TopicError> {
        let Some(history) = self.limits.history.find(topic) else {
            return self.deliver(topic, plain, None);
        };
        self.check_publication(topic, plain, true)?;
        let ring = self.ring(topic, history);
        let mut ring = lock(&ring);
        let frame = Publication::frame(topic, Some(ring.next_position()), plain);
        ring.push(frame.clone());
        let delivered = self.deliver(topic, plain, Some(&frame));
        drop(ring);
        delivered
    }

    /// Fails if the publication message carrying `plain` would be over the limit.
    fn check_publication(
        &self,
        topic: &str,
        plain: &Bytes,
        position: bool,
    ) -> Result<(), TopicError> {
        let len = plain.len() + Publication::overhead(topic, position);
        let limit = self.limits.max_message_size;
        if len > limit {
            return Err(TopicError::TooLarge { len, limit });
        }
        Ok(())
    }

    /// Queues `plain` for `topic`'s server-made subscribers here, and `positioned` (or,
    /// without, the publication message made here without a position) for its client
    /// members; returns for how many. Under the topic's read lock only: queueing never
    /// waits. A publication message over the limit is refused before anything is queued.
    fn deliver(
        &self,
        topic: &str,
        plain: &Bytes,
        positioned: Option<&Bytes>,
    ) -> Result<usize, TopicError> {
        let Some(subscribers) = self.topics().get(topic).cloned() else {
            return Ok(0);
        };
        let members = read(&subscribers);
        let wrapped;
        let publication = match positioned {
            Some(frame) => Some(frame),
            None if members.client.is_empty() => None,
            None => {
                self.check_publication(topic, plain, false)?;
                wrapped = Publication::frame(topic, None, plain);
                Some(&wrapped)
            }
        };
        let plain_count = members
            .plain
            .values()
            .filter(|conn| self.offer(conn, plain))
            .count();
        let client_count = publication.map_or(0, |frame| {
            members
                .client
                .values()
                .filter(|conn| self.offer(conn, frame))
                .count()
        });
        Ok(plain_count + client_count)
    }

    /// Queues `frame` for every connection here holding the session `key`.
    fn signal_holders(&self, key: &str, frame: &Bytes) -> usize {
        let holders = self.sessions.connections(key);
        holders
            .iter()
            .filter(|conn| self.offer(conn, frame))
            .count()
    }

    /// Queues `frame` for `conn` without waiting; a full queue is the policy's business.
    fn offer(&self, conn: &Connection, frame: &Bytes) -> bool {
        match conn.try_send(frame.clone()) {
            Ok(()) => true,
            Err(SendError::QueueFull) => {
                match self.limits.slow {
                    SlowSubscriber::Disconnect => {
                        tracing::warn!(
                            id = conn.id(),
                            "a subscriber fell behind: its connection is closed"
                        );
                        conn.close_with(CloseReason::SlowConsumer);
                    }
                    SlowSubscriber::Skip => {
                        // Counted in the metric; one warning per skip could flood the log
                        // (every publish to every lagging subscriber).
                        tracing::debug!(id = conn.id(), "a subscriber fell behind: skipped");
                    }
                }
                self.metrics.fanout_slow(self.limits.slow);
                false
            }
            Err(_) => false,
        }
    }

    /// What another node sent. Checked before anything reaches a connection: a signal
    /// must decode as one and fit this server's limit (nodes may be configured apart).
    pub(crate) fn receive(self: &Arc<Self>, message: &Bytes) {
        let Some((node, envelope)) = Envelope::decode(message) else {
            tracing::warn!(
                len = message.len(),
                "the backplane delivered something that is not a WebWire envelope"
            );
            return;
        };
        if node == self.remote.node() {
            return;
        }
        match envelope {
            Envelope::Publish { topic, frame } => {
                if let (Ok(topic), true) = (std::str::from_utf8(&topic), self.is_signal(&frame)) {
                    // Another node's publication gets its position here, from this
                    // node's history (its own epoch: a client moving between nodes is
                    // told it was not recovered, never handed another node's offsets).
                    if let Err(error) =
                        check_topic(topic).and_then(|()| self.publish_here(topic, &frame))
                    {
                        tracing::warn!(%error, "a publication from another node was not delivered here");
                    }
                }
            }
            Envelope::SessionSignal { key, frame } => {
                if let (Ok(key), true) = (std::str::from_utf8(&key), self.is_signal(&frame)) {
                    self.signal_holders(key, &frame);
                }
            }
            Envelope::SessionClosed { key } => {
                let Ok(key) = String::from_utf8(key.to_vec()) else {
                    return;
                };
                if tokio::runtime::Handle::try_current().is_err() {
                    tracing::error!("a session revocation arrived outside a tokio runtime");
                    return;
                }
                let hub = Arc::clone(self);
                self.tasks
                    .spawn(async move { hub.sessions.revoke_here(&key).await });
            }
        }
    }

    fn is_signal(&self, frame: &Bytes) -> bool {
        let ok = frame.len() <= self.limits.max_message_size
            && matches!(
                Message::parse(frame.clone()).map(|m| m.message_type()),
                Ok(MessageType::SignalBinary | MessageType::SignalUtf8 | MessageType::SignalUtf16)
            );
        if !ok {
            tracing::warn!(
                len = frame.len(),
                limit = self.limits.max_message_size,
                "a signal from another node is not one this server can send: dropped"
            );
        }
        ok
    }
}

fn read(subscribers: &Subscribers) -> std::sync::RwLockReadGuard<'_, Members> {
    // No code that can panic runs under these locks.
    subscribers.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(subscribers: &Subscribers) -> std::sync::RwLockWriteGuard<'_, Members> {
    subscribers.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock(ring: &SharedRing) -> MutexGuard<'_, Ring> {
    // A ring's critical sections do not panic (queueing, a few field updates).
    ring.lock().unwrap_or_else(PoisonError::into_inner)
}

fn check_topic(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::InvalidTopic { len: topic.len() });
    }
    Ok(())
}
