//! The [`RedisBackplane`](super::RedisBackplane)'s subscriptions on a Redis Cluster:
//! sharded pub/sub (`SSUBSCRIBE`, Redis 7), each channel on the master of its slot.
//!
//! One cluster connection (RESP3, so that the messages arrive as pushes on the same
//! connections as commands) publishes, runs the history scripts and subscribes; redis-rs
//! sends each `SSUBSCRIBE` to the master of the channel's slot and hands every push (a
//! message, a confirmation, a node's connection closing) to a channel that a task of the
//! backplane's own reads.
//!
//! After a node's connection closes, the task subscribes again to every channel joined
//! (the first command to that node makes redis-rs reconnect it; it re-subscribes what it
//! tracked too, which is the same set), then tells the servers
//! ([`Inbox::reconnected`](crate::backplane::Inbox::reconnected)). A PING to every master
//! every 30 s finds a connection that died silently; Redis unsubscribing the node from a
//! channel it did not leave (its slot moved to another master) counts as a loss too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::channel::{Health, MAX_BACKOFF, MIN_BACKOFF, limited, within};
use super::{RedisConnectError, connection, sanitized};
use crate::backplane::BackplaneError;
use crate::backplane::Inboxes;
use crate::sync;

/// How many `SSUBSCRIBE`s are in flight at once when every channel is subscribed again.
const RESUBSCRIBE_CONCURRENCY: usize = 64;

/// The channels a backplane joined on a cluster, and the connection it subscribes on.
pub(super) struct Shards {
    connection: ClusterConnection,
    /// Each channel joined with how many joins. One lock (held across an `SSUBSCRIBE`):
    /// a join and the re-subscription after a loss never cross.
    joined: tokio::sync::Mutex<HashMap<String, usize>>,
    /// `SUNSUBSCRIBE`s sent and not yet confirmed, per channel: a confirmation that
    /// matches none is Redis's own (the channel's slot moved).
    leaving: Mutex<HashMap<String, usize>>,
    /// Told when a join failed: the task subscribes everything again.
    failed: Notify,
    /// How often the masters are PINGed while nothing comes, and how long they may take
    /// to answer (`RedisBackplaneBuilder::health_check`).
    health: Health,
}

/// Connects to the cluster of `builder` (`addrs` its seed nodes, for the error) with
/// RESP3 and a push channel: the connection, its subscriptions, and the task that hands
/// what arrives to `inboxes` (to be spawned by the caller).
pub(super) async fn connect(
    builder: ClusterClientBuilder,
    addrs: String,
    inboxes: Arc<Inboxes>,
    stop: CancellationToken,
    health: Health,
) -> Result<(ClusterConnection, Arc<Shards>, ShardSubscriber), RedisConnectError> {
    // Unbounded, as redis-rs's own pub/sub stream on one Redis: the task only hands each
    // message to the inboxes, which never block, so it falls behind only if the runtime
    // starves it; a bounded one would have to drop messages (redis-rs's push sender is
    // called from its connection's driver and cannot wait).
    let (pushes, receiver) = mpsc::unbounded_channel();
    let client = builder
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(pushes)
        .build()
        .map_err(|source| RedisConnectError::Unreachable {
            addr: addrs.clone(),
            source,
        })?;
    let connection = connection::connect_cluster(&client, addrs).await?;
    let shards = Arc::new(Shards {
        connection: connection.clone(),
        joined: tokio::sync::Mutex::default(),
        leaving: Mutex::default(),
        failed: Notify::new(),
        health,
    });
    let subscriber = ShardSubscriber {
        shards: Arc::clone(&shards),
        inboxes,
        pushes: receiver,
        stop,
        lost_meanwhile: false,
    };
    Ok((connection, shards, subscriber))
}

impl Shards {
    /// `SSUBSCRIBE` to `channel` on its first join; resolves once Redis has confirmed it.
    /// On failure the channel stays joined and is subscribed to when every channel is
    /// subscribed again, which the failure starts.
    pub(super) async fn join(&self, channel: String) -> Result<(), BackplaneError> {
        let mut joined = self.joined.lock().await;
        let count = joined.entry(channel.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            return Ok(());
        }
        let subscribed = limited(self.connection.clone().ssubscribe(&channel)).await;
        drop(joined);
        subscribed.map_err(|err| {
            self.failed.notify_one();
            BackplaneError::new(sanitized(err))
        })
    }

    /// `SUNSUBSCRIBE` from `channel` on its last leave.
    pub(super) async fn leave(&self, channel: String) -> Result<(), BackplaneError> {
        let mut joined = self.joined.lock().await;
        let Some(count) = joined.get_mut(&channel) else {
            return Ok(());
        };
        *count -= 1;
        if *count > 0 {
            return Ok(());
        }
        joined.remove(&channel);
        *self.leaving().entry(channel.clone()).or_insert(0) += 1;
        let left = limited(self.connection.clone().sunsubscribe(&channel)).await;
        if left.is_err() {
            // No confirmation will come (or it does not matter: the channel is not joined).
            self.confirmed_leave(&channel);
        }
        left.map_err(|err| BackplaneError::new(sanitized(err)))
    }

    fn leaving(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // Each critical section is a count changed: nothing in it panics.
        sync::lock(&self.leaving)
    }

