//! The [`Backplane`]: what carries the operations that must reach every server of a
//! service (every *node*) to the other nodes.
//!
//! One server alone needs none: its topics, session signals and session revocations reach
//! its own connections directly. Several servers behind a load balancer share one
//! backplane, and each of these operations is then also handed to it:
//!
//! | operation | on this node | on every other node |
//! |---|---|---|
//! | [`Server::publish`](crate::server::Server::publish) | the topic's subscribers | the topic's subscribers |
//! | [`Server::signal_session`](crate::server::Server::signal_session) | the session's connections | the session's connections |
//! | [`Server::close_session`](crate::server::Server::close_session) | the revocation (store, connections, hook) | removed from that node's store too, the session's connections lose it and are told |
//!
//! A backplane carries opaque messages between nodes, by [`Route`]: a topic's, a session's,
//! or the service's. The server encodes the operation (the signal is encoded once, on the
//! node that publishes) into an *envelope* tagged with the service's secret
//! ([`ServerBuilder::backplane_secret`](crate::server::ServerBuilder::backplane_secret)),
//! and decodes, checks and applies what arrives through its [`Inbox`], ignoring what it
//! sent itself. Each server [`join`](Backplane::join)s the routes it has a use for (a
//! topic while one of its connections subscribes to it, a session while one of its
//! connections holds it, the service while it runs) and leaves them after, so that a
//! backplane that routes (Redis, a channel per route) brings each node only the traffic of
//! its own topics and sessions. A backplane knows nothing of topics or sessions; [`Local`]
//! (the default) sends nothing and costs nothing, and a Redis one comes with the `redis`
//! feature. The envelope's format is specified in `docs/backplane.md`.
//!
//! | operation | route | on this node | on the nodes that joined the route |
//! |---|---|---|---|
//! | [`Server::publish`](crate::server::Server::publish) | the topic's | the topic's subscribers | the topic's subscribers |
//! | [`Server::signal_session`](crate::server::Server::signal_session) | the session's (a keyed hash of its key) | the session's connections | the session's connections |
//! | [`Server::close_session`](crate::server::Server::close_session) | the service's (every node) | the revocation (store, connections, hook) | removed from that node's store too, the session's connections lose it and are told |
//!
//! No session key travels in clear: a session's route is a keyed hash of its key, and a
//! revocation carries the key encrypted (every node's store must forget it).
//!
//! Delivery is what the backplane gives: the server delivers to its own connections
//! whether or not the backplane accepts the message, and a message the backplane loses is
//! lost for the other nodes (their connections miss the signal; a revocation still
//! removed the session from a shared store, and each node checks the sessions its
//! connections hold against its store when the backplane's link comes back,
//! [`Inbox::reconnected`]). Order holds
//! per publisher and topic as far as the backplane keeps it (Redis pub/sub does), not
//! across publishers: two nodes publishing at once may reach one node's subscribers in
//! one order and another's in the other. An operation's future delivers here first and
//! then sends: dropped in between, the other nodes miss it. A subscription made on a node
//! with no other subscriber to its topic receives other nodes' publications once the
//! backplane has joined the topic's route (a client's subscribe is answered after that;
//! [`Connection::sync_backplane`](crate::server::Connection::sync_backplane) waits for it
//! after [`Connection::subscribe`](crate::server::Connection::subscribe)).
//!
//! ```
//! use bytes::Bytes;
//! use std::sync::{Arc, Mutex};
//! use tokio_webwire::backplane::{Backplane, BackplaneError, Inbox, Route};
//!
//! /// Nodes in one process (tests, or a demo): each message goes to every inbox (it
//! /// routes nothing: the default `join` and `leave` do nothing).
//! #[derive(Default, Clone)]
//! struct InProcess(Arc<Mutex<Vec<Inbox>>>);
//!
//! impl Backplane for InProcess {
//!     async fn send(&self, _route: &Route, message: Bytes) -> Result<(), BackplaneError> {
//!         let inboxes = self.0.lock().map_err(|_| BackplaneError::new("poisoned"))?.clone();
//!         for inbox in inboxes {
//!             inbox.deliver(message.clone()); // the sender's own inbox ignores it
//!         }
//!         Ok(())
//!     }
//!     fn attach(&self, inbox: Inbox) {
//!         if let Ok(mut inboxes) = self.0.lock() {
//!             inboxes.push(inbox);
//!         }
//!     }
//! }
//! ```

