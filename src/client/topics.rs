//! Client subscriptions through the topics extension (`docs/topics.md`): [`Client::subscribe`]
//! gives a [`Subscription`], a stream of the topic's publications; the client remembers
//! the last position it saw per topic and, after a reconnection (after the session
//! restore, before the connection is published), subscribes again from it by itself and
//! tells the subscription whether it recovered what it missed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::client::link::Link;
use crate::client::pending::{Kind, Pending};
use crate::client::send::encode;
use crate::client::shared::Shared;
use crate::client::subscriptions::{Topic, TopicEvent};
use crate::client::{Client, RequestError};
use crate::payload::Payload;
use crate::protocol::topics::{self, Position, Publication, Status, Subscribe, Subscribed};
use crate::protocol::{Message, RequestId};
use crate::sync::lock;

/// Why [`Client::subscribe`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The client does not speak the extension: enable it with
    /// [`ClientBuilder::topics`](crate::ClientBuilder::topics).
    #[error("the topics extension is not enabled on this client")]
    NotEnabled,
    /// The client already has a subscription to this topic.
    #[error("already subscribed to this topic")]
    AlreadySubscribed,
    /// The topic is empty or longer than 1024 bytes.
    #[error("a topic is 1 to 1024 bytes")]
    InvalidTopic,
    /// The request failed: refused (`WW_REFUSED`), over a limit (`WW_TOO_MANY_TOPICS`),
    /// the connection was lost, ...
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The server's answer is not a subscribe answer.
    #[error("invalid subscribe answer")]
    InvalidAnswer,
}

/// A client's subscription to one topic: [`next`](Self::next) yields its publications
/// and, after reconnections, whether what was missed was recovered. Dropping it stops
/// the deliveries to it (the server learns at the next reconnection, or with
/// [`Client::unsubscribe`]).
#[derive(Debug)]
#[must_use = "publications are delivered to the subscription: dropping it ends them"]
pub struct Subscription {
    topic: String,
    answer: Subscribed,
    events: mpsc::Receiver<TopicEvent>,
    /// The client, to catch up once this subscription has fallen behind (not keeping it
    /// open).
    client: std::sync::Weak<Shared>,
    /// Set by the driver when the buffer was full and publications were held back.
    behind: Arc<AtomicBool>,
}

impl Subscription {
    /// The topic.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The server's answer to the first subscribe: its status and the topic's position
    /// then.
    #[must_use]
    pub fn answer(&self) -> Subscribed {
        self.answer
    }

    /// The next event; `None` once the client is closed or the subscription ended.
    /// Cancel safe.
    ///
    /// At most [`subscription_buffer`](crate::ClientBuilder::subscription_buffer) events
    /// wait to be taken. Beyond that the client holds publications back rather than
    /// buffer them without bound; once this subscription has taken everything buffered,
    /// the client subscribes again from the last position it delivered, the server's
    /// history replays what was held back, and a [`TopicEvent::Recovered`] follows (or
    /// [`TopicEvent::NotRecovered`] when the history no longer has it, or the topic keeps
    /// none): nothing is lost without being told.
    pub async fn next(&mut self) -> Option<TopicEvent> {
        let event = self.events.recv().await;
        if self.events.is_empty() && self.behind.load(Ordering::Acquire) {
            if let Some(shared) = self.client.upgrade() {
                // A task of its own, so that dropping this call cannot cut it short.
                let topic = self.topic.clone();
                tokio::spawn(async move { catch_up(&shared, &topic).await });
            }
        }
        event
    }
}

