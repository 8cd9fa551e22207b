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
//!
//! With a backplane that shares histories (Redis), a history topic's positions come from
//! the shared store instead of a ring: a publish is appended there (which also hands it
//! to the other nodes), and every node delivers it through the topic's
//! [`Sequencer`] (offset order, holes filled from the store); a resume reads the store
//! and merges it with what the sequencer delivered meanwhile (`sequencer.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use bytes::Bytes;

use crate::backplane::{BackplaneError, Envelope, Inbox, Receiver, Refused, Remote, Route, Seal};
use crate::backplane::{History, HistoryError, SharedStore, Snapshot};
use crate::payload::Payload;
use crate::protocol::topics::{Position, Publication, Status, Subscribed};
use crate::protocol::{IntoName, Message, MessageType, ProtocolError};
use crate::server::config::{Limits, SlowSubscriber};
use crate::server::history::{Ring, SharedRing};
use crate::server::metrics::Metrics;
use crate::server::outbox::encode_signal;
use crate::server::sequencer::{Finish, Sequencer};
use crate::server::sessions::Sessions;
use crate::server::{CloseReason, Connection, SendError};
use crate::session::check_key;
use crate::sync;

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

/// How long a node holds a publication that came before its turn before it reads the
/// missing ones from the shared history: the usual hole is two publishers' messages
/// crossing on their way, closed within a millisecond. A topic's first arrival on a node
/// is held as long, for the same crossings (see `sequencer.rs`).
const HOLE_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// How many reads of a hole may fail (the store away) before delivery goes on after it.
const FILL_ATTEMPTS: u32 = 3;

