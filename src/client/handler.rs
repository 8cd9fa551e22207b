//! The hooks a client calls for what the server starts: signals, connection and session
//! events.

use std::future::Future;
use std::sync::Arc;

use crate::protocol::Name;
use crate::{Payload, Session};

/// What a [`Client`](crate::Client) tells the application: server signals, connection
/// and session events. Every method has a default that does nothing, so implement only what you need;
/// `async fn` works for each.
///
/// The client calls the methods one at a time, in the order the events happened, from one
/// task of its own: a slow method delays the next event (and, once the client's small event
/// queue is full, reading from the connection), never the caller of a request. A method
/// may use the client, [`Client::close`](crate::Client::close) included.
///
/// `()` is the handler that ignores everything; `Arc<H>` is a handler when `H` is.
///
/// ```
/// use tokio_webwire::{Payload, client::ClientHandler, protocol::Name};
///
/// struct Printer;
///
/// impl ClientHandler for Printer {
///     async fn signal(&self, name: Name, payload: Payload) {
///         println!("signal {name}: {:?}", payload.to_text());
///     }
///
///     async fn disconnected(&self) {
///         println!("connection lost");
///     }
/// }
/// ```
pub trait ClientHandler: Send + Sync + 'static {
    /// The server sent a signal. `name` may be empty.
    fn signal(&self, name: Name, payload: Payload) -> impl Future<Output = ()> + Send {
        let _ = (name, payload);
        async {}
    }

    /// A connection was established (the first one, or a reconnection) and its handshake
    /// succeeded.
    fn connected(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The connection was lost or closed. Requests that were waiting on it have already
    /// failed with [`RequestError::Disconnected`](crate::RequestError::Disconnected).
    fn disconnected(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The client's session was created or replaced: the server created one for this
    /// connection, [`Client::restore_session`](crate::Client::restore_session) succeeded,
    /// or the session was restored automatically after a reconnection (this event then
    /// comes before [`connected`](ClientHandler::connected)).
    /// [`Client::session`](crate::Client::session) already returns it.
    fn session_created(&self, session: &Session) -> impl Future<Output = ()> + Send {
        let _ = session;
        async {}
    }

    /// The client's session is gone: the server closed it, it was closed with
    /// [`Client::close_session`](crate::Client::close_session), or it could not be restored
    /// after a reconnection. Only fired when there was a session.
    fn session_closed(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// The handler that ignores every event.
impl ClientHandler for () {}

impl<H: ClientHandler> ClientHandler for Arc<H> {
    fn signal(&self, name: Name, payload: Payload) -> impl Future<Output = ()> + Send {
        H::signal(self, name, payload)
    }

    fn connected(&self) -> impl Future<Output = ()> + Send {
        H::connected(self)
    }

    fn disconnected(&self) -> impl Future<Output = ()> + Send {
        H::disconnected(self)
    }

    fn session_created(&self, session: &Session) -> impl Future<Output = ()> + Send {
        H::session_created(self, session)
    }

    fn session_closed(&self) -> impl Future<Output = ()> + Send {
        H::session_closed(self)
    }
}

/// One thing the handler is told about, queued in the order it happened.
#[derive(Debug)]
pub(crate) enum Event {
    Connected,
    Disconnected,
    Signal(Name, Payload),
    SessionCreated(Session),
    SessionClosed,
}

/// Runs the handler for each event until every sender of the queue is gone.
pub(crate) async fn run_events<H: ClientHandler>(
    handler: H,
    mut events: tokio::sync::mpsc::Receiver<Event>,
) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Connected => handler.connected().await,
            Event::Disconnected => handler.disconnected().await,
            Event::Signal(name, payload) => handler.signal(name, payload).await,
            Event::SessionCreated(session) => handler.session_created(&session).await,
            Event::SessionClosed => handler.session_closed().await,
        }
    }
}
