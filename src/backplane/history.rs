//! The bounds every topic history keeps ([`History`]) and the seam to a history the nodes
//! of a service share: [`SharedHistory`], what a backplane hands a server
//! ([`Backplane::shared_history`](crate::backplane::Backplane::shared_history)), and the
//! crate-private [`SharedStore`] an engine implements (the Redis backplane's). The
//! in-memory engine, and which topics keep a history, are the server's
//! (`server/history.rs`).

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::backplane::{Envelope, Seal};
use crate::protocol::topics::Position;

/// What a topic's history keeps: the last [`last`](Self::last) publications, at most
/// [`max_bytes`](Self::max_bytes) of them (their encoded messages) and, with
/// [`max_age`](Self::max_age), none older. Opted into per topic with
/// [`ServerBuilder::history`](crate::server::ServerBuilder::history).
///
/// Memory: one history holds at most `max_bytes` of messages plus
/// [`ENTRY_OVERHEAD`](Self::ENTRY_OVERHEAD) bytes per kept publication
/// ([`memory_per_topic`](Self::memory_per_topic)); the server keeps at most
/// [`max_history_topics`](crate::server::ServerBuilder::max_history_topics) histories.
///
/// ```
/// use std::time::Duration;
/// use tokio_webwire::server::History;
///
/// // The last 100 messages of a chat room, 256 KiB at most, none older than an hour.
/// let history = History::last(100).max_bytes(256 * 1024).max_age(Duration::from_secs(3600));
/// assert_eq!(history.memory_per_topic(), 256 * 1024 + 100 * History::ENTRY_OVERHEAD);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    len: usize,
    bytes: usize,
    age: Option<Duration>,
}

impl History {
    /// Bytes a kept publication costs besides its message, at most: its slot in the ring
    /// (offset, time and the reference to the message: 56 bytes, and the ring's buffer
    /// grows by doubling, so up to twice that), the message buffer's allocator rounding
    /// (up to 16) and its shared header (32). Measured with
    /// `cargo bench --bench history`: 101 bytes besides a 51-byte message with
    /// 1 000 000 kept (a ring of 2^20 slots, 5 % unused).
    pub const ENTRY_OVERHEAD: usize = 160;

    /// Keep the last `len` publications (at least 1), at most 1 MiB of them, of any age.
    #[must_use]
    pub fn last(len: usize) -> Self {
        History {
            len: len.max(1),
            bytes: 1024 * 1024,
            age: None,
        }
    }

    /// At most `bytes` of publication messages (default 1 MiB): the oldest go first.
    #[must_use]
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.bytes = bytes;
        self
    }

    /// None older than `age` (default: any age): checked when the history is written or
    /// read, so an old publication is never replayed.
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.age = Some(age);
        self
    }

    /// The most one topic's history holds, in bytes.
    #[must_use]
    pub fn memory_per_topic(&self) -> usize {
        self.bytes
            .saturating_add(self.len.saturating_mul(Self::ENTRY_OVERHEAD))
    }
}
/// The history engine shared by the nodes of a service, as a backplane hands it to the
/// servers built with it ([`Backplane::shared_history`](crate::backplane::Backplane::shared_history)):
/// with it, a topic's positions come from one shared store, so a client resumes on any
/// node. Only this crate makes one (the Redis backplane does, feature `redis`).
#[derive(Clone)]
pub struct SharedHistory(pub(crate) Arc<dyn SharedStore>);

impl fmt::Debug for SharedHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedHistory").finish_non_exhaustive()
    }
}

/// A shared history could not be read or written (its store is away): a publish to a
/// history topic fails with it ([`TopicError::History`](crate::server::TopicError::History)),
/// nothing delivered.
///
/// ```
/// use tokio_webwire::server::HistoryError;
///
/// let error = HistoryError::new("Redis unreachable");
/// assert_eq!(error.to_string(), "topic history: Redis unreachable");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("topic history: {0}")]
pub struct HistoryError(Box<dyn Error + Send + Sync>);

impl HistoryError {
    /// An error with a cause: a message or another error.
    pub fn new(cause: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        HistoryError(cause.into())
    }
}

/// What a shared history holds after a position: its epoch, the offset of its last
/// publication, and the kept publications asked for, as (offset, plain signal), in
/// order and without holes (a store trims only its oldest).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) epoch: u64,
    pub(crate) last: u64,
    pub(crate) entries: Vec<(u64, Bytes)>,
}

/// A history kept outside the process, shared by every node (the engine seam below the
/// hub; the in-memory engine is [`Ring`]). Publications are stored as their plain
/// signal followed by the tag they travel with between nodes (the hub signs what it
/// appends and checks what it reads back: `Signed` in `fanout.rs`); every node wraps
/// them with their position itself.
pub(crate) trait SharedStore: Send + Sync + 'static {
    /// Gives `signed` (a signal and its tag) the topic's next position, keeps it within
    /// `history`'s bounds (counting the signal's bytes, not the tag's) and hands it to
    /// the other nodes (`envelope`: the backplane message's header, after which the store
    /// puts the position and `signed`), in one step: kept iff sent.
    fn append<'a>(
        &'a self,
        topic: &'a str,
        history: History,
        envelope: Bytes,
        signed: Bytes,
    ) -> BoxFuture<'a, Result<Position, HistoryError>>;

    /// The topic's epoch and last offset (a new epoch if it has none), and the kept
    /// publications with offsets in `after + 1 ..= until` (`None`: none; `until` `None`:
    /// to the last), none older than the history's age.
    fn read<'a>(
        &'a self,
        topic: &'a str,
        history: History,
        after: Option<u64>,
        until: Option<u64>,
    ) -> BoxFuture<'a, Result<Snapshot, HistoryError>>;
}

/// A history's bounds, as a shared store needs them.
impl History {
    /// The most publications it keeps.
    pub(crate) fn max_len(&self) -> usize {
        self.len
    }

    /// The most bytes of messages it keeps.
    pub(crate) fn max_bytes_kept(&self) -> usize {
        self.bytes
    }

    /// The oldest a publication may be, if bounded.
    pub(crate) fn max_age_kept(&self) -> Option<Duration> {
        self.age
    }
}
/// A random epoch, never 0 (the "no history" answer's).
pub(crate) fn random_epoch() -> u64 {
    loop {
        let epoch = u64::from_le_bytes(crate::random::random_bytes());
        if epoch != 0 {
            return epoch;
        }
    }
}

/// A shared history whose publications are kept with the tag they travel with: a
/// publication appended is signed, one read back is delivered only if its tag holds
/// (whoever can write to the store cannot make a node deliver what no node published).
pub(crate) struct Signed {
    pub(crate) inner: Arc<dyn SharedStore>,
    pub(crate) seal: Seal,
    pub(crate) refused: Arc<std::sync::atomic::AtomicU64>,
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
