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
//! A backplane is a pipe of opaque messages to every other node: the server encodes the
//! operation (the signal is encoded once, on the node that publishes), and decodes and
//! applies what arrives through its [`Inbox`], ignoring what it sent itself. So a backplane
//! knows nothing of topics or sessions; [`Local`] (the default) sends nothing and costs
//! nothing, and a Redis one comes with the `redis` feature.
//!
//! Delivery is what the backplane gives: the server delivers to its own connections
//! whether or not the backplane accepts the message, and a message the backplane loses is
//! lost for the other nodes (their connections miss the signal; a revocation still
//! removed the session from a shared store, so no node restores it again, but a store of
//! another node's own keeps it). Order holds
//! per publisher and topic as far as the backplane keeps it (Redis pub/sub does), not
//! across publishers: two nodes publishing at once may reach one node's subscribers in
//! one order and another's in the other. An operation's future delivers here first and
//! then sends: dropped in between, the other nodes miss it.
//!
//! ```
//! use bytes::Bytes;
//! use std::sync::{Arc, Mutex};
//! use tokio_webwire::backplane::{Backplane, BackplaneError, Inbox};
//!
//! /// Nodes in one process (tests, or a demo): each message goes to every inbox.
//! #[derive(Default, Clone)]
//! struct InProcess(Arc<Mutex<Vec<Inbox>>>);
//!
//! impl Backplane for InProcess {
//!     async fn send(&self, message: Bytes) -> Result<(), BackplaneError> {
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

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures_util::future::BoxFuture;

pub(crate) use envelope::{Envelope, NodeId, random_bytes};

use crate::server::SharedHistory;
use crate::server::fanout::Hub;

/// Carries messages from one node to every other node of a service.
///
/// Implement it with `async fn`; the future must be `Send`. One backplane value may serve
/// several servers in one process (each [`attach`](Self::attach)es its inbox).
pub trait Backplane: Send + Sync + 'static {
    /// Hands `message` to every other node's [`Inbox`]. Handing it to the sending node's
    /// own inbox as well is allowed (a pub/sub channel does): a server drops what it sent.
    ///
    /// Called after the server delivered the operation to its own connections; an error
    /// is reported to the caller of the operation (the other nodes missed it).
    fn send(&self, message: Bytes) -> impl Future<Output = Result<(), BackplaneError>> + Send;

    /// Called once for each server built with this backplane, while it is built (perhaps
    /// outside a tokio runtime): from then on, messages from other nodes go to
    /// `inbox`. [`Inbox::deliver`] never blocks, so it can be called from the task that
    /// receives them.
    fn attach(&self, inbox: Inbox);

    /// The topic histories the nodes of this backplane share, if they share them: with
    /// one, a history topic's positions come from it, so a client resumes on any node
    /// (the Redis backplane's, feature `redis`). `None` (the default): every server keeps
    /// its histories in memory, each with its own epochs.
    fn shared_history(&self) -> Option<SharedHistory> {
        None
    }
}

impl<B: Backplane> Backplane for Arc<B> {
    fn send(&self, message: Bytes) -> impl Future<Output = Result<(), BackplaneError>> + Send {
        (**self).send(message)
    }

    fn attach(&self, inbox: Inbox) {
        (**self).attach(inbox);
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
    async fn send(&self, _: Bytes) -> Result<(), BackplaneError> {
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
/// What arrives is checked before it reaches a connection: a message that does not
/// decode, or carries a signal this server would not send (one over its message size
/// limit), is dropped with a log line. A server that is gone ignores its inbox.
#[derive(Clone)]
pub struct Inbox {
    /// Weak: a backplane outliving its server must not keep the server alive.
    hub: Weak<Hub>,
}

impl Inbox {
    pub(crate) fn new(hub: Weak<Hub>) -> Self {
        Inbox { hub }
    }

    /// Applies a message from another node to this server's connections. Never blocks:
    /// signals are queued without waiting (a subscriber without room is handled as for a
    /// local publish), and a revocation runs on a task of its own.
    pub fn deliver(&self, message: Bytes) {
        if let Some(hub) = self.hub.upgrade() {
            hub.receive(&message);
        }
    }

    /// The backplane delivers again after a gap in which it may have lost messages (its
    /// link was down). A server whose topic histories are shared
    /// ([`Backplane::shared_history`]) reads what it missed of them from the shared
    /// store, on a task (call it inside a tokio runtime); other servers cannot catch up
    /// and ignore it. Never blocks.
    ///
    /// ```
    /// # fn f(inbox: tokio_webwire::backplane::Inbox) {
    /// // The backplane's link came back.
    /// inbox.reconnected();
    /// # }
    /// ```
    pub fn reconnected(&self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.catch_up();
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

/// A server's end of the backplane: the backplane, and the node id its envelopes carry
/// (so that it can tell its own apart when they come back).
pub(crate) struct Remote {
    backplane: Arc<dyn DynBackplane>,
    node: NodeId,
}

impl Remote {
    pub(crate) fn new(backplane: Arc<dyn DynBackplane>) -> Self {
        Remote {
            backplane,
            node: NodeId::random(),
        }
    }

    pub(crate) fn node(&self) -> NodeId {
        self.node
    }

    pub(crate) fn attach(&self, inbox: Inbox) {
        self.backplane.attach(inbox);
    }

    pub(crate) fn shared_history(&self) -> Option<SharedHistory> {
        self.backplane.shared_history()
    }

    /// Hands `envelope` to the other nodes. With [`Local`] nothing is built or sent.
    pub(crate) async fn send(
        &self,
        envelope: impl FnOnce() -> Envelope,
    ) -> Result<(), BackplaneError> {
        if self.backplane.is_local() {
            return Ok(());
        }
        match envelope().encode(self.node) {
            Some(message) => self.backplane.send(message).await,
            // Only a target over 65 535 bytes fails, which no topic or key is (both are
            // checked first).
            None => Ok(()),
        }
    }
}

/// [`Backplane`] with boxed futures, so the server can hold any backplane.
pub(crate) trait DynBackplane: Send + Sync + 'static {
    fn send(&self, message: Bytes) -> BoxFuture<'_, Result<(), BackplaneError>>;
    fn attach(&self, inbox: Inbox);
    /// Whether sending can be skipped ([`Local`]).
    fn is_local(&self) -> bool;
    fn shared_history(&self) -> Option<SharedHistory>;
}

impl<B: Backplane> DynBackplane for B {
    fn send(&self, message: Bytes) -> BoxFuture<'_, Result<(), BackplaneError>> {
        Box::pin(Backplane::send(self, message))
    }

    fn attach(&self, inbox: Inbox) {
        Backplane::attach(self, inbox);
    }

    fn is_local(&self) -> bool {
        std::any::TypeId::of::<B>() == std::any::TypeId::of::<Local>()
    }

    fn shared_history(&self) -> Option<SharedHistory> {
        Backplane::shared_history(self)
    }
}
