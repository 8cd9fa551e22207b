//! What other nodes send this server's hub through the backplane: checked, then applied
//! (publications, a session's signals, revocations on a task), and what it does after a
//! gap in the backplane.

use std::sync::Arc;

use bytes::Bytes;

use super::*;

impl Hub {
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
    pub(super) fn refuse(&self, why: &'static str) {
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
    pub(super) fn publish_from_node(&self, topic: &str, frame: &Bytes) {
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
}

impl Receiver for Hub {
    fn deliver(self: Arc<Self>, message: &Bytes) {
        Hub::receive(&self, message);
    }

    fn reconnected(self: Arc<Self>) {
        Hub::reconnected(&self);
    }
}
