//! A connection's topics: what it subscribes to (for the application, and through the
//! topics extension for its client), and the hub's publishing as the connection offers it.

use bytes::Bytes;

use super::*;

impl Connection {
    pub(crate) fn subscriptions(&self) -> std::sync::MutexGuard<'_, Subscriptions> {
        // Held for one topic-map operation, which does not panic.
        sync::lock(&self.inner.subscriptions)
    }

    /// Subscribes this connection to `topic`: from now on it gets every signal
    /// [published](Self::publish) to the topic, on this server or, through the
    /// [backplane](crate::backplane), on any other. Returns false if it was subscribed
    /// already. A connection leaves its topics when it ends.
    ///
    /// A topic is any text of 1 to [`MAX_TOPIC_LEN`](crate::server::MAX_TOPIC_LEN) bytes;
    /// topics exist while someone subscribes to them. Fails with [`TopicError::Closed`] once
    /// the connection is closing.
    ///
    /// ```no_run
    /// # fn f(conn: tokio_webwire::server::Connection) -> Result<(), tokio_webwire::server::TopicError> {
    /// assert!(conn.subscribe("room/rust")?);
    /// assert!(!conn.subscribe("room/rust")?, "once is enough");
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self, topic: &str) -> Result<bool, TopicError> {
        // Under the connection's own lock, which its end takes too: a subscribe racing the
        // end either is undone by it or fails.
        let mut subscriptions = self.subscriptions();
        self.inner.hub.subscribe(self, &mut subscriptions, topic)
    }

    /// Unsubscribes this connection from `topic`; false if it was not subscribed. This
    /// ends its client's own subscription to the topic too (one made through the topics
    /// extension, `docs/topics.md`): the server can always take a topic away, e.g. in
    /// [`Handler::session_left`](crate::server::Handler::session_left) when a login that
    /// granted it ends. The client is not told; it stops receiving the topic.
    ///
    /// ```no_run
    /// # fn f(conn: tokio_webwire::server::Connection) {
    /// conn.unsubscribe("room/rust");
    /// # }
    /// ```
    pub fn unsubscribe(&self, topic: &str) -> bool {
        let mut subscriptions = self.subscriptions();
        let hub = &self.inner.hub;
        let plain = hub.unsubscribe(self, &mut subscriptions, topic);
        let client = hub.unsubscribe_client(self, &mut subscriptions, topic);
        plain || client
    }

    /// The topics this connection subscribes to, in no particular order. Once it has
    /// ended (in [`Handler::disconnected`](crate::server::Handler::disconnected)), the
    /// topics it had then: it is no longer among their subscribers.
    ///
    /// ```no_run
    /// # fn f(conn: tokio_webwire::server::Connection) {
    /// for topic in conn.topics() {
    ///     println!("subscribed to {topic}");
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn topics(&self) -> Vec<String> {
        self.subscriptions().topics().map(str::to_owned).collect()
    }

    /// Whether the client negotiated the topics extension (`docs/topics.md`): it may
    /// subscribe itself to topics, as
    /// [`Handler::subscribe_requested`](crate::server::Handler::subscribe_requested)
    /// allows.
    #[must_use]
    pub fn speaks_topics(&self) -> bool {
        self.inner.topics_extension
    }

    /// The topics this connection's client subscribed to itself (through the
    /// extension), in no particular order; see [`topics`](Self::topics).
    #[must_use]
    pub fn client_topics(&self) -> Vec<String> {
        self.subscriptions()
            .client_topics()
            .map(str::to_owned)
            .collect()
    }

    /// The client subscribes itself ([`Hub::subscribe_client`], or
    /// [`Hub::subscribe_shared`] for a topic of a history the nodes share).
    pub(crate) async fn subscribe_client(
        &self,
        topic: &str,
        resume: Option<Position>,
    ) -> Result<Subscribed, TopicError> {
        if self.inner.hub.is_shared(topic) {
            return self.inner.hub.subscribe_shared(self, topic, resume).await;
        }
        let subscribed = {
            let mut subscriptions = self.subscriptions();
            self.inner
                .hub
                .subscribe_client(self, &mut subscriptions, topic, resume)?
        };
        // Answered once what other nodes publish to the topic reaches this one.
        self.inner.hub.sync_backplane().await;
        Ok(subscribed)
    }

    /// Resolves once this server's backplane carries what it now wants: after
    /// [`subscribe`](Self::subscribe), what any node publishes to the topic reaches this
    /// connection. Without a backplane between nodes (the default), at once.
    ///
    /// The first subscriber to a topic on a server makes the server join the topic's
    /// route on the backplane (`SUBSCRIBE` to its channel on Redis), which takes a round
    /// trip; until then, what other nodes publish to the topic does not reach it.
    /// [`subscribe`](Self::subscribe) does not wait for it (it stays synchronous); a
    /// handler that answers "subscribed" and wants the answer to mean "you will get
    /// every publication from now on" waits here first. A client's own subscribe
    /// (`docs/topics.md`) is answered after it.
    ///
    /// ```no_run
    /// # async fn f(conn: tokio_webwire::server::Connection) -> Result<(), tokio_webwire::server::TopicError> {
    /// conn.subscribe("room/rust")?;
    /// conn.sync_backplane().await;
    /// # Ok(()) }
    /// ```
    pub async fn sync_backplane(&self) {
        self.inner.hub.sync_backplane().await;
    }

    /// The client unsubscribes itself; false if it was not subscribed.
    pub(crate) fn unsubscribe_client(&self, topic: &str) -> bool {
        let mut subscriptions = self.subscriptions();
        self.inner
            .hub
            .unsubscribe_client(self, &mut subscriptions, topic)
    }

    /// Queues a frame that holds no room permit (a resume's replay, bounded by the
    /// history it comes from): the driver writes it in order with the rest.
    pub(crate) fn push_unmetered(&self, frame: Bytes) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        self.inner
            .outbox
            .push(Outbound::Unmetered(frame))
            .map_err(|_| SendError::Closed)
    }

    /// The connection has ended: it leaves its topics.
    pub(crate) fn leave_topics(&self) {
        let mut subscriptions = self.subscriptions();
        self.inner.hub.leave_all(self, &mut subscriptions);
    }

    /// Publishes the signal `name` with `payload` to every subscriber of `topic`, this
    /// connection included if it subscribes: the same as
    /// [`Server::publish`](crate::server::Server::publish), for handlers, which have a
    /// connection rather than the server.
    ///
    /// ```no_run
    /// # async fn f(conn: tokio_webwire::server::Connection) -> Result<(), tokio_webwire::server::TopicError> {
    /// let here = conn.publish("room/rust", "message", "hello").await?;
    /// println!("{here} subscribers on this server");
    /// # Ok(()) }
    /// ```
    pub async fn publish(
        &self,
        topic: &str,
        name: impl IntoName,
        payload: impl Into<Payload>,
    ) -> Result<usize, TopicError> {
        self.inner.hub.publish(topic, name, payload.into()).await
    }

    /// Publishes the contract signal `signal` to `topic`: the same as
    /// [`Server::emit_to`](crate::server::Server::emit_to), for handlers.
    ///
    /// ```no_run
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Said { user: String, text: String }
    /// # impl tokio_webwire::contract::Signal for Said { const NAME: &'static str = "said"; }
    /// # async fn f(conn: tokio_webwire::server::Connection) -> Result<(), tokio_webwire::server::TopicError> {
    /// conn.emit_to("room/rust", &Said { user: "alice".into(), text: "hi".into() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn emit_to<G: crate::contract::Signal>(
        &self,
        topic: &str,
        signal: &G,
    ) -> Result<usize, TopicError> {
        self.inner.hub.emit_to(topic, signal).await
    }

    /// Sends the signal `name` with `payload` to every connection holding the session
    /// `key`, on every node: the same as
    /// [`Server::signal_session`](crate::server::Server::signal_session), for handlers.
    ///
    /// ```no_run
    /// # async fn f(conn: tokio_webwire::server::Connection) -> Result<(), tokio_webwire::server::TopicError> {
    /// // Tell the user's other devices.
    /// if let Some(session) = conn.session() {
    ///     conn.signal_session(&session.key, "settings-changed", "").await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn signal_session(
        &self,
        key: &str,
        name: impl IntoName,
        payload: impl Into<Payload>,
    ) -> Result<usize, TopicError> {
        self.inner
            .hub
            .signal_session(key, name, payload.into())
            .await
    }
}
