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

mod publish;
mod remote;
mod shared;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use crate::backplane::{BackplaneError, Envelope, Inbox, Receiver, Refused, Remote, Route, Seal};
use crate::backplane::{History, HistoryError, SharedStore, Signed};
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

fn check_topic(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::InvalidTopic { len: topic.len() });
    }
    Ok(())
}
