//! One signal to many: a publication (or a session's signal) encoded once, delivered to
//! this server's subscribers without waiting (a subscriber without room is handled by the
//! `SlowSubscriber` policy), then forwarded to the other nodes.

use std::sync::Arc;

use bytes::Bytes;

use super::*;

impl Hub {
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
    pub(super) async fn forward(
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
    pub(super) fn publish_here(&self, topic: &str, plain: &Bytes) -> Result<usize, TopicError> {
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
    pub(super) fn check_publication(
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
    pub(super) fn deliver(
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
    pub(super) fn signal_holders(&self, key: &str, frame: &Bytes) -> usize {
        let holders = self.sessions.connections(key);
        holders
            .iter()
            .filter(|conn| self.offer(conn, frame))
            .count()
    }

    /// Queues `frame` for `conn` without waiting; a full queue is the policy's business.
    pub(super) fn offer(&self, conn: &Connection, frame: &Bytes) -> bool {
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
}