mod envelope;
mod history;
#[cfg(any(feature = "redis", feature = "nats"))]
mod inboxes;
mod interest;
mod route;
mod seal;

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures_util::future::BoxFuture;

pub(crate) use envelope::{Envelope, NodeId, Refused};
pub use history::{History, HistoryError, SharedHistory};
pub(crate) use history::{SharedStore, Signed, Snapshot, random_epoch};
#[cfg(any(feature = "redis", feature = "nats"))]
pub(crate) use inboxes::Inboxes;
pub(crate) use interest::Interest;
pub use route::{Route, RouteKind};
pub use seal::MIN_SECRET_LEN;
pub(crate) use seal::Seal;

/// Carries messages from one node to the other nodes of a service, by [`Route`].
///
/// Implement it with `async fn`; the futures must be `Send`. One backplane value may serve
/// several servers in one process (each [`attach`](Self::attach)es its inbox): it then
/// counts the joins of each route, and hands what arrives to every inbox (each server
/// ignores what it has no subscriber or session for).
pub trait Backplane: Send + Sync + 'static {
    /// Hands `message` to the nodes that [joined](Self::join) `route`. Handing it to the
    /// sending node as well is allowed (a pub/sub channel it subscribes to does): a
    /// server drops what it sent.
    ///
    /// Called after the server delivered the operation to its own connections; an error
    /// is reported to the caller of the operation (the other nodes missed it).
    fn send(
        &self,
        route: &Route,
        message: Bytes,
    ) -> impl Future<Output = Result<(), BackplaneError>> + Send;

    /// Called once for each server built with this backplane, while it is built (perhaps
    /// outside a tokio runtime): from then on, messages from other nodes go to
    /// `inbox`. [`Inbox::deliver`] never blocks, so it can be called from the task that
    /// receives them.
    fn attach(&self, inbox: Inbox);

    /// A server here now wants what is [sent](Self::send) on `route`: its first
    /// subscriber to a topic, its first connection holding a session, or (once, at its
    /// start) the service. Resolves once a message sent on `route` from then on reaches
    /// the attached inboxes. A server calls `join` and [`leave`](Self::leave) one at a
    /// time, in order.
    ///
    /// A backplane remembers what is joined, and joins it again when its link comes back
    /// (then calls [`Inbox::reconnected`]); a join that fails while the link is down is
    /// remembered too.
    ///
    /// The default does nothing: a backplane that hands every message to every node
    /// (correct, but every node then receives the traffic of every topic and session).
    fn join(&self, route: &Route) -> impl Future<Output = Result<(), BackplaneError>> + Send {
        let _ = route;
        std::future::ready(Ok(()))
    }

    /// No server here wants `route` any more (as many leaves as joins).
    fn leave(&self, route: &Route) -> impl Future<Output = Result<(), BackplaneError>> + Send {
        let _ = route;
        std::future::ready(Ok(()))
    }

    /// The topic histories the nodes of this backplane share, if they share them: with
    /// one, a history topic's positions come from it, so a client resumes on any node
    /// (the Redis backplane's, feature `redis`). `None` (the default): every server keeps
    /// its histories in memory, each with its own epochs.
    fn shared_history(&self) -> Option<SharedHistory> {
        None
    }
}

impl<B: Backplane> Backplane for Arc<B> {
    fn send(
        &self,
        route: &Route,
        message: Bytes,
    ) -> impl Future<Output = Result<(), BackplaneError>> + Send {
        (**self).send(route, message)
    }

    fn attach(&self, inbox: Inbox) {
        (**self).attach(inbox);
    }

    fn join(&self, route: &Route) -> impl Future<Output = Result<(), BackplaneError>> + Send {
        (**self).join(route)
    }

    fn leave(&self, route: &Route) -> impl Future<Output = Result<(), BackplaneError>> + Send {
        (**self).leave(route)
    }

    fn shared_history(&self) -> Option<SharedHistory> {
        (**self).shared_history()
    }
}

/// The default backplane: one node, nothing to send. Every operation reaches this
/// server's own connections directly.
///
/// ```
/// use tokio_webwire::backplane::Local;
/// use tokio_webwire::server::Server;
///
/// let server = Server::builder(()).backplane(Local).build()?; // the same as the default
/// # Ok::<(), tokio_webwire::server::ConfigError>(())
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

impl Backplane for Local {
    async fn send(&self, _: &Route, _: Bytes) -> Result<(), BackplaneError> {
        Ok(())
    }