impl Client {
    /// Subscribes to `topic` through the topics extension: the server's handler decides
    /// (`WW_REFUSED` otherwise), and from then on the topic's publications arrive at the
    /// returned [`Subscription`], on this connection and, after a reconnection, on the
    /// next one, from where the client left off when the server's history covers it.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio_webwire::Client;
    /// use tokio_webwire::client::TopicEvent;
    ///
    /// let client = Client::builder().topics(true).connect("ws://127.0.0.1:8081/").await?;
    /// let mut room = client.subscribe("room/rust").await?;
    /// while let Some(event) = room.next().await {
    ///     match event {
    ///         TopicEvent::Publication { payload, .. } => println!("{:?}", payload.to_text()),
    ///         TopicEvent::NotRecovered { .. } => println!("missed some: reload the room"),
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, SubscribeError> {
        let shared = &*self.shared;
        if !shared.config.topics {
            return Err(SubscribeError::NotEnabled);
        }
        if topic.is_empty() || topic.len() > topics::MAX_TOPIC_LEN {
            return Err(SubscribeError::InvalidTopic);
        }
        let (tx, rx) = mpsc::channel(shared.config.subscription_buffer);
        let behind = Arc::new(AtomicBool::new(false));
        {
            // Known before the request leaves: publications may precede the answer.
            let mut subscribed = lock(&shared.topics);
            if subscribed.get(topic).is_some_and(|t| !t.events.is_closed()) {
                return Err(SubscribeError::AlreadySubscribed);
            }
            subscribed.insert(
                topic.to_owned(),
                Topic {
                    position: None,
                    events: tx,
                    behind: Arc::clone(&behind),
                    catching_up: false,
                },
            );
        }
        let request = Subscribe {
            topic: topic.to_owned(),
            resume: None,
        };
        let outcome = self
            .request(topics::SUBSCRIBE, Payload::binary(request.encode()))
            .await
            .map_err(SubscribeError::from)
            .and_then(|reply| {
                Subscribed::parse(&reply.data).map_err(|_| SubscribeError::InvalidAnswer)
            });
        match outcome {
            Ok(answer) => {
                answered(shared, topic, answer);
                Ok(Subscription {
                    topic: topic.to_owned(),
                    answer,
                    events: rx,
                    client: Arc::downgrade(&self.shared),
                    behind,
                })
            }
            Err(error) => {
                lock(&shared.topics).remove(topic);
                Err(error)
            }
        }
    }

    /// Ends the subscription to `topic` (the server stops sending it); its
    /// [`Subscription`] yields nothing more.
    pub async fn unsubscribe(&self, topic: &str) -> Result<(), RequestError> {
        if lock(&self.shared.topics).remove(topic).is_none() {
            return Ok(());
        }
        self.request(
            topics::UNSUBSCRIBE,
            Payload::binary(Bytes::copy_from_slice(topic.as_bytes())),
        )
        .await
        .map(drop)
    }
}

/// The answer's position becomes the topic's, unless a publication of the same epoch
/// already came further (live publications may precede the answer).
fn answered(shared: &Shared, topic: &str, answer: Subscribed) -> Option<mpsc::Sender<TopicEvent>> {
    let mut subscribed = lock(&shared.topics);
    let entry = subscribed.get_mut(topic)?;
    // A recovery whose replay did not all fit the subscription's buffer: the position is
    // that of the last one delivered, where the next catch-up starts.
    let held_back = answer.status == Status::Recovered && entry.behind.load(Ordering::Acquire);
    if answer.status != Status::NoHistory && !held_back {
        let ahead = entry.position.is_some_and(|seen| {
            seen.epoch == answer.position.epoch && seen.offset >= answer.position.offset
        });
        if !ahead {
            entry.position = Some(answer.position);
        }
    }
    Some(entry.events.clone())
}

