//! Topics whose history the nodes share: delivery in offset order through each topic's
//! `Sequencer`, holes read back from the shared store, a resume's snapshot merged with
//! what arrived meanwhile, and the signing of what the store keeps.

use std::sync::Arc;

use bytes::Bytes;

use super::*;

impl Hub {
    /// Whether `topic` keeps a history the nodes share.
    pub(crate) fn is_shared(&self, topic: &str) -> bool {
        self.shared.is_some() && self.limits.history.find(topic).is_some()
    }

    /// The shared store and the history of `topic`, if it keeps one and the nodes share
    /// their histories.
    pub(super) fn shared_history(&self, topic: &str) -> Option<(Arc<dyn SharedStore>, History)> {
        let store = self.shared.as_ref()?;
        Some((Arc::clone(store), self.limits.history.find(topic)?))
    }

    /// The sequencer of `topic`, made if it has none (dropping the least recently used
    /// one that nothing depends on and nobody here subscribes to, at the server's limit
    /// of histories).
    pub(super) fn sequencer(&self, topic: &str) -> SharedSequencer {
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
    pub(super) fn arrive(
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
    pub(super) fn deliver_sequenced(
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
    pub(super) fn fill(
        self: &Arc<Self>,
        topic: Arc<str>,
        history: History,
        sequencer: SharedSequencer,
    ) {
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
    pub(super) fn disconnect_clients(&self, topic: &str) {
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
    pub(super) async fn join_shared(
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

    pub(super) fn is_signal(&self, frame: &Bytes) -> bool {
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

/// A resume in progress: given up (dropped before it joined), it is pending no more.
pub(super) struct Pending<'a> {
    sequencer: &'a SharedSequencer,
    conn: u64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        sync::lock(self.sequencer).cancel(self.conn);
    }
}