    fn attach(&self, _: Inbox) {}
}

/// A backplane could not send a message to the other nodes.
///
/// ```
/// use tokio_webwire::backplane::BackplaneError;
///
/// let error = BackplaneError::new("redis unreachable");
/// assert_eq!(error.to_string(), "backplane: redis unreachable");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("backplane: {0}")]
pub struct BackplaneError(Box<dyn Error + Send + Sync>);

impl BackplaneError {
    /// An error with a cause: a message or another error.
    pub fn new(cause: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        BackplaneError(cause.into())
    }
}

/// Where a [`Backplane`] hands what other nodes sent to one server. Cheap to clone.
///
/// What arrives is checked before it reaches a connection: a message whose tag is not the
/// service secret's (forged, altered, or from another service), that does not decode, or
/// that carries a signal this server would not send (one over its message size limit), is
/// dropped, counted ([`Server::backplane_refused`](crate::server::Server::backplane_refused))
/// and logged. A server that is gone ignores its inbox.
#[derive(Clone)]
pub struct Inbox {
    /// Weak: a backplane outliving its server must not keep the server alive.
    hub: Weak<dyn Receiver>,
}

/// The server's side of an [`Inbox`] (its hub, `server/fanout.rs`): what the backplane's
/// messages are applied to. A trait, so that the backplane sits below the server.
pub(crate) trait Receiver: Send + Sync + 'static {
    /// Applies a message from another node; never blocks.
    fn deliver(self: Arc<Self>, message: &Bytes);

    /// The backplane delivers again after a gap ([`Inbox::reconnected`]).
    fn reconnected(self: Arc<Self>);
}

impl Inbox {
    pub(crate) fn new(hub: Weak<dyn Receiver>) -> Self {
        Inbox { hub }
    }

    /// Applies a message from another node to this server's connections. Never blocks:
    /// signals are queued without waiting (a subscriber without room is handled as for a
    /// local publish), and a revocation runs on a task of its own.
    pub fn deliver(&self, message: Bytes) {
        if let Some(hub) = self.hub.upgrade() {
            hub.deliver(&message);
        }
    }

    /// The backplane delivers again after a gap in which it may have lost messages (its
    /// link was down), and has joined its routes again. On tasks (call it inside a tokio
    /// runtime), the server checks every session its connections hold against its session
    /// store, and takes away those the store no longer has (revoked while the news could
    /// not arrive); a server whose topic histories are shared
    /// ([`Backplane::shared_history`]) reads what it missed of them from the shared
    /// store. Never blocks.
    ///
    /// ```
    /// # fn f(inbox: tokio_webwire::backplane::Inbox) {
    /// // The backplane's link came back.
    /// inbox.reconnected();
    /// # }
    /// ```
    pub fn reconnected(&self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.reconnected();
        }
    }

    /// Whether its server is gone: a backplane that serves many servers over its life can
    /// forget such inboxes.
    ///
    /// ```
    /// # fn f(inboxes: &mut Vec<tokio_webwire::backplane::Inbox>) {
    /// inboxes.retain(|inbox| !inbox.is_closed());
    /// # }
    /// ```
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.hub.strong_count() == 0
    }
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

/// The longest a subscribe's answer or a login waits for the backplane to join a route.
const SYNC_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A server's end of the backplane: the backplane, the node id its envelopes carry (so
/// that it can tell its own apart when they come back), the service's secret, and the
/// routes it wants.
pub(crate) struct Remote {
    backplane: Arc<dyn DynBackplane>,
    node: NodeId,
    /// `None` with [`Local`]: nothing is sent, sealed or routed.
    seal: Option<Seal>,
    interest: Option<Interest>,
}

impl Remote {
    /// `seal` is checked to be there for any backplane but [`Local`] when the server is
    /// built.
    pub(crate) fn new(backplane: Arc<dyn DynBackplane>, seal: Option<Seal>) -> Self {
        let seal = seal.filter(|_| !backplane.is_local());
        let interest = seal.as_ref().map(|_| Interest::new(Arc::clone(&backplane)));
        Remote {
            backplane,
            node: NodeId::random(),
            seal,
            interest,
        }
    }

    pub(crate) fn node(&self) -> NodeId {
        self.node
    }

    /// The service's keys; `None` for a server alone ([`Local`]).
    pub(crate) fn seal(&self) -> Option<&Seal> {
        self.seal.as_ref()
    }