/// A `ww.pub` signal (the driver, on a connection with the extension): handed to its
/// topic's subscription once, in order. One at or below the last position seen is a
/// duplicate and dropped; one of a topic nobody subscribes to is dropped.
pub(crate) fn publication(shared: &Shared, payload: &Bytes) -> Result<(), &'static str> {
    let publication = Publication::parse(payload).map_err(|_| "malformed publication")?;
    let Ok(signal) = Message::parse(publication.signal) else {
        return Err("malformed publication");
    };
    let (Some(name), Some(payload)) = (signal.name().cloned(), signal.payload()) else {
        return Err("malformed publication");
    };
    let mut subscribed = lock(&shared.topics);
    let Some(topic) = subscribed.get_mut(&publication.topic) else {
        return Ok(());
    };
    if let (Some(seen), Some(position)) = (topic.position, publication.position) {
        if seen.epoch == position.epoch && position.offset <= seen.offset {
            tracing::debug!(offset = position.offset, "duplicate publication dropped");
            return Ok(());
        }
    }
    if topic.behind.load(Ordering::Acquire) {
        // Held back: the catch-up asks for it again from the last position delivered.
        return Ok(());
    }
    let event = TopicEvent::Publication {
        position: publication.position,
        name,
        payload,
    };
    match topic.events.try_send(event) {
        Ok(()) => {
            if publication.position.is_some() {
                topic.position = publication.position;
            }
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::debug!(topic = %publication.topic, "subscription behind: publications held back");
            topic.behind.store(true, Ordering::Release);
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            // The subscription was dropped.
            subscribed.remove(&publication.topic);
        }
    }
    Ok(())
}

/// After a reconnection: subscribes again to every topic, from its last position, on
/// `link` (not yet published), and tells each subscription what came of it. A lost
/// connection stops here: the next one tries again.
pub(crate) async fn resubscribe(shared: &Shared, link: &Link) {
    // Subscribing again from the last position delivered is a catch-up too: what was held
    // back comes with the replay.
    let mut was_behind = Vec::new();
    let mut wanted: Vec<(String, Option<Position>)> = Vec::new();
    for (name, topic) in lock(&shared.topics).iter() {
        if topic.behind.swap(false, Ordering::AcqRel) {
            was_behind.push(name.clone());
        }
        if !topic.events.is_closed() {
            wanted.push((name.clone(), topic.position));
        }
    }
    let mut waits = UNAVAILABLE_WAITS.iter();
    loop {
        let mut unavailable = Vec::new();
        for (topic, resume) in wanted {
            match subscribe_on(shared, link, &topic, resume).await {
                Ok(answer) => {
                    let Some(events) = answered(shared, &topic, answer) else {
                        continue;
                    };
                    let event = outcome(answer, was_behind.contains(&topic));
                    deliver(&events, event);
                }
                Err(
                    error @ (RequestError::Disconnected
                    | RequestError::Shutdown
                    | RequestError::ClientClosed),
                ) => {
                    tracing::debug!(%error, "resubscribing stopped; the next connection tries again");
                    return;
                }
                Err(RequestError::Reply { code, message })
                    if code.as_str() == topics::codes::UNAVAILABLE =>
                {
                    unavailable.push((topic, resume, RequestError::Reply { code, message }));
                }
                Err(error) => end(shared, &topic, error),
            }
        }
        // The topic's history is away (Redis): asked again after a wait, for a while.
        let Some(wait) = waits.next().filter(|_| !unavailable.is_empty()) else {
            for (topic, _, error) in unavailable {
                end(shared, &topic, error);
            }
            return;
        };
        tokio::time::sleep(*wait).await;
        wanted = unavailable
            .into_iter()
            .map(|(topic, resume, _)| (topic, resume))
            .collect();
    }
}

/// The waits before a resubscription answered `WW_UNAVAILABLE` is asked again (3.1 s in
/// all, while the connection is not yet handed to the application); after them the
/// subscription ends.
const UNAVAILABLE_WAITS: [std::time::Duration; 5] = [
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(200),
    std::time::Duration::from_millis(400),
    std::time::Duration::from_millis(800),
    std::time::Duration::from_millis(1600),
];

/// What a subscription is told after subscribing again: recovered, or not (the history
/// no longer has what was missed, or the topic keeps none and publications were held
/// back).
fn outcome(answer: Subscribed, held_back: bool) -> TopicEvent {
    match answer.status {
        Status::NotRecovered => TopicEvent::NotRecovered {
            position: answer.position,
        },
        Status::NoHistory if held_back => TopicEvent::NotRecovered {
            position: answer.position,
        },
        // Nothing to recover without a position or a history.
        _ => TopicEvent::Recovered {
            position: answer.position,
        },
    }
}