    /// Takes one pending leave of `channel`; whether there was one.
    fn confirmed_leave(&self, channel: &str) -> bool {
        let mut leaving = self.leaving();
        match leaving.get_mut(channel) {
            Some(count) if *count > 1 => {
                *count -= 1;
                true
            }
            Some(_) => {
                leaving.remove(channel);
                true
            }
            None => false,
        }
    }

    /// `SSUBSCRIBE` to every channel joined (again), each on its slot's master.
    async fn subscribe_all(&self) -> Result<(), redis::RedisError> {
        let joined = self.joined.lock().await;
        let subscriptions: Vec<_> = joined
            .keys()
            .map(|channel| {
                let mut connection = self.connection.clone();
                let channel = channel.clone();
                // As on one Redis: each attempt within the health check's limit.
                let limit = self.health.limit.max(MIN_BACKOFF);
                async move { within(limit, connection.ssubscribe(channel)).await }
            })
            .collect();
        let mut subscriptions =
            futures_util::stream::iter(subscriptions).buffer_unordered(RESUBSCRIBE_CONCURRENCY);
        while let Some(subscribed) = subscriptions.next().await {
            subscribed?;
        }
        Ok(())
    }

    /// Whether every master answers a PING in time.
    async fn ping(&self) -> Result<(), String> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<Value>(&mut connection);
        let limit = self.health.limit;
        match tokio::time::timeout(limit, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("PING failed: {}", sanitized(error))),
            Err(_) => Err(format!("no answer to PING within {limit:?}")),
        }
    }
}

/// The task that receives what other nodes publish on the cluster.
pub(super) struct ShardSubscriber {
    shards: Arc<Shards>,
    inboxes: Arc<Inboxes>,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    stop: CancellationToken,
    /// Whether a loss was reported while every channel was being subscribed again.
    lost_meanwhile: bool,
}

impl ShardSubscriber {
    /// Delivers what arrives until a subscription is lost, subscribes everything again,
    /// and so on, until the backplane is dropped.
    pub(super) async fn run(mut self) {
        let stop = self.stop.clone();
        loop {
            let lost = tokio::select! {
                () = stop.cancelled() => return,
                lost = self.pump() => lost,
            };
            tracing::warn!(
                why = %lost,
                "backplane subscription lost; messages published until it is back are not received"
            );
            if !self.resubscribe().await {
                return;
            }
            tracing::info!("backplane subscribed again");
            self.inboxes.reconnected();
        }
    }

    /// Hands every message to the inboxes until a subscription is lost; says why.
    async fn pump(&mut self) -> String {
        let every = self.shards.health.interval;
        let mut health = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                push = self.pushes.recv() => match push {
                    Some(push) => if let Some(lost) = self.take(push) {
                        return lost;
                    },
                    None => return "the cluster connection is gone".to_owned(),
                },
                () = self.shards.failed.notified() => {
                    return "a channel could not be subscribed to".to_owned();
                }
                _ = health.tick() => {
                    if let Err(why) = self.shards.ping().await {
                        return why;
                    }
                }
            }
        }
    }

    /// Delivers a message; says why a subscription is lost if `push` says so.
    fn take(&self, push: PushInfo) -> Option<String> {
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                // [channel, payload]: the payload is moved out of redis-rs's value.
                if let Some(Value::BulkString(payload)) = push.data.into_iter().nth(1) {
                    self.inboxes.deliver(&Bytes::from(payload));
                }
                None
            }
            PushKind::Disconnection => Some("a node's connection closed".to_owned()),
            PushKind::SUnsubscribe => {
                let channel = match push.data.first() {
                    Some(Value::BulkString(channel)) => String::from_utf8_lossy(channel),
                    _ => return None,
                };
                if self.shards.confirmed_leave(&channel) {
                    return None;
                }
                Some(format!(
                    "Redis unsubscribed the node from {channel} (its slot moved to another master)"
                ))
            }
            _ => None,
        }
    }

    /// Subscribes every channel joined again, waiting longer after each failure (or after
    /// a loss reported while it was under way); `false` once the backplane is dropped.
    /// What arrives meanwhile (from the masters that are up) is delivered at once.
    async fn resubscribe(&mut self) -> bool {
        let shards = Arc::clone(&self.shards);
        let mut backoff = MIN_BACKOFF;
        loop {
            if self.delivering(tokio::time::sleep(backoff)).await.is_none() {
                return false;
            }
            self.lost_meanwhile = false;
            match self.delivering(shards.subscribe_all()).await {
                None => return false,
                // A channel subscribed on a connection lost since is gone again.
                Some(Ok(())) if self.lost_meanwhile => {}
                Some(Ok(())) => return true,
                Some(Err(error)) => tracing::debug!(
                    error = %sanitized(error),
                    retry_in = ?backoff,
                    "backplane cannot subscribe yet"
                ),
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Runs `work` while delivering what arrives; `None` once the backplane is dropped
    /// (or the cluster connection is gone).
    async fn delivering<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        let mut work = std::pin::pin!(work);
        loop {
            let push = tokio::select! {
                () = self.stop.cancelled() => return None,
                done = &mut work => return Some(done),
                push = self.pushes.recv() => push?,
            };
            // A loss reported now is one more reason for the re-subscription under way.
            if self.take(push).is_some() {
                self.lost_meanwhile = true;
            }
        }
    }
}
