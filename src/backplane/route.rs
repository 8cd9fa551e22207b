//! [`Route`]: which nodes a message between nodes is for.

use std::fmt;
use std::sync::Arc;

/// Which nodes a message between nodes is for: those with a subscriber to one topic, those
/// holding one session, or every node of the service.
///
/// A server [`join`](super::Backplane::join)s a topic's route when its first connection
/// subscribes to the topic and [`leave`](super::Backplane::leave)s it when the last one
/// goes; a session's route likewise with the connections holding the session; the
/// service's route while it runs. A backplane maps each route to a channel or subject of
/// its own and hands a message [`send`](super::Backplane::send) on a route to the nodes
/// that joined it.
///
/// ```
/// use tokio_webwire::backplane::{Route, RouteKind};
///
/// let route = Route::topic("room/1").unwrap();
/// assert_eq!(route.kind(), RouteKind::Topic);
/// assert_eq!(route.name(), "room/1");
/// assert_eq!(Route::service().kind(), RouteKind::Service);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Route {
    kind: RouteKind,
    name: Arc<str>,
}

/// What a [`Route`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RouteKind {
    /// A topic: its name is the topic's, as the application gave it (1 to
    /// [`MAX_TOPIC_LEN`](crate::server::MAX_TOPIC_LEN) bytes of UTF-8, any characters).
    Topic,
    /// A session: its name is 32 lowercase hex digits, a hash of the session's key keyed
    /// with the service's secret (never the key: whoever reads the backplane cannot
    /// restore the session).
    Session,
    /// Every node of the service (its name is empty): revocations, which must reach
    /// every node's session store.
    Service,
}

impl Route {
    /// The route of `topic`; `None` if it is not a valid topic (1 to
    /// [`MAX_TOPIC_LEN`](crate::server::MAX_TOPIC_LEN) bytes).
    ///
    /// ```
    /// use tokio_webwire::backplane::Route;
    ///
    /// assert!(Route::topic("news").is_some());
    /// assert!(Route::topic("").is_none());
    /// ```
    #[must_use]
    pub fn topic(topic: &str) -> Option<Self> {
        (!topic.is_empty() && topic.len() <= crate::protocol::topics::MAX_TOPIC_LEN).then(|| {
            Route {
                kind: RouteKind::Topic,
                name: Arc::from(topic),
            }
        })
    }

    /// The route every node of the service joins.
    ///
    /// ```
    /// assert_eq!(tokio_webwire::backplane::Route::service().name(), "");
    /// ```
    #[must_use]
    pub fn service() -> Self {
        Route {
            kind: RouteKind::Service,
            name: Arc::from(""),
        }
    }

    /// The route of a topic already checked to be valid.
    pub(crate) fn topic_checked(topic: &str) -> Self {
        Route {
            kind: RouteKind::Topic,
            name: Arc::from(topic),
        }
    }

    /// The route of a session, from its name (the keyed hash: [`Seal::session_route`]).
    ///
    /// [`Seal::session_route`]: super::seal::Seal::session_route
    pub(crate) fn session(name: String) -> Self {
        Route {
            kind: RouteKind::Session,
            name: Arc::from(name),
        }
    }

    /// What it names.
    ///
    /// ```
    /// use tokio_webwire::backplane::{Route, RouteKind};
    ///
    /// assert_eq!(Route::topic("news").unwrap().kind(), RouteKind::Topic);
    /// ```
    #[must_use]
    pub fn kind(&self) -> RouteKind {
        self.kind
    }

    /// Its name: a topic's name, a session's 32 hex digits, or nothing for the service.
    ///
    /// ```
    /// assert_eq!(tokio_webwire::backplane::Route::topic("news").unwrap().name(), "news");
    /// ```
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}({:?})", self.kind, &*self.name)
    }
}