/// Hands the subscription a status event: never held back (it takes one place beyond a
/// full buffer at most once per resubscription; the application learns of it in order).
fn deliver(events: &mpsc::Sender<TopicEvent>, event: TopicEvent) {
    if let Err(mpsc::error::TrySendError::Full(event)) = events.try_send(event) {
        let events = events.clone();
        tokio::spawn(async move {
            let _ = events.send(event).await;
        });
    }
}

/// A subscription that fell behind has taken everything buffered: leaves the topic on
/// the server and subscribes again from the last position delivered, so the history
/// replays what was held back, in order, before the live ones.
async fn catch_up(shared: &Arc<Shared>, topic: &str) {
    let resume = {
        let mut subscribed = lock(&shared.topics);
        let Some(entry) = subscribed.get_mut(topic) else {
            return;
        };
        if entry.catching_up || !entry.behind.load(Ordering::Acquire) {
            return;
        }
        entry.catching_up = true;
        entry.position
    };
    let client = Client::view(Arc::clone(shared));
    let left = client
        .request(
            topics::UNSUBSCRIBE,
            Payload::binary(Bytes::copy_from_slice(topic.as_bytes())),
        )
        .await;
    let events = {
        let mut subscribed = lock(&shared.topics);
        let Some(entry) = subscribed.get_mut(topic) else {
            return;
        };
        entry.catching_up = false;
        if left.is_ok() {
            // From here on what the server sends is the replay, then the live ones.
            entry.behind.store(false, Ordering::Release);
        }
        entry.events.clone()
    };
    if left.is_err() {
        // Disconnected meanwhile: the next connection subscribes again from `resume`,
        // still behind (so it is told if that recovers nothing).
        return;
    }
    let request = Subscribe {
        topic: topic.to_owned(),
        resume,
    };
    let answer = client
        .request(topics::SUBSCRIBE, Payload::binary(request.encode()))
        .await
        .map_err(SubscribeError::from)
        .and_then(|reply| {
            Subscribed::parse(&reply.data).map_err(|_| SubscribeError::InvalidAnswer)
        });
    match answer {
        Ok(answer) => {
            answered(shared, topic, answer);
            deliver(&events, outcome(answer, true));
        }
        Err(SubscribeError::Request(
            RequestError::Disconnected | RequestError::Shutdown | RequestError::ClientClosed,
        )) => {}
        Err(SubscribeError::Request(error)) => end(shared, topic, error),
        Err(_) => end(shared, topic, RequestError::Internal),
    }
}

/// The subscription to `topic` could not be renewed: it ends with `error`.
fn end(shared: &Shared, topic: &str, error: RequestError) {
    tracing::warn!(%error, topic, "subscription not renewed");
    if let Some(gone) = lock(&shared.topics).remove(topic) {
        deliver(&gone.events, TopicEvent::Ended(error));
    }
}

/// Sends a subscribe request on `link` and waits for its answer (the request timeout).
async fn subscribe_on(
    shared: &Shared,
    link: &Link,
    topic: &str,
    resume: Option<Position>,
) -> Result<Subscribed, RequestError> {
    let id = shared.next_id();
    let payload = Subscribe {
        topic: topic.to_owned(),
        resume,
    }
    .encode();
    let frame = encode(&Message::request(
        RequestId::from(id),
        topics::SUBSCRIBE,
        Payload::binary(payload),
    ))?;
    link.check_size(frame.len())?;
    let reply = shared
        .send_request_on(link, frame, (id, Kind::Request), Pending::never())
        .await
        .map_err(|_| RequestError::Disconnected)?;
    let after = shared.config.request_timeout;
    let reply = tokio::time::timeout(after, reply)
        .await
        .map_err(|_| RequestError::Timeout { after })??;
    Subscribed::parse(&reply.data).map_err(|_| RequestError::Internal)
}