/// How many times a resume reads the shared history before it gives up (its snapshot did
/// not meet this node's deliveries: an epoch changing under it).
const RESUME_ATTEMPTS: u32 = 3;

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
    /// A contract signal's value could not be written as JSON
    /// ([`Server::emit_to`](crate::server::Server::emit_to),
    /// [`Connection::emit_to`](crate::server::Connection::emit_to)): nothing was published.
    #[error("the signal cannot be written as JSON: {reason}")]
    Json {
        /// What serde_json said.
        reason: String,
    },
    /// The topic keeps a history shared by the nodes (the Redis backplane's) and it could
    /// not be written or read (Redis is away): a publish was delivered to nobody and kept
    /// nowhere, so no resume can hide it; publish again later.
    #[error("the topic's shared history is unavailable, nothing was delivered: {0}")]
    History(#[from] HistoryError),
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

/// The fan-out of one server: its topics, and its end of the backplane. It reaches the
/// server's [`Sessions`] for what the backplane brings them (revocations, a gap to
/// recheck) and for a session's signals.
pub(crate) struct Hub {
    sessions: Arc<Sessions>,
    topics: Mutex<HashMap<Arc<str>, Arc<Subscribers>>>,
    /// The histories of topics that keep one, by topic: they outlive their subscribers
    /// (publications land while a client reconnects). Lock order: a ring, then `topics`,
    /// then a topic's subscribers.
    rings: Mutex<HashMap<Arc<str>, SharedRing>>,
    /// The history shared by every node, if the backplane has one: then history topics
    /// take their positions from it and `sequencers` order their delivery here (the
    /// rings are unused). Lock order: a sequencer, then `topics`, then a topic's
    /// subscribers.
    shared: Option<Arc<dyn SharedStore>>,
    sequencers: Mutex<HashMap<Arc<str>, SharedSequencer>>,
    remote: Arc<Remote>,
    /// Where what other nodes send runs when it must wait (a revocation): the server's
    /// handler tasks, which a shutdown waits for.
    tasks: tokio_util::task::TaskTracker,
    limits: Limits,
    metrics: Metrics,
    /// Messages from other nodes refused (a bad tag, or not an envelope).
    refused: Arc<std::sync::atomic::AtomicU64>,
    /// Messages the backplane handed to this server.
    received: std::sync::atomic::AtomicU64,
}

/// A topic's delivery order on this node, shared by its deliveries and resumes.
type SharedSequencer = Arc<Mutex<Sequencer>>;

impl Hub {
    /// The hub, attached to its backplane (which then holds only a weak reference: a
    /// server that is gone ignores what arrives).
    pub(crate) fn new(
        sessions: Arc<Sessions>,
        remote: Arc<Remote>,
        tasks: tokio_util::task::TaskTracker,
        limits: Limits,
        metrics: Metrics,
    ) -> Arc<Self> {
        let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // What a shared history keeps is tagged as what the nodes send each other.
        let shared = remote
            .shared_history()
            .zip(remote.seal().cloned())
            .map(|(history, seal)| {
                Arc::new(Signed {
                    inner: history.0,
                    seal,
                    refused: Arc::clone(&refused),
                }) as Arc<dyn SharedStore>
            });
        let hub = Arc::new(Hub {
            sessions,
            topics: Mutex::new(HashMap::new()),
            rings: Mutex::new(HashMap::new()),
            shared,
            sequencers: Mutex::new(HashMap::new()),
            remote,
            tasks,
            limits,
            metrics,
            refused,
            received: std::sync::atomic::AtomicU64::new(0),
        });
        let receiver: Weak<dyn Receiver> = Arc::downgrade(&hub) as Weak<Hub>;
        hub.remote.attach(Inbox::new(receiver));
        hub
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Subscribers>>> {
        // Each critical section is a map operation or two: nothing in it panics.
        sync::lock(&self.topics)
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
        let mut deaf = false;
        // The connection's list shares the map's copy of the name.
        let (name, subscribers) = match topics.get_key_value(topic) {
            Some((name, subscribers)) => (Arc::clone(name), Arc::clone(subscribers)),
            None => {
                let name: Arc<str> = Arc::from(topic);
                let subscribers = Arc::new(Subscribers::default());
                topics.insert(Arc::clone(&name), Arc::clone(&subscribers));
                // Under the map's lock, as the release when it goes: in order.
                deaf = self.remote.acquire(|_| Route::topic_checked(topic));
                (name, subscribers)
            }
        };
        // Inserted while the map is locked: an unsubscribe emptying the topic removes it
        // from the map under the same lock, so it cannot drop it with this one inside.
        sync::write(&subscribers)
            .set(client)
            .insert(conn.id(), conn.clone());
        drop(topics);
        if deaf {
            // (After the map's lock: a sequencer's is taken before it.)
            self.deaf_until_now(topic);
        }
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
        // Wanted before the history is read: a node that was deaf to the topic until now
        // starts its history afresh first (the join below keeps it wanted).
        let wanted = Wanted::new(self, topic);
        if wanted.first {
            self.deaf_until_now(topic);
        }
        let ring = self.ring(topic, history);
        let mut ring = sync::lock(&ring);
        let (status, missed) = ring.resume(resume);
        for frame in missed {
            // Not metered by the connection's room: bounded by the history's own bounds,
            // and each frame is the history's buffer, not a copy.
            conn.push_unmetered(frame).map_err(|_| TopicError::Closed)?;
        }
        let position = ring.position();
        self.join(conn, subscriptions, topic, true);
        drop(ring);
        drop(wanted);
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
        let mut rings = sync::lock(&self.rings);
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
        let mut subscribers = sync::write(subscribers);
        subscribers.set(client).remove(&conn.id());
        if subscribers.is_empty() {
            drop(subscribers);
            topics.remove(topic);
            self.remote.release(|_| Route::topic_checked(topic));
        }
    }

    /// This node wants `topic`'s route again after a time it did not (the backplane did
    /// not bring the topic): what its sequencer delivered then is stale, and a hole back
    /// to then would be filled (or passed over) for subscribers who joined after it. The
    /// topic starts afresh here, from its next arrival (or a resume's snapshot).
    ///
    /// An in-memory history misses what other nodes published meanwhile: it is dropped,
    /// and the next use makes a new one with a new epoch, so a client resuming from
    /// before the gap is told "not recovered" rather than handed a history with a hole.
    fn deaf_until_now(&self, topic: &str) {
        if self.shared.is_none() {
            sync::lock(&self.rings).remove(topic);
            return;
        }
        let mut sequencers = sync::lock(&self.sequencers);
        let idle = sequencers
            .get(topic)
            .and_then(|sequencer| sequencer.try_lock().ok().map(|s| s.is_idle()));
        if idle == Some(true) {
            sequencers.remove(topic);
        }
    }

    /// Starts telling the backplane what this server wants, if that has not begun (a
    /// server built outside a runtime); never blocks.
    pub(crate) fn start_backplane(&self) {
        self.remote.start();
    }

    /// Resolves once the backplane carries every route this server wanted before.
    pub(crate) async fn sync_backplane(&self) {
        self.remote.sync().await;
    }

    /// How many messages the backplane handed to this server.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many messages from other nodes were refused.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many of this server's connections subscribe to `topic`.
    pub(crate) fn subscriber_count(&self, topic: &str) -> usize {
        let subscribers = self.topics().get(topic).cloned();
        subscribers.map_or(0, |subscribers| {
            let members = sync::read(&subscribers);
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
        self: &Arc<Self>,
        topic: &str,
        name: impl IntoName,
        payload: Payload,
    ) -> Result<usize, TopicError> {
        check_topic(topic)?;
        let frame = self.encode(name, payload)?;
        if let Some((store, history)) = self.shared_history(topic) {
            // One round trip: the store gives the position, keeps the publication and
            // hands it to the other nodes; then it is delivered here.
            self.check_publication(topic, &frame, true)?;
            let envelope = Envelope::positioned_header(self.remote.node(), topic)
                .ok_or(TopicError::InvalidTopic { len: topic.len() })?;
            let position = store
                .append(topic, history, envelope, frame.clone())
                .await?;
            // A node that does not listen to the topic (no subscriber, no resume) has
            // nobody to deliver to, and hears none of the other nodes' publications: a
            // sequencer here would only see holes and read them from the store.
            if !self.remote.wants(|_| Route::topic_checked(topic)) {
                return Ok(0);
            }
            return Ok(self.arrive(topic, history, position, frame));
        }
        let delivered = self.publish_here(topic, &frame)?;
        let envelope = |_: &Seal| {
            let envelope = Envelope::Publish {
                topic: Bytes::copy_from_slice(topic.as_bytes()),
                frame,
            };
            (Route::topic_checked(topic), envelope)
        };
        self.forward(envelope, delivered).await
    }

    /// [`Server::emit_to`](crate::server::Server::emit_to): the contract signal as
    /// UTF-8 JSON, published to `topic`.
    pub(crate) async fn emit_to<G: crate::contract::Signal>(
        self: &Arc<Self>,
        topic: &str,
        signal: &G,
    ) -> Result<usize, TopicError> {
        let payload = Payload::json(signal).map_err(|error| TopicError::Json {
            reason: error.to_string(),
        })?;
        self.publish(topic, G::NAME, payload).await
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
        let envelope = |seal: &Seal| {
            let route = seal.session_route(key);
            let envelope = Envelope::SessionSignal {
                route: Bytes::copy_from_slice(route.as_bytes()),
                frame,
            };
            (Route::session(route), envelope)
        };
        self.forward(envelope, delivered).await
    }

    /// Hands the envelope to the other nodes; `delivered` is what this node did.
    async fn forward(
        &self,
        envelope: impl FnOnce(&Seal) -> (Route, Envelope),
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
            return self.deliver(topic, plain, None, |_| false);
        };
        self.check_publication(topic, plain, true)?;
        let ring = self.ring(topic, history);
        let mut ring = sync::lock(&ring);
        let frame = Publication::frame(topic, Some(ring.next_position()), plain);
        ring.push(frame.clone());
        let delivered = self.deliver(topic, plain, Some(&frame), |_| false);
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
    /// members but those `skip` names by id; returns for how many. Under the topic's read
    /// lock only: queueing never waits. A publication message over the limit is refused
    /// before anything is queued.
    fn deliver(
        &self,
        topic: &str,
        plain: &Bytes,
        positioned: Option<&Bytes>,
        skip: impl Fn(u64) -> bool,
    ) -> Result<usize, TopicError> {
        let Some(subscribers) = self.topics().get(topic).cloned() else {
            return Ok(0);
        };
        let members = sync::read(&subscribers);
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
                .iter()
                .filter(|(id, conn)| !skip(**id) && self.offer(conn, frame))
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
        let Some(seal) = self.remote.seal() else {
            return;
        };
        self.received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics.backplane_received();
        let (node, envelope) = match Envelope::decode(message, seal) {
            Ok(opened) => opened,
            Err(why) => {
                self.refuse(match why {
                    Refused::Malformed => "not a WebWire envelope of this version",
                    Refused::Tag => {
                        "its tag is not this service's (forged, altered, or another service's)"
                    }
                });
                return;
            }
        };
        if node == self.remote.node() {
            return;
        }
        match envelope {
            Envelope::Positioned {
                topic,
                position,
                frame,
            } => {
                if let (Ok(topic), true) = (std::str::from_utf8(&topic), self.is_signal(&frame)) {
                    match self.shared_history(topic) {
                        Some((_, history)) if check_topic(topic).is_ok() => {
                            self.arrive(topic, history, position, frame);
                        }
                        // This node keeps no shared history of the topic (configured
                        // apart): a publication of its own, as from a plain publish.
                        _ => self.publish_from_node(topic, &frame),
                    }
                }
            }
            Envelope::Publish { topic, frame } => {
                if let (Ok(topic), true) = (std::str::from_utf8(&topic), self.is_signal(&frame)) {
                    self.publish_from_node(topic, &frame);
                }
            }
            Envelope::SessionSignal { route, frame } => {
                // Only this node's holders have the key that hashes to the route.
                let key = std::str::from_utf8(&route)
                    .ok()
                    .and_then(|route| self.sessions.key_of_route(route));
                if let (Some(key), true) = (key, self.is_signal(&frame)) {
                    self.signal_holders(&key, &frame);
                }
            }
            Envelope::SessionClosed { route, sealed } => {
                let key = seal
                    .decrypt(&sealed)
                    .and_then(|key| String::from_utf8(key).ok())
                    .filter(|key| seal.session_route(key).as_bytes() == &route[..]);
                let Some(key) = key else {
                    self.refuse("a revocation whose key is not the one its route names");
                    return;
                };
                if tokio::runtime::Handle::try_current().is_err() {
                    tracing::error!("a session revocation arrived outside a tokio runtime");
                    return;
                }
                let hub = Arc::clone(self);
                self.tasks
                    .spawn(async move { hub.sessions.revoked_elsewhere(&key).await });
            }
        }
    }

    /// Counts and logs a message from another node that was not applied.
    fn refuse(&self, why: &'static str) {
        self.refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics.backplane_refused();
        tracing::warn!(why, "a message from the backplane was refused");
    }

    /// Another node's publication without a position from the shared history: it gets
    /// its position here, from this node's in-memory history (its own epoch: a client
    /// moving between nodes is told it was not recovered, never handed another node's
    /// offsets). A topic of a shared history here (the other node configured apart)
    /// delivers it without a position rather than mix epochs.
    fn publish_from_node(&self, topic: &str, frame: &Bytes) {
        let delivered = check_topic(topic).and_then(|()| {
            if self.is_shared(topic) {
                tracing::warn!(topic, "a publication without a position for a topic of the shared history: delivered without one (configure every node alike)");
                return self.deliver(topic, frame, None, |_| false);
            }
            self.publish_here(topic, frame)
        });
        if let Err(error) = delivered {
            tracing::warn!(%error, "a publication from another node was not delivered here");
        }
    }

    /// Whether `topic` keeps a history the nodes share.
    pub(crate) fn is_shared(&self, topic: &str) -> bool {
        self.shared.is_some() && self.limits.history.find(topic).is_some()
    }

    /// The shared store and the history of `topic`, if it keeps one and the nodes share
    /// their histories.
    fn shared_history(&self, topic: &str) -> Option<(Arc<dyn SharedStore>, History)> {
        let store = self.shared.as_ref()?;
        Some((Arc::clone(store), self.limits.history.find(topic)?))
    }

    /// The sequencer of `topic`, made if it has none (dropping the least recently used
    /// one that nothing depends on and nobody here subscribes to, at the server's limit
    /// of histories).
    fn sequencer(&self, topic: &str) -> SharedSequencer {
        let mut sequencers = sync::lock(&self.sequencers);
        if let Some(sequencer) = sequencers.get(topic) {
            return Arc::clone(sequencer);
        }
        if sequencers.len() >= self.limits.history.max_topics.max(1) {
            let topics = self.topics();
            let oldest = sequencers
                .iter()
                .filter(|(name, _)| !topics.contains_key(&**name))
                .filter_map(|(name, sequencer)| {
                    let sequencer = sequencer.try_lock().ok()?;
                    sequencer.is_idle().then_some((sequencer.used, name))
                })
                .min_by_key(|(used, _)| *used)
                .map(|(_, name)| Arc::clone(name));
            drop(topics);
            if let Some(name) = oldest {
                sequencers.remove(&name);
            }
        }
        let sequencer = SharedSequencer::default();
        sequencers.insert(Arc::from(topic), Arc::clone(&sequencer));
        sequencer
    }

    /// A publication of a shared history arrived here (published here, or by another
    /// node): delivered in offset order under the topic's sequencer lock, an early one
    /// held and its hole filled from the store if it stays open. Returns for how many
    /// connections it (and what it let go) was queued.
    fn arrive(
        self: &Arc<Self>,
        topic: &str,
        history: History,
        position: Position,
        plain: Bytes,
    ) -> usize {
        let sequencer = self.sequencer(topic);
        let mut sequence = sync::lock(&sequencer);
        let ready = sequence.arrive(position, plain);
        let delivered = self.deliver_sequenced(topic, history, &mut sequence, ready);
        if sequence.hole().is_some() && !sequence.filling {
            sequence.filling = true;
            self.fill(Arc::from(topic), history, Arc::clone(&sequencer));
        }
        delivered
    }

    /// Delivers `ready` (in order) to the topic's members here and buffers it for the
    /// resumes in progress; under the sequencer's lock.
    fn deliver_sequenced(
        &self,
        topic: &str,
        history: History,
        sequence: &mut Sequencer,
        ready: Vec<(Position, Bytes)>,
    ) -> usize {
        let mut delivered = 0;
        for (position, plain) in ready {
            let frame = Publication::frame(topic, Some(position), &plain);
            let skip = |conn| sequence.skips(conn, position.offset);
            match self.deliver(topic, &plain, Some(&frame), skip) {
                Ok(count) => delivered += count,
                Err(error) => {
                    tracing::warn!(%error, "a publication was not delivered here");
                }
            }
            sequence.buffer(position.offset, &frame, history.max_len().max(1024));
        }
        sequence.delivered();
        delivered
    }

    /// Opens a topic's first delivery here after [`HOLE_WAIT`] (what arrived meanwhile, in
    /// order), and fills the hole before `topic`'s held publications from the store, after
    /// [`HOLE_WAIT`], on a task of its own; a hole the store cannot fill (trimmed, another
    /// epoch, the store away [`FILL_ATTEMPTS`] times) is passed over, and the topic's
    /// client members here are disconnected (1013), so that they resume and are told
    /// whether the history still covers what they missed, never left with a silent gap.
    fn fill(self: &Arc<Self>, topic: Arc<str>, history: History, sequencer: SharedSequencer) {
        let (Some(store), Ok(runtime)) =
            (self.shared.clone(), tokio::runtime::Handle::try_current())
        else {
            let mut sequence = sync::lock(&sequencer);
            let ready = sequence.skip_hole();
            sequence.filling = false;
            self.deliver_sequenced(&topic, history, &mut sequence, ready);
            return;
        };
        let hub = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut failures = 0;
            loop {
                tokio::time::sleep(HOLE_WAIT).await;
                {
                    // The topic's first arrival here waited for any that crossed it.
                    let mut sequence = sync::lock(&sequencer);
                    if sequence.is_opening() {
                        let Some(hub) = hub.upgrade() else { return };
                        let ready = sequence.skip_hole();
                        hub.deliver_sequenced(&topic, history, &mut sequence, ready);
                    }
                }
                let hole = sync::lock(&sequencer).hole();
                let Some((epoch, after, until)) = hole else {
                    sync::lock(&sequencer).filling = false;
                    return;
                };
                let read = store.read(&topic, history, Some(after), Some(until)).await;
                let Some(hub) = hub.upgrade() else { return };
                let mut sequence = sync::lock(&sequencer);
                let mut ready = Vec::new();
                let passed_over = match read {
                    Ok(snapshot) if snapshot.epoch == epoch => {
                        for (offset, plain) in snapshot.entries {
                            ready.extend(sequence.arrive(Position { epoch, offset }, plain));
                        }
                        // What the store gave is delivered; if the hole is still there,
                        // the store no longer has it.
                        sequence.hole().is_some_and(|(_, last, _)| last == after)
                    }
                    Ok(_) => true,
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(topic = &*topic, %error, "cannot read the shared history to fill a hole");
                        failures >= FILL_ATTEMPTS
                    }
                };
                if passed_over {
                    failures = 0;
                    tracing::warn!(
                        topic = &*topic,
                        after,
                        until,
                        "publications missing here and gone from the shared history: passed over, resuming subscribers disconnected"
                    );
                    ready.extend(sequence.skip_hole());
                    hub.disconnect_clients(&topic);
                }
                hub.deliver_sequenced(&topic, history, &mut sequence, ready);
            }
        });
    }

    /// The backplane's link came back: what it may have lost is recovered, the
    /// publications of shared histories ([`catch_up`](Self::catch_up)) and the
    /// revocations ([`Sessions::recheck`]), on tasks.
    pub(crate) fn reconnected(self: &Arc<Self>) {
        self.catch_up();
        if tokio::runtime::Handle::try_current().is_ok() {
            let hub = Arc::clone(self);
            self.tasks
                .spawn(async move { hub.sessions.recheck().await });
        }
    }

    /// The backplane may have lost publications (its link was down): every topic of the
    /// shared history this node delivers reads what followed its last delivery from the
    /// store, one after the other on a task, and delivers it in order. (A lost
    /// publication would otherwise wait for the next one to show its hole.)
    pub(crate) fn catch_up(self: &Arc<Self>) {
        let (Some(store), Ok(runtime)) =
            (self.shared.clone(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let topics: Vec<(Arc<str>, SharedSequencer)> = sync::lock(&self.sequencers)
            .iter()
            .map(|(topic, sequencer)| (Arc::clone(topic), Arc::clone(sequencer)))
            .collect();
        let hub = Arc::downgrade(self);
        runtime.spawn(async move {
            for (topic, sequencer) in topics {
                let Some(history) = hub.upgrade().and_then(|hub| hub.limits.history.find(&topic))
                else {
                    continue;
                };
                let Some(from) = sync::lock(&sequencer).position() else {
                    continue;
                };
                let read = store.read(&topic, history, Some(from.offset), None).await;
                let Some(hub) = hub.upgrade() else { return };
                match read {
                    Ok(snapshot) if snapshot.epoch == from.epoch => {
                        let mut sequence = sync::lock(&sequencer);
                        let mut ready = Vec::new();
                        for (offset, plain) in snapshot.entries {
                            let position = Position {
                                epoch: from.epoch,
                                offset,
                            };
                            ready.extend(sequence.arrive(position, plain));
                        }
                        hub.deliver_sequenced(&topic, history, &mut sequence, ready);
                        // The oldest of what it missed may be trimmed already.
                        if sequence.hole().is_some() && !sequence.filling {
                            sequence.filling = true;
                            hub.fill(Arc::clone(&topic), history, Arc::clone(&sequencer));
                        }
                    }
                    // Another epoch: its next publication shows it.
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(topic = &*topic, %error, "cannot read the shared history to catch up");
                    }
                }
            }
        });
    }

    /// Closes the connections here whose clients subscribed to `topic` themselves (1013):
    /// they resume, and learn whether what they missed is still there.
    fn disconnect_clients(&self, topic: &str) {
        let Some(subscribers) = self.topics().get(topic).cloned() else {
            return;
        };
        for conn in sync::read(&subscribers).client.values() {
            conn.close_with(CloseReason::SlowConsumer);
        }
    }

    /// A client subscribes itself to a topic of a shared history, resuming after
    /// `resume` if given: it is pending (what this node delivers meanwhile is buffered
    /// for it) while the store is read, then, under the topic's sequencer lock, what it
    /// missed (from the snapshot, then from the buffer, each offset once) is queued and
    /// it joins the topic's client members, so the seam has no gap and no duplicate.
    /// Fails with [`TopicError::History`] when the store cannot be read.
    pub(crate) async fn subscribe_shared(
        self: &Arc<Self>,
        conn: &Connection,
        topic: &str,
        resume: Option<Position>,
    ) -> Result<Subscribed, TopicError> {
        check_topic(topic)?;
        let Some((store, history)) = self.shared_history(topic) else {
            return Err(TopicError::InvalidTopic { len: topic.len() });
        };
        // Wanted while the history is read, so that what is published meanwhile arrives
        // here (the sequencer buffers it for the seam); the join below keeps it wanted.
        let wanted = Wanted::new(self, topic);
        if wanted.first {
            self.deaf_until_now(topic);
        }
        self.remote.sync().await;
        let sequencer = self.sequencer(topic);
        let was_member = {
            let mut sequence = sync::lock(&sequencer);
            sequence.begin(conn.id());
            // Already a member (a repeated subscribe): it rejoins through the seam.
            self.topics().get(topic).is_some_and(|subscribers| {
                sync::write(subscribers).client.remove(&conn.id()).is_some()
            })
        };
        let joined = self
            .join_shared(conn, topic, resume, &sequencer, &*store, history)
            .await;
        if joined.is_err() && was_member {
            // It left the members for the seam and did not join again: not subscribed.
            conn.subscriptions().client.retain(|t| &**t != topic);
        }
        joined
    }

    /// The rest of [`subscribe_shared`](Self::subscribe_shared), once `conn` is pending.
    async fn join_shared(
        &self,
        conn: &Connection,
        topic: &str,
        resume: Option<Position>,
        sequencer: &SharedSequencer,
        store: &dyn SharedStore,
        history: History,
    ) -> Result<Subscribed, TopicError> {
        let pending = Pending {
            sequencer,
            conn: conn.id(),
        };
        let after = resume.map(|position| position.offset);
        for _ in 0..RESUME_ATTEMPTS {
            let snapshot = store.read(topic, history, after, None).await?;
            let mut subscriptions = conn.subscriptions();
            if subscriptions.ended || conn.is_closed() {
                return Err(TopicError::Closed);
            }
            if !subscriptions.client.iter().any(|t| &**t == topic) {
                subscriptions.check_room(self.limits.max_topics_per_connection)?;
            }
            let mut sequence = sync::lock(sequencer);
            let wrap = |position, plain: &Bytes| Publication::frame(topic, Some(position), plain);
            match sequence.finish(conn.id(), resume, &snapshot, wrap) {
                Finish::Again => continue,
                Finish::Join {
                    status,
                    position,
                    replay,
                } => {
                    for frame in replay {
                        conn.push_unmetered(frame).map_err(|_| TopicError::Closed)?;
                    }
                    self.join(conn, &mut subscriptions, topic, true);
                    drop(sequence);
                    // No longer pending: dropping the guard changes nothing.
                    drop(pending);
                    return Ok(Subscribed { status, position });
                }
            }
        }
        Err(TopicError::History(HistoryError::new(
            "the shared history changed while it was read",
        )))
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

/// A reason to want a topic's route for as long as it lives.
struct Wanted<'a> {
    hub: &'a Hub,
    topic: &'a str,
    /// Nothing else here wanted it: the node was deaf to the topic until now.
    first: bool,
}

impl<'a> Wanted<'a> {
    fn new(hub: &'a Hub, topic: &'a str) -> Self {
        let first = hub.remote.acquire(|_| Route::topic_checked(topic));
        Wanted { hub, topic, first }
    }
}

impl Drop for Wanted<'_> {
    fn drop(&mut self) {
        let topic = self.topic;
        self.hub.remote.release(|_| Route::topic_checked(topic));
    }
}

/// A shared history whose publications are kept with the tag they travel with: a
/// publication appended is signed, one read back is delivered only if its tag holds
/// (whoever can write to the store cannot make a node deliver what no node published).
struct Signed {
    inner: Arc<dyn SharedStore>,
    seal: Seal,
    refused: Arc<std::sync::atomic::AtomicU64>,
}

impl SharedStore for Signed {
    fn append<'a>(
        &'a self,
        topic: &'a str,
        history: History,
        envelope: Bytes,
        plain: Bytes,
    ) -> futures_util::future::BoxFuture<'a, Result<Position, HistoryError>> {
        let signed = Envelope::signed_publication(&self.seal, topic, &plain);
        self.inner.append(topic, history, envelope, signed)
    }

    fn read<'a>(
        &'a self,
        topic: &'a str,
        history: History,
        after: Option<u64>,
        until: Option<u64>,
    ) -> futures_util::future::BoxFuture<'a, Result<Snapshot, HistoryError>> {
        Box::pin(async move {
            let mut snapshot = self.inner.read(topic, history, after, until).await?;
            let entries = std::mem::take(&mut snapshot.entries);
            for (offset, signed) in entries {
                match Envelope::open_publication(&self.seal, topic, &signed) {
                    Some(plain) => snapshot.entries.push((offset, plain)),
                    None => {
                        self.refused
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(
                            topic,
                            offset,
                            "a publication in the shared history has a bad tag: not delivered"
                        );
                    }
                }
            }
            Ok(snapshot)
        })
    }
}

/// A resume in progress: given up (dropped before it joined), it is pending no more.
struct Pending<'a> {
    sequencer: &'a SharedSequencer,
    conn: u64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        sync::lock(self.sequencer).cancel(self.conn);
    }
}

fn check_topic(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::InvalidTopic { len: topic.len() });
    }
    Ok(())
}

impl Receiver for Hub {
    fn deliver(self: Arc<Self>, message: &Bytes) {
        Hub::receive(&self, message);
    }

    fn reconnected(self: Arc<Self>) {
        Hub::reconnected(&self);
    }
}