    pub(crate) fn attach(&self, inbox: Inbox) {
        self.backplane.attach(inbox);
    }

    pub(crate) fn shared_history(&self) -> Option<SharedHistory> {
        self.backplane.shared_history()
    }

    /// One more reason to want `route` (nothing for a server alone); true if it is the
    /// first (the backplane did not bring the route until now).
    pub(crate) fn acquire(&self, route: impl FnOnce(&Seal) -> Route) -> bool {
        match (&self.interest, &self.seal) {
            (Some(interest), Some(seal)) => interest.acquire(&route(seal)),
            _ => false,
        }
    }

    /// Whether something here wants `route` (always, for a server alone: it hears
    /// everything it publishes).
    pub(crate) fn wants(&self, route: impl FnOnce(&Seal) -> Route) -> bool {
        match (&self.interest, &self.seal) {
            (Some(interest), Some(seal)) => interest.wants(&route(seal)),
            _ => true,
        }
    }

    /// One reason less.
    pub(crate) fn release(&self, route: impl FnOnce(&Seal) -> Route) {
        if let (Some(interest), Some(seal)) = (&self.interest, &self.seal) {
            interest.release(&route(seal));
        }
    }

    /// Starts the task that tells the backplane, if it has not started (inside a runtime).
    pub(crate) fn start(&self) {
        if let Some(interest) = &self.interest {
            interest.ensure_started();
        }
    }

    /// Resolves once the backplane knows every route wanted before it, or after
    /// [`SYNC_LIMIT`] (logged): a backplane that hangs delays a subscribe's answer or a
    /// login that long, never forever.
    pub(crate) async fn sync(&self) {
        if let Some(interest) = &self.interest {
            if tokio::time::timeout(SYNC_LIMIT, interest.sync())
                .await
                .is_err()
            {
                tracing::warn!(
                    limit = ?SYNC_LIMIT,
                    "the backplane has not joined this server's routes in time: answered anyway"
                );
            }
        }
    }

    /// Hands the envelope `make` gives on its route to the other nodes. With [`Local`]
    /// nothing is built or sent.
    pub(crate) async fn send(
        &self,
        make: impl FnOnce(&Seal) -> (Route, Envelope),
    ) -> Result<(), BackplaneError> {
        let Some(seal) = &self.seal else {
            return Ok(());
        };
        let (route, envelope) = make(seal);
        match envelope.encode(self.node, seal) {
            Some(message) => self.backplane.send(&route, message).await,
            // Only a target over 65 535 bytes fails, which no topic or route is (both are
            // checked first).
            None => Ok(()),
        }
    }
}

/// [`Backplane`] with boxed futures, so the server can hold any backplane.
pub(crate) trait DynBackplane: Send + Sync + 'static {
    fn send<'a>(
        &'a self,
        route: &'a Route,
        message: Bytes,
    ) -> BoxFuture<'a, Result<(), BackplaneError>>;
    fn attach(&self, inbox: Inbox);
    fn join<'a>(&'a self, route: &'a Route) -> BoxFuture<'a, Result<(), BackplaneError>>;
    fn leave<'a>(&'a self, route: &'a Route) -> BoxFuture<'a, Result<(), BackplaneError>>;
    /// Whether sending can be skipped ([`Local`]).
    fn is_local(&self) -> bool;
    fn shared_history(&self) -> Option<SharedHistory>;
}

impl<B: Backplane> DynBackplane for B {
    fn send<'a>(
        &'a self,
        route: &'a Route,
        message: Bytes,
    ) -> BoxFuture<'a, Result<(), BackplaneError>> {
        Box::pin(Backplane::send(self, route, message))
    }

    fn attach(&self, inbox: Inbox) {
        Backplane::attach(self, inbox);
    }

    fn join<'a>(&'a self, route: &'a Route) -> BoxFuture<'a, Result<(), BackplaneError>> {
        Box::pin(Backplane::join(self, route))
    }

    fn leave<'a>(&'a self, route: &'a Route) -> BoxFuture<'a, Result<(), BackplaneError>> {
        Box::pin(Backplane::leave(self, route))
    }

    fn is_local(&self) -> bool {
        std::any::TypeId::of::<B>() == std::any::TypeId::of::<Local>()
    }

    fn shared_history(&self) -> Option<SharedHistory> {
        Backplane::shared_history(self)
    }
}
